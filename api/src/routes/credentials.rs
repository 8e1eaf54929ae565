//! `/api/v1/connection/credential/` (also served at `/api/v1/controller/credential/`, where
//! OpenWISP really serves it): how the server reaches devices.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::{Connector, Credentials, CredentialsFields, CredentialsId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Add, Authorized, Caller, Change, Delete, View};
use crate::body::{Body, NonBlank, NullablePk, text_field};
use crate::error::PERMISSION_DENIED;
use crate::extract::PathId;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// Where OpenWISP's docs put the credentials.
pub const PATH: &str = "/api/v1/connection/credential/";
/// Where OpenWISP really serves them; answered too.
pub const ALIAS: &str = "/api/v1/controller/credential/";

/// The credentials routes (documented under [`PATH`]; the server also mounts them at [`ALIAS`]).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_credentials, create_credentials))
        .routes(routes!(
            get_credentials,
            change_credentials,
            delete_credentials
        ))
}

/// Credentials as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsView {
    /// Identity.
    pub id: Uuid,
    /// Owning organization; `null` = shared.
    pub organization: Option<Uuid>,
    /// Display name.
    pub name: String,
    /// `fleetmq.connection.connectors.mqtt.Mqtt` or `openwisp_controller.connection.connectors.ssh.Ssh`.
    pub connector: &'static str,
    /// Add to every device of the organization.
    pub auto_add: bool,
    /// Connector parameters.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends to create, replace or change credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CredentialsWrite {
    /// `mqtt`, `ssh`, or the dotted connector names.
    #[schema(required = true, nullable = false)]
    connector: Option<ConnectorField>,
    /// Display name.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<64>>,
    /// Owning organization; `null` (superusers only) = shared by all organizations.
    #[schema(required = true, nullable = false)]
    organization: Option<NullablePk>,
    /// Add to every device of the organization.
    #[schema(nullable = false)]
    auto_add: Option<bool>,
    /// SSH: `{username, password, port?}` or `{username, key, port?}`; MQTT: `{}`.
    #[schema(nullable = false, value_type = Option<Object>)]
    params: Option<Map<String, Value>>,
}

text_field!(
    /// A connector: `mqtt`, `ssh`, or the dotted name the API shows.
    ConnectorField(Connector),
    |s: &str| Connector::parse(s).ok_or_else(|| format!("\"{s}\" is not a valid choice.")),
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
        "mqtt",
        "ssh",
        Connector::Mqtt.name(),
        Connector::Ssh.name(),
    ])),
);

impl CredentialsWrite {
    /// The credentials' fields after this write, over `current` or new ones. The organization
    /// must be one the caller manages; only superusers may leave it `null`.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: Option<CredentialsFields>,
    ) -> Result<CredentialsFields, ApiError> {
        let connector = self.connector.map(|c| c.0);
        let mut fields = match current {
            Some(current) => current,
            None => CredentialsFields {
                organization: None,
                name: String::new(),
                connector: connector.unwrap_or(Connector::Ssh),
                auto_add: false,
                params: Map::new(),
            },
        };
        fields.organization = caller
            .owner(state, self.organization, fields.organization)
            .await?;
        if let Some(v) = connector {
            fields.connector = v;
        }
        if let Some(v) = self.name {
            fields.name = v.0;
        }
        if let Some(v) = self.auto_add {
            fields.auto_add = v;
        }
        if let Some(v) = self.params {
            fields.params = v;
        }
        check_params(fields.connector, &fields.params)
            .map_err(|message| ApiError::field("params", message))?;
        Ok(fields)
    }
}

fn view(c: Credentials) -> CredentialsView {
    CredentialsView {
        id: c.id.0,
        organization: c.fields.organization.map(|o| o.0),
        name: c.fields.name,
        connector: c.fields.connector.name(),
        auto_add: c.fields.auto_add,
        params: c.fields.params,
        created: c.created.to_string(),
        modified: c.modified.to_string(),
    }
}

/// Checks connector parameters as OpenWISP's JSON schema does.
fn check_params(connector: Connector, params: &Map<String, Value>) -> Result<(), String> {
    match connector {
        Connector::Mqtt => {
            if params.is_empty() {
                Ok(())
            } else {
                Err(
                    "The MQTT connector takes no parameters: devices authenticate with their key."
                        .into(),
                )
            }
        }
        Connector::Ssh => {
            for key in params.keys() {
                if !["username", "password", "key", "port"].contains(&key.as_str()) {
                    return Err(format!(
                        "Additional properties are not allowed ('{key}' was unexpected)"
                    ));
                }
            }
            match params.get("username") {
                Some(Value::String(u)) if !u.is_empty() => {}
                _ => return Err("'username' is a required property".into()),
            }
            let has = |k: &str| matches!(params.get(k), Some(Value::String(v)) if !v.is_empty());
            if has("password") == has("key") {
                return Err("Give either 'password' or 'key'".into());
            }
            if let Some(port) = params.get("port")
                && !port.as_u64().is_some_and(|p| (1..=65535).contains(&p))
            {
                return Err("'port' must be an integer between 1 and 65535".into());
            }
            Ok(())
        }
    }
}

/// The credentials `id` if the caller may see them (its organization's, or shared); else not
/// found.
async fn visible_credentials(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Credentials, ApiError> {
    let id = CredentialsId(id);
    state
        .store()
        .run(move |db| db.credentials(id))
        .await?
        .filter(|c| c.fields.organization.is_none_or(|org| caller.manages(org)))
        .ok_or(ApiError::NotFound)
}

/// Shared credentials are read-only to everyone but superusers.
fn check_writable(caller: &Caller, c: &CredentialsFields) -> Result<(), ApiError> {
    caller.require_shared_write(c.organization, PERMISSION_DENIED)
}

/// Lists credentials of the caller's organizations and shared ones.
#[utoipa::path(get, path = "/api/v1/connection/credential/", tag = "connections",
    params(PageQuery), responses((status = 200, body = Paginated<CredentialsView>)),
    security(("bearer" = [])))]
async fn list_credentials(
    State(state): State<AppState>,
    auth: Authorized<auth::Credentials, View>,
    paging: Paging,
) -> Result<Json<Paginated<CredentialsView>>, ApiError> {
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_credentials(&auth.scope, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates credentials; shared ones (no organization) only superusers may create.
#[utoipa::path(post, path = "/api/v1/connection/credential/", tag = "connections",
    request_body = CredentialsWrite, responses((status = 201, body = CredentialsView)),
    security(("bearer" = [])))]
async fn create_credentials(
    State(state): State<AppState>,
    auth: Authorized<auth::Credentials, Add>,
    body: Body<CredentialsWrite>,
) -> Result<(StatusCode, Json<CredentialsView>), ApiError> {
    let fields = body.read()?.apply(&state, &auth.caller, None).await?;
    check_writable(&auth.caller, &fields)?;
    let created = state
        .store()
        .run(move |db| db.create_credentials(fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows credentials.
#[utoipa::path(get, path = "/api/v1/connection/credential/{id}/", tag = "connections",
    params(PathId), responses((status = 200, body = CredentialsView)),
    security(("bearer" = [])))]
async fn get_credentials(
    State(state): State<AppState>,
    auth: Authorized<auth::Credentials, View>,
    PathId(id): PathId,
) -> Result<Json<CredentialsView>, ApiError> {
    Ok(Json(view(
        visible_credentials(&state, &auth.caller, id).await?,
    )))
}

/// Replaces credentials, or with PATCH changes some of their fields.
#[utoipa::path(method(put, patch), path = "/api/v1/connection/credential/{id}/",
    tag = "connections", params(PathId), request_body = CredentialsWrite,
    responses((status = 200, body = CredentialsView),
        (status = 403, description = "No permission, the caller manages no organization, or the credentials are shared (only superusers change those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn change_credentials(
    State(state): State<AppState>,
    auth: Authorized<auth::Credentials, Change>,
    PathId(id): PathId,
    body: Body<CredentialsWrite>,
) -> Result<Json<CredentialsView>, ApiError> {
    let current = visible_credentials(&state, &auth.caller, id).await?;
    check_writable(&auth.caller, &current.fields)?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, Some(current.fields))
        .await?;
    check_writable(&auth.caller, &fields)?;
    let updated = state
        .store()
        .run(move |db| db.update_credentials(CredentialsId(id), fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Deletes credentials and the device connections using them.
#[utoipa::path(delete, path = "/api/v1/connection/credential/{id}/", tag = "connections",
    params(PathId), responses((status = 204, description = "Deleted"),
        (status = 403, description = "No permission, the caller manages no organization, or the credentials are shared (only superusers delete those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_credentials(
    State(state): State<AppState>,
    auth: Authorized<auth::Credentials, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let current = visible_credentials(&state, &auth.caller, id).await?;
    check_writable(&auth.caller, &current.fields)?;
    state
        .store()
        .run(move |db| db.delete_credentials(CredentialsId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The same handlers at [`ALIAS`].
pub fn alias_router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route(ALIAS, get(list_credentials).post(create_credentials))
        .route(
            &format!("{ALIAS}{{id}}/"),
            get(get_credentials)
                .put(change_credentials)
                .patch(change_credentials)
                .delete(delete_credentials),
        )
}

/// Documents [`ALIAS`] with the operations of [`PATH`] (operation ids suffixed `_alias`).
pub fn document_alias(doc: &mut utoipa::openapi::OpenApi) {
    for suffix in ["", "{id}/"] {
        let Some(mut item) = doc.paths.paths.get(&format!("{PATH}{suffix}")).cloned() else {
            continue;
        };
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(id) = operation.operation_id.as_mut() {
                id.push_str("_alias");
            }
        }
        doc.paths.paths.insert(format!("{ALIAS}{suffix}"), item);
    }
}
