//! Followers' view of the journal: each shard's durable log records read from a
//! sequence number on, through read-only mappings of the segment files, without
//! touching the writers (the lease history follows the journal this way). A follower
//! says how far it has got (`hold`), and compaction keeps the log segments it has not
//! read yet, up to a bound past which it warns and compacts anyway.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dhcp_proto::lease::Record;

use super::error::Result;
use super::replay::Listing;
use super::segment::{self, Header, Mapped, HEADER_LEN};
use super::writer::Shared;

/// A handle on a running journal for followers; cheap to clone.
#[derive(Clone)]
pub struct Tail {
    shared: Arc<Shared>,
}

/// What a read found besides records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Read {
    /// Records delivered to the callback.
    pub records: u64,
    /// Records between the position asked for and the oldest the journal still has:
    /// compacted before the follower read them (its hold was exceeded), never to be read.
    pub lost: u64,
}

impl Tail {
    pub(super) fn new(shared: Arc<Shared>) -> Tail {
        Tail { shared }
    }

    /// The state directory's identity: positions in another journal do not apply.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The journal's generation: positions in another one do not apply.
    pub fn generation(&self) -> u64 {
        self.shared.generation
    }

    pub fn shards(&self) -> usize {
        self.shared.shards.len()
    }

    /// The sequence number of the shard's last durable record.
    pub fn durable(&self, shard: usize) -> u64 {
        self.shared.shards[shard].durable.load(Ordering::Acquire)
    }

    /// Keeps the shard's log records from `next` on out of compaction (the slowest
    /// follower's position; `u64::MAX` lets everything go).
    pub fn hold(&self, shard: usize, next: u64) {
        self.shared.shards[shard]
            .hold
            .store(next, Ordering::Release);
    }

    /// A reader of one shard's records, starting at `next`.
    pub fn reader(&self, shard: usize, next: u64) -> ShardReader {
        ShardReader {
            shared: Arc::clone(&self.shared),
            shard: shard as u32,
            next: next.max(1),
            open: None,
        }
    }
}

/// The segment a reader is in and where.
struct Open {
    number: u64,
    map: Mapped,
    offset: usize,
}

/// Reads one shard's log in order. Records are handed out only once durable.
pub struct ShardReader {
    shared: Arc<Shared>,
    shard: u32,
    /// The sequence number of the next record to hand out.
    next: u64,
    open: Option<Open>,
}

impl ShardReader {
    /// The sequence number of the next record `read` hands out.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Hands at most `max` durable records from `next()` on to `each` (borrowed from
    /// the mapping: copy what must outlive the call).
    pub fn read(&mut self, max: u64, mut each: impl FnMut(u64, Record<'_>)) -> Result<Read> {
        let durable = self.shared.shards[self.shard as usize]
            .durable
            .load(Ordering::Acquire);
        let mut read = Read::default();
        while read.records < max && self.next <= durable {
            if self.open.is_none() {
                read.lost += self.find()?;
                if self.open.is_none() {
                    break;
                }
            }
            let Some(open) = self.open.as_mut() else {
                break;
            };
            let data = open.map.bytes();
            let frame = data
                .get(open.offset..open.offset + segment::FRAME_HEADER)
                .filter(|h| h.iter().any(|&b| b != 0))
                .and_then(|_| segment::frame_at(data, open.offset).ok());
            match frame {
                Some((seq, payload, next)) if seq == self.next => {
                    open.offset = next;
                    self.next += 1;
                    // A record that does not decode was cut as damage at open, or is
                    // one a newer writer added: step over it.
                    if let Ok(rec) = super::record::decode(payload) {
                        each(seq, rec);
                    }
                    read.records += 1;
                }
                Some((seq, _, next)) if seq < self.next => open.offset = next,
                // The end of this segment's records: the next one is in the next file.
                _ => {
                    let number = open.number + 1;
                    self.open = self.segment(number)?;
                    if self.open.is_none() {
                        // Not listed yet (the roll is under way): look again next time.
                        break;
                    }
                }
            }
        }
        Ok(read)
    }

    /// Opens the segment holding `next`: the last log segment starting at or before it,
    /// or, when compaction removed those, the oldest one (returning how many records
    /// were skipped).
    fn find(&mut self) -> Result<u64> {
        let mut chosen: Option<(Open, u64)> = None;
        for (number, path) in self.logs()? {
            let map = Mapped::open(&path)?;
            let Ok(h) = Header::decode(map.bytes()) else {
                continue;
            };
            let past = h.first_seq > self.next;
            if chosen.is_none() || !past {
                let offset = HEADER_LEN;
                chosen = Some((
                    Open {
                        number,
                        map,
                        offset,
                    },
                    h.first_seq,
                ));
            }
            if past {
                break;
            }
        }
        let Some((open, first)) = chosen else {
            return Ok(0);
        };
        let lost = first.saturating_sub(self.next);
        self.next = self.next.max(first);
        self.open = Some(open);
        Ok(lost)
    }

    /// The log segment `number` of this shard, when it exists with a good header.
    fn segment(&self, number: u64) -> Result<Option<Open>> {
        let Some((_, path)) = self.logs()?.into_iter().find(|(n, _)| *n == number) else {
            return Ok(None);
        };
        let map = Mapped::open(&path)?;
        if Header::decode(map.bytes()).is_err() {
            // Prepared but not yet written into: its header comes with the roll.
            return Ok(None);
        }
        Ok(Some(Open {
            number,
            map,
            offset: HEADER_LEN,
        }))
    }

    /// This shard's log segments of the current generation, in number order.
    fn logs(&self) -> Result<Vec<(u64, PathBuf)>> {
        let files = Listing::read(&self.shared.dir)?.shard(self.shared.generation, self.shard);
        Ok(files
            .logs
            .into_iter()
            .map(|(name, path)| (name.number, path))
            .collect())
    }
}
