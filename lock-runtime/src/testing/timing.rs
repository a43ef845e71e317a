//! Behaviours in time: leases that end, holders old enough to be taken over,
//! locks kept past their guard, and how long try, wait and wait-for take.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{LockError, LockGuard};

use super::{Conformance, PATIENCE, Scope, runtime};

impl Scope {
    /// Checks that a lock taken at `taken` was not freed early: `outcome` of
    /// a `try_acquire` may only be a guard once its lease (minus clock
    /// resolution) has passed.
    fn busy_until(
        &self,
        what: &str,
        taken: Instant,
        lease: Duration,
        outcome: Result<Option<LockGuard>, LockError>,
    ) {
        match outcome {
            Ok(None) => {}
            Ok(Some(_)) => {
                let after = taken.elapsed();
                assert!(
                    after + self.early() >= lease,
                    "{self}: {what}: free {after:?} after it was taken, before its {lease:?} ended"
                );
            }
            Err(e) => panic!("{self}: {what}: acquiring failed: {e}"),
        }
    }

    /// Checks that something due `due` after `from` happened at `at`: not
    /// early, and not later than the slack allows.
    fn on_time(&self, what: &str, from: Instant, due: Duration, at: Instant) {
        let took = at - from;
        assert!(
            took + self.early() >= due,
            "{self}: {what} after {took:?}, before the {due:?} it should take"
        );
        assert!(
            took <= due + self.opts.slack,
            "{self}: {what} after {took:?}, more than {:?} later than due ({due:?})",
            self.opts.slack
        );
    }
}

impl Conformance {
    /// A lock taken with `expire(lease)` and never released frees itself
    /// when the lease ends (not before, and not much later); its guard then
    /// says it is lost, and its release reports `NotHeld`.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).lease_expiry_frees_the_lock();
    /// ```
    pub fn lease_expiry_frees_the_lock(&self) {
        let s = self.scope("lease_expiry_frees_the_lock");
        let lease = s.opts.lease;
        let lock = s.lock(&s.key("expire"));
        let taken = Instant::now();
        let guard = s.held("the holder", lock.clone().expire(lease).acquire());
        s.busy_until("right after it was taken", taken, lease, lock.try_acquire());
        let freed = s.wait_free("the lease", &lock, lease + s.opts.slack);
        s.on_time("the lease ended", taken, lease, freed);
        assert!(
            guard.is_lost(),
            "{s}: the guard of an expired lock does not say it is lost"
        );
        match guard.release() {
            Err(e) if e.is_not_held() => {}
            Err(e) => panic!("{s}: releasing an expired lock: expected NotHeld, got {e}"),
            Ok(()) => panic!("{s}: releasing an expired lock succeeded"),
        }
    }

    /// A holder older than `steal_after` is taken over by a single attempt;
    /// a younger holder is not (nor is the new holder, while young). The old holder's release then reports
    /// `NotHeld` and leaves the new holder's lock alone.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).steal_after_takes_over_only_old_holders();
    /// ```
    pub fn steal_after_takes_over_only_old_holders(&self) {
        let s = self.scope("steal_after_takes_over_only_old_holders");
        let age = s.opts.lease;
        let key = s.key("steal");
        let lock = s.lock(&key);
        let thief = lock.clone().steal_after(age);

        let taken = Instant::now();
        let old = s.held("the old holder", lock.acquire());
        s.busy_until(
            "a thief, while the holder is young",
            taken,
            age,
            thief.try_acquire(),
        );
        thread::sleep((age + s.early()).saturating_sub(taken.elapsed()));
        let stolen_at = Instant::now();
        let new = s.free("a thief, once the holder is old", thief.try_acquire());
        s.busy_until(
            "a second thief, while the new holder is young",
            stolen_at,
            age,
            thief.try_acquire(),
        );
        match old.release() {
            Err(e) if e.is_not_held() => {}
            Err(e) => panic!("{s}: the old holder's release: expected NotHeld, got {e}"),
            Ok(()) => panic!("{s}: the old holder released a lock taken over from it"),
        }
        s.busy("after the old holder's release", lock.try_acquire());
        if let Err(e) = new.release() {
            panic!("{s}: the new holder could not release: {e}");
        }
    }

    /// A thief that waits (with `steal_after` and a deadline well past the
    /// steal age) takes the lock over once the holder is old enough, not
    /// only at its deadline: the holder's age is a moment to look again,
    /// like the end of its lease.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).waiting_thief_takes_over_at_the_steal_age();
    /// ```
    pub fn waiting_thief_takes_over_at_the_steal_age(&self) {
        let s = self.scope("waiting_thief_takes_over_at_the_steal_age");
        let age = s.opts.lease;
        let lock = s.lock(&s.key("steal-waiting"));
        let taken = Instant::now();
        let old = s.held("the old holder", lock.acquire());
        let got = s.held(
            "a waiting thief",
            lock.clone()
                .steal_after(age)
                .wait_for(age + 2 * s.opts.slack)
                .acquire(),
        );
        s.on_time(
            "a waiting thief took the lock over",
            taken,
            age,
            Instant::now(),
        );
        drop(got);
        drop(old);
    }

    /// With `delete_on_exit(false)` and `expire(lease)`, dropping the guard
    /// (sync or async) leaves the lock held until the lease ends.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).delete_on_exit_false_keeps_until_lease_end();
    /// ```
    pub fn delete_on_exit_false_keeps_until_lease_end(&self) {
        let s = Arc::new(self.scope("delete_on_exit_false_keeps_until_lease_end"));
        let lease = s.opts.lease;
        let sync_lock = s.lock(&s.key("keep-sync"));
        let async_lock = s.lock(&s.key("keep-async"));
        let keep = |lock: &crate::Lock| lock.clone().expire(lease).delete_on_exit(false);

        let taken = Instant::now();
        drop(s.held("the holder", keep(&sync_lock).acquire()));
        s.busy_until(
            "after the guard dropped",
            taken,
            lease,
            sync_lock.try_acquire(),
        );

        let rt = runtime(&s);
        let async_taken = Instant::now();
        rt.block_on(async {
            drop(s.held("the async holder", keep(&async_lock).acquire_async().await));
            // A detached release, if the store wrongly made one, has had time.
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.busy_until(
                "after the async guard dropped",
                async_taken,
                lease,
                async_lock.try_acquire_async().await,
            );
        });

        let freed = s.wait_free("the kept lock's lease", &sync_lock, lease + s.opts.slack);
        s.on_time("the kept lock was freed", taken, lease, freed);
        let freed = s.wait_free(
            "the kept async lock's lease",
            &async_lock,
            lease + s.opts.slack,
        );
        s.on_time("the kept async lock was freed", async_taken, lease, freed);
    }

    /// On a held lock: `try_acquire` and `wait(false)` answer busy at once;
    /// `wait_for(d)` times out no earlier than `d` and not much later; a
    /// waiter without a deadline gets the lock once it is released, not
    /// before. Sync and async.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).try_wait_and_wait_for_deadlines();
    /// ```
    pub fn try_wait_and_wait_for_deadlines(&self) {
        let s = Arc::new(self.scope("try_wait_and_wait_for_deadlines"));
        let d = s.opts.lease;
        let key = s.key("busy");
        let lock = s.lock(&key);
        let holder = s.held("the holder", lock.acquire());

        let check_timeout = |how: &str, started: Instant, outcome: Result<LockGuard, LockError>| {
            let took = started.elapsed();
            match outcome {
                Err(LockError::Timeout { waited, .. }) => {
                    assert!(
                        waited + s.early() >= d,
                        "{s}: {how}: the timeout says it waited {waited:?}, less than {d:?}"
                    );
                }
                Err(e) => panic!("{s}: {how}: expected a timeout, got {e}"),
                Ok(_) => panic!("{s}: {how}: took a held lock"),
            }
            s.on_time(&format!("{how} timed out"), started, d, started + took);
        };
        let check_busy = |how: &str, started: Instant, outcome: Result<LockGuard, LockError>| {
            match outcome {
                Err(e) if e.is_busy() => {}
                Err(e) => panic!("{s}: {how}: expected Busy, got {e}"),
                Ok(_) => panic!("{s}: {how}: took a held lock"),
            }
            let took = started.elapsed();
            assert!(took < s.opts.slack, "{s}: {how} took {took:?} to say busy");
        };

        let started = Instant::now();
        s.busy("try_acquire", lock.try_acquire());
        let took = started.elapsed();
        assert!(
            took < s.opts.slack,
            "{s}: try_acquire took {took:?} to say busy"
        );
        check_busy(
            "wait(false)",
            Instant::now(),
            lock.clone().wait(false).acquire(),
        );
        check_timeout(
            "wait_for",
            Instant::now(),
            lock.clone().wait_for(d).acquire(),
        );

        let rt = runtime(&s);
        rt.block_on(async {
            let started = Instant::now();
            s.busy("try_acquire_async", lock.try_acquire_async().await);
            let took = started.elapsed();
            assert!(
                took < s.opts.slack,
                "{s}: try_acquire_async took {took:?} to say busy"
            );
            check_busy(
                "async wait(false)",
                Instant::now(),
                lock.clone().wait(false).acquire_async().await,
            );
            check_timeout(
                "async wait_for",
                Instant::now(),
                lock.clone().wait_for(d).acquire_async().await,
            );
        });

        // Waiters without a deadline (PATIENCE only turns a hang into a
        // failure) get the lock when it is released, and not before. Each
        // gives it back at once, so that the other can follow.
        let waiter = {
            let lock = lock.clone().wait_for(PATIENCE);
            thread::spawn(move || lock.acquire().map(handed_back))
        };
        let async_waiter = rt.spawn({
            let lock = lock.clone().wait_for(PATIENCE);
            async move { lock.acquire_async().await.map(handed_back) }
        });
        thread::sleep(d);
        assert!(
            !waiter.is_finished(),
            "{s}: a waiting thread finished while the lock was held"
        );
        assert!(
            !async_waiter.is_finished(),
            "{s}: a waiting task finished while the lock was held"
        );
        let released = Instant::now();
        if let Err(e) = holder.release() {
            panic!("{s}: the holder could not release: {e}");
        }
        let got = match waiter.join() {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => panic!("{s}: the waiting thread did not get the released lock: {e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let async_got = match rt.block_on(async_waiter) {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => panic!("{s}: the waiting task did not get the released lock: {e}"),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("{s}: the waiting task did not finish: {e}"),
            },
        };
        for (who, at) in [("the waiting thread", got), ("the waiting task", async_got)] {
            assert!(
                at >= released,
                "{s}: {who} got the lock before it was released"
            );
            let late = at - released;
            // Both waited for the same release; the second also for the
            // first's hand-back, hence twice the slack.
            assert!(
                late <= 2 * s.opts.slack,
                "{s}: {who} got the lock {late:?} after it was released"
            );
        }
    }
}

/// When a waiter got the lock; it gives it back at once.
fn handed_back(guard: LockGuard) -> Instant {
    let at = Instant::now();
    drop(guard);
    at
}
