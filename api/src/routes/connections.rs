//! `/api/v1/controller/device/{id}/connection/`: how the server reaches one device.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use fleetmq_store::{
    ConfigBackend, ConnectionFields, ConnectionId, Connector, CredentialsId, Device,
    DeviceConnection,
};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Caller, Change, Delete, DeviceConnections, View};
use crate::body::{Body, Bounded, Pk, REQUIRED, does_not_exist};
use crate::extract::PathId;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState};

/// The device connection routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(
            get_connection,
            change_connection,
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

/// What a client sends to create, replace or change a device connection.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConnectionWrite {
    /// Credentials of the device's organization, or shared ones.
    #[schema(required = true, nullable = false)]
    credentials: Option<Pk>,
    /// Inferred from the credentials and the device's configuration backend when blank.
    #[schema(nullable = false)]
    update_strategy: Option<Bounded<128>>,
    /// Disabled connections are not used.
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

impl ConnectionWrite {
    /// The connection's fields after this write, over `current` or new ones. The credentials
    /// must be the device's organization's (and managed by the caller) or shared; a blank
    /// update strategy is inferred from the connector and the device's configuration backend.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        device: &Device,
        current: Option<ConnectionFields>,
    ) -> Result<ConnectionFields, ApiError> {
        let mut errors = Map::new();
        let mut connector = None;
        let mut credentials = current.as_ref().map(|c| c.credentials);
        if let Some(Pk(id)) = self.credentials {
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
                    credentials = Some(c.id);
                }
                None => {
                    errors.insert(
                        "credentials".to_owned(),
                        serde_json::json!([does_not_exist(&id.to_string())]),
                    );
                }
            }
        }
        if connector.is_none()
            && let Some(id) = credentials
        {
            connector = state
                .store()
                .run(move |db| db.credentials(id))
                .await?
                .map(|c| c.fields.connector);
        }
        let mut update_strategy = self
            .update_strategy
            .map(|s| s.0)
            .or_else(|| current.as_ref().map(|c| c.update_strategy.clone()));
        if update_strategy.as_deref().is_none_or(str::is_empty) {
            let backend = device.config.as_ref().map(|c| c.fields.backend);
            update_strategy = match (connector, backend) {
                (Some(Connector::Mqtt), _) => {
                    Some(Connector::Mqtt.default_update_strategy().to_owned())
                }
                (Some(Connector::Ssh), Some(ConfigBackend::OpenWrt | ConfigBackend::OpenWisp)) => {
                    Some(Connector::Ssh.default_update_strategy().to_owned())
                }
                _ => {
                    errors.insert(
                        "update_strategy".to_owned(),
                        serde_json::json!([
                            "could not determine update strategy automatically, please select one"
                        ]),
                    );
                    None
                }
            };
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        let (Some(credentials), Some(update_strategy)) = (credentials, update_strategy) else {
            return Err(ApiError::field("credentials", REQUIRED));
        };
        Ok(ConnectionFields {
            credentials,
            update_strategy,
            enabled: self.enabled.or(current.map(|c| c.enabled)).unwrap_or(true),
        })
    }
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

/// The `{id}` (a device) and `{connection_id}` of a connection's route; ids that are not
/// UUIDs are simply not found.
struct ConnectionPath {
    device: Uuid,
    connection: ConnectionId,
}

impl<S: Send + Sync> FromRequestParts<S> for ConnectionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((device, connection)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        match (Uuid::parse_str(&device), Uuid::parse_str(&connection)) {
            (Ok(device), Ok(connection)) => Ok(ConnectionPath {
                device,
                connection: ConnectionId(connection),
            }),
            _ => Err(ApiError::NotFound),
        }
    }
}

/// The connection the path names, if its device is visible to the caller and it is that
/// device's; with the device.
async fn visible_connection(
    state: &AppState,
    caller: &Caller,
    path: ConnectionPath,
) -> Result<(Device, DeviceConnection), ApiError> {
    let device = visible_device(state, caller, path.device).await?;
    let device_id = device.id;
    let connection = state
        .store()
        .run(move |db| db.connection(path.connection))
        .await?
        .filter(|c| c.device == device_id)
        .ok_or(ApiError::NotFound)?;
    Ok((device, connection))
}

/// Lists a device's connections.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/connection/", tag = "connections",
    params(PathId, PageQuery), responses((status = 200, body = Paginated<ConnectionView>)),
    security(("bearer" = [])))]
async fn list_connections(
    State(state): State<AppState>,
    auth: Authorized<DeviceConnections, View>,
    PathId(device): PathId,
    paging: Paging,
) -> Result<Json<Paginated<ConnectionView>>, ApiError> {
    let device = visible_device(&state, &auth.caller, device).await?;
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_connections(device.id, request))
        .await?;
    paging.envelope(page, view)
}

/// Adds a connection to a device.
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/connection/", tag = "connections",
    params(PathId), request_body = ConnectionWrite,
    responses((status = 201, body = ConnectionView)), security(("bearer" = [])))]
async fn create_connection(
    State(state): State<AppState>,
    auth: Authorized<DeviceConnections, Add>,
    PathId(device): PathId,
    body: Body<ConnectionWrite>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let device = visible_device(&state, &auth.caller, device).await?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, &device, None)
        .await?;
    let created = state
        .store()
        .run(move |db| db.create_connection(device.id, fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows one connection of a device.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/connection/{connection_id}/",
    tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"),
        ("connection_id" = Uuid, Path, description = "Connection id")),
    responses((status = 200, body = ConnectionView)), security(("bearer" = [])))]
async fn get_connection(
    State(state): State<AppState>,
    auth: Authorized<DeviceConnections, View>,
    path: ConnectionPath,
) -> Result<Json<ConnectionView>, ApiError> {
    let (_, connection) = visible_connection(&state, &auth.caller, path).await?;
    Ok(Json(view(connection)))
}

/// Replaces a connection's fields, or with PATCH changes some of them.
#[utoipa::path(method(put, patch),
    path = "/api/v1/controller/device/{id}/connection/{connection_id}/", tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"),
        ("connection_id" = Uuid, Path, description = "Connection id")),
    request_body = ConnectionWrite, responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
async fn change_connection(
    State(state): State<AppState>,
    auth: Authorized<DeviceConnections, Change>,
    path: ConnectionPath,
    body: Body<ConnectionWrite>,
) -> Result<Json<ConnectionView>, ApiError> {
    let (device, current) = visible_connection(&state, &auth.caller, path).await?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, &device, Some(current.fields))
        .await?;
    let updated = state
        .store()
        .run(move |db| db.update_connection(current.id, fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Removes a connection from a device.
#[utoipa::path(delete, path = "/api/v1/controller/device/{id}/connection/{connection_id}/",
    tag = "connections",
    params(("id" = Uuid, Path, description = "Device id"),
        ("connection_id" = Uuid, Path, description = "Connection id")),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_connection(
    State(state): State<AppState>,
    auth: Authorized<DeviceConnections, Delete>,
    path: ConnectionPath,
) -> Result<StatusCode, ApiError> {
    let (_, current) = visible_connection(&state, &auth.caller, path).await?;
    state
        .store()
        .run(move |db| db.delete_connection(current.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
