//! `down/command/request` and `up/command/result`: remote command execution.
//!
//! The server sends a [`CommandRequest`] with a fresh id; the device answers with a
//! [`CommandResult`] carrying the same id, so results can be matched even after reconnects.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ProtocolError, from_json, to_json};

/// What kind of command to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandType {
    /// A shell command given in `input`.
    Custom,
    /// Reboot the device.
    Reboot,
    /// Change the device's root password given in `input`.
    ChangePassword,
}

impl CommandType {
    /// Every command type.
    pub const ALL: [CommandType; 3] = [
        CommandType::Custom,
        CommandType::Reboot,
        CommandType::ChangePassword,
    ];

    /// The name on the wire and in the REST API (`custom`, `reboot`, `change_password`).
    pub fn name(self) -> &'static str {
        match self {
            CommandType::Custom => "custom",
            CommandType::Reboot => "reboot",
            CommandType::ChangePassword => "change_password",
        }
    }

    /// The type named `s`, if any (a REST client's choice).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// A command for the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// Correlates the result.
    pub id: Uuid,
    /// The command kind.
    #[serde(rename = "type")]
    pub kind: CommandType,
    /// Type-specific input (`null` when the type needs none).
    #[serde(default)]
    pub input: serde_json::Value,
}

impl CommandRequest {
    /// Parses a payload received on `down/command/request`.
    pub fn parse(payload: &[u8]) -> Result<CommandRequest, ProtocolError> {
        from_json("command request", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Outcome of a command, as the device reports it. The store's `CommandStatus` adds the
/// state before any answer (`in-progress`) and converts from this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// The command ran and exited successfully.
    Success,
    /// The command could not run or exited with an error.
    Failed,
}

/// The device's answer to a [`CommandRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// The request's id.
    pub id: Uuid,
    /// Success or failure.
    pub status: CommandStatus,
    /// Captured output.
    #[serde(default)]
    pub output: String,
    /// Process exit code.
    pub exit_code: i32,
}

impl CommandResult {
    /// Parses a payload received on `up/command/result`.
    pub fn parse(payload: &[u8]) -> Result<CommandResult, ProtocolError> {
        from_json("command result", payload)
    }

    /// The JSON payload to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_snake_case_type() {
        let req = CommandRequest {
            id: Uuid::new_v4(),
            kind: CommandType::ChangePassword,
            input: serde_json::json!({"password": "s3cret"}),
        };
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(text.contains(r#""type":"change_password""#), "{text}");
        assert_eq!(CommandRequest::parse(text.as_bytes()).unwrap(), req);
    }

    #[test]
    fn reboot_needs_no_input() {
        let id = Uuid::new_v4();
        let req = CommandRequest::parse(format!(r#"{{"id":"{id}","type":"reboot"}}"#).as_bytes())
            .unwrap();
        assert_eq!(req.kind, CommandType::Reboot);
        assert!(req.input.is_null());
    }

    #[test]
    fn every_type_is_found_by_its_wire_name() {
        for kind in CommandType::ALL {
            assert_eq!(CommandType::parse(kind.name()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        assert_eq!(CommandType::parse("format_disk"), None);
    }

    #[test]
    fn result_round_trips() {
        let res = CommandResult {
            id: Uuid::new_v4(),
            status: CommandStatus::Failed,
            output: "sh: nope: not found".into(),
            exit_code: 127,
        };
        assert_eq!(CommandResult::parse(&res.to_bytes()).unwrap(), res);
    }

    #[test]
    fn bad_ids_and_types_are_refused_with_a_reason() {
        let err = CommandRequest::parse(br#"{"id":"42","type":"reboot"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid command request payload"), "{err}");
        let id = Uuid::new_v4();
        assert!(
            CommandRequest::parse(format!(r#"{{"id":"{id}","type":"format_disk"}}"#).as_bytes())
                .is_err()
        );
        assert!(
            CommandResult::parse(
                format!(r#"{{"id":"{id}","status":"ok","exit_code":0}}"#).as_bytes()
            )
            .is_err()
        );
    }
}
