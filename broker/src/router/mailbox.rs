//! A session's mailbox: its bounded queue of messages not yet sent, the QoS 1/2 messages sent
//! and not yet acknowledged, and its subscriptions. It outlives the connection for a
//! persistent session (clean session 0); the connection task takes from it and feeds back
//! the client's acknowledgements.
//!
//! The queue is bounded in messages and bytes ([`QueueLimits`]). When it is full the **newest**
//! message is dropped (what was queued first is delivered first, as Mosquitto does), counted
//! per reason, and one log line is written per episode: when dropping starts, and when the
//! queue has drained to half and it stops. A publisher never waits for a subscriber.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use fleetmq_protocol::Principal;
use futures_util::task::AtomicWaker;
use tracing::{info, warn};

use super::journal::Journal;
use super::records;
use super::subscription::Expiry;
use super::subscription::Subscription;
use super::{Message, RouterMetrics, now_ms};
use crate::StateChange;

/// Bytes of messages taken for one write to the socket (at least one message is taken).
const BATCH_BYTES: usize = 64 * 1024;

/// How much one session may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Messages waiting to be sent.
    pub(crate) messages: usize,
    /// Their payload and topic bytes.
    pub(crate) bytes: usize,
    /// QoS 1/2 messages sent and not yet acknowledged (MQTT 5's receive maximum).
    pub(crate) inflight: usize,
}

/// What became of a message offered to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued; `Some(ticket)` if it was written to the journal (persistent session, QoS > 0)
    /// and so must be durable before the publisher is acknowledged.
    Queued(Option<u64>),
    /// The subscriber may not read the topic.
    NotReadable,
    /// Its message expiry interval has passed (MQTT 5).
    Expired,
    /// A QoS 0 message for a session with no connection: not kept (MQTT 3.1.1 §3.1.2.4).
    Offline,
    /// The queue is full: dropped.
    Full,
    /// The session has ended.
    Closed,
}

/// A packet the connection task writes for the mailbox.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    Publish {
        message: Message,
        pkid: u16,
        dup: bool,
        /// Identifiers of the subscriptions it matched (MQTT 5).
        ids: Option<Box<[u32]>>,
    },
    PubRel(u16),
}

struct Queued {
    /// `qos` is already the delivered QoS: min(published, granted).
    message: Message,
    /// Journal sequence number of a persisted message.
    seq: Option<u64>,
    ids: Option<Box<[u32]>>,
}

struct Outgoing {
    pkid: u16,
    message: Message,
    seq: Option<u64>,
    ids: Option<Box<[u32]>>,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited.
    released: bool,
}

struct State {
    principal: Principal,
    persistent: bool,
    /// How long it outlives its connection (persistent ones only).
    expiry: Expiry,
    /// Counts attachments, so that an expiry timer set at one detach is void after the
    /// session was attached again.
    attachments: u64,
    /// QoS 1/2 messages the connected client accepts unacknowledged (its receive maximum),
    /// within the broker's own bound.
    receive_maximum: usize,
    /// Filters as subscribed, with their granted QoS and options.
    subscriptions: Vec<Subscription>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    inflight: VecDeque<Outgoing>,
    last_pkid: u16,
    next_seq: u64,
    /// Messages dropped since the queue became full (an episode), `None` when not dropping.
    dropping: Option<u64>,
    closed: bool,
}

/// A session's mailbox. See the module documentation.
pub(crate) struct Mailbox {
    key: String,
    state: Mutex<State>,
    wake: Wake,
    attached: AtomicBool,
}

/// Wakes the one task that takes from a mailbox (its connection or in-process link) when
/// there may be something to take. A flag and a waker slot rather than a `Notify`: the wait
/// is polled in place, without a 96-byte `Notified` future in every connection's state.
#[derive(Default)]
struct Wake {
    /// Set by a wake-up nobody has seen yet (kept for the next wait, like `Notify`'s permit).
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    fn notify_one(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A wake-up between the check and the registration found no waker: look again.
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

fn size_of(message: &Message) -> usize {
    message.topic.len() + message.payload.len()
}

impl Mailbox {
    pub(crate) fn new(key: String, principal: Principal, expiry: Expiry) -> Mailbox {
        Mailbox {
            key,
            state: Mutex::new(State {
                principal,
                persistent: expiry.is_persistent(),
                expiry,
                attachments: 0,
                receive_maximum: usize::MAX,
                subscriptions: Vec::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                inflight: VecDeque::new(),
                last_pkid: 0,
                next_seq: 0,
                dropping: None,
                closed: false,
            }),
            wake: Wake::default(),
            attached: AtomicBool::new(false),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Mailbox {
        Mailbox::new("t".into(), Principal::Anonymous, Expiry::WithConnection)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's key (namespaced client id).
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Whether a connection (or an in-process link) is taking from this mailbox.
    pub(crate) fn is_attached(&self) -> bool {
        self.attached.load(Ordering::Relaxed)
    }

    pub(crate) fn is_persistent(&self) -> bool {
        self.lock().persistent
    }

    /// How long the session outlives its connection.
    pub(crate) fn expiry(&self) -> Expiry {
        self.lock().expiry
    }

    /// Sets how long a persistent session outlives its connection (MQTT 5 lets a client
    /// change it at CONNECT and at DISCONNECT); journaled.
    pub(crate) fn set_expiry(&self, expiry: Expiry, journal: &Journal) {
        let mut state = self.lock();
        if state.persistent && state.expiry != expiry && expiry.is_persistent() {
            state.expiry = expiry;
            journal.record(self.session_change(&state));
        }
    }

    /// A resumed session is to end with the connection that resumed it (MQTT 5 session
    /// expiry 0 without clean start); its rows go when it ends.
    pub(crate) fn end_with_connection(&self) {
        self.lock().expiry = Expiry::WithConnection;
    }

    /// How many times a connection took this mailbox; see [`Expiry::After`].
    pub(crate) fn attachments(&self) -> u64 {
        self.lock().attachments
    }

    /// Ready when there may be something to take. A wake-up that came while nobody waited
    /// is kept for the next poll. One task takes from a mailbox: only its waker is kept.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake.poll(cx)
    }

    /// [`poll_ready`](Self::poll_ready) as a future. Cancel-safe.
    pub(crate) async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// A connection takes the mailbox as `principal`, accepting `receive_maximum` QoS 1/2
    /// messages unacknowledged: what was sent and not acknowledged before is sent again
    /// first (PUBLISH with DUP, or PUBREL), MQTT 3.1.1 §4.4.
    pub(crate) fn attach(
        &self,
        principal: Principal,
        receive_maximum: usize,
        journal: &Journal,
    ) -> Vec<Outbound> {
        let mut state = self.lock();
        state.attachments += 1;
        state.receive_maximum = receive_maximum.max(1);
        if state.principal != principal {
            state.principal = principal;
            if state.persistent {
                journal.record(self.session_change(&state));
            }
        }
        self.attached.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        state
            .inflight
            .iter()
            .map(|o| match o.released {
                true => Outbound::PubRel(o.pkid),
                false => Outbound::Publish {
                    message: o.message.clone(),
                    pkid: o.pkid,
                    dup: true,
                    ids: o.ids.clone(),
                },
            })
            .collect()
    }

    /// The connection is gone; a persistent session keeps queueing QoS 1/2 messages.
    pub(crate) fn detach(&self) {
        self.attached.store(false, Ordering::Relaxed);
    }

    /// The session ended for good (clean session closed, replaced by a clean one).
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue.clear();
        state.queued_bytes = 0;
        state.inflight.clear();
        self.attached.store(false, Ordering::Relaxed);
        drop(state);
        // Whoever waits on it (an in-process link replaced by another) learns it is over.
        self.wake.notify_one();
    }

    /// The journal row of this session's record.
    fn session_change(&self, state: &State) -> StateChange {
        StateChange::Session {
            key: self.key.clone(),
            record: Some(records::encode_session(
                &state.principal,
                state.expiry,
                &state.subscriptions,
            )),
        }
    }

    /// The row that makes this session persistent (written when it is created).
    pub(crate) fn record(&self) -> StateChange {
        self.session_change(&self.lock())
    }

    /// Records the subscriptions granted (replacing the QoS and options of a filter
    /// subscribed again) and journals them for a persistent session. Returns, for each,
    /// whether it is new (retain handling 1).
    pub(crate) fn subscribed(&self, granted: &[Subscription], journal: &Journal) -> Vec<bool> {
        let mut state = self.lock();
        let mut new = Vec::with_capacity(granted.len());
        for subscription in granted {
            match state
                .subscriptions
                .iter_mut()
                .find(|s| s.filter == subscription.filter)
            {
                Some(existing) => {
                    *existing = subscription.clone();
                    new.push(false);
                }
                None => {
                    state.subscriptions.push(subscription.clone());
                    new.push(true);
                }
            }
        }
        if state.persistent {
            journal.record(self.session_change(&state));
        }
        new
    }

    /// Forgets `filters`; returns those that were subscribed.
    pub(crate) fn unsubscribed(&self, filters: &[String], journal: &Journal) -> Vec<String> {
        let mut state = self.lock();
        let removed: Vec<String> = state
            .subscriptions
            .iter()
            .filter(|s| filters.contains(&s.filter))
            .map(|s| s.filter.clone())
            .collect();
        state.subscriptions.retain(|s| !filters.contains(&s.filter));
        if state.persistent && !removed.is_empty() {
            journal.record(self.session_change(&state));
        }
        removed
    }

    /// Puts back the subscriptions of a session restored from the journal.
    pub(crate) fn restore_subscriptions(&self, subscriptions: Vec<Subscription>) {
        self.lock().subscriptions = subscriptions;
    }

    /// The subscriptions, as granted.
    pub(crate) fn subscriptions(&self) -> Vec<Subscription> {
        self.lock().subscriptions.clone()
    }

    /// Offers a message matched by a subscription granted at `granted` (with subscription
    /// identifiers `ids`); it is delivered at min(published QoS, granted QoS).
    pub(crate) fn offer(
        &self,
        message: &Message,
        granted: u8,
        ids: Option<Box<[u32]>>,
        limits: &QueueLimits,
        journal: &Journal,
        metrics: &RouterMetrics,
    ) -> Offer {
        let mut state = self.lock();
        if state.closed {
            return Offer::Closed;
        }
        if !state.principal.may_read(message.topic_str()) {
            return Offer::NotReadable;
        }
        if message.expired(now_ms()) {
            RouterMetrics::count(&metrics.expired);
            return Offer::Expired;
        }
        let qos = message.qos.min(granted);
        if qos == 0 && !self.is_attached() {
            RouterMetrics::count(&metrics.offline_qos0);
            return Offer::Offline;
        }
        let size = size_of(message);
        if state.queue.len() >= limits.messages || state.queued_bytes + size > limits.bytes {
            RouterMetrics::count(&metrics.queue_full);
            match &mut state.dropping {
                Some(dropped) => *dropped += 1,
                None => {
                    warn!(
                        client = self.key,
                        queued = state.queue.len(),
                        bytes = state.queued_bytes,
                        "session queue full: dropping new messages until it drains (counted in fleetmq_mqtt_messages_dropped_total)"
                    );
                    state.dropping = Some(1);
                }
            }
            return Offer::Full;
        }
        let delivered = Message {
            qos,
            ..message.clone()
        };
        let mut ticket = None;
        let mut seq = None;
        if state.persistent && qos > 0 && journal.is_enabled() {
            let next = state.next_seq;
            state.next_seq += 1;
            ticket = journal.record(StateChange::Queued {
                key: self.key.clone(),
                seq: next,
                record: Some(records::encode_message(&delivered, ids.as_deref())),
            });
            seq = Some(next);
        }
        state.queued_bytes += size;
        state.queue.push_back(Queued {
            message: delivered,
            seq,
            ids,
        });
        drop(state);
        if self.is_attached() {
            self.wake.notify_one();
        }
        Offer::Queued(ticket)
    }

    /// Puts back a message restored from the journal (broker start).
    pub(crate) fn restore(&self, seq: u64, message: Message, ids: Option<Box<[u32]>>) {
        let mut state = self.lock();
        state.next_seq = state.next_seq.max(seq + 1);
        state.queued_bytes += size_of(&message);
        state.queue.push_back(Queued {
            message,
            seq: Some(seq),
            ids,
        });
    }

    /// Takes up to `max` packets, and not much more than [`BATCH_BYTES`], to write: queued
    /// messages in order while the in-flight window has room (QoS 0 needs none). What is
    /// taken leaves the bounded queue for the socket's write buffer, so the batch is bounded
    /// in bytes too. Messages the session may no longer read (its rights changed while they
    /// waited) are dropped here.
    pub(crate) fn take(
        &self,
        max: usize,
        limits: &QueueLimits,
        journal: &Journal,
        metrics: &RouterMetrics,
    ) -> Vec<Outbound> {
        let mut state = self.lock();
        let window = limits.inflight.min(state.receive_maximum);
        let now = now_ms();
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max && bytes < BATCH_BYTES {
            let Some(front) = state.queue.front() else {
                break;
            };
            if front.message.qos > 0 && state.inflight.len() >= window {
                break;
            }
            let Some(Queued { message, seq, ids }) = state.queue.pop_front() else {
                break;
            };
            state.queued_bytes -= size_of(&message);
            bytes += size_of(&message);
            let dropped = if !state.principal.may_read(message.topic_str()) {
                Some(&metrics.not_readable)
            } else if message.expired(now) {
                Some(&metrics.expired)
            } else {
                None
            };
            if let Some(counter) = dropped {
                RouterMetrics::count(counter);
                if let Some(seq) = seq {
                    journal.record(self.dequeued(seq));
                }
                continue;
            }
            if message.qos == 0 {
                out.push(Outbound::Publish {
                    message,
                    pkid: 0,
                    dup: false,
                    ids,
                });
                continue;
            }
            let pkid = next_pkid(&mut state);
            state.inflight.push_back(Outgoing {
                pkid,
                message: message.clone(),
                seq,
                ids: ids.clone(),
                released: false,
            });
            out.push(Outbound::Publish {
                message,
                pkid,
                dup: false,
                ids,
            });
        }
        if let Some(dropped) = state.dropping
            && state.queue.len() <= limits.messages / 2
            && state.queued_bytes <= limits.bytes / 2
        {
            info!(
                client = self.key,
                dropped, "session queue drained: no longer dropping"
            );
            state.dropping = None;
        }
        // A full batch may have left more that can go now: come back for it.
        if (out.len() == max || bytes >= BATCH_BYTES)
            && state
                .queue
                .front()
                .is_some_and(|next| next.message.qos == 0 || state.inflight.len() < window)
        {
            self.wake.notify_one();
        }
        out
    }

    /// Takes the next queued message for an in-process link (no acknowledgements).
    pub(crate) fn pop(&self, journal: &Journal, metrics: &RouterMetrics) -> Option<Message> {
        let mut state = self.lock();
        loop {
            let Queued { message, seq, .. } = state.queue.pop_front()?;
            state.queued_bytes -= size_of(&message);
            if let Some(seq) = seq {
                journal.record(self.dequeued(seq));
            }
            if state.dropping.is_some() && state.queue.is_empty() {
                info!(client = self.key, "in-process link caught up");
                state.dropping = None;
            }
            if !state.principal.may_read(message.topic_str()) {
                RouterMetrics::count(&metrics.not_readable);
            } else if message.expired(now_ms()) {
                RouterMetrics::count(&metrics.expired);
            } else {
                return Some(message);
            }
        }
    }

    fn dequeued(&self, seq: u64) -> StateChange {
        StateChange::Queued {
            key: self.key.clone(),
            seq,
            record: None,
        }
    }

    /// PUBACK: the QoS 1 message `pkid` is delivered. Returns whether it was in flight.
    pub(crate) fn acknowledged(&self, pkid: u16, journal: &Journal) -> bool {
        self.finish(pkid, 1, journal)
    }

    /// PUBREC: the QoS 2 message `pkid` was received; a PUBREL is due.
    pub(crate) fn received(&self, pkid: u16) -> bool {
        let mut state = self.lock();
        match state
            .inflight
            .iter_mut()
            .find(|o| o.pkid == pkid && o.message.qos == 2)
        {
            Some(outgoing) => {
                outgoing.released = true;
                true
            }
            None => false,
        }
    }

    /// PUBCOMP: the QoS 2 exchange of `pkid` is complete.
    pub(crate) fn completed(&self, pkid: u16, journal: &Journal) -> bool {
        self.finish(pkid, 2, journal)
    }

    /// The QoS 2 message `pkid` is not delivered and will not be (an MQTT 5 client's PUBREC
    /// with a failure reason, or too large to send it): its exchange ends.
    pub(crate) fn refused(&self, pkid: u16, journal: &Journal) -> bool {
        let mut state = self.lock();
        let Some(index) = state
            .inflight
            .iter()
            .position(|o| o.pkid == pkid && o.message.qos == 2 && !o.released)
        else {
            return false;
        };
        if let Some(seq) = state.inflight.remove(index).and_then(|f| f.seq) {
            journal.record(self.dequeued(seq));
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    fn finish(&self, pkid: u16, qos: u8, journal: &Journal) -> bool {
        let mut state = self.lock();
        let Some(index) = state
            .inflight
            .iter()
            .position(|o| o.pkid == pkid && o.message.qos == qos && (qos == 1 || o.released))
        else {
            return false;
        };
        let finished = state.inflight.remove(index);
        if let Some(seq) = finished.and_then(|f| f.seq) {
            journal.record(self.dequeued(seq));
        }
        drop(state);
        // Room in the window: there may be more to send.
        self.wake.notify_one();
        true
    }

    /// Messages waiting and in flight, for tests and metrics.
    #[cfg(test)]
    pub(crate) fn depth(&self) -> (usize, usize) {
        let state = self.lock();
        (state.queue.len(), state.inflight.len())
    }
}

fn next_pkid(state: &mut State) -> u16 {
    loop {
        state.last_pkid = state.last_pkid.checked_add(1).unwrap_or(1);
        let pkid = state.last_pkid;
        if !state.inflight.iter().any(|o| o.pkid == pkid) {
            return pkid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const LIMITS: QueueLimits = QueueLimits {
        messages: 3,
        bytes: 1024,
        inflight: 2,
    };

    fn message(topic: &'static str, qos: u8) -> Message {
        Message {
            topic: Bytes::from_static(topic.as_bytes()),
            payload: Bytes::from_static(b"p"),
            qos,
            retain: false,
            properties: None,
        }
    }

    fn attached(principal: Principal) -> (Mailbox, Journal, RouterMetrics) {
        let mailbox = Mailbox::new("k".into(), principal, Expiry::WithConnection);
        let journal = Journal::default();
        mailbox.attach(Principal::Anonymous, usize::MAX, &journal);
        (mailbox, journal, RouterMetrics::default())
    }

    fn pkids(out: &[Outbound]) -> Vec<u16> {
        out.iter()
            .map(|o| match o {
                Outbound::Publish { pkid, .. } | Outbound::PubRel(pkid) => *pkid,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_counts_it() {
        let (mailbox, journal, metrics) = attached(Principal::Anonymous);
        for _ in 0..3 {
            let offer = mailbox.offer(&message("a", 1), 1, None, &LIMITS, &journal, &metrics);
            assert_eq!(offer, Offer::Queued(None));
        }
        let offer = mailbox.offer(&message("b", 1), 1, None, &LIMITS, &journal, &metrics);
        assert_eq!(offer, Offer::Full);
        assert_eq!(metrics.queue_full.load(Ordering::Relaxed), 1);
        // The window sends two; the third waits for an acknowledgement.
        let out = mailbox.take(10, &LIMITS, &journal, &metrics);
        assert_eq!(pkids(&out), [1, 2]);
        assert_eq!(mailbox.depth(), (1, 2));
        assert!(mailbox.acknowledged(1, &journal));
        assert!(!mailbox.acknowledged(1, &journal), "acknowledged once");
        let out = mailbox.take(10, &LIMITS, &journal, &metrics);
        assert_eq!(pkids(&out), [3]);
        match &out[0] {
            Outbound::Publish { message, .. } => assert_eq!(message.topic, "a"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delivery_is_at_the_lower_of_published_and_granted_qos() {
        let (mailbox, journal, metrics) = attached(Principal::Anonymous);
        mailbox.offer(&message("a", 2), 1, None, &LIMITS, &journal, &metrics);
        mailbox.offer(&message("a", 0), 2, None, &LIMITS, &journal, &metrics);
        let qos: Vec<u8> = mailbox
            .take(10, &LIMITS, &journal, &metrics)
            .into_iter()
            .map(|o| match o {
                Outbound::Publish { message, .. } => message.qos,
                Outbound::PubRel(_) => 9,
            })
            .collect();
        assert_eq!(qos, [1, 0]);
    }

    #[test]
    fn the_window_is_the_lower_of_the_bound_and_the_clients_receive_maximum() {
        let journal = Journal::default();
        let metrics = RouterMetrics::default();
        let mailbox = Mailbox::new("k".into(), Principal::Anonymous, Expiry::WithConnection);
        mailbox.attach(Principal::Anonymous, 1, &journal);
        mailbox.offer(&message("a", 1), 1, None, &LIMITS, &journal, &metrics);
        mailbox.offer(&message("b", 1), 1, None, &LIMITS, &journal, &metrics);
        assert_eq!(pkids(&mailbox.take(10, &LIMITS, &journal, &metrics)), [1]);
        assert!(mailbox.take(10, &LIMITS, &journal, &metrics).is_empty());
        assert!(mailbox.acknowledged(1, &journal));
        assert_eq!(pkids(&mailbox.take(10, &LIMITS, &journal, &metrics)), [2]);
    }

    #[test]
    fn an_expired_message_is_dropped_and_counted() {
        let (mailbox, journal, metrics) = attached(Principal::Anonymous);
        let expiring = |at| Message {
            properties: Some(std::sync::Arc::new(super::super::MessageProperties {
                expires_at: Some(at),
                ..Default::default()
            })),
            ..message("a", 1)
        };
        let offer = mailbox.offer(&expiring(1), 1, None, &LIMITS, &journal, &metrics);
        assert_eq!(offer, Offer::Expired, "expired before it was queued");
        let soon = now_ms() + 50;
        let offer = mailbox.offer(&expiring(soon), 1, None, &LIMITS, &journal, &metrics);
        assert_eq!(offer, Offer::Queued(None));
        let later = now_ms() + 60_000;
        mailbox.offer(&expiring(later), 1, None, &LIMITS, &journal, &metrics);
        // The first one expires while it waits in the queue.
        while now_ms() <= soon {
            std::thread::yield_now();
        }
        let out = mailbox.take(10, &LIMITS, &journal, &metrics);
        assert_eq!(out.len(), 1);
        assert_eq!(metrics.expired.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn unreadable_topics_are_not_queued() {
        let (mailbox, journal, metrics) = attached(Principal::Anonymous);
        let offer = mailbox.offer(
            &message("fleetmq/v1/acme/x/up/t", 1),
            1,
            None,
            &LIMITS,
            &journal,
            &metrics,
        );
        assert_eq!(offer, Offer::NotReadable);
        let offer = mailbox.offer(&message("$SYS/x", 1), 1, None, &LIMITS, &journal, &metrics);
        assert_eq!(offer, Offer::NotReadable);
        assert_eq!(mailbox.depth(), (0, 0));
    }

    #[test]
    fn a_resumed_session_resends_what_was_not_acknowledged_first() {
        let journal = Journal::default();
        let metrics = RouterMetrics::default();
        let mailbox = Mailbox::new("k".into(), Principal::Anonymous, Expiry::Never);
        mailbox.attach(Principal::Anonymous, usize::MAX, &journal);
        mailbox.offer(&message("a", 1), 1, None, &LIMITS, &journal, &metrics);
        mailbox.offer(&message("b", 2), 2, None, &LIMITS, &journal, &metrics);
        mailbox.take(10, &LIMITS, &journal, &metrics);
        assert!(mailbox.received(2));
        mailbox.detach();
        // Offline: QoS 0 is not kept, QoS 1 is.
        assert_eq!(
            mailbox.offer(&message("c", 0), 1, None, &LIMITS, &journal, &metrics),
            Offer::Offline
        );
        mailbox.offer(&message("d", 1), 1, None, &LIMITS, &journal, &metrics);
        let resend = mailbox.attach(Principal::Anonymous, usize::MAX, &journal);
        assert!(matches!(
            resend[0],
            Outbound::Publish {
                pkid: 1,
                dup: true,
                ..
            }
        ));
        assert!(matches!(resend[1], Outbound::PubRel(2)));
        assert!(mailbox.completed(2, &journal));
        let out = mailbox.take(10, &LIMITS, &journal, &metrics);
        assert_eq!(out.len(), 1);
    }
}
