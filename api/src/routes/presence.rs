//! `/api/v1/controller/device/{id}/presence/`: when a device came online and went offline (the
//! console's presence history).
//!
//! Only changes are listed, newest first, the last
//! [`PRESENCE_HISTORY_LEN`](fleetmq_store::PRESENCE_HISTORY_LEN) of them; a device's current
//! state is its device view's `presence`, kept live by `/api/v1/events/`.

use axum::Json;
use axum::extract::State;
use fleetmq_store::PresenceChange;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Authorized, Devices, View};
use crate::extract::PathId;
use crate::pagination::{PageQuery, Paginated, Paging};
use crate::routes::devices::visible_device;
use crate::{ApiError, AppState};

/// The presence history route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_presence))
}

/// One change of a device's presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceChangeView {
    /// The device's MQTT session opened (`true`) or ended (`false`).
    pub online: bool,
    /// When the server saw it (RFC 3339).
    pub at: String,
    /// Why the session ended when the device did not say goodbye (e.g. a keepalive timeout);
    /// empty when online.
    pub reason: String,
}

fn view(change: PresenceChange) -> PresenceChangeView {
    PresenceChangeView {
        online: change.online,
        at: change.at.to_string(),
        reason: change.reason,
    }
}

/// A device's presence history: each time its MQTT session opened or ended, newest first
/// (the last 1,000 changes). Whoever may view the device may read it.
#[utoipa::path(get, path = "/api/v1/controller/device/{id}/presence/", tag = "devices",
    params(PathId, PageQuery), responses((status = 200, body = Paginated<PresenceChangeView>)),
    security(("bearer" = [])))]
async fn list_presence(
    State(state): State<AppState>,
    auth: Authorized<Devices, View>,
    PathId(id): PathId,
    paging: Paging,
) -> Result<Json<Paginated<PresenceChangeView>>, ApiError> {
    let device = visible_device(&state, &auth.caller, id).await?;
    let request = paging.request();
    let page = state
        .store()
        .run(move |db| db.presence_history(device.id, request))
        .await?;
    paging.envelope(page, view)
}
