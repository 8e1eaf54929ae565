//! Where the server listens and keeps its data.

use std::net::SocketAddr;
use std::path::PathBuf;

use fleetmq_api::ApiConfig;
use fleetmq_bridge::BridgeConfig;

use crate::http::HttpLimits;

/// Everything [`crate::Server::start`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the redb file (and, later, firmware images and TLS material).
    pub data_dir: PathBuf,
    /// How the redb file is opened (its cache size).
    pub store: fleetmq_store::StoreOptions,
    /// REST API address; port 0 picks a free one.
    pub http_addr: SocketAddr,
    /// MQTT address; port 0 picks a free one.
    pub mqtt_addr: SocketAddr,
    /// MQTT-over-TLS address, off when `None`. The binary defaults to `127.0.0.1:8883`;
    /// `Config::default()` leaves it off so that embedded servers (tests) bind only what they
    /// ask for.
    pub mqtts_addr: Option<SocketAddr>,
    /// PEM certificate chain and key for the TLS listener. Without them a self-signed
    /// certificate is generated on first start and kept in `<data_dir>/tls/`.
    pub mqtt_tls_files: Option<(PathBuf, PathBuf)>,
    /// MQTT-over-WebSocket address (path `/mqtt`), off when `None`. The binary defaults to
    /// `127.0.0.1:8083`; `Config::default()` leaves it off.
    pub mqtt_ws_addr: Option<SocketAddr>,
    /// MQTT-over-secure-WebSocket address (`wss://`, path `/mqtt`), off when `None` (also in
    /// the binary). It presents the TLS listener's certificate, so it needs `mqtts_addr`.
    pub mqtt_wss_addr: Option<SocketAddr>,
    /// Let clients without a username use topics outside the fleetmq tree.
    pub mqtt_anonymous_sandbox: bool,
    /// MQTT connections admitted at once; past it CONNACK 0x03 (server unavailable).
    pub mqtt_max_connections: usize,
    /// Bounds against hostile MQTT clients (pre-CONNECT sockets, login failures, QoS 2
    /// state); docs/mqtt.md, "Limits".
    pub mqtt_limits: fleetmq_broker::Limits,
    /// Password for the `admin` superuser created on the first start (random when `None`).
    pub admin_password: Option<String>,
    /// Telemetry retention and command timeout.
    pub bridge: BridgeConfig,
    /// Body limits and throttling of the REST API.
    pub api: ApiConfig,
    /// The operator console's settings (map tiles; a development directory).
    pub console: fleetmq_console::ConsoleConfig,
    /// Connection caps and timeouts of the HTTP listener.
    pub http: HttpLimits,
    /// Run the bridge on this external MQTT broker instead of the embedded one (the MQTT
    /// listen addresses and limits above are then unused; docs/mqtt.md).
    pub external_broker: Option<fleetmq_bridge::external::ExternalBroker>,
    /// Keep Mosquitto's password and ACL files from the store (an external Mosquitto).
    pub mosquitto_files: Option<fleetmq_bridge::mosquitto_files::MosquittoFiles>,
    /// How long the device-plane lease lasts unless renewed (several nodes on PostgreSQL):
    /// a dead node's device plane resumes elsewhere within about this long.
    pub lease_lifetime: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            store: fleetmq_store::StoreOptions::default(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtts_addr: None,
            mqtt_tls_files: None,
            mqtt_ws_addr: None,
            mqtt_wss_addr: None,
            mqtt_anonymous_sandbox: false,
            mqtt_max_connections: fleetmq_broker::BrokerConfig::default().max_connections,
            mqtt_limits: fleetmq_broker::Limits::default(),
            admin_password: None,
            bridge: BridgeConfig::default(),
            api: ApiConfig::default(),
            console: fleetmq_console::ConsoleConfig::default(),
            http: HttpLimits::default(),
            external_broker: None,
            mosquitto_files: None,
            lease_lifetime: std::time::Duration::from_secs(10),
        }
    }
}
