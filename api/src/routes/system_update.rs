//! `/api/v1/devices/{device_id}/npm.system_update/2.0/…`: a device's npm.system_update 2.0
//! API, proxied over MQTT. Each request becomes one [`Call`] the bridge sends the device; its
//! answer (status and body) is the response.
//!
//! One handler per call, each documented where it is written. Reading (GET) needs the
//! device's view permission, anything else its change permission; a path or method the API
//! does not have is not found, once the caller has been judged as for a call.

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawPathParams, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use fleetmq_protocol::Call;
use fleetmq_store::DeviceId;
use serde::Deserialize;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Act, Authorized, Change, Devices, View};
use crate::body::{Body, text_field};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, DeviceCallError, ErrorDetail};

/// Where the device API is mounted.
pub const PREFIX: &str = "/api/v1/devices/{device_id}/npm.system_update/2.0/";
/// Largest image accepted by `images/upload` (it travels in one MQTT message).
pub const UPLOAD_LIMIT: usize = 512 * 1024;

/// The call routes with their OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(known(routes!(list_images)))
        .routes(known(routes!(get_image, delete_image)))
        .routes(known(routes!(fetch_image)))
        .routes(known(routes!(upload_image)).layer(DefaultBodyLimit::disable()))
        .routes(known(routes!(get_update)))
        .routes(known(routes!(init)))
        .routes(known(routes!(reset)))
        .routes(known(routes!(start)))
        .route(
            "/api/v1/devices/{device_id}/npm.system_update/2.0/{*path}",
            any(unknown_call),
        )
}

/// A call's route, where a method it does not take is an unknown call.
fn known((schemas, paths, methods): UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    (schemas, paths, methods.fallback(unknown_call))
}

/// What every call may answer instead of the device.
#[derive(IntoResponses)]
pub enum DeviceUnreachable {
    /// The device is offline, or no MQTT bridge runs.
    #[response(status = 503)]
    Offline(ErrorDetail),
    /// The device did not answer in time.
    #[response(status = 504)]
    Timeout(ErrorDetail),
}

/// A device the caller may do `A` on (its `{device_id}`), to call: refuses with 401, 403,
/// then 404 for a device the caller cannot see.
struct DeviceCall<A> {
    state: AppState,
    device: DeviceId,
    marker: std::marker::PhantomData<fn() -> A>,
}

impl<A: Act> FromRequestParts<AppState> for DeviceCall<A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = Authorized::<Devices, A>::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let device = params
            .iter()
            .find(|(name, _)| *name == "device_id")
            .and_then(|(_, value)| Uuid::parse_str(value).ok())
            .ok_or(ApiError::NotFound)?;
        let device = visible_device(state, &auth.caller, device).await?;
        Ok(DeviceCall {
            state: state.clone(),
            device: device.id,
            marker: std::marker::PhantomData,
        })
    }
}

impl<A> DeviceCall<A> {
    /// Sends `call` to the device; its answer is the response.
    async fn send(self, call: Call) -> Result<Response, ApiError> {
        let answer = self
            .state
            .hooks()
            .device_call(self.device, call)
            .await
            .map_err(|e| match e {
                DeviceCallError::Timeout(_) => ApiError::GatewayTimeout(e.to_string()),
                DeviceCallError::Offline | DeviceCallError::Unavailable => {
                    ApiError::Unavailable(e.to_string())
                }
            })?;
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        if status == StatusCode::NO_CONTENT || answer.body.is_null() {
            return Ok(status.into_response());
        }
        Ok((status, axum::Json(answer.body)).into_response())
    }
}

/// The `{device_id}` of every call.
struct DevicePath;

impl IntoParams for DevicePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param("device_id", "Device id", Type::String, true)]
    }
}

/// The `{device_id}` and device-local image `{id}` of an image call; an id that is not a
/// number is not found.
struct ItemPath;

impl IntoParams for ItemPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            path_param("device_id", "Device id", Type::String, true),
            path_param("id", "Device-local image id", Type::Integer, false),
        ]
    }
}

fn path_param(name: &str, description: &str, kind: Type, uuid: bool) -> Parameter {
    let mut schema = ObjectBuilder::new().schema_type(kind);
    if uuid {
        schema = schema.format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )));
    } else {
        schema = schema
            .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(0));
    }
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The device-local image id of an image call.
fn item(
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<u64, ApiError> {
    let Path((_, id)) = path.map_err(|_| ApiError::NotFound)?;
    id.parse().map_err(|_| ApiError::NotFound)
}

/// Body of `images/fetch`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FetchBody {
    /// Where the device downloads the image from.
    #[schema(required = true, nullable = false)]
    url: Option<ImageUrl>,
}

text_field!(
    /// Where an image is downloaded from: any non-blank text (the device judges it).
    ImageUrl(String),
    |s: &str| {
        if s.trim().is_empty() {
            Err("This field may not be blank.")
        } else {
            Ok(s.to_owned())
        }
    },
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .description(Some("A URL the device can download from")),
);

/// The image of an `images/upload` request: raw bytes, at most [`UPLOAD_LIMIT`].
async fn read_upload(request: Request) -> Result<Vec<u8>, ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/octet-stream") {
        return Err(ApiError::UnsupportedMediaType(content_type));
    }
    let bytes = crate::extract::read_capped(request.into_body(), UPLOAD_LIMIT).await?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest("The image is empty.".to_owned()));
    }
    Ok(bytes)
}

/// Lists the images on the device (the `images` resource).
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images",
    tag = "system_update", params(DevicePath),
    responses((status = 200, description = "`{\"items\": [...]}` as the device answers"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn list_images(device: DeviceCall<View>) -> Result<Response, ApiError> {
    device.send(Call::ListImages).await
}

/// Shows one image on the device.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{id}",
    tag = "system_update", params(ItemPath),
    responses((status = 200, description = "The image resource"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn get_image(
    device: DeviceCall<View>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    device.send(Call::GetImage(item(path)?)).await
}

/// Deletes an image on the device.
#[utoipa::path(delete, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{id}",
    tag = "system_update", params(ItemPath),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "Not allowed in the device's state"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn delete_image(
    device: DeviceCall<Change>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    device.send(Call::DeleteImage(item(path)?)).await
}

/// Makes the device download an image from a URL.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/fetch",
    tag = "system_update", params(DevicePath), request_body = FetchBody,
    responses((status = 200, description = "The new image resource"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn fetch_image(
    device: DeviceCall<Change>,
    body: Body<FetchBody>,
) -> Result<Response, ApiError> {
    let url = body
        .read()?
        .url
        .ok_or_else(|| ApiError::field("url", crate::body::REQUIRED))?;
    device.send(Call::FetchImage { url: url.0 }).await
}

/// Uploads an image to the device (raw bytes, at most 512 KiB).
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/upload",
    tag = "system_update", params(DevicePath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "The new image resource"),
        (status = 400, description = "The image is empty", body = ErrorDetail), DeviceUnreachable),
    security(("bearer" = [])))]
async fn upload_image(device: DeviceCall<Change>, request: Request) -> Result<Response, ApiError> {
    let image = read_upload(request).await?;
    device.send(Call::UploadImage(image)).await
}

/// Shows the device's update state (the `update` resource).
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update",
    tag = "system_update", params(DevicePath),
    responses((status = 200, description = "The update resource"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn get_update(device: DeviceCall<View>) -> Result<Response, ApiError> {
    device.send(Call::GetUpdate).await
}

/// Prepares the update with the device's valid image.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/init",
    tag = "system_update", params(DevicePath),
    responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
        (status = 409, description = "Not allowed in the device's state"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn init(device: DeviceCall<Change>) -> Result<Response, ApiError> {
    device.send(Call::Init).await
}

/// Resets the device's update process.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/reset",
    tag = "system_update", params(DevicePath),
    responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
        DeviceUnreachable),
    security(("bearer" = [])))]
async fn reset(device: DeviceCall<Change>) -> Result<Response, ApiError> {
    device.send(Call::Reset).await
}

/// Starts flashing the initialized update.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/start",
    tag = "system_update", params(DevicePath),
    responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
        (status = 409, description = "Not allowed in the device's state"), DeviceUnreachable),
    security(("bearer" = [])))]
async fn start(device: DeviceCall<Change>) -> Result<Response, ApiError> {
    device.send(Call::Start).await
}

/// A path or method the device API does not have: judged like a call (reading with view,
/// anything else with change permission), then not found.
async fn unknown_call(
    State(state): State<AppState>,
    method: Method,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    if method == Method::GET || method == Method::HEAD {
        DeviceCall::<View>::from_request_parts(&mut parts, &state).await?;
    } else {
        DeviceCall::<Change>::from_request_parts(&mut parts, &state).await?;
    }
    Err(ApiError::NotFound)
}
