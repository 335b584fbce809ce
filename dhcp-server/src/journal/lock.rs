//! The state directory's lock: `flock` on `DIR/lock`, held for as long as the journal is
//! open. The kernel drops it when the process dies, so a crash never leaves a stale lock
//! to clear by hand. The holder writes its pid into the file so a refused start can say
//! who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

pub struct DirLock {
    // Held for its open file description: closing it releases the flock.
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io("lock", &path, e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"))
            .map_err(|e| Error::io("write lock file", &path, e))?;
        Ok(DirLock { _file: file })
    }
}
