//! The journal's typed errors. Each carries the path or record it is about, so a log line
//! or an operator's message can say what failed where without more context.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process (or another handle in this one) holds the state directory.
    #[error("state directory {} is in use by another dhcp-server{}", dir.display(), match pid { Some(p) => format!(" (pid {p})"), None => String::new() })]
    Locked { dir: PathBuf, pid: Option<u32> },

    /// The file system could not reserve a new segment. Nothing was written: the record
    /// may be appended again once space is freed (the server stops ACKing meanwhile).
    #[error("no space left for journal segment {} ({bytes} bytes): leases are not being made durable", path.display())]
    NoSpace { path: PathBuf, bytes: u64 },

    #[error("journal {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A segment written by a newer journal format; it is left untouched.
    #[error("journal file {} has format version {found}, this build reads up to {supported}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("journal manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },

    /// A record the caller asked to append breaks a format limit.
    #[error("invalid journal record: {0}")]
    InvalidRecord(&'static str),

    #[error("invalid journal options: {0}")]
    InvalidOptions(&'static str),

    /// An ISC dhcpd leases file that cannot be read.
    #[error("ISC leases file line {line}: {reason}")]
    Import { line: usize, reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
