//! fleetmq's message router: subscriptions, sessions' bounded queues, retained messages and
//! their persistence. It replaced rumqttd 0.20's router (see docs/mqtt.md, "The router"),
//! whose per-link pre-sized buffers cost ~45 KiB per connection and whose commit logs let a
//! slow subscriber silently skip acknowledged messages.
//!
//! Routing is synchronous and never waits for a subscriber: [`Router::publish`] finds the
//! matching subscriptions in the [`FilterTree`](filters::FilterTree), checks the
//! subscriber's read access for this topic, and offers the message to each session's
//! [`Mailbox`] (bounded; full means dropped and counted). The connection task of each session
//! takes from its mailbox when woken. What must survive a restart (retained messages,
//! persistent sessions and their queued QoS 1/2 messages) is recorded in the
//! [`Journal`](journal::Journal); a publisher whose message was journaled is acknowledged once
//! its ticket is durable.
//!
//! # Layout
//! - `filters`: the subscription tree (wildcards, `$` rule, shared subscriptions).
//! - `mailbox`: one session's queue, in-flight window and subscriptions.
//! - `retained`: retained messages by topic.
//! - `journal`: group-committed persistence of the above.
//! - `records`: the bytes of persisted rows.

mod filters;
mod journal;
mod mailbox;
mod records;
mod retained;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use fleetmq_protocol::Principal;
use tracing::warn;

use crate::{StateChange, StoredState};
use filters::{FilterTree, Subscriber};
pub(crate) use journal::Journal;
pub(crate) use mailbox::{Mailbox, Offer, Outbound, QueueLimits};
use retained::{Kept, Retained};

/// A message being routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// A valid topic name (UTF-8, checked where the message entered).
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
    /// As published; in a mailbox, as it will be delivered.
    pub(crate) qos: u8,
    pub(crate) retain: bool,
}

impl Message {
    /// The topic as text (`""` if it were not UTF-8, which entry points refuse).
    pub(crate) fn topic_str(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }
}

/// What the router counted, for `/metrics`.
#[derive(Default)]
pub(crate) struct RouterMetrics {
    pub(crate) routed: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) offline_qos0: AtomicU64,
    pub(crate) not_readable: AtomicU64,
    pub(crate) retained_over_limit: AtomicU64,
    pub(crate) persistent_refused: AtomicU64,
}

impl RouterMetrics {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bounds of the router (flags; docs/mqtt.md, "Limits").
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouterLimits {
    pub(crate) queue: QueueLimits,
    pub(crate) retained: usize,
    pub(crate) persistent_sessions: usize,
}

/// A new persistent session was refused: `max_persistent_sessions` are kept.
#[derive(Debug)]
pub(crate) struct TooManySessions;

/// See the module documentation.
pub(crate) struct Router {
    filters: RwLock<FilterTree>,
    retained: Mutex<Retained>,
    /// Live and persistent sessions by key.
    sessions: Mutex<HashMap<String, Arc<Mailbox>>>,
    /// How many of them are persistent.
    persistent: AtomicU64,
    pub(crate) journal: Arc<Journal>,
    pub(crate) limits: RouterLimits,
    pub(crate) metrics: RouterMetrics,
}

impl Router {
    /// A router with room for `sessions` sessions before its session map grows (a growing
    /// map rehashes every key under its lock, stalling every connect meanwhile).
    pub(crate) fn new(limits: RouterLimits, sessions: usize) -> Router {
        Router {
            filters: RwLock::default(),
            retained: Mutex::default(),
            sessions: Mutex::new(HashMap::with_capacity(sessions)),
            persistent: AtomicU64::new(0),
            journal: Arc::default(),
            limits,
            metrics: RouterMetrics::default(),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mailbox>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `message` (its topic a valid topic name) to every session whose subscription
    /// matches and who may read it, and keeps it if it is retained. Returns the journal
    /// ticket to wait for before acknowledging the publisher, if any of it was persisted.
    pub(crate) fn publish(&self, message: Message) -> Option<u64> {
        RouterMetrics::count(&self.metrics.routed);
        let mut ticket = None;
        if message.retain {
            ticket = self.retain(&message);
        }
        let live = Message {
            // Live messages reach existing subscribers without the retain flag (§3.3.1.3).
            retain: false,
            ..message
        };
        let matching = self
            .filters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matching(live.topic_str());
        for Subscriber { mailbox, qos } in matching {
            let offered =
                mailbox.offer(&live, qos, &self.limits.queue, &self.journal, &self.metrics);
            if let Offer::Queued(Some(t)) = offered {
                ticket = Some(t);
            }
        }
        ticket
    }

    fn retain(&self, message: &Message) -> Option<u64> {
        let mut retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        let record = match retained.set(message, self.limits.retained) {
            Kept::Stored => Some(records::encode_retained(message)),
            Kept::Cleared => None,
            Kept::Unchanged => return None,
            Kept::OverLimit => {
                RouterMetrics::count(&self.metrics.retained_over_limit);
                return None;
            }
        };
        // Under the lock, so the journal has the topic's changes in the order they were made.
        self.journal.record(StateChange::Retained {
            topic: message.topic_str().to_owned(),
            record,
        })
    }

    /// Opens the session `key` for a connection of `principal` and attaches it. A clean
    /// session replaces whatever was kept under the key; a persistent one resumes it.
    /// Returns the mailbox, whether a session was present (CONNACK), and what must be sent
    /// again first; or a refusal when a new persistent session would be one too many.
    pub(crate) fn open(
        &self,
        key: &str,
        principal: Principal,
        clean_session: bool,
    ) -> Result<(Arc<Mailbox>, bool, Vec<Outbound>), TooManySessions> {
        let mut sessions = self.sessions();
        let resumable = sessions
            .get(key)
            .is_some_and(|previous| previous.is_persistent());
        if !clean_session
            && !resumable
            && self.persistent.load(Ordering::Relaxed) >= self.limits.persistent_sessions as u64
        {
            RouterMetrics::count(&self.metrics.persistent_refused);
            return Err(TooManySessions);
        }
        let previous = sessions.remove(key);
        drop(sessions);
        let resumed = match previous {
            Some(previous) if !clean_session && previous.is_persistent() => Some(previous),
            Some(previous) => {
                self.discard(&previous);
                None
            }
            None => None,
        };
        let present = resumed.is_some();
        let mailbox = match resumed {
            Some(mailbox) => mailbox,
            None => {
                let mailbox = Arc::new(Mailbox::new(
                    key.to_owned(),
                    principal.clone(),
                    !clean_session,
                ));
                if !clean_session {
                    self.persistent.fetch_add(1, Ordering::Relaxed);
                    self.journal.record(mailbox.record());
                }
                mailbox
            }
        };
        self.sessions().insert(key.to_owned(), Arc::clone(&mailbox));
        let resend = mailbox.attach(principal, &self.journal);
        Ok((mailbox, present, resend))
    }

    /// The connection of `mailbox` ended: a persistent session stays (queueing), a clean one
    /// goes with its subscriptions.
    pub(crate) fn close(&self, mailbox: &Arc<Mailbox>) {
        mailbox.detach();
        if mailbox.is_persistent() {
            return;
        }
        let mut sessions = self.sessions();
        if sessions
            .get(mailbox.key())
            .is_some_and(|current| Arc::ptr_eq(current, mailbox))
        {
            sessions.remove(mailbox.key());
        }
        drop(sessions);
        self.discard(mailbox);
    }

    /// Ends a session for good: its subscriptions leave the tree and its rows the store.
    fn discard(&self, mailbox: &Arc<Mailbox>) {
        {
            let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
            for (filter, _) in mailbox.subscriptions() {
                filters.remove(&filter, mailbox);
            }
        }
        if mailbox.is_persistent() {
            self.persistent.fetch_sub(1, Ordering::Relaxed);
            self.journal.record(StateChange::Session {
                key: mailbox.key().to_owned(),
                record: None,
            });
        }
        mailbox.close();
    }

    /// Adds `granted` subscriptions (filters the ACL allowed, with their granted QoS) and
    /// queues the retained messages they match, after them in the mailbox.
    pub(crate) fn subscribe(&self, mailbox: &Arc<Mailbox>, granted: &[(String, u8)]) {
        {
            let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
            for (filter, qos) in granted {
                filters.insert(
                    filter,
                    Subscriber {
                        mailbox: Arc::clone(mailbox),
                        qos: *qos,
                    },
                );
            }
        }
        mailbox.subscribed(granted, &self.journal);
        let retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        for (filter, qos) in granted {
            for message in retained.matching(filter) {
                mailbox.offer(
                    &message,
                    *qos,
                    &self.limits.queue,
                    &self.journal,
                    &self.metrics,
                );
            }
        }
    }

    /// Removes subscriptions (unknown filters are ignored).
    pub(crate) fn unsubscribe(&self, mailbox: &Arc<Mailbox>, filters: &[String]) {
        let removed = mailbox.unsubscribed(filters, &self.journal);
        let mut tree = self.filters.write().unwrap_or_else(|p| p.into_inner());
        for filter in removed {
            tree.remove(&filter, mailbox);
        }
    }

    /// Puts back what was persisted (broker start, before any connection). Unreadable rows
    /// are logged and skipped.
    pub(crate) fn restore(&self, state: StoredState) {
        let mut retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, record) in state.retained {
            match records::decode_retained(&topic, &record) {
                Ok(message) => retained.restore(message),
                Err(e) => warn!(topic, error = %e, "skipping a stored retained message"),
            }
        }
        drop(retained);
        let mut restored = HashMap::new();
        for (key, record) in state.sessions {
            match records::decode_session(&record) {
                Ok((principal, subscriptions)) => {
                    let mailbox = Arc::new(Mailbox::new(key.clone(), principal, true));
                    {
                        let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
                        for (filter, qos) in &subscriptions {
                            filters.insert(
                                filter,
                                Subscriber {
                                    mailbox: Arc::clone(&mailbox),
                                    qos: *qos,
                                },
                            );
                        }
                    }
                    mailbox.restore_subscriptions(subscriptions);
                    restored.insert(key, mailbox);
                }
                Err(e) => warn!(key, error = %e, "skipping a stored session"),
            }
        }
        let mut queued = state.queued;
        queued.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (key, seq, record) in queued {
            let Some(mailbox) = restored.get(&key) else {
                continue;
            };
            match records::decode_message(&record) {
                Ok(message) => mailbox.restore(seq, message),
                Err(e) => warn!(key, seq, error = %e, "skipping a stored queued message"),
            }
        }
        self.persistent
            .fetch_add(restored.len() as u64, Ordering::Relaxed);
        self.sessions().extend(restored);
    }

    /// Counters for `/metrics`: (series, help, value).
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        const DROPPED: &str = "MQTT messages not delivered to a subscribing session, by reason: queue_full (the session's bounded queue was full; the newest message is dropped), offline_qos0 (QoS 0 for a persistent session with no connection), not_readable (a queued message the session may no longer read: its rights changed while it waited).";
        vec![
            (
                "fleetmq_mqtt_messages_routed_total",
                "MQTT messages routed to subscribers (device uplink, clients, the server, wills).",
                get(&self.metrics.routed),
            ),
            (
                "fleetmq_mqtt_messages_dropped_total{reason=\"queue_full\"}",
                DROPPED,
                get(&self.metrics.queue_full),
            ),
            (
                "fleetmq_mqtt_messages_dropped_total{reason=\"offline_qos0\"}",
                DROPPED,
                get(&self.metrics.offline_qos0),
            ),
            (
                "fleetmq_mqtt_messages_dropped_total{reason=\"not_readable\"}",
                DROPPED,
                get(&self.metrics.not_readable),
            ),
            (
                "fleetmq_mqtt_persistent_sessions_refused_total",
                "MQTT clients refused with CONNACK 0x03 because the persistent-session limit was reached.",
                get(&self.metrics.persistent_refused),
            ),
            (
                "fleetmq_mqtt_retained_over_limit_total",
                "Retained MQTT messages routed but not kept: the retained-message limit was reached.",
                get(&self.metrics.retained_over_limit),
            ),
        ]
    }
}
