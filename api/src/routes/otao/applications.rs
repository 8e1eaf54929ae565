//! `/api/v1/applications/{appName}` (fleetmq's extension): an application's settings —
//! whether its devices must consent to an offer before the software is delivered.

use axum::Json;
use axum::extract::State;
use fleetmq_store::{Action, Application, OAuthScope, Timestamp, valid_app_name};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{OtaoBody, OtaoCaller, OtaoError, OtaoPath, OtaoQuery, application_org, writable_org};
use crate::AppState;

/// The application routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_application, put_application))
}

/// An application's settings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationView {
    /// The application.
    pub app_name: String,
    /// Devices must accept an offer before the software is delivered.
    pub consent_required: bool,
}

/// What a client sends to change an application's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationWrite {
    /// Must equal the path's, when given.
    #[serde(default)]
    pub app_name: Option<String>,
    /// Devices must accept an offer before the software is delivered.
    pub consent_required: bool,
}

/// Returns an application's settings.
#[utoipa::path(get, path = "/api/v1/applications/{appName}", tag = "otao",
    params(("appName" = String, Path, description = "Application name"),
        ("organization" = Option<Uuid>, Query, description = "Which organization's application (users with several)")),
    responses((status = 200, body = ApplicationView)),
    security(("bearer" = ["application:software:read"])))]
async fn get_application(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(app): OtaoPath<String>,
    OtaoQuery(query): OtaoQuery,
) -> Result<Json<ApplicationView>, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareRead, Action::View)?;
    let org = application_org(&state, &caller, &scope, &app, &query).await?;
    let name = app.clone();
    let (settings, versions) = state
        .store()
        .run(move |db| Ok((db.application(org, &name)?, db.list_software(org, &name)?)))
        .await?;
    match settings {
        Some(settings) => Ok(Json(ApplicationView {
            app_name: settings.name,
            consent_required: settings.consent_required,
        })),
        None if !versions.is_empty() => Ok(Json(ApplicationView {
            app_name: app,
            consent_required: false,
        })),
        None => Err(OtaoError::not_found(format!(
            "Application \"{app}\" not found."
        ))),
    }
}

/// Creates or replaces an application's settings.
#[utoipa::path(put, path = "/api/v1/applications/{appName}", tag = "otao",
    params(("appName" = String, Path, description = "Application name"),
        ("organization" = Option<Uuid>, Query, description = "Whose application (users with several organizations)")),
    request_body = ApplicationWrite,
    responses((status = 200, body = ApplicationView)),
    security(("bearer" = ["application:software:update"])))]
async fn put_application(
    State(state): State<AppState>,
    caller: OtaoCaller,
    OtaoPath(app): OtaoPath<String>,
    OtaoQuery(query): OtaoQuery,
    body: OtaoBody,
) -> Result<Json<ApplicationView>, OtaoError> {
    let scope = caller.allowed(OAuthScope::SoftwareUpdate, Action::Change)?;
    if !valid_app_name(&app) {
        return Err(OtaoError::bad_request(format!(
            "\"{app}\" is not an application name."
        )));
    }
    let org = writable_org(&state, &caller, &scope, Some(&app), &query).await?;
    let write = body.parse::<ApplicationWrite>()?;
    if write.app_name.as_deref().is_some_and(|a| a != app) {
        return Err(OtaoError::bad_request(
            "appName in the body must equal the path's.",
        ));
    }
    let name = app.clone();
    let saved = state
        .store()
        .run(move |db| {
            let now = Timestamp::now();
            let created = db.application(org, &name)?.map_or(now, |a| a.created);
            db.put_application(Application {
                organization: org,
                name,
                consent_required: write.consent_required,
                created,
                modified: now,
            })
        })
        .await?;
    state.hooks().software_changed(org);
    Ok(Json(ApplicationView {
        app_name: saved.name,
        consent_required: saved.consent_required,
    }))
}
