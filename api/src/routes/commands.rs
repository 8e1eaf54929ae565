//! `/api/v1/controller/device/{id}/command/`: commands sent to a device over MQTT.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{
    Command, CommandId, CommandType, Connector, NewCommand, PageRequest, Resource,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{JsonObject, QueryPairs};
use crate::form::{Form, Mode};
use crate::pagination::PageQuery as ListQuery;
use crate::pagination::{PageParams, Paginated};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState, ErrorDetail};

/// The command routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_commands, create_command))
        .routes(routes!(get_command))
}

/// A command as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandView {
    /// Identity; also the correlation id on MQTT.
    pub id: Uuid,
    /// `in-progress`, `success` or `failed` (read-only).
    pub status: &'static str,
    /// `custom`, `reboot` or `change_password`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Parameters (`null` for reboot).
    #[schema(value_type = Object)]
    pub input: Value,
    /// What the device answered (read-only).
    pub output: String,
    /// The device (read-only).
    pub device: Uuid,
    /// The connection it went through.
    pub connection: Option<Uuid>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

/// What a client sends.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct CommandWrite {
    /// `custom`, `reboot` or `change_password`.
    #[schema(rename = "type")]
    kind: String,
    /// custom: `{"command": "..."}`; reboot: `null`; change_password:
    /// `{"password": "...", "confirm_password": "..."}` (6–30 characters).
    #[schema(value_type = Object)]
    input: Value,
}

fn view(c: Command) -> CommandView {
    CommandView {
        id: c.id.0,
        status: c.status.name(),
        kind: c.kind.name(),
        input: c.input,
        output: c.output,
        device: c.device.0,
        connection: c.connection.map(|c| c.0),
        created: c.created.to_string(),
        modified: c.modified.to_string(),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// Checks a command body; returns its type and normalized input.
fn read_command(body: Map<String, Value>) -> Result<(CommandType, Value), ApiError> {
    let mut form = Form::new(body, Mode::Full);
    let kind = form
        .parsed("type", true, |s| {
            CommandType::parse(s).ok_or_else(|| format!("\"{s}\" is not a valid choice."))
        })
        .set();
    let input = match form.raw("input", false) {
        crate::form::Field::Set(v) => v,
        _ => Value::Null,
    };
    let mut nested = Form::new(Map::new(), Mode::Partial);
    let input = match kind {
        Some(CommandType::Custom) => {
            let command = input
                .get("command")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or("");
            if command.is_empty() {
                nested.error("command", "This field is required and may not be blank.");
            }
            json!({ "command": command })
        }
        Some(CommandType::Reboot) => Value::Null,
        Some(CommandType::ChangePassword) => {
            let get = |k: &str| {
                input
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let (password, confirm) = (get("password"), get("confirm_password"));
            for (field, value) in [("password", &password), ("confirm_password", &confirm)] {
                let len = value.chars().count();
                if len < 6 {
                    nested.error(field, "Ensure this field has at least 6 characters.");
                } else if len > 30 {
                    nested.error(field, "Ensure this field has no more than 30 characters.");
                }
            }
            if !nested.has_errors() && password != confirm {
                nested.error("confirm_password", "Passwords do not match.");
            }
            json!({ "password": password, "confirm_password": confirm })
        }
        None => Value::Null,
    };
    form.nested_errors("input", nested.into_errors());
    form.finish()?;
    let kind = kind.ok_or_else(|| ApiError::field("type", "This field is required."))?;
    Ok((kind, input))
}

/// Lists a device's commands (also for deactivated devices).
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/command/", tag = "commands",
    params(("id" = Uuid, Path, description = "Device id"), ListQuery),
    responses((status = 200, body = Paginated<CommandView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_commands(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
    Path(device): Path<String>,
) -> Result<Json<Paginated<CommandView>>, ApiError> {
    caller.authorize(Resource::Command, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_commands(device.id, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

/// Sends a command: stored in progress, published to the device over MQTT (now, or when it
/// reconnects), then success or failed with the device's output — or failed with "timed out".
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/command/", tag = "commands",
    params(("id" = Uuid, Path, description = "Device id")), request_body = CommandWrite,
    responses((status = 201, body = CommandView),
        (status = 400, description = "Field errors, or {\"device\": [\"Device has no credentials assigned.\"]}"),
        (status = 401, body = ErrorDetail), (status = 403, description = "No permission, or the device is deactivated", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_command(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path(device): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    caller.authorize(Resource::Command, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    if device.is_deactivated {
        return Err(ApiError::permission_denied());
    }
    let (kind, input) = read_command(body)?;
    let device_id = device.id;
    let command = state
        .store()
        .run(move |db| {
            // The device's enabled connection, the MQTT one first.
            let connections = db.list_connections(
                device_id,
                PageRequest {
                    offset: 0,
                    limit: 100,
                },
            )?;
            let mut best = None;
            for c in connections.items.into_iter().filter(|c| c.fields.enabled) {
                let mqtt = db
                    .credentials(c.fields.credentials)?
                    .is_some_and(|cr| cr.fields.connector == Connector::Mqtt);
                if mqtt || best.is_none() {
                    best = Some(c.id);
                }
                if mqtt {
                    break;
                }
            }
            let Some(connection) = best else {
                return Ok(None);
            };
            db.create_command(NewCommand {
                device: device_id,
                connection: Some(connection),
                kind,
                input,
            })
            .map(Some)
        })
        .await?
        .ok_or_else(|| ApiError::field("device", "Device has no credentials assigned."))?;
    state.hooks().command_created(command.clone());
    Ok((StatusCode::CREATED, Json(view(command))))
}

/// Shows one command.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/command/{command_id}/", tag = "commands",
    params(("id" = Uuid, Path, description = "Device id"), ("command_id" = Uuid, Path, description = "Command id")),
    responses((status = 200, body = CommandView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_command(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    Path((device, command)): Path<(String, String)>,
) -> Result<Json<CommandView>, ApiError> {
    caller.authorize(Resource::Command, &method)?;
    let device = visible_device(&state, &caller, parse_id(&device)?).await?;
    let id = CommandId(parse_id(&command)?);
    let command = state
        .store()
        .run(move |db| db.command(id))
        .await?
        .filter(|c| c.device == device.id)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(command)))
}
