//! The admin API: a held lock names its holder when shown or listed,
//! listing pages through a prefix, and a forced release frees a lock so that
//! its old holder finds it lost and the next holder's fencing token is
//! higher, with an entry in the audit log.

use std::time::{Duration, Instant};

use crate::LockError;
use crate::admin::{Owner, Page};
use crate::backend::Held;

use super::{Conformance, PATIENCE, Scope, runtime};

const LABEL: &str = "conformance-label";

impl Scope {
    fn page(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Option<Page> {
        self.handle
            .list(prefix, cursor, limit)
            .unwrap_or_else(|e| panic!("{self}: listing `{prefix}` failed: {e}"))
    }

    /// Checks that `held` names this process (and the label) as its owner.
    fn names_this_process(&self, what: &str, held: &Held) {
        let Some(owner) = &held.owner else {
            panic!(
                "{self}: {what}: the store shows no owner (record it in `Held::owner`, or ignore \
                 this behaviour for a store that cannot): {held:?}"
            );
        };
        let me = Owner::of_this_process();
        assert_eq!(
            owner.pid, me.pid,
            "{self}: {what}: the owner's pid is not this process's: {held:?}"
        );
        assert_eq!(
            owner.host, me.host,
            "{self}: {what}: the owner's host is not this host: {held:?}"
        );
        assert_eq!(
            owner.label.as_deref(),
            Some(LABEL),
            "{self}: {what}: the owner's label is not the lock's: {held:?}"
        );
    }
}

impl Conformance {
    /// With the admin API's listing ([`Alias::show`](crate::registry::Alias::show)
    /// answers): a held lock is shown with its owner (this host, this pid,
    /// the lock's label), its fencing token and its lease, a free lock is
    /// not shown, and [`Alias::list`](crate::registry::Alias::list) pages
    /// through exactly the locks under a prefix, each once. A
    /// store that cannot show must say so ([`LockError::Unsupported`]) and
    /// then cannot list either (`Ok(None)`); one that shows but cannot list
    /// says `Ok(None)` to every listing.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).listing_names_the_holder();
    /// ```
    pub fn listing_names_the_holder(&self) {
        let s = self.scope("listing_names_the_holder");
        let key = s.key("shown");
        let lease = s.opts.lease * 10;
        let guard = s.held(
            "the holder",
            s.lock(&key).label(LABEL).expire(lease).acquire(),
        );
        let shown = match s.handle.show(&key) {
            Ok(shown) => shown,
            Err(LockError::Unsupported { .. }) => {
                assert!(
                    s.page("", None, 10).is_none(),
                    "{s}: the store cannot show a lock, but lists them"
                );
                s.released("the holder", guard.release());
                return;
            }
            Err(e) => panic!("{s}: showing a held lock failed: {e}"),
        };
        let Some(shown) = shown else {
            panic!("{s}: a held lock is not shown");
        };
        assert_eq!(shown.key, key, "{s}: shown under another key");
        s.names_this_process("shown", &shown);
        if let (Some(shown), Some(own)) = (shown.fencing, guard.fencing_token()) {
            assert_eq!(shown, own, "{s}: shown with another fencing token");
        }
        if let Some(left) = shown.lease_left {
            assert!(
                left <= lease + Duration::from_millis(1),
                "{s}: {left:?} of a {lease:?} lease shown as left"
            );
        }
        let free = s.handle.show(&s.key("free"));
        assert!(
            matches!(free, Ok(None)),
            "{s}: a free lock is shown: {free:?}"
        );

        if s.page("", None, 1).is_none() {
            // A store that shows one lock but cannot list them (memcached).
            s.released("the holder", guard.release());
            return;
        }

        // Three locks under a prefix, one beside it; pages of two.
        let prefix = format!("{}-", s.key("page"));
        let keys: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}")).collect();
        let mut guards: Vec<_> = keys
            .iter()
            .map(|k| s.held("a paged lock", s.lock(k).label(LABEL).acquire()))
            .collect();
        guards.push(s.held("a lock beside", s.lock(&s.key("pagf")).acquire()));
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let Some(page) = s.page(&prefix, cursor.as_deref(), 2) else {
                panic!("{s}: the store listed locks, then said it cannot");
            };
            assert!(
                page.held.len() <= 2,
                "{s}: a page of 2 held {}",
                page.held.len()
            );
            for h in &page.held {
                s.names_this_process("listed", h);
            }
            listed.extend(page.held.into_iter().map(|h| h.key));
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "{s}: 100 pages and still not the last");
        // Each once; in key order only within a page (Redis' `SCAN` has none).
        listed.sort();
        assert_eq!(
            listed, keys,
            "{s}: the pages under `{prefix}` did not list exactly its locks, each once"
        );
        for g in guards {
            s.released("a paged lock", g.release());
        }
        s.released("the holder", guard.release());
    }

    /// With forced release ([`Alias::force_release`](crate::registry::Alias::force_release)
    /// answers): the forced-out holder's `lost()` resolves and its release
    /// answers `NotHeld`; a waiter gets the lock with a higher fencing token;
    /// the answer and the audit log's newest entry name the key, the reason,
    /// this process as the one that forced it and the holder removed. A
    /// free lock can be forced too (nothing removed). A store that cannot
    /// must say so ([`LockError::Unsupported`]) and leave the holder alone.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).forced_release_is_lost_and_fenced();
    /// ```
    pub fn forced_release_is_lost_and_fenced(&self) {
        let lease = self.opts.lease;
        // Renewed every third of it: a store with no owner check tells the
        // holder at its next renewal.
        let s = self.scope_with("forced_release_is_lost_and_fenced", |cfg| {
            cfg.default_lease(2 * lease)
        });
        let rt = runtime(&s);
        let key = s.key("forced");
        let lock = s.lock(&key);
        let guard = s.held("the holder", lock.clone().label(LABEL).acquire());
        let waiter = std::thread::spawn({
            let lock = lock.clone().wait_for(PATIENCE);
            move || lock.acquire().map(|g| (g.fencing_token(), g))
        });
        std::thread::sleep(s.early() * 4 + Duration::from_millis(20));
        let forced = match s.handle.force_release(&key, "conformance") {
            Ok(forced) => forced,
            Err(LockError::Unsupported { .. }) => {
                s.busy("after a refused forced release", lock.try_acquire());
                s.released("the holder", guard.release());
                match waiter.join() {
                    Ok(Ok((_, g))) => s.released("the waiter", g.release()),
                    Ok(Err(e)) => panic!("{s}: the waiter failed: {e}"),
                    Err(_) => panic!("{s}: the waiter panicked"),
                }
                return;
            }
            Err(e) => panic!("{s}: forcing a release failed: {e}"),
        };
        let started = Instant::now();
        assert_eq!(forced.key, key, "{s}: forced under another key");
        assert_eq!(forced.reason, "conformance");
        assert_eq!(
            forced.by.pid,
            Some(std::process::id()),
            "{s}: not forced by this process"
        );
        let Some(removed) = &forced.removed else {
            panic!("{s}: a forced release of a held lock removed nobody: {forced:?}");
        };
        if let (Some(removed), Some(own)) = (removed.fencing, guard.fencing_token()) {
            assert_eq!(removed, own, "{s}: removed another holder");
        }
        if let Some(owner) = &removed.owner {
            assert_eq!(
                owner.pid,
                Some(std::process::id()),
                "{s}: the removed holder is not this process: {removed:?}"
            );
        }

        // The waiter gets the lock, with a higher fencing token.
        let (fence, next) = match waiter.join() {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => panic!("{s}: the waiter did not get the forced lock: {e}"),
            Err(_) => panic!("{s}: the waiter panicked"),
        };
        if let (Some(next), Some(old)) = (fence, guard.fencing_token()) {
            assert!(
                next > old,
                "{s}: the next holder's token {next} is not above the forced-out {old}"
            );
        }

        // The old holder finds out.
        let limit = s.opts.slack + 2 * lease;
        let left = limit.saturating_sub(started.elapsed());
        if s.lost_within(&rt, &guard, left).is_none() {
            panic!("{s}: lost() did not resolve within {limit:?} of a forced release");
        }
        match guard.release() {
            Err(e) if e.is_not_held() => {}
            Err(e) => panic!("{s}: releasing a forced-out lock: expected NotHeld, got {e}"),
            Ok(()) => panic!("{s}: releasing a forced-out lock succeeded"),
        }
        s.released("the waiter", next.release());

        // A free lock: nothing removed.
        let free = s.key("forced-free");
        match s.handle.force_release(&free, "nothing there") {
            Ok(f) => assert!(
                f.removed.is_none(),
                "{s}: forcing a free lock removed {:?}",
                f.removed
            ),
            Err(e) => panic!("{s}: forcing a free lock failed: {e}"),
        }

        // The audit log, newest first.
        match s.handle.audit_log(50) {
            Ok(log) => {
                let mine: Vec<_> = log
                    .iter()
                    .filter(|f| f.key == key || f.key == free)
                    .collect();
                assert!(
                    mine.len() == 2 && mine[0].key == free && mine[1].key == key,
                    "{s}: the audit log does not hold both forced releases, newest first: {log:?}"
                );
                assert_eq!(mine[1].reason, "conformance");
                assert!(
                    mine[1].removed.is_some() && mine[0].removed.is_none(),
                    "{s}: the audit log lost who was removed: {log:?}"
                );
                assert_eq!(mine[1].by.pid, Some(std::process::id()));
            }
            Err(LockError::Unsupported { .. }) => {}
            Err(e) => panic!("{s}: reading the audit log failed: {e}"),
        }
    }
}
