//! Bulk leasequery (RFC 6926) over TCP: the thin I/O layer around
//! `dhcp_proto::leasequery::bulk`, on its own thread and current-thread tokio runtime,
//! one task per connection.
//!
//! The shards are asked through the same bounded lock-free queues as the control
//! socket's questions, and answer between two batches of packets. A query that walks
//! the tables (by relay id, remote id, or all) goes one bounded step per shard at a
//! time (`SCAN_SLOTS` slots), with each shard's cursor kept here: while the requester is
//! sent one round of bindings, the next round is being gathered, and no shard ever
//! does more than one step per turn for a connection. A requester that stops reading
//! holds only its own task, which gives up after `bulk-timeout` without progress; the
//! shards and the other connections never wait for it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, info, warn};

use super::clock::Clock;
use super::operate::{Ask, Question, Questions, Told};
use crate::config::{BulkLeasequery, Config, Ipv4Net};
use crate::control::BulkStats;
use dhcp_proto::engine::SlotId;
use dhcp_proto::leasequery::bulk::{self, status, Asked, Query, Replier};
use dhcp_proto::leasequery::{Binding, Key};

/// Slots a shard looks at in one step of a walking query: a bounded share of a shard's
/// turn, and enough bindings per step that one requester is sent about 300,000 a second
/// (`lq-bulk`) although an idle shard turns only every 20 ms.
const SCAN_SLOTS: usize = 8192;
/// Replies gathered before they are written to the socket.
const WRITE_CHUNK: usize = 256 * 1024;
/// How often a question is offered again to a shard whose queue is full.
const QUEUE_RETRY: Duration = Duration::from_millis(1);

/// What the listener counts, read by `stats` and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    malformed: AtomicU64,
    queries: AtomicU64,
    bindings_sent: AtomicU64,
}

impl Counters {
    pub fn read(&self) -> BulkStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BulkStats {
            accepted: r(&self.accepted),
            refused: r(&self.refused),
            timed_out: r(&self.timed_out),
            malformed: r(&self.malformed),
            queries: r(&self.queries),
            bindings_sent: r(&self.bindings_sent),
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The running listener.
pub struct Listener {
    pub counters: Arc<Counters>,
    /// Where it listens (the configured address, with the port the system chose when
    /// it was 0).
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Listener {
    /// Closes the listener and every connection, then waits for its thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        if self.thread.join().is_err() {
            warn!("the bulk leasequery thread panicked");
        }
    }
}

/// What every connection shares.
struct Shared {
    requesters: Vec<Ipv4Net>,
    shards: Vec<Questions>,
    counters: Arc<Counters>,
    timeout: Duration,
    all_local: bool,
    clock: Clock,
}

/// Starts listening when the configuration turns bulk leasequery on and names who may
/// ask; `shards` are the shards' question queues, by index.
pub fn start(
    config: &Config,
    shards: Vec<Questions>,
    clock: Clock,
) -> io::Result<Option<Listener>> {
    let Some(BulkLeasequery {
        listen,
        connections,
        timeout,
    }) = config.bulk_leasequery
    else {
        return Ok(None);
    };
    if config.policy.leasequery.is_empty() {
        info!("bulk leasequery is on but [leasequery] requesters is empty: not listening");
        return Ok(None);
    }
    // Bound here, so a port in use stops the start with a clear error.
    let socket = std::net::TcpListener::bind(listen)?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        requesters: config.policy.leasequery.clone(),
        shards,
        counters: counters.clone(),
        timeout: Duration::from_secs(u64::from(timeout)),
        all_local: config.policy.failover.is_none(),
        clock,
    });
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("bulk-leasequery".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(accept(socket, shared, usize::from(connections), stopped));
        })?;
    info!("bulk leasequery listening on TCP {addr}, at most {connections} connection(s)");
    Ok(Some(Listener {
        counters,
        addr,
        stop,
        thread,
    }))
}

/// Accepts connections until the stop; dropping the runtime afterwards ends every
/// connection's task.
async fn accept(
    socket: std::net::TcpListener,
    shared: Arc<Shared>,
    connections: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            warn!("bulk leasequery: cannot listen: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    warn!("bulk leasequery: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Counters::add(&shared.counters.refused, 1);
            warn!(
                "bulk leasequery from {peer}: refused, {connections} connection(s) already served (bulk-connections)"
            );
            continue;
        };
        let allowed =
            v4(peer.ip()).is_some_and(|a| shared.requesters.iter().any(|n| n.contains(a)));
        if allowed {
            Counters::add(&shared.counters.accepted, 1);
            debug!("bulk leasequery from {peer}: connected");
        } else {
            Counters::add(&shared.counters.refused, 1);
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let server_id = stream
                .local_addr()
                .ok()
                .and_then(|a| v4(a.ip()))
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let mut conn = Conn {
                stream,
                peer,
                replier: Replier {
                    server_id,
                    all_local: shared.all_local,
                },
                shared,
                scratch: vec![0; bulk::MAX_FRAME],
                out: Vec::with_capacity(WRITE_CHUNK + bulk::MAX_FRAME),
                unsent: 0,
            };
            let end = conn.serve(allowed).await;
            conn.end(end);
        });
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The requester closed it between queries.
    Closed,
    /// The requester closed it in the middle of a frame.
    ClosedPartial,
    TimedOut(&'static str),
    /// A frame that was not a query; a status was sent.
    Malformed(String),
    /// A peer outside `requesters`; NotAllowed was sent.
    NotAllowed,
    /// A shard could not be asked or did not answer; UnspecFail was sent.
    Busy(&'static str),
    Io(io::Error),
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    replier: Replier,
    shared: Arc<Shared>,
    /// One reply is written here, then appended to `out`.
    scratch: Vec<u8>,
    /// Replies not yet written to the socket.
    out: Vec<u8>,
    /// Binding messages in `out`, counted as sent once written.
    unsent: u64,
}

impl Conn {
    /// Reads queries and answers them, one at a time, until the connection ends.
    async fn serve(&mut self, allowed: bool) -> End {
        let mut inbox: Vec<u8> = Vec::with_capacity(4096);
        loop {
            let frame = match bulk::next_frame(&inbox) {
                Ok(f) => f,
                Err(e) => {
                    let why = e.to_string();
                    let end = self.refuse(0, status::MALFORMED_QUERY, &why).await;
                    return end.unwrap_or(End::Malformed(why));
                }
            };
            let Some((message, used)) = frame else {
                match self.read_more(&mut inbox).await {
                    Ok(()) => continue,
                    Err(end) => return end,
                }
            };
            let asked = bulk::read_query(message);
            let end = match asked {
                Err(e) => {
                    let why = format!("not a DHCP request: {e}");
                    let xid = bulk::xid_of(message);
                    Some(
                        self.refuse(xid, status::MALFORMED_QUERY, &why)
                            .await
                            .unwrap_or(End::Malformed(why)),
                    )
                }
                Ok(_) if !allowed => {
                    let xid = bulk::xid_of(message);
                    let why = "not an allowed requester";
                    Some(
                        self.refuse(xid, status::NOT_ALLOWED, why)
                            .await
                            .unwrap_or(End::NotAllowed),
                    )
                }
                Ok(Asked::Unsupported { xid, kind }) => {
                    // The framing holds, so the connection may go on with a real query.
                    Counters::add(&self.shared.counters.malformed, 1);
                    info!(
                        "bulk leasequery from {}: a {} (xid {xid:#010x}) is not a DHCPBULKLEASEQUERY, answered UnspecFail",
                        self.peer,
                        kind.name()
                    );
                    let text = "only DHCPBULKLEASEQUERY is answered on this connection";
                    self.status(xid, status::UNSPEC_FAIL, text).await.err()
                }
                Ok(Asked::Query(q)) => self.run(&q).await.err(),
            };
            if let Some(end) = end {
                return end;
            }
            inbox.drain(..used);
        }
    }

    /// Reads more of the next frame, within the timeout.
    async fn read_more(&mut self, inbox: &mut Vec<u8>) -> Result<(), End> {
        inbox.reserve(4096);
        let read = tokio::time::timeout(self.shared.timeout, self.stream.read_buf(inbox)).await;
        match read {
            Err(_) if inbox.is_empty() => Err(End::TimedOut("no query came")),
            Err(_) => Err(End::TimedOut("a frame was left partial")),
            Ok(Ok(0)) if inbox.is_empty() => Err(End::Closed),
            Ok(Ok(0)) => Err(End::ClosedPartial),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
        }
    }

    /// Answers a query that is not run with a status, and ends the connection: `None`
    /// once the status is sent (the caller says why it ends), or how sending it failed.
    async fn refuse(&mut self, xid: u32, code: u8, why: &str) -> Option<End> {
        if code == status::MALFORMED_QUERY {
            Counters::add(&self.shared.counters.malformed, 1);
        }
        self.status(xid, code, why).await.err()
    }

    async fn status(&mut self, xid: u32, code: u8, text: &str) -> Result<(), End> {
        match self.replier.status(xid, code, text, &mut self.scratch) {
            Ok(n) => self.out.extend_from_slice(&self.scratch[..n]),
            Err(e) => warn!("bulk leasequery: cannot write a status: {e}"),
        }
        self.flush().await
    }

    /// Runs one query to its DHCPLEASEQUERYDONE.
    async fn run(&mut self, q: &Query<'_>) -> Result<(), End> {
        let key = Arc::new(q.key.clone());
        let now = self.shared.clock.now();
        let walk = matches!(*key, Key::RelayId(_) | Key::RemoteId(_) | Key::All);
        let mut sent = 0u64;
        let count = self.shared.shards.len();
        // Each shard's next slot; `None` once it has no more.
        let mut cursors: Vec<Option<SlotId>> = vec![Some(0); count];
        let mut waiting = match self.ask_round(&key, walk, &cursors).await {
            Ok(w) => w,
            Err(why) => return self.fail(q, why).await,
        };
        while !waiting.is_empty() {
            let mut round = Vec::with_capacity(waiting.len());
            for (shard, rx) in waiting {
                let told = tokio::time::timeout(self.shared.timeout, rx).await;
                let Ok(Ok(Told::Bindings(found, next))) = told else {
                    return self.fail(q, "a worker did not answer in time").await;
                };
                cursors[shard] = if walk { next } else { None };
                round.push(found);
            }
            // The next round is gathered while this one is written.
            waiting = match self.ask_round(&key, walk, &cursors).await {
                Ok(w) => w,
                Err(why) => return self.fail(q, why).await,
            };
            for b in round.iter().flatten().filter(|b| q.window.admits(b)) {
                self.add_binding(q, b, now);
                sent += 1;
                if self.out.len() >= WRITE_CHUNK {
                    self.flush().await?;
                }
            }
        }
        match self.replier.done(q, &mut self.scratch) {
            Ok(n) => self.out.extend_from_slice(&self.scratch[..n]),
            Err(e) => warn!("bulk leasequery: cannot write DHCPLEASEQUERYDONE: {e}"),
        }
        self.flush().await?;
        Counters::add(&self.shared.counters.queries, 1);
        info!(
            "bulk leasequery from {}: {sent} bindings sent (query by {}, xid {:#010x})",
            self.peer,
            describe(&key),
            q.xid()
        );
        Ok(())
    }

    fn add_binding(&mut self, q: &Query<'_>, b: &Binding, now: u64) {
        match self.replier.binding(q, b, now, &mut self.scratch) {
            Ok(n) => {
                self.out.extend_from_slice(&self.scratch[..n]);
                self.unsent += 1;
            }
            // Cannot happen with room for the largest frame; say so rather than stop.
            Err(e) => warn!("bulk leasequery: binding of {} not written: {e}", b.addr),
        }
    }

    /// Asks every shard that has more for its next step (a walk) or its bindings (a key
    /// found by index, in the first round only).
    async fn ask_round(
        &self,
        key: &Arc<Key>,
        walk: bool,
        cursors: &[Option<SlotId>],
    ) -> Result<Vec<(usize, oneshot::Receiver<Told>)>, &'static str> {
        let mut waiting = Vec::new();
        for (shard, from) in cursors.iter().enumerate() {
            let Some(from) = *from else { continue };
            let ask = if walk {
                Ask::Scan {
                    key: key.clone(),
                    from,
                    slots: SCAN_SLOTS,
                }
            } else {
                Ask::Find(key.clone())
            };
            waiting.push((shard, self.push(shard, ask).await?));
        }
        Ok(waiting)
    }

    /// Puts a question on a shard's queue, waiting while it is full, up to the timeout.
    async fn push(&self, shard: usize, ask: Ask) -> Result<oneshot::Receiver<Told>, &'static str> {
        let (mut question, rx) = Question::awaited(ask);
        let queue = &self.shared.shards[shard];
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        loop {
            match queue.push(question) {
                Ok(()) => return Ok(rx),
                Err(back) if tokio::time::Instant::now() < deadline => {
                    question = back;
                    tokio::time::sleep(QUEUE_RETRY).await;
                }
                Err(_) => return Err("a worker has too many requests waiting"),
            }
        }
    }

    /// The server cannot finish a query: the requester is told with UnspecFail (what it
    /// was sent so far stands) and the connection ends.
    async fn fail(&mut self, q: &Query<'_>, why: &'static str) -> Result<(), End> {
        self.status(q.xid(), status::UNSPEC_FAIL, why).await?;
        Err(End::Busy(why))
    }

    /// Writes what waits in `out`, giving up when the requester takes nothing for the
    /// timeout.
    async fn flush(&mut self) -> Result<(), End> {
        let mut at = 0;
        while at < self.out.len() {
            let wrote =
                tokio::time::timeout(self.shared.timeout, self.stream.write(&self.out[at..])).await;
            match wrote {
                Err(_) => return Err(End::TimedOut("the requester stopped reading")),
                Ok(Ok(0)) => return Err(End::Closed),
                Ok(Ok(n)) => at += n,
                Ok(Err(e)) => return Err(End::Io(e)),
            }
        }
        self.out.clear();
        Counters::add(&self.shared.counters.bindings_sent, self.unsent);
        self.unsent = 0;
        Ok(())
    }

    /// Counts and logs how the connection ended.
    fn end(&self, end: End) {
        let peer = self.peer;
        match end {
            End::Closed => debug!("bulk leasequery from {peer}: closed by the requester"),
            End::ClosedPartial => info!("bulk leasequery from {peer}: closed by the requester in the middle of a query"),
            End::TimedOut(why) => {
                Counters::add(&self.shared.counters.timed_out, 1);
                warn!(
                    "bulk leasequery from {peer}: closed after {} s without progress: {why}",
                    self.shared.timeout.as_secs()
                );
            }
            End::Malformed(why) => warn!("bulk leasequery from {peer}: malformed frame ({why}), answered MalformedQuery and closed"),
            End::NotAllowed => warn!("bulk leasequery from {peer}: not an allowed requester ([leasequery] requesters), answered NotAllowed and closed"),
            End::Busy(why) => warn!("bulk leasequery from {peer}: query cut short: {why}, answered UnspecFail and closed"),
            End::Io(e) => info!("bulk leasequery from {peer}: connection failed: {e}"),
        }
    }
}

/// A key as a log line names it.
fn describe(key: &Key) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match key {
        Key::Address(a) => format!("address {a}"),
        Key::ClientId(id) => format!("client id {}", hex(id)),
        Key::Hardware { hw, hlen, .. } => {
            format!("hardware address {}", hex(&hw[..usize::from(*hlen)]))
        }
        Key::RelayId(id) => format!("relay id {}", hex(id)),
        Key::RemoteId(id) => format!("remote id {}", hex(id)),
        Key::All => "all".into(),
    }
}
