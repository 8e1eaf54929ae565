//! Running the `fleetmq` binary in tests: start it on free ports, read its banner, stop it.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Running {
    pub child: Child,
    pub token: String,
    pub http: String,
}

/// A test that fails half-way must not leave its server running.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the binary on free ports and reads its first-start banner.
pub fn start(data_dir: &std::path::Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["--data-dir", &data_dir.display().to_string()])
        .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
        // TLS and WebSocket default to fixed ports (8883, 8083): not in tests running side by
        // side.
        .args(["--mqtts-addr", "off", "--mqtt-ws-addr", "off"])
        .env("FLEETMQ_ADMIN_PASSWORD", "binary-test-password")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("fleetmq starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut token = String::new();
    let mut http = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 output");
        if let Some(t) = line.trim().strip_prefix("token:") {
            token = t.trim().to_owned();
        }
        if let Some(rest) = line.strip_prefix("REST API on ") {
            http = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            break;
        }
    }
    // Keep draining, so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Running { child, token, http }
}

pub fn terminate(mut running: Running) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    running.child.wait().expect("fleetmq exits")
}

/// Starts the binary on fixed free ports (a restart must find the same MQTT port).
pub fn start_on(data_dir: &std::path::Path, http: u16, mqtt: u16) -> Running {
    start_with(data_dir, http, mqtt, &[])
}

/// [`start_on`] with extra command-line arguments.
pub fn start_with(data_dir: &std::path::Path, http: u16, mqtt: u16, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmq"))
        .args(["--data-dir", &data_dir.display().to_string()])
        .args([
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--mqtt-addr",
            &format!("127.0.0.1:{mqtt}"),
            "--mqtts-addr",
            "off",
            "--mqtt-ws-addr",
            "off",
        ])
        .args(extra)
        .env("FLEETMQ_ADMIN_PASSWORD", "binary-test-password")
        .env(
            "RUST_LOG",
            std::env::var("FLEETMQ_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("fleetmq starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut token = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 output");
        if let Some(t) = line.trim().strip_prefix("token:") {
            token = t.trim().to_owned();
        }
        if line.starts_with("REST API on ") {
            break;
        }
    }
    // FLEETMQ_TEST_ECHO=1 shows what the server prints (its log) on the test's output.
    let echo = std::env::var_os("FLEETMQ_TEST_ECHO").is_some();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("[fleetmq :{http}] {line}");
            }
        }
    });
    Running {
        child,
        token,
        http: format!("http://127.0.0.1:{http}"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A REST client of one running node, as the first admin.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    /// The first admin's client of `running` (which printed the admin's token).
    pub fn of(running: &Running) -> Api {
        Api {
            base: running.http.clone(),
            token: running.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// The same admin's client of another node.
    pub fn on(&self, running: &Running) -> Api {
        Api {
            base: running.http.clone(),
            ..self.clone()
        }
    }

    /// Sends a request and asserts it succeeds; its JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {body:#}");
        body
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Polls `path` until `done` holds, for up to two minutes (a batch's end sends no event
    /// to await); retried while the node does not answer (it may be restarting).
    pub async fn until(
        &self,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let reply = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await;
            if let Ok(reply) = reply
                && let Ok(body) = reply.json::<serde_json::Value>().await
            {
                if done(&body) {
                    return body;
                }
                if tokio::time::Instant::now() >= deadline {
                    let stuck = self
                        .get("/api/v1/firmware-upgrader/upgrade-operation/?status=in-progress")
                        .await;
                    panic!("{path} never got there: {body:#}\nin progress: {stuck:#}");
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} does not answer {path}",
                self.base
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Starts a batch upgrade of every device of the build's category to `build`, at most
    /// `max_parallel` at once; the batch's path.
    pub async fn upgrade_all(&self, build: &str, max_parallel: u32) -> String {
        let batch = self
            .post(
                &format!("/api/v1/firmware-upgrader/build/{build}/upgrade/"),
                serde_json::json!({"upgrade_all": true, "max_parallel": max_parallel}),
            )
            .await;
        format!(
            "/api/v1/firmware-upgrader/batch-upgrade-operation/{}/",
            batch["batch"].as_str().expect("batch id")
        )
    }

    /// Waits for the batch at `batch` (a path) to end, and asserts it upgraded all of its
    /// `devices`.
    pub async fn batch_succeeds(&self, batch: &str, devices: usize) {
        let done = self
            .until(batch, |b| {
                b["status"].is_string() && b["status"] != "in-progress" && b["status"] != "idle"
            })
            .await;
        assert_eq!(done["status"], "success", "{done:#}");
        assert_eq!(
            done["progress_report"],
            format!("{devices} out of {devices}")
        );
    }

    /// A value on `/metrics`; `None` while the node does not answer or has no such line.
    pub async fn metric(&self, name: &str) -> Option<u64> {
        let reply = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        let text = reply.text().await.ok()?;
        text.lines().find_map(|line| {
            let (key, value) = line.trim().split_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
    }

    /// A firmware category and a build of `version` for the simulator's board in `org`, with
    /// a 64 KiB image; the build's id.
    pub async fn firmware_build(&self, org: &serde_json::Value, version: &str) -> String {
        let category = self
            .post(
                "/api/v1/firmware-upgrader/category/",
                serde_json::json!({"name": "sim", "organization": org["id"]}),
            )
            .await;
        let build = self
            .post(
                "/api/v1/firmware-upgrader/build/",
                serde_json::json!({"category": category["id"], "version": version, "os": "OpenWrt"}),
            )
            .await;
        let build = build["id"].as_str().expect("build id").to_owned();
        let form = reqwest::multipart::Form::new()
            .text("type", "fleetmq-sim-squashfs-sysupgrade.bin")
            .part(
                "file",
                reqwest::multipart::Part::bytes(vec![7u8; 64 * 1024]).file_name("fw.bin"),
            );
        let upload = self
            .http
            .post(format!(
                "{}/api/v1/firmware-upgrader/build/{build}/image/",
                self.base
            ))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .expect("upload sent");
        assert_eq!(upload.status().as_u16(), 201, "image uploaded");
        build
    }
}

/// What [`watch_install`] reports: the device's id, what it installed, and the device.
pub type Installs = tokio::task::JoinHandle<(String, Vec<String>, fleetmq_sim::SimHandle)>;

/// Watches a simulated device until it installs a firmware.
pub fn watch_install(id: String, mut sim: fleetmq_sim::SimHandle) -> Installs {
    tokio::spawn(async move {
        let mut installed = Vec::new();
        while let Some(event) = sim.next_event().await {
            if let fleetmq_sim::SimEvent::Installed { version } = event {
                installed.push(version);
                break;
            }
        }
        (id, installed, sim)
    })
}

/// Every one of `devices` watched devices installed `version`, and none a second time
/// after it; stops them.
pub async fn installed_once(watchers: Vec<Installs>, version: &str, devices: usize) {
    let mut seen = std::collections::HashSet::new();
    for watcher in watchers {
        let (id, installed, mut sim) = watcher.await.expect("install watcher");
        assert_eq!(installed, vec![version.to_owned()], "device {id}");
        // No second install follows (the batch is over, nothing else may arrive).
        while let Ok(Some(event)) =
            tokio::time::timeout(std::time::Duration::from_millis(1), sim.next_event()).await
        {
            assert!(
                !matches!(event, fleetmq_sim::SimEvent::Installed { .. }),
                "device {id} installed twice"
            );
        }
        seen.insert(id);
        sim.stop().await;
    }
    assert_eq!(seen.len(), devices);
}
