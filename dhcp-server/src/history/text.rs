//! The text file sink, for sites without PostgreSQL or NATS: one line per event in a
//! file per day (`<prefix>-YYYYMMDD.txt`, UTC, by the event's time), worded like Kea's
//! legal log so the same greps work. After each batch the file is synced, then the
//! position is stored beside it with the file's length; a restart cuts whatever a
//! batch wrote after the stored length (and removes later days' files), so a crash
//! leaves every event exactly once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use dhcp_proto::lease::{hex, printable, BindingState, NEVER};

use super::event::{Batch, Event, EventKind, Origin, Position};
use super::sink::{Sink, SinkError};
use crate::calendar::{day_stamp, format_utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOptions {
    pub dir: PathBuf,
    /// File names start with it.
    pub prefix: String,
}

/// The day's file being appended to.
struct Day {
    stamp: String,
    path: PathBuf,
    out: BufWriter<File>,
}

pub struct TextSink {
    opts: TextOptions,
    origin: Origin,
    day: Option<Day>,
}

impl TextSink {
    pub fn new(opts: TextOptions, origin: Origin) -> TextSink {
        TextSink {
            opts,
            origin,
            day: None,
        }
    }

    fn position_path(&self) -> PathBuf {
        self.opts.dir.join(format!("{}.position", self.opts.prefix))
    }

    fn day_path(&self, stamp: &str) -> PathBuf {
        self.opts
            .dir
            .join(format!("{}-{stamp}.txt", self.opts.prefix))
    }

    /// The day files, as (day stamp, path).
    fn days(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let head = format!("{}-", self.opts.prefix);
        let mut days = Vec::new();
        for entry in fs::read_dir(&self.opts.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(stamp) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&head))
                .and_then(|n| n.strip_suffix(".txt"))
            else {
                continue;
            };
            if stamp.len() == 8 && stamp.bytes().all(|b| b.is_ascii_digit()) {
                days.push((stamp.to_string(), entry.path()));
            }
        }
        days.sort();
        Ok(days)
    }

    /// Cuts what was written after the stored position: the stored day's file back to
    /// its stored length, later days' files away.
    fn cut_back(&self, stamp: &str, len: u64) -> io::Result<()> {
        for (day, path) in self.days()? {
            if day.as_str() > stamp {
                fs::remove_file(&path)?;
            } else if day == stamp && fs::metadata(&path)?.len() > len {
                OpenOptions::new().write(true).open(&path)?.set_len(len)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: &Batch) -> io::Result<()> {
        for e in &batch.events {
            let stamp = day_stamp(e.at);
            if self.day.as_ref().is_none_or(|d| d.stamp != stamp) {
                self.close_day()?;
                let path = self.day_path(&stamp);
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                self.day = Some(Day {
                    stamp,
                    path,
                    out: BufWriter::with_capacity(1 << 16, file),
                });
            }
            if let Some(day) = self.day.as_mut() {
                writeln!(day.out, "{}", line(e, &self.origin))?;
            }
        }
        let (stamp, len) = match self.day.as_mut() {
            Some(day) => {
                day.out.flush()?;
                day.out.get_ref().sync_data()?;
                (day.stamp.clone(), fs::metadata(&day.path)?.len())
            }
            None => match self.days()?.pop() {
                Some((stamp, path)) => (stamp, fs::metadata(path)?.len()),
                None => ("00000000".to_string(), 0),
            },
        };
        let tmp = self.position_path().with_extension("position.tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{}\n{stamp}\n{len}", batch.after)?;
        f.sync_all()?;
        fs::rename(&tmp, self.position_path())?;
        File::open(&self.opts.dir)?.sync_all()
    }

    fn close_day(&mut self) -> io::Result<()> {
        if let Some(mut day) = self.day.take() {
            day.out.flush()?;
            day.out.get_ref().sync_data()?;
        }
        Ok(())
    }
}

/// Reads `<position>\n<day>\n<length>`.
fn read_position(path: &Path) -> Result<Option<(Position, String, u64)>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut lines = text.lines();
    let bad = || "expected a position, a day and a length".to_string();
    let position = lines.next().ok_or_else(bad)?.parse::<Position>()?;
    let day = lines.next().ok_or_else(bad)?.to_string();
    let len = lines.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    Ok(Some((position, day, len)))
}

impl Sink for TextSink {
    fn kind(&self) -> &'static str {
        "text"
    }

    fn open(&mut self) -> Result<Option<Position>, SinkError> {
        self.day = None;
        let dir = &self.opts.dir;
        fs::create_dir_all(dir)
            .map_err(|e| SinkError::new(format!("create {}: {e}", dir.display())))?;
        let path = self.position_path();
        let stored =
            read_position(&path).map_err(|e| SinkError::new(format!("{}: {e}", path.display())))?;
        let Some((position, day, len)) = stored else {
            return Ok(None);
        };
        self.cut_back(&day, len)
            .map_err(|e| SinkError::new(format!("{}: {e}", dir.display())))?;
        Ok(Some(position))
    }

    fn deliver(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.write(batch).map_err(|e| {
            self.day = None;
            SinkError::new(format!("write to {}: {e}", self.opts.dir.display()))
        })
    }
}

/// A lease time as Kea's legal log words it: `1 hrs 0 min 0 secs`.
fn duration(secs: u64) -> String {
    if secs == NEVER {
        return "infinite time".into();
    }
    let d = secs / 86_400;
    let t = format!(
        "{} hrs {} min {} secs",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    if d > 0 {
        format!("{d} days {t}")
    } else {
        t
    }
}

/// One event as a line.
pub fn line(e: &Event, origin: &Origin) -> String {
    let span = |e: &Event| duration(e.ends.saturating_sub(e.at.max(e.starts)));
    let what = match e.kind {
        EventKind::Granted => format!("has been assigned for {}", span(e)),
        EventKind::Renewed => format!("has been renewed for {}", span(e)),
        EventKind::Released => "has been released".into(),
        EventKind::Declined => "has been declined".into(),
        EventKind::Expired => "has expired".into(),
        EventKind::Deleted => "has been deleted by the operator".into(),
        EventKind::Partner if e.state == BindingState::Active => {
            format!("has been assigned by the failover partner for {}", span(e))
        }
        EventKind::Partner => format!(
            "has been set {} by the failover partner",
            e.state.isc_name()
        ),
        EventKind::ReservationAdded => "has been reserved".into(),
        EventKind::ReservationRemoved => "is no longer reserved".into(),
    };
    let mut l = format!("{} UTC Address: {} {what}", format_utc(e.at), e.addr);
    if !e.hw.bytes().is_empty() {
        l.push_str(&format!(
            " to a device with hardware address: hwtype={} {}",
            e.hw.htype,
            hex(e.hw.bytes())
        ));
    }
    if !e.client_id.is_empty() {
        l.push_str(&format!(", client-id: {}", hex(&e.client_id)));
    }
    if !e.host_name.is_empty() {
        l.push_str(&format!(", hostname: {}", printable(&e.host_name)));
    }
    if let Some(giaddr) = e.relay.giaddr {
        l.push_str(&format!(" connected via relay at address: {giaddr}"));
    }
    let ids: Vec<String> = [
        ("circuit-id", &e.relay.circuit_id),
        ("remote-id", &e.relay.remote_id),
        ("subscriber-id", &e.relay.subscriber_id),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}: {}", hex(v)))
    .collect();
    if !ids.is_empty() {
        l.push_str(&format!(", identified by {}", ids.join(" and ")));
    }
    l.push_str(&format!(
        " (server {}, {})",
        origin.server,
        origin.role.as_str()
    ));
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::event::{Relay, Role};
    use dhcp_proto::lease::HwAddr;
    use std::net::Ipv4Addr;

    fn origin() -> Origin {
        Origin {
            server: "dhcp-a".into(),
            site: "lab".into(),
            role: Role::Primary,
        }
    }

    fn event(kind: EventKind, at: u64, host: u8) -> Event {
        Event {
            kind,
            state: BindingState::Active,
            at,
            addr: Ipv4Addr::new(198, 18, 0, host),
            hw: HwAddr::new(1, &[2, 0, 0, 0, 0, host]),
            client_id: vec![1, 2, 0, 0, 0, 0, host],
            host_name: b"cpe".to_vec(),
            relay: Relay {
                circuit_id: b"olt1/1".to_vec(),
                remote_id: vec![0xab],
                subscriber_id: Vec::new(),
                giaddr: Some(Ipv4Addr::new(192, 0, 2, 1)),
            },
            starts: at,
            ends: at + 3600,
            stamp: at << 20,
            shard: 0,
            seq: u64::from(host),
        }
    }

    fn batch(events: Vec<Event>, next: u64) -> Batch {
        Batch {
            events,
            after: Position {
                journal: 1,
                generation: 1,
                next: vec![next],
            },
        }
    }

    #[test]
    fn a_line_reads_like_keas_legal_log() {
        let l = line(&event(EventKind::Granted, 1_764_781_331, 5), &origin());
        assert_eq!(
            l,
            "2025-12-03 17:02:11 UTC Address: 198.18.0.5 has been assigned for 1 hrs 0 min 0 secs \
             to a device with hardware address: hwtype=1 02:00:00:00:00:05, client-id: 01:02:00:00:00:00:05, \
             hostname: cpe connected via relay at address: 192.0.2.1, identified by circuit-id: 6f:6c:74:31:2f:31 \
             and remote-id: ab (server dhcp-a, primary)"
        );
    }

    #[test]
    fn days_rotate_and_a_restart_cuts_what_was_not_stored() {
        let dir = std::env::temp_dir().join(format!("dhcp-history-text-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let opts = TextOptions {
            dir: dir.clone(),
            prefix: "leases".into(),
        };
        let day1 = 1_764_720_000; // 2025-12-03 00:00
        let mut sink = TextSink::new(opts.clone(), origin());
        assert_eq!(sink.open().unwrap(), None);
        sink.deliver(&batch(vec![event(EventKind::Granted, day1 + 10, 1)], 2))
            .unwrap();
        sink.deliver(&batch(
            vec![
                event(EventKind::Renewed, day1 + 20, 1),
                event(EventKind::Granted, day1 + 86_400 + 5, 2),
            ],
            4,
        ))
        .unwrap();
        let read = |d: &str| fs::read_to_string(dir.join(format!("leases-{d}.txt"))).unwrap();
        assert_eq!(read("20251203").lines().count(), 2);
        assert_eq!(read("20251204").lines().count(), 1);
        // A batch written but not stored (a crash before the position): cut at reopen.
        let stored = fs::read_to_string(dir.join("leases.position")).unwrap();
        sink.deliver(&batch(
            vec![
                event(EventKind::Released, day1 + 86_400 + 9, 2),
                event(EventKind::Granted, day1 + 2 * 86_400, 3),
            ],
            6,
        ))
        .unwrap();
        fs::write(dir.join("leases.position"), stored).unwrap();
        let mut again = TextSink::new(opts, origin());
        let p = again.open().unwrap().unwrap();
        assert_eq!(p.next, vec![4]);
        assert_eq!(read("20251204").lines().count(), 1);
        assert!(!dir.join("leases-20251205.txt").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
