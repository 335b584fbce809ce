//! `xdp-reflector`: the ceiling of the XDP path on this machine. The same XDP program,
//! AF_XDP sockets and workers as the server, and the same codec, but no lease engine: each
//! DISCOVER is answered with an OFFER and each REQUEST with an ACK for an address derived
//! from the client's hardware address, nothing remembered. `cargo xtask bench` measures
//! it with the same generator as the servers, so "ratio to the reflector" says how much of
//! the path's capacity the server's lease logic leaves.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::Parser;
use dhcp_proto::wire::{code, frame, Message, MessageType, Writer};
use dhcp_server::netif;
use dhcp_server::runtime::stop::Stop;
use dhcp_server::xdp::program::SteerProgram;
use dhcp_server::xdp::xsk;

#[derive(Parser)]
#[command(about = "A stateless DHCP answerer on the XDP path, for benchmarks")]
struct Args {
    #[arg(long)]
    interface: String,
    #[arg(long, default_value_t = 2)]
    workers: u32,
}

/// Answers one request frame in `out`; `None` for anything but DISCOVER and REQUEST.
fn reflect(mac: [u8; 6], server: Ipv4Addr, req: &[u8], out: &mut [u8]) -> Option<usize> {
    let udp = frame::parse_udp(req)?;
    let msg = Message::parse(udp.payload).ok()?;
    let kind = match msg.option(code::MESSAGE_TYPE)? {
        [1] => MessageType::Offer,
        [3] => MessageType::Ack,
        _ => return None,
    };
    let from = udp.addr;
    let headroom = from.headroom();
    let mut w = Writer::reply_to(&mut out[headroom..], &msg, 548).ok()?;
    let c = msg.chaddr();
    let yiaddr = Ipv4Addr::new(198, 18, *c.get(4)?, *c.get(5)?);
    w.set_yiaddr(yiaddr);
    w.option(code::MESSAGE_TYPE, &[kind.to_u8()]).ok()?;
    w.option_ip(code::SERVER_ID, server).ok()?;
    w.option_u32(code::LEASE_TIME, 3600).ok()?;
    let len = w.finish();
    let relay = msg.giaddr();
    let (dst_ip, dst_port) = if !relay.is_unspecified() {
        (relay, 67)
    } else if msg.broadcast() {
        (Ipv4Addr::BROADCAST, 68)
    } else {
        (yiaddr, 68)
    };
    let to = frame::Addressing {
        dst_mac: from.src_mac,
        src_mac: mac,
        src_ip: server,
        dst_ip,
        src_port: 67,
        dst_port,
        vlan: from.vlan,
    };
    Some(frame::write_udp(out, &to, len))
}

fn run(args: &Args) -> Result<(), String> {
    let ifname = &args.interface;
    let ifindex = netif::index(ifname).map_err(|e| e.to_string())?;
    let queues = netif::rx_queues(ifname).map_err(|e| e.to_string())?;
    let mac = netif::hw_address(ifname).map_err(|e| e.to_string())?;
    let server = netif::address(ifname).ok_or(format!("{ifname} has no IPv4 address"))?;
    let mut program =
        SteerProgram::attach(ifname, args.workers, queues).map_err(|e| e.to_string())?;
    let (sockets, mode) =
        xsk::open(ifname, ifindex, queues, args.workers).map_err(|e| e.to_string())?;
    for (w, per_queue) in sockets.iter().enumerate() {
        for x in per_queue {
            program
                .register(x.queue_id, w as u32, x.fd())
                .map_err(|e| e.to_string())?;
        }
    }
    let stop = Stop::new();
    stop.on_signals().map_err(|e| e.to_string())?;
    eprintln!(
        "ready: reflecting on {ifname}: {} workers, XDP {} mode, AF_XDP {mode} mode",
        args.workers,
        program.mode()
    );
    let threads: Vec<_> = sockets
        .into_iter()
        .map(|mut mine| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut pfds: Vec<libc::pollfd> = mine
                    .iter()
                    .map(|x| libc::pollfd {
                        fd: x.fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                while !stop.requested() {
                    let mut busy = false;
                    for x in &mut mine {
                        let pass = x.pass(0, None, |req, out| {
                            let len = reflect(mac, server, req, out)?;
                            Some(xsk::Out { len, after: 0 })
                        });
                        busy |= pass.received > 0;
                    }
                    if !busy {
                        // SAFETY: `pfds` is a live array of pollfd of the length passed;
                        // an error (EINTR) only ends the wait early.
                        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 10) };
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdp-reflector: {e}");
            ExitCode::FAILURE
        }
    }
}
