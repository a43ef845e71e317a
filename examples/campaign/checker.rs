//! Reads a run's history and says whether the store kept its promises: no
//! stale write accepted, no overlap but those a lease expiry or a
//! documented weakness of the store explains, every lost lock reported,
//! nothing stranded, every wait within its deadline plus the faults'.
//!
//! An interval check over the holds, not a linearizability search: the lock
//! plus fence model has one total order already (the fencing tokens and
//! the resource's log), so each property is a pass over sorted holds.

use std::collections::{BTreeMap, HashMap};

use super::history::{Fault, History, Hold};

/// What the store under test promises (README, "What each backend
/// guarantees"), and the run's settings the bounds come from.
#[derive(Clone, Debug)]
pub struct Profile {
    pub lease_ns: u64,
    pub wait_for_ns: u64,
    pub command_timeout_ns: u64,
    /// A restart of the server forgets held locks and restarts the fencing
    /// counter (one Redis server without persistence).
    pub restart_forgets: bool,
    /// A restarted node comes back empty; exclusion holds only while a
    /// majority keeps its data (the quorum).
    pub node_restart_forgets: bool,
}

/// The figures the campaign prints, and what failed.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub holds: usize,
    pub stale_writes_rejected: usize,
    pub stale_writes_accepted: usize,
    /// Writes that were stale by the workers' own records (a write with a
    /// higher token on the key had been accepted before this one was sent).
    pub stale_attempts: usize,
    pub overlaps: usize,
    pub explained_overlaps: BTreeMap<String, usize>,
    pub unexplained_overlaps: usize,
    /// Holds whose worker saw the lock lost.
    pub lost_signals: usize,
    /// Holds with a lost signal that a pause past the lease made certain.
    pub lost_signals_expected: usize,
    /// Of those, the ones whose signal never came.
    pub lost_signals_missed: usize,
    pub stranded: usize,
    pub longest_wait_ms: u64,
    /// The bound of that wait: the deadline plus the faults it overlapped
    /// plus two command timeouts.
    pub longest_wait_bound_ms: u64,
    pub waits_over_bound: usize,
    /// Holds whose token was not above an earlier hold's of the key, after
    /// a restart that a store documents as restarting its counter.
    pub token_regressions: usize,
    /// Every failed property, with the holds or writes that break it.
    pub failures: Vec<String>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

const MS: u64 = 1_000_000;

/// The lowest-numbered fault of `kind` (a prefix) that began in
/// `[from, to]`, on `pid` when given.
fn fault_in<'a>(
    faults: &'a [Fault],
    kinds: &[&str],
    pid: Option<u32>,
    from: u64,
    to: u64,
) -> Option<&'a Fault> {
    faults.iter().find(|f| {
        kinds.contains(&f.kind.as_str())
            && (pid.is_none() || f.pid == pid)
            && f.start >= from
            && f.start <= to
    })
}

/// When the hold really ended: its recorded end, or when a fault killed its
/// worker; `None` when neither is known (stranded).
fn effective_end(h: &Hold, faults: &[Fault]) -> Option<u64> {
    h.end.or_else(|| {
        faults
            .iter()
            .filter(|f| f.kind == "kill_worker" && f.pid == Some(h.pid) && f.start >= h.start)
            .map(|f| f.start)
            .min()
    })
}

/// Whether `b`'s worker was paused past the lease as `b`'s acquisition
/// returned: it had won the lock, then stood still while the lease ran out
/// and others took the lock, and its hold, recorded when it ran again,
/// carries the token it won before theirs.
fn paused_as_it_won(b: &Hold, p: &Profile, faults: &[Fault]) -> bool {
    faults.iter().any(|f| {
        f.kind == "pause_worker"
            && f.pid == Some(b.pid)
            && f.start >= b.start.saturating_sub(b.waited)
            && f.start <= b.start
            && f.end - f.start > p.lease_ns
    })
}

/// Why `a`'s hold overlapping `b`'s (which began later) is allowed, or
/// `None`.
fn explain(a: &Hold, b: &Hold, p: &Profile, faults: &[Fault]) -> Option<&'static str> {
    if fault_in(faults, &["pause_worker"], Some(a.pid), a.start, b.start).is_some() {
        return Some("holder paused past its lease");
    }
    if b.token < a.token && paused_as_it_won(b, p, faults) {
        return Some("holder paused past its lease as its acquisition returned");
    }
    if a.lost.is_some_and(|lost| lost <= b.start) {
        return Some("holder's guard reported lost before the overlap");
    }
    if p.restart_forgets && fault_in(faults, &["restart_server"], None, a.start, b.start).is_some()
    {
        return Some("server restart without persistence forgot the lock (documented)");
    }
    if p.node_restart_forgets
        && fault_in(faults, &["restart_node"], None, a.start, b.start).is_some()
    {
        return Some(
            "a node restarted empty while the lock was held (documented: a majority must keep its data)",
        );
    }
    None
}

pub fn check(history: &History, p: &Profile) -> Summary {
    let mut s = Summary {
        holds: history.holds.len(),
        ..Summary::default()
    };
    let faults = &history.faults;

    // 1. The resource's log: no accepted write below the highest accepted.
    let mut writes = history.writes.clone();
    writes.sort_by_key(|w| w.at);
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for w in &writes {
        let top = highest.get(w.key.as_str()).copied().unwrap_or(0);
        if w.accepted {
            if w.token < top {
                s.stale_writes_accepted += 1;
                s.failures.push(format!(
                    "stale write accepted: key {} token {} after {} (worker {} hold {})",
                    w.key, w.token, top, w.worker, w.hold
                ));
            } else {
                highest.insert(&w.key, w.token);
            }
        } else {
            s.stale_writes_rejected += 1;
            if w.token >= top {
                s.failures.push(format!(
                    "write rejected though not stale: key {} token {} (highest {top})",
                    w.key, w.token
                ));
            }
        }
    }

    // 2. The workers' own view: which writes were stale when sent.
    let mut by_key: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in &history.holds {
        by_key.entry(&h.key).or_default().push(h);
    }
    for holds in by_key.values() {
        for h in holds {
            let (Some(at), Some(outcome)) = (h.write_at, h.write.as_deref()) else {
                continue;
            };
            if !matches!(outcome, "ok" | "stale") {
                continue;
            }
            let newer_before = holds.iter().any(|o| {
                o.token > h.token
                    && o.write.as_deref() == Some("ok")
                    && o.write_at.is_some_and(|t| t < at)
            });
            if newer_before {
                s.stale_attempts += 1;
            }
        }
    }
    if s.stale_attempts != s.stale_writes_rejected {
        s.failures.push(format!(
            "stale writes rejected ({}) differ from the stale attempts in the workers' records ({})",
            s.stale_writes_rejected, s.stale_attempts
        ));
    }

    // 3. Overlaps, and the fencing order of successive holds.
    let mut regressed = std::collections::HashSet::new();
    for holds in by_key.values_mut() {
        holds.sort_by_key(|h| (h.start, h.token));
        for (i, a) in holds.iter().enumerate() {
            let a_end = effective_end(a, faults);
            for b in &holds[i + 1..] {
                // Won before `a`, then paused past the lease before its hold
                // was recorded: the order of the tokens is the order of
                // the grants.
                let won_first = b.token < a.token && paused_as_it_won(b, p, faults);
                if b.token <= a.token && !won_first {
                    let restarted = (p.restart_forgets || p.node_restart_forgets)
                        && fault_in(
                            faults,
                            &["restart_server", "restart_node"],
                            None,
                            a.start,
                            b.start,
                        )
                        .is_some();
                    if restarted {
                        regressed.insert((b.worker, b.hold));
                    } else {
                        s.failures.push(format!(
                            "fencing token did not grow: key {} token {} (worker {} hold {}) then {} (worker {} hold {})",
                            a.key, a.token, a.worker, a.hold, b.token, b.worker, b.hold
                        ));
                    }
                }
                if a_end.is_some_and(|end| b.start >= end) {
                    continue;
                }
                s.overlaps += 1;
                match explain(a, b, p, faults) {
                    Some(why) => *s.explained_overlaps.entry(why.to_owned()).or_default() += 1,
                    None => {
                        s.unexplained_overlaps += 1;
                        s.failures.push(format!(
                            "unexplained overlap on {}: worker {} hold {} ({}, token {}, {}..{:?}, lost {:?}) and worker {} hold {} ({}, token {}) from {}",
                            a.key, a.worker, a.hold, a.mode, a.token, a.start, a_end, a.lost,
                            b.worker, b.hold, b.mode, b.token, b.start
                        ));
                    }
                }
            }
        }
    }

    s.token_regressions = regressed.len();

    // 4. Lost signals: a builder hold paused longer than the lease must have
    // seen its loss (its guard says so once it runs again). A `#[lock]`
    // body has no guard to ask: the async one is stopped only if the loss
    // is noticed before the body's next await ends, and the loss of either
    // shows in the `lock.held` span, not in the function's result.
    for h in &history.holds {
        if h.lost.is_some() {
            s.lost_signals += 1;
        }
        let Some(end) = h.end else { continue };
        if !h.mode.starts_with("builder") {
            continue;
        }
        let paused_past_lease = faults.iter().any(|f| {
            f.kind == "pause_worker"
                && f.pid == Some(h.pid)
                && f.start >= h.start
                && f.start < end
                && f.end - f.start > p.lease_ns
        });
        if paused_past_lease {
            s.lost_signals_expected += 1;
            if h.lost.is_none() {
                s.lost_signals_missed += 1;
                s.failures.push(format!(
                    "no lost signal: worker {} hold {} ({}) was paused past its lease",
                    h.worker, h.hold, h.mode
                ));
            }
        }
    }

    // 5. Nothing stranded: every hold ended or its worker was killed, and
    // the store holds no lock once everyone stopped.
    for h in &history.holds {
        if effective_end(h, faults).is_none() {
            s.stranded += 1;
            s.failures.push(format!(
                "stranded: worker {} hold {} on {} never ended and its worker was not killed",
                h.worker, h.hold, h.key
            ));
        }
    }
    if !history.left_locks.is_empty() {
        s.stranded += history.left_locks.len();
        s.failures.push(format!(
            "locks left in the store after everyone stopped: {:?}",
            history.left_locks
        ));
    }

    // 6. Waits: bounded by the deadline plus the faults they overlapped.
    let waits = history
        .holds
        .iter()
        .map(|h| (h.start.saturating_sub(h.waited), h.waited, h.worker))
        .chain(
            history
                .failed_waits
                .iter()
                .map(|w| (w.start, w.waited, w.worker)),
        );
    for (start, waited, worker) in waits {
        let end = start + waited;
        let faulted: u64 = faults
            .iter()
            .filter(|f| f.start < end && f.end > start.saturating_sub(p.lease_ns))
            .map(|f| f.end - f.start + p.lease_ns)
            .sum();
        let bound = p.wait_for_ns + faulted + 2 * p.command_timeout_ns + 250 * MS;
        if waited / MS >= s.longest_wait_ms {
            s.longest_wait_ms = waited / MS;
            s.longest_wait_bound_ms = bound / MS;
        }
        if waited > bound {
            s.waits_over_bound += 1;
            s.failures.push(format!(
                "worker {worker} waited {} ms from {start}, over its bound of {} ms",
                waited / MS,
                bound / MS
            ));
        }
    }
    for f in &history.worker_failures {
        s.failures.push(format!("worker failed: {f}"));
    }
    s
}
