//! The bridge on an external MQTT broker (`fleetmq serve --mqtt-broker mqtt://host:port`):
//! one rumqttc client subscribes to every device's `up/` tree and publishes the bridge's
//! `down/` messages, in place of the embedded broker.
//!
//! ```text
//! devices ──▶ external broker ──fleetmq/v1/+/+/up/#──▶ lanes ──▶ Bridge (store) ──▶ PUBACK to the broker
//! Bridge ──publish (QoS 1)──▶ external broker ──▶ devices, operators
//! ```
//!
//! - **Acknowledged means stored, between the broker and fleetmq.** The client uses a
//!   persistent session (clean session 0) and acknowledges each message only once the bridge
//!   has made its effect durable, so a message the broker handed fleetmq is redelivered after a
//!   crash or a lost connection. The *device's* PUBACK comes from the broker, before fleetmq
//!   has stored anything: a message the broker drops (its own queue bounds, a broker crash
//!   without persistence) is lost, which the embedded broker never does (docs/mqtt.md).
//! - **Order per device.** Messages go to one of `lanes` tasks by device, each applying its
//!   messages one after the other, so a device's presence and reports keep their order;
//!   devices in different lanes proceed in parallel. What waits in the lanes is bounded by
//!   the broker's in-flight window for the bridge's session: it sends no more until the
//!   bridge acknowledges (Mosquitto's `max_inflight_messages`, RabbitMQ's `mqtt.prefetch`,
//!   EMQX's `max_inflight`). The event loop never waits on a lane: a lane waiting to send
//!   its acknowledgement through the event loop could otherwise stall both.
//! - **Presence** comes from the devices' own retained `up/presence` messages (`online` when
//!   they connect, `offline` as their last will), not from the broker's connection events:
//!   an ungraceful disconnect is known once the broker fires the will (keep-alive × 1.5).
//!   The retained presence of every device is replayed when the bridge subscribes, which
//!   rebuilds who is online after a restart.
//! - **Trust.** The broker enforces fleetmq's ACL (its auth service, or the generated files
//!   for Mosquitto); the bridge still checks that a topic's device exists, is active and
//!   belongs to the topic's organization, and drops (and counts) what does not.
//! - **Revocation** is the broker's to enforce on live connections: it asks the auth service
//!   before each action. [`MqttPlane::reauthorize`] and
//!   [`MqttPlane::disconnect_device`] have nothing to end here.
//! - **Several nodes share the telemetry** with `--mqtt-shared-uplink`
//!   ([`ExternalBroker::shared_uplink`], for brokers with shared subscriptions: Mosquitto,
//!   EMQX, HiveMQ; not RabbitMQ). Every node, standby or not, has a second client
//!   ([`connect_shared`]) in the share group [`SHARE_GROUP`] on `up/telemetry`, and the broker
//!   hands each sample to one of them, which stores it ([`crate::TelemetryIngest`]). The
//!   device-plane node's client takes the other channels alone: presence, reports and answers
//!   drive its engine and must keep their order per device. Telemetry can go to any node in
//!   any order: a sample carries the time it was measured. The shared clients use clean
//!   sessions: a broker keeps queueing for a persistent member that is gone (Mosquitto and
//!   EMQX do), so a node that died for good would take its share with it. What a node had
//!   received but not stored when it died (at most its in-flight window) is lost; the broker
//!   does not hand it to another member (eclipse-mosquitto/mosquitto#2662).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fleetmq_broker::{Affected, Uplink, UplinkMessage};
use fleetmq_protocol::{DeviceId, Topic, UpChannel};
use fleetmq_store::Store;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::mqtt::{MqttError, MqttPlane, PlaneFuture};

/// Every device's uplink.
pub const UPLINK_FILTER: &str = "fleetmq/v1/+/+/up/#";

/// The share group of the nodes' telemetry clients (`$share/fleetmq/…`).
pub const SHARE_GROUP: &str = "fleetmq";

/// The channels the nodes share (see the module's documentation).
const SHARED_CHANNELS: [UpChannel; 1] = [UpChannel::Telemetry];

/// What the device-plane node's client subscribes to: the whole uplink, or with a shared
/// uplink every channel but the shared ones.
fn exclusive_filters(shared_uplink: bool) -> Vec<String> {
    if !shared_uplink {
        return vec![UPLINK_FILTER.to_owned()];
    }
    UpChannel::ALL
        .into_iter()
        .filter(|channel| !SHARED_CHANNELS.contains(channel))
        .map(|channel| format!("fleetmq/v1/+/+/up/{}", channel.as_str()))
        .collect()
}

/// What every node's telemetry client subscribes to.
fn shared_filters() -> Vec<String> {
    SHARED_CHANNELS
        .iter()
        .map(|channel| {
            format!(
                "$share/{SHARE_GROUP}/fleetmq/v1/+/+/up/{}",
                channel.as_str()
            )
        })
        .collect()
}

/// How the bridge reaches the external broker.
#[derive(Debug, Clone)]
pub struct ExternalBroker {
    /// `mqtt://host:port` or `mqtts://host:port` (rumqttc's URL form; `?client_id=` optional).
    pub url: String,
    /// The bridge's client id; its persistent session lives on the broker under it.
    pub client_id: String,
    /// The bridge's username and password on the broker.
    pub credentials: Option<(String, String)>,
    /// For `mqtts://`: the CA that signed the broker's certificate (PEM), and the bridge's
    /// own certificate and key (PEM) if the broker asks for one.
    pub tls: Option<ExternalTls>,
    /// Tasks applying device messages in parallel (one device always in the same one).
    pub lanes: usize,
    /// Unacknowledged messages the broker may send the bridge at once.
    pub inflight: u16,
    /// Largest packet accepted or sent.
    pub max_packet_size: usize,
    /// Nodes share the devices' telemetry through a shared subscription (see the module's
    /// documentation); the broker must support `$share/`.
    pub shared_uplink: bool,
}

/// TLS material for `mqtts://`.
#[derive(Debug, Clone)]
pub struct ExternalTls {
    /// The CA certificate(s), PEM.
    pub ca: Vec<u8>,
    /// The bridge's certificate chain and key, PEM.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl ExternalBroker {
    /// `url` with the defaults: client id `fleetmq-bridge`, 256 lanes (as many as a
    /// 256-message in-flight window holds), 256 in flight, 1 MiB packets.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_id: "fleetmq-bridge".to_owned(),
            credentials: None,
            tls: None,
            lanes: 256,
            inflight: 256,
            max_packet_size: 1024 * 1024,
            shared_uplink: false,
        }
    }

    fn options(&self, role: Role) -> Result<MqttOptions, MqttError> {
        let (tls, host, port) = parse_url(&self.url).ok_or_else(|| {
            MqttError(format!(
                "--mqtt-broker {}: expected mqtt://host:port or mqtts://host:port",
                self.url
            ))
        })?;
        if tls && self.tls.is_none() {
            return Err(MqttError(format!(
                "--mqtt-broker {}: mqtts:// needs the broker's CA (--mqtt-broker-ca)",
                self.url
            )));
        }
        // The device-plane client's session outlives its connections (and node); a shared
        // member's is its own and ends with it (see the module's documentation).
        let (client_id, persistent) = match role {
            Role::DevicePlane => (self.client_id.clone(), true),
            Role::Shared => {
                let node = uuid::Uuid::new_v4().simple().to_string();
                (format!("{}-{}", self.client_id, &node[..8]), false)
            }
        };
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_clean_session(!persistent)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(self.inflight.max(1))
            .set_max_packet_size(self.max_packet_size, self.max_packet_size);
        if let Some((username, password)) = &self.credentials {
            options.set_credentials(username, password);
        }
        if let Some(tls) = &self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: tls.ca.clone(),
                    alpn: None,
                    client_auth: tls.client_auth.clone(),
                },
            ));
        }
        Ok(options)
    }
}

/// `(tls, host, port)` of `mqtt://host[:1883]`, `tcp://…`, `mqtts://host[:8883]` or
/// `ssl://…` (IPv6 hosts in brackets).
pub fn parse_url(url: &str) -> Option<(bool, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        _ => return None,
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().ok()?),
                None if after.is_empty() => (host, default_port),
                None => return None,
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, default_port),
        },
    };
    (!host.is_empty()).then(|| (tls, host.to_owned(), port))
}

/// Which of a node's clients of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The device-plane node's: the uplink (or its unshared channels) and every publish.
    DevicePlane,
    /// A member of the share group: this node's share of the telemetry.
    Shared,
}

/// The plane over the external broker; what [`crate::Mqtt`] wraps in external mode.
pub struct ExternalPlane {
    client: AsyncClient,
    counters: Arc<Counters>,
    role: Role,
}

#[derive(Default)]
struct Counters {
    connected: AtomicBool,
    received: AtomicU64,
    stored: AtomicU64,
    dropped: AtomicU64,
    connection_errors: AtomicU64,
    published: AtomicU64,
}

impl ExternalPlane {
    /// Whether the client is connected to the broker and subscribed to the uplink now.
    pub fn is_connected(&self) -> bool {
        self.counters.connected.load(Ordering::Relaxed)
    }
}

impl MqttPlane for ExternalPlane {
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> PlaneFuture<'_, Result<(), MqttError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            self.client
                .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| MqttError(format!("external broker: {e}")))?;
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    fn reauthorize(&self, _affected: Affected) -> PlaneFuture<'_, usize> {
        Box::pin(std::future::ready(0))
    }

    fn disconnect_device(&self, _device: DeviceId) -> PlaneFuture<'_, bool> {
        Box::pin(std::future::ready(false))
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let values = [
            u64::from(c.connected.load(Ordering::Relaxed)),
            load(&c.received),
            load(&c.stored),
            load(&c.dropped),
            load(&c.connection_errors),
            load(&c.published),
        ];
        let names = match self.role {
            Role::DevicePlane => &DEVICE_PLANE_METRICS,
            Role::Shared => &SHARED_METRICS,
        };
        names
            .iter()
            .zip(values)
            .map(|(&(name, help), value)| (name, help, value))
            .collect()
    }
}

/// The device-plane client's counters, in [`ExternalPlane::metrics`]' order.
const DEVICE_PLANE_METRICS: [(&str, &str); 6] = [
    (
        "fleetmq_external_broker_connected",
        "1 while the bridge is connected to the external MQTT broker and subscribed to the device uplink.",
    ),
    (
        "fleetmq_external_uplink_received_total",
        "Device messages the external broker delivered to the bridge.",
    ),
    (
        "fleetmq_external_uplink_stored_total",
        "Device messages applied (or answered on down/error) and acknowledged to the broker.",
    ),
    (
        "fleetmq_external_uplink_dropped_total",
        "Device messages dropped: topic of no active device of that organization.",
    ),
    (
        "fleetmq_external_connection_errors_total",
        "Connection errors with the external broker (each followed by a reconnect).",
    ),
    (
        "fleetmq_external_published_total",
        "Messages the bridge handed the external broker.",
    ),
];

/// The shared telemetry client's counters (`--mqtt-shared-uplink`), in the same order.
const SHARED_METRICS: [(&str, &str); 6] = [
    (
        "fleetmq_shared_uplink_connected",
        "1 while this node's telemetry client is connected to the external broker and in the share group.",
    ),
    (
        "fleetmq_shared_uplink_received_total",
        "Telemetry samples the broker handed this node through the shared subscription.",
    ),
    (
        "fleetmq_shared_uplink_stored_total",
        "Shared telemetry samples stored (or answered on down/error) and acknowledged to the broker.",
    ),
    (
        "fleetmq_shared_uplink_dropped_total",
        "Shared telemetry samples dropped: topic of no active device of that organization.",
    ),
    (
        "fleetmq_shared_uplink_connection_errors_total",
        "Connection errors of this node's telemetry client (each followed by a reconnect).",
    ),
    (
        "fleetmq_shared_uplink_published_total",
        "Messages this node's telemetry client published (answers on down/error).",
    ),
];

/// Connects the device-plane client (lazily: rumqttc connects on its first poll) and returns
/// the plane to start the bridge with; [`run`] then serves the uplink.
pub fn connect(config: &ExternalBroker) -> Result<(ExternalPlane, Connection), MqttError> {
    connect_as(config, Role::DevicePlane)
}

/// Connects this node's member of the telemetry share group (`--mqtt-shared-uplink`); [`run`]
/// serves it with a [`crate::TelemetryIngest`] on the returned plane.
pub fn connect_shared(config: &ExternalBroker) -> Result<(ExternalPlane, Connection), MqttError> {
    connect_as(config, Role::Shared)
}

fn connect_as(
    config: &ExternalBroker,
    role: Role,
) -> Result<(ExternalPlane, Connection), MqttError> {
    let options = config.options(role)?;
    // Room for an acknowledgement of everything the broker may have in flight, plus the
    // bridge's own publishes; a full channel only makes a publisher or a lane wait.
    let (client, events) = AsyncClient::new(options, usize::from(config.inflight.max(1)) + 256);
    let counters = Arc::new(Counters::default());
    let filters = match role {
        Role::DevicePlane => exclusive_filters(config.shared_uplink),
        Role::Shared => shared_filters(),
    };
    Ok((
        ExternalPlane {
            client: client.clone(),
            counters: Arc::clone(&counters),
            role,
        },
        Connection {
            client,
            events,
            counters,
            lanes: config.lanes.max(1),
            filters,
        },
    ))
}

/// A client's event loop, not yet running.
pub struct Connection {
    client: AsyncClient,
    events: EventLoop,
    counters: Arc<Counters>,
    lanes: usize,
    /// What it subscribes to at each connect.
    filters: Vec<String>,
}

/// Serves a client's uplink until `shutdown`: reads the broker, feeds the lanes, which hand
/// each message of an active device of `store` to `uplink` (the bridge, or a node's
/// telemetry ingest); reconnects after errors (backing off up to 5 s).
pub fn run(
    connection: Connection,
    uplink: Arc<dyn Uplink>,
    store: Store,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Connection {
            client,
            mut events,
            counters,
            lanes,
            filters,
        } = connection;
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = JoinSet::new();
        for _ in 0..lanes {
            // Unbounded here, bounded by the broker's in-flight window (see above).
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            workers.spawn(lane(
                rx,
                Arc::clone(&uplink),
                store.clone(),
                client.clone(),
                Arc::clone(&counters),
            ));
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = events.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        session_present = ack.session_present,
                        "connected to the external MQTT broker"
                    );
                    // Sent by this loop's next polls; queued from another task, so this loop
                    // never waits on its own request channel.
                    let (client, filters) = (client.clone(), filters.clone());
                    tokio::spawn(async move {
                        let filters = filters
                            .into_iter()
                            .map(|filter| SubscribeFilter::new(filter, QoS::AtLeastOnce));
                        if let Err(e) = client.subscribe_many(filters).await {
                            tracing::error!(error = %e, "cannot subscribe to the device uplink");
                        }
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    // Up once the uplink is subscribed: nothing devices send is missed.
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    counters.connected.store(!refused, Ordering::Relaxed);
                    if refused {
                        tracing::error!(
                            ?filters,
                            "the external broker refused the bridge's subscription: check its ACL for the bridge's user"
                        );
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let lane = lane_of(&publish.topic, lanes);
                    if senders[lane].send(publish).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    counters.connected.store(false, Ordering::Relaxed);
                    counters.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff, "external MQTT broker connection failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        counters.connected.store(false, Ordering::Relaxed);
        drop(senders);
        drain(events, workers, &client).await;
    })
}

/// How long a stopping bridge lets its lanes finish what they hold.
const DRAIN: Duration = Duration::from_secs(5);

/// Lets the lanes store and acknowledge what they hold, then disconnects, within [`DRAIN`].
/// The event loop keeps running meanwhile: a lane's acknowledgement waits in the client's
/// request channel, which only the event loop empties, so without it a stopping bridge with
/// a backlog would wait for ever. Messages arriving now are not taken (no lane is left); they
/// stay unacknowledged and the broker redelivers them to the next session, as it does
/// whatever the lanes have not finished when the time is up (those lanes are aborted).
async fn drain(mut events: EventLoop, mut workers: JoinSet<()>, client: &AsyncClient) {
    let deadline = tokio::time::sleep(DRAIN);
    tokio::pin!(deadline);
    let mut polling = true;
    while !workers.is_empty() {
        tokio::select! {
            () = &mut deadline => {
                tracing::warn!(
                    lanes = workers.len(),
                    "lanes still busy at shutdown; the broker redelivers what they held"
                );
                // Dropping the set aborts them.
                return;
            }
            _ = workers.join_next() => {}
            event = events.poll(), if polling => polling = event.is_ok(),
        }
    }
    if !polling || client.try_disconnect().is_err() {
        return;
    }
    // Until the DISCONNECT is written (or the connection fails), within what is left.
    loop {
        tokio::select! {
            () = &mut deadline => return,
            event = events.poll() => match event {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// The lane of a topic's device level (any stable spread; a device always gets the same).
fn lane_of(topic: &str, lanes: usize) -> usize {
    let device = topic.split('/').nth(3).unwrap_or_default();
    let hash = device.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % lanes as u64) as usize
}

/// Applies one lane's messages in order, acknowledging each once stored.
async fn lane(
    mut messages: mpsc::UnboundedReceiver<Publish>,
    uplink: Arc<dyn Uplink>,
    store: Store,
    client: AsyncClient,
    counters: Arc<Counters>,
) {
    while let Some(publish) = messages.recv().await {
        match uplink_message(&store, &publish).await {
            Some(message) => {
                let mut wait = Duration::from_millis(50);
                // Not stored: not acknowledged. Retry while the store recovers; the broker
                // keeps the message for the bridge's session meanwhile.
                while let Err(e) = uplink.deliver(message.clone()).await {
                    tracing::error!(error = %e, topic = %message.topic, "device message not stored; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                counters.stored.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = client.ack(&publish).await {
            tracing::warn!(error = %e, "cannot acknowledge to the external broker");
        }
    }
}

/// The message as the embedded broker would hand it over, or `None` when its topic names no
/// active device of that organization.
async fn uplink_message(store: &Store, publish: &Publish) -> Option<UplinkMessage> {
    let topic = publish.topic.clone();
    let parsed = Topic::parse(&topic).ok()?;
    let device: DeviceId = parsed.device_id().parse().ok()?;
    let org_slug = parsed.org_slug().to_owned();
    let login = match store.blocking().cached_device_login(device) {
        Some(login) => Some(login),
        None => store
            .run(move |db| db.device_login(device))
            .await
            .ok()
            .flatten(),
    }?;
    if login.deactivated || !login.org_active || login.org_slug != org_slug {
        tracing::info!(%topic, "external broker delivered a topic of no active device; dropped");
        return None;
    }
    Some(UplinkMessage {
        org_slug,
        device_id: device,
        topic,
        payload: publish.payload.clone(),
        retain: publish.retain,
        // The bridge's client of an external broker speaks MQTT 3.1.1.
        correlation_data: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_always_lands_in_the_same_lane() {
        let a = "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000d1/up/telemetry";
        let b = "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000d1/up/presence";
        assert_eq!(lane_of(a, 32), lane_of(b, 32));
        let spread: std::collections::HashSet<usize> = (0..200)
            .map(|i| {
                lane_of(
                    &format!("fleetmq/v1/o/00000000-0000-4000-8000-{i:012}/up/x"),
                    8,
                )
            })
            .collect();
        assert_eq!(spread.len(), 8, "200 devices use every lane");
    }

    #[test]
    fn with_a_shared_uplink_each_channel_has_exactly_one_consumer() {
        assert_eq!(exclusive_filters(false), vec![UPLINK_FILTER.to_owned()]);
        let exclusive = exclusive_filters(true);
        let shared = shared_filters();
        assert_eq!(
            shared,
            vec!["$share/fleetmq/fleetmq/v1/+/+/up/telemetry".to_owned()]
        );
        for channel in UpChannel::ALL {
            let topic = format!("fleetmq/v1/acme/d1/up/{}", channel.as_str());
            let matching = |filters: &[String]| {
                filters
                    .iter()
                    .filter(|f| {
                        let f = f.strip_prefix("$share/fleetmq/").unwrap_or(f);
                        rumqttc::matches(&topic, f)
                    })
                    .count()
            };
            let (exclusively, sharedly) = (matching(&exclusive), matching(&shared));
            assert_eq!(exclusively + sharedly, 1, "{topic}");
            assert_eq!(sharedly == 1, channel == UpChannel::Telemetry, "{topic}");
        }
        // Each node's member is its own clean session; the device-plane client's persists.
        let config = ExternalBroker::new("mqtt://127.0.0.1:1883");
        let a = config.options(Role::Shared).expect("valid");
        let b = config.options(Role::Shared).expect("valid");
        assert!(a.clean_session() && b.clean_session());
        assert_ne!(a.client_id(), b.client_id());
        assert!(a.client_id().starts_with("fleetmq-bridge-"));
        assert!(
            a.client_id().len() <= 23,
            "fits MQTT 3.1.1's guaranteed length"
        );
    }

    #[test]
    fn broker_urls_name_transport_host_and_port() {
        let parse = |u: &str| parse_url(u);
        assert_eq!(
            parse("mqtt://127.0.0.1:1884"),
            Some((false, "127.0.0.1".into(), 1884))
        );
        assert_eq!(parse("tcp://broker"), Some((false, "broker".into(), 1883)));
        assert_eq!(
            parse("mqtts://broker/"),
            Some((true, "broker".into(), 8883))
        );
        assert_eq!(
            parse("mqtt://[::1]:1885"),
            Some((false, "::1".into(), 1885))
        );
        for bad in [
            "broker:1883",
            "http://x",
            "mqtt://",
            "mqtt://x:port",
            "mqtt://[::1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let options = ExternalBroker::new("mqtt://127.0.0.1:1883")
            .options(Role::DevicePlane)
            .expect("valid");
        assert_eq!(options.client_id(), "fleetmq-bridge");
        assert!(!options.clean_session());
        assert!(
            ExternalBroker::new("mqtts://x")
                .options(Role::DevicePlane)
                .is_err(),
            "mqtts needs a CA"
        );
    }
}
