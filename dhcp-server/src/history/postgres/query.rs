//! The operators' questions to the span table: who had an address at a time, and which
//! addresses a client (by hardware address) or a port (by circuit id) had over a period.
//! `dhcp-server history` calls these and prints `format_spans` or `Span::to_json`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use comfy_table::{presets, Table};
use dhcp_proto::lease::hex;
use tokio::runtime::Runtime;
use tokio_postgres::types::Timestamp;
use tokio_postgres::{Client, Row};

use super::plan::{micros, INFINITY};
use super::schema::{from_ts, ts};
use super::{connect, runtime, PgError, PostgresOptions};
use crate::calendar::format_utc;

/// One lease span as stored. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub address: Ipv4Addr,
    pub from: i64,
    /// `None`: no end (an infinite lease still held).
    pub until: Option<i64>,
    pub htype: u8,
    pub hw: Vec<u8>,
    pub client_id: Option<Vec<u8>>,
    pub host_name: Option<String>,
    pub circuit_id: Option<Vec<u8>>,
    pub remote_id: Option<Vec<u8>>,
    pub subscriber_id: Option<Vec<u8>>,
    pub giaddr: Option<Ipv4Addr>,
    /// The server that wrote it last.
    pub server: String,
}

const COLUMNS: &str = "s.address, lower(s.validity), upper(s.validity), s.htype, s.hw, \
     s.client_id, s.host_name, s.circuit_id, s.remote_id, s.subscriber_id, s.giaddr, s.server";

fn v4(a: Option<IpAddr>) -> Option<Ipv4Addr> {
    match a {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    }
}

fn secs(t: Option<Timestamp<SystemTime>>) -> Option<i64> {
    t.map(from_ts)
        .filter(|&m| m != INFINITY)
        .map(|m| m.div_euclid(1_000_000))
}

impl Span {
    fn from_row(r: &Row) -> Result<Span, tokio_postgres::Error> {
        Ok(Span {
            address: v4(r.try_get(0)?).unwrap_or(Ipv4Addr::UNSPECIFIED),
            from: secs(r.try_get(1)?).unwrap_or_default(),
            until: secs(r.try_get(2)?),
            htype: r.try_get::<_, i16>(3)? as u8,
            hw: r.try_get(4)?,
            client_id: r.try_get(5)?,
            host_name: r.try_get(6)?,
            circuit_id: r.try_get(7)?,
            remote_id: r.try_get(8)?,
            subscriber_id: r.try_get(9)?,
            giaddr: v4(r.try_get(10)?),
            server: r.try_get(11)?,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        let h = |b: &Option<Vec<u8>>| b.as_deref().map(hex);
        serde_json::json!({
            "address": self.address.to_string(),
            "from": self.from,
            "until": self.until,
            "hardware-type": self.htype,
            "hardware-address": hex(&self.hw),
            "client-id": h(&self.client_id),
            "host-name": self.host_name,
            "circuit-id": h(&self.circuit_id),
            "remote-id": h(&self.remote_id),
            "subscriber-id": h(&self.subscriber_id),
            "giaddr": self.giaddr.map(|a| a.to_string()),
            "server": self.server,
        })
    }
}

/// A connection for queries (`dhcp-server history`), on a runtime of its own.
pub struct History {
    rt: Runtime,
    client: Client,
}

impl History {
    pub fn connect(url: &str) -> Result<History, PgError> {
        let rt = runtime()?;
        let timeout = PostgresOptions::default().timeout;
        let client = rt.block_on(async {
            let client = connect(url, "dhcp-server history", timeout, &rt).await?;
            // The planner prices a key's index scans over every partition high enough to
            // compile them (JIT, 60 ms) or to start workers (10 to 40 ms), for queries that
            // take a few milliseconds without either (docs/history-postgres.md).
            client
                .batch_execute("SET jit = off; SET max_parallel_workers_per_gather = 0")
                .await
                .map_err(PgError::sql("set up the session"))?;
            Ok::<_, PgError>(client)
        })?;
        Ok(History { rt, client })
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Span>, PgError> {
        let rows = self
            .rt
            .block_on(self.client.query(sql, params))
            .map_err(PgError::sql("query the history"))?;
        rows.iter()
            .map(Span::from_row)
            .collect::<Result<_, _>>()
            .map_err(PgError::sql("read the history"))
    }

    /// Who had `address` at `at`: the address's latest span starting at or before `at`,
    /// if it still ran then (the primary key read backwards, newest partition first,
    /// stopping at the first row).
    pub fn at(&mut self, address: Ipv4Addr, at: u64) -> Result<Option<Span>, PgError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT * FROM lease_span
                WHERE address = $1 AND since <= $2 ORDER BY since DESC LIMIT 1) s
             WHERE s.validity @> $2"
        );
        let t = ts(micros(at));
        Ok(self
            .query(&sql, &[&IpAddr::V4(address), &t])?
            .into_iter()
            .next())
    }

    /// The spans of the client with hardware address `hw` (any hardware type) that
    /// overlap `from..=to`, oldest first.
    pub fn of_hw(&mut self, hw: &[u8], from: u64, to: u64) -> Result<Vec<Span>, PgError> {
        self.between("hw", hw, from, to)
    }

    /// The spans granted through the relay port with this circuit id (option 82
    /// sub-option 1) that overlap `from..=to`, oldest first.
    pub fn of_circuit(
        &mut self,
        circuit_id: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Vec<Span>, PgError> {
        self.between("circuit_id", circuit_id, from, to)
    }

    /// Two steps, so the cost follows the addresses the key had, not its spans: the
    /// addresses come from the key's index alone (it includes the address, so old
    /// partitions are read without their rows), then per address the span running at
    /// `from` (the latest starting before it: an address's spans do not overlap) and those
    /// starting in the period, by the primary key.
    fn between(
        &mut self,
        column: &str,
        key: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Vec<Span>, PgError> {
        // `column` is one of two names above, never input.
        let sql = format!(
            "SELECT {COLUMNS}
             FROM (SELECT DISTINCT address FROM lease_span
                   WHERE {column} = $1 AND since <= $3) a,
             LATERAL ((SELECT * FROM lease_span l
                       WHERE l.address = a.address AND l.since <= $2
                       ORDER BY l.since DESC LIMIT 1)
                      UNION ALL
                      (SELECT * FROM lease_span l
                       WHERE l.address = a.address AND l.since > $2 AND l.since <= $3)) s
             WHERE s.{column} = $1 AND s.validity && tstzrange($2, $3, '[]')
             ORDER BY s.since, s.address"
        );
        let (from, to) = (ts(micros(from)), ts(micros(to)));
        self.query(&sql, &[&key, &from, &to])
    }
}

/// `secs` as `YYYY-MM-DD HH:MM:SS` (UTC); a time before the epoch reads as the epoch.
pub fn format_time(secs: i64) -> String {
    format_utc(u64::try_from(secs).unwrap_or(0))
}

/// The spans as an aligned table for a terminal (times in UTC).
pub fn format_spans(spans: &[Span]) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_header([
        "address",
        "from (UTC)",
        "until (UTC)",
        "hardware address",
        "client id",
        "host name",
        "circuit id",
        "remote id",
        "giaddr",
        "server",
    ]);
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    for s in spans {
        t.add_row([
            s.address.to_string(),
            format_time(s.from),
            s.until.map_or("never".into(), format_time),
            hex(&s.hw),
            dash(s.client_id.as_deref().map(hex)),
            dash(s.host_name.clone()),
            dash(s.circuit_id.as_deref().map(hex)),
            dash(s.remote_id.as_deref().map(hex)),
            dash(s.giaddr.map(|a| a.to_string())),
            s.server.clone(),
        ]);
    }
    let mut out = t.to_string();
    out.push('\n');
    out
}
