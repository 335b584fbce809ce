//! The control socket server: binds the Unix socket (mode 0660, replacing a stale file,
//! refusing a live one), checks each peer's credentials, and serves every connection in
//! its own task on a current-thread tokio runtime running on a thread of its own.
//!
//! Nothing a client sends can stop the others: lines are capped, a silent client is
//! dropped after `idle_timeout`, a client that does not read its replies after
//! `WRITE_TIMEOUT`, connections beyond `max_connections` are told "busy" and closed, and
//! backend calls run on a bounded blocking pool so a slow one holds up only its caller.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};

use super::protocol::{parse_request, Command, ProtocolError, Reply, MAX_LINE};
use super::server::Server;
use super::types::{ControlError, Stats};
use super::{http, metrics};
use crate::config::ClientNet;

/// How long a reply may wait for a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Backend calls in flight at once; more wait their turn (each holds a thread).
const BLOCKING_CALLS: usize = 4;
/// How long stopping waits for calls already in a backend before leaving them behind.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long a command the backend answers with a future (the failover link's) may take.
const PENDING_PATIENCE: Duration = Duration::from_secs(3);

/// Who may use the socket besides root and the server's own user: these users, and
/// members of these groups (primary or supplementary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// A connected peer as the kernel reports it (SO_PEERCRED, SO_PEERGROUPS).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Peer {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl AccessList {
    fn allows(&self, peer: &Peer, own_uid: u32) -> bool {
        peer.uid == 0
            || peer.uid == own_uid
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.gids.contains(g))
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub access: AccessList,
    /// Group owning the socket file (mode 0660), so its members can connect; by default
    /// the server's own group.
    pub socket_group: Option<u32>,
    /// Address of the HTTP `GET /metrics` listener; none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// The scrapers it answers (by default loopback only).
    pub metrics_allow: Vec<ClientNet>,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; the next one is told "busy".
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            access: AccessList::default(),
            socket_group: None,
            metrics_listen: None,
            metrics_allow: ClientNet::loopback(),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another server answers on the control socket {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_error(
    what: &'static str,
    path: impl std::fmt::Display,
) -> impl FnOnce(io::Error) -> ServeError {
    let path = path.to_string();
    move |source| ServeError::Io { what, path, source }
}

/// The running control server. Dropping it (or `stop`) closes the socket, lets requests
/// already in a backend finish for up to a second, and removes the socket file.
pub struct Handle {
    path: PathBuf,
    /// Device and inode of the socket file we bound, so we never remove a successor's.
    file_id: (u64, u64),
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the metrics listener is bound (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops now; the same as dropping the handle.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Sending fails only when the runtime already ended, which is what we want.
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            // A panic on the control thread has already been reported by the panic hook;
            // stopping must still clean up the socket file.
            let _ = t.join();
        }
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `path` and serves it until the handle is dropped.
pub fn serve(path: &Path, options: Options, server: Arc<dyn Server>) -> Result<Handle, ServeError> {
    let (listener, file_id) = bind(path, options.socket_group)?;
    let metrics = match options.metrics_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(io_error("cannot listen for metrics on", addr))?;
            l.set_nonblocking(true)
                .map_err(io_error("cannot set non-blocking", addr))?;
            Some(l)
        }
        None => None,
    };
    let metrics_addr = match &metrics {
        Some(l) => Some(
            l.local_addr()
                .map_err(io_error("cannot read address of", "metrics listener"))?,
        ),
        None => None,
    };
    let cleanup = |e| {
        let _ = std::fs::remove_file(path);
        e
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(BLOCKING_CALLS)
        .thread_name("control-call")
        .build()
        .map_err(io_error(
            "cannot start the control runtime for",
            path.display(),
        ))
        .map_err(cleanup)?;
    let (stop, stopped) = watch::channel(false);
    // Semaphore::new panics past MAX_PERMITS; no server wants more than a million.
    let max_connections = options.max_connections.clamp(1, 1 << 20) as u32;
    let ctx = Arc::new(Ctx {
        server,
        access: options.access,
        metrics_allow: options.metrics_allow,
        refused: Arc::new(Refused {
            control: AtomicU64::new(0),
            metrics: metrics.is_some().then(|| Arc::new(AtomicU64::new(0))),
        }),
        idle_timeout: options.idle_timeout,
        max_connections,
        connections: Arc::new(Semaphore::new(max_connections as usize)),
        calls: Arc::new(Semaphore::new(BLOCKING_CALLS)),
        stopped,
    });
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            runtime.block_on(run(listener, metrics, ctx));
            runtime.shutdown_timeout(STOP_GRACE);
        })
        .map_err(io_error(
            "cannot start the control thread for",
            path.display(),
        ))
        .map_err(cleanup)?;
    tracing::info!(socket = %path.display(), metrics = ?metrics_addr, "control socket listening");
    Ok(Handle {
        path: path.to_owned(),
        file_id,
        metrics_addr,
        stop,
        thread: Some(thread),
    })
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates the socket under a temporary name, sets its mode and group, then renames it
/// into place: the socket is never reachable with looser permissions, and a stale file
/// is replaced in one step. A live server on `path` (one that accepts a connection) is
/// left alone.
fn bind(
    path: &Path,
    group: Option<u32>,
) -> Result<(std::os::unix::net::UnixListener, (u64, u64)), ServeError> {
    let shown = &path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(ServeError::NotASocket(path.to_owned())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %shown, "replacing a stale control socket");
            }
            Err(e) => return Err(io_error("cannot probe the existing socket", shown)(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("cannot inspect", shown)(e)),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io_error("cannot create the directory", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&tmp)
            .map_err(io_error("cannot bind", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
            .map_err(io_error("cannot set the mode of", tmp.display()))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&tmp, None, Some(gid))
                .map_err(io_error("cannot set the group of", tmp.display()))?;
        }
        listener
            .set_nonblocking(true)
            .map_err(io_error("cannot set non-blocking", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(io_error("cannot move the socket to", shown))?;
        let m = std::fs::symlink_metadata(path).map_err(io_error("cannot inspect", shown))?;
        Ok((listener, (m.dev(), m.ino())))
    })();
    if bound.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    bound
}

/// Connections turned away because of who made them, since start.
struct Refused {
    control: AtomicU64,
    /// None without a metrics listener.
    metrics: Option<Arc<AtomicU64>>,
}

impl Refused {
    fn report(&self, stats: &mut Stats) {
        let mut add = |name: &str, n: &AtomicU64| {
            stats.refused.insert(name.into(), n.load(Ordering::Relaxed));
        };
        add("control", &self.control);
        if let Some(m) = &self.metrics {
            add("metrics", m);
        }
    }
}

/// What every connection task shares.
struct Ctx {
    server: Arc<dyn Server>,
    access: AccessList,
    metrics_allow: Vec<ClientNet>,
    refused: Arc<Refused>,
    idle_timeout: Duration,
    max_connections: u32,
    /// One permit per connection (control or metrics) being served.
    connections: Arc<Semaphore>,
    calls: Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
}

async fn run(
    listener: std::os::unix::net::UnixListener,
    metrics: Option<std::net::TcpListener>,
    ctx: Arc<Ctx>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control socket unusable: {e}");
            return;
        }
    };
    if let Some(m) = metrics {
        match tokio::net::TcpListener::from_std(m) {
            Ok(m) => {
                let scrape = {
                    let ctx = ctx.clone();
                    move || {
                        let ctx = ctx.clone();
                        async move { scrape(&ctx).await }
                    }
                };
                let gate = http::Gate {
                    allow: ctx.metrics_allow.clone(),
                    refused: ctx.refused.metrics.clone().unwrap_or_default(),
                    connections: ctx.connections.clone(),
                };
                tokio::spawn(http::serve(m, scrape, gate, ctx.stopped.clone()));
            }
            Err(e) => tracing::error!("metrics listener unusable: {e}"),
        }
    }
    let mut stopped = ctx.stopped.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => admit(stream, &ctx),
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on accept.
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Idle connections end at once on the stop signal; one with a request in a backend
    // ends after sending its reply. Every permit back means every connection is done.
    let _ = tokio::time::timeout(
        STOP_GRACE,
        ctx.connections.acquire_many(ctx.max_connections),
    )
    .await;
}

/// Checks the peer and the connection limit, then hands the stream to its own task.
fn admit(stream: UnixStream, ctx: &Arc<Ctx>) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("control connection without credentials: {e}");
            return;
        }
    };
    // The server's own user is asked each time: it changes when the server drops to its
    // configured user after setup.
    if !ctx.access.allows(&peer, euid()) {
        ctx.refused.control.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(uid = peer.uid, gid = peer.gid, "control connection refused");
        refuse(
            &stream,
            &ProtocolError::PermissionDenied {
                uid: peer.uid,
                gid: peer.gid,
            },
        );
        return;
    }
    let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
        refuse(&stream, &ProtocolError::Busy);
        return;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        connection(stream, &ctx).await;
        drop(permit);
    });
}

/// A fresh connection's send buffer is empty, so the one error line goes out without
/// waiting; if it does not, the client was not going to read it anyway.
fn refuse(stream: &UnixStream, e: &ProtocolError) {
    let _ = stream.try_write(&Reply::protocol_error(Value::Null, e).to_line());
}

fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: peer_groups(stream.as_raw_fd()).unwrap_or_default(),
    })
}

/// The peer's supplementary groups (SO_PEERGROUPS, Linux 4.13+), so an operator in the
/// allowed group through a secondary membership is let in just as the file mode lets
/// them connect.
fn peer_groups(fd: std::os::fd::RawFd) -> io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65536; start small and grow to what the kernel asks for.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes, and `len`
        // is a valid out-pointer the kernel updates with the bytes written or needed.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

/// How reading one request line ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line is in the buffer (the last one may lack its newline at end of stream).
    Complete,
    /// The line passed `MAX_LINE`; `ended` says whether its newline was seen already.
    TooLong {
        ended: bool,
    },
    Eof,
}

/// Reads up to the next newline into `buf`, never holding more than `MAX_LINE` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, newline) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if buf.len() + chunk > MAX_LINE {
            r.consume(chunk + usize::from(newline));
            buf.clear();
            return Ok(Line::TooLong { ended: newline });
        }
        buf.extend_from_slice(&avail[..chunk]);
        r.consume(chunk + usize::from(newline));
        if newline {
            return Ok(Line::Complete);
        }
    }
}

/// Discards the rest of an oversized line; false at end of stream.
async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<bool> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(false);
        }
        match avail.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = avail.len();
                r.consume(n);
            }
        }
    }
}

/// Serves one client: requests in order, one reply each, until it hangs up, falls
/// silent, or the server stops.
async fn connection(stream: UnixStream, ctx: &Ctx) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut stopped = ctx.stopped.clone();
    let mut line = Vec::new();
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(ctx.idle_timeout, read_line(&mut rd, &mut line)) => r,
            _ = stopped.changed() => return,
        };
        let (reply, shutdown) = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(Line::Eof)) => return,
            Ok(Ok(Line::TooLong { ended })) => {
                let reply = Reply::protocol_error(Value::Null, &ProtocolError::LineTooLong);
                if !send(&mut wr, &reply).await {
                    return;
                }
                if !ended {
                    let skipped = tokio::select! {
                        r = tokio::time::timeout(ctx.idle_timeout, skip_line(&mut rd)) => r,
                        _ = stopped.changed() => return,
                    };
                    if !matches!(skipped, Ok(Ok(true))) {
                        return;
                    }
                }
                continue;
            }
            Ok(Ok(Line::Complete)) => match parse_request(&line) {
                Err((id, e)) => (Reply::protocol_error(id, &e), false),
                Ok(req) => {
                    let shutdown = matches!(req.command, Command::Shutdown);
                    let reply = match call(ctx, req.command).await {
                        Ok(result) => Reply::success(req.id, result),
                        Err(e) => Reply::failure(req.id, e.code(), e.to_string()),
                    };
                    (reply, shutdown)
                }
            },
        };
        let sent = send(&mut wr, &reply).await;
        if shutdown {
            // After the reply, so the client learns the request was taken before the
            // server (and this socket with it) goes away.
            let server = ctx.server.clone();
            let _ = tokio::task::spawn_blocking(move || server.shutdown()).await;
        }
        if !sent {
            return;
        }
    }
}

async fn send(wr: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&reply.to_line())).await,
        Ok(Ok(()))
    )
}

/// The metrics text for the HTTP listener, made as `ctl metrics` makes it.
async fn scrape(ctx: &Ctx) -> Result<String, ControlError> {
    let mut reply = call(ctx, Command::Metrics).await?;
    match reply.get_mut("text").map(Value::take) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(ControlError::Internal("metrics without 'text'".into())),
    }
}

/// Runs a command against the backend on the blocking pool, at most `BLOCKING_CALLS` at
/// once. A panic in the backend becomes an `internal` error for this client only.
async fn call(ctx: &Ctx, command: Command) -> Result<Value, ControlError> {
    if matches!(
        command,
        Command::FailoverPartnerDown | Command::FailoverResync
    ) {
        return call_pending(ctx, command).await;
    }
    let permit = ctx
        .calls
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ControlError::Unavailable("the control server is stopping".into()))?;
    let server = ctx.server.clone();
    let refused = ctx.refused.clone();
    let name = command.name();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        execute(&*server, &refused, command)
    })
    .await
    .unwrap_or_else(|_| {
        Err(ControlError::Internal(format!(
            "the server failed while running '{name}'"
        )))
    })
}

/// Runs a command the backend answers with a future: in a task of its own on this
/// runtime (no blocking thread waits on it), for at most `PENDING_PATIENCE`. A panic is
/// an `internal` error for this client only, as on the blocking pool.
async fn call_pending(ctx: &Ctx, command: Command) -> Result<Value, ControlError> {
    let server = ctx.server.clone();
    let name = command.name();
    let mut task = tokio::spawn(async move {
        match command {
            Command::FailoverPartnerDown => server.failover_partner_down().await,
            Command::FailoverResync => server.failover_resync().await,
            _ => Err(ControlError::Internal(format!(
                "'{}' is not answered with a future",
                command.name()
            ))),
        }
    });
    match tokio::time::timeout(PENDING_PATIENCE, &mut task).await {
        Ok(Ok(done)) => done.map(|()| json!({})),
        Ok(Err(_)) => Err(ControlError::Internal(format!(
            "the server failed while running '{name}'"
        ))),
        Err(_) => {
            task.abort();
            Err(ControlError::Unavailable(format!(
                "'{name}' got no answer in time (it may still take effect)"
            )))
        }
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Result<Value, ControlError> {
    serde_json::to_value(v)
        .map_err(|e| ControlError::Internal(format!("cannot encode the result: {e}")))
}

/// The server's counters with this listener's refusals.
fn stats(server: &dyn Server, refused: &Refused) -> Result<Stats, ControlError> {
    let mut stats = server.stats()?;
    refused.report(&mut stats);
    Ok(stats)
}

fn execute(
    server: &dyn Server,
    refused: &Refused,
    command: Command,
) -> Result<Value, ControlError> {
    match command {
        Command::Status => to_json(server.status()),
        Command::Stats => to_json(stats(server, refused)?),
        Command::Metrics => Ok(json!({
            "content_type": metrics::CONTENT_TYPE,
            "text": metrics::render(&server.status(), &stats(server, refused)?),
        })),
        Command::Leases(q) => to_json(server.leases(q)?),
        Command::Reservations(q) => to_json(server.reservations(q)?),
        Command::ReservationAdd(spec) => server.reservation_add(spec).map(|()| json!({})),
        Command::ReservationDel(a) => server.reservation_del(a).map(|()| json!({})),
        Command::LeaseRelease(a) => server.lease_release(a).map(|()| json!({})),
        Command::LeaseDelete(a) => server.lease_delete(a).map(|()| json!({})),
        Command::ClassMembers(q) => to_json(server.class_members(q)?),
        Command::ClassMemberAdd(m) => server.class_member_add(m).map(|()| json!({})),
        Command::ClassMemberDel(m) => server.class_member_del(m).map(|()| json!({})),
        Command::Reload => to_json(server.reload()?),
        // Answered first; `connection` calls `Server::shutdown` once the reply is out.
        Command::Shutdown => Ok(json!({})),
        // `call` awaits these (`call_pending`); they never reach the blocking pool.
        Command::FailoverPartnerDown | Command::FailoverResync => Err(ControlError::Internal(
            format!("'{}' is not a blocking call", command.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn access_list() {
        let acl = AccessList {
            uids: vec![1000],
            gids: vec![50],
        };
        assert!(acl.allows(&peer(0, 0, &[]), 999), "root");
        assert!(
            acl.allows(&peer(999, 999, &[]), 999),
            "the server's own user"
        );
        assert!(acl.allows(&peer(1000, 1000, &[]), 999));
        assert!(acl.allows(&peer(1001, 50, &[]), 999), "primary group");
        assert!(
            acl.allows(&peer(1001, 1001, &[7, 50]), 999),
            "supplementary group"
        );
        assert!(!acl.allows(&peer(1001, 1001, &[7]), 999));
        assert!(!AccessList::default().allows(&peer(65534, 65534, &[]), 999));
    }

    /// Every line `read_line` yields, as "line:TEXT" or "too-long", skipping the rest
    /// of an oversized line as `connection` does.
    async fn lines(input: &[u8]) -> Vec<String> {
        let mut r = BufReader::with_capacity(4096, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line(&mut r, &mut buf).await.unwrap() {
                Line::Eof => return out,
                Line::Complete => out.push(format!("line:{}", String::from_utf8_lossy(&buf))),
                Line::TooLong { ended } => {
                    out.push("too-long".into());
                    if !ended && !skip_line(&mut r).await.unwrap() {
                        return out;
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn read_line_caps_and_resynchronises() {
        let mut input = b"a\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nb\n");
        input.extend(std::iter::repeat_n(b'y', MAX_LINE));
        input.extend(b"\nlast");
        let got = lines(&input).await;
        assert_eq!(
            got,
            vec![
                "line:a".to_string(),
                "too-long".into(),
                "line:b".into(),
                format!("line:{}", "y".repeat(MAX_LINE)),
                "line:last".into(),
            ]
        );
    }

    #[tokio::test]
    async fn oversized_line_ending_at_eof() {
        let input = vec![b'z'; MAX_LINE + 1];
        assert_eq!(lines(&input).await, vec!["too-long".to_string()]);
    }
}
