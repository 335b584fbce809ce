//! Calendar arithmetic in UTC without a time-zone library: dhcpd's lease file dates, the
//! lease history's lines and file names, the times operators type into `history`.

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A year past any u64 count of seconds (about 5.8e11 years); `days_from_civil` does not
/// overflow up to it.
pub const MAX_YEAR: i64 = 1_000_000_000_000;

/// (year, month 1-12, day 1-31) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-03 17:02:11` (UTC).
pub fn format_utc(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `20261203`: the day of `t` (UTC), for daily files.
pub fn day_stamp(t: u64) -> String {
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    format!("{y}{m:02}{d:02}")
}

/// A time an operator typed: seconds since the epoch, or `YYYY-MM-DD`, optionally with
/// ` HH:MM[:SS]` or `THH:MM[:SS]`, an optional trailing `Z`; always UTC.
pub fn parse_utc(text: &str) -> Option<u64> {
    let s = text.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(secs);
    }
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix(" UTC"))
        .unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut ymd = date.split('-');
    let y: i64 = ymd.next()?.parse().ok()?;
    let m: u32 = ymd.next()?.parse().ok()?;
    let d: u32 = ymd.next()?.parse().ok()?;
    if ymd.next().is_some() || !(1970..=MAX_YEAR).contains(&y) || !(1..=12).contains(&m) {
        return None;
    }
    if d == 0 || d > 31 || civil_from_days(days_from_civil(y, m, d)) != (y, m, d) {
        return None;
    }
    let mut secs = 0u64;
    if let Some(t) = time {
        let mut hms = t.split(':');
        let h: u64 = hms.next()?.parse().ok()?;
        let mi: u64 = hms.next()?.parse().ok()?;
        let se: u64 = hms.next().map_or(Some(0), |x| x.parse().ok())?;
        if hms.next().is_some() || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        secs = h * 3600 + mi * 60 + se;
    }
    u64::try_from(days_from_civil(y, m, d))
        .ok()?
        .checked_mul(86_400)?
        .checked_add(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_round_trips() {
        let t = 1_764_781_331; // 2025-12-03 17:02:11
        assert_eq!(format_utc(t), "2025-12-03 17:02:11");
        assert_eq!(day_stamp(t), "20251203");
        for text in ["2025-12-03 17:02:11", "2025-12-03T17:02:11Z", "1764781331"] {
            assert_eq!(parse_utc(text), Some(t), "{text}");
        }
        assert_eq!(parse_utc("2025-12-03"), Some(t - 17 * 3600 - 2 * 60 - 11));
        assert_eq!(parse_utc("2025-12-03 17:02"), Some(t - 11));
        for junk in [
            "",
            "2025-13-01",
            "2025-02-30",
            "2025-12-03 24:00",
            "yesterday",
            "2025-12-03 1:2:3:4",
        ] {
            assert_eq!(parse_utc(junk), None, "{junk}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = parse_utc(&text);
        }
    }
}
