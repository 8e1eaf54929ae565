//! A device that resends: a QoS 2 PUBLISH re-sent with DUP before its PUBREL, or a QoS 1
//! PUBLISH re-sent before its PUBACK, is one telemetry sample in the API, not two. A raw
//! MQTT writer, so that the resend goes out exactly where the test puts it.

use fleetmq_protocol::UpChannel;
use fleetmq_tests::mqtt::WAIT;
use fleetmq_tests::seconds_ago;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::fleet;

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![header];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(body);
    packet
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT, MQTT 3.1.1, clean session, keep-alive 0, client id = username.
fn connect(user: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[0x04, 0xc2, 0x00, 0x00]);
    put_str(&mut body, user);
    put_str(&mut body, user);
    put_str(&mut body, password);
    frame(0x10, &body)
}

fn publish(topic: &str, payload: &str, qos: u8, pkid: u16, dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload.as_bytes());
    frame(0x30 | (u8::from(dup) << 3) | (qos << 1), &body)
}

async fn read_packet(stream: &mut TcpStream) -> Vec<u8> {
    timeout(WAIT, async {
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await.expect("a packet");
        let mut body = vec![0u8; usize::from(header[1])];
        stream.read_exact(&mut body).await.expect("its body");
        [header.to_vec(), body].concat()
    })
    .await
    .expect("a packet in time")
}

#[tokio::test]
async fn resent_qos1_and_qos2_telemetry_is_stored_once() {
    let f = fleet().await;
    let device = &f.device_a;
    let mut stream = TcpStream::connect(f.app.mqtt_addr).await.unwrap();
    stream
        .write_all(&connect(&device.id, &device.key))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut stream).await, [0x20, 0x02, 0x00, 0x00]);
    let topic = device.up(UpChannel::Telemetry);
    let sample = |n: u8| {
        json!({"timestamp": seconds_ago(i64::from(n)).to_string(), "metrics": {"n": n}}).to_string()
    };

    // QoS 2, re-sent with DUP in the same write, then once more after its PUBREC.
    let mut burst = publish(&topic, &sample(2), 2, 1, false);
    burst.extend(publish(&topic, &sample(2), 2, 1, true));
    stream.write_all(&burst).await.unwrap();
    assert_eq!(read_packet(&mut stream).await, [0x50, 0x02, 0x00, 0x01]);
    stream
        .write_all(&publish(&topic, &sample(2), 2, 1, true))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut stream).await, [0x50, 0x02, 0x00, 0x01]);
    stream.write_all(&[0x62, 0x02, 0x00, 0x01]).await.unwrap();
    assert_eq!(read_packet(&mut stream).await, [0x70, 0x02, 0x00, 0x01]);

    // QoS 1, re-sent with DUP before its PUBACK could arrive.
    let mut burst = publish(&topic, &sample(1), 1, 2, false);
    burst.extend(publish(&topic, &sample(1), 1, 2, true));
    stream.write_all(&burst).await.unwrap();
    assert_eq!(read_packet(&mut stream).await, [0x40, 0x02, 0x00, 0x02]);

    // Acknowledged means stored: the API has both samples, once each.
    let telemetry = f
        .app
        .get(
            &format!("/api/v1/controller/device/{}/telemetry/", device.id),
            &f.manager_a,
        )
        .await;
    assert_eq!(telemetry.status, 200);
    assert_eq!(telemetry.body["count"], 2, "{:?}", telemetry.body);
    f.app.shutdown().await;
}
