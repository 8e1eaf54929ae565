//! `/api/v1/controller/device/{id}/connection/`: how the server reaches one device.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{
    ConfigBackend, ConnectionFields, ConnectionId, Connector, CredentialsId, Device,
    DeviceConnection, Resource,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{JsonObject, QueryPairs};
use crate::form::{Form, Mode, does_not_exist};
use crate::pagination::PageQuery as ListQuery;
use crate::pagination::{PageParams, Paginated};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, ErrorDetail};

/// The device connection routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(
            get_connection,
            put_connection,
            patch_connection,
            delete_connection
        ))
}

/// A device connection as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    /// Identity.
    pub id: Uuid,
    /// The device.
    pub device: Uuid,
    /// Credentials used.
    pub credentials: Uuid,
    /// How configuration updates are pushed.
    pub update_strategy: String,
    /// Disabled connections are not used.
    pub enabled: bool,
    /// Whether it worked when last tried (read-only; `null` until tried).
    pub is_working: Option<bool>,
    /// Why it failed last (read-only).
    pub failure_reason: String,
    /// When it was last tried (read-only).
    pub last_attempt: Option<String>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends (PATCH: any subset).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct ConnectionWrite {
    credentials: Uuid,
    /// Inferred from the credentials and the device's configuration backend when blank.
    update_strategy: Option<String>,
    enabled: Option<bool>,
}

fn view(c: DeviceConnection) -> ConnectionView {
    ConnectionView {
        id: c.id.0,
        device: c.device.0,
        credentials: c.fields.credentials.0,
        update_strategy: c.fields.update_strategy,
        enabled: c.fields.enabled,
        is_working: c.health.is_working,
        failure_reason: c.health.failure_reason,
        last_attempt: c.health.last_attempt.map(|t| t.to_string()),
        created: c.created.to_string(),
        modified: c.modified.to_string(),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

async fn read_connection(
    state: &AppState,
    caller: &Caller,
    device: &Device,
    body: Map<String, Value>,
    mode: Mode,
    current: Option<ConnectionFields>,
) -> Result<ConnectionFields, ApiError> {
    let mut form = Form::new(body, mode);
    let credentials = form.reference("credentials", true, false).set().flatten();
    let strategy = form.text("update_strategy", 128).set();
    let enabled = form.boolean("enabled").set();
    let mut connector = None;
    let mut credentials_id = current.as_ref().map(|c| c.credentials);
    if let Some(id) = credentials {
        let found = state
            .store()
            .run(move |db| db.credentials(CredentialsId(id)))
            .await?;
        // Credentials must belong to the device's organization or be shared.
        match found.filter(|c| {
            c.fields
                .organization
                .is_none_or(|org| org == device.fields.organization && caller.manages(org))
        }) {
            Some(c) => {
                connector = Some(c.fields.connector);
                credentials_id = Some(c.id);
            }
            None => form.error("credentials", does_not_exist(&id.to_string())),
        }
    }
    if connector.is_none()
        && let Some(id) = credentials_id
    {
        connector = state
            .store()
            .run(move |db| db.credentials(id))
            .await?
            .map(|c| c.fields.connector);
    }
    let mut update_strategy =
        strategy.or_else(|| current.as_ref().map(|c| c.update_strategy.clone()));
    if update_strategy.as_deref().is_none_or(str::is_empty) {
        update_strategy = match (connector, device.config.as_ref().map(|c| c.fields.backend)) {
            (Some(Connector::Mqtt), _) => {
                Some(Connector::Mqtt.default_update_strategy().to_owned())
            }
            (Some(Connector::Ssh), Some(ConfigBackend::OpenWrt | ConfigBackend::OpenWisp)) => {
                Some(Connector::Ssh.default_update_strategy().to_owned())
            }
            _ => {
                form.error(
                    "update_strategy",
                    "could not determine update strategy automatically, please select one",
                );
                None
            }
        };
    }
    form.finish()?;
    let (Some(credentials), Some(update_strategy)) = (credentials_id, update_strategy) else {
        return Err(ApiError::field("credentials", "This field is required."));
    };
    Ok(ConnectionFields {
        credentials,
        update_strategy,
        enabled: enabled.or(current.map(|c| c.enabled)).unwrap_or(true),
    })
}

async fn load(state: &AppState, device: &Device, raw: &str) -> Result<DeviceConnection, ApiError> {
    let id = ConnectionId(parse_id(raw)?);
    let device_id = device.id;
    state
        .store()
        .run(move |db| db.connection(id))
        .await?
        .filter(|c| c.device == device_id)
        .ok_or(ApiError::NotFound)
}

/// Lists a device's connections.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/connection/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"), ListQuery),
    responses((status = 200, body = Paginated<ConnectionView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
    Path(device): Path<String>,
) -> Result<Json<Paginated<ConnectionView>>, ApiError> {
    caller.authorize(Resource::DeviceConnection, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_connections(device.id, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

/// Adds a connection to a device.
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/connection/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id")), request_body = ConnectionWrite,
    responses((status = 201, body = ConnectionView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_connection(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(device): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    caller.authorize(Resource::DeviceConnection, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let fields = read_connection(&state, &caller, &device, body, Mode::Full, None).await?;
    let created = state
        .store()
        .run(move |db| db.create_connection(device.id, fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows one connection of a device.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"), ("connection_id" = Uuid, Path, description = "Connection id")),
    responses((status = 200, body = ConnectionView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_connection(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path((device, connection)): Path<(String, String)>,
) -> Result<Json<ConnectionView>, ApiError> {
    caller.authorize(Resource::DeviceConnection, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    Ok(Json(view(load(&state, &device, &connection).await?)))
}

async fn change(
    state: AppState,
    caller: Caller,
    method: Method,
    (device, connection): (String, String),
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<ConnectionView>, ApiError> {
    caller.authorize(Resource::DeviceConnection, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let current = load(&state, &device, &connection).await?;
    let fields =
        read_connection(&state, &caller, &device, body, mode, Some(current.fields)).await?;
    let updated = state
        .store()
        .run(move |db| db.update_connection(current.id, fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Replaces a connection's fields.
#[utoipa::path(put, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"), ("connection_id" = Uuid, Path, description = "Connection id")),
    request_body = ConnectionWrite,
    responses((status = 200, body = ConnectionView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_connection(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(ids): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Json<ConnectionView>, ApiError> {
    change(state, caller, method, ids, body, Mode::Full).await
}

/// Changes some of a connection's fields.
#[utoipa::path(patch, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"), ("connection_id" = Uuid, Path, description = "Connection id")),
    request_body = ConnectionWrite,
    responses((status = 200, body = ConnectionView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_connection(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(ids): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Json<ConnectionView>, ApiError> {
    change(state, caller, method, ids, body, Mode::Partial).await
}

/// Removes a connection from a device.
#[utoipa::path(delete, path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"), ("connection_id" = Uuid, Path, description = "Connection id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_connection(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path((device, connection)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Resource::DeviceConnection, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let current = load(&state, &device, &connection).await?;
    state
        .store()
        .run(move |db| db.delete_connection(current.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
