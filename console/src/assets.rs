//! The console's files, embedded at build time: each page, script, stylesheet and vendored
//! library under `assets/`, with its media type and a strong validator.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path below `assets/`, e.g. `js/api.js`.
    pub path: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

impl Asset {
    /// The `Content-Type` its extension calls for.
    pub fn content_type(&self) -> &'static str {
        content_type(self.path)
    }

    /// A strong `ETag`: the first 16 bytes of the body's SHA-256, computed once.
    pub fn etag(&self) -> &'static str {
        static TAGS: OnceLock<Vec<String>> = OnceLock::new();
        let tags = TAGS.get_or_init(|| {
            ASSETS
                .iter()
                .map(|asset| {
                    let digest = Sha256::digest(asset.body);
                    format!("\"{}\"", hex::encode(&digest[..16]))
                })
                .collect()
        });
        ASSETS
            .iter()
            .position(|asset| asset.path == self.path)
            .and_then(|i| tags.get(i))
            .map_or("\"\"", String::as_str)
    }
}

/// The media type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") | Some("md") | None => "text/plain; charset=utf-8",
        Some(_) => "application/octet-stream",
    }
}

/// The embedded file at `path` (below `assets/`).
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        /// Every embedded file.
        pub static ASSETS: &[Asset] = &[$(Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
        }),*];
    };
}

assets![
    "pages/fleet.html",
    "pages/login.html",
    "pages/device.html",
    "pages/map.html",
    "pages/rollouts.html",
    "pages/rollout.html",
    "pages/firmware.html",
    "pages/configuration.html",
    "pages/locations.html",
    "pages/software.html",
    "css/console.css",
    "css/device.css",
    "css/rollouts.css",
    "css/configuration.css",
    "favicon.svg",
    "js/api.js",
    "js/dom.js",
    "js/live.js",
    "js/layout.js",
    "js/login.js",
    "js/fleet.js",
    "js/device.js",
    "js/map.js",
    "js/rollouts.js",
    "js/rollout.js",
    "js/firmware.js",
    "js/configuration.js",
    "js/locations.js",
    "js/software.js",
    "vendor/SHA256SUMS",
    "vendor/leaflet/leaflet.js",
    "vendor/leaflet/leaflet.css",
    "vendor/leaflet/LICENSE",
    "vendor/leaflet/VERSION",
    "vendor/leaflet.markercluster/leaflet.markercluster.js",
    "vendor/leaflet.markercluster/MarkerCluster.css",
    "vendor/leaflet.markercluster/MarkerCluster.Default.css",
    "vendor/leaflet.markercluster/MIT-LICENCE.txt",
    "vendor/leaflet.markercluster/VERSION",
    "vendor/uplot/uPlot.esm.js",
    "vendor/uplot/uPlot.min.css",
    "vendor/uplot/LICENSE",
    "vendor/uplot/VERSION",
];
