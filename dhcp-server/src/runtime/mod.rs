//! The runtime owns assembly: it opens the journal and replays it into the shards, starts
//! the failover link, wires each shard's bus (control questions, failover orders, address
//! lending), starts the control socket, hands the shards to a backend, drops to the
//! configured user (`privileges`), reports ready, and stops everything in order. A
//! backend only moves bytes between the network and the shards it is given (`Backend`),
//! so a feature is written once, here or in `dhcp_proto`, never per backend.
//!
//! Stopping: the stop token is asked (signal, control socket); the failover link holds
//! the loops while it tells the partner; then the backend's loops end, the link is
//! joined, the backend reports, and the journal's last commit runs.

pub mod bulk;
pub mod clock;
pub mod env;
mod history;
pub mod operate;
pub mod shard;
pub mod stop;
pub mod store;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::control::{self, BackendKind, XdpStatus};
use crate::failover::shards::OnView;
use crate::journal;
use crate::privileges::Target;
use env::Env;
use operate::{Facts, Operated};
use shard::{Bus, Shard};
use store::Committer;

/// A backend's own failure, as it words it.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a backend's own counters (the XDP program's), by name, for `stats` and the
/// metrics; called from the control thread at each request.
pub type BackendCounters = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Reads the bulk leasequery listener's counters, for `stats` and the metrics.
pub type BulkCounters = Arc<dyn Fn() -> crate::control::BulkStats + Send + Sync>;

/// What moves bytes between the network and the shards: sockets, rings, an in-memory
/// link. It owns no DHCP logic.
pub trait Backend {
    /// What `status` says of it: its kind and, for XDP, how it attached.
    fn describe(&self) -> (BackendKind, Option<XdpStatus>);
    /// The lease shards it serves, one per thread.
    fn shards(&self) -> u16;
    /// Counters it keeps beyond the shards' (frames it handled before any shard saw
    /// them); asked once, before `start`.
    fn counters(&self) -> Option<BackendCounters> {
        None
    }
    /// Told of every change of the failover pair's rules besides the shards (the XDP
    /// program drops the partner's clients early); asked once, before `start`.
    fn on_view(&mut self) -> Result<Option<OnView>, BackendError> {
        Ok(None)
    }
    /// Starts serving `shards` (shard `i` is `shards[i]`) on its own threads, each
    /// running the loop of `shard`'s contract until `env.stop.requested()`.
    fn start(
        self: Box<Self>,
        shards: Vec<Shard>,
        env: &Env,
    ) -> Result<Box<dyn Serving>, BackendError>;
}

/// A backend serving.
pub trait Serving {
    /// How the ready line describes it ("on eth1 with the udp backend"), one per line.
    fn ready(&self) -> Vec<String>;
    /// Waits for its loops to end once the stop is requested, and reports on them; an
    /// error when a loop failed (it requested the stop itself).
    fn join(self: Box<Self>) -> Result<(), BackendError>;
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error("control socket: {0}")]
    Control(#[from] control::ServeError),
    #[error("failover link: {0}")]
    Failover(io::Error),
    #[error("bulk leasequery listener: {0}")]
    Bulk(io::Error),
    #[error("{0}")]
    Backend(BackendError),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::Error),
}

/// Serves `config` through `backend` until `env.stop` is requested.
///
/// With `user` set, the process must have called `privileges::Target::prepare` before
/// its first thread (the command line's `run` does): the switch checks every thread.
pub fn run(config: Config, mut backend: Box<dyn Backend>, env: Env) -> Result<(), Error> {
    let run_as = match &config.user {
        Some(user) => Some(Target::resolve(user, config.group.as_deref())?),
        None => None,
    };
    if let Some(target) = &run_as {
        // The journal's threads create files until the switch: each is the user's at once.
        journal::owner::set(target.uid, target.gid);
    }
    let count = backend.shards();
    let opened = store::open(&config, count, env.clock.now())?;
    // Outlives the shards and their writers: dropping it runs a last commit.
    let journal = opened.journal;
    let on_view = backend.on_view().map_err(Error::Backend)?;
    let started = crate::failover::link::start(
        config.policy.failover.as_ref(),
        opened.failover,
        usize::from(count),
        on_view,
        &env,
    )
    .map_err(Error::Failover)?;
    // Each shard's end of the failover link: the orders it carries out and the outbox
    // its changes leave by; none without a partner.
    let (pair, (orders, outboxes)): (_, (Vec<_>, Vec<_>)) = match started {
        Some((ends, running)) => (
            Some(running),
            ends.into_iter().map(|(o, b)| (Some(o), Some(b))).unzip(),
        ),
        None => (None, (0..count).map(|_| (None, None)).unzip()),
    };
    let mut questions = Vec::new();
    let mut health = Vec::new();
    let mut durable = Vec::new();
    let parts = opened.engines.into_iter().zip(opened.writers);
    let shards: Vec<Shard> = parts
        .zip(Bus::wire(orders))
        .zip(outboxes)
        .map(|(((engine, writer), bus), outbox)| {
            let mut committer = Committer::new(writer, config.durability);
            if let Some(outbox) = outbox {
                committer.send_to_partner(outbox);
            }
            questions.push(bus.questions());
            health.push(committer.health());
            durable.push(committer.watch());
            Shard::new(engine, committer, bus)
        })
        .collect();
    // Bulk leasequery asks the shards as the control socket does, on its own queues' ends.
    let bulk = bulk::start(&config, questions.clone(), env.clock.clone()).map_err(Error::Bulk)?;
    let (kind, xdp) = backend.describe();
    let facts = Facts {
        backend: kind,
        xdp,
        counters: backend.counters(),
        workers: count,
        interfaces: config.policy.interfaces.clone(),
        journal: config.state_dir.clone().map(|d| (d, config.durability)),
    };
    let operated = Arc::new(
        Operated::new(facts, questions, health, env.clone())
            .running(operate::Running {
                config: config.clone(),
                reservations: opened.reservations,
                members: opened.members,
                durable,
            })
            .with_failover(pair.as_ref().map(|p| p.handle.clone()))
            .with_bulk(bulk.as_ref().map(|b| {
                let counters = b.counters.clone();
                Arc::new(move || counters.read()) as BulkCounters
            })),
    );
    // The socket file is made as root; the group the server drops to may connect.
    let socket_group = run_as.as_ref().map(|t| t.gid);
    let control = operate::start_control(&config, operated.clone(), socket_group)?;
    let serving = backend.start(shards, &env).map_err(Error::Backend)?;
    // Every socket is open now (the backend's, the listeners', the journal's files): the
    // rest of the run needs no privilege. A failed switch stops what started, in order.
    let switched = match &run_as {
        Some(target) => target.switch(config.state_dir.as_deref(), kind == BackendKind::Xdp),
        None => Ok(()),
    };
    // The followers start as the server's user: the files they make are its own.
    let history = match (&journal, &switched) {
        (Some(j), Ok(())) => history::start(&config, j.tail()).unwrap_or_else(|e| {
            tracing::error!("lease history: cannot start its followers: {e}");
            env.stop.request();
            None
        }),
        _ => None,
    };
    if let Some(h) = &history {
        operated.set_history(h.statuses().to_vec());
    }
    if switched.is_ok() {
        operated.set_ready();
        for line in serving.ready() {
            tracing::info!(
                "ready: serving {} subnet(s) {line}",
                config.policy.subnets.len()
            );
        }
    } else {
        env.stop.request();
    }
    while !env.stop.requested() {
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!("shutting down");
    operated.set_stopping();
    if let Some(bulk) = bulk {
        bulk.stop();
    }
    if let Some(pair) = pair {
        pair.stop();
    }
    let joined = serving.join();
    // The workers are done: let the sinks take what the journal holds, briefly.
    if let Some(h) = history {
        h.stop(Duration::from_secs(5));
    }
    drop(journal);
    drop(control);
    switched?;
    joined.map_err(Error::Backend)
}
