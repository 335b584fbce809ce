//! SIGTERM and SIGINT ask the server to stop; I/O loops check `requested()` between polls.
//! SIGHUP asks it to reload its configuration (`take_reload`). The handlers only set a
//! flag, which is all a signal handler may safely do.
//!
//! Something that must finish while the workers still run (the failover link telling
//! its partner it shuts down, which needs the workers to journal) takes a `Hold`: it
//! sees the stop with `asked()`, and the loops see it with `requested()` only once every
//! hold is dropped.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static HOLDS: AtomicUsize = AtomicUsize::new(0);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hangup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Installs the handlers without SA_RESTART, so a blocked poll returns at once. SIGHUP,
/// whose default would end the process, only asks for a reload.
pub fn install() -> io::Result<()> {
    type Handler = extern "C" fn(libc::c_int);
    let handlers: [(libc::c_int, Handler); 3] = [
        (libc::SIGTERM, on_signal),
        (libc::SIGINT, on_signal),
        (libc::SIGHUP, on_hangup),
    ];
    for (sig, handler) in handlers {
        // SAFETY: sigaction is plain data; the handler is an extern "C" fn that only
        // stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether the I/O loops must stop: a stop was asked and nothing holds it back.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst) && HOLDS.load(Ordering::SeqCst) == 0
}

/// Whether a stop was asked, even while a hold keeps the loops going.
pub fn asked() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Keeps the loops going after a stop is asked, until dropped.
pub struct Hold(());

pub fn hold() -> Hold {
    HOLDS.fetch_add(1, Ordering::SeqCst);
    Hold(())
}

impl Drop for Hold {
    fn drop(&mut self) {
        HOLDS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a reload was asked for (SIGHUP) since the last call.
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

/// Asks the loops to stop, as a signal would.
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}
