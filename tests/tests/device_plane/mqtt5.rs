//! Devices on MQTT 5 (rumqttc's v5 client): what a v3.1.1 device gets as a closed
//! connection, a v5 device gets as a reason code. A publish outside its own `up/` is refused
//! in its PUBACK/PUBREC and the connection goes on; deactivation, shutdown and a missed
//! keep-alive end the connection with a DISCONNECT that says which. Requests (commands) come
//! with a response topic and correlation data, and the answer needs no id of its own.

use std::time::Duration;

use fleetmq_protocol::{DownChannel, UpChannel};
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient};
use fleetmq_tests::seconds_ago;
use rumqttc::MqttOptions as V311Options;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Packet, PubAckReason, PubRecReason, PublishProperties,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Fleet, fleet, fleet_with};

/// Events of one client are awaited for at most this long.
const WAIT: Duration = Duration::from_secs(10);

/// A device connected with MQTT 5.
struct V5Device {
    client: AsyncClient,
    events: EventLoop,
}

impl V5Device {
    async fn connect(f: &Fleet, device: &DeviceIdentity, keep_alive: Duration) -> V5Device {
        let addr = f.app.mqtt_addr;
        let mut options = MqttOptions::new(&device.id, addr.ip().to_string(), addr.port());
        options.set_credentials(&device.id, &device.key);
        options.set_keep_alive(keep_alive);
        let (client, events) = AsyncClient::new(options, 16);
        let mut device = V5Device { client, events };
        device
            .until(|event| matches!(event, Event::Incoming(Packet::ConnAck(_))))
            .await;
        device
    }

    /// Polls until `wanted` holds for an event; panics on an error or after [`WAIT`].
    async fn until(&mut self, wanted: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.poll().await {
                    Ok(event) if wanted(&event) => return event,
                    Ok(_) => {}
                    Err(e) => panic!("connection error while waiting: {e:?}"),
                }
            }
        })
        .await
        .expect("the event comes in time")
    }

    /// The reason code of the next PUBACK.
    async fn puback(&mut self) -> PubAckReason {
        match self
            .until(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
            .await
        {
            Event::Incoming(Packet::PubAck(ack)) => ack.reason,
            _ => unreachable!("matched above"),
        }
    }

    /// Polls until the broker ends the connection; the reason code of its DISCONNECT.
    async fn disconnected(&mut self) -> DisconnectReasonCode {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.poll().await {
                    Ok(_) => {}
                    Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                        reason_code,
                        ..
                    })) => return reason_code,
                    Err(e) => panic!("closed without DISCONNECT: {e:?}"),
                }
            }
        })
        .await
        .expect("disconnected in time")
    }
}

/// A valid telemetry sample, stamped a second ago.
fn sample() -> String {
    json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"temperature": 21}}).to_string()
}

/// An operator watching `org-a` over MQTT 3.1.1.
async fn watcher(f: &Fleet) -> MqttClient {
    let addr = f.app.mqtt_addr;
    let mut options = V311Options::new("v5-watcher", addr.ip().to_string(), addr.port());
    options.set_credentials("alice", &f.manager_a);
    let mut client = MqttClient::connect(options)
        .await
        .expect("operator connects");
    client.subscribe(&["fleetmq/v1/org-a/#"]).await;
    client
}

#[tokio::test]
async fn a_v5_device_publishing_outside_its_topics_is_refused_and_stays_connected() {
    let f = fleet().await;
    let mut operator = watcher(&f).await;
    let mut device = V5Device::connect(&f, &f.device_a, Duration::from_secs(30)).await;
    let foreign = f.device_b.up(UpChannel::Telemetry);
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        device
            .client
            .publish(&foreign, qos, false, "{}")
            .await
            .expect("queued");
    }
    assert_eq!(device.puback().await, PubAckReason::NotAuthorized);
    device
        .until(|e| {
            matches!(e, Event::Incoming(Packet::PubRec(rec)) if rec.reason == PubRecReason::NotAuthorized)
        })
        .await;
    // The same connection goes on: its own telemetry is taken and routed.
    let own = f.device_a.up(UpChannel::Telemetry);
    device
        .client
        .publish(&own, QoS::AtLeastOnce, false, sample())
        .await
        .expect("queued");
    assert_eq!(device.puback().await, PubAckReason::Success);
    loop {
        let seen = operator.next_publish().await;
        assert_ne!(seen.topic, foreign, "a refused message is not routed");
        if seen.topic == own {
            break;
        }
    }
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_v5_device_is_told_administrative_action() {
    let f = fleet().await;
    let mut device = V5Device::connect(&f, &f.device_a, Duration::from_secs(30)).await;
    let path = format!("/api/v1/controller/device/{}/deactivate/", f.device_a.id);
    let deactivating = f.app.call("POST", &path, Some(&f.manager_a), None);
    let (reply, reason) = tokio::join!(deactivating, device.disconnected());
    assert_eq!(reply.status, 200);
    assert_eq!(reason, DisconnectReasonCode::AdministrativeAction);
    f.app.shutdown().await;
}

#[tokio::test]
async fn v5_devices_are_told_when_the_server_shuts_down() {
    let f = fleet().await;
    let mut device = V5Device::connect(&f, &f.device_a, Duration::from_secs(30)).await;
    let (_, reason) = tokio::join!(f.app.shutdown(), device.disconnected());
    assert_eq!(reason, DisconnectReasonCode::ServerShuttingDown);
}

#[tokio::test]
async fn a_v5_device_gets_the_servers_keep_alive_and_is_told_when_it_misses_it() {
    // The broker tells a v5 client asking for a longer keep-alive its own bound (1 s here).
    let f = fleet_with(|config| config.mqtt_limits.max_keep_alive = 1).await;
    let addr = f.app.mqtt_addr;
    let mut options = MqttOptions::new(&f.device_a.id, addr.ip().to_string(), addr.port());
    options.set_credentials(&f.device_a.id, &f.device_a.key);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, events) = AsyncClient::new(options, 16);
    let mut device = V5Device { client, events };
    let connack = device
        .until(|event| matches!(event, Event::Incoming(Packet::ConnAck(_))))
        .await;
    let Event::Incoming(Packet::ConnAck(connack)) = connack else {
        unreachable!("matched above")
    };
    let told = connack.properties.and_then(|p| p.server_keep_alive);
    assert_eq!(told, Some(1), "CONNACK carries the server keep alive");
    drop(device);

    // A client that then says nothing is disconnected 1.5 keep-alives later, with 0x8D.
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    socket
        .write_all(&connect_v5(&f.device_a, 1))
        .await
        .expect("CONNECT written");
    let mut received = Vec::new();
    let disconnect = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 256];
        loop {
            let n = socket.read(&mut buf).await.expect("reads");
            assert!(n > 0, "closed without DISCONNECT: {received:02x?}");
            received.extend_from_slice(&buf[..n]);
            // CONNACK (its length at byte 1), then DISCONNECT: 0xE0, length, reason code.
            let after_connack = 2 + usize::from(received[1]);
            if received.len() >= after_connack + 3 {
                return received[after_connack..after_connack + 3].to_vec();
            }
        }
    })
    .await
    .expect("disconnected in time");
    assert_eq!(received[3], 0, "CONNACK success");
    assert_eq!(disconnect[0], 0xE0, "a DISCONNECT follows the CONNACK");
    assert_eq!(disconnect[2], 0x8D, "keep-alive timeout");
    f.app.shutdown().await;
}

/// An MQTT 5 CONNECT of `device` with clean start and `keep_alive` seconds, as bytes.
fn connect_v5(device: &DeviceIdentity, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.push(0); // no properties
    for field in [&device.id, &device.id, &device.key] {
        body.extend_from_slice(&u16::try_from(field.len()).expect("short").to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("under 128 bytes")];
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn a_v5_device_answers_a_command_where_it_is_told_with_the_correlation_data() {
    let f = fleet().await;
    let mut device = V5Device::connect(&f, &f.device_a, Duration::from_secs(30)).await;
    let requests = f.device_a.down(DownChannel::CommandRequest);
    device
        .client
        .subscribe(&requests, QoS::AtLeastOnce)
        .await
        .expect("queued");
    device
        .until(|e| matches!(e, Event::Incoming(Packet::SubAck(_))))
        .await;
    let commands = format!("/api/v1/controller/device/{}/command/", f.device_a.id);
    let created = f.custom_command("uptime").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let Event::Incoming(Packet::Publish(request)) = device
        .until(|e| matches!(e, Event::Incoming(Packet::Publish(_))))
        .await
    else {
        unreachable!("matched above")
    };
    let properties = request.properties.expect("a request carries properties");
    let response_topic = properties.response_topic.expect("a response topic");
    let correlation = properties.correlation_data.expect("correlation data");
    assert_eq!(response_topic, f.device_a.up(UpChannel::CommandResult));
    assert_eq!(correlation, created.str("id").as_bytes());

    // The answer goes where it was told, with the correlation data and no id of its own.
    let answer = PublishProperties {
        correlation_data: Some(correlation),
        ..PublishProperties::default()
    };
    device
        .client
        .publish_with_properties(
            response_topic,
            QoS::AtLeastOnce,
            false,
            r#"{"status":"success","output":"up 3 days","exit_code":0}"#,
            answer,
        )
        .await
        .expect("queued");
    assert_eq!(device.puback().await, PubAckReason::Success);
    let detail = format!("{commands}{}/", created.str("id"));
    let done = f
        .app
        .eventually(&detail, &f.manager_a, |r| r.body["status"] == "success")
        .await;
    assert_eq!(done.body["output"], "up 3 days");
    f.app.shutdown().await;
}

#[tokio::test]
async fn a_v5_device_is_told_why_its_payload_is_refused() {
    let f = fleet_with(|config| config.bridge.telemetry_limits.max_sample_bytes = 512).await;
    let mut device = V5Device::connect(&f, &f.device_a, Duration::from_secs(30)).await;
    let telemetry = f.device_a.up(UpChannel::Telemetry);
    let client = device.client.clone();
    let publish = |payload: String| {
        let client = client.clone();
        let topic = telemetry.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queued")
        }
    };
    publish("not json".into()).await;
    assert_eq!(device.puback().await, PubAckReason::PayloadFormatInvalid);
    publish(format!(r#"{{"metrics":{{"x":"{}"}}}}"#, "y".repeat(600))).await;
    assert_eq!(device.puback().await, PubAckReason::QuotaExceeded);
    // Still connected: a good sample is taken.
    publish(sample()).await;
    assert_eq!(device.puback().await, PubAckReason::Success);
    f.app.shutdown().await;
}
