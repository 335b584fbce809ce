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
    AddrRange, Backend, Class, ClassId, ClasslessRoute, Config, Failover, Invalid, Ipv4Net,
    LeaseTimes, LinkId, OptionSet, Policy, Pool, Reservation, Subnet,
};
use dhcp_proto::failover::{Hba, Role};
use dhcp_proto::policy::class::named as class_named;
use dhcp_proto::wire::code;

mod class;
mod failover;
mod flood;
mod history;
mod leasequery;
mod subnet;

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
    "metrics-allow",
    "user",
    "group",
    "log-level",
    "failover",
    "class",
    "flex-id",
    "flood",
    "leasequery",
    "history",
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

const RESERVATION_KEYS: &[&str] = &[
    "hw-address",
    "client-id",
    "circuit-id",
    "remote-id",
    "subscriber-id",
    "flex-id",
    "ip-address",
    "host-name",
];

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
        let metrics_allow = match root.get("metrics-allow") {
            Some(v) => self
                .list("metrics-allow", v, true, |w, key, e| {
                    w.parsed(key, e, |s| s.parse::<super::ClientNet>())
                })
                .unwrap_or_default(),
            None => defaults.metrics_allow.clone(),
        };
        let user = root
            .get("user")
            .and_then(|v| self.string("user", v))
            .map(str::to_owned);
        let group = root.get_key_value("group").and_then(|(k, v)| {
            let g = self.string("group", v)?;
            if user.is_none() {
                self.error(k.span(), "group", "set with user only; add user = \"...\"");
            }
            Some(g.to_owned())
        });
        let log_level = root.get("log-level").and_then(|v| {
            self.parsed("log-level", v, |s| {
                super::log_filter(s).map(|_| s.to_owned())
            })
        });
        let failover = root
            .get_key_value("failover")
            .and_then(|(k, v)| self.failover(k.span(), v));
        let flood = root.get("flood").map(|v| self.flood(v)).unwrap_or_default();
        let (leasequery, bulk_leasequery) = root
            .get("leasequery")
            .map(|v| self.leasequery(v))
            .unwrap_or_default();
        let history = root.get_key_value("history").and_then(|(k, v)| {
            let h = self.history(v)?;
            if state_dir.is_none() {
                self.error(
                    k.span(),
                    "history",
                    "needs state-dir: the lease journal is where the history comes from",
                );
            }
            Some(h)
        });
        let interfaces = self.interfaces(root);
        let classes = self.classes(root);
        let flex_id = root.get("flex-id").and_then(|v| {
            let src = self.string("flex-id", v)?;
            dhcp_proto::expr::Value::parse(src)
                .map_err(|e| self.error(v.span(), "flex-id", e.to_string()))
                .ok()
        });
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
                    let s = self.subnet(&format!("subnet[{i}]"), span, t, &interfaces, &classes);
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
                classes,
                flex_id,
                leasequery,
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
            metrics_allow,
            user,
            group,
            log_level,
            flood,
            bulk_leasequery,
            history,
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
    load_file_text(path).map(|(c, _)| c)
}

/// Parses configuration text; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<FileError>> {
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
mod tests;
