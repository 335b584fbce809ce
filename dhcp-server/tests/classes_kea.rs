//! Kea as the judge of client classes. The same classes, class-restricted pools, options
//! and reservation are written once as our TOML and once as a kea-dhcp4 2.2 JSON file;
//! each server in turn answers the same relayed clients (DISCOVER, then REQUEST for the
//! offer, or an INIT-REBOOT REQUEST), and for every client both must give the same
//! message types, the same pool (the range the address is in; which address inside it
//! is allocation policy, not classification), the same options, lease times, siaddr and
//! file. Any disagreement fails with a table of every client, ours beside Kea's.
//!
//! The clients are datagrams built with dhcproto (an independent codec) and sent by a
//! socket on port 67 in the client namespace, which plays a relay: giaddr is its address
//! 198.51.100.1, replies come back to it on port 67. Their options 60 and 77, MAC OUI,
//! option 82 (circuit id, remote id, link selection, server identifier override) and
//! option 118 are what the classes and subnet selection look at.
//!
//! Where the two languages or models differ, the configurations say the same thing in
//! each one's idiom, and the cases avoid what is not classification:
//! - Kea has no `starts-with` and no `pkt4.oui`: `substring(option[60].text,0,4) ==
//!   'VOIP'` and `substring(pkt4.mac,0,3) == 0x02aabb` there.
//! - A Kea pool names one `client-class` and has no deny list: our open pool's `deny`
//!   list is Kea's class `open`, `not (member('voip') or ...)`. Our listed members of a
//!   `match` class are a Kea class testing each value; the subclass with settings of its
//!   own is a Kea class of its own placed before it (the first class wins in both).
//! - No client is admitted to two pools: which of two admitting pools an address comes
//!   from is each server's allocator (ours: the first pool in order with a free address;
//!   Kea's iterative allocator: the pool after the last address it gave).
//! - Where ours and Kea rank levels differently, each option code is given at one level
//!   only, except in the one case that pins the difference (`class-vs-subnet`).
//!
//! Option 56 (the text of a NAK) is each server's own wording and is left out.
//!
//! Three differences are known and pinned, so that a change on either side shows:
//! - Kea reads an absent option as the empty string, so `option[43].hex == ''` holds for
//!   a client without option 43; ours has no value there and every comparison with it
//!   fails (`!=` holds). Case `absent-option`.
//! - Kea 2.2 ranks a class's options below the subnet's (reservation > pool > subnet >
//!   class); ours, like dhcpd, puts the class above the subnet and the pool (reservation
//!   > class > pool > subnet). Case `class-vs-subnet`.
//! - RFC 5107 server identifier override: Kea 2.2 accepts a REQUEST naming the override
//!   address, but its replies still carry its own address in option 54, where the RFC
//!   (section 4) and ours put the override. Case `server-id-override`.
//!
//! Needs root (namespaces) and kea-dhcp4; see `common`.

#[allow(dead_code)] // each test crate uses part of the shared harness
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{require, Lab, Server};
use dhcproto::v4::{
    relay::{RelayAgentInformation, RelayInfo},
    DhcpOption, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Decoder, Encodable};

const SERVER: &str = "192.0.2.1";
/// The relay's address on the server's link: the datagrams' source.
const RELAY_LINK: &str = "192.0.2.2";
/// The relay's address on the clients' link: giaddr, in subnet A.
const GIADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SUBNET_A: &str = "198.51.100.0/24";
const SUBNET_B: &str = "203.0.113.0/24";
/// The reserved hosts (no fixed address): members of KNOWN; the second also of acme.
const KNOWN_MAC: &str = "02:00:00:00:99:01";
const KNOWN_ACME_MAC: &str = "02:aa:bb:00:99:02";

/// Every pool of both configurations: (name, first, last). The table reports the pool an
/// address is in by these names.
const POOLS: [(&str, &str, &str); 6] = [
    ("A-voip", "198.51.100.10", "198.51.100.19"),
    ("A-iptv", "198.51.100.20", "198.51.100.29"),
    ("A-known", "198.51.100.40", "198.51.100.49"),
    ("A-ports", "198.51.100.50", "198.51.100.59"),
    ("A-open", "198.51.100.100", "198.51.100.199"),
    ("B", "203.0.113.10", "203.0.113.50"),
];

/// A private-use option code (RFC 3942 site-specific range), given raw in both servers.
const RAW_CODE: u8 = 224;

/// Options every client asks for (option 55): both servers send configured options only
/// when asked (Kea sends nothing else without `always-send`), and ours then sends only
/// what is asked, so the lists are comparable.
const ASKED: [u8; 8] = [1, 3, 6, 15, 42, 58, 59, RAW_CODE];

fn pool(first: usize) -> String {
    let (_, a, b) = POOLS[first];
    format!("{a}-{b}")
}

fn ours_config(iface: &str) -> String {
    format!(
        r#"interfaces = ["{iface}"]
backend = "udp"

[[class]]
name = "voip"
test = "option[60].text starts-with 'VOIP'"
lease-time = 600
next-server = "192.0.2.69"
filename = "phone.cfg"
domain-name = "voip.example"
option = [{{ code = {RAW_CODE}, hex = "c0000245" }}]

[[class]]
name = "iptv"
test = "substring(option[77].hex, 1, all) == 'iptv'"
ntp-servers = ["192.0.2.123"]

[[class]]
name = "acme"
test = "pkt4.oui == 02:aa:bb"
domain-name = "acme.example"
ntp-servers = ["192.0.2.124"]

[[class]]
name = "ports"
match = "relay4[1]"
members = ["port-2", "port-3"]
domain-name = "ports.example"
dns-servers = ["192.0.2.55"]

[[class.subclass]]
value = "port-1"
dns-servers = ["192.0.2.54"]

[[class]]
name = "gold"
test = "relay4[2].hex == 'gold'"
lease-time = 7200

[[class]]
name = "blocked"
test = "option[60].text == 'BLOCKED'"

[[class]]
name = "no43"
test = "pkt4.mac == 0x02ee00000001 and option[43].hex == ''"
ntp-servers = ["192.0.2.125"]

[[class]]
name = "router"
test = "pkt4.mac == 0x02ee00000002"
routers = ["198.51.100.3"]

[[subnet]]
subnet = "{SUBNET_A}"
routers = ["198.51.100.1"]
pools = [
  {{ range = "{voip}", allow = ["voip"], routers = ["198.51.100.2"] }},
  {{ range = "{iptv}", allow = ["iptv"] }},
  {{ range = "{known}", allow = ["KNOWN"] }},
  {{ range = "{ports}", allow = ["ports"] }},
  {{ range = "{open}", deny = ["voip", "iptv", "KNOWN", "ports", "blocked"] }},
]

[[subnet.reservation]]
hw-address = "{KNOWN_MAC}"
ntp-servers = ["192.0.2.126"]

[[subnet.reservation]]
hw-address = "{KNOWN_ACME_MAC}"
ntp-servers = ["192.0.2.126"]

[[subnet]]
subnet = "{SUBNET_B}"
routers = ["203.0.113.1"]
pools = ["{b}"]
"#,
        voip = pool(0),
        iptv = pool(1),
        known = pool(2),
        ports = pool(3),
        open = pool(4),
        b = pool(5),
    )
}

fn kea_pool(i: usize) -> String {
    let (_, a, b) = POOLS[i];
    format!("{a} - {b}")
}

fn kea_config(iface: &str) -> String {
    format!(
        r#"{{"Dhcp4": {{
  "interfaces-config": {{ "interfaces": ["{iface}"], "dhcp-socket-type": "udp" }},
  "lease-database": {{ "type": "memfile", "persist": false }},
  "authoritative": true,
  "valid-lifetime": 3600,
  "calculate-tee-times": true, "t1-percent": 0.5, "t2-percent": 0.875,
  "client-classes": [
    {{ "name": "voip", "test": "substring(option[60].text,0,4) == 'VOIP'",
      "valid-lifetime": 600, "next-server": "192.0.2.69", "boot-file-name": "phone.cfg",
      "option-data": [ {{ "name": "domain-name", "data": "voip.example" }},
                       {{ "code": {RAW_CODE}, "csv-format": false, "data": "C0000245" }} ] }},
    {{ "name": "iptv", "test": "substring(option[77].hex,1,all) == 'iptv'",
      "option-data": [ {{ "name": "ntp-servers", "data": "192.0.2.123" }} ] }},
    {{ "name": "acme", "test": "substring(pkt4.mac,0,3) == 0x02aabb",
      "option-data": [ {{ "name": "domain-name", "data": "acme.example" }},
                       {{ "name": "ntp-servers", "data": "192.0.2.124" }} ] }},
    {{ "name": "port-1", "test": "relay4[1].hex == 'port-1'",
      "option-data": [ {{ "name": "domain-name-servers", "data": "192.0.2.54" }} ] }},
    {{ "name": "ports",
      "test": "member('port-1') or relay4[1].hex == 'port-2' or relay4[1].hex == 'port-3'",
      "option-data": [ {{ "name": "domain-name", "data": "ports.example" }},
                       {{ "name": "domain-name-servers", "data": "192.0.2.55" }} ] }},
    {{ "name": "gold", "test": "relay4[2].hex == 'gold'",
      "valid-lifetime": 7200, "max-valid-lifetime": 7200 }},
    {{ "name": "blocked", "test": "option[60].text == 'BLOCKED'" }},
    {{ "name": "no43", "test": "pkt4.mac == 0x02ee00000001 and option[43].hex == ''",
      "option-data": [ {{ "name": "ntp-servers", "data": "192.0.2.125" }} ] }},
    {{ "name": "router", "test": "pkt4.mac == 0x02ee00000002",
      "option-data": [ {{ "name": "routers", "data": "198.51.100.3" }} ] }},
    {{ "name": "open",
      "test": "not (member('voip') or member('iptv') or member('KNOWN') or member('ports') or member('blocked'))" }}
  ],
  "subnet4": [
    {{ "id": 1, "subnet": "{SUBNET_A}",
      "option-data": [ {{ "name": "routers", "data": "198.51.100.1" }} ],
      "pools": [
        {{ "pool": "{voip}", "client-class": "voip",
          "option-data": [ {{ "name": "routers", "data": "198.51.100.2" }} ] }},
        {{ "pool": "{iptv}", "client-class": "iptv" }},
        {{ "pool": "{known}", "client-class": "KNOWN" }},
        {{ "pool": "{ports}", "client-class": "ports" }},
        {{ "pool": "{open}", "client-class": "open" }}
      ],
      "reservations": [
        {{ "hw-address": "{KNOWN_MAC}",
          "option-data": [ {{ "name": "ntp-servers", "data": "192.0.2.126" }} ] }},
        {{ "hw-address": "{KNOWN_ACME_MAC}",
          "option-data": [ {{ "name": "ntp-servers", "data": "192.0.2.126" }} ] }} ] }},
    {{ "id": 2, "subnet": "{SUBNET_B}",
      "option-data": [ {{ "name": "routers", "data": "203.0.113.1" }} ],
      "pools": [ {{ "pool": "{b}" }} ] }}
  ],
  "loggers": [ {{ "name": "kea-dhcp4", "output_options": [ {{ "output": "stdout" }} ],
                 "severity": "INFO" }} ]
}}}}"#,
        voip = kea_pool(0),
        iptv = kea_pool(1),
        known = kea_pool(2),
        ports = kea_pool(3),
        open = kea_pool(4),
        b = kea_pool(5),
    )
}

/// What a client does after it is classified.
#[derive(Clone, Copy)]
enum Exchange {
    /// DISCOVER, then REQUEST (selecting) for what was offered.
    Dora,
    /// A REQUEST without server identifier for this address (RFC 2131 INIT-REBOOT).
    InitReboot(Ipv4Addr),
}

struct Case {
    name: &'static str,
    mac: [u8; 6],
    /// Options the client puts in each of its messages besides 53, 55, 50 and 54.
    options: Vec<DhcpOption>,
    /// Sub-options the relay adds (option 82), none: no option 82.
    relay: Vec<RelayInfo>,
    exchange: Exchange,
    /// A pinned difference from the header: Kea's replies are ours with this one
    /// option changed.
    kea_differs: Option<Known>,
}

/// Kea's replies are ours with option `code` set to `kea` (None: left out), for `why`.
#[derive(Clone, Copy)]
struct Known {
    code: u8,
    kea: Option<&'static str>,
    why: &'static str,
}

impl Known {
    /// Our replies as Kea is known to give them.
    fn apply(&self, ours: &[Option<Seen>]) -> Vec<Option<Seen>> {
        let mut v = ours.to_vec();
        for s in v.iter_mut().flatten() {
            match self.kea {
                Some(value) => s.options.insert(self.code, value.to_owned()),
                None => s.options.remove(&self.code),
            };
        }
        v
    }
}

fn case(name: &'static str, mac: [u8; 6]) -> Case {
    Case {
        name,
        mac,
        options: Vec::new(),
        relay: Vec::new(),
        exchange: Exchange::Dora,
        kea_differs: None,
    }
}

impl Case {
    fn vendor(mut self, v: &str) -> Self {
        self.options
            .push(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
        self
    }

    fn option(mut self, o: DhcpOption) -> Self {
        self.options.push(o);
        self
    }

    fn relay(mut self, r: RelayInfo) -> Self {
        self.relay.push(r);
        self
    }

    fn init_reboot(mut self, a: Ipv4Addr) -> Self {
        self.exchange = Exchange::InitReboot(a);
        self
    }

    fn differs(mut self, code: u8, kea: Option<&'static str>, why: &'static str) -> Self {
        self.kea_differs = Some(Known { code, kea, why });
        self
    }
}

fn cases() -> Vec<Case> {
    let circuit = |c: &str| RelayInfo::AgentCircuitId(c.as_bytes().to_vec());
    vec![
        // Vendor class prefix: its pool (with the pool's router), its options, its lease
        // time (and T1/T2 from it), its boot server and file.
        case("vendor-prefix", [2, 0, 0, 0, 1, 1]).vendor("VOIP-phone"),
        // Too short for the prefix: a client of no class.
        case("vendor-near-miss", [2, 0, 0, 0, 1, 2]).vendor("VOI"),
        // Two classes with options for one code: the first class wins.
        case("vendor-and-oui", [2, 0xaa, 0xbb, 0, 1, 3]).vendor("VOIPer"),
        // User class (RFC 3004: a length octet, then the class).
        case("user-class", [2, 0, 0, 0, 2, 1]).option(DhcpOption::UserClass(b"\x04iptv".to_vec())),
        // The MAC's OUI: options only, from the open pool.
        case("oui", [2, 0xaa, 0xbb, 0, 0, 1]),
        // Circuit id listed with settings of its own, then its class's.
        case("circuit-listed-own", [2, 0, 0, 0, 3, 1]).relay(circuit("port-1")),
        // Circuit id listed without settings, plus a remote id class's lease time.
        case("circuit-listed-gold", [2, 0, 0, 0, 3, 2])
            .relay(circuit("port-2"))
            .relay(RelayInfo::AgentRemoteId(b"gold".to_vec())),
        // Circuit id not listed: no class.
        case("circuit-unlisted", [2, 0, 0, 0, 3, 9]).relay(circuit("port-9")),
        case("no-class", [2, 0, 0, 0, 4, 1]),
        // Denied by the only pool it could use: no offer.
        case("denied", [2, 0, 0, 0, 5, 1]).vendor("BLOCKED"),
        // A reservation without an address: KNOWN's pool, the reservation's options.
        case("known", [2, 0, 0, 0, 0x99, 1]),
        // Reserved and in a class with options: the reservation's NTP server wins, the
        // class still gives its domain.
        case("known-and-oui", [2, 0xaa, 0xbb, 0, 0x99, 2]),
        // RFC 3011: the client names subnet B; the relay stays in A.
        case("subnet-selection", [2, 0, 0, 0, 6, 1])
            .option(DhcpOption::SubnetSelection(Ipv4Addr::new(203, 0, 113, 0))),
        // RFC 3527: the relay names subnet B.
        case("link-selection", [2, 0, 0, 0, 6, 2])
            .relay(RelayInfo::LinkSelection(Ipv4Addr::new(203, 0, 113, 7))),
        // RFC 5107: the client sees the relay's address as the server and the REQUEST
        // naming it is accepted.
        case("server-id-override", [2, 0, 0, 0, 6, 3])
            .relay(RelayInfo::ServerIdentifierOverride(GIADDR))
            .differs(
                54,
                Some(SERVER),
                "Kea 2.2 keeps its own address in option 54; ours sends the override",
            ),
        // A client of no class asking for an address of a class's pool: NAK.
        case("reboot-into-voip-pool", [2, 0, 0, 0, 7, 1])
            .init_reboot(Ipv4Addr::new(198, 51, 100, 15)),
        // A voip client asking for an address of the pool that denies it: NAK.
        case("voip-reboot-into-open-pool", [2, 0, 0, 0, 7, 2])
            .vendor("VOIP-phone")
            .init_reboot(Ipv4Addr::new(198, 51, 100, 150)),
        case("absent-option", [2, 0xee, 0, 0, 0, 1]).differs(
            42,
            Some("192.0.2.125"),
            "Kea reads the absent option 43 as '', so class no43 holds; ours has no value",
        ),
        case("class-vs-subnet", [2, 0xee, 0, 0, 0, 2]).differs(
            3,
            Some("198.51.100.1"),
            "Kea ranks the subnet's routers above the class's; ours the class's above the subnet's",
        ),
    ]
}

/// One reply as far as the comparison goes.
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    kind: String,
    pool: &'static str,
    siaddr: Ipv4Addr,
    file: String,
    options: BTreeMap<u8, String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.pool)?;
        if !self.siaddr.is_unspecified() {
            write!(f, " siaddr={}", self.siaddr)?;
        }
        if !self.file.is_empty() {
            write!(f, " file={}", self.file)?;
        }
        for (code, v) in &self.options {
            write!(f, " {code}={v}")?;
        }
        Ok(())
    }
}

/// Which pool an address is in, by the names in `POOLS`.
fn pool_of(a: Ipv4Addr) -> &'static str {
    if a.is_unspecified() {
        return "-";
    }
    POOLS
        .iter()
        .find(|(_, first, last)| {
            (first.parse::<Ipv4Addr>().unwrap()..=last.parse().unwrap()).contains(&a)
        })
        .map_or("outside every pool", |p| p.0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// An option's value, short enough for a table cell.
fn show(o: &DhcpOption) -> String {
    let addrs = |a: &[Ipv4Addr]| {
        a.iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match o {
        DhcpOption::SubnetMask(a)
        | DhcpOption::ServerIdentifier(a)
        | DhcpOption::SubnetSelection(a) => a.to_string(),
        DhcpOption::Router(a) | DhcpOption::DomainNameServer(a) | DhcpOption::NtpServers(a) => {
            addrs(a)
        }
        DhcpOption::DomainName(s) => s.clone(),
        DhcpOption::AddressLeaseTime(t) | DhcpOption::Renewal(t) | DhcpOption::Rebinding(t) => {
            t.to_string()
        }
        DhcpOption::Unknown(u) => hex(u.data()),
        DhcpOption::RelayAgentInformation(info) => info
            .iter()
            .map(|(_, r)| match r {
                RelayInfo::AgentCircuitId(v) => format!("circuit:{}", String::from_utf8_lossy(v)),
                RelayInfo::AgentRemoteId(v) => format!("remote:{}", String::from_utf8_lossy(v)),
                RelayInfo::LinkSelection(a) => format!("link:{a}"),
                RelayInfo::ServerIdentifierOverride(a) => format!("override:{a}"),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

fn summarize(m: &Message) -> Seen {
    let options = m
        .opts()
        .iter()
        .filter(|(c, _)| !matches!(c, OptionCode::MessageType | OptionCode::Message))
        .map(|(c, o)| (u8::from(*c), show(o)))
        .collect();
    let file = m
        .fname()
        .and_then(|f| f.split(|&b| b == 0).next())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default();
    Seen {
        kind: m
            .opts()
            .msg_type()
            .map_or("no type".into(), |t| format!("{t:?}").to_uppercase()),
        pool: pool_of(m.yiaddr()),
        siaddr: m.siaddr(),
        file,
        options,
    }
}

/// A relay on port 67 of the client namespace.
struct Relay {
    sock: UdpSocket,
    server: std::net::SocketAddr,
}

impl Relay {
    fn new(ns: &str) -> Relay {
        let ns = ns.to_owned();
        // The socket is created inside the namespace by a thread that entered it, and
        // stays there when used from this one.
        let sock = std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: setns on an open namespace file; affects only this thread.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            UdpSocket::bind("0.0.0.0:67").unwrap()
        })
        .join()
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Relay {
            sock,
            server: format!("{SERVER}:67").parse().unwrap(),
        }
    }

    /// Sends `m` and waits up to `wait` for the reply with its xid.
    fn exchange(&self, m: &Message, wait: Duration) -> Option<Message> {
        let bytes = m.to_vec().unwrap();
        self.sock.send_to(&bytes, self.server).unwrap();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            if reply.opcode() == Opcode::BootReply && reply.xid() == m.xid() {
                return Some(reply);
            }
        }
        None
    }
}

/// A relayed request from `c`, the relay's hop already counted.
fn request(c: &Case, xid: u32, kind: MessageType, extra: &[DhcpOption]) -> Message {
    let unspec = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, unspec, unspec, unspec, GIADDR, &c.mac);
    m.set_hops(1);
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(
        ASKED.iter().map(|&c| OptionCode::from(c)).collect(),
    ));
    for o in c.options.iter().chain(extra) {
        opts.insert(o.clone());
    }
    if !c.relay.is_empty() {
        let mut info = RelayAgentInformation::default();
        for r in &c.relay {
            info.insert(r.clone());
        }
        opts.insert(DhcpOption::RelayAgentInformation(info));
    }
    m
}

/// Runs every case against the server listening now: per case, each reply in order, or
/// "nothing" where the server stayed silent.
fn run_cases(relay: &Relay, cases: &[Case], round: u32) -> Vec<Vec<Option<Seen>>> {
    // Long enough for a loaded CI machine; only the silent cases wait it out.
    let wait = Duration::from_millis(1500);
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let xid = round << 24 | (i as u32) << 8;
            match c.exchange {
                Exchange::InitReboot(a) => {
                    let req = request(
                        c,
                        xid,
                        MessageType::Request,
                        &[DhcpOption::RequestedIpAddress(a)],
                    );
                    vec![relay.exchange(&req, wait).as_ref().map(summarize)]
                }
                Exchange::Dora => {
                    let Some(offer) =
                        relay.exchange(&request(c, xid, MessageType::Discover, &[]), wait)
                    else {
                        return vec![None];
                    };
                    let Some(DhcpOption::ServerIdentifier(sid)) =
                        offer.opts().get(OptionCode::ServerIdentifier)
                    else {
                        return vec![Some(summarize(&offer))];
                    };
                    let req = request(
                        c,
                        xid + 1,
                        MessageType::Request,
                        &[
                            DhcpOption::RequestedIpAddress(offer.yiaddr()),
                            DhcpOption::ServerIdentifier(*sid),
                        ],
                    );
                    let ack = relay.exchange(&req, wait);
                    vec![Some(summarize(&offer)), ack.as_ref().map(summarize)]
                }
            }
        })
        .collect()
}

fn cell(s: Option<&Option<Seen>>) -> String {
    match s {
        None => "-".into(),
        Some(None) => "nothing".into(),
        Some(Some(s)) => s.to_string(),
    }
}

#[test]
fn kea_and_ours_classify_the_same_clients_alike() {
    let Some(mut lab) = Lab::new("classes-kea", &format!("{SERVER}/24")) else {
        return;
    };
    require("kea-dhcp4");
    let client_if = lab.client_if.clone();
    for a in [format!("{RELAY_LINK}/24"), format!("{GIADDR}/24")] {
        lab.in_client("ip", &["addr", "add", &a, "dev", &client_if]);
    }
    for net in [SUBNET_A, SUBNET_B] {
        lab.in_server("ip", &["route", "add", net, "via", RELAY_LINK]);
    }
    let relay = Relay::new(&lab.client_ns);
    let cases = cases();
    let server_if = lab.server_if.clone();
    let server_ns = lab.server_ns.clone();

    let ours_path = lab.path("ours.toml");
    std::fs::write(&ours_path, ours_config(&server_if)).unwrap();
    let ours_server = lab.start_server(&["--config", ours_path.to_str().unwrap()]);
    let ours = run_cases(&relay, &cases, 1);
    let status = lab.stop(ours_server.pid).expect("our server did not stop");
    assert!(status.success(), "{}", ours_server.log_text());

    let kea_path = lab.path("kea-dhcp4.json");
    std::fs::write(&kea_path, kea_config(&server_if)).unwrap();
    let dir = format!("{}", lab.dir.display());
    let (pid_dir, lock_dir) = (
        format!("KEA_PIDFILE_DIR={dir}"),
        format!("KEA_LOCKFILE_DIR={dir}"),
    );
    let kea_pid = lab.spawn(
        &server_ns,
        "env",
        &[
            &pid_dir,
            &lock_dir,
            "kea-dhcp4",
            "-c",
            kea_path.to_str().unwrap(),
        ],
        "kea.log",
    );
    let kea_server = Server {
        pid: kea_pid,
        log: lab.path("kea.log"),
    };
    kea_server.wait_for("DHCP4_STARTED", Duration::from_secs(10));
    let kea = run_cases(&relay, &cases, 2);
    lab.stop(kea_pid);

    let mut table = String::new();
    let mut failed = Vec::new();
    for ((c, o), k) in cases.iter().zip(&ours).zip(&kea) {
        let verdict = match c.kea_differs {
            None if o == k => "same".to_owned(),
            Some(known) if o != k && known.apply(o) == *k => {
                format!("differs as known: {}", known.why)
            }
            None => {
                failed.push(c.name);
                "DISAGREE".to_owned()
            }
            Some(known) => {
                failed.push(c.name);
                format!(
                    "NOT AS PINNED: expected Kea to differ in option {} only",
                    known.code
                )
            }
        };
        let _ = writeln!(table, "{}: {verdict}", c.name);
        let sent: &[&str] = match c.exchange {
            Exchange::Dora => &["DISCOVER", "REQUEST"],
            Exchange::InitReboot(_) => &["REQUEST"],
        };
        for (step, sent) in sent.iter().enumerate().take(o.len().max(k.len())) {
            let _ = writeln!(table, "  {sent:<9} ours: {}", cell(o.get(step)));
            let _ = writeln!(table, "  {:<9} kea:  {}", "", cell(k.get(step)));
        }
    }
    eprintln!("{table}");
    assert!(
        failed.is_empty(),
        "ours and Kea disagree on {failed:?}:\n{table}\nour log:\n{}\nkea log:\n{}",
        ours_server.log_text(),
        kea_server.log_text()
    );
}
