//! Who is on the other end of a connection, and the subscription state kept for it.
//!
//! A device's subscriptions and its server-to-device QoS 1 state stay in the connection task
//! ([`DeviceDownlink`]): the router never sees a device's SUBSCRIBE (see `crate::downlink`).
//! Everyone else (operators, anonymous sandbox clients) subscribes through the router, and
//! the task only merges the router's answers with its own refusals ([`RoutedSubscriptions`]).

use std::collections::{HashSet, VecDeque};

use bytes::{BufMut, BytesMut};
use fleetmq_protocol::topic::matches;
use fleetmq_protocol::{DeviceId, Principal};
use rumqttd::protocol::{
    Packet, PingReq, Publish, QoS, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::framing::{Wire, packet_name};
use super::relay::RouterLink;
use super::{Close, MAX_BATCH};
use crate::downlink::{DOWNLINK_QUEUE, Downlink, Downlinks, Filters};

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
    Routed(RoutedSubscriptions),
}

/// A device's downlink queue, fed by `BrokerHandle::publish`.
pub(super) type DownlinkRx = mpsc::Receiver<Box<Downlink>>;

impl Peer {
    /// The peer `principal` is. A device's downlink is registered here, before `Connected`
    /// is reported, so that what the bridge resends on it finds this connection; it starts
    /// with the subscriptions its persistent session kept.
    pub(super) fn open(
        downlinks: &Downlinks,
        principal: &Principal,
        clean_session: bool,
    ) -> (Peer, Option<DownlinkRx>) {
        match principal {
            Principal::Device {
                org_slug,
                device_id,
            } => {
                let (downlink_tx, downlink_rx) = mpsc::channel(DOWNLINK_QUEUE);
                let generation = downlinks.register(*device_id, downlink_tx);
                let downlink = DeviceDownlink {
                    filters: downlinks.restore(*device_id, clean_session),
                    ..DeviceDownlink::default()
                };
                let peer = Peer::Device {
                    org_slug: org_slug.clone(),
                    device_id: *device_id,
                    generation,
                    downlink,
                };
                (peer, Some(downlink_rx))
            }
            Principal::Operator { .. } | Principal::Anonymous => {
                (Peer::Routed(RoutedSubscriptions::default()), None)
            }
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
    /// Packet ids sent at QoS 1 and not yet acknowledged.
    inflight: HashSet<u16>,
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
            next = downlink_rx.as_mut().and_then(|rx| rx.try_recv().ok());
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
                if !self.inflight.remove(&ack.pkid) {
                    debug!(pkid = ack.pkid, "PUBACK for nothing in flight, ignored");
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
                self.inflight.insert(pkid);
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

/// A SUBSCRIBE whose allowed filters went to the router; refused ones already have 0x80.
struct PendingSubAck {
    pkid: u16,
    codes: Vec<Option<SubscribeReasonCode>>,
}

/// What a routed client's SUBSCRIBE and UNSUBSCRIBE are waiting for from the router.
#[derive(Default)]
pub(super) struct RoutedSubscriptions {
    pending_subacks: VecDeque<PendingSubAck>,
    /// UNSUBSCRIBEs awaiting our marker (see [`on_client`](Self::on_client)).
    pending_unsubacks: VecDeque<u16>,
}

impl RoutedSubscriptions {
    /// Handles what a routed client sends besides PUBLISH, PINGREQ, PUBREL and DISCONNECT.
    pub(super) async fn on_client(
        &mut self,
        principal: &Principal,
        packet: Packet,
        wire: &mut Wire,
        router: &RouterLink<'_>,
    ) -> Result<(), Close> {
        match packet {
            Packet::Subscribe(subscribe, _) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut allowed = Vec::with_capacity(subscribe.filters.len());
                for filter in subscribe.filters {
                    if principal.may_subscribe(&filter.path) && router_serves(&filter.path) {
                        codes.push(None);
                        allowed.push(filter);
                    } else {
                        info!(filter = filter.path, "subscription refused");
                        codes.push(Some(SubscribeReasonCode::Failure));
                    }
                }
                if allowed.is_empty() {
                    let return_codes = codes.into_iter().flatten().collect();
                    wire.queue(Packet::SubAck(
                        SubAck {
                            pkid: subscribe.pkid,
                            return_codes,
                        },
                        None,
                    ));
                    return Ok(());
                }
                self.pending_subacks.push_back(PendingSubAck {
                    pkid: subscribe.pkid,
                    codes,
                });
                let routed = Subscribe {
                    pkid: subscribe.pkid,
                    filters: allowed,
                };
                router.send(Packet::Subscribe(routed, None)).await
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                // The router only acknowledges filters that were subscribed, once per filter;
                // MQTT wants exactly one UNSUBACK. We answer PINGREQ ourselves, so a PINGRESP
                // from the router can only be the marker queued behind this UNSUBSCRIBE: when
                // it arrives, the router has processed the unsubscription.
                self.pending_unsubacks.push_back(unsubscribe.pkid);
                router.send(Packet::Unsubscribe(unsubscribe, None)).await?;
                router.send(Packet::PingReq(PingReq)).await
            }
            Packet::PubAck(ack, _) => router.send(Packet::PubAck(ack, None)).await,
            Packet::PubRec(ack, _) => router.send(Packet::PubRec(ack, None)).await,
            Packet::PubComp(ack, _) => router.send(Packet::PubComp(ack, None)).await,
            other => Err(unexpected(&other)),
        }
    }

    /// The router processed an UNSUBSCRIBE (its PINGRESP marker arrived): answer UNSUBACK.
    pub(super) fn unsubscribed(&mut self, wire: &mut Wire) {
        if let Some(pkid) = self.pending_unsubacks.pop_front() {
            let unsuback = UnsubAck {
                pkid,
                reasons: Vec::new(),
            };
            wire.queue(Packet::UnsubAck(unsuback, None));
        }
    }

    /// Puts the router's return codes for the allowed filters back between our refusals.
    pub(super) fn merge_suback(&mut self, ack: SubAck, wire: &mut Wire) {
        let Some(index) = self.pending_subacks.iter().position(|p| p.pkid == ack.pkid) else {
            warn!(
                pkid = ack.pkid,
                "SUBACK from router without a pending SUBSCRIBE"
            );
            return;
        };
        let pending = self.pending_subacks.remove(index);
        let mut routed = ack.return_codes.into_iter();
        let return_codes = pending
            .into_iter()
            .flat_map(|p| p.codes)
            .map(|code| {
                code.or_else(|| routed.next())
                    .unwrap_or(SubscribeReasonCode::Failure)
            })
            .collect();
        wire.queue(Packet::SubAck(
            SubAck {
                pkid: ack.pkid,
                return_codes,
            },
            None,
        ));
    }
}

/// rumqttd's router disconnects a client that subscribes to a `$…` filter other than
/// `$share/…`; such filters are refused with 0x80 instead, whatever the ACL says.
fn router_serves(filter: &str) -> bool {
    !filter.starts_with('$') || filter.starts_with("$share/")
}

fn unexpected(packet: &Packet) -> Close {
    Close::Protocol(format!(
        "unexpected packet from client: {}",
        packet_name(packet)
    ))
}
