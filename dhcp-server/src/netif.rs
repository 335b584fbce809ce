//! Looking up a network interface by name: its index and its IPv4 address, for the
//! sockets that bind to it.

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
