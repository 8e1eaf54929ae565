//! [`Backend`] on [`crate::kv`] tables: an embedded redb file under the data directory, or a
//! PostgreSQL database several nodes share. One transaction per call, durable when the call
//! returns; the same code on both engines.
//!
//! This file holds the handle, opening (creating every table, refusing newer schemas) and the
//! health check; each part of [`Backend`] is implemented in its own module. Every table is
//! defined in [`crate::tables`].
//!
//! # Layout
//! - `record` — JSON records under their id, unique-index lookups, key concatenation.
//! - `paging` — `created ‖ id` index keys, newest-first walks and merges, page anchors.
//! - `accounts` — [`crate::AccountStore`]: organizations, users and memberships, tokens.
//! - `devices` — [`crate::DeviceStore`]: devices and their configuration, device counts,
//!   device logins.
//! - `device_plane` — [`crate::DevicePlane`]: locations, credentials and connections,
//!   commands, telemetry.
//! - `locations` — [`crate::LocationStore`]: locations, floor plans, devices' placement.
//! - `firmware` — [`crate::FirmwareStore`]: categories, builds, images.
//! - `configuration` — [`crate::ConfigStore`]: templates, device groups, the template rules
//!   applied to devices, and `configuration_changed`, the seam for re-rendering.
//! - `config_settings` — organizations' configuration settings (registration secret,
//!   variables) and `org_context`, what the renderer reads of them.
//! - `upgrade` — [`crate::UpgradeStore`]: device firmware, upgrade operations, batches,
//!   reports, image types, secrets.
//! - `software` — [`crate::SoftwareStore`]: application software (OTAO): versions,
//!   applications, endpoint filters, devices' software, installations.
//! - `oauth` — [`crate::OAuthStore`]: OAuth clients and their access tokens.
//! - `broker_state` — [`crate::BrokerStateStore`]: the MQTT broker's retained messages,
//!   persistent sessions and their queued messages.
//! - `cluster` — other nodes' commits (on a shared PostgreSQL database): the caches they
//!   empty and the changes they announce here.

use std::path::Path;
use std::sync::Arc;

use crate::kv::{Database, PostgresOptions, ReadableTable};

use crate::tables::*;
use crate::{Backend, DeviceId, Result, StoreError, StoreOptions, TokenCache};
use paging::PageAnchors;

mod accounts;
mod broker_state;
mod cluster;
mod config_settings;
mod configuration;
mod device_plane;
mod devices;
mod firmware;
mod lease;
mod locations;
mod oauth;
mod paging;
mod pki;
mod record;
mod software;
mod upgrade;
mod vpn;

/// The file name inside the data directory.
pub const DATA_FILE: &str = "fleetmq.redb";

/// fleetmq's domain on kv tables.
///
/// The caches are shared with the thread that empties them when another node's commit
/// concerns them (see `cluster`).
pub struct KvBackend {
    db: Database,
    tokens: Arc<TokenCache>,
    anchors: Arc<PageAnchors>,
    logins: Arc<crate::memo::Memo<DeviceId, crate::DeviceLogin>>,
    changes: crate::LoginChanges,
    config_changes: crate::ConfigChanges,
    live: crate::LiveEvents,
    /// Other nodes' commits, by table, for the rest of this node.
    remote: crate::RemoteChanges,
    /// Seals private keys (see [`crate::pki`]).
    vault: fleetmq_pki::KeyVault,
}

impl KvBackend {
    /// Announces live events here once the transaction that carried them (see
    /// `cluster::carry_live`) committed.
    fn announce_live(&self, events: Vec<crate::LiveEvent>) {
        for event in events {
            self.live.announce(event);
        }
    }

    /// Opens (creating when missing) the data file under `dir`, and refuses files written by a
    /// newer schema. Fails with [`StoreError::InUse`] when another process holds the file.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &StoreOptions::default())
    }

    /// [`KvBackend::open`] with explicit options.
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.into()))?;
        let db = redb::Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(dir.join(DATA_FILE))?;
        Self::init(Database::redb(db), dir, options)
    }

    /// Connects to the PostgreSQL database `postgres` names, creating the tables it lacks, and
    /// refuses a database written by a newer schema. The sealing secret is
    /// `options.pki_secret`, else the file in `dir` (every node must use the same one).
    pub fn connect(postgres: &PostgresOptions, dir: &Path, options: &StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.into()))?;
        Self::init(Database::postgres(postgres)?, dir, options)
    }

    fn init(db: Database, dir: &Path, options: &StoreOptions) -> Result<Self> {
        let secret = match &options.pki_secret {
            Some(secret) => secret.clone(),
            None => fleetmq_pki::load_or_create_secret(&dir.join(crate::PKI_SECRET_FILE)).map_err(
                |e| StoreError::Sealed {
                    table: crate::PKI_SECRET_FILE,
                    reason: e.to_string(),
                },
            )?,
        };
        let txn = db.begin_write()?;
        let found = {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(found) if found == SCHEMA_VERSION => {}
                // Older files need little rewritten: missing telemetry sizes are counted on
                // the device's next write, tables new since (below) start empty, and devices'
                // briefs (9) are written from the devices. The new version keeps older builds
                // away.
                Some(_) | None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            found
        };
        every_table(&mut Create(&txn))?;
        if found.is_some_and(|found| found < 9) {
            devices::fill_briefs(&txn)?;
        }
        txn.commit()?;
        let backend = Self {
            db,
            tokens: Arc::default(),
            anchors: Arc::default(),
            logins: Arc::new(crate::memo::Memo::new(100_000)),
            changes: crate::LoginChanges::default(),
            config_changes: crate::ConfigChanges::default(),
            live: crate::LiveEvents::default(),
            remote: crate::RemoteChanges::default(),
            vault: fleetmq_pki::KeyVault::new(&secret),
        };
        if let Some(commits) = backend.db.remote_commits() {
            cluster::Follower {
                db: backend.db.downgrade(),
                tokens: Arc::clone(&backend.tokens),
                anchors: Arc::clone(&backend.anchors),
                logins: Arc::clone(&backend.logins),
                changes: backend.changes.clone(),
                config_changes: backend.config_changes.clone(),
                live: backend.live.clone(),
                remote: backend.remote.clone(),
            }
            .spawn(commits)?;
        }
        Ok(backend)
    }

    /// This node's id in the notices its commits send to the other nodes sharing its
    /// PostgreSQL database; its listener connection is `fleetmq-listener-<id>` in
    /// `pg_stat_activity`. `None` on redb.
    pub fn node(&self) -> Option<&str> {
        self.db.node()
    }
}

/// Creates every table that does not exist yet (a new store, or one from an older schema).
struct Create<'t>(&'t crate::kv::WriteTransaction);

impl EveryTable for Create<'_> {
    fn table<K: crate::kv::Key, V: crate::kv::Value + 'static>(
        &mut self,
        definition: crate::kv::TableDefinition<K, V>,
    ) -> Result<()> {
        self.0.open_table(definition)?;
        Ok(())
    }
}

impl Backend for KvBackend {
    fn check(&self) -> Result<()> {
        let txn = self.db.begin_read()?;
        txn.open_table(META)?.get("schema_version")?;
        Ok(())
    }

    fn login_changes(&self) -> tokio::sync::broadcast::Receiver<crate::LoginChange> {
        self.changes.subscribe()
    }

    fn config_changes(&self) -> tokio::sync::broadcast::Receiver<crate::ConfigChange> {
        self.config_changes.subscribe()
    }

    fn live_events(&self) -> tokio::sync::broadcast::Receiver<crate::LiveEvent> {
        self.live.subscribe()
    }

    fn remote_changes(&self) -> tokio::sync::broadcast::Receiver<crate::RemoteChange> {
        self.remote.subscribe()
    }

    fn cache_use(&self) -> crate::CacheUse {
        self.db.cache_use()
    }
}
