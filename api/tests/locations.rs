//! Locations, floor plans and device locations, through the API as OpenWISP clients use them.

mod common;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Request, StatusCode};
use common::firmware::{Part, multipart};
use common::{Reply, TestApi};
use fleetmq_api::ApiConfig;
use fleetmq_store::{Group, PlanImageId};
use serde_json::{Value, json};

const LOCATIONS: &str = "/api/v1/controller/location/";
const FLOORPLANS: &str = "/api/v1/controller/floorplan/";

/// A PNG as far as its header goes: signature and a 640×480 `IHDR`.
fn png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bytes.extend_from_slice(&640u32.to_be_bytes());
    bytes.extend_from_slice(&480u32.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes
}

fn device_location(device: &str) -> String {
    format!("/api/v1/controller/device/{device}/location/")
}

/// Sends a multipart form with `method`.
async fn form(api: &TestApi, method: &str, path: &str, token: &str, parts: &[Part<'_>]) -> Reply {
    let (content_type, body) = multipart(parts);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(CONTENT_TYPE, content_type)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body))
        .expect("request");
    let raw = api.send(request).await;
    Reply {
        status: raw.status,
        body: raw.json(),
    }
}

fn image_part<'a>(name: &'a str, bytes: &'a [u8]) -> Part<'a> {
    Part {
        name,
        filename: Some("plan.png"),
        bytes,
    }
}

/// The floor plan images on disk.
fn image_files(api: &TestApi) -> usize {
    let dir = api
        .store()
        .floorplan_files()
        .path(PlanImageId(uuid::Uuid::nil()));
    std::fs::read_dir(dir.parent().expect("a folder"))
        .expect("the folder exists")
        .count()
}

async fn location(api: &TestApi, org: &str, name: &str, kind: &str) -> String {
    let reply = api
        .post(
            LOCATIONS,
            &api.admin,
            json!({"organization": org, "name": name, "type": kind,
                   "geometry": {"type": "Point", "coordinates": [12.5, 41.9]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.str("id")
}

async fn floorplan(api: &TestApi, location: &str, floor: &str) -> Reply {
    let image = png();
    form(
        api,
        "POST",
        FLOORPLANS,
        &api.admin.clone(),
        &[
            Part::text("location", location),
            Part::text("floor", floor),
            image_part("image", &image),
        ],
    )
    .await
}

#[tokio::test]
async fn locations_take_geojson_or_wkt_and_answer_geojson() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let point = api
        .post(
            LOCATIONS,
            &api.admin,
            json!({"organization": acme, "name": "HQ", "type": "outdoor",
                   "address": "Via del Corso, Roma", "geometry": "POINT (12.512124 41.898903)"}),
        )
        .await;
    assert_eq!(point.status, StatusCode::CREATED, "{:?}", point.body);
    assert_eq!(
        point.body["geometry"],
        json!({"type": "Point", "coordinates": [12.512124, 41.898903]})
    );
    assert_eq!(point.body["is_mobile"], json!(false));
    assert_eq!(point.body["floorplan"], json!([]));
    let area = api
        .post(
            LOCATIONS,
            &api.admin,
            json!({"organization": acme, "name": "Campus", "type": "indoor", "is_mobile": true,
                   "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}),
        )
        .await;
    assert_eq!(area.status, StatusCode::CREATED, "{:?}", area.body);
    assert_eq!(area.body["geometry"]["type"], "Polygon");

    let path = format!("{LOCATIONS}{}/", point.str("id"));
    let changed = api
        .patch(
            &path,
            &api.admin,
            json!({"geometry": {"type": "Point", "coordinates": [13, 42]}}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["geometry"]["coordinates"], json!([13.0, 42.0]));
    assert_eq!(changed.body["name"], "HQ");

    let indoor = api
        .get(&format!("{LOCATIONS}?type=indoor"), &api.admin)
        .await;
    assert_eq!(indoor.body["count"], 1);
    let mobile = api
        .get(&format!("{LOCATIONS}?is_mobile=false"), &api.admin)
        .await;
    assert_eq!(mobile.body["results"][0]["name"], "HQ");
    let by_slug = api
        .get(&format!("{LOCATIONS}?organization_slug=acme"), &api.admin)
        .await;
    assert_eq!(by_slug.body["count"], 2);
    let unknown = api
        .get(&format!("{LOCATIONS}?organization_slug=nope"), &api.admin)
        .await;
    assert_eq!(unknown.body["count"], 0);

    assert_eq!(
        api.delete(&path, &api.admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get(&path, &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_location_bodies_get_field_errors() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let reply = api
        .post(
            LOCATIONS,
            &api.admin,
            json!({"organization": acme, "name": "", "type": "underwater", "is_mobile": "maybe",
                   "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["name"], json!(["This field may not be blank."]));
    assert_eq!(
        reply.body["type"],
        json!(["\"underwater\" is not a valid choice."])
    );
    assert_eq!(reply.body["is_mobile"], json!(["Must be a valid boolean."]));
    assert!(
        reply.body["geometry"][0]
            .as_str()
            .is_some_and(|m| m.contains("LineString"))
    );

    let missing = api.post(LOCATIONS, &api.admin, json!({})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    for field in ["organization", "name", "type"] {
        assert_eq!(
            missing.body[field],
            json!(["This field is required."]),
            "{field}"
        );
    }
    let request = Request::post(LOCATIONS)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {}", api.admin))
        .body(Body::from("{\"name\": "))
        .expect("request");
    assert_eq!(api.send(request).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn another_organizations_locations_are_not_found() {
    let api = TestApi::start().await;
    let (acme, beta) = (api.org("acme").await, api.org("beta").await);
    let theirs = location(&api, &beta, "Their HQ", "indoor").await;
    let plan = floorplan(&api, &theirs, "1").await;
    assert_eq!(plan.status, StatusCode::CREATED, "{:?}", plan.body);
    let operator = api.user("op", &[Group::Operator], &[&acme]).await;
    let admin = api.user("adm", &[Group::Administrator], &[&acme]).await;
    for token in [&operator, &admin] {
        let mine = api
            .post(
                LOCATIONS,
                token,
                json!({"organization": acme, "name": "Mine", "type": "outdoor"}),
            )
            .await;
        assert_eq!(mine.status, StatusCode::CREATED, "{:?}", mine.body);
        let path = format!("{LOCATIONS}{theirs}/");
        assert_eq!(api.get(&path, token).await.status, StatusCode::NOT_FOUND);
        assert_eq!(api.delete(&path, token).await.status, StatusCode::NOT_FOUND);
        let plan_path = format!("{FLOORPLANS}{}/", plan.str("id"));
        assert_eq!(
            api.get(&plan_path, token).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            api.get(&format!("{plan_path}image/"), token).await.status,
            StatusCode::NOT_FOUND
        );
        let listed = api.get(LOCATIONS, token).await;
        assert!(
            listed.body["results"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|l| l["organization"] == json!(acme))
        );
        assert_eq!(api.get(FLOORPLANS, token).await.body["count"], 0);
        let foreign = api
            .post(
                LOCATIONS,
                token,
                json!({"organization": beta, "name": "x", "type": "outdoor"}),
            )
            .await;
        assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            foreign.body["organization"],
            json!([format!("Invalid pk \"{beta}\" - object does not exist.")])
        );
    }
}

#[tokio::test]
async fn floor_plans_keep_a_checked_image_per_floor_of_an_indoor_location() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let building = location(&api, &acme, "Building", "indoor").await;
    let created = floorplan(&api, &building, "1").await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["name"], "Building 1st Floor");
    assert_eq!(created.body["organization"], json!(acme));
    let id = created.str("id");
    assert_eq!(created.str("image"), format!("{FLOORPLANS}{id}/image/"));
    let download = api
        .send(
            Request::get(created.str("image"))
                .header(AUTHORIZATION, format!("Bearer {}", api.admin))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.header("content-type"), "image/png");
    assert_eq!(download.body.as_ref(), png().as_slice());
    let without_token = api.call("GET", &created.str("image"), None, None).await;
    assert_eq!(without_token.status, StatusCode::UNAUTHORIZED);

    let again = floorplan(&api, &building, "1").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.body["non_field_errors"],
        json!(["The fields location, floor must make a unique set."])
    );
    let shown = api
        .get(&format!("{LOCATIONS}{building}/"), &api.admin)
        .await;
    assert_eq!(shown.body["floorplan"][0]["floor"], 1);
    assert_eq!(image_files(&api), 1, "the refused duplicate left no file");

    let field = api
        .patch(
            &format!("{FLOORPLANS}{id}/"),
            &api.admin,
            json!({"floor": "x"}),
        )
        .await;
    assert_eq!(field.body["floor"], json!(["A valid integer is required."]));
    let moved = api
        .patch(
            &format!("{FLOORPLANS}{id}/"),
            &api.admin,
            json!({"floor": -1}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["name"], "Building -1st Floor");

    let image = png();
    let replaced = form(
        &api,
        "PATCH",
        &format!("{FLOORPLANS}{id}/"),
        &api.admin.clone(),
        &[image_part("image", &image)],
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    assert_eq!(image_files(&api), 1, "the replaced image's file went");

    assert_eq!(
        api.delete(&format!("{FLOORPLANS}{id}/"), &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(image_files(&api), 0);
}

#[tokio::test]
async fn outdoor_locations_take_no_floor_plan() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let park = location(&api, &acme, "Park", "outdoor").await;
    let refused = floorplan(&api, &park, "1").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.body["location"],
        json!(["Floorplan can only be added with location of the type indoor"])
    );
    let image = png();
    let with_location = form(
        &api,
        "POST",
        LOCATIONS,
        &api.admin.clone(),
        &[
            Part::text("organization", &acme),
            Part::text("name", "Field"),
            Part::text("type", "outdoor"),
            Part::text("floorplan.floor", "1"),
            image_part("floorplan.image", &image),
        ],
    )
    .await;
    assert_eq!(with_location.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        with_location.body["type"],
        json!(["Floorplan can only be added with location of the type indoor"])
    );
    assert_eq!(image_files(&api), 0, "refused uploads leave no file");

    // An indoor location made outdoor loses its floor plans, as in OpenWISP.
    let created = form(
        &api,
        "POST",
        LOCATIONS,
        &api.admin.clone(),
        &[
            Part::text("organization", &acme),
            Part::text("name", "Office"),
            Part::text("type", "indoor"),
            Part::text("is_mobile", "false"),
            Part::text("geometry", "POINT (12.5 41.9)"),
            Part::text("floorplan.floor", "2"),
            image_part("floorplan.image", &image),
        ],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["floorplan"][0]["floor"], 2);
    assert_eq!(image_files(&api), 1);
    let outdoor = api
        .patch(
            &format!("{LOCATIONS}{}/", created.str("id")),
            &api.admin,
            json!({"type": "outdoor"}),
        )
        .await;
    assert_eq!(outdoor.status, StatusCode::OK);
    assert_eq!(outdoor.body["floorplan"], json!([]));
    assert_eq!(image_files(&api), 0);
}

#[tokio::test]
async fn floor_plan_images_are_checked_and_bounded() {
    let api = TestApi::start_with(ApiConfig {
        floorplan_upload_limit: 64,
        ..ApiConfig::default()
    })
    .await;
    let acme = api.org("acme").await;
    let building = location(&api, &acme, "Building", "indoor").await;
    let text = b"GIF89a, or rather not an image at all".to_vec();
    let not_image = form(
        &api,
        "POST",
        FLOORPLANS,
        &api.admin.clone(),
        &[
            Part::text("location", &building),
            Part::text("floor", "1"),
            image_part("image", &text),
        ],
    )
    .await;
    assert_eq!(not_image.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        not_image.body["image"],
        json!([
            "Upload a valid image. The file you uploaded was either not an image or a corrupted image."
        ])
    );
    let mut big = png();
    big.resize(65, 0);
    let too_large = form(
        &api,
        "POST",
        FLOORPLANS,
        &api.admin.clone(),
        &[
            Part::text("location", &building),
            Part::text("floor", "1"),
            image_part("image", &big),
        ],
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    let no_image = api
        .post(
            FLOORPLANS,
            &api.admin,
            json!({"location": building, "floor": 1}),
        )
        .await;
    assert_eq!(no_image.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_image.body["image"], json!(["No file was submitted."]));
    assert_eq!(image_files(&api), 0);
    // Deleting the location removes its floor plans and their images.
    assert_eq!(
        floorplan(&api, &building, "3").await.status,
        StatusCode::CREATED
    );
    assert_eq!(image_files(&api), 1);
    assert_eq!(
        api.delete(&format!("{LOCATIONS}{building}/"), &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(image_files(&api), 0);
    assert_eq!(api.get(FLOORPLANS, &api.admin).await.body["count"], 0);
}

#[tokio::test]
async fn a_device_is_placed_by_ids_and_put_creates_then_updates() {
    let api = TestApi::start().await;
    let (acme, beta) = (api.org("acme").await, api.org("beta").await);
    let device = api.device(&acme, "ap1").await;
    let building = location(&api, &acme, "Building", "indoor").await;
    let plan = floorplan(&api, &building, "1").await.str("id");
    let path = device_location(&device);
    assert_eq!(
        api.get(&path, &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
    let patch_first = api.patch(&path, &api.admin, json!({"indoor": "1,1"})).await;
    assert_eq!(patch_first.status, StatusCode::NOT_FOUND);

    let body = json!({"location": building, "floorplan": plan, "indoor": "-36,264"});
    let created = api.put(&path, &api.admin, body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["location"]["id"], json!(building));
    assert_eq!(created.body["location"]["type"], "Feature");
    assert_eq!(created.body["location"]["properties"]["type"], "indoor");
    assert_eq!(created.body["floorplan"]["id"], json!(plan));
    assert_eq!(created.body["floorplan"]["name"], "Building 1st Floor");
    assert_eq!(created.body["indoor"], "-36,264");
    let updated = api.put(&path, &api.admin, body).await;
    assert_eq!(updated.status, StatusCode::OK);
    let moved = api.patch(&path, &api.admin, json!({"indoor": "0,0"})).await;
    assert_eq!(moved.body["indoor"], "0,0");
    assert_eq!(moved.body["floorplan"]["id"], json!(plan));
    assert_eq!(api.get(&path, &api.admin).await.body["indoor"], "0,0");

    let unknown = api
        .put(
            &path,
            &api.admin,
            json!({"location": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        unknown.body["location"],
        json!(["Location object with entered ID does not exists."])
    );
    let theirs = location(&api, &beta, "Theirs", "indoor").await;
    let their_plan = floorplan(&api, &theirs, "1").await.str("id");
    let foreign = api
        .put(&path, &api.admin, json!({"location": theirs}))
        .await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        foreign.body["location"],
        json!(["Location object with entered ID does not exists."])
    );
    let foreign_plan = api
        .put(
            &path,
            &api.admin,
            json!({"location": building, "floorplan": their_plan}),
        )
        .await;
    assert_eq!(foreign_plan.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        foreign_plan.body["floorplan"],
        json!(["FloorPlan object with entered ID does not exists."])
    );
    let bad_indoor = api
        .patch(&path, &api.admin, json!({"indoor": "here"}))
        .await;
    assert_eq!(bad_indoor.status, StatusCode::BAD_REQUEST);
    assert!(bad_indoor.body["indoor"].is_array());
    let not_object = api.put(&path, &api.admin, json!({"location": 5})).await;
    assert_eq!(not_object.status, StatusCode::BAD_REQUEST);

    let devices = api
        .get(&format!("{LOCATIONS}{building}/device/"), &api.admin)
        .await;
    assert_eq!(devices.status, StatusCode::OK);
    assert_eq!(devices.body["count"], 1);
    assert_eq!(devices.body["results"][0]["id"], json!(device));
    assert_eq!(devices.body["has_floorplan"], true);

    assert_eq!(
        api.delete(&path, &api.admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get(&path, &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete(&path, &api.admin).await.status,
        StatusCode::NOT_FOUND
    );
    let left = api
        .get(&format!("{LOCATIONS}{building}/"), &api.admin)
        .await;
    assert_eq!(left.status, StatusCode::OK, "the location stays");
}

#[tokio::test]
async fn a_device_location_can_create_its_location_and_floor_plan() {
    let api = TestApi::start().await;
    let acme = api.org("acme").await;
    let first = api.device(&acme, "ap1").await;
    let nested = api
        .put(
            &device_location(&first),
            &api.admin,
            json!({"location": {"name": "Via del Corso", "address": "Via del Corso, Roma",
                                "geometry": "POINT (12.512124 41.898903)", "type": "outdoor"}}),
        )
        .await;
    assert_eq!(nested.status, StatusCode::CREATED, "{:?}", nested.body);
    assert_eq!(
        nested.body["location"]["geometry"],
        json!({"type": "Point", "coordinates": [12.512124, 41.898903]})
    );
    assert_eq!(nested.body["floorplan"], Value::Null);
    let incomplete = api
        .put(
            &device_location(&api.device(&acme, "ap3").await),
            &api.admin,
            json!({"location": {"name": "x"}}),
        )
        .await;
    assert_eq!(
        incomplete.body["location"]["type"],
        json!(["This field is required."])
    );

    let second = api.device(&acme, "ap2").await;
    let image = png();
    let dotted = form(
        &api,
        "PUT",
        &device_location(&second),
        &api.admin.clone(),
        &[
            Part::text("location.name", "Office"),
            Part::text("location.address", "Via del Corso, Roma"),
            Part::text("location.geometry.type", "Point"),
            Part::text("location.geometry.coordinates", "[12.512124, 41.898903]"),
            Part::text("location.type", "indoor"),
            Part::text("floorplan.floor", "1"),
            image_part("floorplan.image", &image),
            Part::text("indoor", "12.342,23.541"),
        ],
    )
    .await;
    assert_eq!(dotted.status, StatusCode::CREATED, "{:?}", dotted.body);
    assert_eq!(dotted.body["floorplan"]["name"], "Office 1st Floor");
    assert_eq!(dotted.body["indoor"], "12.342,23.541");
    assert_eq!(image_files(&api), 1);

    let outdoor = api.device(&acme, "ap4").await;
    let refused = form(
        &api,
        "PUT",
        &device_location(&outdoor),
        &api.admin.clone(),
        &[
            Part::text("location.name", "Yard"),
            Part::text("location.type", "outdoor"),
            Part::text("floorplan.floor", "1"),
            image_part("floorplan.image", &image),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.body["floorplan"],
        json!(["Floorplan can only be added with location of the type indoor"])
    );
    assert_eq!(image_files(&api), 1, "the refused image left no file");
    assert_eq!(
        api.get(&device_location(&outdoor), &api.admin).await.status,
        StatusCode::NOT_FOUND
    );

    // An existing location with a new floor plan.
    let building = location(&api, &acme, "Building", "indoor").await;
    let existing = form(
        &api,
        "PUT",
        &device_location(&outdoor),
        &api.admin.clone(),
        &[
            Part::text("location", &building),
            Part::text("floorplan.floor", "3"),
            image_part("floorplan.image", &image),
        ],
    )
    .await;
    assert_eq!(existing.status, StatusCode::CREATED, "{:?}", existing.body);
    assert_eq!(existing.body["location"]["id"], json!(building));
    assert_eq!(existing.body["floorplan"]["floor"], 3);

    let geojson = api.get(&format!("{LOCATIONS}geojson/"), &api.admin).await;
    assert_eq!(geojson.status, StatusCode::OK);
    assert_eq!(geojson.body["type"], "FeatureCollection");
    assert_eq!(geojson.body["count"], 3);
    let feature = &geojson.body["features"][0];
    assert_eq!(feature["type"], "Feature");
    assert_eq!(feature["id"], json!(building));
    assert_eq!(feature["properties"]["device_count"], 1);
    assert_eq!(feature["properties"]["organization"], json!(acme));
    let other = api.org("beta").await;
    let filtered = api
        .get(
            &format!("{LOCATIONS}geojson/?organization_id={other}"),
            &api.admin,
        )
        .await;
    assert_eq!(filtered.body["count"], 0);
}
