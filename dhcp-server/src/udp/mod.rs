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
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::packet::PacketSocket;
use crate::store::{self, Committer, Release};
use crate::{control, journal, operate, shutdown};
pub use dhcp_proto::engine::SERVER_PORT;
use dhcp_proto::engine::{Destination, Engine, Outcome, Reply, RxMeta};
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
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error("control socket: {0}")]
    Control(#[from] control::ServeError),
    #[error("failover link: {0}")]
    Failover(io::Error),
}

/// An ACK written but waiting for its lease record to be durable.
struct Held {
    after: u64,
    link: usize,
    reply: Reply,
    /// The frame buffer as `send` expects it: headroom, then the reply.
    tx: Vec<u8>,
    /// When its request was received.
    since: Instant,
}

struct Link {
    socket: DhcpSocket,
    /// The interface's address, used when the kernel reports none for a datagram.
    addr: Ipv4Addr,
    /// For replies to clients without an address: the raw socket and our MAC.
    raw: Option<(PacketSocket, [u8; 6])>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Binds every configured interface; nothing is served unless all of them are up.
fn open(engine: &Engine, port: u16) -> Result<Vec<Link>, Error> {
    let config = engine.policy();
    config
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, ifname)| {
            let socket = DhcpSocket::bind(ifname, port).map_err(|source| Error::Bind {
                ifname: ifname.clone(),
                port,
                source,
            })?;
            let configured = config
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
        .collect()
}

/// Serves until a shutdown is requested (SIGTERM, SIGINT). `port` is 67 but for tests.
pub fn serve(config: Config, port: u16) -> Result<(), Error> {
    let shards = store::open(&config, 1, unix_now())?;
    let journal = shards.journal;
    let mut engine = shards.engines.into_iter().next().expect("one shard");
    let writer = shards.writers.into_iter().next().flatten();
    let mut committer = Committer::new(writer, config.durability);
    let links = open(&engine, port)?;
    let (orders, pair) = match crate::failover::link::start(&config, shards.failover, 1, None)
        .map_err(Error::Failover)?
    {
        Some((mut ends, running)) => {
            let (orders, outbox) = ends.pop().expect("one shard");
            committer.send_to_partner(outbox);
            (Some(orders), Some(running))
        }
        None => (None, None),
    };
    let questions = operate::questions();
    let facts = operate::Facts {
        backend: control::BackendKind::Udp,
        xdp: None,
        workers: 1,
        interfaces: config.policy.interfaces.clone(),
        journal: config.state_dir.clone().map(|d| (d, config.durability)),
    };
    let operated = Arc::new(
        operate::Operated::new(facts, vec![questions.clone()], vec![committer.health()])
            .running(operate::Running {
                config: config.clone(),
                reservations: shards.reservations,
                durable: vec![committer.watch()],
            })
            .with_failover(pair.as_ref().map(|p| p.handle.clone())),
    );
    let control = operate::start_control(&config, operated.clone())?;
    // With a control socket the loop looks at its questions at least this often.
    // The failover link waits on this loop for every batch of partner updates.
    let wait_ms = if pair.is_some() {
        5
    } else if control.is_some() {
        20
    } else {
        1000
    };
    let mut latency = operate::latency_histogram();
    let names: Vec<&str> = links.iter().map(|l| l.socket.ifname.as_str()).collect();
    operated.set_ready();
    tracing::info!(
        "ready: serving {} subnet(s) on {} with the udp backend",
        engine.policy().subnets.len(),
        names.join(", ")
    );
    let mut pfds: Vec<libc::pollfd> = links
        .iter()
        .map(|l| libc::pollfd {
            fd: l.socket.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    pfds.extend(committer.wakeup_fd().map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    let mut held: std::collections::VecDeque<Held> = Default::default();
    let mut rx = vec![0u8; 65536];
    let mut tx = vec![0u8; HEADROOM + 1500];
    while !shutdown::requested() {
        // SAFETY: `pfds` is a live array of pollfd of the length passed.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Poll(e));
        }
        let now = unix_now();
        engine.tick(now);
        operate::answer_all(&questions, &mut engine, &mut committer, &latency, now);
        if let Some(orders) = &orders {
            crate::failover::shards::carry_out(orders, &mut engine, &mut committer, now);
            committer.record_all(&mut engine, now);
        }
        if pfds.len() > links.len() && pfds[links.len()].revents != 0 {
            committer.clear_wakeup();
        }
        let durable = committer.durable();
        while let Some(h) = held.front_mut().filter(|h| h.after <= durable) {
            report(
                &links[h.link],
                send(&links[h.link], &mut h.tx, &h.reply),
                &h.reply,
            );
            latency.saturating_record(h.since.elapsed().as_nanos() as u64);
            held.pop_front();
        }
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
                let outcome = engine.handle(&rx[..got.len], &meta, now, &mut tx[HEADROOM..]);
                let release = committer.record(&mut engine, now);
                let Outcome::Reply(reply) = outcome else {
                    continue;
                };
                match release {
                    Release::Now | Release::Empty => {
                        report(link, send(link, &mut tx, &reply), &reply);
                        latency.saturating_record(since.elapsed().as_nanos() as u64);
                    }
                    Release::After(after) => held.push_back(Held {
                        after,
                        link: i,
                        reply,
                        tx: tx[..HEADROOM + reply.len].to_vec(),
                        since,
                    }),
                    Release::Never => {}
                }
            }
        }
    }
    tracing::info!("shutting down");
    operated.set_stopping();
    if let Some(pair) = pair {
        pair.stop();
    }
    drop(journal);
    drop(control);
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
