//! `/api/v1/controller/device/`: OpenWISP's device endpoints.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_protocol::DEVICE_TEXT_MAX_CHARS;
use fleetmq_store::{
    Backend, ConfigBackend, ConfigFields, ConfigGrant, ConfigStatus, Device, DeviceFields,
    DeviceFilter, DeviceId, DeviceKey, DeviceName, DeviceOrder, DeviceSearch, GroupId, MacAddress,
    OrgId, Page, Presence, Scope, StoreError, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Activate, Add, Authorized, Caller, Change, Deactivate, Delete, Devices, View};
use crate::body::{Body, Bounded, Nested, Pk, does_not_exist, text_field};
use crate::error::invalid_netjson;
use crate::extract::{PathId, QueryPairs};
use crate::filters::{BoolFilter, Filters, TimeFilter, UuidFilter, choice_schema, invalid_choice};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// The device routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, change_device, delete_device))
        .routes(routes!(deactivate_device))
        .routes(routes!(activate_device))
        .routes(routes!(download_device_configuration))
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
    /// Whether the device is connected over MQTT now (read-only).
    pub presence: PresenceView,
}

/// A device's MQTT presence as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceView {
    /// Its MQTT session is open now.
    pub online: bool,
    /// When the current state began (its session last opened or ended), RFC 3339; null for a
    /// device never connected.
    pub since: Option<String>,
}

impl From<Presence> for PresenceView {
    fn from(presence: Presence) -> Self {
        Self {
            online: presence.online,
            since: presence.since.map(|t| t.to_string()),
        }
    }
}

/// What a client sends to register, replace or change a device.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceWrite {
    /// Hostname or MAC address, unique per organization.
    #[schema(required = true, nullable = false)]
    name: Option<NameField>,
    /// Owning organization (one the caller manages).
    #[schema(required = true, nullable = false)]
    organization: Option<Pk>,
    /// Device group of the same organization.
    group: Option<Option<Pk>>,
    /// Primary MAC address, unique per organization.
    #[schema(required = true, nullable = false)]
    mac_address: Option<MacField>,
    /// Device key (its MQTT password); generated (32 hex characters) when absent.
    #[schema(nullable = false)]
    key: Option<KeyField>,
    /// Last address it connected from; blank or null clears it.
    last_ip: Option<Option<IpField>>,
    /// Address the server reaches it on; blank or null clears it.
    management_ip: Option<Option<IpField>>,
    /// Hardware model.
    #[schema(nullable = false)]
    model: Option<Bounded<{ DEVICE_TEXT_MAX_CHARS }>>,
    /// Operating system.
    #[schema(nullable = false)]
    os: Option<Bounded<{ DEVICE_TEXT_MAX_CHARS }>>,
    /// System on chip.
    #[schema(nullable = false)]
    system: Option<Bounded<{ DEVICE_TEXT_MAX_CHARS }>>,
    /// Free text.
    #[schema(nullable = false)]
    notes: Option<String>,
    /// Serial number or similar.
    #[schema(nullable = false)]
    hardware_id: Option<Bounded<32>>,
    /// Configuration, merged into the current one; null leaves it as it is.
    config: Option<Option<Nested<ConfigWrite>>>,
}

/// The `config` object of a device body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfigWrite {
    /// Configuration backend.
    #[schema(nullable = false)]
    backend: Option<BackendField>,
    /// Ordered template ids.
    #[schema(nullable = false)]
    templates: Option<Vec<Pk>>,
    /// Template variables.
    #[schema(nullable = false)]
    context: Option<Map<String, Value>>,
    /// NetJSON configuration.
    #[schema(nullable = false)]
    config: Option<Map<String, Value>>,
}

text_field!(
    /// A device name: a hostname or a MAC address, at most 64 characters.
    NameField(DeviceName),
    DeviceName::parse,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64)),
);

text_field!(
    /// A MAC address (`:` or `-` separated).
    MacField(MacAddress),
    MacAddress::parse,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$")),
);

text_field!(
    /// A device key: 16 to 64 characters without spaces, dots or slashes.
    KeyField(DeviceKey),
    DeviceKey::parse,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(DeviceKey::MIN_LENGTH))
        .max_length(Some(64)),
);

text_field!(
    /// An IPv4 or IPv6 address; blank means none.
    IpField(Option<IpAddr>),
    |s: &str| {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| "Enter a valid IPv4 or IPv6 address.")
    },
    ObjectBuilder::new().schema_type(Type::String),
);

text_field!(
    /// A configuration backend.
    BackendField(ConfigBackend),
    |s: &str| ConfigBackend::parse(s).ok_or_else(|| format!("\"{s}\" is not a valid choice.")),
    choice_schema(ConfigBackend::ALL.map(ConfigBackend::name)),
);

text_field!(
    /// A configuration status (filter).
    StatusFilter(ConfigStatus),
    |s: &str| ConfigStatus::parse(s).ok_or_else(|| invalid_choice(s)),
    choice_schema(ConfigStatus::ALL.map(ConfigStatus::name)),
);

text_field!(
    /// A configuration backend (filter).
    BackendFilter(ConfigBackend),
    |s: &str| ConfigBackend::parse(s).ok_or_else(|| invalid_choice(s)),
    choice_schema(ConfigBackend::ALL.map(ConfigBackend::name)),
);

text_field!(
    /// The order of the device list: `-created` (newest first, the default), `created`,
    /// `name` or `-name` (names ignoring case).
    OrderingFilter(DeviceOrder),
    |s: &str| DeviceOrder::parse(s).ok_or_else(|| invalid_choice(s)),
    choice_schema(DeviceOrder::ALL.map(DeviceOrder::name)),
);

/// Filters of the device list (django-filter's names).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Configuration status.
    #[param(inline)]
    #[serde(rename = "config__status")]
    config_status: Option<StatusFilter>,
    /// Configuration backend.
    #[param(inline)]
    #[serde(rename = "config__backend")]
    config_backend: Option<BackendFilter>,
    /// Organization id.
    #[param(inline, value_type = Option<UuidFilter>)]
    organization: Option<String>,
    /// Organization slug.
    organization_slug: Option<String>,
    /// Template id.
    #[param(inline)]
    #[serde(rename = "config__templates")]
    config_templates: Option<UuidFilter>,
    /// Device group id.
    #[param(inline)]
    group: Option<UuidFilter>,
    /// Has a location.
    #[param(inline)]
    with_geo: Option<BoolFilter>,
    /// Created at exactly this time.
    #[param(inline)]
    created: Option<TimeFilter>,
    /// Created at or after.
    #[param(inline)]
    #[serde(rename = "created__gte")]
    created_gte: Option<TimeFilter>,
    /// Created before.
    #[param(inline)]
    #[serde(rename = "created__lt")]
    created_lt: Option<TimeFilter>,
    /// Part of the name, MAC address (written with `:`, `-` or no separators) or id, ignoring
    /// case. Walks the whole scope.
    search: Option<String>,
    /// Exactly this hardware model. Walks the whole scope.
    model: Option<String>,
    /// Connected over MQTT now (`true`) or not (`false`; a device never connected is not).
    /// Walks the whole scope.
    #[param(inline)]
    is_online: Option<BoolFilter>,
    /// Runs a build of exactly this version (its device firmware is installed). Walks the
    /// whole scope.
    firmware_version: Option<String>,
    /// Order: `-created` (newest first, the default), `created`, `name` or `-name` (ignoring
    /// case; equal names newest first). Any but the default walks the whole scope.
    #[param(inline)]
    ordering: Option<OrderingFilter>,
}

/// `page` with each device's presence, read in one more store call (not one per device).
pub(crate) fn with_presence(
    db: &dyn Backend,
    page: Page<Device>,
) -> fleetmq_store::Result<Page<(Device, Presence)>> {
    let ids: Vec<DeviceId> = page.items.iter().map(|d| d.id).collect();
    let presence = db.presence_of(&ids)?;
    Ok(Page {
        count: page.count,
        items: page.items.into_iter().zip(presence).collect(),
    })
}

/// The detail view of `device`, with its presence read now.
async fn detail_view(state: &AppState, device: Device) -> Result<DeviceView, ApiError> {
    let id = device.id;
    let presence = state
        .store()
        .run(move |db| db.presence_of(&[id]))
        .await?
        .pop()
        .unwrap_or_default();
    Ok(view(device, presence, true))
}

pub(crate) fn view(device: Device, presence: Presence, detail: bool) -> DeviceView {
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
        presence: presence.into(),
    }
}

/// Lists devices of the caller's organizations, newest first (or in the `ordering` asked),
/// each with its MQTT presence. Without `search`, `model`, `is_online`, `firmware_version` or
/// another `ordering` a page is read from an index; with them the caller's whole scope is
/// walked.
#[utoipa::path(get, path = "/api/v1/controller/device/", tag = "devices",
    params(PageQuery, DeviceListQuery),
    responses((status = 200, body = Paginated<DeviceView>)), security(("bearer" = [])))]
async fn list_devices(
    State(state): State<AppState>,
    auth: Authorized<Devices, View>,
    paging: Paging,
    Filters(query): Filters<DeviceListQuery>,
) -> Result<Json<Paginated<DeviceView>>, ApiError> {
    let Some(scope) = narrow_scope(&state, &auth, &query).await? else {
        return paging.empty();
    };
    let filter = DeviceFilter {
        config_status: query.config_status.map(|f| f.0),
        config_backend: query.config_backend.map(|f| f.0),
        template: query.config_templates.map(|f| f.0),
        group: query.group.map(|f| f.0),
        with_geo: query.with_geo.map(|f| f.0),
        created: query.created.map(|f| f.0),
        created_gte: query.created_gte.map(|f| f.0),
        created_lt: query.created_lt.map(|f| f.0),
        search: query.search.as_deref().and_then(DeviceSearch::new),
        model: query.model,
        is_online: query.is_online.map(|f| f.0),
        firmware_version: query.firmware_version,
        order: query.ordering.map(|f| f.0).unwrap_or_default(),
    };
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| with_presence(db, db.list_devices(&scope, &filter, request)?))
        .await?;
    paging.envelope(page, |(d, presence)| view(d, presence, false))
}

/// The caller's scope narrowed by the `organization` and `organization_slug` filters; `None`
/// when nothing can match (an unknown slug).
async fn narrow_scope(
    state: &AppState,
    auth: &Authorized<Devices, View>,
    query: &DeviceListQuery,
) -> Result<Option<Scope>, ApiError> {
    let mut scope = auth.scope.clone();
    if let Some(v) = &query.organization {
        match Uuid::parse_str(v)
            .ok()
            .map(OrgId)
            .filter(|org| scope.contains(*org))
        {
            Some(org) => scope = Scope::Orgs(vec![org]),
            None => {
                return Err(ApiError::field(
                    "organization",
                    "Select a valid choice. That choice is not one of the available choices.",
                ));
            }
        }
    }
    if let Some(slug) = query.organization_slug.clone() {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?;
        match org.filter(|o| scope.contains(o.id) && auth.caller.manages(o.id)) {
            Some(org) => scope = Scope::Orgs(vec![org.id]),
            None => return Ok(None),
        }
    }
    Ok(Some(scope))
}

/// Registers a device.
#[utoipa::path(post, path = "/api/v1/controller/device/", tag = "devices",
    request_body = DeviceWrite, responses((status = 201, body = DeviceView)),
    security(("bearer" = [])))]
async fn create_device(
    State(state): State<AppState>,
    auth: Authorized<Devices, Add>,
    body: Body<DeviceWrite>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    let body = body.read()?;
    let relations = body.check_relations(&state, &auth.caller, None).await?;
    let (Some(name), Some(organization), Some(mac_address)) =
        (body.name, relations.organization, body.mac_address)
    else {
        return Err(ApiError::field("name", crate::body::REQUIRED));
    };
    let fields = DeviceFields {
        name: name.0,
        organization,
        group: relations.group.flatten(),
        mac_address: mac_address.0,
        key: body.key.map_or_else(DeviceKey::generate, |k| k.0),
        last_ip: body.last_ip.flatten().and_then(|ip| ip.0),
        management_ip: body.management_ip.flatten().and_then(|ip| ip.0),
        model: body.model.unwrap_or_default().0,
        os: body.os.unwrap_or_default().0,
        system: body.system.unwrap_or_default().0,
        notes: body.notes.unwrap_or_default(),
        hardware_id: body.hardware_id.unwrap_or_default().0,
    };
    let config = body.config.flatten().map(|Nested(c)| c.apply(None));
    let device = state
        .store()
        .run(move |db| db.create_device(fields, config))
        .await
        .map_err(config_error)?;
    // New: never connected.
    Ok((
        StatusCode::CREATED,
        Json(view(device, Presence::default(), true)),
    ))
}

/// A device's own configuration that does not render is answered under `config.config`, where
/// the client sent it (OpenWISP's nested serializer errors).
fn config_error(e: StoreError) -> ApiError {
    match e {
        StoreError::InvalidConfig { source, .. } => {
            let mut inner = serde_json::Map::new();
            inner.insert("config".into(), json!([invalid_netjson(&source)]));
            let mut outer = serde_json::Map::new();
            outer.insert("config".into(), Value::Object(inner));
            ApiError::Validation(outer)
        }
        other => other.into(),
    }
}

impl DeviceWrite {
    /// Checks the relations the caller must be able to see, and OpenWISP's configuration
    /// rules, as field errors: the group must be of the device's organization; the templates
    /// visible to the caller, of the device's organization or shared, and of the
    /// configuration's backend. Returns the organization and the group when given.
    async fn check_relations(
        &self,
        state: &AppState,
        caller: &Caller,
        current: Option<&Device>,
    ) -> Result<Relations, ApiError> {
        let mut errors = Map::new();
        let mut relations = Relations::default();
        if let Some(Pk(id)) = self.organization {
            match caller.managed_org(state, id).await? {
                Some(org) => relations.organization = Some(org),
                None => {
                    errors.insert(
                        "organization".into(),
                        json!([does_not_exist(&id.to_string())]),
                    );
                }
            }
        }
        let organization = relations
            .organization
            .or_else(|| current.map(|d| d.fields.organization));
        let group = match self.group {
            Some(Some(Pk(id))) => Some(id),
            Some(None) => None,
            None => current.and_then(|d| d.fields.group),
        };
        if let Some(id) = group {
            let found = state
                .store()
                .run(move |db| db.group(GroupId(id)))
                .await?
                .filter(|g| caller.manages(g.fields.organization));
            match found {
                None => {
                    errors.insert("group".into(), json!([does_not_exist(&id.to_string())]));
                }
                Some(g) if organization.is_some_and(|org| org != g.fields.organization) => {
                    errors.insert("group".into(), json!([GROUP_ORG_MISMATCH]));
                }
                Some(_) => {}
            }
        }
        if let Some(Some(pk)) = self.group {
            relations.group = Some(Some(pk.0));
        } else if let Some(None) = self.group {
            relations.group = Some(None);
        }
        if let Some(Some(Nested(config))) = &self.config
            && let Some(given) = &config.templates
        {
            let backend = config
                .backend
                .as_ref()
                .map(|b| b.0)
                .or_else(|| {
                    current
                        .and_then(|d| d.config.as_ref())
                        .map(|c| c.fields.backend)
                })
                .unwrap_or(ConfigBackend::OpenWrt);
            let ids: Vec<Uuid> = given.iter().map(|Pk(id)| *id).collect();
            if let Some(problem) =
                check_config_templates(state, caller, organization, backend, ids).await?
            {
                errors.insert("config".into(), problem);
            }
        }
        if errors.is_empty() {
            Ok(relations)
        } else {
            Err(ApiError::Validation(errors))
        }
    }

    /// Applies the body over a device's current fields.
    fn apply(self, mut fields: DeviceFields, relations: &Relations) -> DeviceFields {
        if let Some(v) = self.name {
            fields.name = v.0;
        }
        if let Some(v) = relations.organization {
            fields.organization = v;
        }
        if let Some(group) = relations.group {
            fields.group = group;
        }
        if let Some(v) = self.mac_address {
            fields.mac_address = v.0;
        }
        if let Some(v) = self.key {
            fields.key = v.0;
        }
        if let Some(v) = self.last_ip {
            fields.last_ip = v.and_then(|ip| ip.0);
        }
        if let Some(v) = self.management_ip {
            fields.management_ip = v.and_then(|ip| ip.0);
        }
        for (slot, value) in [
            (&mut fields.model, self.model),
            (&mut fields.os, self.os),
            (&mut fields.system, self.system),
        ] {
            if let Some(v) = value {
                *slot = v.0;
            }
        }
        if let Some(v) = self.notes {
            fields.notes = v;
        }
        if let Some(v) = self.hardware_id {
            fields.hardware_id = v.0;
        }
        fields
    }
}

impl ConfigWrite {
    /// Merges the given parts over the current configuration.
    fn apply(self, current: Option<ConfigFields>) -> ConfigFields {
        let base = current.unwrap_or(ConfigFields {
            backend: ConfigBackend::OpenWrt,
            templates: Vec::new(),
            context: Map::new(),
            config: Map::new(),
        });
        ConfigFields {
            backend: self.backend.map_or(base.backend, |b| b.0),
            templates: self
                .templates
                .map_or(base.templates, |t| t.into_iter().map(|Pk(id)| id).collect()),
            context: self.context.unwrap_or(base.context),
            config: self.config.unwrap_or(base.config),
        }
    }
}

/// The related objects a device body named, once checked.
#[derive(Debug, Default)]
struct Relations {
    /// The organization given.
    organization: Option<OrgId>,
    /// The group given (`Some(None)` clears it).
    group: Option<Option<Uuid>>,
}

/// OpenWISP's message for a group of another organization than the device's.
pub const GROUP_ORG_MISMATCH: &str = "Please ensure that the organization of this device and \
     the organization of the related Device Group match.";

/// The `config` error for templates a device's configuration may not use, if any: ids the
/// caller cannot see (DRF's "does not exist", under `templates`), templates of another
/// organization (OpenWISP's message naming them) or of another backend (fleetmq's rule:
/// OpenWISP's forms only offer templates of the configuration's backend).
async fn check_config_templates(
    state: &AppState,
    caller: &Caller,
    organization: Option<OrgId>,
    backend: ConfigBackend,
    ids: Vec<Uuid>,
) -> Result<Option<Value>, ApiError> {
    let wanted = ids.clone();
    let found = state.store().run(move |db| db.templates(&wanted)).await?;
    let mut unknown = Vec::new();
    let mut foreign = Vec::new();
    let mut other_backend = Vec::new();
    for id in &ids {
        match found
            .iter()
            .find(|t| t.id.0 == *id)
            .filter(|t| t.fields.organization.is_none_or(|o| caller.manages(o)))
        {
            None => unknown.push(does_not_exist(&id.to_string())),
            Some(t) if organization.is_some_and(|org| !t.usable_by(org)) => {
                foreign.push(t.fields.name.clone());
            }
            Some(t) if t.fields.backend != backend => other_backend.push(t.fields.name.clone()),
            Some(_) => {}
        }
    }
    if !unknown.is_empty() {
        return Ok(Some(json!({ "templates": unknown })));
    }
    let mut messages = Vec::new();
    if !foreign.is_empty() {
        messages.push(format!(
            "The following templates are owned by organizations which do not match the \
             organization of this configuration: {}",
            foreign.join(", ")
        ));
    }
    if !other_backend.is_empty() {
        messages.push(format!(
            "The following templates use a backend which does not match the backend of this \
             configuration: {}",
            other_backend.join(", ")
        ));
    }
    Ok((!messages.is_empty()).then(|| json!(messages)))
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
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/", tag = "devices", params(PathId),
    responses((status = 200, body = DeviceView)), security(("bearer" = [])))]
async fn get_device(
    State(state): State<AppState>,
    auth: Authorized<Devices, View>,
    PathId(id): PathId,
) -> Result<Json<DeviceView>, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    Ok(Json(detail_view(&state, device).await?))
}

/// Downloads the configuration archive the device's configuration renders to now (tar.gz:
/// `etc/config/<package>` files plus the configuration's `files`). A device presents the
/// signed link of its config notice instead of a token.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/configuration/", tag = "devices",
    params(PathId, ConfigGrantQuery),
    responses((status = 200, description = "The configuration archive (tar.gz)",
        content_type = "application/octet-stream"),
        (status = 403, description = "No permission, or an invalid or expired link", body = ErrorDetail)),
    security(("bearer" = []), ()))]
async fn download_device_configuration(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    query: QueryPairs,
    auth: Result<Authorized<Devices, View>, ApiError>,
    PathId(id): PathId,
) -> Result<axum::response::Response, ApiError> {
    let grant = ConfigGrantQuery::from_query(&query);
    // A token, when given, decides; without one a device presents its grant.
    let device = if headers.contains_key(axum::http::header::AUTHORIZATION) || !grant.is_given() {
        visible_device(&state, &auth?.caller, id).await?
    } else {
        granted_device(&state, &grant, id).await?
    };
    let rendered = state
        .store()
        .run(move |db| db.device_configuration(DeviceId(id)))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(crate::archive::archive_response(
        device.fields.name.as_str(),
        rendered,
    ))
}

/// The signed link a config notice carries: which device, until when, and the signature. A
/// part that does not parse is refused like one that does not verify.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConfigGrantQuery {
    /// The device allowed (the one in the path).
    #[param(value_type = Option<Uuid>)]
    device: Option<String>,
    /// Unix seconds after which the link is refused.
    #[param(value_type = Option<i64>)]
    expires: Option<String>,
    /// Hex HMAC-SHA256 of the grant.
    signature: Option<String>,
}

impl ConfigGrantQuery {
    fn from_query(query: &QueryPairs) -> Self {
        let given = |key| query.get(key).map(str::to_owned);
        Self {
            device: given("device"),
            expires: given("expires"),
            signature: given("signature"),
        }
    }

    fn is_given(&self) -> bool {
        self.device.is_some() || self.expires.is_some() || self.signature.is_some()
    }
}

/// The device a valid config grant names, when it is the device of the path and active.
async fn granted_device(
    state: &AppState,
    query: &ConfigGrantQuery,
    id: Uuid,
) -> Result<Device, ApiError> {
    let refuse = || ApiError::Forbidden("Invalid or expired download link.".to_owned());
    let device = query
        .device
        .as_deref()
        .and_then(|d| Uuid::parse_str(d).ok())
        .filter(|d| *d == id)
        .ok_or_else(refuse)?;
    let expires = query
        .expires
        .as_deref()
        .and_then(|e| e.parse::<i64>().ok())
        .ok_or_else(refuse)?;
    let grant = ConfigGrant {
        device: DeviceId(device),
        expires,
    };
    let secret = crate::routes::firmware::images::download_secret(state).await?;
    if !grant.verify(
        &secret,
        query.signature.as_deref().unwrap_or(""),
        Timestamp::now(),
    ) {
        return Err(refuse());
    }
    let found = state
        .store()
        .run(move |db| db.device(DeviceId(device)))
        .await?;
    match found {
        Some(device) if !device.is_deactivated => Ok(device),
        Some(_) => Err(refuse()),
        None => Err(ApiError::NotFound),
    }
}

/// Replaces a device's fields, or with PATCH changes some of them.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/device/{id}/", tag = "devices",
    params(PathId), request_body = DeviceWrite,
    responses((status = 200, body = DeviceView),
        (status = 403, description = "No permission, or the device is deactivated", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn change_device(
    State(state): State<AppState>,
    auth: Authorized<Devices, Change>,
    PathId(id): PathId,
    body: Body<DeviceWrite>,
) -> Result<Json<DeviceView>, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    if device.is_deactivated {
        return Err(ApiError::permission_denied());
    }
    let mut body = body.read()?;
    let relations = body
        .check_relations(&state, &auth.caller, Some(&device))
        .await?;
    let config = body
        .config
        .take()
        .flatten()
        .map(|Nested(c)| c.apply(device.config.map(|c| c.fields)));
    let fields = body.apply(device.fields, &relations);
    let device = state
        .store()
        .run(move |db| db.update_device(DeviceId(id), fields, config))
        .await
        .map_err(config_error)?;
    // Its group, model, OS, hardware id or variables may make software filters match it.
    state.hooks().software_changed(device.fields.organization);
    Ok(Json(detail_view(&state, device).await?))
}

/// Deletes a deactivated device (`?force=true` skips the deactivation rule).
#[utoipa::path(delete, path = "/api/v1/controller/device/{id}/", tag = "devices",
    params(PathId, ("force" = Option<bool>, Query, description = "Delete even if still active")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "No permission, or the device is still active", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_device(
    State(state): State<AppState>,
    auth: Authorized<Devices, Delete>,
    PathId(id): PathId,
    query: QueryPairs,
) -> Result<StatusCode, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
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
    params(PathId), responses((status = 200, body = DeviceView)), security(("bearer" = [])))]
async fn deactivate_device(
    State(state): State<AppState>,
    auth: Authorized<Devices, Deactivate>,
    PathId(id): PathId,
) -> Result<Json<DeviceView>, ApiError> {
    set_deactivated(state, &auth.caller, id, true).await
}

/// Reactivates a deactivated device (an active device answers 404, as in OpenWISP).
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/activate/", tag = "devices",
    params(PathId), responses((status = 200, body = DeviceView)), security(("bearer" = [])))]
async fn activate_device(
    State(state): State<AppState>,
    auth: Authorized<Devices, Activate>,
    PathId(id): PathId,
) -> Result<Json<DeviceView>, ApiError> {
    set_deactivated(state, &auth.caller, id, false).await
}

async fn set_deactivated(
    state: AppState,
    caller: &Caller,
    id: Uuid,
    deactivated: bool,
) -> Result<Json<DeviceView>, ApiError> {
    let device = visible_device(&state, caller, id).await?;
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
    Ok(Json(detail_view(&state, device).await?))
}
