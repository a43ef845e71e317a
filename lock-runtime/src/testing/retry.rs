//! What a busy answer says about when to look again: the runtime's waiters
//! sleep until then, so a time past the lease end would make them late, and
//! one long before it would make them poll.

use std::time::Duration;

use crate::backend::{Attempt, Request};

use super::{Conformance, Scope};

impl Scope {
    /// The busy answer to an attempt on `key` (panics if it won or failed).
    fn busy_answer(&self, what: &str, req: &Request<'_>) -> Option<Duration> {
        match self.backend().try_acquire(req) {
            Ok(Attempt::Busy(b)) => b.retry_in,
            Ok(Attempt::Acquired(_)) => panic!("{self}: {what}: a held lock was granted"),
            Err(e) => panic!("{self}: {what}: try_acquire failed: {e}"),
        }
    }
}

impl Conformance {
    /// Through the [`Backend`](crate::backend::Backend) trait: an attempt on
    /// a lock held with a lease `L` is busy, and if it says when to look
    /// again ([`Busy::retry_in`](crate::backend::Busy)), that is no later
    /// than the lease's end and not much before it; with a steal age `S`
    /// shorter than the lease, no later than `S`. A store may say nothing
    /// (`None`); then waiters poll.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).busy_answers_say_when_to_look_again();
    /// ```
    pub fn busy_answers_say_when_to_look_again(&self) {
        let s = self.scope("busy_answers_say_when_to_look_again");
        let backend = s.backend();
        let key = s.store_key(&s.key("held"));
        let lease = Duration::from_secs(10);
        let holder = Request::new(&key).lease(Some(lease));
        match backend.try_acquire(&holder) {
            Ok(Attempt::Acquired(_)) => {}
            Ok(Attempt::Busy(_)) => panic!("{s}: a fresh key was busy"),
            Err(e) => panic!("{s}: try_acquire failed: {e}"),
        }
        if let Some(retry) = s.busy_answer("a second attempt", &Request::new(&key)) {
            // Slack for the round trips and for stores whose clocks count
            // whole seconds (memcached's TTLs).
            assert!(
                retry <= lease && retry > lease - Duration::from_secs(2),
                "{s}: a lock held for {lease:?} said to look again in {retry:?}"
            );
        }
        let steal = Duration::from_secs(3);
        let thief = Request::new(&key).steal_after(Some(steal));
        if let Some(retry) = s.busy_answer("a thief", &thief) {
            assert!(
                retry <= steal,
                "{s}: a thief with a {steal:?} steal age was told to look again in {retry:?}"
            );
        }
        match backend.release(&key, holder.token) {
            Ok(true) => {}
            Ok(false) => panic!("{s}: the holder's lock was gone"),
            Err(e) => panic!("{s}: release failed: {e}"),
        }
    }
}
