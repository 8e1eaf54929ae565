//! Device calls (npm.system_update over MQTT) asked of a node that does not run the device
//! plane: it forwards them to the node that does, which calls the device and answers.
//!
//! The device's answer comes back on its `up/update/response` topic, which only the device
//! plane consumes, so the call must be made where the answer arrives. A standby node reads the
//! holder's address from the device-plane lease ([`crate::leadership`]) and posts the call to
//! its [`PATH`]; the holder makes the call as if it had been asked itself and returns the
//! outcome. Commands need no forwarding: they are stored, and the device plane picks up
//! commands other nodes stored.
//!
//! The route is served on the REST listener and authenticated by a secret the nodes share
//! through the store (`cluster-forwarding`), compared in constant time. Between nodes it is
//! plain HTTP to the address in the lease (`--public-url` or the listen address): keep that
//! traffic on a private network.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetmq_api::DeviceCallError;
use fleetmq_bridge::CallError;
use fleetmq_protocol::{Call, UpdateRequest, UpdateResponse};
use fleetmq_store::{DeviceId, Store};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};

use crate::DevicePlane;
use crate::leadership::DEVICE_PLANE;

/// Where the device-plane node takes forwarded calls.
pub const PATH: &str = "/internal/v1/device-call/{device}";
/// The header carrying the shared secret, hex.
const SECRET_HEADER: &str = "x-fleetmq-node-secret";
/// The store's name of the shared secret.
const SECRET: &str = "cluster-forwarding";
/// Largest outcome read back (a device's answer lists its images at most).
const MAX_OUTCOME: usize = 1024 * 1024;

/// What became of a forwarded call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Outcome {
    Answer { response: UpdateResponse },
    Offline,
    Timeout { seconds: u64 },
    Unavailable,
}

#[derive(Clone)]
struct Holder {
    running: Arc<OnceLock<DevicePlane>>,
    store: Store,
}

/// The route the device-plane node serves; `body_limit` bounds a forwarded call (an image
/// upload, base64 on the wire).
pub(crate) fn router(
    running: Arc<OnceLock<DevicePlane>>,
    store: Store,
    body_limit: usize,
) -> Router {
    Router::new()
        .route(PATH, post(take_call))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Holder { running, store })
}

async fn take_call(
    State(holder): State<Holder>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(secret) = shared_secret(&holder.store).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let presented = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !same(presented.as_bytes(), hex(&secret).as_bytes()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(device) = device.parse::<DeviceId>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(request) = UpdateRequest::parse(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(plane) = holder.running.get() else {
        // The lease moved on since the caller read it: it may ask again.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let outcome = match plane.bridge.device_call(device, request.call).await {
        Ok(response) => Outcome::Answer { response },
        Err(CallError::Offline) => Outcome::Offline,
        Err(CallError::Timeout(wait)) => Outcome::Timeout {
            seconds: wait.as_secs(),
        },
        Err(CallError::NotSent(_)) => Outcome::Unavailable,
    };
    axum::Json(outcome).into_response()
}

/// Asks the device-plane node to call `device`; `wait` bounds the whole exchange.
pub(crate) async fn forward(
    store: &Store,
    device: DeviceId,
    call: Call,
    wait: Duration,
) -> Result<UpdateResponse, DeviceCallError> {
    let unavailable = |why: &dyn std::fmt::Display| {
        tracing::warn!(%device, reason = %why, "a device call could not be forwarded");
        DeviceCallError::Unavailable
    };
    let lease = store
        .run(|db| db.lease(DEVICE_PLANE))
        .await
        .map_err(|e| unavailable(&e))?
        .filter(|l| fleetmq_store::Timestamp::now() < l.expires)
        .ok_or_else(|| unavailable(&"no node runs the device plane"))?;
    let address = lease
        .address
        .as_deref()
        .and_then(|a| a.strip_prefix("http://"))
        .map(|a| a.trim_end_matches('/').to_owned())
        .ok_or_else(|| unavailable(&"the device-plane node has no http:// address"))?;
    let secret = shared_secret(store).await.map_err(|e| unavailable(&e))?;
    let body = UpdateRequest::new(call).to_bytes();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| unavailable(&e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unavailable(&e))?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::post(PATH.replace("{device}", &device.to_string()))
            .header(hyper::header::HOST, &address)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(SECRET_HEADER, hex(&secret))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unavailable(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unavailable(&e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_OUTCOME)
            .collect()
            .await
            .map_err(|e| unavailable(&e))?
            .to_bytes();
        connection.abort();
        if !status.is_success() {
            return Err(unavailable(&format!(
                "the device-plane node answered {status}"
            )));
        }
        match serde_json::from_slice::<Outcome>(&bytes).map_err(|e| unavailable(&e))? {
            Outcome::Answer { response } => Ok(response),
            Outcome::Offline => Err(DeviceCallError::Offline),
            Outcome::Timeout { seconds } => Err(DeviceCallError::Timeout(seconds)),
            Outcome::Unavailable => Err(DeviceCallError::Unavailable),
        }
    };
    tokio::time::timeout(wait, exchange)
        .await
        .unwrap_or_else(|_| Err(unavailable(&"the device-plane node did not answer in time")))
}

async fn shared_secret(store: &Store) -> fleetmq_store::Result<[u8; 32]> {
    store.run(|db| db.secret(SECRET)).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"abcd", b"abcd"));
        assert!(!same(b"abcd", b"abce"));
        assert!(!same(b"abc", b"abcd"));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
