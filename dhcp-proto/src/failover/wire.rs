//! The failover wire format as ISC dhcpd 4.4.3 puts it on TCP port 647: the message
//! layout of draft-ietf-dhc-failover-12 §6 with ISC's numbers (message types §6.1,
//! options §12, reject reasons §12.21, server states §12.24 with recover-wait as 254).
//! `docs/failover-wire.md` has the tables and the message sequences seen between two
//! real dhcpd.
//!
//! In the style of smoltcp's `wire`: [`Packet`] is a checked zero-copy view over one
//! message's bytes (no allocation to read one, options walked in place as
//! [`RawOption`]s or typed as [`FailoverOption`]`<&[u8]>`); [`Message`] is the owned
//! representation that parses from a view and emits back, byte for byte; [`Writer`]
//! builds a message straight into a caller's buffer. [`frame_len`] and [`split_frame`]
//! cut a TCP stream into messages.
//!
//! Nothing here panics or reads out of bounds on any input: every range a checked view
//! reads was proven by [`Packet::new_checked`], and the option walk checks each option
//! against the message's own length. The codec is lossless: options keep their order
//! (draft §6.2: order matters in batched BNDUPD/BNDACK, §6.3), duplicates are kept,
//! unknown options stay as raw bytes, and a payload offset above 12 keeps its extra
//! header bytes. What dhcpd itself would refuse beyond the codec's rules (a duplicate
//! option, a type above 12 with options) is left to the caller.

mod message;
mod options;

pub use message::{Message, Writer};
pub use options::{
    code, ddns_flags, ip_flags, server_flags, tls, BindingStatus, FailoverOption, RejectReason,
    ServerState, HBA_LEN, HMAC_MD5,
};

/// The failover port IANA assigned and dhcpd uses by default (draft §8.2).
pub const DEFAULT_PORT: u16 = 647;
/// Length of the fixed header: length (2), type (1), payload offset (1), time (4),
/// xid (4) (draft §6.1). dhcpd always sends a payload offset of 12.
pub const HEADER_LEN: usize = 12;
/// Smallest message length the draft (§6.1) and dhcpd accept: a bare header.
pub const MIN_MESSAGE_LEN: usize = 12;
/// Largest message length the draft (§6.1) and dhcpd accept; dhcpd drops the connection
/// on a longer one.
pub const MAX_MESSAGE_LEN: usize = 2048;
/// The protocol-version option's only value (draft §12.20, ISC's DHCP_FAILOVER_VERSION).
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest clock difference dhcpd accepts in the header time of a CONNECT or CONNECTACK;
/// beyond it the connection is refused with reject reason 4 (time mismatch).
pub const MAX_TIME_SKEW: u32 = 60;

/// Why bytes are not a failover message, or a message does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    #[error("shorter than the failover header or than its own length field")]
    Truncated,
    #[error("message length {0} outside 12..=2048")]
    BadLength(u16),
    #[error("payload offset {offset} outside 12..={len}")]
    BadPayloadOffset { offset: u8, len: u16 },
    #[error("an option header is cut by the end of the message")]
    TruncatedOptionHeader,
    #[error("option {code} runs past the end of the message")]
    TruncatedOption { code: u16 },
    #[error("option {code} has a length ({len}) its definition does not allow")]
    BadOptionLength { code: u16, len: u16 },
    #[error("the message would be {0} octets, above the 2048 allowed")]
    TooLong(usize),
    #[error("the buffer is too small for the message")]
    NoSpace,
}

/// Byte ranges of the fixed header (draft §6.1), all integers in network byte order.
pub mod field {
    use core::ops::Range;
    /// Message length, the length field included (§6.1 "message length").
    pub const LENGTH: Range<usize> = 0..2;
    /// Message type (§6.1 "msg type").
    pub const TYPE: usize = 2;
    /// Offset of the first option from the start of the message (§6.1 "payload off").
    pub const PAYLOAD_OFFSET: usize = 3;
    /// Sender's clock when sending, seconds since 1970 UTC, unsigned (§6.1 "time").
    pub const TIME: Range<usize> = 4..8;
    /// Transaction id; a reply carries its request's (§6.1 "xid").
    pub const XID: Range<usize> = 8..12;
}

/// Failover message types (draft §6.1, ISC's FTM_ numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// §7.6: ask the partner to rebalance the free pools.
    PoolReq,
    /// §7.7: the answer, with how many addresses moved.
    PoolResp,
    /// §7.1: one (or, per the draft, several) bindings.
    BndUpd,
    /// §7.2: the answer to a BNDUPD, same xid.
    BndAck,
    /// §7.8: the primary opens the partnership.
    Connect,
    /// §7.9: the secondary's answer, same xid.
    ConnectAck,
    /// §7.4: send me every binding.
    UpdReqAll,
    /// §7.5: everything asked for was sent; the request's xid.
    UpdDone,
    /// §7.3: send me what I have not acknowledged.
    UpdReq,
    /// §7.10: the sender's failover state.
    State,
    /// §7.11: keepalive.
    Contact,
    /// §7.12: closing, with a reason.
    Disconnect,
    /// Any other value (0, 13..=255), kept as it came.
    Other(u8),
}

impl MessageType {
    /// The type's name as dhcpd logs it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PoolReq => "pool-request",
            Self::PoolResp => "pool-response",
            Self::BndUpd => "bind-update",
            Self::BndAck => "bind-ack",
            Self::Connect => "connect",
            Self::ConnectAck => "connect-ack",
            Self::UpdReqAll => "update-request-all",
            Self::UpdDone => "update-done",
            Self::UpdReq => "update-request",
            Self::State => "state",
            Self::Contact => "contact",
            Self::Disconnect => "disconnect",
            Self::Other(_) => "unknown-message",
        }
    }
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::PoolReq,
            2 => Self::PoolResp,
            3 => Self::BndUpd,
            4 => Self::BndAck,
            5 => Self::Connect,
            6 => Self::ConnectAck,
            7 => Self::UpdReqAll,
            8 => Self::UpdDone,
            9 => Self::UpdReq,
            10 => Self::State,
            11 => Self::Contact,
            12 => Self::Disconnect,
            other => Self::Other(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::PoolReq => 1,
            MessageType::PoolResp => 2,
            MessageType::BndUpd => 3,
            MessageType::BndAck => 4,
            MessageType::Connect => 5,
            MessageType::ConnectAck => 6,
            MessageType::UpdReqAll => 7,
            MessageType::UpdDone => 8,
            MessageType::UpdReq => 9,
            MessageType::State => 10,
            MessageType::Contact => 11,
            MessageType::Disconnect => 12,
            MessageType::Other(v) => v,
        }
    }
}

impl core::fmt::Display for MessageType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Other(v) => write!(f, "unknown-message-{v}"),
            known => f.write_str(known.name()),
        }
    }
}

/// How long the message at the start of a TCP stream buffer is, from its length field:
/// `Ok(None)` until the two length octets are there, then `Ok(Some(n))`: the whole
/// message is `stream[..n]` once `n` octets have arrived. A length outside 12..=2048
/// is an error (dhcpd drops the connection on it): the stream cannot be resynchronised.
pub fn frame_len(stream: &[u8]) -> Result<Option<usize>, Error> {
    let [hi, lo, ..] = *stream else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([hi, lo]);
    if !(MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(&usize::from(len)) {
        return Err(Error::BadLength(len));
    }
    Ok(Some(usize::from(len)))
}

/// A whole message cut from the front of a stream buffer, and what follows it.
pub type Split<'a> = (&'a [u8], &'a [u8]);

/// Splits a complete message off the front of a TCP stream buffer: `Ok(Some((message,
/// rest)))`, or `Ok(None)` while more octets are needed. The message is not checked
/// beyond its length field; pass it to [`Packet::new_checked`].
pub fn split_frame(stream: &[u8]) -> Result<Option<Split<'_>>, Error> {
    match frame_len(stream)? {
        Some(n) if stream.len() >= n => Ok(Some(stream.split_at(n))),
        _ => Ok(None),
    }
}

/// A read/write view over one failover message (draft §6.1). `new_checked` proves the
/// header, the length, the payload offset and every option's extent, so the accessors
/// and the option walk stay inside the bytes. The buffer may run past the message (a
/// stream buffer): the view uses the message's own length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks. The accessors panic if the buffer is shorter than the
    /// header; use it only on a buffer being written.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view over a buffer that holds a whole, well-formed message.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks what the accessors and the option walk rely on: the header is there, the
    /// length is in 12..=2048 and within the buffer, the payload offset is in
    /// 12..=length, and every option lies inside the message.
    pub fn check_len(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = self.msg_len();
        if !(MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(&usize::from(len)) {
            return Err(Error::BadLength(len));
        }
        if buf.len() < usize::from(len) {
            return Err(Error::Truncated);
        }
        let offset = self.payload_offset();
        if usize::from(offset) < HEADER_LEN || u16::from(offset) > len {
            return Err(Error::BadPayloadOffset { offset, len });
        }
        for option in self.options() {
            option?;
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message length field, the header included (§6.1).
    pub fn msg_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::LENGTH.start], b[field::LENGTH.start + 1]])
    }

    /// The message type (§6.1).
    pub fn msg_type(&self) -> MessageType {
        MessageType::from(self.buffer.as_ref()[field::TYPE])
    }

    /// The payload offset (§6.1); dhcpd sends 12 (the draft says 8, which cannot be).
    pub fn payload_offset(&self) -> u8 {
        self.buffer.as_ref()[field::PAYLOAD_OFFSET]
    }

    /// The sender's clock at sending, seconds since 1970 UTC (§6.1).
    pub fn time(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::TIME])
    }

    /// The transaction id (§6.1).
    pub fn xid(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::XID])
    }

    /// Header octets between the fixed header and the payload ("0 or more additional
    /// header bytes", §6.1); empty from dhcpd.
    pub fn extra_header(&self) -> &[u8] {
        let start = HEADER_LEN.min(self.end());
        let end = usize::from(self.payload_offset()).clamp(start, self.end());
        &self.buffer.as_ref()[start..end]
    }

    /// The options area: from the payload offset to the message's end (§6.1).
    pub fn payload(&self) -> &[u8] {
        let end = self.end();
        let start = usize::from(self.payload_offset()).min(end);
        &self.buffer.as_ref()[start..end]
    }

    /// The options in order, as code and value (§6.2). After a malformed option the
    /// walk yields its error once and stops.
    pub fn options(&self) -> OptionIter<'_> {
        OptionIter {
            buf: self.payload(),
            pos: 0,
        }
    }

    /// The options in order, typed, borrowing their values from the message.
    pub fn typed_options(&self) -> impl Iterator<Item = Result<FailoverOption<&[u8]>, Error>> + '_ {
        self.options().map(|raw| raw.and_then(RawOption::typed))
    }

    /// The first option with `code`, if any (the walk stops at a malformed option).
    pub fn find(&self, code: u16) -> Option<RawOption<'_>> {
        self.options()
            .map_while(Result::ok)
            .find(|option| option.code == code)
    }

    /// The octets of the message itself (its declared length; the buffer may hold more).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.end()]
    }

    fn end(&self) -> usize {
        usize::from(self.msg_len()).min(self.buffer.as_ref().len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_msg_type(&mut self, t: MessageType) {
        self.buffer.as_mut()[field::TYPE] = t.into();
    }

    pub fn set_payload_offset(&mut self, offset: u8) {
        self.buffer.as_mut()[field::PAYLOAD_OFFSET] = offset;
    }

    pub fn set_time(&mut self, time: u32) {
        self.buffer.as_mut()[field::TIME].copy_from_slice(&time.to_be_bytes());
    }

    pub fn set_xid(&mut self, xid: u32) {
        self.buffer.as_mut()[field::XID].copy_from_slice(&xid.to_be_bytes());
    }

    /// The options area, writable (bounded as [`Packet::payload`]).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        let start = usize::from(self.payload_offset()).min(end);
        &mut self.buffer.as_mut()[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// One option as it sits in the message: a two-octet code and its value (§6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    pub code: u16,
    pub data: &'a [u8],
}

impl<'a> RawOption<'a> {
    /// The option's typed value (§12), borrowing from the message.
    pub fn typed(self) -> Result<FailoverOption<&'a [u8]>, Error> {
        FailoverOption::parse(self.code, self.data)
    }
}

/// The walk over a message's options: code (2), length (2), value (length) each.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<RawOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let [c0, c1, l0, l1, ..] = *rest else {
            self.pos = self.buf.len();
            return Some(Err(Error::TruncatedOptionHeader));
        };
        let code = u16::from_be_bytes([c0, c1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(data) = rest.get(4..4 + len) else {
            self.pos = self.buf.len();
            return Some(Err(Error::TruncatedOption { code }));
        };
        self.pos += 4 + len;
        Some(Ok(RawOption { code, data }))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A STATE as dhcpd sends it: recover, startup flag, start time of state.
    const STATE: [u8; 30] = [
        0x00, 0x1e, 0x0a, 0x0c, 0x6b, 0x04, 0x6d, 0x65, 0x00, 0x00, 0x00, 0x01, // header
        0x00, 0x18, 0x00, 0x01, 0x06, // server-state recover
        0x00, 0x17, 0x00, 0x01, 0x01, // server-flags startup
        0x00, 0x19, 0x00, 0x04, 0x6b, 0x04, 0x6d, 0x64, // start-time-of-state
    ];

    #[test]
    fn header_fields_at_their_offsets() {
        let p = Packet::new_checked(&STATE[..]).unwrap();
        assert_eq!(p.msg_len(), 30);
        assert_eq!(p.msg_type(), MessageType::State);
        assert_eq!(p.payload_offset(), 12);
        assert_eq!(p.time(), 0x6b04_6d65);
        assert_eq!(p.xid(), 1);
        assert!(p.extra_header().is_empty());
        let opts: Vec<_> = p.typed_options().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            opts,
            [
                FailoverOption::ServerState(ServerState::Recover),
                FailoverOption::ServerFlags(server_flags::STARTUP),
                FailoverOption::StartTimeOfState(0x6b04_6d64),
            ]
        );
        assert_eq!(p.find(code::SERVER_FLAGS).unwrap().data, [1]);
        assert!(p.find(code::MCLT).is_none());
    }

    #[test]
    fn framing_waits_for_the_whole_message_and_rejects_absurd_lengths() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0]), Ok(None));
        assert_eq!(frame_len(&[0, 30]), Ok(Some(30)));
        assert_eq!(frame_len(&[0, 11]), Err(Error::BadLength(11)));
        assert_eq!(frame_len(&[0x08, 0x01]), Err(Error::BadLength(2049)));
        assert_eq!(frame_len(&[0x08, 0x00]), Ok(Some(2048)));
        assert_eq!(split_frame(&STATE[..29]), Ok(None));
        let mut two = STATE.to_vec();
        two.extend_from_slice(&STATE[..5]);
        let (first, rest) = split_frame(&two).unwrap().unwrap();
        assert_eq!(first, STATE);
        assert_eq!(rest, &STATE[..5]);
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(Packet::new_checked(&STATE[..11]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&STATE[..29]), Err(Error::Truncated));
        let mut b = STATE;
        b[1] = 11;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadLength(11)));
        let mut b = STATE;
        b[3] = 11;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::BadPayloadOffset {
                offset: 11,
                len: 30
            })
        );
        b[3] = 31;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::BadPayloadOffset { .. })
        ));
        // The last option's value cut by the message length.
        let mut b = STATE;
        b[1] = 29;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::TruncatedOption {
                code: code::START_TIME_OF_STATE
            })
        );
        // Three stray octets after the last option.
        let mut b = STATE.to_vec();
        b.extend_from_slice(&[0, 1, 0]);
        b[1] = 33;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::TruncatedOptionHeader)
        );
    }

    #[test]
    fn extra_header_octets_are_skipped_and_kept() {
        let mut b = vec![
            0, 21, 11, 16, 0, 0, 0, 9, 0, 0, 0, 7, 0xaa, 0xbb, 0xcc, 0xdd,
        ];
        b.extend_from_slice(&[0, 2, 0, 1, 9]); // an option of unknown shape, code 2
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.extra_header(), [0xaa, 0xbb, 0xcc, 0xdd]);
        let raw: Vec<_> = p.options().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            raw,
            [RawOption {
                code: 2,
                data: &[9]
            }]
        );
        // Typed, assigned-IP-address must be four octets.
        assert_eq!(
            p.typed_options().next().unwrap(),
            Err(Error::BadOptionLength { code: 2, len: 1 })
        );
        let m = Message::parse(&Packet::new_checked(&STATE[..]).unwrap()).unwrap();
        assert_eq!(m.to_bytes().unwrap(), STATE);
        let _ = Ipv4Addr::LOCALHOST;
    }

    #[test]
    fn setters_write_the_header() {
        let mut buf = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_msg_len(12);
        p.set_msg_type(MessageType::Contact);
        p.set_payload_offset(12);
        p.set_time(0x0102_0304);
        p.set_xid(0x0a0b_0c0d);
        assert!(p.payload_mut().is_empty());
        assert_eq!(buf, [0, 12, 11, 12, 1, 2, 3, 4, 10, 11, 12, 13]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.msg_type(), MessageType::Contact);
        assert_eq!(p.options().count(), 0);
    }

    #[test]
    fn message_types_keep_isc_numbers() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(MessageType::from(v)), v);
        }
        assert_eq!(MessageType::from(5), MessageType::Connect);
        assert_eq!(MessageType::from(7), MessageType::UpdReqAll);
        assert_eq!(MessageType::from(9), MessageType::UpdReq);
        assert_eq!(MessageType::from(13), MessageType::Other(13));
        assert_eq!(MessageType::Other(200).to_string(), "unknown-message-200");
        assert_eq!(MessageType::BndAck.to_string(), "bind-ack");
    }
}

#[cfg(test)]
mod proptests;
