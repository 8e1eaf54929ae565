//! One operation's walk through the device's npm.system_update state machine, as pure
//! functions: each takes the operation and what happened, changes the operation, and returns
//! the calls to send the device. The engine persists the changed operation before it sends
//! them.
//!
//! ```text
//! Queued ──dispatch: images/fetch──▶ Fetching ──image VALID, checksum ok: update/init──▶ Initializing
//!    ▲                                  │ UPLOAD_ERROR, no answer: retry with backoff      │ INITIALIZED: update/start
//!    └──────────────────────────────────┘                                                  ▼
//!                                      success ◀── back online on the target version ── Flashing (≥ 65 %)
//! ```
//! Checksum mismatch and INVALID images fail (the image is deleted on the device);
//! FAILED_GRACEFUL fails and resets the device; FAILED_CRITICAL fails and flags the operation.

use std::time::Duration;

use fleetmq_protocol::{
    Call, ImageResource, ImageState, ImagesResource, UpdateResource, UpdateResponse, UpdateState,
};
use fleetmq_store::{FLASHING_PROGRESS, Timestamp, UpgradeOperation, UpgradeStatus, UpgradeStep};

/// Timeouts and retry policy of operations.
#[derive(Debug, Clone)]
pub struct UpgradePolicy {
    /// From `images/fetch` to a VALID image.
    pub fetch_timeout: Duration,
    /// From `update/init` to INITIALIZED.
    pub init_timeout: Duration,
    /// From `update/start` to the device back online on the new version.
    pub flash_timeout: Duration,
    /// Recoverable failures (download errors, no answer) tolerated before an operation fails.
    pub max_retries: u32,
    /// First retry delay; doubles with every retry.
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(600),
            init_timeout: Duration::from_secs(120),
            flash_timeout: Duration::from_secs(900),
            max_retries: 3,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

pub(crate) fn after(now: Timestamp, wait: Duration) -> Timestamp {
    let micros = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_micros(now.as_micros().saturating_add(micros))
}

/// When a fetch dispatched `now` times out.
pub fn fetch_deadline(policy: &UpgradePolicy, now: Timestamp) -> Timestamp {
    after(now, policy.fetch_timeout)
}

/// Starts the fetch of a queued operation.
pub fn dispatch(
    op: &mut UpgradeOperation,
    url: String,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    op.step = UpgradeStep::Fetching;
    op.progress = op.progress.max(5);
    op.not_before = None;
    op.device_image = None;
    op.deadline = Some(fetch_deadline(policy, now));
    op.note("Asked the device to download the image");
    vec![Call::FetchImage { url }]
}

/// The request of the operation's current step again (the device came back online, or the
/// server restarted): devices treat repeated requests idempotently.
pub fn resend(op: &UpgradeOperation, url: impl FnOnce() -> String) -> Vec<Call> {
    match op.step {
        UpgradeStep::Fetching => vec![Call::FetchImage { url: url() }],
        UpgradeStep::Initializing => vec![Call::Init],
        UpgradeStep::Flashing => vec![Call::GetUpdate],
        UpgradeStep::Queued | UpgradeStep::Done => Vec::new(),
    }
}

/// A recoverable failure: back to the queue with exponential backoff, or failed once the
/// retries are spent. Returns clean-up calls: the fetched image deleted and, from
/// `Initializing`, the update reset first.
///
/// The reset matters when the device did initialize but its INITIALIZED notice came late or
/// not at all (a broker with a backlog longer than the init timeout): a device already
/// initialized answers another `update/init` with a plain 204 and no notice, so without the
/// reset every retry would wait for a notice that never comes.
pub fn retry(
    op: &mut UpgradeOperation,
    reason: &str,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    let cleanup = cleanup(op);
    if let Some(image) = op.device_image.take() {
        op.discarded_images.push(image);
        let excess = op.discarded_images.len().saturating_sub(DISCARDED_KEPT);
        op.discarded_images.drain(..excess);
    }
    if op.attempt >= policy.max_retries {
        op.finish(
            UpgradeStatus::Failed,
            format!("{reason}; giving up after {} attempts", op.attempt + 1),
        );
        return cleanup;
    }
    op.attempt += 1;
    let factor = 2u32.saturating_pow(op.attempt - 1);
    let wait = policy
        .backoff
        .saturating_mul(factor)
        .min(policy.max_backoff);
    op.step = UpgradeStep::Queued;
    op.deadline = None;
    op.not_before = Some(after(now, wait));
    op.progress = 0;
    op.note(format!(
        "{reason}; retry {} of {} in {} s",
        op.attempt,
        policy.max_retries,
        wait.as_secs_f64()
    ));
    cleanup
}

/// How many images of earlier attempts an operation remembers as deleted (more than its
/// retries ever discard).
const DISCARDED_KEPT: usize = 8;

fn image_of<'a>(op: &UpgradeOperation, images: &'a ImagesResource) -> Option<&'a ImageResource> {
    match op.device_image {
        Some(id) => images.item(id),
        // The fetch answer was lost (device offline meanwhile): the one image of this
        // version, or the only image; never one an earlier attempt deleted (a notice sent
        // before the deletion can arrive after the retry's fetch).
        None => {
            let current: Vec<&ImageResource> = images
                .items
                .iter()
                .filter(|i| i.id.is_none_or(|id| !op.discarded_images.contains(&id)))
                .collect();
            let of_version = current
                .iter()
                .find(|i| i.version.as_deref() == Some(op.target_version.as_str()));
            of_version
                .or(match current.as_slice() {
                    [only] => Some(only),
                    _ => None,
                })
                .copied()
        }
    }
}

/// The device reported its images.
pub fn on_images(
    op: &mut UpgradeOperation,
    images: &ImagesResource,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    if op.step != UpgradeStep::Fetching {
        return Vec::new();
    }
    let Some(image) = image_of(op, images) else {
        return Vec::new();
    };
    if op.device_image.is_none() {
        op.device_image = image.id;
    }
    on_image(op, image, policy, now)
}

fn on_image(
    op: &mut UpgradeOperation,
    image: &ImageResource,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    match image.state {
        ImageState::Uploading => {
            let done = image.progress.unwrap_or(0.0).clamp(0.0, 100.0);
            let progress = 5 + (done * 0.45) as u8;
            if progress > op.progress {
                op.progress = progress;
                op.modified = now;
            }
            Vec::new()
        }
        ImageState::Validating => {
            op.progress = op.progress.max(50);
            op.modified = now;
            Vec::new()
        }
        ImageState::UploadError => retry(
            op,
            &format!(
                "The device could not download the image: {}",
                image.state_description
            ),
            policy,
            now,
        ),
        ImageState::Invalid => {
            let cleanup = op
                .device_image
                .take()
                .map(Call::DeleteImage)
                .into_iter()
                .collect();
            op.finish(
                UpgradeStatus::Failed,
                format!("The device refused the image: {}", image.state_description),
            );
            cleanup
        }
        ImageState::Valid => {
            let reported = image.checksum.as_deref().unwrap_or("");
            if !reported.eq_ignore_ascii_case(&op.sha256) {
                let cleanup = op
                    .device_image
                    .take()
                    .map(Call::DeleteImage)
                    .into_iter()
                    .collect();
                op.finish(
                    UpgradeStatus::Failed,
                    format!(
                        "Checksum mismatch: the device reported {}, the image's SHA-256 is {}; \
                         image deleted on the device",
                        if reported.is_empty() {
                            "none"
                        } else {
                            reported
                        },
                        op.sha256
                    ),
                );
                return cleanup;
            }
            op.step = UpgradeStep::Initializing;
            op.progress = 55;
            op.deadline = Some(after(now, policy.init_timeout));
            op.note(format!(
                "Image downloaded and verified (SHA-256 {}); initializing the update",
                op.sha256
            ));
            vec![Call::Init]
        }
    }
}

/// The device reported its update resource.
pub fn on_update(
    op: &mut UpgradeOperation,
    update: &UpdateResource,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    match (op.step, update.state) {
        (UpgradeStep::Initializing | UpgradeStep::Flashing, UpdateState::FailedGraceful) => {
            op.finish(
                UpgradeStatus::Failed,
                format!(
                    "The update failed and the device still runs its previous firmware: {}; \
                     update reset",
                    update.state_description
                ),
            );
            vec![Call::Reset]
        }
        (UpgradeStep::Initializing | UpgradeStep::Flashing, UpdateState::FailedCritical) => {
            op.flagged = true;
            op.finish(
                UpgradeStatus::Failed,
                format!(
                    "The update failed critically: {}; the device may need hands-on recovery",
                    update.state_description
                ),
            );
            Vec::new()
        }
        (UpgradeStep::Initializing, UpdateState::Initialized) => {
            op.step = UpgradeStep::Flashing;
            op.progress = FLASHING_PROGRESS;
            op.deadline = Some(after(now, policy.flash_timeout));
            op.note("Update initialized; flashing started");
            vec![Call::Start]
        }
        // `update/start` was persisted as sent but never reached the device (a crash or a
        // dropped connection right after the commit): the device still waits for it.
        (UpgradeStep::Flashing, UpdateState::Initialized) => vec![Call::Start],
        (UpgradeStep::Flashing, UpdateState::Running) => {
            if op.progress < 75 {
                op.progress = 75;
                op.note("The device is flashing the new firmware");
            }
            Vec::new()
        }
        (UpgradeStep::Flashing, UpdateState::Idle)
            if update.installed_version() == Some(op.target_version.as_str()) =>
        {
            op.finish(
                UpgradeStatus::Success,
                format!("The device is running {}", op.target_version),
            );
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// The device answered a request the engine sent.
pub fn on_response(
    op: &mut UpgradeOperation,
    call: &Call,
    response: &UpdateResponse,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    if !response.is_success() {
        let detail = response
            .body
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or("no detail");
        return match (call, op.step) {
            // A refused start is ambiguous (already installed and rebooted, or not
            // initialized): the device's update resource decides.
            (Call::Start, UpgradeStep::Flashing) => vec![Call::GetUpdate],
            (Call::FetchImage { .. }, UpgradeStep::Fetching)
            | (Call::Init, UpgradeStep::Initializing) => retry(
                op,
                &format!(
                    "The device refused {} ({}: {detail})",
                    call.path(),
                    response.status
                ),
                policy,
                now,
            ),
            _ => Vec::new(),
        };
    }
    match call {
        Call::FetchImage { .. } if op.step == UpgradeStep::Fetching => {
            match serde_json::from_value::<ImageResource>(response.body.clone()) {
                Ok(image) => {
                    op.device_image = image.id.or(op.device_image);
                    on_image(op, &image, policy, now)
                }
                Err(_) => Vec::new(),
            }
        }
        Call::GetUpdate => match serde_json::from_value::<UpdateResource>(response.body.clone()) {
            Ok(update) => on_update(op, &update, policy, now),
            Err(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Calls that leave the device tidy when an operation stops before flashing (cancelled or
/// aborted): reset an initialized update, delete the fetched image.
pub fn cleanup(op: &UpgradeOperation) -> Vec<Call> {
    let reset = (op.step == UpgradeStep::Initializing).then_some(Call::Reset);
    reset
        .into_iter()
        .chain(op.device_image.map(Call::DeleteImage))
        .collect()
}

/// The batch was aborted (its abort threshold tripped): ends the operation with `note`.
/// Returns clean-up calls.
pub fn abort(op: &mut UpgradeOperation, note: &str) -> Vec<Call> {
    let calls = cleanup(op);
    op.finish(UpgradeStatus::Aborted, note);
    calls
}

/// The device went offline.
pub fn on_offline(op: &mut UpgradeOperation) {
    if op.step == UpgradeStep::Flashing && op.progress < 85 {
        op.progress = 85;
        op.note("The device went offline to reboot into the new firmware");
    }
}

/// The current phase's deadline passed.
pub fn on_deadline(
    op: &mut UpgradeOperation,
    online: bool,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Vec<Call> {
    match op.step {
        UpgradeStep::Flashing => {
            op.finish(
                UpgradeStatus::Failed,
                if online {
                    format!(
                        "The device did not report version {} within {} s of the start of flashing",
                        op.target_version,
                        policy.flash_timeout.as_secs()
                    )
                } else {
                    format!(
                        "The device did not come back within {} s of the start of flashing",
                        policy.flash_timeout.as_secs()
                    )
                },
            );
            Vec::new()
        }
        UpgradeStep::Fetching | UpgradeStep::Initializing if !online => {
            // Not the device's fault: wait for it without spending a retry.
            op.step = UpgradeStep::Queued;
            op.deadline = None;
            op.progress = 0;
            op.note("The device is offline; the upgrade continues when it reconnects");
            Vec::new()
        }
        UpgradeStep::Fetching => retry(
            op,
            "No answer from the device while downloading",
            policy,
            now,
        ),
        UpgradeStep::Initializing => {
            retry(op, "No answer from the device to update/init", policy, now)
        }
        UpgradeStep::Queued | UpgradeStep::Done => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::HistoryEntry;
    use fleetmq_store::{BatchId, BuildId, DeviceId, ImageId, OrgId, UpgradeId};

    fn op() -> UpgradeOperation {
        let now = Timestamp::now();
        UpgradeOperation {
            id: UpgradeId::new(),
            device: DeviceId::new(),
            organization: OrgId::new(),
            image: ImageId::new(),
            build: BuildId::new(),
            batch: Some(BatchId::new()),
            status: UpgradeStatus::InProgress,
            progress: 0,
            log: String::new(),
            step: UpgradeStep::Queued,
            attempt: 0,
            device_image: None,
            discarded_images: Vec::new(),
            not_before: None,
            deadline: None,
            wave: 0,
            flagged: false,
            target_version: "2.0".into(),
            sha256: "abc".into(),
            created: now,
            modified: now,
        }
    }

    fn images(state: ImageState, checksum: &str) -> ImagesResource {
        ImagesResource {
            items: vec![ImageResource {
                id: Some(7),
                checksum: Some(checksum.into()),
                progress: Some(100.0),
                state,
                state_description: "d".into(),
                version: Some("2.0".into()),
            }],
        }
    }

    fn update(state: UpdateState, installed: &str) -> UpdateResource {
        UpdateResource {
            last_state_time: 1,
            state,
            state_description: "d".into(),
            target_version: None,
            update_history: vec![HistoryEntry {
                time: Some(1),
                version: Some(installed.into()),
            }],
        }
    }

    #[test]
    fn the_happy_path_walks_fetch_init_start_and_succeeds_on_the_new_version() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut op = op();
        assert_eq!(
            dispatch(&mut op, "u".into(), &p, now),
            vec![Call::FetchImage { url: "u".into() }]
        );
        assert_eq!(
            on_images(&mut op, &images(ImageState::Valid, "ABC"), &p, now),
            vec![Call::Init]
        );
        assert_eq!(op.device_image, Some(7));
        assert!(op.cancellable());
        assert_eq!(
            on_update(&mut op, &update(UpdateState::Initialized, "1.0"), &p, now),
            vec![Call::Start]
        );
        assert!(!op.cancellable(), "flashing began at {}", op.progress);
        on_offline(&mut op);
        assert!(on_update(&mut op, &update(UpdateState::Idle, "1.0"), &p, now).is_empty());
        assert_eq!(
            op.status,
            UpgradeStatus::InProgress,
            "old version is not a success"
        );
        on_update(&mut op, &update(UpdateState::Idle, "2.0"), &p, now);
        assert_eq!((op.status, op.progress), (UpgradeStatus::Success, 100));
    }

    #[test]
    fn a_late_notice_of_an_image_deleted_by_a_retry_is_not_taken_for_the_new_download() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut op = op();
        dispatch(&mut op, "u".into(), &p, now);
        let downloading = images(ImageState::Uploading, "");
        assert!(on_images(&mut op, &downloading, &p, now).is_empty());
        assert_eq!(op.device_image, Some(7));
        // The download outlasted the fetch deadline: image 7 is deleted, the fetch retried.
        assert_eq!(
            on_deadline(&mut op, true, &p, now),
            vec![Call::DeleteImage(7)]
        );
        dispatch(&mut op, "u".into(), &p, now);
        // The device's notice that image 7 finished, sent before it deleted 7, arrives now.
        let stale = images(ImageState::Valid, "abc");
        assert!(on_images(&mut op, &stale, &p, now).is_empty());
        assert_eq!((op.step, op.device_image), (UpgradeStep::Fetching, None));
        // The retry's own image (8) is followed.
        let mut fresh = images(ImageState::Valid, "abc");
        fresh.items[0].id = Some(8);
        assert_eq!(on_images(&mut op, &fresh, &p, now), vec![Call::Init]);
        assert_eq!(op.device_image, Some(8));
    }

    #[test]
    fn a_start_lost_in_a_crash_is_sent_again_and_a_refused_start_asks_the_device() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut op = op();
        op.step = UpgradeStep::Flashing;
        op.progress = FLASHING_PROGRESS;
        assert_eq!(
            on_update(&mut op, &update(UpdateState::Initialized, "1.0"), &p, now),
            vec![Call::Start]
        );
        let refused = UpdateResponse::error(uuid::Uuid::new_v4(), 409, "not initialized");
        assert_eq!(
            on_response(&mut op, &Call::Start, &refused, &p, now),
            vec![Call::GetUpdate]
        );
        assert_eq!(
            (op.step, op.attempt),
            (UpgradeStep::Flashing, 0),
            "no retry, no re-flash"
        );
    }

    #[test]
    fn a_checksum_mismatch_fails_and_deletes_the_image() {
        let p = UpgradePolicy::default();
        let mut op = op();
        dispatch(&mut op, "u".into(), &p, Timestamp::now());
        let calls = on_images(
            &mut op,
            &images(ImageState::Valid, "bad"),
            &p,
            Timestamp::now(),
        );
        assert_eq!(calls, vec![Call::DeleteImage(7)]);
        assert_eq!(op.status, UpgradeStatus::Failed);
        assert!(op.log.contains("Checksum mismatch"), "{}", op.log);
    }

    #[test]
    fn download_errors_retry_with_growing_backoff_then_fail() {
        let p = UpgradePolicy {
            max_retries: 2,
            ..UpgradePolicy::default()
        };
        let now = Timestamp::now();
        let mut op = op();
        let mut waits = Vec::new();
        // The device numbers each download anew.
        let failed = |id| {
            let mut images = images(ImageState::UploadError, "");
            images.items[0].id = Some(id);
            images
        };
        for id in 0..2 {
            dispatch(&mut op, "u".into(), &p, now);
            on_images(&mut op, &failed(id), &p, now);
            assert_eq!(op.step, UpgradeStep::Queued);
            waits.push(op.not_before.unwrap().as_micros() - now.as_micros());
        }
        assert!(waits[1] >= 2 * waits[0], "{waits:?}");
        dispatch(&mut op, "u".into(), &p, now);
        on_images(&mut op, &failed(2), &p, now);
        assert_eq!(op.status, UpgradeStatus::Failed);
    }

    #[test]
    fn an_init_without_an_initialized_notice_resets_the_device_before_it_retries() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut op = op();
        dispatch(&mut op, "u".into(), &p, now);
        assert_eq!(
            on_images(&mut op, &images(ImageState::Valid, "abc"), &p, now),
            vec![Call::Init]
        );
        // The device initialized, but its notice never arrived before the deadline.
        assert_eq!(
            on_deadline(&mut op, true, &p, now),
            vec![Call::Reset, Call::DeleteImage(7)]
        );
        assert_eq!((op.step, op.attempt), (UpgradeStep::Queued, 1));
        assert!(op.log.contains("No answer from the device to update/init"));
        // A late INITIALIZED notice of the first attempt changes nothing while queued.
        assert!(on_update(&mut op, &update(UpdateState::Initialized, "1.0"), &p, now).is_empty());
        assert_eq!(op.step, UpgradeStep::Queued);
        // A retry from the download phase has nothing to reset.
        dispatch(&mut op, "u".into(), &p, now);
        assert_eq!(on_deadline(&mut op, true, &p, now), Vec::<Call>::new());
    }

    #[test]
    fn graceful_failures_reset_and_critical_ones_flag() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut graceful = op();
        graceful.step = UpgradeStep::Flashing;
        assert_eq!(
            on_update(
                &mut graceful,
                &update(UpdateState::FailedGraceful, "1.0"),
                &p,
                now
            ),
            vec![Call::Reset]
        );
        assert_eq!(
            (graceful.status, graceful.flagged),
            (UpgradeStatus::Failed, false)
        );
        let mut critical = op();
        critical.step = UpgradeStep::Flashing;
        on_update(
            &mut critical,
            &update(UpdateState::FailedCritical, "1.0"),
            &p,
            now,
        );
        assert_eq!(
            (critical.status, critical.flagged),
            (UpgradeStatus::Failed, true)
        );
    }

    #[test]
    fn an_aborted_operation_resets_the_device_and_deletes_the_fetched_image() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut op = op();
        dispatch(&mut op, "u".into(), &p, now);
        on_images(&mut op, &images(ImageState::Valid, "abc"), &p, now);
        assert_eq!(
            abort(&mut op, "too many failed"),
            vec![Call::Reset, Call::DeleteImage(7)]
        );
        assert_eq!(
            (op.status, op.step),
            (UpgradeStatus::Aborted, UpgradeStep::Done)
        );
        assert!(op.log.ends_with("too many failed"), "{}", op.log);
    }

    #[test]
    fn an_offline_device_past_its_deadline_waits_without_spending_a_retry() {
        let p = UpgradePolicy::default();
        let now = Timestamp::now();
        let mut op = op();
        dispatch(&mut op, "u".into(), &p, now);
        on_deadline(&mut op, false, &p, now);
        assert_eq!(
            (op.step, op.attempt, op.status),
            (UpgradeStep::Queued, 0, UpgradeStatus::InProgress)
        );
        dispatch(&mut op, "u".into(), &p, now);
        on_deadline(&mut op, true, &p, now);
        assert_eq!((op.step, op.attempt), (UpgradeStep::Queued, 1));
    }
}
