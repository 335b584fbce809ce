//! The kernel-bypass backend: the XDP program steers each client's DHCP frames to the
//! AF_XDP socket of the worker that owns the client (RFC 3074 hash of its identifier), and
//! each worker runs its own shard of the lease engine. Everything else the interface
//! receives goes to the kernel as before.

pub mod program;
pub mod worker;
pub mod xsk;

use std::io;
use std::net::Ipv4Addr;
use std::thread::JoinHandle;

use dhcp_ebpf_common::{Balance, Counter, Counters, MAX_SERVER_IDS};

use crate::config::Config;
use crate::control::{self, BackendKind};
use crate::failover::shards::OnView;
use crate::netif;
use crate::runtime::env::Env;
use crate::runtime::shard::Shard;
use crate::runtime::{Backend, BackendCounters, BackendError, Serving};
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
    /// The server identifiers the program's load-balancing rule counts as ours.
    server_ids: [[u8; 4]; MAX_SERVER_IDS],
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
    let mut program =
        SteerProgram::attach_with(&ifname, u32::from(workers), queues, &config.flood)?;
    let (sockets, mode) = xsk::open(&ifname, ifindex, queues, u32::from(workers))?;
    for (w, per_queue) in sockets.iter().enumerate() {
        for x in per_queue {
            program.register(x.queue_id, w as u32, x.fd())?;
        }
    }
    let server_ids = match config.policy.failover {
        Some(_) => server_ids(config, &ifname, addr),
        None => [[0; 4]; MAX_SERVER_IDS],
    };
    Ok(Attached {
        program,
        ifname,
        sockets,
        mode,
        mac,
        addr,
        server_ids,
    })
}

/// The worker count `requested` stands for: one per CPU when 0.
pub fn worker_count(requested: u16) -> u16 {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(256) as u16)
}

/// The XDP program attached to every configured interface, with each worker's AF_XDP
/// sockets on it. The programs detach when dropped, on every way out.
pub struct Xdp {
    attached: Vec<Attached>,
    workers: u16,
    opts: Options,
    /// The failover partnership's `load-balance-max-seconds`, when there is one.
    balancing: Option<u16>,
}

impl Xdp {
    /// Attaches to every configured interface; nothing is served unless every one is.
    pub fn attach(config: &Config, opts: Options) -> Result<Self, Error> {
        let workers = worker_count(opts.workers);
        let attached = (0..config.policy.interfaces.len())
            .map(|link| attach(config, link, workers))
            .collect::<Result<Vec<_>, _>>()?;
        let balancing = config
            .policy
            .failover
            .as_ref()
            .map(|f| f.load_balance_max_seconds.min(u32::from(u16::MAX)) as u16);
        Ok(Xdp {
            attached,
            workers,
            opts,
            balancing,
        })
    }
}

impl Backend for Xdp {
    fn describe(&self) -> (BackendKind, Option<control::XdpStatus>) {
        let status = self.attached.first().map(|a| control::XdpStatus {
            attach: match a.program.mode() {
                program::AttachMode::Driver => control::XdpAttach::Driver,
                program::AttachMode::Generic => control::XdpAttach::Generic,
            },
            copy: match a.mode {
                CopyMode::ZeroCopy => control::XdpCopy::ZeroCopy,
                CopyMode::Copy => control::XdpCopy::Copy,
            },
        });
        (BackendKind::Xdp, status)
    }

    fn shards(&self) -> u16 {
        self.workers
    }

    /// The programs' counters, summed over interfaces.
    fn counters(&self) -> Option<BackendCounters> {
        let readers: Vec<_> = self
            .attached
            .iter()
            .map(|a| a.program.counter_reader())
            .collect();
        Some(std::sync::Arc::new(move || {
            let mut sum = Counters::default();
            for r in &readers {
                match r.read() {
                    Ok(c) => {
                        for counter in Counter::ALL {
                            sum.add(counter, c.get(counter));
                        }
                    }
                    Err(e) => tracing::warn!("cannot read the XDP counters: {e}"),
                }
            }
            Counter::ALL
                .iter()
                .map(|&c| (c.name(), sum.get(c)))
                .collect()
        }))
    }

    /// The program drops DISCOVERs of the partner's buckets while the pair cooperates,
    /// and the REQUESTs after them that name another server; the link sets the rule on
    /// every state change.
    fn on_view(&mut self) -> Result<Option<OnView>, BackendError> {
        let Some(max_secs) = self.balancing else {
            return Ok(None);
        };
        let mut rules = self
            .attached
            .iter_mut()
            .map(|a| Ok((a.program.take_balance()?, a.server_ids)))
            .collect::<Result<Vec<_>, XdpError>>()?;
        Ok(Some(Box::new(
            move |view: &dhcp_proto::failover::machine::View| {
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
            },
        )))
    }

    fn start(
        mut self: Box<Self>,
        shards: Vec<Shard>,
        env: &Env,
    ) -> Result<Box<dyn Serving>, BackendError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut handles = Vec::new();
        for shard in shards {
            let w = usize::from(shard.index());
            let ports = self
                .attached
                .iter_mut()
                .enumerate()
                .map(|(link, a)| Port {
                    link: link as u16,
                    mac: a.mac,
                    addr: a.addr,
                    sockets: std::mem::take(&mut a.sockets[w]),
                })
                .collect();
            let worker = Worker {
                shard,
                ports,
                wait: self.opts.wait,
            };
            let pin = self.opts.pin.then_some(w % cpus);
            let theirs = env.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn(move || {
                    if let Some(cpu) = pin {
                        pin_to(cpu);
                    }
                    worker.run(&theirs)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    env.stop.request();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(Error::Thread(e).into());
                }
            }
        }
        Ok(Box::new(XdpServing {
            attached: self.attached,
            workers: self.workers,
            handles,
        }))
    }
}

struct XdpServing {
    attached: Vec<Attached>,
    workers: u16,
    handles: Vec<JoinHandle<(dhcp_proto::engine::Engine, xsk::XskStats)>>,
}

impl Serving for XdpServing {
    fn ready(&self) -> Vec<String> {
        self.attached
            .iter()
            .map(|a| {
                format!(
                    "on {} with the xdp backend: {} workers, XDP in {} mode, AF_XDP {} mode",
                    a.ifname,
                    self.workers,
                    a.program.mode(),
                    a.mode
                )
            })
            .collect()
    }

    fn join(self: Box<Self>) -> Result<(), BackendError> {
        for (i, h) in self.handles.into_iter().enumerate() {
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
        for a in &self.attached {
            if let Ok(c) = a.program.counters() {
                tracing::info!(
                    // Still ending with the partner's count: tests/failover.rs reads it there.
                    "XDP on {}: {} redirected, {} passed to the kernel, {} malformed dropped, {} dropped over a client's flood limit, {} over a circuit's, {} without a socket, {} left to the failover partner",
                    a.ifname,
                    c.redirected,
                    c.passed,
                    c.malformed,
                    c.flood_client,
                    c.flood_circuit,
                    c.no_socket,
                    c.balanced
                );
            }
        }
        Ok(())
    }
}

/// Every server identifier the engine counts as its own for a request that reaches
/// `ifname`, for the XDP program's load-balancing rule: the interface's address
/// (a broadcast's) and each subnet's `server-id` (a relayed request may be placed in any
/// subnet). Too many to fit and there are none: the program then leaves every REQUEST
/// to the workers.
fn server_ids(config: &Config, ifname: &str, addr: Ipv4Addr) -> [[u8; 4]; MAX_SERVER_IDS] {
    let ids: Vec<[u8; 4]> = std::iter::once(addr)
        .chain(config.policy.subnets.iter().filter_map(|s| s.server_id))
        .map(|id| id.octets())
        .collect();
    let kept = Balance::default().with_server_ids(&ids).server_ids;
    if kept[0] == [0; 4] {
        tracing::info!(
            "{}: more than {MAX_SERVER_IDS} server identifiers: the XDP program leaves every REQUEST to the workers, even those naming the failover partner",
            ifname
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
