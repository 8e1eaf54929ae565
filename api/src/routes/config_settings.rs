//! `/api/v1/controller/organization/{id}/config-settings/`: an organization's configuration
//! settings (OpenWISP's `OrganizationConfigSettings`, shown in its admin): whether devices may
//! register themselves, the shared secret they register with, and the organization's
//! configuration variables. Managers of the organization and superusers only.

use axum::Json;
use axum::extract::State;
use fleetmq_store::{ConfigSettings, OrgId, SharedSecret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Authorized, Caller, Change, OrgSettings, View};
use crate::body::{Body, text_field};
use crate::extract::PathId;
use crate::{ApiError, AppState};

/// The configuration settings routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_config_settings, change_config_settings))
}

/// An organization's configuration settings as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigSettingsView {
    /// The organization they belong to.
    pub organization: Uuid,
    /// Whether devices may register themselves with the shared secret.
    pub registration_enabled: bool,
    /// What the openwisp-config agent presents to register a device in this organization.
    pub shared_secret: String,
    /// Variables every configuration of the organization is rendered with.
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
}

/// What a client sends to replace or change an organization's configuration settings.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfigSettingsWrite {
    /// Whether devices may register themselves.
    #[schema(nullable = false)]
    registration_enabled: Option<bool>,
    /// The registration secret, unique across organizations.
    #[schema(required = true, nullable = false)]
    shared_secret: Option<SecretField>,
    /// Configuration variables.
    #[schema(nullable = false)]
    context: Option<Map<String, Value>>,
}

text_field!(
    /// A registration secret: 1 to 32 characters, no spaces, dots or slashes.
    SecretField(SharedSecret),
    SharedSecret::parse,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(SharedSecret::MAX_LENGTH))
        .pattern(Some(r"^[^\s/.\\]+$")),
);

impl ConfigSettingsWrite {
    /// The settings after this write over `current` (what it leaves out stays, as DRF
    /// updates do).
    fn apply(self, base: ConfigSettings) -> ConfigSettings {
        ConfigSettings {
            registration_enabled: self
                .registration_enabled
                .unwrap_or(base.registration_enabled),
            shared_secret: self.shared_secret.map_or(base.shared_secret, |s| s.0),
            context: self.context.unwrap_or(base.context),
        }
    }
}

fn view(org: OrgId, settings: ConfigSettings) -> ConfigSettingsView {
    ConfigSettingsView {
        organization: org.0,
        registration_enabled: settings.registration_enabled,
        shared_secret: settings.shared_secret.as_str().to_owned(),
        context: settings.context,
    }
}

/// The settings of organization `id` if the caller manages it; any other is not found.
async fn managed_settings(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(OrgId, ConfigSettings), ApiError> {
    let org = caller
        .managed_org(state, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let settings = state.store().run(move |db| db.config_settings(org)).await?;
    Ok((org, settings))
}

/// Shows an organization's configuration settings (created with a random secret on first
/// read).
#[utoipa::path(get, path = "/api/v1/controller/organization/{id}/config-settings/",
    tag = "devices", params(PathId),
    responses((status = 200, body = ConfigSettingsView)), security(("bearer" = [])))]
async fn get_config_settings(
    State(state): State<AppState>,
    auth: Authorized<OrgSettings, View>,
    PathId(id): PathId,
) -> Result<Json<ConfigSettingsView>, ApiError> {
    let (org, settings) = managed_settings(&state, &auth.caller, id).await?;
    Ok(Json(view(org, settings)))
}

/// Replaces an organization's configuration settings, or with PATCH changes some of them.
/// Changing the variables re-renders every device of the organization.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/organization/{id}/config-settings/",
    tag = "devices", params(PathId), request_body = ConfigSettingsWrite,
    responses((status = 200, body = ConfigSettingsView)), security(("bearer" = [])))]
async fn change_config_settings(
    State(state): State<AppState>,
    auth: Authorized<OrgSettings, Change>,
    PathId(id): PathId,
    body: Body<ConfigSettingsWrite>,
) -> Result<Json<ConfigSettingsView>, ApiError> {
    let (org, current) = managed_settings(&state, &auth.caller, id).await?;
    let settings = body.read()?.apply(current);
    let (settings, change) = state
        .store()
        .run(move |db| db.replace_config_settings(org, settings))
        .await?;
    tracing::info!(organization = %org.0, devices = change.devices.len(), "configuration settings changed");
    Ok(Json(view(org, settings)))
}
