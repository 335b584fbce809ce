//! The dnsmasq-style one-liner: one interface, one subnet, a few options, no file.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::{AddrRange, Backend, Config, Ipv4Net, LeaseTimes, OptionSet, Policy, Subnet};
use dhcp_proto::wire::code;

#[derive(Debug, Clone, clap::Args)]
pub struct QuickStart {
    /// Interface to serve (quick start, no config file).
    #[arg(long, requires_all = ["subnet", "range"])]
    pub interface: Option<String>,
    /// The interface's subnet, as ADDRESS/PREFIX.
    #[arg(long, requires = "interface")]
    pub subnet: Option<Ipv4Net>,
    /// A pool of addresses to lease, START-END; may be repeated.
    #[arg(long, requires = "interface")]
    pub range: Vec<AddrRange>,
    /// Default gateway handed to clients (option 3).
    #[arg(long, requires = "interface")]
    pub router: Option<Ipv4Addr>,
    /// DNS server handed to clients (option 6); may be repeated.
    #[arg(long, requires = "interface")]
    pub dns: Vec<Ipv4Addr>,
    /// Domain name handed to clients (option 15).
    #[arg(long, requires = "interface")]
    pub domain: Option<String>,
    /// Default lease time in seconds; the maximum is the larger of this and a day.
    #[arg(long, requires = "interface")]
    pub lease_time: Option<u32>,
    /// I/O backend: xdp where it can attach (auto), or kernel udp sockets.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendArg,
    /// AF_XDP worker threads, each owning a shard of the leases (default: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub workers: u16,
    /// Workers spin on their rings instead of sleeping: lowest latency, a core each.
    #[arg(long)]
    pub busy_poll: bool,
    /// Pin worker N to CPU N.
    #[arg(long)]
    pub pin_workers: bool,
    /// Directory of the lease journal; without it leases are kept in memory only.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// When an ACK may leave: once its lease is on disk (sync) or in memory (async).
    #[arg(long, default_value = "sync", value_name = "sync|async")]
    pub durability: crate::journal::Durability,
    /// Size of each journal segment in bytes, reserved on disk when it is created.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(crate::journal::Options::MIN_SEGMENT..=1 << 40))]
    pub journal_segment_size: u64,
    /// Unix socket for `dhcp-server ctl` (mode 0660; root and the server's user may use
    /// it); none without this flag.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve the counters in the Prometheus format at http://ADDRESS/metrics.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Send DHCPNAK for addresses this server does not know.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub authoritative: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    Auto,
    Xdp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickStartError {
    pub flag: &'static str,
    pub reason: String,
}

impl fmt::Display for QuickStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.reason)
    }
}

impl QuickStart {
    /// Builds and validates the configuration; `None` when no `--interface` was given.
    pub fn to_config(&self) -> Option<Result<Config, Vec<QuickStartError>>> {
        let interface = self.interface.clone()?;
        let (Some(net), false) = (self.subnet, self.range.is_empty()) else {
            return Some(Err(vec![QuickStartError {
                flag: "--subnet",
                reason: "--interface needs --subnet and --range".into(),
            }]));
        };
        let mut options = OptionSet::default();
        if let Some(r) = self.router {
            options.set_addresses(code::ROUTER, &[r]);
        }
        if !self.dns.is_empty() {
            options.set_addresses(code::DNS_SERVERS, &self.dns);
        }
        if let Some(d) = &self.domain {
            options.set_text(code::DOMAIN_NAME, d);
        }
        let mut lease = LeaseTimes::default();
        if let Some(t) = self.lease_time {
            lease.default = t;
            lease.min = lease.min.min(t);
            lease.max = lease.max.max(t);
        }
        let subnet = Subnet {
            net: Ipv4Net {
                addr: net.network(),
                prefix: net.prefix,
            },
            interface: Some(0),
            pools: self.range.iter().map(|&r| r.into()).collect(),
            server_id: None,
            lease,
            options,
            reservations: Vec::new(),
        };
        let config = Config {
            policy: Policy {
                authoritative: self.authoritative,
                interfaces: vec![interface],
                subnets: vec![subnet],
                ..Policy::default()
            },
            backend: match self.backend {
                BackendArg::Auto => Backend::Auto,
                BackendArg::Xdp => Backend::Xdp,
                BackendArg::Udp => Backend::Udp,
            },
            workers: self.workers,
            busy_poll: self.busy_poll,
            pin_workers: self.pin_workers,
            state_dir: self.state_dir.clone(),
            durability: self.durability,
            journal_segment_bytes: self.journal_segment_size,
            control_socket: self.control_socket.clone(),
            metrics_listen: self.metrics_listen,
            ..Config::default()
        };
        Some(config.policy.validate().map(|()| config).map_err(|bad| {
            bad.into_iter()
                .map(|b| QuickStartError {
                    flag: flag_for(&b.path),
                    reason: b.reason,
                })
                .collect()
        }))
    }
}

fn flag_for(path: &str) -> &'static str {
    if path.contains(".pools") {
        "--range"
    } else if path.contains("lease-time") {
        "--lease-time"
    } else {
        "--subnet"
    }
}
