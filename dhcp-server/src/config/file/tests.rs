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
    let range = |s: &str| s.parse::<dhcp_proto::policy::AddrRange>().unwrap();
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
            classes: Vec::new(),
            flex_id: None,
            leasequery: Vec::new(),
            subnets: vec![
                Subnet {
                    net: net("192.0.2.0/24"),
                    interface: Some(1),
                    pools: vec![
                        range("192.0.2.10-192.0.2.19").into(),
                        range("192.0.2.30-192.0.2.39").into(),
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
                            subscriber: None,
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
                    pools: vec![range("198.51.100.10-198.51.100.20").into()],
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
        metrics_allow: crate::config::ClientNet::loopback(),
        user: None,
        group: None,
        log_level: Some("info,dhcp_proto::engine=debug".into()),
        flood: crate::config::Flood::default(),
        bulk_leasequery: None,
        history: None,
    };
    assert_eq!(load(FULL).unwrap(), expected);
}

#[test]
fn the_history_table_names_its_sinks() {
    let text = format!(
        "state-dir = \"/var/lib/dhcp-server\"\n{MINIMAL}\n[history]\nserver = \"dhcp-a\"\nsite = \"north\"\njournal-hold = 1073741824\n\
         [history.postgres]\nurl = \"host=/run/postgresql dbname=dhcp\"\nretention-days = 30\n\
         [history.nats]\nservers = [\"nats://198.51.100.10:4222\"]\nreplicas = 3\n\
         [history.text]\ndir = \"/var/log/dhcp-server\"\n"
    );
    let h = load(&text).unwrap().history.unwrap();
    assert_eq!((h.server.as_str(), h.site.as_str()), ("dhcp-a", "north"));
    assert_eq!(h.journal_hold, 1 << 30);
    let pg = h.postgres.unwrap();
    assert_eq!(
        (pg.url.as_str(), pg.retention_days),
        ("host=/run/postgresql dbname=dhcp", 30)
    );
    let nats = h.nats.unwrap();
    assert_eq!((nats.servers.len(), nats.replicas), (1, 3));
    let text_sink = h.text.unwrap();
    assert_eq!(text_sink.dir, Path::new("/var/log/dhcp-server"));
    assert_eq!(text_sink.prefix, "dhcp-leases");
}

#[test]
fn a_bad_history_table_names_line_and_key() {
    let at = |extra: &str| {
        let e = one_error(&format!(
            "state-dir = \"/var/lib/dhcp-server\"\n{MINIMAL}\n[history]\n{extra}"
        ));
        (e.key, e.reason)
    };
    assert_eq!(
        at("site = \"a b\"\n[history.text]\ndir = \"/x\"\n").0,
        "history.site"
    );
    assert_eq!(at("[history.text]\ndir = \"logs\"\n").0, "history.text.dir");
    assert_eq!(
        at("[history.postgres]\nretention-days = 3\n").0,
        "history.postgres.url"
    );
    assert_eq!(
        at("[history.nats]\nservers = [\"http://x\"]\n").0,
        "history.nats.servers[0]"
    );
    let (key, reason) = at("server = \"a\"\n");
    assert_eq!(key, "history");
    assert!(reason.contains("no sink"), "{reason}");
    assert!(at("[history.text]\ndir = \"/x\"\nrotate = 1\n")
        .1
        .contains("unknown key"));
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
    let e =
        bad("classless-routes = [{ destination = \"198.51.100.1/24\", router = \"192.0.2.1\" }]");
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
    let f = failover(&FAILOVER.replace("split = 255\n", &format!("hba = \"{}\"\n", hba_text(12))))
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

fn flood(text: &str) -> Result<crate::config::Flood, Vec<FileError>> {
    load(&format!("{MINIMAL}{text}")).map(|c| c.flood)
}

#[test]
fn a_flood_table_becomes_the_limits() {
    let f = flood(
        "[flood]\nclient-rate = 10\nclient-burst = 20\ncircuit-rate = 100\ncircuit-burst = 400\ntable-size = 131072\n",
    )
    .unwrap();
    assert_eq!(
        f,
        crate::config::Flood {
            client_rate: 10,
            client_burst: 20,
            circuit_rate: 100,
            circuit_burst: 400,
            table_size: 131_072,
        }
    );
    assert!(f.is_on());
}

#[test]
fn flood_limits_are_off_unless_set() {
    let off = flood("").unwrap();
    assert_eq!(off, crate::config::Flood::default());
    assert!(!off.is_on());
    assert_eq!(off.table_size, 65_536);
    assert_eq!(flood("[flood]\n").unwrap(), off);
    // A burst of one second's worth unless told; the other key stays off.
    let f = flood("[flood]\ncircuit-rate = 50\n").unwrap();
    assert_eq!(
        (f.client_rate, f.circuit_rate, f.circuit_burst),
        (0, 50, 50)
    );
    // A rate of 0 turns a limit off and keeps its burst for later.
    let f = flood("[flood]\nclient-rate = 0\nclient-burst = 5\n").unwrap();
    assert!(!f.is_on());
}

#[test]
fn flood_errors_name_the_line_and_key() {
    // MINIMAL is 7 lines, so [flood] is line 8 and its first key line 9.
    let cases = [
        ("client-rate = -1", "flood.client-rate", "out of range"),
        ("client-rate = 2000000", "flood.client-rate", "out of range"),
        (
            "client-rate = \"10/s\"",
            "flood.client-rate",
            "expected requests a second",
        ),
        (
            "client-rate = 1\nclient-burst = 0",
            "flood.client-burst",
            "out of range",
        ),
        (
            "circuit-burst = 20",
            "flood.circuit-burst",
            "without circuit-rate",
        ),
        (
            "table-size = 100",
            "flood.table-size",
            "expected a number of buckets from 1024",
        ),
        ("table-size = 16777216", "flood.table-size", "out of range"),
        (
            "client-rates = 10",
            "flood.client-rates",
            "did you mean 'client-rate'",
        ),
    ];
    for (body, key, reason) in cases {
        let e = one_error(&format!("{MINIMAL}[flood]\n{body}\n"));
        let line = 9 + body.lines().count() - 1;
        assert_eq!((e.line, e.key.as_str()), (line, key), "{body}: {e}");
        assert!(e.reason.contains(reason), "{body}: {}", e.reason);
    }
    let e = one_error(&format!("{MINIMAL}[[flood]]\nclient-rate = 1\n"));
    assert_eq!((e.line, e.key.as_str()), (8, "flood"));
    assert!(e.reason.contains("write [flood]"), "{}", e.reason);
    let e = one_error(&format!("flood = 5\n{MINIMAL}"));
    assert_eq!((e.line, e.key.as_str()), (1, "flood"));
    assert_eq!(
        errors(&format!(
            "{MINIMAL}[flood]\nclient-rate = -1\ncircuit-rate = 5\ncircuit-burst = 0\n"
        )),
        [
            (9, "flood.client-rate".into()),
            (11, "flood.circuit-burst".into())
        ]
    );
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

const CLASSES: &str = r#"
interfaces = ["veth0"]

[[class]]
name = "voip"
test = "option[60].text starts-with 'VOIP'"
lease-time = 600
next-server = "192.0.2.69"
filename = "phone.cfg"
domain-name = "voip.example"

[[class]]
name = "line"
match = "relay4[1]"
lease-limit = 2
members = ["port-1", "port-2"]

[[class.subclass]]
value = "port-3"
dns-servers = ["192.0.2.53"]

[[class.subclass]]
hex = "00:01"

[[subnet]]
subnet = "192.0.2.0/24"
interface = "veth0"
pools = [
  { range = "192.0.2.10-192.0.2.19", allow = ["voip"], routers = ["192.0.2.1"] },
  { range = "192.0.2.20-192.0.2.29", deny = ["voip", "KNOWN"] },
  "192.0.2.30-192.0.2.39",
]
"#;

#[test]
fn classes_and_pool_tables_become_the_model() {
    use dhcp_proto::policy::class::KNOWN;
    use dhcp_proto::policy::Membership;
    let c = load(CLASSES).unwrap();
    let p = &c.policy;
    assert_eq!(p.classes.len(), 2);
    let voip = &p.classes[0];
    assert_eq!(voip.name, "voip");
    assert!(matches!(voip.membership, Membership::Test(_)));
    assert_eq!(voip.settings.lease.unwrap().default, 600);
    assert_eq!(
        voip.settings.next_server,
        Some("192.0.2.69".parse().unwrap())
    );
    assert_eq!(voip.settings.filename.as_deref(), Some("phone.cfg"));
    assert!(voip.settings.options.get(code::DOMAIN_NAME).is_some());
    let Membership::Match {
        subclasses, spawn, ..
    } = &p.classes[1].membership
    else {
        panic!("line matches by value");
    };
    assert!(!spawn);
    let values: Vec<&[u8]> = subclasses.iter().map(|s| s.value.as_slice()).collect();
    assert_eq!(values, [&b"port-3"[..], &[0, 1], b"port-1", b"port-2"]);
    assert_eq!(p.classes[1].lease_limit, Some(2));
    let pools = &p.subnets[0].pools;
    assert_eq!(pools[0].allow, [0]);
    assert!(pools[0].options.get(code::ROUTER).is_some());
    assert_eq!(pools[1].deny, [0, KNOWN]);
    assert!(pools[2].is_open());
}

#[test]
fn class_mistakes_name_their_line_key_and_reason() {
    let bad_test = CLASSES.replace("starts-with 'VOIP'", "starts-with");
    let e = one_error(&bad_test);
    assert_eq!((e.line, e.key.as_str()), (6, "class[0].test"), "{e}");
    assert!(e.reason.contains("column"), "{e}");
    let unknown = CLASSES.replace("deny = [\"voip\", \"KNOWN\"]", "deny = [\"voice\"]");
    let e = one_error(&unknown);
    assert_eq!(e.key, "subnet[0].pools[1].deny[0]", "{e}");
    assert!(e.reason.contains("no class named 'voice'"), "{e}");
    let later = CLASSES.replace(
        "test = \"option[60].text starts-with 'VOIP'\"",
        "test = \"member('line')\"",
    );
    let e = one_error(&later);
    assert_eq!(e.key, "class[0].test", "{e}");
    let both = CLASSES.replace(
        "match = \"relay4[1]\"",
        "match = \"relay4[1]\"\ntest = \"true\"",
    );
    assert_eq!(one_error(&both).key, "class[1]");
    let twice = CLASSES.replace("name = \"line\"", "name = \"voip\"");
    assert_eq!(one_error(&twice).key, "class[1].name");
}

#[test]
fn reservations_by_subscriber_identity_and_the_flex_id() {
    use dhcp_proto::policy::{Subscriber, SubscriberKind};
    let text = format!(
        "flex-id = \"relay4[2]\"\n{MINIMAL}\n[[subnet.reservation]]\ncircuit-id = \"olt-1/1/7\"\n\
         ip-address = \"192.0.2.5\"\n\n[[subnet.reservation]]\nflex-id = \"0x00:1a\"\nip-address = \"192.0.2.6\"\n"
    );
    let c = load(&text).unwrap();
    let r = &c.policy.subnets[0].reservations;
    assert_eq!(
        r[0].subscriber,
        Some(Subscriber {
            kind: SubscriberKind::CircuitId,
            value: b"olt-1/1/7".to_vec()
        })
    );
    assert_eq!(r[1].subscriber.as_ref().unwrap().value, [0, 0x1a]);
    let no_flex = text.replace("flex-id = \"relay4[2]\"\n", "");
    assert_eq!(one_error(&no_flex).key, "subnet[0].reservation[1].flex-id");
}

#[test]
fn user_group_and_metrics_allow_are_read_and_checked() {
    let c = load(&format!(
        "user = \"dhcp-server\"\ngroup = \"dhcp-ops\"\nmetrics-allow = [\"192.0.2.0/24\", \"198.51.100.7\"]\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(c.user.as_deref(), Some("dhcp-server"));
    assert_eq!(c.group.as_deref(), Some("dhcp-ops"));
    let allow: Vec<String> = c.metrics_allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["192.0.2.0/24", "198.51.100.7/32"]);
    // Unset: loopback scrapers only, and the server stays the user it was started as.
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.metrics_allow, crate::config::ClientNet::loopback());
    assert_eq!((c.user, c.group), (None, None));
    let e = one_error(&format!("metrics-allow = [\"192.0.2.0/33\"]\n{MINIMAL}"));
    assert_eq!((e.line, e.key.as_str()), (1, "metrics-allow[0]"), "{e}");
    let e = one_error(&format!("group = \"dhcp-ops\"\n{MINIMAL}"));
    assert_eq!((e.line, e.key.as_str()), (1, "group"), "{e}");
    assert!(e.reason.contains("with user"), "{e}");
}
