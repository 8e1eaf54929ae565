//! Where devices are: locations (a point or an area), their floor plans (indoor maps, one
//! image per floor) and the link of a device to its location.

use fleetmq_protocol::{Coordinates, OutOfRange};
use serde::{Deserialize, Serialize};

use crate::{DeviceId, FloorPlanId, LocationId, OrgId, PlanImageId, Timestamp};

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

/// Where a location is: a point, or an area (a polygon: an outer ring, then holes; each ring
/// closed, first point repeated last).
///
/// Stored untagged so that records written when a location could only be a point (the bare
/// `{"lng", "lat"}` object) still read as [`Geometry::Point`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Geometry {
    /// A single position.
    Point(Point),
    /// An area.
    Polygon {
        /// Outer ring first, then holes.
        rings: Vec<Vec<Point>>,
    },
}

impl Geometry {
    /// A polygon, if every ring has at least four points and is closed (OGC's rule).
    pub fn polygon(rings: Vec<Vec<Point>>) -> Result<Self, String> {
        if rings.is_empty() {
            return Err("A polygon needs at least one ring.".to_owned());
        }
        for ring in &rings {
            if ring.len() < 4 {
                return Err("Each polygon ring needs at least four points.".to_owned());
            }
            if ring.first() != ring.last() {
                return Err(
                    "Each polygon ring must be closed (first point = last point).".to_owned(),
                );
            }
        }
        Ok(Geometry::Polygon { rings })
    }

    /// The point, for a point geometry.
    pub fn point(&self) -> Option<Point> {
        match self {
            Geometry::Point(point) => Some(*point),
            Geometry::Polygon { .. } => None,
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
    pub geometry: Option<Geometry>,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

impl Location {
    /// The location's writable fields.
    pub fn fields(&self) -> LocationFields {
        LocationFields {
            organization: self.organization,
            name: self.name.clone(),
            kind: self.kind,
            is_mobile: self.is_mobile,
            address: self.address.clone(),
            geometry: self.geometry.clone(),
        }
    }
}

/// What a client writes of a location.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationFields {
    /// Owning organization.
    pub organization: OrgId,
    /// Display name.
    pub name: String,
    /// Indoor or outdoor.
    pub kind: LocationType,
    /// Moves with its device.
    pub is_mobile: bool,
    /// Postal address.
    pub address: String,
    /// Where it is.
    pub geometry: Option<Geometry>,
}

/// The image format of a floor plan, read from the file's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
}

impl ImageFormat {
    /// The media type it is served with.
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }
}

/// How much of an image's start [`sniff_image`] needs at most: a JPEG's frame header may
/// follow metadata segments (EXIF, ICC profiles); an image whose dimensions come later is
/// refused.
pub const IMAGE_HEAD: usize = 256 * 1024;

/// The format and size (width, height) of a PNG or JPEG, read from its first bytes (magic
/// number, then the PNG `IHDR` chunk or the JPEG frame header); `None` for anything else.
pub fn sniff_image(head: &[u8]) -> Option<(ImageFormat, u32, u32)> {
    let be16 = |at: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *head.get(at)?,
            *head.get(at + 1)?,
        ])))
    };
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        if head.get(12..16)? != b"IHDR" {
            return None;
        }
        let width = u32::from_be_bytes(head.get(16..20)?.try_into().ok()?);
        let height = u32::from_be_bytes(head.get(20..24)?.try_into().ok()?);
        return (width > 0 && height > 0).then_some((ImageFormat::Png, width, height));
    }
    if !head.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut at = 2;
    loop {
        if *head.get(at)? != 0xff {
            return None;
        }
        while *head.get(at)? == 0xff {
            at += 1;
        }
        let marker = *head.get(at)?;
        at += 1;
        match marker {
            0xd0..=0xd7 | 0x01 => continue,
            0xd9 | 0xda => return None,
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                let height = be16(at + 3)?;
                let width = be16(at + 5)?;
                return (width > 0 && height > 0).then_some((ImageFormat::Jpeg, width, height));
            }
            _ => at += usize::try_from(be16(at)?).ok()?,
        }
    }
}

/// A floor plan's image file, as stored in the floor plan blob store under `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanImage {
    /// The file (a new one per upload, so a replaced image's file can go after the commit).
    pub file: PlanImageId,
    /// PNG or JPEG.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size in bytes.
    pub size: u64,
}

/// A floor of an indoor location, with its map image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorPlan {
    /// Identity.
    pub id: FloorPlanId,
    /// The (indoor) location.
    pub location: LocationId,
    /// The location's organization.
    pub organization: OrgId,
    /// Floor number (negative below ground); unique per location.
    pub floor: i32,
    /// The map.
    pub image: PlanImage,
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
    /// The floor it is on (indoor locations); absent in records from before floor plans.
    #[serde(default)]
    pub floorplan: Option<FloorPlanId>,
    /// Its position on the floor plan image, `"y,x"` from the top-left corner, as OpenWISP
    /// keeps it.
    #[serde(default)]
    pub indoor: Option<String>,
}

/// Filters of the location list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocationFilter {
    /// Indoor or outdoor only.
    pub kind: Option<LocationType>,
    /// Mobile or fixed only.
    pub is_mobile: Option<bool>,
}

/// How a device's placement changes: each part `None` keeps what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The location.
    pub location: Option<LocationChoice>,
    /// The floor plan.
    pub floorplan: Option<FloorplanChoice>,
    /// The position on the floor plan.
    pub indoor: Option<Option<String>>,
}

/// The location a placement puts a device at.
#[derive(Debug, Clone, PartialEq)]
pub enum LocationChoice {
    /// An existing location.
    Existing(LocationId),
    /// The device's current location with these fields, or a new one when it has none.
    Write(LocationFields),
}

/// The floor plan a placement puts a device on.
#[derive(Debug, Clone, PartialEq)]
pub enum FloorplanChoice {
    /// None.
    Clear,
    /// An existing floor plan (of the placement's location).
    Existing(FloorPlanId),
    /// The device's current floor plan changed (floor, image), or a new one of the
    /// placement's location when it has none (then both are given).
    Write {
        /// Floor number.
        floor: Option<i32>,
        /// New image.
        image: Option<PlanImage>,
    },
}

/// What a placement did.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The device's link.
    pub link: DeviceLocation,
    /// Its location.
    pub location: Location,
    /// Its floor plan.
    pub floorplan: Option<FloorPlan>,
    /// Whether the device had no location before.
    pub created: bool,
    /// Image files no record refers to any more (to delete after the commit).
    pub released: Vec<PlanImageId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2×3 PNG's signature and header chunk.
    fn png_head(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0]);
        bytes
    }

    #[test]
    fn images_are_known_by_their_bytes() {
        assert_eq!(sniff_image(&png_head(2, 3)), Some((ImageFormat::Png, 2, 3)));
        assert_eq!(sniff_image(&png_head(0, 3)), None);
        // SOI, an APP0 segment, then a baseline frame header of 640×480.
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x4a, 0x46, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x01,
            0xe0, 0x02, 0x80, 0x03,
        ];
        assert_eq!(sniff_image(&jpeg), Some((ImageFormat::Jpeg, 640, 480)));
        assert_eq!(sniff_image(&jpeg[..12]), None, "cut before the size");
        assert_eq!(sniff_image(b"GIF89a......"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn locations_stored_as_bare_points_still_read() {
        let old = r#"{"id":"6f1c1f1e-4a57-4c6b-9d5e-0a8f4b1c2d3e","organization":"1f6c5666-1011-4f1d-bce9-fc6fcb4f3a05","name":"ap","kind":"outdoor","is_mobile":true,"address":"","geometry":{"lng":12.5,"lat":41.9},"created":1700000000000000,"modified":1700000000000000}"#;
        let location: Location = serde_json::from_str(old).expect("old record reads");
        assert_eq!(
            location.geometry,
            Some(Geometry::Point(Point {
                lng: 12.5,
                lat: 41.9
            }))
        );
        let link: DeviceLocation = serde_json::from_str(
            r#"{"device":"6f1c1f1e-4a57-4c6b-9d5e-0a8f4b1c2d3e","location":"6f1c1f1e-4a57-4c6b-9d5e-0a8f4b1c2d3e"}"#,
        )
        .expect("old link reads");
        assert_eq!((link.floorplan, link.indoor), (None, None));
    }

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
