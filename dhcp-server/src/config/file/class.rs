//! The `[[class]]` tables: a client class by `test` or by `match` with its
//! `[[class.subclass]]` members (or `members`, a plain list of text values), the settings
//! it gives its clients, and its lease limit. Classes come before the subnets whose pools
//! name them, and a test may name only the classes above it.

use dhcp_proto::expr::{Test, Value as Expr};
use dhcp_proto::policy::class::{Class, Membership, Settings, Subclass};

use super::*;

/// A class's own keys; its settings' keys (`SETTINGS_KEYS`) come besides.
const CLASS_KEYS: &[&str] = &[
    "name",
    "test",
    "match",
    "spawn",
    "subclass",
    "members",
    "lease-limit",
];

/// A listed member's own keys, besides the settings' keys.
const SUBCLASS_KEYS: &[&str] = &["value", "hex"];

/// What a class or a subclass member may set, besides options.
const SETTINGS_KEYS: &[&str] = &[
    "next-server",
    "filename",
    "lease-time",
    "min-lease-time",
    "max-lease-time",
    "renew-time",
    "rebind-time",
];

/// The keys of `SETTINGS_KEYS` that set lease times.
const LEASE_KEYS: &[&str] = SETTINGS_KEYS.split_at(2).1;

impl Walker {
    pub(super) fn classes(&mut self, root: &DeTable<'_>) -> Vec<Class> {
        let Some(v) = root.get("class") else {
            return Vec::new();
        };
        let tables = self.tables("class", v, "class").unwrap_or_default();
        let mut classes: Vec<Class> = Vec::new();
        for (i, head, t) in tables {
            let at = format!("class[{i}]");
            let c = self.class(&at, head, t, &classes).or_else(|| {
                // Already reported; kept under its name so that what names it does not
                // fail too, and the file is refused anyway.
                let name = t.get("name")?.get_ref().as_str()?.to_owned();
                let never = Test::parse("false", &mut |_| None).ok()?;
                Some(Class {
                    name,
                    membership: Membership::Test(never),
                    settings: Settings::default(),
                    lease_limit: None,
                })
            });
            classes.extend(c);
        }
        classes
    }

    fn class(
        &mut self,
        at: &str,
        head: Range<usize>,
        t: &DeTable<'_>,
        before: &[Class],
    ) -> Option<Class> {
        self.check_keys(at, t, &[CLASS_KEYS, SETTINGS_KEYS].concat(), true);
        let key = |k: &str| format!("{at}.{k}");
        let name = match t.get("name") {
            Some(v) => self.string(&key("name"), v).map(str::to_owned),
            None => {
                self.missing(
                    head.clone(),
                    &key("name"),
                    "every [[class]] needs name = \"...\"",
                );
                None
            }
        }?;
        let test = t.get("test").and_then(|v| {
            let k = key("test");
            let src = self.string(&k, v)?;
            Test::parse(src, &mut |n| class_named(before, n))
                .map_err(|e| self.error(v.span(), &k, e.to_string()))
                .ok()
        });
        let value = t.get("match").and_then(|v| {
            let k = key("match");
            let src = self.string(&k, v)?;
            Expr::parse(src)
                .map_err(|e| self.error(v.span(), &k, e.to_string()))
                .ok()
        });
        let spawn = t
            .get("spawn")
            .and_then(|v| self.boolean(&key("spawn"), v))
            .unwrap_or(false);
        let membership = match (test, value, t.contains_key("test"), t.contains_key("match")) {
            (Some(test), None, _, false) => Membership::Test(test),
            (None, Some(value), false, _) => Membership::Match {
                value,
                spawn,
                subclasses: self.subclasses(at, t),
            },
            (_, _, true, true) => {
                self.error(
                    head,
                    at,
                    "a class has either test (its members) or match (the value its \
                     subclasses list), not both",
                );
                return None;
            }
            (_, _, false, false) => {
                self.missing(
                    head,
                    &key("test"),
                    "a class needs test = \"...\" or match = \"...\"",
                );
                return None;
            }
            _ => return None,
        };
        if spawn && !matches!(membership, Membership::Match { .. }) {
            self.error(head, &key("spawn"), "spawn needs match = \"...\"");
        }
        let lease_limit = t.get("lease-limit").and_then(|v| {
            self.integer(
                &key("lease-limit"),
                v,
                1..=i128::from(u32::MAX),
                "a number of leases",
            )
            .map(|n| n as u32)
        });
        Some(Class {
            name,
            membership,
            settings: self.settings(at, t, "class.option"),
            lease_limit,
        })
    }

    fn subclasses(&mut self, at: &str, t: &DeTable<'_>) -> Vec<Subclass> {
        let mut out = Vec::new();
        if let Some(v) = t.get("subclass") {
            let key = format!("{at}.subclass");
            for (k, head, s) in self.tables(&key, v, "class.subclass").unwrap_or_default() {
                let at = format!("{key}[{k}]");
                self.check_keys(&at, s, &[SUBCLASS_KEYS, SETTINGS_KEYS].concat(), true);
                let value = match (s.get("value"), s.get("hex")) {
                    (Some(v), None) => self
                        .string(&format!("{at}.value"), v)
                        .map(|s| s.as_bytes().to_vec()),
                    (None, Some(h)) => self.parsed(&format!("{at}.hex"), h, |s| {
                        octets(s)
                            .filter(|b| !b.is_empty())
                            .ok_or_else(|| format!("'{s}' is not hex octets like 00:1a:2b"))
                    }),
                    _ => {
                        self.missing(
                            head,
                            &format!("{at}.value"),
                            "a subclass needs value = \"text\" or hex = \"..\", one of them",
                        );
                        None
                    }
                };
                let settings = self.settings(&at, s, "class.subclass.option");
                out.extend(value.map(|value| Subclass { value, settings }));
            }
        }
        if let Some(v) = t.get("members") {
            let key = format!("{at}.members");
            let members = self.list(&key, v, true, |w, k, e| w.string(k, e).map(str::to_owned));
            out.extend(members.unwrap_or_default().into_iter().map(|m| Subclass {
                value: m.into_bytes(),
                settings: Settings::default(),
            }));
        }
        out
    }

    /// Options, lease times, `next-server` and `filename` of a class or a subclass.
    fn settings(&mut self, at: &str, t: &DeTable<'_>, header: &str) -> Settings {
        let key = |k: &str| format!("{at}.{k}");
        let lease = LEASE_KEYS
            .iter()
            .any(|k| t.contains_key(*k))
            .then(|| self.lease_times(at, t));
        let next_server = t
            .get("next-server")
            .and_then(|v| self.parsed(&key("next-server"), v, ip));
        let filename = t
            .get("filename")
            .and_then(|v| self.parsed(&key("filename"), v, text));
        Settings {
            options: self.options(at, t, header),
            lease,
            next_server,
            filename,
        }
    }
}
