//! Lease history and lease events beyond this machine. The journal is the source: a
//! follower thread per sink tails the journal's durable records (never on the ACK path),
//! turns them into `Event`s and hands them in batches to its `Sink`: PostgreSQL (one row
//! per lease span), NATS JetStream (a stream per site), or a text file (one line per
//! event, rotated daily). Delivery is at least once; each sink keeps its `Position` where
//! it keeps the events, so a restart resumes where it stopped (docs/history.md).

pub mod event;
pub mod follow;
pub mod nats;
pub mod postgres;
pub mod sink;
pub mod text;

pub use event::{Batch, Event, EventKind, Origin, Position, Relay, Role};
pub use follow::{History, Pending, Status};
pub use nats::{NatsOptions, NatsSink};
pub use postgres::{PostgresOptions, PostgresSink};
pub use sink::{Sink, SinkError};
pub use text::{TextOptions, TextSink};
