//! The bytes of the rows the broker persists (see [`crate::persistence`]): a message
//! (retained, or queued for a persistent session) and a session (who it belongs to, how long
//! it outlives its connection, its subscriptions). A leading format byte lets a later version
//! read older rows; rows of every earlier format are still read.
//!
//! Message (format 3): `3, qos, retain, topic length (u16 BE), topic, extras length (u32 BE),
//! extras, payload`. A retained message is stored under its topic, so its row leaves the topic
//! out (format 4): `4, qos, extras length, extras, payload`. Extras are what MQTT 5 adds: a
//! flags byte (bit 0 payload is UTF-8, bit 1 expiry, bit 2 content type, bit 3 response topic,
//! bit 4 correlation data), the fields the flags announce in that order (expiry as u64 BE
//! milliseconds since the Unix epoch, texts and data as length (u16 BE) and bytes), the user
//! properties (count u16 BE, then key and value as texts) and the subscription identifiers
//! (count u16 BE, then u32 BE each). Formats 1 (`1, qos, retain, topic, payload`) and 2
//! (`2, qos, payload`) are those without extras.
//! Session (format 2): `2, principal, session expiry interval (u32 BE), subscription count
//! (u16 BE), then per subscription: filter length (u16 BE), filter, qos, options (bit 0 no
//! local, bit 1 retain as published, bits 2-3 retain handling), subscription identifier
//! (u32 BE)`; format 1 has no expiry (it is kept until replaced) and only filter and qos.
//! Principal: `0` anonymous, `1` operator of every organization, `2` operator of `count
//! (u16 BE)` organizations each as `length (u16 BE), slug`, `3` device as `length, org slug,
//! length, device id`.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use fleetmq_protocol::{OrgScope, Principal};

use super::subscription::{Expiry, Options, Subscription};
use super::{Message, MessageProperties};

/// Formats without MQTT 5 extras, still read.
const MESSAGE_V1: u8 = 1;
const RETAINED_V1: u8 = 2;
const SESSION_V1: u8 = 1;
/// Formats written now.
const MESSAGE: u8 = 3;
const RETAINED: u8 = 4;
const SESSION: u8 = 2;

/// Why a stored row could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("unreadable broker record: {0}")]
pub(crate) struct BadRecord(&'static str);

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Topics, filters, slugs, ids and MQTT 5 texts are at most 65,535 bytes (MQTT's own
    // limit).
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.extend_from_slice(&b[..usize::from(len)]);
}

fn get_bytes<'b>(buf: &mut &'b [u8]) -> Result<&'b [u8], BadRecord> {
    if buf.remaining() < 2 {
        return Err(BadRecord("truncated length"));
    }
    let len = usize::from(buf.get_u16());
    if buf.remaining() < len {
        return Err(BadRecord("truncated text"));
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    Ok(bytes)
}

fn get_str(buf: &mut &[u8]) -> Result<String, BadRecord> {
    let bytes = get_bytes(buf)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| BadRecord("text is not UTF-8"))
}

fn get_u8(buf: &mut &[u8]) -> Result<u8, BadRecord> {
    if buf.remaining() < 1 {
        return Err(BadRecord("truncated"));
    }
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut &[u8]) -> Result<u16, BadRecord> {
    if buf.remaining() < 2 {
        return Err(BadRecord("truncated"));
    }
    Ok(buf.get_u16())
}

fn get_u32(buf: &mut &[u8]) -> Result<u32, BadRecord> {
    if buf.remaining() < 4 {
        return Err(BadRecord("truncated"));
    }
    Ok(buf.get_u32())
}

fn get_qos(buf: &mut &[u8]) -> Result<u8, BadRecord> {
    match get_u8(buf)? {
        qos @ 0..=2 => Ok(qos),
        _ => Err(BadRecord("QoS above 2")),
    }
}

/// A message's MQTT 5 properties and subscription identifiers, length first.
fn put_extras(out: &mut Vec<u8>, properties: Option<&MessageProperties>, ids: Option<&[u32]>) {
    let mut extras = Vec::new();
    let default = MessageProperties::default();
    let p = properties.unwrap_or(&default);
    let flags = u8::from(p.payload_utf8)
        | u8::from(p.expires_at.is_some()) << 1
        | u8::from(p.content_type.is_some()) << 2
        | u8::from(p.response_topic.is_some()) << 3
        | u8::from(p.correlation_data.is_some()) << 4;
    extras.put_u8(flags);
    if let Some(at) = p.expires_at {
        extras.put_u64(at);
    }
    for text in [&p.content_type, &p.response_topic].into_iter().flatten() {
        put_str(&mut extras, text);
    }
    if let Some(data) = &p.correlation_data {
        put_bytes(&mut extras, data);
    }
    let pairs = p.user_properties.len().min(usize::from(u16::MAX));
    extras.put_u16(pairs as u16);
    for (key, value) in p.user_properties.iter().take(pairs) {
        put_str(&mut extras, key);
        put_str(&mut extras, value);
    }
    let ids = ids.unwrap_or_default();
    let count = ids.len().min(usize::from(u16::MAX));
    extras.put_u16(count as u16);
    for id in &ids[..count] {
        extras.put_u32(*id);
    }
    out.put_u32(u32::try_from(extras.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&extras);
}

type Extras = (Option<Arc<MessageProperties>>, Option<Box<[u32]>>);

fn get_extras(buf: &mut &[u8]) -> Result<Extras, BadRecord> {
    let len = get_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(BadRecord("truncated extras"));
    }
    let (mut extras, rest) = buf.split_at(len);
    *buf = rest;
    let e = &mut extras;
    let flags = get_u8(e)?;
    let mut p = MessageProperties {
        payload_utf8: flags & 1 != 0,
        ..MessageProperties::default()
    };
    if flags & 2 != 0 {
        if e.remaining() < 8 {
            return Err(BadRecord("truncated expiry"));
        }
        p.expires_at = Some(e.get_u64());
    }
    if flags & 4 != 0 {
        p.content_type = Some(get_str(e)?);
    }
    if flags & 8 != 0 {
        p.response_topic = Some(get_str(e)?);
    }
    if flags & 16 != 0 {
        p.correlation_data = Some(Bytes::copy_from_slice(get_bytes(e)?));
    }
    for _ in 0..get_u16(e)? {
        p.user_properties.push((get_str(e)?, get_str(e)?));
    }
    let ids: Vec<u32> = (0..get_u16(e)?)
        .map(|_| get_u32(e))
        .collect::<Result<_, _>>()?;
    let properties = (p != MessageProperties::default()).then(|| Arc::new(p));
    Ok((properties, (!ids.is_empty()).then(|| ids.into())))
}

/// A message queued for a persistent session, with the identifiers of the subscriptions it
/// matched.
pub(crate) fn encode_message(message: &Message, ids: Option<&[u32]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + message.topic.len() + message.payload.len());
    out.put_u8(MESSAGE);
    out.put_u8(message.qos);
    out.put_u8(u8::from(message.retain));
    put_str(&mut out, message.topic_str());
    put_extras(&mut out, message.properties.as_deref(), ids);
    out.extend_from_slice(&message.payload);
    out
}

/// A queued message and the identifiers of the subscriptions it matched.
pub(crate) type QueuedMessage = (Message, Option<Box<[u32]>>);

/// A queued message and its subscription identifiers, from a row of either format.
pub(crate) fn decode_message(record: &[u8]) -> Result<QueuedMessage, BadRecord> {
    let mut buf = record;
    let format = get_u8(&mut buf)?;
    if format != MESSAGE && format != MESSAGE_V1 {
        return Err(BadRecord("unknown message format"));
    }
    let qos = get_qos(&mut buf)?;
    let retain = get_u8(&mut buf)? != 0;
    let topic = get_str(&mut buf)?;
    let (properties, ids) = match format {
        MESSAGE => get_extras(&mut buf)?,
        _ => (None, None),
    };
    let message = Message {
        topic: Bytes::from(topic),
        payload: Bytes::copy_from_slice(buf),
        qos,
        retain,
        properties,
    };
    Ok((message, ids))
}

/// A retained message's row, without its topic (the key it is stored under).
pub(crate) fn encode_retained(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + message.payload.len());
    out.put_u8(RETAINED);
    out.put_u8(message.qos);
    put_extras(&mut out, message.properties.as_deref(), None);
    out.extend_from_slice(&message.payload);
    out
}

/// The retained message stored under `topic` with `record` (any format).
pub(crate) fn decode_retained(topic: &str, record: &[u8]) -> Result<Message, BadRecord> {
    let mut buf = record;
    let format = match buf.first() {
        Some(&(MESSAGE_V1 | MESSAGE)) => return decode_message(record).map(|(m, _)| m),
        Some(&format @ (RETAINED_V1 | RETAINED)) => format,
        _ => return Err(BadRecord("unknown retained format")),
    };
    buf.advance(1);
    let qos = get_qos(&mut buf)?;
    let properties = match format {
        RETAINED => get_extras(&mut buf)?.0,
        _ => None,
    };
    Ok(Message {
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        payload: Bytes::copy_from_slice(buf),
        qos,
        retain: true,
        properties,
    })
}

pub(crate) fn encode_session(
    principal: &Principal,
    expiry: Expiry,
    subscriptions: &[Subscription],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u8(SESSION);
    match principal {
        Principal::Anonymous => out.put_u8(0),
        Principal::Operator {
            orgs: OrgScope::All,
        } => out.put_u8(1),
        Principal::Operator {
            orgs: OrgScope::Managed(orgs),
        } => {
            out.put_u8(2);
            out.put_u16(u16::try_from(orgs.len()).unwrap_or(u16::MAX));
            for org in orgs.iter().take(usize::from(u16::MAX)) {
                put_str(&mut out, org);
            }
        }
        Principal::Device {
            org_slug,
            device_id,
        } => {
            out.put_u8(3);
            put_str(&mut out, org_slug);
            put_str(&mut out, &device_id.to_string());
        }
    }
    out.put_u32(expiry.interval());
    out.put_u16(u16::try_from(subscriptions.len()).unwrap_or(u16::MAX));
    for s in subscriptions.iter().take(usize::from(u16::MAX)) {
        put_str(&mut out, &s.filter);
        out.put_u8(s.qos);
        let o = s.options;
        out.put_u8(
            u8::from(o.no_local)
                | u8::from(o.retain_as_published) << 1
                | (o.retain_handling & 3) << 2,
        );
        out.put_u32(o.id);
    }
    out
}

/// A stored session: whose, how long it outlives its connection, its subscriptions.
pub(crate) type StoredSession = (Principal, Expiry, Vec<Subscription>);

pub(crate) fn decode_session(record: &[u8]) -> Result<StoredSession, BadRecord> {
    let mut buf = record;
    let format = get_u8(&mut buf)?;
    if format != SESSION && format != SESSION_V1 {
        return Err(BadRecord("unknown session format"));
    }
    let principal = match get_u8(&mut buf)? {
        0 => Principal::Anonymous,
        1 => Principal::Operator {
            orgs: OrgScope::All,
        },
        2 => {
            let count = get_u16(&mut buf)?;
            let orgs = (0..count)
                .map(|_| get_str(&mut buf))
                .collect::<Result<_, _>>()?;
            Principal::Operator {
                orgs: OrgScope::Managed(orgs),
            }
        }
        3 => {
            let org_slug = get_str(&mut buf)?;
            let device_id = get_str(&mut buf)?
                .parse()
                .map_err(|_| BadRecord("device id"))?;
            Principal::Device {
                org_slug,
                device_id,
            }
        }
        _ => return Err(BadRecord("unknown principal")),
    };
    let expiry = match format {
        SESSION => match Expiry::from_interval(get_u32(&mut buf)?) {
            Expiry::WithConnection => {
                return Err(BadRecord("a stored session that ends with its connection"));
            }
            expiry => expiry,
        },
        _ => Expiry::Never,
    };
    let count = get_u16(&mut buf)?;
    let mut subscriptions = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let filter = get_str(&mut buf)?;
        let qos = get_u8(&mut buf)?.min(2);
        let options = match format {
            SESSION => {
                let bits = get_u8(&mut buf)?;
                Options {
                    no_local: bits & 1 != 0,
                    retain_as_published: bits & 2 != 0,
                    retain_handling: (bits >> 2 & 3).min(2),
                    id: get_u32(&mut buf)?,
                }
            }
            _ => Options::default(),
        };
        subscriptions.push(Subscription {
            filter,
            qos,
            options,
        });
    }
    Ok((principal, expiry, subscriptions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principals() -> [Principal; 4] {
        [
            Principal::Anonymous,
            Principal::Operator {
                orgs: OrgScope::All,
            },
            Principal::Operator {
                orgs: OrgScope::Managed(vec!["acme".into(), "beta".into()]),
            },
            Principal::Device {
                org_slug: "acme".into(),
                device_id: "00000000-0000-4000-8000-0000000000d1".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn messages_and_sessions_round_trip() {
        let plain = Message {
            topic: Bytes::from_static(b"a/b"),
            payload: Bytes::from_static(b"\x00\xffpayload"),
            qos: 2,
            retain: true,
            properties: None,
        };
        let with_properties = Message {
            properties: Some(Arc::new(MessageProperties {
                payload_utf8: true,
                expires_at: Some(1_900_000_000_000),
                content_type: Some("text/plain".into()),
                response_topic: Some("r/1".into()),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            })),
            ..plain.clone()
        };
        for message in [plain, with_properties] {
            let ids: Option<Box<[u32]>> = Some(vec![3, 7].into());
            let (m, i) = decode_message(&encode_message(&message, ids.as_deref())).unwrap();
            assert_eq!((m, i), (message.clone(), ids));
            let retained = encode_retained(&message);
            assert_eq!(decode_retained("a/b", &retained).unwrap(), message);
        }
        let subscriptions = vec![
            Subscription::plain("#", 1),
            Subscription {
                filter: "a/+".into(),
                qos: 2,
                options: Options {
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                    id: 268_435_455,
                },
            },
        ];
        for principal in principals() {
            for expiry in [Expiry::After(30), Expiry::Never] {
                let decoded = decode_session(&encode_session(&principal, expiry, &subscriptions));
                assert_eq!(
                    decoded.unwrap(),
                    (principal.clone(), expiry, subscriptions.clone())
                );
            }
        }
    }

    #[test]
    fn rows_of_earlier_formats_are_still_read() {
        // Format 1 message: qos 1, retain 0, topic "a/b", payload "p".
        let v1 = b"\x01\x01\x00\x00\x03a/bp";
        let (message, ids) = decode_message(v1).unwrap();
        assert_eq!(
            (message.topic_str(), &message.payload[..], message.qos),
            ("a/b", &b"p"[..], 1)
        );
        assert_eq!((message.properties, ids), (None, None));
        assert_eq!(decode_retained("t", b"\x02\x01p").unwrap().payload, "p");
        assert_eq!(decode_retained("a/b", v1).unwrap().topic_str(), "a/b");
        // Format 1 session: anonymous, one subscription "#" at QoS 1: kept until replaced.
        let session = decode_session(b"\x01\x00\x00\x01\x00\x01#\x01").unwrap();
        assert_eq!(
            session,
            (
                Principal::Anonymous,
                Expiry::Never,
                vec![Subscription::plain("#", 1)]
            )
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [
            &b""[..],
            b"\x01",
            b"\x02\x01\x00",
            b"\x01\x01\x00\xff\xff",
            b"\x01\x07",
            b"\x03\x01\x00\x00\x01a\xff\xff\xff\xff",
            b"\x02\x00\x00\x00\x00\x00",
        ] {
            assert!(decode_message(garbage).is_err());
            assert!(decode_session(garbage).is_err());
        }
        for garbage in [
            &b""[..],
            b"\x02",
            b"\x02\x03",
            b"\x01\x07",
            b"\x09\x01",
            b"\x04\x01\x00\x00\x00\x09\x00",
        ] {
            assert!(decode_retained("t", garbage).is_err());
        }
    }
}
