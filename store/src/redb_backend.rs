//! [`Backend`] on an embedded redb file: one file under the data directory, one transaction per
//! call, durable when the call returns.

use std::collections::BTreeSet;
use std::path::Path;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, WriteTransaction,
};

use crate::tables::*;
use crate::{
    AccountStore, Backend, ConfigFields, ConfigStatus, Device, DeviceConfig, DeviceFields,
    DeviceFilter, DeviceId, DeviceStore, OrgId, Organization, OrganizationFields, Page,
    PageRequest, Password, Result, Scope, StoreError, Timestamp, Token, TokenCache, Unique, User,
    UserFields, UserId, token_hash,
};
use paging::{
    ANCHOR_STRIDE, MergeDesc, PageAnchors, created_key, id_of, index_desc, slice, successor,
    uuid_of,
};
use record::{cat, decode, encode, get_record, lookup_by};

mod device_plane;
mod firmware;
mod paging;
mod record;
mod upgrade;

/// The file name inside the data directory.
pub const DATA_FILE: &str = "fleetmq.redb";

/// fleetmq's domain on redb.
pub struct RedbBackend {
    db: Database,
    tokens: TokenCache,
    anchors: PageAnchors,
    logins: crate::memo::Memo<DeviceId, crate::DeviceLogin>,
}

impl RedbBackend {
    /// Opens (creating when missing) the data file under `dir`, and refuses files written by a
    /// newer schema. Fails with [`StoreError::InUse`] when another process holds the file.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.into()))?;
        let db = Database::create(dir.join(DATA_FILE))?;
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
                Some(_) => {}
                None => {
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
        }
        txn.commit()?;
        Ok(Self {
            db,
            tokens: TokenCache::default(),
            anchors: PageAnchors::default(),
            logins: crate::memo::Memo::new(100_000),
        })
    }
}

fn counter_key(org: Option<OrgId>) -> Vec<u8> {
    match org {
        None => b"devices".to_vec(),
        Some(org) => cat(&[b"devices/", &org.bytes()]),
    }
}

fn bump(counters: &mut Table<&[u8], u64>, key: &[u8], delta: i64) -> Result<()> {
    let current = counters.get(key)?.map(|v| v.value()).unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    counters.insert(key, next)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Index maintenance inside a write transaction.

fn insert_user_indexes(txn: &WriteTransaction, user: &User) -> Result<()> {
    let mut names = txn.open_table(USERNAMES)?;
    if names.get(user.fields.username.as_str())?.is_some() {
        return Err(StoreError::Unique(Unique::Username));
    }
    names.insert(user.fields.username.as_str(), user.id.key())?;
    let email = user.fields.email.to_lowercase();
    if !email.is_empty() {
        let mut emails = txn.open_table(USER_EMAILS)?;
        if emails.get(email.as_str())?.is_some() {
            return Err(StoreError::Unique(Unique::UserEmail));
        }
        emails.insert(email.as_str(), user.id.key())?;
    }
    let orgs = txn.open_table(ORGANIZATIONS)?;
    let mut members = txn.open_table(ORGANIZATION_MEMBERS)?;
    for m in &user.fields.memberships {
        if orgs.get(m.organization.key())?.is_none() {
            return Err(StoreError::NotFound);
        }
        members.insert(
            cat(&[&m.organization.bytes(), &user.id.bytes()]).as_slice(),
            (),
        )?;
    }
    txn.open_table(USERS)?
        .insert(user.id.key(), encode("users", user)?.as_slice())?;
    txn.open_table(USERS_BY_CREATED)?.insert(
        created_key(user.date_joined, user.id.bytes()).as_slice(),
        (),
    )?;
    Ok(())
}

fn remove_user_indexes(txn: &WriteTransaction, user: &User) -> Result<()> {
    txn.open_table(USERNAMES)?
        .remove(user.fields.username.as_str())?;
    let email = user.fields.email.to_lowercase();
    if !email.is_empty() {
        txn.open_table(USER_EMAILS)?.remove(email.as_str())?;
    }
    let mut members = txn.open_table(ORGANIZATION_MEMBERS)?;
    for m in &user.fields.memberships {
        members.remove(cat(&[&m.organization.bytes(), &user.id.bytes()]).as_slice())?;
    }
    txn.open_table(USERS)?.remove(user.id.key())?;
    txn.open_table(USERS_BY_CREATED)?
        .remove(created_key(user.date_joined, user.id.bytes()).as_slice())?;
    Ok(())
}

fn insert_device_indexes(txn: &WriteTransaction, device: &Device) -> Result<()> {
    let org = device.fields.organization;
    if txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none() {
        return Err(StoreError::NotFound);
    }
    let name_key = cat(&[&org.bytes(), device.fields.name.unique_form().as_bytes()]);
    let mut names = txn.open_table(DEVICE_NAMES)?;
    if names.get(name_key.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::DeviceName));
    }
    let mac_key = cat(&[&org.bytes(), device.fields.mac_address.as_str().as_bytes()]);
    let mut macs = txn.open_table(DEVICE_MACS)?;
    if macs.get(mac_key.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::DeviceMac));
    }
    let mut keys = txn.open_table(DEVICE_KEYS)?;
    if keys.get(device.fields.key.as_str())?.is_some() {
        return Err(StoreError::Unique(Unique::DeviceKey));
    }
    let id = device.id.key();
    names.insert(name_key.as_slice(), id)?;
    macs.insert(mac_key.as_slice(), id)?;
    keys.insert(device.fields.key.as_str(), id)?;
    let created = created_key(device.created, device.id.bytes());
    txn.open_table(DEVICES)?
        .insert(id, encode("devices", device)?.as_slice())?;
    txn.open_table(DEVICES_BY_CREATED)?
        .insert(created.as_slice(), ())?;
    txn.open_table(DEVICES_BY_ORG)?
        .insert(cat(&[&org.bytes(), &created]).as_slice(), ())?;
    let mut counters = txn.open_table(COUNTERS)?;
    bump(&mut counters, &counter_key(None), 1)?;
    bump(&mut counters, &counter_key(Some(org)), 1)?;
    Ok(())
}

fn remove_device_indexes(txn: &WriteTransaction, device: &Device) -> Result<()> {
    let org = device.fields.organization;
    let name_key = cat(&[&org.bytes(), device.fields.name.unique_form().as_bytes()]);
    txn.open_table(DEVICE_NAMES)?.remove(name_key.as_slice())?;
    let mac_key = cat(&[&org.bytes(), device.fields.mac_address.as_str().as_bytes()]);
    txn.open_table(DEVICE_MACS)?.remove(mac_key.as_slice())?;
    txn.open_table(DEVICE_KEYS)?
        .remove(device.fields.key.as_str())?;
    let created = created_key(device.created, device.id.bytes());
    txn.open_table(DEVICES)?.remove(device.id.key())?;
    txn.open_table(DEVICES_BY_CREATED)?
        .remove(created.as_slice())?;
    txn.open_table(DEVICES_BY_ORG)?
        .remove(cat(&[&org.bytes(), &created]).as_slice())?;
    let mut counters = txn.open_table(COUNTERS)?;
    bump(&mut counters, &counter_key(None), -1)?;
    bump(&mut counters, &counter_key(Some(org)), -1)?;
    Ok(())
}

fn load_device(txn: &WriteTransaction, id: DeviceId) -> Result<Device> {
    let table = txn.open_table(DEVICES)?;
    get_record(&table, "devices", id.key())?.ok_or(StoreError::NotFound)
}

fn load_user(txn: &WriteTransaction, id: UserId) -> Result<User> {
    let table = txn.open_table(USERS)?;
    get_record(&table, "users", id.key())?.ok_or(StoreError::NotFound)
}

fn delete_device_in(txn: &WriteTransaction, device: &Device) -> Result<()> {
    remove_device_indexes(txn, device)?;
    upgrade::delete_device_upgrades_in(txn, device.id)?;
    device_plane::delete_device_plane_in(txn, device)
}

fn new_device(fields: DeviceFields, config: Option<ConfigFields>) -> Device {
    let now = Timestamp::now();
    Device {
        id: DeviceId::new(),
        fields,
        config: config
            .filter(|c| !c.is_default())
            .map(|fields| DeviceConfig {
                fields,
                status: ConfigStatus::Modified,
                error_reason: String::new(),
            }),
        is_deactivated: false,
        created: now,
        modified: now,
    }
}

impl Backend for RedbBackend {
    fn check(&self) -> Result<()> {
        let txn = self.db.begin_read()?;
        txn.open_table(META)?.get("schema_version")?;
        Ok(())
    }
}

impl AccountStore for RedbBackend {
    fn create_organization(&self, fields: OrganizationFields) -> Result<Organization> {
        let now = Timestamp::now();
        let org = Organization {
            id: OrgId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        {
            let mut slugs = txn.open_table(ORGANIZATION_SLUGS)?;
            if slugs.get(org.fields.slug.as_str())?.is_some() {
                return Err(StoreError::Unique(Unique::OrganizationSlug));
            }
            slugs.insert(org.fields.slug.as_str(), org.id.key())?;
            txn.open_table(ORGANIZATIONS)?
                .insert(org.id.key(), encode("organizations", &org)?.as_slice())?;
            txn.open_table(ORGANIZATIONS_BY_CREATED)?
                .insert(created_key(now, org.id.bytes()).as_slice(), ())?;
        }
        txn.commit()?;
        Ok(org)
    }

    fn organization(&self, id: OrgId) -> Result<Option<Organization>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(ORGANIZATIONS)?, "organizations", id.key())
    }

    fn organization_by_slug(&self, slug: &str) -> Result<Option<Organization>> {
        lookup_by(
            &self.db,
            ORGANIZATION_SLUGS,
            ORGANIZATIONS,
            "organizations",
            slug,
        )?
        .map(|b| decode("organizations", &b))
        .transpose()
    }

    fn update_organization(&self, id: OrgId, fields: OrganizationFields) -> Result<Organization> {
        let txn = self.db.begin_write()?;
        let org = {
            let mut orgs = txn.open_table(ORGANIZATIONS)?;
            let mut org: Organization =
                get_record(&orgs, "organizations", id.key())?.ok_or(StoreError::NotFound)?;
            let mut slugs = txn.open_table(ORGANIZATION_SLUGS)?;
            if fields.slug != org.fields.slug {
                if slugs.get(fields.slug.as_str())?.is_some() {
                    return Err(StoreError::Unique(Unique::OrganizationSlug));
                }
                slugs.remove(org.fields.slug.as_str())?;
                slugs.insert(fields.slug.as_str(), id.key())?;
            }
            org.fields = fields;
            org.modified = Timestamp::now();
            orgs.insert(id.key(), encode("organizations", &org)?.as_slice())?;
            org
        };
        txn.commit()?;
        self.logins.clear();
        Ok(org)
    }

    fn delete_organization(&self, id: OrgId) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let org: Organization =
                get_record(&txn.open_table(ORGANIZATIONS)?, "organizations", id.key())?
                    .ok_or(StoreError::NotFound)?;
            // Devices go with their organization.
            let device_ids: Vec<u128> = {
                let index = txn.open_table(DEVICES_BY_ORG)?;
                index_desc(&index, &id.bytes(), [0; 24], [0xff; 24])?
                    .map(|k| k.map(|k| id_of(&k)))
                    .collect::<Result<_>>()?
            };
            for device in device_ids {
                let device = load_device(&txn, DeviceId(uuid::Uuid::from_u128(device)))?;
                delete_device_in(&txn, &device)?;
            }
            device_plane::delete_org_credentials_in(&txn, id)?;
            // Memberships go too.
            let member_ids: Vec<u128> = {
                let members = txn.open_table(ORGANIZATION_MEMBERS)?;
                let lo = cat(&[&id.bytes(), &[0u8; 16]]);
                let hi = cat(&[&id.bytes(), &[0xffu8; 16]]);
                members
                    .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
                    .map(|e| e.map(|(k, _)| uuid_of(&k.value()[16..])))
                    .collect::<std::result::Result<_, _>>()?
            };
            for user in member_ids {
                let mut user = load_user(&txn, UserId(uuid::Uuid::from_u128(user)))?;
                remove_user_indexes(&txn, &user)?;
                user.fields.memberships.retain(|m| m.organization != id);
                insert_user_indexes(&txn, &user)?;
            }
            txn.open_table(ORGANIZATION_SLUGS)?
                .remove(org.fields.slug.as_str())?;
            txn.open_table(ORGANIZATIONS)?.remove(id.key())?;
            txn.open_table(ORGANIZATIONS_BY_CREATED)?
                .remove(created_key(org.created, id.bytes()).as_slice())?;
            txn.open_table(COUNTERS)?
                .remove(counter_key(Some(id)).as_slice())?;
        }
        txn.commit()?;
        self.logins.clear();
        self.anchors.invalidate();
        self.tokens.clear();
        Ok(())
    }

    fn list_organizations(&self, scope: &Scope, page: PageRequest) -> Result<Page<Organization>> {
        let txn = self.db.begin_read()?;
        let orgs = txn.open_table(ORGANIZATIONS)?;
        match scope {
            Scope::All => {
                let index = txn.open_table(ORGANIZATIONS_BY_CREATED)?;
                let count = index.len()?;
                let mut items = Vec::new();
                for key in index_desc(&index, &[], [0; 24], [0xff; 24])?
                    .skip(page.offset as usize)
                    .take(page.limit as usize)
                {
                    if let Some(org) = get_record(&orgs, "organizations", id_of(&key?))? {
                        items.push(org);
                    }
                }
                Ok(Page { count, items })
            }
            Scope::Orgs(ids) => {
                let mut all: Vec<Organization> = Vec::new();
                for id in ids.iter().collect::<BTreeSet<_>>() {
                    if let Some(org) = get_record(&orgs, "organizations", id.key())? {
                        all.push(org);
                    }
                }
                all.sort_by_key(|o: &Organization| std::cmp::Reverse((o.created, o.id)));
                Ok(Page {
                    count: all.len() as u64,
                    items: slice(all, page),
                })
            }
        }
    }

    fn has_users(&self) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(USERS)?.first()?.is_some())
    }

    fn create_user(&self, fields: UserFields, password: Password) -> Result<User> {
        let user = User {
            id: UserId::new(),
            fields,
            password: password.hash()?,
            date_joined: Timestamp::now(),
        };
        let txn = self.db.begin_write()?;
        insert_user_indexes(&txn, &user)?;
        txn.commit()?;
        Ok(user)
    }

    fn user(&self, id: UserId) -> Result<Option<User>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(USERS)?, "users", id.key())
    }

    fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        lookup_by(&self.db, USERNAMES, USERS, "users", username)?
            .map(|b| decode("users", &b))
            .transpose()
    }

    fn update_user(
        &self,
        id: UserId,
        fields: UserFields,
        password: Option<Password>,
    ) -> Result<User> {
        let hash = password.map(|p| p.hash()).transpose()?;
        let txn = self.db.begin_write()?;
        let mut user = load_user(&txn, id)?;
        remove_user_indexes(&txn, &user)?;
        user.fields = fields;
        if let Some(hash) = hash {
            user.password = hash;
        }
        insert_user_indexes(&txn, &user)?;
        txn.commit()?;
        self.tokens.clear();
        Ok(user)
    }

    fn delete_user(&self, id: UserId) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let user = load_user(&txn, id)?;
            remove_user_indexes(&txn, &user)?;
            let hashes: Vec<Vec<u8>> = {
                let user_tokens = txn.open_table(USER_TOKENS)?;
                let lo = cat(&[&id.bytes(), &[0u8; 32]]);
                let hi = cat(&[&id.bytes(), &[0xffu8; 32]]);
                user_tokens
                    .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
                    .map(|e| e.map(|(k, _)| k.value().to_vec()))
                    .collect::<std::result::Result<_, _>>()?
            };
            let mut tokens = txn.open_table(TOKENS)?;
            let mut user_tokens = txn.open_table(USER_TOKENS)?;
            for key in hashes {
                tokens.remove(&key[16..])?;
                user_tokens.remove(key.as_slice())?;
            }
        }
        txn.commit()?;
        self.tokens.clear();
        Ok(())
    }

    fn list_users(&self, scope: &Scope, page: PageRequest) -> Result<Page<User>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        match scope {
            Scope::All => {
                let index = txn.open_table(USERS_BY_CREATED)?;
                let count = index.len()?;
                let mut items = Vec::new();
                for key in index_desc(&index, &[], [0; 24], [0xff; 24])?
                    .skip(page.offset as usize)
                    .take(page.limit as usize)
                {
                    if let Some(user) = get_record(&users, "users", id_of(&key?))? {
                        items.push(user);
                    }
                }
                Ok(Page { count, items })
            }
            Scope::Orgs(orgs) => {
                let members = txn.open_table(ORGANIZATION_MEMBERS)?;
                let mut ids = BTreeSet::new();
                for org in orgs {
                    let lo = cat(&[&org.bytes(), &[0u8; 16]]);
                    let hi = cat(&[&org.bytes(), &[0xffu8; 16]]);
                    for entry in members.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
                        let (key, _) = entry?;
                        ids.insert(uuid_of(&key.value()[16..]));
                    }
                }
                let mut all: Vec<User> = Vec::new();
                for id in ids {
                    if let Some(user) = get_record(&users, "users", id)? {
                        all.push(user);
                    }
                }
                all.sort_by_key(|u: &User| std::cmp::Reverse((u.date_joined, u.id)));
                Ok(Page {
                    count: all.len() as u64,
                    items: slice(all, page),
                })
            }
        }
    }

    fn create_token(&self, user: UserId) -> Result<Token> {
        let token = Token::generate();
        let hash = token_hash(token.as_str());
        let txn = self.db.begin_write()?;
        load_user(&txn, user)?;
        txn.open_table(TOKENS)?
            .insert(hash.as_slice(), user.key())?;
        txn.open_table(USER_TOKENS)?
            .insert(cat(&[&user.bytes(), &hash]).as_slice(), ())?;
        txn.commit()?;
        Ok(token)
    }

    fn user_for_token(&self, token: &str) -> Result<Option<User>> {
        let hash = token_hash(token);
        let epoch = self.tokens.epoch();
        let user: Option<User> = lookup_by(&self.db, TOKENS, USERS, "users", hash.as_slice())?
            .map(|b| decode("users", &b))
            .transpose()?;
        if let Some(user) = &user {
            self.tokens.insert(epoch, hash, user.clone());
        }
        Ok(user)
    }

    fn cached_user_for_token(&self, token: &str) -> Option<User> {
        self.tokens.get(&token_hash(token))
    }
}

impl DeviceStore for RedbBackend {
    fn device_login(&self, id: DeviceId) -> Result<Option<crate::DeviceLogin>> {
        if let Some(login) = self.logins.get(&id) {
            return Ok(Some(login));
        }
        let epoch = self.logins.epoch();
        let txn = self.db.begin_read()?;
        let Some(device) = get_record::<Device>(&txn.open_table(DEVICES)?, "devices", id.key())?
        else {
            return Ok(None);
        };
        let org: Option<Organization> = get_record(
            &txn.open_table(ORGANIZATIONS)?,
            "organizations",
            device.fields.organization.key(),
        )?;
        let login = crate::DeviceLogin {
            key: device.fields.key,
            deactivated: device.is_deactivated,
            org_slug: org
                .as_ref()
                .map(|o| o.fields.slug.as_str().to_owned())
                .unwrap_or_default(),
            org_active: org.is_some_and(|o| o.fields.is_active),
        };
        self.logins.insert(epoch, id, login.clone());
        Ok(Some(login))
    }

    fn cached_device_login(&self, id: DeviceId) -> Option<crate::DeviceLogin> {
        self.logins.get(&id)
    }

    fn create_device(&self, fields: DeviceFields, config: Option<ConfigFields>) -> Result<Device> {
        let device = new_device(fields, config);
        let txn = self.db.begin_write()?;
        insert_device_indexes(&txn, &device)?;
        txn.commit()?;
        self.anchors.invalidate();
        Ok(device)
    }

    fn create_devices(
        &self,
        devices: Vec<(DeviceFields, Option<ConfigFields>)>,
    ) -> Result<Vec<Device>> {
        let txn = self.db.begin_write()?;
        let mut out = Vec::with_capacity(devices.len());
        for (fields, config) in devices {
            let device = new_device(fields, config);
            insert_device_indexes(&txn, &device)?;
            out.push(device);
        }
        txn.commit()?;
        self.anchors.invalidate();
        Ok(out)
    }

    fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(DEVICES)?, "devices", id.key())
    }

    fn device_by_key(&self, key: &str) -> Result<Option<Device>> {
        lookup_by(&self.db, DEVICE_KEYS, DEVICES, "devices", key)?
            .map(|b| decode("devices", &b))
            .transpose()
    }

    fn update_device(
        &self,
        id: DeviceId,
        fields: DeviceFields,
        config: Option<ConfigFields>,
    ) -> Result<Device> {
        let txn = self.db.begin_write()?;
        let mut device = load_device(&txn, id)?;
        remove_device_indexes(&txn, &device)?;
        device.fields = fields;
        if let Some(fields) = config {
            device.config = match device.config.take() {
                Some(current) if current.fields == fields => Some(current),
                None if fields.is_default() => None,
                _ => Some(DeviceConfig {
                    fields,
                    status: ConfigStatus::Modified,
                    error_reason: String::new(),
                }),
            };
        }
        device.modified = Timestamp::now();
        insert_device_indexes(&txn, &device)?;
        txn.commit()?;
        self.logins.invalidate(&id);
        self.anchors.invalidate();
        Ok(device)
    }

    fn set_device_deactivated(&self, id: DeviceId, deactivated: bool) -> Result<Device> {
        let txn = self.db.begin_write()?;
        let mut device = load_device(&txn, id)?;
        device.is_deactivated = deactivated;
        if let Some(config) = device.config.as_mut() {
            config.status = if deactivated {
                ConfigStatus::Deactivating
            } else {
                ConfigStatus::Modified
            };
        }
        device.modified = Timestamp::now();
        txn.open_table(DEVICES)?
            .insert(id.key(), encode("devices", &device)?.as_slice())?;
        if deactivated {
            // Deactivated devices may not be upgraded (nor connect to finish an upgrade).
            upgrade::abort_device_upgrades_in(&txn, id, "Aborted: the device was deactivated")?;
        }
        txn.commit()?;
        self.logins.invalidate(&id);
        Ok(device)
    }

    fn delete_device(&self, id: DeviceId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let device = load_device(&txn, id)?;
        delete_device_in(&txn, &device)?;
        txn.commit()?;
        self.logins.invalidate(&id);
        self.anchors.invalidate();
        Ok(())
    }

    fn list_devices(
        &self,
        scope: &Scope,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> Result<Page<Device>> {
        let generation = self.anchors.generation();
        let txn = self.db.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        let locations = txn.open_table(DEVICE_LOCATIONS)?;
        let by_created = txn.open_table(DEVICES_BY_CREATED)?;
        let by_org = txn.open_table(DEVICES_BY_ORG)?;

        // Creation-time conditions become the index range [lo, hi).
        let mut from = filter.created_gte;
        let mut until = filter.created_lt;
        if let Some(exact) = filter.created {
            from = from.max(Some(exact));
            let next = Timestamp::from_micros(exact.as_micros() + 1);
            until = Some(until.map_or(next, |u| u.min(next)));
        }
        let lo = created_key(from.unwrap_or(Timestamp::from_micros(0)), [0; 16]);
        let hi = match until {
            Some(t) => created_key(t, [0; 16]),
            None => [0xff; 24],
        };
        let streams = match scope {
            Scope::All => vec![index_desc(&by_created, &[], lo, hi)?.peekable()],
            Scope::Orgs(orgs) => orgs
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|org| index_desc(&by_org, &org.bytes(), lo, hi).map(Iterator::peekable))
                .collect::<Result<_>>()?,
        };
        let mut keys = MergeDesc { streams };

        let unfiltered = from.is_none() && until.is_none() && !filter.needs_records();
        if unfiltered {
            let counters = txn.open_table(COUNTERS)?;
            let count = match scope {
                Scope::All => counters
                    .get(counter_key(None).as_slice())?
                    .map_or(0, |v| v.value()),
                Scope::Orgs(orgs) => {
                    let mut total = 0;
                    for org in orgs.iter().collect::<BTreeSet<_>>() {
                        total += counters
                            .get(counter_key(Some(*org)).as_slice())?
                            .map_or(0, |v| v.value());
                    }
                    total
                }
            };
            // A deep page of one index starts at its nearest anchor.
            let single: Option<Option<OrgId>> = match scope {
                Scope::All => Some(None),
                Scope::Orgs(orgs) if orgs.iter().collect::<BTreeSet<_>>().len() == 1 => {
                    orgs.first().copied().map(Some)
                }
                Scope::Orgs(_) => None,
            };
            let mut skip = page.offset;
            if let Some(single) = single
                && page.offset >= ANCHOR_STRIDE
            {
                let prefix = single.map(|org| org.bytes().to_vec()).unwrap_or_default();
                let seeked = match single {
                    None => {
                        self.anchors
                            .seek(generation, None, &by_created, &prefix, page.offset)?
                    }
                    Some(org) => {
                        self.anchors
                            .seek(generation, Some(org), &by_org, &prefix, page.offset)?
                    }
                };
                if let Some((anchor, rest)) = seeked {
                    let index = if single.is_none() {
                        &by_created
                    } else {
                        &by_org
                    };
                    keys = MergeDesc {
                        streams: vec![
                            index_desc(index, &prefix, [0; 24], successor(anchor))?.peekable(),
                        ],
                    };
                    skip = rest;
                }
            }
            let mut items = Vec::new();
            for key in keys.by_ref().skip(skip as usize).take(page.limit as usize) {
                if let Some(device) = get_record(&devices, "devices", id_of(&key?))? {
                    items.push(device);
                }
            }
            return Ok(Page { count, items });
        }

        let mut count = 0u64;
        let mut items = Vec::new();
        for key in keys {
            let id = id_of(&key?);
            let wanted = count >= page.offset && (items.len() as u64) < page.limit;
            if !filter.needs_records() {
                if wanted && let Some(device) = get_record(&devices, "devices", id)? {
                    items.push(device);
                }
                count += 1;
                continue;
            }
            let Some(device) = get_record::<Device>(&devices, "devices", id)? else {
                continue;
            };
            let has_location = filter.with_geo.is_some() && locations.get(id)?.is_some();
            if filter.matches(&device, has_location) {
                if wanted {
                    items.push(device);
                }
                count += 1;
            }
        }
        Ok(Page { count, items })
    }
}
