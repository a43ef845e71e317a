//! What the Redis store keeps beside its locks for the admin API: one
//! process record per process (a hash under the alias's own records:
//! `host`, `pid`, and each label and function by number), so that a lock's
//! value needs only its token (whose first 11 characters name the process)
//! and, for a labelled lock, `#<n>`; and the audit list of forced releases.
//! Also how both are read back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use once_cell::sync::Lazy;

use crate::admin::{Forced, Owner};
use crate::backend::{Held, Namespace, Request, Token};

/// How long a process record lives without being written again.
const RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a live process writes its record again (on its next
/// acquisition), so that it never expires under a process that locks.
const REWRITE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How many distinct (label, function) pairs a process records; past it,
/// new pairs are held with no label (the process record stays small).
const MAX_METAS: usize = 10_000;

/// This process's record, as one store writes it.
pub(super) struct Books {
    /// `<books>proc:`, the records' prefix.
    procs: String,
    /// This process's record.
    record: String,
    /// `<books>audit`: the audit list.
    pub(super) audit: String,
    /// Written, with every meta, and not yet due again.
    clean: AtomicBool,
    /// Seconds since [`START`] after which the record is written again.
    due_at: AtomicU64,
    metas: Mutex<HashMap<Meta, u32>>,
}

/// A lock's label and function, as numbered in the process record (the
/// function path is the macro's `'static` text: looking a `#[lock]`
/// function up copies nothing).
type Meta = (Option<Box<str>>, Option<&'static str>);

static START: Lazy<Instant> = Lazy::new(Instant::now);

impl Books {
    pub(super) fn new(ns: &Namespace) -> Self {
        let procs = ns.internal("proc:");
        let record = format!("{procs}{}", crate::admin::process_tag());
        Self {
            procs,
            record,
            audit: ns.internal("audit"),
            clean: AtomicBool::new(false),
            due_at: AtomicU64::new(0),
            metas: Mutex::new(HashMap::new()),
        }
    }

    /// The records' prefix, for the scripts that read them.
    pub(super) fn procs(&self) -> &str {
        &self.procs
    }

    /// The meta suffix of a request: `#<n>` for a label or function
    /// (numbered on first use, and then due to be written), else empty.
    pub(super) fn meta_of(&self, req: &Request<'_>) -> String {
        if req.label.is_none() && req.function.is_none() {
            return String::new();
        }
        let pair = (req.label.map(Box::from), req.function);
        let mut metas = self.metas.lock().unwrap_or_else(|p| p.into_inner());
        let next = metas.len() as u32 + 1;
        let id = match metas.get(&pair) {
            Some(&id) => id,
            None if metas.len() >= MAX_METAS => return String::new(),
            None => {
                metas.insert(pair, next);
                self.clean.store(false, Ordering::Release);
                next
            }
        };
        format!("#{id}")
    }

    /// The writes the record needs before the next acquisition, if any:
    /// at first, after a new label, and once a day.
    pub(super) fn due(&self) -> Option<redis::Pipeline> {
        let now = START.elapsed().as_secs();
        if self.clean.load(Ordering::Acquire) && now < self.due_at.load(Ordering::Acquire) {
            return None;
        }
        // Marked clean before the write: an acquisition racing with it
        // may go first, its holder shown without a label until then.
        self.clean.store(true, Ordering::Release);
        self.due_at
            .store(now + REWRITE_EVERY.as_secs(), Ordering::Release);
        let mut pipe = redis::pipe();
        let hset = pipe.cmd("HSET").arg(&self.record);
        hset.arg("pid").arg(std::process::id());
        if let Some(host) = crate::admin::host_name() {
            hset.arg("host").arg(escape(host));
        }
        for ((label, function), id) in self.metas.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(l) = label {
                hset.arg(format!("l{id}")).arg(escape(l));
            }
            if let Some(f) = function {
                hset.arg(format!("f{id}")).arg(escape(f));
            }
        }
        pipe.ignore()
            .cmd("PEXPIRE")
            .arg(&self.record)
            .arg(RECORD_TTL.as_millis() as u64)
            .ignore();
        Some(pipe)
    }

    /// After a write [`due`](Self::due) asked for: a failed one is due again.
    pub(super) fn written(&self, ok: bool) {
        if !ok {
            self.clean.store(false, Ordering::Release);
        }
    }
}

/// `%` and NUL escaped, so that a value never holds the audit entry's
/// separator.
pub(super) fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('\0', "%00")
}

fn unescape(s: &str) -> String {
    s.replace("%00", "\0").replace("%25", "%")
}

/// A recorded text: escaped, empty for none.
fn text(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(unescape)
}

/// One lock as the inspect script read it.
pub(super) type Inspected = (
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The held lock `key` from what the inspect script read; `None` for a key
/// that is gone or holds no lock of ours.
#[cfg(test)]
pub(super) fn held(key: String, read: Inspected) -> Option<Held> {
    held_owned(key, read).map(|(held, _)| held)
}

/// The held lock `key` from what the inspect script read, with its
/// holder's token; `None` for a key that is gone or holds no lock of ours.
pub(super) fn held_owned(key: String, read: Inspected) -> Option<(Held, String)> {
    let (value, pttl, host, pid, label, function) = read;
    let value = value?;
    let token = value.get(..22)?.to_owned();
    Token::decode(&token)?;
    let span: u64 = value
        .get(22..)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let left = u64::try_from(pttl).ok();
    let age = span.saturating_sub(left.unwrap_or(0));
    let held_for = Duration::from_millis(age);
    let owner = owner(
        host.as_deref(),
        pid.as_deref(),
        label.as_deref(),
        function.as_deref(),
    );
    let held = Held::new(key)
        .held_for(Some(held_for))
        .lease_left(left.map(Duration::from_millis))
        .waiting(None)
        .owner(owner)
        .acquired_at(SystemTime::now().checked_sub(held_for));
    Some((held, token))
}

fn owner(
    host: Option<&str>,
    pid: Option<&str>,
    label: Option<&str>,
    function: Option<&str>,
) -> Option<Owner> {
    let owner = Owner::unknown()
        .host(text(host))
        .pid(pid.and_then(|p| p.parse().ok()))
        .label(text(label))
        .function(text(function));
    (owner != Owner::unknown()).then_some(owner)
}

/// The head of an audit entry, as the caller writes it: version, stored
/// key, unix ms, who (host, pid, user) and why, joined by NUL.
pub(super) fn entry_head(entry: &Forced) -> String {
    let at = entry
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    [
        "1".to_owned(),
        escape(&entry.key),
        at.to_string(),
        escape(entry.by.host.as_deref().unwrap_or("")),
        entry.by.pid.map_or(String::new(), |p| p.to_string()),
        escape(entry.by.label.as_deref().unwrap_or("")),
        escape(&entry.reason),
    ]
    .join("\0")
}

/// An audit entry as recorded (see the force script); `None` if it is not
/// one this version wrote.
pub(super) fn entry(recorded: &str) -> Option<Forced> {
    let f: Vec<&str> = recorded.split('\0').collect();
    if f.first() != Some(&"1") || f.len() < 8 {
        return None;
    }
    let key = unescape(f[1]);
    let at = UNIX_EPOCH + Duration::from_millis(f[2].parse().ok()?);
    let by = owner(Some(f[3]), Some(f[4]), Some(f[5]), None).unwrap_or_default();
    let removed = match (f[7], f.get(8..15)) {
        ("1", Some(r)) => {
            let held_for = Duration::from_millis(r[4].parse().unwrap_or(0));
            let left = r[5].parse::<u64>().ok().map(Duration::from_millis);
            Some(
                Held::new(key.clone())
                    .held_for(Some(held_for))
                    .lease_left(left)
                    .owner(owner(Some(r[0]), Some(r[1]), Some(r[2]), Some(r[3])))
                    .acquired_at(at.checked_sub(held_for)),
            )
        }
        _ => None,
    };
    Some(Forced::new(key, at, by, unescape(f[6])).removed(removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_whatever_their_text() {
        let by = Owner::unknown()
            .host(Some("h%\0st".into()))
            .pid(Some(7))
            .label(Some("ann".into()));
        let forced = Forced::new("k\0%25", UNIX_EPOCH + Duration::from_secs(9), by, "why\0%");
        let recorded = format!(
            "{}\0{}",
            entry_head(&forced),
            [
                "1", "web%253", "42", "cron", "app::job", "1500", "300", "tok"
            ]
            .join("\0")
        );
        let back = entry(&recorded).unwrap();
        assert_eq!(back.key, forced.key);
        assert_eq!(back.at, forced.at);
        assert_eq!(back.by, forced.by);
        assert_eq!(back.reason, forced.reason);
        let removed = back.removed.unwrap();
        let owner = removed.owner.unwrap();
        assert_eq!(owner.host.as_deref(), Some("web%3"));
        assert_eq!(owner.pid, Some(42));
        assert_eq!(owner.function.as_deref(), Some("app::job"));
        assert_eq!(removed.held_for, Some(Duration::from_millis(1500)));
        let free = format!("{}\0{}", entry_head(&forced), "0");
        assert_eq!(entry(&free).unwrap().removed, None);
        assert!(entry("2\0k").is_none(), "another version's entry");
    }

    #[test]
    fn a_lock_value_reads_back_as_held() {
        let token = Token::new().encode();
        let value = format!("{}5000#3*", token.as_str());
        let read = (
            Some(value),
            4000,
            Some("web-1".into()),
            Some("12".into()),
            Some("nightly".into()),
            None,
        );
        let shown = held("k".into(), read).unwrap();
        assert_eq!(shown.held_for, Some(Duration::from_secs(1)));
        assert_eq!(shown.lease_left, Some(Duration::from_secs(4)));
        let owner = shown.owner.unwrap();
        assert_eq!(
            (owner.pid, owner.label.as_deref()),
            (Some(12), Some("nightly"))
        );
        assert!(
            held(
                "k".into(),
                (Some("not a lock".into()), 5, None, None, None, None)
            )
            .is_none()
        );
    }
}
