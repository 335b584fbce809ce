//! What a destination of lease events must do. Sinks are driven by their own follower
//! thread, one call at a time, so they may block (an async client runs on a runtime the
//! sink owns); a slow or dead sink only delays its own follower.

use std::fmt;

use super::event::{Batch, Position};

/// A destination of lease events: PostgreSQL, NATS JetStream, a text file.
pub trait Sink: Send {
    /// Its kind, as `ctl status`, the metrics and the log name it (`postgres`, `nats`,
    /// `text`).
    fn kind(&self) -> &'static str;

    /// Connects (again, after an error) and reads the position stored with the events
    /// already delivered; `None` when the sink holds none yet (the follower then starts at
    /// the oldest record the journal still has).
    fn open(&mut self) -> Result<Option<Position>, SinkError>;

    /// Stores `batch.events`, in order, and `batch.after` with them, so that a restart at
    /// any moment either finds both or neither (or, where the engine cannot make the two
    /// one transaction, finds events redelivered, which the sink deduplicates). On an error
    /// nothing is assumed stored: the follower calls `open` again and redelivers.
    fn deliver(&mut self, batch: &Batch) -> Result<(), SinkError>;
}

/// Why a sink could not open or deliver, in words for the operator's log and
/// `ctl status` (the follower retries; it never gives up on a sink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

impl SinkError {
    pub fn new(what: impl fmt::Display) -> Self {
        SinkError(what.to_string())
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}
