//! MQTT 5, checked with stock v5 clients: Eclipse paho-mqtt (`tests/paho/mqtt5_check.py`,
//! one test per scenario) and rumqttc's v5 client. Each scenario says what it checks.

use crate::paho::run_script;
use crate::{Fleet, fleet, sandbox_on};

async fn scenario(f: &Fleet, name: &str) {
    run_script(
        "mqtt5_check.py",
        &f.app,
        name,
        &[&f.device_a, &f.device_b],
        Some(("alice", &f.operator_token)),
    )
    .await;
}

#[tokio::test]
async fn mqtt5_connack_announces_the_limits_an_assigned_id_and_a_keep_alive() {
    scenario(&fleet().await, "connack").await;
}

#[tokio::test]
async fn mqtt5_refusals_are_reason_codes_and_the_connection_goes_on() {
    scenario(&fleet().await, "reason-codes").await;
}

#[tokio::test]
async fn mqtt5_properties_travel_and_v5_and_v311_clients_talk_to_each_other() {
    scenario(&fleet().await, "mixed").await;
}

#[tokio::test]
async fn mqtt5_queued_messages_past_their_expiry_are_dropped() {
    let f = fleet().await;
    scenario(&f, "message-expiry").await;
    let metrics = f.app.metrics().await;
    assert!(
        metrics.contains("fleetmq_mqtt_messages_dropped_total{reason=\"expired\"} 1"),
        "the expired message is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn mqtt5_sessions_end_their_expiry_interval_after_the_connection() {
    let f = fleet().await;
    scenario(&f, "session-expiry").await;
    let metrics = f.app.metrics().await;
    assert!(
        metrics.contains("fleetmq_mqtt_sessions_expired_total 1"),
        "the expired session is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn mqtt5_wills_wait_their_delay_and_not_for_a_session_that_came_back() {
    scenario(&fleet().await, "will").await;
}

#[tokio::test]
async fn mqtt5_subscription_options_and_identifiers_apply() {
    scenario(&fleet().await, "options").await;
}

#[tokio::test]
async fn mqtt5_topic_aliases_work_both_ways_and_are_bounded() {
    scenario(&fleet().await, "aliases").await;
}

#[tokio::test]
async fn mqtt5_receive_maximum_and_maximum_packet_size_are_kept_both_ways() {
    let f = fleet().await;
    scenario(&f, "flow").await;
    let metrics = f.app.metrics().await;
    assert!(
        metrics.contains("fleetmq_mqtt_messages_dropped_total{reason=\"too_large\"} 1"),
        "the message too large for the client is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn mqtt5_a_session_taken_over_is_told_so() {
    scenario(&fleet().await, "takeover").await;
}

#[tokio::test]
async fn mqtt5_shared_subscriptions_spread_messages_over_the_group() {
    scenario(&fleet().await, "shared").await;
}

#[tokio::test]
async fn mqtt5_a_session_with_its_messages_and_properties_survives_a_restart() {
    let mut f = fleet().await;
    scenario(&f, "persist-before").await;
    f.app.restart_with(sandbox_on).await;
    scenario(&f, "persist-after").await;
}
