//! `/api/v1/devices/{device_id}/npm.system_update/2.0/…`: a device's npm.system_update 2.0
//! API, proxied over MQTT. Each request becomes one [`Call`] the bridge sends the device; its
//! answer (status and body) is the response.
//!
//! One handler serves every call: which calls exist is [`Call::from_route`]'s to say. Reading
//! (GET) needs the device's view permission, anything else its change permission; the calls
//! are documented one by one in [`Doc`].

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetmq_protocol::{Call, ProtocolError};
use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::auth::{Act, Authorized, Change, Devices, View};
use crate::body::{Body, text_field};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, DeviceCallError};

/// Where the device API is mounted.
pub const PREFIX: &str = "/api/v1/devices/{device_id}/npm.system_update/2.0/";
/// Largest image accepted by `images/upload` (it travels in one MQTT message).
pub const UPLOAD_LIMIT: usize = 512 * 1024;

/// The proxy route (any method, any path under the prefix) with its OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Doc::openapi()).route(
        "/api/v1/devices/{device_id}/npm.system_update/2.0/{*path}",
        get(proxy::<View>)
            .fallback(proxy::<Change>)
            .layer(DefaultBodyLimit::disable()),
    )
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

/// The call a request names; unknown calls are not found, bad bodies bad requests.
async fn read_call(
    state: &AppState,
    method: &Method,
    path: &str,
    request: Request,
) -> Result<Call, ApiError> {
    match (method.as_str(), path.trim_matches('/')) {
        ("POST", "images/upload") => read_upload(request).await.map(Call::UploadImage),
        ("POST", "images/fetch") => {
            let body = Body::<FetchBody>::from_request(request, state).await?;
            let url = body
                .read()?
                .url
                .ok_or_else(|| ApiError::field("url", crate::body::REQUIRED))?;
            Ok(Call::FetchImage { url: url.0 })
        }
        (verb, path) => Call::from_route(verb, path, Value::Null).map_err(|e| match e {
            ProtocolError::UnknownCall { .. } => ApiError::NotFound,
            other => ApiError::BadRequest(other.to_string()),
        }),
    }
}

/// Forwards one call to the device (`A`: the action on the device it needs) and answers with
/// the device's status and body.
async fn proxy<A: Act>(
    State(state): State<AppState>,
    auth: Authorized<Devices, A>,
    path: Result<Path<(Uuid, String)>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path((device, path)) = path.map_err(|_| ApiError::NotFound)?;
    let device = visible_device(&state, &auth.caller, device).await?;
    let method = request.method().clone();
    let call = read_call(&state, &method, &path, request).await?;
    let answer = state
        .hooks()
        .device_call(device.id, call)
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

/// OpenAPI document of the proxied calls (one handler, [`proxy`], serves them all). Each
/// call is the device's to answer: 503 when it is offline or no bridge runs, 504 when it does
/// not answer in time.
#[derive(OpenApi)]
#[openapi(
    paths(
        doc::list_images,
        doc::get_image,
        doc::delete_image,
        doc::fetch_image,
        doc::upload_image,
        doc::get_update,
        doc::init,
        doc::reset,
        doc::start
    ),
    components(schemas(FetchBody))
)]
struct Doc;

/// Documentation only: the handler of every call is [`proxy`].
#[allow(dead_code)]
mod doc {
    use super::FetchBody;
    use crate::ErrorDetail;

    /// What every call may answer instead of the device.
    #[derive(utoipa::IntoResponses)]
    pub enum DeviceUnreachable {
        /// The device is offline, or no MQTT bridge runs.
        #[response(status = 503)]
        Offline(ErrorDetail),
        /// The device did not answer in time.
        #[response(status = 504)]
        Timeout(ErrorDetail),
    }

    /// Lists the images on the device (the `images` resource).
    #[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "`{\"items\": [...]}` as the device answers"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn list_images() {}

    /// Shows one image on the device.
    #[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{id}", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id"), ("id" = u64, Path, description = "Device-local image id")),
        responses((status = 200, description = "The image resource"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn get_image() {}

    /// Deletes an image on the device.
    #[utoipa::path(delete, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{id}", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id"), ("id" = u64, Path, description = "Device-local image id")),
        responses((status = 204, description = "Deleted"),
            (status = 409, description = "Not allowed in the device's state"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn delete_image() {}

    /// Makes the device download an image from a URL.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/fetch", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")), request_body = FetchBody,
        responses((status = 200, description = "The new image resource"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn fetch_image() {}

    /// Uploads an image to the device (raw bytes, at most 512 KiB).
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/upload", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        request_body(content = Vec<u8>, content_type = "application/octet-stream"),
        responses((status = 200, description = "The new image resource"),
            (status = 400, description = "The image is empty", body = ErrorDetail), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn upload_image() {}

    /// Shows the device's update state (the `update` resource).
    #[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "The update resource"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn get_update() {}

    /// Prepares the update with the device's valid image.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/init", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
            (status = 409, description = "Not allowed in the device's state"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn init() {}

    /// Resets the device's update process.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/reset", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn reset() {}

    /// Starts flashing the initialized update.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/start", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
            (status = 409, description = "Not allowed in the device's state"), DeviceUnreachable),
        security(("bearer" = [])))]
    pub fn start() {}
}
