//! `ApiError`: every failure a handler can return, rendered as the Django REST framework bodies
//! OpenWISP clients parse (`{"detail": ...}` or `{"field": ["message"]}`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetmq_store::{StoreError, Unique};
use serde_json::{Map, Value, json};

/// Attached to 5xx responses so the logging middleware can say what went wrong, once.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

/// An error answer of the API.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with field → messages (possibly nested, `__all__`, `non_field_errors`).
    Validation(Map<String, Value>),
    /// 400 with a `detail` message (malformed JSON and similar).
    BadRequest(String),
    /// 400 with an `error` message (OpenWISP's firmware endpoints use this shape).
    BadRequestError(String),
    /// 401: no credentials.
    NotAuthenticated,
    /// 401: credentials given but wrong.
    InvalidToken(&'static str),
    /// 403 with a message.
    Forbidden(String),
    /// 404.
    NotFound,
    /// 404 for a page past the end.
    InvalidPage,
    /// 405.
    MethodNotAllowed(String),
    /// 409 with an `error` message.
    Conflict(String),
    /// 413.
    PayloadTooLarge(usize),
    /// 415.
    UnsupportedMediaType(String),
    /// 503: a dependency is down.
    Unavailable(String),
    /// 504: a dependency did not answer in time.
    GatewayTimeout(String),
    /// 429: too many attempts; retry after this many seconds.
    Throttled(u64),
    /// 503: the server is at its bound for this kind of work (password checks); retry after
    /// this many seconds.
    Overloaded(u64),
    /// 500: a bug or a broken disk; the body says nothing internal.
    Internal(String),
}

/// DRF's default message for a permission failure.
pub const PERMISSION_DENIED: &str = "You do not have permission to perform this action.";
/// OpenWISP's message for a user who manages no organization.
pub const NOT_A_MANAGER: &str =
    "User is not a manager of the organization to which the requested resource belongs.";

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) | ApiError::BadRequestError(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotAuthenticated | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::InvalidPage => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 400 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut map = Map::new();
        map.insert(field.to_owned(), json!([message.into()]));
        ApiError::Validation(map)
    }

    /// 403 for a missing permission.
    pub fn permission_denied() -> Self {
        ApiError::Forbidden(PERMISSION_DENIED.to_owned())
    }

    fn body(&self) -> Value {
        match self {
            ApiError::Validation(map) => Value::Object(map.clone()),
            ApiError::BadRequestError(m) | ApiError::Conflict(m) => json!({ "error": m }),
            ApiError::BadRequest(m)
            | ApiError::Forbidden(m)
            | ApiError::Unavailable(m)
            | ApiError::GatewayTimeout(m) => {
                json!({ "detail": m })
            }
            ApiError::NotAuthenticated => {
                json!({ "detail": "Authentication credentials were not provided." })
            }
            ApiError::InvalidToken(m) => json!({ "detail": m }),
            ApiError::NotFound => json!({ "detail": "Not found." }),
            ApiError::InvalidPage => json!({ "detail": "Invalid page." }),
            ApiError::MethodNotAllowed(method) => {
                json!({ "detail": format!("Method \"{method}\" not allowed.") })
            }
            ApiError::PayloadTooLarge(limit) => {
                json!({ "detail": format!("Request body is too large (the limit is {limit} bytes).") })
            }
            ApiError::UnsupportedMediaType(ct) => {
                json!({ "detail": format!("Unsupported media type \"{ct}\" in request.") })
            }
            ApiError::Internal(_) => json!({ "detail": "A server error occurred." }),
            ApiError::Throttled(wait) => json!({
                "detail": format!("Request was throttled. Expected available in {wait} seconds.")
            }),
            ApiError::Overloaded(wait) => json!({
                "detail": format!("The server is busy. Expected available in {wait} seconds.")
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"api\""),
            );
        }
        if let ApiError::Throttled(wait) | ApiError::Overloaded(wait) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        if let ApiError::Internal(message) = self {
            response.extensions_mut().insert(InternalError(message));
        }
        response
    }
}

/// How OpenWISP words a configuration its renderer refuses, with the JSON pointer of the bad
/// value.
pub fn invalid_netjson(e: &fleetmq_store::InvalidNetjson) -> String {
    format!(
        "Invalid configuration triggered by \"#{}\", validator says:\n\n{}",
        e.pointer, e.message
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Unique(rule) => {
                let (field, message) = match rule {
                    Unique::OrganizationSlug => {
                        ("slug", "organization with this slug already exists.")
                    }
                    Unique::Username => ("username", "A user with that username already exists."),
                    Unique::UserEmail => ("email", "User with this Email address already exists."),
                    Unique::DeviceName => (
                        "non_field_errors",
                        "The fields organization, name must make a unique set.",
                    ),
                    Unique::DeviceMac => (
                        "non_field_errors",
                        "The fields organization, mac_address must make a unique set.",
                    ),
                    Unique::DeviceKey => ("key", "device with this key already exists."),
                    Unique::CategoryName => (
                        "non_field_errors",
                        "The fields name, organization must make a unique set.",
                    ),
                    Unique::BuildVersion => (
                        "non_field_errors",
                        "The fields category, version must make a unique set.",
                    ),
                    Unique::ImageType => (
                        "non_field_errors",
                        "The fields build, type must make a unique set.",
                    ),
                    Unique::ImageTypeName => {
                        ("name", "An image type with this name already exists.")
                    }
                    Unique::TemplateName | Unique::GroupName => (
                        "non_field_errors",
                        "The fields organization, name must make a unique set.",
                    ),
                    Unique::SharedTemplateName => (
                        "name",
                        "There is already another shared template with this name. Shared \
                         objects are visible to all organizations and must have unique names \
                         to avoid confusion.",
                    ),
                    Unique::TemplateNameOfOrganization => (
                        "name",
                        "There is already a template of another organization with this name. \
                         Shared objects are visible to all organizations and must have unique \
                         names to avoid confusion.",
                    ),
                    Unique::FloorplanFloor => (
                        "non_field_errors",
                        "The fields location, floor must make a unique set.",
                    ),
                    Unique::SharedSecret => (
                        "shared_secret",
                        "organization config settings with this shared secret already exists.",
                    ),
                    Unique::VpnName => (
                        "non_field_errors",
                        "The fields organization, name must make a unique set.",
                    ),
                    Unique::SoftwareVersion => {
                        ("version", "This version of the application already exists.")
                    }
                    Unique::ConnectionCredentials => (
                        "non_field_errors",
                        "The fields device, credentials must make a unique set.",
                    ),
                };
                ApiError::field(field, message)
            }
            StoreError::InUse => ApiError::Unavailable(e.to_string()),
            // PostgreSQL unreachable or its connections all busy past the wait: try again.
            StoreError::Postgres(_) | StoreError::PostgresPool(_) => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::Unavailable("the store's database is unavailable".to_owned())
            }
            StoreError::InvalidConfig { device, source } => ApiError::field(
                "config",
                format!(
                    "{} (configuration of device {device})",
                    invalid_netjson(&source)
                ),
            ),
            StoreError::Pki { field, source } => ApiError::field(field, source.to_string()),
            StoreError::Rule { field, message } => ApiError::field(field, message),
            StoreError::InvalidVpnConfig(source) => {
                ApiError::field("config", invalid_netjson(&source))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}
