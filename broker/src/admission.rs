//! Sockets that have not logged in yet: their own budget, apart from the session limit.
//!
//! Every accepted socket takes a pending permit until its CONNECT is answered (TLS or
//! WebSocket handshake, CONNECT, authentication). The budget is bounded in all and per source
//! address, so one host holding thousands of silent sockets fills only its own share: other
//! hosts' devices still get in, and an authenticated session never competes with a socket
//! that has not said who it is (`max_connections` counts sessions only). A socket over
//! budget is closed at once, before anything is read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a socket was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every pending slot is taken.
    Total,
    /// Its source address holds its whole share.
    Address,
}

impl Full {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Full::Total => "pending budget full",
            Full::Address => "pending sockets per address",
        }
    }
}

/// The pre-CONNECT budget shared by every listener.
pub(crate) struct PendingBudget {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    total: usize,
    /// At most `max_total` entries: an address is here only while it holds a permit.
    by_address: HashMap<IpAddr, usize>,
}

/// Held from accept until the CONNECT is answered; dropping it frees the slot.
pub(crate) struct PendingPermit {
    budget: Arc<PendingBudget>,
    address: IpAddr,
}

impl PendingBudget {
    /// A budget of `max_total` sockets, `max_per_address` of them from one address.
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> PendingBudget {
        PendingBudget {
            max_total,
            max_per_address,
            state: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a socket from `address` (IPv4-mapped IPv6 counts as IPv4).
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<PendingPermit, Full> {
        let address = address.to_canonical();
        let mut pending = self.lock();
        if pending.total >= self.max_total {
            return Err(Full::Total);
        }
        let held = pending.by_address.entry(address).or_insert(0);
        if *held >= self.max_per_address {
            return Err(Full::Address);
        }
        *held += 1;
        pending.total += 1;
        Ok(PendingPermit {
            budget: Arc::clone(self),
            address,
        })
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        let mut pending = self.budget.lock();
        pending.total = pending.total.saturating_sub(1);
        if let Some(held) = pending.by_address.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                pending.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_fills_only_its_share_and_slots_come_back() {
        let budget = Arc::new(PendingBudget::new(3, 2));
        let flooder: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = budget.admit(flooder).unwrap();
        let _second = budget.admit(flooder).unwrap();
        assert_eq!(budget.admit(flooder).err(), Some(Full::Address));
        let _third = budget.admit(other).unwrap();
        assert_eq!(budget.admit(other).err(), Some(Full::Total));
        drop(first);
        assert!(budget.admit("::ffff:10.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(budget.lock().by_address.len(), 2);
    }
}
