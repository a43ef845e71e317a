//! The lost-lock signal: `is_lost()` and `lost()` stay quiet while the lock
//! is held (its lease renewed), and speak up when the lease runs out, when
//! the lock is deleted behind the holder's back, and when it is taken over.

use std::time::{Duration, Instant};

use crate::LockGuard;

use super::{Conformance, Scope, runtime};

impl Scope {
    /// Waits for `guard.lost()` at most `limit`; when it resolved.
    pub(super) fn lost_within(
        &self,
        rt: &tokio::runtime::Runtime,
        guard: &LockGuard,
        limit: Duration,
    ) -> Option<Instant> {
        rt.block_on(async {
            tokio::time::timeout(limit, guard.lost())
                .await
                .ok()
                .map(|()| Instant::now())
        })
    }
}

impl Conformance {
    /// `is_lost()` is false and `lost()` does not resolve while a lock is
    /// held, including past several renewals of a short alias lease; both
    /// signal the loss when an `expire` lease runs out (not before), when the
    /// lock is deleted behind the holder's back (the store's release with
    /// the holder's token), and when a thief takes it over with
    /// `steal_after`.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).lost_signal_keeps_its_promises();
    /// ```
    pub fn lost_signal_keeps_its_promises(&self) {
        let lease = self.opts.lease;
        // Locks without `expire` get this lease, renewed every third of it
        // while held: renewals must keep them, and notice a deletion.
        let renewed = 2 * lease;
        let s = self.scope_with("lost_signal_keeps_its_promises", |cfg| {
            cfg.default_lease(renewed)
        });
        let rt = runtime(&s);
        let quiet = |guard: &LockGuard, what: &str, wait: Duration| {
            assert!(
                !guard.is_lost(),
                "{s}: {what}: is_lost() while the lock is held"
            );
            if s.lost_within(&rt, guard, wait).is_some() {
                panic!("{s}: {what}: lost() resolved while the lock is held");
            }
            assert!(
                !guard.is_lost(),
                "{s}: {what}: is_lost() while the lock is held"
            );
        };

        // Held, through renewals.
        let lock = s.lock(&s.key("held"));
        let guard = s.held("the holder", lock.acquire());
        quiet(&guard, "held past two lease lengths", 2 * renewed);
        s.busy("while the renewed lock is held", lock.try_acquire());
        if let Err(e) = guard.release() {
            panic!("{s}: a renewed lock could not be released: {e}");
        }

        // The lease runs out.
        let lock = s.lock(&s.key("expire"));
        let taken = Instant::now();
        let guard = s.held("the holder", lock.clone().expire(lease).acquire());
        let at = s.lost_within(&rt, &guard, lease + s.opts.slack);
        let Some(at) = at else {
            panic!(
                "{s}: lost() did not resolve within {:?} of a {lease:?} lease ending",
                s.opts.slack
            );
        };
        // The signal may come a drift allowance early (1% + 2 ms).
        let took = at - taken;
        let allowance = lease / 100 + Duration::from_millis(2) + s.early();
        assert!(
            took + allowance >= lease,
            "{s}: lost() resolved {took:?} into a {lease:?} lease"
        );
        assert!(
            guard.is_lost(),
            "{s}: lost() resolved but is_lost() is false"
        );
        drop(guard);

        // Deleted behind the holder's back.
        let key = s.key("deleted");
        let lock = s.lock(&key);
        let guard = s.held("the holder", lock.acquire());
        let deleted = s.backend().release(&s.store_key(&key), guard.token());
        match deleted {
            Ok(true) => {}
            Ok(false) => {
                panic!("{s}: the store's release with the holder's token did not delete the lock")
            }
            Err(e) => panic!("{s}: the store's release failed: {e}"),
        }
        if s.lost_within(&rt, &guard, s.opts.slack).is_none() {
            panic!(
                "{s}: lost() did not resolve within {:?} of the lock being deleted",
                s.opts.slack
            );
        }
        assert!(
            guard.is_lost(),
            "{s}: a deleted lock: lost() resolved but is_lost() is false"
        );
        match guard.release() {
            Err(e) if e.is_not_held() => {}
            Err(e) => panic!("{s}: releasing a deleted lock: expected NotHeld, got {e}"),
            Ok(()) => panic!("{s}: releasing a deleted lock succeeded"),
        }

        // Taken over.
        let lock = s.lock(&s.key("stolen"));
        let guard = s.held("the holder", lock.acquire());
        let lost = guard.lost();
        std::thread::sleep(lease + s.early());
        let thief = s.held(
            "a thief",
            lock.clone().steal_after(lease).wait(false).acquire(),
        );
        let resolved =
            rt.block_on(async { tokio::time::timeout(s.opts.slack, lost).await.is_ok() });
        assert!(
            resolved,
            "{s}: lost() did not resolve within {:?} of the lock being taken over",
            s.opts.slack
        );
        assert!(
            guard.is_lost(),
            "{s}: a stolen lock: lost() resolved but is_lost() is false"
        );
        drop(thief);
    }
}
