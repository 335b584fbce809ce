//! Failover as the running server does it: `link` drives the protocol's state machine
//! (`dhcp_proto::failover`) over a TCP connection to the partner, and `shards` carries
//! its orders to the workers that own the leases.

pub mod link;
pub mod shards;
