//! Operator tools as library functions (the command line wiring lives in main.rs):
//! `verify` reports every file and its damage without changing anything, `dump` prints
//! the live state as JSON or as an ISC dhcpd.leases file, `import_isc` migrates a dhcpd
//! 4.x leases file into a journal.
//!
//! `verify` and `dump` read without taking the lock, so they work beside a running
//! server; a record being written at that moment may show as a damaged tail in the
//! report (the server's own replay is the one that cuts).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Error, Result};
use super::isc;
use super::replay::{self, Listing, Verdict};
use super::segment::Kind;
use super::state::{Fold, State};
use super::writer::ShardWriter;
use dhcp_proto::lease::{printable, Lease, LeaseRecord, NEVER};

/// One file in a verify report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub snapshot: bool,
    pub records: u64,
    pub bytes: u64,
    /// What is wrong with it, if anything (recovery would cut it).
    pub damage: Option<String>,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
}

/// What a server started on the directory would do with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Start {
    /// Replay the generation the MANIFEST names (cutting damaged tails, if any).
    #[default]
    Resume,
    /// The MANIFEST is missing, damaged or contradicts the files (what, in words): fold
    /// every generation's files by stamp and write them as a new generation. The report
    /// then lists every generation's files, and the counts are that fold's.
    Rebuild(String),
    /// Refuse to start, with the error it would stop with (a journal of a newer format).
    Refuse(String),
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub start: Start,
    pub generation: u64,
    pub shards: u32,
    pub files: Vec<FileReport>,
    /// Files an interrupted compaction or reshard left (the next open removes them).
    pub leftovers: Vec<PathBuf>,
    pub records: u64,
    pub leases: usize,
    pub reservations: usize,
    /// Class members added at run time.
    pub members: usize,
}

impl Report {
    /// No damage anywhere and nothing to rebuild or refuse (leftovers are normal after a
    /// crash and are not damage).
    pub fn is_clean(&self) -> bool {
        self.start == Start::Resume && self.files.iter().all(|f| f.damage.is_none())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.start {
            Start::Resume => {}
            Start::Rebuild(damage) => writeln!(
                f,
                "MANIFEST {damage}: at start the server rebuilds it: the files of every generation \
                 below fold into one state by stamp, written as generation {} with its configured \
                 shard count (no lease is dropped)",
                self.generation
            )?,
            Start::Refuse(why) => {
                return writeln!(f, "at start the server refuses this directory: {why}")
            }
        }
        writeln!(
            f,
            "generation {}, {} shard(s), {} file(s), {} records",
            self.generation,
            self.shards,
            self.files.len(),
            self.records
        )?;
        for file in &self.files {
            write!(
                f,
                "  {} ({}): {} records, {} bytes",
                file.path.display(),
                if file.snapshot { "snapshot" } else { "log" },
                file.records,
                file.bytes
            )?;
            match &file.damage {
                Some(d) => writeln!(
                    f,
                    ": DAMAGED: {d}; recovery drops {} records ({} bytes)",
                    file.dropped_records, file.dropped_bytes
                )?,
                None => writeln!(f, ": ok")?,
            }
        }
        for p in &self.leftovers {
            writeln!(f, "  {}: leftover, removed at next start", p.display())?;
        }
        writeln!(
            f,
            "{} leases, {} reservations, {} class members: {}",
            self.leases,
            self.reservations,
            self.members,
            if self.is_clean() { "clean" } else { "DAMAGED" }
        )
    }
}

/// Replays a directory without changing it, as the server's open would.
fn read_only(dir: &Path) -> Result<(Report, State)> {
    let listing = Listing::read(dir)?;
    let mut fold = Fold::default();
    let mut report = Report {
        leftovers: listing.temporary.clone(),
        ..Report::default()
    };
    let replayed = match replay::judge_manifest(dir, &listing)? {
        Verdict::New => {
            return Err(Error::Manifest {
                path: dir.join(replay::MANIFEST),
                reason: "no journal in this directory".into(),
            })
        }
        Verdict::Rebuild(damage) => {
            report.generation = listing.segments.last().map_or(0, |(n, _)| n.generation) + 1;
            report.start = Start::Rebuild(damage);
            replay::replay_every_generation(&listing, &mut fold)?
        }
        Verdict::Use(manifest) => {
            report.generation = manifest.generation;
            report.shards = manifest.shards;
            report.leftovers.extend(
                listing
                    .segments
                    .iter()
                    .filter(|(n, _)| {
                        n.generation != manifest.generation || n.shard >= manifest.shards
                    })
                    .map(|(_, p)| p.clone()),
            );
            let mut files = Vec::new();
            for s in 0..manifest.shards {
                let shard = listing.shard(manifest.generation, s);
                report.leftovers.extend(shard.stale.iter().cloned());
                files.extend(replay::replay_shard(&shard, false, &mut fold)?.files);
            }
            files
        }
    };
    for f in replayed {
        report.records += f.records;
        report.files.push(FileReport {
            path: f.path,
            snapshot: f.kind == Kind::Snapshot,
            records: f.records,
            bytes: f.bytes,
            damage: f.damage,
            dropped_records: f.dropped_records,
            dropped_bytes: f.dropped_bytes,
        });
    }
    let state = fold.into_state();
    report.leases = state.leases.len();
    report.reservations = state.reservations.len();
    report.members = state.members.len();
    Ok((report, state))
}

/// Checks every file of the journal in `dir` (CRCs, lengths, sequence numbers) and
/// reports what a server started on it would do (resume, rebuild the MANIFEST, refuse)
/// and what recovery would keep and cut. Changes nothing.
pub fn verify(dir: impl AsRef<Path>) -> Result<Report> {
    match read_only(dir.as_ref()) {
        Ok((r, _)) => Ok(r),
        // What the server would stop with is the answer here, not a failure to verify.
        Err(e @ Error::UnsupportedVersion { .. }) => Ok(Report {
            start: Start::Refuse(e.to_string()),
            ..Report::default()
        }),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON document: `{"leases": [...], "reservations": [...], "members": [...],
    /// "failover": ...}`.
    Json,
    /// ISC dhcpd.leases(5), as dhcpd 4.4 writes it.
    Isc,
}

/// Writes the live state of the journal in `dir` to `out`. Changes nothing.
pub fn dump(dir: impl AsRef<Path>, format: Format, out: &mut dyn Write) -> Result<()> {
    let (_, state) = read_only(dir.as_ref())?;
    let written = match format {
        Format::Isc => isc::write_leases_file(out, &state),
        Format::Json => write_json(out, &state),
    };
    written.map_err(|e| Error::io("write dump", PathBuf::from("-"), e))
}

fn json_str(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for c in String::from_utf8_lossy(b).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn json_hex(b: &[u8]) -> String {
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("\"{}\"", hex.join(":"))
}

/// Seconds since the epoch; `null` for never (no JSON number holds u64::MAX exactly).
fn json_time(t: u64) -> String {
    if t == NEVER {
        "null".into()
    } else {
        t.to_string()
    }
}

fn write_json(out: &mut dyn Write, state: &State) -> io::Result<()> {
    writeln!(out, "{{\"leases\": [")?;
    let leases = state.sorted_leases();
    for (i, l) in leases.iter().enumerate() {
        write!(
            out,
            "  {{\"address\": \"{}\", \"state\": \"{}\", \"htype\": {}, \"chaddr\": {}, \"client_id\": {}, \
             \"starts\": {}, \"ends\": {}, \"cltt\": {}, \"tstp\": {}, \"tsfp\": {}, \"atsfp\": {}, \
             \"reserved\": {}, \"flags\": {}, \"stamp\": {}}}",
            l.addr,
            l.state.isc_name(),
            l.hw.htype,
            json_hex(l.hw.bytes()),
            json_hex(&l.client_id),
            json_time(l.starts),
            json_time(l.ends),
            json_time(l.cltt),
            json_time(l.tstp),
            json_time(l.tsfp),
            json_time(l.atsfp),
            l.flags.reserved(),
            l.flags.0,
            l.stamp
        )?;
        writeln!(out, "{}", if i + 1 < leases.len() { "," } else { "" })?;
    }
    writeln!(out, "], \"reservations\": [")?;
    let res = state.sorted_reservations();
    for (i, r) in res.iter().enumerate() {
        write!(
            out,
            "  {{\"address\": \"{}\", \"htype\": {}, \"chaddr\": {}, \"client_id\": {}, \"host_name\": {}, \"stamp\": {}}}",
            r.addr,
            r.hw.htype,
            json_hex(r.hw.bytes()),
            json_hex(&r.client_id),
            json_str(&r.host_name),
            r.stamp
        )?;
        writeln!(out, "{}", if i + 1 < res.len() { "," } else { "" })?;
    }
    writeln!(out, "], \"members\": [")?;
    let members = state.sorted_members();
    for (i, m) in members.iter().enumerate() {
        write!(
            out,
            "  {{\"class\": {}, \"value\": {}, \"hex\": {}, \"stamp\": {}}}",
            json_str(&m.class),
            json_str(printable(&m.value).as_bytes()),
            json_hex(&m.value),
            m.stamp
        )?;
        writeln!(out, "{}", if i + 1 < members.len() { "," } else { "" })?;
    }
    write!(out, "], \"failover\": ")?;
    match &state.failover {
        Some(f) => writeln!(
            out,
            "{{\"name\": {}, \"local_state\": {}, \"local_stos\": {}, \"peer_state\": {}, \"peer_stos\": {}, \"mclt\": {}, \"stamp\": {}}}}}",
            json_str(&f.name),
            f.local_state,
            json_time(f.local_stos),
            f.peer_state,
            json_time(f.peer_stos),
            f.mclt,
            f.stamp
        ),
        None => writeln!(out, "null}}"),
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportStats {
    pub leases: usize,
    /// The stamp after the last one used: where the engine's clock continues.
    pub next_stamp: u64,
}

/// Parses an ISC dhcpd 4.x leases file and appends one lease record per address (the
/// file's last entry for it) through `writer`, with stamps from `first_stamp` up (give
/// `state.max_stamp + 1` of the opened journal so the imported leases win). Returns once
/// every record is durable. A parse error writes nothing.
pub fn import_isc(text: &str, writer: &mut ShardWriter, first_stamp: u64) -> Result<ImportStats> {
    let leases: Vec<Lease> = isc::parse_leases(text)?;
    let mut stamp = first_stamp;
    let mut last = writer.written();
    for l in &leases {
        let rec = LeaseRecord {
            stamp,
            ..l.as_record()
        };
        last = writer.append_lease(&rec)?;
        stamp += 1;
    }
    if !writer.wait_durable(last, Duration::from_secs(60)) {
        return Err(Error::io(
            "commit imported leases",
            PathBuf::new(),
            io::Error::new(io::ErrorKind::TimedOut, "records not durable after 60 s"),
        ));
    }
    Ok(ImportStats {
        leases: leases.len(),
        next_stamp: stamp,
    })
}
