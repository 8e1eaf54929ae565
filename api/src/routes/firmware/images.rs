//! `/api/v1/firmware-upgrader/build/{id}/image/`: a build's image files — uploaded as
//! multipart, streamed to disk with their SHA-256, downloaded with Range and ETag.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetmq_store::{
    BlobError, BuildId, DeviceId, DownloadGrant, Image, ImageId, StoredBlob, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::builds::{visible_build, writable_build};
use crate::auth::{Add, Authorized, Caller, Delete, FirmwareImages, View};
use crate::extract::{PathId, QueryPairs};
use crate::filters::Filters;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::{ApiError, AppState, ErrorDetail};

/// The image routes (uploads bypass the JSON body limit and have their own).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_images, upload_image))
        .routes(routes!(get_image, delete_image))
        .routes(routes!(download_image))
        .layer(DefaultBodyLimit::disable())
}

/// An image as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    /// Identity.
    pub id: Uuid,
    /// Its build.
    pub build: Uuid,
    /// Board identifier.
    #[serde(rename = "type")]
    pub kind: String,
    /// Download URL.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file (hex); also its ETag.
    pub sha256: String,
    /// Upload time.
    pub created: String,
}

/// An upload's multipart form (`file` and `type`) as read: the parsed form and its
/// documentation.
#[derive(Debug, ToSchema)]
pub struct ImageUpload {
    /// The image file (stored as it streamed in).
    #[schema(value_type = String, format = Binary)]
    file: StoredFile,
    /// Board identifier, one of the image types.
    #[serde(rename = "type")]
    kind: String,
}

/// An uploaded file, in the blob store under its image's id; removed when dropped unless its
/// record is committed.
#[derive(Debug)]
struct StoredFile(StoredBlob);

fn malformed(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Multipart form parse error - {e}"))
}

impl ImageUpload {
    /// Reads the form of `request`, streaming its file into the blob store as image `id`
    /// (SHA-256 computed on the way). Whatever refuses the form (415, 400, 413) leaves no file.
    async fn read(
        state: &AppState,
        request: axum::extract::Request,
        id: ImageId,
    ) -> Result<ImageUpload, ApiError> {
        let read = Self::read_form(state, request, id).await;
        if read.is_err() {
            super::remove_files(state, vec![id]).await;
        }
        read
    }

    async fn read_form(
        state: &AppState,
        request: axum::extract::Request,
        id: ImageId,
    ) -> Result<ImageUpload, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type.starts_with("multipart/form-data") {
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        let mut multipart =
            <Multipart as axum::extract::FromRequest<AppState>>::from_request(request, state)
                .await
                .map_err(malformed)?;
        let mut kind: Option<String> = None;
        let mut file: Option<StoredFile> = None;
        let mut errors = Map::new();
        while let Some(field) = multipart.next_field().await.map_err(malformed)? {
            match field.name() {
                Some("type") => {
                    let text = field.text().await.map_err(malformed)?;
                    match super::image_types::valid_name(&text) {
                        Ok(t) => kind = Some(t),
                        Err(m) => add_error(&mut errors, "type", m),
                    }
                }
                Some("file") if file.is_none() => {
                    file = Some(store_file(state, field, id).await?);
                }
                _ => {}
            }
        }
        if file.is_none() {
            add_error(&mut errors, "file", "No file was submitted.");
        }
        if kind.is_none() && !errors.contains_key("type") {
            add_error(&mut errors, "type", "This field is required.");
        }
        if let Some(k) = &kind {
            let types = state.store().run(|db| db.image_types()).await?;
            if !types.iter().any(|t| &t.name == k) {
                add_error(
                    &mut errors,
                    "type",
                    format!("\"{k}\" is not a valid choice."),
                );
            }
        }
        match (kind, file) {
            (Some(kind), Some(file)) if errors.is_empty() => Ok(ImageUpload { file, kind }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// Streams a form's file into the blob store as image `id`, at most the configured size.
async fn store_file(
    state: &AppState,
    mut field: axum::extract::multipart::Field<'_>,
    id: ImageId,
) -> Result<StoredFile, ApiError> {
    let blobs = state.store().blobs();
    let mut writer = blobs
        .writer(state.config().firmware_upload_limit)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(malformed(e));
            }
        };
        if let Err(e) = writer.write(&chunk).await {
            writer.abort().await;
            return Err(match e {
                BlobError::TooLarge { limit } => ApiError::PayloadTooLarge(limit as usize),
                BlobError::Io(e) => ApiError::Internal(e.to_string()),
            });
        }
    }
    let stored = writer
        .finish(blobs, id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(StoredFile(stored))
}

/// Filter of the image list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageQuery {
    /// Board identifier.
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn view(image: Image) -> ImageView {
    ImageView {
        id: image.id.0,
        build: image.build.0,
        file: fleetmq_store::download::image_path(image.build, image.id),
        kind: image.kind,
        size: image.size,
        sha256: image.sha256,
        created: image.created.to_string(),
    }
}

/// The build and image ids of an image's path; anything else is not found.
type ImagePath = Result<Path<(Uuid, Uuid)>, PathRejection>;

/// Adds `message` to `field`'s problems (DRF's shape: a list per field).
fn add_error(errors: &mut Map<String, Value>, field: &str, message: impl Into<String>) {
    if let Value::Array(list) = errors.entry(field).or_insert_with(|| json!([])) {
        list.push(Value::String(message.into()));
    }
}

/// Lists a build's images.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{id}/image/", tag = "firmware",
    params(PathId, PageQuery, ImageQuery), responses((status = 200, body = Paginated<ImageView>)),
    security(("bearer" = [])))]
async fn list_images(
    State(state): State<AppState>,
    auth: Authorized<FirmwareImages, View>,
    PathId(build): PathId,
    paging: Paging,
    Filters(query): Filters<ImageQuery>,
) -> Result<Json<Paginated<ImageView>>, ApiError> {
    let build = visible_build(&state, &auth.caller, build).await?;
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.list_images(build.id, query.kind.as_deref(), request))
        .await?;
    paging.envelope(page, view)
}

/// Uploads an image (multipart: `file` and `type`), streamed to disk; the SHA-256 is computed
/// on the way. Past the size limit → 413.
#[utoipa::path(post, path = "/api/v1/firmware-upgrader/build/{id}/image/", tag = "firmware",
    params(PathId), request_body(content = ImageUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = ImageView)), security(("bearer" = [])))]
async fn upload_image(
    State(state): State<AppState>,
    auth: Authorized<FirmwareImages, Add>,
    PathId(build): PathId,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    // Only a superuser changes a shared build's images (as its other fields).
    let build = writable_build(&state, &auth.caller, build).await?;
    let id = ImageId::new();
    let upload = ImageUpload::read(&state, request, id).await?;
    let StoredFile(file) = upload.file;
    let image = Image {
        id,
        build: build.id,
        kind: upload.kind,
        size: file.size(),
        sha256: file.sha256().to_owned(),
        created: Timestamp::now(),
    };
    // The file goes with the commit onto its blocking thread, which runs to the end even if
    // the client leaves now: the file is kept exactly when its record is.
    let image = state
        .store()
        .run(move |db| {
            let image = db.create_image(image)?;
            file.keep();
            Ok(image)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view(image))))
}

/// Loads an image of a build the caller may see.
async fn visible_image(
    state: &AppState,
    caller: &Caller,
    path: ImagePath,
) -> Result<(Image, String), ApiError> {
    let Path((build, image)) = path.map_err(|_| ApiError::NotFound)?;
    let build = visible_build(state, caller, build).await?;
    let image = state
        .store()
        .run(move |db| db.image(ImageId(image)))
        .await?
        .filter(|i| i.build == build.id)
        .ok_or(ApiError::NotFound)?;
    Ok((image, build.fields.version))
}

/// Shows an image.
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{build_id}/image/{id}/",
    tag = "firmware", params(("build_id" = Uuid, Path, description = "Build id"), PathId),
    responses((status = 200, body = ImageView)), security(("bearer" = [])))]
async fn get_image(
    State(state): State<AppState>,
    auth: Authorized<FirmwareImages, View>,
    path: ImagePath,
) -> Result<Json<ImageView>, ApiError> {
    let (image, _) = visible_image(&state, &auth.caller, path).await?;
    Ok(Json(view(image)))
}

/// Deletes an image and its file.
#[utoipa::path(delete, path = "/api/v1/firmware-upgrader/build/{build_id}/image/{id}/",
    tag = "firmware", params(("build_id" = Uuid, Path, description = "Build id"), PathId),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete_image(
    State(state): State<AppState>,
    auth: Authorized<FirmwareImages, Delete>,
    path: ImagePath,
) -> Result<StatusCode, ApiError> {
    let (image, _) = visible_image(&state, &auth.caller, path).await?;
    // Only a superuser removes a shared build's images: every organization may be using them.
    writable_build(&state, &auth.caller, image.build.0).await?;
    state
        .store()
        .run(move |db| db.delete_image(image.id))
        .await?;
    super::remove_files(&state, vec![image.id]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `size`.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
    };
    (start <= end && end < size).then_some((start, end))
}

/// Downloads an image: `Content-Length`, `ETag` (the SHA-256), `Range` for resuming and
/// `X-Firmware-Version` (the build's version). Without a token, a device may present the
/// download grant the server put in its fetch URL (`?device=&expires=&signature=`).
#[utoipa::path(get, path = "/api/v1/firmware-upgrader/build/{build_id}/image/{id}/download/",
    tag = "firmware",
    params(("build_id" = Uuid, Path, description = "Build id"), PathId, DownloadQuery),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range"), (status = 304, description = "ETag matches"),
        (status = 403, description = "No permission, the caller manages no organization, or an invalid or expired grant", body = ErrorDetail),
        (status = 416, description = "Unsatisfiable range")),
    security(("bearer" = []), ()))]
async fn download_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
    auth: Result<Authorized<FirmwareImages, View>, ApiError>,
    path: ImagePath,
) -> Result<Response, ApiError> {
    let grant = DownloadQuery::from_query(&query);
    // A token, when given, decides; without one a device presents its grant.
    let (image, version) = if headers.contains_key(header::AUTHORIZATION) || !grant.is_given() {
        visible_image(&state, &auth?.caller, path).await?
    } else {
        granted_image(&state, &grant, path).await?
    };
    let etag = format!("\"{}\"", image.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, image.size),
        Some(raw) => match parse_range(raw, image.size) {
            Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            None => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", image.size)) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(response);
            }
        },
    };
    let body = read_body(&state, &image, start, len).await?;
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, image.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.bin\"", image.kind)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&version) {
        h.insert("x-firmware-version", v);
    }
    Ok(response)
}

/// Images up to this size are kept in memory once read (at most [`CACHED_IMAGES`] of them) and
/// served from there: a fleet downloading the same image at once shares one buffer and costs
/// no disk read or thread hop per download. Larger images stream from disk.
const CACHE_UP_TO: u64 = 1024 * 1024;
/// Small images kept in memory at most (images never change once uploaded, and a deleted
/// image's record is gone before its bytes could be served, so entries need no invalidation).
const CACHED_IMAGES: usize = 16;

/// What downloads keep between requests, one per [`AppState`]: the secret that signs device
/// download links, and small images' bytes.
#[derive(Default)]
pub struct DownloadCache {
    secret: tokio::sync::OnceCell<[u8; 32]>,
    images: std::sync::Mutex<std::collections::HashMap<ImageId, axum::body::Bytes>>,
}

/// `len` bytes from `start` of an image's file, as a response body.
async fn read_body(
    state: &AppState,
    image: &Image,
    start: u64,
    len: u64,
) -> Result<Body, ApiError> {
    let unreadable = |e: std::io::Error| ApiError::Internal(format!("image file unreadable: {e}"));
    let path = state.store().blobs().path(image.id);
    if image.size <= CACHE_UP_TO {
        let cache = &state.downloads().images;
        let cached = cache.lock().ok().and_then(|c| c.get(&image.id).cloned());
        let whole = match cached {
            Some(bytes) => bytes,
            None => {
                let bytes =
                    axum::body::Bytes::from(tokio::fs::read(&path).await.map_err(unreadable)?);
                if let Ok(mut cache) = cache.lock() {
                    if cache.len() >= CACHED_IMAGES {
                        cache.clear();
                    }
                    cache.insert(image.id, bytes.clone());
                }
                bytes
            }
        };
        let (from, to) = (start as usize, (start + len) as usize);
        if to > whole.len() {
            return Err(ApiError::Internal(
                "image file shorter than its record".into(),
            ));
        }
        return Ok(Body::from(whole.slice(from..to)));
    }
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(unreadable)?;
    Ok(Body::from_stream(tokio_util::io::ReaderStream::new(
        file.take(len),
    )))
}

/// The download grant of a device, in the query of a download URL. Kept as given: a grant
/// that does not parse is refused like one that does not verify.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// The device allowed.
    #[param(value_type = Option<Uuid>)]
    device: Option<String>,
    /// Unix seconds after which the link is refused.
    #[param(value_type = Option<i64>)]
    expires: Option<String>,
    /// Hex HMAC-SHA256 of the grant.
    signature: Option<String>,
}

impl DownloadQuery {
    fn from_query(query: &QueryPairs) -> Self {
        let given = |key| query.get(key).map(str::to_owned);
        DownloadQuery {
            device: given("device"),
            expires: given("expires"),
            signature: given("signature"),
        }
    }

    /// Whether the request presents a grant at all.
    fn is_given(&self) -> bool {
        self.device.is_some() || self.expires.is_some() || self.signature.is_some()
    }

    /// The grant for `image` and its signature, if both parts parse.
    fn grant(&self, image: ImageId) -> Option<(DownloadGrant, &str)> {
        let device = DeviceId(Uuid::parse_str(self.device.as_deref()?).ok()?);
        let expires = self.expires.as_deref()?.parse::<i64>().ok()?;
        let grant = DownloadGrant {
            image,
            device,
            expires,
        };
        Some((grant, self.signature.as_deref().unwrap_or("")))
    }
}

const BAD_GRANT: &str = "Invalid or expired download link.";

/// The secret signing download links: read from the store once, then kept.
pub(crate) async fn download_secret(state: &AppState) -> Result<[u8; 32], ApiError> {
    let secret = state
        .downloads()
        .secret
        .get_or_try_init(|| async {
            state
                .store()
                .run(|db| db.secret(fleetmq_store::DOWNLOAD_SECRET))
                .await
        })
        .await?;
    Ok(*secret)
}

/// The image a valid grant lets its device download, with its build's version.
async fn granted_image(
    state: &AppState,
    query: &DownloadQuery,
    path: ImagePath,
) -> Result<(Image, String), ApiError> {
    let refuse = || ApiError::Forbidden(BAD_GRANT.to_owned());
    let Path((build, image)) = path.map_err(|_| ApiError::NotFound)?;
    let (build, image_id) = (BuildId(build), ImageId(image));
    let (grant, signature) = query.grant(image_id).ok_or_else(refuse)?;
    let device = grant.device;
    let secret = download_secret(state).await?;
    if !grant.verify(&secret, signature, Timestamp::now()) {
        return Err(refuse());
    }
    let found = state
        .store()
        .run(move |db| {
            let Some(device) = db.device(device)? else {
                return Ok(None);
            };
            let Some(image) = db.image(image_id)?.filter(|i| i.build == build) else {
                return Ok(None);
            };
            let Some(build) = db.build(build)? else {
                return Ok(None);
            };
            let category = db.category(build.fields.category)?;
            Ok(Some((device, image, build, category)))
        })
        .await?;
    let (device, image, build, category) = found.ok_or(ApiError::NotFound)?;
    let allowed = !device.is_deactivated
        && category.is_some_and(|c| {
            c.fields
                .organization
                .is_none_or(|org| org == device.fields.organization)
        });
    if !allowed {
        return Err(ApiError::Forbidden(
            "This device may not download this image.".to_owned(),
        ));
    }
    Ok((image, build.fields.version))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_resume_downloads_and_refuse_nonsense() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-5000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
