//! `/api/v1/controller/device/{id}/location/`: where a device is placed — a location (an
//! existing one by id, or one written inside the request), optionally a floor plan of it and a
//! position on that plan (`indoor`). The four payload forms of OpenWISP are read: ids, a
//! nested location object, dotted multipart fields with a floor plan image, indoor
//! coordinates. PUT creates (201) then updates (200).

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use fleetmq_store::{
    Device, DeviceLocation, FloorPlan, FloorPlanId, FloorplanChoice, Location, LocationChoice,
    LocationId, LocationType, Placement,
};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::floorplans::{Form, remove_files};
use super::geometry::geojson;
use super::locations::{FloorWrite, LocationKind, NestedLocationWrite, OUTDOOR_FLOORPLAN};
use crate::auth::{Authorized, Change, Delete, DeviceLocations, View};
use crate::body::{Nested, REQUIRED, parse_uuid};
use crate::extract::PathId;
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState};

/// The device location routes (forms with floor plan images bypass the JSON body limit).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            get_device_location,
            put_device_location,
            delete_device_location
        ))
        .layer(DefaultBodyLimit::disable())
}

/// OpenWISP's answer to an unknown (or invisible) location id.
pub const NO_LOCATION: &str = "Location object with entered ID does not exists.";
/// OpenWISP's answer to an unknown (or invisible) floor plan id.
pub const NO_FLOORPLAN: &str = "FloorPlan object with entered ID does not exists.";
/// OpenWISP's answer to a floor plan of another location.
const OTHER_LOCATION: &str = "Invalid floorplan (belongs to a different location)";

/// A device's placement as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceLocationView {
    /// The location, as a GeoJSON Feature.
    pub location: NestedLocationView,
    /// The floor plan the device is on.
    pub floorplan: Option<NestedFloorPlanView>,
    /// Position on the floor plan image from its top-left corner, `"y,x"`.
    pub indoor: Option<String>,
}

/// A location inside a device location (OpenWISP's GeoJSON Feature).
#[derive(Debug, Serialize, ToSchema)]
pub struct NestedLocationView {
    /// Always `Feature`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The location's id.
    pub id: Uuid,
    /// GeoJSON Point or Polygon.
    #[schema(value_type = Option<Object>)]
    pub geometry: Option<Value>,
    /// Its other fields.
    pub properties: NestedLocationProperties,
}

/// The properties of a [`NestedLocationView`].
#[derive(Debug, Serialize, ToSchema)]
pub struct NestedLocationProperties {
    /// `outdoor` or `indoor`.
    #[serde(rename = "type")]
    pub kind: LocationKind,
    /// Moves with its device.
    pub is_mobile: bool,
    /// Display name.
    pub name: String,
    /// Postal address.
    pub address: String,
}

/// A floor plan inside a device location.
#[derive(Debug, Serialize, ToSchema)]
pub struct NestedFloorPlanView {
    /// Identity.
    pub id: Uuid,
    /// `<location name> <ordinal> Floor`.
    pub name: String,
    /// Floor number.
    pub floor: i32,
    /// Where its image is downloaded.
    pub image: String,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

fn view(link: DeviceLocation, location: Location, plan: Option<FloorPlan>) -> DeviceLocationView {
    let floorplan = plan.map(|p| {
        let full = super::floorplans::view(p, &location.name);
        NestedFloorPlanView {
            id: full.id,
            name: full.name,
            floor: full.floor,
            image: full.image,
            created: full.created,
            modified: full.modified,
        }
    });
    DeviceLocationView {
        location: NestedLocationView {
            kind: "Feature",
            id: location.id.0,
            geometry: location.geometry.as_ref().map(geojson),
            properties: NestedLocationProperties {
                kind: location.kind.into(),
                is_mobile: location.is_mobile,
                name: location.name,
                address: location.address,
            },
        },
        floorplan,
        indoor: link.indoor,
    }
}

/// What a client sends: JSON, or a multipart form with dotted names (`location.name`,
/// `floorplan.floor`, `floorplan.image`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceLocationWrite {
    /// An existing location's id, or a new location (on change: the device's location's new
    /// fields).
    #[schema(required = true, nullable = false)]
    location: Option<LocationRef>,
    /// An existing floor plan's id (of the location), a floor plan to add (`floor`, with
    /// `floorplan.image` in a multipart form), or null for none.
    floorplan: Option<Option<FloorplanRef>>,
    /// Position on the floor plan image from its top-left corner, `"y,x"`.
    indoor: Option<Option<Indoor>>,
}

/// A location by id, or written in the request.
#[derive(Debug)]
pub enum LocationRef {
    /// An existing location.
    Id(Uuid),
    /// A location to create (or the device's to change).
    New(NestedLocationWrite),
}

impl<'de> Deserialize<'de> for LocationRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => parse_uuid(&s)
                .map(LocationRef::Id)
                .ok_or_else(|| de::Error::custom(NO_LOCATION)),
            value @ Value::Object(_) => Nested::<NestedLocationWrite>::deserialize(value)
                .map(|n| LocationRef::New(n.0))
                .map_err(de::Error::custom),
            Value::Null => Err(de::Error::custom(crate::body::NOT_NULL)),
            _ => Err(de::Error::custom(NO_LOCATION)),
        }
    }
}

fn id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
}

impl PartialSchema for LocationRef {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(id_schema())
                .item(NestedLocationWrite::schema())
                .build(),
        ))
    }
}

impl ToSchema for LocationRef {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        NestedLocationWrite::schemas(schemas);
    }
}

/// A floor plan by id, or written in the request.
#[derive(Debug)]
pub enum FloorplanRef {
    /// An existing floor plan.
    Id(Uuid),
    /// A floor plan to add (or the device's to change).
    New(FloorWrite),
}

impl<'de> Deserialize<'de> for FloorplanRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => parse_uuid(&s)
                .map(FloorplanRef::Id)
                .ok_or_else(|| de::Error::custom(NO_FLOORPLAN)),
            value @ Value::Object(_) => Nested::<FloorWrite>::deserialize(value)
                .map(|n| FloorplanRef::New(n.0))
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(NO_FLOORPLAN)),
        }
    }
}

impl PartialSchema for FloorplanRef {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(id_schema())
                .item(FloorWrite::schema())
                .build(),
        ))
    }
}

impl ToSchema for FloorplanRef {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        FloorWrite::schemas(schemas);
    }
}

/// Indoor coordinates: two numbers separated by a comma; blank is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Indoor(pub Option<String>);

const BAD_INDOOR: &str = "Enter two numbers separated by a comma (\"y,x\"), e.g. \"-36,264\".";

impl<'de> Deserialize<'de> for Indoor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = match Value::deserialize(deserializer)? {
            Value::String(s) => s,
            _ => return Err(de::Error::custom("Not a valid string.")),
        };
        if text.trim().is_empty() {
            return Ok(Indoor(None));
        }
        if text.chars().count() > 64 {
            return Err(de::Error::custom(
                "Ensure this field has no more than 64 characters.",
            ));
        }
        let numbers = text
            .split_once(',')
            .map(|(y, x)| (y.trim().parse::<f64>(), x.trim().parse::<f64>()));
        match numbers {
            Some((Ok(y), Ok(x))) if y.is_finite() && x.is_finite() => Ok(Indoor(Some(text))),
            _ => Err(de::Error::custom(BAD_INDOOR)),
        }
    }
}

impl PartialSchema for Indoor {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::String,
                    Type::Null,
                ]))
                .max_length(Some(64))
                .pattern(Some(
                    r"^\s*$|^\s*-?[0-9]+(\.[0-9]+)?\s*,\s*-?[0-9]+(\.[0-9]+)?\s*$",
                ))
                .build(),
        ))
    }
}

impl ToSchema for Indoor {}

type Current = Option<(DeviceLocation, Location, Option<FloorPlan>)>;

async fn placement_of(state: &AppState, device: &Device) -> Result<Current, ApiError> {
    let id = device.id;
    Ok(state.store().run(move |db| db.device_placement(id)).await?)
}

/// Shows where a device is placed.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/location/", tag = "locations",
    params(PathId), responses((status = 200, body = DeviceLocationView)),
    security(("bearer" = [])))]
async fn get_device_location(
    State(state): State<AppState>,
    auth: Authorized<DeviceLocations, View>,
    PathId(id): PathId,
) -> Result<Json<DeviceLocationView>, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    let (link, location, plan) = placement_of(&state, &device)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(link, location, plan)))
}

fn floorplan_error(errors: Value) -> ApiError {
    ApiError::Validation(Map::from_iter([("floorplan".to_owned(), errors)]))
}

/// Places a device (PUT creates: 201, then updates: 200) or, with PATCH, changes its
/// placement. JSON or multipart (dotted names; `floorplan.image` uploads a floor plan).
#[utoipa::path(method(put, patch), path = "/api/v1/controller/device/{id}/location/",
    tag = "locations", params(PathId),
    request_body(content((DeviceLocationWrite = "application/json"), (DeviceLocationWrite = "multipart/form-data"))),
    responses((status = 200, body = DeviceLocationView), (status = 201, body = DeviceLocationView)),
    security(("bearer" = [])))]
async fn put_device_location(
    State(state): State<AppState>,
    auth: Authorized<DeviceLocations, Change>,
    PathId(id): PathId,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<DeviceLocationView>), ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    let partial = request.method() == axum::http::Method::PATCH;
    let current = placement_of(&state, &device).await?;
    if partial && current.is_none() {
        return Err(ApiError::NotFound);
    }
    let mut form = Form::read(&state, request, "floorplan.image").await?;
    let body: DeviceLocationWrite = form.body().read()?;
    let org = device.fields.organization;

    // The location: an existing one of the device's organization, or written here.
    let (location_choice, location_kind, location_id) = match body.location {
        Some(LocationRef::Id(lid)) => {
            let found = state
                .store()
                .run(move |db| db.location(LocationId(lid)))
                .await?
                .filter(|l| l.organization == org && auth.caller.manages(l.organization))
                .ok_or_else(|| ApiError::field("location", NO_LOCATION))?;
            (
                Some(LocationChoice::Existing(found.id)),
                found.kind,
                Some(found.id),
            )
        }
        Some(LocationRef::New(nested)) => {
            let over = current.as_ref().map(|(_, l, _)| l.fields());
            let fields = nested.parts().apply(org, over).map_err(|e| match e {
                ApiError::Validation(map) => ApiError::Validation(Map::from_iter([(
                    "location".to_owned(),
                    Value::Object(map),
                )])),
                other => other,
            })?;
            let kind = fields.kind;
            let id = current.as_ref().map(|(_, l, _)| l.id);
            (Some(LocationChoice::Write(fields)), kind, id)
        }
        None => match &current {
            Some((_, l, _)) => (None, l.kind, Some(l.id)),
            None => return Err(ApiError::field("location", REQUIRED)),
        },
    };

    // The floor plan: an existing one of that location, one written here, or none.
    let mut upload = form.image.take();
    let floorplan_choice = match body.floorplan {
        Some(None) => Some(FloorplanChoice::Clear),
        Some(Some(FloorplanRef::Id(pid))) => {
            let plan = state
                .store()
                .run(move |db| db.floorplan(FloorPlanId(pid)))
                .await?
                .filter(|p| p.organization == org)
                .ok_or_else(|| floorplan_error(json!([NO_FLOORPLAN])))?;
            if Some(plan.location) != location_id {
                return Err(ApiError::field("__all__", OTHER_LOCATION));
            }
            Some(FloorplanChoice::Existing(plan.id))
        }
        Some(Some(FloorplanRef::New(FloorWrite { floor }))) => Some(FloorplanChoice::Write {
            floor: floor.map(|f| f.0),
            image: upload.as_ref().map(|u| u.image.clone()),
        }),
        None if upload.is_some() => Some(FloorplanChoice::Write {
            floor: None,
            image: upload.as_ref().map(|u| u.image.clone()),
        }),
        None => None,
    };
    if let Some(FloorplanChoice::Write { floor, image }) = &floorplan_choice {
        if location_kind != LocationType::Indoor {
            return Err(floorplan_error(json!([OUTDOOR_FLOORPLAN])));
        }
        let has_plan = current
            .as_ref()
            .and_then(|(_, _, p)| p.as_ref())
            .is_some_and(|p| Some(p.location) == location_id);
        if !has_plan {
            let mut missing = Map::new();
            if floor.is_none() {
                missing.insert("floor".into(), json!([REQUIRED]));
            }
            if image.is_none() {
                missing.insert("image".into(), json!(["No file was submitted."]));
            }
            if !missing.is_empty() {
                return Err(floorplan_error(Value::Object(missing)));
            }
        }
    }
    if matches!(floorplan_choice, Some(FloorplanChoice::Existing(_)))
        && location_kind != LocationType::Indoor
    {
        return Err(floorplan_error(json!([OUTDOOR_FLOORPLAN])));
    }
    let placement = Placement {
        location: location_choice,
        floorplan: floorplan_choice,
        indoor: body.indoor.map(|i| i.and_then(|i| i.0)),
    };
    let device_id = device.id;
    let placed = state
        .store()
        .run(move |db| {
            let placed = db.place_device(device_id, placement)?;
            if let Some(upload) = upload.take() {
                upload.keep();
            }
            Ok(placed)
        })
        .await?;
    remove_files(&state, placed.released).await;
    // Software filters by location may match it now.
    state.hooks().software_changed(device.fields.organization);
    let status = if placed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(view(placed.link, placed.location, placed.floorplan)),
    ))
}

/// Removes a device's placement (its location stays).
#[utoipa::path(delete, path = "/api/v1/controller/device/{id}/location/", tag = "locations",
    params(PathId), responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
async fn delete_device_location(
    State(state): State<AppState>,
    auth: Authorized<DeviceLocations, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    state
        .store()
        .run(move |db| db.remove_device_location(device.id))
        .await?;
    state.hooks().software_changed(device.fields.organization);
    Ok(StatusCode::NO_CONTENT)
}
