//! The lease journal as both backends use it: each shard's engine built, the journal in
//! the state directory opened with one writer per shard and replayed into the engines,
//! and, per datagram, the change appended and the reply released only once the journal
//! says it may leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::{Engine, Shard};
use crate::journal::{self, Durability, Journal, ShardWriter};

/// The shards of a server, with their journal when it has a state directory.
pub struct Shards {
    /// Kept alive while the writers are in use; dropped after them.
    pub journal: Option<Journal>,
    pub engines: Vec<Engine>,
    pub writers: Vec<Option<ShardWriter>>,
}

/// Builds `count` shard engines and, with a state directory, replays the journal into
/// them. `config` must have been validated.
pub fn open(config: &Config, count: u16, now: u64) -> Result<Shards, journal::Error> {
    let mut engines: Vec<Engine> = (0..count)
        .map(|index| {
            Engine::new_shard(config.clone(), Shard { index, count }, now)
                .expect("the configuration was validated before the backend started")
        })
        .collect();
    let Some(dir) = &config.state_dir else {
        return Ok(Shards {
            journal: None,
            engines,
            writers: (0..count).map(|_| None).collect(),
        });
    };
    let started = Instant::now();
    let opened = Journal::open(
        dir,
        &journal::Options {
            shards: usize::from(count),
            durability: config.durability,
            segment_bytes: config.journal_segment_bytes,
            ..journal::Options::default()
        },
    )?;
    let held: usize = engines
        .iter_mut()
        .map(|e| e.restore(opened.state.leases.values(), now))
        .sum();
    let r = &opened.recovery;
    tracing::info!(
        "journal {}: {} records replayed, {} active leases restored{}, in {} ms ({} durability)",
        dir.display(),
        r.records,
        held,
        r.resharded_from
            .map(|n| format!(", redistributed from {n} to {count} shards"))
            .unwrap_or_default(),
        started.elapsed().as_millis(),
        config.durability
    );
    Ok(Shards {
        journal: Some(opened.journal),
        engines,
        writers: opened.writers.into_iter().map(Some).collect(),
    })
}

/// One shard's journal as its driver sees it: appends the engine's change after each
/// datagram and says which sequence number the reply must wait for.
pub struct Committer {
    writer: Option<ShardWriter>,
    durability: Durability,
    /// Cleared while appends fail, for the control socket's status.
    healthy: Arc<AtomicBool>,
    /// When the last append failure was logged: a full disk is reported once a second,
    /// not once per client.
    complained: Option<Instant>,
}

/// What may happen to a reply once the change it announces was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Send it now.
    Now,
    /// Send it once the journal's durable sequence reaches this.
    After(u64),
    /// Do not send it: the lease could not be recorded.
    Never,
}

impl Committer {
    pub fn new(writer: Option<ShardWriter>, durability: Durability) -> Self {
        Committer {
            writer,
            durability,
            healthy: Arc::new(AtomicBool::new(true)),
            complained: None,
        }
    }

    /// Whether the last append succeeded, as other threads may read it.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    fn set_healthy(&self, ok: bool) {
        if self.healthy.load(Ordering::Relaxed) != ok {
            self.healthy.store(ok, Ordering::Relaxed);
        }
    }

    /// Records the change the engine's last `handle` made, if any, and says when its
    /// reply may leave. Offers and NAKs change nothing the journal keeps.
    pub fn record(&mut self, engine: &mut Engine, now: u64) -> Release {
        let Some(writer) = &mut self.writer else {
            return Release::Now;
        };
        let Some(rec) = engine.take_change(now) else {
            return Release::Now;
        };
        let appended = writer.append_lease(&rec);
        self.set_healthy(appended.is_ok());
        match appended {
            Ok(seq) if self.durability == Durability::Sync => Release::After(seq),
            Ok(_) => Release::Now,
            Err(e) => {
                if self
                    .complained
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                {
                    tracing::error!(
                        "cannot record the lease of {} ({e}): not acknowledging leases until the journal accepts them again",
                        rec.addr
                    );
                    self.complained = Some(Instant::now());
                }
                Release::Never
            }
        }
    }

    /// The highest sequence number on disk; everything when there is no journal.
    pub fn durable(&self) -> u64 {
        self.writer.as_ref().map_or(u64::MAX, ShardWriter::durable)
    }

    /// A descriptor that becomes readable when more records are durable.
    pub fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.writer.as_ref().map(|w| w.wakeup_fd().as_raw_fd())
    }

    pub fn clear_wakeup(&self) {
        if let Some(w) = &self.writer {
            w.clear_wakeup();
        }
    }
}
