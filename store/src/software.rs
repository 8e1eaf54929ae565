//! Application software (OTAO): a catalogue of versions per application, a compatibility
//! graph between them (`upgradable_from`), rollout strategies, endpoint filters, what each
//! device runs, and the installations that move it — and [`next_hop`], the one rule deciding
//! what a device is offered.
//!
//! An *application* belongs to an organization and is named by its `app_name`; each published
//! [`Software`] is one semantic version of it. An *endpoint* is a device. A device runs one
//! version of each application it reports ([`DeviceSoftware`]). The server moves it along the
//! graph one hop at a time: an [`Installation`] is one hop (`from` → `version`), driven by the
//! bridge's rollout engine like a firmware upgrade operation, and the device's current version
//! changes only when it reports the hop installed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rollout::Rollout;
use crate::upgrade::{StatusCounts, UpgradeStatus};
use crate::{
    Device, DeviceId, FilterId, GroupId, InstallationId, LocationId, OrgId, SoftwareId, Timestamp,
};

/// The most characters of an application name (the wire's bound).
pub const APP_NAME_MAX_CHARS: usize = fleetmq_protocol::software::APP_NAME_MAX_CHARS;

/// Whether `name` may name an application: 1 to [`APP_NAME_MAX_CHARS`] characters, none of
/// them `/`, whitespace or a control character (it is a URL path segment and a JSON key on
/// the wire).
pub fn valid_app_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=APP_NAME_MAX_CHARS).contains(&chars)
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

/// Who receives a software version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStrategy {
    /// Nobody new receives it; installations already under way finish.
    Suspended,
    /// Endpoints matching one of the filters whose rollout date has passed.
    Targeted,
    /// Every endpoint the compatibility graph leads to it.
    General,
}

impl RolloutStrategy {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStrategy::Suspended => "suspended",
            RolloutStrategy::Targeted => "targeted",
            RolloutStrategy::General => "general",
        }
    }
}

impl fmt::Display for RolloutStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RolloutStrategy {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RolloutStrategy::Suspended,
            RolloutStrategy::Targeted,
            RolloutStrategy::General,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or(())
    }
}

/// A filter of a targeted rollout and when it takes effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterActivation {
    /// The filter (of the software's organization).
    pub filter: FilterId,
    /// From when its endpoints are eligible; none: at once.
    pub rollout_date: Option<Timestamp>,
}

impl FilterActivation {
    /// Whether the filter is in effect at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.rollout_date.is_none_or(|date| date <= now)
    }
}

/// What an operator writes about a software version. The specification is fixed once
/// published: updates keep the stored one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftwareFields {
    /// Delivered to the endpoint as is.
    pub specification: Value,
    /// Anything the operator keeps with it (shown in consent offers).
    pub metadata: Value,
    /// Versions an endpoint may move to this one from (edges of the graph).
    pub upgradable_from: Vec<Version>,
    /// Who receives it.
    pub rollout_strategy: RolloutStrategy,
    /// The targeted strategy's filters.
    pub filters: Vec<FilterActivation>,
    /// The rollout engine's limits for its installations (devices at once, starts per
    /// minute, abort threshold). Waves are not used: a targeted rollout's waves are its
    /// filters' rollout dates.
    pub rollout: Rollout,
}

/// One published version of an application's software.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Software {
    /// Identity.
    pub id: SoftwareId,
    /// The application's organization.
    pub organization: OrgId,
    /// The application.
    pub app_name: String,
    /// Unique per application.
    pub version: Version,
    /// What the operator wrote.
    pub fields: SoftwareFields,
    /// Installations of this version per status, kept with every installation change.
    pub counts: StatusCounts,
    /// Why its rollout was suspended by the engine (abort threshold), if it was.
    pub note: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

impl Software {
    /// Whether `endpoint` may receive this version now, as far as strategy and filters go.
    pub fn open_to(&self, endpoint: &Endpoint, filters: &HashMap<FilterId, FilterQuery>) -> bool {
        self.open_at(endpoint, filters, Timestamp::now())
    }

    /// [`Software::open_to`] at `now`.
    pub fn open_at(
        &self,
        endpoint: &Endpoint,
        filters: &HashMap<FilterId, FilterQuery>,
        now: Timestamp,
    ) -> bool {
        match self.fields.rollout_strategy {
            RolloutStrategy::Suspended => false,
            RolloutStrategy::General => true,
            RolloutStrategy::Targeted => self.fields.filters.iter().any(|activation| {
                activation.active(now)
                    && filters
                        .get(&activation.filter)
                        .is_some_and(|query| query.matches(endpoint))
            }),
        }
    }

    /// The next instant one of its filters takes effect, after `now`.
    pub fn next_rollout_date(&self, now: Timestamp) -> Option<Timestamp> {
        if self.fields.rollout_strategy != RolloutStrategy::Targeted {
            return None;
        }
        self.fields
            .filters
            .iter()
            .filter_map(|a| a.rollout_date)
            .filter(|date| *date > now)
            .min()
    }
}

/// An application's settings beyond its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Its organization.
    pub organization: OrgId,
    /// Its name.
    pub name: String,
    /// The device must accept an offer before the software is delivered.
    pub consent_required: bool,
    /// When it was created (its first software, or its settings).
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// A named query over devices: every criterion given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterQuery {
    /// Devices of this group.
    pub group: Option<GroupId>,
    /// Devices placed at this location.
    pub location: Option<LocationId>,
    /// Devices of this model (exact).
    pub model: Option<String>,
    /// Devices running this operating system (exact).
    pub os: Option<String>,
    /// Devices with this hardware id (exact).
    pub hardware_id: Option<String>,
    /// Devices whose metadata (configuration variables) hold each key with this value.
    pub metadata: BTreeMap<String, String>,
    /// Only these devices (empty: any).
    pub devices: Vec<DeviceId>,
}

impl FilterQuery {
    /// Whether `endpoint` matches.
    pub fn matches(&self, endpoint: &Endpoint) -> bool {
        let device = &endpoint.device;
        let fields = &device.fields;
        let text =
            |wanted: &Option<String>, have: &str| wanted.as_deref().is_none_or(|w| w == have);
        self.group.is_none_or(|g| fields.group == Some(g.0))
            && self.location.is_none_or(|l| endpoint.location == Some(l))
            && text(&self.model, &fields.model)
            && text(&self.os, &fields.os)
            && text(&self.hardware_id, &fields.hardware_id)
            && (self.devices.is_empty() || self.devices.contains(&device.id))
            && self
                .metadata
                .iter()
                .all(|(key, value)| endpoint.metadata(key).is_some_and(|have| have == *value))
    }
}

/// What an operator writes about a filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterFields {
    /// Its organization: it selects only that organization's devices.
    pub organization: OrgId,
    /// A name for people.
    pub name: String,
    /// The query.
    pub query: FilterQuery,
}

/// An endpoint filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFilter {
    /// Identity (the seed's `filterId`).
    pub id: FilterId,
    /// What the operator wrote.
    pub fields: FilterFields,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

/// The version of one application a device runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSoftware {
    /// The device.
    pub device: DeviceId,
    /// The application.
    pub app_name: String,
    /// The version it runs, as reported (not necessarily a published one, nor semantic).
    pub version: String,
    /// When it last changed.
    pub modified: Timestamp,
}

/// A device as the decision sees it: its fields, where it is, what it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The device.
    pub device: Device,
    /// Where it is placed, if anywhere.
    pub location: Option<LocationId>,
    /// Application → version it runs.
    pub software: BTreeMap<String, String>,
}

impl Endpoint {
    /// The device's metadata value for `key`: its configuration variable, as text.
    pub fn metadata(&self, key: &str) -> Option<String> {
        let value = self.device.config.as_ref()?.fields.context.get(key)?;
        Some(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Where the rollout engine stands with an installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallStep {
    /// Waiting for its turn (rollout limits, backoff) or for the device to come online.
    Queued,
    /// Offered for consent; waiting for the device to accept.
    Offered,
    /// Delivered; waiting for the device to start installing.
    Delivering,
    /// The device installs it.
    Installing,
    /// Finished (any final status).
    Done,
}

/// One device's move of one application from `from` to `version`: one hop of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installation {
    /// Identity; the wire's operation id.
    pub id: InstallationId,
    /// The device.
    pub device: DeviceId,
    /// The device's organization.
    pub organization: OrgId,
    /// The software installed.
    pub software: SoftwareId,
    /// Its application.
    pub app_name: String,
    /// The version the device ran when it was planned.
    pub from: String,
    /// The version installed.
    pub version: Version,
    /// The software's specification, delivered as is.
    pub specification: Value,
    /// The software's metadata, shown in a consent offer.
    pub metadata: Value,
    /// The device must accept an offer first.
    pub consent: bool,
    /// Outcome so far (the upgrade operations' values; a declined offer is `cancelled`).
    pub status: UpgradeStatus,
    /// Where the engine stands.
    pub step: InstallStep,
    /// Recoverable failures (no answer in time) so far.
    pub attempt: u32,
    /// Do not send anything before this instant (retry backoff).
    pub not_before: Option<Timestamp>,
    /// The current step fails (or is retried) if not over by then.
    pub deadline: Option<Timestamp>,
    /// What happened, one line per event.
    pub log: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it last changed.
    pub modified: Timestamp,
}

impl Installation {
    /// A queued installation of `software` on `endpoint`, which runs `from`.
    pub fn new(
        endpoint: &Device,
        software: &Software,
        from: &str,
        consent: bool,
        now: Timestamp,
    ) -> Installation {
        Installation {
            id: InstallationId::new(),
            device: endpoint.id,
            organization: endpoint.fields.organization,
            software: software.id,
            app_name: software.app_name.clone(),
            from: from.to_owned(),
            version: software.version.clone(),
            specification: software.fields.specification.clone(),
            metadata: software.fields.metadata.clone(),
            consent,
            status: UpgradeStatus::InProgress,
            step: InstallStep::Queued,
            attempt: 0,
            not_before: None,
            deadline: None,
            log: format!("{} {from} → {} queued", software.app_name, software.version),
            created: now,
            modified: now,
        }
    }

    /// Appends a line to the log and touches `modified`.
    pub fn note(&mut self, line: impl AsRef<str>, now: Timestamp) {
        if !self.log.is_empty() {
            self.log.push('\n');
        }
        self.log.push_str(line.as_ref());
        self.modified = now;
    }

    /// Ends it with `status`.
    pub fn finish(&mut self, status: UpgradeStatus, line: impl AsRef<str>, now: Timestamp) {
        self.status = status;
        self.step = InstallStep::Done;
        self.deadline = None;
        self.not_before = None;
        self.note(line, now);
    }

    /// Whether the engine may still stop it (the device has not begun installing).
    pub fn stoppable(&self) -> bool {
        self.status == UpgradeStatus::InProgress
            && matches!(
                self.step,
                InstallStep::Queued | InstallStep::Offered | InstallStep::Delivering
            )
    }
}

/// A hop the device tried and that should not be offered again by itself: it failed or the
/// device declined it, and the software has not changed since.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusedHop {
    /// The device.
    pub device: DeviceId,
    /// The software it failed or declined.
    pub software: SoftwareId,
    /// When.
    pub at: Timestamp,
}

/// Everything deciding one organization's installations takes, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoftwareView {
    /// Every software version of the organization.
    pub catalogue: Vec<Software>,
    /// Applications' settings, by name (an application without settings asks no consent).
    pub applications: HashMap<String, Application>,
    /// The organization's filters' queries.
    pub filters: HashMap<FilterId, FilterQuery>,
    /// Its active (not deactivated) devices.
    pub endpoints: Vec<Endpoint>,
    /// Installations in progress.
    pub in_progress: Vec<Installation>,
    /// Hops devices failed or declined, at most one (the latest) per device and software.
    pub refused: Vec<RefusedHop>,
}

/// The next hop an endpoint running `current` of an application should take, and the version
/// it leads to: of the versions reachable from `current` along `upgradable_from` edges
/// through versions open to the endpoint (`open`), the highest one above `current`, reached
/// by a shortest path (ties: the lowest next version). `catalogue` holds the application's
/// versions. A cycle in the graph is walked once.
///
/// Returns `(next, target)`; `next == target` for a single hop.
pub fn next_hop<'a>(
    catalogue: &'a [Software],
    current: &str,
    open: impl Fn(&Software) -> bool,
) -> Option<(&'a Software, &'a Software)> {
    let current_version = Version::parse(current).ok();
    // Edges: from a version (as text, so an endpoint on an unpublished version still finds
    // the versions that name it) to the software that may follow it.
    let mut next_of: HashMap<String, Vec<&Software>> = HashMap::new();
    for software in catalogue.iter().filter(|s| open(s)) {
        for from in &software.fields.upgradable_from {
            next_of.entry(from.to_string()).or_default().push(software);
        }
    }
    for list in next_of.values_mut() {
        list.sort_by(|a, b| a.version.cmp(&b.version));
    }
    let start = match &current_version {
        Some(v) => v.to_string(),
        None => current.to_owned(),
    };
    // Breadth-first: the first hop of the path each version was reached by.
    let mut first_hop: HashMap<&Version, &Software> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::from([start.clone()]);
    let mut queue: VecDeque<(String, Option<&Software>)> = VecDeque::from([(start, None)]);
    while let Some((at, hop)) = queue.pop_front() {
        for next in next_of.get(&at).into_iter().flatten() {
            let key = next.version.to_string();
            if !seen.insert(key.clone()) {
                continue;
            }
            let hop = hop.unwrap_or(next);
            first_hop.insert(&next.version, hop);
            queue.push_back((key, Some(hop)));
        }
    }
    let target = catalogue
        .iter()
        .filter(|s| first_hop.contains_key(&s.version))
        .filter(|s| current_version.as_ref().is_none_or(|c| s.version > *c))
        .max_by(|a, b| a.version.cmp(&b.version))?;
    Some((first_hop[&target.version], target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceFields, DeviceKey, DeviceName, MacAddress};

    fn software(version: &str, from: &[&str], strategy: RolloutStrategy) -> Software {
        Software {
            id: SoftwareId::new(),
            organization: OrgId::new(),
            app_name: "kettle".into(),
            version: Version::parse(version).unwrap(),
            fields: SoftwareFields {
                specification: Value::Null,
                metadata: Value::Null,
                upgradable_from: from.iter().map(|v| Version::parse(v).unwrap()).collect(),
                rollout_strategy: strategy,
                filters: Vec::new(),
                rollout: Rollout::default(),
            },
            counts: StatusCounts::default(),
            note: String::new(),
            created: Timestamp::now(),
            modified: Timestamp::now(),
        }
    }

    fn general(version: &str, from: &[&str]) -> Software {
        software(version, from, RolloutStrategy::General)
    }

    fn hop(catalogue: &[Software], current: &str) -> Option<(String, String)> {
        next_hop(catalogue, current, |s| {
            s.fields.rollout_strategy != RolloutStrategy::Suspended
        })
        .map(|(next, target)| (next.version.to_string(), target.version.to_string()))
    }

    #[test]
    fn a_three_hop_path_is_walked_one_hop_at_a_time_towards_the_highest_version() {
        let catalogue = [
            general("1.1.0", &["1.0.0"]),
            general("1.2.0", &["1.1.0"]),
            general("2.0.0", &["1.2.0"]),
            general("1.5.0", &["9.9.9"]),
        ];
        assert_eq!(
            hop(&catalogue, "1.0.0"),
            Some(("1.1.0".into(), "2.0.0".into()))
        );
        assert_eq!(
            hop(&catalogue, "1.1.0"),
            Some(("1.2.0".into(), "2.0.0".into()))
        );
        assert_eq!(
            hop(&catalogue, "1.2.0"),
            Some(("2.0.0".into(), "2.0.0".into()))
        );
        assert_eq!(hop(&catalogue, "2.0.0"), None);
        // Not on any edge: nothing to offer.
        assert_eq!(hop(&catalogue, "0.9.0"), None);
    }

    #[test]
    fn a_shortcut_beats_the_long_way_and_ties_take_the_lowest_next_version() {
        let catalogue = [
            general("1.1.0", &["1.0.0"]),
            general("1.2.0", &["1.0.0"]),
            general("2.0.0", &["1.1.0", "1.2.0"]),
            general("3.0.0", &["2.0.0", "1.0.0"]),
        ];
        assert_eq!(
            hop(&catalogue, "1.0.0"),
            Some(("3.0.0".into(), "3.0.0".into()))
        );
        let no_shortcut = &catalogue[..3];
        assert_eq!(
            hop(no_shortcut, "1.0.0"),
            Some(("1.1.0".into(), "2.0.0".into()))
        );
    }

    #[test]
    fn a_cycle_is_walked_once_and_never_leads_down() {
        let catalogue = [
            general("1.0.0", &["2.0.0"]),
            general("2.0.0", &["1.0.0", "3.0.0"]),
            general("3.0.0", &["2.0.0"]),
        ];
        assert_eq!(
            hop(&catalogue, "1.0.0"),
            Some(("2.0.0".into(), "3.0.0".into()))
        );
        assert_eq!(hop(&catalogue, "3.0.0"), None);
        let self_loop = [general("1.0.0", &["1.0.0"])];
        assert_eq!(hop(&self_loop, "1.0.0"), None);
    }

    #[test]
    fn a_suspended_version_is_neither_a_target_nor_a_stepping_stone() {
        let catalogue = [
            software("1.1.0", &["1.0.0"], RolloutStrategy::Suspended),
            general("2.0.0", &["1.1.0"]),
            general("1.0.5", &["1.0.0"]),
        ];
        assert_eq!(
            hop(&catalogue, "1.0.0"),
            Some(("1.0.5".into(), "1.0.5".into()))
        );
        // In-flight hops are not the decision's business: an endpoint already on 1.1.0 goes on.
        assert_eq!(
            hop(&catalogue, "1.1.0"),
            Some(("2.0.0".into(), "2.0.0".into()))
        );
    }

    fn endpoint(model: &str) -> Endpoint {
        let org = OrgId::new();
        Endpoint {
            device: Device {
                id: DeviceId::new(),
                fields: DeviceFields {
                    name: DeviceName::parse("d1").unwrap(),
                    organization: org,
                    group: None,
                    mac_address: MacAddress::parse("00:11:22:33:44:55").unwrap(),
                    key: DeviceKey::generate(),
                    last_ip: None,
                    management_ip: None,
                    model: model.into(),
                    os: String::new(),
                    system: String::new(),
                    notes: String::new(),
                    hardware_id: String::new(),
                },
                config: None,
                is_deactivated: false,
                created: Timestamp::now(),
                modified: Timestamp::now(),
            },
            location: None,
            software: BTreeMap::new(),
        }
    }

    #[test]
    fn a_targeted_version_opens_to_matching_endpoints_once_a_filter_date_passed() {
        let now = Timestamp::now();
        let later = Timestamp::from_micros(now.as_micros() + 10_000_000);
        let (kettles, lamps) = (FilterId::new(), FilterId::new());
        let filters = HashMap::from([
            (
                kettles,
                FilterQuery {
                    model: Some("kettle".into()),
                    ..FilterQuery::default()
                },
            ),
            (
                lamps,
                FilterQuery {
                    model: Some("lamp".into()),
                    ..FilterQuery::default()
                },
            ),
        ]);
        let mut targeted = software("1.1.0", &["1.0.0"], RolloutStrategy::Targeted);
        targeted.fields.filters = vec![
            FilterActivation {
                filter: kettles,
                rollout_date: Some(now),
            },
            FilterActivation {
                filter: lamps,
                rollout_date: Some(later),
            },
        ];
        let (kettle, lamp, fan) = (endpoint("kettle"), endpoint("lamp"), endpoint("fan"));
        assert!(targeted.open_at(&kettle, &filters, now));
        assert!(!targeted.open_at(&lamp, &filters, now));
        assert!(targeted.open_at(&lamp, &filters, later));
        assert!(!targeted.open_at(&fan, &filters, later));
        assert_eq!(targeted.next_rollout_date(now), Some(later));
        assert_eq!(targeted.next_rollout_date(later), None);
        // An unknown (deleted) filter matches nobody.
        assert!(!targeted.open_at(&kettle, &HashMap::new(), now));
        targeted.fields.rollout_strategy = RolloutStrategy::General;
        assert!(targeted.open_at(&fan, &filters, now));
        assert_eq!(targeted.next_rollout_date(now), None);
    }

    #[test]
    fn filters_and_every_given_criterion() {
        let mut ep = endpoint("kettle");
        let query = FilterQuery {
            model: Some("kettle".into()),
            metadata: BTreeMap::from([("region".into(), "eu".into())]),
            ..FilterQuery::default()
        };
        assert!(!query.matches(&ep), "no metadata yet");
        let Value::Object(context) = serde_json::json!({"region": "eu"}) else {
            unreachable!()
        };
        ep.device.config = Some(crate::DeviceConfig {
            fields: crate::ConfigFields {
                backend: crate::ConfigBackend::OpenWrt,
                templates: Vec::new(),
                context,
                config: serde_json::Map::new(),
            },
            status: crate::ConfigStatus::Modified,
            error_reason: String::new(),
            checksum: String::new(),
        });
        assert!(query.matches(&ep));
        let only_other = FilterQuery {
            devices: vec![DeviceId::new()],
            ..query.clone()
        };
        assert!(!only_other.matches(&ep));
        let this_one = FilterQuery {
            devices: vec![ep.device.id],
            ..query
        };
        assert!(this_one.matches(&ep));
        assert!(valid_app_name("smart-kettle"));
        assert!(!valid_app_name("a/b") && !valid_app_name("") && !valid_app_name("a b"));
    }
}
