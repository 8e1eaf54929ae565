//! What a simulated device says and how it answers, free of sockets so it is unit-tested.
//!
//! - [`answer`]: the [`CommandResult`] for a [`CommandRequest`], and whether to reboot after.
//! - [`Vitals`]: the metrics a device reports in `up/telemetry` (uptime and traffic counters
//!   grow, CPU and memory wander, a reboot resets them).
//! - [`Position`]: a GPS fix jittering around a start point, for `up/coordinates`.

use std::time::{Duration, Instant};

use fleetmq_protocol::{CommandRequest, CommandResult, CommandStatus, CommandType, Coordinates};
use serde_json::{Map, Value, json};

/// What the device does after answering a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Keep running.
    Continue,
    /// Drop the connection without DISCONNECT (so the broker publishes the will), wait the
    /// reboot time, reconnect.
    Reboot,
}

/// Length limits of a new password, as OpenWISP's `change_password` command enforces them.
pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 6..=30;

/// Answers a command the way a real OpenWrt agent would, minus actually running anything.
///
/// - `custom`: input `{"command": "..."}` (or a bare string) is echoed as the output.
/// - `reboot`: success; the caller then reboots.
/// - `change_password`: input `{"password", "confirm_password"}`, equal and 6–30 characters.
pub fn answer(request: &CommandRequest) -> (CommandResult, AfterAnswer) {
    let (status, output, after) = match request.kind {
        CommandType::Custom => match custom_command(&request.input) {
            Some(command) => (
                CommandStatus::Success,
                command.to_owned(),
                AfterAnswer::Continue,
            ),
            None => (
                CommandStatus::Failed,
                "custom command needs input {\"command\": \"...\"}".to_owned(),
                AfterAnswer::Continue,
            ),
        },
        CommandType::Reboot => (
            CommandStatus::Success,
            "rebooting".to_owned(),
            AfterAnswer::Reboot,
        ),
        CommandType::ChangePassword => match check_password(&request.input) {
            Ok(()) => (
                CommandStatus::Success,
                "password changed".to_owned(),
                AfterAnswer::Continue,
            ),
            Err(reason) => (CommandStatus::Failed, reason, AfterAnswer::Continue),
        },
    };
    let exit_code = match status {
        CommandStatus::Success => 0,
        CommandStatus::Failed => 1,
    };
    let result = CommandResult {
        id: request.id,
        status,
        output,
        exit_code,
    };
    (result, after)
}

fn custom_command(input: &Value) -> Option<&str> {
    match input {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("command").and_then(Value::as_str),
        _ => None,
    }
}

fn check_password(input: &Value) -> Result<(), String> {
    let field = |name: &str| input.get(name).and_then(Value::as_str);
    let (Some(password), Some(confirm)) = (field("password"), field("confirm_password")) else {
        return Err("input needs \"password\" and \"confirm_password\" strings".to_owned());
    };
    if password != confirm {
        return Err("the two passwords do not match".to_owned());
    }
    let len = password.chars().count();
    if !PASSWORD_LENGTH.contains(&len) {
        return Err(format!(
            "the password must be {} to {} characters long, not {len}",
            PASSWORD_LENGTH.start(),
            PASSWORD_LENGTH.end()
        ));
    }
    Ok(())
}

/// The device's live numbers since its last (re)boot.
#[derive(Debug, Clone)]
pub struct Vitals {
    booted: Instant,
    cpu: f64,
    memory: f64,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl Default for Vitals {
    fn default() -> Self {
        Vitals::boot()
    }
}

impl Vitals {
    /// Fresh numbers, as after power-on.
    pub fn boot() -> Vitals {
        Vitals {
            booted: Instant::now(),
            cpu: rand::random_range(0.02..0.3),
            memory: rand::random_range(0.2..0.5),
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// The next `metrics` object: counters grow, loads take a bounded random step.
    pub fn sample(&mut self) -> Map<String, Value> {
        self.cpu = wander(self.cpu, 0.05);
        self.memory = wander(self.memory, 0.02);
        self.rx_bytes += rand::random_range(1_000..50_000);
        self.tx_bytes += rand::random_range(500..20_000);
        let metrics = json!({
            "cpu": round3(self.cpu),
            "memory": round3(self.memory),
            "uptime": self.uptime().as_secs(),
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
        });
        match metrics {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// Time since boot.
    pub fn uptime(&self) -> Duration {
        self.booted.elapsed()
    }
}

fn wander(value: f64, step: f64) -> f64 {
    (value + rand::random_range(-step..=step)).clamp(0.0, 1.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A position that stays within about 100 m of where the device was installed.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    home_lng: f64,
    home_lat: f64,
}

/// How far (in degrees, ~110 m) a fix may wander from home.
const JITTER: f64 = 0.001;

impl Position {
    /// A device installed at `(lng, lat)`; out-of-range values are clamped.
    pub fn new(lng: f64, lat: f64) -> Position {
        Position {
            home_lng: lng.clamp(-180.0, 180.0),
            home_lat: lat.clamp(-90.0, 90.0),
        }
    }

    /// The next fix.
    pub fn fix(&self) -> Coordinates {
        let lng = (self.home_lng + rand::random_range(-JITTER..=JITTER)).clamp(-180.0, 180.0);
        let lat = (self.home_lat + rand::random_range(-JITTER..=JITTER)).clamp(-90.0, 90.0);
        // Both are clamped into range and finite, so `new` accepts them.
        Coordinates::new(lng, lat).unwrap_or_else(|_| {
            Coordinates::new(0.0, 0.0).unwrap_or_else(|_| unreachable!("0,0 is a valid position"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn request(kind: CommandType, input: Value) -> CommandRequest {
        CommandRequest {
            id: Uuid::new_v4(),
            kind,
            input,
        }
    }

    #[test]
    fn custom_commands_echo_their_text() {
        for input in [json!({"command": "uname -a"}), json!("uname -a")] {
            let req = request(CommandType::Custom, input);
            let (result, after) = answer(&req);
            assert_eq!(result.id, req.id);
            assert_eq!(result.status, CommandStatus::Success);
            assert_eq!(result.output, "uname -a");
            assert_eq!(result.exit_code, 0);
            assert_eq!(after, AfterAnswer::Continue);
        }
        let (result, _) = answer(&request(CommandType::Custom, Value::Null));
        assert_eq!(result.status, CommandStatus::Failed);
        assert_ne!(result.exit_code, 0);
    }

    #[test]
    fn reboot_succeeds_then_reboots() {
        let (result, after) = answer(&request(CommandType::Reboot, Value::Null));
        assert_eq!(result.status, CommandStatus::Success);
        assert_eq!(after, AfterAnswer::Reboot);
    }

    #[test]
    fn change_password_checks_confirmation_and_length() {
        let change = |p: &str, c: &str| {
            answer(&request(
                CommandType::ChangePassword,
                json!({"password": p, "confirm_password": c}),
            ))
            .0
        };
        assert_eq!(change("secret1", "secret1").status, CommandStatus::Success);
        assert_eq!(change("123456", "123456").status, CommandStatus::Success);
        let thirty = "x".repeat(30);
        assert_eq!(change(&thirty, &thirty).status, CommandStatus::Success);

        let mismatch = change("secret1", "secret2");
        assert_eq!(mismatch.status, CommandStatus::Failed);
        assert!(
            mismatch.output.contains("do not match"),
            "{}",
            mismatch.output
        );
        let short = change("12345", "12345");
        assert!(short.output.contains("6 to 30"), "{}", short.output);
        let long = "x".repeat(31);
        assert_eq!(change(&long, &long).status, CommandStatus::Failed);
        let missing = answer(&request(
            CommandType::ChangePassword,
            json!({"password": "abcdef"}),
        ))
        .0;
        assert_eq!(missing.status, CommandStatus::Failed);
    }

    #[test]
    fn telemetry_counters_grow_and_loads_stay_fractions() {
        let mut vitals = Vitals::boot();
        let first = vitals.sample();
        let second = vitals.sample();
        for key in ["cpu", "memory", "uptime", "rx_bytes", "tx_bytes"] {
            assert!(second.contains_key(key), "{key}");
        }
        let n = |m: &Map<String, Value>, k: &str| m[k].as_f64().unwrap_or(-1.0);
        assert!(n(&second, "rx_bytes") > n(&first, "rx_bytes"));
        assert!(n(&second, "tx_bytes") > n(&first, "tx_bytes"));
        assert!((0.0..=1.0).contains(&n(&second, "cpu")));
        assert!((0.0..=1.0).contains(&n(&second, "memory")));
    }

    #[test]
    fn fixes_stay_near_home_and_in_range() {
        let p = Position::new(12.49, 41.89);
        for _ in 0..100 {
            let c = p.fix();
            assert!((c.lng() - 12.49).abs() <= JITTER + 1e-9);
            assert!((c.lat() - 41.89).abs() <= JITTER + 1e-9);
        }
        let edge = Position::new(500.0, -100.0).fix();
        assert!(edge.lng() <= 180.0 && edge.lat() >= -90.0);
    }
}
