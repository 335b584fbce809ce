//! A full disk under the state directory: the server stops acknowledging leases it cannot
//! record, says so loudly, keeps running, and acknowledges again once space returns. The
//! state directory is a 2 MiB tmpfs this test mounts, with small journal segments so the
//! journal has to ask for space early. Needs root; see `common`.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{one_liner, perf_stats, perfdhcp_dora, require, run, Backend, Lab};

/// `clients` new clients from MAC `base_mac` on; perfdhcp's REQUEST-ACK counts.
fn dora(lab: &Lab, clients: u32, base_mac: &str) -> common::PerfStats {
    let mac = format!("mac={base_mac}");
    let text = perfdhcp_dora(lab, 500, clients, 20, &["-b", &mac]);
    perf_stats(&text, "REQUEST-ACK")
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_acks_loudly_and_they_resume_when_space_returns() {
    let Some(mut lab) = Lab::new("full-disk", "198.18.0.1/15") else {
        return;
    };
    require("perfdhcp");
    let state = lab.path("state");
    std::fs::create_dir_all(&state).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&state));
    let _mounted = Tmpfs(state.clone());
    let iface = lab.server_if.clone();
    let client_if = lab.client_if.clone();
    lab.in_client("ip", &["addr", "add", "198.18.0.2/15", "dev", &client_if]);
    let mut args = one_liner(
        &iface,
        "198.18.0.0/15",
        "198.18.1.0-198.18.255.250",
        Backend::Xdp,
    );
    let state_arg = state.to_str().unwrap();
    args.extend_from_slice(&["--state-dir", state_arg, "--journal-segment-size", "65536"]);
    let server = lab.start_server(&args);
    // Leave no room: the open segment has a little space, the next one none.
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=4k", "count=100000"])
        .output()
        .unwrap();

    let full = dora(&lab, 3000, "02:dd:00:00:00:00");
    assert!(
        full.received + 500 < full.sent,
        "ACKs went on with a full disk: {full:?}\n{}",
        server.log_text()
    );
    server.wait_for("cannot record the lease", Duration::from_secs(5));
    assert!(
        lab.alive(server.pid),
        "the server died:\n{}",
        server.log_text()
    );

    std::fs::remove_file(&filler).unwrap();
    let again = dora(&lab, 300, "02:de:00:00:00:00");
    assert_eq!(
        (again.received, again.drops),
        (again.sent, 0),
        "ACKs did not resume once space returned:\n{}",
        server.log_text()
    );
    let status = lab.stop(server.pid).expect("no exit on SIGTERM");
    assert!(status.success(), "{status:?}");
}
