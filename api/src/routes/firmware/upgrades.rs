//! `/api/v1/firmware-upgrader/upgrade-operation/`: one device's upgrade to one image — list,
//! detail, a device's operations, and cancelling before flashing begins.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use fleetmq_store::{
    BatchId, CancelOutcome, DeviceId, ImageId, OrgId, Page, Resource, UpgradeFilter, UpgradeId,
    UpgradeOperation, UpgradeStatus,
};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::QueryPairs;
use crate::pagination::{PageParams, Paginated};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, ErrorDetail};

/// The operation routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_operations))
        .routes(routes!(get_operation))
        // OpenWISP documents the detail without the trailing slash; both work.
        .route(
            "/api/v1/firmware-upgrader/upgrade-operation/{id}",
            axum::routing::get(get_operation),
        )
        .routes(routes!(cancel_operation))
        .routes(routes!(list_device_operations))
}

/// OpenWISP's answer when flashing began.
pub const TOO_LATE: &str = "Cannot cancel upgrade: firmware reflashing has already started";

/// An upgrade operation as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperationView {
    /// Identity.
    pub id: Uuid,
    /// The device upgraded.
    pub device: Uuid,
    /// The image installed.
    pub image: Uuid,
    /// Its batch, if any.
    pub batch: Option<Uuid>,
    /// `in-progress`, `success`, `failed`, `aborted` or `cancelled`.
    pub status: &'static str,
    /// What happened, one line per event.
    pub log: String,
    /// 0–100.
    pub progress: u8,
    /// The device reported a critical failure: it may need hands-on recovery.
    pub flagged: bool,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// The view of an operation.
pub fn view(op: UpgradeOperation) -> OperationView {
    OperationView {
        id: op.id.0,
        device: op.device.0,
        image: op.image.0,
        batch: op.batch.map(|b| b.0),
        status: op.status.as_str(),
        log: op.log,
        progress: op.progress,
        flagged: op.flagged,
        created: op.created.to_string(),
        modified: op.modified.to_string(),
    }
}

/// Filters of the operation list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)] // documents the query (Django's names); read from `QueryPairs`
pub struct OperationQuery {
    /// Organization id of the device.
    device__organization: Option<Uuid>,
    /// Organization slug of the device (also accepted as `device__organization_slug`).
    device__organization__slug: Option<String>,
    /// Device id.
    device: Option<Uuid>,
    /// Image id.
    image: Option<Uuid>,
    /// `in-progress`, `success`, `failed`, `aborted` or `cancelled`.
    status: Option<String>,
    /// Batch id.
    batch: Option<Uuid>,
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
}

/// Filters of a device's operation list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; read from `QueryPairs`
pub struct DeviceOperationQuery {
    /// `in-progress`, `success`, `failed`, `aborted` or `cancelled`.
    status: Option<String>,
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// A UUID filter value, or DRF's 400.
pub(crate) fn uuid_filter(query: &QueryPairs, name: &str) -> Result<Option<Uuid>, ApiError> {
    match query.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Uuid::parse_str(v)
            .map(Some)
            .map_err(|_| ApiError::field(name, format!("“{v}” is not a valid UUID."))),
    }
}

/// A choice filter value, or DRF's 400.
pub(crate) fn choice_filter<T: std::str::FromStr>(
    query: &QueryPairs,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match query.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|_| {
            ApiError::field(
                name,
                format!("Select a valid choice. {v} is not one of the available choices."),
            )
        }),
    }
}

fn empty_page<T>() -> Page<T> {
    Page {
        count: 0,
        items: Vec::new(),
    }
}

/// Lists upgrade operations of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/upgrade-operation/", tag = "upgrades",
    params(OperationQuery),
    responses((status = 200, body = Paginated<OperationView>), (status = 400, description = "Invalid filter"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_operations(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<OperationView>>, ApiError> {
    let scope = caller.authorize(Resource::UpgradeOperation, &method)?;
    let params = PageParams::from_query(&query)?;
    let mut filter = UpgradeFilter {
        organization: uuid_filter(&query, "device__organization")?.map(OrgId),
        device: uuid_filter(&query, "device")?.map(DeviceId),
        image: uuid_filter(&query, "image")?.map(ImageId),
        status: choice_filter::<UpgradeStatus>(&query, "status")?,
        batch: uuid_filter(&query, "batch")?.map(BatchId),
    };
    let slug = query
        .get("device__organization__slug")
        .or_else(|| query.get("device__organization_slug"))
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let mut nothing = false;
    if let Some(slug) = slug {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org {
            Some(org) if filter.organization.is_none_or(|o| o == org.id) => {
                filter.organization = Some(org.id);
            }
            // An unknown organization (or two that disagree) matches nothing.
            _ => nothing = true,
        }
    }
    let page = if nothing {
        empty_page()
    } else {
        let request = params.request();
        state
            .store()
            .run(move |db| db.list_upgrades(&scope, &filter, request))
            .await?
    };
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

/// Loads an operation of an organization the caller manages.
pub(crate) async fn visible_operation(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<UpgradeOperation, ApiError> {
    state
        .store()
        .run(move |db| db.upgrade(UpgradeId(id)))
        .await?
        .filter(|op| caller.manages(op.organization))
        .ok_or(ApiError::NotFound)
}

/// Shows one upgrade operation (also without the trailing slash).
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/upgrade-operation/{id}/", tag = "upgrades",
    params(("id" = Uuid, Path, description = "Operation id")),
    responses((status = 200, body = OperationView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_operation(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    caller.authorize(Resource::UpgradeOperation, &method)?;
    let op = visible_operation(&state, &caller, parse_id(&id)?).await?;
    Ok(Json(view(op)))
}

/// Cancels an operation that has not begun flashing (progress below 65). Flashing began or
/// the operation ended → 409 `{"error": ...}`.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/upgrade-operation/{id}/cancel/", tag = "upgrades",
    params(("id" = Uuid, Path, description = "Operation id")),
    responses((status = 200, body = OperationView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail),
        (status = 409, description = "{\"error\": \"Cannot cancel upgrade: firmware reflashing has already started\"}")),
    security(("bearer" = [])))]
async fn cancel_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    caller.authorize(Resource::UpgradeOperation, &Method::PATCH)?;
    let op = visible_operation(&state, &caller, parse_id(&id)?).await?;
    let outcome = state
        .store()
        .run(move |db| db.cancel_upgrade(op.id))
        .await?;
    match outcome {
        CancelOutcome::Cancelled(op) => {
            state.hooks().upgrades_cancelled(vec![op.clone()]);
            Ok(Json(view(op)))
        }
        CancelOutcome::TooLate(op) if op.status == UpgradeStatus::InProgress => {
            Err(ApiError::Conflict(TOO_LATE.to_owned()))
        }
        CancelOutcome::TooLate(op) => Err(ApiError::Conflict(format!(
            "Cannot cancel upgrade: the operation has already ended ({}).",
            op.status
        ))),
    }
}

/// Lists one device's upgrade operations, newest first.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/device/{device_id}/upgrade-operation/", tag = "upgrades",
    params(("device_id" = Uuid, Path, description = "Device id"), DeviceOperationQuery),
    responses((status = 200, body = Paginated<OperationView>), (status = 400, description = "Invalid filter"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_device_operations(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
    Path(device): Path<String>,
) -> Result<Json<Paginated<OperationView>>, ApiError> {
    let scope = caller.authorize(Resource::UpgradeOperation, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let params = PageParams::from_query(&query)?;
    let filter = UpgradeFilter {
        device: Some(device.id),
        status: choice_filter::<UpgradeStatus>(&query, "status")?,
        ..UpgradeFilter::default()
    };
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_upgrades(&scope, &filter, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}
