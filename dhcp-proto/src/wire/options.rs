//! Option codes and the walk over a message's options, across the `file` and `sname`
//! fields when option 52 says they are overloaded (RFC 2132 §9.3).

use super::layout::{FILE, FILE_LEN, OPTIONS, SNAME, SNAME_LEN};
use super::WireError;

/// Option codes the server reads or writes (RFC 2132 unless noted).
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const BROADCAST_ADDRESS: u8 = 28;
    pub const NTP_SERVERS: u8 = 42;
    pub const REQUESTED_ADDRESS: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 3046.
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// RFC 3011: the subnet the client wants an address on.
    pub const SUBNET_SELECTION: u8 = 118;
    /// RFC 3397.
    pub const DOMAIN_SEARCH: u8 = 119;
    /// RFC 3442.
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// Which BOOTP fields carry options besides the options field (option 52).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overload {
    pub file: bool,
    pub sname: bool,
}

impl Overload {
    pub fn from_value(value: &[u8]) -> Result<Self, WireError> {
        match value {
            [1] => Ok(Self {
                file: true,
                sname: false,
            }),
            [2] => Ok(Self {
                file: false,
                sname: true,
            }),
            [3] => Ok(Self {
                file: true,
                sname: true,
            }),
            [_] => Err(WireError::BadOverload),
            _ => Err(WireError::BadOptionLength(code::OVERLOAD)),
        }
    }
}

/// One option as it sits in the message: code and value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionRef<'a> {
    pub code: u8,
    pub value: &'a [u8],
}

/// Walks the options field, then `file`, then `sname` as far as the overload option
/// allows, in the order RFC 2131 §4.1 gives. Yields an error once, then stops.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    overload: Overload,
    /// 0: options field, 1: file, 2: sname, 3: done.
    region: u8,
}

impl<'a> OptionIter<'a> {
    /// `buf` must hold at least the fixed header and magic cookie; `Message::parse`
    /// checks that before handing one out.
    pub(crate) fn new(buf: &'a [u8], overload: Overload) -> Self {
        Self {
            buf,
            pos: OPTIONS,
            end: buf.len(),
            overload,
            region: 0,
        }
    }

    /// Walks only the `file` and `sname` fields that `overload` names, for a caller that
    /// has already walked the options field.
    pub(crate) fn overloaded_fields(buf: &'a [u8], overload: Overload) -> Self {
        Self {
            buf,
            pos: OPTIONS,
            end: OPTIONS,
            overload,
            region: 0,
        }
    }

    /// Moves to the next field that carries options; false when none is left.
    fn next_region(&mut self) -> bool {
        loop {
            self.region += 1;
            let (start, len, enabled) = match self.region {
                1 => (FILE, FILE_LEN, self.overload.file),
                2 => (SNAME, SNAME_LEN, self.overload.sname),
                _ => return false,
            };
            if enabled {
                self.pos = start;
                self.end = start + len;
                return true;
            }
        }
    }

    fn stop(&mut self) {
        self.region = 3;
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<OptionRef<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.region >= 3 {
                return None;
            }
            if self.pos >= self.end {
                if !self.next_region() {
                    return None;
                }
                continue;
            }
            let code = self.buf[self.pos];
            match code {
                code::PAD => {
                    self.pos += 1;
                    continue;
                }
                code::END => {
                    self.pos = self.end;
                    continue;
                }
                _ => {}
            }
            let Some(&len) = self
                .buf
                .get(self.pos + 1)
                .filter(|_| self.pos + 1 < self.end)
            else {
                self.stop();
                return Some(Err(WireError::TruncatedOption(code)));
            };
            let start = self.pos + 2;
            let stop = start + len as usize;
            if stop > self.end {
                self.stop();
                return Some(Err(WireError::TruncatedOption(code)));
            }
            self.pos = stop;
            return Some(Ok(OptionRef {
                code,
                value: &self.buf[start..stop],
            }));
        }
    }
}
