//! MQTT over TLS, over WebSocket and over secure WebSocket: the same authentication and ACL
//! as plain TCP, and handshakes that never hold up the accept loop. Real rumqttc clients against a broker on
//! 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, BrokerError, Login, Refusal, TlsIdentity,
    TlsListener,
};
use fleetmq_protocol::topic::{Topic, UpChannel};
use fleetmq_protocol::{OrgScope, Principal};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_util::sync::CancellationToken;

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);

struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            match (login.username.as_deref(), login.password.as_deref()) {
                (Some("00000000-0000-4000-8000-0000000000a1"), Some(b"pw-a1")) => {
                    Ok(Principal::Device {
                        org_slug: "acme".into(),
                        device_id: "00000000-0000-4000-8000-0000000000a1"
                            .parse()
                            .expect("a device id"),
                    })
                }
                (Some("op-acme"), Some(b"pw-op")) => Ok(Principal::Operator {
                    orgs: OrgScope::Managed(vec!["acme".into()]),
                }),
                _ => Err(Refusal::BadCredentials),
            }
        })
    }
}

struct TlsBroker {
    plain: SocketAddr,
    tls: SocketAddr,
    ws: SocketAddr,
    wss: SocketAddr,
    ca: Vec<u8>,
    shutdown: CancellationToken,
    dir: PathBuf,
}

impl TlsBroker {
    async fn start(connect_timeout: Duration) -> TlsBroker {
        let dir = std::env::temp_dir().join(format!("fleetmq-tls-test-{}", uuid::Uuid::new_v4()));
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let identity = TlsIdentity::load_or_generate(&dir, &names).unwrap();
        let ca = identity.certificate_pem().as_bytes().to_vec();
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(TlsListener {
                addr: "127.0.0.1:0".parse().unwrap(),
                identity,
            }),
            ws_addr: Some("127.0.0.1:0".parse().unwrap()),
            wss_addr: Some("127.0.0.1:0".parse().unwrap()),
            connect_timeout,
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(config, Arc::new(TestAuth)).await.unwrap();
        let plain = broker.local_addr();
        let tls = broker.tls_addr().expect("TLS listener bound");
        let ws = broker.ws_addr().expect("WebSocket listener bound");
        let wss = broker.wss_addr().expect("secure WebSocket listener bound");
        let shutdown = CancellationToken::new();
        tokio::spawn(broker.run(shutdown.clone()));
        TlsBroker {
            plain,
            tls,
            ws,
            wss,
            ca,
            shutdown,
            dir,
        }
    }

    fn tls_options(&self, client_id: &str, user: &str, password: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.tls.port());
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: self.ca.clone(),
            alpn: None,
            client_auth: None,
        }));
        options
    }

    fn ws_options(&self, client_id: &str, user: &str, password: &str) -> MqttOptions {
        let url = format!("ws://127.0.0.1:{}/mqtt", self.ws.port());
        let mut options = MqttOptions::new(client_id, url, self.ws.port());
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::Ws);
        options
    }

    /// `wss://127.0.0.1:PORT/mqtt`, trusting `ca` (PEM) as the browser trusts its roots.
    fn wss_options(&self, client_id: &str, user: &str, password: &str, ca: &[u8]) -> MqttOptions {
        let url = format!("wss://127.0.0.1:{}/mqtt", self.wss.port());
        let mut options = MqttOptions::new(client_id, url, self.wss.port());
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(Transport::wss_with_config(TlsConfiguration::Simple {
            ca: ca.to_vec(),
            alpn: None,
            client_auth: None,
        }));
        options
    }

    async fn operator(&self) -> EventLoop {
        let mut plain = MqttOptions::new("console", "127.0.0.1", self.plain.port());
        plain.set_credentials("op-acme", "pw-op");
        let (operator, mut events) = connect(plain).await.unwrap();
        operator
            .subscribe("fleetmq/v1/acme/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        assert!(matches!(
            next_incoming(&mut events).await,
            Packet::SubAck(_)
        ));
        // The client handle may go: the event loop keeps the connection.
        events
    }

    fn stop(self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects and waits for CONNACK (or the refusal).
async fn connect(options: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("CONNACK in time")?;
        if let Event::Incoming(Packet::ConnAck(_)) = event {
            return Ok((client, eventloop));
        }
    }
}

async fn next_incoming(eventloop: &mut EventLoop) -> Packet {
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("event in time")
            .expect("connection alive");
        if let Event::Incoming(packet) = event {
            return packet;
        }
    }
}

#[tokio::test]
async fn a_device_over_tls_gets_the_same_authentication_and_routing_as_plain_tcp() {
    let broker = TlsBroker::start(Duration::from_secs(10)).await;
    let wrong = connect(broker.tls_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "wrong",
    ))
    .await;
    assert!(matches!(
        wrong,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    ));

    let mut plain = MqttOptions::new("console", "127.0.0.1", broker.plain.port());
    plain.set_credentials("op-acme", "pw-op");
    let (operator, mut operator_loop) = connect(plain).await.unwrap();
    operator
        .subscribe("fleetmq/v1/acme/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut operator_loop).await,
        Packet::SubAck(_)
    ));

    let (device, mut device_loop) = connect(broker.tls_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "pw-a1",
    ))
    .await
    .unwrap();
    let telemetry = Topic::up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    )
    .to_string();
    device
        .publish(&telemetry, QoS::AtLeastOnce, false, b"over tls".to_vec())
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut device_loop).await,
        Packet::PubAck(_)
    ));
    let Packet::Publish(received) = next_incoming(&mut operator_loop).await else {
        panic!("expected the device's message");
    };
    assert_eq!(received.topic, telemetry);
    assert_eq!(&received.payload[..], b"over tls");

    // The ACL is the same: another org's topic closes the connection.
    device
        .publish(
            "fleetmq/v1/beta/00000000-0000-4000-8000-0000000000b1/up/telemetry",
            QoS::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .unwrap();
    loop {
        match timeout(WAIT, device_loop.poll())
            .await
            .expect("closed in time")
        {
            Err(_) => break,
            Ok(Event::Incoming(Packet::PubAck(_))) => panic!("cross-org publish acknowledged"),
            Ok(_) => {}
        }
    }
    broker.stop();
}

#[tokio::test]
async fn silent_peers_on_the_tls_and_websocket_ports_block_nobody_and_are_dropped_in_time() {
    let broker = TlsBroker::start(Duration::from_secs(1)).await;
    // Open TCP and never start the handshake.
    let mut silent_tls = TcpStream::connect(broker.tls).await.unwrap();
    let mut silent_ws = TcpStream::connect(broker.ws).await.unwrap();

    let (_device, _events) = connect(broker.tls_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "pw-a1",
    ))
    .await
    .expect("a TLS client connects while a peer is silent");
    let (_operator, _operator_events) =
        connect(broker.ws_options("ws-console", "op-acme", "pw-op"))
            .await
            .expect("a WebSocket client connects while a peer is silent");

    for silent in [&mut silent_tls, &mut silent_ws] {
        let mut received = Vec::new();
        let read = timeout(WAIT, silent.read_to_end(&mut received))
            .await
            .expect("the silent peer is closed after the connect timeout");
        assert!(read.is_err() || received.is_empty());
    }
    broker.stop();
}

#[tokio::test]
async fn a_device_over_websocket_gets_the_same_authentication_and_routing_as_plain_tcp() {
    let broker = TlsBroker::start(Duration::from_secs(10)).await;
    let wrong = connect(broker.ws_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "wrong",
    ))
    .await;
    assert!(matches!(
        wrong,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    ));
    let mut operator = broker.operator().await;

    let (device, mut device_loop) = connect(broker.ws_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "pw-a1",
    ))
    .await
    .unwrap();
    let telemetry = Topic::up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    )
    .to_string();
    // Larger than the broker's 4 KiB read buffer: one packet over several reads.
    let payload = vec![b'w'; 9_000];
    device
        .publish(&telemetry, QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut device_loop).await,
        Packet::PubAck(_)
    ));
    let Packet::Publish(received) = next_incoming(&mut operator).await else {
        panic!("expected the device's message");
    };
    assert_eq!(received.topic, telemetry);
    assert_eq!(received.payload.len(), payload.len());

    // Subscriptions are checked too: another device's down/ tree is refused.
    device
        .subscribe("fleetmq/v1/acme/+/down/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let Packet::SubAck(ack) = next_incoming(&mut device_loop).await else {
        panic!("expected SUBACK");
    };
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    broker.stop();
}

#[tokio::test]
async fn websocket_requests_for_another_path_or_without_the_mqtt_subprotocol_are_refused() {
    let broker = TlsBroker::start(Duration::from_secs(10)).await;
    let handshake = |path: &str, protocol: Option<&str>| {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        if let Some(protocol) = protocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        request.push_str("\r\n");
        request
    };
    let status_line = |request: String| async move {
        let mut stream = TcpStream::connect(broker.ws).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("the broker answers and closes");
        let response = String::from_utf8_lossy(&response).into_owned();
        response.lines().next().unwrap_or_default().to_owned()
    };
    assert!(
        status_line(handshake("/", Some("mqtt")))
            .await
            .contains(" 404")
    );
    assert!(status_line(handshake("/mqtt", None)).await.contains(" 400"));

    // The accepted handshake selects `mqtt`.
    let mut stream = TcpStream::connect(broker.ws).await.unwrap();
    stream
        .write_all(handshake("/mqtt", Some("mqttv3.1, mqtt")).as_bytes())
        .await
        .unwrap();
    let mut response = vec![0; 1024];
    let n = timeout(WAIT, stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response[..n]).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 101"), "{response}");
    assert!(
        response.contains("sec-websocket-protocol: mqtt\r\n"),
        "{response}"
    );
    broker.stop();
}

#[tokio::test]
async fn a_client_over_secure_websocket_trusting_the_listener_certificate_gets_routed_messages() {
    let broker = TlsBroker::start(Duration::from_secs(10)).await;
    let (operator, mut operator_loop) =
        connect(broker.wss_options("wss-console", "op-acme", "pw-op", &broker.ca))
            .await
            .expect("an operator connects over wss");
    operator
        .subscribe("fleetmq/v1/acme/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut operator_loop).await,
        Packet::SubAck(_)
    ));

    let (device, mut device_loop) = connect(broker.wss_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "pw-a1",
        &broker.ca,
    ))
    .await
    .expect("a device connects over wss");
    let telemetry = Topic::up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    )
    .to_string();
    // Larger than the broker's 4 KiB read buffer: one packet over several TLS records.
    let payload = vec![b's'; 9_000];
    device
        .publish(&telemetry, QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    assert!(matches!(
        next_incoming(&mut device_loop).await,
        Packet::PubAck(_)
    ));
    let Packet::Publish(received) = next_incoming(&mut operator_loop).await else {
        panic!("expected the device's message");
    };
    assert_eq!(received.topic, telemetry);
    assert_eq!(&received.payload[..], &payload[..]);
    broker.stop();
}

#[tokio::test]
async fn a_secure_websocket_client_that_does_not_trust_the_certificate_or_has_a_wrong_password_is_refused()
 {
    let broker = TlsBroker::start(Duration::from_secs(10)).await;
    // A certificate the broker does not present: the client cannot verify the broker's.
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("another certificate");
    let untrusting = connect(broker.wss_options(
        "wss-console",
        "op-acme",
        "pw-op",
        stranger.cert.pem().as_bytes(),
    ))
    .await
    .map(|_| "connected");
    let Err(error) = untrusting else {
        panic!("a client that does not trust the certificate connected");
    };
    assert!(
        !matches!(error, ConnectionError::ConnectionRefused(_)),
        "the TLS handshake fails before any CONNACK: {error:?}"
    );
    // Both self-signed certificates carry rcgen's default issuer name, so the client finds a
    // "matching" root and then a bad signature.
    assert!(
        format!("{error:?}").contains("InvalidCertificate"),
        "the client refuses the certificate: {error:?}"
    );

    let wrong = connect(broker.wss_options(
        "00000000-0000-4000-8000-0000000000a1",
        "00000000-0000-4000-8000-0000000000a1",
        "wrong",
        &broker.ca,
    ))
    .await;
    assert!(matches!(
        wrong,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    ));
    broker.stop();
}

#[tokio::test]
async fn silent_peers_on_the_secure_websocket_port_block_nobody_and_are_dropped_in_time() {
    let broker = TlsBroker::start(Duration::from_secs(1)).await;
    // One never starts TLS; the other completes TLS and never sends the WebSocket upgrade.
    let mut silent_tcp = TcpStream::connect(broker.wss).await.unwrap();
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&broker.ca) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));
    let mut silent_tls = timeout(
        WAIT,
        connector.connect(
            "127.0.0.1".try_into().unwrap(),
            TcpStream::connect(broker.wss).await.unwrap(),
        ),
    )
    .await
    .expect("TLS handshake in time")
    .expect("the listener's TLS handshake succeeds");

    let (_operator, _events) =
        connect(broker.wss_options("wss-console", "op-acme", "pw-op", &broker.ca))
            .await
            .expect("a wss client connects while peers are silent");

    let mut received = Vec::new();
    let read = timeout(WAIT, silent_tcp.read_to_end(&mut received))
        .await
        .expect("the silent TCP peer is closed after the connect timeout");
    assert!(read.is_err() || received.is_empty());
    let mut received = Vec::new();
    let read = timeout(WAIT, silent_tls.read_to_end(&mut received))
        .await
        .expect("the peer that never upgrades is closed after the connect timeout");
    assert!(read.is_err() || received.is_empty());
    broker.stop();
}

#[tokio::test]
async fn a_secure_websocket_listener_without_the_tls_listener_is_a_configuration_error() {
    let config = BrokerConfig {
        mqtt_addr: "127.0.0.1:0".parse().unwrap(),
        wss_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..BrokerConfig::default()
    };
    let bound = Broker::bind(config, Arc::new(TestAuth)).await;
    assert!(matches!(bound, Err(BrokerError::Config(_))));
}

/// MQTT 5 on every listener: a v5 device over TLS, WebSocket and secure WebSocket publishes,
/// a v5 operator over plain TCP receives it with the device's user property, and a refused
/// publish is a PUBACK reason code on each transport.
#[tokio::test]
async fn mqtt5_clients_are_served_on_every_listener() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, PublishProperties};
    use rumqttc::v5::{
        AsyncClient as Client5, Event as E5, EventLoop as Loop5, MqttOptions as Options5,
    };

    async fn until(events: &mut Loop5, wanted: impl Fn(&P5) -> bool) -> P5 {
        loop {
            let event = timeout(WAIT, events.poll())
                .await
                .expect("event in time")
                .expect("connection alive");
            if let E5::Incoming(packet) = event
                && wanted(&packet)
            {
                return packet;
            }
        }
    }
    fn v5(v4: MqttOptions, client_id: &str, user: &str, password: &str) -> Options5 {
        let (host, port) = v4.broker_address();
        let mut options = Options5::new(client_id, host, port);
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(v4.transport());
        options
    }

    let broker = TlsBroker::start(Duration::from_secs(10)).await;
    let mut operator_options = Options5::new("console-5", "127.0.0.1", broker.plain.port());
    operator_options.set_credentials("op-acme", "pw-op");
    let (operator, mut operator_loop) = Client5::new(operator_options, 16);
    operator
        .subscribe("fleetmq/v1/acme/#", Q5::AtLeastOnce)
        .await
        .unwrap();
    until(&mut operator_loop, |p| matches!(p, P5::SubAck(_))).await;

    let device = "00000000-0000-4000-8000-0000000000a1";
    let telemetry = Topic::up("acme", device, UpChannel::Telemetry).to_string();
    let foreign = Topic::up(
        "acme",
        "00000000-0000-4000-8000-0000000000b2",
        UpChannel::Telemetry,
    )
    .to_string();
    let transports = [
        ("TLS", broker.tls_options(device, device, "pw-a1")),
        ("WebSocket", broker.ws_options(device, device, "pw-a1")),
        (
            "secure WebSocket",
            broker.wss_options(device, device, "pw-a1", &broker.ca),
        ),
    ];
    for (name, v4) in transports {
        let (client, mut events) = Client5::new(v5(v4, device, device, "pw-a1"), 16);
        until(&mut events, |p| matches!(p, P5::ConnAck(_))).await;
        client
            .publish(&foreign, Q5::AtLeastOnce, false, "{}")
            .await
            .unwrap();
        let refused = until(&mut events, |p| matches!(p, P5::PubAck(_))).await;
        assert!(
            matches!(&refused, P5::PubAck(ack) if ack.reason == PubAckReason::NotAuthorized),
            "{name}: {refused:?}"
        );
        let properties = PublishProperties {
            user_properties: vec![("via".into(), name.into())],
            ..PublishProperties::default()
        };
        client
            .publish_with_properties(&telemetry, Q5::AtLeastOnce, false, "{}", properties)
            .await
            .unwrap();
        let taken = until(&mut events, |p| matches!(p, P5::PubAck(_))).await;
        assert!(
            matches!(&taken, P5::PubAck(ack) if ack.reason == PubAckReason::Success),
            "{name}: {taken:?}"
        );
        let P5::Publish(seen) = until(&mut operator_loop, |p| matches!(p, P5::Publish(_))).await
        else {
            unreachable!("matched above")
        };
        assert_eq!(seen.topic, telemetry.as_bytes(), "{name}");
        let via = seen
            .properties
            .map(|p| p.user_properties)
            .unwrap_or_default();
        assert_eq!(via, [("via".to_owned(), name.to_owned())], "{name}");
        client.disconnect().await.unwrap();
    }
    broker.stop();
}
