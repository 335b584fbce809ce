//! A damaged MANIFEST: the server rebuilds it from the journal files (every generation
//! folded by stamp, written as a new generation) with one loud log line, loses no lease,
//! and `journal verify` says beforehand that it would; a MANIFEST of a newer format makes
//! it refuse, and verify says that too. No root needed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dhcp_proto::lease::{BindingState, Context, LeaseFlags, LeaseRecord};
use dhcp_server::journal::{self, Error, Format, Journal, Options, Start};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("journal-manifest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts(shards: usize) -> Options {
    Options {
        shards,
        segment_bytes: Options::MIN_SEGMENT,
        ..Options::default()
    }
}

/// Opens `dir` with `shards` shards and appends leases `from..to` (address 192.0.2.0/24
/// and up, one client each, stamps from `from`) spread over the writers, durably.
fn add_leases(dir: &Path, shards: usize, from: u32, to: u32) {
    let mut o = Journal::open(dir, &opts(shards)).unwrap();
    for i in from..to {
        let mac = [2, 0xcc, 0, 0, (i >> 8) as u8, i as u8];
        let rec = LeaseRecord {
            stamp: u64::from(i) + 1,
            addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 0)) + i),
            state: BindingState::Active,
            htype: 1,
            chaddr: &mac,
            client_id: &[],
            agent_info: &[],
            starts: 1_795_000_000,
            ends: 1_795_086_400,
            cltt: 1_795_000_000,
            tstp: 0,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags(0),
            context: Context::NONE,
        };
        let w = &mut o.writers[i as usize % shards];
        let seq = w.append_lease(&rec).unwrap();
        assert!(w.wait_durable(seq, Duration::from_secs(10)));
    }
}

fn json(dir: &Path) -> String {
    let mut out = Vec::new();
    journal::dump(dir, Format::Json, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "lock" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn files_of_generation(dir: &Path, generation: u64) -> Vec<PathBuf> {
    let prefix = format!("g{generation:06}-");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&prefix)
        })
        .collect()
}

/// A MANIFEST with a valid checksum over `body`.
fn manifest_with(body: &str) -> String {
    format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()))
}

/// A journal of 2 shards resharded to 3 (generation 2), with leases written in both
/// generations: 300 leases in all.
fn journal_in(dir: &Path) {
    add_leases(dir, 2, 0, 200);
    add_leases(dir, 3, 200, 300);
}

/// Damages the MANIFEST of a copy of a good journal with `damage`, then checks what
/// verify says, that open rebuilds it (saying why) with every lease kept, and that the
/// next open finds a clean directory.
fn rebuilt(name: &str, damage: impl FnOnce(&Path), reason: &str) {
    let good = TempDir::new(&format!("{name}-good"));
    journal_in(&good.0);
    let expected = json(&good.0);
    assert!(expected.matches("\"address\"").count() == 300);
    let d = TempDir::new(name);
    copy_dir(&good.0, &d.0);
    damage(&d.0);

    let report = journal::verify(&d.0).unwrap();
    assert_eq!(report.start, Start::Rebuild(reason.to_string()), "{report}");
    assert!(!report.is_clean());
    assert_eq!(report.leases, 300, "{report}");
    let text = report.to_string();
    assert!(
        text.starts_with(&format!(
            "MANIFEST {reason}: at start the server rebuilds it"
        )),
        "{text}"
    );
    assert!(text.contains("no lease is dropped"), "{text}");
    // Dump shows the state the server would serve after the rebuild.
    assert_eq!(json(&d.0), expected);

    let o = Journal::open(&d.0, &opts(3)).unwrap();
    assert_eq!(o.recovery.rebuilt_manifest.as_deref(), Some(reason));
    assert_eq!(o.state.leases.len(), 300);
    drop(o);
    assert_eq!(json(&d.0), expected);
    let again = Journal::open(&d.0, &opts(3)).unwrap();
    assert_eq!(again.recovery.rebuilt_manifest, None);
    drop(again);
    let report = journal::verify(&d.0).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.start, Start::Resume);
}

#[test]
fn a_truncated_manifest_is_rebuilt() {
    rebuilt(
        "truncated",
        |d| {
            let m = std::fs::read(d.join("MANIFEST")).unwrap();
            std::fs::write(d.join("MANIFEST"), &m[..m.len() / 2]).unwrap();
        },
        "is truncated or garbled (no checksum line)",
    );
}

#[test]
fn a_manifest_with_a_flipped_bit_is_rebuilt() {
    rebuilt(
        "bit",
        |d| {
            let mut m = std::fs::read(d.join("MANIFEST")).unwrap();
            m[3] ^= 0x20;
            std::fs::write(d.join("MANIFEST"), m).unwrap();
        },
        "fails its checksum",
    );
}

#[test]
fn an_empty_manifest_is_rebuilt() {
    rebuilt(
        "empty",
        |d| std::fs::write(d.join("MANIFEST"), b"").unwrap(),
        "is empty",
    );
}

#[test]
fn a_garbage_manifest_is_rebuilt() {
    rebuilt(
        "garbage",
        |d| std::fs::write(d.join("MANIFEST"), [0xde, 0xad, 0xbe, 0xef, 0xff, 0x00]).unwrap(),
        "is not text",
    );
}

#[test]
fn a_manifest_with_the_wrong_magic_is_rebuilt() {
    rebuilt(
        "magic",
        |d| {
            let text = manifest_with("some other manifest\nversion 1\ngeneration 2\nshards 3\n");
            std::fs::write(d.join("MANIFEST"), text).unwrap();
        },
        "has the wrong magic (not a dhcp-server journal manifest)",
    );
}

#[test]
fn a_manifest_naming_a_missing_generation_is_rebuilt() {
    // Trusted, this MANIFEST would have every file removed as another generation's.
    rebuilt(
        "missing-generation",
        |d| {
            let text =
                manifest_with("dhcp-server journal manifest\nversion 1\ngeneration 7\nshards 3\n");
            std::fs::write(d.join("MANIFEST"), text).unwrap();
        },
        "names generation 7, which has no files (the files are of generation(s) 2)",
    );
}

#[test]
fn a_manifest_with_too_few_shards_is_rebuilt() {
    // Trusted, it would have shard 2's files removed as leftovers.
    rebuilt(
        "few-shards",
        |d| {
            let text =
                manifest_with("dhcp-server journal manifest\nversion 1\ngeneration 2\nshards 2\n");
            std::fs::write(d.join("MANIFEST"), text).unwrap();
        },
        "names 2 shard(s), but generation 2 has files of shard 2",
    );
}

#[test]
fn a_missing_manifest_is_rebuilt() {
    rebuilt(
        "missing",
        |d| std::fs::remove_file(d.join("MANIFEST")).unwrap(),
        "is missing",
    );
}

/// The case trusting the newest generation gets wrong: a reshard from 2 to 3 shards cut
/// short after writing shard 0 of the new generation, then the MANIFEST damaged. Only a
/// fold of both generations keeps every lease.
#[test]
fn a_damaged_manifest_beside_an_interrupted_reshard_loses_nothing() {
    let old = TempDir::new("reshard-old");
    add_leases(&old.0, 2, 0, 200);
    let expected = json(&old.0);
    let d = TempDir::new("reshard");
    copy_dir(&old.0, &d.0);
    // The reshard, finished, then undone back to "only shard 0 of generation 2 written".
    drop(Journal::open(&d.0, &opts(3)).unwrap());
    copy_dir(&old.0, &d.0);
    for p in files_of_generation(&d.0, 2) {
        if !p.file_name().unwrap().to_str().unwrap().contains("-s000-") {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(d.0.join("MANIFEST"), b"dhcp-server journal manif").unwrap();

    let report = journal::verify(&d.0).unwrap();
    assert!(matches!(report.start, Start::Rebuild(_)), "{report}");
    assert_eq!(report.leases, 200, "{report}");
    let o = Journal::open(&d.0, &opts(3)).unwrap();
    assert!(o.recovery.rebuilt_manifest.is_some());
    assert_eq!(o.state.leases.len(), 200);
    drop(o);
    assert_eq!(json(&d.0), expected);
    assert!(files_of_generation(&d.0, 1).is_empty());
}

/// A MANIFEST a newer dhcp-server wrote: rebuilding would throw away what it knows, so
/// the start is refused, nothing is touched, and verify says so.
#[test]
fn a_manifest_of_a_newer_format_is_refused() {
    let d = TempDir::new("newer");
    journal_in(&d.0);
    let text = manifest_with("dhcp-server journal manifest\nversion 9\ngeneration 2\nshards 3\n");
    std::fs::write(d.0.join("MANIFEST"), &text).unwrap();
    let files = files_of_generation(&d.0, 2).len();

    let report = journal::verify(&d.0).unwrap();
    assert!(
        matches!(&report.start, Start::Refuse(why) if why.contains("version 9")),
        "{report}"
    );
    assert!(!report.is_clean());
    assert!(
        report
            .to_string()
            .starts_with("at start the server refuses this directory:"),
        "{report}"
    );
    match Journal::open(&d.0, &opts(3)) {
        Err(Error::UnsupportedVersion { found: 9, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a journal of a newer format"),
    }
    assert_eq!(std::fs::read_to_string(d.0.join("MANIFEST")).unwrap(), text);
    assert_eq!(files_of_generation(&d.0, 2).len(), files);
}

/// What an operator sees: `dhcp-server journal verify` prints what a start would do and
/// fails (exit 1) for a rebuild and for a refusal, and succeeds once the start rebuilt.
#[test]
fn journal_verify_on_the_command_line_says_what_the_server_would_do() {
    let verify = |d: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dhcp-server"))
            .args(["journal", "verify", "--state-dir"])
            .arg(d)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let d = TempDir::new("cli");
    journal_in(&d.0);
    let (code, text) = verify(&d.0);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("generation 2, 3 shard(s)"), "{text}");
    assert!(
        text.ends_with("300 leases, 0 reservations, 0 class members: clean\n"),
        "{text}"
    );

    std::fs::write(d.0.join("MANIFEST"), b"").unwrap();
    let (code, text) = verify(&d.0);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("MANIFEST is empty: at start the server rebuilds it: the files of every generation below fold into one state by stamp, written as generation 3"),
        "{text}"
    );
    assert!(
        text.ends_with("300 leases, 0 reservations, 0 class members: DAMAGED\n"),
        "{text}"
    );

    drop(Journal::open(&d.0, &opts(3)).unwrap());
    let (code, text) = verify(&d.0);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("generation 3, 3 shard(s)"), "{text}");

    let newer = manifest_with("dhcp-server journal manifest\nversion 9\ngeneration 3\nshards 3\n");
    std::fs::write(d.0.join("MANIFEST"), newer).unwrap();
    let (code, text) = verify(&d.0);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("at start the server refuses this directory: journal file")
            && text.contains("has format version 9, this build reads up to 2"),
        "{text}"
    );
}
