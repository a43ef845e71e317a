//! The documented examples of django-cache-lock, one test each: `lock` as a
//! block and as a decorator (both waiting by default), `lock_model` on a
//! model's primary key or on another field (with `blocking=False`), the
//! settings (`DJANGOLOCK_PREFIX` -> the alias prefix, `DJANGOLOCK_SLEEP` ->
//! the alias poll interval, `DJANGOLOCK_RELEASEONDEL` -> release on drop),
//! and the backends it lists.
//!
//! Backends: its `locmem` cache is our embedded memory store (the alias
//! `default`) and `django-redis` / `django-redis-cache` are our Redis
//! backend, tested here against a private `redis-server`. Its `db`, `file`
//! and `memcached` caches have no counterpart in this crate, so they are not
//! tested; such a store would come in as a custom `Backend`
//! (see `seed_python_cachelock.rs`).

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use lock_runtime::backend::memory::MemoryBackend;
use lock_runtime::backend::{Attempt, Backend, BackendError, Request, Token};
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, lock};
use support::{RedisServer, held_on};

/// How long a blocked caller is watched to show that it is still waiting.
const STILL_WAITING: Duration = Duration::from_millis(150);
/// How long a caller may take to get a lock once it is free.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Runs `f` on a new thread; its result arrives on the returned channel.
fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

fn assert_still_waiting<T: std::fmt::Debug>(rx: &mpsc::Receiver<T>) {
    match rx.recv_timeout(STILL_WAITING) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("expected the caller to be waiting for the lock, got {other:?}"),
    }
}

// Seed: `with lock("global"): ...`: the block runs once the lock is free; a
// second block on the same name waits for the first (blocking by default).
#[test]
fn a_lock_block_waits_for_the_holder_by_default() {
    let first = Lock::new("djl-global").acquire().unwrap();
    let second = in_thread(|| {
        Lock::new("djl-global")
            .acquire()
            .map(|g| g.key().to_owned())
    });
    assert_still_waiting(&second);
    drop(first);
    let got = second.recv_timeout(PROMPTLY).expect("woken by the release");
    assert_eq!(got.unwrap(), "djl-global");
}

static FOO_INSIDE: AtomicUsize = AtomicUsize::new(0);
static FOO_MOST_INSIDE: AtomicUsize = AtomicUsize::new(0);

#[lock("djl-global-foo")]
fn foo() -> Result<(), LockError> {
    let inside = FOO_INSIDE.fetch_add(1, Ordering::SeqCst) + 1;
    FOO_MOST_INSIDE.fetch_max(inside, Ordering::SeqCst);
    std::thread::yield_now();
    FOO_INSIDE.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

// Seed: `@lock("global") def foo()`: callers of the decorated function run
// it one at a time, waiting their turn rather than failing.
#[test]
fn a_decorated_function_runs_one_caller_at_a_time() {
    let start = Arc::new(Barrier::new(4));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                (0..200).map(|_| foo()).collect::<Result<Vec<()>, _>>()
            })
        })
        .collect();
    for c in callers {
        assert_eq!(
            c.join().unwrap().expect("every call waited its turn").len(),
            200
        );
    }
    assert_eq!(FOO_MOST_INSIDE.load(Ordering::SeqCst), 1);
}

/// A model with a primary key and another field.
#[derive(Debug)]
struct Foo {
    id: u64,
    bar: String,
}

impl Foo {
    // `@lock_model` with no field: the lock is on the primary key.
    #[lock("djl-foo-<self.id>")]
    fn lock_pk(&self) -> Result<u64, LockError> {
        assert!(held_on("default", &format!("djl-foo-{}", self.id)));
        Ok(self.id)
    }

    // `@lock_model("bar", blocking=False)`.
    #[lock("djl-foo-bar-<self.bar>", wait = false)]
    fn lock_bar(&self) -> Result<String, LockError> {
        Ok(self.bar.clone())
    }
}

// A free function locking a model passed in: the same key as `lock_pk`.
#[lock("djl-foo-<model.id>", wait = false)]
fn save(model: &Foo) -> Result<u64, LockError> {
    Ok(model.id)
}

// Seed: `@lock_model` on a method: the lock is named after the instance's
// primary key, so calls on the same row wait for each other while calls on
// another row go ahead.
#[test]
fn lock_model_locks_the_primary_key() {
    let row = Arc::new(Foo {
        id: 1,
        bar: "a".into(),
    });
    assert_eq!(row.lock_pk().unwrap(), 1);
    assert!(!held_on("default", "djl-foo-1"), "released on return");

    let editing = Lock::new("djl-foo-1").acquire().unwrap();
    let same_row = {
        let row = Arc::clone(&row);
        in_thread(move || row.lock_pk())
    };
    let other_row = Foo {
        id: 2,
        bar: "b".into(),
    };
    assert_eq!(other_row.lock_pk().unwrap(), 2, "row 2 is not locked");
    assert_still_waiting(&same_row);
    drop(editing);
    let got = same_row
        .recv_timeout(PROMPTLY)
        .expect("woken by the release");
    assert_eq!(got.unwrap(), 1);
}

// Seed: `@lock_model("bar", blocking=False)`: the lock is on another field,
// and a call that finds it taken fails at once instead of waiting.
#[test]
fn lock_model_on_a_field_without_blocking_fails_at_once() {
    let row = Foo {
        id: 3,
        bar: "shared-bar".into(),
    };
    assert_eq!(row.lock_bar().unwrap(), "shared-bar");
    let _other = Lock::new("djl-foo-bar-shared-bar").acquire().unwrap();
    let started = Instant::now();
    match row.lock_bar() {
        Err(LockError::Busy { key, .. }) => assert_eq!(key, "djl-foo-bar-shared-bar"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(started.elapsed() < PROMPTLY, "it did not wait");
    assert_eq!(row.lock_pk().unwrap(), 3, "the primary key is another lock");
}

// Seed: `with lock_model(foo, blocking=False): nolock()`: the instance is
// locked around code that takes no lock itself, on the same key the
// decorated methods use.
#[test]
fn lock_model_as_a_block_shares_the_methods_lock() {
    let row = Foo {
        id: 4,
        bar: "c".into(),
    };
    let block = Lock::new(format!("djl-foo-{}", row.id)).wait(false);
    let inside = block.acquire().expect("the row is free");
    match save(&row) {
        Err(e) => assert!(e.is_busy(), "{e:?}"),
        Ok(id) => panic!("save ran inside another holder's block on row {id}"),
    }
    assert!(block.acquire().unwrap_err().is_busy());
    drop(inside);
    assert_eq!(save(&row).unwrap(), 4);
}

// Seed: `DJANGOLOCK_PREFIX` (default `"lock:"`): the prefix put before every
// key in the cache. Here it is set per alias: aliases over one store with
// different prefixes never see each other's locks; the same prefix does.
// Shared stores (Redis) default to `lock:`; the embedded default store is
// private to its aliases and needs none.
#[test]
fn the_prefix_setting_separates_keys_in_one_store() {
    assert_eq!(registry::alias("default").unwrap().prefix(), "");
    assert_eq!(
        AliasConfig::redis("redis://127.0.0.1").get_prefix(),
        "lock:"
    );
    let store = || AliasConfig::memory_named("djl-prefix-store");
    registry::add("djl-app-a", store().prefix("app-a:")).unwrap();
    registry::add("djl-app-b", store().prefix("app-b:")).unwrap();
    registry::add("djl-app-a-again", store().prefix("app-a:")).unwrap();

    let a = Lock::new("job").alias("djl-app-a").acquire().unwrap();
    assert_eq!(a.key(), "job", "the key is reported without its prefix");
    assert!(!held_on("djl-app-b", "job"), "another prefix: another lock");
    assert!(held_on("djl-app-a-again", "job"), "same store and prefix");
    drop(a);
    assert!(!held_on("djl-app-a-again", "job"));
}

/// A store that cannot wake waiters, like Django's cache backends: it
/// leaves `acquire` to the trait's default, which polls `try_acquire` at the
/// alias's poll interval. It counts the attempts.
struct PollingStore {
    inner: MemoryBackend,
    attempts: AtomicUsize,
}

impl Backend for PollingStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.inner.try_acquire(req)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.inner.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.inner.extend(key, token, lease)
    }
}

/// Attempts made by one waiter that gives up after 300 ms on a store that
/// polls every `interval`.
fn attempts_while_waiting(alias: &'static str, interval: Duration) -> usize {
    let store = Arc::new(PollingStore {
        inner: MemoryBackend::new(),
        attempts: AtomicUsize::new(0),
    });
    registry::add(
        alias,
        AliasConfig::custom(store.clone()).poll_interval(interval),
    )
    .unwrap();
    let _holder = Lock::new("djl-polled").alias(alias).acquire().unwrap();
    let before = store.attempts.load(Ordering::SeqCst);
    let err = Lock::new("djl-polled")
        .alias(alias)
        .wait_for(Duration::from_millis(300))
        .acquire()
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    store.attempts.load(Ordering::SeqCst) - before
}

// Seed: `DJANGOLOCK_SLEEP` (default 0.1 s): how long a blocked caller sleeps
// between attempts. Here it is the alias's poll interval (default 100 ms):
// a waiter on a store that cannot wake it tries again at that pace.
#[test]
fn the_sleep_setting_is_the_poll_interval() {
    assert_eq!(
        registry::alias("default").unwrap().poll_interval(),
        Duration::from_millis(100)
    );
    let fast = attempts_while_waiting("djl-poll-fast", Duration::from_millis(5));
    let slow = attempts_while_waiting("djl-poll-slow", Duration::from_millis(200));
    // 300 ms at 5 ms (±50%) is about 60 attempts; at 200 ms (±50%) at most 5.
    assert!(fast >= 10, "polling every 5 ms made only {fast} attempts");
    assert!(slow <= 5, "polling every 200 ms made {slow} attempts");
}

// Seed: `DJANGOLOCK_SLEEP`, continued: the embedded memory store (the
// `locmem` counterpart) does not sleep at all; the release wakes the waiter,
// so even an hour-long poll interval does not delay it.
#[test]
fn the_memory_store_wakes_waiters_instead_of_sleeping() {
    registry::add(
        "djl-slow-poll-memory",
        AliasConfig::memory_named("djl-slow-poll-memory").poll_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    let lock = Lock::new("djl-woken").alias("djl-slow-poll-memory");
    let holder = lock.acquire().unwrap();
    let waiter = {
        let lock = lock.clone();
        in_thread(move || lock.acquire().map(|_| Instant::now()))
    };
    assert_still_waiting(&waiter);
    let released = Instant::now();
    drop(holder);
    let got = waiter.recv_timeout(PROMPTLY).expect("woken by the release");
    let latency = got.unwrap() - released;
    assert!(latency < PROMPTLY, "took {latency:?} after the release");
}

#[derive(Debug)]
enum StepError {
    Lock(LockError),
    Failed,
}

impl From<LockError> for StepError {
    fn from(e: LockError) -> Self {
        StepError::Lock(e)
    }
}

fn check(fail: bool) -> Result<(), StepError> {
    if fail { Err(StepError::Failed) } else { Ok(()) }
}

#[lock("djl-release-<what>", wait = false)]
fn locked_step(what: &str, fail: bool, panic: bool) -> Result<(), StepError> {
    assert!(held_on("default", &format!("djl-release-{what}")));
    if panic {
        panic!("the body panicked");
    }
    check(fail)?;
    Ok(())
}

// Seed: `DJANGOLOCK_RELEASEONDEL` (default true): a lock is released when
// its object goes away. Here: when the guard drops, and when a locked
// function returns, returns early with an error, or panics.
#[test]
fn dropping_the_guard_releases_the_lock() {
    {
        let _guard = Lock::new("djl-release-guard").acquire().unwrap();
        assert!(held_on("default", "djl-release-guard"));
    }
    assert!(!held_on("default", "djl-release-guard"), "released on drop");

    locked_step("ok", false, false).unwrap();
    assert!(!held_on("default", "djl-release-ok"));
    assert!(matches!(
        locked_step("err", true, false),
        Err(StepError::Failed)
    ));
    assert!(!held_on("default", "djl-release-err"), "released on `?`");
    let other = Lock::new("djl-release-busy").acquire().unwrap();
    match locked_step("busy", false, false) {
        Err(StepError::Lock(e)) => assert!(e.is_busy(), "{e:?}"),
        other => panic!("expected the lock's error, got {other:?}"),
    }
    drop(other);
    let panicked = catch_unwind(AssertUnwindSafe(|| locked_step("panic", false, true)));
    assert!(panicked.is_err());
    assert!(
        !held_on("default", "djl-release-panic"),
        "released on panic"
    );

    // Turned off (`delete_on_exit(false)`), the lock outlives its guard
    // until its lease ends.
    drop(
        Lock::new("djl-release-kept")
            .expire(Duration::from_secs(30))
            .delete_on_exit(false)
            .acquire()
            .unwrap(),
    );
    assert!(
        held_on("default", "djl-release-kept"),
        "kept after the drop"
    );
}

impl Foo {
    #[lock("foo-<self.id>", alias = "djl-redis", wait = false)]
    fn lock_in_redis(&self, server: &RedisServer) -> Result<i64, LockError> {
        let key = format!("djl:foo-{}", self.id);
        assert!(server.exists(&key), "the lock is the key `{key}` in Redis");
        Ok(server.pttl(&key))
    }
}

// Seed: the `django-redis` backend: the same model lock kept in Redis, under
// the configured prefix, with a lease; released on return; a non-blocking
// call on a row locked by another client fails, and a blocking one waits
// until that client lets go.
#[test]
fn lock_model_on_the_redis_backend() {
    let server = RedisServer::start();
    registry::add(
        "djl-redis",
        AliasConfig::from_url(&server.url()).unwrap().prefix("djl:"),
    )
    .unwrap();
    let row = Foo {
        id: 5,
        bar: "d".into(),
    };
    let pttl = row.lock_in_redis(&server).unwrap();
    assert!(pttl > 0, "the lock has a lease (PTTL {pttl})");
    assert!(!server.exists("djl:foo-5"), "released on return");

    let other_client = Lock::new("foo-5").alias("djl-redis").acquire().unwrap();
    assert!(row.lock_in_redis(&server).unwrap_err().is_busy());
    let blocking = in_thread(|| {
        Lock::new("foo-5")
            .alias("djl-redis")
            .wait_for(PROMPTLY)
            .acquire()
            .map(|g| g.release())
    });
    assert_still_waiting(&blocking);
    other_client.release().unwrap();
    let got = blocking
        .recv_timeout(PROMPTLY * 2)
        .expect("the waiter ended");
    got.expect("it took the lock once released")
        .expect("and gave it back");
    assert!(!server.exists("djl:foo-5"));
}
