//! Our codec against an independent one (dhcproto), both ways, on random messages: what
//! dhcproto encodes we must read field for field; what our writer emits dhcproto must
//! decode to the same values, including values over 255 octets that we split (RFC 3396)
//! and dhcproto joins again. And no byte string, random or a damaged valid message, makes
//! our parser panic or answer inconsistently.
//!
//! dhcproto does not implement option overload (52), so overload is tested by
//! construction in the codec's unit tests instead.

use std::net::Ipv4Addr;

use dhcp_server::wire::{code, Message, MessageType, Request, Writer};
use dhcproto::v4::{self, relay, DhcpOption, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable};
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::new(192, 0, 2, o[3])),
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::new(198, 51, 100, o[3])),
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::new(198, 18 + (o[1] & 1), o[2], o[3])),
        Just(Ipv4Addr::UNSPECIFIED),
    ]
}

/// What a random client message holds, as dhcproto builds it.
#[derive(Debug, Clone)]
struct Sample {
    hops: u8,
    xid: u32,
    secs: u16,
    flags: u16,
    addrs: [Ipv4Addr; 4],
    chaddr: Vec<u8>,
    kind: u8,
    client_id: Option<Vec<u8>>,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    lease_time: Option<u32>,
    max_size: Option<u16>,
    prl: Option<Vec<u8>>,
    host_name: Option<String>,
    circuit: Option<(Vec<u8>, Vec<u8>)>,
    unknown: Vec<(u8, Vec<u8>)>,
}

fn sample() -> impl Strategy<Value = Sample> {
    let header = (
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        prop_oneof![Just(0u16), Just(0x8000u16)],
        [ip(), ip(), ip(), ip()],
        prop::collection::vec(any::<u8>(), 0..=16),
    );
    let opts = (
        1u8..=8,
        prop::option::of(prop::collection::vec(any::<u8>(), 2..=200)),
        prop::option::of(ip()),
        prop::option::of(ip()),
        prop::option::of(any::<u32>()),
        prop::option::of(576u16..),
        prop::option::of(prop::collection::vec(1u8..=254, 1..40)),
        prop::option::of("[a-z][a-z0-9-]{0,40}"),
        prop::option::of((
            prop::collection::vec(any::<u8>(), 1..30),
            prop::collection::vec(any::<u8>(), 1..30),
        )),
        // dhcproto writes nothing for an empty option, so only non-empty ones compare.
        prop::collection::btree_map(
            224u8..=254,
            prop::collection::vec(any::<u8>(), 1..=100),
            0..4,
        ),
    );
    (header, opts).prop_map(|((hops, xid, secs, flags, addrs, chaddr), o)| Sample {
        hops,
        xid,
        secs,
        flags,
        addrs,
        chaddr,
        kind: o.0,
        client_id: o.1,
        requested: o.2,
        server_id: o.3,
        lease_time: o.4,
        max_size: o.5,
        prl: o.6.map(|mut p| {
            p.sort();
            p.dedup();
            p
        }),
        host_name: o.7,
        circuit: o.8,
        unknown: o.9.into_iter().collect(),
    })
}

fn encode(s: &Sample) -> Vec<u8> {
    let [ci, yi, si, gi] = s.addrs;
    let mut m = v4::Message::new(ci, yi, si, gi, &s.chaddr);
    m.set_opcode(v4::Opcode::BootRequest)
        .set_hops(s.hops)
        .set_xid(s.xid)
        .set_secs(s.secs)
        .set_flags(s.flags.into());
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
    if let Some((circuit, remote)) = &s.circuit {
        let mut rai = relay::RelayAgentInformation::default();
        rai.insert(relay::RelayInfo::AgentCircuitId(circuit.clone()));
        rai.insert(relay::RelayInfo::AgentRemoteId(remote.clone()));
        o.insert(DhcpOption::RelayAgentInformation(rai));
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
    v4::Message::decode(&mut Decoder::new(bytes)).expect("dhcproto decodes our output")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn we_read_what_dhcproto_writes(s in sample()) {
        let bytes = encode(&s);
        let r = Request::parse(&bytes).expect("a valid message parses");
        let m = &r.msg;
        prop_assert_eq!(m.op(), 1);
        prop_assert_eq!((m.hops(), m.xid(), m.secs(), m.flags()), (s.hops, s.xid, s.secs, s.flags));
        prop_assert_eq!([m.ciaddr(), m.yiaddr(), m.siaddr(), m.giaddr()], s.addrs);
        prop_assert_eq!(m.chaddr(), &s.chaddr[..]);
        prop_assert_eq!(m.broadcast(), s.flags == 0x8000);
        prop_assert_eq!(r.msg_type, MessageType::from_u8(s.kind));
        prop_assert_eq!(r.client_id, s.client_id.as_deref());
        prop_assert_eq!(r.requested_address, s.requested);
        prop_assert_eq!(r.server_id, s.server_id);
        prop_assert_eq!(r.lease_time, s.lease_time);
        prop_assert_eq!(r.max_message_size, s.max_size);
        prop_assert_eq!(r.parameter_list, s.prl.as_deref());
        prop_assert_eq!(r.host_name, s.host_name.as_deref().map(str::as_bytes));
        let rai = s.circuit.as_ref().map(|(c, rem)| {
            let mut v = vec![1, c.len() as u8];
            v.extend_from_slice(c);
            v.extend_from_slice(&[2, rem.len() as u8]);
            v.extend_from_slice(rem);
            v
        });
        prop_assert_eq!(r.relay_agent_info, rai.as_deref());
        for (c, v) in &s.unknown {
            prop_assert_eq!(m.option(*c), Some(&v[..]));
        }
    }

    #[test]
    fn dhcproto_reads_what_we_write(
        s in sample(),
        yiaddr in ip(),
        values in prop::collection::btree_map(224u8..=254, prop::collection::vec(any::<u8>(), 0..=600), 0..4),
        lease in any::<u32>(),
    ) {
        let request = encode(&s);
        let req = Request::parse(&request).unwrap();
        let mut out = [0u8; 4096];
        let mut w = Writer::reply_to(&mut out, &req.msg, 4096).unwrap();
        w.set_yiaddr(yiaddr);
        w.option(code::MESSAGE_TYPE, &[2]).unwrap();
        w.option_ip(code::SERVER_ID, Ipv4Addr::new(192, 0, 2, 1)).unwrap();
        w.option_u32(code::LEASE_TIME, lease).unwrap();
        w.option(code::ROUTER, &[192, 0, 2, 1, 192, 0, 2, 2]).unwrap();
        for (c, v) in &values {
            w.option(*c, v).unwrap();
        }
        let len = w.finish();
        prop_assert!(len >= 300);
        let d = decode(&out[..len]);
        prop_assert_eq!(d.opcode(), v4::Opcode::BootReply);
        prop_assert_eq!((d.xid(), u16::from(d.flags()), d.giaddr(), d.yiaddr()), (s.xid, s.flags, s.addrs[3], yiaddr));
        prop_assert_eq!(d.chaddr(), &s.chaddr[..]);
        prop_assert_eq!(d.opts().get(OptionCode::MessageType), Some(&DhcpOption::MessageType(v4::MessageType::Offer)));
        prop_assert_eq!(d.opts().get(OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(lease)));
        prop_assert_eq!(
            d.opts().get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]))
        );
        for (c, v) in &values {
            match d.opts().get(OptionCode::from(*c)) {
                Some(DhcpOption::Unknown(u)) => prop_assert_eq!(u.data(), &v[..], "option {}", c),
                other => prop_assert!(false, "option {} decoded as {:?}", c, other),
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        check_consistent(&bytes);
    }

    #[test]
    fn damaged_valid_messages_never_panic(
        s in sample(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut bytes = encode(&s);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v;
        }
        let keep = cut.index(bytes.len() + 1);
        check_consistent(&bytes);
        check_consistent(&bytes[..keep]);
    }
}

/// Whatever the input, parsing returns; an accepted message's options all come back
/// the same from a second parse and from the generic walk.
fn check_consistent(bytes: &[u8]) {
    let (Ok(m), r) = (Message::parse(bytes), Request::parse(bytes)) else {
        return;
    };
    let first: Vec<_> = m.options().collect();
    assert!(
        first.iter().all(Result::is_ok),
        "an accepted message yields only good options"
    );
    let again: Vec<_> = Message::parse(bytes).unwrap().options().collect();
    assert_eq!(first, again);
    if let Ok(r) = r {
        assert_eq!(r.client_id, m.option(code::CLIENT_ID));
        assert_eq!(r.parameter_list, m.option(code::PARAMETER_REQUEST_LIST));
    }
}
