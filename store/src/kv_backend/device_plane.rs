//! [`DevicePlane`] on the kv tables: locations, credentials and connections, commands, telemetry.

use std::collections::HashMap;

use crate::kv::{ReadTransaction, ReadableTable, WriteTransaction};

use super::KvBackend;
use super::devices::{load_device, read_brief, write_device};
use super::paging::{
    created_key, id_of, ids_paired_with, ids_under, org_prefix, page_of, visible_keys,
};
use super::record::{cat, decode, encode, get_record};
use crate::tables::*;
use crate::{
    Command, CommandId, CommandStatus, ConnectionFields, ConnectionHealth, ConnectionId, Connector,
    Credentials, CredentialsFields, CredentialsId, Device, DeviceConnection, DeviceId,
    DeviceLocation, DevicePlane, Geometry, HistoryPage, HistoryPageRequest, Location, LocationId,
    LocationType, MqttSession, NewCommand, OrgId, Page, PageRequest, Point, Presence,
    PresenceChange, Result, Scope, StoreError, TelemetryRange, TelemetrySample, Timestamp, Unique,
};

fn insert_credentials(txn: &WriteTransaction, credentials: &Credentials) -> Result<()> {
    txn.open_table(CREDENTIALS)?.insert(
        credentials.id.key(),
        encode("credentials", credentials)?.as_slice(),
    )?;
    let key = created_key(credentials.created, credentials.id.bytes());
    txn.open_table(CREDENTIALS_BY_ORG)?.insert(
        cat(&[&org_prefix(credentials.fields.organization), &key]).as_slice(),
        (),
    )?;
    Ok(())
}

fn remove_connection_in(txn: &WriteTransaction, connection: &DeviceConnection) -> Result<()> {
    let created = created_key(connection.created, connection.id.bytes());
    txn.open_table(CONNECTIONS)?.remove(connection.id.key())?;
    txn.open_table(CONNECTION_HEALTH)?
        .remove(connection.id.key())?;
    txn.open_table(DEVICE_CONNECTIONS)?
        .remove(cat(&[&connection.device.bytes(), &created]).as_slice())?;
    txn.open_table(CONNECTION_PAIRS)?.remove(
        cat(&[
            &connection.device.bytes(),
            &connection.fields.credentials.bytes(),
        ])
        .as_slice(),
    )?;
    txn.open_table(CREDENTIALS_CONNECTIONS)?.remove(
        cat(&[
            &connection.fields.credentials.bytes(),
            &connection.id.bytes(),
        ])
        .as_slice(),
    )?;
    Ok(())
}

fn insert_connection_in(txn: &WriteTransaction, connection: &DeviceConnection) -> Result<()> {
    let pair = cat(&[
        &connection.device.bytes(),
        &connection.fields.credentials.bytes(),
    ]);
    let mut pairs = txn.open_table(CONNECTION_PAIRS)?;
    if pairs.get(pair.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::ConnectionCredentials));
    }
    pairs.insert(pair.as_slice(), connection.id.key())?;
    let created = created_key(connection.created, connection.id.bytes());
    txn.open_table(CONNECTIONS)?.insert(
        connection.id.key(),
        encode("connections", connection)?.as_slice(),
    )?;
    txn.open_table(DEVICE_CONNECTIONS)?
        .insert(cat(&[&connection.device.bytes(), &created]).as_slice(), ())?;
    txn.open_table(CREDENTIALS_CONNECTIONS)?.insert(
        cat(&[
            &connection.fields.credentials.bytes(),
            &connection.id.bytes(),
        ])
        .as_slice(),
        (),
    )?;
    Ok(())
}

fn load_connection(txn: &WriteTransaction, id: u128) -> Result<DeviceConnection> {
    let connection = get_record(&txn.open_table(CONNECTIONS)?, "connections", id)?
        .ok_or(StoreError::NotFound)?;
    with_health(&txn.open_table(CONNECTION_HEALTH)?, connection)
}

/// `connection` with the health its last MQTT session left (kept apart: see
/// [`CONNECTION_HEALTH`]); it was modified then.
fn with_health(
    health: &impl ReadableTable<u128, &'static [u8]>,
    mut connection: DeviceConnection,
) -> Result<DeviceConnection> {
    if let Some(latest) = get_record::<HealthRow>(health, "connection_health", connection.id.key())?
    {
        let latest = ConnectionHealth::from(latest);
        if let Some(at) = latest.last_attempt {
            connection.modified = connection.modified.max(at);
        }
        connection.health = latest;
    }
    Ok(connection)
}

/// A connection's health as [`CONNECTION_HEALTH`] keeps it: short names, empty parts left
/// out (one row per device, written at each connect and disconnect).
#[derive(serde::Serialize, serde::Deserialize)]
struct HealthRow {
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    is_working: Option<bool>,
    #[serde(rename = "r", default, skip_serializing_if = "String::is_empty")]
    failure_reason: String,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    last_attempt: Option<Timestamp>,
}

impl From<HealthRow> for ConnectionHealth {
    fn from(row: HealthRow) -> Self {
        Self {
            is_working: row.is_working,
            failure_reason: row.failure_reason,
            last_attempt: row.last_attempt,
        }
    }
}

/// The presence of each device (with its organization), in their order, read together (four
/// round trips on PostgreSQL for any number of devices): the organizations' MQTT credentials,
/// each device's connection through them, and the health its last session left there. A
/// device without such a connection or health was never connected: offline, since `None`.
pub(super) fn presence_in(
    txn: &ReadTransaction,
    devices: &[(DeviceId, OrgId)],
) -> Result<Vec<Presence>> {
    let mut orgs: Vec<u128> = devices.iter().map(|(_, org)| org.key()).collect();
    orgs.sort_unstable();
    orgs.dedup();
    let credentials: HashMap<u128, CredentialsId> = orgs
        .iter()
        .zip(txn.open_table(MQTT_CREDENTIALS)?.get_many(&orgs)?)
        .filter_map(|(org, id)| {
            id.map(|id| (*org, CredentialsId(uuid::Uuid::from_u128(id.value()))))
        })
        .collect();
    // Devices whose organization has MQTT credentials, with their pair keys.
    let paired: Vec<(usize, Vec<u8>)> = devices
        .iter()
        .enumerate()
        .filter_map(|(i, (device, org))| {
            credentials
                .get(&org.key())
                .map(|c| (i, cat(&[&device.bytes(), &c.bytes()])))
        })
        .collect();
    let keys: Vec<&[u8]> = paired.iter().map(|(_, key)| key.as_slice()).collect();
    let connections: Vec<(usize, u128)> = paired
        .iter()
        .zip(txn.open_table(CONNECTION_PAIRS)?.get_many(&keys)?)
        .filter_map(|((i, _), id)| id.map(|id| (*i, id.value())))
        .collect();
    let ids: Vec<u128> = connections.iter().map(|(_, id)| *id).collect();
    let mut out = vec![Presence::default(); devices.len()];
    let health = txn.open_table(CONNECTION_HEALTH)?;
    for ((i, _), row) in connections.iter().zip(health.get_many(&ids)?) {
        if let Some(row) = row {
            let row: HealthRow = decode("connection_health", row.value())?;
            out[*i] = Presence {
                online: row.is_working == Some(true),
                since: row.last_attempt,
            };
        }
    }
    Ok(out)
}

/// The id of `device`'s connection through its organization's MQTT credentials (the device
/// key), creating both where missing: with each new device, and at the connect of a device
/// whose connection was deleted since.
pub(super) fn mqtt_connection_in(
    txn: &WriteTransaction,
    device: DeviceId,
    org: OrgId,
    at: Timestamp,
) -> Result<ConnectionId> {
    let credentials = {
        let mut mqtt = txn.open_table(MQTT_CREDENTIALS)?;
        let known = mqtt.get(org.key())?.map(|v| v.value());
        match known {
            Some(id) => CredentialsId(uuid::Uuid::from_u128(id)),
            None => {
                let credentials = Credentials {
                    id: CredentialsId::new(),
                    fields: CredentialsFields {
                        organization: Some(org),
                        name: "MQTT (device key)".to_owned(),
                        connector: Connector::Mqtt,
                        auto_add: true,
                        params: Default::default(),
                    },
                    created: at,
                    modified: at,
                };
                mqtt.insert(org.key(), credentials.id.key())?;
                drop(mqtt);
                insert_credentials(txn, &credentials)?;
                credentials.id
            }
        }
    };
    let pair = cat(&[&device.bytes(), &credentials.bytes()]);
    let existing = txn
        .open_table(CONNECTION_PAIRS)?
        .get(pair.as_slice())?
        .map(|v| v.value());
    if let Some(id) = existing {
        return Ok(ConnectionId(uuid::Uuid::from_u128(id)));
    }
    let connection = DeviceConnection {
        id: ConnectionId::new(),
        device,
        fields: ConnectionFields {
            credentials,
            update_strategy: Connector::Mqtt.default_update_strategy().to_owned(),
            enabled: true,
        },
        health: ConnectionHealth::default(),
        created: at,
        modified: at,
    };
    insert_connection_in(txn, &connection)?;
    Ok(connection.id)
}

/// Removes credentials with every connection that uses them.
pub(super) fn delete_credentials_in(
    txn: &WriteTransaction,
    credentials: &Credentials,
) -> Result<()> {
    let connection_ids = ids_paired_with(
        &txn.open_table(CREDENTIALS_CONNECTIONS)?,
        &credentials.id.bytes(),
    )?;
    for id in connection_ids {
        let connection = load_connection(txn, id)?;
        remove_connection_in(txn, &connection)?;
    }
    txn.open_table(CREDENTIALS)?.remove(credentials.id.key())?;
    let key = created_key(credentials.created, credentials.id.bytes());
    txn.open_table(CREDENTIALS_BY_ORG)?
        .remove(cat(&[&org_prefix(credentials.fields.organization), &key]).as_slice())?;
    if let Some(org) = credentials.fields.organization {
        let mut mqtt = txn.open_table(MQTT_CREDENTIALS)?;
        if mqtt.get(org.key())?.map(|v| v.value()) == Some(credentials.id.key()) {
            mqtt.remove(org.key())?;
        }
    }
    Ok(())
}

/// Removes everything that belongs to a device besides its own record and indexes.
pub(super) fn delete_device_plane_in(txn: &WriteTransaction, device: &Device) -> Result<()> {
    let prefix = device.id.bytes();
    let connections = ids_under(&txn.open_table(DEVICE_CONNECTIONS)?, &prefix)?;
    for id in connections {
        let connection = load_connection(txn, id)?;
        remove_connection_in(txn, &connection)?;
    }
    let commands = ids_under(&txn.open_table(DEVICE_COMMANDS)?, &prefix)?;
    {
        let mut table = txn.open_table(COMMANDS)?;
        let mut by_device = txn.open_table(DEVICE_COMMANDS)?;
        let mut pending = txn.open_table(PENDING_COMMANDS)?;
        for id in commands {
            if let Some(command) = get_record::<Command>(&table, "commands", id)? {
                let key = created_key(command.created, command.id.bytes());
                by_device.remove(cat(&[&prefix, &key]).as_slice())?;
                pending.remove(key.as_slice())?;
            }
            table.remove(id)?;
        }
    }
    {
        let mut telemetry = txn.open_table(TELEMETRY)?;
        let lo = cat(&[&prefix, &[0u8; 16]]);
        let hi = cat(&[&prefix, &[0xffu8; 16]]);
        let keys: Vec<Vec<u8>> = telemetry
            .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
            .map(|e| e.map(|(k, _)| k.value().to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        for key in keys {
            telemetry.remove(key.as_slice())?;
        }
        txn.open_table(TELEMETRY_LATEST)?.remove(device.id.key())?;
        txn.open_table(TELEMETRY_BYTES)?.remove(device.id.key())?;
    }
    {
        let lo = presence_key(device.id, 0);
        let hi = presence_key(device.id, u64::MAX);
        txn.open_table(PRESENCE_HISTORY)?
            .retain_in::<&[u8], _>(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
    }
    let link = txn
        .open_table(DEVICE_LOCATIONS)?
        .take(device.id.key())?
        .map(|v| v.value().to_vec());
    if let Some(link) = link {
        let link: DeviceLocation = decode("device_locations", &link)?;
        // A mobile location follows its device and goes with it (its floor plans' files are
        // left to the start-up sweep).
        let mobile = get_record::<Location>(
            &txn.open_table(LOCATIONS)?,
            "locations",
            link.location.key(),
        )?
        .is_some_and(|l| l.is_mobile);
        if mobile {
            super::locations::delete_location_in(txn, link.location)?;
        }
    }
    Ok(())
}

/// Removes an organization's credentials (its devices are removed separately).
pub(super) fn delete_org_credentials_in(txn: &WriteTransaction, org: OrgId) -> Result<()> {
    let ids = ids_under(&txn.open_table(CREDENTIALS_BY_ORG)?, &org.bytes())?;
    for id in ids {
        let credentials: Option<Credentials> =
            get_record(&txn.open_table(CREDENTIALS)?, "credentials", id)?;
        if let Some(credentials) = credentials {
            delete_credentials_in(txn, &credentials)?;
        }
    }
    Ok(())
}

fn telemetry_key(device: DeviceId, measured: Timestamp, sequence: u64) -> Vec<u8> {
    cat(&[
        &device.bytes(),
        &measured.sort_key(),
        &sequence.to_be_bytes(),
    ])
}

/// A length as a signed byte count, so sizes can be added and taken away in one sum.
fn size_of(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// The keys and value sizes of a range, from its start while `take(size)` says so.
fn keys_and_sizes(
    range: crate::kv::Range<'_, &'static [u8], &'static [u8]>,
    mut take: impl FnMut(usize) -> bool,
) -> Result<Vec<(Vec<u8>, usize)>> {
    let mut out = Vec::new();
    for entry in range {
        let (key, value) = entry?;
        let len = value.value().len();
        if !take(len) {
            break;
        }
        out.push((key.value().to_vec(), len));
    }
    Ok(out)
}

/// The bytes of a device's whole history, counted (for a history older than its counter).
fn history_bytes(
    history: &crate::kv::Table<'_, &'static [u8], &'static [u8]>,
    device: DeviceId,
) -> Result<i64> {
    let lo = cat(&[&device.bytes(), &[0u8; 16]]);
    let hi = cat(&[&device.bytes(), &[0xffu8; 16]]);
    let mut total = 0;
    for entry in history.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        total += size_of(entry?.1.value().len());
    }
    Ok(total)
}

/// A row of [`PRESENCE_HISTORY`]: short names, empty parts left out (up to
/// [`PRESENCE_HISTORY_LEN`](crate::PRESENCE_HISTORY_LEN) per device).
#[derive(serde::Serialize, serde::Deserialize)]
struct PresenceRow {
    #[serde(rename = "o")]
    online: bool,
    #[serde(rename = "t")]
    at: Timestamp,
    #[serde(rename = "r", default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    peer_ip: Option<std::net::IpAddr>,
}

impl From<PresenceRow> for PresenceChange {
    fn from(row: PresenceRow) -> Self {
        Self {
            online: row.online,
            at: row.at,
            reason: row.reason,
            peer_ip: row.peer_ip,
        }
    }
}

/// The key of a device's `sequence`th presence change.
fn presence_key(device: DeviceId, sequence: u64) -> Vec<u8> {
    cat(&[&device.bytes(), &sequence.to_be_bytes()])
}

/// The sequence number a presence key ends with.
fn presence_sequence(key: &[u8]) -> Result<u64> {
    key.get(16..)
        .and_then(|tail| <[u8; 8]>::try_from(tail).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::CorruptKey {
            table: "presence_history".to_owned(),
        })
}

/// The sequence number of a device's newest (or oldest) presence change, if it has any: one
/// end of its range, a short read.
fn presence_end(
    history: &impl ReadableTable<&'static [u8], &'static [u8]>,
    device: DeviceId,
    newest: bool,
) -> Result<Option<u64>> {
    let (lo, hi) = (presence_key(device, 0), presence_key(device, u64::MAX));
    let mut range = history.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?;
    let end = if newest {
        range.next_back()
    } else {
        range.next()
    };
    end.transpose()?
        .map(|(key, _)| presence_sequence(key.value()))
        .transpose()
}

/// Appends a change of `device`'s presence to its history and drops what falls beyond
/// [`PRESENCE_HISTORY_LEN`](crate::PRESENCE_HISTORY_LEN), oldest first.
fn append_presence_in(
    txn: &WriteTransaction,
    device: DeviceId,
    session: &MqttSession,
) -> Result<()> {
    let mut history = txn.open_table(PRESENCE_HISTORY)?;
    let sequence = presence_end(&history, device, true)?.map_or(0, |n| n.saturating_add(1));
    let row = PresenceRow {
        online: session.online,
        at: session.at,
        reason: if session.online {
            String::new()
        } else {
            session.failure_reason.clone()
        },
        peer_ip: session.peer_ip.filter(|_| session.online),
    };
    history.insert(
        presence_key(device, sequence).as_slice(),
        encode("presence_history", &row)?.as_slice(),
    )?;
    // Sequences are consecutive, so the rows to drop are the range up to this one less the
    // bound (one row, once the history is full).
    if let Some(last_dropped) = sequence.checked_sub(crate::PRESENCE_HISTORY_LEN) {
        let (lo, cut) = (presence_key(device, 0), presence_key(device, last_dropped));
        history.retain_in::<&[u8], _>(lo.as_slice()..=cut.as_slice(), |_, _| false)?;
    }
    Ok(())
}

/// Records one session change inside a write transaction (see `record_mqtt_session`). When
/// it turns the device online or offline, carries that live event to the other nodes and
/// returns it, to announce here once committed.
fn record_session_in(
    txn: &WriteTransaction,
    device: DeviceId,
    session: MqttSession,
) -> Result<Option<crate::LiveEvent>> {
    let mut briefs = txn.open_table(DEVICE_BRIEFS)?;
    let mut brief = read_brief(&briefs, device)?.ok_or(StoreError::NotFound)?;
    let org = brief.organization;
    let connection = mqtt_connection_in(txn, device, org, session.at)?;
    let before: Option<HealthRow> = get_record(
        &txn.open_table(CONNECTION_HEALTH)?,
        "connection_health",
        connection.key(),
    )?;
    let event = (before.and_then(|b| b.is_working) != Some(session.online)).then_some(
        crate::LiveEvent::Presence {
            device,
            organization: org,
            online: session.online,
            at: session.at,
        },
    );
    if let Some(event) = &event {
        super::cluster::carry_live(txn, event);
        append_presence_in(txn, device, &session)?;
    }
    let health = HealthRow {
        is_working: Some(session.online),
        failure_reason: if session.online {
            String::new()
        } else {
            session.failure_reason.clone()
        },
        last_attempt: Some(session.at),
    };
    txn.open_table(CONNECTION_HEALTH)?.insert(
        connection.key(),
        encode("connection_health", &health)?.as_slice(),
    )?;

    // A reconnect from a new address writes the small brief only; what the device reports
    // about itself (rarely new) rewrites its record.
    if session.online
        && let Some(ip) = session.peer_ip
        && brief.last_ip != Some(ip)
    {
        brief.last_ip = Some(ip);
        briefs.insert(device.key(), encode("device_briefs", &brief)?.as_slice())?;
    }
    drop(briefs);
    let reported = [session.model, session.os, session.system];
    if reported.iter().flatten().any(|v| !v.is_empty()) {
        let mut record = load_device(txn, device)?;
        let before = record.clone();
        let [model, os, system] = reported;
        for (slot, value) in [
            (&mut record.fields.model, model),
            (&mut record.fields.os, os),
            (&mut record.fields.system, system),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                *slot = value;
            }
        }
        if record != before {
            record.modified = session.at;
            write_device(txn, &record)?;
        }
    }
    Ok(event)
}

impl DevicePlane for KvBackend {
    fn device_location(&self, device: DeviceId) -> Result<Option<Location>> {
        let txn = self.db.begin_read()?;
        let Some(link) = txn
            .open_table(DEVICE_LOCATIONS)?
            .get(device.key())?
            .map(|v| v.value().to_vec())
        else {
            return Ok(None);
        };
        let link: DeviceLocation = decode("device_locations", &link)?;
        get_record(
            &txn.open_table(LOCATIONS)?,
            "locations",
            link.location.key(),
        )
    }

    fn set_device_coordinates(&self, device: DeviceId, point: Point) -> Result<Location> {
        let txn = self.db.begin_write()?;
        let location = {
            let device = load_device(&txn, device)?;
            let mut links = txn.open_table(DEVICE_LOCATIONS)?;
            let mut locations = txn.open_table(LOCATIONS)?;
            let existing = match links.get(device.id.key())?.map(|v| v.value().to_vec()) {
                Some(link) => {
                    let link: DeviceLocation = decode("device_locations", &link)?;
                    get_record::<Location>(&locations, "locations", link.location.key())?
                }
                None => None,
            };
            let now = Timestamp::now();
            let location = match existing {
                Some(mut location) => {
                    location.geometry = Some(Geometry::Point(point));
                    location.modified = now;
                    location
                }
                None => {
                    let location = Location {
                        id: LocationId::new(),
                        organization: device.fields.organization,
                        name: device.fields.name.as_str().to_owned(),
                        kind: LocationType::Outdoor,
                        is_mobile: true,
                        address: String::new(),
                        geometry: Some(Geometry::Point(point)),
                        created: now,
                        modified: now,
                    };
                    let link = DeviceLocation {
                        device: device.id,
                        location: location.id,
                        floorplan: None,
                        indoor: None,
                    };
                    links.insert(
                        device.id.key(),
                        encode("device_locations", &link)?.as_slice(),
                    )?;
                    location
                }
            };
            locations.insert(
                location.id.key(),
                encode("locations", &location)?.as_slice(),
            )?;
            location
        };
        txn.commit()?;
        Ok(location)
    }

    fn create_credentials(&self, fields: CredentialsFields) -> Result<Credentials> {
        let now = Timestamp::now();
        let credentials = Credentials {
            id: CredentialsId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        if let Some(org) = credentials.fields.organization
            && txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none()
        {
            return Err(StoreError::NotFound);
        }
        insert_credentials(&txn, &credentials)?;
        txn.commit()?;
        Ok(credentials)
    }

    fn credentials(&self, id: CredentialsId) -> Result<Option<Credentials>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(CREDENTIALS)?, "credentials", id.key())
    }

    fn update_credentials(
        &self,
        id: CredentialsId,
        fields: CredentialsFields,
    ) -> Result<Credentials> {
        let txn = self.db.begin_write()?;
        let mut credentials: Credentials =
            get_record(&txn.open_table(CREDENTIALS)?, "credentials", id.key())?
                .ok_or(StoreError::NotFound)?;
        let key = created_key(credentials.created, credentials.id.bytes());
        txn.open_table(CREDENTIALS_BY_ORG)?
            .remove(cat(&[&org_prefix(credentials.fields.organization), &key]).as_slice())?;
        credentials.fields = fields;
        credentials.modified = Timestamp::now();
        insert_credentials(&txn, &credentials)?;
        txn.commit()?;
        Ok(credentials)
    }

    fn delete_credentials(&self, id: CredentialsId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let credentials: Credentials =
            get_record(&txn.open_table(CREDENTIALS)?, "credentials", id.key())?
                .ok_or(StoreError::NotFound)?;
        delete_credentials_in(&txn, &credentials)?;
        txn.commit()?;
        Ok(())
    }

    fn list_credentials(&self, scope: &Scope, page: PageRequest) -> Result<Page<Credentials>> {
        let txn = self.db.begin_read()?;
        let keys = visible_keys(&txn.open_table(CREDENTIALS_BY_ORG)?, scope)?;
        let ids = keys.iter().map(id_of).collect();
        page_of(&txn.open_table(CREDENTIALS)?, "credentials", ids, page)
    }

    fn create_connection(
        &self,
        device: DeviceId,
        fields: ConnectionFields,
    ) -> Result<DeviceConnection> {
        let now = Timestamp::now();
        let connection = DeviceConnection {
            id: ConnectionId::new(),
            device,
            fields,
            health: ConnectionHealth::default(),
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        load_device(&txn, device)?;
        insert_connection_in(&txn, &connection)?;
        txn.commit()?;
        Ok(connection)
    }

    fn connection(&self, id: ConnectionId) -> Result<Option<DeviceConnection>> {
        let txn = self.db.begin_read()?;
        let Some(connection) = get_record(&txn.open_table(CONNECTIONS)?, "connections", id.key())?
        else {
            return Ok(None);
        };
        with_health(&txn.open_table(CONNECTION_HEALTH)?, connection).map(Some)
    }

    fn update_connection(
        &self,
        id: ConnectionId,
        fields: ConnectionFields,
    ) -> Result<DeviceConnection> {
        let txn = self.db.begin_write()?;
        let mut connection = load_connection(&txn, id.key())?;
        remove_connection_in(&txn, &connection)?;
        connection.fields = fields;
        connection.modified = Timestamp::now();
        insert_connection_in(&txn, &connection)?;
        txn.commit()?;
        Ok(connection)
    }

    fn delete_connection(&self, id: ConnectionId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let connection = load_connection(&txn, id.key())?;
        remove_connection_in(&txn, &connection)?;
        txn.commit()?;
        Ok(())
    }

    fn list_connections(
        &self,
        device: DeviceId,
        page: PageRequest,
    ) -> Result<Page<DeviceConnection>> {
        let txn = self.db.begin_read()?;
        let ids = ids_under(&txn.open_table(DEVICE_CONNECTIONS)?, &device.bytes())?;
        let mut listed: Page<DeviceConnection> =
            page_of(&txn.open_table(CONNECTIONS)?, "connections", ids, page)?;
        let health = txn.open_table(CONNECTION_HEALTH)?;
        listed.items = listed
            .items
            .into_iter()
            .map(|c| with_health(&health, c))
            .collect::<Result<_>>()?;
        Ok(listed)
    }

    fn record_mqtt_session(&self, device: DeviceId, session: MqttSession) -> Result<()> {
        let txn = self.db.begin_write()?;
        let event = record_session_in(&txn, device, session)?;
        txn.commit()?;
        if let Some(event) = event {
            self.live.announce(event);
        }
        Ok(())
    }

    fn presence_history(
        &self,
        device: DeviceId,
        page: PageRequest,
    ) -> Result<Page<PresenceChange>> {
        let txn = self.db.begin_read()?;
        let history = txn.open_table(PRESENCE_HISTORY)?;
        let ends = (
            presence_end(&history, device, false)?,
            presence_end(&history, device, true)?,
        );
        let (Some(oldest), Some(newest)) = ends else {
            return Ok(Page {
                count: 0,
                items: Vec::new(),
            });
        };
        let count = newest - oldest + 1;
        // Sequences are consecutive: the page is the range of the offset-th newest back, read
        // alone (no walk over the rows before it).
        let mut items = Vec::new();
        if page.offset < count && page.limit > 0 {
            let top = newest - page.offset;
            let bottom = top.saturating_sub(page.limit - 1).max(oldest);
            let (lo, hi) = (presence_key(device, bottom), presence_key(device, top));
            for entry in history.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?.rev() {
                let (_, value) = entry?;
                let row: PresenceRow = decode("presence_history", value.value())?;
                items.push(row.into());
            }
        }
        Ok(Page { count, items })
    }

    fn presence_of(&self, devices: &[DeviceId]) -> Result<Vec<Presence>> {
        // An empty page asks nothing of the database.
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let keys: Vec<u128> = devices.iter().map(DeviceId::key).collect();
        let briefs = txn.open_table(DEVICE_BRIEFS)?;
        let mut known = Vec::new();
        let mut slots = Vec::new();
        for (i, (device, brief)) in devices.iter().zip(briefs.get_many(&keys)?).enumerate() {
            if let Some(brief) = brief {
                let brief: crate::DeviceBrief = decode("device_briefs", brief.value())?;
                known.push((*device, brief.organization));
                slots.push(i);
            }
        }
        let mut out = vec![Presence::default(); devices.len()];
        for (slot, presence) in slots.into_iter().zip(presence_in(&txn, &known)?) {
            out[slot] = presence;
        }
        Ok(out)
    }

    fn record_mqtt_sessions(&self, sessions: Vec<(DeviceId, MqttSession)>) -> Result<()> {
        let txn = self.db.begin_write()?;
        let mut events = Vec::with_capacity(sessions.len());
        for (device, session) in sessions {
            match record_session_in(&txn, device, session) {
                Ok(event) => events.extend(event),
                // A device deleted meanwhile has nothing left to record.
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        txn.commit()?;
        for event in events {
            self.live.announce(event);
        }
        Ok(())
    }

    fn create_command(&self, command: NewCommand) -> Result<Command> {
        let now = Timestamp::now();
        let command = Command {
            id: CommandId::new(),
            device: command.device,
            connection: command.connection,
            kind: command.kind,
            input: command.input,
            output: String::new(),
            status: CommandStatus::InProgress,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        load_device(&txn, command.device)?;
        let key = created_key(command.created, command.id.bytes());
        txn.open_table(COMMANDS)?
            .insert(command.id.key(), encode("commands", &command)?.as_slice())?;
        txn.open_table(DEVICE_COMMANDS)?
            .insert(cat(&[&command.device.bytes(), &key]).as_slice(), ())?;
        txn.open_table(PENDING_COMMANDS)?
            .insert(key.as_slice(), command.device.key())?;
        txn.commit()?;
        Ok(command)
    }

    fn command(&self, id: CommandId) -> Result<Option<Command>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(COMMANDS)?, "commands", id.key())
    }

    fn finish_command(
        &self,
        id: CommandId,
        status: CommandStatus,
        output: String,
    ) -> Result<Option<Command>> {
        let txn = self.db.begin_write()?;
        let finished = {
            let mut table = txn.open_table(COMMANDS)?;
            let Some(mut command) = get_record::<Command>(&table, "commands", id.key())? else {
                return Ok(None);
            };
            if command.status != CommandStatus::InProgress {
                return Ok(None);
            }
            command.status = status;
            command.output = output;
            command.modified = Timestamp::now();
            table.insert(id.key(), encode("commands", &command)?.as_slice())?;
            txn.open_table(PENDING_COMMANDS)?
                .remove(created_key(command.created, command.id.bytes()).as_slice())?;
            command
        };
        let brief = read_brief(&txn.open_table(DEVICE_BRIEFS)?, finished.device)?;
        let event = brief.map(|brief| crate::LiveEvent::Command {
            command: finished.id,
            device: finished.device,
            organization: brief.organization,
            status: finished.status,
            at: finished.modified,
        });
        if let Some(event) = &event {
            super::cluster::carry_live(&txn, event);
        }
        txn.commit()?;
        if let Some(event) = event {
            self.live.announce(event);
        }
        Ok(Some(finished))
    }

    fn list_commands(&self, device: DeviceId, page: PageRequest) -> Result<Page<Command>> {
        let txn = self.db.begin_read()?;
        let ids = ids_under(&txn.open_table(DEVICE_COMMANDS)?, &device.bytes())?;
        page_of(&txn.open_table(COMMANDS)?, "commands", ids, page)
    }

    fn pending_commands(&self, device: Option<DeviceId>) -> Result<Vec<Command>> {
        let txn = self.db.begin_read()?;
        let pending = txn.open_table(PENDING_COMMANDS)?;
        let table = txn.open_table(COMMANDS)?;
        let mut out = Vec::new();
        for entry in pending.iter()? {
            let (key, owner) = entry?;
            if device.is_some_and(|d| d.key() != owner.value()) {
                continue;
            }
            let mut k = [0u8; 24];
            k.copy_from_slice(key.value());
            if let Some(command) = get_record(&table, "commands", id_of(&k))? {
                out.push(command);
            }
        }
        Ok(out)
    }

    fn append_telemetry(
        &self,
        batch: Vec<TelemetrySample>,
        keep_after: Timestamp,
        max_history_bytes: u64,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut history = txn.open_table(TELEMETRY)?;
            let mut latest = txn.open_table(TELEMETRY_LATEST)?;
            let mut sizes = txn.open_table(TELEMETRY_BYTES)?;
            let devices = txn.open_table(DEVICES)?;
            // The batch's devices: which still exist, the time of each one's stored latest
            // sample and its history's size, read together (three statements on PostgreSQL,
            // not three per device).
            let ids: Vec<DeviceId> = batch
                .iter()
                .map(|s| s.device)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let keys: Vec<u128> = ids.iter().map(|d| d.key()).collect();
            let mut known: HashMap<DeviceId, bool> = HashMap::new();
            for (id, found) in ids.iter().zip(devices.get_many(&keys)?) {
                known.insert(*id, found.is_some());
            }
            let mut stored_latest: HashMap<DeviceId, Timestamp> = HashMap::new();
            for (id, found) in ids.iter().zip(latest.get_many(&keys)?) {
                if let Some(current) = found {
                    let sample: TelemetrySample = decode("telemetry_latest", current.value())?;
                    stored_latest.insert(*id, sample.timestamp);
                }
            }
            let mut stored_sizes: HashMap<DeviceId, u64> = HashMap::new();
            for (id, found) in ids.iter().zip(sizes.get_many(&keys)?) {
                if let Some(size) = found {
                    stored_sizes.insert(*id, size.value());
                }
            }
            // Per device of the batch: its newest sample here, and the bytes this batch added
            // to its history.
            let mut newest: HashMap<DeviceId, (Timestamp, Vec<u8>)> = HashMap::new();
            let mut added: HashMap<DeviceId, i64> = HashMap::new();
            for (i, sample) in batch.iter().enumerate() {
                // Samples of devices deleted meanwhile are dropped.
                if known.get(&sample.device) != Some(&true) {
                    continue;
                }
                let sequence =
                    (sample.received.as_micros() as u64).wrapping_mul(1024) + i as u64 % 1024;
                let bytes = encode("telemetry", sample)?;
                // The key is new: the sequence (receive time in µs, then the place in the
                // batch) differs from every earlier sample's, so nothing is replaced and the
                // size only grows. (Not reading first lets PostgreSQL take the batch in one
                // statement.)
                history.insert(
                    telemetry_key(sample.device, sample.timestamp, sequence).as_slice(),
                    bytes.as_slice(),
                )?;
                *added.entry(sample.device).or_default() += size_of(bytes.len());
                match newest.get(&sample.device) {
                    Some((t, _)) if *t > sample.timestamp => {}
                    _ => {
                        newest.insert(sample.device, (sample.timestamp, bytes));
                    }
                }
            }
            for (device, (timestamp, bytes)) in newest {
                let replaces = stored_latest
                    .get(&device)
                    .is_none_or(|current| *current <= timestamp);
                if replaces {
                    latest.insert(device.key(), bytes.as_slice())?;
                }
                let stored = stored_sizes.get(&device).copied();
                let mut size = match stored {
                    Some(size) => {
                        size_of(size as usize) + added.get(&device).copied().unwrap_or_default()
                    }
                    // Counted once, this batch included (a history older than the counter).
                    None => history_bytes(&history, device)?,
                };
                // Retention: history measured before `keep_after` goes.
                let lo = telemetry_key(device, Timestamp::from_micros(0), 0);
                let hi = telemetry_key(device, keep_after, 0);
                let old = keys_and_sizes(
                    history.range::<&[u8]>(lo.as_slice()..hi.as_slice())?,
                    |_| true,
                )?;
                // Size bound: the oldest samples go until the rest fits.
                let mut over = size - size_of(max_history_bytes as usize);
                for (key, len) in &old {
                    history.remove(key.as_slice())?;
                    size -= size_of(*len);
                    over -= size_of(*len);
                }
                if over > 0 {
                    let end = cat(&[&device.bytes(), &[0xffu8; 16]]);
                    let oldest = keys_and_sizes(
                        history.range::<&[u8]>(lo.as_slice()..end.as_slice())?,
                        |len| {
                            let take = over > 0;
                            over -= size_of(len);
                            take
                        },
                    )?;
                    for (key, len) in oldest {
                        history.remove(key.as_slice())?;
                        size -= size_of(len);
                    }
                }
                sizes.insert(device.key(), u64::try_from(size.max(0)).unwrap_or_default())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn latest_telemetry(&self, device: DeviceId) -> Result<Option<TelemetrySample>> {
        let txn = self.db.begin_read()?;
        get_record(
            &txn.open_table(TELEMETRY_LATEST)?,
            "telemetry_latest",
            device.key(),
        )
    }

    fn telemetry_history(
        &self,
        device: DeviceId,
        range: TelemetryRange,
        page: PageRequest,
    ) -> Result<Page<TelemetrySample>> {
        let txn = self.db.begin_read()?;
        let history = txn.open_table(TELEMETRY)?;
        let lo = telemetry_key(device, range.since.unwrap_or(Timestamp::from_micros(0)), 0);
        let hi = match range.until {
            Some(until) => telemetry_key(device, until, 0),
            None => cat(&[&device.bytes(), &[0xffu8; 16]]),
        };
        let mut count = 0u64;
        let mut items = Vec::new();
        for entry in history.range::<&[u8]>(lo.as_slice()..hi.as_slice())?.rev() {
            let (_, value) = entry?;
            if count >= page.offset && (items.len() as u64) < page.limit {
                items.push(decode("telemetry", value.value())?);
            }
            count += 1;
        }
        Ok(Page { count, items })
    }

    fn telemetry_page(
        &self,
        device: DeviceId,
        range: TelemetryRange,
        page: HistoryPageRequest,
    ) -> Result<HistoryPage> {
        let txn = self.db.begin_read()?;
        let history = txn.open_table(TELEMETRY)?;
        let lo = telemetry_key(device, range.since.unwrap_or(Timestamp::from_micros(0)), 0);
        let hi = match range.until {
            Some(until) => telemetry_key(device, until, 0),
            None => cat(&[&device.bytes(), &[0xffu8; 16]]),
        };
        let size = page.size.max(1);
        let (mut number, mut held, mut bytes) = (1u64, 0u64, 0u64);
        let mut out = HistoryPage {
            count: 0,
            items: Vec::new(),
            more: false,
        };
        for entry in history.range::<&[u8]>(lo.as_slice()..hi.as_slice())?.rev() {
            let (_, value) = entry?;
            let len = value.value().len() as u64;
            // A page ends at `size` samples, or before the sample that would take it past
            // `max_bytes`; the next page starts there.
            if held > 0 && (held == size || bytes.saturating_add(len) > page.max_bytes) {
                number += 1;
                held = 0;
                bytes = 0;
            }
            held += 1;
            bytes = bytes.saturating_add(len);
            if number == page.number {
                out.items.push(decode("telemetry", value.value())?);
            } else if number > page.number {
                out.more = true;
            }
            out.count += 1;
        }
        Ok(out)
    }
}
