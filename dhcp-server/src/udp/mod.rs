//! The kernel UDP backend: one socket per listening interface, a poll loop, and the engine
//! in between. It reads the clock and passes it in; it owns no DHCP logic. Where XDP cannot
//! be used (no privileges, a laptop), this runs the same engine the AF_XDP workers do.

mod socket;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::{Destination, Engine, Outcome, Reply, RxMeta};
use crate::shutdown;
pub use socket::{interface_address, DhcpSocket};

/// The server port (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;

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
}

struct Link {
    socket: DhcpSocket,
    /// The interface's address, used when the kernel reports none for a datagram.
    addr: Ipv4Addr,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Binds every configured interface; nothing is served unless all of them are up.
fn open(engine: &Engine, port: u16) -> Result<Vec<Link>, Error> {
    let config = engine.config();
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
                .or_else(|| interface_address(ifname))
                .ok_or_else(|| Error::NoAddress {
                    ifname: ifname.clone(),
                })?;
            Ok(Link { socket, addr })
        })
        .collect()
}

/// Serves until a shutdown is requested (SIGTERM, SIGINT). `port` is 67 but for tests.
pub fn serve(mut engine: Engine, port: u16) -> Result<(), Error> {
    let links = open(&engine, port)?;
    let names: Vec<&str> = links.iter().map(|l| l.socket.ifname.as_str()).collect();
    tracing::info!(
        "ready: serving {} subnet(s) on {} with the udp backend",
        engine.config().subnets.len(),
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
    let mut rx = vec![0u8; 65536];
    let mut tx = vec![0u8; 1500];
    let mut arp_warned = false;
    while !shutdown::requested() {
        // SAFETY: `pfds` is a live array of pollfd of the length passed.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Poll(e));
        }
        let now = unix_now();
        engine.tick(now);
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
                if let Outcome::Reply(reply) = engine.handle(&rx[..got.len], &meta, now, &mut tx) {
                    if let Err(e) = send(link, &tx[..reply.len], &reply, &mut arp_warned) {
                        tracing::warn!(
                            "sending {} to {} on {} failed: {e}",
                            reply.kind.name(),
                            reply.to.ip(),
                            link.socket.ifname
                        );
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    Ok(())
}

fn send(link: &Link, buf: &[u8], reply: &Reply, arp_warned: &mut bool) -> io::Result<()> {
    let to = match reply.to {
        Destination::Hardware { ip, mac } => match link.socket.set_arp(ip, mac) {
            Ok(()) => SocketAddrV4::new(ip, reply.to.port()),
            Err(e) => {
                if !*arp_warned {
                    tracing::warn!(
                        "cannot set ARP entries on {} ({e}); broadcasting replies instead",
                        link.socket.ifname
                    );
                    *arp_warned = true;
                }
                SocketAddrV4::new(Ipv4Addr::BROADCAST, reply.to.port())
            }
        },
        other => SocketAddrV4::new(other.ip(), other.port()),
    };
    link.socket.send(buf, to, reply.from)
}
