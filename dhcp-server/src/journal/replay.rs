//! Reading a state directory back: the MANIFEST (which generation and how many shards),
//! which files of each shard count (the newest snapshot and the log segments after it),
//! and the scan of each file into a `Fold`. With `repair` on (an open for writing) the
//! leftovers of an interrupted compaction or reshard are removed and a damaged tail is
//! zeroed, so the next start finds a clean journal and nobody ever edits a file by hand;
//! with it off (verify, dump) nothing is touched.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::segment::{self, Header, HeaderError, Kind, Mapped, Name, HEADER_LEN, VERSION};
use super::state::Fold;

pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_MAGIC: &str = "dhcp-server journal manifest";

/// Which files are current: written to a temporary name, fsynced and renamed over the old
/// one, so a reader sees either the old or the new generation, never a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub generation: u64,
    pub shards: u32,
}

impl Manifest {
    fn text(&self) -> String {
        let body = format!(
            "{MANIFEST_MAGIC}\nversion {VERSION}\ngeneration {}\nshards {}\n",
            self.generation, self.shards
        );
        format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()))
    }

    fn parse(text: &str) -> Option<Manifest> {
        let (body, crc_line) = text.trim_end().rsplit_once('\n')?;
        let body = format!("{body}\n");
        let crc = u32::from_str_radix(crc_line.strip_prefix("crc32c ")?, 16).ok()?;
        if crc != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != MANIFEST_MAGIC || lines.next()? != format!("version {VERSION}") {
            return None;
        }
        let mut field = |k: &str| lines.next()?.strip_prefix(k)?.trim().parse::<u64>().ok();
        let generation = field("generation")?;
        let shards = u32::try_from(field("shards")?).ok()?;
        (shards > 0).then_some(Manifest { generation, shards })
    }

    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        match fs::read_to_string(&path) {
            Ok(t) => Manifest::parse(&t).map(Some).ok_or_else(|| Error::Manifest {
                path,
                reason: "unreadable or damaged (the journal files are kept; remove MANIFEST to let the files name their generation)".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read manifest", path, e)),
        }
    }

    /// Switches the directory to this manifest atomically and durably.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let path = dir.join(MANIFEST);
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create manifest", &tmp, e))?;
        f.write_all(self.text().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write manifest", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename manifest", &path, e))?;
        segment::sync_dir(dir)
    }
}

/// The segment files of a directory, and the temporary files compaction leaves.
#[derive(Debug, Default)]
pub struct Listing {
    pub segments: Vec<(Name, PathBuf)>,
    pub temporary: Vec<PathBuf>,
}

impl Listing {
    pub fn read(dir: &Path) -> Result<Listing> {
        let mut l = Listing::default();
        let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                l.temporary.push(entry.path());
            } else if let Some(n) = Name::parse(name) {
                l.segments.push((n, entry.path()));
            }
        }
        l.segments.sort();
        Ok(l)
    }

    /// The manifest a directory without one implies: its newest generation and as many
    /// shards as that generation has files for (a lost MANIFEST never loses leases).
    pub fn implied_manifest(&self) -> Option<Manifest> {
        let generation = self.segments.iter().map(|(n, _)| n.generation).max()?;
        let shards = self
            .segments
            .iter()
            .filter(|(n, _)| n.generation == generation)
            .map(|(n, _)| n.shard + 1)
            .max()?;
        Some(Manifest { generation, shards })
    }

    /// The files of one shard that count, and those an interrupted compaction left.
    pub fn shard(&self, generation: u64, shard: u32) -> ShardFiles {
        let mine = self
            .segments
            .iter()
            .filter(|(n, _)| n.generation == generation && n.shard == shard);
        let snapshot = mine
            .clone()
            .filter(|(n, _)| n.kind == Kind::Snapshot)
            .max_by_key(|(n, _)| n.number)
            .cloned();
        let covered = snapshot.as_ref().map(|(n, _)| n.number);
        let mut files = ShardFiles {
            snapshot: snapshot.clone(),
            ..ShardFiles::default()
        };
        for (n, p) in mine {
            let stale = match n.kind {
                Kind::Snapshot => Some(n.number) != covered,
                Kind::Log => covered.is_some_and(|k| n.number <= k),
            };
            if stale {
                files.stale.push(p.clone());
            } else if n.kind == Kind::Log {
                files.logs.push((*n, p.clone()));
            }
        }
        files
    }
}

#[derive(Debug, Default)]
pub struct ShardFiles {
    pub snapshot: Option<(Name, PathBuf)>,
    /// In number order.
    pub logs: Vec<(Name, PathBuf)>,
    /// Already folded into the snapshot (older snapshots, log segments up to its number).
    pub stale: Vec<PathBuf>,
}

/// One file's share of a replay, for verify's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReplay {
    pub path: PathBuf,
    pub kind: Kind,
    pub records: u64,
    /// Bytes of good records.
    pub bytes: u64,
    /// What was (or, read-only, would be) cut, in words.
    pub damage: Option<String>,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
}

/// Where a shard's writer picks up after replay.
#[derive(Debug, Clone)]
pub struct Resume {
    pub name: Name,
    pub path: PathBuf,
    pub end: usize,
    pub last_seq: u64,
    pub capacity: usize,
}

/// A log segment replay found before the last one: ready for compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub number: u64,
    pub path: PathBuf,
    pub last_seq: u64,
}

#[derive(Debug, Default)]
pub struct ShardReplay {
    pub files: Vec<FileReplay>,
    pub snapshot: Option<(u64, PathBuf)>,
    pub sealed: Vec<Sealed>,
    pub resume: Option<Resume>,
    /// The sequence number the shard's next record gets.
    pub next_seq: u64,
    /// The number the shard's next log segment gets.
    pub next_number: u64,
}

/// Replays one shard into `fold`: the snapshot, then the log segments in order. All
/// shards fold into one `Fold`, so no per-shard table is built and merged.
pub fn replay_shard(files: &ShardFiles, repair: bool, fold: &mut Fold) -> Result<ShardReplay> {
    let mut out = ShardReplay {
        next_seq: 1,
        next_number: 1,
        ..ShardReplay::default()
    };
    if let Some((name, path)) = &files.snapshot {
        let (f, _, _, next) = replay_file(fold, *name, path, repair)?;
        out.files.push(f);
        out.snapshot = Some((name.number, path.clone()));
        out.next_seq = next.max(1);
        out.next_number = name.number + 1;
    }
    let mut prev_last: Option<u64> = None;
    for (name, path) in &files.logs {
        let (mut f, scan_end, capacity, first) = replay_file(fold, *name, path, repair)?;
        let last_seq = first.wrapping_sub(1).wrapping_add(f.records);
        if let Some(p) = prev_last {
            if f.records > 0 && first != p.wrapping_add(1) && f.damage.is_none() {
                // Records between two segments are missing (a damaged segment before
                // this one lost its tail). What follows is intact and newer: keep it.
                f.damage = Some(format!(
                    "sequence gap: expected {} but segment starts at {first}",
                    p.wrapping_add(1)
                ));
            }
        }
        if f.records > 0 {
            prev_last = Some(last_seq);
            out.next_seq = out.next_seq.max(last_seq.wrapping_add(1));
        } else {
            out.next_seq = out.next_seq.max(first);
        }
        out.next_number = out.next_number.max(name.number + 1);
        out.files.push(f);
        // A file without header or records holds nothing: a creation cut short, or a
        // prepared next segment the writer never moved into. Repair removed it; either
        // way the writer resumes in the file before it.
        if capacity <= HEADER_LEN || !path.exists() {
            continue;
        }
        let this = Resume {
            name: *name,
            path: path.clone(),
            end: scan_end,
            // The writer continues this file's own sequence, whatever the others say.
            last_seq,
            capacity,
        };
        if let Some(prev) = out.resume.replace(this) {
            out.sealed.push(Sealed {
                number: prev.name.number,
                path: prev.path,
                last_seq: prev.last_seq,
            });
        }
    }
    Ok(out)
}

/// Replays one file into `fold`: `(report, end of good records, file size, first seq)`.
/// For a snapshot, the last value is the next log sequence number its header records.
fn replay_file(
    fold: &mut Fold,
    name: Name,
    path: &Path,
    repair: bool,
) -> Result<(FileReplay, usize, usize, u64)> {
    let mapped = Mapped::open(path)?;
    let data = mapped.bytes();
    let mut report = FileReplay {
        path: path.to_path_buf(),
        kind: name.kind,
        records: 0,
        bytes: 0,
        damage: None,
        dropped_records: 0,
        dropped_bytes: 0,
    };
    let header = match Header::decode(data) {
        Ok(h)
            if h.kind == name.kind
                && h.shard == name.shard
                && h.generation == name.generation
                && h.number == name.number =>
        {
            Some(h)
        }
        Err(HeaderError::Newer(found)) => {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: VERSION,
            })
        }
        _ => None,
    };
    let first_seq = match (header, name.kind) {
        (Some(h), Kind::Log) => Some(h.first_seq),
        (Some(_), Kind::Snapshot) => Some(1),
        (None, _) => None,
    };
    let scan = segment::scan(data, first_seq, |_, rec| fold.apply(&rec));
    report.records = scan.records;
    report.bytes = (scan.end.saturating_sub(HEADER_LEN)) as u64;
    let first = match (header, first_seq) {
        (Some(h), _) if name.kind == Kind::Snapshot => h.first_seq,
        (_, Some(s)) => s,
        (_, None) => scan.last_seq.wrapping_sub(scan.records).wrapping_add(1),
    };
    let mut notes = Vec::new();
    if header.is_none() && data.iter().any(|&b| b != 0) {
        notes.push("damaged header".to_string());
    }
    if let Some(d) = scan.damage {
        notes.push(format!("{} at offset {}", d.reason.describe(), d.at));
        report.dropped_records = d.records;
        report.dropped_bytes = d.bytes();
    }
    if !notes.is_empty() {
        report.damage = Some(notes.join(", "));
    }
    // A file with nothing in it offers the writer no place to resume (size 0 says so).
    let size = if header.is_none() && scan.records == 0 {
        0
    } else {
        data.len()
    };
    let damage = scan.damage;
    drop(mapped);
    if repair {
        if header.is_none() && scan.records == 0 {
            // Nothing usable: a prepared segment never moved into, a segment whose
            // creation was cut short, or worse.
            fs::remove_file(path).map_err(|e| Error::io("remove empty segment", path, e))?;
            return Ok((report, HEADER_LEN, 0, first));
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open for repair", path, e))?;
        if let Some(d) = damage {
            let zeros = vec![0u8; d.junk_end - d.at];
            file.write_all_at(&zeros, d.at as u64)
                .map_err(|e| Error::io("zero damaged tail", path, e))?;
        }
        if header.is_none() {
            let h = Header {
                kind: name.kind,
                shard: name.shard,
                generation: name.generation,
                number: name.number,
                first_seq: if name.kind == Kind::Log { first } else { 1 },
            };
            file.write_all_at(&h.encode(), 0)
                .map_err(|e| Error::io("rewrite segment header", path, e))?;
        }
        if damage.is_some() || header.is_none() {
            file.sync_data()
                .map_err(|e| Error::io("sync repaired segment", path, e))?;
        }
    }
    Ok((report, scan.end, size, first))
}
