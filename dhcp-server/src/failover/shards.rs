//! The workers' side of failover. The link's orders reach every shard through a bounded
//! lock-free queue; each shard carries them out between two batches of packets, on its
//! own lease table, and answers on a channel. Our own lease changes come back through
//! each shard's outbox (filled by its `Committer`). No shard ever waits on the link, and
//! the link does not wait on the shards for the partner's bindings: their batches go
//! through the shards one behind the other while the link reads the next, and each
//! binding's acknowledgement is released once the shards hold it on disk.

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::warn;

use crate::config::Reservation;
use crate::journal::{DurableWatch, Lease};
use crate::runtime::stop::Stop;
use crate::runtime::store::{Committer, Outbox, Release};
use dhcp_proto::engine::{Applied, Engine};
use dhcp_proto::failover::machine::{PoolBalance, Stored, View};
use dhcp_proto::failover::message::Reject;
use dhcp_proto::failover::wire::RejectReason;

/// Orders a shard's queue holds: room for the partner's batches on their way through the
/// shard (up to its whole window of updates) besides the link's other orders.
const QUEUE: usize = 256;
/// Changes a shard may have on the way to the partner before they wait for the next
/// update request (and a log line says so).
const OUTBOX: usize = 1 << 16;
/// How long the link waits for a shard to answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// What the workers do for the failover machine. Every call is answered from the
/// shards' own tables, within a bounded wait.
pub trait Shards: Send + 'static {
    /// The rules for clients changed.
    fn view(&mut self, view: View);
    /// Journal the failover state; the machine acts on it only once it is kept.
    fn record(&mut self, stored: &Stored) -> io::Result<()>;
    /// Hand the partner's bindings (each with its xid and whether the conflict rules
    /// apply) to the workers, in order, without waiting for them: everything that came
    /// in one read goes in one batch.
    fn apply(&mut self, batch: Vec<(u32, Lease, bool)>);
    /// Per binding the workers applied and have on disk since the last call: its xid and
    /// what the shards now hold, or why it was refused.
    fn applied(&mut self, into: &mut Vec<(u32, Result<Lease, Reject>)>);
    /// Whether applied bindings wait only for the disk, which wakes nobody.
    fn waits_for_disk(&self) -> bool;
    /// Notified whenever the workers answer a batch.
    fn woken(&self) -> Arc<Notify>;
    /// The connection closed: what the workers still answer for its bindings is dropped
    /// (its xids mean nothing on the next one).
    fn forget(&mut self);
    /// The partner acknowledged our bindings up to each one's `tsfp`.
    fn acked(&mut self, leases: &[Lease]);
    /// Every binding (`all`) or those the partner has not acknowledged.
    fn collect(&mut self, all: bool) -> Vec<Lease>;
    /// Give the partner its share of the free addresses, keeping at most `ownership`
    /// percent beyond ours; what each pool held and how many moved.
    fn balance(&mut self, ownership: u8) -> Vec<PoolBalance>;
    /// Our own lease changes since the last call.
    fn changes(&mut self, into: &mut Vec<Lease>);
}

pub enum Order {
    View(View),
    /// The partner's bindings, in the order they came, each with the rules to apply.
    Apply(Arc<[(Lease, bool)]>),
    Acked(Arc<[Lease]>),
    Collect {
        all: bool,
    },
    /// Rebalance the pools, keeping at most this percent beyond our share.
    Balance(u8),
    Record(Stored),
}

/// A shard's answer to an order.
pub enum Done {
    Nothing,
    /// Per binding of the batch: what this shard holds now, if it is where it belongs;
    /// the run-time reservations the batch added or ended; and what the acknowledgements
    /// wait for: the shard's journal durable up to this sequence number.
    Applied(
        Vec<Option<Result<Lease, Reject>>>,
        Vec<ReservationChange>,
        Option<(DurableWatch, u64)>,
    ),
    Leases(Vec<Lease>),
    Balanced(Vec<PoolBalance>),
    Recorded(io::Result<()>),
}

/// Where a shard's answer to an order goes.
pub enum Reply {
    /// The link waits for it.
    Wait(mpsc::SyncSender<Done>),
    /// It joins the other shards' answers to batch `ticket`, and wakes the link.
    Later(u64, Answers),
    /// Nobody needs it.
    Ignore,
}

/// The channel the shards answer the partner's batches on.
#[derive(Clone)]
pub struct Answers {
    to: mpsc::Sender<(u64, Done)>,
    woken: Arc<Notify>,
}

impl Reply {
    fn send(self, done: Done) {
        match self {
            // The link may have given up waiting; nothing to do then.
            Reply::Wait(tx) => {
                let _ = tx.try_send(done);
            }
            Reply::Later(ticket, a) => {
                if a.to.send((ticket, done)).is_ok() {
                    a.woken.notify_one();
                }
            }
            Reply::Ignore => {}
        }
    }
}

/// A shard's end of the failover link.
pub type Orders = Arc<ArrayQueue<(Order, Reply)>>;

/// What a worker gets: the orders it carries out, the outbox its changes leave by.
pub type End = (Orders, Outbox);

/// Told of every change of the pair's rules, besides the workers.
pub type OnView = Box<dyn FnMut(&View) + Send>;

/// A run-time reservation the partner added (`Some`) or ended.
pub type ReservationChange = (Ipv4Addr, Option<Reservation>);

/// The reservation changes the partner made, for the control side's list of run-time
/// reservations.
pub type Replicated = Arc<Mutex<Vec<ReservationChange>>>;

/// The ends for `count` shards: each worker takes its `Orders` and gives its `Outbox` to
/// its committer; the link takes the `Workers`.
pub fn wire_up(count: usize, on_view: Option<OnView>, stop: Stop) -> (Vec<End>, Workers) {
    let ends: Vec<End> = (0..count)
        .map(|_| {
            (
                Arc::new(ArrayQueue::new(QUEUE)),
                Arc::new(ArrayQueue::new(OUTBOX)),
            )
        })
        .collect();
    let (to, answers) = mpsc::channel();
    let workers = Workers {
        shards: ends.clone(),
        on_view,
        replicated: Replicated::default(),
        answer: Answers {
            to,
            woken: Arc::new(Notify::new()),
        },
        answers,
        batches: VecDeque::new(),
        tickets: 0,
        stop,
    };
    (ends, workers)
}

/// In a shard's thread: carries out every waiting order.
pub fn carry_out(orders: &Orders, engine: &mut Engine, committer: &mut Committer, now: u64) {
    while let Some((order, reply)) = orders.pop() {
        let done = match order {
            Order::View(v) => {
                engine.set_failover_view(v, now);
                committer.record_all(engine, now);
                Done::Nothing
            }
            Order::Apply(batch) => {
                let mut applied = Vec::with_capacity(batch.len());
                let mut reservations = Vec::new();
                let mut last = None;
                for (lease, conflict) in batch.iter() {
                    let mut result = match engine.apply_partner(lease, *conflict, now) {
                        Applied::Elsewhere => None,
                        Applied::Here(r) => Some(r),
                    };
                    let mut kept = true;
                    if let Some((addr, r)) = engine.take_partner_reservation() {
                        match committer.journal_reservation(engine, addr, r.as_ref(), now) {
                            Ok(seq) => last = last.max(seq),
                            Err(e) => {
                                warn!("cannot journal the reservation of {addr}: {e}");
                                kept = false;
                            }
                        }
                        reservations.push((addr, r));
                    }
                    match committer.record_all(engine, now) {
                        Release::After(seq) => last = last.max(Some(seq)),
                        Release::Never => kept = false,
                        Release::Now | Release::Empty => {}
                    }
                    if !kept && matches!(result, Some(Ok(_))) {
                        result = Some(Err(not_kept("cannot journal the binding")));
                    }
                    applied.push(result);
                }
                let disk = last.and_then(|seq| committer.watch().map(|w| (w, seq)));
                Done::Applied(applied, reservations, disk)
            }
            Order::Acked(leases) => {
                for lease in leases.iter() {
                    engine.partner_acked(lease);
                }
                committer.record_all(engine, now);
                Done::Nothing
            }
            Order::Collect { all } => {
                let mut out = Vec::new();
                engine.failover_bindings(all, &mut out);
                Done::Leases(out)
            }
            Order::Balance(ownership) => {
                let pools = engine.balance_pools(ownership, now);
                committer.record_all(engine, now);
                Done::Balanced(pools)
            }
            Order::Record(s) => Done::Recorded(committer.record_failover(&s, engine, now)),
        };
        reply.send(done);
    }
}

/// The link's view of every shard.
pub struct Workers {
    shards: Vec<End>,
    on_view: Option<OnView>,
    replicated: Replicated,
    answer: Answers,
    answers: mpsc::Receiver<(u64, Done)>,
    /// The partner's batches on their way through the shards, oldest first.
    batches: VecDeque<Batch>,
    tickets: u64,
    /// The server's stop: stopping workers answer nothing more.
    stop: Stop,
}

/// One batch of the partner's bindings, as the shards' answers come in.
struct Batch {
    ticket: u64,
    xids: Vec<u32>,
    /// Per binding: what the shard it belongs to holds now.
    merged: Vec<Option<Result<Lease, Reject>>>,
    /// Shards yet to answer.
    unanswered: usize,
    /// What must be on disk before the acknowledgements go.
    disk: Vec<(DurableWatch, u64)>,
    since: Instant,
}

impl Batch {
    fn answered(&self) -> bool {
        self.unanswered == 0
    }

    fn on_disk(&self) -> bool {
        self.disk.iter().all(|(watch, seq)| watch.durable() >= *seq)
    }

    /// Per binding, what the partner is told: a shard that never answered or a journal
    /// that did not keep the binding in time leave it unacknowledged, with the reason.
    fn results(self, into: &mut Vec<(u32, Result<Lease, Reject>)>) {
        let (answered, on_disk) = (self.answered(), self.on_disk());
        for (xid, r) in self.xids.into_iter().zip(self.merged) {
            into.push((
                xid,
                match r {
                    None if !answered => Err(not_kept("a worker did not answer")),
                    None => Err(Reject::new(
                        RejectReason::IllegalIpAddr,
                        "unknown IP address",
                    )),
                    Some(Ok(_)) if !on_disk => Err(not_kept("the binding is not on disk")),
                    Some(r) => r,
                },
            ));
        }
    }
}

/// A binding this server could not keep: the partner keeps it unacknowledged.
fn not_kept(why: &str) -> Reject {
    Reject::new(RejectReason::Unknown, why)
}

/// Puts `order` on a shard's queue; a full queue empties as the shard's thread works
/// through it, unless the shard has stopped.
fn push(orders: &Orders, order: (Order, Reply), stop: &Stop) -> bool {
    let since = Instant::now();
    let mut order = order;
    loop {
        match orders.push(order) {
            Ok(()) => return true,
            Err(_) if stop.requested() || since.elapsed() > PATIENCE => {
                warn!("failover: a worker takes no more orders");
                return false;
            }
            Err(back) => {
                order = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Workers {
    /// Sends `make()` to the shards `which` selects and gathers their answers.
    fn ask(&self, which: std::ops::Range<usize>, make: impl Fn() -> Order) -> Vec<Done> {
        let (tx, rx) = mpsc::sync_channel(self.shards.len());
        let sent = self.shards[which]
            .iter()
            .filter(|(orders, _)| push(orders, (make(), Reply::Wait(tx.clone())), &self.stop))
            .count();
        drop(tx);
        let mut answers = Vec::with_capacity(sent);
        let since = Instant::now();
        while answers.len() < sent {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(d) => answers.push(d),
                // Stopping workers answer nothing more: no point waiting for them.
                Err(_) if self.stop.requested() => break,
                Err(_) if since.elapsed() > PATIENCE => {
                    warn!("failover: a worker did not answer within {PATIENCE:?}");
                    break;
                }
                Err(_) => {}
            }
        }
        answers
    }

    fn all(&self, make: impl Fn() -> Order) -> Vec<Done> {
        self.ask(0..self.shards.len(), make)
    }

    /// Where the partner's reservation changes are kept for the control side.
    pub fn replicated(&self) -> Replicated {
        self.replicated.clone()
    }

    /// Takes in the answers that came, batch by batch.
    fn gather(&mut self) {
        while let Ok((ticket, done)) = self.answers.try_recv() {
            // A batch given up on may still be answered.
            let Some(b) = self.batches.iter_mut().find(|b| b.ticket == ticket) else {
                continue;
            };
            b.unanswered -= 1;
            if let Done::Applied(per, reservations, disk) = done {
                for (slot, r) in b.merged.iter_mut().zip(per) {
                    if r.is_some() {
                        *slot = r;
                    }
                }
                self.replicated.lock().extend(reservations);
                b.disk.extend(disk);
            }
        }
    }
}

impl Shards for Workers {
    fn view(&mut self, view: View) {
        if let Some(f) = self.on_view.as_mut() {
            f(&view);
        }
        self.all(|| Order::View(view));
    }

    fn record(&mut self, stored: &Stored) -> io::Result<()> {
        // Shard 0's journal keeps the failover state; replay takes the latest.
        let s = *stored;
        match self.ask(0..1, || Order::Record(s)).pop() {
            Some(Done::Recorded(r)) => r,
            _ => Err(io::Error::other("the first worker did not answer")),
        }
    }

    fn apply(&mut self, batch: Vec<(u32, Lease, bool)>) {
        let ticket = self.tickets;
        self.tickets += 1;
        let (xids, leases): (Vec<u32>, Vec<(Lease, bool)>) =
            batch.into_iter().map(|(x, l, c)| (x, (l, c))).unzip();
        let leases: Arc<[(Lease, bool)]> = leases.into();
        // A shard that takes no more orders leaves the batch unanswered: its bindings
        // are refused once the wait runs out, not taken for addresses nobody has.
        for (orders, _) in &self.shards {
            let reply = Reply::Later(ticket, self.answer.clone());
            push(orders, (Order::Apply(leases.clone()), reply), &self.stop);
        }
        self.batches.push_back(Batch {
            ticket,
            merged: vec![None; xids.len()],
            xids,
            unanswered: self.shards.len(),
            disk: Vec::new(),
            since: Instant::now(),
        });
    }

    /// Batches leave in the order they came: the shards answer in that order, and the
    /// journal makes each shard's records durable in that order too.
    fn applied(&mut self, into: &mut Vec<(u32, Result<Lease, Reject>)>) {
        self.gather();
        while let Some(b) = self.batches.front() {
            let done = b.answered() && b.on_disk();
            if !done && b.since.elapsed() <= PATIENCE && !self.stop.requested() {
                break;
            }
            let b = self.batches.pop_front().expect("looked at above");
            if !done && !self.stop.requested() {
                warn!(
                    "failover: {} of the partner's binding updates not applied and on disk within {PATIENCE:?}: refused",
                    b.xids.len()
                );
            }
            b.results(into);
        }
    }

    fn waits_for_disk(&self) -> bool {
        self.batches.front().is_some_and(Batch::answered)
    }

    fn woken(&self) -> Arc<Notify> {
        self.answer.woken.clone()
    }

    fn forget(&mut self) {
        self.batches.clear();
    }

    fn acked(&mut self, leases: &[Lease]) {
        let leases: Arc<[Lease]> = leases.into();
        for (orders, _) in &self.shards {
            push(
                orders,
                (Order::Acked(leases.clone()), Reply::Ignore),
                &self.stop,
            );
        }
    }

    fn collect(&mut self, all: bool) -> Vec<Lease> {
        self.all(|| Order::Collect { all })
            .into_iter()
            .flat_map(|d| match d {
                Done::Leases(v) => v,
                _ => Vec::new(),
            })
            .collect()
    }

    fn balance(&mut self, ownership: u8) -> Vec<PoolBalance> {
        // Every shard reports the pools in the configuration's order.
        let mut merged: Vec<PoolBalance> = Vec::new();
        for done in self.all(|| Order::Balance(ownership)) {
            let Done::Balanced(pools) = done else {
                continue;
            };
            if merged.is_empty() {
                merged = pools;
                continue;
            }
            for (m, p) in merged.iter_mut().zip(pools) {
                m.total += p.total;
                m.ours += p.ours;
                m.theirs += p.theirs;
                m.moved += p.moved;
                m.ours_age = m.ours_age.max(p.ours_age);
                m.theirs_age = m.theirs_age.max(p.theirs_age);
            }
        }
        merged
    }

    fn changes(&mut self, into: &mut Vec<Lease>) {
        for (_, outbox) in &self.shards {
            while let Some(l) = outbox.pop() {
                into.push(l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{BindingState, HwAddr, LeaseFlags};
    use crate::runtime::shard::{Bus, Shard};
    use dhcp_proto::failover::machine::View;
    use dhcp_proto::failover::{Hba, Role, Service};
    use std::sync::atomic::{AtomicBool, Ordering};

    const NOW: u64 = 1_795_000_000;

    /// `shards` workers of a secondary with a journal in sync mode, carrying out orders
    /// on their own threads unless `paused`.
    struct Lab {
        dir: std::path::PathBuf,
        workers: Workers,
        watches: Vec<DurableWatch>,
        paused: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
        /// Its flusher makes the records durable; dropped after the workers.
        journal: Option<crate::journal::Journal>,
    }

    impl Lab {
        fn new(name: &str, shards: u16) -> Lab {
            let dir = std::env::temp_dir().join(format!("shards-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("dhcp-server.toml");
            std::fs::write(
                &path,
                format!(
                    "interfaces = [\"lan0\"]\ndurability = \"sync\"\nstate-dir = \"{}\"\n\n\
                     [failover]\nname = \"pair\"\nrole = \"secondary\"\naddress = \"198.51.100.2\"\n\
                     peer-address = \"198.51.100.1\"\n\n\
                     [[subnet]]\nsubnet = \"192.0.2.0/24\"\ninterface = \"lan0\"\n\
                     pools = [\"192.0.2.10-192.0.2.99\"]\n",
                    dir.join("state").display()
                ),
            )
            .unwrap();
            let config = crate::config::load_file(&path).unwrap();
            let mut opened = crate::runtime::store::open(&config, shards, NOW).unwrap();
            let (ends, mut workers) = wire_up(usize::from(shards), None, Stop::new());
            let paused = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let mut watches = Vec::new();
            let mut threads = Vec::new();
            let engines = std::mem::take(&mut opened.engines);
            let writers = std::mem::take(&mut opened.writers);
            let (orders, _): (Vec<_>, Vec<_>) = ends.into_iter().map(|(o, b)| (Some(o), b)).unzip();
            let buses = Bus::wire(orders);
            for ((engine, writer), bus) in engines.into_iter().zip(writers).zip(buses) {
                let writer = writer.unwrap();
                watches.push(writer.watch());
                let committer = Committer::new(Some(writer), config.durability);
                let mut shard = Shard::new(engine, committer, bus);
                let (paused, stop) = (paused.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if !paused.load(Ordering::Relaxed) {
                            shard.turn(NOW);
                        }
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }));
            }
            workers.view(View {
                role: Role::Secondary,
                service: Service::Cooperating,
                hba: Hba::split(128),
                mclt: 3600,
                stos: NOW,
                connected: true,
            });
            Lab {
                dir,
                workers,
                watches,
                paused,
                stop,
                threads,
                journal: opened.journal,
            }
        }

        /// Waits for the answers to `n` bindings.
        fn results(&mut self, n: usize) -> Vec<(u32, Result<Lease, Reject>)> {
            let mut out = Vec::new();
            let since = Instant::now();
            while out.len() < n {
                assert!(since.elapsed() < Duration::from_secs(10), "{out:?}");
                self.workers.applied(&mut out);
                std::thread::sleep(Duration::from_micros(100));
            }
            out
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
            self.journal.take();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn binding(i: u8, round: u8) -> Lease {
        Lease {
            stamp: 0,
            addr: Ipv4Addr::new(192, 0, 2, 10 + i),
            state: BindingState::Active,
            hw: HwAddr::new(1, &[2, 0, 0, 0, 0, i]),
            client_id: Box::new([]),
            agent_info: Box::new([]),
            starts: NOW,
            ends: NOW + 600 + u64::from(round),
            cltt: NOW,
            tstp: NOW + 600 + u64::from(round),
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags::default(),
        }
    }

    fn batch(round: u8) -> Vec<(u32, Lease, bool)> {
        (0..5)
            .map(|i| {
                (
                    u32::from(round) * 10 + u32::from(i),
                    binding(i, round),
                    false,
                )
            })
            .collect()
    }

    #[test]
    fn a_partners_binding_is_acknowledged_only_once_on_disk() {
        let mut lab = Lab::new("durable", 1);
        for round in 0..20u8 {
            lab.workers.apply(batch(round));
            let results = lab.results(5);
            let at_ack = lab.watches[0].durable();
            assert!(
                results.iter().all(|(_, r)| r.is_ok()),
                "round {round}: {results:?}"
            );
            // Nothing appends after the batch, so once the flusher has caught up the
            // durable sequence is all the batch wrote: the answers (the BNDACKs) must not
            // have come before it, or a crash would lose what the partner was told.
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(
                at_ack,
                lab.watches[0].durable(),
                "round {round}: acknowledged before on disk"
            );
        }
    }

    /// The link hands batches over and goes on reading: several are on their way through
    /// the shards at once, and they come back in the order they went.
    #[test]
    fn the_partners_batches_go_through_the_shards_without_the_link_waiting() {
        let mut lab = Lab::new("pipeline", 2);
        lab.paused.store(true, Ordering::Relaxed);
        let since = Instant::now();
        for round in 0..3 {
            lab.workers.apply(batch(round));
        }
        assert!(since.elapsed() < Duration::from_secs(1));
        let mut none = Vec::new();
        lab.workers.applied(&mut none);
        assert!(none.is_empty(), "answered while the workers were paused");
        lab.paused.store(false, Ordering::Relaxed);
        let results = lab.results(15);
        let xids: Vec<u32> = results.iter().map(|(x, _)| *x).collect();
        let sent: Vec<u32> = (0..3).flat_map(batch).map(|(x, _, _)| x).collect();
        assert_eq!(xids, sent);
        for (xid, r) in &results {
            let held = r.as_ref().unwrap();
            assert_eq!(u64::from(*xid / 10), held.ends - NOW - 600, "{held:?}");
        }
    }
}
