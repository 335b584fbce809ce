//! The kernel-bypass backend: the XDP program steers each client's DHCP frames to the
//! AF_XDP socket of the worker that owns the client (RFC 3074 hash of its identifier), and
//! each worker runs its own shard of the lease engine. Everything else the interface
//! receives goes to the kernel as before.

pub mod program;
pub mod worker;
pub mod xsk;

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use dhcp_ebpf_common::{Balance, MAX_SERVER_IDS};

use crate::config::Config;
use crate::store::{self, Committer};
use crate::{control, journal, netif, operate, shutdown};
use program::{SteerProgram, XdpError};
pub use worker::Wait;
use worker::{Port, Worker};
use xsk::{CopyMode, XskError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Program(#[from] XdpError),
    #[error(transparent)]
    Sockets(#[from] XskError),
    #[error("interface {ifname}: {source}")]
    Interface { ifname: String, source: io::Error },
    #[error("{ifname} has no IPv4 address and its subnets set no server-id: clients could not be told who answered")]
    NoAddress { ifname: String },
    #[error("cannot start worker thread: {0}")]
    Thread(io::Error),
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error("control socket: {0}")]
    Control(#[from] control::ServeError),
    #[error("failover link: {0}")]
    Failover(io::Error),
}

/// How the workers run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Worker threads (lease shards); 0 means one per CPU.
    pub workers: u16,
    pub wait: Wait,
    /// Pin worker N to CPU N modulo the CPU count.
    pub pin: bool,
}

/// One interface made ready: the program attached and every worker's sockets on it.
struct Attached {
    program: SteerProgram,
    ifname: String,
    /// Sockets by worker, then queue.
    sockets: Vec<Vec<xsk::Xsk>>,
    mode: CopyMode,
    mac: [u8; 6],
    addr: Ipv4Addr,
}

fn attach(config: &Config, link: usize, workers: u16) -> Result<Attached, Error> {
    let ifname = config.policy.interfaces[link].clone();
    let io = |source| Error::Interface {
        ifname: ifname.clone(),
        source,
    };
    let ifindex = netif::index(&ifname).map_err(io)?;
    let queues = netif::rx_queues(&ifname).map_err(io)?;
    let mac = netif::hw_address(&ifname).map_err(io)?;
    let addr = config
        .policy
        .subnets
        .iter()
        .filter(|s| s.interface == Some(link as u16))
        .find_map(|s| s.server_id)
        .or_else(|| netif::address(&ifname))
        .ok_or_else(|| Error::NoAddress {
            ifname: ifname.clone(),
        })?;
    let mut program = SteerProgram::attach(&ifname, u32::from(workers), queues)?;
    let (sockets, mode) = xsk::open(&ifname, ifindex, queues, u32::from(workers))?;
    for (w, per_queue) in sockets.iter().enumerate() {
        for x in per_queue {
            program.register(x.queue_id, w as u32, x.fd())?;
        }
    }
    Ok(Attached {
        program,
        ifname,
        sockets,
        mode,
        mac,
        addr,
    })
}

/// The worker count `requested` stands for: one per CPU when 0.
pub fn worker_count(requested: u16) -> u16 {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(256) as u16)
}

/// Attaches to every configured interface, then serves until shutdown is requested.
/// Nothing is served unless every interface is attached; whatever was attached is
/// detached on every way out (the programs detach when dropped).
pub fn serve(config: Config, opts: Options, clock: fn() -> u64) -> Result<(), Error> {
    let workers = worker_count(opts.workers);
    let mut attached = (0..config.policy.interfaces.len())
        .map(|link| attach(&config, link, workers))
        .collect::<Result<Vec<_>, _>>()?;
    let shards = store::open(&config, workers, clock())?;
    // Outlives the workers and their writers: dropping it runs a last commit.
    let journal = shards.journal;
    let mailboxes: Vec<_> = (0..workers)
        .map(|_| Arc::new(ArrayQueue::new(worker::MAILBOX)))
        .collect();
    let mut crew = Vec::new();
    let mut questions = Vec::new();
    let mut journal_ok = Vec::new();
    let mut durable = Vec::new();
    // The program drops DISCOVERs of the partner's buckets while the pair cooperates,
    // and the REQUESTs after them that name another server; the link sets the rule on
    // every state change.
    let on_view = match &config.policy.failover {
        Some(f) => {
            let mut rules = attached
                .iter_mut()
                .map(|a| Ok((a.program.take_balance()?, server_ids(&config, a))))
                .collect::<Result<Vec<_>, XdpError>>()?;
            let max_secs = f.load_balance_max_seconds.min(u32::from(u16::MAX)) as u16;
            Some(Box::new(move |view: &dhcp_proto::failover::machine::View| {
                let rule = view.balance(max_secs);
                for (r, server_ids) in &mut rules {
                    let rule = Balance {
                        server_ids: *server_ids,
                        ..rule
                    };
                    if let Err(e) = r.set(&rule) {
                        tracing::warn!("cannot set the XDP load-balancing rule: {e}");
                    }
                }
            }) as crate::failover::shards::OnView)
        }
        None => None,
    };
    let (mut pair_ends, pair) =
        match crate::failover::link::start(&config, shards.failover, usize::from(workers), on_view)
            .map_err(Error::Failover)?
        {
            Some((ends, running)) => (ends.into_iter().map(Some).collect(), Some(running)),
            None => (Vec::new(), None),
        };
    let parts = shards.engines.into_iter().zip(shards.writers);
    for (w, (engine, writer)) in (0..workers).zip(parts) {
        let mut committer = Committer::new(writer, config.durability);
        let failover =
            pair_ends
                .get_mut(w as usize)
                .and_then(Option::take)
                .map(|(orders, outbox)| {
                    committer.send_to_partner(outbox);
                    orders
                });
        journal_ok.push(committer.health());
        durable.push(committer.watch());
        questions.push(operate::questions());
        let ports = attached
            .iter_mut()
            .enumerate()
            .map(|(link, a)| Port {
                link: link as u16,
                mac: a.mac,
                addr: a.addr,
                sockets: std::mem::take(&mut a.sockets[w as usize]),
            })
            .collect();
        crew.push(Worker {
            index: w,
            engine,
            ports,
            mailboxes: mailboxes.clone(),
            wait: opts.wait,
            committer,
            questions: questions[w as usize].clone(),
            failover,
            latency: operate::latency_histogram(),
        });
    }
    let facts = operate::Facts {
        backend: control::BackendKind::Xdp,
        xdp: attached.first().map(|a| control::XdpStatus {
            attach: match a.program.mode() {
                program::AttachMode::Driver => control::XdpAttach::Driver,
                program::AttachMode::Generic => control::XdpAttach::Generic,
            },
            copy: match a.mode {
                CopyMode::ZeroCopy => control::XdpCopy::ZeroCopy,
                CopyMode::Copy => control::XdpCopy::Copy,
            },
        }),
        workers,
        interfaces: config.policy.interfaces.clone(),
        journal: config.state_dir.clone().map(|d| (d, config.durability)),
    };
    let operated = Arc::new(
        operate::Operated::new(facts, questions, journal_ok)
            .running(operate::Running {
                config: config.clone(),
                reservations: shards.reservations,
                durable,
            })
            .with_failover(pair.as_ref().map(|p| p.handle.clone())),
    );
    let control = operate::start_control(&config, operated.clone())?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for worker in crew {
        let index = worker.index;
        let pin = opts.pin.then_some(index as usize % cpus);
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Some(cpu) = pin {
                    pin_to(cpu);
                }
                worker.run(clock)
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shutdown::request();
                for h in handles {
                    let _ = h.join();
                }
                return Err(Error::Thread(e));
            }
        }
    }
    operated.set_ready();
    for a in &attached {
        tracing::info!(
            "ready: serving {} subnet(s) on {} with the xdp backend: {} workers, XDP in {} mode, AF_XDP {} mode",
            config.policy.subnets.len(),
            a.ifname,
            workers,
            a.program.mode(),
            a.mode
        );
    }
    while !shutdown::requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("shutting down");
    operated.set_stopping();
    if let Some(pair) = pair {
        pair.stop();
    }
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok((engine, xsk)) => {
                let s = engine.stats();
                tracing::info!(
                    "worker {i}: {} requests in, {} replies out; AF_XDP: {} dropped by the kernel ({} with the RX ring full, {} with the fill ring empty)",
                    s.rx.iter().sum::<u64>(),
                    s.tx.iter().sum::<u64>(),
                    xsk.rx_dropped + xsk.rx_ring_full,
                    xsk.rx_ring_full,
                    xsk.fill_ring_empty
                );
            }
            Err(_) => tracing::error!("worker {i} panicked"),
        }
    }
    for a in &attached {
        if let Ok(c) = a.program.counters() {
            tracing::info!(
                "XDP on {}: {} redirected, {} passed to the kernel, {} malformed dropped, {} without a socket, {} left to the failover partner",
                a.ifname,
                c.redirected,
                c.passed,
                c.malformed,
                c.no_socket,
                c.balanced
            );
        }
    }
    drop(journal);
    drop(control);
    Ok(())
}

/// Every server identifier the engine counts as its own for a request that reaches
/// `a`'s interface, for the XDP program's load-balancing rule: the interface's address
/// (a broadcast's) and each subnet's `server-id` (a relayed request may be placed in any
/// subnet). Too many to fit and there are none: the program then leaves every REQUEST
/// to the workers.
fn server_ids(config: &Config, a: &Attached) -> [[u8; 4]; MAX_SERVER_IDS] {
    let ids: Vec<[u8; 4]> = std::iter::once(a.addr)
        .chain(config.policy.subnets.iter().filter_map(|s| s.server_id))
        .map(|id| id.octets())
        .collect();
    let kept = Balance::default().with_server_ids(&ids).server_ids;
    if kept[0] == [0; 4] {
        tracing::info!(
            "{}: more than {MAX_SERVER_IDS} server identifiers: the XDP program leaves every REQUEST to the workers, even those naming the failover partner",
            a.ifname
        );
    }
    kept
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        tracing::warn!(
            "cannot pin a worker to CPU {cpu}: {}",
            io::Error::last_os_error()
        );
    }
}
