//! `dhcp-server`: the command line. Reads the configuration (a TOML file or the one-liner
//! flags), builds the engine and hands it to the chosen backend. Configuration errors exit
//! with status 2 and name what is wrong; nothing starts half-configured.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dhcp_server::config::{self, Backend, Config, QuickStart};
use dhcp_server::{shutdown, udp, xdp};

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
        /// TOML configuration file (see docs/configuration.md).
        #[arg(long, short, conflicts_with = "interface")]
        config: Option<PathBuf>,
        #[command(flatten)]
        quick: QuickStart,
    },
}

/// Exit status for a configuration that cannot be used.
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Run { config, quick } => run(config, quick),
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

fn run(file: Option<PathBuf>, quick: QuickStart) -> ExitCode {
    let config = match load(file, &quick) {
        Ok(c) => c,
        Err(errors) => return config_error(errors),
    };
    if let Err(errors) = config.validate() {
        return config_error(strings(errors));
    }
    if let Err(e) = shutdown::install() {
        eprintln!("dhcp-server: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let opts = xdp::Options {
        workers: config.workers,
        wait: if config.busy_poll {
            xdp::Wait::Spin
        } else {
            xdp::Wait::Poll
        },
        pin: config.pin_workers,
    };
    let result = match config.backend {
        Backend::Udp => serve_udp(config),
        Backend::Xdp => xdp::serve(config, opts, udp::unix_now).map_err(|e| e.to_string()),
        Backend::Auto => match xdp::serve(config.clone(), opts, udp::unix_now) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("the xdp backend cannot start ({e}); using the udp backend");
                serve_udp(config)
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_udp(config: Config) -> Result<(), String> {
    udp::serve(config, udp::SERVER_PORT).map_err(|e| e.to_string())
}

fn config_error(errors: Vec<String>) -> ExitCode {
    for e in errors {
        eprintln!("dhcp-server: configuration error: {e}");
    }
    ExitCode::from(CONFIG_ERROR)
}
