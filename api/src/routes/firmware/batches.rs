//! Mass upgrades: `/api/v1/firmware-upgrader/build/{id}/upgrade/` (dry run and start) and
//! `/api/v1/firmware-upgrader/batch-upgrade-operation/` (list, detail, cancel).

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{
    AbortThreshold, Backend, Batch, BatchFilter, BatchId, BatchStatus, Build, BuildFilter, BuildId,
    Device, DeviceFilter, DeviceFirmware, DeviceId, Image, ImageId, LocationId, OrgId, PageRequest,
    Resource, Rollout, Scope, StatusCounts, Timestamp, UpgradeFilter, UpgradeOperation,
    UpgradePlan,
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
            max_parallel: batch.rollout.max_parallel,
            rate_per_minute: batch.rollout.rate_per_minute,
            waves: batch.rollout.waves.clone(),
            abort_threshold: batch
                .rollout
                .abort_threshold
                .map(|t| json!({"failure_rate": t.failure_rate, "min_sample": t.min_sample})),
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

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: u64::MAX,
};

/// Which devices a mass upgrade of a build reaches, and with which image.
struct Plan {
    /// Devices with firmware of the build's category (another build), the image to install.
    firmwares: Vec<(Device, DeviceFirmware, Image)>,
    /// Devices without firmware whose model fits an image of the build, the image to install.
    devices: Vec<(Device, Image)>,
}

/// How a plan is narrowed.
struct Narrowing {
    group: Option<Uuid>,
    location: Option<LocationId>,
}

/// Computes a plan in one blocking call (no per-device round trips to the API).
fn plan(
    db: &dyn Backend,
    build: &Build,
    scope: &Scope,
    narrowing: &Narrowing,
) -> fleetmq_store::Result<Result<Plan, ApiError>> {
    let images = db.list_images(build.id, None, ALL)?.items;
    let by_kind: HashMap<&str, &Image> = images.iter().map(|i| (i.kind.as_str(), i)).collect();
    let types = db.image_types()?;
    // The build's images that fit each board, in a stable order.
    let mut kinds: Vec<&Image> = images.iter().collect();
    kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
    let image_for_model = |model: &str| -> Option<Image> {
        kinds
            .iter()
            .find(|i| types.iter().any(|t| t.name == i.kind && t.fits(model)))
            .map(|i| (*i).clone())
    };
    let siblings: HashSet<BuildId> = db
        .list_builds(
            &Scope::All,
            &BuildFilter {
                category: Some(build.fields.category),
                ..BuildFilter::default()
            },
            ALL,
        )?
        .items
        .into_iter()
        .map(|b| b.id)
        .filter(|id| *id != build.id)
        .collect();
    let mut devices = db.list_devices(scope, &DeviceFilter::default(), ALL)?.items;
    if let Some(group) = narrowing.group {
        if !devices.iter().any(|d| d.fields.group == Some(group)) {
            return Ok(Err(ApiError::field(
                "group",
                does_not_exist(&group.to_string()),
            )));
        }
        devices.retain(|d| d.fields.group == Some(group));
    }
    if let Some(location) = narrowing.location {
        let at: HashSet<DeviceId> = db.location_devices(location)?.into_iter().collect();
        devices.retain(|d| at.contains(&d.id));
    }
    let firmwares: HashMap<DeviceId, DeviceFirmware> = db
        .device_firmwares()?
        .into_iter()
        .map(|f| (f.device, f))
        .collect();
    let mut image_cache: HashMap<ImageId, Option<Image>> = HashMap::new();
    let mut plan = Plan {
        firmwares: Vec::new(),
        devices: Vec::new(),
    };
    for device in devices {
        if device.is_deactivated {
            continue;
        }
        match firmwares.get(&device.id) {
            Some(firmware) => {
                let current = match image_cache.get(&firmware.image) {
                    Some(found) => found.clone(),
                    None => {
                        let found = db.image(firmware.image)?;
                        image_cache.insert(firmware.image, found.clone());
                        found
                    }
                };
                let Some(current) = current else { continue };
                if !siblings.contains(&current.build) {
                    continue;
                }
                if let Some(target) = by_kind.get(current.kind.as_str()) {
                    let target = (*target).clone();
                    plan.firmwares.push((device, firmware.clone(), target));
                }
            }
            None => {
                if let Some(target) = image_for_model(&device.fields.model) {
                    plan.devices.push((device, target));
                }
            }
        }
    }
    Ok(Ok(plan))
}

/// Reads a positive integer field (DRF's IntegerField with `min_value=1`).
fn positive(form: &mut Form, field: &str, value: Value) -> Option<u32> {
    let n = match &value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        None => {
            form.error(field, "A valid integer is required.");
            None
        }
        Some(n) if n < 1 => {
            form.error(field, "Ensure this value is greater than or equal to 1.");
            None
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                form.error(
                    field,
                    "Ensure this value is less than or equal to 4294967295.",
                );
                None
            }
        },
    }
}

/// Reads the rollout fields of a batch body.
fn read_rollout(form: &mut Form) -> Rollout {
    let mut rollout = Rollout::default();
    for field in ["max_parallel", "rate_per_minute"] {
        if let Field::Set(v) = form.raw(field, false) {
            if v.is_null() {
                continue;
            }
            let n = positive(form, field, v);
            if field == "max_parallel" {
                rollout.max_parallel = n;
            } else {
                rollout.rate_per_minute = n;
            }
        }
    }
    match form.raw("waves", false) {
        Field::Set(Value::Null) => {}
        Field::Set(Value::Array(items)) => {
            let mut waves = Vec::new();
            let mut ok = true;
            for item in &items {
                match item.as_u64().filter(|n| (1..=100).contains(n)) {
                    Some(n) => waves.push(n as u8),
                    None => {
                        form.error("waves", "Each wave must be an integer from 1 to 100.");
                        ok = false;
                        break;
                    }
                }
            }
            if ok && !waves.is_empty() {
                if waves.windows(2).any(|w| w[0] >= w[1]) {
                    form.error("waves", "Waves must be in strictly ascending order.");
                } else if waves.last() != Some(&100) {
                    form.error("waves", "The last wave must be 100.");
                } else {
                    rollout.waves = waves;
                }
            }
        }
        Field::Set(other) => form.error(
            "waves",
            format!(
                "Expected a list of items but got type \"{}\".",
                kind(&other)
            ),
        ),
        _ => {}
    }
    match form.raw("abort_threshold", false) {
        Field::Set(Value::Null) => {}
        Field::Set(Value::Object(map)) => {
            let mut nested = Form::new(map, Mode::Full);
            let failure_rate = match nested.raw("failure_rate", true) {
                Field::Set(v) => match v.as_f64() {
                    Some(r) if r > 0.0 && r <= 1.0 => Some(r),
                    Some(_) => {
                        nested.error(
                            "failure_rate",
                            "Ensure this value is greater than 0 and at most 1.",
                        );
                        None
                    }
                    None => {
                        nested.error("failure_rate", "A valid number is required.");
                        None
                    }
                },
                _ => None,
            };
            let min_sample = match nested.raw("min_sample", true) {
                Field::Set(v) => positive(&mut nested, "min_sample", v),
                _ => None,
            };
            let errors = nested.into_errors();
            if errors.is_empty() {
                if let (Some(failure_rate), Some(min_sample)) = (failure_rate, min_sample) {
                    rollout.abort_threshold = Some(AbortThreshold {
                        failure_rate,
                        min_sample,
                    });
                }
            } else {
                form.nested_errors("abort_threshold", errors);
            }
        }
        Field::Set(other) => form.error(
            "abort_threshold",
            format!(
                "Expected a dictionary of items but got type \"{}\".",
                kind(&other)
            ),
        ),
        _ => {}
    }
    rollout
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

/// The build to upgrade to, and the devices in reach: its organization's, or for a shared
/// build every organization the caller manages.
async fn build_and_scope(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(Build, Option<OrgId>, Scope), ApiError> {
    let build = visible_build(state, caller, id).await?;
    let category = visible_category(state, caller, build.fields.category)
        .await?
        .ok_or(ApiError::NotFound)?;
    let org = category.fields.organization;
    let scope = match org {
        Some(org) => Scope::Orgs(vec![org]),
        None => caller.scope()?,
    };
    Ok((build, org, scope))
}

async fn run_plan(
    state: &AppState,
    build: &Build,
    scope: Scope,
    narrowing: Narrowing,
) -> Result<Plan, ApiError> {
    let build = build.clone();
    state
        .store()
        .run(move |db| plan(db, &build, &scope, &narrowing))
        .await?
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
    caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let (build, _, scope) = build_and_scope(&state, &caller, parse_id(&id)?).await?;
    let mut form = Form::new(Map::new(), Mode::Partial);
    let group = query_uuid(&mut form, &query, "group");
    let location = query_uuid(&mut form, &query, "location");
    let narrowing = read_narrowing(&state, &caller, &mut form, group, location).await?;
    form.finish()?;
    let plan = run_plan(&state, &build, scope, narrowing).await?;
    let device_firmwares: Vec<Value> = plan
        .firmwares
        .iter()
        .map(|(device, firmware, target)| {
            json!({
                "device": device.id,
                "device_name": device.fields.name.as_str(),
                "image": firmware.image,
                "installed": firmware.installed,
                "created": firmware.created.to_string(),
                "modified": firmware.modified.to_string(),
                "target_image": target.id,
            })
        })
        .collect();
    let devices: Vec<Value> = plan
        .devices
        .iter()
        .map(|(device, target)| {
            json!({
                "id": device.id,
                "name": device.fields.name.as_str(),
                "organization": device.fields.organization,
                "model": device.fields.model,
                "os": device.fields.os,
                "target_image": target.id,
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
    caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let (build, org, scope) = build_and_scope(&state, &caller, parse_id(&id)?).await?;
    caller.require_shared_write(
        org,
        "Only superusers can start mass upgrades of shared builds.",
    )?;
    let mut form = Form::new(body, Mode::Partial);
    let upgrade_all = form.boolean("upgrade_all").set().unwrap_or(false);
    let group = form.reference("group", false, true).set().flatten();
    let location = form.reference("location", false, true).set().flatten();
    let rollout = read_rollout(&mut form);
    let narrowing = read_narrowing(&state, &caller, &mut form, group, location).await?;
    form.finish()?;
    let plan = run_plan(&state, &build, scope, narrowing).await?;
    let mut targets: Vec<(Device, Image)> = plan
        .firmwares
        .into_iter()
        .map(|(device, _, image)| (device, image))
        .collect();
    if upgrade_all {
        targets.extend(plan.devices);
    }
    if targets.is_empty() {
        return Err(ApiError::BadRequestError(NOTHING_MATCHES.to_owned()));
    }
    let now = Timestamp::now();
    let batch = Batch {
        id: BatchId::new(),
        build: build.id,
        organization: org,
        rollout: rollout.clone(),
        counts: StatusCounts::default(),
        note: String::new(),
        created: now,
        modified: now,
    };
    let total = targets.len();
    let operations: Vec<UpgradeOperation> = targets
        .iter()
        .enumerate()
        .map(|(index, (device, image))| {
            UpgradeOperation::new(
                device,
                image,
                &build,
                Some(batch.id),
                rollout.wave_of(index, total),
            )
        })
        .collect();
    let id = batch.id;
    let started = state
        .store()
        .run(move |db| {
            db.start_upgrades(UpgradePlan {
                batch: Some(batch),
                operations,
            })
        })
        .await?;
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
    let scope = caller.authorize(Resource::BatchUpgradeOperation, &method)?;
    let params = PageParams::from_query(&query)?;
    let filter = BatchFilter {
        build: uuid_filter(&query, "build")?.map(BuildId),
        status: choice_filter::<BatchStatus>(&query, "status")?,
    };
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
