//! [`ConfigSettingsStore`] on the kv tables: each organization's settings under its id, a unique index
//! from shared secret to organization, and [`org_context`], what rendering reads of them.

use std::collections::BTreeSet;

use crate::kv::{ReadableTable, WriteTransaction};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::KvBackend;
use super::configuration::{Known, configuration_changed, renders_differently, settle_device};
use super::devices::{insert_device_indexes, load_device, store_device_in};
use super::paging::ids_under;
use super::record::{encode, get_record};
use crate::tables::*;
use crate::{
    ConfigChange, ConfigFields, ConfigSettings, ConfigSettingsStore, ConfigStatus, Device,
    DeviceConfig, DeviceFields, DeviceId, OrgId, Organization, Result, StoreError, Timestamp,
    Unique,
};

const TABLE: &str = "org_config_settings";

/// The variables of `org`'s settings (empty when it has none stored): what the renderer
/// substitutes above template defaults. Works on the table of a read or a write transaction.
pub(super) fn org_context(
    table: &impl ReadableTable<u128, &'static [u8]>,
    org: OrgId,
) -> Result<Map<String, Value>> {
    Ok(get_record::<ConfigSettings>(table, TABLE, org.key())?
        .map(|s| s.context)
        .unwrap_or_default())
}

/// Stores `settings` for `org`, moving its secret's index entry from `before` (if any).
fn put_settings_in(
    txn: &WriteTransaction,
    org: OrgId,
    before: Option<&ConfigSettings>,
    settings: &ConfigSettings,
) -> Result<()> {
    let mut secrets = txn.open_table(ORG_SHARED_SECRETS)?;
    let secret = settings.shared_secret.as_str();
    if before.is_none_or(|b| b.shared_secret != settings.shared_secret) {
        let owner = secrets.get(secret)?.map(|v| v.value());
        if owner.is_some_and(|o| o != org.key()) {
            return Err(StoreError::Unique(Unique::SharedSecret));
        }
        if let Some(before) = before {
            secrets.remove(before.shared_secret.as_str())?;
        }
        secrets.insert(secret, org.key())?;
    }
    txn.open_table(ORG_CONFIG_SETTINGS)?
        .insert(org.key(), encode(TABLE, settings)?.as_slice())?;
    Ok(())
}

/// Deletes an organization's settings and its secret's index entry (the organization is
/// being deleted).
pub(super) fn delete_org_settings_in(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    let mut table = txn.open_table(ORG_CONFIG_SETTINGS)?;
    let settings: Option<ConfigSettings> = match table.take(org.key())? {
        Some(bytes) => Some(super::record::decode(TABLE, bytes.value())?),
        None => None,
    };
    if let Some(settings) = settings {
        txn.open_table(ORG_SHARED_SECRETS)?
            .remove(settings.shared_secret.as_str())?;
    }
    Ok(())
}

fn org_exists(txn: &WriteTransaction, org: OrgId) -> Result<bool> {
    Ok(txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_some())
}

impl ConfigSettingsStore for KvBackend {
    fn config_settings(&self, org: OrgId) -> Result<ConfigSettings> {
        {
            let txn = self.db.begin_read()?;
            if txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none() {
                return Err(StoreError::NotFound);
            }
            let stored = get_record(&txn.open_table(ORG_CONFIG_SETTINGS)?, TABLE, org.key())?;
            if let Some(settings) = stored {
                return Ok(settings);
            }
        }
        // First read: create the defaults (another writer may have done it meanwhile).
        let txn = self.db.begin_write()?;
        if !org_exists(&txn, org)? {
            return Err(StoreError::NotFound);
        }
        let stored = get_record(&txn.open_table(ORG_CONFIG_SETTINGS)?, TABLE, org.key())?;
        let settings = match stored {
            Some(settings) => settings,
            None => {
                let settings = ConfigSettings::new_default();
                put_settings_in(&txn, org, None, &settings)?;
                settings
            }
        };
        txn.commit()?;
        Ok(settings)
    }

    fn replace_config_settings(
        &self,
        org: OrgId,
        settings: ConfigSettings,
    ) -> Result<(ConfigSettings, ConfigChange)> {
        let txn = self.db.begin_write()?;
        if !org_exists(&txn, org)? {
            return Err(StoreError::NotFound);
        }
        let before: Option<ConfigSettings> =
            get_record(&txn.open_table(ORG_CONFIG_SETTINGS)?, TABLE, org.key())?;
        put_settings_in(&txn, org, before.as_ref(), &settings)?;
        let mut affected = BTreeSet::new();
        if before.is_none_or(|b| b.context != settings.context) {
            let devices = ids_under(&txn.open_table(DEVICES_BY_ORG)?, &org.bytes())?;
            affected.extend(devices.into_iter().map(|d| DeviceId(Uuid::from_u128(d))));
        }
        let change = configuration_changed(self, &txn, affected)?;
        let change = self.commit_config(txn, change)?;
        Ok((settings, change))
    }

    fn organization_by_secret(
        &self,
        secret: &str,
    ) -> Result<Option<(Organization, ConfigSettings)>> {
        let txn = self.db.begin_read()?;
        let Some(org) = txn
            .open_table(ORG_SHARED_SECRETS)?
            .get(secret)?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let Some(organization) = get_record(&txn.open_table(ORGANIZATIONS)?, "organizations", org)?
        else {
            return Ok(None);
        };
        let settings = get_record(&txn.open_table(ORG_CONFIG_SETTINGS)?, TABLE, org)?;
        Ok(settings.map(|s| (organization, s)))
    }

    fn register_device(
        &self,
        existing: Option<DeviceId>,
        fields: DeviceFields,
        config: ConfigFields,
    ) -> Result<Device> {
        let txn = self.db.begin_write()?;
        let before = existing.map(|id| load_device(&txn, id)).transpose()?;
        let now = Timestamp::now();
        let mut device = match &before {
            Some(before) => Device {
                fields,
                modified: now,
                ..before.clone()
            },
            None => Device {
                id: DeviceId::new(),
                fields,
                config: None,
                is_deactivated: false,
                created: now,
                modified: now,
            },
        };
        if device.config.is_none() {
            device.config = Some(DeviceConfig {
                fields: config,
                status: ConfigStatus::Modified,
                error_reason: String::new(),
                checksum: String::new(),
            });
        }
        settle_device(&txn, before.as_ref(), &mut device, &mut Known::default())?;
        let affected = match &before {
            Some(before) => {
                store_device_in(&txn, before, &device)?;
                renders_differently(before, &device)
            }
            None => {
                insert_device_indexes(&txn, &device)?;
                true
            }
        };
        let affected = if affected {
            BTreeSet::from([device.id])
        } else {
            BTreeSet::new()
        };
        let change = configuration_changed(self, &txn, affected)?;
        self.commit_config(txn, change)?;
        self.anchors.invalidate();
        Ok(device)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::{AccountStore, OrganizationFields, Slug};

    fn org(db: &KvBackend, slug: &str) -> OrgId {
        let fields = OrganizationFields {
            name: slug.to_owned(),
            slug: Slug::parse(slug).expect("slug"),
            description: String::new(),
            email: String::new(),
            url: String::new(),
            is_active: true,
        };
        db.create_organization(fields).expect("organization").id
    }

    #[test]
    fn settings_are_created_on_first_read_and_found_by_secret_until_the_org_goes() {
        let dir = tempfile::tempdir().expect("dir");
        let db = KvBackend::open(dir.path()).expect("open");
        let acme = org(&db, "acme");
        let first = db.config_settings(acme).expect("settings");
        assert_eq!(db.config_settings(acme).expect("settings"), first);
        let found = db
            .organization_by_secret(first.shared_secret.as_str())
            .expect("lookup")
            .map(|(o, _)| o.id);
        assert_eq!(found, Some(acme));

        let mut changed = first.clone();
        changed.context.insert("ssid".into(), "acme-wifi".into());
        db.replace_config_settings(acme, changed).expect("replace");
        {
            let txn = db.db.begin_read().expect("read");
            let table = txn.open_table(ORG_CONFIG_SETTINGS).expect("table");
            assert_eq!(
                org_context(&table, acme).expect("context").get("ssid"),
                Some(&Value::from("acme-wifi"))
            );
        }

        let other = org(&db, "other");
        let mut clash = db.config_settings(other).expect("settings");
        clash.shared_secret = first.shared_secret.clone();
        assert!(matches!(
            db.replace_config_settings(other, clash),
            Err(StoreError::Unique(Unique::SharedSecret))
        ));

        db.delete_organization(acme).expect("delete");
        assert!(
            db.organization_by_secret(first.shared_secret.as_str())
                .expect("lookup")
                .is_none()
        );
        assert!(matches!(
            db.config_settings(acme),
            Err(StoreError::NotFound)
        ));
    }
}
