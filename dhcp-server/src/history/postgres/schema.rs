//! The tables, their migrations, the monthly partitions of `lease_span` and the retention
//! that drops them. Every step is idempotent and serialized between the servers writing
//! to one database by a transaction-scoped advisory lock, so two sinks opening at once, or
//! a sink and `dhcp-server history init`, cannot trip over each other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::types::Timestamp;
use tokio_postgres::Client;

use super::plan::Micros;
use super::PgError;
use crate::calendar::{civil_from_days, days_from_civil};

/// The advisory lock key of schema changes ("DHCPHIST" in ASCII), distinct from whatever
/// else the database's users lock.
const SCHEMA_LOCK: i64 = 0x4448_4350_4849_5354;

/// Version `i + 1` is `MIGRATIONS[i]`; a released migration is never edited, only followed.
const MIGRATIONS: &[&str] = &[
    // One row per lease span. The partition key `since` is the span's start
    // (`lower(validity)`, kept apart because a partition key cannot be an expression of a
    // key column) and, with the address, its key: `plan` gives the spans of one address
    // distinct starts. (address, since) answers "who had X at T" as the latest span of X
    // starting at or before T (a backward scan that stops at the first row, partitions
    // visited newest first); (hw, since) and (circuit_id, since), with the address
    // included so they are read without the rows, give the addresses a client or a port
    // had, whose spans the primary key then gives (query.rs). None holds `validity`: a
    // renewal then changes no indexed column and is a HOT update.
    "CREATE TABLE lease_span (
        address       inet        NOT NULL,
        since         timestamptz NOT NULL,
        validity      tstzrange   NOT NULL,
        htype         smallint    NOT NULL,
        hw            bytea       NOT NULL,
        client_id     bytea,
        host_name     text,
        circuit_id    bytea,
        remote_id     bytea,
        subscriber_id bytea,
        giaddr        inet,
        server        text        NOT NULL,
        PRIMARY KEY (address, since)
    ) PARTITION BY RANGE (since);
    CREATE INDEX lease_span_hw ON lease_span (hw, since) INCLUDE (address);
    CREATE INDEX lease_span_circuit ON lease_span (circuit_id, since) INCLUDE (address)
        WHERE circuit_id IS NOT NULL;
    -- Each address's latest span, whether it is open (for whom) or when it closed: the
    -- row writers lock to agree on one open span per address (a partitioned table cannot
    -- have a unique index on the address alone).
    CREATE TABLE lease_open (
        address   inet PRIMARY KEY,
        since     timestamptz,
        open      boolean NOT NULL DEFAULT false,
        htype     smallint NOT NULL DEFAULT 0,
        hw        bytea NOT NULL DEFAULT '',
        client_id bytea NOT NULL DEFAULT '',
        closed_at timestamptz
    ) WITH (fillfactor = 70);
    CREATE TABLE history_position (
        server   text PRIMARY KEY,
        position text NOT NULL,
        updated  timestamptz NOT NULL DEFAULT now()
    );",
];

pub const VERSION: usize = MIGRATIONS.len();

/// Creates or migrates the tables; the version the database is at afterwards.
pub async fn migrate(client: &mut Client) -> Result<usize, PgError> {
    let tx = client.transaction().await.map_err(PgError::sql("begin"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(PgError::sql("lock the schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS history_schema (
            version integer PRIMARY KEY,
            applied timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(PgError::sql("create history_schema"))?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM history_schema", &[])
        .await
        .map_err(PgError::sql("read the schema version"))?;
    let at = row
        .try_get::<_, i32>(0)
        .map_err(PgError::sql("read the schema version"))?;
    let at = usize::try_from(at).unwrap_or(0);
    if at > VERSION {
        return Err(PgError::Newer { at, known: VERSION });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at) {
        tx.batch_execute(sql)
            .await
            .map_err(PgError::sql("migrate the schema"))?;
        let v = i as i32 + 1;
        tx.execute("INSERT INTO history_schema (version) VALUES ($1)", &[&v])
            .await
            .map_err(PgError::sql("record the schema version"))?;
        tracing::info!(version = v, "history schema migrated");
    }
    tx.commit().await.map_err(PgError::sql("commit"))?;
    Ok(VERSION)
}

/// A month as a count since year 0 (`year * 12 + month - 1`): the partition a start
/// falls in.
pub type Month = i64;

pub fn month_of(t: Micros) -> Month {
    let (y, m, _) = civil_from_days(t.div_euclid(86_400_000_000));
    y * 12 + i64::from(m) - 1
}

/// The first instant of `month`.
fn month_start(month: Month) -> Micros {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) as u32 + 1);
    days_from_civil(y, m, 1) * 86_400_000_000
}

fn partition_name(month: Month) -> String {
    format!(
        "lease_span_p{:04}{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

fn month_of_name(name: &str) -> Option<Month> {
    let d = name.strip_prefix("lease_span_p")?;
    if d.len() != 6 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m): (i64, i64) = (d[..4].parse().ok()?, d[4..].parse().ok()?);
    (1..=12).contains(&m).then_some(y * 12 + m - 1)
}

pub fn ts(t: Micros) -> Timestamp<SystemTime> {
    if t == super::plan::INFINITY {
        Timestamp::PosInfinity
    } else if t >= 0 {
        Timestamp::Value(UNIX_EPOCH + Duration::from_micros(t as u64))
    } else {
        Timestamp::Value(UNIX_EPOCH - Duration::from_micros(t.unsigned_abs()))
    }
}

pub fn from_ts(t: Timestamp<SystemTime>) -> Micros {
    match t {
        Timestamp::PosInfinity => super::plan::INFINITY,
        Timestamp::NegInfinity => Micros::MIN,
        Timestamp::Value(v) => match v.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as Micros,
            Err(e) => -(e.duration().as_micros() as Micros),
        },
    }
}

pub fn now() -> Micros {
    from_ts(Timestamp::Value(SystemTime::now()))
}

/// Creates the partitions of `months` that are missing.
pub async fn ensure_partitions(
    client: &mut Client,
    months: impl IntoIterator<Item = Month>,
) -> Result<(), PgError> {
    let tx = client.transaction().await.map_err(PgError::sql("begin"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(PgError::sql("lock the schema"))?;
    for m in months {
        // Bounds as literals: DDL takes no parameters. Both are formatted by us. A quarter
        // of each page left free keeps renewals HOT updates (99.8% of them in the
        // benchmark, against 92% at 90): a non-HOT one writes all three indexes.
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF lease_span
             FOR VALUES FROM ('{}') TO ('{}') WITH (fillfactor = 75)",
            partition_name(m),
            iso(month_start(m)),
            iso(month_start(m + 1)),
        );
        tx.batch_execute(&sql)
            .await
            .map_err(PgError::sql("create a partition"))?;
    }
    tx.commit().await.map_err(PgError::sql("commit"))
}

/// Drops the partitions whose every span started more than `days` ago. Spans in them that
/// still reach past the cut (a client that has renewed for a year) are carried first into
/// the oldest partition kept, starting at its start, so the address's current holder is
/// never forgotten. Returns the partitions dropped.
pub async fn apply_retention(client: &mut Client, days: u32) -> Result<Vec<String>, PgError> {
    let cutoff = now() - i64::from(days) * 86_400_000_000;
    let keep = month_of(cutoff);
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'lease_span'::regclass",
            &[],
        )
        .await
        .map_err(PgError::sql("list partitions"))?;
    let mut old: Vec<Month> = rows
        .iter()
        .filter_map(|r| month_of_name(r.try_get(0).ok()?))
        .filter(|&m| m < keep)
        .collect();
    if old.is_empty() {
        return Ok(Vec::new());
    }
    old.sort_unstable();
    ensure_partitions(client, [keep]).await?;
    let (start, cut) = (ts(month_start(keep)), ts(cutoff));
    let mut dropped = Vec::new();
    for m in old {
        let name = partition_name(m);
        let tx = client.transaction().await.map_err(PgError::sql("begin"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(PgError::sql("lock the schema"))?;
        // The writers' lock first, as deliveries take it: then the table lock DROP needs
        // is the last one taken, and no cycle can form.
        tx.batch_execute(super::WRITER_LOCK)
            .await
            .map_err(PgError::sql("wait for the writers"))?;
        tx.execute(
            &format!(
                "INSERT INTO lease_span
                 SELECT address, $1, tstzrange($1, upper(validity), '[)'), htype, hw,
                        client_id, host_name, circuit_id, remote_id, subscriber_id, giaddr,
                        server
                 FROM {name} WHERE upper(validity) > $2
                 ON CONFLICT DO NOTHING"
            ),
            &[&start, &cut],
        )
        .await
        .map_err(PgError::sql("carry spans over"))?;
        tx.execute(
            &format!(
                "UPDATE lease_open o
                 SET since = CASE WHEN upper(p.validity) > $2 THEN $1 ELSE o.since END,
                     open = o.open AND upper(p.validity) > $2
                 FROM {name} p WHERE p.address = o.address AND p.since = o.since"
            ),
            &[&start, &cut],
        )
        .await
        .map_err(PgError::sql("move open spans"))?;
        tx.batch_execute(&format!("DROP TABLE {name}"))
            .await
            .map_err(PgError::sql("drop a partition"))?;
        tx.commit().await.map_err(PgError::sql("commit"))?;
        tracing::info!(partition = %name, days, "history partition dropped by retention");
        dropped.push(name);
    }
    Ok(dropped)
}

/// `YYYY-MM-DD 00:00:00+00` of a day boundary.
fn iso(t: Micros) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400_000_000));
    format!("{y:04}-{m:02}-{d:02} 00:00:00+00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_their_partitions() {
        // 2026-12-03T17:00:00Z
        let t = 1_796_317_200 * 1_000_000;
        let m = month_of(t);
        assert_eq!(partition_name(m), "lease_span_p202612");
        assert_eq!(iso(month_start(m)), "2026-12-01 00:00:00+00");
        assert_eq!(iso(month_start(m + 1)), "2027-01-01 00:00:00+00");
        assert_eq!(month_of_name("lease_span_p202612"), Some(m));
        assert_eq!(month_of(month_start(m + 1) - 1), m);
        assert_eq!(iso(month_start(month_of(0))), "1970-01-01 00:00:00+00");
        for junk in [
            "lease_span_p2026",
            "lease_span_p202613",
            "x",
            "lease_span_p20261a",
        ] {
            assert_eq!(month_of_name(junk), None, "{junk}");
        }
    }
}
