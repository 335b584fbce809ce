//! Properties of the test language. Random tests, rendered with random spacing, suffixes,
//! literal forms and redundant parentheses, are compiled and evaluated against random
//! requests; the answer must match a slow reference evaluator written here over a request
//! decoded here, by walking the raw octets without the wire module. Any text at all
//! compiles or fails without a panic, and whatever compiles prints back to itself.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{Packet, Test, Value};
use crate::wire::Request;

/// Class names a test may name, and the indexes the loader gives them.
const CLASSES: [(&str, u16); 3] = [("cable", 10), ("fiber", 11), ("dsl", 12)];

fn class(name: &str) -> Option<u16> {
    CLASSES.iter().find(|c| c.0 == name).map(|c| c.1)
}

const FIELDS: [&str; 7] = [
    "pkt4.mac",
    "pkt4.oui",
    "pkt4.hlen",
    "pkt4.htype",
    "pkt4.giaddr",
    "pkt4.ciaddr",
    "pkt4.msgtype",
];
const OPS: [&str; 5] = ["==", "!=", "starts-with", "ends-with", "contains"];

/// A value as the reference sees it.
#[derive(Debug, Clone)]
enum MValue {
    Field(usize),
    Option(u8),
    Relay(u8),
    Literal(Vec<u8>),
    Substring(Box<MValue>, u32, Option<u32>),
}

/// A test as the reference sees it.
#[derive(Debug, Clone)]
enum MTest {
    Const(bool),
    Compare(usize, MValue, MValue),
    OptionExists(u8),
    RelayExists(u8),
    Member(usize),
    Not(Box<MTest>),
    And(Vec<MTest>),
    Or(Vec<MTest>),
}

/// A request decoded by hand: the header fields and the first instance of each option
/// and relay sub-option.
#[derive(Debug, Default)]
struct Decoded {
    htype: u8,
    hlen: u8,
    chaddr: Vec<u8>,
    ciaddr: Vec<u8>,
    giaddr: Vec<u8>,
    options: BTreeMap<u8, Vec<u8>>,
    relay: BTreeMap<u8, Vec<u8>>,
}

/// Records the options of one field (RFC 2132 §2 framing), first instance winning.
fn walk(field: &[u8], into: &mut BTreeMap<u8, Vec<u8>>) {
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            0 => i += 1,
            255 => return,
            code => {
                let len = field[i + 1] as usize;
                into.entry(code)
                    .or_insert_with(|| field[i + 2..i + 2 + len].to_vec());
                i += 2 + len;
            }
        }
    }
}

/// Only for requests `Request::parse` accepted, so the framing is known to be sound.
fn decode(msg: &[u8]) -> Decoded {
    let hlen = msg[2];
    let mut options = BTreeMap::new();
    walk(&msg[240..], &mut options);
    // Option 52 counts only in the options field, so read it before file and sname.
    let overload = options.get(&52).map_or(0, |v| v[0]);
    if overload & 1 != 0 {
        walk(&msg[108..236], &mut options);
    }
    if overload & 2 != 0 {
        walk(&msg[44..108], &mut options);
    }
    let mut relay = BTreeMap::new();
    if let Some(rai) = options.get(&82) {
        let mut i = 0;
        while i + 2 <= rai.len() && i + 2 + rai[i + 1] as usize <= rai.len() {
            let len = rai[i + 1] as usize;
            relay
                .entry(rai[i])
                .or_insert_with(|| rai[i + 2..i + 2 + len].to_vec());
            i += 2 + len;
        }
    }
    Decoded {
        htype: msg[1],
        hlen,
        chaddr: msg[28..28 + hlen as usize].to_vec(),
        ciaddr: msg[12..16].to_vec(),
        giaddr: msg[24..28].to_vec(),
        options,
        relay,
    }
}

fn reference_value(v: &MValue, d: &Decoded) -> Option<Vec<u8>> {
    match v {
        MValue::Field(0) => Some(d.chaddr.clone()),
        MValue::Field(1) => (d.hlen >= 3).then(|| d.chaddr[..3].to_vec()),
        MValue::Field(2) => Some(vec![d.hlen]),
        MValue::Field(3) => Some(vec![d.htype]),
        MValue::Field(4) => Some(d.giaddr.clone()),
        MValue::Field(5) => Some(d.ciaddr.clone()),
        MValue::Field(_) => d.options.get(&53).cloned(),
        MValue::Option(c) => d.options.get(c).cloned(),
        MValue::Relay(c) => d.relay.get(c).cloned(),
        MValue::Literal(b) => Some(b.clone()),
        MValue::Substring(of, start, len) => {
            let v = reference_value(of, d)?;
            let mut out = Vec::new();
            for (i, b) in v.iter().enumerate() {
                let i = i as u64;
                let start = u64::from(*start);
                let end = len.map_or(u64::MAX, |l| start + u64::from(l));
                if i >= start && i < end {
                    out.push(*b);
                }
            }
            Some(out)
        }
    }
}

fn reference_compare(op: usize, a: &[u8], b: &[u8]) -> bool {
    let at = |i: usize| a.len() >= i + b.len() && (0..b.len()).all(|j| a[i + j] == b[j]);
    match OPS[op] {
        "==" => a == b,
        "!=" => a != b,
        "starts-with" => at(0),
        "ends-with" => a.len() >= b.len() && at(a.len() - b.len()),
        _ => (0..=a.len()).any(at),
    }
}

fn reference(t: &MTest, d: &Decoded, members: u8) -> bool {
    match t {
        MTest::Const(b) => *b,
        MTest::Compare(op, l, r) => match (reference_value(l, d), reference_value(r, d)) {
            (Some(a), Some(b)) => reference_compare(*op, &a, &b),
            _ => OPS[*op] == "!=",
        },
        MTest::OptionExists(c) => d.options.contains_key(c),
        MTest::RelayExists(c) => d.relay.contains_key(c),
        MTest::Member(i) => members & (1 << i) != 0,
        MTest::Not(t) => !reference(t, d, members),
        MTest::And(ts) => ts.iter().all(|t| reference(t, d, members)),
        MTest::Or(ts) => ts.iter().any(|t| reference(t, d, members)),
    }
}

/// Rendering choices, drawn in turn from random octets.
struct Style<'a> {
    bits: &'a [u8],
    next: usize,
}

impl Style<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let b = self.bits[self.next % self.bits.len()];
        self.next += 1;
        b as usize % n
    }

    fn space(&mut self) -> &'static str {
        ["", " ", "  ", "\t", "\n "][self.pick(5)]
    }
}

fn render_literal(b: &[u8], s: &mut Style<'_>) -> String {
    let mut forms = vec![];
    if let Ok(text) = std::str::from_utf8(b) {
        forms.push(format!(
            "'{}'",
            text.replace('\\', "\\\\").replace('\'', "\\'")
        ));
    }
    if !b.is_empty() {
        let hex: String = b.iter().map(|o| format!("{o:02X}")).collect();
        forms.push(format!("0x{hex}"));
        forms.push(format!("0X{}", hex.to_lowercase()));
    }
    if b.len() >= 2 {
        let parts: Vec<_> = b.iter().map(|o| format!("{o:x}")).collect();
        forms.push(parts.join(":"));
    }
    if b.len() == 4 {
        forms.push(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]));
    }
    let i = s.pick(forms.len());
    forms.swap_remove(i)
}

fn render_value(v: &MValue, s: &mut Style<'_>) -> String {
    let suffix = |s: &mut Style<'_>| ["", ".hex", ".text"][s.pick(3)];
    match v {
        MValue::Field(i) => FIELDS[*i].to_string(),
        MValue::Option(c) => format!("option[{}{c}{}]{}", s.space(), s.space(), suffix(s)),
        MValue::Relay(c) => format!("relay4[{c}]{}", suffix(s)),
        MValue::Literal(b) => render_literal(b, s),
        MValue::Substring(of, start, len) => {
            let len = len.map_or("all".to_string(), |l| l.to_string());
            format!(
                "substring{}({}{},{}{start},{len}{})",
                s.space(),
                s.space(),
                render_value(of, s),
                s.space(),
                s.space()
            )
        }
    }
}

fn render(t: &MTest, s: &mut Style<'_>) -> String {
    // Parentheses where precedence needs them, and sometimes where it does not.
    let child = |c: &MTest, needed: bool, s: &mut Style<'_>| {
        let text = render(c, s);
        if needed || s.pick(4) == 0 {
            format!("({}{text}{})", s.space(), s.space())
        } else {
            text
        }
    };
    match t {
        MTest::Const(b) => b.to_string(),
        MTest::Compare(op, l, r) => {
            let (l, r) = (render_value(l, s), render_value(r, s));
            let op = OPS[*op];
            if op.contains('=') {
                format!("{l}{}{op}{}{r}", s.space(), s.space())
            } else {
                format!("{l} {op} {r}")
            }
        }
        MTest::OptionExists(c) => format!("option[{c}].exists"),
        MTest::RelayExists(c) => format!("relay4[{c}].exists"),
        MTest::Member(i) => format!("member({}'{}')", s.space(), CLASSES[*i].0),
        MTest::Not(c) => {
            let needed = matches!(**c, MTest::And(_) | MTest::Or(_));
            format!("not {}", child(c, needed, s))
        }
        MTest::And(cs) => cs
            .iter()
            .map(|c| child(c, matches!(c, MTest::Or(_)), s))
            .collect::<Vec<_>>()
            .join(" and "),
        MTest::Or(cs) => cs
            .iter()
            .map(|c| child(c, false, s))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// Option codes requests carry, few so that they repeat (the first instance counts);
/// tests draw from these and from codes requests never carry.
const SENT: [u8; 6] = [12, 43, 53, 60, 82, 254];
const CODES: [u8; 9] = [1, 12, 43, 53, 60, 77, 82, 124, 254];
const SENT_SUBS: [u8; 3] = [1, 2, 9];
const SUBS: [u8; 5] = [1, 2, 6, 9, 254];

fn octets() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(b'\''), Just(0u8), Just(0xffu8)],
        0..5,
    )
}

fn value() -> impl Strategy<Value = MValue> {
    let leaf = prop_oneof![
        (0..FIELDS.len()).prop_map(MValue::Field),
        proptest::sample::select(&CODES[..]).prop_map(MValue::Option),
        proptest::sample::select(&SUBS[..]).prop_map(MValue::Relay),
        octets().prop_map(MValue::Literal),
    ];
    leaf.prop_recursive(3, 6, 1, |inner| {
        (inner, 0..6u32, proptest::option::of(0..6u32))
            .prop_map(|(of, start, len)| MValue::Substring(Box::new(of), start, len))
    })
}

fn test() -> impl Strategy<Value = MTest> {
    let leaf = prop_oneof![
        1 => any::<bool>().prop_map(MTest::Const),
        6 => (0..OPS.len(), value(), value()).prop_map(|(op, l, r)| MTest::Compare(op, l, r)),
        1 => proptest::sample::select(&CODES[..]).prop_map(MTest::OptionExists),
        1 => proptest::sample::select(&SUBS[..]).prop_map(MTest::RelayExists),
        1 => (0..CLASSES.len()).prop_map(MTest::Member),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| MTest::Not(Box::new(t))),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(MTest::And),
            proptest::collection::vec(inner, 2..4).prop_map(MTest::Or),
        ]
    })
}

fn options() -> impl Strategy<Value = Vec<(bool, u8, Vec<u8>)>> {
    proptest::collection::vec(
        (any::<bool>(), proptest::sample::select(&SENT[..]), octets()),
        0..6,
    )
}

/// Appends options, each maybe after a PAD.
fn put(out: &mut Vec<u8>, options: &[(bool, u8, Vec<u8>)]) {
    for (pad, code, value) in options {
        if *pad {
            out.push(0);
        }
        out.push(*code);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
}

/// A request built from parts: header fields, options (some repeated), maybe a relay
/// agent option (maybe ending in a truncated sub-option), maybe options overloaded into
/// file and sname.
fn structured() -> impl Strategy<Value = Vec<u8>> {
    (
        (any::<u8>(), 0..=16u8, any::<[u8; 16]>(), any::<[u8; 8]>()),
        (1..=8u8, options()),
        proptest::option::of((
            proptest::collection::vec((proptest::sample::select(&SENT_SUBS[..]), octets()), 0..5),
            proptest::collection::vec(any::<u8>(), 0..3),
            0..4usize,
        )),
        (0..=3u8, options(), options()),
    )
        .prop_map(
            |((htype, hlen, chaddr, addrs), (msgtype, opts), relay, (overload, file, sname))| {
                let mut b = vec![0u8; 240];
                b[0] = 1;
                b[1] = htype;
                b[2] = hlen;
                b[12..16].copy_from_slice(&addrs[..4]);
                b[24..28].copy_from_slice(&addrs[4..]);
                b[28..44].copy_from_slice(&chaddr);
                b[236..240].copy_from_slice(&[99, 130, 83, 99]);
                b.extend_from_slice(&[53, 1, msgtype]);
                if overload != 0 {
                    b.extend_from_slice(&[52, 1, overload]);
                }
                let mut opts = opts;
                if let Some((subs, tail, at)) = relay {
                    let mut rai = Vec::new();
                    for (code, value) in subs {
                        rai.push(code);
                        rai.push(value.len() as u8);
                        rai.extend_from_slice(&value);
                    }
                    rai.extend_from_slice(&tail);
                    opts.insert(at.min(opts.len()), (false, 82, rai));
                }
                put(&mut b, &opts);
                b.push(255);
                for (on, at, len, extra) in [(1, 108, 128, &file), (2, 44, 64, &sname)] {
                    if overload & on != 0 {
                        let mut field = Vec::new();
                        put(&mut field, extra);
                        field.truncate(len);
                        b[at..at + field.len()].copy_from_slice(&field);
                    }
                }
                b
            },
        )
}

/// A valid header followed by any octets at all in the options field.
fn raw() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 40]>(),
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(head, tail)| {
            let mut b = vec![0u8; 240];
            b[..40].copy_from_slice(&head);
            b[2] %= 17;
            b[236..240].copy_from_slice(&[99, 130, 83, 99]);
            b.extend_from_slice(&[53, 1, 3]);
            b.extend_from_slice(&tail);
            b
        })
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => structured(), 1 => raw()]
}

/// Text made of the language's own pieces, to reach deeper into the parser than
/// arbitrary characters do.
fn soup() -> impl Strategy<Value = String> {
    const PIECES: [&str; 50] = [
        "option",
        "relay4",
        "[",
        "]",
        "60",
        "1",
        "300",
        ".hex",
        ".text",
        ".exists",
        ".foo",
        "pkt4.mac",
        "pkt4.oui",
        "pkt4.foo",
        "==",
        "!=",
        "=",
        "!",
        "starts-with",
        "contains",
        "ends-with",
        "and",
        "or",
        "not",
        "AND",
        "(",
        ")",
        "(",
        ")",
        "true",
        "false",
        "member",
        "'cable'",
        "'nope'",
        "substring",
        ",",
        "all",
        "-1",
        "0x4d",
        "0x4",
        "01:02",
        "192.0.2.1",
        "1.2.3",
        "'a\\'b'",
        "'x",
        "\"",
        "$",
        "é",
        " ",
        "\t",
    ];
    proptest::collection::vec(proptest::sample::select(&PIECES[..]), 0..24)
        .prop_map(|ps| ps.concat())
}

/// Parses `src`, and when it compiles: prints back to an equal test, and evaluates
/// against `req` without a panic.
fn compiles_and_round_trips(src: &str, req: &Request<'_>) {
    if let Ok(t) = Test::parse(src, &mut class) {
        let back = Test::parse(&t.to_string(), &mut class)
            .unwrap_or_else(|e| panic!("{src:?} printed as {t} fails: {e}"));
        assert_eq!(back, t, "{src:?} printed as {t}");
        let _ = t.eval(&Packet::new(req), &|c| c % 2 == 0);
    }
    if let Ok(v) = Value::parse(src) {
        assert_eq!(Value::parse(&v.to_string()).as_ref(), Ok(&v), "{src:?}");
        let _ = v.eval(&Packet::new(req));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn eval_agrees_with_the_reference(
        t in test(),
        style in proptest::collection::vec(any::<u8>(), 1..64),
        bytes in request(),
        members in 0..8u8,
    ) {
        let Ok(req) = Request::parse(&bytes) else {
            // Only the raw strategy makes refused requests; the engine drops those.
            return Ok(());
        };
        let src = render(&t, &mut Style { bits: &style, next: 0 });
        let compiled = Test::parse(&src, &mut class)
            .unwrap_or_else(|e| panic!("{src:?}: {e}"));
        let decoded = decode(&bytes);
        let member = |c: u16| {
            CLASSES.iter().position(|k| k.1 == c).is_some_and(|i| members & (1 << i) != 0)
        };
        prop_assert_eq!(
            compiled.eval(&Packet::new(&req), &member),
            reference(&t, &decoded, members),
            "{} over {:?}", src, decoded
        );
        let shown = compiled.to_string();
        let back = Test::parse(&shown, &mut class);
        prop_assert_eq!(back.as_ref(), Ok(&compiled), "{}", shown);
    }

    #[test]
    fn value_eval_agrees_with_the_reference(
        v in value(),
        style in proptest::collection::vec(any::<u8>(), 1..64),
        bytes in request(),
    ) {
        let Ok(req) = Request::parse(&bytes) else {
            return Ok(());
        };
        let src = render_value(&v, &mut Style { bits: &style, next: 0 });
        let compiled = Value::parse(&src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        let pkt = Packet::new(&req);
        prop_assert_eq!(
            compiled.eval(&pkt).map(<[u8]>::to_vec),
            reference_value(&v, &decode(&bytes)),
            "{}", src
        );
        let back = Value::parse(&compiled.to_string());
        prop_assert_eq!(back.as_ref(), Ok(&compiled));
    }

    #[test]
    fn any_text_compiles_or_fails_without_panic(src in any::<String>(), bytes in structured()) {
        let req = Request::parse(&bytes).unwrap();
        compiles_and_round_trips(&src, &req);
    }

    #[test]
    fn token_soup_compiles_or_fails_without_panic(src in soup(), bytes in structured()) {
        let req = Request::parse(&bytes).unwrap();
        compiles_and_round_trips(&src, &req);
    }
}
