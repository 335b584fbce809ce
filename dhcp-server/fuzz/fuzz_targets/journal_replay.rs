//! Any octets as a journal segment file, read the way a restart does (`verify` and
//! `dump` run the same replay and scan as `Journal::open`, without the repair writes):
//! never a panic, and the cut is at the last good record: the file cut there and
//! replayed again keeps every record the first replay kept and finds no damage past it.
//!
//! Random octets almost never carry a right CRC32C, so when the first input octet is odd
//! the target writes the right header CRC (and the header fields the file name implies)
//! and the right CRC into every frame it can walk: then the fuzzer reaches the record
//! decoder, which is where a segment's octets become leases. Bit 1 picks a snapshot
//! file instead of a log segment.
#![no_main]

use std::cell::RefCell;
use std::fs;
use std::path::PathBuf;

use dhcp_server::journal::{dump, verify, Format};
use libfuzzer_sys::fuzz_target;

/// Layout constants of docs/journal.md (journal/segment.rs).
const HEADER_LEN: usize = 64;
const FRAME_HEADER: usize = 16;
const ALIGN: usize = 8;
const MAX_PAYLOAD: usize = 2048;
const MAGIC: &[u8; 8] = b"DHCPJRNL";

/// One state directory per fuzzing process, reused for every input.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static DIR: RefCell<Option<Dir>> = const { RefCell::new(None) };
}

fn fix_crcs(seg: &mut [u8], snapshot: bool) {
    if seg.len() < HEADER_LEN {
        return;
    }
    seg[0..8].copy_from_slice(MAGIC);
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    seg[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    seg[16..20].copy_from_slice(&(if snapshot { 2u32 } else { 1 }).to_le_bytes());
    seg[20..24].copy_from_slice(&0u32.to_le_bytes()); // shard 0
    seg[24..32].copy_from_slice(&1u64.to_le_bytes()); // generation 1
    seg[32..40].copy_from_slice(&1u64.to_le_bytes()); // number 1
    let crc = crc32c::crc32c(&seg[..60]);
    seg[60..64].copy_from_slice(&crc.to_le_bytes());
    let mut off = HEADER_LEN;
    while off + FRAME_HEADER <= seg.len() {
        let len = u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) as usize;
        let next = (off + FRAME_HEADER + len).div_ceil(ALIGN) * ALIGN;
        if len == 0 || len > MAX_PAYLOAD || next > seg.len() {
            break;
        }
        let crc = crc32c::crc32c(&seg[off + 4..off + FRAME_HEADER + len]);
        seg[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        off = next;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, seg)) = data.split_first() else {
        return;
    };
    let snapshot = mode & 2 != 0;
    let mut seg = seg.to_vec();
    if mode & 1 != 0 {
        fix_crcs(&mut seg, snapshot);
    }
    DIR.with_borrow_mut(|dir| {
        let dir = &dir
            .get_or_insert_with(|| {
                // tmpfs when there is one: the file is written and read twice per
                // input, and a disk's page cache bookkeeping would be most of the time.
                let shm = std::path::Path::new("/dev/shm");
                let base = if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                let d = base.join(format!("journal-fuzz-{}", std::process::id()));
                let _ = fs::remove_dir_all(&d);
                fs::create_dir_all(&d).unwrap();
                Dir(d)
            })
            .0;
        let kind = if snapshot { "snap" } else { "log" };
        let file = dir.join(format!("g000001-s000-{kind}-0000000001.seg"));
        fs::write(&file, &seg).unwrap();

        let Ok(first) = verify(dir) else {
            return; // refused whole (a newer format version): nothing replayed
        };
        let [f] = &first.files[..] else {
            panic!("one file, one report: {first:?}");
        };
        assert!(f.records <= first.records);
        let mut out = Vec::new();
        dump(dir, Format::Json, &mut out).expect("a verified journal dumps");
        out.clear();
        dump(dir, Format::Isc, &mut out).expect("a verified journal dumps");

        // Cut after the good records, as repair does (it zeroes the rest; a shorter
        // file is the same to the scan), and replay again.
        let good = HEADER_LEN + usize::try_from(f.bytes).unwrap();
        if good <= seg.len() && f.records > 0 {
            fs::write(&file, &seg[..good]).unwrap();
            let second = verify(dir).expect("the cut file replays");
            let g = &second.files[0];
            assert_eq!(g.records, f.records, "{first:?} then {second:?}");
            assert_eq!(g.bytes, f.bytes);
            assert_eq!((g.dropped_records, g.dropped_bytes), (0, 0), "{second:?}");
            assert_eq!(
                (second.leases, second.reservations, second.members),
                (first.leases, first.reservations, first.members)
            );
        }
    });
});
