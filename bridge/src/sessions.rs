//! The session recorder's queue: what the broker's session events and the devices'
//! presence messages say about each device, waiting to be written.
//!
//! One entry per device, merged as news arrives: the store keeps only a device's latest
//! connection state (working or not, why, since when, from which address), so a device that
//! reconnects a thousand times while a commit is under way costs one entry and one write, not
//! a thousand. The queue is bounded by the fleet, however fast devices flap or however slow
//! the store is (an unbounded channel grew with every event until the recorder caught up).
//! Devices are written in the order their first unwritten news arrived.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use fleetmq_store::{DeviceId, MqttSession};
use tokio::sync::{Notify, oneshot};

/// Told once a device's entry is written (or could not be): `Err` carries the store's error.
pub(crate) type Written = oneshot::Sender<Result<(), String>>;

/// A device's unwritten session news, merged.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Its latest state, with the address and self-description the merged news carried.
    pub(crate) session: MqttSession,
    /// Presence messages waiting for this write before they are acknowledged.
    pub(crate) waiting: Vec<Written>,
}

impl Pending {
    /// Takes in newer news of the same device: the newer state wins; an address or a model,
    /// OS or system it does not say is kept from the older news.
    fn merge(&mut self, newer: MqttSession) {
        let older = std::mem::replace(&mut self.session, newer);
        let session = &mut self.session;
        if session.peer_ip.is_none() {
            session.peer_ip = older.peer_ip;
        }
        for (slot, old) in [
            (&mut session.model, older.model),
            (&mut session.os, older.os),
            (&mut session.system, older.system),
        ] {
            if slot.is_none() {
                *slot = old;
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    entries: HashMap<DeviceId, Pending>,
    /// Devices with an entry, in the order their entry was made.
    order: VecDeque<DeviceId>,
    closed: bool,
}

/// The queue between the broker (and presence messages) and the session recorder.
#[derive(Default)]
pub(crate) struct SessionQueue {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl SessionQueue {
    /// Adds news of `device`; `waiting` is told when it is written. Never blocks. After
    /// [`close`](Self::close), `waiting` is told "shutting down" at once.
    pub(crate) fn push(&self, device: DeviceId, session: MqttSession, waiting: Option<Written>) {
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            if let Some(waiting) = waiting {
                let _ = waiting.send(Err("shutting down".to_owned()));
            }
            return;
        }
        let Queue { entries, order, .. } = &mut *queue;
        match entries.get_mut(&device) {
            Some(pending) => {
                pending.merge(session);
                pending.waiting.extend(waiting);
            }
            None => {
                entries.insert(
                    device,
                    Pending {
                        session,
                        waiting: waiting.into_iter().collect(),
                    },
                );
                order.push_back(device);
            }
        }
        drop(queue);
        self.ready.notify_one();
    }

    /// Takes up to `max` devices' entries, oldest first, waiting until there is one. `None`
    /// once the queue is closed.
    pub(crate) async fn next_batch(&self, max: usize) -> Option<Vec<(DeviceId, Pending)>> {
        loop {
            let notified = self.ready.notified();
            {
                let mut queue = self.lock();
                if queue.closed {
                    return None;
                }
                if !queue.order.is_empty() {
                    let take = queue.order.len().min(max.max(1));
                    let Queue { entries, order, .. } = &mut *queue;
                    let batch = order
                        .drain(..take)
                        .filter_map(|device| entries.remove(&device).map(|p| (device, p)))
                        .collect();
                    return Some(batch);
                }
            }
            notified.await;
        }
    }

    /// Stops taking news; what is queued is dropped and its waiters told "shutting down".
    pub(crate) fn close(&self) {
        let entries = {
            let mut queue = self.lock();
            queue.closed = true;
            queue.order.clear();
            std::mem::take(&mut queue.entries)
        };
        for (_, pending) in entries {
            for waiting in pending.waiting {
                let _ = waiting.send(Err("shutting down".to_owned()));
            }
        }
        self.ready.notify_waiters();
    }

    /// Devices with unwritten news.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned lock still holds consistent entries.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use fleetmq_store::Timestamp;

    use super::*;

    fn session(online: bool, reason: &str, peer: Option<IpAddr>) -> MqttSession {
        MqttSession {
            online,
            failure_reason: reason.to_owned(),
            peer_ip: peer,
            model: None,
            os: None,
            system: None,
            at: Timestamp::now(),
        }
    }

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test]
    async fn a_flapping_device_is_one_entry_with_its_latest_state() {
        let queue = SessionQueue::default();
        let device = DeviceId::new();
        for _ in 0..10_000 {
            queue.push(device, session(true, "", Some(HOME)), None);
            queue.push(device, session(false, "connection lost", None), None);
        }
        assert_eq!(queue.len(), 1);
        let batch = queue.next_batch(4096).await.expect("open");
        assert_eq!(batch.len(), 1);
        let (id, pending) = &batch[0];
        assert_eq!(*id, device);
        assert!(!pending.session.online);
        assert_eq!(pending.session.failure_reason, "connection lost");
        assert_eq!(queue.len(), 0);
    }

    #[tokio::test]
    async fn a_takeover_ends_online_with_the_new_address_and_the_presence_model() {
        let queue = SessionQueue::default();
        let device = DeviceId::new();
        let mut presence = session(true, "", None);
        presence.model = Some("TL-WR841N".to_owned());
        queue.push(device, session(true, "", Some(HOME)), None);
        queue.push(device, presence, None);
        queue.push(device, session(false, "taken over", None), None);
        let newer = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        queue.push(device, session(true, "", Some(newer)), None);
        let batch = queue.next_batch(10).await.expect("open");
        let merged = &batch[0].1.session;
        assert!(merged.online);
        assert_eq!(merged.peer_ip, Some(newer));
        assert_eq!(merged.model.as_deref(), Some("TL-WR841N"));
    }

    #[tokio::test]
    async fn devices_come_out_oldest_first_and_in_batches_of_at_most_max() {
        let queue = SessionQueue::default();
        let devices: Vec<DeviceId> = (0..5).map(|_| DeviceId::new()).collect();
        for device in &devices {
            queue.push(*device, session(true, "", Some(HOME)), None);
        }
        // News of the first device again does not move it back.
        queue.push(devices[0], session(false, "clean", None), None);
        let first = queue.next_batch(3).await.expect("open");
        let second = queue.next_batch(3).await.expect("open");
        let ids: Vec<DeviceId> = first.iter().chain(&second).map(|(d, _)| *d).collect();
        assert_eq!(ids, devices);
        assert_eq!(first.len(), 3);
    }

    #[tokio::test]
    async fn every_waiting_presence_hears_of_the_write_or_of_the_shutdown() {
        let queue = SessionQueue::default();
        let device = DeviceId::new();
        let (one, heard_one) = oneshot::channel();
        let (two, heard_two) = oneshot::channel();
        queue.push(device, session(true, "", None), Some(one));
        queue.push(device, session(true, "", None), Some(two));
        let mut batch = queue.next_batch(10).await.expect("open");
        let (_, pending) = batch.remove(0);
        assert_eq!(pending.waiting.len(), 2);
        for waiting in pending.waiting {
            let _ = waiting.send(Ok(()));
        }
        assert_eq!(heard_one.await, Ok(Ok(())));
        assert_eq!(heard_two.await, Ok(Ok(())));

        let (three, heard_three) = oneshot::channel();
        queue.push(device, session(true, "", None), Some(three));
        queue.close();
        assert_eq!(heard_three.await, Ok(Err("shutting down".to_owned())));
        assert!(queue.next_batch(10).await.is_none());
        let (four, heard_four) = oneshot::channel();
        queue.push(device, session(true, "", None), Some(four));
        assert_eq!(heard_four.await, Ok(Err("shutting down".to_owned())));
    }

    #[tokio::test]
    async fn the_recorder_wakes_for_news_that_comes_while_it_waits() {
        let queue = std::sync::Arc::new(SessionQueue::default());
        let waiter = tokio::spawn({
            let queue = std::sync::Arc::clone(&queue);
            async move { queue.next_batch(10).await }
        });
        tokio::task::yield_now().await;
        let device = DeviceId::new();
        queue.push(device, session(true, "", Some(HOME)), None);
        let batch = waiter.await.expect("no panic").expect("open");
        assert_eq!(batch[0].0, device);
    }
}
