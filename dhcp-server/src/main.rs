//! `dhcp-server`: the command line. Reads the configuration (a TOML file or the one-liner
//! flags), builds the engine and hands it to the chosen backend. Configuration errors exit
//! with status 2 and name what is wrong; nothing starts half-configured.

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use dhcp_server::config::{self, Backend, Config, QuickStart};
use dhcp_server::runtime::{self, clock::Clock, env::Env};
use dhcp_server::{journal, privileges, udp, xdp};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "A DHCPv4 server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve leases, from a configuration file or the quick-start flags.
    Run {
        /// TOML configuration file (see docs/configuration.md). Every setting comes from
        /// it: a quick-start flag beside it is refused rather than silently ignored.
        #[arg(long, short, conflicts_with_all = [
            "interface", "backend", "workers", "busy_poll", "pin_workers", "state_dir",
            "durability", "journal_segment_size", "control_socket", "metrics_listen",
            "authoritative",
        ])]
        config: Option<PathBuf>,
        /// Once its sockets are open, run as this user with no capabilities (as dhcpd's
        /// -user); the server must be started as root. Overrides `user` in the file.
        #[arg(long)]
        user: Option<String>,
        /// The group to run as with --user (default: the user's primary group).
        /// Overrides `group` in the file.
        #[arg(long, requires = "user")]
        group: Option<String>,
        #[command(flatten)]
        quick: QuickStart,
    },
    /// Inspect the lease journal in a state directory (safe beside a running server).
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Ask a running server over its control socket (see docs/control.md).
    Ctl(cli::ctl::CtlArgs),
    /// Ask a DHCP server (ours, dhcpd, any RFC 4388 server) about one address or client,
    /// as a relay or BNG would: DHCPLEASEQUERY from this host's port 67.
    Leasequery(cli::leasequery::LeasequeryArgs),
    /// Who had an address when, and which addresses a MAC or circuit id had, from the
    /// lease history in PostgreSQL; `history init` creates its tables.
    History(cli::history::HistoryArgs),
    /// Migrate an ISC dhcpd 4.x leases file into the journal of a state directory.
    ImportIsc {
        /// The dhcpd.leases file.
        #[arg(long)]
        leases: PathBuf,
        /// The state directory (not in use by a running server).
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Write the man pages and the bash, zsh and fish completions of this command line
    /// (used by `cargo xtask deb`; hidden, as it is a build step rather than operation).
    #[command(hide = true)]
    GenerateDocs(cli::docs::DocsArgs),
}

#[derive(Subcommand)]
enum JournalAction {
    /// Check every file: records, damage a restart would cut, leftovers.
    Verify {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Print the live leases and reservations, as JSON or as an ISC dhcpd.leases file.
    Dump {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, value_enum, default_value = "json")]
        format: DumpFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DumpFormat {
    Json,
    Isc,
}

/// Exit status for a configuration that cannot be used.
const CONFIG_ERROR: u8 = 2;

/// Replaces the log filter of the running subscriber.
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter_reloading();
    let handle = logs.reload_handle();
    let set_filter: SetFilter = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
    logs.init();
    match cli.command {
        Command::Run {
            config,
            user,
            group,
            quick,
        } => run(config, (user, group), quick, set_filter),
        Command::Journal {
            action: JournalAction::Verify { state_dir },
        } => match journal::verify(&state_dir) {
            Ok(report) => {
                print!("{report}");
                if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => tool_error(e),
        },
        Command::Journal {
            action: JournalAction::Dump { state_dir, format },
        } => {
            let format = match format {
                DumpFormat::Json => journal::Format::Json,
                DumpFormat::Isc => journal::Format::Isc,
            };
            let mut out = std::io::stdout().lock();
            journal::dump(&state_dir, format, &mut out)
                .map_or_else(tool_error, |()| ExitCode::SUCCESS)
        }
        Command::ImportIsc { leases, state_dir } => import_isc(&leases, &state_dir),
        Command::Ctl(args) => cli::ctl::run(args),
        Command::Leasequery(args) => cli::leasequery::run(args),
        Command::History(args) => cli::history::run(args),
        Command::GenerateDocs(args) => cli::docs::run(Cli::command(), &args),
    }
}

fn tool_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("dhcp-server: {e}");
    ExitCode::FAILURE
}

/// Appends every lease of the file to the state directory's journal and waits until it
/// is on disk. The journal keeps its shard count; the server redistributes at start.
fn import_isc(leases: &std::path::Path, dir: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(leases) {
        Ok(t) => t,
        Err(e) => return tool_error(format!("cannot read {}: {e}", leases.display())),
    };
    let opened = match journal::Journal::open(dir, &journal::Options::default()) {
        Ok(o) => o,
        Err(e) => return tool_error(e),
    };
    let mut writers = opened.writers;
    let first = (opened.state.max_stamp + 1).max(Clock::system().now() << 20);
    match journal::import_isc(&text, &mut writers[0], first) {
        Ok(stats) => {
            println!(
                "imported {} leases from {} into {}",
                stats.leases,
                leases.display(),
                dir.display()
            );
            drop(writers);
            drop(opened.journal);
            ExitCode::SUCCESS
        }
        Err(e) => tool_error(e),
    }
}

fn strings<E: ToString>(errs: Vec<E>) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

fn load(file: Option<PathBuf>, quick: &QuickStart) -> Result<Config, Vec<String>> {
    match (file, quick.to_config()) {
        (Some(path), _) => config::load_file(&path).map_err(strings),
        (None, Some(c)) => c.map_err(strings),
        (None, None) => Err(vec![
            "give --config FILE, or --interface with --subnet and --range".into(),
        ]),
    }
}

fn run(
    file: Option<PathBuf>,
    (user, group): (Option<String>, Option<String>),
    quick: QuickStart,
    set_filter: SetFilter,
) -> ExitCode {
    let mut config = match load(file.clone(), &quick) {
        Ok(c) => c,
        Err(errors) => return config_error(errors),
    };
    if user.is_some() {
        (config.user, config.group) = (user, group);
    }
    if let Err(errors) = config.policy.validate() {
        return config_error(strings(errors));
    }
    let mut env = Env {
        // A reload (control socket, SIGHUP) reads the same file; relative paths stay
        // right even if the working directory changes.
        config_file: file.map(|path| std::fs::canonicalize(&path).unwrap_or(path)),
        ..Env::default()
    };
    // RUST_LOG, when set, decides what is logged; otherwise the file's log-level does,
    // at start and at each reload.
    if std::env::var_os("RUST_LOG").is_none() {
        let apply =
            move |level: Option<&str>| set_filter(config::log_filter(level.unwrap_or("info"))?);
        if let Some(level) = &config.log_level {
            if let Err(e) = apply(Some(level)) {
                tracing::warn!("log-level '{level}' not applied: {e}");
            }
        }
        env.log_level = Some(std::sync::Arc::new(apply));
    }
    // Before any thread starts: each inherits the emptied bounding set. The runtime
    // switches to the user once its sockets are open.
    if let Some(user) = &config.user {
        let target = match privileges::Target::resolve(user, config.group.as_deref()) {
            Ok(t) => t,
            Err(e) => return config_error(vec![e.to_string()]),
        };
        if let Err(e) = target.prepare(config.state_dir.as_deref()) {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = env.stop.on_signals() {
        eprintln!("dhcp-server: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let backend = match backend(&config) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime::run(config, backend, env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The backend the configuration asks for; `auto` is XDP where it attaches, else the
/// kernel's UDP sockets.
fn backend(config: &Config) -> Result<Box<dyn runtime::Backend>, String> {
    let opts = xdp::Options {
        workers: config.workers,
        wait: if config.busy_poll {
            xdp::Wait::Spin
        } else {
            xdp::Wait::Poll
        },
        pin: config.pin_workers,
    };
    let udp = || {
        udp::Udp::open(config, udp::SERVER_PORT)
            .map(|u| Box::new(u) as Box<dyn runtime::Backend>)
            .map_err(|e| e.to_string())
    };
    match config.backend {
        Backend::Udp => udp(),
        Backend::Xdp => xdp::Xdp::attach(config, opts)
            .map(|x| Box::new(x) as Box<dyn runtime::Backend>)
            .map_err(|e| e.to_string()),
        Backend::Auto => match xdp::Xdp::attach(config, opts) {
            Ok(x) => Ok(Box::new(x)),
            Err(e) => {
                tracing::warn!("the xdp backend cannot start ({e}); using the udp backend");
                udp()
            }
        },
    }
}

fn config_error(errors: Vec<String>) -> ExitCode {
    for e in errors {
        eprintln!("dhcp-server: configuration error: {e}");
    }
    ExitCode::from(CONFIG_ERROR)
}
