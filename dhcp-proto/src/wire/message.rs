//! A received DHCP message: `Message` is the checked view over its bytes, `Request` the
//! summary of the options the lease engine acts on, both borrowed from the datagram.

use std::net::Ipv4Addr;

use super::layout::*;
use super::options::{code, OptionIter, OptionRef, Overload};
use super::{WireError, FLAG_BROADCAST};

/// DHCP message types (option 53, RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    /// A type without a variant: leasequery's (see `leasequery::msg`), FORCERENEW, …
    Other(u8),
}

impl MessageType {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => Self::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
            Self::Other(v) => v,
        }
    }

    /// The name dhcpd's log lines use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Discover => "DHCPDISCOVER",
            Self::Offer => "DHCPOFFER",
            Self::Request => "DHCPREQUEST",
            Self::Decline => "DHCPDECLINE",
            Self::Ack => "DHCPACK",
            Self::Nak => "DHCPNAK",
            Self::Release => "DHCPRELEASE",
            Self::Inform => "DHCPINFORM",
            Self::Other(10) => "DHCPLEASEQUERY",
            Self::Other(11) => "DHCPLEASEUNASSIGNED",
            Self::Other(12) => "DHCPLEASEUNKNOWN",
            Self::Other(13) => "DHCPLEASEACTIVE",
            Self::Other(14) => "DHCPBULKLEASEQUERY",
            Self::Other(15) => "DHCPLEASEQUERYDONE",
            Self::Other(17) => "DHCPLEASEQUERYSTATUS",
            Self::Other(_) => "DHCP(other)",
        }
    }
}

/// A checked view over a BOOTP/DHCP message. Construction proves the fixed header and
/// the magic cookie are present, `hlen` is sane, and every option lies within its field.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    overload: Overload,
}

fn ip_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

impl<'a> Message<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        Self::walk(buf, |_| Ok(()))
    }

    /// Checks the header, then hands every option to `each` in one pass (RFC 2131 §4.1
    /// order: the options field, which alone may say the others are overloaded, then
    /// `file`, then `sname`). Every option is proven to lie within its field.
    fn walk(
        buf: &'a [u8],
        mut each: impl FnMut(OptionRef<'a>) -> Result<(), WireError>,
    ) -> Result<Self, WireError> {
        if buf.len() < OPTIONS {
            return Err(WireError::TooShort);
        }
        if buf[MAGIC..OPTIONS] != MAGIC_COOKIE {
            return Err(WireError::BadMagic);
        }
        if buf[HLEN] > 16 {
            return Err(WireError::BadHlen);
        }
        let mut overload = None;
        for opt in OptionIter::new(buf, Overload::default()) {
            let opt = opt?;
            if opt.code == code::OVERLOAD && overload.is_none() {
                overload = Some(Overload::from_value(opt.value)?);
            }
            each(opt)?;
        }
        let overload = overload.unwrap_or_default();
        for opt in OptionIter::overloaded_fields(buf, overload) {
            each(opt?)?;
        }
        Ok(Self { buf, overload })
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn op(&self) -> u8 {
        self.buf[OP]
    }
    pub fn htype(&self) -> u8 {
        self.buf[HTYPE]
    }
    pub fn hlen(&self) -> u8 {
        self.buf[HLEN]
    }
    pub fn hops(&self) -> u8 {
        self.buf[HOPS]
    }
    pub fn xid(&self) -> u32 {
        u32::from_be_bytes([
            self.buf[XID],
            self.buf[XID + 1],
            self.buf[XID + 2],
            self.buf[XID + 3],
        ])
    }
    pub fn secs(&self) -> u16 {
        u16::from_be_bytes([self.buf[SECS], self.buf[SECS + 1]])
    }
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.buf[FLAGS], self.buf[FLAGS + 1]])
    }
    pub fn broadcast(&self) -> bool {
        self.flags() & FLAG_BROADCAST != 0
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, CIADDR)
    }
    pub fn yiaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, YIADDR)
    }
    pub fn siaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, SIADDR)
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, GIADDR)
    }
    /// The client hardware address, `hlen` octets of it.
    pub fn chaddr(&self) -> &'a [u8] {
        &self.buf[CHADDR..CHADDR + self.hlen() as usize]
    }
    /// The whole 16-octet chaddr field, copied into replies as it came.
    pub fn chaddr_field(&self) -> &'a [u8; 16] {
        self.buf[CHADDR..CHADDR + 16]
            .try_into()
            .expect("header length checked in parse")
    }
    /// `sname` when it holds a name rather than options.
    pub fn sname(&self) -> Option<&'a [u8]> {
        (!self.overload.sname).then(|| &self.buf[SNAME..SNAME + SNAME_LEN])
    }
    /// `file` when it holds a boot file name rather than options.
    pub fn file(&self) -> Option<&'a [u8]> {
        (!self.overload.file).then(|| &self.buf[FILE..FILE + FILE_LEN])
    }
    pub fn overload(&self) -> Overload {
        self.overload
    }
    /// Every option in RFC 2131 §4.1 order. Items are all `Ok` for a parsed message.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.buf, self.overload)
    }
    /// The first instance of an option.
    pub fn option(&self, wanted: u8) -> Option<&'a [u8]> {
        self.options()
            .flatten()
            .find(|o| o.code == wanted)
            .map(|o| o.value)
    }
}

/// A client message with the options the engine acts on picked out in one pass.
/// When an option appears more than once, the first instance counts.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub msg: Message<'a>,
    pub msg_type: MessageType,
    pub client_id: Option<&'a [u8]>,
    pub requested_address: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    pub max_message_size: Option<u16>,
    pub parameter_list: Option<&'a [u8]>,
    pub host_name: Option<&'a [u8]>,
    pub relay_agent_info: Option<&'a [u8]>,
    pub subnet_selection: Option<Ipv4Addr>,
}

fn fixed<const N: usize>(code: u8, value: &[u8]) -> Result<[u8; N], WireError> {
    value
        .try_into()
        .map_err(|_| WireError::BadOptionLength(code))
}

impl<'a> Request<'a> {
    /// Parses a datagram into a request. A BOOTREPLY parses too; the engine drops it.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut msg_type = None;
        let mut client_id = None;
        let mut requested_address = None;
        let mut server_id = None;
        let mut lease_time = None;
        let mut max_message_size = None;
        let mut parameter_list = None;
        let mut host_name = None;
        let mut relay_agent_info = None;
        let mut subnet_selection = None;
        let msg = Message::walk(buf, |opt| {
            let v = opt.value;
            match opt.code {
                code::MESSAGE_TYPE if msg_type.is_none() => {
                    msg_type = Some(MessageType::from_u8(fixed::<1>(opt.code, v)?[0]));
                }
                // RFC 2132 §9.14: at least two octets (type and one of identifier).
                code::CLIENT_ID if client_id.is_none() => {
                    if v.len() < 2 {
                        return Err(WireError::BadOptionLength(opt.code));
                    }
                    client_id = Some(v);
                }
                code::REQUESTED_ADDRESS if requested_address.is_none() => {
                    requested_address = Some(fixed::<4>(opt.code, v)?.into());
                }
                code::SERVER_ID if server_id.is_none() => {
                    server_id = Some(fixed::<4>(opt.code, v)?.into());
                }
                code::LEASE_TIME if lease_time.is_none() => {
                    lease_time = Some(u32::from_be_bytes(fixed(opt.code, v)?));
                }
                code::MAX_MESSAGE_SIZE if max_message_size.is_none() => {
                    max_message_size = Some(u16::from_be_bytes(fixed(opt.code, v)?));
                }
                code::PARAMETER_REQUEST_LIST if parameter_list.is_none() => {
                    parameter_list = Some(v);
                }
                code::HOST_NAME if host_name.is_none() => host_name = Some(v),
                code::RELAY_AGENT_INFO if relay_agent_info.is_none() => {
                    relay_agent_info = Some(v);
                }
                code::SUBNET_SELECTION if subnet_selection.is_none() => {
                    subnet_selection = Some(fixed::<4>(opt.code, v)?.into());
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(Request {
            msg,
            msg_type: msg_type.ok_or(WireError::NoMessageType)?,
            client_id,
            requested_address,
            server_id,
            lease_time,
            max_message_size,
            parameter_list,
            host_name,
            relay_agent_info,
            subnet_selection,
        })
    }

    /// A relay agent sub-option carrying an address (RFC 3527 link selection, RFC 5107
    /// server identifier override).
    pub fn relay_addr(&self, sub: u8) -> Option<Ipv4Addr> {
        super::relay::sub_option_addr(self.relay_agent_info?, sub)
    }

    /// True when the client asked for `code` in its parameter request list.
    pub fn requested(&self, code: u8) -> bool {
        self.parameter_list.is_some_and(|l| l.contains(&code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Writer;

    fn discover_with(options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; OPTIONS];
        b[OP] = 1;
        b[HTYPE] = 1;
        b[HLEN] = 6;
        b[CHADDR..CHADDR + 6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        b[MAGIC..OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        b.extend_from_slice(options);
        b
    }

    #[test]
    fn short_and_bad_magic_are_errors() {
        assert_eq!(Message::parse(&[0; 239]).unwrap_err(), WireError::TooShort);
        let mut b = discover_with(&[53, 1, 1, 255]);
        b[MAGIC] = 0;
        assert_eq!(Message::parse(&b).unwrap_err(), WireError::BadMagic);
    }

    #[test]
    fn truncated_option_is_an_error() {
        let b = discover_with(&[53, 1, 1, 61, 7, 1, 2]);
        assert_eq!(
            Request::parse(&b).unwrap_err(),
            WireError::TruncatedOption(61)
        );
        let b = discover_with(&[53, 1, 1, 61]);
        assert_eq!(
            Request::parse(&b).unwrap_err(),
            WireError::TruncatedOption(61)
        );
    }

    #[test]
    fn bootp_without_message_type_is_refused() {
        let b = discover_with(&[255]);
        assert_eq!(Request::parse(&b).unwrap_err(), WireError::NoMessageType);
    }

    #[test]
    fn options_after_end_are_ignored() {
        let b = discover_with(&[53, 1, 1, 255, 61, 200]);
        let r = Request::parse(&b).unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.client_id, None);
    }

    #[test]
    fn overloaded_file_and_sname_carry_options() {
        let mut b = discover_with(&[52, 1, 3, 53, 1, 3, 255]);
        b[FILE..FILE + 6].copy_from_slice(&[50, 4, 192, 0, 2, 7]);
        b[FILE + 6] = 255;
        b[SNAME..SNAME + 6].copy_from_slice(&[54, 4, 192, 0, 2, 1]);
        let r = Request::parse(&b).unwrap();
        assert_eq!(r.msg_type, MessageType::Request);
        assert_eq!(r.requested_address, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.msg.file(), None);
        assert_eq!(r.msg.sname(), None);
    }

    #[test]
    fn option_in_overloaded_field_may_not_cross_it() {
        let mut b = discover_with(&[52, 1, 2, 53, 1, 1, 255]);
        b[SNAME + 62] = 12;
        b[SNAME + 63] = 4;
        assert_eq!(
            Request::parse(&b).unwrap_err(),
            WireError::TruncatedOption(12)
        );
    }

    #[test]
    fn fixed_length_options_are_checked() {
        let b = discover_with(&[53, 1, 1, 50, 3, 1, 2, 3, 255]);
        assert_eq!(
            Request::parse(&b).unwrap_err(),
            WireError::BadOptionLength(50)
        );
        let b = discover_with(&[53, 2, 1, 1, 255]);
        assert_eq!(
            Request::parse(&b).unwrap_err(),
            WireError::BadOptionLength(53)
        );
    }

    #[test]
    fn writer_output_parses_back() {
        let bytes = discover_with(&[53, 1, 1, 61, 3, 1, 9, 9, 255]);
        let req = Request::parse(&bytes).unwrap();
        let mut out = [0u8; 600];
        let mut w = Writer::reply_to(&mut out, &req.msg, 600).unwrap();
        w.option(code::MESSAGE_TYPE, &[2]).unwrap();
        w.option(code::SERVER_ID, &[192, 0, 2, 1]).unwrap();
        let n = w.finish();
        assert_eq!(n, crate::wire::MIN_MESSAGE);
        let back = Request::parse(&out[..n]).unwrap();
        assert_eq!(back.msg.op(), crate::wire::BOOTREPLY);
        assert_eq!(back.msg_type, MessageType::Offer);
        assert_eq!(back.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(back.msg.chaddr(), req.msg.chaddr());
    }
}
