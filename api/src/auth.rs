//! Who is calling: Bearer-token authentication, permissions and organization scope.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use fleetmq_store::{Action, OrgId, Resource, Scope, User};

use crate::error::NOT_A_MANAGER;
use crate::{ApiError, AppState};

/// An authenticated, active user.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user behind the token.
    pub user: User,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(&parts.headers, state).await
    }
}

/// Authenticates the `Authorization: Bearer` header of a request.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Caller, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::NotAuthenticated)?
        .to_str()
        .map_err(|_| {
            ApiError::InvalidToken(
                "Invalid token header. Token string should not contain invalid characters.",
            )
        })?;
    let mut words = header.split_whitespace();
    match words.next() {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => {}
        // Other schemes are someone else's credentials: as if none were given.
        _ => return Err(ApiError::NotAuthenticated),
    }
    let token = match (words.next(), words.next()) {
        (Some(token), None) => token.to_owned(),
        (None, _) => {
            return Err(ApiError::InvalidToken(
                "Invalid token header. No credentials provided.",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidToken(
                "Invalid token header. Token string should not contain spaces.",
            ));
        }
    };
    // Most requests are answered from the store's memory cache without a blocking hop.
    let cached = state.store().blocking().cached_user_for_token(&token);
    let user = match cached {
        Some(user) => user,
        None => state
            .store()
            .run(move |db| db.user_for_token(&token))
            .await?
            .ok_or(ApiError::InvalidToken("Invalid token."))?,
    };
    if !user.fields.is_active {
        return Err(ApiError::InvalidToken("User inactive or deleted."));
    }
    Ok(Caller { user })
}

/// The permission an HTTP method needs, as Django's model permissions map them.
pub fn action_for(method: &Method) -> Action {
    match *method {
        Method::POST => Action::Add,
        Method::PUT | Method::PATCH => Action::Change,
        Method::DELETE => Action::Delete,
        _ => Action::View,
    }
}

impl Caller {
    /// Whether the caller bypasses permissions and tenancy.
    pub fn is_superuser(&self) -> bool {
        self.user.fields.is_superuser
    }

    /// Checks the model permission for `action` on `resource` (view is also granted by change).
    pub fn require(&self, resource: Resource, action: Action) -> Result<(), ApiError> {
        let allowed = self.user.has_perm(resource, action)
            || (action == Action::View && self.user.has_perm(resource, Action::Change));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::permission_denied())
        }
    }

    /// The organizations whose objects the caller may see; refuses users who manage none.
    pub fn scope(&self) -> Result<Scope, ApiError> {
        if self.is_superuser() {
            return Ok(Scope::All);
        }
        let orgs = self.user.managed_orgs();
        if orgs.is_empty() {
            return Err(ApiError::Forbidden(NOT_A_MANAGER.to_owned()));
        }
        Ok(Scope::Orgs(orgs))
    }

    /// The usual gate of an organization-scoped endpoint: permission, then manager check.
    pub fn authorize(&self, resource: Resource, method: &Method) -> Result<Scope, ApiError> {
        self.require(resource, action_for(method))?;
        self.scope()
    }

    /// Whether an object of `org` is visible to the caller.
    pub fn manages(&self, org: OrgId) -> bool {
        self.is_superuser() || self.user.managed_orgs().contains(&org)
    }

    /// The organization `id` refers to, if it exists and the caller manages it; `None` reads
    /// as "object does not exist" to the client (foreign relations are not revealed).
    pub async fn managed_org(
        &self,
        state: &AppState,
        id: uuid::Uuid,
    ) -> Result<Option<OrgId>, ApiError> {
        let org = OrgId(id);
        let exists = state
            .store()
            .run(move |db| db.organization(org))
            .await?
            .is_some();
        Ok((exists && self.manages(org)).then_some(org))
    }

    /// Shared objects (organization `None`) are writable by superusers only; `refusal` is the
    /// message non-superusers get.
    pub fn require_shared_write(&self, org: Option<OrgId>, refusal: &str) -> Result<(), ApiError> {
        if org.is_none() && !self.is_superuser() {
            return Err(ApiError::Forbidden(refusal.to_owned()));
        }
        Ok(())
    }

    /// Only superusers may go on.
    pub fn require_superuser(&self) -> Result<(), ApiError> {
        if self.is_superuser() {
            Ok(())
        } else {
            Err(ApiError::permission_denied())
        }
    }
}
