//! Mutual exclusion under load in one process: 8 threads (or 8 tasks on a
//! multi-threaded tokio runtime) each run 10,000 critical sections on one key.
//! Every section is a read-modify-write split in two, with a yield in between,
//! so that an unprotected counter loses updates; the final count must be exact.
//!
//! Each test has a counter of its own, so the tests can run in parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lock_runtime::{Lock, LockError, lock};

const WORKERS: u64 = 8;
const SECTIONS: u64 = 10_000;
const EXPECTED: u64 = WORKERS * SECTIONS;

/// A counter whose increment is deliberately not atomic: a load, a yield,
/// then a store of the value read plus one. Two increments that overlap lose
/// one of them. `Relaxed` is enough: the lock alone orders the sections.
struct RacyCounter(AtomicU64);

impl RacyCounter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    fn increment(&self) {
        let v = self.0.load(Ordering::Relaxed);
        std::thread::yield_now();
        self.0.store(v + 1, Ordering::Relaxed);
    }

    async fn increment_async(&self) {
        let v = self.0.load(Ordering::Relaxed);
        tokio::task::yield_now().await;
        self.0.store(v + 1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn on_threads(section: impl Fn() + Send + Sync + 'static) {
    let section = Arc::new(section);
    let start = Arc::new(std::sync::Barrier::new(WORKERS as usize));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (section, start) = (Arc::clone(&section), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..SECTIONS {
                    section();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
}

static BUILDER_THREADS: RacyCounter = RacyCounter::new();

#[test]
fn builder_guards_exclude_threads() {
    let lock = Lock::new("concurrency-builder-threads");
    on_threads(move || {
        let guard = lock.acquire().expect("acquire");
        BUILDER_THREADS.increment();
        guard.release().expect("still held");
    });
    assert_eq!(
        BUILDER_THREADS.get(),
        EXPECTED,
        "updates were lost: two threads were inside at once"
    );
}

static MACRO_THREADS: RacyCounter = RacyCounter::new();

#[lock("concurrency-macro-threads")]
fn bump_under_macro() -> Result<(), LockError> {
    MACRO_THREADS.increment();
    Ok(())
}

#[test]
fn lock_attribute_excludes_threads() {
    on_threads(|| bump_under_macro().expect("a waiting #[lock] takes the lock"));
    assert_eq!(
        MACRO_THREADS.get(),
        EXPECTED,
        "updates were lost: two threads were inside at once"
    );
}

async fn on_tasks<F, Fut>(section: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let section = Arc::new(section);
    let start = Arc::new(tokio::sync::Barrier::new(WORKERS as usize));
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (section, start) = (Arc::clone(&section), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                for _ in 0..SECTIONS {
                    section().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a task panicked");
    }
}

static BUILDER_TASKS: RacyCounter = RacyCounter::new();

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_builder_guards_exclude_tasks() {
    let lock = Lock::new("concurrency-builder-tasks");
    on_tasks(move || {
        let lock = lock.clone();
        async move {
            let guard = lock.acquire_async().await.expect("acquire");
            BUILDER_TASKS.increment_async().await;
            guard.release_async().await.expect("still held");
        }
    })
    .await;
    assert_eq!(
        BUILDER_TASKS.get(),
        EXPECTED,
        "updates were lost: two tasks were inside at once"
    );
}

static MACRO_TASKS: RacyCounter = RacyCounter::new();

#[lock("concurrency-macro-tasks")]
async fn bump_under_macro_async() -> Result<(), LockError> {
    MACRO_TASKS.increment_async().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_attribute_excludes_async_tasks() {
    on_tasks(|| async {
        bump_under_macro_async()
            .await
            .expect("a waiting #[lock] takes the lock")
    })
    .await;
    assert_eq!(
        MACRO_TASKS.get(),
        EXPECTED,
        "updates were lost: two tasks were inside at once"
    );
}
