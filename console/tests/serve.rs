//! What a browser gets from the console's routes: pages with their security headers, files
//! revalidated by ETag, nothing outside the console's files.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fleetmq_console::{ConsoleConfig, router};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(config: ConsoleConfig, path: &str, etag: Option<&str>) -> axum::response::Response {
    let mut request = Request::get(path);
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    router(config)
        .oneshot(request.body(Body::empty()).expect("a request"))
        .await
        .expect("an answer")
}

async fn text(response: axum::response::Response) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn every_page_is_html_under_a_policy_that_forbids_inline_scripts() {
    for path in [
        "/",
        "/login/",
        "/devices/0b7f3c1e-3a44-4c55-9a1b-2f1d0e6c7a10/",
        "/map/",
        "/rollouts/",
        "/rollouts/6f0e/",
        "/firmware/",
        "/configuration/",
        "/locations/",
        "/software/",
    ] {
        let response = get(ConsoleConfig::default(), path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(
            csp.contains("img-src 'self' data: https://tile.openstreetmap.org;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let body = text(response).await;
        assert!(body.starts_with("<!doctype html>"), "{path}");
        // Scripts only as files of this origin: no inline code, no style attributes.
        for (i, _) in body.match_indices("<script") {
            let tag = &body[i..i + body[i..].find('>').expect("a closed tag")];
            assert!(tag.contains("src=\"/console/"), "{path}: {tag}");
        }
        assert!(!body.contains(" style="), "{path} has an inline style");
    }
}

#[tokio::test]
async fn a_file_is_revalidated_by_its_etag() {
    let first = get(ConsoleConfig::default(), "/console/js/api.js", None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
    let etag = first.headers()[header::ETAG]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let again = get(ConsoleConfig::default(), "/console/js/api.js", Some(&etag)).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(text(again).await.is_empty());
    let other = get(
        ConsoleConfig::default(),
        "/console/js/api.js",
        Some("\"stale\""),
    )
    .await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn nothing_but_the_console_files_is_served() {
    for path in [
        "/console/js/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
    ] {
        let response = get(ConsoleConfig::default(), path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(text(response).await, r#"{"detail":"Not found."}"#);
    }
    // Served from a directory while developing: still only what lies below it.
    let dir = tempfile_dir();
    std::fs::create_dir_all(dir.join("js")).expect("a js directory");
    std::fs::write(dir.join("js/x.js"), "export const x = 1;\n").expect("a file");
    std::fs::write(dir.join("../secret.txt"), "secret").expect("a file outside");
    let config = ConsoleConfig {
        assets_dir: Some(dir.clone()),
        ..ConsoleConfig::default()
    };
    let response = get(config.clone(), "/console/js/x.js", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "export const x = 1;\n");
    for path in [
        "/console/../secret.txt",
        "/console/%2e%2e/secret.txt",
        "/console/.hidden",
    ] {
        let response = get(config.clone(), path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_tile_server_is_a_setting_the_pages_read_and_the_policy_allows() {
    let config = ConsoleConfig {
        tile_url: "https://{s}.tiles.example.net/{z}/{x}/{y}.png".to_owned(),
        tile_attribution: "Example tiles".to_owned(),
        assets_dir: None,
    };
    let response = get(config.clone(), "/console/settings.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        csp.contains("img-src 'self' data: https://*.tiles.example.net;"),
        "{csp}"
    );
    let settings: serde_json::Value = serde_json::from_str(&text(response).await).expect("JSON");
    assert_eq!(
        settings,
        serde_json::json!({"tile_url": "https://{s}.tiles.example.net/{z}/{x}/{y}.png",
                           "tile_attribution": "Example tiles"})
    );
    // No tiles: images from this origin only.
    let offline = ConsoleConfig {
        tile_url: String::new(),
        ..config
    };
    let response = get(offline, "/", None).await;
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ASCII");
    assert!(csp.contains("img-src 'self' data: ;"), "{csp}");
}

/// A fresh directory two levels below the system's temporary directory (so `..` of it is
/// a directory of this test too).
fn tempfile_dir() -> std::path::PathBuf {
    let base = std::env::temp_dir().join(format!(
        "fleetmq-console-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let dir = base.join("assets");
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
