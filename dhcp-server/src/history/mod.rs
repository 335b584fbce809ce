//! Lease history and lease events beyond this machine. The journal is the source: a
//! follower thread per sink tails the journal's durable records (never on the ACK path),
//! turns them into `Event`s and hands them in batches to its `Sink`: PostgreSQL (one row
//! per lease span), NATS JetStream (a stream per site), or a text file (one line per
//! event, rotated daily). Delivery is at least once; each sink keeps its `Position` where
//! it keeps the events, so a restart resumes where it stopped (docs/history.md).

pub mod event;
pub mod follow;
pub mod nats;
pub mod postgres;
pub mod sink;
pub mod text;

pub use event::{Batch, Event, EventKind, Origin, Position, Relay, Role};
pub use follow::{History, Pending, Status};
pub use nats::{NatsOptions, NatsSink};
pub use postgres::{PostgresOptions, PostgresSink};
pub use sink::{Sink, SinkError};
pub use text::{TextOptions, TextSink};

use crate::config::Config;
use crate::journal::Tail;

/// The origin events of this server carry, from `[history]` and the failover role.
pub fn origin(config: &Config, h: &crate::config::History) -> Origin {
    use dhcp_proto::failover::Role as Pair;
    Origin {
        server: h.server.clone(),
        site: h.site.clone(),
        role: match config.policy.failover.as_ref().map(|f| f.role) {
            None => Role::Standalone,
            Some(Pair::Primary) => Role::Primary,
            Some(Pair::Secondary) => Role::Secondary,
        },
    }
}

/// Starts a follower for each sink `[history]` names; none without it.
pub fn start(config: &Config, tail: Tail) -> std::io::Result<Option<History>> {
    let Some(h) = &config.history else {
        return Ok(None);
    };
    let origin = origin(config, h);
    // `[history] batch`, when set, rules every sink; else each takes what suits it.
    let batch = |own: usize| h.batch.unwrap_or(own);
    let mut sinks = Vec::new();
    if let Some(p) = &h.postgres {
        let (opts, origin) = (p.clone(), origin.clone());
        sinks.push(Pending::new("postgres", batch(p.batch), move || {
            Ok(Box::new(PostgresSink::new(opts, origin)?) as Box<dyn Sink>)
        }));
    }
    if let Some(n) = &h.nats {
        let (opts, origin) = (n.clone(), origin.clone());
        sinks.push(Pending::new(
            "nats",
            batch(follow::Options::default().batch),
            move || Ok(Box::new(NatsSink::new(opts, origin)?) as Box<dyn Sink>),
        ));
    }
    if let Some(t) = &h.text {
        let sink = TextSink::new(t.clone(), origin.clone());
        sinks.push(Pending::ready(
            Box::new(sink),
            batch(follow::Options::default().batch),
        ));
    }
    History::start(tail, sinks, follow::Options::default()).map(Some)
}
