//! `cargo xtask bench`: the servers side by side in the lab, measured by the same
//! generator (dhcp-load) on the same veth. For each server it finds the highest offered
//! rate with at most 2.5% of exchanges dropped (the method ISC publishes Kea's figures
//! with), starting every step on a fresh server, and reads the server's CPU time per lease
//! from /proc. It prints a table with ratios to Kea and writes target/bench/bench.json.
//!
//! Then, at a fixed rate, a mix of DORA with renewals, releases and declines (dhcp-load
//! `--mix`) against our server (XDP and UDP backends) and Kea: per-kind rates and latency
//! in a second table and under `mixed` in the JSON file.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::lab::{self, in_ns, Lab, LOAD, SERVER_IF, SERVER_NS};
use crate::{chart, is_root, Result};

/// The drop ratio a rate may have and still count (ISC's method for Kea's figures).
pub(crate) const MAX_DROP_PERCENT: f64 = 2.5;
/// Our server's state directory inside the lab directory.
pub(crate) const STATE_DIR: &str = "state";
/// The stateless AF_XDP answerer: the ceiling of the XDP path on this machine.
const REFLECTOR: &str = "xdp-reflector (ceiling)";

#[derive(Clone, Copy)]
pub struct Plan {
    /// Seconds each step offers load for.
    pub(crate) step_secs: f64,
    /// Bisection rounds after the first failing rate.
    pub(crate) refine: u32,
    /// Highest rate tried.
    pub(crate) cap: u32,
    /// Seconds of perfdhcp at its fixed rate.
    perf_secs: u32,
    /// How long perfdhcp waits for late answers after that (its -W, in µs): it always
    /// waits all of it, so in a quick run it is half of perfdhcp's time.
    perf_wait_us: u32,
    /// Seconds of the mixed load at its fixed rate.
    mix_secs: f64,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                step_secs: 1.0,
                refine: 1,
                cap: 131_072,
                perf_secs: 1,
                perf_wait_us: 1_000_000,
                mix_secs: 2.0,
            }
        } else {
            Plan {
                step_secs: 4.0,
                refine: 3,
                cap: 1 << 20,
                perf_secs: 5,
                perf_wait_us: 2_000_000,
                mix_secs: 4.0,
            }
        }
    }
}

/// One server under test: how to start it and how to know it is up.
struct Server {
    name: &'static str,
    program: String,
    args: Vec<String>,
    /// The generator's arguments for this server besides rate and clients.
    load: Vec<String>,
    ready: &'static str,
    /// First rate tried: ISC dhcpd commits each lease to disk and starts far lower.
    start_rate: u32,
}

/// What one step measured, as dhcp-load reported it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Step {
    pub(crate) rate: u32,
    pub(crate) leases_per_s: f64,
    pub(crate) drop_pct: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) cpu_us_per_lease: f64,
}

/// A number in a flat JSON object (dhcp-load's report, `ctl --json` replies); NaN when absent.
/// Writes a run's JSON as `target/bench/NAME` (NaN, which JSON lacks, as null) and
/// returns where.
pub(crate) fn write_results(name: &str, json: &str) -> Result<PathBuf> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let path = out.join(name);
    fs::write(&path, json.replace("NaN", "null")).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The command line of ISC dhcpd in the foreground on the lab's server interface.
pub(crate) fn dhcpd_args(
    conf: &std::path::Path,
    leases: &std::path::Path,
    dir: &std::path::Path,
) -> Vec<String> {
    [
        "-4",
        "-f",
        "-d",
        "-cf",
        &conf.display().to_string(),
        "-lf",
        &leases.display().to_string(),
        "-pf",
        &dir.join("dhcpd.pid").display().to_string(),
        SERVER_IF,
    ]
    .map(String::from)
    .to_vec()
}

pub(crate) fn field(json: &str, key: &str) -> f64 {
    let at = json.find(&format!("\"{key}\":")).map(|i| i + key.len() + 3);
    at.and_then(|i| json[i..].split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    stat_secs(&format!("/proc/{pid}/stat"), [11, 12])
}

/// The sum of two clock-tick fields of a /proc stat file, in seconds; `fields` count
/// from the first field after the command name.
pub(crate) fn stat_secs(path: &str, fields: [usize; 2]) -> f64 {
    let stat = fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// The relay the generator plays in the relayed runs: its own address, and how many
/// subscriber lines (circuit ids) its clients are spread over.
const RELAY: &str = "198.18.0.2";
const LINES: &str = "100000";
const RELAYED: &str = "dhcp-server (xdp 1 worker, sync, relayed)";
const CLASSED: &str = "dhcp-server (xdp 1 worker, sync, relayed, 20 classes)";

/// The configuration of the classed run: the one-liner's server and the classes of
/// benches/classes.toml. The pool stays open to every client, so perfdhcp (which cannot
/// relay) is served too. Returns its path.
fn classes_config(dir: &std::path::Path) -> Result<String> {
    let classes = include_str!("../../benches/classes.toml");
    config_file(
        dir,
        "bench-classes.toml",
        "backend = \"xdp\"\nworkers = 1\ndurability = \"sync\"",
        classes,
    )
}

/// A configuration file `name` in `dir` serving the lab's subnet and pool as the
/// one-liner does, its journal in the state directory, with the top-level `settings`
/// (backend, workers, durability) and the tables of `sections` before the subnet.
/// Returns its path.
pub(crate) fn config_file(
    dir: &std::path::Path,
    name: &str,
    settings: &str,
    sections: &str,
) -> Result<String> {
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "interfaces = [\"{SERVER_IF}\"]\n{settings}\nstate-dir = \"{state}\"\n\n{sections}\n\
             [[subnet]]\nsubnet = \"{subnet}\"\ninterface = \"{SERVER_IF}\"\n\
             pools = [\"{first}-{last}\"]\nrouters = [\"198.18.0.1\"]\n",
            state = dir.join(STATE_DIR).display(),
            subnet = lab::SUBNET,
            first = lab::POOL.0,
            last = lab::POOL.1,
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(path.display().to_string())
}

fn servers(dir: &std::path::Path, ours: &str, reflector: &str) -> Result<Vec<Server>> {
    let state = dir.join(STATE_DIR).display().to_string();
    let relayed: Vec<String> = ["--relay", RELAY, "--lines", LINES]
        .map(String::from)
        .to_vec();
    let ours_with = |backend: &[&str]| {
        let mut args = vec![
            "RUST_LOG=info,dhcp_proto::engine=warn".to_owned(),
            ours.to_owned(),
        ];
        args.extend(lab::one_liner());
        args.extend(backend.iter().map(|s| s.to_string()));
        args.extend(["--state-dir".to_owned(), state.clone()]);
        args
    };
    let mut list = vec![
        Server {
            name: REFLECTOR,
            program: reflector.into(),
            args: ["--interface", lab::SERVER_IF, "--workers", "2"]
                .map(String::from)
                .to_vec(),
            load: Vec::new(),
            ready: "ready",
            start_rate: 8000,
        },
        // One worker leaves the generator a core of its own on a 2-core machine; two
        // show what sharding costs when the workers and the generator share the cores.
        // The journal lives on the machine's disk (the lab directory), emptied before
        // every step; async is the like-for-like comparison with Kea's memfile, which
        // does not fsync either.
        Server {
            name: "dhcp-server (xdp 1 worker, sync)",
            program: "env".into(),
            args: ours_with(&["--backend", "xdp", "--workers", "1", "--durability", "sync"]),
            load: Vec::new(),
            ready: "ready",
            start_rate: 16000,
        },
        Server {
            name: "dhcp-server (xdp 1 worker, async)",
            program: "env".into(),
            args: ours_with(&[
                "--backend",
                "xdp",
                "--workers",
                "1",
                "--durability",
                "async",
            ]),
            load: Vec::new(),
            ready: "ready",
            start_rate: 16000,
        },
        Server {
            name: "dhcp-server (xdp 2 workers, sync)",
            program: "env".into(),
            args: ours_with(&["--backend", "xdp", "--workers", "2", "--durability", "sync"]),
            load: Vec::new(),
            ready: "ready",
            start_rate: 16000,
        },
        Server {
            name: "dhcp-server (udp, async)",
            program: "env".into(),
            args: ours_with(&["--backend", "udp", "--durability", "async"]),
            load: Vec::new(),
            ready: "ready",
            start_rate: 16000,
        },
        // Every client behind a relay, with option 82 and a circuit id of its own, with
        // and without the classes of benches/classes.toml: what classes cost.
        Server {
            name: RELAYED,
            program: "env".into(),
            args: ours_with(&["--backend", "xdp", "--workers", "1", "--durability", "sync"]),
            load: relayed.clone(),
            ready: "ready",
            start_rate: 16000,
        },
        Server {
            name: CLASSED,
            program: "env".into(),
            args: vec![
                "RUST_LOG=info,dhcp_proto::engine=warn".to_owned(),
                ours.to_owned(),
                "run".into(),
                "--config".into(),
                classes_config(dir)?,
            ],
            load: relayed,
            ready: "ready",
            start_rate: 16000,
        },
    ];
    let kea = dir.join("kea-dhcp4.json");
    fs::write(
        &kea,
        format!(
            r#"{{"Dhcp4": {{
  "interfaces-config": {{ "interfaces": ["{SERVER_IF}"], "dhcp-socket-type": "raw" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0 }},
  "multi-threading": {{ "enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64 }},
  "valid-lifetime": 3600,
  "subnet4": [{{ "id": 1, "subnet": "{subnet}", "pools": [{{ "pool": "{first} - {last}" }}],
                 "option-data": [{{ "name": "routers", "data": "198.18.0.1" }}] }}],
  "loggers": [{{ "name": "kea-dhcp4", "output_options": [{{ "output": "stdout" }}], "severity": "INFO" }}]
}}}}"#,
            leases = dir.join("kea-leases4.csv").display(),
            subnet = lab::SUBNET,
            first = lab::POOL.0,
            last = lab::POOL.1,
        ),
    )
    .map_err(|e| e.to_string())?;
    let kea_env = |k: &str| format!("{k}={}", dir.display());
    list.push(Server {
        name: "kea-dhcp4 (memfile, 2 threads)",
        program: "env".into(),
        args: vec![
            kea_env("KEA_PIDFILE_DIR"),
            kea_env("KEA_LOCKFILE_DIR"),
            "kea-dhcp4".into(),
            "-c".into(),
            kea.display().to_string(),
        ],
        load: Vec::new(),
        ready: "DHCP4_STARTED",
        start_rate: 1000,
    });
    let conf = dir.join("dhcpd.conf");
    fs::write(
        &conf,
        format!(
            "authoritative;\nping-check false;\ndefault-lease-time 3600;\nmax-lease-time 86400;\nsubnet 198.18.0.0 netmask 255.254.0.0 {{\n  range {} {};\n  option routers 198.18.0.1;\n}}\n",
            lab::POOL.0,
            lab::POOL.1
        ),
    )
    .map_err(|e| e.to_string())?;
    list.push(Server {
        name: "isc-dhcpd 4.4",
        program: "dhcpd".into(),
        args: dhcpd_args(&conf, &dir.join("dhcpd.leases"), dir),
        load: Vec::new(),
        ready: "Sending on",
        start_rate: 50,
    });
    Ok(list)
}

/// Empties every server's lease storage: each run starts from nothing.
pub(crate) fn forget_leases(lab: &Lab) -> Result {
    for f in ["kea-leases4.csv", "dhcpd.leases"] {
        fs::write(lab.dir.join(f), "").map_err(|e| e.to_string())?;
    }
    let _ = fs::remove_dir_all(lab.dir.join(STATE_DIR));
    Ok(())
}

/// What a step starts: the program and its arguments, the log line saying it serves, and
/// the generator's arguments for it besides rate and clients.
pub(crate) struct Start<'a> {
    pub(crate) program: &'a str,
    pub(crate) args: &'a [String],
    pub(crate) ready: &'a str,
    pub(crate) load: &'a [String],
}

impl Server {
    fn start(&self) -> Start<'_> {
        Start {
            program: &self.program,
            args: &self.args,
            ready: self.ready,
            load: &self.load,
        }
    }
}

/// Starts a server afresh, runs dhcp-load against it at `rate` for `secs` with `extra`
/// arguments, calls `before_stop`, stops it; returns dhcp-load's JSON and the server's
/// CPU seconds during the load.
pub(crate) fn measure(
    lab: &mut Lab,
    start: &Start<'_>,
    load: &str,
    rate: u32,
    secs: f64,
    extra: &[&str],
    before_stop: &mut dyn FnMut() -> Result,
) -> Result<(String, f64)> {
    forget_leases(lab)?;
    let args: Vec<&str> = start.args.iter().map(String::as_str).collect();
    let pid = lab.spawn(SERVER_NS, start.program, &args, "server.log")?;
    lab.wait_for("server.log", start.ready, Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = cpu_secs(pid);
    let clients = ((rate as f64 * secs) as u32).clamp(1, 120_000);
    let out = in_ns(LOAD.0, load)
        .args([
            "--interface",
            LOAD.1,
            "--json",
            "--clients",
            &clients.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args(["--duration", &secs.to_string()])
        .args(start.load)
        .args(extra)
        .output()
        .map_err(|e| e.to_string())?;
    let cpu = cpu_secs(pid) - cpu_before;
    let after = before_stop();
    lab.stop(pid);
    after?;
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !json.contains("leases_per_s") {
        return Err(format!(
            "dhcp-load failed: {json}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((json, cpu))
}

/// A step as dhcp-load's JSON and the server's CPU seconds tell it, printed.
pub(crate) fn to_step(rate: u32, json: &str, cpu: f64) -> Step {
    let completed = field(json, "completed");
    let (leases_per_s, drop_pct) = (field(json, "leases_per_s"), field(json, "drop_pct"));
    println!("  {rate:>8}/s offered: {leases_per_s:>9.0} leases/s, {drop_pct:>6.2}% dropped");
    Step {
        rate,
        leases_per_s,
        drop_pct,
        p50: field(json, "p50_us"),
        p99: field(json, "p99_us"),
        p999: field(json, "p999_us"),
        cpu_us_per_lease: if completed > 0.0 {
            cpu * 1e6 / completed
        } else {
            f64::NAN
        },
    }
}

/// Offers `rate` DORA exchanges a second to a fresh `server` for the plan's step and
/// prints what it measured.
fn step(lab: &mut Lab, server: &Server, load: &str, rate: u32, plan: &Plan) -> Result<Step> {
    let (json, cpu) = measure(
        lab,
        &server.start(),
        load,
        rate,
        plan.step_secs,
        &[],
        &mut || Ok(()),
    )?;
    Ok(to_step(rate, &json, cpu))
}

/// The best step at or under the drop limit: doubling until it is passed, then bisecting.
fn search(lab: &mut Lab, server: &Server, load: &str, plan: &Plan) -> Result<(Step, Vec<Step>)> {
    search_rates(
        server.start_rate,
        plan,
        MAX_DROP_PERCENT,
        |rate| step(lab, server, load, rate, plan),
        |s| s.drop_pct,
    )
}

/// The search itself, for any kind of step: `step(rate)` measures one offered rate and
/// `drops(&step)` reads its drop percentage. Returns the best step at or under
/// `max_drop` percent (the first one when none is) and every step in the order run.
pub(crate) fn search_rates<T: Clone>(
    start_rate: u32,
    plan: &Plan,
    max_drop: f64,
    mut step: impl FnMut(u32) -> Result<T>,
    drops: impl Fn(&T) -> f64,
) -> Result<(T, Vec<T>)> {
    let mut steps = Vec::new();
    let mut good: Option<(u32, T)> = None;
    let mut bad: Option<u32> = None;
    let mut rate = start_rate;
    while rate <= plan.cap {
        let s = step(rate)?;
        steps.push(s.clone());
        if drops(&s) <= max_drop {
            good = Some((rate, s));
            rate *= 2;
        } else {
            bad = Some(rate);
            break;
        }
    }
    let mut lo = good.as_ref().map_or(0, |g| g.0);
    if let Some(mut hi) = bad {
        for _ in 0..plan.refine {
            let mid = lo.midpoint(hi);
            if mid <= lo || mid >= hi {
                break;
            }
            let s = step(mid)?;
            steps.push(s.clone());
            if drops(&s) <= max_drop {
                lo = mid;
                good = Some((mid, s));
            } else {
                hi = mid;
            }
        }
    }
    let best = good.map_or_else(|| steps[0].clone(), |g| g.1);
    Ok((best, steps))
}

pub fn run(quick: bool) -> Result {
    if !is_root() {
        return Err("the benchmark builds a namespace lab: run it as root".into());
    }
    crate::install(&["kea-dhcp4-server", "isc-dhcp-server"])?;
    let began = Instant::now();
    let plan = Plan::new(quick);
    let ours = lab::release_binary("dhcp-server", "dhcp-server")?;
    let load = lab::release_binary("dhcp-benches", "dhcp-load")?;
    let reflector = lab::release_binary("dhcp-benches", "xdp-reflector")?;
    let mut lab = Lab::start("dhcp-server-bench", lab::Layout::Pair)?;
    let mut results = Vec::new();
    let list = servers(&lab.dir, &ours, &reflector)?;
    for server in &list {
        println!("{}:", server.name);
        let (best, steps) = search(&mut lab, server, &load, &plan)?;
        if best.leases_per_s.is_nan() || best.leases_per_s <= 0.0 {
            return Err(format!(
                "{} served no lease: see {}",
                server.name,
                lab.dir.join("server.log").display()
            ));
        }
        results.push((server.name, best, steps));
    }
    let perf_secs = plan.perf_secs;
    println!("perfdhcp at a fixed {PERFDHCP_RATE}/s for {perf_secs} s:");
    let mut rows = Vec::new();
    for (server, (name, best, steps)) in list.iter().zip(results) {
        let perf = perfdhcp(&mut lab, server, perf_secs, plan.perf_wait_us)?;
        println!(
            "  {name}: {:.0} ACKs/s, {:.2}% dropped",
            perf.acks_per_s, perf.drop_pct
        );
        rows.push(Row {
            name,
            best,
            steps,
            perf,
        });
    }
    let mixed = mixed(&mut lab, &list, &load, &plan)?;
    report(&rows, &mixed, quick)?;
    let took = began.elapsed().as_secs();
    println!("the benchmark took {}m{:02}s", took / 60, took % 60);
    Ok(())
}

/// The mixed load: RFC 2131's other client messages beside DORA, in proportions of the
/// order an ISP server sees once its clients hold leases (renewals at T1 outnumber
/// releases and declines).
const MIX: &str = "dora=70,renew=20,release=5,decline=5";
/// Its fixed rate, every kind together: perfdhcp's, an ordinary load every server here
/// but ISC dhcpd keeps up with. A kernel that sends the renewals' ACKs (our UDP backend)
/// resolves each client's address by ARP first, into a neighbour table the whole host
/// shares and caps (net.ipv4.neigh.default.gc_thresh3, 1024 by default, entries younger
/// than 5 s cannot be evicted): 200 renewals a second stays clear of it.
const MIX_RATE: u32 = 1000;
/// The servers the mixed load runs against: one configuration per backend of ours (the
/// journal asynchronous, like Kea's memfile) and Kea. ISC dhcpd cannot keep up with the
/// rate, and more workers would only show the sharding the main table shows.
const MIX_SERVERS: [&str; 3] = [
    "dhcp-server (xdp 1 worker, async)",
    "dhcp-server (udp, async)",
    "kea-dhcp4 (memfile, 2 threads)",
];

/// What the mixed load measured against one server.
struct Mixed {
    name: &'static str,
    /// dhcp-load's JSON report.
    json: String,
    /// Server CPU time per message it answered or took (every kind).
    cpu_us_per_exchange: f64,
}

/// A field of the object `name` in the section (`kinds` or `checks`) of dhcp-load's report.
fn sub_field(json: &str, section: &str, name: &str, key: &str) -> f64 {
    let section = json
        .find(&format!("\"{section}\":"))
        .map_or("", |i| &json[i..]);
    object_field(section, name, key)
}

/// A number in the first flat object `name` of `json` (`"name":{...}`); NaN when absent.
pub(crate) fn object_field(json: &str, name: &str, key: &str) -> f64 {
    let object = json.find(&format!("\"{name}\":{{")).map_or("", |i| {
        let end = json[i..].find('}').map_or(json.len(), |e| i + e + 1);
        &json[i..end]
    });
    field(object, key)
}

/// A field of one kind's object in dhcp-load's report.
fn kind_field(json: &str, kind: &str, key: &str) -> f64 {
    sub_field(json, "kinds", kind, key)
}

fn mixed(lab: &mut Lab, list: &[Server], load: &str, plan: &Plan) -> Result<Vec<Mixed>> {
    println!(
        "mixed load {MIX} at a fixed {MIX_RATE}/s for {} s:",
        plan.mix_secs
    );
    let mut out = Vec::new();
    for server in list.iter().filter(|s| MIX_SERVERS.contains(&s.name)) {
        let (json, cpu) = measure(
            lab,
            &server.start(),
            load,
            MIX_RATE,
            plan.mix_secs,
            &["--mix", MIX],
            &mut || Ok(()),
        )?;
        let k = |kind: &str, key: &str| kind_field(&json, kind, key);
        let (dora, renew) = (k("dora", "completed"), k("renew", "completed"));
        println!(
            "  {}: {:.0} DORA/s, {:.0} renewals/s, {:.0} releases/s, {:.0} declines/s; {:.2}% dropped",
            server.name,
            k("dora", "per_s"),
            k("renew", "per_s"),
            k("release", "per_s"),
            k("decline", "per_s"),
            field(&json, "drop_pct"),
        );
        // Every row must be produced: a server that renewed nothing means a broken path.
        if !(dora > 0.0 && renew > 0.0) {
            return Err(format!(
                "{}: no DORA or no renewal completed under the mixed load: {json}",
                server.name
            ));
        }
        let handled = dora + renew + k("release", "sent") + k("decline", "sent");
        out.push(Mixed {
            name: server.name,
            cpu_us_per_exchange: cpu * 1e6 / handled,
            json,
        });
    }
    if out.len() != MIX_SERVERS.len() {
        return Err(format!(
            "the mixed load ran against {} of the servers {MIX_SERVERS:?}",
            out.len()
        ));
    }
    Ok(out)
}

/// perfdhcp's fixed rate: low enough that every server but ISC dhcpd keeps up, so the
/// figure compares latency and drops at an ordinary load anyone can reproduce.
const PERFDHCP_RATE: u32 = 1000;

struct Perf {
    acks_per_s: f64,
    drop_pct: f64,
    command: String,
}

struct Row {
    name: &'static str,
    best: Step,
    steps: Vec<Step>,
    perf: Perf,
}

/// Runs perfdhcp against a fresh `server` at the fixed rate.
fn perfdhcp(lab: &mut Lab, server: &Server, secs: u32, wait_us: u32) -> Result<Perf> {
    forget_leases(lab)?;
    let args: Vec<&str> = server.args.iter().map(String::as_str).collect();
    let pid = lab.spawn(SERVER_NS, &server.program, &args, "server.log")?;
    lab.wait_for("server.log", server.ready, Duration::from_secs(15))?;
    let rate = PERFDHCP_RATE.to_string();
    let (secs_s, clients) = (secs.to_string(), (PERFDHCP_RATE * secs).to_string());
    let wait = wait_us.to_string();
    let perf_args = [
        "-4", "-l", LOAD.1, "-r", &rate, "-R", &clients, "-p", &secs_s, "-W", &wait,
    ];
    let out = in_ns(LOAD.0, "perfdhcp")
        .args(perf_args)
        .output()
        .map_err(|e| format!("perfdhcp: {e}"))?;
    lab.stop(pid);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stat = |exchange: &str, key: &str| {
        text.split("***Statistics for: ")
            .find(|s| s.starts_with(exchange))
            .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix(key)))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let sent = stat("DISCOVER-OFFER", "sent packets:");
    let acks = stat("REQUEST-ACK", "received packets:");
    if sent.is_nan() {
        return Err(format!("perfdhcp printed no statistics:\n{text}"));
    }
    Ok(Perf {
        acks_per_s: acks / f64::from(secs),
        drop_pct: 100.0 * (1.0 - acks / sent.max(1.0)),
        command: format!("perfdhcp {}", perf_args.join(" ")),
    })
}

/// The table on stdout, the JSON file and the SVG chart.
fn report(rows: &[Row], mixed: &[Mixed], quick: bool) -> Result {
    let best_of = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| r.best.leases_per_s)
    };
    let (kea, ceiling) = (best_of("kea"), best_of(REFLECTOR));
    let mut table = String::new();
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(32);
    let _ = writeln!(
        table,
        "{:w$} {:>10} {:>10} {:>7} {:>7} {:>8} {:>10} {:>7} {:>8} {:>14}",
        "server",
        "max rate/s",
        "leases/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "CPU µs/lse",
        "vs Kea",
        "vs ceil",
        "perfdhcp ACK/s"
    );
    let mut json = String::from("{\"quick\":");
    let _ = write!(
        json,
        "{quick},\"max_drop_percent\":{MAX_DROP_PERCENT},\"perfdhcp_rate\":{PERFDHCP_RATE},\"servers\":["
    );
    for (i, r) in rows.iter().enumerate() {
        let b = &r.best;
        let vs_kea = kea.map_or(f64::NAN, |k| b.leases_per_s / k);
        let vs_ceiling = ceiling.map_or(f64::NAN, |c| b.leases_per_s / c);
        let _ = writeln!(
            table,
            "{:w$} {:>10} {:>10.0} {:>7.0} {:>7.0} {:>8.0} {:>10.1} {:>6.1}x {:>7.0}% {:>8.0} ({:.1}%)",
            r.name,
            b.rate,
            b.leases_per_s,
            b.p50,
            b.p99,
            b.p999,
            b.cpu_us_per_lease,
            vs_kea,
            100.0 * vs_ceiling,
            r.perf.acks_per_s,
            r.perf.drop_pct
        );
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| {
                format!(
                    "{{\"offered\":{},\"leases_per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{},\"p99_us\":{}}}",
                    s.rate, s.leases_per_s, s.drop_pct, s.p50, s.p99
                )
            })
            .collect();
        let _ = write!(
            json,
            "{}{{\"name\":\"{}\",\"max_rate\":{},\"leases_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"cpu_us_per_lease\":{:.2},\"ratio_to_kea\":{:.2},\"ratio_to_ceiling\":{:.3},\"perfdhcp\":{{\"command\":\"{}\",\"acks_per_s\":{:.1},\"drop_pct\":{:.2}}},\"steps\":[{}]}}",
            if i > 0 { "," } else { "" },
            r.name, b.rate, b.leases_per_s, b.p50, b.p99, b.p999, b.cpu_us_per_lease, vs_kea, vs_ceiling,
            r.perf.command, r.perf.acks_per_s, r.perf.drop_pct, steps.join(",")
        );
    }
    json.push(']');
    let _ = write!(
        json,
        ",\"mixed\":{{\"mix\":\"{MIX}\",\"rate\":{MIX_RATE},\"secs\":{},\"servers\":[",
        Plan::new(quick).mix_secs
    );
    let _ = writeln!(
        table,
        "\nmixed load {MIX} at a fixed {MIX_RATE}/s (per kind: completed or sent per second; latency in µs, p50/p99/p99.9):"
    );
    let _ = writeln!(
        table,
        "{:32} {:>6} {:>20} {:>8} {:>20} {:>6} {:>6} {:>7} {:>10}  checks: released ACKed, declined NAKed, held NAKed",
        "server",
        "DORA/s",
        "DORA latency",
        "renew/s",
        "renew latency",
        "rel/s",
        "dec/s",
        "drop %",
        "CPU µs/msg",
    );
    for (i, m) in mixed.iter().enumerate() {
        let k = |kind: &str, key: &str| kind_field(&m.json, kind, key);
        let lat = |kind: &str| {
            format!(
                "{:.0}/{:.0}/{:.0}",
                k(kind, "p50_us"),
                k(kind, "p99_us"),
                k(kind, "p999_us")
            )
        };
        let check = |group: &str, key: &str| {
            format!(
                "{:.0}/{:.0}",
                sub_field(&m.json, "checks", group, key),
                sub_field(&m.json, "checks", group, "asked")
            )
        };
        let _ = writeln!(
            table,
            "{:32} {:>6.0} {:>20} {:>8.0} {:>20} {:>6.0} {:>6.0} {:>7.2} {:>10.1}  {} {} {}",
            m.name,
            k("dora", "per_s"),
            lat("dora"),
            k("renew", "per_s"),
            lat("renew"),
            k("release", "per_s"),
            k("decline", "per_s"),
            field(&m.json, "drop_pct"),
            m.cpu_us_per_exchange,
            check("released", "acks"),
            check("declined", "naks"),
            check("held", "naks"),
        );
        let _ = write!(
            json,
            "{}{{\"name\":\"{}\",\"cpu_us_per_message\":{:.2},\"load\":{}}}",
            if i > 0 { "," } else { "" },
            m.name,
            m.cpu_us_per_exchange,
            m.json
        );
    }
    json.push_str("]}}\n");
    println!("\n{table}");
    let path = write_results("bench.json", &json)?;
    let out = path.parent().expect("a file in target/bench").to_path_buf();
    let series: Vec<chart::Series> = rows
        .iter()
        .map(|r| chart::Series {
            name: r.name,
            points: r
                .steps
                .iter()
                .map(|s| (f64::from(s.rate), s.leases_per_s, s.p50))
                .collect(),
        })
        .collect();
    fs::write(out.join("bench.svg"), chart::svg(&series)).map_err(|e| e.to_string())?;
    println!(
        "written: {} and bench.svg",
        out.join("bench.json").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape dhcp-load prints with --json --mix (shortened).
    const REPORT: &str = r#"{"initiated":1799,"completed":1799,"drop_pct":0.000,"p50_us":132,"mix":"dora=70,renew=20","kinds":{"dora":{"started":1399,"completed":1399,"per_s":699.5,"p50_us":135},"renew":{"started":400,"completed":400,"per_s":200.0,"p50_us":125},"release":{"sent":100,"per_s":50.0}},"checks":{"offered_declined":0,"released":{"asked":16,"acks":16,"naks":0},"held":{"asked":16,"acks":0,"naks":16}},"arp_replies":311}"#;

    #[test]
    fn fields_are_read_from_the_right_object() {
        assert_eq!(field(REPORT, "p50_us"), 132.0);
        assert_eq!(kind_field(REPORT, "dora", "p50_us"), 135.0);
        assert_eq!(kind_field(REPORT, "renew", "per_s"), 200.0);
        assert_eq!(kind_field(REPORT, "release", "sent"), 100.0);
        assert!(kind_field(REPORT, "decline", "sent").is_nan());
        assert!(kind_field(REPORT, "release", "completed").is_nan());
        assert_eq!(sub_field(REPORT, "checks", "released", "acks"), 16.0);
        assert_eq!(sub_field(REPORT, "checks", "held", "naks"), 16.0);
    }
}
