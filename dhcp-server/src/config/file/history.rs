//! The `[history]` table: this server's name and site in lease events, how much log the
//! journal keeps for sinks that are behind, and the sinks: `[history.postgres]`,
//! `[history.nats]`, `[history.text]`.

use super::*;
use crate::config::History;
use crate::history::{NatsOptions, PostgresOptions, TextOptions};

const HISTORY_KEYS: &[&str] = &[
    "server",
    "site",
    "journal-hold",
    "batch",
    "postgres",
    "nats",
    "text",
];
const POSTGRES_KEYS: &[&str] = &["url", "retention-days"];
const NATS_KEYS: &[&str] = &["servers", "stream", "replicas", "credentials"];
const TEXT_KEYS: &[&str] = &["dir", "prefix"];

impl Walker {
    /// The `[history]` table; `None` after an error (reported) or without any sink.
    pub(super) fn history(&mut self, v: &Value<'_>) -> Option<History> {
        let DeValue::Table(t) = v.get_ref() else {
            self.mismatch("history", v, "a [history] table");
            return None;
        };
        self.check_keys("history", t, HISTORY_KEYS, false);
        let mut h = History::default();
        if let Some(v) = t.get("server") {
            h.server = self.name("history.server", v)?;
        }
        if let Some(v) = t.get("site") {
            h.site = self.name("history.site", v)?;
        }
        if let Some(v) = t.get("journal-hold") {
            h.journal_hold = self.integer(
                "history.journal-hold",
                v,
                1 << 20..=1 << 44,
                "a size in bytes",
            )? as u64;
        }
        if let Some(v) = t.get("batch") {
            h.batch =
                Some(self.integer("history.batch", v, 1..=1 << 20, "a number of events")? as usize);
        }
        if let Some(v) = t.get("postgres") {
            h.postgres = Some(self.postgres(v)?);
        }
        if let Some(v) = t.get("nats") {
            h.nats = Some(self.nats(v)?);
        }
        if let Some(v) = t.get("text") {
            h.text = Some(self.text(v)?);
        }
        if h.postgres.is_none() && h.nats.is_none() && h.text.is_none() {
            self.error(
                v.span(),
                "history",
                "no sink; add [history.postgres], [history.nats] or [history.text]",
            );
            return None;
        }
        Some(h)
    }

    /// A server or site name: it goes into NATS subjects and file names, so letters,
    /// digits, `-` and `_` only.
    fn name(&mut self, key: &str, v: &Value<'_>) -> Option<String> {
        self.parsed(key, v, |s| {
            if !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "'{s}': use 1 to 64 letters, digits, '-' or '_' (it names NATS subjects)"
                ))
            }
        })
    }

    fn table<'v, 'i>(
        &mut self,
        key: &str,
        v: &'v Value<'i>,
        keys: &[&str],
    ) -> Option<&'v DeTable<'i>> {
        let DeValue::Table(t) = v.get_ref() else {
            self.mismatch(key, v, &format!("a [{key}] table"));
            return None;
        };
        self.check_keys(key, t, keys, false);
        Some(t)
    }

    fn postgres(&mut self, v: &Value<'_>) -> Option<PostgresOptions> {
        let t = self.table("history.postgres", v, POSTGRES_KEYS)?;
        let Some(url) = t.get("url") else {
            self.missing(
                v.span(),
                "history.postgres.url",
                "the database to write to, e.g. url = \"host=/run/postgresql dbname=dhcp\"",
            );
            return None;
        };
        let mut p = PostgresOptions {
            url: self.string("history.postgres.url", url)?.to_owned(),
            ..PostgresOptions::default()
        };
        if let Some(v) = t.get("retention-days") {
            p.retention_days = self.integer(
                "history.postgres.retention-days",
                v,
                1..=36_500,
                "a number of days",
            )? as u32;
        }
        Some(p)
    }

    fn nats(&mut self, v: &Value<'_>) -> Option<NatsOptions> {
        let t = self.table("history.nats", v, NATS_KEYS)?;
        let Some(servers) = t.get("servers") else {
            self.missing(
                v.span(),
                "history.nats.servers",
                "the NATS servers, e.g. servers = [\"nats://198.51.100.10:4222\"]",
            );
            return None;
        };
        let servers = self.list("history.nats.servers", servers, true, |w, key, e| {
            w.parsed(key, e, |s| {
                if s.starts_with("nats://") || s.starts_with("tls://") || !s.contains("://") {
                    Ok(s.to_owned())
                } else {
                    Err(format!("'{s}' is not a NATS address (nats://HOST:PORT)"))
                }
            })
        })?;
        let mut n = NatsOptions {
            servers,
            ..NatsOptions::default()
        };
        if let Some(v) = t.get("stream") {
            n.stream = Some(self.name("history.nats.stream", v)?);
        }
        if let Some(v) = t.get("replicas") {
            n.replicas =
                self.integer("history.nats.replicas", v, 1..=5, "a number of copies")? as usize;
        }
        if let Some(v) = t.get("credentials") {
            n.credentials = Some(PathBuf::from(self.string("history.nats.credentials", v)?));
        }
        Some(n)
    }

    fn text(&mut self, v: &Value<'_>) -> Option<TextOptions> {
        let t = self.table("history.text", v, TEXT_KEYS)?;
        let Some(dir) = t.get("dir") else {
            self.missing(
                v.span(),
                "history.text.dir",
                "the directory of the daily files, e.g. dir = \"/var/log/dhcp-server\"",
            );
            return None;
        };
        let dir = self.parsed("history.text.dir", dir, |s| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(format!("'{s}' is not an absolute path"))
            }
        })?;
        let prefix = match t.get("prefix") {
            Some(v) => self.name("history.text.prefix", v)?,
            None => "dhcp-leases".to_owned(),
        };
        Some(TextOptions { dir, prefix })
    }
}
