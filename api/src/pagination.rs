//! DRF page-number pagination: `page`, `page_size` (default 10, max 100), and the
//! `{"count","next","previous","results"}` envelope with absolute links.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::header::HOST;
use axum::http::request::Parts;
use fleetmq_store::{Page, PageRequest};
use serde::Serialize;
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{IntoParams, ToSchema};

use crate::ApiError;
use crate::extract::{QueryPairs, percent_encode};

/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: u64 = 10;
/// The most items a page may hold.
pub const MAX_PAGE_SIZE: u64 = 100;

/// A list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paginated<T> {
    /// Items in the whole list.
    pub count: u64,
    /// Link to the next page, if any.
    pub next: Option<String>,
    /// Link to the previous page, if any.
    pub previous: Option<String>,
    /// This page's items.
    pub results: Vec<T>,
}

/// `page` and `page_size` as a list request gives them: the parsed query and its
/// documentation. Empty means the default (as in DRF); `page_size` above 100 is served as 100
/// (as DRF does); a `page` that is not a positive number is not found; a `page_size` that is not
/// one is a 400.
#[derive(Debug, Clone, Copy, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number (empty: the first).
    #[param(schema_with = positive_or_empty)]
    pub page: Option<i64>,
    /// Items per page (empty: 10; more than 100 is served as 100).
    #[param(schema_with = positive_or_empty)]
    pub page_size: Option<i64>,
}

/// A positive int64, or the empty string that stands for the default.
fn positive_or_empty() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0)),
        )
        .build()
        .into()
}

impl PageQuery {
    /// Reads `page` and `page_size` out of a query.
    pub fn from_query(query: &QueryPairs) -> Result<Self, ApiError> {
        let page_size = match query.get("page_size").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n >= 1 => Some(n),
                Ok(_) => {
                    return Err(ApiError::field(
                        "page_size",
                        "Ensure this value is greater than or equal to 1.",
                    ));
                }
                Err(_) => {
                    return Err(ApiError::field("page_size", "A valid integer is required."));
                }
            },
        };
        let page = match query.get("page").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                s.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(ApiError::InvalidPage)?,
            ),
        };
        Ok(Self { page, page_size })
    }
}

/// A list request's page, with what its `next`/`previous` links need (an extractor).
#[derive(Debug)]
pub struct Paging {
    number: u64,
    size: u64,
    path: String,
    host: String,
    query: QueryPairs,
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let query = QueryPairs::from_request_parts(parts, state).await?;
        let asked = PageQuery::from_query(&query)?;
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        Ok(Paging {
            number: asked.page.map_or(1, |n| n.unsigned_abs()),
            size: asked
                .page_size
                .map_or(DEFAULT_PAGE_SIZE, |n| n.unsigned_abs().min(MAX_PAGE_SIZE)),
            path: parts.uri.path().to_owned(),
            host,
            query,
        })
    }
}

impl Paging {
    /// What to ask the store for.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            offset: (self.number - 1).saturating_mul(self.size),
            limit: self.size,
        }
    }

    /// The whole query (filters are read from it).
    pub fn query(&self) -> &QueryPairs {
        &self.query
    }

    /// Builds the envelope; a page past the end is not found (page 1 of nothing is fine).
    pub fn envelope<T, U>(
        &self,
        page: Page<T>,
        view: impl Fn(T) -> U,
    ) -> Result<Json<Paginated<U>>, ApiError> {
        if self.number > 1 && self.request().offset >= page.count {
            return Err(ApiError::InvalidPage);
        }
        let has_next = self.number.saturating_mul(self.size) < page.count;
        Ok(self.links(
            page.count,
            has_next,
            page.items.into_iter().map(view).collect(),
        ))
    }

    /// The envelope of a page whose extent the store decided (telemetry pages also end at a
    /// byte budget, so page numbers do not map to offsets): `more` says whether items follow.
    /// A page past the end is not found.
    pub fn envelope_of<U>(
        &self,
        count: u64,
        results: Vec<U>,
        more: bool,
    ) -> Result<Json<Paginated<U>>, ApiError> {
        if self.number > 1 && results.is_empty() {
            return Err(ApiError::InvalidPage);
        }
        Ok(self.links(count, more, results))
    }

    /// The 1-based page number asked for.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Items per page asked for (at most [`MAX_PAGE_SIZE`]).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn links<U>(&self, count: u64, has_next: bool, results: Vec<U>) -> Json<Paginated<U>> {
        let link = |number: u64| {
            let mut pairs: Vec<(&str, String)> = self
                .query
                .0
                .iter()
                .filter(|(k, _)| k != "page")
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            if number > 1 {
                pairs.push(("page", number.to_string()));
            }
            let qs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            let sep = if qs.is_empty() { "" } else { "?" };
            format!("http://{}{}{sep}{}", self.host, self.path, qs.join("&"))
        };
        Json(Paginated {
            count,
            next: has_next.then(|| link(self.number + 1)),
            previous: (self.number > 1).then(|| link(self.number - 1)),
            results,
        })
    }

    /// The envelope of a list that cannot match anything (an unknown filter value).
    pub fn empty<U>(&self) -> Result<Json<Paginated<U>>, ApiError> {
        self.envelope(
            Page {
                count: 0,
                items: Vec::new(),
            },
            |never: U| never,
        )
    }
}
