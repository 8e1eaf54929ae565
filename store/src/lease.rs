//! Leases: which node does a piece of work that must run on one node at a time (the device
//! plane: consuming device uplink, the rollout engine, pushing configurations) when several
//! fleetmq nodes share one PostgreSQL database.
//!
//! A lease is a row: its holder, an epoch that grows each time the holder changes, and an
//! expiry. A node takes a lease that is free or expired, and renews its own before it
//! expires; a node that dies stops renewing and another takes the lease once it has expired.
//! Taking and renewing are transactions like any other, serialized by the store's writer
//! lock, so two nodes never both hold a lease: the one that reads it second sees the first's
//! row. The expiry is measured on each node's clock, so nodes' clocks must agree to well
//! within the lease's lifetime (NTP does); a holder stops its work once its last renewal is
//! more than half a lifetime old, before anyone else may take over.
//!
//! On redb there is one process per store, which takes every lease at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Result, Timestamp};

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// What the lease is for (e.g. `device-plane`).
    pub name: String,
    /// The node holding it (a random id chosen at each start).
    pub holder: String,
    /// Grows by one each time the lease changes hands: work done under an epoch that is no
    /// longer the lease's was done by a node that lost it.
    pub epoch: u64,
    /// Free for the taking from then on, unless renewed.
    pub expires: Timestamp,
    /// Where the holder's REST API can be reached by the other nodes, if it said so.
    pub address: Option<String>,
}

impl Lease {
    /// Whether `holder` holds it at `now`.
    pub fn held_by(&self, holder: &str, now: Timestamp) -> bool {
        self.holder == holder && now < self.expires
    }
}

/// A request to take or renew a lease.
#[derive(Debug, Clone)]
pub struct LeaseClaim {
    /// The lease's name.
    pub name: String,
    /// The claiming node.
    pub holder: String,
    /// How long the lease lasts from now unless renewed.
    pub lifetime: Duration,
    /// Where the claiming node's REST API can be reached.
    pub address: Option<String>,
}

/// Persistence of leases. Same rules as [`crate::Backend`]: every method is one transaction.
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease if it is free, expired or already the claimant's (then renewing it),
    /// and returns it; `None` while another node holds it.
    fn claim_lease(&self, claim: &LeaseClaim) -> Result<Option<Lease>>;
    /// The lease as stored, held or not.
    fn lease(&self, name: &str) -> Result<Option<Lease>>;
    /// Gives the lease up at once if `holder` still holds it (a clean shutdown), so another
    /// node need not wait for it to expire.
    fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}
