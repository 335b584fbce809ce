//! Failover against real partners, in namespaces: our server with ISC dhcpd 4.4.3 in
//! both roles, and a pair of ours. Each pair must reach normal, serve clients from both
//! sides (load balancing), show every lease on both sides, and never bind one address
//! to two clients; a pair of ours must also survive a killed partner (partner-down) and
//! rebuild a partner started with an empty journal.
//!
//! Fault tests (issue 7, section 8), a pair of ours (primary on XDP with two workers,
//! secondary on UDP, `sync` durability), each fault under a steady perfdhcp load that
//! keeps going while it happens:
//! - kill -9 the secondary, restart it on its journal; then the same for the primary;
//! - the failover link down (longer than max-response-delay), then up again;
//! - 30% random loss on the failover link for a while (netem where the kernel has it,
//!   else a classic BPF filter dropping at random at the veths' ingress), then removed;
//! - a rolling restart with SIGTERM, the secondary then the primary.
//!
//! After each fault, once both servers are normal again: no address acknowledged to two
//! clients whose leases overlap (every DHCPACK is captured on the clients' link); both
//! sides hold the same bindings, no address for two clients and no client with two
//! addresses; each client's last acknowledged lease active on both sides, for it, until
//! at least the end it was told.
//!
//! An address counts as told to two clients only while both leases run; a client's
//! lease of one address ends when it is acknowledged another (it started over).
//!
//! The lab: the primary's and the secondary's namespaces joined by a failover veth
//! (198.51.100.1 and .2), and each joined to a client namespace whose bridge is the
//! clients' link (198.18.0.0/15: primary .0.1, secondary .0.2, perfdhcp .0.9).

#[allow(dead_code)] // each test crate uses part of the shared harness
mod common;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::{ctl_json, require, run, wait_for_file, SERVER_BIN};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const POOL: (&str, &str) = ("198.18.1.10", "198.18.1.59");
/// Where dhcpd takes OMAPI requests (omshell), in its namespace.
const OMAPI_PORT: u16 = 7911;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Side {
    Primary,
    Secondary,
}

impl Side {
    fn role(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Secondary => "secondary",
        }
    }
    fn failover_addr(self) -> &'static str {
        match self {
            Side::Primary => "198.51.100.1",
            Side::Secondary => "198.51.100.2",
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Primary => Side::Secondary,
            Side::Secondary => Side::Primary,
        }
    }
}

struct PairLab {
    ns: HashMap<&'static str, String>,
    /// The client-side interface of each server, in its namespace.
    lan: HashMap<&'static str, String>,
    cli: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
    /// The pair's maximum client lead time: the first lease a client gets is this long.
    mclt: u32,
    /// The pool both sides share, first and last address.
    pool: (&'static str, &'static str),
    /// Our primary's `split`: how many hash buckets are its own.
    split: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PairLab {
    fn new(test: &str) -> Option<PairLab> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: needs root, which CI has"
            );
            eprintln!("{test}: skipped: needs root for network namespaces");
            return None;
        }
        require("perfdhcp");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{n}", std::process::id() % 10_000);
        let mut lab = PairLab {
            ns: HashMap::new(),
            lan: HashMap::new(),
            cli: format!("fc{id}cl"),
            dir: std::env::temp_dir().join(format!("failover-{test}-{id}")),
            children: Vec::new(),
            mclt: 30,
            pool: POOL,
            split: 128,
        };
        for (k, v) in [("p", "p"), ("s", "s"), ("c", "c")] {
            lab.ns.insert(k, format!("fo-{id}-{v}"));
        }
        lab.lan.insert("p", format!("fc{id}p"));
        lab.lan.insert("s", format!("fc{id}s"));
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).unwrap();
        let ip = |args: &[&str]| {
            run(Command::new("ip").args(args));
        };
        for ns in lab.ns.values() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (p, s, c) = (&lab.ns["p"], &lab.ns["s"], &lab.ns["c"]);
        let veth = |a: &str, ans: &str, b: &str, bns: &str| {
            ip(&[
                "link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns", bns,
            ]);
        };
        let (fo_p, fo_s) = (format!("fo{id}p"), format!("fo{id}s"));
        let (bp, bs, bc) = (format!("fb{id}p"), format!("fb{id}s"), format!("fb{id}c"));
        veth(&fo_p, p, &fo_s, s);
        veth(&lab.lan["p"], p, &bp, c);
        veth(&lab.lan["s"], s, &bs, c);
        veth(&lab.cli, c, &bc, c);
        ip(&["-n", c, "link", "add", "br0", "type", "bridge"]);
        for port in [&bp, &bs, &bc] {
            ip(&["-n", c, "link", "set", port, "master", "br0"]);
            ip(&["-n", c, "link", "set", port, "up"]);
        }
        for (ns, dev, addr) in [
            (p, &fo_p, "198.51.100.1/24"),
            (s, &fo_s, "198.51.100.2/24"),
            (p, &lab.lan["p"], "198.18.0.1/15"),
            (s, &lab.lan["s"], "198.18.0.2/15"),
            (c, &lab.cli, "198.18.0.9/15"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", c, "link", "set", "br0", "up"]);
        // The client namespace holds the bridge too: without this it also answers ARP
        // for the clients' address through br0, and a server that asks (the UDP
        // backend) may send its replies to the bridge's MAC instead of the clients'.
        run(Command::new("ip").args([
            "netns",
            "exec",
            c,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore",
        ]));
        Some(lab)
    }

    fn key(side: Side) -> &'static str {
        match side {
            Side::Primary => "p",
            Side::Secondary => "s",
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log(&self, side: Side) -> PathBuf {
        self.path(&format!("{}.log", side.role()))
    }

    fn spawn(&mut self, side: Side, program: &str, args: &[&str]) {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(side))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[Self::key(side)], program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        self.children.push((side.role().into(), child));
    }

    /// Our server on `side`, journal in `state` (a fresh directory is an empty journal).
    fn start_ours(&mut self, side: Side, backend: &str, state: &str, extra: &str) {
        let k = Self::key(side);
        let primary_only = if side == Side::Primary {
            format!("mclt = {}\nsplit = {}\n", self.mclt, self.split)
        } else {
            String::new()
        };
        let conf = format!(
            "interfaces = [\"{lan}\"]\n{backend}\nstate-dir = \"{state}\"\ndurability = \"sync\"\n\
             control-socket = \"{sock}\"\n\
             [failover]\nname = \"pair\"\nrole = \"{role}\"\naddress = \"{me}\"\n\
             peer-address = \"{peer}\"\nmax-response-delay = 6\n{primary_only}{extra}\n\
             [[subnet]]\nsubnet = \"198.18.0.0/15\"\ninterface = \"{lan}\"\n\
             pools = [\"{a}-{b}\"]\nlease-time = 600\n",
            lan = self.lan[k],
            state = self.path(state).display(),
            sock = self.socket(side).display(),
            role = side.role(),
            me = side.failover_addr(),
            peer = side.other().failover_addr(),
            a = self.pool.0,
            b = self.pool.1,
        );
        let file = self.path(&format!("{}.toml", side.role()));
        fs::write(&file, conf).unwrap();
        let file = file.display().to_string();
        self.spawn(side, SERVER_BIN, &["run", "--config", &file]);
    }

    /// The failover veth's end on `side`, in its namespace.
    fn fo_dev(&self, side: Side) -> String {
        format!("fo{}", &self.lan[Self::key(side)][2..])
    }

    fn socket(&self, side: Side) -> PathBuf {
        self.path(&format!("{}.sock", side.role()))
    }

    /// ISC dhcpd 4.4.3 on `side`, with the same pool and timers.
    fn start_dhcpd(&mut self, side: Side) -> PathBuf {
        require("dhcpd");
        let k = Self::key(side);
        let primary_only = if side == Side::Primary {
            format!(" mclt {}; split 128;", self.mclt)
        } else {
            String::new()
        };
        let conf = format!(
            "authoritative;\nping-check false;\nomapi-port {OMAPI_PORT};\n\
             default-lease-time 600; max-lease-time 600;\n\
             failover peer \"pair\" {{\n {role};\n address {me}; port 647;\n\
             peer address {peer}; peer port 647;\n max-response-delay 6; max-unacked-updates 10;\n\
             load balance max seconds 3;{primary_only}\n}}\n\
             subnet 198.18.0.0 netmask 255.254.0.0 {{\n\
             pool {{ failover peer \"pair\"; range {a} {b}; }}\n}}\n",
            role = side.role(),
            me = side.failover_addr(),
            peer = side.other().failover_addr(),
            a = POOL.0,
            b = POOL.1,
        );
        let cf = self.path("dhcpd.conf");
        fs::write(&cf, conf).unwrap();
        let leases = self.path("dhcpd.leases");
        fs::write(&leases, "").unwrap();
        let pid = self.path("dhcpd.pid");
        let (cf, lf, pf) = (
            cf.display().to_string(),
            leases.display().to_string(),
            pid.display().to_string(),
        );
        let lan = self.lan[k].clone();
        let fo = self.fo_dev(side);
        self.spawn(
            side,
            "dhcpd",
            &["-4", "-d", "-cf", &cf, "-lf", &lf, "-pf", &pf, &lan, &fo],
        );
        leases
    }

    /// Stops dhcpd on `side` as its operator would gracefully: the OMAPI control
    /// object's state set to shutdown (2). SIGTERM cannot: Debian's dhcpd is built
    /// without a handler for it and dies on the spot, telling its partner nothing.
    fn shutdown_dhcpd(&self, side: Side) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns[Self::key(side)], "omshell"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("omshell runs");
        let script = format!(
            "server 127.0.0.1\nport {OMAPI_PORT}\nconnect\nnew control\nopen\nset state = 2\nupdate\n"
        );
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(script.as_bytes()).unwrap();
        }
        let _ = child.wait();
    }

    fn wait_log(&self, side: Side, needle: &str, secs: u64) -> String {
        wait_for_file(&self.log(side), needle, Duration::from_secs(secs))
    }

    /// Kills our server on `side` at once (SIGKILL), as a crash would.
    fn kill(&mut self, side: Side) {
        for (role, c) in &mut self.children {
            if role == side.role() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.retain(|(role, _)| role != side.role());
    }

    /// perfdhcp DORA for `clients` distinct clients, `rate` a second, at most `secs`:
    /// how many exchanges completed.
    fn clients(&self, clients: u32, rate: u32, secs: u32, base: &str) -> u32 {
        let (clients, rate, secs) = (clients.to_string(), rate.to_string(), secs.to_string());
        let base = format!("mac={base}");
        self.perfdhcp(&[
            "-r", &rate, "-R", &clients, "-n", &clients, "-p", &secs, "-b", &base,
        ])
    }

    /// perfdhcp with `args` from the client namespace: how many exchanges completed.
    fn perfdhcp(&self, args: &[&str]) -> u32 {
        // perfdhcp exits non-zero when any exchange dropped: the counts tell.
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns["c"], "perfdhcp", "-4", "-l"])
            .arg(&self.cli)
            .args(args)
            .output()
            .expect("perfdhcp runs");
        let text = String::from_utf8_lossy(&out.stdout);
        // The second "received packets" block is the REQUEST/ACK exchange.
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("received packets: "))
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops our server on `side` with SIGTERM, as an operator would, and waits
    /// (bounded) for it to exit with status 0.
    fn stop(&mut self, side: Side) {
        let mut kept = Vec::new();
        for (role, mut c) in std::mem::take(&mut self.children) {
            if role != side.role() {
                kept.push((role, c));
                continue;
            }
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Ok(Some(st)) = c.try_wait() {
                    break Some(st);
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(
                status.is_some_and(|s| s.success()),
                "the {} did not stop cleanly on SIGTERM: {status:?}",
                side.role()
            );
        }
        self.children = kept;
    }

    /// `dhcp-server ctl --json ARGS` against our server on `side`: its reply.
    fn ctl(&self, side: Side, args: &[&str]) -> serde_json::Value {
        let out = run(Command::new(SERVER_BIN)
            .args(["ctl", "--socket"])
            .arg(self.socket(side))
            .arg("--json")
            .args(args));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ctl {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Reserves `addr` for `host` on our server on `side`, and waits until the partner
    /// lists the reservation too.
    fn reserve(&self, side: Side, addr: &str, host: &str) {
        self.ctl(side, &["reservation-add", "--address", addr, "--mac", host]);
        eventually(10, "the reservation on the partner", || {
            self.reservations(side.other())
                .get(addr)
                .map(String::as_str)
                == Some(host)
        });
    }

    /// The run-time reservations our server on `side` lists, address → MAC.
    fn reservations(&self, side: Side) -> HashMap<String, String> {
        let v = self.ctl(side, &["reservations", "--all"]);
        v["reservations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|r| r["source"] == "control")
            .map(|r| {
                (
                    r["address"].as_str().unwrap_or("").to_string(),
                    r["mac"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Our server on `side` stopped with SIGTERM: the partner hears it move to shutdown
    /// and moves to partner-down, all within `within` of the signal.
    fn stop_and_hand_over(&mut self, side: Side, within: Duration) {
        let stopping = Instant::now();
        self.stop(side);
        self.wait_log(side.other(), "peer moves from normal to shutdown", 1);
        self.wait_log(side.other(), "I move from normal to partner-down", 1);
        assert!(
            stopping.elapsed() < within,
            "the hand-over took {:?}",
            stopping.elapsed()
        );
        let log = fs::read_to_string(self.log(side)).unwrap();
        assert!(log.contains("I move from normal to shutdown"), "{log}");
        assert!(log.contains("I move from shutdown to recover"), "{log}");
    }

    /// A pair of ours, each with `extra` failover keys, normal.
    fn start_our_pair(&mut self, primary: &str, secondary: &str) {
        self.start_ours(Side::Primary, PRIMARY_BACKEND, "p-state", primary);
        self.start_ours(Side::Secondary, SECONDARY_BACKEND, "s-state", secondary);
        self.wait_log(Side::Primary, "Both servers normal", 40);
        self.wait_log(Side::Secondary, "Both servers normal", 40);
    }

    /// Active leases our server on `side` holds, address → MAC, from its control socket.
    fn ours_active(&self, side: Side) -> HashMap<String, String> {
        self.ours_leases(side)
            .into_iter()
            .map(|(a, (m, _))| (a, m))
            .collect()
    }

    /// Active leases our server on `side` holds, address → (MAC, end in Unix seconds).
    fn ours_leases(&self, side: Side) -> HashMap<String, (String, u64)> {
        let out = run(Command::new(SERVER_BIN).args([
            "ctl",
            "--socket",
            &self.socket(side).display().to_string(),
            "--json",
            "leases",
            "--all",
            "--limit",
            "1000",
        ]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("ctl leases: {e}: {}", String::from_utf8_lossy(&out.stdout))
        });
        // The latest listing stays in the lab directory for a failure's evidence.
        let _ = fs::write(
            self.path(&format!("{}-leases.json", side.role())),
            &out.stdout,
        );
        let list = v
            .get("leases")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        list.iter()
            .filter(|l| l["state"] == "active")
            .map(|l| {
                (
                    l["address"].as_str().unwrap().to_string(),
                    (
                        l["mac"].as_str().unwrap_or("").to_string(),
                        l["expires"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    }
}

impl Drop for PairLab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.ns.values() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Active bindings in a dhcpd leases file, address → MAC (the last block of an address
/// wins, as dhcpd reads it).
fn dhcpd_active(leases: &PathBuf) -> HashMap<String, String> {
    let text = fs::read_to_string(leases).unwrap_or_default();
    let mut state: HashMap<String, (String, String)> = HashMap::new();
    let mut current: Option<(String, String, String)> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("lease ") {
            current = Some((
                rest.trim_end_matches(" {").to_string(),
                String::new(),
                String::new(),
            ));
        } else if let Some(c) = current.as_mut() {
            if let Some(s) = l.strip_prefix("binding state ") {
                c.1 = s.trim_end_matches(';').to_string();
            } else if let Some(h) = l.strip_prefix("hardware ethernet ") {
                c.2 = h.trim_end_matches(';').to_string();
            } else if l == "}" {
                let (a, s, h) = current.take().unwrap();
                state.insert(a, (s, h));
            }
        }
    }
    state
        .into_iter()
        .filter(|(_, (s, _))| s == "active")
        .map(|(a, (_, h))| (a, h))
        .collect()
}

/// Every address bound on both sides is bound to the same client, and no client holds
/// two addresses across the pair.
fn consistent(a: &HashMap<String, String>, b: &HashMap<String, String>) {
    for (addr, mac) in a {
        if let Some(other) = b.get(addr) {
            assert_eq!(mac, other, "{addr} bound to two clients across the pair");
        }
    }
    let mut by_mac: HashMap<&str, &str> = HashMap::new();
    for (addr, mac) in a.iter().chain(b) {
        if let Some(prev) = by_mac.insert(mac, addr) {
            assert_eq!(prev, addr, "{mac} holds {prev} and {addr} across the pair");
        }
    }
}

/// Waits until `f` holds, for at most `secs`.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// dhcpd and ours in the given roles reach normal; clients are served by both; each
/// side's leases show on the other.
fn with_isc(ours: Side, backend: &str, test: &str) {
    let Some(mut lab) = PairLab::new(test) else {
        return;
    };
    let leases = lab.start_dhcpd(ours.other());
    lab.start_ours(ours, backend, "state", "");
    lab.wait_log(ours, "Both servers normal", 40);
    lab.wait_log(ours.other(), "Both servers normal", 40);
    let served = lab.clients(24, 12, 8, "00:0c:01:00:00:00");
    assert!(served >= 20, "only {served} of 24 clients got a lease");
    let theirs = lab.wait_log(ours.other(), "DHCPACK on", 5);
    assert!(
        theirs.contains("load balance to peer"),
        "dhcpd balanced nothing to us"
    );
    let mine = lab.wait_log(ours, "DHCPACK on", 5);
    assert!(mine.contains("load-balanced") || mine.contains("DHCPACK"));
    eventually(10, "every lease on both sides", || {
        let a = lab.ours_active(ours);
        let b = dhcpd_active(&leases);
        consistent(&a, &b);
        a.len() as u32 >= served && a.keys().all(|k| b.contains_key(k)) && b.len() == a.len()
    });
}

#[test]
fn isc_primary_and_our_secondary_serve_together() {
    with_isc(Side::Secondary, "backend = \"udp\"", "isc-primary");
}

#[test]
fn our_primary_on_xdp_and_isc_secondary_serve_together() {
    with_isc(
        Side::Primary,
        "backend = \"xdp\"\nworkers = 2",
        "isc-secondary",
    );
}

/// Graceful stops between dhcpd and ours, both ways. Ours stopped with SIGTERM moves to
/// shutdown and says so; dhcpd moves to partner-down at once. Ours back on its journal
/// recovers without waiting out the MCLT and the pair is normal again. Then dhcpd,
/// stopped through OMAPI as its operator would, does the same to us.
#[test]
fn isc_primary_and_our_secondary_hand_over_on_a_graceful_stop() {
    let Some(mut lab) = PairLab::new("isc-stop") else {
        return;
    };
    lab.start_dhcpd(Side::Primary);
    lab.start_ours(Side::Secondary, "backend = \"udp\"", "state", "");
    lab.wait_log(Side::Secondary, "Both servers normal", 40);
    lab.wait_log(Side::Primary, "Both servers normal", 40);
    let served = lab.clients(8, 8, 5, "00:0c:0a:00:00:00");
    assert!(served >= 6, "only {served} of 8 clients got a lease");

    lab.stop_and_hand_over(Side::Secondary, Duration::from_secs(4));

    fs::rename(lab.log(Side::Secondary), lab.path("secondary-first.log")).unwrap();
    lab.start_ours(Side::Secondary, "backend = \"udp\"", "state", "");
    let back = lab.wait_log(Side::Secondary, "Both servers normal", 40);
    assert!(!back.contains("recover-wait"), "{back}");
    lab.wait_log(Side::Primary, "I move from partner-down to normal", 10);

    // Settled first: dhcpd sends the updates it owes on entering normal.
    std::thread::sleep(Duration::from_secs(3));
    lab.shutdown_dhcpd(Side::Primary);
    lab.wait_log(Side::Secondary, "peer moves from normal to shutdown", 30);
    lab.wait_log(Side::Secondary, "I move from normal to partner-down", 5);
}

/// A pair of ours: the secondary stopped with SIGTERM tells the primary, which moves to
/// partner-down at once (well inside max-response-delay) and serves alone; back on its
/// journal, the secondary recovers without waiting out the MCLT, with the same leases.
#[test]
fn a_pair_of_ours_hands_over_on_a_graceful_stop() {
    let Some(mut lab) = PairLab::new("ours-stop") else {
        return;
    };
    lab.mclt = 60;
    lab.start_our_pair("", "");
    let served = lab.clients(16, 8, 6, "00:0c:0b:00:00:00");
    assert!(served >= 13, "only {served} of 16 clients got a lease");

    // max-response-delay is 6 s: the hand-over does not wait for it.
    lab.stop_and_hand_over(Side::Secondary, Duration::from_secs(3));
    let alone = lab.clients(8, 8, 5, "00:0c:0c:00:00:00");
    assert!(alone >= 7, "alone, the primary served {alone} of 8");
    let before = lab.ours_active(Side::Primary);

    fs::rename(lab.log(Side::Secondary), lab.path("secondary-first.log")).unwrap();
    lab.start_ours(Side::Secondary, SECONDARY_BACKEND, "s-state", "");
    let back = lab.wait_log(Side::Secondary, "Both servers normal", 40);
    assert!(!back.contains("recover-wait"), "{back}");
    lab.wait_log(Side::Primary, "I move from partner-down to normal", 10);
    eventually(10, "the same leases on both after the restart", || {
        let (a, b) = (
            lab.ours_active(Side::Primary),
            lab.ours_active(Side::Secondary),
        );
        consistent(&a, &b);
        a == b && before.keys().all(|k| a.contains_key(k))
    });
}

/// A pair of ours writing its lease history to one PostgreSQL: every lease is one span,
/// whichever server granted or renewed it (the other server applies the partner's update
/// and meets the same span rather than opening a second one).
#[test]
fn a_pair_of_ours_writes_one_span_per_lease_to_one_database() {
    let Some(mut lab) = PairLab::new("ours-history") else {
        return;
    };
    let Some(pg) = Postgres::start("ours-history", &[]) else {
        return;
    };
    let history = |name: &str| {
        format!(
            "[history]\nserver = \"{name}\"\n[history.postgres]\nurl = \"{}\"\n",
            pg.url()
        )
    };
    lab.start_our_pair(&history("p"), &history("s"));
    // The pool has 50 addresses, shared by the pair.
    let served = lab.clients(40, 20, 6, "00:0c:0d:00:00:00");
    assert!(served >= 36, "only {served} of 40 clients got a lease");
    // The same clients again: their second DORA renews, on either server.
    let again = lab.clients(40, 20, 6, "00:0c:0d:00:00:00");
    assert!(again >= 36, "only {again} of 40 clients renewed");
    for side in [Side::Primary, Side::Secondary] {
        let socket = lab.socket(side).display().to_string();
        eventually(30, "both servers' history delivered", || {
            let status = ctl_json(&socket, &["status"]);
            status["history"][0]["lag_records"] == 0 && status["history"][0]["connected"] == true
        });
    }
    let (a, b) = (
        lab.ours_active(Side::Primary),
        lab.ours_active(Side::Secondary),
    );
    consistent(&a, &b);
    let spans = pg.spans();
    assert_eq!(spans.len(), a.len(), "one span per lease: {spans:?}");
    for (addr, mac) in &a {
        let addr: Ipv4Addr = addr.parse().unwrap();
        assert_eq!(spans.get(&addr), Some(&(mac.clone(), 1)), "{addr}");
    }
    let writers = pg.psql("SELECT DISTINCT server FROM lease_span ORDER BY 1");
    assert_eq!(writers, "p\ns", "both servers wrote spans");
}

/// A pair of ours: a reservation added on the secondary shows on the primary; removed
/// on the primary, it is gone from the secondary too, and the address goes to another
/// client.
#[test]
fn a_pair_of_ours_replicates_reservations_and_their_removal() {
    let Some(mut lab) = PairLab::new("ours-resv") else {
        return;
    };
    // Four addresses, every client the primary's: once the primary handed the
    // secondary its half, the reserved address is the only other one it may give.
    lab.pool = ("198.18.1.10", "198.18.1.13");
    lab.split = 256;
    lab.start_our_pair("", "");
    let addr = "198.18.1.12";
    let host = "02:00:00:00:99:01";
    lab.reserve(Side::Secondary, addr, host);
    // Three clients, each asking again and again for 4 s.
    let clients = |base: &str| {
        let base = format!("mac={base}");
        lab.perfdhcp(&["-r", "2", "-R", "3", "-p", "4", "-b", &base])
    };
    assert!(clients("00:0c:0d:00:00:00") >= 1, "no client got a lease");
    let held = lab.ours_active(Side::Primary);
    assert!(!held.is_empty() && !held.contains_key(addr), "{held:?}");

    lab.ctl(Side::Primary, &["reservation-del", "--address", addr]);
    eventually(10, "the reservation gone from the secondary", || {
        !lab.reservations(Side::Secondary).contains_key(addr)
    });
    assert!(!lab.reservations(Side::Primary).contains_key(addr));
    assert!(clients("00:0c:0e:00:00:00") >= 1, "no client got a lease");
    eventually(10, "the address leased to another client on both", || {
        let (p, s) = (
            lab.ours_active(Side::Primary),
            lab.ours_active(Side::Secondary),
        );
        p.get(addr).is_some_and(|m| m.starts_with("00:0c:0e")) && p.get(addr) == s.get(addr)
    });
}

/// A pair of ours where every client is the secondary's (`split = 0`): once it has
/// leased most of its share, its rebalancing timer (min-balance 1 s) finds it short by
/// more than twice max-lease-misbalance and sends POOLREQ; the primary answers by
/// handing it free addresses, as the logs (in dhcpd's words) and `ctl stats` show.
#[test]
fn a_pair_of_ours_rebalances_a_pool_running_dry() {
    let Some(mut lab) = PairLab::new("ours-balance") else {
        return;
    };
    lab.split = 0;
    // The primary's own timer stays out of the way: the secondary asks first.
    lab.start_our_pair(
        "min-balance = 60\nmax-balance = 120",
        "min-balance = 1\nmax-balance = 2",
    );
    let pool = |side: Side| {
        let v = lab.ctl(side, &["stats"]);
        let p = &v["pools"][0];
        (p["free"].as_u64().unwrap(), p["partner"].as_u64().unwrap())
    };
    // Half each, give or take one per shard of the primary's (each balances its own).
    eventually(10, "the pool split in two", || {
        let (free, partner) = pool(Side::Secondary);
        free + partner == 50 && free >= 23
    });

    let (_, theirs) = pool(Side::Secondary);
    let served = lab.clients(24, 12, 4, "00:0c:0f:00:00:00");
    assert!(served >= 21, "only {served} of 24 clients got a lease");
    lab.wait_log(Side::Secondary, "(requesting peer rebalance!)", 10);
    let log = lab.wait_log(Side::Secondary, "pool response: ", 10);
    let given: u64 = log
        .split("pool response: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(given >= 8, "the primary gave {given}");
    // dhcpd balances per pool, and so do we: the line names the pool's range.
    let balanced = format!("balanced pool {}-{}", lab.pool.0, lab.pool.1);
    lab.wait_log(Side::Primary, &balanced, 5);
    eventually(10, "the secondary's share restored", || {
        let (free, partner) = pool(Side::Secondary);
        free >= given && partner + given == theirs
    });
}

/// A pair of ours, both on XDP: each server's program drops, besides the DISCOVERs of
/// the partner's clients, their broadcast REQUESTs naming the partner, so its workers
/// never see them (no `other-server` drops in its engine) and what its program left to
/// the partner is two messages for every client the partner served. Every client still
/// gets its lease, and both sides hold the same ones.
#[test]
fn a_pair_of_ours_on_xdp_leaves_the_partners_requests_in_the_program() {
    let Some(mut lab) = PairLab::new("ours-xdp") else {
        return;
    };
    let xdp = "backend = \"xdp\"\nworkers = 2";
    lab.start_ours(Side::Primary, xdp, "p-state", "");
    lab.start_ours(Side::Secondary, xdp, "s-state", "");
    lab.wait_log(Side::Primary, "Both servers normal", 40);
    lab.wait_log(Side::Secondary, "Both servers normal", 40);
    // 24 clients, with a second to finish the last exchanges once all have started.
    let served = lab.perfdhcp(&[
        "-r",
        "12",
        "-R",
        "24",
        "-n",
        "24",
        "-p",
        "6",
        "-W",
        "1000000",
        "-b",
        "mac=00:0c:10:00:00:00",
    ]);
    assert_eq!(served, 24, "every client gets its lease");
    eventually(10, "every lease on both sides", || {
        let (a, b) = (
            lab.ours_active(Side::Primary),
            lab.ours_active(Side::Secondary),
        );
        consistent(&a, &b);
        a == b && a.len() as u32 == served
    });
    let stats = |side: Side| {
        let v = lab.ctl(side, &["stats"]);
        let n = |group: &str, key: &str| v[group][key].as_u64().unwrap();
        Served {
            discovers: n("received", "discover"),
            requests: n("received", "request"),
            acks: n("sent", "ack"),
            other_server: n("drops", "other-server"),
        }
    };
    let (p, s) = (stats(Side::Primary), stats(Side::Secondary));
    assert_eq!(p.acks + s.acks, u64::from(served));
    assert!(p.acks > 0 && s.acks > 0, "both serve: {p:?} {s:?}");
    // The partner's REQUESTs stopped in the program: each engine saw only its own.
    for (side, e) in [("primary", &p), ("secondary", &s)] {
        assert_eq!(
            (e.requests, e.other_server),
            (e.acks, 0),
            "the {side}'s engine"
        );
    }
    lab.stop(Side::Primary);
    lab.stop(Side::Secondary);
    let left = |side: Side| -> u64 {
        let log = fs::read_to_string(lab.log(side)).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains(" left to the failover partner"))
            .unwrap_or_else(|| panic!("no XDP counters in the {} log", side.role()));
        line.trim_end_matches(" left to the failover partner")
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    // Every DISCOVER and REQUEST the partner's engine had, this program dropped: two
    // for each client the partner served, where it was one (the DISCOVER) before.
    for (side, other) in [(Side::Primary, &s), (Side::Secondary, &p)] {
        let left = left(side);
        assert_eq!(
            left,
            other.discovers + other.requests,
            "the {}'s program",
            side.role()
        );
        assert!(
            left >= 2 * other.acks,
            "the {}'s program: {left}",
            side.role()
        );
    }
}

/// What one of ours received and sent, from `ctl stats`.
#[derive(Debug)]
struct Served {
    discovers: u64,
    requests: u64,
    acks: u64,
    /// REQUESTs (and the like) naming another server, dropped by the engine.
    other_server: u64,
}

/// A pair of ours: normal, clients on both, the secondary killed, the primary alone in
/// partner-down (automatic after 2 s), then the secondary back with an empty journal:
/// it learns every binding from the primary, waits out the MCLT, and only then serves.
#[test]
fn a_pair_of_ours_survives_a_lost_partner_and_rebuilds_it() {
    let Some(mut lab) = PairLab::new("ours") else {
        return;
    };
    // Long enough that the first leases outlive the outage and the rebuild.
    lab.mclt = 60;
    lab.start_ours(
        Side::Primary,
        "backend = \"xdp\"\nworkers = 2",
        "p-state",
        "auto-partner-down = 2",
    );
    lab.start_ours(Side::Secondary, "backend = \"udp\"", "s-state", "");
    lab.wait_log(Side::Primary, "Both servers normal", 40);
    lab.wait_log(Side::Secondary, "Both servers normal", 40);
    let served = lab.clients(16, 8, 6, "00:0c:01:00:00:00");
    assert!(served >= 13, "only {served} of 16 clients got a lease");
    eventually(10, "the same leases on both", || {
        let (a, b) = (
            lab.ours_active(Side::Primary),
            lab.ours_active(Side::Secondary),
        );
        consistent(&a, &b);
        a == b && a.len() as u32 >= served
    });
    // A run-time reservation whose host has not come yet: only the reservation itself
    // can bring it back to a rebuilt partner.
    let (reserved, host) = (POOL.1, "02:00:00:00:99:02");
    lab.reserve(Side::Primary, reserved, host);

    lab.kill(Side::Secondary);
    lab.wait_log(
        Side::Primary,
        "I move from normal to communications-interrupted",
        20,
    );
    lab.wait_log(Side::Primary, "to partner-down", 20);
    let alone = lab.clients(8, 8, 5, "00:0c:02:00:00:00");
    assert!(alone >= 7, "alone, the primary served {alone} of 8");
    let before = lab.ours_active(Side::Primary);
    assert!(before.len() as u32 >= served + alone);

    // The secondary returns with nothing.
    fs::rename(lab.log(Side::Secondary), lab.path("secondary-first.log")).unwrap();
    lab.start_ours(Side::Secondary, "backend = \"udp\"", "s-state-empty", "");
    lab.wait_log(Side::Secondary, "peer update completed", 40);
    let rebuilt = lab.ours_active(Side::Secondary);
    assert_eq!(
        lab.reservations(Side::Secondary)
            .get(reserved)
            .map(String::as_str),
        Some(host),
        "the rebuilt secondary lacks the reservation"
    );
    consistent(&before, &rebuilt);
    for addr in before.keys() {
        assert!(
            rebuilt.contains_key(addr),
            "the rebuilt secondary lacks {addr}"
        );
    }
    // It serves nobody until MCLT has passed since it started recovering.
    let log = lab.wait_log(Side::Secondary, "I move from recover to recover-wait", 5);
    assert!(
        !log.contains("DHCPACK"),
        "the recovering secondary answered a client"
    );
    lab.wait_log(Side::Secondary, "Both servers normal", 90);
    lab.wait_log(Side::Primary, "I move from partner-down to normal", 10);
    let again = lab.clients(8, 8, 5, "00:0c:03:00:00:00");
    assert!(again >= 7, "after the rebuild the pair served {again} of 8");
    eventually(10, "the same leases on both after the rebuild", || {
        let (a, b) = (
            lab.ours_active(Side::Primary),
            lab.ours_active(Side::Secondary),
        );
        consistent(&a, &b);
        a == b
    });
}

// ---------------------------------------------------------------------------------------
// Fault tests: a pair of ours under load through crashes, a cut link, a lossy link and a
// rolling restart.

/// The fault tests' pool: room for every client of the load on either side alone.
const FAULT_POOL: (&str, &str) = ("198.18.1.10", "198.18.2.250");
/// Distinct clients perfdhcp draws from, and the exchanges it starts a second.
const LOAD_CLIENTS: u32 = 300;
const LOAD_RATE: u32 = 60;
/// Long enough that a first lease (capped at the MCLT) outlives every test.
const FAULT_MCLT: u32 = 300;
/// A lease end may differ by this much between what the client was told and what a
/// server holds (whole seconds on the server, the capture's clock on the client).
const END_SLACK: u64 = 2;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One DHCPACK as a client received it.
#[derive(Debug, Clone)]
struct Ack {
    /// When it was captured, Unix milliseconds.
    at_ms: u64,
    addr: Ipv4Addr,
    mac: String,
    /// The lease time it gave (option 51), seconds.
    lease: u32,
    /// The server identifier (option 54): which side answered.
    server: Ipv4Addr,
}

impl Ack {
    /// When the client's lease ends, Unix seconds.
    fn end(&self) -> u64 {
        self.at_ms / 1000 + u64::from(self.lease)
    }
}

impl std::fmt::Display for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to {} by {} at {}.{:03} for {} s",
            self.addr,
            self.mac,
            self.server,
            self.at_ms / 1000,
            self.at_ms % 1000,
            self.lease
        )
    }
}

/// A DHCPACK in an Ethernet frame (IPv4, UDP to port 67 as perfdhcp relays, or 68).
fn parse_ack(f: &[u8], at_ms: u64) -> Option<Ack> {
    if f.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.len() < ihl + 8 || ip[9] != 17 {
        return None;
    }
    let udp = &ip[ihl..];
    let port = u16::from_be_bytes([udp[2], udp[3]]);
    if port != 67 && port != 68 {
        return None;
    }
    let d = &udp[8..];
    if d.len() < 240 || d[0] != 2 || d[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let hlen = usize::from(d[2]).min(16);
    let mac = d[28..28 + hlen]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let (mut kind, mut lease, mut server) = (0, 0, Ipv4Addr::UNSPECIFIED);
    let mut i = 240;
    while i < d.len() {
        let code = d[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 || i + 1 >= d.len() {
            break;
        }
        let len = usize::from(d[i + 1]);
        let v = d.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => kind = v[0],
            (51, 4) => lease = u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            (54, 4) => server = Ipv4Addr::new(v[0], v[1], v[2], v[3]),
            _ => {}
        }
        i += 2 + len;
    }
    (kind == 5).then(|| Ack {
        at_ms,
        addr: Ipv4Addr::new(d[16], d[17], d[18], d[19]),
        mac,
        lease,
        server,
    })
}

/// Every DHCPACK that reaches the clients' interface: a thread enters the client
/// namespace and reads the frames from a packet socket. This is what the clients were
/// really told (an ACK leaves a server only once its lease is on disk), which perfdhcp
/// cannot list.
struct AckCapture {
    seen: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AckCapture {
    fn start(ns: &str, dev: &str) -> AckCapture {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, started) = mpsc::channel();
        let (ns, name) = (ns.to_string(), dev.to_string());
        let (into, done) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let fd = match capture_socket(&ns, &name) {
                Ok(fd) => {
                    let _ = ready.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                // SAFETY: a valid socket and a buffer of the given length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    if let Some(ack) = parse_ack(&buf[..n as usize], unix_ms()) {
                        into.lock().unwrap().push(ack);
                    }
                }
            }
        });
        started
            .recv_timeout(Duration::from_secs(5))
            .expect("the capture thread starts")
            .unwrap_or_else(|e| panic!("cannot capture on {dev}: {e}"));
        AckCapture {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn acks(&self) -> Vec<Ack> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for AckCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// In the calling thread: enter namespace `ns`, open a packet socket on `dev` for IPv4
/// frames, reads timing out every 100 ms so the thread can stop.
fn capture_socket(ns: &str, dev: &str) -> Result<OwnedFd, String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let handle = fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    // SAFETY: setns(2) moves only this thread; the descriptor is a namespace handle.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(os("setns"));
    }
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(os("packet socket"));
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(os(dev));
    }
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: the address is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound != 0 {
        return Err(os("bind"));
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    let buffer: libc::c_int = 4 << 20;
    // SAFETY: option values of the types and sizes the options take.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&buffer as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    Ok(fd)
}

/// What the clients were told, on its own: an address acknowledged to a second client
/// while the first one's lease still ran (neither released it: perfdhcp never does).
/// That is a duplicate binding the clients act on, whatever the servers hold later.
///
/// A client told a second address while its first lease ran is not flagged here:
/// perfdhcp's clients forget their address and DISCOVER afresh, so a server that has
/// not heard of the first binding (its partner out of reach) rightly offers another.
/// Which binding the pair keeps for the client is checked once it settles.
fn told_to_two_clients(acks: &[Ack]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_addr: HashMap<Ipv4Addr, &Ack> = HashMap::new();
    // A client holds one address: an ACK of another address to it ends its lease of
    // the earlier one (it started over with a DISCOVER), whatever end it was told.
    let mut moved: HashMap<(Ipv4Addr, &str), u64> = HashMap::new();
    let mut last: HashMap<&str, &Ack> = HashMap::new();
    for ack in acks {
        if let Some(prev) = last.insert(ack.mac.as_str(), ack) {
            if prev.addr != ack.addr {
                moved
                    .entry((prev.addr, prev.mac.as_str()))
                    .or_insert(ack.at_ms);
            }
        }
    }
    for ack in acks {
        if let Some(prev) = by_addr.insert(ack.addr, ack) {
            let prev_end_ms = moved
                .get(&(prev.addr, prev.mac.as_str()))
                .copied()
                .filter(|&m| m > prev.at_ms)
                .unwrap_or(prev.end() * 1000)
                .min(prev.end() * 1000);
            if prev.mac != ack.mac && prev_end_ms > ack.at_ms {
                problems.push(format!(
                    "{} acknowledged to two clients: {prev}, then {ack}",
                    ack.addr
                ));
            }
        }
    }
    problems
}

/// The pair against itself and against what the clients were told: every address
/// active on both sides for the same client, no client with two addresses, and each
/// client's latest ACK (if its lease still runs) active on both sides, for that client,
/// until at least the end it was given. Returns the differences.
fn pair_holds(
    acks: &[Ack],
    p: &HashMap<String, (String, u64)>,
    s: &HashMap<String, (String, u64)>,
    now: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, a, b) in [("primary", p, s), ("secondary", s, p)] {
        for (addr, (mac, _)) in a {
            match b.get(addr) {
                Some((other, _)) if other == mac => {}
                Some((other, _)) => problems.push(format!(
                    "{addr} bound to {mac} on the {name} and to {other} on its partner (two clients)"
                )),
                None => problems.push(format!("{addr} active for {mac} on the {name} only")),
            }
        }
        let mut by_mac: HashMap<&str, &str> = HashMap::new();
        for (addr, (mac, _)) in a {
            if let Some(prev) = by_mac.insert(mac, addr) {
                problems.push(format!(
                    "{mac} holds {prev} and {addr} on the {name} (two addresses)"
                ));
            }
        }
    }
    let mut latest: HashMap<&str, &Ack> = HashMap::new();
    for ack in acks {
        latest.insert(&ack.mac, ack);
    }
    for ack in latest.values() {
        if ack.end() <= now + END_SLACK {
            continue;
        }
        for (name, side) in [("primary", p), ("secondary", s)] {
            match side.get(&ack.addr.to_string()) {
                Some((mac, ends)) if *mac == ack.mac && *ends + END_SLACK >= ack.end() => {}
                Some((mac, ends)) => problems.push(format!(
                    "acknowledged {ack}, to end at {}; the {name} holds it for {mac} until {ends}",
                    ack.end()
                )),
                None => problems.push(format!(
                    "acknowledged {ack}, to end at {}; the {name} does not hold it (lost)",
                    ack.end()
                )),
            }
        }
    }
    problems.sort();
    problems
}

/// A pair of ours under load, and the faults done to it.
struct Faults {
    lab: PairLab,
    acks: AckCapture,
    /// Where each side's log stood when the current fault began.
    mark: HashMap<Side, usize>,
    /// The background perfdhcp, while it runs.
    load: Option<Child>,
    /// The MAC the load's clients start from.
    base: &'static str,
}

const PRIMARY_BACKEND: &str = "backend = \"xdp\"\nworkers = 2";
const SECONDARY_BACKEND: &str = "backend = \"udp\"";

impl Faults {
    /// The pair in normal, the capture running, no load yet.
    fn start(test: &str, base: &'static str) -> Option<Faults> {
        let mut lab = PairLab::new(test)?;
        lab.mclt = FAULT_MCLT;
        lab.pool = FAULT_POOL;
        lab.start_our_pair("", "");
        let acks = AckCapture::start(&lab.ns["c"], &lab.cli);
        Some(Faults {
            lab,
            acks,
            mark: HashMap::new(),
            load: None,
            base,
        })
    }

    fn log_text(&self, side: Side) -> String {
        fs::read_to_string(self.lab.log(side)).unwrap_or_default()
    }

    /// A fault begins: later waits look only at what the logs say from here on.
    fn mark(&mut self) {
        for side in [Side::Primary, Side::Secondary] {
            let len = self.log_text(side).len();
            self.mark.insert(side, len);
        }
    }

    fn since_mark(&self, side: Side) -> String {
        let text = self.log_text(side);
        let from = self.mark.get(&side).copied().unwrap_or(0).min(text.len());
        text[from..].to_string()
    }

    /// Waits until the log of `side` says `needle` after the mark.
    fn wait_since(&self, side: Side, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.since_mark(side);
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the {} did not log '{needle}' within {secs} s; its log since the fault:\n{text}",
                side.role()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The state `side` last moved to, from its log.
    fn state(&self, side: Side) -> String {
        let text = self.log_text(side);
        text.lines()
            .rev()
            .find_map(|l| l.split("I move from ").nth(1))
            .and_then(|rest| rest.split(" to ").nth(1))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// Waits until both sides have moved to normal since the mark (`moved`) or simply
    /// are normal, and stay so.
    fn wait_normal(&self, moved: bool, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let normal = [Side::Primary, Side::Secondary].into_iter().all(|side| {
                self.state(side) == "normal"
                    && (!moved || self.since_mark(side).contains(" to normal"))
            });
            if normal {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the pair is not normal {secs} s on: primary {}, secondary {}\n\
                 primary since the fault:\n{}\nsecondary since the fault:\n{}",
                self.state(Side::Primary),
                self.state(Side::Secondary),
                self.since_mark(Side::Primary),
                self.since_mark(Side::Secondary)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// perfdhcp in the background: LOAD_RATE DORA exchanges a second, drawn from
    /// LOAD_CLIENTS clients, until `load_off`.
    fn load_on(&mut self) {
        assert!(self.load.is_none());
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.lab.path("perfdhcp.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns["c"], "perfdhcp", "-4", "-l"])
            .arg(&self.lab.cli)
            .args(["-r", &LOAD_RATE.to_string()])
            .args(["-R", &LOAD_CLIENTS.to_string()])
            .args(["-p", "600", "-b", &format!("mac={}", self.base)])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("perfdhcp starts");
        self.load = Some(child);
    }

    fn load_off(&mut self) {
        if let Some(mut c) = self.load.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// ACKs `server` sent from `since` (Unix ms) on.
    fn served_by(&self, server: Side, since: u64) -> usize {
        let id: Ipv4Addr = match server {
            Side::Primary => Ipv4Addr::new(198, 18, 0, 1),
            Side::Secondary => Ipv4Addr::new(198, 18, 0, 2),
        };
        self.acks
            .acks()
            .iter()
            .filter(|a| a.at_ms >= since && a.server == id)
            .count()
    }

    fn restart(&mut self, side: Side) {
        match side {
            Side::Primary => self
                .lab
                .start_ours(Side::Primary, PRIMARY_BACKEND, "p-state", ""),
            Side::Secondary => {
                self.lab
                    .start_ours(Side::Secondary, SECONDARY_BACKEND, "s-state", "")
            }
        }
        self.wait_since(side, "ready", 20);
    }

    /// The load stopped and the pair normal: waits (bounded) until both sides hold the
    /// same bindings and every acknowledged lease, and checks what the clients were told.
    fn check(&mut self, after: &str) {
        self.load_off();
        let acks = self.acks.acks();
        let dump: String = acks.iter().map(|a| format!("{a}\n")).collect();
        fs::write(self.lab.path("acks.txt"), dump).unwrap();
        let twice = told_to_two_clients(&acks);
        assert!(
            twice.is_empty(),
            "{after}: clients were told duplicate bindings:\n{}",
            twice.join("\n")
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.lab.ours_leases(Side::Primary);
            let s = self.lab.ours_leases(Side::Secondary);
            let now = unix_ms() / 1000;
            let problems = pair_holds(&acks, &p, &s, now);
            // Two clients on one address is never a matter of waiting.
            let clash: Vec<&String> = problems
                .iter()
                .filter(|p| p.ends_with("(two clients)"))
                .collect();
            assert!(
                clash.is_empty(),
                "{after}: duplicate bindings across the pair:\n{clash:#?}"
            );
            if problems.is_empty() {
                let clients: std::collections::HashSet<&str> =
                    acks.iter().map(|a| a.mac.as_str()).collect();
                eprintln!(
                    "{after}: both sides hold the same {} leases; {} ACKs to {} clients checked",
                    p.len(),
                    acks.len(),
                    clients.len()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{after}: 30 s on, the pair still differs from what clients were told \
                 ({} problems; ACKs in {}):\n{}",
                problems.len(),
                self.lab.path("acks.txt").display(),
                problems
                    .iter()
                    .take(25)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The other side serves alone while `side` is down: it answered clients.
    fn assert_served_alone(&self, side: Side, since: u64, what: &str) {
        let alone = self.served_by(side.other(), since);
        assert!(
            alone >= 20,
            "{what}: the {} acknowledged only {alone} clients alone",
            side.other().role()
        );
    }

    /// kill -9 one side under load, restart it on its journal.
    fn crash_and_restart(&mut self, side: Side) {
        self.restart_under_load(
            side,
            "kill -9",
            "I move from normal to communications-interrupted",
            |lab, side| lab.kill(side),
        );
    }

    /// SIGTERM one side under load (it tells the other, which takes over), restart it
    /// on its journal.
    fn graceful_restart(&mut self, side: Side) {
        self.restart_under_load(
            side,
            "SIGTERM",
            "I move from normal to partner-down",
            |lab, side| lab.stop(side),
        );
    }

    /// Under load, `stop` takes one side down and the other logs `then`; it serves
    /// alone; the side comes back on its journal and the pair is checked.
    fn restart_under_load(
        &mut self,
        side: Side,
        how: &str,
        then: &str,
        stop: impl FnOnce(&mut PairLab, Side),
    ) {
        let what = format!("{how} of the {}", side.role());
        self.mark();
        self.load_on();
        std::thread::sleep(Duration::from_secs(3));
        let down = unix_ms();
        stop(&mut self.lab, side);
        self.wait_since(side.other(), then, 15);
        std::thread::sleep(Duration::from_secs(4));
        self.assert_served_alone(side, down, &what);
        self.restart(side);
        self.wait_normal(true, 40);
        std::thread::sleep(Duration::from_secs(3));
        self.check(&format!("after {what}"));
    }

    /// Runs `args` with `ip` in the namespace of `side`.
    fn ip(&self, side: Side, args: &[&str]) {
        run(Command::new("ip")
            .args(["-n", &self.lab.ns[PairLab::key(side)]])
            .args(args));
    }

    /// tc in the namespace of `side`; whether it succeeded, and what it said.
    fn tc(&self, side: Side, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns[PairLab::key(side)], "tc"])
            .args(args)
            .output()
            .expect("tc runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// 30% random loss on both ends of the failover link. netem where the kernel has
    /// it; else (sch_netem missing) the same loss from a classic BPF filter at each
    /// end's ingress: `ld rand; jge 0.3*2^32 → pass; drop`, in direct-action mode
    /// (TC_ACT_OK 0, TC_ACT_SHOT 2). Returns which one.
    fn lossy(&self) -> &'static str {
        const DROP_30: &str = "4,32 0 0 4294963256,53 0 1 1288490189,6 0 0 0,6 0 0 2";
        let mut how = "netem";
        for side in [Side::Primary, Side::Secondary] {
            let dev = self.lab.fo_dev(side);
            let (ok, err) = self.tc(
                side,
                &["qdisc", "add", "dev", &dev, "root", "netem", "loss", "30%"],
            );
            if ok {
                continue;
            }
            assert!(
                err.contains("unknown") || err.contains("No such file"),
                "tc netem failed: {err}"
            );
            how = "a BPF filter (this kernel has no sch_netem)";
            for args in [
                &["qdisc", "add", "dev", &dev, "clsact"][..],
                &[
                    "filter", "add", "dev", &dev, "ingress", "bpf", "da", "bytecode", DROP_30,
                ][..],
            ] {
                let (ok, err) = self.tc(side, args);
                assert!(ok, "tc {args:?}: {err}");
            }
        }
        how
    }

    fn lossless(&self) {
        for side in [Side::Primary, Side::Secondary] {
            let dev = self.lab.fo_dev(side);
            let _ = self.tc(side, &["qdisc", "del", "dev", &dev, "root"]);
            let _ = self.tc(side, &["qdisc", "del", "dev", &dev, "clsact"]);
        }
    }

    /// Pings across the failover link: how many of `n` came back.
    fn pings(&self, n: u32) -> u32 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns["p"], "ping", "-n", "-q"])
            .args(["-c", &n.to_string(), "-i", "0.05", "-W", "1"])
            .arg(Side::Secondary.failover_addr())
            .output()
            .expect("ping runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(", ")
            .find_map(|f| f.strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Faults {
    /// The failover link down for longer than max-response-delay: neither side hears
    /// the other, both go communications-interrupted and serve alone, each from its own
    /// free addresses; then up again, and both back to normal.
    fn cut_link(&mut self) {
        self.mark();
        self.load_on();
        std::thread::sleep(Duration::from_secs(3));
        let cut = unix_ms();
        let dev = self.lab.fo_dev(Side::Primary);
        self.ip(Side::Primary, &["link", "set", &dev, "down"]);
        for side in [Side::Primary, Side::Secondary] {
            self.wait_since(side, "I move from normal to communications-interrupted", 15);
        }
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(self.pings(3), 0, "the failover link is still up");
        let (p, s) = (
            self.served_by(Side::Primary, cut),
            self.served_by(Side::Secondary, cut),
        );
        assert!(
            p + s >= 20,
            "cut off, the pair served only {p} + {s} clients"
        );
        self.ip(Side::Primary, &["link", "set", &dev, "up"]);
        for side in [Side::Primary, Side::Secondary] {
            self.wait_since(side, "I move from communications-interrupted to normal", 30);
        }
        self.wait_normal(true, 10);
        std::thread::sleep(Duration::from_secs(3));
        self.check("after the failover link was down");
    }

    /// 30% of the frames either way on the failover link dropped for 15 s, then none.
    /// The pair may or may not lose the link meanwhile; either way it must end normal
    /// and agree.
    fn lossy_link(&mut self) {
        self.mark();
        self.load_on();
        std::thread::sleep(Duration::from_secs(2));
        let lossy = unix_ms();
        let how = self.lossy();
        let back = self.pings(40);
        assert!(
            (8..=32).contains(&back),
            "with 30% loss each way, {back} of 40 pings came back"
        );
        std::thread::sleep(Duration::from_secs(13));
        self.lossless();
        let served = self.served_by(Side::Primary, lossy) + self.served_by(Side::Secondary, lossy);
        assert!(served >= 100, "through the loss the pair served {served}");
        // Normal, and still normal a few seconds on (a link lost late comes back).
        self.wait_normal(false, 40);
        std::thread::sleep(Duration::from_secs(3));
        self.wait_normal(false, 30);
        let lost = [Side::Primary, Side::Secondary].map(|side| {
            self.since_mark(side)
                .matches("I move from normal to communications-interrupted")
                .count()
        });
        eprintln!(
            "30% loss by {how}: {back} of 40 pings came back; the link was lost {} / {} times",
            lost[0], lost[1]
        );
        self.check("after 30% loss on the failover link");
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        self.load_off();
    }
}

/// kill -9 the secondary under load; the primary serves alone; the secondary back on
/// its journal.
#[test]
fn fault_kill_9_the_secondary_under_load() {
    let Some(mut f) = Faults::start("kill-s", "00:0c:05:00:00:00") else {
        return;
    };
    f.crash_and_restart(Side::Secondary);
}

/// kill -9 the primary (XDP) under load; the secondary serves alone; the primary back
/// on its journal.
#[test]
fn fault_kill_9_the_primary_under_load() {
    let Some(mut f) = Faults::start("kill-p", "00:0c:06:00:00:00") else {
        return;
    };
    f.crash_and_restart(Side::Primary);
}

#[test]
fn fault_failover_link_down_under_load() {
    let Some(mut f) = Faults::start("link-down", "00:0c:07:00:00:00") else {
        return;
    };
    f.cut_link();
}

#[test]
fn fault_failover_link_lossy_under_load() {
    let Some(mut f) = Faults::start("link-loss", "00:0c:08:00:00:00") else {
        return;
    };
    f.lossy_link();
}

/// A rolling restart with SIGTERM: the secondary, then the primary, each back on its
/// journal while the other serves alone.
#[test]
fn fault_rolling_restart_with_sigterm_under_load() {
    let Some(mut f) = Faults::start("rolling", "00:0c:09:00:00:00") else {
        return;
    };
    f.graceful_restart(Side::Secondary);
    f.graceful_restart(Side::Primary);
}
