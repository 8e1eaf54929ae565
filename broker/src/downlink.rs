//! Server-to-device messages served by the front end, not by the router.
//!
//! A device may only subscribe inside its own `down/` tree, and only the server publishes
//! there. Routing those subscriptions through rumqttd 0.20 costs a filter log per device and
//! a linear match of every new filter against every topic ever seen (and of every new topic
//! against every filter): quadratic in the fleet size, the connect rate fell to ~50/s at
//! 19,000 devices. So a device's subscriptions stay in its connection task, and
//! [`BrokerHandle::publish`](crate::BrokerHandle::publish) hands `down/` messages straight to
//! the device's live connection through [`Downlinks`]. See docs/mqtt.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fleetmq_protocol::topic::is_valid_level;
use rumqttd::protocol::QoS;
use tokio::sync::mpsc;

/// Messages that may wait for a device's connection task; beyond it they are dropped.
pub(crate) const DOWNLINK_QUEUE: usize = 256;

/// A server-to-device message on its way to a device's connection.
#[derive(Debug, Clone)]
pub(crate) struct Downlink {
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
}

struct Entry {
    generation: u64,
    tx: mpsc::Sender<Box<Downlink>>,
}

/// A device's subscriptions: filter as subscribed, granted QoS (at most 1).
pub(crate) type Filters = Vec<(String, QoS)>;

/// Device id → the live connection's downlink queue.
#[derive(Default)]
pub(crate) struct Downlinks {
    live: Mutex<HashMap<String, Entry>>,
    generations: AtomicU64,
    /// Subscriptions of persistent (clean session = 0) device sessions between connections.
    /// Only the subscriptions: messages published while the device is offline are not kept.
    persistent: Mutex<HashMap<String, Filters>>,
}

/// What became of a message handed to [`Downlinks::send`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    Offline,
    Full,
}

impl Downlinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes this connection the device's downlink target (replacing a previous one: the new
    /// connection of a takeover). Returns the generation to pass to [`remove`](Self::remove).
    pub(crate) fn register(&self, device_id: &str, tx: mpsc::Sender<Box<Downlink>>) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert(device_id.to_owned(), Entry { generation, tx });
        generation
    }

    /// Forgets the device's connection, unless a newer one has already replaced it.
    pub(crate) fn remove(&self, device_id: &str, generation: u64) {
        let mut live = self.lock();
        if live
            .get(device_id)
            .is_some_and(|e| e.generation == generation)
        {
            live.remove(device_id);
        }
    }

    /// The subscriptions a new connection starts with: those its persistent session kept,
    /// or none (and forgotten) with a clean session.
    pub(crate) fn restore(&self, device_id: &str, clean_session: bool) -> Filters {
        let mut persistent = self.persistent.lock().unwrap_or_else(|p| p.into_inner());
        let kept = persistent.remove(device_id).unwrap_or_default();
        if clean_session { Filters::new() } else { kept }
    }

    /// Keeps a closing persistent session's subscriptions for its next connection.
    pub(crate) fn keep(&self, device_id: &str, filters: Filters) {
        self.persistent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id.to_owned(), filters);
    }

    /// Hands `message` to the device's live connection without waiting.
    pub(crate) fn send(&self, device_id: &str, message: Downlink) -> Sent {
        let Some(tx) = self.lock().get(device_id).map(|e| e.tx.clone()) else {
            return Sent::Offline;
        };
        // Boxed: an idle device's queue then pre-allocates pointers, not whole messages.
        match tx.try_send(Box::new(message)) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Offline,
        }
    }
}

/// The device a `fleetmq/v1/{org}/{device}/down/…` topic is addressed to. Any channel counts
/// (not only the ones `fleetmq_protocol::Topic` knows): the device's own filters decide.
pub(crate) fn down_topic_device(topic: &str) -> Option<&str> {
    let mut levels = topic.splitn(6, '/');
    let (root, version, org, device, direction, rest) = (
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
    );
    (root == "fleetmq"
        && version == "v1"
        && is_valid_level(org)
        && is_valid_level(device)
        && direction == "down"
        && !rest.is_empty())
    .then_some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_topics_name_their_device_and_nothing_else_does() {
        assert_eq!(
            down_topic_device("fleetmq/v1/acme/d1/down/command/request"),
            Some("d1")
        );
        assert_eq!(down_topic_device("fleetmq/v1/acme/d1/down/x"), Some("d1"));
        assert_eq!(down_topic_device("fleetmq/v1/acme/d1/up/presence"), None);
        assert_eq!(down_topic_device("fleetmq/v1/acme/d1/down"), None);
        assert_eq!(down_topic_device("fleetmq/v1/acme/d1/down/"), None);
        assert_eq!(down_topic_device("fleetmq/v2/acme/d1/down/x"), None);
        assert_eq!(down_topic_device("test/v1/acme/d1/down/x"), None);
    }

    #[tokio::test]
    async fn only_the_registering_connection_removes_its_entry() {
        let downlinks = Downlinks::default();
        let (old_tx, _old_rx) = mpsc::channel(1);
        let (new_tx, mut new_rx) = mpsc::channel(1);
        let old = downlinks.register("d1", old_tx);
        let _new = downlinks.register("d1", new_tx);
        downlinks.remove("d1", old);
        let message = Downlink {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
        };
        assert_eq!(downlinks.send("d1", message), Sent::Queued);
        assert!(new_rx.recv().await.is_some());
        let full = || Downlink {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
        };
        assert_eq!(downlinks.send("d1", full()), Sent::Queued);
        assert_eq!(downlinks.send("d1", full()), Sent::Full);
        assert_eq!(downlinks.send("d2", full()), Sent::Offline);
    }
}
