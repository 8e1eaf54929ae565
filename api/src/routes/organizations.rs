//! `/api/v1/users/organization/`: tenants. Superusers manage them; managers see their own.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::{OrgId, Organization, OrganizationFields, Slug};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Accounts, Add, Authorized, Caller, Change, Delete, View};
use crate::body::{Body, Bounded, Email, NonBlank, REQUIRED, text_field};
use crate::extract::PathId;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState};

/// The organization routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organizations, create_organization))
        .routes(routes!(
            get_organization,
            change_organization,
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

/// What a client sends to create, replace or change an organization. `slug` defaults to one
/// derived from `name`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrganizationWrite {
    /// Display name.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<200>>,
    /// Unique handle; also the organization's MQTT topic segment.
    #[schema(nullable = false)]
    slug: Option<SlugField>,
    /// Free text.
    #[schema(nullable = false)]
    description: Option<String>,
    /// Contact address.
    #[schema(nullable = false)]
    email: Option<Email>,
    /// Web site.
    #[schema(nullable = false)]
    url: Option<Bounded<200>>,
    /// Devices of inactive organizations may not connect.
    #[schema(nullable = false)]
    is_active: Option<bool>,
}

text_field!(
    /// An organization's slug: letters, digits, `-` and `_`.
    SlugField(Slug),
    Slug::parse,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(200))
        .pattern(Some("^[-a-zA-Z0-9_]+$")),
);

impl OrganizationWrite {
    /// The organization's fields after this write: over `current`, or new ones.
    fn apply(self, current: Option<OrganizationFields>) -> Result<OrganizationFields, ApiError> {
        let name = self.name.map(|n| n.0);
        let slug = self.slug.map(|s| s.0);
        let mut fields = match current {
            Some(current) => current,
            None => {
                let slug = match (&slug, &name) {
                    (Some(slug), _) => slug.clone(),
                    (None, Some(name)) => Slug::from_name(name).ok_or_else(|| {
                        ApiError::field("slug", "Could not derive a slug from the name; give one.")
                    })?,
                    (None, None) => return Err(ApiError::field("name", REQUIRED)),
                };
                OrganizationFields {
                    name: String::new(),
                    slug,
                    description: String::new(),
                    email: String::new(),
                    url: String::new(),
                    is_active: true,
                }
            }
        };
        if let Some(v) = name {
            fields.name = v;
        }
        if let Some(v) = slug {
            fields.slug = v;
        }
        if let Some(v) = self.description {
            fields.description = v;
        }
        if let Some(v) = self.email {
            fields.email = v.0;
        }
        if let Some(v) = self.url {
            fields.url = v.0;
        }
        if let Some(v) = self.is_active {
            fields.is_active = v;
        }
        Ok(fields)
    }
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
#[utoipa::path(get, path = "/api/v1/users/organization/", tag = "users", params(PageQuery),
    responses((status = 200, body = Paginated<OrganizationView>)), security(("bearer" = [])))]
async fn list_organizations(
    State(state): State<AppState>,
    auth: Authorized<Accounts, View>,
    paging: Paging,
) -> Result<Json<Paginated<OrganizationView>>, ApiError> {
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_organizations(&auth.scope, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates an organization (superusers only).
#[utoipa::path(post, path = "/api/v1/users/organization/", tag = "users",
    request_body = OrganizationWrite, responses((status = 201, body = OrganizationView)),
    security(("bearer" = [])))]
async fn create_organization(
    State(state): State<AppState>,
    _: Authorized<Accounts, Add>,
    body: Body<OrganizationWrite>,
) -> Result<(StatusCode, Json<OrganizationView>), ApiError> {
    let fields = body.read()?.apply(None)?;
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
#[utoipa::path(get, path = "/api/v1/users/organization/{id}/", tag = "users", params(PathId),
    responses((status = 200, body = OrganizationView)), security(("bearer" = [])))]
async fn get_organization(
    State(state): State<AppState>,
    auth: Authorized<Accounts, View>,
    PathId(id): PathId,
) -> Result<Json<OrganizationView>, ApiError> {
    Ok(Json(view(
        visible_organization(&state, &auth.caller, id).await?,
    )))
}

/// Replaces an organization, or with PATCH changes some of its fields (superusers only).
#[utoipa::path(method(put, patch), path = "/api/v1/users/organization/{id}/", tag = "users",
    params(PathId), request_body = OrganizationWrite,
    responses((status = 200, body = OrganizationView)), security(("bearer" = [])))]
async fn change_organization(
    State(state): State<AppState>,
    auth: Authorized<Accounts, Change>,
    PathId(id): PathId,
    body: Body<OrganizationWrite>,
) -> Result<Json<OrganizationView>, ApiError> {
    let current = visible_organization(&state, &auth.caller, id).await?;
    let fields = body.read()?.apply(Some(current.fields))?;
    let org = state
        .store()
        .run(move |db| db.update_organization(OrgId(id), fields))
        .await?;
    Ok(Json(view(org)))
}

/// Deletes an organization with its devices (superusers only).
#[utoipa::path(delete, path = "/api/v1/users/organization/{id}/", tag = "users", params(PathId),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_organization(
    State(state): State<AppState>,
    auth: Authorized<Accounts, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    visible_organization(&state, &auth.caller, id).await?;
    state
        .store()
        .run(move |db| db.delete_organization(OrgId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
