//! `cargo xtask fuzz --capture`: remakes dhcp-server/fuzz/corpus-seed/ from real software,
//! so the fuzzers start from what the network really carries rather than from what we
//! think it carries.
//!
//! ISC dhcpd serves two links in namespaces of its own (`fzcap-*`, apart from the lab's,
//! which a benchmark may be using): one with dhclient, udhcpc, perfdhcp and our
//! `dhcp-server leasequery` on it, and one behind dhcrelay inserting option 82. tcpdump
//! records both of dhcpd's interfaces; every UDP payload becomes a message. From those:
//! - `parse_request`: each distinct message (by sender, type and the option codes it
//!   carries, so perfdhcp's thousand look-alikes count once);
//! - `engine_handle`: each client's requests in order, length-prefixed as the target
//!   reads them, and the leasequeries (their giaddr is a requester the target allows);
//! - `bulk_leasequery`: the requests and leasequeries made DHCPBULKLEASEQUERYs (type 14)
//!   with the two-octet size in front, one at a time and several on one stream;
//! - `class_expr`: the tests of docs/classes.md, each with a captured request after it;
//! - `isc_leases`: the dhcpd.leases dhcpd wrote;
//! - `journal_replay`: the segment files `dhcp-server import-isc` writes from it, without
//!   their zeroed tail (mode octet 0: replayed as they are);
//! - `failover_wire`: the messages two dhcpd captured in tests/data/failover/;
//! - `control_request`: one line of every control command, as `dhcp-server ctl` sends it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lab::{in_ns, release_binary, spawn_logged};
use crate::{install, is_root, sh, Result};

const SRV: &str = "fzcap-srv";
const CLI: &str = "fzcap-cli";
const RLY: &str = "fzcap-rly";
const RCL: &str = "fzcap-rcl";
const NAMESPACES: [&str; 4] = [SRV, CLI, RLY, RCL];

/// dhcpd's two links: clients on 192.0.2.0/24 straight, 198.51.100.0/24 behind the relay
/// (the engine target's two subnets, so relayed seeds land in a subnet it serves), and
/// the relay's uplink 203.0.113.0/24.
const DHCPD_CONF: &str = "\
authoritative;
ddns-update-style none;
ping-check false;
allow leasequery;
default-lease-time 600;
max-lease-time 7200;
option domain-name \"example.org\";
option domain-name-servers 192.0.2.1;
subnet 192.0.2.0 netmask 255.255.255.0 {
  range 192.0.2.10 192.0.2.200;
  option routers 192.0.2.1;
}
subnet 203.0.113.0 netmask 255.255.255.0 {
}
subnet 198.51.100.0 netmask 255.255.255.0 {
  range 198.51.100.10 198.51.100.100;
  option routers 198.51.100.1;
}
";

/// One line of every control command (docs/control.md), with the argument forms each
/// takes.
const CONTROL_LINES: &[&str] = &[
    r#"{"version":1,"id":1,"command":"status"}"#,
    r#"{"version":1,"id":"a","command":"stats"}"#,
    r#"{"version":1,"command":"metrics"}"#,
    r#"{"version":1,"id":null,"command":"leases","limit":10}"#,
    r#"{"version":1,"id":2,"command":"leases","address":"192.0.2.10"}"#,
    r#"{"version":1,"id":3,"command":"leases","mac":"02:00:00:00:00:01","cursor":"192.0.2.5"}"#,
    r#"{"version":1,"id":4,"command":"leases","client_id":"01:02:00:00:00:00:01"}"#,
    r#"{"version":1,"id":5,"command":"reservations"}"#,
    r#"{"version":1,"id":6,"command":"reservation-add","address":"192.0.2.50","mac":"02:00:00:00:00:02","host_name":"printer"}"#,
    r#"{"version":1,"id":7,"command":"reservation-add","address":"198.51.100.50","circuit_id":"0x00040001","remote_id":null}"#,
    r#"{"version":1,"id":8,"command":"reservation-del","address":"192.0.2.50"}"#,
    r#"{"version":1,"id":9,"command":"lease-release","address":"192.0.2.10"}"#,
    r#"{"version":1,"id":10,"command":"lease-delete","address":"192.0.2.11"}"#,
    r#"{"version":1,"id":11,"command":"class-members","class":"voip","limit":100}"#,
    r#"{"version":1,"id":12,"command":"class-member-add","class":"voip","value":"VOIP-1"}"#,
    r#"{"version":1,"id":13,"command":"class-member-del","class":"voip","hex":"70:6f:72:74"}"#,
    r#"{"version":1,"id":14,"command":"reload"}"#,
    r#"{"version":1,"id":15,"command":"failover-partner-down"}"#,
    r#"{"version":1,"id":16,"command":"failover-resync"}"#,
    r#"{"version":1,"id":17,"command":"shutdown"}"#,
    "{\"version\":1,\"id\":18,\"command\":\"status\"}\n{\"version\":2,\"command\":\"stats\"}\nnot json",
];

/// The namespaces, links and processes of one capture; everything goes when dropped.
struct Rig {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(500));
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        teardown();
    }
}

fn teardown() {
    for ns in NAMESPACES {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) -> Result {
    sh(Command::new("ip").args(args))
}

fn link(a: (&str, &str, Option<&str>), b: (&str, &str, Option<&str>)) -> Result {
    ip(&[
        "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
    ])?;
    for (ns, ifname, addr) in [a, b] {
        if let Some(addr) = addr {
            ip(&["-n", ns, "addr", "add", addr, "dev", ifname])?;
        }
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
    }
    Ok(())
}

impl Rig {
    fn up() -> Result<Rig> {
        teardown();
        let dir = std::env::temp_dir().join("fuzz-capture");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let rig = Rig {
            dir,
            children: Vec::new(),
        };
        for ns in NAMESPACES {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        link(
            (SRV, "fzc-s0", Some("192.0.2.1/24")),
            (CLI, "fzc-c0", Some("192.0.2.2/24")),
        )?;
        link(
            (SRV, "fzc-s1", Some("203.0.113.1/24")),
            (RLY, "fzc-r1", Some("203.0.113.2/24")),
        )?;
        link(
            (RLY, "fzc-r0", Some("198.51.100.1/24")),
            (RCL, "fzc-rc", None),
        )?;
        ip(&[
            "-n",
            SRV,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "203.0.113.2",
        ])?;
        Ok(rig)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> Result {
        spawn_logged(ns, program, args, &self.path(log), &mut self.children).map(drop)
    }

    fn wait_for(&self, log: &str, needle: &str) -> Result {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if fs::read_to_string(self.path(log)).is_ok_and(|t| t.contains(needle)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no '{needle}' in {} after 15 s",
            self.path(log).display()
        ))
    }

    /// Runs a client to its end (at most 60 s), in namespace `ns`; exit codes in `ok`
    /// besides 0 are fine too.
    fn client(&self, ns: &str, program: &str, args: &[&str], ok: &[i32]) -> Result {
        let log =
            fs::File::create(self.path(&format!("{program}.log"))).map_err(|e| e.to_string())?;
        let mut child = in_ns(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() || status.code().is_some_and(|c| ok.contains(&c)) {
                    Ok(())
                } else {
                    Err(format!("{program} {args:?} failed with {status}"))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} {args:?} still running after 60 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A message off the wire: when, and on which of dhcpd's links.
struct Captured {
    at: f64,
    link: &'static str,
    payload: Vec<u8>,
}

/// What each client ran during: (name, first second, last second) since the epoch.
type Phases = Vec<(&'static str, f64, f64)>;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn run() -> Result {
    if !is_root() {
        return Err("--capture needs root (namespaces, tcpdump)".into());
    }
    install(&[
        "isc-dhcp-server",
        "isc-dhcp-client",
        "isc-dhcp-relay",
        "udhcpc",
        "kea-admin",
        "tcpdump",
    ])?;
    let server = release_binary("dhcp-server", "dhcp-server")?;
    let mut rig = Rig::up()?;
    let (messages, phases, leases) = exchange(&mut rig, &server)?;
    let journal = journal_segments(&rig, &server, &leases)?;
    drop(rig);
    eprintln!("xtask: captured {} messages", messages.len());
    write_seeds(&messages, &phases, &leases, &journal)
}

/// Runs the clients against dhcpd while tcpdump records, and returns the messages, the
/// clients' phases and the leases file dhcpd wrote.
fn exchange(rig: &mut Rig, server: &str) -> Result<(Vec<Captured>, Phases, String)> {
    let dir = rig.dir.clone();
    let d = |n: &str| dir.join(n).display().to_string();
    fs::write(rig.path("dhcpd.conf"), DHCPD_CONF).map_err(|e| e.to_string())?;
    fs::write(rig.path("dhcpd.leases"), "").map_err(|e| e.to_string())?;
    // The clients' scripts record nothing and change nothing: namespaces share the
    // host's files, resolv.conf included.
    fs::write(rig.path("script"), "#!/bin/sh\nexit 0\n").map_err(|e| e.to_string())?;
    sh(Command::new("chmod").arg("+x").arg(rig.path("script")))?;
    fs::write(
        rig.path("dhclient.conf"),
        "timeout 20;\nsend host-name \"fuzz-seed\";\n\
         request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name;\n",
    )
    .map_err(|e| e.to_string())?;

    for (link, log) in [("fzc-s0", "tcpdump-s0.log"), ("fzc-s1", "tcpdump-s1.log")] {
        let pcap = d(&format!("{link}.pcap"));
        rig.spawn(
            SRV,
            "tcpdump",
            &[
                "-i",
                link,
                "-U",
                "-n",
                "-s",
                "0",
                "-w",
                &pcap,
                "udp port 67 or udp port 68",
            ],
            log,
        )?;
        rig.wait_for(log, "listening on")?;
    }
    let (conf, leases, pid) = (d("dhcpd.conf"), d("dhcpd.leases"), d("dhcpd.pid"));
    let dhcpd_args = [
        "-4", "-f", "-d", "-cf", &conf, "-lf", &leases, "-pf", &pid, "fzc-s0", "fzc-s1",
    ];
    rig.spawn(SRV, "dhcpd", &dhcpd_args, "dhcpd.log")?;
    rig.wait_for("dhcpd.log", "Sending on")?;
    rig.spawn(
        RLY,
        "dhcrelay",
        &[
            "-4",
            "-d",
            "-a",
            "-iu",
            "fzc-r1",
            "-id",
            "fzc-r0",
            "203.0.113.1",
        ],
        "dhcrelay.log",
    )?;
    rig.wait_for("dhcrelay.log", "Sending on")?;

    let script = d("script");
    let dconf = d("dhclient.conf");
    let mut phases = Phases::new();
    let mut phase = |name: &'static str, f: &mut dyn FnMut() -> Result| -> Result {
        let start = now();
        f()?;
        phases.push((name, start, now()));
        Ok(())
    };
    for (name, ns, ifname) in [
        ("dhclient", CLI, "fzc-c0"),
        ("dhclient-relayed", RCL, "fzc-rc"),
    ] {
        let (lf, pf) = (d(&format!("{name}.leases")), d(&format!("{name}.pid")));
        phase(name, &mut || {
            let common = ["-4", "-cf", &dconf, "-sf", &script, "-lf", &lf, "-pf", &pf];
            rig.client(
                ns,
                "dhclient",
                &[&common[..], &["-1", ifname]].concat(),
                &[],
            )?;
            // -r releases the lease and stops the dhclient that got it.
            rig.client(
                ns,
                "dhclient",
                &[&common[..], &["-r", ifname]].concat(),
                &[],
            )
        })?;
    }
    for (name, ns, ifname) in [("udhcpc", CLI, "fzc-c0"), ("udhcpc-relayed", RCL, "fzc-rc")] {
        phase(name, &mut || {
            rig.client(
                ns,
                "udhcpc",
                &[
                    "-i",
                    ifname,
                    "-f",
                    "-q",
                    "-n",
                    "-R",
                    "-t",
                    "5",
                    "-T",
                    "1",
                    "-s",
                    &script,
                    "-V",
                    "fuzz-vendor",
                    "-x",
                    "hostname:fuzzseed",
                    "-O",
                    "42",
                ],
                &[],
            )
        })?;
    }
    phase("perfdhcp", &mut || {
        rig.client(
            CLI,
            "perfdhcp",
            &[
                "-4", "-l", "fzc-c0", "-r", "20", "-n", "40", "-R", "20", "-p", "10",
            ],
            // 3: some exchange did not complete (a drop under load); the rest did.
            &[3],
        )
    })?;
    // The client side's MAC (dhclient's and udhcpc's); /sys shows the namespace's own
    // interfaces only from inside it.
    let out = in_ns(CLI, "cat")
        .arg("/sys/class/net/fzc-c0/address")
        .output()
        .map_err(|e| e.to_string())?;
    let client_mac = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    phase("leasequery", &mut || {
        // The requester is 192.0.2.2, a router address dhcpd allows to ask; each
        // answer kind once: an active lease, a free pool address, an address it
        // does not manage, and a client by MAC.
        for key in [
            ["--mac", &client_mac],
            ["--address", "192.0.2.200"],
            ["--address", "192.0.2.150"],
            ["--address", "203.0.113.77"],
        ] {
            // An unanswered query is a finding for the leasequery tests, not here.
            let _ = rig.client(
                CLI,
                server,
                &[
                    &["leasequery", "--server", "192.0.2.1", "--timeout", "2"][..],
                    &key,
                ]
                .concat(),
                &[],
            );
        }
        Ok(())
    })?;
    // tcpdump writes out its buffer as it goes (-U); give the last packets a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut messages = Vec::new();
    for link in ["fzc-s0", "fzc-s1"] {
        let pcap = fs::read(rig.path(&format!("{link}.pcap"))).map_err(|e| e.to_string())?;
        messages.extend(udp_payloads(&pcap, link)?);
    }
    messages.sort_by(|a, b| a.at.total_cmp(&b.at));
    let leases = fs::read_to_string(rig.path("dhcpd.leases")).map_err(|e| e.to_string())?;
    Ok((messages, phases, leases))
}

/// The UDP payloads of an Ethernet pcap file (IPv4 only, as dhcpd's links carry).
fn udp_payloads(pcap: &[u8], link: &'static str) -> Result<Vec<Captured>> {
    let magic = pcap.get(..4).ok_or("empty pcap")?;
    let nanos = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => false,
        [0x4d, 0x3c, 0xb2, 0xa1] => true,
        _ => return Err("not a little-endian pcap file".into()),
    };
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let secs = f64::from(u32_at(pcap, off));
        let frac = f64::from(u32_at(pcap, off + 4)) / if nanos { 1e9 } else { 1e6 };
        let len = u32_at(pcap, off + 8) as usize;
        let Some(frame) = pcap.get(off + 16..off + 16 + len) else {
            break;
        };
        off += 16 + len;
        // Ethernet, IPv4 (any header length), UDP.
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let Some(payload) = udp.get(8..udp_len.max(8)) else {
            continue;
        };
        out.push(Captured {
            at: secs + frac,
            link,
            payload: payload.to_vec(),
        });
    }
    Ok(out)
}

/// The journal `dhcp-server import-isc` makes of dhcpd's leases: each segment file's
/// name and octets, without the zeroed space after the last record.
fn journal_segments(rig: &Rig, server: &str, leases: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let file = rig.path("import.leases");
    fs::write(&file, leases).map_err(|e| e.to_string())?;
    let state = rig.path("state");
    sh(Command::new(server)
        .args(["import-isc", "--leases"])
        .arg(&file)
        .arg("--state-dir")
        .arg(&state))?;
    let mut segments = Vec::new();
    for e in fs::read_dir(&state).map_err(|e| e.to_string())? {
        let path = e.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".seg") {
            continue;
        }
        let mut bytes = fs::read(&path).map_err(|e| e.to_string())?;
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        bytes.truncate(end.next_multiple_of(8));
        segments.push((name.to_owned(), bytes));
    }
    segments.sort();
    Ok(segments)
}

/// The DHCP message type (option 53) of a message, and the option codes it carries.
fn shape(m: &[u8]) -> Option<(u8, Vec<u8>)> {
    let opts = m.get(240..)?;
    let (mut kind, mut codes, mut i) = (0, Vec::new(), 0);
    while let Some(&c) = opts.get(i) {
        match c {
            0 => i += 1,
            255 => break,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                if c == 53 {
                    kind = *opts.get(i + 2)?;
                }
                codes.push(c);
                i += 2 + len;
            }
        }
    }
    Some((kind, codes))
}

/// The message with its type (option 53) changed to `kind`.
fn retyped(m: &[u8], kind: u8) -> Option<Vec<u8>> {
    let mut m = m.to_vec();
    let mut i = 240;
    while let Some(&c) = m.get(i) {
        match c {
            0 => i += 1,
            255 => return None,
            53 => {
                *m.get_mut(i + 2)? = kind;
                return Some(m);
            }
            _ => i += 2 + usize::from(*m.get(i + 1)?),
        }
    }
    None
}

/// Messages behind two-octet lengths: the engine target's input and RFC 6926 framing.
fn framed(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        let len = u16::try_from(m.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// The tests quoted in docs/classes.md: the backquoted spans that read a request.
fn class_tests(doc: &str) -> Vec<String> {
    let mut tests = BTreeSet::new();
    for span in doc.split('`').skip(1).step_by(2) {
        if ["option[", "pkt4.", "relay4[", "substring(", "member("]
            .iter()
            .any(|w| span.contains(w))
        {
            tests.insert(span.to_owned());
        }
    }
    tests.into_iter().collect()
}

fn write_seeds(
    messages: &[Captured],
    phases: &Phases,
    leases: &str,
    journal: &[(String, Vec<u8>)],
) -> Result {
    let root = super::seeds_dir();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let _ = fs::remove_dir_all(&root);
    let mut seeds: BTreeMap<&str, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    // The clients run one after another, each done in a second or two: the windows
    // are exact, with no margin that would reach into the next client's.
    let phase_of = |at: f64| {
        phases
            .iter()
            .find(|(_, a, b)| (*a..=*b).contains(&at))
            .map_or("other", |p| p.0)
    };

    // One of each distinct message, named after who sent it and what it is.
    let mut seen = BTreeSet::new();
    let doc = fs::read_to_string(repo.join("docs/classes.md"))
        .map_err(|e| format!("docs/classes.md: {e}"))?;
    let tests = class_tests(&doc);
    let mut requests: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for m in messages {
        let Some((kind, codes)) = shape(&m.payload) else {
            continue;
        };
        let phase = phase_of(m.at);
        // Replies (BOOTREPLY) are all dhcpd's; the requests are the client's whose turn
        // it was (perfdhcp and the relay send from port 67 too).
        let from = if m.payload[0] == 2 { "dhcpd" } else { phase };
        if from != "dhcpd" {
            requests.entry(phase).or_default().push(&m.payload);
        }
        if seen.insert((from, m.link, m.payload[0], kind, codes)) {
            let name = format!("{from}-{}-type{kind}", m.link);
            seeds
                .entry("parse_request")
                .or_default()
                .push((name, m.payload.clone()));
        }
    }

    for (phase, reqs) in &requests {
        // perfdhcp's many clients: a handful is enough to show the shape.
        let reqs = &reqs[..reqs.len().min(8)];
        seeds
            .entry("engine_handle")
            .or_default()
            .push((format!("{phase}-sequence"), framed(reqs)));
        let bulk: Vec<Vec<u8>> = reqs.iter().filter_map(|m| retyped(m, 14)).collect();
        let bulk: Vec<&[u8]> = bulk.iter().map(Vec::as_slice).collect();
        if let Some(first) = bulk.first() {
            let seeds = seeds.entry("bulk_leasequery").or_default();
            seeds.push((format!("{phase}-one"), framed(&[first])));
            seeds.push((
                format!("{phase}-stream"),
                framed(&bulk[..bulk.len().min(3)]),
            ));
        }
    }
    // Each test of the docs once, after the first request of one client or another.
    let firsts: Vec<(&str, &[u8])> = requests.iter().map(|(p, r)| (*p, r[0])).collect();
    for (i, test) in tests.iter().enumerate() {
        let (phase, request) = firsts[i % firsts.len()];
        let mut s = test.clone().into_bytes();
        s.push(0xff);
        s.extend_from_slice(request);
        seeds
            .entry("class_expr")
            .or_default()
            .push((format!("test{i:02}-{phase}"), s));
    }

    seeds
        .entry("isc_leases")
        .or_default()
        .push(("dhcpd.leases".into(), leases.as_bytes().to_vec()));
    for (name, bytes) in journal {
        let seeds = seeds.entry("journal_replay").or_default();
        // As written; the same with the target's CRC writing on (mode 1), which keeps
        // what is right; and torn inside its last record, which replay must cut off.
        for (mode, len, what) in [
            (0, bytes.len(), "as-written"),
            (1, bytes.len(), "crc-mode"),
            (0, bytes.len().saturating_sub(13), "torn"),
        ] {
            let mut seed = vec![mode];
            seed.extend_from_slice(&bytes[..len]);
            seeds.push((format!("{name}-{what}"), seed));
        }
    }
    for e in
        fs::read_dir(repo.join("dhcp-server/tests/data/failover")).map_err(|e| e.to_string())?
    {
        let path = e.map_err(|e| e.to_string())?.path();
        let text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let hex: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.chars().filter(char::is_ascii_hexdigit))
            .collect();
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u8>>>()?;
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("msg");
        seeds
            .entry("failover_wire")
            .or_default()
            .push((name.to_owned(), bytes));
    }
    for (i, line) in CONTROL_LINES.iter().enumerate() {
        seeds
            .entry("control_request")
            .or_default()
            .push((format!("line{i:02}"), line.as_bytes().to_vec()));
    }

    for (target, files) in &seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).map_err(|e| e.to_string())?;
        }
        eprintln!("xtask: {} seeds for {target}", files.len());
    }
    Ok(())
}
