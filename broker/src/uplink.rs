//! The uplink boundary: where a device's `up/` messages and its session changes go before
//! anything acknowledges them.
//!
//! A device's message is acknowledged only once the server has stored it: every PUBLISH a
//! device makes under its own `up/` prefix is handed to the [`Uplink`] first, and only once
//! [`Uplink::deliver`] has resolved `Ok` is the message routed (to operators) and the
//! device's PUBACK (QoS 1) or PUBREC (QoS 2) written. A failed delivery closes the connection
//! without acknowledgement, so the device sends the message again: at least once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use fleetmq_protocol::DeviceId;

use crate::BrokerError;

/// A message a device published under its own `up/` prefix (the ACL already allowed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkMessage {
    /// The device's organization.
    pub org_slug: String,
    /// The device.
    pub device_id: DeviceId,
    /// The full topic, `fleetmq/v1/{org}/{device}/up/{channel}`.
    pub topic: String,
    /// The payload as sent (shared, not copied).
    pub payload: Bytes,
    /// The device asked the broker to retain it (live message; e.g. presence).
    pub retain: bool,
}

/// A device's MQTT session opened or ended. Only devices produce events.
///
/// For one device the events arrive in order: when a new connection takes a session over,
/// the old one's `Disconnected` is reported before the new one's `Connected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// CONNACK (accepted) was sent.
    Connected {
        /// The device's organization.
        org_slug: String,
        /// The device.
        device_id: DeviceId,
        /// The TCP peer (for `last_ip`).
        peer: SocketAddr,
    },
    /// The session ended; every message delivered before it was already reported.
    Disconnected {
        /// The device's organization.
        org_slug: String,
        /// The device.
        device_id: DeviceId,
        /// Why, one of: `clean` (client DISCONNECT), `connection lost`, `keep-alive expired`,
        /// `kicked` ([`BrokerHandle::disconnect_device`](crate::BrokerHandle::disconnect_device)),
        /// `taken over` (a new connection of the same device), `protocol violation`,
        /// `publish not authorized`, `uplink failed`, `server shutting down`.
        reason: String,
    },
}

/// The future [`Uplink::deliver`] returns. `Err` means "not taken": no acknowledgement, the
/// connection is closed, the device resends.
pub type UplinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'a>>;

/// Where device uplink goes (the server plugs in the bridge).
///
/// The broker calls [`deliver`](Uplink::deliver) for each device message in the order the
/// device sent them, one at a time per connection: while a delivery is pending the
/// connection reads nothing more from its socket (TCP back-pressure on that device only; its
/// downlink keeps flowing). Resolve `Ok` only once the message's effect is durable, and also
/// for messages that are refused for good (a malformed payload): `Ok` means "do not send it
/// again". A delivery that takes longer than
/// [`BrokerConfig::uplink_timeout`](crate::BrokerConfig::uplink_timeout) counts as failed.
pub trait Uplink: Send + Sync + 'static {
    /// Takes one device message; resolves once it is safe to acknowledge.
    fn deliver(&self, message: UplinkMessage) -> UplinkFuture<'_>;

    /// A device session opened or ended. Must not block: queue the work.
    fn session(&self, event: SessionEvent);
}

/// The uplink of a broker nobody plugged a sink into: takes every message at once (the
/// router still routes it) and ignores sessions.
pub(crate) struct NoUplink;

impl Uplink for NoUplink {
    fn deliver(&self, _message: UplinkMessage) -> UplinkFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn session(&self, _event: SessionEvent) {}
}
