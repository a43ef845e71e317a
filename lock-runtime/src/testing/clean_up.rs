//! The stale-lock clean-up (the [`CleanUp`](crate::backend::CleanUp)
//! ability): it removes locks whose lease ended, never a live one, even
//! while others lock beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Conformance, PATIENCE, Scope};

/// Locks left to expire for the clean-up.
const STALE: usize = 5;

impl Scope {
    /// One clean-up of the alias, or `None` when its store has none.
    fn cleaned(&self, when: &str) -> Option<u64> {
        self.handle
            .clean_up(Duration::ZERO)
            .unwrap_or_else(|e| panic!("{self}: a clean-up {when} failed: {e}"))
    }
}

impl Conformance {
    /// With the clean-up ability
    /// ([`Alias::clean_up`](crate::registry::Alias::clean_up) answers
    /// `Some`): clean-ups run again and again while threads lock other keys
    /// remove the locks whose lease ended (at least those this behaviour
    /// left; a shared store may hold others' too), leave them free, and
    /// never take a live lock: neither a long-held one nor the lockers'. A
    /// store without the ability must say so every time (`Ok(None)`).
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).clean_up_spares_live_locks();
    /// ```
    pub fn clean_up_spares_live_locks(&self) {
        let s = Arc::new(self.scope("clean_up_spares_live_locks"));
        if s.cleaned("with nothing held").is_none() {
            let a = s.held("a", s.lock(&s.key("a")).acquire());
            assert!(
                s.cleaned("with a lock held").is_none(),
                "{s}: the store had no clean-up at first, then had one"
            );
            drop(a);
            return;
        }
        let lease = s.opts.lease;
        let stale: Vec<String> = (0..STALE).map(|i| s.key(&format!("stale-{i}"))).collect();
        for key in &stale {
            drop(s.held(
                "a lock left to expire",
                s.lock(key).expire(lease).delete_on_exit(false).acquire(),
            ));
        }
        let live = s.held(
            "a live lock",
            s.lock(&s.key("live")).expire(PATIENCE).acquire(),
        );
        thread::sleep(lease + s.opts.slack);

        let stop = Arc::new(AtomicBool::new(false));
        let lockers: Vec<_> = (0..2)
            .map(|i| {
                let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
                thread::spawn(move || {
                    let lock = s
                        .lock(&s.key(&format!("busy-{i}")))
                        .expire(PATIENCE)
                        .wait_for(PATIENCE);
                    while !stop.load(Ordering::Relaxed) {
                        let guard = s.held("a locker", lock.acquire());
                        thread::sleep(Duration::from_millis(1));
                        if let Err(e) = guard.release() {
                            panic!("{s}: a clean-up took a locker's live lock: {e}");
                        }
                    }
                })
            })
            .collect();
        let mut removed = 0;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            removed += s.cleaned("beside lockers").unwrap_or(0);
            thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        for t in lockers {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        assert!(
            removed >= STALE as u64,
            "{s}: the clean-ups removed {removed} locks; {STALE} had expired"
        );
        assert!(!live.is_lost(), "{s}: a clean-up took the live lock");
        if let Err(e) = live.release() {
            panic!("{s}: a clean-up took the live lock: {e}");
        }
        for key in &stale {
            drop(s.free("an expired lock after clean-ups", s.lock(key).try_acquire()));
        }
    }
}
