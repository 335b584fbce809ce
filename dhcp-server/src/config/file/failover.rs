//! The `[failover]` table of the file: one partner, its addresses and ports, and the
//! protocol's timers and shares, with the keys only the primary may set.

use super::*;

impl Walker {
    /// The `[failover]` table; `None` when a key without a default (name, role, address,
    /// peer-address) is missing or wrong: the partnership is checked as a whole only once
    /// those read well.
    pub(super) fn failover(&mut self, head: Range<usize>, v: &Value<'_>) -> Option<Failover> {
        let t = match v.get_ref() {
            DeValue::Table(t) => t,
            DeValue::Array(_) => {
                self.error(
                    v.span(),
                    "failover",
                    "write [failover], not [[failover]]: a server has one partnership",
                );
                return None;
            }
            _ => {
                self.mismatch("failover", v, "a [failover] table");
                return None;
            }
        };
        self.check_keys("failover", t, FAILOVER_KEYS, false);
        let key = |k: &str| format!("failover.{k}");
        let required = |w: &mut Self, name: &str, hint: &str| {
            let found = t.get(name);
            if found.is_none() {
                w.missing(head.clone(), &key(name), hint);
            }
            found
        };
        let name = required(
            self,
            "name",
            "a partnership needs name = \"...\", the same on both servers",
        )
        .and_then(|v| self.parsed(&key("name"), v, text));
        let role = required(
            self,
            "role",
            "write role = \"primary\" or role = \"secondary\"",
        )
        .and_then(|v| {
            self.parsed(&key("role"), v, |s| match s {
                "primary" => Ok(Role::Primary),
                "secondary" => Ok(Role::Secondary),
                _ => Err(format!(
                    "unknown role '{s}'; use \"primary\" or \"secondary\""
                )),
            })
        });
        let address = required(
            self,
            "address",
            "write address = \"...\", this server's address on the link",
        )
        .and_then(|v| self.parsed(&key("address"), v, unicast));
        let peer_address = required(
            self,
            "peer-address",
            "write peer-address = \"...\", the partner's address",
        )
        .and_then(|v| self.parsed(&key("peer-address"), v, unicast));
        let complete =
            name.is_some() && role.is_some() && address.is_some() && peer_address.is_some();
        let mut f = Failover::new(
            name.unwrap_or_default(),
            role.unwrap_or(Role::Primary),
            address.unwrap_or(Ipv4Addr::UNSPECIFIED),
            peer_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
        );
        let port = |w: &mut Self, name: &str, default: u16| {
            t.get(name)
                .and_then(|v| w.integer(&key(name), v, 1..=i128::from(u16::MAX), "a TCP port"))
                .map_or(default, |n| n as u16)
        };
        f.port = port(self, "port", f.port);
        f.peer_port = port(self, "peer-port", f.peer_port);
        let seconds = |w: &mut Self, name: &str, default: u32| {
            t.get(name)
                .and_then(|v| w.seconds(&key(name), v))
                .unwrap_or(default)
        };
        let percent = |w: &mut Self, name: &str, default: u8| {
            t.get(name)
                .and_then(|v| w.integer(&key(name), v, 0..=100, "a percentage"))
                .map_or(default, |n| n as u8)
        };
        if role == Some(Role::Secondary) {
            // Refused, not read: the secondary runs on the primary's values.
            for &name in PRIMARY_ONLY {
                let Some((k, _)) = t.get_key_value(name) else {
                    continue;
                };
                let reason = if name == "mclt" {
                    "only the primary sets the mclt; the secondary takes it from the primary \
                     when they connect"
                } else {
                    "only the primary sets the load balancing (split, hba); the secondary takes \
                     it from the primary when they connect (dhcpd: \"secondary may not define \
                     load balance settings\")"
                };
                self.error(k.span(), &key(name), reason);
            }
        } else {
            f.mclt = seconds(self, "mclt", f.mclt);
            f.split = t
                .get("split")
                .and_then(|v| self.integer(&key("split"), v, 0..=256, "a number of hash buckets"))
                .map_or(f.split, |n| n as u16);
            f.hba = t.get("hba").and_then(|v| self.parsed(&key("hba"), v, hba));
            if let (Some(_), Some((k, _))) = (t.get("split"), t.get_key_value("hba")) {
                self.error(
                    k.span(),
                    &key("hba"),
                    "split and hba both set the load balancing; keep one",
                );
            }
        }
        f.max_response_delay = seconds(self, "max-response-delay", f.max_response_delay);
        f.max_unacked_updates = t
            .get("max-unacked-updates")
            .and_then(|v| {
                self.integer(
                    &key("max-unacked-updates"),
                    v,
                    0..=i128::from(u32::MAX),
                    "a number of updates",
                )
            })
            .map_or(f.max_unacked_updates, |n| n as u32);
        f.load_balance_max_seconds =
            seconds(self, "load-balance-max-seconds", f.load_balance_max_seconds);
        f.auto_partner_down = seconds(self, "auto-partner-down", f.auto_partner_down);
        f.max_lease_misbalance = percent(self, "max-lease-misbalance", f.max_lease_misbalance);
        f.max_lease_ownership = percent(self, "max-lease-ownership", f.max_lease_ownership);
        f.min_balance = seconds(self, "min-balance", f.min_balance);
        f.max_balance = seconds(self, "max-balance", f.max_balance);
        complete.then_some(f)
    }
}
