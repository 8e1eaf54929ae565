//! npm.system_update 2.0 over MQTT, device side: a simulated device against a real
//! in-process broker (fleetmq-broker on 127.0.0.1:0) and a tiny local firmware server.
//!
//! Requests are published on the device's `down/update/request` with
//! `BrokerHandle::publish`, as the bridge does; answers and notifications are read from the
//! device's `up/#` through an in-process link. Every wait is on an event or a message, with
//! a timeout only as a failure guard — except where a test proves that something does NOT
//! happen, which needs a short bounded wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use fleetmq_broker::{
    AuthFuture, Authenticator, Broker, BrokerConfig, BrokerHandle, LocalLink, Login, Message,
    Refusal,
};
use fleetmq_protocol::system_update::{
    Call, ImageState, ImagesResource, UpdateRequest, UpdateResource, UpdateResponse, UpdateState,
};
use fleetmq_protocol::topic::{DownChannel, Topic, UpChannel, device_up_filter};
use fleetmq_protocol::{
    CommandRequest, CommandResult, CommandType, Presence, PresenceStatus, Principal,
};
use fleetmq_sim::update::firmware_image;
use fleetmq_sim::{DeviceConfig, Fault, SimDevice, SimEvent, SimHandle};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Failure guard for anything awaited.
const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);
const ORG: &str = "acme";
const NEW_VERSION: &str = "2.0.0";

/// Accepts any UUID user name whose password is `key-{uuid}`, as a device of `acme`.
struct KeyAuth;

fn key_of(id: &str) -> String {
    format!("key-{id}")
}

impl Authenticator for KeyAuth {
    fn authenticate(&self, login: Login) -> AuthFuture<'_> {
        Box::pin(async move {
            let user = login.username.ok_or(Refusal::BadCredentials)?;
            let password = login.password.unwrap_or_default();
            if Uuid::parse_str(&user).is_err() || password != key_of(&user).as_bytes() {
                return Err(Refusal::BadCredentials);
            }
            Ok(Principal::Device {
                org_slug: ORG.into(),
                device_id: user.parse().map_err(|_| Refusal::BadCredentials)?,
            })
        })
    }
}

/// The firmware blob the local server serves on `/fw.bin`.
fn blob() -> Vec<u8> {
    firmware_image(NEW_VERSION, 64 * 1024, 42)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A broker, a firmware server and a device watched from the moment it connects.
struct Bench {
    broker: BrokerHandle,
    firmware: SocketAddr,
    shutdown: CancellationToken,
    device: SimHandle,
    /// The device's `up/#`, subscribed before the device started.
    link: LocalLink,
}

impl Bench {
    /// Starts everything; `adjust` tunes the device config (fault, install time) before the
    /// device starts. Returns once the device is connected.
    async fn start(adjust: impl FnOnce(&mut DeviceConfig)) -> Bench {
        let shutdown = CancellationToken::new();
        let config = BrokerConfig {
            mqtt_addr: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        };
        let broker = Broker::bind(config, Arc::new(KeyAuth)).await.unwrap();
        let addr = broker.local_addr();
        let handle = broker.handle();
        tokio::spawn(broker.run(shutdown.clone()));

        let firmware = serve_firmware(shutdown.clone()).await;

        let id = Uuid::new_v4().to_string();
        let mut config = DeviceConfig::new(addr, ORG, &id, key_of(&id));
        config.telemetry_interval = None;
        config.coordinates_interval = None;
        config.firmware_version = "1.0.0".into();
        adjust(&mut config);
        let link = handle
            .link(
                &format!("watch-{}", Uuid::new_v4().simple()),
                &[&device_up_filter(ORG, &id)],
            )
            .await
            .unwrap();
        let mut device = SimDevice::spawn(config);
        timeout(WAIT, device.connected())
            .await
            .expect("connected in time")
            .expect("device running");
        Bench {
            broker: handle,
            firmware,
            shutdown,
            device,
            link,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.firmware)
    }

    fn up(&self, channel: UpChannel) -> String {
        Topic::up(ORG, self.device.device_id(), channel).to_string()
    }

    /// Publishes raw bytes on the device's `down/update/request`.
    async fn publish_request(&self, payload: Vec<u8>) {
        let topic = Topic::down(ORG, self.device.device_id(), DownChannel::UpdateRequest);
        self.broker
            .publish(&topic.to_string(), payload, false)
            .await
            .unwrap();
    }

    /// Sends a call and returns its request id.
    async fn send(&self, call: Call) -> Uuid {
        let request = UpdateRequest::new(call);
        self.publish_request(request.to_bytes()).await;
        request.id
    }

    /// Sends a call and waits for its answer.
    async fn call(&mut self, call: Call) -> UpdateResponse {
        let id = self.send(call).await;
        let topic = self.up(UpChannel::UpdateResponse);
        loop {
            let response = UpdateResponse::parse(&self.next_on(&topic).await.payload).unwrap();
            if response.id == id {
                return response;
            }
        }
    }

    /// The next message on `topic`, skipping others.
    async fn next_on(&mut self, topic: &str) -> Message {
        timeout(WAIT, async {
            loop {
                let message = self.link.recv().await.unwrap();
                if message.topic == topic {
                    return message;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("a message on {topic} in time"))
    }

    async fn next_update(&mut self) -> UpdateResource {
        let topic = self.up(UpChannel::Update);
        UpdateResource::parse(&self.next_on(&topic).await.payload).unwrap()
    }

    async fn next_images(&mut self) -> ImagesResource {
        let topic = self.up(UpChannel::Images);
        ImagesResource::parse(&self.next_on(&topic).await.payload).unwrap()
    }

    async fn next_presence(&mut self) -> Presence {
        let topic = self.up(UpChannel::Presence);
        Presence::parse(&self.next_on(&topic).await.payload).unwrap()
    }

    /// Notifications on `up/images` until image `id` is in `state`; returns the states the
    /// image went through, that one included.
    async fn image_until(&mut self, id: u64, state: ImageState) -> Vec<ImagesResource> {
        let mut seen = Vec::new();
        loop {
            let images = self.next_images().await;
            let done = images.item(id).is_some_and(|i| i.state == state);
            seen.push(images);
            if done {
                return seen;
            }
        }
    }

    /// Fetches `/fw.bin` and waits until the image is in `state`; returns its id and the
    /// last images notification.
    async fn fetch(&mut self, path: &str, state: ImageState) -> (u64, ImagesResource) {
        let url = self.url(path);
        let response = self.call(Call::FetchImage { url }).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body["state"], "UPLOADING");
        let id = response.body["id"].as_u64().expect("an image id");
        let mut seen = self.image_until(id, state).await;
        (id, seen.pop().expect("at least one notification"))
    }

    /// Consumes the notifications every (re)connection publishes: presence, update, images.
    async fn connect_notifications(&mut self) -> (Presence, UpdateResource, ImagesResource) {
        let presence = self.next_presence().await;
        let update = self.next_update().await;
        let images = self.next_images().await;
        (presence, update, images)
    }

    async fn command(&mut self, text: &str) -> CommandResult {
        let request = CommandRequest {
            id: Uuid::new_v4(),
            kind: CommandType::Custom,
            input: json!(text),
        };
        let topic = Topic::down(ORG, self.device.device_id(), DownChannel::CommandRequest);
        self.broker
            .publish(&topic.to_string(), request.to_bytes(), false)
            .await
            .unwrap();
        let topic = self.up(UpChannel::CommandResult);
        CommandResult::parse(&self.next_on(&topic).await.payload).unwrap()
    }

    async fn stop(self) {
        self.device.stop().await;
        self.shutdown.cancel();
    }
}

/// Serves `/fw.bin` (the blob, with `X-Firmware-Version`) and nothing else, on 127.0.0.1:0.
async fn serve_firmware(shutdown: CancellationToken) -> SocketAddr {
    let app = Router::new().route(
        "/fw.bin",
        get(|| async {
            (
                StatusCode::OK,
                [(
                    HeaderName::from_static("x-firmware-version"),
                    NEW_VERSION.to_owned(),
                )],
                blob(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    addr
}

#[tokio::test]
async fn a_fetched_image_is_installed_and_the_device_reboots_into_the_new_firmware() {
    let mut bench = Bench::start(|_| {}).await;
    let (presence, update, images) = bench.connect_notifications().await;
    assert_eq!(presence.firmware_version.as_deref(), Some("1.0.0"));
    assert_eq!(update.state, UpdateState::Idle);
    assert_eq!(update.update_history.len(), 1);
    assert_eq!(update.installed_version(), Some("1.0.0"));
    assert!(images.items.is_empty());

    // Fetch: UPLOADING (progress 0) … VALIDATING … VALID with checksum and version.
    let url = bench.url("fw.bin");
    let response = bench.call(Call::FetchImage { url: url.clone() }).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["progress"], 0.0);
    let id = response.body["id"].as_u64().unwrap();
    let seen = bench.image_until(id, ImageState::Valid).await;
    let states: Vec<ImageState> = seen
        .iter()
        .filter_map(|i| Some(i.item(id)?.state))
        .collect();
    assert_eq!(states.first(), Some(&ImageState::Uploading));
    assert!(states.contains(&ImageState::Validating), "{states:?}");
    let image = seen.last().unwrap().item(id).unwrap().clone();
    assert_eq!(image.checksum, Some(sha256_hex(&blob())));
    assert_eq!(image.version.as_deref(), Some(NEW_VERSION));
    assert_eq!(image.progress, Some(100.0));

    // Fetching the same URL again (a restarted server re-sends) returns the same image.
    let again = bench.call(Call::FetchImage { url }).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["id"], id);
    assert_eq!(again.body["state"], "VALID");
    let listed = bench.call(Call::ListImages).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));

    // Init: INITIALIZING then INITIALIZED, target version from the image; twice is fine.
    assert_eq!(bench.call(Call::Init).await.status, 204);
    let initializing = bench.next_update().await;
    assert_eq!(initializing.state, UpdateState::Initializing);
    let initialized = bench.next_update().await;
    assert_eq!(initialized.state, UpdateState::Initialized);
    assert_eq!(initialized.target_version.as_deref(), Some(NEW_VERSION));
    assert_eq!(bench.call(Call::Init).await.status, 204);

    // Start: RUNNING, install, abrupt reboot (offline will), back online on the new version.
    assert_eq!(bench.call(Call::Start).await.status, 204);
    assert_eq!(bench.next_update().await.state, UpdateState::Running);
    assert_eq!(
        bench.next_presence().await.status,
        PresenceStatus::Offline,
        "the broker published the will"
    );
    let (presence, update, images) = bench.connect_notifications().await;
    assert_eq!(presence.status, PresenceStatus::Online);
    assert_eq!(presence.firmware_version.as_deref(), Some(NEW_VERSION));
    assert_eq!(update.state, UpdateState::Idle);
    assert_eq!(update.target_version, None);
    let history: Vec<_> = update
        .update_history
        .iter()
        .map(|e| e.version.as_deref())
        .collect();
    assert_eq!(history, [Some("1.0.0"), Some(NEW_VERSION)]);
    assert!(images.items.is_empty(), "the installed image is consumed");

    let installed = timeout(
        WAIT,
        bench
            .device
            .wait_for(|e| matches!(e, SimEvent::Installed { .. })),
    )
    .await
    .unwrap();
    assert_eq!(
        installed,
        Some(SimEvent::Installed {
            version: NEW_VERSION.into()
        })
    );
    timeout(WAIT, bench.device.wait_for(|e| *e == SimEvent::Rebooting))
        .await
        .unwrap();
    timeout(WAIT, bench.device.connected()).await.unwrap();
    let stats = bench.device.stats();
    assert_eq!((stats.reboots, stats.connects), (1, 2));
    // Timed from the first fetch request to the connection on the new firmware.
    let upgrades = bench.device.upgrades();
    assert_eq!((upgrades.first_fetches, upgrades.installed), (1, 1));
    assert_eq!(upgrades.durations.count, 1);
    assert!(upgrades.last_first_fetch < upgrades.last_installed);
    assert!(upgrades.durations.max > std::time::Duration::ZERO);
    // Nothing left to start.
    assert_eq!(bench.call(Call::Start).await.status, 409);
    bench.stop().await;
}

#[tokio::test]
async fn init_and_start_are_idempotent_and_reset_returns_to_idle() {
    let mut bench = Bench::start(|c| c.install_time = Duration::from_secs(3600)).await;
    bench.connect_notifications().await;
    bench.fetch("fw.bin", ImageState::Valid).await;

    assert_eq!(bench.call(Call::Init).await.status, 204);
    assert_eq!(bench.call(Call::Init).await.status, 204);
    assert_eq!(bench.call(Call::Start).await.status, 204);
    assert_eq!(bench.call(Call::Start).await.status, 204);
    assert_eq!(bench.call(Call::Init).await.status, 204);
    let update = bench.call(Call::GetUpdate).await;
    assert_eq!(update.status, 200);
    assert_eq!(update.body["state"], "RUNNING");
    assert_eq!(update.body["target_version"], NEW_VERSION);

    assert_eq!(bench.call(Call::Reset).await.status, 204);
    let update = bench.call(Call::GetUpdate).await;
    assert_eq!(update.body["state"], "IDLE");
    assert!(update.body.get("target_version").is_none());
    // Reset leaves the image: it can be initialized again.
    assert_eq!(bench.call(Call::Init).await.status, 204);
    bench.stop().await;
}

#[tokio::test]
async fn a_checksum_mismatch_fault_reports_a_different_checksum() {
    let mut bench = Bench::start(|c| c.fault = Some(Fault::ChecksumMismatch)).await;
    bench.connect_notifications().await;
    let (id, images) = bench.fetch("fw.bin", ImageState::Valid).await;
    let image = images.item(id).unwrap();
    let checksum = image.checksum.as_deref().expect("a checksum");
    assert_eq!(checksum.len(), 64);
    assert_ne!(checksum, sha256_hex(&blob()));
    assert_eq!(image.version.as_deref(), Some(NEW_VERSION));
    bench.stop().await;
}

#[tokio::test]
async fn a_download_error_is_reported_and_the_next_fetch_succeeds() {
    let mut bench = Bench::start(|c| c.fault = Some(Fault::DownloadError { failures: 1 })).await;
    bench.connect_notifications().await;
    let (first, images) = bench.fetch("fw.bin", ImageState::UploadError).await;
    assert_eq!(
        images.item(first).unwrap().state_description,
        "simulated download error"
    );
    // The same URL again: the failed image does not count, a new download starts and works.
    let (second, images) = bench.fetch("fw.bin", ImageState::Valid).await;
    assert_ne!(first, second);
    assert_eq!(
        images.item(second).unwrap().checksum,
        Some(sha256_hex(&blob()))
    );
    bench.stop().await;
}

#[tokio::test]
async fn an_http_error_status_ends_in_upload_error_naming_the_status() {
    let mut bench = Bench::start(|_| {}).await;
    bench.connect_notifications().await;
    let (id, images) = bench.fetch("missing.bin", ImageState::UploadError).await;
    let description = &images.item(id).unwrap().state_description;
    assert!(description.contains("404"), "{description}");
    // Without a valid image there is nothing to install.
    let init = bench.call(Call::Init).await;
    assert_eq!(init.status, 409);
    assert_eq!(init.body["detail"], "no valid image to install");
    bench.stop().await;
}

#[tokio::test]
async fn failed_graceful_keeps_the_old_firmware_and_does_not_reboot() {
    let mut bench = Bench::start(|c| c.fault = Some(Fault::FailedGraceful)).await;
    bench.connect_notifications().await;
    bench.fetch("fw.bin", ImageState::Valid).await;
    assert_eq!(bench.call(Call::Init).await.status, 204);
    assert_eq!(bench.next_update().await.state, UpdateState::Initializing);
    assert_eq!(bench.next_update().await.state, UpdateState::Initialized);
    assert_eq!(bench.call(Call::Start).await.status, 204);
    assert_eq!(bench.next_update().await.state, UpdateState::Running);
    let failed = bench.next_update().await;
    assert_eq!(failed.state, UpdateState::FailedGraceful);
    assert_eq!(failed.installed_version(), Some("1.0.0"));

    // Still connected on the same session, still answering; may try again.
    assert_eq!(bench.command("echo alive").await.output, "echo alive");
    assert_eq!(bench.call(Call::Init).await.status, 204);
    let stats = bench.device.stats();
    assert_eq!((stats.reboots, stats.connects), (0, 1));
    bench.stop().await;
}

#[tokio::test]
async fn failed_critical_refuses_init_until_reset() {
    let mut bench = Bench::start(|c| c.fault = Some(Fault::FailedCritical)).await;
    bench.connect_notifications().await;
    bench.fetch("fw.bin", ImageState::Valid).await;
    assert_eq!(bench.call(Call::Init).await.status, 204);
    assert_eq!(bench.call(Call::Start).await.status, 204);
    loop {
        if bench.next_update().await.state == UpdateState::FailedCritical {
            break;
        }
    }
    assert_eq!(bench.call(Call::Init).await.status, 409);
    assert_eq!(bench.call(Call::Reset).await.status, 204);
    assert_eq!(bench.call(Call::Init).await.status, 204);
    bench.stop().await;
}

#[tokio::test]
async fn a_hanging_device_never_answers_nor_publishes_update_state() {
    let mut bench = Bench::start(|c| c.fault = Some(Fault::Hang)).await;
    let id = bench.send(Call::GetUpdate).await;
    let received = timeout(
        WAIT,
        bench
            .device
            .wait_for(|e| matches!(e, SimEvent::UpdateRequest { .. })),
    )
    .await
    .unwrap();
    assert_eq!(
        received,
        Some(SimEvent::UpdateRequest {
            id,
            path: "update".into()
        })
    );
    // Messages are handled in order: a command sent after the request is answered, and
    // nothing update-related came before its result.
    let update_topics = [
        bench.up(UpChannel::UpdateResponse),
        bench.up(UpChannel::Update),
        bench.up(UpChannel::Images),
    ];
    let request = CommandRequest {
        id: Uuid::new_v4(),
        kind: CommandType::Custom,
        input: json!("echo alive"),
    };
    let topic = Topic::down(ORG, bench.device.device_id(), DownChannel::CommandRequest);
    bench
        .broker
        .publish(&topic.to_string(), request.to_bytes(), false)
        .await
        .unwrap();
    let result_topic = bench.up(UpChannel::CommandResult);
    timeout(WAIT, async {
        loop {
            let message = bench.link.recv().await.unwrap();
            assert!(
                !update_topics.contains(&message.topic),
                "a hanging device published on {}",
                message.topic
            );
            if message.topic == result_topic {
                break;
            }
        }
    })
    .await
    .unwrap();
    // And nothing afterwards either (the one bounded wait for an absence).
    let answered = timeout(
        QUIET,
        bench
            .device
            .wait_for(|e| matches!(e, SimEvent::UpdateAnswered(_))),
    )
    .await;
    assert!(answered.is_err(), "a hanging device answered: {answered:?}");
    bench.stop().await;
}

#[tokio::test]
async fn unknown_images_and_calls_out_of_order_are_refused() {
    let mut bench = Bench::start(|_| {}).await;
    bench.connect_notifications().await;
    assert_eq!(bench.call(Call::GetImage(7)).await.status, 404);
    assert_eq!(bench.call(Call::DeleteImage(7)).await.status, 404);
    assert_eq!(bench.call(Call::Start).await.status, 409);
    let init = bench.call(Call::Init).await;
    assert_eq!(
        (init.status, &init.body),
        (409, &json!({"detail": "no valid image to install"}))
    );

    // An upload is a finished fetch; its version comes from the image's first line.
    let bytes = firmware_image("3.1.4", 4096, 1);
    let uploaded = bench.call(Call::UploadImage(bytes.clone())).await;
    assert_eq!(uploaded.status, 200);
    assert_eq!(uploaded.body["state"], "VALID");
    assert_eq!(uploaded.body["version"], "3.1.4");
    assert_eq!(uploaded.body["checksum"], sha256_hex(&bytes));
    let id = uploaded.body["id"].as_u64().unwrap();
    assert_eq!(bench.next_images().await.items.len(), 1);
    let got = bench.call(Call::GetImage(id)).await;
    assert_eq!((got.status, &got.body), (200, &uploaded.body));

    assert_eq!(bench.call(Call::DeleteImage(id)).await.status, 204);
    assert!(bench.next_images().await.items.is_empty());
    assert_eq!(bench.call(Call::GetImage(id)).await.status, 404);
    bench.stop().await;
}

#[tokio::test]
async fn garbage_update_requests_are_ignored_and_the_device_keeps_working() {
    let mut bench = Bench::start(|_| {}).await;
    bench.connect_notifications().await;
    for garbage in [
        b"\xff\xfe not json".to_vec(),
        br#"{"id":"42","method":"GET","path":"update"}"#.to_vec(),
        br#"{"id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","method":"PUT","path":"update"}"#
            .to_vec(),
        br#"{"id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","method":"POST","path":"images/fetch","body":{}}"#
            .to_vec(),
    ] {
        bench.publish_request(garbage).await;
    }
    let update = bench.call(Call::GetUpdate).await;
    assert_eq!(update.status, 200);
    assert_eq!(update.body["state"], "IDLE");
    let mut ignored = 0;
    timeout(
        WAIT,
        bench.device.wait_for(|e| match e {
            SimEvent::Ignored { .. } => {
                ignored += 1;
                false
            }
            other => matches!(other, SimEvent::UpdateAnswered(_)),
        }),
    )
    .await
    .unwrap();
    assert_eq!(ignored, 4);
    let stats = bench.device.stats();
    assert_eq!((stats.ignored, stats.connections_lost), (4, 0));
    bench.stop().await;
}

#[tokio::test]
async fn an_offline_fault_delays_the_first_connection() {
    let started = tokio::time::Instant::now();
    let offline = Duration::from_millis(300);
    let mut bench = Bench::start(|c| c.fault = Some(Fault::Offline { for_: offline })).await;
    assert!(started.elapsed() >= offline);
    // Then it behaves normally.
    let (presence, update, _) = bench.connect_notifications().await;
    assert_eq!(presence.status, PresenceStatus::Online);
    assert_eq!(update.state, UpdateState::Idle);
    assert_eq!(bench.call(Call::GetUpdate).await.status, 200);
    bench.stop().await;
}
