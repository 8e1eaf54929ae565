//! `/api/v1/firmware-upgrader/image-type/`: image types and the boards they fit (OpenWISP's
//! `OPENWRT_FIRMWARE_IMAGE_MAP`), the built-in ones plus operators' own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleetmq_store::{Action, ImageType, Resource};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::JsonObject;
use crate::form::{Field, Form, Mode};
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
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct ImageTypeWrite {
    /// Letters, digits and `- _ . +`, at most 128 characters.
    name: String,
    /// Defaults to the name.
    label: Option<String>,
    /// At least one device model.
    boards: Vec<String>,
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
    responses((status = 200, body = Vec<ImageTypeView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_image_types(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ImageTypeView>>, ApiError> {
    caller.require(Resource::FirmwareImage, Action::View)?;
    let types = state.store().run(|db| db.image_types()).await?;
    Ok(Json(types.into_iter().map(view).collect()))
}

/// Adds an image type (superusers only).
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/image-type/", tag = "upgrades",
    request_body = ImageTypeWrite,
    responses((status = 201, body = ImageTypeView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_image_type(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<ImageTypeView>), ApiError> {
    caller.require_superuser()?;
    let mut form = Form::new(body, Mode::Full);
    let name = form.parsed("name", true, valid_name).set();
    let label = form.text("label", 128).set();
    let boards = match form.raw("boards", true) {
        Field::Set(Value::Array(items)) => {
            let mut boards = Vec::new();
            for item in items {
                match item {
                    Value::String(s) if !s.trim().is_empty() && s.chars().count() <= 128 => {
                        boards.push(s)
                    }
                    _ => {
                        form.error(
                            "boards",
                            "Each board must be a non-blank string of at most 128 characters.",
                        );
                        break;
                    }
                }
            }
            if boards.is_empty() && !form.has_errors() {
                form.error("boards", "This list may not be empty.");
            }
            boards
        }
        Field::Set(other) => {
            form.error(
                "boards",
                format!(
                    "Expected a list of items but got type \"{}\".",
                    crate::extract::kind(&other)
                ),
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    form.finish()?;
    let name = name.ok_or_else(|| ApiError::field("name", "This field is required."))?;
    let image_type = ImageType {
        label: label
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| name.clone()),
        name,
        boards,
        builtin: false,
    };
    let created = state
        .store()
        .run(move |db| db.create_image_type(image_type))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Removes an operator's image type (superusers only; built-in types cannot be removed).
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/image-type/{name}/", tag = "upgrades",
    params(("name" = String, Path, description = "Image type name")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, description = "Not a superuser, or a built-in type", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_image_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_superuser()?;
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
