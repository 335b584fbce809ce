//! The load generator's core: distinct simulated clients doing DISCOVER, OFFER, REQUEST,
//! ACK through a packet socket, either open loop (new exchanges at a target rate, whatever
//! the server does) or closed loop (a fixed number outstanding, as fast as answers come).
//! An exchange not finished within the timeout is a drop, as perfdhcp counts them. The
//! latency of every finished exchange (DISCOVER sent to ACK received) goes into an
//! hdrhistogram. Bounded in clients and in time.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_server::wire::frame::{self, Addressing, HEADROOM};
use dhcp_server::wire::{code, Message};
use hdrhistogram::Histogram;

use crate::{discover, request, Shape};
use dhcp_server::packet::{PacketSocket, FRAME};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Distinct clients, each doing one DORA; client numbers start at `first`.
    pub clients: u32,
    pub first: u32,
    /// Open loop: exchanges started per second. None: closed loop.
    pub rate: Option<u32>,
    /// Closed loop: exchanges outstanding at once.
    pub window: u32,
    /// No new exchange starts after this.
    pub duration: Duration,
    /// An exchange unfinished after this is dropped.
    pub timeout: Duration,
    /// Ask for broadcast replies (flags bit), as clients that cannot take unicast do.
    pub broadcast: bool,
}

#[derive(Debug)]
pub struct Report {
    pub initiated: u64,
    pub completed: u64,
    pub naks: u64,
    pub dropped: u64,
    /// From the first DISCOVER to the last exchange finishing or timing out.
    pub elapsed: Duration,
    /// Exchange latency in microseconds.
    pub latency: Histogram<u64>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Discovering,
    Requesting,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Client {
    phase: Phase,
    started: Instant,
}

const BATCH: usize = 64;

/// The client number a reply is for, from its chaddr (`crate::mac` puts it there).
fn client_of(chaddr: &[u8]) -> Option<u32> {
    match chaddr {
        [0x02, 0xbe, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Frames a DHCP message built by `fill` for client `n`, broadcast from 0.0.0.0:68.
fn frame_for(
    buf: &mut [u8; FRAME],
    n: u32,
    broadcast: bool,
    fill: impl FnOnce(&mut [u8]) -> usize,
) -> usize {
    let len = fill(&mut buf[HEADROOM..]);
    if broadcast {
        buf[HEADROOM + 10] = 0x80;
    }
    let a = Addressing {
        dst_mac: [0xff; 6],
        src_mac: crate::mac(n),
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 68,
        dst_port: 67,
        vlan: None,
    };
    frame::write_udp(buf, &a, len)
}

pub fn run(sock: &PacketSocket, cfg: &LoadConfig) -> std::io::Result<Report> {
    let start = Instant::now();
    let mut clients = vec![
        Client {
            phase: Phase::Idle,
            started: start
        };
        cfg.clients as usize
    ];
    let mut pending: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut initiated, mut completed, mut naks, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    let mut out = vec![[0u8; FRAME]; BATCH];
    let mut out_len = [0usize; BATCH];
    let mut rx = vec![[0u8; FRAME]; BATCH];
    let mut rx_len = [0usize; BATCH];
    let mut next_client = 0u32;
    let mut last_activity = start;
    loop {
        let now = Instant::now();
        let sending = next_client < cfg.clients && now - start < cfg.duration;
        let outstanding = initiated - completed - naks - dropped;
        if !sending && outstanding == 0 {
            break;
        }
        // New exchanges: as many as the rate or the window allows, one batch at most.
        let due = match cfg.rate {
            Some(r) => (((now - start).as_secs_f64() * r as f64) as u64).saturating_sub(initiated),
            None => u64::from(cfg.window).saturating_sub(outstanding),
        };
        let mut queued = 0;
        while sending && queued < BATCH && (queued as u64) < due && next_client < cfg.clients {
            let n = cfg.first + next_client;
            out_len[queued] = frame_for(&mut out[queued], n, cfg.broadcast, |b| {
                discover(b, n, Shape::default())
            });
            clients[next_client as usize] = Client {
                phase: Phase::Discovering,
                started: now,
            };
            pending.push_back((now + cfg.timeout, next_client));
            next_client += 1;
            queued += 1;
        }
        initiated += queued as u64;
        // Answers: an OFFER gets its REQUEST in the same outgoing batch.
        let got = sock.recv(&mut rx, &mut rx_len)?;
        for i in 0..got {
            let Some(udp) = frame::parse_udp(&rx[i][..rx_len[i]]).filter(|u| u.addr.dst_port == 68)
            else {
                continue;
            };
            let Ok(msg) = Message::parse(udp.payload) else {
                continue;
            };
            let Some(idx) = client_of(msg.chaddr())
                .and_then(|n| n.checked_sub(cfg.first))
                .filter(|&i| i < cfg.clients)
            else {
                continue;
            };
            let c = &mut clients[idx as usize];
            match (msg.option(code::MESSAGE_TYPE), c.phase) {
                (Some([2]), Phase::Discovering) => {
                    // A full batch goes out first: an OFFER left unanswered here would
                    // count as the server's drop.
                    if queued == BATCH {
                        send_all(sock, &out, &out_len, queued)?;
                        queued = 0;
                    }
                    let n = cfg.first + idx;
                    let (yi, sid) = (msg.yiaddr(), msg.option(code::SERVER_ID));
                    let Some(sid) = sid.and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
                        continue;
                    };
                    out_len[queued] = frame_for(&mut out[queued], n, cfg.broadcast, |b| {
                        request(b, n, yi, sid.into(), Shape::default())
                    });
                    queued += 1;
                    c.phase = Phase::Requesting;
                }
                (Some([5]), Phase::Requesting) => {
                    c.phase = Phase::Done;
                    completed += 1;
                    let us = c.started.elapsed().as_micros().max(1) as u64;
                    latency.saturating_record(us);
                }
                (Some([6]), Phase::Discovering | Phase::Requesting) => {
                    c.phase = Phase::Failed;
                    naks += 1;
                }
                _ => {}
            }
        }
        send_all(sock, &out, &out_len, queued)?;
        // Timeouts, oldest first; entries for finished exchanges are skipped.
        let now = Instant::now();
        while let Some(&(deadline, idx)) = pending.front() {
            if deadline > now {
                break;
            }
            pending.pop_front();
            let c = &mut clients[idx as usize];
            if matches!(c.phase, Phase::Discovering | Phase::Requesting) {
                c.phase = Phase::Failed;
                dropped += 1;
            }
        }
        if got > 0 || queued > 0 {
            last_activity = now;
        } else if now - last_activity > Duration::from_micros(200) {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(Report {
        initiated,
        completed,
        naks,
        dropped,
        elapsed: last_activity - start,
        latency,
    })
}

/// Sends the first `queued` frames of the batch.
fn send_all(
    sock: &PacketSocket,
    out: &[[u8; FRAME]],
    out_len: &[usize; BATCH],
    queued: usize,
) -> std::io::Result<()> {
    let frames: Vec<&[u8]> = out
        .iter()
        .zip(out_len)
        .take(queued)
        .map(|(f, &l)| &f[..l])
        .collect();
    let mut sent = 0;
    while sent < queued {
        sent += sock.send(&frames[sent..])?;
    }
    Ok(())
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
        let len = frame_for(&mut buf, 77, true, |b| discover(b, 77, Shape::default()));
        let udp = frame::parse_udp(&buf[..len]).unwrap();
        assert_eq!(
            (udp.addr.src_port, udp.addr.dst_port, udp.addr.src_mac),
            (68, 67, crate::mac(77))
        );
        let m = Message::parse(udp.payload).unwrap();
        assert!(m.broadcast());
        assert_eq!(client_of(m.chaddr()), Some(77));
    }
}
