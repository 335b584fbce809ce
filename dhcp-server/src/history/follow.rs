//! The followers: one thread per sink reads the journal from the position the sink
//! stored, turns records into events and delivers them in batches, retrying forever
//! with a growing pause when the sink fails (the workers never wait for it: they only
//! append to the journal). Each follower tells the journal how far it has got, so
//! compaction keeps what the slowest has not delivered (within the journal's hold).
//! Followers run at a lower CPU priority than the workers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::event::{Batch, Event, Position};
use super::sink::{Sink, SinkError};
use crate::journal::{ShardReader, Tail};

/// How followers batch.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most events in one delivery (each sink's `Pending` says its own).
    pub batch: usize,
    /// A position that moved without events (records no event comes from) is stored at
    /// most this often.
    pub idle_store: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: 8192,
            idle_store: Duration::from_secs(5),
        }
    }
}

/// What a sink's follower has done, for `ctl status` and the metrics.
pub struct Status {
    pub kind: &'static str,
    pub delivered: AtomicU64,
    pub batches: AtomicU64,
    /// Records compacted before this sink got them (the journal's hold was exceeded).
    pub lost: AtomicU64,
    pub errors: AtomicU64,
    pub connected: AtomicBool,
    /// Seconds between the newest delivered event and now, when behind; 0 when caught up.
    pub behind_seconds: AtomicU64,
    /// Per shard, the next record to deliver.
    next: Mutex<Vec<u64>>,
    last_error: Mutex<Option<(u64, String)>>,
    tail: Tail,
}

impl Status {
    fn new(kind: &'static str, tail: Tail) -> Status {
        Status {
            kind,
            delivered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            behind_seconds: AtomicU64::new(0),
            next: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            tail,
        }
    }

    /// Durable journal records not delivered yet (not all of them make events).
    pub fn lag_records(&self) -> u64 {
        let next = self.next.lock();
        if next.is_empty() {
            return (0..self.tail.shards()).map(|s| self.tail.durable(s)).sum();
        }
        next.iter()
            .enumerate()
            .map(|(s, &n)| (self.tail.durable(s) + 1).saturating_sub(n))
            .sum()
    }

    /// The last error and when (seconds since the epoch).
    pub fn last_error(&self) -> Option<(u64, String)> {
        self.last_error.lock().clone()
    }

    fn failed(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock() = Some((unix_now(), what));
    }
}

/// The positions of every follower, so the journal keeps what the slowest needs.
struct Holds {
    tail: Tail,
    per: Mutex<Vec<Option<Vec<u64>>>>,
}

impl Holds {
    fn set(&self, follower: usize, next: Option<&[u64]>) {
        let mut per = self.per.lock();
        per[follower] = next.map(<[u64]>::to_vec);
        for shard in 0..self.tail.shards() {
            // A follower that has not opened its sink yet holds everything.
            let min = per
                .iter()
                .map(|p| p.as_ref().map_or(0, |n| n[shard]))
                .min()
                .unwrap_or(u64::MAX);
            self.tail.hold(shard, min);
        }
    }
}

/// The running followers.
pub struct History {
    threads: Vec<JoinHandle<()>>,
    statuses: Vec<Arc<Status>>,
    /// Stop once caught up (or at the deadline).
    drain: Arc<AtomicBool>,
    /// Stop now.
    stop: Arc<AtomicBool>,
}

/// A sink to be made on its follower's thread, so that the threads it starts (an async
/// client's runtime) share the follower's lower priority; and how many events it takes
/// in one delivery.
pub struct Pending {
    kind: &'static str,
    batch: usize,
    make: Box<dyn FnOnce() -> Result<Box<dyn Sink>, SinkError> + Send>,
}

impl Pending {
    pub fn new(
        kind: &'static str,
        batch: usize,
        make: impl FnOnce() -> Result<Box<dyn Sink>, SinkError> + Send + 'static,
    ) -> Pending {
        Pending {
            kind,
            batch: batch.max(1),
            make: Box::new(make),
        }
    }

    /// A sink made already (one that starts no thread of its own).
    pub fn ready(sink: Box<dyn Sink>, batch: usize) -> Pending {
        Pending::new(sink.kind(), batch, move || Ok(sink))
    }
}

impl History {
    /// Starts one follower per sink.
    pub fn start(tail: Tail, sinks: Vec<Pending>, opts: Options) -> std::io::Result<History> {
        let holds = Arc::new(Holds {
            tail: tail.clone(),
            per: Mutex::new(vec![None; sinks.len()]),
        });
        let drain = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut statuses = Vec::new();
        for (index, pending) in sinks.into_iter().enumerate() {
            let status = Arc::new(Status::new(pending.kind, tail.clone()));
            statuses.push(Arc::clone(&status));
            let (tail, holds) = (tail.clone(), Arc::clone(&holds));
            let (drain, stop) = (Arc::clone(&drain), Arc::clone(&stop));
            let opts = Options {
                batch: pending.batch,
                ..opts
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("history-{}", pending.kind))
                    .spawn(move || {
                        yield_to_workers();
                        let sink = match (pending.make)() {
                            Ok(sink) => sink,
                            Err(e) => {
                                tracing::error!(
                                    "lease history: cannot make the {} sink: {e}",
                                    pending.kind
                                );
                                status.failed(e.to_string());
                                return;
                            }
                        };
                        Follower {
                            index,
                            sink,
                            tail,
                            opts,
                            status,
                            holds,
                            drain,
                            stop,
                        }
                        .run()
                    })?,
            );
        }
        Ok(History {
            threads,
            statuses,
            drain,
            stop,
        })
    }

    pub fn statuses(&self) -> &[Arc<Status>] {
        &self.statuses
    }

    /// Lets every follower deliver what the journal holds, for at most `within`, then
    /// stops them (graceful shutdown: the sinks are as current as they can be).
    pub fn stop(mut self, within: Duration) {
        self.drain.store(true, Ordering::Release);
        let deadline = Instant::now() + within;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Follower {
    index: usize,
    sink: Box<dyn Sink>,
    tail: Tail,
    opts: Options,
    status: Arc<Status>,
    holds: Arc<Holds>,
    drain: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Why a follower's delivery loop ended.
enum Ended {
    Stopped,
    Failed,
}

impl Follower {
    fn run(mut self) {
        let mut pause = Duration::from_secs(1);
        let mut failing = false;
        loop {
            if self.stop.load(Ordering::Acquire) || (failing && self.drain.load(Ordering::Acquire))
            {
                return;
            }
            let stored = match self.sink.open() {
                Ok(p) => p,
                Err(e) => {
                    if !failing {
                        tracing::error!(
                            "lease history: cannot reach the {} sink: {e}; retrying, the journal keeps the events meanwhile",
                            self.sink.kind()
                        );
                    }
                    failing = true;
                    self.status.failed(e.to_string());
                    self.sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            if failing {
                tracing::info!(
                    "lease history: the {} sink is back; delivering from {}",
                    self.sink.kind(),
                    stored
                        .as_ref()
                        .map_or("the start".into(), Position::to_string)
                );
            }
            pause = Duration::from_secs(1);
            self.status.connected.store(true, Ordering::Relaxed);
            match self.deliver_from(stored) {
                Ended::Stopped => return,
                Ended::Failed => failing = true,
            }
        }
    }

    /// Readers at the sink's stored position, and whether each starts fresh (where
    /// records the journal no longer has are not a loss: the sink never had them).
    fn readers(&self, stored: Option<Position>) -> (Vec<ShardReader>, Vec<bool>) {
        let shards = self.tail.shards();
        let (journal, generation) = (self.tail.id(), self.tail.generation());
        let next = match stored {
            Some(p)
                if p.journal == journal && p.generation == generation && p.next.len() == shards =>
            {
                Some(p.next)
            }
            Some(p) if p.journal != journal => {
                tracing::warn!(
                    "lease history: the {} sink's position {p} is in another journal (the state directory was replaced); delivering this journal from its start",
                    self.sink.kind()
                );
                None
            }
            Some(p) => {
                tracing::warn!(
                    "lease history: the {} sink's position {p} is in another journal generation (the journal was resharded since); delivering from the start of generation {generation}",
                    self.sink.kind()
                );
                None
            }
            None => None,
        };
        let fresh = vec![next.is_none(); shards];
        let readers = (0..shards)
            .map(|s| self.tail.reader(s, next.as_ref().map_or(1, |n| n[s])))
            .collect();
        (readers, fresh)
    }

    fn deliver_from(&mut self, stored: Option<Position>) -> Ended {
        let (mut readers, mut fresh) = self.readers(stored);
        let mut stored_at = Instant::now();
        let mut unstored = false;
        self.note_position(&readers);
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ended::Stopped;
            }
            let mut batch = Batch::default();
            let mut moved = false;
            let per_shard = (self.opts.batch / readers.len()).max(1) as u64;
            for (s, r) in readers.iter_mut().enumerate() {
                let before = r.next();
                let events = &mut batch.events;
                let read = r.read(per_shard, |seq, rec| {
                    events.extend(Event::from_record(s as u32, seq, &rec))
                });
                match read {
                    Ok(read) => {
                        if !fresh[s] && read.lost > 0 {
                            self.status.lost.fetch_add(read.lost, Ordering::Relaxed);
                            tracing::error!(
                                "lease history: {} records of shard {s} were compacted before the {} sink got them: their events are lost to it",
                                read.lost,
                                self.sink.kind()
                            );
                        }
                        fresh[s] = false;
                    }
                    Err(e) => {
                        tracing::error!("lease history: cannot read the journal: {e}");
                        self.sleep(Duration::from_secs(1));
                    }
                }
                moved |= r.next() != before;
            }
            batch.after = Position {
                journal: self.tail.id(),
                generation: self.tail.generation(),
                next: readers.iter().map(ShardReader::next).collect(),
            };
            if !moved {
                let caught_up = !unstored;
                if caught_up {
                    self.status.behind_seconds.store(0, Ordering::Relaxed);
                    if self.drain.load(Ordering::Acquire) {
                        return Ended::Stopped;
                    }
                }
                if unstored
                    && (stored_at.elapsed() >= self.opts.idle_store
                        || self.drain.load(Ordering::Acquire))
                {
                    // Fall through: store the position the idle records moved.
                } else {
                    self.sleep(Duration::from_millis(20));
                    continue;
                }
            } else if batch.events.is_empty() && stored_at.elapsed() < self.opts.idle_store {
                unstored = true;
                continue;
            }
            if let Err(e) = self.sink.deliver(&batch) {
                tracing::error!(
                    "lease history: the {} sink failed to store {} events: {e}; reconnecting, they will be delivered again",
                    self.sink.kind(),
                    batch.events.len()
                );
                self.status.failed(e.to_string());
                self.sleep(Duration::from_secs(1));
                return Ended::Failed;
            }
            stored_at = Instant::now();
            unstored = false;
            let n = batch.events.len() as u64;
            self.status.delivered.fetch_add(n, Ordering::Relaxed);
            self.status.batches.fetch_add(1, Ordering::Relaxed);
            if let Some(last) = batch.events.iter().map(|e| e.at).max() {
                let caught_up = readers
                    .iter()
                    .enumerate()
                    .all(|(s, r)| r.next() > self.tail.durable(s));
                let behind = if caught_up {
                    0
                } else {
                    unix_now().saturating_sub(last)
                };
                self.status.behind_seconds.store(behind, Ordering::Relaxed);
            }
            self.note_position(&readers);
        }
    }

    fn note_position(&self, readers: &[ShardReader]) {
        let next: Vec<u64> = readers.iter().map(ShardReader::next).collect();
        self.holds.set(self.index, Some(&next));
        *self.status.next.lock() = next;
    }

    /// Sleeps, waking early when told to stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }
}

/// Niceness of the followers (and the threads their sinks start): history is background
/// work the journal buffers, so under a peak a worker answering clients gets the CPU
/// first (the lowest priority: a follower gets about 1.5% of a core against a busy worker)
/// and the sinks catch up after.
const FOLLOWER_NICE: libc::c_int = 19;

/// Lowers this thread's CPU priority to `FOLLOWER_NICE` (on Linux, niceness is a thread's).
fn yield_to_workers() {
    // SAFETY: setpriority takes no pointers; `who` 0 is the calling thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, FOLLOWER_NICE) };
    if rc != 0 {
        tracing::debug!(
            "lease history: cannot lower the follower's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{
        BindingState, Cause, Context, Journal, LeaseFlags, LeaseRecord, Options as JournalOptions,
    };
    use std::net::Ipv4Addr;

    /// A sink in memory that fails while told to, and keeps its position with its
    /// events as a database would.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Kept>>);

    #[derive(Default)]
    struct Kept {
        events: Vec<Event>,
        position: Option<Position>,
        down: bool,
        opens: u32,
    }

    impl Sink for Memory {
        fn kind(&self) -> &'static str {
            "memory"
        }

        fn open(&mut self) -> Result<Option<Position>, SinkError> {
            let mut k = self.0.lock();
            k.opens += 1;
            if k.down {
                return Err(SinkError::new("down"));
            }
            Ok(k.position.clone())
        }

        fn deliver(&mut self, batch: &Batch) -> Result<(), SinkError> {
            let mut k = self.0.lock();
            if k.down {
                return Err(SinkError::new("down"));
            }
            k.events.extend(batch.events.iter().cloned());
            k.position = Some(batch.after.clone());
            Ok(())
        }
    }

    fn grant(w: &mut crate::journal::ShardWriter, i: u32, cause: Cause) -> u64 {
        let mac = [2, 0, 0, 0, (i >> 8) as u8, i as u8];
        w.append_lease(&LeaseRecord {
            stamp: u64::from(i) + 1,
            addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i),
            state: BindingState::Active,
            htype: 1,
            chaddr: &mac,
            client_id: &[],
            agent_info: &[],
            starts: 1_795_000_000,
            ends: 1_795_003_600,
            cltt: 1_795_000_000,
            tstp: 0,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags(0),
            context: Context {
                cause,
                at: 1_795_000_000,
                giaddr: Ipv4Addr::new(192, 0, 2, 1),
                host_name: b"cpe",
            },
        })
        .unwrap()
    }

    fn wait(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn every_event_once_in_order_through_an_outage_and_a_restart() {
        let dir = std::env::temp_dir().join(format!("dhcp-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = JournalOptions {
            shards: 2,
            segment_bytes: JournalOptions::MIN_SEGMENT,
            followed: true,
            ..JournalOptions::default()
        };
        let mut o = Journal::open(&dir, &opts).unwrap();
        let sink = Memory::default();
        let fast = Options {
            batch: 100,
            idle_store: Duration::from_millis(50),
        };
        let history = History::start(
            o.journal.tail(),
            vec![Pending::ready(Box::new(sink.clone()), 100)],
            fast,
        )
        .unwrap();
        let status = Arc::clone(&history.statuses()[0]);
        let write = |o: &mut crate::journal::Opened, range: std::ops::Range<u32>| {
            for i in range {
                let cause = if i % 10 == 0 {
                    Cause::Failover
                } else {
                    Cause::Granted
                };
                grant(&mut o.writers[i as usize % 2], i, cause);
            }
        };
        write(&mut o, 0..400);
        wait("the first 360 events", || sink.0.lock().events.len() >= 360);
        sink.0.lock().down = true;
        write(&mut o, 400..600);
        wait("the outage to be seen", || {
            status.errors.load(Ordering::Relaxed) > 0
        });
        assert!(!status.connected.load(Ordering::Relaxed));
        assert!(status.lag_records() > 0, "behind while down");
        sink.0.lock().down = false;
        write(&mut o, 600..1_000);
        wait("all 900 events", || sink.0.lock().events.len() >= 900);
        let status = Arc::clone(&history.statuses()[0]);
        assert!(
            status.errors.load(Ordering::Relaxed) > 0,
            "the outage was seen"
        );
        history.stop(Duration::from_secs(5));
        assert_eq!(status.lag_records(), 0);
        // A restart (new followers, the journal reopened) delivers nothing twice.
        drop(o.writers);
        drop(o.journal);
        let mut o = Journal::open(&dir, &opts).unwrap();
        let history = History::start(
            o.journal.tail(),
            vec![Pending::ready(Box::new(sink.clone()), 100)],
            fast,
        )
        .unwrap();
        for i in 1_000..1_100 {
            grant(&mut o.writers[i as usize % 2], i, Cause::Renewed);
        }
        wait("the restart's 100 events", || {
            sink.0.lock().events.len() >= 1_000
        });
        history.stop(Duration::from_secs(5));
        let k = sink.0.lock();
        let mut stamps: Vec<u64> = k.events.iter().map(|e| e.stamp).collect();
        assert_eq!(stamps.len(), 1_000, "no event twice");
        stamps.sort_unstable();
        stamps.dedup();
        assert_eq!(stamps.len(), 1_000);
        for shard in 0..2u32 {
            let seqs: Vec<u64> = k
                .events
                .iter()
                .filter(|e| e.shard == shard)
                .map(|e| e.seq)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "shard {shard} in journal order"
            );
        }
        let e = &k.events[0];
        assert_eq!(e.relay.giaddr, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(e.host_name, b"cpe");
        assert!(k.opens >= 3, "reopened after the outage and at the restart");
        drop(k);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
