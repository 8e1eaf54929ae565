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

/// Counters in Prometheus' text format (no authentication, like `/healthz`). A name may carry
/// labels (`name{reason="x"}`); the series of one name come together and share its HELP.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut out = String::new();
    let mut described = "";
    for (series, help, value) in state.hooks().metrics() {
        let name = series.split_once('{').map_or(series, |(name, _)| name);
        if name != described {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
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
