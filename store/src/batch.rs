//! Mass upgrades of a build: which devices a batch reaches and with which image
//! ([`targets`], the dry run), and starting one ([`start_batch`]).
//!
//! OpenWISP's rules: a batch upgrades every device whose firmware is an image of another build
//! of the same category, to the build's image of the same type; with `upgrade_all` also the
//! devices without firmware whose model fits one of the build's images. Deactivated devices are
//! left out; `group` and `location` narrow the devices further. Each function reads what it
//! needs in a few whole-table reads rather than one round trip per device.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::rollout::Rollout;
use crate::upgrade::{
    Batch, DeviceFirmware, StartedUpgrades, StatusCounts, UpgradeOperation, UpgradePlan,
};
use crate::{
    Backend, BatchId, Build, BuildFilter, BuildId, Device, DeviceFilter, DeviceId, Image, ImageId,
    LocationId, OrgId, PageRequest, Scope, StoreError, Timestamp,
};

/// Why a mass upgrade cannot be planned or started.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// No device in reach belongs to the group: to the client it does not exist.
    #[error("no device in reach belongs to group {0}")]
    UnknownGroup(Uuid),
    /// Starting would upgrade no device.
    #[error("no device matches the mass upgrade's filters")]
    NothingMatches,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a mass upgrade of a build reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct MassUpgrade {
    /// The build installed.
    pub build: Build,
    /// Its category's organization (`None`: a shared build).
    pub organization: Option<OrgId>,
    /// The devices in reach.
    pub scope: Scope,
}

impl MassUpgrade {
    /// A build of an organization reaches that organization's devices only; a shared build
    /// reaches every organization the caller sees (`caller`).
    pub fn new(build: Build, organization: Option<OrgId>, caller: Scope) -> Self {
        let scope = match organization {
            Some(org) => Scope::Orgs(vec![org]),
            None => caller,
        };
        Self {
            build,
            organization,
            scope,
        }
    }
}

/// How a mass upgrade is narrowed (OpenWISP's `group` and `location`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Narrowing {
    /// Only devices of this group.
    pub group: Option<Uuid>,
    /// Only devices at this location (the caller may see it: checked at the edge).
    pub location: Option<LocationId>,
}

/// A device whose firmware is of another build of the category, and the image it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct FirmwareTarget {
    /// The device.
    pub device: Device,
    /// What it runs (or is being upgraded to) now.
    pub firmware: DeviceFirmware,
    /// The build's image of the same type.
    pub image: Image,
}

/// A device without firmware whose model fits an image of the build, and that image.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTarget {
    /// The device.
    pub device: Device,
    /// The first (by type) of the build's images that fits its model.
    pub image: Image,
}

/// What a mass upgrade would upgrade.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// Devices with firmware of the category: always upgraded.
    pub firmwares: Vec<FirmwareTarget>,
    /// Devices without firmware: upgraded only with `upgrade_all`.
    pub devices: Vec<DeviceTarget>,
}

impl Targets {
    /// The devices a batch upgrades, each with its image, in plan order.
    pub fn chosen(self, upgrade_all: bool) -> Vec<(Device, Image)> {
        let mut chosen: Vec<(Device, Image)> = self
            .firmwares
            .into_iter()
            .map(|t| (t.device, t.image))
            .collect();
        if upgrade_all {
            chosen.extend(self.devices.into_iter().map(|t| (t.device, t.image)));
        }
        chosen
    }
}

const ALL: PageRequest = PageRequest {
    offset: 0,
    limit: u64::MAX,
};

/// The dry run: which devices a mass upgrade of the build reaches, and with which image.
pub fn targets(
    db: &dyn Backend,
    upgrade: &MassUpgrade,
    narrowing: &Narrowing,
) -> Result<Targets, BatchError> {
    let build = &upgrade.build;
    let images = db.list_images(build.id, None, ALL)?.items;
    let by_kind: HashMap<&str, &Image> = images.iter().map(|i| (i.kind.as_str(), i)).collect();
    let types = db.image_types()?;
    // The build's images that fit each board, in a stable order.
    let mut kinds: Vec<&Image> = images.iter().collect();
    kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
    let image_for_model = |model: &str| -> Option<Image> {
        kinds
            .iter()
            .find(|i| types.iter().any(|t| t.name == i.kind && t.fits(model)))
            .map(|i| (*i).clone())
    };
    let siblings: HashSet<BuildId> = db
        .list_builds(
            &Scope::All,
            &BuildFilter {
                category: Some(build.fields.category),
                ..BuildFilter::default()
            },
            ALL,
        )?
        .items
        .into_iter()
        .map(|b| b.id)
        .filter(|id| *id != build.id)
        .collect();
    let mut devices = db
        .list_devices(&upgrade.scope, &DeviceFilter::default(), ALL)?
        .items;
    if let Some(group) = narrowing.group {
        if !devices.iter().any(|d| d.fields.group == Some(group)) {
            return Err(BatchError::UnknownGroup(group));
        }
        devices.retain(|d| d.fields.group == Some(group));
    }
    if let Some(location) = narrowing.location {
        let at: HashSet<DeviceId> = db.location_devices(location)?.into_iter().collect();
        devices.retain(|d| at.contains(&d.id));
    }
    let firmwares: HashMap<DeviceId, DeviceFirmware> = db
        .device_firmwares()?
        .into_iter()
        .map(|f| (f.device, f))
        .collect();
    let mut current_images: HashMap<ImageId, Option<Image>> = HashMap::new();
    let mut targets = Targets::default();
    for device in devices {
        if device.is_deactivated {
            continue;
        }
        match firmwares.get(&device.id) {
            Some(firmware) => {
                let current = match current_images.get(&firmware.image) {
                    Some(found) => found.clone(),
                    None => {
                        let found = db.image(firmware.image)?;
                        current_images.insert(firmware.image, found.clone());
                        found
                    }
                };
                let Some(current) = current else { continue };
                if !siblings.contains(&current.build) {
                    continue;
                }
                if let Some(image) = by_kind.get(current.kind.as_str()) {
                    targets.firmwares.push(FirmwareTarget {
                        device,
                        firmware: firmware.clone(),
                        image: (*image).clone(),
                    });
                }
            }
            None => {
                if let Some(image) = image_for_model(&device.fields.model) {
                    targets.devices.push(DeviceTarget { device, image });
                }
            }
        }
    }
    Ok(targets)
}

/// Starts a mass upgrade: one queued operation per targeted device, spread over the rollout's
/// waves in plan order, and their batch, stored together. Returns the new batch's id and what
/// was started, which the caller hands to the rollout engine.
pub fn start_batch(
    db: &dyn Backend,
    upgrade: &MassUpgrade,
    narrowing: &Narrowing,
    upgrade_all: bool,
    rollout: Rollout,
) -> Result<(BatchId, StartedUpgrades), BatchError> {
    let chosen = targets(db, upgrade, narrowing)?.chosen(upgrade_all);
    if chosen.is_empty() {
        return Err(BatchError::NothingMatches);
    }
    let now = Timestamp::now();
    let batch = Batch {
        id: BatchId::new(),
        build: upgrade.build.id,
        organization: upgrade.organization,
        rollout,
        counts: StatusCounts::default(),
        note: String::new(),
        created: now,
        modified: now,
    };
    let id = batch.id;
    let total = chosen.len();
    let operations: Vec<UpgradeOperation> = chosen
        .iter()
        .enumerate()
        .map(|(index, (device, image))| {
            UpgradeOperation::new(
                device,
                image,
                &upgrade.build,
                Some(batch.id),
                batch.rollout.wave_of(index, total),
            )
        })
        .collect();
    let started = db.start_upgrades(UpgradePlan {
        batch: Some(batch),
        operations,
    })?;
    Ok((id, started))
}
