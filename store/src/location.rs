//! Where devices are: locations and the link of a device to its location.

use serde::{Deserialize, Serialize};

use crate::{DeviceId, LocationId, OrgId, Timestamp};

/// A WGS 84 point, longitude first as GeoJSON has it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Longitude, -180 to 180.
    pub lng: f64,
    /// Latitude, -90 to 90.
    pub lat: f64,
}

impl Point {
    /// A point, if both numbers are finite and in range.
    pub fn new(lng: f64, lat: f64) -> Result<Self, String> {
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(format!("Longitude {lng} is out of range (-180 to 180)."));
        }
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("Latitude {lat} is out of range (-90 to 90)."));
        }
        Ok(Self { lng, lat })
    }
}

/// Indoor (with floor plans) or outdoor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationType {
    /// A place on a map.
    Outdoor,
    /// A building with floor plans.
    Indoor,
}

/// A stored location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Identity.
    pub id: LocationId,
    /// Owning organization.
    pub organization: OrgId,
    /// Display name.
    pub name: String,
    /// Indoor or outdoor.
    pub kind: LocationType,
    /// Moves with its device (coordinates reported by the device itself).
    pub is_mobile: bool,
    /// Postal address.
    pub address: String,
    /// Where it is.
    pub geometry: Option<Point>,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// A device placed at a location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceLocation {
    /// The device.
    pub device: DeviceId,
    /// Its location.
    pub location: LocationId,
}
