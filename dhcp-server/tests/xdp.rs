//! The XDP backend as an operator meets it: the machine stays reachable while the program
//! is attached, nothing stays attached once the server is gone (even after kill -9), and
//! the AF_XDP path answers a recorded exchange exactly as the kernel UDP path does. The
//! lease exchanges themselves run on both backends in `clients.rs`. Needs root; see
//! `common`.

#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{one_liner, Backend, Lab};
use dhcp_proto::wire::frame::{self, Addressing, HEADROOM};
use dhcp_server::packet::PacketSocket;
use dhcproto::v4;
use dhcproto::{Decodable, Encodable};

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn server_lab(test: &str, backend: Backend) -> Option<(Lab, common::Server)> {
    let mut lab = Lab::new(test, "192.0.2.1/24")?;
    let iface = lab.server_if.clone();
    let mut args = one_liner(&iface, "192.0.2.0/24", "192.0.2.10-192.0.2.200", backend);
    args.extend_from_slice(&["--router", "192.0.2.1"]);
    let server = lab.start_server(&args);
    Some((lab, server))
}

/// Whether an XDP program is attached to the server's interface.
fn attached(lab: &Lab) -> bool {
    let out = Lab::cmd(&lab.server_ns, "ip")
        .args(["-d", "link", "show", "dev", &lab.server_if])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn wait_detached(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while attached(lab) {
        assert!(Instant::now() < deadline, "the XDP program stayed attached");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` on a thread inside namespace `ns`; sockets it opens live there.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: setns on an open namespace file; it affects only this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn ping_and_tcp_to_the_server_work_while_attached() {
    let Some((lab, _server)) = server_lab("xdp-pass", Backend::Xdp) else {
        return;
    };
    assert!(attached(&lab));
    lab.in_client(
        "ip",
        &["addr", "add", "192.0.2.2/24", "dev", &lab.client_if],
    );
    lab.in_client("ping", &["-c", "3", "-i", "0.2", "-W", "2", "192.0.2.1"]);
    let listener = in_netns(&lab.server_ns, || TcpListener::bind((SERVER, 647)).unwrap());
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let got = in_netns(&lab.client_ns, || {
        let mut s = TcpStream::connect_timeout(&(SERVER, 647).into(), Duration::from_secs(3))
            .expect("TCP to the failover port while XDP is attached");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    echo.join().unwrap();
    assert_eq!(&got, b"hello");
}

#[test]
fn a_multi_queue_device_gets_a_socket_per_queue_and_worker() {
    let Some(mut lab) = Lab::with_queues("xdp-queues", "198.18.0.1/15", 4) else {
        return;
    };
    let iface = lab.server_if.clone();
    let server = lab.start_server(&one_liner(
        &iface,
        "198.18.0.0/15",
        "198.18.1.0-198.18.255.250",
        Backend::Xdp,
    ));
    assert!(
        server.log_text().contains("4 queues x 2 workers"),
        "{}",
        server.log_text()
    );
    lab.in_client(
        "ip",
        &["addr", "add", "198.18.0.2/15", "dev", &lab.client_if],
    );
    let text = common::perfdhcp_dora(&lab, 200, 1000, 15, &[]);
    let acks = common::perf_stats(&text, "REQUEST-ACK");
    assert_eq!((acks.sent, acks.received), (1000, 1000), "{text}");
    let status = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(status.success(), "{status:?}");
    Backend::Xdp.check_every_worker_served(&server.log_text());
}

#[test]
fn a_worker_that_runs_dry_borrows_from_the_other() {
    let Some(mut lab) = Lab::new("xdp-borrow", "198.18.0.1/15") else {
        return;
    };
    // 40 addresses split 20/20 between two workers, 38 clients split by their hash: one
    // worker gets more clients than addresses and must borrow for all to be served.
    let iface = lab.server_if.clone();
    let server = lab.start_server(&one_liner(
        &iface,
        "198.18.0.0/15",
        "198.18.1.1-198.18.1.40",
        Backend::Xdp,
    ));
    lab.in_client(
        "ip",
        &["addr", "add", "198.18.0.2/15", "dev", &lab.client_if],
    );
    let text = common::perfdhcp_dora(&lab, 20, 38, 10, &[]);
    let acks = common::perf_stats(&text, "REQUEST-ACK");
    assert_eq!(acks.received, 38, "{text}\n{}", server.log_text());
    assert!(text.contains("non unique addresses: 0"), "{text}");
    let status = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = server.log_text();
    let served: Vec<u64> = (0..2)
        .map(|w| {
            log.lines()
                .find_map(|l| l.split(&format!("worker {w}: ")).nth(1))
                .and_then(|r| r.split(' ').next()?.parse().ok())
                .unwrap()
        })
        .collect();
    assert!(
        served.iter().any(|&n| n > 2 * 20),
        "no worker served more clients than its 20 addresses (each client sends two requests): {served:?}"
    );
}

#[test]
fn nothing_stays_attached_after_sigterm_or_kill_9() {
    let Some((mut lab, server)) = server_lab("xdp-detach", Backend::Xdp) else {
        return;
    };
    assert!(attached(&lab));
    let status = lab.stop(server.pid).expect("no exit within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    wait_detached(&lab);

    let iface = lab.server_if.clone();
    let server = lab.start_server(&one_liner(
        &iface,
        "192.0.2.0/24",
        "192.0.2.10-192.0.2.200",
        Backend::Xdp,
    ));
    assert!(attached(&lab));
    // SAFETY: kill(2) on the server we started.
    unsafe { libc::kill(server.pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.alive(server.pid) {
        assert!(Instant::now() < deadline, "kill -9 did not end the server");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_detached(&lab);
}

const CLIENT_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0];

fn mac(n: u8) -> [u8; 6] {
    let mut m = CLIENT_MAC;
    m[5] = n;
    m
}

/// One request of the recorded exchange, as dhcproto builds it.
fn message(n: u8, kind: v4::MessageType, ciaddr: Ipv4Addr, opts: &[v4::DhcpOption]) -> Vec<u8> {
    let mut m = v4::Message::default();
    m.set_opcode(v4::Opcode::BootRequest)
        .set_xid(0x5eed_0000 + u32::from(n))
        .set_chaddr(&mac(n))
        .set_ciaddr(ciaddr);
    m.opts_mut().insert(v4::DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o.clone());
    }
    m.to_vec().unwrap()
}

/// The recorded exchange: every kind of request and answer the server has, from
/// several clients, plus a frame that must get no answer.
fn exchange() -> Vec<(u8, Vec<u8>, Ipv4Addr, Ipv4Addr)> {
    use v4::{DhcpOption as O, MessageType as T};
    let none = Ipv4Addr::UNSPECIFIED;
    let bcast = Ipv4Addr::BROADCAST;
    let informer = Ipv4Addr::new(192, 0, 2, 220);
    vec![
        (1, message(1, T::Discover, none, &[]), none, bcast),
        (
            1,
            message(
                1,
                T::Request,
                none,
                &[
                    O::ServerIdentifier(SERVER),
                    O::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 10)),
                ],
            ),
            none,
            bcast,
        ),
        (
            2,
            message(
                2,
                T::Discover,
                none,
                &[O::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 77))],
            ),
            none,
            bcast,
        ),
        (
            3,
            message(
                3,
                T::Request,
                none,
                &[O::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 150))],
            ),
            none,
            bcast,
        ),
        (
            4,
            message(
                4,
                T::Request,
                none,
                &[O::RequestedIpAddress(Ipv4Addr::new(203, 0, 113, 5))],
            ),
            none,
            bcast,
        ),
        (5, message(5, T::Inform, informer, &[]), informer, SERVER),
        (
            1,
            message(
                1,
                T::Release,
                Ipv4Addr::new(192, 0, 2, 10),
                &[O::ServerIdentifier(SERVER)],
            ),
            Ipv4Addr::new(192, 0, 2, 10),
            SERVER,
        ),
        (1, message(1, T::Discover, none, &[]), none, bcast),
        (6, vec![1, 1, 6, 0, 0xde, 0xad], none, bcast),
    ]
}

/// Where a reply went: the Ethernet destination by role (the veths' MACs differ from lab
/// to lab), the IP source and destination, the UDP port.
type Place = (String, Ipv4Addr, Ipv4Addr, u16);

/// What a reply was: where it went and the DHCP message, decoded so that a field that
/// differs is named in the failure.
type Seen = (Place, v4::Message);

/// Sends the exchange from the client namespace and collects every reply, in order.
fn record(lab: &Lab) -> Vec<Vec<Seen>> {
    let iface = lab.client_if.clone();
    let server_mac = if_mac(&lab.server_ns, &lab.server_if);
    // A client with an address sends from its interface, whose MAC the kernel's ARP
    // finds; one without sends from its chaddr, as dhclient's packet socket does.
    let client_mac = if_mac(&lab.client_ns, &lab.client_if);
    in_netns(&lab.client_ns, move || {
        let sock = PacketSocket::open(&iface).unwrap();
        let mut replies = Vec::new();
        for (n, payload, src, dst) in exchange() {
            let mut buf = vec![0u8; HEADROOM + payload.len()];
            buf[HEADROOM..].copy_from_slice(&payload);
            let a = Addressing {
                dst_mac: if dst.is_broadcast() {
                    [0xff; 6]
                } else {
                    server_mac
                },
                src_mac: if src.is_unspecified() {
                    mac(n)
                } else {
                    client_mac
                },
                src_ip: src,
                dst_ip: dst,
                src_port: 68,
                dst_port: 67,
                vlan: None,
            };
            let len = frame::write_udp(&mut buf, &a, payload.len());
            sock.send_one(&buf[..len]).unwrap();
            replies.push(collect(&sock, |m| {
                if m == [0xff; 6] {
                    "broadcast".into()
                } else if m == client_mac {
                    "client interface".into()
                } else if m[..5] == CLIENT_MAC[..5] {
                    format!("chaddr of client {}", m[5])
                } else {
                    format!("{m:02x?}")
                }
            }));
        }
        replies
    })
}

fn if_mac(ns: &str, ifname: &str) -> [u8; 6] {
    let out = Lab::cmd(ns, "cat")
        .arg(format!("/sys/class/net/{ifname}/address"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

/// Replies from the server seen within half a second.
fn collect(sock: &PacketSocket, role: impl Fn([u8; 6]) -> String) -> Vec<Seen> {
    let mut got = Vec::new();
    let mut bufs = vec![[0u8; dhcp_server::packet::FRAME]; 8];
    let mut lens = vec![0usize; 8];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let n = sock.recv(&mut bufs, &mut lens).unwrap_or(0);
        for (b, &l) in bufs.iter().zip(&lens).take(n) {
            let Some(udp) = frame::parse_udp(&b[..l]) else {
                continue;
            };
            if udp.addr.src_port == 67 {
                let a = udp.addr;
                got.push((
                    (role(a.dst_mac), a.src_ip, a.dst_ip, a.dst_port),
                    v4::Message::decode(&mut v4::Decoder::new(udp.payload)).unwrap(),
                ));
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    got
}

#[test]
fn xdp_and_udp_answer_a_recorded_exchange_identically() {
    let mut runs = Vec::new();
    for backend in [Backend::Udp, Backend::XdpOneWorker] {
        let Some((lab, _server)) = server_lab("xdp-same", backend) else {
            return;
        };
        // The INFORM's sender must answer ARP for its address when the kernel sends to it.
        lab.in_client(
            "ip",
            &["addr", "add", "192.0.2.220/24", "dev", &lab.client_if],
        );
        runs.push(record(&lab));
    }
    let (udp, xdp) = (&runs[0], &runs[1]);
    let kinds: Vec<usize> = udp.iter().map(Vec::len).collect();
    assert_eq!(kinds, [1, 1, 1, 1, 1, 1, 0, 1, 0], "udp replies: {udp:#?}");
    for (i, (u, x)) in udp.iter().zip(xdp).enumerate() {
        assert_eq!(u.len(), x.len(), "request {i}: udp {u:#?}\nxdp {x:#?}");
        for ((ua, um), (xa, xm)) in u.iter().zip(x) {
            assert_eq!(um, xm, "request {i}: the DHCP replies differ");
            assert_eq!(ua, xa, "request {i}: the replies went to different places");
        }
    }
}
