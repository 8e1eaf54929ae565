//! Listeners and their accept loops.
//!
//! The accept loop only accepts: every handshake (TLS, WebSocket, or both for `wss://`) runs in
//! the new connection's own task under one `connect_timeout`, so a peer that opens a socket
//! and says nothing holds one task, never the loop (rumqttd's own listener awaits each
//! handshake inline, without a timeout). Each accepted socket first takes a slot of the
//! pre-CONNECT budget (`admission`); over budget it is closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::BrokerError;
use crate::admission::PendingPermit;
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
    /// TLS (the TLS listener's certificate, asking for client certificates alike), then a
    /// WebSocket on `/mqtt`: `wss://` for browsers on HTTPS pages.
    SecureWebSocket(TlsAcceptor),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Plain => "mqtt",
            Kind::Tls(_) => "mqtts",
            Kind::WebSocket => "mqtt-ws",
            Kind::SecureWebSocket(_) => "mqtt-wss",
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
        // One box for what the handshakes consume: an async block keeps what it captures
        // for its whole life, and a connection task's size is what every idle connection
        // costs.
        let incoming = Box::new(Incoming {
            kind: kind.clone(),
            tcp,
            peer,
            pending,
        });
        let fut = async move {
            // Boxed: the handshakes' state is large and only needed until they are done.
            let accepted = Box::pin(async {
                let Incoming {
                    kind,
                    tcp,
                    peer,
                    pending,
                } = *incoming;
                let (stream, certificates) = open(&kind, tcp, peer, &shared).await?;
                connection::accept(stream, certificates, peer, &shared, pending).await
            })
            .await;
            if let Some(accepted) = accepted {
                connection::serve(&shared, accepted).await;
            }
        };
        tasks.spawn(fut);
    }
}

/// An accepted TCP connection before its handshakes.
struct Incoming {
    kind: Kind,
    tcp: TcpStream,
    peer: SocketAddr,
    pending: PendingPermit,
}

/// Why a transport handshake failed (logged at debug level; the socket is closed).
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// The TLS handshake failed (not TLS, an untrusted or bad client certificate signature,
    /// the peer went away).
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    /// The WebSocket upgrade failed or was refused (wrong path, no `mqtt` subprotocol).
    #[error("WebSocket handshake: {0}")]
    WebSocket(#[source] tokio_tungstenite::tungstenite::Error),
}

/// Runs the transport's handshake (for `wss://` TLS and then the WebSocket upgrade), the
/// whole of it bounded by one `connect_timeout` and by shutdown. Returns the stream and the
/// certificate chain the client presented in the TLS handshake (empty without one).
async fn open(
    kind: &Kind,
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(Stream, Vec<CertificateDer<'static>>)> {
    let max_packet_size = shared.config.max_packet_size;
    let handshake = async {
        let opened: (Stream, Vec<CertificateDer<'static>>) = match kind {
            Kind::Plain => (Box::new(tcp), Vec::new()),
            Kind::Tls(acceptor) => {
                let (tls, certificates) = tls_handshake(acceptor, tcp).await?;
                (Box::new(tls), certificates)
            }
            Kind::WebSocket => {
                let ws = websocket::accept(tcp, max_packet_size)
                    .await
                    .map_err(HandshakeError::WebSocket)?;
                (Box::new(ws), Vec::new())
            }
            Kind::SecureWebSocket(acceptor) => {
                let (tls, certificates) = tls_handshake(acceptor, tcp).await?;
                let ws = websocket::accept(tls, max_packet_size)
                    .await
                    .map_err(HandshakeError::WebSocket)?;
                (Box::new(ws), certificates)
            }
        };
        Ok::<_, HandshakeError>(opened)
    };
    let result = tokio::select! {
        result = timeout(shared.config.connect_timeout, handshake) => result,
        () = shared.shutdown.cancelled() => return None,
    };
    match result {
        Ok(Ok(opened)) => Some(opened),
        Ok(Err(e)) => {
            debug!(%peer, listener = kind.name(), error = %e, "handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, listener = kind.name(), "handshake timed out");
            None
        }
    }
}

/// The TLS server handshake, and the certificate chain the client presented (see
/// `client_certificate`; empty without one).
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> Result<(TlsStream<TcpStream>, Vec<CertificateDer<'static>>), HandshakeError> {
    let stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
    let certificates = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    Ok((stream, certificates))
}
