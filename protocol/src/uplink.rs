//! One entry point for everything a device sends: pick the payload type from the channel.
//!
//! The bridge calls [`Uplink::parse`] for each message a device publishes under its `up/`
//! prefix (its one dispatch of device messages) and, on error, answers the device on
//! `down/error` with an [`ErrorNotice`](crate::ErrorNotice).

use crate::software::{SoftwareInventory, SoftwareStatus};
use crate::system_update::{ImagesResource, UpdateResource, UpdateResponse};
use crate::topic::UpChannel;
use crate::{CommandResult, ConfigReport, Coordinates, Presence, ProtocolError, Telemetry};

/// A parsed device-to-server payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    /// `up/presence`.
    Presence(Presence),
    /// `up/telemetry`.
    Telemetry(Telemetry),
    /// `up/coordinates`.
    Coordinates(Coordinates),
    /// `up/command/result`.
    CommandResult(CommandResult),
    /// `up/update`.
    Update(UpdateResource),
    /// `up/update/response`.
    UpdateResponse(UpdateResponse),
    /// `up/images`.
    Images(ImagesResource),
    /// `up/config/status`.
    ConfigStatus(ConfigReport),
    /// `up/software`.
    Software(SoftwareInventory),
    /// `up/software/status`.
    SoftwareStatus(SoftwareStatus),
}

impl Uplink {
    /// Parses `payload` as the type of `channel`.
    pub fn parse(channel: UpChannel, payload: &[u8]) -> Result<Uplink, ProtocolError> {
        Ok(match channel {
            UpChannel::Presence => Uplink::Presence(Presence::parse(payload)?),
            UpChannel::Telemetry => Uplink::Telemetry(Telemetry::parse(payload)?),
            UpChannel::Coordinates => Uplink::Coordinates(Coordinates::parse(payload)?),
            UpChannel::CommandResult => Uplink::CommandResult(CommandResult::parse(payload)?),
            UpChannel::Update => Uplink::Update(UpdateResource::parse(payload)?),
            UpChannel::UpdateResponse => Uplink::UpdateResponse(UpdateResponse::parse(payload)?),
            UpChannel::Images => Uplink::Images(ImagesResource::parse(payload)?),
            UpChannel::ConfigStatus => Uplink::ConfigStatus(ConfigReport::parse(payload)?),
            UpChannel::Software => Uplink::Software(SoftwareInventory::parse(payload)?),
            UpChannel::SoftwareStatus => Uplink::SoftwareStatus(SoftwareStatus::parse(payload)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PresenceStatus;

    #[test]
    fn the_channel_selects_the_payload_type() {
        let presence = Uplink::parse(UpChannel::Presence, br#"{"status":"online"}"#).unwrap();
        assert!(matches!(presence, Uplink::Presence(p) if p.status == PresenceStatus::Online));
        let update = Uplink::parse(
            UpChannel::Update,
            br#"{"last_state_time":1,"state":"IDLE","state_description":"","update_history":[]}"#,
        )
        .unwrap();
        assert!(matches!(update, Uplink::Update(u) if u.state == crate::UpdateState::Idle));
    }

    #[test]
    fn config_status_is_a_report_naming_its_checksum() {
        let parsed = Uplink::parse(
            UpChannel::ConfigStatus,
            br#"{"status":"applied","checksum":"0123456789abcdef0123456789abcdef"}"#,
        )
        .unwrap();
        assert!(
            matches!(parsed, Uplink::ConfigStatus(r) if r.status == crate::ConfigOutcome::Applied)
        );
        let err = Uplink::parse(UpChannel::ConfigStatus, b"applied, not json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid config status payload"), "{err}");
    }

    #[test]
    fn a_payload_on_the_wrong_channel_is_refused_naming_the_expected_type() {
        let err = Uplink::parse(UpChannel::Telemetry, br#"{"status":"online"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid telemetry payload"), "{err}");
        let err = Uplink::parse(UpChannel::Images, b"not json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid images payload"), "{err}");
    }
}
