//! The REST API end to end, over real sockets, against a whole server.

mod agent;
mod auth;
mod broker_auth;
mod connections;
mod devices;
mod filters;
mod firmware;
mod limits;
mod pagination;
mod robustness;
mod server;
mod session;
mod system_update;
mod tenancy;
mod upgrades;
