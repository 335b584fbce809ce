//! `dhcp-server leasequery`: an operator's RFC 4388 requester. It asks one server about
//! one address or client, as a BNG or relay would, and prints the answer as a table or
//! as JSON. The query and the reply are dhcp-proto's (`leasequery::write_query`,
//! `LeaseReply`), the codec the server itself answers with.
//!
//! A requester names itself in giaddr and the server answers to giaddr port 67, so the
//! client binds that address and port: it needs root (or CAP_NET_BIND_SERVICE), and no
//! DHCP server or relay may hold port 67 on that address.

use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use dhcp_proto::leasequery::{msg, write_query, Key, LeaseReply};
use dhcp_proto::wire::relay::{sub, SubOptions};
use dhcp_server::control::{ClientId, MacAddr};

/// Where servers and requesters listen (RFC 2131 §4.1; RFC 4388 §6.3 for the reply).
const DHCP_PORT: u16 = 67;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("key").required(true))]
pub struct LeasequeryArgs {
    /// The server to ask.
    #[arg(long)]
    pub server: Ipv4Addr,
    /// Ask about this address.
    #[arg(long, group = "key")]
    pub address: Option<Ipv4Addr>,
    /// Ask about the client with this Ethernet address.
    #[arg(long, group = "key")]
    pub mac: Option<MacAddr>,
    /// Ask about the client with this client identifier (option 61), in hex.
    #[arg(long, group = "key")]
    pub client_id: Option<ClientId>,
    /// The requester's address (giaddr), where the answer comes back; by default the
    /// local address the kernel picks to reach the server. The server must list it among
    /// its requesters.
    #[arg(long)]
    pub from: Option<Ipv4Addr>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

pub fn run(args: LeasequeryArgs) -> ExitCode {
    match ask(&args) {
        Ok(answer) => {
            if args.json {
                println!("{answer:#}");
            } else {
                print!("{}", table(&answer));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dhcp-server leasequery: {e}");
            ExitCode::FAILURE
        }
    }
}

fn key(args: &LeasequeryArgs) -> Key {
    if let Some(a) = args.address {
        return Key::Address(a);
    }
    if let Some(id) = &args.client_id {
        return Key::ClientId(id.as_bytes().into());
    }
    // clap requires one of the three.
    let mac = args.mac.map(|m| m.0).unwrap_or_default();
    let mut hw = [0u8; 16];
    hw[..6].copy_from_slice(&mac);
    Key::Hardware {
        htype: 1,
        hw,
        hlen: 6,
    }
}

/// The local address the kernel would send to `server` from.
fn route_source(server: Ipv4Addr) -> io::Result<Ipv4Addr> {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    probe.connect((server, DHCP_PORT))?;
    match probe.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(*a.ip()),
        std::net::SocketAddr::V6(_) => Err(io::Error::other("no IPv4 route to the server")),
    }
}

/// Sends the query and waits for the answer with its transaction id; the answer as JSON
/// (which the table is printed from too, so both show the same).
fn ask(args: &LeasequeryArgs) -> Result<Value, String> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            format!(
                "--timeout {} is not a positive number of seconds",
                args.timeout
            )
        })?;
    let from = match args.from {
        Some(a) => a,
        None => route_source(args.server)
            .map_err(|e| format!("no local address to reach {}: {e}", args.server))?,
    };
    let socket = UdpSocket::bind(SocketAddrV4::new(from, DHCP_PORT)).map_err(|e| {
        format!(
            "cannot bind {from}:{DHCP_PORT} to receive the answer ({e}); a requester gets \
             its answer on port 67 of its giaddr, which needs root or CAP_NET_BIND_SERVICE \
             and no DHCP server or relay on that address (--from picks another)"
        )
    })?;
    // Any value will do; one a stale answer to an earlier query is unlikely to carry.
    let xid = RandomState::new().hash_one(Instant::now()) as u32;
    let mut buf = [0u8; 1500];
    let len = write_query(msg::LEASEQUERY, &key(args), from, xid, None, &mut buf)
        .map_err(|e| format!("cannot write the query: {e}"))?;
    socket
        .send_to(&buf[..len], (args.server, DHCP_PORT))
        .map_err(|e| format!("cannot send to {}:{DHCP_PORT}: {e}", args.server))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer from {} within {:?} (is {from} among its leasequery requesters?)",
                args.server, timeout
            ));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("receiving: {e}")),
        };
        // Anything else arriving on port 67 (a client's broadcast, a late answer to an
        // earlier query) is not the answer.
        let Ok(reply) = LeaseReply::parse(&buf[..n]) else {
            continue;
        };
        if reply.msg.xid() == xid
            && matches!(
                reply.kind,
                msg::LEASEACTIVE | msg::LEASEUNASSIGNED | msg::LEASEUNKNOWN
            )
        {
            return Ok(describe(&reply, peer.ip()));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A relay sub-option's value as text when it is printable, else as hex.
fn text_or_hex(b: &[u8]) -> String {
    if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        String::from_utf8_lossy(b).into_owned()
    } else {
        hex(b)
    }
}

/// The answer as JSON: every field the reply carries, absent ones as null.
fn describe(r: &LeaseReply<'_>, peer: std::net::IpAddr) -> Value {
    let kind = dhcp_proto::wire::MessageType::from_u8(r.kind).name();
    let addr = (!r.addr.is_unspecified()).then(|| r.addr.to_string());
    // The client fields mean something only when the reply is about a bound client.
    let active = r.kind == msg::LEASEACTIVE;
    let chaddr = r.msg.chaddr();
    let mac = (active && !chaddr.is_empty()).then(|| hex(chaddr));
    let agent = r.relay_agent_info;
    let sub_of = |code: u8| {
        agent.and_then(|a| {
            SubOptions::new(a)
                .find(|s| s.0 == code)
                .map(|s| text_or_hex(s.1))
        })
    };
    json!({
        "type": kind,
        "server": peer.to_string(),
        "server_id": r.server_id.map(|a| a.to_string()),
        "address": addr,
        "htype": active.then(|| r.msg.htype()),
        "mac": mac,
        "client_id": r.client_id.map(hex),
        "lease_time": r.lease_time,
        "renewal_time": r.renewal_time,
        "rebinding_time": r.rebinding_time,
        "last_transaction": r.last_transaction,
        "associated": r.associated_ips().map(|a| a.to_string()).collect::<Vec<_>>(),
        "circuit_id": sub_of(sub::CIRCUIT_ID),
        "remote_id": sub_of(sub::REMOTE_ID),
        "relay_agent_info": agent.map(hex),
    })
}

/// The answer for a person: one line per field the reply carries.
fn table(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let secs = |k: &str| v[k].as_u64().map(|n| format!("{n} s"));
    let mut rows: Vec<(&str, Option<String>)> = vec![
        ("address", s("address")),
        ("client MAC", s("mac")),
        ("client id", s("client_id")),
        ("lease time left", secs("lease_time")),
        ("T1 (renewal) in", secs("renewal_time")),
        ("T2 (rebinding) in", secs("rebinding_time")),
        (
            "last transaction",
            v["last_transaction"].as_u64().map(|n| format!("{n} s ago")),
        ),
    ];
    let associated: Vec<&str> = v["associated"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !associated.is_empty() {
        rows.push(("associated IPs", Some(associated.join(", "))));
    }
    rows.push(("relay circuit id", s("circuit_id")));
    rows.push(("relay remote id", s("remote_id")));
    let mut out = format!(
        "{} from {}\n",
        v["type"].as_str().unwrap_or("?"),
        v["server"].as_str().unwrap_or("?")
    );
    for (name, value) in rows {
        if let Some(value) = value {
            out += &format!("  {name:<18} {value}\n");
        }
    }
    out
}
