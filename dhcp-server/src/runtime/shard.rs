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
//! 4. sends the replies the turn wrote outside any batch ([`Shard::take_late`]): the
//!    answers to leasequeries, which need every shard's bindings.
//!
//! Everything a shard hears from outside comes through its [`Bus`], as bounded lock-free
//! queues it empties between two batches: nothing on the per-packet path takes a lock or
//! waits on anyone. A leasequery is asked of every other shard by mailbox and answered
//! by the shard it reached once all have told what they hold; a sleeping shard is woken
//! by its bell for that, so a query to an idle server is not held up by a poll timeout.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dhcp_proto::engine::{Drop as Dropped, Engine, Outcome, Reply, RxMeta};
use dhcp_proto::leasequery::{Binding, Key};
use dhcp_proto::policy::LinkId;
use dhcp_proto::wire::Request;
use hdrhistogram::Histogram;

use super::operate::{self, Questions};
use super::store::{Committer, Release};
use crate::failover::shards::{carry_out, Orders};

/// Addresses moved between shards in one message: enough that a busy shard asks rarely,
/// few enough that a lender keeps most of its spare.
const LEND_MAX: usize = 256;
/// Messages a mailbox holds; a full mailbox makes the sender keep its addresses, or
/// drop the leasequery it was asking about.
const MAILBOX: usize = 4096;
/// Leasequeries a shard gathers at once; more are dropped as busy.
const GATHERING_MAX: usize = 4096;
/// How long a shard waits for the others' bindings before it drops the query: they
/// answer within a turn, so only a stopping server gets near it.
const GATHER_LIMIT: Duration = Duration::from_secs(1);
/// Largest reply a shard writes outside a batch.
const LATE_MAX: usize = 1500;

/// What shards tell each other.
#[derive(Debug)]
enum Message {
    /// Shard `from` is short of free addresses in `subnet`.
    Need { subnet: u16, from: u16 },
    /// Free addresses of one subnet, now the receiver's, with the lender's journal stamp:
    /// the receiver's records about them must be newer than the lender's.
    Lend { addrs: Box<[Ipv4Addr]>, stamp: u64 },
    /// Shard `from` gathers leasequery `id` and asks for the bindings that answer `key`.
    Ask { id: u64, from: u16, key: Arc<Key> },
    /// The bindings a shard holds for leasequery `id`.
    Found { id: u64, bindings: Vec<Binding> },
}

type Mailbox = Arc<ArrayQueue<Message>>;

/// Wakes a shard asleep in its backend's poll: an eventfd rung only while the shard says
/// it sleeps, so a busy shard costs its senders no system call.
struct Bell {
    fd: OwnedFd,
    asleep: AtomicBool,
}

impl Bell {
    fn new() -> Self {
        // SAFETY: eventfd takes no pointers; a non-negative return is a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        Bell {
            // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            asleep: AtomicBool::new(false),
        }
    }

    fn ring(&self) {
        if self.asleep.load(Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live local buffer to our eventfd; a full
            // counter (EAGAIN) still leaves it readable, all a sleeper needs.
            unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    fn quiet(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from our non-blocking
        // eventfd; EAGAIN (nothing rung) is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// Where a reply goes back to, kept for a reply written after its request's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Return {
    pub link: LinkId,
    /// The request's source MAC (the requester, or the router before it).
    pub next_hop: [u8; 6],
    pub vlan: Option<u16>,
}

/// A reply a turn wrote, for the backend to send: `bytes` is the DHCP message.
pub struct Late {
    pub back: Return,
    pub reply: Reply,
    pub bytes: Box<[u8]>,
}

/// A leasequery that reached this shard and waits for the others' bindings.
struct Gathering {
    request: Box<[u8]>,
    key: Arc<Key>,
    meta: RxMeta,
    back: Return,
    waiting: usize,
    found: Vec<Binding>,
    since: Instant,
}

/// A shard's ends of the queues between it and the rest of the server: the control
/// socket's questions, the failover link's orders, and every shard's mailbox for
/// lending free addresses.
pub struct Bus {
    index: u16,
    questions: Questions,
    orders: Option<Orders>,
    /// Every shard's mailbox and bell, this one's included, by shard index.
    mailboxes: Vec<Mailbox>,
    bells: Vec<Arc<Bell>>,
}

impl Bus {
    /// The buses of `orders.len()` shards; shard `i` carries out `orders[i]`, if any.
    pub fn wire(orders: Vec<Option<Orders>>) -> Vec<Bus> {
        let mailboxes: Vec<Mailbox> = orders
            .iter()
            .map(|_| Arc::new(ArrayQueue::new(MAILBOX)))
            .collect();
        let bells: Vec<Arc<Bell>> = orders.iter().map(|_| Arc::new(Bell::new())).collect();
        orders
            .into_iter()
            .enumerate()
            .map(|(index, orders)| Bus {
                index: index as u16,
                questions: operate::questions(),
                orders,
                mailboxes: mailboxes.clone(),
                bells: bells.clone(),
            })
            .collect()
    }

    /// Leaves `msg` in shard `to`'s mailbox and wakes it if it sleeps; gives the message
    /// back when the mailbox is full.
    fn post(&self, to: usize, msg: Message) -> Result<(), Message> {
        self.mailboxes[to].push(msg)?;
        // Pairs with the fence in `Shard::may_sleep`: either the sleeper sees the
        // message before it sleeps, or this sees it asleep and rings.
        fence(Ordering::SeqCst);
        self.bells[to].ring();
        Ok(())
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
    /// Leasequeries of this batch that need every shard: the request, where it came,
    /// and where its answer goes.
    asked: Vec<(Box<[u8]>, RxMeta, Return)>,
}

/// A reply the engine wrote, and when it may leave.
pub struct Answer {
    pub reply: Reply,
    /// The journal sequence number that must be durable first; 0: none.
    pub after: u64,
}

impl Core {
    /// Lets the engine answer `req` into `out` and journals the change it made. A
    /// leasequery the engine cannot answer alone is kept for the next turn to gather;
    /// its answer leaves later, by `back`.
    pub fn handle(
        &mut self,
        req: &[u8],
        meta: &RxMeta,
        now: u64,
        out: &mut [u8],
        back: Return,
    ) -> Option<Answer> {
        let outcome = self.engine.handle(req, meta, now, out);
        let release = self.committer.record(&mut self.engine, now);
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Gather => {
                self.asked.push((req.into(), *meta, back));
                return None;
            }
            Outcome::Done | Outcome::Dropped(_) => return None,
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

/// One lease shard: its core, its reply latencies, its bus, and the leasequeries it
/// gathers.
pub struct Shard {
    pub core: Core,
    /// Each reply's time from its request's pickup to its leaving, in nanoseconds.
    pub latency: Histogram<u64>,
    bus: Bus,
    gathering: hashbrown::HashMap<u64, Gathering>,
    next_gather: u64,
    late: Vec<Late>,
}

impl Shard {
    pub fn new(engine: Engine, committer: Committer, bus: Bus) -> Self {
        Shard {
            core: Core {
                engine,
                committer,
                asked: Vec::new(),
            },
            latency: operate::latency_histogram(),
            bus,
            gathering: Default::default(),
            next_gather: 0,
            late: Vec::new(),
        }
    }

    pub fn index(&self) -> u16 {
        self.bus.index
    }

    /// How long the backend may wait for frames before the next turn: the failover link
    /// waits on the shards for every batch of the partner's updates, the control socket
    /// for its answers.
    pub fn max_wait(&self) -> Duration {
        if self.bus.orders.is_some() || !self.gathering.is_empty() {
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
        self.gather();
        let Core {
            engine, committer, ..
        } = &mut self.core;
        operate::answer_all(&self.bus.questions, engine, committer, &self.latency, now);
        if let Some(orders) = &self.bus.orders {
            carry_out(orders, engine, committer, now);
        }
        // Leases that ran out, and what the failover rules changed, go to the journal.
        committer.record_all(engine, now);
    }

    /// The replies the last turns wrote outside any batch, for the backend to send.
    pub fn take_late(&mut self) -> std::vec::Drain<'_, Late> {
        self.late.drain(..)
    }

    /// The fd a backend's poll watches besides its sockets: rung when another shard
    /// needs this one (see [`Shard::may_sleep`]).
    pub fn bell_fd(&self) -> RawFd {
        self.bus.bells[usize::from(self.bus.index)].fd.as_raw_fd()
    }

    /// Says the shard is about to sleep in its backend's poll, unless mail came: then it
    /// must turn instead (false). Call [`Shard::woke`] after the poll.
    pub fn may_sleep(&self) -> bool {
        let me = usize::from(self.bus.index);
        self.bus.bells[me].asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.bus.mailboxes[me].is_empty() {
            return true;
        }
        self.woke();
        false
    }

    pub fn woke(&self) {
        let bell = &self.bus.bells[usize::from(self.bus.index)];
        bell.asleep.store(false, Ordering::SeqCst);
        bell.quiet();
    }

    /// The shard's engine, once its loop has ended.
    pub fn into_engine(self) -> Engine {
        self.core.engine
    }

    fn read_mail(&mut self, now: u64) {
        let me = usize::from(self.bus.index);
        let mut complete = Vec::new();
        while let Some(msg) = self.bus.mailboxes[me].pop() {
            let engine = &mut self.core.engine;
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
                Message::Ask { id, from, key } => {
                    let mut bindings = Vec::new();
                    engine.bindings(&key, &mut bindings);
                    // A full mailbox: the asker drops the query when its time is up.
                    let _ = self
                        .bus
                        .post(usize::from(from), Message::Found { id, bindings });
                }
                Message::Found { id, bindings } => {
                    if let Some(g) = self.gathering.get_mut(&id) {
                        g.found.extend(bindings);
                        g.waiting -= 1;
                        if g.waiting == 0 {
                            complete.extend(self.gathering.remove(&id));
                        }
                    }
                }
            }
        }
        for g in complete {
            self.answer(g, now);
        }
    }

    /// Asks every other shard about the leasequeries of the last batch, and drops those
    /// the others were too long to answer.
    fn gather(&mut self) {
        let me = usize::from(self.bus.index);
        let others = self.bus.mailboxes.len() - 1;
        for (request, meta, back) in std::mem::take(&mut self.core.asked) {
            // The engine read it a moment ago: it parses and names a key.
            let Some(key) = Request::parse(&request).ok().and_then(|r| Key::of(&r).ok()) else {
                continue;
            };
            let key = Arc::new(key);
            let id = self.next_gather;
            self.next_gather += 1;
            let asked = self.gathering.len() < GATHERING_MAX
                && (0..self.bus.mailboxes.len()).filter(|&i| i != me).all(|i| {
                    let ask = Message::Ask {
                        id,
                        from: me as u16,
                        key: key.clone(),
                    };
                    self.bus.post(i, ask).is_ok()
                });
            if !asked {
                self.core.engine.count_drop(Dropped::LeasequeryBusy);
                continue;
            }
            let mut found = Vec::new();
            self.core.engine.bindings(&key, &mut found);
            self.gathering.insert(
                id,
                Gathering {
                    request,
                    key,
                    meta,
                    back,
                    waiting: others,
                    found,
                    since: Instant::now(),
                },
            );
        }
        let before = self.gathering.len();
        self.gathering
            .retain(|_, g| g.since.elapsed() < GATHER_LIMIT);
        for _ in self.gathering.len()..before {
            self.core.engine.count_drop(Dropped::LeasequeryBusy);
        }
    }

    /// Writes the answer to a leasequery whose bindings are all in.
    fn answer(&mut self, g: Gathering, now: u64) {
        let Ok(req) = Request::parse(&g.request) else {
            return;
        };
        let mut out = [0u8; LATE_MAX];
        let engine = &mut self.core.engine;
        if let Some(reply) =
            engine.answer_leasequery(&req, &g.key, &g.found, &g.meta, now, &mut out)
        {
            self.late.push(Late {
                back: g.back,
                reply,
                bytes: out[..reply.len].into(),
            });
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
