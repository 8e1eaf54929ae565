//! The CONNECT handshake: reading the first packet, what rumqttd's decoder lets through,
//! the client id rules, authentication, and the CONNACK return codes.

use fleetmq_protocol::Principal;
use rumqttd::protocol::v4::check;
use rumqttd::protocol::{
    Connect, ConnectReturnCode, Error as WireError, Login as WireLogin, Packet,
};
use tokio::time::timeout;

use super::Shared;
use super::framing::Wire;
use crate::Refusal;
use crate::auth::Login;

/// Why no CONNECT could be read.
pub(super) enum ConnectFailure {
    /// EOF or I/O error before a full CONNECT.
    Closed,
    /// Not MQTT 3.1.1 (e.g. 3.1 `MQIsdp` or 5): answer CONNACK 0x01.
    UnsupportedProtocol,
    /// Anything else that is not a well-formed CONNECT.
    Malformed(String),
}

/// Reads the first packet, which must be a well-formed MQTT 3.1.1 CONNECT.
pub(super) async fn read_connect(wire: &mut Wire) -> Result<Packet, ConnectFailure> {
    loop {
        // The first packet must be CONNECT (MQTT 3.1.1 §3.1).
        if wire.read.first().is_some_and(|b| b >> 4 != 1) {
            return Err(ConnectFailure::Malformed(
                "first packet is not CONNECT".into(),
            ));
        }
        if let Some(reason) = connect_flags_violation(&wire.read, wire.max_packet_size) {
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

/// What rumqttd's CONNECT decoder lets through: the reserved flag (MQTT-3.1.2-3) and a
/// password without a username (MQTT-3.1.2-22) are protocol violations; the connection is
/// closed without CONNACK. `None` until the buffer holds the whole frame.
fn connect_flags_violation(buffer: &[u8], max_packet_size: usize) -> Option<&'static str> {
    let header = check(buffer.iter(), max_packet_size).ok()?;
    let start = header.fixed_header_len;
    let name_len = u16::from_be_bytes([*buffer.get(start)?, *buffer.get(start + 1)?]) as usize;
    let flags = *buffer.get(start + 2 + name_len + 1)?;
    if flags & 0x01 != 0 {
        Some("reserved CONNECT flag is set")
    } else if flags & 0x80 == 0 && flags & 0x40 != 0 {
        Some("password flag without username flag")
    } else {
        None
    }
}

/// The CONNACK return code for an MQTT 3.1.1 code number (from [`Refusal::return_code`]).
pub(super) fn return_code(code: u8) -> ConnectReturnCode {
    match code {
        0x01 => ConnectReturnCode::RefusedProtocolVersion,
        0x02 => ConnectReturnCode::ClientIdentifierNotValid,
        0x03 => ConnectReturnCode::ServiceUnavailable,
        0x04 => ConnectReturnCode::BadUserNamePassword,
        _ => ConnectReturnCode::NotAuthorized,
    }
}

/// The client id the session runs under, or `None` when CONNACK 0x02 must refuse it: the
/// router silently drops ids containing `+ $ # /`, and an empty id is only allowed with a
/// clean session (MQTT 3.1.1 §3.1.3.1), which then gets a generated one.
pub(super) fn client_id(connect: &Connect) -> Option<String> {
    if (connect.client_id.is_empty() && !connect.clean_session)
        || connect.client_id.contains(['+', '$', '#', '/', '\0'])
    {
        return None;
    }
    Some(if connect.client_id.is_empty() {
        format!("auto-{}", uuid::Uuid::new_v4().simple())
    } else {
        connect.client_id.clone()
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
