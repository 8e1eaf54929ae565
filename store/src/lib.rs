//! fleetmq's domain and its persistence.
//!
//! The domain types are validated newtypes built at the edge (`DeviceName::parse`,
//! `MacAddress::parse`, ...), so code past the edge trusts them. [`Store`] is the handle the
//! rest of fleetmq holds: a cheap clone around a [`Backend`], whose calls it runs on the
//! blocking thread pool (redb is synchronous). Only this crate touches redb.
//!
//! # Layout
//! - [`id`] — typed UUIDv4 identifiers.
//! - [`timestamp`] — RFC 3339 UTC instants with microseconds.
//! - [`organization`] — tenants.
//! - [`user`] — users, memberships, passwords.
//! - [`permission`] — OpenWISP's Operator and Administrator groups.
//! - [`token`] — API tokens (only hashes are stored); [`oauth`] — OAuth 2.0 clients and
//!   their access tokens (OTAO).
//! - [`device`] — devices, their keys and configuration; list filters.
//! - [`template`] — configuration templates and the rules deciding a device's templates;
//!   [`group`] — device groups; [`configuration`] — the seam where a device's rendered
//!   configuration may have changed; [`config_settings`] — an organization's registration
//!   secret and configuration variables.
//! - [`download`] — signed, short-lived download links for devices.
//! - [`location`] — locations and where devices are.
//! - [`connection`] — credentials and device connections.
//! - [`command`] — commands sent to devices.
//! - [`telemetry`] — what devices report.
//! - [`firmware`] — firmware categories, builds and images; [`blob`] — their files (and floor
//!   plans' images);
//!   [`board`] — image types and the boards they fit.
//! - [`upgrade`] — device firmware, upgrade operations and batches; [`rollout`] — how a batch
//!   is rolled out (validated options); [`batch`] — which devices a mass upgrade targets.
//! - [`software`] — application software (OTAO): versions, their compatibility graph and
//!   rollout strategies, endpoint filters, what devices run, installations, and
//!   [`software::next_hop`], the rule deciding what a device is offered.
//! - [`broker_state`] — what the MQTT broker keeps across a restart (retained messages,
//!   persistent sessions and their queued messages), as opaque rows by key.
//! - [`page`] — paging, tenancy scope, uniqueness rules.
//! - [`memo`] — read caches kept correct by invalidation after commits.
//! - [`remote`] — what other nodes sharing a PostgreSQL database commit.
//! - [`backend`] — the storage boundary trait.
//! - [`kv_backend`] — the embedded implementation; [`tables`] — its tables.
//! - [`error`] — [`StoreError`].

pub mod backend;
pub mod batch;
pub mod blob;
pub mod board;
pub mod broker_state;
pub mod command;
pub mod config_settings;
pub mod configuration;
pub mod connection;
pub mod device;
pub mod download;
pub mod error;
pub mod firmware;
pub mod group;
pub mod id;
pub mod kv;
pub mod kv_backend;
pub mod lease;
pub mod live;
pub mod location;
pub mod memo;
pub mod migrate;
pub mod mqtt_login;
pub mod oauth;
pub mod organization;
pub mod page;
pub mod permission;
pub mod pki;
pub mod remote;
pub mod revocation;
pub mod rollout;
pub mod software;
pub mod tables;
pub mod telemetry;
pub mod template;
pub mod timestamp;
pub mod token;
pub mod upgrade;
pub mod user;
pub mod vpn;

use std::path::Path;
use std::sync::Arc;

pub use backend::{
    AccountStore, Backend, BrokerStateStore, CacheUse, ConfigSettingsStore, ConfigStore,
    DeviceLogin, DevicePlane, DeviceStore, FirmwareStore, LocationStore, MqttSession, NewCommand,
    OAuthStore, PkiStore, SoftwareStore, UpgradeStore, VpnStore,
};
pub use batch::{BatchError, DeviceTarget, FirmwareTarget, MassUpgrade, Narrowing, Targets};
pub use blob::{BlobError, BlobKey, BlobStore, BlobWriter, StoredBlob};
pub use board::{ImageType, default_image_types};
pub use broker_state::{BrokerRowChange, BrokerRows};
pub use command::{Command, CommandStatus, CommandType};
pub use config_settings::{ConfigSettings, SharedSecret};
pub use configuration::{
    ConfigChange, ConfigChanges, ConfigOutcome, Invalid as InvalidNetjson, RenderSources,
    RenderedConfig, check_template, device_variables, render_device, render_template,
};
pub use connection::{
    ConnectionFields, ConnectionHealth, Connector, Credentials, CredentialsFields, DeviceConnection,
};
pub use device::{
    ConfigBackend, ConfigFields, ConfigStatus, Device, DeviceBrief, DeviceConfig, DeviceFields,
    DeviceFilter, DeviceKey, DeviceName, DeviceOrder, DeviceSearch, MacAddress,
    PRESENCE_HISTORY_LEN, Presence, PresenceChange,
};
pub use download::{ConfigGrant, DOWNLOAD_SECRET, DownloadGrant, config_path};
pub use error::{Result, StoreError};
pub use firmware::{Build, BuildFields, BuildFilter, Category, CategoryFields, Image};
pub use group::{DeviceGroup, GroupFields, GroupFilter};
pub use id::{
    BatchId, BuildId, CategoryId, CommandId, ConnectionId, CredentialsId, DeviceId, FilterId,
    FloorPlanId, GroupId, ImageId, InstallationId, LocationId, OrgId, PlanImageId, SoftwareId,
    TemplateId, UpgradeId, UserId, VpnId,
};
pub use kv::PostgresOptions;
pub use kv_backend::KvBackend;
pub use lease::{Lease, LeaseClaim, LeaseStore};
pub use live::{LiveEvent, LiveEvents};
pub use location::{
    DeviceLocation, FloorPlan, FloorplanChoice, Geometry, IMAGE_HEAD, ImageFormat, Location,
    LocationChoice, LocationFields, LocationFilter, LocationType, Placed, Placement, PlanImage,
    Point, sniff_image,
};
pub use mqtt_login::{LoginRefused, MqttLogin};
pub use oauth::{AccessGrant, OAuthClient, OAuthScope};
pub use organization::{Organization, OrganizationFields, Slug};
pub use page::{Page, PageRequest, Scope, Unique};
pub use permission::{Action, Group, Resource};
pub use pki::{
    Ca, CaId, Cert, CertId, CertificateLogin, CertificateRefusal, Draft, Material, Origin, Relabel,
    X509Fields,
};
pub use remote::{RemoteChange, RemoteChanges};
pub use revocation::{LoginChange, LoginChanges};
pub use rollout::{AbortThreshold, FailureRate, Limit, Rollout, RolloutError, Waves};
/// Software versions are semantic versions.
pub use semver::Version as SemVer;
pub use software::{
    Application, DeviceSoftware, Endpoint, EndpointFilter, FilterActivation, FilterFields,
    FilterQuery, InstallStep, Installation, RefusedHop, RolloutStrategy, Software, SoftwareFields,
    SoftwareView, next_hop, valid_app_name,
};
pub use telemetry::{HistoryPage, HistoryPageRequest, TelemetryRange, TelemetrySample};
pub use template::{
    Template, TemplateFields, TemplateFilter, TemplateRules, TemplateType, settle_templates,
};
pub use timestamp::Timestamp;
pub use token::{Token, TokenCache, token_hash};
pub use upgrade::{
    Batch, BatchFilter, BatchStatus, CancelOutcome, DeviceFirmware, FLASHING_PROGRESS,
    StartedUpgrades, StatusCounts, UpdateReport, UpgradeFilter, UpgradeOperation, UpgradePlan,
    UpgradeStatus, UpgradeStep,
};
pub use user::{Membership, Password, PasswordHashString, User, UserFields, Username};
pub use vpn::{Vpn, VpnClient, VpnFields, VpnFilter};

/// Removes the firmware files no image record owns: unfinished uploads, files whose record
/// was never committed, and those of organizations deleted since (their categories, builds
/// and image records go too: nobody can reach them any more). Returns the files removed.
fn sweep_firmware(backend: &dyn Backend, blobs: &BlobStore) -> Result<usize> {
    let mut removed = 0;
    let mut orphaned_categories = Vec::new();
    removed += blobs.sweep(|id| {
        let Some(image) = backend.image(id)? else {
            return Ok(false);
        };
        let category = match backend.build(image.build)? {
            Some(build) => backend.category(build.fields.category)?,
            None => None,
        };
        let Some(category) = category else {
            return Ok(false);
        };
        match category.fields.organization {
            Some(org) if backend.organization(org)?.is_none() => {
                if !orphaned_categories.contains(&category.id) {
                    orphaned_categories.push(category.id);
                }
                Ok(true)
            }
            _ => Ok(true),
        }
    })?;
    for category in orphaned_categories {
        for image in backend.delete_category(category)? {
            blobs
                .remove_blocking(image)
                .map_err(|e| StoreError::Database(e.into()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// How the embedded store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes redb may keep of the data file in memory (read cache and write buffer). The
    /// server's memory grows to about this much as the data is read and written, then stays.
    pub cache_bytes: usize,
    /// The secret private keys are sealed with at rest. `None`: the secret kept in
    /// [`PKI_SECRET_FILE`] beside the data file, generated (mode 0600) on first start.
    pub pki_secret: Option<Vec<u8>>,
    /// Keep the tables in this PostgreSQL database instead of the redb file (several nodes
    /// may share it). Firmware files, floor plan images and, without `pki_secret`, the
    /// sealing secret stay in the data directory.
    pub postgres: Option<PostgresOptions>,
}

/// Where the server secret that seals private keys is kept inside the data directory when no
/// `--pki-secret` is given.
pub const PKI_SECRET_FILE: &str = "pki-secret";

impl Default for StoreOptions {
    /// 256 MiB: the hot pages of tens of thousands of devices (redb's own default is 1 GiB).
    fn default() -> Self {
        Self {
            cache_bytes: 256 * 1024 * 1024,
            pki_secret: None,
            postgres: None,
        }
    }
}

/// Removes the floor plan image files no floor plan refers to: unfinished uploads, files
/// whose record was never committed, replaced or deleted images whose removal was cut short.
fn sweep_floorplans(backend: &dyn Backend, files: &BlobStore) -> Result<usize> {
    let kept: std::collections::HashSet<PlanImageId> =
        backend.floorplan_images()?.into_iter().collect();
    files.sweep(|id: PlanImageId| Ok(kept.contains(&id)))
}

/// The handle api/ and bridge/ hold: clone it freely.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    blobs: BlobStore,
    floorplan_files: BlobStore,
}

impl Store {
    /// Opens the embedded redb store under `data_dir` (blocking; call before serving); with
    /// [`StoreOptions::postgres`], the tables are in that database instead.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, &StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(data_dir: &Path, options: &StoreOptions) -> Result<Self> {
        let backend = Arc::new(match &options.postgres {
            None => KvBackend::open_with(data_dir, options)?,
            Some(postgres) => KvBackend::connect(postgres, data_dir, options)?,
        });
        let blobs = BlobStore::open(&data_dir.join("firmware"))
            .map_err(|e| StoreError::Database(e.into()))?;
        let removed = sweep_firmware(backend.as_ref(), &blobs)?;
        if removed > 0 {
            tracing::info!(removed, "removed firmware files without a record");
        }
        let floorplan_files = BlobStore::open(&data_dir.join("floorplans"))
            .map_err(|e| StoreError::Database(e.into()))?;
        let removed = sweep_floorplans(backend.as_ref(), &floorplan_files)?;
        if removed > 0 {
            tracing::info!(removed, "removed floor plan images without a record");
        }
        Ok(Self::with_backend(backend, blobs, floorplan_files))
    }

    /// Wraps any backend, with firmware files kept in `blobs` and floor plan images in
    /// `floorplan_files`.
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        blobs: BlobStore,
        floorplan_files: BlobStore,
    ) -> Self {
        Self {
            backend,
            blobs,
            floorplan_files,
        }
    }

    /// Firmware files.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Floor plan images.
    pub fn floorplan_files(&self) -> &BlobStore {
        &self.floorplan_files
    }

    /// Runs one backend call on the blocking pool, so async workers never wait on disk.
    pub async fn run<T, F>(&self, call: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || call(backend.as_ref()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Direct access for code that already runs on a blocking thread (CLI, benchmarks, the
    /// bridge's writer thread), and for the backend's non-blocking methods
    /// ([`AccountStore::cached_user_for_token`]).
    pub fn blocking(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}
