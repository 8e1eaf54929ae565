//! fleetmq's configuration renderer: OpenWISP-compatible NetJSON → OpenWrt UCI.
//!
//! OpenWISP keeps a device's configuration as NetJSON (templates plus the device's own config) and
//! serves the device a tar.gz of OpenWrt files rendered by netjsonconfig. This crate does the same
//! steps, in the same order, with the same output, so a device managed by fleetmq gets the archive
//! OpenWISP would have given it:
//!
//! 1. [`merge`] the templates in order, then the device's own config;
//! 2. [`substitute`] the `{{ variables }}`;
//! 3. [`validate`] what netjsonconfig's schema rejects;
//! 4. [`render`] the result to files (`etc/config/<package>` plus the config's `files`);
//! 5. [`archive`] them into a deterministic tar.gz whose [`checksum`] the device compares.
//!
//! Everything is pure: no I/O, no clock. Where fleetmq deliberately renders differently from
//! netjsonconfig, docs/config.md ("Rendering") says so and why.
//!
//! # Layout
//! - `backend`: which netjsonconfig backend a config is rendered for.
//! - `merge`: templates and device config merged as netjsonconfig's `merge_config`.
//! - `variables`: `{{ var }}` substitution.
//! - `schema`: validation of what netjsonconfig's JSON schema rejects.
//! - `uci`: UCI sections and their text.
//! - `system`, `network`, `wireless`, `package`: NetJSON sections → UCI sections.
//! - `render`: the whole config → files.
//! - `archive`: files → tar.gz, and its checksum.
//! - `timezones`: zone names → POSIX TZ strings.
//! - `vpn`: VPN servers (OpenVPN, WireGuard, VXLAN over WireGuard): their archives, keys,
//!   addresses, and the client configuration devices get.

mod archive;
mod backend;
mod merge;
mod network;
mod package;
mod render;
mod schema;
mod system;
mod timezones;
mod uci;
mod variables;
pub mod vpn;
mod wireless;

pub use archive::{archive, checksum};
pub use backend::{Backend, UnknownBackend};
pub use merge::merge;
pub use render::{File, render};
pub use schema::validate;
pub use system::hostname_from_device_name;
pub use variables::substitute;

/// A configuration netjsonconfig would refuse: where (an RFC 6901 JSON pointer into the merged
/// config, `""` for the whole document) and why, so the API can show the user the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct Invalid {
    /// RFC 6901 pointer of the offending value (`/interfaces/0/name`).
    pub pointer: String,
    /// What is wrong with it, in words a user can act on.
    pub message: String,
}

impl Invalid {
    pub(crate) fn at(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
pub(crate) fn pointer_join(base: &str, token: impl std::fmt::Display) -> String {
    let token = token.to_string().replace('~', "~0").replace('/', "~1");
    format!("{base}/{token}")
}
