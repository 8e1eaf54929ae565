//! Simulated devices against a real in-process broker (fleetmq-broker on 127.0.0.1:0).
//!
//! Up traffic is observed through the broker's in-process links; commands are published
//! with `BrokerHandle::publish`, exactly as the bridge will. Every wait is on an event or a
//! message, with a timeout only as a failure guard.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, BrokerHandle, LocalLink, Login, Message,
    Refusal,
};
use fleetmq_protocol::topic::{DownChannel, Topic, UpChannel};
use fleetmq_protocol::{
    CommandRequest, CommandResult, CommandStatus, CommandType, ConfigNotice, ConfigOutcome,
    ConfigReport, Coordinates, Presence, PresenceStatus, Principal, Telemetry,
};
use fleetmq_sim::{DeviceConfig, Fleet, FleetOptions, SimDevice, SimEvent, SimHandle};
use serde_json::json;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);
const ORG: &str = "acme";

/// Accepts any UUID user name whose password is `key-{uuid}`, as a device of `acme`.
struct KeyAuth;

fn key_of(id: &str) -> String {
    format!("key-{id}")
}

impl Authenticator for KeyAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            let user = login.username.ok_or(Refusal::BadCredentials)?;
            let password = login.password.unwrap_or_default();
            if Uuid::parse_str(&user).is_err() || password != key_of(&user).as_bytes() {
                return Err(Refusal::BadCredentials);
            }
            Ok(Principal::Device {
                org_slug: ORG.into(),
                device_id: user.parse().map_err(|_| Refusal::BadCredentials)?,
            })
        })
    }
}

struct TestBroker {
    addr: SocketAddr,
    handle: BrokerHandle,
    shutdown: CancellationToken,
}

impl TestBroker {
    async fn start() -> TestBroker {
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(config, Arc::new(KeyAuth)).await.unwrap();
        let addr = broker.local_addr();
        let handle = broker.handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(broker.run(shutdown.clone()));
        TestBroker {
            addr,
            handle,
            shutdown,
        }
    }

    /// A device config with a fresh id, no timers (tests publish on demand).
    fn device(&self) -> DeviceConfig {
        let id = Uuid::new_v4().to_string();
        let mut config = DeviceConfig::new(self.addr, ORG, &id, key_of(&id));
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config
    }

    /// Starts a device and waits until it is connected and subscribed.
    async fn connected_device(&self, config: DeviceConfig) -> SimHandle {
        let mut device = SimDevice::spawn(config);
        let connected = timeout(WAIT, device.connected())
            .await
            .expect("connected in time");
        assert_eq!(connected, Some(SimEvent::Connected));
        device
    }

    async fn watch(&self, filter: &str) -> LocalLink {
        let name = format!("watch-{}", Uuid::new_v4().simple());
        self.handle.link(&name, &[filter]).await.unwrap()
    }

    async fn command(
        &self,
        device: &SimHandle,
        kind: CommandType,
        input: serde_json::Value,
    ) -> Uuid {
        let request = CommandRequest {
            id: Uuid::new_v4(),
            kind,
            input,
        };
        let topic = Topic::down(ORG, device.device_id(), DownChannel::CommandRequest).to_string();
        self.handle
            .publish(&topic, request.to_bytes(), false)
            .await
            .unwrap();
        request.id
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn up(device: &SimHandle, channel: UpChannel) -> String {
    Topic::up(ORG, device.device_id(), channel).to_string()
}

/// The next message on `topic`, skipping others the link also matches.
async fn next_on(link: &mut LocalLink, topic: &str) -> Message {
    timeout(WAIT, async {
        loop {
            let message = link.recv().await.unwrap();
            if message.topic == topic {
                return message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a message on {topic} in time"))
}

async fn next_presence(link: &mut LocalLink, device: &SimHandle) -> Presence {
    let message = next_on(link, &up(device, UpChannel::Presence)).await;
    Presence::parse(&message.payload).unwrap()
}

async fn next_result(link: &mut LocalLink, device: &SimHandle) -> CommandResult {
    let message = next_on(link, &up(device, UpChannel::CommandResult)).await;
    CommandResult::parse(&message.payload).unwrap()
}

#[tokio::test]
async fn a_connected_device_has_retained_online_presence_with_its_identity() {
    let broker = TestBroker::start().await;
    let mut config = broker.device();
    config.model = "sim-board-x".into();
    config.firmware_version = "2.1.0".into();
    let device = broker.connected_device(config).await;

    // Subscribing only now: the presence must have been retained.
    let mut link = broker.watch(&up(&device, UpChannel::Presence)).await;
    let presence = next_presence(&mut link, &device).await;

    assert_eq!(presence.status, PresenceStatus::Online);
    assert_eq!(presence.model.as_deref(), Some("sim-board-x"));
    assert_eq!(presence.firmware_version.as_deref(), Some("2.1.0"));
    assert!(presence.os.is_some() && presence.system.is_some());
    device.stop().await;
}

#[tokio::test]
async fn telemetry_and_coordinates_on_demand_parse_with_the_protocol_types() {
    let broker = TestBroker::start().await;
    let mut config = broker.device();
    config.home = (-3.7038, 40.4168);
    let device = broker.connected_device(config).await;
    let mut link = broker
        .watch(&fleetmq_protocol::topic::device_up_filter(
            ORG,
            device.device_id(),
        ))
        .await;

    device.publish_telemetry_now().await.unwrap();
    device.publish_coordinates_now().await.unwrap();

    let telemetry = Telemetry::parse(
        &next_on(&mut link, &up(&device, UpChannel::Telemetry))
            .await
            .payload,
    )
    .unwrap();
    for metric in ["cpu", "memory", "uptime", "rx_bytes", "tx_bytes"] {
        assert!(
            telemetry.metrics.contains_key(metric),
            "{metric} in {:?}",
            telemetry.metrics
        );
    }
    let age = time::OffsetDateTime::now_utc() - telemetry.timestamp.to_datetime();
    assert!(
        age.abs() < time::Duration::minutes(1),
        "timestamp is now: {age}"
    );
    let fix = Coordinates::parse(
        &next_on(&mut link, &up(&device, UpChannel::Coordinates))
            .await
            .payload,
    )
    .unwrap();
    assert!(
        (fix.lng() - -3.7038).abs() < 0.01 && (fix.lat() - 40.4168).abs() < 0.01,
        "{fix:?}"
    );
    device.stop().await;
}

#[tokio::test]
async fn telemetry_and_coordinates_are_published_on_their_intervals() {
    let broker = TestBroker::start().await;
    let mut config = broker.device();
    config.telemetry_interval = Some(Duration::from_millis(50));
    config.coordinates_interval = Some(Duration::from_millis(80));
    let mut link = broker
        .watch(&fleetmq_protocol::topic::device_up_filter(
            ORG,
            &config.device_id,
        ))
        .await;
    let device = broker.connected_device(config).await;

    let mut samples = Vec::new();
    for _ in 0..3 {
        let message = next_on(&mut link, &up(&device, UpChannel::Telemetry)).await;
        samples.push(Telemetry::parse(&message.payload).unwrap());
    }
    Coordinates::parse(
        &next_on(&mut link, &up(&device, UpChannel::Coordinates))
            .await
            .payload,
    )
    .unwrap();

    let rx = |t: &Telemetry| t.metrics["rx_bytes"].as_u64().unwrap();
    assert!(rx(&samples[0]) < rx(&samples[1]) && rx(&samples[1]) < rx(&samples[2]));
    device.stop().await;
}

#[tokio::test]
async fn a_custom_command_is_answered_with_its_text_echoed() {
    let broker = TestBroker::start().await;
    let mut device = broker.connected_device(broker.device()).await;
    let mut link = broker.watch(&up(&device, UpChannel::CommandResult)).await;

    let id = broker
        .command(
            &device,
            CommandType::Custom,
            json!({"command": "uptime && uname -a"}),
        )
        .await;

    let result = next_result(&mut link, &device).await;
    assert_eq!(result.id, id);
    assert_eq!(result.status, CommandStatus::Success);
    assert_eq!(result.output, "uptime && uname -a");
    assert_eq!(result.exit_code, 0);
    let handled = timeout(
        WAIT,
        device.wait_for(|e| matches!(e, SimEvent::CommandHandled { .. })),
    )
    .await
    .unwrap();
    assert!(matches!(handled, Some(SimEvent::CommandHandled { request, .. }) if request.id == id));
    assert_eq!(device.stats().commands, 1);
    device.stop().await;
}

#[tokio::test]
async fn reboot_answers_then_goes_offline_by_will_and_comes_back_online() {
    let broker = TestBroker::start().await;
    let mut device = broker.connected_device(broker.device()).await;
    let mut link = broker
        .watch(&fleetmq_protocol::topic::device_up_filter(
            ORG,
            device.device_id(),
        ))
        .await;
    // The retained online presence from the first connection.
    assert_eq!(
        next_presence(&mut link, &device).await.status,
        PresenceStatus::Online
    );

    let id = broker
        .command(&device, CommandType::Reboot, json!(null))
        .await;

    let result = next_result(&mut link, &device).await;
    assert_eq!((result.id, result.status), (id, CommandStatus::Success));
    assert_eq!(
        next_presence(&mut link, &device).await.status,
        PresenceStatus::Offline
    );
    assert_eq!(
        next_presence(&mut link, &device).await.status,
        PresenceStatus::Online
    );
    timeout(WAIT, device.wait_for(|e| *e == SimEvent::Rebooting))
        .await
        .unwrap();
    timeout(WAIT, device.connected()).await.unwrap();
    let stats = device.stats();
    assert_eq!((stats.reboots, stats.reconnects, stats.connects), (1, 0, 2));
    device.stop().await;
}

#[tokio::test]
async fn change_password_with_mismatching_passwords_fails_with_a_reason() {
    let broker = TestBroker::start().await;
    let device = broker.connected_device(broker.device()).await;
    let mut link = broker.watch(&up(&device, UpChannel::CommandResult)).await;

    let id = broker
        .command(
            &device,
            CommandType::ChangePassword,
            json!({"password": "secret-one", "confirm_password": "secret-two"}),
        )
        .await;
    let failed = next_result(&mut link, &device).await;
    broker
        .command(
            &device,
            CommandType::ChangePassword,
            json!({"password": "secret-one", "confirm_password": "secret-one"}),
        )
        .await;
    let changed = next_result(&mut link, &device).await;

    assert_eq!((failed.id, failed.status), (id, CommandStatus::Failed));
    assert!(failed.output.contains("do not match"), "{}", failed.output);
    assert_ne!(failed.exit_code, 0);
    assert_eq!(changed.status, CommandStatus::Success);
    device.stop().await;
}

#[tokio::test]
async fn garbage_on_down_topics_is_ignored_and_later_commands_are_still_answered() {
    let broker = TestBroker::start().await;
    let mut device = broker.connected_device(broker.device()).await;
    let mut link = broker.watch(&up(&device, UpChannel::CommandResult)).await;
    let request_topic =
        Topic::down(ORG, device.device_id(), DownChannel::CommandRequest).to_string();
    let notice_topic = Topic::down(ORG, device.device_id(), DownChannel::ConfigNotice).to_string();
    let unknown_topic = format!("fleetmq/v1/{ORG}/{}/down/self-destruct", device.device_id());

    for (topic, payload) in [
        (&request_topic, b"\xff\xfe not json".to_vec()),
        (&request_topic, br#"{"id":"42","type":"reboot"}"#.to_vec()),
        (
            &request_topic,
            br#"{"id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","type":"format_disk"}"#.to_vec(),
        ),
        (&notice_topic, b"{}".to_vec()),
        (&unknown_topic, b"boom".to_vec()),
    ] {
        broker.handle.publish(topic, payload, false).await.unwrap();
    }
    let id = broker
        .command(&device, CommandType::Custom, json!("echo still here"))
        .await;

    let result = next_result(&mut link, &device).await;
    assert_eq!((result.id, result.output.as_str()), (id, "echo still here"));
    let mut ignored = 0;
    timeout(
        WAIT,
        device.wait_for(|e| match e {
            SimEvent::Ignored { .. } => {
                ignored += 1;
                false
            }
            other => matches!(other, SimEvent::CommandHandled { .. }),
        }),
    )
    .await
    .unwrap();
    assert_eq!(ignored, 5);
    let stats = device.stats();
    assert_eq!(
        (stats.ignored, stats.commands, stats.connections_lost),
        (5, 1, 0)
    );
    device.stop().await;
}

#[tokio::test]
async fn a_device_dropped_by_the_broker_reconnects_and_announces_itself_again() {
    let broker = TestBroker::start().await;
    let mut device = broker.connected_device(broker.device()).await;
    let mut link = broker.watch(&up(&device, UpChannel::Presence)).await;
    assert_eq!(
        next_presence(&mut link, &device).await.status,
        PresenceStatus::Online
    );

    assert!(
        broker
            .handle
            .disconnect_device(device.device_id().parse().unwrap())
            .await
    );

    assert_eq!(
        next_presence(&mut link, &device).await.status,
        PresenceStatus::Offline
    );
    assert_eq!(
        next_presence(&mut link, &device).await.status,
        PresenceStatus::Online
    );
    let lost = timeout(
        WAIT,
        device.wait_for(|e| matches!(e, SimEvent::Disconnected { .. })),
    )
    .await
    .unwrap();
    assert!(lost.is_some());
    timeout(WAIT, device.connected()).await.unwrap();
    let stats = device.stats();
    assert_eq!(
        (
            stats.reconnects,
            stats.connections_lost,
            stats.connected_now
        ),
        (1, 1, 1)
    );
    device.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_reported_as_refused_and_retried() {
    let broker = TestBroker::start().await;
    let mut config = broker.device();
    config.key = "wrong".into();
    let mut device = SimDevice::spawn(config);

    let failed = timeout(
        WAIT,
        device.wait_for(|e| matches!(e, SimEvent::ConnectFailed { .. })),
    )
    .await
    .unwrap();
    let Some(SimEvent::ConnectFailed { reason }) = failed else {
        panic!("expected a connect failure, got {failed:?}");
    };
    assert!(
        reason.contains("0x04") && reason.contains("bad user name or password"),
        "{reason}"
    );
    timeout(
        WAIT,
        device.wait_for(|e| matches!(e, SimEvent::ConnectFailed { .. })),
    )
    .await
    .unwrap();
    let stats = device.stats();
    assert!(stats.connect_errors >= 2);
    assert_eq!(
        stats.refused[4], stats.connect_errors,
        "all refused as bad credentials"
    );
    timeout(WAIT, device.stop()).await.unwrap();
}

#[tokio::test]
async fn stopping_a_device_leaves_a_retained_offline_presence() {
    let broker = TestBroker::start().await;
    let device = broker.connected_device(broker.device()).await;
    let topic = up(&device, UpChannel::Presence);

    timeout(WAIT, device.stop()).await.unwrap();

    let mut link = broker.watch(&topic).await;
    let message = next_on(&mut link, &topic).await;
    assert_eq!(
        Presence::parse(&message.payload).unwrap().status,
        PresenceStatus::Offline
    );
}

#[tokio::test]
async fn a_fleet_of_200_devices_all_connect_and_announce_themselves() {
    let broker = TestBroker::start().await;
    let configs: Vec<DeviceConfig> = (0..200).map(|_| broker.device()).collect();
    let ids: HashSet<String> = configs.iter().map(|c| c.device_id.clone()).collect();

    let options = FleetOptions {
        connect_rate: Some(2000.0),
        max_pending_connects: Some(50),
        ..FleetOptions::default()
    };
    let fleet = Fleet::spawn(configs, options);
    let stats = timeout(WAIT, fleet.wait_connected(200))
        .await
        .expect("200 connected in time");

    assert_eq!(stats.connect_errors, 0);
    let mut link = broker
        .watch(&format!("fleetmq/v1/{ORG}/+/up/presence"))
        .await;
    let mut online = HashSet::new();
    timeout(WAIT, async {
        while online.len() < 200 {
            let message = link.recv().await.unwrap();
            let topic = Topic::parse(&message.topic).unwrap();
            if Presence::parse(&message.payload).unwrap().status == PresenceStatus::Online {
                online.insert(topic.device_id().to_owned());
            }
        }
    })
    .await
    .expect("200 retained online presences");
    assert_eq!(online, ids);

    timeout(WAIT, fleet.stop())
        .await
        .expect("fleet stops in time");
}

/// A broker that accepts the CONNECT, then answers with bytes that are no MQTT packet.
#[tokio::test]
async fn a_broker_sending_garbage_drops_the_connection_and_the_device_reconnects() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let id = Uuid::new_v4().to_string();
    let mut device = SimDevice::spawn(DeviceConfig::new(addr, ORG, &id, key_of(&id)));

    let (mut first, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut connect = [0u8; 1];
    first.read_exact(&mut connect).await.unwrap();
    assert_eq!(connect[0], 0x10, "the first packet is CONNECT");
    // CONNACK accepted, then a packet type a server never sends (CONNECT).
    first.write_all(&[0x20, 2, 0, 0, 0x10, 0]).await.unwrap();

    let lost = timeout(
        WAIT,
        device.wait_for(|e| matches!(e, SimEvent::Disconnected { .. })),
    )
    .await
    .unwrap();
    let Some(SimEvent::Disconnected { reason }) = lost else {
        panic!("expected a disconnection, got {lost:?}");
    };
    assert!(reason.contains("protocol error"), "{reason}");
    let (mut second, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    second.read_exact(&mut connect).await.unwrap();
    assert_eq!(connect[0], 0x10, "the device came back with a new CONNECT");
    assert_eq!(device.stats().connections_lost, 1);
}

/// Serves `archive` at `/config.tar.gz` on 127.0.0.1; answers the URL.
async fn serve_archive(archive: Vec<u8>) -> String {
    let app = axum::Router::new().route(
        "/config.tar.gz",
        axum::routing::get(move || {
            let archive = archive.clone();
            async move { archive }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/config.tar.gz")
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn notify_config(broker: &TestBroker, device: &SimHandle, checksum: &str, url: &str) {
    let notice = ConfigNotice {
        checksum: checksum.to_owned(),
        url: url.to_owned(),
    };
    let topic = Topic::down(ORG, device.device_id(), DownChannel::ConfigNotice).to_string();
    broker
        .handle
        .publish(&topic, notice.to_bytes(), false)
        .await
        .unwrap();
}

async fn next_config_report(link: &mut LocalLink, device: &SimHandle) -> ConfigReport {
    let message = next_on(link, &up(device, UpChannel::ConfigStatus)).await;
    ConfigReport::parse(&message.payload).unwrap()
}

#[tokio::test]
async fn a_configuration_notice_is_downloaded_checked_and_reported_applied_or_error() {
    let broker = TestBroker::start().await;
    let device = broker.connected_device(broker.device()).await;
    let mut link = broker.watch(&up(&device, UpChannel::ConfigStatus)).await;
    // A gzip stream (magic, deflate, no flags) is all the device checks besides the MD5.
    let archive = vec![
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let checksum = md5_hex(&archive);
    let url = serve_archive(archive).await;

    notify_config(&broker, &device, &checksum, &url).await;
    let report = next_config_report(&mut link, &device).await;
    assert_eq!(report.status, ConfigOutcome::Applied);
    assert_eq!(report.checksum, checksum);

    // The server announces another configuration, but the archive it serves is not that one.
    let announced = "0123456789abcdef0123456789abcdef";
    notify_config(&broker, &device, announced, &url).await;
    let report = next_config_report(&mut link, &device).await;
    assert_eq!(report.status, ConfigOutcome::Error);
    assert_eq!(report.checksum, announced);
    assert!(
        report.reason.starts_with("checksum mismatch"),
        "{}",
        report.reason
    );

    // The running configuration announced again (as after a reconnection) is still applied.
    notify_config(&broker, &device, &checksum, &url).await;
    let report = next_config_report(&mut link, &device).await;
    assert_eq!(report.status, ConfigOutcome::Applied);
    assert_eq!(report.checksum, checksum);
    device.stop().await;
}

#[tokio::test]
async fn a_busy_server_is_asked_again_and_a_refusal_is_reported_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let broker = TestBroker::start().await;
    let device = broker.connected_device(broker.device()).await;
    let mut link = broker.watch(&up(&device, UpChannel::ConfigStatus)).await;
    let archive = vec![
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let checksum = md5_hex(&archive);
    // Two 503s (as when a whole fleet downloads at once), then the archive; `/gone` is a
    // refusal no retry can fix.
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let app = axum::Router::new()
        .route(
            "/config.tar.gz",
            axum::routing::get(move || {
                let archive = archive.clone();
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    use axum::response::IntoResponse;
                    if n < 2 {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                        )
                            .into_response()
                    } else {
                        archive.into_response()
                    }
                }
            }),
        )
        .route(
            "/gone",
            axum::routing::get(|| async { axum::http::StatusCode::FORBIDDEN }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    notify_config(
        &broker,
        &device,
        &checksum,
        &format!("http://{addr}/config.tar.gz"),
    )
    .await;
    let report = next_config_report(&mut link, &device).await;
    assert_eq!(report.status, ConfigOutcome::Applied, "{}", report.reason);
    assert_eq!(
        asked.load(Ordering::SeqCst),
        3,
        "two busy answers, then the archive"
    );

    let other = "0123456789abcdef0123456789abcdef";
    notify_config(&broker, &device, other, &format!("http://{addr}/gone")).await;
    let report = next_config_report(&mut link, &device).await;
    assert_eq!(report.status, ConfigOutcome::Error);
    assert!(report.reason.contains("403"), "{}", report.reason);
    device.stop().await;
}
