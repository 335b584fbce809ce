//! systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram with
//! "READY=1" or "STOPPING=1" to the Unix socket named by `$NOTIFY_SOCKET`, which a unit
//! with `Type=notify` sets. A name starting with '@' is in the abstract namespace. With
//! the variable unset (not under systemd) both calls do nothing.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// Tells systemd the server is ready: journal recovered, every socket up. `Ok(false)`
/// when not started by systemd.
pub fn notify_ready() -> io::Result<bool> {
    notify("READY=1")
}

/// Tells systemd the server is stopping, so it waits instead of reporting a failure.
pub fn notify_stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => send(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let name = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let addr = match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None if name.starts_with(b"/") => SocketAddr::from_pathname(Path::new(socket))?,
        // systemd also offers vsock: addresses, for VMs; a DHCP server does not run there.
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={} is not a Unix socket path",
                    socket.to_string_lossy()
                ),
            ))
        }
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("dhcp-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("dhcp-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn refuses_other_address_families() {
        let e = send(OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
