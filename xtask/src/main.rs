//! `cargo xtask`: the project's own automation. `setup` installs what the tests need on a
//! fresh machine (the eBPF toolchain included), `build-ebpf` builds the XDP program the
//! server embeds, `test` runs every test, `demo` shows the server handing leases to real
//! clients in a lab of network namespaces, `lab` manages that lab by hand, `bench` measures
//! the server against Kea and ISC dhcpd in it (`bench --failover`: a pair of ours against
//! one alone and a Kea HA pair; `bench --leasequery`: RFC 4388 leasequeries answered a
//! second, ours against ISC dhcpd; `bench --history`: ours with and without its lease
//! history in PostgreSQL and NATS); `soak` kills it at random moments under load and
//! checks that every lease it ACKed survives.

mod bench;
mod bench_history;
mod bench_lq;
mod bench_pair;
mod chart;
mod deb;
mod demo;
mod ebpf;
mod fuzz;
mod lab;
mod soak;

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project automation for dhcp-server")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the real clients and tools the tests use, and the eBPF toolchain, where
    /// missing (packages need root).
    Setup,
    /// Build the XDP program (dhcp-ebpf) into target/ebpf/, where the server's build finds it.
    BuildEbpf,
    /// Setup, then every test in the workspace.
    Test,
    /// The main job: a real server in a namespace lab handing leases to real clients.
    Demo,
    /// Build, remove or show the namespace lab (see xtask/src/lab.rs for the address plan).
    Lab {
        #[arg(value_enum)]
        action: LabAction,
    },
    /// Our server, Kea and ISC dhcpd side by side under the same load generator.
    Bench {
        /// A short run (under 2 minutes) for routine use and CI.
        #[arg(long)]
        quick: bool,
        /// The failover benchmark instead: one of ours alone, a load-balanced pair of
        /// ours and a Kea HA pair (and Kea alone), on one clients' link; writes
        /// target/bench/bench-failover.json.
        #[arg(long)]
        failover: bool,
        /// With --failover: every server process gets this share of one CPU (0.1 to 1,
        /// a cgroup quota), as if each ran on a machine of its own of that size.
        #[arg(long, requires = "failover")]
        cpu_per_server: Option<f64>,
        /// The leasequery benchmark instead: leasequeries by address answered a second
        /// (at least 99% of those offered) by ours, XDP and UDP, and ISC dhcpd, with
        /// 100,000 leases; writes target/bench/bench-leasequery.json.
        #[arg(long, conflicts_with = "failover")]
        leasequery: bool,
        /// The lease history benchmark instead: our server with and without every lease
        /// sent to PostgreSQL and NATS JetStream (started here), and how far behind the
        /// sinks fall; writes target/bench/bench-history.json.
        #[arg(long, conflicts_with_all = ["failover", "leasequery"])]
        history: bool,
    },
    /// The Debian package, checked by lintian: target/debian/dhcp-server_VERSION_ARCH.deb
    /// (see docs/packaging.md).
    Deb {
        /// Package this binary instead of building the release one (the package test
        /// packages the binary under test).
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
        /// The Debian version; default: the newest entry of packaging/changelog.
        #[arg(long)]
        version: Option<String>,
        /// Directory for the package; default: target/debian.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Skip lintian (the package test lints only its first build).
        #[arg(long)]
        no_lintian: bool,
    },
    /// The crash soak: SIGKILL at seeded random moments under load and a full disk,
    /// then every ACKed lease asked for again (see xtask/src/soak.rs).
    Soak {
        #[arg(long, default_value_t = 20)]
        rounds: u32,
        /// Replays the kill moments of an earlier run (it prints its seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Every fuzz target of dhcp-server/fuzz in turn from the committed seeds, then a
    /// table of executions, coverage and crashes (non-zero exit on any crash).
    Fuzz {
        /// Minutes in all, shared among the targets and the parallel jobs.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Targets fuzzed at once (one core each).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// First remake the seed corpus from real clients, relay and dhcpd in namespaces.
        #[arg(long)]
        capture: bool,
        /// Only these targets.
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LabAction {
    Up,
    Down,
    Status,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Task::Setup => setup(),
        Task::BuildEbpf => ebpf::build(),
        Task::Test => setup().and_then(|()| ebpf::build()).and_then(|()| test()),
        Task::Demo => setup()
            .and_then(|()| ebpf::build())
            .and_then(|()| demo::run()),
        Task::Lab {
            action: LabAction::Up,
        } => lab::up(),
        Task::Lab {
            action: LabAction::Down,
        } => {
            lab::down();
            Ok(())
        }
        Task::Lab {
            action: LabAction::Status,
        } => lab::status(),
        Task::Bench {
            quick,
            failover,
            cpu_per_server,
            leasequery,
            history,
        } => setup().and_then(|()| ebpf::build()).and_then(|()| {
            if failover {
                bench_pair::run(quick, cpu_per_server)
            } else if leasequery {
                bench_lq::run(quick)
            } else if history {
                bench_history::run(quick)
            } else {
                bench::run(quick)
            }
        }),
        Task::Deb {
            binary,
            version,
            out,
            no_lintian,
        } => {
            let opts = deb::Options {
                lintian: !no_lintian,
                binary,
                version,
                out,
            };
            // With a binary given, it is built already: only the packaging runs.
            if opts.binary.is_some() {
                deb::build(&opts)
            } else {
                setup()
                    .and_then(|()| ebpf::build())
                    .and_then(|()| deb::build(&opts))
            }
        }
        Task::Soak { rounds, seed } => setup()
            .and_then(|()| ebpf::build())
            .and_then(|()| soak::run(rounds, seed)),
        Task::Fuzz {
            minutes,
            jobs,
            capture,
            targets,
        } => fuzz::run(&fuzz::Options {
            minutes,
            jobs,
            capture,
            only: targets,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, String>;

/// Commands the tests run, and the Debian package that brings each.
const NEEDED: &[(&str, &str)] = &[
    ("dhclient", "isc-dhcp-client"),
    ("udhcpc", "udhcpc"),
    ("perfdhcp", "kea-admin"),
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    // The failover partner of the interop tests, and the source of real leases files.
    ("dhcpd", "isc-dhcp-server"),
    // The judge of the client-class differential test (dhcp-server/tests/classes_kea.rs).
    ("kea-dhcp4", "kea-dhcp4-server"),
    // A real relay inserting option 82 (dhcp-server/tests/relay.rs).
    ("dhcrelay", "isc-dhcp-relay"),
    // `promtool check metrics` lints the Prometheus exposition in the server's tests.
    ("promtool", "prometheus"),
    // Checks the Debian package (`cargo xtask deb`).
    ("lintian", "lintian"),
    // The engines lease history and events go to (tests start their own instances):
    // PostgreSQL's binaries live under /usr/lib/postgresql/<major>/bin, postgresql-common
    // puts pg_ctlcluster on the path.
    ("pg_ctlcluster", "postgresql"),
    ("nats-server", "nats-server"),
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a command with inherited output, failing on a non-zero status.
pub fn sh(cmd: &mut Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// Installs the missing packages. Idempotent: with everything present it does nothing.
fn setup() -> Result {
    ebpf::setup()?;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: not root, so not installing {}; namespace tests will be skipped",
            missing.join(" ")
        );
        return Ok(());
    }
    install(&missing)
}

/// Installs Debian packages that are not installed yet (needs root).
pub fn install(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    sh(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn test() -> Result {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(cargo).args(["test", "--workspace"]))
}
