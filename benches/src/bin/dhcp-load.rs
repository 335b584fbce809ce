//! `dhcp-load`: plays many distinct DHCP clients on an interface and reports leases per
//! second, drops and latency percentiles, per kind of exchange when it mixes DORA with
//! renewals, releases and declines. With `--leasequery` it leases to the clients, then
//! asks the server about their addresses as an RFC 4388 requester and reports queries
//! per second answered, latency and the answers' types. Run it in the client namespace
//! of a lab.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dhcp_benches::arp::ArpResponder;
use dhcp_benches::load::{self, Group, Kind, LoadConfig, Mix, QueryConfig, QueryReport, Report};
use dhcp_server::packet::PacketSocket;

#[derive(Parser)]
#[command(
    about = "DHCPv4 load generator: distinct clients doing DORA (and, with --mix, renew, release and decline) over a packet socket"
)]
struct Args {
    /// Interface to send on (the client side of the lab).
    #[arg(long)]
    interface: String,
    /// Distinct clients; each DORA takes a new one. With --leasequery: the leases made
    /// (closed loop, --window outstanding) before the queries.
    #[arg(long, default_value_t = 10_000)]
    clients: u32,
    /// First client number (chaddr 02:be:NN:NN:NN:NN); vary it to get clients the server has not seen.
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// Open loop: new exchanges per second, of every kind together (with --leasequery:
    /// queries). Without it: closed loop.
    #[arg(long)]
    rate: Option<u32>,
    /// Closed loop: answered exchanges (DORA, renew; queries) outstanding at once.
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
    /// Kinds of exchange and their weights, e.g. dora=70,renew=20,release=5,decline=5.
    /// renew: a holder's unicast REQUEST with ciaddr (RENEWING), answered; release and
    /// decline: a holder's DHCPRELEASE (unicast) or DHCPDECLINE (broadcast), not answered.
    /// A renew, release or decline due while no client holds a lease is a DORA instead.
    #[arg(long, default_value_t = Mix::DORA)]
    mix: Mix,
    /// With release or decline in the mix: how many released, declined and still-held
    /// addresses new clients ask for in RENEWING at the end (a server that freed an
    /// address ACKs it; one that quarantined it or holds it for another client NAKs).
    #[arg(long, default_value_t = 16)]
    probes: u32,
    /// Act as a relay agent at this address (giaddr) for DISCOVERs and REQUESTs: sent
    /// from it, port 67, with option 82; the server must have a subnet holding it.
    #[arg(long)]
    relay: Option<Ipv4Addr>,
    /// With --relay: subscriber lines the clients are spread over, circuit ids
    /// line-0, line-1, ... (0: every client on "eth0/1").
    #[arg(long, default_value_t = 0)]
    lines: u32,
    /// Leasequery instead: act as an RFC 4388 requester at this address (giaddr, where the
    /// answers go; the server must allow it in [leasequery] requesters). After --clients
    /// DORAs, DHCPLEASEQUERY by address about the leased addresses, unicast to the
    /// server from ADDRESS:67, for --duration.
    #[arg(long, value_name = "ADDRESS", conflicts_with = "mix")]
    leasequery: Option<Ipv4Addr>,
    /// With --leasequery: also ask about these addresses (FIRST-LAST), which no client
    /// holds: free in the server's pool, or outside it.
    #[arg(long, value_name = "FIRST-LAST", value_parser = range, requires = "leasequery")]
    lq_others: Option<(Ipv4Addr, Ipv4Addr)>,
    /// With --lq-others: the percentage of queries about them (all with --clients 0).
    #[arg(long, default_value_t = 10, requires = "lq_others")]
    lq_others_pct: u32,
    /// With --leasequery and --clients 0 (no DORA to meet the server): the server's
    /// address, its hardware address taken as broadcast.
    #[arg(long, value_name = "ADDRESS", requires = "leasequery")]
    lq_server: Option<Ipv4Addr>,
    /// Write every ACK the clients got (dora and renew) to FILE, one `MAC ADDRESS` line
    /// each, in the order they came: what the server promised, for a later
    /// --init-reboot check.
    #[arg(long, value_name = "FILE", conflicts_with = "leasequery")]
    acks: Option<std::path::PathBuf>,
    /// Instead of a load: every client of FILE (as --acks writes it; the last line per
    /// client counts) asks for its address in INIT-REBOOT, --window at a time, each sent
    /// up to 3 times --timeout-ms apart; reports how many were ACKed the same address
    /// and lists every one NAKed, ACKed another address or not answered. Exits 1 if any.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["leasequery", "acks", "rate"])]
    init_reboot: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// FIRST-LAST, two IPv4 addresses.
fn range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("'{s}': expected FIRST-LAST"))?;
    let ip = |x: &str| {
        x.trim()
            .parse::<Ipv4Addr>()
            .map_err(|e| format!("'{x}': {e}"))
    };
    Ok((ip(a)?, ip(b)?))
}

/// The leases a leasequery run makes take at most this long.
const FILL_LIMIT: Duration = Duration::from_secs(120);

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
    // Only renewals are answered at ciaddr, so only they need ARP answered.
    let arp = if a.mix.weight(Kind::Renew) > 0 {
        match ArpResponder::open(&a.interface) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "dhcp-load: cannot open an ARP socket on {}: {e}",
                    a.interface
                );
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let duration = Duration::from_secs_f64(a.duration.clamp(0.0, 3600.0));
    let timeout = Duration::from_millis(a.timeout_ms);
    if let Some(file) = &a.init_reboot {
        return init_reboot(&sock, file, a.window.max(1), timeout);
    }
    if let Some(requester) = a.leasequery {
        let fill = LoadConfig {
            clients: a.clients,
            first: a.first,
            rate: None,
            window: a.window.max(1),
            duration: FILL_LIMIT,
            timeout,
            broadcast: a.broadcast,
            shape: dhcp_benches::Shape {
                relayed: a.relay,
                lines: a.lines,
            },
            mix: Mix::DORA,
            probes: 0,
        };
        let q = QueryConfig {
            requester,
            server: a.lq_server,
            rate: a.rate,
            window: a.window.max(1),
            duration,
            timeout,
            others: a.lq_others,
            others_pct: a.lq_others_pct,
        };
        // On stderr, flushed at once: `cargo xtask bench --leasequery` reads the server's
        // CPU time when it sees this line, to count the queries' share alone.
        let filled =
            |f: &Report| eprintln!("dhcp-load: {} leases made, leasequery starts", f.completed);
        return match load::leasequery(&sock, &fill, &q, filled) {
            Ok(r) if a.json => {
                println!("{}", lq_json(&r, a.clients));
                ExitCode::SUCCESS
            }
            Ok(r) => {
                print!("{}", lq_text(&r));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dhcp-load: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = LoadConfig {
        clients: a.clients,
        first: a.first,
        rate: a.rate,
        window: a.window.max(1),
        duration,
        timeout,
        broadcast: a.broadcast,
        shape: dhcp_benches::Shape {
            relayed: a.relay,
            lines: a.lines,
        },
        mix: a.mix,
        probes: a.probes.min(1024),
    };
    let r = match load::run(&sock, arp.as_ref(), &cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dhcp-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = &a.acks {
        if let Err(e) = std::fs::write(file, load::format_acks(&r.acks)) {
            eprintln!("dhcp-load: cannot write {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    }
    if a.json {
        println!("{}", json(&r, &a.mix));
    } else {
        print!("{}", text(&r, &a.mix));
    }
    ExitCode::SUCCESS
}

/// Tries per lease in an INIT-REBOOT check: a request or its answer lost on the way is
/// not a lost lease.
const REBOOT_TRIES: u32 = 3;

/// The --init-reboot check: one line of figures, then one line per lost lease.
fn init_reboot(
    sock: &PacketSocket,
    file: &std::path::Path,
    window: u32,
    timeout: Duration,
) -> ExitCode {
    let acks = match std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|t| load::parse_acks(&t))
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dhcp-load: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // A client ACKed twice (a renewal, or a new DORA in a later run) holds the last one.
    let mut latest = std::collections::HashMap::new();
    for (i, &(n, addr)) in acks.iter().enumerate() {
        latest.insert(n, (i, addr));
    }
    let mut leases: Vec<(usize, load::Acked)> =
        latest.into_iter().map(|(n, (i, a))| (i, (n, a))).collect();
    leases.sort_unstable();
    let leases: Vec<load::Acked> = leases.into_iter().map(|(_, l)| l).collect();
    let r = match load::check_init_reboot(sock, &leases, window, timeout, REBOOT_TRIES) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dhcp-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "init-reboot: {} leases asked for, {} kept, {} lost ({} NAK, {} another address, {} silent)",
        leases.len(),
        r.kept,
        r.lost(),
        r.naked.len(),
        r.moved.len(),
        r.silent.len()
    );
    let name = load::mac_text;
    for &(n, a) in &r.naked {
        println!("lost: {} {a}: NAK", name(n));
    }
    for &((n, a), got) in &r.moved {
        println!("lost: {} {a}: ACKed {got} instead", name(n));
    }
    for &(n, a) in &r.silent {
        println!("lost: {} {a}: no answer", name(n));
    }
    if r.lost() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> [u64; 3] {
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q))
}

/// The totals first (DORA and renew together; DORA alone with the default mix, as always),
/// then one object per kind and the checks.
fn json(r: &Report, mix: &Mix) -> String {
    let [p50, p99, p999] = percentiles(&r.latency);
    let mut s = format!(
        "{{\"initiated\":{},\"completed\":{},\"naks\":{},\"dropped\":{},\"elapsed_s\":{:.3},\"leases_per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999}",
        r.initiated, r.completed, r.naks, r.dropped, r.elapsed.as_secs_f64(), r.leases_per_sec(), r.drop_percent()
    );
    let _ = write!(s, ",\"mix\":\"{mix}\",\"kinds\":{{");
    for (i, k) in Kind::ALL.into_iter().enumerate() {
        let d = r.kind(k);
        let sep = if i > 0 { "," } else { "" };
        if k.answered() {
            let [p50, p99, p999] = percentiles(&d.latency);
            let _ = write!(
                s,
                "{sep}\"{}\":{{\"started\":{},\"completed\":{},\"naks\":{},\"dropped\":{},\"per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999}}}",
                k.name(), d.started, d.completed, d.naks, d.dropped, r.per_sec(k), d.drop_percent()
            );
        } else {
            let _ = write!(
                s,
                "{sep}\"{}\":{{\"sent\":{},\"per_s\":{:.1}}}",
                k.name(),
                d.started,
                r.per_sec(k)
            );
        }
    }
    let c = &r.checks;
    let _ = write!(
        s,
        "}},\"checks\":{{\"offered_declined\":{},\"offered_released\":{}",
        c.offered_declined, c.offered_released
    );
    for g in Group::ALL {
        let p = c.probes[g as usize];
        let _ = write!(
            s,
            ",\"{}\":{{\"asked\":{},\"acks\":{},\"naks\":{},\"silent\":{}}}",
            g.name(),
            p.asked,
            p.acks,
            p.naks,
            p.silent()
        );
    }
    let _ = write!(s, "}},\"arp_replies\":{}}}", r.arp_replies);
    s
}

/// The queries first, at the top level as the DORA report has its totals (queries_per_s
/// in place of leases_per_s), then the answers by type and the DORA phase.
fn lq_json(r: &QueryReport, clients: u32) -> String {
    let [p50, p99, p999] = percentiles(&r.latency);
    let mut s = format!(
        "{{\"mode\":\"leasequery\",\"sent\":{},\"answered\":{},\"dropped\":{},\"elapsed_s\":{:.3},\"queries_per_s\":{:.1},\"drop_pct\":{:.3},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999},\"answers\":{{",
        r.sent, r.answered, r.dropped, r.elapsed.as_secs_f64(), r.per_sec(), r.drop_percent()
    );
    for (i, (_, name)) in load::ANSWERS.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(s, "{sep}\"{name}\":{}", r.answers[i]);
    }
    let f = &r.fill;
    let _ = write!(
        s,
        "}},\"asked\":{{\"leased\":{},\"others\":{}}},\"held_not_active\":{},\"fill\":{{\"clients\":{clients},\"leases\":{},\"dropped\":{},\"elapsed_s\":{:.3},\"leases_per_s\":{:.1}}}}}",
        r.asked[0], r.asked[1], r.held_not_active, f.completed, f.dropped, f.elapsed.as_secs_f64(), f.leases_per_sec()
    );
    s
}

fn lq_text(r: &QueryReport) -> String {
    let [p50, p99, p999] = percentiles(&r.latency);
    let f = &r.fill;
    let mut s = format!(
        "leases: {} of {} DORAs in {:.2} s ({:.0}/s, {} dropped)\n\
         {} leasequeries ({} about leased addresses, {} about others): {} answered, {} dropped ({:.2}%) in {:.2} s: {:.0} queries/s; latency p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs\nanswers:",
        f.completed, f.initiated, f.elapsed.as_secs_f64(), f.leases_per_sec(), f.dropped,
        r.sent, r.asked[0], r.asked[1], r.answered, r.dropped, r.drop_percent(), r.elapsed.as_secs_f64(), r.per_sec()
    );
    for (i, (_, name)) in load::ANSWERS.iter().enumerate() {
        let _ = write!(s, " {name} {}", r.answers[i]);
    }
    let _ = writeln!(
        s,
        "; leased addresses not answered active: {}",
        r.held_not_active
    );
    s
}

fn text(r: &Report, mix: &Mix) -> String {
    let [p50, p99, p999] = percentiles(&r.latency);
    let mut s = format!(
        "{} exchanges: {} leases, {} NAKs, {} dropped ({:.2}%) in {:.2} s: {:.0} leases/s; latency p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs\n",
        r.initiated, r.completed, r.naks, r.dropped, r.drop_percent(), r.elapsed.as_secs_f64(), r.leases_per_sec()
    );
    if mix.is_dora_only() {
        return s;
    }
    let _ = writeln!(s, "mix {mix}:");
    for k in Kind::ALL {
        let d = r.kind(k);
        if k.answered() {
            let [p50, p99, p999] = percentiles(&d.latency);
            let _ = writeln!(
                s,
                "  {:8} {:>8} started, {:>8} ACKs, {} NAKs, {} dropped ({:.2}%): {:.0}/s; latency p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs",
                k.name(), d.started, d.completed, d.naks, d.dropped, d.drop_percent(), r.per_sec(k)
            );
        } else {
            let _ = writeln!(
                s,
                "  {:8} {:>8} sent: {:.0}/s",
                k.name(),
                d.started,
                r.per_sec(k)
            );
        }
    }
    let c = &r.checks;
    let _ = write!(
        s,
        "checks: declined addresses offered again {}, released ones {}; ARP answered {}",
        c.offered_declined, c.offered_released, r.arp_replies
    );
    for g in Group::ALL {
        let p = c.probes[g as usize];
        if p.asked > 0 {
            let _ = write!(
                s,
                "; {} {} asked for by new clients: {} ACK, {} NAK, {} silent",
                p.asked,
                g.name(),
                p.acks,
                p.naks,
                p.silent()
            );
        }
    }
    s.push('\n');
    s
}
