//! `/api/v1/firmware-upgrader/build/`: versions of a category.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{Build, BuildFields, BuildFilter, BuildId, CategoryId, Resource};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::categories::{SHARED_ONLY_SUPERUSERS, visible_category};
use crate::auth::Caller;
use crate::extract::{JsonObject, PathId, QueryPairs};
use crate::form::{Form, Mode, does_not_exist};
use crate::pagination::{PageParams, Paginated};
use crate::{ApiError, AppState, ErrorDetail};

/// The build routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_builds, create_build))
        .routes(routes!(get_build, put_build, patch_build, delete_build))
}

/// A build as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildView {
    /// Identity.
    pub id: Uuid,
    /// Its category.
    pub category: Uuid,
    /// Unique per category.
    pub version: String,
    /// OS identifier devices report once upgraded.
    pub os: String,
    /// What changed.
    pub changelog: String,
    /// The category's name and organization (read-only).
    #[schema(value_type = Object)]
    pub category_relation: Value,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends (PATCH: any subset).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct BuildWrite {
    category: Uuid,
    version: String,
    os: Option<String>,
    changelog: Option<String>,
}

/// Filters of the build list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation of the query; read from `QueryPairs`
pub struct BuildQuery {
    /// Category id.
    category: Option<Uuid>,
    /// Exact version.
    version: Option<String>,
    /// OS identifier.
    os: Option<String>,
    /// Organization slug.
    organization: Option<String>,
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
}

async fn view(state: &AppState, build: Build) -> Result<BuildView, ApiError> {
    let category = build.fields.category;
    let relation = state.store().run(move |db| db.category(category)).await?;
    Ok(BuildView {
        id: build.id.0,
        category: build.fields.category.0,
        version: build.fields.version,
        os: build.fields.os,
        changelog: build.fields.changelog,
        category_relation: relation.map_or(
            Value::Null,
            |c| json!({"name": c.fields.name, "organization": c.fields.organization.map(|o| o.0)}),
        ),
        created: build.created.to_string(),
        modified: build.modified.to_string(),
    })
}

/// Loads a build whose category the caller may see.
pub(crate) async fn visible_build(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Build, ApiError> {
    let build = state
        .store()
        .run(move |db| db.build(BuildId(id)))
        .await?
        .ok_or(ApiError::NotFound)?;
    visible_category(state, caller, build.fields.category)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(build)
}

async fn read_build(
    state: &AppState,
    caller: &Caller,
    body: Map<String, Value>,
    mode: Mode,
    current: Option<BuildFields>,
) -> Result<BuildFields, ApiError> {
    let mut form = Form::new(body, mode);
    let category = form.reference("category", true, false).set().flatten();
    let version = form
        .parsed("version", true, |s| {
            if s.trim().is_empty() {
                Err("This field may not be blank.")
            } else if s.chars().count() > 32 {
                Err("Ensure this field has no more than 32 characters.")
            } else {
                Ok(s.to_owned())
            }
        })
        .set();
    let os = form.text("os", 64).set();
    let changelog = form.text("changelog", usize::MAX).set();
    let mut fields = current.unwrap_or(BuildFields {
        category: CategoryId::new(),
        version: String::new(),
        os: String::new(),
        changelog: String::new(),
    });
    if let Some(id) = category {
        match visible_category(state, caller, CategoryId(id)).await? {
            Some(c) => {
                caller.require_shared_write(c.fields.organization, SHARED_ONLY_SUPERUSERS)?;
                fields.category = c.id;
            }
            None => form.error("category", does_not_exist(&id.to_string())),
        }
    }
    form.finish()?;
    if let Some(v) = version {
        fields.version = v;
    }
    if let Some(v) = os {
        fields.os = v;
    }
    if let Some(v) = changelog {
        fields.changelog = v;
    }
    Ok(fields)
}

/// Lists builds of visible categories.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/", tag = "firmware", params(BuildQuery),
    responses((status = 200, body = Paginated<BuildView>), (status = 400, description = "Invalid filter"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_builds(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<BuildView>>, ApiError> {
    let scope = caller.authorize(Resource::Build, &method)?;
    let params = PageParams::from_query(&query)?;
    let mut filter = BuildFilter {
        version: query
            .get("version")
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        os: query.get("os").filter(|v| !v.is_empty()).map(str::to_owned),
        ..BuildFilter::default()
    };
    if let Some(v) = query.get("category").filter(|v| !v.is_empty()) {
        let id = Uuid::parse_str(v)
            .map_err(|_| ApiError::field("category", format!("“{v}” is not a valid UUID.")))?;
        filter.category = Some(CategoryId(id));
    }
    if let Some(slug) = query.get("organization").filter(|v| !v.is_empty()) {
        let slug = slug.to_owned();
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| caller.manages(o.id)) {
            Some(org) => filter.organization = Some(org.id),
            // An unknown or invisible organization matches nothing.
            None => {
                let empty = fleetmq_store::Page::<Build> {
                    count: 0,
                    items: Vec::new(),
                };
                let envelope = params.envelope(empty, &uri, &headers, &query, |b| b)?;
                return Ok(Json(Paginated {
                    count: 0,
                    next: envelope.next,
                    previous: envelope.previous,
                    results: Vec::new(),
                }));
            }
        }
    }
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_builds(&scope, &filter, request))
        .await?;
    let mut results = Vec::new();
    let envelope = params.envelope(page, &uri, &headers, &query, |b| b)?;
    for build in envelope.results {
        results.push(view(&state, build).await?);
    }
    Ok(Json(Paginated {
        count: envelope.count,
        next: envelope.next,
        previous: envelope.previous,
        results,
    }))
}

/// Creates a build.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/build/", tag = "firmware", request_body = BuildWrite,
    responses((status = 201, body = BuildView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_build(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<BuildView>), ApiError> {
    caller.authorize(Resource::Build, &method)?;
    let fields = read_build(&state, &caller, body, Mode::Full, None).await?;
    let build = state.store().run(move |db| db.create_build(fields)).await?;
    Ok((StatusCode::CREATED, Json(view(&state, build).await?)))
}

/// Shows a build.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Build id")),
    responses((status = 200, body = BuildView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_build(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<Json<BuildView>, ApiError> {
    caller.authorize(Resource::Build, &method)?;
    let build = visible_build(&state, &caller, id).await?;
    Ok(Json(view(&state, build).await?))
}

async fn change(
    state: AppState,
    caller: Caller,
    method: Method,
    id: Uuid,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<BuildView>, ApiError> {
    caller.authorize(Resource::Build, &method)?;
    let current = visible_build(&state, &caller, id).await?;
    let category = visible_category(&state, &caller, current.fields.category).await?;
    if let Some(category) = category {
        caller.require_shared_write(category.fields.organization, SHARED_ONLY_SUPERUSERS)?;
    }
    let fields = read_build(&state, &caller, body, mode, Some(current.fields)).await?;
    let build = state
        .store()
        .run(move |db| db.update_build(BuildId(id), fields))
        .await?;
    Ok(Json(view(&state, build).await?))
}

/// Replaces a build.
#[utoipa::path(put, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Build id")), request_body = BuildWrite,
    responses((status = 200, body = BuildView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_build(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<BuildView>, ApiError> {
    change(state, caller, method, id, body, Mode::Full).await
}

/// Changes some of a build's fields.
#[utoipa::path(patch, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Build id")), request_body = BuildWrite,
    responses((status = 200, body = BuildView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_build(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<BuildView>, ApiError> {
    change(state, caller, method, id, body, Mode::Partial).await
}

/// Deletes a build with its images.
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware",
    params(("id" = Uuid, Path, description = "Build id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_build(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Resource::Build, &method)?;
    let current = visible_build(&state, &caller, id).await?;
    let category = visible_category(&state, &caller, current.fields.category).await?;
    if let Some(category) = category {
        caller.require_shared_write(category.fields.organization, SHARED_ONLY_SUPERUSERS)?;
    }
    let images = state
        .store()
        .run(move |db| db.delete_build(BuildId(id)))
        .await?;
    super::remove_files(&state, images).await;
    Ok(StatusCode::NO_CONTENT)
}
