//! The DHCP protocol without I/O, as quinn-proto is for QUIC: bytes and the time go in,
//! replies, journal records and failover messages come out. `wire` reads and writes DHCPv4
//! messages, `lease` is the lease model, `policy` what the operator configured, `expr`
//! the client-class test language, `engine` decides what to answer, `leasequery` what to tell a requester of the leases, and `failover` speaks
//! ISC dhcpd's failover protocol and runs its state machine. `dhcp-server` drives it with
//! sockets, AF_XDP rings, a journal and a clock.

pub mod engine;
pub mod expr;
pub mod failover;
pub mod lease;
pub mod leasequery;
pub mod policy;
pub mod wire;
