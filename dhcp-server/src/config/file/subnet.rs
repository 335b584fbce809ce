//! The `[[subnet]]` tables of the file: address, pools (each a range, or a table with the
//! classes it admits and options of its own), lease times, options (named and raw) and
//! `[[subnet.reservation]]`s, which take the same option keys.

use super::*;
use dhcp_proto::policy::{Subscriber, SubscriberKind};

impl Walker {
    /// `None` only when the subnet's own address is missing or wrong: without it the
    /// model cannot be checked as a whole. Anything else leaves a default behind an error.
    pub(super) fn subnet(
        &mut self,
        at: &str,
        head: Range<usize>,
        t: &DeTable<'_>,
        interfaces: &[String],
        classes: &[Class],
    ) -> Option<Subnet> {
        self.check_keys(at, t, SUBNET_KEYS, true);
        let key = |k: &str| format!("{at}.{k}");
        let net = match t.get("subnet") {
            Some(v) => self.parsed(&key("subnet"), v, |s| s.parse::<Ipv4Net>()),
            None => {
                self.missing(
                    head.clone(),
                    &key("subnet"),
                    "every [[subnet]] needs subnet = \"ADDRESS/PREFIX\"",
                );
                None
            }
        };
        let interface = t.get("interface").and_then(|v| {
            let k = key("interface");
            let name = self.string(&k, v)?;
            let found = interfaces
                .iter()
                .position(|n| n == name)
                .and_then(|l| LinkId::try_from(l).ok());
            if found.is_none() {
                self.error(
                    v.span(),
                    &k,
                    format!(
                        "'{name}' is not listed in interfaces [{}]",
                        interfaces.join(", ")
                    ),
                );
            }
            found
        });
        let pools = t
            .get("pools")
            .and_then(|v| {
                self.list(&key("pools"), v, false, |w, k, e| match e.get_ref() {
                    DeValue::Table(t) => w.pool(k, e.span(), t, classes),
                    _ => w.parsed(k, e, |s| s.parse::<Pool>()),
                })
            })
            .unwrap_or_default();
        let server_id = t
            .get("server-id")
            .and_then(|v| self.parsed(&key("server-id"), v, unicast));
        let lease = self.lease_times(at, t);
        let options = self.options(at, t, "subnet.option");
        let reservations = t
            .get("reservation")
            .and_then(|v| self.tables(&key("reservation"), v, "subnet.reservation"))
            .unwrap_or_default()
            .into_iter()
            .map(|(k, _, r)| self.reservation(&format!("{at}.reservation[{k}]"), r))
            .collect();
        Some(Subnet {
            net: net?,
            interface,
            pools,
            server_id,
            lease,
            options,
            reservations,
        })
    }

    /// `{ range = "A-B", allow = [...], deny = [...], ...options }`.
    fn pool(
        &mut self,
        at: &str,
        head: Range<usize>,
        t: &DeTable<'_>,
        classes: &[Class],
    ) -> Option<Pool> {
        self.check_keys(at, t, &["range", "allow", "deny"], true);
        let range = match t.get("range") {
            Some(v) => self.parsed(&format!("{at}.range"), v, |s| s.parse::<AddrRange>()),
            None => {
                self.missing(
                    head,
                    &format!("{at}.range"),
                    "a pool needs range = \"FIRST-LAST\"",
                );
                None
            }
        };
        let mut names = |key: &str| -> Vec<ClassId> {
            let Some(v) = t.get(key) else {
                return Vec::new();
            };
            self.list(&format!("{at}.{key}"), v, true, |w, k, e| {
                let name = w.string(k, e)?;
                let id = class_named(classes, name);
                if id.is_none() {
                    let known: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
                    w.error(
                        e.span(),
                        k,
                        format!(
                            "no class named '{name}'; classes: {}, KNOWN, UNKNOWN",
                            known.join(", ")
                        ),
                    );
                }
                id
            })
            .unwrap_or_default()
        };
        let allow = names("allow");
        let deny = names("deny");
        Some(Pool {
            range: range?,
            allow,
            deny,
            options: self.options(at, t, "subnet.pools.option"),
        })
    }

    pub(super) fn lease_times(&mut self, at: &str, t: &DeTable<'_>) -> LeaseTimes {
        let mut get = |name: &str| {
            t.get(name)
                .and_then(|v| self.seconds(&format!("{at}.{name}"), v))
        };
        let mut lease = LeaseTimes::default();
        let default = get("lease-time");
        let min = get("min-lease-time");
        let max = get("max-lease-time");
        lease.renew = get("renew-time");
        lease.rebind = get("rebind-time");
        // The bounds follow an explicit lease time, so `lease-time = 7200` alone is valid.
        lease.default = default.unwrap_or(lease.default);
        lease.min = min.unwrap_or(lease.min.min(lease.default));
        lease.max = max.unwrap_or(lease.max.max(lease.default));
        lease
    }

    fn reservation(&mut self, at: &str, t: &DeTable<'_>) -> Reservation {
        self.check_keys(at, t, RESERVATION_KEYS, true);
        let key = |k: &str| format!("{at}.{k}");
        let hw_address = t.get("hw-address").and_then(|v| {
            self.parsed(&key("hw-address"), v, |s| {
                octets(s)
                    .and_then(|b| <[u8; 6]>::try_from(b).ok())
                    .ok_or_else(|| format!("'{s}' is not a MAC address like 02:00:00:00:00:01"))
            })
        });
        let client_id = t.get("client-id").and_then(|v| {
            self.parsed(&key("client-id"), v, |s| {
                octets(s)
                    .filter(|b| (2..=OPTION_MAX).contains(&b.len()))
                    .ok_or_else(|| {
                        format!("'{s}' is not 2 to 255 hex octets like 01:02:00:00:00:00:01")
                    })
            })
        });
        let mut subscriber = None;
        for kind in SubscriberKind::ALL {
            let Some(v) = t.get(kind.name()) else {
                continue;
            };
            let k = key(kind.name());
            let value = self.parsed(&k, v, |s| {
                Subscriber::parse_value(s).ok_or_else(|| {
                    format!("'{s}' is not 1 to 255 octets of text, or 0x and hex octets")
                })
            });
            if subscriber.is_some() {
                self.error(
                    v.span(),
                    &k,
                    "a reservation names one of circuit-id, remote-id, subscriber-id, flex-id",
                );
            } else {
                subscriber = value.map(|value| Subscriber { kind, value });
            }
        }
        let address = t
            .get("ip-address")
            .and_then(|v| self.parsed(&key("ip-address"), v, ip));
        let host_name = t
            .get("host-name")
            .and_then(|v| self.parsed(&key("host-name"), v, text));
        Reservation {
            hw_address,
            client_id,
            subscriber,
            address,
            host_name,
            options: self.options(at, t, "subnet.reservation.option"),
        }
    }

    /// The named option keys and the raw `option` entries of a subnet or reservation.
    pub(super) fn options(&mut self, at: &str, t: &DeTable<'_>, header: &str) -> OptionSet {
        let mut set = OptionSet::default();
        for &(name, code, form) in NAMED {
            let Some(v) = t.get(name) else { continue };
            let key = format!("{at}.{name}");
            match form {
                Form::Addresses => {
                    if let Some(ips) = self.list(&key, v, true, |w, k, e| w.parsed(k, e, ip)) {
                        if ips.len() * 4 > OPTION_MAX {
                            self.error(
                                v.span(),
                                &key,
                                format!(
                                    "{} addresses; at most {} fit in the option",
                                    ips.len(),
                                    OPTION_MAX / 4
                                ),
                            );
                        }
                        set.set_addresses(code, &ips);
                    }
                }
                Form::Address => {
                    if let Some(a) = self.parsed(&key, v, ip) {
                        set.set_addresses(code, &[a]);
                    }
                }
                Form::Text => {
                    if let Some(s) = self.parsed(&key, v, text) {
                        set.set_text(code, &s);
                    }
                }
                Form::Domains => {
                    let names =
                        self.list(&key, v, true, |w, k, e| w.string(k, e).map(str::to_owned));
                    if let Some(Err(e)) = names.map(|n| set.set_domain_search(&n)) {
                        self.error(v.span(), &key, e);
                    }
                }
                Form::Routes => {
                    if let Some(routes) = self.list(&key, v, true, |w, k, e| w.route(k, e)) {
                        set.set_classless_routes(&routes);
                    }
                }
            }
        }
        let Some(v) = t.get("option") else { return set };
        let key = format!("{at}.option");
        for (i, head, o) in self.tables(&key, v, header).unwrap_or_default() {
            let at = format!("{key}[{i}]");
            self.check_keys(&at, o, &["code", "hex"], false);
            let code_key = format!("{at}.code");
            let code = match o.get("code") {
                Some(c) => self
                    .integer(&code_key, c, 1..=254, "an option code")
                    .and_then(|n| u8::try_from(n).ok())
                    .map(|n| (n, c.span())),
                None => {
                    self.missing(head.clone(), &code_key, "an option needs code = N");
                    None
                }
            };
            let value = match o.get("hex") {
                Some(h) => self.parsed(&format!("{at}.hex"), h, |s| {
                    octets(s)
                        .filter(|b| (1..=OPTION_MAX).contains(&b.len()))
                        .ok_or_else(|| format!("'{s}' is not 1 to 255 hex octets like c0:00:02:01"))
                }),
                None => {
                    self.missing(head, &format!("{at}.hex"), "an option needs hex = \"...\"");
                    None
                }
            };
            let Some((c, span)) = code else { continue };
            let refused = if MANAGED.contains(&c) {
                Some(format!(
                    "option {c} is managed by the server and cannot be configured"
                ))
            } else if let Some(n) = NAMED.iter().find(|n| n.1 == c) {
                Some(format!(
                    "option {c} has its own key; write {} = ... instead",
                    n.0
                ))
            } else if c == code::HOST_NAME {
                Some("option 12 is a reservation's host-name; write host-name = ... there".into())
            } else if set.get(c).is_some() {
                Some(format!("option {c} is set twice"))
            } else {
                None
            };
            match (refused, value) {
                (Some(r), _) => self.error(span, &code_key, r),
                (None, Some(value)) => set.set_raw(c, value),
                (None, None) => {}
            }
        }
        set
    }

    fn route(&mut self, key: &str, v: &Value<'_>) -> Option<ClasslessRoute> {
        let DeValue::Table(t) = v.get_ref() else {
            self.mismatch(
                key,
                v,
                "{ destination = \"PREFIX/LEN\", router = \"ADDRESS\" }",
            );
            return None;
        };
        self.check_keys(key, t, &["destination", "router"], false);
        let field = |w: &mut Self, name: &str| {
            let k = format!("{key}.{name}");
            let found = t.get(name);
            if found.is_none() {
                w.missing(v.span(), &k, &format!("a route needs {name} = \"...\""));
            }
            found.map(|f| (k, f))
        };
        let destination = field(self, "destination").and_then(|(k, d)| {
            self.parsed(&k, d, |s| {
                let net: Ipv4Net = s.parse()?;
                if net.addr == net.network() {
                    Ok(net)
                } else {
                    Err(format!("'{s}' has host bits set; write {net}"))
                }
            })
        });
        let router = field(self, "router").and_then(|(k, r)| self.parsed(&k, r, ip));
        Some(ClasslessRoute {
            destination: destination?,
            router: router?,
        })
    }
}
