//! `/api/v1/firmware-upgrader/`: OpenWISP's firmware upgrader endpoints.

pub mod builds;
pub mod categories;
pub mod images;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Every firmware route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(categories::router())
        .merge(builds::router())
        .merge(images::router())
}
