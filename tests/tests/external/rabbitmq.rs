//! fleetmq's bridge on RabbitMQ (Debian's `rabbitmq-server`, its MQTT plugin), which asks
//! fleetmq's auth service (`rabbitmq_auth_backend_http`) who each client is and what it may
//! do. Two nodes clustered on this machine, fleetmq's bridge on the first and the devices on
//! the second, so every message crosses nodes; one cluster for the whole scenario (its nodes
//! take ~15 s to start).

use fleetmq_api::routes::broker_auth::BrokerAuthConfig;
use fleetmq_bridge::external::ExternalBroker;
use fleetmq_protocol::{CommandRequest, CommandResult, CommandStatus, DownChannel, UpChannel};
use fleetmq_tests::mqtt::{MqttClient, WAIT};
use fleetmq_tests::rabbitmq::{RabbitMq, free_port};
use fleetmq_tests::{TestApp, seconds_ago};
use rumqttc::{ConnectionError, SubscribeReasonCode};
use serde_json::json;

use crate::{BRIDGE_PASSWORD, BRIDGE_USER, ONLINE};

const SECRET: &str = "broker-auth-secret-for-rabbitmq";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_rabbitmq_is_admitted_and_confined_by_fleetmqs_answers() {
    let mqtt_ports = [
        free_port().expect("a free port"),
        free_port().expect("a free port"),
    ];
    let mqtt_port = mqtt_ports[0];
    let bridge = (BRIDGE_USER.to_owned(), BRIDGE_PASSWORD.to_owned());
    let app = TestApp::spawn_with(|config| {
        config.external_broker = Some(ExternalBroker {
            credentials: Some(bridge.clone()),
            ..ExternalBroker::new(format!("mqtt://127.0.0.1:{mqtt_port}"))
        });
        config.api.broker_auth = Some(BrokerAuthConfig {
            bridge: Some(bridge.clone()),
            ..BrokerAuthConfig::new(SECRET.to_owned())
        });
    })
    .await;
    let auth_base = format!(
        "http://rabbitmq:{SECRET}@{}/broker-auth/rabbitmq",
        app.http_addr()
    );
    let [bridge_node, rabbit] = RabbitMq::start_cluster(mqtt_ports, &auth_base, None)
        .await
        .expect("a two-node rabbitmq cluster starts");
    // The bridge logged in through the auth service and subscribed to every device's uplink.
    app.eventually_within(std::time::Duration::from_secs(30), "/healthz", "", |r| {
        r.body["broker"] == "ok"
    })
    .await;
    let t = app.two_organizations().await;
    let (a, b) = (&t.device_a, &t.device_b);

    let mut device = MqttClient::connect(a.options(rabbit.mqtt_addr))
        .await
        .unwrap_or_else(|e| panic!("device a admitted: {e}\n{}", rabbit.log()));
    device
        .publish(&a.up(UpChannel::Presence), ONLINE, true)
        .await;
    device
        .subscribe(&[&a.down(DownChannel::CommandRequest)])
        .await;
    let connections = format!("/api/v1/controller/device/{}/connection/", a.id);
    app.eventually(&connections, &t.manager_a, |r| {
        r.body["results"][0]["is_working"] == true
    })
    .await;

    let payload = json!({"timestamp": seconds_ago(1).to_string(), "metrics": {"cpu": 7}});
    device
        .publish(&a.up(UpChannel::Telemetry), &payload.to_string(), false)
        .await;
    let telemetry = format!("/api/v1/controller/device/{}/telemetry/", a.id);
    let stored = app
        .eventually(&telemetry, &t.manager_a, |r| r.body["count"] == 1)
        .await;
    assert_eq!(stored.body["latest"]["metrics"]["cpu"], 7);

    let commands = format!("/api/v1/controller/device/{}/command/", a.id);
    let created = app
        .post(&commands, &t.manager_a, json!({"type": "reboot"}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let message = device.next_publish().await;
    let request = CommandRequest::parse(&message.payload).expect("a command request");
    assert_eq!(request.id.to_string(), created.str("id"));
    let result = CommandResult {
        id: request.id,
        status: CommandStatus::Success,
        output: String::new(),
        exit_code: 0,
    };
    device
        .publish(
            &a.up(UpChannel::CommandResult),
            &String::from_utf8(result.to_bytes()).expect("utf-8"),
            false,
        )
        .await;
    app.eventually(
        &format!("{commands}{}/", created.str("id")),
        &t.manager_a,
        |r| r.body["status"] == "success",
    )
    .await;

    // A wrong key: RabbitMQ asks fleetmq, which says deny.
    let mut wrong = a.options(rabbit.mqtt_addr);
    wrong.set_credentials(a.id.clone(), b.key.clone());
    assert!(
        matches!(
            MqttClient::connect(wrong).await,
            Err(ConnectionError::ConnectionRefused(_))
        ),
        "a wrong key is refused"
    );

    // Another device's commands: the subscription is refused (RabbitMQ checks filters, and
    // fleetmq answers with the containment rule), by SUBACK failure or by closing.
    let mut nosy = MqttClient::connect(b.options(rabbit.mqtt_addr))
        .await
        .expect("device b admitted");
    // (no SUBACK at all within the wait also means not granted).
    let filter = a.down(DownChannel::CommandRequest);
    let filters = [filter.as_str()];
    let subscribing = nosy.try_subscribe(&filters);
    let refused = match tokio::time::timeout(WAIT, subscribing).await {
        Ok(Ok(codes)) => codes == [SubscribeReasonCode::Failure],
        Ok(Err(_)) | Err(_) => true,
    };
    assert!(refused, "b may not read a's commands");

    crate::batch_of_100_upgrades(&app, rabbit.mqtt_addr).await;
    drop(rabbit);
    drop(bridge_node);
    app.shutdown().await;
}
