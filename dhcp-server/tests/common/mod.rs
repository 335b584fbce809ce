//! A lab for integration tests: two network namespaces (server and client) joined by a
//! veth pair, the real `dhcp-server` binary running in one, real clients in the other.
//! Names carry the process id and a counter so tests run in parallel; everything is torn
//! down on drop, panics included. Every wait is bounded.
//!
//! Namespaces need root. Without it `Lab::new` prints why the test is skipped and returns
//! `None`. CI runs as root, and there (CI set) a skip is a failure: a green run must mean
//! the clients really got leases.

pub mod nats;
pub mod postgres;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Runs a test body once per backend, as `NAME::udp` and `NAME::xdp`.
#[allow(unused_macros)] // each test crate uses part of the shared harness
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn udp() {
                super::$name(super::Backend::Udp);
            }
            #[test]
            fn xdp() {
                super::$name(super::Backend::Xdp);
            }
        }
    )*};
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_dhcp-server");

pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    /// The server side of the veth pair, inside `server_ns`.
    pub server_if: String,
    /// The client side, inside `client_ns`.
    pub client_if: String,
    pub dir: PathBuf,
    children: Vec<Child>,
    /// Unique to this lab: the part of every name after the role prefix.
    id: String,
    /// Namespaces a test added beyond the two, deleted with the lab.
    extra_ns: Vec<String>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// Whether a program is on PATH; a missing client is a broken setup, not a skip.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    assert!(
        found,
        "{program} is not installed: run `cargo xtask setup` (as root) first"
    );
}

impl Lab {
    /// Creates the namespaces and the veth pair, with `server_addr` (ADDRESS/PREFIX) on the
    /// server side and the client side up without an address.
    pub fn new(test: &str, server_addr: &str) -> Option<Lab> {
        Self::with_queues(test, server_addr, 1)
    }

    /// `new`, with veth ends of `queues` receive and transmit queues each, as a
    /// multi-queue NIC has.
    pub fn with_queues(test: &str, server_addr: &str, queues: u32) -> Option<Lab> {
        if !is_root() || Command::new("ip").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: needs root and iproute2, which CI must have (run `cargo xtask setup`)"
            );
            eprintln!("{test}: skipped: needs root and network namespaces (CI runs it as root)");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let lab = Lab {
            server_ns: format!("dhcpt-{id}-s"),
            client_ns: format!("dhcpt-{id}-c"),
            server_if: format!("ds{id}"),
            client_if: format!("dc{id}"),
            dir: std::env::temp_dir().join(format!("dhcp-server-test-{test}-{id}")),
            children: Vec::new(),
            id,
            extra_ns: Vec::new(),
        };
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).unwrap();
        ip(&["netns", "add", &lab.server_ns]);
        ip(&["netns", "add", &lab.client_ns]);
        let queues = queues.to_string();
        ip(&[
            "link",
            "add",
            &lab.server_if,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "netns",
            &lab.client_ns,
        ]);
        lab.in_server("ip", &["addr", "add", server_addr, "dev", &lab.server_if]);
        for (ns, dev) in [
            (&lab.server_ns, &lab.server_if),
            (&lab.client_ns, &lab.client_if),
        ] {
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]));
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
        }
        Some(lab)
    }

    /// A further namespace (a third hop: clients behind a relay), deleted with the lab.
    pub fn add_namespace(&mut self, role: &str) -> String {
        let ns = format!("dhcpt-{}-{role}", self.id);
        ip(&["netns", "add", &ns]);
        self.extra_ns.push(ns.clone());
        ns
    }

    /// An interface name unique to this lab: `prefix` (two letters keep it within
    /// the kernel's 15 characters) and the lab's id.
    pub fn if_name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.id)
    }

    /// A command that runs inside namespace `ns`.
    pub fn cmd(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    pub fn in_server(&self, program: &str, args: &[&str]) -> Output {
        run(Self::cmd(&self.server_ns, program).args(args))
    }

    pub fn in_client(&self, program: &str, args: &[&str]) -> Output {
        run(Self::cmd(&self.client_ns, program).args(args))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes an executable shell script into the lab directory.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Starts a process in a namespace, stdout and stderr to `log`, killed on drop.
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> u32 {
        let out = fs::File::create(self.path(log)).unwrap();
        let child = Self::cmd(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts ISC dhcpd in the foreground in `ns` on `iface` with the configuration
    /// `conf` and the leases file `leases`, logging to `dhcpd.log`, and waits until it
    /// serves. Returns its pid.
    pub fn start_dhcpd(&mut self, ns: &str, conf: &Path, leases: &Path, iface: &str) -> u32 {
        let pid_file = self.path("dhcpd.pid");
        let args = [
            "-4",
            "-f",
            "-d",
            "-cf",
            conf.to_str().unwrap(),
            "-lf",
            leases.to_str().unwrap(),
            "-pf",
            pid_file.to_str().unwrap(),
            iface,
        ];
        let pid = self.spawn(ns, "dhcpd", &args, "dhcpd.log");
        wait_for_file(
            &self.path("dhcpd.log"),
            "Sending on",
            Duration::from_secs(10),
        );
        pid
    }

    /// Starts `dhcp-server run ARGS` in the server namespace and waits for its ready line.
    pub fn start_server(&mut self, args: &[&str]) -> Server {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let ns = self.server_ns.clone();
        let pid = self.spawn(&ns, SERVER_BIN, &full, "server.log");
        let server = Server {
            pid,
            log: self.path("server.log"),
        };
        server.wait_for("ready", Duration::from_secs(10));
        server
    }

    /// Whether a started process is still running.
    pub fn alive(&mut self, pid: u32) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.server_ns, &self.client_ns]
            .into_iter()
            .chain(&self.extra_ns)
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `dhcp-server run` arguments serving `subnet` from `range` on `iface` with `backend`.
pub fn one_liner<'a>(
    iface: &'a str,
    subnet: &'a str,
    range: &'a str,
    backend: Backend,
) -> Vec<&'a str> {
    let mut args = vec!["--interface", iface, "--subnet", subnet, "--range", range];
    args.extend_from_slice(backend.args());
    args
}

/// Which I/O backend a test runs the server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Udp,
    /// XDP steering into two AF_XDP workers, so the sharding is exercised too.
    Xdp,
    /// XDP with one worker: one shard, so addresses come in the UDP backend's order.
    XdpOneWorker,
}

impl Backend {
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Backend::Udp => &["--backend", "udp"],
            Backend::Xdp => &["--backend", "xdp", "--workers", "2"],
            Backend::XdpOneWorker => &["--backend", "xdp", "--workers", "1"],
        }
    }

    /// The same choice as top-level keys of a configuration file.
    pub fn file_keys(self) -> &'static str {
        match self {
            Backend::Udp => "backend = \"udp\"\n",
            Backend::Xdp => "backend = \"xdp\"\nworkers = 2\n",
            Backend::XdpOneWorker => "backend = \"xdp\"\nworkers = 1\n",
        }
    }

    /// After a clean stop: with XDP, both workers' shutdown lines show requests served,
    /// so the program really spread clients over the workers.
    pub fn check_every_worker_served(self, log: &str) {
        if self != Backend::Xdp {
            return;
        }
        for w in 0..2 {
            let served = log
                .lines()
                .find_map(|l| l.split(&format!("worker {w}: ")).nth(1))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no shutdown line for worker {w}:\n{log}"));
            assert!(served > 0, "worker {w} served nothing:\n{log}");
        }
    }
}

pub struct Server {
    pub pid: u32,
    pub log: PathBuf,
}

impl Server {
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`, panicking with the log after `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) {
        wait_for_file(&self.log, needle, limit);
    }
}

/// Waits until `path` holds `needle`, panicking with its contents after `limit`.
pub fn wait_for_file(path: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no '{needle}' in {} after {limit:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// dhclient's arguments for the client interface: IPv4, its lease and pid files named
/// after `name` in the lab directory, and `script` instead of the stock one.
pub fn dhclient_args(lab: &Lab, name: &str, script: &Path) -> Vec<String> {
    let file = |ext: &str| lab.path(&format!("{name}.{ext}")).display().to_string();
    vec![
        "-4".into(),
        "-lf".into(),
        file("leases"),
        "-pf".into(),
        file("pid"),
        "-sf".into(),
        script.display().to_string(),
        lab.client_if.clone(),
    ]
}

/// Runs perfdhcp in the client namespace with `args`, bounded to two and a half minutes
/// (the longest load, the lease history's outage test, runs 70 s); its output.
pub fn perfdhcp(lab: &Lab, args: &[&str]) -> String {
    require("perfdhcp");
    let out = Lab::cmd(&lab.client_ns, "timeout")
        .arg("150")
        .arg("perfdhcp")
        .args(args)
        .output()
        .unwrap();
    // perfdhcp exits 3 when any packet was dropped; the counters say more than the code.
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// perfdhcp as a relay on the client interface (its address is the giaddr): `clients`
/// new clients doing DORA at `rate` a second, for at most `secs`, plus `extra` flags.
pub fn perfdhcp_dora(lab: &Lab, rate: u32, clients: u32, secs: u32, extra: &[&str]) -> String {
    let (rate, clients, secs) = (rate.to_string(), clients.to_string(), secs.to_string());
    let mut args = vec![
        "-4",
        "-l",
        &lab.client_if,
        "-r",
        &rate,
        "-R",
        &clients,
        "-n",
        &clients,
        "-W",
        "2000000",
        "-p",
        &secs,
    ];
    args.extend_from_slice(extra);
    perfdhcp(lab, &args)
}

/// perfdhcp's summary for one exchange kind, e.g. "DISCOVER-OFFER".
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PerfStats {
    pub sent: u64,
    pub received: u64,
    pub drops: u64,
}

pub fn perf_stats(output: &str, exchange: &str) -> PerfStats {
    let section = output
        .split("***Statistics for: ")
        .find(|s| s.starts_with(exchange))
        .unwrap_or_else(|| panic!("no {exchange} statistics in perfdhcp output:\n{output}"));
    let field = |name: &str| {
        section
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or_else(|| panic!("no '{name}' for {exchange}:\n{output}"))
    };
    PerfStats {
        sent: field("sent packets:"),
        received: field("received packets:"),
        drops: field("drops:"),
    }
}

/// `dhcp-server ctl --json ARGS` against the control socket at `socket`: its reply,
/// after checking the command succeeded.
pub fn ctl_json(socket: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(SERVER_BIN)
        .args(["ctl", "--socket", socket, "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
