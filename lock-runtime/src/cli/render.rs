//! What `lockctl` prints: aligned tables for people, JSON for scripts.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::admin::{Forced, Owner, Page};
use crate::backend::Held;

/// The output form.
pub(super) struct Render {
    json: bool,
}

/// A listing being printed, a page at a time.
pub(super) struct Table {
    json: bool,
    first: bool,
    widths: Option<[usize; COLUMNS]>,
    count: usize,
}

const COLUMNS: usize = 7;
const HEADER: [&str; COLUMNS] = [
    "KEY",
    "HOLDER",
    "LABEL",
    "HELD FOR",
    "LEASE LEFT",
    "FENCE",
    "WAITING",
];

impl Render {
    pub(super) fn new(json: bool) -> Self {
        Self { json }
    }

    pub(super) fn table(&self, out: &mut dyn Write) -> io::Result<Table> {
        if self.json {
            write!(out, "[")?;
        }
        Ok(Table {
            json: self.json,
            first: true,
            widths: None,
            count: 0,
        })
    }

    pub(super) fn held(&self, out: &mut dyn Write, h: &Held) -> io::Result<()> {
        if self.json {
            return writeln!(out, "{}", held_json(h));
        }
        let mut text = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(text, "{name:<11} {value}");
        };
        line("key", h.key.clone());
        line(
            "holder",
            h.owner.as_ref().map_or_else(|| "-".into(), holder),
        );
        if let Some(f) = h.owner.as_ref().and_then(|o| o.function.as_deref()) {
            line("function", f.to_owned());
        }
        let since = match (h.acquired_at, h.held_for) {
            (Some(at), Some(d)) => format!("{} ({} ago)", timestamp(at), duration(d)),
            (Some(at), None) => timestamp(at),
            (None, Some(d)) => format!("{} ago", duration(d)),
            (None, None) => "-".into(),
        };
        line("acquired", since);
        line(
            "lease left",
            h.lease_left
                .map_or_else(|| "none (held until released)".into(), duration),
        );
        line("fencing", opt(h.fencing));
        line("waiting", opt(h.waiting));
        out.write_all(text.as_bytes())
    }

    pub(super) fn not_held(&self, out: &mut dyn Write, key: &str) -> io::Result<()> {
        if self.json {
            writeln!(out, "{}", json!({ "key": key, "held": false }))
        } else {
            writeln!(out, "{key} is not held")
        }
    }

    pub(super) fn forced(&self, out: &mut dyn Write, f: &Forced) -> io::Result<()> {
        if self.json {
            return writeln!(out, "{}", forced_json(f));
        }
        match &f.removed {
            Some(h) => {
                let mut by = h
                    .owner
                    .as_ref()
                    .map_or_else(|| "an unknown holder".into(), holder);
                if let Some(d) = h.held_for {
                    let _ = write!(by, " for {}", duration(d));
                }
                if let Some(t) = h.fencing {
                    let _ = write!(by, ", fencing token {t}");
                }
                writeln!(
                    out,
                    "released {} (held by {by}); recorded: {:?}",
                    f.key, f.reason
                )
            }
            None => writeln!(
                out,
                "{} was not held: nothing released (the attempt is recorded)",
                f.key
            ),
        }
    }

    pub(super) fn cleaned(&self, out: &mut dyn Write, removed: Option<u64>) -> io::Result<()> {
        match (self.json, removed) {
            (true, n) => writeln!(out, "{}", json!({ "removed": n })),
            (false, Some(n)) => writeln!(out, "removed {n} stale lock records"),
            (false, None) => writeln!(
                out,
                "nothing to clean: this store keeps no record past a lock's lease"
            ),
        }
    }

    pub(super) fn audit(&self, out: &mut dyn Write, entries: &[Forced]) -> io::Result<()> {
        if self.json {
            let all: Vec<Value> = entries.iter().map(forced_json).collect();
            return writeln!(out, "{}", Value::Array(all));
        }
        if entries.is_empty() {
            return writeln!(out, "no forced releases recorded");
        }
        let rows: Vec<[String; 5]> = entries
            .iter()
            .map(|f| {
                [
                    timestamp(f.at),
                    f.key.clone(),
                    holder(&f.by),
                    f.removed.as_ref().map_or_else(
                        || "(not held)".into(),
                        |h| h.owner.as_ref().map_or_else(|| "?".into(), holder),
                    ),
                    f.reason.clone(),
                ]
            })
            .collect();
        aligned(out, &["AT", "KEY", "BY", "REMOVED", "REASON"], &rows)
    }

    /// One refresh of `watch`: the screen redrawn, or a JSON line.
    pub(super) fn refresh(
        &self,
        out: &mut dyn Write,
        alias: &str,
        prefix: &str,
        page: &Page,
    ) -> io::Result<()> {
        if self.json {
            let held: Vec<Value> = page.held.iter().map(held_json).collect();
            writeln!(
                out,
                "{}",
                json!({ "at": timestamp(SystemTime::now()), "locks": held, "more": page.next.is_some() })
            )?;
            return out.flush();
        }
        // Clear the screen and go home, as `watch(1)` does.
        write!(out, "\x1b[2J\x1b[H")?;
        writeln!(
            out,
            "lockctl watch  alias {alias}  prefix {:?}  {}",
            prefix,
            timestamp(SystemTime::now())
        )?;
        let rows: Vec<[String; COLUMNS]> = page.held.iter().map(row).collect();
        aligned(out, &HEADER, &rows)?;
        if page.next.is_some() {
            writeln!(out, "... more locks not shown (--rows N shows more)")?;
        }
        out.flush()
    }
}

impl Table {
    pub(super) fn rows(&mut self, out: &mut dyn Write, held: &[Held]) -> io::Result<()> {
        self.count += held.len();
        if self.json {
            for h in held {
                let sep = if std::mem::take(&mut self.first) {
                    ""
                } else {
                    ","
                };
                write!(out, "{sep}\n  {}", held_json(h))?;
            }
            return Ok(());
        }
        if held.is_empty() {
            return Ok(());
        }
        let rows: Vec<[String; COLUMNS]> = held.iter().map(row).collect();
        // The first page sets the columns; later ones widen them only where
        // they must, so a long listing streams without being held in memory.
        let widths = self.widths.get_or_insert_with(|| widths(&HEADER, &rows));
        if std::mem::take(&mut self.first) {
            line(out, &HEADER.map(str::to_owned), widths)?;
        }
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
            line(out, r, widths)?;
        }
        Ok(())
    }

    pub(super) fn finish(self, out: &mut dyn Write) -> io::Result<()> {
        if self.json {
            writeln!(out, "{}]", if self.count == 0 { "" } else { "\n" })
        } else if self.count == 0 {
            writeln!(out, "no locks held")
        } else {
            let s = if self.count == 1 { "" } else { "s" };
            writeln!(out, "{} lock{s} held", self.count)
        }
    }
}

fn row(h: &Held) -> [String; COLUMNS] {
    let owner = h.owner.as_ref();
    [
        h.key.clone(),
        owner.map_or_else(|| "-".into(), place),
        owner
            .and_then(|o| o.label.clone().or_else(|| o.function.clone()))
            .unwrap_or_else(|| "-".into()),
        h.held_for.map_or_else(|| "-".into(), duration),
        h.lease_left.map_or_else(|| "-".into(), duration),
        opt(h.fencing),
        opt(h.waiting),
    ]
}

fn widths<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> [usize; N] {
    let mut w = header.map(str::len);
    for r in rows {
        for (w, cell) in w.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    w
}

fn aligned<const N: usize>(
    out: &mut dyn Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    let w = widths(header, rows);
    line(out, &header.map(str::to_owned), &w)?;
    rows.iter().try_for_each(|r| line(out, r, &w))
}

fn line<const N: usize>(
    out: &mut dyn Write,
    cells: &[String; N],
    w: &[usize; N],
) -> io::Result<()> {
    let mut text = String::new();
    for (i, (cell, w)) in cells.iter().zip(w).enumerate() {
        if i + 1 == N {
            text.push_str(cell);
        } else {
            let _ = write!(text, "{cell:<w$}  ");
        }
    }
    writeln!(out, "{}", text.trim_end())
}

/// `label (host:pid)`, or what of it is known.
pub(super) fn holder(o: &Owner) -> String {
    match o.label.as_deref().or(o.function.as_deref()) {
        Some(l) => format!("{l} on {}", place(o)),
        None => place(o),
    }
}

/// `host:pid`.
fn place(o: &Owner) -> String {
    match (&o.host, o.pid) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.clone(),
        (None, Some(p)) => format!("pid {p}"),
        (None, None) => "?".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn held_json(h: &Held) -> Value {
    json!({
        "key": h.key,
        "held": true,
        "owner": h.owner.as_ref().map(owner_json),
        "acquired_at": h.acquired_at.map(timestamp),
        "held_for_ms": h.held_for.map(millis),
        "lease_left_ms": h.lease_left.map(millis),
        "fencing": h.fencing,
        "waiting": h.waiting,
    })
}

fn owner_json(o: &Owner) -> Value {
    json!({ "host": o.host, "pid": o.pid, "label": o.label, "function": o.function })
}

fn forced_json(f: &Forced) -> Value {
    json!({
        "key": f.key,
        "at": timestamp(f.at),
        "by": owner_json(&f.by),
        "reason": f.reason,
        "removed": f.removed.as_ref().map(held_json),
    })
}

/// `1.2s`, `3m05s`, `2h10m`: short and exact enough for people.
pub(super) fn duration(d: Duration) -> String {
    let ms = millis(d);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// RFC 3339 in UTC, to the millisecond: `2026-12-02T14:03:11.250Z`.
pub(super) fn timestamp(t: SystemTime) -> String {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        return "before 1970".into();
    };
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// civil-from-days algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_220_191_250);
        assert_eq!(timestamp(t), "2026-12-02T14:03:11.250Z");
        // 2000-02-29, a leap day of a century year.
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_millis(1_250)), "1.2s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7_800)), "2h10m");
    }
}
