//! Least privilege. In a namespace lab (root; skipped with a message otherwise), the
//! real binary started with `--user nobody --group nogroup` on each backend: every thread
//! ends as nobody with no capability at all and no_new_privs, and the server still
//! serves DORA to perfdhcp, journals into new segments in a state directory it owns,
//! answers `ctl` (root, its own user; another user refused and counted), reloads, and
//! stops cleanly with XDP detached. An unknown user stops the start. In this process
//! (no root): a failover secondary closes a connection from an address other than its
//! partner's, and the metrics listener one from outside `metrics-allow`; both unanswered,
//! both counted in `stats`.

#[allow(dead_code)]
#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ctl_json, perf_stats, perfdhcp_dora, Backend, Lab, SERVER_BIN};
use dhcp_server::config;
use dhcp_server::loopback::Loopback;
use dhcp_server::runtime::{self, env::Env, stop::Stop};

on_both_backends!(runs_as_nobody_with_no_capability_and_still_serves);

/// nobody and nogroup on Debian.
const NOBODY: u32 = 65534;
/// A uid that is neither root, nobody nor on the access list.
const STRANGER: u32 = 65533;

/// The fields of every thread of `pid` that say who it is and what it may do.
fn threads(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let wanted = [
            "Name:",
            "Uid:",
            "Gid:",
            "Groups:",
            "CapPrm:",
            "CapEff:",
            "CapBnd:",
            "CapAmb:",
            "NoNewPrivs:",
        ];
        let fields: Vec<String> = status
            .lines()
            .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push(fields.join("; "));
    }
    out
}

fn ctl_as(uid: u32, gid: u32, socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            SERVER_BIN,
            "ctl",
            "--socket",
        ])
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// The journal segments in `dir`: name and owner.
fn segments(dir: &Path) -> Vec<(String, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().uid())
        })
        .collect()
}

fn config_text(lab: &Lab, backend: Backend, lease_time: u32) -> String {
    format!(
        "interfaces = [\"{ifname}\"]\n{backend}state-dir = \"{state}\"\n\
         journal-segment-size = 65536\ncontrol-socket = \"{socket}\"\n\
         [[subnet]]\nsubnet = \"198.18.0.0/15\"\ninterface = \"{ifname}\"\n\
         pools = [\"198.18.1.0-198.18.255.250\"]\nlease-time = {lease_time}\n",
        ifname = lab.server_if,
        backend = backend.file_keys(),
        state = lab.path("state").display(),
        socket = lab.path("run/control.sock").display(),
    )
}

fn runs_as_nobody_with_no_capability_and_still_serves(backend: Backend) {
    let Some(mut lab) = Lab::new("privileges", "198.18.0.1/15") else {
        return;
    };
    common::require("setpriv");
    // The control socket's directory is the user's, as systemd's RuntimeDirectory= makes
    // it: the server removes its socket there when it stops.
    let run = lab.path("run");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
    let file = lab.path("server.toml");
    std::fs::write(&file, config_text(&lab, backend, 3600)).unwrap();
    let f = file.display().to_string();
    let server = lab.start_server(&["--config", &f, "--user", "nobody", "--group", "nogroup"]);
    let log = server.log_text();
    assert!(
        log.contains(
            "dropped privileges to user nobody (65534), group nogroup (65534); keeping no \
             capabilities"
        ),
        "{log}"
    );

    // Every thread, the workers included: nobody, no capability in any set, and no way
    // back through execve.
    let all = threads(server.pid);
    assert!(all.len() >= 4, "{all:#?}");
    for t in &all {
        for want in [
            "Uid: 65534 65534 65534 65534",
            "Gid: 65534 65534 65534 65534",
            "Groups: 65534",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapBnd: 0000000000000000",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1",
        ] {
            assert!(t.contains(want), "{want} missing in {t}");
        }
    }

    // It serves: DORA from perfdhcp relaying from the client side, each lease journaled
    // into segments the user creates (64 KiB each: a run of 1000 leases needs new ones).
    let state = lab.path("state");
    let before = segments(&state);
    let client_if = lab.client_if.clone();
    lab.in_client("ip", &["addr", "add", "198.18.0.2/15", "dev", &client_if]);
    let out = perfdhcp_dora(&lab, 400, 1000, 20, &[]);
    let (offers, acks) = (
        perf_stats(&out, "DISCOVER-OFFER"),
        perf_stats(&out, "REQUEST-ACK"),
    );
    assert_eq!((offers.sent, offers.received), (1000, 1000), "{out}");
    assert_eq!((acks.received, acks.drops), (acks.sent, 0), "{out}");
    assert!(acks.received >= 990, "{out}");
    let after = segments(&state);
    assert!(
        after.iter().any(|s| !before.contains(s)),
        "no new segment: {before:?} -> {after:?}"
    );
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    assert!(after.iter().all(|s| s.1 == NOBODY), "{after:?}");

    // The control socket: root and the server's own user get in; another user of the
    // socket's group is refused and counted.
    let socket = lab.path("run/control.sock");
    let sock = socket.display().to_string();
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), NOBODY);
    let status = ctl_json(&sock, &["status"]);
    assert_eq!(status["ready"], true, "{status}");
    let own = ctl_as(NOBODY, NOBODY, &socket, &["status"]);
    assert!(own.status.success(), "{own:?}");
    let stranger = ctl_as(STRANGER, NOBODY, &socket, &["status"]);
    assert!(!stranger.status.success(), "{stranger:?}");
    assert!(
        String::from_utf8_lossy(&stranger.stdout).contains("permission")
            || String::from_utf8_lossy(&stranger.stderr).contains("permission"),
        "{stranger:?}"
    );
    let stats = ctl_json(&sock, &["stats"]);
    assert_eq!(stats["refused"]["control"], 1, "{stats}");
    if backend == Backend::Xdp {
        // The program's counters are BPF map lookups through descriptors opened as root.
        assert!(
            stats["xdp"]["redirected"].as_u64().unwrap() >= 2000,
            "{stats}"
        );
    }

    // A reload reads the file (readable by nobody) and reopens nothing.
    std::fs::write(&file, config_text(&lab, backend, 600)).unwrap();
    let report = ctl_json(&sock, &["reload"]);
    assert_eq!(
        report["applied"][0], "subnet 198.18.0.0/15: lease-time 3600 -> 600",
        "{report}"
    );

    let exit = lab.stop(server.pid).expect("no exit within 5 s of SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", server.log_text());
    let log = server.log_text();
    if backend == Backend::Xdp {
        // Closing the bpf_link descriptor detaches: no capability needed.
        assert!(log.contains("XDP program detached from"), "{log}");
        let link = Lab::cmd(&lab.server_ns, "ip")
            .args(["-d", "link", "show", "dev", &lab.server_if])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&link.stdout).contains("prog/xdp"));
    }
    assert!(!socket.exists(), "the control socket was left behind");
    // The one warning is the stranger's refusal.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("control connection refused uid=65533"));
}

#[test]
fn an_unknown_user_stops_the_start() {
    let out = Command::new(SERVER_BIN)
        .args([
            "run",
            "--interface",
            "lo",
            "--subnet",
            "192.0.2.0/24",
            "--range",
            "192.0.2.10-192.0.2.20",
            "--user",
            "no-such-user-dhcp-test",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user 'no-such-user-dhcp-test' does not exist"),
        "{err}"
    );
}

/// A port free on `ip` now.
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddrV4::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP connection to `to` from `from`: std cannot choose the source address.
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddrV4::new(from, 0).into())?;
            s.connect(to.into()).await
        })
        .unwrap();
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    std.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std
}

/// What a connection from `from` gets after sending `bytes`: the bytes it reads until
/// the server closes (a reset counts as closed).
fn answer(from: Ipv4Addr, to: SocketAddrV4, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect_from(from, to);
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            panic!("{to} kept a connection from {from} open without answering")
        }
        _ => got,
    }
}

/// `stats` over the control socket.
fn stats(socket: &Path) -> serde_json::Value {
    let mut c = std::os::unix::net::UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"{\"version\":1,\"command\":\"stats\"}\n")
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while c.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    serde_json::from_slice::<serde_json::Value>(&line).unwrap()["result"].clone()
}

#[test]
fn a_stranger_on_the_failover_or_metrics_port_gets_nothing_and_is_counted() {
    let dir = std::env::temp_dir().join(format!("privileges-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let local = Ipv4Addr::new(127, 0, 0, 1);
    let failover = SocketAddrV4::new(local, free_port(local));
    let metrics = SocketAddrV4::new(local, free_port(local));
    // The partner is 127.0.0.3; the stranger comes from 127.0.0.2, on both ports.
    let file = dir.join("dhcp-server.toml");
    std::fs::write(
        &file,
        format!(
            "interfaces = [\"lan0\"]\ncontrol-socket = \"{socket}\"\n\
             metrics-listen = \"{metrics}\"\nmetrics-allow = [\"127.0.0.1\"]\n\
             [failover]\nname = \"pair\"\nrole = \"secondary\"\naddress = \"{ip}\"\n\
             port = {port}\npeer-address = \"127.0.0.3\"\npeer-port = 647\n\
             [[subnet]]\nsubnet = \"192.0.2.0/24\"\ninterface = \"lan0\"\n\
             pools = [\"192.0.2.10-192.0.2.99\"]\n",
            socket = dir.join("control.sock").display(),
            ip = failover.ip(),
            port = failover.port(),
        ),
    )
    .unwrap();
    let config = config::load_file(&file).expect("the test's configuration is valid");
    let (backend, _wire) = Loopback::new(1, vec![Ipv4Addr::new(192, 0, 2, 2)]);
    let stop = Stop::new();
    let env = Env {
        stop: stop.clone(),
        config_file: Some(file),
        ..Env::default()
    };
    let server = std::thread::spawn(move || runtime::run(config, Box::new(backend), env));
    let socket = dir.join("control.sock");
    let since = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "no control socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stranger = Ipv4Addr::new(127, 0, 0, 2);

    // A failover message from the wrong address: closed, never read.
    let got = answer(stranger, failover, &[0, 12, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(got.is_empty(), "the stranger got {got:?}");
    // A scraper outside metrics-allow: closed before a byte of HTTP.
    let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(answer(stranger, metrics, get).is_empty());
    assert!(answer(stranger, metrics, get).is_empty());
    // An allowed scraper sees the refusals too.
    let text = String::from_utf8(answer(local, metrics, get)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("dhcp_connections_refused_total{listener=\"metrics\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("dhcp_connections_refused_total{listener=\"failover\"} 1\n"),
        "{text}"
    );
    let s = stats(&socket);
    assert_eq!(s["refused"]["failover"], 1, "{s}");
    assert_eq!(s["refused"]["metrics"], 2, "{s}");
    assert_eq!(s["refused"]["control"], 0, "{s}");

    stop.request();
    server
        .join()
        .expect("the server thread ends")
        .expect("the server stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
