//! A UDP socket on port 67 tied to one interface, with the three kernel facilities a DHCP
//! server needs beyond plain UDP: SO_BINDTODEVICE (one socket per link, so the link is
//! known) and IP_PKTINFO both ways (where a datagram arrived; which source address a reply
//! leaves from). All `unsafe` of the UDP backend is here.

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Receive buffer asked for: about 4,000 queued DISCOVERs.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;

pub struct DhcpSocket {
    fd: OwnedFd,
    pub ifname: String,
    pub ifindex: u32,
}

/// A datagram and where it came from and went to.
pub struct Received {
    pub len: usize,
    pub src: SocketAddrV4,
    /// The IP header's destination (broadcast or one of ours).
    pub dst: Ipv4Addr,
    /// The local address the kernel would answer from: for a broadcast, the address of
    /// the receiving interface.
    pub local: Ipv4Addr,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sa
}

/// Ties a socket to one interface (SO_BINDTODEVICE): it sends and receives there only.
fn bind_to_device(fd: RawFd, name: &std::ffi::CStr) -> io::Result<()> {
    let name = name.to_bytes_with_nul();
    // SAFETY: the option value is the NUL-terminated name, its length passed with it.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl DhcpSocket {
    /// Opens a non-blocking socket on 0.0.0.0:`port` that sees only `ifname`'s traffic.
    pub fn bind(ifname: &str, port: u16) -> io::Result<Self> {
        let ifindex = crate::netif::index(ifname)?;
        let cname =
            CString::new(ifname).map_err(|_| io::Error::other("interface name has a NUL"))?;
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_BROADCAST, &one)?;
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_PKTINFO, &one)?;
        // A burst of DISCOVERs must queue, not drop: ask for a large buffer past the
        // rmem_max cap where privileged, else for what the cap allows.
        let buffer: libc::c_int = RECEIVE_BUFFER;
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buffer)
            .or_else(|_| setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &buffer))?;
        bind_to_device(raw, &cname)?;
        let sa = sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        // SAFETY: `sa` is a valid sockaddr_in of the size passed.
        check(unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        })?;
        Ok(Self {
            fd,
            ifname: ifname.to_owned(),
            ifindex,
        })
    }

    /// Receives one datagram into `buf`; `None` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        // SAFETY: plain data, zero is valid for each.
        let mut src: libc::sockaddr_in = unsafe { zeroed() };
        let mut cbuf = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data.
        let mut mh: libc::msghdr = unsafe { zeroed() };
        mh.msg_name = (&mut src as *mut libc::sockaddr_in).cast();
        mh.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = size_of::<[u64; 8]>();
        // SAFETY: every pointer in `mh` refers to a live buffer of the length given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut mh, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let (mut dst, mut local) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        // SAFETY: the CMSG_* helpers walk the control buffer the kernel just filled,
        // within `msg_controllen`; IP_PKTINFO data is an in_pktinfo, read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let pi: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    dst = Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr));
                    local = Ipv4Addr::from(u32::from_be(pi.ipi_spec_dst.s_addr));
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        let src = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(src.sin_addr.s_addr)),
            u16::from_be(src.sin_port),
        );
        Ok(Some(Received {
            len: n as usize,
            src,
            dst,
            local,
        }))
    }

    /// Sends `buf` to `to` out of this socket's interface, from source address `from`.
    pub fn send(&self, buf: &[u8], to: SocketAddrV4, from: Ipv4Addr) -> io::Result<()> {
        let sa = sockaddr(to);
        let mut cbuf = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut _,
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data.
        let mut mh: libc::msghdr = unsafe { zeroed() };
        mh.msg_name = (&sa as *const libc::sockaddr_in) as *mut _;
        mh.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        mh.msg_controllen =
            unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
        // SAFETY: the control buffer (64 octets) holds one in_pktinfo message, which
        // CMSG_FIRSTHDR places at its start; the write is unaligned-safe.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
            let pi = libc::in_pktinfo {
                ipi_ifindex: self.ifindex as libc::c_int,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(from).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), pi);
        }
        // SAFETY: every pointer in `mh` refers to a live buffer of the length given.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &mh, 0) };
        check(n as libc::c_int).map(drop)
    }

    /// The descriptor poll waits on.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A send-only raw IP socket on one interface (IPPROTO_RAW: it never receives), for the
/// replies whose destination did not send the request (see `udp`'s module comment).
/// What it sends waits in the kernel exactly as a UDP datagram would (route, then the
/// neighbour queue), but is charged to this socket's send buffer, not the one the
/// replies to known peers leave through. The datagram carries its own IP and UDP
/// headers, so it leaves from port 67 like every other reply.
pub struct RawIpSocket {
    fd: OwnedFd,
}

impl RawIpSocket {
    /// Needs CAP_NET_RAW.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let cname =
            CString::new(ifname).map_err(|_| io::Error::other("interface name has a NUL"))?;
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        bind_to_device(raw, &cname)?;
        Ok(Self { fd })
    }

    /// Sends `packet`, an IPv4 header and what follows it, to `to` (the header's
    /// destination) out of this socket's interface.
    pub fn send(&self, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let sa = sockaddr(SocketAddrV4::new(to, 0));
        // SAFETY: `packet` and `sa` are live buffers of the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        check(n as libc::c_int).map(drop)
    }
}
