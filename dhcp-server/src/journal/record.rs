//! What the journal stores: lease changes, reservations added or removed, failover state
//! changes. Appending uses the borrowed views (`LeaseRecord<'a>` and friends) so a worker
//! encodes straight from its own buffers into the mapping without allocating; replay
//! decodes the same views over the mapped bytes and folds them into owned values.
//!
//! Payload layouts (little-endian, byte offsets) are in docs/journal.md; `decode` checks
//! every length against the bytes it has, so no payload content can make it panic.

use std::net::Ipv4Addr;

use super::error::{Error, Result};

/// Longest hardware address (the DHCP `chaddr` field).
pub const MAX_CHADDR: usize = 16;
/// Longest client identifier (option 61 carries a one-octet length).
pub const MAX_CLIENT_ID: usize = 255;
/// Longest host name of a reservation.
pub const MAX_HOST_NAME: usize = 255;
/// Longest opaque failover blob (room for what the failover issue will need).
pub const MAX_FAILOVER_DATA: usize = 1024;
/// A time that never comes (ISC dhcpd writes it as `never`).
pub const NEVER: u64 = u64::MAX;

const KIND_LEASE: u8 = 1;
const KIND_RESERVATION_ADDED: u8 = 2;
const KIND_RESERVATION_REMOVED: u8 = 3;
const KIND_FAILOVER: u8 = 4;

const LEASE_FIXED: usize = 72;
const RESERVATION_FIXED: usize = 24;
const FAILOVER_FIXED: usize = 40;

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
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks `bytes.len() <= max` and returns the length as the one-octet field stores it.
fn short_len(bytes: &[u8], max: usize, what: &'static str) -> Result<u8> {
    if bytes.len() > max || bytes.len() > 255 {
        return Err(Error::InvalidRecord(what));
    }
    Ok(bytes.len() as u8)
}

impl Record<'_> {
    /// The stamp replay orders this record by.
    pub fn stamp(&self) -> u64 {
        match self {
            Record::Lease(l) => l.stamp,
            Record::ReservationAdded(r) => r.stamp,
            Record::ReservationRemoved { stamp, .. } => *stamp,
            Record::Failover(f) => f.stamp,
        }
    }

    /// The payload's length, after checking every field against its limit.
    pub(crate) fn encoded_len(&self) -> Result<usize> {
        Ok(match self {
            Record::Lease(l) => {
                short_len(
                    l.chaddr,
                    MAX_CHADDR,
                    "hardware address longer than 16 octets",
                )?;
                short_len(
                    l.client_id,
                    MAX_CLIENT_ID,
                    "client identifier longer than 255 octets",
                )?;
                LEASE_FIXED + l.chaddr.len() + l.client_id.len()
            }
            Record::ReservationAdded(r) => {
                short_len(
                    r.chaddr,
                    MAX_CHADDR,
                    "hardware address longer than 16 octets",
                )?;
                short_len(
                    r.client_id,
                    MAX_CLIENT_ID,
                    "client identifier longer than 255 octets",
                )?;
                short_len(
                    r.host_name,
                    MAX_HOST_NAME,
                    "host name longer than 255 octets",
                )?;
                RESERVATION_FIXED + r.chaddr.len() + r.client_id.len() + r.host_name.len()
            }
            Record::ReservationRemoved { .. } => RESERVATION_FIXED,
            Record::Failover(f) => {
                short_len(f.name, 255, "failover peer name longer than 255 octets")?;
                if f.data.len() > MAX_FAILOVER_DATA {
                    return Err(Error::InvalidRecord(
                        "failover data longer than 1024 octets",
                    ));
                }
                FAILOVER_FIXED + f.name.len() + f.data.len()
            }
        })
    }

    /// Writes the payload into `out`, which is exactly `encoded_len()` long (the caller
    /// checked the limits through `encoded_len`). No allocation.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        match self {
            Record::Lease(l) => {
                out[0] = KIND_LEASE;
                out[1] = l.state as u8;
                out[2] = l.htype;
                out[3] = l.chaddr.len() as u8;
                out[4] = l.client_id.len() as u8;
                out[6..8].copy_from_slice(&l.flags.0.to_le_bytes());
                out[8..12].copy_from_slice(&l.addr.octets());
                put_u64(out, 16, l.stamp);
                for (i, t) in [l.starts, l.ends, l.cltt, l.tstp, l.tsfp, l.atsfp]
                    .into_iter()
                    .enumerate()
                {
                    put_u64(out, 24 + 8 * i, t);
                }
                let h = LEASE_FIXED + l.chaddr.len();
                out[LEASE_FIXED..h].copy_from_slice(l.chaddr);
                out[h..].copy_from_slice(l.client_id);
            }
            Record::ReservationAdded(r) => {
                out[0] = KIND_RESERVATION_ADDED;
                out[1] = r.htype;
                out[2] = r.chaddr.len() as u8;
                out[3] = r.client_id.len() as u8;
                out[4] = r.host_name.len() as u8;
                out[8..12].copy_from_slice(&r.addr.octets());
                put_u64(out, 16, r.stamp);
                let a = RESERVATION_FIXED + r.chaddr.len();
                let b = a + r.client_id.len();
                out[RESERVATION_FIXED..a].copy_from_slice(r.chaddr);
                out[a..b].copy_from_slice(r.client_id);
                out[b..].copy_from_slice(r.host_name);
            }
            Record::ReservationRemoved { stamp, addr } => {
                out[0] = KIND_RESERVATION_REMOVED;
                out[8..12].copy_from_slice(&addr.octets());
                put_u64(out, 16, *stamp);
            }
            Record::Failover(f) => {
                out[0] = KIND_FAILOVER;
                out[1] = f.local_state;
                out[2] = f.peer_state;
                out[3] = f.name.len() as u8;
                put_u32(out, 4, f.mclt);
                put_u64(out, 8, f.stamp);
                put_u64(out, 16, f.local_stos);
                put_u64(out, 24, f.peer_stos);
                put_u32(out, 32, f.data.len() as u32);
                let a = FAILOVER_FIXED + f.name.len();
                out[FAILOVER_FIXED..a].copy_from_slice(f.name);
                out[a..].copy_from_slice(f.data);
            }
        }
    }
}

impl<'a> Record<'a> {
    /// Reads a payload. Every variable part must exactly fill the payload, so a damaged
    /// length is caught here even when the frame's CRC happens to match.
    pub fn decode(p: &'a [u8]) -> Result<Record<'a>, &'static str> {
        let kind = *p.first().ok_or("empty payload")?;
        match kind {
            KIND_LEASE => {
                if p.len() < LEASE_FIXED {
                    return Err("short lease record");
                }
                let state = BindingState::from_u8(p[1]).ok_or("unknown binding state")?;
                let (hlen, clen) = (usize::from(p[3]), usize::from(p[4]));
                if hlen > MAX_CHADDR || p.len() != LEASE_FIXED + hlen + clen {
                    return Err("lease record lengths do not add up");
                }
                let t = |i: usize| get_u64(p, 24 + 8 * i);
                Ok(Record::Lease(LeaseRecord {
                    stamp: get_u64(p, 16),
                    addr: ipv4(p),
                    state,
                    htype: p[2],
                    chaddr: &p[LEASE_FIXED..LEASE_FIXED + hlen],
                    client_id: &p[LEASE_FIXED + hlen..],
                    starts: t(0),
                    ends: t(1),
                    cltt: t(2),
                    tstp: t(3),
                    tsfp: t(4),
                    atsfp: t(5),
                    flags: LeaseFlags(u16::from_le_bytes([p[6], p[7]])),
                }))
            }
            KIND_RESERVATION_ADDED => {
                if p.len() < RESERVATION_FIXED {
                    return Err("short reservation record");
                }
                let (hlen, clen, nlen) = (usize::from(p[2]), usize::from(p[3]), usize::from(p[4]));
                if hlen > MAX_CHADDR || p.len() != RESERVATION_FIXED + hlen + clen + nlen {
                    return Err("reservation record lengths do not add up");
                }
                let a = RESERVATION_FIXED + hlen;
                let b = a + clen;
                Ok(Record::ReservationAdded(ReservationRecord {
                    stamp: get_u64(p, 16),
                    addr: ipv4(p),
                    htype: p[1],
                    chaddr: &p[RESERVATION_FIXED..a],
                    client_id: &p[a..b],
                    host_name: &p[b..],
                }))
            }
            KIND_RESERVATION_REMOVED => {
                if p.len() != RESERVATION_FIXED {
                    return Err("reservation removal of the wrong length");
                }
                Ok(Record::ReservationRemoved {
                    stamp: get_u64(p, 16),
                    addr: ipv4(p),
                })
            }
            KIND_FAILOVER => {
                if p.len() < FAILOVER_FIXED {
                    return Err("short failover record");
                }
                let nlen = usize::from(p[3]);
                let dlen = get_u32(p, 32) as usize;
                if dlen > MAX_FAILOVER_DATA || p.len() != FAILOVER_FIXED + nlen + dlen {
                    return Err("failover record lengths do not add up");
                }
                let a = FAILOVER_FIXED + nlen;
                Ok(Record::Failover(FailoverRecord {
                    stamp: get_u64(p, 8),
                    local_state: p[1],
                    peer_state: p[2],
                    mclt: get_u32(p, 4),
                    local_stos: get_u64(p, 16),
                    peer_stos: get_u64(p, 24),
                    name: &p[FAILOVER_FIXED..a],
                    data: &p[a..],
                }))
            }
            _ => Err("unknown record kind"),
        }
    }
}

fn ipv4(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[8], p[9], p[10], p[11])
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
            starts: self.starts,
            ends: self.ends,
            cltt: self.cltt,
            tstp: self.tstp,
            tsfp: self.tsfp,
            atsfp: self.atsfp,
            flags: self.flags,
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
}

impl Reservation {
    pub fn from_record(r: &ReservationRecord<'_>) -> Self {
        Reservation {
            stamp: r.stamp,
            addr: r.addr,
            hw: HwAddr::new(r.htype, r.chaddr),
            client_id: r.client_id.into(),
            host_name: r.host_name.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: Record<'_>) {
        let n = r.encoded_len().unwrap();
        let mut buf = vec![0xAA; n];
        r.encode(&mut buf);
        assert_eq!(Record::decode(&buf).unwrap(), r);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Record::Lease(LeaseRecord {
            stamp: 7,
            addr: Ipv4Addr::new(192, 0, 2, 10),
            state: BindingState::Active,
            htype: 1,
            chaddr: &[2, 0, 0, 0, 0, 1],
            client_id: b"\x01\x02\x00\x00\x00\x00\x01",
            starts: 1,
            ends: NEVER,
            cltt: 3,
            tstp: 4,
            tsfp: 5,
            atsfp: 6,
            flags: LeaseFlags(LeaseFlags::RESERVED | 0x8000),
        }));
        round_trip(Record::ReservationAdded(ReservationRecord {
            stamp: 1,
            addr: Ipv4Addr::new(192, 0, 2, 11),
            htype: 1,
            chaddr: &[1; 16],
            client_id: &[9; 255],
            host_name: b"printer",
        }));
        round_trip(Record::ReservationRemoved {
            stamp: 2,
            addr: Ipv4Addr::new(192, 0, 2, 11),
        });
        round_trip(Record::Failover(FailoverRecord {
            stamp: 3,
            local_state: 2,
            peer_state: 3,
            mclt: 3600,
            local_stos: 10,
            peer_stos: 11,
            name: b"dhcp-failover",
            data: &[5; 1024],
        }));
    }

    #[test]
    fn limits_are_checked_before_encoding() {
        let long = [0u8; 17];
        let r = Record::Lease(LeaseRecord {
            stamp: 0,
            addr: Ipv4Addr::UNSPECIFIED,
            state: BindingState::Free,
            htype: 1,
            chaddr: &long,
            client_id: &[],
            starts: 0,
            ends: 0,
            cltt: 0,
            tstp: 0,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags::default(),
        });
        assert!(matches!(r.encoded_len(), Err(Error::InvalidRecord(_))));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Record::decode(&bytes);
        }
    }
}
