//! `dhcp-server ctl`: the operator's client for the control socket. Each subcommand is
//! one request (`leases --all` and `top` make several over one connection); replies are
//! printed as tables (`tables`), or as JSON with `--json` for scripts. Errors go to
//! stderr with exit status 1, and with `--json` the error object also goes to stdout.
//!
//! The talking is the library's `control::Client`: plain blocking std I/O, one server,
//! one request at a time.

mod tables;

use std::io::{self, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use dhcp_proto::policy::{Subscriber, SubscriberKind};
use dhcp_server::control::client::{decode, Client, ClientError};
use dhcp_server::control::protocol::Command;
use dhcp_server::control::{
    parse_hex, ClassMember, ClientId, ClientIdentity, LeaseFilter, LeasePage, MacAddr, MemberPage,
    MemberQuery, PageQuery, ReservationPage, ReservationSpec, Stats, Status, DEFAULT_PAGE,
    DEFAULT_SOCKET, MAX_PAGE,
};
use dhcp_server::runtime::clock::Clock;
use tables::Rates;

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
        /// The subscriber by the relay's circuit id (text, or 0x and hex), whatever its device.
        #[arg(long, group = "client")]
        circuit_id: Option<String>,
        /// The subscriber by the relay's remote id.
        #[arg(long, group = "client")]
        remote_id: Option<String>,
        /// The subscriber by the relay's subscriber id (RFC 3993).
        #[arg(long, group = "client")]
        subscriber_id: Option<String>,
        /// The subscriber by the value of the file's flex-id expression.
        #[arg(long, group = "client")]
        flex_id: Option<String>,
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
    /// Add or remove a member value of a class with `match = "..."` (journaled).
    #[command(subcommand)]
    ClassMember(MemberChange),
    /// The members of classes with `match = "..."` (the file's and run-time ones), of one
    /// class or of all, a page at a time.
    ClassMembers {
        /// Only this class's members.
        class: Option<String>,
        /// Members per page (1 to 1000).
        #[arg(long, default_value_t = DEFAULT_PAGE, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE as i64))]
        limit: u32,
        /// Start after this member (the previous page's next cursor, CLASS/HEX).
        #[arg(long, value_parser = ClassMember::from_cursor)]
        cursor: Option<ClassMember>,
        /// Follow the cursor to the last page.
        #[arg(long)]
        all: bool,
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

#[derive(Debug, clap::Subcommand)]
pub enum MemberChange {
    /// List VALUE as a member of CLASS on every worker, as a subclass of the file would be.
    Add(MemberArgs),
    /// End a member added at run time.
    Del(MemberArgs),
}

#[derive(Debug, clap::Args)]
pub struct MemberArgs {
    /// A class with `match = "..."` (its members are listed by value).
    class: String,
    /// The value the class's `match` yields for the client: text as it is (a circuit id
    /// such as port-7), or octets in hex with --hex.
    value: String,
    /// VALUE is octets in hex (01:02:0a or 01020a).
    #[arg(long)]
    hex: bool,
}

impl MemberArgs {
    fn member(&self) -> Result<ClassMember, CtlError> {
        let value = if self.hex {
            parse_hex(&self.value).ok_or_else(|| {
                CtlError::Usage(format!("'{}' is not octets in hex (01:02:0a)", self.value))
            })?
        } else {
            self.value.clone().into_bytes()
        };
        Ok(ClassMember {
            class: self.class.clone(),
            value,
        })
    }
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
    /// The page the lookup asks for, or with `--all` every page from there on as one.
    fn pages<P: Paged<Cursor = Ipv4Addr>>(
        &self,
        conn: &mut Client,
        command: fn(PageQuery) -> Command,
    ) -> Result<P, ClientError> {
        let filter = match (self.address, self.mac, &self.client_id) {
            (Some(a), _, _) => Some(LeaseFilter::Address(a)),
            (_, Some(m), _) => Some(LeaseFilter::Mac(m)),
            (_, _, Some(c)) => Some(LeaseFilter::ClientId(c.clone())),
            _ => None,
        };
        pages(conn, self.all, self.cursor, |cursor| {
            command(PageQuery {
                filter: filter.clone(),
                cursor,
                limit: self.limit,
            })
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
}

/// Runs one `ctl` invocation; the exit status is 0 on success, 1 on any failure.
pub fn run(args: CtlArgs) -> ExitCode {
    match ctl(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let (true, CtlError::Client(ClientError::Server { code, message })) = (args.json, &e)
            {
                println!("{}", json!({"code": code, "message": message}));
            }
            eprintln!("dhcp-server ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &Value) {
    // A Value always serializes.
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Turns a command's result into the text printed without `--json`.
type Render = fn(Value) -> Result<String, ClientError>;

fn ctl(args: &CtlArgs) -> Result<(), CtlError> {
    let mut conn = Client::connect(&args.socket, Duration::from_secs(args.timeout.max(1)))?;
    let json = args.json;
    let (command, render): (Command, Render) = match &args.command {
        CtlCommand::Status => (Command::Status, |v| {
            Ok(tables::status(&decode(v)?, Clock::system().now()))
        }),
        CtlCommand::Stats => (Command::Stats, |v| Ok(tables::stats(&decode(v)?))),
        CtlCommand::Metrics => (Command::Metrics, |v| {
            v.get("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ClientError::BadReply("metrics without 'text'".into()))
        }),
        CtlCommand::Leases(l) => {
            let page: LeasePage = l.pages(&mut conn, Command::Leases)?;
            return show(&page, json, |p| tables::leases(p, Clock::system().now()));
        }
        CtlCommand::Reservations(l) => {
            let page: ReservationPage = l.pages(&mut conn, Command::Reservations)?;
            return show(&page, json, tables::reservations);
        }
        CtlCommand::ClassMembers {
            class,
            limit,
            cursor,
            all,
        } => {
            let page: MemberPage = pages(&mut conn, *all, cursor.clone(), |cursor| {
                Command::ClassMembers(MemberQuery {
                    class: class.clone(),
                    cursor,
                    limit: *limit,
                })
            })?;
            return show(&page, json, tables::members);
        }
        CtlCommand::ClassMember(MemberChange::Add(m)) => {
            (Command::ClassMemberAdd(m.member()?), |_| {
                Ok("class member added\n".into())
            })
        }
        CtlCommand::ClassMember(MemberChange::Del(m)) => {
            (Command::ClassMemberDel(m.member()?), |_| {
                Ok("class member removed\n".into())
            })
        }
        CtlCommand::ReservationAdd {
            address,
            mac,
            client_id,
            circuit_id,
            remote_id,
            subscriber_id,
            flex_id,
            host_name,
        } => {
            let subscriber = [
                (SubscriberKind::CircuitId, circuit_id),
                (SubscriberKind::RemoteId, remote_id),
                (SubscriberKind::SubscriberId, subscriber_id),
                (SubscriberKind::Flex, flex_id),
            ]
            .into_iter()
            .find_map(|(k, v)| Some((k, v.as_deref()?)));
            let client = match (mac, client_id, subscriber) {
                (Some(m), None, None) => ClientIdentity::Mac(*m),
                (None, Some(c), None) => ClientIdentity::ClientId(c.clone()),
                (None, None, Some((kind, v))) => {
                    let value = Subscriber::parse_value(v).ok_or_else(|| {
                        CtlError::Usage(format!(
                            "--{} is 1 to 255 octets of text, or 0x and hex octets",
                            kind.name()
                        ))
                    })?;
                    ClientIdentity::Subscriber(kind, value)
                }
                _ => {
                    return Err(CtlError::Usage(
                        "give --mac, --client-id, --circuit-id, --remote-id, --subscriber-id \
                         or --flex-id"
                            .into(),
                    ))
                }
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
        CtlCommand::Reload => (Command::Reload, |v| Ok(tables::reload(&decode(v)?))),
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
trait Paged: serde::de::DeserializeOwned {
    /// Where a page starts: after this entry.
    type Cursor;
    fn next_cursor(&self) -> Option<Self::Cursor>;
    /// Appends the next page's entries and takes its cursor.
    fn extend(&mut self, next: Self);
}

impl Paged for LeasePage {
    type Cursor = Ipv4Addr;
    fn next_cursor(&self) -> Option<Ipv4Addr> {
        self.next_cursor
    }
    fn extend(&mut self, next: Self) {
        self.leases.extend(next.leases);
        self.next_cursor = next.next_cursor;
    }
}

impl Paged for ReservationPage {
    type Cursor = Ipv4Addr;
    fn next_cursor(&self) -> Option<Ipv4Addr> {
        self.next_cursor
    }
    fn extend(&mut self, next: Self) {
        self.reservations.extend(next.reservations);
        self.next_cursor = next.next_cursor;
    }
}

impl Paged for MemberPage {
    type Cursor = ClassMember;
    fn next_cursor(&self) -> Option<ClassMember> {
        self.next_cursor.clone()
    }
    fn extend(&mut self, next: Self) {
        self.members.extend(next.members);
        self.next_cursor = next.next_cursor;
    }
}

/// The page `command` asks for from `start`, or with `all` every page from there on as
/// one.
fn pages<P: Paged>(
    conn: &mut Client,
    all: bool,
    start: Option<P::Cursor>,
    command: impl Fn(Option<P::Cursor>) -> Command,
) -> Result<P, ClientError> {
    let mut page: P = conn.ask(command(start))?;
    while let (true, Some(next)) = (all, page.next_cursor()) {
        page.extend(conn.ask(command(Some(next)))?);
    }
    Ok(page)
}

fn show<P: serde::Serialize>(
    page: &P,
    json: bool,
    render: impl Fn(&P) -> String,
) -> Result<(), CtlError> {
    if json {
        let v = serde_json::to_value(page).map_err(|e| ClientError::BadReply(e.to_string()))?;
        print_json(&v);
    } else {
        print!("{}", render(page));
    }
    Ok(())
}

fn top(
    conn: &mut Client,
    count: Option<u64>,
    interval: Duration,
    json: bool,
) -> Result<(), CtlError> {
    let clear = !json && io::stdout().is_terminal();
    let mut prev: Option<(Instant, Stats)> = None;
    let mut done = 0u64;
    loop {
        let started = Instant::now();
        let status: Status = conn.ask(Command::Status)?;
        let stats: Stats = conn.ask(Command::Stats)?;
        let now = Instant::now();
        let rates = prev.as_ref().map(|(then, p)| {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            Rates::between(p, &stats, secs)
        });
        let mut out = io::stdout().lock();
        let written = if json {
            writeln!(
                out,
                "{}",
                json!({"status": status, "stats": stats, "rates": rates})
            )
        } else if clear {
            write!(
                out,
                "\x1b[H\x1b[2J{}",
                tables::top(&status, &stats, rates.as_ref())
            )
        } else {
            let gap = if done > 0 { "\n" } else { "" };
            write!(out, "{gap}{}", tables::top(&status, &stats, rates.as_ref()))
        };
        written
            .and_then(|()| out.flush())
            .map_err(ClientError::Io)?;
        drop(out);
        prev = Some((now, stats));
        done += 1;
        if count.is_some_and(|c| done >= c) {
            return Ok(());
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
