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
//! - `subscription`: a session's subscriptions and expiry, as values.
//! - `journal`: group-committed persistence of the above.
//! - `records`: the bytes of persisted rows.

mod filters;
mod journal;
mod mailbox;
mod records;
mod retained;
mod subscription;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use fleetmq_protocol::Principal;
use tracing::warn;

use crate::{StateChange, StoredState};
use filters::{FilterTree, Matched, Subscriber};
pub(crate) use journal::Journal;
pub(crate) use mailbox::{Mailbox, Offer, Outbound, QueueLimits};
use retained::{Kept, Retained};
pub(crate) use subscription::{Expiry, Options, Subscription};

/// A message being routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// A valid topic name (UTF-8, checked where the message entered).
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
    /// As published; in a mailbox, as it will be delivered.
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    /// What an MQTT 5 publisher attached to it, carried to subscribers; most messages have
    /// none.
    pub(crate) properties: Option<Arc<MessageProperties>>,
}

/// The properties of an MQTT 5 PUBLISH that travel with its message to every subscriber
/// (MQTT 5 §3.3.2.3). MQTT 3.1.1 subscribers get the message without them; an expired
/// message is not delivered at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MessageProperties {
    /// Payload format indicator 1: the payload is UTF-8.
    pub(crate) payload_utf8: bool,
    /// When the message expires (message expiry interval), milliseconds since the Unix
    /// epoch: it survives a restart.
    pub(crate) expires_at: Option<u64>,
    pub(crate) content_type: Option<String>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation_data: Option<Bytes>,
    pub(crate) user_properties: Vec<(String, String)>,
}

impl Message {
    /// The topic as text (`""` if it were not UTF-8, which entry points refuse).
    pub(crate) fn topic_str(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }

    /// Whether its message expiry interval has passed at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.properties
            .as_ref()
            .and_then(|p| p.expires_at)
            .is_some_and(|at| at <= now_ms)
    }
}

/// Milliseconds since the Unix epoch, now: message expiry is kept in wall-clock time so that
/// it survives a restart.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the router counted, for `/metrics`.
#[derive(Default)]
pub(crate) struct RouterMetrics {
    pub(crate) routed: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) offline_qos0: AtomicU64,
    pub(crate) not_readable: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) sessions_expired: AtomicU64,
    pub(crate) too_large: AtomicU64,
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
    /// matches and who may read it, and keeps it if it is retained. `origin` is the
    /// publishing session, if a routed client published it (no-local subscriptions). Returns
    /// the journal ticket to wait for before acknowledging the publisher, if any of it was
    /// persisted.
    pub(crate) fn publish(&self, message: Message, origin: Option<&Mailbox>) -> Option<u64> {
        RouterMetrics::count(&self.metrics.routed);
        let mut ticket = None;
        if message.retain {
            ticket = self.retain(&message);
        }
        let retained = message.retain;
        // Live messages reach existing subscribers without the retain flag (§3.3.1.3),
        // unless they subscribed with retain as published (MQTT 5).
        let live = Message {
            retain: false,
            ..message
        };
        let kept = Message {
            retain: retained,
            ..live.clone()
        };
        let matching = self
            .filters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matching(live.topic_str(), origin);
        for Matched {
            mailbox,
            qos,
            retain_as_published,
            ids,
        } in matching
        {
            let message = if retain_as_published { &kept } else { &live };
            let offered = mailbox.offer(
                message,
                qos,
                ids,
                &self.limits.queue,
                &self.journal,
                &self.metrics,
            );
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
    /// start replaces whatever was kept under the key; otherwise a kept session is resumed.
    /// `expiry` is how long the session outlives the connection (it becomes the session's
    /// from now on); `receive_maximum` how many QoS 1/2 messages the client accepts
    /// unacknowledged. Returns the mailbox, whether a session was present (CONNACK), and
    /// what must be sent again first; or a refusal when a new persistent session would be one
    /// too many.
    pub(crate) fn open(
        &self,
        key: &str,
        principal: Principal,
        clean_start: bool,
        expiry: Expiry,
        receive_maximum: usize,
    ) -> Result<(Arc<Mailbox>, bool, Vec<Outbound>), TooManySessions> {
        let mut sessions = self.sessions();
        let resumable = !clean_start
            && sessions
                .get(key)
                .is_some_and(|previous| previous.is_persistent());
        if expiry.is_persistent()
            && !resumable
            && self.persistent.load(Ordering::Relaxed) >= self.limits.persistent_sessions as u64
        {
            RouterMetrics::count(&self.metrics.persistent_refused);
            return Err(TooManySessions);
        }
        let previous = sessions.remove(key);
        drop(sessions);
        let resumed = match previous {
            Some(previous) if resumable => Some(previous),
            Some(previous) => {
                self.discard(&previous);
                None
            }
            None => None,
        };
        let present = resumed.is_some();
        let mailbox = match resumed {
            // A resumed session that is to end with this connection stops being persistent
            // when it closes (see `close`); until then it keeps its rows.
            Some(mailbox) => {
                if expiry.is_persistent() {
                    mailbox.set_expiry(expiry, &self.journal);
                } else {
                    mailbox.end_with_connection();
                }
                mailbox
            }
            None => {
                let mailbox = Arc::new(Mailbox::new(key.to_owned(), principal.clone(), expiry));
                if expiry.is_persistent() {
                    self.persistent.fetch_add(1, Ordering::Relaxed);
                    self.journal.record(mailbox.record());
                }
                mailbox
            }
        };
        self.sessions().insert(key.to_owned(), Arc::clone(&mailbox));
        let resend = mailbox.attach(principal, receive_maximum, &self.journal);
        Ok((mailbox, present, resend))
    }

    /// The connection of `mailbox` ended: a persistent session stays (queueing), a clean one
    /// goes with its subscriptions. Returns the session's expiry interval and attachment
    /// count when it is to end after some time: the caller sets a timer for
    /// [`expire`](Self::expire).
    pub(crate) fn close(&self, mailbox: &Arc<Mailbox>) -> Option<(Duration, u64)> {
        mailbox.detach();
        match mailbox.expiry() {
            Expiry::Never => return None,
            Expiry::After(seconds) if mailbox.is_persistent() => {
                return Some((
                    Duration::from_secs(u64::from(seconds)),
                    mailbox.attachments(),
                ));
            }
            _ => {}
        }
        self.end(mailbox);
        None
    }

    /// Ends `mailbox`'s session if it is still the one under its key.
    fn end(&self, mailbox: &Arc<Mailbox>) {
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

    /// A session's expiry interval has passed since its connection closed: it ends unless a
    /// connection took it again meanwhile (`attachments` is the count at the close).
    pub(crate) fn expire(&self, mailbox: &Arc<Mailbox>, attachments: u64) {
        if mailbox.is_attached() || mailbox.attachments() != attachments {
            return;
        }
        let current = self
            .sessions()
            .get(mailbox.key())
            .is_some_and(|current| Arc::ptr_eq(current, mailbox));
        if current {
            RouterMetrics::count(&self.metrics.sessions_expired);
            self.end(mailbox);
        }
    }

    /// Persistent sessions that end some time after their connection and have none: restored
    /// ones at start. Their expiry counts from now (when their connection closed is not kept).
    pub(crate) fn detached_expiring(&self) -> Vec<(Arc<Mailbox>, Duration, u64)> {
        self.sessions()
            .values()
            .filter(|m| !m.is_attached())
            .filter_map(|m| match m.expiry() {
                Expiry::After(seconds) => Some((
                    Arc::clone(m),
                    Duration::from_secs(u64::from(seconds)),
                    m.attachments(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Ends a session for good: its subscriptions leave the tree and its rows the store.
    fn discard(&self, mailbox: &Arc<Mailbox>) {
        {
            let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
            for subscription in mailbox.subscriptions() {
                filters.remove(&subscription.filter, mailbox);
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

    /// Adds `granted` subscriptions (filters the ACL allowed, with their granted QoS and
    /// options) and queues the retained messages they match, after them in the mailbox, as
    /// their retain handling says. Shared subscriptions get no retained messages (MQTT 5
    /// §4.8.2).
    pub(crate) fn subscribe(&self, mailbox: &Arc<Mailbox>, granted: &[Subscription]) {
        {
            let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
            for subscription in granted {
                filters.insert(
                    &subscription.filter,
                    Subscriber {
                        mailbox: Arc::clone(mailbox),
                        qos: subscription.qos,
                        options: subscription.options,
                    },
                );
            }
        }
        let new = mailbox.subscribed(granted, &self.journal);
        let retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        for (subscription, new) in granted.iter().zip(new) {
            let replay = match subscription.options.retain_handling {
                0 => true,
                1 => new,
                _ => false,
            };
            if !replay || filters::split_shared(&subscription.filter).0.is_some() {
                continue;
            }
            let ids: Option<Box<[u32]>> =
                (subscription.options.id != 0).then(|| Box::from([subscription.options.id]));
            for message in retained.matching(&subscription.filter, now) {
                mailbox.offer(
                    &message,
                    subscription.qos,
                    ids.clone(),
                    &self.limits.queue,
                    &self.journal,
                    &self.metrics,
                );
            }
        }
    }

    /// Removes subscriptions; returns, for each filter, whether it was subscribed.
    pub(crate) fn unsubscribe(&self, mailbox: &Arc<Mailbox>, filters: &[String]) -> Vec<bool> {
        let removed = mailbox.unsubscribed(filters, &self.journal);
        let mut tree = self.filters.write().unwrap_or_else(|p| p.into_inner());
        for filter in &removed {
            tree.remove(filter, mailbox);
        }
        filters.iter().map(|f| removed.contains(f)).collect()
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
                Ok((principal, expiry, subscriptions)) => {
                    let mailbox = Arc::new(Mailbox::new(key.clone(), principal, expiry));
                    {
                        let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
                        for s in &subscriptions {
                            filters.insert(
                                &s.filter,
                                Subscriber {
                                    mailbox: Arc::clone(&mailbox),
                                    qos: s.qos,
                                    options: s.options,
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
                Ok((message, ids)) => mailbox.restore(seq, message, ids),
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
        const DROPPED: &str = "MQTT messages not delivered to a subscribing session, by reason: queue_full (the session's bounded queue was full; the newest message is dropped), offline_qos0 (QoS 0 for a persistent session with no connection), not_readable (a queued message the session may no longer read: its rights changed while it waited), expired (its MQTT 5 message expiry interval passed before it was sent), too_large (larger than the MQTT 5 client's maximum packet size).";
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
                "fleetmq_mqtt_messages_dropped_total{reason=\"expired\"}",
                DROPPED,
                get(&self.metrics.expired),
            ),
            (
                "fleetmq_mqtt_messages_dropped_total{reason=\"too_large\"}",
                DROPPED,
                get(&self.metrics.too_large),
            ),
            (
                "fleetmq_mqtt_sessions_expired_total",
                "MQTT 5 sessions ended because their session expiry interval passed with no connection.",
                get(&self.metrics.sessions_expired),
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
