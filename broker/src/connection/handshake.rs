//! The CONNECT handshake: reading the first packet (MQTT 3.1.1 or 5, by its protocol
//! level), what rumqttd's decoder lets through, the client id rules and authentication.

use fleetmq_protocol::Principal;
use rumqttd::protocol::v4::check;
use rumqttd::protocol::{Connect, Error as WireError, Login as WireLogin, Packet};
use tokio::time::timeout;

use super::Shared;
use super::framing::Wire;
use super::mqtt5::Negotiated;
use crate::Refusal;
use crate::auth::Login;

/// Why no CONNECT could be read.
pub(super) enum ConnectFailure {
    /// EOF or I/O error before a full CONNECT.
    Closed,
    /// Neither MQTT 3.1.1 nor 5 (e.g. 3.1 `MQIsdp`): answer CONNACK 0x01.
    UnsupportedProtocol,
    /// Anything else that is not a well-formed CONNECT.
    Malformed(String),
}

/// MQTT 5's protocol level.
const LEVEL_5: u8 = 5;

/// Reads the first packet, which must be a well-formed MQTT 3.1.1 or MQTT 5 CONNECT; for
/// MQTT 5 the wire parses MQTT 5 from then on.
pub(super) async fn read_connect(wire: &mut Wire) -> Result<Packet, ConnectFailure> {
    loop {
        // The first packet must be CONNECT (MQTT 3.1.1 §3.1).
        if wire.read.first().is_some_and(|b| b >> 4 != 1) {
            return Err(ConnectFailure::Malformed(
                "first packet is not CONNECT".into(),
            ));
        }
        if !wire.is_v5() && protocol_level(&wire.read, wire.max_packet_size) == Some(LEVEL_5) {
            wire.v5 = Some(Box::new(Negotiated::new(None, 0)));
        }
        if let Some(reason) =
            connect_flags_violation(&wire.read, wire.max_packet_size, wire.is_v5())
        {
            return Err(ConnectFailure::Malformed(reason.into()));
        }
        match wire.parse() {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(WireError::InvalidProtocol | WireError::InvalidProtocolLevel(_)) => {
                return Err(ConnectFailure::UnsupportedProtocol);
            }
            Err(e) => return Err(ConnectFailure::Malformed(e.to_string())),
        }
        match wire.read_some().await {
            Ok(0) | Err(_) => return Err(ConnectFailure::Closed),
            Ok(_) => {}
        }
    }
}

/// The protocol level byte of the CONNECT buffered whole, if it is.
fn protocol_level(buffer: &[u8], max_packet_size: usize) -> Option<u8> {
    let header = check(buffer.iter(), max_packet_size).ok()?;
    let start = header.fixed_header_len;
    let name_len = u16::from_be_bytes([*buffer.get(start)?, *buffer.get(start + 1)?]) as usize;
    buffer.get(start + 2 + name_len).copied()
}

/// What rumqttd's CONNECT decoder lets through: the reserved flag (MQTT-3.1.2-3) and, in
/// MQTT 3.1.1, a password without a username (MQTT-3.1.2-22; MQTT 5 allows it) are protocol
/// violations; the connection is closed without CONNACK. `None` until the buffer holds the
/// whole frame.
fn connect_flags_violation(
    buffer: &[u8],
    max_packet_size: usize,
    v5: bool,
) -> Option<&'static str> {
    let header = check(buffer.iter(), max_packet_size).ok()?;
    let start = header.fixed_header_len;
    let name_len = u16::from_be_bytes([*buffer.get(start)?, *buffer.get(start + 1)?]) as usize;
    let flags = *buffer.get(start + 2 + name_len + 1)?;
    if flags & 0x01 != 0 {
        Some("reserved CONNECT flag is set")
    } else if !v5 && flags & 0x80 == 0 && flags & 0x40 != 0 {
        Some("password flag without username flag")
    } else {
        None
    }
}

/// The client id the session runs under and whether the broker assigned it, or `None` when
/// CONNACK must refuse it (0x02; MQTT 5 0x85): the router silently drops ids containing
/// `+ $ # /`, and an empty id is only allowed with a clean session in MQTT 3.1.1 (§3.1.3.1);
/// an empty id gets a generated one (MQTT 5 tells the client which).
pub(super) fn client_id(connect: &Connect, v5: bool) -> Option<(String, bool)> {
    if (connect.client_id.is_empty() && !connect.clean_session && !v5)
        || connect.client_id.contains(['+', '$', '#', '/', '\0'])
    {
        return None;
    }
    Some(if connect.client_id.is_empty() {
        (format!("auto-{}", uuid::Uuid::new_v4().simple()), true)
    } else {
        (connect.client_id.clone(), false)
    })
}

/// Username and password as the [`Authenticator`](crate::Authenticator) sees them: empty
/// ones count as absent.
pub(super) fn credentials(login: Option<WireLogin>) -> (Option<String>, Option<Vec<u8>>) {
    match login {
        Some(login) => (
            Some(login.username).filter(|u| !u.is_empty()),
            Some(login.password.into_bytes()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    }
}

/// Decides the principal or the CONNACK return code. A login with a username or a client
/// certificate is the authenticator's to judge; one with neither is anonymous.
pub(super) async fn authenticate(shared: &Shared, login: &Login) -> Result<Principal, u8> {
    let principal = if login.username.is_none() && login.client_certificates.is_empty() {
        Principal::Anonymous
    } else {
        match timeout(
            shared.config.connect_timeout,
            shared.auth.authenticate(login.clone()),
        )
        .await
        {
            Ok(Ok(principal)) => principal,
            Ok(Err(refusal)) => return Err(refusal.return_code()),
            Err(_) => return Err(Refusal::ServerUnavailable.return_code()),
        }
    };
    match &principal {
        Principal::Anonymous if !shared.config.anonymous_sandbox => {
            Err(Refusal::NotAuthorized.return_code())
        }
        // A device's client id is its id, written as on the wire; anything else (not an id,
        // another device's id, another spelling) is refused with 0x02.
        Principal::Device { device_id, .. } if !device_id.is(&login.client_id) => {
            Err(Refusal::IdentifierRejected.return_code())
        }
        _ => Ok(principal),
    }
}
