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

/// Which samples to read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TelemetryRange {
    /// Measured at or after.
    pub since: Option<Timestamp>,
    /// Measured before.
    pub until: Option<Timestamp>,
}
