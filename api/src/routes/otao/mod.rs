//! The OTAO API (seed `otao-api-v1`): application software, endpoints' software and
//! fleetmq's extensions (applications' settings, endpoint filters), under `/api/v1/`.
//!
//! Unlike the OpenWISP routes, every error here is `{"message": "..."}` ([`OtaoError`]), as
//! the seed specifies — malformed, mistyped, unknown or oversized bodies included. Callers are
//! an OAuth client's access token (its organization, its scopes) or a user's API token (the
//! organizations they manage; Operators read, Administrators write): [`OtaoCaller`].
//!
//! # Layout
//! - `software` — `/applications/{appName}/software[/{version}]`.
//! - `applications` — `/applications/{appName}` (settings: consent).
//! - `endpoints` — `/endpoints/{endpointId}/software...`.
//! - `filters` — `/filters[/{filterId}[/endpoints]]`.

pub mod applications;
pub mod endpoints;
pub mod filters;
pub mod software;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetmq_store::{
    AccessGrant, Action, Device, DeviceId, OAuthScope, OrgId, Resource, Scope, StoreError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{Caller, authenticate};
use crate::extract::{CappedBody, QueryPairs};
use crate::pagination::Paging;
use crate::{ApiError, AppState};

/// Every OTAO route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(software::router())
        .merge(applications::router())
        .merge(endpoints::router())
        .merge(filters::router())
}

/// The body of every OTAO error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtaoMessage {
    /// Detailed error description.
    pub message: String,
}

/// An OTAO error answer: a status and `{"message": ...}`.
#[derive(Debug)]
pub struct OtaoError {
    status: StatusCode,
    message: String,
    /// What a 5xx hides from the client, for the logging middleware.
    internal: Option<String>,
}

impl OtaoError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            internal: None,
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            internal: None,
        }
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
            internal: None,
        }
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for OtaoError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(OtaoMessage {
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"api\""),
            );
        }
        if let Some(reason) = self.internal {
            response
                .extensions_mut()
                .insert(crate::error::InternalError(reason));
        }
        response
    }
}

impl From<ApiError> for OtaoError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let message = match &e {
            ApiError::NotAuthenticated => "Authentication credentials were not provided.".into(),
            ApiError::InvalidToken(m) => (*m).to_owned(),
            ApiError::NotFound => "Not found.".into(),
            ApiError::InvalidPage => "Invalid page.".into(),
            ApiError::PayloadTooLarge(limit) => {
                format!("Request body is too large (the limit is {limit} bytes).")
            }
            ApiError::UnsupportedMediaType(ct) => {
                format!("Unsupported media type \"{ct}\" in request; send application/json.")
            }
            ApiError::BadRequest(m) | ApiError::Forbidden(m) | ApiError::Conflict(m) => m.clone(),
            ApiError::Validation(map) => map
                .iter()
                .map(|(field, messages)| format!("{field}: {messages}"))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::Internal(reason) => {
                return OtaoError {
                    status,
                    message: "A server error occurred.".into(),
                    internal: Some(reason.clone()),
                };
            }
            _ => "The request could not be served.".into(),
        };
        OtaoError {
            status,
            message,
            internal: None,
        }
    }
}

impl From<StoreError> for OtaoError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => OtaoError::not_found("Not found."),
            StoreError::Unique(fleetmq_store::Unique::SoftwareVersion) => {
                OtaoError::bad_request("This version of the application already exists.")
            }
            StoreError::Rule { field, message } => {
                OtaoError::bad_request(format!("{field}: {message}"))
            }
            StoreError::InUse => OtaoError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                internal: None,
            },
            other => ApiError::from(other).into(),
        }
    }
}

/// Who calls an OTAO route.
#[derive(Debug, Clone)]
pub enum OtaoCaller {
    /// An OAuth client's access token.
    Client(AccessGrant),
    /// A user's API token.
    User(Caller),
}

impl FromRequestParts<AppState> for OtaoCaller {
    type Rejection = OtaoError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate_otao(&parts.method, &parts.headers, state).await
    }
}

/// Tells an OAuth access token from a user's API token by looking it up in both stores (both
/// are `Authorization: Bearer`). Access tokens are looked up on every request, so deleting a
/// client or its organization revokes them at once.
async fn authenticate_otao(
    method: &Method,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<OtaoCaller, OtaoError> {
    match authenticate(method, headers, state).await {
        Ok(caller) => Ok(OtaoCaller::User(caller)),
        Err(ApiError::InvalidToken("Invalid token.")) => {
            let token = bearer(headers).unwrap_or_default();
            let grant = state.store().run(move |db| db.access_grant(&token)).await?;
            grant
                .map(OtaoCaller::Client)
                .ok_or_else(|| OtaoError::from(ApiError::InvalidToken("Invalid token.")))
        }
        Err(other) => Err(other.into()),
    }
}

/// The bearer token of a well-formed header (what [`authenticate`] already checked).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header.split_whitespace().nth(1).map(str::to_owned)
}

impl OtaoCaller {
    /// Refuses (403) a caller who may not do this: a client without `scope`, a user whose
    /// groups do not permit `action` on software.
    pub fn require(&self, scope: OAuthScope, action: Action) -> Result<(), OtaoError> {
        match self {
            OtaoCaller::Client(grant) if grant.allows(scope) => Ok(()),
            OtaoCaller::Client(_) => Err(OtaoError::forbidden(format!(
                "The access token lacks the scope \"{scope}\"."
            ))),
            OtaoCaller::User(caller) => {
                let user = &caller.user;
                let permitted = user.has_perm(Resource::Software, action)
                    || (action == Action::View
                        && user.has_perm(Resource::Software, Action::Change));
                if permitted {
                    Ok(())
                } else {
                    Err(OtaoError::forbidden(
                        "You do not have permission to perform this action.",
                    ))
                }
            }
        }
    }

    /// The organizations whose objects the caller may see (403 for a user managing none).
    pub fn scope(&self) -> Result<Scope, OtaoError> {
        match self {
            OtaoCaller::Client(grant) => Ok(Scope::Orgs(vec![grant.organization])),
            OtaoCaller::User(caller) => Ok(caller.scope()?),
        }
    }

    /// The one organization the caller writes to when it names none: a client's, or the one
    /// organization a user manages.
    pub fn only_org(&self) -> Option<OrgId> {
        match self {
            OtaoCaller::Client(grant) => Some(grant.organization),
            OtaoCaller::User(caller) => match caller.user.managed_orgs().as_slice() {
                [only] => Some(*only),
                _ => None,
            },
        }
    }

    /// Checks the caller may do `action` (scope for clients) and returns its scope.
    pub fn allowed(&self, scope: OAuthScope, action: Action) -> Result<Scope, OtaoError> {
        self.require(scope, action)?;
        self.scope()
    }
}

/// The `?organization=` a user with several organizations names (a uuid, else 400).
pub fn organization_param(query: &QueryPairs) -> Result<Option<OrgId>, OtaoError> {
    match query.get("organization") {
        None => Ok(None),
        Some(text) => uuid::Uuid::parse_str(text)
            .map(|id| Some(OrgId(id)))
            .map_err(|_| OtaoError::bad_request("organization: must be a UUID.")),
    }
}

/// The organization whose application `app` the request means: a client's own; for a user,
/// the one organization in scope having it (several: `?organization=` chooses).
pub async fn application_org(
    state: &AppState,
    caller: &OtaoCaller,
    scope: &Scope,
    app: &str,
    query: &QueryPairs,
) -> Result<OrgId, OtaoError> {
    let not_found = || OtaoError::not_found(format!("Application \"{app}\" not found."));
    if let OtaoCaller::Client(grant) = caller {
        return Ok(grant.organization);
    }
    let wanted = organization_param(query)?;
    let owned = app.to_owned();
    let scope = scope.clone();
    let orgs = state
        .store()
        .run(move |db| db.application_organizations(&scope, &owned))
        .await?;
    match (wanted, orgs.as_slice()) {
        (Some(org), orgs) if orgs.contains(&org) => Ok(org),
        (Some(_), _) | (None, []) => Err(not_found()),
        (None, [only]) => Ok(*only),
        (None, _) => Err(OtaoError::bad_request(format!(
            "Several organizations have an application \"{app}\": choose one with ?organization=<uuid>."
        ))),
    }
}

/// The organization a write that may create something (a first version, an application's
/// settings, a filter) goes to: the application's if it exists; else `?organization=` (one the
/// caller manages) or the caller's only organization.
pub async fn writable_org(
    state: &AppState,
    caller: &OtaoCaller,
    scope: &Scope,
    app: Option<&str>,
    query: &QueryPairs,
) -> Result<OrgId, OtaoError> {
    if let Some(app) = app {
        match application_org(state, caller, scope, app, query).await {
            Ok(org) => return Ok(org),
            Err(e) if e.status() == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(org) = organization_param(query)? {
        return if scope.contains(org) && organization_exists(state, org).await? {
            Ok(org)
        } else {
            Err(OtaoError::not_found("Organization not found."))
        };
    }
    caller.only_org().ok_or_else(|| {
        OtaoError::bad_request(
            "The caller has several organizations: choose one with ?organization=<uuid>.",
        )
    })
}

pub async fn organization_exists(state: &AppState, org: OrgId) -> Result<bool, OtaoError> {
    Ok(state
        .store()
        .run(move |db| db.organization(org))
        .await?
        .is_some())
}

/// The device `id` names if the caller may see it; another organization's is not found.
pub async fn visible_endpoint(
    state: &AppState,
    scope: &Scope,
    id: &str,
) -> Result<Device, OtaoError> {
    let not_found = || OtaoError::not_found(format!("Endpoint \"{id}\" not found."));
    let device_id = uuid::Uuid::parse_str(id)
        .map(DeviceId)
        .map_err(|_| not_found())?;
    let device = state.store().run(move |db| db.device(device_id)).await?;
    match device {
        Some(device) if scope.contains(device.fields.organization) => Ok(device),
        _ => Err(not_found()),
    }
}

/// A JSON body for an OTAO route: content type checked and size capped at once (413/415);
/// parsed by [`OtaoBody::parse`] once the object it writes to was found (404 before 400).
pub struct OtaoBody(Vec<u8>);

impl FromRequest<AppState> for OtaoBody {
    type Rejection = OtaoError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let body = CappedBody::read(req, state).await?;
        if !CappedBody::is_json(&body.essence) {
            return Err(ApiError::UnsupportedMediaType(body.content_type).into());
        }
        Ok(OtaoBody(body.bytes))
    }
}

impl OtaoBody {
    /// The body as `T`; malformed JSON, a wrong type, a missing or unknown field is a 400
    /// naming it.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, OtaoError> {
        serde_json::from_slice(&self.0)
            .map_err(|e| OtaoError::bad_request(format!("Invalid request body: {e}")))
    }
}

/// [`Paging`] whose refusals are OTAO errors.
pub struct OtaoPaging(pub Paging);

impl FromRequestParts<AppState> for OtaoPaging {
    type Rejection = OtaoError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(OtaoPaging(
            Paging::from_request_parts(parts, state)
                .await
                .map_err(OtaoError::from)?,
        ))
    }
}

/// Path parameters whose refusals are OTAO 404s.
pub struct OtaoPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for OtaoPath<T> {
    type Rejection = OtaoError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| OtaoPath(t))
            .map_err(|_| OtaoError::not_found("Not found."))
    }
}

/// [`QueryPairs`] as an OTAO extractor (it never refuses).
pub struct OtaoQuery(pub QueryPairs);

impl FromRequestParts<AppState> for OtaoQuery {
    type Rejection = OtaoError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(OtaoQuery(
            QueryPairs::from_request_parts(parts, state).await?,
        ))
    }
}

/// The seed's instant: `yyyy-MM-ddTHH:mm:ssZ` (an optional fraction accepted, as the seed's
/// example has one).
pub fn parse_instant(text: &str) -> Option<fleetmq_store::Timestamp> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() >= 20
        && bytes.get(10) == Some(&b'T')
        && text.ends_with('Z')
        && (bytes.len() == 20 || bytes.get(19) == Some(&b'.'));
    if !shaped {
        return None;
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|dt| fleetmq_store::Timestamp::from_micros((dt.unix_timestamp_nanos() / 1_000) as i64))
}

/// An instant as the seed writes it: whole seconds, always `Z`.
pub fn format_instant(at: fleetmq_store::Timestamp) -> String {
    let text = at.to_string();
    // `Timestamp` displays `yyyy-MM-ddTHH:mm:ss.ffffffZ`.
    format!("{}Z", &text[..19.min(text.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_the_seeds_format_and_write_whole_seconds() {
        let at = parse_instant("2019-04-20T11:19:57.848Z").expect("the seed's example");
        assert_eq!(format_instant(at), "2019-04-20T11:19:57Z");
        let at = parse_instant("2019-04-20T11:19:57Z").expect("whole seconds");
        assert_eq!(format_instant(at), "2019-04-20T11:19:57Z");
        assert!(parse_instant("2019-04-20T11:19:57+02:00").is_none());
        assert!(parse_instant("2019-04-20 11:19:57Z").is_none());
        assert!(parse_instant("yesterday").is_none());
    }
}
