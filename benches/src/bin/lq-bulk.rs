//! `lq-bulk`: one bulk leasequery requester (RFC 6926). It connects, asks for every
//! binding (a DHCPBULKLEASEQUERY naming no key), counts the DHCPLEASEACTIVE and
//! DHCPLEASEUNASSIGNED messages until DHCPLEASEQUERYDONE, and prints bindings per second
//! as JSON.
//!
//! With `--connect` it asks a running server. Without it, it starts one in this process
//! on the loopback backend (no network, no root), holding `--leases` active leases
//! imported into a journal in a temporary directory, so the figure is reproducible on
//! any machine; the server then shares this process's cores with the reader.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dhcp_server::journal::{self, Journal, Options};
use dhcp_server::loopback::Loopback;
use dhcp_server::runtime::{self, clock::Clock, env::Env, stop::Stop};

#[derive(Parser)]
#[command(
    about = "Bulk leasequery reader: one query for all bindings, bindings per second as JSON"
)]
struct Args {
    /// A server's bulk leasequery address; without it a server is started in-process.
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Leases the in-process server holds.
    #[arg(long, default_value_t = 100_000)]
    leases: u32,
    /// Lease shards of the in-process server.
    #[arg(long, default_value_t = 2)]
    shards: u16,
}

/// DHCP message types and options this reader needs (RFC 2132, RFC 4388, RFC 6926).
const BULKLEASEQUERY: u8 = 14;
const LEASEQUERYDONE: u8 = 15;
const LEASEQUERYSTATUS: u8 = 17;
const LEASEACTIVE: u8 = 13;
const LEASEUNASSIGNED: u8 = 11;

fn main() -> ExitCode {
    let args = Args::parse();
    let (addr, server) = match args.connect {
        Some(a) => (a, None),
        None => match InProcess::start(args.leases, args.shards) {
            Ok(s) => (s.addr, Some(s)),
            Err(e) => {
                eprintln!("lq-bulk: cannot start a server: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = read_all(addr);
    drop(server);
    match result {
        Ok((bindings, elapsed)) => {
            let secs = elapsed.as_secs_f64();
            println!(
                "{{\"bindings\":{bindings},\"seconds\":{secs:.3},\"bindings_per_sec\":{:.0}}}",
                bindings as f64 / secs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lq-bulk: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the query and counts bindings until DONE; the time runs from the connect.
fn read_all(addr: SocketAddr) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    s.write_all(&query(0x6c71_0001))
        .map_err(|e| format!("send the query: {e}"))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, s);
    let mut body = vec![0u8; usize::from(u16::MAX)];
    let mut bindings = 0u64;
    loop {
        let mut size = [0u8; 2];
        r.read_exact(&mut size)
            .map_err(|e| format!("after {bindings} bindings: {e}"))?;
        let m = &mut body[..usize::from(u16::from_be_bytes(size))];
        r.read_exact(m)
            .map_err(|e| format!("after {bindings} bindings: {e}"))?;
        match message_type(m) {
            Some(LEASEACTIVE | LEASEUNASSIGNED) => bindings += 1,
            Some(LEASEQUERYDONE) => return Ok((bindings, start.elapsed())),
            Some(LEASEQUERYSTATUS) => {
                return Err(format!(
                    "the server answered with a status after {bindings} bindings"
                ))
            }
            other => return Err(format!("unexpected message type {other:?}")),
        }
    }
}

/// A framed DHCPBULKLEASEQUERY for all bindings: a bare BOOTREQUEST with option 53.
fn query(xid: u32) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 1;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(&[53, 1, BULKLEASEQUERY, 255]);
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

/// Option 53 of a message, looked for in the options field only (no overload: the
/// server never uses it for these replies).
fn message_type(m: &[u8]) -> Option<u8> {
    let mut at = 240;
    while at < m.len() {
        match m[at] {
            0 => at += 1,
            255 => return None,
            code => {
                let len = usize::from(*m.get(at + 1)?);
                if code == 53 && len == 1 {
                    return m.get(at + 2).copied();
                }
                at += 2 + len;
            }
        }
    }
    None
}

/// A server in this process holding `leases` active leases, until dropped.
struct InProcess {
    addr: SocketAddr,
    dir: PathBuf,
    stop: Stop,
    thread: Option<std::thread::JoinHandle<Result<(), runtime::Error>>>,
}

impl InProcess {
    fn start(leases: u32, shards: u16) -> Result<InProcess, String> {
        let dir = std::env::temp_dir().join(format!("lq-bulk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let state = dir.join("state");
        let segment = 8u64 << 20;
        let now = Clock::system().now();
        let opened = Journal::open(
            &state,
            &Options {
                segment_bytes: segment,
                ..Options::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let mut writers = opened.writers;
        journal::import_isc(&leases_file(leases, now), &mut writers[0], now << 20)
            .map_err(|e| e.to_string())?;
        drop(writers);
        drop(opened.journal);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let file = dir.join("dhcp-server.toml");
        std::fs::write(
            &file,
            format!(
                "interfaces = [\"lan0\"]\nstate-dir = \"{}\"\njournal-segment-size = {segment}\n\
                 [leasequery]\nrequesters = [\"127.0.0.1\"]\nbulk-listen = \"127.0.0.1:{port}\"\n\
                 [[subnet]]\nsubnet = \"198.18.0.0/15\"\ninterface = \"lan0\"\n\
                 pools = [\"198.18.0.10-198.19.255.250\"]\nlease-time = 86400\n",
                state.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let config = dhcp_server::config::load_file(&file).map_err(|e| format!("{e:?}"))?;
        let (backend, wire) = Loopback::new(shards, vec![Ipv4Addr::new(198, 18, 0, 1)]);
        let stop = Stop::new();
        let env = Env {
            clock: Clock::system(),
            stop: stop.clone(),
            config_file: None,
            log_level: None,
        };
        let thread = std::thread::spawn(move || {
            // The wire lives as long as the server: the loopback shards wait on it.
            let _wire = wire;
            runtime::run(config, Box::new(backend), env)
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let since = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if since.elapsed() > Duration::from_secs(60) {
                return Err("the server never listened".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(InProcess {
            addr,
            dir,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.request();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` active leases as dhcpd writes them, each with a remote id.
fn leases_file(n: u32, now: u64) -> String {
    let time = journal::isc::format_time;
    let first = u32::from(Ipv4Addr::new(198, 18, 0, 10));
    let mut text = String::with_capacity(n as usize * 200);
    for i in 0..n {
        let b = i.to_be_bytes();
        text.push_str(&format!(
            "lease {} {{\n  starts {};\n  ends {};\n  cltt {};\n  binding state active;\n  \
             hardware ethernet 02:00:{:02x}:{:02x}:{:02x}:{:02x};\n  option agent.remote-id \"rid-{}\";\n}}\n",
            Ipv4Addr::from(first + i),
            time(now - 100),
            time(now + 86_400),
            time(now - 100),
            b[0],
            b[1],
            b[2],
            b[3],
            i % 100
        ));
    }
    text
}
