//! A throwaway PostgreSQL 15 for tests (and the history benchmark, which includes this
//! file): `initdb` in a temporary directory, the server run as the unprivileged
//! `postgres` user (it refuses root) listening only on a Unix socket in that directory,
//! no TCP. Stopped and removed on drop, panics included; every wait is bounded.
//!
//! Switching user needs root. Without it `Postgres::start` prints why the test is skipped
//! and returns `None`; under CI (CI set) a skip is a failure, as with the Lab.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Debian's `postgresql` package (PostgreSQL 15).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Postgres {
    pub dir: PathBuf,
    server: Child,
}

/// A command run as the `postgres` user (setpriv execs, so a child's pid is the
/// program's own, and signals reach it).
fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
        program,
    ]);
    c
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Postgres {
    /// Starts a cluster with `settings` (postgresql.conf lines) added to small defaults.
    pub fn start(test: &str, settings: &[&str]) -> Option<Postgres> {
        if !is_root() || !PathBuf::from(BIN).join("postgres").is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: needs root and PostgreSQL 15, which CI must have (run `cargo xtask setup`)"
            );
            eprintln!("{test}: skipped: needs root (to run PostgreSQL as its own user) and {BIN}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("dhcp-pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let chown = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success(), "chown {}", dir.display());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let out = as_postgres(&format!("{BIN}/initdb"))
            .args(["-D", data.to_str().unwrap()])
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\n\
             shared_buffers = 32MB\nmax_connections = 20\n\
             fsync = off\nfull_page_writes = off\nmax_wal_size = 1GB\n\
             log_min_messages = warning\n",
            dir.display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let server = Self::spawn(&dir);
        let pg = Postgres { dir, server };
        pg.wait_ready(Duration::from_secs(30));
        Some(pg)
    }

    /// The postmaster on the cluster in `dir`, logging to `server.log` there (appended).
    fn spawn(dir: &Path) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        as_postgres(&format!("{BIN}/postgres"))
            .args(["-D", dir.join("data").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Stops the server as an operator's `pg_ctl stop -m fast` would (connections are
    /// cut, transactions rolled back), keeping the cluster for `start_again`.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("PostgreSQL did not stop:\n{}", self.log());
    }

    /// Starts the stopped server again on the same cluster.
    pub fn start_again(&mut self) {
        self.server = Self::spawn(&self.dir);
        self.wait_ready(Duration::from_secs(30));
    }

    fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = Command::new(format!("{BIN}/pg_isready"))
                .args(["-q", "-h", self.dir.to_str().unwrap(), "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not ready after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The lease history's spans (`lease_span`), by address: the hardware address as
    /// `aa:bb:...` and how many spans the address has.
    pub fn spans(&self) -> HashMap<Ipv4Addr, (String, usize)> {
        let mut out: HashMap<Ipv4Addr, (String, usize)> = HashMap::new();
        let rows = self.psql("SELECT host(address), encode(hw, 'hex') FROM lease_span");
        for row in rows.lines().filter(|l| !l.is_empty()) {
            let (addr, hw) = row.split_once('|').expect(row);
            let hw = hw
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(":");
            out.entry(addr.parse().expect(row)).or_insert((hw, 0)).1 += 1;
        }
        out
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// The connection string of the `postgres` database.
    pub fn url(&self) -> String {
        format!("host={} user=postgres dbname=postgres", self.dir.display())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` with psql, bounded to a minute; its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("timeout")
            .args([
                "60",
                &format!("{BIN}/psql"),
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-U",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// A psql session kept open, fed statements one by one (to hold a lock across a
    /// test's steps); ended on drop.
    pub fn session(&self) -> Session {
        let child = Command::new(format!("{BIN}/psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", self.dir.to_str().unwrap(), "-U", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Session { child }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: nothing in a test cluster needs saving.
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        if !std::thread::panicking() {
            // The postmaster's children may still be closing files as it exits, which can
            // make a removal fail on a directory they wrote into: try again, a few times.
            for _ in 0..20 {
                if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            eprintln!("PostgreSQL log kept in {}", self.dir.display());
        }
    }
}

pub struct Session {
    child: Child,
}

impl Session {
    pub fn send(&mut self, sql: &str) {
        let stdin: &mut ChildStdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
