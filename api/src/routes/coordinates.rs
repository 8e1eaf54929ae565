//! `/api/v1/controller/device/{id}/coordinates/`: where a device is, as a GeoJSON Feature.
//!
//! Meant for devices: with `?key=<device key>` no user authentication or tenancy check is
//! made (as in OpenWISP). Devices on MQTT publish `up/coordinates` instead.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use fleetmq_store::{Device, DeviceId, Location, Point, Resource};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::authenticate;
use crate::extract::{JsonObject, QueryPairs};
use crate::{ApiError, AppState, ErrorDetail};

/// The coordinates routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_coordinates, put_coordinates))
}

/// A device's position.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoordinatesView {
    /// Always `Feature`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `{"type": "Point", "coordinates": [lng, lat]}`.
    #[schema(value_type = Object)]
    pub geometry: Value,
    /// `{"name": location name}`.
    #[schema(value_type = Object)]
    pub properties: Value,
}

fn view(location: &Location) -> Result<CoordinatesView, ApiError> {
    let point = location.geometry.ok_or(ApiError::NotFound)?;
    Ok(CoordinatesView {
        kind: "Feature",
        geometry: json!({"type": "Point", "coordinates": [point.lng, point.lat]}),
        properties: json!({"name": location.name}),
    })
}

/// The device, if the caller may act on its coordinates: by its key, or as a user with the
/// device-location permission who manages its organization.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &QueryPairs,
    method: &Method,
    raw_id: &str,
) -> Result<Device, ApiError> {
    let id = Uuid::parse_str(raw_id).map_err(|_| ApiError::NotFound)?;
    let key = query.get("key").map(str::to_owned);
    if let Some(key) = key {
        let device = state.store().run(move |db| db.device(DeviceId(id))).await?;
        if let Some(device) = device
            && device.fields.key.matches(key.as_bytes())
        {
            return Ok(device);
        }
    }
    let caller = authenticate(headers, state).await?;
    caller.authorize(Resource::DeviceLocation, method)?;
    crate::routes::devices::visible_device(state, &caller, id).await
}

/// A device's coordinates.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/coordinates/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id"),
        ("key" = Option<String>, Query, description = "The device's key: skips user authentication")),
    responses((status = 200, body = CoordinatesView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, description = "Unknown device, or no location yet", body = ErrorDetail)),
    security((), ("bearer" = [])))]
async fn get_coordinates(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
    method: Method,
    Path(id): Path<String>,
) -> Result<Json<CoordinatesView>, ApiError> {
    let device = authorize(&state, &headers, &query, &method, &id).await?;
    let location = state
        .store()
        .run(move |db| db.device_location(device.id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(&location)?))
}

fn read_point(body: &Map<String, Value>) -> Result<Point, ApiError> {
    let geometry = body.get("geometry").and_then(Value::as_object);
    let Some(geometry) = geometry else {
        return Err(ApiError::field("geometry", "This field is required."));
    };
    if geometry.get("type").and_then(Value::as_str) != Some("Point") {
        return Err(ApiError::field(
            "geometry",
            "Only Point geometries are accepted.",
        ));
    }
    let numbers: Option<Vec<f64>> = geometry
        .get("coordinates")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_f64).collect());
    match numbers.as_deref() {
        Some([lng, lat]) => Point::new(*lng, *lat).map_err(|m| ApiError::field("geometry", m)),
        _ => Err(ApiError::field(
            "geometry",
            "Coordinates must be [longitude, latitude].",
        )),
    }
}

/// Moves a device (creating its outdoor, mobile location if it has none). Nothing is
/// published to the device.
#[utoipa::path(put, path = "/api/v1/controller/device/{id}/coordinates/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id"),
        ("key" = Option<String>, Query, description = "The device's key: skips user authentication")),
    request_body(content = Object, description = "GeoJSON Feature with a Point geometry"),
    responses((status = 200, body = CoordinatesView), (status = 400, description = "Invalid geometry"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security((), ("bearer" = [])))]
async fn put_coordinates(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
    method: Method,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<CoordinatesView>, ApiError> {
    let device = authorize(&state, &headers, &query, &method, &id).await?;
    let point = read_point(&body)?;
    let location = state
        .store()
        .run(move |db| db.set_device_coordinates(device.id, point))
        .await?;
    Ok(Json(view(&location)?))
}
