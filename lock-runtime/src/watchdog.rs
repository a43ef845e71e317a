//! Keeps leases alive: a lock that set no `expire` on a leased store is renewed
//! every third of its lease while its guard lives, by one thread per alias.
//! When a renewal finds the lock gone, or cannot reach the store before the
//! lease runs out, the guard is marked lost.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Token};

/// A watchdog thread with nothing to renew for this long exits; the next
/// registration starts a new one.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The clock-drift allowance subtracted from a lease when judging how long a
/// lock is still valid: 1% of the lease plus 2 ms, as Redlock prescribes.
pub(crate) fn drift(lease: Duration) -> Duration {
    lease / 100 + Duration::from_millis(2)
}

/// What a guard and its watchdog share: whether the lock is still ours, and
/// until when we can be sure of it.
pub(crate) struct Status {
    base: Instant,
    /// Nanoseconds after `base` until which the lock is surely held.
    valid_until: AtomicU64,
    lost: AtomicBool,
    released: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    parked: Condvar,
}

impl Status {
    pub(crate) fn new(sent: Instant, lease: Duration) -> Self {
        let s = Self {
            base: sent,
            valid_until: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            released: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            parked: Condvar::new(),
        };
        s.renewed(sent, lease);
        s
    }

    /// A renewal sent at `sent` succeeded.
    fn renewed(&self, sent: Instant, lease: Duration) {
        let until =
            (sent + lease.saturating_sub(drift(lease))).saturating_duration_since(self.base);
        self.valid_until.store(
            until.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Release,
        );
    }

    pub(crate) fn valid_until(&self) -> Instant {
        self.base + Duration::from_nanos(self.valid_until.load(Ordering::Acquire))
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || Instant::now() >= self.valid_until()
    }

    pub(crate) fn mark_lost(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            self.parked.notify_all();
            for w in lock(&self.wakers).drain(..) {
                w.wake();
            }
        }
    }

    pub(crate) fn mark_released(&self) {
        self.released.store(true, Ordering::Release);
    }
}

/// One alias's renewal thread and its schedule.
#[derive(Default)]
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: BinaryHeap<Reverse<Due>>,
    seq: u64,
    running: bool,
}

struct Due {
    at: Instant,
    seq: u64,
    job: Arc<Job>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Job {
    backend: Arc<dyn Backend>,
    alias: String,
    key: String,
    token: Token,
    lease: Duration,
    status: Arc<Status>,
}

impl Watchdog {
    /// Starts renewing a lock acquired by a request sent at `sent`.
    pub(crate) fn watch(
        &self,
        backend: Arc<dyn Backend>,
        alias: &str,
        key: &str,
        token: Token,
        lease: Duration,
        sent: Instant,
    ) -> Arc<Status> {
        let status = Arc::new(Status::new(sent, lease));
        let job = Arc::new(Job {
            backend,
            alias: alias.to_owned(),
            key: key.to_owned(),
            token,
            lease,
            status: Arc::clone(&status),
        });
        let mut st = lock(&self.shared.state);
        schedule(&mut st, sent + lease / 3, job);
        if !st.running {
            st.running = true;
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("lock-watchdog".into())
                .spawn(move || run(&shared));
            if let Err(e) = spawned {
                st.running = false;
                tracing::error!(error = %e, "could not start the lease watchdog; leases will not be renewed");
            }
        } else {
            self.shared.changed.notify_one();
        }
        status
    }
}

fn schedule(st: &mut State, at: Instant, job: Arc<Job>) {
    st.seq += 1;
    let seq = st.seq;
    st.queue.push(Reverse(Due { at, seq, job }));
}

fn run(shared: &Shared) {
    loop {
        let job = {
            let mut st = lock(&shared.state);
            loop {
                let now = Instant::now();
                match st.queue.peek() {
                    None => {
                        let (s, timeout) = shared
                            .changed
                            .wait_timeout(st, IDLE_EXIT)
                            .unwrap_or_else(|p| p.into_inner());
                        st = s;
                        if timeout.timed_out() && st.queue.is_empty() {
                            st.running = false;
                            return;
                        }
                    }
                    Some(Reverse(due)) if due.at > now => {
                        let wait = due.at - now;
                        st = shared
                            .changed
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    Some(_) => break,
                }
            }
            match st.queue.pop() {
                Some(Reverse(due)) => due.job,
                None => continue,
            }
        };
        if job.status.released.load(Ordering::Acquire) {
            continue;
        }
        let next = renew(&job);
        if let Some(at) = next {
            schedule(&mut lock(&shared.state), at, job);
        }
    }
}

/// One renewal; the time of the next, or `None` when the lock is lost.
fn renew(job: &Job) -> Option<Instant> {
    let sent = Instant::now();
    match job.backend.extend(&job.key, job.token, job.lease) {
        Ok(true) => {
            job.status.renewed(sent, job.lease);
            Some(sent + job.lease / 3)
        }
        Ok(false) => {
            tracing::warn!(alias = %job.alias, key = %job.key, "lock lost: the lease renewal found another owner or none");
            job.status.mark_lost();
            None
        }
        Err(e) => {
            let now = Instant::now();
            if now >= job.status.valid_until() {
                tracing::error!(alias = %job.alias, key = %job.key, error = %e, "lock lost: its lease ran out while the store was unreachable");
                job.status.mark_lost();
                return None;
            }
            tracing::warn!(alias = %job.alias, key = %job.key, error = %e, "lease renewal failed; retrying");
            let retry = (job.lease / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
            Some((now + retry).min(job.status.valid_until()))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Attempt, Request};

    #[test]
    fn renews_a_short_lease_past_its_end_and_stops_when_released() {
        let store = Arc::new(MemoryBackend::new());
        let lease = Duration::from_millis(60);
        let req = Request::new("k").lease(Some(lease));
        let sent = Instant::now();
        assert!(matches!(
            store.try_acquire(&req).unwrap(),
            Attempt::Acquired(_)
        ));
        let dog = Watchdog::default();
        let status = dog.watch(store.clone(), "a", "k", req.token, lease, sent);
        std::thread::sleep(lease * 4);
        assert!(!status.is_lost(), "the watchdog let the lease run out");
        assert!(matches!(
            store.try_acquire(&Request::new("k")).unwrap(),
            Attempt::Busy(_)
        ));
        status.mark_released();
        std::thread::sleep(lease * 2);
        assert!(matches!(
            store.try_acquire(&Request::new("k")).unwrap(),
            Attempt::Acquired(_)
        ));
    }

    #[test]
    fn marks_the_lock_lost_when_someone_else_owns_it() {
        let store = Arc::new(MemoryBackend::new());
        let lease = Duration::from_millis(30);
        let req = Request::new("k").lease(Some(lease));
        let sent = Instant::now();
        store.try_acquire(&req).unwrap();
        let dog = Watchdog::default();
        let status = dog.watch(store.clone(), "a", "k", req.token, lease, sent);
        // Deleted behind the holder's back, and taken by another.
        store.release("k", req.token).unwrap();
        store.try_acquire(&Request::new("k")).unwrap();
        std::thread::sleep(lease);
        assert!(status.is_lost());
    }
}
