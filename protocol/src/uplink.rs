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
    /// Parses `payload` as the type of `channel`, for a message that came with MQTT 5
    /// correlation data (request/response, MQTT 5 §4.10). The server sends its requests
    /// (`down/command/request`, `down/update/request`) to MQTT 5 devices with the request's
    /// id as correlation data; an answer (`up/command/result`, `up/update/response`) that
    /// carries it back may leave `id` out of its payload, and must not name another request
    /// there. Correlation data on other channels is ignored.
    pub fn parse_correlated(
        channel: UpChannel,
        payload: &[u8],
        correlation_data: &[u8],
    ) -> Result<Uplink, ProtocolError> {
        let kind = match channel {
            UpChannel::CommandResult => "command result",
            UpChannel::UpdateResponse => "update response",
            _ => return Uplink::parse(channel, payload),
        };
        let id = std::str::from_utf8(correlation_data)
            .ok()
            .and_then(|text| uuid::Uuid::parse_str(text).ok())
            .ok_or(ProtocolError::Correlation("is not a request id"))?;
        let mut answer: serde_json::Value = crate::from_json(kind, payload)?;
        let Some(fields) = answer.as_object_mut() else {
            return Uplink::parse(channel, payload);
        };
        match fields.get("id") {
            None => {
                fields.insert("id".into(), id.to_string().into());
            }
            Some(named)
                if named.as_str().and_then(|t| uuid::Uuid::parse_str(t).ok()) == Some(id) => {}
            Some(_) => {
                return Err(ProtocolError::Correlation(
                    "names another request than the payload's id",
                ));
            }
        }
        Uplink::parse(channel, &crate::to_json(&answer))
    }

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
    fn correlation_data_names_the_request_an_answer_is_for() {
        let id = "9b2f6a4e-1c3d-4e5f-8a7b-0c1d2e3f4a5b";
        let without_id = br#"{"status":"success","output":"ok","exit_code":0}"#;
        let parsed = Uplink::parse_correlated(UpChannel::CommandResult, without_id, id.as_bytes());
        assert!(matches!(parsed, Ok(Uplink::CommandResult(r)) if r.id.to_string() == id));
        let same = format!(r#"{{"id":"{id}","status":204,"body":null}}"#);
        let parsed =
            Uplink::parse_correlated(UpChannel::UpdateResponse, same.as_bytes(), id.as_bytes());
        assert!(matches!(parsed, Ok(Uplink::UpdateResponse(r)) if r.id.to_string() == id));
        let other = br#"{"id":"00000000-0000-4000-8000-000000000001","status":204,"body":null}"#;
        let parsed = Uplink::parse_correlated(UpChannel::UpdateResponse, other, id.as_bytes());
        assert!(matches!(parsed, Err(ProtocolError::Correlation(_))));
        let parsed = Uplink::parse_correlated(UpChannel::CommandResult, without_id, b"\xff");
        assert!(matches!(parsed, Err(ProtocolError::Correlation(_))));
        // Elsewhere correlation data changes nothing.
        let presence =
            Uplink::parse_correlated(UpChannel::Presence, br#"{"status":"online"}"#, b"x");
        assert!(presence.is_ok());
    }

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
