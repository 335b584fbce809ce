//! The relay agent information option (82, RFC 3046): sub-options a relay inserts, read in
//! place. Sub-options are type-length-value like options, without PAD or END; a
//! truncated one ends the walk, so a bad option 82 reads as having fewer sub-options and
//! never fails the message (relays are trusted for the rest of it).

use std::net::Ipv4Addr;

/// Relay agent sub-option codes.
pub mod sub {
    /// RFC 3046 §2.0: the circuit (port) the request came in on.
    pub const CIRCUIT_ID: u8 = 1;
    /// RFC 3046 §2.0: the remote end of the circuit (the subscriber's modem, ONT...).
    pub const REMOTE_ID: u8 = 2;
    /// RFC 3527: the subnet to allocate from, when it is not the one giaddr names.
    pub const LINK_SELECTION: u8 = 5;
    /// RFC 3993: an identity of the subscriber the relay knows.
    pub const SUBSCRIBER_ID: u8 = 6;
    /// RFC 4243: vendor-specific information.
    pub const VENDOR_SPECIFIC: u8 = 9;
    /// RFC 5107: the address the client must see as server identifier.
    pub const SERVER_ID_OVERRIDE: u8 = 11;
    /// RFC 6925: an identity of the relay itself, which bulk leasequery asks by.
    pub const RELAY_ID: u8 = 12;
}

/// Iterates the sub-options of an option 82 value as (code, value).
#[derive(Debug, Clone)]
pub struct SubOptions<'a> {
    rest: &'a [u8],
}

impl<'a> SubOptions<'a> {
    pub fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }
}

impl<'a> Iterator for SubOptions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&code, rest) = self.rest.split_first()?;
        let (&len, rest) = rest.split_first()?;
        if rest.len() < len as usize {
            self.rest = &[];
            return None;
        }
        let (value, rest) = rest.split_at(len as usize);
        self.rest = rest;
        Some((code, value))
    }
}

/// The first sub-option `code` of an option 82 value.
pub fn sub_option(value: &[u8], code: u8) -> Option<&[u8]> {
    SubOptions::new(value).find(|s| s.0 == code).map(|s| s.1)
}

/// A sub-option carrying one IPv4 address (link selection, server identifier override).
pub fn sub_option_addr(value: &[u8], code: u8) -> Option<Ipv4Addr> {
    let v: [u8; 4] = sub_option(value, code)?.try_into().ok()?;
    Some(v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_options_are_read_in_order_and_a_truncated_one_ends_the_walk() {
        let v = [
            1, 3, b'p', b'-', b'1', 2, 2, 0xab, 0xcd, 5, 4, 192, 0, 2, 0, 6, 9, 1,
        ];
        let all: Vec<_> = SubOptions::new(&v).collect();
        assert_eq!(
            all,
            [
                (1, &b"p-1"[..]),
                (2, &[0xab, 0xcd][..]),
                (5, &[192, 0, 2, 0][..])
            ]
        );
        assert_eq!(sub_option(&v, sub::REMOTE_ID), Some(&[0xab, 0xcd][..]));
        assert_eq!(
            sub_option_addr(&v, sub::LINK_SELECTION),
            Some(Ipv4Addr::new(192, 0, 2, 0))
        );
        assert_eq!(sub_option(&v, sub::SUBSCRIBER_ID), None);
        assert_eq!(sub_option_addr(&[5, 3, 1, 2, 3], 5), None);
        assert_eq!(SubOptions::new(&[1]).count(), 0);
    }
}
