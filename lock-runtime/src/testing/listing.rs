//! Listing held locks (the [`Listing`](crate::backend::Listing) ability):
//! what is held is listed under its own key, what was released is not.

use std::time::Duration;

use crate::backend::Held;

use super::{Conformance, Scope};

impl Scope {
    /// The alias's held locks, or `None` when its store cannot list them.
    fn listed(&self, when: &str) -> Option<Vec<Held>> {
        self.handle
            .holders()
            .unwrap_or_else(|e| panic!("{self}: listing {when} failed: {e}"))
    }

    /// Releases a guard that must still be held.
    pub(super) fn released(&self, what: &str, outcome: Result<(), crate::LockError>) {
        if let Err(e) = outcome {
            panic!("{self}: releasing {what} failed: {e}");
        }
    }

    fn find<'h>(&self, held: &'h [Held], key: &str) -> Option<&'h Held> {
        held.iter().find(|h| h.key == key)
    }
}

impl Conformance {
    /// With the listing ability
    /// ([`Alias::holders`](crate::registry::Alias::holders) answers
    /// `Some`): held locks are listed under their own keys (a hostile key
    /// included), a lock with a fixed lease shows no more of it left than it
    /// was given, and a released lock is no longer listed. A store without
    /// the ability must say so every time (`Ok(None)`).
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).holders_are_listed();
    /// ```
    pub fn holders_are_listed(&self) {
        let s = self.scope("holders_are_listed");
        let Some(_) = s.listed("with nothing held") else {
            let a = s.held("a", s.lock(&s.key("a")).acquire());
            assert!(
                s.listed("with a lock held").is_none(),
                "{s}: the store listed nothing at first, then listed"
            );
            s.released("a", a.release());
            return;
        };
        let (a, b) = (s.key("a"), format!("{}:\n*{{}}%", s.key("b")));
        let lease = s.opts.lease * 10;
        let ga = s.held("a", s.lock(&a).expire(lease).acquire());
        let gb = s.held("b", s.lock(&b).acquire());
        let held = s.listed("two locks").unwrap_or_default();
        let listed_a = s
            .find(&held, &a)
            .unwrap_or_else(|| panic!("{s}: a held lock is not listed under its key: {held:?}"));
        assert!(
            s.find(&held, &b).is_some(),
            "{s}: a lock with a hostile key is not listed under its key: {held:?}"
        );
        if let Some(left) = listed_a.lease_left {
            assert!(
                left <= lease + Duration::from_millis(1),
                "{s}: {left:?} of a {lease:?} lease listed as left"
            );
        }
        s.released("a", ga.release());
        let held = s.listed("after a release").unwrap_or_default();
        assert!(
            s.find(&held, &a).is_none(),
            "{s}: a released lock is still listed: {held:?}"
        );
        assert!(
            s.find(&held, &b).is_some(),
            "{s}: releasing one lock unlisted another: {held:?}"
        );
        s.released("b", gb.release());
        let held = s.listed("after both releases").unwrap_or_default();
        assert!(
            s.find(&held, &b).is_none(),
            "{s}: a released lock is still listed: {held:?}"
        );
    }
}
