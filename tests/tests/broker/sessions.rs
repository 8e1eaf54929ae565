//! Persistent sessions (clean session 0) keep their subscriptions and queue QoS 1/2
//! messages while offline, and those and retained messages survive a restart of the server.

use fleetmq_tests::mqtt::WAIT;
use rumqttc::{AsyncClient, ConnAck, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::time::timeout;

use crate::{anonymous, fleet, sandbox_on};

/// Connects; returns the client, its event loop and the CONNACK.
async fn connect(options: MqttOptions) -> (AsyncClient, EventLoop, ConnAck) {
    let (client, mut events) = AsyncClient::new(options, 64);
    loop {
        let event = timeout(WAIT, events.poll()).await.expect("in time");
        if let Event::Incoming(Packet::ConnAck(ack)) = event.expect("connects") {
            return (client, events, ack);
        }
    }
}

async fn until(events: &mut EventLoop, mut done: impl FnMut(&Packet) -> bool) -> Packet {
    loop {
        let event = timeout(WAIT, events.poll()).await.expect("in time");
        if let Event::Incoming(packet) = event.expect("connected")
            && done(&packet)
        {
            return packet;
        }
    }
}

#[tokio::test]
async fn a_persistent_session_gets_what_was_published_while_it_was_away_even_across_a_restart() {
    let mut f = fleet().await;
    let keeper = |app: &fleetmq_tests::TestApp| {
        let mut options = anonymous(app, "keeper");
        options.set_clean_session(false);
        options
    };
    let (client, mut events, ack) = connect(keeper(&f.app)).await;
    assert!(!ack.session_present);
    client
        .subscribe("keep/#", QoS::ExactlyOnce)
        .await
        .expect("queued");
    until(&mut events, |p| matches!(p, Packet::SubAck(_))).await;
    client.disconnect().await.expect("queued");
    let _ = timeout(WAIT, events.poll()).await;
    drop(events);

    // Published (and acknowledged) while the keeper is away, before the restart.
    let (publisher, mut pub_events, _) = connect(anonymous(&f.app, "publisher")).await;
    publisher
        .publish("keep/1", QoS::AtLeastOnce, false, "one")
        .await
        .expect("queued");
    until(&mut pub_events, |p| matches!(p, Packet::PubAck(_))).await;
    publisher
        .publish("keep/2", QoS::ExactlyOnce, false, "two")
        .await
        .expect("queued");
    until(&mut pub_events, |p| matches!(p, Packet::PubComp(_))).await;
    publisher
        .publish("keep/0", QoS::AtMostOnce, false, "zero, not kept offline")
        .await
        .expect("queued");
    publisher
        .publish("kept/retained", QoS::AtLeastOnce, true, "still here")
        .await
        .expect("queued");
    until(&mut pub_events, |p| matches!(p, Packet::PubAck(_))).await;
    drop(pub_events);

    f.app.restart_with(sandbox_on).await;

    let (client, mut events, ack) = connect(keeper(&f.app)).await;
    assert!(ack.session_present, "the session survived the restart");
    let mut got = Vec::new();
    for _ in 0..2 {
        if let Packet::Publish(p) = until(&mut events, |p| matches!(p, Packet::Publish(_))).await {
            got.push((p.topic.clone(), p.qos, p.payload.clone()));
        }
    }
    assert_eq!(
        got,
        [
            ("keep/1".to_owned(), QoS::AtLeastOnce, "one".into()),
            ("keep/2".to_owned(), QoS::ExactlyOnce, "two".into()),
        ]
    );
    // The subscription itself survived too: a new message arrives without subscribing.
    let (publisher, mut pub_events, _) = connect(anonymous(&f.app, "publisher")).await;
    publisher
        .publish("keep/3", QoS::AtLeastOnce, false, "three")
        .await
        .expect("queued");
    until(&mut pub_events, |p| matches!(p, Packet::PubAck(_))).await;
    match until(&mut events, |p| matches!(p, Packet::Publish(_))).await {
        Packet::Publish(p) => assert_eq!(p.topic, "keep/3"),
        other => panic!("{other:?}"),
    }
    // And so did the retained message.
    client
        .subscribe("kept/+", QoS::AtLeastOnce)
        .await
        .expect("queued");
    match until(&mut events, |p| matches!(p, Packet::Publish(_))).await {
        Packet::Publish(p) => {
            assert_eq!((p.topic.as_str(), p.retain), ("kept/retained", true));
            assert_eq!(&p.payload[..], b"still here");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_clean_session_forgets_what_a_persistent_one_kept() {
    let f = fleet().await;
    let mut persistent = anonymous(&f.app, "forgetful");
    persistent.set_clean_session(false);
    let (client, mut events, _) = connect(persistent.clone()).await;
    client
        .subscribe("gone/#", QoS::AtLeastOnce)
        .await
        .expect("queued");
    until(&mut events, |p| matches!(p, Packet::SubAck(_))).await;
    drop(events);
    let (client, mut events, ack) = connect(anonymous(&f.app, "forgetful")).await;
    assert!(!ack.session_present);
    let (publisher, mut pub_events, _) = connect(anonymous(&f.app, "publisher")).await;
    publisher
        .publish("gone/1", QoS::AtLeastOnce, false, "x")
        .await
        .expect("queued");
    until(&mut pub_events, |p| matches!(p, Packet::PubAck(_))).await;
    // No subscription any more: the first message is the one subscribed for now.
    client
        .subscribe("here/#", QoS::AtLeastOnce)
        .await
        .expect("queued");
    until(&mut events, |p| matches!(p, Packet::SubAck(_))).await;
    publisher
        .publish("here/1", QoS::AtLeastOnce, false, "y")
        .await
        .expect("queued");
    until(&mut pub_events, |p| matches!(p, Packet::PubAck(_))).await;
    match until(&mut events, |p| matches!(p, Packet::Publish(_))).await {
        Packet::Publish(p) => assert_eq!(p.topic, "here/1"),
        other => panic!("{other:?}"),
    }
}
