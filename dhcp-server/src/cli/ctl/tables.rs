//! What `ctl` prints without `--json`: the replies as aligned tables and key-value lists.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::{presets, CellAlignment, Table};

use dhcp_server::control::{
    FailoverStatus, LeasePage, MemberPage, RelayInfo, ReloadReport, ReservationPage, Stats, Status,
};

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

/// What `top` shows beside the counters: per-second rates since the previous refresh.
#[derive(serde::Serialize)]
pub(super) struct Rates {
    received: BTreeMap<String, f64>,
    sent: BTreeMap<String, f64>,
    drops: BTreeMap<String, f64>,
}

impl Rates {
    /// From two snapshots `secs` apart.
    pub(super) fn between(prev: &Stats, cur: &Stats, secs: f64) -> Self {
        Self {
            received: rates(&prev.received, &cur.received, secs),
            sent: rates(&prev.sent, &cur.sent, secs),
            drops: rates(&prev.drops, &cur.drops, secs),
        }
    }
}

/// A plain-text table: a header row, then rows, columns two spaces apart, no borders. A
/// column of numbers (where "-" stands for none) is right-aligned; any other column
/// left-aligned. Widths are display widths, so wide characters in a host name keep the
/// columns straight.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let numeric = |i: usize| {
        let cells = || rows.iter().filter_map(|r| r.get(i));
        cells().any(|c| is_number(c)) && cells().all(|c| c == "-" || is_number(c))
    };
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_header(headers)
        .add_rows(rows);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((if i == 0 { 0 } else { 2 }, 0));
        if numeric(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.trim_fmt() + "\n"
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

pub(super) fn status(s: &Status, now: u64) -> String {
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
                dhcp_server::journal::Durability::Sync => "sync",
                dhcp_server::journal::Durability::Async => "async",
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
        Some(f) => format!("{} (loaded {})", f.display(), ago(s.config.loaded, now)),
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
    for (i, h) in s.history.iter().enumerate() {
        let state = match (&h.last_error, h.connected) {
            (_, true) => "connected".to_owned(),
            (Some(e), false) => format!("FAILING: {e}"),
            (None, false) => "connecting".to_owned(),
        };
        let behind = if h.lag_records == 0 {
            "up to date".to_owned()
        } else {
            format!(
                "{} records, {} behind",
                h.lag_records,
                duration(h.lag_seconds)
            )
        };
        let lost = if h.lost > 0 {
            format!(", {} LOST", h.lost)
        } else {
            String::new()
        };
        let key = if i == 0 { "history" } else { "" };
        let _ = writeln!(
            out,
            "{key:<11} {}: {state}; {} delivered, {behind}{lost}",
            h.sink, h.delivered
        );
    }
    out
}

/// "5m 2s ago", from a Unix time.
fn ago(when: u64, now: u64) -> String {
    if when == 0 || when > now {
        return "just now".to_owned();
    }
    format!("{} ago", duration(now - when))
}

pub(super) fn reservations(page: &ReservationPage) -> String {
    let rows: Vec<Vec<String>> = page
        .reservations
        .iter()
        .map(|r| {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            vec![
                r.address.to_string(),
                opt(r.mac.map(|m| m.to_string())),
                opt(r.client_id.as_ref().map(ToString::to_string)),
                opt(r.subscriber.as_ref().map(|(k, v)| format!("{k} {v}"))),
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
            "SUBSCRIBER",
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

pub(super) fn members(page: &MemberPage) -> String {
    let rows: Vec<Vec<String>> = page
        .members
        .iter()
        .map(|m| {
            vec![
                m.class.clone(),
                m.value.clone(),
                m.hex.clone(),
                m.source.name().to_owned(),
            ]
        })
        .collect();
    let mut out = table(&["CLASS", "VALUE", "HEX", "SOURCE"], &rows);
    if let Some(next) = &page.next_cursor {
        let _ = writeln!(out, "more: --cursor {} (or --all)", next.cursor());
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

pub(super) fn stats(stats: &Stats) -> String {
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
    let rows = |counters: &std::collections::BTreeMap<String, u64>| -> Vec<Vec<String>> {
        counters
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect()
    };
    let mut tables = vec![
        table(&["MESSAGE", "RECEIVED", "SENT"], &messages),
        table(&["DROPPED", "COUNT"], &drops),
    ];
    // The backend's own counters: the XDP program's, or the UDP backend's.
    if !stats.udp.is_empty() {
        tables.push(table(&["UDP REPLIES", "COUNT"], &rows(&stats.udp)));
    }
    if !stats.xdp.is_empty() {
        tables.push(table(&["XDP PROGRAM", "FRAMES"], &rows(&stats.xdp)));
    }
    tables.extend([
        table(&["SHARD", "RECEIVED", "SENT", "DROPPED"], &shards),
        pools_table(stats),
        latency_table(stats),
    ]);
    tables.join("\n")
}

pub(super) fn top(status: &Status, stats: &Stats, rates: Option<&Rates>) -> String {
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

pub(super) fn leases(page: &LeasePage, now: u64) -> String {
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
                opt(l.relay.as_ref().and_then(relay_id)),
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
            "RELAY (CIRCUIT/REMOTE)",
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

/// The subscriber as the relay named it: "circuit/remote", either part "-" when absent.
fn relay_id(r: &RelayInfo) -> Option<String> {
    if r.circuit_id.is_none() && r.remote_id.is_none() {
        return None;
    }
    let part = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    Some(format!("{}/{}", part(&r.circuit_id), part(&r.remote_id)))
}

pub(super) fn reload(r: &ReloadReport) -> String {
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
    use dhcp_server::control::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

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
        // Display width, not characters: a wide host name keeps the next column straight.
        let t = table(
            &["HOST", "N"],
            &[
                vec!["プリンタ".into(), "1".into()],
                vec!["pc".into(), "2".into()],
            ],
        );
        assert_eq!(t, "HOST      N\nプリンタ  1\npc        2\n");
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
                relay: Some(RelayInfo::from_option(b"\x01\x05eth-3\x02\x03cpe")),
            }],
            next_cursor: Some(Ipv4Addr::new(192, 0, 2, 10)),
        };
        let t = leases(&page, 1_000);
        assert!(t.contains("192.0.2.10"), "{t}");
        assert!(t.contains("02:00:00:00:00:01"), "{t}");
        assert!(t.contains("1m 30s"), "{t}");
        assert!(t.contains("eth-3/cpe"), "{t}");
        assert!(t.ends_with("more: --cursor 192.0.2.10 (or --all)\n"), "{t}");
    }

    #[test]
    fn members_table_shows_text_hex_source_and_cursor() {
        let port = ClassMember {
            class: "line".into(),
            value: b"port-7".to_vec(),
        };
        let binary = ClassMember {
            class: "line".into(),
            value: vec![0, 1],
        };
        let page = MemberPage {
            members: vec![
                MemberInfo::new(&binary, Source::File),
                MemberInfo::new(&port, Source::Control),
            ],
            next_cursor: Some(port.clone()),
        };
        let t = members(&page);
        assert_eq!(
            t,
            "CLASS  VALUE   HEX                SOURCE\n\
             line   00:01   00:01              file\n\
             line   port-7  70:6f:72:74:2d:37  control\n\
             more: --cursor line/70:6f:72:74:2d:37 (or --all)\n"
        );
    }

    fn sample_status(failover: Option<FailoverStatus>) -> Status {
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
            history: Vec::new(),
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
        let t = status(&sample_status(None), 4_600);
        assert!(!t.contains("failover"), "{t}");
        let t = status(&sample_status(Some(paired())), 4_600);
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
        let top = top(&sample_status(Some(paired())), &Stats::default(), None);
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
        let text = stats(&s);
        let discover = text.lines().find(|l| l.starts_with("discover")).unwrap();
        assert_eq!(
            discover.split_whitespace().collect::<Vec<_>>(),
            ["discover", "3", "0"]
        );
    }

    #[test]
    fn stats_show_the_xdp_program_only_with_it() {
        let mut s = Stats::default();
        assert!(!stats(&s).contains("XDP PROGRAM"));
        s.xdp.insert("flood-client".into(), 5951);
        let text = stats(&s);
        assert!(text.contains("XDP PROGRAM"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("flood-client"))
            .unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["flood-client", "5951"]
        );
        // A reply from a server without the field still reads.
        let old: Stats = serde_json::from_value(serde_json::json!({"received": {}, "sent": {},
            "drops": {}, "shards": [], "pools": [], "latency": {"samples": 0, "p50_us": 0,
            "p90_us": 0, "p99_us": 0, "p999_us": 0, "max_us": 0}}))
        .unwrap();
        assert!(old.xdp.is_empty());
    }
}
