//! Configuration templates, and the rules that decide which templates a device's configuration
//! carries (OpenWISP's): default templates join a configuration when it is created, required
//! templates are always there, a device group's templates follow the device's group, and a
//! device moved to another organization loses the templates of the old one.
//!
//! The rules are one pure function, [`settle_templates`], so every write that touches a
//! device's templates (a device write, a group's templates changing, a template becoming
//! required) applies them the same way.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{ConfigBackend, OrgId, TemplateId, Timestamp};

/// OpenWISP's template types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateType {
    /// Plain NetJSON.
    Generic,
    /// A VPN client of a VPN server (VPNs arrive with the PKI issue).
    Vpn,
}

impl TemplateType {
    /// Both types.
    pub const ALL: [TemplateType; 2] = [TemplateType::Generic, TemplateType::Vpn];

    /// The name clients send.
    pub fn name(self) -> &'static str {
        match self {
            TemplateType::Generic => "generic",
            TemplateType::Vpn => "vpn",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What a client may set of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateFields {
    /// Unique per organization (and shared names unique everywhere).
    pub name: String,
    /// Owning organization; `None` = shared by every organization.
    pub organization: Option<OrgId>,
    /// Generic or VPN client.
    #[serde(rename = "type")]
    pub kind: TemplateType,
    /// Renderer; a template only joins configurations of the same backend.
    pub backend: ConfigBackend,
    /// VPN server of a VPN-client template.
    pub vpn: Option<Uuid>,
    /// Labels.
    pub tags: Vec<String>,
    /// Added to every configuration created (of its organization, or everywhere if shared).
    pub default: bool,
    /// Always in every configuration of its organization (or everywhere if shared); implies
    /// `default`.
    pub required: bool,
    /// Free text.
    pub notes: String,
    /// Values of the template's variables when nothing else sets them.
    pub default_values: Map<String, Value>,
    /// NetJSON configuration.
    pub config: Map<String, Value>,
}

/// A stored template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Identity.
    pub id: TemplateId,
    /// What clients set.
    pub fields: TemplateFields,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub modified: Timestamp,
}

impl Template {
    /// Whether a device of `org` may use it: the organization's own or a shared one.
    pub fn usable_by(&self, org: OrgId) -> bool {
        self.fields.organization.is_none_or(|o| o == org)
    }
}

/// Which templates a list returns (all conditions must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateFilter {
    /// Renderer.
    pub backend: Option<ConfigBackend>,
    /// Type.
    pub kind: Option<TemplateType>,
    /// Default flag.
    pub default: Option<bool>,
    /// Required flag.
    pub required: Option<bool>,
    /// Created at exactly this instant.
    pub created: Option<Timestamp>,
    /// Created at or after.
    pub created_gte: Option<Timestamp>,
    /// Created before.
    pub created_lt: Option<Timestamp>,
}

impl TemplateFilter {
    /// Whether a template passes.
    pub fn matches(&self, t: &Template) -> bool {
        let f = &t.fields;
        self.backend.is_none_or(|b| f.backend == b)
            && self.kind.is_none_or(|k| f.kind == k)
            && self.default.is_none_or(|d| f.default == d)
            && self.required.is_none_or(|r| f.required == r)
            && self.created.is_none_or(|c| t.created == c)
            && self.created_gte.is_none_or(|c| t.created >= c)
            && self.created_lt.is_none_or(|c| t.created < c)
    }
}

/// What happens to a device's templates in one write, besides the list it starts from.
#[derive(Debug, Clone, Default)]
pub struct TemplateRules<'a> {
    /// The device's organization (after the write).
    pub organization: Option<OrgId>,
    /// The configuration's backend (after the write).
    pub backend: Option<ConfigBackend>,
    /// The configuration is being created: default templates join it.
    pub creating: bool,
    /// The device changed organization: templates of other organizations leave.
    pub organization_changed: bool,
    /// Group templates to take out (the old group's).
    pub group_out: &'a [Uuid],
    /// Group templates to bring in (the new group's), in the group's order.
    pub group_in: &'a [Uuid],
}

/// A device's template list after OpenWISP's rules, from `templates` (what the client asked
/// for, or what the device had). `known` holds every template the list, the groups and the
/// organization's default/required ones name; ids not in it (deleted meanwhile) are dropped.
///
/// Order: the templates the rules add (default and required ones missing from the list,
/// sorted by name) come first, so the device's own choices override them when rendered; then
/// the list as given; then the group's templates it lacked. Group templates of another backend
/// are left out (as OpenWISP does).
pub fn settle_templates(
    templates: &[Uuid],
    known: &HashMap<Uuid, Template>,
    rules: &TemplateRules<'_>,
) -> Vec<Uuid> {
    let backend_matches = |id: &Uuid| {
        known
            .get(id)
            .is_some_and(|t| rules.backend.is_none_or(|b| t.fields.backend == b))
    };
    let mut list: Vec<Uuid> = Vec::with_capacity(templates.len());
    for id in templates {
        let Some(t) = known.get(id) else { continue };
        if rules.organization_changed && rules.organization.is_some_and(|org| !t.usable_by(org)) {
            continue;
        }
        if rules.group_out.contains(id) && !rules.group_in.contains(id) && backend_matches(id) {
            continue;
        }
        if !list.contains(id) {
            list.push(*id);
        }
    }
    for id in rules.group_in {
        if backend_matches(id) && !list.contains(id) {
            list.push(*id);
        }
    }
    let mut automatic: Vec<&Template> = known
        .values()
        .filter(|t| {
            rules.organization.is_some_and(|org| t.usable_by(org))
                && rules.backend.is_none_or(|b| t.fields.backend == b)
                && (t.fields.required || (rules.creating && t.fields.default))
                && !list.contains(&t.id.0)
        })
        .collect();
    automatic.sort_by(|a, b| a.fields.name.cmp(&b.fields.name).then(a.id.cmp(&b.id)));
    automatic.into_iter().map(|t| t.id.0).chain(list).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(name: &str, org: Option<OrgId>, default: bool, required: bool) -> Template {
        Template {
            id: TemplateId::new(),
            fields: TemplateFields {
                name: name.to_owned(),
                organization: org,
                kind: TemplateType::Generic,
                backend: ConfigBackend::OpenWrt,
                vpn: None,
                tags: Vec::new(),
                default,
                required,
                notes: String::new(),
                default_values: Map::new(),
                config: Map::new(),
            },
            created: Timestamp::now(),
            modified: Timestamp::now(),
        }
    }

    fn known(ts: &[&Template]) -> HashMap<Uuid, Template> {
        ts.iter().map(|t| (t.id.0, (*t).clone())).collect()
    }

    #[test]
    fn defaults_join_new_configurations_and_required_ones_every_configuration() {
        let org = OrgId::new();
        let a = template("a", Some(org), false, false);
        let d = template("d", None, true, false);
        let r = template("r", Some(org), true, true);
        let other = template("x", Some(OrgId::new()), true, true);
        let known = known(&[&a, &d, &r, &other]);
        let mut rules = TemplateRules {
            organization: Some(org),
            backend: Some(ConfigBackend::OpenWrt),
            creating: true,
            ..Default::default()
        };
        assert_eq!(
            settle_templates(&[a.id.0], &known, &rules),
            vec![d.id.0, r.id.0, a.id.0]
        );
        rules.creating = false;
        assert_eq!(settle_templates(&[], &known, &rules), vec![r.id.0]);
        // The given order is kept.
        assert_eq!(
            settle_templates(&[a.id.0, r.id.0, d.id.0], &known, &rules),
            vec![a.id.0, r.id.0, d.id.0]
        );
    }

    #[test]
    fn group_templates_are_swapped_and_other_organizations_templates_leave_on_a_move() {
        let org = OrgId::new();
        let old_org = OrgId::new();
        let mine = template("mine", Some(old_org), false, false);
        let g1 = template("g1", Some(org), false, false);
        let g2 = template("g2", None, false, false);
        let known = known(&[&mine, &g1, &g2]);
        let rules = TemplateRules {
            organization: Some(org),
            backend: Some(ConfigBackend::OpenWrt),
            organization_changed: true,
            group_out: &[g1.id.0],
            group_in: &[g2.id.0],
            ..Default::default()
        };
        assert_eq!(
            settle_templates(&[mine.id.0, g1.id.0, Uuid::new_v4()], &known, &rules),
            vec![g2.id.0]
        );
    }
}
