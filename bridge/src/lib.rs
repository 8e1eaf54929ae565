//! The bridge between MQTT and the domain: it decides who a connecting client is (from the
//! store) and, as the device plane grows, turns device messages into stored state and
//! REST/rollout decisions into MQTT commands.
//!
//! # Layout
//! - [`auth`] — [`auth::StoreAuthenticator`]: device keys and operator tokens checked against
//!   the store, answering the broker's [`fleetmq_broker::Authenticator`] questions.

pub mod auth;
