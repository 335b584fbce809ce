//! Looking up a network interface by name: its index, IPv4 address, hardware address and
//! receive queues, for the sockets that bind to it.

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;

/// The kernel's index of interface `name`.
pub fn index(name: &str) -> io::Result<u32> {
    let cname = CString::new(name).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: plain C call with a NUL-terminated string.
    match unsafe { libc::if_nametoindex(cname.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name}"),
        )),
        i => Ok(i),
    }
}

/// The first IPv4 address of an interface, if it has one.
pub fn address(ifname: &str) -> Option<Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    // SAFETY: walking the list getifaddrs returned, each node valid until freeifaddrs;
    // an AF_INET address is a sockaddr_in.
    unsafe {
        while !cur.is_null() {
            let ifa = &*cur;
            let addr = ifa.ifa_addr;
            if !addr.is_null()
                && (*addr).sa_family as libc::c_int == libc::AF_INET
                && CStr::from_ptr(ifa.ifa_name).to_bytes() == ifname.as_bytes()
            {
                let sin: libc::sockaddr_in = std::ptr::read_unaligned(addr.cast());
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found
}

/// The interface's Ethernet address, from sysfs.
pub fn hw_address(ifname: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| io::Error::other(format!("{ifname} has no Ethernet address")))?;
    }
    Ok(mac)
}

/// How many receive queues the interface has (each needs its own AF_XDP sockets).
pub fn rx_queues(ifname: &str) -> io::Result<u32> {
    let n = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n.max(1) as u32)
}
