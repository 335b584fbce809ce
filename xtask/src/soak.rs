//! `cargo xtask soak --rounds N [--seed S]`: the crash soak. The server runs in the lab's
//! failover layout (xtask/src/lab.rs: `dhcplab-srv`, `dhcplab-srv2` and `dhcplab-load` on
//! one bridge, 198.18.0.0/15) as `nobody:nogroup`, `durability = "sync"`, its journal on
//! a small tmpfs of its own. Each round:
//!
//! 1. dhcp-load plays new clients doing DORA at a bounded rate and records every ACK they
//!    get (`--acks`);
//! 2. at a moment drawn from a seeded RNG the server is killed with SIGKILL and started
//!    again at once, on the same state directory, while the load goes on;
//! 3. once the load is over, every client that got an ACK asks for its address in
//!    INIT-REBOOT (`dhcp-load --init-reboot`): a NAK, an ACK of another address or
//!    silence is a lost lease.
//!
//! Rounds alternate the XDP and UDP backends. Every fifth round (3, 8, 13, ...) fills the
//! state directory's filesystem during the load instead of killing at random: the
//! server must say in its log that it stops acknowledging, then serve on once the space
//! is back: before it is killed, at the end of the load, it must ACK every client of the
//! round in INIT-REBOOT again; the check after its restart then replays the journal
//! written around the full disk. At the end every client
//! of every round asks once more for its last ACKed address: the leases must survive all
//! the restarts, not only the one after them.
//!
//! Every fifth round from the fifth (5, 10, ...) makes the state directory read-only for
//! the unprivileged server instead, with the same checks as the full disk. Every fifth
//! round from the fourth (4, 9, ...) runs a fresh failover pair of ours in its place
//! (primary in `dhcplab-srv`, secondary in `dhcplab-srv2`, both as `nobody`), kills
//! one side at a seeded
//! moment and restarts it at once, waits until both are normal, and asks for every ACK
//! of the round (either side may answer).
//!
//! Kill moments come from the seed (printed at the start; `--seed` replays them). A round
//! lasts about 4 s; any lost lease fails the run with the round, the seed and the leases.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::bench::field;
use crate::lab::{self, Lab, Layout};
use crate::{sh, Result};

/// Clients per round, and the rate and length of each round's load: about 3,000 ACKs in
/// 2 s, well inside what the server and the generator do on 2 shared cores, so a drop
/// means the kill, not overload.
const CLIENTS: u32 = 3000;
const RATE: u32 = 1500;
const LOAD_SECONDS: f64 = 2.0;
/// Rounds draw their clients from this many ranges of `CLIENTS`, so a client comes back
/// (and DORAs again) every `SLOTS` rounds and the pool (about 130,000 addresses) never
/// runs out however many rounds run.
const SLOTS: u32 = 10;
/// Rounds 3, 8, 13, ... fill the disk: every fifth round, the backends taking turns
/// (the server killed in round r runs backend(r)), and within CI's three rounds.
const DISK_FULL_EVERY: u32 = 5;
const DISK_FULL_FIRST: u32 = 3;
/// The journal's filesystem, and segments of the smallest size: a full disk then stops
/// ACKs within a few hundred records (the open and the prepared segment are all a shard
/// can still fill), not after tens of thousands.
const TMPFS_SIZE: &str = "32m";
const SEGMENT: &str = "65536";
/// How long the disk stays full: longer than the server takes to fill the open and the
/// prepared segment at `RATE` (about 0.6 s), so it has to stop acknowledging.
const FULL_FOR: Duration = Duration::from_millis(1200);
/// Rounds 5, 10, 15, ... make the state directory read-only for the server (outside
/// CI's three rounds), for this long: the open and the prepared segment fill as above,
/// then the next segment cannot be created (EACCES).
const READ_ONLY_EVERY: u32 = 5;
const READ_ONLY_FIRST: u32 = 0;
const READ_ONLY_FOR: Duration = Duration::from_millis(1500);
/// The unprivileged user and group every server of the soak runs as (`run --user
/// --group`): it owns the state directory, so only a mode without `w` stops it.
const USER: (&str, &str) = ("nobody", "nogroup");
/// Rounds 4, 9, 14, ... run a failover pair of ours instead of the one server (outside
/// CI's three rounds): a fresh pair on a pool of 256 addresses, so it is normal and
/// balanced within seconds; this many clients, at this rate, for `LOAD_SECONDS`, each
/// side serving its half (`split = 128`).
const PAIR_EVERY: u32 = 5;
const PAIR_FIRST: u32 = 4;
const PAIR_POOL: (&str, &str) = ("198.18.2.0", "198.18.2.255");
const PAIR_CLIENTS: u32 = 200;
const PAIR_RATE: u32 = 100;
/// A small MCLT, so a side back in recover waits seconds, not an hour.
const PAIR_MCLT: u32 = 5;
/// What the server logs when it stops acknowledging for lack of a journal.
const NOT_ACKING: &str = "not acknowledging leases until the journal accepts them again";
/// What the server logs when it refuses to start because a file of the state directory
/// is not the user's after the switch: a journal file made as root in the window before
/// it (fixed by `journal::owner`; a refusal fails the run).
const REFUSED: &str = "cannot hand the state directory to user";

/// splitmix64: a seeded, dependency-free source for the kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (milliseconds).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// SIGKILL at this many ms into the load.
    Kill(u64),
    /// The disk full from this many ms into the load for `FULL_FOR`; SIGKILL at its end.
    DiskFull(u64),
    /// The state directory and its files without `w` for everyone from this many ms into
    /// the load for `READ_ONLY_FOR`; SIGKILL at its end.
    ReadOnly(u64),
    /// A failover pair serving; this side of it SIGKILLed at this many ms into the load
    /// and started again at once.
    Pair(u64, Side),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Primary,
    Secondary,
}

impl Side {
    fn role(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Secondary => "secondary",
        }
    }
    /// Namespace and interface in the failover layout.
    fn end(self) -> (&'static str, &'static str) {
        match self {
            Side::Primary => (lab::SERVER_NS, lab::SERVER_IF),
            Side::Secondary => lab::SERVER2,
        }
    }
    /// The address it talks failover from, on the clients' link.
    fn addr(self) -> &'static str {
        let cidr = match self {
            Side::Primary => lab::SERVER_ADDR,
            Side::Secondary => lab::SERVER2_ADDR,
        };
        cidr.split('/').next().unwrap_or(cidr)
    }
    fn other(self) -> Side {
        match self {
            Side::Primary => Side::Secondary,
            Side::Secondary => Side::Primary,
        }
    }
}

impl Trouble {
    /// For a round that takes the journal's room away: when, and for how long.
    fn starves(self) -> Option<(u64, Duration)> {
        match self {
            Trouble::Kill(_) | Trouble::Pair(..) => None,
            Trouble::DiskFull(ms) => Some((ms, FULL_FOR)),
            Trouble::ReadOnly(ms) => Some((ms, READ_ONLY_FOR)),
        }
    }
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::Kill(ms) => write!(f, "kill -9 at {ms} ms"),
            Trouble::DiskFull(ms) => write!(
                f,
                "disk full at {ms} ms for {} ms, kill -9 at the end",
                FULL_FOR.as_millis()
            ),
            Trouble::ReadOnly(ms) => write!(
                f,
                "read-only at {ms} ms for {} ms, kill -9 at the end",
                READ_ONLY_FOR.as_millis()
            ),
            Trouble::Pair(ms, side) => write!(f, "pair, its {} kill -9 at {ms} ms", side.role()),
        }
    }
}

/// What one INIT-REBOOT check found, from dhcp-load's first output line.
#[derive(Debug, Default, Clone, Copy)]
struct Checked {
    asked: u64,
    kept: u64,
    lost: u64,
}

/// The state directory's tmpfs, unmounted when the soak ends (lazily: on a failure the
/// server may still hold it until the lab stops it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={TMPFS_SIZE},mode=0700"))
            .arg("dhcp-soak")
            .arg(dir))?;
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Soak {
    lab: Lab,
    server_bin: String,
    load_bin: String,
    state: PathBuf,
}

impl Soak {
    /// Starts the server on the state directory and waits until it serves; returns its pid.
    fn start(&mut self, backend: &str, log: &str) -> Result<u32> {
        let mut args: Vec<String> = vec![
            "RUST_LOG=info,dhcp_proto::engine=warn".into(),
            self.server_bin.clone(),
        ];
        args.extend(lab::one_liner());
        args.extend(
            [
                "--backend",
                backend,
                "--workers",
                "1",
                "--durability",
                "sync",
                "--lease-time",
                "86400",
                "--journal-segment-size",
                SEGMENT,
                "--user",
                USER.0,
                "--group",
                USER.1,
            ]
            .map(String::from),
        );
        args.push("--state-dir".into());
        args.push(self.state.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn_server(lab::SERVER_NS, "env", &args, log)
    }

    /// Starts a server and waits until it serves; returns its pid. A server that refuses
    /// to start (`REFUSED`: a file of its state directory not the user's) fails the run.
    fn spawn_server(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> Result<u32> {
        let pid = self.lab.spawn(ns, program, args, log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(self.lab.dir.join(log)).unwrap_or_default();
            if text.contains("ready: serving") {
                return Ok(pid);
            }
            if let Some(line) = text.lines().find(|l| l.contains(REFUSED)) {
                return Err(format!("{log}: the server refused to start: {line}"));
            }
            if Instant::now() > deadline {
                return Err(format!("no 'ready: serving' in {log} after 20 s:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap it (the lab's stop finds it dead at once).
    fn kill9(&mut self, pid: u32) -> Result {
        sh(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
        self.lab.stop(pid);
        Ok(())
    }

    /// `clients` new clients from `first` on doing DORA at `rate` for `LOAD_SECONDS`.
    fn load(
        &self,
        first: u32,
        clients: u32,
        rate: u32,
        acks: &Path,
    ) -> Result<std::process::Child> {
        lab::in_ns(lab::LOAD.0, &self.load_bin)
            .args(["--interface", lab::LOAD.1, "--json", "--timeout-ms", "500"])
            .args(["--clients", &clients.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--rate", &rate.to_string()])
            .args(["--duration", &LOAD_SECONDS.to_string()])
            .arg("--acks")
            .arg(acks)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start dhcp-load: {e}"))
    }

    /// Every client of `acks` asks for its last ACKed address in INIT-REBOOT.
    fn check(&self, acks: &Path) -> Result<(Checked, String)> {
        let out = lab::in_ns(lab::LOAD.0, &self.load_bin)
            .args(["--interface", lab::LOAD.1, "--window", "128"])
            .args(["--timeout-ms", "300", "--init-reboot"])
            .arg(acks)
            .output()
            .map_err(|e| format!("cannot run dhcp-load --init-reboot: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let checked = parse_check(&text).ok_or_else(|| {
            format!(
                "dhcp-load --init-reboot said nothing usable ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((checked, text))
    }

    /// Fills the state directory's filesystem with a file of zeros; returns its path.
    fn fill_disk(&self) -> Result<PathBuf> {
        use std::io::Write;
        let path = self.state.join("soak-filler");
        let mut f = fs::File::create(&path).map_err(|e| e.to_string())?;
        let chunk = vec![0u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(format!("filling {}: {e}", path.display())),
            }
        }
        Ok(path)
    }

    /// One side of the failover pair, on its own state directory under the lab's; returns
    /// its pid once it serves.
    fn start_side(&mut self, side: Side, backend: &str, log: &str) -> Result<u32> {
        let state = self.lab.dir.join(format!("pair-{}", side.role()));
        fs::create_dir_all(&state).map_err(|e| e.to_string())?;
        let conf = self.lab.dir.join(format!("pair-{}.toml", side.role()));
        fs::write(
            &conf,
            pair_config(side, backend, &state, &self.pair_socket(side)),
        )
        .map_err(|e| e.to_string())?;
        let conf = conf.display().to_string();
        let server = self.server_bin.clone();
        self.spawn_server(side.end().0, &server, &["run", "--config", &conf], log)
    }

    fn pair_socket(&self, side: Side) -> PathBuf {
        self.lab.dir.join(format!("pair-{}.sock", side.role()))
    }

    /// `dhcp-server ctl --json COMMAND` against one side of the pair; the reply's text.
    fn ctl(&self, side: Side, command: &str) -> String {
        Command::new(&self.server_bin)
            .arg("ctl")
            .arg("--socket")
            .arg(self.pair_socket(side))
            .args(["--json", "--timeout", "5", command])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits until `ready` holds of both sides' `ctl status` and `ctl stats` replies.
    fn wait_pair(&self, what: &str, ready: impl Fn(&str, &str, Side) -> bool) -> Result {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let replies: Vec<(String, String, Side)> = [Side::Primary, Side::Secondary]
                .into_iter()
                .map(|s| (self.ctl(s, "status"), self.ctl(s, "stats"), s))
                .collect();
            if replies.iter().all(|(st, sx, s)| ready(st, sx, *s)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the pair was not {what} within 60 s; ctl status said:\n{}\n{}",
                    replies[0].0, replies[1].0
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A failover round: a fresh pair, under load, `victim` SIGKILLed at `ms` and started
    /// again at once; once both are normal again every ACK is asked for. Returns the ACKs
    /// seen, the check and its text; both servers are stopped after.
    fn pair_round(
        &mut self,
        round: u32,
        backend: &str,
        ms: u64,
        victim: Side,
    ) -> Result<(u64, Checked, String)> {
        let sides = [Side::Primary, Side::Secondary];
        for side in sides {
            let _ = fs::remove_dir_all(self.lab.dir.join(format!("pair-{}", side.role())));
        }
        let mut pids = Vec::new();
        for side in sides {
            let log = format!("pair-{round}-{}.log", side.role());
            pids.push(self.start_side(side, backend, &log)?);
        }
        // Normal, and the pool balanced: the secondary has free addresses of its own and
        // neither side has updates left to send.
        self.wait_pair("normal and balanced", |status, stats, side| {
            pair_normal(status)
                && backlog(status) == 0.0
                && (side == Side::Primary || field(stats, "free") > 0.0)
        })?;
        let acks = self.lab.dir.join(format!("acks-{round}.txt"));
        let load = self.load(SLOTS * CLIENTS, PAIR_CLIENTS, PAIR_RATE, &acks)?;
        let load_start = Instant::now();
        std::thread::sleep(
            (load_start + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
        );
        let at = usize::from(victim == Side::Secondary);
        self.kill9(pids[at])?;
        let log = format!("pair-{round}-{}-again.log", victim.role());
        pids[at] = self.start_side(victim, backend, &log)?;
        let got = finish_load(load, round)?;
        self.wait_pair("normal again", |status, _, _| pair_normal(status))?;
        let (c, text) = self.check(&acks)?;
        for pid in pids {
            self.kill9(pid)?;
        }
        Ok((got, c, text))
    }

    /// Takes the `w` bits of the state directory and of every file in it away; returns
    /// the modes to put back.
    fn read_only(&self) -> Result<Vec<(PathBuf, fs::Permissions)>> {
        use std::os::unix::fs::PermissionsExt;
        let mut paths = vec![self.state.clone()];
        for e in fs::read_dir(&self.state)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            paths.push(e.path());
        }
        let mut modes = Vec::new();
        // The files first, the directory (first in `paths`) last.
        for path in paths.iter().rev() {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue; // removed meanwhile (a compacted segment)
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            let mode = meta.permissions();
            let ro = fs::Permissions::from_mode(mode.mode() & !0o222);
            if fs::set_permissions(path, ro).is_ok() {
                modes.push((path.clone(), mode));
            }
        }
        Ok(modes)
    }

    /// Takes the journal's room away as `trouble` says; returns what gives it back.
    fn starve(&self, trouble: Trouble) -> Result<Starved> {
        match trouble {
            Trouble::DiskFull(_) => self.fill_disk().map(Starved::Filler),
            Trouble::ReadOnly(_) => self.read_only().map(Starved::Modes),
            Trouble::Kill(_) | Trouble::Pair(..) => Ok(Starved::Modes(Vec::new())),
        }
    }
}

/// What `Soak::starve` did, to be undone.
enum Starved {
    Filler(PathBuf),
    Modes(Vec<(PathBuf, fs::Permissions)>),
}

impl Starved {
    fn undo(self) -> Result {
        match self {
            Starved::Filler(path) => fs::remove_file(&path).map_err(|e| e.to_string()),
            Starved::Modes(modes) => {
                // The directory first: it was made read-only last.
                for (path, mode) in modes.into_iter().rev() {
                    fs::set_permissions(&path, mode)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                Ok(())
            }
        }
    }
}

/// One side's configuration file: the lab's subnet with `PAIR_POOL`, load balancing
/// with `split = 128`, the failover link on the clients' link, run as `USER` like the
/// single server.
fn pair_config(side: Side, backend: &str, state: &Path, socket: &Path) -> String {
    let mut c = format!(
        "interfaces = [\"{ifname}\"]\nbackend = \"{backend}\"\nworkers = 1\n\
         durability = \"sync\"\njournal-segment-size = {SEGMENT}\nstate-dir = \"{state}\"\n\
         control-socket = \"{socket}\"\nlog-level = \"info,dhcp_proto::engine=warn\"\n\
         user = \"{user}\"\ngroup = \"{group}\"\n\n\
         [failover]\nname = \"soak\"\nrole = \"{role}\"\naddress = \"{addr}\"\n\
         peer-address = \"{peer}\"\nmax-response-delay = 10\nmax-unacked-updates = 100\n\
         load-balance-max-seconds = 3\n",
        ifname = side.end().1,
        state = state.display(),
        socket = socket.display(),
        role = side.role(),
        addr = side.addr(),
        peer = side.other().addr(),
        user = USER.0,
        group = USER.1,
    );
    if side == Side::Primary {
        c.push_str(&format!("mclt = {PAIR_MCLT}\nsplit = 128\n"));
    }
    c.push_str(&format!(
        "\n[[subnet]]\nsubnet = \"{}\"\ninterface = \"{}\"\npools = [\"{}-{}\"]\n\
         lease-time = 86400\nrouters = [\"198.18.0.1\"]\n",
        lab::SUBNET,
        side.end().1,
        PAIR_POOL.0,
        PAIR_POOL.1
    ));
    c
}

/// Both the side and its partner in normal, by `ctl status --json`.
fn pair_normal(status: &str) -> bool {
    let s: String = status.split_whitespace().collect();
    s.contains("\"local_state\":\"normal\"") && s.contains("\"peer_state\":\"normal\"")
}

/// Binding updates a side has not had acknowledged (queued and in flight).
fn backlog(status: &str) -> f64 {
    field(status, "queued_updates") + field(status, "unacked_updates")
}

/// "init-reboot: N leases asked for, K kept, L lost (...)".
fn parse_check(text: &str) -> Option<Checked> {
    let line = text.lines().find(|l| l.starts_with("init-reboot:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |after: &str| -> Option<u64> {
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',') == after)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    Some(Checked {
        asked: num("leases")?,
        kept: num("kept")?,
        lost: num("lost")?,
    })
}

/// "completed":N from dhcp-load's JSON line.
/// Waits for a round's dhcp-load and returns how many exchanges it completed.
fn finish_load(load: std::process::Child, round: u32) -> Result<u64> {
    let out = load
        .wait_with_output()
        .map_err(|e| format!("dhcp-load: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "round {round}: dhcp-load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(completed(&String::from_utf8_lossy(&out.stdout)))
}

fn completed(json: &str) -> u64 {
    json.split("\"completed\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn run(rounds: u32, seed: Option<u64>) -> Result {
    if !crate::is_root() {
        return Err("the soak needs root (namespaces, XDP, a tmpfs)".into());
    }
    let seed = seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("soak: {rounds} rounds, seed {seed} (replay the kill moments with --seed {seed})");
    let mut rng = Rng(seed);
    let server_bin = lab::release_binary("dhcp-server", "dhcp-server")?;
    let load_bin = lab::release_binary("dhcp-benches", "dhcp-load")?;
    let lab = Lab::start("dhcp-soak", Layout::Failover)?;
    let state = lab.dir.join("state");
    let _tmpfs = Tmpfs::mount(&state)?;
    let mut soak = Soak {
        lab,
        server_bin,
        load_bin,
        state,
    };
    let all_acks = soak.lab.dir.join("acks-all.txt");
    let started = Instant::now();
    let (mut acks_seen, mut verified, mut lost) = (0u64, 0u64, 0u64);
    let mut moments = Vec::new();
    let backend = |round: u32| if round % 2 == 1 { "xdp" } else { "udp" };
    let mut pid = soak.start(backend(1), "server-1.log")?;
    for round in 1..=rounds {
        let t0 = Instant::now();
        let trouble = if round % DISK_FULL_EVERY == DISK_FULL_FIRST {
            Trouble::DiskFull(rng.between(200, 500))
        } else if round % READ_ONLY_EVERY == READ_ONLY_FIRST {
            Trouble::ReadOnly(rng.between(200, 500))
        } else if round % PAIR_EVERY == PAIR_FIRST {
            let ms = rng.between(100, (LOAD_SECONDS * 1000.0) as u64 - 100);
            let side = if rng.next().is_multiple_of(2) {
                Side::Primary
            } else {
                Side::Secondary
            };
            Trouble::Pair(ms, side)
        } else {
            Trouble::Kill(rng.between(100, (LOAD_SECONDS * 1000.0) as u64 - 100))
        };
        moments.push(trouble);
        let (got, c, text, full_logged) = if let Trouble::Pair(ms, victim) = trouble {
            // The one server steps aside (one more SIGKILL and restart for it) while
            // the pair has the link.
            soak.kill9(pid)?;
            let (got, c, text) = soak.pair_round(round, backend(round), ms, victim)?;
            pid = soak.start(backend(round + 1), &format!("server-{}.log", round + 1))?;
            (got, c, text, true)
        } else {
            let acks = soak.lab.dir.join(format!("acks-{round}.txt"));
            let first = ((round - 1) % SLOTS) * CLIENTS;
            let next_log = format!("server-{}.log", round + 1);
            let load = soak.load(first, CLIENTS, RATE, &acks)?;
            let load_start = Instant::now();
            let at = |ms: u64| load_start + Duration::from_millis(ms);
            let mut full_logged = true;
            match trouble {
                Trouble::Kill(ms) | Trouble::Pair(ms, _) => {
                    std::thread::sleep(at(ms).saturating_duration_since(Instant::now()));
                    soak.kill9(pid)?;
                    pid = soak.start(backend(round + 1), &next_log)?;
                }
                Trouble::DiskFull(ms) | Trouble::ReadOnly(ms) => {
                    std::thread::sleep(at(ms).saturating_duration_since(Instant::now()));
                    let starved = soak.starve(trouble)?;
                    std::thread::sleep(trouble.starves().map_or(FULL_FOR, |s| s.1));
                    let log = fs::read_to_string(soak.lab.dir.join(format!("server-{round}.log")))
                        .unwrap_or_default();
                    full_logged = log.contains(NOT_ACKING);
                    starved.undo()?;
                    // What the server said, so a run shows which error stopped it.
                    if let Some(line) = log.lines().find(|l| l.contains(NOT_ACKING)) {
                        let said = line.find("cannot record").map_or(line, |at| &line[at..]);
                        println!("          the server said: {said}");
                    }
                }
            }
            let got = finish_load(load, round)?;
            if trouble.starves().is_some() {
                // Before the kill: the server that had no room must answer every client
                // again (each ACK needs a journal append), which it does only if it serves on.
                let (c, text) = soak.check(&acks)?;
                if c.lost > 0 {
                    return Err(format!(
                        "round {round} (seed {seed}): after the journal had room again the server did not answer for {} ACKed leases:\n{text}",
                        c.lost
                    ));
                }
                soak.kill9(pid)?;
                pid = soak.start(backend(round + 1), &next_log)?;
            }
            let (c, text) = soak.check(&acks)?;
            let ack_text = fs::read_to_string(&acks).map_err(|e| e.to_string())?;
            append(&all_acks, &ack_text)?;
            (got, c, text, full_logged)
        };
        acks_seen += got;
        verified += c.kept;
        lost += c.lost;
        println!(
            "round {round:3} {:3}: {trouble}: {got} ACKs, {} leases asked for, {} kept, {} lost ({:.1} s)",
            backend(round),
            c.asked,
            c.kept,
            c.lost,
            t0.elapsed().as_secs_f64()
        );
        if c.lost > 0 {
            return Err(format!(
                "round {round} (seed {seed}): {} ACKed leases lost after the restart; the server logs are in {}:\n{text}",
                c.lost,
                soak.lab.dir.display()
            ));
        }
        if !full_logged {
            return Err(format!(
                "round {round}: {trouble}, and the server did not log \"{NOT_ACKING}\""
            ));
        }
        // The log of the server that died in this round is no longer needed.
        let _ = fs::remove_file(soak.lab.dir.join(format!("server-{round}.log")));
    }
    let (c, text) = soak.check(&all_acks)?;
    soak.kill9(pid)?;
    let count = |kind: fn(&Trouble) -> bool| moments.iter().filter(|t| kind(t)).count();
    let kills: Vec<String> = moments
        .iter()
        .map(|t| match t {
            Trouble::Kill(ms) => ms.to_string(),
            Trouble::DiskFull(ms) => format!("full@{ms}"),
            Trouble::ReadOnly(ms) => format!("ro@{ms}"),
            Trouble::Pair(ms, side) => format!("{}@{ms}", side.role()),
        })
        .collect();
    println!(
        "soak summary: {rounds} rounds in {:.0} s, seed {seed}: {acks_seen} ACKs seen, {verified} leases verified after their round's restart, {lost} lost; \
         at the end {} clients asked again, {} kept, {} lost\nrounds: {} kill, {} disk full, {} read-only, {} failover pair\nkill moments (ms into each round's load): {}",
        started.elapsed().as_secs_f64(),
        c.asked,
        c.kept,
        c.lost,
        count(|t| matches!(t, Trouble::Kill(_))),
        count(|t| matches!(t, Trouble::DiskFull(_))),
        count(|t| matches!(t, Trouble::ReadOnly(_))),
        count(|t| matches!(t, Trouble::Pair(..))),
        kills.join(" ")
    );
    if c.lost > 0 {
        return Err(format!(
            "at the end (seed {seed}), {} ACKed leases were lost:\n{text}",
            c.lost
        ));
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result {
    use std::io::Write;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}
