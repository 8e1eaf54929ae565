//! Revocation reaching live sessions: every login-relevant change the store commits (see
//! `fleetmq_store::revocation`) becomes a [`Mqtt::reauthorize`] of the sessions it may
//! concern, so a deactivated user, a removed membership, a deactivated organization or a
//! changed device key stops working on connections that are already open, not only on the
//! next login.

use fleetmq_broker::Affected;

use crate::mqtt::Mqtt;
use fleetmq_store::{LoginChange, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Follows the store's login changes until `shutdown`. Subscribes before returning, so no
/// change committed after this call is missed.
pub(crate) fn follow(
    store: &Store,
    broker: Mqtt,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut changes = store.blocking().login_changes();
    async move {
        loop {
            let change = tokio::select! {
                () = shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            let affected = match change {
                Ok(change) => match affected(change) {
                    Some(affected) => affected,
                    None => continue,
                },
                // Changes were missed: judge everyone.
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "login changes missed; judging every session");
                    Affected::Everyone
                }
                Err(RecvError::Closed) => return,
            };
            let ended = broker.reauthorize(affected.clone()).await;
            if ended > 0 {
                tracing::info!(?affected, ended, "live sessions revoked");
            }
        }
    }
}

/// The live sessions a change may concern; `None` when it concerns none.
fn affected(change: LoginChange) -> Option<Affected> {
    Some(match change {
        LoginChange::Device(device) => Affected::Device(device),
        LoginChange::Organization { slug } => Affected::Organization(slug),
        LoginChange::Users => Affected::Operators,
        LoginChange::DevicesAdded => return None,
    })
}
