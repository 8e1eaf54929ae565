//! Hostile and careless clients over real sockets (issue 9): pipelined packets, QoS 2
//! resends, pre-CONNECT floods and wrong-key floods. Clients here are raw MQTT writers so
//! that each test controls exactly which bytes go out in which write.
//!
//! The cast: device `…a1` (org `acme`, key `pw-a1`) and device `…b1` (org `beta`, key
//! `pw-b1`).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleetmq_broker::{BrokerConfig, Limits};
use support::*;

#[tokio::test]
async fn packets_pipelined_behind_connect_are_answered_without_more_bytes() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut raw = broker.socket_from([127, 0, 0, 1]).await;
    // Keep-alive 0: the broker has no reason to wait for, and the client sends, nothing more.
    let mut burst = connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0);
    burst.extend(subscribe(7, &format!("fleetmq/v1/acme/{DEV_A1}/down/#"), 1));
    burst.extend(PINGREQ);
    raw.send(&burst).await;
    assert_eq!(raw.packet().await, CONNACK_ACCEPTED);
    assert_eq!(raw.packet().await, [0x90, 0x03, 0x00, 0x07, 0x01]);
    assert_eq!(raw.packet().await, PINGRESP);
    broker.stop().await;
}

#[tokio::test]
async fn a_publish_pipelined_behind_connect_is_delivered_and_acknowledged() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut raw = broker.socket_from([127, 0, 0, 1]).await;
    let mut burst = connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0);
    burst.extend(publish(&telemetry_topic(DEV_A1), "early", 1, 3, false));
    raw.send(&burst).await;
    assert_eq!(raw.packet().await, CONNACK_ACCEPTED);
    assert_eq!(raw.packet().await, ack(0x40, 3));
    assert_eq!(broker.uplink.payloads(), ["early"]);
    broker.stop().await;
}

#[tokio::test]
async fn a_second_connect_in_the_same_write_closes_the_connection_at_once() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut raw = broker.socket_from([127, 0, 0, 1]).await;
    let mut burst = connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0);
    burst.extend(connect(DEV_A1, Some((DEV_A1, "pw-a1")), 0));
    raw.send(&burst).await;
    // Only the first is answered; the second is a protocol violation (MQTT-3.1.0-2).
    assert_eq!(raw.until_closed().await, [CONNACK_ACCEPTED.to_vec()]);
    broker.stop().await;
}

#[tokio::test]
async fn a_qos2_publish_resent_before_pubrel_is_taken_once() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut device = broker.device_a().await;
    let topic = telemetry_topic(DEV_A1);

    // Resent before the PUBREC: one PUBREC answers both.
    let mut burst = publish(&topic, "first", 2, 1, false);
    burst.extend(publish(&topic, "first", 2, 1, true));
    burst.extend(PINGREQ);
    device.send(&burst).await;
    let mut answers = packets_until(&mut device, &PINGRESP).await;
    if !answers.contains(&ack(0x50, 1)) {
        answers.push(device.packet().await);
    }
    answers.sort();
    assert_eq!(answers, [ack(0x50, 1), PINGRESP.to_vec()]);

    // Resent after the PUBREC: answered with PUBREC again, still not taken.
    device.send(&publish(&topic, "first", 2, 1, true)).await;
    assert_eq!(device.packet().await, ack(0x50, 1));
    device.send(&ack(0x62, 1)).await;
    assert_eq!(device.packet().await, ack(0x70, 1));

    // Released: the same packet id is a new message again.
    device.send(&publish(&topic, "second", 2, 1, false)).await;
    assert_eq!(device.packet().await, ack(0x50, 1));
    device.send(&ack(0x62, 1)).await;
    assert_eq!(device.packet().await, ack(0x70, 1));

    assert_eq!(broker.uplink.payloads(), ["first", "second"]);
    broker.stop().await;
}

#[tokio::test]
async fn a_qos1_publish_resent_before_its_puback_is_taken_once() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut device = broker.device_a().await;
    let topic = telemetry_topic(DEV_A1);
    let mut burst = publish(&topic, "sample", 1, 4, false);
    burst.extend(publish(&topic, "sample", 1, 4, true));
    burst.extend(PINGREQ);
    device.send(&burst).await;
    let mut answers = packets_until(&mut device, &PINGRESP).await;
    if !answers.contains(&ack(0x40, 4)) {
        answers.push(device.packet().await);
    }
    answers.sort();
    assert_eq!(answers, [ack(0x40, 4), PINGRESP.to_vec()]);
    assert_eq!(broker.uplink.payloads(), ["sample"]);
    broker.stop().await;
}

#[tokio::test]
async fn a_pubrel_for_nothing_is_answered_and_the_session_keeps_working() {
    let broker = TestBroker::start(BrokerConfig::default()).await;
    let mut device = broker.device_a().await;
    // rumqttd's router would drop the link without a word; the front end answers PUBCOMP.
    device.send(&ack(0x62, 77)).await;
    assert_eq!(device.packet().await, ack(0x70, 77));
    device
        .send(&publish(&telemetry_topic(DEV_A1), "after", 1, 5, false))
        .await;
    assert_eq!(device.packet().await, ack(0x40, 5));
    assert_eq!(broker.uplink.payloads(), ["after"]);
    broker.stop().await;
}

#[tokio::test]
async fn more_qos2_messages_awaiting_pubrel_than_allowed_close_the_connection() {
    let broker = TestBroker::start(BrokerConfig {
        limits: Limits {
            max_awaiting_pubrel: 2,
            ..Limits::default()
        },
        ..BrokerConfig::default()
    })
    .await;
    let mut device = broker.device_a().await;
    let topic = telemetry_topic(DEV_A1);
    let mut burst = Vec::new();
    for pkid in 1..=3 {
        burst.extend(publish(&topic, "x", 2, pkid, false));
    }
    device.send(&burst).await;
    device.until_closed().await;
    assert_eq!(broker.uplink.payloads(), ["x", "x"]);
    broker.stop().await;
}

#[tokio::test]
async fn a_device_connects_while_one_host_holds_many_silent_sockets() {
    let broker = TestBroker::start(BrokerConfig {
        max_connections: 4,
        limits: Limits {
            max_pending_connections: 16,
            max_pending_per_address: 4,
            ..Limits::default()
        },
        ..BrokerConfig::default()
    })
    .await;
    // 127.0.0.2 is loopback too: another host as far as the broker can tell.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(broker.socket_from([127, 0, 0, 2]).await);
    }
    // The flooder keeps its share, the first 4 sockets (the accept queue is in order); the
    // rest are closed without a byte.
    for socket in &mut flood[4..] {
        assert!(socket.until_closed().await.is_empty());
    }
    // Silent sockets hold no session slot: authenticated devices get in.
    let _a = broker.device_a().await;
    let mut b = broker.socket_from([127, 0, 0, 1]).await;
    b.send(&connect(DEV_B1, Some((DEV_B1, "pw-b1")), 0)).await;
    assert_eq!(b.packet().await, CONNACK_ACCEPTED);
    for socket in &flood[..4] {
        let mut byte = [0u8; 1];
        let still_open = socket.stream.try_read(&mut byte);
        assert!(matches!(still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    }
    broker.stop().await;
}

const CONNACK_BAD_CREDENTIALS: [u8; 4] = [0x20, 0x02, 0x00, 0x04];
const CONNACK_NOT_AUTHORIZED: [u8; 4] = [0x20, 0x02, 0x00, 0x05];

/// One CONNECT from `source`; the CONNACK the broker answers.
async fn login(broker: &TestBroker, source: [u8; 4], client: &str, key: (&str, &str)) -> Vec<u8> {
    let mut raw = broker.socket_from(source).await;
    raw.send(&connect(client, Some(key), 0)).await;
    raw.packet().await
}

#[tokio::test]
async fn an_address_flooding_wrong_keys_is_refused_before_authentication_and_others_connect() {
    let broker = TestBroker::start(BrokerConfig {
        limits: Limits {
            login_failures_per_address: 5,
            login_failures_per_minute: 1,
            ..Limits::default()
        },
        ..BrokerConfig::default()
    })
    .await;
    // A different username each time: the address, not the identity, runs out.
    for i in 0..5 {
        let user = format!("guess-{i}");
        let answer = login(&broker, [127, 0, 0, 2], &user, (&user, "wrong")).await;
        assert_eq!(answer, CONNACK_BAD_CREDENTIALS);
    }
    let evaluated = broker.auth.calls.load(Ordering::Relaxed);
    for i in 5..50 {
        let user = format!("guess-{i}");
        let answer = login(&broker, [127, 0, 0, 2], &user, (&user, "wrong")).await;
        assert_eq!(answer, CONNACK_NOT_AUTHORIZED);
    }
    // Refused fast: the authenticator never saw them. A valid device from that address is
    // refused too; from another address it connects.
    assert_eq!(broker.auth.calls.load(Ordering::Relaxed), evaluated);
    let from_flooder = login(&broker, [127, 0, 0, 2], DEV_B1, (DEV_B1, "pw-b1")).await;
    assert_eq!(from_flooder, CONNACK_NOT_AUTHORIZED);
    let elsewhere = login(&broker, [127, 0, 0, 1], DEV_B1, (DEV_B1, "pw-b1")).await;
    assert_eq!(elsewhere, CONNACK_ACCEPTED);
    broker.stop().await;
}

#[tokio::test]
async fn an_identity_guessed_from_many_addresses_is_locked_after_failures_in_a_row() {
    let broker = TestBroker::start(BrokerConfig {
        limits: Limits {
            login_failures_per_identity: 3,
            login_backoff_max: Duration::from_secs(60),
            ..Limits::default()
        },
        ..BrokerConfig::default()
    })
    .await;
    for host in 2..5 {
        let answer = login(&broker, [127, 0, 0, host], DEV_A1, (DEV_A1, "wrong")).await;
        assert_eq!(answer, CONNACK_BAD_CREDENTIALS);
    }
    let evaluated = broker.auth.calls.load(Ordering::Relaxed);
    let guess = login(&broker, [127, 0, 0, 5], DEV_A1, (DEV_A1, "wrong")).await;
    assert_eq!(guess, CONNACK_NOT_AUTHORIZED);
    assert_eq!(broker.auth.calls.load(Ordering::Relaxed), evaluated);
    // Other identities are not affected.
    let other = login(&broker, [127, 0, 0, 5], DEV_B1, (DEV_B1, "pw-b1")).await;
    assert_eq!(other, CONNACK_ACCEPTED);
    broker.stop().await;
}

/// An MQTT 5 CONNECT: clean start, no properties, anonymous.
fn connect_v5(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0x02]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.push(0);
    put_str(&mut body, client_id);
    frame(0x10, &body)
}

/// Well-formed MQTT 5 client packets (with properties) to mutate, and packets only a server
/// sends, which rumqttd's v5 decoder would panic on.
fn v5_seeds() -> Vec<Vec<u8>> {
    let mut publish = Vec::new();
    put_str(&mut publish, "a/b");
    publish.extend_from_slice(&[0, 7]);
    // payload format 1, expiry 10, topic alias 1, user property k=v, correlation "c"
    let properties = [
        0x01, 1, 0x02, 0, 0, 0, 10, 0x23, 0, 1, 0x26, 0, 1, b'k', 0, 1, b'v', 0x09, 0, 1, b'c',
    ];
    publish.push(properties.len() as u8);
    publish.extend_from_slice(&properties);
    publish.extend_from_slice(b"payload");
    let mut subscribe = vec![0, 8, 2, 0x0B, 5];
    put_str(&mut subscribe, "x/#");
    subscribe.push(0b0010_1101);
    let mut unsubscribe = vec![0, 9, 0];
    put_str(&mut unsubscribe, "x/#");
    vec![
        frame(0x32, &publish),
        frame(0x82, &subscribe),
        frame(0xA2, &unsubscribe),
        frame(0x40, &[0, 7, 0x87, 3, 0x1F, 0, 0]),
        frame(0x50, &[0, 7, 0x10, 0]),
        frame(0x62, &[0, 7, 0x92, 0]),
        frame(0x70, &[0, 7, 0, 0]),
        frame(0xE0, &[0x04, 5, 0x11, 0, 0, 0, 9]),
        frame(0xF0, &[0x18, 0]),
        frame(0x20, &[0, 0, 0]),
        frame(0x90, &[0, 1, 0, 0]),
        frame(0xB0, &[0, 1, 0, 0]),
        frame(0xD0, &[]),
    ]
}

#[tokio::test]
async fn garbage_after_an_mqtt5_connect_never_hangs_or_stops_the_broker() {
    let broker = TestBroker::start(BrokerConfig {
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    })
    .await;
    // A connection task that panicked would look like a closed connection: count panics.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        default_hook(info);
    }));
    let seeds = v5_seeds();
    // A fixed xorshift: the same mutations on every run.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut cases = Vec::new();
    for i in 0..400 {
        let mut bytes = seeds[i % seeds.len()].clone();
        match next() % 4 {
            // Seeds as they are: the server-only types among them are refused, not decoded.
            0 => {}
            1 => {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= 1 << (next() % 8);
            }
            2 => {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            _ => bytes.truncate((next() as usize) % bytes.len() + 1),
        }
        cases.push(bytes);
    }
    // 200 at once, each from its own address (the pre-CONNECT budget is per address).
    for (batch, chunk) in cases.chunks(200).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, garbage) in chunk.iter().cloned().enumerate() {
            let mut raw = broker.socket_from([127, 0, 1, i as u8]).await;
            let mut hello = connect_v5(&format!("fuzz-{batch}-{i}"), 1);
            hello.extend_from_slice(&garbage);
            hello.extend_from_slice(&PINGREQ);
            tasks.spawn(async move {
                raw.send(&hello).await;
                let connack = raw.packet().await;
                assert_eq!(connack[0], 0x20, "CONNACK first");
                // Answered (PINGRESP) or closed, within the 1 s keep-alive's 1.5 s: never a
                // hang. `until_closed` is bounded by WAIT.
                loop {
                    match tokio::time::timeout(WAIT, raw.try_packet()).await {
                        Ok(Some(packet)) if packet == PINGRESP => break,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => panic!("neither answered nor closed: {garbage:02x?}"),
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("each garbage connection ends");
        }
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0, "no task panicked");
    // The broker still serves a well-behaved client.
    let mut raw = broker.socket_from([127, 0, 0, 2]).await;
    let mut hello = connect_v5("after-the-fuzz", 0);
    hello.extend_from_slice(&PINGREQ);
    raw.send(&hello).await;
    assert_eq!(raw.packet().await[0], 0x20);
    assert_eq!(raw.packet().await, PINGRESP);
    broker.stop().await;
}
