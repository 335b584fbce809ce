//! The lab demo: the release build of the server in the lab with the XDP backend and two
//! AF_XDP workers, then dhclient, udhcpc and perfdhcp asking it for leases. It prints what
//! each client got and what each worker and the XDP program saw, and tears the lab down,
//! also when a step fails.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::lab::{self, in_ns, Lab, DHCLIENT, LOAD, SERVER_IF, SERVER_NS, UDHCPC};
use crate::{is_root, sh, Result};

pub fn run() -> Result {
    if !is_root() {
        return Err("the demo creates network namespaces: run it as root".into());
    }
    let server = lab::release_binary("dhcp-server", "dhcp-server")?;
    let mut lab = Lab::start("dhcp-server-demo", lab::Layout::Switched)?;
    println!(
        "lab: server namespace {SERVER_NS} on {SERVER_IF} ({}); clients {}, {}, {}",
        lab::SERVER_ADDR,
        DHCLIENT.0,
        UDHCPC.0,
        LOAD.0
    );
    let socket = lab.dir.join("control.sock").display().to_string();
    let mut args = lab::one_liner();
    args.extend(["--control-socket".to_owned(), socket.clone()]);
    args.extend(
        [
            "--dns",
            "198.18.0.53",
            "--lease-time",
            "600",
            "--backend",
            "xdp",
            "--workers",
            "2",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = lab.spawn(SERVER_NS, &server, &args, "server.log")?;
    let log = lab.wait_for("server.log", "ready", Duration::from_secs(10))?;
    let ready = log
        .lines()
        .find(|l| l.contains("ready"))
        .unwrap_or_default();
    println!(
        "server: dhcp-server run --interface {SERVER_IF} --subnet {} ... --backend xdp --workers 2",
        lab::SUBNET
    );
    println!(
        "  {}",
        ready
            .split_once("ready")
            .map_or(ready, |r| r.1)
            .trim_start_matches(':')
            .trim()
    );

    let script = lab.script("dhclient-script", "echo \"$reason $new_ip_address $new_routers $new_domain_name_servers $new_dhcp_lease_time\"")?;
    let (lf, pf) = (
        lab.dir.join("dhclient.leases"),
        lab.dir.join("dhclient.pid"),
    );
    lab.spawn(
        DHCLIENT.0,
        "dhclient",
        &[
            "-d",
            "-4",
            "-lf",
            &lf.display().to_string(),
            "-pf",
            &pf.display().to_string(),
            "-sf",
            &script,
            DHCLIENT.1,
        ],
        "dhclient.log",
    )?;
    let got = lab.wait_for("dhclient-script.events", "BOUND", Duration::from_secs(20))?;
    let line = got
        .lines()
        .find(|l| l.starts_with("BOUND"))
        .unwrap_or_default();
    println!("dhclient: {}", describe(line));

    let script = lab.script("udhcpc-script", "echo \"$1 $ip $router $dns $lease\"")?;
    sh(in_ns(UDHCPC.0, "timeout")
        .args([
            "20", "udhcpc", "-f", "-q", "-n", "-i", UDHCPC.1, "-s", &script,
        ])
        .stderr(Stdio::null()))?;
    let got = fs::read_to_string(lab.dir.join("udhcpc-script.events")).unwrap_or_default();
    let line = got
        .lines()
        .find(|l| l.starts_with("bound"))
        .ok_or("udhcpc got no lease")?;
    println!("udhcpc:   {}", describe(line));

    println!("perfdhcp: 1,000 simulated clients doing DORA at 500/s ...");
    let out = in_ns(LOAD.0, "timeout")
        .args([
            "60", "perfdhcp", "-4", "-l", LOAD.1, "-r", "500", "-R", "1000", "-n", "1000", "-W",
            "2000000", "-p", "20",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = [
        "sent packets",
        "received packets",
        "drops ratio",
        "avg delay",
    ];
    for l in text
        .lines()
        .filter(|l| l.starts_with("***Statistics") || wanted.iter().any(|k| l.starts_with(k)))
    {
        println!("  {l}");
    }
    println!("dhcp-server ctl stats:");
    let stats = std::process::Command::new(&server)
        .args(["ctl", "--socket", &socket, "stats"])
        .output()
        .map_err(|e| e.to_string())?;
    for l in String::from_utf8_lossy(&stats.stdout).lines() {
        println!("  {l}");
    }
    lab.stop(pid);
    let log = fs::read_to_string(lab.dir.join("server.log")).unwrap_or_default();
    let acks = log.lines().filter(|l| l.contains("DHCPACK on")).count();
    println!("server: stopped; {acks} DHCPACKs logged");
    for l in log
        .lines()
        .filter(|l| l.contains("worker ") || l.contains("XDP on "))
    {
        println!("  {}", l.split_once("INFO ").map_or(l, |r| r.1));
    }
    println!("log kept at {}", lab.dir.join("server.log").display());
    Ok(())
}

/// "BOUND ip router dns lease" as a sentence.
fn describe(line: &str) -> String {
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |i: usize| f.get(i).copied().unwrap_or("-");
    format!(
        "address {}, router {}, dns {}, lease {} s",
        get(1),
        get(2),
        get(3),
        get(4)
    )
}
