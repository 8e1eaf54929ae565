//! Our side of rumqttd's router: starting it, creating links, and feeding it packets from a
//! dedicated thread.
//!
//! Two rumqttd 0.20 facts shape this module:
//! - The router's channel type (`Sender<(ConnectionId, Event)>`) names a private type, so we
//!   cannot store it in a struct. We capture it in a closure ([`LinkFactory`]) instead.
//! - `LinkTx::send` is `async` in signature but does a *blocking* send on the router channel
//!   (capacity 1,000), and `LinkBuilder::build` blocks until the router answers. Calling
//!   them on tokio worker threads stalls unrelated connections under load. All sends go
//!   through one [`Feeder`] thread (which preserves per-connection order and gives async
//!   back-pressure through a bounded tokio channel); builds run in `spawn_blocking`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use fleetmq_protocol::topic::ALL_UP_FILTER;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use rumqttd::{Notification, Router, RouterConfig, SegmentConfig};
use tokio::sync::{mpsc, oneshot};

use crate::{BrokerError, RouterSizing};

/// A router link's sending half, shared between a connection task and the feeder thread.
pub(crate) type SharedTx = Arc<Mutex<LinkTx>>;

/// A freshly built link: sending half, receiving half, and the router's CONNACK.
pub(crate) type Link = (LinkTx, LinkRx, Notification);

/// Builds a link to the router for `(router_client_id, clean_session)`. Blocking.
/// rumqttd's `LinkError` is ~800 bytes; the factory reports it as text.
pub(crate) type LinkFactory = dyn Fn(&str, bool) -> Result<Link, String> + Send + Sync;

/// Packets a link's buffer takes without a router event of their own (see `push`): the
/// router channel's own capacity.
const MAX_LINK_BUFFER: usize = 1000;

/// Links the broker opens itself on top of `max_connections` (publisher, bridge, tests) plus
/// room for sessions being taken over.
const EXTRA_ROUTER_SLOTS: usize = 64;

/// Validates the sizing (rumqttd panics on small values) and starts the router thread.
///
/// The router thread runs for the rest of the process: rumqttd 0.20 has no way to stop it.
pub(crate) fn spawn_router(
    max_connections: usize,
    sizing: &RouterSizing,
) -> Result<Arc<LinkFactory>, BrokerError> {
    if sizing.segment_size < 1024 || sizing.uplink_segment_size < 1024 {
        return Err(BrokerError::Config(
            "segment sizes must be at least 1024 bytes",
        ));
    }
    if sizing.segment_count < 1 || sizing.uplink_segment_count < 1 {
        return Err(BrokerError::Config("segment counts must be at least 1"));
    }
    if max_connections == 0 {
        return Err(BrokerError::Config("max_connections must be at least 1"));
    }
    let mut custom = HashMap::new();
    custom.insert(
        ALL_UP_FILTER.to_owned(),
        SegmentConfig {
            max_segment_size: sizing.uplink_segment_size,
            max_segment_count: sizing.uplink_segment_count,
        },
    );
    let config = RouterConfig {
        max_connections: max_connections.saturating_add(EXTRA_ROUTER_SLOTS),
        max_outgoing_packet_count: sizing.max_outgoing_packet_count,
        max_segment_size: sizing.segment_size,
        max_segment_count: sizing.segment_count,
        custom_segment: Some(custom),
        // Created up front so device traffic lands in the big uplink log, not in small
        // per-topic dynamic logs, even while the bridge is not subscribed yet.
        initialized_filters: Some(vec![ALL_UP_FILTER.to_owned()]),
        ..RouterConfig::default()
    };
    let router_tx = Router::new(0, config).spawn();
    Ok(Arc::new(move |client_id: &str, clean: bool| {
        LinkBuilder::new(client_id, router_tx.clone())
            .clean_session(clean)
            // Without dynamic filters the router disconnects a client that publishes to a
            // topic no subscription matches.
            .dynamic_filters(true)
            .build()
            .map_err(|e| e.to_string())
    }))
}

/// Builds a link off the async runtime.
pub(crate) async fn build_link(
    factory: &Arc<LinkFactory>,
    router_client_id: String,
    clean: bool,
) -> Result<Link, BrokerError> {
    let factory = Arc::clone(factory);
    tokio::task::spawn_blocking(move || factory(&router_client_id, clean))
        .await
        .map_err(|e| BrokerError::RouterUnavailable(e.to_string()))?
        .map_err(BrokerError::RouterUnavailable)
}

pub(crate) fn lock(tx: &SharedTx) -> MutexGuard<'_, LinkTx> {
    tx.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Job {
    link: SharedTx,
    packet: Packet,
    done: Option<oneshot::Sender<()>>,
}

/// Hands packets to the router from one dedicated OS thread, in submission order.
#[derive(Clone)]
pub(crate) struct Feeder {
    tx: mpsc::Sender<Job>,
}

impl Feeder {
    /// Starts the feeder thread; it exits when every `Feeder` clone is dropped.
    pub(crate) fn spawn(capacity: usize) -> Feeder {
        let (tx, mut rx) = mpsc::channel::<Job>(capacity);
        let spawned = std::thread::Builder::new()
            .name("fleetmq-router-feeder".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    let result = push(&mut lock(&job.link), job.packet);
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "router refused a packet");
                    }
                    if let Some(done) = job.done {
                        let _ = done.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread every send below fails with RouterUnavailable.
            tracing::error!(error = %e, "cannot start the router feeder thread");
        }
        Feeder { tx }
    }

    /// Queues `packet` for the router, waiting (asynchronously) while the queue is full.
    pub(crate) async fn send(&self, link: &SharedTx, packet: Packet) -> Result<(), BrokerError> {
        self.tx
            .send(Job {
                link: Arc::clone(link),
                packet,
                done: None,
            })
            .await
            .map_err(|_| BrokerError::RouterUnavailable("feeder thread stopped".into()))
    }

    /// Like [`send`](Self::send), but returns only once the router channel has the packet, so
    /// that what follows (a takeover's new link) is ordered after it.
    pub(crate) async fn send_and_wait(
        &self,
        link: &SharedTx,
        packet: Packet,
    ) -> Result<(), BrokerError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                link: Arc::clone(link),
                packet,
                done: Some(done),
            })
            .await
            .map_err(|_| BrokerError::RouterUnavailable("feeder thread stopped".into()))?;
        wait.await
            .map_err(|_| BrokerError::RouterUnavailable("feeder thread stopped".into()))
    }

    /// Best-effort, non-waiting send for `Drop` impls.
    pub(crate) fn try_send(&self, link: &SharedTx, packet: Packet) {
        let _ = self.tx.try_send(Job {
            link: Arc::clone(link),
            packet,
            done: None,
        });
    }
}

/// Hands `packet` to the router through the link's buffer.
///
/// `LinkTx::send` queues one router event per packet, but the router takes the link's whole
/// buffer on the first event. The others are stale, and once a DISCONNECT was in that buffer
/// each of them names a link that is gone: rumqttd logs "no-connection id N is already gone"
/// at ERROR for every one (thousands after an operator who acknowledged a stream
/// disconnects; and the id may already belong to a new connection). So a packet joins a
/// buffer that is not empty without an event of its own: the event queued when that buffer
/// became non-empty has not been handled (handling it empties the buffer) and takes this
/// packet too. The check and the push hold the buffer's lock, and only the feeder thread
/// pushes once a link is in use, so at most one event per link is ever outstanding.
///
/// Back-pressure: the blocking send on the router channel (capacity 1,000) is what slows the
/// feeder when the router falls behind. A buffer already holding [`MAX_LINK_BUFFER`] packets
/// therefore gets a plain send again: the router channel's back-pressure applies once a
/// link's buffer is that full (only when the router is far behind), at the price of a
/// possibly stale event then.
/// rumqttd's `LinkError` is ~800 bytes; it is reported as text.
fn push(tx: &mut LinkTx, packet: Packet) -> Result<(), String> {
    {
        let mut buffer = tx.buffer();
        if !buffer.is_empty() && buffer.len() < MAX_LINK_BUFFER {
            buffer.push_back(packet);
            return Ok(());
        }
    }
    complete(tx.send(packet))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Drives a future that never really waits (rumqttd's `LinkTx::send` has no await point; it
/// blocks inside) to completion on the current thread. Only used on the feeder thread.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// Polls `future` once; `None` if it is not ready. Used to drain already-buffered router
/// notifications before flushing the socket (the futures involved are cancel-safe).
pub(crate) fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
