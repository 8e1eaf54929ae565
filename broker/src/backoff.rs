//! Backoff for failed logins, per source address and per identity, so that a flood of
//! wrong-key CONNECTs is refused before the authenticator (a store lookup, a hash) runs.
//!
//! - **Address**: a bucket of `failures_per_address` failed logins, refilled at
//!   `failures_per_minute`. Empty, the address's CONNECTs are refused until it refills. A
//!   device that keeps failing now and then (a wrong key in the field) never empties it; a
//!   flood does at once.
//! - **Identity** (the username: a device's id, an operator's name): after
//!   `failures_per_identity` failures in a row, logins for it are refused for 1 s, doubling
//!   with each further failure up to `max_backoff`; a success clears it. Refused attempts do
//!   not count, so an attacker gets one guess per period, from any number of addresses.
//!
//! Both maps are bounded ([`MAX_TRACKED`] entries): when full, entries back to neutral are
//! dropped, then an arbitrary one. Pure on an injected clock; unit-tested below.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses (and identities) tracked at most.
const MAX_TRACKED: usize = 65_536;
/// First lockout of an identity; doubles per further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The backoff's settings (from [`Limits`](crate::Limits)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) failures_per_address: u32,
    pub(crate) failures_per_minute: u32,
    pub(crate) failures_per_identity: u32,
    pub(crate) max_backoff: Duration,
}

/// Why a login is refused before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttled {
    /// Its source address used up its failed logins.
    Address,
    /// Its identity is locked after failures in a row.
    Identity,
}

impl Throttled {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Throttled::Address => "too many failed logins from this address",
            Throttled::Identity => "too many failed logins for this identity",
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Failed logins still allowed, as of `at`.
    tokens: f64,
    at: Instant,
}

#[derive(Clone, Copy)]
struct Strikes {
    in_a_row: u32,
    blocked_until: Instant,
}

/// Failed-login state of the broker.
pub(crate) struct LoginBackoff {
    policy: Policy,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
    identities: Mutex<HashMap<String, Strikes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LoginBackoff {
    pub(crate) fn new(policy: Policy) -> LoginBackoff {
        LoginBackoff {
            policy,
            addresses: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let per_second = f64::from(self.policy.failures_per_minute) / 60.0;
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        (bucket.tokens + gained).min(f64::from(self.policy.failures_per_address))
    }

    /// Whether a login from `address` for `identity` may be authenticated now.
    pub(crate) fn check(
        &self,
        address: IpAddr,
        identity: &str,
        now: Instant,
    ) -> Result<(), Throttled> {
        let address = address.to_canonical();
        let bucket = lock(&self.addresses).get(&address).copied();
        if bucket.is_some_and(|b| self.refilled(b, now) < 1.0) {
            return Err(Throttled::Address);
        }
        let strikes = lock(&self.identities).get(identity).copied();
        if strikes.is_some_and(|s| now < s.blocked_until) {
            return Err(Throttled::Identity);
        }
        Ok(())
    }

    /// The authenticator refused a login from `address` for `identity`.
    pub(crate) fn failed(&self, address: IpAddr, identity: &str, now: Instant) {
        let address = address.to_canonical();
        {
            let mut addresses = lock(&self.addresses);
            let tokens = match addresses.get(&address) {
                Some(bucket) => self.refilled(*bucket, now),
                None => {
                    if addresses.len() >= MAX_TRACKED {
                        let full = f64::from(self.policy.failures_per_address);
                        addresses.retain(|_, b| self.refilled(*b, now) < full);
                        make_room(&mut addresses);
                    }
                    f64::from(self.policy.failures_per_address)
                }
            };
            let bucket = Bucket {
                tokens: (tokens - 1.0).max(0.0),
                at: now,
            };
            addresses.insert(address, bucket);
        }
        let mut identities = lock(&self.identities);
        if !identities.contains_key(identity) && identities.len() >= MAX_TRACKED {
            let forget = self.policy.max_backoff;
            identities.retain(|_, s| now < s.blocked_until + forget);
            make_room(&mut identities);
        }
        let strikes = identities.entry(identity.to_owned()).or_insert(Strikes {
            in_a_row: 0,
            blocked_until: now,
        });
        strikes.in_a_row = strikes.in_a_row.saturating_add(1);
        if let Some(over) = strikes
            .in_a_row
            .checked_sub(self.policy.failures_per_identity)
        {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1u32 << over.min(16))
                .min(self.policy.max_backoff);
            strikes.blocked_until = now + backoff;
        }
    }

    /// `identity` logged in: its failures in a row are forgotten (its address's are not: a
    /// flooder holding one valid key must not refill its bucket with it).
    pub(crate) fn succeeded(&self, identity: &str) {
        lock(&self.identities).remove(identity);
    }
}

/// Drops one arbitrary entry if the map is still at [`MAX_TRACKED`].
fn make_room<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    let key = (map.len() >= MAX_TRACKED)
        .then(|| map.keys().next().cloned())
        .flatten();
    if let Some(key) = key {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> LoginBackoff {
        LoginBackoff::new(Policy {
            failures_per_address: 3,
            failures_per_minute: 60,
            failures_per_identity: 2,
            max_backoff: Duration::from_secs(4),
        })
    }

    #[test]
    fn an_address_is_refused_once_its_failures_are_used_up_and_refills_with_time() {
        let b = backoff();
        let t0 = Instant::now();
        let flooder: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..3 {
            assert_eq!(b.check(flooder, &format!("u{i}"), t0), Ok(()));
            b.failed(flooder, &format!("u{i}"), t0);
        }
        assert_eq!(b.check(flooder, "other", t0), Err(Throttled::Address));
        assert_eq!(b.check("10.0.0.2".parse().unwrap(), "other", t0), Ok(()));
        // One failure per second comes back (60 per minute).
        assert_eq!(
            b.check(flooder, "other", t0 + Duration::from_millis(1000)),
            Ok(())
        );
    }

    #[test]
    fn an_identity_is_locked_after_failures_in_a_row_doubling_up_to_the_maximum() {
        let b = backoff();
        let t0 = Instant::now();
        let addr = |i: u8| IpAddr::from([10, 0, 1, i]);
        b.failed(addr(1), "dev", t0);
        assert_eq!(b.check(addr(9), "dev", t0), Ok(()));
        b.failed(addr(2), "dev", t0);
        // Second failure in a row: locked for 1 s, from any address.
        assert_eq!(b.check(addr(9), "dev", t0), Err(Throttled::Identity));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.check(addr(9), "dev", t1), Ok(()));
        b.failed(addr(3), "dev", t1);
        assert_eq!(
            b.check(addr(9), "dev", t1 + Duration::from_millis(1999)),
            Err(Throttled::Identity)
        );
        let t3 = t1 + Duration::from_secs(2);
        for i in 0..8 {
            b.failed(addr(10 + i), "dev", t3);
        }
        assert_eq!(
            b.check(addr(9), "dev", t3 + Duration::from_secs(4)),
            Ok(()),
            "capped at max_backoff"
        );
        b.succeeded("dev");
        assert_eq!(b.check(addr(9), "dev", t3), Ok(()));
    }
}
