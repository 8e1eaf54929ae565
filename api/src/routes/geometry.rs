//! Locations' geometry on the wire: read as GeoJSON (`{"type": "Point", "coordinates": [lng,
//! lat]}`, `Polygon`) or WKT text (`POINT (12.5 41.9)`, `POLYGON ((...))`, an optional
//! `SRID=4326;` prefix), always answered as GeoJSON.

use fleetmq_store::{Geometry, Point};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// DRF-gis's message for a value that is no geometry.
const INVALID: &str =
    "Invalid format: string or unicode input unrecognized as GeoJSON, WKT EWKT or HEXEWKB.";

/// A geometry as a client writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeometryField(pub Geometry);

/// The GeoJSON of a geometry.
pub fn geojson(geometry: &Geometry) -> Value {
    let pair = |p: &Point| json!([p.lng, p.lat]);
    match geometry {
        Geometry::Point(p) => json!({"type": "Point", "coordinates": pair(p)}),
        Geometry::Polygon { rings } => json!({
            "type": "Polygon",
            "coordinates": rings.iter().map(|r| r.iter().map(pair).collect::<Vec<_>>()).collect::<Vec<_>>(),
        }),
    }
}

fn position(value: &Value) -> Result<Point, String> {
    match value.as_array().map(Vec::as_slice) {
        Some([lng, lat]) | Some([lng, lat, _]) => match (lng.as_f64(), lat.as_f64()) {
            (Some(lng), Some(lat)) => Point::new(lng, lat),
            _ => Err(INVALID.to_owned()),
        },
        _ => Err(INVALID.to_owned()),
    }
}

/// Reads GeoJSON (an object, or its text).
fn from_geojson(value: &Value) -> Result<Geometry, String> {
    let object = value.as_object().ok_or(INVALID)?;
    let mut coordinates = object.get("coordinates").cloned().unwrap_or(Value::Null);
    // Multipart forms send `geometry.coordinates` as text.
    if let Value::String(text) = &coordinates {
        coordinates = serde_json::from_str(text).map_err(|_| INVALID.to_owned())?;
    }
    match object.get("type").and_then(Value::as_str) {
        Some("Point") => position(&coordinates).map(Geometry::Point),
        Some("Polygon") => {
            let rings = coordinates
                .as_array()
                .ok_or(INVALID)?
                .iter()
                .map(|ring| {
                    ring.as_array()
                        .ok_or_else(|| INVALID.to_owned())?
                        .iter()
                        .map(position)
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            Geometry::polygon(rings)
        }
        Some(other) => Err(format!(
            "Unsupported geometry type \"{other}\": give a Point or a Polygon."
        )),
        None => Err(INVALID.to_owned()),
    }
}

/// `lng lat` pairs separated by commas.
fn wkt_ring(text: &str) -> Result<Vec<Point>, String> {
    text.split(',')
        .map(|pair| {
            let numbers: Vec<f64> = pair
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| INVALID.to_owned())?;
            match numbers[..] {
                [lng, lat] | [lng, lat, _] => Point::new(lng, lat),
                _ => Err(INVALID.to_owned()),
            }
        })
        .collect()
}

/// Reads WKT or EWKT (`SRID=4326;` only).
fn from_wkt(text: &str) -> Result<Geometry, String> {
    let mut text = text.trim();
    if let Some((srid, rest)) = text.split_once(';') {
        if !srid.trim().eq_ignore_ascii_case("SRID=4326") {
            return Err("Only WGS 84 (SRID=4326) geometries are accepted.".to_owned());
        }
        text = rest.trim();
    }
    let open = text.find('(').ok_or(INVALID)?;
    let (kind, body) = text.split_at(open);
    let body = body.trim();
    let inner = body
        .strip_prefix('(')
        .and_then(|b| b.strip_suffix(')'))
        .ok_or(INVALID)?
        .trim();
    match kind.trim().to_ascii_uppercase().as_str() {
        "POINT" => match wkt_ring(inner)?.as_slice() {
            [point] => Ok(Geometry::Point(*point)),
            _ => Err(INVALID.to_owned()),
        },
        "POLYGON" => {
            let mut rings = Vec::new();
            let mut rest = inner;
            while !rest.is_empty() {
                let ring = rest.strip_prefix('(').ok_or(INVALID)?;
                let end = ring.find(')').ok_or(INVALID)?;
                rings.push(wkt_ring(&ring[..end])?);
                rest = ring[end + 1..].trim_start();
                rest = rest.strip_prefix(',').map_or(rest, str::trim_start);
            }
            Geometry::polygon(rings)
        }
        _ => Err(INVALID.to_owned()),
    }
}

impl<'de> Deserialize<'de> for GeometryField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let read = match &value {
            Value::String(text) if text.trim_start().starts_with('{') => {
                serde_json::from_str::<Value>(text)
                    .map_err(|_| INVALID.to_owned())
                    .and_then(|v| from_geojson(&v))
            }
            Value::String(text) => from_wkt(text),
            Value::Object(_) => from_geojson(&value),
            Value::Null => Err(crate::body::NOT_NULL.to_owned()),
            _ => Err(INVALID.to_owned()),
        };
        read.map(GeometryField).map_err(de::Error::custom)
    }
}

impl PartialSchema for GeometryField {
    fn schema() -> RefOr<Schema> {
        let position = || {
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::Number))
                .min_items(Some(2))
                .max_items(Some(2))
        };
        let point = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["Point"])),
            )
            .property("coordinates", position())
            .required("type")
            .required("coordinates");
        let ring = utoipa::openapi::schema::ArrayBuilder::new()
            .items(position())
            .min_items(Some(4));
        let polygon = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["Polygon"])),
            )
            .property(
                "coordinates",
                utoipa::openapi::schema::ArrayBuilder::new()
                    .items(ring)
                    .min_items(Some(1)),
            )
            .required("type")
            .required("coordinates");
        let wkt = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(
                r"^(SRID=4326;)?\s*(POINT|POLYGON|point|polygon)\s*\(.*\)\s*$",
            ))
            .description(Some("WKT: `POINT (lng lat)` or `POLYGON ((lng lat, ...))`"));
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(point)
                .item(polygon)
                .item(wkt)
                .description(Some(
                    "GeoJSON Point or Polygon (longitude first, WGS 84), or WKT text",
                ))
                .build(),
        ))
    }
}

impl ToSchema for GeometryField {}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: Value) -> Result<Geometry, String> {
        GeometryField::deserialize(value)
            .map(|g| g.0)
            .map_err(|e: serde_json::Error| e.to_string())
    }

    #[test]
    fn geojson_and_wkt_read_the_same() {
        let point = Geometry::Point(Point {
            lng: 12.512124,
            lat: 41.898903,
        });
        assert_eq!(
            read(json!({"type": "Point", "coordinates": [12.512124, 41.898903]})),
            Ok(point.clone())
        );
        assert_eq!(
            read(json!("POINT (12.512124 41.898903)")),
            Ok(point.clone())
        );
        assert_eq!(
            read(json!("SRID=4326;POINT (12.512124 41.898903)")),
            Ok(point.clone())
        );
        assert_eq!(
            read(json!({"type": "Point", "coordinates": "[12.512124, 41.898903]"})),
            Ok(point)
        );
        let square = read(json!("POLYGON ((0 0, 1 0, 1 1, 0 0))")).expect("a polygon");
        assert_eq!(
            geojson(&square),
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]})
        );
        assert_eq!(read(geojson(&square)), Ok(square));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            json!("POINT (1)"),
            json!("LINESTRING (0 0, 1 1)"),
            json!("POLYGON ((0 0, 1 0, 1 1))"),
            json!({"type": "Point", "coordinates": [500, 0]}),
            json!({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
            json!(5),
            json!("SRID=3857;POINT (1 2)"),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }
}
