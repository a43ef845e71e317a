//! The conformance suite (`lock_runtime::testing`) for the async custom store
//! of the `lock_runtime::backend` documentation, copied here as it is written
//! there, and for the same store with the optional abilities named (an owner
//! check, wake-ups), so the runtime's derived blocking form, its wait loop
//! with wake-ups and its cancellation are held to every behaviour.
//! `cargo test conformance_custom_async` runs each behaviour as a test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lock_runtime::backend::{
    Abilities, Acquired, AsyncListing, AsyncOwnerCheck, AsyncStore, Attempt, BackendError,
    BoxFuture, Busy, Held, Namespace, Request, Signal, Token, WakeUps, Watch,
};
use lock_runtime::registry::AliasConfig;

// --- copied from the docs of `lock_runtime::backend` ---
#[derive(Default)]
struct Locks {
    // key -> (owner, acquired at, lease end)
    held: HashMap<String, (Token, Instant, Instant)>,
    fence: u64,
}

#[derive(Default)]
struct AsyncMapStore {
    locks: tokio::sync::Mutex<Locks>,
}

impl AsyncStore for AsyncMapStore {
    fn try_acquire<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        Box::pin(async move {
            let Locks { held: map, fence } = &mut *self.locks.lock().await;
            let now = Instant::now();
            if let Some(&(_, since, until)) = map.get(req.key) {
                let stale = req.steal_after.is_some_and(|s| now >= since + s);
                if now < until && !stale {
                    // Look again when the lease ends, or sooner if a thief may steal.
                    let free_at = req.steal_after.map_or(until, |s| until.min(since + s));
                    return Ok(Attempt::Busy(Busy::new(Some(free_at - now))));
                }
            }
            let lease = req.lease.unwrap_or(Duration::from_secs(30));
            map.insert(req.key.to_owned(), (req.token, now, now + lease));
            *fence += 1;
            Ok(Attempt::Acquired(Acquired::new(Some(*fence))))
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let map = &mut self.locks.lock().await.held;
            let owned = map
                .get(key)
                .is_some_and(|e| e.0 == token && Instant::now() < e.2);
            if owned {
                map.remove(key);
            }
            Ok(owned)
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let map = &mut self.locks.lock().await.held;
            match map.get_mut(key) {
                Some(e) if e.0 == token && Instant::now() < e.2 => {
                    e.2 = Instant::now() + lease;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }
}
// --- end of the copy ---

lock_runtime::conformance_tests!(conformance_custom_async, || AliasConfig::async_store(
    Arc::new(AsyncMapStore::default())
));

/// The same store with an owner check and wake-ups: a release notifies the
/// waiters of its key.
#[derive(Default)]
struct Watched {
    store: AsyncMapStore,
    waiters: Arc<Mutex<Vec<(u64, String, Signal)>>>,
    next: Mutex<u64>,
}

impl Watched {
    fn notify(&self, key: &str) {
        for (_, k, signal) in self.waiters.lock().unwrap().iter() {
            if k == key {
                signal.notify();
            }
        }
    }
}

impl AsyncStore for Watched {
    fn try_acquire<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        self.store.try_acquire(req)
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let released = self.store.release(key, token).await?;
            if released {
                self.notify(key);
            }
            Ok(released)
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.store.extend(key, token, lease)
    }

    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
            .async_owner_check(self)
            .wake_ups(self)
            .async_listing(self)
    }
}

impl AsyncOwnerCheck for Watched {
    fn holds<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let map = &self.store.locks.lock().await.held;
            Ok(map
                .get(key)
                .is_some_and(|e| e.0 == token && Instant::now() < e.2))
        })
    }
}

impl AsyncListing for Watched {
    fn holders<'a>(&'a self, _ns: &'a Namespace) -> BoxFuture<'a, Result<Vec<Held>, BackendError>> {
        Box::pin(async move {
            let map = &self.store.locks.lock().await.held;
            let now = Instant::now();
            Ok(map
                .iter()
                .filter(|(_, e)| now < e.2)
                .map(|(k, e)| Held::new(k.clone()).lease_left(Some(e.2 - now)))
                .collect())
        })
    }
}

/// Removes a waiter's entry when its watch ends.
struct Unwatch(Arc<Mutex<Vec<(u64, String, Signal)>>>, u64);

impl Drop for Unwatch {
    fn drop(&mut self) {
        self.0.lock().unwrap().retain(|w| w.0 != self.1);
    }
}

impl WakeUps for Watched {
    fn watch(&self, key: &str, signal: &Signal) -> Result<Watch, BackendError> {
        let id = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            *next
        };
        self.waiters
            .lock()
            .unwrap()
            .push((id, key.to_owned(), signal.clone()));
        signal.ready();
        Ok(Watch::new(Unwatch(Arc::clone(&self.waiters), id)))
    }
}

// It lists its locks but records no owners, which the listing behaviour
// requires.
lock_runtime::conformance_tests!(
    conformance_custom_async_watched,
    || {
        // A long poll interval: waiters that were not woken would be late.
        AliasConfig::async_store(Arc::new(Watched::default()))
            .poll_interval(Duration::from_secs(2))
    },
    ignore = { listing_names_the_holder: "the example store records no owners" },
);

#[test]
fn a_release_wakes_a_waiter_at_once() {
    use lock_runtime::Lock;
    let store = Arc::new(Watched::default());
    lock_runtime::registry::add(
        "watched",
        AliasConfig::async_store(Arc::clone(&store)).poll_interval(Duration::from_secs(30)),
    )
    .unwrap();
    let holder = Lock::new("k").alias("watched").acquire().unwrap();
    let waiter = std::thread::spawn(|| {
        let start = Instant::now();
        let guard = Lock::new("k").alias("watched").acquire().unwrap();
        (start.elapsed(), guard.fencing_token())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        store.waiters.lock().unwrap().len(),
        1,
        "the waiter watches the key"
    );
    holder.release().unwrap();
    let (waited, _) = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "woken by the release, not by a 30 s poll: waited {waited:?}"
    );
    assert!(
        store.waiters.lock().unwrap().is_empty(),
        "the watch ended with the wait"
    );
}

/// The store behind a client that needs a Tokio reactor (as tokio-postgres
/// or a Tokio socket would): every operation first sleeps on a Tokio timer,
/// which panics outside a Tokio runtime. Sync callers and callers on other
/// executors must still be served.
#[derive(Default)]
struct TokioBound(AsyncMapStore);

impl AsyncStore for TokioBound {
    fn try_acquire<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_micros(50)).await;
            self.0.try_acquire(req).await
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_micros(50)).await;
            self.0.release(key, token).await
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_micros(50)).await;
            self.0.extend(key, token, lease).await
        })
    }
}

lock_runtime::conformance_tests!(conformance_custom_async_tokio_bound, || {
    AliasConfig::async_store(Arc::new(TokioBound::default()))
});

#[test]
fn a_tokio_bound_store_serves_sync_callers_and_other_executors() {
    use lock_runtime::Lock;
    lock_runtime::registry::add(
        "tokio-bound",
        AliasConfig::async_store(Arc::new(TokioBound::default())),
    )
    .unwrap();
    // A plain thread, no runtime anywhere.
    let guard = Lock::new("k").alias("tokio-bound").acquire().unwrap();
    assert!(
        Lock::new("k")
            .alias("tokio-bound")
            .try_acquire()
            .unwrap()
            .is_none()
    );
    guard.release().unwrap();
    // An executor that is not Tokio.
    futures::executor::block_on(async {
        let guard = Lock::new("k")
            .alias("tokio-bound")
            .acquire_async()
            .await
            .unwrap();
        let busy = Lock::new("k")
            .alias("tokio-bound")
            .try_acquire_async()
            .await
            .unwrap();
        assert!(busy.is_none(), "held");
        guard.release_async().await.unwrap();
        let again = Lock::new("k")
            .alias("tokio-bound")
            .try_acquire_async()
            .await
            .unwrap();
        assert!(again.is_some(), "released");
    });
}

/// The docs' async store, whose attempts wait at a gate the test opens, so
/// that an acquisition can be cancelled while its attempt is out.
struct GatedAsyncStore {
    store: AsyncMapStore,
    gate: tokio::sync::watch::Sender<bool>,
    started: std::sync::atomic::AtomicUsize,
    answered: std::sync::atomic::AtomicUsize,
    releases: std::sync::atomic::AtomicUsize,
}

impl AsyncStore for GatedAsyncStore {
    fn try_acquire<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            self.started.fetch_add(1, SeqCst);
            let mut open = self.gate.subscribe();
            let _ = open.wait_for(|open| *open).await;
            let out = self.store.try_acquire(req).await;
            self.answered.fetch_add(1, SeqCst);
            out
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.releases
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.store.release(key, token)
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.store.extend(key, token, lease)
    }
}

/// On an executor that is not Tokio, an async store's attempt runs on the
/// runtime's I/O thread; an acquisition cancelled while it is out gives
/// back once, whatever the attempt wins: the attempt gives back a lock it
/// won for a caller that has left, and the runtime then sends nothing more
/// (it used to send a release by token as well).
#[test]
fn an_acquisition_cancelled_during_its_attempt_elsewhere_gives_back_once() {
    use std::future::Future;
    use std::sync::atomic::Ordering::SeqCst;
    use std::task::Context;

    use lock_runtime::Lock;
    let store = Arc::new(GatedAsyncStore {
        store: AsyncMapStore::default(),
        gate: tokio::sync::watch::Sender::new(true),
        started: Default::default(),
        answered: Default::default(),
        releases: Default::default(),
    });
    let config =
        AliasConfig::async_store(Arc::clone(&store)).poll_interval(Duration::from_secs(60));
    lock_runtime::registry::add("gated-async", config).unwrap();
    let until = |count: &std::sync::atomic::AtomicUsize, n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.load(SeqCst) < n {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Polls an acquisition once, so that its attempt goes out, drops it
    // while the store holds the attempt at its gate, then lets the attempt
    // end: the `n`th the store sees.
    let cancel_during_attempt = |key: &str, n: usize| {
        store.gate.send_replace(false);
        let lock = Lock::new(key.to_owned()).alias("gated-async");
        let mut acquiring = Box::pin(lock.acquire_async());
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(acquiring.as_mut().poll(&mut cx).is_pending());
        until(&store.started, n, "the attempt never reached the store");
        drop(acquiring);
        store.gate.send_replace(true);
        until(&store.answered, n, "the attempt never ended");
        std::thread::sleep(Duration::from_millis(200));
    };

    let held = Lock::new("k").alias("gated-async").acquire().unwrap();
    cancel_during_attempt("k", 2);
    assert_eq!(
        store.releases.load(SeqCst),
        0,
        "an attempt answered busy for a caller that left wins nothing to give back"
    );
    cancel_during_attempt("free", 3);
    until(
        &store.releases,
        1,
        "the lock won for nobody was never given back",
    );
    // Time for a second release, if one were sent.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        store.releases.load(SeqCst),
        1,
        "the attempt won the free lock for nobody, and was given back once"
    );
    let again = Lock::new("free")
        .alias("gated-async")
        .try_acquire()
        .unwrap();
    again
        .expect("the free lock is free again")
        .release()
        .unwrap();
    held.release().unwrap();
    assert_eq!(store.releases.load(SeqCst), 3, "one release for each guard");
}
