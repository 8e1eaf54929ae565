//! The device's configuration agent: what an openwisp-config agent does, driven by MQTT.
//!
//! On a `down/config/notice` the device downloads the archive the notice names, checks that its
//! MD5 is the announced checksum and that it is a gzip archive, keeps it as its running
//! configuration and answers on `up/config/status`: `applied`, or `error` with the reason. A
//! notice for the configuration already running (the server repeats the current notice after
//! every reconnection) is answered `applied` again without a download; a notice for a
//! checksum already being fetched is not fetched twice.

use std::time::Duration;

use md5::{Digest, Md5};
use tokio::sync::mpsc;

use crate::update::{HTTP_CHUNK_TIMEOUT, http_client};
use fleetmq_protocol::{ConfigNotice, ConfigOutcome, ConfigReport};

/// The largest archive a simulated device accepts (real configurations are a few KiB).
pub const MAX_ARCHIVE_BYTES: usize = 4 * 1024 * 1024;

/// The device's configuration state; survives reconnections and reboots.
#[derive(Debug, Default)]
pub(crate) struct ConfigAgent {
    /// Checksum of the configuration the device runs.
    running: Option<String>,
    /// Checksum being downloaded.
    fetching: Option<String>,
}

/// What the device task does about a notice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoticeAction {
    /// Report this at once.
    Report(ConfigReport),
    /// Download the archive (spawn [`fetch`]).
    Fetch(ConfigNotice),
    /// Already downloading it.
    Nothing,
}

/// A finished download: the checksum it was for and what came of it.
#[derive(Debug)]
pub(crate) struct Fetched {
    checksum: String,
    result: Result<(), String>,
}

impl ConfigAgent {
    /// Decides what a notice asks of the device.
    pub(crate) fn on_notice(&mut self, notice: ConfigNotice) -> NoticeAction {
        if self.running.as_deref() == Some(notice.checksum.as_str()) {
            return NoticeAction::Report(ConfigReport {
                status: ConfigOutcome::Applied,
                checksum: notice.checksum,
                reason: String::new(),
            });
        }
        if self.fetching.as_deref() == Some(notice.checksum.as_str()) {
            return NoticeAction::Nothing;
        }
        self.fetching = Some(notice.checksum.clone());
        NoticeAction::Fetch(notice)
    }

    /// Applies a finished download; returns the report to publish.
    pub(crate) fn on_fetched(&mut self, fetched: Fetched) -> ConfigReport {
        if self.fetching.as_deref() == Some(fetched.checksum.as_str()) {
            self.fetching = None;
        }
        match fetched.result {
            Ok(()) => {
                self.running = Some(fetched.checksum.clone());
                ConfigReport {
                    status: ConfigOutcome::Applied,
                    checksum: fetched.checksum,
                    reason: String::new(),
                }
            }
            Err(reason) => ConfigReport {
                status: ConfigOutcome::Error,
                checksum: fetched.checksum,
                reason,
            },
        }
    }

    /// The checksum of the running configuration, if any was applied.
    #[cfg(test)]
    pub(crate) fn running(&self) -> Option<&str> {
        self.running.as_deref()
    }
}

/// Downloads the archive of `notice` and reports to `done`.
pub(crate) async fn fetch(notice: ConfigNotice, done: mpsc::UnboundedSender<Fetched>) {
    let result = download(&notice).await;
    // The device may have stopped; nothing to do then.
    let _ = done.send(Fetched {
        checksum: notice.checksum,
        result,
    });
}

/// Download attempts before a configuration is reported as failed.
pub const DOWNLOAD_ATTEMPTS: u32 = 8;
/// First wait after a busy server or a refused connection; it doubles per attempt.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between attempts (also caps a server's Retry-After).
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Whether a failed answer is worth another attempt: the server is busy or briefly down
/// (a whole fleet notified at once meets the server's connection limits), not refusing.
fn transient(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The wait before attempt `attempt + 1`: the server's Retry-After when it gave one, else
/// exponential backoff; jittered so a fleet told at once does not come back at once.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = retry_after
        .unwrap_or_else(|| RETRY_FIRST.saturating_mul(1 << attempt.min(8)))
        .min(RETRY_MAX);
    base.mul_f64(rand::random_range(0.5..1.5))
}

/// Fetches the archive, retrying what a busy server answers (connection refused or reset,
/// 429, 5xx) up to [`DOWNLOAD_ATTEMPTS`] times, as a real agent retries on its next poll.
async fn download(notice: &ConfigNotice) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("configuration download failed: {e}");
    let mut attempt = 0;
    let mut response = loop {
        attempt += 1;
        let (error, retry_after) = match http_client().get(&notice.url).send().await {
            Ok(response) if response.status().is_success() => break response,
            Ok(response) if transient(response.status()) => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                (format!("HTTP {}", response.status()), retry_after)
            }
            Ok(response) => {
                return Err(format!(
                    "configuration download failed: HTTP {}",
                    response.status()
                ));
            }
            Err(e) => (e.to_string(), None),
        };
        if attempt >= DOWNLOAD_ATTEMPTS {
            return Err(failed(&format!("{error} ({attempt} attempts)")));
        }
        tokio::time::sleep(backoff(attempt - 1, retry_after)).await;
    };
    let mut archive = Vec::new();
    // A server that stops sending must not keep the checksum "being fetched" for ever.
    while let Some(chunk) = tokio::time::timeout(HTTP_CHUNK_TIMEOUT, response.chunk())
        .await
        .map_err(|_| failed(&"the server stopped sending"))?
        .map_err(|e| failed(&e))?
    {
        if archive.len() + chunk.len() > MAX_ARCHIVE_BYTES {
            return Err(format!(
                "configuration archive larger than {MAX_ARCHIVE_BYTES} bytes"
            ));
        }
        archive.extend_from_slice(&chunk);
    }
    check(&archive, &notice.checksum)
}

/// Whether `archive` is the configuration announced with `checksum`.
fn check(archive: &[u8], checksum: &str) -> Result<(), String> {
    let actual = hex(&Md5::digest(archive));
    if actual != checksum {
        return Err(format!(
            "checksum mismatch: the archive's MD5 is {actual}, the notice said {checksum}"
        ));
    }
    if !archive.starts_with(&[0x1f, 0x8b]) {
        return Err("the configuration is not a gzip archive".to_owned());
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(checksum: &str) -> ConfigNotice {
        ConfigNotice {
            checksum: checksum.to_owned(),
            url: "http://127.0.0.1:9/config".to_owned(),
        }
    }

    #[test]
    fn a_notice_is_fetched_once_and_the_running_configuration_is_reported_without_a_download() {
        let sum = "0123456789abcdef0123456789abcdef";
        let mut agent = ConfigAgent::default();
        assert_eq!(
            agent.on_notice(notice(sum)),
            NoticeAction::Fetch(notice(sum))
        );
        assert_eq!(agent.on_notice(notice(sum)), NoticeAction::Nothing);
        let report = agent.on_fetched(Fetched {
            checksum: sum.to_owned(),
            result: Ok(()),
        });
        assert_eq!(report.status, ConfigOutcome::Applied);
        assert_eq!(agent.running(), Some(sum));
        assert!(matches!(
            agent.on_notice(notice(sum)),
            NoticeAction::Report(ConfigReport {
                status: ConfigOutcome::Applied,
                ..
            })
        ));
    }

    #[test]
    fn a_failed_download_keeps_the_previous_configuration_and_may_be_retried() {
        let (old, new) = (
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        );
        let mut agent = ConfigAgent::default();
        agent.on_notice(notice(old));
        agent.on_fetched(Fetched {
            checksum: old.to_owned(),
            result: Ok(()),
        });
        agent.on_notice(notice(new));
        let report = agent.on_fetched(Fetched {
            checksum: new.to_owned(),
            result: Err("checksum mismatch".to_owned()),
        });
        assert_eq!(report.status, ConfigOutcome::Error);
        assert_eq!(report.reason, "checksum mismatch");
        assert_eq!(agent.running(), Some(old));
        assert_eq!(
            agent.on_notice(notice(new)),
            NoticeAction::Fetch(notice(new))
        );
    }

    #[test]
    fn an_archive_must_have_the_announced_md5_and_be_gzip() {
        let archive = [0x1f, 0x8b, 8, 0];
        let sum = hex(&Md5::digest(archive));
        assert_eq!(check(&archive, &sum), Ok(()));
        let err = check(&archive, "0123456789abcdef0123456789abcdef").unwrap_err();
        assert!(err.starts_with("checksum mismatch"), "{err}");
        let html = b"<html>";
        let err = check(html, &hex(&Md5::digest(html))).unwrap_err();
        assert_eq!(err, "the configuration is not a gzip archive");
    }
}
