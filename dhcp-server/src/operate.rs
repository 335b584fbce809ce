//! The control socket's requests as a running server answers them. A question goes to
//! every shard through a bounded lock-free queue; each shard's thread answers from its
//! own lease table between two batches of frames and the answers are merged here. The
//! control thread never reads a shard's memory and no shard ever waits for it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;

use crate::config::Config;
use crate::control::{
    self, BackendKind, ControlError, JournalStatus, LeaseFilter, LeasePage, LeaseQuery, PoolStats,
    ReloadReport, ReservationSpec, Stats, Status, XdpStatus,
};
use crate::engine::{ClientRef, Engine, KeyKind, LeaseState};
use crate::journal::Durability;
use crate::shutdown;
use crate::store::Committer;

/// Questions a shard's queue holds; a full queue makes the control request fail fast.
const QUEUE: usize = 64;
/// How long the control thread waits for every shard to answer.
const PATIENCE: Duration = Duration::from_secs(2);

pub enum Ask {
    Stats,
    Leases(LeaseQuery),
    Release(Ipv4Addr),
    Delete(Ipv4Addr),
}

pub enum Told {
    Stats(Box<ShardReport>),
    Leases(Vec<control::Lease>),
    /// Whether this shard held the address the change was about.
    Done(bool),
}

/// One shard's counters, pool use and latency samples.
pub struct ShardReport {
    shard: u16,
    counters: crate::engine::Stats,
    pools: Vec<PoolStats>,
    latency: Histogram<u64>,
}

pub struct Question {
    ask: Ask,
    reply: mpsc::SyncSender<Told>,
}

/// A shard's end: where its questions arrive.
pub type Questions = Arc<ArrayQueue<Question>>;

pub fn questions() -> Questions {
    Arc::new(ArrayQueue::new(QUEUE))
}

/// Per-reply latency in nanoseconds, from the frame's pickup to the reply leaving.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds")
}

/// In a shard's thread: answers every waiting question from its own state.
pub fn answer_all(
    questions: &Questions,
    engine: &mut Engine,
    committer: &mut Committer,
    latency: &Histogram<u64>,
    now: u64,
) {
    while let Some(q) = questions.pop() {
        let told = answer(&q.ask, engine, committer, latency, now);
        // The asker may have given up; nothing to do then.
        let _ = q.reply.try_send(told);
    }
}

fn answer(
    ask: &Ask,
    engine: &mut Engine,
    committer: &mut Committer,
    latency: &Histogram<u64>,
    now: u64,
) -> Told {
    match ask {
        Ask::Stats => Told::Stats(Box::new(ShardReport {
            shard: engine.shard().index,
            counters: engine.stats().clone(),
            pools: pools(engine),
            latency: latency.clone(),
        })),
        Ask::Leases(q) => Told::Leases(leases(engine, q)),
        Ask::Release(addr) => {
            let held = engine.operator_release(*addr, now);
            committer.record(engine, now);
            Told::Done(held)
        }
        Ask::Delete(addr) => {
            let held = engine.operator_delete(*addr);
            committer.record(engine, now);
            Told::Done(held)
        }
    }
}

/// Pool use as this shard sees it; summed over shards it is the server's. Reserved
/// addresses are in every shard's table, so only shard 0 counts the idle ones.
fn pools(engine: &Engine) -> Vec<PoolStats> {
    let first = engine.shard().index == 0;
    let mut pools: Vec<PoolStats> = engine
        .config()
        .subnets
        .iter()
        .map(|s| PoolStats {
            subnet: s.net,
            total: 0,
            free: 0,
            offered: 0,
            active: 0,
            declined: 0,
        })
        .collect();
    for (_, s) in engine.leases().slots() {
        let p = &mut pools[s.subnet as usize];
        if s.state == LeaseState::Foreign || (s.reserved && !first && !s.state.held()) {
            continue;
        }
        p.total += 1;
        match s.state {
            LeaseState::Offered => p.offered += 1,
            LeaseState::Active => p.active += 1,
            LeaseState::Declined => p.declined += 1,
            _ if !s.reserved => p.free += 1,
            _ => {}
        }
    }
    pools
}

/// The leases this shard knows a client for that match the query, in address order,
/// at most one more than the page holds (so the merge knows whether there is more).
fn leases(engine: &Engine, q: &LeaseQuery) -> Vec<control::Lease> {
    let subnets = &engine.config().subnets;
    let matches = |s: &crate::engine::Slot| {
        let Some(key) = s.client.as_ref().map(|k| k.as_ref()) else {
            return false;
        };
        match &q.filter {
            None => true,
            Some(LeaseFilter::Address(a)) => s.addr == *a,
            Some(LeaseFilter::Mac(m)) => s.hlen == 6 && s.hw[..6] == m.0,
            Some(LeaseFilter::ClientId(id)) => {
                key.kind == KeyKind::ClientId && key.bytes == id.as_bytes()
            }
        }
    };
    engine
        .leases()
        .slots()
        .map(|(_, s)| s)
        .filter(|s| q.cursor.is_none_or(|c| s.addr > c))
        .filter(|s| s.state != LeaseState::Foreign && matches(s))
        .take(q.limit as usize + 1)
        .filter_map(|s| {
            let key = s.client.as_ref()?.as_ref();
            Some(control::Lease {
                address: s.addr,
                subnet: subnets[s.subnet as usize].net,
                state: control::LeaseState::from_engine(s.state)?,
                mac: (s.hlen == 6)
                    .then(|| control::MacAddr(s.hw[..6].try_into().unwrap_or_default())),
                client_id: client_id(key),
                expires: Some(s.expires).filter(|&e| e > 0),
                cltt: Some(s.cltt).filter(|&c| c > 0),
                reserved: s.reserved,
                shard: engine.shard().index,
            })
        })
        .collect()
}

fn client_id(key: ClientRef<'_>) -> Option<control::ClientId> {
    (key.kind == KeyKind::ClientId)
        .then(|| control::ClientId::new(key.bytes.to_vec()).ok())
        .flatten()
}

/// What `status` reports that does not change while the server runs.
pub struct Facts {
    pub backend: BackendKind,
    pub xdp: Option<XdpStatus>,
    pub workers: u16,
    pub interfaces: Vec<String>,
    pub journal: Option<(PathBuf, Durability)>,
}

/// The running server as the control socket sees it.
pub struct Operated {
    facts: Facts,
    started: Instant,
    ready: AtomicBool,
    shards: Vec<Questions>,
    /// Whether each shard's journal accepts appends (see `Committer::healthy`).
    journal_ok: Vec<Arc<AtomicBool>>,
}

impl Operated {
    pub fn new(facts: Facts, shards: Vec<Questions>, journal_ok: Vec<Arc<AtomicBool>>) -> Self {
        Operated {
            facts,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            shards,
            journal_ok,
        }
    }

    /// Every socket is up and the journal is replayed: status says ready from now on,
    /// and systemd (Type=notify) is told so.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        if let Err(e) = control::notify_ready() {
            tracing::warn!("cannot tell systemd the server is ready: {e}");
        }
    }

    /// The server is stopping: systemd is told.
    pub fn set_stopping(&self) {
        if let Err(e) = control::notify_stopping() {
            tracing::warn!("cannot tell systemd the server is stopping: {e}");
        }
    }

    /// Asks every shard and waits for all answers, or fails after `PATIENCE`.
    fn ask(&self, make: impl Fn() -> Ask) -> Result<Vec<Told>, ControlError> {
        let (tx, rx) = mpsc::sync_channel(self.shards.len());
        for q in &self.shards {
            q.push(Question {
                ask: make(),
                reply: tx.clone(),
            })
            .map_err(|_| {
                ControlError::Unavailable("a worker has too many requests waiting".into())
            })?;
        }
        let deadline = Instant::now() + PATIENCE;
        (0..self.shards.len())
            .map(|_| {
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .map_err(|_| {
                        ControlError::Unavailable("a worker did not answer in time".into())
                    })
            })
            .collect()
    }

    fn change(&self, ask: fn(Ipv4Addr) -> Ask, addr: Ipv4Addr) -> Result<(), ControlError> {
        let told = self.ask(|| ask(addr))?;
        if told.iter().any(|t| matches!(t, Told::Done(true))) {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!("no lease for {addr}")))
        }
    }
}

impl control::Server for Operated {
    fn status(&self) -> Status {
        Status {
            ready: self.ready.load(Ordering::SeqCst),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.started.elapsed().as_secs(),
            backend: self.facts.backend,
            xdp: self.facts.xdp,
            workers: self.facts.workers,
            interfaces: self.facts.interfaces.clone(),
            journal: self.facts.journal.as_ref().map(|(dir, durability)| {
                let healthy = self.journal_ok.iter().all(|ok| ok.load(Ordering::Relaxed));
                JournalStatus {
                    dir: dir.clone(),
                    durability: *durability,
                    healthy,
                    error: (!healthy).then(|| {
                        "a worker cannot append to its journal: disk full or failing".into()
                    }),
                }
            }),
        }
    }

    fn stats(&self) -> Result<Stats, ControlError> {
        let mut stats = Stats::default();
        let mut latency = latency_histogram();
        let mut reports: Vec<ShardReport> = self
            .ask(|| Ask::Stats)?
            .into_iter()
            .filter_map(|told| match told {
                Told::Stats(report) => Some(*report),
                _ => None,
            })
            .collect();
        // Answers arrive in whatever order the shards got to them.
        reports.sort_by_key(|r| r.shard);
        for report in reports {
            let ShardReport {
                shard,
                counters,
                pools,
                latency: h,
            } = report;
            stats.add_shard(shard, &counters);
            if stats.pools.is_empty() {
                stats.pools = pools;
            } else {
                for (sum, p) in stats.pools.iter_mut().zip(pools) {
                    sum.total += p.total;
                    sum.free += p.free;
                    sum.offered += p.offered;
                    sum.active += p.active;
                    sum.declined += p.declined;
                }
            }
            let _ = latency.add(&h);
        }
        let us = |q: f64| latency.value_at_quantile(q).div_ceil(1000);
        stats.latency = control::Latency {
            samples: latency.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: latency.max().div_ceil(1000),
        };
        Ok(stats)
    }

    fn leases(&self, query: LeaseQuery) -> Result<LeasePage, ControlError> {
        let limit = query.limit as usize;
        let mut all: Vec<control::Lease> = Vec::new();
        for told in self.ask(|| Ask::Leases(query.clone()))? {
            if let Told::Leases(l) = told {
                all.extend(l);
            }
        }
        all.sort_by_key(|l| l.address);
        let more = all.len() > limit;
        all.truncate(limit);
        Ok(LeasePage {
            next_cursor: more.then(|| all.last().map(|l| l.address)).flatten(),
            leases: all,
        })
    }

    fn reservation_add(&self, _spec: ReservationSpec) -> Result<(), ControlError> {
        Err(ControlError::Unsupported(
            "reservations are changed in the configuration file for now".into(),
        ))
    }

    fn reservation_del(&self, _address: Ipv4Addr) -> Result<(), ControlError> {
        Err(ControlError::Unsupported(
            "reservations are changed in the configuration file for now".into(),
        ))
    }

    fn lease_release(&self, address: Ipv4Addr) -> Result<(), ControlError> {
        self.change(Ask::Release, address)
    }

    fn lease_delete(&self, address: Ipv4Addr) -> Result<(), ControlError> {
        self.change(Ask::Delete, address)
    }

    fn reload(&self) -> Result<ReloadReport, ControlError> {
        Err(ControlError::Unsupported(
            "reload is not available yet: restart the server to apply a new configuration".into(),
        ))
    }

    fn shutdown(&self) {
        shutdown::request();
    }
}

/// Starts the control socket when the configuration names one.
pub fn start_control(
    config: &Config,
    operated: Arc<Operated>,
) -> Result<Option<control::Handle>, control::ServeError> {
    let Some(path) = &config.control_socket else {
        return Ok(None);
    };
    let options = control::Options {
        access: control::AccessList {
            uids: config.control_uids.clone(),
            gids: config.control_gids.clone(),
        },
        metrics_listen: config.metrics_listen,
        ..control::Options::default()
    };
    let handle = control::serve(path, options, operated)?;
    tracing::info!("control socket listening on {}", path.display());
    Ok(Some(handle))
}
