//! `/api/v1/controller/device/{id}/command/`: commands sent to a device over MQTT.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleetmq_store::{
    Backend, Command, CommandId, CommandType, ConnectionId, Connector, DeviceId, NewCommand,
    PageRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Commands, View};
use crate::body::{Body, REQUIRED, text_field};
use crate::docs::FieldErrors;
use crate::extract::PathId;
use crate::pagination::{PageQuery, Paginated, Paging};
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

/// What a client sends to have a command run on a device.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CommandWrite {
    /// `custom`, `reboot` or `change_password`.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false)]
    kind: Option<CommandTypeField>,
    /// custom: `{"command": "..."}`; reboot: `null` (anything given is dropped);
    /// change_password: `{"password": "...", "confirm_password": "..."}` (6–30 characters).
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
}

text_field!(
    /// A command type: `custom`, `reboot` or `change_password`.
    CommandTypeField(CommandType),
    |s: &str| CommandType::parse(s).ok_or_else(|| format!("\"{s}\" is not a valid choice.")),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(CommandType::ALL.map(CommandType::name))),
);

impl CommandWrite {
    /// The command's type and its input as stored and sent; the input's problems are
    /// reported under `input`, field by field.
    fn apply(self) -> Result<(CommandType, Value), ApiError> {
        let kind = self
            .kind
            .map(|k| k.0)
            .ok_or_else(|| ApiError::field("type", REQUIRED))?;
        let input = self.input.unwrap_or(Value::Null);
        let text = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or("");
        let mut errors: Vec<(&str, &str)> = Vec::new();
        let input = match kind {
            CommandType::Custom => {
                let command = text("command").trim();
                if command.is_empty() {
                    errors.push(("command", "This field is required and may not be blank."));
                }
                json!({ "command": command })
            }
            CommandType::Reboot => Value::Null,
            CommandType::ChangePassword => {
                let (password, confirm) = (text("password"), text("confirm_password"));
                for (field, value) in [("password", password), ("confirm_password", confirm)] {
                    let len = value.chars().count();
                    if len < 6 {
                        errors.push((field, "Ensure this field has at least 6 characters."));
                    } else if len > 30 {
                        errors.push((field, "Ensure this field has no more than 30 characters."));
                    }
                }
                if errors.is_empty() && password != confirm {
                    errors.push(("confirm_password", "Passwords do not match."));
                }
                json!({ "password": password, "confirm_password": confirm })
            }
        };
        if !errors.is_empty() {
            let nested: Map<String, Value> = errors
                .into_iter()
                .map(|(field, message)| (field.to_owned(), json!([message])))
                .collect();
            return Err(ApiError::Validation(Map::from_iter([(
                "input".to_owned(),
                Value::Object(nested),
            )])));
        }
        Ok((kind, input))
    }
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

/// The connection a command to `device` goes through: an enabled one, the MQTT one first.
fn preferred_connection(
    db: &dyn Backend,
    device: DeviceId,
) -> fleetmq_store::Result<Option<ConnectionId>> {
    let connections = db.list_connections(
        device,
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
        if mqtt {
            return Ok(Some(c.id));
        }
        best = best.or(Some(c.id));
    }
    Ok(best)
}

/// Lists a device's commands (also for deactivated devices).
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/command/", tag = "commands",
    params(PathId, PageQuery), responses((status = 200, body = Paginated<CommandView>)),
    security(("bearer" = [])))]
async fn list_commands(
    State(state): State<AppState>,
    auth: Authorized<Commands, View>,
    PathId(id): PathId,
    paging: Paging,
) -> Result<Json<Paginated<CommandView>>, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_commands(device.id, request))
        .await?;
    paging.envelope(page, view)
}

/// Sends a command: stored in progress, published to the device over MQTT (now, or when it
/// reconnects), then success or failed with the device's output — or failed with "timed out".
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/command/", tag = "commands",
    params(PathId), request_body = CommandWrite,
    responses((status = 201, body = CommandView),
        (status = 400, description = "Field errors, or `{\"device\": [\"Device has no credentials assigned.\"]}` when the device has no enabled connection", body = FieldErrors),
        (status = 403, description = "No permission, the caller manages no organization, or the device is deactivated", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_command(
    State(state): State<AppState>,
    auth: Authorized<Commands, Add>,
    PathId(id): PathId,
    body: Body<CommandWrite>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    if device.is_deactivated {
        return Err(ApiError::permission_denied());
    }
    let (kind, input) = body.read()?.apply()?;
    let device = device.id;
    let command = state
        .store()
        .run(move |db| {
            let Some(connection) = preferred_connection(db, device)? else {
                return Ok(None);
            };
            db.create_command(NewCommand {
                device,
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
    params(PathId, ("command_id" = Uuid, Path, description = "Command id")),
    responses((status = 200, body = CommandView)), security(("bearer" = [])))]
async fn get_command(
    State(state): State<AppState>,
    auth: Authorized<Commands, View>,
    ids: Result<Path<(Uuid, Uuid)>, PathRejection>,
) -> Result<Json<CommandView>, ApiError> {
    let Path((device, command)) = ids.map_err(|_| ApiError::NotFound)?;
    let device = visible_device(&state, &auth.caller, device).await?;
    let command = state
        .store()
        .run(move |db| db.command(CommandId(command)))
        .await?
        .filter(|c| c.device == device.id)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(view(command)))
}
