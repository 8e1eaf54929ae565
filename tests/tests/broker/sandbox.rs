//! Wildcard subscriptions are granted and filtered per message: a sandbox client's `#` sees
//! the sandbox and nothing of the fleet, an operator's `fleetmq/v1/+/+/up/telemetry` sees its
//! own organizations' devices only.

use fleetmq_protocol::UpChannel;
use fleetmq_tests::mqtt::MqttClient;
use rumqttc::{QoS, SubscribeReasonCode};

use crate::{anonymous, fleet};

#[tokio::test]
async fn a_wildcard_sandbox_subscriber_gets_the_sandbox_and_nothing_of_the_fleet() {
    let f = fleet().await;
    // Connected first: their retained presence is there to be (not) replayed.
    let mut a = f.device(&f.device_a).await;
    let mut b = f.device(&f.device_b).await;
    let mut watcher = MqttClient::connect(anonymous(&f.app, "watcher"))
        .await
        .expect("sandbox client connects");
    assert_eq!(
        watcher.subscribe(&["#", "+/+", "$SYS/#"]).await,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            // Only `$SYS` topics could match: never readable in the sandbox.
            SubscribeReasonCode::Failure,
        ]
    );
    a.publish(&f.device_a.up(UpChannel::Telemetry), "{}", false)
        .await;
    b.publish(&f.device_b.up(UpChannel::Telemetry), "{}", false)
        .await;
    let mut talker = MqttClient::connect(anonymous(&f.app, "talker"))
        .await
        .expect("sandbox client connects");
    for topic in ["a/b", "x", "done"] {
        talker.publish(topic, topic, false).await;
    }
    // Everything published before `done` that `#` could deliver came before it, once.
    let mut received = Vec::new();
    loop {
        let publish = watcher.next_publish().await;
        received.push(publish.topic.clone());
        if publish.topic == "done" {
            break;
        }
    }
    assert_eq!(received, ["a/b", "x", "done"]);
}

#[tokio::test]
async fn an_operator_wildcard_gets_only_its_organizations_devices() {
    let f = fleet().await;
    let mut operator = MqttClient::connect(f.operator("alice-watch"))
        .await
        .expect("operator connects");
    assert_eq!(
        operator
            .subscribe(&["fleetmq/v1/+/+/up/telemetry", "fleetmq/v1/org-b/#"])
            .await,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
        ]
    );
    let mut a = f.device(&f.device_a).await;
    let mut b = f.device(&f.device_b).await;
    for round in 0..2 {
        b.publish(&f.device_b.up(UpChannel::Telemetry), "{}", false)
            .await;
        a.publish(&f.device_a.up(UpChannel::Telemetry), "{}", false)
            .await;
        let publish = operator.next_publish().await;
        assert_eq!(
            publish.topic,
            f.device_a.up(UpChannel::Telemetry),
            "round {round}: org-b's telemetry must never reach an operator of org-a"
        );
    }
}
