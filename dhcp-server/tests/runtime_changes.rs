//! Changes made to a running server, driven with `dhcp-server ctl` against the real
//! binary in a namespace lab with udhcpc as the client: run-time reservations (added,
//! given to their host only, kept across a kill -9 and restart on the same state
//! directory, removed again, refused when they make no sense or clash) and reloads of the
//! configuration file (a new lease time for the next client, a broken file refused with
//! its file, line and key while the server keeps serving, restart-only keys named and
//! left alone, SIGHUP doing the same as `reload`). Each runs on both backends; needs root,
//! see `common`.

#[allow(dead_code)]
#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{one_liner, require, Backend, Lab, SERVER_BIN};
use serde_json::Value;

on_both_backends!(
    a_reservation_added_at_run_time_is_served_kept_and_removed,
    a_reload_applies_lease_times_and_refuses_a_broken_file,
);

const HOST: &str = "02:00:00:00:aa:01";
const RESERVED: &str = "192.0.2.150";

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(SERVER_BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// `ctl --json ARGS`, which must succeed: its result.
fn ctl_ok(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(socket, &all);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ctl --json ARGS`, which must fail with an error reply: its code and message.
fn ctl_refused(socket: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(socket, &all);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ctl {args:?} should fail: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        e["code"].as_str().unwrap().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

/// Gives the client end of the lab this Ethernet address.
fn set_mac(lab: &Lab, mac: &str) {
    let dev = &lab.client_if;
    lab.in_client("ip", &["addr", "flush", "dev", dev]);
    lab.in_client("ip", &["link", "set", "dev", dev, "down"]);
    lab.in_client("ip", &["link", "set", "dev", dev, "address", mac]);
    lab.in_client("ip", &["link", "set", "dev", dev, "up"]);
}

/// Runs udhcpc once (lease, then quit), asking for `wanted` if given, and returns the
/// address and lease time it was bound with.
fn udhcpc(lab: &Lab, wanted: Option<&str>) -> (String, u32) {
    require("udhcpc");
    let events = lab.path("udhcpc.events");
    let _ = std::fs::remove_file(&events);
    let script = lab.script(
        "udhcpc-script",
        &format!(
            "[ \"$1\" = bound ] && echo \"$ip $lease\" >> {}\nexit 0",
            events.display()
        ),
    );
    let mut args = vec!["20", "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1"];
    args.extend(["-i", &lab.client_if, "-s", script.to_str().unwrap()]);
    if let Some(w) = wanted {
        args.extend(["-r", w]);
    }
    lab.in_client("timeout", &args);
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("udhcpc bound nothing"));
    let (ip, lease) = line.split_once(' ').unwrap();
    (ip.to_owned(), lease.trim().parse().unwrap())
}

/// Kills the server as a crash would (SIGKILL) and waits until it is gone.
fn crash(lab: &mut Lab, pid: u32) {
    // SAFETY: kill(2) on a child the lab started and has not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.alive(pid) {
        assert!(Instant::now() < deadline, "the server survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `nth` MAC whose udhcpc (client identifier 01 and the MAC) the XDP program steers
/// to worker `shard` of two: the worker that may hand out an address it owns.
fn mac_on_shard(shard: u32, nth: usize) -> String {
    (2u8..)
        .map(|last| [2, 0, 0, 0, 0xbb, last])
        .filter(|m| {
            let mut id = vec![1];
            id.extend_from_slice(m);
            u32::from(dhcp_ebpf_common::loadb_hash(&id)) % 2 == shard
        })
        .nth(nth)
        .map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap()
}

fn free_in_pool(socket: &Path) -> u64 {
    ctl_ok(socket, &["stats"])["pools"][0]["free"]
        .as_u64()
        .unwrap()
}

fn a_reservation_added_at_run_time_is_served_kept_and_removed(backend: Backend) {
    let Some(mut lab) = Lab::new("reserve", "192.0.2.1/24") else {
        return;
    };
    let socket = lab.path("control.sock");
    let state = lab.path("state");
    let iface = lab.server_if.clone();
    let (s, st) = (socket.display().to_string(), state.display().to_string());
    let mut args = one_liner(&iface, "192.0.2.0/24", "192.0.2.10-192.0.2.200", backend);
    args.extend_from_slice(&["--control-socket", &s, "--state-dir", &st]);
    let server = lab.start_server(&args);

    // Requests that make no sense, or clash, are refused and change nothing.
    let (code, msg) = ctl_refused(
        &socket,
        &["reservation-add", "--address", "203.0.113.5", "--mac", HOST],
    );
    assert_eq!(code, "invalid-argument", "{msg}");
    assert!(
        msg.contains("203.0.113.5 is in no configured subnet"),
        "{msg}"
    );
    let (code, _) = ctl_refused(
        &socket,
        &["reservation-add", "--address", "192.0.2.255", "--mac", HOST],
    );
    assert_eq!(code, "invalid-argument");
    ctl_ok(
        &socket,
        &[
            "reservation-add",
            "--address",
            RESERVED,
            "--mac",
            HOST,
            "--host-name",
            "printer",
        ],
    );
    let (code, msg) = ctl_refused(
        &socket,
        &[
            "reservation-add",
            "--address",
            RESERVED,
            "--mac",
            "02:00:00:00:aa:09",
        ],
    );
    assert_eq!(code, "conflict");
    assert!(
        msg.contains("192.0.2.150 is already reserved for 02:00:00:00:aa:01"),
        "{msg}"
    );
    let (code, msg) = ctl_refused(
        &socket,
        &["reservation-add", "--address", "192.0.2.151", "--mac", HOST],
    );
    assert_eq!(code, "conflict");
    assert!(msg.contains("already has 192.0.2.150 reserved"), "{msg}");
    let (code, _) = ctl_refused(&socket, &["reload"]);
    assert_eq!(code, "unsupported", "the one-liner has no file to reload");

    // The host gets its address, the reservation shows in leases, reservations, status.
    set_mac(&lab, HOST);
    assert_eq!(udhcpc(&lab, None).0, RESERVED);
    let lease = ctl_ok(&socket, &["leases", "--address", RESERVED]);
    assert_eq!(lease["leases"][0]["reserved"], true, "{lease}");
    assert_eq!(lease["leases"][0]["mac"], HOST, "{lease}");
    let status = ctl_ok(&socket, &["status"]);
    assert_eq!(status["reservations"]["control"], 1, "{status}");

    // A crash and a restart on the same state directory keep it.
    crash(&mut lab, server.pid);
    let server = lab.start_server(&args);
    let listed = ctl_ok(&socket, &["reservations"]);
    let r = &listed["reservations"][0];
    assert_eq!(
        (&r["address"], &r["mac"], &r["host_name"], &r["source"]),
        (
            &Value::from(RESERVED),
            &Value::from(HOST),
            &Value::from("printer"),
            &Value::from("control")
        ),
        "{listed}"
    );
    assert!(server.log_text().contains("1 run-time reservations"));

    // Another client asking for it gets another address (on XDP, from the worker that
    // owns the address when it is not reserved).
    let owner = u32::from(RESERVED.parse::<std::net::Ipv4Addr>().unwrap()) % 2;
    let other = mac_on_shard(owner, 0);
    set_mac(&lab, &other);
    let (got, _) = udhcpc(&lab, Some(RESERVED));
    assert_ne!(got, RESERVED, "{other} got the reserved address");

    // Removed (with the host's lease deleted), the address is free for anyone.
    ctl_ok(&socket, &["lease-delete", "--address", RESERVED]);
    let free = free_in_pool(&socket);
    ctl_ok(&socket, &["reservation-del", "--address", RESERVED]);
    assert_eq!(free_in_pool(&socket), free + 1);
    let (code, _) = ctl_refused(&socket, &["reservation-del", "--address", RESERVED]);
    assert_eq!(code, "not-found");
    let newcomer = mac_on_shard(owner, 1);
    set_mac(&lab, &newcomer);
    let (got, _) = udhcpc(&lab, Some(RESERVED));
    assert_eq!(got, RESERVED, "{newcomer} could not have the freed address");

    // The removal was journaled too.
    crash(&mut lab, server.pid);
    let server = lab.start_server(&args);
    let listed = ctl_ok(&socket, &["reservations"]);
    assert_eq!(listed["reservations"], Value::Array(vec![]), "{listed}");
    let status = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(status.success());
}

/// The lab's configuration file, with a lease time and whatever `extra` adds to the
/// subnet.
fn config_text(lab: &Lab, backend: Backend, lease_time: &str, extra: &str) -> String {
    let (kind, workers) = match backend {
        Backend::Udp => ("udp", 1),
        Backend::Xdp => ("xdp", 2),
        Backend::XdpOneWorker => ("xdp", 1),
    };
    format!(
        "interfaces = [\"{iface}\"]\nbackend = \"{kind}\"\nworkers = {workers}\n\
         control-socket = \"{sock}\"\n\n[[subnet]]\nsubnet = \"192.0.2.0/24\"\n\
         interface = \"{iface}\"\npools = [\"192.0.2.10-192.0.2.200\"]\n\
         lease-time = {lease_time}\n{extra}",
        iface = lab.server_if,
        sock = lab.path("control.sock").display(),
    )
}

fn write_config(path: &PathBuf, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn a_reload_applies_lease_times_and_refuses_a_broken_file(backend: Backend) {
    let Some(mut lab) = Lab::new("reload", "192.0.2.1/24") else {
        return;
    };
    let file = lab.path("server.toml");
    let socket = lab.path("control.sock");
    write_config(&file, &config_text(&lab, backend, "3600", ""));
    let f = file.display().to_string();
    let server = lab.start_server(&["--config", &f]);
    set_mac(&lab, "02:00:00:00:cc:01");
    assert_eq!(udhcpc(&lab, None).1, 3600);

    // A new lease time, for the next client.
    write_config(&file, &config_text(&lab, backend, "600", ""));
    let report = ctl_ok(&socket, &["reload"]);
    assert_eq!(
        report["applied"][0], "subnet 192.0.2.0/24: lease-time 3600 -> 600",
        "{report}"
    );
    assert_eq!(report["restart_required"], Value::Array(vec![]), "{report}");
    set_mac(&lab, "02:00:00:00:cc:02");
    assert_eq!(udhcpc(&lab, None).1, 600);

    // A broken file changes nothing: the error names file, line and key.
    write_config(&file, &config_text(&lab, backend, "\"ten minutes\"", ""));
    let (code, msg) = ctl_refused(&socket, &["reload"]);
    assert_eq!(code, "invalid-argument");
    assert!(
        msg.contains(&format!("{f}:10: key 'subnet[0].lease-time': expected")),
        "{msg}"
    );
    set_mac(&lab, "02:00:00:00:cc:03");
    assert_eq!(udhcpc(&lab, None).1, 600, "still serving, as before");

    // What needs a restart is named and left alone; a file reservation applies.
    let reservation = "\n[[subnet.reservation]]\nhw-address = \"02:00:00:00:cc:04\"\n\
                       ip-address = \"192.0.2.222\"\n";
    let text = config_text(&lab, backend, "600", reservation)
        .replace("192.0.2.10-192.0.2.200", "192.0.2.10-192.0.2.100");
    write_config(&file, &text);
    let report = ctl_ok(&socket, &["reload"]);
    assert_eq!(
        report["restart_required"][0],
        "subnet 192.0.2.0/24: pools 192.0.2.10-192.0.2.200 -> 192.0.2.10-192.0.2.100",
        "{report}"
    );
    assert_eq!(
        report["applied"][0],
        "subnet 192.0.2.0/24: reservation 192.0.2.222 for 02:00:00:00:cc:04 added",
        "{report}"
    );
    set_mac(&lab, "02:00:00:00:cc:04");
    assert_eq!(udhcpc(&lab, None).0, "192.0.2.222");

    // SIGHUP does the same as reload, and says so in the log.
    write_config(&file, &config_text(&lab, backend, "900", reservation));
    // SAFETY: kill(2) on the server the lab started.
    unsafe { libc::kill(server.pid as i32, libc::SIGHUP) };
    server.wait_for(
        "applied subnet 192.0.2.0/24: lease-time 600 -> 900",
        Duration::from_secs(5),
    );
    set_mac(&lab, "02:00:00:00:cc:05");
    assert_eq!(udhcpc(&lab, None).1, 900);
    write_config(&file, &config_text(&lab, backend, "-1", reservation));
    // SAFETY: as above.
    unsafe { libc::kill(server.pid as i32, libc::SIGHUP) };
    server.wait_for(
        &format!("reload refused, the configuration stays as it runs: {f}:10: key 'subnet[0].lease-time'"),
        Duration::from_secs(5),
    );
    set_mac(&lab, "02:00:00:00:cc:06");
    assert_eq!(
        udhcpc(&lab, None).1,
        900,
        "still serving after a refused SIGHUP"
    );
    let status = ctl_ok(&socket, &["status"]);
    assert_eq!(
        status["config"]["file"],
        Value::from(f.as_str()),
        "{status}"
    );
    assert_eq!(status["reservations"]["file"], 1, "{status}");

    let status = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(status.success());
}
