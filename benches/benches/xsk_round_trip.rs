//! The AF_XDP path's round trip, without a lease engine: a DISCOVER frame sent from a
//! packet socket in one namespace crosses a veth, the XDP program steers it to an AF_XDP
//! socket, a thread turns it straight around in place (the addresses swapped) and the
//! sender receives it. One frame in flight at a time, so the figure is latency: p50, p99
//! and p99.9 of 20,000 round trips. Needs root (namespaces, XDP); otherwise says so.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcp_benches::{discover, Shape};
use dhcp_proto::wire::frame::{self, Addressing, HEADROOM};
use dhcp_server::packet::{PacketSocket, FRAME};
use dhcp_server::xdp::program::SteerProgram;
use dhcp_server::xdp::xsk;
use hdrhistogram::Histogram;

const ROUND_TRIPS: u64 = 20_000;
const NS_A: &str = "xskrt-a";
const NS_B: &str = "xskrt-b";
const IF_A: &str = "xskrt0";
const IF_B: &str = "xskrt1";

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on an open namespace file; it affects only this thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

/// Sends the frame back where it came from: MACs, addresses and ports swapped.
fn turn_around(req: &[u8], out: &mut [u8]) -> Option<xsk::Out> {
    let udp = frame::parse_udp(req)?;
    let a = udp.addr;
    let headroom = a.headroom();
    out[headroom..headroom + udp.payload.len()].copy_from_slice(udp.payload);
    let back = Addressing {
        dst_mac: a.src_mac,
        src_mac: a.dst_mac,
        src_ip: Ipv4Addr::new(198, 18, 0, 1),
        dst_ip: a.src_ip,
        src_port: a.dst_port,
        dst_port: a.src_port,
        vlan: a.vlan,
    };
    let len = frame::write_udp(out, &back, udp.payload.len());
    Some(xsk::Out { len, after: 0 })
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xsk_round_trip: skipped: needs root for namespaces and XDP");
        return;
    }
    for ns in [NS_A, NS_B] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        ip(&["netns", "add", ns]);
    }
    ip(&[
        "link", "add", IF_A, "netns", NS_A, "type", "veth", "peer", "name", IF_B, "netns", NS_B,
    ]);
    ip(&["-n", NS_A, "link", "set", IF_A, "up"]);
    ip(&["-n", NS_B, "link", "set", IF_B, "up"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            enter(NS_A);
            let ifindex = dhcp_server::netif::index(IF_A).unwrap();
            let mut program = SteerProgram::attach(IF_A, 1, 1).unwrap();
            let (mut sockets, _) = xsk::open(IF_A, ifindex, 1, 1).unwrap();
            let mut socket = sockets.remove(0).remove(0);
            program.register(0, 0, socket.fd()).unwrap();
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                socket.pass(0, None, turn_around);
            }
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    enter(NS_B);
    let sock = PacketSocket::open(IF_B).unwrap();
    let mut req = vec![0u8; HEADROOM + 400];
    let len = discover(&mut req[HEADROOM..], 1, Shape::default());
    let a = Addressing {
        dst_mac: [0xff; 6],
        src_mac: dhcp_benches::mac(1),
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 68,
        dst_port: 67,
        vlan: None,
    };
    let len = frame::write_udp(&mut req, &a, len);
    let mut bufs = vec![[0u8; FRAME]; 4];
    let mut lens = vec![0usize; 4];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut lost = 0;
    for _ in 0..ROUND_TRIPS {
        let sent = Instant::now();
        sock.send_one(&req[..len]).unwrap();
        loop {
            let n = sock.recv(&mut bufs, &mut lens).unwrap_or(0);
            let back = (0..n).any(|i| {
                frame::parse_udp(&bufs[i][..lens[i]]).is_some_and(|u| u.addr.dst_port == 68)
            });
            if back {
                hist.saturating_record(sent.elapsed().as_nanos() as u64);
                break;
            }
            if sent.elapsed() > Duration::from_millis(100) {
                lost += 1;
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    for ns in [NS_A, NS_B] {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    println!(
        "AF_XDP round trip over veth, {} trips: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, {lost} lost",
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3,
    );
}
