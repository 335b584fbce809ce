//! The `[leasequery]` table: who may ask (RFC 4388 and RFC 6926 requesters, by giaddr),
//! and where and how bulk leasequery listens over TCP.

use super::*;
use crate::config::BulkLeasequery;

const LEASEQUERY_KEYS: &[&str] = &[
    "requesters",
    "bulk",
    "bulk-listen",
    "bulk-connections",
    "bulk-timeout",
];

impl Walker {
    /// The `[leasequery]` table: the allowed requesters and the bulk listener (none when
    /// `bulk = false`).
    pub(super) fn leasequery(&mut self, v: &Value<'_>) -> (Vec<Ipv4Net>, Option<BulkLeasequery>) {
        let DeValue::Table(t) = v.get_ref() else {
            self.mismatch("leasequery", v, "a [leasequery] table");
            return (Vec::new(), None);
        };
        self.check_keys("leasequery", t, LEASEQUERY_KEYS, false);
        let requesters = match t.get_key_value("requesters") {
            Some((_, v)) => self
                .list("leasequery.requesters", v, true, |w, key, e| {
                    w.parsed(key, e, |s| {
                        let net = if s.contains('/') {
                            s.parse::<Ipv4Net>().ok()
                        } else {
                            s.parse().ok().and_then(|a| Ipv4Net::new(a, 32))
                        };
                        net.ok_or_else(|| format!("'{s}' is not an IPv4 address or ADDRESS/PREFIX"))
                    })
                })
                .unwrap_or_default(),
            None => {
                self.missing(
                    0..0,
                    "leasequery.requesters",
                    "the addresses (giaddr) of the relays and BNGs that may ask, e.g. [\"192.0.2.1\", \"198.51.100.0/24\"]",
                );
                Vec::new()
            }
        };
        let key = |k: &str| format!("leasequery.{k}");
        let on = t
            .get("bulk")
            .and_then(|v| self.boolean(&key("bulk"), v))
            .unwrap_or(true);
        let mut bulk = BulkLeasequery::default();
        if let Some(v) = t.get("bulk-listen") {
            bulk.listen = self
                .parsed(&key("bulk-listen"), v, |s| {
                    s.parse().map_err(|_| format!("'{s}' is not ADDRESS:PORT"))
                })
                .unwrap_or(bulk.listen);
        }
        if let Some(v) = t.get("bulk-connections") {
            bulk.connections = self
                .integer(
                    &key("bulk-connections"),
                    v,
                    1..=1024,
                    "a number of connections",
                )
                .map_or(bulk.connections, |n| n as u16);
        }
        if let Some(v) = t.get("bulk-timeout") {
            bulk.timeout = self
                .integer(&key("bulk-timeout"), v, 1..=3600, "a number of seconds")
                .map_or(bulk.timeout, |n| n as u32);
        }
        (requesters, on.then_some(bulk))
    }
}
