//! [`AccountStore`] on the kv tables: organizations, users with their memberships, API tokens.

use std::collections::BTreeSet;

use crate::kv::{ReadableTable, WriteTransaction};

use super::KvBackend;
use super::cluster::carry_login;
use super::device_plane;
use super::devices::{counter_key, delete_device_in, load_device};
use super::paging::{created_key, ids_paired_with, ids_under, page_index, paged};
use super::record::{cat, encode, get_record, lookup_by};
use crate::tables::*;
use crate::{
    AccountStore, DeviceId, LoginChange, OrgId, Organization, OrganizationFields, Page,
    PageRequest, Password, Result, Scope, StoreError, Timestamp, Token, Unique, User, UserFields,
    UserId, token_hash,
};

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

fn load_user(txn: &WriteTransaction, id: UserId) -> Result<User> {
    let table = txn.open_table(USERS)?;
    get_record(&table, "users", id.key())?.ok_or(StoreError::NotFound)
}

impl AccountStore for KvBackend {
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
        )
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
            let before = std::mem::replace(&mut org.fields, fields);
            org.modified = Timestamp::now();
            orgs.insert(id.key(), encode("organizations", &org)?.as_slice())?;
            (org, before.slug)
        };
        let (org, slug) = org;
        let change = LoginChange::Organization {
            slug: slug.as_str().to_owned(),
        };
        carry_login(&txn, &change);
        txn.commit()?;
        self.logins.clear();
        self.changes.announce(change);
        Ok(org)
    }

    fn delete_organization(&self, id: OrgId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let events;
        let slug = {
            let org: Organization =
                get_record(&txn.open_table(ORGANIZATIONS)?, "organizations", id.key())?
                    .ok_or(StoreError::NotFound)?;
            // Devices go with their organization.
            let device_ids = ids_under(&txn.open_table(DEVICES_BY_ORG)?, &id.bytes())?;
            let mut counts = super::upgrade::CountChanges::default();
            for device in device_ids {
                let device = load_device(&txn, DeviceId(uuid::Uuid::from_u128(device)))?;
                self.delete_device_clients_in(&txn, device.id)?;
                delete_device_in(&txn, &device, &mut counts)?;
            }
            events = counts.apply(&txn)?;
            device_plane::delete_org_credentials_in(&txn, id)?;
            super::configuration::delete_org_configuration_in(&txn, id)?;
            super::config_settings::delete_org_settings_in(&txn, id)?;
            super::locations::delete_org_locations_in(&txn, id)?;
            super::vpn::delete_org_vpns_in(self, &txn, id)?;
            super::pki::delete_org_pki_in(self, &txn, id)?;
            super::software::delete_org_software_in(&txn, id)?;
            super::oauth::delete_org_clients_in(&txn, id)?;
            // Memberships go too.
            let member_ids = ids_paired_with(&txn.open_table(ORGANIZATION_MEMBERS)?, &id.bytes())?;
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
            org.fields.slug
        };
        let change = LoginChange::Organization {
            slug: slug.as_str().to_owned(),
        };
        carry_login(&txn, &change);
        txn.commit()?;
        self.logins.clear();
        self.anchors.invalidate();
        self.tokens.clear();
        self.changes.announce(change);
        self.announce_live(events);
        Ok(())
    }

    fn list_organizations(&self, scope: &Scope, page: PageRequest) -> Result<Page<Organization>> {
        let txn = self.db.begin_read()?;
        let orgs = txn.open_table(ORGANIZATIONS)?;
        match scope {
            Scope::All => page_index(
                &txn.open_table(ORGANIZATIONS_BY_CREATED)?,
                &orgs,
                "organizations",
                page,
            ),
            Scope::Orgs(ids) => {
                let mut all: Vec<Organization> = Vec::new();
                for id in ids.iter().collect::<BTreeSet<_>>() {
                    if let Some(org) = get_record(&orgs, "organizations", id.key())? {
                        all.push(org);
                    }
                }
                all.sort_by_key(|o: &Organization| std::cmp::Reverse((o.created, o.id)));
                Ok(paged(all, page))
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
        lookup_by(&self.db, USERNAMES, USERS, "users", username)
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
        carry_login(&txn, &LoginChange::Users);
        txn.commit()?;
        self.tokens.clear();
        self.changes.announce(LoginChange::Users);
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
        carry_login(&txn, &LoginChange::Users);
        txn.commit()?;
        self.tokens.clear();
        self.changes.announce(LoginChange::Users);
        Ok(())
    }

    fn list_users(&self, scope: &Scope, page: PageRequest) -> Result<Page<User>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        match scope {
            Scope::All => page_index(&txn.open_table(USERS_BY_CREATED)?, &users, "users", page),
            Scope::Orgs(orgs) => {
                let members = txn.open_table(ORGANIZATION_MEMBERS)?;
                let mut ids = BTreeSet::new();
                for org in orgs {
                    ids.extend(ids_paired_with(&members, &org.bytes())?);
                }
                let mut all: Vec<User> = Vec::new();
                for id in ids {
                    if let Some(user) = get_record(&users, "users", id)? {
                        all.push(user);
                    }
                }
                all.sort_by_key(|u: &User| std::cmp::Reverse((u.date_joined, u.id)));
                Ok(paged(all, page))
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

    fn delete_token(&self, token: &str) -> Result<bool> {
        let hash = token_hash(token);
        let txn = self.db.begin_write()?;
        let existed = {
            let mut tokens = txn.open_table(TOKENS)?;
            let user = tokens.get(hash.as_slice())?.map(|user| user.value());
            if let Some(user) = user {
                tokens.remove(hash.as_slice())?;
                let key = cat(&[&user.to_be_bytes(), &hash]);
                txn.open_table(USER_TOKENS)?.remove(key.as_slice())?;
            }
            user.is_some()
        };
        carry_login(&txn, &LoginChange::Users);
        txn.commit()?;
        self.tokens.clear();
        self.changes.announce(LoginChange::Users);
        Ok(existed)
    }

    fn user_for_token(&self, token: &str) -> Result<Option<User>> {
        let hash = token_hash(token);
        let epoch = self.tokens.epoch();
        let user: Option<User> = lookup_by(&self.db, TOKENS, USERS, "users", hash.as_slice())?;
        if let Some(user) = &user {
            self.tokens.insert(epoch, hash, user.clone());
        }
        Ok(user)
    }

    fn cached_user_for_token(&self, token: &str) -> Option<User> {
        self.tokens.get(&token_hash(token))
    }
}
