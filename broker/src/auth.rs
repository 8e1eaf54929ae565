//! The authentication boundary: the broker asks, the store (through the server crate) answers.
//!
//! Keeping it a trait means the broker never depends on redb or the API; tests plug in a
//! small table.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use fleetmq_protocol::Principal;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// What a client presented in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The client id as sent (or as assigned by the broker when the client sent an empty one).
    pub client_id: String,
    /// Username, `None` if absent or empty.
    pub username: Option<String>,
    /// Password bytes, `None` if absent. (rumqttd's v4 decoder only accepts UTF-8 passwords.)
    pub password: Option<Vec<u8>>,
    /// Remote address, for logging and rate limiting.
    pub peer: SocketAddr,
    /// The certificate chain the client presented in the TLS handshake, leaf first; empty
    /// without one (and always on plain TCP and WebSocket). The handshake only proved the
    /// client holds the leaf's key: whether the chain is trusted, current and names this
    /// device is the authenticator's to decide (the CAs live in the store).
    pub client_certificates: Vec<CertificateDer<'static>>,
}

/// Why a login is refused; each maps to an MQTT 3.1.1 CONNACK return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user or wrong password: CONNACK 0x04.
    BadCredentials,
    /// Known but not allowed to connect (e.g. deactivated device): CONNACK 0x05.
    NotAuthorized,
    /// The authenticator could not decide (store down): CONNACK 0x03.
    ServerUnavailable,
    /// The client id is not acceptable for this identity: CONNACK 0x02.
    IdentifierRejected,
}

impl Refusal {
    /// The MQTT 3.1.1 CONNACK return code.
    pub fn return_code(self) -> u8 {
        match self {
            Refusal::IdentifierRejected => 0x02,
            Refusal::ServerUnavailable => 0x03,
            Refusal::BadCredentials => 0x04,
            Refusal::NotAuthorized => 0x05,
        }
    }
}

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, Refusal>> + Send + 'a>>;

/// Decides who a connecting client is. Called once per CONNECT that carries a username or
/// comes with a client certificate; other clients never reach it (they are anonymous or
/// refused with 0x05). Called again with the same [`Login`] when a live session may have
/// been revoked ([`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize)).
///
/// Implementations must not block the async runtime (redb lookups belong in
/// `spawn_blocking`). The broker applies its connect timeout to the call and answers
/// CONNACK 0x03 if it expires.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticate `login`, returning the principal whose ACL applies to the session.
    fn authenticate(&self, login: Login) -> AuthFuture<'_>;
}
