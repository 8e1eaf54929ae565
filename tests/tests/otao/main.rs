//! Application software (OTAO) end to end: versions published over REST, decisions taken by
//! the server, delivered over MQTT to devices that answer like the protocol says (raw MQTT
//! clients here, so every message is checked), and the simulator's fleet.

mod fleet;

use std::time::{Duration, SystemTime};

use fleetmq_protocol::{DownChannel, SoftwareDelivery, SoftwareOffer, UpChannel};
use fleetmq_tests::TestApp;
use fleetmq_tests::mqtt::{DeviceIdentity, MqttClient};
use serde_json::{Value, json};

/// An organization `acme` with an administrator.
pub struct Setup {
    pub app: TestApp,
    pub org: String,
    pub admin: String,
}

pub async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let org = app.create_org("acme").await;
    let admin = app.create_user("ada", &["Administrator"], &[&org]).await;
    Setup { app, org, admin }
}

impl Setup {
    /// Publishes `version` of `app` (general unless the body says otherwise).
    pub async fn publish(&self, app: &str, version: &str, body: Value) {
        let mut body = body;
        if body.get("rolloutStrategy").is_none() {
            body["rolloutStrategy"] = json!("general");
        }
        let reply = self
            .app
            .post(
                &format!("/api/v1/applications/{app}/software/{version}"),
                &self.admin,
                body,
            )
            .await;
        assert_eq!(reply.status, 201, "{:#}", reply.body);
    }

    /// PUTs a version's changeable fields.
    pub async fn put(&self, app: &str, version: &str, body: Value) {
        let reply = self
            .app
            .call(
                "PUT",
                &format!("/api/v1/applications/{app}/software/{version}"),
                Some(&self.admin),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, 204, "{:#}", reply.body);
    }

    /// Creates a filter; returns its id.
    pub async fn filter(&self, name: &str, query: Value) -> String {
        let mut body = query;
        body["name"] = json!(name);
        body["organization"] = json!(self.org);
        let reply = self.app.post("/api/v1/filters", &self.admin, body).await;
        assert_eq!(reply.status, 201, "{:#}", reply.body);
        reply.str("filterId")
    }

    /// Registers a device with `model` and connects it as a raw MQTT client subscribed to its
    /// down topics, reporting `apps` as its inventory.
    pub async fn device(&self, name: &str, model: &str, apps: Value) -> Device {
        let reply = self
            .app
            .post(
                "/api/v1/controller/device/",
                &self.admin,
                json!({"name": name, "organization": self.org,
                       "mac_address": fleetmq_tests::mac_for(name), "model": model}),
            )
            .await;
        assert_eq!(reply.status, 201, "{:#}", reply.body);
        let identity = DeviceIdentity {
            id: reply.str("id"),
            key: reply.str("key"),
            org: "acme".to_owned(),
        };
        let mut client =
            MqttClient::device(self.app.mqtt_addr, &identity, r#"{"status":"online"}"#).await;
        let down = format!("fleetmq/v1/acme/{}/down/#", identity.id);
        client.subscribe(&[&down]).await;
        client
            .publish(
                &identity.up(UpChannel::Software),
                &json!({ "applications": apps }).to_string(),
                false,
            )
            .await;
        Device { identity, client }
    }

    /// The version of `app` the server says the device runs.
    pub async fn current(&self, device: &Device, app: &str) -> String {
        let reply = self
            .app
            .get(
                &format!(
                    "/api/v1/endpoints/{}/software/current?appName={app}",
                    device.identity.id
                ),
                &self.admin,
            )
            .await;
        assert_eq!(reply.status, 200, "{:#}", reply.body);
        reply.str("version")
    }
}

/// A raw MQTT device.
pub struct Device {
    pub identity: DeviceIdentity,
    pub client: MqttClient,
}

/// What the server sent a device.
#[derive(Debug)]
pub enum Received {
    Offer(SoftwareOffer),
    Delivery(SoftwareDelivery),
}

impl Device {
    /// The next software message (other down messages are skipped).
    pub async fn next(&mut self) -> Received {
        let offer = self.identity.down(DownChannel::SoftwareOffer);
        let deliver = self.identity.down(DownChannel::SoftwareDeliver);
        loop {
            let publish = self.client.next_publish().await;
            if publish.topic == offer {
                return Received::Offer(SoftwareOffer::parse(&publish.payload).expect("an offer"));
            }
            if publish.topic == deliver {
                return Received::Delivery(
                    SoftwareDelivery::parse(&publish.payload).expect("a delivery"),
                );
            }
        }
    }

    /// The next delivery; panics on an offer.
    pub async fn delivery(&mut self) -> SoftwareDelivery {
        match self.next().await {
            Received::Delivery(d) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// Answers about operation `id`.
    pub async fn answer(&mut self, id: uuid::Uuid, status: &str) {
        let topic = self.identity.up(UpChannel::SoftwareStatus);
        self.client
            .publish(
                &topic,
                &json!({"id": id, "status": status, "reason": "test"}).to_string(),
                false,
            )
            .await;
    }

    /// Installs a delivery: installing, then installed.
    pub async fn install(&mut self, delivery: &SoftwareDelivery) {
        self.answer(delivery.id, "installing").await;
        self.answer(delivery.id, "installed").await;
    }
}

/// `yyyy-MM-ddTHH:mm:ssZ` for a whole second at least `ahead` from now.
pub fn date_ahead(ahead: Duration) -> (String, SystemTime) {
    let at = SystemTime::now() + ahead + Duration::from_secs(1);
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = fleetmq_store::Timestamp::from_micros(secs as i64 * 1_000_000).to_string();
    (
        format!("{}Z", &text[..19]),
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_walks_a_three_hop_path_one_confirmed_hop_at_a_time_and_a_cycle_does_not_loop() {
    let s = setup().await;
    s.publish(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
        "specification": {"link": "ftp://repo/1.1.0"}}),
    )
    .await;
    s.publish("kettle", "1.2.0", json!({"upgradableFrom": ["1.1.0"]}))
        .await;
    // 1.0.0 "upgradable from" 2.0.0 closes a cycle 1.0.0 → 1.1.0 → 1.2.0 → 2.0.0 → 1.0.0.
    s.publish("kettle", "2.0.0", json!({"upgradableFrom": ["1.2.0"]}))
        .await;
    s.publish("kettle", "1.0.0", json!({"upgradableFrom": ["2.0.0"]}))
        .await;
    let mut device = s.device("k1", "kettle", json!({"kettle": "1.0.0"})).await;

    let first = device.delivery().await;
    assert_eq!(
        (first.from.as_str(), first.version.as_str()),
        ("1.0.0", "1.1.0")
    );
    assert_eq!(first.specification["link"], "ftp://repo/1.1.0");
    // Nothing moves on before the hop is confirmed: the current version is still 1.0.0.
    assert_eq!(s.current(&device, "kettle").await, "1.0.0");
    device.install(&first).await;

    let second = device.delivery().await;
    assert_eq!(
        (second.from.as_str(), second.version.as_str()),
        ("1.1.0", "1.2.0")
    );
    device.install(&second).await;
    let third = device.delivery().await;
    assert_eq!(
        (third.from.as_str(), third.version.as_str()),
        ("1.2.0", "2.0.0")
    );
    device.install(&third).await;
    s.app
        .eventually(
            &format!(
                "/api/v1/endpoints/{}/software/current?appName=kettle",
                device.identity.id
            ),
            &s.admin,
            |r| r.str("version") == "2.0.0",
        )
        .await;

    // The cycle leads back to 1.0.0, which is lower: not offered. The next message the device
    // gets is the next real version.
    s.publish("kettle", "2.1.0", json!({"upgradableFrom": ["2.0.0"]}))
        .await;
    let next = device.delivery().await;
    assert_eq!(
        (next.from.as_str(), next.version.as_str()),
        ("2.0.0", "2.1.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_version_reaches_each_filter_only_once_its_rollout_date_passed() {
    let s = setup().await;
    let lamps = s.filter("lamps", json!({"model": "lamp"})).await;
    let kettles = s.filter("kettles", json!({"model": "kettle"})).await;
    let mut lamp = s.device("lamp", "lamp", json!({"fw-app": "1.0.0"})).await;
    let mut kettle = s
        .device("kettle", "kettle", json!({"fw-app": "1.0.0"}))
        .await;
    let mut fan = s.device("fan", "fan", json!({"fw-app": "1.0.0"})).await;
    let (lamp_date, lamp_at) = date_ahead(Duration::from_secs(1));
    let (kettle_date, kettle_at) = date_ahead(Duration::from_secs(3));
    s.publish(
        "fw-app",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"], "rolloutStrategy": "targeted",
               "filters": [{"filterId": lamps, "rolloutDate": lamp_date},
                           {"filterId": kettles, "rolloutDate": kettle_date}]}),
    )
    .await;

    let to_lamp = lamp.delivery().await;
    assert!(
        SystemTime::now() >= lamp_at,
        "delivered before its rollout date"
    );
    assert_eq!(to_lamp.version, "1.1.0");
    lamp.install(&to_lamp).await;
    let to_kettle = kettle.delivery().await;
    assert!(
        SystemTime::now() >= kettle_at,
        "delivered before its rollout date"
    );
    kettle.install(&to_kettle).await;

    // The fan matches no filter: a general version of another application reaches it, and
    // that is the first software message it ever got.
    s.publish("other", "2.0.0", json!({"upgradableFrom": ["1.0.0"]}))
        .await;
    fan.client
        .publish(
            &fan.identity.up(UpChannel::Software),
            &json!({"applications": {"fw-app": "1.0.0", "other": "1.0.0"}}).to_string(),
            false,
        )
        .await;
    let first = fan.delivery().await;
    assert_eq!(first.app_name, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consent_nothing_is_delivered_until_the_device_accepts_and_a_refusal_sticks() {
    let s = setup().await;
    s.publish(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
        "metadata": "release notes"}),
    )
    .await;
    let reply = s
        .app
        .call(
            "PUT",
            "/api/v1/applications/kettle",
            Some(&s.admin),
            Some(json!({"consentRequired": true})),
        )
        .await;
    assert!(
        reply.status == 200 || reply.status == 204,
        "{:#}",
        reply.body
    );
    let mut device = s.device("k1", "kettle", json!({"kettle": "1.0.0"})).await;
    let Received::Offer(offer) = device.next().await else {
        panic!("an offer comes first")
    };
    assert_eq!(offer.metadata, "release notes");
    device.answer(offer.id, "rejected").await;
    let inst = s
        .app
        .eventually(
            &format!(
                "/api/v1/endpoints/{}/software/installations",
                device.identity.id
            ),
            &s.admin,
            |r| r.body[0]["status"] == "cancelled",
        )
        .await;
    assert_eq!(inst.body.as_array().map(Vec::len), Some(1));

    // The operator changes the version: offered again; accepted, it is delivered.
    s.put(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
        "rolloutStrategy": "general", "metadata": "better notes"}),
    )
    .await;
    let Received::Offer(again) = device.next().await else {
        panic!("offered again")
    };
    assert_ne!(again.id, offer.id);
    assert_eq!(again.metadata, "better notes");
    device.answer(again.id, "accepted").await;
    let delivery = device.delivery().await;
    assert_eq!(delivery.id, again.id);
    device.install(&delivery).await;
    s.app
        .eventually(
            &format!(
                "/api/v1/endpoints/{}/software/current?appName=kettle",
                device.identity.id
            ),
            &s.admin,
            |r| r.str("version") == "1.1.0",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_version_reaches_nobody_until_it_is_opened_and_a_failure_is_not_retried() {
    let s = setup().await;
    s.publish(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
        "rolloutStrategy": "suspended"}),
    )
    .await;
    s.publish("kettle", "1.0.5", json!({"upgradableFrom": ["1.0.0"]}))
        .await;
    let mut device = s.device("k1", "kettle", json!({"kettle": "1.0.0"})).await;
    // Only the open version comes; it fails on the device.
    let first = device.delivery().await;
    assert_eq!(first.version, "1.0.5");
    device.answer(first.id, "failed").await;
    // Opening 1.1.0 brings it (the failed 1.0.5 is not retried by itself).
    s.put(
        "kettle",
        "1.1.0",
        json!({"upgradableFrom": ["1.0.0"],
        "rolloutStrategy": "general"}),
    )
    .await;
    let next = device.delivery().await;
    assert_eq!(next.version, "1.1.0");
    let reply = s
        .app
        .get(
            &format!(
                "/api/v1/endpoints/{}/software/installations",
                device.identity.id
            ),
            &s.admin,
        )
        .await;
    let statuses: Vec<&str> = reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["in-progress", "failed"], "{:#}", reply.body);
}
