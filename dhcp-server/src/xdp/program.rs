//! Loads the XDP steering program (`dhcp-ebpf`, embedded at build time) onto an
//! interface, fills its socket map as the AF_XDP workers come up, and reads its counters.
//!
//! Attaching goes through a bpf_link, so the program lives exactly as long as this
//! process holds it: a crash or `kill -9` leaves the interface clean. A program someone
//! else attached is never replaced; the kernel refuses and so do we, with a message that
//! says how to look at it.

use std::fmt;
use std::os::fd::RawFd;
use std::sync::Arc;

use aya::maps::{Array, Map, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use dhcp_ebpf_common::{
    socket_key, Balance, Counter, Counters, Limit, BALANCE_LEN, FLOOD_CIRCUITS, FLOOD_CLIENTS,
    MAX_SOCKETS,
};

use crate::config::Flood;

include!(concat!(env!("OUT_DIR"), "/ebpf.rs"));

/// Where the program runs: in the driver (before any socket buffer is allocated), or in
/// the kernel's generic hook for drivers without XDP support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Driver,
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Generic => "generic (skb)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(
        "this binary was built without the XDP program: run `cargo xtask setup` (once, as \
         root), then `cargo xtask build-ebpf`, then rebuild the server"
    )]
    NotBuilt,
    #[error(
        "{ifname} already has an XDP program attached, and it is not replaced: see it with \
         `ip link show dev {ifname}`; if nothing needs it, remove it with \
         `ip link set dev {ifname} xdp off`"
    )]
    Busy { ifname: String },
    #[error("no network interface {ifname}")]
    NoInterface { ifname: String },
    #[error(
        "{queues} queues x {workers} workers: need 1 to 256 workers and at most \
         {MAX_SOCKETS} sockets in all"
    )]
    Shape { queues: u32, workers: u32 },
    #[error(
        "queue {queue}, worker {worker}: the program was attached for {queues} queues x \
         {workers} workers"
    )]
    NoSlot {
        queue: u32,
        worker: u32,
        queues: u32,
        workers: u32,
    },
    #[error("the embedded XDP object has no {0}: rebuild it with `cargo xtask build-ebpf`")]
    Incomplete(&'static str),
    #[error("cannot load the XDP program: {0}")]
    Load(#[source] Box<EbpfError>),
    #[error("the kernel refused the XDP program: {0}")]
    Verify(#[source] ProgramError),
    #[error("cannot attach the XDP program to {ifname}: {source}")]
    Attach {
        ifname: String,
        #[source]
        source: ProgramError,
    },
    #[error("XDP map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// The steering program, attached to one interface until dropped.
pub struct SteerProgram {
    ebpf: Ebpf,
    counters: CounterReader,
    link: Option<aya::programs::xdp::XdpLinkId>,
    ifname: String,
    mode: AttachMode,
    queues: u32,
    workers: u32,
}

impl SteerProgram {
    /// Loads the program for `queues` receive queues with `workers` sockets each and
    /// attaches it to `ifname`: in driver mode if the driver can, else in generic mode with
    /// a warning. No flood limits.
    pub fn attach(ifname: &str, workers: u32, queues: u32) -> Result<Self, XdpError> {
        Self::attach_with(ifname, workers, queues, &Flood::default())
    }

    /// `attach`, the program dropping requests past the `flood` limits.
    pub fn attach_with(
        ifname: &str,
        workers: u32,
        queues: u32,
        flood: &Flood,
    ) -> Result<Self, XdpError> {
        let sockets = queues.checked_mul(workers);
        if !(1..=256).contains(&workers) || queues == 0 || sockets.is_none_or(|n| n > MAX_SOCKETS) {
            return Err(XdpError::Shape { queues, workers });
        }
        let object = OBJECT.ok_or(XdpError::NotBuilt)?;
        let rule = dhcp_ebpf_common::Flood {
            client: Limit::per_second(flood.client_rate, flood.client_burst),
            circuit: Limit::per_second(flood.circuit_rate, flood.circuit_burst),
        };
        // LRU hashes are allocated whole at load: an unused one gets a single entry.
        let size = |limit: Limit| if limit.is_on() { flood.table_size } else { 1 };
        let mut ebpf = EbpfLoader::new()
            .override_global(dhcp_ebpf_common::WORKERS, &workers, true)
            .override_global(dhcp_ebpf_common::FLOOD, &rule.to_global(), true)
            .map_max_entries(FLOOD_CLIENTS, size(rule.client))
            .map_max_entries(FLOOD_CIRCUITS, size(rule.circuit))
            .load(object)
            .map_err(|e| XdpError::Load(Box::new(e)))?;
        let name = dhcp_ebpf_common::COUNTERS;
        let map = ebpf.take_map(name).ok_or(XdpError::Incomplete(name))?;
        let counters = CounterReader {
            map: Arc::new(PerCpuArray::try_from(map).map_err(map_error(name))?),
        };
        let program = program(&mut ebpf)?;
        program.load().map_err(XdpError::Verify)?;
        let attach_error = |source: ProgramError| match source {
            ProgramError::UnknownInterface { .. } => XdpError::NoInterface {
                ifname: ifname.to_owned(),
            },
            source if busy(&source) => XdpError::Busy {
                ifname: ifname.to_owned(),
            },
            source => XdpError::Attach {
                ifname: ifname.to_owned(),
                source,
            },
        };
        let (link, mode) = match program.attach(ifname, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Driver),
            Err(e) => match attach_error(e) {
                XdpError::Attach { source, .. } => {
                    tracing::warn!(
                        "{ifname}: the driver cannot run XDP ({source}); using generic (skb) \
                         mode, which is slower"
                    );
                    let link = program.attach(ifname, XdpMode::Skb).map_err(attach_error)?;
                    (link, AttachMode::Generic)
                }
                refused => return Err(refused),
            },
        };
        tracing::info!(
            "XDP program attached to {ifname} in {mode} mode: {queues} queues x {workers} workers"
        );
        if rule.is_on() {
            tracing::info!(
                "XDP flood limits on {ifname}: per client {}, per relay circuit {}; {} buckets each",
                limit_text(flood.client_rate, flood.client_burst),
                limit_text(flood.circuit_rate, flood.circuit_burst),
                flood.table_size
            );
        }
        Ok(Self {
            ebpf,
            counters,
            link: Some(link),
            ifname: ifname.to_owned(),
            mode,
            queues,
            workers,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Hands the requests of `worker` on receive queue `queue` to the AF_XDP socket
    /// `xsk_fd` (bound to that queue of this interface). Until then they go to the kernel.
    pub fn register(&mut self, queue: u32, worker: u32, xsk_fd: RawFd) -> Result<(), XdpError> {
        if queue >= self.queues || worker >= self.workers {
            return Err(XdpError::NoSlot {
                queue,
                worker,
                queues: self.queues,
                workers: self.workers,
            });
        }
        // `worker < workers <= 256`, so it is its own remainder: the slot the program
        // computes for every hash that belongs to this worker.
        let key = socket_key(queue, worker as u8, self.workers);
        let name = dhcp_ebpf_common::XSKS;
        let map = self.ebpf.map_mut(name).ok_or(XdpError::Incomplete(name))?;
        let mut xsks = XskMap::<&mut MapData>::try_from(map).map_err(map_error(name))?;
        xsks.set(key, xsk_fd, 0).map_err(map_error(name))
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        self.counters.read()
    }

    /// Reads the counters from another thread, for as long as it is kept.
    pub fn counter_reader(&self) -> CounterReader {
        self.counters.clone()
    }

    /// Requests redirected to each socket so far, by socket key (`queue * workers +
    /// worker`).
    pub fn redirected_per_socket(&self) -> Result<Vec<u64>, XdpError> {
        let name = dhcp_ebpf_common::REDIRECTS;
        let array = self.per_cpu(name)?;
        (0..self.queues * self.workers)
            .map(|key| {
                let per_cpu = array.get(&key, 0).map_err(map_error(name))?;
                Ok(per_cpu.iter().sum())
            })
            .collect()
    }

    /// The program's failover load-balancing rule, to be set by whoever follows the
    /// pair's state (it starts off: every DISCOVER goes to the workers).
    pub fn take_balance(&mut self) -> Result<BalanceRule, XdpError> {
        let name = dhcp_ebpf_common::BALANCE;
        let map = self.ebpf.take_map(name).ok_or(XdpError::Incomplete(name))?;
        Ok(BalanceRule {
            map: Array::try_from(map).map_err(map_error(name))?,
        })
    }

    fn per_cpu(&self, name: &'static str) -> Result<PerCpuArray<&MapData, u64>, XdpError> {
        let map: &Map = self.ebpf.map(name).ok_or(XdpError::Incomplete(name))?;
        PerCpuArray::try_from(map).map_err(map_error(name))
    }
}

impl Drop for SteerProgram {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        let ifname = &self.ifname;
        // Dropping `ebpf` would detach too; doing it here lets us say whether it worked.
        match program(&mut self.ebpf).and_then(|p| p.detach(link).map_err(XdpError::Verify)) {
            Ok(()) => tracing::info!("XDP program detached from {ifname}"),
            Err(e) => tracing::warn!("XDP program on {ifname}: detach failed: {e}"),
        }
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let name = dhcp_ebpf_common::PROGRAM;
    ebpf.program_mut(name)
        .ok_or(XdpError::Incomplete(name))?
        .try_into()
        .map_err(|_| XdpError::Incomplete(name))
}

/// The program's counters, shared with the threads that report them (`stats`, the
/// metrics) while the program runs.
#[derive(Clone)]
pub struct CounterReader {
    map: Arc<PerCpuArray<MapData, u64>>,
}

impl CounterReader {
    /// The counters, summed over CPUs.
    pub fn read(&self) -> Result<Counters, XdpError> {
        let name = dhcp_ebpf_common::COUNTERS;
        let mut sum = Counters::default();
        for counter in Counter::ALL {
            let per_cpu = self
                .map
                .get(&(counter as u32), 0)
                .map_err(map_error(name))?;
            sum.add(counter, per_cpu.iter().sum());
        }
        Ok(sum)
    }
}

fn limit_text(rate: u32, burst: u32) -> String {
    if rate == 0 {
        "none".into()
    } else {
        format!("{rate}/s, burst {burst}")
    }
}

/// The program's load-balancing rule, owned apart from the program so the failover link
/// can change it from its own thread.
pub struct BalanceRule {
    map: Array<MapData, [u8; BALANCE_LEN]>,
}

impl BalanceRule {
    pub fn set(&mut self, rule: &Balance) -> Result<(), XdpError> {
        self.map
            .set(0, rule.encode(), 0)
            .map_err(map_error(dhcp_ebpf_common::BALANCE))
    }
}

fn map_error(name: &'static str) -> impl Fn(MapError) -> XdpError {
    move |source| XdpError::Map { name, source }
}

/// Whether the kernel refused because the interface already has an XDP program (through
/// a link, EBUSY; through netlink or in the other mode, EEXIST or EBUSY).
fn busy(e: &ProgramError) -> bool {
    let errno = match e {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    };
    matches!(errno, Some(libc::EBUSY | libc::EEXIST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_shapes_the_maps_cannot_hold() {
        for (workers, queues) in [(0, 1), (1, 0), (257, 1), (256, 5), (4, MAX_SOCKETS)] {
            assert!(
                matches!(
                    SteerProgram::attach("lo", workers, queues),
                    Err(XdpError::Shape { .. })
                ),
                "{workers} x {queues}"
            );
        }
    }

    #[test]
    fn not_built_says_how_to_build() {
        let message = XdpError::NotBuilt.to_string();
        assert!(message.contains("cargo xtask build-ebpf"), "{message}");
        assert!(message.contains("cargo xtask setup"), "{message}");
        if OBJECT.is_none() {
            assert!(matches!(
                SteerProgram::attach("lo", 1, 1),
                Err(XdpError::NotBuilt)
            ));
        }
    }

    #[test]
    fn modes_read_as_operators_know_them() {
        assert_eq!(AttachMode::Driver.to_string(), "driver");
        assert_eq!(AttachMode::Generic.to_string(), "generic (skb)");
    }
}
