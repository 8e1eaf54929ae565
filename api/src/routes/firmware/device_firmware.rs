//! `/api/v1/firmware-upgrader/device/{device_id}/firmware/`: the image a device should run.
//! Setting it (PUT/PATCH) starts an upgrade operation.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use fleetmq_store::{
    Build, Device, DeviceFirmware, Image, ImageId, Resource, UpgradeOperation, UpgradePlan,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::categories::visible_category;
use super::upgrades::{OperationView, view as operation_view};
use crate::auth::Caller;
use crate::extract::JsonObject;
use crate::form::{Form, Mode, does_not_exist};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, ErrorDetail};

/// The device firmware routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(
        get_firmware,
        put_firmware,
        patch_firmware,
        delete_firmware
    ))
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

/// What a client sends.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct DeviceFirmwareWrite {
    /// Image id: of a category of the device's organization (or shared), for its model.
    image: Uuid,
}

fn view(f: DeviceFirmware, op: Option<UpgradeOperation>) -> DeviceFirmwareView {
    DeviceFirmwareView {
        image: f.image.0,
        installed: f.installed,
        modified: f.modified.to_string(),
        upgrade_operation: op.map(operation_view),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
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
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/", tag = "upgrades",
    params(("device_id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceFirmwareView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_firmware(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(device): Path<String>,
) -> Result<Json<DeviceFirmwareView>, ApiError> {
    caller.authorize(Resource::DeviceFirmware, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let firmware = state
        .store()
        .run(move |db| db.device_firmware(device.id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(firmware, None)))
}

async fn write(
    state: AppState,
    caller: Caller,
    method: Method,
    device: String,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<(StatusCode, Json<DeviceFirmwareView>), ApiError> {
    caller.authorize(Resource::DeviceFirmware, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let device_id = device.id;
    let current = state
        .store()
        .run(move |db| db.device_firmware(device_id))
        .await?;
    if mode == Mode::Partial && current.is_none() {
        return Err(ApiError::NotFound);
    }
    if device.is_deactivated {
        return Err(ApiError::Forbidden(DEACTIVATED.to_owned()));
    }
    let mut form = Form::new(body, mode);
    let requested = form.reference("image", true, false).set().flatten();
    let mut chosen = None;
    if let Some(id) = requested {
        match suitable_image(&state, &caller, &device, id).await? {
            None => form.error("image", does_not_exist(&id.to_string())),
            Some((image, build)) => {
                let types = state.store().run(|db| db.image_types()).await?;
                let fits = types
                    .iter()
                    .any(|t| t.name == image.kind && t.fits(&device.fields.model));
                if fits {
                    chosen = Some((image, build));
                } else {
                    form.error("image", MODEL_MISMATCH);
                }
            }
        }
    }
    form.finish()?;
    let (image, build) = match chosen {
        Some(chosen) => chosen,
        // PATCH without an image: upgrade to the current one again.
        None => {
            let current = current.as_ref().ok_or(ApiError::NotFound)?;
            suitable_image(&state, &caller, &device, current.image.0)
                .await?
                .ok_or_else(|| {
                    ApiError::field("image", does_not_exist(&current.image.to_string()))
                })?
        }
    };
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

/// Sets a device's firmware, creating it when missing (201) or changing it (200), and starts
/// an upgrade operation to the image.
#[utoipa::path(put, path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/", tag = "upgrades",
    params(("device_id" = Uuid, Path, description = "Device id")), request_body = DeviceFirmwareWrite,
    responses((status = 200, body = DeviceFirmwareView), (status = 201, body = DeviceFirmwareView),
        (status = 400, description = "Field errors"), (status = 401, body = ErrorDetail),
        (status = 403, description = "No permission, or the device is deactivated", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_firmware(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(device): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<DeviceFirmwareView>), ApiError> {
    write(state, caller, method, device, body, Mode::Full).await
}

/// Changes a device's firmware (404 when it has none) and starts an upgrade operation.
#[utoipa::path(patch, path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/", tag = "upgrades",
    params(("device_id" = Uuid, Path, description = "Device id")), request_body = DeviceFirmwareWrite,
    responses((status = 200, body = DeviceFirmwareView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail),
        (status = 403, description = "No permission, or the device is deactivated", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_firmware(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(device): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<DeviceFirmwareView>), ApiError> {
    write(state, caller, method, device, body, Mode::Partial).await
}

/// Forgets a device's firmware record (its operations stay).
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/device/{device_id}/firmware/", tag = "upgrades",
    params(("device_id" = Uuid, Path, description = "Device id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_firmware(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Resource::DeviceFirmware, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    state
        .store()
        .run(move |db| db.delete_device_firmware(device.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
