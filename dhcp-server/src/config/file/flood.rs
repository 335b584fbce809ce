//! The `[flood]` table: request limits the XDP program enforces per client hardware
//! address and per relay agent circuit id, and the size of their tables.

use super::*;
use crate::config::Flood;

const FLOOD_KEYS: &[&str] = &[
    "client-rate",
    "client-burst",
    "circuit-rate",
    "circuit-burst",
    "table-size",
];

/// A worker serves far less than this; a limit above it would never bite.
const MAX_RATE: i128 = 1_000_000;
const MAX_BURST: i128 = 1_000_000;
/// Below this the table's LRU, which the kernel spreads over per-CPU free lists,
/// forgets busy clients too soon to limit them.
const MIN_TABLE: i128 = 1024;
/// Each table is allocated whole when the program loads, about 100 octets a bucket.
const MAX_TABLE: i128 = 1 << 22;

impl Walker {
    /// The `[flood]` table; what does not read well is left at its default (no limit).
    pub(super) fn flood(&mut self, v: &Value<'_>) -> Flood {
        let mut f = Flood::default();
        let t = match v.get_ref() {
            DeValue::Table(t) => t,
            DeValue::Array(_) => {
                self.error(
                    v.span(),
                    "flood",
                    "write [flood], not [[flood]]: one set of limits serves every interface",
                );
                return f;
            }
            _ => {
                self.mismatch("flood", v, "a [flood] table");
                return f;
            }
        };
        self.check_keys("flood", t, FLOOD_KEYS, false);
        let key = |k: &str| format!("flood.{k}");
        let limit = |w: &mut Self, rate_key: &str, burst_key: &str| -> (u32, u32) {
            let rate = t
                .get(rate_key)
                .and_then(|v| {
                    w.integer(
                        &key(rate_key),
                        v,
                        0..=MAX_RATE,
                        "requests a second (0: no limit)",
                    )
                })
                .map_or(0, |n| n as u32);
            let burst = match t.get_key_value(burst_key) {
                Some((k, _)) if t.get(rate_key).is_none() => {
                    w.error(
                        k.span(),
                        &key(burst_key),
                        format!("limits nothing without {rate_key}; set {rate_key} too"),
                    );
                    None
                }
                Some((_, v)) => w
                    .integer(&key(burst_key), v, 1..=MAX_BURST, "a number of requests")
                    .map(|n| n as u32),
                None => None,
            };
            // One second's worth unless told.
            (rate, burst.unwrap_or(rate))
        };
        (f.client_rate, f.client_burst) = limit(self, "client-rate", "client-burst");
        (f.circuit_rate, f.circuit_burst) = limit(self, "circuit-rate", "circuit-burst");
        f.table_size = t
            .get("table-size")
            .and_then(|v| {
                self.integer(
                    &key("table-size"),
                    v,
                    MIN_TABLE..=MAX_TABLE,
                    "a number of buckets",
                )
            })
            .map_or(f.table_size, |n| n as u32);
        f
    }
}
