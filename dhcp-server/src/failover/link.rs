//! The failover link: the thin I/O layer that drives the machine over TCP on its own
//! thread and tokio runtime. The primary connects to its partner and retries every few
//! seconds; the secondary listens and takes one connection, from its partner's address
//! only (anything else is closed at once and counted). The secondary binds its port
//! before `spawn` returns, so it is bound while the server still may bind port 647. Everything the machine asks of the leases goes to the `Shards`, which the
//! workers answer between two batches of packets: no worker ever waits on the partner,
//! and the link reads the partner's next updates while the workers apply the last.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::shards::Shards;
use crate::config::Failover;
use crate::journal::Lease;
use crate::runtime::env::Env;
use dhcp_proto::failover::machine::{Machine, Output, Params, Refused, Status, Stored};
use dhcp_proto::failover::message::Envelope;
use dhcp_proto::failover::wire;
use dhcp_proto::failover::Endpoints;

/// Seconds between the primary's connection attempts.
const RECONNECT: Duration = Duration::from_secs(5);
/// How often the link collects the workers' lease changes and checks its timers.
const POLL: Duration = Duration::from_millis(10);
/// How often it looks at the journal while the partner's bindings wait to be on disk.
const DISK_POLL: Duration = Duration::from_millis(1);
/// Writes to the partner are at least this far apart, unless a lot waits: under load
/// each TCP segment costs both servers more than the messages in it (on a veth the
/// sender's CPU even runs the receiver's stack), so messages that come in between are
/// sent together. An idle link writes at once.
const WRITE_GAP: Duration = Duration::from_millis(1);
/// What may wait for the next write.
const WRITE_MAX: usize = 64 * 1024;

/// Requests from the control socket.
pub enum Command {
    Status(oneshot::Sender<Status>),
    PartnerDown(oneshot::Sender<Result<(), Refused>>),
    Resync(oneshot::Sender<Result<(), Refused>>),
}

/// The control side's handle on a running link.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    /// The latest status, for readers that must not wait (stats, metrics).
    pub latest: Arc<Mutex<Option<Status>>>,
    replicated: super::shards::Replicated,
    /// Connections turned away: not from the partner's address, or a second one.
    refused: Arc<AtomicU64>,
}

impl Handle {
    /// Connections refused since start (see `refused`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn status(&self) -> Option<Status> {
        self.ask(Command::Status).await
    }

    pub async fn partner_down(&self) -> Result<(), CommandError> {
        Ok(self
            .ask(Command::PartnerDown)
            .await
            .ok_or(CommandError::Stopped)??)
    }

    /// The run-time reservations the partner added (`Some`) or ended since the last
    /// call (the shards have applied and journaled them).
    pub fn take_replicated(&self) -> Vec<super::shards::ReservationChange> {
        std::mem::take(&mut *self.replicated.lock())
    }

    pub async fn resync(&self) -> Result<(), CommandError> {
        Ok(self
            .ask(Command::Resync)
            .await
            .ok_or(CommandError::Stopped)??)
    }
}

/// Why an operator's command to the link did not take.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("the failover link has stopped")]
    Stopped,
}

/// Starts the link on its own thread. It runs until `stop` turns true.
pub fn spawn(
    params: Params,
    endpoints: Endpoints,
    stored: Option<Stored>,
    shards: Box<dyn Shards>,
    replicated: super::shards::Replicated,
    stop: watch::Receiver<bool>,
    env: Env,
) -> io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(16);
    let latest = Arc::new(Mutex::new(None));
    let refused = Arc::new(AtomicU64::new(0));
    let handle = Handle {
        commands: tx,
        latest: latest.clone(),
        replicated,
        refused: refused.clone(),
    };
    let primary = params.role == dhcp_proto::failover::Role::Primary;
    let name = params.name.clone();
    // Bound here, not on the link's thread: the server may drop its privileges as soon
    // as it starts, and the failover port (647) is a privileged one.
    let listener = if primary {
        None
    } else {
        match std::net::TcpListener::bind(SocketAddr::V4(endpoints.local))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(
                    "failover peer {name}: cannot listen on {}: {e}",
                    endpoints.local
                );
                None
            }
        }
    };
    // The workers run until the link has told the partner it stops (and journaled it).
    let hold = env.stop.hold();
    let thread_name = format!("failover-{}", params.role.name());
    let driver = Driver {
        machine: Machine::new(params, stored, env.clock.now()),
        shards,
        changes: Vec::new(),
        latest,
        out: Vec::new(),
        wrote: None,
        env,
    };
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let _hold = hold;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let link = Link {
                primary,
                name,
                endpoints,
                listener,
                refused,
            };
            runtime.block_on(run(driver, link, rx, stop));
        })?;
    Ok((handle, thread))
}

struct Driver {
    machine: Machine,
    shards: Box<dyn Shards>,
    changes: Vec<Lease>,
    latest: Arc<Mutex<Option<Status>>>,
    /// Messages for the partner not written yet, and when the last write was.
    out: Vec<u8>,
    wrote: Option<Instant>,
    /// The server's clock and stop token.
    env: Env,
}

/// How the link finds its partner: the secondary's listener (bound in `spawn`) and
/// where it counts the connections it turns away.
struct Link {
    primary: bool,
    name: String,
    endpoints: Endpoints,
    listener: Option<std::net::TcpListener>,
    refused: Arc<AtomicU64>,
}

async fn run(
    mut d: Driver,
    link: Link,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    d.settle::<tokio::net::TcpStream>(None).await;
    let listener = link.listener.and_then(|l| {
        TcpListener::from_std(l)
            .map_err(|e| warn!("failover peer {}: listener unusable: {e}", link.name))
            .ok()
    });
    // Connections come from their own task, so its pauses between attempts survive
    // the timer ticks of this loop; it makes the next one only once this one closed.
    let (found, mut connections) = mpsc::channel(1);
    let closed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(connector(
        link.primary,
        link.endpoints,
        listener,
        link.name,
        link.refused,
        found,
        closed.clone(),
    ));
    loop {
        if d.env.stop.asked() {
            // The link went while the partner was being told: the stop ends all the same.
            d.machine.finish_stop(d.env.clock.now());
            d.settle::<tokio::net::TcpStream>(None).await;
            return;
        }
        let stream = tokio::select! {
            _ = stop.changed() => return,
            s = connections.recv() => match s {
                Some(s) => s,
                None => return,
            },
            () = d.idle(&mut commands) => continue,
        };
        if *stop.borrow() {
            return;
        }
        d.machine.link_up(d.env.clock.now());
        let done = d.serve(stream, &mut commands, &mut stop).await;
        d.shards.forget();
        d.machine.link_down(d.env.clock.now());
        d.settle::<tokio::net::TcpStream>(None).await;
        closed.notify_one();
        if done {
            return;
        }
    }
}

/// Finds connections one at a time: hands one over, then waits for it to close. The
/// secondary turns away whatever else connects meanwhile (dhcpd refuses a second link).
async fn connector(
    primary: bool,
    endpoints: Endpoints,
    listener: Option<TcpListener>,
    name: String,
    refused: Arc<AtomicU64>,
    found: mpsc::Sender<tokio::net::TcpStream>,
    closed: Arc<tokio::sync::Notify>,
) {
    loop {
        let s = next_connection(primary, &endpoints, listener.as_ref(), &name, &refused).await;
        if found.send(s).await.is_err() {
            return;
        }
        match &listener {
            Some(l) => loop {
                tokio::select! {
                    () = closed.notified() => break,
                    r = l.accept() => if let Ok((_, from)) = r {
                        refused.fetch_add(1, Ordering::Relaxed);
                        info!("failover peer {name}: second connection from {from} refused: already connected");
                    },
                }
            },
            None => {
                closed.notified().await;
                // dhcpd waits 5 s before it dials again after a lost link.
                tokio::time::sleep(RECONNECT).await;
            }
        }
    }
}

/// The next connection: the primary dials its partner (after a pause between tries), the
/// secondary accepts one from the partner's address.
async fn next_connection(
    primary: bool,
    endpoints: &Endpoints,
    listener: Option<&TcpListener>,
    name: &str,
    refused: &AtomicU64,
) -> tokio::net::TcpStream {
    loop {
        if primary {
            let socket = TcpSocket::new_v4();
            let attempt = async {
                let socket = socket?;
                // Binding to our address makes the partner see the one it expects.
                socket.bind(SocketAddr::V4(SocketAddrV4::new(*endpoints.local.ip(), 0)))?;
                socket.connect(SocketAddr::V4(endpoints.peer)).await
            };
            match tokio::time::timeout(RECONNECT, attempt).await {
                Ok(Ok(s)) => {
                    info!("failover peer {name}: connected to {}", endpoints.peer);
                    let _ = s.set_nodelay(true);
                    return s;
                }
                Ok(Err(e)) => info!("failover peer {name}: {}: {e}", endpoints.peer),
                Err(_) => info!("failover peer {name}: {}: timed out", endpoints.peer),
            }
            tokio::time::sleep(RECONNECT).await;
        } else {
            let Some(l) = listener else {
                std::future::pending::<()>().await;
                unreachable!("pending never completes");
            };
            match l.accept().await {
                Ok((s, from)) if from.ip() == std::net::IpAddr::V4(*endpoints.peer.ip()) => {
                    info!("failover peer {name}: connection from {from}");
                    let _ = s.set_nodelay(true);
                    return s;
                }
                Ok((_, from)) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    warn!("failover peer {name}: connection from {from}, not the partner; closed")
                }
                Err(e) => {
                    warn!("failover peer {name}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Driver {
    /// Between connections: keep timers, lease changes and commands going.
    async fn idle(&mut self, commands: &mut mpsc::Receiver<Command>) {
        let woken = self.shards.woken();
        tokio::select! {
            () = tokio::time::sleep(self.poll()) => {}
            () = woken.notified() => {}
            Some(c) = commands.recv() => self.command(c),
        }
        self.machine.tick(self.env.clock.now());
        self.collect_changes();
        self.settle::<tokio::net::TcpStream>(None).await;
    }

    /// Runs one connection until it closes; true when the link must stop for good.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        commands: &mut mpsc::Receiver<Command>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut inbox: Vec<u8> = Vec::with_capacity(4096);
        let mut buf = vec![0u8; 16 * 1024];
        if !self.settle(Some(&mut stream)).await {
            return false;
        }
        let mut stopping = false;
        let woken = self.shards.woken();
        loop {
            if self.env.stop.asked() {
                let now = self.env.clock.now();
                if !stopping {
                    stopping = true;
                    self.machine.stop(now);
                } else if self.machine.stopped(now) {
                    self.machine.finish_stop(now);
                    self.settle(Some(&mut stream)).await;
                    self.write(&mut stream).await;
                    return true;
                }
            }
            tokio::select! {
                _ = stop.changed() => return true,
                Some(c) = commands.recv() => self.command(c),
                () = tokio::time::sleep(self.poll()) => {}
                () = woken.notified() => {}
                r = stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        inbox.extend_from_slice(&buf[..n]);
                        if !self.take_frames(&mut inbox) {
                            return false;
                        }
                    }
                },
            }
            self.machine.tick(self.env.clock.now());
            self.collect_changes();
            if !self.settle(Some(&mut stream)).await {
                return false;
            }
        }
    }

    /// How long the loop may sleep: not long while the partner's bindings wait for the
    /// disk, as their acknowledgements do, or messages wait for their write.
    fn poll(&self) -> Duration {
        let base = if self.shards.waits_for_disk() {
            DISK_POLL
        } else {
            POLL
        };
        match self.wrote {
            Some(t) if !self.out.is_empty() => base.min(WRITE_GAP.saturating_sub(t.elapsed())),
            _ => base,
        }
    }

    fn write_due(&self) -> bool {
        self.out.len() >= WRITE_MAX || self.wrote.is_none_or(|t| t.elapsed() >= WRITE_GAP)
    }

    /// Writes what waits; false on a broken stream.
    async fn write<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> bool {
        if self.out.is_empty() {
            return true;
        }
        self.wrote = Some(Instant::now());
        let written = stream.write_all(&self.out).await.is_ok();
        self.out.clear();
        written
    }

    /// Hands every complete message in `inbox` to the machine; false on a broken stream.
    fn take_frames(&mut self, inbox: &mut Vec<u8>) -> bool {
        let mut used = 0;
        loop {
            match wire::frame_len(&inbox[used..]) {
                Ok(Some(len)) if inbox.len() - used >= len => {
                    match Envelope::decode(&inbox[used..used + len]) {
                        Ok(env) => self.machine.receive(env, self.env.clock.now()),
                        Err(e) => warn!("failover: malformed message dropped: {e}"),
                    }
                    used += len;
                }
                Ok(_) => break,
                Err(e) => {
                    warn!("failover: broken message stream: {e}");
                    return false;
                }
            }
        }
        inbox.drain(..used);
        true
    }

    fn collect_changes(&mut self) {
        self.shards.changes(&mut self.changes);
        let now = self.env.clock.now();
        for lease in self.changes.drain(..) {
            self.machine.lease_changed(lease, now);
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.env.clock.now();
        match c {
            Command::Status(reply) => {
                let _ = reply.send(self.machine.status());
            }
            Command::PartnerDown(reply) => {
                let _ = reply.send(self.machine.partner_down(now));
            }
            Command::Resync(reply) => {
                let _ = reply.send(self.machine.resync(now));
            }
        }
    }

    /// Carries out everything the machine asked; false once the link must close.
    async fn settle<S: AsyncWrite + Unpin>(&mut self, stream: Option<&mut S>) -> bool {
        let mut open = true;
        let mut applying: Vec<(u32, Lease, bool)> = Vec::new();
        let mut acked: Vec<Lease> = Vec::new();
        let mut results = Vec::new();
        loop {
            let Some(o) = self.machine.poll() else {
                // Bindings go to the workers in batches; their answers make more output.
                if !acked.is_empty() {
                    self.shards.acked(&acked);
                    acked.clear();
                }
                if !applying.is_empty() {
                    self.shards.apply(std::mem::take(&mut applying));
                }
                self.shards.applied(&mut results);
                if results.is_empty() {
                    break;
                }
                let now = self.env.clock.now();
                for (xid, r) in results.drain(..) {
                    self.machine.applied(xid, r, now);
                }
                continue;
            };
            let now = self.env.clock.now();
            match o {
                Output::Send(env) => {
                    if open {
                        env.encode(&mut self.out);
                    }
                }
                Output::Close(why) => {
                    info!("failover: closing the link: {why}");
                    open = false;
                }
                Output::Record(s) => {
                    if let Err(e) = self.shards.record(&s) {
                        warn!("failover: cannot journal the failover state: {e}");
                    }
                }
                Output::View(v) => self.shards.view(v),
                Output::Apply {
                    xid,
                    lease,
                    conflict,
                } => applying.push((xid, lease, conflict)),
                Output::Acked(lease) => acked.push(lease),
                Output::Collect { all } => {
                    let leases = self.shards.collect(all);
                    self.machine.collected(leases, now);
                }
                Output::Balance { why, ownership } => {
                    let pools = self.shards.balance(ownership);
                    self.machine.balanced(why, &pools, now);
                }
            }
        }
        *self.latest.lock() = Some(self.machine.status());
        match stream {
            // What the machine says before it closes the link goes first.
            Some(s) if !open || self.write_due() => {
                if !self.write(s).await {
                    return false;
                }
            }
            Some(_) => {}
            // No link: nothing to say it on.
            None => self.out.clear(),
        }
        open
    }
}

/// A running failover link, stopped and joined on `stop` or when dropped.
pub struct Running {
    pub handle: Handle,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the link. A graceful stop (`Stop::asked`) has already told the partner.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts failover when the configuration has a partner: each of the `count` shards
/// gets its end (orders to carry out, an outbox for its changes) and the link runs.
/// `on_view` also hears of every change of the pair's rules (the XDP program's).
pub fn start(
    partnership: Option<&Failover>,
    stored: Option<Stored>,
    count: usize,
    on_view: Option<super::shards::OnView>,
    env: &Env,
) -> io::Result<Option<(Vec<super::shards::End>, Running)>> {
    let Some(f) = partnership else {
        return Ok(None);
    };
    let (ends, workers) = super::shards::wire_up(count, on_view, env.stop.clone());
    let (stop, stopped) = watch::channel(false);
    let replicated = workers.replicated();
    let (handle, thread) = spawn(
        f.params(),
        f.endpoints(),
        stored,
        Box::new(workers),
        replicated,
        stopped,
        env.clone(),
    )?;
    info!(
        "failover peer {}: {} on {}, partner {}",
        f.name,
        f.role.name(),
        f.endpoints().local,
        f.endpoints().peer
    );
    Ok(Some((
        ends,
        Running {
            handle,
            stop,
            thread: Some(thread),
        },
    )))
}
