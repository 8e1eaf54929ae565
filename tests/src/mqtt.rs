//! A real MQTT client (rumqttc) for end-to-end tests, with its events awaited one by one.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use fleetmq_protocol::{DownChannel, Topic, UpChannel};
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long any single MQTT event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A connected client whose event loop runs in a task.
pub struct MqttClient {
    /// Sends packets.
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// Events that arrived while [`MqttClient::publish`] waited for its PUBACK.
    skipped: VecDeque<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

/// A registered device as the tests see it.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// Device id (client id and username).
    pub id: String,
    /// Device key (password).
    pub key: String,
    /// Slug of its organization.
    pub org: String,
}

impl DeviceIdentity {
    /// MQTT options for this device, with the retained offline presence as its will.
    pub fn options(&self, addr: SocketAddr) -> MqttOptions {
        let mut options = MqttOptions::new(&self.id, addr.ip().to_string(), addr.port());
        options.set_credentials(&self.id, &self.key);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_last_will(LastWill::new(
            self.up(UpChannel::Presence),
            br#"{"status":"offline"}"#.to_vec(),
            QoS::AtLeastOnce,
            true,
        ));
        options
    }

    /// One of the device's `up/` topics.
    pub fn up(&self, channel: UpChannel) -> String {
        Topic::up(&self.org, &self.id, channel).to_string()
    }

    /// One of the device's `down/` topics.
    pub fn down(&self, channel: DownChannel) -> String {
        Topic::down(&self.org, &self.id, channel).to_string()
    }
}

impl MqttClient {
    /// Connects; resolves on CONNACK (or the refusal).
    pub async fn connect(options: MqttOptions) -> Result<MqttClient, ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        loop {
            let event = tokio::time::timeout(WAIT, eventloop.poll())
                .await
                .expect("CONNACK in time")?;
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                break;
            }
        }
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
        Ok(MqttClient {
            client,
            events,
            skipped: VecDeque::new(),
            task,
        })
    }

    /// Connects a device and announces it online (retained presence, as devices do).
    pub async fn device(addr: SocketAddr, device: &DeviceIdentity, presence: &str) -> MqttClient {
        let mut client = MqttClient::connect(device.options(addr))
            .await
            .expect("device connects");
        client
            .publish(&device.up(UpChannel::Presence), presence, true)
            .await;
        client
    }

    /// The next event.
    pub async fn next_event(&mut self) -> Result<Event, ConnectionError> {
        if let Some(event) = self.skipped.pop_front() {
            return event;
        }
        self.next_live_event().await
    }

    async fn next_live_event(&mut self) -> Result<Event, ConnectionError> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an MQTT event in time")
            .expect("the event loop is alive")
    }

    /// Subscribes at QoS 1 and returns the SUBACK codes.
    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        self.try_subscribe(filters).await.expect("SUBACK")
    }

    /// [`subscribe`](Self::subscribe), or the error that ended the connection instead of a
    /// SUBACK (some brokers close it on a refused subscription).
    pub async fn try_subscribe(
        &mut self,
        filters: &[&str],
    ) -> Result<Vec<SubscribeReasonCode>, ConnectionError> {
        let filters: Vec<_> = filters
            .iter()
            .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce))
            .collect();
        self.client
            .subscribe_many(filters)
            .await
            .expect("SUBSCRIBE queued");
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = self.next_event().await? {
                return Ok(ack.return_codes);
            }
        }
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK. What arrives meanwhile (the
    /// server may answer before it acknowledges: `down/error`, a resent command) stays
    /// for [`next_event`](Self::next_event).
    pub async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .await
            .expect("PUBLISH queued");
        loop {
            match self.next_live_event().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Err(e) => panic!("connection failed while waiting for PUBACK: {e}"),
                other => self.skipped.push_back(other),
            }
        }
    }

    /// Publishes without waiting for anything.
    pub async fn publish_nowait(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .expect("PUBLISH queued");
    }

    /// The next message delivered to this client.
    pub async fn next_publish(&mut self) -> Publish {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = self.next_event().await.expect("a PUBLISH")
            {
                return p;
            }
        }
    }

    /// Waits until the broker closes the connection.
    pub async fn closed_by_broker(&mut self) -> ConnectionError {
        loop {
            if let Err(e) = self.next_event().await {
                return e;
            }
        }
    }

    /// Sends DISCONNECT and waits until it is on the wire.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("DISCONNECT queued");
        loop {
            match self.next_event().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Drops the TCP connection without DISCONNECT, as a crash or power loss would.
    pub fn drop_connection(self) {
        self.task.abort();
    }
}
