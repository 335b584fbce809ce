//! Who the journal's files belong to: the user the server drops to (`run --user`).
//!
//! The state directory is handed to that user just before the switch of user, but the
//! journal's threads keep creating files meanwhile: a segment the preparer or a worker
//! rolls into, a snapshot the compactor writes. One made as root between the hand-over
//! and the switch stayed root's, the user could never write it, and the start was
//! refused (seen about once in ten restarts under load). So every file the journal
//! creates is given to the user at once, by its descriptor, while the process may still
//! be root; after the switch that is the user giving a file to itself. Process-wide, as
//! the user id it stands for.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// No owner set: files stay the creator's.
const NONE: u64 = u64::MAX;

static OWNER: AtomicU64 = AtomicU64::new(NONE);

/// Gives every file the journal creates from now on to `uid`:`gid`.
pub fn set(uid: u32, gid: u32) {
    OWNER.store(u64::from(uid) << 32 | u64::from(gid), Ordering::SeqCst);
}

/// Gives a file just created to the owner, if one is set.
pub(crate) fn give(file: &File) -> io::Result<()> {
    let owner = OWNER.load(Ordering::SeqCst);
    if owner == NONE {
        return Ok(());
    }
    let (uid, gid) = ((owner >> 32) as u32, owner as u32);
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))
}
