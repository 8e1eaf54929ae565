//! `/api/v1/filters[/{filterId}[/endpoints]]` (fleetmq's extension): endpoint filters, the
//! named queries over devices a targeted rollout names in its `filters`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::{
    Action, Device, DeviceId, EndpointFilter, FilterFields, FilterId, FilterQuery, GroupId,
    LocationId, OAuthScope, OrgId, Scope,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{
    OtaoBody, OtaoCaller, OtaoError, OtaoPaging, OtaoPath, OtaoQuery, organization_exists,
    organization_param, writable_org,
};
use crate::AppState;
use crate::pagination::{PageQuery, Paginated};

/// The filter routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_filters, create_filter))
        .routes(routes!(get_filter, replace_filter, delete_filter))
        .routes(routes!(filter_endpoints))
}

/// The most characters of a filter's name.
const NAME_MAX_CHARS: usize = 200;

/// An endpoint filter: every criterion given must hold.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterView {
    /// Identity (what software's `filters[].filterId` names).
    pub filter_id: String,
    /// A name for people.
    pub name: String,
    /// Its organization; it selects only that organization's devices.
    pub organization: String,
    /// Devices of this group.
    pub group: Option<String>,
    /// Devices placed at this location.
    pub location: Option<String>,
    /// Devices of this model.
    pub model: Option<String>,
    /// Devices running this operating system.
    pub os: Option<String>,
    /// Devices with this hardware id.
    pub hardware_id: Option<String>,
    /// Devices whose configuration variables hold each key with this value.
    pub metadata: BTreeMap<String, String>,
    /// Only these devices (empty: any).
    pub devices: Vec<String>,
}

impl FilterView {
    fn of(filter: &EndpointFilter) -> Self {
        let query = &filter.fields.query;
        FilterView {
            filter_id: filter.id.0.to_string(),
            name: filter.fields.name.clone(),
            organization: filter.fields.organization.0.to_string(),
            group: query.group.map(|g| g.0.to_string()),
            location: query.location.map(|l| l.0.to_string()),
            model: query.model.clone(),
            os: query.os.clone(),
            hardware_id: query.hardware_id.clone(),
            metadata: query.metadata.clone(),
            devices: query.devices.iter().map(|d| d.0.to_string()).collect(),
        }
    }
}

/// What a client sends to create or replace a filter.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterWrite {
    /// Ignored when equal to the path's (so a GET body can be sent back).
    #[serde(default)]
    pub filter_id: Option<String>,
    /// A name for people.
    pub name: String,
    /// Its organization (optional when the caller has one; may not change).
    #[serde(default)]
    pub organization: Option<Uuid>,
    /// Devices of this group (of the same organization).
    #[serde(default)]
    pub group: Option<Uuid>,
    /// Devices placed at this location (of the same organization).
    #[serde(default)]
    pub location: Option<Uuid>,
    /// Devices of this model.
    #[serde(default)]
    pub model: Option<String>,
    /// Devices running this operating system.
    #[serde(default)]
    pub os: Option<String>,
    /// Devices with this hardware id.
    #[serde(default)]
    pub hardware_id: Option<String>,
    /// Devices whose configuration variables hold each key with this value.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Only these devices (of the same organization).
    #[serde(default)]
    pub devices: Vec<Uuid>,
}

impl FilterWrite {
    /// The filter's fields for `org`, every reference checked to exist in it (400).
    async fn fields(self, state: &AppState, org: OrgId) -> Result<FilterFields, OtaoError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
            return Err(OtaoError::bad_request(format!(
                "name: 1 to {NAME_MAX_CHARS} characters."
            )));
        }
        let query = FilterQuery {
            group: self.group.map(GroupId),
            location: self.location.map(LocationId),
            model: self.model,
            os: self.os,
            hardware_id: self.hardware_id,
            metadata: self.metadata,
            devices: self.devices.into_iter().map(DeviceId).collect(),
        };
        let check = query.clone();
        let problem = state
            .store()
            .run(move |db| {
                if let Some(group) = check.group
                    && db
                        .group(group)?
                        .is_none_or(|g| g.fields.organization != org)
                {
                    return Ok(Some(format!(
                        "group: \"{}\" is not a group of the organization.",
                        group.0
                    )));
                }
                if let Some(location) = check.location
                    && db.location(location)?.is_none_or(|l| l.organization != org)
                {
                    return Ok(Some(format!(
                        "location: \"{}\" is not a location of the organization.",
                        location.0
                    )));
                }
                for device in &check.devices {
                    if db
                        .device(*device)?
                        .is_none_or(|d| d.fields.organization != org)
                    {
                        return Ok(Some(format!(
                            "devices: \"{}\" is not a device of the organization.",
                            device.0
                        )));
                    }
                }
                Ok(None)
            })
            .await?;
        if let Some(problem) = problem {
            return Err(OtaoError::bad_request(problem));
        }
        Ok(FilterFields {
            organization: org,
            name,
            query,
        })
    }
}

/// A device a filter matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterEndpointView {
    /// The device's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its organization.
    pub organization: String,
    /// Its model.
    pub model: String,
    /// Its operating system.
    pub os: String,
    /// Its hardware id.
    pub hardware_id: String,
}

impl FilterEndpointView {
    fn of(device: Device) -> Self {
        FilterEndpointView {
            id: device.id.0.to_string(),
            name: device.fields.name.as_str().to_owned(),
            organization: device.fields.organization.0.to_string(),
            model: device.fields.model,
            os: device.fields.os,
            hardware_id: device.fields.hardware_id,
        }
    }
}

/// The filter `id` names, if the caller may see it.
async fn visible_filter(
    state: &AppState,
    scope: &Scope,
    id: &str,
) -> Result<EndpointFilter, OtaoError> {
    let not_found = || OtaoError::not_found(format!("Filter \"{id}\" not found."));
    let filter_id = Uuid::parse_str(id).map(FilterId).map_err(|_| not_found())?;
    match state.store().run(move |db| db.filter(filter_id)).await? {
        Some(filter) if scope.contains(filter.fields.organization) => Ok(filter),
        _ => Err(not_found()),
    }
}

/// Lists the filters of the caller's organizations, newest first (`?organization=` narrows).
#[utoipa::path(get, path = "/api/v1/filters", tag = "otao",
    params(PageQuery, ("organization" = Option<Uuid>, Query, description = "Only this organization's")),
    responses((status = 200, body = Paginated<FilterView>)),
    security(("bearer" = ["endpoint:read"])))]
async fn list_filters(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoQuery(query): OtaoQuery,
    OtaoPaging(paging): OtaoPaging,
) -> Result<Json<Paginated<FilterView>>, OtaoError> {
    let mut scope = caller.allowed(OAuthScope::EndpointRead, Action::View)?;
    if let Some(org) = organization_param(&query)? {
        if !scope.contains(org) {
            return Ok(paging.empty()?);
        }
        scope = Scope::Orgs(vec![org]);
    }
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_filters(&scope, request))
        .await?;
    Ok(paging.envelope(page, |f| FilterView::of(&f))?)
}

/// Creates a filter.
#[utoipa::path(post, path = "/api/v1/filters", tag = "otao",
    params(("organization" = Option<Uuid>, Query, description = "Whose filter (instead of the body's `organization`)")),
    request_body = FilterWrite,
    responses((status = 201, body = FilterView)),
    security(("bearer" = ["application:software:update"])))]
async fn create_filter(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoQuery(query): OtaoQuery,
    body: OtaoBody,
) -> Result<(StatusCode, Json<FilterView>), OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareUpdate, Action::Change)?;
    let write = body.parse::<FilterWrite>()?;
    // The body's organization, else the query's: either must be one of the caller's.
    let wanted = match write.organization {
        Some(id) => Some(OrgId(id)),
        None => organization_param(&query)?,
    };
    let org = match wanted {
        Some(id) if scope.contains(id) && organization_exists(&state, id).await? => id,
        Some(id) => {
            return Err(OtaoError::bad_request(format!(
                "organization: \"{id}\" is not one of the caller's organizations."
            )));
        }
        None => writable_org(&state, &caller, &scope, None, &query).await?,
    };
    let fields = write.fields(&state, org).await?;
    let filter = state
        .store()
        .run(move |db| db.create_filter(fields))
        .await?;
    state.hooks().software_changed(org);
    Ok((StatusCode::CREATED, Json(FilterView::of(&filter))))
}

/// Returns a filter.
#[utoipa::path(get, path = "/api/v1/filters/{filterId}", tag = "otao",
    params(("filterId" = Uuid, Path, description = "The filter")),
    responses((status = 200, body = FilterView)),
    security(("bearer" = ["endpoint:read"])))]
async fn get_filter(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
) -> Result<Json<FilterView>, OtaoError> {
    let scope = caller.allowed(OAuthScope::EndpointRead, Action::View)?;
    let filter = visible_filter(&state, &scope, &id).await?;
    Ok(Json(FilterView::of(&filter)))
}

/// Replaces a filter (its organization may not change).
#[utoipa::path(put, path = "/api/v1/filters/{filterId}", tag = "otao",
    params(("filterId" = Uuid, Path, description = "The filter")),
    request_body = FilterWrite,
    responses((status = 200, body = FilterView)),
    security(("bearer" = ["application:software:update"])))]
async fn replace_filter(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
    body: OtaoBody,
) -> Result<Json<FilterView>, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareUpdate, Action::Change)?;
    let current = visible_filter(&state, &scope, &id).await?;
    let write = body.parse::<FilterWrite>()?;
    let org = current.fields.organization;
    if write.organization.is_some_and(|o| OrgId(o) != org) {
        return Err(OtaoError::bad_request(
            "organization: a filter's organization cannot change.",
        ));
    }
    if write
        .filter_id
        .as_deref()
        .is_some_and(|f| f != current.id.0.to_string())
    {
        return Err(OtaoError::bad_request(
            "filterId in the body must equal the path's.",
        ));
    }
    let fields = write.fields(&state, org).await?;
    let filter_id = current.id;
    let filter = state
        .store()
        .run(move |db| db.update_filter(filter_id, fields))
        .await?;
    state.hooks().software_changed(org);
    Ok(Json(FilterView::of(&filter)))
}

/// Deletes a filter; refused (400) while a software version names it.
#[utoipa::path(delete, path = "/api/v1/filters/{filterId}", tag = "otao",
    params(("filterId" = Uuid, Path, description = "The filter")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = ["application:software:update"])))]
async fn delete_filter(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
) -> Result<StatusCode, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareUpdate, Action::Change)?;
    let filter = visible_filter(&state, &scope, &id).await?;
    let filter_id = filter.id;
    state
        .store()
        .run(move |db| db.delete_filter(filter_id))
        .await
        .map_err(|e| match e {
            fleetmq_store::StoreError::InUse => OtaoError::bad_request(
                "The filter is used by a software version; remove it there first.",
            ),
            other => other.into(),
        })?;
    state.hooks().software_changed(filter.fields.organization);
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the devices a filter matches now, paged.
#[utoipa::path(get, path = "/api/v1/filters/{filterId}/endpoints", tag = "otao",
    params(("filterId" = Uuid, Path, description = "The filter"), PageQuery),
    responses((status = 200, body = Paginated<FilterEndpointView>)),
    security(("bearer" = ["endpoint:read"])))]
async fn filter_endpoints(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
    OtaoPaging(paging): OtaoPaging,
) -> Result<Json<Paginated<FilterEndpointView>>, OtaoError> {
    let scope = caller.allowed(OAuthScope::EndpointRead, Action::View)?;
    let filter = visible_filter(&state, &scope, &id).await?;
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.filter_endpoints(filter.id, request))
        .await?;
    Ok(paging.envelope(page, FilterEndpointView::of)?)
}
