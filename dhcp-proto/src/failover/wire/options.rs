//! Failover options (draft §12) with ISC dhcpd 4.4's codes and value formats, and the
//! enumerations their values draw from (binding status §12.3, reject reason §12.21,
//! server state §12.24).
//!
//! [`FailoverOption`] is generic over where variable-length values live: `&[u8]` when
//! read in place from a message, `Vec<u8>` in an owned [`super::Message`]. Fixed-size
//! values must have exactly their size, as dhcpd requires (it drops the connection
//! otherwise); variable-size values take any length, as dhcpd does.

use std::net::Ipv4Addr;

use super::Error;

/// Option codes (draft §12, ISC's FTO_ numbers; the draft numbers them alphabetically).
pub mod code {
    pub const ADDRESSES_TRANSFERRED: u16 = 1;
    pub const ASSIGNED_IP_ADDRESS: u16 = 2;
    pub const BINDING_STATUS: u16 = 3;
    pub const CLIENT_IDENTIFIER: u16 = 4;
    pub const CLIENT_HARDWARE_ADDRESS: u16 = 5;
    pub const CLIENT_LAST_TRANSACTION_TIME: u16 = 6;
    pub const CLIENT_REPLY_OPTIONS: u16 = 7;
    pub const CLIENT_REQUEST_OPTIONS: u16 = 8;
    pub const DDNS: u16 = 9;
    pub const DELAYED_SERVICE: u16 = 10;
    pub const HASH_BUCKET_ASSIGNMENT: u16 = 11;
    pub const IP_FLAGS: u16 = 12;
    pub const LEASE_EXPIRATION_TIME: u16 = 13;
    pub const MAX_UNACKED_BNDUPD: u16 = 14;
    pub const MCLT: u16 = 15;
    pub const MESSAGE: u16 = 16;
    pub const MESSAGE_DIGEST: u16 = 17;
    pub const POTENTIAL_EXPIRATION_TIME: u16 = 18;
    pub const RECEIVE_TIMER: u16 = 19;
    pub const PROTOCOL_VERSION: u16 = 20;
    pub const REJECT_REASON: u16 = 21;
    pub const RELATIONSHIP_NAME: u16 = 22;
    pub const SERVER_FLAGS: u16 = 23;
    pub const SERVER_STATE: u16 = 24;
    pub const START_TIME_OF_STATE: u16 = 25;
    pub const TLS_REPLY: u16 = 26;
    pub const TLS_REQUEST: u16 = 27;
    pub const VENDOR_CLASS: u16 = 28;
    pub const VENDOR_OPTIONS: u16 = 29;
    /// The highest code dhcpd knows; it skips any other (and code 0).
    pub const MAX_KNOWN: u16 = VENDOR_OPTIONS;
}

/// Bits of the server-flags option (§12.23).
pub mod server_flags {
    /// The sender is in STARTUP; its server-state is then the state it will return to.
    pub const STARTUP: u8 = 0x01;
}

/// Bits of the IP-flags option (§12.12), numbered from the least significant bit.
pub mod ip_flags {
    /// The address is reserved for the client named in the update.
    pub const RESERVED: u16 = 0x0001;
    /// The address was given to a BOOTP client.
    pub const BOOTP: u16 = 0x0002;
}

/// Bits of the DDNS option's flags (§12.9), numbered from the least significant bit.
pub mod ddns_flags {
    /// Name-to-address (A) update done.
    pub const C: u16 = 0x0001;
    /// The server controls the A record.
    pub const A: u16 = 0x0002;
    /// Address-to-name (PTR) update done.
    pub const D: u16 = 0x0004;
    /// The server controls the PTR record.
    pub const P: u16 = 0x0008;
}

/// Values of the TLS-request (§12.27) and TLS-reply (§12.26) options; dhcpd sends 0.
pub mod tls {
    pub const NONE: u8 = 0;
    pub const DESIRED: u8 = 1;
    pub const REQUIRED: u8 = 2;
}

/// The one message-digest type the draft defines (§12.17, first octet of the value).
pub const HMAC_MD5: u8 = 1;

/// Length of the hash bucket assignment (§12.11): 256 buckets, one bit each.
pub const HBA_LEN: usize = 32;

/// A lease's binding status (§12.3, ISC's FTS_ numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingStatus {
    /// Available to the primary.
    Free,
    Active,
    Expired,
    Released,
    Abandoned,
    /// Freed by an external agent (an operator).
    Reset,
    /// Available to the secondary.
    Backup,
    /// Any other value, kept as it came.
    Other(u8),
}

impl BindingStatus {
    /// The name dhcpd uses in logs and its leases file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Released => "released",
            Self::Abandoned => "abandoned",
            Self::Reset => "reset",
            Self::Backup => "backup",
            Self::Other(_) => "unknown",
        }
    }
}

impl From<u8> for BindingStatus {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Free,
            2 => Self::Active,
            3 => Self::Expired,
            4 => Self::Released,
            5 => Self::Abandoned,
            6 => Self::Reset,
            7 => Self::Backup,
            other => Self::Other(other),
        }
    }
}

impl From<BindingStatus> for u8 {
    fn from(s: BindingStatus) -> u8 {
        match s {
            BindingStatus::Free => 1,
            BindingStatus::Active => 2,
            BindingStatus::Expired => 3,
            BindingStatus::Released => 4,
            BindingStatus::Abandoned => 5,
            BindingStatus::Reset => 6,
            BindingStatus::Backup => 7,
            BindingStatus::Other(v) => v,
        }
    }
}

/// A failover endpoint's state (§12.24, ISC's `enum failover_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// 0: ISC's unknown-state (not a draft value; a peer dhcpd has not heard from).
    Unknown,
    /// The draft says STARTUP is never sent (§12.24 note); dhcpd sends the state it
    /// will return to, with the STARTUP server flag.
    Startup,
    Normal,
    CommunicationsInterrupted,
    PartnerDown,
    PotentialConflict,
    Recover,
    Paused,
    Shutdown,
    RecoverDone,
    ResolutionInterrupted,
    ConflictDone,
    /// 254: the draft names RECOVER-WAIT but gives it no number; ISC uses 254.
    RecoverWait,
    /// Any other value, kept as it came.
    Other(u8),
}

impl ServerState {
    /// The name dhcpd logs ("failover peer X: I move from recover to normal").
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown-state",
            Self::Startup => "startup",
            Self::Normal => "normal",
            Self::CommunicationsInterrupted => "communications-interrupted",
            Self::PartnerDown => "partner-down",
            Self::PotentialConflict => "potential-conflict",
            Self::Recover => "recover",
            Self::Paused => "paused",
            Self::Shutdown => "shutdown",
            Self::RecoverDone => "recover-done",
            Self::ResolutionInterrupted => "resolution-interrupted",
            Self::ConflictDone => "conflict-done",
            Self::RecoverWait => "recover-wait",
            Self::Other(_) => "unknown-state",
        }
    }
}

impl From<u8> for ServerState {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::Startup,
            2 => Self::Normal,
            3 => Self::CommunicationsInterrupted,
            4 => Self::PartnerDown,
            5 => Self::PotentialConflict,
            6 => Self::Recover,
            7 => Self::Paused,
            8 => Self::Shutdown,
            9 => Self::RecoverDone,
            10 => Self::ResolutionInterrupted,
            11 => Self::ConflictDone,
            254 => Self::RecoverWait,
            other => Self::Other(other),
        }
    }
}

impl From<ServerState> for u8 {
    fn from(s: ServerState) -> u8 {
        match s {
            ServerState::Unknown => 0,
            ServerState::Startup => 1,
            ServerState::Normal => 2,
            ServerState::CommunicationsInterrupted => 3,
            ServerState::PartnerDown => 4,
            ServerState::PotentialConflict => 5,
            ServerState::Recover => 6,
            ServerState::Paused => 7,
            ServerState::Shutdown => 8,
            ServerState::RecoverDone => 9,
            ServerState::ResolutionInterrupted => 10,
            ServerState::ConflictDone => 11,
            ServerState::RecoverWait => 254,
            ServerState::Other(v) => v,
        }
    }
}

impl core::fmt::Display for BindingStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Other(v) => write!(f, "unknown-binding-state-{v}"),
            known => f.write_str(known.name()),
        }
    }
}

/// The name dhcpd logs; an unassigned value prints as unknown-state like dhcpd's.
impl core::fmt::Display for ServerState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// dhcpd's sentence for the reason, "Undefined-N: ..." for an unassigned one.
impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Other(v) => write!(
                f,
                "Undefined-{v}: This reason code is not defined in the protocol standard."
            ),
            known => f.write_str(known.description()),
        }
    }
}

/// Why a connection or a binding update was refused (§12.21, ISC's FTR_ numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    IllegalIpAddr,
    FatalConflict,
    MissingBindInfo,
    TimeMismatch,
    InvalidMclt,
    MiscReject,
    DuplicateConnection,
    InvalidPartner,
    TlsUnsupported,
    TlsUnconfigured,
    TlsRequired,
    DigestUnsupported,
    DigestUnconfigured,
    VersionMismatch,
    OutdatedBindInfo,
    LessCriticalBindInfo,
    NoTraffic,
    HbaConflict,
    IpNotReserved,
    IpDigestFailure,
    IpMissingDigest,
    /// 254: an error that matches no other reason.
    Unknown,
    /// Any other value, kept as it came.
    Other(u8),
}

impl RejectReason {
    /// The sentence dhcpd logs for the reason (`dhcp_failover_reject_reason_print`).
    pub fn description(self) -> &'static str {
        match self {
            Self::IllegalIpAddr => "Illegal IP address (not part of any address pool).",
            Self::FatalConflict => "Fatal conflict exists: address in use by other client.",
            Self::MissingBindInfo => "Missing binding information.",
            Self::TimeMismatch => "Connection rejected, time mismatch too great.",
            Self::InvalidMclt => "Connection rejected, invalid MCLT.",
            Self::MiscReject => "Connection rejected, unknown reason.",
            Self::DuplicateConnection => "Connection rejected, duplicate connection.",
            Self::InvalidPartner => "Connection rejected, invalid failover partner.",
            Self::TlsUnsupported => "TLS not supported.",
            Self::TlsUnconfigured => "TLS supported but not configured.",
            Self::TlsRequired => "TLS required but not supported by partner.",
            Self::DigestUnsupported => "Message digest not supported.",
            Self::DigestUnconfigured => "Message digest not configured.",
            Self::VersionMismatch => "Protocol version mismatch.",
            Self::OutdatedBindInfo => "Outdated binding information.",
            Self::LessCriticalBindInfo => "Less critical binding information.",
            Self::NoTraffic => "No traffic within sufficient time.",
            Self::HbaConflict => "Hash bucket assignment conflict.",
            Self::IpNotReserved => "IP not reserved on this server.",
            Self::IpDigestFailure => "Message digest failed to compare.",
            Self::IpMissingDigest => "Missing message digest.",
            Self::Unknown => "Unknown Error.",
            Self::Other(_) => "This reason code is not defined in the protocol standard.",
        }
    }
}

impl From<u8> for RejectReason {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::IllegalIpAddr,
            2 => Self::FatalConflict,
            3 => Self::MissingBindInfo,
            4 => Self::TimeMismatch,
            5 => Self::InvalidMclt,
            6 => Self::MiscReject,
            7 => Self::DuplicateConnection,
            8 => Self::InvalidPartner,
            9 => Self::TlsUnsupported,
            10 => Self::TlsUnconfigured,
            11 => Self::TlsRequired,
            12 => Self::DigestUnsupported,
            13 => Self::DigestUnconfigured,
            14 => Self::VersionMismatch,
            15 => Self::OutdatedBindInfo,
            16 => Self::LessCriticalBindInfo,
            17 => Self::NoTraffic,
            18 => Self::HbaConflict,
            19 => Self::IpNotReserved,
            20 => Self::IpDigestFailure,
            21 => Self::IpMissingDigest,
            254 => Self::Unknown,
            other => Self::Other(other),
        }
    }
}

impl From<RejectReason> for u8 {
    fn from(r: RejectReason) -> u8 {
        match r {
            RejectReason::IllegalIpAddr => 1,
            RejectReason::FatalConflict => 2,
            RejectReason::MissingBindInfo => 3,
            RejectReason::TimeMismatch => 4,
            RejectReason::InvalidMclt => 5,
            RejectReason::MiscReject => 6,
            RejectReason::DuplicateConnection => 7,
            RejectReason::InvalidPartner => 8,
            RejectReason::TlsUnsupported => 9,
            RejectReason::TlsUnconfigured => 10,
            RejectReason::TlsRequired => 11,
            RejectReason::DigestUnsupported => 12,
            RejectReason::DigestUnconfigured => 13,
            RejectReason::VersionMismatch => 14,
            RejectReason::OutdatedBindInfo => 15,
            RejectReason::LessCriticalBindInfo => 16,
            RejectReason::NoTraffic => 17,
            RejectReason::HbaConflict => 18,
            RejectReason::IpNotReserved => 19,
            RejectReason::IpDigestFailure => 20,
            RejectReason::IpMissingDigest => 21,
            RejectReason::Unknown => 254,
            RejectReason::Other(v) => v,
        }
    }
}

/// One failover option with its typed value (draft §12). `B` holds variable-length
/// values: `&[u8]` in place, `Vec<u8>` owned. Times are absolute, seconds since 1970
/// UTC, unsigned (§6.2); MCLT and receive-timer are intervals in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailoverOption<B> {
    /// 1, u32 (§12.1): how many addresses a POOLREQ moved; in POOLRESP.
    AddressesTransferred(u32),
    /// 2, IPv4 (§12.2): the address a BNDUPD/BNDACK is about; first of its set.
    AssignedIpAddress(Ipv4Addr),
    /// 3, u8 (§12.3): the binding's state.
    BindingStatus(BindingStatus),
    /// 4, bytes (§12.4): DHCP option 61 as the client sent it (type octet included).
    ClientIdentifier(B),
    /// 5, bytes (§12.5): hardware type octet, then the address (dhcpd's `hbuf`).
    ClientHardwareAddress(B),
    /// 6, u32 time (§12.6): when the server last heard the client.
    ClientLastTransactionTime(u32),
    /// 7, bytes (§12.7): 4-octet magic number, then DHCP options of the reply.
    ClientReplyOptions(B),
    /// 8, bytes (§12.8): 4-octet magic number, then DHCP options of the request.
    ClientRequestOptions(B),
    /// 9, u16 flags then a DNS-encoded name (§12.9); flag bits in [`ddns_flags`].
    Ddns { flags: u16, name: B },
    /// 10, u8 seconds (§12.10): RFC 3074's delayed-service parameter.
    DelayedService(u8),
    /// 11, 32 octets (§12.11): the hash bucket assignment, sent in CONNECT. dhcpd sets
    /// bit `b & 7` of octet `b >> 3` for each bucket `b` the PRIMARY serves (the draft
    /// says the set bits are the secondary's).
    HashBucketAssignment([u8; HBA_LEN]),
    /// 12, u16 (§12.12): bits in [`ip_flags`]. The draft's figure says length 1 but
    /// draws two octets; dhcpd sends and requires 2.
    IpFlags(u16),
    /// 13, u32 time (§12.13): when the lease given to the client ends.
    LeaseExpirationTime(u32),
    /// 14, u32 (§12.14): how many BNDUPDs the sender accepts unacknowledged.
    MaxUnackedBndupd(u32),
    /// 15, u32 seconds (§12.15): maximum client lead time.
    Mclt(u32),
    /// 16, text (§12.16): a human-readable message, no terminating NUL from dhcpd.
    Message(B),
    /// 17, bytes (§12.17): type octet ([`HMAC_MD5`]) then the digest.
    MessageDigest(B),
    /// 18, u32 time (§12.18): the expiry the sender may grant at most.
    PotentialExpirationTime(u32),
    /// 19, u32 seconds (§12.19): silence after which the sender calls the link dead.
    ReceiveTimer(u32),
    /// 20, u8 (§12.20): [`super::PROTOCOL_VERSION`].
    ProtocolVersion(u8),
    /// 21, u8 (§12.21): why a connection or an update was refused.
    RejectReason(RejectReason),
    /// 22, text (§12.22): the failover peer's name, as configured.
    RelationshipName(B),
    /// 23, u8 (§12.23): bits in [`server_flags`].
    ServerFlags(u8),
    /// 24, u8 (§12.24): the sender's failover state.
    ServerState(ServerState),
    /// 25, u32 time (§12.25): in STATE, when the sender entered its state; in BNDUPD,
    /// when the binding entered its state (dhcpd's lease `starts`).
    StartTimeOfState(u32),
    /// 26, u8 (§12.26): in CONNECTACK; values in [`tls`].
    TlsReply(u8),
    /// 27, u8 (§12.27): in CONNECT; values in [`tls`].
    TlsRequest(u8),
    /// 28, text (§12.28): the implementation, "isc-4.4.3-P1" from dhcpd.
    VendorClass(B),
    /// 29, bytes (§12.29): vendor options in the failover option format.
    VendorOptions(B),
    /// Any other code (0, 30..): kept as it came. Must not carry a code above.
    Unknown { code: u16, data: B },
}

impl<B: AsRef<[u8]>> FailoverOption<B> {
    /// The option's code (§12).
    pub fn code(&self) -> u16 {
        match self {
            Self::AddressesTransferred(_) => code::ADDRESSES_TRANSFERRED,
            Self::AssignedIpAddress(_) => code::ASSIGNED_IP_ADDRESS,
            Self::BindingStatus(_) => code::BINDING_STATUS,
            Self::ClientIdentifier(_) => code::CLIENT_IDENTIFIER,
            Self::ClientHardwareAddress(_) => code::CLIENT_HARDWARE_ADDRESS,
            Self::ClientLastTransactionTime(_) => code::CLIENT_LAST_TRANSACTION_TIME,
            Self::ClientReplyOptions(_) => code::CLIENT_REPLY_OPTIONS,
            Self::ClientRequestOptions(_) => code::CLIENT_REQUEST_OPTIONS,
            Self::Ddns { .. } => code::DDNS,
            Self::DelayedService(_) => code::DELAYED_SERVICE,
            Self::HashBucketAssignment(_) => code::HASH_BUCKET_ASSIGNMENT,
            Self::IpFlags(_) => code::IP_FLAGS,
            Self::LeaseExpirationTime(_) => code::LEASE_EXPIRATION_TIME,
            Self::MaxUnackedBndupd(_) => code::MAX_UNACKED_BNDUPD,
            Self::Mclt(_) => code::MCLT,
            Self::Message(_) => code::MESSAGE,
            Self::MessageDigest(_) => code::MESSAGE_DIGEST,
            Self::PotentialExpirationTime(_) => code::POTENTIAL_EXPIRATION_TIME,
            Self::ReceiveTimer(_) => code::RECEIVE_TIMER,
            Self::ProtocolVersion(_) => code::PROTOCOL_VERSION,
            Self::RejectReason(_) => code::REJECT_REASON,
            Self::RelationshipName(_) => code::RELATIONSHIP_NAME,
            Self::ServerFlags(_) => code::SERVER_FLAGS,
            Self::ServerState(_) => code::SERVER_STATE,
            Self::StartTimeOfState(_) => code::START_TIME_OF_STATE,
            Self::TlsReply(_) => code::TLS_REPLY,
            Self::TlsRequest(_) => code::TLS_REQUEST,
            Self::VendorClass(_) => code::VENDOR_CLASS,
            Self::VendorOptions(_) => code::VENDOR_OPTIONS,
            Self::Unknown { code, .. } => *code,
        }
    }

    /// Length of the value on the wire (the 4-octet code and length excluded).
    pub fn data_len(&self) -> usize {
        match self {
            Self::BindingStatus(_)
            | Self::DelayedService(_)
            | Self::ProtocolVersion(_)
            | Self::RejectReason(_)
            | Self::ServerFlags(_)
            | Self::ServerState(_)
            | Self::TlsReply(_)
            | Self::TlsRequest(_) => 1,
            Self::IpFlags(_) => 2,
            Self::AddressesTransferred(_)
            | Self::AssignedIpAddress(_)
            | Self::ClientLastTransactionTime(_)
            | Self::LeaseExpirationTime(_)
            | Self::MaxUnackedBndupd(_)
            | Self::Mclt(_)
            | Self::PotentialExpirationTime(_)
            | Self::ReceiveTimer(_)
            | Self::StartTimeOfState(_) => 4,
            Self::HashBucketAssignment(_) => HBA_LEN,
            Self::Ddns { name, .. } => 2 + name.as_ref().len(),
            Self::ClientIdentifier(b)
            | Self::ClientHardwareAddress(b)
            | Self::ClientReplyOptions(b)
            | Self::ClientRequestOptions(b)
            | Self::Message(b)
            | Self::MessageDigest(b)
            | Self::RelationshipName(b)
            | Self::VendorClass(b)
            | Self::VendorOptions(b)
            | Self::Unknown { data: b, .. } => b.as_ref().len(),
        }
    }

    /// Length on the wire, code and length included.
    pub fn wire_len(&self) -> usize {
        4 + self.data_len()
    }

    /// Writes code, length and value at the start of `out`; the octets written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, Error> {
        let data_len = self.data_len();
        let len = u16::try_from(data_len).map_err(|_| Error::TooLong(data_len))?;
        let total = 4 + data_len;
        let out = out.get_mut(..total).ok_or(Error::NoSpace)?;
        out[..2].copy_from_slice(&self.code().to_be_bytes());
        out[2..4].copy_from_slice(&len.to_be_bytes());
        let v = &mut out[4..];
        match self {
            Self::BindingStatus(s) => v[0] = (*s).into(),
            Self::RejectReason(r) => v[0] = (*r).into(),
            Self::ServerState(s) => v[0] = (*s).into(),
            Self::DelayedService(x)
            | Self::ProtocolVersion(x)
            | Self::ServerFlags(x)
            | Self::TlsReply(x)
            | Self::TlsRequest(x) => v[0] = *x,
            Self::IpFlags(x) => v.copy_from_slice(&x.to_be_bytes()),
            Self::AssignedIpAddress(a) => v.copy_from_slice(&a.octets()),
            Self::AddressesTransferred(x)
            | Self::ClientLastTransactionTime(x)
            | Self::LeaseExpirationTime(x)
            | Self::MaxUnackedBndupd(x)
            | Self::Mclt(x)
            | Self::PotentialExpirationTime(x)
            | Self::ReceiveTimer(x)
            | Self::StartTimeOfState(x) => v.copy_from_slice(&x.to_be_bytes()),
            Self::HashBucketAssignment(h) => v.copy_from_slice(h),
            Self::Ddns { flags, name } => {
                v[..2].copy_from_slice(&flags.to_be_bytes());
                v[2..].copy_from_slice(name.as_ref());
            }
            Self::ClientIdentifier(b)
            | Self::ClientHardwareAddress(b)
            | Self::ClientReplyOptions(b)
            | Self::ClientRequestOptions(b)
            | Self::Message(b)
            | Self::MessageDigest(b)
            | Self::RelationshipName(b)
            | Self::VendorClass(b)
            | Self::VendorOptions(b)
            | Self::Unknown { data: b, .. } => v.copy_from_slice(b.as_ref()),
        }
        Ok(total)
    }

    /// The same option borrowing its value.
    pub fn as_borrowed(&self) -> FailoverOption<&[u8]> {
        self.map(|b| b.as_ref())
    }

    /// The same option owning its value.
    pub fn to_owned_value(&self) -> FailoverOption<Vec<u8>> {
        self.map(|b| b.as_ref().to_vec())
    }

    fn map<'s, C>(&'s self, f: impl Fn(&'s B) -> C) -> FailoverOption<C> {
        use FailoverOption as O;
        match self {
            O::AddressesTransferred(x) => O::AddressesTransferred(*x),
            O::AssignedIpAddress(x) => O::AssignedIpAddress(*x),
            O::BindingStatus(x) => O::BindingStatus(*x),
            O::ClientIdentifier(b) => O::ClientIdentifier(f(b)),
            O::ClientHardwareAddress(b) => O::ClientHardwareAddress(f(b)),
            O::ClientLastTransactionTime(x) => O::ClientLastTransactionTime(*x),
            O::ClientReplyOptions(b) => O::ClientReplyOptions(f(b)),
            O::ClientRequestOptions(b) => O::ClientRequestOptions(f(b)),
            O::Ddns { flags, name } => O::Ddns {
                flags: *flags,
                name: f(name),
            },
            O::DelayedService(x) => O::DelayedService(*x),
            O::HashBucketAssignment(x) => O::HashBucketAssignment(*x),
            O::IpFlags(x) => O::IpFlags(*x),
            O::LeaseExpirationTime(x) => O::LeaseExpirationTime(*x),
            O::MaxUnackedBndupd(x) => O::MaxUnackedBndupd(*x),
            O::Mclt(x) => O::Mclt(*x),
            O::Message(b) => O::Message(f(b)),
            O::MessageDigest(b) => O::MessageDigest(f(b)),
            O::PotentialExpirationTime(x) => O::PotentialExpirationTime(*x),
            O::ReceiveTimer(x) => O::ReceiveTimer(*x),
            O::ProtocolVersion(x) => O::ProtocolVersion(*x),
            O::RejectReason(x) => O::RejectReason(*x),
            O::RelationshipName(b) => O::RelationshipName(f(b)),
            O::ServerFlags(x) => O::ServerFlags(*x),
            O::ServerState(x) => O::ServerState(*x),
            O::StartTimeOfState(x) => O::StartTimeOfState(*x),
            O::TlsReply(x) => O::TlsReply(*x),
            O::TlsRequest(x) => O::TlsRequest(*x),
            O::VendorClass(b) => O::VendorClass(f(b)),
            O::VendorOptions(b) => O::VendorOptions(f(b)),
            O::Unknown { code, data } => O::Unknown {
                code: *code,
                data: f(data),
            },
        }
    }
}

impl<'a> FailoverOption<&'a [u8]> {
    /// Types the value of option `code` (§12). Fixed-size values must have their exact
    /// size (dhcpd drops the connection otherwise); DDNS needs at least its two flag
    /// octets; other values take any length. Unknown codes are kept raw.
    pub fn parse(code: u16, data: &'a [u8]) -> Result<Self, Error> {
        use FailoverOption as O;
        let bad = || Error::BadOptionLength {
            code,
            // A value longer than 65535 cannot come from a message; saturate anyway.
            len: u16::try_from(data.len()).unwrap_or(u16::MAX),
        };
        let u8v = || match *data {
            [v] => Ok(v),
            _ => Err(bad()),
        };
        let u32v = || match *data {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(bad()),
        };
        Ok(match code {
            code::ADDRESSES_TRANSFERRED => O::AddressesTransferred(u32v()?),
            code::ASSIGNED_IP_ADDRESS => O::AssignedIpAddress(Ipv4Addr::from(u32v()?)),
            code::BINDING_STATUS => O::BindingStatus(u8v()?.into()),
            code::CLIENT_IDENTIFIER => O::ClientIdentifier(data),
            code::CLIENT_HARDWARE_ADDRESS => O::ClientHardwareAddress(data),
            code::CLIENT_LAST_TRANSACTION_TIME => O::ClientLastTransactionTime(u32v()?),
            code::CLIENT_REPLY_OPTIONS => O::ClientReplyOptions(data),
            code::CLIENT_REQUEST_OPTIONS => O::ClientRequestOptions(data),
            code::DDNS => match *data {
                [f0, f1, ref name @ ..] => O::Ddns {
                    flags: u16::from_be_bytes([f0, f1]),
                    name,
                },
                _ => return Err(bad()),
            },
            code::DELAYED_SERVICE => O::DelayedService(u8v()?),
            code::HASH_BUCKET_ASSIGNMENT => {
                O::HashBucketAssignment(data.try_into().map_err(|_| bad())?)
            }
            code::IP_FLAGS => match *data {
                [a, b] => O::IpFlags(u16::from_be_bytes([a, b])),
                _ => return Err(bad()),
            },
            code::LEASE_EXPIRATION_TIME => O::LeaseExpirationTime(u32v()?),
            code::MAX_UNACKED_BNDUPD => O::MaxUnackedBndupd(u32v()?),
            code::MCLT => O::Mclt(u32v()?),
            code::MESSAGE => O::Message(data),
            code::MESSAGE_DIGEST => O::MessageDigest(data),
            code::POTENTIAL_EXPIRATION_TIME => O::PotentialExpirationTime(u32v()?),
            code::RECEIVE_TIMER => O::ReceiveTimer(u32v()?),
            code::PROTOCOL_VERSION => O::ProtocolVersion(u8v()?),
            code::REJECT_REASON => O::RejectReason(u8v()?.into()),
            code::RELATIONSHIP_NAME => O::RelationshipName(data),
            code::SERVER_FLAGS => O::ServerFlags(u8v()?),
            code::SERVER_STATE => O::ServerState(u8v()?.into()),
            code::START_TIME_OF_STATE => O::StartTimeOfState(u32v()?),
            code::TLS_REPLY => O::TlsReply(u8v()?),
            code::TLS_REQUEST => O::TlsRequest(u8v()?),
            code::VENDOR_CLASS => O::VendorClass(data),
            code::VENDOR_OPTIONS => O::VendorOptions(data),
            _ => O::Unknown { code, data },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerations_keep_isc_numbers() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(BindingStatus::from(v)), v);
            assert_eq!(u8::from(ServerState::from(v)), v);
            assert_eq!(u8::from(RejectReason::from(v)), v);
        }
        assert_eq!(BindingStatus::from(7), BindingStatus::Backup);
        assert_eq!(ServerState::from(254), ServerState::RecoverWait);
        assert_eq!(ServerState::from(9), ServerState::RecoverDone);
        assert_eq!(ServerState::from(12), ServerState::Other(12));
        assert_eq!(RejectReason::from(16), RejectReason::LessCriticalBindInfo);
        assert_eq!(RejectReason::from(254), RejectReason::Unknown);
        assert_eq!(
            ServerState::CommunicationsInterrupted.name(),
            "communications-interrupted"
        );
        assert_eq!(
            RejectReason::InvalidPartner.description(),
            "Connection rejected, invalid failover partner."
        );
    }

    #[test]
    fn fixed_sizes_are_enforced_and_variable_sizes_free() {
        let e = |code, len| Err(Error::BadOptionLength { code, len });
        assert_eq!(FailoverOption::parse(code::MCLT, &[0, 0, 60]), e(15, 3));
        assert_eq!(FailoverOption::parse(code::IP_FLAGS, &[1]), e(12, 1));
        assert_eq!(FailoverOption::parse(code::SERVER_STATE, &[]), e(24, 0));
        assert_eq!(FailoverOption::parse(code::DDNS, &[0]), e(9, 1));
        assert_eq!(
            FailoverOption::parse(code::HASH_BUCKET_ASSIGNMENT, &[0xff; 31]),
            e(11, 31)
        );
        assert_eq!(
            FailoverOption::parse(code::CLIENT_IDENTIFIER, &[]),
            Ok(FailoverOption::ClientIdentifier(&[][..]))
        );
        assert_eq!(
            FailoverOption::parse(code::DDNS, &[0, 5, 3, b'a', b'b', b'c', 0]),
            Ok(FailoverOption::Ddns {
                flags: ddns_flags::C | ddns_flags::D,
                name: &[3, b'a', b'b', b'c', 0][..]
            })
        );
        assert_eq!(
            FailoverOption::parse(0, &[1, 2]),
            Ok(FailoverOption::Unknown {
                code: 0,
                data: &[1, 2][..]
            })
        );
        assert_eq!(
            FailoverOption::parse(30, &[]),
            Ok(FailoverOption::Unknown {
                code: 30,
                data: &[][..]
            })
        );
    }

    #[test]
    fn emit_writes_code_length_value() {
        let mut out = [0u8; 16];
        let o = FailoverOption::<&[u8]>::AssignedIpAddress(Ipv4Addr::new(198, 18, 1, 20));
        assert_eq!(o.emit(&mut out), Ok(8));
        assert_eq!(out[..8], [0, 2, 0, 4, 198, 18, 1, 20]);
        let o = FailoverOption::<&[u8]>::IpFlags(ip_flags::RESERVED | ip_flags::BOOTP);
        assert_eq!(o.emit(&mut out), Ok(6));
        assert_eq!(out[..6], [0, 12, 0, 2, 0, 3]);
        let o = FailoverOption::RelationshipName(&b"pair"[..]);
        assert_eq!(o.emit(&mut out[..7]), Err(Error::NoSpace));
        assert_eq!(o.emit(&mut out), Ok(8));
        assert_eq!(out[..8], *b"\0\x16\0\x04pair");
        let owned = o.to_owned_value();
        assert_eq!(owned.as_borrowed(), o);
        let long = vec![0u8; 70_000];
        assert_eq!(
            FailoverOption::Message(&long[..]).emit(&mut [0u8; 8]),
            Err(Error::TooLong(70_000))
        );
    }
}
