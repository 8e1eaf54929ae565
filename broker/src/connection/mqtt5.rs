//! What MQTT 5 adds to a connection: the limits each side announces at CONNECT and CONNACK,
//! topic aliases both ways, message properties on the wire, and the packets the broker writes
//! with reason codes. A 3.1.1 connection has none of it (`Wire::v5` is `None`).
//!
//! rumqttd's v5 codec decodes what clients send (server-to-client packet types are refused
//! from the fixed header first: its decoder panics on them, docs/mqtt.md). What the broker
//! writes to a v5 client is encoded here: its v5 encoders panic on some codes and write a
//! DISCONNECT without properties one byte longer than its remaining length says.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::{ConnectProperties, PublishProperties};

use crate::router::{MessageProperties, now_ms};

/// Largest value of a variable byte integer (MQTT 5 §1.5.5), e.g. a subscription identifier.
pub(crate) const MAX_VARIABLE_INT: u32 = 268_435_455;

/// MQTT 5 reason codes the broker writes (MQTT 5 §2.4).
pub(crate) mod reason {
    pub(crate) const SUCCESS: u8 = 0x00;
    pub(crate) const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub(crate) const MALFORMED_PACKET: u8 = 0x81;
    pub(crate) const PROTOCOL_ERROR: u8 = 0x82;
    pub(crate) const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub(crate) const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub(crate) const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub(crate) const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub(crate) const NOT_AUTHORIZED: u8 = 0x87;
    pub(crate) const SERVER_UNAVAILABLE: u8 = 0x88;
    pub(crate) const SERVER_BUSY: u8 = 0x89;
    pub(crate) const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub(crate) const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub(crate) const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub(crate) const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub(crate) const TOPIC_NAME_INVALID: u8 = 0x90;
    pub(crate) const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub(crate) const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub(crate) const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub(crate) const PACKET_TOO_LARGE: u8 = 0x95;
    pub(crate) const QUOTA_EXCEEDED: u8 = 0x97;
    pub(crate) const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub(crate) const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
}

/// The CONNACK reason code for an MQTT 3.1.1 return code (from `Refusal::return_code`).
pub(crate) fn reason_for_return_code(code: u8) -> u8 {
    match code {
        0x00 => reason::SUCCESS,
        0x01 => reason::UNSUPPORTED_PROTOCOL_VERSION,
        0x02 => reason::CLIENT_IDENTIFIER_NOT_VALID,
        0x03 => reason::SERVER_UNAVAILABLE,
        0x04 => reason::BAD_USER_NAME_OR_PASSWORD,
        _ => reason::NOT_AUTHORIZED,
    }
}

/// The MQTT 3.1.1 CONNACK return code for a CONNACK reason code.
pub(crate) fn return_code(reason: u8) -> u8 {
    match reason {
        reason::SUCCESS => 0x00,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 0x01,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 0x02,
        reason::SERVER_UNAVAILABLE | reason::SERVER_BUSY | reason::QUOTA_EXCEEDED => 0x03,
        reason::BAD_USER_NAME_OR_PASSWORD => 0x04,
        _ => 0x05,
    }
}

/// Property identifiers (MQTT 5 §2.2.2.2).
mod property {
    pub(super) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(super) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(super) const CONTENT_TYPE: u8 = 0x03;
    pub(super) const RESPONSE_TOPIC: u8 = 0x08;
    pub(super) const CORRELATION_DATA: u8 = 0x09;
    pub(super) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(super) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(super) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(super) const REASON_STRING: u8 = 0x1F;
    pub(super) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(super) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(super) const TOPIC_ALIAS: u8 = 0x23;
    pub(super) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(super) const USER_PROPERTY: u8 = 0x26;
    pub(super) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(super) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(super) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(super) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// What a v5 client announced in its CONNECT, and the aliases of this connection.
/// Boxed in the wire: 3.1.1 connections do not pay for it.
#[derive(Debug)]
pub(crate) struct Negotiated {
    /// QoS 1/2 PUBLISH the client accepts unacknowledged (its receive maximum).
    pub(crate) client_receive_maximum: u16,
    /// Largest packet the client accepts, in bytes; larger ones are not sent to it.
    pub(crate) client_maximum_packet_size: u32,
    /// Topic aliases the client accepts from the broker (0: none).
    client_topic_alias_maximum: u16,
    /// Topic aliases the broker accepts from the client (announced in CONNACK).
    pub(crate) topic_alias_maximum: u16,
    /// Whether reason strings may be sent (request problem information).
    pub(crate) problem_information: bool,
    /// Aliases the client set, by alias (index alias - 1).
    inbound: Vec<Option<Bytes>>,
    /// Aliases the broker set, by topic; at most `client_topic_alias_maximum`.
    outbound: HashMap<Bytes, u16>,
}

impl Negotiated {
    /// From a CONNECT's properties; `topic_alias_maximum` is the broker's own bound.
    pub(crate) fn new(properties: Option<&ConnectProperties>, topic_alias_maximum: u16) -> Self {
        Negotiated {
            client_receive_maximum: properties
                .and_then(|p| p.receive_maximum)
                .unwrap_or(u16::MAX),
            client_maximum_packet_size: properties
                .and_then(|p| p.max_packet_size)
                .unwrap_or(u32::MAX),
            client_topic_alias_maximum: properties
                .and_then(|p| p.topic_alias_max)
                .unwrap_or(0)
                .min(MAX_OUTBOUND_ALIASES),
            topic_alias_maximum,
            problem_information: properties
                .and_then(|p| p.request_problem_info)
                .is_none_or(|v| v != 0),
            inbound: Vec::new(),
            outbound: HashMap::new(),
        }
    }

    /// The topic of an inbound PUBLISH, resolving (and setting) its topic alias: `Err` with
    /// the DISCONNECT reason when the alias is 0, above the maximum, or unknown with an
    /// empty topic.
    pub(crate) fn inbound_topic(&mut self, topic: Bytes, alias: Option<u16>) -> Result<Bytes, u8> {
        let Some(alias) = alias else {
            return if topic.is_empty() {
                Err(reason::PROTOCOL_ERROR)
            } else {
                Ok(topic)
            };
        };
        if alias == 0 || alias > self.topic_alias_maximum {
            return Err(reason::TOPIC_ALIAS_INVALID);
        }
        let slot = usize::from(alias - 1);
        if topic.is_empty() {
            return self
                .inbound
                .get(slot)
                .cloned()
                .flatten()
                .ok_or(reason::PROTOCOL_ERROR);
        }
        if self.inbound.len() <= slot {
            self.inbound.resize(slot + 1, None);
        }
        // Its own bytes: an alias outlives the read buffer the PUBLISH arrived in.
        self.inbound[slot] = Some(Bytes::copy_from_slice(&topic));
        Ok(topic)
    }

    /// The alias to send `topic` with, and whether the topic itself must be sent too (the
    /// first time). Aliases are given in order while the client accepts more; later topics
    /// go without one.
    fn outbound_alias(&mut self, topic: &Bytes) -> Option<(u16, bool)> {
        if let Some(alias) = self.outbound.get(topic) {
            return Some((*alias, false));
        }
        let next = u16::try_from(self.outbound.len() + 1).ok()?;
        if next > self.client_topic_alias_maximum {
            return None;
        }
        // Its own bytes: a routed topic is a view of its publisher's read buffer, which an
        // alias kept for the connection's life would otherwise pin.
        self.outbound.insert(Bytes::copy_from_slice(topic), next);
        Some((next, true))
    }
}

/// Topic aliases the broker keeps towards one client, whatever larger maximum it announces.
const MAX_OUTBOUND_ALIASES: u16 = 64;

/// The limits announced in a CONNACK to a v5 client.
pub(crate) struct Announced {
    pub(crate) receive_maximum: u16,
    pub(crate) maximum_packet_size: u32,
    pub(crate) topic_alias_maximum: u16,
    pub(crate) assigned_client_identifier: Option<String>,
    pub(crate) server_keep_alive: Option<u16>,
}

/// The properties of a client's PUBLISH that travel with the message; `None` when it has
/// none of them.
pub(crate) fn message_properties(
    properties: Option<&PublishProperties>,
) -> Option<Arc<MessageProperties>> {
    let p = properties?;
    let carried = MessageProperties {
        payload_utf8: p.payload_format_indicator == Some(1),
        expires_at: p
            .message_expiry_interval
            .map(|s| now_ms().saturating_add(u64::from(s) * 1000)),
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        // Its own bytes, not a view of the read buffer: a retained or queued message keeps it.
        correlation_data: p.correlation_data.as_deref().map(Bytes::copy_from_slice),
        user_properties: p.user_properties.clone(),
    };
    (carried != MessageProperties::default()).then(|| Arc::new(carried))
}

/// Seconds left of a message's expiry interval (rounded up), `Ok(None)` when it has none,
/// `Err` once it has expired.
pub(crate) fn remaining_expiry(
    properties: &MessageProperties,
    now_ms: u64,
) -> Result<Option<u32>, ()> {
    match properties.expires_at {
        None => Ok(None),
        Some(at) if at <= now_ms => Err(()),
        Some(at) => Ok(Some(
            u32::try_from((at - now_ms).div_ceil(1000)).unwrap_or(u32::MAX),
        )),
    }
}

fn variable_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_variable_int(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Bytes of properties being assembled for one packet.
#[derive(Default)]
struct Properties(BytesMut);

impl Properties {
    fn byte(&mut self, id: u8, value: u8) {
        self.0.put_u8(id);
        self.0.put_u8(value);
    }

    fn u16(&mut self, id: u8, value: u16) {
        self.0.put_u8(id);
        self.0.put_u16(value);
    }

    fn u32(&mut self, id: u8, value: u32) {
        self.0.put_u8(id);
        self.0.put_u32(value);
    }

    fn varint(&mut self, id: u8, value: u32) {
        self.0.put_u8(id);
        put_variable_int(&mut self.0, value as usize);
    }

    fn binary(&mut self, id: u8, value: &[u8]) {
        // Strings and binary data are at most 65,535 bytes; what was decoded fits.
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.0.put_u8(id);
        self.0.put_u16(len);
        self.0.extend_from_slice(&value[..usize::from(len)]);
    }

    fn string(&mut self, id: u8, value: &str) {
        self.binary(id, value.as_bytes());
    }

    fn pair(&mut self, id: u8, key: &str, value: &str) {
        self.string(id, key);
        // `string` wrote the id and key; the value follows without an id.
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.0.put_u16(len);
        self.0
            .extend_from_slice(&value.as_bytes()[..usize::from(len)]);
    }

    /// Property length, then the properties.
    fn write(&self, out: &mut BytesMut) {
        put_variable_int(out, self.0.len());
        out.extend_from_slice(&self.0);
    }

    fn encoded_len(&self) -> usize {
        variable_int_len(self.0.len()) + self.0.len()
    }
}

/// Fixed header of a packet whose remaining length is `remaining`.
fn header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.reserve(5 + remaining);
    out.put_u8(first);
    put_variable_int(out, remaining);
}

/// A CONNACK with a v5 reason code and, when accepted, the broker's limits.
pub(crate) fn connack(
    out: &mut BytesMut,
    code: u8,
    session_present: bool,
    announced: Option<&Announced>,
) {
    let mut p = Properties::default();
    if let Some(a) = announced {
        p.u16(property::RECEIVE_MAXIMUM, a.receive_maximum);
        p.u32(property::MAXIMUM_PACKET_SIZE, a.maximum_packet_size);
        p.u16(property::TOPIC_ALIAS_MAXIMUM, a.topic_alias_maximum);
        p.byte(property::RETAIN_AVAILABLE, 1);
        p.byte(property::WILDCARD_SUBSCRIPTION_AVAILABLE, 1);
        p.byte(property::SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1);
        p.byte(property::SHARED_SUBSCRIPTION_AVAILABLE, 1);
        if let Some(id) = &a.assigned_client_identifier {
            p.string(property::ASSIGNED_CLIENT_IDENTIFIER, id);
        }
        if let Some(keep_alive) = a.server_keep_alive {
            p.u16(property::SERVER_KEEP_ALIVE, keep_alive);
        }
    }
    header(out, 0x20, 2 + p.encoded_len());
    out.put_u8(u8::from(session_present));
    out.put_u8(code);
    p.write(out);
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) with a reason code, and
/// a reason string when the client wants problem information.
pub(crate) fn ack(out: &mut BytesMut, first: u8, pkid: u16, code: u8, reason: Option<&str>) {
    if code == reason::SUCCESS && reason.is_none() {
        header(out, first, 2);
        out.put_u16(pkid);
        return;
    }
    let mut p = Properties::default();
    if let Some(reason) = reason {
        p.string(property::REASON_STRING, reason);
    }
    header(out, first, 3 + p.encoded_len());
    out.put_u16(pkid);
    out.put_u8(code);
    p.write(out);
}

/// SUBACK (0x90) or UNSUBACK (0xB0) with one reason code per filter.
pub(crate) fn suback(out: &mut BytesMut, first: u8, pkid: u16, codes: &[u8]) {
    header(out, first, 3 + codes.len());
    out.put_u16(pkid);
    out.put_u8(0);
    out.extend_from_slice(codes);
}

/// DISCONNECT with a reason code (and a reason string when the client wants one).
pub(crate) fn disconnect(out: &mut BytesMut, code: u8, reason: Option<&str>) {
    let mut p = Properties::default();
    if let Some(reason) = reason {
        p.string(property::REASON_STRING, reason);
    }
    header(out, 0xE0, 1 + p.encoded_len());
    out.put_u8(code);
    p.write(out);
}

/// What goes into one outgoing v5 PUBLISH besides the message.
pub(crate) struct PublishExtras<'a> {
    pub(crate) subscription_ids: &'a [u32],
    /// Seconds left of its expiry interval.
    pub(crate) expiry: Option<u32>,
}

/// Encodes a PUBLISH for a v5 client; `false` (nothing written) when it would exceed the
/// client's maximum packet size.
#[allow(clippy::too_many_arguments)]
pub(crate) fn publish(
    out: &mut BytesMut,
    negotiated: &mut Negotiated,
    first: u8,
    topic: &Bytes,
    pkid: Option<u16>,
    payload: &[u8],
    properties: Option<&MessageProperties>,
    extras: &PublishExtras<'_>,
) -> bool {
    let mut p = Properties::default();
    if let Some(m) = properties {
        if m.payload_utf8 {
            p.byte(property::PAYLOAD_FORMAT_INDICATOR, 1);
        }
        if let Some(expiry) = extras.expiry {
            p.u32(property::MESSAGE_EXPIRY_INTERVAL, expiry);
        }
        if let Some(content_type) = &m.content_type {
            p.string(property::CONTENT_TYPE, content_type);
        }
        if let Some(response_topic) = &m.response_topic {
            p.string(property::RESPONSE_TOPIC, response_topic);
        }
        if let Some(data) = &m.correlation_data {
            p.binary(property::CORRELATION_DATA, data);
        }
        for (key, value) in &m.user_properties {
            p.pair(property::USER_PROPERTY, key, value);
        }
    }
    for id in extras.subscription_ids {
        p.varint(property::SUBSCRIPTION_IDENTIFIER, *id);
    }
    let without_alias = 2 + topic.len() + pkid.map_or(0, |_| 2) + p.encoded_len() + payload.len();
    if total_len(without_alias) > negotiated.client_maximum_packet_size as usize {
        return false;
    }
    let mut topic_sent: &[u8] = topic;
    if let Some((alias, send_topic)) = negotiated.outbound_alias(topic) {
        p.u16(property::TOPIC_ALIAS, alias);
        if !send_topic {
            topic_sent = &[];
        }
    }
    let remaining = 2 + topic_sent.len() + pkid.map_or(0, |_| 2) + p.encoded_len() + payload.len();
    header(out, first, remaining);
    out.put_u16(u16::try_from(topic_sent.len()).unwrap_or(0));
    out.extend_from_slice(topic_sent);
    if let Some(pkid) = pkid {
        out.put_u16(pkid);
    }
    p.write(out);
    out.extend_from_slice(payload);
    true
}

/// Bytes of a whole packet whose remaining length is `remaining`.
pub(crate) fn total_len(remaining: usize) -> usize {
    1 + variable_int_len(remaining) + remaining
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::v5::V5;
    use rumqttd::protocol::{Packet, Protocol};

    fn connect_properties() -> ConnectProperties {
        ConnectProperties {
            session_expiry_interval: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_max: None,
            request_response_info: None,
            request_problem_info: None,
            user_properties: Vec::new(),
            authentication_method: None,
            authentication_data: None,
        }
    }

    #[test]
    fn a_publish_with_properties_decodes_as_written() {
        let mut negotiated = Negotiated::new(None, 10);
        let properties = MessageProperties {
            payload_utf8: true,
            expires_at: None,
            content_type: Some("application/json".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("k".into(), "v".into())],
        };
        let mut out = BytesMut::new();
        let extras = PublishExtras {
            subscription_ids: &[7, 300],
            expiry: Some(5),
        };
        let topic = Bytes::from_static(b"a/b");
        assert!(publish(
            &mut out,
            &mut negotiated,
            0x32,
            &topic,
            Some(9),
            b"{}",
            Some(&properties),
            &extras,
        ));
        let Ok(Packet::Publish(publish, Some(p))) = V5.read_mut(&mut out, 1024) else {
            panic!("not a PUBLISH with properties");
        };
        assert_eq!(publish.topic, "a/b");
        assert_eq!(publish.payload, "{}");
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.message_expiry_interval, Some(5));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"\x00\x01"[..]));
        assert_eq!(p.user_properties, [("k".to_owned(), "v".to_owned())]);
        assert_eq!(p.subscription_identifiers, [7, 300]);
        assert!(out.is_empty(), "the frame was consumed whole");
    }

    #[test]
    fn a_publish_larger_than_the_client_accepts_is_not_written() {
        let connect = ConnectProperties {
            max_packet_size: Some(20),
            ..connect_properties()
        };
        let mut negotiated = Negotiated::new(Some(&connect), 10);
        let mut out = BytesMut::new();
        let extras = PublishExtras {
            subscription_ids: &[],
            expiry: None,
        };
        let topic = Bytes::from_static(b"t");
        assert!(!publish(
            &mut out,
            &mut negotiated,
            0x30,
            &topic,
            None,
            &[0; 32],
            None,
            &extras
        ));
        assert!(out.is_empty());
        assert!(publish(
            &mut out,
            &mut negotiated,
            0x30,
            &topic,
            None,
            &[0; 8],
            None,
            &extras
        ));
    }

    #[test]
    fn inbound_aliases_are_set_used_and_bounded() {
        let mut negotiated = Negotiated::new(None, 2);
        let topic = Bytes::from_static(b"a/b");
        assert_eq!(
            negotiated.inbound_topic(topic.clone(), Some(1)),
            Ok(topic.clone())
        );
        assert_eq!(negotiated.inbound_topic(Bytes::new(), Some(1)), Ok(topic));
        assert_eq!(
            negotiated.inbound_topic(Bytes::new(), Some(2)),
            Err(reason::PROTOCOL_ERROR),
            "an alias never set"
        );
        assert_eq!(
            negotiated.inbound_topic(Bytes::from_static(b"x"), Some(3)),
            Err(reason::TOPIC_ALIAS_INVALID)
        );
        assert_eq!(
            negotiated.inbound_topic(Bytes::from_static(b"x"), Some(0)),
            Err(reason::TOPIC_ALIAS_INVALID)
        );
    }

    #[test]
    fn outbound_aliases_send_the_topic_once() {
        let connect = ConnectProperties {
            topic_alias_max: Some(1),
            ..connect_properties()
        };
        let mut negotiated = Negotiated::new(Some(&connect), 10);
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        assert_eq!(negotiated.outbound_alias(&a), Some((1, true)));
        assert_eq!(negotiated.outbound_alias(&a), Some((1, false)));
        assert_eq!(
            negotiated.outbound_alias(&b),
            None,
            "past the client's maximum"
        );
    }
}
