//! The DHCPv4 server around the sans-I/O protocol crate (`dhcp_proto`: wire, lease model,
//! engine, policy, failover machine): the backends that move bytes (`xdp`: AF_XDP
//! workers fed by the XDP program; `udp`: kernel sockets), the lease `journal`, the
//! failover `link` to the partner, the operator's `control` socket, and the `config`
//! loaders.

pub mod config;
pub mod control;
pub mod failover;
pub mod journal;
pub mod netif;
pub mod operate;
pub mod packet;
pub mod shutdown;
pub mod store;
pub mod udp;
pub mod xdp;
