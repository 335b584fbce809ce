//! ISC dhcpd's leases file (dhcpd.leases(5), as dhcpd 4.4 writes it in server/db.c):
//! writing the journal's state in that format, so operators' scripts keep working, and
//! reading a dhcpd 4.x file to migrate it.
//!
//! Written form of a lease (times in UTC as `W YYYY/MM/DD HH:MM:SS`, W the weekday 0-6;
//! `never` for infinity; a time that is unset is left out, as dhcpd does):
//!
//! ```text
//! lease 192.0.2.10 {
//!   starts 1 2026/11/23 10:00:00;
//!   ends 1 2026/11/23 11:00:00;
//!   cltt 1 2026/11/23 10:00:00;
//!   binding state active;
//!   next binding state free;
//!   reserved;
//!   hardware ethernet 02:00:00:00:00:01;
//!   uid "\001\002\000\000\000\000\001";
//! }
//! ```
//!
//! The reader accepts what dhcpd 4.x writes and reads: the `epoch N;` time form
//! (`db-time-format local`), uids as quoted strings with `\ooo`, `\xHH` and `\t\r\n\b`
//! escapes or as colon-separated hex, the old `abandoned;` and `binding state bootp` /
//! `reserved` forms; the last entry for an address wins, as in dhcpd. Statements it has
//! no use for (`set`, `on expiry { ... }`, `client-hostname`, `billing class`, ...) and
//! whole blocks (`failover peer ... state { }`, `server-duid`, `host`, `subclass`,
//! `ia-na`, ...) are skipped.

use std::io::{self, Write};
use std::net::Ipv4Addr;

use hashbrown::HashMap;

use super::error::{Error, Result};
use super::state::State;
use dhcp_proto::lease::{
    hex, BindingState, Failover, HwAddr, Lease, LeaseFlags, Member, Reservation, NEVER,
};
use dhcp_proto::wire::relay::{sub, SubOptions};

use crate::calendar::{civil_from_days, days_from_civil, MAX_YEAR};

/// A time as dhcpd writes it, without the `;`: `1 2026/11/23 10:00:00` or `never`.
pub fn format_time(t: u64) -> String {
    if t == NEVER || t > i64::MAX as u64 {
        return "never".into();
    }
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    let wday = (days + 4).rem_euclid(7);
    format!(
        "{wday} {y}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn hw_type_name(t: u8) -> String {
    match t {
        1 => "ethernet".into(),
        6 => "token-ring".into(),
        8 => "fddi".into(),
        32 => "infiniband".into(),
        n => format!("unknown-{n}"),
    }
}

fn hw_type_from_name(s: &str) -> Option<u8> {
    match s {
        "ethernet" => Some(1),
        "token-ring" => Some(6),
        "fddi" => Some(8),
        "infiniband" => Some(32),
        _ => s.strip_prefix("unknown-")?.parse().ok(),
    }
}

/// dhcpd's default uid form: a quoted string, `\ooo` for what is not printable ASCII.
fn quote(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(c as char);
            }
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\{c:03o}")),
        }
    }
    s.push('"');
    s
}

/// What dhcpd would write as the next state (no failover: the address frees up).
fn next_state(s: BindingState) -> BindingState {
    match s {
        BindingState::Active | BindingState::Expired | BindingState::Released => BindingState::Free,
        other => other,
    }
}

pub fn write_lease(out: &mut dyn Write, l: &Lease) -> io::Result<()> {
    write!(out, "lease {} {{", l.addr)?;
    for (word, t) in [
        ("starts", l.starts),
        ("ends", l.ends),
        ("tstp", l.tstp),
        ("tsfp", l.tsfp),
        ("atsfp", l.atsfp),
        ("cltt", l.cltt),
    ] {
        if t != 0 {
            write!(out, "\n  {word} {};", format_time(t))?;
        }
    }
    write!(out, "\n  binding state {};", l.state.isc_name())?;
    let next = next_state(l.state);
    if next != l.state {
        write!(out, "\n  next binding state {};", next.isc_name())?;
    }
    if l.flags.reserved() {
        write!(out, "\n  reserved;")?;
    }
    if l.flags.bootp() {
        write!(out, "\n  dynamic-bootp;")?;
    }
    if !l.hw.bytes().is_empty() {
        write!(
            out,
            "\n  hardware {} {};",
            hw_type_name(l.hw.htype),
            hex(l.hw.bytes())
        )?;
    }
    if !l.client_id.is_empty() {
        write!(out, "\n  uid {};", quote(&l.client_id))?;
    }
    // As dhcpd with `stash-agent-options` writes them: the sub-options it has names for.
    for (code, value) in SubOptions::new(&l.agent_info) {
        if let Some(name) = agent_option_name(code) {
            write!(out, "\n  option agent.{name} {};", quote(value))?;
        }
    }
    writeln!(out, "\n}}")
}

/// dhcpd's names of the relay agent sub-options a lease keeps.
fn agent_option_name(code: u8) -> Option<&'static str> {
    match code {
        sub::CIRCUIT_ID => Some("circuit-id"),
        sub::REMOTE_ID => Some("remote-id"),
        _ => None,
    }
}

/// A run-time reservation as dhcpd writes an OMAPI host (`dynamic;`).
fn write_host(out: &mut dyn Write, r: &Reservation) -> io::Result<()> {
    let printable = !r.host_name.is_empty()
        && r.host_name
            .iter()
            .all(|c| c.is_ascii_graphic() && *c != b'"' && *c != b'\\' && *c != b'{');
    let name = if printable {
        String::from_utf8_lossy(&r.host_name).into_owned()
    } else {
        format!("reservation-{}", r.addr.to_string().replace('.', "-"))
    };
    write!(out, "host {name} {{\n  dynamic;")?;
    if !r.hw.bytes().is_empty() {
        write!(
            out,
            "\n  hardware {} {};",
            hw_type_name(r.hw.htype),
            hex(r.hw.bytes())
        )?;
    }
    if !r.client_id.is_empty() {
        write!(out, "\n  uid {};", quote(&r.client_id))?;
    }
    writeln!(out, "\n  fixed-address {};\n}}", r.addr)
}

/// A run-time class member as dhcpd writes an OMAPI-created subclass: the value quoted
/// when it is printable, else as colon-separated hex.
fn write_subclass(out: &mut dyn Write, m: &Member) -> io::Result<()> {
    let value = if !m.value.is_empty() && m.value.iter().all(|c| (0x20..=0x7e).contains(c)) {
        quote(&m.value)
    } else {
        hex(&m.value)
    };
    writeln!(
        out,
        "subclass {} {value} {{\n  dynamic;\n}}",
        quote(&m.class)
    )
}

fn failover_state_name(s: u8) -> &'static str {
    match s {
        1 => "startup",
        2 => "normal",
        3 => "communications-interrupted",
        4 => "partner-down",
        5 => "potential-conflict",
        6 => "recover",
        7 => "paused",
        8 => "shutdown",
        9 => "recover-done",
        10 => "resolution-interrupted",
        11 => "conflict-done",
        254 => "recover-wait",
        _ => "unknown-state",
    }
}

fn write_failover(out: &mut dyn Write, f: &Failover) -> io::Result<()> {
    write!(
        out,
        "\nfailover peer {} state {{\n  my state {} at {};\n  partner state {} at {};",
        quote(&f.name),
        failover_state_name(f.local_state),
        format_time(f.local_stos),
        failover_state_name(f.peer_state),
        format_time(f.peer_stos)
    )?;
    if f.mclt != 0 {
        write!(out, "\n  mclt {};", f.mclt)?;
    }
    writeln!(out, "\n}}")
}

/// The whole state as a dhcpd.leases file.
pub fn write_leases_file(out: &mut dyn Write, state: &State) -> io::Result<()> {
    writeln!(
        out,
        "# The format of this file is documented in the dhcpd.leases(5) manual page.\n\
         # This lease file was written by dhcp-server {} (journal dump)\n\n\
         # authoring-byte-order entry is generated, DO NOT DELETE\n\
         authoring-byte-order {};\n",
        env!("CARGO_PKG_VERSION"),
        if cfg!(target_endian = "little") {
            "little-endian"
        } else {
            "big-endian"
        }
    )?;
    if let Some(f) = &state.failover {
        write_failover(out, f)?;
    }
    for r in state.sorted_reservations() {
        write_host(out, r)?;
    }
    for m in state.sorted_members() {
        write_subclass(out, m)?;
    }
    for l in state.sorted_leases() {
        write_lease(out, l)?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Str(Vec<u8>),
    Open,
    Close,
    Semi,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Import {
            line: self.line,
            reason: reason.into(),
        }
    }

    fn next(&mut self) -> Result<Option<Tok<'a>>> {
        let b = self.text.as_bytes();
        loop {
            let Some(&c) = b.get(self.pos) else {
                return Ok(None);
            };
            match c {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                // Every character the word below stops at must be taken here, or the
                // lexer would return empty words forever (a form feed once did).
                c if c.is_ascii_whitespace() => self.pos += 1,
                b'#' => {
                    while b.get(self.pos).is_some_and(|&c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                b'{' | b'}' | b';' => {
                    self.pos += 1;
                    return Ok(Some(match c {
                        b'{' => Tok::Open,
                        b'}' => Tok::Close,
                        _ => Tok::Semi,
                    }));
                }
                b'"' => {
                    self.pos += 1;
                    return self.string().map(|s| Some(Tok::Str(s)));
                }
                _ => {
                    let start = self.pos;
                    while b
                        .get(self.pos)
                        .is_some_and(|&c| !c.is_ascii_whitespace() && !b"{};\"#".contains(&c))
                    {
                        self.pos += 1;
                    }
                    return Ok(Some(Tok::Word(&self.text[start..self.pos])));
                }
            }
        }
    }

    /// The rest of a quoted string, with dhcpd's escapes.
    fn string(&mut self) -> Result<Vec<u8>> {
        let b = self.text.as_bytes();
        let mut out = Vec::new();
        loop {
            let Some(&c) = b.get(self.pos) else {
                return Err(self.err("end of file inside a string"));
            };
            self.pos += 1;
            match c {
                b'"' => return Ok(out),
                b'\n' => {
                    self.line += 1;
                    out.push(c);
                }
                b'\\' => {
                    let Some(&e) = b.get(self.pos) else {
                        return Err(self.err("end of file inside a string"));
                    };
                    self.pos += 1;
                    match e {
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'n' => out.push(b'\n'),
                        b'b' => out.push(8),
                        b'0'..=b'3' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match b.get(self.pos) {
                                    Some(&d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => return Err(self.err("bad octal escape in a string")),
                                }
                            }
                            out.push(v as u8);
                        }
                        b'x' => {
                            let hex = self.text.get(self.pos..self.pos + 2).unwrap_or("");
                            let v = u8::from_str_radix(hex, 16)
                                .map_err(|_| self.err("bad hex escape in a string"))?;
                            self.pos += 2;
                            out.push(v);
                        }
                        other => out.push(other),
                    }
                }
                _ => out.push(c),
            }
        }
    }

    fn expect_word(&mut self, what: &str) -> Result<&'a str> {
        match self.next()? {
            Some(Tok::Word(w)) => Ok(w),
            other => Err(self.err(format!("expected {what}, found {other:?}"))),
        }
    }

    fn expect(&mut self, tok: Tok<'_>, what: &str) -> Result<()> {
        match self.next()? {
            Some(t) if t == tok => Ok(()),
            other => Err(self.err(format!("expected {what}, found {other:?}"))),
        }
    }

    /// Skips the rest of a statement: up to its `;`, or to the `}` closing a block it
    /// opened (block statements end there, without `;`).
    fn skip_statement(&mut self) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match self.next()? {
                None => return Err(self.err("end of file inside a statement")),
                Some(Tok::Semi) if depth == 0 => return Ok(()),
                Some(Tok::Open) => depth += 1,
                Some(Tok::Close) => {
                    if depth == 0 {
                        return Err(self.err("unexpected '}'"));
                    }
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn number<T: std::str::FromStr>(&self, s: &str, what: &str) -> Result<T> {
        s.parse()
            .map_err(|_| self.err(format!("expected {what}, found '{s}'")))
    }

    /// A date and its `;`: `never`, `epoch N`, or `W YYYY/MM/DD HH:MM:SS` (UTC).
    fn date(&mut self) -> Result<u64> {
        let first = self.expect_word("a date")?;
        let t = match first {
            "never" => NEVER,
            "epoch" => {
                let n = self.expect_word("seconds since the epoch")?;
                self.number(n, "seconds since the epoch")?
            }
            _ => {
                let _wday: u8 = self.number(first, "a weekday number")?;
                let date = self.expect_word("a date YYYY/MM/DD")?;
                let time = self.expect_word("a time HH:MM:SS")?;
                let d: Vec<&str> = date.split('/').collect();
                let t: Vec<&str> = time.split(':').collect();
                if d.len() != 3 || t.len() != 3 {
                    return Err(self.err(format!("bad date '{date} {time}'")));
                }
                let (y, m, dd): (i64, u32, u32) = (
                    self.number(d[0], "a year")?,
                    self.number(d[1], "a month")?,
                    self.number(d[2], "a day")?,
                );
                let (h, mi, s): (u64, u64, u64) = (
                    self.number(t[0], "an hour")?,
                    self.number(t[1], "a minute")?,
                    self.number(t[2], "a second")?,
                );
                if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || h > 23 || mi > 59 || s > 60
                {
                    return Err(self.err(format!("bad date '{date} {time}'")));
                }
                // A year no seconds count can hold (a damaged file) is refused before the
                // day arithmetic, which would overflow on it.
                if !(0..=MAX_YEAR).contains(&y) {
                    return Err(self.err(format!("date out of range: '{date}'")));
                }
                // dhcpd accepts a two-digit year counted from 1900.
                let y = if y < 1900 { y + 1900 } else { y };
                let days = days_from_civil(y, m, dd);
                u64::try_from(days)
                    .map_err(|_| self.err(format!("date before 1970: '{date}'")))?
                    .checked_mul(86_400)
                    .and_then(|t| t.checked_add(h * 3600 + mi * 60 + s))
                    .ok_or_else(|| self.err(format!("date out of range: '{date}'")))?
            }
        };
        self.expect(Tok::Semi, "';' after a date")?;
        Ok(t)
    }

    fn hex_bytes(&self, s: &str, what: &str) -> Result<Vec<u8>> {
        s.split(':')
            .map(|h| {
                if h.is_empty() || h.len() > 2 {
                    return Err(self.err(format!("bad {what} '{s}'")));
                }
                u8::from_str_radix(h, 16).map_err(|_| self.err(format!("bad {what} '{s}'")))
            })
            .collect()
    }

    /// `option agent.circuit-id "...";` and `agent.remote-id`: appended to the lease's
    /// relay agent information; any other option of a lease is skipped.
    fn agent_option(&mut self, l: &mut Lease) -> Result<()> {
        let name = self.expect_word("an option name")?;
        let code = match name.strip_prefix("agent.") {
            Some("circuit-id") => sub::CIRCUIT_ID,
            Some("remote-id") => sub::REMOTE_ID,
            _ => return self.skip_statement(),
        };
        let value = match self.next()? {
            Some(Tok::Str(s)) => s,
            Some(Tok::Word(w)) => self.hex_bytes(w, name)?,
            other => return Err(self.err(format!("expected a value of {name}, found {other:?}"))),
        };
        let mut info = l.agent_info.to_vec();
        if value.len() > 255 || info.len() + 2 + value.len() > super::MAX_AGENT_INFO {
            return Err(self.err("relay agent information longer than 255 octets"));
        }
        info.extend([code, value.len() as u8]);
        info.extend(value);
        l.agent_info = info.into();
        self.expect(Tok::Semi, "';'")
    }

    fn binding_state(&mut self, flags: &mut LeaseFlags) -> Result<BindingState> {
        self.expect(Tok::Word("state"), "'state'")?;
        let w = self.expect_word("a binding state")?;
        let s = match w {
            // Older dhcpd versions wrote these as states.
            "reserved" => {
                flags.0 |= LeaseFlags::RESERVED;
                BindingState::Active
            }
            "bootp" => {
                flags.0 |= LeaseFlags::BOOTP;
                BindingState::Active
            }
            _ => BindingState::from_isc_name(w)
                .ok_or_else(|| self.err(format!("unknown binding state '{w}'")))?,
        };
        self.expect(Tok::Semi, "';'")?;
        Ok(s)
    }

    fn lease(&mut self) -> Result<Lease> {
        let a = self.expect_word("an address")?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| self.err(format!("bad lease address '{a}'")))?;
        self.expect(Tok::Open, "'{'")?;
        let mut l = Lease {
            stamp: 0,
            addr,
            state: BindingState::Free,
            hw: HwAddr::default(),
            client_id: Box::default(),
            agent_info: Box::default(),
            starts: 0,
            ends: 0,
            cltt: 0,
            tstp: 0,
            tsfp: 0,
            atsfp: 0,
            flags: LeaseFlags::default(),
        };
        loop {
            let word = match self.next()? {
                Some(Tok::Close) => return Ok(l),
                Some(Tok::Semi) => continue,
                Some(Tok::Word(w)) => w,
                None => return Err(self.err(format!("end of file inside lease {addr}"))),
                Some(_) => {
                    self.skip_statement()?;
                    continue;
                }
            };
            match word {
                "starts" => l.starts = self.date()?,
                "ends" => l.ends = self.date()?,
                "tstp" => l.tstp = self.date()?,
                "tsfp" => l.tsfp = self.date()?,
                "atsfp" => l.atsfp = self.date()?,
                "cltt" => l.cltt = self.date()?,
                "binding" => l.state = self.binding_state(&mut l.flags)?,
                "next" | "rewind" => {
                    // What dhcpd derives from the current state; not stored.
                    self.expect(Tok::Word("binding"), "'binding'")?;
                    self.binding_state(&mut l.flags)?;
                }
                "abandoned" => {
                    l.state = BindingState::Abandoned;
                    self.expect(Tok::Semi, "';'")?;
                }
                "reserved" => {
                    l.flags.0 |= LeaseFlags::RESERVED;
                    self.expect(Tok::Semi, "';'")?;
                }
                "dynamic-bootp" => {
                    l.flags.0 |= LeaseFlags::BOOTP;
                    self.expect(Tok::Semi, "';'")?;
                }
                "hardware" => {
                    let t = self.expect_word("a hardware type")?;
                    let htype = hw_type_from_name(t)
                        .ok_or_else(|| self.err(format!("unknown hardware type '{t}'")))?;
                    let hex = self.expect_word("a hardware address")?;
                    let bytes = self.hex_bytes(hex, "hardware address")?;
                    if bytes.len() > super::MAX_CHADDR {
                        return Err(self.err("hardware address longer than 16 octets"));
                    }
                    l.hw = HwAddr::new(htype, &bytes);
                    self.expect(Tok::Semi, "';'")?;
                }
                "uid" => {
                    let bytes = match self.next()? {
                        Some(Tok::Str(s)) => s,
                        Some(Tok::Word(w)) => self.hex_bytes(w, "uid")?,
                        other => return Err(self.err(format!("expected a uid, found {other:?}"))),
                    };
                    if bytes.len() > super::MAX_CLIENT_ID {
                        return Err(self.err("uid longer than 255 octets"));
                    }
                    l.client_id = bytes.into();
                    self.expect(Tok::Semi, "';'")?;
                }
                "option" => self.agent_option(&mut l)?,
                _ => self.skip_statement()?,
            }
        }
    }
}

/// The leases of a dhcpd 4.x leases file: the last entry per address, sorted by address.
/// The returned leases have stamp 0; the importer assigns stamps.
pub fn parse_leases(text: &str) -> Result<Vec<Lease>> {
    let mut lx = Lexer {
        text,
        pos: 0,
        line: 1,
    };
    let mut leases: HashMap<Ipv4Addr, Lease> = HashMap::new();
    while let Some(tok) = lx.next()? {
        match tok {
            Tok::Word("lease") => {
                let l = lx.lease()?;
                leases.insert(l.addr, l);
            }
            Tok::Semi => {}
            Tok::Close => return Err(lx.err("unexpected '}'")),
            _ => lx.skip_statement()?,
        }
    }
    let mut v: Vec<Lease> = leases.into_values().collect();
    v.sort_unstable_by_key(|l| l.addr);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_match_dhcpd() {
        // 2026-11-23 10:00:00 UTC was a Monday.
        let t = days_from_civil(2026, 11, 23) as u64 * 86_400 + 36_000;
        assert_eq!(format_time(t), "1 2026/11/23 10:00:00");
        assert_eq!(format_time(0), "4 1970/01/01 00:00:00");
        assert_eq!(format_time(NEVER), "never");
        for days in [0i64, 59, 60, 365, 11_016, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    /// Found by the isc_leases fuzz target: a year of 13 digits overflowed the seconds.
    #[test]
    fn a_year_past_any_time_is_an_error() {
        for year in ["2020000000006", "999999999999999999", "1000000000001"] {
            let text = format!("lease 192.0.2.10 {{\n  ends 4 {year}/12/03 15:31:18;\n}}\n");
            let e = parse_leases(&text).unwrap_err().to_string();
            assert!(e.contains("date out of range"), "{year}: {e}");
        }
    }

    #[test]
    fn reads_what_dhcpd_writes() {
        let text = r#"
# The format of this file is documented in the dhcpd.leases(5) manual page.
# This lease file was written by isc-dhcp-4.4.3

# authoring-byte-order entry is generated, DO NOT DELETE
authoring-byte-order little-endian;

server-duid "\000\001\000\001-\226\3744\002\000\000\000\000\001";

failover peer "fo" state {
  my state normal at 1 2026/11/23 10:00:00;
  partner state normal at 1 2026/11/23 10:00:00;
}

lease 192.0.2.10 {
  starts 1 2026/11/23 10:00:00;
  ends 1 2026/11/23 11:00:00;
  tstp 1 2026/11/23 11:30:00;
  tsfp epoch 1795000000; # Wed ...
  atsfp never;
  cltt 1 2026/11/23 10:00:00;
  binding state active;
  next binding state free;
  rewind binding state free;
  reserved;
  hardware ethernet 02:00:00:00:00:01;
  uid "\001\002\000\000\000\000\001";
  set vendor-class-identifier = "x;y";
  client-hostname "pc";
  on expiry { set a = "b"; }
}
lease 192.0.2.11 {
  starts 1 2026/11/23 10:00:00;
  ends 1 2026/11/23 11:00:00;
  binding state active;
  uid 01:02:00:00:00:00:02;
}
lease 192.0.2.11 {
  binding state released;
  hardware token-ring 0a:0b;
}
host h { dynamic; hardware ethernet 02:00:00:00:00:09; fixed-address 192.0.2.99; }
"#;
        let v = parse_leases(text).unwrap();
        assert_eq!(v.len(), 2);
        let a = &v[0];
        assert_eq!(a.state, BindingState::Active);
        assert!(a.flags.reserved());
        assert_eq!(format_time(a.starts), "1 2026/11/23 10:00:00");
        assert_eq!(a.ends - a.starts, 3600);
        assert_eq!(a.tsfp, 1_795_000_000);
        assert_eq!(a.atsfp, NEVER);
        assert_eq!(a.hw.bytes(), &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&*a.client_id, &[1, 2, 0, 0, 0, 0, 1]);
        // The last entry for an address wins, whole.
        let b = &v[1];
        assert_eq!(b.state, BindingState::Released);
        assert_eq!((b.hw.htype, b.hw.bytes()), (6, &[10u8, 11][..]));
        assert!(b.client_id.is_empty());
        // Our output reads back the same.
        let mut out = Vec::new();
        write_lease(&mut out, a).unwrap();
        let again = parse_leases(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(again[0], *a);
    }

    #[test]
    fn stashed_agent_options_read_and_write_as_dhcpd_has_them() {
        let text = "lease 192.0.2.7 {\n  binding state active;\n  hardware ethernet 02:00:00:00:00:07;\n  \
                    option agent.circuit-id \"olt-7/1/3\";\n  option agent.remote-id 00:11:22;\n  \
                    option agent.unknown-9 \"x\";\n}\n";
        let l = &parse_leases(text).unwrap()[0];
        assert_eq!(&*l.agent_info, b"\x01\x09olt-7/1/3\x02\x03\x00\x11\x22");
        let mut out = Vec::new();
        write_lease(&mut out, l).unwrap();
        let written = String::from_utf8(out).unwrap();
        assert!(
            written.contains("option agent.circuit-id \"olt-7/1/3\";"),
            "{written}"
        );
        assert_eq!(parse_leases(&written).unwrap()[0], *l);
    }

    #[test]
    fn reports_the_line_of_an_error() {
        let e = parse_leases("lease 192.0.2.1 {\n starts 1 2026/13/01 00:00:00;\n}").unwrap_err();
        assert!(matches!(e, Error::Import { line: 2, .. }), "{e}");
        assert!(parse_leases("lease 192.0.2.300 { }").is_err());
        assert!(parse_leases("lease 192.0.2.1 { uid \"abc").is_err());
    }

    /// A form feed once made the lexer return empty words forever: each parse here runs
    /// on a thread of its own, so a regression fails instead of hanging the suite.
    #[test]
    fn a_form_feed_is_whitespace() {
        let parse = |text: &'static str| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(parse_leases(text).map(|v| v.len())));
            rx.recv_timeout(std::time::Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("the parser does not return on {text:?}"))
        };
        assert_eq!(parse("\x0c").unwrap(), 0);
        assert_eq!(parse("authoring-byte-order\x0clittle-endian;").unwrap(), 0);
        assert_eq!(
            parse("lease 192.0.2.1 {\x0c binding state active;\x0c}").unwrap(),
            1
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = parse_leases(&s);
        }

        #[test]
        fn uid_quoting_round_trips(b in proptest::collection::vec(proptest::num::u8::ANY, 1..40)) {
            let text = format!("lease 192.0.2.1 {{ uid {}; }}", quote(&b));
            let v = parse_leases(&text).unwrap();
            proptest::prop_assert_eq!(&*v[0].client_id, &b[..]);
        }
    }
}
