//! `/api/v1/firmware-upgrader/category/`: lines of firmware.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{Category, CategoryFields, CategoryId, Resource};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{JsonObject, PathId, QueryPairs};
use crate::form::{Field, Form, Mode, does_not_exist};
use crate::pagination::PageQuery as ListQuery;
use crate::pagination::{PageParams, Paginated};
use crate::{ApiError, AppState, ErrorDetail};

/// The category routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(
            get_category,
            put_category,
            patch_category,
            delete_category
        ))
}

/// OpenWISP's message for non-superusers touching shared categories.
pub const SHARED_ONLY_SUPERUSERS: &str = "Only superusers can create or edit shared categories";

/// A category as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryView {
    /// Identity.
    pub id: Uuid,
    /// Unique per organization.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Owning organization; `null` = shared.
    pub organization: Option<Uuid>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends (PATCH: any subset).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct CategoryWrite {
    name: String,
    description: Option<String>,
    /// `null` (shared) only for superusers.
    organization: Option<Uuid>,
}

pub(crate) fn view(c: Category) -> CategoryView {
    CategoryView {
        id: c.id.0,
        name: c.fields.name,
        description: c.fields.description,
        organization: c.fields.organization.map(|o| o.0),
        created: c.created.to_string(),
        modified: c.modified.to_string(),
    }
}

async fn read_category(
    state: &AppState,
    caller: &Caller,
    body: Map<String, Value>,
    mode: Mode,
    current: Option<CategoryFields>,
) -> Result<CategoryFields, ApiError> {
    let mut form = Form::new(body, mode);
    let name = form
        .parsed("name", true, |s| {
            if s.trim().is_empty() {
                Err("This field may not be blank.")
            } else if s.chars().count() > 64 {
                Err("Ensure this field has no more than 64 characters.")
            } else {
                Ok(s.to_owned())
            }
        })
        .set();
    let description = form.text("description", usize::MAX).set();
    let organization = form.reference("organization", true, caller.is_superuser());
    let mut fields = current.unwrap_or(CategoryFields {
        organization: None,
        name: String::new(),
        description: String::new(),
    });
    if let Field::Set(org) = organization {
        match org {
            None => fields.organization = None,
            Some(id) => match caller.managed_org(state, id).await? {
                Some(org) => fields.organization = Some(org),
                None => form.error("organization", does_not_exist(&id.to_string())),
            },
        }
    }
    form.finish()?;
    if let Some(v) = name {
        fields.name = v;
    }
    if let Some(v) = description {
        fields.description = v;
    }
    Ok(fields)
}

/// Loads a category the caller may see (own organizations' or shared).
pub(crate) async fn visible_category(
    state: &AppState,
    caller: &Caller,
    id: CategoryId,
) -> Result<Option<Category>, ApiError> {
    Ok(state
        .store()
        .run(move |db| db.category(id))
        .await?
        .filter(|c| c.fields.organization.is_none_or(|org| caller.manages(org))))
}

fn check_writable(caller: &Caller, fields: &CategoryFields) -> Result<(), ApiError> {
    caller.require_shared_write(fields.organization, SHARED_ONLY_SUPERUSERS)
}

/// Lists categories of the caller's organizations and shared ones.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/category/", tag = "firmware", params(ListQuery),
    responses((status = 200, body = Paginated<CategoryView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_categories(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<CategoryView>>, ApiError> {
    let scope = caller.authorize(Resource::Category, &method)?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_categories(&scope, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

/// Creates a category.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/category/", tag = "firmware",
    request_body = CategoryWrite,
    responses((status = 201, body = CategoryView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_category(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<CategoryView>), ApiError> {
    caller.authorize(Resource::Category, &method)?;
    let fields = read_category(&state, &caller, body, Mode::Full, None).await?;
    check_writable(&caller, &fields)?;
    let created = state
        .store()
        .run(move |db| db.create_category(fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows a category.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Category id")),
    responses((status = 200, body = CategoryView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_category(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<Json<CategoryView>, ApiError> {
    caller.authorize(Resource::Category, &method)?;
    let category = visible_category(&state, &caller, CategoryId(id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(category)))
}

async fn change(
    state: AppState,
    caller: Caller,
    method: Method,
    id: Uuid,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<CategoryView>, ApiError> {
    caller.authorize(Resource::Category, &method)?;
    let current = visible_category(&state, &caller, CategoryId(id))
        .await?
        .ok_or(ApiError::NotFound)?;
    check_writable(&caller, &current.fields)?;
    let fields = read_category(&state, &caller, body, mode, Some(current.fields)).await?;
    check_writable(&caller, &fields)?;
    let updated = state
        .store()
        .run(move |db| db.update_category(CategoryId(id), fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Replaces a category.
#[utoipa::path(put, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Category id")), request_body = CategoryWrite,
    responses((status = 200, body = CategoryView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_category(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<CategoryView>, ApiError> {
    change(state, caller, method, id, body, Mode::Full).await
}

/// Changes some of a category's fields.
#[utoipa::path(patch, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Category id")), request_body = CategoryWrite,
    responses((status = 200, body = CategoryView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_category(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<CategoryView>, ApiError> {
    change(state, caller, method, id, body, Mode::Partial).await
}

/// Deletes a category with its builds and images.
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Category id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_category(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Resource::Category, &method)?;
    let current = visible_category(&state, &caller, CategoryId(id))
        .await?
        .ok_or(ApiError::NotFound)?;
    check_writable(&caller, &current.fields)?;
    let images = state
        .store()
        .run(move |db| db.delete_category(CategoryId(id)))
        .await?;
    super::remove_files(&state, images).await;
    Ok(StatusCode::NO_CONTENT)
}
