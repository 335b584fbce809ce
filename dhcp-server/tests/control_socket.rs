//! The control socket end to end: `control::serve` in front of a fake `Server`, driven by
//! the real `dhcp-server ctl` binary and by raw clients speaking the line protocol.
//! Covers every command, errors that must not stall or kill the server (garbage,
//! oversized lines, a panicking or slow backend), 100 concurrent clients, idle clients,
//! the connection limit, peer credentials (as another uid when run as root), the
//! socket file's life cycle and the HTTP metrics listener.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhcp_proto::policy::{Subscriber, SubscriberKind};
use dhcp_server::control::{
    self, AccessList, BackendKind, ClassMember, ClientIdentity, ConfigStatus, ControlError,
    FailoverStatus, JournalStatus, Latency, Lease, LeaseFilter, LeasePage, LeaseState, MacAddr,
    MemberInfo, MemberPage, MemberQuery, Options, PageQuery, PoolStats, ReloadReport,
    ReservationCounts, ReservationInfo, ReservationPage, ReservationSpec, ServeError, Server,
    Source, Stats, Status, XdpAttach, XdpCopy, XdpStatus,
};
use dhcp_server::journal::Durability;
use serde_json::{json, Value};

/// The address whose lookup sleeps, to show a slow backend call stalls no one else.
const SLOW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 250);
/// The address whose lookup takes a moment, to be in flight when the server stops.
const SLOWISH: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 249);
/// The address whose deletion panics inside the backend.
const PANICS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 251);

/// A backend with five leases, 192.0.2.10 to .14, and a record of what it was asked.
struct Fake {
    leases: Mutex<Vec<Lease>>,
    reservations: Mutex<Vec<ReservationSpec>>,
    /// Run-time members of the one matching class, "line".
    members: Mutex<std::collections::BTreeSet<ClassMember>>,
    stopped: AtomicBool,
    /// Whether the fake has a failover partner (none unless a test says so).
    paired: AtomicBool,
    /// Failover commands it was asked, in order.
    failover_asked: Mutex<Vec<&'static str>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        let leases = (10..15)
            .map(|i| Lease {
                address: Ipv4Addr::new(192, 0, 2, i),
                subnet: "192.0.2.0/24".parse().unwrap(),
                state: LeaseState::Active,
                mac: Some(MacAddr([2, 0, 0, 0, 0, i])),
                client_id: (i == 12).then(|| "01:02:00:00:00:00:0c".parse().unwrap()),
                expires: Some(4_000_000_000),
                cltt: Some(1_700_000_000),
                reserved: false,
                shard: u16::from(i % 2),
                relay: None,
            })
            .collect();
        Arc::new(Self {
            leases: Mutex::new(leases),
            reservations: Mutex::new(Vec::new()),
            members: Mutex::default(),
            stopped: AtomicBool::new(false),
            paired: AtomicBool::new(false),
            failover_asked: Mutex::new(Vec::new()),
        })
    }

    fn set_state(&self, a: Ipv4Addr, state: Option<LeaseState>) -> Result<(), ControlError> {
        let mut leases = self.leases.lock().unwrap();
        let i = leases
            .iter()
            .position(|l| l.address == a)
            .ok_or_else(|| ControlError::NotFound(format!("no lease for {a}")))?;
        match state {
            Some(s) => leases[i].state = s,
            None => {
                leases.remove(i);
            }
        }
        Ok(())
    }
}

impl Server for Fake {
    fn status(&self) -> Status {
        Status {
            ready: true,
            version: "9.9.9".into(),
            uptime_secs: 3725,
            backend: BackendKind::Xdp,
            xdp: Some(XdpStatus {
                attach: XdpAttach::Driver,
                copy: XdpCopy::ZeroCopy,
            }),
            workers: 2,
            interfaces: vec!["veth-srv".into()],
            journal: Some(JournalStatus {
                dir: "/var/lib/dhcp-server".into(),
                durability: Durability::Sync,
                healthy: true,
                error: None,
            }),
            reservations: ReservationCounts {
                file: 2,
                control: self.reservations.lock().unwrap().len() as u64,
            },
            config: ConfigStatus {
                file: Some("/etc/dhcp-server.toml".into()),
                loaded: 1_700_000_000,
            },
            failover: self.paired.load(Ordering::SeqCst).then(|| FailoverStatus {
                name: "pair-1".into(),
                role: "primary".into(),
                local_state: "communications-interrupted".into(),
                local_stos: 1_700_000_000,
                peer_state: "normal".into(),
                peer_stos: 1_699_999_000,
                service: "not-cooperating".into(),
                connected: false,
                mclt: 3600,
                queued_updates: 4,
                unacked_updates: 0,
            }),
            history: Vec::new(),
        }
    }

    fn stats(&self) -> Result<Stats, ControlError> {
        let mut s = Stats::default();
        for shard in 0..2u16 {
            let mut e = dhcp_proto::engine::Stats::default();
            e.rx[1] = 100; // discover
            e.tx[2] = 99; // offer
            e.drops[4] = 1; // no-free-lease
            dhcp_server::runtime::operate::report::add_shard(&mut s, shard, &e);
        }
        s.pools.push(PoolStats {
            subnet: "192.0.2.0/24".parse().unwrap(),
            total: 200,
            free: 190,
            offered: 2,
            active: 5,
            declined: 3,
            partner: 0,
        });
        s.latency = Latency {
            samples: 198,
            p50_us: 31,
            p90_us: 45,
            p99_us: 80,
            p999_us: 120,
            max_us: 400,
        };
        Ok(s)
    }

    fn leases(&self, q: PageQuery) -> Result<LeasePage, ControlError> {
        if q.filter == Some(LeaseFilter::Address(SLOW)) {
            std::thread::sleep(Duration::from_secs(2));
        }
        if q.filter == Some(LeaseFilter::Address(SLOWISH)) {
            std::thread::sleep(Duration::from_millis(300));
        }
        let leases = self.leases.lock().unwrap();
        let matching: Vec<Lease> = leases
            .iter()
            .filter(|l| match &q.filter {
                None => true,
                Some(LeaseFilter::Address(a)) => l.address == *a,
                Some(LeaseFilter::Mac(m)) => l.mac == Some(*m),
                Some(LeaseFilter::ClientId(c)) => l.client_id.as_ref() == Some(c),
            })
            .filter(|l| q.cursor.is_none_or(|c| l.address > c))
            .cloned()
            .collect();
        let more = matching.len() > q.limit as usize;
        let page: Vec<Lease> = matching.into_iter().take(q.limit as usize).collect();
        Ok(LeasePage {
            next_cursor: if more {
                page.last().map(|l| l.address)
            } else {
                None
            },
            leases: page,
        })
    }

    fn reservation_add(&self, spec: ReservationSpec) -> Result<(), ControlError> {
        let mut r = self.reservations.lock().unwrap();
        if r.iter().any(|x| x.address == spec.address) {
            return Err(ControlError::Conflict(format!(
                "{} is already reserved",
                spec.address
            )));
        }
        r.push(spec);
        Ok(())
    }

    fn reservations(&self, q: PageQuery) -> Result<ReservationPage, ControlError> {
        let mut all: Vec<ReservationInfo> = self
            .reservations
            .lock()
            .unwrap()
            .iter()
            .map(|r| ReservationInfo {
                address: r.address,
                subnet: "192.0.2.0/24".parse().unwrap(),
                mac: match &r.client {
                    ClientIdentity::Mac(m) => Some(*m),
                    _ => None,
                },
                client_id: match &r.client {
                    ClientIdentity::ClientId(c) => Some(c.clone()),
                    _ => None,
                },
                subscriber: match &r.client {
                    ClientIdentity::Subscriber(k, v) => {
                        Some((k.name().to_owned(), Subscriber::format_value(v)))
                    }
                    _ => None,
                },
                host_name: r.host_name.clone(),
                source: Source::Control,
            })
            .filter(|r| q.cursor.is_none_or(|c| r.address > c))
            .filter(|r| match &q.filter {
                None => true,
                Some(LeaseFilter::Address(a)) => r.address == *a,
                Some(LeaseFilter::Mac(m)) => r.mac == Some(*m),
                Some(LeaseFilter::ClientId(c)) => r.client_id.as_ref() == Some(c),
            })
            .collect();
        all.sort_by_key(|r| r.address);
        let more = all.len() > q.limit as usize;
        all.truncate(q.limit as usize);
        Ok(ReservationPage {
            next_cursor: more.then(|| all.last().map(|r| r.address)).flatten(),
            reservations: all,
        })
    }

    fn reservation_del(&self, a: Ipv4Addr) -> Result<(), ControlError> {
        let mut r = self.reservations.lock().unwrap();
        let before = r.len();
        r.retain(|x| x.address != a);
        if r.len() == before {
            return Err(ControlError::NotFound(format!("no reservation for {a}")));
        }
        Ok(())
    }

    fn class_members(&self, q: MemberQuery) -> Result<MemberPage, ControlError> {
        let members = self.members.lock().unwrap();
        let all: Vec<&ClassMember> = members
            .iter()
            .filter(|m| q.class.as_ref().is_none_or(|c| m.class == *c))
            .filter(|m| q.cursor.as_ref().is_none_or(|c| *m > c))
            .collect();
        let more = all.len() > q.limit as usize;
        let page = &all[..all.len().min(q.limit as usize)];
        Ok(MemberPage {
            members: page
                .iter()
                .map(|m| MemberInfo::new(m, Source::Control))
                .collect(),
            next_cursor: more.then(|| page.last().map(|m| (*m).clone())).flatten(),
        })
    }

    fn class_member_add(&self, m: ClassMember) -> Result<(), ControlError> {
        if m.class != "line" {
            return Err(ControlError::NotFound(format!(
                "no class named '{}'",
                m.class
            )));
        }
        if !self.members.lock().unwrap().insert(m) {
            return Err(ControlError::Conflict("already a member".into()));
        }
        Ok(())
    }

    fn class_member_del(&self, m: ClassMember) -> Result<(), ControlError> {
        if !self.members.lock().unwrap().remove(&m) {
            return Err(ControlError::NotFound("not a member".into()));
        }
        Ok(())
    }

    fn lease_release(&self, a: Ipv4Addr) -> Result<(), ControlError> {
        self.set_state(a, Some(LeaseState::Released))
    }

    fn lease_delete(&self, a: Ipv4Addr) -> Result<(), ControlError> {
        assert_ne!(a, PANICS, "the fake backend panics on purpose");
        self.set_state(a, None)
    }

    fn reload(&self) -> Result<ReloadReport, ControlError> {
        Ok(ReloadReport {
            applied: vec!["subnet 192.0.2.0/24: lease-time 3600 -> 7200".into()],
            restart_required: vec!["workers 2 -> 4".into()],
        })
    }

    fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn failover_partner_down(&self) -> control::Pending<()> {
        if !self.paired.load(Ordering::SeqCst) {
            return control::no_partner();
        }
        self.failover_asked.lock().unwrap().push("partner-down");
        Box::pin(async { Ok(()) })
    }

    /// Answers "not connected" the first time, then never: a link that hangs.
    fn failover_resync(&self) -> control::Pending<()> {
        if !self.paired.load(Ordering::SeqCst) {
            return control::no_partner();
        }
        let mut asked = self.failover_asked.lock().unwrap();
        asked.push("resync");
        if asked.iter().filter(|a| **a == "resync").count() == 1 {
            return Box::pin(async {
                Err(ControlError::Unavailable(
                    "failover peer pair-1 is not connected".into(),
                ))
            });
        }
        Box::pin(std::future::pending())
    }
}

/// A directory removed when the test ends, open to every user so a test may connect
/// as another uid.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("dhcp-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(p)
    }
    fn sock(&self) -> PathBuf {
        self.0.join("control.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(name: &str, options: Options) -> (TempDir, control::Handle, Arc<Fake>) {
    let dir = TempDir::new(name);
    let fake = Fake::new();
    let handle = control::serve(&dir.sock(), options, fake.clone()).expect("serve");
    (dir, handle, fake)
}

fn ctl(sock: &Path, args: &[&str]) -> Output {
    ctl_command(sock, args)
        .output()
        .expect("run dhcp-server ctl")
}

fn ctl_command(sock: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dhcp-server"));
    c.arg("ctl").arg("--socket").arg(sock).args(args);
    c
}

/// Runs `ctl` and returns its stdout, failing the test on a non-zero exit.
fn ctl_ok(sock: &Path, args: &[&str]) -> String {
    let out = ctl(sock, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ctl_json(sock: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ctl_ok(sock, &all)).unwrap()
}

/// Runs `ctl` expecting failure; returns (stdout, stderr).
fn ctl_err(sock: &Path, args: &[&str]) -> (String, String) {
    let out = ctl(sock, args);
    assert_eq!(out.status.code(), Some(1), "ctl {args:?} should fail");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A raw protocol client.
struct Raw {
    rd: BufReader<UnixStream>,
}

impl Raw {
    fn connect(sock: &Path) -> Self {
        let s = UnixStream::connect(sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self {
            rd: BufReader::new(s),
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.rd.get_mut().write_all(bytes).unwrap();
    }
    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.rd.read_line(&mut line).expect("read reply");
        assert!(line.ends_with('\n'), "reply line {line:?}");
        serde_json::from_str(&line).unwrap()
    }
    fn ask(&mut self, request: Value) -> Value {
        self.send(format!("{request}\n").as_bytes());
        self.reply()
    }
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"]["code"].as_str().unwrap()
}

#[test]
fn status_stats_and_metrics_through_ctl() {
    let (dir, _h, _) = start("read", Options::default());
    let sock = dir.sock();

    let table = ctl_ok(&sock, &["status"]);
    assert!(table.contains("ready       yes"), "{table}");
    assert!(table.contains("xdp (driver, zero-copy)"), "{table}");
    assert!(table.contains("1h 2m 5s"), "{table}");
    assert!(
        table.contains("/var/lib/dhcp-server (sync, healthy)"),
        "{table}"
    );
    let status = ctl_json(&sock, &["status"]);
    assert_eq!(status["ready"], true);
    assert_eq!(status["backend"], "xdp");
    assert_eq!(status["journal"]["durability"], "sync");

    let table = ctl_ok(&sock, &["stats"]);
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("discover"), ["discover", "200", "0"]);
    assert_eq!(row("offer"), ["offer", "0", "198"]);
    assert_eq!(row("no-free-lease"), ["no-free-lease", "2"]);
    assert_eq!(
        row("192.0.2.0/24"),
        ["192.0.2.0/24", "200", "190", "2", "5", "3", "0", "5.0%"]
    );
    assert_eq!(
        row("198 samples"),
        ["198", "samples", "31", "45", "80", "120", "400"]
    );
    let stats = ctl_json(&sock, &["stats"]);
    assert_eq!(stats["received"]["discover"], 200);
    assert_eq!(stats["shards"][1]["sent"], 99);
    assert_eq!(stats["latency"]["p999_us"], 120);

    let metrics = ctl_ok(&sock, &["metrics"]);
    assert!(
        metrics.contains("dhcp_messages_received_total{type=\"discover\"} 200\n"),
        "{metrics}"
    );
    assert!(metrics.contains("dhcp_pool_addresses{subnet=\"192.0.2.0/24\",state=\"declined\"} 3\n"));
    let m = ctl_json(&sock, &["metrics"]);
    assert_eq!(m["content_type"], control::metrics::CONTENT_TYPE);
    assert_eq!(m["text"].as_str().unwrap(), metrics);
}

#[test]
fn failover_commands_without_a_partner() {
    let (dir, _h, fake) = start("no-partner", Options::default());
    let sock = dir.sock();

    let status = ctl_json(&sock, &["status"]);
    assert!(status.get("failover").is_none(), "{status}");
    assert!(!ctl_ok(&sock, &["status"]).contains("failover"));
    assert!(!ctl_ok(&sock, &["metrics"]).contains("dhcp_failover_"));
    for (cmd, wire) in [
        ("partner-down", "failover-partner-down"),
        ("resync", "failover-resync"),
    ] {
        let (out, err) = ctl_err(&sock, &[cmd]);
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("unsupported: no failover partner configured"),
            "{err}"
        );
        let (out, _) = ctl_err(&sock, &["--json", cmd]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"code": "unsupported", "message": "no failover partner configured"})
        );
        let mut raw = Raw::connect(&sock);
        let reply = raw.ask(json!({"version": 1, "id": "f", "command": wire}));
        assert_eq!(error_code(&reply), "unsupported");
        assert_eq!(reply["id"], "f");
        let reply = raw.ask(json!({"version": 1, "command": wire, "force": true}));
        assert_eq!(error_code(&reply), "invalid-argument");
    }
    assert!(fake.failover_asked.lock().unwrap().is_empty());
}

#[test]
fn failover_status_and_commands_through_ctl() {
    let (dir, _h, fake) = start("partner", Options::default());
    fake.paired.store(true, Ordering::SeqCst);
    let sock = dir.sock();

    let status = ctl_json(&sock, &["status"]);
    let f = &status["failover"];
    assert_eq!(f["name"], "pair-1");
    assert_eq!(f["role"], "primary");
    assert_eq!(f["local_state"], "communications-interrupted");
    assert_eq!(f["local_stos"], 1_700_000_000u64);
    assert_eq!(f["peer_state"], "normal");
    assert_eq!(f["peer_stos"], 1_699_999_000u64);
    assert_eq!(f["service"], "not-cooperating");
    assert_eq!(f["connected"], false);
    assert_eq!(f["mclt"], 3600);
    assert_eq!(f["queued_updates"], 4);
    assert_eq!(f["unacked_updates"], 0);
    let table = ctl_ok(&sock, &["status"]);
    assert!(
        table.contains("failover    pair-1 (primary): not-cooperating"),
        "{table}"
    );
    assert!(
        table.contains("  local     communications-interrupted for "),
        "{table}"
    );
    assert!(
        table.contains("  link      NOT CONNECTED, mclt 1h 0m 0s"),
        "{table}"
    );
    assert!(table.contains("  updates   4 queued, 0 unacked"), "{table}");
    let metrics = ctl_ok(&sock, &["metrics"]);
    assert!(
        metrics.contains("dhcp_failover_state{side=\"local\"} 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("dhcp_failover_queued_updates 4\n"));

    assert_eq!(
        ctl_ok(&sock, &["partner-down"]),
        "partner declared down: this server moves to partner-down\n"
    );
    assert_eq!(ctl_json(&sock, &["partner-down"]), json!({}));
    let (_, err) = ctl_err(&sock, &["resync"]);
    assert!(
        err.contains("unavailable: failover peer pair-1 is not connected"),
        "{err}"
    );
    // A link that never answers: the client gets `unavailable` after a bounded wait,
    // and the server goes on answering others meanwhile.
    let started = Instant::now();
    let hung = std::thread::spawn({
        let sock = sock.clone();
        move || ctl_err(&sock, &["resync"])
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ctl_json(&sock, &["status"])["ready"], true);
    let (_, err) = hung.join().unwrap();
    assert!(
        err.contains("unavailable: 'failover-resync' got no answer in time"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        *fake.failover_asked.lock().unwrap(),
        ["partner-down", "partner-down", "resync", "resync"]
    );
}

#[test]
fn leases_lookups_and_paging_through_ctl() {
    let (dir, _h, _) = start("leases", Options::default());
    let sock = dir.sock();

    let one = ctl_json(&sock, &["leases", "--address", "192.0.2.11"]);
    assert_eq!(one["leases"].as_array().unwrap().len(), 1);
    assert_eq!(one["leases"][0]["mac"], "02:00:00:00:00:0b");
    assert_eq!(one["next_cursor"], Value::Null);
    let by_mac = ctl_json(&sock, &["leases", "--mac", "02-00-00-00-00-0D"]);
    assert_eq!(by_mac["leases"][0]["address"], "192.0.2.13");
    let by_id = ctl_json(&sock, &["leases", "--client-id", "0102000000000c"]);
    assert_eq!(by_id["leases"][0]["address"], "192.0.2.12");

    let page = ctl_json(&sock, &["leases", "--limit", "2"]);
    assert_eq!(page["leases"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], "192.0.2.11");
    let page = ctl_json(&sock, &["leases", "--limit", "2", "--cursor", "192.0.2.11"]);
    assert_eq!(page["leases"][0]["address"], "192.0.2.12");
    let all = ctl_json(&sock, &["leases", "--limit", "2", "--all"]);
    assert_eq!(all["leases"].as_array().unwrap().len(), 5);
    assert_eq!(all["next_cursor"], Value::Null);

    let table = ctl_ok(&sock, &["leases", "--limit", "3"]);
    assert_eq!(table.lines().count(), 1 + 3 + 1, "{table}");
    assert!(table.starts_with("ADDRESS"), "{table}");
    assert!(
        table.contains("192.0.2.12  active  02:00:00:00:00:0c  01:02:00:00:00:00:0c"),
        "{table}"
    );
    assert!(
        table.ends_with("more: --cursor 192.0.2.12 (or --all)\n"),
        "{table}"
    );

    // Bad arguments are refused before a request is sent (clap exits 2).
    let out = ctl(&sock, &["leases", "--mac", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(&sock, &["leases", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(
        &sock,
        &[
            "leases",
            "--address",
            "192.0.2.1",
            "--mac",
            "02:00:00:00:00:01",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn class_members_through_ctl() {
    let (dir, _h, fake) = start("members", Options::default());
    let sock = dir.sock();
    assert_eq!(
        ctl_ok(&sock, &["class-member", "add", "line", "port-7"]),
        "class member added\n"
    );
    ctl_ok(&sock, &["class-member", "add", "line", "--hex", "00:ff:01"]);
    ctl_ok(&sock, &["class-member", "add", "line", "port-8"]);
    assert!(fake.members.lock().unwrap().contains(&ClassMember {
        class: "line".into(),
        value: vec![0, 0xff, 1],
    }));
    let (out, err) = ctl_err(&sock, &["--json", "class-member", "add", "line", "port-7"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["code"],
        "conflict"
    );
    assert!(err.contains("conflict: already a member"), "{err}");
    let (_, err) = ctl_err(&sock, &["class-member", "add", "nope", "x"]);
    assert!(err.contains("not-found: no class named 'nope'"), "{err}");
    // Bad hex is refused by ctl itself, before any request.
    let out = ctl(&sock, &["class-member", "add", "line", "--hex", "0g"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    assert_eq!(
        ctl_ok(&sock, &["class-members", "--limit", "2"]),
        "CLASS  VALUE     HEX                SOURCE\n\
         line   00:ff:01  00:ff:01           control\n\
         line   port-7    70:6f:72:74:2d:37  control\n\
         more: --cursor line/70:6f:72:74:2d:37 (or --all)\n"
    );
    let next = ctl_json(
        &sock,
        &[
            "class-members",
            "line",
            "--cursor",
            "line/70:6f:72:74:2d:37",
        ],
    );
    assert_eq!(next["members"][0]["value"], "port-8");
    assert_eq!(next["members"][0]["source"], "control");
    assert_eq!(next["next_cursor"], Value::Null);
    let all = ctl_json(&sock, &["class-members", "--limit", "1", "--all"]);
    assert_eq!(all["members"].as_array().unwrap().len(), 3);
    assert!(ctl_json(&sock, &["class-members", "other"])["members"]
        .as_array()
        .unwrap()
        .is_empty());

    assert_eq!(
        ctl_ok(&sock, &["class-member", "del", "line", "port-7"]),
        "class member removed\n"
    );
    let (_, err) = ctl_err(&sock, &["class-member", "del", "line", "port-7"]);
    assert!(err.contains("not-found"), "{err}");
    let out = ctl(&sock, &["class-members", "--cursor", "no-slash"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn changes_through_ctl() {
    let (dir, h, fake) = start("changes", Options::default());
    let sock = dir.sock();

    assert_eq!(
        ctl_ok(
            &sock,
            &[
                "reservation-add",
                "--address",
                "192.0.2.50",
                "--mac",
                "02:aa:00:00:00:01",
                "--host-name",
                "printer"
            ]
        ),
        "reservation added\n"
    );
    ctl_ok(
        &sock,
        &[
            "reservation-add",
            "--address",
            "192.0.2.51",
            "--client-id",
            "01:02:03",
        ],
    );
    ctl_ok(
        &sock,
        &[
            "reservation-add",
            "--address",
            "192.0.2.52",
            "--circuit-id",
            "olt-1/1/7",
        ],
    );
    {
        let r = fake.reservations.lock().unwrap();
        assert_eq!(
            r[0].client,
            ClientIdentity::Mac(MacAddr([2, 0xaa, 0, 0, 0, 1]))
        );
        assert_eq!(r[0].host_name.as_deref(), Some("printer"));
        assert_eq!(
            r[1].client,
            ClientIdentity::ClientId("010203".parse().unwrap())
        );
        assert_eq!(
            r[2].client,
            ClientIdentity::Subscriber(SubscriberKind::CircuitId, b"olt-1/1/7".to_vec())
        );
    }
    let (out, err) = ctl_err(
        &sock,
        &[
            "--json",
            "reservation-add",
            "--address",
            "192.0.2.50",
            "--mac",
            "02:aa:00:00:00:02",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["code"],
        "conflict"
    );
    assert!(
        err.contains("conflict: 192.0.2.50 is already reserved"),
        "{err}"
    );
    let table = ctl_ok(&sock, &["reservations"]);
    assert_eq!(
        table,
        "ADDRESS     MAC                CLIENT-ID  SUBSCRIBER            HOST-NAME  SOURCE   SUBNET\n\
         192.0.2.50  02:aa:00:00:00:01  -          -                     printer    control  192.0.2.0/24\n\
         192.0.2.51  -                  01:02:03   -                     -          control  192.0.2.0/24\n\
         192.0.2.52  -                  -          circuit-id olt-1/1/7  -          control  192.0.2.0/24\n"
    );
    let page = ctl_json(&sock, &["reservations", "--limit", "1"]);
    assert_eq!(page["reservations"][0]["address"], "192.0.2.50");
    assert_eq!(page["reservations"][0]["source"], "control");
    assert_eq!(page["next_cursor"], "192.0.2.50");
    let all = ctl_json(&sock, &["reservations", "--limit", "1", "--all"]);
    assert_eq!(all["reservations"][1]["client_id"], "01:02:03");
    let one = ctl_json(&sock, &["reservations", "--client-id", "010203"]);
    assert_eq!(one["reservations"][0]["address"], "192.0.2.51");
    let status = ctl_ok(&sock, &["status"]);
    assert!(
        status.contains("reserved    2 in the file, 3 at run time"),
        "{status}"
    );
    assert!(
        status.contains("config      /etc/dhcp-server.toml (loaded "),
        "{status}"
    );
    assert_eq!(
        ctl_ok(&sock, &["reservation-del", "--address", "192.0.2.50"]),
        "reservation removed\n"
    );
    let (_, err) = ctl_err(&sock, &["reservation-del", "--address", "192.0.2.50"]);
    assert!(err.contains("not-found"), "{err}");

    assert_eq!(
        ctl_ok(&sock, &["lease-release", "--address", "192.0.2.10"]),
        "lease released\n"
    );
    assert_eq!(
        ctl_json(&sock, &["leases", "--address", "192.0.2.10"])["leases"][0]["state"],
        "released"
    );
    assert_eq!(
        ctl_ok(&sock, &["lease-delete", "--address", "192.0.2.10"]),
        "lease deleted\n"
    );
    assert_eq!(
        ctl_json(&sock, &["leases", "--address", "192.0.2.10"])["leases"],
        json!([])
    );

    let reload = ctl_ok(&sock, &["reload"]);
    assert!(
        reload.contains("applied: subnet 192.0.2.0/24: lease-time 3600 -> 7200"),
        "{reload}"
    );
    assert!(
        reload.contains("needs a restart (not applied): workers 2 -> 4"),
        "{reload}"
    );
    assert_eq!(
        ctl_json(&sock, &["reload"])["restart_required"][0],
        "workers 2 -> 4"
    );

    assert!(!fake.stopped.load(Ordering::SeqCst));
    assert_eq!(ctl_ok(&sock, &["shutdown"]), "server is stopping\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fake.stopped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "shutdown never reached the backend"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(h);
}

#[test]
fn top_prints_rates_from_successive_stats() {
    let (dir, _h, _) = start("top", Options::default());
    let sock = dir.sock();
    let out = ctl_ok(
        &sock,
        &["--json", "top", "--count", "2", "--interval", "0.2"],
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["rates"], Value::Null);
    assert_eq!(lines[1]["rates"]["received"]["discover"], 0.0);
    assert_eq!(lines[1]["stats"]["received"]["discover"], 200);

    let started = Instant::now();
    let table = ctl_ok(&sock, &["top", "--count", "3", "--interval", "0.1"]);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        table
            .matches("dhcp-server 9.9.9  xdp  2 workers  up 1h 2m 5s  ready")
            .count(),
        3,
        "{table}"
    );
    assert!(table.contains("no-free-lease"), "{table}");
    assert!(table.contains("USED"), "{table}");
}

#[test]
fn garbage_and_oversized_lines_get_errors_and_the_connection_goes_on() {
    let (dir, _h, _) = start("garbage", Options::default());
    let mut c = Raw::connect(&dir.sock());
    c.send(b"this is not json\n");
    assert_eq!(error_code(&c.reply()), "malformed-request");
    c.send(b"\n");
    assert_eq!(error_code(&c.reply()), "malformed-request");
    c.send(b"\xff\x00\xfe{\n");
    assert_eq!(error_code(&c.reply()), "malformed-request");
    let r = c.ask(json!({"version": 1, "id": "u", "command": "frobnicate"}));
    assert_eq!(error_code(&r), "unknown-command");
    assert_eq!(r["id"], "u");
    assert_eq!(
        error_code(&c.ask(json!({"version": 7, "command": "status"}))),
        "unsupported-version"
    );
    assert_eq!(
        error_code(&c.ask(json!({"version": 1, "command": "leases", "limit": 5000}))),
        "invalid-argument"
    );
    let r =
        c.ask(json!({"version": 1, "id": 3, "command": "lease-release", "address": "203.0.113.1"}));
    assert_eq!(error_code(&r), "not-found");
    assert_eq!(r["id"], 3);

    // A megabyte without a newline: one error as soon as the cap is passed, the rest
    // skipped, and the next request answered normally.
    let mut big = vec![b'x'; 1 << 20];
    big.push(b'\n');
    c.send(&big);
    assert_eq!(error_code(&c.reply()), "line-too-long");
    let r = c.ask(json!({"version": 1, "id": 4, "command": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 4);
    assert_eq!(r["version"], 1);

    // Pipelined requests are answered in order.
    c.send(b"{\"version\":1,\"id\":10,\"command\":\"status\"}\n{\"version\":1,\"id\":11,\"command\":\"stats\"}\n");
    assert_eq!(c.reply()["id"], 10);
    assert_eq!(c.reply()["id"], 11);
}

#[test]
fn a_panicking_backend_call_is_an_error_for_its_caller_only() {
    let (dir, _h, _) = start("panic", Options::default());
    let mut c = Raw::connect(&dir.sock());
    let r = c.ask(json!({"version": 1, "command": "lease-delete", "address": PANICS.to_string()}));
    assert_eq!(error_code(&r), "internal");
    assert_eq!(
        c.ask(json!({"version": 1, "command": "status"}))["ok"],
        true
    );
}

#[test]
fn a_slow_backend_call_and_idle_clients_block_no_one() {
    let options = Options {
        idle_timeout: Duration::from_millis(500),
        ..Options::default()
    };
    let (dir, _h, _) = start("idle", options);
    let sock = dir.sock();
    let mut silent = Raw::connect(&sock);
    let mut half = Raw::connect(&sock);
    half.send(b"{\"version\":1,\"comm");
    let mut slow = Raw::connect(&sock);
    slow.send(
        format!(
            "{}\n",
            json!({"version": 1, "command": "leases", "address": SLOW.to_string()})
        )
        .as_bytes(),
    );

    let started = Instant::now();
    let out = ctl_ok(&sock, &["--json", "status"]);
    assert!(out.contains("\"ready\": true"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "status took {:?}",
        started.elapsed()
    );

    assert_eq!(slow.reply()["ok"], true);
    // The idle timeout closes both silent connections: EOF, no reply.
    for c in [&mut silent, &mut half] {
        let mut rest = Vec::new();
        c.rd.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

#[test]
fn a_hundred_concurrent_clients() {
    let (dir, _h, _) = start("hundred", Options::default());
    let sock = dir.sock();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(&sock);
                for n in 0..5 {
                    let id = i * 10 + n;
                    let command = ["status", "stats", "metrics", "leases", "reload"][n as usize];
                    let r = c.ask(json!({"version": 1, "id": id, "command": command}));
                    assert_eq!(r["ok"], true, "{r}");
                    assert_eq!(r["id"], id);
                }
            })
        })
        .collect();
    // A few real ctl processes among them.
    for _ in 0..5 {
        ctl_ok(&sock, &["stats"]);
    }
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn connections_beyond_the_limit_are_told_busy() {
    let options = Options {
        max_connections: 2,
        ..Options::default()
    };
    let (dir, _h, _) = start("busy", options);
    let sock = dir.sock();
    let mut a = Raw::connect(&sock);
    let mut b = Raw::connect(&sock);
    // Both admitted: each has had an answer.
    assert_eq!(
        a.ask(json!({"version": 1, "command": "status"}))["ok"],
        true
    );
    assert_eq!(
        b.ask(json!({"version": 1, "command": "status"}))["ok"],
        true
    );
    let (_, err) = ctl_err(&sock, &["status"]);
    assert!(err.contains("busy"), "{err}");
    drop(a);
    // The freed slot is reused once the server notices the hang-up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ctl(&sock, &["status"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn socket_file_life_cycle() {
    let dir = TempDir::new("lifecycle");
    let sock = dir.sock();

    // A stale socket (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let h = control::serve(&sock, Options::default(), Fake::new()).expect("replaces stale socket");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    ctl_ok(&sock, &["status"]);

    // A live one is not.
    match control::serve(&sock, Options::default(), Fake::new()) {
        Err(ServeError::InUse(p)) => assert_eq!(p, sock),
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("a second server took over a live socket"),
    }
    ctl_ok(&sock, &["status"]);

    drop(h);
    assert!(!sock.exists(), "socket file left behind");
    let (_, err) = ctl_err(&sock, &["status"]);
    assert!(err.contains("no control socket"), "{err}");

    // Something that is not a socket is never removed.
    std::fs::write(&sock, b"precious").unwrap();
    assert!(matches!(
        control::serve(&sock, Options::default(), Fake::new()),
        Err(ServeError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
    std::fs::remove_file(&sock).unwrap();

    // A missing parent directory is created.
    let nested = dir.0.join("run/dhcp-server/control.sock");
    let h = control::serve(&nested, Options::default(), Fake::new()).unwrap();
    assert_eq!(h.path(), nested);
    h.stop();
    assert!(!nested.exists());
}

#[test]
fn stopping_answers_requests_in_flight_and_closes_idle_connections() {
    let (dir, h, _) = start("stop", Options::default());
    let mut idle = Raw::connect(&dir.sock());
    let mut busy = Raw::connect(&dir.sock());
    let request =
        json!({"version": 1, "id": 1, "command": "leases", "address": SLOWISH.to_string()});
    busy.send(format!("{request}\n").as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    drop(h);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(!dir.sock().exists());
    let r = busy.reply();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 1);
    let mut rest = Vec::new();
    idle.rd.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The unprivileged user tests connect as.
const NOBODY: u32 = 65534;

#[test]
fn peers_are_checked_against_the_access_list() {
    if !is_root() {
        eprintln!("skipped: connecting as another uid needs root");
        return;
    }
    let (dir, h, _) = start("peer", Options::default());
    let sock = dir.sock();
    let as_nobody = |sock: &Path| {
        // std drops the supplementary groups when root changes uid.
        let out = ctl_command(sock, &["status"])
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Mode 0660 keeps others from connecting at all.
    let (code, err) = as_nobody(&sock);
    assert_eq!(code, Some(1));
    assert!(err.contains("may not connect"), "{err}");

    // With the file opened up, SO_PEERCRED still refuses a uid not on the list.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = as_nobody(&sock);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("permission-denied: uid 65534 gid 65534"),
        "{err}"
    );
    drop(h);

    // Listed by uid, or by group, it is let in.
    for access in [
        AccessList {
            uids: vec![NOBODY],
            gids: vec![],
        },
        AccessList {
            uids: vec![],
            gids: vec![NOBODY],
        },
    ] {
        let fake = Fake::new();
        let options = Options {
            access,
            ..Options::default()
        };
        let h = control::serve(&sock, options, fake).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (code, err) = as_nobody(&sock);
        assert_eq!(code, Some(0), "{err}");
        drop(h);
    }
}

/// Moves the calling thread into a network namespace of its own with 192.0.2.1 on its
/// loopback, so a listener the test opens touches no address of the host. The control
/// server's threads, spawned from this one, start in it too.
fn private_loopback() {
    // SAFETY: unshare only changes this thread's namespace; no memory is involved.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", "192.0.2.1/32", "dev", "lo"],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
}

#[test]
fn http_metrics_listener() {
    if !is_root() {
        eprintln!("skipped: the metrics listener test needs root for a network namespace");
        return;
    }
    private_loopback();
    let options = Options {
        metrics_listen: Some("192.0.2.1:0".parse().unwrap()),
        // The scraper connects from 192.0.2.1, outside the default (loopback only).
        metrics_allow: vec!["192.0.2.1".parse().unwrap()],
        ..Options::default()
    };
    let (_dir, h, _) = start("http", options);
    let addr = h.metrics_addr().expect("metrics address");
    let get = |request: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains("Content-Type: text/plain; version=0.0.4"),
        "{ok}"
    );
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), len);
    assert!(body.contains("dhcp_ready 1\n"), "{body}");
    // An HTTP/1.0 client is answered in its own version.
    assert!(get("GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200 OK"));
    assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert!(get(&huge).starts_with("HTTP/1.1 431"));
}
