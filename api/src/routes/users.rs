//! `/api/v1/users/token/` and `/api/v1/users/user/`: tokens and accounts.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use fleetmq_store::{
    Group, Membership, OrgId, Password, PasswordHashString, Scope, User, UserFields, UserId,
    Username,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ClientAddr, JsonObject, PathId, QueryPairs};
use crate::form::{Field, Form, Mode, does_not_exist};
use crate::pagination::PageQuery as ListQuery;
use crate::pagination::{PageParams, Paginated};
use crate::{ApiError, AppState, ErrorDetail};

/// The user and token routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(obtain_token))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, put_user, patch_user, delete_user))
}

/// Credentials exchanged for a token.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct TokenRequest {
    username: String,
    password: String,
}

/// A fresh API token: send it as `Authorization: Bearer <token>`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// 40 hex characters.
    pub token: String,
}

/// A user's place in an organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    /// Organization id.
    pub organization: Uuid,
    /// Manager of that organization.
    pub is_admin: bool,
}

/// A user as the API shows it (never the password).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Identity.
    pub id: Uuid,
    /// Login name.
    pub username: String,
    /// Address.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Bypasses permissions and tenancy.
    pub is_superuser: bool,
    /// Inactive users cannot authenticate.
    pub is_active: bool,
    /// `Operator` and/or `Administrator`.
    pub groups: Vec<&'static str>,
    /// Memberships.
    pub organization_users: Vec<MembershipView>,
    /// Account creation time.
    pub date_joined: String,
}

/// What a client sends (PATCH: any subset; `password` required on create, write-only).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documentation of the body; read by `Form`
pub struct UserWrite {
    username: String,
    password: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    is_superuser: Option<bool>,
    is_active: Option<bool>,
    groups: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<Object>>)]
    organization_users: Option<Value>,
}

fn view(user: User) -> UserView {
    let f = user.fields;
    UserView {
        id: user.id.0,
        username: f.username.as_str().to_owned(),
        email: f.email,
        first_name: f.first_name,
        last_name: f.last_name,
        is_superuser: f.is_superuser,
        is_active: f.is_active,
        groups: f.groups.iter().map(|g| g.name()).collect(),
        organization_users: f
            .memberships
            .iter()
            .map(|m| MembershipView {
                organization: m.organization.0,
                is_admin: m.is_admin,
            })
            .collect(),
        date_joined: user.date_joined.to_string(),
    }
}

/// Spends the time of a real check when the username is unknown, so timing does not tell
/// which usernames exist.
fn verify_decoy(password: &str) {
    static DECOY: std::sync::OnceLock<Option<PasswordHashString>> = std::sync::OnceLock::new();
    let decoy = DECOY.get_or_init(|| {
        Password::parse("decoy-password")
            .ok()
            .and_then(|p| p.hash().ok())
    });
    if let Some(hash) = decoy {
        hash.verify(password);
    }
}

/// Exchanges a username and password for a new API token.
#[utoipa::path(post, path = "/api/v1/users/token/", tag = "users", request_body = TokenRequest,
    responses((status = 200, body = TokenView),
        (status = 400, description = "{\"non_field_errors\": [\"Unable to log in with provided credentials.\"]}"),
        (status = 429, description = "Too many attempts from this address", body = ErrorDetail)))]
async fn obtain_token(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    JsonObject(body): JsonObject,
) -> Result<Json<TokenView>, ApiError> {
    if let Some(peer) = peer {
        state.token_throttle().check(peer)?;
    }
    let mut form = Form::new(body, Mode::Full);
    let username = form.parsed("username", true, |s| {
        if s.is_empty() {
            Err("This field may not be blank.")
        } else {
            Ok(s.to_owned())
        }
    });
    let password = form.parsed("password", true, |s| {
        if s.is_empty() {
            Err("This field may not be blank.")
        } else {
            Ok(s.to_owned())
        }
    });
    let (username, password) = (username.set(), password.set());
    form.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::field("username", "This field is required."));
    };
    let token = state
        .store()
        .run(move |db| {
            let user = db.user_by_username(&username)?;
            let verified = match &user {
                Some(user) => user.password.verify(&password) && user.fields.is_active,
                None => {
                    verify_decoy(&password);
                    false
                }
            };
            match user {
                Some(user) if verified => db.create_token(user.id).map(Some),
                _ => Ok(None),
            }
        })
        .await?
        .ok_or_else(|| {
            ApiError::field(
                "non_field_errors",
                "Unable to log in with provided credentials.",
            )
        })?;
    Ok(Json(TokenView {
        token: token.as_str().to_owned(),
    }))
}

/// The users the caller may see: everyone for superusers, members of managed organizations
/// for managers.
fn user_scope(caller: &Caller) -> Result<Scope, ApiError> {
    caller.scope()
}

/// Lists users.
#[utoipa::path(get, path = "/api/v1/users/user/", tag = "users", params(ListQuery),
    responses((status = 200, body = Paginated<UserView>), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Json<Paginated<UserView>>, ApiError> {
    let scope = user_scope(&caller)?;
    let params = PageParams::from_query(&query)?;
    let request = params.request();
    let page = state
        .store()
        .run(move |db| db.list_users(&scope, request))
        .await?;
    Ok(Json(params.envelope(page, &uri, &headers, &query, view)?))
}

/// Reads a user body over `current` (or defaults); returns the fields and a new password.
async fn read_user(
    state: &AppState,
    body: Map<String, Value>,
    mode: Mode,
    current: Option<UserFields>,
) -> Result<(UserFields, Option<Password>), ApiError> {
    let creating = current.is_none();
    let mut form = Form::new(body, mode);
    let username = form.parsed("username", true, Username::parse).set();
    let password = form.parsed("password", creating, Password::parse).set();
    let email = form
        .parsed("email", false, |s| {
            if s.is_empty()
                || (s.contains('@') && !s.contains(char::is_whitespace) && s.len() <= 254)
            {
                Ok(s.to_owned())
            } else {
                Err("Enter a valid email address.")
            }
        })
        .set();
    let first_name = form.text("first_name", 150).set();
    let last_name = form.text("last_name", 150).set();
    let is_superuser = form.boolean("is_superuser").set();
    let is_active = form.boolean("is_active").set();
    let mut groups = None;
    if let Field::Set(value) = form.raw("groups", false) {
        match value {
            Value::Array(items) => {
                let mut parsed = Vec::new();
                for item in items {
                    match item.as_str().and_then(Group::parse) {
                        Some(g) if !parsed.contains(&g) => parsed.push(g),
                        Some(_) => {}
                        None => form.error(
                            "groups",
                            format!(
                                "Object with name={} does not exist.",
                                item.as_str().unwrap_or(&item.to_string())
                            ),
                        ),
                    }
                }
                groups = Some(parsed);
            }
            _ => form.error("groups", "Expected a list of items."),
        }
    }
    let mut memberships = None;
    let mut wanted_orgs = Vec::new();
    if let Field::Set(value) = form.raw("organization_users", false) {
        match value {
            Value::Array(items) => {
                let mut parsed: Vec<Membership> = Vec::new();
                for item in items {
                    let mut nested = Form::new(
                        match item {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        },
                        Mode::Full,
                    );
                    let org = nested
                        .reference("organization", true, false)
                        .set()
                        .flatten();
                    let is_admin = nested.boolean("is_admin").set().unwrap_or(false);
                    let errors = nested.into_errors();
                    if !errors.is_empty() {
                        form.nested_errors("organization_users", errors);
                        continue;
                    }
                    if let Some(org) = org
                        && !parsed.iter().any(|m| m.organization.0 == org)
                    {
                        parsed.push(Membership {
                            organization: OrgId(org),
                            is_admin,
                        });
                        wanted_orgs.push(OrgId(org));
                    }
                }
                memberships = Some(parsed);
            }
            _ => form.error("organization_users", "Expected a list of items."),
        }
    }
    let missing = state
        .store()
        .run(move |db| {
            let mut missing = Vec::new();
            for org in wanted_orgs {
                if db.organization(org)?.is_none() {
                    missing.push(org);
                }
            }
            Ok(missing)
        })
        .await?;
    for org in missing {
        form.error("organization_users", does_not_exist(&org.to_string()));
    }
    form.finish()?;
    let mut fields = match current {
        Some(current) => current,
        None => UserFields {
            username: username
                .clone()
                .ok_or_else(|| ApiError::field("username", "This field is required."))?,
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            is_superuser: false,
            is_active: true,
            groups: Vec::new(),
            memberships: Vec::new(),
        },
    };
    if let Some(v) = username {
        fields.username = v;
    }
    if let Some(v) = email {
        fields.email = v;
    }
    if let Some(v) = first_name {
        fields.first_name = v;
    }
    if let Some(v) = last_name {
        fields.last_name = v;
    }
    if let Some(v) = is_superuser {
        fields.is_superuser = v;
    }
    if let Some(v) = is_active {
        fields.is_active = v;
    }
    if let Some(v) = groups {
        fields.groups = v;
    }
    if let Some(v) = memberships {
        fields.memberships = v;
    }
    Ok((fields, password))
}

/// Creates a user (superusers only).
#[utoipa::path(post, path = "/api/v1/users/user/", tag = "users", request_body = UserWrite,
    responses((status = 201, body = UserView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    caller.require_superuser()?;
    let (fields, password) = read_user(&state, body, Mode::Full, None).await?;
    let password =
        password.ok_or_else(|| ApiError::field("password", "This field is required."))?;
    let user = state
        .store()
        .run(move |db| db.create_user(fields, password))
        .await?;
    Ok((StatusCode::CREATED, Json(view(user))))
}

async fn visible_user(state: &AppState, caller: &Caller, id: Uuid) -> Result<User, ApiError> {
    let scope = user_scope(caller)?;
    let user = state
        .store()
        .run(move |db| db.user(UserId(id)))
        .await?
        .filter(|u| match &scope {
            Scope::All => true,
            Scope::Orgs(orgs) => u
                .fields
                .memberships
                .iter()
                .any(|m| orgs.contains(&m.organization)),
        })
        .ok_or(ApiError::NotFound)?;
    Ok(user)
}

/// Shows one user.
#[utoipa::path(get, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(view(visible_user(&state, &caller, id).await?)))
}

async fn change_user(
    state: AppState,
    caller: Caller,
    id: Uuid,
    body: Map<String, Value>,
    mode: Mode,
) -> Result<Json<UserView>, ApiError> {
    caller.require_superuser()?;
    let current = visible_user(&state, &caller, id).await?;
    let (fields, password) = read_user(&state, body, mode, Some(current.fields)).await?;
    let user = state
        .store()
        .run(move |db| db.update_user(UserId(id), fields, password))
        .await?;
    Ok(Json(view(user)))
}

/// Replaces a user (superusers only).
#[utoipa::path(put, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "User id")), request_body = UserWrite,
    responses((status = 200, body = UserView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<UserView>, ApiError> {
    change_user(state, caller, id, body, Mode::Full).await
}

/// Changes some of a user's fields (superusers only).
#[utoipa::path(patch, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "User id")), request_body = UserWrite,
    responses((status = 200, body = UserView), (status = 400, description = "Field errors"),
        (status = 401, body = ErrorDetail), (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn patch_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonObject(body): JsonObject,
) -> Result<Json<UserView>, ApiError> {
    change_user(state, caller, id, body, Mode::Partial).await
}

/// Deletes a user and their tokens (superusers only).
#[utoipa::path(delete, path = "/api/v1/users/user/{id}/", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorDetail),
        (status = 403, body = ErrorDetail), (status = 404, body = ErrorDetail)),
    security(("bearer" = [])))]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.require_superuser()?;
    visible_user(&state, &caller, id).await?;
    state
        .store()
        .run(move |db| db.delete_user(UserId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
