//! RFC 2131 behaviour, case by case, and the lease invariants as property tests over random
//! client populations, all through `Engine::handle` with simulated time.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::policy::{AddrRange, Ipv4Net, LeaseTimes, OptionSet, Subnet};
use crate::wire::{code, layout, Message, FLAG_BROADCAST};

const T0: u64 = 1_700_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn range(s: &str) -> AddrRange {
    s.parse().unwrap()
}

/// Link 0 carries 192.0.2.0/24 (pool .10-.19, a reservation by MAC outside the pool and
/// one by client id inside it); 198.51.100.0/24 is reached through a relay only.
fn config() -> Policy {
    let mut opts = OptionSet::default();
    opts.set_addresses(code::ROUTER, &[SERVER]);
    opts.set_addresses(code::DNS_SERVERS, &[ip("192.0.2.53")]);
    opts.set_text(code::DOMAIN_NAME, "lab.example");
    let mut printer_opts = OptionSet::default();
    printer_opts.set_addresses(code::DNS_SERVERS, &[ip("192.0.2.54")]);
    Policy {
        interfaces: vec!["lan0".into()],
        subnets: vec![
            Subnet {
                net: "192.0.2.0/24".parse().unwrap(),
                interface: Some(0),
                pools: vec![range("192.0.2.10-192.0.2.19").into()],
                server_id: None,
                lease: LeaseTimes {
                    default: 600,
                    min: 60,
                    max: 3600,
                    renew: None,
                    rebind: None,
                },
                options: opts,
                reservations: vec![
                    Reservation {
                        hw_address: Some([2, 0, 0, 0, 0xee, 1]),
                        address: Some(ip("192.0.2.5")),
                        host_name: Some("printer".into()),
                        options: printer_opts,
                        ..Default::default()
                    },
                    Reservation {
                        client_id: Some(b"\x00fixed".to_vec()),
                        address: Some(ip("192.0.2.15")),
                        ..Default::default()
                    },
                ],
            },
            Subnet {
                net: Ipv4Net::new(ip("198.51.100.0"), 24).unwrap(),
                interface: None,
                pools: vec![range("198.51.100.10-198.51.100.14").into()],
                server_id: Some(ip("203.0.113.1")),
                lease: LeaseTimes::default(),
                options: OptionSet::default(),
                reservations: vec![],
            },
        ],
        ..Policy::default()
    }
}

/// A client message under construction.
#[derive(Clone)]
struct Msg {
    kind: u8,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    broadcast: bool,
    opts: Vec<(u8, Vec<u8>)>,
}

impl Msg {
    fn new(kind: MessageType, mac: u8) -> Self {
        Msg {
            kind: kind.to_u8(),
            mac: [2, 0, 0, 0, 0, mac],
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            opts: vec![],
        }
    }
    fn opt(mut self, code: u8, v: &[u8]) -> Self {
        self.opts.push((code, v.to_vec()));
        self
    }
    fn requested(self, a: Ipv4Addr) -> Self {
        self.opt(code::REQUESTED_ADDRESS, &a.octets())
    }
    fn server(self, a: Ipv4Addr) -> Self {
        self.opt(code::SERVER_ID, &a.octets())
    }
    fn ciaddr(mut self, a: Ipv4Addr) -> Self {
        self.ciaddr = a;
        self
    }
    fn relayed(mut self) -> Self {
        self.giaddr = RELAY;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; layout::OPTIONS];
        b[layout::OP] = 1;
        b[layout::HTYPE] = 1;
        b[layout::HLEN] = 6;
        b[layout::XID..layout::XID + 4].copy_from_slice(&[1, 2, 3, self.mac[5]]);
        if self.broadcast {
            b[layout::FLAGS..layout::FLAGS + 2].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
        }
        b[layout::CIADDR..layout::CIADDR + 4].copy_from_slice(&self.ciaddr.octets());
        b[layout::GIADDR..layout::GIADDR + 4].copy_from_slice(&self.giaddr.octets());
        b[layout::CHADDR..layout::CHADDR + 6].copy_from_slice(&self.mac);
        b[layout::MAGIC..layout::OPTIONS].copy_from_slice(&layout::MAGIC_COOKIE);
        b.extend_from_slice(&[code::MESSAGE_TYPE, 1, self.kind]);
        for (c, v) in &self.opts {
            b.push(*c);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        b.push(code::END);
        b
    }
}

struct Lab {
    engine: Engine,
    now: u64,
    out: Vec<u8>,
}

/// What came back, decoded for assertions.
#[derive(Debug)]
struct Got {
    kind: MessageType,
    yiaddr: Ipv4Addr,
    ciaddr: Ipv4Addr,
    to: Destination,
    from: Ipv4Addr,
    flags: u16,
    opts: Vec<(u8, Vec<u8>)>,
}

impl Got {
    fn opt(&self, c: u8) -> Option<&[u8]> {
        self.opts.iter().find(|o| o.0 == c).map(|o| o.1.as_slice())
    }
    fn lease_time(&self) -> u32 {
        u32::from_be_bytes(self.opt(code::LEASE_TIME).unwrap().try_into().unwrap())
    }
}

impl Lab {
    fn new(config: Policy) -> Self {
        Lab {
            engine: Engine::new(config, T0).unwrap(),
            now: T0,
            out: vec![0; 1500],
        }
    }

    fn send(&mut self, m: &Msg) -> Outcome {
        let meta = RxMeta {
            link: 0,
            local_addr: SERVER,
            broadcast: m.ciaddr.is_unspecified() || m.broadcast,
        };
        let o = self
            .engine
            .handle(&m.bytes(), &meta, self.now, &mut self.out);
        self.engine.leases.check();
        o
    }

    fn reply(&mut self, m: &Msg) -> Got {
        match self.send(m) {
            Outcome::Reply(r) => {
                let msg = Message::parse(&self.out[..r.len]).unwrap();
                Got {
                    kind: MessageType::from_u8(msg.option(code::MESSAGE_TYPE).unwrap()[0]),
                    yiaddr: msg.yiaddr(),
                    ciaddr: msg.ciaddr(),
                    to: r.to,
                    from: r.from,
                    flags: msg.flags(),
                    opts: msg
                        .options()
                        .flatten()
                        .map(|o| (o.code, o.value.to_vec()))
                        .collect(),
                }
            }
            other => panic!(
                "expected a reply to {}, got {other:?}",
                MessageType::from_u8(m.kind).name()
            ),
        }
    }

    fn silent(&mut self, m: &Msg) -> Outcome {
        let o = self.send(m);
        assert!(
            !matches!(o, Outcome::Reply(_)),
            "expected no reply, got {o:?}"
        );
        o
    }

    /// DISCOVER, then REQUEST the offered address from this server: the bound address.
    fn dora(&mut self, m: &Msg) -> Ipv4Addr {
        let mut d = m.clone();
        d.kind = 1;
        let offer = self.reply(&d);
        assert_eq!(offer.kind, MessageType::Offer);
        let mut r = m.clone().requested(offer.yiaddr).server(offer.from);
        r.kind = 3;
        let ack = self.reply(&r);
        assert_eq!(ack.kind, MessageType::Ack, "{ack:?}");
        assert_eq!(ack.yiaddr, offer.yiaddr);
        ack.yiaddr
    }
}

fn discover(mac: u8) -> Msg {
    Msg::new(MessageType::Discover, mac)
}
fn request(mac: u8) -> Msg {
    Msg::new(MessageType::Request, mac)
}

#[test]
fn discover_offers_the_oldest_free_address_with_terms_and_options() {
    let mut lab = Lab::new(config());
    let o = lab.reply(&discover(1).opt(code::PARAMETER_REQUEST_LIST, &[1, 3, 6, 15]));
    assert_eq!(o.kind, MessageType::Offer);
    assert_eq!(o.yiaddr, ip("192.0.2.10"));
    assert_eq!(o.from, SERVER);
    assert_eq!(o.opt(code::SERVER_ID), Some(&SERVER.octets()[..]));
    assert_eq!(o.lease_time(), 600);
    assert_eq!(o.opt(code::RENEWAL_TIME), Some(&300u32.to_be_bytes()[..]));
    assert_eq!(o.opt(code::REBINDING_TIME), Some(&525u32.to_be_bytes()[..]));
    assert_eq!(o.opt(code::SUBNET_MASK), Some(&[255, 255, 255, 0][..]));
    assert_eq!(o.opt(code::ROUTER), Some(&SERVER.octets()[..]));
    assert_eq!(o.opt(code::DOMAIN_NAME), Some(&b"lab.example"[..]));
    assert_eq!(
        o.to,
        Destination::Hardware {
            ip: ip("192.0.2.10"),
            mac: [2, 0, 0, 0, 0, 1]
        }
    );
}

#[test]
fn options_not_in_the_parameter_list_are_left_out() {
    let mut lab = Lab::new(config());
    let o = lab.reply(&discover(1).opt(code::PARAMETER_REQUEST_LIST, &[1, 3]));
    assert!(o.opt(code::ROUTER).is_some());
    assert!(o.opt(code::DNS_SERVERS).is_none());
    assert!(o.opt(code::DOMAIN_NAME).is_none());
}

#[test]
fn an_offer_is_held_for_its_client_then_returns() {
    let mut lab = Lab::new(config());
    let a = lab.reply(&discover(1)).yiaddr;
    let b = lab.reply(&discover(2)).yiaddr;
    assert_ne!(a, b);
    assert_eq!(lab.reply(&discover(1)).yiaddr, a, "same client, same offer");
    lab.now += lab.engine.policy().offer_hold as u64 + 1;
    lab.engine.tick(lab.now);
    assert_eq!(
        lab.engine
            .leases()
            .slot(lab.engine.leases().slot_of(a).unwrap())
            .state,
        LeaseState::Expired
    );
}

#[test]
fn the_clients_current_lease_comes_first_then_its_requested_address() {
    let mut lab = Lab::new(config());
    let bound = lab.dora(&discover(1));
    let o = lab.reply(&discover(1).requested(ip("192.0.2.18")));
    assert_eq!(
        o.yiaddr, bound,
        "current lease before the requested address"
    );
    let o = lab.reply(&discover(2).requested(ip("192.0.2.18")));
    assert_eq!(
        o.yiaddr,
        ip("192.0.2.18"),
        "a free requested address is honoured"
    );
    let o = lab.reply(&discover(3).requested(ip("192.0.2.18")));
    assert_ne!(o.yiaddr, ip("192.0.2.18"), "held for client 2");
    let o = lab.reply(&discover(4).requested(ip("198.51.100.10")));
    assert!(
        config().subnets[0].pools[0].contains(o.yiaddr),
        "wrong-network request ignored"
    );
}

#[test]
fn broadcast_flag_and_relay_and_ciaddr_pick_the_destination() {
    let mut lab = Lab::new(config());
    let mut d = discover(1);
    d.broadcast = true;
    let o = lab.reply(&d);
    assert_eq!(o.to, Destination::Broadcast);
    assert_eq!(o.flags, FLAG_BROADCAST, "flags copied from the request");
    let o = lab.reply(&discover(2).relayed());
    assert_eq!(o.to, Destination::Relay(RELAY));
    assert!(
        range("198.51.100.10-198.51.100.14").contains(o.yiaddr),
        "placed by giaddr"
    );
    assert_eq!(
        o.from,
        ip("203.0.113.1"),
        "the subnet's configured server id"
    );
    assert_eq!(o.opt(code::SERVER_ID), Some(&[203, 0, 113, 1][..]));
}

#[test]
fn selecting_request_gets_ack_and_a_request_for_another_server_releases_the_offer() {
    let mut lab = Lab::new(config());
    let a = lab.dora(&discover(1));
    assert_eq!(a, ip("192.0.2.10"));
    let offered = lab.reply(&discover(2)).yiaddr;
    let out = lab.silent(&request(2).requested(offered).server(ip("192.0.2.250")));
    assert_eq!(out, Outcome::Dropped(Drop::OtherServer));
    let s = lab.engine.leases().slot_of(offered).unwrap();
    assert!(
        lab.engine.leases().slot(s).state.available(),
        "offer withdrawn"
    );
}

#[test]
fn selecting_request_for_an_address_held_by_another_client_is_naked() {
    let mut lab = Lab::new(config());
    let a = lab.dora(&discover(1));
    let n = lab.reply(&request(2).requested(a).server(SERVER));
    assert_eq!(n.kind, MessageType::Nak);
    assert_eq!(n.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(n.to, Destination::Broadcast);
    assert!(n.opt(code::LEASE_TIME).is_none());
}

/// INIT-REBOOT and RENEW/REBIND verdicts, authoritative and not.
#[test]
fn request_verdicts_table() {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Ack,
        Nak,
        Silent,
    }
    use Want::*;
    // (case, authoritative, message from client 1 after client 1 holds .10 and client 2 holds .11, expected)
    let cases: Vec<(&str, bool, Msg, Want)> = vec![
        (
            "init-reboot own address",
            true,
            request(1).requested(ip("192.0.2.10")),
            Ack,
        ),
        (
            "init-reboot other's address",
            true,
            request(1).requested(ip("192.0.2.11")),
            Nak,
        ),
        (
            "init-reboot other's address, not authoritative",
            false,
            request(1).requested(ip("192.0.2.11")),
            Nak,
        ),
        (
            "init-reboot free pool address",
            true,
            request(1).requested(ip("192.0.2.17")),
            Ack,
        ),
        (
            "init-reboot free pool address, not authoritative",
            false,
            request(1).requested(ip("192.0.2.17")),
            Ack,
        ),
        (
            "init-reboot wrong network",
            true,
            request(1).requested(ip("198.51.100.10")),
            Nak,
        ),
        (
            "init-reboot wrong network, not authoritative",
            false,
            request(1).requested(ip("198.51.100.10")),
            Silent,
        ),
        (
            "init-reboot outside pools",
            true,
            request(1).requested(ip("192.0.2.100")),
            Nak,
        ),
        (
            "init-reboot outside pools, not authoritative",
            false,
            request(1).requested(ip("192.0.2.100")),
            Silent,
        ),
        (
            "init-reboot reserved for another",
            true,
            request(1).requested(ip("192.0.2.15")),
            Nak,
        ),
        (
            "renewing own address",
            true,
            request(1).ciaddr(ip("192.0.2.10")),
            Ack,
        ),
        (
            "renewing other's address",
            false,
            request(1).ciaddr(ip("192.0.2.11")),
            Nak,
        ),
        (
            "rebinding unknown address, not authoritative",
            false,
            request(1).ciaddr(ip("192.0.2.100")),
            Silent,
        ),
        (
            "selecting our server, address outside pools",
            false,
            request(1).requested(ip("192.0.2.100")).server(SERVER),
            Nak,
        ),
        ("request without any address", true, request(1), Silent),
    ];
    for (name, authoritative, msg, want) in cases {
        let mut cfg = config();
        cfg.authoritative = authoritative;
        let mut lab = Lab::new(cfg);
        assert_eq!(lab.dora(&discover(1)), ip("192.0.2.10"));
        assert_eq!(lab.dora(&discover(2)), ip("192.0.2.11"));
        let got = match lab.send(&msg) {
            Outcome::Reply(r) if r.kind == MessageType::Ack => Ack,
            Outcome::Reply(r) if r.kind == MessageType::Nak => Nak,
            Outcome::Reply(r) => panic!("{name}: unexpected {r:?}"),
            _ => Silent,
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn renewal_extends_the_lease_and_is_sent_to_ciaddr() {
    let mut lab = Lab::new(config());
    let a = lab.dora(&discover(1));
    lab.now += 300;
    let ack = lab.reply(&request(1).ciaddr(a));
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!((ack.yiaddr, ack.ciaddr), (a, a));
    assert_eq!(ack.to, Destination::Unicast(a));
    let slot = lab
        .engine
        .leases()
        .slot(lab.engine.leases().slot_of(a).unwrap());
    assert_eq!(slot.expires, lab.now + 600);
    assert_eq!(slot.cltt, lab.now);
}

#[test]
fn requested_lease_time_is_clamped() {
    let mut lab = Lab::new(config());
    let o = lab.reply(&discover(1).opt(code::LEASE_TIME, &99_999u32.to_be_bytes()));
    assert_eq!(o.lease_time(), 3600);
    let o = lab.reply(&discover(2).opt(code::LEASE_TIME, &1u32.to_be_bytes()));
    assert_eq!(o.lease_time(), 60);
}

#[test]
fn expired_addresses_are_reused_oldest_first_and_affinity_survives() {
    let mut lab = Lab::new(config());
    // Fill the pool (.10-.19 less .15, reserved): nine clients.
    let held: Vec<_> = (1..=9).map(|c| lab.dora(&discover(c))).collect();
    assert_eq!(lab.send(&discover(50)), Outcome::Dropped(Drop::NoFreeLease));
    lab.now += 100;
    assert_eq!(
        lab.reply(&request(3).ciaddr(held[2])).kind,
        MessageType::Ack
    );
    lab.now += 550;
    lab.engine.tick(lab.now);
    // Everyone but client 3 has expired, client 1's lease first.
    let o = lab.reply(&discover(50));
    assert_eq!(o.yiaddr, held[0], "oldest expired first");
    let o = lab.reply(&discover(2));
    assert_eq!(o.yiaddr, held[1], "a returning client gets its old address");
}

#[test]
fn decline_quarantines_the_address() {
    let mut lab = Lab::new(config());
    let a = lab.dora(&discover(1));
    assert_eq!(
        lab.send(
            &Msg::new(MessageType::Decline, 1)
                .requested(a)
                .server(SERVER)
        ),
        Outcome::Done
    );
    let o = lab.reply(&discover(1));
    assert_ne!(o.yiaddr, a, "declined address not offered again");
    let slot = lab.engine.leases().slot_of(a).unwrap();
    assert_eq!(lab.engine.leases().slot(slot).state, LeaseState::Declined);
    lab.now += lab.engine.policy().decline_hold as u64;
    lab.engine.tick(lab.now);
    assert_eq!(lab.engine.leases().slot(slot).state, LeaseState::Free);
    assert_eq!(lab.engine.leases().slot(slot).client, None);
}

#[test]
fn decline_from_another_client_changes_nothing() {
    let mut lab = Lab::new(config());
    let a = lab.dora(&discover(1));
    assert_eq!(
        lab.send(&Msg::new(MessageType::Decline, 2).requested(a)),
        Outcome::Dropped(Drop::NotHeld)
    );
    assert_eq!(lab.reply(&request(1).ciaddr(a)).kind, MessageType::Ack);
}

#[test]
fn release_frees_the_address_but_the_client_gets_it_back() {
    let mut lab = Lab::new(config());
    let a = lab.dora(&discover(1));
    assert_eq!(
        lab.send(&Msg::new(MessageType::Release, 1).ciaddr(a).server(SERVER)),
        Outcome::Done
    );
    let slot = lab.engine.leases().slot_of(a).unwrap();
    assert_eq!(lab.engine.leases().slot(slot).state, LeaseState::Released);
    assert_eq!(lab.reply(&discover(1)).yiaddr, a);
}

#[test]
fn inform_gets_options_without_a_lease() {
    let mut lab = Lab::new(config());
    let ack = lab.reply(&Msg::new(MessageType::Inform, 9).ciaddr(ip("192.0.2.200")));
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(ack.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr, ip("192.0.2.200"));
    assert!(ack.opt(code::LEASE_TIME).is_none());
    assert!(ack.opt(code::ROUTER).is_some());
    assert_eq!(ack.to, Destination::Unicast(ip("192.0.2.200")));
}

#[test]
fn reservations_by_mac_and_by_client_id() {
    let mut lab = Lab::new(config());
    let mut printer = discover(0);
    printer.mac = [2, 0, 0, 0, 0xee, 1];
    let o = lab.reply(&printer);
    assert_eq!(o.yiaddr, ip("192.0.2.5"), "reserved outside the pool");
    assert_eq!(o.opt(code::HOST_NAME), Some(&b"printer"[..]));
    assert_eq!(
        o.opt(code::DNS_SERVERS),
        Some(&[192, 0, 2, 54][..]),
        "reservation options win"
    );
    assert_eq!(
        o.opt(code::ROUTER),
        Some(&SERVER.octets()[..]),
        "subnet options still apply"
    );
    let o = lab.reply(&discover(7).opt(code::CLIENT_ID, b"\x00fixed"));
    assert_eq!(o.yiaddr, ip("192.0.2.15"));
    assert_eq!(
        o.opt(code::CLIENT_ID),
        Some(&b"\x00fixed"[..]),
        "client id echoed (RFC 6842)"
    );
}

#[test]
fn relay_agent_information_is_echoed() {
    let mut lab = Lab::new(config());
    let rai = [1, 4, b'p', b'o', b'r', b't', 2, 2, 0xab, 0xcd];
    let o = lab.reply(&discover(1).relayed().opt(code::RELAY_AGENT_INFO, &rai));
    assert_eq!(o.opt(code::RELAY_AGENT_INFO), Some(&rai[..]));
    let n = lab.reply(&request(1).relayed().requested(ip("192.0.2.10")));
    assert_eq!(
        n.kind,
        MessageType::Nak,
        "wrong network for the relay's subnet"
    );
    assert_eq!(n.to, Destination::Relay(RELAY));
    assert_eq!(
        n.flags & FLAG_BROADCAST,
        FLAG_BROADCAST,
        "relayed NAK asks for broadcast"
    );
}

#[test]
fn link_selection_and_subnet_selection_choose_the_subnet_over_giaddr() {
    let mut lab = Lab::new(config());
    // The relay sits in 198.51.100.0/24 but says the client is on 192.0.2.0/24.
    let rai = [1, 2, b'p', b'1', 5, 4, 192, 0, 2, 0];
    let o = lab.reply(&discover(1).relayed().opt(code::RELAY_AGENT_INFO, &rai));
    assert_eq!(o.yiaddr, ip("192.0.2.10"));
    assert_eq!(
        o.to,
        Destination::Relay(RELAY),
        "the reply still goes to giaddr"
    );
    // Link selection from a client that no relay forwarded is not believed.
    let direct = lab.reply(&discover(2).opt(code::RELAY_AGENT_INFO, &[5, 4, 198, 51, 100, 0]));
    assert!(
        range("192.0.2.10-192.0.2.19").contains(direct.yiaddr),
        "{direct:?}"
    );
    // RFC 3011: a client on the link asks for the relayed subnet; the option is echoed.
    let o = lab.reply(&discover(3).opt(code::SUBNET_SELECTION, &[198, 51, 100, 0]));
    assert_eq!(o.yiaddr, ip("198.51.100.10"));
    assert_eq!(o.opt(code::SUBNET_SELECTION), Some(&[198, 51, 100, 0][..]));
    // A selected subnet the server does not have: not served.
    lab.silent(&discover(4).opt(code::SUBNET_SELECTION, &[203, 0, 113, 0]));
}

#[test]
fn server_identifier_override_is_shown_to_the_client_and_accepted_back() {
    let mut lab = Lab::new(config());
    let rai = [1, 2, b'p', b'1', 11, 4, 198, 51, 100, 1];
    let d = discover(1).relayed().opt(code::RELAY_AGENT_INFO, &rai);
    let o = lab.reply(&d);
    assert_eq!(o.opt(code::SERVER_ID), Some(&[198, 51, 100, 1][..]));
    assert_eq!(
        o.from,
        ip("203.0.113.1"),
        "the datagram leaves from our address"
    );
    let r = request(1)
        .relayed()
        .opt(code::RELAY_AGENT_INFO, &rai)
        .requested(o.yiaddr)
        .server(ip("198.51.100.1"));
    let a = lab.reply(&r);
    assert_eq!(a.kind, MessageType::Ack);
    // Without the override, the relay's address is another server's.
    lab.silent(
        &request(1)
            .relayed()
            .requested(o.yiaddr)
            .server(ip("198.51.100.1")),
    );
}

#[test]
fn the_relay_agent_information_is_kept_with_the_lease_and_journaled() {
    let mut lab = Lab::new(config());
    let rai = [1, 5, b'o', b'l', b't', b'-', b'7', 2, 2, 0xab, 0xcd];
    let m = discover(1).relayed().opt(code::RELAY_AGENT_INFO, &rai);
    let addr = lab.dora(&m);
    let rec = lab.engine.take_change(lab.now).unwrap();
    assert_eq!(rec.agent_info, &rai[..]);
    // A renewal unicast by the client carries none: the relay's stays with the lease.
    lab.now += 300;
    let ack = lab.reply(&request(1).ciaddr(addr));
    assert_eq!(ack.kind, MessageType::Ack);
    let rec = lab.engine.take_change(lab.now).unwrap();
    assert_eq!(rec.agent_info, &rai[..]);
    // Replayed, the lease has it again.
    let lease = crate::lease::Lease::from_record(&rec);
    let mut again = Engine::new(config(), lab.now).unwrap();
    again.restore([&lease], lab.now);
    let id = again.leases().slot_of(addr).unwrap();
    assert_eq!(again.leases().slot(id).agent.as_deref(), Some(&rai[..]));
    // Another client on the address does not inherit it.
    lab.now += 4000;
    lab.engine.tick(lab.now);
    let other = lab.dora(&discover(9).relayed().requested(addr));
    assert_eq!(other, addr);
    let id = lab.engine.leases().slot_of(other).unwrap();
    assert_eq!(lab.engine.leases().slot(id).agent, None);
}

/// Three classes over the relayed subnet: VoIP phones by vendor class, set-top boxes by
/// OUI, and subscriber lines by circuit id (listed ports, each its own settings).
fn classes_config() -> Policy {
    use crate::expr::{Test, Value};
    use crate::policy::{Class, Membership, Pool, Settings, Subclass};
    let mut cfg = config();
    let test = |src: &str, known: &[&str]| {
        let mut resolve = |n: &str| {
            crate::policy::class::builtin(n)
                .or_else(|| known.iter().position(|k| *k == n).map(|i| i as u16))
        };
        Test::parse(src, &mut resolve).unwrap()
    };
    let mut voip_opts = OptionSet::default();
    voip_opts.set_text(code::DOMAIN_NAME, "voip.example");
    let mut port2_opts = OptionSet::default();
    port2_opts.set_addresses(code::DNS_SERVERS, &[ip("198.51.100.53")]);
    cfg.classes = vec![
        Class {
            name: "voip".into(),
            membership: Membership::Test(test("option[60].text starts-with 'VOIP'", &[])),
            settings: Settings {
                options: voip_opts,
                lease: Some(LeaseTimes {
                    default: 300,
                    min: 60,
                    max: 300,
                    renew: None,
                    rebind: None,
                }),
                next_server: Some(ip("192.0.2.69")),
                filename: Some("phone.cfg".into()),
            },
            lease_limit: None,
        },
        Class {
            name: "stb".into(),
            membership: Membership::Test(test(
                "pkt4.oui == 0x02aabb and not member('voip')",
                &["voip"],
            )),
            settings: Settings::default(),
            lease_limit: None,
        },
        Class {
            name: "port".into(),
            membership: Membership::Match {
                value: Value::parse("relay4[1]").unwrap(),
                spawn: false,
                subclasses: vec![
                    Subclass {
                        value: b"port-1".to_vec(),
                        settings: Settings::default(),
                    },
                    Subclass {
                        value: b"port-2".to_vec(),
                        settings: Settings {
                            options: port2_opts,
                            ..Settings::default()
                        },
                    },
                ],
            },
            settings: Settings::default(),
            lease_limit: Some(2),
        },
    ];
    let mut stb_opts = OptionSet::default();
    stb_opts.set_text(code::DOMAIN_NAME, "tv.example");
    cfg.subnets[1].pools = vec![
        Pool {
            range: range("198.51.100.10-198.51.100.14"),
            allow: vec![0],
            ..Pool::default()
        },
        Pool {
            range: range("198.51.100.20-198.51.100.24"),
            allow: vec![1],
            options: stb_opts,
            ..Pool::default()
        },
        Pool {
            range: range("198.51.100.30-198.51.100.39"),
            deny: vec![0, 1],
            ..Pool::default()
        },
    ];
    cfg
}

fn circuit(port: &[u8]) -> Vec<u8> {
    let mut v = vec![1, port.len() as u8];
    v.extend_from_slice(port);
    v
}

#[test]
fn classes_pick_the_pool_and_add_their_settings() {
    let mut lab = Lab::new(classes_config());
    let phone = lab.reply(&discover(1).relayed().opt(60, b"VOIP-x100"));
    assert!(
        range("198.51.100.10-198.51.100.14").contains(phone.yiaddr),
        "{phone:?}"
    );
    assert_eq!(phone.lease_time(), 300, "the class's lease time");
    assert_eq!(phone.opt(code::DOMAIN_NAME), Some(&b"voip.example"[..]));
    let raw = Message::parse(&lab.out[..600]).unwrap();
    assert_eq!(raw.siaddr(), ip("192.0.2.69"));
    assert!(raw.file().unwrap().starts_with(b"phone.cfg\0"));

    let mut stb = discover(2).relayed();
    stb.mac = [2, 0xaa, 0xbb, 0, 0, 2];
    let tv = lab.reply(&stb);
    assert!(
        range("198.51.100.20-198.51.100.24").contains(tv.yiaddr),
        "{tv:?}"
    );
    assert_eq!(
        tv.opt(code::DOMAIN_NAME),
        Some(&b"tv.example"[..]),
        "the pool's option"
    );

    let pc = lab.reply(&discover(3).relayed());
    assert!(
        range("198.51.100.30-198.51.100.39").contains(pc.yiaddr),
        "{pc:?}"
    );

    // A subclass member's own option, over the subnet's.
    let member = lab.reply(
        &discover(4)
            .relayed()
            .opt(code::RELAY_AGENT_INFO, &circuit(b"port-2")),
    );
    assert_eq!(member.opt(code::DNS_SERVERS), Some(&[198, 51, 100, 53][..]));

    // A phone asking for an address of the set-top pool is refused it.
    let n = lab.reply(
        &request(1)
            .relayed()
            .opt(60, b"VOIP-x100")
            .requested(tv.yiaddr),
    );
    assert_eq!(n.kind, MessageType::Nak, "{n:?}");
}

#[test]
fn a_full_class_restricted_pool_leaves_its_clients_unserved_and_others_untouched() {
    let mut lab = Lab::new(classes_config());
    for mac in 10..15 {
        lab.dora(&discover(mac).relayed().opt(60, b"VOIP"));
    }
    assert_eq!(
        lab.silent(&discover(15).relayed().opt(60, b"VOIP")),
        Outcome::Dropped(Drop::NoFreeLease)
    );
    lab.dora(&discover(16).relayed());
}

#[test]
fn a_lease_limit_caps_the_leases_of_one_circuit() {
    let mut lab = Lab::new(classes_config());
    let port1 = circuit(b"port-1");
    let a = lab.dora(&discover(1).relayed().opt(code::RELAY_AGENT_INFO, &port1));
    lab.dora(&discover(2).relayed().opt(code::RELAY_AGENT_INFO, &port1));
    assert_eq!(
        lab.silent(&discover(3).relayed().opt(code::RELAY_AGENT_INFO, &port1)),
        Outcome::Dropped(Drop::LeaseLimit)
    );
    assert_eq!(lab.engine.stats().dropped(Drop::LeaseLimit), 1);
    // Another circuit has its own count; a client that holds a lease keeps renewing.
    lab.dora(
        &discover(4)
            .relayed()
            .opt(code::RELAY_AGENT_INFO, &circuit(b"port-2")),
    );
    lab.now += 100;
    let renew = lab.reply(
        &request(1)
            .relayed()
            .opt(code::RELAY_AGENT_INFO, &port1)
            .ciaddr(a),
    );
    assert_eq!(renew.kind, MessageType::Ack);
    // A release makes room.
    lab.send(&Msg::new(MessageType::Release, 1).relayed().ciaddr(a));
    lab.dora(&discover(3).relayed().opt(code::RELAY_AGENT_INFO, &port1));
    // Replayed, the leases count again: the circuit is still full.
    let held: Vec<crate::lease::Lease> = lab
        .engine
        .leases()
        .slots()
        .filter(|(_, s)| s.state == LeaseState::Active)
        .map(|(id, _)| lab.engine.lease_at(id))
        .collect();
    let mut again = Engine::new(classes_config(), lab.now).unwrap();
    again.restore(&held, lab.now);
    let mut lab2 = Lab {
        engine: again,
        now: lab.now,
        out: vec![0; 1500],
    };
    assert_eq!(
        lab2.silent(&discover(5).relayed().opt(code::RELAY_AGENT_INFO, &port1)),
        Outcome::Dropped(Drop::LeaseLimit)
    );
}

#[test]
fn members_added_at_run_time_join_their_class_and_survive_a_reload() {
    let mut lab = Lab::new(classes_config());
    let port9 = circuit(b"port-9");
    assert_eq!(
        lab.engine.add_class_member("voip", b"x"),
        Err(NotMember::NotMatching("voip".into()))
    );
    assert_eq!(
        lab.engine.add_class_member("nope", b"x"),
        Err(NotMember::NoClass("nope".into()))
    );
    lab.engine.add_class_member("port", b"port-9").unwrap();
    assert!(lab.engine.add_class_member("port", b"port-9").is_err());
    lab.dora(&discover(1).relayed().opt(code::RELAY_AGENT_INFO, &port9));
    lab.dora(&discover(2).relayed().opt(code::RELAY_AGENT_INFO, &port9));
    assert_eq!(
        lab.silent(&discover(3).relayed().opt(code::RELAY_AGENT_INFO, &port9)),
        Outcome::Dropped(Drop::LeaseLimit),
        "a member of the limited class"
    );
    lab.engine.reconfigure(Arc::new(classes_config()));
    assert_eq!(
        lab.engine.class_members().collect::<Vec<_>>(),
        [("port", &b"port-9"[..])]
    );
    lab.engine.remove_class_member("port", b"port-9").unwrap();
    assert!(
        lab.engine.remove_class_member("port", b"port-1").is_err(),
        "the file's stay"
    );
    lab.dora(&discover(3).relayed().opt(code::RELAY_AGENT_INFO, &port9));
}

#[test]
fn reservations_by_circuit_id_and_flex_id_follow_the_subscriber_not_the_device() {
    use crate::policy::{Subscriber, SubscriberKind};
    let mut cfg = config();
    cfg.flex_id = Some(crate::expr::Value::parse("relay4[2]").unwrap());
    cfg.subnets[1].reservations = vec![
        Reservation {
            subscriber: Some(Subscriber {
                kind: SubscriberKind::CircuitId,
                value: b"olt-1/1/7".to_vec(),
            }),
            address: Some(ip("198.51.100.12")),
            ..Default::default()
        },
        Reservation {
            subscriber: Some(Subscriber {
                kind: SubscriberKind::Flex,
                value: b"cpe-42".to_vec(),
            }),
            address: Some(ip("198.51.100.13")),
            ..Default::default()
        },
    ];
    let mut lab = Lab::new(cfg);
    let port7 = circuit(b"olt-1/1/7");
    assert_eq!(
        lab.dora(&discover(1).relayed().opt(code::RELAY_AGENT_INFO, &port7)),
        ip("198.51.100.12")
    );
    let flex = [2, 6, b'c', b'p', b'e', b'-', b'4', b'2'];
    assert_eq!(
        lab.dora(&discover(2).relayed().opt(code::RELAY_AGENT_INFO, &flex)),
        ip("198.51.100.13")
    );
    // Nobody else gets the reserved addresses.
    for mac in 3..6 {
        let a = lab.dora(&discover(mac).relayed());
        assert!(a != ip("198.51.100.12") && a != ip("198.51.100.13"), "{a}");
    }
    // The subscriber replaces its CPE: once the old lease is gone, the new device on the
    // same port gets the same address.
    lab.send(
        &Msg::new(MessageType::Release, 1)
            .relayed()
            .ciaddr(ip("198.51.100.12")),
    );
    assert_eq!(
        lab.dora(&discover(9).relayed().opt(code::RELAY_AGENT_INFO, &port7)),
        ip("198.51.100.12")
    );
    // At run time, by remote id; a lease through that remote id is the host's own.
    let r = Reservation {
        subscriber: Some(Subscriber {
            kind: SubscriberKind::RemoteId,
            value: vec![0xab, 0xcd],
        }),
        address: Some(ip("198.51.100.10")),
        ..Default::default()
    };
    let held = lab.engine.leases().slot_of(ip("198.51.100.10")).unwrap();
    let holder = lab.engine.leases().slot(held).client.is_some();
    assert!(holder, "a client of the dynamic pool holds it");
    assert!(matches!(
        lab.engine.add_reservation(r.clone(), lab.now),
        Err(NotReserved::Held(_))
    ));
}

#[test]
fn garbage_and_server_messages_are_counted_and_dropped() {
    let mut lab = Lab::new(config());
    let meta = RxMeta {
        link: 0,
        local_addr: SERVER,
        broadcast: true,
    };
    let o = lab.engine.handle(&[1, 2, 3], &meta, T0, &mut lab.out);
    assert_eq!(o, Outcome::Dropped(Drop::Malformed(WireError::TooShort)));
    let mut offer = discover(1);
    offer.kind = 2;
    assert_eq!(lab.send(&offer), Outcome::Dropped(Drop::UnexpectedType));
    let s = lab.engine.stats();
    assert_eq!(s.dropped(Drop::Malformed(WireError::BadMagic)), 1);
    assert_eq!(s.dropped(Drop::UnexpectedType), 1);
    assert_eq!(s.received(MessageType::Offer), 1);
}

use crate::wire::WireError;

// ---- invariants over random client populations ----

#[derive(Debug, Clone)]
enum Op {
    Dora(u8),
    Discover(u8),
    Select(u8),
    InitReboot(u8, u8),
    Renew(u8),
    Release(u8),
    Decline(u8),
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0u8..24;
    prop_oneof![
        4 => c.clone().prop_map(Op::Dora),
        2 => c.clone().prop_map(Op::Discover),
        2 => c.clone().prop_map(Op::Select),
        2 => (c.clone(), 0u8..24).prop_map(|(c, a)| Op::InitReboot(c, a)),
        2 => c.clone().prop_map(Op::Renew),
        1 => c.clone().prop_map(Op::Release),
        1 => c.clone().prop_map(Op::Decline),
        2 => (1u16..700).prop_map(Op::Wait),
    ]
}

/// A client as the clients see themselves: the address and lease end they were ACKed.
#[derive(Default, Clone, Copy)]
struct Held {
    addr: Option<Ipv4Addr>,
    until: u64,
    offered: Option<Ipv4Addr>,
}

fn client_msg(kind: MessageType, c: u8) -> Msg {
    let m = Msg::new(kind, c);
    // Half the population sends a client identifier; some arrive through the relay.
    let m = if c.is_multiple_of(2) {
        m.opt(code::CLIENT_ID, &[1, 2, 0, 0, 0, 0, c])
    } else {
        m
    };
    if c.is_multiple_of(5) {
        m.relayed()
    } else {
        m
    }
}

fn run_population(ops: Vec<Op>, authoritative: bool) {
    let mut cfg = config();
    cfg.authoritative = authoritative;
    let pools: Vec<AddrRange> = cfg
        .subnets
        .iter()
        .flat_map(|s| s.pools.iter().map(|p| p.range))
        .collect();
    let reserved: Vec<Ipv4Addr> = cfg
        .subnets
        .iter()
        .flat_map(|s| s.reservations.iter().filter_map(|r| r.address))
        .collect();
    let mut lab = Lab::new(cfg);
    let mut clients = [Held::default(); 24];
    for op in ops {
        let (c, msg) = match op {
            Op::Wait(s) => {
                lab.now += s as u64;
                lab.engine.tick(lab.now);
                lab.engine.leases.check();
                continue;
            }
            Op::Dora(c) | Op::Discover(c) => (c, client_msg(MessageType::Discover, c)),
            Op::Select(c) => match clients[c as usize].offered {
                Some(a) => (
                    c,
                    client_msg(MessageType::Request, c)
                        .requested(a)
                        .server(SERVER),
                ),
                None => continue,
            },
            Op::InitReboot(c, a) => {
                let a = Ipv4Addr::new(192, 0, 2, 5 + a);
                (c, client_msg(MessageType::Request, c).requested(a))
            }
            Op::Renew(c) => match clients[c as usize].addr {
                Some(a) => (c, client_msg(MessageType::Request, c).ciaddr(a)),
                None => continue,
            },
            Op::Release(c) | Op::Decline(c) => match clients[c as usize].addr.take() {
                Some(a) if matches!(op, Op::Release(_)) => {
                    (c, client_msg(MessageType::Release, c).ciaddr(a))
                }
                Some(a) => (c, client_msg(MessageType::Decline, c).requested(a)),
                None => continue,
            },
        };
        let mut replies = vec![lab.send(&msg)];
        if let (Op::Dora(_), Outcome::Reply(r)) = (&op, replies[0]) {
            let m = Message::parse(&lab.out[..r.len]).unwrap();
            let sel = client_msg(MessageType::Request, c)
                .requested(m.yiaddr())
                .server(r.from);
            clients[c as usize].offered = Some(m.yiaddr());
            replies.push(lab.send(&sel));
        }
        for o in replies {
            let Outcome::Reply(r) = o else { continue };
            let m = Message::parse(&lab.out[..r.len]).unwrap();
            let yi = m.yiaddr();
            match r.kind {
                MessageType::Offer | MessageType::Ack if !yi.is_unspecified() => {
                    assert!(
                        pools.iter().any(|p| p.contains(yi)) || reserved.contains(&yi),
                        "{yi} given out but is in no pool"
                    );
                    if r.kind == MessageType::Offer {
                        clients[c as usize].offered = Some(yi);
                    } else {
                        clients[c as usize] = Held {
                            addr: Some(yi),
                            until: lab.now + r_lease(&m),
                            offered: None,
                        };
                    }
                }
                MessageType::Nak => clients[c as usize].addr = None,
                _ => {}
            }
        }
        // No address is held by two clients at once, as the clients see it.
        let now = lab.now;
        let live: Vec<_> = clients
            .iter()
            .filter(|h| h.until > now)
            .filter_map(|h| h.addr)
            .collect();
        let mut dedup = live.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(
            dedup.len(),
            live.len(),
            "an address is bound to two clients: {live:?}"
        );
        // No client holds two bindings in one subnet, as the server sees it.
        let mut held: Vec<_> = lab
            .engine
            .leases()
            .slots()
            .filter(|(_, s)| s.state.held())
            .map(|(_, s)| (s.subnet, s.client.clone().unwrap().as_ref().bytes.to_vec()))
            .collect();
        let n = held.len();
        held.sort();
        held.dedup();
        assert_eq!(held.len(), n, "a client holds two bindings in one subnet");
    }
}

fn r_lease(m: &Message<'_>) -> u64 {
    u32::from_be_bytes(m.option(code::LEASE_TIME).unwrap().try_into().unwrap()) as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_random_populations(ops in proptest::collection::vec(op(), 1..200)) {
        run_population(ops, true);
    }

    #[test]
    fn invariants_hold_when_not_authoritative(ops in proptest::collection::vec(op(), 1..200)) {
        run_population(ops, false);
    }
}

#[test]
fn configured_timers_apply_only_to_leases_that_hold_them() {
    let mut cfg = config();
    cfg.subnets[0].lease = LeaseTimes {
        default: 600,
        min: 60,
        max: 3600,
        renew: Some(200),
        rebind: Some(400),
    };
    let mut lab = Lab::new(cfg);
    let o = lab.reply(&discover(1));
    assert_eq!(o.opt(code::RENEWAL_TIME), Some(&200u32.to_be_bytes()[..]));
    assert_eq!(o.opt(code::REBINDING_TIME), Some(&400u32.to_be_bytes()[..]));
    let o = lab.reply(&discover(2).opt(code::LEASE_TIME, &100u32.to_be_bytes()));
    assert_eq!(o.opt(code::RENEWAL_TIME), Some(&50u32.to_be_bytes()[..]));
    assert_eq!(o.opt(code::REBINDING_TIME), Some(&87u32.to_be_bytes()[..]));
}

/// Every lease change as the journal would keep it: per address, the newest record.
fn journal_of(lab: &mut Lab, log: &mut hashbrown::HashMap<Ipv4Addr, crate::lease::Lease>) {
    if let Some(rec) = lab.engine.take_change(lab.now) {
        let lease = crate::lease::Lease::from_record(&rec);
        let newer = log.get(&lease.addr).is_none_or(|l| l.stamp < lease.stamp);
        assert!(newer, "stamps go backwards: {lease:?}");
        log.insert(lease.addr, lease);
    }
}

#[test]
fn acks_releases_and_declines_replay_into_any_shard_count() {
    let mut lab = Lab::new(config());
    let mut log = hashbrown::HashMap::new();
    let mut bound = Vec::new();
    for mac in 1..=6u8 {
        let addr = lab.dora(&discover(mac));
        journal_of(&mut lab, &mut log);
        bound.push((mac, addr));
    }
    // An offer alone is not worth a record.
    lab.reply(&discover(7));
    assert!(lab.engine.take_change(lab.now).is_none());
    let (released_mac, released) = bound.pop().unwrap();
    lab.silent(
        &Msg::new(MessageType::Release, released_mac)
            .ciaddr(released)
            .server(SERVER),
    );
    journal_of(&mut lab, &mut log);
    let (_, declined) = bound.pop().unwrap();
    lab.silent(
        &Msg::new(MessageType::Decline, 5)
            .requested(declined)
            .server(SERVER),
    );
    journal_of(&mut lab, &mut log);
    assert_eq!(log[&released].state, crate::lease::BindingState::Released);
    assert_eq!(log[&declined].state, crate::lease::BindingState::Abandoned);

    for count in 1..=3u16 {
        let shards: Vec<Engine> = (0..count)
            .map(|index| {
                let mut e = Engine::new_shard(config(), Shard { index, count }, lab.now).unwrap();
                e.restore(log.values(), lab.now);
                e.leases.check();
                e
            })
            .collect();
        for &(mac, addr) in &bound {
            let hw = [2, 0, 0, 0, 0, mac];
            let key = ClientRef {
                kind: KeyKind::Hardware,
                bytes: &hw,
            };
            let owner = shards[0].shard_of(key) as usize;
            for (i, e) in shards.iter().enumerate() {
                let id = e.leases.slot_of(addr).unwrap();
                let s = e.leases.slot(id);
                if i == owner {
                    assert_eq!(
                        s.state,
                        LeaseState::Active,
                        "{count} shards: {addr} in its owner"
                    );
                    assert!(e.leases.is_client(id, key));
                } else {
                    assert_eq!(
                        s.state,
                        LeaseState::Foreign,
                        "{count} shards: {addr} elsewhere"
                    );
                }
            }
        }
        // The released address is remembered for its client; the declined one stays out.
        let hw = [2, 0, 0, 0, 0, released_mac];
        let key = ClientRef {
            kind: KeyKind::Hardware,
            bytes: &hw,
        };
        let owner = &shards[shards[0].shard_of(key) as usize];
        let id = owner.leases.slot_of(released).unwrap();
        assert_eq!(owner.leases.slot(id).state, LeaseState::Released);
        assert!(owner.leases.is_client(id, key));
        let declined_states: Vec<_> = shards
            .iter()
            .map(|e| e.leases.slot(e.leases.slot_of(declined).unwrap()).state)
            .collect();
        assert!(
            declined_states.iter().all(|s| !s.available()),
            "{declined_states:?}"
        );
        // Nothing is free in two shards at once.
        for (_, s) in shards[0].leases.slots() {
            let free_in = shards
                .iter()
                .filter(|e| {
                    let id = e.leases.slot_of(s.addr).unwrap();
                    e.leases.slot(id).state.available() && !e.leases.slot(id).reserved
                })
                .count();
            assert!(free_in <= 1, "{} free in {free_in} shards", s.addr);
        }
    }
}

fn host(mac: u8, addr: &str) -> Reservation {
    Reservation {
        hw_address: Some([2, 0, 0, 0, 0, mac]),
        address: Some(ip(addr)),
        host_name: Some(format!("host-{mac}")),
        ..Default::default()
    }
}

#[test]
fn a_runtime_reservation_is_offered_to_its_host_only() {
    let mut lab = Lab::new(config());
    lab.engine
        .add_reservation(host(9, "192.0.2.12"), lab.now)
        .unwrap();
    lab.engine.leases.check();
    let o = lab.reply(&discover(9));
    assert_eq!(o.yiaddr, ip("192.0.2.12"));
    assert_eq!(o.opt(code::HOST_NAME), Some(&b"host-9"[..]));
    // Others never get it, not even when they ask for it.
    for mac in 1..=8 {
        let o = lab.reply(&discover(mac).requested(ip("192.0.2.12")));
        assert_ne!(o.yiaddr, ip("192.0.2.12"), "client {mac}");
    }
    let n = lab.reply(&request(1).requested(ip("192.0.2.12")));
    assert_eq!(n.kind, MessageType::Nak);
    // Outside the pools too: the address gets a slot of its own.
    lab.engine
        .add_reservation(host(20, "192.0.2.77"), lab.now)
        .unwrap();
    assert_eq!(lab.dora(&discover(20)), ip("192.0.2.77"));
}

#[test]
fn a_runtime_reservation_is_refused_when_another_client_holds_the_address() {
    let mut lab = Lab::new(config());
    let held = lab.dora(&discover(1));
    let e = lab
        .engine
        .add_reservation(host(9, &held.to_string()), lab.now)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("leased to 02:00:00:00:00:01 for another 600 s"),
        "{e}"
    );
    // Its own holder may have it reserved; the lease stays.
    lab.engine
        .add_reservation(host(1, &held.to_string()), lab.now)
        .unwrap();
    assert_eq!(lab.dora(&discover(1)), held);
    let e = lab
        .engine
        .add_reservation(host(2, &held.to_string()), lab.now)
        .unwrap_err();
    assert_eq!(e, super::NotReserved::AlreadyReserved(held));
    let e = lab
        .engine
        .add_reservation(host(2, "203.0.113.5"), lab.now)
        .unwrap_err();
    assert_eq!(e, super::NotReserved::NoSubnet(ip("203.0.113.5")));
}

#[test]
fn removing_a_runtime_reservation_frees_the_address() {
    let mut lab = Lab::new(config());
    lab.engine
        .add_reservation(host(9, "192.0.2.12"), lab.now)
        .unwrap();
    assert_eq!(lab.engine.remove_reservation(ip("192.0.2.12")), Some(true));
    assert_eq!(lab.engine.remove_reservation(ip("192.0.2.12")), None);
    lab.engine.leases.check();
    // Anyone may have it now.
    let o = lab.reply(&discover(3).requested(ip("192.0.2.12")));
    assert_eq!(o.yiaddr, ip("192.0.2.12"));
    // Outside the pools, the host keeps its lease until it renews, then moves.
    lab.engine
        .add_reservation(host(20, "192.0.2.77"), lab.now)
        .unwrap();
    assert_eq!(lab.dora(&discover(20)), ip("192.0.2.77"));
    assert_eq!(lab.engine.remove_reservation(ip("192.0.2.77")), Some(true));
    lab.engine.leases.check();
    let n = lab.reply(&request(20).ciaddr(ip("192.0.2.77")));
    assert_eq!(n.kind, MessageType::Nak, "not in any pool any more");
    let o = lab.reply(&discover(20));
    assert!(config().subnets[0].pools[0].contains(o.yiaddr), "{o:?}");
    let o = lab.reply(&discover(21).requested(ip("192.0.2.77")));
    assert_ne!(o.yiaddr, ip("192.0.2.77"), "never handed out dynamically");
}

#[test]
fn reservations_move_between_shards_with_their_host() {
    let count = 2;
    let mut shards: Vec<Engine> = (0..count)
        .map(|index| Engine::new_shard(config(), Shard { index, count }, T0).unwrap())
        .collect();
    let addr = ip("192.0.2.12");
    for e in &mut shards {
        e.add_reservation(host(9, "192.0.2.12"), T0).unwrap();
        e.leases.check();
        let s = e.leases.slot(e.leases.slot_of(addr).unwrap());
        assert!(s.reserved && s.state == LeaseState::Free);
    }
    // Nobody held it: every shard lets it go, then its first owner adopts it.
    let kept: Vec<bool> = shards
        .iter_mut()
        .map(|e| e.remove_reservation(addr).unwrap())
        .collect();
    assert_eq!(kept, [false, false]);
    let owner = (u32::from(addr) % 2) as usize;
    assert_eq!(shards[owner].leases_mut().adopt(&[addr]), 1);
    let free_in = shards
        .iter()
        .filter(|e| e.leases.slot(e.leases.slot_of(addr).unwrap()).state == LeaseState::Free)
        .count();
    assert_eq!(free_in, 1);
    for e in &shards {
        e.leases.check();
    }
}

#[test]
fn a_reload_swaps_the_files_reservations_and_lease_times() {
    let mut lab = Lab::new(config());
    let printer = ip("192.0.2.5");
    let mut printer_msg = discover(0);
    printer_msg.mac = [2, 0, 0, 0, 0xee, 1];
    assert_eq!(lab.reply(&printer_msg).yiaddr, printer);
    let mut new = config();
    new.subnets[0].lease.default = 900;
    new.subnets[0].reservations.remove(0); // the printer's, outside the pool
    new.subnets[0].reservations[0].address = Some(ip("192.0.2.16")); // was .15
    new.subnets[0].reservations.push(host(9, "192.0.2.17"));
    let kept = lab.engine.reconfigure(new.into());
    lab.engine.leases.check();
    assert_eq!(
        kept,
        [printer, ip("192.0.2.15")],
        "one shard keeps everything"
    );
    assert_eq!(lab.reply(&discover(4)).lease_time(), 900);
    assert_eq!(lab.reply(&discover(9)).yiaddr, ip("192.0.2.17"));
    let o = lab.reply(&discover(7).opt(code::CLIENT_ID, b"\x00fixed"));
    assert_eq!(o.yiaddr, ip("192.0.2.16"));
    let o = lab.reply(&discover(5).requested(ip("192.0.2.15")));
    assert_eq!(o.yiaddr, ip("192.0.2.15"), "no longer reserved");
    assert_ne!(lab.reply(&printer_msg).yiaddr, printer);
}

/// The failover rules of a shard, with the pair's state given as a `View` the way the
/// failover link gives it.
mod failover_rules {
    use super::*;
    use crate::failover::machine::View;
    use crate::failover::{Hba, Role, Service};
    use crate::lease::{BindingState, Lease as Binding};

    fn view(role: Role, service: Service, stos: u64) -> View {
        View {
            role,
            service,
            hba: Hba::split(128),
            mclt: 60,
            stos,
            connected: true,
        }
    }

    fn lab(role: Role, service: Service) -> Lab {
        let mut lab = Lab::new(config());
        lab.engine.set_partnership(view(role, service, T0), 3);
        lab
    }

    /// A client whose hash bucket `role` serves while the pair cooperates.
    fn client_of(role: Role, skip: u8) -> u8 {
        (1..=255u8)
            .filter(|&m| {
                let b = dhcp_ebpf_common::loadb_hash(&[2, 0, 0, 0, 0, m]);
                Hba::split(128).mine(role, b)
            })
            .nth(skip as usize)
            .unwrap()
    }

    /// The changes the engine made on its own, as the partner receives them.
    fn changes(lab: &mut Lab) -> Vec<Binding> {
        let mut out = Vec::new();
        while let Some(r) = lab.engine.take_change(lab.now) {
            out.push(Binding::from_record(&r));
        }
        out
    }

    #[test]
    fn discovers_of_the_partners_buckets_are_left_to_it_while_cooperating() {
        let mut lab = lab(Role::Primary, Service::Cooperating);
        let theirs = client_of(Role::Secondary, 0);
        assert_eq!(
            lab.silent(&discover(theirs)),
            Outcome::Dropped(Drop::LoadBalanced)
        );
        let ours = client_of(Role::Primary, 0);
        assert_eq!(lab.reply(&discover(ours)).kind, MessageType::Offer);
        // A client that has waited load-balance-max-seconds is answered by either.
        let mut late = discover(theirs).bytes();
        late[crate::wire::layout::SECS + 1] = 4;
        let meta = RxMeta {
            link: 0,
            local_addr: SERVER,
            broadcast: true,
        };
        let o = lab.engine.handle(&late, &meta, lab.now, &mut lab.out);
        assert!(matches!(o, Outcome::Reply(_)), "{o:?}");
        // Out of touch with the partner, every client is ours.
        lab.engine
            .set_failover_view(view(Role::Primary, Service::NotCooperating, T0), lab.now);
        assert_eq!(lab.reply(&discover(theirs)).kind, MessageType::Offer);
    }

    #[test]
    fn nothing_is_answered_in_startup_or_while_recovering() {
        for service in [Service::Startup, Service::NotResponding] {
            let mut lab = lab(Role::Primary, service);
            let ours = client_of(Role::Primary, 0);
            assert_eq!(
                lab.silent(&discover(ours)),
                Outcome::Dropped(Drop::FailoverNotServing)
            );
        }
    }

    #[test]
    fn lease_times_beyond_the_mclt_wait_for_the_partners_acknowledgement() {
        let mut lab = lab(Role::Primary, Service::Cooperating);
        let c = client_of(Role::Primary, 0);
        let addr = lab.dora(&discover(c));
        let first = changes(&mut lab).pop().unwrap();
        assert_eq!(first.state, BindingState::Active);
        assert_eq!(first.ends, lab.now + 60, "capped at the MCLT");
        // The partner was told it may expect 600 + 30 s; once it acknowledges, the
        // renewal gets the whole lease time.
        assert_eq!(first.tstp, lab.now + 600 + 30);
        let mut acked = first.clone();
        acked.tsfp = first.tstp;
        lab.engine.partner_acked(&acked);
        lab.now += 20;
        let renew = lab.reply(&request(c).ciaddr(addr));
        assert_eq!(renew.lease_time(), 600);
    }

    #[test]
    fn the_secondary_gives_nothing_until_the_primary_hands_it_its_share() {
        let mut primary = lab(Role::Primary, Service::Cooperating);
        let mut secondary = lab(Role::Secondary, Service::Cooperating);
        let c = client_of(Role::Secondary, 0);
        assert_eq!(
            secondary.silent(&discover(c)),
            Outcome::Dropped(Drop::NoFreeLease)
        );
        let pools = primary.engine.balance_pools(10, primary.now);
        // Nine free, none the secondary's: half the difference moves, never-used ones
        // down to an even split.
        assert_eq!((pools[0].ours, pools[0].theirs, pools[0].moved), (9, 0, 4));
        let moved: u32 = pools.iter().map(|p| p.moved).sum();
        let given = changes(&mut primary);
        assert_eq!(given.len(), moved as usize);
        assert!(given.iter().all(|b| b.state == BindingState::Backup));
        for b in &given {
            let applied = secondary.engine.apply_partner(b, false, secondary.now);
            assert!(matches!(applied, Applied::Here(Ok(_))));
        }
        secondary.engine.leases.check();
        let offer = secondary.reply(&discover(c));
        assert!(given.iter().any(|b| b.addr == offer.yiaddr));
        // The primary no longer offers what it gave away.
        for _ in 0..10 {
            let o = primary.send(&discover(client_of(Role::Primary, 1)));
            if let Outcome::Reply(_) = o {
                let got = primary.reply(&discover(client_of(Role::Primary, 1)));
                assert!(given.iter().all(|b| b.addr != got.yiaddr));
            }
        }
    }

    #[test]
    fn balancing_gives_the_partner_first_the_addresses_its_clients_had() {
        let mut lab = lab(Role::Primary, Service::NotCooperating);
        let theirs = client_of(Role::Secondary, 0);
        let addr = lab.dora(&discover(theirs));
        lab.send(
            &Msg::new(MessageType::Release, theirs)
                .ciaddr(addr)
                .server(SERVER),
        );
        let slot = lab.engine.leases.slot_of(addr).unwrap();
        let ended = lab.engine.lease_at(slot);
        lab.engine.partner_acked(&ended);
        changes(&mut lab);
        lab.engine
            .set_failover_view(view(Role::Primary, Service::Cooperating, T0), lab.now);
        let pools = lab.engine.balance_pools(10, lab.now);
        assert_eq!(pools[0].moved, 4);
        // Back at the end of the free list, it is given only for its client's sake.
        let given = changes(&mut lab);
        assert!(given.iter().any(|b| b.addr == addr), "{given:?}");
        assert!(given.iter().all(|b| b.state == BindingState::Backup));
        // Not cooperating, nothing moves.
        lab.engine
            .set_failover_view(view(Role::Primary, Service::NotCooperating, T0), lab.now);
        assert!(lab.engine.balance_pools(10, lab.now).is_empty());
    }

    #[test]
    fn an_ended_lease_waits_for_the_partner_before_another_client_gets_it() {
        let mut lab = lab(Role::Primary, Service::Cooperating);
        let a = client_of(Role::Primary, 0);
        let b = client_of(Role::Primary, 1);
        let addr = lab.dora(&discover(a));
        changes(&mut lab);
        lab.now += 61;
        lab.engine.tick(lab.now);
        // The partner is told, so that its acknowledgement can free the address.
        let told = changes(&mut lab);
        assert!(told
            .iter()
            .any(|l| l.addr == addr && l.state == BindingState::Expired));
        let o = lab.reply(&discover(b).requested(addr));
        assert_ne!(o.yiaddr, addr, "not before the partner knows it expired");
        // The client that had it may have it back meanwhile; an offer it lets lapse
        // leaves the address waiting still.
        assert_eq!(lab.reply(&discover(a)).yiaddr, addr);
        lab.now += 120;
        lab.engine.tick(lab.now);
        let o = lab.reply(&discover(b).requested(addr));
        assert_ne!(o.yiaddr, addr);
        let slot = lab.engine.leases.slot_of(addr).unwrap();
        let mut ended = lab.engine.lease_at(slot);
        assert_eq!(ended.state, BindingState::Expired);
        ended.tsfp = lab.now;
        lab.engine.partner_acked(&ended);
        lab.engine.leases.check();
        let c = client_of(Role::Primary, 2);
        assert_eq!(lab.reply(&discover(c).requested(addr)).yiaddr, addr);
    }

    #[test]
    fn the_partners_binding_for_an_address_active_here_is_refused() {
        let mut lab = lab(Role::Primary, Service::Cooperating);
        let a = client_of(Role::Primary, 0);
        let addr = lab.dora(&discover(a));
        let mut theirs = changes(&mut lab).pop().unwrap();
        theirs.hw = crate::lease::HwAddr::new(1, &[2, 0, 0, 0, 0, 0xfe]);
        let applied = lab.engine.apply_partner(&theirs, false, lab.now);
        assert!(matches!(
            applied,
            Applied::Here(Err(ref r)) if r.reason == crate::failover::wire::RejectReason::FatalConflict
        ));
        // Nor does another client's release of it (a stale update) free it.
        theirs.state = BindingState::Released;
        let applied = lab.engine.apply_partner(&theirs, false, lab.now);
        assert!(matches!(applied, Applied::Here(Err(_))));
        assert!(lab.engine.leases.is_client(
            lab.engine.leases.slot_of(addr).unwrap(),
            ClientRef {
                kind: KeyKind::Hardware,
                bytes: &[2, 0, 0, 0, 0, a]
            }
        ));
    }

    #[test]
    fn the_partners_end_of_a_lease_the_client_renewed_here_since_is_refused() {
        // The pair was apart: the partner saw the client's old lease end (or put the
        // address back in a pool), while the client renewed it here. Our newer lease
        // stands and goes back to the partner.
        let mut lab = lab(Role::Primary, Service::Cooperating);
        let a = client_of(Role::Primary, 0);
        let addr = lab.dora(&discover(a));
        let mut theirs = changes(&mut lab).pop().unwrap();
        lab.now += 30;
        let renewed = lab.reply(&request(a).requested(addr));
        assert_eq!(renewed.kind, MessageType::Ack);
        changes(&mut lab);
        for ended in [
            BindingState::Expired,
            BindingState::Free,
            BindingState::Backup,
        ] {
            theirs.state = ended;
            let applied = lab.engine.apply_partner(&theirs, true, lab.now);
            assert!(matches!(
                applied,
                Applied::Here(Err(ref r)) if r.reason == crate::failover::wire::RejectReason::OutdatedBindInfo
            ));
            let slot = lab.engine.leases.slot_of(addr).unwrap();
            assert_eq!(
                lab.engine.lease_at(slot).state,
                BindingState::Active,
                "{ended:?}"
            );
            assert_eq!(
                changes(&mut lab).last().map(|l| l.addr),
                Some(addr),
                "told again"
            );
        }
    }

    #[test]
    fn in_partner_down_the_partners_pool_is_ours_after_stos_plus_mclt() {
        let mut lab = lab(Role::Secondary, Service::NotCooperating);
        let c = client_of(Role::Secondary, 0);
        assert_eq!(
            lab.silent(&discover(c)),
            Outcome::Dropped(Drop::NoFreeLease)
        );
        lab.engine.set_failover_view(
            view(Role::Secondary, Service::PartnerDown, lab.now),
            lab.now,
        );
        lab.now += 59;
        lab.engine.tick(lab.now);
        assert_eq!(
            lab.silent(&discover(c)),
            Outcome::Dropped(Drop::NoFreeLease)
        );
        lab.now += 1;
        lab.engine.tick(lab.now);
        assert_eq!(lab.reply(&discover(c)).kind, MessageType::Offer);
        // The claimed addresses are journaled and told to the partner as ours (backup).
        let claimed = changes(&mut lab);
        assert!(!claimed.is_empty());
        assert!(claimed.iter().all(|b| b.state == BindingState::Backup));
        // A lease that ends from now on is free at once: nobody else can have it.
        let addr = lab.dora(&discover(c));
        lab.now += 61;
        lab.engine.tick(lab.now);
        let other = client_of(Role::Secondary, 1);
        assert_eq!(lab.reply(&discover(other).requested(addr)).yiaddr, addr);
    }

    /// The primary reserves 192.0.2.12 for `host` at run time: the reservation and the
    /// binding that tells the partner.
    fn reserve_on(primary: &mut Lab, host: u8) -> (Reservation, Binding) {
        let r = Reservation {
            hw_address: Some([2, 0, 0, 0, 0, host]),
            address: Some(ip("192.0.2.12")),
            ..Default::default()
        };
        primary
            .engine
            .add_reservation(r.clone(), primary.now)
            .unwrap();
        let told = primary.engine.reservation_binding(&r).unwrap();
        (r, told)
    }

    #[test]
    fn a_reservation_travels_to_the_partner_and_its_host_is_served_there() {
        let mut primary = lab(Role::Primary, Service::Cooperating);
        let mut secondary = lab(Role::Secondary, Service::Cooperating);
        let host = client_of(Role::Secondary, 0);
        let (r, told) = reserve_on(&mut primary, host);
        assert!(told.flags.reserved());
        assert_eq!(
            told.state,
            BindingState::Backup,
            "the primary's free, as the peer's"
        );
        let applied = secondary.engine.apply_partner(&told, false, secondary.now);
        assert!(matches!(applied, Applied::Here(Ok(_))));
        assert_eq!(
            secondary.engine.take_partner_reservation(),
            Some((ip("192.0.2.12"), Some(r.clone())))
        );
        assert!(secondary.engine.runtime_reservations().any(|x| *x == r));
        secondary.engine.leases.check();
        // The secondary, which holds no free address yet, serves the host its address.
        assert_eq!(secondary.reply(&discover(host)).yiaddr, ip("192.0.2.12"));
    }

    #[test]
    fn a_full_update_carries_a_reservation_nobody_holds_yet() {
        let mut primary = lab(Role::Primary, Service::Cooperating);
        let (r, _) = reserve_on(&mut primary, client_of(Role::Secondary, 0));
        let mut all = Vec::new();
        primary.engine.failover_bindings(true, &mut all);
        let told: Vec<_> = all.iter().filter(|b| b.addr == ip("192.0.2.12")).collect();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].flags.reserved());
        assert_eq!(told[0].hw.bytes(), &r.hw_address.unwrap()[..]);
        // A secondary rebuilt from nothing takes the reservation from it.
        let mut rebuilt = lab(Role::Secondary, Service::Cooperating);
        rebuilt.engine.apply_partner(told[0], false, rebuilt.now);
        assert!(rebuilt.engine.runtime_reservations().any(|x| *x == r));
        // An update of what the partner has not acknowledged is not a full one.
        let mut some = Vec::new();
        primary.engine.failover_bindings(false, &mut some);
        assert!(some.iter().all(|b| b.addr != ip("192.0.2.12")));
    }

    #[test]
    fn a_reservation_ended_on_one_side_ends_on_the_other() {
        let mut primary = lab(Role::Primary, Service::Cooperating);
        let mut secondary = lab(Role::Secondary, Service::Cooperating);
        let addr = ip("192.0.2.12");
        let (_, told) = reserve_on(&mut primary, client_of(Role::Primary, 0));
        secondary.engine.apply_partner(&told, false, secondary.now);
        secondary.engine.take_partner_reservation();

        // An update of another address, unflagged, leaves the reservation alone.
        let other = primary
            .engine
            .unreservation_binding(ip("192.0.2.13"))
            .unwrap();
        secondary.engine.apply_partner(&other, false, secondary.now);
        assert_eq!(secondary.engine.take_partner_reservation(), None);

        assert_eq!(primary.engine.remove_reservation(addr), Some(true));
        let told = primary.engine.unreservation_binding(addr).unwrap();
        assert!(!told.flags.reserved());
        let applied = secondary.engine.apply_partner(&told, false, secondary.now);
        assert!(matches!(applied, Applied::Here(Ok(_))));
        assert_eq!(
            secondary.engine.take_partner_reservation(),
            Some((addr, None)),
            "for the journal"
        );
        assert_eq!(secondary.engine.runtime_reservations().count(), 0);
        secondary.engine.leases.check();
        // The address is the primary's to give again, to any client.
        let c = client_of(Role::Primary, 1);
        assert_eq!(primary.reply(&discover(c).requested(addr)).yiaddr, addr);
    }

    #[test]
    fn a_lease_made_while_cut_off_and_ended_unheard_goes_back_to_the_pool() {
        let mut lab = lab(Role::Primary, Service::NotCooperating);
        let mut cut = view(Role::Primary, Service::NotCooperating, T0);
        cut.connected = false;
        lab.engine.set_failover_view(cut, lab.now);
        let a = client_of(Role::Primary, 0);
        let b = client_of(Role::Primary, 1);
        let addr = lab.dora(&discover(a));
        lab.now += 61;
        lab.engine.tick(lab.now);
        // The partner never heard of a's lease: b may have the address at once.
        assert_eq!(lab.reply(&discover(b).requested(addr)).yiaddr, addr);

        // Once the link is back, a binding made meanwhile is sent: no more rewinding.
        let c = client_of(Role::Primary, 2);
        let d = client_of(Role::Primary, 3);
        let addr2 = lab.dora(&discover(c));
        let mut up = cut;
        up.connected = true;
        lab.engine.set_failover_view(up, lab.now);
        lab.now += 61;
        lab.engine.tick(lab.now);
        assert_ne!(lab.reply(&discover(d).requested(addr2)).yiaddr, addr2);
    }

    #[test]
    fn the_later_transaction_wins_when_the_pair_bound_one_client_twice() {
        let mut lab = lab(Role::Primary, Service::Cooperating);
        let a = client_of(Role::Primary, 0);
        let x = lab.dora(&discover(a));
        let ours = changes(&mut lab).pop().unwrap();
        let slot_x = lab.engine.leases.slot_of(x).unwrap();

        // The same client and address, from an older transaction: nothing shortens.
        let mut older = ours.clone();
        older.cltt -= 10;
        older.ends -= 10;
        let applied = lab.engine.apply_partner(&older, false, lab.now);
        assert!(matches!(applied, Applied::Here(Ok(_))));
        assert_eq!(lab.engine.leases.slot(slot_x).expires, ours.ends);
        assert!(changes(&mut lab)
            .iter()
            .any(|l| l.addr == x && l.ends == ours.ends));

        // Another address for the client, from before ours: refused, ours stands.
        let y = ip("192.0.2.18");
        let mut elsewhere = ours.clone();
        elsewhere.addr = y;
        elsewhere.cltt = ours.cltt - 5;
        let applied = lab.engine.apply_partner(&elsewhere, false, lab.now);
        assert!(matches!(
            applied,
            Applied::Here(Err(ref r)) if r.reason == crate::failover::wire::RejectReason::OutdatedBindInfo
        ));
        assert_eq!(lab.engine.leases.slot(slot_x).state, LeaseState::Active);

        // From after ours: the client moved; ours ends, journaled and told, not dropped.
        changes(&mut lab);
        elsewhere.cltt = ours.cltt + 5;
        let applied = lab.engine.apply_partner(&elsewhere, false, lab.now);
        assert!(matches!(applied, Applied::Here(Ok(_))));
        let told = changes(&mut lab);
        assert!(told
            .iter()
            .any(|l| l.addr == x && l.state == BindingState::Released));
        let slot_y = lab.engine.leases.slot_of(y).unwrap();
        assert_eq!(lab.engine.leases.slot(slot_y).state, LeaseState::Active);
        // x is not given to anyone before the partner knows it is free.
        let b = client_of(Role::Primary, 1);
        assert_ne!(lab.reply(&discover(b).requested(x)).yiaddr, x);
        lab.engine.leases.check();
    }
}

/// A DHCPLEASEQUERY from the relay (an allowed requester in `leasequery_config`).
fn leasequery() -> Msg {
    let mut m = Msg::new(MessageType::Other(crate::leasequery::msg::LEASEQUERY), 0);
    m.mac = [0; 6];
    m.relayed()
}

fn leasequery_config() -> Policy {
    Policy {
        leasequery: vec![Ipv4Net::new(RELAY, 32).unwrap()],
        ..config()
    }
}

#[test]
fn leasequery_by_address_says_active_unassigned_or_unknown_as_dhcpd_does() {
    use crate::leasequery::{msg, opt};
    let mut lab = Lab::new(leasequery_config());
    let rai = [1, 4, b'p', b'o', b'r', b't'];
    let addr = lab.dora(&discover(1).relayed().opt(code::RELAY_AGENT_INFO, &rai));
    lab.now += 100;
    let got = lab.reply(&leasequery().ciaddr(addr));
    assert_eq!(got.kind.to_u8(), msg::LEASEACTIVE);
    assert_eq!(got.to, Destination::Relay(RELAY));
    assert_eq!(got.ciaddr, addr);
    let secs = |c| u32::from_be_bytes(got.opt(c).unwrap().try_into().unwrap());
    // An hour's lease granted 100 s ago: 3500 s left, T1 at 1800 (1700 ahead), T2 at
    // 3150 (3050 ahead).
    assert_eq!(secs(code::LEASE_TIME), 3500);
    assert_eq!(secs(code::RENEWAL_TIME), 1700);
    assert_eq!(secs(code::REBINDING_TIME), 3050);
    assert_eq!(secs(opt::CLIENT_LAST_TRANSACTION_TIME), 100);
    assert_eq!(got.opt(code::RELAY_AGENT_INFO), Some(&rai[..]));
    // A pool address nobody holds, then one outside every pool.
    let got = lab.reply(&leasequery().ciaddr(ip("198.51.100.14")));
    assert_eq!(got.kind.to_u8(), msg::LEASEUNASSIGNED);
    assert_eq!(got.ciaddr, ip("198.51.100.14"));
    assert_eq!(got.opt(code::LEASE_TIME), None);
    let got = lab.reply(&leasequery().ciaddr(ip("203.0.113.77")));
    assert_eq!(got.kind.to_u8(), msg::LEASEUNKNOWN);
    // Expired: unassigned again.
    lab.now += 3600;
    lab.engine.tick(lab.now);
    let got = lab.reply(&leasequery().ciaddr(addr));
    assert_eq!(got.kind.to_u8(), msg::LEASEUNASSIGNED);
}

#[test]
fn leasequery_by_mac_finds_a_client_that_names_itself_by_client_id() {
    use crate::leasequery::{msg, opt};
    let mut lab = Lab::new(leasequery_config());
    let id = [1, 2, 0, 0, 0, 0, 7];
    let first = lab.dora(&discover(7).opt(code::CLIENT_ID, &id));
    let second = lab.dora(&discover(7).relayed().opt(code::CLIENT_ID, &id));
    lab.now += 5;
    let mut by_mac = leasequery();
    by_mac.mac = [2, 0, 0, 0, 0, 7];
    // Both bindings were made in the same second: the newest is whichever the rule
    // keeps; the other is associated.
    let got = lab.reply(&by_mac);
    assert_eq!(got.kind.to_u8(), msg::LEASEACTIVE);
    assert_eq!(got.opt(code::CLIENT_ID), Some(&id[..]));
    let assoc = got.opt(opt::ASSOCIATED_IP).unwrap();
    let other = if got.ciaddr == first { second } else { first };
    assert_eq!(assoc, &other.octets()[..]);
    let by_id = lab.reply(&leasequery().opt(code::CLIENT_ID, &id));
    assert_eq!(by_id.kind.to_u8(), msg::LEASEACTIVE);
    // A MAC nobody has.
    let mut nobody = leasequery();
    nobody.mac = [2, 0, 0, 0, 0, 99];
    assert_eq!(lab.reply(&nobody).kind.to_u8(), msg::LEASEUNKNOWN);
}

#[test]
fn leasequery_from_a_stranger_or_without_giaddr_is_dropped_and_counted() {
    let mut lab = Lab::new(leasequery_config());
    let mut stranger = leasequery().ciaddr(ip("192.0.2.10"));
    stranger.giaddr = ip("198.51.100.2");
    assert_eq!(
        lab.silent(&stranger),
        Outcome::Dropped(Drop::LeasequeryNotAllowed)
    );
    let mut direct = leasequery().ciaddr(ip("192.0.2.10"));
    direct.giaddr = Ipv4Addr::UNSPECIFIED;
    assert_eq!(
        lab.silent(&direct),
        Outcome::Dropped(Drop::LeasequeryMalformed)
    );
    assert_eq!(
        lab.silent(&leasequery()),
        Outcome::Dropped(Drop::LeasequeryMalformed)
    );
    // Off by default.
    let mut off = Lab::new(config());
    assert_eq!(
        off.silent(&leasequery().ciaddr(ip("192.0.2.10"))),
        Outcome::Dropped(Drop::LeasequeryNotAllowed)
    );
}

#[test]
fn leasequery_with_several_shards_is_gathered_and_answered_from_every_shards_bindings() {
    use crate::leasequery::{msg, Key};
    let policy = Arc::new(leasequery_config());
    let mut shards: Vec<Engine> = (0..2)
        .map(|i| Engine::new_shard(policy.clone(), Shard { index: i, count: 2 }, T0).unwrap())
        .collect();
    let mut lab = Lab {
        engine: shards.remove(1),
        now: T0,
        out: vec![0; 1500],
    };
    let addr = lab.dora(&discover(3));
    let mut asking = shards.remove(0);
    let q = leasequery().ciaddr(addr).bytes();
    let meta = RxMeta {
        link: 0,
        local_addr: SERVER,
        broadcast: false,
    };
    let mut out = vec![0; 1500];
    assert_eq!(asking.handle(&q, &meta, T0, &mut out), Outcome::Gather);
    let req = Request::parse(&q).unwrap();
    let key = Key::of(&req).unwrap();
    let mut found = Vec::new();
    asking.bindings(&key, &mut found);
    assert!(found.is_empty(), "the asking shard does not manage {addr}");
    lab.engine.bindings(&key, &mut found);
    let r = asking
        .answer_leasequery(&req, &key, &found, &meta, T0, &mut out)
        .unwrap();
    assert_eq!(r.kind.to_u8(), msg::LEASEACTIVE);
    assert_eq!(asking.stats().sent(r.kind), 1);
}

/// A DISCOVER carrying ciaddr (on our network or off it, unicast or broadcast) is served
/// from the link as if it had none, and its OFFER goes to the client's hardware address,
/// as ISC dhcpd sends it, never to ciaddr; the ACK to a renewal still goes to ciaddr.
#[test]
fn an_offer_never_goes_to_ciaddr_only_an_ack_does() {
    let mut lab = Lab::new(config());
    for (mac, ciaddr, broadcast) in [
        (1, ip("192.0.2.50"), false),
        (2, ip("192.0.2.50"), true),
        (3, ip("203.0.113.50"), false),
        (4, ip("203.0.113.50"), true),
    ] {
        let mut d = discover(mac).ciaddr(ciaddr);
        d.broadcast = broadcast;
        let o = lab.reply(&d);
        assert_eq!(o.kind, MessageType::Offer);
        assert!(
            range("192.0.2.10-192.0.2.19").contains(o.yiaddr),
            "ciaddr {ciaddr}: placed on the link's subnet, got {}",
            o.yiaddr
        );
        let expected = if broadcast {
            Destination::Broadcast
        } else {
            Destination::Hardware {
                ip: o.yiaddr,
                mac: [2, 0, 0, 0, 0, mac],
            }
        };
        assert_eq!(o.to, expected, "ciaddr {ciaddr}, broadcast {broadcast}");
    }
    let a = lab.dora(&discover(5));
    let ack = lab.reply(&request(5).ciaddr(a));
    assert_eq!(ack.to, Destination::Unicast(a), "a renewal's ACK");
}

/// Every lease change reaches the journal with why it was made, when, and the relay and
/// host name of the request that made it: the lease history's events come from them.
#[test]
fn every_change_is_journaled_with_its_cause() {
    use crate::lease::{BindingState, Cause};
    let mut lab = Lab::new(config());
    let cause = |lab: &mut Lab| {
        let now = lab.now;
        let r = lab.engine.take_change(now).expect("a change to journal");
        (
            r.context.cause,
            r.state,
            r.context.giaddr,
            r.context.host_name.to_vec(),
            r.context.at,
        )
    };
    let a = lab.dora(&discover(1).relayed().opt(code::HOST_NAME, b"cpe-1"));
    let (c, state, giaddr, host, at) = cause(&mut lab);
    assert_eq!(
        (c, state, giaddr),
        (Cause::Granted, BindingState::Active, RELAY)
    );
    assert_eq!((host.as_slice(), at), (&b"cpe-1"[..], lab.now));
    lab.now += 600;
    assert_eq!(lab.reply(&request(1).ciaddr(a)).kind, MessageType::Ack);
    let (c, _, giaddr, host, _) = cause(&mut lab);
    assert_eq!(
        (c, giaddr, host.len()),
        (Cause::Renewed, Ipv4Addr::UNSPECIFIED, 0)
    );
    lab.send(&Msg::new(MessageType::Release, 1).ciaddr(a).server(SERVER));
    assert_eq!(cause(&mut lab).0, Cause::Released);
    lab.dora(&discover(2));
    assert_eq!(cause(&mut lab).0, Cause::Granted);
    // Without a partner, a lease that runs out is journaled too, once.
    lab.now += 10 * 86_400;
    lab.engine.tick(lab.now);
    let (c, state, ..) = cause(&mut lab);
    assert_eq!((c, state), (Cause::Expired, BindingState::Expired));
    assert!(lab.engine.take_change(lab.now).is_none());
    let c3 = lab.dora(&discover(3));
    let _ = cause(&mut lab);
    assert!(lab.engine.operator_delete(c3));
    assert_eq!(cause(&mut lab).0, Cause::OperatorDeleted);
}
