//! Compaction: fold a shard's snapshot and its sealed log segments into a new snapshot,
//! off the workers' path (they keep appending to their open segment meanwhile).
//!
//! The steps, and what a crash after each leaves (replay copes with every one):
//! 1. write `NAME.seg.tmp` — a `.tmp` file, removed at the next open;
//! 2. fsync it — same;
//! 3. rename it to `NAME.seg` — two snapshots: the newer one wins, the older one and the
//!    log segments it covers are removed at the next open (their records are all in it);
//! 4. fsync the directory — same;
//! 5. remove the old snapshot and the folded segments one by one — leftovers as in 3.

use std::fs;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use dhcp_proto::lease::Record;

use super::record::Encode;
use super::replay::Sealed;
use super::segment::{self, Header, Kind, Mapped, Name};
use super::state::Fold;

/// The points between compaction steps, where tests stop to play a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    TempWritten,
    TempSynced,
    Renamed,
    DirSynced,
    /// After each removal of a folded file.
    Removed,
}

/// Writes `records` as snapshot `name` (temporary name, fsync, rename); `next_seq` is
/// the log sequence number after the folded segments. The directory is not synced here.
pub fn write_snapshot<'a>(
    dir: &Path,
    name: Name,
    next_seq: u64,
    records: impl Iterator<Item = Record<'a>>,
    hook: &mut dyn FnMut(Step) -> ControlFlow<()>,
) -> Result<Option<PathBuf>> {
    let path = dir.join(name.file_name());
    let tmp = dir.join(format!("{}.tmp", name.file_name()));
    let written = write_temp(&tmp, name, next_seq, records);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if hook(Step::TempWritten).is_break() {
        return Ok(None);
    }
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync snapshot", &tmp, e))?;
    if hook(Step::TempSynced).is_break() {
        return Ok(None);
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename snapshot", &path, e))?;
    Ok(Some(path))
}

fn write_temp<'a>(
    tmp: &Path,
    name: Name,
    next_seq: u64,
    records: impl Iterator<Item = Record<'a>>,
) -> Result<()> {
    let io = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace {
                path: tmp.to_path_buf(),
                bytes: 0,
            }
        } else {
            Error::io("write snapshot", tmp, e)
        }
    };
    let file = fs::File::create(tmp).map_err(io)?;
    super::owner::give(&file).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let header = Header {
        kind: Kind::Snapshot,
        shard: name.shard,
        generation: name.generation,
        number: name.number,
        first_seq: next_seq,
    };
    w.write_all(&header.encode()).map_err(io)?;
    let mut frame = vec![0u8; segment::frame_len(segment::MAX_PAYLOAD)];
    for (seq, rec) in (1u64..).zip(records) {
        let payload = rec.encoded_len()?;
        let len = segment::frame_len(payload);
        segment::write_frame(&mut frame[..len], seq, &rec, payload);
        w.write_all(&frame[..len]).map_err(io)?;
    }
    w.flush().map_err(io)
}

/// Folds `snapshot` (the shard's current one, if any) and `sealed` (a run of consecutive
/// sealed log segments) into a new snapshot and removes what it replaces. Returns the
/// new snapshot, or `None` when `hook` stopped it (a test's crash).
pub fn compact_shard(
    dir: &Path,
    generation: u64,
    shard: u32,
    snapshot: Option<&(u64, PathBuf)>,
    sealed: &[Sealed],
    hook: &mut dyn FnMut(Step) -> ControlFlow<()>,
) -> Result<Option<(u64, PathBuf)>> {
    let Some(last) = sealed.last() else {
        return Ok(snapshot.cloned());
    };
    let mut fold = Fold::default();
    let mut inputs: Vec<&Path> = Vec::new();
    if let Some((_, p)) = snapshot {
        inputs.push(p);
    }
    inputs.extend(sealed.iter().map(|s| s.path.as_path()));
    for path in &inputs {
        let mapped = Mapped::open(path)?;
        // Replay at open already cut any damage; the scan just stops where records end.
        segment::scan(mapped.bytes(), None, |_, rec| fold.apply(&rec));
    }
    let name = Name {
        generation,
        shard,
        kind: Kind::Snapshot,
        number: last.number,
    };
    let Some(path) = write_snapshot(dir, name, last.last_seq + 1, fold.records(), hook)? else {
        return Ok(None);
    };
    if hook(Step::Renamed).is_break() {
        return Ok(None);
    }
    segment::sync_dir(dir)?;
    if hook(Step::DirSynced).is_break() {
        return Ok(None);
    }
    for old in inputs {
        fs::remove_file(old).map_err(|e| Error::io("remove folded segment", old, e))?;
        if hook(Step::Removed).is_break() {
            return Ok(None);
        }
    }
    Ok(Some((last.number, path)))
}
