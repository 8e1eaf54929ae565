//! Handler tests without a socket: the whole API ([`fleetmq_api::router`]) over a store in a
//! temporary directory, driven with `tower::ServiceExt::oneshot`. Any `api/tests/<name>.rs`
//! can use it with `mod common;`.
//!
//! Accounts and organizations are written to the store directly (the routes under test are
//! others); everything else goes through the API, as a client would.
//!
//! [`firmware`] adds the firmware upgrader's fixtures (categories, builds, images, multipart
//! uploads) for the tests of its routes.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Request, StatusCode};
use fleetmq_api::{ApiConfig, AppState, NoHooks};
use fleetmq_store::{
    Group, Membership, OrgId, OrganizationFields, Password, Slug, Store, UserFields, Username,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

pub mod firmware;

/// The password of every user [`TestApi::user`] creates.
pub const PASSWORD: &str = "secret-password";

/// The API over a fresh store, with a superuser's token.
pub struct TestApi {
    router: Router,
    store: Store,
    /// A token of `admin`, a superuser.
    pub admin: String,
    _dir: TempDir,
}

/// What the API answered.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl Reply {
    /// A string field of the body (empty when absent).
    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_owned()
    }
}

/// What the API answered, as bytes: downloads, and answers whose headers matter.
#[derive(Debug)]
pub struct RawReply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as sent.
    pub body: Bytes,
}

impl RawReply {
    /// A header's value (empty when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body).expect("a JSON body")
        }
    }
}

impl TestApi {
    /// A new store with the superuser `admin`, and the API over it.
    pub async fn start() -> Self {
        Self::start_with(ApiConfig::default()).await
    }

    /// [`TestApi::start`] with the API tuned by `config` (small limits, say).
    pub async fn start_with(config: ApiConfig) -> Self {
        Self::start_with_hooks(config, Arc::new(NoHooks)).await
    }

    /// [`TestApi::start_with`] with the server's `hooks` (a recording one, say).
    pub async fn start_with_hooks(config: ApiConfig, hooks: Arc<dyn fleetmq_api::Hooks>) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().to_owned();
        let store = tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .expect("store task")
            .expect("store opens");
        let state = AppState::new(store.clone(), config, hooks);
        let mut api = TestApi {
            router: fleetmq_api::router(state),
            store,
            admin: String::new(),
            _dir: dir,
        };
        api.admin = api.account("admin", true, &[], &[]).await;
        api
    }

    /// The store under the API.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sends a request; `body` is sent as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        Reply { status, body }
    }

    /// GETs `path` (with `token`, if any) and keeps the answer's bytes and headers: downloads.
    pub async fn get_raw(&self, path: &str, token: Option<&str>) -> RawReply {
        let mut request = Request::builder().method("GET").uri(path);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::empty()).expect("request"))
            .await
    }

    /// Sends a request as built (any headers, any body) and keeps the answer's bytes.
    pub async fn send(&self, request: Request<Body>) -> RawReply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        RawReply {
            status,
            headers,
            body,
        }
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    /// POST a JSON body with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// PUT a JSON body with a token.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    /// PATCH a JSON body with a token.
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PATCH", path, Some(token), Some(body)).await
    }

    /// DELETE with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Creates an organization named and slugged `slug`; returns its id.
    pub async fn org(&self, slug: &str) -> String {
        let fields = OrganizationFields {
            name: slug.to_owned(),
            slug: Slug::parse(slug).expect("a valid slug"),
            description: String::new(),
            email: String::new(),
            url: String::new(),
            is_active: true,
        };
        let org = self
            .store
            .run(move |db| db.create_organization(fields))
            .await
            .expect("organization created");
        org.id.0.to_string()
    }

    /// Creates a user in `groups` who manages the organizations `manages` (ids); returns a
    /// token of theirs. The password is [`PASSWORD`].
    pub async fn user(&self, username: &str, groups: &[Group], manages: &[&str]) -> String {
        self.account(username, false, groups, manages).await
    }

    /// The id of the user named `username`.
    pub async fn user_id(&self, username: &str) -> String {
        let username = username.to_owned();
        let user = self
            .store
            .run(move |db| db.user_by_username(&username))
            .await
            .expect("store answers")
            .expect("the user exists");
        user.id.0.to_string()
    }

    async fn account(
        &self,
        username: &str,
        is_superuser: bool,
        groups: &[Group],
        manages: &[&str],
    ) -> String {
        let fields = UserFields {
            username: Username::parse(username).expect("a valid username"),
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_superuser,
            is_active: true,
            groups: groups.to_vec(),
            memberships: manages
                .iter()
                .map(|org| Membership {
                    organization: OrgId(org.parse().expect("an organization id")),
                    is_admin: true,
                })
                .collect(),
        };
        let password = Password::parse(PASSWORD).expect("a valid password");
        let token = self
            .store
            .run(move |db| {
                let user = db.create_user(fields, password)?;
                db.create_token(user.id)
            })
            .await
            .expect("user created");
        token.as_str().to_owned()
    }

    /// Registers a device named `name` in `org` through the API as the superuser; returns
    /// its id.
    pub async fn device(&self, org: &str, name: &str) -> String {
        let reply = self
            .post(
                "/api/v1/controller/device/",
                &self.admin,
                json!({"name": name, "organization": org, "mac_address": random_mac()}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.str("id")
    }
}

/// A random locally administered MAC address.
pub fn random_mac() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The files of a configuration archive (path → contents): gunzip, then read the ustar
/// entries.
pub fn unpack(archive: &[u8]) -> std::collections::BTreeMap<String, String> {
    use std::io::Read;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut tar)
        .expect("a gzip archive");
    let mut files = std::collections::BTreeMap::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let header = &tar[at..at + 512];
        let name = String::from_utf8_lossy(&header[..100])
            .trim_end_matches('\0')
            .to_owned();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&header[124..136]).trim_matches(|c| c == '\0' || c == ' '),
            8,
        )
        .expect("an octal size");
        files.insert(
            name,
            String::from_utf8_lossy(&tar[at + 512..at + 512 + size]).into_owned(),
        );
        at += 512 + size.div_ceil(512) * 512;
    }
    files
}
