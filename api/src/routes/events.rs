//! `GET /api/v1/events/`: the live events of the caller's organizations (a device online or
//! offline, a command ended, a batch upgrade's progress), as server-sent events, for the
//! console's live views.
//!
//! Events come from the store's [`LiveEvents`](fleetmq_store::LiveEvents), announced after the
//! commit that stored them, on every node (another node's commits are carried by its notice),
//! and are judged per event against the caller's organizations (a batch's as its detail route
//! judges it: the caller may view batches, and the batch is of an organization they manage, or
//! they are a superuser). The caller is judged again
//! whenever logins change (a user, membership, token or organization): a stream whose caller
//! lost the right ends at once. Streams at once are bounded (`--api-max-event-streams`; past
//! it 503 with `Retry-After`); a client that falls behind the bounded backlog gets a `lagged`
//! event (reload what it shows) and the stream goes on.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use fleetmq_store::{Action, LiveEvent, LoginChange, Scope};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::firmware::batches::StatusCountsView;
use crate::auth::{Authorized, BatchUpgrades, Caller, Devices, Guarded, View, authenticate};
use crate::{ApiError, AppState, ErrorDetail};

/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The live event routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The `data` of a `presence` event.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceEvent {
    /// The device.
    pub device: uuid::Uuid,
    /// Its organization.
    pub organization: uuid::Uuid,
    /// Connected now.
    pub online: bool,
    /// When, RFC 3339.
    pub at: String,
}

/// The `data` of a `command` event: a command ended (its output is at its detail route).
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandEvent {
    /// The command.
    pub command: uuid::Uuid,
    /// Its device.
    pub device: uuid::Uuid,
    /// The device's organization.
    pub organization: uuid::Uuid,
    /// `success` or `failed`.
    #[schema(value_type = String)]
    pub status: fleetmq_store::CommandStatus,
    /// When, RFC 3339.
    pub at: String,
}

/// The `data` of a `batch` event: a batch upgrade's operations changed status (one event per
/// batch per commit). Its fields are those of the batch's detail view.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchEvent {
    /// The batch.
    pub batch: uuid::Uuid,
    /// Its organization; null for a shared build's batch (seen by superusers only).
    pub organization: Option<uuid::Uuid>,
    /// `idle`, `in-progress`, `success`, `failed` or `cancelled`.
    pub status: &'static str,
    /// Operations per status.
    pub status_counts: StatusCountsView,
    /// Operations in the batch.
    pub total: u32,
    /// When, RFC 3339.
    pub at: String,
}

/// Whose events a stream's caller may see.
struct Watcher {
    /// Organizations whose events they see.
    scope: Scope,
    /// May view batch upgrades.
    batches: bool,
}

impl Watcher {
    fn of(caller: &Caller) -> Option<Self> {
        if !Devices::permits(&caller.user, Action::View) {
            return None;
        }
        Some(Self {
            scope: caller.scope().ok()?,
            batches: BatchUpgrades::permits(&caller.user, Action::View),
        })
    }

    fn sees(&self, event: &LiveEvent) -> bool {
        match (event, event.organization()) {
            (LiveEvent::Batch { .. }, _) if !self.batches => false,
            (_, Some(org)) => self.scope.contains(org),
            // Of no one organization: superusers only.
            (_, None) => self.scope == Scope::All,
        }
    }
}

fn sse(event: &LiveEvent) -> Event {
    match event {
        LiveEvent::Batch {
            batch,
            organization,
            status,
            counts,
            total,
            at,
        } => {
            let data = BatchEvent {
                batch: batch.0,
                organization: organization.map(|o| o.0),
                status: status.as_str(),
                status_counts: (*counts).into(),
                total: *total,
                at: at.to_string(),
            };
            Event::default()
                .event("batch")
                .json_data(data)
                .unwrap_or_else(|_| Event::default().event("batch"))
        }
        LiveEvent::Command {
            command,
            device,
            organization,
            status,
            at,
        } => {
            let data = CommandEvent {
                command: command.0,
                device: device.0,
                organization: organization.0,
                status: *status,
                at: at.to_string(),
            };
            Event::default()
                .event("command")
                .json_data(data)
                .unwrap_or_else(|_| Event::default().event("command"))
        }
        LiveEvent::Presence {
            device,
            organization,
            online,
            at,
        } => {
            let data = PresenceEvent {
                device: device.0,
                organization: organization.0,
                online: *online,
                at: at.to_string(),
            };
            Event::default()
                .event("presence")
                .json_data(data)
                .unwrap_or_else(|_| Event::default().event("presence"))
        }
    }
}

/// Streams the live events of the caller's organizations: `presence` events (data:
/// `PresenceEvent`), `command` events (data: `CommandEvent`), `batch` events (data:
/// `BatchEvent`: a batch upgrade's counts and status changed; only to callers who may view
/// batch upgrades and see the batch), and `lagged` when the client fell behind (what it shows
/// may be stale).
#[utoipa::path(get, path = "/api/v1/events/", tag = "events",
    responses((status = 200, content_type = "text/event-stream",
            description = "Server-sent events: `event: presence` with a PresenceEvent as data, `event: command` with a CommandEvent, `event: batch` with a BatchEvent (a batch upgrade's operations changed status: one event per batch per commit, counts as committed; to callers who may view batch upgrades and see the batch: of an organization they manage, or a shared build's batch to superusers); `event: lagged` when events were missed"),
        (status = 503, description = "Too many event streams open; retry after `Retry-After` seconds", body = ErrorDetail)),
    security(("bearer" = []), ("session" = [])))]
async fn events(
    State(state): State<AppState>,
    auth: Authorized<Devices, View>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watcher = Watcher {
        scope: auth.scope,
        batches: BatchUpgrades::permits(&auth.caller.user, Action::View),
    };
    let permit = state.event_stream()?;
    let live = state.store().blocking().live_events();
    let logins = state.store().blocking().login_changes();
    // One event waits at a time: the task reads on as the client reads.
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(1);
    tokio::spawn(relay(state, headers, watcher, live, logins, tx, permit));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Feeds one stream until its client goes, its caller loses the right, or the server stops;
/// holds the stream's permit until then.
async fn relay(
    state: AppState,
    headers: HeaderMap,
    mut watcher: Watcher,
    mut live: tokio::sync::broadcast::Receiver<LiveEvent>,
    mut logins: tokio::sync::broadcast::Receiver<LoginChange>,
    tx: tokio::sync::mpsc::Sender<Event>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stopping = state.stopping();
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            () = stopping.cancelled() => return,
            event = live.recv() => match event {
                Ok(event) if watcher.sees(&event) => sse(&event),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(RecvError::Closed) => return,
            },
            change = logins.recv() => {
                match change {
                    Err(RecvError::Closed) => return,
                    Ok(LoginChange::Device(_) | LoginChange::DevicesAdded) => continue,
                    // A user, membership, token or organization changed (or changes were
                    // missed): is the caller still who they were, with which organizations?
                    _ => match still_allowed(&state, &headers).await {
                        Some(now) => {
                            watcher = now;
                            continue;
                        }
                        None => return,
                    },
                }
            }
        };
        // A client that stops reading holds the send, not the server's stop.
        tokio::select! {
            sent = tx.send(event) => if sent.is_err() {
                return;
            },
            () = stopping.cancelled() => return,
        }
    }
}

/// What the caller may see now, or `None` once they may no longer watch.
async fn still_allowed(state: &AppState, headers: &HeaderMap) -> Option<Watcher> {
    let caller = authenticate(&Method::GET, headers, state).await.ok()?;
    Watcher::of(&caller)
}
