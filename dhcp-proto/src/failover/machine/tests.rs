//! Two machines joined by a simulated link, each with a simulated set of workers that
//! hold leases, driven by a simulated clock.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::*;
use crate::lease::{HwAddr, LeaseFlags};
use dhcp_ebpf_common::Asked;

fn params(role: Role) -> Params {
    Params {
        name: "pair".into(),
        role,
        mclt: 60,
        hba: Hba::split(128),
        max_unacked: 10,
        max_response_delay: 30,
        auto_partner_down: 0,
        balancing: Balancing {
            misbalance: 15,
            ownership: 10,
            min: 60,
            max: 3600,
        },
    }
}

fn lease(last: u8, state: BindingState, cltt: u64) -> Lease {
    Lease {
        stamp: 0,
        addr: Ipv4Addr::new(198, 18, 1, last),
        state,
        hw: HwAddr::new(1, &[2, 0, 0, 0, 0, last]),
        client_id: Box::new([]),
        agent_info: Box::new([]),
        starts: cltt,
        ends: cltt + 600,
        cltt,
        tstp: cltt + 900,
        tsfp: 0,
        atsfp: 0,
        flags: LeaseFlags(0),
    }
}

/// One server: its machine and what its workers hold.
struct Side {
    m: Machine,
    leases: HashMap<Ipv4Addr, Lease>,
    acked: Vec<Lease>,
    stored: Option<Stored>,
    view: View,
    sent: Vec<Envelope>,
    closed: bool,
    /// What the workers' pools hold when a rebalancing run comes.
    pools: Vec<PoolBalance>,
}

impl Side {
    fn new(role: Role, stored: Option<Stored>, now: u64) -> Self {
        let m = Machine::new(params(role), stored, now);
        let view = m.view();
        Side {
            m,
            leases: HashMap::new(),
            acked: Vec::new(),
            stored: None,
            view,
            sent: Vec::new(),
            closed: false,
            pools: Vec::new(),
        }
    }

    /// Runs the workers' side of every output; returns the messages for the partner.
    fn drain(&mut self, now: u64) -> Vec<Envelope> {
        let mut wire = Vec::new();
        while let Some(o) = self.m.poll() {
            match o {
                Output::Send(e) => {
                    self.sent.push(e.clone());
                    wire.push(e);
                }
                Output::Close(_) => self.closed = true,
                Output::Record(s) => self.stored = Some(s),
                Output::View(v) => self.view = v,
                Output::Apply { xid, lease, .. } => {
                    self.leases.insert(lease.addr, lease.clone());
                    self.m.applied(xid, Ok(lease), now);
                }
                Output::Acked(l) => self.acked.push(l),
                Output::Collect { .. } => {
                    let all = self.leases.values().cloned().collect();
                    self.m.collected(all, now);
                }
                Output::Balance { why, .. } => {
                    let pools = self.pools.clone();
                    self.m.balanced(why, &pools, now);
                }
            }
        }
        wire
    }

    fn state(&self) -> ServerState {
        self.m.status().me
    }
}

struct Pair {
    p: Side,
    s: Side,
    now: u64,
    up: bool,
}

impl Pair {
    fn new(p: Option<Stored>, s: Option<Stored>) -> Self {
        let now = 1_000_000;
        Pair {
            p: Side::new(Role::Primary, p, now),
            s: Side::new(Role::Secondary, s, now),
            now,
            up: false,
        }
    }

    fn connect(&mut self) {
        self.up = true;
        self.p.closed = false;
        self.s.closed = false;
        self.s.m.link_up(self.now);
        self.p.m.link_up(self.now);
        self.run();
    }

    fn cut(&mut self) {
        self.up = false;
        self.p.m.link_down(self.now);
        self.s.m.link_down(self.now);
        self.run();
    }

    /// Delivers messages both ways until both are quiet.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let to_s = self.p.drain(self.now);
            let to_p = self.s.drain(self.now);
            if to_s.is_empty() && to_p.is_empty() {
                if self.up && (self.p.closed || self.s.closed) {
                    self.cut();
                }
                return;
            }
            if self.up {
                for e in to_s {
                    self.s.m.receive(e, self.now);
                }
                for e in to_p {
                    self.p.m.receive(e, self.now);
                }
            }
        }
        panic!("the pair never went quiet");
    }

    /// Advances the clock second by second, ticking both.
    fn wait(&mut self, secs: u64) {
        for _ in 0..secs {
            self.now += 1;
            self.p.m.tick(self.now);
            self.s.m.tick(self.now);
            self.run();
        }
    }

    fn states(&self) -> (ServerState, ServerState) {
        (self.p.state(), self.s.state())
    }
}

fn stored(me: ServerState) -> Stored {
    Stored {
        me,
        me_stos: 999_000,
        partner: ServerState::Normal,
        partner_stos: 999_000,
        mclt: 60,
    }
}

fn normal_pair() -> Pair {
    let mut pair = Pair::new(
        Some(stored(ServerState::Normal)),
        Some(stored(ServerState::Normal)),
    );
    pair.connect();
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
    pair
}

#[test]
fn a_new_pair_recovers_from_each_other_and_becomes_normal() {
    let mut pair = Pair::new(None, None);
    assert_eq!(pair.states(), (ServerState::Startup, ServerState::Startup));
    assert_eq!(pair.p.view.service, Service::Startup);
    pair.connect();
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
    assert_eq!(pair.p.view.service, Service::Cooperating);
    assert_eq!(pair.s.view.service, Service::Cooperating);
    assert_eq!(pair.s.stored.unwrap().me, ServerState::Normal);
    // The secondary took the primary's MCLT and hash buckets.
    assert_eq!(pair.s.view.mclt, 60);
    assert_eq!(pair.s.view.hba, Hba::split(128));
}

#[test]
fn only_the_primary_sends_connect() {
    let mut s = Side::new(Role::Secondary, None, 1000);
    s.m.link_up(1000);
    assert!(s.drain(1000).is_empty());
    let mut p = Side::new(Role::Primary, None, 1000);
    p.m.link_up(1000);
    let sent = p.drain(1000);
    assert!(matches!(&sent[..], [Envelope { msg: Msg::Connect(c), .. }] if c.mclt == Some(60)));
}

#[test]
fn a_binding_reaches_the_partner_and_its_ack_sets_tsfp() {
    let mut pair = normal_pair();
    let l = lease(7, BindingState::Active, pair.now);
    pair.p.m.lease_changed(l.clone(), pair.now);
    pair.run();
    assert_eq!(
        pair.s.leases.get(&l.addr).map(|x| x.state),
        Some(BindingState::Active)
    );
    assert_eq!(pair.p.acked.len(), 1);
    assert_eq!(pair.p.acked[0].tsfp, l.tstp);
    assert_eq!(pair.p.m.status().unacked, 0);
}

#[test]
fn no_more_than_the_partners_window_is_in_flight() {
    let mut pair = normal_pair();
    pair.up = false; // hold the partner's replies back
    for i in 0..25 {
        let l = lease(i, BindingState::Active, pair.now);
        pair.p.m.lease_changed(l, pair.now);
    }
    let sent = pair.p.drain(pair.now);
    assert_eq!(sent.len(), 10, "the secondary allows 10 unacked updates");
    assert_eq!(pair.p.m.status().queued, 15);
}

#[test]
fn a_lost_link_interrupts_and_reconnecting_resends_what_was_unacked() {
    let mut pair = normal_pair();
    pair.up = false;
    let l = lease(9, BindingState::Active, pair.now);
    pair.p.m.lease_changed(l.clone(), pair.now);
    pair.p.drain(pair.now); // sent, never delivered
    pair.up = true;
    pair.cut();
    assert_eq!(
        pair.states(),
        (
            ServerState::CommunicationsInterrupted,
            ServerState::CommunicationsInterrupted
        )
    );
    assert_eq!(pair.p.view.service, Service::NotCooperating);
    assert_eq!(
        pair.p.m.status().queued,
        1,
        "the unacked update is queued again"
    );
    pair.wait(5);
    pair.connect();
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
    assert!(pair.s.leases.contains_key(&l.addr));
    assert_eq!(pair.p.m.status().queued + pair.p.m.status().unacked, 0);
}

#[test]
fn silence_longer_than_max_response_delay_drops_the_link() {
    let mut pair = normal_pair();
    // The secondary goes mute: nothing it sends arrives.
    pair.p.m.tick(pair.now + 29);
    pair.p.drain(pair.now + 29);
    assert!(!pair.p.closed);
    pair.p.m.tick(pair.now + 31);
    pair.p.drain(pair.now + 31);
    assert!(pair.p.closed);
}

#[test]
fn contact_keeps_a_quiet_link_alive() {
    let mut pair = normal_pair();
    pair.wait(120);
    assert!(pair.p.m.connected() && pair.s.m.connected());
    assert!(pair.p.sent.iter().any(|e| e.msg == Msg::Contact));
    assert!(pair.s.sent.iter().any(|e| e.msg == Msg::Contact));
}

#[test]
fn a_stored_normal_state_without_a_partner_becomes_interrupted_after_startup() {
    let mut s = Side::new(Role::Primary, Some(stored(ServerState::Normal)), 1000);
    s.drain(1000);
    s.m.tick(1014);
    s.drain(1014);
    assert_eq!(s.state(), ServerState::Startup);
    s.m.tick(1015);
    s.drain(1015);
    assert_eq!(s.state(), ServerState::CommunicationsInterrupted);
    assert!(s.view.service.serves());
}

/// `side` holds three leases and tells its partner.
fn three_leases(side: &mut Side, now: u64) {
    for i in 1..=3 {
        let l = lease(i, BindingState::Active, now);
        side.leases.insert(l.addr, l.clone());
        side.m.lease_changed(l, now);
    }
}

#[test]
fn partner_down_then_the_partner_returns_empty_and_recovers() {
    let mut pair = normal_pair();
    three_leases(&mut pair.p, pair.now);
    pair.run();
    pair.cut();
    assert!(pair.p.m.partner_down(pair.now).is_ok());
    pair.run();
    assert_eq!(pair.p.state(), ServerState::PartnerDown);
    assert_eq!(pair.p.view.service, Service::PartnerDown);

    // The secondary comes back with an empty journal.
    pair.s = Side::new(Role::Secondary, None, pair.now);
    pair.wait(1);
    pair.connect();
    // It asked for everything and got it, then must wait MCLT before serving.
    assert_eq!(pair.s.leases.len(), 3);
    assert_eq!(pair.s.state(), ServerState::RecoverWait);
    assert_eq!(pair.s.view.service, Service::NotResponding);
    assert_eq!(pair.p.state(), ServerState::PartnerDown);
    pair.wait(61);
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
}

#[test]
fn partner_down_is_refused_while_the_partner_is_up() {
    let mut pair = normal_pair();
    assert!(pair.p.m.partner_down(pair.now).is_err());
}

#[test]
fn automatic_partner_down_after_the_configured_time() {
    let mut p = params(Role::Primary);
    p.auto_partner_down = 30;
    let mut s = Side {
        m: Machine::new(p, Some(stored(ServerState::Normal)), 1000),
        ..Side::new(Role::Primary, None, 1000)
    };
    for t in 1000..1016 {
        s.m.tick(t);
        s.drain(t);
    }
    assert_eq!(s.state(), ServerState::CommunicationsInterrupted);
    s.m.tick(1044);
    s.drain(1044);
    assert_eq!(s.state(), ServerState::CommunicationsInterrupted);
    s.m.tick(1045);
    s.drain(1045);
    assert_eq!(s.state(), ServerState::PartnerDown);
}

/// A primary's CONNECT for relationship `name`, sent at `time`.
fn connect(xid: u32, name: &str, time: u32) -> Envelope {
    Envelope {
        xid,
        time,
        msg: Msg::Connect(Connect {
            name: name.into(),
            max_unacked: 10,
            receive_timer: 30,
            mclt: Some(60),
            hba: Some(Hba::split(128)),
            vendor: String::new(),
        }),
    }
}

#[test]
fn connect_with_another_relationship_name_is_refused() {
    let mut s = Side::new(Role::Secondary, None, 1000);
    s.m.link_up(1000);
    s.m.receive(connect(1, "other", 1000), 1000);
    let sent = s.drain(1000);
    assert!(s.closed);
    assert!(matches!(
        &sent[..],
        [Envelope { msg: Msg::ConnectAck(ConnectAck { reject: Some(r), .. }), .. }]
            if r.reason == RejectReason::InvalidPartner
    ));
}

#[test]
fn connect_from_a_skewed_clock_is_refused() {
    let mut s = Side::new(Role::Secondary, None, 1000);
    s.m.link_up(1000);
    s.m.receive(connect(1, "pair", 1100), 1000);
    let sent = s.drain(1000);
    assert!(matches!(
        &sent[..],
        [Envelope { msg: Msg::ConnectAck(ConnectAck { reject: Some(r), .. }), .. }]
            if r.reason == RejectReason::TimeMismatch
    ));
}

#[test]
fn a_restart_during_startup_comes_back_in_the_state_before_it() {
    // Stopped while the link was down, started again, and stopped again before the
    // startup wait ended: the journal must still say communications-interrupted, not
    // startup (which reads back as recover and would hand our bindings to the partner's).
    let before = Stored {
        me: ServerState::CommunicationsInterrupted,
        me_stos: 900,
        partner: ServerState::Normal,
        partner_stos: 800,
        mclt: 3600,
    };
    let mut s = Side::new(Role::Secondary, Some(before), 1000);
    s.drain(1000);
    assert_eq!(s.state(), ServerState::Startup);
    let kept = s.stored.expect("startup is recorded");
    assert_eq!(
        (kept.me, kept.me_stos),
        (ServerState::CommunicationsInterrupted, 900)
    );
    let again = Side::new(Role::Secondary, Some(kept), 1001);
    assert_eq!(again.m.saved, ServerState::CommunicationsInterrupted);
}

/// A normal pair whose updates for one address cross on the wire: the primary's
/// `ours`, the secondary's `theirs`, each sent before the other's arrived.
fn crossing(ours: impl Fn(u64) -> Lease, theirs: impl Fn(u64) -> Lease) -> Pair {
    let mut pair = normal_pair();
    pair.up = false;
    pair.p.m.lease_changed(ours(pair.now), pair.now);
    pair.s.m.lease_changed(theirs(pair.now), pair.now);
    let to_s = pair.p.drain(pair.now);
    let to_p = pair.s.drain(pair.now);
    pair.up = true;
    for e in to_p {
        pair.p.m.receive(e, pair.now);
    }
    for e in to_s {
        pair.s.m.receive(e, pair.now);
    }
    pair.run();
    pair
}

#[test]
fn crossing_updates_keep_the_newer_active_binding() {
    let pair = crossing(
        |now| lease(5, BindingState::Active, now),
        |now| lease(5, BindingState::Active, now - 10),
    );
    // The secondary's older update was refused; the primary's newer one was applied.
    let newer = lease(5, BindingState::Active, pair.now);
    assert!(!pair.p.leases.contains_key(&newer.addr));
    assert_eq!(
        pair.s.leases.get(&newer.addr).map(|l| l.cltt),
        Some(newer.cltt)
    );
}

#[test]
fn crossing_updates_of_one_second_keep_the_longer_lease_the_client_was_given() {
    // Both servers answered the same REQUEST in the same second (one of them just
    // restarted): the client holds the longer lease, so both must keep it, whichever
    // server granted it.
    let ends = |now: u64, secs: u64| {
        let mut l = lease(5, BindingState::Active, now);
        l.ends = now + secs;
        l
    };
    let pair = crossing(|now| ends(now, 60), |now| ends(now, 600));
    let long = ends(pair.now, 600);
    assert_eq!(
        pair.p.leases.get(&long.addr).map(|l| l.ends),
        Some(long.ends)
    );
    assert!(
        pair.s
            .leases
            .get(&long.addr)
            .is_none_or(|l| l.ends == long.ends),
        "the secondary kept its own longer binding"
    );
}

#[test]
fn an_update_request_is_answered_with_bindings_then_update_done() {
    let mut pair = normal_pair();
    for i in 1..=4 {
        let l = lease(i, BindingState::Active, pair.now);
        pair.s.leases.insert(l.addr, l);
    }
    pair.p.m.resync(pair.now).unwrap();
    pair.run();
    assert_eq!(pair.p.leases.len(), 4);
    let done = pair
        .s
        .sent
        .iter()
        .position(|e| e.msg == Msg::UpdDone)
        .unwrap();
    let last_update = pair
        .s
        .sent
        .iter()
        .rposition(|e| matches!(e.msg, Msg::BndUpd(_)))
        .unwrap();
    assert!(done > last_update);
}

#[test]
fn a_second_connect_on_an_established_link_is_refused() {
    let mut pair = normal_pair();
    pair.s
        .m
        .receive(connect(99, "pair", pair.now as u32), pair.now);
    let sent = pair.s.drain(pair.now);
    assert!(pair.s.closed);
    assert!(
        matches!(&sent[..], [Envelope { msg: Msg::Disconnect(r), .. }] if r.reason == RejectReason::DuplicateConnection)
    );
}

#[test]
fn two_new_servers_sending_each_other_everything_both_finish() {
    let mut pair = Pair::new(None, None);
    for i in 0..20 {
        let p = lease(i, BindingState::Free, 0);
        pair.p.leases.insert(p.addr, p);
        let s = lease(i, BindingState::Free, 0);
        pair.s.leases.insert(s.addr, s);
    }
    pair.connect();
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
    assert_eq!(pair.p.m.status().queued + pair.p.m.status().unacked, 0);
    assert_eq!(pair.s.m.status().queued + pair.s.m.status().unacked, 0);
}

#[test]
fn the_xdp_rule_leaves_the_partner_exactly_its_buckets() {
    for role in [Role::Primary, Role::Secondary] {
        let mut view = Side::new(role, None, 1000).m.view();
        view.service = Service::Cooperating;
        let rule = view.balance(3);
        for bucket in 0..=255u8 {
            assert_eq!(
                rule.leaves_to_partner(bucket, 0, Asked::Discover),
                !view.hba.mine(role, bucket),
                "{role:?} bucket {bucket}"
            );
        }
        view.service = Service::NotCooperating;
        assert!((0..=255u8).all(|b| !view.balance(3).leaves_to_partner(b, 0, Asked::Discover)));
    }
}

#[test]
fn partner_down_out_of_startup_starts_its_clock_at_the_decision() {
    let mut s = Side::new(Role::Primary, Some(stored(ServerState::Normal)), 1000);
    s.drain(1000);
    assert!(s.m.partner_down(1005).is_ok());
    s.drain(1005);
    assert_eq!(s.state(), ServerState::PartnerDown);
    assert_eq!(s.view.stos, 1005);
}

/// The secondary stops gracefully while normal, holding three leases the primary knows.
fn stop_the_secondary() -> Pair {
    let mut pair = normal_pair();
    three_leases(&mut pair.s, pair.now);
    pair.run();
    pair.s.m.stop(pair.now);
    pair.run();
    pair
}

#[test]
fn a_graceful_stop_hands_every_client_to_the_partner_at_once() {
    let mut pair = stop_the_secondary();
    assert_eq!(
        pair.states(),
        (ServerState::PartnerDown, ServerState::Shutdown)
    );
    assert_eq!(pair.p.view.service, Service::PartnerDown);
    assert_eq!(pair.s.view.service, Service::NotResponding);
    assert_eq!(pair.s.stored.unwrap().me, ServerState::Shutdown);
    // The partner took over: the stop need not wait out its time.
    assert!(pair.s.m.stopped(pair.now));
    let said = pair.s.sent.len();
    pair.s.m.finish_stop(pair.now);
    pair.run();
    assert_eq!(
        pair.s.sent.len(),
        said,
        "the link goes without another word"
    );
    // What the journal keeps is dhcpd's: recover, its clock an MCLT back.
    let kept = pair.s.stored.unwrap();
    assert_eq!(kept.me, ServerState::Recover);
    assert_eq!(kept.me_stos, pair.now - 60);
    pair.cut();
    assert_eq!(pair.p.state(), ServerState::PartnerDown);

    // Back on its journal: it learns what happened meanwhile and is normal at once,
    // without recover-wait, since the partner knew every lease it made.
    pair.wait(10);
    let leases = std::mem::take(&mut pair.s.leases);
    pair.s = Side::new(Role::Secondary, Some(kept), pair.now);
    pair.s.leases = leases;
    pair.connect();
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
    assert_eq!(pair.s.view.service, Service::Cooperating);
}

/// Under load the partner, now serving every client, keeps sending bindings, and each
/// can leave a change here (a client it rebinds leaves its old binding): updates of ours
/// made after the partner took over must not hold the stop for its whole wait.
#[test]
fn a_stop_waits_only_for_what_was_owed_when_the_partner_took_over() {
    let mut pair = stop_the_secondary();
    assert_eq!(
        pair.states(),
        (ServerState::PartnerDown, ServerState::Shutdown)
    );
    let mut later = pair.s.leases.values().next().unwrap().clone();
    later.state = crate::lease::BindingState::Free;
    later.stamp += 100;
    pair.s.m.lease_changed(later, pair.now);
    stops_with_nothing_owed(&mut pair, "a change after the takeover holds the stop");
}

/// The stopping secondary may finish now, and since the partner knows every lease it
/// made, its journal keeps recover with the clock an MCLT back: no recover-wait.
fn stops_with_nothing_owed(pair: &mut Pair, held: &str) {
    assert_eq!(pair.s.state(), ServerState::Shutdown);
    assert!(pair.s.m.stopped(pair.now), "{held}");
    pair.s.m.finish_stop(pair.now);
    pair.run();
    let kept = pair.s.stored.unwrap();
    assert_eq!(
        (kept.me, kept.me_stos),
        (ServerState::Recover, pair.now - 60)
    );
}

/// Leaving normal takes back what was in flight (dhcpd's rescind); the stop must send
/// it again at once, not when some later event happens to send updates, or it waits out
/// its whole time for acknowledgements that cannot come.
#[test]
fn a_stop_sends_again_what_was_in_flight_and_finishes_once_it_is_acknowledged() {
    let mut pair = normal_pair();
    pair.s
        .m
        .lease_changed(lease(4, BindingState::Active, pair.now), pair.now);
    let first = pair.s.drain(pair.now);
    assert!(matches!(
        &first[..],
        [Envelope {
            msg: Msg::BndUpd(_),
            ..
        }]
    ));
    pair.s.m.stop(pair.now);
    pair.run();
    assert_eq!(
        pair.states(),
        (ServerState::PartnerDown, ServerState::Shutdown)
    );
    assert_eq!(pair.p.leases.len(), 1, "the update was sent again");
    stops_with_nothing_owed(&mut pair, "the update taken back holds the stop");
}

/// The partner, serving every client once it took over, can renew a client whose
/// binding of ours is still on its way: its newer binding wins over ours on both sides,
/// so ours is never acknowledged. The partner knows a newer binding than ours, so the
/// stop owes nothing for that address.
#[test]
fn a_stop_owes_nothing_for_a_binding_the_partners_newer_one_superseded() {
    let mut pair = normal_pair();
    let l = lease(4, BindingState::Active, pair.now);
    pair.s.m.lease_changed(l.clone(), pair.now);
    let ours = pair.s.drain(pair.now);
    pair.s.m.stop(pair.now);
    for e in pair.s.drain(pair.now) {
        pair.p.m.receive(e, pair.now);
    }
    assert_eq!(pair.p.state(), ServerState::PartnerDown);
    let mut renewed = l;
    renewed.cltt += 1;
    renewed.stamp += 1;
    pair.p.m.lease_changed(renewed, pair.now);
    for e in pair.p.drain(pair.now) {
        pair.s.m.receive(e, pair.now);
    }
    for e in ours {
        pair.p.m.receive(e, pair.now);
    }
    pair.run();
    stops_with_nothing_owed(&mut pair, "a binding the partner superseded holds the stop");
}

#[test]
fn both_servers_stopped_at_once_finish_at_once_and_restart_without_recover_wait() {
    let mut pair = normal_pair();
    three_leases(&mut pair.s, pair.now);
    pair.run();
    pair.p.m.stop(pair.now);
    pair.s.m.stop(pair.now);
    pair.run();
    assert_eq!(
        pair.states(),
        (ServerState::Shutdown, ServerState::Shutdown)
    );
    assert!(pair.p.m.stopped(pair.now) && pair.s.m.stopped(pair.now));
    pair.p.m.finish_stop(pair.now);
    pair.s.m.finish_stop(pair.now);
    pair.run();
    let (p, s) = (pair.p.stored.unwrap(), pair.s.stored.unwrap());
    assert_eq!((p.me, p.me_stos), (ServerState::Recover, pair.now - 60));
    assert_eq!((s.me, s.me_stos), (ServerState::Recover, pair.now - 60));

    pair.cut();
    pair.wait(10);
    let leases = (
        std::mem::take(&mut pair.p.leases),
        std::mem::take(&mut pair.s.leases),
    );
    pair.p = Side::new(Role::Primary, Some(p), pair.now);
    pair.s = Side::new(Role::Secondary, Some(s), pair.now);
    (pair.p.leases, pair.s.leases) = leases;
    pair.connect();
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
}

#[test]
fn a_stop_the_partner_never_answers_ends_after_its_time_and_then_waits_the_mclt() {
    let mut pair = normal_pair();
    pair.up = false; // the partner hears nothing more
    let l = lease(4, BindingState::Active, pair.now);
    pair.s.m.lease_changed(l, pair.now);
    pair.s.m.stop(pair.now);
    pair.s.drain(pair.now);
    assert_eq!(pair.s.state(), ServerState::Shutdown);
    assert!(!pair.s.m.stopped(pair.now + 4));
    assert!(pair.s.m.stopped(pair.now + 5));
    pair.s.m.finish_stop(pair.now + 5);
    pair.s.drain(pair.now + 5);
    // A lease the partner may not know: the restart must wait out the MCLT.
    let kept = pair.s.stored.unwrap();
    assert_eq!(
        (kept.me, kept.me_stos),
        (ServerState::Recover, pair.now + 5)
    );
}

#[test]
fn a_stop_outside_normal_is_immediate_and_changes_nothing() {
    let mut s = Side::new(Role::Primary, Some(stored(ServerState::Normal)), 1000);
    s.m.tick(1015);
    s.drain(1015);
    assert_eq!(s.state(), ServerState::CommunicationsInterrupted);
    s.m.stop(1016);
    assert!(s.m.stopped(1016));
    s.m.finish_stop(1016);
    s.drain(1016);
    assert_eq!(s.state(), ServerState::CommunicationsInterrupted);
}

#[test]
fn a_server_killed_while_shutting_down_recovers_rather_than_sticking() {
    let mut pair = Pair::new(
        Some(Stored {
            partner: ServerState::Shutdown,
            ..stored(ServerState::PartnerDown)
        }),
        Some(stored(ServerState::Shutdown)),
    );
    pair.s.leases.insert(
        lease(1, BindingState::Active, pair.now).addr,
        lease(1, BindingState::Active, pair.now),
    );
    pair.connect();
    // Its shutdown began more than an MCLT ago: recover, then normal at once.
    assert_eq!(pair.states(), (ServerState::Normal, ServerState::Normal));
    assert!(pair.s.sent.iter().any(|e| e.msg == Msg::UpdReqAll));
}

fn pool(ours: u32, theirs: u32, moved: u32) -> PoolBalance {
    PoolBalance {
        pool: crate::policy::AddrRange {
            first: Ipv4Addr::new(198, 18, 0, 10),
            last: Ipv4Addr::new(198, 18, 0, 59),
        },
        total: 50,
        ours,
        theirs,
        moved,
        ours_age: 100,
        theirs_age: 100,
    }
}

#[test]
fn a_secondary_short_of_addresses_asks_on_its_timer_and_the_primary_gives() {
    let mut pair = Pair::new(
        Some(stored(ServerState::Normal)),
        Some(stored(ServerState::Normal)),
    );
    // The secondary leased most of its share; the primary has its own and gives 11.
    pair.p.pools = vec![pool(25, 3, 11)];
    pair.s.pools = vec![pool(3, 25, 0)];
    pair.connect();
    let asked = |side: &Side| side.sent.iter().filter(|e| e.msg == Msg::PoolReq).count();
    pair.wait(59);
    assert_eq!(
        asked(&pair.s),
        0,
        "not before min-balance after entering normal"
    );
    pair.wait(6);
    assert_eq!(asked(&pair.s), 1);
    assert!(pair
        .p
        .sent
        .iter()
        .any(|e| e.msg == Msg::PoolResp { leases: 11 }));
    // The primary's own run finds it has more than its share: it gives, never asks.
    assert_eq!(asked(&pair.p), 0);
    // Runs keep coming, at most max-balance apart.
    pair.s.pools = vec![pool(14, 14, 0)];
    let before = asked(&pair.s);
    pair.wait(3600 + 5);
    assert_eq!(asked(&pair.s), before, "balanced: nothing to ask");
    assert!(pair.s.m.next_timeout().is_some());
}
