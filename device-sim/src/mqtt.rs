//! A lean MQTT 3.1.1 and MQTT 5 client codec: exactly the packets a device sends and
//! receives.
//!
//! Encoders write client-to-server packets (CONNECT, PUBLISH, PUBACK, SUBSCRIBE, PINGREQ,
//! DISCONNECT) into a caller-owned buffer, so a device reuses one write buffer for its whole
//! life. [`decode`] reads server-to-client packets (CONNACK, PUBLISH, PUBACK, SUBACK,
//! UNSUBACK, PINGRESP, and MQTT 5's DISCONNECT) off the front of a read buffer and never
//! panics on what the network sends: malformed input is a [`DecodeError`], which ends the
//! connection. An MQTT 5 device sends no properties but correlation data on an answer, and
//! reads a request's response topic and correlation data (MQTT 5 request/response).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Delivery guarantee of a PUBLISH or a subscription. The simulator never uses QoS 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged with PUBACK.
    AtLeastOnce = 1,
}

/// Which MQTT a device speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Where and how to answer a request (MQTT 5 request/response): its response topic and
/// correlation data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The topic to answer on.
    pub topic: String,
    /// Sent back with the answer.
    pub correlation_data: Bytes,
}

/// The last will registered in CONNECT; the broker publishes it when the connection dies
/// without DISCONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Will<'a> {
    /// Topic of the will message.
    pub topic: &'a str,
    /// Payload of the will message.
    pub payload: &'a [u8],
    /// QoS the broker publishes it with.
    pub qos: QoS,
    /// Whether the broker retains it.
    pub retain: bool,
}

/// A CONNECT packet, borrowed from the device's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// Client identifier (the device id).
    pub client_id: &'a str,
    /// User name and password (the device id and key); `None` for a device that logs in with
    /// its TLS client certificate.
    pub login: Option<(&'a str, &'a [u8])>,
    /// Keep-alive in seconds; the broker closes a connection silent for 1.5 times this.
    pub keep_alive: u16,
    /// Start from a fresh session (and discard it on disconnect).
    pub clean_session: bool,
    /// Last will, if any.
    pub will: Option<Will<'a>>,
    /// Which MQTT to speak.
    pub version: Version,
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Answer to CONNECT; `code` 0 means accepted.
    ConnAck {
        /// The broker still had a session for this client.
        session_present: bool,
        /// MQTT 3.1.1 return code.
        code: u8,
    },
    /// A message on a subscribed topic.
    Publish {
        /// Topic name.
        topic: String,
        /// Payload.
        payload: Bytes,
        /// Delivery QoS (0, 1 or 2 as sent; the device acknowledges 1).
        qos: u8,
        /// Packet id for QoS > 0.
        pkid: u16,
        /// Retained flag.
        retain: bool,
        /// An MQTT 5 request's response topic and correlation data.
        reply_to: Option<ReplyTo>,
    },
    /// Acknowledgement of a QoS 1 publish.
    PubAck(u16),
    /// Answer to SUBSCRIBE: one return code per filter (0x80 = refused).
    SubAck {
        /// Packet id of the SUBSCRIBE.
        pkid: u16,
        /// Granted QoS or 0x80 per filter.
        codes: Vec<u8>,
    },
    /// Answer to UNSUBSCRIBE.
    UnsubAck(u16),
    /// Answer to PINGREQ.
    PingResp,
    /// MQTT 5: the broker ends the connection, with this reason code.
    Disconnect(u8),
}

/// Why bytes from the broker are not a packet we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining-length field is longer than 4 bytes.
    #[error("malformed remaining length")]
    MalformedLength,
    /// The packet is larger than the configured maximum.
    #[error("packet of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Announced remaining length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The packet type is one a server never sends to a client.
    #[error("unexpected packet type {0}")]
    UnexpectedPacket(u8),
    /// The packet's body does not match its type.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

const CONNECT: u8 = 0x10;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBSCRIBE: u8 = 0x82;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 0xC0;
const PINGRESP: u8 = 13;
const SERVER_DISCONNECT: u8 = 14;
const DISCONNECT: u8 = 0xE0;

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    // Callers keep strings far below 64 KiB (topics, ids, keys); truncating the length would
    // corrupt the stream, so clamp both together.
    let len = s.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&s[..len]);
}

/// Appends a CONNECT packet.
pub fn encode_connect(c: &Connect<'_>, out: &mut BytesMut) {
    let v5 = c.version == Version::V5;
    // MQTT 5: an empty property list after the keep-alive, and before the will's topic.
    let properties = usize::from(v5);
    let mut len = 10 + properties + 2 + c.client_id.len();
    if let Some((username, password)) = c.login {
        len += 2 + username.len() + 2 + password.len();
    }
    if let Some(w) = &c.will {
        len += properties + 2 + w.topic.len() + 2 + w.payload.len();
    }
    out.reserve(len + 5);
    out.put_u8(CONNECT);
    put_remaining_length(out, len);
    put_str(out, b"MQTT");
    out.put_u8(if v5 { 5 } else { 4 }); // protocol level
    let mut flags = if c.login.is_some() { 0x80 | 0x40 } else { 0 }; // username, password
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        out.put_u8(0);
    }
    put_str(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            out.put_u8(0);
        }
        put_str(out, w.topic.as_bytes());
        put_str(out, w.payload);
    }
    if let Some((username, password)) = c.login {
        put_str(out, username.as_bytes());
        put_str(out, password);
    }
}

/// Property identifiers the codec reads or writes (MQTT 5 §2.2.2.2).
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;

/// The packets a device writes, in its version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Codec(pub Version);

impl Codec {
    /// Appends a PUBLISH packet; `pkid` is used only for QoS 1.
    pub fn publish(
        self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        pkid: u16,
        out: &mut BytesMut,
    ) {
        encode_publish(self.0, topic, payload, qos, retain, pkid, None, out);
    }

    /// Appends a QoS 1 PUBLISH answering a request: on its response topic with its
    /// correlation data when it came with them (MQTT 5), else on `topic`.
    pub fn answer(
        self,
        topic: &str,
        reply_to: Option<&ReplyTo>,
        payload: &[u8],
        pkid: u16,
        out: &mut BytesMut,
    ) {
        match reply_to {
            Some(reply) if self.0 == Version::V5 => encode_publish(
                self.0,
                &reply.topic,
                payload,
                QoS::AtLeastOnce,
                false,
                pkid,
                Some(&reply.correlation_data),
                out,
            ),
            _ => encode_publish(
                self.0,
                topic,
                payload,
                QoS::AtLeastOnce,
                false,
                pkid,
                None,
                out,
            ),
        }
    }

    /// Appends a SUBSCRIBE with one filter.
    pub fn subscribe(self, pkid: u16, filter: &str, qos: QoS, out: &mut BytesMut) {
        encode_subscribe(self.0, pkid, filter, qos, out);
    }
}

/// Appends a PUBLISH packet; `pkid` is used only for QoS 1. MQTT 5: with `correlation_data`
/// as its only property, if any.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish(
    version: Version,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    pkid: u16,
    correlation_data: Option<&[u8]>,
    out: &mut BytesMut,
) {
    let mut properties = BytesMut::new();
    if let (Version::V5, Some(data)) = (version, correlation_data) {
        properties.put_u8(CORRELATION_DATA);
        put_str(&mut properties, data);
    }
    let mut len = 2 + topic.len() + payload.len();
    if version == Version::V5 {
        len += remaining_length_len(properties.len()) + properties.len();
    }
    if qos == QoS::AtLeastOnce {
        len += 2;
    }
    out.reserve(len + 5);
    out.put_u8((PUBLISH << 4) | ((qos as u8) << 1) | u8::from(retain));
    put_remaining_length(out, len);
    put_str(out, topic.as_bytes());
    if qos == QoS::AtLeastOnce {
        out.put_u16(pkid);
    }
    if version == Version::V5 {
        put_remaining_length(out, properties.len());
        out.put_slice(&properties);
    }
    out.put_slice(payload);
}

fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends a PUBACK for a received QoS 1 publish.
pub fn encode_puback(pkid: u16, out: &mut BytesMut) {
    out.put_u8(PUBACK << 4);
    out.put_u8(2);
    out.put_u16(pkid);
}

/// Appends a SUBSCRIBE with one filter (MQTT 5: no properties, default options).
pub fn encode_subscribe(version: Version, pkid: u16, filter: &str, qos: QoS, out: &mut BytesMut) {
    let v5 = version == Version::V5;
    let len = 2 + usize::from(v5) + 2 + filter.len() + 1;
    out.reserve(len + 5);
    out.put_u8(SUBSCRIBE);
    put_remaining_length(out, len);
    out.put_u16(pkid);
    if v5 {
        out.put_u8(0);
    }
    put_str(out, filter.as_bytes());
    out.put_u8(qos as u8);
}

/// Appends a PINGREQ.
pub fn encode_pingreq(out: &mut BytesMut) {
    out.put_slice(&[PINGREQ, 0]);
}

/// Appends a DISCONNECT: a clean close, after which the broker does not publish the will.
pub fn encode_disconnect(out: &mut BytesMut) {
    out.put_slice(&[DISCONNECT, 0]);
}

/// Takes one complete packet off the front of `buf`, read as `version` says. `Ok(None)`
/// means more bytes are needed (nothing is consumed then).
pub fn decode(
    buf: &mut BytesMut,
    max_packet_size: usize,
    version: Version,
) -> Result<Option<Incoming>, DecodeError> {
    let v5 = version == Version::V5;
    let mut len = 0usize;
    let mut header_len = 1;
    let mut complete = false;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        len += usize::from(byte & 0x7F) << (7 * i);
        header_len += 1;
        if byte & 0x80 == 0 {
            complete = true;
            break;
        }
    }
    if !complete {
        return if buf.len() >= 5 {
            Err(DecodeError::MalformedLength)
        } else {
            Ok(None)
        };
    }
    if len > max_packet_size {
        return Err(DecodeError::TooLarge {
            len,
            max: max_packet_size,
        });
    }
    if buf.len() < header_len + len {
        buf.reserve(header_len + len - buf.len());
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(header_len);
    let mut body = buf.split_to(len).freeze();
    let packet = match first >> 4 {
        CONNACK => {
            // MQTT 5: properties follow (the broker's limits); none is needed here.
            if body.len() < 2 || (!v5 && body.len() != 2) {
                return Err(DecodeError::Malformed("CONNACK"));
            }
            if v5 {
                skip_properties(&mut body.slice(2..), "CONNACK")?;
            }
            Incoming::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            }
        }
        PUBLISH => {
            let qos = (first >> 1) & 3;
            if qos == 3 || body.len() < 2 {
                return Err(DecodeError::Malformed("PUBLISH"));
            }
            let topic_len = usize::from(body.get_u16());
            let needed = topic_len + if qos > 0 { 2 } else { 0 };
            if body.len() < needed {
                return Err(DecodeError::Malformed("PUBLISH"));
            }
            let topic = String::from_utf8(body.split_to(topic_len).to_vec())
                .map_err(|_| DecodeError::Malformed("PUBLISH"))?;
            let pkid = if qos > 0 { body.get_u16() } else { 0 };
            let reply_to = if v5 { read_reply_to(&mut body)? } else { None };
            Incoming::Publish {
                topic,
                payload: body,
                qos,
                pkid,
                retain: first & 1 == 1,
                reply_to,
            }
        }
        // MQTT 5: a reason code and properties may follow the id.
        PUBACK if v5 && body.len() >= 2 => Incoming::PubAck(body.get_u16()),
        PUBACK => Incoming::PubAck(two_byte_id(&mut body, "PUBACK")?),
        SUBACK => {
            if body.len() < 3 {
                return Err(DecodeError::Malformed("SUBACK"));
            }
            let pkid = body.get_u16();
            if v5 {
                skip_properties(&mut body, "SUBACK")?;
            }
            Incoming::SubAck {
                pkid,
                codes: body.to_vec(),
            }
        }
        UNSUBACK if v5 && body.len() >= 2 => Incoming::UnsubAck(body.get_u16()),
        UNSUBACK => Incoming::UnsubAck(two_byte_id(&mut body, "UNSUBACK")?),
        SERVER_DISCONNECT if v5 => Incoming::Disconnect(body.first().copied().unwrap_or(0)),
        PINGRESP => {
            if !body.is_empty() {
                return Err(DecodeError::Malformed("PINGRESP"));
            }
            Incoming::PingResp
        }
        other => return Err(DecodeError::UnexpectedPacket(other)),
    };
    Ok(Some(packet))
}

/// A variable byte integer at the front of `body`.
fn get_varint(body: &mut Bytes, kind: &'static str) -> Result<usize, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        if body.is_empty() {
            break;
        }
        let byte = body.get_u8();
        value += usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(kind))
}

/// Takes the property list off the front of `body` and returns it.
fn take_properties(body: &mut Bytes, kind: &'static str) -> Result<Bytes, DecodeError> {
    let len = get_varint(body, kind)?;
    if body.len() < len {
        return Err(DecodeError::Malformed(kind));
    }
    Ok(body.split_to(len))
}

fn skip_properties(body: &mut Bytes, kind: &'static str) -> Result<(), DecodeError> {
    take_properties(body, kind).map(|_| ())
}

/// A PUBLISH's response topic and correlation data, from its properties (the others are
/// skipped, by the size their identifier gives them).
fn read_reply_to(body: &mut Bytes) -> Result<Option<ReplyTo>, DecodeError> {
    const KIND: &str = "PUBLISH";
    let mut properties = take_properties(body, KIND)?;
    let (mut topic, mut correlation) = (None, None);
    while !properties.is_empty() {
        let id = properties.get_u8();
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => {
                get_varint(&mut properties, KIND)?;
                continue;
            }
            0x26 => {
                // A user property: two strings.
                for _ in 0..2 {
                    take_binary(&mut properties)?;
                }
                continue;
            }
            0x03 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F | RESPONSE_TOPIC | CORRELATION_DATA => {
                let value = take_binary(&mut properties)?;
                match id {
                    RESPONSE_TOPIC => {
                        topic = Some(
                            String::from_utf8(value.to_vec())
                                .map_err(|_| DecodeError::Malformed(KIND))?,
                        );
                    }
                    CORRELATION_DATA => correlation = Some(value),
                    _ => {}
                }
                continue;
            }
            _ => return Err(DecodeError::Malformed(KIND)),
        };
        if properties.len() < size {
            return Err(DecodeError::Malformed(KIND));
        }
        properties.advance(size);
    }
    Ok(topic.map(|topic| ReplyTo {
        topic,
        correlation_data: correlation.unwrap_or_default(),
    }))
}

/// A two-byte length and that many bytes.
fn take_binary(body: &mut Bytes) -> Result<Bytes, DecodeError> {
    if body.len() < 2 {
        return Err(DecodeError::Malformed("PUBLISH"));
    }
    let len = usize::from(body.get_u16());
    if body.len() < len {
        return Err(DecodeError::Malformed("PUBLISH"));
    }
    Ok(body.split_to(len))
}

fn two_byte_id(body: &mut Bytes, kind: &'static str) -> Result<u16, DecodeError> {
    if body.len() != 2 {
        return Err(DecodeError::Malformed(kind));
    }
    Ok(body.get_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn connect_carries_credentials_will_and_flags_in_spec_order() {
        let packet = bytes(|out| {
            encode_connect(
                &Connect {
                    client_id: "d",
                    login: Some(("u", b"pw")),
                    keep_alive: 60,
                    clean_session: true,
                    will: Some(Will {
                        topic: "t",
                        payload: b"off",
                        qos: QoS::AtLeastOnce,
                        retain: true,
                    }),
                    version: Version::V311,
                },
                out,
            )
        });
        let expected: Vec<u8> = [
            &[0x10, 28][..],
            &[0, 4, b'M', b'Q', b'T', b'T', 4],
            // username, password, will retain, will QoS 1, will, clean session
            &[0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02],
            &[0, 60],
            &[0, 1, b'd'],
            &[0, 1, b't'],
            &[0, 3, b'o', b'f', b'f'],
            &[0, 1, b'u'],
            &[0, 2, b'p', b'w'],
        ]
        .concat();
        assert_eq!(packet, expected);
    }

    #[test]
    fn connect_without_will_has_no_will_flags() {
        let packet = bytes(|out| {
            encode_connect(
                &Connect {
                    client_id: "d",
                    login: Some(("u", b"")),
                    keep_alive: 0,
                    clean_session: false,
                    will: None,
                    version: Version::V311,
                },
                out,
            )
        });
        assert_eq!(packet[9], 0xC0);
    }

    #[test]
    fn connect_for_a_certificate_login_carries_no_username_or_password() {
        let packet = bytes(|out| {
            encode_connect(
                &Connect {
                    client_id: "d",
                    login: None,
                    keep_alive: 60,
                    clean_session: true,
                    will: None,
                    version: Version::V311,
                },
                out,
            )
        });
        let expected: Vec<u8> = [
            &[0x10, 13][..],
            &[0, 4, b'M', b'Q', b'T', b'T', 4],
            &[0x02],
            &[0, 60],
            &[0, 1, b'd'],
        ]
        .concat();
        assert_eq!(packet, expected);
    }

    #[test]
    fn a_publish_we_encode_decodes_to_the_same_message() {
        for (qos, retain) in [(QoS::AtMostOnce, false), (QoS::AtLeastOnce, true)] {
            let mut buf = BytesMut::new();
            encode_publish(
                Version::V311,
                "a/b",
                b"hello",
                qos,
                retain,
                7,
                None,
                &mut buf,
            );
            let decoded = decode(&mut buf, 1024, Version::V311).unwrap().unwrap();
            assert_eq!(
                decoded,
                Incoming::Publish {
                    topic: "a/b".into(),
                    payload: Bytes::from_static(b"hello"),
                    qos: qos as u8,
                    pkid: if qos == QoS::AtLeastOnce { 7 } else { 0 },
                    retain,
                    reply_to: None,
                }
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn remaining_length_uses_continuation_bytes_past_127() {
        let payload = vec![b'x'; 300];
        let mut buf = BytesMut::new();
        encode_publish(
            Version::V311,
            "t",
            &payload,
            QoS::AtMostOnce,
            false,
            0,
            None,
            &mut buf,
        );
        // 2 + 1 + 300 = 303 = 0b10_0101111 -> [0xAF, 0x02]
        assert_eq!(&buf[1..3], &[0xAF, 0x02]);
        let Some(Incoming::Publish { payload: p, .. }) =
            decode(&mut buf, 1024, Version::V311).unwrap()
        else {
            panic!("expected a publish");
        };
        assert_eq!(p.len(), 300);
    }

    #[test]
    fn small_control_packets_match_the_spec_bytes() {
        assert_eq!(bytes(|o| encode_puback(0x0102, o)), [0x40, 2, 1, 2]);
        assert_eq!(bytes(encode_pingreq), [0xC0, 0]);
        assert_eq!(bytes(encode_disconnect), [0xE0, 0]);
        assert_eq!(
            bytes(|o| encode_subscribe(Version::V311, 5, "a/#", QoS::AtLeastOnce, o)),
            [0x82, 8, 0, 5, 0, 3, b'a', b'/', b'#', 1]
        );
    }

    #[test]
    fn server_packets_decode_and_partial_input_waits_for_more() {
        let mut buf = BytesMut::from(
            &[
                0x20, 2, 1, 0, // CONNACK session present, accepted
                0x40, 2, 0, 9, // PUBACK 9
                0x90, 3, 0, 5, 0x80, // SUBACK 5 refused
                0xB0, 2, 0, 6, // UNSUBACK 6
                0xD0, 0,    // PINGRESP
                0x20, // first byte of another CONNACK
            ][..],
        );
        let mut got = Vec::new();
        while let Some(p) = decode(&mut buf, 1024, Version::V311).unwrap() {
            got.push(p);
        }
        assert_eq!(
            got,
            vec![
                Incoming::ConnAck {
                    session_present: true,
                    code: 0
                },
                Incoming::PubAck(9),
                Incoming::SubAck {
                    pkid: 5,
                    codes: vec![0x80]
                },
                Incoming::UnsubAck(6),
                Incoming::PingResp,
            ]
        );
        assert_eq!(&buf[..], &[0x20]);
        buf.extend_from_slice(&[2, 0, 5]);
        assert_eq!(
            decode(&mut buf, 1024, Version::V311).unwrap(),
            Some(Incoming::ConnAck {
                session_present: false,
                code: 5
            })
        );
    }

    #[test]
    fn garbage_from_the_network_is_an_error_not_a_panic() {
        let cases: &[(&[u8], DecodeError)] = &[
            (
                &[0x20, 0xFF, 0xFF, 0xFF, 0xFF],
                DecodeError::MalformedLength,
            ),
            (&[0x20, 3, 0, 0, 0], DecodeError::Malformed("CONNACK")),
            (&[0x30, 1, 0], DecodeError::Malformed("PUBLISH")),
            (&[0x30, 2, 0, 9], DecodeError::Malformed("PUBLISH")),
            (&[0x36, 3, 0, 0, 0], DecodeError::Malformed("PUBLISH")),
            (&[0x32, 3, 0, 1, b'a'], DecodeError::Malformed("PUBLISH")),
            (
                &[0x30, 4, 0, 2, 0xC3, 0x28],
                DecodeError::Malformed("PUBLISH"),
            ),
            (&[0x90, 2, 0, 1], DecodeError::Malformed("SUBACK")),
            (&[0xD0, 1, 0], DecodeError::Malformed("PINGRESP")),
            (&[0x10, 0], DecodeError::UnexpectedPacket(1)),
            (&[0x00, 0], DecodeError::UnexpectedPacket(0)),
        ];
        for (input, expected) in cases {
            let mut buf = BytesMut::from(*input);
            assert_eq!(
                decode(&mut buf, 1024, Version::V311).as_ref(),
                Err(expected),
                "{input:?}"
            );
        }
        let mut huge = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
        assert_eq!(
            decode(&mut huge, 1024, Version::V311),
            Err(DecodeError::TooLarge {
                len: 16384,
                max: 1024
            })
        );
    }

    #[test]
    fn mqtt5_packets_carry_their_property_lists() {
        let connect = bytes(|out| {
            encode_connect(
                &Connect {
                    client_id: "d",
                    login: None,
                    keep_alive: 60,
                    clean_session: true,
                    will: Some(Will {
                        topic: "t",
                        payload: b"x",
                        qos: QoS::AtMostOnce,
                        retain: false,
                    }),
                    version: Version::V5,
                },
                out,
            )
        });
        let expected: Vec<u8> = [
            &[0x10, 21][..],
            &[0, 4, b'M', b'Q', b'T', b'T', 5],
            &[0x04 | 0x02],
            &[0, 60],
            &[0], // no CONNECT properties
            &[0, 1, b'd'],
            &[0], // no will properties
            &[0, 1, b't'],
            &[0, 1, b'x'],
        ]
        .concat();
        assert_eq!(connect, expected);
        assert_eq!(
            bytes(|o| encode_subscribe(Version::V5, 5, "a/#", QoS::AtLeastOnce, o)),
            [0x82, 9, 0, 5, 0, 0, 3, b'a', b'/', b'#', 1]
        );
        let answer = bytes(|o| {
            encode_publish(
                Version::V5,
                "r",
                b"{}",
                QoS::AtLeastOnce,
                false,
                3,
                Some(b"id"),
                o,
            )
        });
        // topic, pkid, properties (correlation data "id"), payload
        assert_eq!(
            answer,
            [
                0x32, 13, 0, 1, b'r', 0, 3, 5, 0x09, 0, 2, b'i', b'd', b'{', b'}'
            ]
        );
    }

    #[test]
    fn mqtt5_server_packets_decode_with_their_properties() {
        let mut buf = BytesMut::from(
            &[
                0x20, 6, 0, 0, 3, 0x21, 0, 10, // CONNACK accepted, receive maximum 10
                0x40, 4, 0, 9, 0x87, 0, // PUBACK 9 not authorized
                0x90, 4, 0, 5, 0, 1, // SUBACK 5 granted 1
                0xE0, 2, 0x98, 0, // DISCONNECT administrative action
            ][..],
        );
        let mut got = Vec::new();
        while let Some(p) = decode(&mut buf, 1024, Version::V5).unwrap() {
            got.push(p);
        }
        assert_eq!(
            got,
            vec![
                Incoming::ConnAck {
                    session_present: false,
                    code: 0
                },
                Incoming::PubAck(9),
                Incoming::SubAck {
                    pkid: 5,
                    codes: vec![1]
                },
                Incoming::Disconnect(0x98),
            ]
        );
        // A request: topic "q", pkid 1, user property (skipped), response topic "r",
        // correlation data "c", payload "p".
        let mut request = BytesMut::from(
            &[
                0x32, 22, 0, 1, b'q', 0, 1, 15, 0x26, 0, 1, b'k', 0, 1, b'v', 0x08, 0, 1, b'r',
                0x09, 0, 1, b'c', b'p',
            ][..],
        );
        let Some(Incoming::Publish {
            topic,
            payload,
            reply_to,
            ..
        }) = decode(&mut request, 1024, Version::V5).unwrap()
        else {
            panic!("a PUBLISH");
        };
        assert_eq!((topic.as_str(), &payload[..]), ("q", &b"p"[..]));
        assert_eq!(
            reply_to,
            Some(ReplyTo {
                topic: "r".into(),
                correlation_data: Bytes::from_static(b"c")
            })
        );
        let mut garbage = BytesMut::from(&[0x30, 5, 0, 1, b'q', 9, 0x08][..]);
        assert_eq!(
            decode(&mut garbage, 1024, Version::V5),
            Err(DecodeError::Malformed("PUBLISH"))
        );
    }
}
