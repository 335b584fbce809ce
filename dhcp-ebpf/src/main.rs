//! The XDP program in front of the server: DHCP requests (UDP to port 67, a BOOTREQUEST
//! with the magic cookie) go to the AF_XDP socket of the worker that owns the client, by
//! the RFC 3074 hash of its client identifier or hardware address; anything else to port
//! 67 is dropped; everything else (ARP, ICMP, SSH, the failover TCP link, IPv6) goes to the
//! kernel untouched. Names, slots and the hash come from `dhcp-ebpf-common`, which the
//! loader shares.
//!
//! The headers are read in place, each read checked against `data_end` (what the verifier
//! can follow); the BOOTP message, where offsets depend on the options before them, is
//! read through `bpf_xdp_load_bytes`, which checks bounds itself.

#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
use aya_ebpf::helpers::generated::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use aya_ebpf::Global;
use dhcp_ebpf_common::{
    client_key_hash, socket_key, Asked, Balance, Counter, BALANCE_LEN, MAX_OPTIONS_SCANNED,
    MAX_SOCKETS,
};

#[map]
static XSKS: XskMap = XskMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::SLOTS, 0);

#[map]
static REDIRECTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SOCKETS, 0);

#[map]
static BALANCE: Array<[u8; BALANCE_LEN]> = Array::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static WORKERS: Global<u32> = Global::new(1);

/// The kernel only checks it for GPL-only helpers, which this program does not call.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 8] = *b"MPL-2.0\0";

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const BOOTPS: u16 = 67;
const BOOTREQUEST: u8 = 1;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offsets inside the BOOTP message (RFC 2131 §2).
const CHADDR: usize = 28;
const COOKIE: usize = 236;
const OPTIONS: usize = 240;
const PAD: u8 = 0;
const END: u8 = 255;
const CLIENT_ID: u8 = 61;
const SERVER_ID: u8 = 54;
const MESSAGE_TYPE: u8 = 53;
const DHCPDISCOVER: u8 = 1;
const DHCPREQUEST: u8 = 3;
const SECS: usize = 8;
/// No offset we read is ever beyond this: a jumbo frame at most. Checked before every
/// variable offset meets the packet pointer, so the verifier knows its range.
const MAX_OFFSET: usize = 9216;

enum Verdict {
    /// Not ours: the kernel's.
    Pass,
    /// To port 67 but not a request we can steer.
    Malformed,
    /// A request, with its client's hash, its secs field and what the load-balancing
    /// rule needs of it.
    Request(u8, u16, Asked),
}

#[xdp]
pub fn dhcp_steer(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        Verdict::Pass => {
            count(Counter::Passed);
            XDP_PASS
        }
        Verdict::Malformed => {
            count(Counter::Malformed);
            XDP_DROP
        }
        Verdict::Request(hash, secs, asked) => {
            if let Some(v) = BALANCE.get(0) {
                if Balance::decode(v).leaves_to_partner(hash, secs, asked) {
                    count(Counter::Balanced);
                    return XDP_DROP;
                }
            }
            let key = socket_key(ctx.rx_queue_index(), hash, WORKERS.load());
            match XSKS.redirect(key, 0) {
                Ok(action) => {
                    count(Counter::Redirected);
                    bump(&REDIRECTS, key);
                    action
                }
                // No socket there yet (the workers are starting): the kernel may have a
                // UDP socket on port 67; better than a silent drop.
                Err(_) => {
                    count(Counter::NoSocket);
                    XDP_PASS
                }
            }
        }
    }
}

#[inline(always)]
fn count(counter: Counter) {
    bump(&COUNTERS, counter as u32);
}

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot, valid for the whole run of the program and
        // touched by no one else on this CPU meanwhile (XDP runs with preemption off).
        unsafe { *slot += 1 };
    }
}

/// The octet at `offset` from the start of the frame, if the frame has it.
#[inline(always)]
fn byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    if offset > MAX_OFFSET {
        return None;
    }
    let at = ctx.data() + offset;
    if at + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: `at` is inside the frame: checked against data_end just above.
    Some(unsafe { *(at as *const u8) })
}

#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        byte(ctx, offset)?,
        byte(ctx, offset + 1)?,
    ]))
}

fn classify(ctx: &XdpContext) -> Verdict {
    match udp_to_bootps(ctx) {
        Some((bootp, to)) => request_hash(ctx, bootp, to)
            .map_or(Verdict::Malformed, |(h, secs, asked)| {
                Verdict::Request(h, secs, asked)
            }),
        None => Verdict::Pass,
    }
}

/// The offset of the UDP payload and the IPv4 destination when the frame is an
/// unfragmented IPv4 UDP datagram to port 67, under at most one VLAN tag.
#[inline(always)]
fn udp_to_bootps(ctx: &XdpContext) -> Option<(usize, [u8; 4])> {
    let mut l3 = 14;
    let mut ethertype = be16(ctx, 12)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(ctx, 16)?;
        l3 = 18;
    }
    if ethertype != ETH_P_IPV4 {
        return None;
    }
    let version_ihl = byte(ctx, l3)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 || byte(ctx, l3 + 9)? != IPPROTO_UDP {
        return None;
    }
    // More fragments, or not the first: the kernel reassembles them.
    if be16(ctx, l3 + 6)? & 0x3fff != 0 {
        return None;
    }
    let udp = l3 + ihl;
    if be16(ctx, udp + 2)? != BOOTPS {
        return None;
    }
    // Through the helper: four checked reads in place are merged by the compiler into
    // a form the verifier cannot follow.
    let to = load::<4>(ctx, l3 + 16)?;
    Some((udp + 8, to))
}

/// Copies the `N` octets at `offset`, if the frame has them. For offsets that depend on
/// the options before them: the verifier cannot follow a packet pointer moved by a
/// data-dependent amount, but the helper checks the bounds itself.
#[inline(always)]
fn load<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper writes at most `N` octets into `buf`, and fails when the frame
    // is shorter than `offset + N`.
    let r =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr().cast(), N as u32) };
    (r == 0).then_some(buf)
}

/// The client's hash, the secs field and what the load-balancing rule needs of it, if
/// the message at `bootp` (sent to `to`) is a BOOTREQUEST with the magic cookie whose
/// options field (as far as it is read) is whole.
#[inline(always)]
fn request_hash(ctx: &XdpContext, bootp: usize, to: [u8; 4]) -> Option<(u8, u16, Asked)> {
    let [op, _htype, hlen] = load::<3>(ctx, bootp)?;
    if op != BOOTREQUEST || hlen > 16 || load::<4>(ctx, bootp + COOKIE)? != MAGIC_COOKIE {
        return None;
    }
    let chaddr = load::<16>(ctx, bootp + CHADDR)?;
    let secs = u16::from_be_bytes(load::<2>(ctx, bootp + SECS)?);
    // Clients put the message type first; where one does not, the request is not taken
    // for a DISCOVER or a REQUEST here and the server's own rule decides.
    let kind = match load::<3>(ctx, bootp + OPTIONS) {
        Some([MESSAGE_TYPE, 1, kind]) => kind,
        _ => 0,
    };
    let mut id = [0u8; 255];
    let id_len = client_id(ctx, bootp + OPTIONS, &mut id)?;
    let client_id = match id_len {
        Some(len) => Some(id.get(..len)?),
        None => None,
    };
    let hash = client_key_hash(client_id, chaddr.get(..usize::from(hlen))?);
    let asked = match kind {
        DHCPDISCOVER => Asked::Discover,
        // A second walk, for REQUESTs only: folding option 54 into the walk above
        // multiplies the states the verifier must follow past its limit of a million
        // instructions, while a walk that ends here, after the hash, stays small.
        DHCPREQUEST => match server_id(ctx, bootp + OPTIONS) {
            Some(server_id) => Asked::Selecting { server_id, to },
            None => Asked::Other,
        },
        _ => Asked::Other,
    };
    Some((hash, secs, asked))
}

/// Copies the data of the first option 61 among the options field's first
/// `MAX_OPTIONS_SCANNED` options into `id` and returns its length; `Some(None)` when
/// there is none, `None` when an option runs past the frame.
#[inline(always)]
fn client_id(ctx: &XdpContext, at: usize, id: &mut [u8; 255]) -> Option<Option<usize>> {
    let Some((at, len)) = find_option(ctx, at, CLIENT_ID)? else {
        return Some(None);
    };
    if len > 0 {
        // SAFETY: `len` is at most 255, the size of `id`; the helper fails rather than
        // read past the frame.
        let r =
            unsafe { bpf_xdp_load_bytes(ctx.ctx, at as u32, id.as_mut_ptr().cast(), len as u32) };
        if r != 0 {
            return None;
        }
    }
    Some(Some(len))
}

/// The first option 54 among the options field's first `MAX_OPTIONS_SCANNED` options,
/// when it is the 4 octets the engine takes. Anything less clear (none, another length,
/// an option running past the frame) is `None`: the REQUEST is left to the engine,
/// steered as before.
#[inline(always)]
fn server_id(ctx: &XdpContext, at: usize) -> Option<[u8; 4]> {
    match find_option(ctx, at, SERVER_ID) {
        Some(Some((at, 4))) => load::<4>(ctx, at),
        _ => None,
    }
}

/// The offset and length of the data of the first option `wanted` among the options
/// field's first `MAX_OPTIONS_SCANNED` options; `Some(None)` when there is none, `None`
/// when an option runs past the frame.
#[inline(always)]
fn find_option(ctx: &XdpContext, mut at: usize, wanted: u8) -> Option<Option<(usize, usize)>> {
    // SAFETY: reads the length of the frame the program was called for.
    let frame = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    for _ in 0..MAX_OPTIONS_SCANNED {
        // A field that ends without END is still whole: userspace decides about it.
        if at >= frame {
            return Some(None);
        }
        let [code] = load::<1>(ctx, at)?;
        match code {
            END => return Some(None),
            PAD => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let [len] = load::<1>(ctx, at + 1)?;
        let len = usize::from(len);
        if at + 2 + len > frame {
            return None;
        }
        if code == wanted {
            return Some(Some((at + 2, len)));
        }
        at += 2 + len;
    }
    Some(None)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: nothing here can panic, and the verifier would reject a path that did.
    loop {}
}
