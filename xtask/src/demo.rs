//! The lab demo: a bridge in a server namespace, one namespace per client joined to it by
//! veth, the release build of the server on the bridge, then dhclient, udhcpc and perfdhcp
//! asking it for leases. It prints what each client got and tears everything down, also
//! when a step fails. Addresses come from 198.18.0.0/15 only.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{is_root, sh, Result};

const SERVER_NS: &str = "dhcpdemo-srv";
const CLIENTS: [&str; 3] = ["dhcpdemo-dhclient", "dhcpdemo-udhcpc", "dhcpdemo-perf"];
const BRIDGE: &str = "demo-br";

struct Lab {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        teardown();
    }
}

/// Deletes the lab's namespaces (and with them the veths and bridge), if present.
fn teardown() {
    for ns in CLIENTS.iter().chain([&SERVER_NS]) {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

fn ip(args: &[&str]) -> Result {
    sh(Command::new("ip").args(args).stderr(Stdio::null()))
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

impl Lab {
    fn up() -> Result<Lab> {
        teardown(); // leftovers of a run that was killed
        let lab = Lab {
            dir: std::env::temp_dir().join("dhcp-server-demo"),
            children: Vec::new(),
        };
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).map_err(|e| e.to_string())?;
        ip(&["netns", "add", SERVER_NS])?;
        ip(&["-n", SERVER_NS, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&[
            "-n",
            SERVER_NS,
            "addr",
            "add",
            "198.18.0.1/15",
            "dev",
            BRIDGE,
        ])?;
        ip(&["-n", SERVER_NS, "link", "set", BRIDGE, "up"])?;
        for (i, ns) in CLIENTS.iter().enumerate() {
            let (s, c) = (format!("demo-s{i}"), format!("demo-c{i}"));
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", &s, "netns", SERVER_NS, "type", "veth", "peer", "name", &c, "netns",
                ns,
            ])?;
            ip(&["-n", SERVER_NS, "link", "set", &s, "master", BRIDGE, "up"])?;
            ip(&["-n", ns, "link", "set", &c, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> Result {
        let out = fs::File::create(self.dir.join(log)).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = in_ns(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        self.children.push(child);
        Ok(())
    }

    fn wait_for(&self, file: &str, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                return Err(format!("no '{needle}' in {file} after {limit:?}:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client script that records what the client was told; never the stock one, which
    /// would rewrite the host's resolv.conf (namespaces share the filesystem).
    fn script(&self, name: &str, record: &str) -> Result<String> {
        let path = self.dir.join(name);
        let events = self.dir.join(format!("{name}.events"));
        fs::write(
            &path,
            format!("#!/bin/sh\n{record} >> {}\nexit 0\n", events.display()),
        )
        .map_err(|e| e.to_string())?;
        sh(Command::new("chmod").arg("+x").arg(&path))?;
        Ok(path.display().to_string())
    }
}

pub fn run() -> Result {
    if !is_root() {
        return Err("the demo creates network namespaces: run it as root".into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo).args(["build", "--release", "-p", "dhcp-server"]))?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let server = root
        .join("target/release/dhcp-server")
        .display()
        .to_string();
    let mut lab = Lab::up()?;
    println!(
        "lab: server namespace {SERVER_NS} on bridge {BRIDGE} (198.18.0.1/15); clients {}",
        CLIENTS.join(", ")
    );
    lab.spawn(
        SERVER_NS,
        &server,
        &[
            "run",
            "--interface",
            BRIDGE,
            "--subnet",
            "198.18.0.0/15",
            "--range",
            "198.18.1.0-198.18.255.250",
            "--router",
            "198.18.0.1",
            "--dns",
            "198.18.0.53",
            "--lease-time",
            "600",
        ],
        "server.log",
    )?;
    lab.wait_for("server.log", "ready", Duration::from_secs(10))?;
    println!("server: ready (dhcp-server run --interface {BRIDGE} --subnet 198.18.0.0/15 ...)");

    let script = lab.script("dhclient-script", "echo \"$reason $new_ip_address $new_routers $new_domain_name_servers $new_dhcp_lease_time\"")?;
    let (lf, pf) = (
        lab.dir.join("dhclient.leases"),
        lab.dir.join("dhclient.pid"),
    );
    lab.spawn(
        CLIENTS[0],
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
            "demo-c0",
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
    sh(in_ns(CLIENTS[1], "timeout")
        .args([
            "20", "udhcpc", "-f", "-q", "-n", "-i", "demo-c1", "-s", &script,
        ])
        .stderr(Stdio::null()))?;
    let got = fs::read_to_string(lab.dir.join("udhcpc-script.events")).unwrap_or_default();
    let line = got
        .lines()
        .find(|l| l.starts_with("bound"))
        .ok_or("udhcpc got no lease")?;
    println!("udhcpc:   {}", describe(line));

    sh(Command::new("ip").args([
        "-n",
        CLIENTS[2],
        "addr",
        "add",
        "198.18.0.2/15",
        "dev",
        "demo-c2",
    ]))?;
    println!("perfdhcp: 1,000 simulated clients doing DORA at 500/s ...");
    let out = in_ns(CLIENTS[2], "timeout")
        .args([
            "60", "perfdhcp", "-4", "-l", "demo-c2", "-r", "500", "-R", "1000", "-n", "1000", "-W",
            "2000000", "-p", "20",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines().filter(|l| {
        l.starts_with("***Statistics")
            || [
                "sent packets",
                "received packets",
                "drops ratio",
                "avg delay",
            ]
            .iter()
            .any(|k| l.starts_with(k))
    }) {
        println!("  {l}");
    }
    let log = fs::read_to_string(lab.dir.join("server.log")).unwrap_or_default();
    let acks = log.lines().filter(|l| l.contains("DHCPACK on")).count();
    println!(
        "server: {acks} DHCPACKs logged; log kept at {}",
        lab.dir.join("server.log").display()
    );
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
