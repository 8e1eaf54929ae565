//! `fleetmq`: the device-management server. Parse the command line, set up logging, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fleetmq::{Config, Server};
use fleetmq_store::Store;
use tracing_subscriber::EnvFilter;

/// An MQTT device-management server with an OpenWISP-compatible REST API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Administrative tasks on the data directory of a stopped server.
    Admin {
        #[command(subcommand)]
        task: AdminTask,
    },
    /// Tasks on a store as a whole (its server stopped).
    Store {
        #[command(subcommand)]
        task: StoreTask,
    },
}

#[derive(Subcommand)]
enum StoreTask {
    /// Copy a whole store into an empty one on another engine, e.g. from the redb file to
    /// PostgreSQL, and verify every table's entry count and SHA-256. Stop the servers of both
    /// first. Firmware files and floor plan images stay in the data directory.
    Migrate {
        /// `redb:DIR` (the data directory holding fleetmq.redb) or `postgres://…`.
        #[arg(long, value_parser = store_location)]
        from: StoreLocation,
        /// `redb:DIR` or `postgres://…`; must hold no data yet.
        #[arg(long, value_parser = store_location)]
        to: StoreLocation,
    },
}

/// A parsed `--from`/`--to` (clap needs a `Clone + Send + Sync` value).
#[derive(Clone)]
struct StoreLocation(fleetmq_store::migrate::Location);

fn store_location(value: &str) -> Result<StoreLocation, String> {
    fleetmq_store::migrate::Location::parse(value)
        .map(StoreLocation)
        .ok_or_else(|| {
            "expected redb:DIR or postgres://user:password@host:port/database".to_owned()
        })
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Directory holding the database (created if missing).
    #[arg(long, env = "FLEETMQ_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address of the REST API (port 0 picks a free port).
    #[arg(long, env = "FLEETMQ_HTTP_ADDR", default_value = "127.0.0.1:8000")]
    http_addr: SocketAddr,
    /// Address of the MQTT broker (port 0 picks a free port).
    #[arg(long, env = "FLEETMQ_MQTT_ADDR", default_value = "127.0.0.1:1883")]
    mqtt_addr: SocketAddr,
    /// Address of MQTT over TLS, or `off`. Without --mqtt-tls-cert/--mqtt-tls-key it uses a
    /// self-signed certificate generated on the first start (<data-dir>/tls/mqtt-cert.pem).
    #[arg(long, env = "FLEETMQ_MQTTS_ADDR", default_value = "127.0.0.1:8883", value_parser = optional_addr)]
    mqtts_addr: OptionalAddr,
    /// PEM certificate chain for the TLS listener (with --mqtt-tls-key).
    #[arg(long, env = "FLEETMQ_MQTT_TLS_CERT", requires = "mqtt_tls_key")]
    mqtt_tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener (with --mqtt-tls-cert).
    #[arg(long, env = "FLEETMQ_MQTT_TLS_KEY", requires = "mqtt_tls_cert")]
    mqtt_tls_key: Option<PathBuf>,
    /// Address of MQTT over WebSocket (ws://ADDR/mqtt, subprotocol `mqtt`), or `off`.
    #[arg(long, env = "FLEETMQ_MQTT_WS_ADDR", default_value = "127.0.0.1:8083", value_parser = optional_addr)]
    mqtt_ws_addr: OptionalAddr,
    // --- MQTT over secure WebSocket (issue 13; docs/mqtt.md "Listeners") ---
    /// Address of MQTT over secure WebSocket (wss://ADDR/mqtt, subprotocol `mqtt`, for
    /// browsers on HTTPS pages), or `off`. Presents the TLS listener's certificate, so it
    /// needs --mqtts-addr.
    #[arg(long, env = "FLEETMQ_MQTT_WSS_ADDR", default_value = "off", value_parser = optional_addr)]
    mqtt_wss_addr: OptionalAddr,
    // --- end of MQTT over secure WebSocket ---
    /// Let clients without credentials use MQTT topics outside the fleetmq tree (for protocol
    /// test suites and stock tools); off by default.
    #[arg(long, env = "FLEETMQ_MQTT_ANONYMOUS_SANDBOX")]
    mqtt_anonymous_sandbox: bool,
    /// Authenticated MQTT sessions at once (each takes a file descriptor: this plus
    /// --mqtt-max-pending-connections must stay under the process's open-files limit).
    #[arg(long, env = "FLEETMQ_MQTT_MAX_CONNECTIONS", default_value_t = 10_000)]
    mqtt_max_connections: usize,
    // --- MQTT front-end limits against hostile clients (issue 9; docs/mqtt.md "Limits") ---
    /// MQTT sockets whose CONNECT is not answered yet (handshake, CONNECT, login), apart
    /// from --mqtt-max-connections; more are closed at once.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_PENDING_CONNECTIONS",
        default_value_t = 1024
    )]
    mqtt_max_pending_connections: usize,
    /// Of those, from one source address.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_PENDING_PER_ADDRESS",
        default_value_t = 64
    )]
    mqtt_max_pending_per_address: usize,
    /// QoS 2 messages one MQTT client may leave awaiting PUBREL; one more closes it.
    #[arg(long, env = "FLEETMQ_MQTT_MAX_AWAITING_PUBREL", default_value_t = 1024)]
    mqtt_max_awaiting_pubrel: usize,
    /// Failed MQTT logins one source address may make in a burst; then its CONNECTs get
    /// CONNACK 0x05 without authentication until it earns more.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_LOGIN_FAILURES_PER_ADDRESS",
        default_value_t = 20
    )]
    mqtt_login_failures_per_address: u32,
    /// Failed MQTT logins an address earns back per minute.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_LOGIN_FAILURES_PER_MINUTE",
        default_value_t = 30
    )]
    mqtt_login_failures_per_minute: u32,
    /// Failed MQTT logins in a row for one username (a device's id) before it is locked for
    /// 1 s, doubling with each further failure.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_LOGIN_FAILURES_PER_IDENTITY",
        default_value_t = 5
    )]
    mqtt_login_failures_per_identity: u32,
    /// Longest lockout of one username, in seconds.
    #[arg(long, env = "FLEETMQ_MQTT_LOGIN_BACKOFF_MAX", default_value_t = 60)]
    mqtt_login_backoff_max: u64,
    // --- MQTT sessions and routing (docs/mqtt.md, "Delivery") ---
    /// Messages one MQTT session (operator, sandbox client) may have waiting to be sent;
    /// past it the newest are dropped for that session and counted
    /// (`fleetmq_mqtt_messages_dropped_total{reason="queue_full"}`).
    #[arg(long, env = "FLEETMQ_MQTT_MAX_QUEUED_MESSAGES", default_value_t = 1000)]
    mqtt_max_queued_messages: usize,
    /// Topic and payload bytes one MQTT session may have waiting to be sent (MiB).
    #[arg(long, env = "FLEETMQ_MQTT_MAX_QUEUED_MIB", default_value_t = 16)]
    mqtt_max_queued_mib: usize,
    /// QoS 1/2 messages sent to one MQTT session and not yet acknowledged.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_INFLIGHT_MESSAGES",
        default_value_t = 100
    )]
    mqtt_max_inflight_messages: usize,
    /// Retained MQTT messages kept in all (a new retained topic past it is routed, not kept).
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_RETAINED_MESSAGES",
        default_value_t = 1_000_000
    )]
    mqtt_max_retained_messages: usize,
    /// Persistent MQTT sessions (clean session 0) kept in all; a new one past it gets
    /// CONNACK 0x03.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_PERSISTENT_SESSIONS",
        default_value_t = 100_000
    )]
    mqtt_max_persistent_sessions: usize,
    /// Topic aliases an MQTT 5 client may set on one connection (announced in CONNACK).
    #[arg(long, env = "FLEETMQ_MQTT_MAX_TOPIC_ALIASES", default_value_t = 10)]
    mqtt_max_topic_aliases: u16,
    /// Longest keep-alive, in seconds, an MQTT 5 client gets: one asking for more or for
    /// none is told this one in CONNACK (server keep alive).
    #[arg(long, env = "FLEETMQ_MQTT_MAX_KEEP_ALIVE", default_value_t = 3600)]
    mqtt_max_keep_alive: u16,
    // --- end of MQTT front-end limits ---
    /// Seconds a command may wait for the device's answer (offline time included).
    #[arg(long, env = "FLEETMQ_COMMAND_TIMEOUT", default_value_t = 300)]
    command_timeout: u64,
    /// Largest firmware image accepted, in MiB.
    #[arg(long, env = "FLEETMQ_FIRMWARE_UPLOAD_LIMIT_MIB", default_value_t = 256)]
    firmware_upload_limit_mib: u64,
    // --- locations and floor plans ---
    /// Largest floor plan image accepted, in MiB; larger uploads get 413.
    #[arg(long, env = "FLEETMQ_FLOORPLAN_UPLOAD_LIMIT_MIB", default_value_t = 20)]
    floorplan_upload_limit_mib: u64,
    // --- end of locations and floor plans ---
    /// Base URL devices download firmware and configurations from (default:
    /// http://<http-addr>). Set it when devices reach the API through another address (NAT,
    /// reverse proxy).
    #[arg(long, env = "FLEETMQ_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds a config notice's download link stays valid (a device that reconnects later
    /// gets a fresh one).
    #[arg(long, env = "FLEETMQ_CONFIG_LINK_LIFETIME", default_value_t = 86_400)]
    config_link_lifetime: u64,
    /// Seconds a device may take to download and verify an image before a retry.
    #[arg(long, env = "FLEETMQ_UPGRADE_FETCH_TIMEOUT", default_value_t = 600)]
    upgrade_fetch_timeout: u64,
    /// Seconds from `update/init` until the device must report INITIALIZED before a retry
    /// (raise it on an external broker whose backlog can delay device notices longer).
    #[arg(long, env = "FLEETMQ_UPGRADE_INIT_TIMEOUT", default_value_t = 120)]
    upgrade_init_timeout: u64,
    /// Seconds from the start of flashing until the device must be back on the new version.
    #[arg(long, env = "FLEETMQ_UPGRADE_FLASH_TIMEOUT", default_value_t = 900)]
    upgrade_flash_timeout: u64,
    /// Retries of recoverable upgrade failures (download errors, no answer).
    #[arg(long, env = "FLEETMQ_UPGRADE_RETRIES", default_value_t = 3)]
    upgrade_retries: u32,
    /// Seconds before the first retry; doubles with each retry (at most 5 minutes).
    #[arg(long, env = "FLEETMQ_UPGRADE_BACKOFF", default_value_t = 5)]
    upgrade_backoff: u64,
    /// Hours of telemetry history kept per device.
    #[arg(long, env = "FLEETMQ_TELEMETRY_RETENTION_HOURS", default_value_t = 168)]
    telemetry_retention_hours: u64,

    // --- HTTP limits (issue 9: REST/HTTP hardening) ---
    /// Password checks (argon2, ~19 MiB each) run at once; token requests beyond them get 503
    /// with Retry-After. Default: the number of cores.
    #[arg(long, env = "FLEETMQ_PASSWORD_CHECKS", default_value_t = fleetmq_api::default_password_checks())]
    password_checks: usize,
    /// Live event streams (`GET /api/v1/events/`, the console's live views) open at once;
    /// one more gets 503.
    #[arg(long, env = "FLEETMQ_API_MAX_EVENT_STREAMS", default_value_t = 256)]
    api_max_event_streams: usize,
    // --- operator console (issue 17) ---
    /// Map tiles of the console's maps: a Leaflet URL template (`{s}`, `{z}`, `{x}`, `{y}`);
    /// empty for none (the map then draws devices on a blank background, as offline).
    #[arg(
        long,
        env = "FLEETMQ_CONSOLE_TILE_URL",
        default_value = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    )]
    console_tile_url: String,
    /// The attribution the tile server asks for, shown on the map (plain text).
    #[arg(
        long,
        env = "FLEETMQ_CONSOLE_TILE_ATTRIBUTION",
        default_value = "© OpenStreetMap contributors"
    )]
    console_tile_attribution: String,
    /// Serve the console's pages and scripts from this directory (e.g. `console/assets`)
    /// instead of the copies built into the binary: edit, reload the browser.
    #[arg(long, env = "FLEETMQ_CONSOLE_ASSETS_DIR")]
    console_assets_dir: Option<PathBuf>,
    /// Seconds a client has to send a whole request head once it has begun one.
    #[arg(long, env = "FLEETMQ_HTTP_HEADER_READ_TIMEOUT", default_value_t = 10)]
    http_header_read_timeout: u64,
    /// Seconds an HTTP connection with no request in flight may stay open (keep-alive).
    #[arg(long, env = "FLEETMQ_HTTP_IDLE_TIMEOUT", default_value_t = 60)]
    http_idle_timeout: u64,
    /// HTTP connections open at once; more are answered 503 and closed at once.
    #[arg(long, env = "FLEETMQ_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    http_max_connections: usize,
    /// HTTP connections open at once from one client address.
    #[arg(
        long,
        env = "FLEETMQ_HTTP_MAX_CONNECTIONS_PER_ADDR",
        default_value_t = 128
    )]
    http_max_connections_per_addr: usize,
    /// File descriptors kept free beside both listeners' caps (database, firmware files,
    /// logs); the HTTP cap is lowered to leave them if the open-files limit is too small.
    #[arg(long, env = "FLEETMQ_FD_RESERVE", default_value_t = 256)]
    fd_reserve: usize,
    // Device ingest limits (issue 9, items 6/7/11; docs/mqtt.md "Limits").
    /// Seconds a telemetry sample's timestamp may be ahead of the server's clock; samples
    /// stamped later are refused (down/error).
    #[arg(
        long,
        env = "FLEETMQ_TELEMETRY_MAX_CLOCK_SKEW_SECS",
        default_value_t = 300
    )]
    telemetry_max_clock_skew_secs: u64,
    /// Largest telemetry sample accepted, in bytes; larger ones are refused (down/error).
    #[arg(long, env = "FLEETMQ_TELEMETRY_SAMPLE_MAX_BYTES", default_value_t = 64 * 1024)]
    telemetry_sample_max_bytes: usize,
    /// KiB of stored telemetry history kept per device; past it the oldest samples go.
    #[arg(long, env = "FLEETMQ_TELEMETRY_HISTORY_MAX_KIB", default_value_t = 8 * 1024)]
    telemetry_history_max_kib: u64,
    /// KiB of samples one page of GET …/telemetry/ holds at most (always at least one sample).
    #[arg(long, env = "FLEETMQ_TELEMETRY_PAGE_MAX_KIB", default_value_t = 1024)]
    telemetry_page_max_kib: u64,

    /// MiB of the data file the store keeps in memory (read cache and write buffer); the
    /// server's memory grows to about this much beside its connections, then stays.
    #[arg(long, env = "FLEETMQ_STORE_CACHE_MIB", default_value_t = 256)]
    store_cache_mib: usize,
    /// Keep the tables in PostgreSQL instead of the data directory's redb file:
    /// `postgres://user:password@host:port/database`. Several nodes may share one database
    /// (docs/scaling.md). Firmware files stay in the data directory.
    #[arg(long, env = "FLEETMQ_STORE", hide_env_values = true, value_parser = postgres_url)]
    store: Option<String>,
    /// PostgreSQL connections this node keeps at most (with --store).
    #[arg(long, env = "FLEETMQ_STORE_CONNECTIONS", default_value_t = 16)]
    store_connections: u32,
    /// Seconds the device-plane lease lasts unless renewed (with --store): one node runs the
    /// device plane, and when it dies another takes over within about this long.
    #[arg(long, env = "FLEETMQ_LEASE_LIFETIME", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_lifetime: u64,

    // --- PKI ---
    /// The secret private keys of CAs and certificates are sealed with at rest (at least 32
    /// characters). Default: the file `pki-secret` in the data directory, generated on first
    /// start (mode 0600). Keep it apart from backups of the data file.
    #[arg(long, env = "FLEETMQ_PKI_SECRET", hide_env_values = true, value_parser = pki_secret)]
    pki_secret: Option<PkiSecret>,

    /// Worker threads serving HTTP, apart from the MQTT plane's, so that neither plane's load
    /// delays the other's answers.
    #[arg(long, env = "FLEETMQ_HTTP_WORKERS", default_value_t = 2)]
    http_workers: usize,

    /// Threads the MQTT plane (broker and bridge) may start for store calls and other
    /// blocking work; more calls wait their turn. The store commits one writer at a time, so
    /// more threads buy nothing but memory: each keeps an allocator arena of its own, about
    /// 1.4 KiB per connected device at 64 threads (docs/mqtt.md). Default: one per CPU, at
    /// least 2.
    #[arg(long, env = "FLEETMQ_BLOCKING_THREADS")]
    blocking_threads: Option<usize>,

    // --- OTAO API (OAuth 2.0) ---
    /// Seconds an OAuth access token issued by POST /api/v1/oauth/token stays valid.
    #[arg(long, env = "FLEETMQ_OAUTH_TOKEN_LIFETIME", default_value_t = 3600)]
    oauth_token_lifetime: u64,

    // --- External MQTT broker (docs/mqtt.md, "External brokers") ---
    /// Run the bridge on this external MQTT broker (`mqtt://host:port`, `mqtts://host:port`)
    /// instead of the embedded one, whose listeners are then not opened.
    #[arg(long, env = "FLEETMQ_MQTT_BROKER")]
    mqtt_broker: Option<String>,
    /// The bridge's client id on the external broker (its persistent session).
    #[arg(
        long,
        env = "FLEETMQ_MQTT_BROKER_CLIENT_ID",
        default_value = "fleetmq-bridge"
    )]
    mqtt_broker_client_id: String,
    /// The bridge's username on the external broker.
    #[arg(long, env = "FLEETMQ_MQTT_BROKER_USERNAME")]
    mqtt_broker_username: Option<String>,
    /// The bridge's password on the external broker (prefer the environment variable).
    #[arg(long, env = "FLEETMQ_MQTT_BROKER_PASSWORD", hide_env_values = true)]
    mqtt_broker_password: Option<String>,
    /// PEM CA certificate(s) the external broker's certificate chains to (`mqtts://`).
    #[arg(long, env = "FLEETMQ_MQTT_BROKER_CA")]
    mqtt_broker_ca: Option<PathBuf>,
    /// PEM certificate chain the bridge presents to the external broker.
    #[arg(long, env = "FLEETMQ_MQTT_BROKER_CERT", requires = "mqtt_broker_key")]
    mqtt_broker_cert: Option<PathBuf>,
    /// PEM private key of `--mqtt-broker-cert`.
    #[arg(long, env = "FLEETMQ_MQTT_BROKER_KEY", requires = "mqtt_broker_cert")]
    mqtt_broker_key: Option<PathBuf>,
    /// Nodes share the devices' telemetry through a shared subscription
    /// (`$share/fleetmq/…`): each node stores the samples the broker hands it. For brokers
    /// with shared subscriptions (Mosquitto, EMQX, HiveMQ; not RabbitMQ). docs/scaling.md.
    #[arg(
        long,
        env = "FLEETMQ_MQTT_SHARED_UPLINK",
        requires = "mqtt_broker",
        default_value_t = false
    )]
    mqtt_shared_uplink: bool,

    /// Keep Mosquitto's password and ACL files (`passwd`, `acl`) in this directory from the
    /// store: devices and the bridge's user (docs/mqtt.md, "Mosquitto").
    #[arg(long, env = "FLEETMQ_MOSQUITTO_FILES")]
    mosquitto_files: Option<PathBuf>,
    /// Mosquitto's `pid_file`: fleetmq sends that process SIGHUP after rewriting the files.
    #[arg(long, env = "FLEETMQ_MOSQUITTO_PID_FILE", requires = "mosquitto_files")]
    mosquitto_pid_file: Option<PathBuf>,

    // --- Auth service for external MQTT brokers (RabbitMQ, EMQX; docs/mqtt.md) ---
    /// Shared secret external brokers present to /broker-auth/… (HTTP Basic password or
    /// Bearer). Without it those routes do not exist. Prefer the environment variable: flags
    /// show in the process list.
    #[arg(long, env = "FLEETMQ_BROKER_AUTH_SECRET", hide_env_values = true)]
    broker_auth_secret: Option<String>,
    /// Questions the broker auth service answers per second, all brokers together; more get
    /// 429 (the broker then refuses the client's action).
    #[arg(long, env = "FLEETMQ_BROKER_AUTH_RATE", default_value_t = 5_000)]
    broker_auth_rate: u32,
    /// The RabbitMQ virtual host MQTT clients use (RabbitMQ's `mqtt.vhost`).
    #[arg(long, env = "FLEETMQ_BROKER_AUTH_RABBITMQ_VHOST", default_value = "/")]
    broker_auth_rabbitmq_vhost: String,
    /// The exchange RabbitMQ's MQTT plugin publishes to (`mqtt.exchange`).
    #[arg(
        long,
        env = "FLEETMQ_BROKER_AUTH_RABBITMQ_EXCHANGE",
        default_value = "amq.topic"
    )]
    broker_auth_rabbitmq_exchange: String,
}

/// The external broker the flags name, with its TLS files read.
fn external_broker(
    args: &ServeArgs,
) -> anyhow::Result<Option<fleetmq_bridge::external::ExternalBroker>> {
    let Some(url) = args.mqtt_broker.clone().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let tls = match &args.mqtt_broker_ca {
        Some(ca) => Some(fleetmq_bridge::external::ExternalTls {
            ca: read(ca)?,
            client_auth: match (&args.mqtt_broker_cert, &args.mqtt_broker_key) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            },
        }),
        None => None,
    };
    let credentials = args.mqtt_broker_username.clone().map(|username| {
        (
            username,
            args.mqtt_broker_password.clone().unwrap_or_default(),
        )
    });
    Ok(Some(fleetmq_bridge::external::ExternalBroker {
        client_id: args.mqtt_broker_client_id.clone(),
        credentials,
        tls,
        shared_uplink: args.mqtt_shared_uplink,
        ..fleetmq_bridge::external::ExternalBroker::new(url)
    }))
}

/// A listen address that can be turned off (`off`, `none` or empty).
#[derive(Clone, Copy, Debug)]
struct OptionalAddr(Option<SocketAddr>);

fn optional_addr(value: &str) -> Result<OptionalAddr, String> {
    match value.trim() {
        "" | "off" | "none" => Ok(OptionalAddr(None)),
        addr => addr
            .parse()
            .map(|addr| OptionalAddr(Some(addr)))
            .map_err(|e| format!("{e} (an address like 127.0.0.1:8883, or `off`)")),
    }
}

#[derive(Subcommand)]
enum AdminTask {
    /// Print a new API token for a user. Needs the data file to itself: while a server runs
    /// on the same directory this fails (ask the server instead: POST /api/v1/users/token/).
    CreateToken {
        /// The user.
        #[arg(long)]
        username: String,
        /// Directory holding the database.
        #[arg(long, env = "FLEETMQ_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            // rumqttd logs every connection at info; ours are at debug (RUST_LOG=debug).
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Admin {
            task: AdminTask::CreateToken { username, data_dir },
        }) => create_token(&username, &data_dir),
        Some(Command::Store {
            task: StoreTask::Migrate { from, to },
        }) => migrate(&from.0, &to.0),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Every MQTT connection is a file descriptor: use all the process may have.
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(open_files = limit, "open-files limit");
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            None
        }
    };
    // Neither listener may starve the other: HTTP keeps to what MQTT and the reserve leave.
    let mut http_max_connections = args.http_max_connections;
    if let Some(open_files) = open_files {
        http_max_connections = fleetmq::http::fit_connection_cap(
            http_max_connections,
            open_files,
            args.mqtt_max_connections,
            args.fd_reserve,
        );
        if http_max_connections < args.http_max_connections {
            tracing::warn!(
                open_files,
                mqtt_max_connections = args.mqtt_max_connections,
                fd_reserve = args.fd_reserve,
                http_max_connections,
                "HTTP connection cap lowered to fit the open-files limit"
            );
        }
    }
    let external_broker = external_broker(&args)?;
    let mosquitto_files =
        args.mosquitto_files
            .clone()
            .map(|dir| fleetmq_bridge::mosquitto_files::MosquittoFiles {
                dir,
                pid_file: args.mosquitto_pid_file.clone(),
                bridge: args
                    .mqtt_broker_username
                    .clone()
                    .map(|user| (user, args.mqtt_broker_password.clone().unwrap_or_default())),
            });
    let config = Config {
        external_broker,
        mosquitto_files,
        lease_lifetime: Duration::from_secs(args.lease_lifetime),
        data_dir: args.data_dir,
        store: fleetmq_store::StoreOptions {
            cache_bytes: args.store_cache_mib.max(1).saturating_mul(1024 * 1024),
            pki_secret: args.pki_secret.map(|s| s.0.into_bytes()),
            postgres: args.store.map(|url| fleetmq_store::PostgresOptions {
                max_connections: args.store_connections.max(1),
                ..fleetmq_store::PostgresOptions::new(url)
            }),
        },
        http_addr: args.http_addr,
        mqtt_addr: args.mqtt_addr,
        mqtts_addr: args.mqtts_addr.0,
        mqtt_ws_addr: args.mqtt_ws_addr.0,
        mqtt_wss_addr: args.mqtt_wss_addr.0,
        mqtt_tls_files: args.mqtt_tls_cert.zip(args.mqtt_tls_key),
        mqtt_anonymous_sandbox: args.mqtt_anonymous_sandbox,
        mqtt_max_connections: args.mqtt_max_connections,
        mqtt_limits: fleetmq_broker::Limits {
            max_pending_connections: args.mqtt_max_pending_connections,
            max_pending_per_address: args.mqtt_max_pending_per_address,
            max_awaiting_pubrel: args.mqtt_max_awaiting_pubrel,
            login_failures_per_address: args.mqtt_login_failures_per_address,
            login_failures_per_minute: args.mqtt_login_failures_per_minute,
            login_failures_per_identity: args.mqtt_login_failures_per_identity,
            login_backoff_max: Duration::from_secs(args.mqtt_login_backoff_max),
            max_queued_messages: args.mqtt_max_queued_messages.max(1),
            max_queued_bytes: args.mqtt_max_queued_mib.max(1).saturating_mul(1024 * 1024),
            max_inflight_messages: args.mqtt_max_inflight_messages.max(1),
            max_retained_messages: args.mqtt_max_retained_messages,
            max_persistent_sessions: args.mqtt_max_persistent_sessions,
            max_topic_aliases: args.mqtt_max_topic_aliases,
            max_keep_alive: args.mqtt_max_keep_alive.max(1),
        },
        admin_password: std::env::var("FLEETMQ_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
        http: fleetmq::http::HttpLimits {
            header_read_timeout: Duration::from_secs(args.http_header_read_timeout.max(1)),
            idle_timeout: Duration::from_secs(args.http_idle_timeout.max(1)),
            max_connections: http_max_connections.max(1),
            max_connections_per_addr: args.http_max_connections_per_addr.max(1),
            workers: args.http_workers.max(1),
        },
        console: fleetmq_console::ConsoleConfig {
            tile_url: args.console_tile_url.clone(),
            tile_attribution: args.console_tile_attribution.clone(),
            assets_dir: args.console_assets_dir.clone(),
        },
        api: fleetmq_api::ApiConfig {
            firmware_upload_limit: args.firmware_upload_limit_mib.saturating_mul(1024 * 1024),
            floorplan_upload_limit: args.floorplan_upload_limit_mib.saturating_mul(1024 * 1024),
            password_checks: args.password_checks.max(1),
            max_event_streams: args.api_max_event_streams,
            telemetry_page_max_bytes: args.telemetry_page_max_kib.saturating_mul(1024),
            // OTAO API (otao-api branch).
            oauth_token_lifetime: args.oauth_token_lifetime.max(1),
            broker_auth: args
                .broker_auth_secret
                .clone()
                .filter(|s| !s.is_empty())
                .map(
                    |secret| fleetmq_api::routes::broker_auth::BrokerAuthConfig {
                        requests_per_second: args.broker_auth_rate.max(1),
                        rabbitmq_vhost: args.broker_auth_rabbitmq_vhost.clone(),
                        rabbitmq_exchange: args.broker_auth_rabbitmq_exchange.clone(),
                        // The bridge's own login on the broker that asks.
                        bridge: args.mqtt_broker_username.clone().map(|user| {
                            (user, args.mqtt_broker_password.clone().unwrap_or_default())
                        }),
                        ..fleetmq_api::routes::broker_auth::BrokerAuthConfig::new(secret)
                    },
                ),
            ..fleetmq_api::ApiConfig::default()
        },
        bridge: fleetmq_bridge::BridgeConfig {
            command_timeout: Duration::from_secs(args.command_timeout),
            telemetry_retention: Duration::from_secs(
                args.telemetry_retention_hours.saturating_mul(3600),
            ),
            telemetry_limits: fleetmq_protocol::TelemetryLimits {
                max_clock_skew: Duration::from_secs(args.telemetry_max_clock_skew_secs),
                max_sample_bytes: args.telemetry_sample_max_bytes,
            },
            telemetry_history_max_bytes: args.telemetry_history_max_kib.saturating_mul(1024),
            config_link_lifetime: Duration::from_secs(args.config_link_lifetime.max(1)),
            rollout: fleetmq_bridge::RolloutConfig {
                public_url: args.public_url.unwrap_or_default(),
                policy: fleetmq_bridge::UpgradePolicy {
                    fetch_timeout: Duration::from_secs(args.upgrade_fetch_timeout),
                    init_timeout: Duration::from_secs(args.upgrade_init_timeout),
                    flash_timeout: Duration::from_secs(args.upgrade_flash_timeout),
                    max_retries: args.upgrade_retries,
                    backoff: Duration::from_secs(args.upgrade_backoff),
                    ..fleetmq_bridge::UpgradePolicy::default()
                },
                ..fleetmq_bridge::RolloutConfig::default()
            },
            ..fleetmq_bridge::BridgeConfig::default()
        },
    };
    let blocking_threads = args
        .blocking_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads.max(1))
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Listen for the stop signals before the banner can tell anyone the server is up.
        let signals = StopSignals::install()?;
        let server = Server::start(config).await?;
        if let Some(first) = server.first_start() {
            println!("First start: created superuser '{}'.", first.username);
            println!("  password: {}", first.password);
            println!("  token:    {}", first.token);
            println!("  try:      curl -H \"Authorization: Bearer {}\" http://{}/api/v1/controller/device/", first.token, server.http_addr());
            println!("These are shown once.");
        }
        println!("REST API on http://{}/ (docs: http://{}/api/v1/docs/), MQTT on {}", server.http_addr(), server.http_addr(), server.mqtt_addr());
        if let Some(addr) = server.mqtts_addr() {
            println!("MQTT over TLS on {addr}");
        }
        if let Some(addr) = server.mqtt_ws_addr() {
            println!("MQTT over WebSocket on ws://{addr}/mqtt");
        }
        if let Some(addr) = server.mqtt_wss_addr() {
            println!("MQTT over secure WebSocket on wss://{addr}/mqtt");
        }
        // No detached signal task: the first signal stops the server here, and if anything
        // else cancels its token, the server is simply waited for.
        let stopped = server.shutdown_token();
        let failure = server.failure();
        tokio::select! {
            () = signals.recv() => {
                tracing::info!("shutting down");
                server.shutdown().await;
            }
            () = stopped.cancelled() => server.wait().await,
        }
        match failure.reason() {
            Some(reason) => Err(anyhow::anyhow!(reason)),
            None => anyhow::Ok(()),
        }
    })
}

/// SIGINT and SIGTERM, registered at once (not on first poll).
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    #[cfg(unix)]
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> anyhow::Result<Self> {
        Ok(Self {})
    }

    /// Resolves on the first stop signal.
    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

fn migrate(
    from: &fleetmq_store::migrate::Location,
    to: &fleetmq_store::migrate::Location,
) -> anyhow::Result<()> {
    let tables = fleetmq_store::migrate::migrate(from, to).context("migrating the store")?;
    let entries: u64 = tables.iter().map(|t| t.entries).sum();
    for table in tables.iter().filter(|t| t.entries > 0) {
        println!(
            "{:<28} {:>10} entries  sha256 {}",
            table.name,
            table.entries,
            table.sha256_hex()
        );
    }
    println!(
        "copied {entries} entries in {} tables; every table's count and SHA-256 match its source",
        tables.len()
    );
    Ok(())
}

/// `--store`: a PostgreSQL URL (the redb file needs no flag).
fn postgres_url(value: &str) -> Result<String, String> {
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        Ok(value.to_owned())
    } else {
        Err("expected postgres://user:password@host:port/database".to_owned())
    }
}

fn create_token(username: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    let db = store.blocking();
    let user = db
        .user_by_username(username)?
        .with_context(|| format!("no user named {username:?}"))?;
    let token = db.create_token(user.id)?;
    println!("{}", token.as_str());
    Ok(())
}

/// A `--pki-secret` value: long enough to derive a key from.
#[derive(Clone)]
struct PkiSecret(String);

impl std::fmt::Debug for PkiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PkiSecret(..)")
    }
}

fn pki_secret(s: &str) -> Result<PkiSecret, String> {
    if s.chars().count() < 32 {
        return Err("the PKI secret must be at least 32 characters long".into());
    }
    Ok(PkiSecret(s.to_owned()))
}
