//! fleetmq's bridge on an external broker: a real Mosquitto (Debian's package) on a loopback
//! port enforces the devices' rights, fleetmq (`--mqtt-broker`) subscribes to their uplink
//! and publishes their commands through it, and the REST API shows what they did.
//!
//! fleetmq keeps Mosquitto's password and ACL files from the store (`--mosquitto-files`) and
//! signals it to reread them, so Mosquitto enforces fleetmq's rules: each device may publish
//! under its own `up/` and read its own `down/`, the bridge everything under `fleetmq/`.

mod rabbitmq;

use fleetmq_bridge::external::ExternalBroker;
use fleetmq_bridge::mosquitto_files::MosquittoFiles;
use fleetmq_protocol::{
    CommandRequest, CommandResult, CommandStatus, DownChannel, ErrorNotice, UpChannel,
};
use std::time::Duration;

use fleetmq::Config;
use fleetmq_sim::{DeviceConfig as SimConfig, SimDevice};
use fleetmq_tests::firmware::sim_firmware;
use fleetmq_tests::mosquitto::{Mosquitto, write_password_file};
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient, WAIT};
use fleetmq_tests::{TestApp, TwoOrganizations, seconds_ago};
use rumqttc::{ConnectReturnCode, ConnectionError};
use serde_json::json;
use tempfile::TempDir;

pub(crate) const BRIDGE_USER: &str = "fleetmq-bridge";
pub(crate) const BRIDGE_PASSWORD: &str = "bridge-password-for-tests";
/// Mosquitto's pid file in the setup's directory (fleetmq signals that process).
const PID_FILE: &str = "mosquitto.pid";
pub(crate) const ONLINE: &str = r#"{"status":"online","model":"TL-WR841N","os":"OpenWrt 23.05"}"#;

/// Mosquitto with the bridge's user, fleetmq on it keeping Mosquitto's password and ACL
/// files from the store, two organizations with a device each.
struct Setup {
    app: TestApp,
    mosquitto: Mosquitto,
    orgs: TwoOrganizations,
    dir: TempDir,
}

async fn setup() -> Setup {
    setup_with("").await
}

/// The external broker's configuration: Mosquitto's own lines plus `extra`.
async fn setup_with(extra: &str) -> Setup {
    setup_sharing(extra, false).await
}

/// [`setup_with`], with fleetmq's telemetry on a shared subscription if `shared_uplink`.
async fn setup_sharing(extra: &str, shared_uplink: bool) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let passwd = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    let pid_file = dir.path().join(PID_FILE);
    // Mosquitto needs its files to start; fleetmq rewrites them once it runs.
    write_password_file(&passwd, &[(BRIDGE_USER, BRIDGE_PASSWORD)])
        .await
        .expect("password file");
    std::fs::write(
        &acl,
        format!("user {BRIDGE_USER}\ntopic readwrite fleetmq/#\n"),
    )
    .expect("acl file");
    let mosquitto = Mosquitto::start(
        dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\npid_file {}\n{extra}",
            passwd.display(),
            acl.display(),
            pid_file.display()
        ),
    )
    .await
    .expect("mosquitto starts");
    let configure = external_config(&mosquitto, dir.path());
    let app = TestApp::spawn_with(move |config: &mut Config| {
        configure(config);
        if let Some(external) = &mut config.external_broker {
            external.shared_uplink = shared_uplink;
        }
    })
    .await;
    assert_eq!(
        app.mqtt_addr, mosquitto.addr,
        "devices connect to the external broker"
    );
    let orgs = app.two_organizations().await;
    // Up once the bridge is connected and subscribed to the uplink.
    app.eventually("/healthz", "", |r| r.body["broker"] == "ok")
        .await;
    Setup {
        app,
        mosquitto,
        orgs,
        dir,
    }
}

/// fleetmq on `mosquitto`, keeping its files in `dir`.
fn external_config(mosquitto: &Mosquitto, dir: &std::path::Path) -> impl Fn(&mut Config) {
    let url = format!("mqtt://{}", mosquitto.addr);
    let bridge = (BRIDGE_USER.to_owned(), BRIDGE_PASSWORD.to_owned());
    let dir = dir.to_owned();
    move |config| {
        config.external_broker = Some(ExternalBroker {
            credentials: Some(bridge.clone()),
            ..ExternalBroker::new(url.clone())
        });
        config.mosquitto_files = Some(MosquittoFiles {
            dir: dir.clone(),
            pid_file: Some(dir.join(PID_FILE)),
            bridge: Some(bridge.clone()),
        });
    }
}

/// Connects a device once fleetmq has written it into Mosquitto's files and Mosquitto has
/// reread them (neither sends an event: retry for a while on "not authorized").
async fn device(setup: &Setup, identity: &DeviceIdentity) -> MqttClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match MqttClient::connect(identity.options(setup.mosquitto.addr)).await {
            Ok(mut client) => {
                client
                    .publish(&identity.up(UpChannel::Presence), ONLINE, true)
                    .await;
                return client;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "device never admitted: {e}; mosquitto log: {}; password file: {}",
                setup.mosquitto.log(),
                std::fs::read_to_string(setup.dir.path().join("passwd")).unwrap_or_default()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn telemetry_and_a_command_go_through_the_external_broker() {
    let s = setup().await;
    let a = &s.orgs.device_a;
    let token = &s.orgs.manager_a;
    let mut client = device(&s, a).await;
    client
        .subscribe(&[&a.down(DownChannel::CommandRequest)])
        .await;

    // Presence from the device's own retained message: the MQTT connection appears online.
    let connections = format!("/api/v1/controller/device/{}/connection/", a.id);
    s.app
        .eventually(&connections, token, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;
    let detail = s
        .app
        .get(&format!("/api/v1/controller/device/{}/", a.id), token)
        .await;
    assert_eq!(detail.body["model"], "TL-WR841N");

    sample_is_stored(&s, &mut client, a, token, 42).await;

    let commands = format!("/api/v1/controller/device/{}/command/", a.id);
    let created = s
        .app
        .post(
            &commands,
            token,
            json!({"type": "custom", "input": {"command": "uptime"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let message = client.next_publish().await;
    assert_eq!(message.topic, a.down(DownChannel::CommandRequest));
    let request = CommandRequest::parse(&message.payload).expect("a command request");
    assert_eq!(request.id.to_string(), created.str("id"));
    let result = CommandResult {
        id: request.id,
        status: CommandStatus::Success,
        output: "up 3 days".to_owned(),
        exit_code: 0,
    };
    let result = String::from_utf8(result.to_bytes()).expect("utf-8");
    client
        .publish(&a.up(UpChannel::CommandResult), &result, false)
        .await;
    let done = s
        .app
        .eventually(&format!("{commands}{}/", created.str("id")), token, |r| {
            r.body["status"] == "success"
        })
        .await;
    assert_eq!(done.body["output"], "up 3 days");

    // The will, fired by the broker when the device vanishes, turns it offline.
    client.drop_connection();
    s.app
        .eventually(&connections, token, |r| {
            r.body["results"][0]["is_working"] == false
        })
        .await;
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}

/// The device's first sample, `{"cpu": cpu}`, reaches the REST API.
async fn sample_is_stored(
    s: &Setup,
    client: &mut MqttClient,
    device: &DeviceIdentity,
    token: &str,
    cpu: u64,
) {
    let payload = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"cpu": cpu}});
    client
        .publish(
            &device.up(UpChannel::Telemetry),
            &payload.to_string(),
            false,
        )
        .await;
    let telemetry = format!("/api/v1/controller/device/{}/telemetry/", device.id);
    let stored = s
        .app
        .eventually(&telemetry, token, |r| r.body["count"] == 1)
        .await;
    assert_eq!(stored.body["latest"]["metrics"]["cpu"], cpu);
}

/// A value of `/metrics` (0 when absent).
async fn metric(app: &TestApp, name: &str) -> u64 {
    let prefix = format!("{name} ");
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn with_a_shared_uplink_telemetry_goes_through_the_share_group_and_the_rest_does_not() {
    let s = setup_sharing("", true).await;
    let a = &s.orgs.device_a;
    let token = &s.orgs.manager_a;
    let mut client = device(&s, a).await;
    client.subscribe(&[&a.down(DownChannel::Error)]).await;
    // Presence still reaches the device-plane client: the connection appears online.
    let connections = format!("/api/v1/controller/device/{}/connection/", a.id);
    s.app
        .eventually(&connections, token, |r| {
            r.body["results"][0]["is_working"] == true
        })
        .await;

    // A malformed sample is answered by this node's member of the share group …
    client
        .publish(&a.up(UpChannel::Telemetry), "this is not json", false)
        .await;
    let notice = client.next_publish().await;
    assert_eq!(notice.topic, a.down(DownChannel::Error));
    let notice = ErrorNotice::parse(&notice.payload).expect("an error notice");
    assert_eq!(notice.topic, a.up(UpChannel::Telemetry));
    // … and a good one stored by it.
    sample_is_stored(&s, &mut client, a, token, 7).await;
    assert_eq!(
        metric(&s.app, "fleetmq_shared_uplink_received_total").await,
        2,
        "both samples came through the shared subscription"
    );
    assert_eq!(metric(&s.app, "fleetmq_shared_uplink_connected").await, 1);
    // The device-plane client took the presence only: no sample came to it as well.
    assert_eq!(
        metric(&s.app, "fleetmq_external_uplink_received_total").await,
        1
    );
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}

#[tokio::test]
async fn the_external_broker_refuses_a_wrong_key_and_another_devices_topics() {
    let s = setup().await;
    let (a, b) = (&s.orgs.device_a, &s.orgs.device_b);
    // Admitted first, so the files are loaded before the wrong key is tried.
    let mut client = device(&s, a).await;

    let mut wrong = a.options(s.mosquitto.addr);
    wrong.set_credentials(a.id.clone(), b.key.clone());
    match MqttClient::connect(wrong).await {
        Err(ConnectionError::ConnectionRefused(code)) => assert!(
            matches!(
                code,
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            ),
            "{code:?}"
        ),
        Err(e) => panic!("refused differently: {e}"),
        Ok(_) => panic!("a wrong key was admitted"),
    }

    // Mosquitto grants the subscription and checks read access per message, as fleetmq's
    // own broker does: a's subscription to b's commands delivers nothing of b's.
    client
        .subscribe(&[
            &b.down(DownChannel::CommandRequest),
            &a.down(DownChannel::CommandRequest),
        ])
        .await;
    let mut other = device(&s, b).await;
    other
        .subscribe(&[&b.down(DownChannel::CommandRequest)])
        .await;
    for d in [a, b] {
        let connections = format!("/api/v1/controller/device/{}/connection/", d.id);
        s.app
            .eventually(&connections, &s.app.admin_token, |r| {
                r.body["results"][0]["is_working"] == true
            })
            .await;
    }
    let command = |d: &DeviceIdentity| {
        let app = &s.app;
        let path = format!("/api/v1/controller/device/{}/command/", d.id);
        async move {
            let created = app
                .post(&path, &app.admin_token, json!({"type": "reboot"}))
                .await;
            assert_eq!(created.status, 201, "{:?}", created.body);
            created.str("id")
        }
    };
    let for_b = command(b).await;
    let delivered = other.next_publish().await;
    assert_eq!(
        CommandRequest::parse(&delivered.payload)
            .map(|r| r.id.to_string())
            .ok(),
        Some(for_b.clone())
    );
    // b's command went out first; a's first message is its own.
    let for_a = command(a).await;
    let first = client.next_publish().await;
    assert_eq!(first.topic, a.down(DownChannel::CommandRequest));
    assert_eq!(
        CommandRequest::parse(&first.payload)
            .map(|r| r.id.to_string())
            .ok(),
        Some(for_a)
    );
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}

#[tokio::test]
async fn a_deactivated_device_is_cut_off_by_the_external_broker_at_once() {
    let s = setup().await;
    let a = &s.orgs.device_a;
    let mut client = device(&s, a).await;
    let deactivate = s
        .app
        .call(
            "POST",
            &format!("/api/v1/controller/device/{}/deactivate/", a.id),
            Some(&s.app.admin_token),
            None,
        )
        .await;
    assert_eq!(deactivate.status, 200, "{:?}", deactivate.body);
    // fleetmq rewrites the files without it and signals Mosquitto, which checks connected
    // clients again.
    client.closed_by_broker().await;
    match MqttClient::connect(a.options(s.mosquitto.addr)).await {
        Err(ConnectionError::ConnectionRefused(_)) => {}
        Err(e) => panic!("refused differently: {e}"),
        Ok(_) => panic!("a deactivated device was admitted"),
    }
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_stopping_with_a_backlog_stops_and_its_next_session_gets_every_message() {
    // A window larger than the bridge's request channel: the lanes hold more messages than
    // the channel holds acknowledgements.
    let s = setup_with("max_inflight_messages 1000\nmax_queued_messages 100000\n").await;
    let a = &s.orgs.device_a;
    let mut client = device(&s, a).await;
    const SAMPLES: i64 = 3000;
    let topic = a.up(UpChannel::Telemetry);
    let now = fleetmq_store::Timestamp::now().as_micros();
    for n in 0..SAMPLES {
        // Distinct timestamps, oldest first, all in the recent past.
        let at = fleetmq_store::Timestamp::from_micros(now - (SAMPLES - n) * 1000);
        let payload = json!({"timestamp": at.to_string(), "metrics": {"n": n}});
        client.publish_nowait(&topic, &payload.to_string()).await;
    }
    // Its PUBACK comes after Mosquitto has every earlier message of the connection.
    let last = json!({
        "timestamp": fleetmq_store::Timestamp::now().to_string(),
        "metrics": {"n": SAMPLES},
    });
    client.publish(&topic, &last.to_string(), false).await;

    // Mosquitto holds a backlog for the bridge's session; the server stops anyway, and a
    // new one on the same data directory and broker resumes that session.
    let mut app = s.app;
    tokio::time::timeout(
        Duration::from_secs(30),
        app.restart_with(external_config(&s.mosquitto, s.dir.path())),
    )
    .await
    .expect("the server stops (and starts again) with a backlog on the broker");
    let telemetry = format!("/api/v1/controller/device/{}/telemetry/", a.id);
    // At least once: each message stored, some perhaps twice (stored, not yet acknowledged
    // when the first server stopped).
    let stored = app
        .eventually_within(
            Duration::from_secs(60),
            &telemetry,
            &s.orgs.manager_a,
            |r| r.body["count"].as_i64().unwrap_or(0) > SAMPLES,
        )
        .await;
    assert_eq!(stored.body["latest"]["metrics"]["n"], SAMPLES);
    app.shutdown().await;
    s.mosquitto.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_upgrade_of_100_simulated_devices_succeeds_through_the_external_broker() {
    let s = setup().await;
    batch_of_100_upgrades(&s.app, s.mosquitto.addr).await;
    s.app.shutdown().await;
    s.mosquitto.stop().await;
}

/// Registers 100 simulated devices in a new organization `fleet`, connects them to the
/// broker at `broker` (each retries until the broker admits it), upgrades them all in one
/// batch and checks that every one succeeded.
pub(crate) async fn batch_of_100_upgrades(app: &TestApp, broker: std::net::SocketAddr) {
    let admin = app.admin_token.clone();
    let org = app.create_org("fleet").await;
    let (build, _image, _) = sim_firmware(app, &admin, &org, "2.0.0").await;
    let mut sims = Vec::new();
    for i in 0..100 {
        let name = format!("sim-{i}");
        let reply = app
            .post(
                "/api/v1/controller/device/",
                &admin,
                json!({"name": name, "organization": org,
                       "mac_address": fleetmq_tests::mac_for(&name), "model": "sim-board"}),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let mut config = SimConfig::new(
            broker,
            "fleet".to_owned(),
            reply.str("id"),
            reply.str("key"),
        );
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        sims.push(SimDevice::spawn(config));
    }
    for (i, sim) in sims.iter_mut().enumerate() {
        tokio::time::timeout(Duration::from_secs(30), sim.connected())
            .await
            .unwrap_or_else(|_| panic!("simulated device {i} not admitted within 30 s"))
            .expect("simulated device connects");
    }
    let started = app
        .post(
            &format!("/api/v1/firmware-upgrader/build/{build}/upgrade/"),
            &admin,
            json!({"upgrade_all": true}),
        )
        .await;
    assert_eq!(started.status, 201, "{:#}", started.body);
    let batch = format!(
        "/api/v1/firmware-upgrader/batch-upgrade-operation/{}/",
        started.str("batch")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let reply = app.get(&batch, &admin).await;
        if reply.status == 200 && !["in-progress", "idle"].contains(&reply.str("status").as_str()) {
            break reply;
        }
        if tokio::time::Instant::now() > deadline {
            // Which operations are stuck, and where.
            let ops = app
                .get(
                    "/api/v1/firmware-upgrader/upgrade-operation/?page_size=200",
                    &admin,
                )
                .await;
            let stuck: Vec<String> = ops.body["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|op| op["status"] == "in-progress")
                .map(|op| format!("{}: {}", op["device"], op["log"]))
                .collect();
            panic!(
                "batch not done in 60 s: {:#}\nstuck:\n{}",
                reply.body,
                stuck.join("\n")
            );
        }
        // The batch's end sends no event the test can await.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.body["status"], "success", "{:#}", done.body);
    assert_eq!(done.body["progress_report"], "100 out of 100");
}
