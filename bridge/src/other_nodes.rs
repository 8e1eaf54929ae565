//! What other nodes sharing the store's PostgreSQL database commit, for the device plane on
//! this node (it runs on one node; the others serve the REST API): upgrades and batches they
//! started or cancelled, commands they stored, application software they changed. Their
//! hooks ([`crate::Bridge::upgrades_started`] and the like) reach only their own node, so the
//! device plane learns of their writes from the store's notices ([`fleetmq_store::remote`]),
//! which arrive once the writes are committed.
//!
//! Caches and login or configuration changes are the store's own business (it re-announces
//! those); on redb no notice ever comes.

use fleetmq_store::RemoteChange;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::Bridge;

/// Tables whose remote writes may start or end upgrade operations.
const UPGRADE_TABLES: [&str; 3] = ["upgrades", "active_upgrades", "batches"];
/// Tables whose remote writes may add commands to send.
const COMMAND_TABLES: [&str; 2] = ["commands", "pending_commands"];
/// Tables whose remote writes may change which software installations devices should get.
const SOFTWARE_TABLES: [&str; 7] = [
    "software",
    "software_versions",
    "applications",
    "application_orgs",
    "filters",
    "device_software",
    "devices",
];

/// Follows other nodes' commits until `shutdown`.
pub(crate) async fn follow(
    bridge: Bridge,
    mut changes: broadcast::Receiver<RemoteChange>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Ok(change) => change,
                Err(RecvError::Lagged(_)) => RemoteChange::Everything,
                Err(RecvError::Closed) => return,
            },
        };
        apply(&bridge, &change).await;
    }
}

async fn apply(bridge: &Bridge, change: &RemoteChange) {
    let concerns = |tables: &[&str]| tables.iter().any(|t| change.concerns(t));
    let inner = &bridge.inner;
    if concerns(&UPGRADE_TABLES)
        && let Err(e) = inner.rollouts.resync(&inner.store).await
    {
        tracing::warn!(error = %e, "cannot pick up other nodes' upgrades");
    }
    if concerns(&COMMAND_TABLES) {
        match inner.commands.pick_up().await {
            Ok(()) => inner.command_added.notify_one(),
            Err(e) => tracing::warn!(error = %e, "cannot pick up other nodes' commands"),
        }
    }
    if concerns(&SOFTWARE_TABLES) {
        match inner.store.run(|db| db.software_organizations()).await {
            Ok(orgs) => {
                for org in orgs {
                    inner.triggers.organization(org);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot pick up other nodes' software changes"),
        }
    }
}
