//! The release binaries as separate processes, for benchmarks that measure the server on
//! its own (its RSS, its CPU) while load generators run beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The release build of `name` (`fleetmq`, `fleetmq-sim`), or an error saying how to build it.
pub fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    let bin = target_dir().join("release").join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build --release -p fleetmq -p fleetmq-sim",
        bin.display()
    );
    Ok(bin)
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Raises this process's open-files limit to the hard limit (children inherit it).
pub fn raise_open_files() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

/// Starts the release server `bin` on `data` with its default limits, on free loopback ports
/// (TLS and WebSocket listeners off), the superuser's password `admin_password` and
/// `RUST_LOG=warn`; returns it with its REST and MQTT addresses once it serves.
pub async fn start_server(
    bin: &Path,
    data: &Path,
    admin_password: &str,
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    start_server_with(bin, data, admin_password, &[]).await
}

/// [`start_server`] with `extra` command-line flags (limits raised for a load test, the
/// anonymous sandbox), given after the ones it sets itself.
pub async fn start_server_with(
    bin: &Path,
    data: &Path,
    admin_password: &str,
    extra: &[String],
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    let mut server = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
        .args(["--mqtts-addr", "off", "--mqtt-ws-addr", "off"])
        .args(extra)
        .env("FLEETMQ_ADMIN_PASSWORD", admin_password)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = server
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) =
        tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await??
    {
        // "REST API on http://A/ (docs: …), MQTT on B"
        if let Some(rest) = line.strip_prefix("REST API on http://") {
            let http = rest.split('/').next().unwrap_or_default().parse()?;
            let mqtt = rest
                .rsplit("MQTT on ")
                .next()
                .unwrap_or_default()
                .trim()
                .parse()?;
            // Keep draining stdout so the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((server, http, mqtt));
        }
    }
    anyhow::bail!("the server did not start")
}

/// The token of the first-start `admin` user of a release server at `base`.
pub async fn admin_token(
    client: &reqwest::Client,
    base: &str,
    password: &str,
) -> anyhow::Result<String> {
    let token: serde_json::Value = client
        .post(format!("{base}/api/v1/users/token/"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await?
        .json()
        .await?;
    token["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token: {token}"))
}

/// A counter from the server's `/metrics` (0 when it is not there).
pub async fn metric(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> anyhow::Result<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?;
    let prefix = format!("{name} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}
