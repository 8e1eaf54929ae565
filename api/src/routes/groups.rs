//! `/api/v1/controller/group/`: device groups, and the group of a VPN-client certificate
//! (`/api/v1/controller/cert/{common_name}/group/`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleetmq_store::{DeviceGroup, GroupFields, GroupFilter, GroupId, OrgId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Caller, Change, Delete, DeviceGroups, View};
use crate::body::{Body, NonBlank, Pk, REQUIRED, does_not_exist};
use crate::extract::PathId;
use crate::filters::narrowed_org;
use crate::filters::{BoolFilter, Filters, UuidFilter};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState};

/// The device group routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, change_group, delete_group))
        .routes(routes!(group_of_certificate))
}

/// A device group as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceGroupView {
    /// Identity.
    pub id: Uuid,
    /// Unique per organization.
    pub name: String,
    /// Owning organization.
    pub organization: Uuid,
    /// Free text.
    pub description: String,
    /// Ordered templates the group's devices get.
    pub templates: Vec<Uuid>,
    /// Configuration variables of the group's devices.
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    /// Data for integrations; never rendered.
    #[schema(value_type = Object)]
    pub meta_data: Map<String, Value>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

pub(crate) fn view(g: DeviceGroup) -> DeviceGroupView {
    let f = g.fields;
    DeviceGroupView {
        id: g.id.0,
        name: f.name,
        organization: f.organization.0,
        description: f.description,
        templates: f.templates,
        context: f.context,
        meta_data: f.meta_data,
        created: g.created.to_string(),
        modified: g.modified.to_string(),
    }
}

/// What a client sends to create, replace or change a device group.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceGroupWrite {
    /// Unique per organization.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<60>>,
    /// Owning organization (one the caller manages).
    #[schema(required = true, nullable = false)]
    organization: Option<Pk>,
    /// Free text.
    #[schema(nullable = false)]
    description: Option<String>,
    /// Ordered templates of the group's organization or shared, neither default nor required;
    /// may be empty.
    #[schema(required = true, nullable = false)]
    templates: Option<Vec<Pk>>,
    /// Configuration variables of the group's devices.
    #[schema(nullable = false)]
    context: Option<Map<String, Value>>,
    /// Data for integrations; never rendered.
    #[schema(nullable = false)]
    meta_data: Option<Map<String, Value>>,
}

impl DeviceGroupWrite {
    /// The group's fields after this write, over `current` or new.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: Option<GroupFields>,
    ) -> Result<GroupFields, ApiError> {
        let mut errors = Map::new();
        let mut organization = current.as_ref().map(|c| c.organization);
        if let Some(Pk(id)) = self.organization {
            match caller.managed_org(state, id).await? {
                Some(org) => organization = Some(org),
                None => {
                    errors.insert(
                        "organization".into(),
                        json!([does_not_exist(&id.to_string())]),
                    );
                }
            }
        }
        let mut templates = current.as_ref().map(|c| c.templates.clone());
        if let Some(given) = self.templates {
            let ids: Vec<Uuid> = given.into_iter().map(|Pk(id)| id).collect();
            match check_templates(state, caller, organization, &ids).await? {
                Ok(()) => templates = Some(ids),
                Err(e) => {
                    errors.insert("templates".into(), e);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let (Some(organization), Some(templates)) = (organization, templates) else {
            return Err(ApiError::field("organization", REQUIRED));
        };
        let mut fields = current.unwrap_or(GroupFields {
            name: String::new(),
            organization,
            description: String::new(),
            templates: Vec::new(),
            context: Map::new(),
            meta_data: Map::new(),
        });
        fields.organization = organization;
        fields.templates = templates;
        if let Some(v) = self.name {
            fields.name = v.0;
        }
        if let Some(v) = self.description {
            fields.description = v;
        }
        if let Some(v) = self.context {
            fields.context = v;
        }
        if let Some(v) = self.meta_data {
            fields.meta_data = v;
        }
        Ok(fields)
    }
}

/// A group's templates: each visible to the caller and neither default nor required (else
/// "does not exist", as OpenWISP's queryset hides them), and of the group's organization or
/// shared.
async fn check_templates(
    state: &AppState,
    caller: &Caller,
    organization: Option<OrgId>,
    ids: &[Uuid],
) -> Result<Result<(), Value>, ApiError> {
    let wanted = ids.to_vec();
    let found = state.store().run(move |db| db.templates(&wanted)).await?;
    let mut invalid = Vec::new();
    let mut foreign = Vec::new();
    for id in ids {
        match found.iter().find(|t| t.id.0 == *id) {
            Some(t)
                if t.fields.organization.is_none_or(|o| caller.manages(o))
                    && !t.fields.default
                    && !t.fields.required =>
            {
                if organization.is_some_and(|org| !t.usable_by(org)) {
                    foreign.push(t.fields.name.clone());
                }
            }
            _ => invalid.push(does_not_exist(&id.to_string())),
        }
    }
    if !invalid.is_empty() {
        return Ok(Err(json!(invalid)));
    }
    if !foreign.is_empty() {
        return Ok(Err(json!([format!(
            "The following templates are owned by organizations which do not match the \
             organization of this group: {}",
            foreign.join(", ")
        )])));
    }
    Ok(Ok(()))
}

/// Loads a group the caller may see, or 404.
pub(crate) async fn visible_group(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<DeviceGroup, ApiError> {
    state
        .store()
        .run(move |db| db.group(GroupId(id)))
        .await?
        .filter(|g| caller.manages(g.fields.organization))
        .ok_or(ApiError::NotFound)
}

/// Filters of the group list (django-filter's names).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupListQuery {
    /// Organization id.
    #[param(inline)]
    organization: Option<UuidFilter>,
    /// Organization slug.
    organization_slug: Option<String>,
    /// OpenWISP's "Has devices?" filter: `true` lists the groups that have devices, `false`
    /// those that have none.
    #[param(inline)]
    empty: Option<BoolFilter>,
}

/// Lists the device groups of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/controller/group/", tag = "groups",
    params(PageQuery, GroupListQuery),
    responses((status = 200, body = Paginated<DeviceGroupView>)), security(("bearer" = [])))]
async fn list_groups(
    State(state): State<AppState>,
    auth: Authorized<DeviceGroups, View>,
    paging: Paging,
    Filters(query): Filters<GroupListQuery>,
) -> Result<Json<Paginated<DeviceGroupView>>, ApiError> {
    let own = match narrowed_org(
        &state,
        &auth.caller,
        query.organization.map(|f| f.0),
        query.organization_slug,
    )
    .await?
    {
        Some(None) => return paging.empty(),
        Some(Some(org)) => Some(org),
        None => None,
    };
    let filter = GroupFilter {
        empty: query.empty.map(|f| f.0),
    };
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_groups(&auth.scope, own, &filter, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a device group.
#[utoipa::path(post, path = "/api/v1/controller/group/", tag = "groups",
    request_body = DeviceGroupWrite, responses((status = 201, body = DeviceGroupView)),
    security(("bearer" = [])))]
async fn create_group(
    State(state): State<AppState>,
    auth: Authorized<DeviceGroups, Add>,
    body: Body<DeviceGroupWrite>,
) -> Result<(StatusCode, Json<DeviceGroupView>), ApiError> {
    let fields = body.read()?.apply(&state, &auth.caller, None).await?;
    let group = state.store().run(move |db| db.create_group(fields)).await?;
    Ok((StatusCode::CREATED, Json(view(group))))
}

/// Shows a device group.
#[utoipa::path(get, path = "/api/v1/controller/group/{id}/", tag = "groups",
    params(PathId), responses((status = 200, body = DeviceGroupView)), security(("bearer" = [])))]
async fn get_group(
    State(state): State<AppState>,
    auth: Authorized<DeviceGroups, View>,
    PathId(id): PathId,
) -> Result<Json<DeviceGroupView>, ApiError> {
    Ok(Json(view(visible_group(&state, &auth.caller, id).await?)))
}

/// Replaces a device group, or with PATCH changes some of its fields. When its templates
/// change, each of its devices swaps the old group templates for the new ones.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/group/{id}/", tag = "groups",
    params(PathId), request_body = DeviceGroupWrite,
    responses((status = 200, body = DeviceGroupView)), security(("bearer" = [])))]
async fn change_group(
    State(state): State<AppState>,
    auth: Authorized<DeviceGroups, Change>,
    PathId(id): PathId,
    body: Body<DeviceGroupWrite>,
) -> Result<Json<DeviceGroupView>, ApiError> {
    let current = visible_group(&state, &auth.caller, id).await?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, Some(current.fields))
        .await?;
    let (group, _) = state
        .store()
        .run(move |db| db.update_group(GroupId(id), fields))
        .await?;
    Ok(Json(view(group)))
}

/// Deletes a device group; its devices are left without group.
#[utoipa::path(delete, path = "/api/v1/controller/group/{id}/", tag = "groups",
    params(PathId), responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
async fn delete_group(
    State(state): State<AppState>,
    auth: Authorized<DeviceGroups, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    visible_group(&state, &auth.caller, id).await?;
    state
        .store()
        .run(move |db| db.delete_group(GroupId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the certificate lookup.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertGroupQuery {
    /// Comma-separated slugs of the certificate's possible organizations.
    org: Option<String>,
}

/// The device group of the device using a certificate, by the certificate's common name
/// (layer 2 tunnels, captive portals): the first certificate with that name (in the given
/// organizations) that was issued to a device, and that device's group.
#[utoipa::path(get, path = "/api/v1/controller/cert/{common_name}/group/", tag = "groups",
    params(("common_name" = String, Path, description = "The certificate's common name"),
        CertGroupQuery),
    responses((status = 200, body = DeviceGroupView)), security(("bearer" = [])))]
async fn group_of_certificate(
    State(state): State<AppState>,
    auth: Authorized<DeviceGroups, View>,
    Path(common_name): Path<String>,
    Filters(query): Filters<CertGroupQuery>,
) -> Result<Json<DeviceGroupView>, ApiError> {
    let slugs: Option<Vec<String>> = query.org.map(|orgs| {
        orgs.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let group = state
        .store()
        .run(move |db| {
            let orgs = match slugs {
                None => None,
                Some(slugs) => {
                    let mut orgs = Vec::new();
                    for slug in slugs {
                        if let Some(org) = db.organization_by_slug(&slug)? {
                            orgs.push(org.id);
                        }
                    }
                    Some(orgs)
                }
            };
            db.group_by_common_name(&common_name, orgs)
        })
        .await?
        .filter(|g| auth.caller.manages(g.fields.organization))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(group)))
}
