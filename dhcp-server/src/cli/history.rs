//! `dhcp-server history`: the operator's questions to the lease history in PostgreSQL
//! (who had an address at a time; which addresses a MAC or a circuit id had over a
//! period), and `history init`, which creates or migrates its schema before the first
//! server writes. The database comes from `--url` or from `[history.postgres]` of a
//! configuration file.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use dhcp_proto::policy::Subscriber;
use dhcp_server::calendar::parse_utc;
use dhcp_server::control::MacAddr;
use dhcp_server::history::postgres::{self, format_spans, Span};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: Option<HistoryCommand>,
    #[command(flatten)]
    pub database: Database,
    /// Who had this address (with --at).
    #[arg(long, requires = "at", conflicts_with_all = ["mac", "circuit_id"])]
    pub address: Option<Ipv4Addr>,
    /// When, in UTC: `YYYY-MM-DD HH:MM[:SS]`, `YYYY-MM-DDTHH:MM:SSZ` or seconds since
    /// the epoch.
    #[arg(long, value_parser = time)]
    pub at: Option<u64>,
    /// The addresses this Ethernet address had (with --from and --to).
    #[arg(long, requires_all = ["from", "to"], conflicts_with = "circuit_id")]
    pub mac: Option<MacAddr>,
    /// The addresses granted through this relay port (option 82 circuit id: text, or
    /// 0x and hex), with --from and --to.
    #[arg(long, requires_all = ["from", "to"], value_parser = octets)]
    pub circuit_id: Option<Vec<u8>>,
    /// The start of the period (UTC, as --at).
    #[arg(long, value_parser = time)]
    pub from: Option<u64>,
    /// The end of the period (UTC, as --at).
    #[arg(long, value_parser = time)]
    pub to: Option<u64>,
    /// Print the spans as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// Create or migrate the lease history's tables (the server also does at its first
    /// connection; this lets a DBA do it ahead, with other rights).
    Init(Database),
}

/// Which database.
#[derive(Debug, Clone, clap::Args)]
pub struct Database {
    /// libpq connection string or postgres:// URL.
    #[arg(long, conflicts_with = "config")]
    pub url: Option<String>,
    /// Take the database from `[history.postgres]` of this configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

fn octets(text: &str) -> Result<Vec<u8>, String> {
    Subscriber::parse_value(text)
        .ok_or_else(|| format!("'{text}': 1 to 255 octets of text, or 0x and hex octets"))
}

fn time(text: &str) -> Result<u64, String> {
    parse_utc(text).ok_or_else(|| {
        format!(
            "'{text}' is not a time: use YYYY-MM-DD HH:MM[:SS] (UTC) or seconds since the epoch"
        )
    })
}

impl Database {
    fn url(&self) -> Result<String, String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let Some(path) = &self.config else {
            return Err("name the database with --url or --config".into());
        };
        let config = dhcp_server::config::load_file(path).map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        config
            .history
            .and_then(|h| h.postgres)
            .map(|p| p.url)
            .ok_or_else(|| format!("{}: no [history.postgres]", path.display()))
    }
}

pub fn run(args: HistoryArgs) -> ExitCode {
    match answer(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dhcp-server history: {e}");
            ExitCode::FAILURE
        }
    }
}

fn answer(args: &HistoryArgs) -> Result<String, String> {
    if let Some(HistoryCommand::Init(db)) = &args.command {
        let applied = postgres::init(&db.url()?).map_err(|e| e.to_string())?;
        return Ok(format!(
            "lease history schema is current ({applied} migration(s) applied)\n"
        ));
    }
    let mut history =
        postgres::History::connect(&args.database.url()?).map_err(|e| e.to_string())?;
    let spans: Vec<Span> = match (args.address, &args.mac, &args.circuit_id) {
        (Some(address), _, _) => {
            let at = args.at.unwrap_or_default();
            history
                .at(address, at)
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect()
        }
        (None, Some(mac), _) => history
            .of_hw(&mac.0, args.from.unwrap_or_default(), args.to.unwrap_or_default())
            .map_err(|e| e.to_string())?,
        (None, None, Some(circuit)) => history
            .of_circuit(
                circuit,
                args.from.unwrap_or_default(),
                args.to.unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?,
        (None, None, None) => {
            return Err(
                "ask with --address A --at T, --mac M --from T1 --to T2, or --circuit-id C --from T1 --to T2"
                    .into(),
            )
        }
    };
    if args.json {
        let all: Vec<_> = spans.iter().map(Span::to_json).collect();
        return Ok(format!("{:#}\n", serde_json::Value::Array(all)));
    }
    if spans.is_empty() {
        return Ok("no lease span matches\n".into());
    }
    Ok(format_spans(&spans))
}
