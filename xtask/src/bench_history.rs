//! `cargo xtask bench --history`: what the lease history costs the server. The main
//! benchmark's rate search for our server (XDP, one worker, sync journal) runs without
//! `[history]`, with every lease sent to PostgreSQL, to NATS JetStream, and to both,
//! engines started here on this machine (a PostgreSQL 15 cluster on a Unix socket in a
//! temporary directory, fsync on; nats-server with JetStream in the server's namespace),
//! so they share its two cores with the server and the generator. The searches
//! alternate, `runs` times each; the table compares medians. After each load with the sinks, `ctl
//! status` says how far behind they were when the load stopped, and the time they took
//! to catch up is measured. The engines run at nice 19, standing in for machines of
//! their own (the server's followers run at nice 19 anyway). Results:
//! target/bench/bench-history.json.

#[allow(dead_code)] // the benchmark uses part of the tests' harness
#[path = "../../dhcp-server/tests/common/postgres.rs"]
mod postgres;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench::{self, config_file, search_rates, write_results, Plan, MAX_DROP_PERCENT};
use crate::lab::{self, Lab, SERVER_NS};
use crate::{is_root, Result};

/// Where nats-server listens: the server's own address, in its namespace.
const NATS: &str = "198.18.0.1:4222";
/// The engines' niceness: the followers' own.
const NICE: &str = "19";

/// One contender: the configuration file's path and how many sinks it has.
struct Variant {
    name: &'static str,
    config: String,
    sinks: usize,
}

/// What one step measured: the main benchmark's figures, and with sinks how many journal
/// records were not yet in them when the load stopped (the larger of the two) and the
/// seconds until both had everything.
#[derive(Debug, Clone, Default)]
struct Step {
    load: bench::Step,
    lag_records: f64,
    catch_up_s: f64,
}

/// Each sink's `lag_records` in `ctl --json status` (none when the server is not up).
fn lags(ours: &str, socket: &str) -> Vec<f64> {
    let out = Command::new(ours)
        .args(["ctl", "--socket", socket, "--json", "status"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.split("\"lag_records\":")
        .skip(1)
        .filter_map(|rest| rest.split([',', '}']).next()?.trim().parse().ok())
        .collect()
}

fn step(
    lab: &mut Lab,
    ours: &str,
    load: &str,
    v: &Variant,
    rate: u32,
    plan: &Plan,
) -> Result<Step> {
    let socket = lab.dir.join("control.sock").display().to_string();
    let args: Vec<String> = [
        "RUST_LOG=info,dhcp_proto::engine=warn",
        ours,
        "run",
        "--config",
        &v.config,
    ]
    .map(String::from)
    .to_vec();
    let start = bench::Start {
        program: "env",
        args: &args,
        ready: "ready",
        load: &[],
    };
    let (mut lag_records, mut catch_up_s) = (0.0, 0.0);
    let mut sinks = || {
        if v.sinks == 0 {
            return Ok(());
        }
        let stopped = Instant::now();
        lag_records = lags(ours, &socket).into_iter().fold(0.0, f64::max);
        loop {
            let now = lags(ours, &socket);
            if now.len() == v.sinks && now.iter().all(|&l| l == 0.0) {
                break;
            }
            if stopped.elapsed() > Duration::from_secs(300) {
                return Err(format!("the sinks did not catch up in 5 minutes: {now:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        catch_up_s = stopped.elapsed().as_secs_f64();
        Ok(())
    };
    let (json, cpu) = bench::measure(lab, &start, load, rate, plan.step_secs, &[], &mut sinks)?;
    let s = Step {
        load: bench::to_step(rate, &json, cpu),
        lag_records,
        catch_up_s,
    };
    if v.sinks > 0 {
        println!("            sinks {lag_records:.0} records behind at the end, caught up in {catch_up_s:.1} s");
    }
    Ok(s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(quick: bool) -> Result {
    if !is_root() {
        return Err("the benchmark builds a namespace lab: run it as root".into());
    }
    let began = Instant::now();
    let plan = Plan::new(quick);
    let runs = if quick { 1 } else { 3 };
    let ours = lab::release_binary("dhcp-server", "dhcp-server")?;
    let load = lab::release_binary("dhcp-benches", "dhcp-load")?;
    let mut lab = Lab::start("dhcp-server-bench-history", lab::Layout::Pair)?;
    let pg = postgres::Postgres::start(
        "bench-history",
        &[
            "fsync = on",
            "full_page_writes = on",
            "shared_buffers = 256MB",
            "max_wal_size = 4GB",
        ],
    )
    .ok_or("PostgreSQL could not start")?;
    // The engines stand in for machines of their own: on this one they yield to the
    // server and the generator, as the server's followers do (nice 19). The postmaster's
    // children made so far are reniced with it; later ones inherit it.
    let postmaster = pg.pid().to_string();
    let children = Command::new("pgrep")
        .args(["-P", &postmaster])
        .output()
        .map_err(|e| e.to_string())?;
    let mut pids = vec![postmaster];
    pids.extend(
        String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(String::from),
    );
    crate::sh(
        Command::new("renice")
            .args(["-n", NICE, "-p"])
            .args(&pids)
            .stdout(std::process::Stdio::null()),
    )?;
    let nats_conf = lab.dir.join("nats.conf");
    std::fs::write(
        &nats_conf,
        format!(
            "server_name: bench\nlisten: {NATS}\njetstream {{ store_dir: \"{}\" }}\n",
            lab.dir.join("nats").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let conf = nats_conf.display().to_string();
    lab.spawn(
        SERVER_NS,
        "nice",
        &["-n", NICE, "nats-server", "-c", &conf],
        "nats.log",
    )?;
    lab.wait_for("nats.log", "Server is ready", Duration::from_secs(20))?;
    let settings = format!(
        "backend = \"xdp\"\nworkers = 1\ndurability = \"sync\"\ncontrol-socket = \"{}\"\n",
        lab.dir.join("control.sock").display()
    );
    let pg_sink = format!("[history.postgres]\nurl = \"{}\"\n", pg.url());
    let nats_sink = format!("[history.nats]\nservers = [\"nats://{NATS}\"]\n");
    let history = |sinks: &str| format!("[history]\nserver = \"bench\"\nsite = \"bench\"\n{sinks}");
    let variants = [
        Variant {
            name: "dhcp-server (xdp 1 worker, sync)",
            config: config_file(&lab.dir, "plain.toml", &settings, "")?,
            sinks: 0,
        },
        Variant {
            name: "dhcp-server (xdp 1 worker, sync) + PostgreSQL",
            config: config_file(&lab.dir, "pg.toml", &settings, &history(&pg_sink))?,
            sinks: 1,
        },
        Variant {
            name: "dhcp-server (xdp 1 worker, sync) + NATS",
            config: config_file(&lab.dir, "nats.toml", &settings, &history(&nats_sink))?,
            sinks: 1,
        },
        Variant {
            name: "dhcp-server (xdp 1 worker, sync) + PostgreSQL + NATS",
            config: config_file(
                &lab.dir,
                "both.toml",
                &settings,
                &history(&format!("{pg_sink}{nats_sink}")),
            )?,
            sinks: 2,
        },
    ];
    let mut best: Vec<Vec<Step>> = vec![Vec::new(); variants.len()];
    let mut json = String::from("{\"runs\":[");
    for run in 0..runs {
        for (i, v) in variants.iter().enumerate() {
            println!("{} (run {} of {runs}):", v.name, run + 1);
            let (b, steps) = search_rates(
                16_000,
                &plan,
                MAX_DROP_PERCENT,
                |rate| step(&mut lab, &ours, &load, v, rate, &plan),
                |s| s.load.drop_pct,
            )?;
            let _ = write!(
                json,
                "{}{{\"name\":\"{}\",\"best\":{:.0},\"lag_records\":{:.0},\"catch_up_s\":{:.1},\"steps\":[{}]}}",
                if run + i > 0 { "," } else { "" },
                v.name,
                b.load.leases_per_s,
                b.lag_records,
                b.catch_up_s,
                steps
                    .iter()
                    .map(|s| format!("{{\"rate\":{},\"leases_per_s\":{:.0},\"drop_pct\":{:.2}}}", s.load.rate, s.load.leases_per_s, s.load.drop_pct))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            best[i].push(b);
        }
    }
    json.push_str("]}");
    let path = write_results("bench-history.json", &json)?;
    let med = |i: usize, f: fn(&Step) -> f64| median(best[i].iter().map(f).collect());
    println!("\n| server | leases/s (median of {runs}) | p99 µs | CPU µs/lease | sinks behind at the end | caught up after |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, v) in variants.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {} | {} |",
            v.name,
            med(i, |s| s.load.leases_per_s),
            med(i, |s| s.load.p99),
            med(i, |s| s.load.cpu_us_per_lease),
            if v.sinks > 0 {
                format!("{:.0} records", med(i, |s| s.lag_records))
            } else {
                "-".into()
            },
            if v.sinks > 0 {
                format!("{:.1} s", med(i, |s| s.catch_up_s))
            } else {
                "-".into()
            },
        );
    }
    println!();
    for (i, v) in variants.iter().enumerate().skip(1) {
        let ratio = med(i, |s| s.load.leases_per_s) / med(0, |s| s.load.leases_per_s);
        println!(
            "{}: {:.1}% of the figure without history",
            v.name,
            ratio * 100.0
        );
    }
    println!("results: {}", path.display());
    let took = began.elapsed().as_secs();
    println!("the benchmark took {}m{:02}s", took / 60, took % 60);
    drop(pg);
    Ok(())
}
