//! A real RabbitMQ node (Debian's `rabbitmq-server` package) with its MQTT plugin and its HTTP
//! auth backend pointed at fleetmq, on free loopback ports, in a temporary directory.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The node's start script (Debian's `/usr/sbin/rabbitmq-server` switches to the `rabbitmq`
/// user; this one runs as whoever starts it).
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// The node's command-line tool (runs as whoever calls it, with the node's `HOME` for its
/// Erlang cookie).
pub const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A running node; its whole process group is killed when dropped.
pub struct RabbitMq {
    child: Child,
    /// Where its MQTT plugin listens.
    pub mqtt_addr: SocketAddr,
    /// Its Erlang node name (`name@localhost`).
    pub node: String,
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
    /// travelling as HTTP Basic). With `auth_cache`, `rabbitmq_auth_backend_cache` keeps each
    /// answer that long (RabbitMQ's remedy for a chatty HTTP backend; a revocation then
    /// takes up to that long). Returns once MQTT accepts connections (at most 60 s).
    pub async fn start(
        mqtt_port: u16,
        auth_base: &str,
        auth_cache: Option<Duration>,
    ) -> anyhow::Result<RabbitMq> {
        Self::start_node(mqtt_port, auth_base, auth_cache, &new_cookie()).await
    }

    /// Starts two nodes as [`RabbitMq::start`] does, one MQTT listener each, and joins the
    /// second to the first: one cluster, whose exchanges and bindings both nodes share, so a
    /// message published on one reaches a subscriber on the other. Returns once the second
    /// node serves MQTT again after joining.
    pub async fn start_cluster(
        mqtt_ports: [u16; 2],
        auth_base: &str,
        auth_cache: Option<Duration>,
    ) -> anyhow::Result<[RabbitMq; 2]> {
        // Nodes of one cluster share their Erlang cookie.
        let cookie = new_cookie();
        let (first, mut second) = tokio::try_join!(
            Self::start_node(mqtt_ports[0], auth_base, auth_cache, &cookie),
            Self::start_node(mqtt_ports[1], auth_base, auth_cache, &cookie),
        )?;
        second.ctl(&["stop_app"]).await?;
        second.ctl(&["join_cluster", &first.node]).await?;
        second.ctl(&["start_app"]).await?;
        second.wait_for_mqtt().await?;
        Ok([first, second])
    }

    async fn start_node(
        mqtt_port: u16,
        auth_base: &str,
        auth_cache: Option<Duration>,
        cookie: &str,
    ) -> anyhow::Result<RabbitMq> {
        let dir = tempfile::tempdir()?;
        let cookie_file = dir.path().join(".erlang.cookie");
        std::fs::write(&cookie_file, cookie)?;
        // Erlang refuses a cookie file others may read.
        std::fs::set_permissions(&cookie_file, std::fs::Permissions::from_mode(0o400))?;
        let (amqp, dist) = (free_port()?, free_port()?);
        let (backend, plugins) = match auth_cache {
            None => (
                "auth_backends.1 = http\n".to_owned(),
                "rabbitmq_mqtt,rabbitmq_auth_backend_http",
            ),
            Some(ttl) => (
                format!(
                    "auth_backends.1 = cache\n\
                     auth_cache.cached_backend = http\n\
                     auth_cache.cache_ttl = {}\n",
                    ttl.as_millis().max(1)
                ),
                "rabbitmq_mqtt,rabbitmq_auth_backend_http,rabbitmq_auth_backend_cache",
            ),
        };
        let conf = dir.path().join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!(
                "listeners.tcp.default = {amqp}\n\
                 mqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n\
                 mqtt.allow_anonymous = false\n\
                 mqtt.prefetch = 256\n\
                 loopback_users = none\n\
                 {backend}\
                 auth_http.http_method = post\n\
                 auth_http.user_path = {auth_base}/user\n\
                 auth_http.vhost_path = {auth_base}/vhost\n\
                 auth_http.resource_path = {auth_base}/resource\n\
                 auth_http.topic_path = {auth_base}/topic\n\
                 log.console = false\n\
                 log.file.level = warning\n"
            ),
        )?;
        let enabled = dir.path().join("enabled_plugins");
        std::fs::write(&enabled, format!("[{plugins}].\n"))?;
        let node = format!("fleetmq-test-{}-{mqtt_port}@localhost", std::process::id());
        let path = |p: &str| dir.path().join(p);
        let child = Command::new(RABBITMQ_SERVER)
            .env("HOME", dir.path())
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &enabled)
            .env("RABBITMQ_PID_FILE", path("pid"))
            // Idle schedulers sleep instead of spinning (the node shares two cores with
            // fleetmq and the devices); Erlang distribution (how clustered nodes and
            // rabbitmqctl talk) listens on loopback only.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // The script starts the Erlang VM as a child: kill them together.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("{RABBITMQ_SERVER}: {e} (apt-get install rabbitmq-server)")
            })?;
        let mut rabbit = RabbitMq {
            child,
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
            node,
            dir,
        };
        rabbit.wait_for_mqtt().await?;
        Ok(rabbit)
    }

    /// Returns once the node's MQTT listener accepts connections (at most 60 s).
    async fn wait_for_mqtt(&mut self) -> anyhow::Result<()> {
        // A node starting to listen sends no event: poll, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "rabbitmq-server exited ({status}); logs in {}",
                    self.dir.path().join("log").display()
                );
            }
            if TcpStream::connect(self.mqtt_addr).await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rabbitmq did not listen on {} within 60 s",
                self.mqtt_addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `rabbitmqctl -n <node> <args>` and fails with its output unless it succeeds.
    async fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(RABBITMQCTL)
            .env("HOME", self.dir.path())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-n", &self.node])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("{RABBITMQCTL}: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "rabbitmqctl {} on {}: {}{}",
            args.join(" "),
            self.node,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
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

/// A fresh Erlang cookie: what lets a process join a node's cluster or drive it.
fn new_cookie() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
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
