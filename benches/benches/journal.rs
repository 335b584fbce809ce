//! The lease journal on this machine's disk (a directory under the temp dir, which is on
//! the same file system as /work here):
//!
//! - `journal/append_lease`: one lease record copied into the mapping (async mode, so
//!   no commit is waited for). The per-packet cost a worker pays.
//! - `journal/replay_1m`: opening a journal holding 1,000,000 leases (replay, CRC of
//!   every record, fold into the state handed to the engine). Issue target: <= 1 s.
//!   All in log segments (one 64 MiB segment per shard).
//! - `journal/replay_1m_compacted`: the same leases as a long-running server leaves them,
//!   written into 16 MiB segments and folded by the compactor: mostly snapshots.
//! - group commit (printed after the criterion runs): W writer threads in sync mode, each
//!   appending records and holding each one's "ACK" until `durable()` covers it, with at
//!   most 4096 outstanding per writer (a worker's ACK queue). Reports durable commits a
//!   second and the commit latency (append to durable) percentiles. Issue target: at
//!   least 200,000 a second with p99 < 2 ms. Segments of 16 MiB, so every writer rolls
//!   to a new segment a few times within each 5 s run (at 64 MiB a paced run would not).
//! - disk floor (printed first): what the disk alone gives, to read the commit latencies
//!   against: 2 KiB stored into a mapped, zeroed and synced file, then msync(MS_SYNC) of
//!   the dirty range, in a loop for 4 s; the latency percentiles of that msync. No journal
//!   code. Measured twice: with the machine otherwise idle, and with one more thread
//!   spinning on a CPU (as a loaded worker keeps one busy). On a VM whose host withholds
//!   the vCPUs (steal), the second shows what no commit path can beat: the share of time
//!   stolen and the msyncs stalled > 10 ms are printed with it (and with every group
//!   commit row).
//!
//! Addresses are plain numbers counted up from 198.18.0.0; nothing is sent anywhere.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dhcp_server::journal::{
    BindingState, Cause, Context, Durability, Journal, LeaseFlags, LeaseRecord, Options,
    ShardWriter,
};
use hdrhistogram::Histogram;

const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p =
            std::env::temp_dir().join(format!("dhcp-journal-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record<'a>(i: u32, stamp: u64, hw: &'a [u8; 6], cid: &'a [u8; 7]) -> LeaseRecord<'a> {
    LeaseRecord {
        stamp,
        addr: Ipv4Addr::from(BASE.wrapping_add(i)),
        state: BindingState::Active,
        htype: 1,
        chaddr: hw,
        client_id: cid,
        agent_info: &[],
        starts: 1_795_000_000,
        ends: 1_795_003_600,
        cltt: 1_795_000_000,
        tstp: 0,
        tsfp: 0,
        atsfp: 0,
        flags: LeaseFlags::default(),
        // What a DHCPACK's record carries.
        context: Context {
            cause: Cause::Granted,
            at: 1_795_000_000,
            giaddr: Ipv4Addr::UNSPECIFIED,
            host_name: &[],
        },
    }
}

fn ids(i: u32) -> ([u8; 6], [u8; 7]) {
    let b = i.to_be_bytes();
    (
        [2, 0, b[0], b[1], b[2], b[3]],
        [1, 2, 0, b[0], b[1], b[2], b[3]],
    )
}

fn append(c: &mut Criterion) {
    let dir = Dir::new("append");
    let opts = Options {
        durability: Durability::Async,
        ..Options::default()
    };
    let mut opened = Journal::open(&dir.0, &opts).unwrap();
    let w = &mut opened.writers[0];
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    group.bench_function("append_lease", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let (hw, cid) = ids(i % 100_000);
            w.append_lease(&record(i % 100_000, u64::from(i), &hw, &cid))
                .unwrap()
        })
    });
    group.finish();
}

fn replay(c: &mut Criterion, compacted: bool) {
    const N: u32 = 1_000_000;
    let dir = Dir::new(if compacted {
        "replay-compacted"
    } else {
        "replay"
    });
    {
        let opts = Options {
            durability: Durability::Async,
            shards: 2,
            segment_bytes: if compacted { 16 << 20 } else { 64 << 20 },
            ..Options::default()
        };
        let mut opened = Journal::open(&dir.0, &opts).unwrap();
        for i in 0..N {
            let (hw, cid) = ids(i);
            opened.writers[(i % 2) as usize]
                .append_lease(&record(i, u64::from(i) + 1, &hw, &cid))
                .unwrap();
        }
        if compacted {
            let deadline = Instant::now() + Duration::from_secs(60);
            while opened.journal.sealed_segments() > 0 && Instant::now() < deadline {
                opened.journal.compact_now();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let mut group = c.benchmark_group("journal");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(N)));
    let name = if compacted {
        "replay_1m_compacted"
    } else {
        "replay_1m"
    };
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let opts = Options {
                    shards: 2,
                    ..Options::default()
                };
                let start = Instant::now();
                let opened = Journal::open(&dir.0, &opts).unwrap();
                spent += start.elapsed();
                assert_eq!(opened.state.leases.len(), N as usize);
            }
            spent
        })
    });
    group.finish();
}

/// One writer. `rate` = None: appends as fast as its ACK queue (4096 outstanding)
/// allows. `rate` = Some(r): appends on a fixed schedule of r records a second, and
/// measures each latency from the record's scheduled time (so a stall is not hidden by
/// the writer falling behind: no coordinated omission).
fn commit_worker(
    mut w: ShardWriter,
    until: Instant,
    base: u32,
    rate: Option<f64>,
) -> (u64, Histogram<u64>, u64) {
    const QUEUE: usize = 4096;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let mut pending: std::collections::VecDeque<(u64, Instant)> =
        std::collections::VecDeque::with_capacity(QUEUE);
    let mut acked = 0u64;
    let mut i = 0u32;
    let start = Instant::now();
    loop {
        let now = Instant::now();
        let durable = w.durable();
        while pending.front().is_some_and(|&(s, _)| s <= durable) {
            let (_, t) = pending.pop_front().unwrap();
            hist.record(now.saturating_duration_since(t).as_micros().max(1) as u64)
                .unwrap();
            acked += 1;
        }
        if now >= until {
            break;
        }
        let due = rate.map(|r| start + Duration::from_secs_f64(f64::from(i) / r));
        if pending.len() == QUEUE {
            w.wait_durable(pending.front().unwrap().0, Duration::from_secs(5));
            continue;
        }
        if let Some(wait) = due.and_then(|d| d.checked_duration_since(now)) {
            // Not due yet: sleep until then or until a commit, as a worker in poll().
            match pending.front() {
                Some(&(seq, _)) => {
                    w.wait_durable(seq, wait);
                }
                None => std::thread::sleep(wait),
            }
            continue;
        }
        let n = base + (i % 65_536);
        let (hw, cid) = ids(n);
        let seq = w
            .append_lease(&record(n, u64::from(i) + 1, &hw, &cid))
            .unwrap();
        pending.push_back((seq, due.unwrap_or_else(Instant::now)));
        i += 1;
    }
    (acked, hist, w.unprepared_rolls())
}

/// `rate`: total records a second over all writers, or None for as fast as possible.
fn group_commit(writers: usize, secs: u64, rate: Option<f64>) {
    let dir = Dir::new("commit");
    let opts = Options {
        shards: writers,
        segment_bytes: 16 << 20,
        ..Options::default()
    };
    let opened = Journal::open(&dir.0, &opts).unwrap();
    let ticks = cpu_ticks();
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let handles: Vec<_> = opened
        .writers
        .into_iter()
        .enumerate()
        .map(|(k, w)| {
            let r = rate.map(|r| r / writers as f64);
            std::thread::spawn(move || commit_worker(w, until, (k as u32) << 16, r))
        })
        .collect();
    let mut total = 0;
    let mut unprepared = 0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for h in handles {
        let (n, hh, u) = h.join().unwrap();
        total += n;
        unprepared += u;
        hist.add(hh).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let steal = steal_since(ticks);
    let offered = rate.map_or("as fast as possible".to_string(), |r| {
        format!("offered {r:.0}/s")
    });
    println!(
        "journal/group_commit sync, {writers} writer(s), {offered}: {:.0} durable commits/s; \
         commit latency p50 {} us, p99 {} us, p99.9 {} us, max {} us; \
         rolls without a prepared segment: {unprepared}; CPU steal {steal:.1} %",
        total as f64 / elapsed,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
}

/// The share of the machine's CPU time the host withheld (steal, from /proc/stat) since
/// `from`, as (steal ticks, all ticks) of the summary "cpu" line.
fn steal_since(from: (u64, u64)) -> f64 {
    let now = cpu_ticks();
    let all = now.1.saturating_sub(from.1).max(1);
    100.0 * now.0.saturating_sub(from.0) as f64 / all as f64
}

fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal: guest time is already in user.
    let steal = fields.get(7).copied().unwrap_or(0);
    (steal, fields.iter().take(8).sum())
}

/// The disk's own commit latency (see the file comment), with the journal's write pattern
/// but none of its code, threads or locks; `busy`: one more thread spins meanwhile.
fn disk_floor(busy: bool) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    const LEN: usize = 16 << 20;
    const BATCH: usize = 2048;
    const RUN: Duration = Duration::from_secs(4);
    const STALL_US: u64 = 10_000;
    let dir = Dir::new("floor");
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("floor");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    // Zeroed one page per write, as the journal prepares segments (see segment.rs).
    let zeros = [0u8; 4096];
    for off in (0..LEN).step_by(4096) {
        file.write_all_at(&zeros, off as u64).unwrap();
    }
    file.sync_all().unwrap();
    // SAFETY: maps LEN bytes of a file we just wrote to LEN bytes; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let spinner = busy.then(|| {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let mut syncs: Vec<(Instant, Instant)> = Vec::new();
    let mut end = 0usize;
    let ticks = cpu_ticks();
    let until = Instant::now() + RUN;
    while Instant::now() < until {
        if end + BATCH > LEN {
            end = 0;
        }
        // SAFETY: [end, end + BATCH) lies inside the mapping (checked just above).
        unsafe { std::ptr::write_bytes(map.cast::<u8>().add(end), 0x5a, BATCH) };
        let from = end & !4095;
        end += BATCH;
        let t = Instant::now();
        // SAFETY: a page-aligned range inside the mapping.
        let r =
            unsafe { libc::msync(map.cast::<u8>().add(from).cast(), end - from, libc::MS_SYNC) };
        assert_eq!(r, 0);
        let done = Instant::now();
        hist.record((done - t).as_micros().max(1) as u64).unwrap();
        syncs.push((t, done));
    }
    let steal = steal_since(ticks);
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = spinner {
        s.join().unwrap();
    }
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(map, LEN) };
    let stalls = hist.count_between(STALL_US, hist.max().max(STALL_US));
    let ideal = ideal_commit(&syncs);
    println!(
        "journal/disk_floor msync of 2 KiB appends, {}: {} msyncs in {}s; p50 {} us, \
         p90 {} us, p99 {} us, max {} us; {stalls} over {} ms; CPU steal {steal:.1} %; \
         a record arriving at a random moment, durable with the next msync: p50 {} us, \
         p99 {} us",
        if busy {
            "one CPU kept busy"
        } else {
            "machine otherwise idle"
        },
        hist.len(),
        RUN.as_secs(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.9),
        hist.value_at_quantile(0.99),
        hist.max(),
        STALL_US / 1000,
        ideal.value_at_quantile(0.5),
        ideal.value_at_quantile(0.99),
    );
}

/// The commit latency of a perfect group commit on these msyncs, run back to back: a
/// record arriving while msync i runs is durable when msync i + 1 ends. Weighted by time
/// (one arrival every 10 us), so a long msync counts for every record it holds up, as it
/// does in the journal: per msync, a 15 ms stall is one sample among thousands, while
/// the records waiting on it can be more than 1 % of all.
fn ideal_commit(syncs: &[(Instant, Instant)]) -> Histogram<u64> {
    const STEP: Duration = Duration::from_micros(10);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for pair in syncs.windows(2) {
        let ((running, _), (next, durable)) = (pair[0], pair[1]);
        let mut t = running;
        while t < next {
            hist.record((durable - t).as_micros().max(1) as u64)
                .unwrap();
            t += STEP;
        }
    }
    hist
}

fn main() {
    disk_floor(false);
    disk_floor(true);
    let mut c = Criterion::default().configure_from_args();
    append(&mut c);
    replay(&mut c, false);
    replay(&mut c, true);
    c.final_summary();
    for writers in [1, 2, 4] {
        group_commit(writers, 5, None);
    }
    for rate in [200_000.0, 400_000.0] {
        group_commit(2, 5, Some(rate));
        group_commit(4, 5, Some(rate));
    }
}
