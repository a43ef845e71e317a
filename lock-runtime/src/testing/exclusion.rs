//! Mutual exclusion: contenders run a read-modify-write that loses updates
//! unless the lock keeps them apart, so the final count is exact only under
//! a lock that excludes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;

use super::{Conformance, PATIENCE, Scope, runtime};

/// A counter whose increment is a separate load and store with a pause in
/// between: two holders at once lose an update (and are counted).
#[derive(Default)]
struct Racy {
    count: AtomicU64,
    inside: AtomicUsize,
    most_inside: AtomicUsize,
}

impl Racy {
    fn enter(&self) -> u64 {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        self.count.load(Ordering::SeqCst)
    }

    fn leave(&self, read: u64) {
        self.count.store(read + 1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    fn check(&self, s: &Scope, how: &str) {
        let expected = (s.opts.contenders * s.opts.rounds) as u64;
        let most = self.most_inside.load(Ordering::SeqCst);
        let count = self.count.load(Ordering::SeqCst);
        assert!(
            most <= 1,
            "{s}: {most} {how} held the lock at the same time"
        );
        assert_eq!(
            count,
            expected,
            "{s}: {} updates were lost: {how} were not kept apart",
            expected.saturating_sub(count)
        );
    }
}

impl Conformance {
    /// `contenders` threads each run `rounds` critical sections under one
    /// lock, through the blocking builder (half of them fair, some releasing
    /// by `release()`, the rest by drop); no two are ever inside at once and
    /// no update is lost.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).exclusion_across_threads();
    /// ```
    pub fn exclusion_across_threads(&self) {
        let s = Arc::new(self.scope("exclusion_across_threads"));
        let key = s.key("threads");
        let racy = Arc::new(Racy::default());
        let threads: Vec<_> = (0..s.opts.contenders)
            .map(|i| {
                let (s, racy) = (Arc::clone(&s), Arc::clone(&racy));
                let lock = s.lock(&key).fair(i % 2 == 1).wait_for(PATIENCE);
                thread::spawn(move || {
                    for round in 0..s.opts.rounds {
                        let guard = s.held("a contending thread", lock.acquire());
                        let read = racy.enter();
                        // Give another holder, if the lock let one in, time
                        // to read the same value.
                        thread::yield_now();
                        racy.leave(read);
                        if round % 2 == 0 {
                            if let Err(e) = guard.release() {
                                panic!("{s}: releasing a held lock failed: {e}");
                            }
                        } else {
                            drop(guard);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        racy.check(&s, "threads");
    }

    /// `contenders` tasks on a multi-threaded runtime each run `rounds`
    /// critical sections under one lock, through `acquire_async` (half of
    /// them fair, some releasing by `release_async()`, the rest by drop), with
    /// an await inside the section; no two are ever inside at once and no
    /// update is lost.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).exclusion_across_tasks();
    /// ```
    pub fn exclusion_across_tasks(&self) {
        let s = Arc::new(self.scope("exclusion_across_tasks"));
        let key = s.key("tasks");
        let racy = Arc::new(Racy::default());
        let rt = runtime(&s);
        rt.block_on(async {
            let tasks: Vec<_> = (0..s.opts.contenders)
                .map(|i| {
                    let (s, racy) = (Arc::clone(&s), Arc::clone(&racy));
                    let lock = s.lock(&key).fair(i % 2 == 1).wait_for(PATIENCE);
                    tokio::spawn(async move {
                        for round in 0..s.opts.rounds {
                            let guard = s.held("a contending task", lock.acquire_async().await);
                            let read = racy.enter();
                            tokio::task::yield_now().await;
                            racy.leave(read);
                            if round % 2 == 0 {
                                if let Err(e) = guard.release_async().await {
                                    panic!("{s}: releasing a held lock failed: {e}");
                                }
                            } else {
                                drop(guard);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                if let Err(e) = t.await {
                    match e.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        Err(e) => panic!("{s}: a contending task did not finish: {e}"),
                    }
                }
            }
        });
        racy.check(&s, "tasks");
    }
}
