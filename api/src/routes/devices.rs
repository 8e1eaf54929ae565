//! `/api/v1/controller/device/`: OpenWISP's device endpoints.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fleetmq_store::{
    ConfigBackend, ConfigFields, ConfigStatus, Device, DeviceFields, DeviceFilter, DeviceId,
    DeviceKey, DeviceName, MacAddress, OrgId, Resource, Scope, Timestamp,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{JsonObject, PathId, QueryPairs};
use crate::form::{Field, Form, Mode, does_not_exist};
use crate::pagination::{PageParams, Paginated};
use crate::{ApiError, AppState, ErrorDetail};

/// The device routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, put_device, patch_device, delete_device))
        .routes(routes!(deactivate_device))
        .routes(routes!(activate_device))
}

/// A device's configuration as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    /// `modified`, `applied`, `error`, `deactivating` or `deactivated` (read-only).
    pub status: &'static str,
    /// Why the device failed to apply it (read-only).
    pub error_reason: String,
    /// `netjsonconfig.OpenWrt` or `netjsonconfig.OpenWisp`.
    pub backend: &'static str,
    /// Ordered template ids.
    pub templates: Vec<Uuid>,
    /// Template variables.
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    /// NetJSON configuration.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

/// A device as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    /// Identity; also the device's MQTT client id and username.
    pub id: Uuid,
    /// Hostname or MAC address.
    pub name: String,
    /// Owning organization.
    pub organization: Uuid,
    /// Device group.
    pub group: Option<Uuid>,
    /// Primary MAC address.
    pub mac_address: String,
    /// Device key: its MQTT password.
    pub key: String,
    /// Last address it connected from.
    pub last_ip: Option<String>,
    /// Address the server reaches it on.
    pub management_ip: Option<String>,
    /// Hardware model.
    pub model: String,
    /// Operating system.
    pub os: String,
    /// System on chip.
    pub system: String,
    /// Free text.
    pub notes: String,
    /// Serial number or similar.
    pub hardware_id: String,
    /// Configuration, if any.
    pub config: Option<ConfigView>,
    /// Registration time.
    pub created: String,
    /// Last change.
    pub modified: String,
    /// Detail only: whether the device is deactivated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_deactivated: Option<bool>,
}

/// What a client sends to create or change a device (PATCH: any subset).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; bodies are read field by field by `Form`
pub struct DeviceWrite {
    /// Required on create and PUT.
    name: String,
    /// Required on create and PUT.
    organization: Uuid,
    group: Option<Uuid>,
    /// Required on create and PUT.
    mac_address: String,
    /// Generated (32 hex characters) when absent.
    key: Option<String>,
    last_ip: Option<String>,
    management_ip: Option<String>,
    model: Option<String>,
    os: Option<String>,
    system: Option<String>,
    notes: Option<String>,
    hardware_id: Option<String>,
    /// `{backend, templates, context, config}`; merged into the current configuration.
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

/// Filters of the device list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)] // documents the query (Django's names); read from `QueryPairs`
pub struct DeviceListQuery {
    /// 1-based page number.
    page: Option<u64>,
    /// Items per page (default 10, at most 100).
    page_size: Option<u64>,
    /// Configuration status.
    config__status: Option<String>,
    /// Configuration backend.
    config__backend: Option<String>,
    /// Organization id.
    organization: Option<Uuid>,
    /// Organization slug.
    organization_slug: Option<String>,
    /// Template id.
    config__templates: Option<Uuid>,
    /// Device group id.
    group: Option<Uuid>,
    /// Has a location (`true`/`false`).
    with_geo: Option<bool>,
    /// Created at exactly this time.
    created: Option<String>,
    /// Created at or after.
    created__gte: Option<String>,
    /// Created before.
    created__lt: Option<String>,
}

pub(crate) fn view(device: Device, detail: bool) -> DeviceView {
    let f = device.fields;
    DeviceView {
        id: device.id.0,
        name: f.name.as_str().to_owned(),
        organization: f.organization.0,
        group: f.group,
        mac_address: f.mac_address.as_str().to_owned(),
        key: f.key.as_str().to_owned(),
        last_ip: f.last_ip.map(|ip| ip.to_string()),
        management_ip: f.management_ip.map(|ip| ip.to_string()),
        model: f.model,
        os: f.os,
        system: f.system,
        notes: f.notes,
        hardware_id: f.hardware_id,
        config: device.config.map(|c| ConfigView {
            status: c.status.name(),
            error_reason: c.error_reason,
            backend: c.fields.backend.name(),
            templates: c.fields.templates,
            context: c.fields.context,
            config: c.fields.config,
        }),
        created: device.created.to_string(),
        modified: device.modified.to_string(),
        is_deactivated: detail.then_some(device.is_deactivated),
    }
}

/// Lists devices of the caller's organizations, newest first.
#[utoipa::path(get, path = "/api/v1/controller/device/", tag = "devices",
    params(DeviceListQuery),
    responses(
        (status = 200, body = Paginated<DeviceView>),
        (status = 400, description = "Invalid filter value"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail),
        (status = 404, description = "Page past the end", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<DeviceView>>, ApiError> {
    let scope = caller.authorize(Resource::Device, &method)?;
    let params = PageParams::from_query(&query)?;
    let Some((scope, filter)) = read_filters(&state, &caller, scope, &query).await? else {
        let empty = fleetmq_store::Page {
            count: 0,
            items: Vec::new(),
        };
        return Ok(Json(params.envelope(
            empty,
            &uri,
            &headers,
            &query,
            |d| view(d, false),
        )?));
    };
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_devices(&scope, &filter, request))
        .await?;
    Ok(Json(params.envelope(
        page,
        &uri,
        &headers,
        &query,
        |d| view(d, false),
    )?))
}

/// Reads the seed's filters; `None` means "nothing can match" (an unknown slug).
async fn read_filters(
    state: &AppState,
    caller: &Caller,
    scope: Scope,
    query: &QueryPairs,
) -> Result<Option<(Scope, DeviceFilter)>, ApiError> {
    let mut errors = Form::new(Map::new(), Mode::Partial);
    let mut filter = DeviceFilter::default();
    let invalid_choice =
        |v: &str| format!("Select a valid choice. {v} is not one of the available choices.");
    if let Some(v) = query.get("config__status").filter(|v| !v.is_empty()) {
        match ConfigStatus::parse(v) {
            Some(s) => filter.config_status = Some(s),
            None => errors.error("config__status", invalid_choice(v)),
        }
    }
    if let Some(v) = query.get("config__backend").filter(|v| !v.is_empty()) {
        match ConfigBackend::parse(v) {
            Some(b) => filter.config_backend = Some(b),
            None => errors.error("config__backend", invalid_choice(v)),
        }
    }
    for (name, slot) in [
        ("config__templates", &mut filter.template),
        ("group", &mut filter.group),
    ] {
        if let Some(v) = query.get(name).filter(|v| !v.is_empty()) {
            match Uuid::parse_str(v) {
                Ok(id) => *slot = Some(id),
                Err(_) => errors.error(name, format!("“{v}” is not a valid UUID.")),
            }
        }
    }
    if let Some(v) = query.get("with_geo").filter(|v| !v.is_empty()) {
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" => filter.with_geo = Some(true),
            "false" | "0" => filter.with_geo = Some(false),
            _ => errors.error("with_geo", invalid_choice(v)),
        }
    }
    for (name, slot) in [
        ("created", &mut filter.created),
        ("created__gte", &mut filter.created_gte),
        ("created__lt", &mut filter.created_lt),
    ] {
        if let Some(v) = query.get(name).filter(|v| !v.is_empty()) {
            match Timestamp::parse_lenient(v) {
                Some(t) => *slot = Some(t),
                None => errors.error(name, "Enter a valid date/time."),
            }
        }
    }
    let mut scope = scope;
    if let Some(v) = query.get("organization").filter(|v| !v.is_empty()) {
        match Uuid::parse_str(v)
            .ok()
            .map(OrgId)
            .filter(|org| scope.contains(*org))
        {
            Some(org) => scope = Scope::Orgs(vec![org]),
            None => errors.error(
                "organization",
                "Select a valid choice. That choice is not one of the available choices.",
            ),
        }
    }
    errors.finish()?;
    if let Some(slug) = query.get("organization_slug").filter(|v| !v.is_empty()) {
        let slug = slug.to_owned();
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| scope.contains(o.id) && caller.manages(o.id)) {
            Some(org) => scope = Scope::Orgs(vec![org.id]),
            None => return Ok(None),
        }
    }
    Ok(Some((scope, filter)))
}

/// Registers a device.
#[utoipa::path(post, path = "/api/v1/controller/device/", tag = "devices",
    request_body = DeviceWrite,
    responses(
        (status = 201, body = DeviceView),
        (status = 400, description = "Field errors: {\"field\": [\"message\"]}"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail),
        (status = 413, body = ErrorDetail), (status = 415, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_device(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    caller.authorize(Resource::Device, &method)?;
    let input = read_device(&state, &caller, body, Mode::Full).await?;
    let (Some(name), Some(organization), Some(mac_address)) =
        (input.name, input.organization, input.mac_address)
    else {
        return Err(ApiError::field("name", "This field is required."));
    };
    let fields = DeviceFields {
        name,
        organization,
        group: input.group.flatten(),
        mac_address,
        key: input.key.unwrap_or_else(DeviceKey::generate),
        last_ip: input.last_ip.flatten(),
        management_ip: input.management_ip.flatten(),
        model: input.model.unwrap_or_default(),
        os: input.os.unwrap_or_default(),
        system: input.system.unwrap_or_default(),
        notes: input.notes.unwrap_or_default(),
        hardware_id: input.hardware_id.unwrap_or_default(),
    };
    let config = input.config.map(|patch| patch.apply(None));
    let device = state
        .store()
        .run(move |db| db.create_device(fields, config))
        .await?;
    Ok((StatusCode::CREATED, Json(view(device, true))))
}

/// The fields present and valid in a device body.
#[derive(Default)]
struct DeviceInput {
    name: Option<DeviceName>,
    organization: Option<OrgId>,
    group: Option<Option<Uuid>>,
    mac_address: Option<MacAddress>,
    key: Option<DeviceKey>,
    last_ip: Option<Option<IpAddr>>,
    management_ip: Option<Option<IpAddr>>,
    model: Option<String>,
    os: Option<String>,
    system: Option<String>,
    notes: Option<String>,
    hardware_id: Option<String>,
    config: Option<ConfigPatch>,
}

/// The `config` object of a body, merged over the current configuration.
#[derive(Default)]
struct ConfigPatch {
    backend: Option<ConfigBackend>,
    templates: Option<Vec<Uuid>>,
    context: Option<Map<String, Value>>,
    config: Option<Map<String, Value>>,
}

impl ConfigPatch {
    fn apply(self, current: Option<ConfigFields>) -> ConfigFields {
        let base = current.unwrap_or(ConfigFields {
            backend: ConfigBackend::OpenWrt,
            templates: Vec::new(),
            context: Map::new(),
            config: Map::new(),
        });
        ConfigFields {
            backend: self.backend.unwrap_or(base.backend),
            templates: self.templates.unwrap_or(base.templates),
            context: self.context.unwrap_or(base.context),
            config: self.config.unwrap_or(base.config),
        }
    }
}

fn ip(s: &str) -> Result<Option<IpAddr>, &'static str> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| "Enter a valid IPv4 or IPv6 address.")
}

/// Reads and checks a device body: field rules, then relations the caller must be able to see.
async fn read_device(
    state: &AppState,
    caller: &Caller,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<DeviceInput, ApiError> {
    let mut form = Form::new(body, mode);
    let mut input = DeviceInput {
        name: form.parsed("name", true, DeviceName::parse).set(),
        mac_address: form.parsed("mac_address", true, MacAddress::parse).set(),
        key: form.parsed("key", false, DeviceKey::parse).set(),
        model: form.text("model", 128).set(),
        os: form.text("os", 128).set(),
        system: form.text("system", 128).set(),
        notes: form.text("notes", usize::MAX).set(),
        hardware_id: form.text("hardware_id", 32).set(),
        ..DeviceInput::default()
    };
    for (name, slot) in [
        ("last_ip", &mut input.last_ip),
        ("management_ip", &mut input.management_ip),
    ] {
        if let Field::Set(v) = form.raw(name, false) {
            match v {
                Value::Null => *slot = Some(None),
                Value::String(s) => match ip(&s) {
                    Ok(addr) => *slot = Some(addr),
                    Err(m) => form.error(name, m),
                },
                _ => form.error(name, "Enter a valid IPv4 or IPv6 address."),
            }
        }
    }
    let organization = form.reference("organization", true, false).set().flatten();
    if let Some(group) = form.reference("group", false, true).set() {
        // Device groups arrive with configuration management; until then none exists.
        match group {
            Some(id) => form.error("group", does_not_exist(&id.to_string())),
            None => input.group = Some(None),
        }
    }
    if let Field::Set(config) = form.raw("config", false) {
        match config {
            Value::Null => {}
            Value::Object(map) => {
                let mut nested = Form::new(map, Mode::Partial);
                let mut patch = ConfigPatch {
                    backend: nested
                        .parsed("backend", false, |s| {
                            ConfigBackend::parse(s)
                                .ok_or_else(|| format!("\"{s}\" is not a valid choice."))
                        })
                        .set(),
                    context: nested.object("context").set(),
                    config: nested.object("config").set(),
                    templates: None,
                };
                if let Field::Set(templates) = nested.raw("templates", false) {
                    patch.templates = read_templates(&mut nested, templates);
                }
                form.nested_errors("config", nested.into_errors());
                input.config = Some(patch);
            }
            other => form.error(
                "config",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    crate::extract::kind(&other)
                ),
            ),
        }
    }
    if let Some(id) = organization {
        match caller.managed_org(state, id).await? {
            Some(org) => input.organization = Some(org),
            None => form.error("organization", does_not_exist(&id.to_string())),
        }
    }
    form.finish()?;
    Ok(input)
}

fn read_templates(form: &mut Form, value: Value) -> Option<Vec<Uuid>> {
    let Value::Array(items) = value else {
        form.error(
            "templates",
            "Expected a list of items but got type \"dict\".",
        );
        return None;
    };
    for item in items {
        // Templates arrive with configuration management; until then none exists.
        let shown = item
            .as_str()
            .map_or_else(|| item.to_string(), str::to_owned);
        form.error("templates", does_not_exist(&shown));
    }
    Some(Vec::new())
}

impl Form {
    /// The collected errors (for nesting under a parent field).
    pub fn into_errors(self) -> Map<String, Value> {
        match self.finish() {
            Err(ApiError::Validation(map)) => map,
            _ => Map::new(),
        }
    }
}

/// Loads a device the caller may see; any other device is simply not found.
pub(crate) async fn visible_device(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Device, ApiError> {
    let device = state
        .store()
        .run(move |db| db.device(DeviceId(id)))
        .await?
        .filter(|d| caller.manages(d.fields.organization))
        .ok_or(ApiError::NotFound)?;
    Ok(device)
}

/// Shows one device.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_device(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
) -> Result<Json<DeviceView>, ApiError> {
    caller.authorize(Resource::Device, &method)?;
    Ok(Json(view(visible_device(&state, &caller, id).await?, true)))
}

async fn change_device(
    state: AppState,
    caller: Caller,
    method: Method,
    id: Uuid,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<DeviceView>, ApiError> {
    caller.authorize(Resource::Device, &method)?;
    let device = visible_device(&state, &caller, id).await?;
    if device.is_deactivated {
        return Err(ApiError::permission_denied());
    }
    let input = read_device(&state, &caller, body, mode).await?;
    let mut fields = device.fields.clone();
    if let Some(v) = input.name {
        fields.name = v;
    }
    if let Some(v) = input.organization {
        fields.organization = v;
    }
    if let Some(v) = input.group {
        fields.group = v;
    }
    if let Some(v) = input.mac_address {
        fields.mac_address = v;
    }
    if let Some(v) = input.key {
        fields.key = v;
    }
    if let Some(v) = input.last_ip {
        fields.last_ip = v;
    }
    if let Some(v) = input.management_ip {
        fields.management_ip = v;
    }
    for (slot, value) in [
        (&mut fields.model, input.model),
        (&mut fields.os, input.os),
        (&mut fields.system, input.system),
        (&mut fields.notes, input.notes),
        (&mut fields.hardware_id, input.hardware_id),
    ] {
        if let Some(v) = value {
            *slot = v;
        }
    }
    let config = input
        .config
        .map(|patch| patch.apply(device.config.map(|c| c.fields)));
    let device = state
        .store()
        .run(move |db| db.update_device(DeviceId(id), fields, config))
        .await?;
    Ok(Json(view(device, true)))
}

/// Replaces a device's fields (required fields must be present).
#[utoipa::path(put, path = "/api/v1/controller/device/{id}/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id")), request_body = DeviceWrite,
    responses((status = 200, body = DeviceView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, description = "No permission, or the device is deactivated", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_device(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<DeviceView>, ApiError> {
    change_device(state, caller, method, id, body, Mode::Full).await
}

/// Changes some of a device's fields.
#[utoipa::path(patch, path = "/api/v1/controller/device/{id}/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id")), request_body = DeviceWrite,
    responses((status = 200, body = DeviceView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, description = "No permission, or the device is deactivated", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_device(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<DeviceView>, ApiError> {
    change_device(state, caller, method, id, body, Mode::Partial).await
}

/// Deletes a deactivated device (`?force=true` skips the deactivation rule).
#[utoipa::path(delete, path = "/api/v1/controller/device/{id}/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id"),
        ("force" = Option<bool>, Query, description = "Delete even if still active")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, description = "No permission, or the device is still active", body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    PathId(id): PathId,
    query: QueryPairs,
) -> Result<StatusCode, ApiError> {
    caller.authorize(Resource::Device, &method)?;
    let device = visible_device(&state, &caller, id).await?;
    let force = query
        .get("force")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if !device.is_deactivated && !force {
        return Err(ApiError::Forbidden(
            "The device must be deactivated prior to deletion".to_owned(),
        ));
    }
    state
        .store()
        .run(move |db| db.delete_device(DeviceId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivates a device: it may no longer connect, and can then be deleted.
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/deactivate/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn deactivate_device(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<DeviceView>, ApiError> {
    set_deactivated(state, caller, id, true).await
}

/// Reactivates a deactivated device (an active device answers 404, as in OpenWISP).
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/activate/", tag = "devices",
    params(("id" = Uuid, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn activate_device(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<DeviceView>, ApiError> {
    set_deactivated(state, caller, id, false).await
}

async fn set_deactivated(
    state: AppState,
    caller: Caller,
    id: Uuid,
    deactivated: bool,
) -> Result<Json<DeviceView>, ApiError> {
    caller.authorize(Resource::Device, &Method::PATCH)?;
    let device = visible_device(&state, &caller, id).await?;
    if !deactivated && !device.is_deactivated {
        return Err(ApiError::NotFound);
    }
    let device = state
        .store()
        .run(move |db| db.set_device_deactivated(DeviceId(id), deactivated))
        .await?;
    if device.is_deactivated {
        state.hooks().device_deactivated(device.id);
    }
    Ok(Json(view(device, true)))
}
