//! Bulk leasequery (RFC 6926) against whole servers in this process, on the loopback
//! backend (no root): the TCP listener is real, on 127.0.0.1. The requester here is
//! written from the RFC: its own framing (a 2-octet size, then the message), queries
//! built and replies read with `dhcproto`, never with the server's own leasequery code.
//!
//! A server holds 100,000 leases imported from a dhcpd leases file. A requester pages
//! through all of them and through one remote id's, and gets what `ctl leases` lists;
//! a requester that stops reading is dropped after the timeout while another is served;
//! garbage, a size with no body, a peer that may not ask and one connection too many are
//! counted and closed, and the server answers the next query as before.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dhcp_server::config;
use dhcp_server::journal::{self, Journal, Options};
use dhcp_server::loopback::Loopback;
use dhcp_server::runtime::{self, clock::Clock, env::Env, stop::Stop};
use dhcproto::v4::{self, bulk_query, relay, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use common::ctl_json;

const SHARDS: u16 = 2;
const LEASES: u32 = 100_000;
/// Remote ids: leases `2k` and `2k + 1` were granted through `rid-{k % REMOTE_IDS}`.
const REMOTE_IDS: u32 = 100;
/// Seconds a bulk connection may make no progress.
const TIMEOUT: u64 = 2;
/// How long a test waits for something that takes a few seconds at most.
const PATIENCE: Duration = Duration::from_secs(30);

fn remote_id(i: u32) -> u32 {
    (i / 2) % REMOTE_IDS
}

/// The address of lease `i`.
fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i)
}

/// A leases file as dhcpd writes it: `n` leases, every 50th of them expired, the rest
/// active, each stashed with the remote id it came through. Odd leases were last
/// renewed `old` seconds before `now`, even ones 100 seconds before.
fn leases_file(n: u32, now: u64, old: u64) -> String {
    let time = |t: u64| journal::isc::format_time(t);
    let mut text = String::with_capacity(n as usize * 200);
    for i in 0..n {
        let cltt = if !i.is_multiple_of(2) {
            now - old
        } else {
            now - 100
        };
        let (state, ends) = if i % 50 == 49 {
            ("expired", now - 10)
        } else {
            ("active", now + 86_400)
        };
        let b = i.to_be_bytes();
        text.push_str(&format!(
            "lease {} {{\n  starts {};\n  ends {};\n  cltt {};\n  binding state {state};\n  \
             hardware ethernet 02:00:{:02x}:{:02x}:{:02x}:{:02x};\n  \
             option agent.remote-id \"rid-{}\";\n}}\n",
            addr(i),
            time(cltt),
            time(ends),
            time(cltt),
            b[0],
            b[1],
            b[2],
            b[3],
            remote_id(i)
        ));
    }
    text
}

/// One of our servers on the loopback backend, in a thread of this process.
struct Server {
    dir: PathBuf,
    bulk: SocketAddr,
    stop: Stop,
    thread: Option<JoinHandle<Result<(), runtime::Error>>>,
}

impl Server {
    /// Starts a server holding `leases` (a dhcpd leases file), taking bulk queries from
    /// 127.0.0.1 on a free port, at most `connections` at once.
    fn start(name: &str, leases: &str, connections: u16) -> Server {
        let dir = std::env::temp_dir().join(format!("bulk-lq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        // Small segments: the machine's disk is shared.
        let segment = 4 << 20;
        if !leases.is_empty() {
            let opened = Journal::open(
                &state,
                &Options {
                    segment_bytes: segment,
                    ..Options::default()
                },
            )
            .unwrap();
            let mut writers = opened.writers;
            let first = Clock::system().now() << 20;
            journal::import_isc(leases, &mut writers[0], first).unwrap();
        }
        // A port nobody listens on now; the server binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = dir.join("dhcp-server.toml");
        std::fs::write(
            &file,
            format!(
                "interfaces = [\"lan0\"]\nstate-dir = \"{}\"\njournal-segment-size = {segment}\n\
                 control-socket = \"{}\"\n\
                 [leasequery]\nrequesters = [\"127.0.0.1\"]\nbulk-listen = \"127.0.0.1:{port}\"\n\
                 bulk-connections = {connections}\nbulk-timeout = {TIMEOUT}\n\
                 [[subnet]]\nsubnet = \"198.18.0.0/15\"\ninterface = \"lan0\"\n\
                 pools = [\"198.18.0.10-198.19.255.250\"]\nlease-time = 86400\nmax-lease-time = 86400\n",
                state.display(),
                dir.join("control.sock").display(),
            ),
        )
        .unwrap();
        let config = config::load_file(&file).expect("the test's configuration is valid");
        let (backend, _wire) = Loopback::new(SHARDS, vec![Ipv4Addr::new(198, 18, 0, 1)]);
        let stop = Stop::new();
        let env = Env {
            clock: Clock::system(),
            stop: stop.clone(),
            config_file: Some(file),
            log_level: None,
        };
        let thread = std::thread::spawn(move || runtime::run(config, Box::new(backend), env));
        let server = Server {
            dir,
            bulk: SocketAddr::from(([127, 0, 0, 1], port)),
            stop,
            thread: Some(thread),
        };
        let since = Instant::now();
        while !server.ready() {
            assert!(since.elapsed() < PATIENCE, "{name} never got ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn socket(&self) -> String {
        self.dir.join("control.sock").display().to_string()
    }

    fn ready(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.dir.join("control.sock")).is_ok()
            && ctl_json(&self.socket(), &["status"])["ready"] == true
    }

    /// The bulk leasequery counters of `ctl stats`.
    fn bulk_stats(&self) -> serde_json::Value {
        ctl_json(&self.socket(), &["stats"])["bulk_leasequery"].clone()
    }

    /// Waits until the counter `name` reaches `n`.
    fn wait_for_count(&self, name: &str, n: u64) {
        let since = Instant::now();
        loop {
            let stats = self.bulk_stats();
            if stats[name].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(
                since.elapsed() < PATIENCE,
                "{name} never reached {n}: {stats}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every lease `ctl leases` lists: address and state.
    fn ctl_leases(&self) -> BTreeMap<Ipv4Addr, String> {
        let page = ctl_json(&self.socket(), &["leases", "--all", "--limit", "1000"]);
        page["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["address"].as_str().unwrap().parse().unwrap(),
                    l["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.request();
        if let Some(t) = self.thread.take() {
            let stopped = t.join();
            if !std::thread::panicking() {
                stopped
                    .expect("the server thread ends")
                    .expect("the server stops cleanly");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a requester builds a query from.
#[derive(Default)]
struct Ask {
    xid: u32,
    remote_id: Option<Vec<u8>>,
    start_time: Option<u32>,
}

/// A DHCPBULKLEASEQUERY, framed: no ciaddr, chaddr or client id, so it asks for all
/// bindings, or for those of a remote id in option 82.
fn bulk_query(ask: &Ask) -> Vec<u8> {
    let mut m = v4::Message::new_with_id(
        ask.xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::BulkLeaseQuery));
    if let Some(id) = &ask.remote_id {
        let mut info = relay::RelayAgentInformation::default();
        info.insert(relay::RelayInfo::AgentRemoteId(id.clone()));
        m.opts_mut().insert(DhcpOption::RelayAgentInformation(info));
    }
    if let Some(t) = ask.start_time {
        m.opts_mut()
            .insert(DhcpOption::BulkLeaseQueryQueryStartTime(t));
    }
    let mut body = Vec::new();
    m.encode(&mut Encoder::new(&mut body)).unwrap();
    frame(&body)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Reads one framed message; `None` when the server closed the connection (a dropped
/// requester may see the last message cut short).
fn read_message(s: &mut TcpStream) -> Option<v4::Message> {
    let closed = |e: std::io::Error| match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => {}
        _ => panic!("reading a message: {e}"),
    };
    let mut size = [0u8; 2];
    if let Err(e) = s.read_exact(&mut size) {
        closed(e);
        return None;
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(size))];
    if let Err(e) = s.read_exact(&mut body) {
        closed(e);
        return None;
    }
    Some(v4::Message::decode(&mut Decoder::new(&body)).expect("a DHCP message dhcproto reads"))
}

fn connect(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// What a query was answered with.
#[derive(Debug, Default)]
struct Answer {
    /// Address and message type of each binding, in the order sent.
    bindings: Vec<(Ipv4Addr, MessageType)>,
    /// The status, when the query ended with one rather than DONE.
    status: Option<(bulk_query::Code, String)>,
}

/// Reads the answer to the query of `xid`, up to its DONE or STATUS, checking every
/// message RFC 6926 requires of it.
fn read_answer(s: &mut TcpStream, xid: u32) -> Answer {
    let mut answer = Answer::default();
    loop {
        let m = read_message(s).expect("the answer ends with DONE or STATUS");
        assert_eq!(m.xid(), xid, "every message carries the query's xid");
        assert_eq!(m.opcode(), v4::Opcode::BootReply);
        let kind = m.opts().msg_type().expect("a message type");
        match kind {
            MessageType::LeaseActive | MessageType::LeaseUnassigned => {
                let opt = |c| m.opts().get(c);
                assert!(
                    matches!(
                        opt(OptionCode::BulkLeaseQueryBaseTime),
                        Some(DhcpOption::BulkLeaseQueryBaseTime(_))
                    ),
                    "base-time in {m:?}"
                );
                let state = match opt(OptionCode::BulkLeaseQueryDhcpState) {
                    Some(DhcpOption::BulkLeaseQueryDhcpState(s)) => *s,
                    other => panic!("dhcp-state: {other:?}"),
                };
                let expected = if kind == MessageType::LeaseActive {
                    bulk_query::QueryState::Active
                } else {
                    bulk_query::QueryState::Expired
                };
                assert_eq!(state, expected);
                assert!(
                    opt(OptionCode::RelayAgentInformation).is_some(),
                    "option 82 stored"
                );
                assert!(
                    matches!(opt(OptionCode::BulkLeaseQueryDataSource), Some(DhcpOption::BulkLeaseQueryDataSource(d)) if !d.remote()),
                    "data-source local"
                );
                if kind == MessageType::LeaseActive {
                    assert!(opt(OptionCode::AddressLeaseTime).is_some(), "lease time");
                }
                assert_eq!(m.chaddr().len(), 6);
                answer.bindings.push((m.ciaddr(), kind));
            }
            MessageType::LeaseQueryDone => return answer,
            MessageType::LeaseQueryStatus => {
                if let Some(DhcpOption::BulkLeaseQueryStatusCode(code, text)) =
                    m.opts().get(OptionCode::BulkLeaseQueryStatusCode)
                {
                    answer.status = Some((*code, text.clone()));
                }
                return answer;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn query(to: SocketAddr, ask: &Ask) -> Answer {
    let mut s = connect(to);
    s.write_all(&bulk_query(ask)).unwrap();
    read_answer(&mut s, ask.xid)
}

/// The bindings as `ctl leases` states them: LEASEACTIVE for "active", else UNASSIGNED.
fn expected(
    ctl: &BTreeMap<Ipv4Addr, String>,
    keep: impl Fn(Ipv4Addr) -> bool,
) -> BTreeMap<Ipv4Addr, MessageType> {
    ctl.iter()
        .filter(|(a, _)| keep(**a))
        .map(|(a, state)| {
            let kind = if state == "active" {
                MessageType::LeaseActive
            } else {
                MessageType::LeaseUnassigned
            };
            (*a, kind)
        })
        .collect()
}

fn as_map(answer: &Answer) -> BTreeMap<Ipv4Addr, MessageType> {
    let map: BTreeMap<_, _> = answer.bindings.iter().copied().collect();
    assert_eq!(map.len(), answer.bindings.len(), "no binding is sent twice");
    map
}

fn index(a: Ipv4Addr) -> u32 {
    u32::from(a) - u32::from(addr(0))
}

#[test]
fn a_requester_pages_through_100000_leases_while_a_stalled_one_is_dropped() {
    let now = Clock::system().now();
    let server = Server::start("many", &leases_file(LEASES, now, 20_000), 4);
    let ctl = server.ctl_leases();
    assert_eq!(
        ctl.len(),
        LEASES as usize,
        "ctl leases lists every imported lease"
    );

    // A requester that asks for everything and then reads nothing.
    let mut stalled = connect(server.bulk);
    stalled
        .write_all(&bulk_query(&Ask {
            xid: 1,
            ..Ask::default()
        }))
        .unwrap();

    // Meanwhile another is served everything, as `ctl leases` has it.
    let all = query(
        server.bulk,
        &Ask {
            xid: 2,
            ..Ask::default()
        },
    );
    assert_eq!(all.status, None);
    assert_eq!(as_map(&all), expected(&ctl, |_| true));
    assert_eq!(
        all.bindings
            .iter()
            .filter(|b| b.1 == MessageType::LeaseUnassigned)
            .count(),
        (LEASES / 50) as usize
    );

    // By remote id: the thousand leases granted through it.
    let rid = 7;
    let by_remote = query(
        server.bulk,
        &Ask {
            xid: 3,
            remote_id: Some(format!("rid-{rid}").into_bytes()),
            ..Ask::default()
        },
    );
    let want = expected(&ctl, |a| remote_id(index(a)) == rid);
    assert_eq!(want.len(), (LEASES / REMOTE_IDS) as usize);
    assert_eq!(as_map(&by_remote), want);

    // Since a time: only those whose state began since, the even, recently renewed
    // ones (none of this remote id's has expired).
    let recent = query(
        server.bulk,
        &Ask {
            xid: 4,
            remote_id: Some(format!("rid-{rid}").into_bytes()),
            start_time: Some((now - 1000) as u32),
        },
    );
    let want_recent = expected(&ctl, |a| {
        remote_id(index(a)) == rid && index(a).is_multiple_of(2)
    });
    assert_eq!(want_recent.len(), want.len() / 2);
    assert_eq!(as_map(&recent), want_recent);

    // The stalled requester is dropped after the timeout, mid-stream: what it reads now
    // ends without DONE.
    server.wait_for_count("timed_out", 1);
    let mut seen = 0;
    while let Some(m) = read_message(&mut stalled) {
        seen += 1;
        assert_ne!(
            m.opts().msg_type(),
            Some(MessageType::LeaseQueryDone),
            "a dropped requester never gets to DONE"
        );
    }
    assert!(
        seen < LEASES,
        "{seen} messages reached the stalled requester"
    );
    let stats = server.bulk_stats();
    assert_eq!(stats["queries"], 3, "{stats}");
    assert!(
        stats["bindings_sent"].as_u64().unwrap() >= u64::from(LEASES) + 1000 + 500,
        "{stats}"
    );
    let metrics = ctl_json(&server.socket(), &["stats"]);
    assert_eq!(metrics["bulk_leasequery"]["refused"], 0);
}

#[test]
fn bad_requesters_are_counted_and_closed_and_the_server_serves_on() {
    let now = Clock::system().now();
    let server = Server::start("bad", &leases_file(200, now, 20_000), 2);
    let good = || {
        let a = query(
            server.bulk,
            &Ask {
                xid: 9,
                ..Ask::default()
            },
        );
        assert_eq!(a.status, None);
        assert_eq!(a.bindings.len(), 200);
    };
    good();

    // Garbage in a whole frame: MalformedQuery, then the connection is closed.
    let mut s = connect(server.bulk);
    s.write_all(&frame(&[0xab; 300])).unwrap();
    let a = read_answer(&mut s, 0xabababab);
    assert_eq!(a.status.unwrap().0, bulk_query::Code::MalformedQuery);
    assert!(read_message(&mut s).is_none(), "closed after the status");

    // A size no DHCP message can have: the same, at once.
    let mut s = connect(server.bulk);
    s.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
    assert_eq!(
        read_answer(&mut s, 0).status.unwrap().0,
        bulk_query::Code::MalformedQuery
    );
    assert!(read_message(&mut s).is_none());

    // The largest size and no body: closed after the timeout, nothing sent.
    let mut s = connect(server.bulk);
    s.write_all(&[0xff, 0xff]).unwrap();
    assert!(read_message(&mut s).is_none());
    server.wait_for_count("timed_out", 1);

    // A single leasequery is not run here: UnspecFail, and the connection goes on.
    let mut s = connect(server.bulk);
    let mut single = v4::Message::new_with_id(
        77,
        addr(0),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    single
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::LeaseQuery));
    let mut body = Vec::new();
    single.encode(&mut Encoder::new(&mut body)).unwrap();
    s.write_all(&frame(&body)).unwrap();
    assert_eq!(
        read_answer(&mut s, 77).status.unwrap().0,
        bulk_query::Code::UnspecFail
    );
    s.write_all(&bulk_query(&Ask {
        xid: 78,
        ..Ask::default()
    }))
    .unwrap();
    assert_eq!(
        read_answer(&mut s, 78).bindings.len(),
        200,
        "the next query on it runs"
    );
    drop(s);

    // A peer outside the requesters (127.0.0.2 is this machine too): NotAllowed.
    let outsider = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
            sock.connect(server.bulk).await.unwrap().into_std().unwrap()
        })
    };
    let mut s = outsider;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(&bulk_query(&Ask {
        xid: 5,
        ..Ask::default()
    }))
    .unwrap();
    let a = read_answer(&mut s, 5);
    assert_eq!(a.status.unwrap().0, bulk_query::Code::NotAllowed);
    assert!(a.bindings.is_empty(), "nothing told to a stranger");
    assert!(read_message(&mut s).is_none());

    // One connection over the limit of two is closed at once.
    let held: Vec<TcpStream> = (0..2).map(|_| connect(server.bulk)).collect();
    server.wait_for_count("accepted", 7);
    let mut over = connect(server.bulk);
    assert!(read_message(&mut over).is_none(), "closed without a word");
    server.wait_for_count("refused", 2);
    drop(held);

    let stats = server.bulk_stats();
    assert_eq!(stats["malformed"], 3, "{stats}");
    // Once the held connections are gone, a query is answered as before.
    let since = Instant::now();
    loop {
        let mut s = connect(server.bulk);
        s.write_all(&bulk_query(&Ask {
            xid: 9,
            ..Ask::default()
        }))
        .unwrap();
        if read_message(&mut s).is_some() {
            break;
        }
        assert!(since.elapsed() < PATIENCE, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    good();
}
