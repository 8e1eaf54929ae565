//! One router module per resource.

pub mod agent;
pub mod broker_auth;
pub mod commands;
pub mod config_settings;
pub mod connections;
pub mod coordinates;
pub mod credentials;
pub mod device_location;
pub mod devices;
pub mod events;
pub mod firmware;
pub mod floorplans;
pub mod geometry;
pub mod groups;
pub mod health;
pub mod locations;
pub mod oauth;
pub mod organizations;
pub mod otao;
pub mod pki;
pub mod session;
pub mod system_update;
pub mod telemetry;
pub mod templates;
pub mod users;
pub mod vpns;
