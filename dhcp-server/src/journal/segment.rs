//! Segment files: the versioned header, the record frame (length, sequence number,
//! CRC32C, payload), file names, and the scan that replay, verify and compaction share.
//!
//! A log segment is created at its full size with `fallocate` (real blocks, not a sparse
//! file: a store into a hole of a shared mapping on a full disk is a SIGBUS, while a
//! failed fallocate is an error we can report) and then mapped. A snapshot segment is
//! written with plain writes to a temporary name and renamed into place.
//!
//! The next log segment of a shard is prepared ahead of time, off the writer's path
//! (`Segment::prepare`): besides fallocate, every block is written with zeros and synced,
//! so the extents are already "written" (an msync into unwritten extents must also convert
//! them) and the file and its name are durable before the writer moves in. The header
//! goes in at the roll, as a store into the mapping that the flusher's next msync covers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use memmap2::MmapRaw;

use super::error::{Error, Result};
use dhcp_proto::lease::Record;

use super::record::Encode;

pub const MAGIC: [u8; 8] = *b"DHCPJRNL";
pub const VERSION: u32 = 2;
/// Version 1 lacked lease records with a cause (kind 7); its files are read, never
/// appended to, so a version 1 binary started on this directory refuses the newer files
/// instead of cutting records it does not know as damage.
pub const OLDEST_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
/// Frame header: CRC32C (4), payload length (4), sequence number (8).
pub const FRAME_HEADER: usize = 16;
/// Frames start on 8-byte boundaries, which also lets a damaged tail be searched for
/// intact frames cheaply.
pub const ALIGN: usize = 8;
/// No payload is longer (the largest record is a failover record with 1 KiB of data).
pub const MAX_PAYLOAD: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Appended to by one shard's writer.
    Log,
    /// The folded state of a shard's older segments, written by compaction.
    Snapshot,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Log => 1,
            Kind::Snapshot => 2,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::Log => "log",
            Kind::Snapshot => "snap",
        }
    }
}

/// The first 64 bytes of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub shard: u32,
    pub generation: u64,
    /// Log: the segment's number. Snapshot: the last log segment number folded into it.
    pub number: u64,
    /// Log: the sequence number of the first record. Snapshot: the next log sequence
    /// number after the folded segments (its own records count from 1).
    pub first_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a header at all (all zero, a torn creation, or damage).
    Bad,
    /// A valid header of a newer format version.
    Newer(u32),
}

impl Header {
    /// The format version of a segment whose header decodes.
    pub fn version(b: &[u8]) -> u32 {
        b.get(8..12)
            .map_or(0, |v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.kind.code().to_le_bytes());
        b[20..24].copy_from_slice(&self.shard.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..40].copy_from_slice(&self.number.to_le_bytes());
        b[40..48].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        let b = b.get(..HEADER_LEN).ok_or(HeaderError::Bad)?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if b[0..8] != MAGIC || crc32c::crc32c(&b[..60]) != u32_at(60) {
            return Err(HeaderError::Bad);
        }
        let version = u32_at(8);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(HeaderError::Newer(version));
        }
        let kind = match u32_at(16) {
            1 => Kind::Log,
            2 => Kind::Snapshot,
            _ => return Err(HeaderError::Bad),
        };
        Ok(Header {
            kind,
            shard: u32_at(20),
            generation: u64_at(24),
            number: u64_at(32),
            first_seq: u64_at(40),
        })
    }
}

/// What a segment's file name says: `g000001-s002-log-0000000042.seg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    pub generation: u64,
    pub shard: u32,
    pub kind: Kind,
    pub number: u64,
}

impl Name {
    pub fn file_name(&self) -> String {
        format!(
            "g{:06}-s{:03}-{}-{:010}.seg",
            self.generation,
            self.shard,
            self.kind.word(),
            self.number
        )
    }

    pub fn parse(s: &str) -> Option<Name> {
        let rest = s.strip_suffix(".seg")?;
        let mut parts = rest.split('-');
        let generation = parts.next()?.strip_prefix('g')?.parse().ok()?;
        let shard = parts.next()?.strip_prefix('s')?.parse().ok()?;
        let kind = match parts.next()? {
            "log" => Kind::Log,
            "snap" => Kind::Snapshot,
            _ => return None,
        };
        let number = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Name {
            generation,
            shard,
            kind,
            number,
        })
    }
}

pub fn frame_len(payload: usize) -> usize {
    (FRAME_HEADER + payload).div_ceil(ALIGN) * ALIGN
}

/// Writes one frame into `buf` (exactly `frame_len(payload)` long). The CRC covers the
/// length, the sequence number and the payload.
pub fn write_frame(buf: &mut [u8], seq: u64, rec: &Record<'_>, payload: usize) {
    buf[4..8].copy_from_slice(&(payload as u32).to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    rec.encode(&mut buf[FRAME_HEADER..FRAME_HEADER + payload]);
    buf[FRAME_HEADER + payload..].fill(0);
    let crc = crc32c::crc32c(&buf[4..FRAME_HEADER + payload]);
    buf[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Why a scan stopped before the end of the written data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A length field that is impossible or runs past the file.
    BadLength,
    BadCrc,
    /// An intact frame whose sequence number does not follow the previous one.
    SeqGap,
    /// An intact frame whose payload does not decode.
    BadRecord,
}

impl Stop {
    pub fn describe(self) -> &'static str {
        match self {
            Stop::BadLength => "bad record length",
            Stop::BadCrc => "CRC mismatch",
            Stop::SeqGap => "sequence number gap",
            Stop::BadRecord => "undecodable record",
        }
    }
}

/// The damaged tail a scan found after the last good record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub reason: Stop,
    /// Offset of the first bad byte (the end of the good records).
    pub at: usize,
    /// End of the non-zero bytes past `at`: `[at, junk_end)` is dropped.
    pub junk_end: usize,
    /// Intact-looking frames found inside the dropped bytes.
    pub records: u64,
}

impl Damage {
    pub fn bytes(&self) -> u64 {
        (self.junk_end - self.at) as u64
    }
}

/// The result of scanning a segment's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub records: u64,
    /// Offset just past the last good record.
    pub end: usize,
    /// Sequence number of the last good record (`first_seq - 1` when there is none).
    pub last_seq: u64,
    pub damage: Option<Damage>,
}

/// Parses the frame at `off`: `Ok((seq, payload, next offset))`.
pub fn frame_at(data: &[u8], off: usize) -> Result<(u64, &[u8], usize), Stop> {
    let h = data.get(off..off + FRAME_HEADER).ok_or(Stop::BadLength)?;
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Err(Stop::BadLength);
    }
    let next = off + frame_len(len);
    if next > data.len() {
        return Err(Stop::BadLength);
    }
    let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    // The padding is outside the CRC but must be zero, so no flipped bit goes unseen.
    if crc32c::crc32c(&data[off + 4..off + FRAME_HEADER + len]) != crc
        || data[off + FRAME_HEADER + len..next].iter().any(|&b| b != 0)
    {
        return Err(Stop::BadCrc);
    }
    let mut s = [0; 8];
    s.copy_from_slice(&h[8..16]);
    Ok((
        u64::from_le_bytes(s),
        &data[off + FRAME_HEADER..off + FRAME_HEADER + len],
        next,
    ))
}

/// Scans the frames of `data` (a whole segment, header included) from `HEADER_LEN`.
/// `first_seq` is what the first record must carry (`None`: take the first record's,
/// for a segment whose header is damaged). Each good record goes to `each`. Stops at the
/// first all-zero frame header (the unwritten rest) or at damage, which it measures.
pub fn scan<'a>(
    data: &'a [u8],
    first_seq: Option<u64>,
    mut each: impl FnMut(u64, Record<'a>),
) -> Scan {
    let mut off = HEADER_LEN.min(data.len());
    let mut expect = first_seq;
    let mut records = 0;
    let mut last_seq = first_seq.map_or(0, |s| s.wrapping_sub(1));
    let stop = loop {
        match data.get(off..off + FRAME_HEADER) {
            None => break None,
            Some(h) if h.iter().all(|&b| b == 0) => break None,
            Some(_) => {}
        }
        let (seq, payload, next) = match frame_at(data, off) {
            Ok(f) => f,
            Err(e) => break Some(e),
        };
        if expect.is_some_and(|e| e != seq) {
            break Some(Stop::SeqGap);
        }
        let Ok(rec) = super::record::decode(payload) else {
            break Some(Stop::BadRecord);
        };
        each(seq, rec);
        records += 1;
        last_seq = seq;
        expect = Some(seq.wrapping_add(1));
        off = next;
    };
    let junk_end = last_nonzero_end(data, off);
    let damage = match stop {
        Some(reason) => Some(reason),
        // A zero frame header with non-zero bytes after it: a torn write whose header
        // never reached the page, or pages written out of order before a power loss.
        None if junk_end > off => Some(Stop::BadLength),
        None => None,
    }
    .map(|reason| Damage {
        reason,
        at: off,
        junk_end: junk_end.max(off + 1).min(data.len()),
        records: count_intact(data, off, junk_end),
    });
    Scan {
        records,
        end: off,
        last_seq,
        damage,
    }
}

/// The end of the last non-zero byte at or after `from` (`from` when there is none).
fn last_nonzero_end(data: &[u8], from: usize) -> usize {
    let tail = data.get(from..).unwrap_or_default();
    tail.iter()
        .rposition(|&b| b != 0)
        .map_or(from, |i| from + i + 1)
}

/// How many intact frames lie in `[from, to)`: what the cut loses, for the log line.
fn count_intact(data: &[u8], from: usize, to: usize) -> u64 {
    let mut n = 0;
    let mut off = from.next_multiple_of(ALIGN);
    while off + FRAME_HEADER <= to {
        match frame_at(data, off) {
            Ok((_, _, next)) => {
                n += 1;
                off = next;
            }
            Err(_) => off += ALIGN,
        }
    }
    n
}

/// fsyncs a directory, so a created, renamed or removed name is on disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// The open log segment a shard appends to, shared by its writer (which stores into the
/// mapping and publishes `end`) and the flusher (which msyncs `[synced, end)`).
pub struct Segment {
    pub path: PathBuf,
    pub number: u64,
    pub map: MmapRaw,
    /// Bytes written and published by the writer (Release); frames below are complete.
    pub end: AtomicUsize,
    /// Bytes the flusher has made durable.
    pub synced: AtomicUsize,
    /// Set by the writer when it moves on to the next segment: `end` is final.
    pub sealed: AtomicBool,
    /// Sequence number of the last record written here.
    pub last_seq: AtomicU64,
}

impl Segment {
    /// Creates a log segment of `capacity` bytes: reserves every block with fallocate,
    /// writes the header, makes file and name durable, then maps it. What open uses, and
    /// a roll whose prepared segment was not ready.
    pub fn create(dir: &Path, name: Name, first_seq: u64, capacity: u64) -> Result<Segment> {
        let (path, file) = new_file(dir, name, capacity, |path, file| {
            let header = log_header(name, first_seq);
            file.write_all_at(&header.encode(), 0)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("write segment header", path, capacity, e))
        })?;
        Self::map(
            path,
            name.number,
            file,
            HEADER_LEN,
            HEADER_LEN,
            first_seq.wrapping_sub(1),
        )
    }

    /// Makes the next log segment of a shard ready ahead of its roll: fallocate, zeros
    /// written over every block, file and name synced, mapped. It has no header yet
    /// (replay removes such a file: it holds nothing), so it does not need to know the
    /// sequence number it will start at; `start` writes the header. Returns `None` when
    /// `give_up` said so between two steps (the file is removed).
    pub fn prepare(
        dir: &Path,
        name: Name,
        capacity: u64,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Option<Segment>> {
        let mut stopped = false;
        let (path, file) = new_file(dir, name, capacity, |path, file| {
            // One page per write: the page cache then holds the file in single pages,
            // and an msync writes back only the pages a commit dirtied. Written in larger
            // chunks, ext4 caches it in large folios, and each msync then writes a whole
            // folio (up to 1 MiB here: msync p50 0.75 ms instead of 0.08 ms).
            const PAGE: usize = 4096;
            // Zeros go out in small steps with pauses (about 60 MiB/s): a burst of tens
            // of megabytes would queue the flusher's commits behind it on the disk.
            const STEP: u64 = 256 << 10;
            const PAUSE: Duration = Duration::from_millis(4);
            let zeros = [0u8; PAGE];
            let mut off = 0;
            while off < capacity {
                if give_up() {
                    stopped = true;
                    return Ok(());
                }
                let step_start = off;
                let step_end = (off + STEP).min(capacity);
                while off < step_end {
                    let n = (step_end - off).min(PAGE as u64) as usize;
                    file.write_all_at(&zeros[..n], off)
                        .map_err(|e| io_error("zero segment", path, capacity, e))?;
                    off += n as u64;
                }
                sync_range(file, step_start, step_end - step_start)
                    .map_err(|e| io_error("zero segment", path, capacity, e))?;
                if off < capacity {
                    std::thread::sleep(PAUSE);
                }
            }
            file.sync_all()
                .map_err(|e| io_error("sync segment", path, capacity, e))
        })?;
        if stopped {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Self::map(path, name.number, file, HEADER_LEN, 0, 0).map(Some)
    }

    /// Writes the header of a prepared segment into its mapping. Only the writer that
    /// takes it calls this, before anyone else can see the segment.
    pub fn start(&self, name: Name, first_seq: u64) {
        let header = log_header(name, first_seq).encode();
        debug_assert!(self.capacity() >= HEADER_LEN);
        // SAFETY: the first HEADER_LEN bytes lie inside the mapping (segments are at least
        // `Options::MIN_SEGMENT` long), the file
        // was zeroed and fallocated to its full size and is never truncated, so the store
        // cannot fault; the segment is not yet shared with the flusher or anyone else.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.map.as_mut_ptr(), HEADER_LEN)
        };
        self.last_seq
            .store(first_seq.wrapping_sub(1), Ordering::Relaxed);
    }

    /// Maps an existing log segment to append after its `end` (found by replay).
    pub fn reopen(path: PathBuf, number: u64, end: usize, last_seq: u64) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        // Records a previous run wrote but never synced become part of the state we
        // return, so make them durable before anyone relies on them.
        file.sync_data()
            .map_err(|e| Error::io("sync segment", &path, e))?;
        Self::map(path, number, file, end, end, last_seq)
    }

    fn map(
        path: PathBuf,
        number: u64,
        file: File,
        end: usize,
        synced: usize,
        last_seq: u64,
    ) -> Result<Segment> {
        let map = MmapRaw::map_raw(&file).map_err(|e| Error::io("map segment", &path, e))?;
        Ok(Segment {
            path,
            number,
            map,
            end: AtomicUsize::new(end),
            synced: AtomicUsize::new(synced),
            sealed: AtomicBool::new(false),
            last_seq: AtomicU64::new(last_seq),
        })
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }
}

fn log_header(name: Name, first_seq: u64) -> Header {
    Header {
        kind: Kind::Log,
        shard: name.shard,
        generation: name.generation,
        number: name.number,
        first_seq,
    }
}

/// ENOSPC becomes the typed `NoSpace` the worker acts on; the rest stays an I/O error.
fn io_error(op: &'static str, path: &Path, capacity: u64, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Error::NoSpace {
            path: path.to_path_buf(),
            bytes: capacity,
        }
    } else {
        Error::io(op, path, e)
    }
}

/// Creates segment file `name` in `dir`, reserves `capacity` bytes, runs `fill`, and
/// makes the name durable. On any failure the file is removed: a half-made segment
/// would only be cleaned at the next start.
fn new_file(
    dir: &Path,
    name: Name,
    capacity: u64,
    fill: impl FnOnce(&Path, &File) -> Result<()>,
) -> Result<(PathBuf, File)> {
    let path = dir.join(name.file_name());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error("create segment", &path, capacity, e))?;
    let made = super::owner::give(&file)
        .map_err(|e| io_error("give segment to the server's user", &path, capacity, e))
        .and_then(|()| {
            preallocate(&file, capacity)
                .map_err(|e| io_error("fallocate segment", &path, capacity, e))
        })
        .and_then(|()| fill(&path, &file))
        .and_then(|()| sync_dir(dir));
    match made {
        Ok(()) => Ok((path, file)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Writes back `[off, off + len)` and waits for it (no device cache flush: the final
/// fsync does that once).
fn sync_range(file: &File, off: u64, len: u64) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range on a descriptor we own; no memory is passed.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), off as i64, len as i64, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reserves `[0, len)` with real blocks (mode 0: allocate and extend the size).
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: fallocate on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A whole segment file read into memory through a read-only mapping.
pub struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    pub fn open(path: &Path) -> Result<Mapped> {
        let file = File::open(path).map_err(|e| Error::io("open segment", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat segment", path, e))?
            .len();
        if len == 0 {
            return Ok(Mapped { map: None });
        }
        // SAFETY: the mapping is read-only and private to this replay. Segments are only
        // ever appended to by the one writer that owns them, and replay runs before that
        // writer exists (or, for verify and dump, reads a tail that may still grow: we copy
        // nothing out unchecked, every frame is bounds- and CRC-checked). Files are never
        // truncated while mapped, so no access can fault.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("map segment", path, e))?;
        Ok(Mapped { map: Some(map) })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp_proto::lease::{BindingState, LeaseFlags, LeaseRecord};
    use std::net::Ipv4Addr;

    #[test]
    fn names_round_trip() {
        let n = Name {
            generation: 3,
            shard: 12,
            kind: Kind::Snapshot,
            number: 42,
        };
        assert_eq!(n.file_name(), "g000003-s012-snap-0000000042.seg");
        assert_eq!(Name::parse(&n.file_name()), Some(n));
        assert_eq!(Name::parse("g1-s1-log-1.seg.tmp"), None);
        assert_eq!(Name::parse("lock"), None);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = Header {
            kind: Kind::Log,
            shard: 1,
            generation: 2,
            number: 3,
            first_seq: 4,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        b[30] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::Bad));
        assert_eq!(Header::decode(&[0; 10]), Err(HeaderError::Bad));
    }

    #[test]
    fn scan_stops_at_zero_and_measures_junk() {
        let rec = Record::Lease(LeaseRecord {
            stamp: 1,
            addr: Ipv4Addr::new(192, 0, 2, 1),
            state: BindingState::Active,
            htype: 1,
            chaddr: &[1, 2, 3, 4, 5, 6],
            client_id: &[],
            agent_info: &[],
            starts: 1,
            ends: 2,
            cltt: 1,
            tstp: 0,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags::default(),
            context: dhcp_proto::lease::Context::NONE,
        });
        let p = rec.encoded_len().unwrap();
        let f = frame_len(p);
        let mut data = vec![0u8; HEADER_LEN + 4 * f];
        for i in 0..3 {
            let off = HEADER_LEN + i * f;
            write_frame(&mut data[off..off + f], 10 + i as u64, &rec, p);
        }
        let s = scan(&data, Some(10), |_, _| {});
        assert_eq!((s.records, s.last_seq, s.damage), (3, 12, None));
        // A junk byte past a zero header: damage, nothing intact in it.
        let n = data.len();
        data[n - 1] = 7;
        let s = scan(&data, Some(10), |_, _| {});
        let d = s.damage.unwrap();
        assert_eq!((d.at, d.junk_end, d.records), (HEADER_LEN + 3 * f, n, 0));
        // The wrong first sequence number: a gap, and the intact frames are counted.
        let s = scan(&data, Some(11), |_, _| {});
        assert_eq!(s.damage.unwrap().reason, Stop::SeqGap);
        assert_eq!(s.damage.unwrap().records, 3);
    }
}
