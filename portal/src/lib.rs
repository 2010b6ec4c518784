//! Keyhole portal library: the parts of the control plane that the
//! `keyhole-portal` binary wires to sockets and the database.

pub mod api;
pub mod control;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod server_bootstrap;
pub mod state;
pub mod store;
pub mod web;
