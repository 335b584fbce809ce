//! The control socket's requests as a running server answers them. A question goes to
//! every shard through a bounded lock-free queue; each shard's thread answers from its
//! own lease table between two batches of frames and the answers are merged here. The
//! control thread never reads a shard's memory and no shard ever waits for it.
//!
//! Changes that take several rounds of questions (reservations, class members, reload:
//! `changes`) are made one at a time, under a lock only the control side takes.

pub(crate) mod changes;
pub mod report;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;

use super::env::Env;
use super::store::{Committer, Members};
use super::BulkCounters;
use crate::config::reserve::Runtime;
use crate::config::{Config, Reservation};
use crate::control::{
    self, BackendKind, ClassMember, ConfigStatus, ControlError, JournalStatus, LeaseFilter,
    LeasePage, MemberPage, MemberQuery, PageQuery, PoolStats, ReloadReport, ReservationCounts,
    ReservationPage, ReservationSpec, Stats, Status, XdpStatus,
};
use crate::journal::{Durability, DurableWatch};
use dhcp_proto::engine::{ClientRef, Engine, KeyKind, LeaseState, NotMember, SlotId};
use dhcp_proto::leasequery::{Binding, Key};

/// Questions a shard's queue holds; a full queue makes the control request fail fast.
const QUEUE: usize = 64;
/// How long the control thread waits for every shard to answer.
const PATIENCE: Duration = Duration::from_secs(2);

pub enum Ask {
    Stats,
    Leases(PageQuery),
    Release(Ipv4Addr),
    Delete(Ipv4Addr),
    /// Add a run-time reservation, unless this shard has the address offered or leased
    /// to another client.
    Reserve(Box<Reservation>),
    /// End the run-time reservation of an address: `Done(kept)`.
    Unreserve(Ipv4Addr),
    /// Journal a run-time change (a reservation, a class member): one shard writes it.
    Journal(Change),
    /// Take pool addresses whose reservation ended and that no shard kept.
    Adopt(Vec<Ipv4Addr>),
    /// Tell the failover partner a run-time reservation ended: this shard holds it.
    TellUnreserved(Ipv4Addr),
    /// Run with a reloaded configuration: `Kept` the addresses no longer reserved.
    Reconfigure(Arc<dhcp_proto::policy::Policy>),
    /// List a member value in a matching class: `Done(true)`, or `NotMember`.
    AddMember(ClassMember),
    /// End a member added at run time: `Done(true)`, or `NotMember`.
    RemoveMember(ClassMember),
    /// Bulk leasequery: the bindings that answer a key found by index (an address, a
    /// client): `Bindings` with no next slot.
    Find(Arc<Key>),
    /// Bulk leasequery: one bounded step through this shard's table (see
    /// `Engine::scan_slots`): `Bindings` and where the next step starts.
    Scan {
        key: Arc<Key>,
        from: SlotId,
        slots: usize,
    },
}

/// A change made at run time that the journal keeps, as the control side hands it to the
/// one shard that writes it.
pub enum Change {
    /// The reservation of an address added (`Some`) or removed.
    Reservation(Ipv4Addr, Option<Box<Reservation>>),
    /// A class member added (`true`) or removed.
    Member(Box<ClassMember>, bool),
}

pub enum Told {
    Stats(Box<ShardReport>),
    Leases(Vec<control::Lease>),
    /// Whether this shard held the address the change was about.
    Done(bool),
    /// A reservation this shard cannot take, and why.
    Refused(String),
    /// The sequence number of the journal record to wait for (`None` without a journal),
    /// or why it could not be written.
    Journaled(Result<Option<u64>, String>),
    /// Addresses no longer reserved that this shard kept.
    Kept(Vec<Ipv4Addr>),
    /// A class member this shard cannot add or remove, and why.
    NotMember(NotMember),
    /// Bindings for a bulk leasequery, and the slot its next step starts from.
    Bindings(Vec<Binding>, Option<SlotId>),
}

/// One shard's counters, pool use and latency samples.
pub struct ShardReport {
    shard: u16,
    counters: dhcp_proto::engine::Stats,
    pools: Vec<PoolStats>,
    latency: Histogram<u64>,
}

pub struct Question {
    ask: Ask,
    reply: Reply,
}

/// Where a shard's answer goes: to a control thread that waits for it, or to a task
/// (bulk leasequery) that awaits it without holding a thread.
enum Reply {
    Wait(mpsc::SyncSender<Told>),
    Await(tokio::sync::oneshot::Sender<Told>),
}

impl Question {
    /// A question whose answer a task awaits.
    pub fn awaited(ask: Ask) -> (Question, tokio::sync::oneshot::Receiver<Told>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let q = Question {
            ask,
            reply: Reply::Await(tx),
        };
        (q, rx)
    }
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
        match q.reply {
            Reply::Wait(tx) => {
                let _ = tx.try_send(told);
            }
            Reply::Await(tx) => {
                let _ = tx.send(told);
            }
        }
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
        Ask::Reserve(r) => match engine.add_reservation((**r).clone(), now) {
            Ok(()) => {
                // One shard tells the failover partner, which reserves it too.
                if engine.shard().index == 0 {
                    if let Some(lease) = engine.reservation_binding(r) {
                        committer.tell_partner(lease);
                    }
                }
                Told::Done(true)
            }
            Err(why) => Told::Refused(why.to_string()),
        },
        Ask::Unreserve(addr) => Told::Done(engine.remove_reservation(*addr).unwrap_or(false)),
        Ask::Journal(Change::Reservation(addr, r)) => {
            Told::Journaled(committer.journal_reservation(engine, *addr, r.as_deref(), now))
        }
        Ask::Journal(Change::Member(m, added)) => {
            Told::Journaled(committer.journal_member(engine, m, *added, now))
        }
        Ask::Adopt(addrs) => {
            engine.leases_mut().adopt(addrs);
            Told::Done(true)
        }
        Ask::TellUnreserved(addr) => {
            let binding = engine.unreservation_binding(*addr);
            let told = binding.is_some();
            if let Some(lease) = binding {
                committer.tell_partner(lease);
            }
            Told::Done(told)
        }
        Ask::Reconfigure(policy) => Told::Kept(engine.reconfigure(Arc::clone(policy))),
        Ask::AddMember(m) => member_done(engine.add_class_member(&m.class, &m.value)),
        Ask::RemoveMember(m) => member_done(engine.remove_class_member(&m.class, &m.value)),
        Ask::Find(key) => {
            let mut found = Vec::new();
            engine.bindings(key, &mut found);
            Told::Bindings(found, None)
        }
        Ask::Scan { key, from, slots } => {
            let mut found = Vec::new();
            let next = engine.scan_slots(key, *from, *slots, &mut found);
            Told::Bindings(found, next)
        }
    }
}

fn member_done(done: Result<(), NotMember>) -> Told {
    match done {
        Ok(()) => Told::Done(true),
        Err(why) => Told::NotMember(why),
    }
}

/// Pool use as this shard sees it; summed over shards it is the server's. Reserved
/// addresses are in every shard's table, so only shard 0 counts the idle ones.
fn pools(engine: &Engine) -> Vec<PoolStats> {
    let first = engine.shard().index == 0;
    let mut pools: Vec<PoolStats> = engine
        .policy()
        .subnets
        .iter()
        .map(|s| PoolStats {
            subnet: s.net,
            total: 0,
            free: 0,
            offered: 0,
            active: 0,
            declined: 0,
            partner: 0,
        })
        .collect();
    for (_, s) in engine.leases().slots() {
        let p = &mut pools[s.subnet as usize];
        if s.state == LeaseState::Foreign
            || (s.reserved && !first && !s.state.held())
            || (!s.reserved && !s.pooled() && !s.state.held())
        {
            continue;
        }
        p.total += 1;
        match s.state {
            LeaseState::Offered => p.offered += 1,
            LeaseState::Active => p.active += 1,
            LeaseState::Declined => p.declined += 1,
            LeaseState::Partner => p.partner += 1,
            _ if !s.reserved && s.pooled() => p.free += 1,
            _ => {}
        }
    }
    pools
}

/// The leases this shard knows a client for that match the query, in address order,
/// at most one more than the page holds (so the merge knows whether there is more).
fn leases(engine: &Engine, q: &PageQuery) -> Vec<control::Lease> {
    let subnets = &engine.policy().subnets;
    let matches = |s: &dhcp_proto::engine::Slot| {
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
                state: report::lease_state(s.state)?,
                mac: (s.hlen == 6)
                    .then(|| control::MacAddr(s.hw[..6].try_into().unwrap_or_default())),
                client_id: client_id(key),
                expires: Some(s.expires).filter(|&e| e > 0),
                cltt: Some(s.cltt).filter(|&c| c > 0),
                reserved: s.reserved,
                shard: engine.shard().index,
                relay: s.agent.as_deref().map(control::RelayInfo::from_option),
            })
        })
        .collect()
}

fn client_id(key: ClientRef<'_>) -> Option<control::ClientId> {
    (key.kind == KeyKind::ClientId)
        .then(|| control::ClientId::new(key.bytes.to_vec()).ok())
        .flatten()
}

/// The configuration file the server was started with, for `reload` and SIGHUP; unset
/// when it was started from flags.
pub struct Facts {
    pub backend: BackendKind,
    pub xdp: Option<XdpStatus>,
    /// The XDP program's counters, with the XDP backend.
    pub counters: Option<super::BackendCounters>,
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
    /// Each shard's durable journal sequence, to wait for a record it appended.
    durable: Vec<Option<DurableWatch>>,
    /// What the reservations and reloads change; one change at a time.
    changes: Mutex<Registry>,
    /// For `status` without taking `changes`: reservation counts and load time.
    file_reservations: AtomicU64,
    control_reservations: AtomicU64,
    loaded: AtomicU64,
    /// The failover link, when the server has a partner.
    failover: Option<crate::failover::link::Handle>,
    /// The bulk leasequery listener's counters, when it listens.
    bulk: Option<BulkCounters>,
    /// The lease history's followers, once started.
    history: std::sync::OnceLock<Vec<Arc<crate::history::Status>>>,
    env: Env,
}

/// The configuration the shards run with and the run-time reservations and class members
/// they apply.
struct Registry {
    config: Config,
    runtime: Runtime,
    members: Members,
}

/// What `Operated` needs to change the running server: its configuration, the run-time
/// reservations and class members the journal held, each shard's durable journal
/// sequence.
pub struct Running {
    pub config: Config,
    pub reservations: Runtime,
    pub members: Members,
    pub durable: Vec<Option<DurableWatch>>,
}

impl Operated {
    pub fn new(
        facts: Facts,
        shards: Vec<Questions>,
        journal_ok: Vec<Arc<AtomicBool>>,
        env: Env,
    ) -> Self {
        let count = shards.len();
        Operated {
            facts,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            shards,
            journal_ok,
            durable: vec![None; count],
            changes: Mutex::new(Registry {
                config: Config::default(),
                runtime: Runtime::new(),
                members: Members::new(),
            }),
            file_reservations: AtomicU64::new(0),
            control_reservations: AtomicU64::new(0),
            loaded: AtomicU64::new(env.clock.now()),
            failover: None,
            bulk: None,
            history: std::sync::OnceLock::new(),
            env,
        }
    }

    /// Lets the operator change reservations and reload `running.config`.
    pub fn running(mut self, running: Running) -> Self {
        self.durable = running.durable;
        self.durable.resize(self.shards.len(), None);
        let registry = Registry {
            config: running.config,
            runtime: running.reservations,
            members: running.members,
        };
        self.count(&registry);
        self.changes = Mutex::new(registry);
        self
    }

    fn count(&self, r: &Registry) {
        let file: usize = r
            .config
            .policy
            .subnets
            .iter()
            .map(|s| s.reservations.len())
            .sum();
        self.file_reservations.store(file as u64, Ordering::Relaxed);
        self.control_reservations
            .store(r.runtime.len() as u64, Ordering::Relaxed);
    }

    /// The failover link's handle, when the server has a partner: `status` shows the
    /// partnership and the failover commands reach the link.
    pub fn with_failover(mut self, link: Option<crate::failover::link::Handle>) -> Self {
        self.failover = link;
        self
    }

    /// The bulk leasequery listener's counters, for `stats` and the metrics.
    pub fn with_bulk(mut self, counters: Option<BulkCounters>) -> Self {
        self.bulk = counters;
        self
    }

    /// The lease history's followers started: `status` and the metrics show each sink.
    pub fn set_history(&self, statuses: Vec<Arc<crate::history::Status>>) {
        let _ = self.history.set(statuses);
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
                reply: Reply::Wait(tx.clone()),
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

    /// Asks one shard and waits for its answer, or fails after `PATIENCE`.
    fn ask_one(&self, shard: usize, ask: Ask) -> Result<Told, ControlError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.shards[shard]
            .push(Question {
                ask,
                reply: Reply::Wait(tx),
            })
            .map_err(|_| {
                ControlError::Unavailable("a worker has too many requests waiting".into())
            })?;
        rx.recv_timeout(PATIENCE)
            .map_err(|_| ControlError::Unavailable("a worker did not answer in time".into()))
    }

    /// Asks every shard a question that must reach them all (a change each applies): a
    /// full queue is retried until `PATIENCE` rather than failing at once, since the
    /// shards asked before it would be changed already. Answers by shard index.
    fn ask_every(&self, make: impl Fn() -> Ask) -> Result<Vec<Told>, ControlError> {
        let deadline = Instant::now() + PATIENCE;
        let mut waiting = Vec::with_capacity(self.shards.len());
        for (i, q) in self.shards.iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(1);
            let mut question = Question {
                ask: make(),
                reply: Reply::Wait(tx),
            };
            while let Err(back) = q.push(question) {
                if Instant::now() >= deadline {
                    return Err(ControlError::Unavailable(format!(
                        "worker {i} has too many requests waiting, so the change reached only the workers before it: restart the server if this does not clear"
                    )));
                }
                question = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            waiting.push(rx);
        }
        let deadline = Instant::now() + PATIENCE;
        waiting
            .into_iter()
            .map(|rx| {
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .map_err(|_| {
                        ControlError::Unavailable(
                            "a worker did not answer in time; the change may be applied in part"
                                .into(),
                        )
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
            reservations: ReservationCounts {
                file: self.file_reservations.load(Ordering::Relaxed),
                control: self.control_reservations.load(Ordering::Relaxed),
            },
            config: ConfigStatus {
                file: self.env.config_file.clone(),
                loaded: self.loaded.load(Ordering::Relaxed),
            },
            // The link's latest snapshot: no request waits on the link.
            failover: self
                .failover
                .as_ref()
                .and_then(|link| link.latest.lock().as_ref().map(report::failover_status)),
            history: self
                .history
                .get()
                .map(|all| all.iter().map(|s| report::sink_status(s)).collect())
                .unwrap_or_default(),
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
            report::add_shard(&mut stats, shard, &counters);
            if stats.pools.is_empty() {
                stats.pools = pools;
            } else {
                for (sum, p) in stats.pools.iter_mut().zip(pools) {
                    sum.total += p.total;
                    sum.free += p.free;
                    sum.offered += p.offered;
                    sum.active += p.active;
                    sum.declined += p.declined;
                    sum.partner += p.partner;
                }
            }
            let _ = latency.add(&h);
        }
        stats.bulk_leasequery = self.bulk.as_ref().map(|read| read());
        if let Some(link) = &self.failover {
            stats.refused.insert("failover".into(), link.refused());
        }
        if let Some(read) = &self.facts.counters {
            let counters = read()
                .into_iter()
                .map(|(name, n)| (name.to_owned(), n))
                .collect();
            match self.facts.backend {
                control::BackendKind::Udp => stats.udp = counters,
                _ => stats.xdp = counters,
            }
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

    fn leases(&self, query: PageQuery) -> Result<LeasePage, ControlError> {
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

    fn reservation_add(&self, spec: ReservationSpec) -> Result<(), ControlError> {
        self.add_reservation(spec)
    }

    fn reservation_del(&self, address: Ipv4Addr) -> Result<(), ControlError> {
        self.del_reservation(address)
    }

    fn reservations(&self, query: PageQuery) -> Result<ReservationPage, ControlError> {
        Ok(self.list_reservations(&query))
    }

    fn class_members(&self, query: MemberQuery) -> Result<MemberPage, ControlError> {
        self.list_members(&query)
    }

    fn class_member_add(&self, member: ClassMember) -> Result<(), ControlError> {
        self.add_member(member)
    }

    fn class_member_del(&self, member: ClassMember) -> Result<(), ControlError> {
        self.del_member(member)
    }

    fn lease_release(&self, address: Ipv4Addr) -> Result<(), ControlError> {
        self.change(Ask::Release, address)
    }

    fn lease_delete(&self, address: Ipv4Addr) -> Result<(), ControlError> {
        self.change(Ask::Delete, address)
    }

    fn reload(&self) -> Result<ReloadReport, ControlError> {
        self.reload_file()
    }

    fn shutdown(&self) {
        self.env.stop.request();
    }

    fn failover_partner_down(&self) -> control::Pending<()> {
        let Some(link) = self.failover.clone() else {
            return control::no_partner();
        };
        // The machine refuses only while the partner is connected and normal.
        Box::pin(async move {
            link.partner_down()
                .await
                .map_err(|e| ControlError::Conflict(e.to_string()))
        })
    }

    fn failover_resync(&self) -> control::Pending<()> {
        let Some(link) = self.failover.clone() else {
            return control::no_partner();
        };
        // The machine refuses only while the partner is not connected: retry later.
        Box::pin(async move {
            link.resync()
                .await
                .map_err(|e| ControlError::Unavailable(e.to_string()))
        })
    }
}

/// Starts the operator interface: the control socket when the configuration names one
/// (its file owned by `socket_group` when given), and the reload on SIGHUP.
pub fn start_control(
    config: &Config,
    operated: Arc<Operated>,
    socket_group: Option<u32>,
) -> Result<Option<control::Handle>, control::ServeError> {
    changes::watch_sighup(operated.clone());
    let Some(path) = &config.control_socket else {
        return Ok(None);
    };
    let options = control::Options {
        access: control::AccessList {
            uids: config.control_uids.clone(),
            gids: config.control_gids.clone(),
        },
        metrics_listen: config.metrics_listen,
        metrics_allow: config.metrics_allow.clone(),
        socket_group,
        ..control::Options::default()
    };
    let handle = control::serve(path, options, operated)?;
    tracing::info!("control socket listening on {}", path.display());
    Ok(Some(handle))
}
