//! The append path, the flusher and the preparer.
//!
//! Each shard has one `ShardWriter`, owned by its worker thread: appending copies the
//! frame into the mapped segment and publishes the segment's end and the shard's
//! `written` sequence number with atomic stores. No lock and no system call, except when
//! the flusher sleeps for want of work (one wake-up, which only happens when the server
//! is nearly idle) and at a roll to the next segment (a few uncontended locks and
//! wake-ups of the preparer and compactor).
//!
//! A roll does no file work: the preparer thread has already made the next segment
//! (created, reserved, zeroed, synced, mapped: `Segment::prepare`) once the open one was
//! half full, and the writer only stores its header and swaps the pointer. Only when that segment is not ready (the
//! preparer is behind, or the disk is full) does the writer create one itself, which is
//! counted (`unprepared_rolls`).
//!
//! One flusher thread does group commit for all shards: it notes each shard's `written`,
//! msyncs every byte range written since its last pass, then publishes that number as the
//! shard's `durable` and signals the shard's eventfd. While one msync runs, the workers
//! keep appending; the next pass commits all of that at once, so the commit rate follows
//! the load without any fixed delay.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::record::Encode;
use super::replay::Sealed;
use super::segment::{self, Kind, Name, Segment, HEADER_LEN};
use super::Durability;
use dhcp_proto::lease::{FailoverRecord, LeaseRecord, Record};

/// How long the flusher looks for new work, yielding the CPU between looks, before it
/// sleeps (a wake-up costs the writer a system call, so under steady load the flusher
/// should not have fallen asleep).
const SPIN: Duration = Duration::from_micros(50);
/// The flusher's longest sleep: bounds how late a stop request or a retry is seen.
const IDLE: Duration = Duration::from_millis(100);
/// In async mode, how often written data is pushed to disk anyway.
const ASYNC_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed msync, the pause before the next try.
const RETRY: Duration = Duration::from_millis(20);
/// After a segment could not be prepared (a full disk), the pause before the next try.
const PREPARE_RETRY: Duration = Duration::from_secs(1);

/// A shard's next log segment, made by the preparer before the writer needs it. The
/// preparer holds the lock while it works, so the writer never makes the same file.
pub(crate) struct Spare {
    /// The number of the shard's next segment.
    pub number: u64,
    pub ready: Option<Segment>,
}

/// What a shard's writer shares with the flusher and the compactor.
pub(crate) struct ShardShared {
    pub index: u32,
    /// Sequence number of the last record fully in the mapping.
    pub written: AtomicU64,
    /// Sequence number of the last record on disk.
    pub durable: AtomicU64,
    /// Segments with bytes the flusher may still have to sync, oldest first; the last
    /// is the open one. Locked by the writer only when it rolls.
    pub segments: Mutex<Vec<Arc<Segment>>>,
    /// Sealed log segments waiting for compaction, in number order.
    pub sealed: Mutex<Vec<Sealed>>,
    /// Signalled (eventfd counter) after each commit that moved `durable`.
    pub event: OwnedFd,
    /// The flusher's last msync of this shard failed (durable is not moving).
    pub failing: AtomicBool,
    pub spare: Mutex<Spare>,
    /// Set by the writer when its open segment is half full: the preparer makes the next
    /// one only then, so a shard never holds more than about one segment of unused
    /// space (a disk filling up stops ACKs about where it did without a preparer).
    pub spare_wanted: AtomicBool,
    /// Set by a writer that needs the segment the preparer is still writing: the
    /// preparer gives up, and the writer makes one the quick way (without zeros).
    pub wanted: AtomicBool,
    /// Rolls that found no prepared segment (see `ShardWriter::unprepared_rolls`).
    pub unprepared_rolls: AtomicU64,
    /// The sequence number of the oldest record a follower still has to read
    /// (`u64::MAX`: none): compaction keeps the log segments holding it, within
    /// `Shared::hold_segments`.
    pub hold: AtomicU64,
}

impl ShardShared {
    pub fn new(
        index: u32,
        last_seq: u64,
        open: Arc<Segment>,
        next_number: u64,
        sealed: Vec<Sealed>,
    ) -> Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a new descriptor
        // that we own from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io(
                "create eventfd",
                PathBuf::new(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(ShardShared {
            index,
            written: AtomicU64::new(last_seq),
            durable: AtomicU64::new(last_seq),
            segments: Mutex::new(vec![open]),
            sealed: Mutex::new(sealed),
            // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
            failing: AtomicBool::new(false),
            spare: Mutex::new(Spare {
                number: next_number,
                ready: None,
            }),
            spare_wanted: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            unprepared_rolls: AtomicU64::new(0),
            hold: AtomicU64::new(u64::MAX),
        })
    }

    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our eventfd. A full counter
        // (EAGAIN) still leaves the fd readable, which is all a waiter needs.
        unsafe { libc::write(self.event.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// What all writers, the flusher and the compactor share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    /// The state directory's identity (`id`).
    pub id: u64,
    pub generation: u64,
    pub durability: Durability,
    pub segment_bytes: u64,
    /// Sealed log segments a shard keeps for its followers at most.
    pub hold_segments: usize,
    pub shards: Vec<Arc<ShardShared>>,
    pub stop: AtomicBool,
    pub flusher_idle: AtomicBool,
    pub flusher: OnceLock<Thread>,
    pub compactor: OnceLock<Thread>,
    pub preparer: OnceLock<Thread>,
}

impl Shared {
    fn wake(thread: &OnceLock<Thread>) {
        if let Some(t) = thread.get() {
            t.unpark();
        }
    }

    fn log_name(&self, shard: u32, number: u64) -> Name {
        Name {
            generation: self.generation,
            shard,
            kind: Kind::Log,
            number,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data under these locks stays consistent at every await point: a panicking
    // holder leaves nothing half-done, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One shard's append handle. Owned by the worker that owns the shard's leases.
pub struct ShardWriter {
    shared: Arc<Shared>,
    shard: Arc<ShardShared>,
    seg: Arc<Segment>,
    /// Where the next frame goes in `seg` (the writer's own copy of `seg.end`).
    end: usize,
    /// Past this offset the writer asks for the next segment to be prepared (once).
    prepare_at: usize,
    next_seq: u64,
}

impl ShardWriter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        shard: Arc<ShardShared>,
        seg: Arc<Segment>,
        next_seq: u64,
    ) -> Self {
        let end = seg.end.load(Ordering::Relaxed);
        let prepare_at = seg.capacity() / 2;
        ShardWriter {
            shared,
            shard,
            seg,
            end,
            prepare_at,
            next_seq,
        }
    }

    /// Appends a record and returns its sequence number. In sync mode the record is
    /// durable once `durable() >= seq`; in async mode it already counts as durable.
    ///
    /// Errors: `InvalidRecord` (a field over its limit; nothing written), `NoSpace` (the
    /// segment is full and the next could not be reserved; nothing written: stop ACKing,
    /// try again later), `Io`.
    pub fn append(&mut self, rec: &Record<'_>) -> Result<u64> {
        let payload = rec.encoded_len()?;
        let len = segment::frame_len(payload);
        if self.end + len > self.seg.capacity() {
            self.roll()?;
        }
        let seq = self.next_seq;
        // SAFETY: `[end, end + len)` lies inside the mapping (checked above; a fresh
        // segment has room for the largest frame, see `Options::check`). Only this writer
        // ever stores into the mapping, and only at or past `end`, which no other thread
        // reads before we publish it below (the flusher only hands published ranges to
        // msync, which creates no Rust reference). The file was fallocated to its full
        // size and is never truncated, so the store cannot fault.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(self.seg.map.as_mut_ptr().add(self.end), len) };
        segment::write_frame(buf, seq, rec, payload);
        self.end += len;
        self.next_seq += 1;
        self.seg.last_seq.store(seq, Ordering::Relaxed);
        self.seg.end.store(self.end, Ordering::Release);
        if self.end >= self.prepare_at {
            self.prepare_at = usize::MAX;
            self.shard.spare_wanted.store(true, Ordering::Relaxed);
            Shared::wake(&self.shared.preparer);
        }
        match self.shared.durability {
            Durability::Async => {
                self.shard.written.store(seq, Ordering::Release);
                self.shard.durable.store(seq, Ordering::Release);
            }
            Durability::Sync => {
                // SeqCst pairs with the flusher's store of `flusher_idle` then load of
                // `written`: either it sees this record or we see it asleep.
                self.shard.written.store(seq, Ordering::SeqCst);
                if self.shared.flusher_idle.load(Ordering::SeqCst) {
                    if let Some(t) = self.shared.flusher.get() {
                        t.unpark();
                    }
                }
            }
        }
        Ok(seq)
    }

    pub fn append_lease(&mut self, rec: &LeaseRecord<'_>) -> Result<u64> {
        self.append(&Record::Lease(*rec))
    }

    pub fn append_failover(&mut self, rec: &FailoverRecord<'_>) -> Result<u64> {
        self.append(&Record::Failover(*rec))
    }

    /// Moves to the next segment: the prepared one, else one made here. On failure
    /// nothing changes, so the append can be retried.
    fn roll(&mut self) -> Result<()> {
        let mut spare = match self.shard.spare.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // The preparer is writing it, slowly on purpose: have it give up (within one
            // step) rather than race it for the same file.
            Err(TryLockError::WouldBlock) => {
                self.shard.wanted.store(true, Ordering::Relaxed);
                let g = lock(&self.shard.spare);
                self.shard.wanted.store(false, Ordering::Relaxed);
                g
            }
        };
        let unprepared = spare.ready.is_none();
        let seg = match spare.ready.take() {
            Some(seg) => {
                seg.start(
                    self.shared.log_name(self.shard.index, seg.number),
                    self.next_seq,
                );
                seg
            }
            None => Segment::create(
                &self.shared.dir,
                self.shared.log_name(self.shard.index, spare.number),
                self.next_seq,
                self.shared.segment_bytes,
            )?,
        };
        spare.number = seg.number + 1;
        drop(spare);
        if unprepared {
            self.shard.unprepared_rolls.fetch_add(1, Ordering::Relaxed);
        }
        let seg = Arc::new(seg);
        let old = std::mem::replace(&mut self.seg, Arc::clone(&seg));
        self.end = HEADER_LEN;
        self.prepare_at = seg.capacity() / 2;
        old.sealed.store(true, Ordering::Release);
        lock(&self.shard.segments).push(seg);
        lock(&self.shard.sealed).push(Sealed {
            number: old.number,
            path: old.path.clone(),
            last_seq: old.last_seq.load(Ordering::Relaxed),
        });
        Shared::wake(&self.shared.compactor);
        Ok(())
    }

    /// How many rolls found no prepared segment and made one on the append path
    /// (create, fallocate, fsync: milliseconds). Stays 0 while the preparer keeps up.
    pub fn unprepared_rolls(&self) -> u64 {
        self.shard.unprepared_rolls.load(Ordering::Relaxed)
    }

    /// The sequence number of the last record on disk (in async mode: written).
    pub fn durable(&self) -> u64 {
        self.shard.durable.load(Ordering::Acquire)
    }

    /// The sequence number of the last record appended.
    pub fn written(&self) -> u64 {
        self.next_seq - 1
    }

    /// Readable (poll POLLIN) after a commit moved `durable()`. Call `clear_wakeup` once
    /// woken, then compare `durable()` with the sequence numbers you hold ACKs for.
    pub fn wakeup_fd(&self) -> BorrowedFd<'_> {
        self.shard.event.as_fd()
    }

    /// Resets the wake-up fd (reads the eventfd counter; never blocks).
    pub fn clear_wakeup(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from our non-blocking
        // eventfd; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.shard.event.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }

    /// Blocks (poll on the wake-up fd) until `durable() >= seq` or `timeout` passes.
    /// For callers that are not packet loops: tools, the control thread, tests.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.durable() >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: self.shard.event.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // ppoll, not poll: a commit takes a fraction of a millisecond, and poll's
            // millisecond timeout would round short waits up.
            let ts = libc::timespec {
                tv_sec: left.as_secs().min(1) as libc::time_t,
                tv_nsec: if left.as_secs() >= 1 {
                    0
                } else {
                    libc::c_long::from(left.subsec_nanos() as i32)
                },
            };
            // SAFETY: one valid pollfd and a valid timespec for the duration of the call;
            // no signal mask is passed.
            unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            self.clear_wakeup();
        }
    }

    /// A handle on this shard's durable sequence number for another thread: the control
    /// thread waits on it for a record it had the shard's worker append.
    pub fn watch(&self) -> DurableWatch {
        DurableWatch(Arc::clone(&self.shard))
    }

    /// The shard this writer appends to.
    pub fn shard(&self) -> usize {
        self.shard.index as usize
    }

    /// Whether the flusher's last attempt to sync this shard failed (I/O error): the
    /// records stay in the mapping and are retried; `durable()` does not move meanwhile.
    pub fn failing(&self) -> bool {
        self.shard.failing.load(Ordering::Relaxed)
    }
}

/// One shard's durable sequence number, readable from any thread. Waiting on it never
/// touches the shard's eventfd, which belongs to the worker.
#[derive(Clone)]
pub struct DurableWatch(Arc<ShardShared>);

impl DurableWatch {
    /// The sequence number of the last record on disk (in async mode: written).
    pub fn durable(&self) -> u64 {
        self.0.durable.load(Ordering::Acquire)
    }

    /// Waits until `durable() >= seq`, looking every millisecond, at most `timeout`.
    pub fn wait(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.durable() < seq {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// What one commit pass did for a shard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Nothing new to sync.
    Idle,
    Synced,
    /// A sync failed: `durable` did not move.
    Failed,
}

/// Syncs what the shard wrote since the last pass.
fn flush_shard(shared: &Shared, sh: &ShardShared, segs: &mut Vec<Arc<Segment>>) -> Pass {
    let target = sh.written.load(Ordering::SeqCst);
    segs.clear();
    segs.extend(lock(&sh.segments).iter().cloned());
    let mut did = Pass::Idle;
    for seg in segs.iter() {
        let end = seg.end.load(Ordering::Acquire);
        let from = seg.synced.load(Ordering::Relaxed);
        if end <= from {
            continue;
        }
        did = Pass::Synced;
        // msync(MS_SYNC) of the dirty range. On this ext4 it ends in the same
        // ext4_sync_file as fdatasync and measured the same (2 KiB commits into a
        // prepared segment: p50 0.09-0.15 ms either way, tracking the disk's load);
        // the range keeps it from writing back anything outside the commit.
        if let Err(e) = seg.map.flush_range(from, end - from) {
            if !sh.failing.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "journal: cannot sync {}: {e}; holding ACKs of shard {} until it works",
                    seg.path.display(),
                    sh.index
                );
            }
            return Pass::Failed;
        }
        seg.synced.store(end, Ordering::Relaxed);
    }
    if sh.failing.swap(false, Ordering::Relaxed) {
        tracing::warn!("journal: shard {} syncs again", sh.index);
    }
    lock(&sh.segments).retain(|s| {
        !(s.sealed.load(Ordering::Acquire)
            && s.synced.load(Ordering::Relaxed) >= s.end.load(Ordering::Acquire))
    });
    if shared.durability == Durability::Sync && target > sh.durable.load(Ordering::Relaxed) {
        sh.durable.store(target, Ordering::Release);
        sh.signal();
    }
    did
}

fn pending(shared: &Shared) -> bool {
    shared
        .shards
        .iter()
        .any(|s| s.written.load(Ordering::SeqCst) > s.durable.load(Ordering::Relaxed))
}

/// The flusher thread's body: commit passes until asked to stop, then a last one.
pub(crate) fn flusher(shared: Arc<Shared>) {
    let mut segs = Vec::new();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        let (mut synced, mut failed) = (false, false);
        for sh in &shared.shards {
            match flush_shard(&shared, sh, &mut segs) {
                Pass::Idle => {}
                Pass::Synced => synced = true,
                Pass::Failed => failed = true,
            }
        }
        if stopping {
            return;
        }
        if shared.durability == Durability::Async {
            std::thread::park_timeout(ASYNC_INTERVAL);
            continue;
        }
        // Straight into the next pass while anything was committed: whatever the
        // workers appended meanwhile is the next group. A shard that failed waits for
        // the retry, but never holds up the others' commits.
        if synced {
            continue;
        }
        if failed {
            std::thread::sleep(RETRY);
            continue;
        }
        let spin_until = Instant::now() + SPIN;
        while !pending(&shared) && Instant::now() < spin_until {
            // A worker that shares this core runs meanwhile (it is what fills the next
            // group); a plain spin would hold it off for the whole period.
            std::thread::yield_now();
        }
        if pending(&shared) {
            continue;
        }
        shared.flusher_idle.store(true, Ordering::SeqCst);
        if !pending(&shared) && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(IDLE);
        }
        shared.flusher_idle.store(false, Ordering::SeqCst);
    }
}

/// The preparer thread's body: makes a shard's next segment once its writer asks (its
/// open segment is half full). Unused ones are removed when the journal closes.
pub(crate) fn preparer(shared: Arc<Shared>) {
    let mut warned = false;
    loop {
        let mut failed = false;
        for sh in &shared.shards {
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
            if !sh.spare_wanted.load(Ordering::Relaxed) {
                continue;
            }
            let mut spare = lock(&sh.spare);
            if spare.ready.is_some() {
                continue;
            }
            let name = shared.log_name(sh.index, spare.number);
            let give_up =
                || shared.stop.load(Ordering::Relaxed) || sh.wanted.load(Ordering::Relaxed);
            match Segment::prepare(&shared.dir, name, shared.segment_bytes, &give_up) {
                Ok(seg) => {
                    if seg.is_some() {
                        sh.spare_wanted.store(false, Ordering::Relaxed);
                    }
                    spare.ready = seg;
                    warned = false;
                }
                // A full disk: the writer reports it if it reaches the end of its segment
                // before space returns.
                Err(Error::NoSpace { .. }) => failed = true,
                Err(e) => {
                    failed = true;
                    if !warned {
                        tracing::warn!(
                            "journal: cannot prepare the next segment of shard {}: {e}; \
                             the writer will make it itself, retrying",
                            sh.index
                        );
                        warned = true;
                    }
                }
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            for sh in &shared.shards {
                if let Some(seg) = lock(&sh.spare).ready.take() {
                    let _ = std::fs::remove_file(&seg.path);
                }
            }
            return;
        }
        if failed {
            std::thread::park_timeout(PREPARE_RETRY);
        } else {
            std::thread::park();
        }
    }
}
