//! Keeps leases alive: a lock that set no `expire` on a leased store is renewed
//! every third of its lease while its guard lives, and a lock whose loss is
//! awaited is looked at every 250 ms. When a renewal finds the lock gone, or
//! none gets through before the lease runs out, the guard is marked lost.
//!
//! Design: one scheduler thread for the whole process keeps every alias's
//! jobs in one timer heap, and never calls a store itself: a due job goes to a
//! pool of worker threads that grows on demand up to [`MAX_WORKERS`] (idle
//! ones exit), so a call that hangs holds up its own lock only. Each call also
//! puts a deadline in the heap at the lock's validity end: if no answer came
//! by then the scheduler marks the lock lost, and the answer, whenever it
//! comes, is ignored (a lock not proven held past its validity may have had
//! another owner meanwhile). At most [`PER_STORE`] calls run against one store
//! at a time and its other due jobs queue behind them, so a dead store cannot
//! take every worker from the others. Threads start with the first job and
//! exit after [`IDLE_EXIT`] with nothing to do.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError, BackendErrorKind, Token};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(all(test, shuttle))]
mod model;

/// A scheduler or worker thread with nothing to do for this long exits; the
/// next job starts a new one.
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The most worker threads, busy or idle. Calls take milliseconds, so a few
/// workers serve thousands of locks; the rest of the room is for calls that
/// hang until the store's own timeout.
const MAX_WORKERS: usize = 32;

/// The most calls running against one store (one alias's connection, or a
/// custom store shared by aliases) at once. A store that stopped answering
/// holds at most this many workers; its other due jobs wait, and are marked
/// lost at their validity end if they never get a turn.
const PER_STORE: usize = 8;

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
    /// Renewals and extensions that got through, for the `lock.held` span.
    renewals: AtomicU64,
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
            renewals: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// True the first time only: the caller then starts the check job.
    pub(crate) fn start_checking(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// A renewal (or extension) sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant, lease: Duration) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
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

    /// Marks the lock lost; true the first time only, so that a loss is
    /// counted once whoever finds it.
    pub(crate) fn mark_lost(&self) -> bool {
        if self.lost.swap(true, Ordering::AcqRel) {
            return false;
        }
        for w in lock(&self.wakers).drain(..) {
            w.wake();
        }
        true
    }

    /// Marked lost (by the watchdog, or by a release that found it gone),
    /// as opposed to merely past its validity.
    pub(crate) fn was_marked_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Renewals and extensions that got through.
    pub(crate) fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
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

/// How often a lock whose loss is awaited is looked at, when it is not being
/// renewed anyway.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The process's one schedule. Every field sits behind one mutex: it is held
/// only to move jobs between the heap and the queues, never across a call to
/// a store or a waker.
static SCHEDULER: Scheduler = Scheduler {
    state: Mutex::new(State {
        timers: BinaryHeap::new(),
        seq: 0,
        ticking: false,
        ready: VecDeque::new(),
        stores: BTreeMap::new(),
        workers: 0,
        idle: 0,
    }),
    timers_changed: Condvar::new(),
    work_ready: Condvar::new(),
};

struct Scheduler {
    state: Mutex<State>,
    /// Wakes the scheduler thread: a timer came sooner than it sleeps.
    timers_changed: Condvar,
    /// Wakes an idle worker: a call is ready.
    work_ready: Condvar,
}

struct State {
    timers: BinaryHeap<Reverse<Timer>>,
    seq: u64,
    /// The scheduler thread runs.
    ticking: bool,
    /// Calls a worker may start now.
    ready: VecDeque<Call>,
    /// Stores with calls running or waiting for their turn, by address.
    stores: BTreeMap<usize, Store>,
    workers: usize,
    idle: usize,
}

#[derive(Default)]
struct Store {
    /// Calls in `ready` or running (or hung).
    running: usize,
    /// Due calls beyond [`PER_STORE`].
    waiting: VecDeque<Call>,
}

/// One call to a store, numbered so that its answer can tell whether it is
/// still awaited.
struct Call {
    job: Arc<Job>,
    attempt: u64,
}

struct Timer {
    at: Instant,
    seq: u64,
    job: Arc<Job>,
    what: What,
}

enum What {
    /// Send the job's next call.
    Run,
    /// The lock's validity ends: the call with this number, if still
    /// unanswered, came too late.
    Deadline(u64),
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Job {
    backend: Arc<dyn Backend>,
    names: Names,
    token: Token,
    kind: Kind,
    status: Arc<Status>,
    /// The number of the call awaiting its answer, 0 for none. Whoever swaps
    /// it to 0 first decides the outcome: the worker with the answer, or the
    /// scheduler at the deadline.
    flight: AtomicU64,
}

/// A job's alias, key as stored, and key as the user gave it (without the
/// alias prefix, for events), kept in one allocation: a job is made for
/// every leased acquisition, and most are dropped unused.
struct Names {
    all: Box<str>,
    /// Where the key, then the key as shown, start in `all`.
    key_at: usize,
    shown_at: usize,
}

impl Names {
    fn new(alias: &str, key: &str, shown: &str) -> Self {
        let mut all = String::with_capacity(alias.len() + key.len() + shown.len());
        all.push_str(alias);
        all.push_str(key);
        all.push_str(shown);
        Self {
            all: all.into_boxed_str(),
            key_at: alias.len(),
            shown_at: alias.len() + key.len(),
        }
    }

    fn alias(&self) -> &str {
        &self.all[..self.key_at]
    }

    fn key(&self) -> &str {
        &self.all[self.key_at..self.shown_at]
    }

    fn shown(&self) -> &str {
        &self.all[self.shown_at..]
    }
}

impl Job {
    /// Marks the lock lost and counts the loss, once.
    fn lose(&self) {
        if self.status.mark_lost() {
            crate::observe::lost(self.names.alias(), self.names.shown());
        }
    }

    /// Which store the job calls: jobs of aliases sharing one custom store
    /// share its [`PER_STORE`] calls.
    fn store(&self) -> usize {
        Arc::as_ptr(&self.backend).cast::<()>().addr()
    }
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

/// Starts renewing (to `lease`) a lock acquired by a request sent at `sent`,
/// whose lease in force is `current` (shorter than `lease` for a lock handed
/// over by a release).
#[allow(clippy::too_many_arguments)]
pub(crate) fn renew(
    backend: Arc<dyn Backend>,
    alias: &str,
    key: &str,
    shown: &str,
    token: Token,
    lease: Duration,
    current: Duration,
    sent: Instant,
) -> Arc<Status> {
    let status = Arc::new(Status::new(sent, Some(current)));
    add(
        backend,
        alias,
        key,
        shown,
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
    backend: Arc<dyn Backend>,
    alias: &str,
    key: &str,
    shown: &str,
    token: Token,
    until: Instant,
    status: Arc<Status>,
    at: Instant,
) {
    add(
        backend,
        alias,
        key,
        shown,
        token,
        Kind::TopUp(until),
        status,
        at,
    );
}

/// Starts looking every [`CHECK_EVERY`] whether the lock behind `status` is
/// still ours, for a backend that can tell.
pub(crate) fn check(
    backend: Arc<dyn Backend>,
    alias: &str,
    key: &str,
    shown: &str,
    token: Token,
    status: Arc<Status>,
) {
    add(
        backend,
        alias,
        key,
        shown,
        token,
        Kind::Check,
        status,
        Instant::now() + CHECK_EVERY,
    );
}

#[allow(clippy::too_many_arguments)]
fn add(
    backend: Arc<dyn Backend>,
    alias: &str,
    key: &str,
    shown: &str,
    token: Token,
    kind: Kind,
    status: Arc<Status>,
    first: Instant,
) {
    let job = Arc::new(Job {
        backend,
        names: Names::new(alias, key, shown),
        token,
        kind,
        status,
        flight: AtomicU64::new(0),
    });
    lock(&SCHEDULER.state).set_timer(first, job, What::Run);
}

impl State {
    fn set_timer(&mut self, at: Instant, job: Arc<Job>, what: What) {
        // The scheduler sleeps until its earliest timer: wake it only when
        // this one comes sooner. Most locks are released long before their
        // first renewal, so most registrations cost no wake-up at all.
        let sooner = self.timers.peek().is_none_or(|Reverse(t)| at < t.at);
        self.seq += 1;
        let seq = self.seq;
        self.timers.push(Reverse(Timer { at, seq, job, what }));
        // Released jobs leave the heap when they come due; with many short
        // locks that can be a lot of them, so sweep them out now and then.
        let len = self.timers.len();
        if len >= 1024 && len.is_power_of_two() {
            self.timers.retain(|Reverse(t)| !t.job.status.is_released());
        }
        if !self.ticking {
            let spawned = std::thread::Builder::new()
                .name("lock-watchdog".into())
                .spawn(tick);
            match spawned {
                Ok(_) => self.ticking = true,
                Err(e) => {
                    tracing::error!(error = %e, "could not start the lease watchdog; leases will not be renewed");
                }
            }
        } else if sooner {
            SCHEDULER.timers_changed.notify_one();
        }
    }

    /// Hands a call to a worker, or queues it behind its store's running
    /// calls.
    fn dispatch(&mut self, call: Call) {
        let store = self.stores.entry(call.job.store()).or_default();
        if store.running >= PER_STORE {
            store.waiting.push_back(call);
            return;
        }
        store.running += 1;
        self.ready.push_back(call);
        if self.ready.len() > self.idle && self.workers < MAX_WORKERS {
            let spawned = std::thread::Builder::new()
                .name("lock-watchdog-call".into())
                .spawn(work);
            match spawned {
                Ok(_) => self.workers += 1,
                // The call waits for a busy worker; its deadline still holds.
                Err(e) => tracing::error!(error = %e, "could not start a lease watchdog worker"),
            }
        } else {
            SCHEDULER.work_ready.notify_one();
        }
    }

    /// A call to `store` is done: its next waiting call may go.
    fn finished(&mut self, store: usize) {
        let Some(s) = self.stores.get_mut(&store) else {
            return;
        };
        match s.waiting.pop_front() {
            // Its slot passes on; the worker that frees it takes it next.
            Some(next) => self.ready.push_back(next),
            None => {
                s.running = s.running.saturating_sub(1);
                if s.running == 0 {
                    self.stores.remove(&store);
                }
            }
        }
    }
}

/// The scheduler thread: sends due calls to the workers and enforces their
/// deadlines.
fn tick() {
    let mut st = lock(&SCHEDULER.state);
    loop {
        let now = Instant::now();
        match st.timers.peek() {
            None => {
                let (s, timeout) = SCHEDULER
                    .timers_changed
                    .wait_timeout(st, IDLE_EXIT)
                    .unwrap_or_else(|p| p.into_inner());
                st = s;
                if timeout.timed_out() && st.timers.is_empty() {
                    st.ticking = false;
                    return;
                }
            }
            Some(Reverse(t)) if t.at > now => {
                let wait = t.at - now;
                st = SCHEDULER
                    .timers_changed
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Some(_) => {
                let Some(Reverse(timer)) = st.timers.pop() else {
                    continue;
                };
                if let Some(lost) = fire(&mut st, timer, now) {
                    // Wakers run user code: not under the schedule's lock.
                    drop(st);
                    lost.report();
                    st = lock(&SCHEDULER.state);
                }
            }
        }
    }
}

/// Why the scheduler gave up on a lock.
struct Overdue {
    job: Arc<Job>,
    /// A call was sent and not answered in time (rather than none sent).
    unanswered: bool,
}

impl Overdue {
    fn report(self) {
        let job = &self.job;
        match job.kind {
            _ if self.unanswered => {
                tracing::error!(alias = %job.names.alias(), key = %job.names.shown(), "lock lost: the store did not answer before its lease ran out");
            }
            // A fixed lease ending is no failure.
            Kind::Check => {
                tracing::warn!(alias = %job.names.alias(), key = %job.names.shown(), "lock lost: its lease ran out")
            }
            Kind::Renew(_) | Kind::TopUp(_) => {
                tracing::error!(alias = %job.names.alias(), key = %job.names.shown(), "lock lost: its lease ran out before a renewal got through");
            }
        }
        job.lose();
    }
}

/// Acts on a due timer; the lock to mark lost, if any.
fn fire(st: &mut State, timer: Timer, now: Instant) -> Option<Overdue> {
    let job = timer.job;
    let status = &job.status;
    match timer.what {
        What::Run => {
            if status.is_released() || status.lost.load(Ordering::Acquire) {
                return None;
            }
            let valid_until = status.valid_until();
            if valid_until.is_some_and(|u| now >= u) {
                // Too late for any answer to count.
                return Some(Overdue {
                    job,
                    unanswered: false,
                });
            }
            st.seq += 1;
            let attempt = st.seq;
            job.flight.store(attempt, Ordering::Release);
            if let Some(u) = valid_until {
                st.set_timer(u, Arc::clone(&job), What::Deadline(attempt));
            }
            st.dispatch(Call { job, attempt });
            None
        }
        What::Deadline(attempt) => {
            if job.flight.load(Ordering::Acquire) != attempt {
                return None; // answered in time
            }
            if let Some(u) = status.valid_until().filter(|u| now < *u) {
                // The guard extended the lock meanwhile: the bound moved.
                st.set_timer(u, Arc::clone(&job), What::Deadline(attempt));
                return None;
            }
            let gave_up = job
                .flight
                .compare_exchange(attempt, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            (gave_up && !status.is_released()).then_some(Overdue {
                job,
                unanswered: true,
            })
        }
    }
}

/// A worker thread: makes the calls, one at a time.
fn work() {
    let mut st = lock(&SCHEDULER.state);
    loop {
        let Some(call) = st.ready.pop_front() else {
            st.idle += 1;
            let (s, timeout) = SCHEDULER
                .work_ready
                .wait_timeout(st, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            st = s;
            st.idle -= 1;
            if timeout.timed_out() && st.ready.is_empty() {
                st.workers -= 1;
                return;
            }
            continue;
        };
        drop(st);
        let next = answer(&call);
        st = lock(&SCHEDULER.state);
        if let Some(at) = next {
            st.set_timer(at, Arc::clone(&call.job), What::Run);
        }
        st.finished(call.job.store());
    }
}

/// Makes one call and acts on its answer; the time of the job's next call,
/// or `None` when it has none (lost, released, done, or a check is impossible).
fn answer(call: &Call) -> Option<Instant> {
    let job = &call.job;
    if job.flight.load(Ordering::Acquire) != call.attempt || job.status.is_released() {
        // Given up while waiting for its turn, or no longer wanted.
        return None;
    }
    let sent = Instant::now();
    // A panicking custom store must not take the worker, and the count of
    // its store's running calls, down with it.
    let outcome = catch_unwind(AssertUnwindSafe(|| call_store(job, sent)));
    let now = Instant::now();
    if job.status.is_released() {
        // The guard let the lock go while the call was out: an answer of
        // "not held" is most likely that release, not a loss, and a lock no
        // longer ours needs no next call. (Its release came before the
        // store's answer, so it is seen here whenever it caused it.)
        return None;
    }
    if job
        .flight
        .compare_exchange(call.attempt, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        tracing::debug!(alias = %job.names.alias(), key = %job.names.shown(), "an answer that came after the lock's validity ended was ignored");
        return None;
    }
    let outcome = match outcome {
        Ok(Some(outcome)) => outcome,
        Ok(None) => return None,
        Err(_) => Err(BackendError::new(
            BackendErrorKind::Other,
            "the store panicked",
        )),
    };
    settle(job, sent, now, outcome)
}

/// The call a job makes; `None` when there is none to make.
fn call_store(job: &Job, sent: Instant) -> Option<Result<bool, BackendError>> {
    match job.kind {
        Kind::Renew(lease) => Some(job.backend.extend(job.names.key(), job.token, lease)),
        Kind::Check => job.backend.check(job.names.key(), job.token),
        Kind::TopUp(until) => {
            let left = until.saturating_duration_since(sent);
            if left.is_zero() {
                return None;
            }
            Some(job.backend.extend(job.names.key(), job.token, left))
        }
    }
}

/// What the answer to a call sent at `sent`, received at `now`, means for
/// the lock; the time of the next call, or `None` when it is lost.
fn settle(
    job: &Job,
    sent: Instant,
    now: Instant,
    outcome: Result<bool, BackendError>,
) -> Option<Instant> {
    let valid_until = job.status.valid_until();
    let late = valid_until.is_some_and(|u| now >= u);
    match outcome {
        Ok(true) if late => {
            // The store renewed the lock, but only after a moment when we
            // could no longer count on it: someone else may have held it
            // meanwhile.
            tracing::error!(alias = %job.names.alias(), key = %job.names.shown(), "lock lost: the store answered only after its lease ran out");
            job.lose();
            None
        }
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
            tracing::warn!(alias = %job.names.alias(), key = %job.names.shown(), "lock lost: it has another owner or none");
            job.lose();
            None
        }
        Err(e) if late => {
            if !matches!(job.kind, Kind::Check) {
                crate::observe::renew_failed(job.names.alias(), job.names.shown());
            }
            tracing::error!(alias = %job.names.alias(), key = %job.names.shown(), error = %e, "lock lost: its lease ran out while the store was unreachable");
            job.lose();
            None
        }
        Err(e) => {
            if !matches!(job.kind, Kind::Check) {
                crate::observe::renew_failed(job.names.alias(), job.names.shown());
            }
            tracing::warn!(alias = %job.names.alias(), key = %job.names.shown(), error = %e, "could not reach the store to renew or check a lock; retrying");
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
    use std::sync::atomic::AtomicUsize;

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
        let status = renew(store.clone(), "a", "k", "k", req.token, lease, lease, sent);
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
        let status = renew(store.clone(), "a", "k", "k", req.token, lease, lease, sent);
        // Deleted behind the holder's back, and taken by another.
        store.release("k", req.token).unwrap();
        store.try_acquire(&Request::new("k")).unwrap();
        std::thread::sleep(lease);
        assert!(status.is_lost());
    }

    /// A memory store on which renewing a key named `dead...` hangs until
    /// the test opens the gate, and then says yes whatever became of the
    /// lock: a node that stopped answering and comes back late.
    #[derive(Default)]
    struct Stalling {
        inner: MemoryBackend,
        gate: Mutex<bool>,
        opened: Condvar,
        /// Every `extend` call, when it started.
        calls: Mutex<Vec<(String, Instant)>>,
        /// Hung calls that have returned.
        returned: AtomicUsize,
    }

    impl Stalling {
        fn open(&self) {
            *lock(&self.gate) = true;
            self.opened.notify_all();
        }

        fn calls_to(&self, key: &str) -> Vec<Instant> {
            lock(&self.calls)
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, at)| *at)
                .collect()
        }

        /// Takes `key` and has the watchdog renew it.
        fn watched(self: &Arc<Self>, alias: &str, key: &str, lease: Duration) -> Watched {
            let req = Request::new(key).lease(Some(lease));
            let sent = Instant::now();
            assert!(matches!(
                self.try_acquire(&req).unwrap(),
                Attempt::Acquired(_)
            ));
            let status = renew(self.clone(), alias, key, key, req.token, lease, lease, sent);
            Watched {
                key: key.to_owned(),
                token: req.token,
                sent,
                status,
            }
        }
    }

    impl Backend for Stalling {
        fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
            self.inner.try_acquire(req)
        }

        fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
            self.inner.release(key, token)
        }

        fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
            lock(&self.calls).push((key.to_owned(), Instant::now()));
            if !key.starts_with("dead") {
                return self.inner.extend(key, token, lease);
            }
            // Bounded, so that a failing test cannot hang the suite.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut open = lock(&self.gate);
            while !*open && Instant::now() < deadline {
                open = self
                    .opened
                    .wait_timeout(open, deadline - Instant::now())
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            self.returned.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }
    }

    struct Watched {
        key: String,
        token: Token,
        sent: Instant,
        status: Arc<Status>,
    }

    impl Watched {
        /// The longest the lock went without a renewal, from its acquisition
        /// until now.
        fn longest_gap(&self, store: &Stalling) -> Duration {
            let mut times = vec![self.sent];
            times.extend(store.calls_to(&self.key));
            times.push(Instant::now());
            times
                .windows(2)
                .map(|w| w[1].saturating_duration_since(w[0]))
                .max()
                .unwrap_or_default()
        }

        /// Marked lost by the watchdog (not merely past its validity, which
        /// `is_lost` would also report).
        fn marked_lost(&self) -> bool {
            self.status.lost.load(Ordering::Acquire)
        }

        /// Waits until the watchdog marks the lock lost, at most `limit`;
        /// when that happened.
        fn wait_marked_lost(&self, limit: Duration) -> Option<Instant> {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if self.marked_lost() {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        }
    }

    #[test]
    fn a_hung_renewal_delays_no_other_lock_of_its_store_or_another() {
        let lease = Duration::from_millis(600);
        let dead_node = Arc::new(Stalling::default());
        let other_store = Arc::new(Stalling::default());
        let dead = dead_node.watched("a", "dead", lease);
        let same_alias = dead_node.watched("a", "alive", lease);
        let other_alias = other_store.watched("b", "alive", lease);

        // The dead lock's first renewal, at 200 ms, hangs for the rest.
        std::thread::sleep(Duration::from_millis(2400));
        assert_eq!(dead_node.calls_to("dead").len(), 1);
        assert_eq!(dead_node.returned.load(Ordering::SeqCst), 0, "still hung");
        assert!(dead.marked_lost());
        for (store, held) in [(&dead_node, &same_alias), (&other_store, &other_alias)] {
            // Renewed every third of the lease: never near its end (592 ms).
            let gap = held.longest_gap(store);
            assert!(gap < lease * 2 / 3, "{} went {gap:?} unrenewed", held.key);
            assert!(store.calls_to(&held.key).len() >= 8);
            assert!(!held.status.is_lost());
            // The store agrees: its lease never ran out.
            assert!(matches!(
                store.inner.check(&held.key, held.token),
                Some(Ok(true))
            ));
        }
        for w in [&dead, &same_alias, &other_alias] {
            w.status.mark_released();
        }
        dead_node.open();
    }

    #[test]
    fn a_hung_renewal_loses_the_lock_at_its_validity_end_and_a_late_yes_does_not_undo_it() {
        let lease = Duration::from_millis(300);
        let store = Arc::new(Stalling::default());
        let dead = store.watched("a", "dead", lease);
        let validity = dead.status.valid_until().unwrap();

        let marked = dead
            .wait_marked_lost(Duration::from_secs(3))
            .expect("the hung renewal was given up");
        assert!(marked >= validity, "lost before its validity ended");
        assert!(
            marked < validity + Duration::from_secs(1),
            "lost {:?} after its validity ended",
            marked - validity
        );
        assert_eq!(store.returned.load(Ordering::SeqCst), 0, "still hung");

        // The store comes back and says the renewal worked.
        store.open();
        let end = Instant::now() + Duration::from_secs(3);
        while store.returned.load(Ordering::SeqCst) == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(store.returned.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(100));
        assert!(dead.marked_lost() && dead.status.is_lost());
        assert_eq!(
            dead.status.valid_until(),
            Some(validity),
            "the late yes renewed nothing"
        );
        assert_eq!(store.calls_to("dead").len(), 1, "no renewal after the loss");
        dead.status.mark_released();
    }

    #[test]
    fn an_extension_during_a_hung_renewal_moves_its_deadline() {
        let lease = Duration::from_millis(300);
        let store = Arc::new(Stalling::default());
        let dead = store.watched("a", "dead", lease);
        let first = dead.status.valid_until().unwrap();
        std::thread::sleep(Duration::from_millis(150)); // the renewal hangs
        assert_eq!(store.calls_to("dead").len(), 1);
        // What `LockGuard::extend` does when its own call got through.
        dead.status.renewed(Instant::now(), Duration::from_secs(1));
        let moved = dead.status.valid_until().unwrap();
        std::thread::sleep(
            (first + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
        );
        assert!(!dead.marked_lost(), "given up at the old validity end");
        let marked = dead
            .wait_marked_lost(Duration::from_secs(3))
            .expect("given up at the new validity end");
        assert!(marked >= moved && marked < moved + Duration::from_secs(1));
        dead.status.mark_released();
        store.open();
    }

    #[test]
    fn a_dead_store_holds_no_more_than_its_share_of_workers() {
        let lease = Duration::from_millis(600);
        let dead_store = Arc::new(Stalling::default());
        let other_store = Arc::new(Stalling::default());
        let dead: Vec<Watched> = (0..PER_STORE + 4)
            .map(|i| dead_store.watched("a", &format!("dead{i}"), lease))
            .collect();
        let alive = other_store.watched("b", "alive", lease);

        for w in &dead {
            let validity = w.status.valid_until().unwrap();
            let marked = w
                .wait_marked_lost(Duration::from_secs(3))
                .expect("given up, though it never got a turn");
            assert!(marked >= validity && marked < validity + Duration::from_secs(1));
        }
        let started = lock(&dead_store.calls).len();
        assert_eq!(started, PER_STORE, "calls sent to the dead store");
        std::thread::sleep(Duration::from_millis(600));
        let gap = alive.longest_gap(&other_store);
        assert!(gap < lease * 2 / 3, "went {gap:?} unrenewed");
        assert!(!alive.status.is_lost());

        for w in dead.iter().chain([&alive]) {
            w.status.mark_released();
        }
        dead_store.open();
        // Those that waited for a turn are dropped when it comes, unsent.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(lock(&dead_store.calls).len(), PER_STORE);
    }
}
