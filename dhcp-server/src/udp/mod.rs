//! The kernel UDP backend: one socket per listening interface, a poll loop, and the engine
//! in between. It reads the clock and passes it in; it owns no DHCP logic. Where XDP cannot
//! be used (no privileges, a laptop), this runs the same engine the AF_XDP workers do.
//!
//! A reply to a client that has no address yet cannot go through the UDP socket (the
//! kernel would ARP for an address nobody answers for), so it leaves as a whole frame
//! through a packet socket, addressed to the client's hardware address, as dhcpd and Kea
//! send it. Without CAP_NET_RAW such replies are broadcast instead.
//!
//! A unicast reply to an address that did not itself send the request (a giaddr or ciaddr
//! other than the datagram's source) may have to wait for an ARP answer that never comes:
//! the kernel holds it in the neighbour queue for about 3 s, charged to the sending
//! socket's buffer, and a few hundred such replies (a relay forwarding garbage) fill that
//! buffer so that every later send fails with EAGAIN, to anyone. Such replies therefore
//! leave through a send-only raw IP socket of their own; the UDP socket keeps the replies
//! to addresses that talked to us (which the kernel can reach at once) and broadcasts.
//! See docs/investigations/udp-stall.md.
//!
//! With a journal in `sync` durability, an ACK waits in a queue until its record is on
//! disk; the loop goes on receiving meanwhile and wakes on the journal's eventfd.

mod socket;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::BackendKind;
use crate::packet::PacketSocket;
use crate::runtime::env::Env;
use crate::runtime::shard::{Held, Return, Shard};
use crate::runtime::{Backend, BackendCounters, BackendError, Serving};
pub use dhcp_proto::engine::SERVER_PORT;
use dhcp_proto::engine::{Destination, Reply, RxMeta};
use dhcp_proto::wire::frame::{self, HEADROOM};
pub use socket::{DhcpSocket, RawIpSocket};

/// Datagrams handled from one socket before looking at the others, so a flood on one
/// link cannot starve the rest.
const BURST: usize = 64;

/// How long failed sends are summed up before the next log line about them.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the backend could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {ifname} port {port}: {source}")]
    Bind {
        ifname: String,
        port: u16,
        source: io::Error,
    },
    #[error("{ifname} has no IPv4 address and its subnets set no server-id: clients could not be told who answered")]
    NoAddress { ifname: String },
    #[error("poll failed: {0}")]
    Poll(io::Error),
    #[error("cannot start the udp thread: {0}")]
    Thread(io::Error),
}

/// An ACK written but waiting for its lease record to be durable.
struct Waiting {
    link: usize,
    /// The request's source address.
    peer: Ipv4Addr,
    reply: Reply,
    /// The frame buffer as `send` expects it: headroom, then the reply.
    tx: Vec<u8>,
}

struct Link {
    socket: DhcpSocket,
    /// The interface's address, used when the kernel reports none for a datagram.
    addr: Ipv4Addr,
    /// For replies to clients without an address: the raw socket and our MAC.
    raw: Option<(PacketSocket, [u8; 6])>,
    /// For replies to an address that did not send the request.
    aside: Option<RawIpSocket>,
}

/// What the backend counts beyond the engine, for `ctl stats`.
#[derive(Default)]
struct Counts {
    /// Replies sent through the side socket: their destination did not send the request.
    aside: AtomicU64,
    /// Of those, the ones the kernel refused (the side socket's buffer full, no route).
    aside_failed: AtomicU64,
    /// Replies to the request's source, broadcast or framed that the kernel refused.
    failed: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The kernel sockets of every configured interface, one shard behind them.
pub struct Udp {
    links: Vec<Link>,
    counts: Arc<Counts>,
}

impl Udp {
    /// Binds every configured interface; nothing is served unless all of them are up.
    /// `port` is 67 but for tests.
    pub fn open(config: &Config, port: u16) -> Result<Self, Error> {
        if config.flood.is_on() {
            tracing::warn!(
                "[flood] limits are not applied: only the xdp backend can drop a client's requests before they reach the server"
            );
        }
        let policy = &config.policy;
        let links = policy
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, ifname)| {
                let socket = DhcpSocket::bind(ifname, port).map_err(|source| Error::Bind {
                    ifname: ifname.clone(),
                    port,
                    source,
                })?;
                let configured = policy
                    .subnets
                    .iter()
                    .filter(|s| s.interface == Some(i as u16))
                    .find_map(|s| s.server_id);
                let addr = configured
                    .or_else(|| crate::netif::address(ifname))
                    .ok_or_else(|| Error::NoAddress {
                        ifname: ifname.clone(),
                    })?;
                let raw = PacketSocket::open(ifname).and_then(|p| Ok((p, crate::netif::hw_address(ifname)?)));
                let raw = raw
                    .inspect_err(|e| tracing::warn!("no packet socket on {ifname} ({e}): replies to clients without an address will be broadcast"))
                    .ok();
                let aside = RawIpSocket::open(ifname)
                    .inspect_err(|e| tracing::warn!("no raw IP socket on {ifname} ({e}): replies to relays and clients that did not send the request share the socket of every reply, and may stall it"))
                    .ok();
                Ok(Link {
                    socket,
                    addr,
                    raw,
                    aside,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Udp {
            links,
            counts: Arc::default(),
        })
    }
}

impl Backend for Udp {
    fn describe(&self) -> (BackendKind, Option<crate::control::XdpStatus>) {
        (BackendKind::Udp, None)
    }

    fn shards(&self) -> u16 {
        1
    }

    fn counters(&self) -> Option<BackendCounters> {
        let counts = Arc::clone(&self.counts);
        Some(Arc::new(move || {
            let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
            vec![
                ("replies-aside", read(&counts.aside)),
                ("replies-aside-failed", read(&counts.aside_failed)),
                ("replies-failed", read(&counts.failed)),
            ]
        }))
    }

    fn start(
        self: Box<Self>,
        shards: Vec<Shard>,
        env: &Env,
    ) -> Result<Box<dyn Serving>, BackendError> {
        let shard = shards.into_iter().next().expect("one shard");
        let names = self
            .links
            .iter()
            .map(|l| l.socket.ifname.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let env = env.clone();
        let thread = std::thread::Builder::new()
            .name("udp".into())
            .spawn(move || {
                let served = serve(&self.links, &self.counts, shard, &env);
                if served.is_err() {
                    env.stop.request();
                }
                served
            })
            .map_err(Error::Thread)?;
        Ok(Box::new(UdpServing { thread, names }))
    }
}

struct UdpServing {
    thread: JoinHandle<Result<(), Error>>,
    names: String,
}

impl Serving for UdpServing {
    fn ready(&self) -> Vec<String> {
        vec![format!("on {} with the udp backend", self.names)]
    }

    fn join(self: Box<Self>) -> Result<(), BackendError> {
        match self.thread.join() {
            Ok(served) => Ok(served?),
            Err(_) => Err("the udp thread panicked".into()),
        }
    }
}

/// The shard's loop (see `runtime::shard`) over every link's socket, until the stop.
fn serve(links: &[Link], counts: &Counts, mut shard: Shard, env: &Env) -> Result<(), Error> {
    let wait_ms = shard.max_wait().as_millis() as libc::c_int;
    let mut pfds: Vec<libc::pollfd> = links
        .iter()
        .map(|l| libc::pollfd {
            fd: l.socket.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    pfds.extend(shard.core.committer.wakeup_fd().map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    let mut out = Sender {
        links,
        counts,
        failures: FailureLog::default(),
    };
    let mut held: Held<Waiting> = Held::default();
    let mut rx = vec![0u8; 65536];
    let mut tx = vec![0u8; HEADROOM + 1500];
    while !env.stop.requested() {
        // SAFETY: `pfds` is a live array of pollfd of the length passed.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Poll(e));
        }
        let now = env.clock.now();
        shard.turn(now);
        out.failures.tick(Instant::now());
        if pfds.len() > links.len() && pfds[links.len()].revents != 0 {
            shard.core.committer.clear_wakeup();
        }
        for late in shard.take_late() {
            let mut tx = vec![0u8; HEADROOM + late.bytes.len()];
            tx[HEADROOM..].copy_from_slice(&late.bytes);
            // The request's source is not kept with a late answer: treated as unknown.
            let link = usize::from(late.back.link);
            out.send(link, &mut tx, &late.reply, Ipv4Addr::UNSPECIFIED);
        }
        held.release(shard.core.durable(), &mut shard.latency, |mut w| {
            out.send(w.link, &mut w.tx, &w.reply, w.peer);
        });
        for (i, link) in links.iter().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            for _ in 0..BURST {
                let got = match link.socket.recv(&mut rx) {
                    Ok(Some(got)) => got,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("receive on {} failed: {e}", link.socket.ifname);
                        break;
                    }
                };
                let meta = RxMeta {
                    link: i as u16,
                    local_addr: if got.local.is_unspecified() {
                        link.addr
                    } else {
                        got.local
                    },
                    broadcast: got.dst.is_broadcast() || got.dst.is_unspecified(),
                };
                let since = Instant::now();
                // The reply is written after room for frame headers, in case it leaves raw.
                let back = Return {
                    link: i as u16,
                    next_hop: [0; 6],
                    vlan: None,
                };
                let Some(answer) =
                    shard
                        .core
                        .handle(&rx[..got.len], &meta, now, &mut tx[HEADROOM..], back)
                else {
                    continue;
                };
                let reply = answer.reply;
                let peer = *got.src.ip();
                if answer.after == 0 {
                    out.send(i, &mut tx, &reply, peer);
                    shard
                        .latency
                        .saturating_record(since.elapsed().as_nanos() as u64);
                } else {
                    let tx = tx[..HEADROOM + reply.len].to_vec();
                    held.push(
                        answer.after,
                        since,
                        Waiting {
                            link: i,
                            peer,
                            reply,
                            tx,
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

/// Sends replies where RFC 2131 §4.1 says they go, through the socket that cannot be
/// stalled by another client's, and accounts for those the kernel refused.
struct Sender<'a> {
    links: &'a [Link],
    counts: &'a Counts,
    failures: FailureLog,
}

impl Sender<'_> {
    /// Sends the reply at `tx[HEADROOM..]` on link `link`; `peer` is the request's source.
    fn send(&mut self, link: usize, tx: &mut [u8], reply: &Reply, peer: Ipv4Addr) {
        let link = &self.links[link];
        let (error, failed) = match send(link, tx, reply, peer) {
            (Ok(()), Via::Aside) => {
                Counts::add(&self.counts.aside);
                return;
            }
            (Ok(()), _) => return,
            (Err(e), Via::Aside) => {
                Counts::add(&self.counts.aside);
                (e, &self.counts.aside_failed)
            }
            (Err(e), Via::Socket) => (e, &self.counts.failed),
        };
        Counts::add(failed);
        self.failures.failed(Instant::now(), || {
            format!(
                "send_packet: {error} ({} to {} on {})",
                reply.kind.name(),
                reply.to.ip(),
                link.socket.ifname
            )
        });
    }
}

/// Which of a link's sockets a reply left through.
#[derive(Clone, Copy)]
enum Via {
    /// The UDP socket, or the packet socket for a frame to a client's hardware address:
    /// neither waits on an unanswered ARP.
    Socket,
    /// The side socket, for a destination that did not send the request.
    Aside,
}

fn send(link: &Link, tx: &mut [u8], reply: &Reply, peer: Ipv4Addr) -> (io::Result<()>, Via) {
    let port = reply.to.port();
    let to = match (reply.to, &link.raw) {
        (Destination::Hardware { mac, .. }, Some((raw, our_mac))) => {
            let len = frame::write_udp(tx, &reply.addressing(*our_mac, mac, None), reply.len);
            return (raw.send_one(&tx[..len]), Via::Socket);
        }
        (Destination::Hardware { .. }, None) => SocketAddrV4::new(Ipv4Addr::BROADCAST, port),
        (other, _) => SocketAddrV4::new(other.ip(), port),
    };
    // The sender of the request is reachable at once: it asked for our hardware address,
    // or answers when asked. Any other address may never answer ARP.
    let known = to.ip().is_broadcast() || *to.ip() == peer;
    match &link.aside {
        Some(aside) if !known => {
            // The IP and UDP headers land just before the reply; the Ethernet header
            // written before them is the kernel's to fill, and is not sent.
            let len = frame::write_udp(tx, &reply.addressing([0; 6], [0; 6], None), reply.len);
            (aside.send(&tx[ETHERNET..len], *to.ip()), Via::Aside)
        }
        _ => (
            link.socket
                .send(&tx[HEADROOM..HEADROOM + reply.len], to, reply.from),
            Via::Socket,
        ),
    }
}

/// The Ethernet header's length in front of an untagged frame's IP header.
const ETHERNET: usize = 14;

/// Failed sends, logged without flooding the log: the first at once, the next ones
/// summed up in one line at most every `FAILURE_LOG_EVERY`.
#[derive(Default)]
struct FailureLog {
    /// When the last line about failures was written, while the window is open.
    since: Option<Instant>,
    /// Failures since then, not yet logged, and the last of them.
    quiet: u64,
    last: String,
}

impl FailureLog {
    fn failed(&mut self, now: Instant, what: impl FnOnce() -> String) {
        if self.since.is_some() {
            self.quiet += 1;
            self.last = what();
            return;
        }
        tracing::warn!("{}", what());
        self.since = Some(now);
    }

    /// Closes the window once it is over: the failures it held in one line, if any.
    fn tick(&mut self, now: Instant) {
        let Some(since) = self.since else {
            return;
        };
        if now.duration_since(since) < FAILURE_LOG_EVERY {
            return;
        }
        if self.quiet == 0 {
            self.since = None;
            return;
        }
        tracing::warn!(
            "{} more replies not sent in the last {} s, the last: {}",
            self.quiet,
            now.duration_since(since).as_secs(),
            self.last
        );
        self.quiet = 0;
        self.since = Some(now);
    }
}
