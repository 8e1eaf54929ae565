//! Delivery semantics: a message is forwarded at min(publish QoS, granted QoS); a session's
//! queue is bounded and what overflows it is counted in /metrics, never lost silently.

use fleetmq_tests::mqtt::WAIT;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::time::timeout;

use crate::{anonymous, fleet, fleet_with};

/// Connects and subscribes `filter` at `qos`; returns once the SUBACK is in.
async fn subscriber(options: MqttOptions, filter: &str, qos: QoS) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(options, 64);
    client.subscribe(filter, qos).await.expect("queued");
    loop {
        let event = timeout(WAIT, events.poll()).await.expect("in time");
        if let Event::Incoming(Packet::SubAck(_)) = event.expect("connected") {
            return (client, events);
        }
    }
}

/// Publishes and drives the event loop until the publish is complete (PUBACK / PUBCOMP).
async fn publish(
    client: &AsyncClient,
    events: &mut EventLoop,
    topic: &str,
    qos: QoS,
    payload: Vec<u8>,
) {
    client
        .publish(topic, qos, false, payload)
        .await
        .expect("queued");
    if qos == QoS::AtMostOnce {
        // Flushed once the event loop reports it sent.
        loop {
            let event = timeout(WAIT, events.poll()).await.expect("in time");
            if let Event::Outgoing(rumqttc::Outgoing::Publish(_)) = event.expect("connected") {
                return;
            }
        }
    }
    loop {
        let event = timeout(WAIT, events.poll()).await.expect("in time");
        match event.expect("connected") {
            Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => return,
            Event::Incoming(Packet::PubComp(_)) if qos == QoS::ExactlyOnce => return,
            _ => {}
        }
    }
}

/// The next PUBLISH delivered on `events`.
async fn next_publish(events: &mut EventLoop) -> rumqttc::Publish {
    loop {
        let event = timeout(WAIT, events.poll())
            .await
            .expect("a message in time");
        if let Event::Incoming(Packet::Publish(publish)) = event.expect("connected") {
            return publish;
        }
    }
}

#[tokio::test]
async fn messages_are_forwarded_at_the_lower_of_published_and_granted_qos() {
    let f = fleet().await;
    let (_s0, mut at0) = subscriber(anonymous(&f.app, "at0"), "q/#", QoS::AtMostOnce).await;
    let (_s1, mut at1) = subscriber(anonymous(&f.app, "at1"), "q/#", QoS::AtLeastOnce).await;
    let (_s2, mut at2) = subscriber(anonymous(&f.app, "at2"), "q/#", QoS::ExactlyOnce).await;
    let (client, mut events) = AsyncClient::new(anonymous(&f.app, "pub"), 64);
    for (topic, qos) in [
        ("q/0", QoS::AtMostOnce),
        ("q/1", QoS::AtLeastOnce),
        ("q/2", QoS::ExactlyOnce),
    ] {
        publish(&client, &mut events, topic, qos, topic.as_bytes().to_vec()).await;
    }
    for (events, expected) in [
        (
            &mut at0,
            [QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtMostOnce],
        ),
        (
            &mut at1,
            [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtLeastOnce],
        ),
        (
            &mut at2,
            [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
        ),
    ] {
        for (topic, qos) in ["q/0", "q/1", "q/2"].into_iter().zip(expected) {
            let publish = next_publish(events).await;
            assert_eq!((publish.topic.as_str(), publish.qos), (topic, qos));
        }
    }
}

/// `fleetmq_mqtt_messages_dropped_total{reason="queue_full"}` from /metrics.
async fn dropped_queue_full(app: &fleetmq_tests::TestApp) -> u64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(r#"fleetmq_mqtt_messages_dropped_total{reason="queue_full"} "#)
        })
        .and_then(|value| value.trim().parse().ok())
        .expect("the drop counter is exported")
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_loses_only_what_overflows_its_queue_and_it_is_counted() {
    const QUEUE: usize = 10;
    const SENT: usize = 300;
    let f = fleet_with(|config| config.mqtt_limits.max_queued_messages = QUEUE).await;
    let big = |mut options: MqttOptions| {
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options
    };
    let (_slow, mut slow) =
        subscriber(big(anonymous(&f.app, "slow")), "flood/#", QoS::AtLeastOnce).await;
    // From here `slow` is not polled: its socket fills up and the broker queues for it.
    let (client, mut events) = AsyncClient::new(big(anonymous(&f.app, "flooder")), 64);
    for i in 0..SENT {
        let mut payload = vec![0u8; 64 * 1024];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publish(&client, &mut events, "flood/x", QoS::AtLeastOnce, payload).await;
    }
    // Every publish was acknowledged; what the slow session could not hold was counted.
    let dropped = dropped_queue_full(&f.app).await as usize;
    assert!(
        dropped > 0,
        "{SENT} messages of 64 KiB overflow a queue of {QUEUE}"
    );
    assert!(dropped < SENT - QUEUE);
    let mut received = Vec::new();
    while received.len() + dropped < SENT {
        let publish = next_publish(&mut slow).await;
        let mut index = [0u8; 8];
        index.copy_from_slice(&publish.payload[..8]);
        received.push(u64::from_be_bytes(index));
    }
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );
    // And nothing else is on its way: the next message is one published now.
    publish(
        &client,
        &mut events,
        "flood/end",
        QoS::AtLeastOnce,
        b"end".to_vec(),
    )
    .await;
    let last = next_publish(&mut slow).await;
    assert_eq!(last.topic, "flood/end");
    assert_eq!(dropped_queue_full(&f.app).await as usize, dropped);
}
