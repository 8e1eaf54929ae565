//! `/api/v1/firmware-upgrader/`: OpenWISP's firmware upgrader endpoints.

pub mod batches;
pub mod builds;
pub mod categories;
pub mod device_firmware;
pub mod image_types;
pub mod images;
pub mod upgrades;

use fleetmq_store::ImageId;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Every firmware route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(categories::router())
        .merge(builds::router())
        .merge(images::router())
        .merge(image_types::router())
        .merge(device_firmware::router())
        .merge(upgrades::router())
        .merge(batches::router())
}

/// Removes image files after their records are gone (logged, never failing the request).
pub(crate) async fn remove_files(state: &AppState, images: Vec<ImageId>) {
    for id in images {
        if let Err(e) = state.store().blobs().remove(id).await {
            tracing::warn!(error = %e, image = %id, "image file not removed");
        }
    }
}
