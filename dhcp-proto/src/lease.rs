//! The lease model: a lease's binding state and flags, the owned lease, reservation,
//! class member and failover state, and the borrowed views (`LeaseRecord<'a>` and friends) through which a
//! shard hands a change to the journal without allocating. The journal's byte layout of
//! these views lives with the journal (`dhcp-server`'s `journal::record`); docs/journal.md
//! has it.

use std::net::Ipv4Addr;

/// Longest hardware address (the DHCP `chaddr` field).
pub const MAX_CHADDR: usize = 16;
/// Longest client identifier (option 61 carries a one-octet length).
pub const MAX_CLIENT_ID: usize = 255;
/// Longest host name of a reservation.
pub const MAX_HOST_NAME: usize = 255;
/// Relay agent information (option 82) is one option: at most 255 octets.
pub const MAX_AGENT_INFO: usize = 255;
/// Longest class name a member record carries (longer names cannot get run-time members).
pub const MAX_CLASS_NAME: usize = 255;
/// Longest class member value: what an option or a relay agent sub-option can carry.
pub const MAX_MEMBER_VALUE: usize = 255;
/// Longest opaque failover blob (room for what the failover issue will need).
pub const MAX_FAILOVER_DATA: usize = 1024;
/// A time that never comes (ISC dhcpd writes it as `never`).
pub const NEVER: u64 = u64::MAX;
/// Lamport stamps per second: a shard's stamps start from the clock's seconds times
/// this, leaving room for a million changes a second per shard before the stamp runs
/// ahead of the clock; a stamp divided by it is about when its record was made.
pub const STAMPS_PER_SEC: u64 = 1 << 20;

/// A lease's binding state, the states of ISC dhcpd (`binding state ...;`) with its
/// numbering (FTS_FREE = 1 ... FTS_BACKUP = 7), so a dump reads like dhcpd.leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BindingState {
    Free = 1,
    Active = 2,
    Expired = 3,
    Released = 4,
    /// Declined by a client or found in use: out of service until it is reclaimed.
    Abandoned = 5,
    /// Failover: the address was reset by the operator.
    Reset = 6,
    /// Failover: free, but belonging to the secondary's pool share.
    Backup = 7,
}

impl BindingState {
    pub const ALL: [BindingState; 7] = [
        Self::Free,
        Self::Active,
        Self::Expired,
        Self::Released,
        Self::Abandoned,
        Self::Reset,
        Self::Backup,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v).wrapping_sub(1)).copied()
    }

    /// The word ISC dhcpd uses in `binding state WORD;`.
    pub fn isc_name(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Released => "released",
            Self::Abandoned => "abandoned",
            Self::Reset => "reset",
            Self::Backup => "backup",
        }
    }

    pub fn from_isc_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.isc_name() == s)
    }
}

/// Lease flags; unknown bits are kept as they are, so a newer writer's flags survive a
/// compaction by an older reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LeaseFlags(pub u16);

impl LeaseFlags {
    /// The lease is pinned to its client (ISC `reserved;`): never reclaimed or reused.
    pub const RESERVED: u16 = 1;
    /// A BOOTP lease (ISC `dynamic-bootp;`).
    pub const BOOTP: u16 = 2;

    pub fn reserved(self) -> bool {
        self.0 & Self::RESERVED != 0
    }

    pub fn bootp(self) -> bool {
        self.0 & Self::BOOTP != 0
    }
}

/// One lease change, borrowed from the caller. Times are seconds since the Unix epoch,
/// 0 when unset, `NEVER` for infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord<'a> {
    /// The caller's Lamport stamp: per address, replay keeps the highest.
    pub stamp: u64,
    pub addr: Ipv4Addr,
    pub state: BindingState,
    pub htype: u8,
    /// Hardware address, at most 16 octets.
    pub chaddr: &'a [u8],
    /// Client identifier (option 61), at most 255 octets; empty when the client sent none.
    pub client_id: &'a [u8],
    /// The relay agent information (option 82's value) the lease was last granted
    /// through, as dhcpd's `stash-agent-options` keeps it; empty when none came.
    pub agent_info: &'a [u8],
    pub starts: u64,
    pub ends: u64,
    /// Client last transaction time.
    pub cltt: u64,
    /// Failover: time sent to the partner.
    pub tstp: u64,
    /// Failover: time the partner acknowledged.
    pub tsfp: u64,
    /// Failover: the partner's acknowledged start time.
    pub atsfp: u64,
    pub flags: LeaseFlags,
    /// What made the change: kept in the log for lease history and events, not in the
    /// folded state (snapshots carry `Context::NONE`).
    pub context: Context<'a>,
}

/// Why a lease record was written, and what the request that made it said about the
/// client's whereabouts: the lease history's facts that the lease itself does not keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    pub cause: Cause,
    /// When the change was made (seconds since the epoch; 0 when not known).
    pub at: u64,
    /// The relay the request came through; unspecified when none, or not known.
    pub giaddr: Ipv4Addr,
    /// Option 12 of the request, at most 255 octets; empty when none.
    pub host_name: &'a [u8],
}

impl Context<'_> {
    /// A record no event comes from: a snapshot's folded lease, an import.
    pub const NONE: Context<'static> = Context {
        cause: Cause::Unknown,
        at: 0,
        giaddr: Ipv4Addr::UNSPECIFIED,
        host_name: &[],
    };
}

/// Why a lease changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cause {
    /// Not recorded: a snapshot, an import, a record written before causes were kept.
    Unknown = 0,
    /// A DHCPACK for an address the client did not hold.
    Granted = 1,
    /// A DHCPACK extending the client's lease.
    Renewed = 2,
    /// The client's DHCPRELEASE, or a binding the client left for another one.
    Released = 3,
    /// The client's DHCPDECLINE.
    Declined = 4,
    /// The lease ran out.
    Expired = 5,
    /// `ctl release`: the operator ended the lease for the client.
    OperatorReleased = 6,
    /// `ctl delete`: the operator forgot the lease and its client.
    OperatorDeleted = 7,
    /// The failover partner's binding update, applied here.
    Partner = 8,
    /// Failover bookkeeping: free addresses moved between the pools, a binding resent.
    Failover = 9,
}

impl Cause {
    const ALL: [Cause; 10] = [
        Cause::Unknown,
        Cause::Granted,
        Cause::Renewed,
        Cause::Released,
        Cause::Declined,
        Cause::Expired,
        Cause::OperatorReleased,
        Cause::OperatorDeleted,
        Cause::Partner,
        Cause::Failover,
    ];

    /// A stored cause; one a newer writer added reads as `Unknown`.
    pub fn from_u8(v: u8) -> Cause {
        Self::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Cause::Unknown)
    }
}

/// A reservation added by the operator at run time (survives restarts through the
/// journal, unlike ISC's OMAPI host objects on a lost leases file). Keyed by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationRecord<'a> {
    pub stamp: u64,
    pub addr: Ipv4Addr,
    pub htype: u8,
    pub chaddr: &'a [u8],
    pub client_id: &'a [u8],
    pub host_name: &'a [u8],
    /// The subscriber identity it reserves for (`SubscriberKind` as a number: 1 circuit
    /// id, 2 remote id, 6 subscriber id, 255 flex-id), 0 and empty when none.
    pub subscriber_kind: u8,
    pub subscriber: &'a [u8],
}

/// A member value listed in a matching class by the operator at run time (a subclass
/// added while serving: dhcpd's OMAPI-created subclass, kept by the journal). Keyed by
/// class name and value; the same view serves the addition and the removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberRecord<'a> {
    pub stamp: u64,
    /// The class's name, as the configuration spells it.
    pub class: &'a [u8],
    pub value: &'a [u8],
}

/// A failover state change. The states are the failover protocol's numbers (1 startup,
/// 2 normal, 3 communications-interrupted, 4 partner-down, ...); `data` is opaque to the
/// journal and left for the failover code to define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverRecord<'a> {
    pub stamp: u64,
    pub local_state: u8,
    pub peer_state: u8,
    /// Maximum client lead time the partners agreed on, seconds.
    pub mclt: u32,
    /// Start time of the local state.
    pub local_stos: u64,
    /// Start time of the partner's state.
    pub peer_stos: u64,
    /// The failover relationship's name (`failover peer "NAME"`).
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// Any record, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    Lease(LeaseRecord<'a>),
    ReservationAdded(ReservationRecord<'a>),
    ReservationRemoved { stamp: u64, addr: Ipv4Addr },
    Failover(FailoverRecord<'a>),
    MemberAdded(MemberRecord<'a>),
    MemberRemoved(MemberRecord<'a>),
}

impl Record<'_> {
    /// The stamp replay orders this record by.
    pub fn stamp(&self) -> u64 {
        match self {
            Record::Lease(l) => l.stamp,
            Record::ReservationAdded(r) => r.stamp,
            Record::ReservationRemoved { stamp, .. } => *stamp,
            Record::Failover(f) => f.stamp,
            Record::MemberAdded(m) | Record::MemberRemoved(m) => m.stamp,
        }
    }
}

/// An owned hardware address (no allocation: 16 octets inline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HwAddr {
    pub htype: u8,
    len: u8,
    buf: [u8; MAX_CHADDR],
}

impl HwAddr {
    /// `bytes` longer than 16 octets are cut to 16 (decode never yields longer).
    pub fn new(htype: u8, bytes: &[u8]) -> Self {
        let n = bytes.len().min(MAX_CHADDR);
        let mut buf = [0; MAX_CHADDR];
        buf[..n].copy_from_slice(&bytes[..n]);
        HwAddr {
            htype,
            len: n as u8,
            buf,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A lease as replay leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub stamp: u64,
    pub addr: Ipv4Addr,
    pub state: BindingState,
    pub hw: HwAddr,
    pub client_id: Box<[u8]>,
    pub agent_info: Box<[u8]>,
    pub starts: u64,
    pub ends: u64,
    pub cltt: u64,
    pub tstp: u64,
    pub tsfp: u64,
    pub atsfp: u64,
    pub flags: LeaseFlags,
}

impl Lease {
    pub fn from_record(r: &LeaseRecord<'_>) -> Self {
        Lease {
            stamp: r.stamp,
            addr: r.addr,
            state: r.state,
            hw: HwAddr::new(r.htype, r.chaddr),
            client_id: r.client_id.into(),
            agent_info: r.agent_info.into(),
            starts: r.starts,
            ends: r.ends,
            cltt: r.cltt,
            tstp: r.tstp,
            tsfp: r.tsfp,
            atsfp: r.atsfp,
            flags: r.flags,
        }
    }

    pub fn as_record(&self) -> LeaseRecord<'_> {
        LeaseRecord {
            stamp: self.stamp,
            addr: self.addr,
            state: self.state,
            htype: self.hw.htype,
            chaddr: self.hw.bytes(),
            client_id: &self.client_id,
            agent_info: &self.agent_info,
            starts: self.starts,
            ends: self.ends,
            cltt: self.cltt,
            tstp: self.tstp,
            tsfp: self.tsfp,
            atsfp: self.atsfp,
            flags: self.flags,
            context: Context::NONE,
        }
    }
}

/// A reservation as replay leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub stamp: u64,
    pub addr: Ipv4Addr,
    pub hw: HwAddr,
    pub client_id: Box<[u8]>,
    pub host_name: Box<[u8]>,
    pub subscriber_kind: u8,
    pub subscriber: Box<[u8]>,
}

impl Reservation {
    pub fn from_record(r: &ReservationRecord<'_>) -> Self {
        Reservation {
            stamp: r.stamp,
            addr: r.addr,
            hw: HwAddr::new(r.htype, r.chaddr),
            client_id: r.client_id.into(),
            host_name: r.host_name.into(),
            subscriber_kind: r.subscriber_kind,
            subscriber: r.subscriber.into(),
        }
    }

    pub fn as_record(&self) -> ReservationRecord<'_> {
        ReservationRecord {
            stamp: self.stamp,
            addr: self.addr,
            htype: self.hw.htype,
            chaddr: self.hw.bytes(),
            client_id: &self.client_id,
            host_name: &self.host_name,
            subscriber_kind: self.subscriber_kind,
            subscriber: &self.subscriber,
        }
    }
}

/// A run-time class member as replay leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub stamp: u64,
    pub class: Box<[u8]>,
    pub value: Box<[u8]>,
}

impl Member {
    pub fn from_record(r: &MemberRecord<'_>) -> Self {
        Member {
            stamp: r.stamp,
            class: r.class.into(),
            value: r.value.into(),
        }
    }

    pub fn as_record(&self) -> MemberRecord<'_> {
        MemberRecord {
            stamp: self.stamp,
            class: &self.class,
            value: &self.value,
        }
    }
}

/// The failover state as replay leaves it (the latest record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub stamp: u64,
    pub local_state: u8,
    pub peer_state: u8,
    pub mclt: u32,
    pub local_stos: u64,
    pub peer_stos: u64,
    pub name: Box<[u8]>,
    pub data: Box<[u8]>,
}

impl Failover {
    pub fn from_record(r: &FailoverRecord<'_>) -> Self {
        Failover {
            stamp: r.stamp,
            local_state: r.local_state,
            peer_state: r.peer_state,
            mclt: r.mclt,
            local_stos: r.local_stos,
            peer_stos: r.peer_stos,
            name: r.name.into(),
            data: r.data.into(),
        }
    }

    pub fn as_record(&self) -> FailoverRecord<'_> {
        FailoverRecord {
            stamp: self.stamp,
            local_state: self.local_state,
            peer_state: self.peer_state,
            mclt: self.mclt,
            local_stos: self.local_stos,
            peer_stos: self.peer_stos,
            name: &self.name,
            data: &self.data,
        }
    }
}

/// Octets as an operator reads them: printable ASCII as it is, anything else as
/// colon-separated hex (circuit ids, remote ids, class member values).
pub fn printable(b: &[u8]) -> String {
    if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        String::from_utf8_lossy(b).into_owned()
    } else {
        hex(b)
    }
}

/// Octets as colon-separated hex, as dhcpd writes hardware addresses.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Where an address stands in a shard's lease table: the engine's state, which
/// leasequery reports too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Never leased, or the last holder's claim was dropped.
    Free,
    /// Held for the client it was offered to until `expires`.
    Offered,
    /// Bound to the client until `expires`.
    Active,
    /// Given back by the client; available, still remembered for it.
    Released,
    /// Ran out; available, still remembered for its last client.
    Expired,
    /// Declined by a client (address conflict); out of use until `expires`.
    Declined,
    /// Managed by another shard: not this table's to give or judge.
    Foreign,
    /// Failover: free, but in the partner's pool (the primary's BACKUP addresses, the
    /// secondary's FREE ones): the partner's to give.
    Partner,
}

impl LeaseState {
    /// Whether the address may be given to any client now.
    pub fn available(self) -> bool {
        matches!(self, Self::Free | Self::Released | Self::Expired)
    }

    /// Whether `client` (the slot's remembered client) holds the address right now.
    pub fn held(self) -> bool {
        matches!(self, Self::Offered | Self::Active)
    }
}
