//! The conformance suite (`lock_runtime::testing`) for the blocking custom
//! store of the `lock_runtime::backend` documentation, copied
//! here as it is written there: the example a store author starts from must
//! itself be a correct store. `cargo test conformance_custom` runs each
//! behaviour as a test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lock_runtime::backend::{Acquired, Attempt, BackendError, Busy, Request, Store, Token};
use lock_runtime::registry::AliasConfig;

// --- copied from the docs of `lock_runtime::backend` ---
#[derive(Default)]
struct MapStore {
    // key -> (owner, acquired at, lease end)
    map: Mutex<HashMap<String, (Token, Instant, Instant)>>,
    fence: Mutex<u64>,
}

impl Store for MapStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let mut map = self.map.lock().unwrap();
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
        let mut fence = self.fence.lock().unwrap();
        *fence += 1;
        Ok(Attempt::Acquired(Acquired::new(Some(*fence))))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let mut map = self.map.lock().unwrap();
        let owned = map
            .get(key)
            .is_some_and(|e| e.0 == token && Instant::now() < e.2);
        if owned {
            map.remove(key);
        }
        Ok(owned)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let mut map = self.map.lock().unwrap();
        match map.get_mut(key) {
            Some(e) if e.0 == token && Instant::now() < e.2 => {
                e.2 = Instant::now() + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
// --- end of the copy ---

lock_runtime::conformance_tests!(conformance_custom, || AliasConfig::store(Arc::new(
    MapStore::default()
)));

/// The docs' store with the clean-up ability: deletes entries whose lease
/// ended more than `grace` ago.
#[derive(Default)]
struct SweptMapStore(MapStore);

impl Store for SweptMapStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        self.0.try_acquire(req)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.0.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.0.extend(key, token, lease)
    }

    fn abilities(&self) -> lock_runtime::backend::Abilities<'_> {
        lock_runtime::backend::Abilities::none()
            .clean_up(self)
            .listing(self)
    }
}

impl lock_runtime::backend::CleanUp for SweptMapStore {
    fn clean_up(&self, grace: Duration) -> Result<u64, BackendError> {
        let mut map = self.0.map.lock().unwrap();
        let before = map.len();
        let now = Instant::now();
        map.retain(|_, e| now < e.2 + grace);
        Ok((before - map.len()) as u64)
    }
}

impl lock_runtime::backend::Listing for SweptMapStore {
    fn holders(
        &self,
        _ns: &lock_runtime::backend::Namespace,
    ) -> Result<Vec<lock_runtime::backend::Held>, BackendError> {
        let now = Instant::now();
        let map = self.0.map.lock().unwrap();
        Ok(map
            .iter()
            .filter(|(_, e)| now < e.2)
            .map(|(k, e)| lock_runtime::backend::Held::new(k.clone()).lease_left(Some(e.2 - now)))
            .collect())
    }
}

// It lists its locks (so `Alias::list` and `show` page through them, cut
// by the runtime) but records no owners, which the behaviour requires.
lock_runtime::conformance_tests!(
    conformance_custom_swept,
    || AliasConfig::store(Arc::new(SweptMapStore::default())),
    ignore = { listing_names_the_holder: "the example store records no owners" },
);

#[test]
fn clean_up_deletes_only_what_ended_before_the_grace_period() {
    use lock_runtime::{Lock, registry};
    let store = Arc::new(SweptMapStore::default());
    registry::add("swept", AliasConfig::store(Arc::clone(&store))).unwrap();
    let alias = registry::alias("swept").unwrap();
    let lost = |k: &'static str| {
        Lock::new(k)
            .alias("swept")
            .expire(Duration::from_millis(20))
            .delete_on_exit(false)
            .acquire()
            .unwrap()
    };
    drop(lost("a"));
    drop(lost("b"));
    let _live = Lock::new("c").alias("swept").acquire().unwrap();
    assert_eq!(
        alias.clean_up(Duration::from_secs(60)).unwrap(),
        Some(0),
        "within the grace period"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        alias.clean_up(Duration::ZERO).unwrap(),
        Some(2),
        "the two that ended"
    );
    assert_eq!(store.0.map.lock().unwrap().len(), 1, "the live lock stays");
    let memory = registry::alias("default").unwrap();
    assert_eq!(
        memory.clean_up(Duration::ZERO).unwrap(),
        None,
        "nothing to clean"
    );
}

/// The docs' store, counting its calls.
#[derive(Default)]
struct CountedMapStore {
    store: MapStore,
    attempts: std::sync::atomic::AtomicUsize,
    releases: std::sync::atomic::AtomicUsize,
}

impl Store for CountedMapStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let out = self.store.try_acquire(req);
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        out
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.releases
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.store.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.store.extend(key, token, lease)
    }
}

/// Async waiters cancelled while they sleep between attempts cost the
/// store nothing: each had its busy answer, and an attempt takes the lock
/// or changes nothing, so there is nothing to give back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_crowd_of_sleeping_waiters_sends_the_store_no_release() {
    use std::sync::atomic::Ordering::SeqCst;

    use lock_runtime::{Lock, registry};
    const WAITERS: usize = 100;
    let store = Arc::new(CountedMapStore::default());
    let config = AliasConfig::store(Arc::clone(&store)).poll_interval(Duration::from_secs(60));
    registry::add("counted", config).unwrap();
    let held = Lock::new("k")
        .alias("counted")
        .acquire_async()
        .await
        .unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| tokio::spawn(Lock::new("k").alias("counted").acquire_async()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.attempts.load(SeqCst) < WAITERS + 1 {
        assert!(Instant::now() < deadline, "the waiters never tried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each has had its answer (busy until the holder's lease ends, 30 s
    // away) and sleeps.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.attempts.load(SeqCst), WAITERS + 1, "one look each");
    for w in &waiters {
        w.abort();
    }
    for w in waiters {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.releases.load(SeqCst),
        0,
        "a cancelled waiter that won nothing gives nothing back"
    );
    held.release_async().await.unwrap();
    assert_eq!(store.releases.load(SeqCst), 1);
    let again = Lock::new("k").alias("counted").try_acquire_async().await;
    assert!(
        again.unwrap().is_some(),
        "the lock is free for the next one"
    );
}

/// The docs' store, counting its calls, whose attempts wait at a gate the
/// test opens, so that an acquisition can be cancelled while its attempt is
/// out on the pool.
#[derive(Default)]
struct GatedMapStore {
    counted: CountedMapStore,
    closed: Mutex<bool>,
    opened: std::sync::Condvar,
    started: std::sync::atomic::AtomicUsize,
}

impl GatedMapStore {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

impl Store for GatedMapStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let closed = self.closed.lock().unwrap();
        drop(self.opened.wait_while(closed, |c| *c).unwrap());
        self.counted.try_acquire(req)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.counted.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.counted.extend(key, token, lease)
    }
}

/// An async acquisition cancelled while its attempt is out on the pool
/// gives back once, whatever the attempt turns out to win: the attempt
/// gives back a lock it won for a caller that has left, and the runtime
/// then sends nothing more (it used to send a release by token as well).
/// 20 cancelled waiters of a held lock: no release; a cancelled one whose
/// attempt wins a free lock: one release, and the lock is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquisition_cancelled_during_its_attempt_gives_back_once() {
    use std::sync::atomic::Ordering::SeqCst;

    use lock_runtime::{Lock, registry};
    const WAITERS: usize = 20;
    let store = Arc::new(GatedMapStore::default());
    let config = AliasConfig::store(Arc::clone(&store)).poll_interval(Duration::from_secs(60));
    registry::add("gated", config).unwrap();
    let until = |count: &std::sync::atomic::AtomicUsize, n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.load(SeqCst) < n {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    let held = Lock::new("k").alias("gated").acquire_async().await.unwrap();
    store.close();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| tokio::spawn(Lock::new("k").alias("gated").acquire_async()))
        .collect();
    until(&store.started, WAITERS + 1, "the waiters never tried");
    for w in &waiters {
        w.abort();
    }
    for w in waiters {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    store.open();
    until(
        &store.counted.attempts,
        WAITERS + 1,
        "the attempts never ended",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.counted.releases.load(SeqCst),
        0,
        "attempts answered busy for callers that left win nothing to give back"
    );

    store.close();
    let free = tokio::spawn(Lock::new("free").alias("gated").acquire_async());
    until(
        &store.started,
        WAITERS + 2,
        "the free lock's waiter never tried",
    );
    free.abort();
    assert!(free.await.unwrap_err().is_cancelled());
    store.open();
    until(
        &store.counted.attempts,
        WAITERS + 2,
        "its attempt never ended",
    );
    until(
        &store.counted.releases,
        1,
        "the lock won for nobody was never given back",
    );
    // Time for a second release, if one were sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.counted.releases.load(SeqCst),
        1,
        "the attempt won the free lock for nobody, and was given back once"
    );
    let again = Lock::new("free").alias("gated").try_acquire_async().await;
    let again = again.unwrap().expect("the free lock is free again");
    again.release_async().await.unwrap();
    held.release_async().await.unwrap();
    assert_eq!(
        store.counted.releases.load(SeqCst),
        3,
        "one release for each guard"
    );
}

/// The docs' store, which panics after taking a lock.
#[derive(Default)]
struct PanickingMapStore {
    store: MapStore,
    took: std::sync::atomic::AtomicBool,
}

impl Store for PanickingMapStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        if let Ok(Attempt::Acquired(_)) = self.store.try_acquire(req) {
            self.took.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        panic!("a store that panics after taking the lock");
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.store.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.store.extend(key, token, lease)
    }
}

/// A store that panics in an async acquisition's attempt, after taking the
/// lock, panics the caller's task; the runtime still gives back by token
/// what the attempt may have won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_panicking_in_an_attempt_strands_no_lock() {
    use lock_runtime::{Lock, registry};
    let store = Arc::new(PanickingMapStore::default());
    registry::add("panicking", AliasConfig::store(Arc::clone(&store))).unwrap();
    let acquiring = tokio::spawn(Lock::new("k").alias("panicking").acquire_async());
    assert!(acquiring.await.unwrap_err().is_panic());
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(store.took.load(std::sync::atomic::Ordering::SeqCst));
    // Its only key is the one the attempt took (under the runtime's
    // namespace).
    while !store.store.map.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the lock taken before the panic stayed held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
