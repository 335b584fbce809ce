//! Ethernet II + IPv4 + UDP around a DHCP message, for code that sees whole frames (a
//! packet-socket load generator, and the AF_XDP workers): reading one without copying, and
//! writing the headers in place in front of a payload already in the buffer, checksums
//! included (RFC 791 header checksum, RFC 768 UDP checksum).

use std::net::Ipv4Addr;

/// Octets before the UDP payload: Ethernet (14), IPv4 without options (20), UDP (8).
pub const HEADROOM: usize = 42;
/// An 802.1Q tag: the TPID and the tag control information (priority and VLAN id).
const TAG: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_UDP: u8 = 17;

/// A UDP datagram inside an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    pub addr: Addressing,
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads an IPv4/UDP frame, with at most one 802.1Q tag. `None` for anything else,
/// including fragments and lengths that disagree with the frame.
pub fn parse_udp(frame: &[u8]) -> Option<UdpFrame<'_>> {
    let mut at = 12;
    let mut ethertype = be16(frame.get(..14)?, at);
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN {
        vlan = Some(be16(frame.get(..18)?, 14));
        at += TAG;
        ethertype = be16(frame, at);
    }
    at += 2;
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(at..at + 20)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = be16(ip, 2) as usize;
    let fragmented = be16(ip, 6) & 0x3fff != 0;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != PROTO_UDP || fragmented || total < ihl + 8 {
        return None;
    }
    let ip = frame.get(at..at + total)?;
    let udp = &ip[ihl..];
    let udp_len = be16(udp, 4) as usize;
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    Some(UdpFrame {
        addr: Addressing {
            dst_mac: frame[0..6].try_into().ok()?,
            src_mac: frame[6..12].try_into().ok()?,
            src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            src_port: be16(udp, 0),
            dst_port: be16(udp, 2),
            vlan,
        },
        payload: &udp[8..udp_len],
    })
}

/// Where a frame goes and comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The 802.1Q tag control information, for a frame on a tagged VLAN: a reply goes
    /// back with the tag its request came with.
    pub vlan: Option<u16>,
}

impl Addressing {
    /// Octets of headers in front of the payload for this addressing.
    pub fn headroom(&self) -> usize {
        HEADROOM + if self.vlan.is_some() { TAG } else { 0 }
    }
}

/// The Internet checksum (RFC 1071) of `data`, folded, starting from `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes the headers into `frame[..a.headroom()]` for a payload of `payload_len` octets
/// already at `frame[a.headroom()..]`; returns the frame length.
pub fn write_udp(frame: &mut [u8], a: &Addressing, payload_len: usize) -> usize {
    let udp_len = 8 + payload_len;
    let total = 20 + udp_len;
    frame[0..6].copy_from_slice(&a.dst_mac);
    frame[6..12].copy_from_slice(&a.src_mac);
    let mut at = 12;
    if let Some(tci) = a.vlan {
        frame[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame[14..16].copy_from_slice(&tci.to_be_bytes());
        at += TAG;
    }
    frame[at..at + 2].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    // From here on the frame is laid out as an untagged one, shifted by the tag.
    let frame = &mut frame[at + 2 - 14..];
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[1] = 0x10; // low delay, as dhcpd sends
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..8].fill(0);
    ip[8] = 64;
    ip[9] = PROTO_UDP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&a.src_ip.octets());
    ip[16..20].copy_from_slice(&a.dst_ip.octets());
    let sum = checksum(0, ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut frame[34..42];
    udp[0..2].copy_from_slice(&a.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&a.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0);
    let addr_sum = |ip: Ipv4Addr| (u32::from(ip) >> 16) + (u32::from(ip) & 0xffff);
    let start = addr_sum(a.src_ip) + addr_sum(a.dst_ip) + u32::from(PROTO_UDP) + udp_len as u32;
    let sum = match checksum(start, &frame[34..34 + udp_len]) {
        0 => 0xffff, // RFC 768: a computed zero is sent as all ones
        s => s,
    };
    frame[40..42].copy_from_slice(&sum.to_be_bytes());
    a.headroom() + payload_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing() -> Addressing {
        Addressing {
            dst_mac: [0xff; 6],
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
            vlan: None,
        }
    }

    #[test]
    fn written_frames_parse_back_with_valid_checksums() {
        let mut f = [0u8; 400];
        f[HEADROOM..HEADROOM + 5].copy_from_slice(b"hello");
        let len = write_udp(&mut f, &addressing(), 5);
        assert_eq!(len, 47);
        let u = parse_udp(&f[..len]).unwrap();
        assert_eq!(u.addr, addressing());
        assert_eq!(u.payload, b"hello");
        assert_eq!(
            checksum(0, &f[14..34]),
            0,
            "IP header sums to zero with its checksum"
        );
        let mut pseudo = [0u8; 12];
        pseudo[4..8].copy_from_slice(&[255; 4]);
        pseudo[9] = PROTO_UDP;
        pseudo[10..12].copy_from_slice(&13u16.to_be_bytes());
        let mut all = pseudo.to_vec();
        all.extend_from_slice(&f[34..len]);
        assert_eq!(checksum(0, &all), 0, "UDP checksum verifies");
    }

    #[test]
    fn other_frames_are_refused_without_panicking() {
        let mut f = [0u8; 100];
        let len = write_udp(&mut f, &addressing(), 10);
        for cut in 0..len {
            let _ = parse_udp(&f[..cut]);
        }
        f[23] = 6; // TCP
        assert!(parse_udp(&f[..len]).is_none());
        assert!(parse_udp(&[0u8; 13]).is_none());
    }

    #[test]
    fn a_vlan_tag_is_read_and_written_back() {
        let mut plain = [0u8; 100];
        let len = write_udp(&mut plain, &addressing(), 10);
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x20, 0x07]);
        tagged.extend_from_slice(&plain[12..len]);
        let read = parse_udp(&tagged).unwrap();
        assert_eq!(read.payload, parse_udp(&plain[..len]).unwrap().payload);
        assert_eq!(read.addr.vlan, Some(0x2007));
        let mut again = [0u8; 100];
        let a = read.addr;
        again[a.headroom()..a.headroom() + 10].copy_from_slice(read.payload);
        let n = write_udp(&mut again, &a, 10);
        assert_eq!(&again[..n], &tagged[..]);
    }
}
