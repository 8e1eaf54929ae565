//! fleetmq-sim: simulated devices that speak only fleetmq's MQTT wire contract
//! ([`fleetmq_protocol`]), for integration tests, demos and load generation.
//!
//! A simulated device connects with client id = user name = its device id and its key as
//! password, registers a retained `offline` presence as its last will, announces itself
//! `online` (retained), subscribes to its `down/#`, publishes telemetry and coordinates on
//! timers, answers commands (`custom`, `reboot`, `change_password`) and reconnects with
//! backoff when the broker drops it. Tests drive one device through a [`SimHandle`]; the
//! `fleetmq-sim` binary drives thousands through a [`Fleet`].
//!
//! # Why a hand-written MQTT client
//! The load generator must hold ~19,000 connections in one process. rumqttc (already in the
//! workspace) cannot bind a socket's *source address*, which is how one process gets past the
//! ~28k ephemeral ports of a single source address (we spread over 127.0.0.x), and each of
//! its clients carries an event loop, a request channel and pre-sized in-flight state. A
//! device needs only CONNECT/CONNACK, PUBLISH at QoS 0/1 with PUBACK, SUBSCRIBE/SUBACK and
//! PINGREQ/PINGRESP: [`mqtt`] is that codec (~250 lines, unit-tested), and each device is one
//! tokio task owning its socket, two small buffers and its timers.
//!
//! # Layout
//! - [`device`]: [`SimDevice::spawn`], [`DeviceConfig`], [`SimHandle`], [`SimEvent`]: one
//!   device's connection loop.
//! - [`fleet`]: [`Fleet`]: many devices at a paced connect rate, spread over source addresses.
//! - [`behaviour`]: what a device answers to commands and what its telemetry and position
//!   look like (pure, unit-tested).
//! - [`mqtt`]: the MQTT 3.1.1 client codec.
//! - [`stats`]: [`Stats`], the fleet-wide counters behind the progress bars and the summary.
//! - [`registration`]: registering devices through the REST API, and the `id,key` CSV.
//! - [`error`]: the one error type, [`SimError`].

pub mod behaviour;
pub mod device;
pub mod error;
pub mod fleet;
pub mod mqtt;
pub mod registration;
pub mod stats;

pub use device::{DeviceConfig, SimDevice, SimEvent, SimHandle};
pub use error::SimError;
pub use fleet::{Fleet, FleetOptions};
pub use stats::{Stats, StatsSnapshot};
