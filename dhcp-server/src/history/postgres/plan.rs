//! What a batch of events does to the span table, worked out in memory before any row is
//! written: the database's state of each address the batch touches (read with the rows
//! locked) goes in, the extensions of spans already stored, the new spans and the new
//! state of each address come out. Doing the per-address sequencing here, not in SQL,
//! keeps the writes to four set-based statements however many events an address has in
//! the batch, and keeps the rules testable without a database.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use dhcp_proto::lease::NEVER;
use hashbrown::HashMap;

use crate::history::{Event, EventKind};

/// Microseconds since the Unix epoch: PostgreSQL's resolution, fine enough to give spans
/// of one address opened within the same second distinct starts.
pub type Micros = i64;

/// An end that never comes (`'infinity'` in PostgreSQL, `NEVER` in events).
pub const INFINITY: Micros = Micros::MAX;

/// 9999-12-31T23:59:59Z: later times in an event are junk (PostgreSQL's timestamps stop
/// in 294276, our partition names at 9999) and read as this, or as infinity for an end.
const LAST_SECOND: u64 = 253_402_300_799;

pub fn micros(secs: u64) -> Micros {
    secs.min(LAST_SECOND) as Micros * 1_000_000
}

fn end_micros(secs: u64) -> Micros {
    if secs == NEVER || secs > LAST_SECOND {
        INFINITY
    } else {
        micros(secs)
    }
}

/// Who holds a lease: the same client for hardware address and client id together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientKey {
    pub htype: u8,
    pub hw: Vec<u8>,
    pub client_id: Vec<u8>,
}

impl ClientKey {
    /// Whether `e` is this client's (without building a key: every event asks).
    fn is(&self, e: &Event) -> bool {
        self.htype == e.hw.htype && self.hw == e.hw.bytes() && self.client_id == e.client_id
    }

    fn of(e: &Event) -> Self {
        ClientKey {
            htype: e.hw.htype,
            hw: e.hw.bytes().to_vec(),
            client_id: e.client_id.clone(),
        }
    }
}

/// An address's row in `lease_open` as the transaction found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrState {
    /// The start of the address's latest span (open or not), its key in `lease_span`.
    pub since: Option<Micros>,
    /// Whether that span is open, and for whom.
    pub open: Option<ClientKey>,
    /// When an event closed that span (`None`: open, or never any).
    pub closed_at: Option<Micros>,
}

/// What a span says besides its client and time: set when the event carried it, kept
/// from before otherwise (a unicast renewal has no relay information). Borrowed from the
/// batch's events: most are renewals, and copying their fields was a tenth of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs<'a> {
    pub host_name: Option<Cow<'a, str>>,
    pub circuit_id: Option<&'a [u8]>,
    pub remote_id: Option<&'a [u8]>,
    pub subscriber_id: Option<&'a [u8]>,
    pub giaddr: Option<Ipv4Addr>,
}

impl<'a> Attrs<'a> {
    fn of(e: &'a Event) -> Self {
        let some = |b: &'a [u8]| (!b.is_empty()).then_some(b);
        let host = |b: &'a [u8]| match String::from_utf8_lossy(b) {
            // PostgreSQL text holds no NUL; option 12 may.
            s if s.contains('\0') => Cow::Owned(s.replace('\0', "")),
            s => s,
        };
        Attrs {
            host_name: (!e.host_name.is_empty()).then(|| host(&e.host_name)),
            circuit_id: some(&e.relay.circuit_id),
            remote_id: some(&e.relay.remote_id),
            subscriber_id: some(&e.relay.subscriber_id),
            giaddr: e.relay.giaddr,
        }
    }

    fn update(&mut self, newer: Attrs<'a>) {
        fn keep<T>(old: &mut Option<T>, new: Option<T>) {
            if new.is_some() {
                *old = new;
            }
        }
        keep(&mut self.host_name, newer.host_name);
        keep(&mut self.circuit_id, newer.circuit_id);
        keep(&mut self.remote_id, newer.remote_id);
        keep(&mut self.subscriber_id, newer.subscriber_id);
        keep(&mut self.giaddr, newer.giaddr);
    }
}

/// A change to a span already in the table: its end becomes
/// `max(lower, min(max(upper, ext), close))`, worked out in SQL against the stored upper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend<'a> {
    pub address: Ipv4Addr,
    pub since: Micros,
    /// The latest end a binding event of its client gave it (`None`: none did).
    pub ext: Option<Micros>,
    /// When an event ended it (`None`: still open).
    pub close: Option<Micros>,
    pub attrs: Attrs<'a>,
}

/// A span the batch opened, its end final as of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSpan<'a> {
    pub address: Ipv4Addr,
    pub since: Micros,
    pub upper: Micros,
    pub client: ClientKey,
    pub attrs: Attrs<'a>,
}

/// An address's `lease_open` row after the batch, for addresses whose latest span changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRow {
    pub address: Ipv4Addr,
    pub since: Micros,
    pub open: Option<ClientKey>,
    pub closed_at: Option<Micros>,
    /// Whether the row exists (else it is inserted).
    pub stored: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    pub extends: Vec<Extend<'a>>,
    pub inserts: Vec<NewSpan<'a>>,
    pub opens: Vec<OpenRow>,
}

/// The address's span being worked on.
enum Held {
    None,
    /// A stored span; the index of its `Extend` once an event touched it.
    Stored(Option<usize>),
    /// A span of this batch: the index in `inserts`.
    New(usize),
}

struct Walk {
    held: Held,
    client: ClientKey,
    since: Option<Micros>,
    closed_at: Option<Micros>,
    changed: bool,
}

/// The events that change who holds an address (reservations do not: the history is of
/// leases), and the addresses they touch, in order of first appearance.
pub fn addresses(events: &[Event]) -> Vec<Ipv4Addr> {
    let mut seen = hashbrown::HashSet::with_capacity(events.len());
    events
        .iter()
        .filter(|e| counts(e) && seen.insert(e.addr))
        .map(|e| e.addr)
        .collect()
}

fn counts(e: &Event) -> bool {
    !matches!(
        e.kind,
        EventKind::ReservationAdded | EventKind::ReservationRemoved
    )
}

/// Applies `events` in order to the addresses' `state` (every address `addresses` names
/// must be there; one missing reads as never seen).
///
/// A binding event of the client whose span is open extends it; any other binding event
/// closes the open span at the event's time and opens one from the lease's start; a
/// non-binding event closes the open span. An event older than the start of the open span
/// of another client, or older than the closing of the latest span when none is open, is
/// stale (the failover partner already reported what came after it) and changes nothing:
/// without that rule a partner's late `released` would cut short the next client's span,
/// and its late `renewed` would reopen a span already closed.
pub fn plan<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    state: &HashMap<Ipv4Addr, AddrState>,
) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut walks: HashMap<Ipv4Addr, Walk> = HashMap::with_capacity(state.len());
    for e in events.into_iter().filter(|e| counts(e)) {
        let w = walks.entry(e.addr).or_insert_with(|| {
            let s = state.get(&e.addr).cloned().unwrap_or_default();
            Walk {
                held: if s.open.is_some() {
                    Held::Stored(None)
                } else {
                    Held::None
                },
                client: s.open.unwrap_or_default(),
                since: s.since,
                closed_at: s.closed_at,
                changed: false,
            }
        });
        let at = micros(e.at);
        let binds = e.kind.binds(e.state);
        let holding = !matches!(w.held, Held::None);
        if binds && holding && w.client.is(e) {
            let ends = end_micros(e.ends);
            match w.held {
                Held::Stored(ref mut idx) => {
                    let x = stored(&mut plan.extends, idx, e.addr, w.since);
                    x.ext = Some(x.ext.map_or(ends, |v| v.max(ends)));
                    x.attrs.update(Attrs::of(e));
                }
                Held::New(i) => {
                    let s = &mut plan.inserts[i];
                    s.upper = s.upper.max(ends);
                    s.attrs.update(Attrs::of(e));
                }
                Held::None => {}
            }
            continue;
        }
        // Stale: older (to the second, as events are) than the open span's start, or
        // than the latest span's end.
        if holding
            && w.since
                .is_some_and(|s| at < s.div_euclid(1_000_000) * 1_000_000)
        {
            continue;
        }
        if !holding && w.closed_at.is_some_and(|c| at < c) {
            continue;
        }
        match w.held {
            Held::Stored(ref mut idx) => {
                let x = stored(&mut plan.extends, idx, e.addr, w.since);
                x.close = Some(x.close.map_or(at, |c| c.min(at)));
            }
            Held::New(i) => {
                let s = &mut plan.inserts[i];
                s.upper = s.upper.min(at).max(s.since);
            }
            Held::None => {}
        }
        if holding {
            w.closed_at = Some(at);
            w.changed = true;
        }
        w.held = Held::None;
        if binds {
            // Strictly after the address's previous start: (address, since) is the key.
            let since = match w.since {
                Some(prev) => micros(e.starts).max(prev + 1),
                None => micros(e.starts),
            };
            plan.inserts.push(NewSpan {
                address: e.addr,
                since,
                upper: end_micros(e.ends).max(since),
                client: ClientKey::of(e),
                attrs: Attrs::of(e),
            });
            w.held = Held::New(plan.inserts.len() - 1);
            w.client = ClientKey::of(e);
            w.since = Some(since);
            w.closed_at = None;
            w.changed = true;
        }
    }
    for (address, w) in walks {
        if let (true, Some(since)) = (w.changed, w.since) {
            plan.opens.push(OpenRow {
                address,
                since,
                open: (!matches!(w.held, Held::None)).then_some(w.client),
                closed_at: w.closed_at,
                stored: state.contains_key(&address),
            });
        }
    }
    plan
}

/// The `Extend` of a stored span, made at its first touch.
fn stored<'p, 'a>(
    extends: &'p mut Vec<Extend<'a>>,
    idx: &mut Option<usize>,
    address: Ipv4Addr,
    since: Option<Micros>,
) -> &'p mut Extend<'a> {
    let i = *idx.get_or_insert_with(|| {
        extends.push(Extend {
            address,
            // A stored open span always has its start in `lease_open`.
            since: since.unwrap_or_default(),
            ext: None,
            close: None,
            attrs: Attrs::default(),
        });
        extends.len() - 1
    });
    &mut extends[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Relay;
    use dhcp_proto::lease::{BindingState, HwAddr};

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    fn ev(kind: EventKind, mac: u8, at: u64, ends: u64) -> Event {
        Event {
            kind,
            state: if kind.binds(BindingState::Active) {
                BindingState::Active
            } else {
                BindingState::Free
            },
            at,
            addr: A,
            hw: HwAddr::new(1, &[2, 0, 0, 0, 0, mac]),
            client_id: Vec::new(),
            host_name: Vec::new(),
            relay: Relay::default(),
            starts: at,
            ends,
            stamp: at,
            shard: 0,
            seq: at,
        }
    }

    fn key(mac: u8) -> ClientKey {
        ClientKey {
            htype: 1,
            hw: vec![2, 0, 0, 0, 0, mac],
            client_id: Vec::new(),
        }
    }

    const S: Micros = 1_000_000;

    #[test]
    fn grant_renew_release_in_one_batch_is_one_closed_span() {
        let events = [
            ev(EventKind::Granted, 1, 100, 200),
            ev(EventKind::Renewed, 1, 150, 250),
            ev(EventKind::Released, 1, 170, 0),
        ];
        let p = plan(&events, &HashMap::new());
        assert_eq!(p.extends, []);
        assert_eq!(p.inserts.len(), 1);
        assert_eq!((p.inserts[0].since, p.inserts[0].upper), (100 * S, 170 * S));
        assert_eq!(
            p.opens,
            [OpenRow {
                address: A,
                since: 100 * S,
                open: None,
                closed_at: Some(170 * S),
                stored: false,
            }]
        );
    }

    #[test]
    fn renewal_of_the_stored_client_extends_and_another_client_replaces() {
        let state = HashMap::from([(
            A,
            AddrState {
                since: Some(100 * S),
                open: Some(key(1)),
                closed_at: None,
            },
        )]);
        let renewal = [ev(EventKind::Renewed, 1, 150, 250)];
        let p = plan(&renewal, &state);
        assert_eq!(p.extends.len(), 1);
        assert_eq!(
            (p.extends[0].ext, p.extends[0].close),
            (Some(250 * S), None)
        );
        assert!(p.inserts.is_empty() && p.opens.is_empty());

        let grant = [ev(EventKind::Granted, 2, 160, 260)];
        let p = plan(&grant, &state);
        assert_eq!(
            (p.extends[0].ext, p.extends[0].close),
            (None, Some(160 * S))
        );
        assert_eq!(p.inserts[0].client, key(2));
        assert_eq!(p.opens[0].open, Some(key(2)));
    }

    #[test]
    fn stale_events_leave_the_newer_span_alone() {
        let state = HashMap::from([(
            A,
            AddrState {
                since: Some(300 * S),
                open: Some(key(2)),
                closed_at: None,
            },
        )]);
        let late = [
            ev(EventKind::Released, 1, 200, 0),
            ev(EventKind::Granted, 3, 250, 400),
        ];
        let p = plan(&late, &state);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_late_renewal_does_not_reopen_a_closed_span() {
        let state = HashMap::from([(
            A,
            AddrState {
                since: Some(100 * S),
                open: None,
                closed_at: Some(400 * S),
            },
        )]);
        let renewal = [ev(EventKind::Renewed, 1, 300, 600)];
        assert_eq!(plan(&renewal, &state), Plan::default());
        let grant = [ev(EventKind::Granted, 2, 400, 600)];
        let p = plan(&grant, &state);
        assert_eq!(p.inserts.len(), 1);
    }

    #[test]
    fn spans_opened_in_one_second_get_distinct_starts_and_never_end_before_they_start() {
        let events = [
            ev(EventKind::Granted, 1, 100, 200),
            ev(EventKind::Released, 1, 100, 0),
            ev(EventKind::Granted, 2, 100, NEVER),
            ev(EventKind::Expired, 2, 100, 0),
        ];
        let p = plan(&events, &HashMap::new());
        let spans: Vec<_> = p.inserts.iter().map(|s| (s.since, s.upper)).collect();
        assert_eq!(spans, [(100 * S, 100 * S), (100 * S + 1, 100 * S + 1)]);
    }

    #[test]
    fn reservations_and_junk_times_do_not_break_anything() {
        let mut far = ev(EventKind::Granted, 1, u64::MAX - 1, u64::MAX - 2);
        far.starts = u64::MAX;
        let events = [ev(EventKind::ReservationAdded, 1, 5, 0), far];
        assert_eq!(addresses(&events), [A]);
        let p = plan(&events, &HashMap::new());
        assert_eq!(p.inserts[0].since, micros(LAST_SECOND));
        assert_eq!(p.inserts[0].upper, INFINITY);
    }
}
