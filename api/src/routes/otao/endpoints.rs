//! `/api/v1/endpoints/{endpointId}/software...`: what an endpoint (a device) runs — the
//! seed's `current`, and fleetmq's extensions: the list, setting it over REST, and the
//! device's installations.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use fleetmq_store::{Action, Installation, OAuthScope, valid_app_name};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::software::SoftwareView;
use super::{OtaoBody, OtaoCaller, OtaoError, OtaoPath, OtaoQuery, visible_endpoint};
use crate::AppState;

/// The endpoint routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(current_software))
        .routes(routes!(list_endpoint_software))
        .routes(routes!(set_endpoint_software))
        .routes(routes!(list_installations))
}

/// The longest version text a device's application may be set to over REST.
const VERSION_MAX_CHARS: usize = 128;

/// One application a device runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSoftwareView {
    /// The application.
    pub app_name: String,
    /// The version it runs (as reported; not necessarily published).
    pub version: String,
}

impl EndpointSoftwareView {
    /// The views of a device's applications.
    fn list(running: Vec<fleetmq_store::DeviceSoftware>) -> Vec<EndpointSoftwareView> {
        running
            .into_iter()
            .map(|s| EndpointSoftwareView {
                app_name: s.app_name,
                version: s.version,
            })
            .collect()
    }
}

/// What a client sends to set the version a device runs of an application.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSoftwareWrite {
    /// The version the device runs.
    pub version: String,
}

/// One hop of an application on a device, as the rollout engine drives it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallationView {
    /// Identity (the wire's operation id).
    pub id: String,
    /// The application.
    pub app_name: String,
    /// The version the device ran when it was planned.
    pub from: String,
    /// The version installed.
    pub version: String,
    /// `in-progress`, `success`, `failed`, `aborted` or `cancelled`.
    #[schema(value_type = String)]
    pub status: Value,
    /// `queued`, `offered`, `delivering`, `installing` or `done`.
    #[schema(value_type = String)]
    pub step: Value,
    /// What happened, one line per event.
    pub log: String,
    /// When it was created.
    pub created: String,
    /// When it last changed.
    pub modified: String,
}

impl InstallationView {
    fn of(i: Installation) -> Self {
        InstallationView {
            id: i.id.0.to_string(),
            app_name: i.app_name,
            from: i.from,
            version: i.version.to_string(),
            status: serde_json::to_value(i.status).unwrap_or(Value::Null),
            step: serde_json::to_value(i.step).unwrap_or(Value::Null),
            log: i.log,
            created: i.created.to_string(),
            modified: i.modified.to_string(),
        }
    }
}

/// Returns the Software of the version an endpoint runs (`?appName=` chooses the
/// application; without it the device must run exactly one).
#[utoipa::path(get, path = "/api/v1/endpoints/{endpointId}/software/current", tag = "otao",
    params(("endpointId" = String, Path, description = "The endpoint (device) id"),
        ("appName" = Option<String>, Query, description = "Which application, when the device runs several")),
    responses((status = 200, body = SoftwareView)),
    security(("bearer" = ["endpoint:read"])))]
async fn current_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
    OtaoQuery(query): OtaoQuery,
) -> Result<Json<SoftwareView>, OtaoError> {
    let scope = caller.allowed(OAuthScope::EndpointRead, Action::View)?;
    let device = visible_endpoint(&state, &scope, &id).await?;
    let device_id = device.id;
    let running = state
        .store()
        .run(move |db| db.device_software(device_id))
        .await?;
    let chosen = match query.get("appName").filter(|a| !a.is_empty()) {
        Some(app) => running.into_iter().find(|s| s.app_name == app),
        None => match running.as_slice() {
            [] => None,
            [_] => running.into_iter().next(),
            several => {
                let names: Vec<&str> = several.iter().map(|s| s.app_name.as_str()).collect();
                return Err(OtaoError::bad_request(format!(
                    "The endpoint runs several applications ({}): choose one with ?appName=.",
                    names.join(", ")
                )));
            }
        },
    };
    let not_found = || OtaoError::not_found("The endpoint runs no software of the catalogue.");
    let running = chosen.ok_or_else(not_found)?;
    let version = Version::parse(&running.version).map_err(|_| not_found())?;
    let org = device.fields.organization;
    let software = state
        .store()
        .run(move |db| db.software(org, &running.app_name, &version))
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(SoftwareView::of(&software)))
}

/// Lists the applications an endpoint runs (fleetmq's extension).
#[utoipa::path(get, path = "/api/v1/endpoints/{endpointId}/software", tag = "otao",
    params(("endpointId" = String, Path, description = "The endpoint (device) id")),
    responses((status = 200, body = Vec<EndpointSoftwareView>)),
    security(("bearer" = ["endpoint:read"])))]
async fn list_endpoint_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
) -> Result<Json<Vec<EndpointSoftwareView>>, OtaoError> {
    let scope = caller.allowed(OAuthScope::EndpointRead, Action::View)?;
    let device = visible_endpoint(&state, &scope, &id).await?;
    let running = state
        .store()
        .run(move |db| db.device_software(device.id))
        .await?;
    Ok(Json(EndpointSoftwareView::list(running)))
}

/// Sets the version an endpoint runs of one application, over REST (fleetmq's extension);
/// its other applications stay.
#[utoipa::path(put, path = "/api/v1/endpoints/{endpointId}/software/{appName}", tag = "otao",
    params(("endpointId" = String, Path, description = "The endpoint (device) id"),
        ("appName" = String, Path, description = "Application name")),
    request_body = EndpointSoftwareWrite,
    responses((status = 200, body = Vec<EndpointSoftwareView>)),
    security(("bearer" = ["endpoint:update"])))]
async fn set_endpoint_software(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath((id, app)): OtaoPath<(String, String)>,
    body: OtaoBody,
) -> Result<Json<Vec<EndpointSoftwareView>>, OtaoError> {
    let scope = caller.allowed(OAuthScope::EndpointUpdate, Action::Change)?;
    let device = visible_endpoint(&state, &scope, &id).await?;
    let write = body.parse::<EndpointSoftwareWrite>()?;
    if !valid_app_name(&app) {
        return Err(OtaoError::bad_request(format!(
            "\"{app}\" is not an application name."
        )));
    }
    let version = write.version.trim().to_owned();
    if version.is_empty() || version.chars().count() > VERSION_MAX_CHARS {
        return Err(OtaoError::bad_request(format!(
            "version: 1 to {VERSION_MAX_CHARS} characters."
        )));
    }
    let device_id = device.id;
    let running = state
        .store()
        .run(move |db| db.set_device_software(device_id, BTreeMap::from([(app, version)]), false))
        .await?;
    state.hooks().software_changed(device.fields.organization);
    Ok(Json(EndpointSoftwareView::list(running)))
}

/// Lists an endpoint's installations, newest first (fleetmq's extension).
#[utoipa::path(get, path = "/api/v1/endpoints/{endpointId}/software/installations", tag = "otao",
    params(("endpointId" = String, Path, description = "The endpoint (device) id")),
    responses((status = 200, body = Vec<InstallationView>)),
    security(("bearer" = ["endpoint:read"])))]
async fn list_installations(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(id): OtaoPath<String>,
) -> Result<Json<Vec<InstallationView>>, OtaoError> {
    let scope = caller.allowed(OAuthScope::EndpointRead, Action::View)?;
    let device = visible_endpoint(&state, &scope, &id).await?;
    let installations = state
        .store()
        .run(move |db| db.device_installations(device.id))
        .await?;
    Ok(Json(
        installations
            .into_iter()
            .map(InstallationView::of)
            .collect(),
    ))
}
