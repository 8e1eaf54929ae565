//! `/api/v1/firmware-upgrader/device/{device_id}/firmware/`: the image a device should run.
//! Setting it (PUT/PATCH) starts an upgrade operation.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use fleetmq_store::{Build, Device, DeviceFirmware, Image, ImageId, UpgradeOperation, UpgradePlan};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::categories::visible_category;
use super::upgrades::{OperationView, view as operation_view};
use crate::auth::{Authorized, Caller, Change, Delete, DeviceFirmwares, View};
use crate::body::{Body, Pk, does_not_exist};
use crate::extract::PathId;
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, ErrorDetail};

/// The device firmware routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_firmware, set_firmware, delete_firmware))
}

/// OpenWISP's refusal for deactivated devices.
pub const DEACTIVATED: &str = "Firmware upgrades are not allowed for deactivated devices.";
/// OpenWISP's refusal for an image that does not suit the device.
pub const MODEL_MISMATCH: &str = "Device model and image model do not match";

/// A device's firmware as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceFirmwareView {
    /// The image the device should run.
    pub image: Uuid,
    /// Whether it runs it (read-only).
    pub installed: bool,
    /// Last change (read-only).
    pub modified: String,
    /// The upgrade a write started (writes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_operation: Option<OperationView>,
}

/// What a client sends to set a device's firmware.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceFirmwareWrite {
    /// Image id: of a category of the device's organization (or shared), for its model.
    #[schema(required = true, nullable = false)]
    image: Option<Pk>,
}

impl DeviceFirmwareWrite {
    /// The image to upgrade `device` to, with its build: the one given, or without one (PATCH)
    /// the device's `current` image again. It must be visible to the caller, of the device's
    /// organization (or shared) and fit the device's model.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        device: &Device,
        current: Option<&DeviceFirmware>,
    ) -> Result<(Image, Build), ApiError> {
        let Some(Pk(id)) = self.image else {
            let current = current.ok_or(ApiError::NotFound)?;
            return suitable_image(state, caller, device, current.image.0)
                .await?
                .ok_or_else(|| {
                    ApiError::field("image", does_not_exist(&current.image.to_string()))
                });
        };
        let (image, build) = suitable_image(state, caller, device, id)
            .await?
            .ok_or_else(|| ApiError::field("image", does_not_exist(&id.to_string())))?;
        let types = state.store().run(|db| db.image_types()).await?;
        let fits = types
            .iter()
            .any(|t| t.name == image.kind && t.fits(&device.fields.model));
        if !fits {
            return Err(ApiError::field("image", MODEL_MISMATCH));
        }
        Ok((image, build))
    }
}

fn view(f: DeviceFirmware, op: Option<UpgradeOperation>) -> DeviceFirmwareView {
    DeviceFirmwareView {
        image: f.image.0,
        installed: f.installed,
        modified: f.modified.to_string(),
        upgrade_operation: op.map(operation_view),
    }
}

/// The image `id` with its build, if the caller may see it and `device` may install it:
/// `Ok(None)` reads as "does not exist" to the client.
async fn suitable_image(
    state: &AppState,
    caller: &Caller,
    device: &Device,
    id: Uuid,
) -> Result<Option<(Image, Build)>, ApiError> {
    let found = state
        .store()
        .run(move |db| {
            let Some(image) = db.image(ImageId(id))? else {
                return Ok(None);
            };
            Ok(db.build(image.build)?.map(|build| (image, build)))
        })
        .await?;
    let Some((image, build)) = found else {
        return Ok(None);
    };
    let Some(category) = visible_category(state, caller, build.fields.category).await? else {
        return Ok(None);
    };
    if category
        .fields
        .organization
        .is_some_and(|org| org != device.fields.organization)
    {
        return Ok(None);
    }
    Ok(Some((image, build)))
}

/// Shows a device's firmware.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/",
    tag = "upgrades", params(("device_id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceFirmwareView)), security(("bearer" = [])))]
async fn get_firmware(
    State(state): State<AppState>,
    auth: Authorized<DeviceFirmwares, View>,
    PathId(device): PathId,
) -> Result<Json<DeviceFirmwareView>, ApiError> {
    let device = visible_device(&state, &auth.caller, device).await?;
    let firmware = state
        .store()
        .run(move |db| db.device_firmware(device.id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(firmware, None)))
}

/// Sets a device's firmware and starts an upgrade operation to the image: PUT creates it when
/// missing (201) or replaces it (200); PATCH changes it (404 when the device has none), and
/// without an image upgrades to the current one again.
#[utoipa::path(method(put, patch), path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/",
    tag = "upgrades", params(("device_id" = Uuid, Path, description = "Device id")),
    request_body = DeviceFirmwareWrite,
    responses((status = 200, body = DeviceFirmwareView),
        (status = 201, description = "PUT only: the device had no firmware", body = DeviceFirmwareView),
        (status = 403, description = "No permission, the caller manages no organization, or the device is deactivated", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn set_firmware(
    State(state): State<AppState>,
    auth: Authorized<DeviceFirmwares, Change>,
    method: Method,
    PathId(device): PathId,
    body: Body<DeviceFirmwareWrite>,
) -> Result<(StatusCode, Json<DeviceFirmwareView>), ApiError> {
    let device = visible_device(&state, &auth.caller, device).await?;
    let device_id = device.id;
    let current = state
        .store()
        .run(move |db| db.device_firmware(device_id))
        .await?;
    // Only PUT creates; a partial update needs something to change.
    if method == Method::PATCH && current.is_none() {
        return Err(ApiError::NotFound);
    }
    if device.is_deactivated {
        return Err(ApiError::Forbidden(DEACTIVATED.to_owned()));
    }
    let (image, build) = body
        .read()?
        .apply(&state, &auth.caller, &device, current.as_ref())
        .await?;
    let op = UpgradeOperation::new(&device, &image, &build, None, 0);
    let (started, firmware) = state
        .store()
        .run(move |db| {
            let started = db.start_upgrades(UpgradePlan {
                batch: None,
                operations: vec![op],
            })?;
            let firmware = db.device_firmware(device_id)?;
            Ok((started, firmware))
        })
        .await?;
    let op = started.operations.first().cloned();
    state.hooks().upgrades_started(started);
    let firmware = firmware.ok_or_else(|| ApiError::Internal("firmware not recorded".into()))?;
    let status = if current.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(firmware, op))))
}

/// Forgets a device's firmware record (its operations stay).
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/",
    tag = "upgrades", params(("device_id" = Uuid, Path, description = "Device id")),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_firmware(
    State(state): State<AppState>,
    auth: Authorized<DeviceFirmwares, Delete>,
    PathId(device): PathId,
) -> Result<StatusCode, ApiError> {
    let device = visible_device(&state, &auth.caller, device).await?;
    state
        .store()
        .run(move |db| db.delete_device_firmware(device.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
