//! What the campaign records: holds (from the workers' JSON-lines files),
//! writes to the fenced resource, and faults (from the controller), all
//! stamped on the host's monotonic clock, which every process of the host
//! reads alike.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

/// Nanoseconds on `CLOCK_MONOTONIC`: comparable across the processes of one
/// host (std's `Instant` reads the same clock but cannot be shown to
/// another process).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// How a critical section was entered.
pub const MODES: [&str; 4] = ["builder_sync", "builder_async", "attr_sync", "attr_async"];

/// One acquisition the store granted, as its worker saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hold {
    pub worker: u32,
    pub pid: u32,
    /// The worker's count of its holds.
    pub hold: u64,
    pub key: String,
    pub mode: String,
    pub token: u64,
    /// When the guard was in hand (the body started).
    pub start: u64,
    /// How long the acquisition waited, ns.
    pub waited: u64,
    /// When the body ended; `None` if the worker died first.
    pub end: Option<u64>,
    /// When the worker learnt the lock was lost (the guard's signal, a
    /// failed `is_lost` check, or an `on_lost = "cancel"` stop).
    pub lost: Option<u64>,
    /// `ok`, `stale`, `skipped` (the guard said lost), `cancelled`, `error`.
    pub write: Option<String>,
    pub write_at: Option<u64>,
    /// `ok`, `not_held`, or an error.
    pub release: Option<String>,
}

/// An acquisition that gave up (timeout, store error).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailedWait {
    pub worker: u32,
    pub start: u64,
    pub waited: u64,
    pub error: String,
}

/// One write the fenced resource was asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Write {
    pub key: String,
    pub token: u64,
    pub worker: u32,
    pub hold: u64,
    pub at: u64,
    pub accepted: bool,
}

/// One fault the controller injected, from `start` to `end`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fault {
    pub kind: String,
    /// What it hit: `worker 3`, `node 1`, `server`.
    pub target: String,
    /// The process it hit, for a worker fault.
    pub pid: Option<u32>,
    pub start: u64,
    pub end: u64,
}

/// Everything one run produced, as the checker reads it.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub holds: Vec<Hold>,
    pub failed_waits: Vec<FailedWait>,
    pub writes: Vec<Write>,
    pub faults: Vec<Fault>,
    /// Lock keys still in the store once every worker stopped and a lease
    /// went by.
    pub left_locks: Vec<String>,
    /// Workers that ended badly (not killed by a fault), with why.
    pub worker_failures: Vec<String>,
}

pub fn acq_line(h: &Hold) -> String {
    json!({"ev": "acq", "w": h.worker, "pid": h.pid, "h": h.hold, "key": h.key, "mode": h.mode,
           "token": h.token, "start": h.start, "waited": h.waited})
    .to_string()
}

pub fn end_line(h: &Hold) -> String {
    json!({"ev": "end", "w": h.worker, "h": h.hold, "end": h.end, "lost": h.lost,
           "write": h.write, "write_at": h.write_at, "release": h.release})
    .to_string()
}

pub fn wait_line(w: &FailedWait) -> String {
    json!({"ev": "wait", "w": w.worker, "start": w.start, "waited": w.waited, "error": w.error})
        .to_string()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}
fn ou(v: &Value, k: &str) -> Option<u64> {
    v[k].as_u64()
}
fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}
fn os(v: &Value, k: &str) -> Option<String> {
    v[k].as_str().map(str::to_owned)
}

/// Reads every worker's file in `dir` (`w*.jsonl`) into `history`. A last
/// line cut short by a kill is skipped; any other bad line is an error.
pub fn read_workers(dir: &Path, history: &mut History) -> Result<(), String> {
    let mut holds: BTreeMap<(u32, u64), Hold> = BTreeMap::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    entries.sort();
    for path in entries {
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let v: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => continue,
                Err(e) => return Err(format!("{}:{}: {e}: {line}", path.display(), i + 1)),
            };
            let id = (u(&v, "w") as u32, u(&v, "h"));
            match v["ev"].as_str() {
                Some("acq") => {
                    holds.insert(
                        id,
                        Hold {
                            worker: id.0,
                            pid: u(&v, "pid") as u32,
                            hold: id.1,
                            key: s(&v, "key"),
                            mode: s(&v, "mode"),
                            token: u(&v, "token"),
                            start: u(&v, "start"),
                            waited: u(&v, "waited"),
                            ..Hold::default()
                        },
                    );
                }
                Some("end") => {
                    let h = holds.get_mut(&id).ok_or_else(|| {
                        format!("{}: end of an unknown hold {id:?}", path.display())
                    })?;
                    h.end = ou(&v, "end");
                    h.lost = ou(&v, "lost");
                    h.write = os(&v, "write");
                    h.write_at = ou(&v, "write_at");
                    h.release = os(&v, "release");
                }
                Some("wait") => history.failed_waits.push(FailedWait {
                    worker: id.0,
                    start: u(&v, "start"),
                    waited: u(&v, "waited"),
                    error: s(&v, "error"),
                }),
                _ => return Err(format!("{}: unknown line {line}", path.display())),
            }
        }
    }
    history.holds.extend(holds.into_values());
    Ok(())
}
