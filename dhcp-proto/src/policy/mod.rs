//! The policy: what the server answers, resolved, typed, and checked as a whole by
//! `Policy::validate` (subnets, pools, options, reservations, lease times, the failover
//! partnership). The process settings (sockets, threads, journal) and the loaders that
//! read a file or a command line into this model live in `dhcp-server`'s `config`.
//! Shards share one `Policy` behind an `Arc`; a reload swaps it.

pub mod class;
mod failover;
mod options;
pub mod reserve;

use std::fmt;
use std::net::Ipv4Addr;

pub use class::{Class, Membership, Settings, Subclass};
pub use failover::Failover;
pub use options::{ClasslessRoute, OptionSet};

/// Index of a listening interface in `Policy::interfaces`; the backend maps it to a
/// socket, the engine uses it to place direct (non-relayed) clients.
pub type LinkId = u16;

/// Index of a client class in `Policy::classes`, or one of the built-in classes.
pub type ClassId = u16;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Send DHCPNAK for addresses this server does not know (dhcpd's `authoritative;`).
    /// Off, the server stays silent unless it knows the client's claim is wrong.
    pub authoritative: bool,
    /// Seconds an offered address stays held for the client it was offered to.
    pub offer_hold: u32,
    /// Seconds a declined address is kept out of use (Kea's decline-probation-period).
    pub decline_hold: u32,
    /// The links the server listens on, by interface name; a subnet names its link by
    /// index (`LinkId`) to serve the link's direct clients.
    pub interfaces: Vec<String>,
    pub subnets: Vec<Subnet>,
    /// The failover partnership, covering every pool; none: this server works alone.
    pub failover: Option<Failover>,
    /// Client classes, in the order they are evaluated: a test may name only the
    /// classes before it.
    pub classes: Vec<Class>,
    /// The expression whose value `flex-id` reservations are looked up by (Kea's
    /// flex-id `identifier-expression`), e.g. the remote id joined with the circuit id.
    pub flex_id: Option<crate::expr::Value>,
    /// Who may ask by leasequery (RFC 4388, RFC 6926): the requesters' addresses or
    /// prefixes, matched against the query's giaddr, where the answer goes. Empty: no
    /// one, leasequery is off (dhcpd's default too, for the subscribers' privacy).
    pub leasequery: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn mask_addr(&self) -> Ipv4Addr {
        self.mask().into()
    }
    pub fn network(&self) -> Ipv4Addr {
        (u32::from(self.addr) & self.mask()).into()
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        (u32::from(self.addr) | !self.mask()).into()
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("'{p}' is not a prefix length"))?;
        Ipv4Net::new(addr, prefix).ok_or_else(|| format!("prefix length {prefix} is above 32"))
    }
}

/// An inclusive range of addresses, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    pub fn len(&self) -> u64 {
        (u32::from(self.last) as u64 + 1).saturating_sub(u32::from(self.first) as u64)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }
    fn overlaps(&self, other: &AddrRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for AddrRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("'{s}' is not START-END"))?;
        let ip = |t: &str| {
            t.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("'{t}' is not an IPv4 address"))
        };
        Ok(AddrRange {
            first: ip(a)?,
            last: ip(b)?,
        })
    }
}

/// A range of addresses to hand out, and which clients may have them: when `allow`
/// names classes, only their members; never members of a `deny` class (dhcpd's
/// `allow members of` / `deny members of`, Kea's pool `client-classes`). Its options
/// override the subnet's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pool {
    pub range: AddrRange,
    pub allow: Vec<ClassId>,
    pub deny: Vec<ClassId>,
    pub options: OptionSet,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.range.contains(ip)
    }

    /// Whether the pool is open to everyone, the common case the engine need not classify for.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl From<AddrRange> for Pool {
    fn from(range: AddrRange) -> Self {
        Pool {
            range,
            ..Pool::default()
        }
    }
}

/// A pool open to every client, written as its range.
impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<AddrRange>().map(Pool::from)
    }
}

impl Default for AddrRange {
    fn default() -> Self {
        AddrRange {
            first: Ipv4Addr::UNSPECIFIED,
            last: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// Lease durations in seconds. T1 and T2 default to 1/2 and 7/8 of the lease granted
/// (RFC 2131 §4.4.5); configured ones apply to leases long enough to hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub default: u32,
    pub min: u32,
    pub max: u32,
    pub renew: Option<u32>,
    pub rebind: Option<u32>,
}

impl LeaseTimes {
    /// Checks the times are in order; else the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.min == 0 || self.min > self.default || self.default > self.max {
            return Err((
                "lease-time",
                format!(
                    "needs 0 < min-lease-time ({}) <= lease-time ({}) <= max-lease-time ({})",
                    self.min, self.default, self.max
                ),
            ));
        }
        match (self.renew, self.rebind) {
            (Some(t1), Some(t2)) if t1 >= t2 => Err((
                "renew-time",
                format!("renew-time {t1} is not below rebind-time {t2}"),
            )),
            _ => Ok(()),
        }
    }
}

impl Default for LeaseTimes {
    fn default() -> Self {
        Self {
            default: 3600,
            min: 60,
            max: 86400,
            renew: None,
            rebind: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub net: Ipv4Net,
    /// The link whose direct clients this subnet serves; relayed clients are placed by
    /// giaddr whatever the link.
    pub interface: Option<LinkId>,
    pub pools: Vec<Pool>,
    /// Server identifier and source address for this subnet's replies; by default the
    /// address the request reached.
    pub server_id: Option<Ipv4Addr>,
    pub lease: LeaseTimes,
    pub options: OptionSet,
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reservation {
    pub hw_address: Option<[u8; 6]>,
    pub client_id: Option<Vec<u8>>,
    /// The subscriber as the relay or the flex-id expression names it, whatever
    /// device it uses (dhcpd's `host-identifier option agent.circuit-id`, Kea's
    /// circuit-id and flex-id reservations).
    pub subscriber: Option<Subscriber>,
    pub address: Option<Ipv4Addr>,
    pub host_name: Option<String>,
    pub options: OptionSet,
}

/// What names a subscriber: a relay agent sub-option's value, or the policy's flex-id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscriber {
    pub kind: SubscriberKind,
    pub value: Vec<u8>,
}

impl Subscriber {
    /// A value as operators write it: text, or `0x` and hex octets (`0x00:1a:2b`,
    /// separators optional) for the binary ones some relays send; 1 to 255 octets.
    pub fn parse_value(s: &str) -> Option<Vec<u8>> {
        let v = match s.strip_prefix("0x") {
            Some(h) => {
                let digits: Vec<u8> = h.bytes().filter(|b| *b != b':' && *b != b'-').collect();
                if !digits.len().is_multiple_of(2) {
                    return None;
                }
                digits
                    .chunks(2)
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?
            }
            None => s.as_bytes().to_vec(),
        };
        (1..=255).contains(&v.len()).then_some(v)
    }

    /// The value written so that `parse_value` reads it back.
    pub fn format_value(v: &[u8]) -> String {
        let text = crate::lease::printable(v);
        if text.as_bytes() == v && !text.starts_with("0x") {
            text
        } else {
            format!("0x{}", crate::lease::hex(v))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriberKind {
    /// Relay agent sub-option 1.
    CircuitId = 1,
    /// Relay agent sub-option 2.
    RemoteId = 2,
    /// Relay agent sub-option 6.
    SubscriberId = 6,
    /// The value of `Policy::flex_id`.
    Flex = 255,
}

impl SubscriberKind {
    pub const ALL: [SubscriberKind; 4] = [
        SubscriberKind::CircuitId,
        SubscriberKind::RemoteId,
        SubscriberKind::SubscriberId,
        SubscriberKind::Flex,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// Its place in `ALL`.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// The name the file, the control socket and the tables use.
    pub fn name(self) -> &'static str {
        match self {
            SubscriberKind::CircuitId => "circuit-id",
            SubscriberKind::RemoteId => "remote-id",
            SubscriberKind::SubscriberId => "subscriber-id",
            SubscriberKind::Flex => "flex-id",
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            authoritative: true,
            offer_hold: 30,
            decline_hold: 86400,
            interfaces: Vec::new(),
            subnets: Vec::new(),
            failover: None,
            classes: Vec::new(),
            flex_id: None,
            leasequery: Vec::new(),
        }
    }
}

/// One thing wrong with a configuration: where (a key path such as `subnet[1].pools[0]`,
/// which the file loader turns into a line) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Largest number of addresses the server manages: lease slots are indexed by u32 and
/// preallocated, so this bounds memory at start.
pub const MAX_ADDRESSES: u64 = 1 << 24;

impl Policy {
    /// Checks what the engine relies on: every address it may hand out belongs to one
    /// subnet and one pool only, reservations are unambiguous, lease times are ordered,
    /// and a failover partnership is sound and keeps its own addresses out of the pools.
    /// Returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut bad = Vec::new();
        let mut err = |path: String, reason: String| bad.push(Invalid { path, reason });
        if self.subnets.is_empty() {
            err("subnet".into(), "at least one subnet is needed".into());
        }
        if self.offer_hold == 0 {
            err("offer-hold".into(), "must be at least 1 second".into());
        }
        let mut total: u64 = 0;
        for (i, s) in self.subnets.iter().enumerate() {
            let at = |key: &str| format!("subnet[{i}].{key}");
            if s.net.prefix > 30 || s.net.prefix < 8 {
                err(
                    at("subnet"),
                    format!("prefix /{} is outside /8 to /30", s.net.prefix),
                );
            }
            if s.net.addr != s.net.network() {
                err(
                    at("subnet"),
                    format!("{} has host bits set; write {}", fmt_net(s), s.net),
                );
            }
            for (j, o) in self.subnets.iter().enumerate().take(i) {
                if s.net.contains(o.net.network()) || o.net.contains(s.net.network()) {
                    err(at("subnet"), format!("overlaps subnet[{j}] {}", o.net));
                }
            }
            if s.interface
                .is_some_and(|l| l as usize >= self.interfaces.len())
            {
                err(at("interface"), "names no listening interface".into());
            }
            if s.pools.is_empty() && s.reservations.iter().all(|r| r.address.is_none()) {
                err(
                    at("pools"),
                    "the subnet has no pool and no reserved address".into(),
                );
            }
            for (p, r) in s.pools.iter().map(|p| &p.range).enumerate() {
                let at = || format!("subnet[{i}].pools[{p}]");
                if r.first > r.last {
                    err(at(), format!("range {r} ends before it starts"));
                    continue;
                }
                if !s.net.contains(r.first) || !s.net.contains(r.last) {
                    err(at(), format!("range {r} is not inside {}", s.net));
                } else if r.contains(s.net.network()) || r.contains(s.net.broadcast()) {
                    err(
                        at(),
                        format!("range {r} includes the network or broadcast address"),
                    );
                }
                for (q, o) in s.pools.iter().map(|p| &p.range).enumerate().take(p) {
                    if r.overlaps(o) {
                        err(at(), format!("range {r} overlaps pools[{q}] {o}"));
                    }
                }
                total += r.len();
            }
            if let Err((key, why)) = s.lease.check() {
                err(at(key), why);
            }
            for (p, pool) in s.pools.iter().enumerate() {
                for (key, ids) in [("allow", &pool.allow), ("deny", &pool.deny)] {
                    for &id in ids.iter().filter(|&&id| !class::defined(&self.classes, id)) {
                        err(
                            format!("subnet[{i}].pool[{p}].{key}"),
                            format!("names no class (index {id})"),
                        );
                    }
                }
            }
            self.validate_reservations(i, s, &mut err);
        }
        if let Some(f) = &self.failover {
            f.validate(&self.subnets, &mut err);
        }
        class::validate(&self.classes, &mut err);
        if total > MAX_ADDRESSES {
            err(
                "subnet".into(),
                format!("pools hold {total} addresses; at most {MAX_ADDRESSES} are supported"),
            );
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }

    fn validate_reservations(&self, i: usize, s: &Subnet, err: &mut impl FnMut(String, String)) {
        for (k, r) in s.reservations.iter().enumerate() {
            let at = |key: &str| format!("subnet[{i}].reservation[{k}].{key}");
            if r.hw_address.is_none() && r.client_id.is_none() && r.subscriber.is_none() {
                err(
                    at("hw-address"),
                    "a reservation needs hw-address, client-id, circuit-id, remote-id, \
                     subscriber-id or flex-id"
                        .into(),
                );
            }
            if r.subscriber
                .as_ref()
                .is_some_and(|s| s.kind == SubscriberKind::Flex)
                && self.flex_id.is_none()
            {
                err(
                    at("flex-id"),
                    "a flex-id reservation needs flex-id = \"...\" at the top level".into(),
                );
            }
            if let Some(a) = r.address {
                if !s.net.contains(a) || a == s.net.network() || a == s.net.broadcast() {
                    err(
                        at("ip-address"),
                        format!("{a} is not a host address of {}", s.net),
                    );
                }
            }
            for (l, o) in s.reservations.iter().enumerate().take(k) {
                if same(&r.hw_address, &o.hw_address) {
                    err(
                        at("hw-address"),
                        format!("also reserved by reservation[{l}]"),
                    );
                }
                if same(&r.client_id, &o.client_id) {
                    err(
                        at("client-id"),
                        format!("also reserved by reservation[{l}]"),
                    );
                }
                if same(&r.subscriber, &o.subscriber) {
                    let kind = r.subscriber.as_ref().map_or("", |s| s.kind.name());
                    err(at(kind), format!("also reserved by reservation[{l}]"));
                }
                if same(&r.address, &o.address) {
                    err(
                        at("ip-address"),
                        format!("also reserved by reservation[{l}]"),
                    );
                }
            }
        }
    }
}

fn same<T: PartialEq>(x: &Option<T>, y: &Option<T>) -> bool {
    x.is_some() && x == y
}

fn fmt_net(s: &Subnet) -> String {
    format!("{}/{}", s.net.addr, s.net.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_subnet() -> Policy {
        Policy {
            interfaces: vec!["veth0".into()],
            subnets: vec![Subnet {
                net: "192.0.2.0/24".parse().unwrap(),
                interface: Some(0),
                pools: vec!["192.0.2.10-192.0.2.20".parse().unwrap()],
                server_id: None,
                lease: LeaseTimes::default(),
                options: OptionSet::default(),
                reservations: vec![],
            }],
            ..Policy::default()
        }
    }

    #[test]
    fn a_plain_subnet_is_valid() {
        one_subnet().validate().unwrap();
    }

    #[test]
    fn pool_outside_subnet_names_its_path() {
        let mut c = one_subnet();
        c.subnets[0]
            .pools
            .push("198.51.100.1-198.51.100.9".parse().unwrap());
        let e = c.validate().unwrap_err();
        assert_eq!(e[0].path, "subnet[0].pools[1]");
        assert!(
            e[0].reason.contains("not inside 192.0.2.0/24"),
            "{}",
            e[0].reason
        );
    }

    #[test]
    fn overlapping_pools_and_subnets_are_refused() {
        let mut c = one_subnet();
        c.subnets[0]
            .pools
            .push("192.0.2.15-192.0.2.30".parse().unwrap());
        c.subnets.push(c.subnets[0].clone());
        let e = c.validate().unwrap_err();
        assert!(e
            .iter()
            .any(|e| e.path == "subnet[0].pools[1]" && e.reason.contains("overlaps")));
        assert!(e
            .iter()
            .any(|e| e.path == "subnet[1].subnet" && e.reason.contains("overlaps")));
    }

    #[test]
    fn lease_times_must_be_ordered() {
        let mut c = one_subnet();
        c.subnets[0].lease.default = 10;
        c.subnets[0].lease.min = 60;
        assert_eq!(c.validate().unwrap_err()[0].path, "subnet[0].lease-time");
    }

    #[test]
    fn duplicate_reservations_are_refused() {
        let mut c = one_subnet();
        let r = Reservation {
            hw_address: Some([2, 0, 0, 0, 0, 1]),
            ..Default::default()
        };
        c.subnets[0].reservations = vec![r.clone(), r];
        assert_eq!(
            c.validate().unwrap_err()[0].path,
            "subnet[0].reservation[1].hw-address"
        );
    }
}
