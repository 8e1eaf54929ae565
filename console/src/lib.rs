//! The operator console: the pages an operator opens in a browser, served by the same binary
//! as the API.
//!
//! Every page is a static HTML file with ES modules that speak only the public REST API (and
//! its live event stream) with the session cookie of `/api/v1/users/session/`; nothing here
//! reads the store, so the console sees exactly what the API lets its user see. The files are
//! embedded at build time ([`assets`]); third-party libraries are vendored from the npm
//! registry at pinned versions (`vendor/update.sh`). docs/console.md says why it is built so.
//!
//! Every answer carries a Content-Security-Policy that allows scripts and styles from this
//! origin only (no inline scripts), images from the map's tile server, and connections to this
//! origin.

pub mod assets;

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Serialize;

/// Settings of the console.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Map tiles: a Leaflet URL template such as OpenStreetMap's
    /// `https://tile.openstreetmap.org/{z}/{x}/{y}.png`; empty for no tiles (the map then
    /// shows devices on a blank background, as it does offline).
    pub tile_url: String,
    /// The attribution the tile server asks for (HTML is not allowed: plain text).
    pub tile_attribution: String,
    /// Serve the files from this directory instead of the embedded copies (console
    /// development: edit a page, reload the browser).
    pub assets_dir: Option<PathBuf>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            tile_url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png".to_owned(),
            tile_attribution: "© OpenStreetMap contributors".to_owned(),
            assets_dir: None,
        }
    }
}

/// What the pages ask the server for before they draw (`/console/settings.json`).
#[derive(Debug, Serialize)]
struct Settings<'a> {
    tile_url: &'a str,
    tile_attribution: &'a str,
}

#[derive(Debug, Clone)]
struct Console {
    config: std::sync::Arc<ConsoleConfig>,
    csp: HeaderValue,
}

/// The console's routes: its pages at `/`, `/login/`, `/devices/{id}/`, `/map/`,
/// `/rollouts/`, `/rollouts/{id}/`, `/firmware/`, `/configuration/`, `/locations/` and
/// `/software/`, and its files under `/console/`.
pub fn router(config: ConsoleConfig) -> Router {
    let csp = content_security_policy(&config.tile_url);
    let state = Console {
        config: std::sync::Arc::new(config),
        csp,
    };
    Router::new()
        .route("/", page("fleet"))
        .route("/login/", page("login"))
        .route("/devices/{id}/", page("device"))
        .route("/map/", page("map"))
        .route("/rollouts/", page("rollouts"))
        .route("/rollouts/{id}/", page("rollout"))
        .route("/firmware/", page("firmware"))
        .route("/configuration/", page("configuration"))
        .route("/locations/", page("locations"))
        .route("/software/", page("software"))
        .route("/console/settings.json", get(settings))
        .route("/console/{*path}", get(file))
        .route("/favicon.ico", get(favicon))
        .with_state(state)
}

/// The policy: this origin for scripts, styles and connections; images also from the tile
/// server's origin; no framing, no plugins, no inline scripts.
fn content_security_policy(tile_url: &str) -> HeaderValue {
    let tiles = tile_origin(tile_url).unwrap_or_default();
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: {tiles}; \
         connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    // Only a tile URL with characters a header cannot carry fails here; drop the tiles then.
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors 'none'",
        )
    })
}

/// `https://{s}.tile.example.org/{z}/{x}/{y}.png` → `https://*.tile.example.org`; the
/// origin a CSP `img-src` must allow for the tiles.
fn tile_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    let host = host.replace("{s}", "*");
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*'));
    valid.then(|| format!("{scheme}://{host}"))
}

/// A page: one of the HTML files, the same for every path the route matches (the page's
/// script reads the id from the address).
fn page(name: &'static str) -> MethodRouter<Console> {
    get(
        move |State(console): State<Console>, headers: HeaderMap| async move {
            serve(&console, &format!("pages/{name}.html"), &headers).await
        },
    )
}

async fn file(
    State(console): State<Console>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&console, &path, &headers).await
}

async fn favicon(State(console): State<Console>, headers: HeaderMap) -> Response {
    serve(&console, "favicon.svg", &headers).await
}

async fn settings(State(console): State<Console>) -> Response {
    let body = serde_json::to_vec(&Settings {
        tile_url: &console.config.tile_url,
        tile_attribution: &console.config.tile_attribution,
    })
    .unwrap_or_default();
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers, &console.csp);
    response
}

/// One file: embedded, or from the development directory. Revalidated on every use
/// (`no-cache` with an `ETag`), so a new binary's pages are never mixed with old scripts.
async fn serve(console: &Console, path: &str, headers: &HeaderMap) -> Response {
    if let Some(dir) = &console.config.assets_dir {
        return serve_from_disk(console, dir, path).await;
    }
    let Some(asset) = assets::find(path) else {
        return not_found(console);
    };
    let etag = asset.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, asset.body).into_response()
    };
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type()),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(etag) {
        out.insert(header::ETAG, etag);
    }
    secure(out, &console.csp);
    response
}

async fn serve_from_disk(console: &Console, dir: &std::path::Path, path: &str) -> Response {
    let safe = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
    if !safe {
        return not_found(console);
    }
    match tokio::fs::read(dir.join(path)).await {
        Ok(body) => {
            let mut response = (StatusCode::OK, body).into_response();
            let out = response.headers_mut();
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(assets::content_type(path)),
            );
            out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            secure(out, &console.csp);
            response
        }
        Err(_) => not_found(console),
    }
}

fn not_found(console: &Console) -> Response {
    let mut response = (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"detail":"Not found."}"#,
    )
        .into_response();
    secure(response.headers_mut(), &console.csp);
    response
}

/// The headers every console answer carries.
fn secure(headers: &mut HeaderMap, csp: &HeaderValue) {
    headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_server_is_the_only_other_origin_images_may_come_from() {
        assert_eq!(
            tile_origin("https://tile.openstreetmap.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(
            tile_origin("https://{s}.tiles.example.net:8443/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tiles.example.net:8443")
        );
        assert_eq!(tile_origin(""), None);
        assert_eq!(tile_origin("javascript:alert(1)"), None);
        assert_eq!(tile_origin("https://evil.example;script-src */x"), None);
    }

    #[test]
    fn every_listed_file_has_a_type_and_its_own_validator() {
        let mut seen = std::collections::HashSet::new();
        for asset in assets::ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            assert!(seen.insert(asset.etag()), "{} shares an ETag", asset.path);
        }
        assert_eq!(
            assets::content_type("js/api.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
