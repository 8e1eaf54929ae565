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

use std::path::Path;

use crate::kv::{Database, PostgresOptions, ReadableTable};

use crate::tables::*;
use crate::{Backend, DeviceId, Result, StoreError, StoreOptions, TokenCache};
use paging::PageAnchors;

mod accounts;
mod broker_state;
mod config_settings;
mod configuration;
mod device_plane;
mod devices;
mod firmware;
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
pub struct KvBackend {
    db: Database,
    tokens: TokenCache,
    anchors: PageAnchors,
    logins: crate::memo::Memo<DeviceId, crate::DeviceLogin>,
    changes: crate::LoginChanges,
    config_changes: crate::ConfigChanges,
    /// Seals private keys (see [`crate::pki`]).
    vault: fleetmq_pki::KeyVault,
}

impl KvBackend {
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
        {
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
                // Older files need nothing rewritten: missing telemetry sizes are counted on
                // the device's next write, and tables new since (below) start empty. The new
                // version keeps older builds away.
                Some(_) | None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            txn.open_table(COUNTERS)?;
            txn.open_table(ORGANIZATIONS)?;
            txn.open_table(ORGANIZATION_SLUGS)?;
            txn.open_table(ORGANIZATIONS_BY_CREATED)?;
            txn.open_table(USERS)?;
            txn.open_table(USERNAMES)?;
            txn.open_table(USER_EMAILS)?;
            txn.open_table(USERS_BY_CREATED)?;
            txn.open_table(ORGANIZATION_MEMBERS)?;
            txn.open_table(TOKENS)?;
            txn.open_table(USER_TOKENS)?;
            txn.open_table(DEVICES)?;
            txn.open_table(DEVICES_BY_CREATED)?;
            txn.open_table(DEVICES_BY_ORG)?;
            txn.open_table(DEVICE_NAMES)?;
            txn.open_table(DEVICE_MACS)?;
            txn.open_table(DEVICE_KEYS)?;
            txn.open_table(DEVICE_LOCATIONS)?;
            txn.open_table(LOCATIONS)?;
            txn.open_table(FLOORPLANS)?;
            txn.open_table(LOCATION_FLOORPLANS)?;
            txn.open_table(CREDENTIALS)?;
            txn.open_table(CREDENTIALS_BY_ORG)?;
            txn.open_table(MQTT_CREDENTIALS)?;
            txn.open_table(CONNECTIONS)?;
            txn.open_table(DEVICE_CONNECTIONS)?;
            txn.open_table(CONNECTION_PAIRS)?;
            txn.open_table(CREDENTIALS_CONNECTIONS)?;
            txn.open_table(COMMANDS)?;
            txn.open_table(DEVICE_COMMANDS)?;
            txn.open_table(PENDING_COMMANDS)?;
            txn.open_table(TELEMETRY_LATEST)?;
            txn.open_table(TELEMETRY)?;
            txn.open_table(TELEMETRY_BYTES)?;
            txn.open_table(CATEGORIES)?;
            txn.open_table(CATEGORIES_BY_ORG)?;
            txn.open_table(CATEGORY_NAMES)?;
            txn.open_table(BUILDS)?;
            txn.open_table(BUILDS_BY_CATEGORY)?;
            txn.open_table(BUILD_VERSIONS)?;
            txn.open_table(IMAGES)?;
            txn.open_table(IMAGES_BY_BUILD)?;
            txn.open_table(UPGRADES)?;
            txn.open_table(UPGRADES_BY_CREATED)?;
            txn.open_table(DEVICE_UPGRADES)?;
            txn.open_table(BATCH_UPGRADES)?;
            txn.open_table(ACTIVE_UPGRADES)?;
            txn.open_table(BATCHES)?;
            txn.open_table(BATCHES_BY_CREATED)?;
            txn.open_table(DEVICE_FIRMWARE)?;
            txn.open_table(UPDATE_REPORTS)?;
            txn.open_table(IMAGE_TYPES)?;
            txn.open_table(SECRETS)?;
            txn.open_table(TEMPLATES)?;
            txn.open_table(TEMPLATES_BY_ORG)?;
            txn.open_table(TEMPLATE_NAMES)?;
            txn.open_table(TEMPLATE_DEVICES)?;
            txn.open_table(TEMPLATE_GROUPS)?;
            txn.open_table(GROUPS)?;
            txn.open_table(GROUPS_BY_ORG)?;
            txn.open_table(GROUP_NAMES)?;
            txn.open_table(GROUP_DEVICES)?;
            txn.open_table(CAS)?;
            txn.open_table(CAS_BY_ORG)?;
            txn.open_table(CAS_BY_SUBJECT)?;
            txn.open_table(CRLS)?;
            txn.open_table(REVOKED_SERIALS)?;
            txn.open_table(CERTS)?;
            txn.open_table(CERTS_BY_ORG)?;
            txn.open_table(CA_CERTS)?;
            txn.open_table(CERTS_BY_COMMON_NAME)?;
            txn.open_table(DEVICE_CERTS)?;
            txn.open_table(VPNS)?;
            txn.open_table(VPNS_BY_ORG)?;
            txn.open_table(VPN_NAMES)?;
            txn.open_table(VPN_CLIENTS)?;
            txn.open_table(VPN_PEERS)?;
            txn.open_table(VPN_ADDRESSES)?;
            txn.open_table(ORG_CONFIG_SETTINGS)?;
            txn.open_table(ORG_SHARED_SECRETS)?;
            txn.open_table(SOFTWARE)?;
            txn.open_table(SOFTWARE_VERSIONS)?;
            txn.open_table(APPLICATIONS)?;
            txn.open_table(APPLICATION_ORGS)?;
            txn.open_table(FILTERS)?;
            txn.open_table(FILTERS_BY_ORG)?;
            txn.open_table(DEVICE_SOFTWARE)?;
            txn.open_table(INSTALLATIONS)?;
            txn.open_table(DEVICE_INSTALLATIONS)?;
            txn.open_table(ACTIVE_INSTALLATIONS)?;
            txn.open_table(REFUSED_HOPS)?;
            txn.open_table(OAUTH_CLIENTS)?;
            txn.open_table(OAUTH_CLIENTS_BY_ORG)?;
            txn.open_table(OAUTH_TOKENS)?;
            txn.open_table(OAUTH_CLIENT_TOKENS)?;
            txn.open_table(BROKER_RETAINED)?;
            txn.open_table(BROKER_SESSIONS)?;
            txn.open_table(BROKER_QUEUED)?;
        }
        txn.commit()?;
        Ok(Self {
            db,
            tokens: TokenCache::default(),
            anchors: PageAnchors::default(),
            logins: crate::memo::Memo::new(100_000),
            changes: crate::LoginChanges::default(),
            config_changes: crate::ConfigChanges::default(),
            vault: fleetmq_pki::KeyVault::new(&secret),
        })
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

    fn cache_use(&self) -> crate::CacheUse {
        self.db.cache_use()
    }
}
