//! `/api/v1/firmware-upgrader/upgrade-operation/`: one device's upgrade to one image — list,
//! detail, a device's operations, and cancelling before flashing begins.

use axum::Json;
use axum::extract::State;
use fleetmq_store::{
    BatchId, CancelOutcome, DeviceId, ImageId, OrgId, UpgradeFilter, UpgradeId, UpgradeOperation,
    UpgradeStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Authorized, Caller, Cancel, UpgradeOperations, View};
use crate::body::text_field;
use crate::extract::PathId;
use crate::filters::{Filters, UuidFilter, choice_schema, invalid_choice};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState};

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
    /// The rollout wave of its batch it belongs to (0 = the first; 0 outside a batch). A
    /// fleetmq field: OpenWISP has no waves.
    pub wave: u32,
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
        wave: op.wave,
        created: op.created.to_string(),
        modified: op.modified.to_string(),
    }
}

text_field!(
    /// An upgrade status (filter): `in-progress`, `success`, `failed`, `aborted` or
    /// `cancelled`.
    StatusFilter(UpgradeStatus),
    |s: &str| s.parse::<UpgradeStatus>().map_err(|()| invalid_choice(s)),
    choice_schema(UpgradeStatus::ALL.map(UpgradeStatus::as_str)),
);

/// Filters of the operation list (django-filter's names).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationQuery {
    /// Organization id of the device.
    #[param(inline)]
    #[serde(rename = "device__organization")]
    device_organization: Option<UuidFilter>,
    /// Organization slug of the device (an unknown one matches nothing).
    #[serde(rename = "device__organization__slug")]
    device_organization_slug: Option<String>,
    /// The same as `device__organization__slug`, which wins when both are given.
    #[serde(rename = "device__organization_slug")]
    device_organization_slug_alias: Option<String>,
    /// Device id.
    #[param(inline)]
    device: Option<UuidFilter>,
    /// Image id.
    #[param(inline)]
    image: Option<UuidFilter>,
    /// Upgrade status.
    #[param(inline)]
    status: Option<StatusFilter>,
    /// Batch id.
    #[param(inline)]
    batch: Option<UuidFilter>,
}

/// Filters of a device's operation list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceOperationQuery {
    /// Upgrade status.
    #[param(inline)]
    status: Option<StatusFilter>,
}

/// Lists upgrade operations of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/upgrade-operation/", tag = "upgrades",
    params(PageQuery, OperationQuery), responses((status = 200, body = Paginated<OperationView>)),
    security(("bearer" = [])))]
async fn list_operations(
    State(state): State<AppState>,
    auth: Authorized<UpgradeOperations, View>,
    paging: Paging,
    Filters(query): Filters<OperationQuery>,
) -> Result<Json<Paginated<OperationView>>, ApiError> {
    let mut filter = UpgradeFilter {
        organization: query.device_organization.map(|f| OrgId(f.0)),
        device: query.device.map(|f| DeviceId(f.0)),
        image: query.image.map(|f| ImageId(f.0)),
        status: query.status.map(|f| f.0),
        batch: query.batch.map(|f| BatchId(f.0)),
    };
    if let Some(slug) = query
        .device_organization_slug
        .or(query.device_organization_slug_alias)
    {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org {
            Some(org) if filter.organization.is_none_or(|o| o == org.id) => {
                filter.organization = Some(org.id);
            }
            // An unknown organization (or two that disagree) matches nothing.
            _ => return paging.empty(),
        }
    }
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_upgrades(&auth.scope, &filter, request))
        .await?;
    paging.envelope(page, view)
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
    params(PathId), responses((status = 200, body = OperationView)), security(("bearer" = [])))]
async fn get_operation(
    State(state): State<AppState>,
    auth: Authorized<UpgradeOperations, View>,
    PathId(id): PathId,
) -> Result<Json<OperationView>, ApiError> {
    let op = visible_operation(&state, &auth.caller, id).await?;
    Ok(Json(view(op)))
}

/// Cancels an operation that has not begun flashing (progress below 65).
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/upgrade-operation/{id}/cancel/",
    tag = "upgrades", params(PathId),
    responses((status = 200, body = OperationView),
        (status = 409, description = "Flashing began or the operation ended: `{\"error\": \"Cannot cancel upgrade: firmware reflashing has already started\"}`")),
    security(("bearer" = [])))]
async fn cancel_operation(
    State(state): State<AppState>,
    auth: Authorized<UpgradeOperations, Cancel>,
    PathId(id): PathId,
) -> Result<Json<OperationView>, ApiError> {
    let op = visible_operation(&state, &auth.caller, id).await?;
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
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/device/{device_id}/upgrade-operation/",
    tag = "upgrades",
    params(("device_id" = Uuid, Path, description = "Device id"), PageQuery, DeviceOperationQuery),
    responses((status = 200, body = Paginated<OperationView>)), security(("bearer" = [])))]
async fn list_device_operations(
    State(state): State<AppState>,
    auth: Authorized<UpgradeOperations, View>,
    PathId(device): PathId,
    paging: Paging,
    query: Result<Filters<DeviceOperationQuery>, ApiError>,
) -> Result<Json<Paginated<OperationView>>, ApiError> {
    let device = visible_device(&state, &auth.caller, device).await?;
    // An unknown device is not found before its filters are judged.
    let Filters(query) = query?;
    let filter = UpgradeFilter {
        device: Some(device.id),
        status: query.status.map(|f| f.0),
        ..UpgradeFilter::default()
    };
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_upgrades(&auth.scope, &filter, request))
        .await?;
    paging.envelope(page, view)
}
