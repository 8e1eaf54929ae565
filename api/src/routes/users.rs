//! `/api/v1/users/token/` and `/api/v1/users/user/`: tokens and accounts.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use fleetmq_store::{
    Group, Membership, OrgId, Password, PasswordHashString, Scope, User, UserFields, UserId,
    Username,
};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Accounts, Add, Authorized, Change, Delete, View};
use crate::body::{
    Body, Bounded, CreateRequires, Email, Nested, Pk, REQUIRED, does_not_exist, parse_text,
    text_field,
};
use crate::extract::{ClientAddr, PathId};
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// The user and token routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(obtain_token))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, change_user, delete_user))
}

/// Credentials exchanged for a token (or a console session).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Login name.
    username: Given,
    /// The user's password.
    password: Given,
}

text_field!(
    /// Text that may not be empty; taken as sent (a password may begin with a space).
    Given(String),
    given,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1)),
);

fn given(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        Err("This field may not be blank.")
    } else {
        Ok(s.to_owned())
    }
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

/// What a client sends to create, replace or change a user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserWrite {
    /// Login name.
    #[schema(required = true, nullable = false)]
    username: Option<UsernameField>,
    /// Required on create; never shown, and kept when a replace leaves it out.
    #[schema(nullable = false)]
    password: Option<PasswordField>,
    /// Address.
    #[schema(nullable = false)]
    email: Option<Email>,
    /// Given name.
    #[schema(nullable = false)]
    first_name: Option<Bounded<150>>,
    /// Family name.
    #[schema(nullable = false)]
    last_name: Option<Bounded<150>>,
    /// Bypasses permissions and tenancy.
    #[schema(nullable = false)]
    is_superuser: Option<bool>,
    /// Inactive users cannot authenticate.
    #[schema(nullable = false)]
    is_active: Option<bool>,
    /// Permission groups by name.
    #[schema(nullable = false)]
    groups: Option<GroupNames>,
    /// The organizations the user belongs to (replaces all memberships).
    #[schema(nullable = false)]
    organization_users: Option<Memberships>,
}

impl CreateRequires for UserWrite {
    const ON_CREATE: &'static [&'static str] = &["password"];
}

text_field!(
    /// A login name: letters, digits and `@ . + - _`.
    UsernameField(Username),
    Username::parse,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(150))
        .pattern(Some(r"^[\w.@+-]+$")),
);

/// A new password: at least 8 characters. (Not a [`text_field!`]: passwords are not
/// compared.)
#[derive(Debug)]
pub struct PasswordField(Password);

impl<'de> Deserialize<'de> for PasswordField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_text(deserializer, Password::parse).map(PasswordField)
    }
}

impl PartialSchema for PasswordField {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(8))
            .into()
    }
}

impl ToSchema for PasswordField {}

/// The items of a list field; anything else gets this API's "Expected a list of items."
fn list_items<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Array(items) => Ok(items),
        _ => Err(de::Error::custom("Expected a list of items.")),
    }
}

/// Permission groups by name (`Operator`, `Administrator`); repeats count once.
#[derive(Debug)]
pub struct GroupNames(Vec<Group>);

impl<'de> Deserialize<'de> for GroupNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut groups = Vec::new();
        for item in list_items(deserializer)? {
            let Some(group) = item.as_str().and_then(Group::parse) else {
                let name = item
                    .as_str()
                    .map_or_else(|| item.to_string(), str::to_owned);
                return Err(de::Error::custom(format!(
                    "Object with name={name} does not exist."
                )));
            };
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        Ok(GroupNames(groups))
    }
}

impl PartialSchema for GroupNames {
    fn schema() -> RefOr<Schema> {
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([Group::Operator.name(), Group::Administrator.name()]));
        ArrayBuilder::new().items(name).into()
    }
}

impl ToSchema for GroupNames {}

/// A membership as a client sends it (documented by [`Memberships`]).
#[derive(Debug, Deserialize, ToSchema)]
struct MembershipWrite {
    /// Organization id.
    organization: Pk,
    /// Manager of that organization.
    is_admin: Option<bool>,
}

/// A user's memberships, one per organization (a repeated organization counts once). A
/// membership that is not an object reads as an empty one; the errors shown are those of the
/// last invalid membership.
#[derive(Debug)]
pub struct Memberships(Vec<Membership>);

impl<'de> Deserialize<'de> for Memberships {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut memberships: Vec<Membership> = Vec::new();
        let mut invalid = None;
        for item in list_items(deserializer)? {
            let item = match item {
                object @ Value::Object(_) => object,
                _ => Value::Object(Map::new()),
            };
            match Nested::<MembershipWrite>::deserialize(item) {
                Ok(Nested(m)) => {
                    let organization = OrgId(m.organization.0);
                    if !memberships.iter().any(|m| m.organization == organization) {
                        memberships.push(Membership {
                            organization,
                            is_admin: m.is_admin.unwrap_or(false),
                        });
                    }
                }
                Err(e) => invalid = Some(e),
            }
        }
        match invalid {
            Some(e) => Err(de::Error::custom(e)),
            None => Ok(Memberships(memberships)),
        }
    }
}

impl PartialSchema for Memberships {
    fn schema() -> RefOr<Schema> {
        let membership = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("organization", Pk::schema())
            .required("organization")
            .property("is_admin", ObjectBuilder::new().schema_type(Type::Boolean));
        ArrayBuilder::new().items(membership).into()
    }
}

impl ToSchema for Memberships {}

impl UserWrite {
    /// The user's fields after this write, over `current` or new ones, and the new password
    /// if one was given. Memberships must name existing organizations.
    async fn apply(
        self,
        state: &AppState,
        current: Option<UserFields>,
    ) -> Result<(UserFields, Option<Password>), ApiError> {
        if let Some(Memberships(memberships)) = &self.organization_users {
            let wanted: Vec<OrgId> = memberships.iter().map(|m| m.organization).collect();
            let missing = state
                .store()
                .run(move |db| {
                    let mut missing = Vec::new();
                    for org in wanted {
                        if db.organization(org)?.is_none() {
                            missing.push(json!(does_not_exist(&org.to_string())));
                        }
                    }
                    Ok(missing)
                })
                .await?;
            if !missing.is_empty() {
                let mut errors = Map::new();
                errors.insert("organization_users".to_owned(), Value::Array(missing));
                return Err(ApiError::Validation(errors));
            }
        }
        let username = self.username.map(|u| u.0);
        let mut fields = match current {
            Some(current) => current,
            None => UserFields {
                username: username
                    .clone()
                    .ok_or_else(|| ApiError::field("username", REQUIRED))?,
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
        if let Some(v) = self.email {
            fields.email = v.0;
        }
        if let Some(v) = self.first_name {
            fields.first_name = v.0;
        }
        if let Some(v) = self.last_name {
            fields.last_name = v.0;
        }
        if let Some(v) = self.is_superuser {
            fields.is_superuser = v;
        }
        if let Some(v) = self.is_active {
            fields.is_active = v;
        }
        if let Some(v) = self.groups {
            fields.groups = v.0;
        }
        if let Some(v) = self.organization_users {
            fields.memberships = v.0;
        }
        Ok((fields, self.password.map(|p| p.0)))
    }
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

/// A token request counted against its client's address: refused with 429 past the limit,
/// before its body is read (an extractor, so it runs ahead of [`Body`]).
pub(crate) struct TokenAttempt;

impl FromRequestParts<AppState> for TokenAttempt {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddr(peer) = ClientAddr::from_request_parts(parts, state).await?;
        if let Some(peer) = peer {
            state.token_throttle().check(peer)?;
        }
        Ok(TokenAttempt)
    }
}

/// Exchanges a username and password for a new API token.
#[utoipa::path(post, path = "/api/v1/users/token/", tag = "users", request_body = TokenRequest,
    responses((status = 200, body = TokenView),
        (status = 400, description = "{\"non_field_errors\": [\"Unable to log in with provided credentials.\"]}, or field errors"),
        (status = 429, description = "Too many attempts from this address", body = ErrorDetail),
        (status = 503, description = "Too many password checks in progress; retry after `Retry-After` seconds", body = ErrorDetail)))]
async fn obtain_token(
    State(state): State<AppState>,
    _: TokenAttempt,
    body: Body<TokenRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let (token, _) = log_in(&state, body.read()?).await?;
    Ok(Json(TokenView {
        token: token.as_str().to_owned(),
    }))
}

/// A new token for a username and password of an active user, and the user; the API's error
/// otherwise.
pub(crate) async fn log_in(
    state: &AppState,
    credentials: TokenRequest,
) -> Result<(fleetmq_store::Token, User), ApiError> {
    let (Given(username), Given(password)) = (credentials.username, credentials.password);
    // Each check holds ~19 MiB for its duration: bounded, the peak stays flat.
    let permit = state.password_check()?;
    let token = state
        .store()
        .run(move |db| {
            let _permit = permit;
            let user = db.user_by_username(&username)?;
            let verified = match &user {
                Some(user) => user.password.verify(&password) && user.fields.is_active,
                None => {
                    verify_decoy(&password);
                    false
                }
            };
            match user {
                Some(user) if verified => db.create_token(user.id).map(|t| Some((t, user))),
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
    Ok(token)
}

/// Lists users: everyone for superusers, members of the managed organizations for managers.
#[utoipa::path(get, path = "/api/v1/users/user/", tag = "users", params(PageQuery),
    responses((status = 200, body = Paginated<UserView>)), security(("bearer" = [])))]
async fn list_users(
    State(state): State<AppState>,
    auth: Authorized<Accounts, View>,
    paging: Paging,
) -> Result<Json<Paginated<UserView>>, ApiError> {
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_users(&auth.scope, request))
        .await?;
    paging.envelope(page, view)
}

/// Creates a user (superusers only).
#[utoipa::path(post, path = "/api/v1/users/user/", tag = "users", request_body = UserWrite,
    responses((status = 201, body = UserView)), security(("bearer" = [])))]
async fn create_user(
    State(state): State<AppState>,
    _: Authorized<Accounts, Add>,
    body: Body<UserWrite>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let (fields, password) = body.read_new()?.apply(&state, None).await?;
    let password = password.ok_or_else(|| ApiError::field("password", REQUIRED))?;
    let user = state
        .store()
        .run(move |db| db.create_user(fields, password))
        .await?;
    Ok((StatusCode::CREATED, Json(view(user))))
}

/// The user `id` if it is in `scope` (a member of one of its organizations); else not found.
async fn visible_user(state: &AppState, scope: &Scope, id: Uuid) -> Result<User, ApiError> {
    let user = state.store().run(move |db| db.user(UserId(id))).await?;
    user.filter(|u| match scope {
        Scope::All => true,
        Scope::Orgs(orgs) => u
            .fields
            .memberships
            .iter()
            .any(|m| orgs.contains(&m.organization)),
    })
    .ok_or(ApiError::NotFound)
}

/// Shows one user.
#[utoipa::path(get, path = "/api/v1/users/user/{id}/", tag = "users", params(PathId),
    responses((status = 200, body = UserView)), security(("bearer" = [])))]
async fn get_user(
    State(state): State<AppState>,
    auth: Authorized<Accounts, View>,
    PathId(id): PathId,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(view(visible_user(&state, &auth.scope, id).await?)))
}

/// Replaces a user, or with PATCH changes some of their fields (superusers only). A replace
/// that leaves out `password` keeps it.
#[utoipa::path(method(put, patch), path = "/api/v1/users/user/{id}/", tag = "users",
    params(PathId), request_body = UserWrite, responses((status = 200, body = UserView)),
    security(("bearer" = [])))]
async fn change_user(
    State(state): State<AppState>,
    auth: Authorized<Accounts, Change>,
    PathId(id): PathId,
    body: Body<UserWrite>,
) -> Result<Json<UserView>, ApiError> {
    let current = visible_user(&state, &auth.scope, id).await?;
    let (fields, password) = body.read()?.apply(&state, Some(current.fields)).await?;
    let user = state
        .store()
        .run(move |db| db.update_user(UserId(id), fields, password))
        .await?;
    Ok(Json(view(user)))
}

/// Deletes a user and their tokens (superusers only).
#[utoipa::path(delete, path = "/api/v1/users/user/{id}/", tag = "users", params(PathId),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_user(
    State(state): State<AppState>,
    auth: Authorized<Accounts, Delete>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    visible_user(&state, &auth.scope, id).await?;
    state
        .store()
        .run(move |db| db.delete_user(UserId(id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
