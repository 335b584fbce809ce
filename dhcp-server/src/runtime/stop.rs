//! The stop token of one server: asked to stop (SIGTERM, SIGINT, the control socket's
//! `shutdown`, a test), asked to reload (SIGHUP). The loops check `requested()` between
//! polls. Each server has its own token, so several can run in one process (tests);
//! `on_signals` routes the process's signals to one of them.
//!
//! Something that must finish while the workers still run (the failover link telling
//! its partner it shuts down, which needs the workers to journal) takes a `Hold`: it
//! sees the stop with `asked()`, and the loops see it with `requested()` only once every
//! hold is dropped.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Stop(Arc<Flags>);

#[derive(Default)]
struct Flags {
    asked: AtomicBool,
    holds: AtomicUsize,
    reload: AtomicBool,
}

/// The token the process's signals set; null until `on_signals`.
static SIGNALLED: AtomicPtr<Flags> = AtomicPtr::new(std::ptr::null_mut());

fn signalled(set: impl Fn(&Flags)) {
    let p = SIGNALLED.load(Ordering::SeqCst);
    // SAFETY: a non-null pointer came from `Arc::into_raw` in `on_signals` and that
    // reference is never given back, so the flags live as long as the process.
    if let Some(flags) = unsafe { p.as_ref() } {
        set(flags);
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    signalled(|f| f.asked.store(true, Ordering::SeqCst));
}

extern "C" fn on_hangup(_: libc::c_int) {
    signalled(|f| f.reload.store(true, Ordering::SeqCst));
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes SIGTERM and SIGINT (stop) and SIGHUP (reload, instead of its default of
    /// ending the process) to this token. The handlers are installed without SA_RESTART,
    /// so a blocked poll returns at once; they only store to an atomic.
    pub fn on_signals(&self) -> io::Result<()> {
        let old = SIGNALLED.swap(Arc::into_raw(self.0.clone()).cast_mut(), Ordering::SeqCst);
        if !old.is_null() {
            // The earlier token stays allocated: a handler may be reading it right now.
            tracing::debug!("signals now go to another stop token");
        }
        type Handler = extern "C" fn(libc::c_int);
        let handlers: [(libc::c_int, Handler); 3] = [
            (libc::SIGTERM, on_stop_signal),
            (libc::SIGINT, on_stop_signal),
            (libc::SIGHUP, on_hangup),
        ];
        for (sig, handler) in handlers {
            // SAFETY: sigaction is plain data; the handler is an extern "C" fn that only
            // loads a pointer and stores to an atomic, which is async-signal-safe.
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

    /// Asks the server to stop, as SIGTERM does.
    pub fn request(&self) {
        self.0.asked.store(true, Ordering::SeqCst);
    }

    /// Whether the loops must stop: a stop was asked and nothing holds it back.
    pub fn requested(&self) -> bool {
        self.asked() && self.0.holds.load(Ordering::SeqCst) == 0
    }

    /// Whether a stop was asked, even while a hold keeps the loops going.
    pub fn asked(&self) -> bool {
        self.0.asked.load(Ordering::SeqCst)
    }

    /// Keeps the loops going after a stop is asked, until dropped.
    pub fn hold(&self) -> Hold {
        self.0.holds.fetch_add(1, Ordering::SeqCst);
        Hold(self.0.clone())
    }

    /// Asks for a reload of the configuration file, as SIGHUP does.
    pub fn ask_reload(&self) {
        self.0.reload.store(true, Ordering::SeqCst);
    }

    /// Whether a reload was asked for since the last call.
    pub fn take_reload(&self) -> bool {
        self.0.reload.swap(false, Ordering::SeqCst)
    }
}

/// Keeps the loops of its token going after a stop is asked, until dropped.
pub struct Hold(Arc<Flags>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_keeps_the_loops_going_until_dropped() {
        let stop = Stop::new();
        assert!(!stop.requested());
        let hold = stop.hold();
        stop.request();
        assert!(stop.asked() && !stop.requested());
        drop(hold);
        assert!(stop.requested());
        assert!(!Stop::new().asked(), "tokens are independent");
    }

    #[test]
    fn a_reload_is_taken_once() {
        let stop = Stop::new();
        stop.ask_reload();
        assert!(stop.take_reload());
        assert!(!stop.take_reload());
    }
}
