//! The real `dhcp-server` binary against real clients (dhclient, udhcpc, perfdhcp) in
//! network namespaces it creates itself, plus a flood of garbage it must survive and a
//! configuration error it must refuse. Each exchange runs on both backends: the kernel
//! UDP sockets, and XDP with two AF_XDP workers. Needs root; see `common`.

#[allow(dead_code)] // each test crate uses part of the shared harness
#[macro_use]
mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    dhclient_args, one_liner, perf_stats, perfdhcp, perfdhcp_dora, require, wait_for_file, Backend,
    Lab, SERVER_BIN,
};

on_both_backends!(
    dhclient_gets_a_lease_and_renews_it,
    udhcpc_gets_a_lease,
    perfdhcp_completes_5000_dora_exchanges_without_drops,
    a_relayed_exchange_lands_in_the_relays_subnet,
    ten_thousand_garbage_datagrams_leave_the_server_answering,
);

const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const POOL_LAST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

fn in_pool(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|a| (POOL_FIRST..=POOL_LAST).contains(&a))
}

/// Starts the one-liner server on a fresh lab.
fn quick_lab(test: &str, backend: Backend, extra: &[&str]) -> Option<(Lab, common::Server)> {
    let mut lab = Lab::new(test, "192.0.2.1/24")?;
    let iface = lab.server_if.clone();
    let mut args = one_liner(&iface, "192.0.2.0/24", "192.0.2.10-192.0.2.200", backend);
    args.extend_from_slice(&["--router", "192.0.2.1", "--dns", "192.0.2.53"]);
    args.extend_from_slice(extra);
    let server = lab.start_server(&args);
    Some((lab, server))
}

/// A client script that records what the client was told and configures the address in
/// the client namespace. The stock scripts must never run: they rewrite the host's
/// /etc/resolv.conf, which namespaces share. A failing script makes dhclient DECLINE the
/// lease, so it always exits 0.
fn recording_script(lab: &Lab, name: &str, record: &str) -> std::path::PathBuf {
    let events = lab.path(&format!("{name}.events"));
    lab.script(
        name,
        &format!(
            "{record} >> {events}\ncase \"$reason$1\" in\n  BOUND*|RENEW*|REBIND*|REBOOT*|bound|renew) ip addr replace \"$new_ip_address$ip/24\" dev \"$interface\" ;;\nesac\nexit 0",
            events = events.display()
        ),
    )
}

/// Runs udhcpc once (lease, then quit) with `script`; returns what the script recorded.
fn udhcpc(lab: &Lab, iface: &str, script: &std::path::Path) -> String {
    let script = script.to_str().unwrap();
    lab.in_client(
        "timeout",
        &[
            "20", "udhcpc", "-f", "-q", "-n", "-t", "5", "-i", iface, "-s", script,
        ],
    );
    std::fs::read_to_string(lab.path("udhcpc-script.events")).unwrap()
}

fn dhclient_gets_a_lease_and_renews_it(backend: Backend) {
    let Some((mut lab, server)) = quick_lab("dhclient", backend, &["--lease-time", "20"]) else {
        return;
    };
    require("dhclient");
    let script = recording_script(&lab, "dhclient-script", "echo \"$reason $new_ip_address\"");
    let ns = lab.client_ns.clone();
    let mut args = vec!["-d".to_owned()];
    args.extend(dhclient_args(&lab, "dhclient", &script));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(&ns, "dhclient", &args, "dhclient.log");
    let events = lab.path("dhclient-script.events");
    let text = wait_for_file(&events, "BOUND ", Duration::from_secs(20));
    let bound = text
        .lines()
        .find_map(|l| l.strip_prefix("BOUND "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(in_pool(&bound), "dhclient bound {bound}, outside the pool");
    // T1 is half the 20 s lease: the renewal is a unicast REQUEST from the bound address.
    let text = wait_for_file(&events, "RENEW ", Duration::from_secs(30));
    let renewed = text
        .lines()
        .find_map(|l| l.strip_prefix("RENEW "))
        .unwrap()
        .trim();
    assert_eq!(renewed, bound, "renewal changed the address");
    let log = server.log_text();
    let acks = log.matches(&format!("DHCPACK on {bound} ")).count();
    assert!(
        acks >= 2,
        "the renewal was not acknowledged by our server:\n{log}"
    );
    assert!(!log.contains("DHCPNAK"), "{log}");
    assert!(!log.contains("DHCPDECLINE"), "{log}");
}

fn udhcpc_gets_a_lease(backend: Backend) {
    let Some((lab, server)) = quick_lab("udhcpc", backend, &[]) else {
        return;
    };
    require("udhcpc");
    let script = recording_script(&lab, "udhcpc-script", "echo \"$1 $ip $router $dns $lease\"");
    let text = udhcpc(&lab, &lab.client_if, &script);
    let bound = text
        .lines()
        .find(|l| l.starts_with("bound "))
        .unwrap_or_else(|| panic!("{text}"));
    let f: Vec<&str> = bound.split_whitespace().collect();
    assert!(in_pool(f[1]), "{bound}");
    assert_eq!(
        &f[2..5],
        ["192.0.2.1", "192.0.2.53", "3600"],
        "router, dns and lease time: {bound}"
    );
    assert!(server.log_text().contains(&format!("DHCPACK on {}", f[1])));
}

fn perfdhcp_completes_5000_dora_exchanges_without_drops(backend: Backend) {
    let Some(mut lab) = Lab::new("perfdhcp", "198.18.0.1/15") else {
        return;
    };
    let iface = lab.server_if.clone();
    let server = lab.start_server(&one_liner(
        &iface,
        "198.18.0.0/15",
        "198.18.1.0-198.18.255.250",
        backend,
    ));
    let client_if = lab.client_if.clone();
    lab.in_client("ip", &["addr", "add", "198.18.0.2/15", "dev", &client_if]);
    let out = perfdhcp_dora(&lab, 500, 5000, 40, &[]);
    let offers = perf_stats(&out, "DISCOVER-OFFER");
    let acks = perf_stats(&out, "REQUEST-ACK");
    assert_eq!(
        (offers.sent, offers.received, offers.drops),
        (5000, 5000, 0),
        "{out}"
    );
    assert_eq!(acks.drops, 0, "{out}");
    assert_eq!(acks.received, acks.sent, "{out}");
    assert!(acks.received >= 4990, "{out}");
    assert!(out.contains("non unique addresses: 0"), "{out}");
    let status = lab
        .stop(server.pid)
        .expect("the server did not stop on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    backend.check_every_worker_served(&server.log_text());
}

fn a_relayed_exchange_lands_in_the_relays_subnet(backend: Backend) {
    let Some(mut lab) = Lab::new("relay", "192.0.2.1/24") else {
        return;
    };
    // The client namespace plays the relay: its address in 198.51.100.0/24 is the giaddr.
    lab.in_client(
        "ip",
        &["addr", "add", "198.51.100.1/24", "dev", &lab.client_if],
    );
    lab.in_client(
        "ip",
        &["addr", "add", "192.0.2.2/24", "dev", &lab.client_if],
    );
    lab.in_server(
        "ip",
        &["route", "add", "198.51.100.0/24", "via", "192.0.2.2"],
    );
    let config = lab.path("relay.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"{i}\"]\n{b}\n[[subnet]]\nsubnet = \"192.0.2.0/24\"\ninterface = \"{i}\"\npools = [\"192.0.2.10-192.0.2.200\"]\n\n[[subnet]]\nsubnet = \"198.51.100.0/24\"\npools = [\"198.51.100.10-198.51.100.250\"]\n",
            i = lab.server_if,
            b = backend.file_keys(),
        ),
    )
    .unwrap();
    let server = lab.start_server(&["--config", config.to_str().unwrap()]);
    let out = perfdhcp(
        &lab,
        &[
            "-4",
            "-l",
            "198.51.100.1",
            "-r",
            "100",
            "-R",
            "200",
            "-n",
            "200",
            "-W",
            "2000000",
            "-p",
            "20",
            "192.0.2.1",
        ],
    );
    let acks = perf_stats(&out, "REQUEST-ACK");
    assert_eq!(perf_stats(&out, "DISCOVER-OFFER").drops, 0, "{out}");
    assert_eq!(acks.drops, 0, "{out}");
    assert!(acks.received >= 190, "{out}");
    let log = server.log_text();
    let acked: Vec<&str> = log.lines().filter(|l| l.contains("DHCPACK on ")).collect();
    assert_eq!(acked.len() as u64, acks.received, "{log}");
    for l in acked {
        assert!(
            l.contains("DHCPACK on 198.51.100.") && l.ends_with("via 198.51.100.1"),
            "{l}"
        );
    }
}

/// Moves the calling thread into a namespace; sockets it opens afterwards live there.
fn enter_netns(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on an open namespace file; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A valid DISCOVER, for truncating and corrupting. One client sends them all: corrupted
/// copies that still parse must not take the whole pool, which would be a different test.
fn discover(xid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[28..34].copy_from_slice(&[2, 0xbb, 0, 0, 0, 1]);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, 1, 55, 3, 1, 3, 6, 255]);
    b
}

fn ten_thousand_garbage_datagrams_leave_the_server_answering(backend: Backend) {
    let Some((mut lab, server)) = quick_lab("garbage", backend, &[]) else {
        return;
    };
    require("udhcpc");
    let ns = lab.client_ns.clone();
    let client_if = lab.client_if.clone();
    // The client side needs an address to send from; udhcpc later uses its own raw socket.
    lab.in_client("ip", &["addr", "add", "192.0.2.250/24", "dev", &client_if]);
    let sent = std::thread::spawn(move || {
        enter_netns(&ns);
        let sock = UdpSocket::bind("192.0.2.250:0").unwrap();
        sock.set_broadcast(true).unwrap();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut n = 0;
        for i in 0..10_000u32 {
            let mut pkt = match i % 3 {
                0 => (0..rand() % 600).map(|_| rand() as u8).collect(),
                1 => {
                    let d = discover(i);
                    d[..(rand() as usize % d.len())].to_vec()
                }
                _ => {
                    let mut d = discover(i);
                    for _ in 0..4 {
                        let at = 240 + rand() as usize % (d.len() - 240);
                        d[at] = rand() as u8;
                    }
                    d
                }
            };
            pkt.truncate(1400);
            let to = if i % 2 == 0 {
                "255.255.255.255:67"
            } else {
                "192.0.2.1:67"
            };
            if sock.send_to(&pkt, to).is_ok() {
                n += 1;
            }
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        n
    })
    .join()
    .unwrap();
    assert!(sent >= 9_900, "only {sent} datagrams could be sent");
    // Proof the flood reached the engine rather than dying in the kernel: the corrupted
    // DISCOVERs that still parse are logged.
    server.wait_for(
        "DHCPDISCOVER from 02:bb:00:00:00:01",
        Duration::from_secs(5),
    );
    assert!(
        lab.alive(server.pid),
        "the server died:\n{}",
        server.log_text()
    );
    lab.in_client("ip", &["addr", "flush", "dev", &client_if]);
    let script = recording_script(&lab, "udhcpc-script", "echo \"$1 $ip\"");
    let text = udhcpc(&lab, &client_if, &script);
    assert!(
        text.lines().any(|l| l.starts_with("bound 192.0.2.")),
        "{text}"
    );
    let status = lab
        .stop(server.pid)
        .expect("the server did not stop on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_configuration_error_exits_2_naming_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("dhcp-server-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "interfaces = [\"lo\"]\n\n[[subnet]]\nsubnet = \"192.0.2.0/24\"\ninterface = \"lo\"\npools = [\n  \"192.0.2.10-192.0.2.20\",\n  \"198.51.100.1-198.51.100.9\",\n]\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(SERVER_BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:8: key 'subnet[0].pools[1]': range 198.51.100.1-198.51.100.9 is not inside 192.0.2.0/24", path.display())),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}
