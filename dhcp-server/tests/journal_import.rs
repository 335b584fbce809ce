//! Migrating from ISC dhcpd: the real dhcpd 4.4 serves dhclient in a namespace and writes
//! its leases file; `dhcp-server import-isc` takes it into a journal, `journal verify`
//! finds it clean, `journal dump` shows the lease, and our server started on that state
//! directory gives dhclient the same address back. Needs root; see `common`.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{dhclient_args, one_liner, require, run, wait_for_file, Backend, Lab, SERVER_BIN};

fn dhclient(lab: &mut Lab, name: &str) -> String {
    let ns = lab.client_ns.clone();
    let events = lab.path(&format!("{name}.events"));
    let script = lab.script(
        name,
        &format!(
            "echo \"$reason $new_ip_address\" >> {}\nexit 0",
            events.display()
        ),
    );
    let mut args = vec!["30".to_owned(), "dhclient".to_owned(), "-1".to_owned()];
    args.extend(dhclient_args(lab, name, &script));
    run(Lab::cmd(&ns, "timeout").args(&args));
    let pf = lab.path(&format!("{name}.pid"));
    let _ = Command::new("kill")
        .arg(std::fs::read_to_string(&pf).unwrap_or_default().trim())
        .output();
    let text = wait_for_file(&events, "BOUND ", Duration::from_secs(1));
    text.lines()
        .find_map(|l| l.strip_prefix("BOUND "))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_leases_file_written_by_isc_dhcpd_imports_and_serves_the_same_address() {
    let Some(mut lab) = Lab::new("isc-import", "192.0.2.1/24") else {
        return;
    };
    require("dhcpd");
    require("dhclient");
    let conf = lab.path("dhcpd.conf");
    std::fs::write(
        &conf,
        "authoritative;\nping-check false;\ndefault-lease-time 3600;\nmax-lease-time 7200;\nsubnet 192.0.2.0 netmask 255.255.255.0 {\n  range 192.0.2.100 192.0.2.150;\n}\n",
    )
    .unwrap();
    let leases = lab.path("dhcpd.leases");
    std::fs::write(&leases, "").unwrap();
    let (ns, iface) = (lab.server_ns.clone(), lab.server_if.clone());
    let pid = lab.start_dhcpd(&ns, &conf, &leases, &iface);
    let from_dhcpd = dhclient(&mut lab, "first");
    lab.stop(pid);
    let written = std::fs::read_to_string(&leases).unwrap();
    assert!(
        written.contains(&format!("lease {from_dhcpd} {{"))
            && written.contains("binding state active"),
        "{written}"
    );
    let mac =
        run(Lab::cmd(&lab.client_ns, "cat")
            .arg(format!("/sys/class/net/{}/address", lab.client_if)))
        .stdout;
    let mac = String::from_utf8_lossy(&mac).trim().to_owned();

    let state = lab.path("state");
    let tool = |args: &[&str]| {
        let out = Command::new(SERVER_BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = tool(&[
        "import-isc",
        "--leases",
        leases.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(said.contains("imported 1 leases"), "{said}");
    tool(&["journal", "verify", "--state-dir", state.to_str().unwrap()]);
    let isc = tool(&[
        "journal",
        "dump",
        "--format",
        "isc",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(isc.contains(&format!("lease {from_dhcpd} {{")), "{isc}");
    assert!(isc.contains(&format!("hardware ethernet {mac};")), "{isc}");
    assert!(isc.contains("binding state active;"), "{isc}");
    let json = tool(&[
        "journal",
        "dump",
        "--format",
        "json",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(json.contains(&from_dhcpd), "{json}");

    // Our server on that directory: dhclient, forgetting its own lease, gets the same one.
    // Our pool starts lower than dhcpd's, so a server that lost the lease would offer .50.
    let iface = lab.server_if.clone();
    let mut args = one_liner(
        &iface,
        "192.0.2.0/24",
        "192.0.2.50-192.0.2.150",
        Backend::Udp,
    );
    args.extend_from_slice(&["--state-dir", state.to_str().unwrap()]);
    lab.start_server(&args);
    let from_us = dhclient(&mut lab, "second");
    assert_eq!(from_us, from_dhcpd, "the migrated lease was not honoured");
}
