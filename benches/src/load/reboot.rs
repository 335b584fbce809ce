//! The lease check after a crash: every client that saw an ACK asks for its address
//! again in INIT-REBOOT (RFC 2131 §4.3.2: a broadcast REQUEST with the address in option
//! 50, no server identifier, ciaddr zero), as a client that rebooted does. A server that
//! kept the lease ACKs the same address; a NAK, an ACK of another address, or silence
//! (§4.3.2: a server with no record of the client stays silent) after every try means
//! the lease the client was promised is gone.
//!
//! The leases come as lines `MAC ADDRESS` (the file `dhcp-load --acks` writes), the MAC
//! one of the generator's clients (02:be:NN:NN:NN:NN, client number NN).

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcp_proto::wire::{code, frame, Message};

use super::{client_of, frame_for, In, Out};
use crate::init_reboot;
use dhcp_server::packet::PacketSocket;

/// One client's lease: its number (see `crate::mac`) and the address it was ACKed.
pub type Acked = (u32, Ipv4Addr);

/// Client `n`'s hardware address as text, 02:be:NN:NN:NN:NN.
pub fn mac_text(n: u32) -> String {
    let m = crate::mac(n);
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The lines of an ACK file, one per lease, in the order given.
pub fn format_acks(acks: &[Acked]) -> String {
    acks.iter()
        .map(|&(n, a)| format!("{} {a}\n", mac_text(n)))
        .collect()
}

/// Reads what `format_acks` wrote; a line that is not a generator client's lease is an
/// error (a check that silently skipped leases would pass too easily).
pub fn parse_acks(text: &str) -> Result<Vec<Acked>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (mac, addr) = l
                .split_once(' ')
                .ok_or_else(|| format!("'{l}': expected MAC ADDRESS"))?;
            let bytes: Vec<u8> = mac
                .split(':')
                .map(|b| u8::from_str_radix(b, 16))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("'{mac}': {e}"))?;
            let n = client_of(&bytes)
                .filter(|_| bytes.len() == 6)
                .ok_or_else(|| format!("'{mac}' is not a dhcp-load client"))?;
            let addr = addr.trim().parse().map_err(|e| format!("'{addr}': {e}"))?;
            Ok((n, addr))
        })
        .collect()
}

/// What became of each lease.
#[derive(Debug, Default)]
pub struct RebootReport {
    /// ACKed again with the same address.
    pub kept: u64,
    /// Lost: NAKed (the address), ACKed another address (the lease, the address the
    /// server gave), or never answered (the address).
    pub naked: Vec<Acked>,
    pub moved: Vec<(Acked, Ipv4Addr)>,
    pub silent: Vec<Acked>,
}

impl RebootReport {
    pub fn lost(&self) -> usize {
        self.naked.len() + self.moved.len() + self.silent.len()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Asked { at: Instant, tries: u32 },
    Done,
}

/// Requests that fall due, oldest first: (deadline, lease index).
type Pending = std::collections::VecDeque<(Instant, usize)>;

/// Asks for every lease of `acks` in INIT-REBOOT, `window` at a time; an unanswered
/// request is sent again after `timeout`, `tries` times in all. The clients must be
/// distinct (the latest ACK of each).
pub fn check(
    sock: &PacketSocket,
    acks: &[Acked],
    window: u32,
    timeout: Duration,
    tries: u32,
) -> io::Result<RebootReport> {
    let mut report = RebootReport::default();
    let mut state = vec![State::Waiting; acks.len()];
    let index: std::collections::HashMap<u32, usize> =
        acks.iter().enumerate().map(|(i, &(n, _))| (n, i)).collect();
    let (mut out, mut rx) = (Out::new(), In::new());
    let (mut next, mut in_flight, mut done) = (0usize, 0u32, 0usize);
    let mut pending = Pending::new();
    let send = |i: usize, tries: u32, out: &mut Out, state: &mut [State], pending: &mut Pending| {
        let (n, addr) = acks[i];
        let buf = out.room(sock)?;
        let len = frame_for(buf, crate::mac(n), true, None, None, |b| {
            init_reboot(b, n, addr)
        });
        out.push(len);
        let at = Instant::now();
        state[i] = State::Asked { at, tries };
        pending.push_back((at + timeout, i));
        io::Result::Ok(())
    };
    while done < acks.len() {
        while in_flight < window && next < acks.len() {
            send(next, 1, &mut out, &mut state, &mut pending)?;
            next += 1;
            in_flight += 1;
        }
        out.flush(sock)?;
        let got = rx.recv(sock, |f| {
            let Some(udp) = frame::parse_udp(f).filter(|u| u.addr.dst_port == 68) else {
                return Ok(());
            };
            let Ok(msg) = Message::parse(udp.payload) else {
                return Ok(());
            };
            let Some(&i) = client_of(msg.chaddr()).and_then(|n| index.get(&n)) else {
                return Ok(());
            };
            if !matches!(state[i], State::Asked { .. }) {
                return Ok(());
            }
            let lease = acks[i];
            match msg.option(code::MESSAGE_TYPE) {
                Some([5]) if msg.yiaddr() == lease.1 => report.kept += 1,
                Some([5]) => report.moved.push((lease, msg.yiaddr())),
                Some([6]) => report.naked.push(lease),
                _ => return Ok(()),
            }
            state[i] = State::Done;
            done += 1;
            in_flight -= 1;
            Ok(())
        })?;
        let now = Instant::now();
        while let Some(&(deadline, i)) = pending.front() {
            if deadline > now {
                break;
            }
            pending.pop_front();
            let State::Asked { at, tries: t } = state[i] else {
                continue;
            };
            // An entry of an earlier try of a request sent again since.
            if at + timeout != deadline {
                continue;
            }
            if t < tries {
                send(i, t + 1, &mut out, &mut state, &mut pending)?;
            } else {
                report.silent.push(acks[i]);
                state[i] = State::Done;
                done += 1;
                in_flight -= 1;
            }
        }
        if got == 0 && out.queued == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_files_round_trip_and_refuse_foreign_lines() {
        let acks = vec![
            (0, Ipv4Addr::new(198, 18, 1, 0)),
            (0x0102_0304, Ipv4Addr::new(198, 19, 255, 250)),
        ];
        let text = format_acks(&acks);
        assert_eq!(
            text,
            "02:be:00:00:00:00 198.18.1.0\n02:be:01:02:03:04 198.19.255.250\n"
        );
        assert_eq!(parse_acks(&text).unwrap(), acks);
        // Not one of the generator's clients, cut short, or no address: errors, never
        // a lease silently left unchecked.
        for bad in [
            "02:cc:00:00:00:01 198.18.1.1",
            "02:be:00:00:00 198.18.1.1",
            "02:be:00:00:00:01",
            "02:be:00:00:00:01 198.18.1",
        ] {
            assert!(parse_acks(bad).is_err(), "{bad}");
        }
    }
}
