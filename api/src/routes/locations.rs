//! `/api/v1/controller/location/`: locations (a point or an area, indoor with floor plans or
//! outdoor), the devices placed at one, and `geojson/`: the located ones as a GeoJSON
//! FeatureCollection.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use fleetmq_store::{
    Location, LocationFields, LocationFilter, LocationId, LocationType, OrgId, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::floorplans::{Floor, Form, remove_files};
use super::geometry::{GeometryField, geojson};
use crate::auth::{Add, Authorized, Caller, Change, Delete, Devices, Locations, View};
use crate::body::{Bounded, NOT_NULL, NonBlank, NullablePk, REQUIRED, does_not_exist, text_field};
use crate::extract::{PathId, QueryPairs};
use crate::filters::{BoolFilter, Filters, UuidFilter, choice_schema, invalid_choice};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::devices::DeviceView;
use crate::{ApiError, AppState};

/// The location routes (forms with floor plan images bypass the JSON body limit).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_locations, create_location))
        .routes(routes!(geojson_locations))
        .routes(routes!(get_location, change_location, delete_location))
        .routes(routes!(location_devices))
        .layer(DefaultBodyLimit::disable())
}

/// OpenWISP's refusal of a floor plan on an outdoor location.
pub const OUTDOOR_FLOORPLAN: &str = "Floorplan can only be added with location of the type indoor";

/// A location as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationView {
    /// Identity.
    pub id: Uuid,
    /// Owning organization.
    pub organization: Uuid,
    /// Display name.
    pub name: String,
    /// `outdoor` or `indoor`.
    #[serde(rename = "type")]
    #[schema(value_type = LocationKind)]
    pub kind: LocationKind,
    /// Moves with its device (its device reports the coordinates).
    pub is_mobile: bool,
    /// Postal address.
    pub address: String,
    /// GeoJSON Point or Polygon.
    #[schema(value_type = Option<Object>)]
    pub geometry: Option<Value>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
    /// Its floor plans, newest first.
    pub floorplan: Vec<LocationFloorView>,
}

/// A floor plan as its location shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationFloorView {
    /// Floor number.
    pub floor: i32,
    /// Where its image is downloaded.
    pub image: String,
}

/// Indoor or outdoor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LocationKind {
    /// A place on a map.
    Outdoor,
    /// A building with floor plans.
    Indoor,
}

impl From<LocationKind> for LocationType {
    fn from(kind: LocationKind) -> Self {
        match kind {
            LocationKind::Outdoor => LocationType::Outdoor,
            LocationKind::Indoor => LocationType::Indoor,
        }
    }
}

impl From<LocationType> for LocationKind {
    fn from(kind: LocationType) -> Self {
        match kind {
            LocationType::Outdoor => LocationKind::Outdoor,
            LocationType::Indoor => LocationKind::Indoor,
        }
    }
}

/// A yes/no field that a form sends as text (`true`, `false`, `1`, `0`), as DRF reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormBool(pub bool);

impl<'de> Deserialize<'de> for FormBool {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Bool(b) => Ok(FormBool(b)),
            Value::String(s) => match s.as_str() {
                "true" | "True" | "1" | "on" => Ok(FormBool(true)),
                "false" | "False" | "0" | "off" | "" => Ok(FormBool(false)),
                _ => Err(serde::de::Error::custom("Must be a valid boolean.")),
            },
            Value::Number(n) if n.as_u64() == Some(1) => Ok(FormBool(true)),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(FormBool(false)),
            Value::Null => Err(serde::de::Error::custom(NOT_NULL)),
            _ => Err(serde::de::Error::custom("Must be a valid boolean.")),
        }
    }
}

impl utoipa::PartialSchema for FormBool {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        bool::schema()
    }
}

impl ToSchema for FormBool {}

/// A floor plan written with its location: a floor (the image comes in the multipart form
/// as `floorplan.image`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct FloorWrite {
    /// Floor number.
    #[schema(nullable = false)]
    pub floor: Option<Floor>,
}

/// What a client sends to create, replace or change a location: JSON, or a multipart form
/// with `floorplan.floor` and `floorplan.image` (indoor locations).
#[derive(Debug, Deserialize, ToSchema)]
pub struct LocationWrite {
    /// Owning organization.
    #[schema(required = true, value_type = Uuid)]
    organization: Option<NullablePk>,
    /// Display name.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<75>>,
    /// `outdoor` or `indoor`.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false)]
    kind: Option<LocationKind>,
    /// Moves with its device.
    #[schema(nullable = false)]
    is_mobile: Option<FormBool>,
    /// Postal address.
    #[schema(nullable = false)]
    address: Option<Bounded<256>>,
    /// GeoJSON Point or Polygon, or WKT.
    geometry: Option<Option<GeometryField>>,
    /// A floor plan to add (or, on change, the newest one's new floor); indoor only.
    floorplan: Option<Option<crate::body::Nested<FloorWrite>>>,
}

/// The location part of a write: shared by the location routes and the nested location of a
/// device location.
#[derive(Debug, Default)]
pub struct LocationParts {
    /// Display name.
    pub name: Option<String>,
    /// Indoor or outdoor.
    pub kind: Option<LocationType>,
    /// Moves with its device.
    pub is_mobile: Option<bool>,
    /// Postal address.
    pub address: Option<String>,
    /// Where it is.
    pub geometry: Option<Option<fleetmq_store::Geometry>>,
}

impl LocationParts {
    /// The fields after this write, over `current` or new ones of `organization` (then name
    /// and type are required).
    pub fn apply(
        self,
        organization: OrgId,
        current: Option<LocationFields>,
    ) -> Result<LocationFields, ApiError> {
        let mut fields = match current {
            Some(current) => current,
            None => {
                let mut missing = serde_json::Map::new();
                if self.name.is_none() {
                    missing.insert("name".into(), json!([REQUIRED]));
                }
                if self.kind.is_none() {
                    missing.insert("type".into(), json!([REQUIRED]));
                }
                if !missing.is_empty() {
                    return Err(ApiError::Validation(missing));
                }
                LocationFields {
                    organization,
                    name: String::new(),
                    kind: LocationType::Outdoor,
                    is_mobile: false,
                    address: String::new(),
                    geometry: None,
                }
            }
        };
        fields.organization = organization;
        if let Some(v) = self.name {
            fields.name = v;
        }
        if let Some(v) = self.kind {
            fields.kind = v;
        }
        if let Some(v) = self.is_mobile {
            fields.is_mobile = v;
        }
        if let Some(v) = self.address {
            fields.address = v;
        }
        if let Some(v) = self.geometry {
            fields.geometry = v;
        }
        Ok(fields)
    }
}

/// The location written inside a device location (its organization is the device's).
#[derive(Debug, Deserialize, ToSchema)]
pub struct NestedLocationWrite {
    /// Display name.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<75>>,
    /// `outdoor` or `indoor`.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false)]
    kind: Option<LocationKind>,
    /// Moves with its device.
    #[schema(nullable = false)]
    is_mobile: Option<FormBool>,
    /// Postal address.
    #[schema(nullable = false)]
    address: Option<Bounded<256>>,
    /// GeoJSON Point or Polygon, or WKT.
    geometry: Option<Option<GeometryField>>,
}

impl NestedLocationWrite {
    /// Its parts.
    pub fn parts(self) -> LocationParts {
        LocationParts {
            name: self.name.map(|n| n.0),
            kind: self.kind.map(Into::into),
            is_mobile: self.is_mobile.map(|b| b.0),
            address: self.address.map(|a| a.0),
            geometry: self.geometry.map(|g| g.map(|g| g.0)),
        }
    }
}

/// A location as shown, with its floor plans (newest first).
pub fn view(location: Location, floorplans: Vec<fleetmq_store::FloorPlan>) -> LocationView {
    LocationView {
        id: location.id.0,
        organization: location.organization.0,
        name: location.name,
        kind: location.kind.into(),
        is_mobile: location.is_mobile,
        address: location.address,
        geometry: location.geometry.as_ref().map(geojson),
        created: location.created.to_string(),
        modified: location.modified.to_string(),
        floorplan: floorplans
            .into_iter()
            .map(|p| LocationFloorView {
                floor: p.floor,
                image: super::floorplans::image_path(p.id),
            })
            .collect(),
    }
}

/// The location `id` if the caller may see it; else not found.
pub async fn visible_location(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Location, ApiError> {
    let id = LocationId(id);
    state
        .store()
        .run(move |db| db.location(id))
        .await?
        .filter(|l| caller.manages(l.organization))
        .ok_or(ApiError::NotFound)
}

/// The caller's scope narrowed by `organization` (an id) and `organization_slug` filters;
/// `None` when nothing can match.
pub async fn narrow_scope(
    state: &AppState,
    caller: &Caller,
    scope: &Scope,
    organization: Option<&str>,
    slug: Option<String>,
) -> Result<Option<Scope>, ApiError> {
    let mut scope = scope.clone();
    if let Some(v) = organization {
        match crate::body::parse_uuid(v)
            .map(OrgId)
            .filter(|o| scope.contains(*o))
        {
            Some(org) => scope = Scope::Orgs(vec![org]),
            None => {
                return Err(ApiError::field(
                    "organization",
                    "Select a valid choice. That choice is not one of the available choices.",
                ));
            }
        }
    }
    if let Some(slug) = slug {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| scope.contains(o.id) && caller.manages(o.id)) {
            Some(org) => scope = Scope::Orgs(vec![org.id]),
            None => return Ok(None),
        }
    }
    Ok(Some(scope))
}

text_field!(
    /// A location type (filter).
    KindFilter(LocationType),
    |s: &str| match s {
        "outdoor" => Ok(LocationType::Outdoor),
        "indoor" => Ok(LocationType::Indoor),
        other => Err(invalid_choice(other)),
    },
    choice_schema(["outdoor", "indoor"]),
);

/// Filters of the location list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LocationQuery {
    /// Organization id.
    #[param(inline, value_type = Option<UuidFilter>)]
    organization: Option<String>,
    /// Organization slug.
    organization_slug: Option<String>,
    /// `outdoor` or `indoor`.
    #[param(inline)]
    #[serde(rename = "type")]
    kind: Option<KindFilter>,
    /// Mobile locations only (or fixed ones only).
    #[param(inline)]
    is_mobile: Option<BoolFilter>,
}

/// Lists locations of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/controller/location/", tag = "locations",
    params(PageQuery, LocationQuery), responses((status = 200, body = Paginated<LocationView>)),
    security(("bearer" = [])))]
async fn list_locations(
    State(state): State<AppState>,
    auth: Authorized<Locations, View>,
    paging: Paging,
    Filters(query): Filters<LocationQuery>,
) -> Result<Json<Paginated<LocationView>>, ApiError> {
    let Some(scope) = narrow_scope(
        &state,
        &auth.caller,
        &auth.scope,
        query.organization.as_deref(),
        query.organization_slug,
    )
    .await?
    else {
        return paging.empty();
    };
    let filter = LocationFilter {
        kind: query.kind.map(|k| k.0),
        is_mobile: query.is_mobile.map(|b| b.0),
    };
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| {
            let page = db.list_locations(&scope, &filter, request)?;
            let mut items = Vec::new();
            for location in page.items {
                let plans = db.location_floorplans(location.id)?;
                items.push((location, plans));
            }
            Ok(fleetmq_store::Page {
                count: page.count,
                items,
            })
        })
        .await?;
    paging.envelope(page, |(l, p)| view(l, p))
}

/// Reads a location write: the organization (one the caller manages), the location's parts
/// and the floor plan asked for.
async fn read_write(
    state: &AppState,
    caller: &Caller,
    form: &mut Form,
    current: Option<&Location>,
) -> Result<(OrgId, LocationParts, Option<Option<FloorWrite>>), ApiError> {
    let body: LocationWrite = form.body().read()?;
    let organization = match body.organization {
        None => current
            .map(|l| l.organization)
            .ok_or_else(|| ApiError::field("organization", REQUIRED))?,
        Some(NullablePk(None)) => return Err(ApiError::field("organization", NOT_NULL)),
        Some(NullablePk(Some(id))) => caller
            .managed_org(state, id)
            .await?
            .ok_or_else(|| ApiError::field("organization", does_not_exist(&id.to_string())))?,
    };
    let parts = LocationParts {
        name: body.name.map(|n| n.0),
        kind: body.kind.map(Into::into),
        is_mobile: body.is_mobile.map(|b| b.0),
        address: body.address.map(|a| a.0),
        geometry: body.geometry.map(|g| g.map(|g| g.0)),
    };
    Ok((organization, parts, body.floorplan.map(|f| f.map(|n| n.0))))
}

/// Whether the write asks for a floor plan (a floor given, or an image uploaded).
fn wants_floorplan(floor: &Option<Option<FloorWrite>>, form: &Form) -> bool {
    form.image.is_some() || matches!(floor, Some(Some(FloorWrite { floor: Some(_) })))
}

/// Creates a location, and with `floorplan.floor` and `floorplan.image` (multipart) its first
/// floor plan.
#[utoipa::path(post, path = "/api/v1/controller/location/", tag = "locations",
    request_body(content((LocationWrite = "application/json"), (LocationWrite = "multipart/form-data"))),
    responses((status = 201, body = LocationView)), security(("bearer" = [])))]
async fn create_location(
    State(state): State<AppState>,
    auth: Authorized<Locations, Add>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<LocationView>), ApiError> {
    let mut form = Form::read(&state, request, "floorplan.image").await?;
    let (organization, parts, floor) = read_write(&state, &auth.caller, &mut form, None).await?;
    let fields = parts.apply(organization, None)?;
    let plan = if wants_floorplan(&floor, &form) {
        if fields.kind != LocationType::Indoor {
            return Err(ApiError::field("type", OUTDOOR_FLOORPLAN));
        }
        let floor = floor.flatten().and_then(|f| f.floor).ok_or_else(|| {
            ApiError::Validation(serde_json::Map::from_iter([(
                "floorplan".to_owned(),
                json!({"floor": [REQUIRED]}),
            )]))
        })?;
        let upload = form.image.take().ok_or_else(|| {
            ApiError::Validation(serde_json::Map::from_iter([(
                "floorplan".to_owned(),
                json!({"image": ["No file was submitted."]}),
            )]))
        })?;
        Some((floor.0, upload))
    } else {
        None
    };
    let (location, plans) = state
        .store()
        .run(move |db| {
            let location = db.create_location(fields)?;
            let mut plans = Vec::new();
            if let Some((floor, upload)) = plan {
                match db.create_floorplan(location.id, floor, upload.image.clone()) {
                    Ok(plan) => {
                        upload.keep();
                        plans.push(plan);
                    }
                    Err(e) => {
                        db.delete_location(location.id)?;
                        return Err(e);
                    }
                }
            }
            Ok((location, plans))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view(location, plans))))
}

/// Shows a location with its floor plans.
#[utoipa::path(get, path = "/api/v1/controller/location/{id}/", tag = "locations",
    params(PathId), responses((status = 200, body = LocationView)), security(("bearer" = [])))]
async fn get_location(
    State(state): State<AppState>,
    auth: Authorized<Locations, View>,
    PathId(id): PathId,
) -> Result<Json<LocationView>, ApiError> {
    let location = visible_location(&state, &auth.caller, id).await?;
    let plans = state
        .store()
        .run(move |db| db.location_floorplans(location.id))
        .await?;
    Ok(Json(view(location, plans)))
}

/// Replaces or changes a location. `floorplan.floor`/`floorplan.image` change its newest floor
/// plan (or add one); becoming outdoor removes its floor plans, as in OpenWISP.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/location/{id}/", tag = "locations",
    params(PathId),
    request_body(content((LocationWrite = "application/json"), (LocationWrite = "multipart/form-data"))),
    responses((status = 200, body = LocationView)), security(("bearer" = [])))]
async fn change_location(
    State(state): State<AppState>,
    auth: Authorized<Locations, Change>,
    PathId(id): PathId,
    request: axum::extract::Request,
) -> Result<Json<LocationView>, ApiError> {
    let current = visible_location(&state, &auth.caller, id).await?;
    let mut form = Form::read(&state, request, "floorplan.image").await?;
    let (organization, parts, floor) =
        read_write(&state, &auth.caller, &mut form, Some(&current)).await?;
    let asked_kind = parts.kind;
    let fields = parts.apply(organization, Some(current.fields()))?;
    let plan = if wants_floorplan(&floor, &form) {
        if asked_kind == Some(LocationType::Outdoor)
            || (asked_kind.is_none() && fields.kind != LocationType::Indoor)
        {
            return Err(ApiError::field("type", OUTDOOR_FLOORPLAN));
        }
        Some((
            floor.flatten().and_then(|f| f.floor).map(|f| f.0),
            form.image.take(),
        ))
    } else {
        None
    };
    let (location, plans, released) = state
        .store()
        .run(move |db| {
            let (location, mut released) = db.update_location(current.id, fields)?;
            if let Some((floor, upload)) = plan {
                let newest = db.location_floorplans(location.id)?.into_iter().next();
                let image = upload.as_ref().map(|u| u.image.clone());
                match (newest, floor, image) {
                    (Some(plan), floor, image) => {
                        let (_, files) = db.update_floorplan(
                            plan.id,
                            location.id,
                            floor.unwrap_or(plan.floor),
                            image,
                        )?;
                        released.extend(files);
                    }
                    (None, Some(floor), Some(image)) => {
                        db.create_floorplan(location.id, floor, image)?;
                    }
                    (None, _, _) => {}
                }
                if let Some(upload) = upload {
                    upload.keep();
                }
            }
            let plans = db.location_floorplans(location.id)?;
            Ok((location, plans, released))
        })
        .await?;
    remove_files(&state, released).await;
    Ok(Json(view(location, plans)))
}

/// Deletes a location with its floor plans (and their images); devices placed there lose
/// their location.
#[utoipa::path(delete, path = "/api/v1/controller/location/{id}/", tag = "locations",
    params(PathId), responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_location(
    State(state): State<AppState>,
    auth: Authorized<Locations, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let location = visible_location(&state, &auth.caller, id).await?;
    let released = state
        .store()
        .run(move |db| db.delete_location(location.id))
        .await?;
    remove_files(&state, released).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The devices at a location, and whether any is on a floor plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationDevices {
    /// Devices in the whole list.
    pub count: u64,
    /// Next page.
    pub next: Option<String>,
    /// Previous page.
    pub previous: Option<String>,
    /// This page.
    pub results: Vec<DeviceView>,
    /// Whether any device at the location is placed on a floor plan.
    pub has_floorplan: bool,
}

/// Lists the devices placed at a location, newest first.
#[utoipa::path(get, path = "/api/v1/controller/location/{id}/device/", tag = "locations",
    params(PathId, PageQuery), responses((status = 200, body = LocationDevices)),
    security(("bearer" = [])))]
async fn location_devices(
    State(state): State<AppState>,
    auth: Authorized<Locations, View>,
    _devices: Authorized<Devices, View>,
    PathId(id): PathId,
    paging: Paging,
) -> Result<Json<LocationDevices>, ApiError> {
    let location = visible_location(&state, &auth.caller, id).await?;
    let request = paging.request();
    let (page, has_floorplan) = state
        .store()
        .run(move |db| {
            let (page, has_floorplan) = db.devices_at(location.id, request)?;
            Ok((super::devices::with_presence(db, page)?, has_floorplan))
        })
        .await?;
    let Json(page) = paging.envelope(page, |(d, presence)| {
        super::devices::view(d, presence, false)
    })?;
    Ok(Json(LocationDevices {
        count: page.count,
        next: page.next,
        previous: page.previous,
        results: page.results,
        has_floorplan,
    }))
}

/// The located locations, as GeoJSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationCollection {
    /// Always `FeatureCollection`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Locations in the whole list.
    pub count: u64,
    /// Next page.
    pub next: Option<String>,
    /// Previous page.
    pub previous: Option<String>,
    /// This page.
    pub features: Vec<LocationFeature>,
}

/// A location with devices, as a GeoJSON Feature.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationFeature {
    /// Always `Feature`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The location's id.
    pub id: Uuid,
    /// GeoJSON Point or Polygon.
    #[schema(value_type = Option<Object>)]
    pub geometry: Option<Value>,
    /// The location's other fields.
    pub properties: LocationProperties,
}

/// The properties of a [`LocationFeature`] (OpenWISP's `GeoJsonLocationSerializer`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LocationProperties {
    /// Owning organization.
    pub organization: Uuid,
    /// Display name.
    pub name: String,
    /// `outdoor` or `indoor`.
    #[serde(rename = "type")]
    pub kind: LocationKind,
    /// Moves with its device.
    pub is_mobile: bool,
    /// Postal address.
    pub address: String,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
    /// Devices placed there.
    pub device_count: u64,
}

/// Filters of the GeoJSON list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GeoJsonQuery {
    /// Organization id.
    #[param(inline, value_type = Option<UuidFilter>)]
    organization: Option<String>,
    /// Organization id (OpenWISP's documented name).
    #[param(inline, value_type = Option<UuidFilter>)]
    organization_id: Option<String>,
    /// Organization slug.
    organization_slug: Option<String>,
    /// `outdoor` or `indoor`.
    #[param(inline)]
    #[serde(rename = "type")]
    kind: Option<KindFilter>,
    /// Mobile locations only (or fixed ones only).
    #[param(inline)]
    is_mobile: Option<BoolFilter>,
}

/// Locations per GeoJSON page unless `page_size` says otherwise (OpenWISP's).
const GEOJSON_PAGE: u64 = 1000;

/// Lists the locations devices are placed at, newest first, as a GeoJSON FeatureCollection
/// (1000 a page).
#[utoipa::path(get, path = "/api/v1/controller/location/geojson/", tag = "locations",
    params(PageQuery, GeoJsonQuery), responses((status = 200, body = LocationCollection)),
    security(("bearer" = [])))]
async fn geojson_locations(
    State(state): State<AppState>,
    auth: Authorized<Locations, View>,
    query: QueryPairs,
    Filters(filters): Filters<GeoJsonQuery>,
) -> Result<Json<LocationCollection>, ApiError> {
    let asked = PageQuery::from_query(&query)?;
    let empty = || LocationCollection {
        kind: "FeatureCollection",
        count: 0,
        next: None,
        previous: None,
        features: Vec::new(),
    };
    let organization = filters.organization.or(filters.organization_id);
    let Some(scope) = narrow_scope(
        &state,
        &auth.caller,
        &auth.scope,
        organization.as_deref(),
        filters.organization_slug,
    )
    .await?
    else {
        return Ok(Json(empty()));
    };
    let located = state.store().run(move |db| db.located(&scope)).await?;
    let kind = filters.kind.map(|k| k.0);
    let mobile = filters.is_mobile.map(|b| b.0);
    let located: Vec<_> = located
        .into_iter()
        .filter(|(l, _)| {
            kind.is_none_or(|k| k == l.kind) && mobile.is_none_or(|m| m == l.is_mobile)
        })
        .collect();
    let size = asked
        .page_size
        .map_or(GEOJSON_PAGE, |n| n.unsigned_abs().min(GEOJSON_PAGE));
    let number = asked.page.map_or(1, |n| n.unsigned_abs());
    let count = located.len() as u64;
    let offset = (number - 1).saturating_mul(size);
    if number > 1 && offset >= count {
        return Err(ApiError::InvalidPage);
    }
    let link = |page: u64| {
        let mut pairs: Vec<String> = query
            .0
            .iter()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::extract::percent_encode(k),
                    crate::extract::percent_encode(v)
                )
            })
            .collect();
        if page > 1 {
            pairs.push(format!("page={page}"));
        }
        let query = if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", pairs.join("&"))
        };
        format!("/api/v1/controller/location/geojson/{query}")
    };
    let features = located
        .into_iter()
        .skip(offset as usize)
        .take(size as usize)
        .map(|(l, device_count)| LocationFeature {
            kind: "Feature",
            id: l.id.0,
            geometry: l.geometry.as_ref().map(geojson),
            properties: LocationProperties {
                organization: l.organization.0,
                name: l.name,
                kind: l.kind.into(),
                is_mobile: l.is_mobile,
                address: l.address,
                created: l.created.to_string(),
                modified: l.modified.to_string(),
                device_count,
            },
        })
        .collect();
    Ok(Json(LocationCollection {
        kind: "FeatureCollection",
        count,
        next: (number.saturating_mul(size) < count).then(|| link(number + 1)),
        previous: (number > 1).then(|| link(number - 1)),
        features,
    }))
}
