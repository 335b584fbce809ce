//! The loopback backend: a server's links in memory, for whole servers and failover
//! pairs inside one test process, without root, sockets or namespaces. A test hands
//! datagrams to the [`Wire`] as a client or relay would send them; each goes to the
//! shard its client hashes to (RFC 3074, as the XDP program steers), and the replies
//! come back from the wire with where they were addressed. Everything else (journal,
//! failover link, control socket) is the runtime's, as with the other backends.

use std::net::Ipv4Addr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::LinkId;
use crate::control::{BackendKind, XdpStatus};
use crate::runtime::env::Env;
use crate::runtime::shard::{Held, Return, Shard};
use crate::runtime::{Backend, BackendError, Serving};
use dhcp_proto::engine::{Destination, RxMeta};
use dhcp_proto::wire::{code, Message};

/// Datagrams a shard's inbox holds; beyond them the wire drops, as a full socket would.
const INBOX: usize = 4096;

/// A datagram on its way to the server.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub link: LinkId,
    /// The IP destination: the server's address, or the broadcast address.
    pub dst: Ipv4Addr,
    pub bytes: Vec<u8>,
}

/// A reply the server sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub link: LinkId,
    pub to: Destination,
    /// The source address: the server identifier it carries.
    pub from: Ipv4Addr,
    pub bytes: Vec<u8>,
}

/// The network side of a loopback server: what a test sends and receives, from any
/// thread.
pub struct Wire {
    inboxes: Vec<SyncSender<Datagram>>,
    replies: Mutex<Receiver<Sent>>,
}

impl Wire {
    /// Sends `d` to the shard its client belongs to; false when that shard's inbox is
    /// full or the server has stopped (the datagram is lost, as on a network).
    pub fn send(&self, d: Datagram) -> bool {
        let shard = Message::parse(&d.bytes).map_or(0, |m| {
            let hash = dhcp_ebpf_common::client_key_hash(m.option(code::CLIENT_ID), m.chaddr());
            usize::from(hash) % self.inboxes.len()
        });
        match self.inboxes[shard].try_send(d) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The next reply, waiting at most `limit` for one.
    pub fn recv(&self, limit: Duration) -> Option<Sent> {
        self.replies.lock().ok()?.recv_timeout(limit).ok()
    }

    /// Every reply sent so far.
    pub fn drain(&self) -> Vec<Sent> {
        self.replies
            .lock()
            .map(|r| r.try_iter().collect())
            .unwrap_or_default()
    }
}

/// The backend end of the wire: each shard's inbox, and where replies go.
pub struct Loopback {
    inboxes: Vec<Receiver<Datagram>>,
    replies: Sender<Sent>,
    /// The server's address on each link, for broadcasts.
    addrs: Vec<Ipv4Addr>,
}

impl Loopback {
    /// A server of `shards` shards whose links have the addresses `addrs` (by `LinkId`).
    pub fn new(shards: u16, addrs: Vec<Ipv4Addr>) -> (Loopback, Wire) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..shards.max(1))
            .map(|_| mpsc::sync_channel(INBOX))
            .unzip();
        let (replies, from_server) = mpsc::channel();
        (
            Loopback {
                inboxes: receivers,
                replies,
                addrs,
            },
            Wire {
                inboxes,
                replies: Mutex::new(from_server),
            },
        )
    }
}

impl Backend for Loopback {
    fn describe(&self) -> (BackendKind, Option<XdpStatus>) {
        (BackendKind::Loopback, None)
    }

    fn shards(&self) -> u16 {
        self.inboxes.len() as u16
    }

    fn start(
        self: Box<Self>,
        shards: Vec<Shard>,
        env: &Env,
    ) -> Result<Box<dyn Serving>, BackendError> {
        let mut threads = Vec::new();
        for (shard, inbox) in shards.into_iter().zip(self.inboxes) {
            let port = Port {
                inbox,
                replies: self.replies.clone(),
                addrs: self.addrs.clone(),
            };
            let env = env.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!(
                        "loopback-{}-{}",
                        self.addrs.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
                        shard.index()
                    ))
                    .spawn(move || port.serve(shard, &env))?,
            );
        }
        Ok(Box::new(Running { threads }))
    }
}

struct Running {
    threads: Vec<JoinHandle<()>>,
}

impl Serving for Running {
    fn ready(&self) -> Vec<String> {
        vec![format!(
            "with the loopback backend: {} shards",
            self.threads.len()
        )]
    }

    fn join(self: Box<Self>) -> Result<(), BackendError> {
        for t in self.threads {
            t.join().map_err(|_| "a loopback shard panicked")?;
        }
        Ok(())
    }
}

/// One shard's end of the wire.
struct Port {
    inbox: Receiver<Datagram>,
    replies: Sender<Sent>,
    addrs: Vec<Ipv4Addr>,
}

impl Port {
    /// The shard's loop (see `runtime::shard`), until the stop.
    fn serve(self, mut shard: Shard, env: &Env) {
        let mut held: Held<Sent> = Held::default();
        let mut out = vec![0u8; 1500];
        while !env.stop.requested() {
            let now = env.clock.now();
            shard.turn(now);
            for late in shard.take_late() {
                let _ = self.replies.send(Sent {
                    link: late.back.link,
                    to: late.reply.to,
                    from: late.reply.from,
                    bytes: late.bytes.into(),
                });
            }
            held.release(shard.core.durable(), &mut shard.latency, |sent| {
                let _ = self.replies.send(sent);
            });
            // Held replies wait on the journal, which wakes nobody here: look again soon.
            let wait = if held.is_empty() {
                shard.max_wait()
            } else {
                Duration::from_millis(1)
            };
            let d = match self.inbox.recv_timeout(wait) {
                Ok(d) => d,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                    continue;
                }
            };
            // The wait may have been long on a clock that a test moves: the datagram
            // is answered at the time it is read, as the other backends do after poll.
            let now = env.clock.now();
            let since = Instant::now();
            let broadcast = d.dst.is_broadcast();
            let meta = RxMeta {
                link: d.link,
                local_addr: match self.addrs.get(usize::from(d.link)) {
                    Some(&a) if broadcast => a,
                    _ => d.dst,
                },
                broadcast,
            };
            let back = Return {
                link: d.link,
                next_hop: [0; 6],
                vlan: None,
            };
            let Some(answer) = shard.core.handle(&d.bytes, &meta, now, &mut out, back) else {
                continue;
            };
            let sent = Sent {
                link: d.link,
                to: answer.reply.to,
                from: answer.reply.from,
                bytes: out[..answer.reply.len].to_vec(),
            };
            if answer.after == 0 {
                shard
                    .latency
                    .saturating_record(since.elapsed().as_nanos() as u64);
                let _ = self.replies.send(sent);
            } else {
                held.push(answer.after, since, sent);
            }
        }
    }
}
