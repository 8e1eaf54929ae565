//! fleetmq's REST API: the OpenWISP controller and users endpoints over the store, with
//! OpenAPI generated from the handlers.
//!
//! [`router`] builds the whole API for an [`AppState`]; tests can drive it without a socket
//! (`tower::ServiceExt::oneshot`) and the server binds it to a listener.
//!
//! # Layout
//! - [`routes`] — one router module per resource (`devices`, `organizations`, `users`, `health`,
//!   `oauth` and the OTAO API under `otao`).
//! - [`auth`] — Bearer-token authentication, permissions, organization scope.
//! - [`body`] — typed request bodies: the parser is the schema.
//! - [`docs`] — the OpenAPI document and the error answers every route shares.
//! - [`extract`] — extractors whose rejections are API errors (JSON bodies, ids, queries).
//! - [`filters`] — typed list filters and their field types.
//! - [`pagination`] — page-number pagination and the list envelope.
//! - [`error`] — [`ApiError`] and its response bodies.
//! - [`throttle`] — per-address throttling of password checks.
//!
//! `routes::broker_auth` is not part of the OpenAPI document: it answers external MQTT
//! brokers (RabbitMQ, EMQX) in their formats, see docs/mqtt.md.

pub mod archive;
pub mod auth;
pub mod body;
pub mod docs;
pub mod error;
pub mod extract;
pub mod filters;
pub mod pagination;
pub mod routes;
pub mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use fleetmq_protocol::{Call, UpdateResponse};
use fleetmq_store::{Command, DeviceId, OrgId, StartedUpgrades, Store, UpgradeOperation};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use error::ApiError;

/// Tunables of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest JSON body accepted; larger ones get 413.
    pub json_body_limit: usize,
    /// Password checks (token requests) allowed per client address per minute.
    pub token_attempts_per_minute: u32,
    /// Largest firmware image accepted; larger uploads get 413.
    pub firmware_upload_limit: u64,
    /// Largest floor plan image accepted; larger uploads get 413.
    pub floorplan_upload_limit: u64,
    /// Password checks (argon2, about 19 MiB each) run at once; a token request beyond them
    /// gets 503 at once, so memory stays flat however many addresses ask.
    pub password_checks: usize,
    /// Stored bytes of samples a telemetry history page holds at most (beyond its first
    /// sample), so a page stays small however large samples are.
    pub telemetry_page_max_bytes: u64,
    /// Seconds an OAuth access token (OTAO API) stays valid.
    pub oauth_token_lifetime: u64,
    /// The auth service for external MQTT brokers; off (no routes) without it.
    pub broker_auth: Option<routes::broker_auth::BrokerAuthConfig>,
    /// Live event streams (`GET /api/v1/events/`) open at once; one more gets 503.
    pub max_event_streams: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            json_body_limit: 1024 * 1024,
            token_attempts_per_minute: 30,
            firmware_upload_limit: 256 * 1024 * 1024,
            floorplan_upload_limit: 20 * 1024 * 1024,
            password_checks: default_password_checks(),
            telemetry_page_max_bytes: 1024 * 1024,
            oauth_token_lifetime: 3600,
            broker_auth: None,
            max_event_streams: 256,
        }
    }
}

/// One password check per core: more would only queue on the CPU while holding memory.
pub fn default_password_checks() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// What the API tells the rest of the server after it has persisted a change, and asks it.
///
/// The API depends only on the store; the server implements this over the broker and the
/// bridge. Every method has a default, so tests can run the API alone ([`NoHooks`]).
pub trait Hooks: Send + Sync + 'static {
    /// A device was deactivated: end its live MQTT session.
    fn device_deactivated(&self, _device: DeviceId) {}
    /// A command was stored (in progress): send it to the device.
    fn command_created(&self, _command: Command) {}
    /// Upgrade operations were stored (in progress): drive them.
    fn upgrades_started(&self, _started: StartedUpgrades) {}
    /// Operations were cancelled in the store: stop driving them and tidy their devices.
    fn upgrades_cancelled(&self, _operations: Vec<UpgradeOperation>) {}
    /// Application software (OTAO) of `org` changed — a version, a filter, an application's
    /// settings, what a device runs, a device's attributes: decide its installations again.
    fn software_changed(&self, _org: OrgId) {}
    /// Calls a device's npm.system_update 2.0 API over MQTT and returns its answer.
    fn device_call(&self, _device: DeviceId, _call: Call) -> DeviceCallFuture {
        Box::pin(async { Err(DeviceCallError::Unavailable) })
    }
    /// Whether the broker accepts connections (for `/healthz`).
    fn broker_up(&self) -> bool {
        false
    }
    /// Counters to export on `/metrics`: (name, help, value).
    fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        Vec::new()
    }
}

/// Why a device call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceCallError {
    /// The device is not connected.
    #[error("The device is offline.")]
    Offline,
    /// The device did not answer in time.
    #[error("The device did not answer within {0} seconds.")]
    Timeout(u64),
    /// No broker runs behind this API.
    #[error("Devices cannot be reached: the MQTT bridge is not running.")]
    Unavailable,
}

/// The answer to [`Hooks::device_call`].
pub type DeviceCallFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<UpdateResponse, DeviceCallError>> + Send>,
>;

/// Hooks of an API running without broker and bridge.
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Store,
    config: ApiConfig,
    hooks: Arc<dyn Hooks>,
    token_throttle: throttle::Throttle,
    password_checks: Arc<tokio::sync::Semaphore>,
    /// Live event streams open (`max_event_streams`).
    event_streams: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server stops: what streams (live events) ends then.
    stopping: tokio_util::sync::CancellationToken,
    downloads: routes::firmware::images::DownloadCache,
    broker_auth: routes::broker_auth::BrokerAuthState,
}

impl AppState {
    /// State over a store and the server's hooks.
    pub fn new(store: Store, config: ApiConfig, hooks: Arc<dyn Hooks>) -> Self {
        let token_throttle = throttle::Throttle::new(
            config.token_attempts_per_minute,
            std::time::Duration::from_secs(60),
        );
        let password_checks = Arc::new(tokio::sync::Semaphore::new(config.password_checks.max(1)));
        let event_streams = Arc::new(tokio::sync::Semaphore::new(config.max_event_streams));
        Self(Arc::new(Inner {
            store,
            config,
            hooks,
            token_throttle,
            password_checks,
            event_streams,
            stopping: tokio_util::sync::CancellationToken::new(),
            downloads: Default::default(),
            broker_auth: Default::default(),
        }))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// What firmware downloads keep between requests.
    pub(crate) fn downloads(&self) -> &routes::firmware::images::DownloadCache {
        &self.0.downloads
    }

    /// The broker auth service's rate bucket and counters.
    pub(crate) fn broker_auth(&self) -> &routes::broker_auth::BrokerAuthState {
        &self.0.broker_auth
    }

    /// The tunables.
    pub fn config(&self) -> &ApiConfig {
        &self.0.config
    }

    /// Limits password checks per client address.
    pub fn token_throttle(&self) -> &throttle::Throttle {
        &self.0.token_throttle
    }

    /// A slot for one password check, or [`ApiError::Overloaded`] when all are taken. The
    /// permit goes with the check onto its blocking thread and is released when the hashing
    /// ends, even if the client has gone.
    pub fn password_check(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.0.password_checks)
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded(1))
    }

    /// Cancel it when the server stops: open live event streams end then, so that the HTTP
    /// server's graceful shutdown is not held up by them.
    pub fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.0.stopping.clone()
    }

    /// A slot for a live event stream, held while it is open; 503 when all are taken.
    pub fn event_stream(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.0.event_streams)
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded(5))
    }

    /// The rest of the server.
    pub fn hooks(&self) -> &dyn Hooks {
        self.0.hooks.as_ref()
    }
}

/// The body of 401/403/404/405/413/415 answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong.
    pub detail: String,
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::users::router())
        .merge(routes::session::router())
        .merge(routes::events::router())
        .merge(routes::organizations::router())
        .merge(routes::config_settings::router())
        .merge(routes::agent::router())
        .merge(routes::devices::router())
        .merge(routes::templates::router())
        .merge(routes::groups::router())
        .merge(routes::coordinates::router())
        .merge(routes::locations::router())
        .merge(routes::floorplans::router())
        .merge(routes::device_location::router())
        .merge(routes::telemetry::router())
        .merge(routes::presence::router())
        .merge(routes::connections::router())
        .merge(routes::commands::router())
        .merge(routes::credentials::router())
        .merge(routes::pki::router())
        .merge(routes::vpns::router())
        .merge(routes::firmware::router())
        .merge(routes::system_update::router())
        .merge(routes::oauth::router())
        .merge(routes::otao::router())
}

/// Every route with its OpenAPI document.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = api_routes().split_for_parts();
    routes::credentials::document_alias(&mut doc);
    docs::finish(&mut doc);
    let routes = routes
        .merge(routes::credentials::alias_router())
        .merge(routes::pki::cas::crl_alias_router());
    (routes, doc)
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The whole HTTP API for `state`.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api();
    routes
        .merge(routes::broker_auth::router(
            state.config().broker_auth.as_ref(),
        ))
        .merge(SwaggerUi::new("/api/v1/docs").url("/api/v1/openapi.json", doc))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::MethodNotAllowed(request.method().to_string())
        })
        .layer(middleware::from_fn(log_server_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".to_owned()).into_response()
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Logs each 5xx once, with the internal reason the client is not shown.
async fn log_server_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() >= StatusCode::INTERNAL_SERVER_ERROR {
        let reason = response
            .extensions()
            .get::<error::InternalError>()
            .map_or("", |e| e.0.as_str());
        tracing::error!(%method, %path, status = %response.status(), reason, "request failed");
    }
    response
}
