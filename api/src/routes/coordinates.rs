//! `/api/v1/controller/device/{id}/coordinates/`: where a device is, as a GeoJSON Feature.
//!
//! Meant for devices: with `?key=<device key>` no user authentication or tenancy check is
//! made (as in OpenWISP). Devices on MQTT publish `up/coordinates` instead.

use std::marker::PhantomData;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use fleetmq_store::{Device, DeviceId, Location, Point};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Act, Authorized, Change, DeviceLocations, View};
use crate::body::Body;
use crate::extract::{PathId, QueryPairs};
use crate::routes::devices::visible_device;
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
    /// `{"type": "Point", "coordinates": [lng, lat]}` (a Polygon for an area).
    #[schema(value_type = Object)]
    pub geometry: Value,
    /// `{"name": location name}`.
    #[schema(value_type = Object)]
    pub properties: Value,
}

fn view(location: &Location) -> Result<CoordinatesView, ApiError> {
    let geometry = location.geometry.as_ref().ok_or(ApiError::NotFound)?;
    Ok(CoordinatesView {
        kind: "Feature",
        geometry: super::geometry::geojson(geometry),
        properties: json!({"name": location.name}),
    })
}

/// The device whose coordinates a request may read or move (`A`: view or change): the device
/// itself, by its `?key=`; else a user with that device-location permission who manages the
/// device's organization. An id that is not a UUID is not found, before anything else.
#[derive(Debug)]
pub struct LocatedDevice<A> {
    /// The device.
    pub device: Device,
    action: PhantomData<fn() -> A>,
}

impl<A: Act> FromRequestParts<AppState> for LocatedDevice<A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let PathId(id) = PathId::from_request_parts(parts, state).await?;
        let query = QueryPairs::from_request_parts(parts, state).await?;
        let located = |device| LocatedDevice {
            device,
            action: PhantomData,
        };
        if let Some(key) = query.get("key").map(str::to_owned) {
            let device = state.store().run(move |db| db.device(DeviceId(id))).await?;
            if let Some(device) = device
                && device.fields.key.matches(key.as_bytes())
            {
                return Ok(located(device));
            }
        }
        let auth = Authorized::<DeviceLocations, A>::from_request_parts(parts, state).await?;
        Ok(located(visible_device(state, &auth.caller, id).await?))
    }
}

/// What a client (or the device itself) sends: a GeoJSON Feature; only its geometry is read.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CoordinatesWrite {
    /// Where the device is.
    #[schema(required = true, nullable = false)]
    geometry: Option<PointGeometry>,
}

/// A GeoJSON Point: `{"type": "Point", "coordinates": [longitude, latitude]}`.
#[derive(Debug, Clone, Copy)]
pub struct PointGeometry(pub Point);

impl<'de> Deserialize<'de> for PointGeometry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let Some(geometry) = value.as_object() else {
            return Err(de::Error::custom(crate::body::REQUIRED));
        };
        if geometry.get("type").and_then(Value::as_str) != Some("Point") {
            return Err(de::Error::custom("Only Point geometries are accepted."));
        }
        let numbers: Option<Vec<f64>> = geometry
            .get("coordinates")
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(Value::as_f64).collect());
        match numbers.as_deref() {
            Some([lng, lat]) => Point::new(*lng, *lat)
                .map(PointGeometry)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "Coordinates must be [longitude, latitude].",
            )),
        }
    }
}

impl PartialSchema for PointGeometry {
    fn schema() -> RefOr<Schema> {
        let number = ObjectBuilder::new().schema_type(Type::Number);
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["Point"])),
                )
                .property(
                    "coordinates",
                    ArrayBuilder::new()
                        .items(number)
                        .min_items(Some(2))
                        .max_items(Some(2))
                        .description(Some("[longitude (-180 to 180), latitude (-90 to 90)]")),
                )
                .required("type")
                .required("coordinates")
                .build(),
        ))
    }
}

impl ToSchema for PointGeometry {}

/// A device's coordinates.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/coordinates/", tag = "devices",
    params(PathId,
        ("key" = Option<String>, Query, description = "The device's key: skips user authentication")),
    responses((status = 200, body = CoordinatesView),
        (status = 404, description = "Unknown device, or no location yet", body = ErrorDetail)),
    security((), ("bearer" = [])))]
async fn get_coordinates(
    State(state): State<AppState>,
    LocatedDevice { device, .. }: LocatedDevice<View>,
) -> Result<Json<CoordinatesView>, ApiError> {
    let location = state
        .store()
        .run(move |db| db.device_location(device.id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(&location)?))
}

/// Moves a device (creating its outdoor, mobile location if it has none). Nothing is
/// published to the device.
#[utoipa::path(put, path = "/api/v1/controller/device/{id}/coordinates/", tag = "devices",
    params(PathId,
        ("key" = Option<String>, Query, description = "The device's key: skips user authentication")),
    request_body = CoordinatesWrite, responses((status = 200, body = CoordinatesView)),
    security((), ("bearer" = [])))]
async fn put_coordinates(
    State(state): State<AppState>,
    LocatedDevice { device, .. }: LocatedDevice<Change>,
    body: Body<CoordinatesWrite>,
) -> Result<Json<CoordinatesView>, ApiError> {
    let point = body
        .read()?
        .geometry
        .ok_or_else(|| ApiError::field("geometry", crate::body::REQUIRED))?
        .0;
    let location = state
        .store()
        .run(move |db| db.set_device_coordinates(device.id, point))
        .await?;
    Ok(Json(view(&location)?))
}
