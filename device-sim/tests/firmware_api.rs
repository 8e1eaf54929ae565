//! The `upgrade-demo`'s firmware-upgrader REST calls against a stand-in server that records
//! what it receives: paths, bearer token, JSON bodies, multipart fields.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use fleetmq_sim::firmware::{IMAGE_TYPE, Rollout};
use fleetmq_sim::registration::ApiClient;
use fleetmq_sim::update::firmware_image;
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "t0ken";

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    auth: Option<String>,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(
    State(log): State<Log>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().to_owned();
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    });
    let batch = "6f1c1a52-2a4e-4bb4-9d59-0f8f6f0d7b5e";
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (status, answer) = match (method.as_str(), path.as_str()) {
        ("POST", "/api/v1/firmware-upgrader/category/") => {
            (StatusCode::CREATED, json!({"id": "cat-1", "name": "x"}))
        }
        ("POST", "/api/v1/firmware-upgrader/build/") => {
            (StatusCode::CREATED, json!({"id": "build-1"}))
        }
        ("POST", "/api/v1/firmware-upgrader/build/build-1/image/") => (
            StatusCode::CREATED,
            json!({"id": 9, "file": "f", "type": IMAGE_TYPE}),
        ),
        ("POST", "/api/v1/firmware-upgrader/build/build-1/upgrade/") => {
            (StatusCode::CREATED, json!({"batch": batch}))
        }
        ("GET", p)
            if p == format!("/api/v1/firmware-upgrader/batch-upgrade-operation/{batch}/") =>
        {
            (
                StatusCode::OK,
                json!({
                    "id": batch, "build": "build-1", "status": "success",
                    "progress_report": "2 out of 2", "total": 2,
                    "status_counts": {"in-progress": 0, "success": 2, "failed": 0, "aborted": 0, "cancelled": 0},
                    "success_rate": 100, "failed_rate": 0, "aborted_rate": 0, "cancelled_rate": 0,
                    "created": now, "modified": now,
                    "upgrade_operations": []
                }),
            )
        }
        _ => (StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
    };
    (status, axum::Json(answer))
}

#[tokio::test]
async fn the_demo_calls_follow_the_firmware_upgrader_contract() {
    let log: Log = Arc::default();
    let app = Router::new().fallback(record).with_state(Arc::clone(&log));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = ApiClient::new(&format!("http://{addr}/"), TOKEN);
    let org = Uuid::new_v4();

    let category = api.create_category(org, "demo").await.unwrap();
    let build = api
        .create_build(&category, "2.0.1", "OpenWrt 23.05 fleetmq-sim", "notes")
        .await
        .unwrap();
    assert_eq!((category.as_str(), build.as_str()), ("cat-1", "build-1"));
    let image = firmware_image("2.0.1", 1024, 3);
    let uploaded = api
        .upload_image(&build, IMAGE_TYPE, image.clone())
        .await
        .unwrap();
    assert_eq!(uploaded["id"], 9);
    let rollout = Rollout {
        waves: Some(vec![1, 10, 100]),
        abort_failure_rate: Some(0.2),
        abort_min_sample: Some(5),
        ..Rollout::default()
    };
    let batch = api.start_batch(&build, &rollout).await.unwrap();
    let detail = api.batch(batch).await.unwrap();
    assert!(detail.is_finished());
    assert_eq!((detail.total, detail.status_counts.success), (2, 2));

    // A missing object is an error naming the status, not a panic.
    let missing = api.batch(Uuid::new_v4()).await.unwrap_err();
    assert!(missing.to_string().contains("404"), "{missing}");

    let seen = log.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some("Bearer t0ken")),
        "{seen:?}"
    );
    let json_body = |i: usize| serde_json::from_slice::<Value>(&seen[i].body).unwrap();
    assert_eq!(json_body(0), json!({"name": "demo", "organization": org}));
    assert_eq!(
        json_body(1),
        json!({"category": "cat-1", "version": "2.0.1", "os": "OpenWrt 23.05 fleetmq-sim", "changelog": "notes"})
    );
    // Multipart: a `file` part with the image bytes and a `type` field.
    let multipart = &seen[2].body;
    let text = String::from_utf8_lossy(multipart);
    assert!(text.contains("name=\"file\""), "{text}");
    assert!(text.contains("name=\"type\""), "{text}");
    assert!(text.contains(IMAGE_TYPE));
    assert!(
        multipart
            .windows(image.len())
            .any(|w| w == image.as_slice()),
        "the image bytes are in the form"
    );
    assert_eq!(
        json_body(3),
        json!({"upgrade_all": true, "waves": [1, 10, 100],
               "abort_threshold": {"failure_rate": 0.2, "min_sample": 5}})
    );
    assert_eq!(
        seen[..4]
            .iter()
            .map(|s| s.path.as_str())
            .collect::<Vec<_>>(),
        [
            "/api/v1/firmware-upgrader/category/",
            "/api/v1/firmware-upgrader/build/",
            "/api/v1/firmware-upgrader/build/build-1/image/",
            "/api/v1/firmware-upgrader/build/build-1/upgrade/",
        ]
    );
    assert_eq!(
        seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["POST", "POST", "POST", "POST", "GET", "GET"]
    );
}
