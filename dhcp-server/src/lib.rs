//! A DHCPv4 server built around one sans-I/O core: `wire` reads and writes messages,
//! `engine` decides what to answer (time passed in, no sockets), and thin I/O layers
//! (`udp` today, AF_XDP workers later) move bytes between the network and the engine.

pub mod config;
pub mod control;
pub mod engine;
pub mod failover;
pub mod journal;
pub mod netif;
pub mod operate;
pub mod packet;
pub mod shutdown;
pub mod store;
pub mod udp;
pub mod wire;
pub mod xdp;
