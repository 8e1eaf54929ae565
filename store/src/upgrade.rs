//! Firmware upgrades: what each device should run ([`DeviceFirmware`]), one device's walk to it
//! ([`UpgradeOperation`]) and many at once ([`Batch`]); how a batch is rolled out lives in
//! [`crate::rollout`], which devices it targets in [`crate::batch`].
//!
//! An operation's [`UpgradeStep`] is where the bridge's rollout engine stands with it; the
//! engine persists every step before it sends the device the step's request, so after a crash
//! it resumes each operation by sending its persisted step again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rollout::Rollout;
use crate::{BatchId, BuildId, DeviceId, ImageId, OrgId, Timestamp, UpgradeId};

/// Progress at which flashing begins: from here an operation can no longer be cancelled.
pub const FLASHING_PROGRESS: u8 = 65;

/// Outcome of an upgrade operation (OpenWISP's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeStatus {
    /// Still running, or waiting for the device.
    InProgress,
    /// The device runs the new firmware.
    Success,
    /// The device could not be upgraded.
    Failed,
    /// Stopped by the system (batch abort threshold, superseded by a newer upgrade).
    Aborted,
    /// Stopped by a user before flashing began.
    Cancelled,
}

impl UpgradeStatus {
    /// Every status.
    pub const ALL: [UpgradeStatus; 5] = [
        UpgradeStatus::InProgress,
        UpgradeStatus::Success,
        UpgradeStatus::Failed,
        UpgradeStatus::Aborted,
        UpgradeStatus::Cancelled,
    ];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeStatus::InProgress => "in-progress",
            UpgradeStatus::Success => "success",
            UpgradeStatus::Failed => "failed",
            UpgradeStatus::Aborted => "aborted",
            UpgradeStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for UpgradeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UpgradeStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UpgradeStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or(())
    }
}

/// Where the rollout engine stands with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeStep {
    /// Waiting for its turn (rollout limits, backoff) or for the device to come online.
    Queued,
    /// `images/fetch` sent; waiting for the image to turn VALID.
    Fetching,
    /// Image verified; `update/init` sent; waiting for INITIALIZED.
    Initializing,
    /// `update/start` sent: flashing; waiting for the device to come back on the new version.
    Flashing,
    /// Finished (any final status).
    Done,
}

/// One device's upgrade to one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeOperation {
    /// Identity.
    pub id: UpgradeId,
    /// The device upgraded.
    pub device: DeviceId,
    /// The device's organization (tenancy, filters).
    pub organization: OrgId,
    /// The image installed.
    pub image: ImageId,
    /// The image's build.
    pub build: BuildId,
    /// The batch it belongs to, if any.
    pub batch: Option<BatchId>,
    /// Outcome so far.
    pub status: UpgradeStatus,
    /// 0–100.
    pub progress: u8,
    /// What happened, one line per event.
    pub log: String,
    /// Where the engine stands.
    pub step: UpgradeStep,
    /// Attempts of the current phase that failed recoverably so far.
    pub attempt: u32,
    /// The device-local id of the fetched image, once the device answered the fetch.
    pub device_image: Option<u64>,
    /// Images of earlier attempts that the engine asked the device to delete (the newest few):
    /// a late notice still listing one of them must not be taken for this attempt's image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discarded_images: Vec<u64>,
    /// Do not send anything before this instant (retry backoff).
    pub not_before: Option<Timestamp>,
    /// The current phase fails (or is retried) if not over by then.
    pub deadline: Option<Timestamp>,
    /// Rollout wave (0 = first).
    pub wave: u32,
    /// The device reported FAILED_CRITICAL: it may need hands-on recovery.
    pub flagged: bool,
    /// The build's version: what the device must report once upgraded.
    pub target_version: String,
    /// The image's SHA-256: what the device must report for the fetched image.
    pub sha256: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

impl UpgradeOperation {
    /// A new operation, in progress and queued, installing `image` of `build` on `device`.
    pub fn new(
        device: &crate::Device,
        image: &crate::Image,
        build: &crate::Build,
        batch: Option<BatchId>,
        wave: u32,
    ) -> UpgradeOperation {
        let now = Timestamp::now();
        UpgradeOperation {
            id: UpgradeId::new(),
            device: device.id,
            organization: device.fields.organization,
            image: image.id,
            build: build.id,
            batch,
            status: UpgradeStatus::InProgress,
            progress: 0,
            log: format!(
                "Upgrade to {} ({}) queued",
                build.fields.version, image.kind
            ),
            step: UpgradeStep::Queued,
            attempt: 0,
            device_image: None,
            discarded_images: Vec::new(),
            not_before: None,
            deadline: None,
            wave,
            flagged: false,
            target_version: build.fields.version.clone(),
            sha256: image.sha256.clone(),
            created: now,
            modified: now,
        }
    }

    /// Appends a line to the log and touches `modified`.
    pub fn note(&mut self, line: impl AsRef<str>) {
        if !self.log.is_empty() {
            self.log.push('\n');
        }
        self.log.push_str(line.as_ref());
        self.modified = Timestamp::now();
    }

    /// Ends the operation with `status`.
    pub fn finish(&mut self, status: UpgradeStatus, line: impl AsRef<str>) {
        self.status = status;
        self.step = UpgradeStep::Done;
        self.deadline = None;
        self.not_before = None;
        if status == UpgradeStatus::Success {
            self.progress = 100;
        }
        self.note(line);
    }

    /// Whether a user may still cancel it.
    pub fn cancellable(&self) -> bool {
        self.status == UpgradeStatus::InProgress && self.progress < FLASHING_PROGRESS
    }
}

/// How many operations of a batch are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// In progress.
    pub in_progress: u32,
    /// Succeeded.
    pub success: u32,
    /// Failed.
    pub failed: u32,
    /// Aborted.
    pub aborted: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl StatusCounts {
    fn slot(&mut self, status: UpgradeStatus) -> &mut u32 {
        match status {
            UpgradeStatus::InProgress => &mut self.in_progress,
            UpgradeStatus::Success => &mut self.success,
            UpgradeStatus::Failed => &mut self.failed,
            UpgradeStatus::Aborted => &mut self.aborted,
            UpgradeStatus::Cancelled => &mut self.cancelled,
        }
    }

    /// Counts one more operation in `status`.
    pub fn add(&mut self, status: UpgradeStatus) {
        *self.slot(status) += 1;
    }

    /// Counts one operation less in `status`.
    pub fn remove(&mut self, status: UpgradeStatus) {
        let slot = self.slot(status);
        *slot = slot.saturating_sub(1);
    }

    /// The count of one status.
    pub fn get(&self, status: UpgradeStatus) -> u32 {
        match status {
            UpgradeStatus::InProgress => self.in_progress,
            UpgradeStatus::Success => self.success,
            UpgradeStatus::Failed => self.failed,
            UpgradeStatus::Aborted => self.aborted,
            UpgradeStatus::Cancelled => self.cancelled,
        }
    }

    /// Every operation.
    pub fn total(&self) -> u32 {
        self.in_progress + self.success + self.failed + self.aborted + self.cancelled
    }

    /// Finished operations.
    pub fn finished(&self) -> u32 {
        self.total() - self.in_progress
    }
}

/// Status of a batch, derived from its operations as OpenWISP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchStatus {
    /// No operation yet.
    Idle,
    /// Some operation still runs.
    InProgress,
    /// Every operation succeeded.
    Success,
    /// None runs and some failed or were aborted.
    Failed,
    /// None runs, none failed, some were cancelled.
    Cancelled,
}

impl BatchStatus {
    /// Every status.
    pub const ALL: [BatchStatus; 5] = [
        BatchStatus::Idle,
        BatchStatus::InProgress,
        BatchStatus::Success,
        BatchStatus::Failed,
        BatchStatus::Cancelled,
    ];

    /// OpenWISP's rule: any in progress → in progress; else any failed or aborted → failed;
    /// else any cancelled → cancelled; else success (idle while empty).
    pub fn of(counts: &StatusCounts) -> BatchStatus {
        if counts.total() == 0 {
            BatchStatus::Idle
        } else if counts.in_progress > 0 {
            BatchStatus::InProgress
        } else if counts.failed + counts.aborted > 0 {
            BatchStatus::Failed
        } else if counts.cancelled > 0 {
            BatchStatus::Cancelled
        } else {
            BatchStatus::Success
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Idle => "idle",
            BatchStatus::InProgress => "in-progress",
            BatchStatus::Success => "success",
            BatchStatus::Failed => "failed",
            BatchStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for BatchStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BatchStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or(())
    }
}

/// A mass upgrade of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Identity.
    pub id: BatchId,
    /// The build installed.
    pub build: BuildId,
    /// The build's organization (`None` for a shared build).
    pub organization: Option<OrgId>,
    /// Rollout limits.
    pub rollout: Rollout,
    /// Operations per status, kept with every operation change.
    pub counts: StatusCounts,
    /// Why the batch stopped early, if it did.
    pub note: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

impl Batch {
    /// Its status, from its operations.
    pub fn status(&self) -> BatchStatus {
        BatchStatus::of(&self.counts)
    }
}

/// Which image a device should run, and whether it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceFirmware {
    /// The device.
    pub device: DeviceId,
    /// The image.
    pub image: ImageId,
    /// Whether the device runs it (set when an upgrade to it succeeds).
    pub installed: bool,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// The npm.system_update resources a device reported last (JSON as the device sent them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// The `update` resource.
    pub update: Option<serde_json::Value>,
    /// The `images` resource.
    pub images: Option<serde_json::Value>,
    /// When either last changed.
    pub modified: Option<Timestamp>,
}

/// Which operations a list returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpgradeFilter {
    /// Of devices of this organization.
    pub organization: Option<OrgId>,
    /// Of this device.
    pub device: Option<DeviceId>,
    /// Installing this image.
    pub image: Option<ImageId>,
    /// In this status.
    pub status: Option<UpgradeStatus>,
    /// Of this batch.
    pub batch: Option<BatchId>,
}

/// Which batches a list returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchFilter {
    /// Of this build.
    pub build: Option<BuildId>,
    /// In this status.
    pub status: Option<BatchStatus>,
}

/// Operations (and maybe their batch) to create in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradePlan {
    /// The batch, counts left at zero (the store counts).
    pub batch: Option<Batch>,
    /// The operations, in progress and queued.
    pub operations: Vec<UpgradeOperation>,
}

/// What creating a plan did.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedUpgrades {
    /// The batch, with its counts.
    pub batch: Option<Batch>,
    /// The operations created.
    pub operations: Vec<UpgradeOperation>,
    /// Earlier in-progress operations of the same devices, now aborted.
    pub superseded: Vec<UpgradeOperation>,
}

/// The answer to a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// Cancelled now.
    Cancelled(UpgradeOperation),
    /// Flashing began or it already ended: left as it is.
    TooLate(UpgradeOperation),
}
