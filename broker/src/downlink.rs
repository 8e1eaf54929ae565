//! Server-to-device messages served by the front end, not by the router.
//!
//! A device may only subscribe inside its own `down/` tree, and only the server publishes
//! there. Routing those subscriptions would put a filter per device in the router's tree and a
//! mailbox per device in the router for messages only the server sends (rumqttd 0.20's router,
//! before ours, matched them linearly: the connect rate fell to ~50/s at 19,000 devices). So
//! a device's subscriptions stay in its connection task, and
//! [`BrokerHandle::publish`](crate::BrokerHandle::publish) hands `down/` messages straight to
//! the device's live connection through [`Downlinks`]. See docs/mqtt.md.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fleetmq_protocol::DeviceId;
use fleetmq_protocol::topic::is_valid_level;
use rumqttd::protocol::QoS;

use crate::BrokerError;
use crate::router::MessageProperties;

/// Messages that may wait for a device's connection task; beyond it they are dropped.
pub(crate) const DOWNLINK_QUEUE: usize = 256;

/// A server-to-device message on its way to a device's connection.
#[derive(Debug, Clone)]
pub(crate) struct Downlink {
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
    /// A request's response topic and correlation data, for MQTT 5 devices.
    pub(crate) properties: Option<Arc<MessageProperties>>,
}

struct Entry {
    generation: u64,
    queue: Arc<DownlinkQueue>,
}

/// One device connection's downlink queue: filled by [`Downlinks::send`], emptied by the
/// connection task, bounded by [`DOWNLINK_QUEUE`]. Every connected device has one and most
/// stay empty, so it is a mutex around a deque (about 100 bytes, nothing allocated while
/// empty) rather than a tokio channel (800 bytes: cache-padded halves and a first block of
/// 32 slots, allocated up front).
pub(crate) struct DownlinkQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    messages: VecDeque<Box<Downlink>>,
    /// The connection task waiting for a message.
    waker: Option<Waker>,
    /// Replaced by a newer connection or removed: nothing more will come.
    closed: bool,
}

impl DownlinkQueue {
    fn new() -> Arc<DownlinkQueue> {
        Arc::new(DownlinkQueue {
            state: Mutex::new(QueueState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, message: Downlink) -> Sent {
        let mut state = self.lock();
        if state.closed {
            return Sent::Offline;
        }
        if state.messages.len() >= DOWNLINK_QUEUE {
            return Sent::Full;
        }
        // Boxed: the deque's slots are pointers, not whole messages.
        state.messages.push_back(Box::new(message));
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Sent::Queued
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next message; `None` once the queue is closed and empty.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Box<Downlink>>> {
        let mut state = self.lock();
        if let Some(message) = state.take() {
            return Poll::Ready(Some(message));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Box<Downlink>> {
        self.lock().take()
    }
}

impl QueueState {
    fn take(&mut self) -> Option<Box<Downlink>> {
        let message = self.messages.pop_front()?;
        if self.messages.is_empty() && self.messages.capacity() > 8 {
            // A burst's slots go with it.
            self.messages = VecDeque::new();
        }
        Some(message)
    }
}

/// A device's subscriptions: filter as subscribed, granted QoS (at most 1).
pub(crate) type Filters = Vec<(String, QoS)>;

/// Device id → the live connection's downlink queue.
#[derive(Default)]
pub(crate) struct Downlinks {
    /// Sized for the connection limit up front (see [`Downlinks::with_capacity`]).
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
    /// Room for `devices` connected devices before the registry's map grows (a growing map
    /// rehashes every key under its lock, stalling every connect meanwhile).
    pub(crate) fn with_capacity(devices: usize) -> Self {
        Self {
            live: Mutex::new(HashMap::with_capacity(devices)),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a new connection the device's downlink target (replacing a previous one: the
    /// new connection of a takeover, whose old queue is closed). Returns the connection's
    /// queue and the generation to pass to [`remove`](Self::remove).
    pub(crate) fn register(&self, device_id: DeviceId) -> (Arc<DownlinkQueue>, u64) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let queue = DownlinkQueue::new();
        let entry = Entry {
            generation,
            queue: Arc::clone(&queue),
        };
        let replaced = self.lock().insert(device_id, entry);
        if let Some(replaced) = replaced {
            replaced.queue.close();
        }
        (queue, generation)
    }

    /// Forgets the device's connection, unless a newer one has already replaced it.
    pub(crate) fn remove(&self, device_id: DeviceId, generation: u64) {
        let mut live = self.lock();
        if live
            .get(&device_id)
            .is_some_and(|e| e.generation == generation)
            && let Some(removed) = live.remove(&device_id)
        {
            removed.queue.close();
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
        let Some(queue) = self.lock().get(&device_id).map(|e| Arc::clone(&e.queue)) else {
            return Sent::Offline;
        };
        queue.push(message)
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

    fn message() -> Downlink {
        Downlink {
            properties: None,
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
        }
    }

    async fn recv(queue: &DownlinkQueue) -> Option<Box<Downlink>> {
        std::future::poll_fn(|cx| queue.poll_recv(cx)).await
    }

    #[tokio::test]
    async fn only_the_registering_connection_removes_its_entry() {
        let downlinks = Downlinks::default();
        let (old_queue, old) = downlinks.register(d1());
        let (new_queue, _new) = downlinks.register(d1());
        downlinks.remove(d1(), old);
        // Taken over: the old connection hears that nothing more will come.
        assert!(recv(&old_queue).await.is_none());
        assert_eq!(downlinks.send(d1(), message()), Sent::Queued);
        assert!(recv(&new_queue).await.is_some());
        for _ in 0..DOWNLINK_QUEUE {
            assert_eq!(downlinks.send(d1(), message()), Sent::Queued);
        }
        assert_eq!(downlinks.send(d1(), message()), Sent::Full);
        assert!(new_queue.try_recv().is_some());
        assert_eq!(downlinks.send(d1(), message()), Sent::Queued);
        assert_eq!(
            downlinks.send(
                "00000000-0000-4000-8000-0000000000d2".parse().unwrap(),
                message()
            ),
            Sent::Offline
        );
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_a_message_and_by_its_removal() {
        let downlinks = std::sync::Arc::new(Downlinks::default());
        let (queue, generation) = downlinks.register(d1());
        let waiting = tokio::spawn(async move {
            let first = recv(&queue).await.is_some();
            let then = recv(&queue).await.is_some();
            (first, then)
        });
        tokio::task::yield_now().await;
        assert_eq!(downlinks.send(d1(), message()), Sent::Queued);
        tokio::task::yield_now().await;
        downlinks.remove(d1(), generation);
        assert_eq!(downlinks.send(d1(), message()), Sent::Offline);
        assert_eq!(waiting.await.unwrap(), (true, false));
    }
}
