//! `/api/v1/firmware-upgrader/category/`: lines of firmware.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::{Category, CategoryFields, CategoryId, OrgId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Caller, Categories, Change, Delete, View};
use crate::body::{Body, NonBlank, Pk, does_not_exist};
use crate::extract::PathId;
use crate::filters::Filters;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState};

/// The category routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(get_category, change_category, delete_category))
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

/// What a client sends to create, replace or change a category.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CategoryWrite {
    /// Unique per organization.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<64>>,
    /// Free text.
    #[schema(nullable = false)]
    description: Option<String>,
    /// Owning organization; `null` (shared) only for superusers.
    #[schema(required = true)]
    organization: Option<Option<Pk>>,
}

impl CategoryWrite {
    /// The category's fields after this write, over `current` or new; the organization must
    /// be one the caller manages, and only superusers may make a category shared.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: Option<CategoryFields>,
    ) -> Result<CategoryFields, ApiError> {
        let mut fields = current.unwrap_or(CategoryFields {
            organization: None,
            name: String::new(),
            description: String::new(),
        });
        match self.organization {
            None => {}
            Some(None) if !caller.is_superuser() => {
                return Err(ApiError::field("organization", crate::body::NOT_NULL));
            }
            Some(None) => fields.organization = None,
            Some(Some(Pk(id))) => fields.organization = Some(managed_org(state, caller, id).await?),
        }
        if let Some(v) = self.name {
            fields.name = v.0;
        }
        if let Some(v) = self.description {
            fields.description = v;
        }
        caller.require_shared_write(fields.organization, SHARED_ONLY_SUPERUSERS)?;
        Ok(fields)
    }
}

/// The organization `id` names when the caller manages it; otherwise the field error for an
/// object that does not exist.
async fn managed_org(state: &AppState, caller: &Caller, id: Uuid) -> Result<OrgId, ApiError> {
    caller
        .managed_org(state, id)
        .await?
        .ok_or_else(|| ApiError::field("organization", does_not_exist(&id.to_string())))
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

/// Filters of the category list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CategoryQuery {
    /// Organization slug: that organization's own categories only (no shared ones).
    organization: Option<String>,
}

/// Lists categories of the caller's organizations and shared ones.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/category/", tag = "firmware",
    params(PageQuery, CategoryQuery), responses((status = 200, body = Paginated<CategoryView>)),
    security(("bearer" = [])))]
async fn list_categories(
    State(state): State<AppState>,
    auth: Authorized<Categories, View>,
    paging: Paging,
    Filters(query): Filters<CategoryQuery>,
) -> Result<Json<Paginated<CategoryView>>, ApiError> {
    let mut own = None;
    if let Some(slug) = query.organization {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| auth.caller.manages(o.id)) {
            Some(org) => own = Some(org.id),
            // An unknown or invisible organization matches nothing.
            None => return paging.empty(),
        }
    }
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_categories(&auth.scope, own, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a category.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/category/", tag = "firmware",
    request_body = CategoryWrite, responses((status = 201, body = CategoryView)),
    security(("bearer" = [])))]
async fn create_category(
    State(state): State<AppState>,
    auth: Authorized<Categories, Add>,
    body: Body<CategoryWrite>,
) -> Result<(StatusCode, Json<CategoryView>), ApiError> {
    let fields = body.read()?.apply(&state, &auth.caller, None).await?;
    let created = state
        .store()
        .run(move |db| db.create_category(fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// A category the caller may see, or 404.
async fn found(state: &AppState, caller: &Caller, id: Uuid) -> Result<Category, ApiError> {
    visible_category(state, caller, CategoryId(id))
        .await?
        .ok_or(ApiError::NotFound)
}

/// Shows a category.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware",
    params(PathId), responses((status = 200, body = CategoryView)), security(("bearer" = [])))]
async fn get_category(
    State(state): State<AppState>,
    auth: Authorized<Categories, View>,
    PathId(id): PathId,
) -> Result<Json<CategoryView>, ApiError> {
    Ok(Json(view(found(&state, &auth.caller, id).await?)))
}

/// Replaces a category, or with PATCH changes some of its fields.
#[utoipa::path(method(put, patch), path = "/api/v1/firmware-upgrader/category/{id}/",
    tag = "firmware", params(PathId), request_body = CategoryWrite,
    responses((status = 200, body = CategoryView)), security(("bearer" = [])))]
async fn change_category(
    State(state): State<AppState>,
    auth: Authorized<Categories, Change>,
    PathId(id): PathId,
    body: Body<CategoryWrite>,
) -> Result<Json<CategoryView>, ApiError> {
    let current = found(&state, &auth.caller, id).await?;
    check_writable(&auth.caller, &current.fields)?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, Some(current.fields))
        .await?;
    let updated = state
        .store()
        .run(move |db| db.update_category(CategoryId(id), fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Deletes a category with its builds and images.
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/category/{id}/", tag = "firmware",
    params(PathId), responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_category(
    State(state): State<AppState>,
    auth: Authorized<Categories, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let current = found(&state, &auth.caller, id).await?;
    check_writable(&auth.caller, &current.fields)?;
    let images = state
        .store()
        .run(move |db| db.delete_category(CategoryId(id)))
        .await?;
    super::remove_files(&state, images).await;
    Ok(StatusCode::NO_CONTENT)
}
