//! Who is calling: Bearer-token authentication, permissions and organization scope.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::marker::PhantomData;

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
        authenticate(&parts.method, &parts.headers, state).await
    }
}

/// The cookie a browser session's token travels in (`POST /api/v1/users/session/`).
pub const SESSION_COOKIE: &str = "fleetmq_session";
/// The header a cookie-authenticated request that changes state carries its CSRF token in
/// (Django's name).
pub const CSRF_HEADER: &str = "x-csrftoken";
/// Django's answer to a request without the right CSRF token.
pub const CSRF_FAILED: &str = "CSRF Failed: CSRF token missing or incorrect.";

/// The session token of the request's `Cookie` header, if it has one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The CSRF token of a session: derived from its token (nothing more is kept), and useless
/// without it.
pub fn csrf_token(session: &str) -> String {
    fleetmq_store::token_hash(&format!("fleetmq csrf\0{session}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the request carries `session`'s CSRF token (compared in constant time).
fn csrf_matches(headers: &HeaderMap, session: &str) -> bool {
    let Some(given) = headers.get(CSRF_HEADER).map(|v| v.as_bytes()) else {
        return false;
    };
    let expected = csrf_token(session);
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Authenticates a request: its `Authorization: Bearer` header or, without one, the console's
/// session cookie. A cookie-authenticated request that changes state (any method but GET,
/// HEAD, OPTIONS, TRACE) must carry the session's CSRF token in `X-CSRFToken`, or it gets
/// 403: another site can make a browser send the cookie, not read the token.
pub async fn authenticate(
    method: &Method,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Caller, ApiError> {
    let (token, from_cookie) = match headers.get(AUTHORIZATION) {
        Some(_) => (bearer_token(headers)?, false),
        None => (
            session_token(headers).ok_or(ApiError::NotAuthenticated)?,
            true,
        ),
    };
    let caller = user_of(token.clone(), state).await?;
    if from_cookie && !method.is_safe() && !csrf_matches(headers, &token) {
        return Err(ApiError::Forbidden(CSRF_FAILED.into()));
    }
    Ok(caller)
}

/// The token of a well-formed `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<String, ApiError> {
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
    match (words.next(), words.next()) {
        (Some(token), None) => Ok(token.to_owned()),
        (None, _) => Err(ApiError::InvalidToken(
            "Invalid token header. No credentials provided.",
        )),
        (Some(_), Some(_)) => Err(ApiError::InvalidToken(
            "Invalid token header. Token string should not contain spaces.",
        )),
    }
}

/// The active user a token belongs to.
async fn user_of(token: String, state: &AppState) -> Result<Caller, ApiError> {
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

/// A kind of object whose permissions guard routes (a marker for [`Authorized`]).
pub trait Guarded {
    /// Whether `user` may do `action` on such objects, before tenancy is checked.
    fn permits(user: &User, action: Action) -> bool;
}

/// Django's model permissions: the user's groups grant the action (view is also granted by
/// change).
fn model_permits(user: &User, resource: Resource, action: Action) -> bool {
    user.has_perm(resource, action)
        || (action == Action::View && user.has_perm(resource, Action::Change))
}

/// What a route does (a marker for [`Authorized`]).
pub trait Act {
    /// The action asked for.
    const ACTION: Action;
}

macro_rules! actions {
    ($($(#[$doc:meta])* $name:ident => $action:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl Act for $name {
            const ACTION: Action = $action;
        }
    )*};
}

actions! {
    /// Read.
    View => Action::View;
    /// Create.
    Add => Action::Add;
    /// Replace or change.
    Change => Action::Change;
    /// Remove.
    Delete => Action::Delete;
    /// Deactivate a device.
    Deactivate => Action::Deactivate;
    /// Reactivate a device.
    Activate => Action::Activate;
    /// Cancel upgrades.
    Cancel => Action::Cancel;
}

macro_rules! guarded {
    ($($(#[$doc:meta])* $name:ident => $resource:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl Guarded for $name {
            fn permits(user: &User, action: Action) -> bool {
                model_permits(user, $resource, action)
            }
        }
    )*};
}

guarded! {
    /// Devices.
    Devices => Resource::Device;
    /// Configuration templates.
    Templates => Resource::Template;
    /// Device groups.
    DeviceGroups => Resource::DeviceGroup;
    /// Where devices are.
    DeviceLocations => Resource::DeviceLocation;
    /// Locations.
    Locations => Resource::Location;
    /// Floor plans of indoor locations.
    FloorPlans => Resource::FloorPlan;
    /// Device connections.
    DeviceConnections => Resource::DeviceConnection;
    /// Commands sent to devices.
    Commands => Resource::Command;
    /// Access credentials.
    Credentials => Resource::Credentials;
    /// Firmware categories.
    Categories => Resource::Category;
    /// Firmware builds.
    Builds => Resource::Build;
    /// Firmware images.
    FirmwareImages => Resource::FirmwareImage;
    /// A device's firmware.
    DeviceFirmwares => Resource::DeviceFirmware;
    /// Upgrade operations.
    UpgradeOperations => Resource::UpgradeOperation;
    /// Batch upgrade operations.
    BatchUpgrades => Resource::BatchUpgradeOperation;
    /// Certificate authorities.
    Cas => Resource::Ca;
    /// Certificates.
    Certs => Resource::Cert;
    /// VPN servers.
    Vpns => Resource::Vpn;
    /// OAuth 2.0 clients of the OTAO API (administrators only).
    OAuthClients => Resource::OAuthClient;
}

/// Organizations and users: managers see those of their organizations; only superusers
/// change them.
#[derive(Debug)]
pub struct Accounts;

impl Guarded for Accounts {
    fn permits(user: &User, action: Action) -> bool {
        action == Action::View || user.fields.is_superuser
    }
}

/// An organization's configuration settings: its managers (and superusers) see and change
/// them; tenancy (the caller manages the organization) is the whole rule, as in OpenWISP's
/// organization admin.
#[derive(Debug)]
pub struct OrgSettings;

impl Guarded for OrgSettings {
    fn permits(_user: &User, _action: Action) -> bool {
        true
    }
}

/// Image types: any user who may view firmware images lists them (they belong to no
/// organization); only superusers add or remove them.
#[derive(Debug)]
pub struct ImageTypes;

impl Guarded for ImageTypes {
    fn permits(user: &User, action: Action) -> bool {
        if action == Action::View {
            model_permits(user, Resource::FirmwareImage, action)
        } else {
            user.fields.is_superuser
        }
    }
}

/// A caller allowed to do `A` on `R`, where `R`'s objects belong to no organization (so,
/// unlike [`Authorized`], a caller managing none is not refused). Refuses with 401 (no or bad
/// token), then 403 (no permission).
#[derive(Debug)]
pub struct Permitted<R, A> {
    /// Who is calling.
    pub caller: Caller,
    marker: PhantomData<fn() -> (R, A)>,
}

impl<R: Guarded, A: Act> FromRequestParts<AppState> for Permitted<R, A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(&parts.method, &parts.headers, state).await?;
        if !R::permits(&caller.user, A::ACTION) {
            return Err(ApiError::permission_denied());
        }
        Ok(Permitted {
            caller,
            marker: PhantomData,
        })
    }
}

/// A caller allowed to do `A` on `R`, with the organizations whose objects it may touch.
/// Refuses with 401 (no or bad token), then 403 (no permission, or managing no organization).
#[derive(Debug)]
pub struct Authorized<R, A> {
    /// Who is calling.
    pub caller: Caller,
    /// Whose objects the caller may see.
    pub scope: Scope,
    marker: PhantomData<fn() -> (R, A)>,
}

impl<R: Guarded, A: Act> FromRequestParts<AppState> for Authorized<R, A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Permitted { caller, .. } = Permitted::<R, A>::from_request_parts(parts, state).await?;
        let scope = caller.scope()?;
        Ok(Authorized {
            caller,
            scope,
            marker: PhantomData,
        })
    }
}

impl Caller {
    /// Whether the caller bypasses permissions and tenancy.
    pub fn is_superuser(&self) -> bool {
        self.user.fields.is_superuser
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

    /// Who owns an object after a write that may name its `organization` (`given`; absent
    /// keeps `current`): an organization the caller manages, or — superusers only — none
    /// (shared). Otherwise the field error DRF gives.
    pub async fn owner(
        &self,
        state: &AppState,
        given: Option<crate::body::NullablePk>,
        current: Option<OrgId>,
    ) -> Result<Option<OrgId>, ApiError> {
        use crate::body::{NOT_NULL, NullablePk, does_not_exist};
        match given {
            None => Ok(current),
            Some(NullablePk(None)) if self.is_superuser() => Ok(None),
            Some(NullablePk(None)) => Err(ApiError::field("organization", NOT_NULL)),
            Some(NullablePk(Some(id))) => match self.managed_org(state, id).await? {
                Some(org) => Ok(Some(org)),
                None => Err(ApiError::field(
                    "organization",
                    does_not_exist(&id.to_string()),
                )),
            },
        }
    }

    /// Shared objects (organization `None`) are writable by superusers only; `refusal` is the
    /// message non-superusers get.
    pub fn require_shared_write(&self, org: Option<OrgId>, refusal: &str) -> Result<(), ApiError> {
        if org.is_none() && !self.is_superuser() {
            return Err(ApiError::Forbidden(refusal.to_owned()));
        }
        Ok(())
    }
}
