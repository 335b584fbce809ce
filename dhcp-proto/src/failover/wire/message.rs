//! The owned representation of a failover message and the writer that puts one into a
//! caller's buffer without touching the heap.

use super::{Error, FailoverOption, MessageType, Packet, HEADER_LEN, MAX_MESSAGE_LEN};

/// A failover message, owned: the header fields of draft §6.1 and the options in their
/// order (§6.2). Parsing then emitting gives back the same octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// §6.1 msg type.
    pub msg_type: MessageType,
    /// §6.1 time: the sender's clock, seconds since 1970 UTC.
    pub time: u32,
    /// §6.1 xid: a reply carries its request's.
    pub xid: u32,
    /// §6.1 "additional header bytes" before the payload offset; empty from dhcpd.
    pub extra_header: Vec<u8>,
    /// §6.2 the options, in order, duplicates kept.
    pub options: Vec<FailoverOption<Vec<u8>>>,
}

impl Message {
    /// A message without options (CONTACT, POOLREQ, UPDREQ, UPDREQALL, UPDDONE as
    /// dhcpd sends them).
    pub fn new(msg_type: MessageType, time: u32, xid: u32) -> Self {
        Message {
            msg_type,
            time,
            xid,
            extra_header: Vec::new(),
            options: Vec::new(),
        }
    }

    /// Appends an option (builder style).
    pub fn with(mut self, option: FailoverOption<Vec<u8>>) -> Self {
        self.options.push(option);
        self
    }

    /// Appends an option given with borrowed bytes.
    pub fn with_ref(self, option: FailoverOption<&[u8]>) -> Self {
        self.with(option.to_owned_value())
    }

    /// Reads a checked view: every option typed.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        let options = packet
            .typed_options()
            .map(|o| o.map(|o| o.to_owned_value()))
            .collect::<Result<_, _>>()?;
        Ok(Message {
            msg_type: packet.msg_type(),
            time: packet.time(),
            xid: packet.xid(),
            extra_header: packet.extra_header().to_vec(),
            options,
        })
    }

    /// Reads the message at the start of `bytes` (octets past its length are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Self::parse(&Packet::new_checked(bytes)?)
    }

    /// The message's length on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self.extra_header.len()
            + self
                .options
                .iter()
                .map(FailoverOption::wire_len)
                .sum::<usize>()
    }

    /// Writes the message at the start of `buf`; the octets written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        if len > MAX_MESSAGE_LEN {
            return Err(Error::TooLong(len));
        }
        let mut w =
            Writer::with_extra_header(buf, self.msg_type, self.time, self.xid, &self.extra_header)?;
        for option in &self.options {
            w.option(option)?;
        }
        Ok(w.finish())
    }

    /// The message's octets.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; self.buffer_len()];
        let n = self.emit(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The first option with `code`.
    pub fn option(&self, code: u16) -> Option<&FailoverOption<Vec<u8>>> {
        self.options.iter().find(|o| o.code() == code)
    }
}

/// Builds a message in a caller's buffer: header first, then options one by one, and
/// `finish` writes the length. Refuses to grow past 2048 octets or past the buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    start: usize,
    len: usize,
}

impl<'a> Writer<'a> {
    /// Starts a message with the 12-octet header dhcpd sends (payload offset 12).
    pub fn new(
        buf: &'a mut [u8],
        msg_type: MessageType,
        time: u32,
        xid: u32,
    ) -> Result<Self, Error> {
        Self::with_extra_header(buf, msg_type, time, xid, &[])
    }

    /// Starts a message whose payload begins after `extra` header octets (§6.1).
    pub fn with_extra_header(
        buf: &'a mut [u8],
        msg_type: MessageType,
        time: u32,
        xid: u32,
        extra: &[u8],
    ) -> Result<Self, Error> {
        let start = HEADER_LEN + extra.len();
        let offset = u8::try_from(start).map_err(|_| Error::TooLong(start))?;
        let header = buf.get_mut(..start).ok_or(Error::NoSpace)?;
        header[HEADER_LEN..].copy_from_slice(extra);
        let mut p = Packet::new_unchecked(header);
        p.set_msg_len(0);
        p.set_msg_type(msg_type);
        p.set_payload_offset(offset);
        p.set_time(time);
        p.set_xid(xid);
        Ok(Writer {
            buf,
            start,
            len: start,
        })
    }

    /// Appends an option.
    pub fn option<B: AsRef<[u8]>>(&mut self, option: &FailoverOption<B>) -> Result<(), Error> {
        let after = self.len + option.wire_len();
        if after > MAX_MESSAGE_LEN {
            return Err(Error::TooLong(after));
        }
        self.len += option.emit(&mut self.buf[self.len..])?;
        Ok(())
    }

    /// Appends an option given as code and raw value.
    pub fn raw_option(&mut self, code: u16, data: &[u8]) -> Result<(), Error> {
        self.option(&FailoverOption::Unknown { code, data })
    }

    /// Octets written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no option is written yet.
    pub fn is_empty(&self) -> bool {
        self.len == self.start
    }

    /// Writes the length field; the message is `buf[..n]`.
    pub fn finish(self) -> usize {
        // `len` never passes MAX_MESSAGE_LEN (2048), so it fits the field.
        let len = self.len as u16;
        Packet::new_unchecked(&mut self.buf[..]).set_msg_len(len);
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::super::{code, server_flags, BindingStatus, RejectReason, ServerState};
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_message_emits_and_parses_back() {
        let m = Message::new(MessageType::BndUpd, 1_795_436_169, 40)
            .with(FailoverOption::AssignedIpAddress(Ipv4Addr::new(
                198, 18, 1, 20,
            )))
            .with(FailoverOption::BindingStatus(BindingStatus::Active))
            .with(FailoverOption::ClientHardwareAddress(vec![
                1, 2, 0, 0, 0, 0, 1,
            ]))
            .with(FailoverOption::LeaseExpirationTime(1_795_436_229));
        let bytes = m.to_bytes().unwrap();
        assert_eq!(bytes.len(), m.buffer_len());
        assert_eq!(bytes.len(), 12 + 8 + 5 + 11 + 8);
        assert_eq!(&bytes[..4], [0, 44, 3, 12]);
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.option(code::BINDING_STATUS),
            Some(&FailoverOption::BindingStatus(BindingStatus::Active))
        );
    }

    #[test]
    fn writer_builds_without_the_heap_and_refuses_to_overflow() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf, MessageType::State, 7, 9).unwrap();
        w.option(&FailoverOption::<&[u8]>::ServerState(ServerState::Normal))
            .unwrap();
        w.option(&FailoverOption::<&[u8]>::ServerFlags(server_flags::STARTUP))
            .unwrap();
        w.raw_option(code::START_TIME_OF_STATE, &[0, 0, 0, 5])
            .unwrap();
        let n = w.finish();
        assert_eq!(n, 30);
        let p = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.msg_len(), 30);
        assert_eq!(
            p.typed_options().last().unwrap(),
            Ok(FailoverOption::StartTimeOfState(5))
        );

        let mut small = [0u8; 16];
        assert_eq!(
            Writer::new(&mut small[..11], MessageType::Contact, 0, 0).unwrap_err(),
            Error::NoSpace
        );
        let mut w = Writer::new(&mut small, MessageType::Disconnect, 0, 0).unwrap();
        w.option(&FailoverOption::<&[u8]>::RejectReason(
            RejectReason::NoTraffic,
        ))
        .unwrap_err();
        let mut big = vec![0u8; 4096];
        let mut w = Writer::new(&mut big, MessageType::Disconnect, 0, 0).unwrap();
        let text = vec![b'x'; 2040];
        assert_eq!(
            w.option(&FailoverOption::Message(&text[..])),
            Err(Error::TooLong(2056))
        );
        let m = Message::new(MessageType::Disconnect, 0, 0).with(FailoverOption::Message(text));
        assert_eq!(m.to_bytes(), Err(Error::TooLong(2056)));
    }

    #[test]
    fn extra_header_round_trips() {
        let mut m = Message::new(MessageType::Contact, 1, 2);
        m.extra_header = vec![9, 8, 7];
        let bytes = m.to_bytes().unwrap();
        assert_eq!(bytes[3], 15);
        assert_eq!(Message::decode(&bytes).unwrap(), m);
        m.extra_header = vec![0; 244];
        assert_eq!(m.to_bytes(), Err(Error::TooLong(256)));
    }
}
