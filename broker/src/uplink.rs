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
    /// MQTT 5 correlation data: an answer to a request says which (see
    /// [`BrokerHandle::publish_request`](crate::BrokerHandle::publish_request)).
    pub correlation_data: Option<Bytes>,
}

/// What the uplink made of a device message it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Taken: its effect is durable. It is acknowledged and routed.
    Taken,
    /// Refused for good for what it says (not worth sending again). An MQTT 3.1.1 device
    /// has it acknowledged (and routed) all the same; an MQTT 5 device gets the refusal's
    /// reason code in its PUBACK/PUBREC, and the message goes no further.
    Refused {
        /// Which reason code.
        why: UplinkRefusal,
        /// A reason string for the device.
        reason: String,
    },
}

/// Why the uplink refused a device message, as MQTT 5 reason codes say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkRefusal {
    /// The payload is not what its channel takes (`0x99`, payload format invalid).
    PayloadInvalid,
    /// The payload is over a bound (`0x97`, quota exceeded).
    QuotaExceeded,
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
pub type UplinkFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Delivered, BrokerError>> + Send + 'a>>;

/// Where device uplink goes (the server plugs in the bridge).
///
/// The broker calls [`deliver`](Uplink::deliver) for each device message in the order the
/// device sent them, one at a time per connection: while a delivery is pending the
/// connection reads nothing more from its socket (TCP back-pressure on that device only; its
/// downlink keeps flowing). Resolve `Ok(Taken)` only once the message's effect is durable,
/// and `Ok(Refused)` for messages that are refused for good (a malformed payload): `Ok` means
/// "do not send it again". A delivery that takes longer than
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
        Box::pin(std::future::ready(Ok(Delivered::Taken)))
    }

    fn session(&self, _event: SessionEvent) {}
}
