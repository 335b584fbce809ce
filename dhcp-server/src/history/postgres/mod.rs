//! The PostgreSQL sink: one row per lease span (who held which address from when to
//! when, through which relay), written by both servers of a failover pair into one
//! database, and the queries operators ask of it (docs/history-postgres.md).
//!
//! Each batch is one transaction: take the writers' lock (the two servers of a pair take
//! turns), read the open spans of the batch's addresses from `lease_open`, work out the
//! changes in memory (`plan`), write them with four set-based statements over arrays,
//! and store the journal position in `history_position` beside them. A crash at any point
//! leaves both or neither.

mod plan;
mod query;
mod schema;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use hashbrown::{HashMap, HashSet};
use tokio::runtime::Runtime;
use tokio_postgres::types::{Timestamp, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use super::{Batch, Origin, Position, Sink, SinkError};
use plan::{AddrState, ClientKey, Micros, NewSpan};
pub use query::{format_spans, format_time, History, Span};
use schema::Month;

/// Where and how the sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// libpq connection string (`host=/run/postgresql dbname=dhcp user=dhcp`) or URL
    /// (`postgres://dhcp@db.example/dhcp`). TLS is not spoken: a Unix socket or a trusted
    /// network.
    pub url: String,
    /// Partitions whose spans all started longer ago than this are dropped (by month).
    pub retention_days: u32,
    /// The most events the follower hands over in one batch (one transaction).
    pub batch: usize,
    /// The longest a connection, a delivery or a retention pass may take before the sink
    /// gives up on the connection (the transaction is then rolled back by the server).
    pub timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            url: "host=/run/postgresql dbname=dhcp".into(),
            retention_days: 365,
            batch: 50_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What went wrong, before it becomes a `SinkError` or an operator's message.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("connection string: {0}")]
    Url(tokio_postgres::Error),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("the database's history schema is version {at}, newer than this server's {known}: upgrade the server")]
    Newer { at: usize, known: usize },
    #[error("stored journal position: {0}")]
    Position(String),
    #[error("the batch's partitions kept disappearing under it")]
    Unsettled,
    #[error("not connected (open first)")]
    NotOpen,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot start the PostgreSQL client's runtime: {0}")]
    Runtime(std::io::Error),
}

impl PgError {
    fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        move |source| PgError::Sql { what, source }
    }
}

/// One worker thread runs the connection's task, so requests go out and replies come in
/// while the caller's thread (in `block_on`) builds the next statement: a fifth of a
/// batch's time was the client's, spent while the server waited.
fn runtime() -> Result<Runtime, PgError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .enable_time()
        .build()
        .map_err(PgError::Runtime)
}

/// Connects with `url`, naming the connection after `app` unless the URL does, and
/// bounding the connect by `timeout` unless the URL does. The connection's task runs on
/// `rt` (so only while the caller is in `block_on`, which is the only time it is used).
async fn connect(url: &str, app: &str, timeout: Duration, rt: &Runtime) -> Result<Client, PgError> {
    let mut config: Config = url.parse().map_err(PgError::Url)?;
    if config.get_application_name().is_none() {
        config.application_name(app);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    let target = format!(
        "{:?} database {}",
        config.get_hosts(),
        config.get_dbname().unwrap_or("(user's)")
    );
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| PgError::Connect { target, source })?;
    rt.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("history database connection ended: {e}");
        }
    });
    Ok(client)
}

/// Creates or migrates the history schema and this month's and next month's partitions:
/// `dhcp-server history init`. Returns the schema version.
pub fn init(url: &str) -> Result<usize, PgError> {
    let rt = runtime()?;
    let timeout = PostgresOptions::default().timeout;
    rt.block_on(async {
        let mut client = connect(url, "dhcp-server history init", timeout, &rt).await?;
        let v = schema::migrate(&mut client).await?;
        let m = schema::month_of(schema::now());
        schema::ensure_partitions(&mut client, [m, m + 1]).await?;
        Ok(v)
    })
}

/// The sink. It owns a runtime for the async client (one worker thread for the
/// connection) and blocks on it: the follower thread is its own, and nothing else waits
/// on it.
pub struct PostgresSink {
    opts: PostgresOptions,
    origin: Origin,
    rt: Runtime,
    inner: Inner,
}

/// The state the async parts borrow while the runtime is borrowed to run them.
struct Inner {
    conn: Option<Conn>,
    /// Partitions known to exist (this connection or an earlier one created or saw them).
    months: HashSet<Month>,
    last_retention: Option<Instant>,
}

struct Conn {
    client: Client,
    st: Stmts,
}

/// The delivery's statements, prepared once per connection.
struct Stmts {
    state: Statement,
    extend: Statement,
    insert: Statement,
    set_open: Statement,
    add_open: Statement,
    position: Statement,
}

/// Taken first by every transaction that changes spans (deliveries, retention).
/// SHARE ROW EXCLUSIVE conflicts with itself and with row changes, not with reads.
const WRITER_LOCK: &str = "LOCK TABLE lease_open IN SHARE ROW EXCLUSIVE MODE";

/// How often a running sink drops expired partitions (and at every `open`).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

impl PostgresSink {
    pub fn new(opts: PostgresOptions, origin: Origin) -> Result<Self, SinkError> {
        let rt = runtime().map_err(|e| SinkError::new(format!("postgres: {e}")))?;
        Ok(PostgresSink {
            opts,
            origin,
            rt,
            inner: Inner {
                conn: None,
                months: HashSet::new(),
                last_retention: None,
            },
        })
    }

    /// Runs `f` bounded by the timeout; on any error the connection is dropped (rolling
    /// back what it had begun) and the error given context.
    fn run<T>(
        &mut self,
        doing: &str,
        f: impl AsyncFnOnce(&mut Inner, &PostgresOptions, &Origin, &Runtime) -> Result<T, PgError>,
    ) -> Result<T, SinkError> {
        let PostgresSink {
            opts,
            origin,
            rt,
            inner,
        } = self;
        let limit = opts.timeout;
        let res = rt.block_on(async {
            tokio::time::timeout(limit, f(inner, opts, origin, rt))
                .await
                .unwrap_or(Err(PgError::Timeout(limit)))
        });
        res.map_err(|e| {
            inner.conn = None;
            SinkError::new(format!("postgres ({}): {doing}: {e}", origin.server))
        })
    }
}

impl Sink for PostgresSink {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn open(&mut self) -> Result<Option<Position>, SinkError> {
        self.inner.conn = None;
        // Partitions may have been dropped meanwhile (the partner's retention).
        self.inner.months.clear();
        self.run("open", async |inner, opts, origin, rt| {
            let app = format!("dhcp-server history {}", origin.server);
            let mut client = connect(&opts.url, &app, opts.timeout, rt).await?;
            let version = schema::migrate(&mut client).await?;
            let m = schema::month_of(schema::now());
            schema::ensure_partitions(&mut client, [m, m + 1]).await?;
            inner.months.extend([m, m + 1]);
            schema::apply_retention(&mut client, opts.retention_days).await?;
            inner.last_retention = Some(Instant::now());
            let row = client
                .query_opt(
                    "SELECT position FROM history_position WHERE server = $1",
                    &[&origin.server],
                )
                .await
                .map_err(PgError::sql("read the position"))?;
            let position = row
                .map(|r| r.try_get::<_, String>(0))
                .transpose()
                .map_err(PgError::sql("read the position"))?
                .map(|p| p.parse::<Position>())
                .transpose()
                .map_err(PgError::Position)?;
            inner.conn = Some(Conn::prepare(client).await?);
            tracing::info!(
                server = %origin.server,
                version,
                position = %position.as_ref().map_or("none".into(), |p| p.to_string()),
                "history database opened"
            );
            Ok(position)
        })
    }

    fn deliver(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.run("deliver", async |inner, opts, origin, _| {
            inner.deliver(batch, opts, origin).await
        })
    }
}

impl Conn {
    async fn prepare(client: Client) -> Result<Conn, PgError> {
        let p = async |sql: &str, types: &[Type]| {
            client
                .prepare_typed(sql, types)
                .await
                .map_err(PgError::sql("prepare"))
        };
        use Type as T;
        let state = p(
            "SELECT address, since, open, htype, hw, client_id, closed_at FROM lease_open
             WHERE address = ANY($1)",
            &[T::INET_ARRAY],
        )
        .await?;
        // The end `plan` could not work out alone: max(since, min(max(upper, ext), close)),
        // against the stored upper; a span that ends where it starts is [since, since].
        let upper = "greatest(s.since, least(greatest(upper(s.validity), x.ext), x.close))";
        let extend = p(
            &format!(
                "UPDATE lease_span s SET
                   validity = tstzrange(s.since, {upper},
                                        CASE WHEN {upper} = s.since THEN '[]' ELSE '[)' END),
                   server = $1,
                   host_name = coalesce(x.host_name, s.host_name),
                   circuit_id = coalesce(x.circuit_id, s.circuit_id),
                   remote_id = coalesce(x.remote_id, s.remote_id),
                   subscriber_id = coalesce(x.subscriber_id, s.subscriber_id),
                   giaddr = coalesce(x.giaddr, s.giaddr)
                 FROM unnest($2::inet[], $3::timestamptz[], $4::timestamptz[],
                             $5::timestamptz[], $6::text[], $7::bytea[], $8::bytea[],
                             $9::bytea[], $10::inet[])
                        AS x(address, since, ext, close, host_name, circuit_id, remote_id,
                             subscriber_id, giaddr)
                 WHERE s.address = x.address AND s.since = x.since"
            ),
            &[
                T::TEXT,
                T::INET_ARRAY,
                T::TIMESTAMPTZ_ARRAY,
                T::TIMESTAMPTZ_ARRAY,
                T::TIMESTAMPTZ_ARRAY,
                T::TEXT_ARRAY,
                T::BYTEA_ARRAY,
                T::BYTEA_ARRAY,
                T::BYTEA_ARRAY,
                T::INET_ARRAY,
            ],
        )
        .await?;
        let insert = p(
            "INSERT INTO lease_span (address, since, validity, htype, hw, client_id,
                                     host_name, circuit_id, remote_id, subscriber_id,
                                     giaddr, server)
             SELECT address, since,
                    tstzrange(since, upper, CASE WHEN upper = since THEN '[]' ELSE '[)' END),
                    htype, hw, client_id, host_name, circuit_id, remote_id, subscriber_id,
                    giaddr, $1
             FROM unnest($2::inet[], $3::timestamptz[], $4::timestamptz[], $5::int2[],
                         $6::bytea[], $7::bytea[], $8::text[], $9::bytea[], $10::bytea[],
                         $11::bytea[], $12::inet[])
                    AS x(address, since, upper, htype, hw, client_id, host_name, circuit_id,
                         remote_id, subscriber_id, giaddr)",
            &[
                T::TEXT,
                T::INET_ARRAY,
                T::TIMESTAMPTZ_ARRAY,
                T::TIMESTAMPTZ_ARRAY,
                T::INT2_ARRAY,
                T::BYTEA_ARRAY,
                T::BYTEA_ARRAY,
                T::TEXT_ARRAY,
                T::BYTEA_ARRAY,
                T::BYTEA_ARRAY,
                T::BYTEA_ARRAY,
                T::INET_ARRAY,
            ],
        )
        .await?;
        // The columns of a lease_open row, as arrays: what set_open and add_open unnest.
        const OPEN_ROW: &[T] = &[
            T::INET_ARRAY,
            T::TIMESTAMPTZ_ARRAY,
            T::BOOL_ARRAY,
            T::INT2_ARRAY,
            T::BYTEA_ARRAY,
            T::BYTEA_ARRAY,
            T::TIMESTAMPTZ_ARRAY,
        ];
        let set_open = p(
            "UPDATE lease_open o SET since = x.since, open = x.open, htype = x.htype,
                                     hw = x.hw, client_id = x.client_id,
                                     closed_at = x.closed_at
             FROM unnest($1::inet[], $2::timestamptz[], $3::bool[], $4::int2[],
                         $5::bytea[], $6::bytea[], $7::timestamptz[])
                    AS x(address, since, open, htype, hw, client_id, closed_at)
             WHERE o.address = x.address",
            OPEN_ROW,
        )
        .await?;
        let add_open = p(
            "INSERT INTO lease_open (address, since, open, htype, hw, client_id, closed_at)
             SELECT * FROM unnest($1::inet[], $2::timestamptz[], $3::bool[], $4::int2[],
                                  $5::bytea[], $6::bytea[], $7::timestamptz[])",
            OPEN_ROW,
        )
        .await?;
        let position = p(
            "INSERT INTO history_position (server, position) VALUES ($1, $2)
             ON CONFLICT (server) DO UPDATE SET position = excluded.position, updated = now()",
            &[T::TEXT, T::TEXT],
        )
        .await?;
        Ok(Conn {
            client,
            st: Stmts {
                state,
                extend,
                insert,
                set_open,
                add_open,
                position,
            },
        })
    }
}

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

type Ts = Timestamp<SystemTime>;

impl Inner {
    async fn deliver(
        &mut self,
        batch: &Batch,
        opts: &PostgresOptions,
        origin: &Origin,
    ) -> Result<(), PgError> {
        let started = Instant::now();
        let Some(conn) = self.conn.as_mut() else {
            return Err(PgError::NotOpen);
        };
        if self
            .last_retention
            .is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
        {
            let m = schema::month_of(schema::now());
            schema::ensure_partitions(&mut conn.client, [m, m + 1]).await?;
            self.months.extend([m, m + 1]);
            if !schema::apply_retention(&mut conn.client, opts.retention_days)
                .await?
                .is_empty()
            {
                self.months.clear();
                self.months.extend([m, m + 1]);
            }
            self.last_retention = Some(Instant::now());
        }
        let mut addrs: Vec<IpAddr> = plan::addresses(&batch.events).into_iter().map(ip).collect();
        addrs.sort_unstable();
        // At most one start-over (for a missing partition); a second means something
        // else changes the tables under us, and the follower's retry is the answer.
        for _ in 0..2 {
            let tx = conn
                .client
                .transaction()
                .await
                .map_err(PgError::sql("begin"))?;
            // The writers of one database (a failover pair) take turns, a batch each: one
            // lock, taken first, so no two transactions can deadlock or both open a span
            // for one address. Row locks let them overlap, but cost a WAL record per row
            // (with the placeholder rows new addresses needed, a third of a batch's time)
            // and buy nothing on a database whose one busy core is the limit.
            tx.batch_execute(WRITER_LOCK)
                .await
                .map_err(PgError::sql("wait for the other writer"))?;
            // Two halves by address, pipelined: while the server reads the second half's
            // rows and writes the first's, this thread plans the other (the halves share
            // no address, so their order does not matter). The client's share of a batch,
            // a fifth of it, then mostly overlaps the server's.
            let mid = addrs.get(addrs.len() / 2).copied();
            let first = |a: Ipv4Addr| mid.is_none_or(|m| IpAddr::V4(a) < m);
            let (low, high) = addrs.split_at(addrs.len() / 2);
            let known = &self.months;
            let half = async |addrs: &[IpAddr], low: bool| -> Result<Done, PgError> {
                let rows = tx
                    .query(&conn.st.state, &[&addrs])
                    .await
                    .map_err(PgError::sql("read addresses"))?;
                let mut state = HashMap::with_capacity(rows.len());
                for r in rows {
                    let (a, s) = addr_state(&r).map_err(PgError::sql("read addresses"))?;
                    state.insert(a, s);
                }
                let events = batch.events.iter().filter(|e| first(e.addr) == low);
                let plan = plan::plan(events, &state);
                // New spans may start in months without a partition (a journal replayed
                // from long ago); creating one needs its own transaction.
                let missing: HashSet<Month> = plan
                    .inserts
                    .iter()
                    .map(|s| schema::month_of(s.since))
                    .filter(|m| !known.contains(m))
                    .collect();
                if !missing.is_empty() {
                    return Ok(Done::Missing(missing));
                }
                write(&tx, &conn.st, &plan, &origin.server).await?;
                Ok(Done::Written(plan.extends.len(), plan.inserts.len()))
            };
            let (a, b) = tokio::try_join!(half(low, true), half(high, false))?;
            let (extended, opened) = match (a, b) {
                (Done::Written(e1, o1), Done::Written(e2, o2)) => (e1 + e2, o1 + o2),
                (Done::Missing(m), other) | (other, Done::Missing(m)) => {
                    // The transaction starts over once they exist.
                    tx.rollback().await.map_err(PgError::sql("rollback"))?;
                    let mut m = m;
                    if let Done::Missing(more) = other {
                        m.extend(more);
                    }
                    schema::ensure_partitions(&mut conn.client, m.iter().copied()).await?;
                    self.months.extend(m);
                    continue;
                }
            };
            tx.execute(
                &conn.st.position,
                &[&origin.server, &batch.after.to_string()],
            )
            .await
            .map_err(PgError::sql("store the position"))?;
            tx.commit().await.map_err(PgError::sql("commit"))?;
            tracing::debug!(
                events = batch.events.len(),
                extended,
                opened,
                took = ?started.elapsed(),
                "history batch stored"
            );
            return Ok(());
        }
        Err(PgError::Unsettled)
    }
}

/// What one half of a batch came to.
enum Done {
    /// Spans extended and opened.
    Written(usize, usize),
    /// Nothing written: these months need a partition first.
    Missing(HashSet<Month>),
}

/// An address's `lease_open` row (a type changed by hand is an error, not a panic).
fn addr_state(r: &Row) -> Result<(Ipv4Addr, AddrState), tokio_postgres::Error> {
    let a = match r.try_get::<_, IpAddr>(0)? {
        IpAddr::V4(a) => a,
        // Not ours to write; read as an address that never held a span.
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let since: Option<Ts> = r.try_get(1)?;
    let closed_at: Option<Ts> = r.try_get(6)?;
    let open = if r.try_get::<_, bool>(2)? {
        Some(ClientKey {
            htype: r.try_get::<_, i16>(3)? as u8,
            hw: r.try_get(4)?,
            client_id: r.try_get(5)?,
        })
    } else {
        None
    };
    Ok((
        a,
        AddrState {
            since: since.map(schema::from_ts),
            open,
            closed_at: closed_at.map(schema::from_ts),
        },
    ))
}

/// Writes `plan` in `tx`: four set-based statements over arrays, rows in key order (the
/// index pages they touch then follow one another), sent one behind the other: each is
/// on the wire while the next one's arrays are built.
async fn write(
    tx: &Transaction<'_>,
    st: &Stmts,
    plan: &plan::Plan<'_>,
    server: &String,
) -> Result<(), PgError> {
    tokio::try_join!(
        extend(tx, st, plan, server),
        insert(tx, st, plan, server),
        // Rows read under the writers' lock are updated, the others inserted: cheaper
        // than one upsert's speculative insertion per row.
        opens(tx, st, plan, true),
        opens(tx, st, plan, false),
    )?;
    Ok(())
}

async fn extend(
    tx: &Transaction<'_>,
    st: &Stmts,
    plan: &plan::Plan<'_>,
    server: &String,
) -> Result<(), PgError> {
    if !plan.extends.is_empty() {
        let mut x: Vec<&plan::Extend> = plan.extends.iter().collect();
        x.sort_unstable_by_key(|e| (e.address, e.since));
        let col = |f: fn(&plan::Extend) -> Option<Micros>| -> Vec<Option<Ts>> {
            x.iter().map(|e| f(e).map(schema::ts)).collect()
        };
        let a: Vec<IpAddr> = x.iter().map(|e| ip(e.address)).collect();
        let since: Vec<Ts> = x.iter().map(|e| schema::ts(e.since)).collect();
        let (ext, close) = (col(|e| e.ext), col(|e| e.close));
        let c = AttrColumns::of(x.iter().map(|e| &e.attrs));
        tx.execute(
            &st.extend,
            &[
                server, &a, &since, &ext, &close, &c.host, &c.circuit, &c.remote, &c.sub, &c.gi,
            ],
        )
        .await
        .map_err(PgError::sql("extend spans"))?;
    }
    Ok(())
}

async fn insert(
    tx: &Transaction<'_>,
    st: &Stmts,
    plan: &plan::Plan<'_>,
    server: &String,
) -> Result<(), PgError> {
    if !plan.inserts.is_empty() {
        let mut x: Vec<&NewSpan> = plan.inserts.iter().collect();
        x.sort_unstable_by_key(|s| (s.address, s.since));
        let a: Vec<IpAddr> = x.iter().map(|s| ip(s.address)).collect();
        let since: Vec<Ts> = x.iter().map(|s| schema::ts(s.since)).collect();
        let upper: Vec<Ts> = x.iter().map(|s| schema::ts(s.upper)).collect();
        let htype: Vec<i16> = x.iter().map(|s| i16::from(s.client.htype)).collect();
        let hw: Vec<&[u8]> = x.iter().map(|s| s.client.hw.as_slice()).collect();
        let cid: Vec<Option<&[u8]>> = x
            .iter()
            .map(|s| (!s.client.client_id.is_empty()).then_some(&s.client.client_id[..]))
            .collect();
        let c = AttrColumns::of(x.iter().map(|s| &s.attrs));
        tx.execute(
            &st.insert,
            &[
                server, &a, &since, &upper, &htype, &hw, &cid, &c.host, &c.circuit, &c.remote,
                &c.sub, &c.gi,
            ],
        )
        .await
        .map_err(PgError::sql("insert spans"))?;
    }
    Ok(())
}

/// A span's host name and relay fields as the array parameters both the extension and
/// the insertion of spans take.
struct AttrColumns<'a> {
    host: Vec<Option<&'a str>>,
    circuit: Vec<Option<&'a [u8]>>,
    remote: Vec<Option<&'a [u8]>>,
    sub: Vec<Option<&'a [u8]>>,
    gi: Vec<Option<IpAddr>>,
}

impl<'a> AttrColumns<'a> {
    fn of(attrs: impl Iterator<Item = &'a plan::Attrs<'a>> + Clone) -> Self {
        AttrColumns {
            host: attrs.clone().map(|a| a.host_name.as_deref()).collect(),
            circuit: attrs.clone().map(|a| a.circuit_id).collect(),
            remote: attrs.clone().map(|a| a.remote_id).collect(),
            sub: attrs.clone().map(|a| a.subscriber_id).collect(),
            gi: attrs.map(|a| a.giaddr.map(ip)).collect(),
        }
    }
}

/// The `lease_open` rows that exist (`stored`) or not.
async fn opens(
    tx: &Transaction<'_>,
    st: &Stmts,
    plan: &plan::Plan<'_>,
    stored: bool,
) -> Result<(), PgError> {
    let mut x: Vec<&plan::OpenRow> = plan.opens.iter().filter(|o| o.stored == stored).collect();
    if !x.is_empty() {
        x.sort_unstable_by_key(|o| o.address);
        let empty = ClientKey::default();
        let keys: Vec<&ClientKey> = x
            .iter()
            .map(|o| o.open.as_ref().unwrap_or(&empty))
            .collect();
        let a: Vec<IpAddr> = x.iter().map(|o| ip(o.address)).collect();
        let since: Vec<Ts> = x.iter().map(|o| schema::ts(o.since)).collect();
        let open: Vec<bool> = x.iter().map(|o| o.open.is_some()).collect();
        let htype: Vec<i16> = keys.iter().map(|k| i16::from(k.htype)).collect();
        let hw: Vec<&[u8]> = keys.iter().map(|k| k.hw.as_slice()).collect();
        let cid: Vec<&[u8]> = keys.iter().map(|k| k.client_id.as_slice()).collect();
        let closed: Vec<Option<Ts>> = x.iter().map(|o| o.closed_at.map(schema::ts)).collect();
        tx.execute(
            if stored { &st.set_open } else { &st.add_open },
            &[&a, &since, &open, &htype, &hw, &cid, &closed],
        )
        .await
        .map_err(PgError::sql("record open spans"))?;
    }
    Ok(())
}
