//! `cargo xtask bench --failover`: a load-balanced pair of our servers against one of ours
//! alone and against a Kea HA pair, in the same run, under the same generator (dhcp-load)
//! and method as `cargo xtask bench` (the highest offered rate with at most 2.5% of DORA
//! exchanges dropped, every step on freshly started servers; for our pair also at most
//! 2.5% of the step's leases not yet acknowledged by the partner at its end), and on the
//! same link for all:
//!
//! | namespace    | interface   | address            | role                                   |
//! |--------------|-------------|--------------------|----------------------------------------|
//! | dhcpbench-p  | bench-lan-p | 198.18.0.1/15      | the primary, or the server alone       |
//! |              | bench-fo-p  | 198.51.100.1/24    | its end of the failover link           |
//! | dhcpbench-s  | bench-lan-s | 198.18.0.2/15      | the secondary (idle for the single runs) |
//! |              | bench-fo-s  | 198.51.100.2/24    | its end of the failover link           |
//! | dhcpbench-c  | bench-br    | (none)             | the clients' link: a bridge with both servers' LAN veths and the generator's |
//! |              | bench-cli   | 198.18.0.9/15      | dhcp-load                              |
//!
//! Every DISCOVER and REQUEST reaches both servers (broadcast on the bridge); the server a
//! client's RFC 3074 hash bucket belongs to answers, since dhcp-load sends `secs` = 0,
//! below load-balance-max-seconds. The single servers run in the primary's namespace, so
//! they pay for the same bridge.
//!
//! Our servers: XDP backend, one worker each (two servers and the generator share the 2
//! cores of the machine this was written on), `durability = "sync"`, journal on disk;
//! the pair with `split = 128`, `mclt = 3600`, `load-balance-max-seconds = 3`. Kea:
//! memfile with persist (no fsync per lease), 2 threads, like `cargo xtask bench`; the HA
//! pair in load-balancing mode, the lease_cmds and HA hooks, the peers talking HTTP to
//! each other's own listener (`http-dedicated-listener`) on the failover link addresses,
//! each with its own half of the pool (the HA_server1 and HA_server2 classes, as Kea's
//! manual asks for load balancing).
//!
//! A fresh pair of ours must first exchange every free address of the pool (both start
//! in recover and ask for a full update) and balance the pool; an idle worker carries
//! out the failover link's orders only every 10 ms, which makes that take about an hour
//! for this pool (about 55 updates a second). So the benchmark syncs the pair once, with
//! `busy-poll = true` (the workers keep turning: about 30 s), stops both, and starts
//! every step's pair from copies of those two journals with `busy-poll = false`: both
//! come back in normal at once, with their halves of the free addresses, as a pair that
//! has been running would.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{cpu_secs, field, search_rates, stat_secs, Plan, Step, MAX_DROP_PERCENT};
use crate::lab::{self, in_ns};
use crate::{is_root, sh, Result};

const NS_C: &str = "dhcpbench-c";
const BRIDGE: &str = "bench-br";
/// The generator's interface, a veth whose other end is on the bridge.
const CLI: &str = "bench-cli";
const CLI_ADDR: &str = "198.18.0.9/15";
/// Maximum client lead time of our pair, in seconds.
const MCLT: u32 = 3600;
/// Binding updates each of our servers lets its partner have in flight. The window caps
/// the updates a second at the window over the round trip (the partner reads, applies
/// and journals each batch, then acknowledges it), as in TCP: at 0.4 of a CPU per server
/// the default of 100 held the pair to about 20,000 a second, while it served 31,600.
const MAX_UNACKED: u32 = 1000;
/// Lease time of every server.
const LEASE_TIME: u32 = 3600;
/// The port of each Kea HA peer's own HTTP listener.
const KEA_HA_PORT: u16 = 8000;
/// Kea's pool halves for the HA pair (HA_server1, HA_server2), together the lab's pool.
const KEA_HALVES: [(&str, &str); 2] =
    [(lab::POOL.0, "198.18.255.255"), ("198.19.0.0", lab::POOL.1)];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Primary,
    Secondary,
}

use Side::{Primary, Secondary};

impl Side {
    fn ns(self) -> &'static str {
        match self {
            Primary => "dhcpbench-p",
            Secondary => "dhcpbench-s",
        }
    }
    /// The interface on the clients' link.
    fn lan(self) -> &'static str {
        match self {
            Primary => "bench-lan-p",
            Secondary => "bench-lan-s",
        }
    }
    fn lan_addr(self) -> &'static str {
        match self {
            Primary => "198.18.0.1/15",
            Secondary => "198.18.0.2/15",
        }
    }
    /// The bridge port the LAN veth's other end is.
    fn port(self) -> &'static str {
        match self {
            Primary => "bench-bp",
            Secondary => "bench-bs",
        }
    }
    /// The failover link's interface and address.
    fn fo(self) -> &'static str {
        match self {
            Primary => "bench-fo-p",
            Secondary => "bench-fo-s",
        }
    }
    fn fo_addr(self) -> &'static str {
        match self {
            Primary => "198.51.100.1",
            Secondary => "198.51.100.2",
        }
    }
    fn role(self) -> &'static str {
        match self {
            Primary => "primary",
            Secondary => "secondary",
        }
    }
    fn other(self) -> Side {
        match self {
            Primary => Secondary,
            Secondary => Primary,
        }
    }
    /// Kea's name for this peer (its pool's class is HA_ and this).
    fn kea_name(self) -> &'static str {
        match self {
            Primary => "server1",
            Secondary => "server2",
        }
    }
}

/// The namespaces, the processes started in them, and the run's directory.
struct Bed {
    dir: PathBuf,
    children: Vec<Child>,
}

/// `--cpu-per-server`: every server process (ours and Kea's alike) gets the same share of
/// one CPU through a CPU cgroup per side, as if each ran on a machine of its own of that
/// size. Without it both servers of a pair and the generator share the 2 cores, so a
/// pair, which does more work per lease than one server (it also replicates each
/// binding), can never catch up with one server there.
struct CpuQuota {
    share: f64,
    groups: Vec<PathBuf>,
}

/// The CFS period of the quota: short, so that a throttled server waits at most a few
/// milliseconds rather than most of the default 100 ms.
const QUOTA_PERIOD_US: u32 = 10_000;

impl CpuQuota {
    fn new(share: f64) -> Result<CpuQuota> {
        if !(0.1..=1.0).contains(&share) {
            return Err(format!(
                "--cpu-per-server is a share of one CPU from 0.1 to 1, not {share}"
            ));
        }
        let quota = (share * f64::from(QUOTA_PERIOD_US)).round() as u32;
        let write = |path: PathBuf, value: String| {
            fs::write(&path, &value)
                .map_err(|e| format!("{}: cannot write {value:?}: {e}", path.display()))
        };
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let root = if v2 {
            write(
                PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
                "+cpu".into(),
            )?;
            PathBuf::from("/sys/fs/cgroup")
        } else if v1.join("cpu.cfs_quota_us").exists() {
            v1.to_path_buf()
        } else {
            return Err("--cpu-per-server needs the cgroup CPU controller \
                        (/sys/fs/cgroup/cpu or cgroup v2)"
                .into());
        };
        let mut q = CpuQuota {
            share,
            groups: Vec::new(),
        };
        for side in [Primary, Secondary] {
            let dir = root.join(format!("dhcpbench-{}", side.role()));
            if !dir.exists() {
                fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            q.groups.push(dir.clone());
            if v2 {
                write(dir.join("cpu.max"), format!("{quota} {QUOTA_PERIOD_US}"))?;
            } else {
                write(dir.join("cpu.cfs_period_us"), QUOTA_PERIOD_US.to_string())?;
                write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            }
        }
        Ok(q)
    }

    /// Moves process `pid` (all its threads) under `side`'s quota.
    fn confine(&self, side: Side, pid: u32) -> Result {
        let group = &self.groups[usize::from(side == Secondary)];
        fs::write(group.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("{}: cannot move {pid}: {e}", group.display()))
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        for g in &self.groups {
            let _ = fs::remove_dir(g);
        }
    }
}

fn ip(args: &[&str]) -> Result {
    sh(Command::new("ip").args(args).stderr(Stdio::null()))
}

fn down() {
    for ns in [Primary.ns(), Secondary.ns(), NS_C] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        down();
    }
}

impl Bed {
    fn up() -> Result<Bed> {
        down();
        let dir = std::env::temp_dir().join("dhcp-server-bench-failover");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // From here on, Drop removes whatever was built.
        let bed = Bed {
            dir,
            children: Vec::new(),
        };
        for ns in [Primary.ns(), Secondary.ns(), NS_C] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // As in the lab: bridged frames must not go through iptables.
        for table in ["iptables", "ip6tables", "arptables"] {
            let _ = in_ns(NS_C, "sysctl")
                .args(["-qw", &format!("net.bridge.bridge-nf-call-{table}=0")])
                .stderr(Stdio::null())
                .status();
        }
        let veth = |a: &str, ans: &str, b: &str, bns: &str| {
            ip(&[
                "link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns", bns,
            ])
        };
        veth(Primary.fo(), Primary.ns(), Secondary.fo(), Secondary.ns())?;
        ip(&["-n", NS_C, "link", "add", BRIDGE, "type", "bridge"])?;
        for side in [Primary, Secondary] {
            veth(side.lan(), side.ns(), side.port(), NS_C)?;
        }
        veth(CLI, NS_C, "bench-bc", NS_C)?;
        for port in [Primary.port(), Secondary.port(), "bench-bc"] {
            ip(&["-n", NS_C, "link", "set", port, "master", BRIDGE])?;
            ip(&["-n", NS_C, "link", "set", port, "up"])?;
        }
        ip(&["-n", NS_C, "link", "set", BRIDGE, "up"])?;
        let fo = |s: Side| format!("{}/24", s.fo_addr());
        let (fo_p, fo_s) = (fo(Primary), fo(Secondary));
        for (ns, dev, addr) in [
            (Primary.ns(), Primary.fo(), fo_p.as_str()),
            (Secondary.ns(), Secondary.fo(), fo_s.as_str()),
            (Primary.ns(), Primary.lan(), Primary.lan_addr()),
            (Secondary.ns(), Secondary.lan(), Secondary.lan_addr()),
            (NS_C, CLI, CLI_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(bed)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts a process in a namespace with its output in `log` (truncated); its pid.
    fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> Result<u32> {
        lab::spawn_logged(ns, program, args, &self.path(log), &mut self.children)
    }

    /// SIGTERM to every process of `pids` at once, then SIGKILL to those still running
    /// after `grace`; returns the pids that had to be killed.
    fn stop(&mut self, pids: &[u32], grace: Duration) -> Vec<u32> {
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        for &pid in pids {
            let Some(at) = self.children.iter().position(|c| c.id() == pid) else {
                continue;
            };
            let mut child = self.children.swap_remove(at);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    killed.push(pid);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        killed
    }

    fn wait_for(&self, log: &str, needle: &str, limit: Duration) -> Result {
        let deadline = Instant::now() + limit;
        loop {
            let text = fs::read_to_string(self.path(log)).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "no '{needle}' in {} after {limit:?}; its end:\n{}",
                    self.path(log).display(),
                    tail.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    OursSingle,
    OursPair,
    KeaSingle,
    KeaPair,
}

use Contender::{KeaPair, KeaSingle, OursPair, OursSingle};

impl Contender {
    const ALL: [Contender; 4] = [OursSingle, OursPair, KeaSingle, KeaPair];

    fn name(self) -> &'static str {
        match self {
            OursSingle => "dhcp-server alone (xdp 1 worker, sync)",
            OursPair => "dhcp-server pair (xdp 1 worker each, sync)",
            KeaSingle => "kea-dhcp4 alone (memfile, 2 threads)",
            KeaPair => "kea-dhcp4 HA pair (load-balancing)",
        }
    }

    fn start_rate(self) -> u32 {
        match self {
            OursSingle | OursPair => 8000,
            KeaSingle => 500,
            KeaPair => 250,
        }
    }

    fn sides(self) -> &'static [Side] {
        match self {
            OursSingle | KeaSingle => &[Primary],
            OursPair | KeaPair => &[Primary, Secondary],
        }
    }
}

/// One step's figures.
#[derive(Clone, Debug, Default)]
struct PairStep {
    step: Step,
    /// CPU time per lease of each server process (primary first), µs.
    cpu_each: Vec<f64>,
    /// CPU time per lease of the generator, µs.
    generator_cpu: f64,
    /// Our pair: binding updates each side still had queued or unacknowledged at the
    /// end of the step (the partner has not heard of those leases yet).
    backlog: Vec<f64>,
    /// Our pair: DHCPACKs each side sent (the load balancing at work).
    acks: Vec<f64>,
    /// Server processes that did not stop within the grace time after SIGTERM.
    hung: Vec<&'static str>,
    /// Leases of the step the busier side's partner had not heard of at its end, percent.
    backlog_pct: f64,
}

impl PairStep {
    /// What the rate search holds against the drop limit: exchanges dropped, or for our
    /// pair, leases the partner had not heard of at the end if more. A pair that serves
    /// faster than it replicates is not keeping up: its backlog only grows.
    fn failed_pct(&self) -> f64 {
        self.step.drop_pct.max(self.backlog_pct)
    }
}

/// CPU seconds of this process's children that have been waited for (the generator's,
/// which `ip netns exec` execs in place, once it has ended): cutime + cstime.
fn children_cpu_secs() -> f64 {
    stat_secs("/proc/self/stat", [13, 14])
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where Debian (any architecture) keeps Kea's hook libraries.
fn kea_hooks() -> Result<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib/kea/hooks")];
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("kea/hooks")));
    }
    dirs.into_iter()
        .find(|d| d.join("libdhcp_ha.so").is_file() && d.join("libdhcp_lease_cmds.so").is_file())
        .ok_or_else(|| {
            "libdhcp_ha.so and libdhcp_lease_cmds.so not found (Debian's kea-common has them)"
                .into()
        })
}

/// The binaries and files a run needs.
struct Kit {
    ours: String,
    load: String,
    hooks: PathBuf,
}

/// Our server's configuration: alone (`failover` false, always in the primary's place)
/// or one side of the pair.
fn ours_config(dir: &Path, side: Side, state: &str, failover: bool, busy_poll: bool) -> String {
    let mut c = format!(
        "interfaces = [\"{lan}\"]\nbackend = \"xdp\"\nworkers = 1\ndurability = \"sync\"\n\
         busy-poll = {busy_poll}\nstate-dir = \"{state}\"\ncontrol-socket = \"{sock}\"\n\
         log-level = \"info,dhcp_proto::engine=warn\"\n",
        lan = side.lan(),
        state = dir.join(state).display(),
        sock = dir.join(format!("{}.sock", side.role())).display(),
    );
    if failover {
        let _ = write!(
            c,
            "\n[failover]\nname = \"bench\"\nrole = \"{}\"\naddress = \"{}\"\n\
             peer-address = \"{}\"\nload-balance-max-seconds = 3\n\
             max-unacked-updates = {MAX_UNACKED}\n",
            side.role(),
            side.fo_addr(),
            side.other().fo_addr()
        );
        if side == Primary {
            let _ = writeln!(c, "mclt = {MCLT}\nsplit = 128");
        }
    }
    let _ = write!(
        c,
        "\n[[subnet]]\nsubnet = \"{}\"\ninterface = \"{}\"\npools = [\"{}-{}\"]\n\
         lease-time = {LEASE_TIME}\nrouters = [\"198.18.0.1\"]\n",
        lab::SUBNET,
        side.lan(),
        lab::POOL.0,
        lab::POOL.1
    );
    c
}

/// Kea's configuration: alone (`ha` false, in the primary's place) or one HA peer.
fn kea_config(dir: &Path, hooks: &Path, side: Side, ha: bool) -> String {
    let leases = dir.join(kea_leases(side, ha));
    let (pools, hooks) = if ha {
        let pool = |s: Side, (a, b): (&str, &str)| {
            format!(
                r#"{{ "pool": "{a} - {b}", "client-class": "HA_{}" }}"#,
                s.kea_name()
            )
        };
        let peer = |s: Side| {
            format!(
                r#"{{ "name": "{}", "url": "http://{}:{KEA_HA_PORT}/", "role": "{}", "auto-failover": true }}"#,
                s.kea_name(),
                s.fo_addr(),
                s.role()
            )
        };
        let lib = |name: &str| hooks.join(name).display().to_string();
        (
            format!(
                "{}, {}",
                pool(Primary, KEA_HALVES[0]),
                pool(Secondary, KEA_HALVES[1])
            ),
            format!(
                r#",
  "hooks-libraries": [
    {{ "library": "{cmds}" }},
    {{ "library": "{ha}", "parameters": {{ "high-availability": [{{
      "this-server-name": "{me}",
      "mode": "load-balancing",
      "heartbeat-delay": 1000,
      "multi-threading": {{ "enable-multi-threading": true, "http-dedicated-listener": true,
                            "http-listener-threads": 2, "http-client-threads": 2 }},
      "peers": [{p}, {s}]
    }}] }} }}
  ]"#,
                cmds = lib("libdhcp_lease_cmds.so"),
                ha = lib("libdhcp_ha.so"),
                me = side.kea_name(),
                p = peer(Primary),
                s = peer(Secondary),
            ),
        )
    } else {
        (
            format!(r#"{{ "pool": "{} - {}" }}"#, lab::POOL.0, lab::POOL.1),
            String::new(),
        )
    };
    // Per-lease lines (kea-dhcp4.leases) and the partner's lease updates
    // (kea-dhcp4.commands) are not logged: Kea would spend on them what ours does not.
    format!(
        r#"{{"Dhcp4": {{
  "interfaces-config": {{ "interfaces": ["{lan}"], "dhcp-socket-type": "raw" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0 }},
  "multi-threading": {{ "enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64 }},
  "valid-lifetime": {LEASE_TIME},
  "subnet4": [{{ "id": 1, "subnet": "{subnet}", "pools": [{pools}],
                 "option-data": [{{ "name": "routers", "data": "198.18.0.1" }}] }}],
  "loggers": [
    {{ "name": "kea-dhcp4", "output_options": [{{ "output": "stdout" }}], "severity": "INFO" }},
    {{ "name": "kea-dhcp4.leases", "output_options": [{{ "output": "stdout" }}], "severity": "WARN" }},
    {{ "name": "kea-dhcp4.commands", "output_options": [{{ "output": "stdout" }}], "severity": "WARN" }}
  ]{hooks}
}}}}"#,
        lan = side.lan(),
        leases = leases.display(),
        subnet = lab::SUBNET,
    )
}

fn kea_leases(side: Side, ha: bool) -> String {
    if ha {
        format!("kea-{}-leases4.csv", side.role())
    } else {
        "kea-alone-leases4.csv".into()
    }
}

fn log_of(c: Contender, side: Side) -> String {
    match c {
        OursSingle => "ours-alone.log".into(),
        OursPair => format!("ours-{}.log", side.role()),
        KeaSingle => "kea-alone.log".into(),
        KeaPair => format!("kea-{}.log", side.role()),
    }
}

/// Our pair's journals once synced and balanced, which every step starts from.
fn template(side: Side) -> String {
    format!("template-{}", side.role())
}

fn state_dir(side: Side) -> String {
    format!("state-{}", side.role())
}

/// Copies a journal directory without its lock file, and puts the copy on disk before
/// the step begins (its writeback would otherwise compete with the journals' msyncs).
fn copy_state(from: &Path, to: &Path) -> Result {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in fs::read_dir(from).map_err(|e| e.to_string())?.flatten() {
        if e.file_name() != "lock" {
            let dest = to.join(e.file_name());
            fs::copy(e.path(), &dest).map_err(|e| e.to_string())?;
            fs::File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `dhcp-server ctl --json` against one side; the reply's text.
fn ctl(bed: &Bed, kit: &Kit, side: Side, command: &str) -> String {
    let sock = bed.path(&format!("{}.sock", side.role()));
    Command::new(&kit.ours)
        .args(["ctl", "--socket", &sock.display().to_string(), "--json"])
        .args(["--timeout", "5", command])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Binding updates one side has not had acknowledged (queued and in flight).
fn backlog(bed: &Bed, kit: &Kit, side: Side) -> f64 {
    let status = ctl(bed, kit, side, "status");
    field(&status, "queued_updates") + field(&status, "unacked_updates")
}

/// Syncs a fresh pair of ours once (both journals empty), waits until the pool is
/// balanced and every update acknowledged, and keeps both journals as the template.
fn prepare_pair(bed: &mut Bed, kit: &Kit) -> Result<Duration> {
    let began = Instant::now();
    let mut pids = Vec::new();
    for side in [Primary, Secondary] {
        let conf = bed.path(&format!("sync-{}.toml", side.role()));
        let text = ours_config(&bed.dir, side, &template(side), true, true);
        fs::write(&conf, text).map_err(|e| e.to_string())?;
        let conf = conf.display().to_string();
        let log = format!("sync-{}.log", side.role());
        pids.push(bed.spawn(side.ns(), &kit.ours, &["run", "--config", &conf], &log)?);
    }
    for side in [Primary, Secondary] {
        let log = format!("sync-{}.log", side.role());
        bed.wait_for(&log, "Both servers normal", Duration::from_secs(300))?;
    }
    // Pool balancing moves half the free addresses to the secondary, one binding update
    // each; done when nothing is left to send on either side, twice in a row.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut quiet = 0;
    while quiet < 2 {
        if Instant::now() > deadline {
            return Err("the pair did not finish balancing its pool in 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(500));
        let pending: f64 = [Primary, Secondary]
            .iter()
            .map(|&s| backlog(bed, kit, s))
            .sum();
        let free = field(&ctl(bed, kit, Secondary, "stats"), "free");
        quiet = if pending == 0.0 && free > 0.0 {
            quiet + 1
        } else {
            0
        };
    }
    let killed = bed.stop(&pids, Duration::from_secs(10));
    if !killed.is_empty() {
        println!("  (the synced pair did not stop within 10 s of SIGTERM: killed)");
    }
    Ok(began.elapsed())
}

/// Starts the contender afresh; the pids of its server processes, primary first.
fn start(bed: &mut Bed, kit: &Kit, c: Contender) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for &side in c.sides() {
        let log = log_of(c, side);
        let pid = match c {
            OursSingle | OursPair => {
                let pair = c == OursPair;
                let state = state_dir(side);
                if pair {
                    copy_state(&bed.path(&template(side)), &bed.path(&state))?;
                } else {
                    let _ = fs::remove_dir_all(bed.path(&state));
                }
                let conf = bed.path(&format!("{}.toml", log.trim_end_matches(".log")));
                let text = ours_config(&bed.dir, side, &state, pair, false);
                fs::write(&conf, text).map_err(|e| e.to_string())?;
                let conf = conf.display().to_string();
                bed.spawn(side.ns(), &kit.ours, &["run", "--config", &conf], &log)?
            }
            KeaSingle | KeaPair => {
                let ha = c == KeaPair;
                fs::write(bed.path(&kea_leases(side, ha)), "").map_err(|e| e.to_string())?;
                let conf = bed.path(&format!("{}.json", log.trim_end_matches(".log")));
                fs::write(&conf, kea_config(&bed.dir, &kit.hooks, side, ha))
                    .map_err(|e| e.to_string())?;
                let env = |k: &str| format!("{k}={}", bed.dir.display());
                let args = [
                    env("KEA_PIDFILE_DIR"),
                    env("KEA_LOCKFILE_DIR"),
                    "kea-dhcp4".into(),
                    "-c".into(),
                    conf.display().to_string(),
                ];
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                bed.spawn(side.ns(), "env", &args, &log)?
            }
        };
        pids.push(pid);
    }
    let ready = match c {
        OursSingle => "ready",
        OursPair => "Both servers normal",
        KeaSingle => "DHCP4_STARTED",
        KeaPair => "to LOAD-BALANCING state",
    };
    for &side in c.sides() {
        if let Err(e) = bed.wait_for(&log_of(c, side), ready, Duration::from_secs(60)) {
            bed.stop(&pids, Duration::from_secs(3));
            return Err(e);
        }
    }
    Ok(pids)
}

/// Offers `rate` DORA exchanges a second to a freshly started `c` for the plan's step.
fn step(
    bed: &mut Bed,
    kit: &Kit,
    c: Contender,
    rate: u32,
    plan: &Plan,
    quota: Option<&CpuQuota>,
) -> Result<PairStep> {
    let pids = start(bed, kit, c)?;
    if let Some(q) = quota {
        for (&side, &pid) in c.sides().iter().zip(&pids) {
            if let Err(e) = q.confine(side, pid) {
                bed.stop(&pids, Duration::from_secs(3));
                return Err(e);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let generator_before = children_cpu_secs();
    let clients = ((f64::from(rate) * plan.step_secs) as u32).clamp(1, 120_000);
    let out = in_ns(NS_C, &kit.load)
        .args(["--interface", CLI, "--json"])
        .args(["--clients", &clients.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--duration", &plan.step_secs.to_string()])
        .output();
    let generator = children_cpu_secs() - generator_before;
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| cpu_secs(p) - before)
        .collect();
    let (backlog, acks): (Vec<f64>, Vec<f64>) = if c == OursPair {
        let sent_acks = |side| {
            let stats = ctl(bed, kit, side, "stats");
            let sent = stats.find("\"sent\":").map_or("", |i| &stats[i..]);
            field(sent, "ack")
        };
        c.sides()
            .iter()
            .map(|&s| (backlog(bed, kit, s), sent_acks(s)))
            .unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    let killed = bed.stop(&pids, Duration::from_secs(3));
    let hung: Vec<&'static str> = c
        .sides()
        .iter()
        .zip(&pids)
        .filter(|(_, p)| killed.contains(p))
        .map(|(s, _)| s.role())
        .collect();
    let out = out.map_err(|e| e.to_string())?;
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !json.contains("leases_per_s") {
        return Err(format!(
            "dhcp-load failed: {json}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let completed = field(&json, "completed");
    let per_lease = |secs: f64| {
        if completed > 0.0 {
            secs * 1e6 / completed
        } else {
            f64::NAN
        }
    };
    let s = PairStep {
        step: Step {
            rate,
            leases_per_s: field(&json, "leases_per_s"),
            drop_pct: field(&json, "drop_pct"),
            p50: field(&json, "p50_us"),
            p99: field(&json, "p99_us"),
            p999: field(&json, "p999_us"),
            cpu_us_per_lease: per_lease(cpu.iter().sum()),
        },
        cpu_each: cpu.iter().map(|&c| per_lease(c)).collect(),
        generator_cpu: per_lease(generator),
        backlog_pct: backlog.iter().copied().fold(0.0, f64::max) * 100.0 / completed.max(1.0),
        backlog,
        acks,
        hung,
    };
    let mut line = format!(
        "  {rate:>8}/s offered: {:>9.0} leases/s, {:>6.2}% dropped, {:>6.1} µs CPU/lease",
        s.step.leases_per_s, s.step.drop_pct, s.step.cpu_us_per_lease
    );
    if !s.backlog.is_empty() {
        let _ = write!(
            line,
            "; ACKs sent {:?}, binding updates unacknowledged at the end {:?} ({:.2}% of the step's leases)",
            s.acks, s.backlog, s.backlog_pct
        );
    }
    if !s.hung.is_empty() {
        let _ = write!(line, " (no exit within 3 s of SIGTERM: {:?})", s.hung);
    }
    println!("{line}");
    Ok(s)
}

struct Row {
    c: Contender,
    best: PairStep,
    steps: Vec<PairStep>,
}

/// `cpu_per_server`: see [`CpuQuota`].
pub fn run(quick: bool, cpu_per_server: Option<f64>) -> Result {
    if !is_root() {
        return Err("the benchmark builds namespaces: run it as root".into());
    }
    let quota = cpu_per_server.map(CpuQuota::new).transpose()?;
    crate::install(&["kea-dhcp4-server"])?;
    let began = Instant::now();
    let plan = Plan::new(quick);
    let kit = Kit {
        ours: lab::release_binary("dhcp-server", "dhcp-server")?,
        load: lab::release_binary("dhcp-benches", "dhcp-load")?,
        hooks: kea_hooks()?,
    };
    let load_before = load_average();
    println!("load average before: {load_before}");
    let mut bed = Bed::up()?;
    println!("syncing our pair once (busy-poll) for the template journals:");
    let synced = prepare_pair(&mut bed, &kit)?;
    println!("  done in {:.1} s", synced.as_secs_f64());
    let mut rows = Vec::new();
    for c in Contender::ALL {
        println!("{}:", c.name());
        let since = Instant::now();
        let (best, steps) = search_rates(
            c.start_rate(),
            &plan,
            MAX_DROP_PERCENT,
            |rate| step(&mut bed, &kit, c, rate, &plan, quota.as_ref()),
            PairStep::failed_pct,
        )?;
        if best.step.leases_per_s.is_nan() || best.step.leases_per_s <= 0.0 {
            return Err(format!(
                "{} served no lease: see {}",
                c.name(),
                bed.dir.display()
            ));
        }
        println!(
            "  ({} steps in {:.0} s)",
            steps.len(),
            since.elapsed().as_secs_f64()
        );
        rows.push(Row { c, best, steps });
    }
    let load_after = load_average();
    let took = began.elapsed().as_secs();
    let share = quota.as_ref().map(|q| q.share);
    report(&rows, quick, share, &load_before, &load_after, synced, took)?;
    println!(
        "the failover benchmark took {}m{:02}s",
        took / 60,
        took % 60
    );
    Ok(())
}

/// The table on stdout and target/bench/bench-failover.json.
fn report(
    rows: &[Row],
    quick: bool,
    cpu_per_server: Option<f64>,
    load_before: &str,
    load_after: &str,
    synced: Duration,
    took: u64,
) -> Result {
    let best = |c: Contender| {
        rows.iter()
            .find(|r| r.c == c)
            .map_or(f64::NAN, |r| r.best.step.leases_per_s)
    };
    let (single, pair, kea_pair) = (best(OursSingle), best(OursPair), best(KeaPair));
    let pair_over_single = pair / single;
    let over_kea_pair = pair / kea_pair;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:44} {:>9} {:>9} {:>6} {:>7} {:>8} {:>10} {:>17} {:>9} {:>14}",
        "contender",
        "max rate",
        "leases/s",
        "drop %",
        "p50 µs",
        "p99 µs",
        "CPU µs/lse",
        "per process",
        "gen µs/lse",
        "upd. backlog"
    );
    let mut json = format!(
        "{{\"quick\":{quick},\"cpu_per_server\":{},\"max_drop_percent\":{MAX_DROP_PERCENT},\"load_average_before\":\"{load_before}\",\"load_average_after\":\"{load_after}\",\"pair_sync_secs\":{:.1},\"took_secs\":{took},\"contenders\":[",
        cpu_per_server.map_or("null".into(), |c| c.to_string()),
        synced.as_secs_f64()
    );
    let list = |v: &[f64], prec: usize| {
        v.iter()
            .map(|x| format!("{x:.prec$}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for (i, r) in rows.iter().enumerate() {
        let b = &r.best;
        let s = &b.step;
        let each = if b.cpu_each.len() > 1 {
            b.cpu_each
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect::<Vec<_>>()
                .join(" + ")
        } else {
            String::new()
        };
        let backlog = if b.backlog.is_empty() {
            String::new()
        } else {
            list(&b.backlog, 0).replace(',', " / ")
        };
        let _ = writeln!(
            table,
            "{:44} {:>9} {:>9.0} {:>6.2} {:>7.0} {:>8.0} {:>10.1} {:>17} {:>9.1} {:>14}",
            r.c.name(),
            s.rate,
            s.leases_per_s,
            s.drop_pct,
            s.p50,
            s.p99,
            s.cpu_us_per_lease,
            each,
            b.generator_cpu,
            backlog
        );
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|p| {
                format!(
                    "{{\"offered\":{},\"leases_per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{},\"p99_us\":{},\"cpu_us_per_lease\":{:.2},\"cpu_us_per_lease_each\":[{}],\"generator_cpu_us_per_lease\":{:.2},\"update_backlog\":[{}],\"acks_sent\":[{}],\"no_exit_on_sigterm\":[{}]}}",
                    p.step.rate, p.step.leases_per_s, p.step.drop_pct, p.step.p50, p.step.p99,
                    p.step.cpu_us_per_lease, list(&p.cpu_each, 2), p.generator_cpu,
                    list(&p.backlog, 0),
                    list(&p.acks, 0),
                    p.hung.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        let _ = write!(
            json,
            "{}{{\"name\":\"{}\",\"processes\":{},\"max_rate\":{},\"leases_per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"cpu_us_per_lease\":{:.2},\"cpu_us_per_lease_each\":[{}],\"generator_cpu_us_per_lease\":{:.2},\"update_backlog\":[{}],\"acks_sent\":[{}],\"steps\":[{}]}}",
            if i > 0 { "," } else { "" },
            r.c.name(),
            r.c.sides().len(),
            s.rate,
            s.leases_per_s,
            s.drop_pct,
            s.p50,
            s.p99,
            s.p999,
            s.cpu_us_per_lease,
            list(&b.cpu_each, 2),
            b.generator_cpu,
            list(&b.backlog, 0),
            list(&b.acks, 0),
            steps.join(",")
        );
    }
    let _ = writeln!(
        json,
        "],\"ratios\":{{\"ours_pair_over_ours_single\":{pair_over_single:.3},\"ours_pair_over_kea_pair\":{over_kea_pair:.2},\"ours_single_over_kea_single\":{:.2}}}}}",
        single / best(KeaSingle)
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let _ = writeln!(
        table,
        "\nours pair / ours alone: {pair_over_single:.2} (goal >= 1: {})\n\
         ours pair / Kea HA pair: {over_kea_pair:.1} (goal >= 10: {})\n\
         load average before {load_before}, after {load_after}",
        verdict(pair_over_single >= 1.0),
        verdict(over_kea_pair >= 10.0)
    );
    if let Some(c) = cpu_per_server {
        let _ = writeln!(
            table,
            "every server process limited to {c} of a CPU (cgroup quota)"
        );
    }
    println!("\n{table}");
    let file = crate::bench::write_results("bench-failover.json", &json)?;
    println!("written: {}", file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_name_the_right_sides() {
        let dir = Path::new("/tmp/x");
        let p = ours_config(dir, Primary, "s", true, false);
        assert!(p.contains(
            "role = \"primary\"\naddress = \"198.51.100.1\"\npeer-address = \"198.51.100.2\""
        ));
        assert!(p.contains("mclt = 3600\nsplit = 128"));
        let s = ours_config(dir, Secondary, "s", true, false);
        assert!(s.contains("interfaces = [\"bench-lan-s\"]"));
        assert!(!s.contains("mclt") && !s.contains("split"));
        let alone = ours_config(dir, Primary, "s", false, false);
        assert!(!alone.contains("[failover]"));
        // Every top-level key comes before the tables.
        assert!(alone.find("log-level").unwrap() < alone.find("[[subnet]]").unwrap());
        let k = kea_config(dir, Path::new("/h"), Secondary, true);
        assert!(k.contains("\"this-server-name\": \"server2\""));
        assert!(k.contains("\"client-class\": \"HA_server1\""));
        assert!(k.contains("http://198.51.100.1:8000/"));
        assert!(!kea_config(dir, Path::new("/h"), Primary, false).contains("hooks-libraries"));
    }
}
