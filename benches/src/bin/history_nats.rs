//! `history_nats`: how many lease events a second the NATS JetStream history sink
//! delivers. It hands `--events` synthetic events to `NatsSink` in batches of `--batch`,
//! as the journal follower does (deliver, then the next batch), and prints events per
//! second as JSON; only the `deliver` calls are timed, the events are made before.
//!
//! With `--connect` it uses a running nats-server (JetStream on). Without it, it starts
//! one itself, as the tests do: nats-server in a network namespace of its own on
//! 198.18.0.1, the sink on a thread in a second namespace joined to the first by a veth
//! pair, both deleted at exit. That needs root, and shares this machine's cores between
//! the server and the sink.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use dhcp_proto::lease::{BindingState, HwAddr};
use dhcp_server::history::{
    Batch, Event, EventKind, NatsOptions, NatsSink, Origin, Position, Relay, Role, Sink,
};

#[derive(Parser)]
#[command(about = "NATS JetStream history sink: events per second as JSON")]
struct Args {
    /// A JetStream server's URL; without it one is started in namespaces (root needed).
    #[arg(long)]
    connect: Option<String>,
    /// Events to deliver.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 8192)]
    batch: u64,
    /// Publishes whose acknowledgement may be outstanding at once.
    #[arg(long, default_value_t = NatsOptions::default().max_in_flight)]
    in_flight: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.connect {
        Some(url) => run(&args, url.clone(), None),
        None => Netns::start().and_then(|lab| {
            let url = format!("nats://{SERVER}:4222");
            lab.in_client(|| run(&args, url, lab.server.as_ref().map(Child::id)))
        }),
    };
    match result {
        Ok(r) => {
            let secs = r.elapsed.as_secs_f64();
            let per_event = |cpu: Duration| cpu.as_secs_f64() * 1e6 / args.events as f64;
            let server = r
                .server_cpu
                .map(|c| format!(",\"server_cpu_us_per_event\":{:.2}", per_event(c)))
                .unwrap_or_default();
            println!(
                "{{\"events\":{},\"batch\":{},\"in_flight\":{},\"seconds\":{secs:.3},\
                 \"events_per_sec\":{:.0},\"sink_cpu_us_per_event\":{:.2}{server}}}",
                args.events,
                args.batch,
                args.in_flight,
                args.events as f64 / secs,
                per_event(r.sink_cpu),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("history_nats: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a run measured: the time in `deliver`, this process's CPU time over it (the
/// sink: the follower's thread and the one that keeps the connection), and nats-server's
/// when this program started it.
struct Measured {
    elapsed: Duration,
    sink_cpu: Duration,
    server_cpu: Option<Duration>,
}

/// Delivers every batch.
fn run(args: &Args, url: String, server: Option<u32>) -> Result<Measured, String> {
    // A site of its own per run: a new stream, so the figure never includes a
    // duplicate check against an earlier run's ids.
    let site = format!("bench{}", std::process::id());
    let origin = Origin {
        server: "bench.example".into(),
        site,
        role: Role::Standalone,
    };
    let opts = NatsOptions {
        servers: vec![url],
        max_in_flight: args.in_flight,
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut sink = NatsSink::new(opts, origin).map_err(|e| e.to_string())?;
    sink.open().map_err(|e| e.to_string())?;
    // Made before the clock starts, so the figure is the sink's alone and making them
    // does not take a core from the server while it runs.
    let batch_size = args.batch.max(1);
    let batches: Vec<Batch> = (0..args.events.div_ceil(batch_size))
        .map(|b| {
            let (from, to) = (b * batch_size, ((b + 1) * batch_size).min(args.events));
            Batch {
                events: (from..to).map(event).collect(),
                after: Position {
                    journal: 1,
                    generation: 1,
                    next: vec![to],
                },
            }
        })
        .collect();
    let (cpu0, server0) = (own_cpu(), server.and_then(process_cpu));
    let start = Instant::now();
    for batch in &batches {
        sink.deliver(batch).map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    Ok(Measured {
        elapsed,
        sink_cpu: own_cpu().saturating_sub(cpu0),
        server_cpu: server0
            .zip(server.and_then(process_cpu))
            .map(|(a, b)| b.saturating_sub(a)),
    })
}

/// User and system time of this process so far.
fn own_cpu() -> Duration {
    // SAFETY: rusage is plain integers (all zeroes is a valid value), and getrusage(2)
    // only writes into the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User and system time of process `pid` so far, from /proc (fields 14 and 15, in clock
/// ticks).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Event `i`, shaped like a busy ISP subnet's: mostly renewals, option 61 and a host
/// name from every client, option 82 from the relay. Addresses run through the
/// benchmark range, so a batch holds one event per address as a real one mostly does.
fn event(i: u64) -> Event {
    let n = i as u32;
    let kind = match i % 10 {
        0 => EventKind::Granted,
        1 => EventKind::Released,
        2 => EventKind::Expired,
        _ => EventKind::Renewed,
    };
    let mac = [
        2,
        0xbe,
        (n >> 24) as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ];
    Event {
        kind,
        state: if kind.binds(BindingState::Active) {
            BindingState::Active
        } else {
            BindingState::Free
        },
        at: 1_800_000_000 + i / 1000,
        addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n % (1 << 17)),
        hw: HwAddr::new(1, &mac),
        client_id: [&[1u8][..], &mac].concat(),
        host_name: format!("host-{n}").into_bytes(),
        relay: Relay {
            circuit_id: format!("eth0/{}", n % 48).into_bytes(),
            remote_id: mac.to_vec(),
            subscriber_id: Vec::new(),
            giaddr: Some(Ipv4Addr::new(198, 18, 0, 254)),
        },
        starts: 1_800_000_000 + i / 1000,
        ends: 1_800_003_600 + i / 1000,
        stamp: i + 1,
        shard: n % 2,
        seq: i / 2,
    }
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// nats-server in one namespace, a client namespace joined to it by a veth pair, and the
/// server's store; all removed on drop.
struct Netns {
    server_ns: String,
    client_ns: String,
    dir: PathBuf,
    server: Option<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn start() -> Result<Netns, String> {
        let id = std::process::id();
        let mut lab = Netns {
            server_ns: format!("dhcpt-hn{id}-s"),
            client_ns: format!("dhcpt-hn{id}-c"),
            dir: std::env::temp_dir().join(format!("history-nats-bench-{id}")),
            server: None,
        };
        let (s_if, c_if) = (format!("hs{id}"), format!("hc{id}"));
        fs::create_dir_all(&lab.dir).map_err(|e| format!("{}: {e}", lab.dir.display()))?;
        ip(&["netns", "add", &lab.server_ns])?;
        ip(&["netns", "add", &lab.client_ns])?;
        ip(&[
            "link",
            "add",
            &s_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &c_if,
            "netns",
            &lab.client_ns,
        ])?;
        for (ns, dev, addr) in [
            (&lab.server_ns, &s_if, "198.18.0.1/24"),
            (&lab.client_ns, &c_if, "198.18.0.100/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let conf = lab.dir.join("nats.conf");
        let log = lab.dir.join("nats.log");
        fs::write(
            &conf,
            format!(
                "listen: \"{SERVER}:4222\"\njetstream {{ store_dir: \"{}\" }}\n",
                lab.dir.join("store").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let out = fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.server_ns, "nats-server", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("nats-server: {e}"))?;
        lab.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server is ready")
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server not ready after 20 s:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(lab)
    }

    /// Runs `f` on a thread inside the client namespace (threads it starts stay there).
    fn in_client<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, String> + Send,
    ) -> Result<T, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let path = format!("/var/run/netns/{}", self.client_ns);
                let file = fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                // SAFETY: setns(2) on an open namespace file moves this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns: {}", std::io::Error::last_os_error()));
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err("the sink's thread panicked".into()))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
