//! The DHCPv4 server around the sans-I/O protocol crate (`dhcp_proto`: wire, lease model,
//! engine, policy, failover machine). The `runtime` owns assembly: the lease `journal`,
//! the shards and their loop, the `failover` link to the partner, the operator's
//! `control` socket, the lease `history` followed from the journal into PostgreSQL, NATS
//! or text files; `privileges` the switch to an ordinary user after setup. Backends only
//! move bytes: `xdp` (AF_XDP workers fed by the XDP program) and `udp` (kernel sockets).
//! `config` reads the file and the command line; `calendar` turns times into UTC dates.

pub mod calendar;
pub mod config;
pub mod control;
pub mod failover;
pub mod history;
pub mod journal;
pub mod loopback;
pub mod netif;
pub mod packet;
pub mod privileges;
pub mod runtime;
pub mod udp;
pub mod xdp;
