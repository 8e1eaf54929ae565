//! Mass upgrades: `/api/v1/firmware-upgrader/build/{id}/upgrade/` (dry run and start) and
//! `/api/v1/firmware-upgrader/batch-upgrade-operation/` (list, detail, cancel).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::batch::{start_batch as start_mass_upgrade, targets};
use fleetmq_store::{
    AbortThreshold, Batch, BatchError, BatchFilter, BatchId, BatchStatus, BuildId, DeviceTarget,
    FailureRate, FirmwareTarget, Limit, LocationId, MassUpgrade, Narrowing, PageRequest, Rollout,
    RolloutError, Scope, StatusCounts, UpgradeFilter, Waves,
};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::builds::visible_build;
use super::categories::visible_category;
use super::upgrades::{OperationView, view as operation_view};
use crate::auth::{Add, Authorized, BatchUpgrades, Caller, Cancel, View};
use crate::body::{Body, Nested, Pk, does_not_exist, text_field};
use crate::docs::FieldErrors;
use crate::extract::{PathId, kind};
use crate::filters::{Filters, UuidFilter, choice_schema, invalid_choice};
use crate::pagination::{PageQuery, Paginated, Paging};
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

impl From<StatusCounts> for StatusCountsView {
    fn from(c: StatusCounts) -> Self {
        Self {
            in_progress: c.in_progress,
            success: c.success,
            failed: c.failed,
            aborted: c.aborted,
            cancelled: c.cancelled,
        }
    }
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

text_field!(
    /// A batch status (filter): `idle`, `in-progress`, `success`, `failed` or `cancelled`.
    StatusFilter(BatchStatus),
    |s: &str| s.parse::<BatchStatus>().map_err(|()| invalid_choice(s)),
    choice_schema(BatchStatus::ALL.map(BatchStatus::as_str)),
);

/// Filters of the batch list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// Build id.
    #[param(inline)]
    build: Option<UuidFilter>,
    /// Batch status.
    #[param(inline)]
    status: Option<StatusFilter>,
    /// Organization slug (an unknown or foreign one matches nothing).
    organization: Option<String>,
}

text_field!(
    /// A reference given in the query: an id, else "object does not exist".
    PkFilter(Uuid),
    |s: &str| Uuid::parse_str(s).map_err(|_| does_not_exist(s)),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid
        ))),
);

/// Narrowing of a dry run.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRunQuery {
    /// Only devices of this group.
    #[param(inline)]
    group: Option<PkFilter>,
    /// Only devices at this location.
    #[param(inline)]
    location: Option<PkFilter>,
}

/// What a client sends to start a batch. Every field may be left out or be null.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchWrite {
    /// Also upgrade devices without firmware whose model fits an image of the build.
    #[schema(value_type = Option<bool>, nullable = false)]
    upgrade_all: Option<Flag>,
    /// Only devices of this group.
    #[schema(value_type = Option<Uuid>)]
    group: Option<Option<Reference>>,
    /// Only devices at this location.
    #[schema(value_type = Option<Uuid>)]
    location: Option<Option<Reference>>,
    /// Devices upgrading at the same time, at most (≥ 1).
    #[schema(value_type = Option<u32>, minimum = 1)]
    max_parallel: Option<Option<LimitField>>,
    /// Operations started per minute, at most (≥ 1).
    #[schema(value_type = Option<u32>, minimum = 1)]
    rate_per_minute: Option<Option<LimitField>>,
    /// Cumulative percentages per wave: ascending, 1–100, the last 100 (e.g. `[1, 10, 100]`).
    #[schema(value_type = Option<Vec<u8>>)]
    waves: Option<Option<WavesField>>,
    /// Stop the batch past a failure rate.
    #[schema(value_type = Option<AbortThresholdWrite>)]
    abort_threshold: Option<Option<ThresholdField>>,
}

/// The `abort_threshold` object of a batch body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AbortThresholdWrite {
    /// Failed share of finished operations at which the batch stops: 0 < r ≤ 1.
    #[schema(value_type = f64, required = true, nullable = false)]
    failure_rate: Option<RateField>,
    /// Finished operations needed before the rate counts (≥ 1).
    #[schema(value_type = u32, minimum = 1, required = true, nullable = false)]
    min_sample: Option<LimitField>,
}

/// A yes/no field as DRF's `BooleanField` reads it: also `"true"`/`"false"`, `"yes"`/`"no"`,
/// `"on"`/`"off"`, `1`/`0`.
#[derive(Debug, Clone, Copy)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let flag = match Value::deserialize(deserializer)? {
            Value::Bool(b) => Some(b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            Value::Number(n) => match n.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            _ => None,
        };
        flag.map(Flag)
            .ok_or_else(|| de::Error::custom("Must be a valid boolean."))
    }
}

/// A nullable reference: an id, or blank for none (as `null`).
#[derive(Debug, Clone, Copy)]
struct Reference(Option<Uuid>);

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) if s.is_empty() => Ok(Reference(None)),
            other => Pk::deserialize(other)
                .map(|Pk(id)| Reference(Some(id)))
                .map_err(de::Error::custom),
        }
    }
}

/// A positive count, given as a number or a numeric string (DRF's `IntegerField` with
/// `min_value=1`).
#[derive(Debug, Clone, Copy)]
struct LimitField(Limit);

impl<'de> Deserialize<'de> for LimitField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = match Value::deserialize(deserializer)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        let n = n.ok_or_else(|| de::Error::custom("A valid integer is required."))?;
        Limit::try_from(n)
            .map(LimitField)
            .map_err(de::Error::custom)
    }
}

/// A failure rate, given as a number.
#[derive(Debug, Clone, Copy)]
struct RateField(FailureRate);

impl<'de> Deserialize<'de> for RateField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rate = Value::deserialize(deserializer)?
            .as_f64()
            .ok_or_else(|| de::Error::custom("A valid number is required."))?;
        FailureRate::try_from(rate)
            .map(RateField)
            .map_err(de::Error::custom)
    }
}

/// The waves of a batch body.
#[derive(Debug, Clone)]
struct WavesField(Waves);

impl<'de> Deserialize<'de> for WavesField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Array(items) => items
                .iter()
                .map(Value::as_u64)
                .collect::<Option<Vec<u64>>>()
                .ok_or(RolloutError::WaveOutOfRange)
                .and_then(Waves::try_from)
                .map(WavesField)
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "Expected a list of items but got type \"{}\".",
                kind(&other)
            ))),
        }
    }
}

/// The abort threshold of a batch body; its field errors nest under `abort_threshold`.
#[derive(Debug, Clone, Copy)]
struct ThresholdField(AbortThreshold);

impl<'de> Deserialize<'de> for ThresholdField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            object @ Value::Object(_) => match Nested::<AbortThresholdWrite>::deserialize(object) {
                Ok(Nested(AbortThresholdWrite {
                    failure_rate: Some(RateField(rate)),
                    min_sample: Some(LimitField(sample)),
                })) => Ok(ThresholdField(AbortThreshold::new(rate, sample))),
                // Nested names every missing required field.
                Ok(_) => Err(de::Error::custom("Both fields are required.")),
                Err(e) => Err(de::Error::custom(e)),
            },
            other => Err(de::Error::custom(format!(
                "Expected a dictionary of items but got type \"{}\".",
                kind(&other)
            ))),
        }
    }
}

impl BatchWrite {
    /// Whether devices without firmware are upgraded too, and the rollout.
    fn rollout(&self) -> (bool, Rollout) {
        let upgrade_all = self.upgrade_all.is_some_and(|f| f.0);
        let limit = |f: Option<Option<LimitField>>| f.flatten().map(|l| l.0);
        let rollout = Rollout::new(
            limit(self.max_parallel),
            limit(self.rate_per_minute),
            self.waves
                .clone()
                .flatten()
                .map(|w| w.0)
                .unwrap_or_default(),
            self.abort_threshold.flatten().map(|t| t.0),
        );
        (upgrade_all, rollout)
    }
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
        status_counts: c.into(),
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

/// The group and location a mass upgrade is narrowed to; a location the caller cannot see
/// is a field error (the group is judged by the domain against the devices in reach).
async fn read_narrowing(
    state: &AppState,
    caller: &Caller,
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
            .filter(|l| caller.manages(l.organization))
            .ok_or_else(|| ApiError::field("location", does_not_exist(&id.to_string())))?;
        narrowing.location = Some(found.id);
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

/// Dry run: the device firmwares and the firmware-less devices a mass upgrade of the build
/// would reach (devices are upgraded only with `upgrade_all`).
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{id}/upgrade/", tag = "upgrades",
    params(PathId, DryRunQuery),
    responses((status = 200, description = "`{\"device_firmwares\": [...], \"devices\": [...]}`")),
    security(("bearer" = [])))]
async fn dry_run(
    State(state): State<AppState>,
    auth: Authorized<BatchUpgrades, View>,
    PathId(id): PathId,
    query: Result<Filters<DryRunQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let upgrade = mass_upgrade(&state, &auth.caller, id, auth.scope.clone()).await?;
    // An unknown build is not found before its narrowing is judged.
    let Filters(query) = query?;
    let narrowing = read_narrowing(
        &state,
        &auth.caller,
        query.group.map(|g| g.0),
        query.location.map(|l| l.0),
    )
    .await?;
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
    params(PathId), request_body = BatchWrite,
    responses((status = 201, body = BatchCreated),
        (status = 400, description = "Field errors, or `{\"error\": \"No devices found matching the specified filters. ...\"}`", body = FieldErrors),
        (status = 403, description = "No permission, the caller manages no organization, or a shared build and the caller is no superuser", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn start_batch(
    State(state): State<AppState>,
    auth: Authorized<BatchUpgrades, Add>,
    PathId(id): PathId,
    body: Body<BatchWrite>,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    let upgrade = mass_upgrade(&state, &auth.caller, id, auth.scope.clone()).await?;
    auth.caller.require_shared_write(
        upgrade.organization,
        "Only superusers can start mass upgrades of shared builds.",
    )?;
    let body = body.read()?;
    let (upgrade_all, rollout) = body.rollout();
    let reference = |r: Option<Option<Reference>>| r.flatten().and_then(|r| r.0);
    let narrowing = read_narrowing(
        &state,
        &auth.caller,
        reference(body.group),
        reference(body.location),
    )
    .await?;
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
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/",
    tag = "upgrades", params(PageQuery, BatchQuery),
    responses((status = 200, body = Paginated<BatchView>)), security(("bearer" = [])))]
async fn list_batches(
    State(state): State<AppState>,
    auth: Authorized<BatchUpgrades, View>,
    paging: Paging,
    Filters(query): Filters<BatchQuery>,
) -> Result<Json<Paginated<BatchView>>, ApiError> {
    let mut scope = auth.scope;
    let filter = BatchFilter {
        build: query.build.map(|b| BuildId(b.0)),
        status: query.status.map(|s| s.0),
    };
    if let Some(slug) = query.organization {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| scope.contains(o.id) && auth.caller.manages(o.id)) {
            Some(org) => scope = Scope::Orgs(vec![org.id]),
            // An unknown or foreign organization matches nothing.
            None => return paging.empty(),
        }
    }
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_batches(&scope, &filter, request))
        .await?;
    paging.envelope(page, view)
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
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/",
    tag = "upgrades", params(PathId), responses((status = 200, body = BatchView)),
    security(("bearer" = [])))]
async fn get_batch(
    State(state): State<AppState>,
    auth: Authorized<BatchUpgrades, View>,
    PathId(id): PathId,
) -> Result<Json<BatchView>, ApiError> {
    let batch = visible_batch(&state, &auth.caller, id).await?;
    Ok(Json(detail(&state, batch).await?))
}

/// Cancels every operation of the batch that has not begun flashing.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/batch-upgrade-operation/{id}/cancel/",
    tag = "upgrades", params(PathId), responses((status = 200, body = BatchView)),
    security(("bearer" = [])))]
async fn cancel_batch(
    State(state): State<AppState>,
    auth: Authorized<BatchUpgrades, Cancel>,
    PathId(id): PathId,
) -> Result<Json<BatchView>, ApiError> {
    let batch = visible_batch(&state, &auth.caller, id).await?;
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
