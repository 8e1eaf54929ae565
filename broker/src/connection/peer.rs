//! Who is on the other end of a connection, and the subscription state kept for it.
//!
//! A device's subscriptions and its server-to-device QoS 1 state stay in the connection task
//! ([`DeviceDownlink`]): the router never sees a device's SUBSCRIBE (see `crate::downlink`).
//! Everyone else (operators, anonymous sandbox clients) has a session in the router
//! ([`RoutedSession`]): its subscriptions are in the router's tree and what they match waits
//! in the session's mailbox.

use std::sync::Arc;

use fleetmq_protocol::topic::{is_valid_filter, matches};
use fleetmq_protocol::{DeviceId, Principal};
use rumqttd::protocol::{
    Packet, PubRecReason, QoS, RetainForwardRule, Subscribe, SubscribeProperties,
};
use tracing::{debug, info};

use super::framing::{PUBREL, Wire, packet_name};
use super::mqtt5::{MAX_VARIABLE_INT, reason};
use super::{Close, MAX_BATCH};
use crate::downlink::{Downlink, DownlinkQueue, Downlinks, Filters};
use crate::router::{Mailbox, Message, Options, Router, Subscription};

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
    /// subscriptions its persistent session kept (unless `clean_start`). Also returns
    /// whether such a session was present (CONNACK). `receive_maximum` is how many QoS 1
    /// messages the device accepts unacknowledged (MQTT 5).
    pub(super) fn device(
        downlinks: &Downlinks,
        org_slug: &str,
        device_id: DeviceId,
        clean_start: bool,
        receive_maximum: usize,
    ) -> (Peer, DownlinkRx, bool) {
        let (downlink_rx, generation) = downlinks.register(device_id);
        let (filters, present) = downlinks.restore(device_id, clean_start);
        let downlink = DeviceDownlink {
            filters,
            window: MAX_DOWNLINK_INFLIGHT.min(receive_maximum.max(1)),
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
    pub(super) fn close(&mut self, downlinks: &Downlinks, persistent: bool) {
        if let Peer::Device {
            device_id,
            generation,
            downlink,
            ..
        } = self
        {
            downlinks.remove(*device_id, *generation);
            if persistent {
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
    /// Packet ids sent at QoS 1 and not yet acknowledged: at most `window`, so a list (a
    /// set is 24 more bytes in every device's state).
    inflight: Vec<u16>,
    /// [`MAX_DOWNLINK_INFLIGHT`], or fewer if an MQTT 5 device's receive maximum says so.
    window: usize,
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
        self.inflight.len() < self.window
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
            match (self.publish(message, wire), kept) {
                (true, _) => {}
                (false, Some(kept)) if self.early.len() < MAX_EARLY_DOWNLINK => {
                    self.early.push(kept);
                }
                (false, _) => debug!("downlink message matches no subscription, dropped"),
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
                let codes = self.subscribe(principal, &subscribe);
                wire.queue_suback(subscribe.pkid, &codes);
                if !self.subscribed {
                    self.subscribed = true;
                    // What came before the first subscription gets its chance now.
                    for message in std::mem::take(&mut self.early) {
                        if !self.publish(message, wire) {
                            debug!("early downlink matches no subscription, dropped");
                        }
                    }
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                let subscribed: Vec<bool> = unsubscribe
                    .filters
                    .iter()
                    .map(|f| self.filters.iter().any(|(kept, _)| kept == f))
                    .collect();
                self.filters
                    .retain(|(f, _)| !unsubscribe.filters.contains(f));
                wire.queue_unsuback(unsubscribe.pkid, &subscribed);
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

    /// Writes a downlink message as a PUBLISH (QoS 1 ones are kept in flight); `false` if
    /// no subscription matches. One larger than an MQTT 5 device accepts is dropped.
    fn publish(&mut self, message: Downlink, wire: &mut Wire) -> bool {
        let Some(qos) = std::str::from_utf8(&message.topic)
            .ok()
            .and_then(|topic| self.qos_for(topic))
        else {
            return false;
        };
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => self.next_pkid(),
        };
        let message = Message {
            topic: message.topic,
            payload: message.payload,
            qos: qos as u8,
            retain: false,
            properties: message.properties,
        };
        if !wire.queue_publish(&message, pkid, false, None) {
            debug!(
                topic = message.topic_str(),
                "downlink larger than the device's maximum packet size, dropped"
            );
            return true;
        }
        if pkid != 0 {
            self.inflight.push(pkid);
        }
        true
    }

    /// SUBACK codes for a device's SUBSCRIBE: at most QoS 1 is granted; a filter its ACL
    /// refuses gets a failure.
    fn subscribe(&mut self, principal: &Principal, subscribe: &Subscribe) -> Vec<u8> {
        let codes = subscribe
            .filters
            .iter()
            .map(|filter| {
                if !principal.may_subscribe(&filter.path) {
                    info!(filter = filter.path, "subscription refused");
                    return refusal(&filter.path);
                }
                let granted = match filter.qos {
                    QoS::AtMostOnce => QoS::AtMostOnce,
                    _ => QoS::AtLeastOnce,
                };
                // A subscription to an existing filter replaces it (MQTT 3.1.1 §3.8.4).
                match self.filters.iter_mut().find(|(f, _)| *f == filter.path) {
                    Some(existing) => existing.1 = granted,
                    None => self.filters.push((filter.path.clone(), granted)),
                }
                granted as u8
            })
            .collect();
        // Kept for the connection's life: no spare slots (a device subscribes once or twice).
        self.filters.shrink_to_fit();
        codes
    }
}

/// The SUBACK failure code for a filter that was refused: MQTT 5 tells a filter that is not
/// valid (0x8F) from one not authorized (0x87); MQTT 3.1.1 clients get 0x80 for both.
fn refusal(filter: &str) -> u8 {
    if is_valid_filter(filter) {
        reason::NOT_AUTHORIZED
    } else {
        reason::TOPIC_FILTER_INVALID
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
            Packet::Subscribe(subscribe, properties) => {
                let (codes, granted) = routed_subscription(principal, &subscribe, properties)?;
                // The SUBACK goes before the retained messages the subscription replays.
                wire.queue_suback(subscribe.pkid, &codes);
                router.subscribe(&self.mailbox, &granted);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                let subscribed = router.unsubscribe(&self.mailbox, &unsubscribe.filters);
                wire.queue_unsuback(unsubscribe.pkid, &subscribed);
                Ok(())
            }
            Packet::PubAck(ack, _) => {
                if !self.mailbox.acknowledged(ack.pkid, &router.journal) {
                    debug!(pkid = ack.pkid, "PUBACK for nothing in flight, ignored");
                }
                Ok(())
            }
            Packet::PubRec(ack, _) => {
                let accepted = matches!(
                    ack.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                );
                if !accepted {
                    // An MQTT 5 client refused the message: the exchange ends, no PUBREL.
                    debug!(pkid = ack.pkid, reason = ?ack.reason, "PUBREC with a failure");
                    self.mailbox.refused(ack.pkid, &router.journal);
                    return Ok(());
                }
                let code = if self.mailbox.received(ack.pkid) {
                    reason::SUCCESS
                } else {
                    debug!(pkid = ack.pkid, "PUBREC for nothing in flight");
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                wire.queue_ack(PUBREL, ack.pkid, code, None);
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

/// SUBACK codes and the subscriptions granted for a routed client's SUBSCRIBE, with its
/// MQTT 5 options and subscription identifier; `Err` for what MQTT 5 calls a protocol error.
fn routed_subscription(
    principal: &Principal,
    subscribe: &Subscribe,
    properties: Option<SubscribeProperties>,
) -> Result<(Vec<u8>, Vec<Subscription>), Close> {
    let id = match properties.and_then(|p| p.id) {
        None => 0,
        Some(id @ 1..) if id <= MAX_VARIABLE_INT as usize => id as u32,
        Some(id) => {
            return Err(Close::Protocol(format!("subscription identifier {id}")));
        }
    };
    let mut granted = Vec::with_capacity(subscribe.filters.len());
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    for filter in &subscribe.filters {
        // MQTT-3.8.3-4: no local on a shared subscription is a protocol error.
        if filter.nolocal && filter.path.starts_with("$share/") {
            return Err(Close::Protocol("no local on a shared subscription".into()));
        }
        if !principal.may_subscribe(&filter.path) {
            info!(filter = filter.path, "subscription refused");
            codes.push(refusal(&filter.path));
            continue;
        }
        let qos = filter.qos as u8;
        granted.push(Subscription {
            filter: filter.path.clone(),
            qos,
            options: Options {
                no_local: filter.nolocal,
                retain_as_published: filter.preserve_retain,
                retain_handling: match filter.retain_forward_rule {
                    RetainForwardRule::OnEverySubscribe => 0,
                    RetainForwardRule::OnNewSubscribe => 1,
                    RetainForwardRule::Never => 2,
                },
                id,
            },
        });
        codes.push(qos);
    }
    Ok((codes, granted))
}

fn unexpected(packet: &Packet) -> Close {
    Close::Protocol(format!(
        "unexpected packet from client: {}",
        packet_name(packet)
    ))
}
