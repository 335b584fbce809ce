//! Failover against real partners, in namespaces: our server with ISC dhcpd 4.4.3 in
//! both roles, and a pair of ours. Each pair must reach normal, serve clients from both
//! sides (load balancing), show every lease on both sides, and never bind one address
//! to two clients; a pair of ours must also survive a killed partner (partner-down) and
//! rebuild a partner started with an empty journal.
//!
//! The lab: the primary's and the secondary's namespaces joined by a failover veth
//! (198.51.100.1 and .2), and each joined to a client namespace whose bridge is the
//! clients' link (198.18.0.0/15: primary .0.1, secondary .0.2, perfdhcp .0.9).

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{require, run, wait_for_file, SERVER_BIN};

static COUNTER: AtomicU32 = AtomicU32::new(0);

const POOL: (&str, &str) = ("198.18.1.10", "198.18.1.59");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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
            format!("mclt = {}\nsplit = 128\n", self.mclt)
        } else {
            String::new()
        };
        let conf = format!(
            "interfaces = [\"{lan}\"]\n{backend}\nstate-dir = \"{state}\"\n\
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
            a = POOL.0,
            b = POOL.1,
        );
        let file = self.path(&format!("{}.toml", side.role()));
        fs::write(&file, conf).unwrap();
        let file = file.display().to_string();
        self.spawn(side, SERVER_BIN, &["run", "--config", &file]);
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
            "authoritative;\nping-check false;\n\
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
        let fo = format!("fo{}", &lan[2..]);
        self.spawn(
            side,
            "dhcpd",
            &["-4", "-d", "-cf", &cf, "-lf", &lf, "-pf", &pf, &lan, &fo],
        );
        leases
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
        // perfdhcp exits non-zero when any exchange dropped: the counts tell.
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns["c"],
                "perfdhcp",
                "-4",
                "-l",
                &self.cli,
                "-r",
                &rate.to_string(),
                "-R",
                &clients.to_string(),
                "-n",
                &clients.to_string(),
                "-p",
                &secs.to_string(),
                "-b",
                &format!("mac={base}"),
            ])
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

    /// Active leases our server on `side` holds, address → MAC, from its control socket.
    fn ours_active(&self, side: Side) -> HashMap<String, String> {
        let out = run(Command::new(SERVER_BIN).args([
            "ctl",
            "--socket",
            &self.socket(side).display().to_string(),
            "--json",
            "leases",
        ]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("ctl leases: {e}: {}", String::from_utf8_lossy(&out.stdout))
        });
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
                    l["mac"].as_str().unwrap_or("").to_string(),
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
