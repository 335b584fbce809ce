//! The changes an operator makes while the server runs, each in several rounds of
//! questions to the shards, one change at a time:
//!
//! - `reservation-add`: checked against the configuration and the other reservations,
//!   then every shard checks its own leases and applies it (a shard that has the address
//!   offered or leased to another client refuses, and the others undo), then shard 0
//!   journals it and the reply waits until the record is on disk.
//! - `reservation-del`: journaled first (durably), then every shard lets the address go;
//!   the shard that knows a client for it keeps it, and a pool address nobody kept goes
//!   to the shard that owned it at start.
//! - `reload` (and SIGHUP): the file is read and checked whole, the safe part of it
//!   (`config::reload`) goes to every shard through its queue, addresses the file no
//!   longer reserves are handed out as for `reservation-del`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::{Ask, Operated, Registry, Told};
use crate::config::reserve::{self, Refusal};
use crate::config::{self, reload, Config, Reservation, Subscriber};
use crate::control::{
    ClientId, ClientIdentity, ControlError, LeaseFilter, MacAddr, PageQuery, ReloadReport,
    ReservationInfo, ReservationPage, ReservationSource, ReservationSpec,
};

/// How long a reply waits for a reservation's journal record to be on disk.
const DURABLE: Duration = Duration::from_secs(5);

/// Why a reservation's record is not known to be on disk.
enum NotDurable {
    /// Not written: nothing changed on disk.
    Failed(String),
    /// Written, not confirmed on disk in time.
    Slow,
    /// The worker did not answer.
    Unanswered(ControlError),
}

fn refusal(r: Refusal) -> ControlError {
    match r {
        Refusal::Invalid(m) => ControlError::InvalidArgument(m),
        Refusal::Conflict(m) => ControlError::Conflict(m),
    }
}

fn reservation_of(spec: &ReservationSpec) -> Reservation {
    let (hw_address, client_id, subscriber) = match &spec.client {
        ClientIdentity::Mac(m) => (Some(m.0), None, None),
        ClientIdentity::ClientId(c) => (None, Some(c.as_bytes().to_vec()), None),
        ClientIdentity::Subscriber(kind, value) => (
            None,
            None,
            Some(Subscriber {
                kind: *kind,
                value: value.clone(),
            }),
        ),
    };
    Reservation {
        hw_address,
        client_id,
        subscriber,
        address: Some(spec.address),
        host_name: spec.host_name.clone(),
        ..Default::default()
    }
}

/// Whether `addr` lies in one of `config`'s pools.
fn pooled(config: &Config, addr: Ipv4Addr) -> bool {
    config
        .policy
        .subnets
        .iter()
        .any(|s| s.pools.iter().any(|p| p.contains(addr)))
}

/// The file's reservation of `addr`, as its key path.
fn in_file(config: &Config, addr: Ipv4Addr) -> Option<String> {
    config.policy.subnets.iter().enumerate().find_map(|(i, s)| {
        s.reservations
            .iter()
            .position(|r| r.address == Some(addr))
            .map(|k| format!("subnet[{i}].reservation[{k}]"))
    })
}

fn lines(errors: impl IntoIterator<Item = impl ToString>) -> String {
    errors
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Operated {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every change leaves the registry whole before it can fail, so a panic in one
        // leaves nothing half-written to the next.
        let mut reg = self
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The failover partner's reservation changes, which the shards already made.
        if let Some(link) = &self.failover {
            let changes = link.take_replicated();
            if !changes.is_empty() {
                for (addr, r) in changes {
                    match r {
                        Some(r) => reg.runtime.insert(addr, r),
                        None => reg.runtime.remove(&addr),
                    };
                }
                self.count(&reg);
            }
        }
        reg
    }

    /// The shard that owned `addr` at start (`Shard::owns`): where a pool address goes
    /// when its reservation ends and no shard kept it.
    fn owner(&self, addr: Ipv4Addr) -> usize {
        (u32::from(addr) % self.shards.len().max(1) as u32) as usize
    }

    /// Has shard 0 journal the reservation of `addr` (`None`: its removal) and waits
    /// until the record is on disk.
    fn journal_durably(&self, addr: Ipv4Addr, r: Option<&Reservation>) -> Result<(), NotDurable> {
        let told = self
            .ask_one(0, Ask::Journal(addr, r.map(|r| Box::new(r.clone()))))
            .map_err(NotDurable::Unanswered)?;
        match told {
            Told::Journaled(Ok(None)) => Ok(()),
            Told::Journaled(Ok(Some(seq))) => match &self.durable[0] {
                Some(watch) if !watch.wait(seq, DURABLE) => Err(NotDurable::Slow),
                _ => Ok(()),
            },
            Told::Journaled(Err(why)) => Err(NotDurable::Failed(why)),
            _ => Err(NotDurable::Failed("unexpected answer from worker 0".into())),
        }
    }

    /// Every shard lets `addr` go; a pool address nobody kept goes to its first owner.
    /// Returns the shard that holds it now.
    fn unreserve_everywhere(&self, config: &Config, addr: Ipv4Addr) -> Result<usize, ControlError> {
        let kept = self
            .ask_every(|| Ask::Unreserve(addr))?
            .iter()
            .position(|t| matches!(t, Told::Done(true)));
        match kept {
            Some(shard) => Ok(shard),
            None => {
                let owner = self.owner(addr);
                if pooled(config, addr) {
                    self.ask_one(owner, Ask::Adopt(vec![addr]))?;
                }
                Ok(owner)
            }
        }
    }

    pub(super) fn add_reservation(&self, spec: ReservationSpec) -> Result<(), ControlError> {
        let r = reservation_of(&spec);
        let addr = spec.address;
        let mut reg = self.lock();
        reserve::check(&reg.config.policy, &reg.runtime, &r).map_err(refusal)?;
        let told = self.ask_every(|| Ask::Reserve(Box::new(r.clone())))?;
        let refused: Vec<&str> = told
            .iter()
            .filter_map(|t| match t {
                Told::Refused(why) => Some(why.as_str()),
                _ => None,
            })
            .collect();
        if !refused.is_empty() {
            // Only the shard that holds the address refuses; the others had it foreign.
            for (i, t) in told.iter().enumerate() {
                if matches!(t, Told::Done(true)) {
                    self.ask_one(i, Ask::Unreserve(addr))?;
                }
            }
            return Err(ControlError::Conflict(format!(
                "{}: free it first (ctl lease-delete --address {addr}) or wait until it ends",
                refused.join("; ")
            )));
        }
        let host = reserve::host(&r);
        match self.journal_durably(addr, Some(&r)) {
            Ok(()) => {}
            Err(NotDurable::Failed(why)) => {
                self.unreserve_everywhere(&reg.config, addr)?;
                return Err(ControlError::Unavailable(format!(
                    "cannot journal the reservation of {addr} ({why}): nothing changed"
                )));
            }
            Err(NotDurable::Unanswered(e)) => return Err(e),
            Err(NotDurable::Slow) => {
                reg.runtime.insert(addr, r);
                self.count(&reg);
                return Err(ControlError::Unavailable(format!(
                    "the reservation of {addr} for {host} is in force and written, but the journal has not confirmed it on disk within {} s (see status): it may not survive a crash",
                    DURABLE.as_secs()
                )));
            }
        }
        tracing::info!(
            "reservation added: {addr} for {host}{}",
            r.host_name
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        );
        reg.runtime.insert(addr, r);
        self.count(&reg);
        Ok(())
    }

    pub(super) fn del_reservation(&self, addr: Ipv4Addr) -> Result<(), ControlError> {
        let mut reg = self.lock();
        let Some(r) = reg.runtime.get(&addr).cloned() else {
            return Err(ControlError::NotFound(match in_file(&reg.config, addr) {
                Some(at) => format!(
                    "{addr} is reserved in the configuration file ({at}): change it there, then reload"
                ),
                None => format!("no run-time reservation for {addr}"),
            }));
        };
        let slow = match self.journal_durably(addr, None) {
            Ok(()) => false,
            Err(NotDurable::Failed(why)) => {
                return Err(ControlError::Unavailable(format!(
                    "cannot journal the removal of {addr} ({why}): nothing changed"
                )))
            }
            Err(NotDurable::Unanswered(e)) => return Err(e),
            Err(NotDurable::Slow) => true,
        };
        reg.runtime.remove(&addr);
        self.count(&reg);
        let holder = self.unreserve_everywhere(&reg.config, addr)?;
        // The failover partner ends its copy when it sees the address unflagged.
        if self.failover.is_some() {
            self.ask_one(holder, Ask::TellUnreserved(addr))?;
        }
        tracing::info!("reservation removed: {addr} for {}", reserve::host(&r));
        if slow {
            return Err(ControlError::Unavailable(format!(
                "the reservation of {addr} is removed and the removal written, but the journal has not confirmed it on disk within {} s (see status): after a crash it may be back",
                DURABLE.as_secs()
            )));
        }
        Ok(())
    }

    pub(super) fn list_reservations(&self, q: &PageQuery) -> ReservationPage {
        let reg = self.lock();
        let info = |r: &Reservation, source| {
            let address = r.address?;
            let subnet = reg
                .config
                .policy
                .subnets
                .iter()
                .find(|s| s.net.contains(address))?
                .net;
            Some(ReservationInfo {
                address,
                subnet,
                mac: r.hw_address.map(MacAddr),
                client_id: r
                    .client_id
                    .as_ref()
                    .and_then(|c| ClientId::new(c.clone()).ok()),
                subscriber: r
                    .subscriber
                    .as_ref()
                    .map(|s| (s.kind.name().to_owned(), Subscriber::format_value(&s.value))),
                host_name: r.host_name.clone(),
                source,
            })
        };
        let file = reg
            .config
            .policy
            .subnets
            .iter()
            .flat_map(|s| &s.reservations)
            .filter_map(|r| info(r, ReservationSource::File));
        let runtime = reg
            .runtime
            .values()
            .filter_map(|r| info(r, ReservationSource::Control));
        let mut all: Vec<ReservationInfo> = file
            .chain(runtime)
            .filter(|r| q.cursor.is_none_or(|c| r.address > c))
            .filter(|r| match &q.filter {
                None => true,
                Some(LeaseFilter::Address(a)) => r.address == *a,
                Some(LeaseFilter::Mac(m)) => r.mac == Some(*m),
                Some(LeaseFilter::ClientId(c)) => r.client_id.as_ref() == Some(c),
            })
            .collect();
        all.sort_by_key(|r| r.address);
        let limit = q.limit as usize;
        let more = all.len() > limit;
        all.truncate(limit);
        ReservationPage {
            next_cursor: more.then(|| all.last().map(|r| r.address)).flatten(),
            reservations: all,
        }
    }

    /// Reads the configuration file again and applies what may change while serving.
    /// Every outcome is logged too, for a reload by SIGHUP.
    pub(super) fn reload_file(&self) -> Result<ReloadReport, ControlError> {
        let Some(path) = self.env.config_file.as_deref() else {
            let why = "the server was started from command-line flags, not a configuration file (--config): there is nothing to reload";
            tracing::warn!("reload: {why}");
            return Err(ControlError::Unsupported(why.into()));
        };
        let mut reg = self.lock();
        let refuse = |errors: String| {
            for line in errors.lines() {
                tracing::error!("reload refused, the configuration stays as it runs: {line}");
            }
            ControlError::InvalidArgument(errors)
        };
        let (file, text) = config::load_file_text(path).map_err(|e| refuse(lines(e)))?;
        let clashes: Vec<config::FileError> = reserve::conflicts(&file.policy, &reg.runtime)
            .into_iter()
            .map(|bad| config::error_at(path, &text, bad))
            .collect();
        if !clashes.is_empty() {
            return Err(refuse(lines(clashes)));
        }
        let mut plan = reload::plan(&reg.config, &file);
        if let Err(bad) = plan.config.policy.validate() {
            return Err(refuse(lines(bad.iter().map(|b| {
                format!(
                    "{}: with the subnets and pools the server runs with, {b} (restart to apply the file whole)",
                    path.display()
                )
            }))));
        }
        if plan.config != reg.config {
            self.reconfigure(&reg.config, &plan.config, &reg.runtime)?;
            if plan.config.log_level != reg.config.log_level {
                let level = plan.config.log_level.as_deref();
                let note = match &self.env.log_level {
                    Some(apply) => apply(level).err(),
                    None => Some("RUST_LOG is set and decides".into()),
                };
                if let (Some(note), Some(line)) = (
                    note,
                    plan.applied.iter_mut().find(|l| l.starts_with("log-level")),
                ) {
                    let _ = write!(line, " (not in effect: {note})");
                }
            }
            reg.config = plan.config;
        }
        self.loaded
            .store(self.env.clock.now(), std::sync::atomic::Ordering::Relaxed);
        self.count(&reg);
        if plan.applied.is_empty() && plan.restart_required.is_empty() {
            tracing::info!("reload of {}: nothing changed", path.display());
        }
        for line in &plan.applied {
            tracing::info!("reload of {}: applied {line}", path.display());
        }
        for line in &plan.restart_required {
            tracing::warn!(
                "reload of {}: not applied, needs a restart: {line}",
                path.display()
            );
        }
        Ok(ReloadReport {
            applied: plan.applied,
            restart_required: plan.restart_required,
        })
    }

    /// Every shard runs with `next`; addresses the file no longer reserves, that no
    /// shard kept, go to their first owner.
    fn reconfigure(
        &self,
        running: &Config,
        next: &Config,
        runtime: &reserve::Runtime,
    ) -> Result<(), ControlError> {
        let reserved = |c: &Config| -> BTreeSet<Ipv4Addr> {
            c.policy
                .subnets
                .iter()
                .flat_map(|s| s.reservations.iter().filter_map(|r| r.address))
                .collect()
        };
        let (before, after) = (reserved(running), reserved(next));
        let shared = Arc::new(next.policy.clone());
        let mut kept = BTreeSet::new();
        for told in self.ask_every(|| Ask::Reconfigure(shared.clone()))? {
            if let Told::Kept(addrs) = told {
                kept.extend(addrs);
            }
        }
        let mut orphans: Vec<Vec<Ipv4Addr>> = vec![Vec::new(); self.shards.len()];
        for &a in before.difference(&after) {
            if !kept.contains(&a) && !runtime.contains_key(&a) && pooled(next, a) {
                orphans[self.owner(a)].push(a);
            }
        }
        for (i, addrs) in orphans.into_iter().enumerate() {
            if !addrs.is_empty() {
                self.ask_one(i, Ask::Adopt(addrs))?;
            }
        }
        Ok(())
    }
}

/// Reloads on SIGHUP, from a thread of its own, until the server stops.
pub(super) fn watch_sighup(operated: Arc<Operated>) {
    let spawned = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let stop = operated.env.stop.clone();
            while !stop.requested() {
                std::thread::sleep(Duration::from_millis(100));
                if stop.take_reload() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged by the reload itself.
                    let _ = operated.reload_file();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the SIGHUP reload thread ({e}): SIGHUP will not reload");
    }
}
