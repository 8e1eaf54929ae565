//! Device telemetry: the latest values per device and a bounded history.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DeviceId, Timestamp};

/// One telemetry message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    /// The device.
    pub device: DeviceId,
    /// When the device measured it.
    pub timestamp: Timestamp,
    /// When the server received it.
    pub received: Timestamp,
    /// Free-form metrics.
    pub metrics: Map<String, Value>,
}

/// Which page of a device's history to read. A page holds at most `size` samples and ends
/// before the sample that would take its stored bytes past `max_bytes` (it always holds one),
/// so a page stays small however large the samples are; page `n` starts where page `n - 1`
/// ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPageRequest {
    /// 1-based page number.
    pub number: u64,
    /// Samples per page at most.
    pub size: u64,
    /// Stored bytes per page at most (beyond its first sample).
    pub max_bytes: u64,
}

/// One page of a device's history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Samples in the whole range.
    pub count: u64,
    /// This page's samples.
    pub items: Vec<TelemetrySample>,
    /// Whether samples follow this page.
    pub more: bool,
}

/// Which samples to read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TelemetryRange {
    /// Measured at or after.
    pub since: Option<Timestamp>,
    /// Measured before.
    pub until: Option<Timestamp>,
}
