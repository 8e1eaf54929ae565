//! npm.system_update 2.0 over MQTT: the device-side firmware API, carried as request/response
//! messages plus state notifications instead of HTTP.
//!
//! ```text
//! server ── down/update/request  {"id","method","path","body"} ──▶ device
//! server ◀── up/update/response  {"id","status","body"}        ── device   (answers a request)
//! server ◀── up/update           update resource               ── device   (every state change, and on connect)
//! server ◀── up/images           images resource              ── device   (every state change, and on connect)
//! ```
//!
//! `method` and `path` are the seed's verbs and resource paths relative to
//! `/api/npm.system_update/2.0/` (`images`, `images/items/{id}`, `images/fetch`,
//! `images/upload`, `update`, `update/init`, `update/reset`, `update/start`); [`Call`] is
//! their closed set. `status` is the HTTP status the device would have answered (200 with a
//! body, 204 without, 400 bad request, 404 unknown image, 409 not allowed in this state).
//! The resources ([`ImagesResource`], [`UpdateResource`]) keep the seed's field names; unknown
//! fields from newer devices are ignored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ProtocolError, from_json, to_json};

/// State of an update image on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageState {
    /// Being downloaded or uploaded; `progress` tells how far.
    Uploading,
    /// Downloaded; the device checks it.
    Validating,
    /// The transfer failed (network, disk); retrying may help.
    UploadError,
    /// Checked and ready to install; `checksum` is its SHA-256.
    Valid,
    /// Not an image this device can install.
    Invalid,
}

/// The seed's `image` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageResource {
    /// Device-local identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Lower-case hex SHA-256 of the image, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Progress of the transfer, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Where the image is.
    pub state: ImageState,
    /// Human-readable detail of the state.
    pub state_description: String,
    /// Firmware version inside the image, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The seed's `images` resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagesResource {
    /// Images on the device.
    #[serde(default)]
    pub items: Vec<ImageResource>,
}

impl ImagesResource {
    /// Parses a payload received on `up/images`.
    pub fn parse(payload: &[u8]) -> Result<ImagesResource, ProtocolError> {
        from_json("images", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The image with this device-local id.
    pub fn item(&self, id: u64) -> Option<&ImageResource> {
        self.items.iter().find(|i| i.id == Some(id))
    }
}

/// State of the device's update process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpdateState {
    /// Nothing in progress.
    Idle,
    /// `update/init` accepted; preparing.
    Initializing,
    /// Ready for `update/start`.
    Initialized,
    /// Flashing; the device reboots at the end.
    Running,
    /// The update failed and the device still runs its previous firmware.
    FailedGraceful,
    /// The update failed and the device may be unusable.
    FailedCritical,
}

/// One entry of `update_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it was installed, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    /// What was installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The seed's `update` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateResource {
    /// Time of the last transition, Unix seconds.
    pub last_state_time: i64,
    /// Where the update process is.
    pub state: UpdateState,
    /// Human-readable detail of the state.
    pub state_description: String,
    /// The version being installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Past installations, oldest first (the first is the factory installation).
    #[serde(default)]
    pub update_history: Vec<HistoryEntry>,
}

impl UpdateResource {
    /// Parses a payload received on `up/update`.
    pub fn parse(payload: &[u8]) -> Result<UpdateResource, ProtocolError> {
        from_json("update", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The version installed last (the history's newest entry).
    pub fn installed_version(&self) -> Option<&str> {
        self.update_history
            .iter()
            .rev()
            .find_map(|e| e.version.as_deref())
    }
}

/// One call of the device API: the seed's verbs on its resources.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `GET images`.
    ListImages,
    /// `GET images/items/{id}`.
    GetImage(u64),
    /// `DELETE images/items/{id}`.
    DeleteImage(u64),
    /// `POST images/fetch {"url"}`: download an image.
    FetchImage {
        /// Where to download it from.
        url: String,
    },
    /// `POST images/upload` with the image bytes (base64 in `body.data` on the wire).
    UploadImage(Vec<u8>),
    /// `GET update`.
    GetUpdate,
    /// `POST update/init`.
    Init,
    /// `POST update/reset`.
    Reset,
    /// `POST update/start`.
    Start,
}

impl Call {
    /// The call a REST method and path (relative to `npm.system_update/2.0/`, no slashes at
    /// either end) name; `body` is the request body where the call takes one.
    pub fn from_route(
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<Call, ProtocolError> {
        let unknown = || ProtocolError::UnknownCall {
            method: method.to_owned(),
            path: path.to_owned(),
        };
        let item = |rest: &str| rest.parse::<u64>().map_err(|_| unknown());
        Ok(match (method, path) {
            ("GET", "images") => Call::ListImages,
            ("GET", p) if p.starts_with("images/items/") => {
                Call::GetImage(item(&p["images/items/".len()..])?)
            }
            ("DELETE", p) if p.starts_with("images/items/") => {
                Call::DeleteImage(item(&p["images/items/".len()..])?)
            }
            ("POST", "images/fetch") => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Fetch {
                    url: String,
                }
                let fetch: Fetch = serde_json::from_value(body).map_err(|source| {
                    ProtocolError::InvalidPayload {
                        kind: "images/fetch body",
                        source,
                    }
                })?;
                Call::FetchImage { url: fetch.url }
            }
            ("POST", "images/upload") => {
                let data = body
                    .get("data")
                    .and_then(|d| d.as_str())
                    .and_then(|d| BASE64.decode(d).ok())
                    .ok_or(ProtocolError::InvalidUpload)?;
                Call::UploadImage(data)
            }
            ("GET", "update") => Call::GetUpdate,
            ("POST", "update/init") => Call::Init,
            ("POST", "update/reset") => Call::Reset,
            ("POST", "update/start") => Call::Start,
            _ => return Err(unknown()),
        })
    }

    /// The REST method.
    pub fn method(&self) -> &'static str {
        match self {
            Call::ListImages | Call::GetImage(_) | Call::GetUpdate => "GET",
            Call::DeleteImage(_) => "DELETE",
            _ => "POST",
        }
    }

    /// The resource path, relative to `npm.system_update/2.0/`.
    pub fn path(&self) -> String {
        match self {
            Call::ListImages => "images".to_owned(),
            Call::GetImage(id) | Call::DeleteImage(id) => format!("images/items/{id}"),
            Call::FetchImage { .. } => "images/fetch".to_owned(),
            Call::UploadImage(_) => "images/upload".to_owned(),
            Call::GetUpdate => "update".to_owned(),
            Call::Init => "update/init".to_owned(),
            Call::Reset => "update/reset".to_owned(),
            Call::Start => "update/start".to_owned(),
        }
    }

    /// The request body on the wire.
    pub fn body(&self) -> serde_json::Value {
        match self {
            Call::FetchImage { url } => serde_json::json!({ "url": url }),
            Call::UploadImage(data) => serde_json::json!({ "data": BASE64.encode(data) }),
            _ => serde_json::Value::Null,
        }
    }
}

/// A request on `down/update/request`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRequest {
    /// Correlates the response.
    pub id: Uuid,
    /// What to do.
    pub call: Call,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestWire {
    id: Uuid,
    method: String,
    path: String,
    #[serde(default)]
    body: serde_json::Value,
}

impl UpdateRequest {
    /// A request with a fresh correlation id.
    pub fn new(call: Call) -> UpdateRequest {
        UpdateRequest {
            id: Uuid::new_v4(),
            call,
        }
    }

    /// Parses a payload received on `down/update/request`.
    pub fn parse(payload: &[u8]) -> Result<UpdateRequest, ProtocolError> {
        let wire: RequestWire = from_json("update request", payload)?;
        let call = Call::from_route(&wire.method, &wire.path, wire.body)?;
        Ok(UpdateRequest { id: wire.id, call })
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(&RequestWire {
            id: self.id,
            method: self.call.method().to_owned(),
            path: self.call.path(),
            body: self.call.body(),
        })
    }
}

/// A device's answer on `up/update/response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateResponse {
    /// The request's id.
    pub id: Uuid,
    /// The HTTP status the device answers with.
    pub status: u16,
    /// The response body (`null` for 204); for errors `{"detail": "..."}`.
    #[serde(default)]
    pub body: serde_json::Value,
}

impl UpdateResponse {
    /// Parses a payload received on `up/update/response`.
    pub fn parse(payload: &[u8]) -> Result<UpdateResponse, ProtocolError> {
        let response: UpdateResponse = from_json("update response", payload)?;
        if !(100..=599).contains(&response.status) {
            return Err(ProtocolError::InvalidStatus(response.status));
        }
        Ok(response)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }

    /// A success answer with a body (200) or without (204 when `body` is null).
    pub fn ok(id: Uuid, body: serde_json::Value) -> UpdateResponse {
        let status = if body.is_null() { 204 } else { 200 };
        UpdateResponse { id, status, body }
    }

    /// An error answer.
    pub fn error(id: Uuid, status: u16, detail: impl Into<String>) -> UpdateResponse {
        UpdateResponse {
            id,
            status,
            body: serde_json::json!({ "detail": detail.into() }),
        }
    }

    /// Whether the device accepted the call.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_every_call() {
        for call in [
            Call::ListImages,
            Call::GetImage(3),
            Call::DeleteImage(4),
            Call::FetchImage {
                url: "http://127.0.0.1:8000/fw.bin?token=x".into(),
            },
            Call::UploadImage(vec![0, 1, 2, 255]),
            Call::GetUpdate,
            Call::Init,
            Call::Reset,
            Call::Start,
        ] {
            let request = UpdateRequest::new(call);
            assert_eq!(UpdateRequest::parse(&request.to_bytes()).unwrap(), request);
        }
    }

    #[test]
    fn the_wire_uses_the_seed_verbs_and_paths() {
        let request = UpdateRequest::new(Call::FetchImage { url: "u".into() });
        let wire: serde_json::Value = serde_json::from_slice(&request.to_bytes()).unwrap();
        assert_eq!(wire["method"], "POST");
        assert_eq!(wire["path"], "images/fetch");
        assert_eq!(wire["body"], serde_json::json!({"url": "u"}));
    }

    #[test]
    fn unknown_routes_and_bad_bodies_are_refused() {
        let null = serde_json::Value::Null;
        assert!(Call::from_route("PUT", "update", null.clone()).is_err());
        assert!(Call::from_route("GET", "images/items/x", null.clone()).is_err());
        assert!(Call::from_route("POST", "images/fetch", serde_json::json!({})).is_err());
        assert!(
            Call::from_route("POST", "images/upload", serde_json::json!({"data": "!"})).is_err()
        );
        assert!(
            UpdateResponse::parse(br#"{"id":"00000000-0000-0000-0000-000000000000","status":7}"#)
                .is_err()
        );
    }

    #[test]
    fn resources_parse_the_seed_examples() {
        let update = UpdateResource::parse(
            br#"{"last_state_time":1700000000,"state":"FAILED_GRACEFUL","state_description":"bad",
                "update_history":[{"time":1,"version":"1.0"},{"time":2,"version":"1.1"}]}"#,
        )
        .unwrap();
        assert_eq!(update.state, UpdateState::FailedGraceful);
        assert_eq!(update.installed_version(), Some("1.1"));
        let images = ImagesResource::parse(
            br#"{"items":[{"id":1,"state":"VALID","state_description":"ok","checksum":"ab","progress":100}]}"#,
        )
        .unwrap();
        assert_eq!(images.item(1).unwrap().state, ImageState::Valid);
        assert!(ImagesResource::parse(br#"{"items":[{"id":1,"state":"DONE"}]}"#).is_err());
    }
}
