//! The broker's error type.

use std::io;

/// Errors returned by [`Broker`](crate::Broker) and [`BrokerHandle`](crate::BrokerHandle).
/// Per-connection problems are never errors here: they close that connection and are logged.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Binding the MQTT listener failed (address in use, permission).
    #[error("cannot bind MQTT listener on {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A configuration value the broker cannot run with (a zero bound, wss without TLS).
    #[error("invalid broker configuration: {0}")]
    Config(&'static str),
    /// A topic given to [`BrokerHandle::publish`](crate::BrokerHandle::publish) is not a valid
    /// topic name (empty, wildcards, `$` prefix).
    #[error("invalid topic name `{0}`")]
    InvalidTopic(String),
    /// A filter given to [`BrokerHandle::link`](crate::BrokerHandle::link) is invalid.
    #[error("invalid topic filter `{0}`")]
    InvalidFilter(String),
    /// An in-process link was replaced by another of the same name.
    #[error("in-process link closed")]
    LinkClosed,
    /// An [`Uplink`](crate::Uplink) could not take a device's message (e.g. the store is
    /// down). The device gets no acknowledgement and will send the message again.
    #[error("uplink failed: {0}")]
    Uplink(String),
    /// The [`Persistence`](crate::Persistence) could not load or apply broker state.
    #[error("broker persistence: {0}")]
    Persistence(String),
    /// The TLS certificate or key cannot be read, parsed, generated or used.
    #[error("TLS: {0}")]
    Tls(String),
}
