//! `/api/v1/firmware-upgrader/build/`: versions of a category.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::{Build, BuildFields, BuildFilter, BuildId, CategoryId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::categories::{SHARED_ONLY_SUPERUSERS, visible_category};
use crate::auth::{Add, Authorized, Builds, Caller, Change, Delete, View};
use crate::body::{Body, Bounded, NonBlank, Pk, does_not_exist};
use crate::extract::PathId;
use crate::filters::{Filters, UuidFilter};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState};

/// The build routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_builds, create_build))
        .routes(routes!(get_build, change_build, delete_build))
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

/// What a client sends to create, replace or change a build.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BuildWrite {
    /// Its category (one the caller may write to).
    #[schema(required = true, nullable = false)]
    category: Option<Pk>,
    /// Unique per category.
    #[schema(required = true, nullable = false)]
    version: Option<NonBlank<32>>,
    /// OS identifier devices report once upgraded.
    #[schema(nullable = false)]
    os: Option<Bounded<64>>,
    /// What changed.
    #[schema(nullable = false)]
    changelog: Option<String>,
}

impl BuildWrite {
    /// The build's fields after this write, over `current` or new; the category must be one
    /// the caller may see, and shared ones only superusers may write to.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: Option<BuildFields>,
    ) -> Result<BuildFields, ApiError> {
        let mut fields = current.unwrap_or(BuildFields {
            category: CategoryId::new(),
            version: String::new(),
            os: String::new(),
            changelog: String::new(),
        });
        if let Some(Pk(id)) = self.category {
            let category = visible_category(state, caller, CategoryId(id))
                .await?
                .ok_or_else(|| ApiError::field("category", does_not_exist(&id.to_string())))?;
            caller.require_shared_write(category.fields.organization, SHARED_ONLY_SUPERUSERS)?;
            fields.category = category.id;
        }
        if let Some(v) = self.version {
            fields.version = v.0;
        }
        if let Some(v) = self.os {
            fields.os = v.0;
        }
        if let Some(v) = self.changelog {
            fields.changelog = v;
        }
        Ok(fields)
    }
}

/// Filters of the build list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// Category id.
    #[param(inline)]
    category: Option<UuidFilter>,
    /// Exact version.
    version: Option<String>,
    /// OS identifier.
    os: Option<String>,
    /// Organization slug: that organization's own categories only.
    organization: Option<String>,
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

/// Lists builds of visible categories.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/", tag = "firmware",
    params(PageQuery, BuildQuery), responses((status = 200, body = Paginated<BuildView>)),
    security(("bearer" = [])))]
async fn list_builds(
    State(state): State<AppState>,
    auth: Authorized<Builds, View>,
    paging: Paging,
    Filters(query): Filters<BuildQuery>,
) -> Result<Json<Paginated<BuildView>>, ApiError> {
    let mut filter = BuildFilter {
        category: query.category.map(|c| CategoryId(c.0)),
        version: query.version,
        os: query.os,
        organization: None,
    };
    if let Some(slug) = query.organization {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| auth.caller.manages(o.id)) {
            Some(org) => filter.organization = Some(org.id),
            // An unknown or invisible organization matches nothing.
            None => return paging.empty(),
        }
    }
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_builds(&auth.scope, &filter, request))
        .await?;
    let mut views = Vec::with_capacity(page.items.len());
    for build in page.items {
        views.push(view(&state, build).await?);
    }
    paging.envelope(
        fleetmq_store::Page {
            count: page.count,
            items: views,
        },
        |v| v,
    )
}

/// Creates a build.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/build/", tag = "firmware",
    request_body = BuildWrite, responses((status = 201, body = BuildView)),
    security(("bearer" = [])))]
async fn create_build(
    State(state): State<AppState>,
    auth: Authorized<Builds, Add>,
    body: Body<BuildWrite>,
) -> Result<(StatusCode, Json<BuildView>), ApiError> {
    let fields = body.read()?.apply(&state, &auth.caller, None).await?;
    let build = state.store().run(move |db| db.create_build(fields)).await?;
    Ok((StatusCode::CREATED, Json(view(&state, build).await?)))
}

/// Shows a build.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware",
    params(PathId), responses((status = 200, body = BuildView)), security(("bearer" = [])))]
async fn get_build(
    State(state): State<AppState>,
    auth: Authorized<Builds, View>,
    PathId(id): PathId,
) -> Result<Json<BuildView>, ApiError> {
    let build = visible_build(&state, &auth.caller, id).await?;
    Ok(Json(view(&state, build).await?))
}

/// A build the caller may write to: visible, and of a shared category only for superusers.
pub(crate) async fn writable_build(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Build, ApiError> {
    let build = visible_build(state, caller, id).await?;
    if let Some(category) = visible_category(state, caller, build.fields.category).await? {
        caller.require_shared_write(category.fields.organization, SHARED_ONLY_SUPERUSERS)?;
    }
    Ok(build)
}

/// Replaces a build, or with PATCH changes some of its fields.
#[utoipa::path(method(put, patch), path = "/api/v1/firmware-upgrader/build/{id}/",
    tag = "firmware", params(PathId), request_body = BuildWrite,
    responses((status = 200, body = BuildView)), security(("bearer" = [])))]
async fn change_build(
    State(state): State<AppState>,
    auth: Authorized<Builds, Change>,
    PathId(id): PathId,
    body: Body<BuildWrite>,
) -> Result<Json<BuildView>, ApiError> {
    let current = writable_build(&state, &auth.caller, id).await?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, Some(current.fields))
        .await?;
    let build = state
        .store()
        .run(move |db| db.update_build(BuildId(id), fields))
        .await?;
    Ok(Json(view(&state, build).await?))
}

/// Deletes a build with its images.
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/build/{id}/", tag = "firmware",
    params(PathId), responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_build(
    State(state): State<AppState>,
    auth: Authorized<Builds, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    writable_build(&state, &auth.caller, id).await?;
    let images = state
        .store()
        .run(move |db| db.delete_build(BuildId(id)))
        .await?;
    super::remove_files(&state, images).await;
    Ok(StatusCode::NO_CONTENT)
}
