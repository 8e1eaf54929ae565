//! The firmware-upgrader REST calls of the `upgrade-demo` (OpenWISP firmware-upgrader
//! style, `Authorization: Bearer`): category, build, image upload, batch upgrade, batch
//! detail.

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::SimError;
use crate::registration::ApiClient;

/// Prefix of every firmware-upgrader endpoint.
const BASE: &str = "/api/v1/firmware-upgrader";

/// The image `type` the simulated board installs (OpenWISP names images by board).
pub const IMAGE_TYPE: &str = "fleetmq-sim-squashfs-sysupgrade.bin";

/// How a batch upgrade rolls out; every field is optional and passed through as is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollout {
    /// Devices upgrading at the same time.
    pub max_parallel: Option<u32>,
    /// Upgrades started per minute.
    pub rate_per_minute: Option<u32>,
    /// Cumulative percentages of the fleet per wave, e.g. `[1, 10, 100]`.
    pub waves: Option<Vec<u32>>,
    /// Abort the batch once this fraction (0–1) of finished upgrades failed…
    pub abort_failure_rate: Option<f64>,
    /// …among at least this many finished upgrades (default 20 when a rate is given).
    pub abort_min_sample: Option<u32>,
}

impl Rollout {
    /// The body of `POST build/{id}/upgrade/`: upgrade every device of the build's
    /// category, with the rollout options that are set.
    pub fn body(&self) -> Value {
        let mut body = json!({ "upgrade_all": true });
        if let Some(n) = self.max_parallel {
            body["max_parallel"] = json!(n);
        }
        if let Some(n) = self.rate_per_minute {
            body["rate_per_minute"] = json!(n);
        }
        if let Some(waves) = &self.waves {
            body["waves"] = json!(waves);
        }
        if let Some(rate) = self.abort_failure_rate {
            body["abort_threshold"] = json!({
                "failure_rate": rate,
                "min_sample": self.abort_min_sample.unwrap_or(20),
            });
        }
        body
    }
}

/// Per-status counts of a batch's operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct StatusCounts {
    /// Running now.
    #[serde(rename = "in-progress", default)]
    pub in_progress: u64,
    /// Installed and confirmed.
    #[serde(default)]
    pub success: u64,
    /// Failed (download, checksum, device-reported failure, timeout).
    #[serde(default)]
    pub failed: u64,
    /// Stopped by the server (e.g. the batch's abort threshold).
    #[serde(default)]
    pub aborted: u64,
    /// Cancelled by a user.
    #[serde(default)]
    pub cancelled: u64,
}

impl StatusCounts {
    /// Operations that reached an end.
    pub fn finished(&self) -> u64 {
        self.success + self.failed + self.aborted + self.cancelled
    }
}

/// `GET batch-upgrade-operation/{id}/`, the fields the demo shows.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchDetail {
    /// `idle`, `in-progress`, `success`, `failed` or `cancelled`.
    pub status: String,
    /// `N out of M`.
    #[serde(default)]
    pub progress_report: String,
    /// Operations in the batch.
    #[serde(default)]
    pub total: u64,
    /// Operations per status.
    #[serde(default)]
    pub status_counts: StatusCounts,
    /// Percent of operations that succeeded.
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// Percent that failed.
    #[serde(default)]
    pub failed_rate: Option<f64>,
    /// Percent aborted.
    #[serde(default)]
    pub aborted_rate: Option<f64>,
    /// Percent cancelled.
    #[serde(default)]
    pub cancelled_rate: Option<f64>,
}

impl BatchDetail {
    /// Whether the batch reached an end (`success`, `failed`, `cancelled`).
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "success" | "failed" | "cancelled")
    }
}

#[derive(Deserialize)]
struct Created {
    id: Value,
}

#[derive(Deserialize)]
struct Started {
    batch: Uuid,
}

/// An object id as the API answers it (UUID text or a number), for use in paths.
fn id_text(id: Value) -> Result<String, SimError> {
    match id {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(SimError::Unexpected(format!("not an object id: {other}"))),
    }
}

impl ApiClient {
    /// Creates a firmware category in the organization; returns its id.
    pub async fn create_category(
        &self,
        organization: Uuid,
        name: &str,
    ) -> Result<String, SimError> {
        let created: Created = self
            .post_json(
                &format!("{BASE}/category/"),
                &json!({ "name": name, "organization": organization }),
            )
            .await?;
        id_text(created.id)
    }

    /// Creates a build of the category; returns its id.
    pub async fn create_build(
        &self,
        category: &str,
        version: &str,
        os: &str,
        changelog: &str,
    ) -> Result<String, SimError> {
        let created: Created = self
            .post_json(
                &format!("{BASE}/build/"),
                &json!({
                    "category": category,
                    "version": version,
                    "os": os,
                    "changelog": changelog,
                }),
            )
            .await?;
        id_text(created.id)
    }

    /// Uploads a firmware image (multipart `file` and `type`) to the build; returns the
    /// API's answer (`id`, `file`, `type`, maybe `sha256`).
    pub async fn upload_image(
        &self,
        build: &str,
        image_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, SimError> {
        let file = reqwest::multipart::Part::bytes(bytes)
            .file_name(image_type.to_owned())
            .mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("type", image_type.to_owned());
        self.post_multipart(&format!("{BASE}/build/{build}/image/"), form)
            .await
    }

    /// Starts a batch upgrade of the build; returns the batch id.
    pub async fn start_batch(&self, build: &str, rollout: &Rollout) -> Result<Uuid, SimError> {
        let started: Started = self
            .post_json(&format!("{BASE}/build/{build}/upgrade/"), &rollout.body())
            .await?;
        Ok(started.batch)
    }

    /// The batch's detail.
    pub async fn batch(&self, batch: Uuid) -> Result<BatchDetail, SimError> {
        self.get_json(&format!("{BASE}/batch-upgrade-operation/{batch}/"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_body_carries_only_the_options_set() {
        assert_eq!(Rollout::default().body(), json!({"upgrade_all": true}));
        let rollout = Rollout {
            max_parallel: Some(50),
            rate_per_minute: Some(600),
            waves: Some(vec![1, 10, 100]),
            abort_failure_rate: Some(0.2),
            abort_min_sample: None,
        };
        assert_eq!(
            rollout.body(),
            json!({
                "upgrade_all": true,
                "max_parallel": 50,
                "rate_per_minute": 600,
                "waves": [1, 10, 100],
                "abort_threshold": {"failure_rate": 0.2, "min_sample": 20},
            })
        );
    }

    #[test]
    fn batch_detail_parses_the_contract_example() {
        let detail: BatchDetail = serde_json::from_value(json!({
            "id": "6f1c1a52-2a4e-4bb4-9d59-0f8f6f0d7b5e",
            "build": "b",
            "status": "in-progress",
            "progress_report": "3 out of 10",
            "total": 10,
            "status_counts": {"in-progress": 2, "success": 2, "failed": 1, "aborted": 0, "cancelled": 0},
            "success_rate": 20, "failed_rate": 10, "aborted_rate": 0, "cancelled_rate": 0,
            "created": "2026-01-01T00:00:00Z", "modified": "2026-01-01T00:00:00Z",
            "upgrade_operations": [],
        }))
        .unwrap();
        assert_eq!(detail.status_counts.finished(), 3);
        assert_eq!(detail.status_counts.in_progress, 2);
        assert_eq!(detail.success_rate, Some(20.0));
        assert!(!detail.is_finished());
        assert_eq!(id_text(json!(7)).unwrap(), "7");
        assert!(id_text(json!(null)).is_err());
    }
}
