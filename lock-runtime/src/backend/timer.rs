//! Timers for async waiters on any executor: one thread for the process
//! sleeps until the earliest deadline and wakes the tasks whose deadline has
//! come.
//!
//! `futures-timer` (which the waiters used before) wakes its thread for every
//! timer made and every timer dropped; in a burst of 10,000 waiters on one
//! key, those wake-ups cost more than the locking itself. Here the thread is
//! told of a new timer only when it is due before the one the thread sleeps
//! for, and a dropped timer is forgotten where it lies, skipped when its turn
//! comes (or swept out once dropped ones are half of those kept).

use std::cmp::Ordering as Order;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use once_cell::sync::Lazy;

/// The process's timer thread, started by the first timer that waits.
static TIMERS: Lazy<Arc<Timers>> = Lazy::new(Timers::new);

/// Dropped timers are swept out of the heap only past this many, so that
/// a few never cost a pass over a large heap.
const SWEEP_AFTER: usize = 1024;

/// A future that is ready at an instant: woken by the process's timer
/// thread, or by `futures-timer` where that thread could not be started.
pub(crate) struct Timer {
    at: Instant,
    state: State,
}

enum State {
    New,
    Waiting(Arc<Entry>),
    Fallback(futures_timer::Delay),
}

impl Timer {
    /// A timer ready at `at` (at once if `at` has passed).
    pub(crate) fn at(at: Instant) -> Self {
        Self {
            at,
            state: State::New,
        }
    }

    fn poll_with(&mut self, timers: &Arc<Timers>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        match &mut self.state {
            State::New => match timers.add(self.at, cx.waker().clone()) {
                Some(entry) => self.state = State::Waiting(entry),
                None => {
                    let left = self.at.saturating_duration_since(Instant::now());
                    self.state = State::Fallback(futures_timer::Delay::new(left));
                    return self.poll_with(timers, cx);
                }
            },
            State::Waiting(entry) => {
                let mut waker = lock(&entry.waker);
                match &*waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
            }
            State::Fallback(delay) => return Pin::new(delay).poll(cx),
        }
        // The thread may have fired between the first look at the clock and
        // the waker's storing, taking the waker that was there before.
        if Instant::now() >= self.at {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_with(&TIMERS, cx)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let State::Waiting(entry) = &self.state {
            entry.drop_unfired(&TIMERS);
        }
    }
}

const PENDING: u8 = 0;
const FIRED: u8 = 1;
const DROPPED: u8 = 2;

struct Entry {
    at: Instant,
    /// Which of the heap's entries came first, among equal instants.
    seq: u64,
    waker: Mutex<Option<Waker>>,
    state: AtomicU8,
}

impl Entry {
    /// Marks a timer dropped before it fired, for the thread to skip.
    fn drop_unfired(&self, timers: &Timers) {
        if self
            .state
            .compare_exchange(PENDING, DROPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            timers.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The heap orders entries earliest first.
struct Due(Arc<Entry>);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Order::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Order {
        (other.0.at, other.0.seq).cmp(&(self.0.at, self.0.seq))
    }
}

struct Timers {
    inner: Mutex<Inner>,
    /// Signalled when a timer is due before what the thread sleeps for.
    earlier: Condvar,
    /// Timers dropped unfired and not yet taken out of the heap (about:
    /// a drop racing with a sweep may be counted after it).
    dropped: AtomicUsize,
    /// How often the thread was signalled (for the tests).
    signals: AtomicUsize,
}

struct Inner {
    heap: BinaryHeap<Due>,
    seq: u64,
    thread: Thread,
    /// What the sleeping thread waits for: `Some(None)` sleeps until told.
    sleeps_until: Option<Option<Instant>>,
}

enum Thread {
    NotStarted,
    Running,
    /// It could not be started: timers fall back to `futures-timer`.
    Failed,
}

impl Timers {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                heap: BinaryHeap::new(),
                seq: 0,
                thread: Thread::NotStarted,
                sleeps_until: None,
            }),
            earlier: Condvar::new(),
            dropped: AtomicUsize::new(0),
            signals: AtomicUsize::new(0),
        })
    }

    /// Adds a timer; `None` when there is no thread to fire it.
    fn add(self: &Arc<Self>, at: Instant, waker: Waker) -> Option<Arc<Entry>> {
        let mut inner = lock(&self.inner);
        match inner.thread {
            Thread::Running => {}
            Thread::Failed => return None,
            Thread::NotStarted => {
                let timers = Arc::clone(self);
                let started = std::thread::Builder::new()
                    .name("lock-timers".into())
                    .spawn(move || timers.run());
                inner.thread = match started {
                    Ok(_) => Thread::Running,
                    Err(_) => Thread::Failed,
                };
                if let Thread::Failed = inner.thread {
                    return None;
                }
            }
        }
        self.sweep(&mut inner);
        inner.seq += 1;
        let entry = Arc::new(Entry {
            at,
            seq: inner.seq,
            waker: Mutex::new(Some(waker)),
            state: AtomicU8::new(PENDING),
        });
        inner.heap.push(Due(Arc::clone(&entry)));
        if let Some(until) = inner.sleeps_until
            && until.is_none_or(|u| at < u)
        {
            // Told once: it is awake until it sleeps again.
            inner.sleeps_until = None;
            self.signals.fetch_add(1, Ordering::Relaxed);
            self.earlier.notify_one();
        }
        Some(entry)
    }

    /// Takes dropped timers out of the heap once they are half of it.
    fn sweep(&self, inner: &mut Inner) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > SWEEP_AFTER && dropped * 2 > inner.heap.len() {
            inner
                .heap
                .retain(|d| d.0.state.load(Ordering::Acquire) != DROPPED);
            self.dropped.store(0, Ordering::Relaxed);
        }
    }

    fn run(&self) {
        let mut due = Vec::new();
        let mut inner = lock(&self.inner);
        loop {
            let now = Instant::now();
            while let Some(top) = inner.heap.peek() {
                let entry = &top.0;
                if entry.state.load(Ordering::Acquire) == DROPPED {
                    inner.heap.pop();
                    self.forget_dropped();
                    continue;
                }
                if entry.at > now {
                    break;
                }
                if let Some(Due(entry)) = inner.heap.pop() {
                    match entry.state.compare_exchange(
                        PENDING,
                        FIRED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => due.push(entry),
                        Err(_) => self.forget_dropped(),
                    }
                }
            }
            if !due.is_empty() {
                // Woken outside the lock: a waker may run its task right here.
                drop(inner);
                for entry in due.drain(..) {
                    let waker = lock(&entry.waker).take();
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                inner = lock(&self.inner);
                continue;
            }
            let next = inner.heap.peek().map(|d| d.0.at);
            inner.sleeps_until = Some(next);
            inner = match next {
                Some(at) => {
                    let left = at.saturating_duration_since(now);
                    self.earlier
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.earlier.wait(inner).unwrap_or_else(|p| p.into_inner()),
            };
            inner.sleeps_until = None;
        }
    }

    fn forget_dropped(&self) {
        let _ = self
            .dropped
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;
    use std::time::Duration;

    /// A timer polled with a service of its own (not the process's), so
    /// that counts are this test's alone.
    struct Own<'a> {
        timer: Timer,
        timers: &'a Arc<Timers>,
    }

    impl Future for Own<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let timers = self.timers;
            self.timer.poll_with(timers, cx)
        }
    }

    impl Drop for Own<'_> {
        fn drop(&mut self) {
            if let State::Waiting(entry) = &self.timer.state {
                entry.drop_unfired(self.timers);
            }
            // Not the process's: its own drop must not count there.
            self.timer.state = State::New;
        }
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    fn poll(f: &mut Own<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    fn wait_for(count: &Count, n: usize) {
        let give_up = Instant::now() + Duration::from_secs(5);
        while count.0.load(Ordering::SeqCst) < n && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn is_ready_no_sooner_than_its_instant() {
        let at = Instant::now() + Duration::from_millis(30);
        futures_lite::future::block_on(Timer::at(at));
        assert!(Instant::now() >= at);
    }

    #[test]
    fn a_passed_instant_is_ready_at_once_and_starts_no_thread() {
        let timers = Timers::new();
        let (_, waker) = counting();
        let mut t = Own {
            timer: Timer::at(Instant::now()),
            timers: &timers,
        };
        assert_eq!(poll(&mut t, &waker), Poll::Ready(()));
        assert!(matches!(lock(&timers.inner).thread, Thread::NotStarted));
    }

    #[test]
    fn wakes_each_task_once_at_its_deadline() {
        let timers = Timers::new();
        let start = Instant::now();
        let mut tasks: Vec<_> = (0..20u64)
            .map(|i| {
                let (count, waker) = counting();
                let timer = Timer::at(start + Duration::from_millis(10 + 5 * (19 - i)));
                (
                    count,
                    waker,
                    Own {
                        timer,
                        timers: &timers,
                    },
                )
            })
            .collect();
        for (_, waker, t) in &mut tasks {
            assert_eq!(poll(t, waker), Poll::Pending);
        }
        for (count, waker, t) in &mut tasks {
            wait_for(count, 1);
            assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
            assert!(Instant::now() >= t.timer.at, "woken before its deadline");
            assert_eq!(poll(t, waker), Poll::Ready(()));
        }
    }

    #[test]
    fn a_burst_of_later_deadlines_does_not_signal_the_thread() {
        let timers = Timers::new();
        let (count, waker) = counting();
        let start = Instant::now() + Duration::from_secs(60);
        let mut first = Own {
            timer: Timer::at(start),
            timers: &timers,
        };
        assert_eq!(poll(&mut first, &waker), Poll::Pending);
        // Let the thread go to sleep for the first deadline.
        let give_up = Instant::now() + Duration::from_secs(5);
        while lock(&timers.inner).sleeps_until != Some(Some(start)) {
            assert!(Instant::now() < give_up, "the thread never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = timers.signals.load(Ordering::Relaxed);
        let mut burst: Vec<_> = (1..=10_000u64)
            .map(|i| Own {
                timer: Timer::at(start + Duration::from_micros(i)),
                timers: &timers,
            })
            .collect();
        for t in &mut burst {
            assert_eq!(poll(t, &waker), Poll::Pending);
        }
        assert_eq!(timers.signals.load(Ordering::Relaxed), before);
        // One due sooner than what it sleeps for is told.
        let mut sooner = Own {
            timer: Timer::at(Instant::now() + Duration::from_millis(20)),
            timers: &timers,
        };
        assert_eq!(poll(&mut sooner, &waker), Poll::Pending);
        assert_eq!(timers.signals.load(Ordering::Relaxed), before + 1);
        wait_for(&count, 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropped_timers_never_wake_and_are_swept_out() {
        let timers = Timers::new();
        let (count, waker) = counting();
        let soon = Instant::now() + Duration::from_millis(10);
        for _ in 0..3 * SWEEP_AFTER {
            let mut t = Own {
                timer: Timer::at(soon),
                timers: &timers,
            };
            assert_eq!(poll(&mut t, &waker), Poll::Pending);
        }
        let mut kept = Own {
            timer: Timer::at(soon + Duration::from_millis(10)),
            timers: &timers,
        };
        assert_eq!(poll(&mut kept, &waker), Poll::Pending);
        assert!(
            lock(&timers.inner).heap.len() <= 2 * SWEEP_AFTER + 2,
            "dropped timers were not swept out"
        );
        wait_for(&count, 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a dropped timer woke");
        assert_eq!(poll(&mut kept, &waker), Poll::Ready(()));
    }
}
