//! Lease history end to end: the real server under perfdhcp load, its journal followed
//! into the text file sink. Every lease the clients were acknowledged appears once, as
//! does every ACK the server counted; a kill -9 mid-load and a restart lose and repeat
//! nothing.

#[allow(dead_code)] // each test crate uses part of the shared harness
#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ctl_json, perf_stats, perfdhcp_dora, Backend, Lab, Server};

on_both_backends!(every_ack_appears_once_in_the_text_file);

/// The lab's configuration: a /15 pool relayed from the client namespace, the journal,
/// the control socket and `[history]` with `sinks` (TOML tables).
fn config(lab: &Lab, backend: Backend, sinks: &str) -> String {
    format!(
        "interfaces = [\"{iface}\"]\n{keys}state-dir = \"{state}\"\ncontrol-socket = \"{sock}\"\n\n\
         [history]\nserver = \"t1\"\nsite = \"lab\"\n{sinks}\n\
         [[subnet]]\nsubnet = \"198.18.0.0/15\"\ninterface = \"{iface}\"\n\
         pools = [\"198.18.1.0-198.18.255.250\"]\nlease-time = 3600\n",
        iface = lab.server_if,
        keys = backend.file_keys(),
        state = lab.path("state").display(),
        sock = lab.path("control.sock").display(),
    )
}

fn text_sink(lab: &Lab) -> String {
    format!(
        "[history.text]\ndir = \"{}\"\nprefix = \"leases\"\n",
        lab.path("history").display()
    )
}

fn start(lab: &mut Lab, backend: Backend, sinks: &str) -> Server {
    let file = lab.path("server.toml");
    std::fs::write(&file, config(lab, backend, sinks)).unwrap();
    let f = file.display().to_string();
    lab.start_server(&["--config", &f])
}

/// Waits until every sink has delivered what the journal holds (bounded).
fn caught_up(lab: &Lab) -> serde_json::Value {
    let socket = lab.path("control.sock").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = ctl_json(&socket, &["status"]);
        let sinks = status["history"].as_array().cloned().unwrap_or_default();
        assert!(!sinks.is_empty(), "no history in status: {status}");
        if sinks
            .iter()
            .all(|s| s["lag_records"] == 0 && s["connected"] == true)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "sinks did not catch up: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One line of the text sink: what happened, to which address, for which MAC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Line {
    kind: String,
    addr: Ipv4Addr,
    mac: String,
}

fn text_lines(dir: &Path) -> Vec<Line> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            let rest = l.split_once(" UTC Address: ").expect(l).1;
            let (addr, rest) = rest.split_once(' ').expect(l);
            let kind = if rest.starts_with("has been assigned") {
                "granted"
            } else if rest.starts_with("has been renewed") {
                "renewed"
            } else {
                "other"
            };
            let mac = rest
                .split_once("hwtype=1 ")
                .map(|(_, m)| m.split([',', ' ']).next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            lines.push(Line {
                kind: kind.to_owned(),
                addr: addr.parse().expect(l),
                mac,
            });
        }
    }
    lines
}

/// The leases the server holds, as address to MAC.
fn leases(lab: &Lab) -> HashMap<Ipv4Addr, String> {
    let socket = lab.path("control.sock").display().to_string();
    let page = ctl_json(&socket, &["leases", "--all"]);
    page["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .map(|l| {
            (
                l["address"].as_str().unwrap().parse().unwrap(),
                l["mac"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Each active lease has exactly one grant line with its MAC, and no line repeats.
fn check_once(lines: &[Line], leases: &HashMap<Ipv4Addr, String>) {
    let mut seen: HashMap<&Line, usize> = HashMap::new();
    for l in lines {
        *seen.entry(l).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "lines written twice: {twice:?}");
    for (addr, mac) in leases {
        let grants: Vec<_> = lines
            .iter()
            .filter(|l| l.kind == "granted" && l.addr == *addr)
            .collect();
        assert_eq!(grants.len(), 1, "{addr}: {grants:?}");
        assert_eq!(&grants[0].mac, mac, "{addr}");
    }
}

fn relay_address(lab: &Lab) {
    let client_if = lab.client_if.clone();
    lab.in_client("ip", &["addr", "add", "198.18.0.2/15", "dev", &client_if]);
}

fn every_ack_appears_once_in_the_text_file(backend: Backend) {
    let Some(mut lab) = Lab::new("history-text", "198.18.0.1/15") else {
        return;
    };
    let sinks = text_sink(&lab);
    let server = start(&mut lab, backend, &sinks);
    relay_address(&lab);
    let out = perfdhcp_dora(&lab, 500, 2000, 30, &[]);
    let acks = perf_stats(&out, "REQUEST-ACK");
    assert!(acks.received >= 1990, "{out}");
    let status = caught_up(&lab);
    let socket = lab.path("control.sock").display().to_string();
    let stats = ctl_json(&socket, &["stats"]);
    let sent_acks = stats["sent"]["ack"].as_u64().unwrap();
    let lines = text_lines(&lab.path("history"));
    let granted = lines.iter().filter(|l| l.kind == "granted").count() as u64;
    assert_eq!(
        granted, sent_acks,
        "one line per ACK the server sent: {status}"
    );
    assert!(granted >= acks.received, "every ACK the clients saw");
    check_once(&lines, &leases(&lab));
    assert_eq!(status["history"][0]["delivered"], granted, "{status}");
    let stopped = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(stopped.success());
}

/// The server killed while perfdhcp runs: after the restart every lease the journal
/// kept has its line once, and nothing was written twice.
#[test]
fn a_kill_mid_load_loses_and_repeats_nothing() {
    let Some(mut lab) = Lab::new("history-kill", "198.18.0.1/15") else {
        return;
    };
    let sinks = text_sink(&lab);
    let server = start(&mut lab, Backend::Udp, &sinks);
    relay_address(&lab);
    let killed = std::thread::scope(|s| {
        let load = s.spawn(|| perfdhcp_dora(&lab, 1000, 4000, 8, &[]));
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on the server we started.
        unsafe { libc::kill(server.pid as i32, libc::SIGKILL) };
        load.join().unwrap()
    });
    let before = perf_stats(&killed, "REQUEST-ACK");
    assert!(
        before.received > 0,
        "the load ran before the kill: {killed}"
    );
    let _ = lab.stop(server.pid);
    let server = start(&mut lab, Backend::Udp, &sinks);
    caught_up(&lab);
    let lines = text_lines(&lab.path("history"));
    let leases = leases(&lab);
    assert!(
        leases.len() as u64 >= before.received,
        "the journal kept every ACK"
    );
    check_once(&lines, &leases);
    let stopped = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(stopped.success());
}
