//! kill -9 under load, twenty times: every lease a client saw acknowledged must still be
//! its lease when the server comes back (asked with an INIT-REBOOT REQUEST, which a server
//! that lost the lease would refuse). Runs the XDP backend with two workers and `sync`
//! durability, the defaults an operator gets. Needs root; see `common`.

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{one_liner, Backend, Lab};
use dhcp_proto::wire::frame::{self, Addressing, HEADROOM};
use dhcp_server::packet::{PacketSocket, FRAME};
use dhcproto::v4::{self, DhcpOption, MessageType};
use dhcproto::{Decodable, Encodable};

const ROUNDS: u32 = 20;
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Client `n`'s hardware address; its transaction ids are `n` too.
fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0xcc, b[0], b[1], b[2], b[3]]
}

fn frame_of(n: u32, kind: MessageType, opts: &[DhcpOption]) -> Vec<u8> {
    let mut m = v4::Message::default();
    m.set_opcode(v4::Opcode::BootRequest)
        .set_xid(n)
        .set_chaddr(&mac(n));
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o.clone());
    }
    let payload = m.to_vec().unwrap();
    let mut buf = vec![0u8; HEADROOM + payload.len()];
    buf[HEADROOM..].copy_from_slice(&payload);
    let a = Addressing {
        dst_mac: [0xff; 6],
        src_mac: mac(n),
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 68,
        dst_port: 67,
        vlan: None,
    };
    let len = frame::write_udp(&mut buf, &a, payload.len());
    buf.truncate(len);
    buf
}

/// Every reply in the socket now: (xid, type, yiaddr).
fn replies(sock: &PacketSocket) -> Vec<(u32, MessageType, Ipv4Addr)> {
    let mut bufs = vec![[0u8; FRAME]; 32];
    let mut lens = vec![0usize; 32];
    let mut got = Vec::new();
    while let Ok(n) = sock.recv(&mut bufs, &mut lens) {
        if n == 0 {
            break;
        }
        for (b, &l) in bufs.iter().zip(&lens).take(n) {
            let Some(udp) = frame::parse_udp(&b[..l]).filter(|u| u.addr.src_port == 67) else {
                continue;
            };
            let Ok(m) = v4::Message::decode(&mut v4::Decoder::new(udp.payload)) else {
                continue;
            };
            if let Some(DhcpOption::MessageType(t)) = m.opts().get(v4::OptionCode::MessageType) {
                got.push((m.xid(), *t, m.yiaddr()));
            }
        }
    }
    got
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on an open namespace file; it affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// New clients doing DORA at about 2,000 a second until `stop`; returns the ACKs seen.
fn load(ns: String, ifname: String, first: u32, stop: Arc<AtomicBool>) -> HashMap<u32, Ipv4Addr> {
    enter(&ns);
    let sock = PacketSocket::open(&ifname).unwrap();
    let mut acked = HashMap::new();
    let mut next = first;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..4 {
            let _ = sock.send_one(&frame_of(next, MessageType::Discover, &[]));
            next += 1;
        }
        for (xid, kind, yiaddr) in replies(&sock) {
            match kind {
                MessageType::Offer => {
                    let opts = [
                        DhcpOption::RequestedIpAddress(yiaddr),
                        DhcpOption::ServerIdentifier(SERVER),
                    ];
                    let _ = sock.send_one(&frame_of(xid, MessageType::Request, &opts));
                }
                MessageType::Ack => {
                    acked.insert(xid, yiaddr);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // ACKs already on the wire when the server died still count: the client saw them.
    std::thread::sleep(Duration::from_millis(50));
    for (xid, kind, yiaddr) in replies(&sock) {
        if kind == MessageType::Ack {
            acked.insert(xid, yiaddr);
        }
    }
    acked
}

/// Asks the server, client by client (INIT-REBOOT), whether each lease is still theirs;
/// returns those not confirmed.
fn unconfirmed(ns: String, ifname: String, leases: Vec<(u32, Ipv4Addr)>) -> Vec<String> {
    enter(&ns);
    let sock = PacketSocket::open(&ifname).unwrap();
    let mut missing = Vec::new();
    for chunk in leases.chunks(64) {
        let mut waiting: HashMap<u32, Ipv4Addr> = chunk.iter().copied().collect();
        for attempt in 0..3 {
            for (&n, &addr) in &waiting {
                let opts = [DhcpOption::RequestedIpAddress(addr)];
                let _ = sock.send_one(&frame_of(n, MessageType::Request, &opts));
            }
            let deadline = Instant::now() + Duration::from_millis(300 * (attempt + 1));
            while !waiting.is_empty() && Instant::now() < deadline {
                for (xid, kind, yiaddr) in replies(&sock) {
                    if let Some(&addr) = waiting.get(&xid) {
                        if kind == MessageType::Ack && yiaddr == addr {
                            waiting.remove(&xid);
                        } else if kind == MessageType::Nak {
                            missing.push(format!("client {xid}: {addr} refused"));
                            waiting.remove(&xid);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        missing.extend(
            waiting
                .iter()
                .map(|(n, a)| format!("client {n}: {a} unanswered")),
        );
    }
    missing
}

#[test]
fn every_acknowledged_lease_survives_kill_9_under_load() {
    let Some(mut lab) = Lab::new("crash", "198.18.0.1/15") else {
        return;
    };
    let state = lab.path("state");
    let (iface, client_ns, client_if) = (
        lab.server_if.clone(),
        lab.client_ns.clone(),
        lab.client_if.clone(),
    );
    let mut args = one_liner(
        &iface,
        "198.18.0.0/15",
        "198.18.1.0-198.18.255.250",
        Backend::Xdp,
    );
    args.extend_from_slice(&["--state-dir", state.to_str().unwrap()]);
    let mut all: HashMap<u32, Ipv4Addr> = HashMap::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..ROUNDS {
        let server = lab.start_server(&args);
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (ns, ifc, stop) = (client_ns.clone(), client_if.clone(), stop.clone());
            std::thread::spawn(move || load(ns, ifc, 1 + round * 100_000, stop))
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 500));
        // SAFETY: kill(2) on the server this test started.
        unsafe { libc::kill(server.pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while lab.alive(server.pid) {
            assert!(Instant::now() < deadline, "kill -9 did not end the server");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
        let acked = load.join().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: no lease was acknowledged"
        );
        all.extend(acked);
    }
    let server = lab.start_server(&args);
    let leases: Vec<(u32, Ipv4Addr)> = all.iter().map(|(&n, &a)| (n, a)).collect();
    let total = leases.len();
    let missing = {
        let (ns, ifc) = (client_ns.clone(), client_if.clone());
        std::thread::spawn(move || unconfirmed(ns, ifc, leases))
            .join()
            .unwrap()
    };
    assert!(
        missing.is_empty(),
        "{} of {total} acknowledged leases lost after {ROUNDS} kill -9 rounds: {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        server.log_text()
    );
    assert!(total >= 1000, "only {total} leases acknowledged in all");
}
