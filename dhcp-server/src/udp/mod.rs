//! The kernel UDP backend: one socket per listening interface, a poll loop, and the engine
//! in between. It reads the clock and passes it in; it owns no DHCP logic. Where XDP cannot
//! be used (no privileges, a laptop), this runs the same engine the AF_XDP workers do.
//!
//! A reply to a client that has no address yet cannot go through the UDP socket (the
//! kernel would ARP for an address nobody answers for), so it leaves as a whole frame
//! through a packet socket, addressed to the client's hardware address, as dhcpd and Kea
//! send it. Without CAP_NET_RAW such replies are broadcast instead.
//!
//! With a journal in `sync` durability, an ACK waits in a queue until its record is on
//! disk; the loop goes on receiving meanwhile and wakes on the journal's eventfd.

mod socket;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::Config;
use crate::control::BackendKind;
use crate::packet::PacketSocket;
use crate::runtime::env::Env;
use crate::runtime::shard::{Held, Return, Shard};
use crate::runtime::{Backend, BackendError, Serving};
pub use dhcp_proto::engine::SERVER_PORT;
use dhcp_proto::engine::{Destination, Reply, RxMeta};
use dhcp_proto::wire::frame::{self, HEADROOM};
pub use socket::DhcpSocket;

/// Datagrams handled from one socket before looking at the others, so a flood on one
/// link cannot starve the rest.
const BURST: usize = 64;

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
}

/// The kernel sockets of every configured interface, one shard behind them.
pub struct Udp {
    links: Vec<Link>,
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
                Ok(Link { socket, addr, raw })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Udp { links })
    }
}

impl Backend for Udp {
    fn describe(&self) -> (BackendKind, Option<crate::control::XdpStatus>) {
        (BackendKind::Udp, None)
    }

    fn shards(&self) -> u16 {
        1
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
                let served = serve(&self.links, shard, &env);
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
fn serve(links: &[Link], mut shard: Shard, env: &Env) -> Result<(), Error> {
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
        if pfds.len() > links.len() && pfds[links.len()].revents != 0 {
            shard.core.committer.clear_wakeup();
        }
        for late in shard.take_late() {
            let link = &links[usize::from(late.back.link)];
            let mut tx = vec![0u8; HEADROOM + late.bytes.len()];
            tx[HEADROOM..].copy_from_slice(&late.bytes);
            report(link, send(link, &mut tx, &late.reply), &late.reply);
        }
        held.release(shard.core.durable(), &mut shard.latency, |mut w| {
            let link = &links[w.link];
            report(link, send(link, &mut w.tx, &w.reply), &w.reply);
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
                if answer.after == 0 {
                    report(link, send(link, &mut tx, &reply), &reply);
                    shard
                        .latency
                        .saturating_record(since.elapsed().as_nanos() as u64);
                } else {
                    let tx = tx[..HEADROOM + reply.len].to_vec();
                    held.push(answer.after, since, Waiting { link: i, reply, tx });
                }
            }
        }
    }
    Ok(())
}

fn report(link: &Link, sent: io::Result<()>, reply: &Reply) {
    if let Err(e) = sent {
        tracing::warn!(
            "sending {} to {} on {} failed: {e}",
            reply.kind.name(),
            reply.to.ip(),
            link.socket.ifname
        );
    }
}

/// Sends the reply at `tx[HEADROOM..]` where RFC 2131 §4.1 says it goes.
fn send(link: &Link, tx: &mut [u8], reply: &Reply) -> io::Result<()> {
    let port = reply.to.port();
    let to = match (reply.to, &link.raw) {
        (Destination::Hardware { mac, .. }, Some((raw, our_mac))) => {
            let len = frame::write_udp(tx, &reply.addressing(*our_mac, mac, None), reply.len);
            return raw.send_one(&tx[..len]);
        }
        (Destination::Hardware { .. }, None) => SocketAddrV4::new(Ipv4Addr::BROADCAST, port),
        (other, _) => SocketAddrV4::new(other.ip(), port),
    };
    link.socket
        .send(&tx[HEADROOM..HEADROOM + reply.len], to, reply.from)
}
