//! `dhcp-server ctl`: the operator's client for the control socket. Each subcommand is
//! one request (`leases --all` and `top` make several over one connection); replies are
//! printed as tables, or as JSON with `--json` for scripts. Errors go to stderr with exit
//! status 1, and with `--json` the error object also goes to stdout.
//!
//! The client is plain blocking std I/O: it talks to one server, one request at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::protocol::{Command, Reply, Request, VERSION};
use super::types::{
    ClientId, ClientIdentity, FailoverStatus, LeaseFilter, LeasePage, MacAddr, PageQuery,
    ReloadReport, ReservationPage, ReservationSpec, Stats, Status, DEFAULT_PAGE, MAX_PAGE,
};
use super::DEFAULT_SOCKET;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The server's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the reply's result as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the server to answer.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Readiness, uptime, version, backend, workers, journal.
    Status,
    /// Messages in and out, drops by reason, shards, pool use, latency.
    Stats,
    /// The counters in the Prometheus text format.
    Metrics,
    /// Look up leases by address, MAC or client identifier, or list them a page at a time.
    Leases(Lookup),
    /// The reservations of addresses (the file's and run-time ones), by address, MAC or
    /// client identifier, or a page at a time.
    Reservations(Lookup),
    /// Reserve an address for one client (journaled).
    #[command(group = clap::ArgGroup::new("client").required(true))]
    ReservationAdd {
        #[arg(long)]
        address: Ipv4Addr,
        #[arg(long, group = "client")]
        mac: Option<MacAddr>,
        #[arg(long, group = "client")]
        client_id: Option<ClientId>,
        #[arg(long)]
        host_name: Option<String>,
    },
    /// Remove the reservation of an address.
    ReservationDel {
        #[arg(long)]
        address: Ipv4Addr,
    },
    /// Free a lease as the client's DHCPRELEASE would.
    LeaseRelease {
        #[arg(long)]
        address: Ipv4Addr,
    },
    /// Forget a lease and its client.
    LeaseDelete {
        #[arg(long)]
        address: Ipv4Addr,
    },
    /// Re-read the configuration and apply what can change without a restart.
    Reload,
    /// Stop the server gracefully.
    Shutdown,
    /// Failover: declare the partner down (only when it really is down: the pair cannot
    /// tell a dead partner from a broken network).
    PartnerDown,
    /// Failover: ask the partner for every binding again (a full resync).
    Resync,
    /// Live rates, latency and pool use, refreshed every interval until Ctrl-C.
    Top {
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

/// One entry by address, MAC or client identifier, or the list a page at a time.
#[derive(Debug, clap::Args)]
pub struct Lookup {
    #[arg(long, group = "filter")]
    address: Option<Ipv4Addr>,
    #[arg(long, group = "filter")]
    mac: Option<MacAddr>,
    /// Client identifier (option 61) in hex, e.g. 01:aa:bb:cc:dd:ee:ff.
    #[arg(long, group = "filter")]
    client_id: Option<ClientId>,
    /// Entries per page (1 to 1000).
    #[arg(long, default_value_t = DEFAULT_PAGE, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE as i64))]
    limit: u32,
    /// Start after this address (the previous page's next cursor).
    #[arg(long)]
    cursor: Option<Ipv4Addr>,
    /// Follow the cursor to the last page.
    #[arg(long)]
    all: bool,
}

impl Lookup {
    fn query(&self) -> PageQuery {
        let filter = match (self.address, self.mac, &self.client_id) {
            (Some(a), _, _) => Some(LeaseFilter::Address(a)),
            (_, Some(m), _) => Some(LeaseFilter::Mac(m)),
            (_, _, Some(c)) => Some(LeaseFilter::ClientId(c.clone())),
            _ => None,
        };
        PageQuery {
            filter,
            cursor: self.cursor,
            limit: self.limit,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("no control socket at {0} (is the server running? see --socket)")]
    NoSocket(PathBuf),
    #[error("may not connect to {0} (run as root or as a member of the socket's group)")]
    NoAccess(PathBuf),
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to the server: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection without answering")]
    Closed,
    #[error("unexpected reply from the server: {0}")]
    BadReply(String),
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    #[error("{0}")]
    Usage(String),
}

/// Runs one `ctl` invocation; the exit status is 0 on success, 1 on any failure.
pub fn run_ctl(args: CtlArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let (true, CtlError::Server { code, message }) = (args.json, &e) {
                println!("{}", json!({"code": code, "message": message}));
            }
            eprintln!("dhcp-server ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One connection to the server, requests numbered so each reply is matched to its own.
struct Conn {
    stream: BufReader<UnixStream>,
    next_id: u64,
}

impl Conn {
    fn open(path: &Path, timeout: Duration) -> Result<Self, CtlError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                CtlError::NoSocket(path.to_owned())
            }
            io::ErrorKind::PermissionDenied => CtlError::NoAccess(path.to_owned()),
            _ => CtlError::Connect {
                path: path.to_owned(),
                source: e,
            },
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            stream: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Sends one command and returns its result, or the server's error.
    fn call(&mut self, command: Command) -> Result<Value, CtlError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request {
            id: id.into(),
            command,
        }
        .to_line();
        // A server that refuses us (permission, busy) answers and closes at once, so the
        // write may fail while its explanation waits to be read: read before giving up.
        let wrote = self.stream.get_mut().write_all(&line);
        let mut buf = Vec::new();
        let read = self.stream.read_until(b'\n', &mut buf);
        if buf.is_empty() {
            wrote?;
            read?;
            return Err(CtlError::Closed);
        }
        let reply: Reply =
            serde_json::from_slice(&buf).map_err(|e| CtlError::BadReply(e.to_string()))?;
        if reply.version != VERSION {
            return Err(CtlError::BadReply(format!(
                "protocol version {} (this client speaks {VERSION})",
                reply.version
            )));
        }
        match (reply.ok, reply.result, reply.error) {
            (false, _, Some(e)) => Err(CtlError::Server {
                code: e.code,
                message: e.message,
            }),
            // Refusals are sent before any request is read, so they carry no id.
            (true, Some(result), None) if reply.id == json!(id) => Ok(result),
            _ => Err(CtlError::BadReply(
                String::from_utf8_lossy(&buf).trim_end().to_owned(),
            )),
        }
    }
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, CtlError> {
    serde_json::from_value(v).map_err(|e| CtlError::BadReply(e.to_string()))
}

fn print_json(v: &Value) {
    // A Value always serializes.
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Turns a command's result into the text printed without `--json`.
type Render = fn(Value) -> Result<String, CtlError>;

fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let mut conn = Conn::open(&args.socket, Duration::from_secs(args.timeout.max(1)))?;
    let json = args.json;
    let (command, render): (Command, Render) = match &args.command {
        CtlCommand::Status => (Command::Status, |v| {
            Ok(render_status(&decode(v)?, unix_now()))
        }),
        CtlCommand::Stats => (Command::Stats, |v| Ok(render_stats(&decode(v)?))),
        CtlCommand::Metrics => (Command::Metrics, |v| {
            v.get("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| CtlError::BadReply("metrics without 'text'".into()))
        }),
        CtlCommand::Leases(l) => {
            let page: LeasePage = pages(&mut conn, l, Command::Leases)?;
            return show(&page, json, |p| render_leases(p, unix_now()));
        }
        CtlCommand::Reservations(l) => {
            let page: ReservationPage = pages(&mut conn, l, Command::Reservations)?;
            return show(&page, json, render_reservations);
        }
        CtlCommand::ReservationAdd {
            address,
            mac,
            client_id,
            host_name,
        } => {
            let client = match (mac, client_id) {
                (Some(m), None) => ClientIdentity::Mac(*m),
                (None, Some(c)) => ClientIdentity::ClientId(c.clone()),
                _ => return Err(CtlError::Usage("give --mac or --client-id".into())),
            };
            let spec = ReservationSpec {
                address: *address,
                client,
                host_name: host_name.clone(),
            };
            (Command::ReservationAdd(spec), |_| {
                Ok("reservation added\n".into())
            })
        }
        CtlCommand::ReservationDel { address } => (Command::ReservationDel(*address), |_| {
            Ok("reservation removed\n".into())
        }),
        CtlCommand::LeaseRelease { address } => (Command::LeaseRelease(*address), |_| {
            Ok("lease released\n".into())
        }),
        CtlCommand::LeaseDelete { address } => (Command::LeaseDelete(*address), |_| {
            Ok("lease deleted\n".into())
        }),
        CtlCommand::Reload => (Command::Reload, |v| Ok(render_reload(&decode(v)?))),
        CtlCommand::Shutdown => (Command::Shutdown, |_| Ok("server is stopping\n".into())),
        CtlCommand::PartnerDown => (Command::FailoverPartnerDown, |_| {
            Ok("partner declared down: this server moves to partner-down\n".into())
        }),
        CtlCommand::Resync => (Command::FailoverResync, |_| {
            Ok("full resync requested: the partner sends every binding again\n".into())
        }),
        CtlCommand::Top { count, interval } => {
            if !(interval.is_finite() && *interval > 0.0) {
                return Err(CtlError::Usage(
                    "--interval must be a positive number".into(),
                ));
            }
            return top(&mut conn, *count, Duration::from_secs_f64(*interval), json);
        }
    };
    let result = conn.call(command)?;
    if json {
        print_json(&result);
    } else {
        print!("{}", render(result)?);
    }
    Ok(())
}

/// A list the server hands out a page at a time.
trait Paged: DeserializeOwned {
    fn next_cursor(&self) -> Option<Ipv4Addr>;
    /// Appends the next page's entries and takes its cursor.
    fn extend(&mut self, next: Self);
}

impl Paged for LeasePage {
    fn next_cursor(&self) -> Option<Ipv4Addr> {
        self.next_cursor
    }
    fn extend(&mut self, next: Self) {
        self.leases.extend(next.leases);
        self.next_cursor = next.next_cursor;
    }
}

impl Paged for ReservationPage {
    fn next_cursor(&self) -> Option<Ipv4Addr> {
        self.next_cursor
    }
    fn extend(&mut self, next: Self) {
        self.reservations.extend(next.reservations);
        self.next_cursor = next.next_cursor;
    }
}

/// The page `lookup` asks for, or with `--all` every page from there on as one.
fn pages<P: Paged>(
    conn: &mut Conn,
    lookup: &Lookup,
    command: fn(PageQuery) -> Command,
) -> Result<P, CtlError> {
    let mut query = lookup.query();
    let mut page: P = decode(conn.call(command(query.clone()))?)?;
    while let (true, Some(next)) = (lookup.all, page.next_cursor()) {
        query.cursor = Some(next);
        page.extend(decode(conn.call(command(query.clone()))?)?);
    }
    Ok(page)
}

fn show<P: serde::Serialize>(
    page: &P,
    json: bool,
    render: impl Fn(&P) -> String,
) -> Result<(), CtlError> {
    if json {
        print_json(&serde_json::to_value(page).map_err(|e| CtlError::BadReply(e.to_string()))?);
    } else {
        print!("{}", render(page));
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Per-second rates between two snapshots of a counter map (0 where a counter went back,
/// as it does across a server restart).
fn rates(
    prev: &BTreeMap<String, u64>,
    cur: &BTreeMap<String, u64>,
    secs: f64,
) -> BTreeMap<String, f64> {
    cur.iter()
        .map(|(k, v)| {
            let before = prev.get(k).copied().unwrap_or(0);
            (k.clone(), v.saturating_sub(before) as f64 / secs)
        })
        .collect()
}

#[derive(serde::Serialize)]
struct Rates {
    received: BTreeMap<String, f64>,
    sent: BTreeMap<String, f64>,
    drops: BTreeMap<String, f64>,
}

fn top(
    conn: &mut Conn,
    count: Option<u64>,
    interval: Duration,
    json: bool,
) -> Result<(), CtlError> {
    let clear = !json && io::stdout().is_terminal();
    let mut prev: Option<(Instant, Stats)> = None;
    let mut done = 0u64;
    loop {
        let started = Instant::now();
        let status: Status = decode(conn.call(Command::Status)?)?;
        let stats: Stats = decode(conn.call(Command::Stats)?)?;
        let now = Instant::now();
        let rates = prev.as_ref().map(|(then, p)| {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            Rates {
                received: rates(&p.received, &stats.received, secs),
                sent: rates(&p.sent, &stats.sent, secs),
                drops: rates(&p.drops, &stats.drops, secs),
            }
        });
        let mut out = io::stdout().lock();
        if json {
            writeln!(
                out,
                "{}",
                json!({"status": status, "stats": stats, "rates": rates})
            )?;
        } else {
            if clear {
                write!(out, "\x1b[H\x1b[2J")?;
            } else if done > 0 {
                writeln!(out)?;
            }
            write!(out, "{}", render_top(&status, &stats, rates.as_ref()))?;
        }
        out.flush()?;
        drop(out);
        prev = Some((now, stats));
        done += 1;
        if count.is_some_and(|c| done >= c) {
            return Ok(());
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// A plain-text table: a header row, then rows. A column of numbers (where "-" stands
/// for none) is right-aligned; any other column left-aligned.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![true; cols];
    let mut any_number = vec![false; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
            let number = is_number(cell);
            any_number[i] |= number;
            numeric[i] &= number || cell == "-";
        }
    }
    for (n, any) in numeric.iter_mut().zip(any_number) {
        *n &= any;
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate().take(cols) {
            let pad = width[i] - cell.chars().count();
            if i > 0 {
                text.push_str("  ");
            }
            if numeric[i] {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn is_number(cell: &str) -> bool {
    cell.trim_end_matches('%').parse::<f64>().is_ok()
}

/// "3d 4h 5m", "2h 0m 7s", "59m 12s", "8s".
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

fn render_status(s: &Status, now: u64) -> String {
    let backend = match s.xdp {
        Some(x) => format!(
            "{} ({}, {})",
            s.backend.name(),
            x.attach.name(),
            x.copy.name()
        ),
        None => s.backend.name().to_owned(),
    };
    let journal = match &s.journal {
        None => "none (leases in memory only)".to_owned(),
        Some(j) => {
            let durability = match j.durability {
                crate::journal::Durability::Sync => "sync",
                crate::journal::Durability::Async => "async",
            };
            let health = match (&j.error, j.healthy) {
                (_, true) => "healthy".to_owned(),
                (Some(e), false) => format!("FAILED: {e}"),
                (None, false) => "FAILED".to_owned(),
            };
            format!("{} ({durability}, {health})", j.dir.display())
        }
    };
    let config = match &s.config.file {
        Some(f) => format!("{} (loaded {})", f.display(), ago(s.config.loaded)),
        None => "command-line flags".to_owned(),
    };
    let rows = [
        ("ready", if s.ready { "yes" } else { "no" }.to_owned()),
        ("version", s.version.clone()),
        ("uptime", duration(s.uptime_secs)),
        ("backend", backend),
        ("workers", s.workers.to_string()),
        ("interfaces", s.interfaces.join(", ")),
        ("journal", journal),
        ("config", config),
        (
            "reserved",
            format!(
                "{} in the file, {} at run time",
                s.reservations.file, s.reservations.control
            ),
        ),
    ];
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<11} {v}");
    }
    if let Some(f) = &s.failover {
        for (k, v) in failover_rows(f, now) {
            let _ = writeln!(out, "{k:<11} {v}");
        }
    }
    out
}

/// "5m 2s ago", from a Unix time.
fn ago(when: u64) -> String {
    let now = unix_now();
    if when == 0 || when > now {
        return "just now".to_owned();
    }
    format!("{} ago", duration(now - when))
}

fn render_reservations(page: &ReservationPage) -> String {
    let rows: Vec<Vec<String>> = page
        .reservations
        .iter()
        .map(|r| {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            vec![
                r.address.to_string(),
                opt(r.mac.map(|m| m.to_string())),
                opt(r.client_id.as_ref().map(ToString::to_string)),
                opt(r.host_name.clone()),
                r.source.name().to_owned(),
                r.subnet.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ADDRESS",
            "MAC",
            "CLIENT-ID",
            "HOST-NAME",
            "SOURCE",
            "SUBNET",
        ],
        &rows,
    );
    if let Some(next) = page.next_cursor {
        let _ = writeln!(out, "more: --cursor {next} (or --all)");
    }
    out
}

/// The failover section of `ctl status`.
fn failover_rows(f: &FailoverStatus, now: u64) -> [(&'static str, String); 5] {
    let since = |state: &str, stos: u64| match now.checked_sub(stos) {
        Some(ago) if stos > 0 => format!("{state} for {}", duration(ago)),
        _ => state.to_owned(),
    };
    [
        (
            "failover",
            format!("{} ({}): {}", f.name, f.role, f.service),
        ),
        ("  local", since(&f.local_state, f.local_stos)),
        ("  peer", since(&f.peer_state, f.peer_stos)),
        (
            "  link",
            format!(
                "{}, mclt {}",
                if f.connected {
                    "connected"
                } else {
                    "NOT CONNECTED"
                },
                duration(f.mclt.into())
            ),
        ),
        (
            "  updates",
            format!("{} queued, {} unacked", f.queued_updates, f.unacked_updates),
        ),
    ]
}

/// Message types in protocol order, then any the server added that this client does
/// not know.
fn message_keys(stats: &Stats) -> Vec<String> {
    const ORDER: [&str; 9] = [
        "discover", "offer", "request", "decline", "ack", "nak", "release", "inform", "other",
    ];
    let mut keys: Vec<String> = ORDER.iter().map(|k| (*k).to_owned()).collect();
    for k in stats.received.keys().chain(stats.sent.keys()) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

fn count(m: &BTreeMap<String, u64>, k: &str) -> String {
    m.get(k).copied().unwrap_or(0).to_string()
}

fn rate(m: Option<&BTreeMap<String, f64>>, k: &str) -> String {
    m.map_or_else(
        || "-".to_owned(),
        |m| format!("{:.1}", m.get(k).copied().unwrap_or(0.0)),
    )
}

fn pools_table(stats: &Stats) -> String {
    let rows: Vec<Vec<String>> = stats
        .pools
        .iter()
        .map(|p| {
            let used = p.offered + p.active + p.declined;
            let pct = if p.total == 0 {
                0.0
            } else {
                used as f64 * 100.0 / p.total as f64
            };
            vec![
                p.subnet.to_string(),
                p.total.to_string(),
                p.free.to_string(),
                p.offered.to_string(),
                p.active.to_string(),
                p.declined.to_string(),
                p.partner.to_string(),
                format!("{pct:.1}%"),
            ]
        })
        .collect();
    table(
        &[
            "SUBNET", "TOTAL", "FREE", "OFFERED", "ACTIVE", "DECLINED", "PARTNER", "USED",
        ],
        &rows,
    )
}

fn latency_table(stats: &Stats) -> String {
    let l = stats.latency;
    let mut row = vec![format!("{} samples", l.samples)];
    row.extend([l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us].map(|v| v.to_string()));
    table(&["LATENCY µs", "P50", "P90", "P99", "P99.9", "MAX"], &[row])
}

fn render_stats(stats: &Stats) -> String {
    let messages: Vec<Vec<String>> = message_keys(stats)
        .iter()
        .map(|k| vec![k.clone(), count(&stats.received, k), count(&stats.sent, k)])
        .collect();
    let drops: Vec<Vec<String>> = stats
        .drops
        .iter()
        .map(|(k, v)| vec![k.clone(), v.to_string()])
        .collect();
    let shards: Vec<Vec<String>> = stats
        .shards
        .iter()
        .map(|s| {
            vec![
                s.shard.to_string(),
                s.received.to_string(),
                s.sent.to_string(),
                s.dropped.to_string(),
            ]
        })
        .collect();
    [
        table(&["MESSAGE", "RECEIVED", "SENT"], &messages),
        table(&["DROPPED", "COUNT"], &drops),
        table(&["SHARD", "RECEIVED", "SENT", "DROPPED"], &shards),
        pools_table(stats),
        latency_table(stats),
    ]
    .join("\n")
}

fn render_top(status: &Status, stats: &Stats, rates: Option<&Rates>) -> String {
    let mut out = format!(
        "dhcp-server {}  {}  {} worker{}  up {}  {}\n\n",
        status.version,
        status.backend.name(),
        status.workers,
        if status.workers == 1 { "" } else { "s" },
        duration(status.uptime_secs),
        if status.ready { "ready" } else { "NOT READY" },
    );
    if let Some(f) = &status.failover {
        let _ = writeln!(
            out,
            "failover {} ({}): {}, local {}, peer {}, {}, {} unacked\n",
            f.name,
            f.role,
            f.service,
            f.local_state,
            f.peer_state,
            if f.connected {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            f.unacked_updates
        );
    }
    let messages: Vec<Vec<String>> = message_keys(stats)
        .iter()
        .map(|k| {
            vec![
                k.clone(),
                rate(rates.map(|r| &r.received), k),
                rate(rates.map(|r| &r.sent), k),
                count(&stats.received, k),
                count(&stats.sent, k),
            ]
        })
        .collect();
    out.push_str(&table(
        &["MESSAGE", "IN/s", "OUT/s", "IN", "OUT"],
        &messages,
    ));
    // Only reasons that have happened: the full list is `ctl stats`.
    let drops: Vec<Vec<String>> = stats
        .drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| vec![k.clone(), rate(rates.map(|r| &r.drops), k), v.to_string()])
        .collect();
    if !drops.is_empty() {
        out.push('\n');
        out.push_str(&table(&["DROPPED", "/s", "TOTAL"], &drops));
    }
    out.push('\n');
    out.push_str(&latency_table(stats));
    out.push('\n');
    out.push_str(&pools_table(stats));
    out
}

fn render_leases(page: &LeasePage, now: u64) -> String {
    let rows: Vec<Vec<String>> = page
        .leases
        .iter()
        .map(|l| {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            vec![
                l.address.to_string(),
                l.state.name().to_owned(),
                opt(l.mac.map(|m| m.to_string())),
                opt(l.client_id.as_ref().map(ToString::to_string)),
                opt(l.expires.filter(|e| *e > now).map(|e| duration(e - now))),
                if l.reserved { "yes" } else { "no" }.to_owned(),
                l.subnet.to_string(),
                l.shard.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ADDRESS",
            "STATE",
            "MAC",
            "CLIENT-ID",
            "EXPIRES IN",
            "RESERVED",
            "SUBNET",
            "SHARD",
        ],
        &rows,
    );
    if let Some(next) = page.next_cursor {
        let _ = writeln!(out, "more: --cursor {next} (or --all)");
    }
    out
}

fn render_reload(r: &ReloadReport) -> String {
    let mut out = String::new();
    if r.applied.is_empty() && r.restart_required.is_empty() {
        out.push_str("configuration unchanged\n");
    }
    for a in &r.applied {
        let _ = writeln!(out, "applied: {a}");
    }
    for a in &r.restart_required {
        let _ = writeln!(out, "needs a restart (not applied): {a}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::types::*;

    #[test]
    fn durations() {
        assert_eq!(duration(8), "8s");
        assert_eq!(duration(59 * 60 + 12), "59m 12s");
        assert_eq!(duration(2 * 3600 + 7), "2h 0m 7s");
        assert_eq!(duration(3 * 86400 + 4 * 3600 + 5 * 60 + 6), "3d 4h 5m");
    }

    #[test]
    fn tables_align_numbers_right() {
        let t = table(
            &["NAME", "N"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long".into(), "100".into()],
            ],
        );
        assert_eq!(t, "NAME    N\na       1\nlong  100\n");
        // A column of nothing but "-" is text, with numbers it is numeric.
        let t = table(
            &["A", "B", "C"],
            &[
                vec!["x".into(), "-".into(), "-".into()],
                vec!["y".into(), "-".into(), "10".into()],
            ],
        );
        assert_eq!(t, "A  B   C\nx  -   -\ny  -  10\n");
    }

    #[test]
    fn rates_per_second_and_resets() {
        let prev = BTreeMap::from([("a".to_string(), 10u64), ("b".into(), 50)]);
        let cur = BTreeMap::from([("a".to_string(), 30u64), ("b".into(), 5), ("c".into(), 4)]);
        let r = rates(&prev, &cur, 2.0);
        assert_eq!(r["a"], 10.0);
        assert_eq!(r["b"], 0.0);
        assert_eq!(r["c"], 2.0);
    }

    #[test]
    fn leases_table_shows_remaining_time_and_cursor() {
        let page = LeasePage {
            leases: vec![Lease {
                address: Ipv4Addr::new(192, 0, 2, 10),
                subnet: "192.0.2.0/24".parse().unwrap(),
                state: LeaseState::Active,
                mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                client_id: None,
                expires: Some(1_000 + 90),
                cltt: Some(1_000),
                reserved: false,
                shard: 0,
            }],
            next_cursor: Some(Ipv4Addr::new(192, 0, 2, 10)),
        };
        let t = render_leases(&page, 1_000);
        assert!(t.contains("192.0.2.10"), "{t}");
        assert!(t.contains("02:00:00:00:00:01"), "{t}");
        assert!(t.contains("1m 30s"), "{t}");
        assert!(t.ends_with("more: --cursor 192.0.2.10 (or --all)\n"), "{t}");
    }

    fn status(failover: Option<FailoverStatus>) -> Status {
        Status {
            ready: true,
            version: "0.1.0".into(),
            uptime_secs: 5,
            backend: BackendKind::Udp,
            xdp: None,
            workers: 1,
            interfaces: vec!["eth1".into()],
            journal: None,
            reservations: ReservationCounts::default(),
            config: ConfigStatus::default(),
            failover,
        }
    }

    fn paired() -> FailoverStatus {
        FailoverStatus {
            name: "pair".into(),
            role: "secondary".into(),
            local_state: "normal".into(),
            local_stos: 1_000,
            peer_state: "normal".into(),
            peer_stos: 0,
            service: "cooperating".into(),
            connected: true,
            mclt: 1800,
            queued_updates: 1,
            unacked_updates: 2,
        }
    }

    #[test]
    fn status_shows_failover_only_with_a_partner() {
        let t = render_status(&status(None), 4_600);
        assert!(!t.contains("failover"), "{t}");
        let t = render_status(&status(Some(paired())), 4_600);
        let tail: Vec<&str> = t
            .lines()
            .skip_while(|l| !l.starts_with("failover"))
            .collect();
        assert_eq!(
            tail,
            [
                "failover    pair (secondary): cooperating",
                "  local     normal for 1h 0m 0s",
                // An unknown STOS (0) shows no duration.
                "  peer      normal",
                "  link      connected, mclt 30m 0s",
                "  updates   1 queued, 2 unacked",
            ],
            "{t}"
        );
        let top = render_top(&status(Some(paired())), &Stats::default(), None);
        assert!(
            top.contains(
                "failover pair (secondary): cooperating, local normal, peer normal, connected, 2 unacked"
            ),
            "{top}"
        );
    }

    #[test]
    fn pools_show_the_partner_share() {
        let mut s = Stats::default();
        s.pools.push(PoolStats {
            subnet: "192.0.2.0/24".parse().unwrap(),
            total: 200,
            free: 90,
            offered: 0,
            active: 10,
            declined: 0,
            partner: 100,
        });
        let t = pools_table(&s);
        let mut lines = t.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["SUBNET", "TOTAL", "FREE", "OFFERED", "ACTIVE", "DECLINED", "PARTNER", "USED"]
        );
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["192.0.2.0/24", "200", "90", "0", "10", "0", "100", "5.0%"]
        );
        // A reply from a server without the field still decodes.
        let old = json!({"subnet": "192.0.2.0/24", "total": 1, "free": 1, "offered": 0,
            "active": 0, "declined": 0});
        assert_eq!(serde_json::from_value::<PoolStats>(old).unwrap().partner, 0);
    }

    #[test]
    fn stats_lists_messages_in_protocol_order() {
        let mut s = Stats::default();
        s.received.insert("discover".into(), 3);
        s.received.insert("leasequery".into(), 1);
        let keys = message_keys(&s);
        assert_eq!(keys[0], "discover");
        assert_eq!(keys[8], "other");
        assert_eq!(keys[9], "leasequery");
        let text = render_stats(&s);
        let discover = text.lines().find(|l| l.starts_with("discover")).unwrap();
        assert_eq!(
            discover.split_whitespace().collect::<Vec<_>>(),
            ["discover", "3", "0"]
        );
    }
}
