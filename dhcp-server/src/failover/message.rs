//! The failover messages by what they mean (draft §7–§8): the state machine reads and
//! writes these, and `wire` turns them into the bytes ISC dhcpd sends. Only what a
//! message must carry is required here; what is absent stays `None`, so a partner that
//! leaves out an optional field is still understood.

use super::{Hba, ServerState};
use crate::journal::Lease;

/// Why a partner refused a connection or an update (draft §12.25, ISC's FTR_ codes).
pub mod reason {
    pub const ILLEGAL_IP_ADDR: u8 = 1;
    pub const FATAL_CONFLICT: u8 = 2;
    pub const MISSING_BINDINFO: u8 = 3;
    pub const TIME_MISMATCH: u8 = 4;
    pub const INVALID_MCLT: u8 = 5;
    pub const MISC_REJECT: u8 = 6;
    pub const DUP_CONNECTION: u8 = 7;
    pub const INVALID_PARTNER: u8 = 8;
    pub const VERSION_MISMATCH: u8 = 14;
    pub const OUTDATED_BIND_INFO: u8 = 15;
    pub const LESS_CRIT_BIND_INFO: u8 = 16;
    pub const HBA_CONFLICT: u8 = 18;
    pub const IP_NOT_RESERVED: u8 = 19;

    /// The phrase dhcpd logs for a reason.
    pub fn describe(code: u8) -> &'static str {
        match code {
            ILLEGAL_IP_ADDR => "Illegal IP address (not part of any address pool)",
            FATAL_CONFLICT => "Fatal conflict exists: address in use by other client",
            MISSING_BINDINFO => "Missing binding information",
            TIME_MISMATCH => "Connection rejected, time mismatch too great",
            INVALID_MCLT => "Connection rejected, invalid MCLT",
            MISC_REJECT => "Connection rejected, unknown reason",
            DUP_CONNECTION => "Connection rejected, duplicate connection",
            INVALID_PARTNER => "Connection rejected, invalid failover partner",
            VERSION_MISMATCH => "Connection rejected, version mismatch",
            OUTDATED_BIND_INFO => "Outdated binding information",
            LESS_CRIT_BIND_INFO => "Less critical binding information",
            HBA_CONFLICT => "Connection rejected, inconsistent load balancing",
            IP_NOT_RESERVED => "Address is not reserved",
            _ => "Unknown reason",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: u8,
    pub message: String,
}

impl Reject {
    pub fn new(reason: u8, message: impl Into<String>) -> Self {
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
