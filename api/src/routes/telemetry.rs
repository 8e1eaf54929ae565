//! `/api/v1/controller/device/{id}/telemetry/`: what a device reported, latest and history.
//!
//! A history page is bounded twice: at most `page_size` samples, and at most
//! [`ApiConfig::telemetry_page_max_bytes`](crate::ApiConfig) of them (always at least one), so
//! one request cannot make the server read and send a device's whole history of large
//! samples. `next` continues where a page ended.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use fleetmq_store::{HistoryPageRequest, TelemetryRange, TelemetrySample, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Authorized, Devices, View};
use crate::extract::{PathId, QueryPairs};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState};

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
    /// This page, newest first: at most `page_size` samples (100 at most) and at most about
    /// 1 MiB of them (the server's `--telemetry-page-max-kib`), always at least one; a page
    /// that reaches the byte budget ends early and `next` continues after it.
    #[schema(max_items = 100)]
    pub results: Vec<SampleView>,
}

/// The range of history asked for (an extractor); a bound that is not a date/time is a 400.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TelemetryQuery {
    /// Measured at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
    /// Measured before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
}

impl<S: Send + Sync> FromRequestParts<S> for TelemetryQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let query = QueryPairs::from_request_parts(parts, state).await?;
        let mut errors = Map::new();
        let mut bound = |name: &str| match query.get(name).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Timestamp::parse_lenient(v).or_else(|| {
                errors.insert(name.to_owned(), json!(["Enter a valid date/time."]));
                None
            }),
        };
        let (since, until) = (bound("since"), bound("until"));
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(TelemetryQuery { since, until })
    }
}

fn view(s: TelemetrySample) -> SampleView {
    SampleView {
        timestamp: s.timestamp.to_string(),
        received: s.received.to_string(),
        metrics: s.metrics,
    }
}

/// A device's telemetry: the latest sample and a page of history, newest first. A page holds
/// at most `page_size` samples and at most about 1 MiB of them (`--telemetry-page-max-kib`),
/// always at least one; follow `next` for the rest.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/telemetry/", tag = "devices",
    params(PathId, TelemetryQuery, PageQuery), responses((status = 200, body = TelemetryView)),
    security(("bearer" = [])))]
async fn get_telemetry(
    State(state): State<AppState>,
    auth: Authorized<Devices, View>,
    PathId(id): PathId,
    range: TelemetryQuery,
    paging: Paging,
) -> Result<Json<TelemetryView>, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    let range = TelemetryRange {
        since: range.since,
        until: range.until,
    };
    let request = HistoryPageRequest {
        number: paging.number(),
        size: paging.size(),
        max_bytes: state.config().telemetry_page_max_bytes,
    };
    let (latest, page) = state
        .store()
        .run(move |db| {
            // Two reads: the page first, so the latest sample is never older than the
            // page's newest (the latest is only ever replaced by a newer one; a sample
            // stored between the reads shows as latest, not as a page without a latest).
            let page = db.telemetry_page(device.id, range, request)?;
            Ok((db.latest_telemetry(device.id)?, page))
        })
        .await?;
    let results = page.items.into_iter().map(view).collect();
    let Json(Paginated {
        count,
        next,
        previous,
        results,
    }) = paging.envelope_of(page.count, results, page.more)?;
    Ok(Json(TelemetryView {
        latest: latest.map(view),
        count,
        next,
        previous,
        results,
    }))
}
