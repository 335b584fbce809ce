//! `cargo xtask fuzz`: every cargo-fuzz target of dhcp-server/fuzz in turn, spread over
//! the cores, each started from the committed seed corpus and given its share of the
//! minutes asked for; then a table of executions, speed, coverage and crashes.
//!
//! A run lives in `<target dir>/fuzz-runs/<unix time>/`: each target's new corpus
//! (`corpus/<target>`, the seeds stay untouched), its crash files (`artifacts/<target>`)
//! and libFuzzer's log (`<target>.log`), which the table is read from. Coverage is
//! libFuzzer's own `cov:` (edges reached) and `ft:` (features) from its last status line:
//! `cargo fuzz coverage` would need the llvm-cov tools, which the machine lacks.
//!
//! `--capture` first remakes the seeds from real software (see `capture.rs`).

mod capture;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{on_path, sh, Result};

/// One fuzz target and the longest input worth trying on it.
struct Target {
    name: &'static str,
    max_len: usize,
}

/// Every target in dhcp-server/fuzz/Cargo.toml, one per input parser.
const TARGETS: &[Target] = &[
    // A datagram is at most an Ethernet payload here.
    Target {
        name: "parse_request",
        max_len: 1500,
    },
    // A run of datagrams, each behind a two-octet length.
    Target {
        name: "engine_handle",
        max_len: 8192,
    },
    // A failover stream of several messages.
    Target {
        name: "failover_wire",
        max_len: 8192,
    },
    Target {
        name: "isc_leases",
        max_len: 16384,
    },
    // The README's figure: a long test and a datagram.
    Target {
        name: "class_expr",
        max_len: 4400,
    },
    Target {
        name: "control_request",
        max_len: 4096,
    },
    // A segment holding dozens of records, as import-isc writes them.
    Target {
        name: "journal_replay",
        max_len: 16384,
    },
    // A bulk leasequery stream of a few framed queries.
    Target {
        name: "bulk_leasequery",
        max_len: 4096,
    },
];

/// What `cargo xtask fuzz` was asked for.
pub struct Options {
    pub minutes: f64,
    pub jobs: usize,
    pub capture: bool,
    /// Only these targets (all when empty).
    pub only: Vec<String>,
}

/// What one target's run came to, read from its log and artifact directory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub executions: u64,
    pub execs_per_sec: u64,
    pub cov: Option<u64>,
    pub ft: Option<u64>,
    pub corpus: Option<u64>,
}

struct Outcome {
    target: &'static str,
    stats: Stats,
    seconds: f64,
    crashes: Vec<PathBuf>,
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dhcp-server/fuzz")
}

pub fn seeds_dir() -> PathBuf {
    fuzz_dir().join("corpus-seed")
}

fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t))
}

pub fn run(opts: &Options) -> Result {
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| opts.only.is_empty() || opts.only.iter().any(|o| o == t.name))
        .collect();
    if let Some(unknown) = opts
        .only
        .iter()
        .find(|o| !TARGETS.iter().any(|t| t.name == o.as_str()))
    {
        return Err(format!("no fuzz target '{unknown}'"));
    }
    if opts.capture {
        capture::run()?;
    }
    install_cargo_fuzz()?;
    let bins = build()?;

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let run_dir = target_dir().join("fuzz-runs").join(stamp.to_string());
    let jobs = opts.jobs.clamp(1, targets.len());
    // Each core fuzzes its targets one after another, so a target gets `jobs` cores'
    // worth of the minutes divided among all the targets.
    let share = (opts.minutes * 60.0 * jobs as f64 / targets.len() as f64).max(1.0) as u64;
    eprintln!(
        "xtask: fuzzing {} targets for {share} s each, {jobs} at a time, in {}",
        targets.len(),
        run_dir.display()
    );

    let started = Instant::now();
    let queue = Mutex::new(targets.into_iter());
    let results = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some(t) = queue.lock().unwrap().next() else {
                    return;
                };
                match fuzz_one(&bins, &run_dir, t, share) {
                    Ok(o) => results.lock().unwrap().push(o),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            });
        }
    });
    let wall = started.elapsed();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|o| TARGETS.iter().position(|t| t.name == o.target));
    print!("{}", table(&results, wall));
    let failures = failures.into_inner().unwrap();
    let crashes: Vec<&PathBuf> = results.iter().flat_map(|o| &o.crashes).collect();
    for c in &crashes {
        println!("crash kept: {}", c.display());
    }
    match (crashes.len(), failures.is_empty()) {
        (0, true) => Ok(()),
        (0, false) => Err(failures.join("; ")),
        (n, _) => Err(format!(
            "{n} crash(es); replay one with dhcp-server/fuzz/target/<triple>/release/<target> <file>"
        )),
    }
}

/// cargo-fuzz, if it is not there yet.
fn install_cargo_fuzz() -> Result {
    if on_path("cargo-fuzz") {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(cargo).args(["install", "cargo-fuzz", "--locked"]))
}

/// Builds every target and returns the directory holding the binaries: optimized, with
/// debug assertions and overflow checks (an overflow is a crash), without AddressSanitizer
/// (the parsers are safe Rust, where it finds nothing, and it halves the executions).
fn build() -> Result<PathBuf> {
    sh(Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "--sanitizer", "none"])
        .current_dir(fuzz_dir().join(".."))
        // The fuzz crate has its own workspace and target directory; a target directory
        // set for the main workspace must not pull its nightly artifacts over there.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    let host = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("rustc +nightly -vV: {e}"))?;
    let triple = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or("rustc +nightly -vV names no host")?;
    Ok(fuzz_dir().join("target").join(triple).join("release"))
}

fn fuzz_one(bins: &Path, run_dir: &Path, t: &Target, seconds: u64) -> Result<Outcome> {
    let corpus = run_dir.join("corpus").join(t.name);
    let artifacts = run_dir.join("artifacts").join(t.name);
    for d in [&corpus, &artifacts] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let log_path = run_dir.join(format!("{}.log", t.name));
    let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let seeds = seeds_dir().join(t.name);
    let mut cmd = Command::new(bins.join(t.name));
    // New inputs go to the first directory; the seeds are only read.
    cmd.arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.args([
        format!("-max_total_time={seconds}"),
        format!("-max_len={}", t.max_len),
        format!("-artifact_prefix={}/", artifacts.display()),
        // A loop or a slow path is a finding too: 10 s on one input is a hang.
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
        "-print_final_stats=1".into(),
    ]);
    let started = Instant::now();
    eprintln!("xtask: fuzz {} for {seconds} s", t.name);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", t.name))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).map_err(|e| e.to_string())?;
    let stats = parse_log(&text);
    let crashes = crash_files(&artifacts)?;
    if !status.success() && crashes.is_empty() {
        return Err(format!(
            "{} stopped with {status} and left no crash file: see {}",
            t.name,
            log_path.display()
        ));
    }
    Ok(Outcome {
        target: t.name,
        stats,
        seconds,
        crashes,
    })
}

/// libFuzzer's findings in an artifact directory (slow-unit files are not failures).
fn crash_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = e.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if ["crash-", "timeout-", "oom-", "leak-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Reads libFuzzer's output: the `-print_final_stats` lines when it got that far, else
/// the last status line (`#N ... cov: C ft: F corp: K/...`), which a crash leaves too.
pub fn parse_log(text: &str) -> Stats {
    let mut s = Stats::default();
    let stat = |key: &str| {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    let status = text.lines().rev().find(|l| {
        l.starts_with('#')
            && l.split_whitespace()
                .next()
                .is_some_and(|n| n[1..].parse::<u64>().is_ok())
    });
    let after = |line: &str, key: &str| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.split('/').next()?.parse::<u64>().ok()
    };
    if let Some(line) = status {
        s.executions = line[1..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        s.cov = after(line, "cov:");
        s.ft = after(line, "ft:");
        s.corpus = after(line, "corp:");
        s.execs_per_sec = after(line, "exec/s:").unwrap_or(0);
    }
    if let Some(n) = stat("stat::number_of_executed_units:") {
        s.executions = n;
    }
    if let Some(n) = stat("stat::average_exec_per_sec:") {
        s.execs_per_sec = n;
    }
    s
}

fn table(results: &[Outcome], wall: Duration) -> String {
    let mut out = format!(
        "{:<16} {:>14} {:>9} {:>8} {:>8} {:>7} {:>8} {:>7}\n",
        "target", "executions", "execs/s", "cov", "ft", "corpus", "seconds", "crashes"
    );
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let mut total = 0;
    for o in results {
        total += o.stats.executions;
        out += &format!(
            "{:<16} {:>14} {:>9} {:>8} {:>8} {:>7} {:>8.0} {:>7}\n",
            o.target,
            o.stats.executions,
            o.stats.execs_per_sec,
            opt(o.stats.cov),
            opt(o.stats.ft),
            opt(o.stats.corpus),
            o.seconds,
            o.crashes.len()
        );
    }
    let crashes: usize = results.iter().map(|o| o.crashes.len()).sum();
    out += &format!(
        "{:<16} {:>14} {:>9} {:>8} {:>8} {:>7} {:>8.0} {:>7}\n",
        "total",
        total,
        (total as f64 / wall.as_secs_f64().max(1.0)) as u64,
        "",
        "",
        "",
        wall.as_secs_f64(),
        crashes
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail of a real libFuzzer run (cargo-fuzz, libfuzzer-sys 0.4).
    const DONE: &str = "\
#1048576\tpulse  cov: 812 ft: 2950 corp: 301/24Kb lim: 1500 exec/s: 349525 rss: 61Mb
#2097152\tpulse  cov: 815 ft: 2971 corp: 305/25Kb lim: 1500 exec/s: 349525 rss: 61Mb
#2187771\tDONE   cov: 815 ft: 2973 corp: 306/25Kb lim: 1500 exec/s: 351843 rss: 61Mb
Done 2187771 runs in 6 second(s)
stat::number_of_executed_units: 2187771
stat::average_exec_per_sec:     351843
stat::new_units_added:          91
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              61
";

    #[test]
    fn final_stats_win() {
        let s = parse_log(DONE);
        assert_eq!(
            s,
            Stats {
                executions: 2_187_771,
                execs_per_sec: 351_843,
                cov: Some(815),
                ft: Some(2973),
                corpus: Some(306),
            }
        );
    }

    /// A crash ends the run before the final stats; the last status line still counts.
    #[test]
    fn crash_keeps_the_last_status_line() {
        let log = "\
#65536\tpulse  cov: 300 ft: 900 corp: 40/2Kb lim: 64 exec/s: 21845 rss: 40Mb
#70001\tNEW    cov: 301 ft: 905 corp: 41/2Kb lim: 64 exec/s: 21000 rss: 40Mb L: 7/9 MS: 1 ChangeBit-
thread '<unnamed>' panicked at fuzz_targets/x.rs:9:5:
==123== ERROR: libFuzzer: deadly signal
artifact_prefix='/tmp/a/'; Test unit written to /tmp/a/crash-0123
";
        let s = parse_log(log);
        assert_eq!(s.executions, 70_001);
        assert_eq!((s.cov, s.ft, s.corpus), (Some(301), Some(905), Some(41)));
        assert_eq!(s.execs_per_sec, 21_000);
    }

    #[test]
    fn nothing_read_is_zero() {
        assert_eq!(parse_log("INFO: Seed: 1\n"), Stats::default());
    }
}
