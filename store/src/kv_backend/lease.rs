//! [`crate::LeaseStore`]: one JSON row per lease in [`LEASES`].

use super::KvBackend;
use super::record::{decode, encode};
use crate::kv::ReadableTable;
use crate::lease::{Lease, LeaseClaim, LeaseStore};
use crate::tables::LEASES;
use crate::{Result, Timestamp};

fn expiry(now: Timestamp, lifetime: std::time::Duration) -> Timestamp {
    let micros = i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_micros(now.as_micros().saturating_add(micros))
}

impl LeaseStore for KvBackend {
    fn claim_lease(&self, claim: &LeaseClaim) -> Result<Option<Lease>> {
        let now = Timestamp::now();
        let txn = self.db.begin_write()?;
        let lease = {
            let mut table = txn.open_table(LEASES)?;
            let current: Option<Lease> = match table.get(claim.name.as_str())? {
                Some(bytes) => Some(decode("leases", bytes.value())?),
                None => None,
            };
            let epoch = match &current {
                Some(held) if held.holder == claim.holder => held.epoch,
                Some(held) if now < held.expires => return Ok(None),
                Some(held) => held.epoch + 1,
                None => 1,
            };
            let lease = Lease {
                name: claim.name.clone(),
                holder: claim.holder.clone(),
                epoch,
                expires: expiry(now, claim.lifetime),
                address: claim.address.clone(),
            };
            table.insert(claim.name.as_str(), encode("leases", &lease)?.as_slice())?;
            lease
        };
        txn.commit()?;
        Ok(Some(lease))
    }

    fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASES)?;
        match table.get(name)? {
            Some(bytes) => decode("leases", bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(LEASES)?;
            let current: Option<Lease> = match table.get(name)? {
                Some(bytes) => Some(decode("leases", bytes.value())?),
                None => None,
            };
            if let Some(mut lease) = current
                && lease.holder == holder
            {
                lease.expires = Timestamp::now();
                table.insert(name, encode("leases", &lease)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}
