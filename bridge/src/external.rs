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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fleetmq_broker::{Affected, Uplink, UplinkMessage};
use fleetmq_protocol::{DeviceId, Topic};
use fleetmq_store::Store;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::Bridge;
use crate::mqtt::{MqttError, MqttPlane, PlaneFuture};

/// Every device's uplink.
pub const UPLINK_FILTER: &str = "fleetmq/v1/+/+/up/#";

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
        }
    }

    fn options(&self) -> Result<MqttOptions, MqttError> {
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
        let mut options = MqttOptions::new(self.client_id.clone(), host, port);
        options
            .set_clean_session(false)
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

/// The plane over the external broker; what [`crate::Mqtt`] wraps in external mode.
pub struct ExternalPlane {
    client: AsyncClient,
    counters: Arc<Counters>,
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
        vec![
            (
                "fleetmq_external_broker_connected",
                "1 while the bridge is connected to the external MQTT broker and subscribed to the device uplink.",
                u64::from(c.connected.load(Ordering::Relaxed)),
            ),
            (
                "fleetmq_external_uplink_received_total",
                "Device messages the external broker delivered to the bridge.",
                load(&c.received),
            ),
            (
                "fleetmq_external_uplink_stored_total",
                "Device messages applied (or answered on down/error) and acknowledged to the broker.",
                load(&c.stored),
            ),
            (
                "fleetmq_external_uplink_dropped_total",
                "Device messages dropped: topic of no active device of that organization.",
                load(&c.dropped),
            ),
            (
                "fleetmq_external_connection_errors_total",
                "Connection errors with the external broker (each followed by a reconnect).",
                load(&c.connection_errors),
            ),
            (
                "fleetmq_external_published_total",
                "Messages the bridge handed the external broker.",
                load(&c.published),
            ),
        ]
    }
}

/// Connects the client (lazily: rumqttc connects on its first poll) and returns the plane to
/// start the bridge with; [`run`] then serves the uplink.
pub fn connect(config: &ExternalBroker) -> Result<(ExternalPlane, Connection), MqttError> {
    let options = config.options()?;
    // Room for an acknowledgement of everything the broker may have in flight, plus the
    // bridge's own publishes; a full channel only makes a publisher or a lane wait.
    let (client, events) = AsyncClient::new(options, usize::from(config.inflight.max(1)) + 256);
    let counters = Arc::new(Counters::default());
    Ok((
        ExternalPlane {
            client: client.clone(),
            counters: Arc::clone(&counters),
        },
        Connection {
            client,
            events,
            counters,
            lanes: config.lanes.max(1),
        },
    ))
}

/// The client's event loop, not yet running.
pub struct Connection {
    client: AsyncClient,
    events: EventLoop,
    counters: Arc<Counters>,
    lanes: usize,
}

/// Serves the uplink until `shutdown`: reads the broker, feeds the lanes, reconnects after
/// errors (backing off up to 5 s). Returns the tasks to wait for.
pub fn run(connection: Connection, bridge: Bridge, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Connection {
            client,
            mut events,
            counters,
            lanes,
        } = connection;
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = JoinSet::new();
        for _ in 0..lanes {
            // Unbounded here, bounded by the broker's in-flight window (see above).
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            workers.spawn(lane(
                rx,
                bridge.clone(),
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
                    let client = client.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client.subscribe(UPLINK_FILTER, QoS::AtLeastOnce).await {
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
                            filter = UPLINK_FILTER,
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
    bridge: Bridge,
    client: AsyncClient,
    counters: Arc<Counters>,
) {
    while let Some(publish) = messages.recv().await {
        match uplink_message(&bridge, &publish).await {
            Some(message) => {
                let mut wait = Duration::from_millis(50);
                // Not stored: not acknowledged. Retry while the store recovers; the broker
                // keeps the message for the bridge's session meanwhile.
                while let Err(e) = bridge.deliver(message.clone()).await {
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
async fn uplink_message(bridge: &Bridge, publish: &Publish) -> Option<UplinkMessage> {
    let topic = publish.topic.clone();
    let parsed = Topic::parse(&topic).ok()?;
    let device: DeviceId = parsed.device_id().parse().ok()?;
    let org_slug = parsed.org_slug().to_owned();
    let store: &Store = bridge.store();
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
            .options()
            .expect("valid");
        assert_eq!(options.client_id(), "fleetmq-bridge");
        assert!(!options.clean_session());
        assert!(
            ExternalBroker::new("mqtts://x").options().is_err(),
            "mqtts needs a CA"
        );
    }
}
