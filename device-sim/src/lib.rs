//! fleetmq-sim: simulated devices that speak only fleetmq's MQTT wire contract
//! ([`fleetmq_protocol`]), for integration tests, demos and load generation.
//!
//! A simulated device connects with client id = user name = its device id and its key as
//! password, registers a retained `offline` presence as its last will, announces itself
//! `online` (retained), subscribes to its `down/#`, publishes telemetry and coordinates on
//! timers, answers commands (`custom`, `reboot`, `change_password`) and npm.system_update
//! requests (fetch an image over HTTP, init, start, install, reboot: see [`update`]), runs
//! application software that the server offers and delivers (see [`software`]), and
//! reconnects with backoff when the broker drops it. Over TLS (`--mqtt-ca`) a device may log
//! in with a client certificate instead, sending no username or password (see [`tls`]).
//! A device speaks MQTT 3.1.1 or MQTT 5 ([`DeviceConfig::mqtt_version`]; `--mqtt5-fraction`
//! mixes a fleet, spread evenly by index): an MQTT 5 device answers a request on the response
//! topic it came with, with its correlation data and no `id` in the payload, as a generic
//! MQTT 5 responder would (docs/mqtt.md, "Request/response").
//! Tests drive one device through a [`SimHandle`]; the `fleetmq-sim` binary drives thousands
//! through a [`Fleet`].
//!
//! # Why a hand-written MQTT client
//! The load generator must hold ~19,000 connections in one process. rumqttc (already in the
//! workspace) cannot bind a socket's *source address*, which is how one process gets past the
//! ~28k ephemeral ports of a single source address (we spread over 127.0.0.x), and each of
//! its clients carries an event loop, a request channel and pre-sized in-flight state. A
//! device needs only CONNECT/CONNACK, PUBLISH at QoS 0/1 with PUBACK, SUBSCRIBE/SUBACK and
//! PINGREQ/PINGRESP (and, in MQTT 5, property lists and the server's DISCONNECT): [`mqtt`] is
//! that codec (unit-tested), and each device is one tokio task owning its socket, two small
//! buffers and its timers.
//!
//! Measured on the 2-core development VM (release build): 19,000 connected devices cost the
//! simulator ~120 MiB resident (~6.5 KiB per device, runtime included) and ~5% of a core
//! at one telemetry message per device every 10 s. At that size the broker limits the
//! connect rate, not the simulator: rumqttd's router matches every new subscription against
//! every known topic, so each connection costs more than the one before.
//!
//! # Running it
//! ```text
//! cargo run --release -p fleetmq-sim -- --api http://127.0.0.1:8000 --token $TOKEN \
//!     --org acme --devices 2000 --csv devices.csv --duration 60s
//! ```
//! The first run registers the devices through the REST API and writes `devices.csv`; later
//! runs with the same `--csv` skip registration. `--connect-rate`, `--max-pending-connects`,
//! `--telemetry-interval`, `--coordinates-interval` shape the load. The
//! `load_broker` example runs a bare broker admitting the CSV's devices with a connection cap
//! of your choice.
//!
//! A firmware rollout end to end (registers and starts the fleet, creates a category, a
//! build and an image through the firmware-upgrader API, upgrades all devices in one batch
//! and shows it live), with 5% of the devices failing gracefully and 2% never answering:
//! ```text
//! cargo run --release -p fleetmq-sim -- --token $TOKEN --org acme --devices 500 \
//!     upgrade-demo --install-time 5s --fault-graceful 0.05 --fault-hang 0.02 \
//!     --waves 1,10,100 --max-parallel 100 --abort-failure-rate 0.2 --abort-min-sample 20
//! ```
//! Faults are assigned by device index with a fixed shuffle ([`FaultMix::assign`]), so the
//! same run command gives the same devices the same faults.
//!
//! # Application software (OTAO)
//! Every device of a run gets the same applications and the same behaviour:
//! ```text
//! cargo run --release -p fleetmq-sim -- --token $TOKEN --org acme --devices 10000 \
//!     --software smart-kettle=1.0.2 --software ui=2.0.0 \
//!     --software-consent accept --software-fail-fraction 0.05 --software-install-ms 200
//! ```
//! - `--software APP=VERSION` (repeatable): an application the device runs at start. A
//!   device with any application publishes its `up/software` inventory (QoS 1) after every
//!   connection and after every installation.
//! - `--software-consent accept|reject` (default `accept`): the answer to every
//!   `down/software/offer` (`rejected` carries the reason "declined by the device's software
//!   consent policy").
//! - `--software-install-ms N` (default 200): a `down/software/deliver` is answered
//!   `installing`, then `installed` N ms later (a timer: the device keeps serving meanwhile)
//!   and the new inventory follows.
//! - `--software-fail-fraction F` (0–1, default 0): the share of installations answered
//!   `failed` ("simulated installation failure") instead, picked by a hash of the device id
//!   and the operation id, so a rerun fails the same ones.
//!
//! A delivery for an application the device does not run is `failed` "application not
//! installed"; one of the version it already runs is `installed` at once. The last 64
//! operations are remembered by id: a repeated offer or delivery is answered with the
//! operation's current status and never installs twice. The run's summary counts
//! installations and failures.
//!
//! # Layout
//! - [`device`]: [`SimDevice::spawn`], [`DeviceConfig`], [`SimHandle`], [`SimEvent`]: one
//!   device's connection loop.
//! - [`fleet`]: [`Fleet`]: many devices at a paced connect rate, spread over source addresses.
//! - [`behaviour`]: what a device answers to commands and what its telemetry and position
//!   look like (pure, unit-tested).
//! - [`mqtt`]: the MQTT 3.1.1 client codec.
//! - [`tls`]: MQTT over TLS: the trusted server certificate, and client certificate login
//!   ([`DeviceTls`]).
//! - [`stats`]: [`Stats`], the fleet-wide counters behind the progress bars and the summary.
//! - [`update`]: the device side of npm.system_update 2.0 (images, update state machine,
//!   downloads) and the [`Fault`]s a device can simulate.
//! - [`software`]: application software (OTAO): the device's applications, its answers to
//!   `down/software/offer` and `down/software/deliver`, [`SoftwareConfig`].
//! - [`configuration`]: the device's configuration agent (`down/config/notice` → download,
//!   MD5 check → `up/config/status`).
//! - [`firmware`]: the firmware-upgrader REST calls of the `upgrade-demo`.
//! - [`registration`]: registering devices through the REST API, and the `id,key` CSV.
//! - [`run`]: [`RunOptions`](run::RunOptions) and one run of the binary: where its devices
//!   come from (CSV, reuse, registration) and the fleet run for `--duration`.
//! - [`demo`]: [`DemoOptions`](demo::DemoOptions) and the `upgrade-demo`: build upload,
//!   one batch upgrade watched live until it ends.
//! - [`report`]: what a run prints at the end: the run and demo summaries, the upgrade
//!   timings, the demo's JSON report, the simulator's resident memory.
//! - [`progress`]: the style of the progress bars both draw.
//! - [`error`]: the one error type, [`SimError`].

pub mod behaviour;
pub mod configuration;
pub mod demo;
pub mod device;
pub mod error;
pub mod firmware;
pub mod fleet;
pub mod mqtt;
pub mod progress;
pub mod registration;
pub mod report;
pub mod run;
pub mod software;
pub mod stats;
pub mod tls;
pub mod update;

pub use device::{DeviceConfig, SimDevice, SimEvent, SimHandle};
pub use error::SimError;
pub use fleet::{FaultMix, Fleet, FleetOptions};
pub use software::{Consent, SoftwareConfig};
pub use stats::{Stats, StatsSnapshot};
pub use tls::{ClientCertificate, DeviceTls, TrustedServer};
pub use update::Fault;
