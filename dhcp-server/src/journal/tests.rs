//! Journal tests over real files: replay gives back exactly what was written (across
//! shard counts), damage at every byte of the last records is cut back to the last good
//! record, a crash at every compaction step recovers, the lock refuses a second open,
//! arbitrary bytes never panic, and a full disk (a tmpfs, root only) is a `NoSpace`
//! error rather than a SIGBUS.

use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::compact::{self, Step};
use super::record::Encode;
use super::replay::{self, Listing, Manifest};
use super::segment::{self, Kind};
use super::state::Fold;
use super::*;

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("dhcp-journal-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn small(shards: usize) -> Options {
    Options {
        shards,
        segment_bytes: Options::MIN_SEGMENT,
        ..Options::default()
    }
}

/// An owned record to write, so tests can keep them for a model.
#[derive(Debug, Clone)]
enum Op {
    Lease(Lease),
    Reserve(Reservation),
    Unreserve(u64, Ipv4Addr),
    Failover(Failover),
    Member(Member),
    Unmember(Member),
}

impl Op {
    fn record(&self) -> Record<'_> {
        match self {
            Op::Lease(l) => Record::Lease(l.as_record()),
            Op::Reserve(r) => Record::ReservationAdded(r.as_record()),
            Op::Unreserve(stamp, addr) => Record::ReservationRemoved {
                stamp: *stamp,
                addr: *addr,
            },
            Op::Failover(f) => Record::Failover(f.as_record()),
            Op::Member(m) => Record::MemberAdded(m.as_record()),
            Op::Unmember(m) => Record::MemberRemoved(m.as_record()),
        }
    }
}

fn lease(stamp: u64, host: u8, state: BindingState, client: u8) -> Lease {
    Lease {
        stamp,
        addr: Ipv4Addr::new(192, 0, 2, host),
        state,
        hw: HwAddr::new(1, &[2, 0, 0, 0, 0, client]),
        client_id: vec![1, 2, 0, 0, 0, 0, client].into(),
        agent_info: Box::new([]),
        starts: 1_795_000_000 + stamp,
        ends: 1_795_003_600 + stamp,
        cltt: 1_795_000_000 + stamp,
        tstp: 0,
        tsfp: 0,
        atsfp: 0,
        flags: LeaseFlags(if client.is_multiple_of(7) {
            LeaseFlags::RESERVED
        } else {
            0
        }),
    }
}

fn model(ops: &[Op]) -> State {
    let mut f = Fold::default();
    for op in ops {
        f.apply(&op.record());
    }
    f.into_state()
}

fn write_all(w: &mut ShardWriter, ops: &[Op]) {
    for op in ops {
        w.append(&op.record()).unwrap();
    }
}

fn churn(n: u64, hosts: u8) -> Vec<Op> {
    (1..=n)
        .map(|s| {
            let state = BindingState::ALL[(s % 7) as usize];
            Op::Lease(lease(
                s,
                (s % u64::from(hosts)) as u8,
                state,
                (s % 251) as u8,
            ))
        })
        .collect()
}

#[test]
fn replay_returns_what_was_written_and_durable_moves() {
    let dir = TempDir::new("basic");
    let ops = churn(500, 50);
    {
        let mut o = Journal::open(dir.path(), &small(1)).unwrap();
        assert!(o.state.leases.is_empty());
        let w = &mut o.writers[0];
        write_all(w, &ops);
        assert_eq!(w.written(), 500);
        assert!(w.wait_durable(500, Duration::from_secs(10)));
        // The wake-up fd was signalled.
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&w.wakeup_fd()),
            events: libc::POLLIN,
            revents: 0,
        };
        w.append(&ops[0].record()).unwrap();
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(n, 1);
        w.clear_wakeup();
    }
    let o = Journal::open(dir.path(), &small(1)).unwrap();
    let mut all = ops.clone();
    all.push(ops[0].clone());
    assert_eq!(o.state, model(&all));
    assert_eq!(o.state.max_stamp, 500);
    assert!(o.recovery.damage.is_empty());
    // Sequence numbers continue after a restart.
    let mut writers = o.writers;
    assert_eq!(writers[0].append(&ops[1].record()).unwrap(), 502);
}

/// Another thread (the control thread) waits on a shard's durable sequence without the
/// writer's eventfd, which stays the worker's to read.
#[test]
fn a_watch_sees_what_becomes_durable_from_another_thread() {
    let dir = TempDir::new("watch");
    let mut o = Journal::open(dir.path(), &small(1)).unwrap();
    let w = &mut o.writers[0];
    let watch = w.watch();
    let ops = churn(10, 5);
    write_all(w, &ops);
    let waiter = std::thread::spawn(move || watch.wait(10, Duration::from_secs(10)));
    assert!(waiter.join().unwrap());
    assert!(
        !w.watch().wait(11, Duration::from_millis(20)),
        "nothing past the end"
    );
}

/// Waits until the preparer has the shard's next segment ready, if the writer asked for
/// it (its segment is half full).
fn wait_prepared(o: &Opened, shard: usize) {
    let sh = &o.journal.shared.shards[shard];
    if !sh.spare_wanted.load(Ordering::Relaxed) {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sh.spare.lock().unwrap().ready.is_none() {
        assert!(std::time::Instant::now() < deadline, "no segment prepared");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Rolls move into the prepared segment (none is made on the append path), none is
/// prepared before the open one is half full, and a crash that leaves a prepared, never
/// used segment behind recovers everything, resumes in the last segment written and
/// cleans the prepared one away.
#[test]
fn rolls_use_the_prepared_segment_and_a_left_one_is_cleaned() {
    let dir = TempDir::new("prepared");
    let mut ops = churn(6000, 120);
    let crashed = {
        let mut o = Journal::open_without_compactor(dir.path(), &small(1)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(o.journal.shared.shards[0]
            .spare
            .lock()
            .unwrap()
            .ready
            .is_none());
        // At least 3000 records, and on until a prepared segment is waiting.
        let mut n = 0;
        for chunk in ops.chunks(100) {
            wait_prepared(&o, 0);
            write_all(&mut o.writers[0], chunk);
            n += chunk.len();
            if n >= 3000
                && o.journal.shared.shards[0]
                    .spare_wanted
                    .load(Ordering::Relaxed)
            {
                break;
            }
        }
        ops.truncate(n);
        assert!(o.journal.sealed_segments() >= 3);
        assert_eq!(o.writers[0].unprepared_rolls(), 0);
        let last = o.writers[0].written();
        assert!(o.writers[0].wait_durable(last, Duration::from_secs(10)));
        wait_prepared(&o, 0);
        copy_dir(dir.path(), "prepared-crash")
    };
    // A clean close removes the prepared segment; the copy (a crash) still has it.
    let blank = |d: &Path| {
        Listing::read(d)
            .unwrap()
            .segments
            .iter()
            .filter(|(_, p)| std::fs::read(p).unwrap()[..8] == [0; 8])
            .count()
    };
    assert_eq!(blank(dir.path()), 0);
    assert_eq!(blank(crashed.path()), 1);
    let o = Journal::open_without_compactor(crashed.path(), &small(1)).unwrap();
    assert_eq!(o.state, model(&ops));
    assert!(o.recovery.damage.is_empty(), "{:?}", o.recovery.damage);
    let sealed_before = o.journal.sealed_segments();
    let mut writers = o.writers;
    let extra = Op::Lease(lease(10_000, 200, BindingState::Active, 1));
    writers[0].append(&extra.record()).unwrap();
    // It appended to the segment it had been writing, not to a new one.
    assert_eq!(o.journal.sealed_segments(), sealed_before);
    drop(writers);
    drop(o.journal);
    let o = Journal::open(crashed.path(), &small(1)).unwrap();
    let mut all = ops.clone();
    all.push(extra);
    assert_eq!(o.state, model(&all));
}

#[test]
fn async_mode_is_durable_at_once() {
    let dir = TempDir::new("async");
    let opts = Options {
        durability: Durability::Async,
        ..small(2)
    };
    let mut o = Journal::open(dir.path(), &opts).unwrap();
    let seq = o.writers[1].append(&churn(1, 5)[0].record()).unwrap();
    assert_eq!(o.writers[1].durable(), seq);
}

#[test]
fn second_open_is_refused_with_the_pid() {
    let dir = TempDir::new("lock");
    let _o = Journal::open(dir.path(), &small(1)).unwrap();
    match Journal::open(dir.path(), &small(1)) {
        Err(Error::Locked { dir: d, pid }) => {
            assert_eq!(d, dir.path());
            assert_eq!(pid, Some(std::process::id()));
            let msg = Error::Locked { dir: d, pid }.to_string();
            assert!(msg.contains("in use") && msg.contains(&std::process::id().to_string()));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[test]
fn invalid_records_are_refused_before_writing() {
    let dir = TempDir::new("invalid");
    let mut o = Journal::open(dir.path(), &small(1)).unwrap();
    let mut l = lease(1, 1, BindingState::Active, 1);
    l.client_id = vec![0; 256].into();
    assert!(matches!(
        o.writers[0].append(&Record::Lease(l.as_record())),
        Err(Error::InvalidRecord(_))
    ));
    assert_eq!(o.writers[0].written(), 0);
}

/// Writes `ops` into a one-shard journal and returns the log segment's path and the
/// start offset of every record in it.
fn one_segment(dir: &Path, ops: &[Op]) -> (PathBuf, Vec<usize>) {
    {
        let mut o = Journal::open_without_compactor(dir, &small(1)).unwrap();
        write_all(&mut o.writers[0], ops);
    }
    let listing = Listing::read(dir).unwrap();
    let (_, path) = listing
        .segments
        .iter()
        .find(|(n, _)| n.kind == Kind::Log)
        .unwrap()
        .clone();
    let data = std::fs::read(&path).unwrap();
    let mut offsets = vec![segment::HEADER_LEN];
    segment::scan(&data, Some(1), |_, rec| {
        let last = *offsets.last().unwrap();
        offsets.push(last + segment::frame_len(rec.encoded_len().unwrap()));
    });
    offsets.pop();
    assert_eq!(offsets.len(), ops.len());
    (path, offsets)
}

/// Copies a journal directory (without its lock file) to a fresh temp dir.
fn copy_dir(from: &Path, tag: &str) -> TempDir {
    let to = TempDir::new(tag);
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "lock" {
            std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

/// Opens `dir`, checks it holds exactly the first `good` ops, and that a second open
/// finds nothing left to repair.
fn expect_recovers_to(dir: &Path, ops: &[Op], good: usize, what: &str) {
    let o = Journal::open(dir, &small(1)).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(o.state, model(&ops[..good]), "{what}");
    drop(o);
    let again = Journal::open(dir, &small(1)).unwrap();
    assert!(
        again.recovery.damage.is_empty(),
        "{what}: still damaged after repair: {:?}",
        again.recovery.damage
    );
    assert_eq!(again.state, model(&ops[..good]), "{what}: second open");
    // And appending after the repaired tail works and replays.
    let mut w = again.writers;
    let extra = Op::Lease(lease(10_000, 200, BindingState::Active, 1));
    w[0].append(&extra.record()).unwrap();
    drop(w);
    drop(again.journal);
    let o = Journal::open(dir, &small(1)).unwrap();
    let mut expect = ops[..good].to_vec();
    expect.push(extra);
    assert_eq!(o.state, model(&expect), "{what}: after a new append");
}

#[test]
fn torn_tail_at_every_byte_recovers_to_last_good_record() {
    let base = TempDir::new("torn");
    let ops = churn(40, 30);
    let (path, offsets) = one_segment(base.path(), &ops);
    let name = path.file_name().unwrap().to_owned();
    let data = std::fs::read(&path).unwrap();
    let first = offsets[offsets.len() - 3];
    let end = offsets[offsets.len() - 1]
        + segment::frame_len(ops.last().unwrap().record().encoded_len().unwrap());
    let ends: Vec<usize> = offsets[1..].iter().copied().chain([end]).collect();
    for cut in first..end {
        // A torn write: everything from `cut` on never reached the page. A record whose
        // cut-off bytes were zero anyway is still whole.
        let d = copy_dir(base.path(), "torn-zero");
        let mut bytes = data.clone();
        bytes[cut..].fill(0);
        let good = ends
            .iter()
            .take_while(|&&e| e <= cut || data[cut..e].iter().all(|&b| b == 0))
            .count();
        std::fs::write(d.path().join(&name), &bytes).unwrap();
        expect_recovers_to(d.path(), &ops, good, &format!("zeroed from {cut}"));
        // A file cut short.
        let d = copy_dir(base.path(), "torn-short");
        std::fs::write(d.path().join(&name), &data[..cut]).unwrap();
        let good = ends.iter().take_while(|&&e| e <= cut).count();
        expect_recovers_to(d.path(), &ops, good, &format!("truncated at {cut}"));
    }
}

#[test]
fn bit_flips_in_the_last_records_recover_to_last_good_record() {
    let base = TempDir::new("flip");
    let ops = churn(40, 30);
    let (path, offsets) = one_segment(base.path(), &ops);
    let name = path.file_name().unwrap().to_owned();
    let data = std::fs::read(&path).unwrap();
    let first = offsets[offsets.len() - 3];
    let end = offsets[offsets.len() - 1]
        + segment::frame_len(ops.last().unwrap().record().encoded_len().unwrap());
    for at in first..end {
        let good = offsets.iter().filter(|&&o| o <= at).count() - 1;
        let d = copy_dir(base.path(), "flip");
        let mut bytes = data.clone();
        bytes[at] ^= 1 << (at % 8);
        std::fs::write(d.path().join(&name), &bytes).unwrap();
        {
            let o = Journal::open(d.path(), &small(1)).unwrap();
            assert_eq!(o.recovery.damage.len(), 1, "flip at {at}");
            // The intact records after the damaged one are counted as dropped.
            assert_eq!(
                o.recovery.dropped_records,
                (ops.len() - good - 1) as u64,
                "flip at {at}"
            );
        }
        expect_recovers_to(d.path(), &ops, good, &format!("bit flip at {at}"));
    }
}

#[test]
fn damaged_header_is_salvaged() {
    let base = TempDir::new("header");
    let ops = churn(20, 10);
    let (path, _) = one_segment(base.path(), &ops);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[30] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let report = verify(base.path()).unwrap();
    assert!(!report.is_clean());
    expect_recovers_to(base.path(), &ops, ops.len(), "header flip");
}

#[test]
fn verify_and_dump_read_without_changing() {
    let dir = TempDir::new("tools");
    let mut ops = churn(30, 10);
    ops.push(Op::Reserve(Reservation {
        stamp: 31,
        addr: Ipv4Addr::new(192, 0, 2, 99),
        hw: HwAddr::new(1, &[2, 0, 0, 0, 0, 99]),
        client_id: Box::default(),
        host_name: b"printer".to_vec().into(),
        subscriber_kind: 1,
        subscriber: b"olt-1/1/7".to_vec().into(),
    }));
    ops.push(Op::Failover(Failover {
        stamp: 32,
        local_state: 2,
        peer_state: 3,
        mclt: 3600,
        local_stos: 1_795_000_000,
        peer_stos: 1_795_000_100,
        name: b"fo".to_vec().into(),
        data: Box::default(),
    }));
    ops.push(Op::Member(member(33, 0)));
    ops.push(Op::Member(Member {
        stamp: 34,
        class: b"line".to_vec().into(),
        value: vec![1, 0xfe].into(),
    }));
    {
        let mut o = Journal::open(dir.path(), &small(2)).unwrap();
        write_all(&mut o.writers[1], &ops);
    }
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (report.leases, report.reservations, report.members),
        (10, 1, 2)
    );
    let mut json = Vec::new();
    dump(dir.path(), Format::Json, &mut json).unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(json.contains("\"address\": \"192.0.2.1\""), "{json}");
    assert!(json.contains("\"host_name\": \"printer\""));
    assert!(json.contains(
        "{\"class\": \"line\", \"value\": \"port-0\", \"hex\": \"70:6f:72:74:2d:30\", \"stamp\": 33}"
    ));
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["members"][0]["value"], "01:fe");
    let mut text = Vec::new();
    dump(dir.path(), Format::Isc, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("lease 192.0.2.1 {\n  starts "), "{text}");
    assert!(text.contains("host printer {\n  dynamic;"));
    assert!(text.contains("subclass \"line\" \"port-0\" {\n  dynamic;\n}\n"));
    assert!(text.contains("subclass \"line\" 01:fe {\n  dynamic;\n}\n"));
    assert!(text.contains("failover peer \"fo\" state {\n  my state normal at"));
    // The ISC dump reads back to the same leases.
    let back = isc::parse_leases(&text).unwrap();
    let state = model(&ops);
    assert_eq!(back.len(), state.leases.len());
    for l in back {
        let orig = &state.leases[&l.addr];
        assert_eq!(
            Lease {
                stamp: orig.stamp,
                ..l
            },
            *orig
        );
    }
}

/// Every point of a compaction, crashed there, recovers the full state.
#[test]
fn compaction_crash_at_every_step_recovers() {
    let base = TempDir::new("compact");
    let ops = churn(3000, 120);
    {
        let mut o = Journal::open_without_compactor(base.path(), &small(1)).unwrap();
        write_all(&mut o.writers[0], &ops);
        assert!(o.journal.sealed_segments() >= 3);
    }
    let expect = model(&ops);
    let steps = [
        Some((Step::TempWritten, 0)),
        Some((Step::TempSynced, 0)),
        Some((Step::Renamed, 0)),
        Some((Step::DirSynced, 0)),
        Some((Step::Removed, 0)),
        Some((Step::Removed, 1)),
        None,
    ];
    for stop in steps {
        let d = copy_dir(base.path(), "compact-crash");
        let m = Manifest::read(d.path()).unwrap().unwrap();
        let files = Listing::read(d.path()).unwrap().shard(m.generation, 0);
        let r = replay::replay_shard(&files, false, &mut Fold::default()).unwrap();
        assert!(r.sealed.len() >= 2);
        let mut removed = 0;
        let out =
            compact::compact_shard(
                d.path(),
                m.generation,
                0,
                None,
                &r.sealed,
                &mut |s| match stop {
                    Some((at, n)) if at == s && (s != Step::Removed || removed == n) => {
                        ControlFlow::Break(())
                    }
                    _ => {
                        if s == Step::Removed {
                            removed += 1;
                        }
                        ControlFlow::Continue(())
                    }
                },
            )
            .unwrap();
        assert_eq!(out.is_some(), stop.is_none());
        let o = Journal::open(d.path(), &small(1)).unwrap();
        assert_eq!(o.state, expect, "crash at {stop:?}");
        assert!(o.recovery.damage.is_empty(), "{:?}", o.recovery.damage);
        drop(o);
        // Nothing is left over: one snapshot at most, and no temporary files.
        let l = Listing::read(d.path()).unwrap();
        assert!(l.temporary.is_empty());
        let snaps = l
            .segments
            .iter()
            .filter(|(n, _)| n.kind == Kind::Snapshot)
            .count();
        assert!(snaps <= 1, "crash at {stop:?}: {snaps} snapshots");
    }
}

/// Endless churn with the background compactor: the number of files stays bounded and
/// nothing is lost.
#[test]
fn background_compaction_bounds_disk_use() {
    let dir = TempDir::new("churn");
    let opts = Options {
        compact_interval: Duration::from_millis(5),
        ..small(2)
    };
    let ops = churn(30_000, 200);
    let mut most = 0;
    {
        let mut o = Journal::open(dir.path(), &opts).unwrap();
        for (i, chunk) in ops.chunks(1000).enumerate() {
            let w = &mut o.writers[i % 2];
            write_all(w, chunk);
            let last = w.written();
            assert!(w.wait_durable(last, Duration::from_secs(10)));
            o.journal.compact_now();
            std::thread::sleep(Duration::from_millis(2));
            most = most.max(std::fs::read_dir(dir.path()).unwrap().count());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while o.journal.sealed_segments() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(o.journal.sealed_segments(), 0);
    }
    // 30,000 records of ~100 bytes fill ~45 segments of 64 KiB; compaction keeps a
    // handful of files per shard: snapshot, open and prepared segments, and the few
    // sealed ones a compactor slowed by a loaded machine has not folded yet.
    assert!(most <= 16, "{most} files at most");
    let o = Journal::open(dir.path(), &opts).unwrap();
    assert_eq!(o.state, model(&ops));
}

#[derive(Debug, Clone)]
enum Gen {
    Lease { host: u8, state: u8, client: u8 },
    Reserve { host: u8 },
    Unreserve { host: u8 },
    Failover { state: u8 },
    Member { port: u8 },
    Unmember { port: u8 },
}

fn gen_op() -> impl Strategy<Value = (usize, Gen)> {
    let g = prop_oneof![
        6 => (0u8..24, 0u8..7, any::<u8>()).prop_map(|(host, state, client)| Gen::Lease { host, state, client }),
        1 => (0u8..24).prop_map(|host| Gen::Reserve { host }),
        1 => (0u8..24).prop_map(|host| Gen::Unreserve { host }),
        1 => (1u8..12).prop_map(|state| Gen::Failover { state }),
        1 => (0u8..6).prop_map(|port| Gen::Member { port }),
        1 => (0u8..6).prop_map(|port| Gen::Unmember { port }),
    ];
    (0usize..8, g)
}

/// A member of class "line" (or "other" for odd ports), value "port-N".
fn member(stamp: u64, port: u8) -> Member {
    Member {
        stamp,
        class: if port.is_multiple_of(2) {
            &b"line"[..]
        } else {
            b"other"
        }
        .into(),
        value: format!("port-{port}").into_bytes().into(),
    }
}

fn realize(gens: &[(usize, Gen)], first_stamp: u64) -> Vec<(usize, Op)> {
    gens.iter()
        .enumerate()
        .map(|(i, (shard, g))| {
            let stamp = first_stamp + i as u64;
            let op = match *g {
                Gen::Lease {
                    host,
                    state,
                    client,
                } => Op::Lease(lease(
                    stamp,
                    host,
                    BindingState::ALL[usize::from(state)],
                    client,
                )),
                Gen::Reserve { host } => Op::Reserve(Reservation {
                    stamp,
                    addr: Ipv4Addr::new(192, 0, 2, host),
                    hw: HwAddr::new(1, &[2, 0, 0, 0, 1, host]),
                    client_id: vec![host; usize::from(host)].into(),
                    host_name: format!("h{host}").into_bytes().into(),
                    subscriber_kind: 0,
                    subscriber: Box::default(),
                }),
                Gen::Unreserve { host } => Op::Unreserve(stamp, Ipv4Addr::new(192, 0, 2, host)),
                Gen::Failover { state } => Op::Failover(Failover {
                    stamp,
                    local_state: state,
                    peer_state: state / 2,
                    mclt: 60,
                    local_stos: stamp,
                    peer_stos: stamp,
                    name: b"peer".to_vec().into(),
                    data: vec![state; usize::from(state)].into(),
                }),
                Gen::Member { port } => Op::Member(member(stamp, port)),
                Gen::Unmember { port } => Op::Unmember(member(stamp, port)),
            };
            (*shard, op)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Replay gives exactly the state written, whatever the shard counts of the runs.
    #[test]
    fn replay_equals_written_state_across_shard_counts(
        first in proptest::collection::vec(gen_op(), 0..120),
        second in proptest::collection::vec(gen_op(), 0..120),
        n1 in 1usize..5, n2 in 1usize..5, n3 in 1usize..5,
    ) {
        let dir = TempDir::new("prop");
        let a = realize(&first, 1);
        let b = realize(&second, 1 + a.len() as u64);
        let all: Vec<Op> = a.iter().chain(&b).map(|(_, o)| o.clone()).collect();
        {
            let mut o = Journal::open(dir.path(), &small(n1)).unwrap();
            for (s, op) in &a {
                o.writers[s % n1].append(&op.record()).unwrap();
            }
        }
        {
            let mut o = Journal::open(dir.path(), &small(n2)).unwrap();
            prop_assert_eq!(&o.state, &model(&all[..a.len()]));
            prop_assert_eq!(o.writers.len(), n2);
            for (s, op) in &b {
                o.writers[s % n2].append(&op.record()).unwrap();
            }
        }
        let o = Journal::open(dir.path(), &small(n3)).unwrap();
        prop_assert_eq!(&o.state, &model(&all));
        prop_assert!(o.recovery.damage.is_empty());
    }

    /// Arbitrary bytes as a segment (bare, or behind a valid header) never panic open,
    /// verify or dump.
    #[test]
    fn arbitrary_segment_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        with_header in any::<bool>(),
        kind in prop_oneof![Just("log"), Just("snap")],
    ) {
        let dir = TempDir::new("fuzz");
        Manifest { generation: 1, shards: 1 }.write(dir.path()).unwrap();
        let mut data = Vec::new();
        if with_header {
            data.extend_from_slice(&segment::Header {
                kind: if kind == "log" { Kind::Log } else { Kind::Snapshot },
                shard: 0,
                generation: 1,
                number: 1,
                first_seq: 1,
            }.encode());
        }
        data.extend_from_slice(&bytes);
        std::fs::write(dir.path().join(format!("g000001-s000-{kind}-0000000001.seg")), &data).unwrap();
        let _ = verify(dir.path());
        let _ = dump(dir.path(), Format::Json, &mut std::io::sink());
        let _ = dump(dir.path(), Format::Isc, &mut std::io::sink());
        if let Ok(o) = Journal::open(dir.path(), &small(1)) {
            drop(o);
            let again = Journal::open(dir.path(), &small(1)).unwrap();
            prop_assert!(again.recovery.damage.is_empty());
        }
    }
}

/// A tmpfs of 1 MiB mounted for the test, unmounted on drop.
struct Tmpfs(TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.0.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn mount_tmpfs(test: &str) -> Option<Tmpfs> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: needs root to mount a tmpfs, which CI has"
        );
        eprintln!("{test}: skipped: needs root to mount a tmpfs (CI runs it as root)");
        return None;
    }
    let dir = TempDir::new(test);
    // mount(2) itself rather than mount(8): spawning a process would, between its fork
    // and exec, hold a copy of every descriptor, journal locks of other tests included.
    let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1M".as_ptr().cast(),
        )
    };
    assert_eq!(
        r,
        0,
        "{test}: mount tmpfs: {}",
        std::io::Error::last_os_error()
    );
    Some(Tmpfs(dir))
}

#[test]
fn full_disk_is_no_space_and_recovers_when_space_returns() {
    let Some(fs) = mount_tmpfs("nospace") else {
        return;
    };
    let dir = fs.0.path().join("state");
    let opts = Options {
        segment_bytes: 256 << 10,
        compact_interval: Duration::from_secs(3600),
        ..small(1)
    };
    let mut o = Journal::open(&dir, &opts).unwrap();
    // Fill what the first segment left free.
    let filler = fs.0.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let ops = churn(20_000, 250);
    let mut written = Vec::new();
    let mut refused = None;
    for op in &ops {
        match o.writers[0].append(&op.record()) {
            Ok(_) => written.push(op.clone()),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    // The segment filled, the next could not be reserved: a typed error, no SIGBUS.
    assert!(
        matches!(refused, Some(Error::NoSpace { .. })),
        "expected NoSpace, got {refused:?}"
    );
    let last = o.writers[0].written();
    assert!(o.writers[0].wait_durable(last, Duration::from_secs(10)));
    // Still refused while the disk is full, accepted once space returns.
    let next = &ops[written.len()];
    assert!(matches!(
        o.writers[0].append(&next.record()),
        Err(Error::NoSpace { .. })
    ));
    std::fs::remove_file(&filler).unwrap();
    o.writers[0].append(&next.record()).unwrap();
    written.push(next.clone());
    drop(o);
    let o = Journal::open(&dir, &opts).unwrap();
    assert_eq!(o.state, model(&written));
}

/// Reads a shard's records with a follower from `from`, as stamps.
fn follow(tail: &Tail, shard: usize, from: u64) -> (Vec<u64>, Read, u64) {
    let mut r = tail.reader(shard, from);
    let mut stamps = Vec::new();
    let mut total = Read::default();
    loop {
        let got = r.read(97, |_, rec| stamps.push(rec.stamp())).unwrap();
        total.records += got.records;
        total.lost += got.lost;
        if got.records == 0 {
            return (stamps, total, r.next());
        }
    }
}

#[test]
fn a_follower_reads_every_durable_record_in_order_across_rolls() {
    let dir = TempDir::new("tail");
    let mut o = Journal::open_without_compactor(dir.path(), &small(1)).unwrap();
    let ops = churn(2_000, 200);
    write_all(&mut o.writers[0], &ops[..1_200]);
    let tail = o.journal.tail();
    assert!(o.writers[0].wait_durable(1_200, Duration::from_secs(10)));
    let (first, read, next) = follow(&tail, 0, 1);
    assert_eq!(first, (1..=1_200).collect::<Vec<u64>>());
    assert_eq!((read.records, read.lost, next), (1_200, 0, 1_201));
    assert!(
        Listing::read(dir.path()).unwrap().segments.len() > 2,
        "spans segments"
    );
    write_all(&mut o.writers[0], &ops[1_200..]);
    assert!(o.writers[0].wait_durable(2_000, Duration::from_secs(10)));
    let (rest, _, next) = follow(&tail, 0, 1_201);
    assert_eq!(rest, (1_201..=2_000).collect::<Vec<u64>>());
    assert_eq!(next, 2_001);
    // From the middle of a segment, as after a restart.
    let (mid, _, _) = follow(&tail, 0, 777);
    assert_eq!(mid.first(), Some(&777));
    assert_eq!(mid.len(), 2_000 - 776);
}

#[test]
fn compaction_keeps_what_followers_have_not_read_within_the_hold() {
    let dir = TempDir::new("hold");
    let mut opts = small(1);
    opts.compact_interval = Duration::from_millis(20);
    opts.hold_bytes = 64 * Options::MIN_SEGMENT;
    let mut o = Journal::open(dir.path(), &opts).unwrap();
    let tail = o.journal.tail();
    tail.hold(0, 1);
    let ops = churn(3_000, 200);
    write_all(&mut o.writers[0], &ops);
    assert!(o.writers[0].wait_durable(3_000, Duration::from_secs(10)));
    o.journal.compact_now();
    std::thread::sleep(Duration::from_millis(300));
    let (all, read, _) = follow(&tail, 0, 1);
    assert_eq!(
        (all.len(), read.lost),
        (3_000, 0),
        "held from 1: nothing compacted away"
    );
    // Once read up to 2,500 the segments before it may go, and do.
    tail.hold(0, 2_500);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut read = Read::default();
    while read.lost == 0 && std::time::Instant::now() < deadline {
        o.journal.compact_now();
        std::thread::sleep(Duration::from_millis(20));
        read = follow(&tail, 0, 1).1;
    }
    assert!(read.lost > 0 && read.lost < 2_500, "compacted: {read:?}");
    let (kept, _, _) = follow(&tail, 0, 2_500);
    assert_eq!(kept.first(), Some(&2_500));
}

#[test]
fn past_its_bound_the_hold_gives_way_and_the_follower_counts_the_loss() {
    let dir = TempDir::new("overrun");
    let mut opts = small(1);
    opts.compact_interval = Duration::from_millis(20);
    opts.hold_bytes = 2 * Options::MIN_SEGMENT;
    let mut o = Journal::open(dir.path(), &opts).unwrap();
    let tail = o.journal.tail();
    tail.hold(0, 1);
    write_all(&mut o.writers[0], &churn(3_000, 200));
    assert!(o.writers[0].wait_durable(3_000, Duration::from_secs(10)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while o.journal.sealed_segments() > 3 && std::time::Instant::now() < deadline {
        o.journal.compact_now();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(o.journal.sealed_segments() <= 3, "the bound holds the log");
    let (rest, read, next) = follow(&tail, 0, 1);
    assert!(read.lost > 0, "{read:?}");
    assert_eq!(read.lost + rest.len() as u64, 3_000);
    assert_eq!(next, 3_001);
}

/// A state directory of format version 1 (MANIFEST and segment headers) opens as it is,
/// and new records go to a new segment: the old files are never written again, so a
/// version 1 binary can still tell it cannot read what came after.
#[test]
fn a_version_1_directory_opens_and_is_not_appended_to() {
    let dir = TempDir::new("v1");
    let ops = churn(300, 40);
    {
        let mut o = Journal::open_without_compactor(dir.path(), &small(1)).unwrap();
        write_all(&mut o.writers[0], &ops);
        assert!(o.writers[0].wait_durable(300, Duration::from_secs(10)));
    }
    // Turn every header and the MANIFEST back into version 1.
    let manifest = dir.path().join(replay::MANIFEST);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let body = text
        .lines()
        .filter(|l| !l.starts_with("crc32c"))
        .map(|l| {
            if l.starts_with("version") {
                "version 1"
            } else {
                l
            }
        })
        .fold(String::new(), |acc, l| acc + l + "\n");
    let crc = format!("crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
    std::fs::write(&manifest, body + &crc).unwrap();
    let mut old = Vec::new();
    for (_, path) in Listing::read(dir.path()).unwrap().segments {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        old.push((path, bytes));
    }
    let mut o = Journal::open_without_compactor(dir.path(), &small(1)).unwrap();
    assert!(o.recovery.damage.is_empty(), "{:?}", o.recovery.damage);
    assert!(o.recovery.rebuilt_manifest.is_none());
    assert_eq!(o.state, model(&ops));
    let more = churn(310, 40).split_off(300);
    write_all(&mut o.writers[0], &more);
    assert!(o.writers[0].wait_durable(310, Duration::from_secs(10)));
    drop(o);
    for (path, bytes) in old {
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{} was written to",
            path.display()
        );
    }
    let all: Vec<Op> = ops.into_iter().chain(more).collect();
    let o = Journal::open_without_compactor(dir.path(), &small(1)).unwrap();
    assert_eq!(o.state, model(&all));
}
