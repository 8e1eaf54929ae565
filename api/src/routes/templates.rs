//! `/api/v1/controller/template/`: configuration templates. Stored and checked here; rendering
//! (and the template's configuration download) is built on top by the renderer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetmq_store::{
    ConfigBackend, OrgId, Template, TemplateFields, TemplateFilter, TemplateId, TemplateType,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Caller, Change, Delete, Templates, View};
use crate::body::{Body, Bounded, NOT_NULL, NonBlank, Pk, REQUIRED, does_not_exist, text_field};
use crate::error::invalid_netjson;
use crate::extract::PathId;
use crate::filters::{
    BoolFilter, Filters, TimeFilter, UuidFilter, choice_schema, invalid_choice, narrowed_org,
};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::devices::{BackendField, BackendFilter};
use crate::{ApiError, AppState};

/// The template routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, change_template, delete_template))
        .routes(routes!(download_template_configuration))
}

/// OpenWISP's message for a VPN on a generic template.
pub const VPN_ON_GENERIC: &str = "To select a VPN, set the template type to 'VPN-client'";
/// OpenWISP's message for a VPN-client template without VPN.
pub const VPN_MISSING: &str = "A VPN must be selected when template type is \"VPN\"";
/// A VPN-client template of an organization's VPN must belong to that organization.
pub const VPN_ORG_MISMATCH: &str = "Please ensure that the organization of this template and the organization of the related VPN match.";
/// OpenWISP's message for a generic template without configuration.
pub const EMPTY_CONFIG: &str = "The configuration field cannot be empty.";

/// A template as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    /// Identity.
    pub id: Uuid,
    /// Unique per organization; a shared template's name is unique everywhere.
    pub name: String,
    /// Owning organization; `null` = shared by every organization.
    pub organization: Option<Uuid>,
    /// `generic` or `vpn` (VPN client).
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: &'static str,
    /// `netjsonconfig.OpenWrt` or `netjsonconfig.OpenWisp`.
    pub backend: &'static str,
    /// VPN server of a VPN-client template.
    pub vpn: Option<Uuid>,
    /// Labels.
    pub tags: Vec<String>,
    /// Added to every new configuration of its organization (all, if shared).
    pub default: bool,
    /// Always part of every configuration of its organization (all, if shared).
    pub required: bool,
    /// Free text.
    pub notes: String,
    /// Values of the template's variables when nothing else sets them.
    #[schema(value_type = Object)]
    pub default_values: Map<String, Value>,
    /// NetJSON configuration.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

pub(crate) fn view(t: Template) -> TemplateView {
    let f = t.fields;
    TemplateView {
        id: t.id.0,
        name: f.name,
        organization: f.organization.map(|o| o.0),
        kind: f.kind.name(),
        backend: f.backend.name(),
        vpn: f.vpn,
        tags: f.tags,
        default: f.default,
        required: f.required,
        notes: f.notes,
        default_values: f.default_values,
        config: f.config,
        created: t.created.to_string(),
        modified: t.modified.to_string(),
    }
}

text_field!(
    /// A template type.
    TypeField(TemplateType),
    |s: &str| TemplateType::parse(s).ok_or_else(|| format!("\"{s}\" is not a valid choice.")),
    choice_schema_strict(TemplateType::ALL.map(TemplateType::name)),
);

text_field!(
    /// A template type (filter).
    TypeFilter(TemplateType),
    |s: &str| TemplateType::parse(s).ok_or_else(|| invalid_choice(s)),
    choice_schema(TemplateType::ALL.map(TemplateType::name)),
);

fn choice_schema_strict<'a>(
    choices: impl IntoIterator<Item = &'a str>,
) -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(choices))
}

/// What a client sends to create, replace or change a template.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TemplateWrite {
    /// Unique per organization; a shared template's name is unique everywhere.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<64>>,
    /// Owning organization; `null` (shared) only for superusers.
    #[schema(required = true)]
    organization: Option<Option<Pk>>,
    /// `generic` (default) or `vpn`.
    #[serde(rename = "type")]
    #[schema(rename = "type", nullable = false)]
    kind: Option<TypeField>,
    /// Renderer.
    #[schema(required = true, nullable = false)]
    backend: Option<BackendField>,
    /// VPN server of a VPN-client template (VPNs arrive with PKI: none exists yet).
    vpn: Option<Option<Pk>>,
    /// Labels.
    #[schema(nullable = false)]
    tags: Option<Vec<Bounded<100>>>,
    /// Added to every new configuration of its organization (all, if shared).
    #[schema(nullable = false)]
    default: Option<bool>,
    /// Always part of every configuration; `true` also sets `default`.
    #[schema(nullable = false)]
    required: Option<bool>,
    /// Free text.
    #[schema(nullable = false)]
    notes: Option<String>,
    /// Values of the template's variables when nothing else sets them.
    #[schema(nullable = false)]
    default_values: Option<Map<String, Value>>,
    /// NetJSON configuration; may not be empty on a generic template.
    #[schema(nullable = false)]
    config: Option<Map<String, Value>>,
}

impl TemplateWrite {
    /// The template's fields after this write, over `current` or new; the organization must be
    /// one the caller manages, and only superusers may make a template shared.
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: Option<TemplateFields>,
    ) -> Result<TemplateFields, ApiError> {
        let mut errors = Map::new();
        let mut fields = current.unwrap_or(TemplateFields {
            name: String::new(),
            organization: None,
            kind: TemplateType::Generic,
            backend: ConfigBackend::OpenWrt,
            vpn: None,
            tags: Vec::new(),
            default: false,
            required: false,
            notes: String::new(),
            default_values: Map::new(),
            config: Map::new(),
        });
        match self.organization {
            None => {}
            Some(None) if !caller.is_superuser() => {
                errors.insert("organization".into(), json!([NOT_NULL]));
            }
            Some(None) => fields.organization = None,
            Some(Some(Pk(id))) => match caller.managed_org(state, id).await? {
                Some(org) => fields.organization = Some(org),
                None => {
                    errors.insert(
                        "organization".into(),
                        json!([does_not_exist(&id.to_string())]),
                    );
                }
            },
        }
        if let Some(v) = self.name {
            fields.name = v.0;
        }
        if let Some(v) = self.kind {
            fields.kind = v.0;
        }
        if let Some(v) = self.backend {
            fields.backend = v.0;
        }
        if let Some(v) = self.tags {
            fields.tags = v.into_iter().map(|t| t.0).collect();
        }
        if let Some(v) = self.default {
            fields.default = v;
        }
        if let Some(v) = self.required {
            fields.required = v;
        }
        if let Some(v) = self.notes {
            fields.notes = v;
        }
        if let Some(v) = self.default_values {
            fields.default_values = v;
        }
        if let Some(v) = self.config {
            fields.config = v;
        }
        if let Some(vpn) = self.vpn {
            fields.vpn = vpn.map(|Pk(id)| id);
        }
        match (fields.kind, fields.vpn) {
            (TemplateType::Generic, Some(_)) if self.vpn.is_some_and(|v| v.is_some()) => {
                errors.insert("vpn".into(), json!([VPN_ON_GENERIC]));
            }
            // A generic template carries no VPN (OpenWISP clears it).
            (TemplateType::Generic, Some(_)) => fields.vpn = None,
            (TemplateType::Generic, None) => {}
            (TemplateType::Vpn, Some(id)) => {
                match crate::routes::vpns::visible_vpn(state, caller, id).await {
                    Ok(vpn) => {
                        if vpn
                            .fields
                            .organization
                            .is_some_and(|org| fields.organization != Some(org))
                        {
                            errors.insert("vpn".into(), json!([VPN_ORG_MISMATCH]));
                        } else if fields.config.is_empty() {
                            // OpenWISP fills a VPN-client template from the server
                            // (netjsonconfig's auto_client, with per-device variables).
                            fields.config = fleetmq_store::vpn::client_template_config(&vpn);
                        }
                    }
                    Err(ApiError::NotFound) => {
                        errors.insert("vpn".into(), json!([does_not_exist(&id.to_string())]));
                    }
                    Err(e) => return Err(e),
                }
            }
            (TemplateType::Vpn, None) => {
                errors.insert("vpn".into(), json!([VPN_MISSING]));
            }
        }
        if fields.kind == TemplateType::Generic
            && fields.config.is_empty()
            && !errors.contains_key("config")
        {
            errors.insert("config".into(), json!([EMPTY_CONFIG]));
        }
        if !errors.contains_key("config")
            && let Err(invalid) = fleetmq_store::check_template(&fields)
        {
            errors.insert("config".into(), json!([invalid_netjson(&invalid)]));
        }
        if fields.required {
            fields.default = true;
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        if fields.name.is_empty() {
            return Err(ApiError::field("name", REQUIRED));
        }
        require_writable(caller, fields.organization)?;
        Ok(fields)
    }
}

/// Shared templates are read-only to non-superusers (403, as OpenWISP).
fn require_writable(caller: &Caller, org: Option<OrgId>) -> Result<(), ApiError> {
    caller.require_shared_write(org, crate::error::PERMISSION_DENIED)
}

/// Loads a template the caller may see (own organizations' or shared), or 404.
pub(crate) async fn visible_template(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Template, ApiError> {
    state
        .store()
        .run(move |db| db.template(TemplateId(id)))
        .await?
        .filter(|t| t.fields.organization.is_none_or(|org| caller.manages(org)))
        .ok_or(ApiError::NotFound)
}

/// Filters of the template list (django-filter's names).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateListQuery {
    /// Organization id: that organization's own templates (no shared ones).
    #[param(inline)]
    organization: Option<UuidFilter>,
    /// Organization slug: that organization's own templates (no shared ones).
    organization_slug: Option<String>,
    /// Renderer.
    #[param(inline)]
    backend: Option<BackendFilter>,
    /// Type.
    #[param(inline)]
    #[serde(rename = "type")]
    kind: Option<TypeFilter>,
    /// Enabled by default.
    #[param(inline)]
    default: Option<BoolFilter>,
    /// Required.
    #[param(inline)]
    required: Option<BoolFilter>,
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
}

/// Lists the templates of the caller's organizations and shared ones, newest first.
#[utoipa::path(get, path = "/api/v1/controller/template/", tag = "templates",
    params(PageQuery, TemplateListQuery),
    responses((status = 200, body = Paginated<TemplateView>)), security(("bearer" = [])))]
async fn list_templates(
    State(state): State<AppState>,
    auth: Authorized<Templates, View>,
    paging: Paging,
    Filters(query): Filters<TemplateListQuery>,
) -> Result<Json<Paginated<TemplateView>>, ApiError> {
    let own = narrowed_org(
        &state,
        &auth.caller,
        query.organization.map(|f| f.0),
        query.organization_slug,
    )
    .await?;
    let own = match own {
        Some(None) => return paging.empty(),
        Some(Some(org)) => Some(org),
        None => None,
    };
    let filter = TemplateFilter {
        backend: query.backend.map(|f| f.0),
        kind: query.kind.map(|f| f.0),
        default: query.default.map(|f| f.0),
        required: query.required.map(|f| f.0),
        created: query.created.map(|f| f.0),
        created_gte: query.created_gte.map(|f| f.0),
        created_lt: query.created_lt.map(|f| f.0),
    };
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_templates(&auth.scope, own, &filter, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a template. A default or required one joins the existing configurations of its
/// organization (every organization if shared) that use its backend.
#[utoipa::path(post, path = "/api/v1/controller/template/", tag = "templates",
    request_body = TemplateWrite, responses((status = 201, body = TemplateView)),
    security(("bearer" = [])))]
async fn create_template(
    State(state): State<AppState>,
    auth: Authorized<Templates, Add>,
    body: Body<TemplateWrite>,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let fields = body.read()?.apply(&state, &auth.caller, None).await?;
    let (template, _) = state
        .store()
        .run(move |db| db.create_template(fields))
        .await?;
    Ok((StatusCode::CREATED, Json(view(template))))
}

/// Shows a template.
#[utoipa::path(get, path = "/api/v1/controller/template/{id}/", tag = "templates",
    params(PathId), responses((status = 200, body = TemplateView)), security(("bearer" = [])))]
async fn get_template(
    State(state): State<AppState>,
    auth: Authorized<Templates, View>,
    PathId(id): PathId,
) -> Result<Json<TemplateView>, ApiError> {
    Ok(Json(view(
        visible_template(&state, &auth.caller, id).await?,
    )))
}

/// Downloads the configuration archive the template renders to alone, its variables taken
/// from its default_values.
#[utoipa::path(get, path = "/api/v1/controller/template/{id}/configuration/",
    tag = "templates", params(PathId),
    responses((status = 200, description = "The configuration archive (tar.gz)",
        content_type = "application/octet-stream")),
    security(("bearer" = [])))]
async fn download_template_configuration(
    State(state): State<AppState>,
    auth: Authorized<Templates, View>,
    PathId(id): PathId,
) -> Result<axum::response::Response, ApiError> {
    let template = visible_template(&state, &auth.caller, id).await?;
    let rendered = fleetmq_store::render_template(&template)
        .map_err(|e| ApiError::field("config", invalid_netjson(&e)))?;
    Ok(crate::archive::archive_response(
        &template.fields.name,
        rendered,
    ))
}

/// Replaces a template, or with PATCH changes some of its fields; the devices using it are
/// re-rendered.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/template/{id}/",
    tag = "templates", params(PathId), request_body = TemplateWrite,
    responses((status = 200, body = TemplateView)), security(("bearer" = [])))]
async fn change_template(
    State(state): State<AppState>,
    auth: Authorized<Templates, Change>,
    PathId(id): PathId,
    body: Body<TemplateWrite>,
) -> Result<Json<TemplateView>, ApiError> {
    let current = visible_template(&state, &auth.caller, id).await?;
    require_writable(&auth.caller, current.fields.organization)?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, Some(current.fields))
        .await?;
    let (template, _) = state
        .store()
        .run(move |db| db.update_template(TemplateId(id), fields))
        .await?;
    Ok(Json(view(template)))
}

/// Deletes a template; it leaves every device configuration and group using it.
#[utoipa::path(delete, path = "/api/v1/controller/template/{id}/", tag = "templates",
    params(PathId), responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
async fn delete_template(
    State(state): State<AppState>,
    auth: Authorized<Templates, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let current = visible_template(&state, &auth.caller, id).await?;
    require_writable(&auth.caller, current.fields.organization)?;
    state
        .store()
        .run(move |db| db.delete_template(TemplateId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
