//! `/api/v1/controller/floorplan/`: floor plans of indoor locations — a floor number and a
//! map image (PNG or JPEG, checked by its bytes, at most the configured size), uploaded as
//! multipart and served back at `{id}/image/`.
//!
//! Also the form reading the location and device-location routes share: a write body sent as
//! JSON or as a multipart form whose dotted names nest (`floorplan.floor` →
//! `{"floorplan": {"floor": ...}}`), with its image streamed into the floor plan files.

use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetmq_store::{
    BlobError, FloorPlan, FloorPlanId, LocationId, LocationType, PlanImage, PlanImageId, StoredBlob,
};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Caller, Change, Delete, FloorPlans, View};
use crate::body::{Body, Pk, REQUIRED, does_not_exist};
use crate::extract::JsonObject;
use crate::filters::{Filters, UuidFilter};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::locations::{OUTDOOR_FLOORPLAN, narrow_scope, visible_location};
use crate::{ApiError, AppState};

/// The floor plan routes (uploads bypass the JSON body limit and have their own).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_floorplans, create_floorplan))
        .routes(routes!(get_floorplan, change_floorplan, delete_floorplan))
        .routes(routes!(floorplan_image))
        .layer(DefaultBodyLimit::disable())
}

/// DRF's message for a file that is not an image.
pub const NOT_AN_IMAGE: &str =
    "Upload a valid image. The file you uploaded was either not an image or a corrupted image.";
/// DRF's message for an image field sent as text.
const NOT_A_FILE: &str = "The submitted data was not a file. Check the encoding type on the form.";

/// A floor plan as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FloorPlanView {
    /// Identity.
    pub id: Uuid,
    /// `<location name> <ordinal> Floor`, as OpenWISP names it.
    pub name: String,
    /// Floor number.
    pub floor: i32,
    /// Where the image is downloaded (with a token).
    pub image: String,
    /// Its location.
    pub location: Uuid,
    /// Its location's organization.
    pub organization: Uuid,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends as JSON to change a floor plan (a new image needs the multipart form).
#[derive(Debug, Deserialize, ToSchema)]
pub struct FloorPlanWrite {
    /// The indoor location.
    #[schema(required = true, nullable = false)]
    location: Option<Pk>,
    /// Floor number (negative below ground), unique per location.
    #[schema(required = true, nullable = false)]
    floor: Option<Floor>,
}

/// The multipart form creating or replacing a floor plan.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FloorPlanUpload {
    /// The indoor location.
    #[schema(value_type = Uuid)]
    location: String,
    /// Floor number.
    #[schema(value_type = i16)]
    floor: String,
    /// PNG or JPEG, at most the configured size.
    #[schema(value_type = String, format = Binary)]
    image: String,
}

/// A floor number: an integer (or its text, from a form) that fits a small integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor(pub i32);

impl<'de> Deserialize<'de> for Floor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = match Value::deserialize(deserializer)? {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            Value::Null => return Err(de::Error::custom(crate::body::NOT_NULL)),
            _ => None,
        };
        let number = number.ok_or_else(|| de::Error::custom("A valid integer is required."))?;
        if number < i64::from(i16::MIN) {
            return Err(de::Error::custom(
                "Ensure this value is greater than or equal to -32768.",
            ));
        }
        if number > i64::from(i16::MAX) {
            return Err(de::Error::custom(
                "Ensure this value is less than or equal to 32767.",
            ));
        }
        Ok(Floor(number as i32))
    }
}

impl PartialSchema for Floor {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(i16::MIN))
                .maximum(Some(i16::MAX))
                .build(),
        ))
    }
}

impl ToSchema for Floor {}

/// `1st`, `2nd`, `3rd`, `11th`, `-1st` (Django's `ordinal`).
fn ordinal(n: i32) -> String {
    let abs = n.unsigned_abs();
    let suffix = match (abs % 10, abs % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The download path of a floor plan's image.
pub fn image_path(id: FloorPlanId) -> String {
    format!("/api/v1/controller/floorplan/{id}/image/")
}

/// A floor plan as shown, named after its location.
pub fn view(plan: FloorPlan, location_name: &str) -> FloorPlanView {
    FloorPlanView {
        id: plan.id.0,
        name: format!("{location_name} {} Floor", ordinal(plan.floor)),
        floor: plan.floor,
        image: image_path(plan.id),
        location: plan.location.0,
        organization: plan.organization.0,
        created: plan.created.to_string(),
        modified: plan.modified.to_string(),
    }
}

/// An uploaded image in the floor plan files whose record may not be committed yet; its file
/// is removed when dropped unless [`Upload::keep`] is called.
#[derive(Debug)]
pub struct Upload {
    /// What the record keeps of it.
    pub image: PlanImage,
    blob: StoredBlob,
}

impl Upload {
    /// Its record is committed: the file stays.
    pub fn keep(self) {
        self.blob.keep();
    }
}

/// A write body as JSON or as a multipart form, and the image a form carried.
#[derive(Debug)]
pub struct Form {
    map: Map<String, Value>,
    partial: bool,
    /// The image, stored and checked.
    pub image: Option<Upload>,
}

/// `errors` with `message` under the dotted `path` (`floorplan.image` nests).
fn nested_error(path: &str, message: &str) -> ApiError {
    let mut value = json!([message]);
    for part in path.rsplit('.') {
        value = json!({ part: value });
    }
    match value {
        Value::Object(map) => ApiError::Validation(map),
        _ => ApiError::field(path, message),
    }
}

/// Puts `value` at the dotted `name` of `map`; a name under a key that holds no object is
/// dropped (the plain field wins, as DRF reads it).
fn insert_dotted(map: &mut Map<String, Value>, name: &str, value: Value) {
    let mut parts = name.split('.').peekable();
    let mut current = map;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let next = current
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        match next {
            Value::Object(inner) => current = inner,
            _ => return,
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Multipart form parse error - {e}"))
}

impl Form {
    /// Reads `request`: JSON, or a multipart form whose part named `image_field` is the image
    /// (streamed into the floor plan files, at most the configured size, then checked to be a
    /// PNG or JPEG). Whatever refuses the request leaves no file.
    pub async fn read(
        state: &AppState,
        request: axum::extract::Request,
        image_field: &str,
    ) -> Result<Form, ApiError> {
        let partial = request.method() == axum::http::Method::PATCH;
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type.starts_with("multipart/form-data") {
            let JsonObject(map) = JsonObject::from_request(request, state).await?;
            if map.contains_key(image_field) {
                return Err(nested_error(image_field, NOT_A_FILE));
            }
            return Ok(Form {
                map,
                partial,
                image: None,
            });
        }
        let mut multipart =
            <Multipart as axum::extract::FromRequest<AppState>>::from_request(request, state)
                .await
                .map_err(malformed)?;
        let mut map = Map::new();
        let mut image = None;
        while let Some(field) = multipart.next_field().await.map_err(malformed)? {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            if name == image_field {
                if image.is_none() {
                    image = Some(store_image(state, field, image_field).await?);
                }
                continue;
            }
            let text = field.text().await.map_err(malformed)?;
            insert_dotted(&mut map, &name, Value::String(text));
        }
        Ok(Form {
            map,
            partial,
            image,
        })
    }

    /// The body part, for `T`.
    pub fn body<T>(&mut self) -> Body<T> {
        Body::from_map(std::mem::take(&mut self.map), self.partial)
    }
}

/// Streams a form's image into the floor plan files and checks it.
async fn store_image(
    state: &AppState,
    mut field: axum::extract::multipart::Field<'_>,
    image_field: &str,
) -> Result<Upload, ApiError> {
    let files = state.store().floorplan_files();
    let mut writer = files
        .writer(state.config().floorplan_upload_limit)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut head = Vec::new();
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(malformed(e)),
        };
        if head.len() < fleetmq_store::IMAGE_HEAD {
            let room = fleetmq_store::IMAGE_HEAD - head.len();
            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if let Err(e) = writer.write(&chunk).await {
            return Err(match e {
                BlobError::TooLarge { limit } => ApiError::PayloadTooLarge(limit as usize),
                BlobError::Io(e) => ApiError::Internal(e.to_string()),
            });
        }
    }
    let Some((format, width, height)) = fleetmq_store::sniff_image(&head) else {
        return Err(nested_error(image_field, NOT_AN_IMAGE));
    };
    let file = PlanImageId::new();
    let blob = writer
        .finish(files, file)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Upload {
        image: PlanImage {
            file,
            format,
            width,
            height,
            size: blob.size(),
        },
        blob,
    })
}

/// Removes image files after their records are gone (logged, never failing the request).
pub(crate) async fn remove_files(state: &AppState, files: Vec<PlanImageId>) {
    for id in files {
        if let Err(e) = state.store().floorplan_files().remove(id).await {
            tracing::warn!(error = %e, file = %id, "floor plan image not removed");
        }
    }
}

/// Filters of the floor plan list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FloorPlanQuery {
    /// Organization id.
    #[param(inline, value_type = Option<UuidFilter>)]
    organization: Option<String>,
    /// Organization slug.
    organization_slug: Option<String>,
}

/// The floor plan `id` if the caller may see it; else not found.
pub async fn visible_floorplan(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<FloorPlan, ApiError> {
    let id = FloorPlanId(id);
    state
        .store()
        .run(move |db| db.floorplan(id))
        .await?
        .filter(|p| caller.manages(p.organization))
        .ok_or(ApiError::NotFound)
}

async fn location_name(state: &AppState, id: LocationId) -> Result<String, ApiError> {
    Ok(state
        .store()
        .run(move |db| db.location(id))
        .await?
        .map(|l| l.name)
        .unwrap_or_default())
}

/// Lists floor plans of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/controller/floorplan/", tag = "locations",
    params(PageQuery, FloorPlanQuery), responses((status = 200, body = Paginated<FloorPlanView>)),
    security(("bearer" = [])))]
async fn list_floorplans(
    State(state): State<AppState>,
    auth: Authorized<FloorPlans, View>,
    paging: Paging,
    Filters(query): Filters<FloorPlanQuery>,
) -> Result<Json<Paginated<FloorPlanView>>, ApiError> {
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
    let request = paging.request();
    let (page, names) = state
        .store()
        .run(move |db| {
            let page = db.list_floorplans(&scope, request)?;
            let mut names = std::collections::HashMap::new();
            for plan in &page.items {
                if let Some(l) = db.location(plan.location)? {
                    names.insert(plan.location, l.name);
                }
            }
            Ok((page, names))
        })
        .await?;
    paging.envelope(page, |p| {
        let name = names.get(&p.location).cloned().unwrap_or_default();
        view(p, &name)
    })
}

/// Checks a floor plan's location: visible to the caller and indoor.
async fn indoor_location(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<fleetmq_store::Location, ApiError> {
    let location = visible_location(state, caller, id)
        .await
        .map_err(|_| ApiError::field("location", does_not_exist(&id.to_string())))?;
    if location.kind != LocationType::Indoor {
        return Err(ApiError::field("location", OUTDOOR_FLOORPLAN));
    }
    Ok(location)
}

/// Adds a floor plan to an indoor location (multipart: `location`, `floor`, `image`).
#[utoipa::path(post, path = "/api/v1/controller/floorplan/", tag = "locations",
    request_body(content = FloorPlanUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = FloorPlanView)), security(("bearer" = [])))]
async fn create_floorplan(
    State(state): State<AppState>,
    auth: Authorized<FloorPlans, Add>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<FloorPlanView>), ApiError> {
    let mut form = Form::read(&state, request, "image").await?;
    let body: FloorPlanWrite = form.body().read()?;
    let (Some(Pk(location)), Some(Floor(floor))) = (body.location, body.floor) else {
        return Err(ApiError::field("location", REQUIRED));
    };
    let location = indoor_location(&state, &auth.caller, location).await?;
    let upload = form
        .image
        .ok_or_else(|| ApiError::field("image", "No file was submitted."))?;
    let image = upload.image.clone();
    let plan = state
        .store()
        .run(move |db| {
            let plan = db.create_floorplan(location.id, floor, image)?;
            upload.keep();
            Ok(plan)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view(plan, &location.name))))
}

/// Shows a floor plan.
#[utoipa::path(get, path = "/api/v1/controller/floorplan/{id}/", tag = "locations",
    params(crate::extract::PathId), responses((status = 200, body = FloorPlanView)),
    security(("bearer" = [])))]
async fn get_floorplan(
    State(state): State<AppState>,
    auth: Authorized<FloorPlans, View>,
    crate::extract::PathId(id): crate::extract::PathId,
) -> Result<Json<FloorPlanView>, ApiError> {
    let plan = visible_floorplan(&state, &auth.caller, id).await?;
    let name = location_name(&state, plan.location).await?;
    Ok(Json(view(plan, &name)))
}

/// Changes a floor plan: its location, floor, and (multipart) image; the old image goes.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/floorplan/{id}/",
    tag = "locations", params(crate::extract::PathId),
    request_body(content((FloorPlanUpload = "multipart/form-data"), (FloorPlanWrite = "application/json"))),
    responses((status = 200, body = FloorPlanView)), security(("bearer" = [])))]
async fn change_floorplan(
    State(state): State<AppState>,
    auth: Authorized<FloorPlans, Change>,
    crate::extract::PathId(id): crate::extract::PathId,
    request: axum::extract::Request,
) -> Result<Json<FloorPlanView>, ApiError> {
    let current = visible_floorplan(&state, &auth.caller, id).await?;
    let mut form = Form::read(&state, request, "image").await?;
    let body: FloorPlanWrite = form.body().read()?;
    let location = match body.location {
        Some(Pk(location)) => indoor_location(&state, &auth.caller, location).await?,
        None => indoor_location(&state, &auth.caller, current.location.0).await?,
    };
    let floor = body.floor.map_or(current.floor, |f| f.0);
    let upload = form.image;
    let image = upload.as_ref().map(|u| u.image.clone());
    let (plan, released) = state
        .store()
        .run(move |db| {
            let updated = db.update_floorplan(current.id, location.id, floor, image)?;
            if let Some(upload) = upload {
                upload.keep();
            }
            Ok(updated)
        })
        .await?;
    remove_files(&state, released).await;
    Ok(Json(view(plan, &location.name)))
}

/// Deletes a floor plan and its image; devices on it stay at its location.
#[utoipa::path(delete, path = "/api/v1/controller/floorplan/{id}/", tag = "locations",
    params(crate::extract::PathId), responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
async fn delete_floorplan(
    State(state): State<AppState>,
    auth: Authorized<FloorPlans, Delete>,
    crate::extract::PathId(id): crate::extract::PathId,
) -> Result<StatusCode, ApiError> {
    let plan = visible_floorplan(&state, &auth.caller, id).await?;
    let released = state
        .store()
        .run(move |db| db.delete_floorplan(plan.id))
        .await?;
    remove_files(&state, released).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Downloads a floor plan's image.
#[utoipa::path(get, path = "/api/v1/controller/floorplan/{id}/image/", tag = "locations",
    params(crate::extract::PathId),
    responses((status = 200, description = "The image", content_type = "image/png"),
        (status = 200, description = "The image", content_type = "image/jpeg")),
    security(("bearer" = [])))]
async fn floorplan_image(
    State(state): State<AppState>,
    auth: Authorized<FloorPlans, View>,
    crate::extract::PathId(id): crate::extract::PathId,
) -> Result<Response, ApiError> {
    let plan = visible_floorplan(&state, &auth.caller, id).await?;
    let path = state.store().floorplan_files().path(plan.image.file);
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("floor plan image unreadable: {e}")))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(plan.image.format.media_type()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(plan.image.size));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_named_as_openwisp_names_them() {
        let names: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 0, -1].map(ordinal).into();
        assert_eq!(
            names,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "0th", "-1st"
            ]
        );
    }

    #[test]
    fn dotted_form_names_nest() {
        let mut map = Map::new();
        insert_dotted(&mut map, "location.name", json!("a"));
        insert_dotted(&mut map, "location.geometry.type", json!("Point"));
        insert_dotted(&mut map, "floorplan.floor", json!("1"));
        insert_dotted(&mut map, "indoor", json!("1,2"));
        assert_eq!(
            Value::Object(map),
            json!({"location": {"name": "a", "geometry": {"type": "Point"}},
                   "floorplan": {"floor": "1"}, "indoor": "1,2"})
        );
    }
}
