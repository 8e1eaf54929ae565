//! Fixtures of the firmware upgrader's handler tests: categories, builds and images made
//! through the API as the superuser, devices of the simulator's board, multipart bodies, and
//! [`Fleet`] — two organizations with their firmware and a user for every row of the
//! permission matrix.

use std::ops::Deref;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Request, StatusCode};
use fleetmq_store::{DeviceId, Group, UpgradeId};
use serde_json::{Value, json};

use super::{Reply, TestApi};

/// Where the firmware upgrader's routes live.
pub const FW: &str = "/api/v1/firmware-upgrader";
/// A built-in image type, the simulator's.
pub const SIM_TYPE: &str = "fleetmq-sim-squashfs-sysupgrade.bin";
/// The board [`SIM_TYPE`] fits.
pub const SIM_BOARD: &str = "sim-board";
/// A built-in image type that does not fit [`SIM_BOARD`].
pub const UNIFI_TYPE: &str = "ath79-generic-ubnt_unifi-squashfs-sysupgrade.bin";
/// DRF's answer to a caller without the permission.
pub const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";
/// OpenWISP's answer to a caller who manages no organization.
pub const NOT_A_MANAGER: &str =
    "User is not a manager of the organization to which the requested resource belongs.";
/// DRF's answer to a request without credentials.
pub const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";

const BOUNDARY: &str = "fleetmq-test-boundary";

/// One part of a multipart form: a text field, or a file when `filename` is given.
pub struct Part<'a> {
    /// The field name.
    pub name: &'a str,
    /// The file name, for a file part.
    pub filename: Option<&'a str>,
    /// The content.
    pub bytes: &'a [u8],
}

impl<'a> Part<'a> {
    /// A text field.
    pub fn text(name: &'a str, value: &'a str) -> Self {
        Part {
            name,
            filename: None,
            bytes: value.as_bytes(),
        }
    }

    /// A file field named `file`.
    pub fn file(bytes: &'a [u8]) -> Self {
        Part {
            name: "file",
            filename: Some("image.bin"),
            bytes,
        }
    }
}

/// A `multipart/form-data` body of `parts`, with its content type.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part.filename {
            Some(filename) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{filename}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
        }
        body.extend_from_slice(part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// `/api/v1/firmware-upgrader/build/{build}/image/`.
pub fn images_path(build: &str) -> String {
    format!("{FW}/build/{build}/image/")
}

/// `/api/v1/firmware-upgrader/device/{device}/firmware/`.
pub fn firmware_path(device: &str) -> String {
    format!("{FW}/device/{device}/firmware/")
}

/// `/api/v1/firmware-upgrader/device/{device}/upgrade-operation/`.
pub fn device_operations_path(device: &str) -> String {
    format!("{FW}/device/{device}/upgrade-operation/")
}

/// The `field` of every result of a list answer, in order.
pub fn column(body: &Value, field: &str) -> Vec<String> {
    body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

impl TestApi {
    /// Creates a category of `org` (`None`: shared) as the superuser; returns its id.
    pub async fn category(&self, name: &str, org: Option<&str>) -> String {
        let reply = self
            .post(
                &format!("{FW}/category/"),
                &self.admin,
                json!({"name": name, "organization": org}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.str("id")
    }

    /// Creates a build of `category` as the superuser; returns its id.
    pub async fn build(&self, category: &str, version: &str) -> String {
        let reply = self
            .post(
                &format!("{FW}/build/"),
                &self.admin,
                json!({"category": category, "version": version}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.str("id")
    }

    /// Posts a multipart body of `parts` to `path`.
    pub async fn post_multipart(
        &self,
        path: &str,
        token: Option<&str>,
        parts: &[Part<'_>],
    ) -> Reply {
        let (content_type, body) = multipart(parts);
        let mut request = Request::post(path).header(CONTENT_TYPE, content_type);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let raw = self
            .send(request.body(Body::from(body)).expect("request"))
            .await;
        Reply {
            status: raw.status,
            body: raw.json(),
        }
    }

    /// Uploads `bytes` as an image of type `kind` to `build` as the superuser; returns the
    /// image as the API shows it.
    pub async fn image(&self, build: &str, kind: &str, bytes: &[u8]) -> Value {
        let reply = self
            .post_multipart(
                &images_path(build),
                Some(&self.admin),
                &[Part::text("type", kind), Part::file(bytes)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body
    }

    /// Registers a device of `model` named `name` in `org` as the superuser; returns its id.
    pub async fn device_of(&self, org: &str, name: &str, model: &str) -> String {
        let reply = self
            .post(
                "/api/v1/controller/device/",
                &self.admin,
                json!({"name": name, "organization": org, "model": model,
                       "mac_address": super::random_mac()}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.str("id")
    }

    /// Points `device`'s firmware at `image` as the superuser, which starts an upgrade
    /// operation; returns the operation's id.
    pub async fn upgrade(&self, device: &str, image: &str) -> String {
        let reply = self
            .put(&firmware_path(device), &self.admin, json!({"image": image}))
            .await;
        assert!(reply.status.is_success(), "{:?}", reply.body);
        reply.body["upgrade_operation"]["id"]
            .as_str()
            .expect("an operation")
            .to_owned()
    }

    /// Moves an operation along as the rollout engine would: sets its progress (and, if
    /// given, ends it with `status`).
    pub async fn advance(&self, operation: &str, progress: u8, status: Option<&str>) {
        let id = UpgradeId(operation.parse().expect("an operation id"));
        let status = status.map(|s| s.parse().expect("an upgrade status"));
        let refused = self
            .store()
            .run(move |db| {
                let mut op = db.upgrade(id)?.expect("the operation");
                op.progress = progress;
                if let Some(status) = status {
                    op.finish(status, "finished by the test");
                }
                db.write_upgrades(vec![op], Vec::new())
            })
            .await
            .expect("operation written");
        assert!(refused.is_empty(), "the operation was still in progress");
    }

    /// Deactivates a device as the superuser.
    pub async fn deactivate(&self, device: &str) {
        let reply = self
            .call(
                "POST",
                &format!("/api/v1/controller/device/{device}/deactivate/"),
                Some(&self.admin),
                None,
            )
            .await;
        assert!(reply.status.is_success(), "{:?}", reply.body);
    }

    /// Gives a device a location (through its coordinates); returns the location's id.
    pub async fn locate(&self, device: &str) -> String {
        let reply = self
            .put(
                &format!("/api/v1/controller/device/{device}/coordinates/"),
                &self.admin,
                json!({"type": "Feature",
                       "geometry": {"type": "Point", "coordinates": [12.5, 41.9]},
                       "properties": {}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let id = DeviceId(device.parse().expect("a device id"));
        let location = self
            .store()
            .run(move |db| db.device_location(id))
            .await
            .expect("store answers")
            .expect("the device has a location");
        location.id.0.to_string()
    }
}

/// Two organizations with their firmware, and a user for every row of the permission
/// matrix. Acme has a category with builds 1.0 and 2.0 (a simulator image each) and a
/// simulator device; beta has a category with build 1.0 (a simulator image) and a simulator
/// device. No device has firmware yet.
pub struct Fleet {
    api: TestApi,
    /// A superuser.
    pub root: String,
    /// Administrator of acme: every firmware permission.
    pub admin: String,
    /// Operator of acme: views firmware, changes nothing.
    pub operator: String,
    /// Manages acme but has no group, so no permission.
    pub nobody: String,
    /// Administrator of beta only.
    pub other: String,
    /// Administrator of no organization.
    pub homeless: String,
    /// Acme's id.
    pub acme: String,
    /// Beta's id.
    pub beta: String,
    /// Acme's category.
    pub category: String,
    /// Acme's build 1.0.
    pub old_build: String,
    /// The simulator image of build 1.0.
    pub old_image: String,
    /// Acme's build 2.0.
    pub new_build: String,
    /// The simulator image of build 2.0.
    pub new_image: String,
    /// Acme's simulator device `ap1`.
    pub device: String,
    /// Beta's build 1.0.
    pub beta_build: String,
    /// Its simulator image.
    pub beta_image: String,
    /// Beta's simulator device `bp1`.
    pub beta_device: String,
}

impl Deref for Fleet {
    type Target = TestApi;

    fn deref(&self) -> &TestApi {
        &self.api
    }
}

impl Fleet {
    /// Builds the fleet over a fresh store.
    pub async fn start() -> Self {
        let api = TestApi::start().await;
        let acme = api.org("acme").await;
        let beta = api.org("beta").await;
        let category = api.category("routers", Some(&acme)).await;
        let old_build = api.build(&category, "1.0").await;
        let old_image = api.image(&old_build, SIM_TYPE, b"firmware 1.0").await;
        let new_build = api.build(&category, "2.0").await;
        let new_image = api.image(&new_build, SIM_TYPE, b"firmware 2.0").await;
        let beta_category = api.category("switches", Some(&beta)).await;
        let beta_build = api.build(&beta_category, "1.0").await;
        let beta_image = api.image(&beta_build, SIM_TYPE, b"beta firmware").await;
        Fleet {
            root: api.admin.clone(),
            admin: api.user("ada", &[Group::Administrator], &[&acme]).await,
            operator: api.user("otto", &[Group::Operator], &[&acme]).await,
            nobody: api.user("nora", &[], &[&acme]).await,
            other: api.user("bea", &[Group::Administrator], &[&beta]).await,
            homeless: api.user("hal", &[Group::Administrator], &[]).await,
            device: api.device_of(&acme, "ap1", SIM_BOARD).await,
            beta_device: api.device_of(&beta, "bp1", SIM_BOARD).await,
            old_image: old_image["id"].as_str().expect("an id").to_owned(),
            new_image: new_image["id"].as_str().expect("an id").to_owned(),
            beta_image: beta_image["id"].as_str().expect("an id").to_owned(),
            acme,
            beta,
            category,
            old_build,
            new_build,
            beta_build,
            api,
        }
    }

    /// The callers refused before any object is looked at, with their status and body:
    /// anonymous (401), without the permission (403) and managing no organization (403).
    pub fn refused(&self) -> [(Option<&str>, StatusCode, Value); 3] {
        [
            (
                None,
                StatusCode::UNAUTHORIZED,
                json!({"detail": NO_CREDENTIALS}),
            ),
            (
                Some(self.nobody.as_str()),
                StatusCode::FORBIDDEN,
                json!({"detail": PERMISSION_DENIED}),
            ),
            (
                Some(self.homeless.as_str()),
                StatusCode::FORBIDDEN,
                json!({"detail": NOT_A_MANAGER}),
            ),
        ]
    }
}
