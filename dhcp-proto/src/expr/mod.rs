//! The client-class test language: what operators write in dhcpd's `match if` and Kea's
//! `"test"` to sort clients by the contents of their requests (relay circuit ids, vendor
//! classes, hardware vendors). docs/classes.md describes the language for operators.
//!
//! A test is compiled once, when the configuration loads, into a small tree; a request is
//! indexed once, into a `Packet`, when classes are configured at all. Evaluation then
//! reads every field it needs in O(1) from that index, never allocates, and recurses no
//! deeper than the parser allowed, so a bad test can cost an operator a reload but never
//! cost a worker a packet.

mod parse;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::wire::layout::{CIADDR, GIADDR, HLEN, HTYPE};
use crate::wire::relay::SubOptions;
use crate::wire::{code, Message, Request};

pub use parse::{MAX_DEPTH, MAX_LEN};

/// Why a test or value did not compile. `offset` counts characters before the fault, so
/// an operator's editor column is `offset + 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {}: {}", .offset + 1, .reason)]
pub struct ParseError {
    pub offset: usize,
    pub reason: String,
}

/// A compiled boolean test (a class's `test`, dhcpd's `match if`).
///
/// Display prints the test as source text in a canonical form (single spaces, only the
/// parentheses precedence needs, literals in the form they were written), which parses
/// back to an equal test.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    cond: Cond,
    /// Every class `member()` names, each once, so the loader can order classes and
    /// refuse cycles without walking the tree.
    classes: Box<[u16]>,
}

/// A compiled value expression: the key of dhcpd's `match option agent.circuit-id` with
/// its subclasses, or of Kea's flex-id.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    expr: Expr,
}

impl Test {
    /// Compiles `src`. `class` resolves a name used in `member('...')` to a class index;
    /// returning None refuses the name, as Kea refuses classes not defined before the
    /// one being loaded (which rules out cycles).
    pub fn parse(
        src: &str,
        class: &mut dyn FnMut(&str) -> Option<u16>,
    ) -> Result<Test, ParseError> {
        parse::test(src, class)
    }

    /// Whether the request passes the test. `member` says whether the request already
    /// belongs to a class, by index.
    pub fn eval(&self, pkt: &Packet<'_>, member: &dyn Fn(u16) -> bool) -> bool {
        self.cond.holds(pkt, member)
    }

    /// Class indexes this test refers to through member().
    pub fn classes(&self) -> impl Iterator<Item = u16> + '_ {
        self.classes.iter().copied()
    }
}

impl Value {
    pub fn parse(src: &str) -> Result<Value, ParseError> {
        parse::value(src)
    }

    /// The value in this request; None when it reads an option, sub-option or part of
    /// chaddr the request does not carry.
    pub fn eval<'a>(&'a self, pkt: &Packet<'a>) -> Option<&'a [u8]> {
        self.expr.eval(pkt)
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cond.fmt(f)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

/// A one-pass index of a request, built once per message only when classes are
/// configured: the position of the first instance of each option code, so every option
/// read in eval is O(1). Relay sub-options are few (a relay adds two to five), so they
/// are found by walking option 82 when read, which costs less than indexing them for
/// every message. No heap allocation.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    msg: Message<'a>,
    /// Option 82's value, empty when the request has none.
    relay: &'a [u8],
    /// Offset in the message of the first instance of each option's value; 0 when the
    /// option is absent, which no value can start at (a code and a length precede it).
    /// The octet before a value is its length, so the offset alone finds the value.
    /// A DHCP message is one UDP datagram, under 64 KiB, so 16 bits hold any offset
    /// and the index stays small enough to build for every message.
    options: [u16; 256],
}

impl<'a> Packet<'a> {
    #[inline(always)]
    pub fn new(req: &Request<'a>) -> Packet<'a> {
        let buf = req.msg.bytes();
        let mut options = [0u16; 256];
        for opt in req.msg.options().flatten() {
            let slot = &mut options[usize::from(opt.code)];
            if *slot == 0 {
                *slot = u16::try_from(offset_in(buf, opt.value)).unwrap_or(0);
            }
        }
        let relay = req.relay_agent_info.unwrap_or_default();
        Packet {
            msg: req.msg,
            relay,
            options,
        }
    }

    fn option(&self, code: u8) -> Option<&'a [u8]> {
        at_offset(self.msg.bytes(), self.options[usize::from(code)] as usize)
    }

    fn relay_sub(&self, code: u8) -> Option<&'a [u8]> {
        SubOptions::new(self.relay)
            .find(|s| s.0 == code)
            .map(|s| s.1)
    }

    fn header(&self, at: usize, len: usize) -> Option<&'a [u8]> {
        self.msg.bytes().get(at..at + len)
    }
}

/// Where `inner`, a value the option walk borrowed from `outer`, starts in `outer`.
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize)
}

/// The type-length-value value starting at `at` in `buf`; 0 means absent.
fn at_offset(buf: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(*buf.get(at.checked_sub(1)?)?);
    buf.get(at..at + len)
}

/// A header field of the request (Kea's `pkt4.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Mac,
    Oui,
    Hlen,
    Htype,
    Giaddr,
    Ciaddr,
    Msgtype,
}

impl Field {
    const ALL: [Field; 7] = [
        Field::Mac,
        Field::Oui,
        Field::Hlen,
        Field::Htype,
        Field::Giaddr,
        Field::Ciaddr,
        Field::Msgtype,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Mac => "pkt4.mac",
            Field::Oui => "pkt4.oui",
            Field::Hlen => "pkt4.hlen",
            Field::Htype => "pkt4.htype",
            Field::Giaddr => "pkt4.giaddr",
            Field::Ciaddr => "pkt4.ciaddr",
            Field::Msgtype => "pkt4.msgtype",
        }
    }
}

/// How a literal was written, kept so Display gives back what the operator wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Text,
    Hex,
    Colon,
    Dotted,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Field(Field),
    Option(u8),
    Relay(u8),
    Literal(Form, Box<[u8]>),
    Substring {
        of: Box<Expr>,
        start: u32,
        /// None: `all`, to the end.
        len: Option<u32>,
    },
}

impl Expr {
    fn eval<'a>(&'a self, pkt: &Packet<'a>) -> Option<&'a [u8]> {
        match self {
            Expr::Field(f) => match f {
                Field::Mac => Some(pkt.msg.chaddr()),
                Field::Oui => pkt.msg.chaddr().get(..3),
                Field::Hlen => pkt.header(HLEN, 1),
                Field::Htype => pkt.header(HTYPE, 1),
                Field::Giaddr => pkt.header(GIADDR, 4),
                Field::Ciaddr => pkt.header(CIADDR, 4),
                Field::Msgtype => pkt.option(code::MESSAGE_TYPE),
            },
            Expr::Option(c) => pkt.option(*c),
            Expr::Relay(c) => pkt.relay_sub(*c),
            Expr::Literal(_, bytes) => Some(bytes),
            Expr::Substring { of, start, len } => {
                let v = of.eval(pkt)?;
                let from = (*start as usize).min(v.len());
                let to = len.map_or(v.len(), |l| from.saturating_add(l as usize).min(v.len()));
                Some(&v[from..to])
            }
        }
    }
}

/// The comparisons between two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    StartsWith,
    EndsWith,
    Contains,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::StartsWith => "starts-with",
            Op::EndsWith => "ends-with",
            Op::Contains => "contains",
        }
    }

    fn apply(self, a: &[u8], b: &[u8]) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::StartsWith => a.starts_with(b),
            Op::EndsWith => a.ends_with(b),
            // windows(0) would panic; every value contains the empty one. The first octet
            // is checked before the slice compare, which would be a call per window.
            Op::Contains => b.is_empty() || a.windows(b.len()).any(|w| w[0] == b[0] && w == b),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Const(bool),
    Compare(Op, Expr, Expr),
    OptionExists(u8),
    RelayExists(u8),
    Member(u16, Box<str>),
    Not(Box<Cond>),
    /// `and` over two or more; never directly holds another `All` (the parser splices
    /// parenthesised ones in), so each test has one tree and Display round-trips.
    All(Box<[Cond]>),
    /// `or`, likewise never directly holding another `Any`.
    Any(Box<[Cond]>),
}

impl Cond {
    fn holds(&self, pkt: &Packet<'_>, member: &dyn Fn(u16) -> bool) -> bool {
        match self {
            Cond::Const(b) => *b,
            // A side with no value fails every comparison, and `!=` stays `not ==`.
            Cond::Compare(op, l, r) => match (l.eval(pkt), r.eval(pkt)) {
                (Some(a), Some(b)) => op.apply(a, b),
                _ => *op == Op::Ne,
            },
            Cond::OptionExists(c) => pkt.option(*c).is_some(),
            Cond::RelayExists(c) => pkt.relay_sub(*c).is_some(),
            Cond::Member(class, _) => member(*class),
            Cond::Not(c) => !c.holds(pkt, member),
            Cond::All(cs) => cs.iter().all(|c| c.holds(pkt, member)),
            Cond::Any(cs) => cs.iter().any(|c| c.holds(pkt, member)),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Field(field) => f.write_str(field.name()),
            Expr::Option(c) => write!(f, "option[{c}]"),
            Expr::Relay(c) => write!(f, "relay4[{c}]"),
            Expr::Literal(form, bytes) => write_literal(f, *form, bytes),
            Expr::Substring { of, start, len } => {
                write!(f, "substring({of}, {start}, ")?;
                match len {
                    Some(l) => write!(f, "{l})"),
                    None => f.write_str("all)"),
                }
            }
        }
    }
}

fn write_literal(f: &mut fmt::Formatter<'_>, form: Form, bytes: &[u8]) -> fmt::Result {
    match form {
        Form::Text => {
            f.write_str("'")?;
            for c in String::from_utf8_lossy(bytes).chars() {
                if c == '\'' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("'")
        }
        Form::Hex => {
            f.write_str("0x")?;
            bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
        Form::Colon => {
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 {
                    f.write_str(":")?;
                }
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
        Form::Dotted => {
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                write!(f, "{b}")?;
            }
            Ok(())
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Const(b) => write!(f, "{b}"),
            Cond::Compare(op, l, r) => write!(f, "{l} {} {r}", op.name()),
            Cond::OptionExists(c) => write!(f, "option[{c}].exists"),
            Cond::RelayExists(c) => write!(f, "relay4[{c}].exists"),
            Cond::Member(_, name) => {
                f.write_str("member(")?;
                write_literal(f, Form::Text, name.as_bytes())?;
                f.write_str(")")
            }
            Cond::Not(c) => match **c {
                Cond::All(_) | Cond::Any(_) => write!(f, "not ({c})"),
                _ => write!(f, "not {c}"),
            },
            Cond::All(cs) => join(f, cs, " and ", |c| matches!(c, Cond::Any(_))),
            Cond::Any(cs) => join(f, cs, " or ", |_| false),
        }
    }
}

/// Writes `cs` separated by `sep`, parenthesising those that bind more loosely.
fn join(
    f: &mut fmt::Formatter<'_>,
    cs: &[Cond],
    sep: &str,
    loose: impl Fn(&Cond) -> bool,
) -> fmt::Result {
    for (i, c) in cs.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if loose(c) {
            write!(f, "({c})")?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}
