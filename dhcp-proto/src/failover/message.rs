//! The failover messages by what they mean (draft §7–§8): the state machine reads and
//! writes these, and `wire` turns them into the bytes ISC dhcpd sends. Only what a
//! message must carry is required here; what is absent stays `None`, so a partner that
//! leaves out an optional field is still understood.

use super::wire::{
    self, code, ip_flags, server_flags, BindingStatus, FailoverOption as O, MessageType,
    RejectReason,
};
use super::{Hba, ServerState};
use crate::lease::{BindingState, HwAddr, Lease, LeaseFlags};
use crate::wire::code as dhcp_code;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub message: String,
}

impl Reject {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Reject {
            reason,
            message: message.into(),
        }
    }
}

/// A message with its header fields: the transaction id pairs a reply with its
/// request, the time lets the receiver judge the clocks' skew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub xid: u32,
    pub time: u32,
    pub msg: Msg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The primary opens the partnership (draft §7.1.1).
    Connect(Connect),
    /// The secondary accepts, or refuses with a reason.
    ConnectAck(ConnectAck),
    /// A server tells its state; `startup` while it has not yet heard its partner.
    State {
        state: ServerState,
        startup: bool,
        stos: u32,
    },
    /// Keepalive.
    Contact,
    Disconnect(Reject),
    /// One lease's binding as the sender holds it.
    BndUpd(Lease),
    /// The answer to a BNDUPD with the same xid: the binding as the receiver now holds
    /// it (its potential expiry is what the sender may count on: the sender's tsfp),
    /// or why it was refused.
    BndAck(Lease, Option<Reject>),
    /// Send me what I have not acknowledged.
    UpdReq,
    /// Send me every binding.
    UpdReqAll,
    /// Everything the UPDREQ(ALL) asked for was sent and acknowledged.
    UpdDone,
    /// Please balance the free pools.
    PoolReq,
    PoolResp {
        leases: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub name: String,
    pub max_unacked: u32,
    pub receive_timer: u32,
    /// Required from the primary; the secondary takes it as the pair's MCLT.
    pub mclt: Option<u32>,
    /// Required from the primary; the secondary load-balances by it.
    pub hba: Option<Hba>,
    pub vendor: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAck {
    pub name: Option<String>,
    pub max_unacked: Option<u32>,
    pub receive_timer: Option<u32>,
    pub vendor: String,
    pub reject: Option<Reject>,
}

impl Msg {
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Connect(_) => "connect",
            Msg::ConnectAck(_) => "connect-ack",
            Msg::State { .. } => "state",
            Msg::Contact => "contact",
            Msg::Disconnect(_) => "disconnect",
            Msg::BndUpd(_) => "bind-update",
            Msg::BndAck { .. } => "bind-ack",
            Msg::UpdReq => "update-request",
            Msg::UpdReqAll => "update-request-all",
            Msg::UpdDone => "update-done",
            Msg::PoolReq => "pool-request",
            Msg::PoolResp { .. } => "pool-response",
        }
    }
}

/// Why bytes from the partner make no message we can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Wire(#[from] wire::Error),
    #[error("{0} lacks its required {1}")]
    Missing(&'static str, &'static str),
    #[error("{0} carries unknown {1} {2}")]
    Unknown(&'static str, &'static str, u8),
    #[error("message type {0} is not one of the failover protocol's")]
    UnknownType(u8),
}

impl Envelope {
    /// Reads one whole message (as `wire::frame_len` cut it from the stream).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m = wire::Message::decode(bytes)?;
        let get = |code| m.option(code);
        let text = |code| match get(code) {
            Some(O::RelationshipName(b) | O::Message(b) | O::VendorClass(b)) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        };
        let u32_of = |code| match get(code) {
            Some(O::MaxUnackedBndupd(v) | O::ReceiveTimer(v) | O::Mclt(v)) => Some(*v),
            Some(O::AddressesTransferred(v)) => Some(*v),
            _ => None,
        };
        let reject = || match get(code::REJECT_REASON) {
            Some(O::RejectReason(r)) => Some(Reject {
                reason: *r,
                message: text(code::MESSAGE).unwrap_or_default(),
            }),
            _ => None,
        };
        let name = m.msg_type.name();
        let msg = match m.msg_type {
            MessageType::Connect => Msg::Connect(Connect {
                name: text(code::RELATIONSHIP_NAME)
                    .ok_or(DecodeError::Missing(name, "relationship-name"))?,
                max_unacked: u32_of(code::MAX_UNACKED_BNDUPD).unwrap_or(1),
                receive_timer: u32_of(code::RECEIVE_TIMER).unwrap_or(30),
                mclt: u32_of(code::MCLT),
                hba: match get(code::HASH_BUCKET_ASSIGNMENT) {
                    Some(O::HashBucketAssignment(h)) => Some(Hba(*h)),
                    _ => None,
                },
                vendor: text(code::VENDOR_CLASS).unwrap_or_default(),
            }),
            MessageType::ConnectAck => Msg::ConnectAck(ConnectAck {
                name: text(code::RELATIONSHIP_NAME),
                max_unacked: u32_of(code::MAX_UNACKED_BNDUPD),
                receive_timer: u32_of(code::RECEIVE_TIMER),
                vendor: text(code::VENDOR_CLASS).unwrap_or_default(),
                reject: reject(),
            }),
            MessageType::State => Msg::State {
                state: match get(code::SERVER_STATE) {
                    Some(O::ServerState(s)) => *s,
                    _ => return Err(DecodeError::Missing(name, "server-state")),
                },
                startup: matches!(get(code::SERVER_FLAGS),
                    Some(O::ServerFlags(f)) if f & server_flags::STARTUP != 0),
                stos: match get(code::START_TIME_OF_STATE) {
                    Some(O::StartTimeOfState(t)) => *t,
                    _ => 0,
                },
            },
            MessageType::Contact => Msg::Contact,
            MessageType::Disconnect => Msg::Disconnect(reject().unwrap_or(Reject {
                reason: RejectReason::Unknown,
                message: text(code::MESSAGE).unwrap_or_default(),
            })),
            MessageType::BndUpd => Msg::BndUpd(binding(&m, true)?),
            MessageType::BndAck => Msg::BndAck(binding(&m, false)?, reject()),
            MessageType::UpdReq => Msg::UpdReq,
            MessageType::UpdReqAll => Msg::UpdReqAll,
            MessageType::UpdDone => Msg::UpdDone,
            MessageType::PoolReq => Msg::PoolReq,
            MessageType::PoolResp => Msg::PoolResp {
                leases: u32_of(code::ADDRESSES_TRANSFERRED).unwrap_or(0),
            },
            MessageType::Other(t) => return Err(DecodeError::UnknownType(t)),
        };
        Ok(Envelope {
            xid: m.xid,
            time: m.time,
            msg,
        })
    }

    /// Appends the message's octets to `out`, options in the order dhcpd sends them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let o = |opt: O<&[u8]>| opt.to_owned_value();
        let (kind, options): (MessageType, Vec<O<Vec<u8>>>) = match &self.msg {
            Msg::Connect(c) => {
                let mut v = vec![
                    o(O::RelationshipName(c.name.as_bytes())),
                    O::MaxUnackedBndupd(c.max_unacked),
                    O::ReceiveTimer(c.receive_timer),
                    o(O::VendorClass(c.vendor.as_bytes())),
                    O::ProtocolVersion(wire::PROTOCOL_VERSION),
                    O::TlsRequest(wire::tls::NONE),
                ];
                v.extend(c.mclt.map(O::Mclt));
                v.extend(c.hba.map(|h| O::HashBucketAssignment(h.0)));
                (MessageType::Connect, v)
            }
            Msg::ConnectAck(a) => {
                let mut v = Vec::new();
                v.extend(
                    a.name
                        .as_deref()
                        .map(|n| o(O::RelationshipName(n.as_bytes()))),
                );
                v.extend(a.max_unacked.map(O::MaxUnackedBndupd));
                v.extend(a.receive_timer.map(O::ReceiveTimer));
                v.push(o(O::VendorClass(a.vendor.as_bytes())));
                v.push(O::ProtocolVersion(wire::PROTOCOL_VERSION));
                v.push(O::TlsReply(wire::tls::NONE));
                push_reject(&mut v, a.reject.as_ref());
                (MessageType::ConnectAck, v)
            }
            Msg::State {
                state,
                startup,
                stos,
            } => (
                MessageType::State,
                vec![
                    O::ServerState(*state),
                    O::ServerFlags(if *startup { server_flags::STARTUP } else { 0 }),
                    O::StartTimeOfState(*stos),
                ],
            ),
            Msg::Contact => (MessageType::Contact, Vec::new()),
            Msg::Disconnect(r) => {
                let mut v = Vec::new();
                push_reject(&mut v, Some(r));
                (MessageType::Disconnect, v)
            }
            Msg::BndUpd(l) => (MessageType::BndUpd, binding_options(l)),
            Msg::BndAck(l, r) => {
                let mut v = binding_options(l);
                push_reject(&mut v, r.as_ref());
                (MessageType::BndAck, v)
            }
            Msg::UpdReq => (MessageType::UpdReq, Vec::new()),
            Msg::UpdReqAll => (MessageType::UpdReqAll, Vec::new()),
            Msg::UpdDone => (MessageType::UpdDone, Vec::new()),
            Msg::PoolReq => (MessageType::PoolReq, Vec::new()),
            Msg::PoolResp { leases } => (
                MessageType::PoolResp,
                vec![O::AddressesTransferred(*leases)],
            ),
        };
        let m = wire::Message {
            msg_type: kind,
            time: self.time,
            xid: self.xid,
            extra_header: Vec::new(),
            options,
        };
        let start = out.len();
        out.resize(start + m.buffer_len(), 0);
        match m.emit(&mut out[start..]) {
            Ok(n) => out.truncate(start + n),
            // Only an oversized message fails: a client id near 255 octets plus a long
            // message text. Sent without the text, it still says what matters.
            Err(_) => {
                out.truncate(start);
                let trimmed = wire::Message {
                    options: m
                        .options
                        .into_iter()
                        .filter(|x| !matches!(x, O::Message(_)))
                        .collect(),
                    ..m
                };
                out.extend(trimmed.to_bytes().unwrap_or_default());
            }
        }
    }
}

fn push_reject(v: &mut Vec<O<Vec<u8>>>, r: Option<&Reject>) {
    if let Some(r) = r {
        v.push(O::RejectReason(r.reason));
        if !r.message.is_empty() {
            v.push(O::Message(r.message.as_bytes().to_vec()));
        }
    }
}

/// A BNDUPD's or BNDACK's options, as dhcpd's send_bind_update lists them.
fn binding_options(l: &Lease) -> Vec<O<Vec<u8>>> {
    let mut v = vec![
        O::AssignedIpAddress(l.addr),
        O::BindingStatus(BindingStatus::from(l.state as u8)),
    ];
    if !l.client_id.is_empty() {
        v.push(O::ClientIdentifier(l.client_id.to_vec()));
    }
    if !l.hw.bytes().is_empty() {
        let mut hw = vec![l.hw.htype];
        hw.extend_from_slice(l.hw.bytes());
        v.push(O::ClientHardwareAddress(hw));
    }
    v.push(O::LeaseExpirationTime(wire_time(l.ends)));
    v.push(O::PotentialExpirationTime(wire_time(l.tstp)));
    v.push(O::StartTimeOfState(wire_time(l.starts)));
    if l.cltt != 0 {
        v.push(O::ClientLastTransactionTime(wire_time(l.cltt)));
    }
    let flags = l.flags.0 & (ip_flags::RESERVED | ip_flags::BOOTP);
    if flags != 0 {
        v.push(O::IpFlags(flags));
    }
    // The draft's client-request-options carries the options of the client's request
    // the partner needs: here the relay agent information (82) the lease was granted
    // through, so either server answers a leasequery with it. dhcpd parses the option
    // and leaves it unused.
    if !l.agent_info.is_empty() && l.agent_info.len() <= usize::from(u8::MAX) {
        let mut opts = vec![dhcp_code::RELAY_AGENT_INFO, l.agent_info.len() as u8];
        opts.extend_from_slice(&l.agent_info);
        v.push(O::ClientRequestOptions(opts));
    }
    v
}

/// The relay agent information among a partner's client-request-options, if any: DHCP
/// options (code, length, value) without PAD or END, as the draft has them.
fn agent_info(request_options: &[u8]) -> Box<[u8]> {
    crate::wire::relay::SubOptions::new(request_options)
        .find(|o| o.0 == dhcp_code::RELAY_AGENT_INFO)
        .map_or_else(|| Box::new([]) as Box<[u8]>, |o| o.1.into())
}

/// Seconds on the wire are 32 bits; "never" is the largest.
fn wire_time(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

fn local_time(t: u32) -> u64 {
    if t == u32::MAX {
        crate::lease::NEVER
    } else {
        u64::from(t)
    }
}

/// The binding a BNDUPD carries, or a BNDACK echoes. dhcpd's BNDACK names the address
/// but not always the state; `need_state` makes its absence an error.
fn binding(m: &wire::Message, need_state: bool) -> Result<Lease, DecodeError> {
    let name = m.msg_type.name();
    let addr = match m.option(code::ASSIGNED_IP_ADDRESS) {
        Some(O::AssignedIpAddress(a)) => *a,
        _ => return Err(DecodeError::Missing(name, "assigned-IP-address")),
    };
    let state = match m.option(code::BINDING_STATUS) {
        Some(O::BindingStatus(s)) => {
            let v = u8::from(*s);
            BindingState::from_u8(v).ok_or(DecodeError::Unknown(name, "binding status", v))?
        }
        _ if need_state => return Err(DecodeError::Missing(name, "binding-status")),
        _ => BindingState::Free,
    };
    let time = |code| match m.option(code) {
        Some(
            O::LeaseExpirationTime(t)
            | O::PotentialExpirationTime(t)
            | O::StartTimeOfState(t)
            | O::ClientLastTransactionTime(t),
        ) => local_time(*t),
        _ => 0,
    };
    let hw = match m.option(code::CLIENT_HARDWARE_ADDRESS) {
        Some(O::ClientHardwareAddress(b)) if !b.is_empty() => HwAddr::new(b[0], &b[1..]),
        _ => HwAddr::default(),
    };
    let client_id: Box<[u8]> = match m.option(code::CLIENT_IDENTIFIER) {
        Some(O::ClientIdentifier(b)) => b.as_slice().into(),
        _ => Box::new([]),
    };
    let flags = match m.option(code::IP_FLAGS) {
        Some(O::IpFlags(f)) => LeaseFlags(f & (ip_flags::RESERVED | ip_flags::BOOTP)),
        _ => LeaseFlags(0),
    };
    Ok(Lease {
        stamp: 0,
        addr,
        state,
        hw,
        client_id,
        agent_info: match m.option(code::CLIENT_REQUEST_OPTIONS) {
            Some(O::ClientRequestOptions(b)) => agent_info(b),
            _ => Box::new([]),
        },
        starts: time(code::START_TIME_OF_STATE),
        ends: time(code::LEASE_EXPIRATION_TIME),
        cltt: time(code::CLIENT_LAST_TRANSACTION_TIME),
        tstp: time(code::POTENTIAL_EXPIRATION_TIME),
        tsfp: 0,
        atsfp: 0,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn lease() -> Lease {
        Lease {
            stamp: 0,
            addr: Ipv4Addr::new(198, 18, 1, 9),
            state: BindingState::Active,
            hw: HwAddr::new(1, &[2, 0, 0, 0, 0, 9]),
            client_id: Box::new([1, 2, 0, 0, 0, 0, 9]),
            agent_info: Box::new([]),
            starts: 1_700_000_000,
            ends: 1_700_000_600,
            cltt: 1_700_000_000,
            tstp: 1_700_000_900,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags(LeaseFlags::RESERVED),
        }
    }

    #[test]
    fn every_message_survives_encode_and_decode() {
        let reject = Reject::new(RejectReason::InvalidPartner, "no such relationship");
        let messages = [
            Msg::Connect(Connect {
                name: "pair".into(),
                max_unacked: 10,
                receive_timer: 30,
                mclt: Some(3600),
                hba: Some(Hba::split(128)),
                vendor: "dhcp-server-test".into(),
            }),
            Msg::ConnectAck(ConnectAck {
                name: Some("pair".into()),
                max_unacked: Some(10),
                receive_timer: Some(30),
                vendor: "isc-4.4.3-P1".into(),
                reject: None,
            }),
            Msg::ConnectAck(ConnectAck {
                name: Some("pair".into()),
                max_unacked: Some(10),
                receive_timer: Some(30),
                vendor: String::new(),
                reject: Some(reject.clone()),
            }),
            Msg::State {
                state: ServerState::Normal,
                startup: true,
                stos: 1_700_000_000,
            },
            Msg::Contact,
            Msg::Disconnect(reject.clone()),
            Msg::BndUpd(lease()),
            Msg::BndUpd(Lease {
                agent_info: Box::new([1, 4, b'p', b'o', b'r', b't', 2, 1, 9]),
                ..lease()
            }),
            Msg::BndAck(lease(), None),
            Msg::BndAck(lease(), Some(reject)),
            Msg::UpdReq,
            Msg::UpdReqAll,
            Msg::UpdDone,
            Msg::PoolReq,
            Msg::PoolResp { leases: 42 },
        ];
        for msg in messages {
            let env = Envelope {
                xid: 7,
                time: 1_700_000_001,
                msg,
            };
            let mut bytes = Vec::new();
            env.encode(&mut bytes);
            assert_eq!(wire::frame_len(&bytes), Ok(Some(bytes.len())));
            assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        }
    }

    #[test]
    fn a_binding_update_without_its_address_is_refused() {
        let m = wire::Message::new(MessageType::BndUpd, 0, 1)
            .with(O::BindingStatus(BindingStatus::Active));
        let bytes = m.to_bytes().unwrap();
        assert_eq!(
            Envelope::decode(&bytes),
            Err(DecodeError::Missing("bind-update", "assigned-IP-address"))
        );
    }

    #[test]
    fn no_bytes_make_decode_panic() {
        let mut env = Vec::new();
        Envelope {
            xid: 1,
            time: 2,
            msg: Msg::BndUpd(lease()),
        }
        .encode(&mut env);
        for cut in 0..env.len() {
            let _ = Envelope::decode(&env[..cut]);
            let mut flipped = env.clone();
            flipped[cut] ^= 0xff;
            let _ = Envelope::decode(&flipped);
        }
    }
}
