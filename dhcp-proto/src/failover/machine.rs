//! The failover state machine of one partnership, without I/O. Link events, partner
//! messages, our own lease changes and the clock go in; messages to send, states to
//! record and bindings for the workers to apply come out of `poll`. The transitions are
//! those of draft-ietf-dhc-failover-12 §9 as ISC dhcpd 4.4 makes them, so a dhcpd
//! partner sees the behaviour it expects; the log lines use dhcpd's words.
//!
//! The machine never holds a lease table: the workers own the leases. It keeps what is
//! in flight between the pair (bindings to send, bindings sent and not yet acknowledged)
//! and asks the workers, through outputs, for what only they know.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

// hashbrown's default hasher (foldhash, seeded per process): these maps are touched
// several times per lease on the link's thread, where std's SipHash showed in profiles.
use hashbrown::{HashMap, HashSet};

use tracing::{error, info, warn};

use super::message::{Connect, ConnectAck, Envelope, Msg, Reject};
use super::wire::RejectReason;
use super::{Hba, Role, ServerState, Service};
use crate::lease::{BindingState, Lease};

/// Seconds the partner has to send its state after we start, before we act alone.
const STARTUP_WAIT: u64 = 15;
/// Seconds a new connection has to complete CONNECT / CONNECTACK.
const CONNECT_WAIT: u64 = 15;
/// Largest clock difference the pair accepts at connect (dhcpd's limit).
const MAX_SKEW: u64 = 60;
/// Seconds a graceful stop waits for the partner to take over (dhcpd's shutdown
/// countdown gives it five).
const SHUTDOWN_WAIT: u64 = 5;
const VENDOR: &str = concat!("dhcp-server-", env!("CARGO_PKG_VERSION"));

/// What the operator configured for this partnership.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub name: String,
    pub role: Role,
    /// Maximum client lead time, seconds. The secondary takes the primary's.
    pub mclt: u32,
    /// Load balancing; the secondary takes the primary's.
    pub hba: Hba,
    /// How many of our BNDUPDs the partner may leave unacknowledged (we tell it ours).
    pub max_unacked: u32,
    /// Seconds of silence after which the link is declared dead.
    pub max_response_delay: u32,
    /// Seconds in communications-interrupted before partner-down on our own; 0: never.
    pub auto_partner_down: u32,
    pub balancing: Balancing,
}

/// Pool rebalancing as dhcpd schedules and measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balancing {
    /// Percent of the free addresses by which the pair's shares may differ; past twice
    /// that short of its share, a server asks its partner with POOLREQ.
    pub misbalance: u8,
    /// Percent of the free addresses a server may keep beyond its share.
    pub ownership: u8,
    /// Seconds between two rebalancing runs, at least and at most.
    pub min: u32,
    pub max: u32,
}

/// One pool as a rebalancing run found it, summed over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBalance {
    pub pool: crate::policy::AddrRange,
    /// Addresses in the pool, whatever their state.
    pub total: u32,
    /// Free addresses that were ours and the partner's, before the run.
    pub ours: u32,
    pub theirs: u32,
    /// How many of ours the run gave the partner.
    pub moved: u32,
    /// Seconds since our oldest free address and the partner's last ended (0: none).
    pub ours_age: u64,
    pub theirs_age: u64,
}

/// Why the pools are rebalanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebalance {
    /// Entering normal.
    Normal,
    /// The rebalancing timer: the only run that may send a POOLREQ.
    Timer,
    /// The partner's POOLREQ with this xid, answered with POOLRESP.
    Request(u32),
}

/// The failover state that must survive a restart (journaled on every change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub me: ServerState,
    pub me_stos: u64,
    pub partner: ServerState,
    pub partner_stos: u64,
    pub mclt: u32,
}

/// What the workers need to decide for each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub service: Service,
    pub hba: Hba,
    pub mclt: u32,
    /// When this server entered its current state.
    pub stos: u64,
    /// The link is up: bindings reach the partner as they are made.
    pub connected: bool,
}

impl View {
    /// The load-balancing rule as the XDP program applies it: on while cooperating,
    /// with this server's buckets. No server identifiers: the loader adds those of its
    /// interface, and the engine has its own test for a REQUEST naming another server.
    pub fn balance(&self, max_secs: u16) -> dhcp_ebpf_common::Balance {
        let mut mine = self.hba.0;
        if self.role == Role::Secondary {
            for b in &mut mine {
                *b = !*b;
            }
        }
        dhcp_ebpf_common::Balance {
            on: self.service == Service::Cooperating,
            max_secs,
            mine,
            server_ids: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(Envelope),
    /// Drop the link (the driver reports `link_down` once it is closed).
    Close(String),
    /// Journal this before anything else happens.
    Record(Stored),
    /// The workers' rules changed.
    View(View),
    /// The partner's binding for the workers to apply; answer with `applied`. `conflict`
    /// asks for the rules of a pair in conflict resolution rather than of normal.
    Apply {
        xid: u32,
        lease: Lease,
        conflict: bool,
    },
    /// The partner acknowledged our binding: its potential expiry is the tsfp the lease
    /// times may now count on.
    Acked(Lease),
    /// The partner asked for bindings: every one (`all`) or those it has not
    /// acknowledged. Answer with `collected`.
    Collect {
        all: bool,
    },
    /// Hand the partner its fair share of the free addresses, keeping at most
    /// `ownership` percent more (the changes come back as lease changes); answer with
    /// `balanced`.
    Balance {
        why: Rebalance,
        ownership: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    Opening {
        since: u64,
    },
    Up {
        partner_max_unacked: u32,
        partner_delay: u32,
        last_rx: u64,
        last_tx: u64,
    },
}

/// Numbers for the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub role: Role,
    pub me: ServerState,
    pub me_stos: u64,
    pub partner: ServerState,
    pub partner_stos: u64,
    pub service: Service,
    pub connected: bool,
    pub mclt: u32,
    /// Bindings waiting to be sent, and sent but unacknowledged.
    pub queued: usize,
    pub unacked: usize,
}

pub struct Machine {
    params: Params,
    me: ServerState,
    me_stos: u64,
    /// The state startup will return to.
    saved: ServerState,
    partner: ServerState,
    partner_stos: u64,
    service: Service,
    link: Link,
    xid: u32,
    /// Bindings to send, oldest first, each address once with its newest binding.
    queue: VecDeque<Ipv4Addr>,
    pending: HashMap<Ipv4Addr, Lease>,
    /// Sent and not yet acknowledged: the xid it went with.
    flying: HashMap<Ipv4Addr, (u32, Lease)>,
    /// Bindings the partner sent that the workers are applying.
    applying: HashMap<u32, Lease>,
    /// The partner asked for updates: UPDDONE goes once the workers have handed them
    /// over (`collecting` ends) and every one is acknowledged.
    owe_done: bool,
    collecting: bool,
    startup_until: Option<u64>,
    recover_at: Option<u64>,
    /// Partner bindings for addresses in none of our pools: the pair's pools differ.
    foreign_addresses: u64,
    auto_down_at: Option<u64>,
    /// A graceful stop told the partner and waits for it until then.
    stopping_until: Option<u64>,
    /// A graceful stop the partner took over: the addresses whose updates it had not yet
    /// acknowledged at that moment. The stop waits for these only: a stopping server
    /// grants nothing, and what it changes afterwards follows from the partner's own
    /// updates (a client the partner rebinds leaves its old binding here), which under
    /// load never stop coming, so waiting for an empty queue could last the whole wait.
    stop_owed: Option<HashSet<Ipv4Addr>>,
    /// The next rebalancing run, and the last one.
    balance_at: Option<u64>,
    last_balance: u64,
    out: VecDeque<Output>,
}

impl Machine {
    /// A machine in startup. Without a stored state the server has no memory of its
    /// bindings and starts towards recover, to learn them all from the partner.
    pub fn new(params: Params, stored: Option<Stored>, now: u64) -> Self {
        let (saved, me_stos, partner, partner_stos, mclt) = match stored {
            Some(s) => (s.me, s.me_stos, s.partner, s.partner_stos, s.mclt),
            None => (
                ServerState::Recover,
                now,
                ServerState::Unknown,
                now,
                params.mclt,
            ),
        };
        let saved = match saved {
            ServerState::Startup | ServerState::Unknown => ServerState::Recover,
            // Stopped before the stop could finish (dhcpd would stay in shutdown for
            // good): pick up where a finished stop ends, recovering from the partner.
            ServerState::Shutdown => {
                info!(
                    "failover peer {}: stopped while shutting down: recovering from the partner",
                    params.name
                );
                ServerState::Recover
            }
            other => other,
        };
        let mut params = params;
        if params.role == Role::Secondary {
            params.mclt = mclt;
        }
        let mut m = Machine {
            params,
            me: saved,
            me_stos,
            saved,
            partner,
            partner_stos,
            service: Service::Startup,
            link: Link::Down,
            xid: 1,
            queue: VecDeque::new(),
            pending: HashMap::new(),
            flying: HashMap::new(),
            applying: HashMap::new(),
            owe_done: false,
            collecting: false,
            startup_until: None,
            recover_at: None,
            foreign_addresses: 0,
            auto_down_at: None,
            stopping_until: None,
            stop_owed: None,
            balance_at: None,
            last_balance: 0,
            out: VecDeque::new(),
        };
        m.set_state(ServerState::Startup, now);
        m
    }

    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn role(&self) -> Role {
        self.params.role
    }

    pub fn connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    pub fn view(&self) -> View {
        View {
            role: self.params.role,
            service: self.service,
            hba: self.params.hba,
            mclt: self.params.mclt,
            stos: self.me_stos,
            connected: self.connected(),
        }
    }

    pub fn status(&self) -> Status {
        Status {
            name: self.params.name.clone(),
            role: self.params.role,
            me: self.me,
            me_stos: self.me_stos,
            partner: self.partner,
            partner_stos: self.partner_stos,
            service: self.service,
            connected: self.connected(),
            mclt: self.params.mclt,
            queued: self.queue.len(),
            unacked: self.flying.len(),
        }
    }

    /// The earliest time `tick` has something to do.
    pub fn next_timeout(&self) -> Option<u64> {
        let link = match self.link {
            Link::Down => None,
            Link::Opening { since } => Some(since + CONNECT_WAIT),
            Link::Up {
                partner_delay,
                last_rx,
                last_tx,
                ..
            } => Some(
                (last_tx + contact_interval(partner_delay))
                    .min(last_rx + u64::from(self.params.max_response_delay)),
            ),
        };
        [
            link,
            self.startup_until,
            self.recover_at,
            self.auto_down_at,
            self.balance_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A TCP connection to the partner is open. The primary speaks first (dhcpd sends
    /// CONNECT only as primary), so the secondary only listens.
    pub fn link_up(&mut self, now: u64) {
        self.link = Link::Opening { since: now };
        if self.params.role == Role::Primary {
            let connect = Msg::Connect(Connect {
                name: self.params.name.clone(),
                max_unacked: self.params.max_unacked,
                receive_timer: self.params.max_response_delay,
                mclt: Some(self.params.mclt),
                hba: Some(self.params.hba),
                vendor: VENDOR.into(),
            });
            self.send_raw(connect, now);
        }
    }

    /// The connection closed, for whatever reason.
    pub fn link_down(&mut self, now: u64) {
        let was_up = self.connected();
        self.link = Link::Down;
        // Their acknowledgements would go nowhere; the partner sends them again.
        self.applying.clear();
        if was_up {
            info!("failover peer {}: disconnected", self.params.name);
            self.publish_view();
            self.disconnected(now);
        }
    }

    pub fn tick(&mut self, now: u64) {
        match self.link {
            Link::Opening { since } if now >= since + CONNECT_WAIT => {
                info!("failover peer {}: link startup timeout", self.params.name);
                self.close("link startup timeout");
            }
            Link::Up {
                partner_delay,
                last_rx,
                last_tx,
                ..
            } => {
                if now >= last_rx + u64::from(self.params.max_response_delay) {
                    error!("timeout waiting for failover peer {}", self.params.name);
                    self.close("timeout waiting for failover peer");
                    return;
                }
                if now >= last_tx + contact_interval(partner_delay) {
                    self.send(Msg::Contact, now);
                }
            }
            _ => {}
        }
        if self.startup_until.is_some_and(|t| now >= t) {
            self.startup_until = None;
            self.disconnected(now);
        }
        if self.recover_at.is_some_and(|t| now >= t) {
            self.recover_at = None;
            if self.me == ServerState::RecoverWait {
                self.set_state(ServerState::RecoverDone, now);
            }
        }
        if self.balance_at.is_some_and(|t| now >= t) {
            self.balance_at = None;
            if self.me == ServerState::Normal {
                self.balance(Rebalance::Timer);
            }
        }
        if self.auto_down_at.is_some_and(|t| now >= t) {
            self.auto_down_at = None;
            if self.me == ServerState::CommunicationsInterrupted {
                warn!(
                    "failover peer {}: partner unreachable for {} s, entering partner-down on my own",
                    self.params.name, self.params.auto_partner_down
                );
                self.set_state(ServerState::PartnerDown, now);
            }
        }
    }

    /// The operator declares the partner down: it must really be down, as the pair
    /// cannot check it (the draft leaves this to the operator).
    pub fn partner_down(&mut self, now: u64) -> Result<(), Refused> {
        match self.current() {
            ServerState::PartnerDown => Ok(()),
            ServerState::Normal if self.connected() => {
                Err(Refused::PartnerIsUp(self.params.name.clone()))
            }
            _ => {
                self.set_state(ServerState::PartnerDown, now);
                Ok(())
            }
        }
    }

    /// A graceful stop begins (dhcpd's shutdown countdown): from normal, move to
    /// shutdown, which the partner hears and answers by moving to partner-down, so it
    /// serves every client at once. In any other state there is no partner to hand over
    /// to, and the stop is immediate.
    pub fn stop(&mut self, now: u64) {
        if self.me == ServerState::Normal && self.connected() {
            self.set_state(ServerState::Shutdown, now);
            self.stopping_until = Some(now + SHUTDOWN_WAIT);
            self.stop_owed = None;
            self.note_takeover();
        }
    }

    /// Whether a stop may finish: the partner took over, or is stopping too (both
    /// servers stopped at once: nobody is left to hand over to, and waiting for each
    /// other would only use up the time), and acknowledged every update (dhcpd's
    /// countdown checks once a second, which gives the acknowledgements time to follow
    /// the partner's state); the link is gone; or the stop had its time.
    pub fn stopped(&self, now: u64) -> bool {
        self.me != ServerState::Shutdown
            || !self.connected()
            || self.partner_knows_all()
            || self.stopping_until.is_none_or(|t| now >= t)
    }

    /// Stopping, with a partner that took over or is stopping too and has acknowledged
    /// every update of ours it owed when it did: it knows every lease we made. (The
    /// take-over is noted the moment it happens, in `stop` or on the partner's STATE.)
    fn partner_knows_all(&self) -> bool {
        self.partner_took_over() && self.stop_owed.as_ref().is_some_and(HashSet::is_empty)
    }

    fn partner_took_over(&self) -> bool {
        self.me == ServerState::Shutdown
            && matches!(
                self.partner,
                ServerState::PartnerDown | ServerState::Shutdown
            )
    }

    /// Notes, once, what the partner still owed us acknowledgements for when it took over.
    fn note_takeover(&mut self) {
        if self.stop_owed.is_none() && self.partner_took_over() {
            let owed = self
                .queue
                .iter()
                .chain(self.flying.keys())
                .copied()
                .collect();
            self.stop_owed = Some(owed);
        }
    }

    /// The stop finishes: the link goes without another word, and the journal keeps
    /// recover, as dhcpd's exit does, so the next start learns from the partner what
    /// happened meanwhile. With the partner in partner-down and nothing of ours left
    /// unsent, the partner knows every lease we made: the restart need not wait out
    /// the MCLT.
    pub fn finish_stop(&mut self, now: u64) {
        if self.me != ServerState::Shutdown {
            return;
        }
        self.link = Link::Down;
        self.stopping_until = None;
        // After the move: it decides on the partner knowing every lease, by what it owed.
        self.set_state(ServerState::Recover, now);
        self.stop_owed = None;
    }

    /// Ask the partner for every binding again (an operator's full resync).
    pub fn resync(&mut self, now: u64) -> Result<(), Refused> {
        if !self.connected() {
            return Err(Refused::NotConnected(self.params.name.clone()));
        }
        self.send(Msg::UpdReqAll, now);
        info!("Sent update request all message to {}", self.params.name);
        Ok(())
    }

    /// One of our bindings changed: the partner must hear of it.
    pub fn lease_changed(&mut self, lease: Lease, now: u64) {
        // A newer binding supersedes one in flight; its late ack will not match.
        self.flying.remove(&lease.addr);
        self.enqueue(lease);
        self.send_updates(now);
    }

    /// Queues a binding for the partner, unless a newer one of the address (by the
    /// shards' Lamport stamps) waits already: a snapshot taken for an update request
    /// and a change the shard made just before it can arrive in either order.
    fn enqueue(&mut self, lease: Lease) {
        let addr = lease.addr;
        match self.pending.get(&addr) {
            Some(waiting) if waiting.stamp > lease.stamp => {}
            Some(_) => {
                self.pending.insert(addr, lease);
            }
            None => {
                self.pending.insert(addr, lease);
                self.queue.push_back(addr);
            }
        }
    }

    /// The workers applied (or refused) the partner's binding `xid`: `held` is what they
    /// now hold for the address.
    pub fn applied(&mut self, xid: u32, result: Result<Lease, Reject>, now: u64) {
        let Some(sent) = self.applying.remove(&xid) else {
            return;
        };
        let msg = match result {
            Ok(held) => Msg::BndAck(held, None),
            Err(reject) => {
                if reject.reason == RejectReason::IllegalIpAddr {
                    self.foreign_addresses += 1;
                    if self.foreign_addresses.is_power_of_two() {
                        error!(
                            "failover peer {}: the partner's pools hold {}, ours do not ({} such addresses so far): configure the same pools on both servers",
                            self.params.name, sent.addr, self.foreign_addresses
                        );
                    }
                }
                Msg::BndAck(sent, Some(reject))
            }
        };
        self.emit(xid, msg, now);
    }

    /// The workers handed over the bindings a `Collect` asked for.
    pub fn collected(&mut self, leases: Vec<Lease>, now: u64) {
        self.collecting = false;
        let n = leases.len();
        for lease in leases {
            self.flying.remove(&lease.addr);
            self.enqueue(lease);
        }
        info!("failover peer {}: sending {n} bindings", self.params.name);
        self.send_updates(now);
        self.maybe_done(now);
    }

    /// The workers rebalanced the pools (dhcpd's pool_dobalance, in its words): each
    /// pool is logged, the partner is asked for addresses when the timer's run finds us
    /// short by more than twice max-lease-misbalance, a POOLREQ is answered, and the
    /// next run is scheduled.
    pub fn balanced(&mut self, why: Rebalance, pools: &[PoolBalance], now: u64) {
        let b = self.params.balancing;
        let primary = self.params.role == Role::Primary;
        let mut ask = false;
        let mut moved = 0;
        if self.me == ServerState::Normal {
            self.last_balance = now;
            self.balance_at = None;
        }
        let normal = self.me == ServerState::Normal;
        for p in pools.iter().filter(|_| normal) {
            let (ours, theirs) = (i64::from(p.ours), i64::from(p.theirs));
            let lts = (ours - theirs) / 2;
            let total = ours + theirs;
            let thresh = (total * i64::from(b.misbalance) + 50) / 100;
            let hold = (total * i64::from(b.ownership) + 50) / 100;
            let panic = if thresh == 0 { -1 } else { -2 * thresh };
            let short = why == Rebalance::Timer && lts < panic;
            ask |= short;
            let (free, backup) = if primary {
                (ours, theirs)
            } else {
                (theirs, ours)
            };
            info!(
                "balancing pool {}  total {}  free {free}  backup {backup}  lts {lts}  max-own (+/-){hold}{}",
                p.pool,
                p.total,
                if short { "  (requesting peer rebalance!)" } else { "" }
            );
            let gave = i64::from(p.moved);
            moved += p.moved;
            let lts = lts - gave;
            let (free, backup) = if primary {
                (free - gave, backup + gave)
            } else {
                (free + gave, backup - gave)
            };
            let line = format!(
                "pool {}  total {}  free {free}  backup {backup}  lts {lts}  max-misbal {thresh}",
                p.pool, p.total
            );
            if lts > thresh {
                error!("IMBALANCED {line}");
            } else {
                info!("balanced {line}");
            }
            self.pool_check(p, now);
        }
        if let Rebalance::Request(xid) = why {
            if moved == 0 {
                info!(
                    "peer {}: Got POOLREQ, answering negatively!  Peer may be out of leases or database inconsistent.",
                    self.params.name
                );
            }
            self.emit(xid, Msg::PoolResp { leases: moved }, now);
        }
        if ask {
            self.send(Msg::PoolReq, now);
        }
    }

    fn balance(&mut self, why: Rebalance) {
        let ownership = self.params.balancing.ownership;
        self.out.push_back(Output::Balance { why, ownership });
    }

    /// When to rebalance next (dhcpd's pool_check): a pool is expected to run dry about
    /// as long from now as its oldest free address has waited, and to need balancing
    /// after max-lease-misbalance of that (twice as long for our own pool, which makes
    /// us ask only at twice the misbalance); no sooner than min-balance after the last
    /// run, no later than max-balance from now; only ever brought forward.
    fn pool_check(&mut self, p: &PoolBalance, now: u64) {
        let b = self.params.balancing;
        let part = |age: u64| (age * u64::from(b.misbalance) + 50) / 100;
        let (ours, theirs) = (part(p.ours_age) * 2, part(p.theirs_age));
        let mut at = now + ours.min(theirs).min(u64::from(b.max));
        if self.last_balance != 0 {
            at = at.max(self.last_balance + u64::from(b.min));
        }
        // dhcpd adds up to 4 s at random, so the partners' runs seldom meet.
        at += u64::from(self.xid % 5);
        if self.balance_at.is_none_or(|t| at < t) {
            self.balance_at = Some(at);
        }
    }

    pub fn receive(&mut self, env: Envelope, now: u64) {
        if let Link::Up { last_rx, .. } = &mut self.link {
            *last_rx = now;
        }
        match (self.link, env.msg) {
            (Link::Down, _) => {}
            (Link::Opening { .. }, Msg::Connect(c)) => self.on_connect(env.xid, env.time, c, now),
            (Link::Opening { .. }, Msg::ConnectAck(a)) => self.on_connect_ack(env.time, a, now),
            (Link::Opening { .. }, Msg::Disconnect(r)) | (Link::Up { .. }, Msg::Disconnect(r)) => {
                error!(
                    "Failover DISCONNECT from {}: {}",
                    self.params.name,
                    describe(&r)
                );
                self.close("partner disconnected");
            }
            (Link::Opening { .. }, other) => {
                warn!(
                    "failover peer {}: {} before the connection was accepted",
                    self.params.name,
                    other.name()
                );
                self.close("message before connect");
            }
            (Link::Up { .. }, Msg::Connect(_)) | (Link::Up { .. }, Msg::ConnectAck(_)) => {
                self.emit(
                    env.xid,
                    Msg::Disconnect(Reject::new(
                        RejectReason::DuplicateConnection,
                        "already connected",
                    )),
                    now,
                );
                self.close("duplicate connect");
            }
            (Link::Up { .. }, Msg::State { state, startup, .. }) => {
                self.partner_state(state, startup, now);
                self.note_takeover();
            }
            (Link::Up { .. }, Msg::Contact) => {}
            (Link::Up { .. }, Msg::BndUpd(lease)) => self.on_bind_update(env.xid, lease, now),
            (Link::Up { .. }, Msg::BndAck(lease, reject)) => {
                self.on_bind_ack(env.xid, lease, reject, now)
            }
            (Link::Up { .. }, Msg::UpdReq) => self.on_update_request(false),
            (Link::Up { .. }, Msg::UpdReqAll) => self.on_update_request(true),
            (Link::Up { .. }, Msg::UpdDone) => self.update_done(now),
            (Link::Up { .. }, Msg::PoolReq) => self.balance(Rebalance::Request(env.xid)),
            (Link::Up { .. }, Msg::PoolResp { leases }) => {
                info!("pool response: {leases} leases")
            }
        }
    }

    fn on_connect(&mut self, xid: u32, time: u32, c: Connect, now: u64) {
        let refuse = if c.name != self.params.name {
            Some(Reject::new(
                RejectReason::InvalidPartner,
                format!(
                    "remote failover relationship name {} does not match",
                    c.name
                ),
            ))
        } else if self.params.role == Role::Primary {
            Some(Reject::new(
                RejectReason::InvalidPartner,
                "both servers are configured as primary",
            ))
        } else if skewed(time, now) {
            Some(Reject::new(
                RejectReason::TimeMismatch,
                "time offset too large",
            ))
        } else if c.mclt.is_none() {
            Some(Reject::new(RejectReason::InvalidMclt, "no MCLT provided"))
        } else if c.hba.is_none() {
            Some(Reject::new(RejectReason::HbaConflict, "invalid HBA"))
        } else {
            None
        };
        let ack = |reject| {
            Msg::ConnectAck(ConnectAck {
                name: Some(self.params.name.clone()),
                max_unacked: Some(self.params.max_unacked),
                receive_timer: Some(self.params.max_response_delay),
                vendor: VENDOR.into(),
                reject,
            })
        };
        if let Some(r) = refuse {
            error!("Failover CONNECT from {}: {}", c.name, r.message);
            let msg = ack(Some(r));
            self.emit(xid, msg, now);
            self.close("connect refused");
            return;
        }
        let msg = ack(None);
        self.emit(xid, msg, now);
        if let (Some(mclt), Some(hba)) = (c.mclt, c.hba) {
            if mclt != self.params.mclt || hba != self.params.hba {
                self.params.mclt = mclt;
                self.params.hba = hba;
                self.publish_view();
            }
        }
        self.established(c.max_unacked, c.receive_timer, now);
    }

    fn on_connect_ack(&mut self, time: u32, a: ConnectAck, now: u64) {
        if let Some(r) = &a.reject {
            error!(
                "Failover CONNECT to {} rejected: {}",
                self.params.name,
                describe(r)
            );
            self.close("connect rejected");
            return;
        }
        let problem = match &a.name {
            None => Some((
                RejectReason::InvalidPartner,
                "missing relationship-name".into(),
            )),
            Some(n) if *n != self.params.name => Some((
                RejectReason::InvalidPartner,
                format!("remote failover relationship name {n} does not match"),
            )),
            Some(_) if skewed(time, now) => Some((
                RejectReason::TimeMismatch,
                "time offset too large".to_string(),
            )),
            Some(_) => None,
        };
        if let Some((code, message)) = problem {
            error!("Failover CONNECTACK from {}: {message}", self.params.name);
            self.send_raw(Msg::Disconnect(Reject::new(code, message)), now);
            self.close("connect-ack refused");
            return;
        }
        self.established(
            a.max_unacked.unwrap_or(self.params.max_unacked),
            a.receive_timer.unwrap_or(self.params.max_response_delay),
            now,
        );
    }

    fn established(&mut self, partner_max_unacked: u32, partner_delay: u32, now: u64) {
        self.link = Link::Up {
            partner_max_unacked: partner_max_unacked.max(1),
            partner_delay: partner_delay.max(1),
            last_rx: now,
            last_tx: now,
        };
        info!("failover peer {}: connected", self.params.name);
        self.publish_view();
        self.send_state(now);
        match self.me {
            ServerState::Recover => self.request_all(now),
            ServerState::PotentialConflict if self.params.role == Role::Primary => {
                self.send(Msg::UpdReq, now)
            }
            _ => {}
        }
        self.send_updates(now);
    }

    fn on_bind_update(&mut self, xid: u32, lease: Lease, now: u64) {
        if let Some((_, ours)) = self.flying.get(&lease.addr) {
            if ours_is_better(ours, &lease, self.params.role) {
                self.emit(
                    xid,
                    Msg::BndAck(
                        lease,
                        Some(Reject::new(
                            RejectReason::LessCriticalBindInfo,
                            "incoming update is less critical than outgoing update",
                        )),
                    ),
                    now,
                );
                return;
            }
            // Theirs wins: ours is withdrawn (its ack, if any, will not match), which
            // frees room in the window and may finish an update request. A stop owes
            // nothing more for it: the partner holds a newer binding than ours.
            self.flying.remove(&lease.addr);
            if let Some(owed) = &mut self.stop_owed {
                owed.remove(&lease.addr);
            }
            self.send_updates(now);
            self.maybe_done(now);
        }
        self.applying.insert(xid, lease.clone());
        self.out.push_back(Output::Apply {
            xid,
            lease,
            conflict: self.me != ServerState::Normal,
        });
    }

    fn on_bind_ack(&mut self, xid: u32, acked: Lease, reject: Option<Reject>, now: u64) {
        match self.flying.get(&acked.addr) {
            Some((sent, _)) if *sent == xid => {}
            _ => return,
        }
        let (_, mut ours) = self.flying.remove(&acked.addr).expect("checked above");
        if let Some(owed) = &mut self.stop_owed {
            owed.remove(&acked.addr);
        }
        match reject {
            // Crossing updates: the partner kept its own, as the rules say it must.
            Some(r) if r.reason == RejectReason::LessCriticalBindInfo => info!(
                "bind update on {} from {} rejected: {}",
                acked.addr,
                self.params.name,
                describe(&r)
            ),
            Some(r) => error!(
                "bind update on {} from {} rejected: {}",
                acked.addr,
                self.params.name,
                describe(&r)
            ),
            None => {
                // The partner now knows this binding up to its potential expiry.
                ours.tsfp = if acked.tstp != 0 {
                    acked.tstp
                } else {
                    ours.tstp
                };
                ours.atsfp = ours.tsfp;
                self.out.push_back(Output::Acked(ours));
            }
        }
        self.send_updates(now);
        self.maybe_done(now);
    }

    fn on_update_request(&mut self, all: bool) {
        info!(
            "Update request{} from {}: collecting bindings",
            if all { " all" } else { "" },
            self.params.name
        );
        self.owe_done = true;
        self.collecting = true;
        self.out.push_back(Output::Collect { all });
    }

    /// UPDDONE goes once the workers handed over what was asked and it was all acked.
    fn maybe_done(&mut self, now: u64) {
        if self.owe_done && !self.collecting && self.queue.is_empty() && self.flying.is_empty() {
            self.owe_done = false;
            self.send(Msg::UpdDone, now);
        }
    }

    fn send_updates(&mut self, now: u64) {
        let Link::Up {
            partner_max_unacked,
            ..
        } = self.link
        else {
            return;
        };
        while self.flying.len() < partner_max_unacked as usize {
            let Some(addr) = self.queue.pop_front() else {
                break;
            };
            let Some(lease) = self.pending.remove(&addr) else {
                continue;
            };
            let xid = self.next_xid();
            self.flying.insert(addr, (xid, lease.clone()));
            self.emit(xid, Msg::BndUpd(lease), now);
        }
    }

    /// Sent updates not acknowledged go back to the front of the queue, to be sent
    /// again on the next connection (dhcpd's rescind).
    fn rescind(&mut self) {
        let mut back: Vec<(u32, Lease)> = self.flying.drain().map(|(_, v)| v).collect();
        back.sort_by_key(|(xid, _)| std::cmp::Reverse(*xid));
        for (_, lease) in back {
            let addr = lease.addr;
            if let hashbrown::hash_map::Entry::Vacant(e) = self.pending.entry(addr) {
                e.insert(lease);
                self.queue.push_front(addr);
            }
        }
    }

    /// The state that counts while startup lasts.
    fn current(&self) -> ServerState {
        if self.me == ServerState::Startup {
            self.saved
        } else {
            self.me
        }
    }

    /// The link is gone or startup gave up waiting: dhcpd's "disconnect" transition.
    fn disconnected(&mut self, now: u64) {
        use ServerState::*;
        match self.current() {
            ConflictDone
            | CommunicationsInterrupted
            | PartnerDown
            | Paused
            | Recover
            | RecoverDone
            | RecoverWait
            | ResolutionInterrupted
            | Shutdown => {
                if self.current() == ConflictDone {
                    self.rescind();
                }
                if self.me == Startup {
                    self.set_state(self.saved, now);
                }
            }
            PotentialConflict | Unknown | Startup | Other(_) => {
                self.set_state(ResolutionInterrupted, now)
            }
            Normal => self.set_state(CommunicationsInterrupted, now),
        }
    }

    /// The partner told its state (dhcpd's peer_state_changed).
    fn partner_state(&mut self, new: ServerState, startup: bool, now: u64) {
        use ServerState::*;
        if let Other(v) = new {
            error!("failover peer {}: Invalid state: {v}", self.params.name);
            self.set_state(Shutdown, now);
            return;
        }
        let previous = self.partner;
        if previous == new && self.me != Unknown {
            match self.me {
                Startup => {
                    let back = if self.saved == ResolutionInterrupted {
                        PotentialConflict
                    } else {
                        self.saved
                    };
                    self.set_state(back, now);
                    return;
                }
                PartnerDown
                | CommunicationsInterrupted
                | ResolutionInterrupted
                | Recover
                | ConflictDone => {}
                _ => return,
            }
        }
        self.partner = new;
        self.partner_stos = now;
        info!(
            "failover peer {}: peer moves from {previous} to {new}",
            self.params.name
        );
        if self.me == Normal && new == Normal {
            info!("failover peer {}: Both servers normal", self.params.name);
        }
        self.record();
        let in_startup = self.me == Startup;
        match self.current() {
            Normal => match new {
                PartnerDown => self.set_state(
                    if in_startup {
                        Recover
                    } else {
                        PotentialConflict
                    },
                    now,
                ),
                PotentialConflict | ResolutionInterrupted | ConflictDone => {
                    error!(
                        "Peer {}: Invalid state transition {previous} to {new}.",
                        self.params.name
                    );
                    self.set_state(Shutdown, now);
                }
                Recover | Shutdown => self.set_state(PartnerDown, now),
                Paused => self.set_state(CommunicationsInterrupted, now),
                _ => {}
            },
            Recover => match new {
                Recover | PartnerDown | CommunicationsInterrupted if !in_startup => {
                    self.request_all(now)
                }
                PotentialConflict | ResolutionInterrupted | ConflictDone | Normal => {
                    self.set_state(PotentialConflict, now)
                }
                Shutdown => self.set_state(PartnerDown, now),
                _ => {}
            },
            PotentialConflict => match new {
                Normal => {
                    error!(
                        "Peer {} moves to normal during conflict resolution - panic, shutting down.",
                        self.params.name
                    );
                    self.set_state(Shutdown, now);
                }
                ConflictDone => {
                    if previous == PotentialConflict {
                        self.send(Msg::UpdReq, now);
                    } else {
                        error!(
                            "Peer {}: Unexpected move to conflict-done.",
                            self.params.name
                        );
                    }
                }
                Recover => self.set_state(Recover, now),
                Shutdown => self.set_state(PartnerDown, now),
                _ => {}
            },
            ConflictDone => match new {
                Normal | Shutdown => self.set_state(new, now),
                PotentialConflict | ResolutionInterrupted => {}
                _ => {
                    error!(
                        "Peer {}: Invalid attempt to move from {previous} to {new} while local state is conflict-done.",
                        self.params.name
                    );
                    self.set_state(Shutdown, now);
                }
            },
            PartnerDown if !startup => match new {
                RecoverDone => self.set_state(Normal, now),
                Normal
                | PotentialConflict
                | PartnerDown
                | CommunicationsInterrupted
                | ResolutionInterrupted
                | ConflictDone => self.set_state(PotentialConflict, now),
                _ => {}
            },
            CommunicationsInterrupted => match new {
                Recover => self.set_state(PartnerDown, now),
                Normal | CommunicationsInterrupted | RecoverDone | RecoverWait => {
                    self.set_state(Normal, now)
                }
                PotentialConflict | PartnerDown | ResolutionInterrupted | ConflictDone => {
                    self.set_state(PotentialConflict, now)
                }
                Shutdown => self.set_state(PartnerDown, now),
                _ => {}
            },
            ResolutionInterrupted => match new {
                Shutdown => self.set_state(PartnerDown, now),
                Paused | Unknown | Startup => {}
                _ => self.set_state(PotentialConflict, now),
            },
            RecoverDone => match new {
                RecoverDone | Normal => {
                    if new == RecoverDone {
                        // A new pair, both recovering from each other: normal at once.
                        info!("failover peer {}: both servers recovered", self.params.name);
                    }
                    self.set_state(Normal, now)
                }
                Shutdown => self.set_state(PartnerDown, now),
                _ => {}
            },
            _ => {}
        }
        if self.me == Startup && self.saved != Startup {
            self.set_state(self.saved, now);
        }
        self.update_service();
    }

    /// The partner finished sending what we asked for (dhcpd's process_update_done).
    fn update_done(&mut self, now: u64) {
        use ServerState::*;
        info!("failover peer {}: peer update completed.", self.params.name);
        match self.me {
            PotentialConflict => {
                if self.partner == ConflictDone {
                    if self.params.role == Role::Secondary {
                        self.set_state(Normal, now);
                    } else {
                        error!("Secondary is in conflict_done state after conflict resolution, this is illegal.");
                        self.set_state(Shutdown, now);
                    }
                } else if self.params.role == Role::Primary {
                    self.set_state(ConflictDone, now);
                } else {
                    error!("Spurious update-done message.");
                }
            }
            ConflictDone => error!("Spurious update-done message."),
            Recover => {
                let until = self.me_stos + u64::from(self.params.mclt);
                if until > now && self.partner != Recover && self.partner != RecoverDone {
                    self.set_state(RecoverWait, now);
                } else {
                    self.set_state(RecoverDone, now);
                }
            }
            _ => {}
        }
    }

    fn request_all(&mut self, now: u64) {
        info!(
            "failover peer {}: requesting full update from peer",
            self.params.name
        );
        self.send(Msg::UpdReqAll, now);
    }

    fn set_state(&mut self, new: ServerState, now: u64) {
        use ServerState::*;
        // dhcpd's rescind: what was in flight is sent again, in the new state.
        let resend = matches!(self.me, Normal | PotentialConflict | PartnerDown);
        if resend {
            self.rescind();
        }
        let old = self.me;
        // Partner-down always starts its clock now, even out of startup: the partner's
        // pool becomes usable a whole MCLT after the decision, never sooner.
        if new == PartnerDown || (new != RecoverWait && new != Startup && old != Startup) {
            self.me_stos = now;
        }
        if new == Recover && old == Shutdown && self.partner_knows_all() {
            self.me_stos = now.saturating_sub(u64::from(self.params.mclt));
        }
        self.me = new;
        if new == Startup && old != Startup {
            self.saved = old;
        }
        self.record();
        if old != new {
            info!(
                "failover peer {}: I move from {old} to {new}",
                self.params.name
            );
        }
        if new == Normal && self.partner == Normal {
            info!("failover peer {}: Both servers normal", self.params.name);
        }
        if new != Startup && old == Startup {
            self.startup_until = None;
        }
        self.auto_down_at = None;
        self.update_service();
        if self.connected() {
            self.send_state(now);
        }
        match new {
            CommunicationsInterrupted if self.params.auto_partner_down > 0 => {
                self.auto_down_at = Some(now + u64::from(self.params.auto_partner_down));
            }
            Normal => {
                // What changed while the partner was away (or before a restart, which
                // forgets the queue) goes now, as dhcpd's generate_update_queue.
                self.collecting = true;
                self.out.push_back(Output::Collect { all: false });
                self.balance(Rebalance::Normal);
                self.send_updates(now);
            }
            PotentialConflict
                if self.connected()
                    && (self.params.role == Role::Primary || self.partner == ConflictDone) =>
            {
                self.send(Msg::UpdReq, now)
            }
            Startup => self.startup_until = Some(now + STARTUP_WAIT),
            RecoverWait => {
                let until = self.me_stos + u64::from(self.params.mclt);
                if until > now {
                    info!(
                        "failover peer {}: waiting {} s (MCLT) before recover-done",
                        self.params.name,
                        until - now
                    );
                    self.recover_at = Some(until);
                } else {
                    self.set_state(RecoverDone, now);
                }
            }
            Recover if self.connected() => self.request_all(now),
            _ => {}
        }
        if resend {
            self.send_updates(now);
        }
    }

    fn update_service(&mut self) {
        use ServerState::*;
        let mut service = match self.me {
            PartnerDown => Service::PartnerDown,
            Normal => Service::Cooperating,
            CommunicationsInterrupted => Service::NotCooperating,
            Startup => Service::Startup,
            _ => Service::NotResponding,
        };
        if service != Service::NotResponding
            && matches!(
                self.partner,
                PartnerDown | PotentialConflict | ConflictDone | ResolutionInterrupted
            )
        {
            service = Service::NotResponding;
        }
        if service != self.service {
            self.service = service;
            self.publish_view();
        }
    }

    fn publish_view(&mut self) {
        let view = self.view();
        self.out.push_back(Output::View(view));
    }

    fn record(&mut self) {
        // Startup is a pause, not a state to come back to: a restart during it resumes
        // the state before it. Kept as startup, it would read back as recover, and a
        // server in recover takes the partner's bindings over its own, also over those
        // it granted while the two were apart and the partner never heard of.
        let me = if self.me == ServerState::Startup {
            self.saved
        } else {
            self.me
        };
        self.out.push_back(Output::Record(Stored {
            me,
            me_stos: self.me_stos,
            partner: self.partner,
            partner_stos: self.partner_stos,
            mclt: self.params.mclt,
        }));
    }

    fn send_state(&mut self, now: u64) {
        let msg = Msg::State {
            state: self.current(),
            startup: self.me == ServerState::Startup,
            stos: self.me_stos as u32,
        };
        self.send(msg, now);
    }

    fn close(&mut self, why: &str) {
        self.out.push_back(Output::Close(why.into()));
    }

    fn next_xid(&mut self) -> u32 {
        let xid = self.xid;
        self.xid = self.xid.wrapping_add(1).max(1);
        xid
    }

    /// A new message on an established link.
    fn send(&mut self, msg: Msg, now: u64) {
        if self.connected() {
            let xid = self.next_xid();
            self.emit(xid, msg, now);
        }
    }

    /// A message while the link may still be opening (CONNECT, a refusal).
    fn send_raw(&mut self, msg: Msg, now: u64) {
        let xid = self.next_xid();
        self.emit(xid, msg, now);
    }

    /// Sends `msg` with `xid`: a new one's, or the request's it answers.
    fn emit(&mut self, xid: u32, msg: Msg, now: u64) {
        if let Link::Up { last_tx, .. } = &mut self.link {
            *last_tx = now;
        }
        self.out.push_back(Output::Send(Envelope {
            xid,
            time: now as u32,
            msg,
        }));
    }
}

/// dhcpd sends a CONTACT when a third of the partner's max-response-delay passed quiet.
fn contact_interval(partner_delay: u32) -> u64 {
    u64::from(partner_delay / 3).max(1)
}

fn skewed(time: u32, now: u64) -> bool {
    u64::from(time).abs_diff(now) > MAX_SKEW
}

fn describe(r: &Reject) -> String {
    if r.message.is_empty() {
        r.reason.description().into()
    } else {
        r.message.clone()
    }
}

/// Why the machine refused an operator's command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "failover peer {0} is connected and normal; partner-down is for a partner that is down"
    )]
    PartnerIsUp(String),
    #[error("failover peer {0} is not connected")]
    NotConnected(String),
}

/// Two updates for one address crossed on the wire: which wins (dhcpd's
/// failover_lease_is_better). An active binding beats any other; between two active
/// ones the older client transaction loses, and of two made in the same second the one
/// that promised the client less (both servers answered it at once): the client holds
/// the longer one, so the pair must keep it. Otherwise the primary's wins.
fn ours_is_better(ours: &Lease, theirs: &Lease, role: Role) -> bool {
    match (ours.state, theirs.state) {
        (BindingState::Active, BindingState::Active) => {
            match (ours.cltt, ours.ends).cmp(&(theirs.cltt, theirs.ends)) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => role == Role::Primary,
            }
        }
        (BindingState::Active, BindingState::Expired) => false,
        (_, BindingState::Active) => false,
        _ => role == Role::Primary,
    }
}

impl Stored {
    /// The journal's record of the failover state.
    pub fn as_record<'a>(&self, name: &'a [u8], stamp: u64) -> crate::lease::FailoverRecord<'a> {
        crate::lease::FailoverRecord {
            stamp,
            local_state: u8::from(self.me),
            peer_state: u8::from(self.partner),
            mclt: self.mclt,
            local_stos: self.me_stos,
            peer_stos: self.partner_stos,
            name,
            data: &[],
        }
    }

    /// The state a replayed journal remembers.
    pub fn from_journal(f: &crate::lease::Failover) -> Self {
        Stored {
            me: f.local_state.into(),
            me_stos: f.local_stos,
            partner: f.peer_state.into(),
            partner_stos: f.peer_stos,
            mclt: f.mclt,
        }
    }
}

#[cfg(test)]
mod tests;
