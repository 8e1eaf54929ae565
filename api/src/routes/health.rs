//! `GET /healthz`: is the store readable and the broker up? No authentication.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// The health route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

/// Counters and gauges in Prometheus' text format (no authentication, like `/healthz`). A
/// name may carry labels (`name{reason="x"}`); the series of one name come together and share
/// its HELP. Counters' names end in `_total` (Prometheus' convention); the others are gauges.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    // Two atomic reads: no need to leave the async worker.
    let cache = state.store().blocking().cache_use();
    let store = [
        (
            "fleetmq_store_cache_bytes",
            "Bytes of the data file the store keeps in memory (at most --store-cache-mib).",
            cache.bytes,
        ),
        (
            "fleetmq_store_cache_evictions_total",
            "Pages the store dropped from memory to stay within --store-cache-mib.",
            cache.evictions,
        ),
    ];
    let mut out = String::new();
    let mut described = "";
    let broker_auth = state
        .config()
        .broker_auth
        .is_some()
        .then(|| state.broker_auth().metrics())
        .into_iter()
        .flatten();
    for (series, help, value) in state
        .hooks()
        .metrics()
        .into_iter()
        .chain(store)
        .chain(broker_auth)
    {
        let name = series.split_once('{').map_or(series, |(name, _)| name);
        if name != described {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            described = name;
        }
        out.push_str(&format!("{series} {value}\n"));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// Component states.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every component is.
    pub status: &'static str,
    /// `ok` or the store's error.
    pub store: String,
    /// `ok` or `down`.
    pub broker: &'static str,
}

/// Reports whether the server can do its work (200) or not (503).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let store = match state.store().run(|db| db.check()).await {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let broker = if state.hooks().broker_up() {
        "ok"
    } else {
        "down"
    };
    let healthy = store == "ok" && broker == "ok";
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if healthy { "ok" } else { "degraded" },
            store,
            broker,
        }),
    )
}
