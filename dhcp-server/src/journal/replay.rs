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
use super::segment::{
    self, Header, HeaderError, Kind, Mapped, Name, HEADER_LEN, OLDEST_VERSION, VERSION,
};
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

    /// The manifest in `text`, or what is wrong with it.
    fn parse(text: &str) -> std::result::Result<Manifest, Unusable> {
        let damaged = |why: &str| Unusable::Damaged(why.to_string());
        if text.is_empty() {
            return Err(damaged("is empty"));
        }
        let (body, crc_line) = text
            .trim_end()
            .rsplit_once('\n')
            .ok_or_else(|| damaged("is truncated or garbled (no checksum line)"))?;
        let body = format!("{body}\n");
        let crc = crc_line
            .strip_prefix("crc32c ")
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or_else(|| damaged("is truncated or garbled (no checksum line)"))?;
        if crc != crc32c::crc32c(body.as_bytes()) {
            return Err(damaged("fails its checksum"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(MANIFEST_MAGIC) {
            return Err(damaged(
                "has the wrong magic (not a dhcp-server journal manifest)",
            ));
        }
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("version "))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| damaged("has no version line"))?;
        if version > VERSION {
            return Err(Unusable::Newer(version));
        }
        if version < OLDEST_VERSION {
            return Err(damaged("has an unknown version"));
        }
        let mut field = |k: &str| lines.next()?.strip_prefix(k)?.trim().parse::<u64>().ok();
        let generation = field("generation").ok_or_else(|| damaged("has no generation"))?;
        let shards = field("shards")
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| damaged("has no valid shard count"))?;
        Ok(Manifest { generation, shards })
    }

    /// The MANIFEST of `dir`, `None` when there is none. A damaged one is
    /// `Error::Manifest` with what is wrong; one of a newer format,
    /// `Error::UnsupportedVersion`.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        match fs::read(&path) {
            Ok(bytes) => match std::str::from_utf8(&bytes).map(Manifest::parse) {
                Ok(Ok(m)) => Ok(Some(m)),
                Ok(Err(Unusable::Newer(found))) => Err(Error::UnsupportedVersion {
                    path,
                    found,
                    supported: VERSION,
                }),
                Ok(Err(Unusable::Damaged(reason))) => Err(Error::Manifest { path, reason }),
                Err(_) => Err(Error::Manifest {
                    path,
                    reason: "is not text".into(),
                }),
            },
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

/// Why a MANIFEST cannot be used.
enum Unusable {
    /// Written by a newer dhcp-server: left alone, the start refused.
    Newer(u32),
    /// Cut short, overwritten or garbled: what is wrong, in words.
    Damaged(String),
}

/// What an open does with a state directory, given its MANIFEST and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The MANIFEST is intact and names files that are there: replay that generation.
    Use(Manifest),
    /// No MANIFEST and no journal file: a new journal.
    New,
    /// The MANIFEST is missing, damaged, or names a generation or shards the files
    /// contradict (what, in words): every generation's files fold into one state by
    /// stamp and are written as a new generation (see `replay_every_generation`).
    Rebuild(String),
}

/// Judges the MANIFEST of `dir` against its files. Errors are refusals: a MANIFEST of a
/// newer format (`Error::UnsupportedVersion`; rebuilding would throw away what a newer
/// server wrote) or one that cannot be read (`Error::Io`: permissions, an I/O error; the
/// file may be fine).
///
/// Why rebuild rather than stop: the MANIFEST holds two numbers, the current generation
/// and its shard count, and the files say everything else. Folding every generation by
/// stamp gives the same state whichever generation was current: an interrupted reshard's
/// new generation holds the old one's records with their stamps, and the old one's files
/// after a finished switch hold nothing newer than the new one. Trusting the newest
/// generation instead (what removing MANIFEST by hand used to do) would lose every lease
/// of the shards an interrupted reshard had not written yet; trusting a MANIFEST that
/// names a generation without files would remove every file as a leftover.
pub fn judge_manifest(dir: &Path, listing: &Listing) -> Result<Verdict> {
    let manifest = match Manifest::read(dir) {
        Ok(Some(m)) => m,
        Ok(None) if listing.segments.is_empty() => return Ok(Verdict::New),
        Ok(None) => return Ok(Verdict::Rebuild("is missing".into())),
        Err(Error::Manifest { reason, .. }) => return Ok(Verdict::Rebuild(reason)),
        Err(e) => return Err(e),
    };
    let current = || {
        listing
            .segments
            .iter()
            .filter(move |(n, _)| n.generation == manifest.generation)
    };
    if current().next().is_none() && !listing.segments.is_empty() {
        return Ok(Verdict::Rebuild(format!(
            "names generation {}, which has no files (the files are of generation(s) {})",
            manifest.generation,
            listing.generations()
        )));
    }
    if let Some((n, _)) = current().find(|(n, _)| n.shard >= manifest.shards) {
        return Ok(Verdict::Rebuild(format!(
            "names {} shard(s), but generation {} has files of shard {}",
            manifest.shards, manifest.generation, n.shard
        )));
    }
    Ok(Verdict::Use(manifest))
}

/// Replays (read-only) the files of every generation into one fold, each shard of each
/// generation as a replay would: what a rebuild keeps, in file order.
pub fn replay_every_generation(listing: &Listing, fold: &mut Fold) -> Result<Vec<FileReplay>> {
    let mut groups: Vec<(u64, u32)> = listing
        .segments
        .iter()
        .map(|(n, _)| (n.generation, n.shard))
        .collect();
    groups.dedup();
    let mut files = Vec::new();
    for (generation, shard) in groups {
        let r = replay_shard(&listing.shard(generation, shard), false, fold)?;
        files.extend(r.files);
    }
    Ok(files)
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

    /// The generations the files belong to, for messages: "3, 4".
    pub fn generations(&self) -> String {
        let mut g: Vec<u64> = self.segments.iter().map(|(n, _)| n.generation).collect();
        g.dedup();
        g.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
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
    /// Written by an older format version: read, never appended to.
    pub older: bool,
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
        let older = out.files.last().is_some_and(|f| f.older);
        let sealed = if older {
            out.resume.take().into_iter().chain([this]).collect()
        } else {
            out.resume.replace(this).into_iter().collect::<Vec<_>>()
        };
        out.sealed.extend(sealed.into_iter().map(|r| Sealed {
            number: r.name.number,
            path: r.path,
            last_seq: r.last_seq,
        }));
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
        older: false,
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
    report.older = header.is_some() && Header::version(data) < VERSION;
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
