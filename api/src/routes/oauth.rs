//! OAuth 2.0 for the OTAO API: `POST /api/v1/oauth/token` (client credentials grant, RFC 6749
//! §4.4, errors as §5.2 words them) and `/api/v1/oauth/clients/` where an organization's
//! administrators register clients (DRF bodies, like the other account routes).

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header::WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use fleetmq_store::{OAuthClient, OAuthScope, OrgId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Add, Authorized, Delete, View};
use crate::body::{Body, NonBlank, NullablePk, REQUIRED};
use crate::extract::{ClientAddr, PathId, form_urlencoded_pairs, read_capped};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState};

/// The OAuth routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, delete_client))
}

/// RFC 6749 §5.2's error codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    UnsupportedGrantType,
    InvalidScope,
}

/// A token endpoint error: `{"error", "error_description"}`.
#[derive(Debug)]
pub struct OAuthError {
    code: OAuthErrorCode,
    description: String,
    status: StatusCode,
    retry_after: Option<u64>,
    /// What a 5xx hides from the client, for the logging middleware.
    internal: Option<String>,
}

/// The body of a token endpoint error.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type` or `invalid_scope`.
    pub error: &'static str,
    /// What was wrong.
    pub error_description: String,
}

impl OAuthError {
    fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        let status = if code == OAuthErrorCode::InvalidClient {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        OAuthError {
            code,
            description: description.into(),
            status,
            retry_after: None,
            internal: None,
        }
    }

    fn request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    fn client() -> Self {
        Self::new(
            OAuthErrorCode::InvalidClient,
            "Client authentication failed.",
        )
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let internal = match &e {
            ApiError::Internal(reason) => Some(reason.clone()),
            _ => None,
        };
        let (description, retry_after) = match e {
            ApiError::Throttled(wait) => (
                format!("Request was throttled. Expected available in {wait} seconds."),
                Some(wait),
            ),
            ApiError::PayloadTooLarge(limit) => (
                format!("Request body is too large (the limit is {limit} bytes)."),
                None,
            ),
            ApiError::Internal(_) => ("A server error occurred.".to_owned(), None),
            _ => ("The request could not be served.".to_owned(), None),
        };
        OAuthError {
            code: OAuthErrorCode::InvalidRequest,
            description,
            status,
            retry_after,
            internal,
        }
    }
}

impl From<fleetmq_store::StoreError> for OAuthError {
    fn from(e: fleetmq_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let error = match self.code {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
        };
        let mut response = (
            self.status,
            Json(OAuthErrorBody {
                error,
                error_description: self.description,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if self.code == OAuthErrorCode::InvalidClient {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth\""),
            );
        }
        if let Some(wait) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(wait));
        }
        if let Some(reason) = self.internal {
            response
                .extensions_mut()
                .insert(crate::error::InternalError(reason));
        }
        response
    }
}

/// A token request counted against its client's address, as the user token endpoint counts
/// password checks: guessing secrets is throttled.
struct TokenAttempt;

impl FromRequestParts<AppState> for TokenAttempt {
    type Rejection = OAuthError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddr(peer) = ClientAddr::from_request_parts(parts, state).await?;
        if let Some(peer) = peer {
            state.token_throttle().check(peer)?;
        }
        Ok(TokenAttempt)
    }
}

/// A form-urlencoded token request body, capped like JSON bodies.
struct TokenForm {
    headers: HeaderMap,
    pairs: Vec<(String, String)>,
}

impl FromRequest<AppState> for TokenForm {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let essence = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let bytes = read_capped(req.into_body(), state.config().json_body_limit).await?;
        if essence != "application/x-www-form-urlencoded" {
            return Err(OAuthError::request(
                "The body must be application/x-www-form-urlencoded.",
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| OAuthError::request("The body is not UTF-8."))?;
        Ok(TokenForm {
            headers,
            pairs: form_urlencoded_pairs(text),
        })
    }
}

impl TokenForm {
    /// A parameter given at most once (RFC 6749 §3.2: no repeats).
    fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(OAuthError::request(format!(
                "The parameter \"{name}\" is repeated."
            )));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// The client's id and secret: HTTP Basic (RFC 6749 §2.3.1, form-encoded parts) or the
    /// `client_id`/`client_secret` parameters, not both.
    fn credentials(&self) -> Result<(String, String), OAuthError> {
        let basic = match self.headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => {
                let value = value.to_str().map_err(|_| OAuthError::client())?;
                let (scheme, encoded) = value.split_once(' ').ok_or_else(OAuthError::client)?;
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(OAuthError::client());
                }
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| OAuthError::client())?;
                let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::client())?;
                let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::client)?;
                let mut parts = form_urlencoded_pairs(&format!("i={id}&s={secret}"));
                let secret = parts.pop().map(|(_, v)| v).unwrap_or_default();
                let id = parts.pop().map(|(_, v)| v).unwrap_or_default();
                Some((id, secret))
            }
        };
        let form = (self.get("client_id")?, self.get("client_secret")?);
        match (basic, form) {
            (Some(_), (Some(_), _) | (_, Some(_))) => Err(OAuthError::request(
                "Use one client authentication method, not both.",
            )),
            (Some(basic), _) => Ok(basic),
            (None, (Some(id), Some(secret))) => Ok((id.to_owned(), secret.to_owned())),
            (None, _) => Err(OAuthError::client()),
        }
    }
}

/// An access token (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send it as `Authorization: Bearer <access_token>` to the OTAO routes.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds it stays valid.
    pub expires_in: u64,
    /// The granted scopes, space-separated.
    pub scope: String,
}

/// A token request (`application/x-www-form-urlencoded`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // The document's form; the handler reads the pairs itself.
pub struct TokenRequestForm {
    /// Must be `client_credentials`.
    grant_type: String,
    /// Space-separated subset of the client's scopes (default: all of them).
    scope: Option<String>,
    /// The client's id (unless sent with HTTP Basic).
    client_id: Option<String>,
    /// The client's secret (unless sent with HTTP Basic).
    client_secret: Option<String>,
}

/// Issues an access token to an OAuth client (client credentials grant).
#[utoipa::path(post, path = "/api/v1/oauth/token", tag = "oauth",
    request_body(content = TokenRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request, unsupported_grant_type or invalid_scope", body = OAuthErrorBody),
        (status = 401, description = "invalid_client (with `WWW-Authenticate: Basic`)", body = OAuthErrorBody),
        (status = 429, description = "Too many attempts from this address", body = OAuthErrorBody)))]
async fn token(
    State(state): State<AppState>,
    _: TokenAttempt,
    form: TokenForm,
) -> Result<Response, OAuthError> {
    let grant_type = form.get("grant_type")?;
    let asked_scope = form.get("scope")?.map(str::to_owned);
    let (client_id, secret) = form.credentials()?;
    let Some(grant_type) = grant_type else {
        return Err(OAuthError::request("grant_type is required."));
    };
    let client_id = Uuid::parse_str(&client_id).map_err(|_| OAuthError::client())?;
    let client = state
        .store()
        .run(move |db| db.oauth_client(client_id))
        .await?;
    let client = match client {
        Some(client) if client.verify_secret(&secret) => client,
        _ => {
            tracing::info!(client_id = %client_id, "oauth client authentication failed");
            return Err(OAuthError::client());
        }
    };
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            OAuthErrorCode::UnsupportedGrantType,
            "Only the client_credentials grant is supported.",
        ));
    }
    let scopes = match asked_scope {
        None => client.scopes.clone(),
        Some(text) => {
            let mut scopes = Vec::new();
            for word in text.split(' ').filter(|w| !w.is_empty()) {
                let scope = word
                    .parse::<OAuthScope>()
                    .ok()
                    .filter(|s| client.scopes.contains(s))
                    .ok_or_else(|| {
                        OAuthError::new(
                            OAuthErrorCode::InvalidScope,
                            format!("The scope \"{word}\" is not granted to this client."),
                        )
                    })?;
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
            scopes
        }
    };
    if scopes.is_empty() {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidScope,
            "No scope to grant.",
        ));
    }
    let lifetime = state.config().oauth_token_lifetime.max(1);
    let (token, grant) = state
        .store()
        .run(move |db| db.issue_access_token(client_id, scopes, lifetime))
        .await?;
    tracing::info!(client_id = %client_id, "oauth access token issued");
    let scope = grant
        .scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut response = Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: lifetime,
        scope,
    })
    .into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// A scope as clients are registered with it.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum ScopeChoice {
    /// Read software, applications and filters.
    #[serde(rename = "application:software:read")]
    SoftwareRead,
    /// Publish and change software, applications and filters.
    #[serde(rename = "application:software:update")]
    SoftwareUpdate,
    /// Read endpoints.
    #[serde(rename = "endpoint:read")]
    EndpointRead,
    /// Set what endpoints run.
    #[serde(rename = "endpoint:update")]
    EndpointUpdate,
}

impl From<ScopeChoice> for OAuthScope {
    fn from(choice: ScopeChoice) -> Self {
        match choice {
            ScopeChoice::SoftwareRead => OAuthScope::SoftwareRead,
            ScopeChoice::SoftwareUpdate => OAuthScope::SoftwareUpdate,
            ScopeChoice::EndpointRead => OAuthScope::EndpointRead,
            ScopeChoice::EndpointUpdate => OAuthScope::EndpointUpdate,
        }
    }
}

/// An OAuth client as its administrators see it (never its secret, but once).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClientView {
    /// What it authenticates with.
    pub client_id: Uuid,
    /// A name for people.
    pub name: String,
    /// Whose software and endpoints its tokens reach.
    pub organization: Uuid,
    /// The most its tokens may be granted.
    pub scopes: Vec<String>,
    /// When it was registered.
    pub created: String,
    /// The secret: shown in the answer that creates the client only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl OAuthClientView {
    fn of(client: OAuthClient, secret: Option<String>) -> Self {
        OAuthClientView {
            client_id: client.client_id,
            name: client.name,
            organization: client.organization.0,
            scopes: client
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            created: client.created.to_string(),
            client_secret: secret,
        }
    }
}

/// What an administrator sends to register a client.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuthClientWrite {
    /// A name for people.
    #[schema(required = true, nullable = false)]
    name: Option<NonBlank<200>>,
    /// Whose client (optional when the caller administers one organization).
    #[schema(nullable = false)]
    organization: Option<NullablePk>,
    /// The most its tokens may be granted (at least one).
    #[schema(required = true, nullable = false)]
    scopes: Option<Vec<ScopeChoice>>,
}

/// Lists the OAuth clients of the organizations the caller administers.
#[utoipa::path(get, path = "/api/v1/oauth/clients/", tag = "oauth", params(PageQuery),
    responses((status = 200, body = Paginated<OAuthClientView>)), security(("bearer" = [])))]
async fn list_clients(
    State(state): State<AppState>,
    auth: Authorized<crate::auth::OAuthClients, View>,
    paging: Paging,
) -> Result<Json<Paginated<OAuthClientView>>, ApiError> {
    let scope = auth.scope;
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_oauth_clients(&scope, request))
        .await?;
    paging.envelope(page, |c| OAuthClientView::of(c, None))
}

/// Registers an OAuth client; the answer holds its secret, shown this once.
#[utoipa::path(post, path = "/api/v1/oauth/clients/", tag = "oauth", request_body = OAuthClientWrite,
    responses((status = 201, body = OAuthClientView)), security(("bearer" = [])))]
async fn create_client(
    State(state): State<AppState>,
    auth: Authorized<crate::auth::OAuthClients, Add>,
    body: Body<OAuthClientWrite>,
) -> Result<(StatusCode, Json<OAuthClientView>), ApiError> {
    let body = body.read()?;
    let name = body.name.map(|n| n.0).unwrap_or_default();
    let scopes: Vec<OAuthScope> = body
        .scopes
        .unwrap_or_default()
        .into_iter()
        .map(OAuthScope::from)
        .fold(Vec::new(), |mut all, s| {
            if !all.contains(&s) {
                all.push(s);
            }
            all
        });
    if scopes.is_empty() {
        return Err(ApiError::field("scopes", "This list may not be empty."));
    }
    let organization: OrgId = match body.organization {
        Some(given) => auth
            .caller
            .owner(&state, Some(given), None)
            .await?
            .ok_or_else(|| ApiError::field("organization", REQUIRED))?,
        None => match auth.caller.user.managed_orgs().as_slice() {
            [only] => *only,
            _ => return Err(ApiError::field("organization", REQUIRED)),
        },
    };
    let (client, secret) = state
        .store()
        .run(move |db| db.create_oauth_client(name, organization, scopes))
        .await?;
    tracing::info!(client_id = %client.client_id, org = %organization.0, "oauth client registered");
    Ok((
        StatusCode::CREATED,
        Json(OAuthClientView::of(client, Some(secret))),
    ))
}

/// The client `id` names, if the caller administers its organization.
async fn visible_client(
    state: &AppState,
    scope: &fleetmq_store::Scope,
    id: Uuid,
) -> Result<OAuthClient, ApiError> {
    let client = state.store().run(move |db| db.oauth_client(id)).await?;
    match client {
        Some(client) if scope.contains(client.organization) => Ok(client),
        _ => Err(ApiError::NotFound),
    }
}

/// Returns an OAuth client (without its secret).
#[utoipa::path(get, path = "/api/v1/oauth/clients/{id}/", tag = "oauth", params(PathId),
    responses((status = 200, body = OAuthClientView)), security(("bearer" = [])))]
async fn get_client(
    State(state): State<AppState>,
    auth: Authorized<crate::auth::OAuthClients, View>,
    PathId(id): PathId,
) -> Result<Json<OAuthClientView>, ApiError> {
    let client = visible_client(&state, &auth.scope, id).await?;
    Ok(Json(OAuthClientView::of(client, None)))
}

/// Deletes an OAuth client; its access tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/oauth/clients/{id}/", tag = "oauth", params(PathId),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_client(
    State(state): State<AppState>,
    auth: Authorized<crate::auth::OAuthClients, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let client = visible_client(&state, &auth.scope, id).await?;
    state
        .store()
        .run(move |db| db.delete_oauth_client(client.client_id))
        .await?;
    tracing::info!(client_id = %id, "oauth client deleted");
    Ok(StatusCode::NO_CONTENT)
}
