//! The XDP steering program on the server side of a namespace lab's veth: the kernel's
//! own traffic (ARP, ICMP, TCP) still flows while it is attached, DHCP requests with no
//! worker socket yet and garbled frames to port 67 land in the right counters, each
//! request reaches the socket its RFC 3074 hash names (the kernel's hash is the host's), a
//! failover load-balancing rule drops the partner's DISCOVERs and SELECTING REQUESTs and
//! nothing else, flood limits drop a client's or a relay circuit's requests past their
//! burst and nobody else's, a second program is refused, and nothing stays attached
//! after a drop or a `kill -9`.
//! Needs root; see `common`.

// Shared by every test binary; this one uses only the lab.
#[allow(dead_code)]
mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{require, Lab};
use dhcp_ebpf_common::{client_key_hash, Balance};
use dhcp_server::config::Flood;
use dhcp_server::packet::PacketSocket;
use dhcp_server::xdp::program::{AttachMode, SteerProgram, XdpError};
use dhcp_server::{netif, xdp::xsk};

const SERVER: &str = "192.0.2.1";
const SERVER_CIDR: &str = "192.0.2.1/24";
const CLIENT_CIDR: &str = "192.0.2.2/24";
const DHCPDISCOVER: u8 = 1;
const DHCPREQUEST: u8 = 3;
const DHCPLEASEQUERY: u8 = 10;
/// Set in the re-executed test binary that attaches and waits to be killed.
const CHILD_ENV: &str = "DHCP_XDP_TEST_ATTACH_TO";

/// Runs `f` on a thread that has entered network namespace `ns`: interface names, the
/// attach and new sockets then refer to that namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).expect("namespace exists");
            // SAFETY: setns(2) on a descriptor we hold open; it changes this thread only.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace")
    })
}

fn attach(lab: &Lab, workers: u32, queues: u32) -> Result<SteerProgram, XdpError> {
    in_netns(&lab.server_ns, || {
        SteerProgram::attach(&lab.server_if, workers, queues)
    })
}

/// Whether `ip -d link show` reports an XDP program on the server's interface.
fn xdp_attached(lab: &Lab) -> bool {
    let out = lab.in_server("ip", &["-d", "link", "show", "dev", &lab.server_if]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("xdp")
}

fn wait_detached(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while xdp_attached(lab) {
        assert!(Instant::now() < deadline, "XDP program still attached");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An Ethernet frame carrying IPv4/UDP from the client to port 67, with an optional VLAN
/// tag; the IPv4 checksum is right, the UDP one absent (allowed over IPv4).
fn udp_frame(vlan: Option<u16>, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    if let Some(id) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// `frame` (untagged) with a 4-octet IPv4 option (NOPs), so IHL is 6. The checksum is
/// left stale: only the XDP program reads this frame's headers.
fn with_ip_options(mut frame: Vec<u8>) -> Vec<u8> {
    frame.splice(34..34, [1, 1, 1, 1]);
    frame[14] = 0x46;
    let total = u16::from_be_bytes([frame[16], frame[17]]) + 4;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame
}

/// A DHCPDISCOVER from `mac`, with `options` after message type 53.
fn discover(mac: [u8; 6], options: &[u8]) -> Vec<u8> {
    bootrequest(mac, DHCPDISCOVER, 0, options)
}

/// A BOOTREQUEST from `mac` of DHCP message type `kind` whose client has waited `secs`,
/// with `options` after message type 53.
fn bootrequest(mac: [u8; 6], kind: u8, secs: u16, options: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    m[8..10].copy_from_slice(&secs.to_be_bytes());
    m[10] = 0x80; // broadcast
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&[99, 130, 83, 99, 53, 1, kind]);
    m.extend_from_slice(options);
    m.push(255);
    m
}

fn send(lab: &Lab, frames: &[Vec<u8>]) {
    let socket = in_netns(&lab.client_ns, || PacketSocket::open(&lab.client_if))
        .expect("packet socket in the client namespace");
    for f in frames {
        socket.send_one(f).expect("send frame");
    }
}

/// Waits (bounded) until the counters satisfy `done`, returning the last reading.
fn counters_until(
    program: &SteerProgram,
    done: impl Fn(&dhcp_ebpf_common::Counters) -> bool,
) -> dhcp_ebpf_common::Counters {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = program.counters().expect("counters");
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kernel_traffic_passes_and_port_67_is_counted() {
    let Some(lab) = Lab::new("xdp_counters", SERVER_CIDR) else {
        return;
    };
    require("ping");
    lab.in_client("ip", &["addr", "add", CLIENT_CIDR, "dev", &lab.client_if]);
    let program = attach(&lab, 2, 1).expect("attach");
    assert_eq!(
        program.mode(),
        AttachMode::Driver,
        "veth runs XDP in the driver"
    );
    assert!(xdp_attached(&lab));

    // ARP and ICMP, then a TCP connection: all the kernel's.
    lab.in_client("ping", &["-c", "3", "-i", "0.2", "-W", "2", SERVER]);
    let listener = in_netns(&lab.server_ns, || TcpListener::bind((SERVER, 647)))
        .expect("listen in the server namespace");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
    });
    let mut conn = in_netns(&lab.client_ns, || TcpStream::connect((SERVER, 647)))
        .expect("TCP connect through the XDP program");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    conn.read_exact(&mut echo).expect("TCP echo");
    assert_eq!(&echo, b"hello");
    server.join().unwrap();
    let before = program.counters().expect("counters");
    assert!(before.passed >= 5, "ARP, ICMP and TCP counted: {before:?}");
    assert_eq!(
        (before.redirected, before.malformed, before.no_socket),
        (0, 0, 0)
    );

    // Requests, with no socket registered: counted and left to the kernel.
    let mac = [0x02, 0, 0, 0, 0, 0x10];
    let requests = vec![
        udp_frame(None, 67, &discover(mac, &[])),
        udp_frame(None, 67, &discover(mac, &[61, 7, 1, 2, 0, 0, 0, 0, 1])),
        udp_frame(
            Some(7),
            67,
            &discover(mac, &[0, 0, 12, 3, b'a', b'b', b'c']),
        ),
        // No END: the field runs to the end of the frame.
        udp_frame(None, 67, &discover(mac, &[])[..243]),
        with_ip_options(udp_frame(None, 67, &discover(mac, &[]))),
    ];
    // Port 67 but not a request we could steer: dropped.
    let mut reply = discover(mac, &[]);
    reply[0] = 2;
    let mut bad_cookie = discover(mac, &[]);
    bad_cookie[236] = 0;
    let mut big_hlen = discover(mac, &[]);
    big_hlen[2] = 17;
    let garbled = vec![
        udp_frame(None, 67, &discover(mac, &[])[..200]),
        udp_frame(None, 67, &reply),
        udp_frame(None, 67, &bad_cookie),
        udp_frame(None, 67, &big_hlen),
        // Option 61 says 20 octets; the frame ends two octets in.
        udp_frame(None, 67, &discover(mac, &[61, 20, 1, 2, 3])[..247]),
    ];
    // Other UDP, and a fragment (the kernel reassembles it): the kernel's.
    let mut fragment = udp_frame(None, 67, &discover(mac, &[]));
    fragment[20] = 0x20; // more fragments
    let other = vec![udp_frame(None, 68, &discover(mac, &[])), fragment];
    send(&lab, &requests);
    send(&lab, &garbled);
    send(&lab, &other);
    let after = counters_until(&program, |c| {
        c.no_socket >= 5 && c.malformed >= 5 && c.passed >= before.passed + 2
    });
    assert_eq!(after.no_socket, 5, "{after:?}");
    assert_eq!(after.malformed, 5, "{after:?}");
    assert_eq!(after.redirected, 0, "{after:?}");
    assert!(after.passed >= before.passed + 2, "{after:?}");
    assert_eq!(
        program.redirected_per_socket().expect("per socket"),
        vec![0, 0]
    );
}

#[test]
fn requests_reach_the_socket_of_their_hash() {
    let Some(lab) = Lab::new("xdp_steer", SERVER_CIDR) else {
        return;
    };
    const WORKERS: usize = 4;
    let mut program = attach(&lab, WORKERS as u32, 1).expect("attach");
    let (mut sockets, _) = in_netns(&lab.server_ns, || {
        let ifindex = netif::index(&lab.server_if).expect("ifindex");
        xsk::open(&lab.server_if, ifindex, 1, WORKERS as u32)
    })
    .expect("AF_XDP sockets");
    for (worker, per_queue) in sockets.iter().enumerate() {
        program
            .register(0, worker as u32, per_queue[0].fd())
            .expect("register");
    }
    // Half the clients send a client identifier (which then decides), half do not.
    let mut expected = [0u64; WORKERS];
    let mut frames = Vec::new();
    for i in 0..64u8 {
        let mac = [0x02, 0, 0, 0, i / 7, i];
        let id = [1, 0x02, 0, 0, 0xff, i, 0x5a];
        let (options, hash) = if i % 2 == 0 {
            let mut o = vec![61, id.len() as u8];
            o.extend_from_slice(&id);
            (o, client_key_hash(Some(&id), &mac))
        } else {
            (Vec::new(), client_key_hash(None, &mac))
        };
        expected[usize::from(hash) % WORKERS] += 1;
        frames.push(udp_frame(None, 67, &discover(mac, &options)));
    }
    assert!(
        expected.iter().all(|&n| n > 0),
        "every worker gets some: {expected:?}"
    );
    send(&lab, &frames);
    let counters = counters_until(&program, |c| c.redirected >= 64);
    assert_eq!(
        (counters.redirected, counters.no_socket),
        (64, 0),
        "{counters:?}"
    );
    assert_eq!(
        program.redirected_per_socket().expect("per socket"),
        expected.to_vec()
    );
    // And each socket really holds its share.
    let mut received = [0u64; WORKERS];
    let deadline = Instant::now() + Duration::from_secs(5);
    while received != expected && Instant::now() < deadline {
        for (worker, per_queue) in sockets.iter_mut().enumerate() {
            received[worker] += u64::from(per_queue[0].pass(0, None, |_, _| None).received);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(received, expected);
}

/// The failover load-balancing rule in the program, frame by frame: with every bucket
/// the partner's, a DISCOVER and a SELECTING REQUEST naming another server are dropped
/// (counted as balanced); a REQUEST naming us, or sent to the address it names, or from
/// a client past load-balance-max-seconds, or without a clear option 54, or any REQUEST
/// once we have more server identifiers than the rule holds, goes on to the server.
#[test]
fn the_partners_discovers_and_requests_stop_in_the_program() {
    let Some(lab) = Lab::new("xdp_balance", SERVER_CIDR) else {
        return;
    };
    let mut program = attach(&lab, 1, 1).expect("attach");
    let mut rule = program.take_balance().expect("the BALANCE map");
    let ours = [192, 0, 2, 1];
    let partner = [192, 0, 2, 9];
    let partners_only = Balance {
        on: true,
        max_secs: 3,
        mine: [0; 32],
        ..Balance::default()
    };
    rule.set(&partners_only.with_server_ids(&[ours, [198, 51, 100, 1]]))
        .expect("set the rule");
    let mac = [0x02, 0, 0, 0, 0, 0x20];
    let selecting = |server_id: [u8; 4], secs: u16| {
        let mut o = vec![54, 4];
        o.extend_from_slice(&server_id);
        o.extend_from_slice(&[50, 4, 192, 0, 2, 77]);
        bootrequest(mac, DHCPREQUEST, secs, &o)
    };
    let dropped = vec![
        udp_frame(None, 67, &discover(mac, &[])),
        udp_frame(None, 67, &selecting(partner, 0)),
        udp_frame(None, 67, &selecting(partner, 3)),
        // Option 54 after others, and the client identifier deciding the bucket.
        udp_frame(
            None,
            67,
            &bootrequest(
                mac,
                DHCPREQUEST,
                1,
                &[61, 7, 1, 2, 0, 0, 0, 0, 0x21, 54, 4, 192, 0, 2, 9],
            ),
        ),
    ];
    let mut sent_to_partner = udp_frame(None, 67, &selecting(partner, 0));
    sent_to_partner[30..34].copy_from_slice(&partner);
    let passed = vec![
        udp_frame(None, 67, &selecting(ours, 0)),
        udp_frame(None, 67, &selecting([198, 51, 100, 1], 0)),
        udp_frame(None, 67, &selecting(partner, 4)),
        udp_frame(None, 67, &bootrequest(mac, DHCPDISCOVER, 4, &[])),
        sent_to_partner,
        // INIT-REBOOT: no option 54.
        udp_frame(
            None,
            67,
            &bootrequest(mac, DHCPREQUEST, 0, &[50, 4, 192, 0, 2, 77]),
        ),
        // A leasequery: either server of a pair answers it.
        udp_frame(None, 67, &bootrequest([0; 6], DHCPLEASEQUERY, 0, &[])),
        // An option 54 of 5 octets: the engine decides.
        udp_frame(
            None,
            67,
            &bootrequest(mac, DHCPREQUEST, 0, &[54, 5, 192, 0, 2, 9, 0]),
        ),
    ];
    send(&lab, &dropped);
    send(&lab, &passed);
    let total = (dropped.len() + passed.len()) as u64;
    let c = counters_until(&program, |c| c.balanced + c.no_socket >= total);
    assert_eq!(
        (c.balanced, c.no_socket, c.malformed),
        (dropped.len() as u64, passed.len() as u64, 0),
        "{c:?}"
    );

    // Five identifiers do not fit: no REQUEST is dropped, DISCOVERs still are.
    let five: Vec<[u8; 4]> = (1..=5).map(|i| [203, 0, 113, i]).collect();
    rule.set(&partners_only.with_server_ids(&five))
        .expect("set the rule");
    send(
        &lab,
        &[
            udp_frame(None, 67, &selecting(partner, 0)),
            udp_frame(None, 67, &discover(mac, &[])),
        ],
    );
    let after = counters_until(&program, |a| a.balanced + a.no_socket >= total + 2);
    assert_eq!(
        (after.balanced, after.no_socket),
        (c.balanced + 1, c.no_socket + 1),
        "{after:?}"
    );
}

/// `discover` relayed by `giaddr`, with `options` (option 82 among them) after type 53.
fn relayed(mac: [u8; 6], giaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
    let mut m = discover(mac, options);
    m[24..28].copy_from_slice(&giaddr);
    m
}

/// Option 82 holding `sub_options` (code, data) as written.
fn agent_info(sub_options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (code, d) in sub_options {
        data.push(*code);
        data.push(d.len() as u8);
        data.extend_from_slice(d);
    }
    let mut o = vec![82, data.len() as u8];
    o.extend(data);
    o
}

/// The flood limits frame by frame, at a rate (one a second) slow enough that nothing
/// refills while a test sends: each client hardware address gets its burst and no
/// more, whatever the padding past hlen; each relay circuit (giaddr and circuit id, the
/// first 32 octets of a longer one) its own burst, even with a new MAC per request;
/// requests without a circuit id only their client's.
#[test]
fn flood_limits_drop_past_the_burst_in_the_program() {
    let Some(lab) = Lab::new("xdp_flood", SERVER_CIDR) else {
        return;
    };
    let limits = Flood {
        client_rate: 1,
        client_burst: 5,
        circuit_rate: 1,
        circuit_burst: 8,
        table_size: 1024,
    };
    let program = in_netns(&lab.server_ns, || {
        SteerProgram::attach_with(&lab.server_if, 1, 1, &limits)
    })
    .expect("attach with flood limits");
    // No worker socket: what passes the limits is counted as no-socket.
    let total = |c: &dhcp_ebpf_common::Counters| c.no_socket + c.flood_client + c.flood_circuit;
    let mut sent = 0u64;
    let mut step = |frames: Vec<Vec<u8>>| {
        send(&lab, &frames);
        sent += frames.len() as u64;
        let c = counters_until(&program, |c| total(c) >= sent);
        assert_eq!(total(&c), sent, "{c:?}");
        c
    };

    let flooder = [0x02, 0, 0, 0, 0xf1, 0x01];
    let c = step(
        (0..30)
            .map(|_| udp_frame(None, 67, &discover(flooder, &[])))
            .collect(),
    );
    assert_eq!((c.no_socket, c.flood_client), (5, 25), "{c:?}");
    // Padding past hlen changes nothing; another client is not held back.
    let mut padded = discover(flooder, &[]);
    padded[28 + 10] = 0x77;
    let c = step(
        [udp_frame(None, 67, &padded)]
            .into_iter()
            .chain((0..3).map(|_| udp_frame(None, 67, &discover([0x02, 0, 0, 0, 0xf1, 2], &[]))))
            .collect(),
    );
    assert_eq!((c.no_socket, c.flood_client), (5 + 3, 25 + 1), "{c:?}");
    // A requester's leasequeries are no client's requests: none is held back.
    let before = c;
    let c = step(
        (0..30)
            .map(|i| udp_frame(None, 67, &bootrequest([0; 6], DHCPLEASEQUERY, i, &[])))
            .collect(),
    );
    assert_eq!(
        (c.no_socket - before.no_socket, c.flood_client),
        (30, before.flood_client),
        "{c:?}"
    );

    // One circuit behind one relay, a new MAC each time: the circuit's burst.
    let relay = [192, 0, 2, 2];
    let port = agent_info(&[(2, b"remote"), (1, b"dslam-7 atm 1/1/1:0.35")]);
    let random_macs = |n: u8, from: u8, giaddr: [u8; 4], o: &[u8]| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| udp_frame(None, 67, &relayed([0x02, 0, 0, 0xc1, from, i], giaddr, o)))
            .collect()
    };
    let before = c;
    let c = step(random_macs(20, 1, relay, &port));
    assert_eq!(
        (
            c.no_socket - before.no_socket,
            c.flood_circuit,
            c.flood_client
        ),
        (8, 12, before.flood_client),
        "{c:?}"
    );
    // The same circuit id behind another relay is another circuit; option 82 without
    // a circuit id, or with one overrunning the option, keys no circuit.
    let before = c;
    let mut frames = random_macs(3, 2, [192, 0, 2, 3], &port);
    frames.extend(random_macs(10, 3, relay, &agent_info(&[(2, b"remote")])));
    frames.extend(random_macs(10, 4, relay, &[82, 4, 1, 9, b'x', b'y']));
    let c = step(frames);
    assert_eq!(
        (c.no_socket - before.no_socket, c.flood_circuit),
        (23, before.flood_circuit),
        "{c:?}"
    );
    // Ids longer than 32 octets: those of one length that differ only past the 32nd
    // share a bucket; another length is another circuit.
    let long = |tail: u8, len: usize| {
        let mut id = vec![b'L'; len];
        id[len - 1] = tail;
        agent_info(&[(1, &id)])
    };
    let before = c;
    let mut frames = random_macs(4, 5, relay, &long(b'a', 40));
    frames.extend(random_macs(6, 6, relay, &long(b'b', 40)));
    frames.extend(random_macs(2, 7, relay, &long(b'a', 41)));
    let c = step(frames);
    assert_eq!(
        (
            c.no_socket - before.no_socket,
            c.flood_circuit - before.flood_circuit
        ),
        (8 + 2, 2),
        "{c:?}"
    );
    assert_eq!((c.redirected, c.malformed, c.balanced), (0, 0, 0), "{c:?}");
}

#[test]
fn a_second_program_is_refused_and_drop_detaches() {
    let Some(lab) = Lab::new("xdp_busy", SERVER_CIDR) else {
        return;
    };
    let mut first = attach(&lab, 1, 1).expect("attach");
    match attach(&lab, 1, 1) {
        Err(e @ XdpError::Busy { .. }) => {
            let message = e.to_string();
            assert!(message.contains("ip link show dev"), "{message}");
            assert!(message.contains("xdp off"), "{message}");
        }
        Err(e) => panic!("second attach: {e}"),
        Ok(_) => panic!("a second program was attached"),
    }
    assert!(matches!(
        first.register(1, 0, 0),
        Err(XdpError::NoSlot { .. })
    ));
    assert!(xdp_attached(&lab), "the first program stays");
    drop(first);
    wait_detached(&lab);
    // And the interface is free again.
    let again = attach(&lab, 1, 1).expect("attach after drop");
    drop(again);
    wait_detached(&lab);
}

#[test]
fn a_killed_process_leaves_nothing_attached() {
    if let Ok(ifname) = std::env::var(CHILD_ENV) {
        // The re-executed child, already inside the server namespace.
        let _program = SteerProgram::attach(&ifname, 1, 1).expect("child attach");
        println!("attached");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let Some(lab) = Lab::new("xdp_kill", SERVER_CIDR) else {
        return;
    };
    let me = std::env::current_exe().unwrap();
    let mut child = Lab::cmd(&lab.server_ns, me.to_str().unwrap())
        .args([
            "--exact",
            "a_killed_process_leaves_nothing_attached",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &lab.server_if)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-exec the test binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("attached") {
                let _ = tx.send(());
            }
        }
    });
    let attached = rx.recv_timeout(Duration::from_secs(20));
    if attached.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child never attached");
    }
    assert!(xdp_attached(&lab), "the child's program is attached");
    // `ip netns exec` execs the test binary, so this is the process holding the link.
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    wait_detached(&lab);
}
