//! The NATS JetStream sink: lease events become messages of one stream per site, on
//! subjects `dhcp.<site>.lease.<event>`, with the event's id as `Nats-Msg-Id` so the
//! stream's duplicate window turns at-least-once delivery into one message per event.
//! The journal position is kept in a JetStream key-value bucket, written only after
//! every event of a batch is acknowledged (docs/history-nats.md).

use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{header, ConnectOptions, HeaderMap, ServerAddr, StatusCode, Subject};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Notify;
use tracing::{debug, info};

use super::event::{Batch, Event, EventKind, Origin, Position};
use super::sink::{Sink, SinkError};

/// Where and how the sink keeps events. `Default` gives a local single server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `nats://host:port` (or `tls://`); the client fails over between them.
    pub servers: Vec<String>,
    /// The stream's name; `None`: `dhcp-<site>`.
    pub stream: Option<String>,
    /// Copies of each message (and of the position) in a JetStream cluster: 1, 3 or 5.
    pub replicas: usize,
    /// How long the stream keeps an event.
    pub max_age: Duration,
    /// How long the stream remembers an event id. A batch redelivered within it (after a
    /// restart between the acknowledgements and the position store, or after a lost
    /// acknowledgement) adds nothing; it must cover a restart of this server or of NATS.
    pub duplicate_window: Duration,
    /// The key-value bucket holding each server's position.
    pub position_bucket: String,
    /// A `.creds` file (JWT and nkey seed), for servers run with operator accounts.
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Bounds connecting, each JetStream request and each publish acknowledgement.
    pub timeout: Duration,
    /// Publishes whose acknowledgement may be outstanding at once.
    pub max_in_flight: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            servers: vec!["nats://127.0.0.1:4222".into()],
            stream: None,
            replicas: 1,
            max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(10 * 60),
            position_bucket: "dhcp-positions".into(),
            credentials: None,
            user: None,
            password: None,
            timeout: Duration::from_secs(5),
            max_in_flight: 16_384,
        }
    }
}

/// What went wrong, before it becomes the operator's `SinkError`.
#[derive(Debug, Error)]
enum NatsError {
    #[error("{0}")]
    Config(String),
    #[error("cannot start the NATS client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("reading credentials {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
    #[error("creating or updating stream {stream}: {source}")]
    Stream {
        stream: String,
        source: jetstream::context::CreateStreamError,
    },
    #[error("opening key-value bucket {bucket}: {source}")]
    Bucket {
        bucket: String,
        source: jetstream::context::KeyValueError,
    },
    #[error("reading position {key} from bucket {bucket}: {source}")]
    ReadPosition {
        bucket: String,
        key: String,
        source: kv::EntryError,
    },
    #[error(
        "position {key} in bucket {bucket} is '{text}', not a journal position \
         (delete the key to deliver the journal again from its oldest record)"
    )]
    BadPosition {
        bucket: String,
        key: String,
        text: String,
    },
    #[error("encoding event {0} as JSON: {1}")]
    Encode(String, serde_json::Error),
    #[error("not connected (open failed or was not called)")]
    NotOpen,
    #[error("subscribing to acknowledgements on {inbox}: {source}")]
    Subscribe {
        inbox: String,
        source: async_nats::SubscribeError,
    },
    #[error("publishing event {id} to {subject}: {source}")]
    Publish {
        id: String,
        subject: Subject,
        source: async_nats::PublishError,
    },
    #[error("no acknowledgement of event {id} ({subject}) within {waited:?}")]
    AckTimeout {
        id: String,
        subject: Subject,
        waited: Duration,
    },
    #[error("the connection's acknowledgements ended (connection closed)")]
    AcksEnded,
    #[error("no stream takes {subject} (was the stream deleted?)")]
    NoStream { subject: Subject },
    #[error("the stream refused event {id} ({subject}): {reason}")]
    Refused {
        id: String,
        subject: Subject,
        reason: String,
    },
    #[error("storing position {position} as {key} in bucket {bucket}: {source}")]
    StorePosition {
        bucket: String,
        key: String,
        position: Position,
        source: kv::PutError,
    },
}

impl From<NatsError> for SinkError {
    fn from(e: NatsError) -> Self {
        SinkError::new(format_args!("nats: {e}"))
    }
}

/// Bytes a typical event's JSON takes, to size a batch's buffer.
const PAYLOAD_GUESS: usize = 512;

/// A single-threaded runtime driven by whoever needs it: the follower's thread while it
/// delivers, so publishing, the connection's I/O and the acknowledgements share one
/// thread with no hand-over per message (a worker thread costs about 0.7 µs of CPU per
/// event more), and a thread of its own in between, so the connection answers the
/// server's PINGs and reconnects while no batch comes.
struct Driver {
    rt: Arc<tokio::runtime::Runtime>,
    shared: Arc<DriverShared>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

struct DriverShared {
    /// Tells the keeper to let go of the runtime: someone else wants to drive it.
    step_aside: Notify,
    state: Mutex<DriverState>,
    /// Signalled when a delivery is done with the runtime, or at stop.
    free: Condvar,
}

#[derive(Default)]
struct DriverState {
    /// A delivery drives the runtime; the keeper must not take it back until it ends
    /// (it would win the race: it is running, the follower's thread is asleep).
    driving: bool,
    stop: bool,
}

impl Driver {
    fn new() -> std::io::Result<Driver> {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
        let shared = Arc::new(DriverShared {
            step_aside: Notify::new(),
            state: Mutex::new(DriverState::default()),
            free: Condvar::new(),
        });
        let (krt, kshared) = (rt.clone(), shared.clone());
        let keeper = std::thread::Builder::new()
            .name("nats-sink".into())
            .spawn(move || loop {
                {
                    let mut state = kshared.state.lock();
                    while state.driving && !state.stop {
                        kshared.free.wait(&mut state);
                    }
                    if state.stop {
                        return;
                    }
                }
                krt.block_on(kshared.step_aside.notified());
            })?;
        Ok(Driver {
            rt,
            shared,
            keeper: Some(keeper),
        })
    }

    /// Runs `f` to completion on this thread, which takes over driving the runtime as
    /// soon as the keeper lets go (until then the keeper drives its I/O).
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.shared.state.lock().driving = true;
        self.shared.step_aside.notify_one();
        let out = self.rt.block_on(f);
        self.shared.state.lock().driving = false;
        self.shared.free.notify_one();
        out
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.free.notify_one();
        self.shared.step_aside.notify_one();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// A live connection, the bucket of positions, and where its publishes are acknowledged.
struct Conn {
    client: async_nats::Client,
    positions: kv::Store,
    /// Every acknowledgement of this connection's publishes: one subscription to
    /// `<inbox>.*`, each publish replied to at `<inbox>.<its number>`.
    acks: async_nats::Subscriber,
    /// `<inbox>.`
    reply_prefix: String,
    /// The number of the next publish; never reused on the connection, so the late
    /// acknowledgement of a batch that failed cannot pass for one of the next batch.
    next_reply: u64,
}

/// A batch's acknowledgements: which events have theirs.
struct Acks {
    /// The reply number of the batch's first event.
    base: u64,
    acked: Vec<bool>,
    /// Events published so far: an acknowledgement beyond them is not one.
    published: usize,
    outstanding: usize,
    duplicates: usize,
    /// The last publish or accepted acknowledgement: the timeout runs from there, so
    /// stray messages on the inbox cannot keep a batch waiting for ever.
    progress: tokio::time::Instant,
}

/// What a JetStream publish acknowledgement says (the rest of it is not needed).
#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    duplicate: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// Delivers lease events to a JetStream stream (see the file's first comment).
pub struct NatsSink {
    opts: NatsOptions,
    origin: Origin,
    stream: String,
    /// This server's key in the position bucket: `<site>.<server>`, escaped.
    key: String,
    /// The subject of each event kind, made once: publishing allocates no subject.
    subjects: Vec<(EventKind, Subject)>,
    servers: Vec<ServerAddr>,
    /// Before `runtime`: dropped first, while its runtime still runs.
    conn: Option<Conn>,
    runtime: Driver,
}

impl NatsSink {
    /// Checks the options and names against what NATS accepts; connects only at `open`.
    pub fn new(opts: NatsOptions, origin: Origin) -> Result<NatsSink, SinkError> {
        Self::build(opts, origin).map_err(SinkError::from)
    }

    fn build(opts: NatsOptions, origin: Origin) -> Result<NatsSink, NatsError> {
        let bad = |what: String| Err(NatsError::Config(what));
        if !is_token(&origin.site) {
            return bad(format!(
                "site '{}' cannot be a subject token (letters, digits, '-' and '_' only)",
                origin.site
            ));
        }
        // The server's name goes into every Nats-Msg-Id header.
        if origin.server.is_empty() || origin.server.chars().any(char::is_control) {
            return bad(format!(
                "server name {:?} cannot be a header value",
                origin.server
            ));
        }
        let stream = opts
            .stream
            .clone()
            .unwrap_or_else(|| format!("dhcp-{}", origin.site));
        if !is_token(&stream) {
            return bad(format!(
                "stream name '{stream}': letters, digits, '-' and '_' only"
            ));
        }
        if !is_token(&opts.position_bucket) {
            return bad(format!(
                "position bucket '{}': letters, digits, '-' and '_' only",
                opts.position_bucket
            ));
        }
        if !matches!(opts.replicas, 1 | 3 | 5) {
            return bad(format!("replicas {}: 1, 3 or 5", opts.replicas));
        }
        if opts.duplicate_window > opts.max_age {
            return bad("the duplicate window is longer than max_age".into());
        }
        if opts.max_in_flight == 0 || opts.timeout.is_zero() {
            return bad("max_in_flight and timeout must be above zero".into());
        }
        if opts.user.is_some() != opts.password.is_some() {
            return bad("user and password go together".into());
        }
        if opts.servers.is_empty() {
            return bad("no NATS server given".into());
        }
        let servers = opts
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| NatsError::Config(format!("server '{s}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subjects = EventKind::ALL
            .iter()
            .map(|&k| (k, Subject::from(subject(&origin.site, k))))
            .collect();
        let runtime = Driver::new().map_err(NatsError::Runtime)?;
        Ok(NatsSink {
            key: format!("{}.{}", origin.site, key_part(&origin.server)),
            stream,
            subjects,
            servers,
            runtime,
            conn: None,
            opts,
            origin,
        })
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// This server's key in the position bucket.
    pub fn position_key(&self) -> &str {
        &self.key
    }

    async fn connect(&self) -> Result<(Conn, Option<Position>), NatsError> {
        let o = &self.opts;
        let mut connect = match &o.credentials {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.clone(),
                    source,
                })?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&o.user, &o.password) {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        let client = connect
            .name(format!("dhcp-server {}", self.origin.server))
            .connection_timeout(o.timeout)
            .request_timeout(Some(o.timeout))
            // Room for every acknowledgement in flight, so none is dropped while
            // publishing runs ahead of reading them.
            .subscription_capacity(o.max_in_flight.saturating_mul(2).max(1024))
            // Subjects are made from names `new` checked; no scan per publish.
            .skip_subject_validation(true)
            .connect(self.servers.clone())
            .await
            .map_err(|source| NatsError::Connect {
                servers: o.servers.join(","),
                source,
            })?;
        let js = jetstream::context::ContextBuilder::new()
            .timeout(o.timeout)
            .build(client.clone());
        js.create_or_update_stream(stream::Config {
            name: self.stream.clone(),
            description: Some(format!("DHCP lease events of site {}", self.origin.site)),
            subjects: vec![format!("dhcp.{}.lease.>", self.origin.site)],
            storage: stream::StorageType::File,
            num_replicas: o.replicas,
            max_age: o.max_age,
            duplicate_window: o.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|source| NatsError::Stream {
            stream: self.stream.clone(),
            source,
        })?;
        // The bucket's stream is made here, as the client's key-value API would make it,
        // because that API first reads the account's limits in a shape nats-server 2.9
        // does not send. Reads go to the stream's leader (no direct get): a replica may
        // be a put behind, and an older position only means more redelivery.
        let bucket_stream = format!("KV_{}", o.position_bucket);
        js.create_or_update_stream(stream::Config {
            name: bucket_stream.clone(),
            description: Some("journal positions of DHCP servers' history sinks".into()),
            subjects: vec![format!("$KV.{}.>", o.position_bucket)],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            num_replicas: o.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| NatsError::Stream {
            stream: bucket_stream,
            source,
        })?;
        let positions = js
            .get_key_value(&o.position_bucket)
            .await
            .map_err(|source| NatsError::Bucket {
                bucket: o.position_bucket.clone(),
                source,
            })?;
        let stored = positions
            .get(&self.key)
            .await
            .map_err(|source| NatsError::ReadPosition {
                bucket: o.position_bucket.clone(),
                key: self.key.clone(),
                source,
            })?;
        let position = match stored {
            None => None,
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                Some(
                    text.parse::<Position>()
                        .map_err(|_| NatsError::BadPosition {
                            bucket: o.position_bucket.clone(),
                            key: self.key.clone(),
                            text: text.into_owned(),
                        })?,
                )
            }
        };
        let inbox = client.new_inbox();
        let acks = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|source| NatsError::Subscribe {
                inbox: inbox.clone(),
                source,
            })?;
        let conn = Conn {
            client,
            positions,
            acks,
            reply_prefix: format!("{inbox}."),
            next_reply: 0,
        };
        Ok((conn, position))
    }

    /// Publishes the batch pipelined, in batch order on one connection, and awaits every
    /// acknowledgement. An event waits for the acknowledgement of the previous event of
    /// its address before it goes out: when a publish fails (a node dies, a leader is
    /// elected), no later event of that address can be in the stream yet, so the
    /// redelivery keeps each address's events in order there too.
    ///
    /// This is JetStream's asynchronous publish done by hand on the core client: one
    /// subscription for all acknowledgements and a reply subject that is a number,
    /// rather than a channel, a timer and an inbox subscription entry per event.
    async fn publish(&self, conn: &mut Conn, batch: &Batch) -> Result<(), NatsError> {
        let events = &batch.events;
        let mut acks = Acks {
            base: conn.next_reply,
            acked: vec![false; events.len()],
            published: 0,
            outstanding: 0,
            duplicates: 0,
            progress: tokio::time::Instant::now(),
        };
        conn.next_reply += events.len() as u64;
        let mut last: HashMap<Ipv4Addr, usize> = HashMap::with_capacity(events.len());
        // One buffer for the batch's payloads and reply subjects, each a slice of it: no
        // allocation per event for them.
        let per_event = PAYLOAD_GUESS + conn.reply_prefix.len() + 20;
        let mut buf = BytesMut::with_capacity(events.len() * per_event);
        for (i, event) in events.iter().enumerate() {
            if let Some(&previous) = last.get(&event.addr) {
                while !acks.acked[previous] {
                    self.next_ack(conn, events, &mut acks).await?;
                }
            }
            while acks.outstanding >= self.opts.max_in_flight {
                self.next_ack(conn, events, &mut acks).await?;
            }
            let id = event.id(&self.origin);
            let json = JsonEvent {
                event,
                id: &id,
                origin: &self.origin,
            };
            serde_json::to_writer((&mut buf).writer(), &json)
                .map_err(|e| NatsError::Encode(id.clone(), e))?;
            let payload = buf.split().freeze();
            buf.put_slice(conn.reply_prefix.as_bytes());
            buf.put_slice(itoa::Buffer::new().format(acks.base + i as u64).as_bytes());
            let reply = Subject::from_utf8(buf.split().freeze())
                .unwrap_or_else(|_| Subject::from(conn.reply_prefix.as_str()));
            let subject = self.subject_of(event.kind);
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, id);
            if let Err(source) = conn
                .client
                .publish_with_reply_and_headers(subject.clone(), reply, headers, payload)
                .await
            {
                return Err(NatsError::Publish {
                    id: event.id(&self.origin),
                    subject,
                    source,
                });
            }
            acks.published += 1;
            acks.progress = tokio::time::Instant::now();
            acks.outstanding += 1;
            last.insert(event.addr, i);
        }
        while acks.outstanding > 0 {
            self.next_ack(conn, events, &mut acks).await?;
        }
        if acks.duplicates > 0 {
            info!(
                "nats: {} of {} events were already in stream {} (redelivery)",
                acks.duplicates,
                events.len(),
                self.stream
            );
        }
        Ok(())
    }

    /// Takes one acknowledgement off the connection and records it; fails on a refusal
    /// or when none comes within the timeout.
    async fn next_ack(
        &self,
        conn: &mut Conn,
        events: &[Event],
        acks: &mut Acks,
    ) -> Result<(), NatsError> {
        let deadline = acks.progress + self.opts.timeout;
        let timed_out = || {
            let oldest = acks.acked.iter().position(|a| !a).unwrap_or(0);
            match events.get(oldest) {
                Some(e) => NatsError::AckTimeout {
                    id: e.id(&self.origin),
                    subject: self.subject_of(e.kind),
                    waited: self.opts.timeout,
                },
                None => NatsError::AcksEnded,
            }
        };
        // Most acknowledgements are already queued: no timer for those.
        let message = match conn.acks.next().now_or_never() {
            Some(m) => m,
            None => match tokio::time::timeout_at(deadline, conn.acks.next()).await {
                Ok(m) => m,
                Err(_) => return Err(timed_out()),
            },
        };
        // What does not count for this batch is passed over, until the deadline.
        let stray = || {
            if tokio::time::Instant::now() > deadline {
                Err(timed_out())
            } else {
                Ok(())
            }
        };
        let message = message.ok_or(NatsError::AcksEnded)?;
        let index = message
            .subject
            .as_str()
            .strip_prefix(conn.reply_prefix.as_str())
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| n.checked_sub(acks.base))
            .and_then(|i| usize::try_from(i).ok());
        // Anything else is the late acknowledgement of a batch that failed before.
        let Some((i, event)) = index.and_then(|i| Some((i, events.get(i)?))) else {
            return stray();
        };
        // A second answer, or one to a publish not made (a confused server), counts for
        // nothing: the position is stored only after each event's own acknowledgement.
        if i >= acks.published || acks.acked[i] {
            return stray();
        }
        let subject = || self.subject_of(event.kind);
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(NatsError::NoStream { subject: subject() });
        }
        let refused = |reason: String| NatsError::Refused {
            id: event.id(&self.origin),
            subject: subject(),
            reason,
        };
        let ack: PubAck = serde_json::from_slice(&message.payload).map_err(|e| {
            refused(format!(
                "unreadable acknowledgement {:?}: {e}",
                String::from_utf8_lossy(&message.payload)
            ))
        })?;
        if let Some(e) = ack.error {
            return Err(refused(format!(
                "{} (code {}, error code {})",
                e.description, e.code, e.err_code
            )));
        }
        acks.acked[i] = true;
        acks.outstanding -= 1;
        acks.progress = tokio::time::Instant::now();
        acks.duplicates += usize::from(ack.duplicate);
        Ok(())
    }

    fn subject_of(&self, kind: EventKind) -> Subject {
        self.subjects
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| Subject::from(subject(&self.origin.site, kind)))
    }

    async fn store_position(&self, conn: &Conn, position: &Position) -> Result<(), NatsError> {
        conn.positions
            .put(&self.key, Bytes::from(position.to_string()))
            .await
            .map(drop)
            .map_err(|source| NatsError::StorePosition {
                bucket: self.opts.position_bucket.clone(),
                key: self.key.clone(),
                position: position.clone(),
                source,
            })
    }
}

impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn open(&mut self) -> Result<Option<Position>, SinkError> {
        // A new connection each time: the old one may be half dead after the error that
        // made the follower call again.
        self.conn = None;
        let (conn, position) = self.runtime.block_on(self.connect())?;
        match &position {
            Some(p) => info!(
                "nats: stream {} ready, {} resumes at {p}",
                self.stream, self.key
            ),
            None => info!(
                "nats: stream {} ready, no position stored for {}",
                self.stream, self.key
            ),
        }
        self.conn = Some(conn);
        Ok(position)
    }

    fn deliver(&mut self, batch: &Batch) -> Result<(), SinkError> {
        // Taken, and put back only after a success: after an error the connection is
        // dropped, and only `open` makes another.
        let mut conn = self.conn.take().ok_or(NatsError::NotOpen)?;
        self.runtime.block_on(async {
            self.publish(&mut conn, batch).await?;
            self.store_position(&conn, &batch.after).await
        })?;
        self.conn = Some(conn);
        debug!(
            "nats: {} events delivered, position {}",
            batch.events.len(),
            batch.after
        );
        Ok(())
    }
}

/// `Event::to_json`'s object, written straight into the batch's buffer rather than built
/// as a `serde_json::Value` first (a test holds the two equal). Keys go in the order a
/// `Value`'s map prints them, so both print the same bytes.
struct JsonEvent<'a> {
    event: &'a Event,
    id: &'a str,
    origin: &'a Origin,
}

impl Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (e, o) = (self.event, self.origin);
        let mut m = s.serialize_map(Some(18))?;
        m.serialize_entry("address", &Shown(Dotted(e.addr)))?;
        m.serialize_entry("at", &e.at)?;
        m.serialize_entry("circuit-id", &OptHex(&e.relay.circuit_id))?;
        m.serialize_entry("client-id", &OptHex(&e.client_id))?;
        m.serialize_entry("ends", &e.ends)?;
        m.serialize_entry("event", e.kind.as_str())?;
        m.serialize_entry("giaddr", &e.relay.giaddr.map(|a| Shown(Dotted(a))))?;
        m.serialize_entry("hardware-address", &Shown(Hex(e.hw.bytes())))?;
        m.serialize_entry("hardware-type", &e.hw.htype)?;
        let host = (!e.host_name.is_empty()).then(|| String::from_utf8_lossy(&e.host_name));
        m.serialize_entry("host-name", &host)?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("remote-id", &OptHex(&e.relay.remote_id))?;
        m.serialize_entry("role", o.role.as_str())?;
        m.serialize_entry("server", &o.server)?;
        m.serialize_entry("site", &o.site)?;
        m.serialize_entry("starts", &e.starts)?;
        m.serialize_entry("state", e.state.isc_name())?;
        m.serialize_entry("subscriber-id", &OptHex(&e.relay.subscriber_id))?;
        m.end()
    }
}

/// A value serialized as its `Display` text, without an intermediate `String`.
struct Shown<T>(T);

impl<T: fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Bytes as `dhcp_proto::lease::hex` writes them: `01:ab:ff`. By hand, as `Dotted`:
/// the formatting machinery per byte was a tenth of the sink's CPU.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, &b) in self.0.iter().enumerate() {
            let text = [
                b':',
                DIGITS[usize::from(b >> 4)],
                DIGITS[usize::from(b & 15)],
            ];
            let text = if i == 0 { &text[1..] } else { &text[..] };
            f.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// An address as `Ipv4Addr` displays it, written in one piece.
struct Dotted(Ipv4Addr);

impl fmt::Display for Dotted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 15];
        let mut n = 0;
        for (i, o) in self.0.octets().into_iter().enumerate() {
            if i > 0 {
                text[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                text[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                text[n] = b'0' + o / 10 % 10;
                n += 1;
            }
            text[n] = b'0' + o % 10;
            n += 1;
        }
        f.write_str(std::str::from_utf8(&text[..n]).map_err(|_| fmt::Error)?)
    }
}

/// Hex, or null for no bytes (a field the client or relay did not send).
struct OptHex<'a>(&'a [u8]);

impl Serialize for OptHex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            s.serialize_none()
        } else {
            s.collect_str(&Hex(self.0))
        }
    }
}

fn subject(site: &str, kind: EventKind) -> String {
    format!("dhcp.{site}.lease.{}", kind.as_str())
}

/// Whether `s` is safe as a subject token, a stream name and a bucket name at once.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A server name as one key-value key token: other bytes than letters, digits, '-' and
/// '_' become `=XX`, so distinct names stay distinct keys.
fn key_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Role;

    fn origin(site: &str, server: &str) -> Origin {
        Origin {
            server: server.into(),
            site: site.into(),
            role: Role::Primary,
        }
    }

    #[test]
    fn names_are_checked_before_any_connection() {
        let ok = NatsSink::new(NatsOptions::default(), origin("eu-west", "dhcp1.example"))
            .expect("valid options");
        assert_eq!(ok.stream(), "dhcp-eu-west");
        assert_eq!(ok.position_key(), "eu-west.dhcp1=2Eexample");
        for (site, server) in [("eu.west", "a"), ("", "a"), ("eu*", "a"), ("eu", "a\r\nb")] {
            assert!(
                NatsSink::new(NatsOptions::default(), origin(site, server)).is_err(),
                "{site:?} {server:?}"
            );
        }
        let bad = [
            NatsOptions {
                replicas: 2,
                ..Default::default()
            },
            NatsOptions {
                servers: vec!["nats://[::1".into()],
                ..Default::default()
            },
            NatsOptions {
                servers: vec![],
                ..Default::default()
            },
            NatsOptions {
                user: Some("u".into()),
                ..Default::default()
            },
            NatsOptions {
                duplicate_window: Duration::from_secs(3600),
                max_age: Duration::from_secs(60),
                ..Default::default()
            },
        ];
        for opts in bad {
            let dbg = format!("{opts:?}");
            assert!(NatsSink::new(opts, origin("s", "a")).is_err(), "{dbg}");
        }
    }

    #[test]
    fn deliver_before_open_is_an_error_not_a_panic() {
        let mut sink = NatsSink::new(NatsOptions::default(), origin("s", "a")).unwrap();
        let err = sink.deliver(&Batch::default()).unwrap_err();
        assert!(err.0.contains("not connected"), "{err}");
    }

    #[test]
    fn payload_is_to_json() {
        use dhcp_proto::lease::{BindingState, HwAddr};
        use std::net::Ipv4Addr;
        let o = origin("s", "srv \"one\"");
        let plain = Event {
            kind: EventKind::Granted,
            state: BindingState::Active,
            at: 1,
            addr: Ipv4Addr::new(192, 0, 2, 7),
            hw: HwAddr::new(1, &[2, 0, 0, 0, 0, 0xff]),
            client_id: Vec::new(),
            host_name: Vec::new(),
            relay: Default::default(),
            starts: 1,
            ends: dhcp_proto::lease::NEVER,
            stamp: 9,
            shard: 0,
            seq: 0,
        };
        let full = Event {
            kind: EventKind::ReservationRemoved,
            state: BindingState::Free,
            client_id: vec![1, 2, 0, 0, 0, 0, 0xff],
            // Quotes, a control byte and bytes that are not UTF-8.
            host_name: b"a\"b\x01c\xff\xfe".to_vec(),
            relay: crate::history::Relay {
                circuit_id: b"eth0".to_vec(),
                remote_id: vec![0xab],
                subscriber_id: b"sub".to_vec(),
                giaddr: Some(Ipv4Addr::new(198, 51, 100, 1)),
            },
            ..plain.clone()
        };
        let mut events = vec![full];
        for addr in [
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.9",
            "203.0.113.40",
            "192.0.2.1",
        ] {
            events.push(Event {
                addr: addr.parse().unwrap(),
                ..plain.clone()
            });
        }
        events.push(plain);
        for e in events {
            let id = e.id(&o);
            let bytes = serde_json::to_vec(&JsonEvent {
                event: &e,
                id: &id,
                origin: &o,
            })
            .unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(parsed, e.to_json(&o));
        }
    }

    #[test]
    fn distinct_server_names_make_distinct_keys() {
        assert_ne!(key_part("a.b"), key_part("a=2Eb"));
        assert_eq!(key_part("a=2Eb"), "a=3D2Eb");
    }
}
