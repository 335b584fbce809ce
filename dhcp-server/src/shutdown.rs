//! SIGTERM and SIGINT ask the server to stop; I/O loops check `requested()` between polls.
//! The handler only sets a flag, which is all a signal handler may safely do.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers without SA_RESTART, so a blocked poll returns at once.
pub fn install() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction is plain data; the handler is an extern "C" fn that only
        // stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks the loops to stop, as a signal would.
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}
