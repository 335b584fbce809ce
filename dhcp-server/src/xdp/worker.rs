//! One AF_XDP worker: a thread that owns one lease shard and the sockets the XDP program
//! steers that shard's clients to. It reads frames, lets the engine answer in place,
//! sends the replies, and trades free addresses with the other shards through bounded
//! lock-free mailboxes. Nothing on its per-packet path takes a lock or waits on anyone.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::xsk::{Out, Xsk, XskStats};
use crate::config::LinkId;
use crate::operate::{self, Questions};
use crate::shutdown;
use crate::store::{Committer, Release};
use dhcp_proto::engine::{Engine, Outcome, RxMeta, SERVER_PORT};
use dhcp_proto::wire::frame;
use hdrhistogram::Histogram;

/// Addresses moved between shards in one message: enough that a busy shard asks rarely,
/// few enough that a lender keeps most of its spare.
const LEND_MAX: usize = 256;
/// Messages a mailbox holds; a full mailbox makes the sender keep its addresses.
pub const MAILBOX: usize = 1024;
/// How long an idle worker sleeps in poll before looking at its mailbox again.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long a worker keeps looking at its rings after the last frame before it sleeps:
/// under load the next frame is usually this close, and a sleep and wakeup per batch
/// cost more than the frames themselves.
const LINGER: Duration = Duration::from_micros(50);

/// What shards tell each other.
#[derive(Debug)]
pub enum Message {
    /// Shard `from` is short of free addresses in `subnet`.
    Need { subnet: u16, from: u16 },
    /// Free addresses of one subnet, now the receiver's, with the lender's journal stamp:
    /// the receiver's records about them must be newer than the lender's.
    Lend { addrs: Box<[Ipv4Addr]>, stamp: u64 },
}

pub type Mailbox = Arc<ArrayQueue<Message>>;

/// How an idle worker waits for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep in poll(2) until a frame arrives (need_wakeup): no CPU when idle.
    Poll,
    /// Spin on the rings: lowest latency, a whole core per worker.
    Spin,
}

/// A listening interface as a worker sees it.
pub struct Port {
    pub link: LinkId,
    pub mac: [u8; 6],
    /// The interface's address: the server identifier for broadcasts.
    pub addr: Ipv4Addr,
    /// This worker's socket on each of the interface's queues.
    pub sockets: Vec<Xsk>,
}

pub struct Worker {
    pub index: u16,
    pub engine: Engine,
    pub ports: Vec<Port>,
    /// Every worker's mailbox, this one's included, by worker index.
    pub mailboxes: Vec<Mailbox>,
    pub wait: Wait,
    /// The shard's journal: ACKs wait in the sockets until their lease is durable.
    pub committer: Committer,
    /// The control socket's questions to this shard.
    pub questions: Questions,
    /// The failover link's orders to this shard, when the server has a partner.
    pub failover: Option<crate::failover::shards::Orders>,
    /// Each reply's time from its request's pickup to its leaving, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Worker {
    /// Serves until shutdown is requested. Returns the engine, so the caller can report
    /// on what the shard holds, and the kernel's counters of the worker's sockets.
    pub fn run(mut self, clock: impl Fn() -> u64) -> (Engine, XskStats) {
        let mut pfds: Vec<libc::pollfd> = self
            .ports
            .iter()
            .flat_map(|p| &p.sockets)
            .map(|x| libc::pollfd {
                fd: x.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut last_busy = Instant::now();
        // The journal's wakeup: a held ACK may leave once its record is durable.
        pfds.extend(self.committer.wakeup_fd().map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        while !shutdown::requested() {
            let now = clock();
            self.engine.tick(now);
            let busy = self.serve_ports(now);
            self.read_mail(now);
            self.ask_for_addresses();
            operate::answer_all(
                &self.questions,
                &mut self.engine,
                &mut self.committer,
                &self.latency,
                now,
            );
            if let Some(orders) = &self.failover {
                crate::failover::shards::carry_out(
                    orders,
                    &mut self.engine,
                    &mut self.committer,
                    now,
                );
                self.committer.record_all(&mut self.engine, now);
            }
            if busy {
                last_busy = Instant::now();
            } else if last_busy.elapsed() < LINGER {
                // Yield, not spin: where the cores are shared (with the journal's
                // flusher, other workers, other programs) the wait gives them the CPU,
                // and on an idle core it returns at once.
                std::thread::yield_now();
            } else {
                self.idle(&mut pfds);
            }
        }
        let mut total = XskStats::default();
        for s in self
            .ports
            .iter()
            .flat_map(|p| &p.sockets)
            .filter_map(|x| x.stats().ok())
        {
            total.rx_dropped += s.rx_dropped;
            total.rx_ring_full += s.rx_ring_full;
            total.fill_ring_empty += s.fill_ring_empty;
            total.tx_invalid += s.tx_invalid;
        }
        (self.engine, total)
    }

    /// One pass over every socket; whether any frame came in or a reply still waits
    /// for TX room (then the loop keeps turning rather than sleeping on the sockets;
    /// replies waiting for the journal are woken by its eventfd).
    fn serve_ports(&mut self, now: u64) -> bool {
        let mut busy = false;
        let durable = self.committer.durable();
        for port in &mut self.ports {
            let here = Here {
                link: port.link,
                mac: port.mac,
                addr: port.addr,
                now,
            };
            for xsk in &mut port.sockets {
                let (engine, committer) = (&mut self.engine, &mut self.committer);
                let pass = xsk.pass(durable, Some(&mut self.latency), |req, out| {
                    let len = answer(engine, &here, req, out)?;
                    match committer.record(engine, now) {
                        Release::Now | Release::Empty => Some(Out { len, after: 0 }),
                        Release::After(seq) => Some(Out { len, after: seq }),
                        Release::Never => None,
                    }
                });
                busy |= pass.received > 0 || pass.tx_waiting;
            }
        }
        busy
    }

    fn idle(&self, pfds: &mut [libc::pollfd]) {
        match self.wait {
            Wait::Spin => {
                for xsk in self.ports.iter().flat_map(|p| &p.sockets) {
                    if xsk.needs_wakeup() {
                        // SAFETY: a zero-length, non-blocking receive on our own socket.
                        unsafe {
                            libc::recvfrom(
                                xsk.fd(),
                                std::ptr::null_mut(),
                                0,
                                libc::MSG_DONTWAIT,
                                std::ptr::null_mut(),
                                std::ptr::null_mut(),
                            )
                        };
                    }
                }
                std::hint::spin_loop();
            }
            Wait::Poll => {
                // SAFETY: `pfds` is a live array of pollfd of the length passed. An error
                // (EINTR on a signal) just ends the wait early.
                unsafe {
                    libc::poll(
                        pfds.as_mut_ptr(),
                        pfds.len() as libc::nfds_t,
                        IDLE_POLL.as_millis() as libc::c_int,
                    )
                };
                let journal = self.committer.wakeup_fd().is_some();
                if journal && pfds.last().is_some_and(|p| p.revents != 0) {
                    self.committer.clear_wakeup();
                }
            }
        }
    }

    fn read_mail(&mut self, now: u64) {
        while let Some(msg) = self.mailboxes[self.index as usize].pop() {
            match msg {
                Message::Need { subnet, from } => {
                    let mut lent = Vec::new();
                    self.engine.leases_mut().lend(subnet, LEND_MAX, &mut lent);
                    if lent.is_empty() {
                        continue;
                    }
                    let n = lent.len();
                    let lend = Message::Lend {
                        addrs: lent.into(),
                        stamp: self.engine.next_stamp(now),
                    };
                    if let Err(Message::Lend { addrs, .. }) =
                        self.mailboxes[from as usize].push(lend)
                    {
                        self.engine.leases_mut().adopt(&addrs);
                    } else {
                        tracing::debug!(
                            "pool balancing: worker {} lends {n} addresses to worker {from}",
                            self.index
                        );
                    }
                }
                Message::Lend { addrs, stamp } => {
                    self.engine.witness(stamp);
                    self.engine.leases_mut().adopt(&addrs);
                }
            }
        }
    }

    fn ask_for_addresses(&mut self) {
        let me = self.index;
        let starving: Vec<u16> = self.engine.leases_mut().take_starving().collect();
        for subnet in starving {
            for (i, mailbox) in self.mailboxes.iter().enumerate() {
                if i != me as usize {
                    // A full mailbox means that shard is swamped; the next shortage asks again.
                    let _ = mailbox.push(Message::Need { subnet, from: me });
                }
            }
        }
    }
}

/// Where a frame arrived and when.
struct Here {
    link: LinkId,
    mac: [u8; 6],
    /// The interface's address: the server identifier for broadcasts.
    addr: Ipv4Addr,
    now: u64,
}

/// Turns a request frame into a reply frame written at the start of `out`.
fn answer(engine: &mut Engine, here: &Here, req: &[u8], out: &mut [u8]) -> Option<usize> {
    let (link, mac, addr, now) = (here.link, here.mac, here.addr, here.now);
    let udp = frame::parse_udp(req)?;
    if udp.addr.dst_port != SERVER_PORT {
        return None;
    }
    let broadcast = udp.addr.dst_ip.is_broadcast() || udp.addr.dst_mac == [0xff; 6];
    let meta = RxMeta {
        link,
        local_addr: if broadcast { addr } else { udp.addr.dst_ip },
        broadcast,
    };
    let from = udp.addr;
    match engine.handle(udp.payload, &meta, now, &mut out[from.headroom()..]) {
        Outcome::Reply(reply) => {
            let a = reply.addressing(mac, from.src_mac, from.vlan);
            Some(frame::write_udp(out, &a, reply.len))
        }
        Outcome::Done | Outcome::Dropped(_) => None,
    }
}
