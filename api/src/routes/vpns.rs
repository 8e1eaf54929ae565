//! `/api/v1/controller/vpn/`: VPN servers (OpenVPN, WireGuard, VXLAN over WireGuard), with the
//! seed's filters and the server's configuration download (`{id}/configuration/`, tar.gz).

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use fleetmq_store::vpn::VpnBackend;
use fleetmq_store::{CertId, Vpn, VpnFields, VpnFilter, VpnId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Add, Authorized, Caller, Change, Delete, View};
use crate::body::{Body, Bounded, NonBlank, NullablePk, does_not_exist, text_field};
use crate::error::PERMISSION_DENIED;
use crate::extract::PathId;
use crate::filters::narrowed_org;
use crate::filters::{Filters, UuidFilter, choice_schema};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// The VPN routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_vpns, create_vpn))
        .routes(routes!(get_vpn, change_vpn, delete_vpn))
        .routes(routes!(download_vpn_configuration))
}

const BACKENDS: [&str; 3] = [
    "openwisp_controller.vpn_backends.OpenVpn",
    "openwisp_controller.vpn_backends.Wireguard",
    "openwisp_controller.vpn_backends.VxlanWireguard",
];

text_field!(
    /// OpenWISP's VPN backend names.
    VpnBackendField(VpnBackend),
    |s: &str| VpnBackend::parse(s).map_err(|e| e.to_string()),
    choice_schema(BACKENDS),
);

text_field!(
    /// A subnet in CIDR notation.
    SubnetField(String),
    |s: &str| {
        let ok = s.split_once('/').is_some_and(|(ip, prefix)| {
            ip.parse::<IpAddr>().is_ok() && prefix.parse::<u8>().is_ok()
        });
        if ok {
            Ok(s.to_owned())
        } else {
            Err("Enter a valid subnet in CIDR notation (e.g. 10.0.0.0/24).".to_owned())
        }
    },
    ObjectBuilder::new().schema_type(Type::String),
);

text_field!(
    /// An IPv4 or IPv6 address.
    IpField(IpAddr),
    |s: &str| s
        .parse::<IpAddr>()
        .map_err(|_| "Enter a valid IPv4 or IPv6 address.".to_owned()),
    ObjectBuilder::new().schema_type(Type::String),
);

/// A VPN server as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VpnView {
    /// Identity.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Host name or address devices connect to.
    pub host: String,
    /// Owning organization; `null` = shared.
    pub organization: Option<Uuid>,
    /// A random key.
    pub key: String,
    /// CA (OpenVPN).
    pub ca: Option<u64>,
    /// Server certificate (OpenVPN; issued by `ca` when not given).
    pub cert: Option<u64>,
    /// `openwisp_controller.vpn_backends.OpenVpn`, `...Wireguard` or `...VxlanWireguard`.
    pub backend: &'static str,
    /// Free text.
    pub notes: String,
    /// Diffie-Hellman parameters (OpenVPN).
    pub dh: String,
    /// The server's NetJSON configuration.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    /// Tunnel subnet (WireGuard), CIDR.
    pub subnet: Option<String>,
    /// The server's tunnel address (WireGuard).
    pub ip: Option<String>,
    /// The server's WireGuard public key.
    pub public_key: String,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

fn view(vpn: Vpn) -> VpnView {
    VpnView {
        id: vpn.id.0,
        name: vpn.fields.name,
        host: vpn.fields.host,
        organization: vpn.fields.organization.map(|o| o.0),
        key: vpn.key,
        ca: vpn.fields.ca.map(|c| c.0),
        cert: vpn.fields.cert.map(|c| c.0),
        backend: vpn.fields.backend.as_str(),
        notes: vpn.fields.notes,
        dh: vpn.fields.dh,
        config: vpn.fields.config,
        subnet: vpn.fields.subnet,
        ip: vpn.fields.ip.map(|ip| ip.to_string()),
        public_key: vpn.public_key,
        created: vpn.created.to_string(),
        modified: vpn.modified.to_string(),
    }
}

/// What a client sends to create, replace or change a VPN server.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VpnWrite {
    /// Display name, unique per organization.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<64>>,
    /// Host name or address devices connect to.
    #[schema(required = true, nullable = false)]
    host: Option<NonBlank<64>>,
    /// Owning organization; `null` (superusers only) = shared.
    #[schema(required = true, nullable = false)]
    organization: Option<NullablePk>,
    /// The backend.
    #[schema(required = true, nullable = false)]
    backend: Option<VpnBackendField>,
    /// CA (required by OpenVPN).
    #[schema(value_type = Option<u64>)]
    ca: Option<Value>,
    /// Server certificate (OpenVPN); issued by `ca` when left out.
    #[schema(value_type = Option<u64>)]
    cert: Option<Value>,
    /// Tunnel subnet (required by WireGuard), CIDR.
    subnet: Option<Option<SubnetField>>,
    /// The server's tunnel address; default the lowest free one of the subnet.
    ip: Option<Option<IpField>>,
    /// Diffie-Hellman parameters (PEM); default RFC 7919's ffdhe2048.
    #[schema(nullable = false)]
    dh: Option<String>,
    /// The server's NetJSON configuration.
    #[schema(required = true, nullable = false, value_type = Option<Object>)]
    config: Option<Map<String, Value>>,
    /// Free text.
    #[schema(nullable = false)]
    notes: Option<Bounded<10000>>,
}

/// An integer reference to a CA or certificate the caller sees (`Ok(None)` for null/blank).
fn int_ref(field: &'static str, given: Value) -> Result<Option<u64>, ApiError> {
    match given {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::Number(n) if n.is_u64() => Ok(n.as_u64()),
        Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::field(field, does_not_exist(&s))),
        other => Err(ApiError::field(
            field,
            format!(
                "Incorrect type. Expected pk value, received {}.",
                crate::extract::kind(&other)
            ),
        )),
    }
}

impl VpnWrite {
    async fn apply(
        self,
        state: &AppState,
        caller: &Caller,
        current: Option<VpnFields>,
    ) -> Result<VpnFields, ApiError> {
        let mut fields = current.unwrap_or(VpnFields {
            name: String::new(),
            host: String::new(),
            organization: None,
            backend: VpnBackend::OpenVpn,
            ca: None,
            cert: None,
            subnet: None,
            ip: None,
            dh: String::new(),
            config: Map::new(),
            notes: String::new(),
        });
        fields.organization = caller
            .owner(state, self.organization, fields.organization)
            .await?;
        if let Some(v) = self.name {
            fields.name = v.0;
        }
        if let Some(v) = self.host {
            fields.host = v.0;
        }
        if let Some(v) = self.backend {
            fields.backend = v.0;
        }
        if let Some(v) = self.ca {
            fields.ca = match int_ref("ca", v)? {
                None => None,
                Some(id) => {
                    match crate::routes::pki::cas::visible_ca(state, caller, &id.to_string()).await
                    {
                        Ok(ca) => Some(ca.id),
                        Err(ApiError::NotFound) => {
                            return Err(ApiError::field("ca", does_not_exist(&id.to_string())));
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
        }
        if let Some(v) = self.cert {
            fields.cert = match int_ref("cert", v)? {
                None => None,
                Some(id) => {
                    let cert = state
                        .store()
                        .run(move |db| db.cert(CertId(id)))
                        .await?
                        .filter(|c| c.fields.organization.is_none_or(|o| caller.manages(o)))
                        .ok_or_else(|| ApiError::field("cert", does_not_exist(&id.to_string())))?;
                    Some(cert.id)
                }
            };
        }
        if let Some(v) = self.subnet {
            fields.subnet = v.map(|s| s.0);
        }
        if let Some(v) = self.ip {
            fields.ip = v.map(|ip| ip.0);
        }
        if let Some(v) = self.dh {
            fields.dh = v;
        }
        if let Some(v) = self.config {
            fields.config = v;
        }
        if let Some(v) = self.notes {
            fields.notes = v.0;
        }
        Ok(fields)
    }
}

/// The VPN server `id` if the caller may see it (its organization's, or shared).
pub(crate) async fn visible_vpn(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Vpn, ApiError> {
    state
        .store()
        .run(move |db| db.vpn(VpnId(id)))
        .await?
        .filter(|v| v.fields.organization.is_none_or(|org| caller.manages(org)))
        .ok_or(ApiError::NotFound)
}

/// Filters of the VPN list (the seed's).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VpnListQuery {
    /// Backend (`openwisp_controller.vpn_backends.OpenVpn`, `...Wireguard`, `...VxlanWireguard`).
    backend: Option<String>,
    /// Subnet (CIDR, as the server has it).
    subnet: Option<String>,
    /// Organization id: that organization's own servers.
    #[param(inline)]
    organization: Option<UuidFilter>,
    /// Organization slug: that organization's own servers.
    organization_slug: Option<String>,
}

/// Lists the VPN servers of the caller's organizations and shared ones, newest first.
#[utoipa::path(get, path = "/api/v1/controller/vpn/", tag = "vpn",
    params(PageQuery, VpnListQuery),
    responses((status = 200, body = Paginated<VpnView>)), security(("bearer" = [])))]
async fn list_vpns(
    State(state): State<AppState>,
    auth: Authorized<auth::Vpns, View>,
    paging: Paging,
    Filters(query): Filters<VpnListQuery>,
) -> Result<Json<Paginated<VpnView>>, ApiError> {
    let own = narrowed_org(
        &state,
        &auth.caller,
        query.organization.map(|f| f.0),
        query.organization_slug,
    )
    .await?;
    let backend = match query.backend.as_deref() {
        None | Some("") => None,
        Some(name) => {
            Some(VpnBackend::parse(name).map_err(|e| ApiError::field("backend", e.to_string()))?)
        }
    };
    let filter = VpnFilter {
        backend,
        subnet: query.subnet.filter(|s| !s.is_empty()),
        organization: own,
    };
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_vpns(&auth.scope, &filter, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a VPN server. OpenVPN needs `ca` (a server certificate is issued when `cert` is
/// left out); WireGuard needs `subnet` (the server takes its lowest free address and a key pair).
#[utoipa::path(post, path = "/api/v1/controller/vpn/", tag = "vpn", request_body = VpnWrite,
    responses((status = 201, body = VpnView)), security(("bearer" = [])))]
async fn create_vpn(
    State(state): State<AppState>,
    auth: Authorized<auth::Vpns, Add>,
    body: Body<VpnWrite>,
) -> Result<(StatusCode, Json<VpnView>), ApiError> {
    let fields = body.read()?.apply(&state, &auth.caller, None).await?;
    auth.caller
        .require_shared_write(fields.organization, PERMISSION_DENIED)?;
    let created = state.store().run(move |db| db.create_vpn(fields)).await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows a VPN server.
#[utoipa::path(get, path = "/api/v1/controller/vpn/{id}/", tag = "vpn", params(PathId),
    responses((status = 200, body = VpnView)), security(("bearer" = [])))]
async fn get_vpn(
    State(state): State<AppState>,
    auth: Authorized<auth::Vpns, View>,
    PathId(id): PathId,
) -> Result<Json<VpnView>, ApiError> {
    Ok(Json(view(visible_vpn(&state, &auth.caller, id).await?)))
}

/// Replaces a VPN server, or with PATCH changes some of its fields; its clients' devices
/// render again.
#[utoipa::path(method(put, patch), path = "/api/v1/controller/vpn/{id}/", tag = "vpn",
    params(PathId), request_body = VpnWrite,
    responses((status = 200, body = VpnView),
        (status = 403, description = "No permission, or the VPN is shared (only superusers change those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn change_vpn(
    State(state): State<AppState>,
    auth: Authorized<auth::Vpns, Change>,
    PathId(id): PathId,
    body: Body<VpnWrite>,
) -> Result<Json<VpnView>, ApiError> {
    let current = visible_vpn(&state, &auth.caller, id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let fields = body
        .read()?
        .apply(&state, &auth.caller, Some(current.fields))
        .await?;
    auth.caller
        .require_shared_write(fields.organization, PERMISSION_DENIED)?;
    let (updated, _) = state
        .store()
        .run(move |db| db.update_vpn(VpnId(id), fields))
        .await?;
    Ok(Json(view(updated)))
}

/// Deletes a VPN server with its VPN-client templates; its clients' certificates are revoked
/// and their addresses freed.
#[utoipa::path(delete, path = "/api/v1/controller/vpn/{id}/", tag = "vpn", params(PathId),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "No permission, or the VPN is shared (only superusers delete those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_vpn(
    State(state): State<AppState>,
    auth: Authorized<auth::Vpns, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let current = visible_vpn(&state, &auth.caller, id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    state
        .store()
        .run(move |db| db.delete_vpn(VpnId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The VPN server's configuration as a tar.gz (one `.conf` per tunnel, its PEM files or
/// peers), as netjsonconfig renders it.
#[utoipa::path(get, path = "/api/v1/controller/vpn/{id}/configuration/", tag = "vpn",
    params(PathId),
    responses((status = 200, description = "The configuration archive (tar.gz)",
        content_type = "application/octet-stream")),
    security(("bearer" = [])))]
async fn download_vpn_configuration(
    State(state): State<AppState>,
    auth: Authorized<auth::Vpns, View>,
    PathId(id): PathId,
) -> Result<axum::response::Response, ApiError> {
    let vpn = visible_vpn(&state, &auth.caller, id).await?;
    let rendered = state
        .store()
        .run(move |db| db.vpn_configuration(VpnId(id)))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(crate::archive::archive_response(&vpn.fields.name, rendered))
}
