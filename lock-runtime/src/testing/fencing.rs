//! Fencing tokens: strictly increasing per key over every acquisition, for
//! stores that give them; consistently absent for stores that give none.

use std::sync::{Arc, Mutex};
use std::thread;

use super::{Conformance, PATIENCE, runtime};

impl Conformance {
    /// Every acquisition of one key gets a fencing token strictly greater
    /// than all earlier ones: across holders that release (sync and async),
    /// across a lease that ran out, across a takeover by `steal_after`, and
    /// in the order contending threads actually held the lock, through one
    /// alias or two opened separately on the same store. A store that
    /// gives no token for the first acquisition must give none for any.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).fencing_strictly_increases();
    /// ```
    pub fn fencing_strictly_increases(&self) {
        let s = Arc::new(self.scope("fencing_strictly_increases"));
        let lease = s.opts.lease;
        let key = s.key("fence");
        let lock = s.lock(&key);
        // (how the holder got the lock, its token), in holding order.
        let mut seen: Vec<(&str, Option<u64>)> = Vec::new();

        for _ in 0..3 {
            let guard = s.held("a holder", lock.acquire());
            seen.push(("a holder after a release", guard.fencing_token()));
            if let Err(e) = guard.release() {
                panic!("{s}: a holder could not release: {e}");
            }
        }
        let rt = runtime(&s);
        rt.block_on(async {
            for _ in 0..2 {
                let guard = s.held("an async holder", lock.acquire_async().await);
                seen.push(("an async holder", guard.fencing_token()));
                if let Err(e) = guard.release_async().await {
                    panic!("{s}: an async holder could not release: {e}");
                }
            }
        });

        let expired = s.held(
            "a holder whose lease runs out",
            lock.clone().expire(lease).acquire(),
        );
        seen.push(("a holder whose lease runs out", expired.fencing_token()));
        s.wait_free("the lease", &lock, lease + s.opts.slack);
        let after = s.held("the holder after an expiry", lock.acquire());
        seen.push(("the holder after an expiry", after.fencing_token()));
        assert!(
            after.fencing_token() > expired.fencing_token() || after.fencing_token().is_none(),
            "{s}: the holder after an expiry got {:?}, not above the expired holder's {:?}",
            after.fencing_token(),
            expired.fencing_token()
        );
        drop(expired);

        // `after` is unleased or renewed: it ages until a thief takes it.
        thread::sleep(lease + s.early());
        let thief = s.held(
            "a thief",
            lock.clone().steal_after(lease).wait_for(PATIENCE).acquire(),
        );
        seen.push(("a thief", thief.fencing_token()));
        drop(after);
        drop(thief);

        // Under contention the tokens come in the order the lock was held,
        // also between holders that reach the store through separately
        // opened aliases (other connections, as from other processes),
        // whose requests may race at the store.
        let twin = s.twin();
        let contended = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (s, contended) = (Arc::clone(&s), Arc::clone(&contended));
                let lock = match i % 2 {
                    0 => lock.clone(),
                    _ => lock.clone().alias(twin.clone()),
                }
                .wait_for(PATIENCE);
                thread::spawn(move || {
                    for _ in 0..10 {
                        let guard = s.held("a contending thread", lock.acquire());
                        let mut order = contended.lock().unwrap_or_else(|p| p.into_inner());
                        order.push(guard.fencing_token());
                        // Released while `order` is locked, so that pushes
                        // follow the holding order.
                        drop(guard);
                    }
                })
            })
            .collect();
        for t in threads {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let contended = contended.lock().unwrap_or_else(|p| p.into_inner());
        seen.extend(contended.iter().map(|t| ("a contending thread", *t)));

        let gives_tokens = seen[0].1.is_some();
        for (i, (how, token)) in seen.iter().enumerate() {
            assert_eq!(
                token.is_some(),
                gives_tokens,
                "{s}: acquisition {i} ({how}) got {token:?}, but the first got {:?}: a store gives every acquisition a token or none",
                seen[0].1
            );
            if i > 0 && gives_tokens {
                let (prev_how, prev) = seen[i - 1];
                assert!(
                    *token > prev,
                    "{s}: acquisition {i} ({how}) got {token:?}, not above {prev:?} of the one before ({prev_how}); all: {seen:?}"
                );
            }
        }
    }
}
