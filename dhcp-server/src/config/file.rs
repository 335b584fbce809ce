//! The TOML configuration file. Every value is read with its byte span, so any error, from
//! the TOML parser or from `Config::validate`, is reported with file, line, key and reason.
//! Unknown keys are errors: an operator's typo must not be silently ignored.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{
    AddrRange, Backend, ClasslessRoute, Config, Invalid, Ipv4Net, LeaseTimes, OptionSet,
    Reservation, Subnet,
};
use crate::wire::code;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    authoritative: Option<bool>,
    offer_hold: Option<u32>,
    decline_hold: Option<u32>,
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    backend: Option<Backend>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    subnet: Vec<Spanned<RawSubnet>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSubnet {
    subnet: Spanned<String>,
    interface: Option<Spanned<String>>,
    #[serde(default)]
    pools: Vec<Spanned<String>>,
    server_id: Option<Spanned<String>>,
    lease_time: Option<Spanned<u32>>,
    min_lease_time: Option<Spanned<u32>>,
    max_lease_time: Option<Spanned<u32>>,
    renew_time: Option<Spanned<u32>>,
    rebind_time: Option<Spanned<u32>>,
    options: Option<Spanned<RawOptions>>,
    #[serde(default)]
    reservation: Vec<Spanned<RawReservation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawReservation {
    hw_address: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    ip_address: Option<Spanned<String>>,
    host_name: Option<Spanned<String>>,
    options: Option<Spanned<RawOptions>>,
}

/// Options by name, the same for a subnet and a reservation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOptions {
    routers: Option<Spanned<Vec<String>>>,
    dns_servers: Option<Spanned<Vec<String>>>,
    domain_name: Option<Spanned<String>>,
    domain_search: Option<Spanned<Vec<String>>>,
    ntp_servers: Option<Spanned<Vec<String>>>,
    broadcast_address: Option<Spanned<String>>,
    classless_routes: Option<Spanned<Vec<RawRoute>>>,
    #[serde(default)]
    raw: Vec<Spanned<RawOption>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    destination: String,
    router: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    code: u8,
    hex: String,
}

/// Option codes the server writes itself; configuring them would contradict the lease.
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

/// Turns raw values into the model, remembering each key's span so errors found later
/// by `Config::validate` still point at a line.
struct Reader {
    spans: Vec<(String, Range<usize>)>,
    errors: Vec<(String, Range<usize>, String)>,
}

impl Reader {
    fn at(&mut self, key: String, span: Range<usize>) {
        self.spans.push((key, span));
    }

    fn error(&mut self, key: &str, span: Range<usize>, reason: impl Into<String>) {
        self.errors.push((key.to_owned(), span, reason.into()));
    }

    /// Parses a spanned string, recording the key; `None` (and an error) when it fails.
    fn parse<T: std::str::FromStr>(&mut self, key: String, v: &Spanned<String>) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        self.at(key.clone(), v.span());
        v.get_ref()
            .trim()
            .parse()
            .map_err(|e| self.error(&key, v.span(), format!("'{}': {e}", v.get_ref())))
            .ok()
    }

    fn addresses(&mut self, key: &str, v: &Spanned<Vec<String>>) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        for s in v.get_ref() {
            match s.parse() {
                Ok(ip) => out.push(ip),
                Err(_) => self.error(key, v.span(), format!("'{s}' is not an IPv4 address")),
            }
        }
        out
    }

    fn options(&mut self, at: &str, raw: Option<&Spanned<RawOptions>>) -> OptionSet {
        let mut set = OptionSet::default();
        let Some(raw) = raw else { return set };
        let at = format!("{at}.options");
        self.at(at.clone(), raw.span());
        let o = raw.get_ref();
        let lists = [
            ("routers", code::ROUTER, &o.routers),
            ("dns-servers", code::DNS_SERVERS, &o.dns_servers),
            ("ntp-servers", code::NTP_SERVERS, &o.ntp_servers),
        ];
        for (name, c, v) in lists {
            if let Some(v) = v {
                let ips = self.addresses(&format!("{at}.{name}"), v);
                set.set_addresses(c, &ips);
            }
        }
        if let Some(v) = &o.domain_name {
            set.set_text(code::DOMAIN_NAME, v.get_ref());
        }
        if let Some(v) = &o.domain_search {
            if let Err(e) = set.set_domain_search(v.get_ref()) {
                self.error(&format!("{at}.domain-search"), v.span(), e);
            }
        }
        if let Some(v) = &o.broadcast_address {
            if let Some(ip) = self.parse::<Ipv4Addr>(format!("{at}.broadcast-address"), v) {
                set.set_addresses(code::BROADCAST_ADDRESS, &[ip]);
            }
        }
        if let Some(v) = &o.classless_routes {
            let key = format!("{at}.classless-routes");
            let mut routes = Vec::new();
            for r in v.get_ref() {
                match (
                    r.destination.parse::<Ipv4Net>(),
                    r.router.parse::<Ipv4Addr>(),
                ) {
                    (Ok(destination), Ok(router)) => routes.push(ClasslessRoute {
                        destination,
                        router,
                    }),
                    (Err(e), _) => self.error(&key, v.span(), e),
                    (_, Err(_)) => self.error(
                        &key,
                        v.span(),
                        format!("'{}' is not an IPv4 address", r.router),
                    ),
                }
            }
            set.set_classless_routes(&routes);
        }
        for (n, r) in o.raw.iter().enumerate() {
            let key = format!("{at}.raw[{n}]");
            let (c, hex) = (r.get_ref().code, &r.get_ref().hex);
            if MANAGED.contains(&c) {
                self.error(
                    &key,
                    r.span(),
                    format!("option {c} is managed by the server"),
                );
            } else if set.get(c).is_some() {
                self.error(&key, r.span(), format!("option {c} is already set by name"));
            } else {
                match parse_hex(hex) {
                    Some(bytes) => set.set_raw(c, bytes),
                    None => self.error(&key, r.span(), format!("'{hex}' is not hex octets")),
                }
            }
        }
        set
    }

    fn reservation(&mut self, at: &str, raw: &Spanned<RawReservation>) -> Reservation {
        self.at(at.to_owned(), raw.span());
        let r = raw.get_ref();
        let hw_address = r.hw_address.as_ref().and_then(|v| {
            let key = format!("{at}.hw-address");
            self.at(key.clone(), v.span());
            let bytes = parse_hex(v.get_ref()).and_then(|b| <[u8; 6]>::try_from(b).ok());
            if bytes.is_none() {
                self.error(
                    &key,
                    v.span(),
                    format!(
                        "'{}' is not a MAC address like 02:00:00:00:00:01",
                        v.get_ref()
                    ),
                );
            }
            bytes
        });
        let client_id = r.client_id.as_ref().and_then(|v| {
            let key = format!("{at}.client-id");
            self.at(key.clone(), v.span());
            let bytes = parse_hex(v.get_ref()).filter(|b| (2..=255).contains(&b.len()));
            if bytes.is_none() {
                self.error(
                    &key,
                    v.span(),
                    format!(
                        "'{}' is not 2 to 255 hex octets like 01:02:00:00:00:00:01",
                        v.get_ref()
                    ),
                );
            }
            bytes
        });
        Reservation {
            hw_address,
            client_id,
            address: r
                .ip_address
                .as_ref()
                .and_then(|v| self.parse(format!("{at}.ip-address"), v)),
            host_name: r.host_name.as_ref().map(|v| v.get_ref().clone()),
            options: self.options(at, r.options.as_ref()),
        }
    }

    fn subnet(
        &mut self,
        i: usize,
        raw: &Spanned<RawSubnet>,
        interfaces: &[String],
    ) -> Option<Subnet> {
        let at = format!("subnet[{i}]");
        self.at(at.clone(), raw.span());
        let s = raw.get_ref();
        let net: Option<Ipv4Net> = self.parse(format!("{at}.subnet"), &s.subnet);
        let interface = s.interface.as_ref().and_then(|v| {
            let key = format!("{at}.interface");
            self.at(key.clone(), v.span());
            let found = interfaces.iter().position(|n| n == v.get_ref());
            if found.is_none() {
                self.error(
                    &key,
                    v.span(),
                    format!("'{}' is not in the top-level interfaces list", v.get_ref()),
                );
            }
            found.map(|l| l as u16)
        });
        let mut pools = Vec::new();
        for (p, v) in s.pools.iter().enumerate() {
            if let Some(r) = self.parse::<AddrRange>(format!("{at}.pools[{p}]"), v) {
                pools.push(r);
            }
        }
        self.at(
            format!("{at}.pools"),
            s.pools.first().map_or(raw.span(), Spanned::span),
        );
        let mut lease = LeaseTimes::default();
        let times = [
            ("lease-time", &s.lease_time, &mut lease.default as &mut u32),
            ("min-lease-time", &s.min_lease_time, &mut lease.min),
            ("max-lease-time", &s.max_lease_time, &mut lease.max),
        ];
        for (name, v, slot) in times {
            if let Some(v) = v {
                self.at(format!("{at}.{name}"), v.span());
                *slot = *v.get_ref();
            }
        }
        // Defaults follow an explicit lease time, so `lease-time = 7200` alone is valid.
        if s.max_lease_time.is_none() {
            lease.max = lease.max.max(lease.default);
        }
        if s.min_lease_time.is_none() {
            lease.min = lease.min.min(lease.default);
        }
        for (name, v, slot) in [
            ("renew-time", &s.renew_time, &mut lease.renew),
            ("rebind-time", &s.rebind_time, &mut lease.rebind),
        ] {
            if let Some(v) = v {
                self.at(format!("{at}.{name}"), v.span());
                *slot = Some(*v.get_ref());
            }
        }
        let server_id = s
            .server_id
            .as_ref()
            .and_then(|v| self.parse(format!("{at}.server-id"), v));
        let options = self.options(&at, s.options.as_ref());
        let reservations = s
            .reservation
            .iter()
            .enumerate()
            .map(|(k, r)| self.reservation(&format!("{at}.reservation[{k}]"), r))
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

    /// The span recorded for `key`, or for the nearest enclosing key that has one.
    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let mut k = key;
        loop {
            if let Some((_, s)) = self.spans.iter().rev().find(|(p, _)| p == k) {
                return Some(s.clone());
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }
}

/// Octets written as hex, optionally separated by ':' or '-' (`02:00:00:00:00:01`).
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.is_ascii() {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
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
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<FileError>> {
    let error = |span: Option<Range<usize>>, key: String, reason: String| FileError {
        file: path.to_path_buf(),
        line: span.map_or(0, |s| line_of(text, s.start)),
        key,
        reason,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let key = e.span().map(|s| key_at(text, s)).unwrap_or_default();
        vec![error(e.span(), key, e.message().trim().to_owned())]
    })?;
    let mut reader = Reader {
        spans: Vec::new(),
        errors: Vec::new(),
    };
    let interfaces: Vec<String> = raw.interfaces.iter().map(|i| i.get_ref().clone()).collect();
    if let Some(first) = raw.interfaces.first() {
        reader.at("interfaces".into(), first.span());
    }
    let subnets: Vec<Subnet> = raw
        .subnet
        .iter()
        .enumerate()
        .filter_map(|(i, s)| reader.subnet(i, s, &interfaces))
        .collect();
    let defaults = Config::default();
    let config = Config {
        authoritative: raw.authoritative.unwrap_or(defaults.authoritative),
        offer_hold: raw.offer_hold.unwrap_or(defaults.offer_hold),
        decline_hold: raw.decline_hold.unwrap_or(defaults.decline_hold),
        interfaces,
        subnets,
        backend: raw.backend.unwrap_or_default(),
        state_dir: raw.state_dir,
    };
    let mut errors: Vec<FileError> = reader
        .errors
        .iter()
        .map(|(k, s, r)| error(Some(s.clone()), k.clone(), r.clone()))
        .collect();
    // Semantic checks need every subnet; a subnet that did not parse is already reported.
    if errors.is_empty() {
        if let Err(bad) = config.validate() {
            errors.extend(
                bad.into_iter()
                    .map(|Invalid { path, reason }| error(reader.span_of(&path), path, reason)),
            );
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// The key a TOML error points at, when the span covers a bare key.
fn key_at(text: &str, span: Range<usize>) -> String {
    let s = text.get(span).unwrap_or("").trim();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        s.to_owned()
    } else {
        "-".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Vec<FileError>> {
        parse(Path::new("test.toml"), text)
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

    #[test]
    fn a_full_file_becomes_the_model() {
        let c = load(
            r#"
authoritative = false
offer-hold = 10
decline-hold = 600
interfaces = ["veth0"]
state-dir = "/var/lib/dhcp-server"

[[subnet]]
subnet = "192.0.2.0/24"
interface = "veth0"
pools = ["192.0.2.10-192.0.2.19", "192.0.2.30-192.0.2.39"]
server-id = "192.0.2.1"
lease-time = 600
min-lease-time = 60
max-lease-time = 7200
renew-time = 30
rebind-time = 50
options = { routers = ["192.0.2.1"], dns-servers = ["192.0.2.53", "192.0.2.54"], domain-name = "lab.example", domain-search = ["lab.example"], ntp-servers = ["192.0.2.123"], broadcast-address = "192.0.2.255", classless-routes = [{ destination = "198.51.100.0/24", router = "192.0.2.1" }], raw = [{ code = 150, hex = "c0000201" }] }

[[subnet.reservation]]
hw-address = "02:00:00:00:00:01"
ip-address = "192.0.2.5"
host-name = "printer"
options = { dns-servers = ["192.0.2.99"] }

[[subnet.reservation]]
client-id = "01:02:00:00:00:00:02"

[[subnet]]
subnet = "198.51.100.0/24"
pools = ["198.51.100.10-198.51.100.20"]
"#,
        )
        .unwrap();
        assert!(!c.authoritative);
        assert_eq!((c.offer_hold, c.decline_hold), (10, 600));
        assert_eq!(
            c.state_dir.as_deref(),
            Some(Path::new("/var/lib/dhcp-server"))
        );
        let s = &c.subnets[0];
        assert_eq!(s.interface, Some(0));
        assert_eq!(s.pools.len(), 2);
        assert_eq!(s.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            s.lease,
            LeaseTimes {
                default: 600,
                min: 60,
                max: 7200,
                renew: Some(30),
                rebind: Some(50)
            }
        );
        assert_eq!(
            s.options.get(code::DNS_SERVERS),
            Some(&[192, 0, 2, 53, 192, 0, 2, 54][..])
        );
        assert_eq!(s.options.get(code::DOMAIN_NAME), Some(&b"lab.example"[..]));
        assert_eq!(s.options.get(150), Some(&[192, 0, 2, 1][..]));
        assert_eq!(
            s.options.get(code::CLASSLESS_ROUTES),
            Some(&[24, 198, 51, 100, 192, 0, 2, 1][..])
        );
        let r = &s.reservations[0];
        assert_eq!(r.hw_address, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(r.address, Some(Ipv4Addr::new(192, 0, 2, 5)));
        assert_eq!(r.host_name.as_deref(), Some("printer"));
        assert_eq!(r.options.get(code::DNS_SERVERS), Some(&[192, 0, 2, 99][..]));
        assert_eq!(
            s.reservations[1].client_id.as_deref(),
            Some(&[1, 2, 0, 0, 0, 0, 2][..])
        );
        assert_eq!(c.subnets[1].interface, None, "relay-only subnet");
    }

    #[test]
    fn a_lease_time_alone_moves_the_bounds() {
        let c = load(&format!("{MINIMAL}lease-time = 200000\n")).unwrap();
        assert_eq!(c.subnets[0].lease.max, 200000);
        let c = load(&format!("{MINIMAL}lease-time = 30\n")).unwrap();
        assert_eq!(c.subnets[0].lease.min, 30);
    }

    #[test]
    fn syntax_error_names_its_line() {
        let e = one_error("interfaces = [\"veth0\"]\n\n[[subnet]\n");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let e = one_error(&MINIMAL.replace("pools =", "lease-tme = 5\npools ="));
        assert_eq!(e.line, 7);
        assert_eq!(e.key, "lease-tme");
        assert!(e.reason.contains("unknown field"), "{e}");
        assert!(
            e.to_string().starts_with("test.toml:7: key 'lease-tme':"),
            "{e}"
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
        assert!(e.reason.contains("not inside 192.0.2.0/24"));
    }

    #[test]
    fn interface_must_be_listed() {
        let e = one_error(&MINIMAL.replace("interface = \"veth0\"", "interface = \"eth9\""));
        assert_eq!((e.line, e.key.as_str()), (6, "subnet[0].interface"));
        assert!(e.reason.contains("'eth9'"));
    }

    #[test]
    fn bad_values_are_all_reported_together() {
        let text = format!(
            "{MINIMAL}options = {{ routers = [\"192.0.2.300\"] }}\n\n[[subnet.reservation]]\nhw-address = \"02:00:zz\"\nclient-id = \"01\"\n"
        );
        let e = load(&text).unwrap_err();
        let keys: Vec<_> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            [
                ("subnet[0].options.routers", 8),
                ("subnet[0].reservation[0].hw-address", 11),
                ("subnet[0].reservation[0].client-id", 12)
            ],
            "{e:?}"
        );
    }

    #[test]
    fn managed_options_cannot_be_set_raw() {
        let e = one_error(&format!(
            "{MINIMAL}options = {{ raw = [{{ code = 51, hex = \"00000e10\" }}] }}\n"
        ));
        assert_eq!(e.key, "subnet[0].options.raw[0]");
        assert!(e.reason.contains("managed"));
    }

    #[test]
    fn lease_times_out_of_order_point_at_lease_time() {
        let e = one_error(&format!(
            "{MINIMAL}lease-time = 100\nmin-lease-time = 200\n"
        ));
        assert_eq!((e.key.as_str(), e.line), ("subnet[0].lease-time", 8));
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let e = load_file(Path::new("/nonexistent/dhcp-server.toml")).unwrap_err();
        assert!(e[0].reason.contains("cannot read"));
    }

    #[test]
    fn the_shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load_file(&path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "examples/ should hold the minimal and full examples"
        );
    }
}
