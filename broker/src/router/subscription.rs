//! What a session holds besides its queue: its subscriptions (filter, granted QoS, MQTT 5
//! options) and how long it outlives its connection. Plain values, shared by the
//! subscription tree, the mailbox and the persisted records.

/// A subscription's MQTT 5 options (MQTT 5 §3.8.3.1); MQTT 3.1.1 subscriptions have the
/// defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// No local: the session is not sent what it published itself.
    pub(crate) no_local: bool,
    /// Retain as published: live messages keep their retain flag.
    pub(crate) retain_as_published: bool,
    /// Retain handling: 0 sends the retained messages at subscribe, 1 only if the
    /// subscription is new, 2 never.
    pub(crate) retain_handling: u8,
    /// Subscription identifier, sent with each message it matches (0: none).
    pub(crate) id: u32,
}

/// A subscription as a session holds it: filter as subscribed, granted QoS, options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) filter: String,
    pub(crate) qos: u8,
    pub(crate) options: Options,
}

impl Subscription {
    /// A subscription with the MQTT 3.1.1 defaults.
    pub(crate) fn plain(filter: &str, qos: u8) -> Subscription {
        Subscription {
            filter: filter.to_owned(),
            qos,
            options: Options::default(),
        }
    }
}

/// How long a session outlives its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// It ends with its connection (clean session 1; MQTT 5 session expiry 0).
    WithConnection,
    /// This many seconds after its connection ends (MQTT 5 session expiry interval).
    After(u32),
    /// Until a clean session replaces it (clean session 0; MQTT 5 interval 0xFFFFFFFF).
    Never,
}

impl Expiry {
    /// From an MQTT 5 session expiry interval.
    pub(crate) fn from_interval(seconds: u32) -> Expiry {
        match seconds {
            0 => Expiry::WithConnection,
            u32::MAX => Expiry::Never,
            s => Expiry::After(s),
        }
    }

    /// As an MQTT 5 session expiry interval.
    pub(crate) fn interval(self) -> u32 {
        match self {
            Expiry::WithConnection => 0,
            Expiry::After(s) => s,
            Expiry::Never => u32::MAX,
        }
    }

    pub(crate) fn is_persistent(self) -> bool {
        self != Expiry::WithConnection
    }
}
