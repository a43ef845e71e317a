//! Only the owner's token releases or extends a lock: a stranger's token,
//! and the token of a holder whose lease has run out, change nothing.

use std::time::Duration;

use crate::backend::{Attempt, Request, Token};

use super::{Conformance, runtime};

/// A lease long enough that no lock of this behaviour ends on its own while
/// it is checked.
const LONG: Duration = Duration::from_secs(30);

impl Conformance {
    /// Through the [`Backend`](crate::backend::Backend) trait and through
    /// guards (sync and async): a stranger's token neither releases nor
    /// extends a held lock, which stays held; the owner's token does both,
    /// once; a holder whose lease ran out and whose lock passed to another
    /// can neither release nor extend the new holder's lock.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).only_the_owner_releases_or_extends();
    /// ```
    pub fn only_the_owner_releases_or_extends(&self) {
        let s = self.scope("only_the_owner_releases_or_extends");
        let backend = s.backend();
        let ask = |what: &str, answer: Result<bool, crate::backend::BackendError>| -> bool {
            answer.unwrap_or_else(|e| panic!("{s}: {what} failed: {e}"))
        };

        // The trait alone.
        let raw = s.store_key(&s.key("raw"));
        let owner = Request::new(&raw).lease(Some(LONG));
        match backend.try_acquire(&owner) {
            Ok(Attempt::Acquired(_)) => {}
            Ok(Attempt::Busy(_)) => panic!("{s}: a fresh key was busy"),
            Err(e) => panic!("{s}: try_acquire failed: {e}"),
        }
        let stranger = Token::new();
        assert!(
            !ask("release", backend.release(&raw, stranger)),
            "{s}: a stranger's token released the lock"
        );
        assert!(
            !ask("extend", backend.extend(&raw, stranger, LONG)),
            "{s}: a stranger's token extended the lock"
        );
        match backend.try_acquire(&Request::new(&raw).lease(Some(LONG))) {
            Ok(Attempt::Busy(_)) => {}
            Ok(Attempt::Acquired(_)) => {
                panic!("{s}: a stranger's release or extend freed the lock")
            }
            Err(e) => panic!("{s}: try_acquire failed: {e}"),
        }
        assert!(
            check_holds(&s, &*backend, &raw, owner.token),
            "{s}: the owner lost its lock to a stranger's calls"
        );
        assert!(
            ask("extend", backend.extend(&raw, owner.token, LONG)),
            "{s}: the owner could not extend its lock"
        );
        assert!(
            ask("release", backend.release(&raw, owner.token)),
            "{s}: the owner could not release its lock"
        );
        assert!(
            !ask("release", backend.release(&raw, owner.token)),
            "{s}: a lock was released twice"
        );
        assert!(
            !ask("extend", backend.extend(&raw, owner.token, LONG)),
            "{s}: a released lock was extended"
        );

        // Guards: the store knows them by their token.
        let key = s.key("guard");
        let lock = s.lock(&key);
        let stored = s.store_key(&key);
        let mut guard = s.held("the owner", lock.acquire());
        assert!(
            !ask("release", backend.release(&stored, Token::new())),
            "{s}: a stranger's token released a guard's lock"
        );
        assert!(
            !ask("extend", backend.extend(&stored, Token::new(), LONG)),
            "{s}: a stranger's token extended a guard's lock"
        );
        s.busy("after a stranger's release", lock.try_acquire());
        if let Err(e) = guard.extend(LONG) {
            panic!("{s}: the owner's guard could not extend: {e}");
        }
        if let Err(e) = guard.release() {
            panic!("{s}: the owner's guard could not release: {e}");
        }
        drop(s.free("after the owner's release", lock.try_acquire()));

        let rt = runtime(&s);
        rt.block_on(async {
            let mut guard = s.held("the async owner", lock.acquire_async().await);
            let released = backend.release_async(&stored, Token::new()).await;
            assert!(
                !ask("release_async", released),
                "{s}: a stranger's token released an async guard's lock"
            );
            let extended = backend.extend_async(&stored, Token::new(), LONG).await;
            assert!(
                !ask("extend_async", extended),
                "{s}: a stranger's token extended an async guard's lock"
            );
            s.busy(
                "after a stranger's async release",
                lock.try_acquire_async().await,
            );
            if let Err(e) = guard.extend_async(LONG).await {
                panic!("{s}: the owner's guard could not extend: {e}");
            }
            if let Err(e) = guard.release_async().await {
                panic!("{s}: the owner's guard could not release: {e}");
            }
        });

        // A late holder: its lease ran out and the lock passed on.
        let lease = s.opts.lease;
        let mut late = s.held("the first holder", lock.clone().expire(lease).acquire());
        s.wait_free("the first holder's lease", &lock, lease + s.opts.slack);
        let next = s.held("the next holder", lock.clone().expire(LONG).acquire());
        match late.extend(LONG) {
            Err(e) if e.is_not_held() => {}
            Err(e) => panic!("{s}: extending an expired lock: expected NotHeld, got {e}"),
            Ok(()) => panic!("{s}: a holder whose lease ran out extended the next holder's lock"),
        }
        match late.release() {
            Err(e) if e.is_not_held() => {}
            Err(e) => panic!("{s}: releasing an expired lock: expected NotHeld, got {e}"),
            Ok(()) => panic!("{s}: a holder whose lease ran out released the next holder's lock"),
        }
        s.busy("after the late holder's release", lock.try_acquire());
        assert!(
            check_holds(&s, &*backend, &stored, next.token()),
            "{s}: the next holder lost its lock"
        );
        if let Err(e) = next.release() {
            panic!("{s}: the next holder could not release: {e}");
        }
    }
}

/// Whether `token` holds `key`, for stores that can tell; `true` otherwise
/// (the other checks of the behaviour cover them).
fn check_holds(
    s: &super::Scope,
    backend: &dyn crate::backend::Backend,
    key: &str,
    token: Token,
) -> bool {
    match backend.check(key, token) {
        None => true,
        Some(Ok(holds)) => holds,
        Some(Err(e)) => panic!("{s}: check failed: {e}"),
    }
}
