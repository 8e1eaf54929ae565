//! Mass upgrades: `/api/v1/firmware-upgrader/build/{id}/upgrade/` (dry run and start) and
//! `/api/v1/firmware-upgrader/batch-upgrade-operation/` (list, detail, cancel).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::batch::{start_batch as start_mass_upgrade, targets};
use fleetmq_store::{
    AbortThreshold, Batch, BatchError, BatchFilter, BatchId, BatchStatus, BuildId, DeviceTarget,
    FailureRate, FirmwareTarget, Limit, LocationId, MassUpgrade, Narrowing, Page, PageRequest,
    Resource, Rollout, RolloutError, Scope, StatusCounts, UpgradeFilter, Waves,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::builds::visible_build;
use super::categories::visible_category;
use super::upgrades::{OperationView, choice_filter, uuid_filter, view as operation_view};
use crate::auth::Caller;
use crate::extract::{JsonObject, QueryPairs, kind};
use crate::form::{Field, Form, Mode, does_not_exist};
use crate::pagination::{PageParams, Paginated};
use crate::{ApiError, AppState, ErrorDetail};

/// The batch routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dry_run, start_batch))
        .routes(routes!(list_batches))
        .routes(routes!(get_batch))
        .routes(routes!(cancel_batch))
}

/// OpenWISP's answer when a mass upgrade would upgrade nothing.
pub const NOTHING_MATCHES: &str =
    "No devices found matching the specified filters. Please adjust the filters and try again.";
/// Operations listed in a batch's detail at most.
pub const DETAIL_OPERATIONS: u64 = 1000;

/// Operations per status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCountsView {
    /// Still running or waiting.
    #[serde(rename = "in-progress")]
    pub in_progress: u32,
    /// Succeeded.
    pub success: u32,
    /// Failed.
    pub failed: u32,
    /// Aborted by the system.
    pub aborted: u32,
    /// Cancelled by a user.
    pub cancelled: u32,
}

/// How the batch is rolled out.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutView {
    /// Devices upgrading at the same time, at most.
    pub max_parallel: Option<u32>,
    /// Operations started per minute, at most.
    pub rate_per_minute: Option<u32>,
    /// Cumulative percentages per wave (empty: one wave).
    pub waves: Vec<u8>,
    /// Stop the batch past this failure rate.
    #[schema(value_type = Option<Object>)]
    pub abort_threshold: Option<Value>,
}

/// A batch as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchView {
    /// Identity.
    pub id: Uuid,
    /// The build installed.
    pub build: Uuid,
    /// `idle`, `in-progress`, `success`, `failed` or `cancelled`.
    pub status: &'static str,
    /// "N out of M": finished operations out of all.
    pub progress_report: String,
    /// Operations in the batch.
    pub total: u32,
    /// Operations per status.
    pub status_counts: StatusCountsView,
    /// Percent of operations that succeeded.
    pub success_rate: u32,
    /// Percent that failed.
    pub failed_rate: u32,
    /// Percent aborted.
    pub aborted_rate: u32,
    /// Percent cancelled.
    pub cancelled_rate: u32,
    /// Rollout limits.
    pub rollout: RolloutView,
    /// Why the batch stopped early, if it did.
    pub note: String,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
    /// Detail only: the operations, newest first (at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_operations: Option<Vec<OperationView>>,
    /// Detail only: how many operations the batch has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_operations_count: Option<u64>,
}

/// Filters of the batch list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; read from `QueryPairs`
pub struct BatchQuery {
    /// Build id.
    build: Option<Uuid>,
    /// `idle`, `in-progress`, `success`, `failed` or `cancelled`.
    status: Option<String>,
    /// Organization slug (an unknown or foreign one matches nothing).
    organization: Option<String>,
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
}

/// Narrowing of a dry run.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; read from `QueryPairs`
pub struct DryRunQuery {
    /// Only devices of this group.
    group: Option<Uuid>,
    /// Only devices at this location.
    location: Option<Uuid>,
}

/// What a client sends to start a batch.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct BatchWrite {
    /// Also upgrade devices without firmware whose model fits an image of the build.
    upgrade_all: Option<bool>,
    /// Only devices of this group.
    group: Option<Uuid>,
    /// Only devices at this location.
    location: Option<Uuid>,
    /// Devices upgrading at the same time, at most (≥ 1).
    max_parallel: Option<u32>,
    /// Operations started per minute, at most (≥ 1).
    rate_per_minute: Option<u32>,
    /// Cumulative percentages per wave: ascending, 1–100, the last 100 (e.g. `[1, 10, 100]`).
    waves: Option<Vec<u8>>,
    /// `{"failure_rate": 0 < r ≤ 1, "min_sample": n ≥ 1}`: stop the batch past this rate.
    #[schema(value_type = Option<Object>)]
    abort_threshold: Option<Value>,
}

/// The answer to starting a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreated {
    /// The new batch.
    pub batch: Uuid,
}

fn rate(count: u32, total: u32) -> u32 {
    if total == 0 {
        0
    } else {
        ((u64::from(count) * 100 + u64::from(total) / 2) / u64::from(total)) as u32
    }
}

fn view(batch: Batch) -> BatchView {
    let c: StatusCounts = batch.counts;
    let total = c.total();
    BatchView {
        id: batch.id.0,
        build: batch.build.0,
        status: batch.status().as_str(),
        progress_report: format!("{} out of {}", c.finished(), total),
        total,
        status_counts: StatusCountsView {
            in_progress: c.in_progress,
            success: c.success,
            failed: c.failed,
            aborted: c.aborted,
            cancelled: c.cancelled,
        },
        success_rate: rate(c.success, total),
        failed_rate: rate(c.failed, total),
        aborted_rate: rate(c.aborted, total),
        cancelled_rate: rate(c.cancelled, total),
        rollout: RolloutView {
            max_parallel: batch.rollout.max_parallel(),
            rate_per_minute: batch.rollout.rate_per_minute(),
            waves: batch.rollout.waves().to_vec(),
            abort_threshold: batch
                .rollout
                .abort_threshold()
                .map(|t| json!({"failure_rate": t.failure_rate(), "min_sample": t.min_sample()})),
        },
        note: batch.note,
        created: batch.created.to_string(),
        modified: batch.modified.to_string(),
        upgrade_operations: None,
        upgrade_operations_count: None,
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// The API's answer to a mass upgrade the domain refused.
fn batch_error(error: BatchError) -> ApiError {
    match error {
        BatchError::UnknownGroup(group) => {
            ApiError::field("group", does_not_exist(&group.to_string()))
        }
        BatchError::NothingMatches => ApiError::BadRequestError(NOTHING_MATCHES.to_owned()),
        BatchError::Store(e) => e.into(),
    }
}

/// Reads a positive integer field (DRF's IntegerField with `min_value=1`).
fn limit(form: &mut Form, field: &str, value: Value) -> Option<Limit> {
    let n = match &value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let Some(n) = n else {
        form.error(field, "A valid integer is required.");
        return None;
    };
    Limit::try_from(n)
        .map_err(|e| form.error(field, e.to_string()))
        .ok()
}

/// Reads an optional positive integer field (absent or null: no limit).
fn optional_limit(form: &mut Form, field: &str) -> Option<Limit> {
    match form.raw(field, false) {
        Field::Set(v) if !v.is_null() => limit(form, field, v),
        _ => None,
    }
}

/// Reads the waves of a batch body.
fn read_waves(form: &mut Form) -> Waves {
    match form.raw("waves", false) {
        Field::Set(Value::Array(items)) => {
            let percents: Option<Vec<u64>> = items.iter().map(Value::as_u64).collect();
            percents
                .ok_or(RolloutError::WaveOutOfRange)
                .and_then(Waves::try_from)
                .map_err(|e| form.error("waves", e.to_string()))
                .unwrap_or_default()
        }
        Field::Set(Value::Null) => Waves::default(),
        Field::Set(other) => {
            form.error(
                "waves",
                format!(
                    "Expected a list of items but got type \"{}\".",
                    kind(&other)
                ),
            );
            Waves::default()
        }
        _ => Waves::default(),
    }
}

/// Reads the abort threshold of a batch body; its field errors nest under `abort_threshold`.
fn read_abort_threshold(form: &mut Form) -> Option<AbortThreshold> {
    match form.raw("abort_threshold", false) {
        Field::Set(Value::Object(map)) => {
            let mut nested = Form::new(map, Mode::Full);
            let failure_rate = match nested.raw("failure_rate", true) {
                Field::Set(v) => match v.as_f64() {
                    Some(r) => FailureRate::try_from(r)
                        .map_err(|e| nested.error("failure_rate", e.to_string()))
                        .ok(),
                    None => {
                        nested.error("failure_rate", "A valid number is required.");
                        None
                    }
                },
                _ => None,
            };
            let min_sample = match nested.raw("min_sample", true) {
                Field::Set(v) => limit(&mut nested, "min_sample", v),
                _ => None,
            };
            let errors = nested.into_errors();
            if !errors.is_empty() {
                form.nested_errors("abort_threshold", errors);
                return None;
            }
            Some(AbortThreshold::new(failure_rate?, min_sample?))
        }
        Field::Set(Value::Null) => None,
        Field::Set(other) => {
            form.error(
                "abort_threshold",
                format!(
                    "Expected a dictionary of items but got type \"{}\".",
                    kind(&other)
                ),
            );
            None
        }
        _ => None,
    }
}

/// Reads the rollout fields of a batch body.
fn read_rollout(form: &mut Form) -> Rollout {
    let max_parallel = optional_limit(form, "max_parallel");
    let rate_per_minute = optional_limit(form, "rate_per_minute");
    let waves = read_waves(form);
    let abort_threshold = read_abort_threshold(form);
    Rollout::new(max_parallel, rate_per_minute, waves, abort_threshold)
}

/// Checks the group and location narrowing; unknown or invisible ones are field errors.
async fn read_narrowing(
    state: &AppState,
    caller: &Caller,
    form: &mut Form,
    group: Option<Uuid>,
    location: Option<Uuid>,
) -> Result<Narrowing, ApiError> {
    let mut narrowing = Narrowing {
        group,
        location: None,
    };
    if let Some(id) = location {
        let found = state
            .store()
            .run(move |db| db.location(LocationId(id)))
            .await?
            .filter(|l| caller.manages(l.organization));
        match found {
            Some(l) => narrowing.location = Some(l.id),
            None => form.error("location", does_not_exist(&id.to_string())),
        }
    }
    Ok(narrowing)
}

/// The build to upgrade to and the devices in reach: its organization's, or for a shared
/// build every organization the caller manages (`scope`).
async fn mass_upgrade(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    scope: Scope,
) -> Result<MassUpgrade, ApiError> {
    let build = visible_build(state, caller, id).await?;
    let category = visible_category(state, caller, build.fields.category)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(MassUpgrade::new(build, category.fields.organization, scope))
}

fn query_uuid(form: &mut Form, query: &QueryPairs, name: &str) -> Option<Uuid> {
    let v = query.get(name).filter(|v| !v.is_empty())?;
    match Uuid::parse_str(v) {
        Ok(id) => Some(id),
        Err(_) => {
            form.error(name, does_not_exist(v));
            None
        }
    }
}

/// Dry run: the device firmwares and the firmware-less devices a mass upgrade of the build
/// would reach (devices are upgraded only with `upgrade_all`).
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{id}/upgrade/", tag = "upgrades",
    params(("id" = Uuid, Path, description = "Build id"), DryRunQuery),
    responses((status = 200, description = "{\"device_firmwares\": [...], \"devices\": [...]}"),
        (status = 400, description = "Unknown group or location"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    query: QueryPairs,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let scope = caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let upgrade = mass_upgrade(&state, &caller, parse_id(&id)?, scope).await?;
    let mut form = Form::new(Map::new(), Mode::Partial);
    let group = query_uuid(&mut form, &query, "group");
    let location = query_uuid(&mut form, &query, "location");
    let narrowing = read_narrowing(&state, &caller, &mut form, group, location).await?;
    form.finish()?;
    let targets = state
        .store()
        .run(move |db| Ok(targets(db, &upgrade, &narrowing)))
        .await?
        .map_err(batch_error)?;
    let device_firmwares: Vec<Value> = targets
        .firmwares
        .iter()
        .map(
            |FirmwareTarget {
                 device,
                 firmware,
                 image,
             }| {
                json!({
                    "device": device.id,
                    "device_name": device.fields.name.as_str(),
                    "image": firmware.image,
                    "installed": firmware.installed,
                    "created": firmware.created.to_string(),
                    "modified": firmware.modified.to_string(),
                    "target_image": image.id,
                })
            },
        )
        .collect();
    let devices: Vec<Value> = targets
        .devices
        .iter()
        .map(|DeviceTarget { device, image }| {
            json!({
                "id": device.id,
                "name": device.fields.name.as_str(),
                "organization": device.fields.organization,
                "model": device.fields.model,
                "os": device.fields.os,
                "target_image": image.id,
            })
        })
        .collect();
    Ok(Json(
        json!({"device_firmwares": device_firmwares, "devices": devices}),
    ))
}

/// Starts a mass upgrade of the build: every device firmware of its category on another
/// build, plus (with `upgrade_all`) devices without firmware whose model fits one of its
/// images; optionally narrowed to a group or location and rolled out in limits and waves.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/build/{id}/upgrade/", tag = "upgrades",
    params(("id" = Uuid, Path, description = "Build id")), request_body = BatchWrite,
    responses((status = 201, body = BatchCreated),
        (status = 400, description = "Field errors, or {\"error\": \"No devices found matching the specified filters. ...\"}"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn start_batch(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    let scope = caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let upgrade = mass_upgrade(&state, &caller, parse_id(&id)?, scope).await?;
    caller.require_shared_write(
        upgrade.organization,
        "Only superusers can start mass upgrades of shared builds.",
    )?;
    let mut form = Form::new(body, Mode::Partial);
    let upgrade_all = form.boolean("upgrade_all").set().unwrap_or(false);
    let group = form.reference("group", false, true).set().flatten();
    let location = form.reference("location", false, true).set().flatten();
    let rollout = read_rollout(&mut form);
    let narrowing = read_narrowing(&state, &caller, &mut form, group, location).await?;
    form.finish()?;
    let (id, started) = state
        .store()
        .run(move |db| {
            Ok(start_mass_upgrade(
                db,
                &upgrade,
                &narrowing,
                upgrade_all,
                rollout,
            ))
        })
        .await?
        .map_err(batch_error)?;
    state.hooks().upgrades_started(started);
    Ok((StatusCode::CREATED, Json(BatchCreated { batch: id.0 })))
}

/// Lists batches of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/", tag = "upgrades",
    params(BatchQuery),
    responses((status = 200, body = Paginated<BatchView>), (status = 400, description = "Invalid filter"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<BatchView>>, ApiError> {
    let mut scope = caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let params = PageParams::from_query(&query)?;
    let filter = BatchFilter {
        build: uuid_filter(&query, "build")?.map(BuildId),
        status: choice_filter::<BatchStatus>(&query, "status")?,
    };
    if let Some(slug) = query.get("organization").filter(|v| !v.is_empty()) {
        let slug = slug.to_owned();
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| scope.contains(o.id) && caller.manages(o.id)) {
            Some(org) => scope = Scope::Orgs(vec![org.id]),
            // An unknown or foreign organization matches nothing.
            None => {
                let empty = Page::<Batch> {
                    count: 0,
                    items: Vec::new(),
                };
                return Ok(Json(params.envelope(empty, &uri, &headers, &query, view)?));
            }
        }
    }
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_batches(&scope, &filter, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

async fn visible_batch(state: &AppState, caller: &Caller, id: Uuid) -> Result<Batch, ApiError> {
    state
        .store()
        .run(move |db| db.batch(BatchId(id)))
        .await?
        .filter(|b| caller.is_superuser() || b.organization.is_some_and(|o| caller.manages(o)))
        .ok_or(ApiError::NotFound)
}

async fn detail(state: &AppState, batch: Batch) -> Result<BatchView, ApiError> {
    let filter = UpgradeFilter {
        batch: Some(batch.id),
        ..UpgradeFilter::default()
    };
    let page = state
        .store()
        .run(move |db| {
            db.list_upgrades(
                &Scope::All,
                &filter,
                PageRequest {
                    offset: 0,
                    limit: DETAIL_OPERATIONS,
                },
            )
        })
        .await?;
    let mut view = view(batch);
    view.upgrade_operations = Some(page.items.into_iter().map(operation_view).collect());
    view.upgrade_operations_count = Some(page.count);
    Ok(view)
}

/// Shows a batch with its counts, rates and (up to 1000 of) its operations.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/", tag = "upgrades",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses((status = 200, body = BatchView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let batch = visible_batch(&state, &caller, parse_id(&id)?).await?;
    Ok(Json(detail(&state, batch).await?))
}

/// Cancels every operation of the batch that has not begun flashing.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/cancel/", tag = "upgrades",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses((status = 200, body = BatchView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn cancel_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    caller.authorize(Resource::BatchUpgradeOperation, &Method::PATCH)?;
    let batch = visible_batch(&state, &caller, parse_id(&id)?).await?;
    let (batch, cancelled) = state
        .store()
        .run(move |db| db.cancel_batch(batch.id))
        .await?;
    if !cancelled.is_empty() {
        state.hooks().upgrades_cancelled(cancelled);
    }
    Ok(Json(detail(&state, batch).await?))
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_are_rounded_percentages_of_the_total() {
        assert_eq!(rate(0, 0), 0);
        assert_eq!(rate(1, 3), 33);
        assert_eq!(rate(2, 3), 67);
        assert_eq!(rate(3, 3), 100);
    }
}
