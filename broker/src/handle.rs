//! In-process access to the broker: server-to-device publishes, in-process subscribers (the
//! bridge), and kicking devices.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetmq_protocol::DeviceId;
use fleetmq_protocol::topic::{is_valid_filter, is_valid_topic_name};
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet, Publish};

use crate::BrokerError;
use crate::auth::Authenticator;
use crate::downlink::{Downlink, Downlinks, Sent, down_topic_device};
use crate::router::{Feeder, LinkFactory, SharedTx};
use crate::session::{Sessions, device_client_id, internal_client_id};

/// How long [`BrokerHandle::link`] waits for the router to confirm its subscriptions.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// State shared by the accept loop, every connection task and every handle.
pub(crate) struct Core {
    pub(crate) links: Arc<LinkFactory>,
    pub(crate) feeder: Feeder,
    pub(crate) sessions: Sessions,
    /// The broker's own link, used for [`BrokerHandle::publish`] and for last wills (a
    /// closing connection's own link may already be gone from the router).
    pub(crate) publisher: SharedTx,
    /// Live device connections, for `down/` messages (served by the front end).
    pub(crate) downlinks: Downlinks,
    /// Who may connect; asked again for live sessions when a login may have been revoked.
    pub(crate) auth: Arc<dyn Authenticator>,
    /// What the front end refused, for `/metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Core {
    /// Publishes on the broker's own link (QoS 0 into the router; subscribers receive it at
    /// their subscription QoS).
    pub(crate) async fn publish(
        &self,
        topic: Bytes,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), BrokerError> {
        let publish = Publish::new(topic, payload, retain);
        self.feeder
            .send_and_wait(&self.publisher, Packet::Publish(publish, None))
            .await
    }
}

/// A cheap-to-clone handle on a running broker for the rest of the server.
#[derive(Clone)]
pub struct BrokerHandle {
    pub(crate) core: Arc<Core>,
}

impl BrokerHandle {
    /// Publishes a server-to-device message (e.g. `down/command/request`).
    ///
    /// A `fleetmq/v1/{org}/{device}/down/…` message goes straight to that device's live
    /// connection, if any, at the QoS of its matching subscription (at most 1); an offline
    /// device misses it (the bridge resends pending commands when it connects), and `retain`
    /// is not replayed to devices. Every message also enters the router at QoS 0, for
    /// operators watching the org (and for retained messages to operators).
    /// See docs/mqtt.md.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), BrokerError> {
        if !is_valid_topic_name(topic) || topic.starts_with('$') {
            return Err(BrokerError::InvalidTopic(topic.to_owned()));
        }
        let payload = payload.into();
        if let Some(device_id) = down_topic_device(topic)? {
            let message = Downlink {
                topic: Bytes::copy_from_slice(topic.as_bytes()),
                payload: payload.clone(),
            };
            match self.core.downlinks.send(device_id, message) {
                Sent::Queued => {}
                Sent::Offline => tracing::debug!(topic, "device offline, downlink not delivered"),
                Sent::Full => tracing::warn!(topic, "device downlink queue full, message dropped"),
            }
        }
        self.core
            .publish(Bytes::copy_from_slice(topic.as_bytes()), payload, retain)
            .await
    }

    /// Opens an in-process subscriber (the bridge uses
    /// [`ALL_UP_FILTER`](fleetmq_protocol::topic::ALL_UP_FILTER)). Returns once the router has
    /// acknowledged every filter, so nothing published afterwards is missed. Delivery is
    /// at-most-once: a subscriber that falls more than the router's log behind skips messages.
    ///
    /// `name` identifies the link (a second link with the same name replaces the first).
    pub async fn link(&self, name: &str, filters: &[&str]) -> Result<LocalLink, BrokerError> {
        for filter in filters {
            if !is_valid_filter(filter)
                || (filter.starts_with('$') && !filter.starts_with("$share/"))
            {
                return Err(BrokerError::InvalidFilter((*filter).to_owned()));
            }
        }
        let factory = Arc::clone(&self.core.links);
        let router_id = internal_client_id(name);
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let (tx, rx, backlog) = tokio::task::spawn_blocking(move || {
            let (mut tx, mut rx, _connack) = factory(&router_id, true)
                .map_err(|e| BrokerError::RouterUnavailable(e.to_string()))?;
            for filter in &filters {
                tx.subscribe(filter.as_str())
                    .map_err(|e| BrokerError::RouterUnavailable(e.to_string()))?;
            }
            // Wait for one SUBACK per filter, keeping anything else (retained messages) for
            // `recv`.
            let deadline = Instant::now() + SUBSCRIBE_WAIT;
            let mut backlog = VecDeque::new();
            let mut acked = 0;
            while acked < filters.len() {
                let notification = rx
                    .recv_deadline(deadline)
                    .map_err(|e| BrokerError::RouterUnavailable(e.to_string()))?;
                match notification {
                    Some(Notification::DeviceAck(ack)) => {
                        if matches!(Packet::from(ack), Packet::SubAck(..)) {
                            acked += 1;
                        }
                    }
                    Some(Notification::Unschedule) => rx
                        .ready()
                        .map_err(|e| BrokerError::RouterUnavailable(e.to_string()))?,
                    Some(other) => backlog.push_back(other),
                    None => {}
                }
            }
            Ok::<_, BrokerError>((tx, rx, backlog))
        })
        .await
        .map_err(|e| BrokerError::RouterUnavailable(e.to_string()))??;
        Ok(LocalLink {
            tx: Arc::new(Mutex::new(tx)),
            rx,
            backlog,
            wake_pending: false,
            feeder: self.core.feeder.clone(),
        })
    }

    /// The front end's counters (sockets and logins refused) with their Prometheus names and
    /// help texts, for the server's `/metrics`.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.core.metrics.snapshot()
    }

    /// Disconnects the device's live MQTT session, if any, publishing its last will (so its
    /// presence turns `offline`). Call it after deactivating a device so that it cannot keep
    /// using a session authenticated before. Returns whether a session was found; returns
    /// once it is closed.
    pub async fn disconnect_device(&self, device_id: DeviceId) -> bool {
        let key = device_client_id(device_id);
        self.core.sessions.kick(&key).await
    }
}

/// A message delivered to an in-process subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// The payload, shared with the router's log (no copy).
    pub payload: Bytes,
    /// A retained message replayed because the link subscribed after it was published
    /// (e.g. every device's last presence when the bridge starts), not a live one.
    pub retain: bool,
}

/// An in-process subscriber created by [`BrokerHandle::link`]. Dropping it leaves the router.
pub struct LocalLink {
    tx: SharedTx,
    rx: LinkRx,
    backlog: VecDeque<Notification>,
    /// An `Unschedule` was received but the wake-up not yet sent (kept across a cancelled
    /// `recv`, or the router would never schedule us again).
    wake_pending: bool,
    feeder: Feeder,
}

impl LocalLink {
    /// The next message. Cancel-safe. Fails only if the router dropped the link.
    pub async fn recv(&mut self) -> Result<Message, BrokerError> {
        loop {
            if self.wake_pending {
                self.rx.wake().await.map_err(|_| BrokerError::LinkClosed)?;
                self.wake_pending = false;
            }
            let notification = match self.backlog.pop_front() {
                Some(n) => n,
                None => match self.rx.next().await {
                    Ok(Some(n)) => n,
                    Ok(None) => continue,
                    Err(_) => return Err(BrokerError::LinkClosed),
                },
            };
            match notification {
                Notification::Forward(forward) => {
                    let publish = forward.publish;
                    return Ok(Message {
                        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                        payload: publish.payload,
                        retain: publish.retain,
                    });
                }
                // The router paused us because our buffer was full; say we have room again
                // or it never schedules us again.
                Notification::Unschedule => self.wake_pending = true,
                Notification::Disconnect(..) => return Err(BrokerError::LinkClosed),
                _ => {}
            }
        }
    }
}

impl Drop for LocalLink {
    fn drop(&mut self) {
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
        };
        self.feeder
            .try_send(&self.tx, Packet::Disconnect(disconnect, None));
    }
}
