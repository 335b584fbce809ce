//! A raw packet socket on one interface, sending and receiving whole Ethernet frames in
//! batches (sendmmsg, recvmmsg). The UDP backend sends through it the replies that must
//! reach a client with no address yet (as dhcpd and Kea do: no ARP involved); the load
//! generator plays thousands of such clients with it.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct PacketSocket {
    fd: OwnedFd,
}

/// Room for one frame in a receive buffer.
pub const FRAME: usize = 2048;

impl PacketSocket {
    /// Opens a non-blocking socket that sees the IPv4 frames of `ifname` only.
    pub fn open(ifname: &str) -> io::Result<Self> {
        Self::open_ethertype(ifname, libc::ETH_P_IP as u16)
    }

    /// Opens a non-blocking socket that sees the frames of `ifname` carrying `ethertype`
    /// (ARP, for the load generator's simulated clients).
    pub fn open_ethertype(ifname: &str, ethertype: u16) -> io::Result<Self> {
        let ifindex = crate::netif::index(ifname)?;
        let proto = ethertype.to_be();
        // SAFETY: socket(2) with constant arguments; checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let big: libc::c_int = 8 << 20;
        let one: libc::c_int = 1;
        // FORCE variants pass the rmem_max cap (root); our own frames are not read back.
        for (level, opt, v) in [
            (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big),
            (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &big),
            (libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one),
            (libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one),
        ] {
            // SAFETY: the option value is a live c_int of the size passed. Failure only
            // costs speed, so it is not an error.
            unsafe {
                libc::setsockopt(
                    raw,
                    level,
                    opt,
                    (v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
        }
        Ok(Self { fd })
    }

    /// Sends one frame, without allocating: the server's reply path.
    pub fn send_one(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the pointer and length describe a live buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends frames in one call; returns how many the kernel took.
    pub fn send(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut _,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zero is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..frames.len()).map(|_| unsafe { zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one live iovec over a live frame.
        let n =
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }

    /// Receives up to `bufs.len()` incoming frames without blocking (frames this host sent
    /// are skipped); returns how many, their lengths in `lens`.
    pub fn recv(&self, bufs: &mut [[u8; FRAME]], lens: &mut [usize]) -> io::Result<usize> {
        let n = bufs.len().min(lens.len());
        // SAFETY: plain data; zero is valid.
        let mut addrs: Vec<libc::sockaddr_ll> = (0..n).map(|_| unsafe { zeroed() }).collect();
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .take(n)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: FRAME,
            })
            .collect();
        // SAFETY: plain data; zero is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { zeroed() }).collect();
        for ((m, v), a) in msgs.iter_mut().zip(iov.iter_mut()).zip(addrs.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (a as *mut libc::sockaddr_ll).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        }
        // SAFETY: every header points at a live buffer and address of the sizes given.
        let got = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let mut kept = 0;
        for i in 0..got as usize {
            if addrs[i].sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if kept != i {
                let (a, b) = bufs.split_at_mut(i);
                a[kept].copy_from_slice(&b[0]);
            }
            lens[kept] = msgs[i].msg_len as usize;
            kept += 1;
        }
        Ok(kept)
    }
}
