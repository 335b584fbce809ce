//! The lease journal as both backends use it: each shard's engine built, the journal in
//! the state directory opened with one writer per shard and replayed into the engines,
//! and, per datagram, the change appended and the reply released only once the journal
//! says it may leave.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::reserve::{self, Runtime};
use crate::config::{Config, Reservation, Subscriber, SubscriberKind};
use crate::control::ClassMember;
use crate::journal::{
    self, Durability, DurableWatch, Journal, Lease, MemberRecord, Record, ShardWriter,
};
use dhcp_proto::engine::{Engine, Shard};

/// The shards of a server, with their journal when it has a state directory.
pub struct Shards {
    /// Kept alive while the writers are in use; dropped after them.
    pub journal: Option<Journal>,
    pub engines: Vec<Engine>,
    pub writers: Vec<Option<ShardWriter>>,
    /// The run-time reservations the journal holds, applied to every engine.
    pub reservations: Runtime,
    /// The run-time class members the journal holds, applied to every engine.
    pub members: Members,
    /// The failover state the journal remembers.
    pub failover: Option<dhcp_proto::failover::machine::Stored>,
}

/// Builds `count` shard engines and, with a state directory, replays the journal into
/// them. `config` must have been validated.
pub fn open(config: &Config, count: u16, now: u64) -> Result<Shards, journal::Error> {
    let policy = Arc::new(config.policy.clone());
    let mut engines: Vec<Engine> = (0..count)
        .map(|index| {
            Engine::new_shard(Arc::clone(&policy), Shard { index, count }, now)
                .expect("the configuration was validated before the backend started")
        })
        .collect();
    // One table of lease-limit counters for the whole server, before any lease counts.
    if let Some((first, rest)) = engines.split_first_mut() {
        for e in rest {
            e.share_limits(first);
        }
    }
    if let Some(f) = &config.policy.failover {
        // Before the leases come back: they restore into the pools of the pair.
        let view = dhcp_proto::failover::machine::View {
            role: f.role,
            service: dhcp_proto::failover::Service::Startup,
            hba: f.hba(),
            mclt: f.mclt,
            stos: now,
            connected: false,
        };
        for e in &mut engines {
            e.set_partnership(
                view,
                f.load_balance_max_seconds.min(u32::from(u16::MAX)) as u16,
            );
        }
    }
    let Some(dir) = &config.state_dir else {
        return Ok(Shards {
            journal: None,
            engines,
            writers: (0..count).map(|_| None).collect(),
            reservations: Runtime::new(),
            members: Members::new(),
            failover: None,
        });
    };
    let started = Instant::now();
    let mut opened = Journal::open(
        dir,
        &journal::Options {
            shards: usize::from(count),
            durability: config.durability,
            segment_bytes: config.journal_segment_bytes,
            followed: config.history.is_some(),
            hold_bytes: config
                .history
                .as_ref()
                .map_or(journal::Options::default().hold_bytes, |h| h.journal_hold),
            ..journal::Options::default()
        },
    )?;
    // The next records of a reservation or member must be newer than any replayed.
    for e in &mut engines {
        e.witness(opened.state.max_stamp);
    }
    let reservations = restore_reservations(
        config,
        &mut engines,
        &opened.state,
        opened.writers.first_mut(),
        now,
    );
    // Before the leases too: a lease counts against the limits of its client's classes.
    let members = restore_members(&mut engines, &opened.state, opened.writers.first_mut(), now);
    let held: usize = engines
        .iter_mut()
        .map(|e| e.restore(opened.state.leases.values(), now))
        .sum();
    let r = &opened.recovery;
    tracing::info!(
        "journal {}: {} records replayed, {} active leases restored{}{}{}, in {} ms ({} durability)",
        dir.display(),
        r.records,
        held,
        if reservations.is_empty() {
            String::new()
        } else {
            format!(", {} run-time reservations", reservations.len())
        },
        if members.is_empty() {
            String::new()
        } else {
            format!(", {} run-time class members", members.len())
        },
        r.resharded_from
            .map(|n| format!(", redistributed from {n} to {count} shards"))
            .unwrap_or_default(),
        started.elapsed().as_millis(),
        config.durability
    );
    Ok(Shards {
        journal: Some(opened.journal),
        engines,
        writers: opened.writers.into_iter().map(Some).collect(),
        reservations,
        members,
        failover: opened
            .state
            .failover
            .as_ref()
            .map(dhcp_proto::failover::machine::Stored::from_journal),
    })
}

/// Gives every engine the run-time reservations the journal holds, before the leases
/// come back (they restore around reserved addresses). Those the configuration no longer
/// allows (it changed since they were added) are logged and removed from the journal.
fn restore_reservations(
    config: &Config,
    engines: &mut [Engine],
    state: &journal::State,
    writer: Option<&mut ShardWriter>,
    now: u64,
) -> Runtime {
    let replayed = state.sorted_reservations().into_iter().map(from_journal);
    let (runtime, refused) = reserve::accept(&config.policy, replayed);
    for e in engines.iter_mut() {
        for r in runtime.values() {
            e.restore_reservation(r.clone());
        }
    }
    let mut writer = writer;
    for (r, why) in refused {
        let Some(addr) = r.address else { continue };
        tracing::warn!(
            "journal: the run-time reservation of {addr} for {} no longer fits the configuration ({why}): removed",
            reserve::host(&r)
        );
        forget(writer.as_deref_mut(), engines, now, &addr, |stamp| {
            Record::ReservationRemoved { stamp, addr }
        });
    }
    runtime
}

/// The class members added at run time, as the control side keeps them: in class and
/// value order, the order `class-members` lists them in.
pub type Members = BTreeSet<ClassMember>;

/// Gives every engine the run-time class members the journal holds. Those whose class is
/// gone from the configuration, no longer matches by value, or now lists the value
/// itself, are logged and removed from the journal, as reservations are.
fn restore_members(
    engines: &mut [Engine],
    state: &journal::State,
    mut writer: Option<&mut ShardWriter>,
    now: u64,
) -> Members {
    let mut members = Members::new();
    for m in state.sorted_members() {
        let member = ClassMember {
            class: String::from_utf8_lossy(&m.class).into_owned(),
            value: m.value.to_vec(),
        };
        // Every engine runs the same policy with the same members, so the first one's
        // answer is every one's.
        let Some((first, rest)) = engines.split_first_mut() else {
            break;
        };
        match first.add_class_member(&member.class, &member.value) {
            Ok(()) => {
                for e in rest {
                    let _ = e.add_class_member(&member.class, &member.value);
                }
                members.insert(member);
            }
            Err(why) => {
                let what = format!("the run-time {member}");
                tracing::warn!("journal: {what} no longer fits the configuration ({why}): removed");
                forget(writer.as_deref_mut(), engines, now, &what, |stamp| {
                    Record::MemberRemoved(MemberRecord {
                        stamp,
                        class: &m.class,
                        value: &m.value,
                    })
                });
            }
        }
    }
    members
}

/// Journals the removal of something replay found no longer fits (`what` names it in the
/// log), with the next stamp of the first engine.
fn forget<'r>(
    writer: Option<&mut ShardWriter>,
    engines: &mut [Engine],
    now: u64,
    what: &dyn std::fmt::Display,
    removal: impl FnOnce(u64) -> Record<'r>,
) {
    if let (Some(w), Some(e)) = (writer, engines.first_mut()) {
        if let Err(err) = w.append(&removal(e.next_stamp(now))) {
            tracing::warn!("journal: cannot record the removal of {what}: {err}");
        }
    }
}

/// A reservation as the journal keeps it, as the engine uses it.
pub fn from_journal(r: &journal::Reservation) -> Reservation {
    let hw = r.hw.bytes();
    Reservation {
        hw_address: (r.hw.htype == 1 && hw.len() == 6).then(|| {
            let mut a = [0; 6];
            a.copy_from_slice(hw);
            a
        }),
        client_id: (!r.client_id.is_empty()).then(|| r.client_id.to_vec()),
        address: Some(r.addr),
        host_name: (!r.host_name.is_empty())
            .then(|| String::from_utf8_lossy(&r.host_name).into_owned()),
        subscriber: SubscriberKind::from_u8(r.subscriber_kind).map(|kind| Subscriber {
            kind,
            value: r.subscriber.to_vec(),
        }),
        ..Default::default()
    }
}

/// The journal record of run-time reservation `r` with `stamp`; `None` without an address.
pub fn reservation_record(r: &Reservation, stamp: u64) -> Option<journal::ReservationRecord<'_>> {
    Some(journal::ReservationRecord {
        stamp,
        addr: r.address?,
        htype: if r.hw_address.is_some() { 1 } else { 0 },
        chaddr: r.hw_address.as_ref().map_or(&[][..], |a| &a[..]),
        client_id: r.client_id.as_deref().unwrap_or_default(),
        host_name: r.host_name.as_deref().unwrap_or_default().as_bytes(),
        subscriber_kind: r.subscriber.as_ref().map_or(0, |s| s.kind as u8),
        subscriber: r.subscriber.as_ref().map_or(&[][..], |s| &s.value[..]),
    })
}

/// One shard's journal as its driver sees it: appends the engine's change after each
/// datagram and says which sequence number the reply must wait for.
pub struct Committer {
    writer: Option<ShardWriter>,
    durability: Durability,
    /// Cleared while appends fail, for the control socket's status.
    healthy: Arc<AtomicBool>,
    /// When the last append failure was logged: a full disk is reported once a second,
    /// not once per client.
    complained: Option<Instant>,
    /// Failover: our own lease changes, for the partner.
    to_partner: Option<Outbox>,
}

/// A shard's lease changes on their way to the failover partner.
pub type Outbox = Arc<crossbeam_queue::ArrayQueue<Lease>>;

/// What may happen to a reply once the change it announces was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Nothing changed: send it now.
    Empty,
    /// Send it now.
    Now,
    /// Send it once the journal's durable sequence reaches this.
    After(u64),
    /// Do not send it: the lease could not be recorded.
    Never,
}

impl Committer {
    pub fn new(writer: Option<ShardWriter>, durability: Durability) -> Self {
        Committer {
            writer,
            durability,
            healthy: Arc::new(AtomicBool::new(true)),
            complained: None,
            to_partner: None,
        }
    }

    /// Appends a record other than a lease change (a run-time reservation) and returns its
    /// sequence number; `None` without a journal.
    pub fn append(&mut self, rec: &journal::Record<'_>) -> Option<Result<u64, journal::Error>> {
        let writer = self.writer.as_mut()?;
        let appended = writer.append(rec);
        self.set_healthy(appended.is_ok());
        Some(appended)
    }

    /// In a shard's thread: appends the record of run-time reservation `r` of `addr`, or of
    /// its removal when `r` is `None`, with this shard's next stamp. Its sequence number, or
    /// `None` without a journal.
    pub fn journal_reservation(
        &mut self,
        engine: &mut Engine,
        addr: Ipv4Addr,
        r: Option<&Reservation>,
        now: u64,
    ) -> Result<Option<u64>, String> {
        self.journal_with(engine, now, |stamp| {
            Ok(match r {
                Some(r) => Record::ReservationAdded(
                    reservation_record(r, stamp).ok_or("a reservation without an address")?,
                ),
                None => Record::ReservationRemoved { stamp, addr },
            })
        })
    }

    /// In a shard's thread: appends the record of run-time class member `m` added, or
    /// removed when not `added`, as `journal_reservation` does.
    pub fn journal_member(
        &mut self,
        engine: &mut Engine,
        m: &ClassMember,
        added: bool,
        now: u64,
    ) -> Result<Option<u64>, String> {
        self.journal_with(engine, now, |stamp| {
            let m = MemberRecord {
                stamp,
                class: m.class.as_bytes(),
                value: &m.value,
            };
            Ok(if added {
                Record::MemberAdded(m)
            } else {
                Record::MemberRemoved(m)
            })
        })
    }

    /// Appends the record `record` makes with this shard's next stamp.
    fn journal_with<'r>(
        &mut self,
        engine: &mut Engine,
        now: u64,
        record: impl FnOnce(u64) -> Result<Record<'r>, &'static str>,
    ) -> Result<Option<u64>, String> {
        let rec = record(engine.next_stamp(now))?;
        match self.append(&rec) {
            None => Ok(None),
            Some(Ok(seq)) => Ok(Some(seq)),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    /// For another thread to wait until what this shard appended is durable.
    pub fn watch(&self) -> Option<DurableWatch> {
        self.writer.as_ref().map(ShardWriter::watch)
    }

    /// Failover on: every change of ours also goes to the partner through `outbox`.
    pub fn send_to_partner(&mut self, outbox: Outbox) {
        self.to_partner = Some(outbox);
    }

    /// Tells the failover partner of a binding without journaling it (a reservation's,
    /// whose own record the journal keeps).
    pub fn tell_partner(&self, lease: Lease) {
        if let Some(outbox) = &self.to_partner {
            let _ = outbox.push(lease);
        }
    }

    /// Records every change the failover rules made on their own (pool balancing,
    /// claiming the partner's pool, a partner's binding), and says when all of them are
    /// on disk: `Never` when one could not be appended, else what the last one says.
    pub fn record_all(&mut self, engine: &mut Engine, now: u64) -> Release {
        let mut all = Release::Empty;
        loop {
            match (self.record(engine, now), all) {
                (Release::Empty, _) => return all,
                (_, Release::Never) => {}
                (r, _) => all = r,
            }
        }
    }

    /// Whether the last append succeeded, as other threads may read it.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    fn set_healthy(&self, ok: bool) {
        if self.healthy.load(Ordering::Relaxed) != ok {
            self.healthy.store(ok, Ordering::Relaxed);
        }
    }

    /// Records the change the engine's last `handle` made, if any, and says when its
    /// reply may leave. Offers and NAKs change nothing the journal keeps.
    pub fn record(&mut self, engine: &mut Engine, now: u64) -> Release {
        let from_partner = engine.change_from_partner();
        let Some(rec) = engine.take_change(now) else {
            return Release::Empty;
        };
        if let Some(outbox) = &self.to_partner {
            if !from_partner && outbox.push(Lease::from_record(&rec)).is_err() {
                self.complain(format_args!(
                    "the failover link is behind: the change of {} waits for the partner's next update request",
                    rec.addr
                ));
            }
        }
        let Some(writer) = &mut self.writer else {
            return Release::Now;
        };
        let appended = writer.append_lease(&rec);
        self.set_healthy(appended.is_ok());
        match appended {
            Ok(seq) if self.durability == Durability::Sync => Release::After(seq),
            Ok(_) => Release::Now,
            Err(e) => {
                self.complain(format_args!(
                    "cannot record the lease of {} ({e}): not acknowledging leases until the journal accepts them again",
                    rec.addr
                ));
                Release::Never
            }
        }
    }

    /// Journals the failover state, durably: the machine acts on a state only once it
    /// would survive a crash (dhcpd's write_failover_state then commit_leases).
    pub fn record_failover(
        &mut self,
        stored: &dhcp_proto::failover::machine::Stored,
        engine: &mut Engine,
        now: u64,
    ) -> std::io::Result<()> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        let stamp = engine.next_stamp(now);
        let name = engine
            .policy()
            .failover
            .as_ref()
            .map_or(&[][..], |f| f.name.as_bytes());
        let seq = writer
            .append_failover(&stored.as_record(name, stamp))
            .map_err(std::io::Error::other)?;
        if writer.wait_durable(seq, Duration::from_secs(2)) {
            Ok(())
        } else {
            Err(std::io::Error::other(
                "the journal did not make it durable in 2 s",
            ))
        }
    }

    /// Logs a persistent trouble once a second, not once per client.
    fn complain(&mut self, what: std::fmt::Arguments<'_>) {
        if self
            .complained
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            tracing::error!("{what}");
            self.complained = Some(Instant::now());
        }
    }

    /// The highest sequence number on disk; everything when there is no journal.
    pub fn durable(&self) -> u64 {
        self.writer.as_ref().map_or(u64::MAX, ShardWriter::durable)
    }

    /// A descriptor that becomes readable when more records are durable.
    pub fn wakeup_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.writer.as_ref().map(|w| w.wakeup_fd().as_raw_fd())
    }

    pub fn clear_wakeup(&self) {
        if let Some(w) = &self.writer {
            w.clear_wakeup();
        }
    }
}
