//! One lease shard as every backend drives it, and the contract of its loop, written
//! once. A backend's thread owns the shard and, on each turn:
//!
//! 1. reads the clock and calls [`Shard::turn`]: the engine's timers, addresses lent or
//!    asked for by the other shards, the control socket's questions, the failover link's
//!    orders, and the journal records all of these made;
//! 2. sends the replies it held whose records are now durable ([`Core::durable`]);
//! 3. per request received, calls [`Core::handle`]: the reply is written into the
//!    backend's buffer and [`Answer::after`] says which journal sequence number it waits
//!    for (0: none); a request whose change could not be journaled gets no answer.
//!
//! Everything a shard hears from outside comes through its [`Bus`], as bounded lock-free
//! queues it empties between two batches: nothing on the per-packet path takes a lock or
//! waits on anyone.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dhcp_proto::engine::{Engine, Outcome, Reply, RxMeta};
use hdrhistogram::Histogram;

use super::operate::{self, Questions};
use super::store::{Committer, Release};
use crate::failover::shards::{carry_out, Orders};

/// Addresses moved between shards in one message: enough that a busy shard asks rarely,
/// few enough that a lender keeps most of its spare.
const LEND_MAX: usize = 256;
/// Messages a mailbox holds; a full mailbox makes the sender keep its addresses.
const MAILBOX: usize = 1024;

/// What shards tell each other.
#[derive(Debug)]
enum Message {
    /// Shard `from` is short of free addresses in `subnet`.
    Need { subnet: u16, from: u16 },
    /// Free addresses of one subnet, now the receiver's, with the lender's journal stamp:
    /// the receiver's records about them must be newer than the lender's.
    Lend { addrs: Box<[Ipv4Addr]>, stamp: u64 },
}

type Mailbox = Arc<ArrayQueue<Message>>;

/// A shard's ends of the queues between it and the rest of the server: the control
/// socket's questions, the failover link's orders, and every shard's mailbox for
/// lending free addresses.
pub struct Bus {
    index: u16,
    questions: Questions,
    orders: Option<Orders>,
    /// Every shard's mailbox, this one's included, by shard index.
    mailboxes: Vec<Mailbox>,
}

impl Bus {
    /// The buses of `orders.len()` shards; shard `i` carries out `orders[i]`, if any.
    pub fn wire(orders: Vec<Option<Orders>>) -> Vec<Bus> {
        let mailboxes: Vec<Mailbox> = orders
            .iter()
            .map(|_| Arc::new(ArrayQueue::new(MAILBOX)))
            .collect();
        orders
            .into_iter()
            .enumerate()
            .map(|(index, orders)| Bus {
                index: index as u16,
                questions: operate::questions(),
                orders,
                mailboxes: mailboxes.clone(),
            })
            .collect()
    }

    /// Where the control side asks this shard its questions.
    pub fn questions(&self) -> Questions {
        self.questions.clone()
    }
}

/// What answers a request: the engine and the journal its changes go to.
pub struct Core {
    pub engine: Engine,
    pub committer: Committer,
}

/// A reply the engine wrote, and when it may leave.
pub struct Answer {
    pub reply: Reply,
    /// The journal sequence number that must be durable first; 0: none.
    pub after: u64,
}

impl Core {
    /// Lets the engine answer `req` into `out` and journals the change it made.
    pub fn handle(
        &mut self,
        req: &[u8],
        meta: &RxMeta,
        now: u64,
        out: &mut [u8],
    ) -> Option<Answer> {
        let outcome = self.engine.handle(req, meta, now, out);
        let release = self.committer.record(&mut self.engine, now);
        let Outcome::Reply(reply) = outcome else {
            return None;
        };
        match release {
            Release::Now | Release::Empty => Some(Answer { reply, after: 0 }),
            Release::After(after) => Some(Answer { reply, after }),
            Release::Never => None,
        }
    }

    /// The highest journal sequence number on disk; everything without a journal.
    pub fn durable(&self) -> u64 {
        self.committer.durable()
    }
}

/// Replies written but waiting for their journal records to be durable, oldest first,
/// for a backend that keeps them itself (the AF_XDP rings keep theirs in the ring
/// chunks). `T` is whatever the backend needs to send one.
pub struct Held<T>(VecDeque<(u64, Instant, T)>);

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held(VecDeque::new())
    }
}

impl<T> Held<T> {
    /// Keeps a reply that may leave once sequence `after` is durable; `since` is when
    /// its request was picked up.
    pub fn push(&mut self, after: u64, since: Instant, reply: T) {
        self.0.push_back((after, since, reply));
    }

    /// Hands every reply whose record is now durable to `send`, in order, and records
    /// each one's latency.
    pub fn release(&mut self, durable: u64, latency: &mut Histogram<u64>, mut send: impl FnMut(T)) {
        while self.0.front().is_some_and(|h| h.0 <= durable) {
            let (_, since, reply) = self.0.pop_front().expect("looked at above");
            send(reply);
            latency.saturating_record(since.elapsed().as_nanos() as u64);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One lease shard: its core, its reply latencies and its bus.
pub struct Shard {
    pub core: Core,
    /// Each reply's time from its request's pickup to its leaving, in nanoseconds.
    pub latency: Histogram<u64>,
    bus: Bus,
}

impl Shard {
    pub fn new(engine: Engine, committer: Committer, bus: Bus) -> Self {
        Shard {
            core: Core { engine, committer },
            latency: operate::latency_histogram(),
            bus,
        }
    }

    pub fn index(&self) -> u16 {
        self.bus.index
    }

    /// How long the backend may wait for frames before the next turn: the failover link
    /// waits on the shards for every batch of the partner's updates, the control socket
    /// for its answers.
    pub fn max_wait(&self) -> Duration {
        if self.bus.orders.is_some() {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(20)
        }
    }

    /// Everything a shard does between two batches of requests (see the file's comment).
    pub fn turn(&mut self, now: u64) {
        self.core.engine.tick(now);
        self.read_mail(now);
        self.ask_for_addresses();
        let Core { engine, committer } = &mut self.core;
        operate::answer_all(&self.bus.questions, engine, committer, &self.latency, now);
        if let Some(orders) = &self.bus.orders {
            carry_out(orders, engine, committer, now);
            committer.record_all(engine, now);
        }
    }

    /// The shard's engine, once its loop has ended.
    pub fn into_engine(self) -> Engine {
        self.core.engine
    }

    fn read_mail(&mut self, now: u64) {
        let engine = &mut self.core.engine;
        let me = usize::from(self.bus.index);
        while let Some(msg) = self.bus.mailboxes[me].pop() {
            match msg {
                Message::Need { subnet, from } => {
                    let mut lent = Vec::new();
                    engine.leases_mut().lend(subnet, LEND_MAX, &mut lent);
                    if lent.is_empty() {
                        continue;
                    }
                    let n = lent.len();
                    let lend = Message::Lend {
                        addrs: lent.into(),
                        stamp: engine.next_stamp(now),
                    };
                    if let Err(Message::Lend { addrs, .. }) =
                        self.bus.mailboxes[usize::from(from)].push(lend)
                    {
                        engine.leases_mut().adopt(&addrs);
                    } else {
                        tracing::debug!(
                            "pool balancing: worker {me} lends {n} addresses to worker {from}"
                        );
                    }
                }
                Message::Lend { addrs, stamp } => {
                    engine.witness(stamp);
                    engine.leases_mut().adopt(&addrs);
                }
            }
        }
    }

    fn ask_for_addresses(&mut self) {
        let me = self.bus.index;
        let starving: Vec<u16> = self.core.engine.leases_mut().take_starving().collect();
        for subnet in starving {
            for (i, mailbox) in self.bus.mailboxes.iter().enumerate() {
                if i != usize::from(me) {
                    // A full mailbox means that shard is swamped; the next shortage asks again.
                    let _ = mailbox.push(Message::Need { subnet, from: me });
                }
            }
        }
    }
}
