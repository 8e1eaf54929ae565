//! Who is on the other end of a connection, and the subscription state kept for it.
//!
//! A device's subscriptions and its server-to-device QoS 1 state stay in the connection task
//! ([`DeviceDownlink`]): the router never sees a device's SUBSCRIBE (see `crate::downlink`).
//! Everyone else (operators, anonymous sandbox clients) has a session in the router
//! ([`RoutedSession`]): its subscriptions are in the router's tree and what they match waits
//! in the session's mailbox.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use fleetmq_protocol::topic::matches;
use fleetmq_protocol::{DeviceId, Principal};
use rumqttd::protocol::{
    Packet, PubRel, PubRelReason, Publish, QoS, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
    Unsubscribe,
};
use tracing::{debug, info};

use super::framing::{Wire, packet_name};
use super::{Close, MAX_BATCH};
use crate::downlink::{Downlink, DownlinkQueue, Downlinks, Filters};
use crate::router::{Mailbox, Router};

/// Server-to-device QoS 1 messages a device may leave unacknowledged; further downlink
/// waits in its queue (`DOWNLINK_QUEUE`, then dropped by `BrokerHandle::publish`).
const MAX_DOWNLINK_INFLIGHT: usize = 100;
/// Downlink kept for a device that has not subscribed yet on its connection.
const MAX_EARLY_DOWNLINK: usize = 64;

/// The peer of a connection, by how its traffic is served.
pub(super) enum Peer {
    /// A device: what it publishes (all under its own `up/`) goes to the uplink, its
    /// subscriptions and downlink are served by this task, never by the router.
    Device {
        /// The device's organization.
        org_slug: String,
        /// The device.
        device_id: DeviceId,
        /// This connection's registration in [`Downlinks`].
        generation: u64,
        /// Its subscriptions and QoS 1 state.
        downlink: DeviceDownlink,
    },
    /// An operator or an anonymous sandbox client: the router serves its subscriptions.
    Routed(RoutedSession),
}

/// A device's downlink queue, fed by `BrokerHandle::publish`.
pub(super) type DownlinkRx = Arc<DownlinkQueue>;

impl Peer {
    /// A device's peer. Its downlink is registered here, before `Connected` is reported,
    /// so that what the bridge resends on it finds this connection; it starts with the
    /// subscriptions its persistent session kept. Also returns whether such a session was
    /// present (CONNACK).
    pub(super) fn device(
        downlinks: &Downlinks,
        org_slug: &str,
        device_id: DeviceId,
        clean_session: bool,
    ) -> (Peer, DownlinkRx, bool) {
        let (downlink_rx, generation) = downlinks.register(device_id);
        let (filters, present) = downlinks.restore(device_id, clean_session);
        let downlink = DeviceDownlink {
            filters,
            ..DeviceDownlink::default()
        };
        let peer = Peer::Device {
            org_slug: org_slug.to_owned(),
            device_id,
            generation,
            downlink,
        };
        (peer, downlink_rx, present)
    }

    /// The peer of a session the router serves.
    pub(super) fn routed(mailbox: Arc<Mailbox>) -> Peer {
        Peer::Routed(RoutedSession { mailbox })
    }

    /// The mailbox of a routed session.
    pub(super) fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            Peer::Routed(routed) => Some(&routed.mailbox),
            Peer::Device { .. } => None,
        }
    }

    /// The connection ended: a device's downlink registration goes (unacknowledged downlink
    /// is dropped with the connection, clean-session semantics) and a persistent session's
    /// subscriptions are kept for its next connection.
    pub(super) fn close(&mut self, downlinks: &Downlinks, clean_session: bool) {
        if let Peer::Device {
            device_id,
            generation,
            downlink,
            ..
        } = self
        {
            downlinks.remove(*device_id, *generation);
            if !clean_session {
                downlinks.keep(*device_id, std::mem::take(&mut downlink.filters));
            }
        }
    }

    /// Whether the task should take the next downlink message now.
    pub(super) fn can_take_downlink(&self) -> bool {
        match self {
            Peer::Device { downlink, .. } => downlink.can_take(),
            Peer::Routed(_) => false,
        }
    }
}

/// A device's subscriptions and server-to-device QoS 1 state, kept in the front end: the
/// router never sees a device's SUBSCRIBE, so it never sends the device anything and the
/// packet-id space towards the device is ours.
#[derive(Default)]
pub(super) struct DeviceDownlink {
    /// Filter (as subscribed) and granted QoS (at most 1).
    filters: Filters,
    /// Packet ids sent at QoS 1 and not yet acknowledged: at most
    /// [`MAX_DOWNLINK_INFLIGHT`], so a list (a set is 24 more bytes in every device's state).
    inflight: Vec<u16>,
    last_pkid: u16,
    /// Whether the device has sent a SUBSCRIBE on this connection.
    subscribed: bool,
    /// Downlink that arrived after CONNACK but before the device's first SUBSCRIBE (a
    /// command the bridge resends on connect races the device's subscription); matched
    /// again once the device subscribes, at most [`MAX_EARLY_DOWNLINK`] of them.
    early: Vec<Downlink>,
}

impl DeviceDownlink {
    fn can_take(&self) -> bool {
        self.inflight.len() < MAX_DOWNLINK_INFLIGHT
    }

    /// Writes `first` and what else is queued (up to a batch, within the in-flight cap).
    pub(super) fn deliver(
        &mut self,
        first: Box<Downlink>,
        wire: &mut Wire,
        downlink_rx: &mut Option<DownlinkRx>,
    ) {
        let mut next = Some(first);
        for _ in 0..MAX_BATCH {
            let Some(message) = next.take().map(|boxed| *boxed) else {
                break;
            };
            let kept = (!self.subscribed).then(|| message.clone());
            match (self.publish(message), kept) {
                (Some(publish), _) => wire.queue(Packet::Publish(publish, None)),
                (None, Some(kept)) if self.early.len() < MAX_EARLY_DOWNLINK => {
                    self.early.push(kept);
                }
                (None, _) => debug!("downlink message matches no subscription, dropped"),
            }
            if !self.can_take() {
                break;
            }
            next = downlink_rx.as_ref().and_then(|rx| rx.try_recv());
        }
    }

    /// Handles what a device sends besides PUBLISH, PINGREQ, PUBREL and DISCONNECT. The
    /// router never sends a device anything: acknowledgements of server-to-device messages
    /// are ours.
    pub(super) fn on_client(
        &mut self,
        principal: &Principal,
        packet: Packet,
        wire: &mut Wire,
    ) -> Result<(), Close> {
        match packet {
            Packet::Subscribe(subscribe, _) => {
                let suback = self.subscribe(principal, subscribe);
                wire.queue(Packet::SubAck(suback, None));
                if !self.subscribed {
                    self.subscribed = true;
                    // What came before the first subscription gets its chance now.
                    for message in std::mem::take(&mut self.early) {
                        match self.publish(message) {
                            Some(publish) => wire.queue(Packet::Publish(publish, None)),
                            None => debug!("early downlink matches no subscription, dropped"),
                        }
                    }
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                wire.queue(Packet::UnsubAck(self.unsubscribe(unsubscribe), None));
                Ok(())
            }
            Packet::PubAck(ack, _) => {
                match self.inflight.iter().position(|id| *id == ack.pkid) {
                    Some(at) => {
                        self.inflight.swap_remove(at);
                    }
                    None => debug!(pkid = ack.pkid, "PUBACK for nothing in flight, ignored"),
                }
                Ok(())
            }
            Packet::PubRec(..) | Packet::PubComp(..) => {
                debug!("QoS 2 acknowledgement from a device for nothing sent, ignored");
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The QoS to deliver `topic` at: the highest granted QoS among matching filters.
    fn qos_for(&self, topic: &str) -> Option<QoS> {
        self.filters
            .iter()
            .filter(|(filter, _)| matches(inner_filter(filter), topic))
            .map(|(_, qos)| *qos)
            .max_by_key(|qos| *qos as u8)
    }

    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains(&self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// Encodes a downlink message as a PUBLISH (QoS 1 ones are kept in flight); `None` if
    /// no subscription matches.
    fn publish(&mut self, message: Downlink) -> Option<Publish> {
        let topic = std::str::from_utf8(&message.topic).ok()?;
        let qos = self.qos_for(topic)?;
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => {
                let pkid = self.next_pkid();
                self.inflight.push(pkid);
                pkid
            }
        };
        // rumqttd keeps `Publish.qos`/`pkid` private; its own serialization sets them.
        let mut raw = BytesMut::with_capacity(5 + message.topic.len() + message.payload.len());
        raw.put_u8(0b0011_0000 | ((qos as u8) << 1));
        raw.put_u16(pkid);
        raw.put_u16(u16::try_from(message.topic.len()).ok()?);
        raw.extend_from_slice(&message.topic);
        raw.extend_from_slice(&message.payload);
        Some(Publish::deserialize(raw.freeze()))
    }

    fn subscribe(&mut self, principal: &Principal, subscribe: Subscribe) -> SubAck {
        let return_codes = subscribe
            .filters
            .into_iter()
            .map(|filter| {
                if !principal.may_subscribe(&filter.path) {
                    info!(filter = filter.path, "subscription refused");
                    return SubscribeReasonCode::Failure;
                }
                let granted = match filter.qos {
                    QoS::AtMostOnce => QoS::AtMostOnce,
                    _ => QoS::AtLeastOnce,
                };
                // A subscription to an existing filter replaces it (MQTT 3.1.1 §3.8.4).
                match self.filters.iter_mut().find(|(f, _)| *f == filter.path) {
                    Some(existing) => existing.1 = granted,
                    None => self.filters.push((filter.path, granted)),
                }
                SubscribeReasonCode::Success(granted)
            })
            .collect();
        // Kept for the connection's life: no spare slots (a device subscribes once or twice).
        self.filters.shrink_to_fit();
        SubAck {
            pkid: subscribe.pkid,
            return_codes,
        }
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> UnsubAck {
        self.filters
            .retain(|(f, _)| !unsubscribe.filters.contains(f));
        UnsubAck {
            pkid: unsubscribe.pkid,
            reasons: Vec::new(),
        }
    }
}

/// The filter a subscription matches with: `$share/{group}/{filter}` → `{filter}`.
fn inner_filter(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, inner)| inner)
}

/// A routed client's session: its mailbox in the router.
pub(super) struct RoutedSession {
    pub(super) mailbox: Arc<Mailbox>,
}

impl RoutedSession {
    /// Handles what a routed client sends besides PUBLISH, PINGREQ, PUBREL and DISCONNECT.
    pub(super) fn on_client(
        &mut self,
        principal: &Principal,
        packet: Packet,
        wire: &mut Wire,
        router: &Router,
    ) -> Result<(), Close> {
        match packet {
            Packet::Subscribe(subscribe, _) => {
                let mut granted = Vec::with_capacity(subscribe.filters.len());
                let return_codes = subscribe
                    .filters
                    .into_iter()
                    .map(|filter| {
                        if !principal.may_subscribe(&filter.path) {
                            info!(filter = filter.path, "subscription refused");
                            return SubscribeReasonCode::Failure;
                        }
                        let qos = filter.qos;
                        granted.push((filter.path, qos as u8));
                        SubscribeReasonCode::Success(qos)
                    })
                    .collect();
                // The SUBACK goes before the retained messages the subscription replays.
                let suback = SubAck {
                    pkid: subscribe.pkid,
                    return_codes,
                };
                wire.queue(Packet::SubAck(suback, None));
                router.subscribe(&self.mailbox, &granted);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                router.unsubscribe(&self.mailbox, &unsubscribe.filters);
                let unsuback = UnsubAck {
                    pkid: unsubscribe.pkid,
                    reasons: Vec::new(),
                };
                wire.queue(Packet::UnsubAck(unsuback, None));
                Ok(())
            }
            Packet::PubAck(ack, _) => {
                if !self.mailbox.acknowledged(ack.pkid, &router.journal) {
                    debug!(pkid = ack.pkid, "PUBACK for nothing in flight, ignored");
                }
                Ok(())
            }
            Packet::PubRec(ack, _) => {
                if !self.mailbox.received(ack.pkid) {
                    debug!(pkid = ack.pkid, "PUBREC for nothing in flight");
                }
                let pubrel = PubRel {
                    pkid: ack.pkid,
                    reason: PubRelReason::Success,
                };
                wire.queue(Packet::PubRel(pubrel, None));
                Ok(())
            }
            Packet::PubComp(ack, _) => {
                if !self.mailbox.completed(ack.pkid, &router.journal) {
                    debug!(pkid = ack.pkid, "PUBCOMP for nothing in flight, ignored");
                }
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(packet: &Packet) -> Close {
    Close::Protocol(format!(
        "unexpected packet from client: {}",
        packet_name(packet)
    ))
}
