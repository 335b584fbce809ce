//! The lease history as `[history]` asks for it: this server's origin in events, and a
//! follower per configured sink, each sink made on its follower's thread.

use crate::config::{Config, History as Settings};
use crate::history::{
    follow, History, NatsSink, Origin, Pending, PostgresSink, Role, Sink, TextSink,
};
use crate::journal::Tail;

/// The origin events of this server carry, from `[history]` and the failover role.
fn origin(config: &Config, h: &Settings) -> Origin {
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
