//! The versioned topic tree.
//!
//! ```text
//! fleetmq/v1/{org_slug}/{device_id}/up/{channel}     device -> server
//! fleetmq/v1/{org_slug}/{device_id}/down/{channel}   server -> device
//! ```
//!
//! The version level lets a later contract live next to this one on the same broker. Org slugs
//! and device ids are single topic levels: they must be non-empty and contain none of
//! `/ + #` (see [`is_valid_level`]); the store guarantees that when it creates them.

use std::fmt;
use std::str::FromStr;

use crate::{DeviceId, ProtocolError};

/// First level of every fleetmq topic.
pub const ROOT: &str = "fleetmq";
/// Second level: the contract version this crate implements.
pub const VERSION: &str = "v1";
/// Every device-to-server message of every org. The broker keeps one router log for it so
/// that device topics do not each get a log; the bridge receives uplink through the broker's
/// `Uplink`, not by subscribing.
pub const ALL_UP_FILTER: &str = "fleetmq/v1/+/+/up/#";

/// Which way a message travels; the fifth topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device to server.
    Up,
    /// Server to device.
    Down,
}

impl Direction {
    /// The topic level for this direction.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Channels a device publishes on (`.../up/{channel}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpChannel {
    /// Retained `online`/`offline`; `offline` is the device's last will.
    Presence,
    /// Periodic metrics.
    Telemetry,
    /// GeoJSON position.
    Coordinates,
    /// Outcome of a command received on `down/command/request`.
    CommandResult,
    /// The device's `npm.system_update` update resource, on every change.
    Update,
    /// A device's answer to a `down/update/request`.
    UpdateResponse,
    /// Device images.
    Images,
    /// Whether the device applied the configuration announced on `down/config/notice`.
    ConfigStatus,
    /// The applications the device runs, with their versions.
    Software,
    /// The device's answer to a `down/software/offer` or `down/software/deliver`.
    SoftwareStatus,
}

impl UpChannel {
    /// Every up channel, for exhaustive tests and documentation tables.
    pub const ALL: [UpChannel; 10] = [
        UpChannel::Presence,
        UpChannel::Telemetry,
        UpChannel::Coordinates,
        UpChannel::CommandResult,
        UpChannel::Update,
        UpChannel::UpdateResponse,
        UpChannel::Images,
        UpChannel::ConfigStatus,
        UpChannel::Software,
        UpChannel::SoftwareStatus,
    ];

    /// The channel's topic suffix (may span two levels).
    pub fn as_str(self) -> &'static str {
        match self {
            UpChannel::Presence => "presence",
            UpChannel::Telemetry => "telemetry",
            UpChannel::Coordinates => "coordinates",
            UpChannel::CommandResult => "command/result",
            UpChannel::Update => "update",
            UpChannel::UpdateResponse => "update/response",
            UpChannel::Images => "images",
            UpChannel::ConfigStatus => "config/status",
            UpChannel::Software => "software",
            UpChannel::SoftwareStatus => "software/status",
        }
    }
}

impl FromStr for UpChannel {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UpChannel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ProtocolError::UnknownChannel {
                direction: Direction::Up,
                channel: s.to_owned(),
            })
    }
}

/// Channels the server publishes on (`.../down/{channel}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownChannel {
    /// A command to execute.
    CommandRequest,
    /// An npm.system_update call (answered on `up/update/response`).
    UpdateRequest,
    /// The device's configuration changed; fetch it.
    ConfigNotice,
    /// Why the server refused a payload the device sent.
    Error,
    /// A software version offered for the device's consent.
    SoftwareOffer,
    /// A software version to install.
    SoftwareDeliver,
}

impl DownChannel {
    /// Every down channel.
    pub const ALL: [DownChannel; 6] = [
        DownChannel::CommandRequest,
        DownChannel::UpdateRequest,
        DownChannel::ConfigNotice,
        DownChannel::Error,
        DownChannel::SoftwareOffer,
        DownChannel::SoftwareDeliver,
    ];

    /// The channel's topic suffix (may span two levels).
    pub fn as_str(self) -> &'static str {
        match self {
            DownChannel::CommandRequest => "command/request",
            DownChannel::UpdateRequest => "update/request",
            DownChannel::ConfigNotice => "config/notice",
            DownChannel::Error => "error",
            DownChannel::SoftwareOffer => "software/offer",
            DownChannel::SoftwareDeliver => "software/deliver",
        }
    }
}

impl FromStr for DownChannel {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DownChannel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ProtocolError::UnknownChannel {
                direction: Direction::Down,
                channel: s.to_owned(),
            })
    }
}

/// A channel together with its direction, so a [`Topic`] cannot pair `up` with a down channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Device to server.
    Up(UpChannel),
    /// Server to device.
    Down(DownChannel),
}

impl Channel {
    /// Direction level of this channel.
    pub fn direction(self) -> Direction {
        match self {
            Channel::Up(_) => Direction::Up,
            Channel::Down(_) => Direction::Down,
        }
    }

    /// The channel's topic suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Up(c) => c.as_str(),
            Channel::Down(c) => c.as_str(),
        }
    }
}

/// What names the device in a topic being built: a [`DeviceId`], or the text of one for
/// code that holds its device's id as configured text (a device, the simulator).
pub trait DeviceLevel: fmt::Display + sealed::Sealed {}

impl DeviceLevel for DeviceId {}
impl DeviceLevel for &str {}
impl DeviceLevel for &String {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::DeviceId {}
    impl Sealed for &str {}
    impl Sealed for &String {}
}

/// A parsed fleetmq topic. Build one with [`Topic::up`]/[`Topic::down`] and render it with
/// `to_string()`; read one off the wire with [`Topic::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    org_slug: String,
    device_id: String,
    channel: Channel,
}

impl Topic {
    /// A device-to-server topic. `org_slug` must satisfy [`is_valid_level`]; `device_id` is
    /// a [`DeviceId`] (or its wire form, see [`DeviceLevel`]).
    pub fn up(org_slug: &str, device_id: impl DeviceLevel, channel: UpChannel) -> Topic {
        Topic {
            org_slug: org_slug.to_owned(),
            device_id: device_id.to_string(),
            channel: Channel::Up(channel),
        }
    }

    /// A server-to-device topic, with the same arguments as [`Topic::up`].
    pub fn down(org_slug: &str, device_id: impl DeviceLevel, channel: DownChannel) -> Topic {
        Topic {
            org_slug: org_slug.to_owned(),
            device_id: device_id.to_string(),
            channel: Channel::Down(channel),
        }
    }

    /// Parses a topic name received on the wire (no wildcards).
    pub fn parse(topic: &str) -> Result<Topic, ProtocolError> {
        let malformed = |reason| ProtocolError::MalformedTopic {
            topic: topic.to_owned(),
            reason,
        };
        let mut levels = topic.splitn(6, '/');
        if levels.next() != Some(ROOT) {
            return Err(ProtocolError::NotFleetmqTopic(topic.to_owned()));
        }
        match levels.next() {
            Some(VERSION) => {}
            Some(other) => return Err(ProtocolError::UnsupportedVersion(other.to_owned())),
            None => return Err(malformed("missing version level")),
        }
        let org_slug = levels.next().ok_or(malformed("missing org level"))?;
        let device_id = levels.next().ok_or(malformed("missing device level"))?;
        let direction = levels.next().ok_or(malformed("missing direction level"))?;
        let channel = levels.next().ok_or(malformed("missing channel level"))?;
        if !is_valid_level(org_slug) {
            return Err(malformed("org level is empty or contains a wildcard"));
        }
        if !is_valid_level(device_id) {
            return Err(malformed("device level is empty or contains a wildcard"));
        }
        let channel = match direction {
            "up" => Channel::Up(channel.parse()?),
            "down" => Channel::Down(channel.parse()?),
            other => return Err(ProtocolError::UnknownDirection(other.to_owned())),
        };
        Ok(Topic {
            org_slug: org_slug.to_owned(),
            device_id: device_id.to_owned(),
            channel,
        })
    }

    /// The organization the device belongs to.
    pub fn org_slug(&self) -> &str {
        &self.org_slug
    }

    /// The device the topic is about.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Channel and direction.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Direction of the topic.
    pub fn direction(&self) -> Direction {
        self.channel.direction()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ROOT}/{VERSION}/{}/{}/{}/{}",
            self.org_slug,
            self.device_id,
            self.channel.direction(),
            self.channel.as_str()
        )
    }
}

impl FromStr for Topic {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::parse(s)
    }
}

/// Whether `s` can be used as one topic level for an org slug or device id: non-empty, no
/// `/`, no wildcard, no NUL, and not starting with `$` (reserved for broker topics).
pub fn is_valid_level(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('$') && !s.contains(['/', '+', '#', '\0'])
}

/// Prefix of every topic a device may publish to: `fleetmq/v1/{org}/{device}/up/`.
pub fn device_up_prefix(org_slug: &str, device_id: impl DeviceLevel) -> String {
    format!("{ROOT}/{VERSION}/{org_slug}/{device_id}/up/")
}

/// Everything a device publishes: `fleetmq/v1/{org}/{device}/up/#`.
pub fn device_up_filter(org_slug: &str, device_id: impl DeviceLevel) -> String {
    format!("{ROOT}/{VERSION}/{org_slug}/{device_id}/up/#")
}

/// What a device subscribes to: `fleetmq/v1/{org}/{device}/down/#`.
pub fn device_down_filter(org_slug: &str, device_id: impl DeviceLevel) -> String {
    format!("{ROOT}/{VERSION}/{org_slug}/{device_id}/down/#")
}

/// Everything about one organization's devices: `fleetmq/v1/{org}/#`.
pub fn org_filter(org_slug: &str) -> String {
    format!("{ROOT}/{VERSION}/{org_slug}/#")
}

/// Every device-to-server message: [`ALL_UP_FILTER`].
pub fn all_up_filter() -> &'static str {
    ALL_UP_FILTER
}

/// Whether `topic` is a valid MQTT topic *name* (what a PUBLISH carries): non-empty, no
/// wildcards, no NUL (MQTT 3.1.1 §4.7.1, §1.5.3).
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` is a valid MQTT topic *filter*: non-empty, no NUL, `+` only as a whole
/// level, `#` only as the whole last level (MQTT 3.1.1 §4.7.1).
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

/// MQTT topic matching (MQTT 3.1.1 §4.7): does `filter` match topic name `topic`? Filters
/// starting with a wildcard do not match topics starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_up_channel_round_trips_through_its_topic() {
        for channel in UpChannel::ALL {
            let topic = Topic::up("acme", "dev-1", channel);
            let text = topic.to_string();
            assert_eq!(
                text,
                format!("fleetmq/v1/acme/dev-1/up/{}", channel.as_str())
            );
            assert_eq!(Topic::parse(&text).unwrap(), topic);
        }
    }

    #[test]
    fn every_down_channel_round_trips_through_its_topic() {
        for channel in DownChannel::ALL {
            let topic = Topic::down("acme", "dev-1", channel);
            let parsed: Topic = topic.to_string().parse().unwrap();
            assert_eq!(parsed, topic);
            assert_eq!(parsed.direction(), Direction::Down);
            assert_eq!(parsed.org_slug(), "acme");
            assert_eq!(parsed.device_id(), "dev-1");
        }
    }

    #[test]
    fn two_level_channels_are_parsed() {
        let t = Topic::parse("fleetmq/v1/acme/d/up/command/result").unwrap();
        assert_eq!(t.channel(), Channel::Up(UpChannel::CommandResult));
        let t = Topic::parse("fleetmq/v1/acme/d/down/config/notice").unwrap();
        assert_eq!(t.channel(), Channel::Down(DownChannel::ConfigNotice));
    }

    #[test]
    fn topics_outside_the_contract_are_refused_with_a_reason() {
        let cases = [
            ("other/v1/a/d/up/telemetry", "not in the fleetmq/ tree"),
            (
                "fleetmq/v2/a/d/up/telemetry",
                "unsupported topic version `v2`",
            ),
            ("fleetmq", "missing version level"),
            ("fleetmq/v1/a", "missing device level"),
            ("fleetmq/v1/a/d/up", "missing channel level"),
            ("fleetmq/v1//d/up/telemetry", "org level is empty"),
            (
                "fleetmq/v1/a/+/up/telemetry",
                "device level is empty or contains a wildcard",
            ),
            (
                "fleetmq/v1/a/d/sideways/telemetry",
                "unknown direction `sideways`",
            ),
            ("fleetmq/v1/a/d/up/error", "unknown up channel `error`"),
            (
                "fleetmq/v1/a/d/down/telemetry",
                "unknown down channel `telemetry`",
            ),
            (
                "fleetmq/v1/a/d/up/telemetry/extra",
                "unknown up channel `telemetry/extra`",
            ),
            ("fleetmq/v1/a/d/up/command", "unknown up channel `command`"),
        ];
        for (topic, reason) in cases {
            let err = Topic::parse(topic).unwrap_err().to_string();
            assert!(err.contains(reason), "{topic}: `{err}` lacks `{reason}`");
        }
    }

    #[test]
    fn filter_helpers_render_the_documented_filters() {
        assert_eq!(device_up_prefix("o", "d"), "fleetmq/v1/o/d/up/");
        assert_eq!(device_up_filter("o", "d"), "fleetmq/v1/o/d/up/#");
        assert_eq!(device_down_filter("o", "d"), "fleetmq/v1/o/d/down/#");
        assert_eq!(org_filter("o"), "fleetmq/v1/o/#");
        assert_eq!(all_up_filter(), "fleetmq/v1/+/+/up/#");
        let t = Topic::up("o", "d", UpChannel::Telemetry).to_string();
        assert!(t.starts_with(&device_up_prefix("o", "d")));
        assert!(matches(ALL_UP_FILTER, &t));
        assert!(matches(&org_filter("o"), &t));
        assert!(!matches(&device_down_filter("o", "d"), &t));
    }

    #[test]
    fn matching_follows_mqtt_3_1_1() {
        assert!(matches("#", "a/b"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("+", ""));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn filter_and_topic_name_validity() {
        for ok in ["#", "+", "a/+/b", "a/#", "/", "+/+", "$share/g/a"] {
            assert!(is_valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a+/b", "a/b+", "##", "a\0"] {
            assert!(!is_valid_filter(bad), "{bad}");
        }
        assert!(is_valid_topic_name("a/b"));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("a/+"));
        assert!(!is_valid_topic_name("a/#"));
        assert!(is_valid_level("dev-1"));
        for bad in ["", "a/b", "+", "#", "$x"] {
            assert!(!is_valid_level(bad), "{bad}");
        }
    }
}
