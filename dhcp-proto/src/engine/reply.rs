//! Writing a reply (RFC 2131 §4.3, table 3) and choosing where it goes (§4.1).

use std::net::Ipv4Addr;

use super::Terms;
use crate::policy::OptionSet;
use crate::wire::{
    code, MessageType, Request, WireError, Writer, DEFAULT_MAX_MESSAGE, FLAG_BROADCAST,
};

/// What the engine decided to say.
pub(super) struct Answer {
    pub kind: MessageType,
    /// For a NAK, the refused address (logged, not sent).
    pub yiaddr: Ipv4Addr,
    /// Echoed in the header for ACKs to RENEWING/REBINDING clients and INFORM.
    pub ciaddr: Option<Ipv4Addr>,
    /// Lease terms for OFFER and ACK; none for NAK and the ACK to INFORM.
    pub terms: Option<Terms>,
    pub nak: Option<&'static str>,
}

pub(super) struct Context<'a, L> {
    pub mask: Ipv4Addr,
    pub server_id: Ipv4Addr,
    /// The reservation's host name.
    pub host_name: Option<&'a str>,
    /// Configured options, the level that wins first: reservation, classes, pool, subnet.
    pub options: L,
    pub next_server: Option<Ipv4Addr>,
    pub filename: Option<&'a str>,
}

/// Where a reply goes, per RFC 2131 §4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To the relay agent at giaddr, server port 67.
    Relay(Ipv4Addr),
    /// To the client's configured address (ciaddr), port 68.
    Unicast(Ipv4Addr),
    /// To 255.255.255.255:68 on the link the request came in on.
    Broadcast,
    /// To yiaddr:68 at the client's hardware address: the client cannot answer ARP yet,
    /// so the frame must be addressed without it.
    Hardware { ip: Ipv4Addr, mac: [u8; 6] },
}

impl Destination {
    pub fn port(&self) -> u16 {
        match self {
            Destination::Relay(_) => 67,
            _ => 68,
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        match *self {
            Destination::Relay(ip)
            | Destination::Unicast(ip)
            | Destination::Hardware { ip, .. } => ip,
            Destination::Broadcast => Ipv4Addr::BROADCAST,
        }
    }
}

/// As ISC dhcpd 4.4 decides it (server/dhcp.c, `dhcp_reply`): to the relay; a NAK
/// broadcast; only an ACK to ciaddr (RENEWING, REBINDING, INFORM); else to yiaddr at the
/// client's hardware address, or broadcast. An OFFER never goes to ciaddr: a DISCOVER
/// carries none (RFC 2131 table 5), so one that does names an address nobody may answer
/// ARP for, on the link or off it, and the OFFER would wait for that answer instead of
/// reaching the client, which listens at its hardware address (see
/// docs/investigations/udp-stall.md for what dhcpd and Kea do).
pub(super) fn destination(req: &Request<'_>, ans: &Answer) -> Destination {
    let m = &req.msg;
    if !m.giaddr().is_unspecified() {
        return Destination::Relay(m.giaddr());
    }
    if ans.kind == MessageType::Nak {
        return Destination::Broadcast;
    }
    if !m.ciaddr().is_unspecified() && ans.kind == MessageType::Ack {
        return Destination::Unicast(m.ciaddr());
    }
    match <[u8; 6]>::try_from(m.chaddr()) {
        Ok(mac) if !m.broadcast() && m.htype() == 1 => Destination::Hardware {
            ip: ans.yiaddr,
            mac,
        },
        _ => Destination::Broadcast,
    }
}

/// The size the reply may have: what the client says it accepts (option 57 counts the
/// IP and UDP headers), never below the 576-octet datagram every client must take.
fn limit(req: &Request<'_>) -> usize {
    req.max_message_size
        .map_or(DEFAULT_MAX_MESSAGE, |m| (m as usize).saturating_sub(28))
        .max(DEFAULT_MAX_MESSAGE)
}

/// Writes the reply into `out`, returning its length. Options the client needs to use
/// the lease are written first; configured options follow as space allows.
pub(super) fn write<'a>(
    req: &Request<'_>,
    ans: &Answer,
    ctx: Context<'a, impl Iterator<Item = &'a OptionSet>>,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let mut w = Writer::reply_to(out, &req.msg, limit(req))?;
    let nak = ans.kind == MessageType::Nak;
    if nak {
        // RFC 2131 §4.3.2: a relayed NAK must be broadcast by the relay.
        if !req.msg.giaddr().is_unspecified() {
            w.set_flags(req.msg.flags() | FLAG_BROADCAST);
        }
    } else {
        w.set_yiaddr(ans.yiaddr);
    }
    if let Some(ci) = ans.ciaddr {
        w.set_ciaddr(ci);
    }
    w.option(code::MESSAGE_TYPE, &[ans.kind.to_u8()])?;
    w.option_ip(code::SERVER_ID, ctx.server_id)?;
    if let Some(t) = ans.terms {
        w.option_u32(code::LEASE_TIME, t.lease)?;
        w.option_u32(code::RENEWAL_TIME, t.renew)?;
        w.option_u32(code::REBINDING_TIME, t.rebind)?;
    }
    if let Some(text) = ans.nak {
        w.option(code::MESSAGE, text.as_bytes())?;
    }
    // RFC 6842: echo the client identifier; RFC 3046 §2.2: echo the relay information.
    if let Some(id) = req.client_id {
        w.option(code::CLIENT_ID, id)?;
    }
    // RFC 3011 §3: subnet selection is echoed whether asked for or not.
    if let Some(net) = req.subnet_selection {
        w.option_ip(code::SUBNET_SELECTION, net)?;
    }
    if let Some(rai) = req.relay_agent_info {
        w.option(code::RELAY_AGENT_INFO, rai)?;
    }
    if nak {
        return Ok(w.finish());
    }
    if let Some(ip) = ctx.next_server {
        w.set_siaddr(ip);
    }
    if let Some(f) = ctx.filename {
        w.set_file(f.as_bytes());
    }
    w.option_ip(code::SUBNET_MASK, ctx.mask)?;
    let wanted = |c: u8| req.parameter_list.is_none() || req.requested(c);
    if let Some(name) = ctx.host_name {
        if wanted(code::HOST_NAME) {
            let _ = w.option(code::HOST_NAME, name.as_bytes());
        }
    }
    // The first level to set a code wins; later levels only fill in what is left.
    let mut written = [0u64; 4];
    for set in ctx.options {
        for (c, v) in set.iter() {
            let (word, bit) = (usize::from(c) / 64, 1u64 << (c % 64));
            if written[word] & bit != 0 || !wanted(c) {
                continue;
            }
            written[word] |= bit;
            // An option that does not fit is left out; the lease is still valid without it.
            let _ = w.option(c, v);
        }
    }
    Ok(w.finish())
}
