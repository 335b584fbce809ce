//! Configured DHCP options, encoded to wire form once at load so a reply only copies bytes.

use std::net::Ipv4Addr;

use crate::wire::code;

/// A destination and the router to reach it (RFC 3442).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClasslessRoute {
    pub destination: super::Ipv4Net,
    pub router: Ipv4Addr,
}

/// Options in wire form, at most one value per code, kept sorted by code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionSet {
    entries: Vec<(u8, Box<[u8]>)>,
}

impl OptionSet {
    /// Sets an option's raw value, replacing any earlier one.
    pub fn set_raw(&mut self, code: u8, value: Vec<u8>) {
        let value = value.into_boxed_slice();
        match self.entries.binary_search_by_key(&code, |e| e.0) {
            Ok(i) => self.entries[i].1 = value,
            Err(i) => self.entries.insert(i, (code, value)),
        }
    }

    pub fn set_addresses(&mut self, code: u8, ips: &[Ipv4Addr]) {
        self.set_raw(code, ips.iter().flat_map(|ip| ip.octets()).collect());
    }

    pub fn set_text(&mut self, code: u8, text: &str) {
        self.set_raw(code, text.as_bytes().to_vec());
    }

    /// Option 119: each name in DNS wire form (RFC 1035 §3.1), without compression,
    /// which RFC 3397 allows. Fails on an empty label or one over 63 octets.
    pub fn set_domain_search(&mut self, domains: &[String]) -> Result<(), String> {
        let mut v = Vec::new();
        for d in domains {
            for label in d.trim_end_matches('.').split('.') {
                if label.is_empty() || label.len() > 63 {
                    return Err(format!(
                        "'{d}' has an empty label or one over 63 characters"
                    ));
                }
                v.push(label.len() as u8);
                v.extend_from_slice(label.as_bytes());
            }
            v.push(0);
        }
        self.set_raw(code::DOMAIN_SEARCH, v);
        Ok(())
    }

    /// Option 121: width, the significant octets of the destination, then the router.
    pub fn set_classless_routes(&mut self, routes: &[ClasslessRoute]) {
        let mut v = Vec::new();
        for r in routes {
            let width = r.destination.prefix;
            v.push(width);
            v.extend_from_slice(&r.destination.network().octets()[..width.div_ceil(8) as usize]);
            v.extend_from_slice(&r.router.octets());
        }
        self.set_raw(code::CLASSLESS_ROUTES, v);
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.entries
            .binary_search_by_key(&code, |e| e.0)
            .ok()
            .map(|i| &*self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.entries.iter().map(|(c, v)| (*c, &**v))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_search_is_dns_wire_form() {
        let mut o = OptionSet::default();
        o.set_domain_search(&["example.com".into(), "lab.".into()])
            .unwrap();
        assert_eq!(o.get(119).unwrap(), b"\x07example\x03com\x00\x03lab\x00");
        assert!(o.set_domain_search(&["a..b".into()]).is_err());
    }

    #[test]
    fn classless_routes_carry_only_significant_octets() {
        let mut o = OptionSet::default();
        o.set_classless_routes(&[
            ClasslessRoute {
                destination: "0.0.0.0/0".parse().unwrap(),
                router: [192, 0, 2, 1].into(),
            },
            ClasslessRoute {
                destination: "198.51.100.0/24".parse().unwrap(),
                router: [192, 0, 2, 2].into(),
            },
        ]);
        assert_eq!(
            o.get(121).unwrap(),
            &[0, 192, 0, 2, 1, 24, 198, 51, 100, 192, 0, 2, 2]
        );
    }

    #[test]
    fn later_value_replaces_earlier_and_order_is_by_code() {
        let mut o = OptionSet::default();
        o.set_text(15, "a");
        o.set_addresses(3, &[[192, 0, 2, 1].into()]);
        o.set_text(15, "b");
        let codes: Vec<u8> = o.iter().map(|e| e.0).collect();
        assert_eq!(codes, [3, 15]);
        assert_eq!(o.get(15).unwrap(), b"b");
    }
}
