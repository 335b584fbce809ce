//! A blocking client for the control socket: one connection, one request at a time, each
//! reply matched to its request by id. `dhcp-server ctl` is built on it; tests and tools
//! that talk to a server can use it as they are.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::protocol::{Command, Reply, Request, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control socket at {0} (is the server running? see --socket)")]
    NoSocket(PathBuf),
    #[error("may not connect to {0} (run as root or as a member of the socket's group)")]
    NoAccess(PathBuf),
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to the server: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection without answering")]
    Closed,
    #[error("unexpected reply from the server: {0}")]
    BadReply(String),
    /// The server answered with an error (`code` is one of the protocol's stable codes).
    #[error("{code}: {message}")]
    Server { code: String, message: String },
}

/// One connection to a server, requests numbered so each reply is matched to its own.
pub struct Client {
    stream: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path`; every read and write then waits at most `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NoSocket(path.to_owned())
            }
            io::ErrorKind::PermissionDenied => ClientError::NoAccess(path.to_owned()),
            _ => ClientError::Connect {
                path: path.to_owned(),
                source: e,
            },
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            stream: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Sends one command and returns its result, or the server's error.
    pub fn call(&mut self, command: Command) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request {
            id: id.into(),
            command,
        }
        .to_line();
        // A server that refuses us (permission, busy) answers and closes at once, so the
        // write may fail while its explanation waits to be read: read before giving up.
        let wrote = self.stream.get_mut().write_all(&line);
        let mut buf = Vec::new();
        let read = self.stream.read_until(b'\n', &mut buf);
        if buf.is_empty() {
            wrote?;
            read?;
            return Err(ClientError::Closed);
        }
        let reply: Reply =
            serde_json::from_slice(&buf).map_err(|e| ClientError::BadReply(e.to_string()))?;
        if reply.version != VERSION {
            return Err(ClientError::BadReply(format!(
                "protocol version {} (this client speaks {VERSION})",
                reply.version
            )));
        }
        match (reply.ok, reply.result, reply.error) {
            (false, _, Some(e)) => Err(ClientError::Server {
                code: e.code,
                message: e.message,
            }),
            // Refusals are sent before any request is read, so they carry no id.
            (true, Some(result), None) if reply.id == json!(id) => Ok(result),
            _ => Err(ClientError::BadReply(
                String::from_utf8_lossy(&buf).trim_end().to_owned(),
            )),
        }
    }

    /// `call`, with the result decoded into the type the command answers with (`Status`
    /// for `Command::Status`, `LeasePage` for `Command::Leases`...).
    pub fn ask<T: DeserializeOwned>(&mut self, command: Command) -> Result<T, ClientError> {
        decode(self.call(command)?)
    }
}

/// A result decoded into the type its command answers with.
pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::BadReply(e.to_string()))
}
