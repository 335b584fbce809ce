//! One AF_XDP worker: a thread that owns one lease shard and the sockets the XDP program
//! steers that shard's clients to. It reads frames, lets the engine answer in place,
//! sends the replies, and trades free addresses with the other shards through bounded
//! lock-free mailboxes. Nothing on its per-packet path takes a lock or waits on anyone.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::xsk::{Out, Xsk, XskStats};
use crate::config::LinkId;
use crate::runtime::env::Env;
use crate::runtime::shard::{Core, Return, Shard};
use dhcp_proto::engine::{Engine, RxMeta, SERVER_PORT};
use dhcp_proto::wire::frame;

/// How long a worker keeps looking at its rings after the last frame before it sleeps:
/// under load the next frame is usually this close, and a sleep and wakeup per batch
/// cost more than the frames themselves.
const LINGER: Duration = Duration::from_micros(50);

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
    pub shard: Shard,
    pub ports: Vec<Port>,
    pub wait: Wait,
}

impl Worker {
    /// Serves until the stop is requested: the shard's loop (see `runtime::shard`) over
    /// its sockets. Returns the engine, so the caller can report on what the shard
    /// holds, and the kernel's counters of the worker's sockets.
    pub fn run(mut self, env: &Env) -> (Engine, XskStats) {
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
        // Another shard's need of this one (a leasequery it gathers or answers).
        pfds.push(libc::pollfd {
            fd: self.shard.bell_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // The journal's wakeup: a held ACK may leave once its record is durable.
        pfds.extend(
            self.shard
                .core
                .committer
                .wakeup_fd()
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        while !env.stop.requested() {
            let now = env.clock.now();
            self.shard.turn(now);
            self.send_late();
            let busy = self.serve_ports(now);
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
        (self.shard.into_engine(), total)
    }

    /// Queues the replies the turn wrote (leasequery answers) on the socket of the link
    /// each request came from, to leave with the next pass.
    fn send_late(&mut self) {
        for late in self.shard.take_late() {
            let Some(port) = self.ports.iter_mut().find(|p| p.link == late.back.link) else {
                continue;
            };
            let Some(xsk) = port.sockets.first_mut() else {
                continue;
            };
            let a = late
                .reply
                .addressing(port.mac, late.back.next_hop, late.back.vlan);
            let queued = xsk.send_later(|buf| {
                let at = a.headroom();
                buf[at..at + late.bytes.len()].copy_from_slice(&late.bytes);
                frame::write_udp(buf, &a, late.bytes.len())
            });
            if !queued {
                tracing::warn!(
                    "no free frame to send {} to {}",
                    late.reply.kind.name(),
                    late.reply.to.ip()
                );
            }
        }
    }

    /// One pass over every socket; whether any frame came in or a reply still waits
    /// for TX room (then the loop keeps turning rather than sleeping on the sockets;
    /// replies waiting for the journal are woken by its eventfd).
    fn serve_ports(&mut self, now: u64) -> bool {
        let mut busy = false;
        let durable = self.shard.core.durable();
        for port in &mut self.ports {
            let here = Here {
                link: port.link,
                mac: port.mac,
                addr: port.addr,
                now,
            };
            for xsk in &mut port.sockets {
                let (core, latency) = (&mut self.shard.core, &mut self.shard.latency);
                let pass = xsk.pass(durable, Some(latency), |req, out| {
                    answer(core, &here, req, out)
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
                if !self.shard.may_sleep() {
                    return;
                }
                // SAFETY: `pfds` is a live array of pollfd of the length passed. An error
                // (EINTR on a signal) just ends the wait early.
                unsafe {
                    libc::poll(
                        pfds.as_mut_ptr(),
                        pfds.len() as libc::nfds_t,
                        self.shard.max_wait().as_millis() as libc::c_int,
                    )
                };
                self.shard.woke();
                let journal = self.shard.core.committer.wakeup_fd().is_some();
                if journal && pfds.last().is_some_and(|p| p.revents != 0) {
                    self.shard.core.committer.clear_wakeup();
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

/// Turns a request frame into a reply frame written at the start of `out`, and says when
/// it may leave.
fn answer(core: &mut Core, here: &Here, req: &[u8], out: &mut [u8]) -> Option<Out> {
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
    let back = Return {
        link,
        next_hop: from.src_mac,
        vlan: from.vlan,
    };
    let answer = core.handle(udp.payload, &meta, now, &mut out[from.headroom()..], back)?;
    let a = answer.reply.addressing(mac, from.src_mac, from.vlan);
    Some(Out {
        len: frame::write_udp(out, &a, answer.reply.len),
        after: answer.after,
    })
}
