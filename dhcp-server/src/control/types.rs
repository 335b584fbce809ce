//! The plain data that crosses the control boundary: what a backend reports (`Status`,
//! `Stats`, `Lease`), what an operator asks for (`PageQuery`, `ReservationSpec`,
//! `ClassMember`) and how a request fails (`ControlError`). Every type serializes to the JSON documented in
//! docs/control.md; field names there are these field names, so renaming one is a
//! protocol change.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{Ipv4Net, SubscriberKind};
use crate::journal::Durability;

/// What `status` answers: enough for a rolling restart to wait on `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// True only once the journal is recovered and every socket is up.
    pub ready: bool,
    /// The server's version (`CARGO_PKG_VERSION`).
    pub version: String,
    pub uptime_secs: u64,
    pub backend: BackendKind,
    /// How the XDP program is attached and the AF_XDP sockets copy; absent on `udp`.
    pub xdp: Option<XdpStatus>,
    /// Lease shards, one thread each (1 on the `udp` backend).
    pub workers: u16,
    pub interfaces: Vec<String>,
    /// Absent when the server keeps leases in memory only (no state directory).
    pub journal: Option<JournalStatus>,
    /// The reservations in force (added in 0.1: absent from older servers).
    #[serde(default)]
    pub reservations: ReservationCounts,
    /// Where the configuration came from and when it was last loaded.
    #[serde(default)]
    pub config: ConfigStatus,
    /// The failover partnership; absent (not null) without a partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverStatus>,
    /// The lease history's sinks (`[history]`); absent without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SinkStatus>,
}

/// One lease history sink: how far behind the journal it is and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// "postgres", "nats" or "text".
    pub sink: String,
    /// The last open or delivery succeeded.
    pub connected: bool,
    pub delivered: u64,
    /// Journal records not delivered yet.
    pub lag_records: u64,
    /// How old the newest delivered event is, while behind; 0 when caught up.
    pub lag_seconds: u64,
    /// Records compacted before the sink got them (the journal's hold was full).
    pub lost: u64,
    pub errors: u64,
    /// The last error and when (Unix seconds).
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

/// How many reservations the server applies, by where they come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationCounts {
    /// In the configuration file (`[[subnet.reservation]]`).
    pub file: u64,
    /// Added with `reservation-add`, kept in the journal.
    pub control: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The configuration file; absent when the server was started from flags.
    pub file: Option<PathBuf>,
    /// When it was last read successfully (start or reload), Unix seconds.
    pub loaded: u64,
}

/// The failover partnership as `status` shows it, from the link's latest snapshot. The
/// names are those of the failover protocol as ISC dhcpd logs them, so new states or
/// services on a newer server do not break an older client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// The relationship name (the same on both partners).
    pub name: String,
    /// "primary" or "secondary".
    pub role: String,
    /// This server's state ("normal", "communications-interrupted", "partner-down"…).
    pub local_state: String,
    /// When this server entered it (STOS), Unix seconds.
    pub local_stos: u64,
    /// The partner's state as last heard, and since when (its STOS), Unix seconds.
    pub peer_state: String,
    pub peer_stos: u64,
    /// What the pair's states let this server do for clients: "cooperating",
    /// "not-cooperating", "partner-down", "not-responding" or "startup".
    pub service: String,
    /// Whether the TCP link to the partner is up.
    pub connected: bool,
    /// Maximum client lead time, seconds.
    pub mclt: u32,
    /// Binding updates waiting to be sent to the partner.
    pub queued_updates: u64,
    /// Binding updates sent and not yet acknowledged.
    pub unacked_updates: u64,
}

impl FailoverStatus {
    /// The failover protocol's number for a state name (ISC's, as in dhcpd.leases and
    /// the journal): 2 for "normal", 4 for "partner-down", 0 for "unknown-state"…
    pub fn state_number(name: &str) -> Option<u8> {
        (0..=u8::MAX).find(|&n| {
            let s = dhcp_proto::failover::ServerState::from(n);
            !matches!(s, dhcp_proto::failover::ServerState::Other(_)) && s.name() == name
        })
    }
}

/// The backend actually serving, after `auto` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Xdp,
    Udp,
    /// In memory, inside a test process.
    Loopback,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Xdp => "xdp",
            BackendKind::Udp => "udp",
            BackendKind::Loopback => "loopback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpStatus {
    pub attach: XdpAttach,
    pub copy: XdpCopy,
}

/// Driver (native) mode, or generic (skb) mode when the driver has no XDP support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpAttach {
    Driver,
    Generic,
}

impl XdpAttach {
    pub fn name(self) -> &'static str {
        match self {
            XdpAttach::Driver => "driver",
            XdpAttach::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpCopy {
    ZeroCopy,
    Copy,
}

impl XdpCopy {
    pub fn name(self) -> &'static str {
        match self {
            XdpCopy::ZeroCopy => "zero-copy",
            XdpCopy::Copy => "copy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    pub dir: PathBuf,
    #[serde(with = "durability")]
    pub durability: Durability,
    /// False once a write or flush failed; `error` says which.
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The journal's `Durability` as "sync" / "async", the words of the configuration file.
mod durability {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Durability, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Durability::Sync => "sync",
            Durability::Async => "async",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Durability, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Counters since start. Message and drop counters are keyed by name so a new drop reason
/// in the engine needs no change here: messages are "discover", "offer", "request",
/// "decline", "ack", "nak", "release", "inform" and "other"; drop reasons are the
/// engine's `Drop::name()`s. `xdp` holds the XDP program's frame counters by name
/// ("redirected", "passed", "malformed", "no-socket", "balanced", "flood-client",
/// "flood-circuit"); with the UDP backend, its reply counters ("replies-aside",
/// "replies-aside-failed", "replies-failed"); frames the XDP program dropped never reach
/// the engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub received: BTreeMap<String, u64>,
    pub sent: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
    /// The XDP program's frames, by what it did with them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xdp: BTreeMap<String, u64>,
    /// The UDP backend's replies, by the socket they left through or why they did not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub udp: BTreeMap<String, u64>,
    pub shards: Vec<ShardStats>,
    pub pools: Vec<PoolStats>,
    pub latency: Latency,
    /// Bulk leasequery over TCP; absent when the server does not listen for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_leasequery: Option<BulkStats>,
    /// Connections turned away unanswered because of who made them, by listener:
    /// "control" (a user not on the access list), "metrics" (an address outside
    /// `metrics-allow`), "failover" (an address other than the partner's, or a second
    /// connection while the partner is connected); only the listeners the server runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
}

/// Bulk leasequery (RFC 6926) connections and what they were sent, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkStats {
    /// Connections served: from an allowed requester, within `bulk-connections`.
    pub accepted: u64,
    /// Connections closed at once (over `bulk-connections`) or answered NotAllowed (a
    /// peer outside `requesters`).
    pub refused: u64,
    /// Connections closed after `bulk-timeout` without progress: nothing read, a frame
    /// left partial, or replies the requester stopped taking.
    pub timed_out: u64,
    /// Frames that were not a DHCPBULKLEASEQUERY, answered with a DHCPLEASEQUERYSTATUS.
    pub malformed: u64,
    /// Queries run to their DHCPLEASEQUERYDONE.
    pub queries: u64,
    /// DHCPLEASEACTIVE and DHCPLEASEUNASSIGNED messages handed to the requesters.
    pub bindings_sent: u64,
}

/// One worker's share of the traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    pub shard: u16,
    pub received: u64,
    pub sent: u64,
    pub dropped: u64,
}

/// Address use of one subnet's pools, summed over shards. `free` counts addresses that
/// may be given now (never used, released, expired); reserved addresses not leased count
/// in `total` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    #[serde(with = "cidr")]
    pub subnet: Ipv4Net,
    pub total: u64,
    pub free: u64,
    pub offered: u64,
    pub active: u64,
    pub declined: u64,
    /// Failover: free addresses in the partner's pool, the partner's to give (0 without
    /// a partner). Counted in `total`, not in `free`.
    #[serde(default)]
    pub partner: u64,
}

/// `Ipv4Net` as "192.0.2.0/24".
mod cidr {
    use super::*;

    pub fn serialize<S: Serializer>(n: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Time from a request's arrival to its reply leaving (journal commit included), in
/// microseconds, over every sample since start. All zero before the first reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// A lookup of leases or reservations by address, MAC or client identifier, or a page of
/// their list. Lists are in address order; the next page starts after `cursor` (the
/// previous page's `next_cursor`), which stays valid however the table changes in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub filter: Option<LeaseFilter>,
    pub cursor: Option<Ipv4Addr>,
    /// 1..=`MAX_PAGE`, checked by the protocol before a backend sees it.
    pub limit: u32,
}

/// The most leases one reply carries; more take another page.
pub const MAX_PAGE: u32 = 1000;
/// The page size when the request names none.
pub const DEFAULT_PAGE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseFilter {
    Address(Ipv4Addr),
    Mac(MacAddr),
    ClientId(ClientId),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePage {
    pub leases: Vec<Lease>,
    /// Where the next page starts; absent on the last page.
    pub next_cursor: Option<Ipv4Addr>,
}

/// One address the server knows a client for. Free never-used addresses are not listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    #[serde(with = "cidr")]
    pub subnet: Ipv4Net,
    pub state: LeaseState,
    /// The client's Ethernet address; absent for other hardware types.
    pub mac: Option<MacAddr>,
    /// Option 61 when the client sent one.
    pub client_id: Option<ClientId>,
    /// When the current state ends (offer hold, lease end, quarantine end), Unix seconds.
    pub expires: Option<u64>,
    /// When the client was last acknowledged, Unix seconds.
    pub cltt: Option<u64>,
    pub reserved: bool,
    /// The worker that owns the lease.
    pub shard: u16,
    /// The relay agent information the lease was last granted through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayInfo>,
}

/// Relay agent information (option 82) as an operator reads it: the sub-options that
/// identify the subscriber, as text when printable, else hex; and the whole option in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_id: Option<String>,
    pub raw: String,
}

impl RelayInfo {
    pub fn from_option(value: &[u8]) -> Self {
        use dhcp_proto::lease::{hex, printable};
        use dhcp_proto::wire::relay::{sub, sub_option};
        let field = |code| sub_option(value, code).map(printable);
        RelayInfo {
            circuit_id: field(sub::CIRCUIT_ID),
            remote_id: field(sub::REMOTE_ID),
            subscriber_id: field(sub::SUBSCRIBER_ID),
            raw: hex(value),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseState {
    Free,
    Offered,
    Active,
    Released,
    Expired,
    Declined,
    /// Failover: free in the partner's pool.
    Partner,
}

impl LeaseState {
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Free => "free",
            LeaseState::Offered => "offered",
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Declined => "declined",
            LeaseState::Partner => "partner",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationPage {
    pub reservations: Vec<ReservationInfo>,
    /// Where the next page starts; absent on the last page.
    pub next_cursor: Option<Ipv4Addr>,
}

/// One reservation of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationInfo {
    pub address: Ipv4Addr,
    #[serde(with = "cidr")]
    pub subnet: Ipv4Net,
    pub mac: Option<MacAddr>,
    pub client_id: Option<ClientId>,
    /// A reservation by subscriber identity: "circuit-id", "remote-id",
    /// "subscriber-id" or "flex-id", and the value (text, or hex when not printable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<(String, String)>,
    pub host_name: Option<String>,
    pub source: Source,
}

/// Where a reservation or a class member comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The configuration file: changed there, then `reload`.
    File,
    /// `reservation-add` or `class-member-add`: removed with `reservation-del` or
    /// `class-member-del`.
    Control,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Control => "control",
        }
    }
}

/// A host reservation to add: the address is given to this client only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationSpec {
    pub address: Ipv4Addr,
    pub client: ClientIdentity,
    pub host_name: Option<String>,
}

/// How a reservation names its client, as the configuration file does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    Mac(MacAddr),
    ClientId(ClientId),
    /// Whatever device the subscriber uses: a relay agent sub-option's value, or the
    /// flex-id expression's.
    Subscriber(SubscriberKind, Vec<u8>),
}

/// A member value of a matching class (`match = "..."`), as an operator adds or removes
/// it: the value is octets (a circuit id need not be text). Ordered by class name, then
/// value, the order `class-members` lists them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassMember {
    pub class: String,
    pub value: Vec<u8>,
}

impl ClassMember {
    /// The member as a page cursor: the class name, '/', the value in hex.
    pub fn cursor(&self) -> String {
        format!("{}/{}", self.class, dhcp_proto::lease::hex(&self.value))
    }

    /// Reads `cursor()`'s form back. The value is after the last '/', since hex has none
    /// and a class name might.
    pub fn from_cursor(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a class member cursor (CLASS/HEX)");
        let (class, hex) = s.rsplit_once('/').ok_or_else(bad)?;
        Ok(ClassMember {
            class: class.to_owned(),
            value: parse_hex(hex).ok_or_else(bad)?,
        })
    }
}

/// As replies and the log name it: "member port-7 of class 'line'".
impl fmt::Display for ClassMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "member {} of class '{}'",
            dhcp_proto::lease::printable(&self.value),
            self.class
        )
    }
}

/// Which class members to list: those of one class or of all, in class and value order,
/// starting after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberQuery {
    pub class: Option<String>,
    pub cursor: Option<ClassMember>,
    /// 1..=`MAX_PAGE`, checked by the protocol before a backend sees it.
    pub limit: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPage {
    pub members: Vec<MemberInfo>,
    /// Where the next page starts (`cursor()`'s form); absent on the last page.
    #[serde(with = "member_cursor")]
    pub next_cursor: Option<ClassMember>,
}

/// A page cursor travels as its text form.
mod member_cursor {
    use super::*;

    pub fn serialize<S: Serializer>(c: &Option<ClassMember>, s: S) -> Result<S::Ok, S::Error> {
        c.as_ref().map(ClassMember::cursor).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ClassMember>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|c| ClassMember::from_cursor(&c))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

/// One member value of a matching class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub class: String,
    /// The value as text when it is printable, else as hex.
    pub value: String,
    /// The value in hex, always.
    pub hex: String,
    pub source: Source,
}

impl MemberInfo {
    pub fn new(m: &ClassMember, source: Source) -> Self {
        MemberInfo {
            class: m.class.clone(),
            value: dhcp_proto::lease::printable(&m.value),
            hex: dhcp_proto::lease::hex(&m.value),
            source,
        }
    }
}

/// What `reload` did: each change applied, and each one that needs a restart (left as
/// it was). A reload that fails validation changes nothing and is an error instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    pub restart_required: Vec<String>,
}

/// An Ethernet address, written "aa:bb:cc:dd:ee:ff" (':' or '-' between octets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)");
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            // from_str_radix would also take a sign ("+a").
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// A DHCP client identifier (option 61): 1 to 255 octets, written as hex, octets
/// optionally separated by ':' or '-' ("01:aa:bb:cc:dd:ee:ff" or "01aabbccddeeff").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Vec<u8>);

impl ClientId {
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.is_empty() || bytes.len() > 255 {
            return Err(format!(
                "a client identifier has 1 to 255 octets, not {}",
                bytes.len()
            ));
        }
        Ok(ClientId(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for ClientId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = parse_hex(s)
            .ok_or_else(|| format!("'{s}' is not a client identifier in hex (01:aa:bb:…)"))?;
        ClientId::new(bytes)
    }
}

/// Octets written in hex, two digits each, optionally separated by ':' or '-'
/// ("01:aa:bb", "01-aa-bb" or "01aabb"); `None` for anything else. Empty text is no
/// octets.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b':' && *b != b'-').collect();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            // Only ASCII hex digits remain, so this is valid UTF-8.
            u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
        })
        .collect()
}

/// Both identifier types travel as their text form.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_string!(MacAddr);
serde_as_string!(ClientId);

/// Why a backend could not do what was asked. Each has a stable `code` for scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The arguments are well formed but make no sense here (address outside every
    /// subnet, reservation for an address another client holds…).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with existing state (reservation already present…).
    #[error("{0}")]
    Conflict(String),
    /// The server cannot answer now: not ready, shutting down, a worker did not answer
    /// in time. Worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// This server or backend does not support the command.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::InvalidArgument(_) => "invalid-argument",
            ControlError::NotFound(_) => "not-found",
            ControlError::Conflict(_) => "conflict",
            ControlError::Unavailable(_) => "unavailable",
            ControlError::Unsupported(_) => "unsupported",
            ControlError::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_both_separators_and_prints_lowercase_colons() {
        let m: MacAddr = "AA-bb-0c-dd-ee-01".parse().unwrap();
        assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x01]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:01");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "gg:bb:cc:dd:ee:ff",
            "aabbccddeeff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn client_id_round_trips_and_checks_length() {
        let c: ClientId = "01:AA:bb:cc:dd:ee:ff".parse().unwrap();
        assert_eq!(c.as_bytes(), [1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!(c.to_string(), "01:aa:bb:cc:dd:ee:ff");
        assert_eq!(
            "01aabb".parse::<ClientId>().unwrap().as_bytes(),
            [1, 0xaa, 0xbb]
        );
        assert!("".parse::<ClientId>().is_err());
        assert!("abc".parse::<ClientId>().is_err());
        assert!("zz".parse::<ClientId>().is_err());
        assert!("+a".parse::<ClientId>().is_err());
        assert!("é1".parse::<ClientId>().is_err());
        assert!("00".repeat(256).parse::<ClientId>().is_err());
        assert!("00".repeat(255).parse::<ClientId>().is_ok());
    }

    #[test]
    fn status_has_a_failover_object_only_with_a_partner() {
        let mut st = Status {
            ready: true,
            version: "0.1.0".into(),
            uptime_secs: 1,
            backend: BackendKind::Udp,
            xdp: None,
            workers: 1,
            interfaces: vec!["eth1".into()],
            journal: None,
            reservations: ReservationCounts::default(),
            config: ConfigStatus::default(),
            failover: None,
            history: Vec::new(),
        };
        let v = serde_json::to_value(&st).unwrap();
        assert!(v.get("failover").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), st);

        st.failover = Some(FailoverStatus {
            name: "pair".into(),
            role: "primary".into(),
            local_state: "partner-down".into(),
            local_stos: 1_700_000_100,
            peer_state: "communications-interrupted".into(),
            peer_stos: 1_700_000_000,
            service: "partner-down".into(),
            connected: false,
            mclt: 3600,
            queued_updates: 7,
            unacked_updates: 3,
        });
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(
            v["failover"],
            serde_json::json!({
                "name": "pair",
                "role": "primary",
                "local_state": "partner-down",
                "local_stos": 1_700_000_100u64,
                "peer_state": "communications-interrupted",
                "peer_stos": 1_700_000_000u64,
                "service": "partner-down",
                "connected": false,
                "mclt": 3600,
                "queued_updates": 7,
                "unacked_updates": 3,
            })
        );
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), st);
    }

    #[test]
    fn failover_state_numbers_are_the_protocol_s() {
        assert_eq!(FailoverStatus::state_number("unknown-state"), Some(0));
        assert_eq!(FailoverStatus::state_number("normal"), Some(2));
        assert_eq!(
            FailoverStatus::state_number("communications-interrupted"),
            Some(3)
        );
        assert_eq!(FailoverStatus::state_number("partner-down"), Some(4));
        assert_eq!(FailoverStatus::state_number("recover-wait"), Some(254));
        assert_eq!(FailoverStatus::state_number("sleepy"), None);
    }

    #[test]
    fn pool_partner_count_serializes_and_defaults() {
        let p = PoolStats {
            subnet: "192.0.2.0/24".parse().unwrap(),
            total: 10,
            free: 4,
            offered: 0,
            active: 1,
            declined: 0,
            partner: 5,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["partner"], 5);
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("partner");
        assert_eq!(serde_json::from_value::<PoolStats>(old).unwrap().partner, 0);
    }

    #[test]
    fn lease_serializes_with_text_identifiers() {
        let l = Lease {
            address: Ipv4Addr::new(192, 0, 2, 10),
            subnet: "192.0.2.0/24".parse().unwrap(),
            state: LeaseState::Active,
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            client_id: None,
            expires: Some(100),
            cltt: Some(40),
            reserved: false,
            shard: 1,
            relay: Some(RelayInfo::from_option(&[
                1, 6, b'o', b'l', b't', b'-', b'7', b'/', 2, 2, 0, 9,
            ])),
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["subnet"], "192.0.2.0/24");
        assert_eq!(v["mac"], "02:00:00:00:00:01");
        assert_eq!(v["state"], "active");
        assert_eq!(v["relay"]["circuit_id"], "olt-7/");
        assert_eq!(v["relay"]["remote_id"], "00:09");
        assert_eq!(v["relay"]["raw"], "01:06:6f:6c:74:2d:37:2f:02:02:00:09");
        let back: Lease = serde_json::from_value(v).unwrap();
        assert_eq!(back, l);
    }
}
