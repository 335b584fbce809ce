//! The control protocol, version 1: one JSON object per line each way. A request names
//! `version`, an optional `id` (echoed, so a client may pipeline) and a `command`; the
//! command's arguments sit beside them in the same object. A reply carries `ok` and
//! either `result` or `error {code, message}`.
//!
//! Parsing is strict (unknown fields and commands are errors, not ignored) so a typo in
//! a script fails loudly instead of, say, listing every lease when one was asked for.
//! Every failure is a `ProtocolError` with a stable code; nothing here panics on input.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{Subscriber, SubscriberKind};

use super::types::{
    parse_hex, ClassMember, ClientId, ClientIdentity, LeaseFilter, MacAddr, MemberQuery, PageQuery,
    ReservationSpec, DEFAULT_PAGE, MAX_PAGE,
};
use dhcp_proto::lease::{MAX_CLASS_NAME, MAX_MEMBER_VALUE};

/// The schema version this server speaks; a request with another is refused.
pub const VERSION: u64 = 1;

/// The longest request line accepted, newline excluded. Real requests are under 1 KiB;
/// the cap keeps a runaway client from growing the server's memory.
pub const MAX_LINE: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply: a string, a number or null.
    pub id: Value,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Status,
    Stats,
    Metrics,
    Leases(PageQuery),
    Reservations(PageQuery),
    ReservationAdd(ReservationSpec),
    ReservationDel(Ipv4Addr),
    LeaseRelease(Ipv4Addr),
    LeaseDelete(Ipv4Addr),
    /// The members of matching classes, the file's and the run-time ones.
    ClassMembers(MemberQuery),
    ClassMemberAdd(ClassMember),
    ClassMemberDel(ClassMember),
    Reload,
    Shutdown,
    /// Failover: declare the partner down.
    FailoverPartnerDown,
    /// Failover: ask the partner for every binding again.
    FailoverResync,
}

impl Command {
    /// The name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Stats => "stats",
            Command::Metrics => "metrics",
            Command::Leases(_) => "leases",
            Command::Reservations(_) => "reservations",
            Command::ReservationAdd(_) => "reservation-add",
            Command::ReservationDel(_) => "reservation-del",
            Command::LeaseRelease(_) => "lease-release",
            Command::LeaseDelete(_) => "lease-delete",
            Command::ClassMembers(_) => "class-members",
            Command::ClassMemberAdd(_) => "class-member-add",
            Command::ClassMemberDel(_) => "class-member-del",
            Command::Reload => "reload",
            Command::Shutdown => "shutdown",
            Command::FailoverPartnerDown => "failover-partner-down",
            Command::FailoverResync => "failover-resync",
        }
    }
}

/// Why a request got an error reply before (or instead of) reaching the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, not an object, or a field of the wrong type.
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported (this server speaks {VERSION})")]
    UnsupportedVersion(String),
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("request line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("uid {uid} gid {gid} may not use this control socket")]
    PermissionDenied { uid: u32, gid: u32 },
    #[error("too many control connections; try again")]
    Busy,
}

impl ProtocolError {
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::Malformed(_) => "malformed-request",
            ProtocolError::UnsupportedVersion(_) => "unsupported-version",
            ProtocolError::UnknownCommand(_) => "unknown-command",
            ProtocolError::InvalidArgument(_) => "invalid-argument",
            ProtocolError::LineTooLong => "line-too-long",
            ProtocolError::PermissionDenied { .. } => "permission-denied",
            ProtocolError::Busy => "busy",
        }
    }
}

/// A reply line. `result` and `error` are exclusive; `ok` says which is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub version: u64,
    #[serde(default)]
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl Reply {
    pub fn success(id: Value, result: Value) -> Self {
        Self {
            version: VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn failure(id: Value, code: &str, message: String) -> Self {
        Self {
            version: VERSION,
            id,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: code.to_owned(),
                message,
            }),
        }
    }

    pub fn protocol_error(id: Value, e: &ProtocolError) -> Self {
        Self::failure(id, e.code(), e.to_string())
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing a Value tree with string keys cannot fail; the fallback keeps the
        // connection answering even if that ever changed.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(
                r#"{{"version":{VERSION},"id":null,"ok":false,"error":{{"code":"internal","message":"cannot encode the reply"}}}}"#
            )
            .into_bytes()
        });
        line.push(b'\n');
        line
    }
}

/// Parses one request line (without its newline). On error, returns the request's `id`
/// when it could be read, so the error reply still matches its request.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, ProtocolError)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, ProtocolError::Malformed(e.to_string())))?;
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            ProtocolError::Malformed("a request is a JSON object".into()),
        ));
    };
    let id = match obj.remove("id") {
        None => Value::Null,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => id,
        Some(_) => {
            return Err((
                Value::Null,
                ProtocolError::Malformed("'id' is a string, a number or null".into()),
            ))
        }
    };
    match parse_fields(obj) {
        Ok(command) => Ok(Request { id, command }),
        Err(e) => Err((id, e)),
    }
}

fn parse_fields(mut obj: Map<String, Value>) -> Result<Command, ProtocolError> {
    match obj.remove("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(v @ Value::Number(_)) => return Err(ProtocolError::UnsupportedVersion(v.to_string())),
        Some(_) => return Err(ProtocolError::Malformed("'version' is a number".into())),
        None => {
            return Err(ProtocolError::Malformed(format!(
                "missing 'version' (use {VERSION})"
            )))
        }
    }
    let name = match obj.remove("command") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ProtocolError::Malformed("'command' is a string".into())),
        None => return Err(ProtocolError::Malformed("missing 'command'".into())),
    };
    let args = Value::Object(obj);
    Ok(match name.as_str() {
        "status" => no_args(args, Command::Status)?,
        "stats" => no_args(args, Command::Stats)?,
        "metrics" => no_args(args, Command::Metrics)?,
        "reload" => no_args(args, Command::Reload)?,
        "shutdown" => no_args(args, Command::Shutdown)?,
        "failover-partner-down" => no_args(args, Command::FailoverPartnerDown)?,
        "failover-resync" => no_args(args, Command::FailoverResync)?,
        "leases" => Command::Leases(arguments::<LeasesArgs>(args)?.check()?),
        "reservations" => Command::Reservations(arguments::<LeasesArgs>(args)?.check()?),
        "reservation-add" => Command::ReservationAdd(arguments::<ReservationArgs>(args)?.check()?),
        "reservation-del" => Command::ReservationDel(arguments::<AddressArg>(args)?.address),
        "lease-release" => Command::LeaseRelease(arguments::<AddressArg>(args)?.address),
        "lease-delete" => Command::LeaseDelete(arguments::<AddressArg>(args)?.address),
        "class-members" => Command::ClassMembers(arguments::<MembersArgs>(args)?.check()?),
        "class-member-add" => Command::ClassMemberAdd(arguments::<MemberArgs>(args)?.check()?),
        "class-member-del" => Command::ClassMemberDel(arguments::<MemberArgs>(args)?.check()?),
        _ => return Err(ProtocolError::UnknownCommand(name)),
    })
}

/// Reads a command's arguments; serde's message names the bad or unknown field.
fn arguments<T: DeserializeOwned>(args: Value) -> Result<T, ProtocolError> {
    serde_json::from_value(args).map_err(|e| ProtocolError::InvalidArgument(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn no_args(args: Value, command: Command) -> Result<Command, ProtocolError> {
    arguments::<NoArgs>(args).map(|_| command)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressArg {
    address: Ipv4Addr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeasesArgs {
    address: Option<Ipv4Addr>,
    mac: Option<MacAddr>,
    client_id: Option<ClientId>,
    cursor: Option<Ipv4Addr>,
    limit: Option<u32>,
}

impl LeasesArgs {
    fn check(self) -> Result<PageQuery, ProtocolError> {
        let filter = match (self.address, self.mac, self.client_id) {
            (None, None, None) => None,
            (Some(a), None, None) => Some(LeaseFilter::Address(a)),
            (None, Some(m), None) => Some(LeaseFilter::Mac(m)),
            (None, None, Some(c)) => Some(LeaseFilter::ClientId(c)),
            _ => {
                return Err(ProtocolError::InvalidArgument(
                    "give at most one of 'address', 'mac' and 'client_id'".into(),
                ))
            }
        };
        Ok(PageQuery {
            filter,
            cursor: self.cursor,
            limit: page_limit(self.limit)?,
        })
    }
}

/// A page's size: `DEFAULT_PAGE` when not given, else 1 to `MAX_PAGE`.
fn page_limit(limit: Option<u32>) -> Result<u32, ProtocolError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ProtocolError::InvalidArgument(format!(
            "'limit' is 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    Ok(limit)
}

/// A class name as the journal can keep it.
fn class_name(class: String) -> Result<String, ProtocolError> {
    if class.is_empty() || class.len() > MAX_CLASS_NAME {
        return Err(ProtocolError::InvalidArgument(format!(
            "'class' is 1 to {MAX_CLASS_NAME} octets"
        )));
    }
    Ok(class)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersArgs {
    class: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

impl MembersArgs {
    fn check(self) -> Result<MemberQuery, ProtocolError> {
        Ok(MemberQuery {
            class: self.class.map(class_name).transpose()?,
            cursor: self
                .cursor
                .map(|c| ClassMember::from_cursor(&c))
                .transpose()
                .map_err(ProtocolError::InvalidArgument)?,
            limit: page_limit(self.limit)?,
        })
    }
}

/// A member value as text (`value`, its UTF-8 octets) or as octets in hex (`hex`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberArgs {
    class: String,
    value: Option<String>,
    hex: Option<String>,
}

impl MemberArgs {
    fn check(self) -> Result<ClassMember, ProtocolError> {
        let value = match (self.value, self.hex) {
            (Some(v), None) => v.into_bytes(),
            (None, Some(h)) => parse_hex(&h).ok_or_else(|| {
                ProtocolError::InvalidArgument(format!(
                    "'hex' is octets in hex (70:6f:72:74), not '{h}'"
                ))
            })?,
            _ => {
                return Err(ProtocolError::InvalidArgument(
                    "give exactly one of 'value' and 'hex'".into(),
                ))
            }
        };
        if value.is_empty() || value.len() > MAX_MEMBER_VALUE {
            return Err(ProtocolError::InvalidArgument(format!(
                "a member value is 1 to {MAX_MEMBER_VALUE} octets, not {}",
                value.len()
            )));
        }
        Ok(ClassMember {
            class: class_name(self.class)?,
            value,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationArgs {
    address: Ipv4Addr,
    mac: Option<MacAddr>,
    client_id: Option<ClientId>,
    circuit_id: Option<String>,
    remote_id: Option<String>,
    subscriber_id: Option<String>,
    flex_id: Option<String>,
    host_name: Option<String>,
}

/// Option 12 carries at most 255 octets.
const MAX_HOST_NAME: usize = 255;

impl ReservationArgs {
    fn check(self) -> Result<ReservationSpec, ProtocolError> {
        let subscribers = [
            (SubscriberKind::CircuitId, self.circuit_id),
            (SubscriberKind::RemoteId, self.remote_id),
            (SubscriberKind::SubscriberId, self.subscriber_id),
            (SubscriberKind::Flex, self.flex_id),
        ];
        let mut given: Vec<ClientIdentity> = self
            .mac
            .map(ClientIdentity::Mac)
            .into_iter()
            .chain(self.client_id.map(ClientIdentity::ClientId))
            .collect();
        for (kind, v) in subscribers {
            if let Some(v) = v {
                let value = Subscriber::parse_value(&v).ok_or_else(|| {
                    ProtocolError::InvalidArgument(format!(
                        "'{}' is 1 to 255 octets of text, or 0x and hex octets",
                        kind.name().replace('-', "_")
                    ))
                })?;
                given.push(ClientIdentity::Subscriber(kind, value));
            }
        }
        if given.len() != 1 {
            return Err(ProtocolError::InvalidArgument(
                "give exactly one of 'mac', 'client_id', 'circuit_id', 'remote_id', \
                 'subscriber_id' and 'flex_id'"
                    .into(),
            ));
        }
        let client = given.remove(0);
        if let Some(h) = &self.host_name {
            if h.is_empty() || h.len() > MAX_HOST_NAME || h.chars().any(char::is_control) {
                return Err(ProtocolError::InvalidArgument(format!(
                    "'host_name' is 1 to {MAX_HOST_NAME} printable octets"
                )));
            }
        }
        Ok(ReservationSpec {
            address: self.address,
            client,
            host_name: self.host_name,
        })
    }
}

impl Request {
    /// The request as one line, newline included: what `dhcp-server ctl` sends.
    pub fn to_line(&self) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("version".into(), VERSION.into());
        obj.insert("id".into(), self.id.clone());
        obj.insert("command".into(), self.command.name().into());
        let mut put = |k: &str, v: String| {
            obj.insert(k.into(), Value::String(v));
        };
        match &self.command {
            Command::Status
            | Command::Stats
            | Command::Metrics
            | Command::Reload
            | Command::Shutdown
            | Command::FailoverPartnerDown
            | Command::FailoverResync => {}
            Command::Leases(PageQuery {
                filter,
                cursor,
                limit,
            })
            | Command::Reservations(PageQuery {
                filter,
                cursor,
                limit,
            }) => {
                match filter {
                    Some(LeaseFilter::Address(a)) => put("address", a.to_string()),
                    Some(LeaseFilter::Mac(m)) => put("mac", m.to_string()),
                    Some(LeaseFilter::ClientId(c)) => put("client_id", c.to_string()),
                    None => {}
                }
                if let Some(c) = cursor {
                    put("cursor", c.to_string());
                }
                obj.insert("limit".into(), (*limit).into());
            }
            Command::ReservationAdd(r) => {
                put("address", r.address.to_string());
                match &r.client {
                    ClientIdentity::Mac(m) => put("mac", m.to_string()),
                    ClientIdentity::ClientId(c) => put("client_id", c.to_string()),
                    ClientIdentity::Subscriber(kind, v) => {
                        put(&kind.name().replace('-', "_"), Subscriber::format_value(v))
                    }
                }
                if let Some(h) = &r.host_name {
                    put("host_name", h.clone());
                }
            }
            Command::ReservationDel(a) | Command::LeaseRelease(a) | Command::LeaseDelete(a) => {
                put("address", a.to_string())
            }
            Command::ClassMembers(q) => {
                if let Some(c) = &q.class {
                    put("class", c.clone());
                }
                if let Some(c) = &q.cursor {
                    put("cursor", c.cursor());
                }
                obj.insert("limit".into(), q.limit.into());
            }
            Command::ClassMemberAdd(m) | Command::ClassMemberDel(m) => {
                put("class", m.class.clone());
                // Text reads best in a log of requests; other octets go as hex.
                match std::str::from_utf8(&m.value) {
                    Ok(text) => put("value", text.to_owned()),
                    Err(_) => put("hex", dhcp_proto::lease::hex(&m.value)),
                }
            }
        }
        let mut line = Value::Object(obj).to_string().into_bytes();
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Request, (Value, ProtocolError)> {
        parse_request(v.to_string().as_bytes())
    }

    fn code(v: Value) -> &'static str {
        parse(v).unwrap_err().1.code()
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn round_trip(command: Command) {
        let r = Request {
            id: json!(7),
            command,
        };
        let line = r.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(parse_request(&line[..line.len() - 1]).unwrap(), r);
    }

    #[test]
    fn every_command_round_trips() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let cid: ClientId = "01:02:03".parse().unwrap();
        for c in [
            Command::Status,
            Command::Stats,
            Command::Metrics,
            Command::Reload,
            Command::Shutdown,
            Command::FailoverPartnerDown,
            Command::FailoverResync,
            Command::Leases(PageQuery {
                filter: None,
                cursor: None,
                limit: DEFAULT_PAGE,
            }),
            Command::Leases(PageQuery {
                filter: Some(LeaseFilter::Address(a("192.0.2.1"))),
                cursor: Some(a("192.0.2.0")),
                limit: 1,
            }),
            Command::Leases(PageQuery {
                filter: Some(LeaseFilter::Mac(mac)),
                cursor: None,
                limit: MAX_PAGE,
            }),
            Command::Leases(PageQuery {
                filter: Some(LeaseFilter::ClientId(cid.clone())),
                cursor: None,
                limit: 5,
            }),
            Command::ReservationAdd(ReservationSpec {
                address: a("192.0.2.9"),
                client: ClientIdentity::Mac(mac),
                host_name: Some("printer".into()),
            }),
            Command::ReservationAdd(ReservationSpec {
                address: a("192.0.2.9"),
                client: ClientIdentity::ClientId(cid),
                host_name: None,
            }),
            Command::ReservationAdd(ReservationSpec {
                address: a("192.0.2.9"),
                client: ClientIdentity::Subscriber(
                    SubscriberKind::CircuitId,
                    b"olt-1/1/7".to_vec(),
                ),
                host_name: None,
            }),
            Command::ReservationAdd(ReservationSpec {
                address: a("192.0.2.9"),
                client: ClientIdentity::Subscriber(SubscriberKind::Flex, vec![0, 0x1a, b'x']),
                host_name: None,
            }),
            Command::ReservationDel(a("192.0.2.9")),
            Command::Reservations(PageQuery {
                filter: None,
                cursor: Some(a("192.0.2.9")),
                limit: 10,
            }),
            Command::Reservations(PageQuery {
                filter: Some(LeaseFilter::Mac(mac)),
                cursor: None,
                limit: DEFAULT_PAGE,
            }),
            Command::LeaseRelease(a("192.0.2.10")),
            Command::LeaseDelete(a("192.0.2.11")),
            Command::ClassMemberAdd(member("line", b"port-7")),
            Command::ClassMemberDel(member("line", &[0, 0xff, b'/'])),
            Command::ClassMembers(MemberQuery {
                class: None,
                cursor: None,
                limit: DEFAULT_PAGE,
            }),
            Command::ClassMembers(MemberQuery {
                class: Some("line".into()),
                cursor: Some(member("a/b", &[1, 2])),
                limit: 7,
            }),
        ] {
            round_trip(c);
        }
    }

    fn member(class: &str, value: &[u8]) -> ClassMember {
        ClassMember {
            class: class.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn class_member_arguments() {
        for c in ["class-member-add", "class-member-del"] {
            let text =
                parse(json!({"version": 1, "command": c, "class": "line", "value": "port-7"}))
                    .unwrap();
            let hex = parse(json!({"version": 1, "command": c, "class": "line",
                "hex": "70-6f:72742d37"}))
            .unwrap();
            assert_eq!(text.command, hex.command);
            assert_eq!(text.command.name(), c);
            for bad in [
                json!({"version": 1, "command": c, "class": "line"}),
                json!({"version": 1, "command": c, "value": "port-7"}),
                json!({"version": 1, "command": c, "class": "line", "value": "x", "hex": "78"}),
                json!({"version": 1, "command": c, "class": "line", "value": ""}),
                json!({"version": 1, "command": c, "class": "line", "hex": ""}),
                json!({"version": 1, "command": c, "class": "line", "hex": "7"}),
                json!({"version": 1, "command": c, "class": "line", "hex": "zz"}),
                json!({"version": 1, "command": c, "class": "line", "value": "x".repeat(256)}),
                json!({"version": 1, "command": c, "class": "", "value": "x"}),
                json!({"version": 1, "command": c, "class": "c".repeat(256), "value": "x"}),
                json!({"version": 1, "command": c, "class": "line", "value": 7}),
                json!({"version": 1, "command": c, "class": "line", "value": "x", "limit": 1}),
            ] {
                assert_eq!(code(bad.clone()), "invalid-argument", "{bad}");
            }
        }
    }

    #[test]
    fn class_members_arguments() {
        let r = parse(
            json!({"version": 1, "command": "class-members", "class": "line",
            "cursor": "line/70:6f", "limit": 2}),
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::ClassMembers(MemberQuery {
                class: Some("line".into()),
                cursor: Some(member("line", b"po")),
                limit: 2
            })
        );
        for bad in [
            json!({"version": 1, "command": "class-members", "cursor": "line"}),
            json!({"version": 1, "command": "class-members", "cursor": "line/xyz"}),
            json!({"version": 1, "command": "class-members", "limit": 0}),
            json!({"version": 1, "command": "class-members", "class": ""}),
            json!({"version": 1, "command": "class-members", "value": "port-7"}),
        ] {
            assert_eq!(code(bad.clone()), "invalid-argument", "{bad}");
        }
    }

    #[test]
    fn id_is_echoed_and_optional() {
        let r = parse(json!({"version": 1, "command": "status"})).unwrap();
        assert_eq!(r.id, Value::Null);
        let r = parse(json!({"version": 1, "id": "abc", "command": "status"})).unwrap();
        assert_eq!(r.id, json!("abc"));
        // An error after the id was read still carries it.
        let (id, e) = parse(json!({"version": 1, "id": 9, "command": "nope"})).unwrap_err();
        assert_eq!(id, json!(9));
        assert_eq!(e, ProtocolError::UnknownCommand("nope".into()));
        assert_eq!(
            code(json!({"version": 1, "id": [1], "command": "status"})),
            "malformed-request"
        );
    }

    /// Found by the control_request fuzz target: a numeric id of many digits came back
    /// one unit in the last place off (serde_json's default float parsing is not
    /// correctly rounded), so the reply's id was not the request's.
    #[test]
    fn a_long_numeric_id_echoes_exactly() {
        let line = format!(
            r#"{{"version":1,"id":1{}5,"command":"status"}}"#,
            "3".repeat(49)
        );
        let req = parse_request(line.as_bytes()).unwrap();
        let sent = req.to_line();
        let again = parse_request(sent.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(again.id, req.id);
        let reply = Reply::success(req.id.clone(), Value::Null).to_line();
        let back: Reply = serde_json::from_slice(&reply).unwrap();
        assert_eq!(back.id, req.id);
    }

    #[test]
    fn version_is_required_and_checked() {
        assert_eq!(code(json!({"command": "status"})), "malformed-request");
        assert_eq!(
            code(json!({"version": 2, "command": "status"})),
            "unsupported-version"
        );
        assert_eq!(
            code(json!({"version": 1.5, "command": "status"})),
            "unsupported-version"
        );
        assert_eq!(
            code(json!({"version": -1, "command": "status"})),
            "unsupported-version"
        );
        assert_eq!(
            code(json!({"version": "1", "command": "status"})),
            "malformed-request"
        );
    }

    #[test]
    fn command_is_required_and_known() {
        assert_eq!(code(json!({"version": 1})), "malformed-request");
        assert_eq!(
            code(json!({"version": 1, "command": 3})),
            "malformed-request"
        );
        assert_eq!(
            code(json!({"version": 1, "command": "STATUS"})),
            "unknown-command"
        );
        assert_eq!(
            code(json!({"version": 1, "command": ""})),
            "unknown-command"
        );
    }

    #[test]
    fn garbage_lines_are_malformed() {
        for line in [
            &b""[..],
            b"   ",
            b"status",
            b"{",
            b"{\"version\":1,\"command\":\"status\"",
            b"[1,2,3]",
            b"null",
            b"42",
            b"\"status\"",
            b"\xff\xfe\x00",
            b"{\"version\":1,\"command\":\"status\"} trailing",
        ] {
            let (id, e) = parse_request(line).unwrap_err();
            assert_eq!(id, Value::Null);
            assert_eq!(
                e.code(),
                "malformed-request",
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn commands_without_arguments_refuse_extra_fields() {
        for c in [
            "status",
            "stats",
            "metrics",
            "reload",
            "shutdown",
            "failover-partner-down",
            "failover-resync",
        ] {
            assert!(parse(json!({"version": 1, "command": c})).is_ok(), "{c}");
            assert_eq!(
                code(json!({"version": 1, "command": c, "address": "192.0.2.1"})),
                "invalid-argument",
                "{c}"
            );
        }
    }

    #[test]
    fn address_commands_need_one_valid_address() {
        for c in ["reservation-del", "lease-release", "lease-delete"] {
            let ok = parse(json!({"version": 1, "command": c, "address": "192.0.2.1"})).unwrap();
            assert_eq!(ok.command.name(), c);
            for bad in [
                json!({"version": 1, "command": c}),
                json!({"version": 1, "command": c, "address": "192.0.2"}),
                json!({"version": 1, "command": c, "address": "192.0.2.256"}),
                json!({"version": 1, "command": c, "address": 3221225985u32}),
                json!({"version": 1, "command": c, "address": "192.0.2.1", "mac": "02:00:00:00:00:01"}),
            ] {
                assert_eq!(code(bad.clone()), "invalid-argument", "{bad}");
            }
        }
    }

    #[test]
    fn leases_arguments() {
        let r = parse(json!({"version": 1, "command": "leases"})).unwrap();
        assert_eq!(
            r.command,
            Command::Leases(PageQuery {
                filter: None,
                cursor: None,
                limit: DEFAULT_PAGE
            })
        );
        let r = parse(
            json!({"version": 1, "command": "leases", "mac": "02-00-00-00-00-01", "limit": 3}),
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::Leases(PageQuery {
                filter: Some(LeaseFilter::Mac(MacAddr([2, 0, 0, 0, 0, 1]))),
                cursor: None,
                limit: 3
            })
        );
        for bad in [
            json!({"version": 1, "command": "leases", "address": "192.0.2.1", "mac": "02:00:00:00:00:01"}),
            json!({"version": 1, "command": "leases", "mac": "02:00:00:00:00"}),
            json!({"version": 1, "command": "leases", "client_id": "xyz"}),
            json!({"version": 1, "command": "leases", "limit": 0}),
            json!({"version": 1, "command": "leases", "limit": MAX_PAGE + 1}),
            json!({"version": 1, "command": "leases", "limit": -1}),
            json!({"version": 1, "command": "leases", "limit": "10"}),
            json!({"version": 1, "command": "leases", "cursor": "x"}),
            json!({"version": 1, "command": "leases", "hw": "02:00:00:00:00:01"}),
        ] {
            assert_eq!(code(bad.clone()), "invalid-argument", "{bad}");
        }
    }

    #[test]
    fn reservation_add_arguments() {
        let ok = json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5",
            "client_id": "01:02", "host_name": "cam-1"});
        assert!(parse(ok).is_ok());
        for bad in [
            json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5"}),
            json!({"version": 1, "command": "reservation-add", "mac": "02:00:00:00:00:01"}),
            json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5",
                "mac": "02:00:00:00:00:01", "client_id": "01"}),
            json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5",
                "mac": "02:00:00:00:00:01", "host_name": ""}),
            json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5",
                "mac": "02:00:00:00:00:01", "host_name": "a\nb"}),
            json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5",
                "mac": "02:00:00:00:00:01", "host_name": "x".repeat(256)}),
            json!({"version": 1, "command": "reservation-add", "address": "192.0.2.5",
                "mac": "02:00:00:00:00:01", "options": {}}),
        ] {
            assert_eq!(code(bad.clone()), "invalid-argument", "{bad}");
        }
    }

    #[test]
    fn replies_are_one_line_and_decode() {
        let ok = Reply::success(json!("x"), json!({"a": "line\nbreak"}));
        let line = ok.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Reply = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, ok);
        let err = Reply::protocol_error(Value::Null, &ProtocolError::LineTooLong);
        let v: Value = serde_json::from_slice(&err.to_line()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "line-too-long");
        assert!(v.get("result").is_none());
    }
}
