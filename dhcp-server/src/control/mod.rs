//! The operator interface: a Unix control socket speaking line-delimited JSON
//! (`protocol`), the same counters in the Prometheus text format (`metrics`), systemd
//! readiness notification (`notify`) and a blocking client (`client`) that
//! `dhcp-server ctl` (in the binary) prints from.
//!
//! The I/O threads own all lease and counter state, so this module never touches it: a
//! backend implements `Server`, whose calls may block briefly while the backend asks its
//! workers, and `serve` runs the socket on its own thread with a small tokio runtime that
//! makes those calls on a bounded blocking pool. A slow call delays only the client that
//! made it; no worker ever waits on the control side.

pub mod client;
mod http;
mod listener;
pub mod metrics;
mod notify;
pub mod protocol;
mod server;
pub mod types;

pub use client::{Client, ClientError};
pub use listener::{serve, AccessList, Handle, Options, ServeError};
pub use notify::{notify_ready, notify_stopping};
pub use server::{no_partner, Pending, Server, NO_PARTNER};
pub use types::*;

/// Where the socket lives unless configured otherwise (systemd's RuntimeDirectory).
pub const DEFAULT_SOCKET: &str = "/run/dhcp-server/control.sock";
