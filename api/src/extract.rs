//! Extractors whose rejections are `ApiError`s, so malformed input gets the API's error shape.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use uuid::Uuid;

use crate::{ApiError, AppState};

/// Bodies past this many bytes are drained and refused rather than read into memory.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// A JSON object body: checks the content type, caps the size, and parses.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let CappedBody {
            content_type,
            essence,
            bytes,
        } = CappedBody::read(req, state).await?;
        if !CappedBody::is_json(&essence) {
            if bytes.is_empty() && essence.is_empty() {
                return Ok(JsonObject(Map::new()));
            }
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        // JSON's whitespace only (RFC 8259 §2): a form feed is not, so `\x0c` is malformed.
        if bytes
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Ok(JsonObject(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(other) => Err(ApiError::field(
                "non_field_errors",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    kind(&other)
                ),
            )),
            Err(e) => Err(ApiError::BadRequest(format!("JSON parse error - {e}"))),
        }
    }
}

/// A request body read up to the JSON body limit, with its content type.
pub(crate) struct CappedBody {
    /// The `Content-Type` header as sent (for the 415 message).
    pub content_type: String,
    /// Its media type, lower-case, without parameters.
    pub essence: String,
    /// The body.
    pub bytes: Vec<u8>,
}

impl CappedBody {
    /// Reads the body (413 past `json_body_limit`).
    pub(crate) async fn read(req: Request, state: &AppState) -> Result<CappedBody, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let bytes = read_capped(req.into_body(), state.config().json_body_limit).await?;
        Ok(CappedBody {
            content_type,
            essence,
            bytes,
        })
    }

    /// Whether a media type is JSON (`application/json` or `…+json`).
    pub(crate) fn is_json(essence: &str) -> bool {
        essence == "application/json" || essence.ends_with("+json")
    }
}

/// Reads at most `limit` bytes; a larger body is drained (so the client gets its answer on a
/// healthy connection) and refused with 413.
pub(crate) async fn read_capped(
    mut body: axum::body::Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("Could not read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                out.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(out)
}

/// How DRF names JSON value kinds in messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The `{id}` of a detail route; anything that is not a UUID is simply not found.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Uuid);

impl IntoParams for PathId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("Object id"))
                .schema(Some(uuid_schema()))
                .build(),
        ]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound)?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError::NotFound)
    }
}

fn uuid_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
        .build()
}

/// The raw query string as ordered pairs (filters and paging read from it).
#[derive(Debug, Clone, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The last value given for `name` (Django's `QueryDict.get`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let pairs = form_urlencoded_pairs(query);
        Ok(QueryPairs(pairs))
    }
}

/// `a=b&c=d` pairs, percent-decoded (query strings and form bodies).
pub(crate) fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a query value for the `next`/`previous` links.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client's address when the server knows it (not in handler tests without a socket).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddr(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let pairs = form_urlencoded_pairs(
            "created__gte=2024-01-01T00%3A00%3A00%2B00%3A00&x=a+b&bad=%zz&end=%4",
        );
        assert_eq!(pairs[0].1, "2024-01-01T00:00:00+00:00");
        assert_eq!(pairs[1].1, "a b");
        assert_eq!(pairs[2].1, "%zz");
        assert_eq!(pairs[3].1, "%4");
    }
}
