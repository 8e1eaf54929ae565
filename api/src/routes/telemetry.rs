//! `/api/v1/controller/device/{id}/telemetry/`: what a device reported, latest and history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use fleetmq_store::{Resource, TelemetryRange, TelemetrySample, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::QueryPairs;
use crate::form::{Form, Mode};
use crate::pagination::PageParams;
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, ErrorDetail};

/// The telemetry route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_telemetry))
}

/// One sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleView {
    /// When the device measured it.
    pub timestamp: String,
    /// When the server received it.
    pub received: String,
    /// The metrics.
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
}

/// The latest sample and a page of history (newest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct TelemetryView {
    /// The most recent sample, whatever the range.
    pub latest: Option<SampleView>,
    /// Samples in the range.
    pub count: u64,
    /// Next page.
    pub next: Option<String>,
    /// Previous page.
    pub previous: Option<String>,
    /// This page.
    pub results: Vec<SampleView>,
}

/// Range and paging.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation of the query; read from `QueryPairs`
pub struct TelemetryQuery {
    /// Measured at or after (RFC 3339).
    since: Option<String>,
    /// Measured before (RFC 3339).
    until: Option<String>,
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
}

fn view(s: TelemetrySample) -> SampleView {
    SampleView {
        timestamp: s.timestamp.to_string(),
        received: s.received.to_string(),
        metrics: s.metrics,
    }
}

/// A device's telemetry.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/telemetry/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id"), TelemetryQuery),
    responses((status = 200, body = TelemetryView), (status = 400, description = "Invalid range"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
    Path(id): Path<String>,
) -> Result<Json<TelemetryView>, ApiError> {
    caller.authorize(Resource::Device, &method)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let device = visible_device(&state, &caller, id).await?;
    let mut errors = Form::new(Map::new(), Mode::Partial);
    let mut range = TelemetryRange::default();
    for (name, slot) in [("since", &mut range.since), ("until", &mut range.until)] {
        if let Some(v) = query.get(name).filter(|v| !v.is_empty()) {
            match Timestamp::parse_lenient(v) {
                Some(t) => *slot = Some(t),
                None => errors.error(name, "Enter a valid date/time."),
            }
        }
    }
    errors.finish()?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let (latest, page) = state
        .store()
        .run(move |db| {
            Ok((
                db.latest_telemetry(device.id)?,
                db.telemetry_history(device.id, range, request)?,
            ))
        })
        .await?;
    let page = params.envelope(page, &uri, &headers, &query, view)?;
    Ok(Json(TelemetryView {
        latest: latest.map(view),
        count: page.count,
        next: page.next,
        previous: page.previous,
        results: page.results,
    }))
}
