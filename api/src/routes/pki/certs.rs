//! `/api/v1/controller/cert/`: certificates signed by a CA, their renewal and revocation; and
//! `/api/v1/controller/device/{id}/certificate/`, which gives a device a certificate it logs
//! in with over MQTT.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleetmq_store::{CaId, Cert, CertId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cas::visible_ca;
use super::{X509Change, X509View, X509Write, int_id, x509_view};
use crate::auth::{self, Add, Authorized, Caller, Change, Delete, View};
use crate::body::{Body, does_not_exist};
use crate::error::PERMISSION_DENIED;
use crate::extract::PathId;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// The certificate routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_certs, create_cert))
        .routes(routes!(get_cert, change_cert, delete_cert))
        .routes(routes!(renew_cert))
        .routes(routes!(revoke_cert))
        .routes(routes!(issue_device_certificate))
}

/// A certificate as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertView {
    /// Identity (an integer, as in OpenWISP).
    pub id: u64,
    /// The CA that signed it.
    pub ca: u64,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When.
    pub revoked_at: Option<String>,
    /// Subject, parameters and PEM material.
    #[serde(flatten)]
    pub x509: X509View,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

fn view(cert: Cert) -> CertView {
    CertView {
        id: cert.id.0,
        ca: cert.ca.0,
        revoked: cert.revoked,
        revoked_at: cert.revoked_at.map(|t| t.to_string()),
        x509: x509_view(cert.fields, cert.material),
        created: cert.created.to_string(),
        modified: cert.modified.to_string(),
    }
}

/// The certificate `raw` names if the caller may see it; else not found.
async fn visible_cert(state: &AppState, caller: &Caller, raw: &str) -> Result<Cert, ApiError> {
    let id = CertId(int_id(raw)?);
    state
        .store()
        .run(move |db| db.cert(id))
        .await?
        .filter(|c| c.fields.organization.is_none_or(|org| caller.manages(org)))
        .ok_or(ApiError::NotFound)
}

/// Reads a `ca` reference: an integer (or its decimal string) naming a CA the caller sees.
async fn signing_ca(
    state: &AppState,
    caller: &Caller,
    given: Option<Value>,
) -> Result<CaId, ApiError> {
    let raw = match given {
        None => return Err(ApiError::field("ca", crate::body::REQUIRED)),
        Some(Value::Null) => return Err(ApiError::field("ca", crate::body::NOT_NULL)),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::field(
                "ca",
                format!(
                    "Incorrect type. Expected pk value, received {}.",
                    crate::extract::kind(&other)
                ),
            ));
        }
    };
    match visible_ca(state, caller, &raw).await {
        Ok(ca) => Ok(ca.id),
        Err(ApiError::NotFound) => Err(ApiError::field("ca", does_not_exist(&raw))),
        Err(e) => Err(e),
    }
}

/// Lists the certificates of the caller's organizations and shared ones, newest first.
#[utoipa::path(get, path = "/api/v1/controller/cert/", tag = "pki", params(PageQuery),
    responses((status = 200, body = Paginated<CertView>)), security(("bearer" = [])))]
async fn list_certs(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, View>,
    paging: Paging,
) -> Result<Json<Paginated<CertView>>, ApiError> {
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_certs(&auth.scope, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a certificate signed by `ca`, or imports `certificate` + `private_key` (which
/// `ca` must have signed). Its organization must be the CA's unless the CA is shared.
#[utoipa::path(post, path = "/api/v1/controller/cert/", tag = "pki", request_body = X509Write,
    responses((status = 201, body = CertView)), security(("bearer" = [])))]
async fn create_cert(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, Add>,
    body: Body<X509Write>,
) -> Result<(StatusCode, Json<CertView>), ApiError> {
    let mut write = body.read()?;
    let ca = signing_ca(&state, &auth.caller, write.ca.take()).await?;
    let draft = write.draft(&state, &auth.caller, false).await?;
    let created = state
        .store()
        .run(move |db| db.create_cert(ca, draft))
        .await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows a certificate.
#[utoipa::path(get, path = "/api/v1/controller/cert/{id}/", tag = "pki",
    params(("id" = u64, Path, description = "Certificate id")),
    responses((status = 200, body = CertView)), security(("bearer" = [])))]
async fn get_cert(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, View>,
    Path(id): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    Ok(Json(view(visible_cert(&state, &auth.caller, &id).await?)))
}

/// Changes a certificate's name, organization or notes (the rest is read-only).
#[utoipa::path(method(put, patch), path = "/api/v1/controller/cert/{id}/", tag = "pki",
    params(("id" = u64, Path, description = "Certificate id")), request_body = X509Change,
    responses((status = 200, body = CertView),
        (status = 403, description = "No permission, or the certificate is shared (only superusers change those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn change_cert(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, Change>,
    Path(id): Path<String>,
    body: Body<X509Change>,
) -> Result<Json<CertView>, ApiError> {
    let current = visible_cert(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let relabel = body
        .read()?
        .apply(&state, &auth.caller, &current.fields)
        .await?;
    let id = current.id;
    let updated = state
        .store()
        .run(move |db| db.relabel_cert(id, relabel))
        .await?;
    Ok(Json(view(updated)))
}

/// Deletes a certificate; its serial is revoked (it stops logging in).
#[utoipa::path(delete, path = "/api/v1/controller/cert/{id}/", tag = "pki",
    params(("id" = u64, Path, description = "Certificate id")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "No permission, or the certificate is shared (only superusers delete those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_cert(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, Delete>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let current = visible_cert(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let id = current.id;
    state.store().run(move |db| db.delete_cert(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renews a certificate: a new key, serial number and validity; the old serial is revoked.
#[utoipa::path(post, path = "/api/v1/controller/cert/{id}/renew/", tag = "pki",
    params(("id" = u64, Path, description = "Certificate id")),
    responses((status = 200, body = CertView),
        (status = 403, description = "No permission, or the certificate is shared", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn renew_cert(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, Change>,
    Path(id): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    let current = visible_cert(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let id = current.id;
    let renewed = state.store().run(move |db| db.renew_cert(id)).await?;
    Ok(Json(view(renewed)))
}

/// Revokes a certificate: its CA's CRL lists it from now on, and a device logged in with it
/// is disconnected.
#[utoipa::path(post, path = "/api/v1/controller/cert/{id}/revoke/", tag = "pki",
    params(("id" = u64, Path, description = "Certificate id")),
    responses((status = 200, body = CertView),
        (status = 403, description = "No permission, or the certificate is shared", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn revoke_cert(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, Change>,
    Path(id): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    let current = visible_cert(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let id = current.id;
    let revoked = state.store().run(move |db| db.revoke_cert(id)).await?;
    Ok(Json(view(revoked)))
}

/// What a client may send to issue a device certificate.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceCertificateWrite {
    /// The signing CA, one of the device's organization; default: its oldest CA (created,
    /// RSA 2048, when the organization has none).
    #[schema(value_type = Option<u64>)]
    ca: Option<Value>,
}

/// Issues the device a certificate whose common name is its id: presented to the MQTT TLS
/// listener, it logs the device in without its key. The answer carries the private key; keep
/// it, the device needs it.
#[utoipa::path(post, path = "/api/v1/controller/device/{id}/certificate/", tag = "pki",
    params(PathId), request_body = DeviceCertificateWrite,
    responses((status = 201, body = CertView)), security(("bearer" = [])))]
async fn issue_device_certificate(
    State(state): State<AppState>,
    auth: Authorized<auth::Certs, Add>,
    PathId(id): PathId,
    body: Body<DeviceCertificateWrite>,
) -> Result<(StatusCode, Json<CertView>), ApiError> {
    let device = crate::routes::devices::visible_device(&state, &auth.caller, id).await?;
    let write = body.read()?;
    let ca = match write.ca {
        None | Some(Value::Null) => None,
        given => Some(signing_ca(&state, &auth.caller, given).await?),
    };
    let device = device.id;
    let cert = state
        .store()
        .run(move |db| db.issue_device_certificate(device, ca))
        .await?;
    Ok((StatusCode::CREATED, Json(view(cert))))
}
