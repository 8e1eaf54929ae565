//! [`BrokerStateStore`] on the kv tables: the broker's rows in three tables (`broker_retained`,
//! `broker_sessions`, `broker_queued`), a batch of changes in one write transaction.

use crate::kv::ReadableTable;

use super::KvBackend;
use crate::tables::*;
use crate::{BrokerRowChange, BrokerRows, BrokerStateStore, Result};

impl BrokerStateStore for KvBackend {
    fn load_broker_state(&self) -> Result<BrokerRows> {
        let txn = self.db.begin_read()?;
        let mut rows = BrokerRows::default();
        for entry in txn.open_table(BROKER_RETAINED)?.iter()? {
            let (topic, record) = entry?;
            rows.retained
                .push((topic.value().to_owned(), record.value().to_vec()));
        }
        for entry in txn.open_table(BROKER_SESSIONS)?.iter()? {
            let (key, record) = entry?;
            rows.sessions
                .push((key.value().to_owned(), record.value().to_vec()));
        }
        for entry in txn.open_table(BROKER_QUEUED)?.iter()? {
            let (key, record) = entry?;
            let (session, seq) = key.value();
            rows.queued
                .push((session.to_owned(), seq, record.value().to_vec()));
        }
        Ok(rows)
    }

    fn apply_broker_state(&self, changes: Vec<BrokerRowChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut retained = txn.open_table(BROKER_RETAINED)?;
            let mut sessions = txn.open_table(BROKER_SESSIONS)?;
            let mut queued = txn.open_table(BROKER_QUEUED)?;
            for change in &changes {
                match change {
                    BrokerRowChange::Retained {
                        topic,
                        record: Some(record),
                    } => {
                        retained.insert(topic.as_str(), record.as_slice())?;
                    }
                    BrokerRowChange::Retained {
                        topic,
                        record: None,
                    } => {
                        retained.remove(topic.as_str())?;
                    }
                    BrokerRowChange::Session {
                        key,
                        record: Some(record),
                    } => {
                        sessions.insert(key.as_str(), record.as_slice())?;
                    }
                    BrokerRowChange::Session { key, record: None } => {
                        sessions.remove(key.as_str())?;
                        // Exactly this session's queue: the range is bounded by the whole
                        // key, so a session whose key extends this one keeps its rows.
                        let key = key.as_str();
                        queued.retain_in((key, 0u64)..=(key, u64::MAX), |_, _| false)?;
                    }
                    BrokerRowChange::Queued {
                        key,
                        seq,
                        record: Some(record),
                    } => {
                        queued.insert((key.as_str(), *seq), record.as_slice())?;
                    }
                    BrokerRowChange::Queued {
                        key,
                        seq,
                        record: None,
                    } => {
                        queued.remove((key.as_str(), *seq))?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}
