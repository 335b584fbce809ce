//! DHCPv4 wire format (RFC 2131 §2, RFC 2132): a checked zero-copy view over a received
//! message, a one-pass summary of the options the server acts on, and a writer that builds
//! a reply in a caller's buffer without touching the heap.
//!
//! Parsing never panics: every accessor reads only ranges that `Message::parse` has
//! checked, and every option walk is bounded by the field it walks.
//!
//! Reading stays zero-copy, so an option a client split into several instances (RFC 3396)
//! is read as its first instance; clients split only values over 255 octets, which no
//! option the server acts on needs. Writing splits long values as RFC 3396 asks.

pub mod frame;
mod message;
mod options;
pub mod relay;
mod writer;

pub use message::{Message, MessageType, Request};
pub use options::{code, OptionIter, OptionRef, Overload};
pub use writer::Writer;

/// Why a datagram was not accepted as a DHCP message. Each variant is a drop reason
/// that the server counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    #[error("shorter than a BOOTP header with magic cookie")]
    TooShort,
    #[error("magic cookie is not 99.130.83.99")]
    BadMagic,
    #[error("hardware address length above 16")]
    BadHlen,
    #[error("option {0} runs past the end of its field")]
    TruncatedOption(u8),
    #[error("option {0} has a length its definition does not allow")]
    BadOptionLength(u8),
    #[error("option overload (52) has a value other than 1, 2 or 3")]
    BadOverload,
    #[error("no DHCP message type (53): plain BOOTP is not served")]
    NoMessageType,
    #[error("reply does not fit in the buffer")]
    NoSpace,
}

/// Fixed offsets of the BOOTP header (RFC 2131 figure 1).
pub(crate) mod layout {
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    pub const CHADDR: usize = 28;
    pub const SNAME: usize = 44;
    pub const FILE: usize = 108;
    pub const MAGIC: usize = 236;
    pub const OPTIONS: usize = 240;
    pub const SNAME_LEN: usize = 64;
    pub const FILE_LEN: usize = 128;
    pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
}

/// BOOTP op codes.
pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;

/// The broadcast bit of the flags field (RFC 2131 §2, figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Smallest reply we send: RFC 1542 §2.1 has BOOTP relays and old clients drop shorter
/// messages, so replies are padded to 300 octets like every other server does.
pub const MIN_MESSAGE: usize = 300;

/// Largest message a client can accept when it sends no option 57 (RFC 2131 §2: 576
/// octet IP datagrams, less 20 of IP and 8 of UDP header).
pub const DEFAULT_MAX_MESSAGE: usize = 576 - 28;
