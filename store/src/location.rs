//! Where devices are: locations and the link of a device to its location.

use fleetmq_protocol::{Coordinates, OutOfRange};
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
    /// A point, if both numbers are finite and in range (the check of [`Coordinates::new`]).
    /// The message is for a REST client's field error.
    pub fn new(lng: f64, lat: f64) -> Result<Self, String> {
        match Coordinates::new(lng, lat) {
            Ok(coordinates) => Ok(Self::from(coordinates)),
            Err(OutOfRange::Longitude(lng)) => {
                Err(format!("Longitude {lng} is out of range (-180 to 180)."))
            }
            Err(OutOfRange::Latitude(lat)) => {
                Err(format!("Latitude {lat} is out of range (-90 to 90)."))
            }
        }
    }
}

/// A position a device reported is already checked.
impl From<Coordinates> for Point {
    fn from(coordinates: Coordinates) -> Self {
        Self {
            lng: coordinates.lng(),
            lat: coordinates.lat(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_client_is_told_which_coordinate_is_out_of_range() {
        assert_eq!(
            Point::new(181.0, 0.0),
            Err("Longitude 181 is out of range (-180 to 180).".to_owned())
        );
        assert_eq!(
            Point::new(0.0, -91.0),
            Err("Latitude -91 is out of range (-90 to 90).".to_owned())
        );
        assert!(Point::new(f64::NAN, 0.0).is_err());
        assert_eq!(
            Point::new(12.5, 41.9),
            Ok(Point {
                lng: 12.5,
                lat: 41.9
            })
        );
    }
}
