//! The lab: network namespaces joined by veth pairs to a bridge in a switch namespace,
//! everything inside 198.18.0.0/15. The server's interface is a veth end, not the bridge,
//! so XDP runs in native (driver) mode as it would on a NIC. `cargo xtask lab
//! up|down|status` manages it by hand; the demo and the benchmarks bring it up themselves
//! and take it down when done, also on failure.
//!
//! Address plan:
//! | namespace         | interface | address        | role                                  |
//! |-------------------|-----------|----------------|---------------------------------------|
//! | dhcplab-srv       | lab-srv   | 198.18.0.1/15  | the server under test                 |
//! | dhcplab-sw        | lab-br    | (none)         | the bridge every veth's other end is on |
//! | dhcplab-dhclient  | lab-c0    | (leased)       | dhclient                              |
//! | dhcplab-udhcpc    | lab-c1    | (leased)       | udhcpc                                |
//! | dhcplab-load      | lab-c2    | 198.18.0.2/15  | perfdhcp and dhcp-load                |
//! Servers lease from 198.18.1.0-198.19.255.250.
//!
//! The soak's failover rounds use the failover layout: the switch with the server's, a
//! second server's (`dhcplab-srv2`, `lab-srv2`, 198.18.0.3/15) and the load namespace's
//! veths on it, so every broadcast reaches both servers; the two talk failover over the
//! same link.
//!
//! The benchmark uses the pair layout instead: the same server and load namespaces,
//! addresses and interface names, joined by one veth pair with no switch between them,
//! so the bridge's forwarding is not counted against whichever server is measured.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{sh, Result};

pub const SERVER_NS: &str = "dhcplab-srv";
/// The server's interface.
pub const SERVER_IF: &str = "lab-srv";
const SWITCH_NS: &str = "dhcplab-sw";
const BRIDGE: &str = "lab-br";
pub const SERVER_ADDR: &str = "198.18.0.1/15";
pub const SUBNET: &str = "198.18.0.0/15";
pub const POOL: (&str, &str) = ("198.18.1.0", "198.19.255.250");
/// Client namespaces and their interfaces.
pub const DHCLIENT: (&str, &str) = ("dhcplab-dhclient", "lab-c0");
pub const UDHCPC: (&str, &str) = ("dhcplab-udhcpc", "lab-c1");
pub const LOAD: (&str, &str) = ("dhcplab-load", "lab-c2");
const LOAD_ADDR: &str = "198.18.0.2/15";
/// The failover layout's second server, its interface and address.
pub const SERVER2: (&str, &str) = ("dhcplab-srv2", "lab-srv2");
pub const SERVER2_ADDR: &str = "198.18.0.3/15";
const CLIENTS: [(&str, &str); 3] = [DHCLIENT, UDHCPC, LOAD];
/// Every namespace with its interface, for listing and removal.
const ALL: [(&str, &str); 6] = [
    (SERVER_NS, SERVER_IF),
    SERVER2,
    (SWITCH_NS, BRIDGE),
    DHCLIENT,
    UDHCPC,
    LOAD,
];

pub struct Lab {
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        down();
    }
}

fn ip(args: &[&str]) -> Result {
    sh(Command::new("ip").args(args).stderr(Stdio::null()))
}

pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Starts `program` in namespace `ns` with its output in the file `log` (truncated), and
/// keeps the child in `children` for the caller to stop; returns its pid.
pub fn spawn_logged(
    ns: &str,
    program: &str,
    args: &[&str],
    log: &Path,
    children: &mut Vec<Child>,
) -> Result<u32> {
    let out = fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = in_ns(ns, program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child.id();
    children.push(child);
    Ok(pid)
}

/// How the namespaces are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every client namespace on a bridge with the server: the demo's lab.
    Switched,
    /// The load namespace alone, straight to the server: the benchmark's.
    Pair,
    /// Two servers and the load namespace on the bridge: a failover pair's.
    Failover,
}

/// A veth pair between two namespaces, both ends up, each namespace's loopback up.
fn veth(a: (&str, &str), b: (&str, &str)) -> Result {
    ip(&[
        "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
    ])?;
    for (ns, ifname) in [a, b] {
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// The server's and the load generator's addresses, the same in both layouts.
fn addresses() -> Result {
    ip(&[
        "-n",
        SERVER_NS,
        "addr",
        "add",
        SERVER_ADDR,
        "dev",
        SERVER_IF,
    ])?;
    ip(&["-n", LOAD.0, "addr", "add", LOAD_ADDR, "dev", LOAD.1])
}

/// Builds the pair layout (after removing any lab left by a killed run).
fn up_pair() -> Result {
    down();
    ip(&["netns", "add", SERVER_NS])?;
    ip(&["netns", "add", LOAD.0])?;
    veth((SERVER_NS, SERVER_IF), LOAD)?;
    addresses()
}

/// Builds the namespaces, veths and bridge (after removing any left by a killed run).
pub fn up() -> Result {
    let server = [(SERVER_NS, SERVER_IF)];
    let ends: Vec<(&str, &str)> = server.iter().chain(&CLIENTS).copied().collect();
    switched(&ends)?;
    addresses()
}

/// The failover layout: both servers and the load namespace on the bridge.
fn up_failover() -> Result {
    switched(&[(SERVER_NS, SERVER_IF), SERVER2, LOAD])?;
    addresses()?;
    ip(&[
        "-n",
        SERVER2.0,
        "addr",
        "add",
        SERVER2_ADDR,
        "dev",
        SERVER2.1,
    ])
}

/// A switch namespace with a bridge and, for each of `ends`, a namespace joined to it by
/// a veth (port `lab-s<i>` on the bridge).
fn switched(ends: &[(&str, &str)]) -> Result {
    down();
    ip(&["netns", "add", SWITCH_NS])?;
    // With br_netfilter loaded, bridged frames would go through iptables, a cost charged
    // to whichever server is measured; a switch does not do that.
    for table in ["iptables", "ip6tables", "arptables"] {
        let _ = in_ns(SWITCH_NS, "sysctl")
            .args(["-qw", &format!("net.bridge.bridge-nf-call-{table}=0")])
            .stderr(Stdio::null())
            .status();
    }
    ip(&["-n", SWITCH_NS, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["-n", SWITCH_NS, "link", "set", BRIDGE, "up"])?;
    for (i, &end) in ends.iter().enumerate() {
        let port = format!("lab-s{i}");
        ip(&["netns", "add", end.0])?;
        veth((SWITCH_NS, &port), end)?;
        ip(&["-n", SWITCH_NS, "link", "set", &port, "master", BRIDGE])?;
    }
    Ok(())
}

/// Deletes the lab's namespaces, and with them its veths and bridge.
pub fn down() {
    for (ns, _) in ALL {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// Prints which of the lab's namespaces exist and their addresses.
pub fn status() -> Result {
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| e.to_string())?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    for (ns, ifname) in ALL {
        if listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
        {
            let out = Command::new("ip")
                .args(["-n", ns, "-br", "addr", "show", ifname])
                .output()
                .map_err(|e| e.to_string())?;
            print!("{ns:18} up    {}", String::from_utf8_lossy(&out.stdout));
        } else {
            println!("{ns:18} down");
        }
    }
    Ok(())
}

impl Lab {
    /// Brings the lab up for one run; files go to a fresh temporary directory `name`.
    pub fn start(name: &str, layout: Layout) -> Result<Lab> {
        let dir = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        match layout {
            Layout::Switched => up()?,
            Layout::Pair => up_pair()?,
            Layout::Failover => up_failover()?,
        }
        Ok(Lab {
            dir,
            children: Vec::new(),
        })
    }

    /// Starts a process in a namespace with its output in `log`; returns its pid.
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> Result<u32> {
        spawn_logged(ns, program, args, &self.dir.join(log), &mut self.children)
    }

    /// Stops a process started with `spawn` (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self, pid: u32) {
        let Some(at) = self.children.iter().position(|c| c.id() == pid) else {
            return;
        };
        let mut child = self.children.swap_remove(at);
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn wait_for(&self, file: &str, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                return Err(format!("no '{needle}' in {file} after {limit:?}:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client script that records what the client was told; never the stock one, which
    /// would rewrite the host's resolv.conf (namespaces share the filesystem).
    pub fn script(&self, name: &str, record: &str) -> Result<String> {
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

/// `dhcp-server` arguments serving the lab's subnet, as the one-liner.
pub fn one_liner() -> Vec<String> {
    let range = format!("{}-{}", POOL.0, POOL.1);
    [
        "run",
        "--interface",
        SERVER_IF,
        "--subnet",
        SUBNET,
        "--range",
        &range,
        "--router",
        "198.18.0.1",
    ]
    .map(String::from)
    .to_vec()
}

/// A release build of one of the workspace's binaries; returns its path, in
/// CARGO_TARGET_DIR when that is set (as cargo builds it there), else in target/.
pub fn release_binary(package: &str, bin: &str) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(cargo).args(["build", "--release", "-q", "-p", package, "--bin", bin]))?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    Ok(target.join("release").join(bin).display().to_string())
}
