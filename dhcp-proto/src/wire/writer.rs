//! Builds a reply in place: the BOOTP header copied from the request as RFC 2131 table 3
//! asks, then options, then END and padding. Nothing is allocated; a reply that would not
//! fit the caller's limit is refused option by option, so the caller decides what to drop.

use std::net::Ipv4Addr;

use super::layout::*;
use super::options::code;
use super::{Message, WireError, BOOTREPLY, MIN_MESSAGE};

pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
    /// Bytes the finished message may use, END included.
    limit: usize,
}

impl<'b> Writer<'b> {
    /// Starts a BOOTREPLY to `req` in `buf`, no longer than `limit` octets (the smaller of
    /// the buffer and what the client can take). The header carries the request's xid,
    /// flags, giaddr, htype, hlen and chaddr; everything else is zero until set.
    pub fn reply_to(buf: &'b mut [u8], req: &Message<'_>, limit: usize) -> Result<Self, WireError> {
        let limit = limit.min(buf.len());
        if limit < MIN_MESSAGE {
            return Err(WireError::NoSpace);
        }
        let head = &mut buf[..OPTIONS];
        head.fill(0);
        let src = req.bytes();
        head[OP] = BOOTREPLY;
        head[HTYPE] = src[HTYPE];
        head[HLEN] = src[HLEN];
        head[XID..XID + 4].copy_from_slice(&src[XID..XID + 4]);
        head[FLAGS..FLAGS + 2].copy_from_slice(&src[FLAGS..FLAGS + 2]);
        head[GIADDR..GIADDR + 4].copy_from_slice(&src[GIADDR..GIADDR + 4]);
        head[CHADDR..CHADDR + 16].copy_from_slice(req.chaddr_field());
        head[MAGIC..OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        Ok(Self {
            buf,
            pos: OPTIONS,
            limit,
        })
    }

    pub fn set_ciaddr(&mut self, ip: Ipv4Addr) {
        self.buf[CIADDR..CIADDR + 4].copy_from_slice(&ip.octets());
    }
    pub fn set_yiaddr(&mut self, ip: Ipv4Addr) {
        self.buf[YIADDR..YIADDR + 4].copy_from_slice(&ip.octets());
    }
    pub fn set_siaddr(&mut self, ip: Ipv4Addr) {
        self.buf[SIADDR..SIADDR + 4].copy_from_slice(&ip.octets());
    }
    /// The boot file name: at most 127 octets, so the field stays NUL-terminated.
    pub fn set_file(&mut self, name: &[u8]) {
        let n = name.len().min(FILE_LEN - 1);
        self.buf[FILE..FILE + n].copy_from_slice(&name[..n]);
    }
    /// The client's hardware type and address, when the reply speaks of a client other
    /// than the one in the request's header (leasequery).
    pub fn set_hardware(&mut self, htype: u8, hlen: u8, chaddr: &[u8; 16]) {
        self.buf[HTYPE] = htype;
        self.buf[HLEN] = hlen.min(16);
        self.buf[CHADDR..CHADDR + 16].copy_from_slice(chaddr);
    }
    pub fn set_flags(&mut self, flags: u16) {
        self.buf[FLAGS..FLAGS + 2].copy_from_slice(&flags.to_be_bytes());
    }

    /// Octets still free for options, keeping one for END.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.pos + 1)
    }

    /// Appends an option. A value over 255 octets is split into consecutive instances
    /// (RFC 3396). Either the whole value goes in or nothing does.
    pub fn option(&mut self, code: u8, value: &[u8]) -> Result<(), WireError> {
        let instances = value.len().div_ceil(255).max(1);
        if instances * 2 + value.len() > self.remaining() {
            return Err(WireError::NoSpace);
        }
        if value.is_empty() {
            self.buf[self.pos] = code;
            self.buf[self.pos + 1] = 0;
            self.pos += 2;
            return Ok(());
        }
        for chunk in value.chunks(255) {
            self.buf[self.pos] = code;
            self.buf[self.pos + 1] = chunk.len() as u8;
            self.buf[self.pos + 2..self.pos + 2 + chunk.len()].copy_from_slice(chunk);
            self.pos += 2 + chunk.len();
        }
        Ok(())
    }

    pub fn option_u32(&mut self, code: u8, v: u32) -> Result<(), WireError> {
        self.option(code, &v.to_be_bytes())
    }

    pub fn option_ip(&mut self, code: u8, ip: Ipv4Addr) -> Result<(), WireError> {
        self.option(code, &ip.octets())
    }

    /// Writes END, pads to the BOOTP minimum and returns the message length.
    pub fn finish(self) -> usize {
        self.buf[self.pos] = code::END;
        let end = (self.pos + 1).max(MIN_MESSAGE);
        self.buf[self.pos + 1..end].fill(0);
        end
    }
}
