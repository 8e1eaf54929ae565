//! Who may publish, subscribe and read where. Pure functions, so the broker, tests and docs
//! agree.
//!
//! Reading is judged **per message**: a subscription only decides which messages are looked
//! at, [`Principal::may_read`] decides, for each message, whether it is delivered. So a
//! subscription is granted when the filter *could* match a topic the principal may read
//! (`#` for a sandbox client, `fleetmq/v1/+/+/up/telemetry` for an operator), and refused only
//! when it never could (a device outside its own `down/`, a sandbox client's `fleetmq/#`).
//! A device keeps the stricter *containment* rule (every topic the filter could match must be
//! its own): its subscriptions are served by the broker's front end, not per message.
//!
//! | principal | publish | read (per message) | subscribe |
//! |-----------|---------|--------------------|-----------|
//! | `Device`  | strictly under its own `fleetmq/v1/{org}/{device}/up/` | its own `.../down/…` | filters contained in its own `.../down/#` |
//! | `Operator` (`Managed`) | outside `fleetmq/` and not `$…` | `fleetmq/v1/{org}/…` of a managed org | filters that could match such a topic |
//! | `Operator` (`All`) | outside `fleetmq/` and not `$…` | everything, `$…` topics too | any valid filter |
//! | `Anonymous` | outside `fleetmq/` and not `$…` | outside `fleetmq/` and not `$…` | filters that could match such a topic |
//!
//! Shared subscriptions `$share/{group}/{filter}` are judged by their inner filter. A filter
//! in `fleetmq/v1/` whose device level is neither a wildcard nor a [`DeviceId`] is refused
//! for everyone. Filters starting with `+` or `#` never match `$…` topics
//! ([`matches`](crate::topic::matches), MQTT 3.1.1 §4.7.2).

use crate::DeviceId;
use crate::topic::{ROOT, VERSION, is_valid_filter, is_valid_level, is_valid_topic_name};

/// The authenticated identity of an MQTT connection, as decided by the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A registered device; its MQTT client id must be `device_id`.
    Device {
        /// Slug of the device's organization (one topic level).
        org_slug: String,
        /// The device (its topics' device level).
        device_id: DeviceId,
    },
    /// A human or service account that watches devices read-only.
    Operator {
        /// Which organizations the operator may watch.
        orgs: OrgScope,
    },
    /// A client without username, only admitted when the sandbox is enabled.
    Anonymous,
}

/// The organizations an operator may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgScope {
    /// Only these org slugs.
    Managed(Vec<String>),
    /// Every org, plus `#` and `$SYS`: a superuser.
    All,
}

impl Principal {
    /// Whether this principal may PUBLISH to topic name `topic`. Invalid topic names (empty,
    /// wildcards) and `$`-topics are refused for everyone.
    pub fn may_publish(&self, topic: &str) -> bool {
        if !is_valid_topic_name(topic) || topic.starts_with('$') {
            return false;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        match self {
            Principal::Device {
                org_slug,
                device_id,
            } => {
                is_own_prefix(&levels, org_slug, *device_id, "up")
                    && levels.len() > PREFIX_LEVELS
                    && levels[PREFIX_LEVELS..].iter().all(|l| !l.is_empty())
            }
            Principal::Operator { .. } | Principal::Anonymous => levels[0] != ROOT,
        }
    }

    /// Whether a message on topic name `topic` may be delivered to this principal. Checked
    /// for every message a subscription matches, and again when a queued message is sent.
    pub fn may_read(&self, topic: &str) -> bool {
        if !is_valid_topic_name(topic) {
            return false;
        }
        match self {
            Principal::Device {
                org_slug,
                device_id,
            } => {
                let levels: Vec<&str> = topic.split('/').collect();
                is_own_prefix(&levels, org_slug, *device_id, "down") && levels.len() > PREFIX_LEVELS
            }
            Principal::Operator {
                orgs: OrgScope::All,
            } => true,
            Principal::Operator {
                orgs: OrgScope::Managed(orgs),
            } => {
                let mut levels = topic.split('/');
                levels.next() == Some(ROOT)
                    && levels.next() == Some(VERSION)
                    && levels
                        .next()
                        .is_some_and(|org| orgs.iter().any(|o| o == org && is_valid_level(o)))
            }
            Principal::Anonymous => {
                !topic.starts_with('$') && topic.split('/').next() != Some(ROOT)
            }
        }
    }

    /// Whether this principal may SUBSCRIBE to `filter`. Devices: every topic the filter can
    /// match must be readable (containment). Everyone else: the filter must be able to match
    /// at least one readable topic; what it delivers is then judged per message
    /// ([`may_read`](Self::may_read)). Invalid filters are refused.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.judge_filter(filter, Self::could_read_some)
    }

    /// [`may_subscribe`](Self::may_subscribe)'s rule on a valid, unshared filter's levels.
    fn could_read_some(&self, levels: &[&str]) -> bool {
        match self {
            Principal::Device {
                org_slug,
                device_id,
            } => is_own_prefix(levels, org_slug, *device_id, "down"),
            Principal::Operator {
                orgs: OrgScope::All,
            } => true,
            Principal::Operator {
                orgs: OrgScope::Managed(orgs),
            } => {
                let managed = |level: &str| orgs.iter().any(|o| o == level && is_valid_level(o));
                let expected: [&dyn Fn(&str) -> bool; 3] =
                    [&|l| l == ROOT, &|l| l == VERSION, &managed];
                if !orgs.iter().any(|o| is_valid_level(o)) {
                    return false;
                }
                for (i, literal) in expected.iter().enumerate() {
                    match levels.get(i).copied() {
                        // The filter ends above the organization level: it matches no
                        // organization's topic.
                        None => return false,
                        Some("#") => return true,
                        Some("+") => {}
                        Some(level) if literal(level) => {}
                        Some(_) => return false,
                    }
                }
                true
            }
            // `+` and `#` at level 0 can match sandbox topics (never `$…` ones); a literal
            // `fleetmq` or `$…` first level cannot.
            Principal::Anonymous => levels[0] != ROOT && !levels[0].starts_with('$'),
        }
    }

    /// Whether this principal may SUBSCRIBE to `filter` on a broker that checks filters but
    /// not the messages they deliver (an external broker asking fleetmq's auth service):
    /// every topic the filter can match must be readable, for everyone, as for devices here.
    /// So an operator's filter names one of their organizations literally
    /// (`fleetmq/v1/acme/#`, not `fleetmq/v1/+/…`), and a sandbox filter's first level is a
    /// literal outside `fleetmq` and `$…`. A superuser may subscribe to anything.
    pub fn may_subscribe_contained(&self, filter: &str) -> bool {
        self.judge_filter(filter, Self::reads_all)
    }

    /// [`may_subscribe_contained`](Self::may_subscribe_contained)'s rule on a valid, unshared
    /// filter's levels.
    fn reads_all(&self, levels: &[&str]) -> bool {
        match self {
            Principal::Device {
                org_slug,
                device_id,
            } => is_own_prefix(levels, org_slug, *device_id, "down"),
            Principal::Operator {
                orgs: OrgScope::All,
            } => true,
            Principal::Operator {
                orgs: OrgScope::Managed(orgs),
            } => {
                levels.len() >= 3
                    && levels[0] == ROOT
                    && levels[1] == VERSION
                    && orgs.iter().any(|o| o == levels[2] && is_valid_level(o))
            }
            Principal::Anonymous => {
                !matches!(levels[0], "+" | "#") && levels[0] != ROOT && !levels[0].starts_with('$')
            }
        }
    }

    /// What both subscription rules share: invalid filters and filters naming something that
    /// is not a device are refused, a shared subscription is judged by its inner filter,
    /// anything else by `rule` on its levels.
    fn judge_filter(&self, filter: &str, rule: fn(&Self, &[&str]) -> bool) -> bool {
        if !is_valid_filter(filter) {
            return false;
        }
        if let Some(shared) = shared_inner(filter) {
            return shared.is_some_and(|inner| self.judge_filter(inner, rule));
        }
        let levels: Vec<&str> = filter.split('/').collect();
        !names_invalid_device(&levels) && rule(self, &levels)
    }
}

/// For a shared subscription `$share/{group}/{filter}`: `Some(Some(filter))`, or `Some(None)`
/// when it is malformed (empty or wildcard group, nested share). `None` for other filters.
fn shared_inner(filter: &str) -> Option<Option<&str>> {
    let rest = filter.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((group, inner))
            if !group.is_empty()
                && !group.contains(['+', '#'])
                && !inner.starts_with("$share/") =>
        {
            Some(inner)
        }
        _ => None,
    })
}

/// Levels of a device's own prefix, `fleetmq/v1/{org}/{device}/{up|down}`.
const PREFIX_LEVELS: usize = 5;

/// Whether `levels` start with the device's own `fleetmq/v1/{org}/{device}/{direction}`, each
/// level literally. A principal whose org is not a single plain level gets nothing: comparing
/// levels literally would otherwise treat an org of `+` as a wildcard match.
fn is_own_prefix(levels: &[&str], org_slug: &str, device_id: DeviceId, direction: &str) -> bool {
    is_valid_level(org_slug)
        && levels.len() >= PREFIX_LEVELS
        && levels[0] == ROOT
        && levels[1] == VERSION
        && levels[2] == org_slug
        && device_id.is(levels[3])
        && levels[4] == direction
}

/// Whether a topic or filter of this contract names its device level with something that is
/// not a device id: it could only ever address nobody, so it is refused rather than allowed
/// to match nothing.
fn names_invalid_device(levels: &[&str]) -> bool {
    levels.first() == Some(&ROOT)
        && levels.get(1) == Some(&VERSION)
        && levels
            .get(3)
            .is_some_and(|l| !matches!(*l, "+" | "#") && l.parse::<DeviceId>().is_err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{DownChannel, Topic, UpChannel};

    /// The devices the tables below call `d1` and `d2`.
    const D1: &str = "00000000-0000-4000-8000-0000000000d1";
    const D2: &str = "00000000-0000-4000-8000-0000000000d2";

    /// A topic or filter of the tables below with `d1`/`d2` levels written as the device ids.
    fn ids(s: &str) -> String {
        s.split('/')
            .map(|level| match level {
                "d1" => D1,
                "d2" => D2,
                other => other,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn device(org: &str, id: &str) -> Principal {
        Principal::Device {
            org_slug: org.into(),
            device_id: ids(id).parse().unwrap(),
        }
    }

    fn operator(orgs: &[&str]) -> Principal {
        Principal::Operator {
            orgs: OrgScope::Managed(orgs.iter().map(|o| o.to_string()).collect()),
        }
    }

    fn superuser() -> Principal {
        Principal::Operator {
            orgs: OrgScope::All,
        }
    }

    #[test]
    fn device_publishes_only_strictly_under_its_own_up_prefix() {
        let d = device("acme", "d1");
        for channel in UpChannel::ALL {
            assert!(d.may_publish(&ids(&Topic::up("acme", "d1", channel).to_string())));
        }
        let refused = [
            "fleetmq/v1/acme/d1/up",
            "fleetmq/v1/acme/d1/up/",
            "fleetmq/v1/acme/d1/up//x",
            "fleetmq/v1/acme/d1/upx/telemetry",
            "fleetmq/v1/acme/d1/down/error",
            "fleetmq/v1/acme/d2/up/telemetry",
            "fleetmq/v1/other/d1/up/telemetry",
            "fleetmq/v2/acme/d1/up/telemetry",
            "fleetmq/v1/acme/d1/up/+",
            "fleetmq/v1/acme/d1/up/#",
            "fleetmq/v1/acme/+/up/telemetry",
            "test/x",
            "$SYS/x",
            "",
        ];
        for topic in refused {
            assert!(!d.may_publish(&ids(topic)), "{topic}");
        }
        for channel in DownChannel::ALL {
            assert!(!d.may_publish(&ids(&Topic::down("acme", "d1", channel).to_string())));
        }
    }

    #[test]
    fn device_subscribes_only_to_filters_contained_in_its_own_down_tree() {
        let d = device("acme", "d1");
        for ok in [
            "fleetmq/v1/acme/d1/down/#",
            "fleetmq/v1/acme/d1/down/+",
            "fleetmq/v1/acme/d1/down/command/request",
            "fleetmq/v1/acme/d1/down/+/request",
            "fleetmq/v1/acme/d1/down",
            "$share/g/fleetmq/v1/acme/d1/down/#",
        ] {
            assert!(d.may_subscribe(&ids(ok)), "{ok}");
        }
        for refused in [
            "#",
            "+",
            "fleetmq/#",
            "fleetmq/+/acme/d1/down/#",
            "fleetmq/v1/#",
            "fleetmq/v1/+/+/down/#",
            "fleetmq/v1/acme/+/down/#",
            "fleetmq/v1/+/d1/down/#",
            "fleetmq/v1/acme/#",
            "fleetmq/v1/acme/d1/#",
            "fleetmq/v1/acme/d1/+/#",
            "fleetmq/v1/acme/d1/up/#",
            "fleetmq/v1/acme/d2/down/#",
            "+/v1/acme/d1/down/#",
            "$SYS/#",
            "$share/g/#",
            "$share//fleetmq/v1/acme/d1/down/#",
            "$share/g",
            "fleetmq/v1/acme/d1/down/#/x",
            "",
        ] {
            assert!(!d.may_subscribe(&ids(refused)), "{refused}");
        }
    }

    #[test]
    fn on_brokers_that_check_filters_only_a_filter_must_stay_inside_what_its_subscriber_may_read() {
        let cases: [(Principal, &[&str], &[&str]); 4] = [
            (
                operator(&["acme"]),
                &[
                    "fleetmq/v1/acme/#",
                    "fleetmq/v1/acme",
                    "fleetmq/v1/acme/+/up/telemetry",
                    "fleetmq/v1/acme/d1/up/#",
                    "$share/g/fleetmq/v1/acme/#",
                ],
                // Granted here (checked per message), but could deliver other tenants'
                // messages on a broker that does not ask per message.
                &[
                    "fleetmq/v1/+/+/up/telemetry",
                    "fleetmq/v1/#",
                    "fleetmq/#",
                    "#",
                    "+/v1/acme/#",
                    "fleetmq/+/acme/#",
                    "fleetmq/v1/other/#",
                    "fleetmq/v1/acme/nodevice/up/#",
                    "$share/g/fleetmq/v1/+/#",
                    "$SYS/#",
                ],
            ),
            (
                device("acme", "d1"),
                &[
                    "fleetmq/v1/acme/d1/down/#",
                    "fleetmq/v1/acme/d1/down/+/request",
                ],
                &["fleetmq/v1/acme/+/down/#", "fleetmq/v1/acme/d1/up/#", "#"],
            ),
            (
                Principal::Anonymous,
                &["test/#", "test/+/x", "a"],
                &["#", "+/x", "fleetmq/#", "$SYS/#", "+"],
            ),
            (
                superuser(),
                &["#", "fleetmq/v1/+/+/up/#", "$SYS/#"],
                &["a/#/b", ""],
            ),
        ];
        for (principal, granted, refused) in cases {
            for filter in granted {
                let filter = ids(filter);
                assert!(
                    principal.may_subscribe_contained(&filter),
                    "{principal:?} {filter}"
                );
                // Never wider than the embedded broker's own rule.
                assert!(principal.may_subscribe(&filter), "{principal:?} {filter}");
            }
            for filter in refused {
                let filter = ids(filter);
                assert!(
                    !principal.may_subscribe_contained(&filter),
                    "{principal:?} {filter}"
                );
            }
        }
    }

    #[test]
    fn device_with_wildcard_or_empty_identity_gets_nothing() {
        for d in [device("+", "d1"), device("", "d1"), device("a/b", "d1")] {
            assert!(!d.may_subscribe(&ids("fleetmq/v1/+/d1/down/#")));
            assert!(!d.may_subscribe(&ids("fleetmq/v1/acme/+/down/#")));
            assert!(!d.may_publish(&ids("fleetmq/v1/acme/d1/up/telemetry")));
            assert!(!d.may_publish(&ids("fleetmq/v1//d1/up/telemetry")));
        }
    }

    #[test]
    fn managed_operator_reads_only_its_orgs_and_never_publishes_in_the_tree() {
        let op = operator(&["acme", "beta"]);
        for ok in [
            "fleetmq/v1/acme/#",
            "fleetmq/v1/beta/+/up/#",
            "fleetmq/v1/acme/d1/up/telemetry",
            "fleetmq/v1/acme",
            "$share/ops/fleetmq/v1/acme/#",
            // Wildcards that can match a managed org's topics: filtered per message.
            "#",
            "fleetmq/#",
            "fleetmq/v1/#",
            "fleetmq/v1/+/+/up/telemetry",
            "fleetmq/+/acme/#",
            "+/v1/acme/#",
        ] {
            assert!(op.may_subscribe(&ids(ok)), "{ok}");
        }
        for refused in [
            "fleetmq",
            "fleetmq/v1",
            "fleetmq/v2/#",
            "fleetmq/v1/other/#",
            "test/#",
            "$SYS/#",
        ] {
            assert!(!op.may_subscribe(&ids(refused)), "{refused}");
        }
        assert!(op.may_read(&ids("fleetmq/v1/acme/d1/up/telemetry")));
        assert!(op.may_read(&ids("fleetmq/v1/beta/d2/down/command/request")));
        for unreadable in [
            "fleetmq/v1/other/d1/up/telemetry",
            "fleetmq/v2/acme/d1/up/telemetry",
            "test/x",
            "$SYS/broker/uptime",
        ] {
            assert!(!op.may_read(&ids(unreadable)), "{unreadable}");
        }
        for channel in DownChannel::ALL {
            assert!(!op.may_publish(&ids(&Topic::down("acme", "d1", channel).to_string())));
        }
        assert!(!op.may_publish(&ids("fleetmq/v1/acme/d1/up/telemetry")));
        assert!(!op.may_publish(&ids("fleetmq")));
        assert!(!op.may_publish(&ids("$SYS/x")));
        assert!(op.may_publish(&ids("test/x")));
    }

    #[test]
    fn operator_with_no_orgs_reads_nothing() {
        let op = operator(&[]);
        assert!(!op.may_subscribe(&ids("fleetmq/v1/acme/#")));
        assert!(!op.may_subscribe(&ids("#")));
    }

    #[test]
    fn superuser_reads_everything_but_still_never_publishes_in_the_tree() {
        let su = superuser();
        for ok in ["#", "fleetmq/#", "fleetmq/v1/+/+/up/#", "$SYS/#", "test/+"] {
            assert!(su.may_subscribe(&ids(ok)), "{ok}");
        }
        assert!(!su.may_subscribe(&ids("a/#/b")));
        assert!(!su.may_publish(&ids("fleetmq/v1/acme/d1/down/command/request")));
        assert!(!su.may_publish(&ids("$SYS/broker")));
    }

    #[test]
    fn anonymous_sandbox_cannot_touch_the_fleetmq_tree() {
        let anon = Principal::Anonymous;
        for ok in [
            "test/#",
            "test/x",
            "a/+/c",
            "/fleetmq/#",
            "fleetmqx/#",
            "$share/g/test/#",
            // Wildcards are granted; what they deliver is filtered per message.
            "#",
            "+",
            "+/+",
            "+/v1/#",
            "$share/g/#",
        ] {
            assert!(anon.may_subscribe(&ids(ok)), "{ok}");
        }
        for refused in [
            "fleetmq",
            "fleetmq/#",
            "fleetmq/v1/acme/d1/down/#",
            "$SYS/#",
            "$SYS",
            "$share/g/fleetmq/#",
        ] {
            assert!(!anon.may_subscribe(&ids(refused)), "{refused}");
        }
        assert!(anon.may_read("test/x"));
        assert!(anon.may_read("/fleetmq/x"));
        assert!(!anon.may_read(&ids("fleetmq/v1/acme/d1/up/telemetry")));
        assert!(!anon.may_read("fleetmq"));
        assert!(!anon.may_read("$SYS/broker/uptime"));
        assert!(anon.may_publish(&ids("test/x")));
        assert!(anon.may_publish(&ids("fleetmqx/y")));
        assert!(!anon.may_publish(&ids("fleetmq/v1/acme/d1/up/telemetry")));
        assert!(!anon.may_publish(&ids("fleetmq")));
        assert!(!anon.may_publish(&ids("$SYS/x")));
        assert!(!anon.may_publish(&ids("test/#")));
    }

    #[test]
    fn a_device_level_that_is_not_a_device_id_is_refused_for_everyone() {
        let bad = [
            "fleetmq/v1/acme/dev-1/up/#",
            "fleetmq/v1/acme/not-a-device/down/error",
            "$share/g/fleetmq/v1/acme/dev-1/#",
        ];
        for p in [operator(&["acme"]), superuser(), device("acme", "d1")] {
            for filter in bad {
                assert!(!p.may_subscribe(filter), "{p:?} {filter}");
            }
        }
        assert!(superuser().may_subscribe("fleetmq/v1/acme/+/up/#"));
        assert!(superuser().may_subscribe("+/v1/acme/dev-1/#"));
        // Another spelling of the device's own id is not its id.
        let d = device("acme", "d1");
        let upper = format!("fleetmq/v1/acme/{}/up/telemetry", D1.to_uppercase());
        assert!(!d.may_publish(&upper));
    }

    /// Brute-force cross-check over a small universe of topics and filters:
    /// - `may_read` is exactly the readable set below;
    /// - a device's allowed filter never matches a topic it may not read (containment);
    /// - for everyone else, a refused filter matches no topic they may read (it was refused
    ///   only because it could never deliver anything).
    #[test]
    fn reading_and_subscribing_agree_with_the_readable_set() {
        use crate::topic::matches;
        let orgs = ["acme", "beta"];
        let devices = [D1, D2];
        let mut topics = vec![
            "test/x".to_string(),
            "fleetmq".into(),
            "$SYS/x".into(),
            "x".into(),
            "a/b".into(),
        ];
        for o in orgs {
            for d in devices {
                for c in UpChannel::ALL {
                    topics.push(Topic::up(o, d, c).to_string());
                }
                for c in DownChannel::ALL {
                    topics.push(Topic::down(o, d, c).to_string());
                }
            }
        }
        let readable = |p: &Principal, t: &str| match p {
            Principal::Device {
                org_slug,
                device_id,
            } => t.starts_with(&format!("fleetmq/v1/{org_slug}/{device_id}/down/")),
            Principal::Operator {
                orgs: OrgScope::All,
            } => true,
            Principal::Operator {
                orgs: OrgScope::Managed(orgs),
            } => orgs
                .iter()
                .any(|o| t.starts_with(&format!("fleetmq/v1/{o}/"))),
            Principal::Anonymous => !t.starts_with("fleetmq") && !t.starts_with('$'),
        };
        let levels = [
            "fleetmq", "v1", "acme", D1, "down", "up", "+", "#", "test", "x", "a", "b",
        ];
        let mut filters = vec![];
        for a in levels {
            filters.push(a.to_string());
            for b in levels {
                filters.push(format!("{a}/{b}"));
                for c in ["acme", "beta", "+", "#"] {
                    for d in [D1, "+", "#"] {
                        for e in ["down", "up", "+", "#"] {
                            filters.push(format!("{a}/{b}/{c}/{d}/{e}/#"));
                        }
                    }
                }
            }
        }
        let principals = [
            device("acme", D1),
            operator(&["acme"]),
            superuser(),
            Principal::Anonymous,
        ];
        for p in &principals {
            for t in &topics {
                assert_eq!(p.may_read(t), readable(p, t), "{p:?} reading {t}");
            }
            for f in filters.iter().filter(|f| is_valid_filter(f)) {
                let f = ids(f);
                let allowed = p.may_subscribe(&f);
                for t in topics.iter().filter(|t| matches(&f, t)) {
                    if matches!(p, Principal::Device { .. }) && allowed {
                        assert!(readable(p, t), "{p:?} may subscribe {f} which matches {t}");
                    }
                    if !allowed && !matches!(p, Principal::Device { .. }) {
                        assert!(!readable(p, t), "{p:?} refused {f} which matches {t}");
                    }
                }
            }
        }
    }
}
