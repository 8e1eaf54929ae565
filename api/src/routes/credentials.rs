//! `/api/v1/connection/credential/` (also served at `/api/v1/controller/credential/`, where
//! OpenWISP really serves it): how the server reaches devices.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{Connector, Credentials, CredentialsFields, CredentialsId, Resource};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{JsonObject, PathId, QueryPairs};
use crate::form::{Field, Form, Mode, does_not_exist};
use crate::pagination::PageQuery as ListQuery;
use crate::pagination::{PageParams, Paginated};
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
            put_credentials,
            patch_credentials,
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

/// What a client sends (PATCH: any subset).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct CredentialsWrite {
    /// `mqtt`, `ssh`, or the dotted connector names.
    connector: String,
    name: String,
    organization: Option<Uuid>,
    auto_add: Option<bool>,
    /// SSH: `{username, password, port?}` or `{username, key, port?}`; MQTT: `{}`.
    #[schema(value_type = Object)]
    params: Value,
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

async fn read_credentials(
    state: &AppState,
    caller: &Caller,
    body: Map<String, Value>,
    mode: Mode,
    current: Option<CredentialsFields>,
) -> Result<CredentialsFields, ApiError> {
    let mut form = Form::new(body, mode);
    let connector = form
        .parsed("connector", true, |s| {
            Connector::parse(s).ok_or_else(|| format!("\"{s}\" is not a valid choice."))
        })
        .set();
    let name = form
        .parsed("name", true, |s| {
            if s.trim().is_empty() {
                Err("This field may not be blank.")
            } else if s.chars().count() > 64 {
                Err("Ensure this field has no more than 64 characters.")
            } else {
                Ok(s.to_owned())
            }
        })
        .set();
    let organization = form.reference("organization", true, caller.is_superuser());
    let auto_add = form.boolean("auto_add").set();
    let params = form.object("params").set();
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
    if let Field::Set(org) = organization {
        match org {
            None => fields.organization = None,
            Some(id) => match caller.managed_org(state, id).await? {
                Some(org) => fields.organization = Some(org),
                None => form.error("organization", does_not_exist(&id.to_string())),
            },
        }
    }
    if let Some(v) = connector {
        fields.connector = v;
    }
    if let Some(v) = name {
        fields.name = v;
    }
    if let Some(v) = auto_add {
        fields.auto_add = v;
    }
    if let Some(v) = params {
        fields.params = v;
    }
    if !form.has_errors()
        && let Err(message) = check_params(fields.connector, &fields.params)
    {
        form.error("params", message);
    }
    form.finish()?;
    Ok(fields)
}

fn visible(caller: &Caller, c: &Credentials) -> bool {
    c.fields.organization.is_none_or(|org| caller.manages(org))
}

async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<Credentials, ApiError> {
    let id = CredentialsId(id);
    state
        .store()
        .run(move |db| db.credentials(id))
        .await?
        .filter(|c| visible(caller, c))
        .ok_or(ApiError::NotFound)
}

/// Shared credentials are read-only to everyone but superusers.
fn check_writable(caller: &Caller, c: &CredentialsFields) -> Result<(), ApiError> {
    caller.require_shared_write(c.organization, crate::error::PERMISSION_DENIED)
}

/// Lists credentials of the caller's organizations and shared ones.
#[utoipa::path(get, path = "/api/v1/connection/credential/", tag = "connections", params(ListQuery),
    responses((status = 200, body = Paginated<CredentialsView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_credentials(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<CredentialsView>>, ApiError> {
    let scope = caller.authorize(Resource::Credentials, &method)?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_credentials(&scope, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

/// Creates credentials.
#[utoipa::path(post, path = "/api/v1/connection/credential/", tag = "connections",
    request_body = CredentialsWrite,
    responses((status = 201, body = CredentialsView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_credentials(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<CredentialsView>), ApiError> {
    caller.authorize(Resource::Credentials, &method)?;
    let fields = read_credentials(&state, &caller, body, Mode::Full, None).await?;
    check_writable(&caller, &fields)?;
    let created = state
        .store()
        .run(move |db| db.create_credentials(fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows credentials.
#[utoipa::path(get, path = "/api/v1/connection/credential/{id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Credentials id")),
    responses((status = 200, body = CredentialsView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_credentials(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<Json<CredentialsView>, ApiError> {
    caller.authorize(Resource::Credentials, &method)?;
    Ok(Json(view(load(&state, &caller, id).await?)))
}

async fn change(
    state: AppState,
    caller: Caller,
    method: Method,
    id: Uuid,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<CredentialsView>, ApiError> {
    caller.authorize(Resource::Credentials, &method)?;
    let current = load(&state, &caller, id).await?;
    check_writable(&caller, &current.fields)?;
    let fields = read_credentials(&state, &caller, body, mode, Some(current.fields)).await?;
    check_writable(&caller, &fields)?;
    let updated = state
        .store()
        .run(move |db| db.update_credentials(CredentialsId(id), fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Replaces credentials.
#[utoipa::path(put, path = "/api/v1/connection/credential/{id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Credentials id")), request_body = CredentialsWrite,
    responses((status = 200, body = CredentialsView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_credentials(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<CredentialsView>, ApiError> {
    change(state, caller, method, id, body, Mode::Full).await
}

/// Changes some fields of credentials.
#[utoipa::path(patch, path = "/api/v1/connection/credential/{id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Credentials id")), request_body = CredentialsWrite,
    responses((status = 200, body = CredentialsView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_credentials(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<CredentialsView>, ApiError> {
    change(state, caller, method, id, body, Mode::Partial).await
}

/// Deletes credentials and the device connections using them.
#[utoipa::path(delete, path = "/api/v1/connection/credential/{id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Credentials id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_credentials(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Resource::Credentials, &method)?;
    let current = load(&state, &caller, id).await?;
    check_writable(&caller, &current.fields)?;
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
                .put(put_credentials)
                .patch(patch_credentials)
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
