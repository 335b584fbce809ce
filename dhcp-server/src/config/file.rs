//! The TOML configuration file. The text is parsed into toml's spanned document tree and
//! walked by hand rather than deserialized with serde: a derive stops at the first wrong
//! value, and the option keys that `[[subnet]]` and `[[subnet.reservation]]` share could
//! only be flattened into both by giving up `deny_unknown_fields`. The walk reports every
//! problem at once, unknown keys included, each with file, line, key path and reason.
//! `Policy::validate` then checks the model as a whole, and its key paths are looked up in
//! the same tree to find their lines. docs/configuration.md is the schema reference.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::{
    AddrRange, Backend, ClasslessRoute, Config, Failover, Invalid, Ipv4Net, LeaseTimes, LinkId,
    OptionSet, Policy, Reservation, Subnet,
};
use dhcp_proto::failover::{Hba, Role};
use dhcp_proto::wire::code;

/// One error in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based; 0 when no line applies (the file could not be read).
    pub line: usize,
    /// Key path, e.g. `subnet[1].pools[0]`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.line > 0 {
            write!(f, "{}:", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, " key '{}':", self.key)?;
        }
        write!(f, " {}", self.reason)
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "authoritative",
    "offer-hold",
    "decline-hold",
    "interfaces",
    "backend",
    "workers",
    "busy-poll",
    "pin-workers",
    "state-dir",
    "durability",
    "journal-segment-size",
    "control-socket",
    "control-uids",
    "control-gids",
    "metrics-listen",
    "log-level",
    "failover",
    "subnet",
];

const SUBNET_KEYS: &[&str] = &[
    "subnet",
    "interface",
    "pools",
    "server-id",
    "lease-time",
    "min-lease-time",
    "max-lease-time",
    "renew-time",
    "rebind-time",
    "reservation",
];

const RESERVATION_KEYS: &[&str] = &["hw-address", "client-id", "ip-address", "host-name"];

const FAILOVER_KEYS: &[&str] = &[
    "name",
    "role",
    "address",
    "port",
    "peer-address",
    "peer-port",
    "mclt",
    "split",
    "hba",
    "max-response-delay",
    "max-unacked-updates",
    "load-balance-max-seconds",
    "auto-partner-down",
    "max-lease-misbalance",
    "max-lease-ownership",
    "min-balance",
    "max-balance",
];

/// Keys the secondary takes from the primary when they connect, as dhcpd does.
const PRIMARY_ONLY: &[&str] = &["mclt", "split", "hba"];

/// How a named option's value is written in the file.
#[derive(Clone, Copy)]
enum Form {
    Addresses,
    Address,
    Text,
    Domains,
    Routes,
}

/// Options with a key of their own, allowed in a subnet and in a reservation. `option`
/// (raw code and hex) covers the rest but not these, so each is written one way only and
/// its value is checked for its form.
const NAMED: &[(&str, u8, Form)] = &[
    ("routers", code::ROUTER, Form::Addresses),
    ("dns-servers", code::DNS_SERVERS, Form::Addresses),
    ("domain-name", code::DOMAIN_NAME, Form::Text),
    ("broadcast-address", code::BROADCAST_ADDRESS, Form::Address),
    ("ntp-servers", code::NTP_SERVERS, Form::Addresses),
    ("domain-search", code::DOMAIN_SEARCH, Form::Domains),
    ("classless-routes", code::CLASSLESS_ROUTES, Form::Routes),
];

/// Option codes the server writes or echoes itself; configuring them would contradict the
/// lease or the exchange.
const MANAGED: &[u8] = &[
    code::PAD,
    code::SUBNET_MASK,
    code::REQUESTED_ADDRESS,
    code::LEASE_TIME,
    code::OVERLOAD,
    code::MESSAGE_TYPE,
    code::SERVER_ID,
    code::PARAMETER_REQUEST_LIST,
    code::MESSAGE,
    code::MAX_MESSAGE_SIZE,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
    code::CLIENT_ID,
    code::RELAY_AGENT_INFO,
    code::END,
];

/// One option instance holds 255 octets. Longer values would be split (RFC 3396), which
/// clients are only required to reassemble for options whose RFC says so (119, 121).
const OPTION_MAX: usize = 255;

/// Linux's IFNAMSIZ less the terminating NUL; SO_BINDTODEVICE refuses longer names.
const IFNAME_MAX: usize = 15;

/// The engine numbers subnets with a u16 and builds `0..count as u16`.
const MAX_SUBNETS: usize = u16::MAX as usize;
/// Workers share the XDP program's socket map; more than CPUs only adds contention.
const MAX_WORKERS: u16 = 256;

struct Found {
    span: Range<usize>,
    key: String,
    reason: String,
}

/// Builds the model from the document tree, collecting errors instead of stopping.
#[derive(Default)]
struct Walker {
    errors: Vec<Found>,
    /// Errors that left a value out of the model or at its default; an unknown key
    /// leaves nothing out.
    lossy: usize,
}

/// What the walk produced: the model, if every subnet could be built, and which subnets
/// lost a value to an error (their `validate` findings could be echoes of it, such as "no
/// pool" for a pool that did not parse, or name shifted indices, so they are dropped).
struct Walked {
    config: Option<Config>,
    dirty: Vec<bool>,
}

impl Walker {
    fn error(&mut self, span: Range<usize>, key: &str, reason: impl Into<String>) {
        self.lossy += 1;
        self.errors.push(Found {
            span,
            key: key.to_owned(),
            reason: reason.into(),
        });
    }

    fn missing(&mut self, span: Range<usize>, key: &str, hint: &str) {
        self.error(span, key, format!("missing; {hint}"));
    }

    fn mismatch(&mut self, key: &str, v: &Value<'_>, expected: &str) {
        let found = match v.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.error(v.span(), key, format!("expected {expected}, found {found}"));
    }

    /// Reports every key of `t` that is not in `own` (or, with `options`, an option key).
    fn check_keys(&mut self, at: &str, t: &DeTable<'_>, own: &[&str], options: bool) {
        let mut known = own.to_vec();
        if options {
            known.extend(NAMED.iter().map(|n| n.0));
            known.push("option");
        }
        for (k, _) in t.iter() {
            let name: &str = k.get_ref();
            if known.contains(&name) {
                continue;
            }
            let reason = match closest(name, &known) {
                // The likely intent behind `options = { routers = ... }`.
                _ if options && name == "options" => "unknown key; write option keys such as \
                    routers directly in this table (option = [...] is for raw codes)"
                    .into(),
                Some(c) => format!("unknown key; did you mean '{c}'?"),
                None => format!("unknown key; expected one of {}", known.join(", ")),
            };
            self.errors.push(Found {
                span: k.span(),
                key: join(at, name),
                reason,
            });
        }
    }

    fn string<'v>(&mut self, key: &str, v: &'v Value<'_>) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.mismatch(key, v, "a string");
                None
            }
        }
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        v: &Value<'_>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(key, v)?;
        parse(s).map_err(|r| self.error(v.span(), key, r)).ok()
    }

    fn boolean(&mut self, key: &str, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.mismatch(key, v, "true or false");
                None
            }
        }
    }

    fn integer(
        &mut self,
        key: &str,
        v: &Value<'_>,
        range: RangeInclusive<i128>,
        what: &str,
    ) -> Option<i128> {
        let expected = format!("{what} from {} to {}", range.start(), range.end());
        let DeValue::Integer(i) = v.get_ref() else {
            self.mismatch(key, v, &expected);
            return None;
        };
        match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span(),
                    key,
                    format!("{i} is out of range; expected {expected}"),
                );
                None
            }
        }
    }

    fn seconds(&mut self, key: &str, v: &Value<'_>) -> Option<u32> {
        self.integer(key, v, 0..=i128::from(u32::MAX), "a number of seconds")
            .and_then(|n| u32::try_from(n).ok())
    }

    /// The elements of an array that read well, each keyed `key[i]`; `None` when `v` is
    /// not an array at all.
    fn list<'v, 'i, T>(
        &mut self,
        key: &str,
        v: &'v Value<'i>,
        nonempty: bool,
        mut each: impl FnMut(&mut Self, &str, &'v Value<'i>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let DeValue::Array(a) = v.get_ref() else {
            self.mismatch(key, v, "an array [...]");
            return None;
        };
        if nonempty && a.is_empty() {
            self.error(
                v.span(),
                key,
                "must not be empty; leave the key out instead",
            );
        }
        Some(
            a.iter()
                .enumerate()
                .filter_map(|(i, e)| each(self, &format!("{key}[{i}]"), e))
                .collect(),
        )
    }

    /// The tables of an array of tables (`[[header]]` or an inline `[{...}]`), with their
    /// index and span; `None` when `v` is not an array at all.
    fn tables<'v, 'i>(
        &mut self,
        key: &str,
        v: &'v Value<'i>,
        header: &str,
    ) -> Option<Vec<(usize, Range<usize>, &'v DeTable<'i>)>> {
        let a: &DeArray<'i> = match v.get_ref() {
            DeValue::Array(a) => a,
            DeValue::Table(_) => {
                self.error(
                    v.span(),
                    key,
                    format!("write [[{header}]], not [{header}]: there may be several"),
                );
                return None;
            }
            _ => {
                self.mismatch(key, v, &format!("[[{header}]] tables"));
                return None;
            }
        };
        let mut out = Vec::new();
        for (i, e) in a.iter().enumerate() {
            match e.get_ref() {
                DeValue::Table(t) => out.push((i, e.span(), t)),
                _ => self.mismatch(&format!("{key}[{i}]"), e, "a table"),
            }
        }
        Some(out)
    }

    fn config(&mut self, root: &DeTable<'_>) -> Walked {
        self.check_keys("", root, TOP_KEYS, false);
        let defaults = Config::default();
        let authoritative = root
            .get("authoritative")
            .and_then(|v| self.boolean("authoritative", v))
            .unwrap_or(defaults.policy.authoritative);
        let offer_hold = root
            .get("offer-hold")
            .and_then(|v| self.seconds("offer-hold", v))
            .unwrap_or(defaults.policy.offer_hold);
        let decline_hold = root
            .get("decline-hold")
            .and_then(|v| self.seconds("decline-hold", v))
            .unwrap_or(defaults.policy.decline_hold);
        let backend = root
            .get("backend")
            .and_then(|v| {
                self.parsed("backend", v, |s| match s {
                    "auto" => Ok(Backend::Auto),
                    "xdp" => Ok(Backend::Xdp),
                    "udp" => Ok(Backend::Udp),
                    _ => Err(format!(
                        "unknown backend '{s}'; use \"xdp\", \"udp\" or \"auto\""
                    )),
                })
            })
            .unwrap_or_default();
        let workers = root
            .get("workers")
            .and_then(|v| {
                self.integer(
                    "workers",
                    v,
                    0..=i128::from(MAX_WORKERS),
                    "a worker count (0: one per CPU)",
                )
            })
            .map_or(defaults.workers, |n| n as u16);
        let busy_poll = root
            .get("busy-poll")
            .and_then(|v| self.boolean("busy-poll", v))
            .unwrap_or(defaults.busy_poll);
        let pin_workers = root
            .get("pin-workers")
            .and_then(|v| self.boolean("pin-workers", v))
            .unwrap_or(defaults.pin_workers);
        let state_dir = root.get("state-dir").and_then(|v| {
            self.parsed("state-dir", v, |s| {
                let p = PathBuf::from(s);
                if p.is_absolute() {
                    Ok(p)
                } else {
                    Err(format!("'{s}' is not an absolute path"))
                }
            })
        });
        let durability = root
            .get("durability")
            .and_then(|v| self.parsed("durability", v, |s| s.parse()))
            .unwrap_or(defaults.durability);
        let journal_segment_bytes = root
            .get("journal-segment-size")
            .and_then(|v| {
                self.integer(
                    "journal-segment-size",
                    v,
                    i128::from(crate::journal::Options::MIN_SEGMENT)..=1 << 40,
                    "a size in bytes",
                )
            })
            .map_or(defaults.journal_segment_bytes, |n| n as u64);
        let control_socket = root.get("control-socket").and_then(|v| {
            self.parsed("control-socket", v, |s| {
                let p = PathBuf::from(s);
                if p.is_absolute() {
                    Ok(p)
                } else {
                    Err(format!("'{s}' is not an absolute path"))
                }
            })
        });
        let ids = |this: &mut Self, key: &str| -> Vec<u32> {
            let Some(v) = root.get(key) else {
                return Vec::new();
            };
            match v.get_ref() {
                DeValue::Array(items) => items
                    .iter()
                    .filter_map(|i| this.integer(key, i, 0..=i128::from(u32::MAX), "a numeric id"))
                    .map(|n| n as u32)
                    .collect(),
                _ => {
                    this.mismatch(key, v, "a list of numeric ids");
                    Vec::new()
                }
            }
        };
        let control_uids = ids(self, "control-uids");
        let control_gids = ids(self, "control-gids");
        let metrics_listen = root.get("metrics-listen").and_then(|v| {
            self.parsed("metrics-listen", v, |s| {
                s.parse().map_err(|_| format!("'{s}' is not ADDRESS:PORT"))
            })
        });
        let log_level = root.get("log-level").and_then(|v| {
            self.parsed("log-level", v, |s| {
                super::log_filter(s).map(|_| s.to_owned())
            })
        });
        let failover = root
            .get_key_value("failover")
            .and_then(|(k, v)| self.failover(k.span(), v));
        let interfaces = self.interfaces(root);
        let mut dirty = Vec::new();
        let subnets = match root.get_key_value("subnet") {
            None => Some(Vec::new()),
            Some((k, v)) => self.tables("subnet", v, "subnet").and_then(|tables| {
                if tables.len() > MAX_SUBNETS {
                    self.error(
                        k.span(),
                        "subnet",
                        format!(
                            "{} subnets; at most {MAX_SUBNETS} are supported",
                            tables.len()
                        ),
                    );
                }
                let mut subnets = Vec::new();
                let mut complete = true;
                for (i, span, t) in tables {
                    let before = self.lossy;
                    let s = self.subnet(&format!("subnet[{i}]"), span, t, &interfaces);
                    complete &= s.is_some();
                    subnets.extend(s);
                    dirty.push(self.lossy > before);
                }
                complete.then_some(subnets)
            }),
        };
        let config = subnets.map(|subnets| Config {
            policy: Policy {
                authoritative,
                offer_hold,
                decline_hold,
                interfaces,
                subnets,
                failover,
            },
            backend,
            workers,
            busy_poll,
            pin_workers,
            state_dir,
            durability,
            journal_segment_bytes,
            control_socket,
            control_uids,
            control_gids,
            metrics_listen,
            log_level,
        });
        Walked { config, dirty }
    }

    fn interfaces(&mut self, root: &DeTable<'_>) -> Vec<String> {
        let Some(v) = root.get("interfaces") else {
            self.missing(
                0..0,
                "interfaces",
                "list the interfaces to listen on, e.g. interfaces = [\"eth0\"]",
            );
            return Vec::new();
        };
        let mut names: Vec<String> = Vec::new();
        self.list("interfaces", v, true, |w, key, e| {
            let name = w.string(key, e)?;
            if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', ' ', '\t']) {
                let reason = format!(
                    "'{name}' is not an interface name: 1 to {IFNAME_MAX} characters, no '/' or spaces"
                );
                w.error(e.span(), key, reason);
            } else if names.iter().any(|n| n == name) {
                w.error(e.span(), key, format!("'{name}' is listed twice"));
            } else {
                names.push(name.to_owned());
            }
            Some(())
        });
        names
    }

    /// The `[failover]` table; `None` when a key without a default (name, role, address,
    /// peer-address) is missing or wrong: the partnership is checked as a whole only once
    /// those read well.
    fn failover(&mut self, head: Range<usize>, v: &Value<'_>) -> Option<Failover> {
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

    /// `None` only when the subnet's own address is missing or wrong: without it the
    /// model cannot be checked as a whole. Anything else leaves a default behind an error.
    fn subnet(
        &mut self,
        at: &str,
        head: Range<usize>,
        t: &DeTable<'_>,
        interfaces: &[String],
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
                self.list(&key("pools"), v, false, |w, k, e| {
                    w.parsed(k, e, |s| s.parse::<AddrRange>())
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

    fn lease_times(&mut self, at: &str, t: &DeTable<'_>) -> LeaseTimes {
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
        let address = t
            .get("ip-address")
            .and_then(|v| self.parsed(&key("ip-address"), v, ip));
        let host_name = t
            .get("host-name")
            .and_then(|v| self.parsed(&key("host-name"), v, text));
        Reservation {
            hw_address,
            client_id,
            address,
            host_name,
            options: self.options(at, t, "subnet.reservation.option"),
        }
    }

    /// The named option keys and the raw `option` entries of a subnet or reservation.
    fn options(&mut self, at: &str, t: &DeTable<'_>, header: &str) -> OptionSet {
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

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn ip(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not an IPv4 address"))
}

fn unicast(s: &str) -> Result<Ipv4Addr, String> {
    let a = ip(s)?;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
        Err(format!("{a} is not a unicast address"))
    } else {
        Ok(a)
    }
}

/// A failover hash bucket assignment as dhcpd writes it: 32 octets, bit `b % 8` of octet
/// `b / 8` set when bucket `b` is the primary's.
fn hba(s: &str) -> Result<Hba, String> {
    octets(s)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(Hba)
        .ok_or_else(|| format!("'{s}' is not 32 hex octets (a bit per hash bucket)"))
}

/// A text option: something a client can take as a name, in one option instance.
fn text(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > OPTION_MAX || s.contains(char::is_control) {
        Err(format!(
            "'{}' is not 1 to {OPTION_MAX} printable characters",
            s.escape_debug()
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// Hex octets, either separated (`02:00:00:00:00:01`, or with '-') two digits each, or run
/// together (`020000000001`).
fn octets(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let pairs: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else if s.is_ascii() && s.len().is_multiple_of(2) {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| s.get(i..i + 2))
            .collect()
    } else {
        return None;
    };
    pairs
        .into_iter()
        .map(|p| {
            (p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect()
}

/// The known key an unknown one was most likely meant to be: a typo, a plural.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Where `path` (as `Policy::validate` writes it, e.g. `subnet[1].pools[0]`) is in the
/// document: the key or array element it names, else the nearest enclosing one that
/// exists, else the top of the file.
fn locate(doc: &DeTable<'_>, path: &str) -> Range<usize> {
    let mut span = 0..0;
    let mut table = doc;
    for segment in path.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, i)) => (n, i.strip_suffix(']').and_then(|i| i.parse::<usize>().ok())),
            None => (segment, None),
        };
        let Some((k, mut v)) = table.get_key_value(name) else {
            break;
        };
        span = k.span();
        if let Some(i) = index {
            let Some(e) = v.get_ref().as_array().and_then(|a| a.get(i)) else {
                break;
            };
            span = e.span();
            v = e;
        }
        let DeValue::Table(t) = v.get_ref() else {
            break;
        };
        table = t;
    }
    span
}

/// The subnet a `validate` key path is under, if any.
fn subnet_of(path: &str) -> Option<usize> {
    path.strip_prefix("subnet[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a syntax error belongs to: the nearest line at or above it that sets a bare
/// key (`name = ...`) or opens a table (`[name]`, `[[name]]`). The tree is not available
/// to ask, since the document did not parse.
fn key_near(text: &str, line: usize) -> String {
    let key_of = |l: &str| {
        let l = l.trim();
        let k = if let Some(header) = l.strip_prefix('[') {
            header.trim_start_matches('[').split(']').next()?
        } else {
            l.split_once('=')?.0
        };
        let k = k.trim();
        (!k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .then(|| k.to_owned())
    };
    let lines: Vec<&str> = text.lines().take(line).collect();
    lines.into_iter().rev().find_map(key_of).unwrap_or_default()
}

/// `load_file`, also returning the text read, so that findings made later about the
/// model (a reload's checks against the running server) can be put at their line with
/// `error_at`.
pub fn load_file_text(path: &Path) -> Result<(Config, String), Vec<FileError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![FileError {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        }]
    })?;
    parse(path, &text).map(|c| (c, text))
}

/// A finding about key path `bad.path` (as `Policy::validate` writes it) of the file at
/// `path` whose text is `text`, with the line of that key.
pub fn error_at(path: &Path, text: &str, bad: Invalid) -> FileError {
    let line = DeTable::parse(text).map_or(0, |doc| {
        line_of(text, locate(doc.get_ref(), &bad.path).start)
    });
    FileError {
        file: path.to_path_buf(),
        line,
        key: bad.path,
        reason: bad.reason,
    }
}

/// Reads, parses and validates a configuration file, returning every error found.
pub fn load_file(path: &Path) -> Result<Config, Vec<FileError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![FileError {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Parses configuration text; `path` only names the file in errors.
fn parse(path: &Path, text: &str) -> Result<Config, Vec<FileError>> {
    let doc = DeTable::parse(text).map_err(|e| {
        // Only the first syntax error: past it the parser's idea of the document is a
        // guess, and its further complaints mostly echo the first.
        let line = line_of(text, e.span().map_or(0, |s| s.start));
        vec![FileError {
            file: path.to_path_buf(),
            line,
            key: key_near(text, line),
            reason: format!("TOML syntax: {}", e.message().trim()),
        }]
    })?;
    let mut walker = Walker::default();
    let Walked { config, dirty } = walker.config(doc.get_ref());
    let mut found = walker.errors;
    if let Some(config) = &config {
        if let Err(bad) = config.policy.validate() {
            let echoes = |p: &str| subnet_of(p).is_some_and(|i| dirty.get(i) == Some(&true));
            found.extend(bad.into_iter().filter(|b| !echoes(&b.path)).map(
                |Invalid { path, reason }| Found {
                    span: locate(doc.get_ref(), &path),
                    key: path,
                    reason,
                },
            ));
        }
    }
    match config {
        Some(config) if found.is_empty() => Ok(config),
        _ => {
            found.sort_by_key(|f| f.span.start);
            Err(found
                .into_iter()
                .map(|f| FileError {
                    file: path.to_path_buf(),
                    line: line_of(text, f.span.start),
                    key: f.key,
                    reason: f.reason,
                })
                .collect())
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Vec<FileError>> {
        parse(Path::new("test.toml"), text)
    }

    fn errors(text: &str) -> Vec<(usize, String)> {
        load(text)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.key))
            .collect()
    }

    fn one_error(text: &str) -> FileError {
        let e = load(text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap()
    }

    const MINIMAL: &str = r#"
interfaces = ["veth0"]

[[subnet]]
subnet = "192.0.2.0/24"
interface = "veth0"
pools = ["192.0.2.10-192.0.2.200"]
"#;

    const FULL: &str = r#"
authoritative = false
offer-hold = 10
decline-hold = 600
interfaces = ["veth0", "veth1"]
backend = "udp"
workers = 2
busy-poll = true
pin-workers = true
state-dir = "/var/lib/dhcp-server"
durability = "async"
log-level = "info,dhcp_proto::engine=debug"

[[subnet]]
subnet = "192.0.2.0/24"
interface = "veth1"
pools = ["192.0.2.10-192.0.2.19", "192.0.2.30-192.0.2.39"]
server-id = "192.0.2.1"
lease-time = 600
min-lease-time = 60
max-lease-time = 7200
renew-time = 30
rebind-time = 50
routers = ["192.0.2.1"]
dns-servers = ["192.0.2.53", "192.0.2.54"]
domain-name = "lab.example"
domain-search = ["lab.example"]
ntp-servers = ["192.0.2.123"]
broadcast-address = "192.0.2.255"
classless-routes = [{ destination = "198.51.100.0/24", router = "192.0.2.1" }]

[[subnet.option]]
code = 150
hex = "c0000201"

[[subnet.reservation]]
hw-address = "02:00:00:00:00:01"
ip-address = "192.0.2.5"
host-name = "printer"
dns-servers = ["192.0.2.99"]
option = [{ code = 150, hex = "c0:00:02:02" }]

[[subnet.reservation]]
client-id = "01-02-00-00-00-00-02"

[[subnet]]
subnet = "198.51.100.0/24"
pools = ["198.51.100.10-198.51.100.20"]
"#;

    #[test]
    fn a_full_file_becomes_the_model() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let range = |s: &str| s.parse::<AddrRange>().unwrap();
        let a = |d: u8| Ipv4Addr::new(192, 0, 2, d);
        let mut options = OptionSet::default();
        options.set_addresses(code::ROUTER, &[a(1)]);
        options.set_addresses(code::DNS_SERVERS, &[a(53), a(54)]);
        options.set_text(code::DOMAIN_NAME, "lab.example");
        options.set_domain_search(&["lab.example".into()]).unwrap();
        options.set_addresses(code::NTP_SERVERS, &[a(123)]);
        options.set_addresses(code::BROADCAST_ADDRESS, &[a(255)]);
        options.set_classless_routes(&[ClasslessRoute {
            destination: net("198.51.100.0/24"),
            router: a(1),
        }]);
        options.set_raw(150, vec![192, 0, 2, 1]);
        let mut printer = OptionSet::default();
        printer.set_addresses(code::DNS_SERVERS, &[a(99)]);
        printer.set_raw(150, vec![192, 0, 2, 2]);
        let expected = Config {
            policy: Policy {
                authoritative: false,
                offer_hold: 10,
                decline_hold: 600,
                interfaces: vec!["veth0".into(), "veth1".into()],
                failover: None,
                subnets: vec![
                    Subnet {
                        net: net("192.0.2.0/24"),
                        interface: Some(1),
                        pools: vec![
                            range("192.0.2.10-192.0.2.19"),
                            range("192.0.2.30-192.0.2.39"),
                        ],
                        server_id: Some(a(1)),
                        lease: LeaseTimes {
                            default: 600,
                            min: 60,
                            max: 7200,
                            renew: Some(30),
                            rebind: Some(50),
                        },
                        options,
                        reservations: vec![
                            Reservation {
                                hw_address: Some([2, 0, 0, 0, 0, 1]),
                                client_id: None,
                                address: Some(a(5)),
                                host_name: Some("printer".into()),
                                options: printer,
                            },
                            Reservation {
                                client_id: Some(vec![1, 2, 0, 0, 0, 0, 2]),
                                ..Default::default()
                            },
                        ],
                    },
                    Subnet {
                        net: net("198.51.100.0/24"),
                        interface: None,
                        pools: vec![range("198.51.100.10-198.51.100.20")],
                        server_id: None,
                        lease: LeaseTimes::default(),
                        options: OptionSet::default(),
                        reservations: vec![],
                    },
                ],
            },
            backend: Backend::Udp,
            workers: 2,
            busy_poll: true,
            pin_workers: true,
            state_dir: Some("/var/lib/dhcp-server".into()),
            durability: crate::journal::Durability::Async,
            journal_segment_bytes: 64 << 20,
            control_socket: None,
            control_uids: Vec::new(),
            control_gids: Vec::new(),
            metrics_listen: None,
            log_level: Some("info,dhcp_proto::engine=debug".into()),
        };
        assert_eq!(load(FULL).unwrap(), expected);
    }

    #[test]
    fn a_lease_time_alone_moves_the_bounds() {
        let c = load(&format!("{MINIMAL}lease-time = 200000\n")).unwrap();
        assert_eq!(c.policy.subnets[0].lease.max, 200000);
        let c = load(&format!("{MINIMAL}lease-time = 30\n")).unwrap();
        assert_eq!(c.policy.subnets[0].lease.min, 30);
    }

    #[test]
    fn syntax_error_names_its_line_and_key() {
        let e = one_error("interfaces = [\"veth0\"]\n\n[[subnet]\nsubnet = \"192.0.2.0/24\"\n");
        assert_eq!((e.line, e.key.as_str()), (3, "subnet"), "{e}");
        assert!(e.reason.starts_with("TOML syntax:"), "{e}");
        let e = one_error(&format!("{MINIMAL}pools = []\n"));
        assert_eq!((e.line, e.key.as_str()), (8, "pools"), "{e}");
        assert!(e.reason.contains("duplicate key"), "{e}");
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let e = one_error(&MINIMAL.replace("pools =", "lease-tme = 5\npools ="));
        assert_eq!((e.line, e.key.as_str()), (7, "subnet[0].lease-tme"));
        assert_eq!(e.reason, "unknown key; did you mean 'lease-time'?");
        assert_eq!(
            e.to_string(),
            "test.toml:7: key 'subnet[0].lease-tme': unknown key; did you mean 'lease-time'?"
        );
        let e = one_error(&format!("colour = \"blue\"\n{MINIMAL}"));
        assert_eq!((e.line, e.key.as_str()), (1, "colour"));
        assert!(e.reason.contains("expected one of authoritative,"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_at_every_depth() {
        let text = MINIMAL.to_owned()
            + r#"classless-routes = [{ destination = "198.51.100.0/24", gateway = "192.0.2.1" }]

[[subnet.reservation]]
hw-address = "02:00:00:00:00:01"
ip = "192.0.2.5"

[[subnet.reservation.option]]
code = 150
hex = "00"
length = 1
"#;
        assert_eq!(
            errors(&text),
            [
                (8, "subnet[0].classless-routes[0].router".into()),
                (8, "subnet[0].classless-routes[0].gateway".into()),
                (12, "subnet[0].reservation[0].ip".into()),
                (17, "subnet[0].reservation[0].option[0].length".into()),
            ]
        );
    }

    #[test]
    fn pool_outside_its_subnet_points_at_the_pool() {
        let text = MINIMAL.replace(
            "pools = [\"192.0.2.10-192.0.2.200\"]",
            "pools = [\n  \"192.0.2.10-192.0.2.20\",\n  \"198.51.100.1-198.51.100.9\",\n]",
        );
        let e = one_error(&text);
        assert_eq!((e.line, e.key.as_str()), (9, "subnet[0].pools[1]"), "{e}");
        assert_eq!(
            e.reason,
            "range 198.51.100.1-198.51.100.9 is not inside 192.0.2.0/24"
        );
    }

    #[test]
    fn validate_findings_fall_back_to_the_enclosing_table() {
        // Lease times left at their defaults have no line of their own.
        let e = one_error(&format!("{MINIMAL}min-lease-time = 7200\n"));
        assert_eq!((e.line, e.key.as_str()), (4, "subnet[0].lease-time"));
        let e = one_error(&format!(
            "{MINIMAL}lease-time = 100\nmin-lease-time = 200\n"
        ));
        assert_eq!((e.line, e.key.as_str()), (8, "subnet[0].lease-time"));
        let e = one_error("interfaces = [\"veth0\"]\n");
        assert_eq!((e.line, e.key.as_str()), (1, "subnet"));
    }

    #[test]
    fn reservation_findings_point_into_the_reservation() {
        let text = MINIMAL.to_owned()
            + r#"
[[subnet.reservation]]
hw-address = "02:00:00:00:00:01"

[[subnet.reservation]]
hw-address = "02:00:00:00:00:01"
ip-address = "198.51.100.5"

[[subnet.reservation]]
host-name = "nobody"
"#;
        assert_eq!(
            errors(&text),
            [
                (13, "subnet[0].reservation[1].hw-address".into()),
                (14, "subnet[0].reservation[1].ip-address".into()),
                (16, "subnet[0].reservation[2].hw-address".into()),
            ]
        );
    }

    #[test]
    fn interface_must_be_listed() {
        let e = one_error(&MINIMAL.replace("interface = \"veth0\"", "interface = \"eth9\""));
        assert_eq!((e.line, e.key.as_str()), (6, "subnet[0].interface"));
        assert_eq!(e.reason, "'eth9' is not listed in interfaces [veth0]");
        let e = one_error(&MINIMAL.replace("[\"veth0\"]", "[\"veth0\", \"veth0\"]"));
        assert_eq!((e.line, e.key.as_str()), (2, "interfaces[1]"));
    }

    #[test]
    fn bad_hw_address_is_refused() {
        for bad in [
            "02:00:zz:00:00:01",
            "02:00:00:00:01",
            "2:0:0:0:0:1",
            "",
            "+2:00:00:00:00:01",
        ] {
            let e = one_error(&format!(
                "{MINIMAL}\n[[subnet.reservation]]\nhw-address = \"{bad}\"\n"
            ));
            assert_eq!(
                (e.line, e.key.as_str()),
                (10, "subnet[0].reservation[0].hw-address"),
                "{bad}"
            );
            assert!(e.reason.contains("is not a MAC address"), "{e}");
        }
        for good in ["02:00:00:00:00:01", "02-00-00-00-00-01", "020000000001"] {
            let c = load(&format!(
                "{MINIMAL}\n[[subnet.reservation]]\nhw-address = \"{good}\"\n"
            ))
            .unwrap();
            assert_eq!(
                c.policy.subnets[0].reservations[0].hw_address,
                Some([2, 0, 0, 0, 0, 1])
            );
        }
    }

    #[test]
    fn multiple_errors_are_reported_together_in_file_order() {
        let text = r#"
offer-hold = "30s"
interfaces = ["veth0"]
backend = "dpdk"

[[subnet]]
subnet = "192.0.2.0/24"
interface = "veth0"
pools = ["192.0.2.10-192.0.2.200"]
routers = ["192.0.2.300"]

[[subnet.reservation]]
hw-address = "02:00:zz"
client-id = "01"

[[subnet]]
subnet = "198.51.100.0/24"
pools = ["203.0.113.10-203.0.113.20"]
dns-server = ["198.51.100.53"]
"#;
        let e = load(text).unwrap_err();
        let got: Vec<_> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "offer-hold"),
                (4, "backend"),
                (10, "subnet[0].routers[0]"),
                (13, "subnet[0].reservation[0].hw-address"),
                (14, "subnet[0].reservation[0].client-id"),
                (18, "subnet[1].pools[0]"),
                (19, "subnet[1].dns-server"),
            ],
            "{e:#?}"
        );
        assert_eq!(
            e[0].reason,
            "expected a number of seconds from 0 to 4294967295, found a string"
        );
        assert_eq!(e[2].reason, "'192.0.2.300' is not an IPv4 address");
        assert_eq!(e[6].reason, "unknown key; did you mean 'dns-servers'?");
    }

    #[test]
    fn findings_that_echo_an_error_are_not_repeated() {
        // The bad pool is not in the model, so validate would add "no pool".
        let e = one_error(&MINIMAL.replace("192.0.2.10-192.0.2.200", "192.0.2.10"));
        assert_eq!(e.key, "subnet[0].pools[0]");
        assert_eq!(e.reason, "'192.0.2.10' is not START-END");
    }

    #[test]
    fn a_single_subnet_table_is_refused_with_a_hint() {
        let e = one_error(&MINIMAL.replace("[[subnet]]", "[subnet]"));
        assert_eq!((e.line, e.key.as_str()), (4, "subnet"));
        assert!(e.reason.contains("write [[subnet]]"), "{e}");
    }

    #[test]
    fn raw_options_the_server_or_a_key_owns_are_refused() {
        let raw = |code: u8| {
            one_error(&format!(
                "{MINIMAL}routers = [\"192.0.2.1\"]\n\n[[subnet.option]]\ncode = {code}\nhex = \"00000e10\"\n"
            ))
        };
        let e = raw(51);
        assert_eq!((e.line, e.key.as_str()), (11, "subnet[0].option[0].code"));
        assert!(e.reason.contains("managed by the server"), "{e}");
        assert!(raw(3).reason.contains("write routers = ..."));
        assert!(raw(12).reason.contains("host-name"));
        assert!(raw(255).reason.contains("out of range"));
        let e = one_error(&format!(
            "{MINIMAL}option = [{{ code = 150, hex = \"01\" }}, {{ code = 150, hex = \"02\" }}]\n"
        ));
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("subnet[0].option[1].code", "option 150 is set twice")
        );
    }

    #[test]
    fn values_are_checked_where_they_are_written() {
        let bad = |line: &str| one_error(&format!("{MINIMAL}{line}\n"));
        let e = bad(
            "classless-routes = [{ destination = \"198.51.100.1/24\", router = \"192.0.2.1\" }]",
        );
        assert_eq!(e.key, "subnet[0].classless-routes[0].destination");
        assert!(e.reason.contains("write 198.51.100.0/24"), "{e}");
        assert_eq!(
            bad("routers = []").reason,
            "must not be empty; leave the key out instead"
        );
        assert!(bad("domain-search = [\"a..b\"]")
            .reason
            .contains("empty label"));
        assert!(bad("domain-name = \"\"").reason.contains("printable"));
        assert!(bad("lease-time = -1").reason.contains("-1 is out of range"));
        assert!(bad("lease-time = 3600.5").reason.contains("found a float"));
        assert!(bad("server-id = \"255.255.255.255\"")
            .reason
            .contains("not a unicast"));
        let e = one_error(&MINIMAL.replace(
            "interfaces = [\"veth0\"]",
            "interfaces = [\"veth0\"]\nstate-dir = \"state\"",
        ));
        assert!(e.reason.contains("not an absolute path"), "{e}");
    }

    /// Appended to MINIMAL, so `[failover]` is line 9 and `name` line 10.
    const FAILOVER: &str = r#"
[failover]
name = "pair"
role = "primary"
address = "198.51.100.2"
port = 8647
peer-address = "198.51.100.3"
peer-port = 8648
mclt = 1800
split = 255
max-response-delay = 60
max-unacked-updates = 20
load-balance-max-seconds = 5
auto-partner-down = 3600
max-lease-misbalance = 20
max-lease-ownership = 5
min-balance = 30
max-balance = 600
"#;

    fn failover(text: &str) -> Result<Config, Vec<FileError>> {
        load(&format!("{MINIMAL}{text}"))
    }

    fn failover_error(text: &str) -> FileError {
        one_error(&format!("{MINIMAL}{text}"))
    }

    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, last)
    }

    /// 32 octets giving the primary the first `n` buckets, as dhcpd writes an hba.
    fn hba_text(n: usize) -> String {
        (0..32)
            .map(|i| match n.saturating_sub(i * 8).min(8) {
                8 => "ff".to_owned(),
                k => format!("{:02x}", (1u16 << k) - 1),
            })
            .collect::<Vec<_>>()
            .join(":")
    }

    #[test]
    fn a_full_failover_table_becomes_the_model() {
        let c = failover(FAILOVER).unwrap();
        let expected = Failover {
            name: "pair".into(),
            role: Role::Primary,
            address: a(2),
            port: 8647,
            peer_address: a(3),
            peer_port: 8648,
            mclt: 1800,
            split: 255,
            hba: None,
            max_response_delay: 60,
            max_unacked_updates: 20,
            load_balance_max_seconds: 5,
            auto_partner_down: 3600,
            max_lease_misbalance: 20,
            max_lease_ownership: 5,
            min_balance: 30,
            max_balance: 600,
        };
        assert_eq!(c.policy.failover, Some(expected.clone()));
        let p = expected.params();
        assert_eq!(
            (p.mclt, p.hba, p.max_unacked, p.max_response_delay),
            (1800, Hba::split(255), 20, 60)
        );
        assert_eq!(p.auto_partner_down, 3600);
        // An inline table works too.
        let inline = MINIMAL.replace(
            "interfaces = [\"veth0\"]\n",
            "interfaces = [\"veth0\"]\nfailover = { name = \"pair\", role = \"secondary\", \
             address = \"198.51.100.3\", peer-address = \"198.51.100.2\" }\n",
        );
        let f = load(&inline).unwrap().policy.failover.unwrap();
        assert_eq!(f, Failover::new("pair".into(), Role::Secondary, a(3), a(2)));
    }

    #[test]
    fn failover_defaults_where_keys_are_absent() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.policy.failover, None);
        let text = "\n[failover]\nname = \"pair\"\nrole = \"primary\"\n\
                    address = \"198.51.100.2\"\npeer-address = \"198.51.100.3\"\n";
        let f = failover(text).unwrap().policy.failover.unwrap();
        assert_eq!(
            f,
            Failover {
                name: "pair".into(),
                role: Role::Primary,
                address: a(2),
                port: 647,
                peer_address: a(3),
                peer_port: 647,
                mclt: 3600,
                split: 128,
                hba: None,
                max_response_delay: 30,
                max_unacked_updates: 100,
                load_balance_max_seconds: 3,
                auto_partner_down: 0,
                max_lease_misbalance: 15,
                max_lease_ownership: 10,
                min_balance: 60,
                max_balance: 3600,
            }
        );
        assert_eq!(f.params().hba, Hba::split(128));
        let e = f.endpoints();
        assert_eq!(
            (e.local.to_string(), e.peer.to_string()),
            ("198.51.100.2:647".into(), "198.51.100.3:647".into())
        );
    }

    #[test]
    fn failover_value_errors_name_the_line_and_key() {
        let bad = |from: &str, to: &str| {
            let text = FAILOVER.replace(from, to);
            assert_ne!(text, FAILOVER, "{from}");
            failover_error(&text)
        };
        let cases = [
            (
                "name = \"pair\"",
                "name = \"\"",
                10,
                "name",
                "not 1 to 255 printable",
            ),
            (
                "role = \"primary\"",
                "role = \"backup\"",
                11,
                "role",
                "unknown role 'backup'",
            ),
            (
                "address = \"198.51.100.2\"",
                "address = \"198.51.100.256\"",
                12,
                "address",
                "not an IPv4 address",
            ),
            (
                "address = \"198.51.100.2\"",
                "address = \"255.255.255.255\"",
                12,
                "address",
                "not a unicast address",
            ),
            (
                "port = 8647",
                "port = 0",
                13,
                "port",
                "0 is out of range; expected a TCP port",
            ),
            (
                "peer-address = \"198.51.100.3\"",
                "peer-address = \"198.51.100.2\"",
                14,
                "peer-address",
                "198.51.100.2 is also our own address",
            ),
            (
                "peer-port = 8648",
                "peer-port = 65536",
                15,
                "peer-port",
                "out of range",
            ),
            (
                "mclt = 1800",
                "mclt = 0",
                16,
                "mclt",
                "at least 1 second (3600 is dhcpd's",
            ),
            (
                "mclt = 1800",
                "mclt = \"1h\"",
                16,
                "mclt",
                "expected a number of seconds",
            ),
            (
                "split = 255",
                "split = 257",
                17,
                "split",
                "257 is out of range; expected a number of hash buckets from 0 to 256",
            ),
            (
                "max-response-delay = 60",
                "max-response-delay = 2",
                18,
                "max-response-delay",
                "2 is below 3 seconds",
            ),
            (
                "max-unacked-updates = 20",
                "max-unacked-updates = 0",
                19,
                "max-unacked-updates",
                "at least 1",
            ),
            (
                "load-balance-max-seconds = 5",
                "load-balance-max-seconds = -5",
                20,
                "load-balance-max-seconds",
                "out of range",
            ),
            (
                "auto-partner-down = 3600",
                "auto-partner-down = true",
                21,
                "auto-partner-down",
                "found a boolean",
            ),
            (
                "max-lease-misbalance = 20",
                "max-lease-misbalance = 101",
                22,
                "max-lease-misbalance",
                "expected a percentage from 0 to 100",
            ),
            (
                "max-lease-ownership = 5",
                "max-lease-ownership = 5.5",
                23,
                "max-lease-ownership",
                "found a float",
            ),
            (
                "min-balance = 30",
                "min-balance = 0",
                24,
                "min-balance",
                "at least 1 second",
            ),
            (
                "max-balance = 600",
                "max-balance = 10",
                25,
                "max-balance",
                "below min-balance (30)",
            ),
            (
                "max-lease-ownership = 5",
                "max-lease-ownershp = 5",
                23,
                "max-lease-ownershp",
                "unknown key; did you mean 'max-lease-ownership'?",
            ),
        ];
        for (from, to, line, key, reason) in cases {
            let e = bad(from, to);
            assert_eq!(
                (e.line, e.key.as_str()),
                (line, format!("failover.{key}").as_str()),
                "{to}: {e}"
            );
            assert!(e.reason.contains(reason), "{to}: {e}");
        }
        let long = format!("name = \"{}\"", "n".repeat(256));
        assert_eq!(bad("name = \"pair\"", &long).key, "failover.name");
        // A key without a default is missing at the table's header.
        let e = bad("peer-address = \"198.51.100.3\"\n", "");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "failover.peer-address"),
            "{e}"
        );
        assert!(e.reason.starts_with("missing; write peer-address"), "{e}");
        let e = failover_error("\n[[failover]]\nname = \"pair\"\n");
        assert_eq!((e.line, e.key.as_str()), (9, "failover"), "{e}");
        assert!(
            e.reason.contains("write [failover], not [[failover]]"),
            "{e}"
        );
        let e = one_error(&format!("failover = \"pair\"\n{MINIMAL}"));
        assert_eq!((e.line, e.key.as_str()), (1, "failover"), "{e}");
        assert_eq!(e.reason, "expected a [failover] table, found a string");
    }

    #[test]
    fn failover_addresses_stay_out_of_the_pools() {
        let e = failover_error(&FAILOVER.replace("198.51.100.2", "192.0.2.50"));
        assert_eq!((e.line, e.key.as_str()), (12, "failover.address"), "{e}");
        assert_eq!(
            e.reason,
            "192.0.2.50 is inside subnet[0].pools[0] 192.0.2.10-192.0.2.200: the pair could \
             lease this server's own address to a client"
        );
        let e = failover_error(&FAILOVER.replace("198.51.100.3", "192.0.2.10"));
        assert_eq!(
            (e.line, e.key.as_str()),
            (14, "failover.peer-address"),
            "{e}"
        );
        assert!(e.reason.contains("the partner's own address"), "{e}");
        // Outside every pool, inside a subnet: fine.
        failover(&FAILOVER.replace("198.51.100.2", "192.0.2.2")).unwrap();
    }

    #[test]
    fn only_the_primary_sets_mclt_and_load_balancing() {
        let secondary = FAILOVER.replace("\"primary\"", "\"secondary\"");
        let got = failover(&secondary).unwrap_err();
        let got: Vec<_> = got.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, [(16, "failover.mclt"), (17, "failover.split")]);
        let e = failover_error(&secondary.replace("split = 255\n", ""));
        assert_eq!(
            e.reason,
            "only the primary sets the mclt; the secondary takes it from the primary when \
             they connect"
        );
        let hba = format!("hba = \"{}\"\n", hba_text(128));
        let e = failover_error(
            &secondary
                .replace("mclt = 1800\n", "")
                .replace("split = 255\n", &hba),
        );
        assert_eq!((e.line, e.key.as_str()), (16, "failover.hba"), "{e}");
        assert!(e.reason.contains("the load balancing (split, hba)"), "{e}");
        // Without them the secondary loads; its mclt and split stay at the defaults,
        // which the primary's replace when they connect.
        let f = failover(
            &secondary
                .replace("mclt = 1800\n", "")
                .replace("split = 255\n", ""),
        )
        .unwrap()
        .policy
        .failover
        .unwrap();
        assert_eq!(
            (f.role, f.mclt, f.split, f.hba),
            (Role::Secondary, 3600, 128, None)
        );
        // The primary takes split or hba, not both.
        let e = failover_error(&FAILOVER.replace("split = 255\n", &format!("split = 255\n{hba}")));
        assert_eq!((e.line, e.key.as_str()), (18, "failover.hba"), "{e}");
        assert_eq!(
            e.reason,
            "split and hba both set the load balancing; keep one"
        );
        let f = failover(&FAILOVER.replace("split = 255\n", &hba))
            .unwrap()
            .policy
            .failover
            .unwrap();
        assert_eq!(f.hba, Some(Hba::split(128)));
        assert_eq!(f.params().hba, Hba::split(128));
        assert_eq!(hba_text(12)[..9], *"ff:0f:00:");
        let f =
            failover(&FAILOVER.replace("split = 255\n", &format!("hba = \"{}\"\n", hba_text(12))))
                .unwrap()
                .policy
                .failover
                .unwrap();
        assert_eq!(f.params().hba, Hba::split(12));
        for short in ["ff:ff", &hba_text(128)[3..], "zz"] {
            let e = failover_error(&FAILOVER.replace("split = 255", &format!("hba = \"{short}\"")));
            assert_eq!((e.line, e.key.as_str()), (17, "failover.hba"), "{e}");
            assert!(e.reason.contains("is not 32 hex octets"), "{e}");
        }
    }

    #[test]
    fn failover_errors_are_reported_together() {
        let text = FAILOVER
            .replace("role = \"primary\"", "role = \"secondary\"")
            .replace("port = 8647", "port = 70000")
            .replace("max-response-delay = 60", "max-response-delay = 1")
            .replace("peer-port", "peer-prot");
        let got = failover(&text).unwrap_err();
        let got: Vec<_> = got.iter().map(|e| (e.line, e.key.as_str())).collect();
        // max-response-delay is a finding of the second pass: it is reported once the
        // partnership reads, here alongside the first pass's errors.
        assert_eq!(
            got,
            [
                (13, "failover.port"),
                (15, "failover.peer-prot"),
                (16, "failover.mclt"),
                (17, "failover.split"),
                (18, "failover.max-response-delay"),
            ]
        );
    }

    #[test]
    fn no_failover_input_panics() {
        let text = format!("{MINIMAL}{FAILOVER}");
        for (i, _) in text.char_indices() {
            let _ = load(&text[..i]);
        }
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of a valid file, and the file with each line dropped, is a
        // plausible half-edited configuration.
        for (i, _) in FULL.char_indices() {
            let _ = load(&FULL[..i]);
        }
        let lines: Vec<&str> = FULL.lines().collect();
        for skip in 0..lines.len() {
            let text: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, l)| *l)
                .collect();
            let _ = load(&text.join("\n"));
        }
        let _ = load("\u{feff}[[subnet]]\n[[subnet.reservation]]\noption = [1]\n");
        let _ = load("subnet = [{ subnet = \"192.0.2.0/33\" }]\nlease-time = 0x7fffffffffffffff\n");
    }

    #[test]
    fn a_log_level_must_be_a_filter() {
        let e = one_error(&format!("log-level = \"dhcp_server=loud\"{MINIMAL}"));
        assert_eq!((e.line, e.key.as_str()), (1, "log-level"));
        assert!(e.reason.contains("is not a log filter"), "{}", e.reason);
        let e = one_error(&format!("log-level = \"\"{MINIMAL}"));
        assert_eq!(e.key, "log-level");
    }

    #[test]
    fn a_later_finding_is_put_at_its_key() {
        let e = error_at(
            Path::new("site.toml"),
            FULL,
            Invalid {
                path: "subnet[0].reservation[1].client-id".into(),
                reason: "clashes".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "site.toml:44: key 'subnet[0].reservation[1].client-id': clashes"
        );
        assert!(FULL.lines().nth(43).unwrap().starts_with("client-id"));
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let e = load_file(Path::new("/nonexistent/dhcp-server.toml")).unwrap_err();
        assert_eq!(e[0].line, 0);
        assert!(e[0].reason.contains("cannot read"));
    }

    #[test]
    fn the_shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load_file(&path).unwrap_or_else(|e| panic!("{}: {e:#?}", path.display()));
                names.extend(path.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
        }
        for expected in ["minimal.toml", "full.toml"] {
            assert!(
                names.iter().any(|n| n == expected),
                "examples/{expected} is missing"
            );
        }
    }
}
