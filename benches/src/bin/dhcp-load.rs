//! `dhcp-load`: plays many distinct DHCP clients on an interface and reports leases per
//! second, drops and latency percentiles. Run it in the client namespace of a lab.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dhcp_benches::load::{self, LoadConfig};
use dhcp_server::packet::PacketSocket;

#[derive(Parser)]
#[command(about = "DHCPv4 load generator: distinct clients doing DORA over a packet socket")]
struct Args {
    /// Interface to send on (the client side of the lab).
    #[arg(long)]
    interface: String,
    /// Distinct clients, one DORA each.
    #[arg(long, default_value_t = 10_000)]
    clients: u32,
    /// First client number (chaddr 02:be:NN:NN:NN:NN); vary it to get clients the server has not seen.
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// Open loop: new exchanges per second. Without it: closed loop.
    #[arg(long)]
    rate: Option<u32>,
    /// Closed loop: exchanges outstanding at once.
    #[arg(long, default_value_t = 256)]
    window: u32,
    /// Seconds after which no new exchange starts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Milliseconds after which an unfinished exchange counts as dropped.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Ask for broadcast replies.
    #[arg(long)]
    broadcast: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let sock = match PacketSocket::open(&a.interface) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "dhcp-load: cannot open a packet socket on {}: {e}",
                a.interface
            );
            return ExitCode::FAILURE;
        }
    };
    let cfg = LoadConfig {
        clients: a.clients,
        first: a.first,
        rate: a.rate,
        window: a.window.max(1),
        duration: Duration::from_secs_f64(a.duration.clamp(0.0, 3600.0)),
        timeout: Duration::from_millis(a.timeout_ms),
        broadcast: a.broadcast,
    };
    let r = match load::run(&sock, &cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dhcp-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (p50, p99, p999) = (
        r.percentile_us(0.5),
        r.percentile_us(0.99),
        r.percentile_us(0.999),
    );
    if a.json {
        println!(
            "{{\"initiated\":{},\"completed\":{},\"naks\":{},\"dropped\":{},\"elapsed_s\":{:.3},\"leases_per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999}}}",
            r.initiated, r.completed, r.naks, r.dropped, r.elapsed.as_secs_f64(), r.leases_per_sec(), r.drop_percent()
        );
    } else {
        println!(
            "{} exchanges: {} leases, {} NAKs, {} dropped ({:.2}%) in {:.2} s: {:.0} leases/s; latency p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs",
            r.initiated, r.completed, r.naks, r.dropped, r.drop_percent(), r.elapsed.as_secs_f64(), r.leases_per_sec()
        );
    }
    ExitCode::SUCCESS
}
