//! `/api/v1/users/session/`: the browser console's login, logout and "who am I".
//!
//! A session is an API token like those of `/api/v1/users/token/`, kept in an HttpOnly cookie
//! (`SameSite=Strict`, `Secure` when a TLS proxy in front says `X-Forwarded-Proto: https`), so
//! it is revoked as tokens are: with its user (deleted or deactivated: every request checks)
//! and by logout, which deletes it on every node. Every API route takes the cookie in place
//! of `Authorization: Bearer`; a cookie-authenticated request that changes state must carry
//! the session's CSRF token in `X-CSRFToken` (see [`crate::auth::authenticate`]).

use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use fleetmq_store::User;

use crate::auth::{Caller, SESSION_COOKIE, csrf_token, session_token};
use crate::body::Body;
use crate::routes::users::{TokenAttempt, TokenRequest, log_in};
use crate::{ApiError, AppState, ErrorDetail};

/// The session routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(open_session, current_session, close_session))
}

/// A console session, as its page needs it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Who is logged in.
    pub username: String,
    /// Whether they see every organization.
    pub is_superuser: bool,
    /// To send as `X-CSRFToken` with every request that changes state.
    pub csrf_token: String,
}

fn view(user: &User, token: &str) -> SessionView {
    SessionView {
        username: user.fields.username.as_str().to_owned(),
        is_superuser: user.fields.is_superuser,
        csrf_token: csrf_token(token),
    }
}

/// The `Set-Cookie` value of a session (or of its removal, with `None`).
fn cookie(token: Option<&str>, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let behind_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let value = match token {
        Some(token) => format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    let value = if behind_tls {
        format!("{value}; Secure")
    } else {
        value
    };
    HeaderValue::from_str(&value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Logs in: a new session for a username and password, in a cookie.
#[utoipa::path(post, path = "/api/v1/users/session/", tag = "users", request_body = TokenRequest,
    responses((status = 201, body = SessionView, description = "Logged in; the session is in the `fleetmq_session` cookie"),
        (status = 400, description = "{\"non_field_errors\": [\"Unable to log in with provided credentials.\"]}, or field errors"),
        (status = 429, description = "Too many attempts from this address", body = ErrorDetail),
        (status = 503, description = "Too many password checks in progress; retry after `Retry-After` seconds", body = ErrorDetail)))]
async fn open_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    _: TokenAttempt,
    body: Body<TokenRequest>,
) -> Result<Response, ApiError> {
    let (token, user) = log_in(&state, body.read()?).await?;
    let set = cookie(Some(token.as_str()), &headers)?;
    let body = Json(view(&user, token.as_str()));
    Ok((StatusCode::CREATED, [(SET_COOKIE, set)], body).into_response())
}

/// The session of the request's cookie: who, and its CSRF token (a page reloaded learns it
/// here).
#[utoipa::path(get, path = "/api/v1/users/session/", tag = "users",
    responses((status = 200, body = SessionView)), security(("session" = [])))]
async fn current_session(
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<SessionView>, ApiError> {
    let token = session_token(&headers).ok_or(ApiError::NotAuthenticated)?;
    Ok(Json(view(&caller.user, &token)))
}

/// Logs out: the session's token is deleted (on every node) and its cookie cleared.
#[utoipa::path(delete, path = "/api/v1/users/session/", tag = "users",
    responses((status = 204, description = "Logged out"),
        (status = 400, description = "An Authorization header came with the cookie: log out with the cookie alone", body = ErrorDetail)),
    security(("session" = [])))]
async fn close_session(
    State(state): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A bearer client has no session to end (and must not end its token by accident).
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(ApiError::BadRequest(
            "Log out with the session cookie alone, without an Authorization header.".into(),
        ));
    }
    let token = session_token(&headers).ok_or(ApiError::NotAuthenticated)?;
    state.store().run(move |db| db.delete_token(&token)).await?;
    let clear = cookie(None, &headers)?;
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, clear)]).into_response())
}
