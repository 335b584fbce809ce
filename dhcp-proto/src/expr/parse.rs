//! The parser of the test language: a hand-written lexer and recursive descent with one
//! token of lookahead. Errors name the column and what was expected there, since the
//! operator reads them at a reload, far from this code. Depth and length are bounded so
//! that neither the parser nor the evaluator's recursion can exhaust a stack.

use super::{Cond, Expr, Field, Form, Op, ParseError, Test, Value};

/// Deepest nesting accepted: parentheses, `not` and `substring` each count one level.
pub const MAX_DEPTH: usize = 32;
/// Longest source accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// Words the language reserves, for the hint that keywords are lowercase.
const KEYWORDS: [&str; 13] = [
    "and",
    "or",
    "not",
    "true",
    "false",
    "member",
    "option",
    "relay4",
    "substring",
    "all",
    "starts-with",
    "ends-with",
    "contains",
];

pub(super) fn test(
    src: &str,
    class: &mut dyn FnMut(&str) -> Option<u16>,
) -> Result<Test, ParseError> {
    let mut p = Parser::new(src, class)?;
    let cond = p.or("")?;
    p.end("expected 'and', 'or' or the end")?;
    Ok(Test {
        cond,
        classes: p.classes.into(),
    })
}

pub(super) fn value(src: &str) -> Result<Value, ParseError> {
    // A value cannot hold member(), so no class name ever reaches this.
    let mut no_classes = |_: &str| None;
    let mut p = Parser::new(src, &mut no_classes)?;
    let expr = p.value("")?;
    p.end("expected the end after the value")?;
    Ok(Value { expr })
}

fn error(src: &str, at: usize, reason: impl Into<String>) -> ParseError {
    ParseError {
        offset: src.char_indices().take_while(|(i, _)| *i < at).count(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'s> {
    /// Keywords, field names, numbers and the literals written without quotes (hex,
    /// colon hex, dotted IPv4): the parser tells them apart by where they stand.
    Word(&'s str),
    Text(String),
    /// `.hex`, `.text`, `.exists`, without the dot.
    Suffix(&'s str),
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    EqEq,
    NotEq,
    End,
}

fn describe(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Word(w) => {
            let lower = w.to_ascii_lowercase();
            if lower != *w && (KEYWORDS.contains(&lower.as_str()) || lower.starts_with("pkt4")) {
                format!("'{w}' (keywords are lowercase: '{lower}')")
            } else {
                format!("'{w}'")
            }
        }
        Tok::Text(_) => "a text literal".into(),
        Tok::Suffix(s) => format!("'.{s}'"),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::EqEq => "'=='".into(),
        Tok::NotEq => "'!='".into(),
        Tok::End => "the end".into(),
    }
}

/// A keyword, or a word in capitals, standing where a value or a test should start: the
/// error then says what was expected there rather than calling the word unknown.
fn misplaced(w: &str) -> bool {
    let literal = w.starts_with(|c: char| c.is_ascii_digit() || c == '-') || w.contains(':');
    !literal && (KEYWORDS.contains(&w) || w != w.to_ascii_lowercase())
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    /// The next token and the byte offset it starts at.
    fn next(&mut self) -> Result<(usize, Tok<'s>), ParseError> {
        let rest = &self.src[self.pos..];
        let rest = rest.trim_start();
        let start = self.src.len() - rest.len();
        self.pos = start;
        let Some(c) = rest.chars().next() else {
            return Ok((start, Tok::End));
        };
        let after = &rest[c.len_utf8()..];
        let (len, tok) = match c {
            '(' => (1, Tok::Open),
            ')' => (1, Tok::Close),
            '[' => (1, Tok::LBracket),
            ']' => (1, Tok::RBracket),
            ',' => (1, Tok::Comma),
            '=' if after.starts_with('=') => (2, Tok::EqEq),
            '=' => return Err(self.fail(start, "a lone '=': compare with '=='")),
            '!' if after.starts_with('=') => (2, Tok::NotEq),
            '!' => return Err(self.fail(start, "a lone '!': negate a test with 'not'")),
            '\'' => return self.text(start).map(|t| (start, t)),
            '"' => {
                return Err(self.fail(start, "text is written in single quotes: 'like this'"));
            }
            '.' => {
                let name = after
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .map_or(after, |n| &after[..n]);
                if name.is_empty() {
                    return Err(self.fail(start, "unexpected character '.'"));
                }
                (1 + name.len(), Tok::Suffix(name))
            }
            c if c.is_ascii_alphanumeric()
                || (c == '-' && after.starts_with(|d: char| d.is_ascii_digit())) =>
            {
                let len = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
                (len, Tok::Word(&rest[..len]))
            }
            c => return Err(self.fail(start, format!("unexpected character '{c}'"))),
        };
        self.pos = start + len;
        Ok((start, tok))
    }

    /// A single-quoted text literal starting at `start`; `\'` and `\\` are its escapes.
    fn text(&mut self, start: usize) -> Result<Tok<'s>, ParseError> {
        let body = start + 1;
        let mut out = String::new();
        let mut chars = self.src[body..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => {
                    self.pos = body + i + 1;
                    return Ok(Tok::Text(out));
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('\'' | '\\'))) => out.push(e),
                    Some((_, e)) => {
                        return Err(self.fail(
                            body + i,
                            format!(
                                "unknown escape '\\{e}' in text: only \\' and \\\\ are escapes"
                            ),
                        ))
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.fail(start, "this text has no closing quote"))
    }

    fn fail(&self, at: usize, reason: impl Into<String>) -> ParseError {
        error(self.src, at, reason)
    }
}

/// What an `option[N]` or `relay4[N]` reference turned out to be.
enum Operand {
    Value(Expr),
    Exists(Cond),
}

struct Parser<'s, 'c> {
    src: &'s str,
    lex: Lexer<'s>,
    /// The lookahead token and where it starts.
    tok: Tok<'s>,
    at: usize,
    depth: usize,
    class: &'c mut dyn FnMut(&str) -> Option<u16>,
    classes: Vec<u16>,
}

impl<'s, 'c> Parser<'s, 'c> {
    fn new(
        src: &'s str,
        class: &'c mut dyn FnMut(&str) -> Option<u16>,
    ) -> Result<Self, ParseError> {
        if src.len() > MAX_LEN {
            return Err(error(
                src,
                MAX_LEN,
                format!("longer than {MAX_LEN} bytes; split it into classes joined by member()"),
            ));
        }
        let mut lex = Lexer { src, pos: 0 };
        let (at, tok) = lex.next()?;
        Ok(Parser {
            src,
            lex,
            tok,
            at,
            depth: 0,
            class,
            classes: Vec::new(),
        })
    }

    /// Moves past the lookahead token, returning where it started.
    fn bump(&mut self) -> Result<usize, ParseError> {
        let was = self.at;
        (self.at, self.tok) = self.lex.next()?;
        Ok(was)
    }

    fn fail<T>(&self, at: usize, reason: impl Into<String>) -> Result<T, ParseError> {
        Err(error(self.src, at, reason))
    }

    /// Fails at the lookahead token with "`expected`, found ...".
    fn unexpected<T>(&self, expected: &str) -> Result<T, ParseError> {
        self.fail(
            self.at,
            format!("{expected}, found {}", describe(&self.tok)),
        )
    }

    fn expect(&mut self, tok: Tok<'_>, expected: &str) -> Result<(), ParseError> {
        if self.tok == tok {
            self.bump().map(drop)
        } else {
            self.unexpected(expected)
        }
    }

    fn end(&self, expected: &str) -> Result<(), ParseError> {
        if self.tok == Tok::End {
            Ok(())
        } else {
            self.unexpected(expected)
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(
                at,
                format!(
                    "nested deeper than {MAX_DEPTH} levels (each '(', 'not' and 'substring' is one)"
                ),
            );
        }
        Ok(())
    }

    /// `after` completes "expected a test" for the first operand (" after '('").
    fn or(&mut self, after: &str) -> Result<Cond, ParseError> {
        let first = self.and(after)?;
        if self.tok != Tok::Word("or") {
            return Ok(first);
        }
        let mut all = Vec::new();
        let mut next = first;
        loop {
            match next {
                Cond::Any(cs) => all.extend(cs.into_vec()),
                c => all.push(c),
            }
            if self.tok != Tok::Word("or") {
                return Ok(Cond::Any(all.into()));
            }
            self.bump()?;
            next = self.and(" after 'or'")?;
        }
    }

    fn and(&mut self, after: &str) -> Result<Cond, ParseError> {
        let first = self.unary(after)?;
        if self.tok != Tok::Word("and") {
            return Ok(first);
        }
        let mut all = Vec::new();
        let mut next = first;
        loop {
            match next {
                Cond::All(cs) => all.extend(cs.into_vec()),
                c => all.push(c),
            }
            if self.tok != Tok::Word("and") {
                return Ok(Cond::All(all.into()));
            }
            self.bump()?;
            next = self.unary(" after 'and'")?;
        }
    }

    fn unary(&mut self, after: &str) -> Result<Cond, ParseError> {
        if self.tok != Tok::Word("not") {
            return self.primary(after);
        }
        let at = self.bump()?;
        self.enter(at)?;
        let inner = self.unary(" after 'not'")?;
        self.depth -= 1;
        Ok(Cond::Not(Box::new(inner)))
    }

    fn primary(&mut self, after: &str) -> Result<Cond, ParseError> {
        match self.tok {
            Tok::Open => {
                let at = self.bump()?;
                self.enter(at)?;
                let inner = self.or(" after '('")?;
                let column = error(self.src, at, "").offset + 1;
                self.expect(
                    Tok::Close,
                    &format!("expected ')' to close the '(' at column {column}"),
                )?;
                self.depth -= 1;
                Ok(inner)
            }
            Tok::Word("true") => self.bump().map(|_| Cond::Const(true)),
            Tok::Word("false") => self.bump().map(|_| Cond::Const(false)),
            Tok::Word("member") => self.member(),
            Tok::Word(w) if misplaced(w) && !matches!(w, "option" | "relay4" | "substring") => {
                self.unexpected(&format!("expected a test{after}"))
            }
            Tok::End | Tok::Close | Tok::Comma | Tok::EqEq | Tok::NotEq => {
                self.unexpected(&format!("expected a test{after}"))
            }
            _ => match self.operand(after)? {
                Operand::Exists(c) => Ok(c),
                Operand::Value(left) => self.compare(left),
            },
        }
    }

    fn member(&mut self) -> Result<Cond, ParseError> {
        self.bump()?;
        self.expect(Tok::Open, "expected '(' after 'member'")?;
        let at = self.at;
        let Tok::Text(name) = &mut self.tok else {
            return self.unexpected("expected a class name in single quotes");
        };
        let name = std::mem::take(name);
        self.bump()?;
        let Some(class) = (self.class)(&name) else {
            return self.fail(
                at,
                format!("no class named '{name}' defined before this one"),
            );
        };
        self.expect(Tok::Close, "expected ')' after the class name")?;
        if !self.classes.contains(&class) {
            self.classes.push(class);
        }
        Ok(Cond::Member(class, name.into()))
    }

    fn compare(&mut self, left: Expr) -> Result<Cond, ParseError> {
        let op =
            match self.tok {
                Tok::EqEq => Op::Eq,
                Tok::NotEq => Op::Ne,
                Tok::Word("starts-with") => Op::StartsWith,
                Tok::Word("ends-with") => Op::EndsWith,
                Tok::Word("contains") => Op::Contains,
                _ => return self.unexpected(
                    "expected '==', '!=', 'starts-with', 'ends-with' or 'contains' after the value",
                ),
            };
        self.bump()?;
        let right = self.value(&format!(" after '{}'", op.name()))?;
        Ok(Cond::Compare(op, left, right))
    }

    fn value(&mut self, after: &str) -> Result<Expr, ParseError> {
        let at = self.at;
        match self.operand(after)? {
            Operand::Value(e) => Ok(e),
            Operand::Exists(c) => self.fail(
                at,
                format!("'{c}' is a test, not a value: leave out '.exists' to read the value"),
            ),
        }
    }

    fn operand(&mut self, after: &str) -> Result<Operand, ParseError> {
        let at = self.at;
        let w = match &mut self.tok {
            Tok::Text(s) => {
                let bytes = std::mem::take(s).into_bytes();
                self.bump()?;
                return Ok(Operand::Value(Expr::Literal(Form::Text, bytes.into())));
            }
            Tok::Word(w) => *w,
            _ => return self.unexpected(&format!("expected a value{after}")),
        };
        match w {
            "option" => return self.reference(false),
            "relay4" => return self.reference(true),
            "substring" => return self.substring().map(Operand::Value),
            _ => {}
        }
        let expr = if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') || w.contains(':') {
            let (form, bytes) = literal(w).map_err(|reason| error(self.src, at, reason))?;
            Expr::Literal(form, bytes.into())
        } else if w == "pkt4" || w.starts_with("pkt4.") {
            match Field::ALL.into_iter().find(|f| f.name() == w) {
                Some(f) => Expr::Field(f),
                None => {
                    let known: Vec<_> = Field::ALL.iter().map(|f| f.name()).collect();
                    return self.fail(
                        at,
                        format!("unknown field '{w}' (known: {})", known.join(", ")),
                    );
                }
            }
        } else if misplaced(w) {
            return self.unexpected(&format!("expected a value{after}"));
        } else {
            return self.fail(
                at,
                format!("unknown word '{w}': expected a value{after} (text goes in single quotes)"),
            );
        };
        self.bump()?;
        Ok(Operand::Value(expr))
    }

    /// `option[N]` or `relay4[N]`, with the suffix that follows if any.
    fn reference(&mut self, relay: bool) -> Result<Operand, ParseError> {
        let (word, what) = if relay {
            ("relay4", "relay4 sub-option code")
        } else {
            ("option", "option code")
        };
        self.bump()?;
        self.expect(Tok::LBracket, &format!("expected '[' after '{word}'"))?;
        let at = self.at;
        let n = self.integer(&format!("expected an {what} after '{word}['"))?;
        let Some(code) = u8::try_from(n).ok().filter(|c| (1..=254).contains(c)) else {
            return self.fail(at, format!("{what} {n} is not 1 to 254"));
        };
        self.expect(Tok::RBracket, &format!("expected ']' after the {what}"))?;
        let (exists, value) = if relay {
            (Cond::RelayExists(code), Expr::Relay(code))
        } else {
            (Cond::OptionExists(code), Expr::Option(code))
        };
        match self.tok {
            Tok::Suffix("exists") => self.bump().map(|_| Operand::Exists(exists)),
            // Kea's representations; values are octets either way.
            Tok::Suffix("hex" | "text") => self.bump().map(|_| Operand::Value(value)),
            Tok::Suffix(s) => self.fail(
                self.at,
                format!("unknown suffix '.{s}': expected '.hex', '.text' or '.exists'"),
            ),
            _ => Ok(Operand::Value(value)),
        }
    }

    fn substring(&mut self) -> Result<Expr, ParseError> {
        let at = self.bump()?;
        self.enter(at)?;
        self.expect(Tok::Open, "expected '(' after 'substring'")?;
        let of = self.value(" as the first argument of substring")?;
        self.expect(Tok::Comma, "expected ',' after the value in substring")?;
        let start = self.integer("expected the start of substring (a number, 0 or more)")?;
        self.expect(Tok::Comma, "expected ',' after the start of substring")?;
        let len = if self.tok == Tok::Word("all") {
            self.bump()?;
            None
        } else {
            Some(self.integer("expected the length of substring (a number, 0 or more, or 'all')")?)
        };
        self.expect(Tok::Close, "expected ')' after the length of substring")?;
        self.depth -= 1;
        Ok(Expr::Substring {
            of: Box::new(of),
            start,
            len,
        })
    }

    fn integer(&mut self, expected: &str) -> Result<u32, ParseError> {
        let Tok::Word(w) = self.tok else {
            return self.unexpected(expected);
        };
        if w.starts_with('-') {
            return self.fail(
                self.at,
                "negative numbers are not supported: positions count from the start",
            );
        }
        if !w.bytes().all(|b| b.is_ascii_digit()) {
            return self.unexpected(expected);
        }
        let Ok(n) = w.parse() else {
            return self.fail(self.at, format!("number {w} is above {}", u32::MAX));
        };
        self.bump()?;
        Ok(n)
    }
}

/// A literal written without quotes: hex `0x4d53`, colon hex `01:02:0a` (as dhcpd writes
/// hardware addresses) or a dotted IPv4 address.
fn literal(w: &str) -> Result<(Form, Vec<u8>), String> {
    if let Some(digits) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!("'{c}' is not a hex digit in '{w}'"));
        }
        if digits.is_empty() {
            return Err("a hex literal needs at least one octet after '0x'".into());
        }
        if digits.len() % 2 == 1 {
            return Err(format!(
                "'{w}' has an odd number of hex digits: write two per octet"
            ));
        }
        let bytes = digits
            .as_bytes()
            .chunks(2)
            .map(|pair| hex_octet(pair).unwrap_or(0))
            .collect();
        return Ok((Form::Hex, bytes));
    }
    if w.contains(':') {
        let bytes = w
            .split(':')
            .map(|part| {
                hex_octet(part.as_bytes())
                    .ok_or_else(|| format!("'{part}' in '{w}' is not one or two hex digits"))
            })
            .collect::<Result<_, _>>()?;
        return Ok((Form::Colon, bytes));
    }
    if w.contains('.') {
        let parts: Vec<_> = w.split('.').collect();
        if parts.len() != 4 {
            return Err(format!(
                "'{w}' is not an IPv4 address: it has {} parts, not 4",
                parts.len()
            ));
        }
        let bytes = parts
            .iter()
            .map(|part| {
                Some(part)
                    .filter(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|p| p.parse::<u8>().ok())
                    .ok_or_else(|| format!("'{part}' in '{w}' is not a number from 0 to 255"))
            })
            .collect::<Result<_, _>>()?;
        return Ok((Form::Dotted, bytes));
    }
    if w.bytes().all(|b| b.is_ascii_digit()) {
        let hint = match w.parse::<u8>() {
            Ok(n) => format!("0x{n:02x} is the octet {n}"),
            Err(_) => "0x0102 is two octets".into(),
        };
        return Err(format!(
            "a bare number is not a value: write octets in hex ({hint}) or text in quotes; \
             pkt4.msgtype, pkt4.hlen and pkt4.htype are one octet here, four in Kea"
        ));
    }
    Err(format!(
        "'{w}' is not a value: hex starts with 0x, text goes in single quotes"
    ))
}

/// One or two hex digits as an octet.
fn hex_octet(digits: &[u8]) -> Option<u8> {
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    let s = std::str::from_utf8(digits).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(name: &str) -> Option<u16> {
        ["cable", "fiber"]
            .iter()
            .position(|n| *n == name)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn parse(src: &str) -> Result<Test, ParseError> {
        Test::parse(src, &mut classes)
    }

    /// The error for `src`, as "column: reason".
    fn err(src: &str) -> String {
        let e = parse(src).expect_err(src);
        format!("{}: {}", e.offset + 1, e.reason)
    }

    fn value_err(src: &str) -> String {
        let e = Value::parse(src).expect_err(src);
        format!("{}: {}", e.offset + 1, e.reason)
    }

    fn show(src: &str) -> String {
        parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .to_string()
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        assert_eq!(
            parse("true or false and false").unwrap(),
            parse("true or (false and false)").unwrap()
        );
        assert_eq!(
            parse("not true and false").unwrap(),
            parse("(not true) and false").unwrap()
        );
        assert_eq!(
            show("(true or false) and not (true and false)"),
            "(true or false) and not (true and false)"
        );
        assert_eq!(
            show("((true)) and (false and true)"),
            "true and false and true"
        );
        assert_eq!(show("not not true"), "not not true");
    }

    #[test]
    fn every_construct_parses_and_prints_canonically() {
        for (src, shown) in [
            (
                "relay4[1] starts-with 'olt-7' and option[60] == 'docsis3.0'",
                "relay4[1] starts-with 'olt-7' and option[60] == 'docsis3.0'",
            ),
            (
                "option[60].hex==option[60].text",
                "option[60] == option[60]",
            ),
            (
                "pkt4.mac != 01:02:0A:0b:0c:d",
                "pkt4.mac != 01:02:0a:0b:0c:0d",
            ),
            ("aa:bb:cc ends-with pkt4.oui", "aa:bb:cc ends-with pkt4.oui"),
            ("pkt4.giaddr == 192.0.2.1", "pkt4.giaddr == 192.0.2.1"),
            ("pkt4.ciaddr == 0X0A000001", "pkt4.ciaddr == 0x0a000001"),
            (
                "pkt4.hlen == 0x06 and pkt4.htype == 0x01 or pkt4.msgtype == 0x03",
                "pkt4.hlen == 0x06 and pkt4.htype == 0x01 or pkt4.msgtype == 0x03",
            ),
            (
                "option[82].exists or relay4[2].exists",
                "option[82].exists or relay4[2].exists",
            ),
            (
                "member('fiber') and not member('cable')",
                "member('fiber') and not member('cable')",
            ),
            (r"'it\'s a \\' == ''", r"'it\'s a \\' == ''"),
            (
                "substring(substring(option[43],0,4),2,2) == 0x0102",
                "substring(substring(option[43], 0, 4), 2, 2) == 0x0102",
            ),
        ] {
            assert_eq!(show(src), shown, "{src}");
            assert_eq!(parse(&show(src)).unwrap(), parse(src).unwrap(), "{src}");
        }
        assert_eq!(
            show("substring( option[61] , 1, all) contains 'x'"),
            "substring(option[61], 1, all) contains 'x'"
        );
    }

    #[test]
    fn member_records_each_class_once() {
        let t = parse("member('fiber') or member('cable') and member('fiber')").unwrap();
        assert_eq!(t.classes().collect::<Vec<_>>(), [1, 0]);
        assert_eq!(parse("true").unwrap().classes().count(), 0);
    }

    #[test]
    fn values_parse_alone() {
        for src in [
            "relay4[1]",
            "option[82].hex",
            "substring(pkt4.mac, 0, 3)",
            "'a'",
        ] {
            let v = Value::parse(src).unwrap();
            assert_eq!(Value::parse(&v.to_string()).unwrap(), v);
        }
        assert_eq!(Value::parse(" pkt4.mac ").unwrap().to_string(), "pkt4.mac");
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        for (src, want) in [
            ("", "1: expected a test, found the end"),
            ("pkt4.mac ==", "12: expected a value after '==', found the end"),
            ("pkt4.mac == )", "13: expected a value after '==', found ')'"),
            ("pkt4.foo == 'x'", "1: unknown field 'pkt4.foo' (known: pkt4.mac, pkt4.oui, pkt4.hlen, pkt4.htype, pkt4.giaddr, pkt4.ciaddr, pkt4.msgtype)"),
            ("option[300] == 'x'", "8: option code 300 is not 1 to 254"),
            ("option[0].exists", "8: option code 0 is not 1 to 254"),
            ("relay4[255].exists", "8: relay4 sub-option code 255 is not 1 to 254"),
            ("option[99999999999]", "8: number 99999999999 is above 4294967295"),
            ("option 60 == 'x'", "8: expected '[' after 'option', found '60'"),
            ("option[x]", "8: expected an option code after 'option[', found 'x'"),
            ("option[60 == 'x'", "11: expected ']' after the option code, found '=='"),
            ("option[60].foo", "11: unknown suffix '.foo': expected '.hex', '.text' or '.exists'"),
            ("pkt4.mac == option[60].exists", "13: 'option[60].exists' is a test, not a value: leave out '.exists' to read the value"),
            ("option[60].exists == 'x'", "19: expected 'and', 'or' or the end, found '=='"),
            ("pkt4.mac", "9: expected '==', '!=', 'starts-with', 'ends-with' or 'contains' after the value, found the end"),
            ("pkt4.mac = 'x'", "10: a lone '=': compare with '=='"),
            ("! true", "1: a lone '!': negate a test with 'not'"),
            ("pkt4.mac == \"x\"", "13: text is written in single quotes: 'like this'"),
            ("'abc", "1: this text has no closing quote"),
            ("'ab\\", "1: this text has no closing quote"),
            (r"'a\n' == 'b'", r"3: unknown escape '\n' in text: only \' and \\ are escapes"),
            ("pkt4.mac == 0x4d5", "13: '0x4d5' has an odd number of hex digits: write two per octet"),
            ("pkt4.mac == 0x", "13: a hex literal needs at least one octet after '0x'"),
            ("pkt4.mac == 0xzz", "13: 'z' is not a hex digit in '0xzz'"),
            ("pkt4.mac == 01:", "13: '' in '01:' is not one or two hex digits"),
            ("pkt4.mac == 01:123", "13: '123' in '01:123' is not one or two hex digits"),
            ("pkt4.mac == 192.0.2", "13: '192.0.2' is not an IPv4 address: it has 3 parts, not 4"),
            ("pkt4.mac == 192.0.2.300", "13: '300' in '192.0.2.300' is not a number from 0 to 255"),
            ("pkt4.msgtype == 1", "17: a bare number is not a value: write octets in hex (0x01 is the octet 1) or text in quotes; pkt4.msgtype, pkt4.hlen and pkt4.htype are one octet here, four in Kea"),
            ("pkt4.mac == 4abc", "13: '4abc' is not a value: hex starts with 0x, text goes in single quotes"),
            ("pkt4.mac == foo", "13: unknown word 'foo': expected a value after '==' (text goes in single quotes)"),
            ("pkt4.mac == and", "13: expected a value after '==', found 'and'"),
            ("NOT true", "1: expected a test, found 'NOT' (keywords are lowercase: 'not')"),
            ("true AND false", "6: expected 'and', 'or' or the end, found 'AND' (keywords are lowercase: 'and')"),
            ("PKT4.MAC == 'x'", "1: expected a test, found 'PKT4.MAC' (keywords are lowercase: 'pkt4.mac')"),
            ("true and", "9: expected a test after 'and', found the end"),
            ("true or )", "9: expected a test after 'or', found ')'"),
            ("not", "4: expected a test after 'not', found the end"),
            ("(true", "6: expected ')' to close the '(' at column 1, found the end"),
            ("()", "2: expected a test after '(', found ')'"),
            ("true false", "6: expected 'and', 'or' or the end, found 'false'"),
            ("member(cable)", "8: expected a class name in single quotes, found 'cable'"),
            ("member('dsl')", "8: no class named 'dsl' defined before this one"),
            ("member 'cable'", "8: expected '(' after 'member', found a text literal"),
            ("member('cable'", "15: expected ')' after the class name, found the end"),
            ("substring(pkt4.mac) == 'x'", "19: expected ',' after the value in substring, found ')'"),
            ("substring(pkt4.mac, -1, 2) == 'x'", "21: negative numbers are not supported: positions count from the start"),
            ("substring(pkt4.mac, 0, some) == 'x'", "24: expected the length of substring (a number, 0 or more, or 'all'), found 'some'"),
            ("substring(pkt4.mac, x, 1) == 'x'", "21: expected the start of substring (a number, 0 or more), found 'x'"),
            ("substring pkt4.mac", "11: expected '(' after 'substring', found 'pkt4.mac'"),
            ("substring(, 0, 1) == 'x'", "11: expected a value as the first argument of substring, found ','"),
            ("substring(pkt4.mac, 0, 1 == 'x'", "26: expected ')' after the length of substring, found '=='"),
            ("pkt4.mac == 'x' $", "17: unexpected character '$'"),
            ("option[1]. exists", "10: unexpected character '.'"),
            ("'é' == 'é' or x", "15: unknown word 'x': expected a value after 'or' (text goes in single quotes)"),
        ] {
            assert_eq!(err(src), want, "{src}");
        }
    }

    #[test]
    fn value_errors() {
        assert_eq!(
            value_err("pkt4.mac == 'x'"),
            "10: expected the end after the value, found '=='"
        );
        assert_eq!(value_err("true"), "1: expected a value, found 'true'");
        assert_eq!(
            value_err("option[82].exists"),
            "1: 'option[82].exists' is a test, not a value: leave out '.exists' to read the value"
        );
        assert_eq!(
            value_err("member('cable')"),
            "1: expected a value, found 'member'"
        );
    }

    #[test]
    fn depth_and_length_are_bounded() {
        let deep = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&deep(MAX_DEPTH)).is_ok());
        assert_eq!(
            err(&deep(MAX_DEPTH + 1)),
            "33: nested deeper than 32 levels (each '(', 'not' and 'substring' is one)"
        );
        assert!(parse(&format!("{}true", "not ".repeat(MAX_DEPTH))).is_ok());
        assert!(parse(&format!("{}true", "not ".repeat(MAX_DEPTH + 1))).is_err());
        let sub = |n: usize| {
            format!(
                "{}pkt4.mac{} == 'x'",
                "substring(".repeat(n),
                ", 0, all)".repeat(n)
            )
        };
        assert!(parse(&sub(MAX_DEPTH)).is_ok());
        assert!(parse(&sub(MAX_DEPTH + 1)).is_err());
        assert!(Value::parse(&sub(MAX_DEPTH + 1).replace(" == 'x'", "")).is_err());

        // A long flat chain costs no depth: and/or are lists, not nested pairs.
        let chain = vec!["true"; 400].join(" and ");
        assert!(chain.len() < MAX_LEN);
        assert!(parse(&chain).is_ok());
        let long = format!("'{}' == ''", "x".repeat(MAX_LEN));
        assert_eq!(
            err(&long),
            "4097: longer than 4096 bytes; split it into classes joined by member()"
        );
    }
}
