//! `cargo xtask bench --leasequery`: how many RFC 4388 leasequeries by address a second
//! our server answers, through the XDP backend and through kernel UDP sockets, beside
//! ISC dhcpd (`allow leasequery;`). Each step starts a fresh server allowing the
//! generator (198.18.0.2) as a requester, gives it `FILL` leases and offers queries about
//! them at a rate; the rate search is the main benchmark's, with its own limit: the best
//! rate at which at least 99% of queries are answered. dhcpd serves about 70 leases a
//! second, so its leases come from a leases file written before it starts instead of
//! DORA. The server's CPU time per query counts only the query phase: dhcp-load says on
//! stderr when its leases are made. Every contender's search runs `runs` times; the table
//! gives the medians and target/bench/bench-leasequery.json every run's steps.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench::{config_file, cpu_secs, field, object_field, search_rates, Plan, STATE_DIR};
use crate::lab::{self, in_ns, Lab, LOAD, SERVER_NS};
use crate::{is_root, Result};

/// A rate counts when at most this share of queries goes unanswered (the 99%).
const MAX_UNANSWERED_PERCENT: f64 = 1.0;
/// The generator's address, the requester every server allows.
const REQUESTER: &str = "198.18.0.2";
/// Leases made before the queries: most of the lab's pool of about 131,000.
const FILL: u32 = 100_000;
/// The leases dhcpd is given: the first `FILL` addresses of the pool.
fn filled_range() -> (String, String) {
    let first: std::net::Ipv4Addr = lab::POOL.0.parse().expect("constant");
    let last = std::net::Ipv4Addr::from(u32::from(first) + FILL - 1);
    (first.to_string(), last.to_string())
}

/// One contender.
struct Server {
    name: &'static str,
    program: String,
    args: Vec<String>,
    ready: &'static str,
    start_rate: u32,
    /// The leases come from a leases file written before the start (dhcpd) rather than
    /// from the generator's DORA.
    prefilled: bool,
}

/// What one step measured.
#[derive(Debug, Clone, Default)]
struct LqStep {
    rate: u32,
    queries_per_s: f64,
    unanswered_pct: f64,
    p50: f64,
    p99: f64,
    cpu_us_per_query: f64,
    /// Answers by type, and queries about a leased address not answered LEASEACTIVE.
    active: f64,
    unassigned: f64,
    unknown: f64,
    wrong: f64,
    /// Leases made before the queries, and at what rate.
    leases: f64,
    fill_per_s: f64,
}

fn servers(dir: &Path, ours: &str) -> Result<Vec<Server>> {
    // Durability plays no part in answering a query (nothing is written); async only
    // makes the leases before the queries quicker to get.
    let allow =
        format!("[leasequery]\nrequesters = [\"{REQUESTER}\"]\n# Single queries only: no TCP listener.\nbulk = false\n");
    let ours_with = |file: &str, settings: &str| -> Result<Vec<String>> {
        Ok(vec![
            "RUST_LOG=info,dhcp_proto::engine=warn".into(),
            ours.into(),
            "run".into(),
            "--config".into(),
            config_file(dir, file, settings, &allow)?,
        ])
    };
    let conf = dir.join("dhcpd-lq.conf");
    fs::write(
        &conf,
        format!(
            "authoritative;\nping-check false;\nallow leasequery;\ndefault-lease-time 3600;\nmax-lease-time 86400;\nsubnet 198.18.0.0 netmask 255.254.0.0 {{\n  range {} {};\n  option routers 198.18.0.1;\n}}\n",
            lab::POOL.0,
            lab::POOL.1
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![
        // One worker answers from its own table; with two, the worker a query reaches
        // asks the other for its bindings (by mailbox) before answering, and the two
        // share the machine's 2 cores with the generator.
        Server {
            name: "dhcp-server (xdp 1 worker)",
            program: "env".into(),
            args: ours_with(
                "bench-lq-xdp.toml",
                "backend = \"xdp\"\nworkers = 1\ndurability = \"async\"",
            )?,
            ready: "ready",
            start_rate: 32_000,
            prefilled: false,
        },
        Server {
            name: "dhcp-server (xdp 2 workers)",
            program: "env".into(),
            args: ours_with(
                "bench-lq-xdp2.toml",
                "backend = \"xdp\"\nworkers = 2\ndurability = \"async\"",
            )?,
            ready: "ready",
            start_rate: 32_000,
            prefilled: false,
        },
        Server {
            name: "dhcp-server (udp)",
            program: "env".into(),
            args: ours_with(
                "bench-lq-udp.toml",
                "backend = \"udp\"\ndurability = \"async\"",
            )?,
            ready: "ready",
            start_rate: 32_000,
            prefilled: false,
        },
        Server {
            name: "isc-dhcpd 4.4",
            program: "dhcpd".into(),
            args: crate::bench::dhcpd_args(&conf, &dir.join(DHCPD_LEASES), dir),
            ready: "Sending on",
            start_rate: 8_000,
            prefilled: true,
        },
    ])
}

const DHCPD_LEASES: &str = "dhcpd-lq.leases";

/// dhcpd's leases file with `FILL` active leases of a day, from now, on the first
/// addresses of the pool, for clients 02:be:00:00:00:00 onwards (dhcp-load's).
fn dhcpd_leases(dir: &Path) -> Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let first = u32::from(lab::POOL.0.parse::<std::net::Ipv4Addr>().expect("constant"));
    let mut text = String::with_capacity(FILL as usize * 200);
    for i in 0..FILL {
        let b = i.to_be_bytes();
        let _ = write!(
            text,
            "lease {} {{\n  starts epoch {now};\n  ends epoch {};\n  cltt epoch {now};\n  binding state active;\n  next binding state free;\n  hardware ethernet 02:be:{:02x}:{:02x}:{:02x}:{:02x};\n}}\n",
            std::net::Ipv4Addr::from(first + i),
            now + 86_400,
            b[0], b[1], b[2], b[3]
        );
    }
    fs::write(dir.join(DHCPD_LEASES), text).map_err(|e| e.to_string())
}

/// Starts `server` afresh with its leases, offers `rate` queries a second for the plan's
/// step, stops it; prints and returns what was measured.
fn step(lab: &mut Lab, server: &Server, load: &str, rate: u32, plan: &Plan) -> Result<LqStep> {
    let _ = fs::remove_dir_all(lab.dir.join(STATE_DIR));
    if server.prefilled {
        dhcpd_leases(&lab.dir)?;
    }
    let args: Vec<&str> = server.args.iter().map(String::as_str).collect();
    let pid = lab.spawn(SERVER_NS, &server.program, &args, "server.log")?;
    lab.wait_for("server.log", server.ready, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(200));
    let measured = queries(server, load, rate, plan.step_secs, pid);
    lab.stop(pid);
    let (json, cpu) = measured?;
    let answered = field(&json, "answered");
    let k = |key: &str| object_field(&json, "answers", key);
    let s = LqStep {
        rate,
        queries_per_s: field(&json, "queries_per_s"),
        unanswered_pct: field(&json, "drop_pct"),
        p50: field(&json, "p50_us"),
        p99: field(&json, "p99_us"),
        cpu_us_per_query: if answered > 0.0 {
            cpu * 1e6 / answered
        } else {
            f64::NAN
        },
        active: k("active"),
        unassigned: k("unassigned"),
        unknown: k("unknown"),
        // dhcpd's leases are not the generator's, so every query is about "others":
        // there, any answer but LEASEACTIVE is wrong.
        wrong: if server.prefilled {
            k("unassigned") + k("unknown")
        } else {
            field(&json, "held_not_active")
        },
        leases: if server.prefilled {
            f64::from(FILL)
        } else {
            object_field(&json, "fill", "leases")
        },
        fill_per_s: object_field(&json, "fill", "leases_per_s"),
    };
    println!(
        "  {rate:>8}/s offered: {:>9.0} answered/s, {:>6.2}% unanswered, {:.1} µs CPU/query{}",
        s.queries_per_s,
        s.unanswered_pct,
        s.cpu_us_per_query,
        if s.wrong > 0.0 {
            format!(", {} leased addresses NOT answered active", s.wrong)
        } else {
            String::new()
        }
    );
    Ok(s)
}

/// Runs dhcp-load's leasequery against the server `pid`; returns its JSON and the
/// server's CPU seconds from the first query to the end.
fn queries(server: &Server, load: &str, rate: u32, secs: f64, pid: u32) -> Result<(String, f64)> {
    let (first, last) = filled_range();
    let mut cmd = in_ns(LOAD.0, load);
    cmd.args(["--interface", LOAD.1, "--json", "--leasequery", REQUESTER])
        .args(["--rate", &rate.to_string(), "--duration", &secs.to_string()]);
    if server.prefilled {
        cmd.args(["--clients", "0", "--lq-server", "198.18.0.1", "--lq-others"])
            .arg(format!("{first}-{last}"));
    } else {
        cmd.args(["--clients", &FILL.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start dhcp-load: {e}"))?;
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut said = String::new();
    let mut line = String::new();
    let mut cpu_before = f64::NAN;
    while err.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
        said.push_str(&line);
        if line.contains("leasequery starts") {
            cpu_before = cpu_secs(pid);
            break;
        }
        line.clear();
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let cpu = cpu_secs(pid) - cpu_before;
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !json.contains("queries_per_s") || cpu_before.is_nan() {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        return Err(format!("dhcp-load failed: {json}{said}{rest}"));
    }
    Ok((json, cpu))
}

/// One contender's searches.
struct Row {
    name: &'static str,
    /// Each run's best step and every step it ran.
    runs: Vec<(LqStep, Vec<LqStep>)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Row {
    fn median(&self, of: impl Fn(&LqStep) -> f64) -> f64 {
        median(self.runs.iter().map(|r| of(&r.0)).collect())
    }
}

pub fn run(quick: bool) -> Result {
    if !is_root() {
        return Err("the benchmark builds a namespace lab: run it as root".into());
    }
    crate::install(&["isc-dhcp-server"])?;
    let began = Instant::now();
    let load_before = load_average();
    let plan = Plan::new(quick);
    let runs = if quick { 1 } else { 3 };
    let ours = lab::release_binary("dhcp-server", "dhcp-server")?;
    let load = lab::release_binary("dhcp-benches", "dhcp-load")?;
    let mut lab = Lab::start("dhcp-server-bench-lq", lab::Layout::Pair)?;
    let list = servers(&lab.dir, &ours)?;
    let mut rows = Vec::new();
    for server in &list {
        let mut row = Row {
            name: server.name,
            runs: Vec::new(),
        };
        for run in 1..=runs {
            println!("{} (run {run} of {runs}):", server.name);
            let found = search_rates(
                server.start_rate,
                &plan,
                MAX_UNANSWERED_PERCENT,
                |rate| step(&mut lab, server, &load, rate, &plan),
                |s| s.unanswered_pct,
            )?;
            if found.0.queries_per_s.is_nan() || found.0.queries_per_s <= 0.0 {
                return Err(format!(
                    "{} answered no leasequery: see {}",
                    server.name,
                    lab.dir.join("server.log").display()
                ));
            }
            row.runs.push(found);
        }
        rows.push(row);
    }
    let took = began.elapsed().as_secs();
    report(&rows, quick, runs, &load_before, took)?;
    println!("the benchmark took {}m{:02}s", took / 60, took % 60);
    Ok(())
}

/// The first three fields of /proc/loadavg: how busy the shared machine was.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn step_json(s: &LqStep) -> String {
    format!(
        "{{\"offered\":{},\"queries_per_s\":{:.1},\"unanswered_pct\":{:.3},\"p50_us\":{},\"p99_us\":{},\"cpu_us_per_query\":{:.2},\"answers\":{{\"active\":{},\"unassigned\":{},\"unknown\":{}}},\"leased_not_active\":{},\"leases\":{},\"fill_leases_per_s\":{:.1}}}",
        s.rate, s.queries_per_s, s.unanswered_pct, s.p50, s.p99, s.cpu_us_per_query,
        s.active, s.unassigned, s.unknown, s.wrong, s.leases, s.fill_per_s
    )
}

/// The table on stdout and target/bench/bench-leasequery.json.
fn report(rows: &[Row], quick: bool, runs: u32, load_before: &str, took: u64) -> Result {
    let mut table = format!(
        "\nleasequery by address, {FILL} leases, best rate with ≥ {}% answered; medians of {runs} run(s)\n",
        100.0 - MAX_UNANSWERED_PERCENT
    );
    let _ = writeln!(
        table,
        "{:28} {:>10} {:>24} {:>7} {:>7} {:>10} {:>12}",
        "server", "queries/s", "per run", "p50 µs", "p99 µs", "CPU µs/q", "wrong answers"
    );
    let mut json = format!(
        "{{\"quick\":{quick},\"runs\":{runs},\"leases\":{FILL},\"requester\":\"{REQUESTER}\",\"max_unanswered_percent\":{MAX_UNANSWERED_PERCENT},\"load_average_before\":\"{load_before}\",\"load_average_after\":\"{}\",\"took_secs\":{took},\"servers\":[",
        load_average()
    );
    for (i, r) in rows.iter().enumerate() {
        let per_run: Vec<String> = r
            .runs
            .iter()
            .map(|(b, _)| format!("{:.0}", b.queries_per_s))
            .collect();
        let wrong: f64 = r.runs.iter().flat_map(|(_, s)| s).map(|s| s.wrong).sum();
        let _ = writeln!(
            table,
            "{:28} {:>10.0} {:>24} {:>7.0} {:>7.0} {:>10.2} {:>12}",
            r.name,
            r.median(|s| s.queries_per_s),
            per_run.join(" / "),
            r.median(|s| s.p50),
            r.median(|s| s.p99),
            r.median(|s| s.cpu_us_per_query),
            wrong
        );
        let runs_json: Vec<String> = r
            .runs
            .iter()
            .map(|(best, steps)| {
                let steps: Vec<String> = steps.iter().map(step_json).collect();
                format!(
                    "{{\"best\":{},\"steps\":[{}]}}",
                    step_json(best),
                    steps.join(",")
                )
            })
            .collect();
        let _ = write!(
            json,
            "{}{{\"name\":\"{}\",\"queries_per_s\":{:.1},\"cpu_us_per_query\":{:.2},\"p50_us\":{},\"p99_us\":{},\"runs\":[{}]}}",
            if i > 0 { "," } else { "" },
            r.name,
            r.median(|s| s.queries_per_s),
            r.median(|s| s.cpu_us_per_query),
            r.median(|s| s.p50),
            r.median(|s| s.p99),
            runs_json.join(",")
        );
    }
    json.push_str("]}\n");
    println!("{table}");
    let path = crate::bench::write_results("bench-leasequery.json", &json)?;
    println!("written: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_missing_figures() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(vec![f64::NAN]).is_nan());
    }

    #[test]
    fn dhcpd_gets_the_first_addresses_of_the_pool() {
        assert_eq!(
            filled_range(),
            ("198.18.1.0".to_string(), "198.19.135.159".to_string())
        );
    }
}
