//! Which netjsonconfig backend a configuration is rendered for.

use std::fmt;
use std::str::FromStr;

/// The renderer a device config names (OpenWISP's `config.backend` field). The two differ in UCI
/// syntax and archive layout, so every step after merging needs to know which one applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `netjsonconfig.OpenWrt`: OpenWrt ≥ 21 (DSA syntax: bridges as `config device`), files
    /// under `etc/config/`.
    OpenWrt,
    /// `netjsonconfig.OpenWisp`: legacy OpenWISP 1.x firmware. Pre-DSA syntax, quoted UCI types
    /// and keys, radios always carry `disabled`, packages as `uci/<package>.conf`, hostname
    /// required.
    OpenWisp,
}

/// A backend name OpenWISP does not know; the API answers it as a field error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a valid choice.")]
pub struct UnknownBackend(pub String);

impl Backend {
    /// The name OpenWISP's API uses for this backend.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::OpenWrt => "netjsonconfig.OpenWrt",
            Backend::OpenWisp => "netjsonconfig.OpenWisp",
        }
    }

    /// Parses the API's backend name (exactly as OpenWISP spells it).
    pub fn parse(name: &str) -> Result<Self, UnknownBackend> {
        match name {
            "netjsonconfig.OpenWrt" => Ok(Backend::OpenWrt),
            "netjsonconfig.OpenWisp" => Ok(Backend::OpenWisp),
            other => Err(UnknownBackend(other.to_string())),
        }
    }

    /// OpenWrt ≥ 21 syntax (bridges and L2 options as `config device`).
    pub(crate) fn dsa(self) -> bool {
        matches!(self, Backend::OpenWrt)
    }
}

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::parse(s)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
