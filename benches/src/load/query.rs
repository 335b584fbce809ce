//! Leasequery load (RFC 4388): the generator as a requester, a BNG or relay at giaddr
//! asking the server about addresses. First ordinary DORA gets clients their leases (the
//! same run as the DORA load, closed loop), then DHCPLEASEQUERY by address asks about
//! those addresses in a shuffled order, and with a range of other addresses, that share
//! of queries about addresses no client holds (free in the pool: LEASEUNASSIGNED; outside
//! it: LEASEUNKNOWN). Open loop at a rate or closed loop with a window in flight, as the
//! DORA load. A query is matched to its answer by xid (the query's number); one not
//! answered within the timeout is dropped. Answers are counted by type, and a leased
//! address not answered LEASEACTIVE is counted apart: the server lost a binding.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_proto::leasequery::{msg, opt, write_query, Key};
use dhcp_proto::wire::{code, frame, Message};
use hdrhistogram::Histogram;

use super::{frame_for, histogram, play, In, LoadConfig, Out, Pace, Report, Server, BATCH};
use dhcp_server::packet::PacketSocket;

/// The requester's hardware address: locally administered, outside the clients'
/// 02:be:… so no answer is mistaken for a client's.
const REQUESTER_MAC: [u8; 6] = [0x02, 0xbf, 0, 0, 0, 1];

#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// The requester's address: every query's giaddr, where the answers go.
    pub requester: Ipv4Addr,
    /// The server's address when the DORA phase met none (no clients): the queries then
    /// go to it at the broadcast hardware address.
    pub server: Option<Ipv4Addr>,
    /// Open loop: queries per second. None: closed loop.
    pub rate: Option<u32>,
    /// Closed loop: queries in flight.
    pub window: u32,
    /// No new query starts after this.
    pub duration: Duration,
    /// A query unanswered after this is dropped.
    pub timeout: Duration,
    /// Addresses (first, last) asked about besides the leased ones.
    pub others: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Percentage of queries about `others` (all of them when no client holds a lease).
    pub others_pct: u32,
}

/// What each query asks for: what a BNG wants to rebuild a subscriber's state, the
/// lease's remaining time, the client identifier, the time since the client's last
/// transaction and its other addresses (option 82 comes unasked).
const PRL: &[u8] = &[
    code::LEASE_TIME,
    code::CLIENT_ID,
    opt::CLIENT_LAST_TRANSACTION_TIME,
    opt::ASSOCIATED_IP,
];

/// The answer types, in the order of [`QueryReport::answers`].
pub const ANSWERS: [(u8, &str); 3] = [
    (msg::LEASEACTIVE, "active"),
    (msg::LEASEUNASSIGNED, "unassigned"),
    (msg::LEASEUNKNOWN, "unknown"),
];

#[derive(Debug)]
pub struct QueryReport {
    /// The DORA phase that made the leases.
    pub fill: Report,
    pub sent: u64,
    pub answered: u64,
    pub dropped: u64,
    /// From the first query to the last answer or timeout.
    pub elapsed: Duration,
    /// Query to answer, in microseconds.
    pub latency: Histogram<u64>,
    /// Answers by type, as [`ANSWERS`] lists them.
    pub answers: [u64; 3],
    /// Queries about a leased address and about the others.
    pub asked: [u64; 2],
    /// Queries about a leased address answered other than LEASEACTIVE.
    pub held_not_active: u64,
}

impl QueryReport {
    pub fn per_sec(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn drop_percent(&self) -> f64 {
        100.0 * self.dropped as f64 / self.sent.max(1) as f64
    }
}

/// Which address each query asks about: the leased ones in a shuffled order (a
/// requester asks about subscribers as they come, not in the order of the pool), and
/// `others_pct` of the queries the range of others, in order, both round and round.
struct Targets {
    held: Vec<Ipv4Addr>,
    next_held: usize,
    /// First address and how many.
    others: Option<(u32, u32)>,
    next_other: u32,
    pct: u32,
    credit: u32,
}

impl Targets {
    fn new(mut held: Vec<Ipv4Addr>, cfg: &QueryConfig) -> io::Result<Self> {
        shuffle(&mut held);
        let others = cfg.others.map(|(a, b)| {
            let (a, b) = (u32::from(a), u32::from(b));
            (a.min(b), a.abs_diff(b) + 1)
        });
        if held.is_empty() && others.is_none() {
            return Err(io::Error::other(
                "nothing to ask about: no client got a lease and no other addresses were given",
            ));
        }
        let pct = if held.is_empty() {
            100
        } else {
            cfg.others_pct.min(100)
        };
        Ok(Targets {
            held,
            next_held: 0,
            others,
            next_other: 0,
            pct: if others.is_some() { pct } else { 0 },
            credit: 0,
        })
    }

    /// The next address, and whether a client of the DORA phase holds it.
    fn next(&mut self) -> (Ipv4Addr, bool) {
        self.credit += self.pct;
        if let Some((first, len)) = self.others.filter(|_| self.credit >= 100) {
            self.credit -= 100;
            let a = first.wrapping_add(self.next_other);
            self.next_other = (self.next_other + 1) % len;
            return (a.into(), false);
        }
        let a = self.held[self.next_held];
        self.next_held = (self.next_held + 1) % self.held.len();
        (a, true)
    }
}

/// Fisher-Yates with a fixed xorshift seed: every run asks in the same order.
fn shuffle(v: &mut [Ipv4Addr]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// One query in flight, in the slot of its number modulo the slots.
#[derive(Debug, Clone, Copy)]
struct Slot {
    q: u64,
    sent: Instant,
    held: bool,
    open: bool,
}

/// The query phase's state.
struct Queries<'a> {
    cfg: &'a QueryConfig,
    slots: Vec<Slot>,
    /// Queries sent, and the oldest that may still be open.
    next: u64,
    oldest: u64,
    answered: u64,
    dropped: u64,
    latency: Histogram<u64>,
    answers: [u64; 3],
    asked: [u64; 2],
    held_not_active: u64,
}

impl Queries<'_> {
    fn outstanding(&self) -> u64 {
        self.next - self.answered - self.dropped
    }

    fn room(&self) -> bool {
        self.next - self.oldest < self.slots.len() as u64
    }

    fn answer(&mut self, frame: &[u8]) {
        let Some(udp) = frame::parse_udp(frame).filter(|u| {
            u.addr.dst_port == 67 && u.addr.src_port == 67 && u.addr.dst_ip == self.cfg.requester
        }) else {
            return;
        };
        let Ok(m) = Message::parse(udp.payload) else {
            return;
        };
        let Some(kind) = m
            .option(code::MESSAGE_TYPE)
            .and_then(|t| ANSWERS.iter().position(|a| [a.0] == t))
        else {
            return;
        };
        // The query's number from its 32-bit xid: the latest number with those low bits.
        let Some(q) = self
            .next
            .checked_sub(u64::from((self.next as u32).wrapping_sub(m.xid())))
            .filter(|&q| q >= self.oldest)
        else {
            return;
        };
        let at = (q % self.slots.len() as u64) as usize;
        let s = &mut self.slots[at];
        if !s.open || s.q != q {
            return;
        }
        s.open = false;
        self.answered += 1;
        self.answers[kind] += 1;
        self.held_not_active += u64::from(s.held && ANSWERS[kind].0 != msg::LEASEACTIVE);
        self.latency
            .saturating_record(s.sent.elapsed().as_micros().max(1) as u64);
    }

    /// Drops the queries past their deadline and moves past the finished ones.
    fn expire(&mut self, now: Instant) {
        while self.oldest < self.next {
            let at = (self.oldest % self.slots.len() as u64) as usize;
            let s = &mut self.slots[at];
            if s.open {
                if s.sent + self.cfg.timeout > now {
                    break;
                }
                s.open = false;
                self.dropped += 1;
            }
            self.oldest += 1;
        }
    }
}

/// The DORA phase of `fill` (which must be DORA only, closed or open loop as it says),
/// then the queries of `cfg` about the addresses it got. `filled` hears of the DORA
/// phase's end just before the first query, so an observer can tell the server's work
/// on queries from its work on leases.
pub fn leasequery(
    sock: &PacketSocket,
    fill: &LoadConfig,
    cfg: &QueryConfig,
    filled: impl FnOnce(&Report),
) -> io::Result<QueryReport> {
    let (run, fill_elapsed) = play(sock, None, fill)?;
    let server = match (run.server, cfg.server) {
        (Some(s), _) => s,
        (None, Some(ip)) => Server { ip, mac: [0xff; 6] },
        (None, None) => {
            return Err(io::Error::other(
                "no server to ask: the DORA phase got no OFFER and no server address was given",
            ))
        }
    };
    let mut targets = Targets::new(run.held(), cfg)?;
    let fill = run.report(fill_elapsed);
    filled(&fill);
    // Enough slots for every query a timeout can keep in flight at the rate.
    let slots = match cfg.rate {
        Some(r) => (f64::from(r) * cfg.timeout.as_secs_f64()) as usize + 2 * BATCH,
        None => cfg.window as usize,
    }
    .clamp(BATCH, 1 << 22);
    let mut pace = Pace::new(cfg.rate, cfg.window);
    let mut s = Queries {
        cfg,
        slots: vec![
            Slot {
                q: u64::MAX,
                sent: pace.start,
                held: false,
                open: false,
            };
            slots
        ],
        next: 0,
        oldest: 0,
        answered: 0,
        dropped: 0,
        latency: histogram(),
        answers: [0; 3],
        asked: [0; 2],
        held_not_active: 0,
    };
    let (mut out, mut rx) = (Out::new(), In::new());
    loop {
        let now = Instant::now();
        let sending = now - pace.start < cfg.duration;
        let outstanding = s.outstanding();
        if !sending && outstanding == 0 {
            break;
        }
        let due = if sending {
            pace.due(now, outstanding)
        } else {
            0
        };
        let mut new = 0;
        while new < due && s.room() {
            let (addr, held) = targets.next();
            let q = s.next;
            let buf = out.room(sock)?;
            let len = frame_for(
                buf,
                REQUESTER_MAC,
                false,
                Some((cfg.requester, server)),
                Some(cfg.requester),
                |b| {
                    write_query(
                        msg::LEASEQUERY,
                        &Key::Address(addr),
                        cfg.requester,
                        q as u32,
                        Some(PRL),
                        b,
                    )
                    .expect("a query by address fits any frame")
                },
            );
            out.push(len);
            let at = (q % s.slots.len() as u64) as usize;
            s.slots[at] = Slot {
                q,
                sent: now,
                held,
                open: true,
            };
            s.asked[usize::from(!held)] += 1;
            s.next += 1;
            new += 1;
        }
        let queued = out.queued;
        out.flush(sock)?;
        let got = rx.recv(sock, |f| {
            s.answer(f);
            Ok(())
        })?;
        let now = Instant::now();
        s.expire(now);
        pace.turn(now, new, got > 0 || queued > 0);
    }
    Ok(QueryReport {
        fill,
        sent: s.next,
        answered: s.answered,
        dropped: s.dropped,
        elapsed: pace.elapsed(),
        latency: s.latency,
        answers: s.answers,
        asked: s.asked,
        held_not_active: s.held_not_active,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(others: Option<(Ipv4Addr, Ipv4Addr)>, others_pct: u32) -> QueryConfig {
        QueryConfig {
            requester: crate::RELAY,
            server: None,
            rate: None,
            window: 1,
            duration: Duration::ZERO,
            timeout: Duration::ZERO,
            others,
            others_pct,
        }
    }

    #[test]
    fn targets_mix_the_leases_and_the_others_in_proportion() {
        let held: Vec<Ipv4Addr> = (1..=100u32)
            .map(|i| Ipv4Addr::from(0xc612_0100 + i))
            .collect();
        let range = (Ipv4Addr::new(198, 19, 0, 0), Ipv4Addr::new(198, 19, 0, 9));
        let mut t = Targets::new(held.clone(), &cfg(Some(range), 20)).unwrap();
        let picks: Vec<(Ipv4Addr, bool)> = (0..1000).map(|_| t.next()).collect();
        assert_eq!(picks.iter().filter(|p| !p.1).count(), 200);
        // Every lease asked about equally often, each other address too, in turn.
        let mut asked: Vec<Ipv4Addr> = picks.iter().filter(|p| p.1).map(|p| p.0).collect();
        asked.sort();
        asked.dedup();
        assert_eq!(asked, held);
        let others: Vec<Ipv4Addr> = picks.iter().filter(|p| !p.1).map(|p| p.0).collect();
        assert_eq!(others[0], range.0);
        assert_eq!(others[10], range.0);
        assert_eq!(others[9], range.1);
        // Shuffled: not the pool's order.
        assert_ne!(
            picks
                .iter()
                .filter(|p| p.1)
                .take(100)
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            held
        );
    }

    #[test]
    fn without_leases_every_query_asks_about_the_others() {
        let range = (Ipv4Addr::new(198, 19, 0, 0), Ipv4Addr::new(198, 19, 0, 3));
        let mut t = Targets::new(Vec::new(), &cfg(Some(range), 10)).unwrap();
        assert!((0..8).all(|_| !t.next().1));
        assert!(Targets::new(Vec::new(), &cfg(None, 10)).is_err());
    }
}
