//! The documented examples of django_toolkit's `concurrent.locks`, one test
//! each: `LocalMemoryLock` and its `active` flag, `CacheLock` with its
//! arguments (`key`, `cache_alias`, `expire`, `raise_exception`,
//! `delete_on_exit`). django_toolkit never waits for a lock, so every lock
//! here is taken with `wait = false`; its `LockActiveError` is our
//! `LockError::Busy`, and its `lock.active` is whether `try_acquire` got a
//! guard.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, lock};
use support::{RedisServer, redis_alias};
// django_toolkit's `lock.active`: whether the key is taken.
use support::held_on as active;

/// How long a waiting acquisition may take when the lock frees itself.
const PATIENCE: Duration = Duration::from_secs(5);

// Seed: `with LocalMemoryLock() as lock: assert lock.active is True`: an
// in-memory lock is active inside the block; entering it again while active
// raises `LockActiveError`; leaving the block makes it inactive.
#[test]
fn local_memory_lock_is_active_inside_and_refuses_a_second_entry() {
    let lock = Lock::new("tk-local-memory").wait(false);
    let inside = lock.acquire().expect("inactive at first");
    assert!(active("default", "tk-local-memory"));
    assert!(lock.try_acquire().unwrap().is_none());
    match lock.acquire() {
        Err(LockError::Busy { key, .. }) => assert_eq!(key, "tk-local-memory"),
        other => panic!("expected Busy (LockActiveError), got {other:?}"),
    }
    drop(inside);
    assert!(!active("default", "tk-local-memory"), "inactive on exit");
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[lock("tk-key", wait = false)]
fn run() -> Result<bool, LockError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(active("default", "tk-key"))
}

// Seed: `with CacheLock(key='key') as lock: assert lock.active`: the lock is
// active inside; by default a lock that is already active raises
// `LockActiveError` rather than waiting.
#[test]
fn cache_lock_raises_when_already_active() {
    assert!(run().unwrap(), "active inside the body");
    assert!(!active("default", "tk-key"), "released on exit");

    let _elsewhere = Lock::new("tk-key").acquire().unwrap();
    let runs = RUNS.load(Ordering::SeqCst);
    let started = Instant::now();
    let err = run().unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    assert!(started.elapsed() < PATIENCE, "it did not wait");
    assert_eq!(RUNS.load(Ordering::SeqCst), runs, "body not run");
}

#[lock("tk-aliased", alias = "tk-locks", expire = 10, wait = false)]
fn run_in_lock_cache() -> Result<(bool, bool), LockError> {
    Ok((
        active("tk-locks", "tk-aliased"),
        active("default", "tk-aliased"),
    ))
}

// Seed: `CacheLock(key='key', cache_alias='lock', expire=10)`: the lock is
// kept in another configured cache, and expires after 10 seconds. Without
// `expire`, the cache's own default timeout applies: here the alias's
// default lease (none for a memory store: held until released).
#[test]
fn cache_lock_with_an_alias_and_an_expiry() {
    registry::add(
        "tk-locks",
        AliasConfig::memory_named("tk-locks").default_lease(Duration::from_secs(5)),
    )
    .unwrap();
    assert_eq!(
        run_in_lock_cache().unwrap(),
        (true, false),
        "held in `tk-locks`, not in `default`"
    );

    let guard = Lock::new("tk-aliased")
        .alias("tk-locks")
        .expire(Duration::from_secs(10))
        .wait(false)
        .acquire()
        .unwrap();
    assert_eq!(guard.alias(), "tk-locks");
    let left = guard.remaining().expect("a lock with `expire` has a lease");
    assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10));
    drop(guard);

    let aliased = Lock::new("tk-aliased").alias("tk-locks").acquire().unwrap();
    let left = aliased.remaining().expect("the alias's default lease");
    assert!(left <= Duration::from_secs(5), "{left:?}");
    let plain = Lock::new("tk-unexpiring").acquire().unwrap();
    assert_eq!(plain.remaining(), None, "`default` locks have no lease");
}

// Seed: `expire`, continued: a lock whose time is up is no longer active,
// even if its holder never left the block; the late holder then finds it
// was not its lock any more.
#[test]
fn an_expired_lock_is_no_longer_active() {
    let forgotten = Lock::new("tk-expiring")
        .expire(Duration::from_millis(200))
        .acquire()
        .unwrap();
    assert!(active("default", "tk-expiring"));
    // `lost` fires a little before the store's expiry (a margin for clock
    // drift), so the next holder waits for the store to let go.
    futures::executor::block_on(forgotten.lost());
    assert!(forgotten.is_lost());
    let next = Lock::new("tk-expiring")
        .wait_for(PATIENCE)
        .acquire()
        .expect("free once expired");
    assert!(forgotten.release().unwrap_err().is_not_held());
    assert!(active("default", "tk-expiring"), "the new holder kept it");
    drop(next);
}

static QUIET_RUNS: AtomicUsize = AtomicUsize::new(0);

#[lock("tk-quiet", wait = false, raise = false)]
fn run_quietly() -> &'static str {
    QUIET_RUNS.fetch_add(1, Ordering::SeqCst);
    "did some stuff"
}

// Seed: `CacheLock(key='key', raise_exception=False)`: no exception when the
// lock is already active; `lock.active` says whether this block got it, so
// the code can do one thing or the other. Here `try_acquire` gives
// `Some(guard)` or `None`, and `raise = false` turns the function's result
// into `Option`.
#[test]
fn cache_lock_without_raising_reports_whether_it_is_active() {
    let first = Lock::new("tk-quiet").try_acquire().unwrap();
    assert!(first.is_some(), "the first block is active");
    let second = Lock::new("tk-quiet").try_acquire().unwrap();
    assert!(
        second.is_none(),
        "the second block is not, and did not fail"
    );

    let runs = QUIET_RUNS.load(Ordering::SeqCst);
    assert_eq!(run_quietly(), None, "not active: the body is skipped");
    assert_eq!(QUIET_RUNS.load(Ordering::SeqCst), runs);
    drop(first);
    assert_eq!(run_quietly(), Some("did some stuff"));
    assert_eq!(QUIET_RUNS.load(Ordering::SeqCst), runs + 1);
}

static DIGESTS: AtomicUsize = AtomicUsize::new(0);

#[lock("tk-digest", expire = "300ms", delete_on_exit = false, wait = false)]
fn send_digest() -> Result<usize, LockError> {
    Ok(DIGESTS.fetch_add(1, Ordering::SeqCst) + 1)
}

// Seed: `delete_on_exit=False`: leaving the block does not delete the key;
// the lock stays active until it expires, so the work runs at most once per
// expiry period.
#[test]
fn without_delete_on_exit_the_lock_stays_until_it_expires() {
    let started = Instant::now();
    assert_eq!(send_digest().unwrap(), 1);
    assert!(active("default", "tk-digest"), "kept after the body");
    assert!(send_digest().unwrap_err().is_busy(), "still within 300 ms");
    assert_eq!(DIGESTS.load(Ordering::SeqCst), 1);

    let after_expiry = Lock::new("tk-digest")
        .wait_for(PATIENCE)
        .acquire()
        .expect("it frees itself when it expires");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "freed after {waited:?}, before its 300 ms expiry"
    );
    drop(after_expiry);
    assert_eq!(send_digest().unwrap(), 2, "runs again in the next period");
}

#[lock("tk-redis-key", alias = "tk-redis", expire = 10, wait = false)]
fn expiring_in_redis(server: &RedisServer) -> Result<i64, LockError> {
    Ok(server.pttl("lock:tk-redis-key"))
}

#[lock(
    "tk-redis-digest",
    alias = "tk-redis",
    expire = "400ms",
    delete_on_exit = false,
    wait = false
)]
fn digest_in_redis() -> Result<(), LockError> {
    Ok(())
}

// Seed: the same arguments with a shared cache (Redis): `expire=10` is the
// key's time to live, `delete_on_exit=False` leaves the key in the cache
// until that time is up, and another client's lock is refused meanwhile.
#[test]
fn cache_lock_on_redis_expires_and_persists() {
    let server = RedisServer::start();
    redis_alias(&server, "tk-redis");

    let pttl = expiring_in_redis(&server).unwrap();
    assert!(pttl > 9_000 && pttl <= 10_000, "PTTL {pttl}");
    assert!(!server.exists("lock:tk-redis-key"), "deleted on exit");

    let started = Instant::now();
    digest_in_redis().unwrap();
    let pttl = server.pttl("lock:tk-redis-digest");
    assert!(pttl > 0 && pttl <= 400, "kept with its TTL: PTTL {pttl}");
    assert!(digest_in_redis().unwrap_err().is_busy());
    let after_expiry = Lock::new("tk-redis-digest")
        .alias("tk-redis")
        .wait_for(PATIENCE)
        .acquire()
        .expect("it frees itself when it expires");
    assert!(started.elapsed() >= Duration::from_millis(390));
    after_expiry.release().unwrap();
    assert!(!server.exists("lock:tk-redis-digest"));
}
