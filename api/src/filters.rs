//! List filters: [`Filters<T>`] reads a list's query into one typed struct (which also documents
//! it, deriving `IntoParams`), by the rules bodies follow, with django-filter's messages. An
//! empty value is no filter, as in django-filter.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use fleetmq_store::{OrgId, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::{UUID_OR_EMPTY, parse_uuid, read, text_field};
use crate::extract::QueryPairs;
use crate::{ApiError, AppState};

/// A list's filters, read from the query into `T`.
#[derive(Debug)]
pub struct Filters<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Filters<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let QueryPairs(pairs) = QueryPairs::from_request_parts(parts, state).await?;
        let mut map = Map::new();
        for (name, value) in pairs {
            // The last value given wins (Django's `QueryDict.get`); empty is no filter.
            if value.is_empty() {
                map.remove(&name);
            } else {
                map.insert(name, Value::String(value));
            }
        }
        read(map, Map::new())
            .map(Filters)
            .map_err(ApiError::Validation)
    }
}

/// django-filter's message for a value outside a choice filter's choices.
pub fn invalid_choice(value: &str) -> String {
    format!("Select a valid choice. {value} is not one of the available choices.")
}

/// A choice filter's schema: a string among `choices`, or empty (no filter).
pub fn choice_schema<'a>(choices: impl IntoIterator<Item = &'a str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(std::iter::once("").chain(choices)))
}

text_field!(
    /// A filter on an object id.
    UuidFilter(Uuid),
    |s: &str| parse_uuid(s).ok_or_else(|| format!("“{s}” is not a valid UUID.")),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(UUID_OR_EMPTY)),
);

text_field!(
    /// A filter on a yes/no property.
    BoolFilter(bool),
    |s: &str| match s {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        other => Err(invalid_choice(other)),
    },
    choice_schema(["true", "false", "True", "False", "1", "0"]),
);

text_field!(
    /// A filter on a point in time: RFC 3339, `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (UTC) or a bare
    /// date (midnight UTC).
    TimeFilter(Timestamp),
    |s: &str| Timestamp::parse_lenient(s).ok_or("Enter a valid date/time."),
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Empty (no filter), RFC 3339, `YYYY-MM-DD HH:MM[:SS[.ffffff]]` (UTC) or `YYYY-MM-DD`"
        )),
);

/// The organization a list is narrowed to by `organization` (an id) and `organization_slug`:
/// `Ok(None)` = no narrowing; `Ok(Some(None))` = nothing can match (unknown slug).
pub(crate) async fn narrowed_org(
    state: &AppState,
    caller: &Caller,
    organization: Option<Uuid>,
    organization_slug: Option<String>,
) -> Result<Option<Option<OrgId>>, ApiError> {
    let mut own = None;
    if let Some(id) = organization {
        if !caller.manages(OrgId(id)) {
            return Err(ApiError::field(
                "organization",
                "Select a valid choice. That choice is not one of the available choices.",
            ));
        }
        own = Some(Some(OrgId(id)));
    }
    if let Some(slug) = organization_slug {
        let org = state
            .store()
            .run(move |db| db.organization_by_slug(&slug))
            .await?
            .filter(|o| caller.manages(o.id))
            .map(|o| o.id);
        own = match (own, org) {
            (Some(Some(a)), Some(b)) if a != b => Some(None),
            (_, found) => Some(found),
        };
    }
    Ok(own)
}
