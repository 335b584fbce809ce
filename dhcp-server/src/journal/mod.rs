//! The lease journal: a crash-safe, memory-mapped record of every lease change, replacing
//! ISC dhcpd's append-only leases file (docs/journal.md has the format and the reasons).
//!
//! - One journal per shard, one writer per journal (the worker that owns the shard's
//!   leases): appends need no lock. Every record carries the engine's Lamport stamp and
//!   replay keeps, per address, the record with the highest one, so the state does not
//!   depend on which shard wrote what; a restart with another shard count redistributes
//!   the folded state into a new generation of files switched in by the MANIFEST.
//! - `Durability::Sync` (default): a flusher thread group-commits (msync) and publishes
//!   per-shard `durable` sequence numbers plus an eventfd; the worker holds each ACK until
//!   its record is durable. `Durability::Async`: durable as soon as it is in the mapping.
//! - A preparer thread makes each shard's next segment (reserved, zeroed, synced) before
//!   it is needed, so a roll on the append path is a pointer swap.
//! - A compactor thread folds sealed segments into a snapshot in the background.
//! - Open replays everything, cuts a damaged tail back to the last good record (one warn
//!   line), and returns the live state to hand to the engine.
//!
//! ```no_run
//! use dhcp_server::journal::{Journal, Options};
//! let opened = Journal::open("/var/lib/dhcp-server", &Options::default())?;
//! let (journal, mut writers, state) = (opened.journal, opened.writers, opened.state);
//! // hand `state.leases` to the engine, `writers[i]` to worker i, then per lease change:
//! // let seq = writers[i].append_lease(&record)?; ... ACK once writers[i].durable() >= seq
//! # drop((journal, &mut writers, state));
//! # Ok::<(), dhcp_server::journal::Error>(())
//! ```

mod compact;
mod error;
mod id;
pub mod isc;
mod lock;
pub mod owner;
mod record;
mod replay;
mod segment;
mod state;
mod tail;
mod tools;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use dhcp_proto::lease::{
    BindingState, Cause, Context, Failover, FailoverRecord, HwAddr, Lease, LeaseFlags, LeaseRecord,
    Member, MemberRecord, Record, Reservation, ReservationRecord, MAX_AGENT_INFO, MAX_CHADDR,
    MAX_CLASS_NAME, MAX_CLIENT_ID, MAX_FAILOVER_DATA, MAX_HOST_NAME, MAX_MEMBER_VALUE, NEVER,
};
pub use error::{Error, Result};
pub use state::State;
pub use tail::{Read, ShardReader, Tail};
pub use tools::{dump, import_isc, verify, FileReport, Format, ImportStats, Report, Start};
pub use writer::{DurableWatch, ShardWriter};

use lock::DirLock;
use replay::{Listing, Manifest, ShardReplay, Verdict};
use segment::{Kind, Name, Segment};
use state::Fold;
use writer::{ShardShared, Shared};

/// When a record counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the flusher's msync: an ACK never promises a lease a power loss can undo.
    #[default]
    Sync,
    /// At once: a crash of the process loses nothing (the mapping is the page cache),
    /// a power loss or kernel crash loses what the kernel had not written back yet
    /// (the flusher still pushes it out every second).
    Async,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sync" => Ok(Durability::Sync),
            "async" => Ok(Durability::Async),
            _ => Err(format!("durability '{s}': expected 'sync' or 'async'")),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Number of shards (worker threads), one writer each.
    pub shards: usize,
    pub durability: Durability,
    /// Size of each log segment, reserved in full when it is created.
    pub segment_bytes: u64,
    /// How often the compactor looks for sealed segments when nothing wakes it.
    pub compact_interval: Duration,
    /// Log bytes, over all shards, kept from compaction for followers that have not
    /// read them yet (the lease history's sinks); past it they are compacted anyway.
    pub hold_bytes: u64,
    /// The log has followers: until each has said how far it got (`Tail::hold`),
    /// compaction keeps the log (within `hold_bytes`).
    pub followed: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 1,
            durability: Durability::Sync,
            segment_bytes: 64 << 20,
            compact_interval: Duration::from_secs(1),
            hold_bytes: 4 << 30,
            followed: false,
        }
    }
}

impl Options {
    /// Smallest segment: room for the header and many of the largest frames.
    pub const MIN_SEGMENT: u64 = 64 << 10;

    fn check(&self) -> Result<()> {
        if self.shards == 0 || self.shards > 1024 {
            return Err(Error::InvalidOptions("shards must be 1 to 1024"));
        }
        if self.segment_bytes < Self::MIN_SEGMENT || self.segment_bytes > 1 << 40 {
            return Err(Error::InvalidOptions(
                "segment size must be 64 KiB to 1 TiB",
            ));
        }
        Ok(())
    }
}

/// What open found, for the caller's log and metrics.
#[derive(Debug, Clone, Default)]
pub struct RecoveryStats {
    pub files: usize,
    /// Good records replayed.
    pub records: u64,
    pub bytes: u64,
    /// Records and bytes cut from damaged tails.
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// One entry per damaged file: its path and what was wrong.
    pub damage: Vec<String>,
    /// Leftovers of an interrupted compaction or reshard that were removed.
    pub removed_leftovers: usize,
    /// The shard count of the files found, when it differed and they were redistributed.
    pub resharded_from: Option<usize>,
    /// What was wrong with the MANIFEST, when open rebuilt it (see `replay::judge_manifest`).
    pub rebuilt_manifest: Option<String>,
    pub elapsed: Duration,
}

/// An open journal: its writers (one per shard), the replayed state and what replay found.
pub struct Opened {
    pub journal: Journal,
    pub writers: Vec<ShardWriter>,
    pub state: State,
    pub recovery: RecoveryStats,
}

/// Owns the state directory (its lock), the flusher, the preparer and the compactor.
/// Dropping it stops the threads after a last commit pass; drop the writers first
/// (appends made after it are in the mapping but never become durable in sync mode).
pub struct Journal {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    _lock: DirLock,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`: takes the lock, replays, repairs
    /// damage, redistributes if the shard count changed, starts the flusher, the preparer
    /// and the compactor.
    pub fn open(dir: impl AsRef<Path>, opts: &Options) -> Result<Opened> {
        Self::open_with(dir.as_ref(), opts, true)
    }

    /// `open` without the background compactor (tests that drive compaction by hand).
    #[cfg(test)]
    pub(crate) fn open_without_compactor(dir: &Path, opts: &Options) -> Result<Opened> {
        Self::open_with(dir, opts, false)
    }

    fn open_with(dir: &Path, opts: &Options, compactor: bool) -> Result<Opened> {
        opts.check()?;
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create state directory", dir, e))?;
        let lock = DirLock::acquire(dir)?;
        let mut stats = RecoveryStats::default();
        let id = id::read_or_make(dir)?;
        let mut listing = Listing::read(dir)?;
        let manifest = match replay::judge_manifest(dir, &listing)? {
            Verdict::Use(m) => m,
            Verdict::New => {
                let m = Manifest {
                    generation: 1,
                    shards: opts.shards as u32,
                };
                m.write(dir)?;
                m
            }
            Verdict::Rebuild(damage) => {
                let m = rebuild(dir, &listing, &damage, opts.shards as u32)?;
                listing = Listing::read(dir)?;
                stats.rebuilt_manifest = Some(damage);
                m
            }
        };
        // Leftovers: temporary files, other generations (an interrupted reshard), files
        // a finished compaction had not removed yet.
        let mut leftovers: Vec<PathBuf> = listing.temporary.clone();
        leftovers.extend(
            listing
                .segments
                .iter()
                .filter(|(n, _)| n.generation != manifest.generation || n.shard >= manifest.shards)
                .map(|(_, p)| p.clone()),
        );
        let files: Vec<_> = (0..manifest.shards)
            .map(|s| listing.shard(manifest.generation, s))
            .collect();
        for f in &files {
            leftovers.extend(f.stale.iter().cloned());
        }
        // Each shard's files replay on a thread of their own, into a fold of their own;
        // the folds then merge by stamp, which gives what one sequential fold would.
        let replayed: Vec<Result<(ShardReplay, Fold)>> = std::thread::scope(|scope| {
            let running: Vec<_> = files
                .iter()
                .map(|f| {
                    scope.spawn(move || {
                        let mut fold = Fold::default();
                        replay::replay_shard(f, true, &mut fold).map(|r| (r, fold))
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut fold = Fold::default();
        let mut shards: Vec<ShardReplay> = Vec::new();
        for one in replayed {
            let (r, shard_fold) = one?;
            fold.merge(shard_fold);
            for f in &r.files {
                stats.files += 1;
                stats.records += f.records;
                stats.bytes += f.bytes;
                stats.dropped_records += f.dropped_records;
                stats.dropped_bytes += f.dropped_bytes;
                if let Some(d) = &f.damage {
                    stats.damage.push(format!("{}: {d}", f.path.display()));
                }
            }
            shards.push(r);
        }
        for p in &leftovers {
            std::fs::remove_file(p).map_err(|e| Error::io("remove leftover", p, e))?;
        }
        stats.removed_leftovers = leftovers.len();
        if !stats.damage.is_empty() {
            tracing::warn!(
                "journal {}: cut damaged data back to the last good record: dropped {} records ({} bytes): {}",
                dir.display(),
                stats.dropped_records,
                stats.dropped_bytes,
                stats.damage.join("; ")
            );
        }

        let mut generation = manifest.generation;
        if manifest.shards as usize != opts.shards {
            stats.resharded_from = Some(manifest.shards as usize);
            generation = reshard(dir, &fold, manifest, opts.shards as u32)?;
            shards = (0..opts.shards)
                .map(|s| ShardReplay {
                    snapshot: Some((0, snapshot_path(dir, generation, s as u32))),
                    next_seq: 1,
                    next_number: 1,
                    ..ShardReplay::default()
                })
                .collect();
        }

        let mut shared_shards = Vec::new();
        let mut opens = Vec::new();
        for (s, r) in shards.iter_mut().enumerate() {
            let (seg, next_seq, next_number) = open_segment(dir, generation, s as u32, r, opts)?;
            let seg = Arc::new(seg);
            let shard = ShardShared::new(
                s as u32,
                next_seq - 1,
                Arc::clone(&seg),
                next_number,
                std::mem::take(&mut r.sealed),
            )?;
            if opts.followed {
                shard.hold.store(0, Ordering::Release);
            }
            shared_shards.push(Arc::new(shard));
            opens.push((seg, next_seq));
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            id,
            generation,
            durability: opts.durability,
            segment_bytes: opts.segment_bytes,
            hold_segments: (opts.hold_bytes / opts.segment_bytes / opts.shards as u64) as usize,
            shards: shared_shards,
            stop: AtomicBool::new(false),
            flusher_idle: AtomicBool::new(false),
            flusher: OnceLock::new(),
            compactor: OnceLock::new(),
            preparer: OnceLock::new(),
        });
        let writers = opens
            .into_iter()
            .zip(&shared.shards)
            .map(|((seg, next_seq), sh)| {
                ShardWriter::new(Arc::clone(&shared), Arc::clone(sh), seg, next_seq)
            })
            .collect();
        let mut threads = Vec::new();
        let sh = Arc::clone(&shared);
        let t = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || writer::flusher(sh))
            .map_err(|e| Error::io("start flusher", dir, e))?;
        let _ = shared.flusher.set(t.thread().clone());
        threads.push(t);
        let sh = Arc::clone(&shared);
        let t = std::thread::Builder::new()
            .name("journal-prepare".into())
            .spawn(move || writer::preparer(sh))
            .map_err(|e| Error::io("start preparer", dir, e))?;
        let _ = shared.preparer.set(t.thread().clone());
        threads.push(t);
        if compactor {
            let sh = Arc::clone(&shared);
            let snaps = shards.iter().map(|r| r.snapshot.clone()).collect();
            let interval = opts.compact_interval;
            let t = std::thread::Builder::new()
                .name("journal-compact".into())
                .spawn(move || compactor_loop(sh, snaps, interval))
                .map_err(|e| Error::io("start compactor", dir, e))?;
            let _ = shared.compactor.set(t.thread().clone());
            threads.push(t);
        }
        let state = fold.into_state();
        stats.elapsed = started.elapsed();
        Ok(Opened {
            journal: Journal {
                shared,
                threads,
                _lock: lock,
            },
            writers,
            state,
            recovery: stats,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A handle for followers of the log (the lease history).
    pub fn tail(&self) -> Tail {
        Tail::new(Arc::clone(&self.shared))
    }

    /// Asks the compactor to look for sealed segments now.
    pub fn compact_now(&self) {
        if let Some(t) = self.shared.compactor.get() {
            t.unpark();
        }
    }

    /// Sealed segments still waiting for compaction, summed over shards.
    pub fn sealed_segments(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.sealed.lock().map_or(0, |v| v.len()))
            .sum()
    }

    /// Stops the flusher (after a last commit pass), the preparer (removing the prepared
    /// segments nobody moved into) and the compactor, releases the lock.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn snapshot_path(dir: &Path, generation: u64, shard: u32) -> PathBuf {
    dir.join(
        Name {
            generation,
            shard,
            kind: Kind::Snapshot,
            number: 0,
        }
        .file_name(),
    )
}

/// Rebuilds a state directory whose MANIFEST cannot be trusted (`damage` says why): the
/// files of every generation fold into one state by stamp, which is written as a new
/// generation of `shards` shards with the MANIFEST switched to it (the old files go, as
/// after a reshard). Loud: an operator should know the directory was damaged.
fn rebuild(dir: &Path, listing: &Listing, damage: &str, shards: u32) -> Result<Manifest> {
    let mut fold = Fold::default();
    let files = replay::replay_every_generation(listing, &mut fold)?;
    let newest = listing.segments.last().map_or(0, |(n, _)| n.generation);
    let (mut leases, mut reservations, mut members) = (0, 0, 0);
    for r in fold.records() {
        match r {
            Record::Lease(_) => leases += 1,
            Record::ReservationAdded(_) => reservations += 1,
            Record::MemberAdded(_) => members += 1,
            _ => {}
        }
    }
    let generation = reshard(
        dir,
        &fold,
        Manifest {
            generation: newest,
            shards,
        },
        shards,
    )?;
    tracing::error!(
        "journal {}: MANIFEST {damage}: rebuilt it from the journal files: {} file(s) of generation(s) [{}] folded by stamp ({leases} leases, {reservations} reservations, {members} class members) and written as generation {generation} with {shards} shard(s)",
        dir.display(),
        files.len(),
        listing.generations(),
    );
    Ok(Manifest { generation, shards })
}

/// Writes the folded state as generation `old.generation + 1` with `shards` shards
/// (addresses spread by a hash so compaction work is shared), switches the MANIFEST to
/// it, then removes the old generation. A crash before the switch leaves the old
/// generation current (the new files are leftovers); after it, the new one.
fn reshard(dir: &Path, fold: &Fold, old: Manifest, shards: u32) -> Result<u64> {
    let generation = old.generation + 1;
    let shard_of = |rec: &Record<'_>| -> u32 {
        let addr = match rec {
            Record::Lease(l) => l.addr,
            Record::ReservationAdded(r) => r.addr,
            Record::ReservationRemoved { addr, .. } => *addr,
            // Few, and folded by class and value rather than address.
            Record::Failover(_) | Record::MemberAdded(_) | Record::MemberRemoved(_) => return 0,
        };
        (u32::from(addr).wrapping_mul(0x9E37_79B9) >> 16) % shards
    };
    for s in 0..shards {
        let name = Name {
            generation,
            shard: s,
            kind: Kind::Snapshot,
            number: 0,
        };
        let records = fold.records().filter(|r| shard_of(r) == s);
        compact::write_snapshot(dir, name, 1, records, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })?;
    }
    segment::sync_dir(dir)?;
    Manifest { generation, shards }.write(dir)?;
    for (n, p) in Listing::read(dir)?.segments {
        if n.generation != generation {
            std::fs::remove_file(&p).map_err(|e| Error::io("remove old generation", &p, e))?;
        }
    }
    Ok(generation)
}

/// The segment a shard appends to after open: the last one replay found when it has
/// room, else a new one. Returns it with the next sequence and segment numbers.
fn open_segment(
    dir: &Path,
    generation: u64,
    shard: u32,
    r: &mut ShardReplay,
    opts: &Options,
) -> Result<(Segment, u64, u64)> {
    if let Some(res) = r.resume.take() {
        let room = res.capacity.saturating_sub(res.end);
        if room >= segment::frame_len(segment::MAX_PAYLOAD) {
            let seg = Segment::reopen(res.path, res.name.number, res.end, res.last_seq)?;
            return Ok((seg, res.last_seq + 1, r.next_number));
        }
        r.sealed.push(replay::Sealed {
            number: res.name.number,
            path: res.path,
            last_seq: res.last_seq,
        });
    }
    let name = Name {
        generation,
        shard,
        kind: Kind::Log,
        number: r.next_number,
    };
    let seg = Segment::create(dir, name, r.next_seq, opts.segment_bytes)?;
    Ok((seg, r.next_seq, r.next_number + 1))
}

/// The compactor thread's body: whenever woken (a roll) or every `interval`, folds each
/// shard's durable sealed segments into a new snapshot.
fn compactor_loop(shared: Arc<Shared>, mut snaps: Vec<Option<(u64, PathBuf)>>, interval: Duration) {
    loop {
        std::thread::park_timeout(interval);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        for (i, sh) in shared.shards.iter().enumerate() {
            let durable = sh.durable.load(Ordering::Acquire);
            let hold = sh.hold.load(Ordering::Acquire);
            let (ready, overrun): (Vec<replay::Sealed>, u64) = {
                let sealed = sh.sealed.lock().unwrap_or_else(|p| p.into_inner());
                let synced = sealed.iter().take_while(|s| {
                    shared.durability == Durability::Async || s.last_seq <= durable
                });
                let held = synced.clone().filter(|s| s.last_seq >= hold).count();
                // Past the bound the oldest held segments go: the log must not grow
                // without end behind a sink that is gone.
                let over = held.saturating_sub(shared.hold_segments);
                let mut released = 0;
                let ready: Vec<_> = synced
                    .take_while(|s| {
                        let go = s.last_seq < hold || released < over;
                        released += usize::from(s.last_seq >= hold && go);
                        go
                    })
                    .cloned()
                    .collect();
                let overrun = ready
                    .iter()
                    .filter(|s| s.last_seq >= hold)
                    .map(|s| s.last_seq)
                    .max()
                    .map_or(0, |last| last + 1 - hold);
                (ready, overrun)
            };
            if overrun > 0 {
                tracing::error!(
                    "journal: shard {i}: compacting {overrun} records the lease history has not delivered yet: the history's hold of the log is full; those events are lost to the sinks that are behind (see `ctl status`)"
                );
            }
            if ready.is_empty() {
                continue;
            }
            let done = compact::compact_shard(
                &shared.dir,
                shared.generation,
                i as u32,
                snaps[i].as_ref(),
                &ready,
                &mut |_| std::ops::ControlFlow::Continue(()),
            );
            match done {
                Ok(new) => {
                    snaps[i] = new;
                    let last = ready.last().map_or(0, |s| s.number);
                    sh.sealed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|s| s.number > last);
                }
                Err(e) => {
                    tracing::error!("journal: compaction of shard {i} failed, will retry: {e}")
                }
            }
        }
    }
}
