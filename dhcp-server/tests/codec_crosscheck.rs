//! Our codec against an independent one, dhcproto 0.15, on random messages, both ways:
//! every header field and option dhcproto encodes we must read back octet for octet, and
//! every reply our `Writer` builds dhcproto must decode to the values written, including
//! values over 255 octets that we split (RFC 3396) and dhcproto joins again.
//!
//! Option overload (52): dhcproto's `Message` does not implement it (it reads `sname` and
//! `file` as NUL-terminated names), so overloaded messages are built by hand here and
//! dhcproto decodes each overloaded field as a plain option list, which must match our
//! walk of that field.
//!
//! And no byte string, random or a damaged valid message, makes our parser panic or
//! answer inconsistently.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use dhcp_proto::wire::{code, Message, MessageType, OptionRef, Request, WireError, Writer};
use dhcproto::v4::{self, relay, DhcpOption, DhcpOptions, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Name};
use proptest::prelude::*;

const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;
const OPTIONS: usize = 240;

/// Addresses from the documentation and benchmarking ranges only.
fn ip() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u8>().prop_map(|o| Ipv4Addr::new(192, 0, 2, o)),
        any::<u8>().prop_map(|o| Ipv4Addr::new(198, 51, 100, o)),
        any::<u8>().prop_map(|o| Ipv4Addr::new(203, 0, 113, o)),
        any::<[u8; 3]>().prop_map(|o| Ipv4Addr::new(198, 18 | (o[0] & 1), o[1], o[2])),
        Just(Ipv4Addr::UNSPECIFIED),
    ]
}

fn mask() -> impl Strategy<Value = Ipv4Addr> {
    (0u32..=32).prop_map(|p| Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0)))
}

fn octets(addrs: &[Ipv4Addr]) -> Vec<u8> {
    addrs.iter().flat_map(|a| a.octets()).collect()
}

/// RFC 3397 search list without compression. Each name ends in a label of its own
/// ("t0", "t1", …) so that dhcproto, which compresses, finds no suffix to point at and
/// writes the same octets.
fn domain_search() -> impl Strategy<Value = (DhcpOption, Vec<u8>)> {
    prop::collection::vec(prop::collection::vec("[a-z][a-z0-9]{0,9}", 0..3), 1..=3).prop_map(
        |names| {
            let mut wire = Vec::new();
            let mut parsed = Vec::new();
            for (i, mut labels) in names.into_iter().enumerate() {
                labels.push(format!("t{i}"));
                for l in &labels {
                    wire.push(l.len() as u8);
                    wire.extend_from_slice(l.as_bytes());
                }
                wire.push(0);
                parsed.push(Name::from_ascii(format!("{}.", labels.join("."))).unwrap());
            }
            (DhcpOption::DomainSearch(parsed), wire)
        },
    )
}

/// RFC 3442 routes: prefix length, the significant octets of the destination, router.
/// dhcproto's route type comes from a crate it does not re-export, so its value is
/// obtained by decoding the octets we expect, and its encoder must give them back.
fn classless_routes() -> impl Strategy<Value = (DhcpOption, Vec<u8>)> {
    prop::collection::vec((ip(), 0u8..=32, ip()), 1..=4).prop_map(|routes| {
        let mut wire = Vec::new();
        for (dest, len, gw) in routes {
            wire.push(len);
            wire.extend_from_slice(&dest.octets()[..usize::from(len).div_ceil(8)]);
            wire.extend_from_slice(&gw.octets());
        }
        let mut opt = vec![code::CLASSLESS_ROUTES, wire.len() as u8];
        opt.extend_from_slice(&wire);
        let parsed = DhcpOption::decode(&mut Decoder::new(&opt)).unwrap();
        (parsed, wire)
    })
}

/// An option the engine does not pick out, with the value octets its RFC defines, so
/// the expected bytes do not come from dhcproto.
fn other_option() -> impl Strategy<Value = (DhcpOption, Vec<u8>)> {
    let ips = || prop::collection::vec(ip(), 1..=8);
    prop_oneof![
        mask().prop_map(|m| (DhcpOption::SubnetMask(m), m.octets().to_vec())),
        ips().prop_map(|v| (DhcpOption::Router(v.clone()), octets(&v))),
        ips().prop_map(|v| (DhcpOption::DomainNameServer(v.clone()), octets(&v))),
        "[a-z0-9.-]{1,40}".prop_map(|d| (DhcpOption::DomainName(d.clone()), d.into_bytes())),
        ip().prop_map(|a| (DhcpOption::BroadcastAddr(a), a.octets().to_vec())),
        ips().prop_map(|v| (DhcpOption::NtpServers(v.clone()), octets(&v))),
        any::<u32>().prop_map(|t| (DhcpOption::Renewal(t), t.to_be_bytes().to_vec())),
        any::<u32>().prop_map(|t| (DhcpOption::Rebinding(t), t.to_be_bytes().to_vec())),
        domain_search(),
        classless_routes(),
    ]
}

/// Option 82 sub-options (RFC 3046, RFC 3527); all absent means no option 82 at all.
#[derive(Debug, Clone)]
struct Relay {
    circuit: Option<Vec<u8>>,
    remote: Option<Vec<u8>>,
    link: Option<Ipv4Addr>,
}

impl Relay {
    fn info(&self) -> relay::RelayAgentInformation {
        let mut rai = relay::RelayAgentInformation::default();
        if let Some(c) = &self.circuit {
            rai.insert(relay::RelayInfo::AgentCircuitId(c.clone()));
        }
        if let Some(r) = &self.remote {
            rai.insert(relay::RelayInfo::AgentRemoteId(r.clone()));
        }
        if let Some(l) = self.link {
            rai.insert(relay::RelayInfo::LinkSelection(l));
        }
        rai
    }

    /// The option value: sub-options in code order, as dhcproto lays them out.
    fn wire(&self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        let subs = [
            (1, self.circuit.clone()),
            (2, self.remote.clone()),
            (5, self.link.map(|l| l.octets().to_vec())),
        ];
        for (sub, value) in subs {
            if let Some(value) = value {
                v.extend_from_slice(&[sub, value.len() as u8]);
                v.extend_from_slice(&value);
            }
        }
        (!v.is_empty()).then_some(v)
    }
}

/// What a random client message holds, as dhcproto builds it.
#[derive(Debug, Clone)]
struct Sample {
    htype: u8,
    hops: u8,
    xid: u32,
    secs: u16,
    flags: u16,
    addrs: [Ipv4Addr; 4],
    chaddr: Vec<u8>,
    sname: Vec<u8>,
    file: Vec<u8>,
    kind: u8,
    client_id: Option<Vec<u8>>,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    lease_time: Option<u32>,
    max_size: Option<u16>,
    prl: Option<Vec<u8>>,
    host_name: Option<String>,
    relay: Relay,
    others: BTreeMap<u8, (DhcpOption, Vec<u8>)>,
    /// Unknown codes; values over 255 octets go out split in several instances.
    unknown: BTreeMap<u8, Vec<u8>>,
}

fn sample() -> impl Strategy<Value = Sample> {
    let header = (
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        prop_oneof![Just(0u16), Just(0x8000u16), any::<u16>()],
        [ip(), ip(), ip(), ip()],
        prop::collection::vec(any::<u8>(), 0..=16),
        // Whatever `sname` and `file` hold, even option-like octets, is not read as
        // options unless option 52 says so.
        prop::collection::vec(any::<u8>(), 0..=64),
        prop::collection::vec(any::<u8>(), 0..=128),
    );
    let relay = (
        prop::option::of(prop::collection::vec(any::<u8>(), 1..30)),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..30)),
        prop::option::of(ip()),
    )
        .prop_map(|(circuit, remote, link)| Relay {
            circuit,
            remote,
            link,
        });
    let opts = (
        any::<u8>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 2..=200)),
        prop::option::of(ip()),
        prop::option::of(ip()),
        prop::option::of(any::<u32>()),
        prop::option::of(576u16..),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..40)),
        prop::option::of("[a-z][a-z0-9-]{0,40}"),
        relay,
        prop::collection::vec(other_option(), 0..6),
        // dhcproto writes nothing for an empty option, so only non-empty ones compare.
        prop::collection::btree_map(
            224u8..=254,
            prop::collection::vec(any::<u8>(), 1..=400),
            0..4,
        ),
    );
    (header, opts).prop_map(
        |((htype, hops, xid, secs, flags, addrs, chaddr, sname, file), o)| Sample {
            htype,
            hops,
            xid,
            secs,
            flags,
            addrs,
            chaddr,
            sname,
            file,
            kind: o.0,
            client_id: o.1,
            requested: o.2,
            server_id: o.3,
            lease_time: o.4,
            max_size: o.5,
            prl: o.6,
            host_name: o.7,
            relay: o.8,
            others: o
                .9
                .into_iter()
                .map(|(opt, wire)| (u8::from(OptionCode::from(&opt)), (opt, wire)))
                .collect(),
            unknown: o.10,
        },
    )
}

fn encode(s: &Sample) -> Vec<u8> {
    let [ci, yi, si, gi] = s.addrs;
    let mut m = v4::Message::new(ci, yi, si, gi, &s.chaddr);
    m.set_opcode(v4::Opcode::BootRequest)
        .set_htype(v4::HType::from(s.htype))
        .set_hops(s.hops)
        .set_xid(s.xid)
        .set_secs(s.secs)
        .set_flags(s.flags.into())
        .set_sname(&s.sname)
        .set_fname(&s.file);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(v4::MessageType::from(s.kind)));
    if let Some(id) = &s.client_id {
        o.insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    if let Some(a) = s.requested {
        o.insert(DhcpOption::RequestedIpAddress(a));
    }
    if let Some(a) = s.server_id {
        o.insert(DhcpOption::ServerIdentifier(a));
    }
    if let Some(t) = s.lease_time {
        o.insert(DhcpOption::AddressLeaseTime(t));
    }
    if let Some(n) = s.max_size {
        o.insert(DhcpOption::MaxMessageSize(n));
    }
    if let Some(p) = &s.prl {
        o.insert(DhcpOption::ParameterRequestList(
            p.iter().map(|&c| OptionCode::from(c)).collect(),
        ));
    }
    if let Some(h) = &s.host_name {
        o.insert(DhcpOption::Hostname(h.clone()));
    }
    o.insert(DhcpOption::RelayAgentInformation(s.relay.info()));
    for (opt, _) in s.others.values() {
        o.insert(opt.clone());
    }
    for (c, v) in &s.unknown {
        o.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(*c),
            v.clone(),
        )));
    }
    m.to_vec().expect("dhcproto encodes what it built")
}

fn decode(bytes: &[u8]) -> v4::Message {
    v4::Message::decode(&mut Decoder::new(bytes)).expect("dhcproto decodes it")
}

fn codes(opts: &DhcpOptions) -> BTreeSet<u8> {
    opts.iter().map(|(c, _)| u8::from(*c)).collect()
}

/// A field padded with zeros to its width, as dhcproto writes `sname` and `file`.
fn padded(v: &[u8], width: usize) -> Vec<u8> {
    let mut p = v.to_vec();
    p.resize(width, 0);
    p
}

/// All instances of `wanted`, joined as RFC 3396 would.
fn joined(m: &Message<'_>, wanted: u8) -> Vec<u8> {
    m.options()
        .flatten()
        .filter(|o| o.code == wanted)
        .flat_map(|o| o.value.iter().copied())
        .collect()
}

/// What a random reply carries besides what is echoed from the request.
#[derive(Debug, Clone)]
struct Reply {
    ack: bool,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    server_id: Ipv4Addr,
    lease: u32,
    renew: u32,
    rebind: u32,
    mask: Ipv4Addr,
    /// Up to 80 routers: 320 octets, split mid-address at 255 as RFC 3396 allows.
    routers: Vec<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    domain: String,
    unknown: BTreeMap<u8, Vec<u8>>,
}

fn reply() -> impl Strategy<Value = Reply> {
    (
        (any::<bool>(), ip(), ip(), ip()),
        (any::<u32>(), any::<u32>(), any::<u32>(), mask()),
        prop::collection::vec(ip(), 1..=80),
        prop::collection::vec(ip(), 1..=3),
        "[a-z0-9.-]{1,300}",
        prop::collection::btree_map(
            224u8..=254,
            prop::collection::vec(any::<u8>(), 0..=600),
            0..4,
        ),
    )
        .prop_map(
            |(
                (ack, yiaddr, siaddr, server_id),
                (lease, renew, rebind, mask),
                routers,
                dns,
                domain,
                unknown,
            )| Reply {
                ack,
                yiaddr,
                siaddr,
                server_id,
                lease,
                renew,
                rebind,
                mask,
                routers,
                dns,
                domain,
                unknown,
            },
        )
}

/// A request with option 52, built by hand since dhcproto cannot write one. `fields`
/// holds what each field carries, in the order of our walk: options, `file`, `sname`.
#[derive(Debug, Clone)]
struct Overloaded {
    bytes: Vec<u8>,
    overload: u8,
    kind: u8,
    fields: [Vec<(u8, Vec<u8>)>; 3],
}

/// Options both codecs read alike, at most 26 octets so several fit in `sname`.
fn small_option() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        ip().prop_map(|a| (code::REQUESTED_ADDRESS, a.octets().to_vec())),
        ip().prop_map(|a| (code::SERVER_ID, a.octets().to_vec())),
        any::<u32>().prop_map(|t| (code::LEASE_TIME, t.to_be_bytes().to_vec())),
        prop::collection::vec(any::<u8>(), 2..=20).prop_map(|v| (code::CLIENT_ID, v)),
        "[a-z][a-z0-9-]{0,19}".prop_map(|h| (code::HOST_NAME, h.into_bytes())),
        prop::collection::vec(1u8..=254, 1..=12).prop_map(|v| (code::PARAMETER_REQUEST_LIST, v)),
        (224u8..=254, prop::collection::vec(any::<u8>(), 0..=24)),
    ]
}

fn overloaded() -> impl Strategy<Value = Overloaded> {
    (
        1u8..=3,
        1u8..=8,
        prop::collection::vec((small_option(), 0usize..3), 0..16),
        [any::<bool>(), any::<bool>()],
        prop::collection::vec(any::<u8>(), 64 + 128),
    )
        .prop_map(|(overload, kind, opts, ends, filler)| {
            let mut b = vec![0u8; OPTIONS];
            b[..4].copy_from_slice(&[1, 1, 6, 0]);
            b[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            // A field that is not overloaded holds a name or junk, never read as options.
            b[SNAME.start..FILE.end].copy_from_slice(&filler);
            b[236..OPTIONS].copy_from_slice(&[99, 130, 83, 99]);
            let carries = [true, overload & 1 != 0, overload & 2 != 0];
            let ranges = [0..0, FILE, SNAME];
            let mut fields: [Vec<(u8, Vec<u8>)>; 3] = Default::default();
            let mut used = [0usize; 3];
            let mut seen = BTreeSet::new();
            for ((c, v), mut f) in opts {
                if !seen.insert(c) {
                    continue;
                }
                let need = 2 + v.len();
                if !carries[f] || used[f] + need > ranges[f].len() {
                    f = 0;
                }
                used[f] += need;
                fields[f].push((c, v));
            }
            for f in 1..3 {
                if !carries[f] {
                    continue;
                }
                let field = &mut b[ranges[f].clone()];
                field.fill(0);
                let mut at = 0;
                for (c, v) in &fields[f] {
                    field[at] = *c;
                    field[at + 1] = v.len() as u8;
                    field[at + 2..at + 2 + v.len()].copy_from_slice(v);
                    at += 2 + v.len();
                }
                // END is optional when the field's end closes the list; the rest is PAD.
                if ends[f - 1] && at < field.len() {
                    field[at] = code::END;
                }
            }
            // The overload option goes last: it counts wherever it sits in the field.
            b.extend_from_slice(&[code::MESSAGE_TYPE, 1, kind]);
            for (c, v) in &fields[0] {
                b.extend_from_slice(&[*c, v.len() as u8]);
                b.extend_from_slice(v);
            }
            b.extend_from_slice(&[code::OVERLOAD, 1, overload, code::END]);
            fields[0].insert(0, (code::MESSAGE_TYPE, vec![kind]));
            fields[0].push((code::OVERLOAD, vec![overload]));
            Overloaded {
                bytes: b,
                overload,
                kind,
                fields,
            }
        })
}

/// Which field an option came from, by where its code octet lies (an empty value at a
/// field's end starts where the next field does): 0 options, 1 file, 2 sname.
fn field_of(buf: &[u8], opt: &OptionRef<'_>) -> usize {
    let at = opt.value.as_ptr() as usize - buf.as_ptr() as usize - 2;
    if SNAME.contains(&at) {
        2
    } else if FILE.contains(&at) {
        1
    } else {
        0
    }
}

/// An option as dhcproto decoded it, back to code and value octets.
fn wire_value(opt: &DhcpOption) -> (u8, Vec<u8>) {
    match opt {
        // Re-encoding an empty unknown option writes nothing, so read it directly.
        DhcpOption::Unknown(u) => (u8::from(u.code()), u.data().to_vec()),
        _ => {
            let v = opt.to_vec().unwrap();
            (v[0], v[2..].to_vec())
        }
    }
}

fn sorted(mut v: Vec<(u8, Vec<u8>)>) -> Vec<(u8, Vec<u8>)> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn we_read_what_dhcproto_writes(s in sample()) {
        let bytes = encode(&s);
        let r = Request::parse(&bytes).expect("a valid message parses");
        let m = &r.msg;
        prop_assert_eq!((m.op(), m.htype(), m.hlen()), (1, s.htype, s.chaddr.len() as u8));
        prop_assert_eq!((m.hops(), m.xid(), m.secs(), m.flags()), (s.hops, s.xid, s.secs, s.flags));
        prop_assert_eq!(m.broadcast(), s.flags & 0x8000 != 0);
        prop_assert_eq!([m.ciaddr(), m.yiaddr(), m.siaddr(), m.giaddr()], s.addrs);
        prop_assert_eq!(m.chaddr(), &s.chaddr[..]);
        prop_assert_eq!(&m.chaddr_field()[..], &padded(&s.chaddr, 16)[..]);
        prop_assert_eq!(m.sname(), Some(&padded(&s.sname, 64)[..]));
        prop_assert_eq!(m.file(), Some(&padded(&s.file, 128)[..]));
        prop_assert_eq!(r.msg_type, MessageType::from_u8(s.kind));
        prop_assert_eq!(r.client_id, s.client_id.as_deref());
        prop_assert_eq!(r.requested_address, s.requested);
        prop_assert_eq!(r.server_id, s.server_id);
        prop_assert_eq!(r.lease_time, s.lease_time);
        prop_assert_eq!(r.max_message_size, s.max_size);
        prop_assert_eq!(r.parameter_list, s.prl.as_deref());
        prop_assert_eq!(r.host_name, s.host_name.as_deref().map(str::as_bytes));
        let rai = s.relay.wire();
        prop_assert_eq!(r.relay_agent_info, rai.as_deref());
        for (c, (_, wire)) in &s.others {
            prop_assert_eq!(m.option(*c), Some(&wire[..]), "option {}", c);
        }
        // We read the first instance of a split option; the instances, joined, are the value.
        for (c, v) in &s.unknown {
            prop_assert_eq!(m.option(*c), Some(&v[..v.len().min(255)]));
            prop_assert_eq!(&joined(m, *c), v);
        }
        // Nothing more than dhcproto wrote: its decoder sees the same set of codes.
        let ours: BTreeSet<u8> = m.options().flatten().map(|o| o.code).collect();
        prop_assert_eq!(ours, codes(decode(&bytes).opts()));
    }

    #[test]
    fn dhcproto_reads_what_we_write(s in sample(), rep in reply()) {
        let request = encode(&s);
        let req = Request::parse(&request).unwrap();
        let mut out = [0u8; 4096];
        let mut w = Writer::reply_to(&mut out, &req.msg, 4096).unwrap();
        w.set_yiaddr(rep.yiaddr);
        w.set_siaddr(rep.siaddr);
        let kind = if rep.ack { v4::MessageType::Ack } else { v4::MessageType::Offer };
        w.option(code::MESSAGE_TYPE, &[kind.into()]).unwrap();
        w.option_ip(code::SERVER_ID, rep.server_id).unwrap();
        w.option_u32(code::LEASE_TIME, rep.lease).unwrap();
        w.option_u32(code::RENEWAL_TIME, rep.renew).unwrap();
        w.option_u32(code::REBINDING_TIME, rep.rebind).unwrap();
        w.option_ip(code::SUBNET_MASK, rep.mask).unwrap();
        w.option(code::ROUTER, &octets(&rep.routers)).unwrap();
        w.option(code::DNS_SERVERS, &octets(&rep.dns)).unwrap();
        w.option(code::DOMAIN_NAME, rep.domain.as_bytes()).unwrap();
        if let Some(id) = req.client_id {
            w.option(code::CLIENT_ID, id).unwrap();
        }
        if let Some(rai) = req.relay_agent_info {
            w.option(code::RELAY_AGENT_INFO, rai).unwrap();
        }
        for (c, v) in &rep.unknown {
            w.option(*c, v).unwrap();
        }
        let len = w.finish();
        prop_assert!(len >= 300);

        let d = decode(&out[..len]);
        prop_assert_eq!(d.opcode(), v4::Opcode::BootReply);
        prop_assert_eq!((u8::from(d.htype()), d.hlen(), d.hops()), (s.htype, s.chaddr.len() as u8, 0));
        prop_assert_eq!(d.chaddr(), &s.chaddr[..]);
        prop_assert_eq!((d.xid(), d.secs(), u16::from(d.flags())), (s.xid, 0, s.flags));
        prop_assert_eq!(
            [d.ciaddr(), d.yiaddr(), d.siaddr(), d.giaddr()],
            [Ipv4Addr::UNSPECIFIED, rep.yiaddr, rep.siaddr, s.addrs[3]]
        );
        let o = d.opts();
        let mut expected = vec![
            DhcpOption::MessageType(kind),
            DhcpOption::ServerIdentifier(rep.server_id),
            DhcpOption::AddressLeaseTime(rep.lease),
            DhcpOption::Renewal(rep.renew),
            DhcpOption::Rebinding(rep.rebind),
            DhcpOption::SubnetMask(rep.mask),
            DhcpOption::Router(rep.routers.clone()),
            DhcpOption::DomainNameServer(rep.dns.clone()),
            DhcpOption::DomainName(rep.domain.clone()),
        ];
        // Echoed options come back as dhcproto read them in the request.
        let dreq = decode(&request);
        for c in [OptionCode::ClientIdentifier, OptionCode::RelayAgentInformation] {
            expected.extend(dreq.opts().get(c).cloned());
        }
        for (c, v) in &rep.unknown {
            expected.push(DhcpOption::Unknown(UnknownOption::new(OptionCode::from(*c), v.clone())));
        }
        for e in &expected {
            prop_assert_eq!(o.get(OptionCode::from(e)), Some(e));
        }
        let want: BTreeSet<u8> = expected.iter().map(|e| u8::from(OptionCode::from(e))).collect();
        prop_assert_eq!(codes(o), want);
    }

    #[test]
    fn writer_takes_a_whole_option_or_none(
        s in sample(),
        limit in 300usize..=1500,
        values in prop::collection::btree_map(224u8..=254, prop::collection::vec(any::<u8>(), 0..=600), 1..12),
    ) {
        let request = encode(&s);
        let req = Request::parse(&request).unwrap();
        // Stale octets in the buffer must not leak into the reply.
        let mut out = [0xa5u8; 1500];
        let mut w = Writer::reply_to(&mut out, &req.msg, limit).unwrap();
        w.option(code::MESSAGE_TYPE, &[2]).unwrap();
        let mut kept = BTreeMap::new();
        for (c, v) in &values {
            let before = w.remaining();
            let need = v.len() + 2 * v.len().div_ceil(255).max(1);
            match w.option(*c, v) {
                Ok(()) => {
                    prop_assert!(need <= before);
                    prop_assert_eq!(w.remaining(), before - need);
                    kept.insert(*c, v.clone());
                }
                Err(WireError::NoSpace) => {
                    prop_assert!(need > before);
                    prop_assert_eq!(w.remaining(), before);
                }
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
        let len = w.finish();
        prop_assert!((300..=limit).contains(&len));
        let d = decode(&out[..len]);
        let mut want: BTreeSet<u8> = kept.keys().copied().collect();
        want.insert(code::MESSAGE_TYPE);
        prop_assert_eq!(codes(d.opts()), want);
        for (c, v) in &kept {
            match d.opts().get(OptionCode::from(*c)) {
                Some(DhcpOption::Unknown(u)) => prop_assert_eq!(u.data(), &v[..], "option {}", c),
                other => prop_assert!(false, "option {} decoded as {:?}", c, other),
            }
        }
        let back = Message::parse(&out[..len]).unwrap();
        let end = back.options().flatten().last().map_or(OPTIONS, |o| {
            o.value.as_ptr() as usize - out.as_ptr() as usize + o.value.len()
        });
        prop_assert_eq!(out[end], code::END);
        prop_assert!(out[end + 1..len].iter().all(|&b| b == 0), "padding is zeros");
    }

    #[test]
    fn overloaded_fields_read_like_dhcproto_reads_them(o in overloaded()) {
        let b = &o.bytes[..];
        let r = Request::parse(b).expect("a valid overloaded message parses");
        let ov = r.msg.overload();
        prop_assert_eq!((ov.file, ov.sname), (o.overload & 1 != 0, o.overload & 2 != 0));
        prop_assert_eq!(r.msg.file(), (!ov.file).then_some(&b[FILE]));
        prop_assert_eq!(r.msg.sname(), (!ov.sname).then_some(&b[SNAME]));
        prop_assert_eq!(r.msg_type, MessageType::from_u8(o.kind));

        // By construction: each field yields what was put in it, in walk order.
        let mut ours: [Vec<(u8, Vec<u8>)>; 3] = Default::default();
        let mut last = 0;
        for opt in r.msg.options() {
            let opt = opt.unwrap();
            let f = field_of(b, &opt);
            prop_assert!(f >= last, "options field, then file, then sname");
            last = f;
            ours[f].push((opt.code, opt.value.to_vec()));
        }
        prop_assert_eq!(&ours, &o.fields);

        // Against dhcproto, field by field; it keeps one option per code, so compare sorted.
        let fields = [(true, OPTIONS..b.len()), (ov.file, FILE), (ov.sname, SNAME)];
        for (f, (carries, range)) in fields.into_iter().enumerate() {
            if !carries {
                continue; // junk, not options: dhcproto's decoders may assert on it
            }
            let theirs = DhcpOptions::decode(&mut Decoder::new(&b[range])).unwrap();
            let theirs: Vec<_> = theirs.iter().map(|(_, opt)| wire_value(opt)).collect();
            prop_assert_eq!(sorted(ours[f].clone()), theirs, "field {}", f);
        }

        // The summary picks options out of whichever field carries them.
        let all: BTreeMap<u8, Vec<u8>> = o.fields.iter().flatten().cloned().collect();
        let get = |c: u8| all.get(&c).map(|v| &v[..]);
        let ip4 = |c: u8| get(c).map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3]));
        prop_assert_eq!(r.requested_address, ip4(code::REQUESTED_ADDRESS));
        prop_assert_eq!(r.server_id, ip4(code::SERVER_ID));
        prop_assert_eq!(r.lease_time, get(code::LEASE_TIME).map(|v| u32::from_be_bytes(v.try_into().unwrap())));
        prop_assert_eq!(r.client_id, get(code::CLIENT_ID));
        prop_assert_eq!(r.host_name, get(code::HOST_NAME));
        prop_assert_eq!(r.parameter_list, get(code::PARAMETER_REQUEST_LIST));
    }

}

// The robustness checks are cheap, so they get more cases.
proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        check_consistent(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        s in sample(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = encode(&s);
        bytes.truncate(OPTIONS);
        bytes.extend_from_slice(&tail);
        check_consistent(&bytes);
    }

    #[test]
    fn damaged_valid_messages_never_panic(
        bytes in prop_oneof![sample().prop_map(|s| encode(&s)), overloaded().prop_map(|o| o.bytes)],
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..8),
    ) {
        let mut bytes = bytes;
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        check_consistent(&bytes);
        check_consistent(&bytes[..cut.index(bytes.len() + 1)]);
    }
}

/// Whatever the input, parsing returns. For an accepted message: every option lies
/// inside the field it was read from, and only in a field that may carry options; a
/// copy parses to the same options; the request summary is the first instance of each
/// option; dhcproto reads the same header; and a reply
/// to it can be written and parses back.
fn check_consistent(bytes: &[u8]) {
    let (m, r) = (Message::parse(bytes), Request::parse(bytes));
    assert!(r.is_err() || m.is_ok(), "a request is a message");
    let Ok(m) = m else { return };
    let ov = m.overload();
    assert_eq!(m.sname().is_none(), ov.sname);
    assert_eq!(m.file().is_none(), ov.file);
    assert!(usize::from(m.hlen()) <= 16 && m.chaddr().len() == usize::from(m.hlen()));
    let mut opts = Vec::new();
    let mut last = 0;
    for opt in m.options() {
        let opt = opt.expect("an accepted message yields only good options");
        let at = opt.value.as_ptr() as usize - bytes.as_ptr() as usize;
        let f = field_of(bytes, &opt);
        let field = [OPTIONS..bytes.len(), FILE, SNAME][f].clone();
        assert!(f >= last, "options field, then file, then sname");
        assert!(f != 1 || ov.file, "file read as options without overload");
        assert!(f != 2 || ov.sname, "sname read as options without overload");
        assert!(at >= field.start + 2 && at + opt.value.len() <= field.end);
        assert_eq!(
            (bytes[at - 2], usize::from(bytes[at - 1])),
            (opt.code, opt.value.len())
        );
        last = f;
        opts.push(opt);
    }
    let copy = bytes.to_vec();
    let again = Message::parse(&copy).expect("a copy parses as the original did");
    assert_eq!(again.overload(), ov);
    assert!(again.options().flatten().eq(opts.iter().copied()));

    // dhcproto gets the header alone: its option decoders assert on some malformed options.
    if let Ok(d) = v4::Message::decode(&mut Decoder::new(&bytes[..OPTIONS])) {
        assert_eq!(
            (d.xid(), d.secs(), u16::from(d.flags()), d.chaddr()),
            (m.xid(), m.secs(), m.flags(), m.chaddr())
        );
        assert_eq!(
            [d.ciaddr(), d.yiaddr(), d.siaddr(), d.giaddr()],
            [m.ciaddr(), m.yiaddr(), m.siaddr(), m.giaddr()]
        );
    }

    let Ok(r) = r else { return };
    let first = |c: u8| opts.iter().find(|o| o.code == c).map(|o| o.value);
    let ip4 = |c: u8| first(c).map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3]));
    assert_eq!(
        Some(r.msg_type),
        first(code::MESSAGE_TYPE).map(|v| MessageType::from_u8(v[0]))
    );
    assert_eq!(r.client_id, first(code::CLIENT_ID));
    assert_eq!(r.requested_address, ip4(code::REQUESTED_ADDRESS));
    assert_eq!(r.server_id, ip4(code::SERVER_ID));
    assert_eq!(r.parameter_list, first(code::PARAMETER_REQUEST_LIST));
    assert_eq!(r.host_name, first(code::HOST_NAME));
    assert_eq!(r.relay_agent_info, first(code::RELAY_AGENT_INFO));
    let be = |c: u8| first(c).map(|v| v.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)));
    assert_eq!(r.lease_time, be(code::LEASE_TIME));
    assert_eq!(
        r.max_message_size.map(u32::from),
        be(code::MAX_MESSAGE_SIZE)
    );

    let mut out = [0u8; 1500];
    let mut w = Writer::reply_to(&mut out, &r.msg, 1500).unwrap();
    w.option(code::MESSAGE_TYPE, &[2]).unwrap();
    if let Some(id) = r.client_id {
        w.option(code::CLIENT_ID, id).unwrap();
    }
    if let Some(rai) = r.relay_agent_info {
        w.option(code::RELAY_AGENT_INFO, rai).unwrap();
    }
    let len = w.finish();
    let back = Request::parse(&out[..len]).expect("our reply parses");
    assert_eq!(
        (
            back.msg.xid(),
            back.msg.chaddr_field(),
            back.client_id,
            back.relay_agent_info
        ),
        (m.xid(), m.chaddr_field(), r.client_id, r.relay_agent_info)
    );
}
