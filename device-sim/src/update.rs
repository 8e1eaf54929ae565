//! The device side of npm.system_update 2.0 over MQTT ([`fleetmq_protocol::system_update`]):
//! images fetched or uploaded, the update state machine, and the faults a simulated device
//! can be told to have.
//!
//! `UpdateAgent` is the state and the rules, free of sockets: each call returns the answer
//! to publish on `up/update/response` and the effects that follow (resources to publish
//! on `up/update`/`up/images`, a download to start, an installation to schedule). The device
//! task in [`device`](crate::device) carries them out; downloads run in their own tasks and
//! report back through a channel, so the MQTT loop never waits on HTTP.
//!
//! ```text
//! images: fetch ─▶ UPLOADING ─▶ VALIDATING ─▶ VALID           (or UPLOAD_ERROR)
//! update: IDLE ─init─▶ INITIALIZING ─▶ INITIALIZED ─start─▶ RUNNING ─▶ install + reboot ─▶ IDLE
//!                                                                  └─▶ FAILED_GRACEFUL / FAILED_CRITICAL (faults)
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use fleetmq_protocol::system_update::{
    Call, HistoryEntry, ImageResource, ImageState, ImagesResource, UpdateRequest, UpdateResource,
    UpdateResponse, UpdateState,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// First line of a simulator firmware image: `FLEETMQ-SIM-FW <version>\n`.
pub const IMAGE_MAGIC: &str = "FLEETMQ-SIM-FW ";

/// HTTP response header that carries the firmware version of a fetched image.
pub const VERSION_HEADER: &str = "X-Firmware-Version";

/// How long a download may wait for the server before it counts as failed.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence between two chunks of a download.
pub(crate) const HTTP_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// A misbehaviour a simulated device can be given ([`DeviceConfig::fault`]), to exercise
/// the server's rollout logic.
///
/// [`DeviceConfig::fault`]: crate::DeviceConfig::fault
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Downloads and uploads are corrupted: one byte is flipped before hashing, so the image
    /// becomes VALID with a checksum that does not match the server's.
    ChecksumMismatch,
    /// The first `failures` fetches end in UPLOAD_ERROR ("simulated download error")
    /// without contacting the server; later fetches work.
    DownloadError {
        /// How many fetches fail.
        failures: u32,
    },
    /// `update/start` goes RUNNING, then FAILED_GRACEFUL: the device keeps its firmware and
    /// does not reboot.
    FailedGraceful,
    /// `update/start` goes RUNNING, then FAILED_CRITICAL; no reboot.
    FailedCritical,
    /// The device never answers an update request and never publishes `up/update` or
    /// `up/images` (it still connects, answers commands and publishes telemetry).
    Hang,
    /// The first `times` `update/init` calls that initialize the update answer 204 but lose
    /// their INITIALIZING/INITIALIZED notices, as a broker whose backlog outlasts the server's
    /// init timeout does; later calls behave.
    LostInitNotices {
        /// How many initializations go unreported.
        times: u32,
    },
    /// The device stays offline for this long after it starts (its first connection waits),
    /// then behaves normally.
    Offline {
        /// How long it stays away.
        for_: Duration,
    },
}

/// What the device task does after the agent handled something, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Publish this update resource on `up/update`.
    PublishUpdate(UpdateResource),
    /// Publish this images resource on `up/images`.
    PublishImages(ImagesResource),
    /// Start downloading image `image` from `url`.
    Download(Download),
    /// Finish the running update after the install time.
    ScheduleInstall,
}

/// A download for the device task to spawn (see [`download`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Download {
    /// Device-local image id the news are about.
    pub image: u64,
    /// Where from.
    pub url: String,
    /// Flip a byte before hashing ([`Fault::ChecksumMismatch`]).
    pub corrupt: bool,
    /// Fail without contacting the server, with this reason ([`Fault::DownloadError`]).
    pub fail: Option<String>,
}

/// What a download task reports to its device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DownloadNews {
    /// Bytes are arriving; `progress` in percent (sent at quarter steps when the length is
    /// known).
    Progress {
        /// Image id.
        image: u64,
        /// 0–100.
        progress: f64,
    },
    /// Every byte arrived.
    Done {
        /// Image id.
        image: u64,
        /// Lower-case hex SHA-256 of the bytes (as corrupted by a fault).
        checksum: String,
        /// The `X-Firmware-Version` header.
        version: Option<String>,
    },
    /// The transfer failed.
    Failed {
        /// Image id.
        image: u64,
        /// Why, including the HTTP status where there was one.
        reason: String,
    },
}

/// How an update that was RUNNING ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finish {
    /// Not running (reset in between): nothing happens.
    Nothing,
    /// Installed: the device now runs `version` and must reboot.
    Installed {
        /// The new firmware version.
        version: String,
    },
    /// Failed (fault); publish these and keep running.
    Failed(Vec<Effect>),
}

struct Image {
    resource: ImageResource,
    /// The URL it was fetched from (`None` for uploads).
    url: Option<String>,
}

/// One device's images and update process. Lives as long as the device task, across
/// reconnections and reboots.
pub(crate) struct UpdateAgent {
    images: Vec<Image>,
    next_image_id: u64,
    update: UpdateResource,
    fault: Option<Fault>,
    fetches: u32,
    /// Initializations so far (for [`Fault::LostInitNotices`]).
    inits: u32,
    /// The image `update/init` chose.
    chosen: Option<u64>,
    firmware_version: String,
}

impl UpdateAgent {
    /// A device running `firmware_version` since `boot_time` (Unix seconds), IDLE, no images.
    pub(crate) fn new(firmware_version: &str, fault: Option<Fault>, boot_time: i64) -> Self {
        UpdateAgent {
            images: Vec::new(),
            next_image_id: 1,
            update: UpdateResource {
                last_state_time: boot_time,
                state: UpdateState::Idle,
                state_description: "idle".to_owned(),
                target_version: None,
                update_history: vec![HistoryEntry {
                    time: Some(boot_time),
                    version: Some(firmware_version.to_owned()),
                }],
            },
            fault,
            fetches: 0,
            inits: 0,
            chosen: None,
            firmware_version: firmware_version.to_owned(),
        }
    }

    /// Whether the device is told to ignore the update API ([`Fault::Hang`]).
    pub(crate) fn hangs(&self) -> bool {
        self.fault == Some(Fault::Hang)
    }

    /// The update resource now.
    #[cfg(test)]
    pub(crate) fn update(&self) -> &UpdateResource {
        &self.update
    }

    /// The images resource now.
    pub(crate) fn images(&self) -> ImagesResource {
        ImagesResource {
            items: self.images.iter().map(|i| i.resource.clone()).collect(),
        }
    }

    /// What to publish after a (re)connection: both resources, unless the device hangs.
    pub(crate) fn on_connect(&self) -> Vec<Effect> {
        if self.hangs() {
            return Vec::new();
        }
        vec![self.publish_update(), self.publish_images()]
    }

    fn publish_update(&self) -> Effect {
        Effect::PublishUpdate(self.update.clone())
    }

    fn publish_images(&self) -> Effect {
        Effect::PublishImages(self.images())
    }

    fn image(&self, id: u64) -> Option<&Image> {
        self.images.iter().find(|i| i.resource.id == Some(id))
    }

    fn image_mut(&mut self, id: u64) -> Option<&mut Image> {
        self.images.iter_mut().find(|i| i.resource.id == Some(id))
    }

    fn set_state(&mut self, state: UpdateState, description: String, now: i64) {
        self.update.state = state;
        self.update.state_description = description;
        self.update.last_state_time = now;
    }

    fn new_image(&mut self, resource: ImageResource, url: Option<String>) -> ImageResource {
        let id = self.next_image_id;
        self.next_image_id += 1;
        let resource = ImageResource {
            id: Some(id),
            ..resource
        };
        self.images.push(Image {
            resource: resource.clone(),
            url,
        });
        resource
    }

    /// Handles one request at Unix time `now`: the answer (`None` when the device hangs)
    /// and what follows it.
    pub(crate) fn handle(
        &mut self,
        request: UpdateRequest,
        now: i64,
    ) -> (Option<UpdateResponse>, Vec<Effect>) {
        if self.hangs() {
            return (None, Vec::new());
        }
        let id = request.id;
        let not_found = |image: u64| UpdateResponse::error(id, 404, format!("no image {image}"));
        let conflict = |detail: &str| UpdateResponse::error(id, 409, detail);
        let (response, effects) = match request.call {
            Call::ListImages => (UpdateResponse::ok(id, to_value(&self.images())), vec![]),
            Call::GetImage(image) => match self.image(image) {
                Some(i) => (UpdateResponse::ok(id, to_value(&i.resource)), vec![]),
                None => (not_found(image), vec![]),
            },
            Call::DeleteImage(image) => {
                let before = self.images.len();
                self.images.retain(|i| i.resource.id != Some(image));
                if self.images.len() == before {
                    (not_found(image), vec![])
                } else {
                    (
                        UpdateResponse::ok(id, serde_json::Value::Null),
                        vec![self.publish_images()],
                    )
                }
            }
            Call::FetchImage { url } => {
                let existing = self.images.iter().find(|i| {
                    i.url.as_deref() == Some(url.as_str())
                        && !matches!(
                            i.resource.state,
                            ImageState::UploadError | ImageState::Invalid
                        )
                });
                if let Some(existing) = existing {
                    (UpdateResponse::ok(id, to_value(&existing.resource)), vec![])
                } else {
                    self.fetches += 1;
                    let fail = match self.fault {
                        Some(Fault::DownloadError { failures }) if self.fetches <= failures => {
                            Some("simulated download error".to_owned())
                        }
                        _ => None,
                    };
                    let image = self.new_image(
                        ImageResource {
                            id: None,
                            checksum: None,
                            progress: Some(0.0),
                            state: ImageState::Uploading,
                            state_description: "downloading".to_owned(),
                            version: None,
                        },
                        Some(url.clone()),
                    );
                    let download = Download {
                        image: image.id.unwrap_or_default(),
                        url,
                        corrupt: self.fault == Some(Fault::ChecksumMismatch),
                        fail,
                    };
                    (
                        UpdateResponse::ok(id, to_value(&image)),
                        vec![self.publish_images(), Effect::Download(download)],
                    )
                }
            }
            Call::UploadImage(mut bytes) => {
                let version = embedded_version(&bytes);
                if self.fault == Some(Fault::ChecksumMismatch) {
                    corrupt(&mut bytes);
                }
                let image = self.new_image(
                    ImageResource {
                        id: None,
                        checksum: Some(hex_sha256(&bytes)),
                        progress: Some(100.0),
                        state: ImageState::Valid,
                        state_description: "uploaded and valid".to_owned(),
                        version,
                    },
                    None,
                );
                (
                    UpdateResponse::ok(id, to_value(&image)),
                    vec![self.publish_images()],
                )
            }
            Call::GetUpdate => (UpdateResponse::ok(id, to_value(&self.update)), vec![]),
            Call::Init => match self.update.state {
                UpdateState::Initializing | UpdateState::Initialized | UpdateState::Running => {
                    (UpdateResponse::ok(id, serde_json::Value::Null), vec![])
                }
                UpdateState::Idle | UpdateState::FailedGraceful => {
                    let valid = self
                        .images
                        .iter()
                        .rev()
                        .find(|i| i.resource.state == ImageState::Valid)
                        .map(|i| (i.resource.id, i.resource.version.clone()));
                    match valid {
                        None => (conflict("no valid image to install"), vec![]),
                        Some((image, version)) => {
                            self.chosen = image;
                            self.update.target_version = version;
                            let target = self.target();
                            self.set_state(
                                UpdateState::Initializing,
                                format!("preparing to install {target}"),
                                now,
                            );
                            let initializing = self.publish_update();
                            self.set_state(
                                UpdateState::Initialized,
                                format!("ready to install {target}"),
                                now,
                            );
                            let initialized = self.publish_update();
                            self.inits += 1;
                            let notices = match self.fault {
                                Some(Fault::LostInitNotices { times }) if self.inits <= times => {
                                    vec![]
                                }
                                _ => vec![initializing, initialized],
                            };
                            (UpdateResponse::ok(id, serde_json::Value::Null), notices)
                        }
                    }
                }
                UpdateState::FailedCritical => (
                    conflict("the last update failed critically; reset first"),
                    vec![],
                ),
            },
            Call::Reset => {
                self.chosen = None;
                self.update.target_version = None;
                self.set_state(UpdateState::Idle, "idle".to_owned(), now);
                (
                    UpdateResponse::ok(id, serde_json::Value::Null),
                    vec![self.publish_update()],
                )
            }
            Call::Start => match self.update.state {
                UpdateState::Running => (UpdateResponse::ok(id, serde_json::Value::Null), vec![]),
                UpdateState::Initialized => {
                    let target = self.target();
                    self.set_state(UpdateState::Running, format!("installing {target}"), now);
                    (
                        UpdateResponse::ok(id, serde_json::Value::Null),
                        vec![self.publish_update(), Effect::ScheduleInstall],
                    )
                }
                _ => (
                    conflict("the update is not initialized; call update/init first"),
                    vec![],
                ),
            },
        };
        (Some(response), effects)
    }

    /// The version an installation of the chosen image would bring: its version, or (for an
    /// image without one) `sha256-` and the first 12 hex digits of its checksum.
    fn target(&self) -> String {
        if let Some(version) = &self.update.target_version {
            return version.clone();
        }
        let checksum = self
            .chosen
            .and_then(|id| self.image(id))
            .and_then(|i| i.resource.checksum.as_deref())
            .unwrap_or("unknown");
        format!("sha256-{}", &checksum[..checksum.len().min(12)])
    }

    /// Applies news from a download task. News about a deleted image are dropped.
    pub(crate) fn on_download(&mut self, news: DownloadNews) -> Vec<Effect> {
        let id = match &news {
            DownloadNews::Progress { image, .. }
            | DownloadNews::Done { image, .. }
            | DownloadNews::Failed { image, .. } => *image,
        };
        let Some(image) = self.image_mut(id) else {
            return Vec::new();
        };
        let image = &mut image.resource;
        match news {
            DownloadNews::Progress { progress, .. } => {
                image.progress = Some(progress);
                vec![self.publish_images()]
            }
            DownloadNews::Failed { reason, .. } => {
                image.state = ImageState::UploadError;
                image.state_description = reason;
                vec![self.publish_images()]
            }
            DownloadNews::Done {
                checksum, version, ..
            } => {
                image.progress = Some(100.0);
                image.state = ImageState::Validating;
                image.state_description = "validating".to_owned();
                let validating = self.publish_images();
                if let Some(image) = self.image_mut(id) {
                    let image = &mut image.resource;
                    image.state = ImageState::Valid;
                    image.state_description = "downloaded and valid".to_owned();
                    image.checksum = Some(checksum);
                    image.version = version;
                }
                vec![validating, self.publish_images()]
            }
        }
    }

    /// Ends a RUNNING update at Unix time `now` (the install time has passed).
    pub(crate) fn finish(&mut self, now: i64) -> Finish {
        if self.update.state != UpdateState::Running {
            return Finish::Nothing;
        }
        let (state, description) = match self.fault {
            Some(Fault::FailedGraceful) => (
                UpdateState::FailedGraceful,
                format!("simulated failure; still running {}", self.firmware_version),
            ),
            Some(Fault::FailedCritical) => (
                UpdateState::FailedCritical,
                "simulated critical failure; the device may be unusable".to_owned(),
            ),
            _ => {
                let version = self.target();
                if let Some(chosen) = self.chosen.take() {
                    self.images.retain(|i| i.resource.id != Some(chosen));
                }
                self.firmware_version = version.clone();
                self.update.update_history.push(HistoryEntry {
                    time: Some(now),
                    version: Some(version.clone()),
                });
                self.update.target_version = None;
                self.set_state(UpdateState::Idle, format!("installed {version}"), now);
                return Finish::Installed { version };
            }
        };
        self.set_state(state, description, now);
        Finish::Failed(vec![self.publish_update()])
    }
}

/// A resource as a response body. Serializing the protocol's resources cannot fail (plain
/// structs of strings and numbers).
fn to_value<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The version a simulator image names in its first line `FLEETMQ-SIM-FW <version>\n`.
pub fn embedded_version(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(IMAGE_MAGIC.as_bytes())?;
    let end = rest.iter().take(256).position(|b| *b == b'\n')?;
    let version = std::str::from_utf8(&rest[..end]).ok()?.trim();
    (!version.is_empty()).then(|| version.to_owned())
}

/// A simulator firmware image of `size` bytes (at least the header): the line
/// `FLEETMQ-SIM-FW <version>\n`, then pseudo-random bytes determined by `seed`.
pub fn firmware_image(version: &str, size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = format!("{IMAGE_MAGIC}{version}\n").into_bytes();
    let mut state = seed;
    while bytes.len() < size {
        state = splitmix64(state);
        let need = (size - bytes.len()).min(8);
        bytes.extend_from_slice(&state.to_le_bytes()[..need]);
    }
    bytes
}

/// SplitMix64's output function: a cheap, well-mixed deterministic step.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Flips the first byte ([`Fault::ChecksumMismatch`]).
fn corrupt(bytes: &mut [u8]) {
    if let Some(first) = bytes.first_mut() {
        *first ^= 0xFF;
    }
}

/// The HTTP client every simulated device of the process shares (one connection pool).
/// Plain HTTP only: the workspace builds reqwest without TLS.
pub(crate) fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(HTTP_CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// Runs one download and reports to `news`: progress at quarter steps (when the length is
/// known), then done or failed. The body is streamed and hashed on the way, never held.
pub(crate) async fn download(job: Download, news: mpsc::UnboundedSender<DownloadNews>) {
    let image = job.image;
    let report = match job.fail {
        Some(reason) => DownloadNews::Failed { image, reason },
        None => match fetch(&job, &news).await {
            Ok((checksum, version)) => DownloadNews::Done {
                image,
                checksum,
                version,
            },
            Err(reason) => DownloadNews::Failed { image, reason },
        },
    };
    // The device may have stopped; nothing to do then.
    let _ = news.send(report);
}

async fn fetch(
    job: &Download,
    news: &mpsc::UnboundedSender<DownloadNews>,
) -> Result<(String, Option<String>), String> {
    let failed = |e: &dyn std::fmt::Display| format!("download failed: {e}");
    let mut response = http_client()
        .get(&job.url)
        .send()
        .await
        .map_err(|e| failed(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("download failed: HTTP {status}"));
    }
    let version = response
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let length = response.content_length().filter(|l| *l > 0);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut reported_quarter = 0;
    let mut corrupt_next = job.corrupt;
    loop {
        let chunk = tokio::time::timeout(HTTP_CHUNK_TIMEOUT, response.chunk())
            .await
            .map_err(|_| failed(&"the server stopped sending"))?
            .map_err(|e| failed(&e))?;
        let Some(chunk) = chunk else { break };
        if corrupt_next && !chunk.is_empty() {
            let mut chunk = chunk.to_vec();
            corrupt(&mut chunk);
            hasher.update(&chunk);
            corrupt_next = false;
        } else {
            hasher.update(&chunk);
        }
        received += chunk.len() as u64;
        if let Some(length) = length {
            let quarter = (received.saturating_mul(4) / length).min(3);
            if quarter > reported_quarter {
                reported_quarter = quarter;
                let _ = news.send(DownloadNews::Progress {
                    image: job.image,
                    progress: quarter as f64 * 25.0,
                });
            }
        }
    }
    if let Some(length) = length
        && received != length
    {
        return Err(format!(
            "download failed: received {received} of {length} bytes"
        ));
    }
    Ok((hex(&hasher.finalize()), version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn call(agent: &mut UpdateAgent, call: Call) -> (UpdateResponse, Vec<Effect>) {
        let request = UpdateRequest {
            id: Uuid::new_v4(),
            call,
        };
        let (response, effects) = agent.handle(request.clone(), 100);
        let response = response.expect("an answer");
        assert_eq!(response.id, request.id);
        (response, effects)
    }

    fn fetched(agent: &mut UpdateAgent, url: &str, version: Option<&str>) -> u64 {
        let (response, effects) = call(agent, Call::FetchImage { url: url.into() });
        assert_eq!(response.status, 200);
        let Some(Effect::Download(job)) = effects.last().cloned() else {
            panic!("a download in {effects:?}");
        };
        agent.on_download(DownloadNews::Done {
            image: job.image,
            checksum: "ab".repeat(32),
            version: version.map(str::to_owned),
        });
        job.image
    }

    #[test]
    fn a_fetched_image_is_installed_through_init_and_start() {
        let mut agent = UpdateAgent::new("1.0.0", None, 7);
        assert_eq!(agent.update().update_history.len(), 1);
        let image = fetched(&mut agent, "http://x/fw", Some("2.0.0"));
        assert_eq!(agent.images().item(image).unwrap().state, ImageState::Valid);

        let (response, effects) = call(&mut agent, Call::Init);
        assert_eq!(response.status, 204);
        let states: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::PublishUpdate(u) => Some(u.state),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            [UpdateState::Initializing, UpdateState::Initialized]
        );
        assert_eq!(call(&mut agent, Call::Init).0.status, 204);
        let (response, effects) = call(&mut agent, Call::Start);
        assert_eq!(response.status, 204);
        assert!(effects.contains(&Effect::ScheduleInstall));
        assert_eq!(call(&mut agent, Call::Start).0.status, 204);
        assert_eq!(
            agent.finish(200),
            Finish::Installed {
                version: "2.0.0".into()
            }
        );
        assert!(agent.images().items.is_empty());
        assert_eq!(agent.update().state, UpdateState::Idle);
        assert_eq!(agent.update().installed_version(), Some("2.0.0"));
        assert_eq!(agent.finish(300), Finish::Nothing);
    }

    #[test]
    fn conflicts_and_unknown_images_are_refused() {
        let mut agent = UpdateAgent::new("1.0.0", None, 7);
        assert_eq!(call(&mut agent, Call::Init).0.status, 409);
        assert_eq!(call(&mut agent, Call::Start).0.status, 409);
        assert_eq!(call(&mut agent, Call::GetImage(9)).0.status, 404);
        assert_eq!(call(&mut agent, Call::DeleteImage(9)).0.status, 404);
        let image = fetched(&mut agent, "http://x/fw", None);
        assert_eq!(call(&mut agent, Call::DeleteImage(image)).0.status, 204);
        assert_eq!(call(&mut agent, Call::GetImage(image)).0.status, 404);
    }

    #[test]
    fn refetching_a_url_returns_the_same_image_unless_it_failed() {
        let mut agent = UpdateAgent::new("1.0.0", Some(Fault::DownloadError { failures: 1 }), 7);
        let (first, effects) = call(&mut agent, Call::FetchImage { url: "u".into() });
        let Some(Effect::Download(job)) = effects.last().cloned() else {
            panic!("a download");
        };
        assert_eq!(job.fail.as_deref(), Some("simulated download error"));
        let (again, effects) = call(&mut agent, Call::FetchImage { url: "u".into() });
        assert_eq!(first.body, again.body);
        assert!(effects.is_empty());
        agent.on_download(DownloadNews::Failed {
            image: job.image,
            reason: "simulated download error".into(),
        });
        let (retry, effects) = call(&mut agent, Call::FetchImage { url: "u".into() });
        assert_ne!(first.body["id"], retry.body["id"]);
        assert!(matches!(
            effects.last(),
            Some(Effect::Download(Download { fail: None, .. }))
        ));
    }

    #[test]
    fn faults_fail_the_update_without_installing() {
        for (fault, state) in [
            (Fault::FailedGraceful, UpdateState::FailedGraceful),
            (Fault::FailedCritical, UpdateState::FailedCritical),
        ] {
            let mut agent = UpdateAgent::new("1.0.0", Some(fault), 7);
            fetched(&mut agent, "u", Some("2.0.0"));
            call(&mut agent, Call::Init);
            call(&mut agent, Call::Start);
            assert!(matches!(agent.finish(9), Finish::Failed(_)));
            assert_eq!(agent.update().state, state);
            assert_eq!(agent.update().installed_version(), Some("1.0.0"));
        }
        let mut hung = UpdateAgent::new("1.0.0", Some(Fault::Hang), 7);
        let request = UpdateRequest::new(Call::GetUpdate);
        assert_eq!(hung.handle(request, 1), (None, vec![]));
        assert!(hung.on_connect().is_empty());
    }

    #[test]
    fn uploads_read_the_embedded_version_and_hash_the_bytes() {
        let bytes = firmware_image("2.0.5", 1000, 1);
        assert_eq!(bytes.len(), 1000);
        assert!(bytes.starts_with(b"FLEETMQ-SIM-FW 2.0.5\n"));
        assert_eq!(embedded_version(&bytes).as_deref(), Some("2.0.5"));
        assert_eq!(embedded_version(b"garbage"), None);
        let mut agent = UpdateAgent::new("1.0.0", None, 7);
        let (response, _) = call(&mut agent, Call::UploadImage(bytes.clone()));
        assert_eq!(response.body["state"], "VALID");
        assert_eq!(response.body["version"], "2.0.5");
        assert_eq!(response.body["checksum"], hex_sha256(&bytes));
        let mut bad = UpdateAgent::new("1.0.0", Some(Fault::ChecksumMismatch), 7);
        let (response, _) = call(&mut bad, Call::UploadImage(bytes.clone()));
        assert_ne!(response.body["checksum"], hex_sha256(&bytes));
    }
}
