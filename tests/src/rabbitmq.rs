//! A real RabbitMQ node (Debian's `rabbitmq-server` package) with its MQTT plugin and its HTTP
//! auth backend pointed at fleetmq, on free loopback ports, in a temporary directory.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The node's start script (Debian's `/usr/sbin/rabbitmq-server` switches to the `rabbitmq`
/// user; this one runs as whoever starts it).
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A running node; its whole process group is killed when dropped.
pub struct RabbitMq {
    child: Child,
    /// Where its MQTT plugin listens.
    pub mqtt_addr: SocketAddr,
    dir: TempDir,
}

/// A free loopback port (bound and released: another process could take it meanwhile, which
/// the caller sees as a failed start).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl RabbitMq {
    /// Starts a node whose MQTT listener is `mqtt_port` and whose `rabbitmq_auth_backend_http`
    /// asks `auth_base` (`http://user:secret@host:port/broker-auth/rabbitmq`, the secret
    /// travelling as HTTP Basic). Returns once MQTT accepts connections (at most 60 s).
    pub async fn start(mqtt_port: u16, auth_base: &str) -> anyhow::Result<RabbitMq> {
        let dir = tempfile::tempdir()?;
        let (amqp, dist) = (free_port()?, free_port()?);
        let conf = dir.path().join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!(
                "listeners.tcp.default = {amqp}\n\
                 mqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n\
                 mqtt.allow_anonymous = false\n\
                 mqtt.prefetch = 256\n\
                 loopback_users = none\n\
                 auth_backends.1 = http\n\
                 auth_http.http_method = post\n\
                 auth_http.user_path = {auth_base}/user\n\
                 auth_http.vhost_path = {auth_base}/vhost\n\
                 auth_http.resource_path = {auth_base}/resource\n\
                 auth_http.topic_path = {auth_base}/topic\n\
                 log.console = false\n\
                 log.file.level = warning\n"
            ),
        )?;
        let plugins = dir.path().join("enabled_plugins");
        std::fs::write(&plugins, "[rabbitmq_mqtt,rabbitmq_auth_backend_http].\n")?;
        let node = format!("fleetmq-test-{}-{mqtt_port}@localhost", std::process::id());
        let path = |p: &str| dir.path().join(p);
        let mut child = Command::new(RABBITMQ_SERVER)
            .env("HOME", dir.path())
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_PID_FILE", path("pid"))
            // Idle schedulers sleep instead of spinning: the node shares two cores with
            // fleetmq and the devices.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "+sbwt none +sbwtdcpu none +sbwtdio none",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // The script starts the Erlang VM as a child: kill them together.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("{RABBITMQ_SERVER}: {e} (apt-get install rabbitmq-server)")
            })?;
        let mqtt_addr = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
        // A node starting to listen sends no event: poll, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "rabbitmq-server exited ({status}); logs in {}",
                    path("log").display()
                );
            }
            if TcpStream::connect(mqtt_addr).await.is_ok() {
                return Ok(RabbitMq {
                    child,
                    mqtt_addr,
                    dir,
                });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rabbitmq did not listen on {mqtt_addr} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the node logged (its log directory's files).
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            for entry in entries.flatten() {
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The process group the node runs in (its id is the script's).
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}
