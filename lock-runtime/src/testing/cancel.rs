//! Cancelled async acquisitions: a future dropped while it waits, or right
//! after its request won, leaves nothing behind that keeps the lock from the
//! next holder; nor does a crowd of waiters giving up at their deadlines.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Conformance, Scope, runtime};

impl Scope {
    /// Checks that nobody is left holding `lock`: a waiter gets it within
    /// the slack (an acquisition that ended may give it back asynchronously,
    /// but not only when some lease ends).
    fn takeable(&self, what: &str, lock: &crate::Lock) {
        let started = Instant::now();
        match lock.clone().wait_for(self.opts.slack).acquire() {
            Ok(guard) => drop(guard),
            Err(e) if e.is_timeout() => panic!(
                "{self}: {what}: the lock was still held {:?} later: an acquisition that ended (cancelled or given up) kept it",
                started.elapsed()
            ),
            Err(e) => panic!("{self}: {what}: acquiring failed: {e}"),
        }
    }
}

impl Conformance {
    /// Async acquisitions (fair and not) dropped while they wait for a held
    /// lock, by a timeout and by a `select!`, strand nothing: once the holder
    /// releases, a waiting thread gets the lock within the slack, and after
    /// it the lock is free again.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).cancelled_waiter_strands_nothing();
    /// ```
    pub fn cancelled_waiter_strands_nothing(&self) {
        let s = Arc::new(self.scope("cancelled_waiter_strands_nothing"));
        let lock = s.lock(&s.key("cancel-waiting"));
        let holder = s.held("the holder", lock.acquire());
        let rt = runtime(&s);
        rt.block_on(async {
            for fair in [false, true] {
                // Long enough to have joined any queue the store keeps.
                let waited = tokio::time::timeout(Duration::from_millis(100), lock.clone().fair(fair).acquire_async()).await;
                if let Ok(outcome) = waited {
                    panic!("{s}: a waiter (fair: {fair}) finished while the lock was held: {outcome:?}");
                }
                let mut waiting = Box::pin(lock.clone().fair(fair).acquire_async());
                tokio::select! {
                    outcome = &mut waiting => panic!("{s}: a waiter (fair: {fair}) finished while the lock was held: {outcome:?}"),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                drop(waiting);
            }
        });
        // A live waiter, queued behind whatever the cancelled ones left.
        let next = {
            let lock = lock.clone().wait_for(s.opts.slack + s.opts.lease);
            thread::spawn(move || lock.acquire().map(|guard| (Instant::now(), guard)))
        };
        thread::sleep(Duration::from_millis(50));
        let released = Instant::now();
        if let Err(e) = holder.release() {
            panic!("{s}: the holder could not release: {e}");
        }
        match next.join() {
            Ok(Ok((at, guard))) => {
                let late = at - released;
                assert!(
                    late <= s.opts.slack,
                    "{s}: the next waiter got the lock {late:?} after its release"
                );
                drop(guard);
            }
            Ok(Err(e)) => panic!(
                "{s}: the next waiter did not get the released lock (cancelled waiters blocked it?): {e}"
            ),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        s.takeable("after the next holder", &lock);
    }

    /// An async acquisition dropped after its request won gives the lock
    /// back. First deterministically for stores that hand a released lock to
    /// a waiter: a fair waiter is left unpolled while the holder releases,
    /// then dropped. Then by racing: twenty waiters are cancelled at varied
    /// moments around the release. After each, the lock is takeable within
    /// the slack.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).cancelled_grant_gives_the_lock_back();
    /// ```
    pub fn cancelled_grant_gives_the_lock_back(&self) {
        let s = Arc::new(self.scope("cancelled_grant_gives_the_lock_back"));
        let lock = s.lock(&s.key("cancel-granted"));
        let rt = runtime(&s);

        let holder = s.held("the holder", lock.acquire());
        rt.block_on(async {
            let mut waiting = Box::pin(lock.clone().fair(true).acquire_async());
            if let Ok(outcome) =
                tokio::time::timeout(Duration::from_millis(100), &mut waiting).await
            {
                panic!("{s}: a waiter finished while the lock was held: {outcome:?}");
            }
            if let Err(e) = holder.release_async().await {
                panic!("{s}: the holder could not release: {e}");
            }
            // Unpolled: a store that hands the lock to its first waiter on
            // release has granted it to this one by now.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(waiting);
        });
        s.takeable("after dropping a waiter the release woke", &lock);

        for i in 0..20u64 {
            let holder = s.held("the holder", lock.acquire());
            let waiter = rt.spawn({
                let lock = lock.clone().fair(i % 2 == 0);
                // Cancelled from just before to a few ms after the release.
                let give_up = Duration::from_millis(18) + Duration::from_micros(250 * i);
                async move {
                    tokio::time::timeout(give_up, lock.acquire_async())
                        .await
                        .map(|outcome| outcome.map(drop))
                }
            });
            thread::sleep(Duration::from_millis(20));
            if let Err(e) = holder.release() {
                panic!("{s}: the holder could not release: {e}");
            }
            match rt.block_on(waiter) {
                Ok(Ok(Err(e))) => panic!("{s}: a racing waiter failed: {e}"),
                Ok(_) => {}
                Err(e) => panic!("{s}: a racing waiter did not finish: {e}"),
            }
            s.takeable(&format!("after racing waiter {i} was cancelled"), &lock);
        }
    }

    /// A crowd of async waiters with deadlines too short for all of them
    /// strands nothing: some get the lock (each holding it across a yield),
    /// the rest give up, many of them just as a release hands them the
    /// lock; once every task has ended, the lock is free within the slack.
    /// Every other crowd gives up by dropping its futures at a timeout
    /// instead of by a deadline. Then the same with crowds of threads using
    /// the blocking API.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).crowd_giving_up_strands_nothing();
    /// ```
    pub fn crowd_giving_up_strands_nothing(&self) {
        let s = Arc::new(self.scope("crowd_giving_up_strands_nothing"));
        let rt = runtime(&s);
        for round in 0..5 {
            let lock = s.lock(&s.key(&format!("crowd-{round}")));
            rt.block_on(async {
                // Odd rounds give up by dropping their futures instead.
                let dropped = round % 2 == 1;
                let tasks: Vec<_> = (0..300)
                    .map(|_| {
                        let lock = lock.clone();
                        tokio::spawn(async move {
                            let guard = if dropped {
                                let acquiring = lock.acquire_async();
                                match tokio::time::timeout(Duration::from_millis(10), acquiring)
                                    .await
                                {
                                    Ok(outcome) => outcome?,
                                    Err(_) => return Ok(()),
                                }
                            } else {
                                lock.wait_for(Duration::from_millis(10))
                                    .acquire_async()
                                    .await?
                            };
                            tokio::task::yield_now().await;
                            guard.release_async().await
                        })
                    })
                    .collect();
                for t in tasks {
                    match t.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) if e.is_timeout() => {}
                        Ok(Err(e)) => panic!("{s}: a waiter of the crowd failed: {e}"),
                        Err(e) => panic!("{s}: a waiter of the crowd did not finish: {e}"),
                    }
                }
            });
            s.takeable(&format!("after crowd {round} ended"), &lock);
        }
        // The same with threads, through the blocking API.
        for round in 0..3 {
            let lock = s.lock(&s.key(&format!("thread-crowd-{round}")));
            thread::scope(|scope| {
                for _ in 0..32 {
                    let lock = lock.clone().wait_for(Duration::from_millis(3));
                    let s = &s;
                    scope.spawn(move || {
                        for _ in 0..10 {
                            match lock.acquire() {
                                Ok(guard) => {
                                    thread::sleep(Duration::from_micros(200));
                                    if let Err(e) = guard.release() {
                                        panic!("{s}: a thread of the crowd could not release: {e}");
                                    }
                                }
                                Err(e) if e.is_timeout() => {}
                                Err(e) => panic!("{s}: a thread of the crowd failed: {e}"),
                            }
                        }
                    });
                }
            });
            s.takeable(&format!("after thread crowd {round} ended"), &lock);
        }
    }
}
