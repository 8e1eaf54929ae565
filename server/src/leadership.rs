//! Which node runs the device plane when several share one PostgreSQL database.
//!
//! The device plane — consuming device uplink, the rollout engine, sending commands, pushing
//! configurations, keeping Mosquitto's files — must run on one node at a time: two rollout
//! engines would drive the same operations, two uplink consumers would store every message
//! twice (or take each other's broker session in turns). So it runs under the store's
//! `device-plane` lease ([`fleetmq_store::lease`]): every node serves the REST API, and the node
//! holding the lease also runs the device plane. A node that dies stops renewing; once the lease
//! has expired another node takes it and starts the device plane from the store, which holds
//! every step in progress (the same recovery as a restart after kill -9).
//!
//! A holder that cannot renew (the database is unreachable, or another node took the lease
//! after a pause longer than its lifetime) stops the whole server at once, before half the
//! lifetime has passed since its last renewal: it must not act on devices while another node
//! may. Its supervisor restarts it as a standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleetmq_store::{Lease, LeaseClaim, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The lease the device plane runs under.
pub const DEVICE_PLANE: &str = "device-plane";

/// One node's claim on the device plane.
#[derive(Clone)]
pub struct Leadership {
    store: Store,
    claim: LeaseClaim,
    /// Whether some node held the lease when it was last looked at (for `/healthz` on a
    /// standby).
    held: Arc<AtomicBool>,
}

/// Why [`Leadership::hold`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// The server is shutting down: give the lease up with [`Leadership::release`] once the
    /// device plane has stopped.
    ShuttingDown,
    /// The lease could not be renewed in time: stop acting on devices now.
    Lost(String),
}

impl Leadership {
    /// A claim of `lifetime` by a node with a fresh random id, reachable at `address`.
    pub fn new(store: Store, lifetime: Duration, address: Option<String>) -> Self {
        Self {
            store,
            claim: LeaseClaim {
                name: DEVICE_PLANE.to_owned(),
                holder: uuid::Uuid::new_v4().to_string(),
                lifetime,
                address,
            },
            held: Arc::new(AtomicBool::new(false)),
        }
    }

    /// This node's id in the lease.
    pub fn node(&self) -> &str {
        &self.claim.holder
    }

    /// Whether some node held the lease when this one last looked.
    pub fn someone_holds(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Waits until this node holds the lease (a quarter of its lifetime between tries);
    /// `None` if `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<Lease> {
        let mut announced = false;
        loop {
            match self.try_claim().await {
                Ok(Some(lease)) => {
                    self.held.store(true, Ordering::Relaxed);
                    tracing::info!(node = %self.claim.holder, epoch = lease.epoch, "this node runs the device plane");
                    return Some(lease);
                }
                Ok(None) => {
                    let holder = self.current().await;
                    self.held
                        .store(holder.as_ref().is_some(), Ordering::Relaxed);
                    if !announced {
                        announced = true;
                        tracing::info!(
                            holder = ?holder.map(|l| l.holder),
                            "standby: another node runs the device plane; this one serves the REST API"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim the device-plane lease"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.claim.lifetime / 4) => {}
            }
        }
    }

    /// Renews the lease every sixth of its lifetime until `shutdown` or
    /// until it cannot be renewed within half its lifetime of the last renewal (two more
    /// tries in between, so one slow write does not stop the node).
    pub async fn hold(&self, lease: Lease, shutdown: &CancellationToken) -> Held {
        let lifetime = self.claim.lifetime;
        let epoch = lease.epoch;
        // Measured from before each claim began: the stored expiry is at least that late.
        let mut renewed = Instant::now();
        let mut next = renewed + lifetime / 6;
        loop {
            let give_up_at = renewed + lifetime / 2;
            tokio::select! {
                () = shutdown.cancelled() => return Held::ShuttingDown,
                () = tokio::time::sleep_until(next.min(give_up_at)) => {}
            }
            let started = Instant::now();
            if started >= give_up_at {
                return Held::Lost("not renewed within half its lifetime".to_owned());
            }
            match tokio::time::timeout_at(give_up_at, self.try_claim()).await {
                Ok(Ok(Some(lease))) if lease.epoch == epoch => {
                    renewed = started;
                    next = renewed + lifetime / 6;
                }
                Ok(Ok(Some(lease))) => {
                    return Held::Lost(format!(
                        "the lease expired and was taken again (epoch {epoch} → {})",
                        lease.epoch
                    ));
                }
                Ok(Ok(None)) => return Held::Lost("another node took the lease".to_owned()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot renew the device-plane lease; retrying");
                    next = Instant::now() + lifetime / 12;
                }
                Err(_) => return Held::Lost("the renewal did not finish in time".to_owned()),
            }
        }
    }

    /// Gives the lease up at once (a clean shutdown, once the device plane has stopped), so a
    /// standby need not wait for it to expire.
    pub async fn release(&self) {
        let (name, holder) = (self.claim.name.clone(), self.claim.holder.clone());
        if let Err(e) = self
            .store
            .run(move |db| db.release_lease(&name, &holder))
            .await
        {
            tracing::warn!(error = %e, "cannot give up the device-plane lease");
        }
    }

    async fn try_claim(&self) -> fleetmq_store::Result<Option<Lease>> {
        let claim = self.claim.clone();
        self.store.run(move |db| db.claim_lease(&claim)).await
    }

    /// The lease as stored, if it is held now.
    async fn current(&self) -> Option<Lease> {
        let name = self.claim.name.clone();
        let lease = self.store.run(move |db| db.lease(&name)).await.ok()??;
        (fleetmq_store::Timestamp::now() < lease.expires).then_some(lease)
    }
}
