//! The auth service external MQTT brokers ask: who a client is when it connects, and whether
//! it may use a vhost, a queue, an exchange, a topic. Answered from the store with the
//! embedded broker's rules (`fleetmq_store::mqtt_login`, `protocol`'s ACL), in the formats
//! the brokers document:
//!
//! - RabbitMQ's `rabbitmq_auth_backend_http` (`/broker-auth/rabbitmq/{user,vhost,resource,topic}`):
//!   form fields in a POST body or a GET query; the answer is `allow` or `deny` in a 200.
//!   MQTT topics arrive as AMQP routing keys (`/` and `.` swapped, `+` as `*`).
//! - EMQX's HTTP authentication and authorization (`/broker-auth/emqx/{authn,authz}`): the
//!   JSON bodies of EMQX's documented templates; the answer is
//!   `{"result": "allow"|"deny", "is_superuser": false}` in a 200. Never `ignore`, which EMQX
//!   would pass on to its next source.
//!
//! An external broker checks filters when a client subscribes, not each message it then
//! delivers, so a subscription must stay inside what its subscriber may read
//! ([`Principal::may_subscribe_contained`]): an operator names an organization
//! (`fleetmq/v1/acme/#`), where the embedded broker also grants `fleetmq/v1/+/…` and filters
//! per message. Questions after the login carry only the username, so each is decided
//! against the store as it is then: a device deactivated, a user or organization disabled, a
//! membership removed stops working at the client's next publish or subscription.
//!
//! The routes exist only when a shared secret is configured (`--broker-auth-secret`); each
//! request must carry it (`Authorization: Basic` with any username, or `Bearer`). A wrong
//! secret is 401, and counted against the caller's address like a password guess; past
//! `--broker-auth-rate` requests per second the answer is 429. A store error is a `deny`
//! (fail closed). Everything is counted in `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::routing::{any, post};
use base64::Engine;
use fleetmq_protocol::{DeviceId, Principal};
use fleetmq_store::mqtt_login::{current_principal, decide_login};
use fleetmq_store::{LoginRefused, MqttLogin};
use serde_json::{Value, json};

use crate::extract::{ClientAddr, JsonObject, form_urlencoded_pairs};
use crate::{ApiError, AppState};

/// How the auth service is set up (`--broker-auth-*`).
#[derive(Debug, Clone)]
pub struct BrokerAuthConfig {
    /// What each request must present; the routes do not exist without it.
    pub secret: String,
    /// Requests answered per second, all callers together (bursts of one second's worth).
    pub requests_per_second: u32,
    /// The RabbitMQ virtual host MQTT clients use (RabbitMQ's `mqtt.vhost`).
    pub rabbitmq_vhost: String,
    /// The exchange RabbitMQ's MQTT plugin publishes to (`mqtt.exchange`).
    pub rabbitmq_exchange: String,
    /// fleetmq's own bridge on the broker (`--mqtt-broker-username`, `-password`): it may
    /// read and publish everything under `fleetmq/`. Nobody else may log in under its name.
    pub bridge: Option<(String, String)>,
}

impl BrokerAuthConfig {
    /// RabbitMQ's defaults for the MQTT plugin, `secret` and 5,000 requests per second.
    pub fn new(secret: String) -> Self {
        Self {
            secret,
            requests_per_second: 5_000,
            rabbitmq_vhost: "/".to_owned(),
            rabbitmq_exchange: "amq.topic".to_owned(),
            bridge: None,
        }
    }
}

/// Largest request body: the brokers send a few short fields.
const BODY_LIMIT: usize = 16 * 1024;

/// The routes, or none without a configured secret.
pub fn router(config: Option<&BrokerAuthConfig>) -> Router<AppState> {
    if config.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/broker-auth/rabbitmq/user", any(rabbitmq_user))
        .route("/broker-auth/rabbitmq/vhost", any(rabbitmq_vhost))
        .route("/broker-auth/rabbitmq/resource", any(rabbitmq_resource))
        .route("/broker-auth/rabbitmq/topic", any(rabbitmq_topic))
        .route("/broker-auth/emqx/authn", post(emqx_authn))
        .route("/broker-auth/emqx/authz", post(emqx_authz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// What the service keeps between requests: the rate bucket and the counters.
#[derive(Debug, Default)]
pub struct BrokerAuthState {
    bucket: Mutex<Option<(Instant, f64)>>,
    allowed: AtomicU64,
    denied: AtomicU64,
    bad_secret: AtomicU64,
    over_rate: AtomicU64,
    store_errors: AtomicU64,
}

impl BrokerAuthState {
    /// Takes one request from a bucket of `rate` per second (holding one second's worth).
    fn take(&self, rate: u32) -> bool {
        let rate = f64::from(rate.max(1));
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (at, tokens) = bucket.get_or_insert((now, rate));
        let refilled = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if refilled < 1.0 {
            *tokens = refilled;
            return false;
        }
        *tokens = refilled - 1.0;
        true
    }

    /// The counters for `/metrics`.
    pub fn metrics(&self) -> [(&'static str, &'static str, u64); 5] {
        const ANSWERS: &str = "Questions of external brokers answered by the auth service.";
        const REFUSED: &str = "Requests to the broker auth service refused before an answer.";
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "fleetmq_broker_auth_answers_total{result=\"allow\"}",
                ANSWERS,
                load(&self.allowed),
            ),
            (
                "fleetmq_broker_auth_answers_total{result=\"deny\"}",
                ANSWERS,
                load(&self.denied),
            ),
            (
                "fleetmq_broker_auth_refused_total{reason=\"secret\"}",
                REFUSED,
                load(&self.bad_secret),
            ),
            (
                "fleetmq_broker_auth_refused_total{reason=\"rate\"}",
                REFUSED,
                load(&self.over_rate),
            ),
            (
                "fleetmq_broker_auth_store_errors_total",
                "Broker auth questions denied because the store could not answer.",
                load(&self.store_errors),
            ),
        ]
    }

    fn count(&self, allow: bool) -> bool {
        let counter = if allow { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        allow
    }
}

/// A request that presented the shared secret, within the rate (an extractor, so it runs
/// before the body is read).
struct Caller;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(config) = state.config().broker_auth.as_ref() else {
            return Err(ApiError::NotFound);
        };
        let service = state.broker_auth();
        let ClientAddr(peer) = ClientAddr::from_request_parts(parts, state).await?;
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(presented_secret);
        let Some(presented) = presented else {
            service.bad_secret.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::NotAuthenticated);
        };
        if !same_secret(presented.as_bytes(), config.secret.as_bytes()) {
            service.bad_secret.fetch_add(1, Ordering::Relaxed);
            // Guessing the secret is as slow as guessing a password.
            if let Some(peer) = peer {
                state.token_throttle().check(peer)?;
            }
            return Err(ApiError::InvalidToken("Invalid broker auth secret."));
        }
        if !service.take(config.requests_per_second) {
            service.over_rate.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::Throttled(1));
        }
        Ok(Caller)
    }
}

/// The secret in `Authorization: Basic base64(any:secret)` or `Authorization: Bearer secret`.
fn presented_secret(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        return decoded.split_once(':').map(|(_, secret)| secret.to_owned());
    }
    None
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RabbitMQ's form fields: the query of a GET, the URL-encoded body of a POST (an
/// extractor; the body is at most [`BODY_LIMIT`]).
struct RabbitmqFields(HashMap<String, String>);

impl FromRequest<AppState> for RabbitmqFields {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let source = if request.method() == Method::GET {
            request.uri().query().unwrap_or_default().to_owned()
        } else {
            let body = Bytes::from_request(request, state)
                .await
                .map_err(|_| ApiError::PayloadTooLarge(BODY_LIMIT))?;
            String::from_utf8_lossy(&body).into_owned()
        };
        Ok(RabbitmqFields(
            form_urlencoded_pairs(&source).into_iter().collect(),
        ))
    }
}

/// RabbitMQ's answer.
fn rabbitmq_answer(state: &AppState, allow: bool) -> &'static str {
    if state.broker_auth().count(allow) {
        "allow"
    } else {
        "deny"
    }
}

/// A decision that needs the store; a store error denies (and is logged and counted).
async fn decide<F>(state: &AppState, what: &'static str, decide: F) -> bool
where
    F: FnOnce(&dyn fleetmq_store::Backend) -> fleetmq_store::Result<bool> + Send + 'static,
{
    match state.store().run(decide).await {
        Ok(allow) => allow,
        Err(e) => {
            state
                .broker_auth()
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, what, "broker auth: store unavailable, denied");
            false
        }
    }
}

/// Who asks through the broker: fleetmq's own bridge, or a client the store knows.
enum Client {
    Bridge,
    Known(Principal),
}

impl Client {
    /// Who `username` is now, without a password (questions after the login).
    fn current(
        db: &dyn fleetmq_store::Backend,
        config: &BrokerAuthConfig,
        username: &str,
    ) -> fleetmq_store::Result<Option<Client>> {
        if is_bridge(config, username) {
            return Ok(Some(Client::Bridge));
        }
        Ok(current_principal(db, username)?.map(Client::Known))
    }

    fn may_publish(&self, topic: &str) -> bool {
        match self {
            Client::Bridge => in_fleet_tree(topic) && !topic.contains(['+', '#']),
            Client::Known(principal) => principal.may_publish(topic),
        }
    }

    /// A filter on a broker that checks filters, not messages.
    fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Client::Bridge => in_fleet_tree(filter),
            Client::Known(principal) => principal.may_subscribe_contained(filter),
        }
    }

    /// A device's client id is its id, as on the embedded broker.
    fn client_id_fits(&self, client_id: Option<&str>) -> bool {
        match (self, client_id) {
            (Client::Known(Principal::Device { device_id, .. }), Some(client_id)) => {
                device_id.is(client_id)
            }
            _ => true,
        }
    }
}

/// Whether `topic` (or filter) lies under `fleetmq/`, without wildcards above it.
fn in_fleet_tree(topic: &str) -> bool {
    topic.split('/').next() == Some(fleetmq_protocol::topic::ROOT) && topic.contains('/')
}

fn is_bridge(config: &BrokerAuthConfig, username: &str) -> bool {
    config
        .bridge
        .as_ref()
        .is_some_and(|(bridge, _)| !bridge.is_empty() && bridge == username)
}

/// A login question, decided on a blocking thread (denied without a configured service).
async fn login(
    state: &AppState,
    what: &'static str,
    username: Option<String>,
    password: String,
    client_id: Option<String>,
) -> bool {
    let Some(config) = state.config().broker_auth.clone() else {
        return false;
    };
    decide(state, what, move |db| {
        login_allowed(
            db,
            &config,
            username.as_deref(),
            &password,
            client_id.as_deref(),
        )
    })
    .await
}

/// Whether a login is allowed: the bridge's own password, or the store's decision.
fn login_allowed(
    db: &dyn fleetmq_store::Backend,
    config: &BrokerAuthConfig,
    username: Option<&str>,
    password: &str,
    client_id: Option<&str>,
) -> fleetmq_store::Result<bool> {
    let username = username.filter(|u| !u.is_empty());
    if let (Some(username), Some((_, secret))) = (username, config.bridge.as_ref())
        && is_bridge(config, username)
    {
        return Ok(!secret.is_empty() && same_secret(password.as_bytes(), secret.as_bytes()));
    }
    let login = MqttLogin {
        username,
        password: password.as_bytes(),
        client_certificate: None,
    };
    Ok(match decide_login(db, &login)? {
        Ok(principal) => Client::Known(principal).client_id_fits(client_id),
        Err(LoginRefused::Certificate(_) | LoginRefused::BadCredentials) => false,
        Err(LoginRefused::NotAuthorized) => false,
    })
}

async fn rabbitmq_user(
    State(state): State<AppState>,
    _: Caller,
    RabbitmqFields(fields): RabbitmqFields,
) -> &'static str {
    let field = |k: &str| fields.get(k).cloned();
    let allow = login(
        &state,
        "rabbitmq user",
        field("username"),
        field("password").unwrap_or_default(),
        field("client_id"),
    )
    .await;
    rabbitmq_answer(&state, allow)
}

async fn rabbitmq_vhost(
    State(state): State<AppState>,
    _: Caller,
    RabbitmqFields(fields): RabbitmqFields,
) -> &'static str {
    let Some(config) = state.config().broker_auth.clone() else {
        return "deny";
    };
    if fields.get("vhost") != Some(&config.rabbitmq_vhost) {
        return rabbitmq_answer(&state, false);
    }
    let username = fields.get("username").cloned().unwrap_or_default();
    let allow = decide(&state, "rabbitmq vhost", move |db| {
        Ok(Client::current(db, &config, &username)?.is_some())
    })
    .await;
    rabbitmq_answer(&state, allow)
}

/// The MQTT plugin's queue for a subscriber: `mqtt-subscription-{client id}qos{0|1}`.
fn subscription_queue_client(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("mqtt-subscription-")?;
    rest.strip_suffix("qos0")
        .or_else(|| rest.strip_suffix("qos1"))
        .filter(|client| !client.is_empty())
}

/// Which queues and exchanges `principal` may use: the MQTT exchange (read to bind, write to
/// publish), and its own subscription queues. A device's are named by its id; another
/// client's queue may not be named by a device id (it could read that device's commands).
fn resource_allowed(
    client: &Client,
    config: &BrokerAuthConfig,
    resource: &str,
    name: &str,
    permission: &str,
) -> bool {
    match (resource, permission) {
        ("exchange", "read" | "write") => name == config.rabbitmq_exchange,
        ("queue", "configure" | "read" | "write") => match subscription_queue_client(name) {
            Some(queue_client) => match client {
                Client::Known(Principal::Device { device_id, .. }) => device_id.is(queue_client),
                _ => queue_client.parse::<DeviceId>().is_err(),
            },
            None => false,
        },
        _ => false,
    }
}

async fn rabbitmq_resource(
    State(state): State<AppState>,
    _: Caller,
    RabbitmqFields(fields): RabbitmqFields,
) -> &'static str {
    let Some(config) = state.config().broker_auth.clone() else {
        return "deny";
    };
    if fields.get("vhost") != Some(&config.rabbitmq_vhost) {
        return rabbitmq_answer(&state, false);
    }
    let allow = decide(&state, "rabbitmq resource", move |db| {
        let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
        Ok(
            Client::current(db, &config, field("username"))?.is_some_and(|client| {
                resource_allowed(
                    &client,
                    &config,
                    field("resource"),
                    field("name"),
                    field("permission"),
                )
            }),
        )
    })
    .await;
    rabbitmq_answer(&state, allow)
}

/// The MQTT topic or filter of an AMQP routing key as RabbitMQ's MQTT plugin makes it: `.`
/// and `/` swapped, `*` for `+` (`#` stays).
pub fn mqtt_topic(routing_key: &str) -> String {
    routing_key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            '*' => '+',
            other => other,
        })
        .collect()
}

async fn rabbitmq_topic(
    State(state): State<AppState>,
    _: Caller,
    RabbitmqFields(fields): RabbitmqFields,
) -> &'static str {
    let Some(config) = state.config().broker_auth.clone() else {
        return "deny";
    };
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    if field("vhost") != config.rabbitmq_vhost || field("name") != config.rabbitmq_exchange {
        return rabbitmq_answer(&state, false);
    }
    let (username, permission) = (field("username"), field("permission"));
    let topic = mqtt_topic(&field("routing_key"));
    let allow = decide(&state, "rabbitmq topic", move |db| {
        Ok(
            Client::current(db, &config, &username)?.is_some_and(|c| match permission.as_str() {
                "write" => c.may_publish(&topic),
                "read" => c.may_subscribe(&topic),
                _ => false,
            }),
        )
    })
    .await;
    rabbitmq_answer(&state, allow)
}

/// A string field of an EMQX body (`${…}` placeholders arrive as strings).
fn text(body: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// EMQX's answer.
fn emqx_answer(state: &AppState, allow: bool) -> Json<Value> {
    let result = if state.broker_auth().count(allow) {
        "allow"
    } else {
        "deny"
    };
    Json(json!({ "result": result, "is_superuser": false }))
}

async fn emqx_authn(
    State(state): State<AppState>,
    _: Caller,
    JsonObject(body): JsonObject,
) -> Json<Value> {
    let username = text(&body, "username");
    let password = text(&body, "password").unwrap_or_default();
    let client_id = text(&body, "clientid");
    let allow = login(&state, "emqx authn", username, password, client_id).await;
    emqx_answer(&state, allow)
}

async fn emqx_authz(
    State(state): State<AppState>,
    _: Caller,
    JsonObject(body): JsonObject,
) -> Json<Value> {
    let (Some(username), Some(topic), Some(action)) = (
        text(&body, "username"),
        text(&body, "topic"),
        text(&body, "action"),
    ) else {
        return emqx_answer(&state, false);
    };
    let client_id = text(&body, "clientid");
    let Some(config) = state.config().broker_auth.clone() else {
        return emqx_answer(&state, false);
    };
    let allow = decide(&state, "emqx authz", move |db| {
        let Some(client) = Client::current(db, &config, &username)? else {
            return Ok(false);
        };
        if !client.client_id_fits(client_id.as_deref()) {
            return Ok(false);
        }
        Ok(match action.as_str() {
            "publish" => client.may_publish(&topic),
            "subscribe" => client.may_subscribe(&topic),
            _ => false,
        })
    })
    .await;
    emqx_answer(&state, allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_become_mqtt_topics_as_rabbitmq_makes_them() {
        assert_eq!(
            mqtt_topic("fleetmq.v1.acme.*.up.#"),
            "fleetmq/v1/acme/+/up/#"
        );
        assert_eq!(mqtt_topic("a/b.c"), "a.b/c");
    }

    #[test]
    fn the_secret_comes_from_basic_or_bearer_authorization() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("rabbit:s3cret:x")
        );
        assert_eq!(presented_secret(&basic).as_deref(), Some("s3cret:x"));
        assert_eq!(presented_secret("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(presented_secret("Token abc"), None);
        assert_eq!(presented_secret("Basic !!!"), None);
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn the_rate_bucket_refuses_past_one_seconds_worth_at_once() {
        let state = BrokerAuthState::default();
        let granted = (0..10).filter(|_| state.take(4)).count();
        assert_eq!(granted, 4);
    }
}
