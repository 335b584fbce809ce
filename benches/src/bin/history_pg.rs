//! `history_pg`: how many lease events a second the PostgreSQL history sink stores. It
//! makes `--events` synthetic events over `--addresses` addresses (mostly renewals, then
//! grants, releases, expiries and addresses moving to another client, in time order as a
//! journal has them), hands them to `PostgresSink` in batches of `--batch` as the follower
//! would, and prints events per second as JSON.
//!
//! With `--url` it writes to that database (its history tables must be empty or absent).
//! Without it, it starts a PostgreSQL 15 of its own in a temporary directory (as root: the
//! server runs as the `postgres` user), with fsync on, as a production one has it.

#[allow(dead_code)] // the benchmark uses part of the tests' harness
#[path = "../../../dhcp-server/tests/common/postgres.rs"]
mod postgres;

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use dhcp_proto::lease::{BindingState, HwAddr};
use dhcp_server::history::{
    Batch, Event, EventKind, Origin, Position, PostgresOptions, PostgresSink, Relay, Role, Sink,
};

#[derive(Parser)]
#[command(about = "PostgreSQL history sink throughput: events per second as JSON")]
struct Args {
    /// A database to write to; without it one is started in a temporary directory.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    events: u32,
    #[arg(long, default_value_t = 200_000)]
    addresses: u32,
    /// Events per batch (one transaction); the sink's default is the follower's.
    #[arg(long, default_value_t = PostgresOptions::default().batch)]
    batch: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let server;
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let settings = [
                "fsync = on",
                "full_page_writes = on",
                "shared_buffers = 512MB",
                "max_wal_size = 4GB",
                "wal_compression = lz4",
                "checkpoint_timeout = 15min",
            ];
            server = postgres::Postgres::start("history_pg", &settings);
            match &server {
                Some(pg) => pg.url(),
                None => {
                    eprintln!("history_pg: give --url, or run as root to start a PostgreSQL");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let events = generate(args.events, args.addresses.max(1));
    let opts = PostgresOptions {
        url,
        batch: args.batch,
        timeout: Duration::from_secs(300),
        ..PostgresOptions::default()
    };
    let origin = Origin {
        server: "bench".into(),
        site: "bench".into(),
        role: Role::Standalone,
    };
    let run = || -> Result<Duration, String> {
        let mut sink = PostgresSink::new(opts.clone(), origin).map_err(|e| e.to_string())?;
        sink.open().map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut done = 0u64;
        for chunk in events.chunks(args.batch.max(1)) {
            done += chunk.len() as u64;
            let batch = Batch {
                events: chunk.to_vec(),
                after: Position {
                    journal: 1,
                    generation: 1,
                    next: vec![done],
                },
            };
            sink.deliver(&batch).map_err(|e| e.to_string())?;
        }
        Ok(start.elapsed())
    };
    match run() {
        Ok(took) => {
            let kinds = |k: EventKind| events.iter().filter(|e| e.kind == k).count();
            println!(
                "{}",
                serde_json::json!({
                    "events": events.len(),
                    "addresses": args.addresses,
                    "batch": args.batch,
                    "seconds": took.as_secs_f64(),
                    "events_per_second": (events.len() as f64 / took.as_secs_f64()).round(),
                    "granted": kinds(EventKind::Granted),
                    "renewed": kinds(EventKind::Renewed),
                    "released": kinds(EventKind::Released),
                    "expired": kinds(EventKind::Expired),
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("history_pg: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `n` events over `addresses` addresses of 198.18.0.0/15 and up, a second's worth of
/// events every 100 µs of simulated time (so about a day for a million), in time order.
/// A held address is mostly renewed (85%), else released (7%), expired (5%) or granted to
/// another client (3%); a free one is granted, to its previous client seven times in ten.
fn generate(n: u32, addresses: u32) -> Vec<Event> {
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(86_400 * 2);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Per address: its client, and whether it is held.
    let mut state: Vec<(u32, bool)> = (0..addresses).map(|i| (i, false)).collect();
    let mut clients = addresses;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    (0..n)
        .map(|k| {
            let at = t0 + u64::from(k) / 10_000;
            let i = (next() % u64::from(addresses)) as usize;
            let roll = next() % 100;
            let (client, held) = &mut state[i];
            let kind = match (*held, roll) {
                (true, 0..85) => EventKind::Renewed,
                (true, 85..92) => EventKind::Released,
                (true, 92..97) => EventKind::Expired,
                (true, _) => {
                    clients += 1;
                    *client = clients;
                    EventKind::Granted
                }
                (false, r) => {
                    if r >= 70 {
                        clients += 1;
                        *client = clients;
                    }
                    EventKind::Granted
                }
            };
            *held = kind.binds(BindingState::Active);
            let c = client.to_be_bytes();
            Event {
                kind,
                state: if *held {
                    BindingState::Active
                } else {
                    BindingState::Free
                },
                at,
                addr: Ipv4Addr::from(base + i as u32),
                hw: HwAddr::new(1, &[2, 0, c[0], c[1], c[2], c[3]]),
                client_id: Vec::new(),
                host_name: format!("host-{client}").into_bytes(),
                relay: Relay {
                    circuit_id: format!("ge-0/0/{}", i % 4096).into_bytes(),
                    remote_id: Vec::new(),
                    subscriber_id: Vec::new(),
                    giaddr: Some(Ipv4Addr::new(192, 0, 2, 1)),
                },
                starts: at,
                ends: at + 3600,
                stamp: u64::from(k),
                shard: 0,
                seq: u64::from(k),
            }
        })
        .collect()
}
