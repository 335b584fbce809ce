//! A real relay between the clients and the server: ISC dhcrelay with `-a` inserts option
//! 82, whose circuit id is the name of the interface the client's broadcast came in on.
//! Three hops, three namespaces: dhclient (on macvlans, one MAC each, sharing one link) →
//! dhcrelay → our server, on both backends. What must hold:
//! - a class testing `relay4[1]` against that interface name puts the client in the
//!   pool it allows, and `ctl leases` shows the lease with that circuit id;
//! - with `-U` the relay names the clients' subnet by RFC 3527 link selection while
//!   giaddr is its upstream address, in no subnet of ours: the subnet still comes out
//!   right, and the reply reaches the client through the relay;
//! - a class matching `relay4[1]` with `spawn` and `lease-limit = 1` lets one of two
//!   clients behind the same relay port have a lease; the other's DISCOVERs are dropped
//!   and counted as `lease-limit`.
//!
//! Needs root; see `common`.

#[allow(dead_code)] // each test crate uses part of the shared harness
#[macro_use]
mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ctl_json, require, wait_for_file, Backend, Lab, Server};

on_both_backends!(
    a_class_on_the_relays_circuit_id_picks_the_pool,
    link_selection_picks_the_subnet_giaddr_does_not,
    a_lease_limit_per_circuit_id_admits_one_of_two_clients,
);

const SERVER_ADDR: &str = "192.0.2.1";
/// The relay's upstream address, on the server's link.
const RELAY_UP: &str = "192.0.2.2";
/// The relay's address on the clients' link: giaddr, unless link selection is on.
const RELAY_DOWN: &str = "198.51.100.1";
const CLIENTS_NET: &str = "198.51.100.0/24";
/// The two clients' MACs, one macvlan each. dhclient sends no client identifier, so the
/// XDP program steers each by the RFC 3074 hash of its MAC: the second is the first MAC
/// after the first one that goes to the other worker of two, so that the lease limit
/// must hold across workers.
fn macs() -> [[u8; 6]; 2] {
    let first = [2, 0, 0, 0, 0x0a, 1];
    let second = (2u8..)
        .map(|last| [2, 0, 0, 0, 0x0a, last])
        .find(|m| worker_of(*m) != worker_of(first))
        .expect("a MAC on the other worker");
    [first, second]
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The worker of two the XDP program steers `mac` to.
fn worker_of(mac: [u8; 6]) -> u64 {
    u64::from(dhcp_ebpf_common::loadb_hash(&mac) % 2)
}

/// The three hops and what runs on them.
struct RelayLab {
    lab: Lab,
    server: Server,
    /// The relay's interface toward the clients: the circuit id it inserts.
    relay_if: String,
    clients_ns: String,
    /// The clients' interfaces, one per entry of `macs()`.
    client_ifs: [String; 2],
    socket: String,
}

/// Builds server ⇄ relay ⇄ clients, starts our server with the file `config` makes of
/// the relay's downstream interface name, then dhcrelay (with `-U` when
/// `link_selection`: giaddr is then `RELAY_UP` and the server has no route to the
/// clients' subnet, so only link selection can place them).
fn relay_lab(
    test: &str,
    backend: Backend,
    link_selection: bool,
    config: impl Fn(&str) -> String,
) -> Option<RelayLab> {
    let mut lab = Lab::new(test, &format!("{SERVER_ADDR}/24"))?;
    require("dhcrelay");
    require("dhclient");
    let relay_ns = lab.client_ns.clone();
    let up = lab.client_if.clone();
    lab.in_client(
        "ip",
        &["addr", "add", &format!("{RELAY_UP}/24"), "dev", &up],
    );
    let clients_ns = lab.add_namespace("h");
    let relay_if = lab.if_name("rl");
    let trunk = lab.if_name("cv");
    common::run(Command::new("ip").args([
        "link",
        "add",
        &relay_if,
        "netns",
        &relay_ns,
        "type",
        "veth",
        "peer",
        "name",
        &trunk,
        "netns",
        &clients_ns,
    ]));
    lab.in_client(
        "ip",
        &["addr", "add", &format!("{RELAY_DOWN}/24"), "dev", &relay_if],
    );
    lab.in_client("ip", &["link", "set", &relay_if, "up"]);
    let in_clients = |args: &[&str]| common::run(Lab::cmd(&clients_ns, "ip").args(args));
    in_clients(&["link", "set", &trunk, "up"]);
    in_clients(&["link", "set", "lo", "up"]);
    let client_ifs = [lab.if_name("ma"), lab.if_name("mb")];
    for (name, mac) in client_ifs.iter().zip(macs()) {
        in_clients(&[
            "link",
            "add",
            name,
            "link",
            &trunk,
            "address",
            &mac_text(mac),
            "type",
            "macvlan",
            "mode",
            "bridge",
        ]);
        in_clients(&["link", "set", name, "up"]);
    }
    if !link_selection {
        lab.in_server("ip", &["route", "add", CLIENTS_NET, "via", RELAY_UP]);
    }

    let socket = lab.path("control.sock").display().to_string();
    let path = lab.path("server.toml");
    // In the file: with --config the run command ignores the one-liner's --backend.
    let backend_key = match backend {
        Backend::Udp => "backend = \"udp\"\n",
        Backend::Xdp => "backend = \"xdp\"\nworkers = 2\n",
        Backend::XdpOneWorker => "backend = \"xdp\"\nworkers = 1\n",
    };
    std::fs::write(
        &path,
        format!(
            "interfaces = [\"{}\"]\ncontrol-socket = \"{socket}\"\n{backend_key}\n{}",
            lab.server_if,
            config(&relay_if)
        ),
    )
    .unwrap();
    let server = lab.start_server(&["--config", path.to_str().unwrap()]);

    let mut args = vec!["-4", "-d", "--no-pid", "-id", &relay_if, "-iu", &up];
    if link_selection {
        args.extend_from_slice(&["-U", &up]);
    } else {
        args.push("-a");
    }
    args.push(SERVER_ADDR);
    lab.spawn(&relay_ns, "dhcrelay", &args, "dhcrelay.log");
    wait_for_file(
        &lab.path("dhcrelay.log"),
        &format!("Listening on LPF/{relay_if}/"),
        Duration::from_secs(10),
    );
    Some(RelayLab {
        lab,
        server,
        relay_if,
        clients_ns,
        client_ifs,
        socket,
    })
}

impl RelayLab {
    /// Starts dhclient on client `i`'s interface; its script records each event as
    /// "REASON ADDRESS" in the returned file. It only records: the address is not needed
    /// on the interface, and the stock script must never run (it rewrites the host's
    /// /etc/resolv.conf, which namespaces share).
    fn dhclient(&mut self, i: usize) -> PathBuf {
        let name = format!("dhclient{i}");
        let events = self.lab.path(&format!("{name}.events"));
        let script = self.lab.script(
            &format!("{name}.sh"),
            &format!(
                "echo \"$reason $new_ip_address\" >> {}\nexit 0",
                events.display()
            ),
        );
        let file = |ext: &str| {
            self.lab
                .path(&format!("{name}.{ext}"))
                .display()
                .to_string()
        };
        let args = [
            "-4".into(),
            "-d".into(),
            "-lf".into(),
            file("leases"),
            "-pf".into(),
            file("pid"),
            "-sf".into(),
            script.display().to_string(),
            self.client_ifs[i].clone(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ns = self.clients_ns.clone();
        self.lab
            .spawn(&ns, "dhclient", &args, &format!("{name}.log"));
        events
    }

    /// Waits for the first lease recorded in `events`; its address.
    fn bound(&self, events: &std::path::Path) -> Ipv4Addr {
        let text = wait_for_file(events, "BOUND ", Duration::from_secs(30));
        text.lines()
            .find_map(|l| l.strip_prefix("BOUND "))
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {text}"))
    }

    fn ctl(&self, args: &[&str]) -> serde_json::Value {
        ctl_json(&self.socket, args)
    }

    /// Every lease the server lists.
    fn leases(&self) -> Vec<serde_json::Value> {
        self.ctl(&["leases", "--all"])["leases"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The logs of every hop, for a failure message.
    fn logs(&self) -> String {
        let mut all = format!("server:\n{}", self.server.log_text());
        for f in ["dhcrelay.log", "dhclient0.log", "dhclient1.log"] {
            let text = std::fs::read_to_string(self.lab.path(f)).unwrap_or_default();
            all += &format!("\n{f}:\n{text}");
        }
        all
    }
}

/// A class testing the circuit id against the relay's port, and a pool only it may use.
fn port_class_config(relay_if: &str) -> String {
    format!(
        r#"[[class]]
name = "port"
test = "relay4[1] == '{relay_if}'"

[[subnet]]
subnet = "{CLIENTS_NET}"
routers = ["{RELAY_DOWN}"]
pools = [
  {{ range = "198.51.100.10-198.51.100.19", allow = ["port"] }},
  {{ range = "198.51.100.100-198.51.100.199", deny = ["port"] }},
]
"#
    )
}

/// Client 0's lease through the relay: in the port class's pool, listed with the
/// relay's circuit id. The lease as `ctl leases` shows it.
fn check_port_lease(r: &mut RelayLab) -> serde_json::Value {
    let events = r.dhclient(0);
    let addr = r.bound(&events);
    let restricted = Ipv4Addr::new(198, 51, 100, 10)..=Ipv4Addr::new(198, 51, 100, 19);
    assert!(
        restricted.contains(&addr),
        "{addr} is not in the port class's pool:\n{}",
        r.logs()
    );
    let leases = r.leases();
    let lease = leases
        .iter()
        .find(|l| l["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("ctl leases does not list {addr}: {leases:?}"));
    assert_eq!(lease["state"], "active", "{lease}");
    assert_eq!(lease["mac"], mac_text(macs()[0]), "{lease}");
    assert_eq!(
        lease["relay"]["circuit_id"], r.relay_if,
        "the lease does not keep dhcrelay's circuit id: {lease}"
    );
    lease.clone()
}

fn a_class_on_the_relays_circuit_id_picks_the_pool(backend: Backend) {
    if let Some(mut r) = relay_lab("relay-class", backend, false, port_class_config) {
        check_port_lease(&mut r);
    }
}

fn link_selection_picks_the_subnet_giaddr_does_not(backend: Backend) {
    let Some(mut r) = relay_lab("relay-link", backend, true, port_class_config) else {
        return;
    };
    let lease = check_port_lease(&mut r);
    // Sub-option 5, RELAY_DOWN (198.51.100.1): the relay named the clients' link.
    let raw = lease["relay"]["raw"].as_str().unwrap_or_default();
    assert!(
        raw.contains("05:04:c6:33:64:01"),
        "no link selection in the lease's relay information: {lease}"
    );
}

fn a_lease_limit_per_circuit_id_admits_one_of_two_clients(backend: Backend) {
    let Some(mut r) = relay_lab("relay-limit", backend, false, |_| {
        format!(
            r#"[[class]]
name = "line"
match = "relay4[1]"
spawn = true
lease-limit = 1

[[subnet]]
subnet = "{CLIENTS_NET}"
pools = ["198.51.100.10-198.51.100.199"]
"#
        )
    }) else {
        return;
    };
    let first = r.dhclient(0);
    let addr = r.bound(&first);
    let second = r.dhclient(1);
    // Two of the second client's DISCOVERs dropped: it has had time to retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = std::fs::read_to_string(&second).unwrap_or_default();
        assert!(
            !events.contains("BOUND"),
            "the second client got a lease past the limit: {events}\n{}",
            r.logs()
        );
        let n = r.ctl(&["stats"])["drops"]["lease-limit"]
            .as_u64()
            .unwrap_or(0);
        if n >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lease-limit drops: {n} after 30 s:\n{}",
            r.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let leases = r.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["address"], addr.to_string(), "{leases:?}");
    assert_eq!(leases[0]["mac"], mac_text(macs()[0]), "{leases:?}");
    assert_eq!(leases[0]["relay"]["circuit_id"], r.relay_if, "{leases:?}");
    assert!(
        r.server
            .log_text()
            .contains("lease limit of class line reached"),
        "{}",
        r.logs()
    );
    if backend == Backend::Xdp {
        // The lease and the refusals on different workers: one count for all of them.
        assert_eq!(leases[0]["shard"], worker_of(macs()[0]), "{leases:?}");
        let stats = r.ctl(&["stats"]);
        let refusing = &stats["shards"][worker_of(macs()[1]) as usize];
        assert!(
            refusing["dropped"].as_u64().unwrap_or(0) >= 2,
            "the second client's worker did not drop its DISCOVERs: {stats}"
        );
    }
}
