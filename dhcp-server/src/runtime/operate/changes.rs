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
//! - `class-member-add`: every shard lists the value in its class (all refuse alike when
//!   the class is unknown, has a test, or lists it already), then shard 0 journals it and
//!   the reply waits until the record is on disk; members are known to every shard since
//!   a class's clients hash to all of them.
//! - `class-member-del`: journaled first (durably), then every shard ends it.
//! - `reload` (and SIGHUP): the file is read and checked whole, the safe part of it
//!   (`config::reload`) goes to every shard through its queue, addresses the file no
//!   longer reserves are handed out as for `reservation-del`. Classes need a restart,
//!   so run-time members stay as they are.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::{Ask, Change, Operated, Registry, Told};
use crate::config::reserve::{self, Refusal};
use crate::config::{self, reload, Config, Reservation, Subscriber};
use crate::control::{
    ClassMember, ClientId, ClientIdentity, ControlError, LeaseFilter, MacAddr, MemberInfo,
    MemberPage, MemberQuery, PageQuery, ReloadReport, ReservationInfo, ReservationPage,
    ReservationSpec, Source,
};
use dhcp_proto::engine::NotMember;
use dhcp_proto::lease::printable;
use dhcp_proto::policy::class::{self, Membership};

/// How long a reply waits for a change's journal record to be on disk.
const DURABLE: Duration = Duration::from_secs(5);

/// The reply to a change in force: ok once its record is on disk; when the journal has
/// not confirmed it in time (`slow`), an error saying that `what` (an addition, or a
/// removal) holds and what that risks.
fn confirmed(slow: bool, what: &str, added: bool) -> Result<(), ControlError> {
    if !slow {
        return Ok(());
    }
    let (done, risk) = if added {
        ("is in force and written", "it may not survive a crash")
    } else {
        (
            "is removed and the removal written",
            "after a crash it may be back",
        )
    };
    Err(ControlError::Unavailable(format!(
        "{what} {done}, but the journal has not confirmed it on disk within {} s (see status): {risk}",
        DURABLE.as_secs()
    )))
}

/// A member change the shards refused, as the control socket's error.
fn not_member(why: NotMember) -> ControlError {
    let message = why.to_string();
    match why {
        NotMember::NoClass(_) | NotMember::Absent { .. } => ControlError::NotFound(message),
        NotMember::NotMatching(_) => ControlError::InvalidArgument(message),
        NotMember::Already { .. } => ControlError::Conflict(message),
    }
}

/// The first `limit` of `all` and whether more follow.
fn page<T>(mut all: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let more = all.len() > limit as usize;
    all.truncate(limit as usize);
    (all, more)
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

/// Why `m` is not a run-time member to remove: no such class, a class with a test, a
/// member of the file (changed there), or not a member at all.
fn not_at_run_time(config: &Config, m: &ClassMember) -> ControlError {
    let (i, c) = match class::matching(&config.policy.classes, &m.class) {
        Ok(found) => found,
        Err(why) => return not_member(why),
    };
    let in_file = match &c.membership {
        Membership::Match { subclasses, .. } => subclasses.iter().any(|s| s.value == m.value),
        Membership::Test(_) => false,
    };
    if in_file {
        // Classes need a restart, so a reload would not apply the change.
        ControlError::NotFound(format!(
            "the {m} is listed in the configuration file (class[{i}]): change it there, then restart"
        ))
    } else {
        not_member(NotMember::Absent {
            class: m.class.clone(),
            value: printable(&m.value),
        })
    }
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

    /// Has shard 0 journal `change` and waits until the record is on disk: `Ok(false)`.
    /// `Ok(true)` when it is written but not confirmed on disk in time: the change stands
    /// and the caller says so. When it cannot be written, `undo` takes back what the
    /// shards already made and the error says nothing changed (`what` names the change).
    fn durably(
        &self,
        change: Change,
        what: &str,
        undo: impl FnOnce() -> Result<(), ControlError>,
    ) -> Result<bool, ControlError> {
        let why = match self.ask_one(0, Ask::Journal(change))? {
            Told::Journaled(Ok(None)) => return Ok(false),
            Told::Journaled(Ok(Some(seq))) => {
                return Ok(self.durable[0]
                    .as_ref()
                    .is_some_and(|watch| !watch.wait(seq, DURABLE)))
            }
            Told::Journaled(Err(why)) => why,
            _ => "unexpected answer from worker 0".into(),
        };
        undo()?;
        Err(ControlError::Unavailable(format!(
            "cannot journal {what} ({why}): nothing changed"
        )))
    }

    /// Takes a change back from the shards that made it (`Done(true)`) when another
    /// refused it.
    fn take_back(&self, told: &[Told], undo: impl Fn() -> Ask) -> Result<(), ControlError> {
        for (i, t) in told.iter().enumerate() {
            if matches!(t, Told::Done(true)) {
                self.ask_one(i, undo())?;
            }
        }
        Ok(())
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
            self.take_back(&told, || Ask::Unreserve(addr))?;
            return Err(ControlError::Conflict(format!(
                "{}: free it first (ctl lease-delete --address {addr}) or wait until it ends",
                refused.join("; ")
            )));
        }
        let host = reserve::host(&r);
        let what = format!("the reservation of {addr} for {host}");
        let slow = self.durably(
            Change::Reservation(addr, Some(Box::new(r.clone()))),
            &what,
            || self.unreserve_everywhere(&reg.config, addr).map(drop),
        )?;
        tracing::info!(
            "reservation added: {addr} for {host}{}",
            r.host_name
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        );
        reg.runtime.insert(addr, r);
        self.count(&reg);
        confirmed(slow, &what, true)
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
        let slow = self.durably(
            Change::Reservation(addr, None),
            &format!("the removal of {addr}"),
            || Ok(()),
        )?;
        reg.runtime.remove(&addr);
        self.count(&reg);
        let holder = self.unreserve_everywhere(&reg.config, addr)?;
        // The failover partner ends its copy when it sees the address unflagged.
        if self.failover.is_some() {
            self.ask_one(holder, Ask::TellUnreserved(addr))?;
        }
        tracing::info!("reservation removed: {addr} for {}", reserve::host(&r));
        confirmed(slow, &format!("the reservation of {addr}"), false)
    }

    pub(super) fn add_member(&self, m: ClassMember) -> Result<(), ControlError> {
        let mut reg = self.lock();
        let told = self.ask_every(|| Ask::AddMember(m.clone()))?;
        let refused = told.iter().find_map(|t| match t {
            Told::NotMember(why) => Some(why.clone()),
            _ => None,
        });
        if let Some(why) = refused {
            // Every shard runs the same classes with the same members, so all refuse
            // alike; should one have taken it anyway, it gives it back.
            self.take_back(&told, || Ask::RemoveMember(m.clone()))?;
            return Err(not_member(why));
        }
        let what = format!("the {m}");
        let slow = self.durably(Change::Member(Box::new(m.clone()), true), &what, || {
            self.ask_every(|| Ask::RemoveMember(m.clone())).map(drop)
        })?;
        tracing::info!("{m} added at run time");
        reg.members.insert(m);
        confirmed(slow, &what, true)
    }

    pub(super) fn del_member(&self, m: ClassMember) -> Result<(), ControlError> {
        let mut reg = self.lock();
        if !reg.members.contains(&m) {
            return Err(not_at_run_time(&reg.config, &m));
        }
        let what = format!("the {m}");
        let slow = self.durably(
            Change::Member(Box::new(m.clone()), false),
            &format!("the removal of {what}"),
            || Ok(()),
        )?;
        reg.members.remove(&m);
        // Every shard has it (it is in the registry), so none refuses.
        self.ask_every(|| Ask::RemoveMember(m.clone()))?;
        tracing::info!("{m} removed at run time");
        confirmed(slow, &what, false)
    }

    pub(super) fn list_members(&self, q: &MemberQuery) -> Result<MemberPage, ControlError> {
        let reg = self.lock();
        let classes = &reg.config.policy.classes;
        if let Some(name) = &q.class {
            class::matching(classes, name).map_err(not_member)?;
        }
        let file = classes.iter().flat_map(|c| {
            let listed = match &c.membership {
                Membership::Match { subclasses, .. } => subclasses.as_slice(),
                Membership::Test(_) => &[],
            };
            listed.iter().map(|s| {
                let m = ClassMember {
                    class: c.name.clone(),
                    value: s.value.clone(),
                };
                (m, Source::File)
            })
        });
        let runtime = reg.members.iter().map(|m| (m.clone(), Source::Control));
        let mut all: Vec<(ClassMember, Source)> = file
            .chain(runtime)
            .filter(|(m, _)| q.class.as_ref().is_none_or(|c| m.class == *c))
            .filter(|(m, _)| q.cursor.as_ref().is_none_or(|c| m > c))
            .collect();
        all.sort();
        let (all, more) = page(all, q.limit);
        Ok(MemberPage {
            next_cursor: more.then(|| all.last().map(|(m, _)| m.clone())).flatten(),
            members: all.iter().map(|(m, s)| MemberInfo::new(m, *s)).collect(),
        })
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
            .filter_map(|r| info(r, Source::File));
        let runtime = reg
            .runtime
            .values()
            .filter_map(|r| info(r, Source::Control));
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
        let (all, more) = page(all, q.limit);
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
