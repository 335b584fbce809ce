//! The journal's identity: a random number made with the state directory and kept in
//! it. A lease history sink stores its position with this id, so a position into a
//! journal that was since removed or replaced (a new state directory, a restore from
//! elsewhere) is known for another journal's rather than followed into the wrong records.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use super::error::{Error, Result};
use super::segment::sync_dir;

pub const FILE: &str = "JOURNAL-ID";

/// The directory's id, made (written, synced, renamed into place) if it has none. A file
/// that does not read as an id is replaced: the worst it costs is sinks starting over.
pub fn read_or_make(dir: &Path) -> Result<u64> {
    let path = dir.join(FILE);
    if let Some(id) = fs::read_to_string(&path)
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
    {
        return Ok(id);
    }
    let mut bytes = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("read /dev/urandom for the journal id", &path, e))?;
    let id = u64::from_le_bytes(bytes);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(|e| Error::io("write journal id", &tmp, e))?;
    super::owner::give(&f).map_err(|e| Error::io("give journal id", &tmp, e))?;
    writeln!(f, "{id:016x}")
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write journal id", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename journal id", &path, e))?;
    sync_dir(dir)?;
    Ok(id)
}
