//! The load generator's core: distinct simulated clients talking to a server through a
//! packet socket, either open loop (new exchanges at a target rate, whatever the server
//! does) or closed loop (a fixed number outstanding, as fast as answers come).
//!
//! An exchange is one of four kinds, mixed in the proportions of a [`Mix`] (by default
//! DORA only):
//! - **dora**: a client never seen before sends DISCOVER, answers the OFFER with a
//!   REQUEST (SELECTING) and gets its ACK; it then holds the address.
//! - **renew**: a client holding an address sends a REQUEST in RENEWING (RFC 2131 §4.3.2:
//!   ciaddr set, no server identifier, no requested address) by unicast to the server
//!   and gets its ACK, sent back to ciaddr. Servers that send it through the kernel ARP
//!   for ciaddr first; [`crate::arp`] answers for the clients.
//! - **release**: a holder sends DHCPRELEASE by unicast to the server (§4.4.6); no reply.
//! - **decline**: a holder sends DHCPDECLINE, broadcast, the address in option 50
//!   (§4.4.1, as after finding the address in use); no reply.
//!
//! An answered exchange not finished within the timeout is a drop, as perfdhcp counts
//! them; its latency (first message sent to ACK received) goes into its kind's
//! hdrhistogram. Released and declined addresses are checked cheaply: a declined address
//! must not be offered again during the run, and at the end a few of each, with a few
//! still-held addresses as a control, are asked for by new clients in RENEWING (a server
//! ACKs an address that is free and NAKs one that is another client's or declined).
//! Bounded in clients and in time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use dhcp_proto::wire::frame::{self, Addressing, HEADROOM};
use dhcp_proto::wire::{code, Message};
use hdrhistogram::Histogram;

use crate::arp::ArpResponder;
use crate::{decline, discover, release, renew, request, Shape};
use dhcp_server::packet::{PacketSocket, FRAME};

mod query;
mod reboot;
pub use query::{leasequery, QueryConfig, QueryReport, ANSWERS};
pub use reboot::{
    check as check_init_reboot, format_acks, mac_text, parse_acks, Acked, RebootReport,
};

/// What one exchange does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dora,
    Renew,
    Release,
    Decline,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Dora, Kind::Renew, Kind::Release, Kind::Decline];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Dora => "dora",
            Kind::Renew => "renew",
            Kind::Release => "release",
            Kind::Decline => "decline",
        }
    }

    /// Whether the server answers it (and so whether it can be dropped).
    pub fn answered(self) -> bool {
        matches!(self, Kind::Dora | Kind::Renew)
    }
}

/// The proportions of each kind among the exchanges started, as weights (percentages by
/// convention): `dora=70,renew=20,release=5,decline=5`. Kinds left out weigh 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    /// DORA only: what the generator has always measured.
    pub const DORA: Mix = Mix {
        weights: [1, 0, 0, 0],
    };

    pub fn weight(&self, k: Kind) -> u32 {
        self.weights[k as usize]
    }

    pub fn is_dora_only(&self) -> bool {
        Kind::ALL[1..].iter().all(|&k| self.weight(k) == 0)
    }
}

impl Default for Mix {
    fn default() -> Self {
        Mix::DORA
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = [None; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}': expected KIND=WEIGHT"))?;
            let k = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| format!("'{name}': not a kind (dora, renew, release, decline)"))?;
            let w: u32 = w
                .trim()
                .parse()
                .ok()
                .filter(|&w| w <= 1_000_000)
                .ok_or_else(|| format!("'{part}': the weight is a whole number up to 1000000"))?;
            if weights[k as usize].replace(w).is_some() {
                return Err(format!("'{name}' is given twice"));
            }
        }
        let weights = weights.map(|w| w.unwrap_or(0));
        if weights[Kind::Dora as usize] == 0 {
            return Err(
                "dora must weigh more than 0: renew, release and decline need the leases DORA gets"
                    .into(),
            );
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Kind::ALL
            .iter()
            .filter(|&&k| self.weight(k) > 0)
            .map(|&k| format!("{}={}", k.name(), self.weight(k)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Smooth weighted round robin: the kinds interleave evenly in the mix's proportions.
struct Picker {
    weights: [i64; 4],
    credit: [i64; 4],
    total: i64,
}

impl Picker {
    fn new(mix: &Mix) -> Self {
        let weights = mix.weights.map(i64::from);
        Picker {
            weights,
            credit: [0; 4],
            total: weights.iter().sum(),
        }
    }

    fn pick(&mut self) -> Kind {
        for (c, w) in self.credit.iter_mut().zip(self.weights) {
            *c += w;
        }
        let best = (0..4)
            .filter(|&i| self.weights[i] > 0)
            .max_by_key(|&i| (self.credit[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        self.credit[best] -= self.total;
        Kind::ALL[best]
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Distinct clients; each dora takes a new one. Client numbers start at `first`.
    pub clients: u32,
    pub first: u32,
    /// Open loop: exchanges (of every kind) started per second. None: closed loop.
    pub rate: Option<u32>,
    /// Closed loop: answered exchanges outstanding at once.
    pub window: u32,
    /// No new exchange starts after this.
    pub duration: Duration,
    /// An exchange unfinished after this is dropped.
    pub timeout: Duration,
    /// Ask for broadcast replies (flags bit), as clients that cannot take unicast do.
    pub broadcast: bool,
    /// DISCOVERs and REQUESTs as a relay agent forwards them: from `relayed` (giaddr)
    /// port 67, with option 82, each client on its subscriber line; the server answers
    /// the relay.
    pub shape: Shape,
    pub mix: Mix,
    /// Addresses of each group (released, declined, held) asked for at the end.
    pub probes: u32,
}

/// What the exchanges of one kind did.
#[derive(Debug)]
pub struct KindReport {
    /// Exchanges started (for release and decline: messages sent).
    pub started: u64,
    pub completed: u64,
    pub naks: u64,
    pub dropped: u64,
    /// Exchange latency in microseconds.
    pub latency: Histogram<u64>,
}

impl KindReport {
    fn new() -> Self {
        KindReport {
            started: 0,
            completed: 0,
            naks: 0,
            dropped: 0,
            latency: histogram(),
        }
    }

    pub fn percentile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }

    pub fn drop_percent(&self) -> f64 {
        100.0 * self.dropped as f64 / (self.started.max(1)) as f64
    }

    fn outstanding(&self) -> u64 {
        self.started - self.completed - self.naks - self.dropped
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// The addresses new clients asked for in RENEWING at the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Released during the run: a server that freed them ACKs.
    Released,
    /// Declined during the run: a server that quarantined them NAKs (or stays silent).
    Declined,
    /// Still held by their clients: the control, NAKed.
    Held,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::Released, Group::Declined, Group::Held];

    pub fn name(self) -> &'static str {
        match self {
            Group::Released => "released",
            Group::Declined => "declined",
            Group::Held => "held",
        }
    }
}

/// Answers to the end-of-run requests for one group of addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe {
    pub asked: u64,
    pub acks: u64,
    pub naks: u64,
}

impl Probe {
    pub fn silent(&self) -> u64 {
        self.asked - self.acks - self.naks
    }
}

#[derive(Debug, Default)]
pub struct Checks {
    /// OFFERs of an address a client of this run had declined (a server should not).
    pub offered_declined: u64,
    /// OFFERs of an address a client of this run had released.
    pub offered_released: u64,
    /// Indexed by `Group as usize`.
    pub probes: [Probe; 3],
}

#[derive(Debug)]
pub struct Report {
    /// Answered exchanges (dora and renew) together.
    pub initiated: u64,
    pub completed: u64,
    pub naks: u64,
    pub dropped: u64,
    /// From the first message to the last exchange finishing or timing out.
    pub elapsed: Duration,
    /// Answered exchanges' latency in microseconds.
    pub latency: Histogram<u64>,
    /// Indexed by `Kind as usize`.
    pub kinds: [KindReport; 4],
    pub checks: Checks,
    /// ARP requests answered for the clients.
    pub arp_replies: u64,
    /// Every ACK of a dora or renew, in the order they came: what the clients were
    /// promised (`dhcp-load --acks` writes it for the crash soak to check afterwards).
    pub acks: Vec<Acked>,
}

impl Report {
    pub fn leases_per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn drop_percent(&self) -> f64 {
        100.0 * self.dropped as f64 / (self.initiated.max(1)) as f64
    }
    pub fn percentile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }
    pub fn kind(&self, k: Kind) -> &KindReport {
        &self.kinds[k as usize]
    }
    /// Completed (answered kinds) or sent (the others) per second.
    pub fn per_sec(&self, k: Kind) -> f64 {
        let r = self.kind(k);
        let n = if k.answered() { r.completed } else { r.started };
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Discovering,
    Requesting,
    /// Holds `addr`.
    Bound,
    Renewing,
    /// A new client asking, at the end, for an address of this group.
    Probing(Group),
    /// Released, declined, refused or timed out: takes no further part.
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Client {
    phase: Phase,
    /// Counts the client's exchanges, so a timeout entry of a finished one is ignored.
    exchange: u16,
    started: Instant,
    addr: Ipv4Addr,
}

const BATCH: usize = 64;
/// ARP frames read per turn of the loop.
const ARP_BATCH: usize = 64;

/// The client number a reply is for, from its chaddr (`crate::mac` puts it there).
fn client_of(chaddr: &[u8]) -> Option<u32> {
    match chaddr {
        [0x02, 0xbe, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The server as its replies showed it: where unicast goes.
#[derive(Debug, Clone, Copy)]
struct Server {
    ip: Ipv4Addr,
    mac: [u8; 6],
}

/// Frames a DHCP message built by `fill`, sent from `src_mac` (a client's, `crate::mac`,
/// or the requester's): broadcast from 0.0.0.0:68, or from a relay's giaddr:67 (`relay`),
/// or, with `to`, unicast to the server from `from` (the address the client holds, or the
/// requester's own).
fn frame_for(
    buf: &mut [u8; FRAME],
    src_mac: [u8; 6],
    broadcast: bool,
    to: Option<(Ipv4Addr, Server)>,
    relay: Option<Ipv4Addr>,
    fill: impl FnOnce(&mut [u8]) -> usize,
) -> usize {
    let len = fill(&mut buf[HEADROOM..]);
    if broadcast {
        buf[HEADROOM + 10] = 0x80;
    }
    let (src_ip, dst_ip, dst_mac) = match to {
        Some((from, s)) => (from, s.ip, s.mac),
        None => (
            relay.unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::BROADCAST,
            [0xff; 6],
        ),
    };
    let a = Addressing {
        dst_mac,
        src_mac,
        src_ip,
        dst_ip,
        src_port: if relay.is_some() { 67 } else { 68 },
        dst_port: 67,
        vlan: None,
    };
    frame::write_udp(buf, &a, len)
}

/// Outgoing frames, sent in batches.
struct Out {
    frames: Vec<[u8; FRAME]>,
    lens: [usize; BATCH],
    queued: usize,
}

impl Out {
    fn new() -> Self {
        Out {
            frames: vec![[0u8; FRAME]; BATCH],
            lens: [0; BATCH],
            queued: 0,
        }
    }

    /// Room for one more frame, sending the batch first if it is full.
    fn room(&mut self, sock: &PacketSocket) -> std::io::Result<&mut [u8; FRAME]> {
        if self.queued == BATCH {
            self.flush(sock)?;
        }
        Ok(&mut self.frames[self.queued])
    }

    fn push(&mut self, len: usize) {
        self.lens[self.queued] = len;
        self.queued += 1;
    }

    fn flush(&mut self, sock: &PacketSocket) -> std::io::Result<()> {
        let frames: Vec<&[u8]> = self
            .frames
            .iter()
            .zip(&self.lens)
            .take(self.queued)
            .map(|(f, &l)| &f[..l])
            .collect();
        let mut sent = 0;
        while sent < frames.len() {
            sent += sock.send(&frames[sent..])?;
        }
        self.queued = 0;
        Ok(())
    }
}

/// Incoming frames, read in batches.
struct In {
    frames: Vec<[u8; FRAME]>,
    lens: [usize; BATCH],
}

/// Empty: what a run leaves in its place while it hands the frames read to itself.
impl Default for In {
    fn default() -> Self {
        In {
            frames: Vec::new(),
            lens: [0; BATCH],
        }
    }
}

impl In {
    fn new() -> Self {
        In {
            frames: vec![[0u8; FRAME]; BATCH],
            lens: [0; BATCH],
        }
    }

    /// Reads the frames waiting and hands each to `each`; returns how many were read.
    fn recv(
        &mut self,
        sock: &PacketSocket,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<usize> {
        let got = sock.recv(&mut self.frames, &mut self.lens)?;
        (0..got).try_for_each(|i| each(&self.frames[i][..self.lens[i]]))?;
        Ok(got)
    }
}

/// When new exchanges are due: open loop, at a rate counted from the start, or closed
/// loop, a window outstanding; and when the loop rests.
struct Pace {
    start: Instant,
    rate: Option<u32>,
    window: u32,
    started: u64,
    last_activity: Instant,
}

impl Pace {
    fn new(rate: Option<u32>, window: u32) -> Self {
        let start = Instant::now();
        Pace {
            start,
            rate,
            window,
            started: 0,
            last_activity: start,
        }
    }

    /// How many new exchanges may start now, one batch at most.
    fn due(&self, now: Instant, outstanding: u64) -> usize {
        let due = match self.rate {
            Some(rate) => (((now - self.start).as_secs_f64() * f64::from(rate)) as u64)
                .saturating_sub(self.started),
            None => u64::from(self.window).saturating_sub(outstanding),
        };
        due.min(BATCH as u64) as usize
    }

    /// After a turn of the loop that started `new` exchanges, `busy` if a frame came or
    /// went. After 200 µs of nothing the loop naps: the server under test shares the
    /// machine's cores with the generator, and spinning would take one from it.
    fn turn(&mut self, now: Instant, new: usize, busy: bool) {
        self.started += new as u64;
        if busy {
            self.last_activity = now;
        } else if now - self.last_activity > Duration::from_micros(200) {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// From the start to the last frame sent or received.
    fn elapsed(&self) -> Duration {
        self.last_activity - self.start
    }
}

/// Everything one run keeps.
struct Run<'a> {
    cfg: &'a LoadConfig,
    sock: &'a PacketSocket,
    arp: Option<&'a ArpResponder>,
    clients: Vec<Client>,
    /// Clients holding an address and not renewing, oldest lease first.
    holders: VecDeque<u32>,
    /// Who holds each address, for ARP.
    owners: HashMap<Ipv4Addr, u32>,
    released: HashSet<Ipv4Addr>,
    declined: HashSet<Ipv4Addr>,
    /// The first released and declined addresses, in order, for the end-of-run check.
    to_probe: [Vec<Ipv4Addr>; 2],
    server: Option<Server>,
    pending: VecDeque<(Instant, u32, u16)>,
    kinds: [KindReport; 4],
    checks: Checks,
    arp_replies: u64,
    acks: Vec<Acked>,
    out: Out,
    rx: In,
}

impl Run<'_> {
    fn n(&self, idx: u32) -> u32 {
        self.cfg.first.wrapping_add(idx)
    }

    fn outstanding(&self) -> u64 {
        self.kinds[Kind::Dora as usize].outstanding()
            + self.kinds[Kind::Renew as usize].outstanding()
    }

    fn begin(&mut self, idx: u32, phase: Phase, now: Instant) {
        let c = &mut self.clients[idx as usize];
        c.phase = phase;
        c.exchange = c.exchange.wrapping_add(1);
        c.started = now;
        self.pending
            .push_back((now + self.cfg.timeout, idx, c.exchange));
    }

    /// A holder leaves: released or declined, its address no longer answered for.
    fn leave(&mut self, idx: u32) -> Ipv4Addr {
        let c = &mut self.clients[idx as usize];
        c.phase = Phase::Gone;
        if self.owners.get(&c.addr) == Some(&idx) {
            self.owners.remove(&c.addr);
        }
        c.addr
    }

    /// Starts one exchange of `kind` (a dora, if it needs a holder and none is free).
    /// False when a dora is due and every client has had one.
    fn start(
        &mut self,
        mut kind: Kind,
        next_client: &mut u32,
        now: Instant,
    ) -> std::io::Result<bool> {
        let holder = match (kind, self.server, self.holders.front()) {
            (Kind::Dora, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(s), Some(_)) => self.holders.pop_front().map(|i| (i, s)),
        };
        if holder.is_none() {
            kind = Kind::Dora;
        }
        let broadcast = self.cfg.broadcast;
        match (kind, holder) {
            (Kind::Dora, _) | (_, None) => {
                if *next_client >= self.cfg.clients {
                    return Ok(false);
                }
                let idx = *next_client;
                *next_client += 1;
                let n = self.n(idx);
                let buf = self.out.room(self.sock)?;
                let shape = self.cfg.shape;
                let len = frame_for(buf, crate::mac(n), broadcast, None, shape.relayed, |b| {
                    discover(b, n, shape)
                });
                self.out.push(len);
                self.begin(idx, Phase::Discovering, now);
            }
            (Kind::Renew, Some((idx, server))) => {
                let (n, addr) = (self.n(idx), self.clients[idx as usize].addr);
                let buf = self.out.room(self.sock)?;
                let len = frame_for(buf, crate::mac(n), false, Some((addr, server)), None, |b| {
                    renew(b, n, addr)
                });
                self.out.push(len);
                self.begin(idx, Phase::Renewing, now);
            }
            (Kind::Release, Some((idx, server))) => {
                let n = self.n(idx);
                let addr = self.leave(idx);
                let buf = self.out.room(self.sock)?;
                let len = frame_for(buf, crate::mac(n), false, Some((addr, server)), None, |b| {
                    release(b, n, addr, server.ip)
                });
                self.out.push(len);
                self.released.insert(addr);
                self.note(0, addr);
            }
            (Kind::Decline, Some((idx, server))) => {
                let n = self.n(idx);
                let addr = self.leave(idx);
                let buf = self.out.room(self.sock)?;
                let len = frame_for(buf, crate::mac(n), broadcast, None, None, |b| {
                    decline(b, n, addr, server.ip)
                });
                self.out.push(len);
                self.declined.insert(addr);
                self.note(1, addr);
            }
        }
        self.kinds[kind as usize].started += 1;
        Ok(true)
    }

    /// Keeps the first addresses released (`group` 0) or declined (1) for the probes.
    fn note(&mut self, group: usize, addr: Ipv4Addr) {
        if self.to_probe[group].len() < self.cfg.probes as usize {
            self.to_probe[group].push(addr);
        }
    }

    fn finish(&mut self, kind: Kind, idx: u32, how: Result<(), ()>) {
        let k = &mut self.kinds[kind as usize];
        let c = &mut self.clients[idx as usize];
        match how {
            Ok(()) => {
                k.completed += 1;
                k.latency
                    .saturating_record(c.started.elapsed().as_micros().max(1) as u64);
                c.phase = Phase::Bound;
                self.acks.push((self.cfg.first.wrapping_add(idx), c.addr));
                self.owners.insert(c.addr, idx);
                self.holders.push_back(idx);
            }
            Err(()) => {
                k.naks += 1;
                self.leave(idx);
            }
        }
    }

    /// Reads the frames waiting and acts on the replies among them; returns how many frames.
    fn receive(&mut self) -> std::io::Result<usize> {
        let mut rx = std::mem::take(&mut self.rx);
        let got = rx.recv(self.sock, |f| self.reply(f));
        self.rx = rx;
        let got = got?;
        if let Some(arp) = self.arp {
            let (owners, first) = (&self.owners, self.cfg.first);
            let answered = arp.serve(ARP_BATCH, |a| {
                owners.get(&a).map(|&i| crate::mac(first.wrapping_add(i)))
            })?;
            self.arp_replies += answered as u64;
        }
        Ok(got)
    }

    fn reply(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let to_us = if self.cfg.shape.relayed.is_some() {
            67
        } else {
            68
        };
        let Some(udp) = frame::parse_udp(frame).filter(|u| u.addr.dst_port == to_us) else {
            return Ok(());
        };
        let Ok(msg) = Message::parse(udp.payload) else {
            return Ok(());
        };
        let Some(idx) = client_of(msg.chaddr())
            .map(|n| n.wrapping_sub(self.cfg.first))
            .filter(|&i| (i as usize) < self.clients.len())
        else {
            return Ok(());
        };
        let sid = msg
            .option(code::SERVER_ID)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(Ipv4Addr::from);
        let yiaddr = msg.yiaddr();
        match (
            msg.option(code::MESSAGE_TYPE),
            self.clients[idx as usize].phase,
        ) {
            (Some([2]), Phase::Discovering) => {
                let Some(sid) = sid else {
                    return Ok(());
                };
                self.server.get_or_insert(Server {
                    ip: sid,
                    mac: udp.addr.src_mac,
                });
                self.checks.offered_declined += u64::from(self.declined.contains(&yiaddr));
                self.checks.offered_released += u64::from(self.released.contains(&yiaddr));
                let n = self.n(idx);
                let broadcast = self.cfg.broadcast;
                let buf = self.out.room(self.sock)?;
                let shape = self.cfg.shape;
                let len = frame_for(buf, crate::mac(n), broadcast, None, shape.relayed, |b| {
                    request(b, n, yiaddr, sid, shape)
                });
                self.out.push(len);
                self.clients[idx as usize].phase = Phase::Requesting;
            }
            (Some([5]), Phase::Requesting) => {
                self.clients[idx as usize].addr = yiaddr;
                self.finish(Kind::Dora, idx, Ok(()));
            }
            (Some([5]), Phase::Renewing) => self.finish(Kind::Renew, idx, Ok(())),
            (Some([6]), Phase::Discovering | Phase::Requesting) => {
                self.finish(Kind::Dora, idx, Err(()))
            }
            (Some([6]), Phase::Renewing) => self.finish(Kind::Renew, idx, Err(())),
            (Some([t @ (5 | 6)]), Phase::Probing(g)) => {
                let p = &mut self.checks.probes[g as usize];
                if *t == 5 {
                    p.acks += 1;
                } else {
                    p.naks += 1;
                }
                self.clients[idx as usize].phase = Phase::Gone;
            }
            _ => {}
        }
        Ok(())
    }

    /// Drops the exchanges past their deadline, oldest first.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, idx, exchange)) = self.pending.front() {
            if deadline > now {
                break;
            }
            self.pending.pop_front();
            let c = self.clients[idx as usize];
            if c.exchange != exchange {
                continue;
            }
            let kind = match c.phase {
                Phase::Discovering | Phase::Requesting => Kind::Dora,
                Phase::Renewing => Kind::Renew,
                _ => continue,
            };
            self.kinds[kind as usize].dropped += 1;
            self.leave(idx);
        }
    }

    /// New clients ask in RENEWING for some released, declined and still-held addresses.
    fn probe(&mut self) -> std::io::Result<()> {
        let Some(server) = self.server else {
            return Ok(());
        };
        let held: Vec<Ipv4Addr> = self
            .holders
            .iter()
            .take(self.cfg.probes as usize)
            .map(|&i| self.clients[i as usize].addr)
            .collect();
        let groups = [
            std::mem::take(&mut self.to_probe[0]),
            std::mem::take(&mut self.to_probe[1]),
            held,
        ];
        let now = Instant::now();
        let mut idx = self.cfg.clients;
        for (g, addrs) in Group::ALL.into_iter().zip(groups) {
            for addr in addrs {
                let n = self.n(idx);
                let buf = self.out.room(self.sock)?;
                let len = frame_for(buf, crate::mac(n), false, Some((addr, server)), None, |b| {
                    renew(b, n, addr)
                });
                self.out.push(len);
                self.clients[idx as usize].phase = Phase::Probing(g);
                self.clients[idx as usize].addr = addr;
                self.owners.insert(addr, idx);
                self.checks.probes[g as usize].asked += 1;
                idx += 1;
            }
        }
        self.out.flush(self.sock)?;
        let deadline = now + self.cfg.timeout;
        let waiting = |r: &Self| {
            r.clients[r.cfg.clients as usize..idx as usize]
                .iter()
                .any(|c| matches!(c.phase, Phase::Probing(_)))
        };
        while waiting(self) && Instant::now() < deadline {
            if self.receive()? == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
            self.out.flush(self.sock)?;
        }
        Ok(())
    }
}

/// Plays the clients of `cfg` on `sock`; `arp` answers ARP for the addresses they hold
/// (needed for renewals from servers that send them through the kernel).
pub fn run(
    sock: &PacketSocket,
    arp: Option<&ArpResponder>,
    cfg: &LoadConfig,
) -> std::io::Result<Report> {
    let probes = if cfg.mix.is_dora_only() {
        0
    } else {
        cfg.probes
    };
    let cfg = &LoadConfig {
        probes,
        ..cfg.clone()
    };
    let (r, elapsed) = play(sock, arp, cfg)?;
    Ok(r.report(elapsed))
}

/// The run itself: the exchanges, then the probes; returns what it kept and the time from
/// the first message to the last exchange finishing or timing out.
fn play<'a>(
    sock: &'a PacketSocket,
    arp: Option<&'a ArpResponder>,
    cfg: &'a LoadConfig,
) -> std::io::Result<(Run<'a>, Duration)> {
    let mut pace = Pace::new(cfg.rate, cfg.window);
    let client = Client {
        phase: Phase::Idle,
        exchange: 0,
        started: pace.start,
        addr: Ipv4Addr::UNSPECIFIED,
    };
    let mut r = Run {
        cfg,
        sock,
        arp,
        clients: vec![client; cfg.clients as usize + 3 * cfg.probes as usize],
        holders: VecDeque::new(),
        owners: HashMap::new(),
        released: HashSet::new(),
        declined: HashSet::new(),
        to_probe: [Vec::new(), Vec::new()],
        server: None,
        pending: VecDeque::new(),
        kinds: [(); 4].map(|()| KindReport::new()),
        checks: Checks::default(),
        arp_replies: 0,
        acks: Vec::new(),
        out: Out::new(),
        rx: In::new(),
    };
    let mut picker = Picker::new(&cfg.mix);
    let (mut next_client, mut exhausted) = (0u32, false);
    loop {
        let now = Instant::now();
        let sending = !exhausted && now - pace.start < cfg.duration;
        let outstanding = r.outstanding();
        if !sending && outstanding == 0 {
            break;
        }
        let due = if sending {
            pace.due(now, outstanding)
        } else {
            0
        };
        let mut new = 0;
        while new < due {
            if !r.start(picker.pick(), &mut next_client, now)? {
                exhausted = true;
                break;
            }
            new += 1;
        }
        // Answers: an OFFER gets its REQUEST in the same outgoing batch.
        let got = r.receive()?;
        let queued = r.out.queued;
        r.out.flush(sock)?;
        let now = Instant::now();
        r.expire(now);
        pace.turn(now, new, got > 0 || queued > 0);
    }
    if cfg.probes > 0 {
        r.probe()?;
    }
    Ok((r, pace.elapsed()))
}

impl Run<'_> {
    /// The addresses the clients hold at the end, oldest lease first.
    fn held(&self) -> Vec<Ipv4Addr> {
        self.holders
            .iter()
            .map(|&i| self.clients[i as usize].addr)
            .collect()
    }

    fn report(self, elapsed: Duration) -> Report {
        let mut latency = histogram();
        let (mut initiated, mut completed, mut naks, mut dropped) = (0, 0, 0, 0);
        for k in Kind::ALL.into_iter().filter(|k| k.answered()) {
            let s = &self.kinds[k as usize];
            latency.add(&s.latency).expect("same bounds");
            initiated += s.started;
            completed += s.completed;
            naks += s.naks;
            dropped += s.dropped;
        }
        Report {
            initiated,
            completed,
            naks,
            dropped,
            elapsed,
            latency,
            kinds: self.kinds,
            checks: self.checks,
            arp_replies: self.arp_replies,
            acks: self.acks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_map_back_to_their_client() {
        assert_eq!(client_of(&crate::mac(123_456)), Some(123_456));
        assert_eq!(client_of(&[2, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn frames_carry_the_client_and_the_broadcast_flag() {
        let mut buf = [0u8; FRAME];
        let len = frame_for(&mut buf, crate::mac(77), true, None, None, |b| {
            discover(b, 77, Shape::default())
        });
        let udp = frame::parse_udp(&buf[..len]).unwrap();
        assert_eq!(
            (udp.addr.src_port, udp.addr.dst_port, udp.addr.src_mac),
            (68, 67, crate::mac(77))
        );
        let m = Message::parse(udp.payload).unwrap();
        assert!(m.broadcast());
        assert_eq!(client_of(m.chaddr()), Some(77));
    }

    #[test]
    fn a_renewal_is_unicast_from_the_held_address_to_the_server() {
        let (held, server) = (
            Ipv4Addr::new(198, 18, 1, 9),
            Server {
                ip: Ipv4Addr::new(198, 18, 0, 1),
                mac: [2, 0, 0, 0, 0, 0x53],
            },
        );
        let mut buf = [0u8; FRAME];
        let len = frame_for(
            &mut buf,
            crate::mac(9),
            false,
            Some((held, server)),
            None,
            |b| renew(b, 9, held),
        );
        let udp = frame::parse_udp(&buf[..len]).unwrap();
        assert_eq!(
            (udp.addr.src_ip, udp.addr.dst_ip, udp.addr.dst_mac),
            (held, server.ip, server.mac)
        );
        let m = Message::parse(udp.payload).unwrap();
        assert_eq!((m.ciaddr(), m.broadcast()), (held, false));
    }

    #[test]
    fn mixes_parse_print_and_refuse_nonsense() {
        let m: Mix = "dora=70,renew=20,release=5,decline=5".parse().unwrap();
        assert_eq!(m.to_string(), "dora=70,renew=20,release=5,decline=5");
        assert!(!m.is_dora_only());
        assert_eq!("dora=1".parse::<Mix>().unwrap(), Mix::DORA);
        let m: Mix = " renew=1 , dora=3".parse().unwrap();
        assert_eq!((m.weight(Kind::Dora), m.weight(Kind::Renew)), (3, 1));
        for bad in [
            "",
            "renew=5",
            "dora=0,renew=1",
            "dora",
            "dora=x",
            "dora=1,dora=2",
            "inform=1",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_picker_keeps_the_proportions_evenly() {
        let m: Mix = "dora=70,renew=20,release=5,decline=5".parse().unwrap();
        let mut p = Picker::new(&m);
        let mut count = [0; 4];
        for i in 1..=1000 {
            count[p.pick() as usize] += 1;
            if i % 100 == 0 {
                assert_eq!(count.map(|c| c * 100 / i), [70, 20, 5, 5]);
            }
        }
        let mut p = Picker::new(&Mix::DORA);
        assert!((0..10).all(|_| p.pick() == Kind::Dora));
    }
}
