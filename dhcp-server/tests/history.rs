//! Lease history end to end: the real server under perfdhcp load, its journal followed
//! into real PostgreSQL, a real nats-server with JetStream and the text file sink. Every
//! lease the clients were acknowledged appears once in each, as does every ACK the
//! server counted; PostgreSQL and NATS stopped for a minute under load delay no ACK and
//! lose nothing; a kill -9 mid-load and a restart lose and repeat nothing.

#[allow(dead_code)] // each test crate uses part of the shared harness
#[macro_use]
mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
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
/// kept is in each sink once, and nothing was written twice. (The restart is on the UDP
/// backend, the outage test's on XDP.)
#[test]
fn a_kill_mid_load_loses_and_repeats_nothing() {
    let Some(mut lab) = Lab::new("history-kill", "198.18.0.1/15") else {
        return;
    };
    let Some(pg) = Postgres::start("history-kill", &[]) else {
        return;
    };
    let _nats = Nats::start(&lab);
    let sinks = all_sinks(&lab, &pg);
    let server = start(&mut lab, Backend::Udp, &sinks);
    relay_address(&lab);
    let killed = std::thread::scope(|s| {
        let load = s.spawn(|| perfdhcp_dora(&lab, 1000, 6000, 10, &[]));
        std::thread::sleep(Duration::from_millis(2500));
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
    assert!(
        leases(&lab).len() as u64 >= before.received,
        "the journal kept every ACK"
    );
    check_engines(&lab, &pg, None);
    operators_ask(&lab);
    let stopped = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(stopped.success());
}

/// nats-server with JetStream in the lab's server namespace, on the server's address:
/// the server reaches it there, and so does the test's reader (`in_netns`). Its own
/// process (not the lab's), so it can stop and start while a load holds the lab.
struct Nats {
    child: Option<std::process::Child>,
    ns: String,
    conf: String,
    logs: std::path::PathBuf,
    starts: u32,
}

const NATS_URL: &str = "nats://198.18.0.1:4222";
/// The stream the sink makes for site "lab".
const STREAM: &str = "dhcp-lab";

impl Nats {
    fn start(lab: &Lab) -> Nats {
        common::require("nats-server");
        let conf = lab.path("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: hist\nlisten: 198.18.0.1:4222\njetstream {{ store_dir: \"{}\" }}\n",
                lab.path("nats").display()
            ),
        )
        .unwrap();
        let mut n = Nats {
            child: None,
            ns: lab.server_ns.clone(),
            conf: conf.display().to_string(),
            logs: lab.dir.clone(),
            starts: 0,
        };
        n.again();
        n
    }

    fn again(&mut self) {
        self.starts += 1;
        let log = self.logs.join(format!("nats-{}.log", self.starts));
        let out = std::fs::File::create(&log).unwrap();
        let child = Lab::cmd(&self.ns, "nats-server")
            .args(["-c", &self.conf])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        common::wait_for_file(&log, "Server is ready", Duration::from_secs(20));
    }

    /// A clean stop (SIGTERM), waited for.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn all_sinks(lab: &Lab, pg: &Postgres) -> String {
    format!(
        "[history.postgres]\nurl = \"{}\"\n[history.nats]\nservers = [\"{NATS_URL}\"]\n{}",
        pg.url(),
        text_sink(lab)
    )
}

/// The messages of the lab's stream: (subject, message id).
fn stream(lab: &Lab) -> Vec<(String, String)> {
    common::nats::in_netns(&lab.server_ns, || {
        let reader = common::nats::Reader::connect(&[NATS_URL.to_owned()]);
        reader
            .all(STREAM)
            .into_iter()
            .map(|m| (m.subject, m.id))
            .collect()
    })
}

/// Every active lease has one span with its hardware address in PostgreSQL (a renewal
/// extends it), one message per ACK is on the stream on its event's subject, ids unique,
/// and all count what the text file and (when known) the server's ACKs count.
fn check_engines(lab: &Lab, pg: &Postgres, acks_sent: Option<u64>) {
    let lines = text_lines(&lab.path("history"));
    let leases = leases(lab);
    check_once(&lines, &leases);
    let count = |kind: &str| lines.iter().filter(|l| l.kind == kind).count();
    let (granted, renewed) = (count("granted"), count("renewed"));
    assert_eq!(granted, leases.len(), "a grant per lease the journal kept");
    if let Some(acks) = acks_sent {
        assert_eq!((granted + renewed) as u64, acks, "a text line per ACK sent");
    }
    let spans = pg.spans();
    assert_eq!(spans.len(), granted, "a span per grant");
    for (addr, mac) in &leases {
        let (hw, n) = spans.get(addr).unwrap_or_else(|| panic!("{addr}: no span"));
        assert_eq!((hw, *n), (mac, 1), "{addr}");
    }
    let messages = stream(lab);
    let mut ids: Vec<&String> = messages.iter().map(|m| &m.1).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), messages.len(), "message ids unique");
    let on = |subject: &str| messages.iter().filter(|m| m.0 == subject).count();
    assert_eq!(on("dhcp.lab.lease.granted"), granted, "a message per grant");
    assert_eq!(
        on("dhcp.lab.lease.renewed"),
        renewed,
        "a message per renewal"
    );
    assert_eq!(messages.len(), granted + renewed, "nothing else");
}

/// `dhcp-server history`, as an operator asks it, finds a lease's holder at a time and
/// the lease by its MAC over a period; the giaddr and the server come along.
fn operators_ask(lab: &Lab) {
    let file = lab.path("server.toml").display().to_string();
    let ask = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(common::SERVER_BIN)
            .args(["history", "--config", &file, "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "history {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (addr, mac) = leases(lab).into_iter().next().expect("a lease");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = ask(&["--address", &addr.to_string(), "--at", &now.to_string()]);
    assert_eq!(at[0]["hardware-address"], mac.as_str(), "{at}");
    assert_eq!(at[0]["giaddr"], "198.18.0.2", "{at}");
    assert_eq!(at[0]["server"], "t1", "{at}");
    let (from, to) = ((now - 3600).to_string(), (now + 60).to_string());
    let of_mac = ask(&["--mac", &mac, "--from", &from, "--to", &to]);
    assert_eq!(of_mac.as_array().map(Vec::len), Some(1), "{of_mac}");
    assert_eq!(of_mac[0]["address"], addr.to_string(), "{of_mac}");
    let before = ask(&["--address", &addr.to_string(), "--at", "2020-01-01"]);
    assert_eq!(before, serde_json::json!([]), "nobody had it then");
}

fn p99_us(lab: &Lab) -> (u64, u64) {
    let socket = lab.path("control.sock").display().to_string();
    let stats = ctl_json(&socket, &["stats"]);
    (
        stats["latency"]["p99_us"].as_u64().unwrap(),
        stats["sent"]["ack"].as_u64().unwrap(),
    )
}

/// PostgreSQL and NATS stopped for 60 s while perfdhcp keeps asking: the ACKs are as
/// quick as with both up (the sinks wait, the workers do not), and once the engines are
/// back every ACK is in each of them once.
#[test]
fn postgres_and_nats_stopped_under_load_delay_no_ack_and_lose_nothing() {
    let Some(mut lab) = Lab::new("history-outage", "198.18.0.1/15") else {
        return;
    };
    let Some(mut pg) = Postgres::start("history-outage", &[]) else {
        return;
    };
    let mut nats = Nats::start(&lab);
    let sinks = all_sinks(&lab, &pg);
    relay_address(&lab);
    let server = start(&mut lab, Backend::Xdp, &sinks);
    perfdhcp_dora(&lab, 500, 10_000, 30, &[]);
    caught_up(&lab);
    let (p99_up, acks_up) = p99_us(&lab);
    assert!(lab.stop(server.pid).is_some_and(|s| s.success()));

    let server = start(&mut lab, Backend::Xdp, &sinks);
    let out = std::thread::scope(|s| {
        let load = s.spawn(|| perfdhcp_dora(&lab, 500, 35_000, 80, &[]));
        std::thread::sleep(Duration::from_secs(5));
        pg.stop();
        nats.stop();
        std::thread::sleep(Duration::from_secs(60));
        let socket = lab.path("control.sock").display().to_string();
        let status = ctl_json(&socket, &["status"]);
        for sink in status["history"].as_array().unwrap() {
            if sink["sink"] != "text" {
                assert_eq!(sink["connected"], false, "{status}");
                assert!(sink["lag_records"].as_u64().unwrap() > 1000, "{status}");
            }
        }
        pg.start_again();
        nats.again();
        load.join().unwrap()
    });
    let acks = perf_stats(&out, "REQUEST-ACK");
    assert!(acks.received >= 34_900, "{out}");
    let (p99_down, acks_down) = p99_us(&lab);
    eprintln!("ACK latency p99: {p99_up} us with both engines up, {p99_down} us with both stopped for 60 s");
    assert!(
        p99_down <= 3 * p99_up + 10_000,
        "ACKs slowed while the engines were down: p99 {p99_down} us against {p99_up} us"
    );
    let status = caught_up(&lab);
    eprintln!("after the outage: {}", status["history"]);
    check_engines(&lab, &pg, Some(acks_up + acks_down));
    assert!(lab.stop(server.pid).is_some_and(|s| s.success()));
}
