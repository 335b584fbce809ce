//! The workers' side of failover. The link's orders reach every shard through a bounded
//! lock-free queue; each shard carries them out between two batches of packets, on its
//! own lease table, and answers on a channel. Our own lease changes come back through
//! each shard's outbox (filled by its `Committer`). No shard ever waits on the link.

use std::io;
use std::net::Ipv4Addr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;
use tracing::warn;

use super::link::Shards;
use super::machine::{PoolBalance, Stored, View};
use super::message::Reject;
use super::wire::RejectReason;
use crate::config::Reservation;
use crate::engine::{Applied, Engine};
use crate::journal::{FailoverRecord, Lease};
use crate::store::{Committer, Outbox};

/// Orders a shard's queue holds; the link sends one at a time per shard.
const QUEUE: usize = 16;
/// Changes a shard may have on the way to the partner before they wait for the next
/// update request (and a log line says so).
const OUTBOX: usize = 1 << 16;
/// How long the link waits for a shard to answer.
const PATIENCE: Duration = Duration::from_secs(5);

pub enum Order {
    View(View),
    /// The partner's bindings, in the order they came, each with the rules to apply.
    Apply(Vec<(Lease, bool)>),
    Acked(Vec<Lease>),
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
    /// and the run-time reservations the batch added or ended.
    Applied(Vec<Option<Result<Lease, Reject>>>, Vec<ReservationChange>),
    Leases(Vec<Lease>),
    Balanced(Vec<PoolBalance>),
    Recorded(io::Result<()>),
}

/// A shard's end of the failover link.
pub type Orders = Arc<ArrayQueue<(Order, mpsc::SyncSender<Done>)>>;

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
pub fn wire_up(count: usize, on_view: Option<OnView>) -> (Vec<End>, Workers) {
    let ends: Vec<End> = (0..count)
        .map(|_| {
            (
                Arc::new(ArrayQueue::new(QUEUE)),
                Arc::new(ArrayQueue::new(OUTBOX)),
            )
        })
        .collect();
    let workers = Workers {
        shards: ends.clone(),
        on_view,
        replicated: Replicated::default(),
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
                for (lease, conflict) in batch {
                    applied.push(match engine.apply_partner(&lease, conflict, now) {
                        Applied::Elsewhere => None,
                        Applied::Here(r) => Some(r),
                    });
                    if let Some((addr, r)) = engine.take_partner_reservation() {
                        if let Err(e) = crate::operate::changes::journal(
                            engine,
                            committer,
                            addr,
                            r.as_ref(),
                            now,
                        ) {
                            warn!("cannot journal the reservation of {addr}: {e}");
                        }
                        reservations.push((addr, r));
                    }
                    committer.record_all(engine, now);
                }
                Done::Applied(applied, reservations)
            }
            Order::Acked(leases) => {
                for lease in &leases {
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
        // The link may have given up waiting; nothing to do then.
        let _ = reply.try_send(done);
    }
}

/// The link's view of every shard.
pub struct Workers {
    shards: Vec<End>,
    on_view: Option<OnView>,
    replicated: Replicated,
}

impl Workers {
    /// Sends `make()` to the shards `which` selects and gathers their answers.
    fn ask(&self, which: std::ops::Range<usize>, make: impl Fn() -> Order) -> Vec<Done> {
        let (tx, rx) = mpsc::sync_channel(self.shards.len());
        let mut sent = 0;
        let since = std::time::Instant::now();
        for (orders, _) in &self.shards[which] {
            let mut order = (make(), tx.clone());
            // A full queue empties as the shard's thread works through it, unless the
            // shard has stopped.
            loop {
                match orders.push(order) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err(_) if crate::shutdown::requested() || since.elapsed() > PATIENCE => {
                        warn!("failover: a worker takes no more orders");
                        break;
                    }
                    Err(back) => {
                        order = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        drop(tx);
        let mut answers = Vec::with_capacity(sent);
        let since = std::time::Instant::now();
        while answers.len() < sent {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(d) => answers.push(d),
                // Stopping workers answer nothing more: no point waiting for them.
                Err(_) if crate::shutdown::requested() => break,
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

    fn apply(&mut self, batch: &[(Lease, bool)]) -> Vec<Result<Lease, Reject>> {
        let mut merged: Vec<Option<Result<Lease, Reject>>> = vec![None; batch.len()];
        for done in self.all(|| Order::Apply(batch.to_vec())) {
            if let Done::Applied(per, reservations) = done {
                for (slot, r) in merged.iter_mut().zip(per) {
                    if r.is_some() {
                        *slot = r;
                    }
                }
                self.replicated.lock().extend(reservations);
            }
        }
        merged
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Reject::new(
                        RejectReason::IllegalIpAddr,
                        "unknown IP address",
                    ))
                })
            })
            .collect()
    }

    fn acked(&mut self, leases: &[Lease]) {
        self.all(|| Order::Acked(leases.to_vec()));
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
        // Every shard reports the subnets in the configuration's order.
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

impl Stored {
    /// The journal's record of the failover state.
    pub fn as_record<'a>(&self, name: &'a [u8], stamp: u64) -> FailoverRecord<'a> {
        FailoverRecord {
            stamp,
            local_state: u8::from(self.me),
            peer_state: u8::from(self.partner),
            mclt: self.mclt,
            local_stos: self.me_stos,
            peer_stos: self.partner_stos,
            name,
            data: &[],
        }
    }

    /// The state a replayed journal remembers.
    pub fn from_journal(f: &crate::journal::Failover) -> Self {
        Stored {
            me: f.local_state.into(),
            me_stos: f.local_stos,
            partner: f.peer_state.into(),
            partner_stos: f.peer_stos,
            mclt: f.mclt,
        }
    }
}
