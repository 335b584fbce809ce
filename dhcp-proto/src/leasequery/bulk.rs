//! Bulk Leasequery (RFC 6926) without I/O: the TCP framing, the one DHCPBULKLEASEQUERY a
//! requester sends at a time, and the messages that answer it, each written straight
//! into the caller's buffer with its size prefix. Who gathers the bindings and how they
//! reach the socket is the runtime's business; this module only says what the octets
//! are.
//!
//! A query runs: zero or more DHCPLEASEACTIVE / DHCPLEASEUNASSIGNED, one per binding,
//! then DHCPLEASEQUERYDONE; or a single DHCPLEASEQUERYSTATUS (status-code, option 151)
//! when the query is refused. Every message carries the query's xid, which is how a requester
//! tells the queries of one connection apart.

use std::net::Ipv4Addr;

use super::{msg, opt, write_binding, Binding, Key};
use crate::lease::LeaseState;
use crate::wire::{code, Message, MessageType, Request, WireError, Writer};

/// Octets of the message size in front of every message on the connection (RFC 6926:
/// network order, not counting itself).
pub const SIZE_PREFIX: usize = 2;

/// The smallest message a size prefix may announce: a BOOTP header and the magic
/// cookie. Anything shorter cannot be DHCP, so it is refused before its body arrives.
pub const MIN_FRAMED: usize = 240;

/// Room a caller gives each reply: the largest message the size prefix can announce.
pub const MAX_FRAME: usize = SIZE_PREFIX + u16::MAX as usize;

/// Status codes of option 151 (RFC 6926 §6.2.2).
pub mod status {
    pub const SUCCESS: u8 = 0;
    pub const UNSPEC_FAIL: u8 = 1;
    pub const QUERY_TERMINATED: u8 = 2;
    pub const MALFORMED_QUERY: u8 = 3;
    pub const NOT_ALLOWED: u8 = 4;
}

/// Values of dhcp-state, option 156 (RFC 6926 §6.2.7).
pub mod state {
    pub const AVAILABLE: u8 = 1;
    pub const ACTIVE: u8 = 2;
    pub const EXPIRED: u8 = 3;
    pub const RELEASED: u8 = 4;
    pub const ABANDONED: u8 = 5;
    pub const RESET: u8 = 6;
    pub const REMOTE: u8 = 7;
    pub const TRANSITIONING: u8 = 8;
}

/// The REMOTE flag of data-source, option 157 (RFC 6926 §6.2.8): the binding was last
/// written by the failover partner.
pub const DATA_SOURCE_REMOTE: u8 = 0x01;

/// Why the octets on a connection cannot be a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a message size of {0} octets, shorter than any DHCP message")]
    TooShort(u16),
}

/// The first whole message at the start of `buf`, and the octets it takes there, prefix
/// included; `None` while part of it has yet to arrive. Only the prefix is looked at,
/// so a caller learns at once when a frame can never be DHCP.
pub fn next_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(size) = buf.first_chunk::<SIZE_PREFIX>() else {
        return Ok(None);
    };
    let size = u16::from_be_bytes(*size);
    if usize::from(size) < MIN_FRAMED {
        return Err(FrameError::TooShort(size));
    }
    let end = SIZE_PREFIX + usize::from(size);
    Ok(buf.get(SIZE_PREFIX..end).map(|m| (m, end)))
}

/// Why a framed message is not a query this server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("a BOOTREPLY, not a request")]
    NotRequest,
    #[error("option {0} is not a 4-octet time")]
    BadTime(u8),
    #[error("query-start-time is after query-end-time")]
    EmptyWindow,
}

/// What a framed message asks.
#[derive(Debug, Clone)]
pub enum Asked<'a> {
    Query(Query<'a>),
    /// A well-formed DHCP message of another type: a requester sends only
    /// DHCPBULKLEASEQUERY on the connection.
    Unsupported {
        xid: u32,
        kind: MessageType,
    },
}

/// A DHCPBULKLEASEQUERY: the key it names (address, hardware address, client
/// identifier, relay id, remote id, else all: `Key::of_bulk`) and the times it is limited to.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub req: Request<'a>,
    pub key: Key,
    pub window: Window,
}

impl Query<'_> {
    pub fn xid(&self) -> u32 {
        self.req.msg.xid()
    }
}

/// query-start-time and query-end-time (options 154, 155): a binding answers when its
/// current state began within them, both ends included (RFC 6926 §6.2.5, §6.2.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub start: Option<u64>,
    pub end: Option<u64>,
}

impl Window {
    pub fn is_open(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }

    /// Whether `b` answers. With either bound set, a binding whose state began at an
    /// unknown time does not, since nothing says it is inside.
    pub fn admits(&self, b: &Binding) -> bool {
        if self.is_open() {
            return true;
        }
        state_start(b)
            .is_some_and(|t| self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t <= e))
    }
}

/// Reads one framed message (without its prefix) as a query.
pub fn read_query(message: &[u8]) -> Result<Asked<'_>, Malformed> {
    let req = Request::parse(message)?;
    if req.msg.op() != crate::wire::BOOTREQUEST {
        return Err(Malformed::NotRequest);
    }
    if req.msg_type.to_u8() != msg::BULKLEASEQUERY {
        return Ok(Asked::Unsupported {
            xid: req.msg.xid(),
            kind: req.msg_type,
        });
    }
    let time = |c: u8| {
        req.msg
            .option(c)
            .map(|v| {
                <[u8; 4]>::try_from(v)
                    .map(|t| u64::from(u32::from_be_bytes(t)))
                    .map_err(|_| Malformed::BadTime(c))
            })
            .transpose()
    };
    let window = Window {
        start: time(opt::QUERY_START_TIME)?,
        end: time(opt::QUERY_END_TIME)?,
    };
    if let (Some(s), Some(e)) = (window.start, window.end) {
        if s > e {
            return Err(Malformed::EmptyWindow);
        }
    }
    Ok(Asked::Query(Query {
        key: Key::of_bulk(&req),
        req,
        window,
    }))
}

/// The xid of a message too broken to read, so a DHCPLEASEQUERYSTATUS can still name
/// it: its octets 4 to 7, or 0 when it is shorter.
pub fn xid_of(message: &[u8]) -> u32 {
    message
        .get(4..8)
        .and_then(|x| x.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// When the binding's current state began, as far as the lease table knows: the last
/// transaction for a bound lease, the end for one that ran out or was given back.
/// Unknown for the others (an offer, a declined address, one of the partner's).
pub fn state_start(b: &Binding) -> Option<u64> {
    match b.state {
        LeaseState::Active => (b.cltt != 0).then_some(b.cltt),
        LeaseState::Released | LeaseState::Expired => (b.expires != 0).then_some(b.expires),
        _ => None,
    }
}

/// dhcp-state (156) of a binding (RFC 6926 §6.2.7). An offer is TRANSITIONING: the
/// address is promised, not bound; a declined one ABANDONED, as dhcpd names it.
pub fn dhcp_state(s: LeaseState) -> u8 {
    match s {
        LeaseState::Active => state::ACTIVE,
        LeaseState::Expired => state::EXPIRED,
        LeaseState::Released => state::RELEASED,
        LeaseState::Declined => state::ABANDONED,
        LeaseState::Partner => state::REMOTE,
        LeaseState::Offered => state::TRANSITIONING,
        LeaseState::Free | LeaseState::Foreign => state::AVAILABLE,
    }
}

/// What every reply of one connection has in common.
#[derive(Debug, Clone, Copy)]
pub struct Replier {
    /// The server's address on the connection (option 54).
    pub server_id: Ipv4Addr,
    /// Whether every binding is this server's own writing (no failover partner), so
    /// data-source (157) can say so; with a partner the table does not record which
    /// server wrote a binding last, and the option is left out rather than guessed.
    pub all_local: bool,
}

impl Replier {
    /// Writes the message for one binding answering `q` into `out` (at least
    /// `MAX_FRAME` octets gives room for any), prefix included, and returns its length:
    /// DHCPLEASEACTIVE for a bound lease with its times (51, 58, 59), client identifier
    /// (61) and last transaction (91) as RFC 4388 gives them; DHCPLEASEUNASSIGNED for the
    /// others, with the client they were last bound to. Both carry the relay agent
    /// information stored with the binding (82), base-time (152), start-time-of-state
    /// (153) when known, dhcp-state (156) and, when it can be told, data-source (157).
    pub fn binding(
        &self,
        q: &Query<'_>,
        b: &Binding,
        now: u64,
        out: &mut [u8],
    ) -> Result<usize, WireError> {
        let kind = if b.active() {
            msg::LEASEACTIVE
        } else {
            msg::LEASEUNASSIGNED
        };
        self.frame(&q.req.msg, out, |w| {
            w.set_ciaddr(b.addr);
            w.set_hardware(b.htype, b.hlen, &b.hw);
            w.option(code::MESSAGE_TYPE, &[kind])?;
            w.option_ip(code::SERVER_ID, self.server_id)?;
            if b.active() {
                write_binding(w, b, now, q.req.parameter_list)?;
            } else {
                if let Some(id) = &b.client_id {
                    w.option(code::CLIENT_ID, id)?;
                }
                if b.cltt != 0 {
                    let since = now.saturating_sub(b.cltt).min(u64::from(u32::MAX)) as u32;
                    w.option_u32(opt::CLIENT_LAST_TRANSACTION_TIME, since)?;
                }
            }
            if let Some(agent) = &b.agent {
                w.option(code::RELAY_AGENT_INFO, agent)?;
            }
            w.option_u32(opt::BASE_TIME, clamp(now))?;
            if let Some(t) = state_start(b) {
                w.option_u32(opt::START_TIME_OF_STATE, clamp(now.saturating_sub(t)))?;
            }
            w.option(opt::DHCP_STATE, &[dhcp_state(b.state)])?;
            if self.all_local {
                w.option(opt::DATA_SOURCE, &[0])?;
            }
            Ok(())
        })
    }

    /// DHCPLEASEQUERYDONE: the query `q` has had every binding.
    pub fn done(&self, q: &Query<'_>, out: &mut [u8]) -> Result<usize, WireError> {
        self.frame(&q.req.msg, out, |w| {
            w.option(code::MESSAGE_TYPE, &[msg::LEASEQUERYDONE])?;
            w.option_ip(code::SERVER_ID, self.server_id)
        })
    }

    /// DHCPLEASEQUERYSTATUS for the query of `xid`: `status` (see [`status`]) and a
    /// message for whoever reads the requester's log.
    pub fn status(
        &self,
        xid: u32,
        status: u8,
        text: &str,
        out: &mut [u8],
    ) -> Result<usize, WireError> {
        // The query may be unreadable, so the reply is made to a bare header with its xid.
        let mut head = [0u8; MIN_FRAMED + 1];
        head[4..8].copy_from_slice(&xid.to_be_bytes());
        head[236..240].copy_from_slice(&[99, 130, 83, 99]);
        head[MIN_FRAMED] = code::END;
        let bare = Message::parse(&head)?;
        let text = &text.as_bytes()[..text.len().min(254)];
        let mut value = [0u8; 255];
        value[0] = status;
        value[1..=text.len()].copy_from_slice(text);
        self.frame(&bare, out, |w| {
            w.option(code::MESSAGE_TYPE, &[msg::LEASEQUERYSTATUS])?;
            w.option_ip(code::SERVER_ID, self.server_id)?;
            w.option(opt::STATUS_CODE, &value[..=text.len()])
        })
    }

    /// Writes a reply to `req` after the size prefix and fills the prefix in.
    fn frame(
        &self,
        req: &Message<'_>,
        out: &mut [u8],
        body: impl FnOnce(&mut Writer<'_>) -> Result<(), WireError>,
    ) -> Result<usize, WireError> {
        let (size, rest) = out
            .split_first_chunk_mut::<SIZE_PREFIX>()
            .ok_or(WireError::NoSpace)?;
        let mut w = Writer::reply_to(rest, req, usize::from(u16::MAX))?;
        body(&mut w)?;
        let len = w.finish();
        *size = (len as u16).to_be_bytes();
        Ok(SIZE_PREFIX + len)
    }
}

fn clamp(secs: u64) -> u32 {
    secs.min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests;
