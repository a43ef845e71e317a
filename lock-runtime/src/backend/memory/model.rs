//! Model tests of the wait line (`--cfg shuttle`, see `crate::sync`): the
//! release's hand-off, the barging of woken waiters, FIFO for fair ones, and
//! a cancelled async waiter that was handed the lock.
//!
//! Not modelled: time. Shuttle fires no timeout (`park_timeout` parks until
//! signalled), so every wait here is untimed and unleased; lease ends, steal
//! ages, deadlines and the virtual clock's nudges are left to the ordinary
//! tests. Whether a woken unfair waiter is handed the lock (queued past
//! [`STARVATION`]) or must compete depends on the wall clock: both branches
//! keep the properties checked here, but a schedule replayed from its seed
//! may take the other one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shuttle::rand::{Rng, thread_rng};

use super::*;
use crate::sync::atomic::AtomicUsize;

const KEY: &str = "k";

fn untimed() -> Wait {
    Wait::new(None, Duration::from_secs(1))
}

/// Who is inside the locked section: entering asserts it was empty.
#[derive(Default)]
struct Section {
    inside: AtomicUsize,
    entries: AtomicUsize,
}

impl Section {
    fn run(&self) {
        let was = self.inside.fetch_add(1, Ordering::SeqCst);
        assert_eq!(was, 0, "two holders inside the section at once");
        // A switch point inside: another thread gets every chance to enter.
        thread::yield_now();
        self.entries.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

fn acquire(store: &MemoryBackend, req: &Request<'_>) {
    let got = store
        .acquire(req, untimed())
        .expect("the memory store never fails");
    assert!(got.is_some(), "an untimed wait ended without the lock");
}

/// Nothing left behind: no holder, no waiter, no slot.
fn assert_empty(store: &MemoryBackend) {
    assert_eq!(store.held(), 0, "a lock was stranded");
    assert_eq!(store.waiting(KEY), 0, "a waiter was left in line");
    assert_eq!(store.slots(), 0, "an empty slot was left behind");
}

/// Threads acquiring in turn, `fair` deciding per request; every thread must
/// get the lock every time (a lost wake-up leaves a thread parked forever,
/// which shuttle reports as a deadlock).
fn contend(threads: usize, rounds: usize, fair: fn(usize) -> bool) {
    let store = Arc::new(MemoryBackend::new());
    let section = Arc::new(Section::default());
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (store, section) = (Arc::clone(&store), Arc::clone(&section));
            thread::spawn(move || {
                for _ in 0..rounds {
                    let req = Request::new(KEY).fair(fair(i));
                    acquire(&store, &req);
                    section.run();
                    assert!(
                        store.release(KEY, req.token).unwrap(),
                        "not held at release"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(section.entries.load(Ordering::SeqCst), threads * rounds);
    assert_empty(&store);
}

#[test]
fn model_two_threads_exclude_each_other_and_every_wait_ends() {
    crate::sync::explore(|| contend(2, 3, |_| false));
}

#[test]
fn model_three_threads_exclude_each_other_and_every_wait_ends() {
    crate::sync::explore(|| contend(3, 2, |_| false));
}

#[test]
fn model_fair_and_barging_waiters_mixed() {
    crate::sync::explore(|| contend(3, 2, |i| i == 0));
}

#[test]
fn model_fair_waiters_are_served_in_queue_order() {
    crate::sync::explore(|| {
        let store = Arc::new(MemoryBackend::new());
        let holder = Request::new(KEY);
        assert!(matches!(
            store.try_acquire(&holder).unwrap(),
            Attempt::Acquired(_)
        ));
        let served = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (store, served) = (Arc::clone(&store), Arc::clone(&served));
                thread::spawn(move || {
                    let req = Request::new(KEY).fair(true);
                    acquire(&store, &req);
                    lock(&served).push(req.token);
                    assert!(store.release(KEY, req.token).unwrap());
                })
            })
            .collect();
        // They queue in whatever order the schedule gives; read it from the
        // line itself once all are in.
        while store.waiting(KEY) < 3 {
            thread::yield_now();
        }
        let queued: Vec<Token> = {
            let hash = store.hash(KEY);
            let mut st = store.shard(hash);
            let slot = st.find(hash, KEY).expect("the key has a slot");
            slot.waiters().iter().map(|w| w.token).collect()
        };
        assert!(store.release(KEY, holder.token).unwrap());
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*lock(&served), queued, "fair waiters served out of order");
        assert_empty(&store);
    });
}

/// A waiter after a cancelled one, as a parked thread or as a task.
fn next_waiter(store: Arc<MemoryBackend>, section: Arc<Section>, as_task: bool, fair: bool) {
    let req = Request::new(KEY).fair(fair);
    let got = if as_task {
        shuttle::future::block_on(store.acquire_async(&req, untimed()))
    } else {
        store.acquire(&req, untimed())
    };
    assert!(
        got.unwrap().is_some(),
        "the waiter behind a cancelled one was stranded"
    );
    section.run();
    assert!(store.release(KEY, req.token).unwrap());
}

/// An async waiter polled once (so it queues), maybe polled again, then
/// dropped: cancelled before, while or after the release hands it the lock.
fn cancelled_waiter(store: &MemoryBackend, section: &Section, fair: bool) {
    let req = Request::new(KEY).fair(fair);
    let mut fut = store.acquire_async(&req, untimed());
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 1 + thread_rng().gen_range(0..2);
    let mut won = false;
    while polls > 0 {
        polls -= 1;
        if let Poll::Ready(got) = Pin::new(&mut fut).poll(&mut cx) {
            won = got.unwrap().is_some();
            break;
        }
        thread::yield_now();
    }
    drop(fut);
    if won {
        // It completed before it could be cancelled: it holds the lock.
        section.run();
        assert!(store.release(KEY, req.token).unwrap());
    }
}

fn cancelled_grant(fair: bool, next_as_task: bool) {
    cancelled_before(fair, next_as_task, true);
}

/// A cancelled waiter, then `next` (fair or barging), then the release.
fn cancelled_before(fair: bool, next_as_task: bool, next_fair: bool) {
    let store = Arc::new(MemoryBackend::new());
    let section = Arc::new(Section::default());
    let holder = Request::new(KEY);
    assert!(matches!(
        store.try_acquire(&holder).unwrap(),
        Attempt::Acquired(_)
    ));
    let cancelled = thread::spawn({
        let (store, section) = (Arc::clone(&store), Arc::clone(&section));
        move || cancelled_waiter(&store, &section, fair)
    });
    let next = thread::spawn({
        let (store, section) = (Arc::clone(&store), Arc::clone(&section));
        move || next_waiter(store, section, next_as_task, next_fair)
    });
    let releaser = thread::spawn({
        let store = Arc::clone(&store);
        move || assert!(store.release(KEY, holder.token).unwrap())
    });
    for h in [cancelled, next, releaser] {
        h.join().unwrap();
    }
    assert!(section.entries.load(Ordering::SeqCst) >= 1);
    assert_empty(&store);
}

#[test]
fn model_a_cancelled_fair_waiter_passes_its_grant_to_a_thread() {
    crate::sync::explore(|| cancelled_grant(true, false));
}

#[test]
fn model_a_cancelled_fair_waiter_passes_its_grant_to_a_task() {
    crate::sync::explore(|| cancelled_grant(true, true));
}

#[test]
fn model_a_cancelled_woken_waiter_passes_the_wake_up_on() {
    crate::sync::explore(|| cancelled_grant(false, false));
}

/// A release wakes no second waiter while the one it woke is on its way;
/// that one, cancelled, must wake the next itself, or a barging waiter
/// behind it (which no grant reaches) is stranded.
#[test]
fn model_a_cancelled_woken_waiter_wakes_a_barging_waiter_behind_it() {
    crate::sync::explore(|| cancelled_before(false, false, false));
}

/// The same through the `Lock` API, whose cancelled acquisition also gives
/// back by its token whatever it may have won (`Pending`) after the store's
/// own clean-up (`Ticket`) passed a grant on: that second release must not
/// take the lock from the waiter it was passed to.
fn cancelled_lock_acquisition(alias: &'static str) {
    let store = Arc::new(MemoryBackend::new());
    crate::registry::add(alias, crate::registry::AliasConfig::custom(store.clone())).unwrap();
    let lock = move || crate::Lock::new(KEY).alias(alias).fair(true);
    let held = lock().try_acquire().unwrap().expect("free at the start");
    let section = Arc::new(Section::default());
    let cancelled = thread::spawn({
        let section = Arc::clone(&section);
        move || {
            let mut fut = Box::pin(lock().acquire_async());
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..1 + thread_rng().gen_range(0..2) {
                if let Poll::Ready(guard) = fut.as_mut().poll(&mut cx) {
                    // Won before it could be cancelled.
                    let _guard = guard.unwrap();
                    section.run();
                    return;
                }
                thread::yield_now();
            }
        }
    });
    let next = thread::spawn({
        let section = Arc::clone(&section);
        move || {
            let guard = lock().acquire().unwrap();
            section.run();
            // Still ours: the cancelled acquisition's release did not take it.
            guard.release().unwrap();
        }
    });
    let releaser = thread::spawn(move || held.release().unwrap());
    for h in [cancelled, next, releaser] {
        h.join().unwrap();
    }
    assert_empty(&store);
}

#[test]
fn model_a_cancelled_lock_acquisition_passes_its_grant_on_through_the_api() {
    crate::sync::explore(|| cancelled_lock_acquisition("model-cancelled-lock"));
}
