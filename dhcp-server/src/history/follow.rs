//! The followers: one thread per sink reads the journal from the position the sink
//! stored, turns records into events and delivers them in batches, retrying forever
//! with a growing pause when the sink fails (the workers never wait for it: they only
//! append to the journal). Each follower tells the journal how far it has got, so
//! compaction keeps what the slowest has not delivered (within the journal's hold).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::event::{Batch, Event, Position};
use super::sink::Sink;
use crate::journal::{ShardReader, Tail};

/// How followers batch.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most events in one delivery.
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

impl History {
    /// Starts one follower per sink.
    pub fn start(tail: Tail, sinks: Vec<Box<dyn Sink>>, opts: Options) -> std::io::Result<History> {
        let holds = Arc::new(Holds {
            tail: tail.clone(),
            per: Mutex::new(vec![None; sinks.len()]),
        });
        let drain = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut statuses = Vec::new();
        for (index, sink) in sinks.into_iter().enumerate() {
            let status = Arc::new(Status::new(sink.kind(), tail.clone()));
            statuses.push(Arc::clone(&status));
            let follower = Follower {
                index,
                sink,
                tail: tail.clone(),
                opts,
                status,
                holds: Arc::clone(&holds),
                drain: Arc::clone(&drain),
                stop: Arc::clone(&stop),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("history-{}", follower.sink.kind()))
                    .spawn(move || follower.run())?,
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
        let generation = self.tail.generation();
        let next = match stored {
            Some(p) if p.generation == generation && p.next.len() == shards => Some(p.next),
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
