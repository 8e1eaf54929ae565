//! The operator console in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver) from Rust with fantoccini, against the whole server on free ports with
//! simulated devices. Each step leaves a screenshot in `target/console-screenshots/<test>/`
//! (CI keeps them as artifacts).
//!
//! Needs `chromium` and `chromium-driver` (`bash .ci/run` installs them); `CHROMEDRIVER` and
//! `CHROMIUM` name other binaries.

mod devices;
mod fleet;
mod rollouts;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use fleetmq_sim::{DeviceConfig, SimDevice, SimHandle};
use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::DeviceIdentity;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Longest a page may take to show what a step waits for (a loaded 2-core CI machine runs a
/// browser, the server and 50 simulated devices at once).
const PATIENCE: Duration = Duration::from_secs(30);

/// The password `TestApp::create_user` gives its users.
const PASSWORD: &str = "secret-password";

/// A headless Chromium behind its own chromedriver; both end with the value.
pub struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
    step: u32,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium (its own empty profile) for `app`;
    /// screenshots go to `target/console-screenshots/<test>/`.
    pub async fn open(app: &TestApp, test: &str) -> Browser {
        let driver_bin =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&driver_bin).exists() && std::path::Path::new(&chromium).exists(),
            "the console tests need {chromium} and {driver_bin}: apt-get install chromium chromium-driver (bash .ci/run installs them)"
        );
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let webdriver = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.keep().display()),
                ],
            }),
        );
        // chromedriver answers once it listens; until then connecting is refused.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no WebDriver session: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/console-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("the screenshot directory");
        Browser {
            client,
            base: app.base.clone(),
            shots,
            step: 0,
            _driver: driver,
        }
    }

    /// Opens a console address (a path of the server).
    pub async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// Logs in through the login page and waits for the fleet page.
    pub async fn log_in(&mut self, username: &str) {
        self.log_in_with(username, PASSWORD).await;
    }

    /// [`Browser::log_in`] with a password of its own (the superuser's).
    pub async fn log_in_with(&mut self, username: &str, password: &str) {
        self.go("/login/").await;
        self.type_into("#username", username).await;
        self.type_into("#password", password).await;
        self.shot("login").await;
        self.click("#login-form button[type=submit]").await;
        self.wait_for("#logout").await;
    }

    /// Types into the field `css` (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Waits until an element matches `css`; returns it.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for_within(css, PATIENCE).await
    }

    /// [`Browser::wait_for`] with its own patience (a whole rollout).
    pub async fn wait_for_within(
        &self,
        css: &str,
        patience: Duration,
    ) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(patience)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => {
                self.failure_shot().await;
                panic!("{css} never appeared on {}: {error}", self.url().await)
            }
        }
    }

    /// Chooses the option of value `value` in the select `css` (waiting for the option).
    pub async fn choose(&self, css: &str, value: &str) {
        self.wait_for(&format!("{css} option[value=\"{value}\"]"))
            .await;
        self.wait_for(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
    }

    /// Accepts the confirmation dialog the page shows (waiting for it).
    pub async fn accept_dialog(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while let Err(error) = self.client.accept_alert().await {
            assert!(tokio::time::Instant::now() < deadline, "no dialog: {error}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    /// The text of the first element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading {css}: {e}"))
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, source: &str) -> Value {
        self.client
            .execute(source, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running {source}: {e}"))
    }

    /// Marks the loaded document: [`Browser::same_document`] then tells whether the page was
    /// reloaded (or left) since, which live views must not need.
    pub async fn mark_document(&self) {
        self.script("window.fleetmqTestMark = 'unchanged'; return null;")
            .await;
    }

    /// Whether the document marked by [`Browser::mark_document`] is still the one shown.
    pub async fn same_document(&self) -> bool {
        // A page that is being replaced cannot run the script: not the same document.
        self.client
            .execute("return window.fleetmqTestMark === 'unchanged';", Vec::new())
            .await
            .is_ok_and(|value| value == json!(true))
    }

    /// Waits until the document marked by [`Browser::mark_document`] has been replaced (the
    /// page reloaded or left).
    pub async fn wait_replaced(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.same_document().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page was never reloaded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The current address.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Scrolls the element `css` to the middle of the window (for a screenshot).
    pub async fn scroll_to(&self, css: &str) {
        self.wait_for(css).await;
        let css = serde_json::to_string(css).unwrap_or_default();
        self.script(&format!(
            "document.querySelector({css}).scrollIntoView({{block: 'center'}}); return null;"
        ))
        .await;
    }

    /// Saves a screenshot of the page as the next step `name`.
    pub async fn shot(&mut self, name: &str) {
        self.step += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).expect("the screenshot is written"),
            Err(error) => panic!("screenshot {name}: {error}"),
        }
    }

    async fn failure_shot(&self) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(self.shots.join("failure.png"), png);
        }
    }

    /// Resizes the window (a phone is 390 px wide).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resizing: {e}"));
    }

    /// Narrows the window to a phone's 390 px, checks the page shown fits it (no sideways
    /// scrolling of the page itself; wide tables scroll in their own box), screenshots it as
    /// `name`, and widens the window again.
    pub async fn check_phone_width(&mut self, name: &str) {
        self.resize(390, 844).await;
        let overflow = self
            .script(
                "return new Promise(r => requestAnimationFrame(() => r(\
                 document.documentElement.scrollWidth - window.innerWidth)));",
            )
            .await;
        self.shot(name).await;
        self.resize(1280, 900).await;
        assert!(
            overflow.as_i64().is_some_and(|px| px <= 0),
            "{name}: the page is {overflow} px wider than a 390 px phone"
        );
    }

    /// The session cookie the browser holds, if any.
    pub async fn session_cookie(&self) -> Option<String> {
        self.client
            .get_named_cookie("fleetmq_session")
            .await
            .ok()
            .map(|c| c.value().to_owned())
    }

    /// Ends the browser session (chromedriver and Chromium end with the value).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// The server, with no map tiles: a test's browser talks to 127.0.0.1 only (maps then draw
/// on their blank background, as offline).
pub async fn spawn() -> TestApp {
    TestApp::spawn_with(|config| config.console.tile_url = String::new()).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An organization with an operator who manages it and `n` registered devices of the
/// simulator's model.
pub struct Tenant {
    /// Organization id.
    pub org: String,
    /// The operator's username.
    pub operator: String,
    /// The operator's API token.
    pub token: String,
    /// The devices, in registration order.
    pub devices: Vec<DeviceIdentity>,
}

impl Tenant {
    /// Creates organization `slug`, its operator `{slug}-operator` and `n` devices named
    /// `{slug}-{i}`.
    pub async fn create(app: &TestApp, slug: &str, n: usize) -> Tenant {
        let org = app.create_org(slug).await;
        let operator = format!("{slug}-operator");
        let token = app
            .create_user(&operator, &["Administrator"], &[&org])
            .await;
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{slug}-{i:02}");
            let reply = app
                .post(
                    "/api/v1/controller/device/",
                    &token,
                    json!({"name": name, "organization": org,
                           "mac_address": fleetmq_tests::mac_for(&name), "model": "sim-board"}),
                )
                .await;
            assert_eq!(reply.status, 201, "{:?}", reply.body);
            devices.push(DeviceIdentity {
                id: reply.str("id"),
                key: reply.str("key"),
                org: slug.to_owned(),
            });
        }
        Tenant {
            org,
            operator,
            token,
            devices,
        }
    }

    /// Starts a simulator for every device and waits until each is connected.
    pub async fn connect_all(&self, app: &TestApp) -> Vec<SimHandle> {
        let mut handles = Vec::with_capacity(self.devices.len());
        for device in &self.devices {
            let mut config = DeviceConfig::new(
                app.mqtt_addr,
                device.org.clone(),
                device.id.clone(),
                device.key.clone(),
            );
            config.telemetry_interval = None;
            config.coordinates_interval = None;
            handles.push(SimDevice::spawn(config));
        }
        for handle in &mut handles {
            tokio::time::timeout(PATIENCE, handle.connected())
                .await
                .expect("a simulated device connects")
                .expect("the simulator runs");
        }
        handles
    }
}
