//! `/api/v1/users/organization/`: tenants. Superusers manage them; managers see their own.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use fleetmq_store::{OrgId, Organization, OrganizationFields, Slug};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{JsonObject, PathId, QueryPairs};
use crate::form::{Form, Mode};
use crate::pagination::{PageParams, Paginated};
use crate::{ApiError, AppState, ErrorDetail};

/// The organization routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organizations, create_organization))
        .routes(routes!(
            get_organization,
            put_organization,
            patch_organization,
            delete_organization
        ))
}

/// An organization as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationView {
    /// Identity.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Unique handle; also the organization's MQTT topic segment.
    pub slug: String,
    /// Free text.
    pub description: String,
    /// Contact address.
    pub email: String,
    /// Web site.
    pub url: String,
    /// Devices of inactive organizations may not connect.
    pub is_active: bool,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends (PATCH: any subset). `slug` defaults to one derived from `name`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; bodies are read by `Form`
pub struct OrganizationWrite {
    name: String,
    slug: Option<String>,
    description: Option<String>,
    email: Option<String>,
    url: Option<String>,
    is_active: Option<bool>,
}

/// Paging of the list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation of the query; read from `QueryPairs`
pub struct ListQuery {
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
}

fn view(org: Organization) -> OrganizationView {
    let f = org.fields;
    OrganizationView {
        id: org.id.0,
        name: f.name,
        slug: f.slug.as_str().to_owned(),
        description: f.description,
        email: f.email,
        url: f.url,
        is_active: f.is_active,
        created: org.created.to_string(),
        modified: org.modified.to_string(),
    }
}

/// Lists organizations: all for superusers, the managed ones for managers.
#[utoipa::path(get, path = "/api/v1/users/organization/", tag = "users", params(ListQuery),
    responses((status = 200, body = Paginated<OrganizationView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_organizations(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<OrganizationView>>, ApiError> {
    let scope = caller.scope()?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_organizations(&scope, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

fn read_organization(
    body: Map<String, Value>,
    mode: Mode,
    current: Option<OrganizationFields>,
) -> Result<OrganizationFields, ApiError> {
    let mut form = Form::new(body, mode);
    let name = form.parsed("name", true, |s| {
        if s.trim().is_empty() {
            Err("This field may not be blank.")
        } else if s.chars().count() > 200 {
            Err("Ensure this field has no more than 200 characters.")
        } else {
            Ok(s.to_owned())
        }
    });
    let slug = form.parsed("slug", false, Slug::parse);
    let description = form.text("description", usize::MAX);
    let email = form.parsed("email", false, |s| {
        if s.is_empty() || (s.contains('@') && !s.contains(char::is_whitespace)) {
            Ok(s.to_owned())
        } else {
            Err("Enter a valid email address.")
        }
    });
    let url = form.text("url", 200);
    let is_active = form.boolean("is_active");
    let name = name.set();
    let slug = slug.set();
    let derived_slug = match (&slug, &current, &name) {
        (None, None, Some(name)) => match Slug::from_name(name) {
            Some(slug) => Some(slug),
            None => {
                form.error("slug", "Could not derive a slug from the name; give one.");
                None
            }
        },
        _ => None,
    };
    let description = description.set();
    let email = email.set();
    let url = url.set();
    let is_active = is_active.set();
    form.finish()?;
    let mut fields = match current {
        Some(current) => current,
        None => OrganizationFields {
            name: String::new(),
            slug: slug
                .clone()
                .or_else(|| derived_slug.clone())
                .ok_or_else(|| ApiError::field("slug", "This field is required."))?,
            description: String::new(),
            email: String::new(),
            url: String::new(),
            is_active: true,
        },
    };
    if let Some(v) = name {
        fields.name = v;
    }
    if let Some(v) = slug.or(derived_slug) {
        fields.slug = v;
    }
    if let Some(v) = description {
        fields.description = v;
    }
    if let Some(v) = email {
        fields.email = v;
    }
    if let Some(v) = url {
        fields.url = v;
    }
    if let Some(v) = is_active {
        fields.is_active = v;
    }
    Ok(fields)
}

/// Creates an organization (superusers only).
#[utoipa::path(post, path = "/api/v1/users/organization/", tag = "users", request_body = OrganizationWrite,
    responses((status = 201, body = OrganizationView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_organization(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<OrganizationView>), ApiError> {
    caller.require_superuser()?;
    let fields = read_organization(body, Mode::Full, None)?;
    let org = state
        .store()
        .run(move |db| db.create_organization(fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(org))))
}

async fn visible_organization(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Organization, ApiError> {
    let org = OrgId(id);
    state
        .store()
        .run(move |db| db.organization(org))
        .await?
        .filter(|o| caller.manages(o.id))
        .ok_or(ApiError::NotFound)
}

/// Shows one organization.
#[utoipa::path(get, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "Organization id")),
    responses((status = 200, body = OrganizationView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<OrganizationView>, ApiError> {
    caller.scope()?;
    Ok(Json(view(visible_organization(&state, &caller, id).await?)))
}

async fn change_organization(
    state: AppState,
    caller: Caller,
    id: Uuid,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<OrganizationView>, ApiError> {
    caller.require_superuser()?;
    let current = visible_organization(&state, &caller, id).await?;
    let fields = read_organization(body, mode, Some(current.fields))?;
    let org = state
        .store()
        .run(move |db| db.update_organization(OrgId(id), fields))
        .await?;
    Ok(Json(view(org)))
}

/// Replaces an organization (superusers only).
#[utoipa::path(put, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "Organization id")), request_body = OrganizationWrite,
    responses((status = 200, body = OrganizationView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_organization(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<OrganizationView>, ApiError> {
    change_organization(state, caller, id, body, Mode::Full).await
}

/// Changes some of an organization's fields (superusers only).
#[utoipa::path(patch, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "Organization id")), request_body = OrganizationWrite,
    responses((status = 200, body = OrganizationView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_organization(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<OrganizationView>, ApiError> {
    change_organization(state, caller, id, body, Mode::Partial).await
}

/// Deletes an organization with its devices (superusers only).
#[utoipa::path(delete, path = "/api/v1/users/organization/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "Organization id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_organization(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.require_superuser()?;
    visible_organization(&state, &caller, id).await?;
    state
        .store()
        .run(move |db| db.delete_organization(OrgId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
