//! Answers ARP for the addresses the load generator's simulated clients hold. A server
//! that answers a RENEWING client by unicast to ciaddr through the kernel (our UDP
//! backend, ISC dhcpd, Kea with UDP sockets) first asks who has that address; a real
//! client would answer, so the generator answers for it, with the client's own hardware
//! address. The reply then arrives addressed to that client like every other reply: the
//! generator's packet socket sees it, and the generator namespace's own stack drops it as
//! meant for another host (it forwards nothing, sends no ICMP).
//!
//! The generator's IPv4 packet socket does not see ARP, so this is a second packet socket
//! (the server's `PacketSocket`) bound to ETH_P_ARP on the same interface.

use std::io;
use std::net::Ipv4Addr;

use dhcp_server::packet::{PacketSocket, FRAME};

const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet header and an Ethernet/IPv4 ARP body.
const ARP_FRAME: usize = 14 + 28;
/// The shortest Ethernet frame without its FCS; an ARP reply is padded to it.
const MIN_FRAME: usize = 60;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

pub struct ArpResponder {
    socket: PacketSocket,
}

impl ArpResponder {
    /// A non-blocking socket that sees the ARP frames of `ifname`, its own excepted.
    pub fn open(ifname: &str) -> io::Result<Self> {
        Ok(Self {
            socket: PacketSocket::open_ethertype(ifname, ETHERTYPE_ARP)?,
        })
    }

    /// Reads the ARP frames waiting (at most `limit`) and answers each request for an
    /// address `owner` knows, with the hardware address it gives. Returns how many were
    /// answered. Never blocks.
    pub fn serve(
        &self,
        limit: usize,
        mut owner: impl FnMut(Ipv4Addr) -> Option<[u8; 6]>,
    ) -> io::Result<usize> {
        const BATCH: usize = 8;
        let mut bufs = [[0u8; FRAME]; BATCH];
        let mut lens = [0usize; BATCH];
        let (mut read, mut answered) = (0, 0);
        while read < limit {
            let want = (limit - read).min(BATCH);
            let got = self.socket.recv(&mut bufs[..want], &mut lens[..want])?;
            if got == 0 {
                break;
            }
            read += got;
            for (buf, &len) in bufs.iter().zip(&lens).take(got) {
                let Some(frame) = reply(&buf[..len], &mut owner) else {
                    continue;
                };
                // A full queue loses this answer; the asker asks again, as on a LAN.
                if self.socket.send_one(&frame).is_ok() {
                    answered += 1;
                }
            }
        }
        Ok(answered)
    }
}

/// The reply to an Ethernet/IPv4 ARP request for an address `owner` knows, if `frame` is one.
pub fn reply(
    frame: &[u8],
    owner: &mut impl FnMut(Ipv4Addr) -> Option<[u8; 6]>,
) -> Option<[u8; MIN_FRAME]> {
    let f = frame.get(..ARP_FRAME)?;
    let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    // Ethertype ARP; hardware Ethernet (1), protocol IPv4, lengths 6 and 4; a request.
    if be16(12) != ETHERTYPE_ARP
        || be16(14) != 1
        || be16(16) != 0x0800
        || f[18] != 6
        || f[19] != 4
        || be16(20) != OP_REQUEST
    {
        return None;
    }
    let (asker_mac, asker_ip) = (&f[22..28], &f[28..32]);
    let target = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
    let mac = owner(target)?;
    let mut out = [0u8; MIN_FRAME];
    out[0..6].copy_from_slice(asker_mac);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out[14..20].copy_from_slice(&f[14..20]);
    out[20..22].copy_from_slice(&OP_REPLY.to_be_bytes());
    out[22..28].copy_from_slice(&mac);
    out[28..32].copy_from_slice(&target.octets());
    out[32..38].copy_from_slice(asker_mac);
    out[38..42].copy_from_slice(asker_ip);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who_has(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 0x53]);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend([2, 0, 0, 0, 0, 0x53, 198, 18, 0, 1]);
        f.extend([0; 6]);
        f.extend(target);
        f
    }

    #[test]
    fn a_request_for_a_held_address_gets_the_holders_mac() {
        let held = Ipv4Addr::new(198, 18, 1, 7);
        let mut owner = |a: Ipv4Addr| (a == held).then_some(crate::mac(7));
        let r = reply(&who_has(held.octets()), &mut owner).unwrap();
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 0x53]);
        assert_eq!(&r[6..12], &crate::mac(7));
        assert_eq!(&r[20..22], &[0, 2]);
        assert_eq!(&r[22..28], &crate::mac(7));
        assert_eq!(&r[28..32], &held.octets());
        assert_eq!(&r[32..42], &[2, 0, 0, 0, 0, 0x53, 198, 18, 0, 1]);
        assert!(reply(&who_has([198, 18, 1, 8]), &mut owner).is_none());
    }

    #[test]
    fn replies_and_short_frames_are_not_answered() {
        let mut owner = |_| Some(crate::mac(1));
        let mut f = who_has([198, 18, 1, 7]);
        f[21] = 2;
        assert!(reply(&f, &mut owner).is_none());
        assert!(reply(&f[..30], &mut owner).is_none());
    }
}
