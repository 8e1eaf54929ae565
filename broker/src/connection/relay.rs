//! The session loop of an accepted connection: packets from the client are authorized and
//! handed to the uplink, the router or the peer's own subscription state; router
//! notifications and device downlink are written back to the socket.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use fleetmq_protocol::Principal;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{
    Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, Publish,
};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::framing::Wire;
use super::inflight::{Arrival, ClientInflight};
use super::peer::{DownlinkRx, Peer};
use super::{Close, MAX_BATCH, Shared};
use crate::BrokerError;
use crate::downlink::Downlink;
use crate::router::{SharedTx, now_or_never};
use crate::uplink::{UplinkFuture, UplinkMessage};

/// A device PUBLISH waiting for [`Uplink::deliver`](crate::Uplink::deliver) before it goes
/// to the router (which then acknowledges it).
pub(super) struct Held<'a> {
    publish: Publish,
    /// The PUBLISH's QoS (0, 1 or 2) and packet id, read from its frame.
    qos: u8,
    pkid: u16,
    /// Resolves once the uplink took the message (or failed to).
    pub(super) delivery: UplinkFuture<'a>,
}

/// The connection's link into rumqttd's router.
pub(super) struct RouterLink<'a> {
    shared: &'a Shared,
    pub(super) tx: SharedTx,
}

impl<'a> RouterLink<'a> {
    /// Queues `packet` for the router. Not an `async fn` on `&self`: the future must not
    /// borrow the relay, whose held delivery is `Send` but not `Sync`.
    pub(super) fn send(
        &self,
        packet: Packet,
    ) -> impl Future<Output = Result<(), Close>> + Send + 'a {
        let shared: &'a Shared = self.shared;
        let tx = Arc::clone(&self.tx);
        async move {
            shared
                .core
                .feeder
                .send(&tx, packet)
                .await
                .map_err(|_| Close::RouterGone)
        }
    }
}

/// One accepted session, from CONNACK until it closes.
pub(super) struct Relay<'a> {
    shared: &'a Shared,
    /// Whose ACL applies.
    principal: Principal,
    /// Who is on the other end, and so how its traffic is served.
    pub(super) peer: Peer,
    pub(super) router: RouterLink<'a>,
    /// The device message being delivered to the uplink. While it is, nothing more is read
    /// from the socket: packets stay in order and a slow uplink slows only this device.
    pub(super) held: Option<Held<'a>>,
    /// The client's QoS 1/2 packet ids not yet finished with (resends are not new messages).
    inflight: ClientInflight,
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
) -> impl Future<Output = Result<(), BrokerError>> + 's {
    std::future::poll_fn(move |cx| match held {
        Some(held) => held.delivery.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

impl<'a> Relay<'a> {
    /// A session on the router link `tx`.
    pub(super) fn new(shared: &'a Shared, principal: Principal, peer: Peer, tx: SharedTx) -> Self {
        Relay {
            shared,
            principal,
            peer,
            router: RouterLink { shared, tx },
            held: None,
            inflight: ClientInflight::new(shared.config.limits.max_awaiting_pubrel),
        }
    }

    /// Relays until the session ends, and says why it did.
    pub(super) async fn run(
        &mut self,
        wire: &mut Wire,
        mut rx: LinkRx,
        mut downlink_rx: Option<DownlinkRx>,
        keep_alive: Option<Duration>,
        kicked: &CancellationToken,
    ) -> Close {
        let far_future = Duration::from_secs(86_400 * 365);
        let mut expiry = pin!(sleep_until(
            Instant::now() + keep_alive.unwrap_or(far_future)
        ));
        // Packets the client pipelined behind its CONNECT are already in the read buffer:
        // handle them before waiting for more bytes (with keep-alive 0 none may ever come).
        let mut pipelined = !wire.read.is_empty();
        loop {
            let result = if std::mem::take(&mut pipelined) {
                self.drain_socket(wire).await
            } else {
                tokio::select! {
                    () = self.shared.shutdown.cancelled() => Err(Close::Shutdown),
                    () = kicked.cancelled() => Err(Close::Kicked),
                    // While a delivery is held the socket is not read, so silence is ours, not
                    // the client's: the keep-alive clock restarts when the delivery ends.
                    () = &mut expiry, if keep_alive.is_some() && self.held.is_none() => {
                        Err(Close::KeepAliveExpired)
                    }
                    result = delivered(&mut self.held), if self.held.is_some() => {
                        if let Some(keep_alive) = keep_alive {
                            expiry.as_mut().reset(Instant::now() + keep_alive);
                        }
                        self.on_delivered(result, wire).await
                    }
                    read = wire.stream.read_buf(&mut wire.read), if self.held.is_none() => match read {
                        Ok(0) => Err(Close::Eof),
                        Ok(_) => {
                            if let Some(keep_alive) = keep_alive {
                                expiry.as_mut().reset(Instant::now() + keep_alive);
                            }
                            self.drain_socket(wire).await
                        }
                        Err(e) => Err(Close::Io(e)),
                    },
                    notification = rx.next() => match notification {
                        Ok(first) => self.drain_router(wire, &mut rx, first).await,
                        Err(_) => Err(Close::RouterGone),
                    },
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
            // timeout.
            let flushed = tokio::select! {
                flushed = wire.flush() => flushed,
                () = self.shared.shutdown.cancelled() => Err(Close::Shutdown),
                () = kicked.cancelled() => Err(Close::Kicked),
            };
            if let Err(close) = flushed {
                return close;
            }
        }
    }

    async fn drain_socket(&mut self, wire: &mut Wire) -> Result<(), Close> {
        // Packets after a held device message wait in the read buffer, in order.
        while self.held.is_none() {
            let publish_id = wire.publish_id();
            match wire.parse() {
                Ok(Some(Packet::Publish(publish, _))) => {
                    let id = publish_id.unwrap_or_default();
                    let (qos, pkid) = (id.qos, id.pkid);
                    match self.inflight.arrive(qos, pkid, id.dup) {
                        Arrival::New => self.on_publish(publish, qos, pkid).await?,
                        Arrival::Resend => {
                            debug!(pkid, qos, "resent PUBLISH, not taken again");
                        }
                        Arrival::ResendAnswerPubRec => {
                            debug!(pkid, "resent QoS 2 PUBLISH before PUBREL, not taken again");
                            let pubrec = PubRec {
                                pkid,
                                reason: PubRecReason::Success,
                            };
                            wire.queue(Packet::PubRec(pubrec, None));
                        }
                        Arrival::TooManyAwaitingRelease => {
                            return Err(Close::Protocol(
                                "too many QoS 2 messages awaiting PUBREL".into(),
                            ));
                        }
                    }
                }
                Ok(Some(packet)) => self.handle_client(packet, wire).await?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Close::Protocol(e.to_string())),
            }
        }
        Ok(())
    }

    /// The uplink answered for the held message: acknowledge and route it (at QoS 2 the
    /// router sends the PUBREC) and go on with what the client sent after it; or close
    /// without acknowledgement.
    async fn on_delivered(
        &mut self,
        result: Result<(), BrokerError>,
        wire: &mut Wire,
    ) -> Result<(), Close> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        if let Err(e) = result {
            warn!(error = %e, "uplink did not take a device message, closing unacknowledged");
            return Err(Close::UplinkFailed(e.to_string()));
        }
        if held.qos == 1 {
            // Durable once the uplink took it: acknowledge here and give the router a QoS 0
            // copy, so that the router has no PUBACK to send back. Each router notification
            // takes the next slot of the link's pre-sized notification ring (rumqttd's
            // `LinkRx` pops from the front and never rewinds), and every slot touched stays
            // resident: about 250 bytes per message for 300 messages per connection, which
            // is what made RSS grow with ingest. Subscribers get it at their own QoS either
            // way (the router forwards with the subscription's QoS).
            let copy = Publish::new(
                held.publish.topic,
                held.publish.payload,
                held.publish.retain,
            );
            // The will of a device that drops the connection on this PUBACK (a reboot) is
            // routed on this same link, so after the copy.
            self.router.send(Packet::Publish(copy, None)).await?;
            self.inflight.acknowledged(held.pkid);
            let puback = PubAck {
                pkid: held.pkid,
                reason: PubAckReason::Success,
            };
            wire.queue(Packet::PubAck(puback, None));
        } else {
            // QoS 0 needs no answer; the router runs QoS 2's PUBREC/PUBREL/PUBCOMP exchange.
            self.router
                .send(Packet::Publish(held.publish, None))
                .await?;
        }
        self.drain_socket(wire).await
    }

    async fn drain_router(
        &mut self,
        wire: &mut Wire,
        rx: &mut LinkRx,
        first: Option<Notification>,
    ) -> Result<(), Close> {
        // Relay what is already buffered (up to a batch) before the caller flushes the socket.
        // Every notification taken from `rx` must be handled: a dropped forward is a lost
        // message, and at QoS 1 a never-acknowledged slot in the router's inflight window.
        let mut next = first;
        for _ in 0..MAX_BATCH {
            if let Some(notification) = next.take() {
                self.relay(notification, wire, rx).await?;
            }
            match now_or_never(rx.next()) {
                Some(Ok(Some(notification))) => next = Some(notification),
                Some(Ok(None)) => {}
                Some(Err(_)) => return Err(Close::RouterGone),
                None => break,
            }
        }
        if let Some(notification) = next {
            self.relay(notification, wire, rx).await?;
        }
        Ok(())
    }

    async fn relay(
        &mut self,
        notification: Notification,
        wire: &mut Wire,
        rx: &mut LinkRx,
    ) -> Result<(), Close> {
        if self.handle_router(notification, wire)? {
            // The router paused us because our buffer was full; tell it we drained it, or it
            // never schedules this connection again.
            rx.wake().await.map_err(|_| Close::RouterGone)?;
        }
        Ok(())
    }

    async fn handle_client(&mut self, packet: Packet, wire: &mut Wire) -> Result<(), Close> {
        match packet {
            Packet::PingReq(_) => {
                wire.queue(Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(..) => Err(Close::ClientDisconnect),
            // For devices too: the router runs the QoS 2 exchange of their uplink.
            Packet::PubRel(ack, _) if self.inflight.release(ack.pkid) => {
                self.router.send(Packet::PubRel(ack, None)).await
            }
            Packet::PubRel(ack, _) => {
                debug!(
                    pkid = ack.pkid,
                    "PUBREL for nothing awaiting release, answered here"
                );
                let pubcomp = PubComp {
                    pkid: ack.pkid,
                    reason: PubCompReason::Success,
                };
                wire.queue(Packet::PubComp(pubcomp, None));
                Ok(())
            }
            packet => match &mut self.peer {
                Peer::Device { downlink, .. } => downlink.on_client(&self.principal, packet, wire),
                Peer::Routed(routed) => {
                    routed
                        .on_client(&self.principal, packet, wire, &self.router)
                        .await
                }
            },
        }
    }

    async fn on_publish(&mut self, publish: Publish, qos: u8, pkid: u16) -> Result<(), Close> {
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            return Err(Close::Protocol("topic is not UTF-8".into()));
        };
        if !self.principal.may_publish(topic) {
            // MQTT 3.1.1 has no negative PUBACK; closing is the allowed response.
            warn!(topic, "publish not authorized, closing");
            return Err(Close::NotAuthorized(topic.to_owned()));
        }
        match &self.peer {
            Peer::Device {
                org_slug,
                device_id,
                ..
            } => {
                // A device may only publish under its own up/ prefix: all of it is uplink.
                let message = UplinkMessage {
                    org_slug: org_slug.clone(),
                    device_id: *device_id,
                    topic: topic.to_owned(),
                    payload: publish.payload.clone(),
                    retain: publish.retain,
                };
                let shared: &'a Shared = self.shared;
                let delivery = shared.uplink.deliver(message);
                let limit = shared.config.uplink_timeout;
                self.held = Some(Held {
                    publish,
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
            Peer::Routed(_) => self.router.send(Packet::Publish(publish, None)).await,
        }
    }

    /// Relays one router notification; returns whether the router asked to be woken.
    fn handle_router(
        &mut self,
        notification: Notification,
        wire: &mut Wire,
    ) -> Result<bool, Close> {
        match notification {
            Notification::Forward(forward) => {
                wire.queue(Packet::Publish(forward.publish, None));
            }
            Notification::DeviceAck(ack) => match Packet::from(ack) {
                Packet::PubAck(ack, _) => {
                    self.inflight.acknowledged(ack.pkid);
                    wire.queue(Packet::PubAck(ack, None));
                }
                Packet::PubRec(ack, _) => {
                    self.inflight.received(ack.pkid);
                    wire.queue(Packet::PubRec(ack, None));
                }
                Packet::PubRel(ack, _) => wire.queue(Packet::PubRel(ack, None)),
                Packet::PubComp(ack, _) => wire.queue(Packet::PubComp(ack, None)),
                Packet::SubAck(ack, _) => match &mut self.peer {
                    Peer::Routed(routed) => routed.merge_suback(ack, wire),
                    Peer::Device { .. } => warn!(
                        pkid = ack.pkid,
                        "SUBACK from router without a pending SUBSCRIBE"
                    ),
                },
                Packet::PingResp(_) => {
                    if let Peer::Routed(routed) = &mut self.peer {
                        routed.unsubscribed(wire);
                    }
                }
                // ConnAck was consumed at link creation; UnsubAck is replaced by ours.
                _ => {}
            },
            Notification::Unschedule => return Ok(true),
            Notification::Disconnect(..) => return Err(Close::RouterGone),
            _ => {}
        }
        Ok(false)
    }
}
