//! `/controller/device/…`: the openwisp-config agent's HTTP protocol, so existing agents keep
//! working against fleetmq. Answers are OpenWISP's plain text (`text/plain`, every one with
//! `X-Openwisp-Controller: true`), not the REST API's JSON; bodies are form-encoded and
//! bounded by the API's body limit. There is no bearer token: the device key (or, to
//! register, the organization's shared secret) is the credential, compared in constant time.
//!
//! A device the protocol cannot see (unknown, without configuration, deactivated, of an
//! inactive organization) is not found, as in OpenWISP's `GetDeviceView`.

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetmq_protocol::DEVICE_TEXT_MAX_CHARS;
use fleetmq_store::{
    ConfigBackend, ConfigFields, ConfigOutcome, ConfigStatus, Device, DeviceFields, DeviceId,
    DeviceKey, DeviceName, MacAddress, OrgId, PageRequest, Scope, StoreError, TemplateFilter,
};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{ClientAddr, QueryPairs, form_urlencoded_pairs, read_capped};
use crate::{ApiError, AppState};

/// The header OpenWISP's controller marks its answers with (agents check it).
const CONTROLLER_HEADER: &str = "x-openwisp-controller";
/// The most templates a registration's tags are matched against.
const TAGGED_TEMPLATES_MAX: u64 = 10_000;

/// The agent protocol routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(checksum))
        .routes(routes!(download_config))
        .routes(routes!(report_status))
        .routes(routes!(update_info))
}

/// A plain-text answer of the protocol.
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut response = (status, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTROLLER_HEADER, HeaderValue::from_static("true"));
    response
}

/// Why the protocol refused a request, answered in OpenWISP's words.
#[derive(Debug)]
pub enum AgentError {
    /// 400: a required parameter is absent or blank.
    Missing(&'static str),
    /// 403: a parameter has a value it may not have (a wrong key, an unknown backend).
    Wrong(&'static str),
    /// 403 with OpenWISP's message (unrecognized secret, registration disabled, device
    /// deactivated).
    Refused(&'static str),
    /// 404: no such device for the protocol.
    NotFound,
    /// 400: the values do not make a valid device (OpenWISP's validation messages).
    Invalid(String),
    /// 413: the body is larger than the API's limit.
    TooLarge(usize),
    /// Anything else (store failures): the REST API's answer, marked as the controller's.
    Api(ApiError),
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        match self {
            AgentError::Missing(param) => text(
                StatusCode::BAD_REQUEST,
                format!("error: missing required parameter \"{param}\"\n"),
            ),
            AgentError::Wrong(param) => {
                text(StatusCode::FORBIDDEN, format!("error: wrong {param}\n"))
            }
            AgentError::Refused(message) => text(StatusCode::FORBIDDEN, message),
            AgentError::NotFound => text(StatusCode::NOT_FOUND, "error: not found\n"),
            AgentError::Invalid(message) => text(StatusCode::BAD_REQUEST, message),
            AgentError::TooLarge(limit) => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("error: request body too large (the limit is {limit} bytes)\n"),
            ),
            AgentError::Api(e) => {
                let mut response = e.into_response();
                response
                    .headers_mut()
                    .insert(CONTROLLER_HEADER, HeaderValue::from_static("true"));
                response
            }
        }
    }
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        match ApiError::from(e) {
            // Uniqueness: OpenWISP answers its validation messages, space-separated.
            ApiError::Validation(map) => AgentError::Invalid(messages(&map)),
            ApiError::NotFound => AgentError::NotFound,
            other => AgentError::Api(other),
        }
    }
}

/// Every message of a field-error map, space-separated (Django's `" ".join(e.messages)`).
fn messages(map: &Map<String, Value>) -> String {
    let mut out = Vec::new();
    for value in map.values() {
        match value {
            Value::Array(items) => out.extend(items.iter().filter_map(Value::as_str)),
            Value::String(s) => out.push(s),
            _ => {}
        }
    }
    out.join(" ")
}

/// A form-encoded body (`application/x-www-form-urlencoded`), bounded by the API's body limit.
#[derive(Debug)]
pub struct AgentForm(QueryPairs);

impl FromRequest<AppState> for AgentForm {
    type Rejection = AgentError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config().json_body_limit;
        let bytes = read_capped(req.into_body(), limit)
            .await
            .map_err(|e| match e {
                ApiError::PayloadTooLarge(limit) => AgentError::TooLarge(limit),
                other => AgentError::Api(other),
            })?;
        let body = String::from_utf8_lossy(&bytes);
        Ok(AgentForm(QueryPairs(form_urlencoded_pairs(&body))))
    }
}

impl AgentForm {
    /// The value of `name` as given (blank included).
    fn given(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// The value of `name`, refused when absent or blank (OpenWISP's `forbid_unallowed`).
    fn required(&self, name: &'static str) -> Result<&str, AgentError> {
        self.0
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or(AgentError::Missing(name))
    }
}

/// The `{id}` of a device URL; anything that is not a UUID (dashed or not) is not found.
#[derive(Debug, Clone, Copy)]
pub struct AgentDeviceId(Uuid);

impl FromRequestParts<AppState> for AgentDeviceId {
    type Rejection = AgentError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AgentError::NotFound)?;
        Uuid::parse_str(&raw)
            .map(AgentDeviceId)
            .map_err(|_| AgentError::NotFound)
    }
}

/// The device as the protocol sees it: it has a configuration that is not deactivated, and its
/// organization is active; any other is not found.
async fn agent_device(state: &AppState, id: Uuid) -> Result<Device, AgentError> {
    state
        .store()
        .run(move |db| {
            let Some(device) = db.device(DeviceId(id))? else {
                return Ok(None);
            };
            let active = db
                .organization(device.fields.organization)?
                .is_some_and(|o| o.fields.is_active);
            let configured = device
                .config
                .as_ref()
                .is_some_and(|c| c.status != ConfigStatus::Deactivated);
            Ok((active && configured).then_some(device))
        })
        .await?
        .ok_or(AgentError::NotFound)
}

/// Refuses a missing (400) or wrong (403) key, comparing in constant time.
fn check_key(device: &Device, given: Option<&str>) -> Result<(), AgentError> {
    let given = given
        .filter(|k| !k.is_empty())
        .ok_or(AgentError::Missing("key"))?;
    if device.fields.key.matches(given.as_bytes()) {
        Ok(())
    } else {
        Err(AgentError::Wrong("key"))
    }
}

/// A device text field (model, os, system) within its bound, or OpenWISP's message.
fn device_text(field: &str, value: &str) -> Result<String, AgentError> {
    bounded(field, value, DEVICE_TEXT_MAX_CHARS)
}

fn bounded(field: &str, value: &str, max: usize) -> Result<String, AgentError> {
    if value.chars().count() > max {
        return Err(AgentError::Invalid(format!(
            "{field}: Ensure this field has no more than {max} characters."
        )));
    }
    Ok(value.to_owned())
}

/// What the agent sends to register a device.
#[derive(Debug, ToSchema)]
pub struct RegisterForm {
    /// The organization's shared secret.
    #[schema(required = true, nullable = false)]
    pub secret: Option<String>,
    /// Hostname (or MAC address).
    #[schema(required = true, nullable = false)]
    pub name: Option<String>,
    /// Primary MAC address.
    #[schema(required = true, nullable = false)]
    pub mac_address: Option<String>,
    /// `netjsonconfig.OpenWrt` or `netjsonconfig.OpenWisp`.
    #[schema(required = true, nullable = false)]
    pub backend: Option<String>,
    /// The device's key: a device of the organization with this key is updated (consistent
    /// registration); a new device gets it (or a generated one).
    #[schema(nullable = false)]
    pub key: Option<String>,
    /// Serial number or similar.
    #[schema(nullable = false)]
    pub hardware_id: Option<String>,
    /// Hardware model.
    #[schema(nullable = false)]
    pub model: Option<String>,
    /// Operating system.
    #[schema(nullable = false)]
    pub os: Option<String>,
    /// System on chip.
    #[schema(nullable = false)]
    pub system: Option<String>,
    /// Space-separated template tags: templates of the organization (or shared) carrying
    /// one of them are added.
    #[schema(nullable = false)]
    pub tags: Option<String>,
}

/// What the agent sends to update a device's information.
#[derive(Debug, ToSchema)]
pub struct UpdateInfoForm {
    /// The device's key.
    #[schema(required = true, nullable = false)]
    pub key: Option<String>,
    /// Hardware model (blank leaves it).
    #[schema(nullable = false)]
    pub model: Option<String>,
    /// Operating system (blank leaves it).
    #[schema(nullable = false)]
    pub os: Option<String>,
    /// System on chip (blank leaves it).
    #[schema(nullable = false)]
    pub system: Option<String>,
}

/// Whether a registration's name is only the device's MAC address (agents send it when the
/// hostname is the default), which must not overwrite a name an operator gave.
fn name_is_mac(name: &str, mac: &MacAddress) -> bool {
    let plain = |s: &str| s.replace([':', '-'], "").to_lowercase();
    plain(name) == plain(mac.as_str())
}

/// Registers a device with its organization's shared secret, or updates the device whose key
/// is given (OpenWISP's consistent registration). Answers 201 either way, as OpenWISP does.
#[utoipa::path(post, path = "/controller/device/register/", tag = "agent",
    request_body(content = RegisterForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 201, description = "`registration-result: success`, `uuid`, `key`, `hostname`, `is-new: 0|1` lines",
            body = String, content_type = "text/plain"),
        (status = 400, description = "`error: missing required parameter \"x\"`, or why the device is invalid",
            body = String, content_type = "text/plain"),
        (status = 403, description = "`error: unrecognized secret`, `error: registration disabled`, `error: wrong backend` or `error: device deactivated`",
            body = String, content_type = "text/plain"),
        (status = 413, description = "Body too large", body = String, content_type = "text/plain")))]
#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    form: AgentForm,
) -> Result<Response, AgentError> {
    let secret = form.required("secret")?.to_owned();
    let name = form.required("name")?.to_owned();
    let mac = form.required("mac_address")?.to_owned();
    let backend =
        ConfigBackend::parse(form.required("backend")?).ok_or(AgentError::Wrong("backend"))?;
    let found = state
        .store()
        .run(move |db| db.organization_by_secret(&secret))
        .await?;
    let Some((org, settings)) = found.filter(|(o, _)| o.fields.is_active) else {
        return Err(AgentError::Refused("error: unrecognized secret"));
    };
    if !settings.registration_enabled {
        return Err(AgentError::Refused("error: registration disabled"));
    }
    let org = org.id;
    let key = form
        .given("key")
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let existing = match key.clone() {
        Some(key) => state
            .store()
            .run(move |db| db.device_by_key(&key))
            .await?
            .filter(|d| d.fields.organization == org),
        None => None,
    };
    if existing.as_ref().is_some_and(|d| d.is_deactivated) {
        return Err(AgentError::Refused("error: device deactivated"));
    }
    let is_new = existing.is_none();
    let fields = match &existing {
        Some(device) => {
            let mut fields = device.fields.clone();
            if !name_is_mac(&name, &fields.mac_address) {
                fields.name = DeviceName::parse(&name)
                    .map_err(|e| AgentError::Invalid(format!("name: {e}")))?;
            }
            for (slot, field) in [
                (&mut fields.model, "model"),
                (&mut fields.os, "os"),
                (&mut fields.system, "system"),
            ] {
                if let Some(v) = form.given(field) {
                    *slot = device_text(field, v)?;
                }
            }
            if peer.is_some() {
                fields.last_ip = peer;
            }
            fields
        }
        None => new_fields(&form, org, &name, &mac, key.as_deref(), peer)?,
    };
    let templates = tagged_templates(&state, org, backend, form.given("tags")).await?;
    let config = ConfigFields {
        backend,
        templates,
        context: Map::new(),
        config: Map::new(),
    };
    let existing = existing.map(|d| d.id);
    let device = state
        .store()
        .run(move |db| db.register_device(existing, fields, config))
        .await?;
    tracing::info!(device_id = %device.id.0, is_new, "device registered by the agent");
    Ok(text(
        StatusCode::CREATED,
        format!(
            "registration-result: success\nuuid: {}\nkey: {}\nhostname: {}\nis-new: {}\n",
            device.id.0.simple(),
            device.fields.key.as_str(),
            device.fields.name.as_str(),
            u8::from(is_new)
        ),
    ))
}

/// A new device's fields from a registration.
fn new_fields(
    form: &AgentForm,
    org: OrgId,
    name: &str,
    mac: &str,
    key: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> Result<DeviceFields, AgentError> {
    let invalid = |field: &str, e: &str| AgentError::Invalid(format!("{field}: {e}"));
    let text_of = |field: &str| device_text(field, form.given(field).unwrap_or_default());
    Ok(DeviceFields {
        name: DeviceName::parse(name).map_err(|e| invalid("name", e))?,
        organization: org,
        group: None,
        mac_address: MacAddress::parse(mac).map_err(|e| invalid("mac_address", e))?,
        key: match key {
            Some(key) => DeviceKey::parse(key).map_err(|e| invalid("key", e))?,
            None => DeviceKey::generate(),
        },
        last_ip: peer,
        management_ip: None,
        model: text_of("model")?,
        os: text_of("os")?,
        system: text_of("system")?,
        notes: String::new(),
        hardware_id: bounded(
            "hardware_id",
            form.given("hardware_id").unwrap_or_default(),
            32,
        )?,
    })
}

/// The templates of `org` (or shared) of `backend` carrying one of the space-separated
/// `tags`, in the order listed.
async fn tagged_templates(
    state: &AppState,
    org: OrgId,
    backend: ConfigBackend,
    tags: Option<&str>,
) -> Result<Vec<Uuid>, AgentError> {
    let tags: Vec<String> = tags
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let filter = TemplateFilter {
        backend: Some(backend),
        ..TemplateFilter::default()
    };
    let page = PageRequest {
        offset: 0,
        limit: TAGGED_TEMPLATES_MAX,
    };
    let templates = state
        .store()
        .run(move |db| db.list_templates(&Scope::Orgs(vec![org]), None, &filter, page))
        .await?;
    Ok(templates
        .items
        .into_iter()
        .filter(|t| t.fields.tags.iter().any(|tag| tags.contains(tag)))
        .map(|t| t.id.0)
        .collect())
}

/// Updates a device's model, operating system and system on chip (blank values are ignored).
#[utoipa::path(post, path = "/controller/device/update-info/{id}/", tag = "agent",
    params(("id" = Uuid, Path, description = "Device id")),
    request_body(content = UpdateInfoForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`update-info: success`", body = String, content_type = "text/plain"),
        (status = 400, description = "`error: missing required parameter \"key\"`, or a value too long",
            body = String, content_type = "text/plain"),
        (status = 403, description = "`error: wrong key` or `error: device deactivated`",
            body = String, content_type = "text/plain"),
        (status = 404, description = "No such device for the protocol", body = String, content_type = "text/plain"),
        (status = 413, description = "Body too large", body = String, content_type = "text/plain")))]
#[tracing::instrument(skip_all, fields(device_id = %id.0))]
async fn update_info(
    State(state): State<AppState>,
    id: AgentDeviceId,
    form: AgentForm,
) -> Result<Response, AgentError> {
    let device = agent_device(&state, id.0).await?;
    check_key(&device, form.given("key"))?;
    if device.is_deactivated {
        return Err(AgentError::Refused("error: device deactivated"));
    }
    let mut fields = device.fields.clone();
    for (slot, field) in [
        (&mut fields.model, "model"),
        (&mut fields.os, "os"),
        (&mut fields.system, "system"),
    ] {
        if let Some(v) = form.given(field).map(str::trim).filter(|v| !v.is_empty()) {
            *slot = device_text(field, v)?;
        }
    }
    if fields != device.fields {
        let id = device.id;
        state
            .store()
            .run(move |db| db.update_device(id, fields, None))
            .await?;
    }
    Ok(text(StatusCode::OK, "update-info: success"))
}

/// The device's rendered configuration, or not found when it has none.
async fn rendered(
    state: &AppState,
    device: &Device,
) -> Result<fleetmq_store::RenderedConfig, AgentError> {
    let id = device.id;
    state
        .store()
        .run(move |db| db.device_configuration(id))
        .await?
        .ok_or(AgentError::NotFound)
}

/// The checksum of the device's configuration: the agent downloads it when it changed.
#[utoipa::path(get, path = "/controller/device/checksum/{id}/", tag = "agent",
    params(("id" = Uuid, Path, description = "Device id"),
        ("key" = String, Query, description = "The device's key")),
    responses(
        (status = 200, description = "MD5 of the configuration archive, hex", body = String, content_type = "text/plain"),
        (status = 400, description = "`error: missing required parameter \"key\"`", body = String, content_type = "text/plain"),
        (status = 403, description = "`error: wrong key`", body = String, content_type = "text/plain"),
        (status = 404, description = "No such device for the protocol", body = String, content_type = "text/plain")))]
#[tracing::instrument(skip_all, fields(device_id = %id.0))]
async fn checksum(
    State(state): State<AppState>,
    id: AgentDeviceId,
    query: QueryPairs,
) -> Result<Response, AgentError> {
    let device = agent_device(&state, id.0).await?;
    check_key(&device, query.get("key"))?;
    let config = rendered(&state, &device).await?;
    Ok(text(StatusCode::OK, config.checksum))
}

/// The device's configuration archive (tar.gz), as an attachment named after the device.
#[utoipa::path(get, path = "/controller/device/download-config/{id}/", tag = "agent",
    params(("id" = Uuid, Path, description = "Device id"),
        ("key" = String, Query, description = "The device's key")),
    responses(
        (status = 200, description = "The configuration archive", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "`error: missing required parameter \"key\"`", body = String, content_type = "text/plain"),
        (status = 403, description = "`error: wrong key`", body = String, content_type = "text/plain"),
        (status = 404, description = "No such device for the protocol", body = String, content_type = "text/plain")))]
#[tracing::instrument(skip_all, fields(device_id = %id.0))]
async fn download_config(
    State(state): State<AppState>,
    id: AgentDeviceId,
    query: QueryPairs,
) -> Result<Response, AgentError> {
    let device = agent_device(&state, id.0).await?;
    check_key(&device, query.get("key"))?;
    let config = rendered(&state, &device).await?;
    let mut response = (StatusCode::OK, config.archive).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTROLLER_HEADER, HeaderValue::from_static("true"));
    // Device names are hostnames or MACs: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename={}.tar.gz",
        device.fields.name.as_str()
    )) {
        headers.insert(axum::http::header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// What the agent sends to report how applying its configuration went.
#[derive(Debug, ToSchema)]
pub struct ReportStatusForm {
    /// The device's key.
    #[schema(required = true, nullable = false)]
    pub key: Option<String>,
    /// `applied` or `error`.
    #[schema(required = true, nullable = false)]
    pub status: Option<String>,
    /// Why applying failed (with `error`).
    #[schema(nullable = false)]
    pub error_reason: Option<String>,
}

/// OpenWISP's reason when the device gave none.
const NO_REASON: &str = "Reason not reported by the device.";

/// Records that the device applied its current configuration, or failed to.
#[utoipa::path(post, path = "/controller/device/report-status/{id}/", tag = "agent",
    params(("id" = Uuid, Path, description = "Device id")),
    request_body(content = ReportStatusForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`report-result: success`, `current-status: <status>` lines", body = String, content_type = "text/plain"),
        (status = 400, description = "`error: missing required parameter \"x\"`", body = String, content_type = "text/plain"),
        (status = 403, description = "`error: wrong key` or `error: wrong status`", body = String, content_type = "text/plain"),
        (status = 404, description = "No such device for the protocol", body = String, content_type = "text/plain"),
        (status = 413, description = "Body too large", body = String, content_type = "text/plain")))]
#[tracing::instrument(skip_all, fields(device_id = %id.0))]
async fn report_status(
    State(state): State<AppState>,
    id: AgentDeviceId,
    form: AgentForm,
) -> Result<Response, AgentError> {
    let device = agent_device(&state, id.0).await?;
    check_key(&device, form.given("key"))?;
    let status = match form.required("status")? {
        "applied" => ConfigStatus::Applied,
        "error" => ConfigStatus::Error,
        _ => return Err(AgentError::Wrong("status")),
    };
    let error_reason = match status {
        ConfigStatus::Error => form.given("error_reason").unwrap_or(NO_REASON).to_owned(),
        _ => String::new(),
    };
    let outcome = ConfigOutcome {
        status,
        checksum: None,
        error_reason,
    };
    let id = device.id;
    let current = state
        .store()
        .run(move |db| {
            db.record_config_outcome(id, outcome)?;
            db.device(id)
        })
        .await?
        .and_then(|d| d.config)
        .ok_or(AgentError::NotFound)?;
    Ok(text(
        StatusCode::OK,
        format!(
            "report-result: success\ncurrent-status: {}\n",
            current.status.name()
        ),
    ))
}
