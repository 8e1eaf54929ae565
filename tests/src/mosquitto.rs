//! A real Mosquitto (Debian's `mosquitto` package) on a free loopback port, for the benches
//! (side by side with fleetmq) and the external-broker tests (fleetmq's bridge on it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Where Debian installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Where Debian installs the password file tool.
pub const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// A running Mosquitto; killed when dropped.
pub struct Mosquitto {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Mosquitto {
    /// `mosquitto -c <dir>/mosquitto.conf`, listening on a free loopback port, with `extra`
    /// lines of configuration; returns once it accepts connections (at most 10 s).
    pub async fn start(dir: &Path, extra: &str) -> anyhow::Result<Mosquitto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.join("mosquitto.log");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence false\nlog_dest file {}\n\
                 log_type error\nlog_type warning\nconnection_messages false\n{}{extra}",
                log.display(),
                // As root, Mosquitto would switch to the `mosquitto` user, who cannot read
                // or write our files.
                if is_root() { "user root\n" } else { "" }
            ),
        )?;
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("{MOSQUITTO}: {e} (apt-get install mosquitto)"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // A process starting to listen sends no event: poll, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "mosquitto exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(Mosquitto { child, addr, log });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process and its address, for a caller that manages the process itself.
    pub fn into_parts(self) -> (Child, SocketAddr) {
        (self.child, self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks it to reread its password and ACL files (SIGHUP).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("mosquitto exited"))?;
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -HUP {pid}: {status}");
        Ok(())
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Writes a Mosquitto password file at `path` with these users (`mosquitto_passwd -b`,
/// PBKDF2-SHA512 as Mosquitto 2 hashes them).
pub async fn write_password_file(path: &Path, users: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::write(path, "")?;
    for (user, password) in users {
        let status = Command::new(MOSQUITTO_PASSWD)
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(password)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("{MOSQUITTO_PASSWD}: {e} (apt-get install mosquitto)"))?;
        anyhow::ensure!(status.success(), "mosquitto_passwd {user}: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
