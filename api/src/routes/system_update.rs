//! `/api/v1/devices/{device_id}/npm.system_update/2.0/…`: a device's npm.system_update 2.0
//! API, proxied over MQTT. Each request becomes one [`Call`] the bridge sends the device; its
//! answer (status and body) is the response.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetmq_protocol::{Call, ProtocolError};
use fleetmq_store::Resource;
use http_body_util::BodyExt;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::JsonObject;
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
        axum::routing::any(proxy).layer(axum::extract::DefaultBodyLimit::disable()),
    )
}

/// Reads at most `limit` bytes of a body; larger ones are drained and refused with 413.
async fn read_capped(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = body;
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("Could not read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                out.extend_from_slice(&data);
            } else if seen > 64 * 1024 * 1024 {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(out)
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The call a request names; unknown routes are not found, bad bodies bad requests.
async fn read_call(
    state: &AppState,
    method: &Method,
    path: &str,
    request: Request,
) -> Result<Call, ApiError> {
    let path = path.trim_matches('/');
    let verb = method.as_str();
    if verb == "POST" && path == "images/upload" {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if essence(&content_type) != "application/octet-stream" {
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        let bytes = read_capped(request.into_body(), UPLOAD_LIMIT).await?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest("The image is empty.".to_owned()));
        }
        return Ok(Call::UploadImage(bytes));
    }
    // Know the route before reading a body.
    if let Err(ProtocolError::UnknownCall { .. }) =
        Call::from_route(verb, path, serde_json::json!({"url": ""}))
    {
        return Err(ApiError::NotFound);
    }
    let body = if verb == "POST" && path == "images/fetch" {
        let JsonObject(map) =
            <JsonObject as axum::extract::FromRequest<AppState>>::from_request(request, state)
                .await?;
        match map.get("url") {
            Some(Value::String(url)) if !url.trim().is_empty() => {}
            Some(Value::String(_)) => {
                return Err(ApiError::field("url", "This field may not be blank."));
            }
            Some(_) => return Err(ApiError::field("url", "Not a valid string.")),
            None => return Err(ApiError::field("url", "This field is required.")),
        }
        Value::Object(map)
    } else {
        Value::Null
    };
    Call::from_route(verb, path, body).map_err(|e| match e {
        ProtocolError::UnknownCall { .. } => ApiError::NotFound,
        other => ApiError::BadRequest(other.to_string()),
    })
}

async fn proxy(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path((device, path)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    // Reading needs the device's view permission; anything else changes it.
    let needed = if method == Method::GET {
        Method::GET
    } else {
        Method::PATCH
    };
    caller.authorize(Resource::Device, &needed)?;
    let id = Uuid::parse_str(&device).map_err(|_| ApiError::NotFound)?;
    let device = visible_device(&state, &caller, id).await?;
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

/// OpenAPI document of the proxied calls (one handler serves them all).
#[derive(OpenApi)]
#[openapi(paths(
    doc::list_images,
    doc::get_image,
    doc::delete_image,
    doc::fetch_image,
    doc::upload_image,
    doc::get_update,
    doc::init,
    doc::reset,
    doc::start
))]
struct Doc;

/// Documentation only: the handler is [`proxy`].
#[allow(dead_code)]
mod doc {
    use crate::ErrorDetail;

    /// Body of `images/fetch`.
    #[derive(utoipa::ToSchema)]
    pub struct FetchBody {
        /// Where the device downloads the image from.
        pub url: String,
    }

    /// Lists the images on the device (the `images` resource).
    #[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "`{\"items\": [...]}` as the device answers"),
            (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail),
            (status = 503, description = "The device is offline, or no MQTT bridge runs", body = ErrorDetail),
            (status = 504, description = "The device did not answer in time", body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn list_images() {}

    /// Shows one image on the device.
    #[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{id}", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id"), ("id" = u64, Path, description = "Device-local image id")),
        responses((status = 200, description = "The image resource"), (status = 404, body = ErrorDetail),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn get_image() {}

    /// Deletes an image on the device.
    #[utoipa::path(delete, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/items/{id}", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id"), ("id" = u64, Path, description = "Device-local image id")),
        responses((status = 204, description = "Deleted"), (status = 404, body = ErrorDetail),
            (status = 409, description = "Not allowed in the device's state"),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn delete_image() {}

    /// Makes the device download an image from a URL.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/fetch", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")), request_body = FetchBody,
        responses((status = 200, description = "The new image resource"), (status = 400, description = "Bad body"),
            (status = 404, body = ErrorDetail), (status = 415, body = ErrorDetail),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn fetch_image() {}

    /// Uploads an image to the device (raw bytes, at most 512 KiB).
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/images/upload", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        request_body(content = Vec<u8>, content_type = "application/octet-stream"),
        responses((status = 200, description = "The new image resource"), (status = 404, body = ErrorDetail),
            (status = 413, body = ErrorDetail), (status = 415, body = ErrorDetail),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn upload_image() {}

    /// Shows the device's update state (the `update` resource).
    #[utoipa::path(get, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "The update resource"), (status = 404, body = ErrorDetail),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn get_update() {}

    /// Prepares the update with the device's valid image.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/init", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
            (status = 404, body = ErrorDetail), (status = 409, description = "Not allowed in the device's state"),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn init() {}

    /// Resets the device's update process.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/reset", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
            (status = 404, body = ErrorDetail), (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn reset() {}

    /// Starts flashing the initialized update.
    #[utoipa::path(post, path = "/api/v1/devices/{device_id}/npm.system_update/2.0/update/start", tag = "system_update",
        params(("device_id" = uuid::Uuid, Path, description = "Device id")),
        responses((status = 200, description = "As the device answers"), (status = 204, description = "Accepted"),
            (status = 404, body = ErrorDetail), (status = 409, description = "Not allowed in the device's state"),
            (status = 503, body = ErrorDetail), (status = 504, body = ErrorDetail)),
        security(("bearer" = [])))]
    pub fn start() {}
}
