//! What the benchmarks share: client messages for client number N written into a caller's
//! buffer (so a loop over millions of distinct clients allocates nothing), a server
//! configuration over the benchmark range 198.18.0.0/15, and the load generator that
//! plays those clients on a real interface (`load`, with `arp`
//! answering ARP for the addresses they hold).

pub mod arp;
pub mod load;

use std::net::Ipv4Addr;

use dhcp_proto::engine::{Engine, Outcome, RxMeta};
use dhcp_proto::policy::{AddrRange, LeaseTimes, OptionSet, Policy, Subnet};
use dhcp_proto::wire::{code, MessageType};

pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Addresses in `policy()`'s pool.
pub const POOL_SIZE: u32 = pool_len();

const POOL_FIRST: u32 = u32::from_be_bytes([198, 18, 1, 0]);
const POOL_LAST: u32 = u32::from_be_bytes([198, 19, 255, 250]);

const fn pool_len() -> u32 {
    POOL_LAST - POOL_FIRST + 1
}

/// One subnet, 198.18.0.0/15, with the options a typical ISP subnet sends.
pub fn policy() -> Policy {
    let mut options = OptionSet::default();
    options.set_addresses(code::ROUTER, &[SERVER]);
    options.set_addresses(
        code::DNS_SERVERS,
        &[Ipv4Addr::new(198, 18, 0, 53), Ipv4Addr::new(198, 18, 0, 54)],
    );
    options.set_text(code::DOMAIN_NAME, "bench.example");
    options.set_addresses(code::NTP_SERVERS, &[Ipv4Addr::new(198, 18, 0, 123)]);
    Policy {
        interfaces: vec!["bench0".into()],
        subnets: vec![Subnet {
            net: "198.18.0.0/15".parse().expect("constant"),
            interface: Some(0),
            pools: vec![AddrRange {
                first: POOL_FIRST.into(),
                last: POOL_LAST.into(),
            }
            .into()],
            server_id: None,
            lease: LeaseTimes::default(),
            options,
            reservations: Vec::new(),
        }],
        ..Policy::default()
    }
}

/// The benchmark's relay: inside the subnet, so its giaddr places clients there.
pub const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// The benchmarks' client classes, as a configuration file writes them.
pub const CLASSES: &str = include_str!("../classes.toml");

/// `policy()` with the classes of `CLASSES`, the line class listing `lines` members
/// (`line-0`...) besides taking every value (spawn), so each client's circuit id is one
/// hash lookup among them; without `limited`, the line class's lease limit left out, to
/// tell what classes cost from what a limit costs.
pub fn policy_with_classes(lines: u32, limited: bool) -> Policy {
    use dhcp_proto::policy::{Membership, Settings, Subclass};
    let text = format!(
        "interfaces = [\"bench0\"]\n{CLASSES}\n[[subnet]]\nsubnet = \"198.18.0.0/15\"\n\
         pools = [\"198.18.1.0-198.18.1.10\"]\n"
    );
    let file = dhcp_server::config::parse(std::path::Path::new("benches/classes.toml"), &text)
        .expect("the benchmark classes are valid");
    let mut p = policy();
    p.classes = file.policy.classes;
    let mut id = [0u8; 16];
    for c in &mut p.classes {
        if !limited {
            c.lease_limit = None;
        }
        if let Membership::Match { subclasses, .. } = &mut c.membership {
            subclasses.extend((0..lines).map(|l| {
                let len = line_id(l, &mut id);
                Subclass {
                    value: id[..len].to_vec(),
                    settings: Settings::default(),
                }
            }));
        }
    }
    p
}

/// The hardware address of client `n`: locally administered, unique per `n`.
pub fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0xbe, b[0], b[1], b[2], b[3]]
}

/// Which optional parts a client message carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// A relay agent forwarded it: giaddr set and option 82 added.
    pub relayed: Option<Ipv4Addr>,
    /// With a relay: the subscriber lines clients are spread over, client `n` on line
    /// `n % lines` with circuit id `line-<number>`; 0: every client on "eth0/1".
    pub lines: u32,
}

/// Writes the fixed header of a client message and returns the options offset.
fn header(buf: &mut [u8], n: u32, ciaddr: Ipv4Addr, shape: Shape) -> usize {
    buf[..240].fill(0);
    buf[0] = 1;
    buf[1] = 1;
    buf[2] = 6;
    buf[3] = u8::from(shape.relayed.is_some());
    buf[4..8].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    buf[12..16].copy_from_slice(&ciaddr.octets());
    if let Some(g) = shape.relayed {
        buf[24..28].copy_from_slice(&g.octets());
    }
    buf[28..34].copy_from_slice(&mac(n));
    buf[236..240].copy_from_slice(&[99, 130, 83, 99]);
    240
}

fn put(buf: &mut [u8], at: &mut usize, code: u8, value: &[u8]) {
    buf[*at] = code;
    buf[*at + 1] = value.len() as u8;
    buf[*at + 2..*at + 2 + value.len()].copy_from_slice(value);
    *at += 2 + value.len();
}

/// The options a typical client sends: type, client id, parameter list, host name, size.
fn common(buf: &mut [u8], at: &mut usize, kind: u8, n: u32) {
    put(buf, at, code::MESSAGE_TYPE, &[kind]);
    let m = mac(n);
    put(
        buf,
        at,
        code::CLIENT_ID,
        &[1, m[0], m[1], m[2], m[3], m[4], m[5]],
    );
    put(
        buf,
        at,
        code::PARAMETER_REQUEST_LIST,
        &[1, 3, 6, 12, 15, 28, 42, 51, 58, 59, 119, 121],
    );
    put(buf, at, code::HOST_NAME, b"bench-host");
    put(buf, at, code::MAX_MESSAGE_SIZE, &1500u16.to_be_bytes());
}

/// The circuit id of subscriber line `line`: "line-" and its decimal digits, written
/// into `out` without allocating; returns its length.
pub fn line_id(line: u32, out: &mut [u8; 16]) -> usize {
    out[..5].copy_from_slice(b"line-");
    let mut digits = [0u8; 10];
    let (mut v, mut n) = (line, 0);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[5 + i] = digits[n - 1 - i];
    }
    5 + n
}

fn finish(buf: &mut [u8], mut at: usize, n: u32, shape: Shape) -> usize {
    if shape.relayed.is_some() {
        let mut circuit = [0u8; 16];
        let len = if shape.lines == 0 {
            circuit[..6].copy_from_slice(b"eth0/1");
            6
        } else {
            line_id(n % shape.lines, &mut circuit)
        };
        let mut info = [0u8; 24];
        info[0] = 1;
        info[1] = len as u8;
        info[2..2 + len].copy_from_slice(&circuit[..len]);
        info[2 + len..8 + len].copy_from_slice(&[2, 4, 0xde, 0xad, 0xbe, 0xef]);
        put(buf, &mut at, code::RELAY_AGENT_INFO, &info[..8 + len]);
    }
    buf[at] = code::END;
    at + 1
}

/// DHCPDISCOVER from client `n`; returns its length. `buf` must hold 400 octets.
pub fn discover(buf: &mut [u8], n: u32, shape: Shape) -> usize {
    let mut at = header(buf, n, Ipv4Addr::UNSPECIFIED, shape);
    common(buf, &mut at, 1, n);
    finish(buf, at, n, shape)
}

/// DHCPREQUEST in SELECTING from client `n` for `addr` offered by `server`.
pub fn request(buf: &mut [u8], n: u32, addr: Ipv4Addr, server: Ipv4Addr, shape: Shape) -> usize {
    let mut at = header(buf, n, Ipv4Addr::UNSPECIFIED, shape);
    common(buf, &mut at, 3, n);
    put(buf, &mut at, code::REQUESTED_ADDRESS, &addr.octets());
    put(buf, &mut at, code::SERVER_ID, &server.octets());
    finish(buf, at, n, shape)
}

/// DHCPREQUEST in RENEWING from client `n`, which holds `addr`.
pub fn renew(buf: &mut [u8], n: u32, addr: Ipv4Addr) -> usize {
    let mut at = header(buf, n, addr, Shape::default());
    common(buf, &mut at, 3, n);
    finish(buf, at, n, Shape::default())
}

/// DHCPREQUEST in INIT-REBOOT from client `n`, which was ACKed `addr` before it
/// rebooted: ciaddr zero, the address in option 50, no server identifier (RFC 2131
/// §4.3.2), so whichever server holds the lease answers.
pub fn init_reboot(buf: &mut [u8], n: u32, addr: Ipv4Addr) -> usize {
    let mut at = header(buf, n, Ipv4Addr::UNSPECIFIED, Shape::default());
    common(buf, &mut at, 3, n);
    put(buf, &mut at, code::REQUESTED_ADDRESS, &addr.octets());
    finish(buf, at, n, Shape::default())
}

/// DHCPRELEASE from client `n` of `addr`.
pub fn release(buf: &mut [u8], n: u32, addr: Ipv4Addr, server: Ipv4Addr) -> usize {
    let mut at = header(buf, n, addr, Shape::default());
    put(buf, &mut at, code::MESSAGE_TYPE, &[7]);
    let m = mac(n);
    put(
        buf,
        &mut at,
        code::CLIENT_ID,
        &[1, m[0], m[1], m[2], m[3], m[4], m[5]],
    );
    put(buf, &mut at, code::SERVER_ID, &server.octets());
    finish(buf, at, n, Shape::default())
}

/// DHCPDECLINE from client `n` of `addr`, offered by `server` (RFC 2131 table 5: ciaddr
/// zero, the address in option 50, the server identifier in option 54).
pub fn decline(buf: &mut [u8], n: u32, addr: Ipv4Addr, server: Ipv4Addr) -> usize {
    let mut at = header(buf, n, Ipv4Addr::UNSPECIFIED, Shape::default());
    put(buf, &mut at, code::MESSAGE_TYPE, &[4]);
    let m = mac(n);
    put(
        buf,
        &mut at,
        code::CLIENT_ID,
        &[1, m[0], m[1], m[2], m[3], m[4], m[5]],
    );
    put(buf, &mut at, code::REQUESTED_ADDRESS, &addr.octets());
    put(buf, &mut at, code::SERVER_ID, &server.octets());
    finish(buf, at, n, Shape::default())
}

/// yiaddr of a reply.
pub fn yiaddr(reply: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(reply[16], reply[17], reply[18], reply[19])
}

/// Drives an engine through DORA exchanges of distinct, never-seen clients: the costliest
/// path (a fresh binding each time). Time stands still, so nothing expires.
pub struct Driver {
    pub engine: Engine,
    next: u32,
    shape: Shape,
    rx: [u8; 400],
    tx: [u8; 1500],
}

const NOW: u64 = 1_700_000_000;
const META: RxMeta = RxMeta {
    link: 0,
    local_addr: SERVER,
    broadcast: true,
};

impl Driver {
    pub fn new() -> Self {
        Self::with(policy(), Shape::default())
    }

    /// A driver for `policy`, its clients' messages shaped by `shape`.
    pub fn with(policy: Policy, shape: Shape) -> Self {
        let engine = Engine::new(policy, NOW).expect("the benchmark configuration is valid");
        Driver {
            engine,
            next: 0,
            shape,
            rx: [0; 400],
            tx: [0; 1500],
        }
    }

    /// Fresh clients left before the pool runs dry.
    pub fn room(&self) -> u32 {
        POOL_SIZE - self.next
    }

    /// One DISCOVER, OFFER, REQUEST, ACK for the next new client; returns the address.
    pub fn dora(&mut self) -> Ipv4Addr {
        let n = self.next;
        self.next += 1;
        let len = discover(&mut self.rx, n, self.shape);
        let Outcome::Reply(offer) = self
            .engine
            .handle(&self.rx[..len], &META, NOW, &mut self.tx)
        else {
            panic!("no OFFER for client {n}");
        };
        let addr = yiaddr(&self.tx);
        let len = request(&mut self.rx, n, addr, offer.from, self.shape);
        match self
            .engine
            .handle(&self.rx[..len], &META, NOW, &mut self.tx)
        {
            Outcome::Reply(ack) if ack.kind == MessageType::Ack => addr,
            other => panic!("client {n}: expected an ACK, got {other:?}"),
        }
    }

    /// A RENEW from client `n`, which holds `addr`; true when ACKed.
    pub fn renew(&mut self, n: u32, addr: Ipv4Addr) -> bool {
        let len = renew(&mut self.rx, n, addr);
        let meta = RxMeta {
            broadcast: false,
            ..META
        };
        matches!(self.engine.handle(&self.rx[..len], &meta, NOW, &mut self.tx), Outcome::Reply(r) if r.kind == MessageType::Ack)
    }

    /// A RELEASE from client `n` of `addr`.
    pub fn release(&mut self, n: u32, addr: Ipv4Addr) {
        let len = release(&mut self.rx, n, addr, SERVER);
        let meta = RxMeta {
            broadcast: false,
            ..META
        };
        self.engine
            .handle(&self.rx[..len], &meta, NOW, &mut self.tx);
    }
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp_proto::wire::{MessageType, Request};

    /// The classed benchmarks serve every client, each on its own line, through 20 classes.
    #[test]
    fn the_benchmark_classes_load_and_serve() {
        let p = policy_with_classes(1000, true);
        assert_eq!(p.classes.len(), 20);
        let shape = Shape {
            relayed: Some(RELAY),
            lines: 1000,
        };
        let mut d = Driver::with(p, shape);
        for _ in 0..2000 {
            d.dora();
        }
    }

    #[test]
    fn built_messages_parse_as_what_they_claim() {
        let mut b = [0u8; 400];
        let n = discover(
            &mut b,
            7,
            Shape {
                relayed: Some(Ipv4Addr::new(198, 18, 0, 9)),
                ..Shape::default()
            },
        );
        let r = Request::parse(&b[..n]).unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.msg.chaddr(), mac(7));
        assert_eq!(r.msg.giaddr(), Ipv4Addr::new(198, 18, 0, 9));
        assert!(r.relay_agent_info.is_some());
        let n = request(
            &mut b,
            7,
            Ipv4Addr::new(198, 18, 1, 1),
            SERVER,
            Shape::default(),
        );
        let r = Request::parse(&b[..n]).unwrap();
        assert_eq!(
            (r.msg_type, r.requested_address, r.server_id),
            (
                MessageType::Request,
                Some(Ipv4Addr::new(198, 18, 1, 1)),
                Some(SERVER)
            )
        );
        let n = release(&mut b, 7, Ipv4Addr::new(198, 18, 1, 1), SERVER);
        assert_eq!(
            Request::parse(&b[..n]).unwrap().msg_type,
            MessageType::Release
        );
        let n = decline(&mut b, 7, Ipv4Addr::new(198, 18, 1, 1), SERVER);
        let r = Request::parse(&b[..n]).unwrap();
        assert_eq!(
            (r.msg_type, r.requested_address, r.server_id),
            (
                MessageType::Decline,
                Some(Ipv4Addr::new(198, 18, 1, 1)),
                Some(SERVER)
            )
        );
        assert!(r.msg.ciaddr().is_unspecified());
        let n = renew(&mut b, 7, Ipv4Addr::new(198, 18, 1, 1));
        let r = Request::parse(&b[..n]).unwrap();
        assert_eq!(
            (r.msg_type, r.msg.ciaddr(), r.requested_address, r.server_id),
            (
                MessageType::Request,
                Ipv4Addr::new(198, 18, 1, 1),
                None,
                None
            )
        );
    }
}
