//! The one error type of the simulator library.

use crate::mqtt::DecodeError;

/// Why a simulated device could not connect or a registration call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A socket operation failed (connection refused, reset, bind failure).
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// The broker answered CONNACK with a non-zero return code.
    #[error("broker refused the connection: CONNACK {code:#04x} ({})", connack_meaning(*code))]
    Refused {
        /// MQTT 3.1.1 return code.
        code: u8,
    },
    /// The broker sent bytes that are not an MQTT packet we accept.
    #[error("protocol error: {0}")]
    Decode(#[from] DecodeError),
    /// The broker sent a valid packet at the wrong moment.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A TLS file (CA, client certificate, key) could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection or the handshake took longer than the connect timeout.
    #[error("timed out connecting to the broker")]
    Timeout,
    /// The device's task has ended, so it cannot take orders any more.
    #[error("the device has stopped")]
    Stopped,
    /// The REST API answered with an error status.
    #[error("{method} {url} answered {status}: {body}")]
    Api {
        /// HTTP method of the request.
        method: &'static str,
        /// The request URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Response body (the API's error JSON).
        body: String,
    },
    /// The REST API could not be reached or answered something unreadable.
    #[error("HTTP error: {0}")]
    Http(#[from] reqwest::Error),
    /// The organization slug is not among the organizations the token can see.
    #[error("organization `{0}` not found (or not visible to this token)")]
    OrganizationNotFound(String),
    /// The REST API answered something the simulator cannot use.
    #[error("unexpected API answer: {0}")]
    Unexpected(String),
    /// A line of the devices CSV is not `id,key`.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The CSV file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// MQTT 3.1.1 CONNACK return codes as fleetmq uses them (docs/mqtt.md).
pub fn connack_meaning(code: u8) -> &'static str {
    match code {
        0x00 => "accepted",
        0x01 => "unacceptable protocol version",
        0x02 => "identifier rejected",
        0x03 => "server unavailable",
        0x04 => "bad user name or password",
        0x05 => "not authorized",
        _ => "unknown return code",
    }
}
