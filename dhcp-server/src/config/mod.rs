//! The server's configuration: the process settings (interfaces' sockets, backend,
//! workers, journal, control socket, metrics) around the policy the shards answer by
//! (`dhcp_proto::policy`). The TOML file (`file`) and the command-line one-liner
//! (`quick`) both produce it, so both get the same checks; `reload` works out what a
//! changed file may change while the server runs.

mod file;
mod quick;
pub mod reload;

use std::path::PathBuf;

use crate::journal::Durability;

pub use dhcp_proto::policy::*;
pub use file::{error_at, load_file, load_file_text, parse, FileError};
pub use quick::{QuickStart, QuickStartError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// XDP where it can attach, else the kernel UDP sockets with a warning.
    #[default]
    Auto,
    /// XDP and AF_XDP workers, or refuse to start.
    Xdp,
    /// Kernel UDP sockets: no privileges beyond the port, one thread.
    Udp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Xdp => "xdp",
            Backend::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What the server answers: subnets, pools, options, reservations, failover.
    pub policy: Policy,
    pub backend: Backend,
    /// AF_XDP workers, each owning a shard of the leases; 0 means one per CPU.
    pub workers: u16,
    /// Workers spin on their rings instead of sleeping in poll: lower latency, a whole
    /// core each.
    pub busy_poll: bool,
    /// Pin worker N to CPU N.
    pub pin_workers: bool,
    /// Where the lease journal lives; without it leases live in memory only.
    pub state_dir: Option<PathBuf>,
    /// When an ACK may leave: after its journal record is on disk (sync) or in the
    /// mapping (async).
    pub durability: Durability,
    /// Size of each journal segment, reserved on disk in full when it is created.
    pub journal_segment_bytes: u64,
    /// The control socket's path; none: no control socket.
    pub control_socket: Option<PathBuf>,
    /// Users and groups besides root and the server's own user that may use it.
    pub control_uids: Vec<u32>,
    pub control_gids: Vec<u32>,
    /// Address of the HTTP listener serving `GET /metrics`; none by default.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The scrapers the metrics listener answers, by address; anyone else has the
    /// connection closed unanswered, and counted. Loopback only unless told.
    pub metrics_allow: Vec<ClientNet>,
    /// The user, and group, the server runs as once its sockets are open (it must be
    /// started as root then); none: it stays as started.
    pub user: Option<String>,
    pub group: Option<String>,
    /// What to log, in `RUST_LOG`'s syntax (`info`, `dhcp_server=debug`...); `RUST_LOG`
    /// wins when it is set. None: `info`.
    pub log_level: Option<String>,
    /// Per-client request limits the XDP program enforces (`[flood]`).
    pub flood: Flood,
    /// Bulk leasequery over TCP (`[leasequery]`); none: off. Who may ask is the
    /// policy's `leasequery`.
    pub bulk_leasequery: Option<BulkLeasequery>,
    /// Lease history and events (`[history]`); none: off.
    pub history: Option<History>,
}

/// An address prefix of either family, for the peers a listener answers
/// (`metrics-allow`): "192.0.2.0/24", "2001:db8::/32", or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNet {
    addr: std::net::IpAddr,
    len: u8,
}

impl ClientNet {
    /// The loopback addresses of both families: the default scrapers.
    pub fn loopback() -> Vec<Self> {
        vec![
            Self {
                addr: std::net::Ipv4Addr::new(127, 0, 0, 0).into(),
                len: 8,
            },
            Self {
                addr: std::net::Ipv6Addr::LOCALHOST.into(),
                len: 128,
            },
        ]
    }

    /// Whether `peer` is in the prefix; an IPv4 peer seen on an IPv6 socket
    /// (::ffff:a.b.c.d) counts as the IPv4 address it is.
    pub fn contains(&self, peer: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let bits = |len: u8, width: u8| u128::MAX.checked_shl(u32::from(width - len)).unwrap_or(0);
        match (self.addr, peer.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(p)) => {
                let mask = bits(self.len, 32) as u32;
                u32::from(net) & mask == u32::from(p) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(p)) => {
                let mask = bits(self.len, 128);
                u128::from(net) & mask == u128::from(p) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for ClientNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an address or ADDRESS/PREFIX");
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        Ok(Self { addr, len })
    }
}

impl std::fmt::Display for ClientNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Where lease events go (`[history]`, docs/history.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// This server's name in events and sinks: unique among the servers writing to
    /// one database or stream.
    pub server: String,
    /// The region its pair serves: one NATS stream per site.
    pub site: String,
    /// Log bytes the journal keeps for sinks that are behind.
    pub journal_hold: u64,
    /// Most events per delivery, for every sink; none: each sink's own (PostgreSQL
    /// 50,000, the others 8,192).
    pub batch: Option<usize>,
    pub postgres: Option<crate::history::PostgresOptions>,
    pub nats: Option<crate::history::NatsOptions>,
    pub text: Option<crate::history::TextOptions>,
}

impl Default for History {
    fn default() -> Self {
        History {
            server: host_name(),
            site: "default".into(),
            journal_hold: 4 << 30,
            batch: None,
            postgres: None,
            nats: None,
            text: None,
        }
    }
}

/// The machine's host name, as a NATS subject token allows it.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "dhcp-server".into()
    } else {
        name
    }
}

/// The bulk leasequery listener (RFC 6926).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLeasequery {
    /// Where it listens: TCP port 67 on every address unless told.
    pub listen: std::net::SocketAddr,
    /// Connections served at once; more are refused and counted (RFC 6926 §7.1
    /// suggests 10).
    pub connections: u16,
    /// Seconds a connection may make no progress (no query read, no reply taken by the
    /// requester) before it is closed.
    pub timeout: u32,
}

impl Default for BulkLeasequery {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 67)),
            connections: 10,
            timeout: 30,
        }
    }
}

/// Request limits enforced in the XDP program (`[flood]`): a token bucket per client
/// hardware address, and one per relay agent circuit id for relayed requests that carry
/// one. A rate of 0 is no limit; both 0 (the default) leaves the program as without
/// them. The UDP backend cannot apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Requests a second per client hardware address.
    pub client_rate: u32,
    /// Requests a client may send at once after a quiet spell.
    pub client_burst: u32,
    /// Requests a second per relay agent circuit id.
    pub circuit_rate: u32,
    pub circuit_burst: u32,
    /// Buckets each table holds before it forgets the least recently used.
    pub table_size: u32,
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            client_rate: 0,
            client_burst: 0,
            circuit_rate: 0,
            circuit_burst: 0,
            table_size: dhcp_ebpf_common::FLOOD_TABLE_SIZE,
        }
    }
}

impl Flood {
    pub fn is_on(&self) -> bool {
        self.client_rate > 0 || self.circuit_rate > 0
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            backend: Backend::Auto,
            workers: 0,
            busy_poll: false,
            pin_workers: false,
            state_dir: None,
            durability: Durability::Sync,
            journal_segment_bytes: 64 << 20,
            control_socket: None,
            control_uids: Vec::new(),
            control_gids: Vec::new(),
            metrics_listen: None,
            metrics_allow: ClientNet::loopback(),
            user: None,
            group: None,
            log_level: None,
            flood: Flood::default(),
            bulk_leasequery: None,
            history: None,
        }
    }
}

/// The log filter a `log-level` value stands for, or why it is not one.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if level.trim().is_empty() {
        return Err("empty; use a level such as \"info\" or \"debug\"".into());
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|e| {
            format!("'{level}' is not a log filter like \"info\" or \"dhcp_server=debug\": {e}")
        })
}

#[cfg(test)]
mod tests {
    use super::ClientNet;

    #[test]
    fn client_nets_hold_their_addresses_only() {
        let net: ClientNet = "192.0.2.0/24".parse().unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.77".parse().unwrap()));
        assert!(!net.contains("198.51.100.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let one: ClientNet = "203.0.113.9".parse().unwrap();
        assert_eq!(one.to_string(), "203.0.113.9/32");
        assert!(!one.contains("203.0.113.8".parse().unwrap()));
        let any: ClientNet = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("198.18.0.1".parse().unwrap()));
        let v6: ClientNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        let loopback = ClientNet::loopback();
        assert!(loopback
            .iter()
            .any(|n| n.contains("127.0.0.2".parse().unwrap())));
        assert!(loopback.iter().any(|n| n.contains("::1".parse().unwrap())));
        assert!(!loopback
            .iter()
            .any(|n| n.contains("192.0.2.1".parse().unwrap())));
        for bad in ["192.0.2.0/33", "2001:db8::/129", "host", "192.0.2.0/"] {
            assert!(bad.parse::<ClientNet>().is_err(), "{bad}");
        }
    }
}
