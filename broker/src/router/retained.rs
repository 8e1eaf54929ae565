//! Retained messages: the last retained message of each topic, replayed to each new
//! subscription that matches it (MQTT 3.1.1 §3.3.1.3). Bounded in count; a retained message
//! over the bound is still routed, only not kept.

use std::collections::BTreeMap;
use std::ops::Bound;

use std::sync::Arc;

use bytes::Bytes;
use fleetmq_protocol::topic::matches;

use super::{Message, MessageProperties};

/// Topic → its retained message. The topic is kept once, as the key: a message is built
/// again when it is replayed (rarely, and it is copied then anyway).
#[derive(Default)]
pub(crate) struct Retained {
    by_topic: BTreeMap<String, Payload>,
}

/// What is kept of a retained message besides its topic.
struct Payload {
    payload: Bytes,
    qos: u8,
    /// An MQTT 5 publisher's properties, kept with it (MQTT 5 §3.3.2.3).
    properties: Option<Arc<MessageProperties>>,
}

impl Payload {
    /// Copied: the message's bytes are views of the publisher's read buffer (or of a loaded
    /// record), which a retained message, kept for as long as its topic has one, would
    /// otherwise pin.
    fn of(message: &Message) -> Payload {
        Payload {
            payload: Bytes::copy_from_slice(&message.payload),
            qos: message.qos,
            properties: message.properties.clone(),
        }
    }

    fn message(&self, topic: &str) -> Message {
        Message {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: true,
            properties: self.properties.clone(),
        }
    }

    /// Whether its message expiry interval has passed.
    fn expired(&self, now_ms: u64) -> bool {
        self.properties
            .as_ref()
            .and_then(|p| p.expires_at)
            .is_some_and(|at| at <= now_ms)
    }
}

/// What [`Retained::set`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    Stored,
    Cleared,
    Unchanged,
    OverLimit,
}

impl Retained {
    /// Keeps `message` as its topic's retained message, or clears it (empty payload).
    pub(crate) fn set(&mut self, message: &Message, limit: usize) -> Kept {
        let topic = message.topic_str();
        if message.payload.is_empty() {
            return match self.by_topic.remove(topic) {
                Some(_) => Kept::Cleared,
                None => Kept::Unchanged,
            };
        }
        if self.by_topic.len() >= limit && !self.by_topic.contains_key(topic) {
            return Kept::OverLimit;
        }
        self.by_topic.insert(topic.to_owned(), Payload::of(message));
        Kept::Stored
    }

    /// Restores a message loaded from persistence.
    pub(crate) fn restore(&mut self, message: Message) {
        self.by_topic
            .insert(message.topic_str().to_owned(), Payload::of(&message));
    }

    /// The retained messages `filter` matches (a `$share/…` filter gets none, MQTT 5
    /// §4.8.2), except those whose message expiry interval has passed (MQTT 5
    /// §3.3.2.3.3; they are forgotten when the topic is next set). Only the topics under
    /// the filter's literal prefix are looked at.
    pub(crate) fn matching(&self, filter: &str, now_ms: u64) -> Vec<Message> {
        if filter.starts_with("$share/") {
            return Vec::new();
        }
        let literal: Vec<&str> = filter
            .split('/')
            .take_while(|level| !matches!(*level, "+" | "#"))
            .collect();
        let prefix = literal.join("/");
        let range = (Bound::Included(prefix.clone()), Bound::Unbounded);
        self.by_topic
            .range::<String, _>(range)
            .take_while(|(topic, _)| topic.starts_with(&prefix))
            .filter(|(topic, kept)| matches(filter, topic) && !kept.expired(now_ms))
            .map(|(topic, kept)| kept.message(topic))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(topic: &'static str, payload: &'static str) -> Message {
        Message {
            topic: Bytes::from_static(topic.as_bytes()),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: 1,
            retain: true,
            properties: None,
        }
    }

    #[test]
    fn set_clear_match_and_bound() {
        let mut retained = Retained::default();
        assert_eq!(retained.set(&message("a/b", "1"), 2), Kept::Stored);
        assert_eq!(retained.set(&message("a/c", "2"), 2), Kept::Stored);
        assert_eq!(retained.set(&message("b", "3"), 2), Kept::OverLimit);
        assert_eq!(retained.set(&message("a/b", "4"), 2), Kept::Stored);
        let topics = |retained: &Retained, filter| -> Vec<String> {
            retained
                .matching(filter, 0)
                .iter()
                .map(|m| m.topic_str().to_owned())
                .collect()
        };
        assert_eq!(topics(&retained, "a/+"), ["a/b", "a/c"]);
        assert_eq!(topics(&retained, "#"), ["a/b", "a/c"]);
        assert_eq!(topics(&retained, "a/b"), ["a/b"]);
        assert!(topics(&retained, "$share/g/a/+").is_empty());
        assert_eq!(retained.matching("a/b", 0)[0].payload, "4");
        assert_eq!(retained.set(&message("a/b", ""), 2), Kept::Cleared);
        assert_eq!(retained.set(&message("a/b", ""), 2), Kept::Unchanged);
        assert_eq!(topics(&retained, "#"), ["a/c"]);
    }

    #[test]
    fn an_expired_retained_message_is_not_replayed() {
        let mut retained = Retained::default();
        let expiring = Message {
            properties: Some(std::sync::Arc::new(MessageProperties {
                expires_at: Some(1_000),
                ..MessageProperties::default()
            })),
            ..message("a", "1")
        };
        retained.set(&expiring, 10);
        assert_eq!(retained.matching("a", 999).len(), 1);
        assert!(retained.matching("a", 1_000).is_empty());
    }

    #[test]
    fn wildcards_at_the_first_level_do_not_replay_dollar_topics() {
        let mut retained = Retained::default();
        retained.set(&message("$SYS/x", "1"), 10);
        retained.set(&message("x", "2"), 10);
        assert_eq!(retained.matching("#", 0).len(), 1);
        assert_eq!(retained.matching("$SYS/#", 0).len(), 1);
    }
}
