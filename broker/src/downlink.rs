//! Server-to-device messages served by the front end, not by the router.
//!
//! A device may only subscribe inside its own `down/` tree, and only the server publishes
//! there. Routing those subscriptions would put a filter per device in the router's tree and a
//! mailbox per device in the router for messages only the server sends (rumqttd 0.20's router,
//! before ours, matched them linearly: the connect rate fell to ~50/s at 19,000 devices). So
//! a device's subscriptions stay in its connection task, and
//! [`BrokerHandle::publish`](crate::BrokerHandle::publish) hands `down/` messages straight to
//! the device's live connection through [`Downlinks`]. See docs/mqtt.md.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fleetmq_protocol::DeviceId;
use fleetmq_protocol::topic::is_valid_level;
use rumqttd::protocol::QoS;
use tokio::sync::mpsc;

use crate::BrokerError;

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
    live: Mutex<HashMap<DeviceId, Entry>>,
    generations: AtomicU64,
    /// Subscriptions of persistent (clean session = 0) device sessions between connections.
    /// Only the subscriptions: messages published while the device is offline are not kept.
    persistent: Mutex<HashMap<DeviceId, Filters>>,
}

/// What became of a message handed to [`Downlinks::send`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    Offline,
    Full,
}

impl Downlinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes this connection the device's downlink target (replacing a previous one: the new
    /// connection of a takeover). Returns the generation to pass to [`remove`](Self::remove).
    pub(crate) fn register(&self, device_id: DeviceId, tx: mpsc::Sender<Box<Downlink>>) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(device_id, Entry { generation, tx });
        generation
    }

    /// Forgets the device's connection, unless a newer one has already replaced it.
    pub(crate) fn remove(&self, device_id: DeviceId, generation: u64) {
        let mut live = self.lock();
        if live
            .get(&device_id)
            .is_some_and(|e| e.generation == generation)
        {
            live.remove(&device_id);
        }
    }

    /// The subscriptions a new connection starts with: those its persistent session kept,
    /// or none (and forgotten) with a clean session; and whether a kept session resumes.
    pub(crate) fn restore(&self, device_id: DeviceId, clean_session: bool) -> (Filters, bool) {
        let mut persistent = self.persistent.lock().unwrap_or_else(|p| p.into_inner());
        match persistent.remove(&device_id) {
            Some(kept) if !clean_session => (kept, true),
            _ => (Filters::new(), false),
        }
    }

    /// Keeps a closing persistent session's subscriptions for its next connection.
    pub(crate) fn keep(&self, device_id: DeviceId, filters: Filters) {
        self.persistent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id, filters);
    }

    /// Hands `message` to the device's live connection without waiting.
    pub(crate) fn send(&self, device_id: DeviceId, message: Downlink) -> Sent {
        let Some(tx) = self.lock().get(&device_id).map(|e| e.tx.clone()) else {
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

/// The device a `fleetmq/v1/{org}/{device}/down/…` topic is addressed to; `None` for other
/// topics. Any channel counts (not only the ones `fleetmq_protocol::Topic` knows): the
/// device's own filters decide. A device level that is not a device id addresses nobody: an
/// error, not a message silently delivered to no one.
pub(crate) fn down_topic_device(topic: &str) -> Result<Option<DeviceId>, BrokerError> {
    let mut levels = topic.splitn(6, '/');
    let mut next = || levels.next().unwrap_or_default();
    let (root, version, org, device, direction, rest) =
        (next(), next(), next(), next(), next(), next());
    if !(root == "fleetmq"
        && version == "v1"
        && is_valid_level(org)
        && is_valid_level(device)
        && direction == "down"
        && !rest.is_empty())
    {
        return Ok(None);
    }
    device
        .parse()
        .map(Some)
        .map_err(|_| BrokerError::InvalidTopic(topic.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "00000000-0000-4000-8000-0000000000d1";

    fn d1() -> DeviceId {
        D1.parse().unwrap()
    }

    /// The device of a topic whose `d1` level stands for [`D1`].
    fn device_of(topic: &str) -> Option<DeviceId> {
        down_topic_device(&topic.replace("/d1/", &format!("/{D1}/"))).unwrap()
    }

    #[test]
    fn a_down_topic_whose_device_is_not_a_device_id_is_an_error() {
        assert!(down_topic_device("fleetmq/v1/acme/dev-1/down/command/request").is_err());
        assert!(down_topic_device("fleetmq/v1/acme/dev-1/up/telemetry").is_ok());
    }

    #[test]
    fn down_topics_name_their_device_and_nothing_else_does() {
        assert_eq!(
            device_of("fleetmq/v1/acme/d1/down/command/request"),
            Some(d1())
        );
        assert_eq!(device_of("fleetmq/v1/acme/d1/down/x"), Some(d1()));
        assert_eq!(device_of("fleetmq/v1/acme/d1/up/presence"), None);
        assert_eq!(device_of("fleetmq/v1/acme/d1/down"), None);
        assert_eq!(device_of("fleetmq/v1/acme/d1/down/"), None);
        assert_eq!(device_of("fleetmq/v2/acme/d1/down/x"), None);
        assert_eq!(device_of("test/v1/acme/d1/down/x"), None);
    }

    #[tokio::test]
    async fn only_the_registering_connection_removes_its_entry() {
        let downlinks = Downlinks::default();
        let (old_tx, _old_rx) = mpsc::channel(1);
        let (new_tx, mut new_rx) = mpsc::channel(1);
        let old = downlinks.register(d1(), old_tx);
        let _new = downlinks.register(d1(), new_tx);
        downlinks.remove(d1(), old);
        let message = Downlink {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
        };
        assert_eq!(downlinks.send(d1(), message), Sent::Queued);
        assert!(new_rx.recv().await.is_some());
        let full = || Downlink {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
        };
        assert_eq!(downlinks.send(d1(), full()), Sent::Queued);
        assert_eq!(downlinks.send(d1(), full()), Sent::Full);
        assert_eq!(
            downlinks.send(
                "00000000-0000-4000-8000-0000000000d2".parse().unwrap(),
                full()
            ),
            Sent::Offline
        );
    }
}
