//! A rendered configuration archive as an HTTP download, as OpenWISP sends it: the tar.gz
//! bytes as `application/octet-stream`, an attachment named after the device or template.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fleetmq_store::RenderedConfig;

/// The download of `rendered`, saved as `<name>.tar.gz` (characters a file name should not
/// carry become `_`). The checksum rides along in `X-Config-Checksum` so a client can check
/// what it got without hashing it first.
pub fn archive_response(name: &str, rendered: RenderedConfig) -> Response {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut response = rendered.archive.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}.tar.gz\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&rendered.checksum) {
        headers.insert("x-config-checksum", v);
    }
    response
}
