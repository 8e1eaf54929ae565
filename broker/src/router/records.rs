//! The bytes of the rows the broker persists (see [`crate::persistence`]): a message
//! (retained, or queued for a persistent session) and a session (who it belongs to and its
//! subscriptions). A leading format byte lets a later version read older rows.
//!
//! Message: `1, qos, retain, topic length (u16 BE), topic, payload`. A retained message is
//! stored under its topic, so its row leaves the topic out: `2, qos, payload` (format 1 rows
//! written before are still read).
//! Session: `1, principal, subscription count (u16 BE), then per subscription: filter length
//! (u16 BE), filter, qos`; principal: `0` anonymous, `1` operator of every organization,
//! `2` operator of `count (u16 BE)` organizations each as `length (u16 BE), slug`, `3` device
//! as `length, org slug, length, device id`.

use bytes::{Buf, BufMut, Bytes};
use fleetmq_protocol::{OrgScope, Principal};

use super::Message;

const FORMAT: u8 = 1;

/// Why a stored row could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("unreadable broker record: {0}")]
pub(crate) struct BadRecord(&'static str);

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Topics, filters, slugs and ids are at most 65,535 bytes (MQTT's own limit).
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn get_str(buf: &mut &[u8]) -> Result<String, BadRecord> {
    if buf.remaining() < 2 {
        return Err(BadRecord("truncated length"));
    }
    let len = usize::from(buf.get_u16());
    if buf.remaining() < len {
        return Err(BadRecord("truncated text"));
    }
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| BadRecord("text is not UTF-8"))?
        .to_owned();
    buf.advance(len);
    Ok(text)
}

fn get_u8(buf: &mut &[u8]) -> Result<u8, BadRecord> {
    if buf.remaining() < 1 {
        return Err(BadRecord("truncated"));
    }
    Ok(buf.get_u8())
}

pub(crate) fn encode_message(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.topic.len() + message.payload.len());
    out.put_u8(FORMAT);
    out.put_u8(message.qos);
    out.put_u8(u8::from(message.retain));
    put_str(&mut out, message.topic_str());
    out.extend_from_slice(&message.payload);
    out
}

pub(crate) fn decode_message(record: &[u8]) -> Result<Message, BadRecord> {
    let mut buf = record;
    if get_u8(&mut buf)? != FORMAT {
        return Err(BadRecord("unknown message format"));
    }
    let qos = get_u8(&mut buf)?;
    if qos > 2 {
        return Err(BadRecord("QoS above 2"));
    }
    let retain = get_u8(&mut buf)? != 0;
    let topic = get_str(&mut buf)?;
    Ok(Message {
        topic: Bytes::from(topic),
        payload: Bytes::copy_from_slice(buf),
        qos,
        retain,
    })
}

/// Format of a retained message's row: its topic is the row's key.
const RETAINED_FORMAT: u8 = 2;

/// A retained message's row, without its topic (the key it is stored under).
pub(crate) fn encode_retained(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + message.payload.len());
    out.put_u8(RETAINED_FORMAT);
    out.put_u8(message.qos);
    out.extend_from_slice(&message.payload);
    out
}

/// The retained message stored under `topic` with `record` (either format).
pub(crate) fn decode_retained(topic: &str, record: &[u8]) -> Result<Message, BadRecord> {
    let mut buf = record;
    match buf.first() {
        Some(&FORMAT) => return decode_message(record),
        Some(&RETAINED_FORMAT) => buf.advance(1),
        _ => return Err(BadRecord("unknown retained format")),
    }
    let qos = get_u8(&mut buf)?;
    if qos > 2 {
        return Err(BadRecord("QoS above 2"));
    }
    Ok(Message {
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        payload: Bytes::copy_from_slice(buf),
        qos,
        retain: true,
    })
}

pub(crate) fn encode_session(principal: &Principal, subscriptions: &[(String, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u8(FORMAT);
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
    out.put_u16(u16::try_from(subscriptions.len()).unwrap_or(u16::MAX));
    for (filter, qos) in subscriptions.iter().take(usize::from(u16::MAX)) {
        put_str(&mut out, filter);
        out.put_u8(*qos);
    }
    out
}

pub(crate) fn decode_session(record: &[u8]) -> Result<(Principal, Vec<(String, u8)>), BadRecord> {
    let mut buf = record;
    if get_u8(&mut buf)? != FORMAT {
        return Err(BadRecord("unknown session format"));
    }
    let principal = match get_u8(&mut buf)? {
        0 => Principal::Anonymous,
        1 => Principal::Operator {
            orgs: OrgScope::All,
        },
        2 => {
            if buf.remaining() < 2 {
                return Err(BadRecord("truncated organizations"));
            }
            let count = buf.get_u16();
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
    if buf.remaining() < 2 {
        return Err(BadRecord("truncated subscriptions"));
    }
    let count = buf.get_u16();
    let mut subscriptions = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let filter = get_str(&mut buf)?;
        let qos = get_u8(&mut buf)?;
        subscriptions.push((filter, qos.min(2)));
    }
    Ok((principal, subscriptions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_sessions_round_trip() {
        let message = Message {
            topic: Bytes::from_static(b"a/b"),
            payload: Bytes::from_static(b"\x00\xffpayload"),
            qos: 2,
            retain: true,
        };
        assert_eq!(decode_message(&encode_message(&message)).unwrap(), message);
        let retained = encode_retained(&message);
        assert_eq!(
            retained.len(),
            2 + message.payload.len(),
            "no topic in the row"
        );
        assert_eq!(decode_retained("a/b", &retained).unwrap(), message);
        assert_eq!(
            decode_retained("a/b", &encode_message(&message)).unwrap(),
            message,
            "rows written before keep being read"
        );
        let principals = [
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
        ];
        let subscriptions = vec![("#".to_owned(), 1), ("a/+".to_owned(), 2)];
        for principal in principals {
            let (p, s) = decode_session(&encode_session(&principal, &subscriptions)).unwrap();
            assert_eq!((p, s), (principal, subscriptions.clone()));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [
            &b""[..],
            b"\x01",
            b"\x02\x01\x00",
            b"\x01\x01\x00\xff\xff",
            b"\x01\x07",
        ] {
            assert!(decode_message(garbage).is_err());
            assert!(decode_session(garbage).is_err());
        }
        for garbage in [&b""[..], b"\x02", b"\x02\x03", b"\x01\x07", b"\x09\x01"] {
            assert!(decode_retained("t", garbage).is_err());
        }
    }
}
