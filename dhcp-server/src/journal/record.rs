//! The journal's byte layout of the lease model's records: lease changes, reservations
//! added or removed, failover state changes, class members added or removed. Appending encodes the borrowed views
//! (`LeaseRecord<'a>` and friends) straight from a worker's buffers into the mapping
//! without allocating; replay decodes the same views over the mapped bytes.
//!
//! Payload layouts (little-endian, byte offsets) are in docs/journal.md; `decode` checks
//! every length against the bytes it has, so no payload content can make it panic.

use std::net::Ipv4Addr;

use dhcp_proto::lease::{
    BindingState, Cause, Context, FailoverRecord, LeaseFlags, LeaseRecord, MemberRecord, Record,
    ReservationRecord, MAX_AGENT_INFO, MAX_CHADDR, MAX_CLASS_NAME, MAX_CLIENT_ID,
    MAX_FAILOVER_DATA, MAX_HOST_NAME, MAX_MEMBER_VALUE,
};

use super::error::{Error, Result};

const KIND_LEASE: u8 = 1;
const KIND_RESERVATION_ADDED: u8 = 2;
const KIND_RESERVATION_REMOVED: u8 = 3;
const KIND_FAILOVER: u8 = 4;
const KIND_MEMBER_ADDED: u8 = 5;
const KIND_MEMBER_REMOVED: u8 = 6;
/// A lease change with its context (cause, time, relay, host name) for the lease
/// history; kind 1, without it, is still read.
const KIND_LEASE_CONTEXT: u8 = 7;

const LEASE_FIXED: usize = 72;
const LEASE_CONTEXT_FIXED: usize = 88;
const RESERVATION_FIXED: usize = 24;
const FAILOVER_FIXED: usize = 40;
const MEMBER_FIXED: usize = 16;

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

/// The journal's encoding of a record: its length once every field is checked against
/// its limit, and its bytes.
pub(crate) trait Encode {
    fn encoded_len(&self) -> Result<usize>;
    fn encode(&self, out: &mut [u8]);
}

impl Encode for Record<'_> {
    /// The payload's length, after checking every field against its limit.
    fn encoded_len(&self) -> Result<usize> {
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
                short_len(
                    l.agent_info,
                    MAX_AGENT_INFO,
                    "relay agent information longer than 255 octets",
                )?;
                short_len(
                    l.context.host_name,
                    MAX_HOST_NAME,
                    "host name longer than 255 octets",
                )?;
                LEASE_CONTEXT_FIXED
                    + l.chaddr.len()
                    + l.client_id.len()
                    + l.agent_info.len()
                    + l.context.host_name.len()
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
                short_len(
                    r.subscriber,
                    255,
                    "subscriber identity longer than 255 octets",
                )?;
                RESERVATION_FIXED
                    + r.chaddr.len()
                    + r.client_id.len()
                    + r.host_name.len()
                    + r.subscriber.len()
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
            Record::MemberAdded(m) | Record::MemberRemoved(m) => {
                short_len(m.class, MAX_CLASS_NAME, "class name longer than 255 octets")?;
                short_len(
                    m.value,
                    MAX_MEMBER_VALUE,
                    "member value longer than 255 octets",
                )?;
                MEMBER_FIXED + m.class.len() + m.value.len()
            }
        })
    }

    /// Writes the payload into `out`, which is exactly `encoded_len()` long (the caller
    /// checked the limits through `encoded_len`). No allocation.
    fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        match self {
            Record::Lease(l) => {
                out[0] = KIND_LEASE_CONTEXT;
                out[1] = l.state as u8;
                out[2] = l.htype;
                out[3] = l.chaddr.len() as u8;
                out[4] = l.client_id.len() as u8;
                out[5] = l.agent_info.len() as u8;
                out[6..8].copy_from_slice(&l.flags.0.to_le_bytes());
                out[8..12].copy_from_slice(&l.addr.octets());
                out[12] = l.context.cause as u8;
                out[13] = l.context.host_name.len() as u8;
                put_u64(out, 16, l.stamp);
                for (i, t) in [l.starts, l.ends, l.cltt, l.tstp, l.tsfp, l.atsfp]
                    .into_iter()
                    .enumerate()
                {
                    put_u64(out, 24 + 8 * i, t);
                }
                out[72..76].copy_from_slice(&l.context.giaddr.octets());
                put_u64(out, 80, l.context.at);
                let h = LEASE_CONTEXT_FIXED + l.chaddr.len();
                let c = h + l.client_id.len();
                let a = c + l.agent_info.len();
                out[LEASE_CONTEXT_FIXED..h].copy_from_slice(l.chaddr);
                out[h..c].copy_from_slice(l.client_id);
                out[c..a].copy_from_slice(l.agent_info);
                out[a..].copy_from_slice(l.context.host_name);
            }
            Record::ReservationAdded(r) => {
                out[0] = KIND_RESERVATION_ADDED;
                out[1] = r.htype;
                out[2] = r.chaddr.len() as u8;
                out[3] = r.client_id.len() as u8;
                out[4] = r.host_name.len() as u8;
                out[5] = r.subscriber_kind;
                out[6] = r.subscriber.len() as u8;
                out[8..12].copy_from_slice(&r.addr.octets());
                put_u64(out, 16, r.stamp);
                let a = RESERVATION_FIXED + r.chaddr.len();
                let b = a + r.client_id.len();
                out[RESERVATION_FIXED..a].copy_from_slice(r.chaddr);
                let c = b + r.host_name.len();
                out[a..b].copy_from_slice(r.client_id);
                out[b..c].copy_from_slice(r.host_name);
                out[c..].copy_from_slice(r.subscriber);
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
            Record::MemberAdded(m) | Record::MemberRemoved(m) => {
                out[0] = if matches!(self, Record::MemberAdded(_)) {
                    KIND_MEMBER_ADDED
                } else {
                    KIND_MEMBER_REMOVED
                };
                out[1] = m.class.len() as u8;
                out[2] = m.value.len() as u8;
                put_u64(out, 8, m.stamp);
                let a = MEMBER_FIXED + m.class.len();
                out[MEMBER_FIXED..a].copy_from_slice(m.class);
                out[a..].copy_from_slice(m.value);
            }
        }
    }
}

/// Reads a payload. Every variable part must exactly fill the payload, so a damaged
/// length is caught here even when the frame's CRC happens to match.
pub fn decode(p: &[u8]) -> Result<Record<'_>, &'static str> {
    let kind = *p.first().ok_or("empty payload")?;
    match kind {
        KIND_LEASE | KIND_LEASE_CONTEXT => {
            let with_context = kind == KIND_LEASE_CONTEXT;
            let fixed = if with_context {
                LEASE_CONTEXT_FIXED
            } else {
                LEASE_FIXED
            };
            if p.len() < fixed {
                return Err("short lease record");
            }
            let state = BindingState::from_u8(p[1]).ok_or("unknown binding state")?;
            // Octet 5 was zero before relay agent information was kept: old records read
            // as leases granted without it.
            let (hlen, clen, alen) = (usize::from(p[3]), usize::from(p[4]), usize::from(p[5]));
            let nlen = if with_context { usize::from(p[13]) } else { 0 };
            if hlen > MAX_CHADDR || p.len() != fixed + hlen + clen + alen + nlen {
                return Err("lease record lengths do not add up");
            }
            let c = fixed + hlen + clen;
            let a = c + alen;
            let t = |i: usize| get_u64(p, 24 + 8 * i);
            let context = if with_context {
                Context {
                    cause: Cause::from_u8(p[12]),
                    at: get_u64(p, 80),
                    giaddr: Ipv4Addr::new(p[72], p[73], p[74], p[75]),
                    host_name: &p[a..],
                }
            } else {
                Context::NONE
            };
            Ok(Record::Lease(LeaseRecord {
                stamp: get_u64(p, 16),
                addr: ipv4(p),
                state,
                htype: p[2],
                chaddr: &p[fixed..fixed + hlen],
                client_id: &p[fixed + hlen..c],
                agent_info: &p[c..a],
                starts: t(0),
                ends: t(1),
                cltt: t(2),
                tstp: t(3),
                tsfp: t(4),
                atsfp: t(5),
                flags: LeaseFlags(u16::from_le_bytes([p[6], p[7]])),
                context,
            }))
        }
        KIND_RESERVATION_ADDED => {
            if p.len() < RESERVATION_FIXED {
                return Err("short reservation record");
            }
            // Octets 5 and 6 were zero before reservations by subscriber identity.
            let (hlen, clen, nlen) = (usize::from(p[2]), usize::from(p[3]), usize::from(p[4]));
            let slen = usize::from(p[6]);
            if hlen > MAX_CHADDR || p.len() != RESERVATION_FIXED + hlen + clen + nlen + slen {
                return Err("reservation record lengths do not add up");
            }
            let a = RESERVATION_FIXED + hlen;
            let b = a + clen;
            let c = b + nlen;
            Ok(Record::ReservationAdded(ReservationRecord {
                stamp: get_u64(p, 16),
                addr: ipv4(p),
                htype: p[1],
                chaddr: &p[RESERVATION_FIXED..a],
                client_id: &p[a..b],
                host_name: &p[b..c],
                subscriber_kind: p[5],
                subscriber: &p[c..],
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
        KIND_MEMBER_ADDED | KIND_MEMBER_REMOVED => {
            if p.len() < MEMBER_FIXED {
                return Err("short class member record");
            }
            let (clen, vlen) = (usize::from(p[1]), usize::from(p[2]));
            if p.len() != MEMBER_FIXED + clen + vlen {
                return Err("class member record lengths do not add up");
            }
            let a = MEMBER_FIXED + clen;
            let m = MemberRecord {
                stamp: get_u64(p, 8),
                class: &p[MEMBER_FIXED..a],
                value: &p[a..],
            };
            Ok(if kind == KIND_MEMBER_ADDED {
                Record::MemberAdded(m)
            } else {
                Record::MemberRemoved(m)
            })
        }
        _ => Err("unknown record kind"),
    }
}

fn ipv4(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[8], p[9], p[10], p[11])
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp_proto::lease::NEVER;

    fn round_trip(r: Record<'_>) {
        let n = r.encoded_len().unwrap();
        let mut buf = vec![0xAA; n];
        r.encode(&mut buf);
        assert_eq!(decode(&buf).unwrap(), r);
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
            agent_info: &[1, 3, b'p', b'-', b'1', 2, 1, 9],
            starts: 1,
            ends: NEVER,
            cltt: 3,
            tstp: 4,
            tsfp: 5,
            atsfp: 6,
            flags: LeaseFlags(LeaseFlags::RESERVED | 0x8000),
            context: Context {
                cause: Cause::Renewed,
                at: 1_764_780_000,
                giaddr: Ipv4Addr::new(192, 0, 2, 1),
                host_name: b"laptop",
            },
        }));
        round_trip(Record::ReservationAdded(ReservationRecord {
            stamp: 1,
            addr: Ipv4Addr::new(192, 0, 2, 11),
            htype: 1,
            chaddr: &[1; 16],
            client_id: &[9; 255],
            host_name: b"printer",
            subscriber_kind: 1,
            subscriber: b"olt-1/1/7",
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
        let member = MemberRecord {
            stamp: 4,
            class: b"line",
            value: b"port-7",
        };
        round_trip(Record::MemberAdded(member));
        round_trip(Record::MemberRemoved(member));
        round_trip(Record::MemberAdded(MemberRecord {
            stamp: u64::MAX,
            class: &[b'c'; 255],
            value: &[0; 255],
        }));
    }

    /// The layout docs/journal.md gives, byte for byte.
    #[test]
    fn member_layout_is_as_documented() {
        let r = Record::MemberRemoved(MemberRecord {
            stamp: 0x0102_0304_0506_0708,
            class: b"line",
            value: &[0xAB, 0xCD],
        });
        let mut buf = vec![0xAA; r.encoded_len().unwrap()];
        r.encode(&mut buf);
        assert_eq!(
            buf,
            [6, 4, 2, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, b'l', b'i', b'n', b'e', 0xAB, 0xCD]
        );
    }

    /// A damaged length in a member record (either one, shorter or longer than what
    /// follows) is refused, never read past the payload.
    #[test]
    fn member_records_with_damaged_lengths_are_refused() {
        let r = Record::MemberAdded(MemberRecord {
            stamp: 9,
            class: b"line",
            value: b"port-7",
        });
        let mut good = vec![0; r.encoded_len().unwrap()];
        r.encode(&mut good);
        for (at, v) in [(1, 3), (1, 5), (1, 255), (2, 5), (2, 7), (2, 0)] {
            let mut bad = good.clone();
            bad[at] = v;
            assert_eq!(
                decode(&bad),
                Err("class member record lengths do not add up"),
                "octet {at} = {v}"
            );
        }
        assert_eq!(
            decode(&good[..MEMBER_FIXED - 1]),
            Err("short class member record")
        );
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Err("class member record lengths do not add up")
        );
        let long = [0u8; 256];
        for m in [
            MemberRecord {
                stamp: 0,
                class: &long,
                value: b"v",
            },
            MemberRecord {
                stamp: 0,
                class: b"c",
                value: &long,
            },
        ] {
            assert!(matches!(
                Record::MemberAdded(m).encoded_len(),
                Err(Error::InvalidRecord(_))
            ));
        }
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
            agent_info: &[],
            starts: 0,
            ends: 0,
            cltt: 0,
            tstp: 0,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags::default(),
            context: Context::NONE,
        });
        assert!(matches!(r.encoded_len(), Err(Error::InvalidRecord(_))));
    }

    /// Journals written before lease records kept their context still replay.
    #[test]
    fn a_lease_record_without_context_reads_as_one_with_none() {
        let mut p = vec![KIND_LEASE, 2, 1, 6, 0, 0, 0, 0, 192, 0, 2, 9, 0, 0, 0, 0];
        p.extend_from_slice(&42u64.to_le_bytes());
        for t in [100u64, 200, 100, 0, 0, 0] {
            p.extend_from_slice(&t.to_le_bytes());
        }
        p.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        let Ok(Record::Lease(l)) = decode(&p) else {
            panic!("an old lease record must decode");
        };
        assert_eq!(
            (l.stamp, l.addr, l.state),
            (42, Ipv4Addr::new(192, 0, 2, 9), BindingState::Active)
        );
        assert_eq!(
            (l.starts, l.ends, l.chaddr),
            (100, 200, &[2, 0, 0, 0, 0, 9][..])
        );
        assert_eq!(l.context, Context::NONE);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = decode(&bytes);
        }
    }
}
