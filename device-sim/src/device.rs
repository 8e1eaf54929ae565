//! One simulated device: a tokio task that holds one MQTT connection and behaves like a
//! fleetmq device agent (presence, telemetry, coordinates, commands, reboots, reconnects).
//!
//! The task owns its socket, two small buffers and a few timers, nothing else; a
//! [`SimHandle`] talks to it through a small control channel and (for single devices) an
//! event channel that tests await.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetmq_protocol::software::{
    SoftwareDelivery, SoftwareInventory, SoftwareOffer, SoftwareOutcome, SoftwareStatus,
};
use fleetmq_protocol::system_update::{
    Call, ImagesResource, UpdateRequest, UpdateResource, UpdateResponse,
};
use fleetmq_protocol::topic::{Channel, DownChannel, Topic, UpChannel, device_down_filter};
use fleetmq_protocol::{
    CommandRequest, CommandResult, ConfigNotice, ConfigReport, ErrorNotice, Presence,
    PresenceStatus, Telemetry,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{
    Instant, Interval, MissedTickBehavior, interval_at, sleep, sleep_until, timeout,
};
use uuid::Uuid;

use crate::SimError;
use crate::behaviour::{AfterAnswer, Position, Vitals, answer};
use crate::configuration::{self, ConfigAgent, NoticeAction};
use crate::mqtt::{self, Codec, Connect, Incoming, QoS, ReplyTo, Version, Will};
use crate::software::{self, SoftwareAgent, SoftwareConfig};
use crate::stats::{Stats, StatsSnapshot, UpgradeSnapshot};
use crate::tls::DeviceTls;
use crate::update::{self, DownloadNews, Effect, Fault, Finish, UpdateAgent};

/// Largest packet the device accepts from the broker; commands are small.
const MAX_PACKET: usize = 256 * 1024;
/// A device whose broker stops reading gives up once this much is queued.
const MAX_PENDING_WRITE: usize = 1024 * 1024;
/// First wait before reconnecting; doubles per failure up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping device waits for the broker to close after DISCONNECT.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Everything one simulated device needs to know. Build with [`DeviceConfig::new`] and
/// adjust the public fields.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The broker's MQTT address.
    pub mqtt_addr: SocketAddr,
    /// Organization slug (topic level 2).
    pub org_slug: String,
    /// Device id (UUID text): client id, user name and topic level 3.
    pub device_id: String,
    /// Device key: the MQTT password (unused when [`tls`](Self::tls) logs in with a client
    /// certificate).
    pub key: String,
    /// Announced in the online presence.
    pub model: String,
    /// Announced in the online presence.
    pub os: String,
    /// Announced in the online presence.
    pub system: String,
    /// Announced in the online presence.
    pub firmware_version: String,
    /// Period of `up/telemetry`; `None` publishes only on [`SimHandle::publish_telemetry_now`].
    pub telemetry_interval: Option<Duration>,
    /// Period of `up/coordinates`; `None` publishes only on demand.
    pub coordinates_interval: Option<Duration>,
    /// Where the device is installed, `(longitude, latitude)`; fixes jitter ~100 m around it.
    pub home: (f64, f64),
    /// MQTT keep-alive; a PINGREQ is sent every period and a missing PINGRESP drops the link.
    pub keep_alive: Duration,
    /// Time between the abrupt close of a reboot and the reconnection.
    pub reboot_time: Duration,
    /// TCP connect plus CONNACK deadline.
    pub connect_timeout: Duration,
    /// Local address to bind before connecting, so one process can open more than the ~28k
    /// ephemeral ports of a single source address (e.g. 127.0.0.2 towards a loopback broker).
    pub source_ip: Option<IpAddr>,
    /// How long `update/start` runs before the image is installed and the device reboots
    /// (or, with a failure [`Fault`], before the update fails).
    pub install_time: Duration,
    /// A misbehaviour to simulate; `None` is a well-behaved device.
    pub fault: Option<Fault>,
    /// MQTT over TLS (to a TLS listener at `mqtt_addr`), with a client certificate or not;
    /// `None` is plain TCP.
    pub tls: Option<DeviceTls>,
    /// The applications the device runs at start and how it answers software offers and
    /// deliveries (see [`software`]).
    pub software: SoftwareConfig,
    /// Which MQTT the device speaks. An MQTT 5 device answers requests on the response
    /// topic they name, with their correlation data.
    pub mqtt_version: Version,
}

impl DeviceConfig {
    /// A device with a plausible identity, telemetry every 10 s, coordinates every 60 s,
    /// 60 s keep-alive, instant reboots and firmware installations, no source address, no
    /// fault, plain TCP, no applications (offers accepted, 200 ms per software installation),
    /// MQTT 3.1.1.
    pub fn new(
        mqtt_addr: SocketAddr,
        org_slug: impl Into<String>,
        device_id: impl Into<String>,
        key: impl Into<String>,
    ) -> DeviceConfig {
        DeviceConfig {
            mqtt_addr,
            org_slug: org_slug.into(),
            device_id: device_id.into(),
            key: key.into(),
            model: "sim-board".to_owned(),
            os: "OpenWrt 23.05.3".to_owned(),
            system: "fleetmq-sim".to_owned(),
            firmware_version: "1.0.0".to_owned(),
            telemetry_interval: Some(Duration::from_secs(10)),
            coordinates_interval: Some(Duration::from_secs(60)),
            home: (12.4964, 41.9028),
            keep_alive: Duration::from_secs(60),
            reboot_time: Duration::ZERO,
            connect_timeout: Duration::from_secs(10),
            source_ip: None,
            install_time: Duration::ZERO,
            fault: None,
            tls: None,
            software: SoftwareConfig::default(),
            mqtt_version: Version::V311,
        }
    }
}

/// The payload of an answer to a request. One that came with correlation data (MQTT 5) is
/// answered as a generic MQTT 5 responder would: the correlation data says which request it
/// answers, so the payload leaves its `id` out.
fn answer_payload(payload: Vec<u8>, reply_to: Option<&ReplyTo>) -> Vec<u8> {
    if reply_to.is_none() {
        return payload;
    }
    match serde_json::from_slice::<serde_json::Value>(&payload) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.remove("id");
            serde_json::to_vec(&fields).unwrap_or(payload)
        }
        _ => payload,
    }
}

/// Something a device did, for tests and demos that follow one device closely.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// CONNACK accepted, online presence sent and `down/#` subscribed: commands published
    /// from now on reach the device.
    Connected,
    /// A connection attempt failed; the device retries after a backoff.
    ConnectFailed {
        /// Why, e.g. a CONNACK refusal.
        reason: String,
    },
    /// An established connection ended without the device asking; it reconnects.
    Disconnected {
        /// EOF, I/O or protocol error, keep-alive timeout.
        reason: String,
    },
    /// A command was answered on `up/command/result`.
    CommandHandled {
        /// The request as received.
        request: CommandRequest,
        /// The answer sent.
        result: CommandResult,
    },
    /// A reboot command was acknowledged; the connection is being dropped without
    /// DISCONNECT so that the broker publishes the offline will.
    Rebooting,
    /// The server told the device on `down/error` that it refused one of its payloads.
    ServerError(ErrorNotice),
    /// A message on a down topic was unusable and skipped.
    Ignored {
        /// Its topic.
        topic: String,
        /// Why it was skipped.
        reason: String,
    },
    /// A request arrived on `down/update/request` (answered or not: see
    /// [`UpdateAnswered`](Self::UpdateAnswered); a [`Fault::Hang`] device never answers).
    UpdateRequest {
        /// The request's correlation id.
        id: Uuid,
        /// Its path relative to `npm.system_update/2.0/`, e.g. `images/fetch`.
        path: String,
    },
    /// A request was answered on `up/update/response`.
    UpdateAnswered(UpdateResponse),
    /// The update resource was published on `up/update` (on connect and on every change).
    UpdatePublished(UpdateResource),
    /// The images resource was published on `up/images` (on connect and on every change).
    ImagesPublished(ImagesResource),
    /// The device answered a configuration notice on `up/config/status` (applied or not).
    ConfigReported(ConfigReport),
    /// An update was installed: the device now runs `version` and reboots next.
    Installed {
        /// The new firmware version.
        version: String,
    },
    /// The application inventory was published on `up/software` (on connect when the device
    /// runs any application, and after every installation).
    SoftwareInventoryPublished(SoftwareInventory),
    /// An answer was published on `up/software/status` (first answers and repeats alike).
    SoftwareStatusPublished(SoftwareStatus),
    /// A new offer was answered by the consent policy (repeats are not reported here).
    SoftwareOfferAnswered {
        /// The offer as received.
        offer: SoftwareOffer,
        /// `accepted` or `rejected`.
        status: SoftwareOutcome,
    },
    /// A delivery was installed: the device now runs `version` of `app`.
    SoftwareInstalled {
        /// The application.
        app: String,
        /// Its new version.
        version: String,
    },
    /// A delivery failed (unknown application, or picked by the failure fraction).
    SoftwareFailed {
        /// The application.
        app: String,
        /// The version that was not installed.
        version: String,
        /// The reason sent with `failed`.
        reason: String,
    },
    /// The device task ended (after [`SimHandle::stop`]).
    Stopped,
}

#[derive(Debug, Clone, Copy)]
enum Control {
    TelemetryNow,
    CoordinatesNow,
    Stop,
}

/// Starts simulated devices.
pub struct SimDevice;

impl SimDevice {
    /// Starts one device with its own counters and an event stream on the handle. Must be
    /// called inside a tokio runtime. Events queue until read (a few per command or
    /// reconnection, none per telemetry message), so a long-lived device nobody reads from
    /// grows slowly; use a [`Fleet`](crate::Fleet) for load, it has no event streams.
    pub fn spawn(config: DeviceConfig) -> SimHandle {
        spawn_device(config, Arc::new(Stats::default()), true, None, None)
    }
}

/// Starts a device that counts into shared `stats`, with or without an event stream, that
/// waits until `start_at` before its first connection (for paced fleets), and that holds a
/// permit of `handshakes` from TCP connect to SUBACK (so a fleet never has more handshakes
/// in flight than the broker can answer).
pub(crate) fn spawn_device(
    config: DeviceConfig,
    stats: Arc<Stats>,
    with_events: bool,
    start_at: Option<Instant>,
    handshakes: Option<Arc<Semaphore>>,
) -> SimHandle {
    let (control_tx, control_rx) = mpsc::channel(4);
    let (events_tx, events_rx) = if with_events {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let device_id = config.device_id.clone();
    let mut device = Device::new(config, Arc::clone(&stats), events_tx);
    device.handshakes = handshakes;
    let task = tokio::spawn(device.run(control_rx, start_at));
    SimHandle {
        device_id,
        control: control_tx,
        events: events_rx,
        stats,
        task,
    }
}

/// Controls one running device. Dropping it leaves the device running until the runtime
/// ends; call [`stop`](Self::stop) to take it offline cleanly.
pub struct SimHandle {
    device_id: String,
    control: mpsc::Sender<Control>,
    events: Option<mpsc::UnboundedReceiver<SimEvent>>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// The device id this handle controls.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The next thing the device did. `None` once the device stopped and every event was
    /// read, or if the device belongs to a [`Fleet`](crate::Fleet) (no event stream).
    pub async fn next_event(&mut self) -> Option<SimEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Skips events until one satisfies `wanted` and returns it (`None` if the device stops
    /// first). Wrap in a timeout: it waits as long as the device runs.
    pub async fn wait_for(
        &mut self,
        mut wanted: impl FnMut(&SimEvent) -> bool,
    ) -> Option<SimEvent> {
        while let Some(event) = self.next_event().await {
            if wanted(&event) {
                return Some(event);
            }
        }
        None
    }

    /// Waits for the next [`SimEvent::Connected`].
    pub async fn connected(&mut self) -> Option<SimEvent> {
        self.wait_for(|e| matches!(e, SimEvent::Connected)).await
    }

    /// Publishes a telemetry sample now (if connected; otherwise the request is dropped).
    pub async fn publish_telemetry_now(&self) -> Result<(), SimError> {
        self.send(Control::TelemetryNow).await
    }

    /// Publishes a coordinates fix now (if connected; otherwise the request is dropped).
    pub async fn publish_coordinates_now(&self) -> Result<(), SimError> {
        self.send(Control::CoordinatesNow).await
    }

    /// The counters this device adds to (shared with its fleet, if any).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Upgrade timings of this device (shared with its fleet, if any): first fetch request,
    /// connection on new firmware, duration.
    pub fn upgrades(&self) -> UpgradeSnapshot {
        self.stats.upgrades().snapshot()
    }

    /// Publishes a retained offline presence, disconnects cleanly and waits for the task to
    /// end.
    pub async fn stop(self) {
        self.request_stop();
        self.join().await;
    }

    pub(crate) fn request_stop(&self) {
        // A full channel means orders are queued; Stop must still get through, so wait in a
        // detached task rather than dropping it.
        if let Err(mpsc::error::TrySendError::Full(stop)) = self.control.try_send(Control::Stop) {
            let control = self.control.clone();
            tokio::spawn(async move { control.send(stop).await });
        }
    }

    pub(crate) async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(device_id = %self.device_id, error = %e, "device task failed");
        }
    }

    async fn send(&self, control: Control) -> Result<(), SimError> {
        self.control
            .send(control)
            .await
            .map_err(|_| SimError::Stopped)
    }
}

/// Topic names of one device, rendered once.
struct Topics {
    presence: String,
    telemetry: String,
    coordinates: String,
    command_result: String,
    update: String,
    images: String,
    update_response: String,
    config_status: String,
    software: String,
    software_status: String,
    down_filter: String,
}

/// How a session ended.
enum End {
    /// Asked to stop; offline presence and DISCONNECT were sent.
    Stopped,
    /// A reboot command: connection dropped on purpose.
    Reboot,
    /// Could not connect.
    ConnectFailed(SimError),
    /// Was connected, then lost the connection.
    Lost(String),
}

struct Device {
    config: DeviceConfig,
    topics: Topics,
    online: Vec<u8>,
    offline: Vec<u8>,
    stats: Arc<Stats>,
    events: Option<mpsc::UnboundedSender<SimEvent>>,
    vitals: Vitals,
    position: Position,
    next_pkid: u16,
    backoff: Duration,
    ever_connected: bool,
    after_reboot: bool,
    handshakes: Option<Arc<Semaphore>>,
    /// Images and update process; survive reconnections and reboots.
    agent: UpdateAgent,
    /// When the running update ends, if one runs.
    install_at: Option<Instant>,
    /// Download tasks report here; created with the first download (a channel costs a few
    /// KiB, too much to give each of 19,000 idle devices).
    news: Option<NewsChannel>,
    /// Where this device's upgrade stands, for [`UpgradeTimes`](crate::stats::UpgradeTimes).
    timing: UpgradeTiming,
    /// The configuration it runs; survives reconnections and reboots.
    configuration: ConfigAgent,
    /// Configuration downloads report here; created with the first one.
    config_news: Option<ConfigChannel>,
    /// Applications and software operations; survive reconnections and reboots.
    software: SoftwareAgent,
    /// Installations to finish, earliest first (one install time for all, so in order).
    software_due: VecDeque<(Instant, Uuid)>,
}

type ConfigChannel = (
    mpsc::UnboundedSender<configuration::Fetched>,
    mpsc::UnboundedReceiver<configuration::Fetched>,
);

/// A device's upgrade as timed by the fleet's [`UpgradeTimes`](crate::stats::UpgradeTimes):
/// from the first `images/fetch` request to the connection on the new firmware. Only the
/// first upgrade of a device is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpgradeTiming {
    /// No fetch request yet.
    NotStarted,
    /// The first fetch request arrived then (std time, to compare across devices).
    Fetched(std::time::Instant),
    /// Installed; the reconnection on the new firmware ends it.
    Installed(std::time::Instant),
    /// Recorded.
    Done,
}

type NewsChannel = (
    mpsc::UnboundedSender<DownloadNews>,
    mpsc::UnboundedReceiver<DownloadNews>,
);

impl Device {
    fn new(
        config: DeviceConfig,
        stats: Arc<Stats>,
        events: Option<mpsc::UnboundedSender<SimEvent>>,
    ) -> Device {
        let (org, id) = (config.org_slug.as_str(), config.device_id.as_str());
        let topics = Topics {
            presence: Topic::up(org, id, UpChannel::Presence).to_string(),
            telemetry: Topic::up(org, id, UpChannel::Telemetry).to_string(),
            coordinates: Topic::up(org, id, UpChannel::Coordinates).to_string(),
            command_result: Topic::up(org, id, UpChannel::CommandResult).to_string(),
            update: Topic::up(org, id, UpChannel::Update).to_string(),
            images: Topic::up(org, id, UpChannel::Images).to_string(),
            update_response: Topic::up(org, id, UpChannel::UpdateResponse).to_string(),
            config_status: Topic::up(org, id, UpChannel::ConfigStatus).to_string(),
            software: Topic::up(org, id, UpChannel::Software).to_string(),
            software_status: Topic::up(org, id, UpChannel::SoftwareStatus).to_string(),
            down_filter: device_down_filter(org, id),
        };
        let online = online_presence(&config);
        let agent = UpdateAgent::new(&config.firmware_version, config.fault, unix_now());
        let offline = Presence::status(PresenceStatus::Offline).to_bytes();
        let position = Position::new(config.home.0, config.home.1);
        let software = SoftwareAgent::new(&config.device_id, &config.software);
        Device {
            config,
            topics,
            online,
            offline,
            stats,
            events,
            vitals: Vitals::boot(),
            position,
            next_pkid: 0,
            backoff: INITIAL_BACKOFF,
            ever_connected: false,
            after_reboot: false,
            handshakes: None,
            agent,
            install_at: None,
            news: None,
            timing: UpgradeTiming::NotStarted,
            configuration: ConfigAgent::default(),
            config_news: None,
            software,
            software_due: VecDeque::new(),
        }
    }

    fn emit(&self, event: SimEvent) {
        if let Some(events) = &self.events {
            // The handle may have been dropped; the device keeps running regardless.
            let _ = events.send(event);
        }
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    async fn run(mut self, mut control: mpsc::Receiver<Control>, start_at: Option<Instant>) {
        if let Some(start_at) = start_at
            && !wait_or_stop(sleep_until(start_at), &mut control).await
        {
            self.emit(SimEvent::Stopped);
            return;
        }
        if let Some(Fault::Offline { for_ }) = self.config.fault
            && !wait_or_stop(sleep(for_), &mut control).await
        {
            self.emit(SimEvent::Stopped);
            return;
        }
        loop {
            let wait = match self.session(&mut control).await {
                End::Stopped => break,
                End::Reboot => {
                    self.stats.bump(&self.stats.reboots);
                    self.after_reboot = true;
                    self.vitals = Vitals::boot();
                    self.config.reboot_time
                }
                End::ConnectFailed(error) => {
                    tracing::debug!(device_id = %self.config.device_id, %error, "connect failed");
                    match error {
                        SimError::Refused { code } => {
                            let slot = usize::from(code).min(6) % 6;
                            self.stats.add(&self.stats.refused[slot]);
                        }
                        SimError::Timeout => self.stats.add(&self.stats.connect_timeouts),
                        _ => {}
                    }
                    self.stats.bump(&self.stats.connect_errors);
                    self.emit(SimEvent::ConnectFailed {
                        reason: error.to_string(),
                    });
                    self.next_backoff()
                }
                End::Lost(reason) => {
                    tracing::debug!(device_id = %self.config.device_id, %reason, "connection lost");
                    self.stats.bump(&self.stats.connections_lost);
                    self.emit(SimEvent::Disconnected { reason });
                    self.next_backoff()
                }
            };
            if !wait_or_stop(sleep(wait), &mut control).await {
                break;
            }
        }
        self.emit(SimEvent::Stopped);
    }

    /// A random wait in `[backoff/2, backoff]`, then doubles the backoff: a fleet dropped at
    /// once does not come back in lockstep.
    fn next_backoff(&mut self) -> Duration {
        let wait = self.backoff.mul_f64(rand::random_range(0.5..=1.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }

    async fn session(&mut self, control: &mut mpsc::Receiver<Control>) -> End {
        let handshake = match self.handshakes.clone() {
            None => None,
            Some(handshakes) => {
                let acquire = handshakes.acquire_owned();
                tokio::pin!(acquire);
                loop {
                    tokio::select! {
                        permit = &mut acquire => break permit.ok(),
                        order = control.recv() => match order {
                            Some(Control::Stop) | None => return End::Stopped,
                            Some(_) => {}
                        },
                    }
                }
            }
        };
        let (mut link, mut rbuf) = {
            let connecting = timeout(self.config.connect_timeout, self.connect());
            tokio::pin!(connecting);
            loop {
                tokio::select! {
                    connected = &mut connecting => match connected {
                        Ok(Ok(connected)) => break connected,
                        Ok(Err(e)) => return End::ConnectFailed(e),
                        Err(_) => return End::ConnectFailed(SimError::Timeout),
                    },
                    order = control.recv() => match order {
                        Some(Control::Stop) | None => return End::Stopped,
                        // Nothing to publish on yet.
                        Some(_) => {}
                    },
                }
            }
        };
        let mut announced = false;
        let end = match &mut link {
            Link::Plain(tcp) => {
                let (rd, wr) = tcp.split();
                self.serve(rd, wr, &mut rbuf, control, handshake, &mut announced)
                    .await
            }
            Link::Tls(tls) => {
                let (rd, wr) = tokio::io::split(tls.as_mut());
                self.serve(rd, wr, &mut rbuf, control, handshake, &mut announced)
                    .await
            }
        };
        if announced {
            self.stats.set_connected(false);
        }
        end
    }

    async fn connect(&self) -> Result<(Link, BytesMut), SimError> {
        let addr = self.config.mqtt_addr;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = self.config.source_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        match &self.config.tls {
            None => {
                let mut tcp = tcp;
                let rbuf = self.mqtt_connect(&mut tcp).await?;
                Ok((Link::Plain(tcp), rbuf))
            }
            Some(tls) => {
                let mut stream = tls.connector().connect(tls.server_name(), tcp).await?;
                let rbuf = self.mqtt_connect(&mut stream).await?;
                Ok((Link::Tls(Box::new(stream)), rbuf))
            }
        }
    }

    /// CONNECT, then CONNACK: what is read past the CONNACK stays in the returned buffer.
    async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> Result<BytesMut, SimError> {
        // A device with a client certificate is who its certificate says: no key is sent.
        let certificate_login = self
            .config
            .tls
            .as_ref()
            .is_some_and(DeviceTls::with_certificate_login);
        let mut wbuf = BytesMut::with_capacity(256);
        mqtt::encode_connect(
            &Connect {
                client_id: &self.config.device_id,
                login: (!certificate_login)
                    .then_some((self.config.device_id.as_str(), self.config.key.as_bytes())),
                keep_alive: u16::try_from(self.config.keep_alive.as_secs()).unwrap_or(u16::MAX),
                clean_session: true,
                will: Some(Will {
                    topic: &self.topics.presence,
                    payload: &self.offline,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                }),
                version: self.config.mqtt_version,
            },
            &mut wbuf,
        );
        stream.write_all(&wbuf).await?;
        stream.flush().await?;
        let mut rbuf = BytesMut::with_capacity(512);
        loop {
            match mqtt::decode(&mut rbuf, MAX_PACKET, self.config.mqtt_version)? {
                Some(Incoming::ConnAck { code: 0, .. }) => return Ok(rbuf),
                Some(Incoming::ConnAck { code, .. }) => return Err(SimError::Refused { code }),
                Some(_) => return Err(SimError::Protocol("expected CONNACK")),
                None => {}
            }
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err(SimError::Protocol(
                    "broker closed the connection before CONNACK",
                ));
            }
        }
    }

    /// The connected loop: reads and answers, publishes on timers, obeys the handle.
    async fn serve<R, W>(
        &mut self,
        mut rd: R,
        mut wr: W,
        rbuf: &mut BytesMut,
        control: &mut mpsc::Receiver<Control>,
        mut handshake: Option<OwnedSemaphorePermit>,
        announced: &mut bool,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut wbuf = BytesMut::with_capacity(512);
        // Subscribed before announcing itself online: whatever the presence makes the server
        // send (a resent command, the next upgrade step) finds the subscription in place, on
        // any broker (an external one drops a message for a client not yet subscribed).
        let sub_pkid = self.pkid();
        self.codec().subscribe(
            sub_pkid,
            &self.topics.down_filter,
            QoS::AtLeastOnce,
            &mut wbuf,
        );
        let pkid = self.pkid();
        Codec(self.config.mqtt_version).publish(
            &self.topics.presence,
            &self.online,
            QoS::AtLeastOnce,
            true,
            pkid,
            &mut wbuf,
        );
        self.stats.add(&self.stats.published);

        let now = Instant::now();
        let mut telemetry = self
            .config
            .telemetry_interval
            .map(|p| spread_interval(now, p));
        let mut coordinates = self
            .config
            .coordinates_interval
            .map(|p| spread_interval(now, p));
        let keep_alive = self.config.keep_alive.max(Duration::from_secs(1));
        let mut ping = interval_at(now + keep_alive, keep_alive);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        let mut reboot_after: Option<u16> = None;
        let mut last_acked: Option<u16> = None;
        let mut subscribed = false;
        // Bytes handed to the writer that a TLS writer may still hold (it passes on what the
        // socket takes now and keeps the rest until the next write or a flush).
        let mut unflushed = false;

        'serving: loop {
            // Every complete packet already buffered first: bytes that arrived together with
            // the CONNACK, or several packets in one read.
            loop {
                let packet = match mqtt::decode(rbuf, MAX_PACKET, self.config.mqtt_version) {
                    Ok(Some(packet)) => packet,
                    Ok(None) => break,
                    Err(e) => return End::Lost(format!("protocol error: {e}")),
                };
                match packet {
                    Incoming::Publish {
                        topic,
                        payload,
                        qos,
                        pkid,
                        reply_to,
                        ..
                    } => {
                        if qos == 1 {
                            mqtt::encode_puback(pkid, &mut wbuf);
                        }
                        let reply_to = reply_to.as_ref();
                        if let Some(result_pkid) =
                            self.on_message(&topic, &payload, reply_to, &mut wbuf)
                        {
                            reboot_after = Some(result_pkid);
                        }
                    }
                    Incoming::PubAck(pkid) => {
                        self.stats.add(&self.stats.acked);
                        last_acked = Some(pkid);
                        if reboot_after == Some(pkid) {
                            self.emit(SimEvent::Rebooting);
                            // Dropping the socket without DISCONNECT: the broker
                            // publishes the offline will, as for a real reboot.
                            return End::Reboot;
                        }
                    }
                    Incoming::SubAck { pkid, codes } if pkid == sub_pkid => {
                        if codes.first().is_none_or(|c| *c == 0x80) {
                            return End::Lost(
                                "the broker refused the down/# subscription".to_owned(),
                            );
                        }
                        handshake.take();
                        *announced = true;
                        subscribed = true;
                        self.on_connected();
                        let effects = self.agent.on_connect();
                        self.apply(effects, &mut wbuf);
                        let effects = self.software.on_connect();
                        self.apply_software(effects, &mut wbuf);
                    }
                    Incoming::PingResp => awaiting_pong = false,
                    Incoming::ConnAck { .. } => {
                        return End::Lost("protocol error: a second CONNACK".to_owned());
                    }
                    Incoming::SubAck { .. } | Incoming::UnsubAck(_) => {}
                    Incoming::Disconnect(reason) => {
                        return End::Lost(format!(
                            "the broker disconnected it (reason {reason:#04x})"
                        ));
                    }
                }
            }
            if wbuf.len() > MAX_PENDING_WRITE {
                return End::Lost("the broker stopped reading".to_owned());
            }
            tokio::select! {
                read = rd.read_buf(rbuf) => {
                    match read {
                        Ok(0) => return End::Lost("the broker closed the connection".to_owned()),
                        Ok(_) => {}
                        Err(e) => return End::Lost(e.to_string()),
                    }
                }
                written = write_or_flush(&mut wr, &mut wbuf), if !wbuf.is_empty() || unflushed => {
                    match written {
                        Ok(Written::Bytes(0)) => {
                            return End::Lost("the broker closed the connection".to_owned());
                        }
                        Ok(Written::Bytes(_)) => unflushed = true,
                        Ok(Written::Flushed) => unflushed = false,
                        Err(e) => return End::Lost(e.to_string()),
                    }
                }
                () = tick(&mut telemetry) => self.publish_telemetry(&mut wbuf),
                () = tick(&mut coordinates) => self.publish_coordinates(&mut wbuf),
                _ = ping.tick() => {
                    if awaiting_pong {
                        return End::Lost("no PINGRESP within the keep-alive".to_owned());
                    }
                    mqtt::encode_pingreq(&mut wbuf);
                    awaiting_pong = true;
                }
                Some(news) = next_news(&mut self.news) => {
                    let effects = self.agent.on_download(news);
                    self.apply(effects, &mut wbuf);
                }
                Some(fetched) = next_fetched(&mut self.config_news) => {
                    let report = self.configuration.on_fetched(fetched);
                    self.report_config(report, &mut wbuf);
                }
                () = sleep_until_some(self.install_at), if subscribed => {
                    self.install_at = None;
                    if self.finish_update(&mut wbuf) {
                        // Reboot once everything published so far is acknowledged, so
                        // that the abrupt close loses none of it.
                        let last = self.next_pkid;
                        if last == sub_pkid || last_acked == Some(last) {
                            self.emit(SimEvent::Rebooting);
                            return End::Reboot;
                        }
                        reboot_after = Some(last);
                    }
                }
                () = sleep_until_some(self.software_due.front().map(|(at, _)| *at)), if subscribed => {
                    if let Some((_, id)) = self.software_due.pop_front() {
                        let effects = self.software.finish(id);
                        self.apply_software(effects, &mut wbuf);
                    }
                }
                order = control.recv() => match order {
                    Some(Control::TelemetryNow) => self.publish_telemetry(&mut wbuf),
                    Some(Control::CoordinatesNow) => self.publish_coordinates(&mut wbuf),
                    Some(Control::Stop) | None => break 'serving,
                },
            }
        }
        self.goodbye(&mut rd, &mut wr, wbuf).await;
        End::Stopped
    }

    fn on_connected(&mut self) {
        self.stats.add(&self.stats.connects);
        if self.ever_connected && !self.after_reboot {
            self.stats.add(&self.stats.reconnects);
        }
        self.ever_connected = true;
        self.after_reboot = false;
        self.backoff = INITIAL_BACKOFF;
        if let UpgradeTiming::Installed(fetched) = self.timing {
            self.timing = UpgradeTiming::Done;
            self.stats
                .upgrades
                .installed(fetched, std::time::Instant::now());
        }
        self.stats.set_connected(true);
        self.emit(SimEvent::Connected);
    }

    /// Handles a message on a subscribed topic. Returns the packet id of a reboot's result,
    /// after whose PUBACK the device reboots.
    /// The packets this device writes.
    fn codec(&self) -> Codec {
        Codec(self.config.mqtt_version)
    }

    fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        reply_to: Option<&ReplyTo>,
        wbuf: &mut BytesMut,
    ) -> Option<u16> {
        let channel = match Topic::parse(topic) {
            Ok(t)
                if t.org_slug() == self.config.org_slug
                    && t.device_id() == self.config.device_id =>
            {
                t.channel()
            }
            Ok(_) => return self.ignore(topic, "another device's topic".to_owned()),
            Err(e) => return self.ignore(topic, e.to_string()),
        };
        match channel {
            Channel::Down(DownChannel::CommandRequest) => match CommandRequest::parse(payload) {
                Ok(request) => self.on_command(request, reply_to, wbuf),
                Err(e) => self.ignore(topic, e.to_string()),
            },
            Channel::Down(DownChannel::UpdateRequest) => {
                match UpdateRequest::parse(payload) {
                    Ok(request) => self.on_update_request(request, reply_to, wbuf),
                    Err(e) => {
                        tracing::warn!(device_id = %self.config.device_id, error = %e, "ignored an unusable update request");
                        self.ignore(topic, e.to_string());
                    }
                }
                None
            }
            Channel::Down(DownChannel::ConfigNotice) => match ConfigNotice::parse(payload) {
                Ok(notice) => {
                    match self.configuration.on_notice(notice) {
                        NoticeAction::Report(report) => self.report_config(report, wbuf),
                        NoticeAction::Fetch(notice) => {
                            let (done, _) =
                                self.config_news.get_or_insert_with(mpsc::unbounded_channel);
                            tokio::spawn(configuration::fetch(notice, done.clone()));
                        }
                        NoticeAction::Nothing => {}
                    }
                    None
                }
                Err(e) => self.ignore(topic, e.to_string()),
            },
            Channel::Down(DownChannel::Error) => match ErrorNotice::parse(payload) {
                Ok(notice) => {
                    tracing::warn!(device_id = %self.config.device_id, reason = %notice.reason, "server refused a payload");
                    self.emit(SimEvent::ServerError(notice));
                    None
                }
                Err(e) => self.ignore(topic, e.to_string()),
            },
            Channel::Down(DownChannel::SoftwareOffer) => match SoftwareOffer::parse(payload) {
                Ok(offer) => {
                    let effects = self.software.on_offer(offer);
                    self.apply_software(effects, wbuf);
                    None
                }
                Err(e) => self.ignore(topic, e.to_string()),
            },
            Channel::Down(DownChannel::SoftwareDeliver) => match SoftwareDelivery::parse(payload) {
                Ok(delivery) => {
                    let effects = self.software.on_delivery(delivery);
                    self.apply_software(effects, wbuf);
                    None
                }
                Err(e) => self.ignore(topic, e.to_string()),
            },
            Channel::Up(_) => self.ignore(topic, "not a down topic".to_owned()),
        }
    }

    fn on_command(
        &mut self,
        request: CommandRequest,
        reply_to: Option<&ReplyTo>,
        wbuf: &mut BytesMut,
    ) -> Option<u16> {
        let (result, after) = answer(&request);
        let pkid = self.pkid();
        let codec = self.codec();
        codec.answer(
            &self.topics.command_result,
            reply_to,
            &answer_payload(result.to_bytes(), reply_to),
            pkid,
            wbuf,
        );
        self.stats.add(&self.stats.published);
        self.stats.bump(&self.stats.commands);
        tracing::debug!(device_id = %self.config.device_id, id = %request.id, kind = ?request.kind, status = ?result.status, "command answered");
        self.emit(SimEvent::CommandHandled { request, result });
        (after == AfterAnswer::Reboot).then_some(pkid)
    }

    fn on_update_request(
        &mut self,
        request: UpdateRequest,
        reply_to: Option<&ReplyTo>,
        wbuf: &mut BytesMut,
    ) {
        if self.timing == UpgradeTiming::NotStarted
            && matches!(request.call, Call::FetchImage { .. })
        {
            let now = std::time::Instant::now();
            self.timing = UpgradeTiming::Fetched(now);
            self.stats.upgrades.first_fetch(now);
        }
        self.emit(SimEvent::UpdateRequest {
            id: request.id,
            path: request.call.path(),
        });
        let (response, effects) = self.agent.handle(request, unix_now());
        let Some(response) = response else {
            tracing::debug!(device_id = %self.config.device_id, "hanging: update request not answered");
            return;
        };
        let pkid = self.pkid();
        let codec = self.codec();
        codec.answer(
            &self.topics.update_response,
            reply_to,
            &answer_payload(response.to_bytes(), reply_to),
            pkid,
            wbuf,
        );
        self.stats.add(&self.stats.published);
        tracing::debug!(device_id = %self.config.device_id, id = %response.id, status = response.status, "update request answered");
        self.emit(SimEvent::UpdateAnswered(response));
        self.apply(effects, wbuf);
    }

    /// Carries out what the update agent asks for, in order.
    fn apply(&mut self, effects: Vec<Effect>, wbuf: &mut BytesMut) {
        for effect in effects {
            match effect {
                Effect::PublishUpdate(resource) => {
                    let pkid = self.pkid();
                    Codec(self.config.mqtt_version).publish(
                        &self.topics.update,
                        &resource.to_bytes(),
                        QoS::AtLeastOnce,
                        false,
                        pkid,
                        wbuf,
                    );
                    self.stats.add(&self.stats.published);
                    self.emit(SimEvent::UpdatePublished(resource));
                }
                Effect::PublishImages(resource) => {
                    let pkid = self.pkid();
                    Codec(self.config.mqtt_version).publish(
                        &self.topics.images,
                        &resource.to_bytes(),
                        QoS::AtLeastOnce,
                        false,
                        pkid,
                        wbuf,
                    );
                    self.stats.add(&self.stats.published);
                    self.emit(SimEvent::ImagesPublished(resource));
                }
                Effect::Download(job) => {
                    let (news, _) = self.news.get_or_insert_with(mpsc::unbounded_channel);
                    tokio::spawn(update::download(job, news.clone()));
                }
                Effect::ScheduleInstall => {
                    self.install_at = Some(Instant::now() + self.config.install_time);
                }
            }
        }
    }

    /// Ends the running update. Returns whether it was installed (the caller reboots).
    fn finish_update(&mut self, wbuf: &mut BytesMut) -> bool {
        match self.agent.finish(unix_now()) {
            Finish::Nothing => false,
            Finish::Failed(effects) => {
                self.apply(effects, wbuf);
                false
            }
            Finish::Installed { version } => {
                if let UpgradeTiming::Fetched(fetched) = self.timing {
                    self.timing = UpgradeTiming::Installed(fetched);
                }
                tracing::debug!(device_id = %self.config.device_id, %version, "update installed; rebooting");
                self.config.firmware_version = version.clone();
                self.online = online_presence(&self.config);
                self.emit(SimEvent::Installed { version });
                true
            }
        }
    }

    /// Carries out what the software agent asks for, in order.
    fn apply_software(&mut self, effects: Vec<software::Effect>, wbuf: &mut BytesMut) {
        for effect in effects {
            match effect {
                software::Effect::Status(status) => {
                    let pkid = self.pkid();
                    Codec(self.config.mqtt_version).publish(
                        &self.topics.software_status,
                        &status.to_bytes(),
                        QoS::AtLeastOnce,
                        false,
                        pkid,
                        wbuf,
                    );
                    self.stats.add(&self.stats.published);
                    tracing::debug!(device_id = %self.config.device_id, id = %status.id, status = ?status.status, reason = %status.reason, "software status sent");
                    self.emit(SimEvent::SoftwareStatusPublished(status));
                }
                software::Effect::Inventory(inventory) => {
                    let pkid = self.pkid();
                    Codec(self.config.mqtt_version).publish(
                        &self.topics.software,
                        &inventory.to_bytes(),
                        QoS::AtLeastOnce,
                        false,
                        pkid,
                        wbuf,
                    );
                    self.stats.add(&self.stats.published);
                    self.emit(SimEvent::SoftwareInventoryPublished(inventory));
                }
                software::Effect::Schedule(id) => {
                    let at = Instant::now() + self.config.software.install_time;
                    self.software_due.push_back((at, id));
                }
                software::Effect::OfferAnswered { offer, status } => {
                    self.emit(SimEvent::SoftwareOfferAnswered { offer, status });
                }
                software::Effect::Installed { app, version } => {
                    self.stats.bump(&self.stats.software_installs);
                    tracing::debug!(device_id = %self.config.device_id, %app, %version, "software installed");
                    self.emit(SimEvent::SoftwareInstalled { app, version });
                }
                software::Effect::Failed {
                    app,
                    version,
                    reason,
                } => {
                    self.stats.bump(&self.stats.software_failures);
                    tracing::debug!(device_id = %self.config.device_id, %app, %version, %reason, "software installation failed");
                    self.emit(SimEvent::SoftwareFailed {
                        app,
                        version,
                        reason,
                    });
                }
            }
        }
    }

    fn report_config(&mut self, report: ConfigReport, wbuf: &mut BytesMut) {
        let pkid = self.pkid();
        Codec(self.config.mqtt_version).publish(
            &self.topics.config_status,
            &report.to_bytes(),
            QoS::AtLeastOnce,
            false,
            pkid,
            wbuf,
        );
        self.stats.add(&self.stats.published);
        tracing::debug!(device_id = %self.config.device_id, checksum = %report.checksum, status = ?report.status, "configuration reported");
        self.emit(SimEvent::ConfigReported(report));
    }

    fn ignore(&self, topic: &str, reason: String) -> Option<u16> {
        tracing::debug!(device_id = %self.config.device_id, topic, %reason, "ignored a down message");
        self.stats.bump(&self.stats.ignored);
        self.emit(SimEvent::Ignored {
            topic: topic.to_owned(),
            reason,
        });
        None
    }

    fn publish_telemetry(&mut self, wbuf: &mut BytesMut) {
        let telemetry = Telemetry {
            timestamp: time::OffsetDateTime::now_utc().into(),
            metrics: self.vitals.sample(),
        };
        let pkid = self.pkid();
        Codec(self.config.mqtt_version).publish(
            &self.topics.telemetry,
            &telemetry.to_bytes(),
            QoS::AtLeastOnce,
            false,
            pkid,
            wbuf,
        );
        self.stats.add(&self.stats.published);
    }

    fn publish_coordinates(&mut self, wbuf: &mut BytesMut) {
        let fix = self.position.fix();
        let pkid = self.pkid();
        Codec(self.config.mqtt_version).publish(
            &self.topics.coordinates,
            &fix.to_bytes(),
            QoS::AtLeastOnce,
            false,
            pkid,
            wbuf,
        );
        self.stats.add(&self.stats.published);
    }

    /// A clean shutdown: retained offline presence, DISCONNECT (so the broker drops the
    /// will), then wait for the broker to close so nothing queued is lost to a reset.
    async fn goodbye<R, W>(&mut self, rd: &mut R, wr: &mut W, mut wbuf: BytesMut)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        Codec(self.config.mqtt_version).publish(
            &self.topics.presence,
            &self.offline,
            QoS::AtMostOnce,
            true,
            0,
            &mut wbuf,
        );
        self.stats.add(&self.stats.published);
        mqtt::encode_disconnect(&mut wbuf);
        let closed = async {
            wr.write_all(&wbuf).await?;
            wr.flush().await?;
            wr.shutdown().await?;
            let mut sink = [0u8; 256];
            while rd.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        if let Ok(Err(e)) = timeout(GOODBYE_WAIT, closed).await {
            tracing::debug!(device_id = %self.config.device_id, error = %e, "unclean goodbye");
        }
    }
}

/// A device's connection to the broker once CONNACK accepted it.
enum Link {
    /// MQTT directly on TCP.
    Plain(TcpStream),
    /// MQTT over TLS (boxed: the TLS state is large next to a TCP stream).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What one turn of the writer did.
enum Written {
    /// Bytes taken from the write buffer.
    Bytes(usize),
    /// Everything taken earlier is on its way to the socket.
    Flushed,
}

/// Writes what is buffered, or, once the buffer is empty, flushes what the writer may hold
/// back. Either step is safe to cancel (the select loop drops it for any other event).
async fn write_or_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &mut BytesMut,
) -> std::io::Result<Written> {
    if wbuf.is_empty() {
        wr.flush().await.map(|()| Written::Flushed)
    } else {
        wr.write_buf(wbuf).await.map(Written::Bytes)
    }
}

/// The retained online presence announcing the device's identity and firmware.
fn online_presence(config: &DeviceConfig) -> Vec<u8> {
    Presence {
        status: PresenceStatus::Online,
        model: Some(config.model.clone()),
        os: Some(config.os.clone()),
        system: Some(config.system.clone()),
        firmware_version: Some(config.firmware_version.clone()),
    }
    .to_bytes()
}

/// Unix seconds now.
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The next finished configuration download, or never when none ever started.
async fn next_fetched(news: &mut Option<ConfigChannel>) -> Option<configuration::Fetched> {
    match news {
        Some((_, receiver)) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The next news from a download task, or never when no download ever started.
async fn next_news(news: &mut Option<NewsChannel>) -> Option<DownloadNews> {
    match news {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// An interval whose first tick falls at a random point of its first period, so that
/// devices connected together do not publish together.
fn spread_interval(now: Instant, period: Duration) -> Interval {
    let period = period.max(Duration::from_millis(1));
    let first = period.mul_f64(rand::random_range(0.0..1.0));
    let mut interval = interval_at(now + first, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs `wait` unless a Stop arrives first; other orders are dropped (nothing to publish
/// on). Returns whether to go on.
async fn wait_or_stop(
    wait: impl std::future::Future<Output = ()>,
    control: &mut mpsc::Receiver<Control>,
) -> bool {
    tokio::pin!(wait);
    loop {
        tokio::select! {
            () = &mut wait => return true,
            order = control.recv() => match order {
                Some(Control::Stop) | None => return false,
                Some(_) => {}
            },
        }
    }
}
