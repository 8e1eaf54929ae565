//! The HTTP listener: serves the REST API over HTTP/1.1 with the limits a hostile or careless
//! client must not get past.
//!
//! `axum::serve` holds a connection for as long as its client keeps it open, whatever it sends;
//! 20,000 half-sent requests once took every file descriptor of the process, so `/healthz`
//! and MQTT logins stopped answering. Here every connection is admitted by a [`ConnectionGate`]
//! (a total cap and a cap per source address; beyond them the connection is answered 503 and
//! closed at once, never left waiting in the kernel's backlog or failing `accept`), and closed
//! when, with no request in flight, its client takes longer than the header-read timeout to
//! send a request's head, or stays silent longer than the idle timeout.
//!
//! A request in flight (its handler or its response body still running: a firmware download
//! takes minutes) is never timed out here.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The REST plane's own async runtime: its worker threads accept and serve HTTP only, so
/// that ten thousand busy MQTT sessions on the main runtime cannot delay a `/healthz` probe
/// or a token request, and a flood of HTTP connections cannot delay the devices. The kernel
/// shares the cores between the two sets of threads.
///
/// Dropping it (anywhere, async contexts included) stops its threads without waiting; the
/// server drops it only after every HTTP connection and every task its handlers spawned
/// has ended.
pub struct HttpRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl HttpRuntime {
    /// Starts `workers` threads (at least one) named `fleetmq-http`.
    pub fn start(workers: usize) -> io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("fleetmq-http")
            .enable_all()
            .build()
            .map(|runtime| Self {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            })
    }

    /// Where to spawn the REST plane's tasks.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for HttpRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The HTTP listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a whole request head, counted from its first byte.
    pub header_read_timeout: Duration,
    /// Time a connection with no request in flight may stay silent (keep-alive).
    pub idle_timeout: Duration,
    /// Connections open at once; more are refused at once.
    pub max_connections: usize,
    /// Connections open at once from one address; more from it are refused at once.
    pub max_connections_per_addr: usize,
    /// Worker threads of the REST plane's own runtime ([`HttpRuntime`]).
    pub workers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_addr: 128,
            workers: 2,
        }
    }
}

/// What a refused connection reads before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: application/json\r\nretry-after: 1\r\ncontent-length: 34\r\n\r\n\
{\"detail\":\"Too many connections.\"}";

/// The largest HTTP connection cap that leaves `reserve` descriptors free beside the MQTT
/// listener's `mqtt_connections` under an open-files limit of `open_files`. Each HTTP
/// connection may hold a second descriptor (the firmware file it streams). Never below 1.
pub fn fit_connection_cap(
    wanted: usize,
    open_files: u64,
    mqtt_connections: usize,
    reserve: usize,
) -> usize {
    let room = usize::try_from(open_files)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .saturating_sub(mqtt_connections);
    wanted.min(room / 2).max(1)
}

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight finish and
/// returns once every connection is closed. The listener is registered with the runtime
/// this runs on (see [`HttpRuntime`]).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve HTTP");
            return;
        }
    };
    let gate = ConnectionGate::new(limits.max_connections, limits.max_connections_per_addr);
    let connections = TaskTracker::new();
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (or another passing failure): wait for some to free up
                // rather than spin; the caps keep this rare.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Some(slot) = gate.admit(peer.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "HTTP connection refused: too many connections");
            }
            // Best effort, never waiting: the client learns why, and the descriptor is freed.
            let _ = stream.try_write(REFUSAL);
            continue;
        };
        let app = app.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, app, limits, stop).await;
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves one connection until its client closes it, a timeout ends it, or the server stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::start(Arc::clone(&requests));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            // The request stays in flight until its response body is sent (or dropped).
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // Our own timeouts below; hyper's would also run while a request is in flight.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            () = shutdown.cancelled(), if !stopping => {
                // Finishes the request in flight, then closes.
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
            why = activity.expired(limits) => {
                tracing::debug!(%peer, reason = why, "HTTP connection closed");
                return;
            }
        }
    }
}

/// Admits connections under a total cap and a cap per source address.
#[derive(Debug)]
pub struct ConnectionGate {
    max_total: usize,
    max_per_addr: usize,
    open: Arc<Mutex<OpenConnections>>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_addr: HashMap<IpAddr, usize>,
}

impl ConnectionGate {
    /// A gate admitting `max_total` connections at once, `max_per_addr` from one address.
    pub fn new(max_total: usize, max_per_addr: usize) -> Self {
        Self {
            max_total,
            max_per_addr,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `addr`, held until dropped; `None` past either cap.
    pub fn admit(&self, addr: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_addr = open.per_addr.get(&addr).copied().unwrap_or(0);
        if open.total >= self.max_total || from_addr >= self.max_per_addr {
            return None;
        }
        open.total += 1;
        open.per_addr.insert(addr, from_addr + 1);
        Some(ConnectionSlot {
            addr,
            open: Arc::clone(&self.open),
        })
    }
}

/// One admitted connection; frees its place in the gate when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    addr: IpAddr,
    open: Arc<Mutex<OpenConnections>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_addr.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.per_addr.remove(&self.addr);
            }
        }
    }
}

/// What a connection is doing, for its timeouts.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    /// Requests whose responses are not fully sent.
    in_flight: usize,
    /// When the connection last became idle, or when the head being read began.
    since: Instant,
    /// Bytes of a new request arrived while idle.
    reading_head: bool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                since: Instant::now(),
                reading_head: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && !state.reading_head {
            state.reading_head = true;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Resolves when the connection has been idle or reading a head for too long; says which.
    async fn expired(&self, limits: HttpLimits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let deadline = {
                let state = self.lock();
                if state.in_flight > 0 {
                    None
                } else if state.reading_head {
                    Some((
                        state.since + limits.header_read_timeout,
                        "header read timeout",
                    ))
                } else {
                    Some((state.since + limits.idle_timeout, "idle timeout"))
                }
            };
            match deadline {
                None => changed.await,
                Some((at, why)) => tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep_until(at) => return why,
                },
            }
        }
    }
}

/// A request from its head until its response is sent.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        {
            let mut state = activity.lock();
            state.in_flight += 1;
            state.reading_head = false;
        }
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.since = Instant::now();
                state.reading_head = false;
            }
        }
        self.0.changed.notify_one();
    }
}

/// A client stream that reports its reads to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_address_past_its_cap_is_refused_while_another_is_admitted() {
        let gate = ConnectionGate::new(10, 2);
        let a1 = gate.admit(ip("127.0.0.1"));
        let a2 = gate.admit(ip("127.0.0.1"));
        assert!(a1.is_some() && a2.is_some());
        assert!(gate.admit(ip("127.0.0.1")).is_none());
        assert!(gate.admit(ip("127.0.0.2")).is_some());
        drop(a1);
        assert!(
            gate.admit(ip("127.0.0.1")).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_total_cap_holds_across_addresses() {
        let gate = ConnectionGate::new(2, 2);
        let _a = gate.admit(ip("10.0.0.1"));
        let _b = gate.admit(ip("10.0.0.2"));
        assert!(gate.admit(ip("10.0.0.3")).is_none());
    }

    #[test]
    fn the_http_cap_leaves_the_reserve_and_the_mqtt_connections_their_descriptors() {
        assert_eq!(fit_connection_cap(1024, 1_048_576, 10_000, 256), 1024);
        assert_eq!(fit_connection_cap(1024, 12_000, 10_000, 256), 872);
        assert_eq!(fit_connection_cap(1024, 1024, 10_000, 256), 1);
    }

    #[test]
    fn the_refusal_is_a_complete_http_answer() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
