//! Listeners and their accept loops.
//!
//! The accept loop only accepts: every handshake (TLS, WebSocket) runs in the new connection's own task
//! under `connect_timeout`, so a peer that opens a socket and says nothing holds one task,
//! never the loop (rumqttd's own listener awaits each handshake inline, without a timeout).
//! Each accepted socket first takes a slot of the pre-CONNECT budget (`admission`); over
//! budget it is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::BrokerError;
use crate::connection::{self, Shared, Stream};
use crate::metrics::Metrics;
use crate::websocket;

/// What runs on top of an accepted TCP connection.
#[derive(Clone)]
pub(crate) enum Kind {
    /// MQTT directly on TCP.
    Plain,
    /// TLS, then MQTT.
    Tls(TlsAcceptor),
    /// A WebSocket on `/mqtt`, MQTT in its binary messages.
    WebSocket,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Plain => "mqtt",
            Kind::Tls(_) => "mqtts",
            Kind::WebSocket => "mqtt-ws",
        }
    }
}

/// Binds `addr`, returning the listener and the address it really got.
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let bind_error = |source| BrokerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Accepts until shutdown; every connection gets its own task in `tasks`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    shared: Arc<Shared>,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(error = %e, listener = kind.name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let pending = match shared.pending.admit(peer.ip()) {
            Ok(pending) => pending,
            Err(full) => {
                // Closed before anything is read; a flood is counted, and logged by sample.
                Metrics::count(&shared.core.metrics.pending_refused);
                if let Some(refused) = shared.pending_log.hit() {
                    tracing::warn!(%peer, refused, reason = full.as_str(), "sockets closed before CONNECT (one line per 10 s)");
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let kind = kind.clone();
        tasks.spawn(async move {
            let Some((stream, certificates)) = open(&kind, tcp, peer, &shared).await else {
                return;
            };
            connection::serve(stream, certificates, peer, shared, pending).await;
        });
    }
}

/// Runs the transport's handshake, bounded by `connect_timeout` and shutdown. Returns the
/// stream and the certificate chain the client presented (TLS only; empty without one).
async fn open(
    kind: &Kind,
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(Stream, Vec<CertificateDer<'static>>)> {
    match kind {
        Kind::Plain => Some((Box::new(tcp), Vec::new())),
        Kind::Tls(acceptor) => {
            let handshake = timeout(shared.config.connect_timeout, acceptor.accept(tcp));
            let result = tokio::select! {
                result = handshake => result,
                () = shared.shutdown.cancelled() => return None,
            };
            match result {
                Ok(Ok(stream)) => {
                    let certificates = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(<[_]>::to_vec)
                        .unwrap_or_default();
                    Some((Box::new(stream), certificates))
                }
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
        Kind::WebSocket => {
            let config = &shared.config;
            let handshake = websocket::accept(tcp, config.connect_timeout, config.max_packet_size);
            let result = tokio::select! {
                result = handshake => result,
                () = shared.shutdown.cancelled() => return None,
            };
            match result {
                Ok(stream) => Some((Box::new(stream), Vec::new())),
                Err(e) => {
                    debug!(%peer, error = %e, "WebSocket handshake failed");
                    None
                }
            }
        }
    }
}
