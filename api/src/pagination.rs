//! DRF page-number pagination: `page`, `page_size` (default 10, max 100), and the
//! `{"count","next","previous","results"}` envelope with absolute links.

use axum::http::HeaderMap;
use axum::http::header::HOST;
use fleetmq_store::{Page, PageRequest};
use serde::Serialize;
use utoipa::ToSchema;

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

/// The page a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageParams {
    number: u64,
    size: u64,
}

impl PageParams {
    /// Reads `page` and `page_size`; a page that is not a positive number is not found.
    pub fn from_query(query: &QueryPairs) -> Result<Self, ApiError> {
        let size = query
            .get("page_size")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map_or(DEFAULT_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE));
        let number = match query.get("page") {
            None | Some("") => 1,
            Some(s) => s
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ApiError::InvalidPage)?,
        };
        Ok(Self { number, size })
    }

    /// What to ask the store for.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            offset: (self.number - 1).saturating_mul(self.size),
            limit: self.size,
        }
    }

    /// Builds the envelope; a page past the end is not found (page 1 of nothing is fine).
    pub fn envelope<T, U>(
        &self,
        page: Page<T>,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        query: &QueryPairs,
        view: impl Fn(T) -> U,
    ) -> Result<Paginated<U>, ApiError> {
        if self.number > 1 && self.request().offset >= page.count {
            return Err(ApiError::InvalidPage);
        }
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let link = |number: u64| {
            let mut pairs: Vec<(String, String)> = query
                .0
                .iter()
                .filter(|(k, _)| k != "page")
                .cloned()
                .collect();
            if number > 1 {
                pairs.push(("page".to_owned(), number.to_string()));
            }
            let qs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            let sep = if qs.is_empty() { "" } else { "?" };
            format!("http://{host}{}{sep}{}", uri.path(), qs.join("&"))
        };
        let has_next = self.number.saturating_mul(self.size) < page.count;
        Ok(Paginated {
            count: page.count,
            next: has_next.then(|| link(self.number + 1)),
            previous: (self.number > 1).then(|| link(self.number - 1)),
            results: page.items.into_iter().map(view).collect(),
        })
    }
}
