//! The session loop of an accepted connection: packets from the client are authorized and
//! handed to the uplink, the router or the peer's own subscription state; the session's
//! mailbox and device downlink are written back to the socket.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use fleetmq_protocol::Principal;
use rumqttd::protocol::{
    DisconnectReasonCode, Error as WireError, Packet, Publish, PublishProperties,
};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::framing::{PUBACK, PUBCOMP, PUBREC, PUBREL, Wire};
use super::inflight::{Arrival, ClientInflight};
use super::mqtt5::{self, reason};
use super::peer::{DownlinkRx, Peer};
use super::{Close, MAX_BATCH, Shared};
use crate::BrokerError;
use crate::downlink::Downlink;
use crate::router::{Expiry, Mailbox, Message, Outbound, RouterMetrics};
use crate::session::Kick;
use crate::uplink::{Delivered, UplinkFuture, UplinkMessage, UplinkRefusal};

/// A client PUBLISH that is acknowledged only once something resolves: a device message
/// until the uplink has taken it (and it is routed), a message queued for a persistent
/// session until the journal has it.
pub(super) struct Held<'a> {
    /// The PUBLISH's QoS (0, 1 or 2) and packet id, read from its frame.
    qos: u8,
    pkid: u16,
    /// Resolves once the message may be acknowledged (or failed).
    pub(super) delivery: UplinkFuture<'a>,
}

/// One accepted session, from CONNACK until it closes.
pub(super) struct Relay<'a> {
    shared: &'a Shared,
    /// Whose ACL applies.
    principal: Principal,
    /// Who is on the other end, and so how its traffic is served.
    pub(super) peer: Peer,
    /// The message being held. While it is, nothing more is read from the socket: packets
    /// stay in order and a slow uplink slows only this client.
    pub(super) held: Option<Held<'a>>,
    /// The client's QoS 1/2 packet ids not yet finished with (resends are not new messages).
    inflight: ClientInflight,
    /// QoS 2 packet ids whose PUBREC is queued but not yet flushed: a resend read before the
    /// flush crossed it and is answered by it.
    pubrec_unflushed: Vec<u16>,
    /// How long the session outlives the connection: as the CONNECT said, or as an MQTT 5
    /// client's DISCONNECT changed it.
    pub(super) expiry: Expiry,
}

/// The next downlink message; never resolves without a queue. Cancel-safe.
fn next_downlink<'r>(
    rx: &'r mut Option<DownlinkRx>,
) -> impl Future<Output = Option<Box<Downlink>>> + 'r {
    std::future::poll_fn(move |cx| match rx {
        Some(rx) => rx.poll_recv(cx),
        None => Poll::Pending,
    })
}

/// Resolves when the held delivery does; never while there is none. Cancel-safe (the
/// delivery stays in `held`).
fn delivered<'s>(
    held: &'s mut Option<Held<'_>>,
) -> impl Future<Output = Result<Delivered, BrokerError>> + 's {
    std::future::poll_fn(move |cx| match held {
        Some(held) => held.delivery.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// Resolves when the session's mailbox may have something to send; never for a device.
/// Cancel-safe.
fn mailbox_ready<'m>(mailbox: Option<&'m Mailbox>) -> impl Future<Output = ()> + 'm {
    std::future::poll_fn(move |cx| match mailbox {
        Some(mailbox) => mailbox.poll_ready(cx),
        None => Poll::Pending,
    })
}

impl<'a> Relay<'a> {
    /// A session of `principal` served as `peer`, outliving the connection as `expiry` says.
    pub(super) fn new(
        shared: &'a Shared,
        principal: Principal,
        peer: Peer,
        expiry: Expiry,
    ) -> Self {
        Relay {
            shared,
            principal,
            peer,
            held: None,
            inflight: ClientInflight::new(shared.config.limits.max_awaiting_pubrel),
            pubrec_unflushed: Vec::new(),
            expiry,
        }
    }

    /// Relays until the session ends, and says why it did.
    ///
    /// A future built from an `async move` block rather than an `async fn`: an `async fn`
    /// keeps a second copy of its arguments in its state, and this state is held by every
    /// idle connection.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run<'r>(
        &'r mut self,
        wire: &'r mut Wire,
        mut downlink_rx: Option<DownlinkRx>,
        keep_alive: Option<Duration>,
        kicked: Kick<'r>,
    ) -> impl Future<Output = Close> + 'r {
        async move {
            let far_future = Duration::from_secs(86_400 * 365);
            let mut expiry = pin!(sleep_until(
                Instant::now() + keep_alive.unwrap_or(far_future)
            ));
            // Packets the client pipelined behind its CONNECT are already in the read buffer:
            // handle them before waiting for more bytes (with keep-alive 0 none may ever come).
            let mut pipelined = !wire.read.is_empty();
            loop {
                let result = if std::mem::take(&mut pipelined) {
                    self.drain_socket(wire)
                } else {
                    tokio::select! {
                        () = kicked.cancelled() => Err(self.stopped()),
                        // While a delivery is held the socket is not read, so silence is ours, not
                        // the client's: the keep-alive clock restarts when the delivery ends.
                        () = &mut expiry, if keep_alive.is_some() && self.held.is_none() => {
                            Err(Close::KeepAliveExpired)
                        }
                        result = delivered(&mut self.held), if self.held.is_some() => {
                            if let Some(keep_alive) = keep_alive {
                                expiry.as_mut().reset(Instant::now() + keep_alive);
                            }
                            self.on_delivered(result, wire)
                        }
                        read = wire.read_some(), if self.held.is_none() => match read {
                            Ok(0) => Err(Close::Eof),
                            Ok(_) => {
                                if let Some(keep_alive) = keep_alive {
                                    expiry.as_mut().reset(Instant::now() + keep_alive);
                                }
                                self.drain_socket(wire)
                            }
                            Err(e) => Err(Close::Io(e)),
                        },
                        () = mailbox_ready(self.peer.mailbox()) => {
                            self.drain_mailbox(wire);
                            Ok(())
                        }
                        message = next_downlink(&mut downlink_rx), if self.peer.can_take_downlink() => {
                            match message {
                                Some(message) => {
                                    if let Peer::Device { downlink, .. } = &mut self.peer {
                                        downlink.deliver(message, wire, &mut downlink_rx);
                                    }
                                    Ok(())
                                }
                                // Replaced in the registry (takeover): nothing more will come.
                                None => {
                                    downlink_rx = None;
                                    Ok(())
                                }
                            }
                        }
                    }
                };
                if let Err(close) = result {
                    return close;
                }
                // A client that stops reading must not delay a kick or a shutdown by the write
                // timeout. The flush is boxed: its state (a write and its timer) is needed only
                // while it runs, and inline it would be in every idle connection's state.
                if wire.has_queued() {
                    let flushed = tokio::select! {
                        flushed = Box::pin(wire.flush()) => flushed,
                        () = kicked.cancelled() => Err(self.stopped()),
                    };
                    if let Err(close) = flushed {
                        return close;
                    }
                }
                for pkid in self.pubrec_unflushed.drain(..) {
                    self.inflight.received(pkid);
                }
                // Every byte parsed: the buffer's allocation goes until bytes arrive again.
                wire.release_read();
            }
        }
    }

    /// Why the session's kick token was cancelled: it is a child of the broker's shutdown.
    fn stopped(&self) -> Close {
        if self.shared.shutdown.is_cancelled() {
            Close::Shutdown
        } else {
            Close::Kicked
        }
    }

    /// Writes what the mailbox has to send (up to a batch; it wakes us again if more is
    /// ready).
    fn drain_mailbox(&mut self, wire: &mut Wire) {
        let Some(mailbox) = self.peer.mailbox() else {
            return;
        };
        let router = &self.shared.core.router;
        for packet in mailbox.take(
            MAX_BATCH,
            &router.limits.queue,
            &router.journal,
            &router.metrics,
        ) {
            self.write_outbound(wire, packet);
        }
    }

    /// Writes one packet the mailbox produced. A message larger than an MQTT 5 client
    /// accepts is not sent: it is dropped (counted) and its exchange finished, as MQTT 5
    /// §3.1.2.25 says.
    pub(super) fn write_outbound(&self, wire: &mut Wire, packet: Outbound) {
        match packet {
            Outbound::Publish {
                message,
                pkid,
                dup,
                ids,
            } => {
                if wire.queue_publish(&message, pkid, dup, ids.as_deref()) {
                    return;
                }
                let router = &self.shared.core.router;
                RouterMetrics::count(&router.metrics.too_large);
                debug!(
                    topic = message.topic_str(),
                    "message larger than the client's maximum packet size, dropped"
                );
                if let Some(mailbox) = self.peer.mailbox() {
                    match message.qos {
                        1 => mailbox.acknowledged(pkid, &router.journal),
                        2 => mailbox.refused(pkid, &router.journal),
                        _ => true,
                    };
                }
            }
            Outbound::PubRel(pkid) => wire.queue_ack(PUBREL, pkid, reason::SUCCESS, None),
        }
    }

    fn drain_socket(&mut self, wire: &mut Wire) -> Result<(), Close> {
        // Packets after a held message wait in the read buffer, in order.
        while self.held.is_none() {
            let publish_id = wire.publish_id();
            match wire.parse() {
                Ok(Some(Packet::Publish(publish, properties))) => {
                    let id = publish_id.unwrap_or_default();
                    let (qos, pkid) = (id.qos, id.pkid);
                    match self.inflight.arrive(qos, pkid, id.dup) {
                        Arrival::New => self.on_publish(publish, properties, qos, pkid, wire)?,
                        Arrival::Resend => {
                            debug!(pkid, qos, "resent PUBLISH, not taken again");
                        }
                        Arrival::ResendAnswerPubRec => {
                            debug!(pkid, "resent QoS 2 PUBLISH before PUBREL, not taken again");
                            wire.queue_ack(PUBREC, pkid, reason::SUCCESS, None);
                        }
                        Arrival::TooManyAwaitingRelease => {
                            // The receive maximum announced to an MQTT 5 client.
                            return Err(Close::Violation(
                                reason::RECEIVE_MAXIMUM_EXCEEDED,
                                "too many QoS 2 messages awaiting PUBREL".into(),
                            ));
                        }
                    }
                }
                Ok(Some(packet)) => self.handle_client(packet, wire)?,
                Ok(None) => return Ok(()),
                Err(WireError::PayloadSizeLimitExceeded(size)) => {
                    return Err(Close::Violation(
                        reason::PACKET_TOO_LARGE,
                        format!("packet of {size} bytes exceeds the maximum packet size"),
                    ));
                }
                Err(e) => return Err(Close::Violation(reason::MALFORMED_PACKET, e.to_string())),
            }
        }
        Ok(())
    }

    /// The held message may be acknowledged: do so and go on with what the client sent
    /// after it; or close without acknowledgement (the client sends it again).
    fn on_delivered(
        &mut self,
        result: Result<Delivered, BrokerError>,
        wire: &mut Wire,
    ) -> Result<(), Close> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        match result {
            Err(e) => {
                warn!(error = %e, "message not taken, closing unacknowledged");
                return Err(Close::UplinkFailed(e.to_string()));
            }
            Ok(Delivered::Taken) => self.acknowledge(held.qos, held.pkid, wire),
            // Only MQTT 5 deliveries resolve so (see `on_publish`).
            Ok(Delivered::Refused { why, reason }) => {
                let code = match why {
                    UplinkRefusal::PayloadInvalid => reason::PAYLOAD_FORMAT_INVALID,
                    UplinkRefusal::QuotaExceeded => reason::QUOTA_EXCEEDED,
                };
                self.refuse(held.qos, held.pkid, code, &reason, wire);
            }
        }
        self.drain_socket(wire)
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2) for a message that is taken.
    fn acknowledge(&mut self, qos: u8, pkid: u16, wire: &mut Wire) {
        match qos {
            1 => {
                self.inflight.acknowledged(pkid);
                wire.queue_ack(PUBACK, pkid, reason::SUCCESS, None);
            }
            2 => {
                self.pubrec_unflushed.push(pkid);
                wire.queue_ack(PUBREC, pkid, reason::SUCCESS, None);
            }
            _ => {}
        }
    }

    /// An MQTT 5 client's PUBLISH is refused with a reason code in its PUBACK or PUBREC
    /// (a QoS 0 one is dropped): the message is not taken, the connection goes on.
    fn refuse(&mut self, qos: u8, pkid: u16, code: u8, why: &str, wire: &mut Wire) {
        match qos {
            1 => {
                self.inflight.acknowledged(pkid);
                wire.queue_ack(PUBACK, pkid, code, Some(why));
            }
            2 => {
                // A PUBREC with a failure ends the exchange: no PUBREL follows.
                self.inflight.release(pkid);
                wire.queue_ack(PUBREC, pkid, code, Some(why));
            }
            _ => {}
        }
    }

    fn handle_client(&mut self, packet: Packet, wire: &mut Wire) -> Result<(), Close> {
        match packet {
            Packet::PingReq(_) => {
                wire.queue_pingresp();
                Ok(())
            }
            Packet::Disconnect(disconnect, properties) => {
                if let Some(interval) = properties.and_then(|p| p.session_expiry_interval) {
                    // MQTT-3.14.2-2: a session that was to end with the connection cannot
                    // be made to outlive it at DISCONNECT.
                    if self.expiry == Expiry::WithConnection && interval != 0 {
                        return Err(Close::Protocol(
                            "session expiry set at DISCONNECT after 0 at CONNECT".into(),
                        ));
                    }
                    self.expiry = Expiry::from_interval(interval);
                }
                match disconnect.reason_code {
                    DisconnectReasonCode::DisconnectWithWillMessage => {
                        Err(Close::ClientDisconnectWithWill)
                    }
                    _ => Err(Close::ClientDisconnect),
                }
            }
            Packet::PubRel(ack, _) => {
                let code = if self.inflight.release(ack.pkid) {
                    reason::SUCCESS
                } else {
                    debug!(pkid = ack.pkid, "PUBREL for nothing awaiting release");
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                wire.queue_ack(PUBCOMP, ack.pkid, code, None);
                Ok(())
            }
            packet => match &mut self.peer {
                Peer::Device { downlink, .. } => downlink.on_client(&self.principal, packet, wire),
                Peer::Routed(routed) => {
                    routed.on_client(&self.principal, packet, wire, &self.shared.core.router)
                }
            },
        }
    }

    fn on_publish(
        &mut self,
        publish: Publish,
        properties: Option<PublishProperties>,
        qos: u8,
        pkid: u16,
        wire: &mut Wire,
    ) -> Result<(), Close> {
        let topic_bytes = match &mut wire.v5 {
            Some(v5) => {
                let alias = properties.as_ref().and_then(|p| p.topic_alias);
                v5.inbound_topic(publish.topic, alias)
                    .map_err(|code| Close::Violation(code, "topic alias not valid".into()))?
            }
            None => publish.topic,
        };
        let Ok(topic) = std::str::from_utf8(&topic_bytes).map(str::to_owned) else {
            return Err(Close::Violation(
                reason::TOPIC_NAME_INVALID,
                "topic is not UTF-8".into(),
            ));
        };
        let topic = topic.as_str();
        if !self.principal.may_publish(topic) {
            if wire.is_v5() {
                info!(topic, "publish not authorized, refused");
                self.refuse(qos, pkid, reason::NOT_AUTHORIZED, "not authorized", wire);
                return Ok(());
            }
            // MQTT 3.1.1 has no negative PUBACK; closing is the allowed response.
            warn!(topic, "publish not authorized, closing");
            return Err(Close::NotAuthorized(topic.to_owned()));
        }
        let utf8_announced = properties
            .as_ref()
            .is_some_and(|p| p.payload_format_indicator == Some(1));
        if utf8_announced && std::str::from_utf8(&publish.payload).is_err() {
            debug!(topic, "payload said UTF-8 and is not, refused");
            let why = "payload is not UTF-8 as its format indicator says";
            self.refuse(qos, pkid, reason::PAYLOAD_FORMAT_INVALID, why, wire);
            return Ok(());
        }
        let shared: &'a Shared = self.shared;
        let limit = shared.config.uplink_timeout;
        let message = Message {
            topic: topic_bytes,
            payload: publish.payload,
            qos,
            retain: publish.retain,
            properties: mqtt5::message_properties(properties.as_ref()),
        };
        let delivery: UplinkFuture<'a> = match &self.peer {
            Peer::Device {
                org_slug,
                device_id,
                ..
            } => {
                // A device may only publish under its own up/ prefix: all of it is uplink,
                // taken by the uplink before it is routed and acknowledged.
                let uplink = UplinkMessage {
                    org_slug: org_slug.clone(),
                    device_id: *device_id,
                    topic: topic.to_owned(),
                    payload: message.payload.clone(),
                    retain: message.retain,
                    correlation_data: message
                        .properties
                        .as_ref()
                        .and_then(|p| p.correlation_data.clone()),
                };
                let delivery = shared.uplink.deliver(uplink);
                let v5 = wire.is_v5();
                Box::pin(async move {
                    let delivered = delivery.await?;
                    // An MQTT 5 device is told of a refusal, and the message goes no
                    // further; an MQTT 3.1.1 device cannot be told (it was, on `down/error`).
                    if v5 && delivered != Delivered::Taken {
                        return Ok(delivered);
                    }
                    if let Some(ticket) = shared.core.router.publish(message, None) {
                        shared.core.router.journal.durable(ticket).await?;
                    }
                    Ok(Delivered::Taken)
                })
            }
            Peer::Routed(routed) => {
                match shared.core.router.publish(message, Some(&routed.mailbox)) {
                    Some(ticket) if qos > 0 => Box::pin(async move {
                        let durable = shared.core.router.journal.durable(ticket).await;
                        durable.map(|()| Delivered::Taken)
                    }),
                    _ => {
                        self.acknowledge(qos, pkid, wire);
                        return Ok(());
                    }
                }
            }
        };
        self.held = Some(Held {
            qos,
            pkid,
            delivery: Box::pin(async move {
                timeout(limit, delivery).await.unwrap_or_else(|_| {
                    Err(BrokerError::Uplink(format!("no answer within {limit:?}")))
                })
            }),
        });
        Ok(())
    }
}
