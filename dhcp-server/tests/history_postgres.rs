//! The PostgreSQL history sink against a real PostgreSQL 15 each test starts for itself:
//! the spans that sequences of events leave, the position stored with them, a delivery
//! killed mid-transaction, two servers writing at once, the operators' queries and
//! retention.

#[allow(dead_code)] // each test crate uses part of the shared harness
mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::postgres::Postgres;
use dhcp_proto::lease::{BindingState, HwAddr, NEVER};
use dhcp_server::history::postgres::{self as pg, History};
use dhcp_server::history::{
    Batch, Event, EventKind, Origin, Position, PostgresOptions, PostgresSink, Relay, Role, Sink,
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn origin(server: &str) -> Origin {
    Origin {
        server: server.into(),
        site: "lab".into(),
        role: Role::Primary,
    }
}

fn sink(pg: &Postgres, server: &str) -> PostgresSink {
    sink_with(pg, server, 365)
}

fn sink_with(pg: &Postgres, server: &str, retention_days: u32) -> PostgresSink {
    let opts = PostgresOptions {
        url: pg.url(),
        retention_days,
        timeout: Duration::from_secs(60),
        ..PostgresOptions::default()
    };
    PostgresSink::new(opts, origin(server)).unwrap()
}

fn mac(n: u32) -> HwAddr {
    let b = n.to_be_bytes();
    HwAddr::new(1, &[2, 0, b[0], b[1], b[2], b[3]])
}

fn ev(kind: EventKind, addr: Ipv4Addr, client: u32, at: u64, ends: u64) -> Event {
    let state = match kind {
        EventKind::Granted | EventKind::Renewed => BindingState::Active,
        EventKind::Expired => BindingState::Expired,
        EventKind::Declined => BindingState::Abandoned,
        _ => BindingState::Free,
    };
    Event {
        kind,
        state,
        at,
        addr,
        hw: mac(client),
        client_id: Vec::new(),
        host_name: Vec::new(),
        relay: Relay::default(),
        starts: at,
        ends,
        stamp: at,
        shard: 0,
        seq: 0,
    }
}

/// The failover partner's report of the same change.
fn partner(e: &Event, state: BindingState) -> Event {
    Event {
        kind: EventKind::Partner,
        state,
        ..e.clone()
    }
}

fn batch(events: Vec<Event>, next: u64) -> Batch {
    Batch {
        events,
        after: Position {
            journal: 1,
            generation: 1,
            next: vec![next, 0],
        },
    }
}

/// The spans of `addr`, oldest first: client number, start, end (None: infinity), server.
fn spans(pg: &Postgres, addr: Ipv4Addr) -> Vec<(u32, u64, Option<u64>, String)> {
    let out = pg.psql(&format!(
        "SELECT ('x' || encode(substr(hw, 3), 'hex'))::bit(32)::bigint,
                extract(epoch FROM lower(validity))::bigint,
                CASE WHEN upper(validity) = 'infinity' THEN ''
                     ELSE extract(epoch FROM upper(validity))::bigint::text END,
                server
         FROM lease_span WHERE address = '{addr}' ORDER BY since"
    ));
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().ok(),
                f[3].to_string(),
            )
        })
        .collect()
}

fn a(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, n)
}

#[test]
fn spans_follow_grants_renewals_releases_expiries_and_regrants() {
    let Some(pg) = Postgres::start("spans_follow", &[]) else {
        return;
    };
    let t = now() - 3600;
    let mut s = sink(&pg, "dhcp-a");
    assert_eq!(s.open().unwrap(), None);
    use EventKind::*;
    s.deliver(&batch(
        vec![
            ev(Granted, a(1), 1, t, t + 600),
            ev(Granted, a(2), 2, t, t + 600),
            ev(Granted, a(3), 3, t, t + 600),
            ev(Granted, a(4), 4, t, t + 600),
            ev(Granted, a(5), 5, t, NEVER),
            ev(Renewed, a(1), 1, t + 300, t + 900),
            // Reservations are not leases: they leave the span alone.
            ev(ReservationAdded, a(1), 9, t + 301, 0),
        ],
        7,
    ))
    .unwrap();
    s.deliver(&batch(
        vec![
            // A renewal older than the end it has extends nothing.
            ev(Renewed, a(1), 1, t + 310, t + 800),
            ev(Released, a(1), 1, t + 400, 0),
            ev(Expired, a(2), 2, t + 600, 0),
            // The address goes to another client: the first span ends, a second opens.
            ev(Granted, a(3), 33, t + 100, t + 700),
            ev(Declined, a(4), 4, t + 50, 0),
            // Junk times are clamped, never a panic.
            ev(Renewed, a(5), 5, u64::MAX, u64::MAX - 1),
        ],
        9,
    ))
    .unwrap();
    let d = |o: &str| o.to_string();
    assert_eq!(spans(&pg, a(1)), [(1, t, Some(t + 400), d("dhcp-a"))]);
    assert_eq!(spans(&pg, a(2)), [(2, t, Some(t + 600), d("dhcp-a"))]);
    assert_eq!(
        spans(&pg, a(3)),
        [
            (3, t, Some(t + 100), d("dhcp-a")),
            (33, t + 100, Some(t + 700), d("dhcp-a"))
        ]
    );
    assert_eq!(spans(&pg, a(4)), [(4, t, Some(t + 50), d("dhcp-a"))]);
    assert_eq!(spans(&pg, a(5)), [(5, t, None, d("dhcp-a"))]);

    // The partner's reports: an active one extends the open span (and names its writer),
    // one that is not active ends it; a deletion ends the infinite one.
    let mut b = sink(&pg, "dhcp-b");
    assert_eq!(b.open().unwrap(), None);
    let renew = ev(Renewed, a(3), 33, t + 200, t + 1000);
    b.deliver(&batch(
        vec![
            partner(&renew, BindingState::Active),
            partner(&ev(Expired, a(3), 33, t + 900, 0), BindingState::Expired),
            ev(Deleted, a(5), 5, t + 60, 0),
        ],
        3,
    ))
    .unwrap();
    assert_eq!(
        spans(&pg, a(3))[1],
        (33, t + 100, Some(t + 900), d("dhcp-b"))
    );
    assert_eq!(spans(&pg, a(5)), [(5, t, Some(t + 60), d("dhcp-b"))]);
    assert_eq!(
        pg.psql("SELECT count(*) FILTER (WHERE open), count(*) FROM lease_open"),
        "0|5"
    );
}

#[test]
fn the_position_is_stored_with_the_rows_per_server() {
    let Some(pg) = Postgres::start("position", &[]) else {
        return;
    };
    let t = now() - 60;
    let mut s = sink(&pg, "dhcp-a");
    assert_eq!(s.open().unwrap(), None);
    let b1 = batch(vec![ev(EventKind::Granted, a(1), 1, t, t + 600)], 1);
    s.deliver(&b1).unwrap();
    let b2 = batch(vec![ev(EventKind::Renewed, a(1), 1, t + 1, t + 601)], 2);
    s.deliver(&b2).unwrap();
    assert_eq!(s.open().unwrap(), Some(b2.after.clone()));
    assert_eq!(sink(&pg, "dhcp-b").open().unwrap(), None);
    // A position the server cannot read is an error for the operator, not a panic.
    pg.psql("UPDATE history_position SET position = 'junk'");
    let e = s.open().unwrap_err();
    assert!(e.to_string().contains("position"), "{e}");
}

#[test]
fn a_delivery_killed_mid_transaction_leaves_neither_rows_nor_position() {
    let Some(pg) = Postgres::start("killed", &[]) else {
        return;
    };
    let t = now() - 60;
    let mut s = sink(&pg, "dhcp-a");
    s.open().unwrap();
    let b1 = batch(vec![ev(EventKind::Granted, a(1), 1, t, t + 600)], 1);
    s.deliver(&b1).unwrap();

    // Another session holds the position row, so the delivery stops at its last
    // statement, every span already written: then its backend is killed with SIGKILL.
    let mut holder = pg.session();
    holder.send("BEGIN;");
    holder.send("SELECT * FROM history_position FOR UPDATE;");
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'")
        != "1"
    {
        assert!(Instant::now() < deadline, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b2 = batch(
        (2..40)
            .map(|n| ev(EventKind::Granted, a(n), u32::from(n), t + 5, t + 600))
            .chain([ev(EventKind::Released, a(1), 1, t + 5, 0)])
            .collect(),
        2,
    );
    let delivering = {
        let b2 = b2.clone();
        std::thread::spawn(move || {
            let r = s.deliver(&b2);
            (s, r)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let pid = pg.psql(
            "SELECT pid FROM pg_stat_activity
             WHERE application_name = 'dhcp-server history dhcp-a' AND wait_event_type = 'Lock'",
        );
        if !pid.is_empty() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery never waited: {}",
            pg.psql("SELECT application_name, state, wait_event_type, query FROM pg_stat_activity")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let (mut s, r) = delivering.join().unwrap();
    assert!(r.is_err(), "a killed delivery reported success");
    drop(holder);

    // The postmaster restarts the cluster after a backend dies by SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(30);
    let opened = loop {
        match s.open() {
            Ok(p) => break p,
            Err(e) => assert!(Instant::now() < deadline, "no reopen: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(opened, Some(b1.after.clone()));
    assert_eq!(pg.psql("SELECT count(*) FROM lease_span"), "1");
    assert_eq!(spans(&pg, a(1))[0].2, Some(t + 600));

    // Redelivered, the batch lands once.
    s.deliver(&b2).unwrap();
    assert_eq!(s.open().unwrap(), Some(b2.after));
    assert_eq!(pg.psql("SELECT count(*) FROM lease_span"), "39");
    assert_eq!(spans(&pg, a(1))[0].2, Some(t + 5));
}

/// Server A's events for `n` addresses, client `c` on each: grant, two renewals, release,
/// then a grant to client `c + 1_000_000`, as they happen `t` on.
fn lifetime(n: u32, t: u64) -> Vec<Event> {
    let addr = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
    let mut out = Vec::new();
    for step in 0..5u64 {
        for i in 0..n {
            let at = t + step * 100 + u64::from(i % 7);
            out.push(match step {
                0 => ev(EventKind::Granted, addr(i), i, at, at + 300),
                1 | 2 => ev(EventKind::Renewed, addr(i), i, at, at + 300),
                3 => ev(EventKind::Released, addr(i), i, at, 0),
                _ => ev(EventKind::Granted, addr(i), i + 1_000_000, at, at + 300),
            });
        }
    }
    out
}

#[test]
fn two_servers_writing_at_once_make_one_span_per_lease() {
    let Some(pg) = Postgres::start("two_servers", &[]) else {
        return;
    };
    const N: u32 = 3000;
    let t = now() - 3600;
    let own = lifetime(N, t);
    // The partner reports the same changes, its batches cut elsewhere.
    let theirs: Vec<Event> = own
        .iter()
        .map(|e| {
            let state = if e.kind.binds(e.state) {
                BindingState::Active
            } else {
                BindingState::Released
            };
            partner(e, state)
        })
        .collect();
    let run = |server: &'static str, events: Vec<Event>, per: usize| {
        let url = pg.url();
        std::thread::spawn(move || {
            let opts = PostgresOptions {
                url,
                timeout: Duration::from_secs(60),
                ..PostgresOptions::default()
            };
            let mut s = PostgresSink::new(opts, origin(server)).unwrap();
            s.open().unwrap();
            for (k, chunk) in events.chunks(per).enumerate() {
                let b = batch(chunk.to_vec(), k as u64 + 1);
                // A deadlock would surface here as an error.
                s.deliver(&b).unwrap();
            }
        })
    };
    let x = run("dhcp-a", own, 700);
    let y = run("dhcp-b", theirs, 1100);
    x.join().unwrap();
    y.join().unwrap();
    let counts = pg.psql(
        "SELECT count(*), count(DISTINCT address),
                count(*) FILTER (WHERE upper(validity) > lower(validity))
         FROM lease_span",
    );
    assert_eq!(counts, format!("{}|{N}|{}", 2 * N, 2 * N));
    assert_eq!(
        pg.psql("SELECT count(*) FROM lease_open WHERE open"),
        N.to_string()
    );
    // Every address: the first client until its release, the second from its grant.
    for i in [0, 1, N / 2, N - 1] {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
        let at = |step: u64| t + step * 100 + u64::from(i % 7);
        let got: Vec<_> = spans(&pg, addr)
            .into_iter()
            .map(|s| (s.0, s.1, s.2))
            .collect();
        assert_eq!(
            got,
            [
                (i, at(0), Some(at(3))),
                (i + 1_000_000, at(4), Some(at(4) + 300))
            ],
            "{addr}"
        );
    }
}

#[test]
fn queries_find_the_holder_and_the_addresses_of_a_client_or_a_port() {
    let Some(pg) = Postgres::start("queries", &[]) else {
        return;
    };
    let t = now() - 7200;
    let mut s = sink(&pg, "dhcp-a");
    s.open().unwrap();
    let relayed = |mut e: Event, circuit: &[u8]| {
        e.relay = Relay {
            circuit_id: circuit.to_vec(),
            remote_id: b"r1".to_vec(),
            subscriber_id: Vec::new(),
            giaddr: Some(Ipv4Addr::new(198, 51, 100, 1)),
        };
        e.host_name = b"laptop".to_vec();
        e
    };
    use EventKind::*;
    s.deliver(&batch(
        vec![
            relayed(ev(Granted, a(10), 7, t, t + 1000), b"port-1"),
            ev(Released, a(10), 7, t + 500, 0),
            relayed(ev(Granted, a(11), 7, t + 600, t + 1600), b"port-2"),
            relayed(ev(Granted, a(10), 8, t + 700, t + 1700), b"port-1"),
            // A unicast renewal carries no relay information: the span keeps it.
            ev(Renewed, a(11), 7, t + 900, t + 1900),
        ],
        1,
    ))
    .unwrap();
    let mut h = History::connect(&pg.url()).unwrap();
    let who = |h: &mut History, at| h.at(a(10), at).unwrap().map(|s| s.hw);
    assert_eq!(who(&mut h, t + 499), Some(mac(7).bytes().to_vec()));
    assert_eq!(who(&mut h, t + 500), None);
    assert_eq!(who(&mut h, t + 700), Some(mac(8).bytes().to_vec()));
    assert_eq!(who(&mut h, t - 1), None);

    let of7 = h.of_hw(mac(7).bytes(), t, t + 2000).unwrap();
    let got: Vec<_> = of7.iter().map(|s| (s.address, s.from, s.until)).collect();
    assert_eq!(
        got,
        [
            (a(10), t as i64, Some(t as i64 + 500)),
            (a(11), t as i64 + 600, Some(t as i64 + 1900))
        ]
    );
    assert_eq!(of7[1].circuit_id.as_deref(), Some(&b"port-2"[..]));
    assert_eq!(of7[1].host_name.as_deref(), Some("laptop"));
    assert_eq!(of7[1].giaddr, Some(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(h.of_hw(mac(7).bytes(), t + 2000, t + 3000).unwrap(), []);
    let later = h.of_hw(mac(7).bytes(), t + 550, t + 650).unwrap();
    assert_eq!(later.len(), 1);
    // A span that began before the period and runs through it.
    let through = h.of_hw(mac(7).bytes(), t + 1000, t + 1100).unwrap();
    let got: Vec<_> = through.iter().map(|s| (s.address, s.from)).collect();
    assert_eq!(got, [(a(11), t as i64 + 600)]);

    let port1 = h.of_circuit(b"port-1", t, t + 2000).unwrap();
    let got: Vec<_> = port1.iter().map(|s| (s.address, s.hw.clone())).collect();
    assert_eq!(
        got,
        [
            (a(10), mac(7).bytes().to_vec()),
            (a(10), mac(8).bytes().to_vec())
        ]
    );
    let text = pg::format_spans(&port1);
    assert!(
        text.contains("192.0.2.10") && text.contains("laptop"),
        "{text}"
    );
    assert_eq!(port1[0].to_json()["circuit-id"], "70:6f:72:74:2d:31");
}

#[test]
fn retention_drops_old_partitions_and_keeps_current_holders() {
    let Some(pg) = Postgres::start("retention", &[]) else {
        return;
    };
    let day = 86_400;
    let (old, recent) = (now() - 400 * day, now() - day);
    let mut s = sink_with(&pg, "dhcp-a", 30);
    s.open().unwrap();
    use EventKind::*;
    s.deliver(&batch(
        vec![
            ev(Granted, a(1), 1, old, old + 3600),
            ev(Expired, a(1), 1, old + 3600, 0),
            // Held ever since: must outlive the partition it started in.
            ev(Granted, a(2), 2, old, NEVER),
            ev(Granted, a(3), 3, recent, recent + 3600),
        ],
        1,
    ))
    .unwrap();
    let partitions = || {
        pg.psql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'lease_span'::regclass")
            .parse::<u32>()
            .unwrap()
    };
    assert!(partitions() >= 3);
    s.open().unwrap();
    let oldest = pg.psql(
        "SELECT min(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'lease_span'::regclass",
    );
    let cutoff = pg.psql(&format!(
        "SELECT 'lease_span_p' || to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYYMM')",
        now() - 30 * day
    ));
    assert_eq!(oldest, cutoff, "partitions older than 30 days remain");
    assert_eq!(spans(&pg, a(1)), []);
    let held = spans(&pg, a(2));
    assert_eq!(held.len(), 1);
    assert!(held[0].1 > now() - 62 * day && held[0].1 <= now() - 30 * day);
    assert_eq!(held[0].2, None);
    assert_eq!(spans(&pg, a(3)).len(), 1);
    // The carried span is still the open one: a renewal extends it, opens nothing.
    s.deliver(&batch(vec![ev(Renewed, a(2), 2, now(), NEVER)], 2))
        .unwrap();
    assert_eq!(spans(&pg, a(2)), held);
}

#[test]
fn init_creates_the_schema_once() {
    let Some(pg) = Postgres::start("init", &[]) else {
        return;
    };
    assert_eq!(pg::init(&pg.url()).unwrap(), 1);
    assert_eq!(pg::init(&pg.url()).unwrap(), 1);
    assert_eq!(pg.psql("SELECT count(*) FROM history_schema"), "1");
    sink(&pg, "dhcp-a").open().unwrap();
    let e = pg::init("host=/nonexistent-dir user=x").unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
}
