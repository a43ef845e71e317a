//! Keeps leases alive: a lock that set no `expire` on a leased store is renewed
//! every third of its lease while its guard lives, by one thread per alias.
//! When a renewal finds the lock gone, or cannot reach the store before the
//! lease runs out, the guard is marked lost.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
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
    /// Nanoseconds after `base` until which the lock is surely held;
    /// `u64::MAX` for a lock with no lease.
    valid_until: AtomicU64,
    lost: AtomicBool,
    released: AtomicBool,
    /// A check job looks for the lock's loss (someone awaits it).
    checking: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

const FOREVER: u64 = u64::MAX;

impl Status {
    /// The state of a lock whose acquiring request was sent at `sent`.
    pub(crate) fn new(sent: Instant, lease: Option<Duration>) -> Self {
        Self::valid_until_then(sent, lease.map(|l| sent + l.saturating_sub(drift(l))))
    }

    /// The state of a lock known to be valid until `until` (`None`: no lease).
    pub(crate) fn valid_until_then(base: Instant, until: Option<Instant>) -> Self {
        let nanos = until.map_or(FOREVER, |u| {
            u.saturating_duration_since(base)
                .as_nanos()
                .min(FOREVER as u128 - 1) as u64
        });
        Self {
            base,
            valid_until: AtomicU64::new(nanos),
            lost: AtomicBool::new(false),
            released: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// True the first time only: the caller then starts the check job.
    pub(crate) fn start_checking(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// A renewal (or extension) sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant, lease: Duration) {
        let until =
            (sent + lease.saturating_sub(drift(lease))).saturating_duration_since(self.base);
        self.valid_until.store(
            until.as_nanos().min(FOREVER as u128 - 1) as u64,
            Ordering::Release,
        );
    }

    /// Until when the lock is surely held; `None` for a lock with no lease.
    pub(crate) fn valid_until(&self) -> Option<Instant> {
        match self.valid_until.load(Ordering::Acquire) {
            FOREVER => None,
            n => Some(self.base + Duration::from_nanos(n)),
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || self.valid_until().is_some_and(|u| Instant::now() >= u)
    }

    pub(crate) fn mark_lost(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            for w in lock(&self.wakers).drain(..) {
                w.wake();
            }
        }
    }

    pub(crate) fn mark_released(&self) {
        self.released.store(true, Ordering::Release);
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

/// Resolves once the lock is lost: a check or renewal found it gone, or its
/// validity ran out. Never resolves for a lock that stays held.
///
/// Returned by [`LockGuard::lost`](crate::LockGuard::lost). Here another
/// owner takes the lock over behind its holder's back:
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::Lock;
///
/// let guard = Lock::new("doc-lost").acquire().unwrap();
/// let lost = guard.lost();
/// std::thread::sleep(Duration::from_millis(30));
/// let _thief = Lock::new("doc-lost")
///     .steal_after(Duration::from_millis(10))
///     .acquire()
///     .unwrap();
/// futures::executor::block_on(lost); // a background check notices
/// assert!(guard.is_lost());
/// ```
pub struct Lost {
    status: Arc<Status>,
    timer: Option<(u64, futures_timer::Delay)>,
}

impl Lost {
    pub(crate) fn new(status: Arc<Status>) -> Self {
        Self {
            status,
            timer: None,
        }
    }
}

impl std::fmt::Debug for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lost")
            .field("lost", &self.status.is_lost())
            .finish()
    }
}

impl Future for Lost {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut wakers = lock(&self.status.wakers);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        if self.status.is_lost() {
            return Poll::Ready(());
        }
        // The validity can move (renewals, extensions): re-arm the timer
        // whenever it did.
        let until = self.status.valid_until.load(Ordering::Acquire);
        if until == FOREVER {
            self.timer = None;
            return Poll::Pending;
        }
        if self.timer.as_ref().is_none_or(|(armed, _)| *armed != until) {
            let at = self.status.base + Duration::from_nanos(until);
            let delay = futures_timer::Delay::new(at.saturating_duration_since(Instant::now()));
            self.timer = Some((until, delay));
        }
        match &mut self.timer {
            Some((_, delay)) => Pin::new(delay).poll(cx),
            None => Poll::Pending,
        }
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
    kind: Kind,
    status: Arc<Status>,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Renew the lease every third of it.
    Renew(Duration),
    /// Only look whether the lock is still ours (someone waits for its loss).
    Check,
    /// Extend once, so that the lease ends at this instant.
    TopUp(Instant),
}

/// How often a lock whose loss is awaited is looked at, when it is not being
/// renewed anyway.
const CHECK_EVERY: Duration = Duration::from_millis(250);

impl Watchdog {
    /// Starts renewing (to `lease`) a lock acquired by a request sent at
    /// `sent`, whose lease in force is `current` (shorter than `lease` for a
    /// lock handed over by a release).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn renew(
        &self,
        backend: Arc<dyn Backend>,
        alias: &str,
        key: &str,
        token: Token,
        lease: Duration,
        current: Duration,
        sent: Instant,
    ) -> Arc<Status> {
        let status = Arc::new(Status::new(sent, Some(current)));
        self.add(
            backend,
            alias,
            key,
            token,
            Kind::Renew(lease),
            Arc::clone(&status),
            sent + current / 3,
        );
        status
    }

    /// Extends, once, a fixed-lease lock that was handed over with a shorter
    /// lease than it asked for, so that it lasts until `until` as asked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn top_up(
        &self,
        backend: Arc<dyn Backend>,
        alias: &str,
        key: &str,
        token: Token,
        until: Instant,
        status: Arc<Status>,
        at: Instant,
    ) {
        self.add(backend, alias, key, token, Kind::TopUp(until), status, at);
    }

    /// Starts looking every [`CHECK_EVERY`] whether the lock behind `status`
    /// is still ours, for a backend that can tell.
    pub(crate) fn check(
        &self,
        backend: Arc<dyn Backend>,
        alias: &str,
        key: &str,
        token: Token,
        status: Arc<Status>,
    ) {
        self.add(
            backend,
            alias,
            key,
            token,
            Kind::Check,
            status,
            Instant::now() + CHECK_EVERY,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        backend: Arc<dyn Backend>,
        alias: &str,
        key: &str,
        token: Token,
        kind: Kind,
        status: Arc<Status>,
        first: Instant,
    ) {
        let job = Arc::new(Job {
            backend,
            alias: alias.to_owned(),
            key: key.to_owned(),
            token,
            kind,
            status,
        });
        let mut st = lock(&self.shared.state);
        // The thread sleeps until its earliest job: wake it only when this
        // one comes sooner. Most locks are released long before their first
        // renewal, so most registrations cost no wake-up at all.
        let sooner = st.queue.peek().is_none_or(|Reverse(due)| first < due.at);
        schedule(&mut st, first, job);
        // Released jobs leave the queue when they come due; with many short
        // locks that can be a lot of them, so sweep them out now and then.
        let len = st.queue.len();
        if len >= 1024 && len.is_power_of_two() {
            st.queue
                .retain(|Reverse(due)| !due.job.status.is_released());
        }
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
        } else if sooner {
            self.shared.changed.notify_one();
        }
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
        if job.status.is_released() || job.status.lost.load(Ordering::Acquire) {
            continue;
        }
        if let Some(at) = visit(&job) {
            schedule(&mut lock(&shared.state), at, job);
        }
    }
}

/// One renewal or check; the time of the next, or `None` when the lock is
/// lost (or a check is impossible).
fn visit(job: &Job) -> Option<Instant> {
    let sent = Instant::now();
    let outcome = match job.kind {
        Kind::Renew(lease) => job.backend.extend(&job.key, job.token, lease),
        Kind::Check => job.backend.check(&job.key, job.token)?,
        Kind::TopUp(until) => {
            let left = until.saturating_duration_since(sent);
            if left.is_zero() {
                return None;
            }
            job.backend.extend(&job.key, job.token, left)
        }
    };
    match outcome {
        Ok(true) => match job.kind {
            Kind::Renew(lease) => {
                job.status.renewed(sent, lease);
                Some(sent + lease / 3)
            }
            Kind::TopUp(until) => {
                job.status
                    .renewed(sent, until.saturating_duration_since(sent));
                None
            }
            Kind::Check => Some(sent + CHECK_EVERY),
        },
        Ok(false) => {
            tracing::warn!(alias = %job.alias, key = %job.key, "lock lost: it has another owner or none");
            job.status.mark_lost();
            None
        }
        Err(e) => {
            let now = Instant::now();
            let valid_until = job.status.valid_until();
            if valid_until.is_some_and(|u| now >= u) {
                tracing::error!(alias = %job.alias, key = %job.key, error = %e, "lock lost: its lease ran out while the store was unreachable");
                job.status.mark_lost();
                return None;
            }
            tracing::warn!(alias = %job.alias, key = %job.key, error = %e, "could not reach the store to renew or check a lock; retrying");
            let retry = match job.kind {
                Kind::Renew(lease) => {
                    (lease / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
                }
                Kind::TopUp(_) => Duration::from_millis(100),
                Kind::Check => CHECK_EVERY,
            };
            Some(valid_until.map_or(now + retry, |u| (now + retry).min(u)))
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
        let status = dog.renew(store.clone(), "a", "k", req.token, lease, lease, sent);
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
        let status = dog.renew(store.clone(), "a", "k", req.token, lease, lease, sent);
        // Deleted behind the holder's back, and taken by another.
        store.release("k", req.token).unwrap();
        store.try_acquire(&Request::new("k")).unwrap();
        std::thread::sleep(lease);
        assert!(status.is_lost());
    }
}
