//! The control socket of a real running server, driven with `dhcp-server ctl` while
//! perfdhcp loads it: the counters match what perfdhcp sent and received exactly, the
//! leases are listed, released and deleted (and journaled), 100 control clients at once
//! get answers during the load, and `ctl shutdown` stops the server cleanly, removing the
//! socket. Needs root; see `common`.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ctl_json, one_liner, perf_stats, perfdhcp_dora, require, Backend, Lab, SERVER_BIN};

fn on_backend(backend: Backend) {
    let Some(mut lab) = Lab::new("operate", "198.18.0.1/15") else {
        return;
    };
    require("perfdhcp");
    let socket = lab.path("control.sock").display().to_string();
    let state = lab.path("state").display().to_string();
    let iface = lab.server_if.clone();
    let mut args = one_liner(
        &iface,
        "198.18.0.0/15",
        "198.18.1.0-198.18.255.250",
        backend,
    );
    args.extend_from_slice(&["--control-socket", &socket, "--state-dir", &state]);
    let server = lab.start_server(&args);
    let status = ctl_json(&socket, &["status"]);
    assert_eq!(status["ready"], true, "{status}");

    let client_if = lab.client_if.clone();
    lab.in_client("ip", &["addr", "add", "198.18.0.2/15", "dev", &client_if]);
    let askers = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            let many: Vec<_> = (0..100)
                .map(|_| {
                    Command::new(SERVER_BIN)
                        .args(["ctl", "--socket", &socket, "--json", "stats"])
                        .output()
                        .unwrap()
                })
                .collect();
            (many, started.elapsed())
        })
    };
    let text = perfdhcp_dora(&lab, 500, 2000, 20, &[]);
    let (offers, acks) = (
        perf_stats(&text, "DISCOVER-OFFER"),
        perf_stats(&text, "REQUEST-ACK"),
    );
    let (many, took) = askers.join().unwrap();
    assert!(
        many.iter().all(|o| o.status.success()),
        "a control client failed during the load"
    );
    assert!(
        took < Duration::from_secs(30),
        "100 control clients took {took:?}"
    );

    let stats = ctl_json(&socket, &["stats"]);
    let count = |side: &str, kind: &str| stats[side][kind].as_u64().unwrap();
    assert_eq!(count("received", "discover"), offers.sent, "{stats}");
    assert_eq!(count("sent", "offer"), offers.received, "{stats}");
    assert_eq!(count("received", "request"), acks.sent, "{stats}");
    assert_eq!(count("sent", "ack"), acks.received, "{stats}");
    // perfdhcp may start a few more exchanges than it has clients: a client that comes
    // again gets its own lease again, so the leases are the distinct clients ACKed.
    assert_eq!(
        stats["pools"][0]["active"].as_u64().unwrap(),
        acks.received.min(2000),
        "{stats}"
    );
    assert!(
        stats["latency"]["samples"].as_u64().unwrap() >= acks.received,
        "{stats}"
    );

    let page = ctl_json(&socket, &["leases", "--limit", "1000"]);
    let listed = page["leases"].as_array().unwrap();
    assert_eq!(listed.len(), 1000, "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    let addr = listed[0]["address"].as_str().unwrap().to_owned();
    ctl_json(&socket, &["lease-release", "--address", &addr]);
    let one = ctl_json(&socket, &["leases", "--address", &addr]);
    assert_eq!(one["leases"][0]["state"], "released", "{one}");
    ctl_json(&socket, &["lease-delete", "--address", &addr]);
    let none = ctl_json(&socket, &["leases", "--address", &addr]);
    assert_eq!(none["leases"].as_array().unwrap().len(), 0, "{none}");

    let bye = Command::new(SERVER_BIN)
        .args(["ctl", "--socket", &socket, "shutdown"])
        .output()
        .unwrap();
    assert!(bye.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.alive(server.pid) {
        assert!(
            Instant::now() < deadline,
            "ctl shutdown did not stop the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&socket).exists(),
        "the socket file stayed"
    );
    // Each shard's row is that worker's: the workers' own shutdown lines agree.
    let log = server.log_text();
    for row in stats["shards"].as_array().unwrap() {
        let (shard, received) = (
            row["shard"].as_u64().unwrap(),
            row["received"].as_u64().unwrap(),
        );
        if backend == Backend::Xdp {
            let line = format!("worker {shard}: {received} requests in");
            assert!(log.contains(&line), "no '{line}' in:\n{log}");
        }
    }
    // The operator's changes were journaled: after a restart the deleted lease is gone
    // and the others are still there.
    let server = lab.start_server(&args);
    let again = ctl_json(&socket, &["leases", "--address", &addr]);
    assert_eq!(again["leases"].as_array().unwrap().len(), 0, "{again}");
    let stats = ctl_json(&socket, &["stats"]);
    assert_eq!(
        stats["pools"][0]["active"].as_u64().unwrap(),
        acks.received.min(2000) - 1,
        "{stats}"
    );
    let status = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(status.success());
}

#[test]
fn the_control_socket_answers_during_load_on_xdp() {
    on_backend(Backend::Xdp);
}

#[test]
fn the_control_socket_answers_during_load_on_udp() {
    on_backend(Backend::Udp);
}
