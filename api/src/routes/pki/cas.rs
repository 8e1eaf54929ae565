//! `/api/v1/controller/ca/`: certificate authorities, their renewal and their CRL.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use fleetmq_store::{Ca, CaId};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{X509Change, X509View, X509Write, int_id, x509_view};
use crate::auth::{self, Add, Authorized, Caller, Change, Delete, View};
use crate::body::Body;
use crate::error::PERMISSION_DENIED;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// The CA routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_cas, create_ca))
        .routes(routes!(get_ca, change_ca, delete_ca))
        .routes(routes!(renew_ca))
        .routes(routes!(ca_crl))
}

/// A CA as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaView {
    /// Identity (an integer, as in OpenWISP).
    pub id: u64,
    /// Subject, parameters and PEM material.
    #[serde(flatten)]
    pub x509: X509View,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub modified: String,
}

pub(crate) fn view(ca: Ca) -> CaView {
    CaView {
        id: ca.id.0,
        x509: x509_view(ca.fields, ca.material),
        created: ca.created.to_string(),
        modified: ca.modified.to_string(),
    }
}

/// The CA `raw` names if the caller may see it (its organization's, or shared); else not
/// found.
pub(crate) async fn visible_ca(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<Ca, ApiError> {
    let id = CaId(int_id(raw)?);
    state
        .store()
        .run(move |db| db.ca(id))
        .await?
        .filter(|ca| ca.fields.organization.is_none_or(|org| caller.manages(org)))
        .ok_or(ApiError::NotFound)
}

/// Lists the CAs of the caller's organizations and shared ones, newest first.
#[utoipa::path(get, path = "/api/v1/controller/ca/", tag = "pki", params(PageQuery),
    responses((status = 200, body = Paginated<CaView>)), security(("bearer" = [])))]
async fn list_cas(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, View>,
    paging: Paging,
) -> Result<Json<Paginated<CaView>>, ApiError> {
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_cas(&auth.scope, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a CA: generates its key and self-signed certificate, or imports `certificate` +
/// `private_key`. Shared CAs (no organization) only superusers create.
#[utoipa::path(post, path = "/api/v1/controller/ca/", tag = "pki", request_body = X509Write,
    responses((status = 201, body = CaView)), security(("bearer" = [])))]
async fn create_ca(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, Add>,
    body: Body<X509Write>,
) -> Result<(StatusCode, Json<CaView>), ApiError> {
    let draft = body.read()?.draft(&state, &auth.caller, true).await?;
    let created = state.store().run(move |db| db.create_ca(draft)).await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// Shows a CA.
#[utoipa::path(get, path = "/api/v1/controller/ca/{id}/", tag = "pki",
    params(("id" = u64, Path, description = "CA id")),
    responses((status = 200, body = CaView)), security(("bearer" = [])))]
async fn get_ca(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, View>,
    Path(id): Path<String>,
) -> Result<Json<CaView>, ApiError> {
    Ok(Json(view(visible_ca(&state, &auth.caller, &id).await?)))
}

/// Changes a CA's name, organization or notes (the rest is its certificate's and read-only).
#[utoipa::path(method(put, patch), path = "/api/v1/controller/ca/{id}/", tag = "pki",
    params(("id" = u64, Path, description = "CA id")), request_body = X509Change,
    responses((status = 200, body = CaView),
        (status = 403, description = "No permission, or the CA is shared (only superusers change those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn change_ca(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, Change>,
    Path(id): Path<String>,
    body: Body<X509Change>,
) -> Result<Json<CaView>, ApiError> {
    let current = visible_ca(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let relabel = body
        .read()?
        .apply(&state, &auth.caller, &current.fields)
        .await?;
    let id = current.id;
    let updated = state
        .store()
        .run(move |db| db.relabel_ca(id, relabel))
        .await?;
    Ok(Json(view(updated)))
}

/// Deletes a CA with the certificates it signed.
#[utoipa::path(delete, path = "/api/v1/controller/ca/{id}/", tag = "pki",
    params(("id" = u64, Path, description = "CA id")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "No permission, or the CA is shared (only superusers delete those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_ca(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, Delete>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let current = visible_ca(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let id = current.id;
    state.store().run(move |db| db.delete_ca(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renews a CA: a new key, serial number and validity, and every certificate it signed is
/// renewed with it (their old serials are revoked).
#[utoipa::path(post, path = "/api/v1/controller/ca/{id}/renew/", tag = "pki",
    params(("id" = u64, Path, description = "CA id")),
    responses((status = 200, body = CaView),
        (status = 403, description = "No permission, or the CA is shared (only superusers renew those)", body = ErrorDetail)),
    security(("bearer" = [])))]
async fn renew_ca(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, Change>,
    Path(id): Path<String>,
) -> Result<Json<CaView>, ApiError> {
    let current = visible_ca(&state, &auth.caller, &id).await?;
    auth.caller
        .require_shared_write(current.fields.organization, PERMISSION_DENIED)?;
    let id = current.id;
    let renewed = state.store().run(move |db| db.renew_ca(id)).await?;
    Ok(Json(view(renewed)))
}

/// `/api/v1/controller/ca/{id}/crl` without the trailing slash, where openwisp-controller
/// really serves the CRL (its docs show the slash): the same handler, not documented twice.
pub fn crl_alias_router() -> axum::Router<AppState> {
    axum::Router::new().route("/api/v1/controller/ca/{id}/crl", axum::routing::get(ca_crl))
}

/// The CA's certificate revocation list (PEM, `{id}.crl`), regenerated on every revocation.
#[utoipa::path(get, path = "/api/v1/controller/ca/{id}/crl/", tag = "pki",
    params(("id" = u64, Path, description = "CA id")),
    responses((status = 200, description = "The CRL", content_type = "application/x-pem-file", body = String)),
    security(("bearer" = [])))]
async fn ca_crl(
    State(state): State<AppState>,
    auth: Authorized<auth::Cas, View>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ca = visible_ca(&state, &auth.caller, &id).await?;
    let id = ca.id;
    let crl = state
        .store()
        .run(move |db| db.ca_crl(id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((
        [
            (CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.crl\"", ca.id),
            ),
        ],
        crl,
    )
        .into_response())
}
