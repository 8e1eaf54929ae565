//! `up/coordinates`: the device position as a GeoJSON Point Feature (RFC 7946).
//!
//! ```json
//! {"type":"Feature","geometry":{"type":"Point","coordinates":[12.49,41.89]},"properties":{}}
//! ```
//!
//! GeoJSON orders positions longitude first; swapped coordinates are the classic bug, so the
//! ranges are checked. [`Coordinates::new`] is the one range check of fleetmq: the store's
//! `Point` (a location typed in through the REST API) is built through it too.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ProtocolError, from_json, to_json};

/// A validated WGS 84 position. Serializes to and from the GeoJSON Feature wire form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "wire::Feature", into = "wire::Feature")]
pub struct Coordinates {
    lng: f64,
    lat: f64,
}

impl Coordinates {
    /// A position; `lng` in -180..=180, `lat` in -90..=90, both finite.
    pub fn new(lng: f64, lat: f64) -> Result<Coordinates, OutOfRange> {
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(OutOfRange::Longitude(lng));
        }
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(OutOfRange::Latitude(lat));
        }
        Ok(Coordinates { lng, lat })
    }

    /// Longitude in degrees.
    pub fn lng(&self) -> f64 {
        self.lng
    }

    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        self.lat
    }

    /// Parses a payload received on `up/coordinates`.
    pub fn parse(payload: &[u8]) -> Result<Coordinates, ProtocolError> {
        from_json("coordinates", payload)
    }

    /// The GeoJSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Which number of a position is not a WGS 84 coordinate. Typed, so that each audience
/// (a device on `down/error`, a REST client's field error) words it its own way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutOfRange {
    /// Not finite, or outside -180..=180.
    Longitude(f64),
    /// Not finite, or outside -90..=90.
    Latitude(f64),
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutOfRange::Longitude(lng) => write!(f, "longitude {lng} is outside -180..=180"),
            OutOfRange::Latitude(lat) => write!(f, "latitude {lat} is outside -90..=90"),
        }
    }
}

mod wire {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub enum FeatureType {
        Feature,
    }

    #[derive(Serialize, Deserialize)]
    pub enum PointType {
        Point,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Geometry {
        #[serde(rename = "type")]
        pub kind: PointType,
        pub coordinates: Vec<f64>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Feature {
        #[serde(rename = "type")]
        pub kind: FeatureType,
        pub geometry: Geometry,
        #[serde(default)]
        pub properties: Option<serde_json::Map<String, serde_json::Value>>,
    }
}

impl TryFrom<wire::Feature> for Coordinates {
    type Error = String;

    fn try_from(feature: wire::Feature) -> Result<Self, Self::Error> {
        // RFC 7946 §3.1.1: a position has two or three elements (the third is altitude).
        match feature.geometry.coordinates[..] {
            [lng, lat] | [lng, lat, _] => Coordinates::new(lng, lat).map_err(|e| e.to_string()),
            _ => Err("a Point needs [longitude, latitude]".to_owned()),
        }
    }
}

impl From<Coordinates> for wire::Feature {
    fn from(c: Coordinates) -> Self {
        wire::Feature {
            kind: wire::FeatureType::Feature,
            geometry: wire::Geometry {
                kind: wire::PointType::Point,
                coordinates: vec![c.lng, c.lat],
            },
            properties: Some(serde_json::Map::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_feature_round_trips_longitude_first() {
        let c = Coordinates::new(12.49, 41.89).unwrap();
        let bytes = c.to_bytes();
        assert_eq!(
            bytes,
            br#"{"type":"Feature","geometry":{"type":"Point","coordinates":[12.49,41.89]},"properties":{}}"#
        );
        assert_eq!(Coordinates::parse(&bytes).unwrap(), c);
    }

    #[test]
    fn altitude_is_accepted_and_null_properties_too() {
        let c = Coordinates::parse(
            br#"{"type":"Feature","geometry":{"type":"Point","coordinates":[-1,2,300]},"properties":null}"#,
        )
        .unwrap();
        assert_eq!((c.lng(), c.lat()), (-1.0, 2.0));
    }

    #[test]
    fn out_of_range_or_wrong_shapes_are_refused_with_a_reason() {
        let feature = |coords: &str| {
            format!(
                r#"{{"type":"Feature","geometry":{{"type":"Point","coordinates":{coords}}},"properties":{{}}}}"#
            )
        };
        let err = Coordinates::parse(feature("[41.89, 120.0]").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("latitude 120 is outside"), "{err}");
        let err = Coordinates::parse(feature("[181, 0]").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("longitude 181 is outside"), "{err}");
        assert!(Coordinates::parse(feature("[1]").as_bytes()).is_err());
        assert!(Coordinates::parse(feature("[1,2,3,4]").as_bytes()).is_err());
        assert!(
            Coordinates::parse(
                br#"{"type":"Feature","geometry":{"type":"LineString","coordinates":[1,2]}}"#
            )
            .is_err()
        );
        assert!(
            Coordinates::parse(
                br#"{"type":"Point","geometry":{"type":"Point","coordinates":[1,2]}}"#
            )
            .is_err()
        );
        assert!(Coordinates::new(f64::NAN, 0.0).is_err());
    }
}
