//! [`LocationStore`] on the kv tables: locations, floor plans and devices' placement.
//!
//! Locations and floor plans are few next to devices, so lists read their whole table and
//! sort; a device's link lives under the device (`device_locations`), so a location's devices
//! are found by walking the links.

use std::collections::HashMap;

use crate::kv::{ReadableTable, WriteTransaction};

use super::KvBackend;
use super::devices::load_device;
use super::record::{cat, decode, encode, get_record};
use crate::tables::*;
use crate::{
    Device, DeviceId, DeviceLocation, FloorPlan, FloorPlanId, FloorplanChoice, Location,
    LocationChoice, LocationFields, LocationFilter, LocationId, LocationStore, LocationType, OrgId,
    Page, PageRequest, Placed, Placement, PlanImage, PlanImageId, Result, Scope, StoreError,
    Timestamp, Unique,
};

fn put_location(txn: &WriteTransaction, location: &Location) -> Result<()> {
    txn.open_table(LOCATIONS)?
        .insert(location.id.key(), encode("locations", location)?.as_slice())?;
    Ok(())
}

fn load_location(txn: &WriteTransaction, id: LocationId) -> Result<Location> {
    get_record(&txn.open_table(LOCATIONS)?, "locations", id.key())?.ok_or(StoreError::NotFound)
}

fn load_floorplan(txn: &WriteTransaction, id: FloorPlanId) -> Result<FloorPlan> {
    get_record(&txn.open_table(FLOORPLANS)?, "floorplans", id.key())?.ok_or(StoreError::NotFound)
}

fn put_floorplan(txn: &WriteTransaction, plan: &FloorPlan) -> Result<()> {
    txn.open_table(FLOORPLANS)?
        .insert(plan.id.key(), encode("floorplans", plan)?.as_slice())?;
    Ok(())
}

fn plan_key(location: LocationId, plan: FloorPlanId) -> Vec<u8> {
    cat(&[&location.bytes(), &plan.bytes()])
}

/// A location's floor plans, newest first.
fn floorplans_in(
    locations: &impl ReadableTable<&'static [u8], ()>,
    plans: &impl ReadableTable<u128, &'static [u8]>,
    location: LocationId,
) -> Result<Vec<FloorPlan>> {
    let lo = cat(&[&location.bytes(), &[0u8; 16]]);
    let hi = cat(&[&location.bytes(), &[0xffu8; 16]]);
    let mut found = Vec::new();
    for entry in locations.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (key, _) = entry?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&key.value()[16..32]);
        if let Some(plan) = get_record::<FloorPlan>(plans, "floorplans", u128::from_be_bytes(id))? {
            found.push(plan);
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse((p.created, p.id)));
    Ok(found)
}

fn floorplans_of(txn: &WriteTransaction, location: LocationId) -> Result<Vec<FloorPlan>> {
    floorplans_in(
        &txn.open_table(LOCATION_FLOORPLANS)?,
        &txn.open_table(FLOORPLANS)?,
        location,
    )
}

/// Refuses a second floor plan for the same floor of a location.
fn check_floor_free(
    txn: &WriteTransaction,
    location: LocationId,
    floor: i32,
    except: Option<FloorPlanId>,
) -> Result<()> {
    let taken = floorplans_of(txn, location)?
        .iter()
        .any(|p| p.floor == floor && Some(p.id) != except);
    if taken {
        return Err(StoreError::Unique(Unique::FloorplanFloor));
    }
    Ok(())
}

/// Every device link, in one read of `device_locations`.
fn links_of(txn: &WriteTransaction) -> Result<Vec<DeviceLocation>> {
    let table = txn.open_table(DEVICE_LOCATIONS)?;
    let mut links = Vec::new();
    for entry in table.iter()? {
        let (_, bytes) = entry?;
        links.push(decode::<DeviceLocation>("device_locations", bytes.value())?);
    }
    Ok(links)
}

fn put_link(txn: &WriteTransaction, link: &DeviceLocation) -> Result<()> {
    txn.open_table(DEVICE_LOCATIONS)?.insert(
        link.device.key(),
        encode("device_locations", link)?.as_slice(),
    )?;
    Ok(())
}

/// Removes floor plans; devices on them stay at their location without a floor. Returns
/// their image files.
fn remove_floorplans_in(txn: &WriteTransaction, plans: &[FloorPlan]) -> Result<Vec<PlanImageId>> {
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    for mut link in links_of(txn)? {
        if link
            .floorplan
            .is_some_and(|f| plans.iter().any(|p| p.id == f))
        {
            link.floorplan = None;
            link.indoor = None;
            put_link(txn, &link)?;
        }
    }
    let mut table = txn.open_table(FLOORPLANS)?;
    let mut index = txn.open_table(LOCATION_FLOORPLANS)?;
    for plan in plans {
        table.remove(plan.id.key())?;
        index.remove(plan_key(plan.location, plan.id).as_slice())?;
    }
    Ok(plans.iter().map(|p| p.image.file).collect())
}

/// Removes a location, its floor plans and the links of devices placed there.
pub(super) fn delete_location_in(
    txn: &WriteTransaction,
    id: LocationId,
) -> Result<Vec<PlanImageId>> {
    let plans = floorplans_of(txn, id)?;
    let files = remove_floorplans_in(txn, &plans)?;
    let links = links_of(txn)?;
    {
        let mut table = txn.open_table(DEVICE_LOCATIONS)?;
        for link in links {
            if link.location == id {
                table.remove(link.device.key())?;
            }
        }
    }
    txn.open_table(LOCATIONS)?.remove(id.key())?;
    Ok(files)
}

/// Removes an organization's locations (its devices are removed separately); their image
/// files are left to the start-up sweep.
pub(super) fn delete_org_locations_in(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    let ids: Vec<LocationId> = {
        let table = txn.open_table(LOCATIONS)?;
        let mut ids = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            let location: Location = decode("locations", bytes.value())?;
            if location.organization == org {
                ids.push(location.id);
            }
        }
        ids
    };
    for id in ids {
        delete_location_in(txn, id)?;
    }
    Ok(())
}

/// Writes a location's new fields; floor plans follow its organization and go when it
/// becomes outdoor.
fn update_location_in(
    txn: &WriteTransaction,
    mut location: Location,
    fields: LocationFields,
) -> Result<(Location, Vec<PlanImageId>)> {
    let plans = floorplans_of(txn, location.id)?;
    let released = if fields.kind == LocationType::Outdoor {
        remove_floorplans_in(txn, &plans)?
    } else {
        for mut plan in plans {
            if plan.organization != fields.organization {
                plan.organization = fields.organization;
                put_floorplan(txn, &plan)?;
            }
        }
        Vec::new()
    };
    location.organization = fields.organization;
    location.name = fields.name;
    location.kind = fields.kind;
    location.is_mobile = fields.is_mobile;
    location.address = fields.address;
    location.geometry = fields.geometry;
    location.modified = Timestamp::now();
    put_location(txn, &location)?;
    Ok((location, released))
}

fn new_location(fields: LocationFields) -> Location {
    let now = Timestamp::now();
    Location {
        id: LocationId::new(),
        organization: fields.organization,
        name: fields.name,
        kind: fields.kind,
        is_mobile: fields.is_mobile,
        address: fields.address,
        geometry: fields.geometry,
        created: now,
        modified: now,
    }
}

fn create_floorplan_in(
    txn: &WriteTransaction,
    location: &Location,
    floor: i32,
    image: PlanImage,
) -> Result<FloorPlan> {
    check_floor_free(txn, location.id, floor, None)?;
    let now = Timestamp::now();
    let plan = FloorPlan {
        id: FloorPlanId::new(),
        location: location.id,
        organization: location.organization,
        floor,
        image,
        created: now,
        modified: now,
    };
    put_floorplan(txn, &plan)?;
    txn.open_table(LOCATION_FLOORPLANS)?
        .insert(plan_key(plan.location, plan.id).as_slice(), ())?;
    Ok(plan)
}

fn update_floorplan_in(
    txn: &WriteTransaction,
    mut plan: FloorPlan,
    location: &Location,
    floor: i32,
    image: Option<PlanImage>,
) -> Result<(FloorPlan, Vec<PlanImageId>)> {
    check_floor_free(txn, location.id, floor, Some(plan.id))?;
    if plan.location != location.id {
        let mut index = txn.open_table(LOCATION_FLOORPLANS)?;
        index.remove(plan_key(plan.location, plan.id).as_slice())?;
        index.insert(plan_key(location.id, plan.id).as_slice(), ())?;
    }
    let mut released = Vec::new();
    if let Some(image) = image {
        released.push(plan.image.file);
        plan.image = image;
    }
    plan.location = location.id;
    plan.organization = location.organization;
    plan.floor = floor;
    plan.modified = Timestamp::now();
    put_floorplan(txn, &plan)?;
    Ok((plan, released))
}

fn scoped(scope: &Scope, org: OrgId) -> bool {
    scope.contains(org)
}

impl LocationStore for KvBackend {
    fn create_location(&self, fields: LocationFields) -> Result<Location> {
        let txn = self.db.begin_write()?;
        let location = new_location(fields);
        put_location(&txn, &location)?;
        txn.commit()?;
        Ok(location)
    }

    fn update_location(
        &self,
        id: LocationId,
        fields: LocationFields,
    ) -> Result<(Location, Vec<PlanImageId>)> {
        let txn = self.db.begin_write()?;
        let location = load_location(&txn, id)?;
        let updated = update_location_in(&txn, location, fields)?;
        txn.commit()?;
        Ok(updated)
    }

    fn delete_location(&self, id: LocationId) -> Result<Vec<PlanImageId>> {
        let txn = self.db.begin_write()?;
        load_location(&txn, id)?;
        let files = delete_location_in(&txn, id)?;
        txn.commit()?;
        Ok(files)
    }

    fn list_locations(
        &self,
        scope: &Scope,
        filter: &LocationFilter,
        page: PageRequest,
    ) -> Result<Page<Location>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOCATIONS)?;
        let mut found = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            let location: Location = decode("locations", bytes.value())?;
            if scoped(scope, location.organization)
                && filter.kind.is_none_or(|k| k == location.kind)
                && filter.is_mobile.is_none_or(|m| m == location.is_mobile)
            {
                found.push(location);
            }
        }
        found.sort_by_key(|p| std::cmp::Reverse((p.created, p.id)));
        Ok(super::paging::paged(found, page))
    }

    fn location_floorplans(&self, id: LocationId) -> Result<Vec<FloorPlan>> {
        let txn = self.db.begin_read()?;
        floorplans_in(
            &txn.open_table(LOCATION_FLOORPLANS)?,
            &txn.open_table(FLOORPLANS)?,
            id,
        )
    }

    fn create_floorplan(
        &self,
        location: LocationId,
        floor: i32,
        image: PlanImage,
    ) -> Result<FloorPlan> {
        let txn = self.db.begin_write()?;
        let location = load_location(&txn, location)?;
        let plan = create_floorplan_in(&txn, &location, floor, image)?;
        txn.commit()?;
        Ok(plan)
    }

    fn floorplan(&self, id: FloorPlanId) -> Result<Option<FloorPlan>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(FLOORPLANS)?, "floorplans", id.key())
    }

    fn update_floorplan(
        &self,
        id: FloorPlanId,
        location: LocationId,
        floor: i32,
        image: Option<PlanImage>,
    ) -> Result<(FloorPlan, Vec<PlanImageId>)> {
        let txn = self.db.begin_write()?;
        let plan = load_floorplan(&txn, id)?;
        let location = load_location(&txn, location)?;
        let moved = plan.location != location.id;
        let updated = update_floorplan_in(&txn, plan, &location, floor, image)?;
        if moved {
            // Devices on it were placed at its old location: they keep that, without a floor.
            for mut link in links_of(&txn)? {
                if link.floorplan == Some(id) && link.location != location.id {
                    link.floorplan = None;
                    link.indoor = None;
                    put_link(&txn, &link)?;
                }
            }
        }
        txn.commit()?;
        Ok(updated)
    }

    fn delete_floorplan(&self, id: FloorPlanId) -> Result<Vec<PlanImageId>> {
        let txn = self.db.begin_write()?;
        let plan = load_floorplan(&txn, id)?;
        let files = remove_floorplans_in(&txn, &[plan])?;
        txn.commit()?;
        Ok(files)
    }

    fn list_floorplans(&self, scope: &Scope, page: PageRequest) -> Result<Page<FloorPlan>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FLOORPLANS)?;
        let mut found = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            let plan: FloorPlan = decode("floorplans", bytes.value())?;
            if scoped(scope, plan.organization) {
                found.push(plan);
            }
        }
        found.sort_by_key(|p| std::cmp::Reverse((p.created, p.id)));
        Ok(super::paging::paged(found, page))
    }

    fn floorplan_images(&self) -> Result<Vec<PlanImageId>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FLOORPLANS)?;
        let mut files = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            files.push(decode::<FloorPlan>("floorplans", bytes.value())?.image.file);
        }
        Ok(files)
    }

    fn device_placement(
        &self,
        device: DeviceId,
    ) -> Result<Option<(DeviceLocation, Location, Option<FloorPlan>)>> {
        let txn = self.db.begin_read()?;
        let Some(link) = txn
            .open_table(DEVICE_LOCATIONS)?
            .get(device.key())?
            .map(|v| v.value().to_vec())
        else {
            return Ok(None);
        };
        let link: DeviceLocation = decode("device_locations", &link)?;
        let Some(location) = get_record::<Location>(
            &txn.open_table(LOCATIONS)?,
            "locations",
            link.location.key(),
        )?
        else {
            return Ok(None);
        };
        let plan = match link.floorplan {
            Some(id) => get_record(&txn.open_table(FLOORPLANS)?, "floorplans", id.key())?,
            None => None,
        };
        Ok(Some((link, location, plan)))
    }

    fn place_device(&self, device: DeviceId, placement: Placement) -> Result<Placed> {
        let txn = self.db.begin_write()?;
        let device = load_device(&txn, device)?;
        let current: Option<DeviceLocation> = txn
            .open_table(DEVICE_LOCATIONS)?
            .get(device.id.key())?
            .map(|v| decode("device_locations", v.value()))
            .transpose()?;
        let mut released = Vec::new();
        let location = match (placement.location, &current) {
            (Some(LocationChoice::Existing(id)), _) => load_location(&txn, id)?,
            (Some(LocationChoice::Write(fields)), Some(link)) => {
                let existing = load_location(&txn, link.location)?;
                let (location, files) = update_location_in(&txn, existing, fields)?;
                released.extend(files);
                location
            }
            (Some(LocationChoice::Write(fields)), None) => {
                let location = new_location(fields);
                put_location(&txn, &location)?;
                location
            }
            (None, Some(link)) => load_location(&txn, link.location)?,
            (None, None) => return Err(StoreError::NotFound),
        };
        // A floor plan removed with an outdoor change is no longer the device's.
        let current_plan = current
            .as_ref()
            .and_then(|l| l.floorplan)
            .map(|id| get_record::<FloorPlan>(&txn.open_table(FLOORPLANS)?, "floorplans", id.key()))
            .transpose()?
            .flatten();
        let floorplan = match placement.floorplan {
            Some(FloorplanChoice::Clear) => None,
            Some(FloorplanChoice::Existing(id)) => Some(load_floorplan(&txn, id)?),
            Some(FloorplanChoice::Write { floor, image }) => match current_plan
                .filter(|p| p.location == location.id)
            {
                Some(plan) => {
                    let floor = floor.unwrap_or(plan.floor);
                    let (plan, files) = update_floorplan_in(&txn, plan, &location, floor, image)?;
                    released.extend(files);
                    Some(plan)
                }
                None => {
                    let (Some(floor), Some(image)) = (floor, image) else {
                        return Err(StoreError::NotFound);
                    };
                    Some(create_floorplan_in(&txn, &location, floor, image)?)
                }
            },
            None => current_plan.filter(|p| p.location == location.id),
        };
        let indoor = match placement.indoor {
            Some(indoor) => indoor,
            None => current.as_ref().and_then(|l| l.indoor.clone()),
        };
        let link = DeviceLocation {
            device: device.id,
            location: location.id,
            floorplan: floorplan.as_ref().map(|p| p.id),
            indoor,
        };
        put_link(&txn, &link)?;
        txn.commit()?;
        Ok(Placed {
            link,
            location,
            floorplan,
            created: current.is_none(),
            released,
        })
    }

    fn remove_device_location(&self, device: DeviceId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let removed = txn
            .open_table(DEVICE_LOCATIONS)?
            .take(device.key())?
            .is_some();
        if !removed {
            return Err(StoreError::NotFound);
        }
        txn.commit()?;
        Ok(())
    }

    fn devices_at(&self, id: LocationId, page: PageRequest) -> Result<(Page<Device>, bool)> {
        let txn = self.db.begin_read()?;
        let links = txn.open_table(DEVICE_LOCATIONS)?;
        let devices = txn.open_table(DEVICES)?;
        let mut found = Vec::new();
        let mut on_plan = false;
        for entry in links.iter()? {
            let (_, bytes) = entry?;
            let link: DeviceLocation = decode("device_locations", bytes.value())?;
            if link.location != id {
                continue;
            }
            if let Some(device) = get_record::<Device>(&devices, "devices", link.device.key())? {
                on_plan |= link.floorplan.is_some();
                found.push(device);
            }
        }
        found.sort_by_key(|p| std::cmp::Reverse((p.created, p.id)));
        Ok((super::paging::paged(found, page), on_plan))
    }

    fn located(&self, scope: &Scope) -> Result<Vec<(Location, u64)>> {
        let txn = self.db.begin_read()?;
        let mut counts: HashMap<LocationId, u64> = HashMap::new();
        for entry in txn.open_table(DEVICE_LOCATIONS)?.iter()? {
            let (_, bytes) = entry?;
            let link: DeviceLocation = decode("device_locations", bytes.value())?;
            *counts.entry(link.location).or_default() += 1;
        }
        let table = txn.open_table(LOCATIONS)?;
        let mut found = Vec::new();
        for (id, count) in counts {
            if let Some(location) = get_record::<Location>(&table, "locations", id.key())?
                && scoped(scope, location.organization)
            {
                found.push((location, count));
            }
        }
        found.sort_by_key(|(l, _)| std::cmp::Reverse((l.created, l.id)));
        Ok(found)
    }
}
