//! One router module per resource.

pub mod devices;
pub mod health;
pub mod organizations;
pub mod users;
