//! `/api/v1/firmware-upgrader/image-type/`: image types and the boards they fit (OpenWISP's
//! `OPENWRT_FIRMWARE_IMAGE_MAP`), the built-in ones plus operators' own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleetmq_store::ImageType;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Add, Delete, ImageTypes, Permitted, View};
use crate::body::{Body, Bounded, REQUIRED, text_field};
use crate::extract::kind;
use crate::{ApiError, AppState, ErrorDetail};

/// The image type routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_image_types, create_image_type))
        .routes(routes!(delete_image_type))
}

/// An image type as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageTypeView {
    /// What images carry in `type`.
    pub name: String,
    /// Human-readable description.
    pub label: String,
    /// Device models that can install it, as devices report them.
    pub boards: Vec<String>,
    /// Ships with fleetmq (cannot be deleted).
    pub builtin: bool,
}

/// What a superuser sends to add a type.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImageTypeWrite {
    /// What images of this type carry in `type`.
    #[schema(required = true, nullable = false)]
    name: Option<ImageTypeName>,
    /// Human-readable description; defaults to the name.
    #[schema(nullable = false)]
    label: Option<Bounded<128>>,
    /// Device models that can install it, as devices report them.
    #[schema(required = true, nullable = false)]
    boards: Option<Boards>,
}

text_field!(
    /// An image type's name: letters, digits and `- _ . +`, at most 128 characters.
    ImageTypeName(String),
    valid_name,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(r"^[-a-zA-Z0-9_.+]+$")),
);

/// The boards an image type fits: at least one, each a non-blank model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boards(pub Vec<String>);

impl<'de> Deserialize<'de> for Boards {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = match Value::deserialize(deserializer)? {
            Value::Array(items) => items,
            other => {
                return Err(de::Error::custom(format!(
                    "Expected a list of items but got type \"{}\".",
                    kind(&other)
                )));
            }
        };
        let boards = items
            .into_iter()
            .map(|item| match item {
                Value::String(s) if !s.trim().is_empty() && s.chars().count() <= 128 => Some(s),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                de::Error::custom(
                    "Each board must be a non-blank string of at most 128 characters.",
                )
            })?;
        if boards.is_empty() {
            return Err(de::Error::custom("This list may not be empty."));
        }
        Ok(Boards(boards))
    }
}

impl PartialSchema for Boards {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(128)),
                )
                .min_items(Some(1))
                .build(),
        ))
    }
}

impl ToSchema for Boards {}

impl ImageTypeWrite {
    /// The operator's new image type.
    fn apply(self) -> Result<ImageType, ApiError> {
        let name = self
            .name
            .ok_or_else(|| ApiError::field("name", REQUIRED))?
            .0;
        let boards = self
            .boards
            .ok_or_else(|| ApiError::field("boards", REQUIRED))?
            .0;
        Ok(ImageType {
            label: self
                .label
                .map(|l| l.0)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            boards,
            builtin: false,
        })
    }
}

fn view(t: ImageType) -> ImageTypeView {
    ImageTypeView {
        name: t.name,
        label: t.label,
        boards: t.boards,
        builtin: t.builtin,
    }
}

/// Checks an image type name (also what uploads carry in `type`).
pub(crate) fn valid_name(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("This field may not be blank.");
    }
    if s.len() > 128 {
        return Err("Ensure this field has no more than 128 characters.");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
    {
        return Err("Use letters, digits and - _ . + only.");
    }
    Ok(s.to_owned())
}

/// Lists every image type (any user who may view firmware images).
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/image-type/", tag = "upgrades",
    responses((status = 200, body = Vec<ImageTypeView>)), security(("bearer" = [])))]
async fn list_image_types(
    State(state): State<AppState>,
    _: Permitted<ImageTypes, View>,
) -> Result<Json<Vec<ImageTypeView>>, ApiError> {
    let types = state.store().run(|db| db.image_types()).await?;
    Ok(Json(types.into_iter().map(view).collect()))
}

/// Adds an image type (superusers only).
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/image-type/", tag = "upgrades",
    request_body = ImageTypeWrite, responses((status = 201, body = ImageTypeView)),
    security(("bearer" = [])))]
async fn create_image_type(
    State(state): State<AppState>,
    _: Permitted<ImageTypes, Add>,
    body: Body<ImageTypeWrite>,
) -> Result<(StatusCode, Json<ImageTypeView>), ApiError> {
    let image_type = body.read()?.apply()?;
    let created = state
        .store()
        .run(move |db| db.create_image_type(image_type))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Removes an operator's image type (superusers only; built-in types cannot be removed).
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/image-type/{name}/", tag = "upgrades",
    params(("name" = String, Path, description = "Image type name")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "Not a superuser, or a built-in type", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_image_type(
    State(state): State<AppState>,
    _: Permitted<ImageTypes, Delete>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let types = state.store().run(|db| db.image_types()).await?;
    match types.iter().find(|t| t.name == name) {
        None => return Err(ApiError::NotFound),
        Some(t) if t.builtin => {
            return Err(ApiError::Forbidden(
                "Built-in image types cannot be deleted.".to_owned(),
            ));
        }
        Some(_) => {}
    }
    state
        .store()
        .run(move |db| db.delete_image_type(&name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
