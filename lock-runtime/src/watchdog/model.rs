//! Model tests of a guard dropped while its renewal runs (`--cfg shuttle`,
//! see `crate::sync`): Redisson's known bug was a renewal outliving the
//! release. Here a worker's renewal work item ([`answer`] and the check
//! [`fire`] makes before sending the next one) races the two steps of
//! `LockGuard::drop` (`stop_watching`, then the store's release) on an
//! instrumented memory store.
//!
//! Not modelled: the scheduler thread and its timers (a static schedule that
//! spawns OS threads, and time, which shuttle does not model), so neither the
//! deadline that gives up on an unanswered call nor a lease running out is
//! explored; the work item and the guard's steps are the ones the real
//! threads run.

use std::time::{Duration, Instant};

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Attempt, Request};
use crate::sync::atomic::AtomicUsize;
use crate::sync::thread;

const KEY: &str = "k";
const LEASE: Duration = Duration::from_secs(30);

/// The memory store, counting the renewals that reach it after a release
/// returned.
struct Counting {
    store: MemoryBackend,
    released: AtomicBool,
    late_extends: AtomicUsize,
}

impl Backend for Counting {
    fn try_acquire(&self, req: &Request<'_>) -> Result<crate::backend::Attempt, BackendError> {
        self.store.try_acquire(req)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let out = self.store.release(key, token);
        self.released.store(true, Ordering::SeqCst);
        out
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let late = self.released.load(Ordering::SeqCst);
        let out = self.store.extend(key, token, lease);
        if late {
            self.late_extends.fetch_add(1, Ordering::SeqCst);
            assert!(
                !matches!(out, Ok(true)),
                "a renewal after the release extended the lock"
            );
        }
        out
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        self.store.check(key, token)
    }
}

/// How many schedules saw a renewal reach the store after the release
/// (harmless when it finds the lock gone; counted to report the window).
static LATE_SCHEDULES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn renewal_races_release(kind: fn() -> Kind) {
    let store = Arc::new(Counting {
        store: MemoryBackend::new(),
        released: AtomicBool::new(false),
        late_extends: AtomicUsize::new(0),
    });
    let req = Request::new(KEY).lease(Some(LEASE));
    assert!(matches!(
        store.try_acquire(&req).unwrap(),
        Attempt::Acquired(_)
    ));
    let status = Arc::new(Status::new(Instant::now(), Some(LEASE)));
    let job = Arc::new(Job {
        backend: Arc::clone(&store) as Arc<dyn Backend>,
        names: Names::new("model", KEY, KEY),
        token: req.token,
        kind: kind(),
        status: Arc::clone(&status),
        flight: AtomicU64::new(0),
    });
    // A worker: each round as `fire` dispatches a due job and `work` runs
    // it. Time does not pass, so it would renew for ever: a few rounds.
    let worker = thread::spawn({
        let job = Arc::clone(&job);
        move || {
            for attempt in 1..=3 {
                if job.status.is_released() || job.status.lost.load(Ordering::Acquire) {
                    return;
                }
                job.flight.store(attempt, Ordering::Release);
                let call = Call {
                    job: Arc::clone(&job),
                    attempt,
                };
                if answer(&call).is_none() {
                    return;
                }
            }
        }
    });
    // The guard's drop: stop watching, then release.
    let guard = thread::spawn({
        let (status, backend) = (Arc::clone(&status), Arc::clone(&store));
        move || {
            status.mark_released();
            assert!(
                backend.release(KEY, req.token).unwrap(),
                "held until released"
            );
        }
    });
    guard.join().unwrap();
    worker.join().unwrap();
    assert_eq!(store.store.held(), 0, "a renewal outlived the release");
    assert!(
        !status.was_marked_lost(),
        "a lock released by its guard was reported lost"
    );
    if store.late_extends.load(Ordering::SeqCst) > 0 {
        LATE_SCHEDULES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn model_a_renewal_racing_the_release_neither_extends_nor_loses_it() {
    crate::sync::explore(|| renewal_races_release(|| Kind::Renew(LEASE)));
    eprintln!(
        "schedules where a renewal reached the store after the release: {}",
        LATE_SCHEDULES.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn model_a_check_racing_the_release_does_not_report_a_loss() {
    crate::sync::explore(|| renewal_races_release(|| Kind::Check));
}

/// The schedule that found the bug (its seed): the worker reads "not
/// released", the guard marks the lock released and releases it, the
/// renewal then reaches the store and is told "not held", and the watchdog
/// reported the released lock lost (a `lock lost: it has another owner or
/// none` warning and a `lost` count after such a drop).
#[test]
fn model_seed_renewal_answered_after_the_release_was_reported_lost() {
    shuttle::check_random_with_seed(
        || renewal_races_release(|| Kind::Renew(LEASE)),
        10641113765176263035,
        1,
    );
}
