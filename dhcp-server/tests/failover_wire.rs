//! The failover codec against ISC dhcpd 4.4.3, the judge of what is on the wire.
//!
//! Golden tests (no privileges): messages captured from real dhcpd, stored as hex under
//! `tests/data/failover/`, decode to the typed fields dhcpd put in them and re-encode
//! to the same octets; the two whole captured streams split and decode message by
//! message.
//!
//! Lab tests (root, network namespaces made and removed here, dhcpd on PATH):
//! - `real_pair_*`: two dhcpd as primary 198.51.100.1 and secondary 198.51.100.2 joined
//!   by a veth; the test captures their TCP stream with a packet socket, decodes every
//!   message, and checks the exchange (connect, states up to normal, full updates,
//!   bindings acknowledged, two clients balanced by the hash bucket assignment as the
//!   HBA predicts, keepalives).
//! - `fake_primary_*`: the test is the primary, every message written by our codec, and
//!   the real secondary answers: refusals (unknown name, clock skew, no HBA), then the
//!   whole way to normal and the secondary's POOLREQ.
//! - `fake_secondary_*`: the test is the secondary and the real primary answers: a
//!   CONNECTACK with the wrong name gets dhcpd's DISCONNECT, a POOLREQ its POOLRESP.
//!
//! Run with `FAILOVER_WIRE_FIXTURES=DIR` to write what the lab tests captured as
//! fixtures into DIR, and with `--nocapture` to see the decoded exchanges.

#[allow(dead_code)] // each test crate uses part of the shared harness
mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcp_proto::failover::wire::{
    code, server_flags, split_frame, BindingStatus, Error, FailoverOption, Message, MessageType,
    Packet, RejectReason, ServerState, HEADER_LEN,
};

use common::{run, wait_for_file};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/failover");
const PRIMARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SECONDARY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PORT: u16 = 647;
/// `split 128`: the primary's buckets are 0..=127 (octets 0..16 all ones).
const SPLIT_128: [u8; 32] = {
    let mut h = [0u8; 32];
    let mut i = 0;
    while i < 16 {
        h[i] = 0xff;
        i += 1;
    }
    h
};

// ---------------------------------------------------------------------------------
// Golden tests over the captured fixtures.
// ---------------------------------------------------------------------------------

/// A fixture's octets: lines starting with '#' are comments, the rest is hex.
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(
        hex.len().is_multiple_of(2),
        "{name}: odd number of hex digits"
    );
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes a fixture holding one message, checks it re-encodes to the same octets, and
/// returns it.
fn golden(name: &str) -> Message {
    let bytes = fixture(name);
    let packet = Packet::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(usize::from(packet.msg_len()), bytes.len(), "{name}");
    assert_eq!(usize::from(packet.payload_offset()), HEADER_LEN, "{name}");
    let m = Message::parse(&packet).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(m.to_bytes().unwrap(), bytes, "{name} re-encodes");
    m
}

fn opts(m: &Message) -> Vec<FailoverOption<&[u8]>> {
    m.options.iter().map(FailoverOption::as_borrowed).collect()
}

#[test]
fn golden_connect_carries_what_dhcpd_configures() {
    let m = golden("connect.hex");
    assert_eq!(m.msg_type, MessageType::Connect);
    assert_eq!(m.xid, 0, "dhcpd's first xid on a connection is 0");
    assert_eq!(
        opts(&m),
        [
            FailoverOption::RelationshipName(&b"pair"[..]),
            FailoverOption::MaxUnackedBndupd(10),
            FailoverOption::ReceiveTimer(30),
            FailoverOption::VendorClass(&b"isc-4.4.3-P1"[..]),
            FailoverOption::ProtocolVersion(1),
            FailoverOption::TlsRequest(0),
            FailoverOption::Mclt(60),
            FailoverOption::HashBucketAssignment(SPLIT_128),
        ]
    );
}

#[test]
fn golden_connectack_echoes_the_xid_and_refusals_say_why() {
    let connect = golden("connect.hex");
    let m = golden("connectack.hex");
    assert_eq!(m.msg_type, MessageType::ConnectAck);
    assert_eq!(m.xid, connect.xid);
    assert_eq!(
        opts(&m),
        [
            FailoverOption::RelationshipName(&b"pair"[..]),
            FailoverOption::MaxUnackedBndupd(10),
            FailoverOption::ReceiveTimer(30),
            FailoverOption::VendorClass(&b"isc-4.4.3-P1"[..]),
            FailoverOption::ProtocolVersion(1),
            FailoverOption::TlsReply(0),
        ]
    );

    // An unknown relationship name: dhcpd echoes the name it got, has no timers to give.
    let m = golden("connectack-reject-name.hex");
    assert_eq!(m.xid, 7);
    assert_eq!(
        opts(&m),
        [
            FailoverOption::RelationshipName(&b"other"[..]),
            FailoverOption::VendorClass(&b"isc-4.4.3-P1"[..]),
            FailoverOption::ProtocolVersion(1),
            FailoverOption::TlsReply(0),
            FailoverOption::RejectReason(RejectReason::InvalidPartner),
            FailoverOption::Message(&b"unknown failover relationship name"[..]),
        ]
    );
    // A clock two minutes off, or no HBA: the relationship is known, so dhcpd's own
    // parameters come too, then the reason and its words.
    for (name, reason, text) in [
        (
            "connectack-reject-time.hex",
            RejectReason::TimeMismatch,
            &b"time offset too large"[..],
        ),
        (
            "connectack-reject-hba.hex",
            RejectReason::HbaConflict,
            &b"invalid HBA"[..],
        ),
    ] {
        let m = golden(name);
        assert_eq!(m.xid, 7, "{name}");
        assert_eq!(
            opts(&m),
            [
                FailoverOption::RelationshipName(&b"pair"[..]),
                FailoverOption::MaxUnackedBndupd(10),
                FailoverOption::ReceiveTimer(30),
                FailoverOption::VendorClass(&b"isc-4.4.3-P1"[..]),
                FailoverOption::ProtocolVersion(1),
                FailoverOption::TlsReply(0),
                FailoverOption::RejectReason(reason),
                FailoverOption::Message(text),
            ],
            "{name}"
        );
    }
}

#[test]
fn golden_state_messages() {
    // In startup dhcpd sends the state it will return to, with the STARTUP flag.
    let m = golden("state-startup.hex");
    assert_eq!(m.msg_type, MessageType::State);
    let [FailoverOption::ServerState(ServerState::Recover), FailoverOption::ServerFlags(server_flags::STARTUP), FailoverOption::StartTimeOfState(stos)] =
        opts(&m)[..]
    else {
        panic!("{m:?}")
    };
    assert!(stos <= m.time && m.time - stos < 60, "{m:?}");
    let m = golden("state-normal.hex");
    assert!(matches!(
        opts(&m)[..],
        [
            FailoverOption::ServerState(ServerState::Normal),
            FailoverOption::ServerFlags(0),
            FailoverOption::StartTimeOfState(_)
        ]
    ));
}

#[test]
fn golden_bare_messages_are_a_header_alone() {
    for (name, t) in [
        ("updreqall.hex", MessageType::UpdReqAll),
        ("upddone.hex", MessageType::UpdDone),
        ("contact.hex", MessageType::Contact),
        ("poolreq.hex", MessageType::PoolReq),
        ("updreq.hex", MessageType::UpdReq),
    ] {
        let m = golden(name);
        assert_eq!(m.msg_type, t, "{name}");
        assert!(m.options.is_empty(), "{name}");
        assert_eq!(fixture(name).len(), HEADER_LEN, "{name}");
    }
}

#[test]
fn golden_bndupd_free_backup_active_and_their_acks() {
    // A lease never used: free, every time zero.
    let m = golden("bndupd-free.hex");
    assert_eq!(m.msg_type, MessageType::BndUpd);
    let [FailoverOption::AssignedIpAddress(ip), FailoverOption::BindingStatus(BindingStatus::Free), FailoverOption::LeaseExpirationTime(0), FailoverOption::PotentialExpirationTime(0), FailoverOption::StartTimeOfState(0)] =
        opts(&m)[..]
    else {
        panic!("{m:?}")
    };
    assert!(in_pool(ip), "{ip}");

    // The primary gives half its free leases to the secondary: backup.
    let m = golden("bndupd-backup.hex");
    let [FailoverOption::AssignedIpAddress(_), FailoverOption::BindingStatus(BindingStatus::Backup), FailoverOption::LeaseExpirationTime(0), FailoverOption::PotentialExpirationTime(tstp), FailoverOption::StartTimeOfState(starts)] =
        opts(&m)[..]
    else {
        panic!("{m:?}")
    };
    assert_eq!((tstp, starts), (m.time, m.time));

    // A client's lease: hardware type then MAC, its identifier, the times.
    let m = golden("bndupd-active.hex");
    let o = opts(&m);
    assert!(matches!(o[0], FailoverOption::AssignedIpAddress(ip) if in_pool(ip)));
    assert_eq!(o[1], FailoverOption::BindingStatus(BindingStatus::Active));
    let FailoverOption::ClientIdentifier(id) = o[2] else {
        panic!("{o:?}")
    };
    assert_eq!(id[..3], [0, b'f', b'o']);
    let FailoverOption::ClientHardwareAddress(chaddr) = o[3] else {
        panic!("{o:?}")
    };
    assert_eq!(
        (chaddr[0], chaddr.len()),
        (1, 7),
        "htype 1 (Ethernet), 6 octets"
    );
    let [FailoverOption::LeaseExpirationTime(ends), FailoverOption::PotentialExpirationTime(tstp), FailoverOption::StartTimeOfState(starts), FailoverOption::ClientLastTransactionTime(cltt)] =
        o[4..]
    else {
        panic!("{o:?}")
    };
    // The first lease to a client is limited to MCLT (60 s) until the partner knows;
    // the potential expiry asks for the configured 600 s plus half the MCLT.
    assert_eq!((ends - starts, tstp - starts, cltt), (60, 630, starts));

    // After the client's DHCPRELEASE: RELEASED, both times set to the release, the
    // start time of state and the last transaction still those of the lease.
    let rel = golden("bndupd-released.hex");
    let r = opts(&rel);
    assert_eq!(
        [&r[0], &r[2], &r[3]],
        [&o[0], &o[2], &o[3]],
        "same address, client identifier and hardware address"
    );
    assert_eq!(r[1], FailoverOption::BindingStatus(BindingStatus::Released));
    assert_eq!(
        r[4..],
        [
            FailoverOption::LeaseExpirationTime(rel.time),
            FailoverOption::PotentialExpirationTime(rel.time),
            FailoverOption::StartTimeOfState(starts),
            FailoverOption::ClientLastTransactionTime(cltt),
        ]
    );

    let ack = golden("bndack.hex");
    assert_eq!(ack.msg_type, MessageType::BndAck);
    assert_eq!(ack.xid, m.xid, "the BNDACK answers the BNDUPD's xid");
    assert_eq!(
        opts(&ack),
        [o[0].clone()],
        "only the address, no reason: accepted"
    );

    let m = golden("bndack-reject.hex");
    let [FailoverOption::AssignedIpAddress(_), FailoverOption::RejectReason(RejectReason::LessCriticalBindInfo), FailoverOption::Message(text)] =
        opts(&m)[..]
    else {
        panic!("{m:?}")
    };
    assert_eq!(
        text,
        b"incoming update is less critical than outgoing update"
    );
}

#[test]
fn golden_poolresp_and_disconnect() {
    let req = golden("poolreq-to-primary.hex");
    let m = golden("poolresp.hex");
    assert_eq!(m.msg_type, MessageType::PoolResp);
    assert_eq!(m.xid, req.xid);
    assert!(matches!(
        opts(&m)[..],
        [FailoverOption::AddressesTransferred(_)]
    ));

    let m = golden("disconnect.hex");
    assert_eq!(m.msg_type, MessageType::Disconnect);
    assert_eq!(
        opts(&m),
        [
            FailoverOption::RejectReason(RejectReason::InvalidPartner),
            FailoverOption::Message(&b"remote failover relationship name other does not match"[..]),
        ]
    );
}

/// The whole streams of a real pair, each direction: split by the framing helper,
/// every message decodes and re-encodes, in the order the exchange needs.
#[test]
fn golden_streams_split_and_decode_whole() {
    for (name, first) in [
        ("stream-primary.hex", MessageType::Connect),
        ("stream-secondary.hex", MessageType::ConnectAck),
    ] {
        let stream = fixture(name);
        let mut rest = &stream[..];
        let mut types = Vec::new();
        while let Some((one, tail)) = split_frame(rest).unwrap() {
            let m = Message::decode(one).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.to_bytes().unwrap(), one);
            types.push(m.msg_type);
            rest = tail;
        }
        assert!(rest.is_empty(), "{name}: {} octets left over", rest.len());
        assert_eq!(types[0], first, "{name}");
        for t in [
            MessageType::State,
            MessageType::UpdReqAll,
            MessageType::UpdDone,
            MessageType::BndUpd,
            MessageType::BndAck,
            MessageType::Contact,
        ] {
            assert!(types.contains(&t), "{name}: no {t}");
        }
    }
}

/// Cut anywhere, a real stream never yields a wrong message: the framing waits for the
/// rest, and a corrupted length field is refused rather than misread.
#[test]
fn golden_stream_cut_anywhere() {
    let stream = fixture("stream-primary.hex");
    for cut in 0..stream.len().min(400) {
        let mut rest = &stream[..cut];
        while let Some((one, tail)) = split_frame(rest).unwrap() {
            Message::decode(one).unwrap();
            rest = tail;
        }
    }
    let mut bad = stream.clone();
    bad[0] = 0x09;
    assert_eq!(
        split_frame(&bad),
        Err(Error::BadLength(u16::from_be_bytes([0x09, bad[1]])))
    );
}

fn in_pool(ip: Ipv4Addr) -> bool {
    (Ipv4Addr::new(198, 18, 1, 10)..=Ipv4Addr::new(198, 18, 1, 29)).contains(&ip)
}

// ---------------------------------------------------------------------------------
// The lab: three namespaces, dhcpd, a packet capture, fake peers.
// ---------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        || Path::new("/usr/sbin").join(program).is_file()
}

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// Primary and secondary namespaces joined by the failover veth (198.51.100.0/24), and
/// a client namespace whose bridge reaches both servers' client interfaces
/// (198.18.0.0/15). Everything is removed on drop.
struct PairLab {
    p: String,
    s: String,
    c: String,
    /// The failover veth's end in the primary's namespace.
    fo_p: String,
    cl_p: String,
    cl_s: String,
    cli: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl PairLab {
    fn new(test: &str) -> Option<PairLab> {
        if !is_root() || Command::new("ip").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: needs root and iproute2, which CI must have"
            );
            eprintln!("{test}: skipped: needs root and network namespaces");
            return None;
        }
        if !on_path("dhcpd") {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: ISC dhcpd is not installed: run `cargo xtask setup` (as root) first"
            );
            eprintln!("{test}: skipped: ISC dhcpd is not installed (Debian isc-dhcp-server)");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let lab = PairLab {
            p: format!("fot-{id}-p"),
            s: format!("fot-{id}-s"),
            c: format!("fot-{id}-c"),
            fo_p: format!("fo{id}p"),
            cl_p: format!("fo{id}cp"),
            cl_s: format!("fo{id}cs"),
            cli: format!("fo{id}cl"),
            dir: std::env::temp_dir().join(format!("failover-wire-{test}-{id}")),
            children: Vec::new(),
        };
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).unwrap();
        let ip = |args: &[&str]| {
            run(Command::new("ip").args(args));
        };
        for ns in [&lab.p, &lab.s, &lab.c] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let fo_s = format!("fo{id}s");
        let (br_p, br_s, br_c) = (
            format!("fo{id}bp"),
            format!("fo{id}bs"),
            format!("fo{id}bc"),
        );
        let veth = |a: &str, ans: &str, b: &str, bns: &str| {
            ip(&[
                "link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns", bns,
            ]);
        };
        veth(&lab.fo_p, &lab.p, &fo_s, &lab.s);
        veth(&lab.cl_p, &lab.p, &br_p, &lab.c);
        veth(&lab.cl_s, &lab.s, &br_s, &lab.c);
        veth(&lab.cli, &lab.c, &br_c, &lab.c);
        ip(&["-n", &lab.c, "link", "add", "br0", "type", "bridge"]);
        for port in [&br_p, &br_s, &br_c] {
            ip(&["-n", &lab.c, "link", "set", port, "master", "br0"]);
            ip(&["-n", &lab.c, "link", "set", port, "up"]);
        }
        for (ns, dev, addr) in [
            (&lab.p, &lab.fo_p, "198.51.100.1/24"),
            (&lab.s, &fo_s, "198.51.100.2/24"),
            (&lab.p, &lab.cl_p, "198.18.0.1/15"),
            (&lab.s, &lab.cl_s, "198.18.0.2/15"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", &lab.c, "link", "set", "br0", "up"]);
        ip(&["-n", &lab.c, "link", "set", &lab.cli, "up"]);
        Some(lab)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts dhcpd in the primary's or the secondary's namespace; its log is
    /// `primary.log` or `secondary.log`. Returns the pid.
    fn start_dhcpd(&mut self, primary: bool, extra: &str) -> u32 {
        self.start_dhcpd_balanced(primary, "split 128;", extra)
    }

    /// `start_dhcpd` with the primary's load balancing statement (`split` or `hba`).
    fn start_dhcpd_balanced(&mut self, primary: bool, balance: &str, extra: &str) -> u32 {
        let role = if primary { "primary" } else { "secondary" };
        let (ns, iface) = if primary {
            (self.p.clone(), self.cl_p.clone())
        } else {
            (self.s.clone(), self.cl_s.clone())
        };
        let conf = self.path(&format!("{role}.conf"));
        fs::write(&conf, dhcpd_conf(primary, balance, extra)).unwrap();
        let leases = self.path(&format!("{role}.leases"));
        fs::write(&leases, "").unwrap();
        let log = fs::File::create(self.path(&format!("{role}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "dhcpd", "-4", "-d", "-cf"])
            .arg(&conf)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(self.path(&format!("{role}.pid")))
            .arg(&iface)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start dhcpd");
        let pid = child.id();
        self.children.push(child);
        self.wait_log(role, "Server starting service.", 20);
        pid
    }

    fn log(&self, role: &str) -> String {
        fs::read_to_string(self.path(&format!("{role}.log"))).unwrap_or_default()
    }

    fn wait_log(&self, role: &str, needle: &str, secs: u64) -> String {
        wait_for_file(
            &self.path(&format!("{role}.log")),
            needle,
            Duration::from_secs(secs),
        )
    }

    /// SIGTERM, then a bounded wait for the exit.
    fn stop(&mut self, pid: u32) {
        let Some(child) = self.children.iter_mut().find(|c| c.id() == pid) else {
            return;
        };
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// dhclient once in the client namespace with client identifier `id`: lease, then
    /// it stays in the background until `release`.
    fn dhclient(&self, name: &str, id: &[u8]) {
        let conf = self.path(&format!("{name}.conf"));
        let hex: Vec<String> = id.iter().map(|b| format!("{b:02x}")).collect();
        fs::write(
            &conf,
            format!("send dhcp-client-identifier {};\n", hex.join(":")),
        )
        .unwrap();
        let script = self.path("noscript");
        // The stock script would rewrite the host's resolv.conf: never run it. This one
        // only puts the address on the interface, so the RELEASE can be unicast.
        fs::write(
            &script,
            "#!/bin/sh\ncase \"$reason\" in BOUND) ip addr replace \"$new_ip_address/15\" dev \"$interface\" ;; esac\nexit 0\n",
        )
        .unwrap();
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let leases = self.path(&format!("{name}.leases"));
        fs::write(&leases, "").unwrap();
        run(Command::new("ip")
            .args(["netns", "exec", &self.c, "timeout", "30", "dhclient"])
            .args([
                "-4",
                "-1",
                "-cf",
                conf.to_str().unwrap(),
                "-lf",
                leases.to_str().unwrap(),
                "-pf",
                self.path(&format!("{name}.pid")).to_str().unwrap(),
                "-sf",
                script.to_str().unwrap(),
                &self.cli,
            ]));
    }

    /// Releases the lease of a `dhclient` run and stops it.
    fn release(&self, name: &str) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.c, "timeout", "20", "dhclient", "-r"])
            .args([
                "-cf",
                self.path(&format!("{name}.conf")).to_str().unwrap(),
                "-lf",
                self.path(&format!("{name}.leases")).to_str().unwrap(),
                "-pf",
                self.path(&format!("{name}.pid")).to_str().unwrap(),
                "-sf",
                self.path("noscript").to_str().unwrap(),
                &self.cli,
            ])
            .output();
    }
}

impl Drop for PairLab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // dhclient keeps running in the background after its lease: stop what is left.
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with("-client.pid") {
                continue;
            }
            if let Ok(pid) = fs::read_to_string(entry.path()) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: kill(2) on a dhclient this lab started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for ns in [&self.p, &self.s, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// dhcpd.conf as docs/failover-wire.md and FAILOVER.md give it, with a 20-address pool.
fn dhcpd_conf(primary: bool, balance: &str, extra: &str) -> String {
    let (role, me, peer, only_primary) = if primary {
        (
            "primary",
            PRIMARY,
            SECONDARY,
            format!(" mclt 60; {balance}"),
        )
    } else {
        ("secondary", SECONDARY, PRIMARY, String::new())
    };
    format!(
        "authoritative;\n\
         default-lease-time 600; max-lease-time 600;\n\
         failover peer \"pair\" {{\n\
         \x20 {role};\n\
         \x20 address {me}; port {PORT};\n\
         \x20 peer address {peer}; peer port {PORT};\n\
         \x20 max-response-delay 30; max-unacked-updates 10;\n\
         \x20 load balance max seconds 3;{only_primary}{extra}\n\
         }}\n\
         subnet 198.18.0.0 netmask 255.254.0.0 {{\n\
         \x20 pool {{ failover peer \"pair\"; range 198.18.1.10 198.18.1.29; }}\n\
         }}\n"
    )
}

/// Moves the calling thread into a namespace; sockets it opens afterwards live there.
fn enter_netns(ns: &str) {
    let f = fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on an open namespace file; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread inside namespace `ns` and returns its result (its panic too).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// --- capture -------------------------------------------------------------------------

/// Every frame on one interface, both directions, through an AF_PACKET socket, until
/// stopped.
/// Frames with the time they arrived since the capture started.
type Frames = Arc<Mutex<Vec<(Duration, Vec<u8>)>>>;

struct Capture {
    frames: Frames,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    fn start(ns: &str, iface: &str) -> Capture {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, iface) = (ns.to_string(), iface.to_string());
        let (f, s) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the descriptor is closed below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let name = CString::new(iface).unwrap();
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex > 0);
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: bind(2) with a sockaddr_ll of its own size.
            let r = unsafe {
                libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: setsockopt(2) with a timeval of its own size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            ready_tx.send(()).unwrap();
            let start = Instant::now();
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::SeqCst) {
                // SAFETY: recv(2) into a buffer of the length given.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    f.lock()
                        .unwrap()
                        .push((start.elapsed(), buf[..n as usize].to_vec()));
                }
            }
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(fd) };
        });
        ready_rx.recv().unwrap();
        Capture {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// What was captured so far, reassembled.
    fn events(&self) -> Vec<Event> {
        reassemble(&self.frames.lock().unwrap())
    }

    fn finish(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.events()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Primary,
    Secondary,
}

#[derive(Debug, Clone)]
enum What {
    Syn,
    SynAck,
    Fin,
    Rst,
    /// A whole failover message, completed by this segment.
    Msg(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Event {
    at: Duration,
    from: Side,
    /// The TCP port of the side that opened the connection (tells connections apart).
    conn: u16,
    what: What,
}

#[derive(Default)]
struct Flow {
    isn: Option<u32>,
    data: Vec<u8>,
    /// Octets of `data` already cut into messages.
    used: usize,
    pending: BTreeMap<usize, Vec<u8>>,
}

/// TCP streams on port 647 out of Ethernet frames, cut into failover messages.
fn reassemble(frames: &[(Duration, Vec<u8>)]) -> Vec<Event> {
    let mut flows: BTreeMap<(Ipv4Addr, u16, Ipv4Addr, u16), Flow> = BTreeMap::new();
    let mut out = Vec::new();
    for (at, f) in frames {
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 6 || ip.len() < total || total < ihl + 20 {
            continue;
        }
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let tcp = &ip[ihl..total];
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        if sport != PORT && dport != PORT {
            continue;
        }
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        let from = if src == PRIMARY {
            Side::Primary
        } else {
            Side::Secondary
        };
        let conn = if sport == PORT { dport } else { sport };
        let ev = |what| Event {
            at: *at,
            from,
            conn,
            what,
        };
        let flow = flows.entry((src, sport, dst, dport)).or_default();
        if flags & 0x02 != 0 {
            *flow = Flow {
                isn: Some(seq),
                ..Flow::default()
            };
            out.push(ev(if flags & 0x10 != 0 {
                What::SynAck
            } else {
                What::Syn
            }));
        }
        let payload = &tcp[doff.min(tcp.len())..];
        if let (Some(isn), false) = (flow.isn, payload.is_empty()) {
            let rel = seq.wrapping_sub(isn).wrapping_sub(1) as usize;
            flow.pending.insert(rel, payload.to_vec());
            while let Some((&rel, _)) = flow.pending.first_key_value() {
                if rel > flow.data.len() {
                    break;
                }
                let seg = flow.pending.remove(&rel).unwrap();
                let skip = flow.data.len() - rel;
                if skip < seg.len() {
                    flow.data.extend_from_slice(&seg[skip..]);
                }
            }
            while let Ok(Some((one, _))) = split_frame(&flow.data[flow.used..]) {
                let one = one.to_vec();
                flow.used += one.len();
                out.push(ev(What::Msg(one)));
            }
        }
        if flags & 0x01 != 0 {
            out.push(ev(What::Fin));
        }
        if flags & 0x04 != 0 {
            out.push(ev(What::Rst));
        }
    }
    out
}

/// One line per message: who, what, header, options typed.
fn describe(m: &Message) -> String {
    let mut s = format!("{} xid={} time={}", m.msg_type, m.xid, m.time);
    for o in &m.options {
        let _ = write!(s, " {}", describe_option(&o.as_borrowed(), m.time));
    }
    s
}

fn describe_option(o: &FailoverOption<&[u8]>, time: u32) -> String {
    let rel = |t: u32| {
        if t == 0 {
            "0".to_string()
        } else {
            format!("T{:+}", i64::from(t) - i64::from(time))
        }
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match o {
        FailoverOption::AddressesTransferred(n) => format!("addresses-transferred={n}"),
        FailoverOption::AssignedIpAddress(a) => format!("assigned-IP-address={a}"),
        FailoverOption::BindingStatus(b) => format!("binding-status={b}"),
        FailoverOption::ClientIdentifier(b) => format!("client-identifier={}", hex(b)),
        FailoverOption::ClientHardwareAddress(b) => format!("chaddr={}", hex(b)),
        FailoverOption::ClientLastTransactionTime(t) => format!("cltt={}", rel(*t)),
        FailoverOption::HashBucketAssignment(h) => format!("hba={}", hex(h)),
        FailoverOption::LeaseExpirationTime(t) => format!("lease-expiration={}", rel(*t)),
        FailoverOption::PotentialExpirationTime(t) => format!("potential-expiration={}", rel(*t)),
        FailoverOption::StartTimeOfState(t) => format!("stos={}", rel(*t)),
        FailoverOption::MaxUnackedBndupd(n) => format!("max-unacked-bndupd={n}"),
        FailoverOption::Mclt(n) => format!("mclt={n}"),
        FailoverOption::ReceiveTimer(n) => format!("receive-timer={n}"),
        FailoverOption::ProtocolVersion(n) => format!("protocol-version={n}"),
        FailoverOption::TlsRequest(n) => format!("tls-request={n}"),
        FailoverOption::TlsReply(n) => format!("tls-reply={n}"),
        FailoverOption::ServerFlags(n) => format!("server-flags={n}"),
        FailoverOption::ServerState(s) => format!("server-state={s}"),
        FailoverOption::RejectReason(r) => format!("reject-reason={}", u8::from(*r)),
        FailoverOption::RelationshipName(b) => {
            format!("relationship-name={:?}", String::from_utf8_lossy(b))
        }
        FailoverOption::VendorClass(b) => format!("vendor-class={:?}", String::from_utf8_lossy(b)),
        FailoverOption::Message(b) => format!("message={:?}", String::from_utf8_lossy(b)),
        other => format!("{other:?}"),
    }
}

/// Writes a fixture when FAILOVER_WIRE_FIXTURES names a directory.
fn save_fixture(name: &str, comment: &str, bytes: &[u8]) {
    let Some(dir) = std::env::var_os("FAILOVER_WIRE_FIXTURES") else {
        return;
    };
    let mut text = String::new();
    for line in comment.lines() {
        let _ = writeln!(text, "# {line}");
    }
    for chunk in bytes.chunks(32) {
        let _ = writeln!(
            text,
            "{}",
            chunk.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
    fs::create_dir_all(&dir).unwrap();
    fs::write(Path::new(&dir).join(name), text).unwrap();
}

fn decode(bytes: &[u8]) -> Message {
    let m = Message::decode(bytes)
        .unwrap_or_else(|e| panic!("dhcpd sent what we cannot read: {e}: {bytes:02x?}"));
    assert_eq!(m.to_bytes().unwrap(), bytes, "re-encodes byte for byte");
    m
}

// --- the real pair ----------------------------------------------------------------

/// A client identifier whose RFC 3074 hash lands in the primary's half (`low`) or the
/// secondary's half of `split 128`.
fn client_id(low: bool) -> Vec<u8> {
    (0u8..=255)
        .map(|n| vec![0, b'f', b'o', n])
        .find(|id| (dhcp_ebpf_common::loadb_hash(id) < 128) == low)
        .unwrap()
}

#[test]
fn real_pair_connect_sync_balance_update_and_keepalive() {
    let Some(mut lab) = PairLab::new("pair") else {
        return;
    };
    let capture = Capture::start(&lab.p, &lab.fo_p);
    let wall = now();
    // The secondary first: its connection to the primary is refused, then the primary
    // connects to it.
    let secondary = lab.start_dhcpd(false, "");
    std::thread::sleep(Duration::from_millis(500));
    let primary = lab.start_dhcpd(true, "");
    lab.wait_log("primary", "Both servers normal", 30);
    lab.wait_log("secondary", "Both servers normal", 30);
    // The primary's pool balancing (BNDUPD backup) must be acknowledged before the
    // secondary can serve its half.
    lab.wait_log("primary", "balanced pool", 10);
    std::thread::sleep(Duration::from_secs(2));

    // Two clients, one in each server's half of the buckets.
    let (lo, hi) = (client_id(true), client_id(false));
    lab.dhclient("lo-client", &lo);
    lab.dhclient("hi-client", &hi);
    std::thread::sleep(Duration::from_secs(3));
    lab.release("lo-client");
    lab.release("hi-client");

    // Keepalives: each side sends CONTACT after max-response-delay / 3 = 10 s of
    // sending nothing else.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let ev = capture.events();
        let contacts = |who| {
            ev.iter()
                .filter(|e| e.from == who)
                .filter(|e| matches!(&e.what, What::Msg(b) if decode(b).msg_type == MessageType::Contact))
                .count()
        };
        if contacts(Side::Primary) >= 2 && contacts(Side::Secondary) >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no keepalives");
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.stop(primary);
    lab.wait_log("secondary", "peer pair: disconnected", 10);
    std::thread::sleep(Duration::from_millis(300));
    let events = capture.finish();
    let plog = lab.log("primary");
    let slog = lab.log("secondary");
    lab.stop(secondary);

    // The transcript.
    let mut transcript = String::new();
    for e in &events {
        let who = match e.from {
            Side::Primary => "P",
            Side::Secondary => "S",
        };
        let what = match &e.what {
            What::Msg(b) => describe(&decode(b)),
            other => format!("{other:?}"),
        };
        let _ = writeln!(
            transcript,
            "{:7.3} {who} conn:{} {what}",
            e.at.as_secs_f64(),
            e.conn
        );
    }
    eprintln!("{transcript}");

    let msgs: Vec<(Duration, Side, Message, Vec<u8>)> = events
        .iter()
        .filter_map(|e| match &e.what {
            What::Msg(b) => Some((e.at, e.from, decode(b), b.clone())),
            _ => None,
        })
        .collect();
    let sent = |who: Side, t: MessageType| -> Vec<&(Duration, Side, Message, Vec<u8>)> {
        msgs.iter()
            .filter(|(_, f, m, _)| *f == who && m.msg_type == t)
            .collect()
    };

    // Every message carries the sender's clock, seconds since 1970.
    for (_, _, m, _) in &msgs {
        assert!(m.time >= wall && m.time <= now() + 1, "{m:?}");
    }
    // Only one connection carries messages, and the primary speaks first: CONNECT.
    let conns: std::collections::BTreeSet<u16> = events
        .iter()
        .filter(|e| matches!(e.what, What::Msg(_)))
        .map(|e| e.conn)
        .collect();
    assert_eq!(conns.len(), 1, "{transcript}");
    let (_, first_from, connect, connect_bytes) = &msgs[0];
    assert_eq!(
        (*first_from, connect.msg_type),
        (Side::Primary, MessageType::Connect)
    );
    assert_eq!(
        connect.option(code::HASH_BUCKET_ASSIGNMENT),
        Some(&FailoverOption::HashBucketAssignment(SPLIT_128))
    );
    assert_eq!(connect.option(code::MCLT), Some(&FailoverOption::Mclt(60)));
    let (_, second_from, ack, ack_bytes) = &msgs[1];
    assert_eq!(
        (*second_from, ack.msg_type, ack.xid),
        (Side::Secondary, MessageType::ConnectAck, connect.xid)
    );
    assert!(ack.option(code::REJECT_REASON).is_none());

    // Both announce their state with the STARTUP flag first, both end normal.
    for who in [Side::Primary, Side::Secondary] {
        let states: Vec<(ServerState, u8)> = sent(who, MessageType::State)
            .iter()
            .map(|(_, _, m, _)| {
                let s = match m.option(code::SERVER_STATE) {
                    Some(FailoverOption::ServerState(s)) => *s,
                    other => panic!("{other:?}"),
                };
                let f = match m.option(code::SERVER_FLAGS) {
                    Some(FailoverOption::ServerFlags(f)) => *f,
                    other => panic!("{other:?}"),
                };
                (s, f)
            })
            .collect();
        assert_eq!(
            states[0],
            (ServerState::Recover, server_flags::STARTUP),
            "{who:?}"
        );
        assert!(
            states.contains(&(ServerState::RecoverDone, 0)),
            "{who:?}: {states:?}"
        );
        assert_eq!(*states.last().unwrap(), (ServerState::Normal, 0), "{who:?}");
        // Each asks for everything and gets an UPDDONE echoing one of its requests.
        let asked: Vec<u32> = sent(who, MessageType::UpdReqAll)
            .iter()
            .map(|(_, _, m, _)| m.xid)
            .collect();
        let other = if who == Side::Primary {
            Side::Secondary
        } else {
            Side::Primary
        };
        let done = sent(other, MessageType::UpdDone);
        assert_eq!(done.len(), 1, "{transcript}");
        assert!(asked.contains(&done[0].2.xid), "{transcript}");
    }

    // Every BNDUPD is answered by one BNDACK from the other side: same xid, same address.
    for (_, who, upd, _) in msgs
        .iter()
        .filter(|(_, _, m, _)| m.msg_type == MessageType::BndUpd)
    {
        let acks: Vec<_> = msgs
            .iter()
            .filter(|(_, f, m, _)| {
                f != who && m.msg_type == MessageType::BndAck && m.xid == upd.xid
            })
            .collect();
        assert_eq!(acks.len(), 1, "BNDUPD {upd:?}\n{transcript}");
        assert_eq!(
            acks[0].2.option(code::ASSIGNED_IP_ADDRESS),
            upd.option(code::ASSIGNED_IP_ADDRESS)
        );
    }

    // Pool balancing: the primary moves half its free addresses to BACKUP.
    let backups = msgs
        .iter()
        .filter(|(_, f, m, _)| {
            *f == Side::Primary
                && m.option(code::BINDING_STATUS)
                    == Some(&FailoverOption::BindingStatus(BindingStatus::Backup))
        })
        .count();
    assert!(backups >= 10, "{transcript}");

    // Load balancing: each client got its lease from the server its bucket names, and
    // that server told the other with an ACTIVE BNDUPD carrying the identifier.
    for (id, server) in [(&lo, Side::Primary), (&hi, Side::Secondary)] {
        let active = msgs.iter().find(|(_, f, m, _)| {
            m.option(code::BINDING_STATUS)
                == Some(&FailoverOption::BindingStatus(BindingStatus::Active))
                && m.option(code::CLIENT_IDENTIFIER)
                    == Some(&FailoverOption::ClientIdentifier(id.clone()))
                && *f == server
        });
        assert!(
            active.is_some(),
            "client {id:02x?} (bucket {}) not served by {server:?}\n{transcript}",
            dhcp_ebpf_common::loadb_hash(id)
        );
    }
    assert!(plog.contains("load balance to peer pair"), "{plog}");
    // Each RELEASE: the server holding the lease tells the other, RELEASED.
    for server in [Side::Primary, Side::Secondary] {
        assert!(
            !sent(server, MessageType::BndUpd)
                .iter()
                .filter(|(_, _, m, _)| m.option(code::BINDING_STATUS)
                    == Some(&FailoverOption::BindingStatus(BindingStatus::Released)))
                .collect::<Vec<_>>()
                .is_empty(),
            "{server:?} sent no RELEASED update\n{transcript}"
        );
    }
    assert!(slog.contains("load balance to peer pair"), "{slog}");

    // Keepalives 10 s apart (max-response-delay 30 / 3), without options.
    for who in [Side::Primary, Side::Secondary] {
        let at: Vec<Duration> = sent(who, MessageType::Contact)
            .iter()
            .map(|(t, _, m, _)| {
                assert!(m.options.is_empty());
                *t
            })
            .collect();
        let gap = (at[1] - at[0]).as_secs_f64();
        assert!((9.0..=11.5).contains(&gap), "{who:?}: {gap}");
    }
    // dhcpd sends no DISCONNECT when it stops: the connection just closes.
    assert!(sent(Side::Primary, MessageType::Disconnect).is_empty());
    assert!(events
        .iter()
        .any(|e| e.from == Side::Primary && matches!(e.what, What::Fin)));

    // Fixtures.
    let first = |who, t, pred: &dyn Fn(&Message) -> bool| {
        msgs.iter()
            .find(|(_, f, m, _)| *f == who && m.msg_type == t && pred(m))
            .map(|(_, _, _, b)| b.clone())
            .unwrap_or_else(|| panic!("no {t} from {who:?}"))
    };
    let any = |_: &Message| true;
    let status = |s: BindingStatus| {
        move |m: &Message| m.option(code::BINDING_STATUS) == Some(&FailoverOption::BindingStatus(s))
    };
    let from_pair = "captured between two dhcpd 4.4.3 (Debian isc-dhcp-server) in a test lab";
    save_fixture(
        "connect.hex",
        &format!("CONNECT, primary to secondary, {from_pair}"),
        connect_bytes,
    );
    save_fixture(
        "connectack.hex",
        &format!("CONNECTACK, secondary to primary, {from_pair}"),
        ack_bytes,
    );
    save_fixture(
        "state-startup.hex",
        &format!("STATE recover with the STARTUP flag, secondary to primary, {from_pair}"),
        &first(Side::Secondary, MessageType::State, &any),
    );
    save_fixture(
        "state-normal.hex",
        &format!("STATE normal, primary to secondary, {from_pair}"),
        &first(Side::Primary, MessageType::State, &|m| {
            m.option(code::SERVER_STATE) == Some(&FailoverOption::ServerState(ServerState::Normal))
        }),
    );
    save_fixture(
        "updreqall.hex",
        &format!("UPDREQALL, primary to secondary, {from_pair}"),
        &first(Side::Primary, MessageType::UpdReqAll, &any),
    );
    save_fixture(
        "upddone.hex",
        &format!("UPDDONE, secondary to primary, {from_pair}"),
        &first(Side::Secondary, MessageType::UpdDone, &any),
    );
    save_fixture(
        "bndupd-free.hex",
        &format!(
            "BNDUPD of a never-used free lease, secondary to primary (full update), {from_pair}"
        ),
        &first(
            Side::Secondary,
            MessageType::BndUpd,
            &status(BindingStatus::Free),
        ),
    );
    save_fixture(
        "bndupd-backup.hex",
        &format!("BNDUPD giving a free lease to the secondary (pool balance), primary to secondary, {from_pair}"),
        &first(Side::Primary, MessageType::BndUpd, &status(BindingStatus::Backup)),
    );
    let active = first(
        Side::Primary,
        MessageType::BndUpd,
        &status(BindingStatus::Active),
    );
    let active_xid = decode(&active).xid;
    save_fixture(
        "bndupd-active.hex",
        &format!("BNDUPD of a client's new lease (dhclient with a client identifier), primary to secondary, {from_pair}"),
        &active,
    );
    save_fixture(
        "bndupd-released.hex",
        &format!("BNDUPD after the client's DHCPRELEASE, primary to secondary, {from_pair}"),
        &first(
            Side::Primary,
            MessageType::BndUpd,
            &status(BindingStatus::Released),
        ),
    );
    save_fixture(
        "bndack.hex",
        &format!("BNDACK accepting bndupd-active.hex, secondary to primary, {from_pair}"),
        &first(Side::Secondary, MessageType::BndAck, &|m| {
            m.xid == active_xid
        }),
    );
    save_fixture(
        "bndack-reject.hex",
        &format!("BNDACK refusing a free-lease BNDUPD that crossed the receiver's own (both full updates at once), {from_pair}"),
        &first(Side::Primary, MessageType::BndAck, &|m| m.option(code::REJECT_REASON).is_some()),
    );
    save_fixture(
        "contact.hex",
        &format!("CONTACT (keepalive), primary to secondary, {from_pair}"),
        &first(Side::Primary, MessageType::Contact, &any),
    );
    for (name, who) in [
        ("stream-primary.hex", Side::Primary),
        ("stream-secondary.hex", Side::Secondary),
    ] {
        let stream: Vec<u8> = msgs
            .iter()
            .filter(|(_, f, _, _)| *f == who)
            .flat_map(|(_, _, _, b)| b.iter().copied())
            .collect();
        save_fixture(
            name,
            &format!(
                "Everything the {} sent on the connection, start to stop, {from_pair}",
                if who == Side::Primary {
                    "primary"
                } else {
                    "secondary"
                }
            ),
            &stream,
        );
    }
}

// --- fake peers ---------------------------------------------------------------------

/// One failover connection driven by the test, every message through our codec.
struct Peer {
    stream: TcpStream,
    inbox: Vec<u8>,
    xid: u32,
    transcript: String,
}

impl Peer {
    fn new(stream: TcpStream) -> Peer {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Peer {
            stream,
            inbox: Vec::new(),
            xid: 0,
            transcript: String::new(),
        }
    }

    fn connect(local: Ipv4Addr, to: Ipv4Addr) -> Peer {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect_from(local, to) {
                Ok(s) => return Peer::new(s),
                Err(e) => {
                    assert!(Instant::now() < deadline, "connect to {to}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }

    fn send(&mut self, m: &Message) {
        let bytes = m.to_bytes().unwrap();
        let _ = writeln!(self.transcript, "  test  -> {}", describe(m));
        self.stream.write_all(&bytes).unwrap();
    }

    /// The next message's octets, or None when the connection closed or `secs` passed.
    fn recv(&mut self, secs: u64) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((one, _)) = split_frame(&self.inbox).unwrap() {
                let one = one.to_vec();
                self.inbox.drain(..one.len());
                let _ = writeln!(self.transcript, "  dhcpd -> {}", describe(&decode(&one)));
                return Some(one);
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    let _ = writeln!(self.transcript, "  dhcpd closed the connection");
                    return None;
                }
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    let _ = writeln!(self.transcript, "  connection error: {e}");
                    return None;
                }
            }
        }
    }

    /// Receives until a message of type `t` comes (answering full-update requests and
    /// bindings as a partner must); its octets.
    fn until(&mut self, t: MessageType, secs: u64) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let Some(bytes) = self.recv(1) else {
                continue;
            };
            let m = decode(&bytes);
            if m.msg_type == t {
                return bytes;
            }
            self.answer(&m);
        }
        panic!("no {t} from dhcpd:\n{}", self.transcript)
    }

    /// What a partner owes: UPDDONE for an update request (we hold no bindings), a
    /// BNDACK for a BNDUPD, a POOLRESP for a POOLREQ.
    fn answer(&mut self, m: &Message) {
        let reply = |t| Message::new(t, now(), m.xid);
        match m.msg_type {
            MessageType::UpdReqAll | MessageType::UpdReq => {
                self.send(&reply(MessageType::UpdDone));
            }
            MessageType::BndUpd => {
                let ip = m.option(code::ASSIGNED_IP_ADDRESS).cloned().unwrap();
                self.send(&reply(MessageType::BndAck).with(ip));
            }
            MessageType::PoolReq => {
                self.send(
                    &reply(MessageType::PoolResp).with(FailoverOption::AddressesTransferred(0)),
                );
            }
            _ => {}
        }
    }

    fn state(&mut self, s: ServerState, flags: u8, stos: u32) {
        let xid = self.next_xid();
        self.send(
            &Message::new(MessageType::State, now(), xid)
                .with(FailoverOption::ServerState(s))
                .with(FailoverOption::ServerFlags(flags))
                .with(FailoverOption::StartTimeOfState(stos)),
        );
    }
}

/// A TCP connection from `local` (port chosen by the kernel) to `to`:647.
fn connect_from(local: Ipv4Addr, to: Ipv4Addr) -> std::io::Result<TcpStream> {
    // SAFETY: socket(2); ownership passes to the TcpStream below or is closed on error.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    let l = sin(local, 0);
    // SAFETY: bind(2)/connect(2) with sockaddr_in values of the size given.
    if unsafe { libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let r = sin(to, PORT);
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

fn connect_msg(name: &[u8], time: u32, hba: bool) -> Message {
    let mut m = Message::new(MessageType::Connect, time, 7)
        .with_ref(FailoverOption::RelationshipName(name))
        .with(FailoverOption::MaxUnackedBndupd(10))
        .with(FailoverOption::ReceiveTimer(30))
        .with_ref(FailoverOption::VendorClass(b"dhcp-server-test"))
        .with(FailoverOption::ProtocolVersion(1))
        .with(FailoverOption::TlsRequest(0))
        .with(FailoverOption::Mclt(60));
    if hba {
        m = m.with(FailoverOption::HashBucketAssignment(SPLIT_128));
    }
    m
}

/// The real secondary refuses our CONNECTs that dhcpd would refuse, and accepts ours
/// otherwise: then, the whole way to normal, it asks us for addresses (POOLREQ) since
/// we gave it none.
#[test]
fn fake_primary_refused_then_accepted_up_to_the_secondarys_poolreq() {
    let Some(mut lab) = PairLab::new("fake-primary") else {
        return;
    };
    // Rebalance within seconds, so the POOLREQ comes quickly.
    lab.start_dhcpd(false, "\n  min-balance 1; max-balance 2;");
    let transcript = in_netns(&lab.p.clone(), move || {
        let mut out = String::new();
        let mut fixtures = Vec::new();
        let refusals = [
            (
                "unknown name",
                connect_msg(b"other", now(), true),
                RejectReason::InvalidPartner,
                "connectack-reject-name.hex",
            ),
            (
                "clock two minutes slow",
                connect_msg(b"pair", now() - 120, true),
                RejectReason::TimeMismatch,
                "connectack-reject-time.hex",
            ),
            (
                "no hash bucket assignment",
                connect_msg(b"pair", now(), false),
                RejectReason::HbaConflict,
                "connectack-reject-hba.hex",
            ),
        ];
        for (why, connect, reason, fixture) in refusals {
            let _ = writeln!(out, "CONNECT with {why}:");
            let mut peer = Peer::connect(PRIMARY, SECONDARY);
            peer.send(&connect);
            let bytes = peer
                .recv(5)
                .unwrap_or_else(|| panic!("{}", peer.transcript));
            let ack = decode(&bytes);
            assert_eq!((ack.msg_type, ack.xid), (MessageType::ConnectAck, 7));
            assert_eq!(
                ack.option(code::REJECT_REASON),
                Some(&FailoverOption::RejectReason(reason)),
                "{why}"
            );
            assert!(peer.recv(3).is_none(), "dhcpd closes after refusing");
            fixtures.push((
                fixture,
                format!("CONNECTACK refusing a CONNECT with {why}"),
                bytes,
            ));
            out.push_str(&peer.transcript);
        }

        let _ = writeln!(out, "CONNECT accepted:");
        let mut peer = Peer::connect(PRIMARY, SECONDARY);
        let started = now();
        peer.send(&connect_msg(b"pair", now(), true));
        let ack = decode(&peer.until(MessageType::ConnectAck, 5));
        assert!(
            ack.option(code::REJECT_REASON).is_none(),
            "{}",
            peer.transcript
        );
        // As dhcpd's primary does: recover, ask for everything, recover-done once the
        // secondary's UPDDONE comes, normal once it is recover-done.
        peer.state(ServerState::Recover, 0, started);
        let xid = peer.next_xid();
        peer.send(&Message::new(MessageType::UpdReqAll, now(), xid));
        let done = decode(&peer.until(MessageType::UpdDone, 10));
        assert_eq!(done.xid, xid);
        peer.state(ServerState::RecoverDone, 0, now());
        loop {
            let m = decode(&peer.until(MessageType::State, 10));
            if m.option(code::SERVER_STATE)
                == Some(&FailoverOption::ServerState(ServerState::Normal))
            {
                break;
            }
        }
        peer.state(ServerState::Normal, 0, now());
        let poolreq = peer.until(MessageType::PoolReq, 20);
        let req = decode(&poolreq);
        assert!(req.options.is_empty());
        peer.answer(&req);
        fixtures.push((
            "poolreq.hex",
            "POOLREQ from a secondary with no BACKUP addresses (min-balance 1, max-balance 2)"
                .into(),
            poolreq,
        ));
        out.push_str(&peer.transcript);
        (out, fixtures)
    });
    let (text, fixtures) = transcript;
    eprintln!("{text}");
    let slog = lab.log("secondary");
    assert!(
        slog.contains("Failover CONNECT from other: unknown failover relationship name"),
        "{slog}"
    );
    assert!(
        slog.contains("Failover CONNECT from pair: time offset too large"),
        "{slog}"
    );
    assert!(
        slog.contains("Failover CONNECT from pair: invalid HBA"),
        "{slog}"
    );
    for (name, comment, bytes) in fixtures {
        save_fixture(
            name,
            &format!("{comment}, from a real dhcpd 4.4.3 secondary to the test acting as primary"),
            &bytes,
        );
    }
}

/// The real primary connects to the test acting as secondary, three times: a
/// CONNECTACK refusing it makes dhcpd close without a word; a CONNECTACK with the
/// wrong relationship name earns a DISCONNECT; an accepted one followed by our STATE
/// normal while dhcpd recovers puts it in potential-conflict, where it sends UPDREQ,
/// and our POOLREQ gets its POOLRESP. dhcpd reconnects 5 seconds after each close.
#[test]
fn fake_secondary_refuses_then_mismatches_then_conflicts() {
    let Some(mut lab) = PairLab::new("fake-secondary") else {
        return;
    };
    let listener = in_netns(&lab.s.clone(), || {
        std::net::TcpListener::bind(SocketAddrV4::new(SECONDARY, PORT)).unwrap()
    });
    lab.start_dhcpd(true, "");
    let accept = |listener: &std::net::TcpListener| {
        let (s, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), std::net::IpAddr::V4(PRIMARY));
        Peer::new(s)
    };
    let connectack = |connect: &Message, name: &[u8]| {
        Message::new(MessageType::ConnectAck, now(), connect.xid)
            .with_ref(FailoverOption::RelationshipName(name))
            .with(FailoverOption::MaxUnackedBndupd(10))
            .with(FailoverOption::ReceiveTimer(30))
            .with_ref(FailoverOption::VendorClass(b"dhcp-server-test"))
            .with(FailoverOption::ProtocolVersion(1))
            .with(FailoverOption::TlsReply(0))
    };
    let mut out = String::new();
    let mut gaps = Vec::new();

    out.push_str("CONNECTACK refusing (time mismatch):\n");
    let mut peer = accept(&listener);
    let connect = decode(&peer.until(MessageType::Connect, 10));
    peer.send(
        &connectack(&connect, b"pair")
            .with(FailoverOption::RejectReason(RejectReason::TimeMismatch))
            .with_ref(FailoverOption::Message(b"time offset too large")),
    );
    assert!(peer.recv(3).is_none(), "dhcpd closes, sending nothing");
    out.push_str(&peer.transcript);

    out.push_str("CONNECTACK with the wrong name:\n");
    let closed = Instant::now();
    let mut peer = accept(&listener);
    gaps.push(closed.elapsed());
    let connect = decode(&peer.until(MessageType::Connect, 10));
    peer.send(&connectack(&connect, b"other"));
    let disconnect = peer.until(MessageType::Disconnect, 5);
    assert!(peer.recv(3).is_none(), "dhcpd closes after DISCONNECT");
    out.push_str(&peer.transcript);

    out.push_str("CONNECTACK accepted, STATE normal, POOLREQ:\n");
    let closed = Instant::now();
    let mut peer = accept(&listener);
    gaps.push(closed.elapsed());
    let connect = decode(&peer.until(MessageType::Connect, 10));
    peer.send(&connectack(&connect, b"pair"));
    peer.state(ServerState::Normal, 0, now() - 100);
    let updreq = peer.until(MessageType::UpdReq, 10);
    let m = decode(&updreq);
    assert!(m.options.is_empty());
    peer.send(&Message::new(MessageType::UpdDone, now(), m.xid));
    let xid = peer.next_xid();
    let poolreq = Message::new(MessageType::PoolReq, now(), xid);
    peer.send(&poolreq);
    let poolresp = peer.until(MessageType::PoolResp, 10);
    assert_eq!(decode(&poolresp).xid, xid);
    // Give dhcpd a moment to say its state after the UPDDONE.
    while peer.recv(2).is_some() {}
    out.push_str(&peer.transcript);
    eprintln!("{out}");

    let plog = lab.log("primary");
    assert!(
        plog.contains(
            "Failover CONNECT to pair rejected: Connection rejected, time mismatch too great."
        ),
        "{plog}"
    );
    assert!(
        plog.contains(
            "Failover CONNECTACK from pair: remote failover relationship name other does not match"
        ),
        "{plog}"
    );
    assert!(
        plog.contains("I move from startup to potential-conflict"),
        "{plog}"
    );
    // dhcpd tries again 5 seconds after a connection ends.
    for gap in gaps {
        assert!((3.0..8.0).contains(&gap.as_secs_f64()), "{gap:?}");
    }
    let d = decode(&disconnect);
    assert_eq!(
        d.option(code::REJECT_REASON),
        Some(&FailoverOption::RejectReason(RejectReason::InvalidPartner))
    );
    let by = "from a real dhcpd 4.4.3 primary to the test acting as secondary";
    save_fixture(
        "disconnect.hex",
        &format!("DISCONNECT after a CONNECTACK with the wrong relationship name, {by}"),
        &disconnect,
    );
    save_fixture(
        "updreq.hex",
        &format!(
            "UPDREQ sent on entering potential-conflict (recovering primary, partner normal), {by}"
        ),
        &updreq,
    );
    save_fixture(
        "poolreq-to-primary.hex",
        "POOLREQ written by our codec (the test acting as secondary), answered by poolresp.hex",
        &poolreq.to_bytes().unwrap(),
    );
    save_fixture(
        "poolresp.hex",
        &format!("POOLRESP answering poolreq-to-primary.hex while not normal, {by}"),
        &poolresp,
    );
}

/// Which bit of the hash bucket assignment is which bucket: with every octet 0x55 the
/// primary owns bucket b when bit (b & 7) of octet b >> 3 is set, counting from the
/// least significant bit, so the even buckets. A client of an even bucket and one of
/// an odd bucket must each be served by the server the HBA names, the hash computed
/// by our RFC 3074 code.
#[test]
fn real_pair_hba_bits_count_from_the_least_significant() {
    let Some(mut lab) = PairLab::new("hba-bits") else {
        return;
    };
    let hba = vec!["55"; 32].join(":");
    lab.start_dhcpd(false, "");
    lab.start_dhcpd_balanced(true, &format!("hba {hba};"), "");
    lab.wait_log("primary", "Both servers normal", 30);
    lab.wait_log("secondary", "Both servers normal", 30);
    lab.wait_log("primary", "balanced pool", 10);
    std::thread::sleep(Duration::from_secs(2));
    let pick = |even: bool| {
        (0u8..=255)
            .map(|n| vec![0, b'h', b'b', n])
            .find(|id| dhcp_ebpf_common::loadb_hash(id).is_multiple_of(2) == even)
            .unwrap()
    };
    let acks = |role: &str| {
        lab.log(role)
            .lines()
            .filter(|l| l.contains("DHCPACK on"))
            .count()
    };
    for (name, id, server, expect) in [
        ("even-client", pick(true), "primary", (1, 0)),
        ("odd-client", pick(false), "secondary", (1, 1)),
    ] {
        lab.dhclient(name, &id);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            (acks("primary"), acks("secondary")),
            expect,
            "{name} (bucket {}) not acked by the {server} alone:\n{}\n{}",
            dhcp_ebpf_common::loadb_hash(&id),
            lab.log("primary"),
            lab.log("secondary")
        );
        let other = if server == "primary" {
            "secondary"
        } else {
            "primary"
        };
        assert!(
            lab.log(other).contains("load balance to peer pair"),
            "{}",
            lab.log(other)
        );
        lab.release(name);
    }
}
