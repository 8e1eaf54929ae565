//! End-to-end tests: real rumqttc clients against a broker bound on 127.0.0.1:0.
//!
//! The cast: device `…a1` (id `00000000-0000-4000-8000-0000000000a1`, org `acme`), device
//! `…b1` (id `00000000-0000-4000-8000-0000000000b1`, org `beta`), operator `op-acme` (manages
//! `acme`). Where a test asserts that something was *not* delivered, it sends a marker
//! message afterwards on a path that is delivered and checks the marker arrives first:
//! ordering replaces sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, BrokerError, BrokerHandle, Delivered, Login,
    Refusal, SessionEvent, Uplink, UplinkFuture, UplinkMessage,
};
use fleetmq_protocol::topic::{ALL_UP_FILTER, DownChannel, Topic, UpChannel};
use fleetmq_protocol::{OrgScope, Principal};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Outgoing,
    Packet, Publish, QoS, SubscribeFilter, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Device `…a1`'s id.
const DEV_A1: &str = "00000000-0000-4000-8000-0000000000a1";

/// Failure guard for anything awaited; never a sleep.
const WAIT: Duration = Duration::from_secs(10);

struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            let password = login.password.unwrap_or_default();
            let device = |org: &str, id: &str| Principal::Device {
                org_slug: org.into(),
                device_id: id.parse().expect("a device id"),
            };
            match (login.username.as_deref(), password.as_slice()) {
                (Some("00000000-0000-4000-8000-0000000000a1"), b"pw-a1") => {
                    Ok(device("acme", "00000000-0000-4000-8000-0000000000a1"))
                }
                (Some("00000000-0000-4000-8000-0000000000b1"), b"pw-b1") => {
                    Ok(device("beta", "00000000-0000-4000-8000-0000000000b1"))
                }
                (Some("op-acme"), b"pw-op") => Ok(Principal::Operator {
                    orgs: OrgScope::Managed(vec!["acme".into()]),
                }),
                (Some("disabled"), _) => Err(Refusal::NotAuthorized),
                _ => Err(Refusal::BadCredentials),
            }
        })
    }
}

struct TestBroker {
    addr: SocketAddr,
    handle: BrokerHandle,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestBroker {
    async fn start() -> TestBroker {
        TestBroker::start_with(BrokerConfig::default()).await
    }

    async fn start_with(config: BrokerConfig) -> TestBroker {
        TestBroker::start_with_auth(config, Arc::new(TestAuth)).await
    }

    async fn start_with_auth(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> TestBroker {
        TestBroker::start_full(config, auth, None).await
    }

    async fn start_with_uplink(uplink: Arc<dyn Uplink>) -> TestBroker {
        TestBroker::start_full(BrokerConfig::default(), Arc::new(TestAuth), Some(uplink)).await
    }

    async fn start_full(
        mut config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        uplink: Option<Arc<dyn Uplink>>,
    ) -> TestBroker {
        config.mqtt_addr = "127.0.0.1:0".parse().unwrap();
        let mut broker = Broker::bind(config, auth).await.unwrap();
        if let Some(uplink) = uplink {
            broker = broker.with_uplink(uplink);
        }
        let addr = broker.local_addr();
        let handle = broker.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker.run(shutdown.clone()));
        TestBroker {
            addr,
            handle,
            shutdown,
            task,
        }
    }

    fn options(&self, client_id: &str, credentials: Option<(&str, &str)>) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.addr.ip().to_string(), self.addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        options
    }

    async fn connect(&self, options: MqttOptions) -> Result<Client, ConnectionError> {
        Client::connect(options).await
    }

    async fn device_a(&self) -> Client {
        self.connect(self.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ))
        .await
        .unwrap()
    }

    async fn device_b(&self) -> Client {
        self.connect(self.options(
            "00000000-0000-4000-8000-0000000000b1",
            Some(("00000000-0000-4000-8000-0000000000b1", "pw-b1")),
        ))
        .await
        .unwrap()
    }

    async fn operator(&self) -> Client {
        self.connect(self.options("op-console", Some(("op-acme", "pw-op"))))
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

/// A connected rumqttc client whose event loop runs in a task.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
    session_present: bool,
}

/// Connects and returns the event loop *without* polling it further (so no PINGREQ is sent).
async fn connect_idle(
    options: MqttOptions,
) -> Result<(AsyncClient, rumqttc::EventLoop, bool), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        match timeout(WAIT, eventloop.poll())
            .await
            .expect("CONNACK in time")?
        {
            Event::Incoming(Packet::ConnAck(ack)) => {
                return Ok((client, eventloop, ack.session_present));
            }
            _ => continue,
        }
    }
}

impl Client {
    async fn connect(options: MqttOptions) -> Result<Client, ConnectionError> {
        let (client, mut eventloop, session_present) = connect_idle(options).await?;
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Client {
            client,
            events,
            task,
            session_present,
        })
    }

    async fn next_event(&mut self) -> Result<Event, ConnectionError> {
        timeout(WAIT, self.events.recv())
            .await
            .expect("event in time")
            .expect("event loop alive")
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let filters: Vec<_> = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce))
            .collect();
        self.client.subscribe_many(filters).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = self.next_event().await.unwrap() {
                return ack.return_codes;
            }
        }
    }

    async fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    async fn next_publish(&mut self) -> Publish {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = self.next_event().await.unwrap() {
                return publish;
            }
        }
    }

    /// Waits until the broker closes the connection.
    async fn closed_by_broker(&mut self) -> ConnectionError {
        loop {
            if let Err(e) = self.next_event().await {
                return e;
            }
        }
    }

    /// Sends DISCONNECT and waits until it is on the wire.
    async fn disconnect_cleanly(mut self) {
        self.client.disconnect().await.unwrap();
        loop {
            match self.next_event().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Drops the socket without DISCONNECT.
    fn drop_socket(self) {
        self.task.abort();
    }
}

fn up(org: &str, device: &str, channel: UpChannel) -> String {
    Topic::up(org, device, channel).to_string()
}

fn down(org: &str, device: &str, channel: DownChannel) -> String {
    Topic::down(org, device, channel).to_string()
}

fn refused(code: ConnectReturnCode) -> impl Fn(Result<Client, ConnectionError>) -> bool {
    move |result| matches!(result, Err(ConnectionError::ConnectionRefused(c)) if c == code)
}

#[tokio::test]
async fn wrong_password_is_refused_with_bad_username_password() {
    let broker = TestBroker::start().await;
    let result = broker
        .connect(broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "nope")),
        ))
        .await;
    assert!(refused(ConnectReturnCode::BadUserNamePassword)(result));
    let result = broker
        .connect(broker.options("x", Some(("disabled", "any"))))
        .await;
    assert!(refused(ConnectReturnCode::NotAuthorized)(result));
    broker.stop().await;
}

#[tokio::test]
async fn device_must_use_its_device_id_as_client_id() {
    let broker = TestBroker::start().await;
    let result = broker
        .connect(broker.options(
            "someone-else",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ))
        .await;
    assert!(refused(ConnectReturnCode::BadClientId)(result));
    broker.stop().await;
}

#[tokio::test]
async fn a_device_client_id_spelling_its_id_another_way_is_refused() {
    let broker = TestBroker::start().await;
    let result = broker
        .connect(broker.options(&DEV_A1.to_uppercase(), Some((DEV_A1, "pw-a1"))))
        .await;
    assert!(refused(ConnectReturnCode::BadClientId)(result));
    broker.stop().await;
}

#[tokio::test]
async fn device_uplink_reaches_an_operator_of_its_org() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    assert_eq!(
        operator.subscribe(&["fleetmq/v1/acme/#"]).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let device = broker.device_a().await;
    let topic = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    device.publish(&topic, r#"{"cpu":1}"#, false).await;
    let received = operator.next_publish().await;
    assert_eq!(received.topic, topic);
    assert_eq!(&received.payload[..], br#"{"cpu":1}"#);
    broker.stop().await;
}

#[tokio::test]
async fn device_subscriptions_outside_its_own_down_tree_get_suback_failure() {
    let broker = TestBroker::start().await;
    let mut device = broker.device_a().await;
    let codes = device
        .subscribe(&[
            "#",
            "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#",
            "fleetmq/v1/+/+/down/#",
            "fleetmq/v1/beta/00000000-0000-4000-8000-0000000000b1/down/#",
            "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/+/request",
        ])
        .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    // The connection stays usable after refusals.
    broker
        .handle
        .publish(
            &down(
                "acme",
                "00000000-0000-4000-8000-0000000000a1",
                DownChannel::ConfigNotice,
            ),
            "{}",
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        device.next_publish().await.topic,
        down(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            DownChannel::ConfigNotice
        )
    );
    broker.stop().await;
}

#[tokio::test]
async fn device_publishing_to_another_devices_topic_is_disconnected_and_nothing_is_delivered() {
    let broker = TestBroker::start().await;
    let mut victim = broker.device_b().await;
    victim
        .subscribe(&["fleetmq/v1/beta/00000000-0000-4000-8000-0000000000b1/down/#"])
        .await;
    let mut attacker = broker.device_a().await;
    let command = down(
        "beta",
        "00000000-0000-4000-8000-0000000000b1",
        DownChannel::CommandRequest,
    );
    attacker.publish(&command, "rm -rf /", false).await;
    attacker.closed_by_broker().await;

    let notice = down(
        "beta",
        "00000000-0000-4000-8000-0000000000b1",
        DownChannel::ConfigNotice,
    );
    broker
        .handle
        .publish(&notice, "marker", false)
        .await
        .unwrap();
    let first = victim.next_publish().await;
    assert_eq!(first.topic, notice, "the forged command must not arrive");
    broker.stop().await;
}

#[tokio::test]
async fn operator_only_sees_its_own_orgs_and_cannot_command_devices() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    assert_eq!(
        operator
            .subscribe(&[
                "fleetmq/v1/beta/#",
                "fleetmq/v1/+/+/up/#",
                "fleetmq/v1/acme/#"
            ])
            .await,
        // The wildcard is granted: what it delivers is judged per message.
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    let device_b = broker.device_b().await;
    device_b
        .publish(
            &up(
                "beta",
                "00000000-0000-4000-8000-0000000000b1",
                UpChannel::Telemetry,
            ),
            "secret",
            false,
        )
        .await;
    let mut device_a = broker.device_a().await;
    device_a
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    let marker = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    device_a.publish(&marker, "marker", false).await;
    assert_eq!(operator.next_publish().await.topic, marker);

    let command = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    operator.publish(&command, "reboot", false).await;
    operator.closed_by_broker().await;
    let notice = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::ConfigNotice,
    );
    broker
        .handle
        .publish(&notice, "marker", false)
        .await
        .unwrap();
    assert_eq!(device_a.next_publish().await.topic, notice);
    broker.stop().await;
}

#[tokio::test]
async fn keep_alive_zero_is_accepted() {
    let broker = TestBroker::start().await;
    let mut options = broker.options(
        "00000000-0000-4000-8000-0000000000a1",
        Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
    );
    options.set_keep_alive(Duration::ZERO);
    let mut device = broker.connect(options).await.unwrap();
    assert_eq!(
        device
            .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
            .await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    broker.stop().await;
}

fn with_offline_will(mut options: MqttOptions, org: &str, device: &str) -> MqttOptions {
    options.set_last_will(LastWill::new(
        up(org, device, UpChannel::Presence),
        r#"{"status":"offline"}"#,
        QoS::AtLeastOnce,
        true,
    ));
    options
}

#[tokio::test]
async fn last_will_is_published_when_the_socket_drops() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let device = broker.connect(options).await.unwrap();
    device.drop_socket();
    let will = operator.next_publish().await;
    assert_eq!(
        will.topic,
        up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Presence
        )
    );
    assert_eq!(&will.payload[..], br#"{"status":"offline"}"#);
    broker.stop().await;
}

#[tokio::test]
async fn last_will_is_not_published_after_a_clean_disconnect() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let device = broker.connect(options).await.unwrap();
    device.disconnect_cleanly().await;
    // Reconnecting waits for the old session to be fully gone (takeover ordering), so the
    // marker is published after any will would have been.
    let device = broker.device_a().await;
    let marker = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    device.publish(&marker, "marker", false).await;
    assert_eq!(operator.next_publish().await.topic, marker);
    broker.stop().await;
}

#[tokio::test]
async fn retained_will_is_delivered_to_later_subscribers() {
    let broker = TestBroker::start().await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let device = broker.connect(options).await.unwrap();
    device.drop_socket();
    // Subscribing after the drop: the will is retained, so it arrives once published.
    let mut operator = broker.operator().await;
    operator
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/up/presence"])
        .await;
    let will = operator.next_publish().await;
    assert_eq!(&will.payload[..], br#"{"status":"offline"}"#);
    broker.stop().await;
}

#[tokio::test]
async fn handle_publish_reaches_the_device_down_topic() {
    let broker = TestBroker::start().await;
    let mut device = broker.device_a().await;
    device
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    let topic = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    broker
        .handle
        .publish(&topic, "reboot", false)
        .await
        .unwrap();
    let received = device.next_publish().await;
    assert_eq!(received.topic, topic);
    assert_eq!(&received.payload[..], b"reboot");
    assert!(broker.handle.publish("a/+", "x", false).await.is_err());
    broker.stop().await;
}

#[tokio::test]
async fn handle_publish_to_a_down_topic_without_a_device_id_is_an_error() {
    let broker = TestBroker::start().await;
    let result = broker
        .handle
        .publish("fleetmq/v1/acme/dev-a1/down/command/request", "x", false)
        .await;
    assert!(
        matches!(result, Err(BrokerError::InvalidTopic(_))),
        "{result:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_device_kicks_the_live_session_and_announces_it_offline() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let mut device = broker.connect(options).await.unwrap();
    assert!(
        broker
            .handle
            .disconnect_device(DEV_A1.parse().unwrap())
            .await
    );
    device.closed_by_broker().await;
    assert_eq!(
        operator.next_publish().await.topic,
        up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Presence
        )
    );
    assert!(
        !broker
            .handle
            .disconnect_device(DEV_A1.parse().unwrap())
            .await
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_device_id_takes_over_after_the_old_will() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let mut old = broker.connect(options).await.unwrap();
    let new = broker.device_a().await;
    old.closed_by_broker().await;
    let presence = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Presence,
    );
    new.publish(&presence, r#"{"status":"online"}"#, true).await;
    let first = operator.next_publish().await;
    assert_eq!(&first.payload[..], br#"{"status":"offline"}"#);
    let second = operator.next_publish().await;
    assert_eq!(&second.payload[..], br#"{"status":"online"}"#);
    broker.stop().await;
}

#[tokio::test]
async fn clients_without_username_are_refused_unless_the_sandbox_is_on() {
    let broker = TestBroker::start().await;
    let result = broker.connect(broker.options("anon", None)).await;
    assert!(refused(ConnectReturnCode::NotAuthorized)(result));
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_sandbox_allows_test_topics_and_refuses_the_fleetmq_tree() {
    let broker = TestBroker::start_with(BrokerConfig {
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    })
    .await;
    let mut anon = broker.connect(broker.options("anon", None)).await.unwrap();
    assert_eq!(
        anon.subscribe(&["test/#", "#", "fleetmq/#", "+/v1/#"])
            .await,
        // Wildcards are granted (what they deliver is judged per message); a filter that
        // can only match the fleetmq tree is not.
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    // A device's uplink matches `#` and `+/v1/#` but is not the sandbox's to read.
    let device = broker.device_a().await;
    device
        .publish(
            &up(
                "acme",
                "00000000-0000-4000-8000-0000000000a1",
                UpChannel::Telemetry,
            ),
            "private",
            false,
        )
        .await;
    anon.publish("test/x", "hello", false).await;
    let received = anon.next_publish().await;
    assert_eq!(received.topic, "test/x");
    assert_eq!(&received.payload[..], b"hello");

    anon.publish(
        &up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Telemetry,
        ),
        "forged",
        false,
    )
    .await;
    anon.closed_by_broker().await;
    broker.stop().await;
}

#[tokio::test]
async fn in_process_link_receives_every_device_uplink() {
    let broker = TestBroker::start().await;
    let mut bridge = broker
        .handle
        .link("bridge", &[ALL_UP_FILTER])
        .await
        .unwrap();
    let device_a = broker.device_a().await;
    let device_b = broker.device_b().await;
    device_a
        .publish(
            &up(
                "acme",
                "00000000-0000-4000-8000-0000000000a1",
                UpChannel::Telemetry,
            ),
            "a",
            false,
        )
        .await;
    let first = timeout(WAIT, bridge.recv()).await.unwrap().unwrap();
    assert_eq!(
        first.topic,
        up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Telemetry
        )
    );
    device_b
        .publish(
            &up(
                "beta",
                "00000000-0000-4000-8000-0000000000b1",
                UpChannel::Coordinates,
            ),
            "b",
            false,
        )
        .await;
    let second = timeout(WAIT, bridge.recv()).await.unwrap().unwrap();
    assert_eq!(
        second.topic,
        up(
            "beta",
            "00000000-0000-4000-8000-0000000000b1",
            UpChannel::Coordinates
        )
    );
    assert_eq!(&second.payload[..], b"b");
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribe_is_acknowledged_and_stops_delivery() {
    let broker = TestBroker::start().await;
    let mut device = broker.device_a().await;
    device
        .subscribe(&[
            "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/command/request",
            "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/error",
        ])
        .await;
    device
        .client
        .unsubscribe("fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/command/request")
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::UnsubAck(_)) = device.next_event().await.unwrap() {
            break;
        }
    }
    // Never subscribed: still exactly one UNSUBACK (the router alone would send none).
    device
        .client
        .unsubscribe("fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/nothing")
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::UnsubAck(_)) = device.next_event().await.unwrap() {
            break;
        }
    }
    let handle = &broker.handle;
    handle
        .publish(
            &down(
                "acme",
                "00000000-0000-4000-8000-0000000000a1",
                DownChannel::CommandRequest,
            ),
            "x",
            false,
        )
        .await
        .unwrap();
    handle
        .publish(
            &down(
                "acme",
                "00000000-0000-4000-8000-0000000000a1",
                DownChannel::Error,
            ),
            "marker",
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        device.next_publish().await.topic,
        down(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            DownChannel::Error
        )
    );
    broker.stop().await;
}

/// Reads until the broker closes the socket; returns everything it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("broker closes the connection");
    received
}

#[tokio::test]
async fn garbage_bytes_close_that_connection_and_the_broker_keeps_serving() {
    let broker = TestBroker::start().await;
    let garbages: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        &[0x10, 0x05, 0x00, 0x04, b'M', b'Q', b'T'],
        &[
            0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xff, 0x00, 0x00, 0x00, 0xff,
        ],
    ];
    for garbage in garbages {
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let _ = stream.shutdown().await;
        read_to_close(&mut stream).await;
    }
    let mut device = broker.device_a().await;
    assert_eq!(
        device
            .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
            .await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    broker.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_clients_get_unacceptable_protocol_version() {
    let broker = TestBroker::start().await;
    let mut stream = TcpStream::connect(broker.addr).await.unwrap();
    // CONNECT, protocol "MQIsdp" level 3, clean session, keep-alive 60, client id "c".
    let mut connect = vec![0x10, 15, 0x00, 0x06];
    connect.extend_from_slice(b"MQIsdp");
    connect.extend_from_slice(&[0x03, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c']);
    stream.write_all(&connect).await.unwrap();
    assert_eq!(read_to_close(&mut stream).await, [0x20, 0x02, 0x00, 0x01]);
    broker.stop().await;
}

#[tokio::test]
async fn empty_client_id_is_rejected_for_persistent_sessions() {
    let broker = TestBroker::start_with(BrokerConfig {
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(broker.addr).await.unwrap();
    // CONNECT MQTT 3.1.1, clean session = 0, keep-alive 60, empty client id.
    let connect = [
        0x10, 12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3c, 0x00, 0x00,
    ];
    stream.write_all(&connect).await.unwrap();
    assert_eq!(read_to_close(&mut stream).await, [0x20, 0x02, 0x00, 0x02]);
    broker.stop().await;
}

#[tokio::test]
async fn clients_beyond_max_connections_get_server_unavailable() {
    let broker = TestBroker::start_with(BrokerConfig {
        max_connections: 1,
        ..BrokerConfig::default()
    })
    .await;
    let _device = broker.device_a().await;
    let result = broker
        .connect(broker.options(
            "00000000-0000-4000-8000-0000000000b1",
            Some(("00000000-0000-4000-8000-0000000000b1", "pw-b1")),
        ))
        .await;
    assert!(refused(ConnectReturnCode::ServiceUnavailable)(result));
    broker.stop().await;
}

#[tokio::test]
async fn qos1_and_qos2_publishes_are_acknowledged_and_delivered() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let mut device = broker.device_a().await;
    let topic = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    device
        .client
        .publish(&topic, QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    device
        .client
        .publish(&topic, QoS::ExactlyOnce, false, "two")
        .await
        .unwrap();
    let (mut puback, mut pubcomp) = (false, false);
    while !(puback && pubcomp) {
        match device.next_event().await.unwrap() {
            Event::Incoming(Packet::PubAck(_)) => puback = true,
            Event::Incoming(Packet::PubComp(_)) => pubcomp = true,
            _ => {}
        }
    }
    assert_eq!(&operator.next_publish().await.payload[..], b"one");
    assert_eq!(&operator.next_publish().await.payload[..], b"two");
    broker.stop().await;
}

#[tokio::test]
async fn a_burst_larger_than_the_router_buffers_is_delivered_in_order() {
    // 1,000 QoS 1 messages exceed the router's 100-slot inflight window and its 200-slot
    // notification buffer, so this exercises PUBACK relaying and `Unschedule` handling.
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let device = broker.device_a().await;
    let topic = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    let publisher = tokio::spawn(async move {
        for i in 0..1000 {
            device.publish(&topic, &i.to_string(), false).await;
        }
        device
    });
    for i in 0..1000 {
        let received = operator.next_publish().await;
        assert_eq!(received.payload, i.to_string().as_bytes());
    }
    drop(publisher.await.unwrap());
    broker.stop().await;
}

#[tokio::test]
async fn persistent_device_session_keeps_its_subscriptions_but_not_commands_sent_while_offline() {
    let broker = TestBroker::start().await;
    let mut options = broker.options(
        "00000000-0000-4000-8000-0000000000a1",
        Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
    );
    options.set_clean_session(false);
    let mut device = broker.connect(options.clone()).await.unwrap();
    assert!(!device.session_present);
    device
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    device.disconnect_cleanly().await;

    let command = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    broker
        .handle
        .publish(&command, "while offline", false)
        .await
        .unwrap();

    // No SUBSCRIBE on this connection: the session's subscription is still there.
    let mut device = broker.connect(options).await.unwrap();
    assert!(device.session_present);
    broker
        .handle
        .publish(&command, "online", false)
        .await
        .unwrap();
    let received = device.next_publish().await;
    assert_eq!(received.topic, command);
    assert_eq!(&received.payload[..], b"online");
    broker.stop().await;
}

#[tokio::test]
async fn device_commands_arrive_at_qos1_in_order_and_the_broker_takes_the_pubacks() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let mut device = broker.device_a().await;
    assert_eq!(
        device
            .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
            .await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let command = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    // More than the in-flight window (100): only consumed PUBACKs let the rest through.
    for i in 0..200 {
        broker
            .handle
            .publish(&command, i.to_string(), false)
            .await
            .unwrap();
    }
    for i in 0..200 {
        let received = device.next_publish().await;
        assert_eq!(received.topic, command);
        assert_eq!(received.qos, QoS::AtLeastOnce);
        assert_eq!(received.payload, i.to_string().as_bytes());
    }
    // Operators watching the org see commands too.
    let seen = operator.next_publish().await;
    assert_eq!(seen.topic, command);
    assert_eq!(&seen.payload[..], b"0");
    // The device's own traffic with the router is undisturbed by the acknowledgements.
    let presence = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Presence,
    );
    device
        .publish(&presence, r#"{"status":"online"}"#, true)
        .await;
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = device.next_event().await.unwrap() {
            break;
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_device_subscribed_at_qos0_gets_its_commands_at_qos0() {
    let broker = TestBroker::start().await;
    let mut device = broker.device_a().await;
    device
        .client
        .subscribe(
            "fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#",
            QoS::AtMostOnce,
        )
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(ack)) = device.next_event().await.unwrap() {
            assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
            );
            break;
        }
    }
    let command = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    broker.handle.publish(&command, "x", false).await.unwrap();
    let received = device.next_publish().await;
    assert_eq!(received.topic, command);
    assert_eq!(received.qos, QoS::AtMostOnce);
    broker.stop().await;
}

#[tokio::test]
async fn a_device_never_receives_another_devices_commands() {
    let broker = TestBroker::start().await;
    let mut device_a = broker.device_a().await;
    device_a
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    let mut device_b = broker.device_b().await;
    device_b
        .subscribe(&["fleetmq/v1/beta/00000000-0000-4000-8000-0000000000b1/down/#"])
        .await;
    let handle = &broker.handle;
    for topic in [
        down(
            "beta",
            "00000000-0000-4000-8000-0000000000b1",
            DownChannel::CommandRequest,
        ),
        // Same device id under another org: not this device's tree.
        down(
            "beta",
            "00000000-0000-4000-8000-0000000000a1",
            DownChannel::CommandRequest,
        ),
    ] {
        handle.publish(&topic, "not for a1", false).await.unwrap();
    }
    let marker = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::Error,
    );
    handle.publish(&marker, "marker", false).await.unwrap();
    assert_eq!(device_a.next_publish().await.topic, marker);
    assert_eq!(
        device_b.next_publish().await.topic,
        down(
            "beta",
            "00000000-0000-4000-8000-0000000000b1",
            DownChannel::CommandRequest
        )
    );
    broker.stop().await;
}

#[tokio::test]
async fn after_a_takeover_commands_go_to_the_new_connection() {
    let broker = TestBroker::start().await;
    let mut old = broker.device_a().await;
    old.subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    let mut new = broker.device_a().await;
    old.closed_by_broker().await;
    new.subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    let command = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    broker.handle.publish(&command, "new", false).await.unwrap();
    let received = new.next_publish().await;
    assert_eq!(&received.payload[..], b"new");
    broker.stop().await;
}

#[tokio::test]
async fn a_last_will_on_a_forbidden_topic_is_refused_at_connect() {
    let broker = TestBroker::start().await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "beta",
        "00000000-0000-4000-8000-0000000000b1",
    );
    let result = broker.connect(options).await;
    assert!(refused(ConnectReturnCode::NotAuthorized)(result));
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_one_and_a_half_keep_alives_and_its_will_sent() {
    let broker = TestBroker::start().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let mut options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    options.set_keep_alive(Duration::from_secs(1));
    // Connected but never polled again: no PINGREQ leaves the client.
    let (_client, _eventloop, _) = connect_idle(options).await.unwrap();
    let will = operator.next_publish().await;
    assert_eq!(
        will.topic,
        up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Presence
        )
    );
    broker.stop().await;
}

#[test]
fn broker_types_can_move_into_tasks() {
    fn assert_send<T: Send + 'static>() {}
    fn assert_clone_sync<T: Clone + Send + Sync + 'static>() {}
    assert_send::<Broker>();
    assert_send::<fleetmq_broker::LocalLink>();
    assert_clone_sync::<BrokerHandle>();
}

/// A valid MQTT 3.1.1 CONNECT without credentials (clean session, keep-alive 60).
fn raw_connect(client_id: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn random_packets_after_connect_never_take_the_broker_down() {
    let broker = TestBroker::start_with(BrokerConfig {
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    })
    .await;
    // xorshift: deterministic, no extra dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..300 {
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        stream
            .write_all(&raw_connect(&format!("fuzz-{i}")))
            .await
            .unwrap();
        let mut connack = [0u8; 4];
        timeout(WAIT, stream.read_exact(&mut connack))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
        // A random packet type (2..=15) with random flags and a random short body.
        let len = (next() % 40) as usize;
        let mut packet = vec![
            (((next() % 14) as u8 + 2) << 4) | (next() % 16) as u8,
            len as u8,
        ];
        packet.extend((0..len).map(|_| next() as u8));
        let _ = stream.write_all(&packet).await;
        let _ = stream.shutdown().await;
        read_to_close(&mut stream).await;
    }
    let mut anon = broker.connect(broker.options("after", None)).await.unwrap();
    anon.subscribe(&["test/#"]).await;
    anon.publish("test/alive", "yes", false).await;
    assert_eq!(anon.next_publish().await.topic, "test/alive");
    broker.stop().await;
}

/// Accepts `00000000-0000-4000-8000-0000000000a1` only after the test opens the gate.
struct GatedAuth {
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
}

impl Authenticator for GatedAuth {
    fn authenticate(&self, _login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            self.entered.notify_one();
            self.gate.notified().await;
            Ok(Principal::Device {
                org_slug: "acme".into(),
                device_id: DEV_A1.parse().expect("a device id"),
            })
        })
    }
}

#[tokio::test]
async fn a_device_kicked_while_its_login_is_in_flight_is_refused() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let auth = GatedAuth {
        entered: Arc::clone(&entered),
        gate: Arc::clone(&gate),
    };
    let broker = TestBroker::start_with_auth(BrokerConfig::default(), Arc::new(auth)).await;
    let options = broker.options(
        "00000000-0000-4000-8000-0000000000a1",
        Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
    );
    let login = tokio::spawn(Client::connect(options));
    timeout(WAIT, entered.notified()).await.unwrap();
    // Deactivated while the store was answering: no live session yet, but the kick sticks.
    assert!(
        !broker
            .handle
            .disconnect_device(DEV_A1.parse().unwrap())
            .await
    );
    gate.notify_one();
    let result = timeout(WAIT, login).await.unwrap().unwrap();
    assert!(refused(ConnectReturnCode::NotAuthorized)(result));
    // A login that starts after the kick is decided by the authenticator alone.
    let options = broker.options(
        "00000000-0000-4000-8000-0000000000a1",
        Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
    );
    let login = tokio::spawn(Client::connect(options));
    timeout(WAIT, entered.notified()).await.unwrap();
    gate.notify_one();
    assert!(timeout(WAIT, login).await.unwrap().is_ok());
    broker.stop().await;
}

#[tokio::test]
async fn binding_a_busy_port_or_an_impossible_router_size_is_an_error() {
    let broker = TestBroker::start().await;
    let busy = BrokerConfig {
        mqtt_addr: broker.addr,
        ..BrokerConfig::default()
    };
    let result = Broker::bind(busy, Arc::new(TestAuth)).await;
    assert!(matches!(
        result,
        Err(fleetmq_broker::BrokerError::Bind { .. })
    ));
    let mut tiny = BrokerConfig {
        mqtt_addr: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    };
    tiny.limits.max_queued_messages = 0;
    let result = Broker::bind(tiny, Arc::new(TestAuth)).await;
    assert!(matches!(
        result,
        Err(fleetmq_broker::BrokerError::Config(_))
    ));
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_closes_live_connections_and_publishes_their_wills() {
    let broker = TestBroker::start().await;
    let mut bridge = broker
        .handle
        .link("bridge", &[ALL_UP_FILTER])
        .await
        .unwrap();
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let mut device = broker.connect(options).await.unwrap();
    let addr = broker.addr;
    broker.stop().await;
    device.closed_by_broker().await;
    // The router outlives the listener, so in-process links still get the will.
    let will = timeout(WAIT, bridge.recv()).await.unwrap().unwrap();
    assert_eq!(
        will.topic,
        up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Presence
        )
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn in_process_link_resumes_after_the_router_paused_it_for_a_full_buffer() {
    let broker = TestBroker::start().await;
    let mut bridge = broker
        .handle
        .link("bridge", &[ALL_UP_FILTER])
        .await
        .unwrap();
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let device = broker.device_a().await;
    let topic = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    for i in 0..1000 {
        device.publish(&topic, &i.to_string(), false).await;
    }
    // Once the operator has everything, the router has filled the (unread) bridge link's
    // 200-slot buffer and paused it with `Unschedule`.
    for _ in 0..1000 {
        operator.next_publish().await;
    }
    for i in 0..1000 {
        let message = timeout(WAIT, bridge.recv()).await.unwrap().unwrap();
        assert_eq!(message.payload, i.to_string().as_bytes());
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_qos0_subscriber_that_stops_reading_gets_everything_once_it_reads_again() {
    stalled_subscriber_catches_up(QoS::AtMostOnce).await;
}

#[tokio::test]
async fn a_qos1_subscriber_that_stops_reading_gets_everything_once_it_reads_again() {
    stalled_subscriber_catches_up(QoS::AtLeastOnce).await;
}

async fn stalled_subscriber_catches_up(qos: QoS) {
    // A queue bound above what the slow subscriber lags (1,500 messages, 12 MB): within it
    // nothing is dropped.
    let mut config = BrokerConfig::default();
    config.limits.max_queued_messages = 2000;
    config.limits.max_queued_bytes = 32 * 1024 * 1024;
    let broker = TestBroker::start_with(config).await;
    let mut fast = broker.operator().await;
    fast.subscribe(&["fleetmq/v1/acme/#"]).await;
    let (slow, mut slow_loop, _) =
        connect_idle(broker.options("op-slow", Some(("op-acme", "pw-op"))))
            .await
            .unwrap();
    slow.subscribe("fleetmq/v1/acme/#", qos).await.unwrap();
    loop {
        let event = timeout(WAIT, slow_loop.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Packet::SubAck(_)) = event {
            break;
        }
    }
    // From here on `slow_loop` is not polled: its socket fills up, the broker's write to it
    // stalls, and the router pauses the connection (`Unschedule`).
    let device = broker.device_a().await;
    let topic = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    let payload = "x".repeat(8 * 1024);
    for _ in 0..1500 {
        device.publish(&topic, &payload, false).await;
    }
    for _ in 0..1500 {
        fast.next_publish().await;
    }
    let mut received = 0;
    while received < 1500 {
        let event = timeout(WAIT, slow_loop.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Packet::Publish(_)) = event {
            received += 1;
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn in_process_link_replays_retained_messages_flagged_as_retained() {
    let broker = TestBroker::start().await;
    let device = broker.device_a().await;
    let presence = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Presence,
    );
    device
        .publish(&presence, r#"{"status":"online"}"#, true)
        .await;
    // The operator seeing it proves the router has stored it.
    let mut operator = broker.operator().await;
    operator
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/up/presence"])
        .await;
    operator.next_publish().await;

    let mut bridge = broker
        .handle
        .link("bridge", &[ALL_UP_FILTER])
        .await
        .unwrap();
    let replayed = timeout(WAIT, bridge.recv()).await.unwrap().unwrap();
    assert_eq!(replayed.topic, presence);
    assert!(replayed.retain);
    let telemetry = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    device.publish(&telemetry, "{}", false).await;
    let live = timeout(WAIT, bridge.recv()).await.unwrap().unwrap();
    assert_eq!(live.topic, telemetry);
    assert!(!live.retain);
    broker.stop().await;
}

#[tokio::test]
async fn connect_with_reserved_flag_or_password_without_username_is_closed_without_connack() {
    let broker = TestBroker::start_with(BrokerConfig {
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    })
    .await;
    for flags in [0x03u8, 0x42] {
        let mut connect = raw_connect("c");
        connect[9] = flags;
        if flags & 0x40 != 0 {
            connect.extend_from_slice(&[0x00, 0x02, b'p', b'w']);
            connect[1] += 4;
        }
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        stream.write_all(&connect).await.unwrap();
        assert!(
            read_to_close(&mut stream).await.is_empty(),
            "flags {flags:#04x}"
        );
    }
    broker.stop().await;
}

/// The verdict on one delivery, sent by the test.
type Verdict = oneshot::Sender<Result<Delivered, BrokerError>>;

/// An uplink the test drives: every delivery waits until the test answers it.
struct HeldUplink {
    deliveries: mpsc::UnboundedSender<(UplinkMessage, Verdict)>,
    sessions: mpsc::UnboundedSender<SessionEvent>,
}

impl Uplink for HeldUplink {
    fn deliver(&self, message: UplinkMessage) -> UplinkFuture<'_> {
        let (verdict, answer) = oneshot::channel();
        let _ = self.deliveries.send((message, verdict));
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(BrokerError::Uplink("verdict dropped".into())))
        })
    }

    fn session(&self, event: SessionEvent) {
        let _ = self.sessions.send(event);
    }
}

/// The test's side of a [`HeldUplink`].
struct UplinkProbe {
    deliveries: mpsc::UnboundedReceiver<(UplinkMessage, Verdict)>,
    sessions: mpsc::UnboundedReceiver<SessionEvent>,
}

impl UplinkProbe {
    async fn next_delivery(&mut self) -> (UplinkMessage, Verdict) {
        timeout(WAIT, self.deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("broker alive")
    }

    async fn next_session(&mut self) -> SessionEvent {
        timeout(WAIT, self.sessions.recv())
            .await
            .expect("a session event in time")
            .expect("broker alive")
    }

    async fn next_disconnect_reason(&mut self) -> String {
        match self.next_session().await {
            SessionEvent::Disconnected { reason, .. } => reason,
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
}

async fn broker_with_held_uplink() -> (TestBroker, UplinkProbe) {
    let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
    let (sessions_tx, sessions) = mpsc::unbounded_channel();
    let uplink = HeldUplink {
        deliveries: deliveries_tx,
        sessions: sessions_tx,
    };
    let broker = TestBroker::start_with_uplink(Arc::new(uplink)).await;
    (
        broker,
        UplinkProbe {
            deliveries,
            sessions,
        },
    )
}

fn assert_connected(event: SessionEvent, device: &str) {
    match event {
        SessionEvent::Connected {
            device_id, peer, ..
        } => {
            assert_eq!(device_id.to_string(), device);
            assert!(peer.ip().is_loopback(), "peer is the client's address");
            assert_ne!(peer.port(), 0);
        }
        other => panic!("expected Connected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_device_qos1_publish_is_acknowledged_and_routed_only_after_the_uplink_took_it() {
    let (broker, mut probe) = broker_with_held_uplink().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let mut device = broker.device_a().await;
    let telemetry = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );

    device.publish(&telemetry, "t1", false).await;
    let (message, verdict) = probe.next_delivery().await;
    assert_eq!(message.org_slug, "acme");
    assert_eq!(
        message.device_id.to_string(),
        "00000000-0000-4000-8000-0000000000a1"
    );
    assert_eq!(message.topic, telemetry);
    assert_eq!(&message.payload[..], b"t1");
    assert!(!message.retain);

    // A marker routed now reaches the operator first: the held message is not in the
    // router, which is what would acknowledge it.
    broker
        .handle
        .publish("fleetmq/v1/acme/marker", "m", false)
        .await
        .unwrap();
    assert_eq!(
        operator.next_publish().await.topic,
        "fleetmq/v1/acme/marker"
    );
    while let Ok(event) = device.events.try_recv() {
        assert!(
            !matches!(event, Ok(Event::Incoming(Packet::PubAck(_)))),
            "PUBACK before the uplink answered"
        );
    }

    verdict.send(Ok(Delivered::Taken)).unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = device.next_event().await.unwrap() {
            break;
        }
    }
    let routed = operator.next_publish().await;
    assert_eq!(routed.topic, telemetry);
    assert_eq!(&routed.payload[..], b"t1");
    broker.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_closes_the_connection_without_acknowledgement_or_routing() {
    let (broker, mut probe) = broker_with_held_uplink().await;
    let mut operator = broker.operator().await;
    operator.subscribe(&["fleetmq/v1/acme/#"]).await;
    let options = with_offline_will(
        broker.options(
            "00000000-0000-4000-8000-0000000000a1",
            Some(("00000000-0000-4000-8000-0000000000a1", "pw-a1")),
        ),
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
    );
    let mut device = broker.connect(options).await.unwrap();
    assert_connected(
        probe.next_session().await,
        "00000000-0000-4000-8000-0000000000a1",
    );

    device
        .publish(
            &up(
                "acme",
                "00000000-0000-4000-8000-0000000000a1",
                UpChannel::Telemetry,
            ),
            "t1",
            false,
        )
        .await;
    let (_, verdict) = probe.next_delivery().await;
    verdict
        .send(Err(BrokerError::Uplink("store unavailable".into())))
        .unwrap();
    loop {
        match device.next_event().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => panic!("a failed delivery was acknowledged"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The will is the first thing the operator sees: the message itself was never routed.
    let first = operator.next_publish().await;
    assert_eq!(
        first.topic,
        up(
            "acme",
            "00000000-0000-4000-8000-0000000000a1",
            UpChannel::Presence
        )
    );
    assert_eq!(&first.payload[..], br#"{"status":"offline"}"#);
    assert_eq!(probe.next_disconnect_reason().await, "uplink failed");
    broker.stop().await;
}

#[tokio::test]
async fn device_messages_reach_the_uplink_in_order_and_qos2_is_gated_too() {
    let (broker, mut probe) = broker_with_held_uplink().await;
    let mut device = broker.device_a().await;
    let presence = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Presence,
    );
    let telemetry = up(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        UpChannel::Telemetry,
    );
    device.publish(&presence, "p", true).await;
    device.publish(&telemetry, "t", false).await;
    device
        .client
        .publish(&telemetry, QoS::ExactlyOnce, false, b"q2".to_vec())
        .await
        .unwrap();

    for (topic, payload, retain) in [(&presence, "p", true), (&telemetry, "t", false)] {
        let (message, verdict) = probe.next_delivery().await;
        assert_eq!(
            (&message.topic, &message.payload[..], message.retain),
            (topic, payload.as_bytes(), retain)
        );
        verdict.send(Ok(Delivered::Taken)).unwrap();
    }
    let (message, verdict) = probe.next_delivery().await;
    assert_eq!(&message.payload[..], b"q2");
    while let Ok(event) = device.events.try_recv() {
        assert!(
            !matches!(event, Ok(Event::Incoming(Packet::PubRec(_)))),
            "PUBREC before the uplink answered"
        );
    }
    verdict.send(Ok(Delivered::Taken)).unwrap();
    loop {
        if let Event::Incoming(Packet::PubComp(_)) = device.next_event().await.unwrap() {
            break;
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn session_events_report_the_peer_and_why_each_session_ended() {
    let (broker, mut probe) = broker_with_held_uplink().await;

    let device = broker.device_a().await;
    assert_connected(
        probe.next_session().await,
        "00000000-0000-4000-8000-0000000000a1",
    );
    device.disconnect_cleanly().await;
    assert_eq!(probe.next_disconnect_reason().await, "clean");

    let device = broker.device_a().await;
    assert_connected(
        probe.next_session().await,
        "00000000-0000-4000-8000-0000000000a1",
    );
    device.drop_socket();
    assert_eq!(probe.next_disconnect_reason().await, "connection lost");

    let mut old = broker.device_a().await;
    assert_connected(
        probe.next_session().await,
        "00000000-0000-4000-8000-0000000000a1",
    );
    let _new = broker.device_a().await;
    old.closed_by_broker().await;
    assert_eq!(probe.next_disconnect_reason().await, "taken over");
    assert_connected(
        probe.next_session().await,
        "00000000-0000-4000-8000-0000000000a1",
    );

    assert!(
        broker
            .handle
            .disconnect_device(DEV_A1.parse().unwrap())
            .await
    );
    assert_eq!(probe.next_disconnect_reason().await, "kicked");

    // Operators produce no events: the next one is device B's.
    let _operator = broker.operator().await;
    let _b = broker.device_b().await;
    assert_connected(
        probe.next_session().await,
        "00000000-0000-4000-8000-0000000000b1",
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_command_sent_between_connack_and_subscribe_is_delivered_once_the_device_subscribes() {
    let broker = TestBroker::start().await;
    let mut device = broker.device_a().await;
    // Connected, not yet subscribed: the bridge's resend-on-connect lands here.
    let command = down(
        "acme",
        "00000000-0000-4000-8000-0000000000a1",
        DownChannel::CommandRequest,
    );
    broker
        .handle
        .publish(&command, "early", false)
        .await
        .unwrap();
    let codes = device
        .subscribe(&["fleetmq/v1/acme/00000000-0000-4000-8000-0000000000a1/down/#"])
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let received = device.next_publish().await;
    assert_eq!(received.topic, command);
    assert_eq!(&received.payload[..], b"early");
    broker.stop().await;
}

#[tokio::test]
async fn persistent_sessions_past_the_limit_are_refused_and_counted_but_resuming_one_works() {
    let mut config = BrokerConfig {
        anonymous_sandbox: true,
        ..BrokerConfig::default()
    };
    config.limits.max_persistent_sessions = 1;
    let broker = TestBroker::start_with(config).await;
    let persistent = |id: &str| {
        let mut options = broker.options(id, None);
        options.set_clean_session(false);
        options
    };
    let kept = broker.connect(persistent("kept")).await.unwrap();
    kept.disconnect_cleanly().await;
    assert!(refused(ConnectReturnCode::ServiceUnavailable)(
        broker.connect(persistent("one-too-many")).await
    ));
    let refusals = broker
        .handle
        .metrics()
        .into_iter()
        .find(|(name, _, _)| *name == "fleetmq_mqtt_persistent_sessions_refused_total")
        .map(|(_, _, value)| value);
    assert_eq!(refusals, Some(1));
    // A clean session is not limited, and the kept session can always come back.
    let clean = broker.connect(broker.options("clean", None)).await.unwrap();
    clean.disconnect_cleanly().await;
    let resumed = broker.connect(persistent("kept")).await.unwrap();
    resumed.disconnect_cleanly().await;
    broker.stop().await;
}

#[tokio::test]
async fn an_in_process_link_replaced_by_one_of_the_same_name_is_told_it_is_closed() {
    let broker = TestBroker::start().await;
    let mut first = broker.handle.link("tool", &["a/#"]).await.unwrap();
    let waiting = tokio::spawn(async move { first.recv().await });
    // Let the first link wait before it is replaced.
    tokio::task::yield_now().await;
    let _second = broker.handle.link("tool", &["a/#"]).await.unwrap();
    let result = timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(
        result,
        Err(fleetmq_broker::BrokerError::LinkClosed)
    ));
    broker.stop().await;
}
