//! Isolation scopes (`testing::isolate`): tests of one binary that lock the
//! same keys and reconfigure aliases never see each other, the threads and
//! tasks a test spawns see its scope, and the scope's virtual clock ends
//! leases without sleeping.
//!
//! Every test here isolates: a test that did not would see whichever scope
//! is active. Where a test needs locks "outside" a scope it opens a scope
//! inside its own, which stands for the process (the doc tests of
//! `isolate`, each in a process of its own, check the process itself).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lock_runtime::backend::Namespace;
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::testing::isolate;
use lock_runtime::{Lock, LockError, lock, once};
use support::{AppError, RedisServer, held, held_on, is_busy, redis_alias};

const HOUR: Duration = Duration::from_secs(3600);

/// Well above what the steps below take, far below an hour.
const PROMPT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Tests of one binary, one key
// ---------------------------------------------------------------------------

/// What each of the tests below does with the same key: take it without
/// waiting, keep it a moment while the others run, and leave it held (the
/// guard leaks), which the next test must not notice.
fn take_the_shared_key() {
    let _scope = isolate();
    let guard = Lock::new("isolation-shared")
        .wait(false)
        .acquire()
        .expect("no other test's lock is visible");
    assert!(held("isolation-shared"));
    std::thread::sleep(Duration::from_millis(20));
    std::mem::forget(guard);
}

#[test]
fn one_key_in_many_tests_first() {
    take_the_shared_key();
}

#[test]
fn one_key_in_many_tests_second() {
    take_the_shared_key();
}

#[test]
fn one_key_in_many_tests_third() {
    take_the_shared_key();
}

#[lock("isolation-macro-shared", wait = false)]
fn locked_report() -> Result<bool, AppError> {
    Ok(held("isolation-macro-shared"))
}

#[once("isolation-once-shared", expire = "1h", delete_on_exit = false)]
fn nightly() -> u32 {
    7
}

#[test]
fn macros_in_many_tests_first() {
    let _scope = isolate();
    assert!(locked_report().unwrap(), "ran under its lock");
    assert_eq!(nightly(), Some(7), "no earlier test's run is visible");
    assert_eq!(nightly(), None, "held for the hour in this scope");
}

#[test]
fn macros_in_many_tests_second() {
    let _scope = isolate();
    let _other = Lock::new("isolation-macro-shared").acquire().unwrap();
    assert!(is_busy(locked_report()), "this scope's lock is seen");
    assert_eq!(nightly(), Some(7), "no earlier test's run is visible");
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn reconfiguring_default_stays_in_the_scope() {
    let default_store = {
        let _scope = isolate();
        registry::configure([
            ("default", AliasConfig::memory().prefix("scoped:")),
            ("isolation-extra", AliasConfig::memory()),
        ])
        .unwrap();
        assert_eq!(registry::aliases(), ["default", "isolation-extra"]);
        let default = registry::alias("default").unwrap();
        assert_eq!(default.prefix(), "scoped:");
        registry::add("isolation-added", AliasConfig::memory()).unwrap();
        Arc::clone(default.backend())
    };
    // After the scope, whatever is active (the process, or another test's
    // scope) has none of it.
    let names = registry::aliases();
    assert!(!names.contains(&"isolation-extra".to_owned()), "{names:?}");
    assert!(!names.contains(&"isolation-added".to_owned()), "{names:?}");
    assert!(!Arc::ptr_eq(
        registry::alias("default").unwrap().backend(),
        &default_store
    ));

    let _next = isolate();
    let default = registry::alias("default").unwrap();
    assert_eq!(
        default.prefix(),
        "",
        "the next scope starts from the process's"
    );
    assert!(!Arc::ptr_eq(default.backend(), &default_store));
    assert!(matches!(
        registry::alias("isolation-extra"),
        Err(LockError::UnknownAlias { .. })
    ));
}

#[test]
fn aliases_sharing_a_store_share_the_scopes_store() {
    let _outer = isolate();
    registry::add(
        "isolation-share-a",
        AliasConfig::memory_named("isolation-share"),
    )
    .unwrap();
    registry::add(
        "isolation-share-b",
        AliasConfig::memory_named("isolation-share"),
    )
    .unwrap();
    let _outside = Lock::new("k").alias("isolation-share-a").acquire().unwrap();

    let _inner = isolate();
    assert!(!held_on("isolation-share-a", "k"), "a fresh store");
    let _a = Lock::new("k").alias("isolation-share-a").acquire().unwrap();
    assert!(
        held_on("isolation-share-b", "k"),
        "b names the same store as a, in the scope too"
    );
    assert!(!held("k"), "default is another store");
}

#[test]
fn nested_scopes_end_in_any_order() {
    let outer = isolate();
    registry::add("isolation-nested-outer", AliasConfig::memory()).unwrap();
    let inner = isolate();
    assert!(
        registry::alias("isolation-nested-outer").is_ok(),
        "copied from the outer scope"
    );
    registry::add("isolation-nested-inner", AliasConfig::memory()).unwrap();
    drop(outer);
    assert!(
        registry::alias("isolation-nested-inner").is_ok(),
        "the inner scope is still active"
    );
    drop(inner);
    let names = registry::aliases();
    assert!(
        !names.contains(&"isolation-nested-outer".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"isolation-nested-inner".to_owned()),
        "{names:?}"
    );
}

#[test]
fn a_panicking_test_frees_the_next_scope() {
    let panicked = std::thread::spawn(|| {
        let _scope = isolate();
        registry::add("isolation-panicked", AliasConfig::memory()).unwrap();
        panic!("the test fails while isolated");
    })
    .join();
    assert!(panicked.is_err());
    let started = Instant::now();
    let _scope = isolate();
    assert!(started.elapsed() < PROMPT);
    assert!(registry::alias("isolation-panicked").is_err());
}

#[test]
fn another_threads_scope_waits_for_the_active_one() {
    let scope = isolate();
    let entered = Arc::new(AtomicUsize::new(0));
    let other = std::thread::spawn({
        let entered = Arc::clone(&entered);
        move || {
            let _scope = isolate();
            entered.fetch_add(1, Ordering::SeqCst);
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(entered.load(Ordering::SeqCst), 0, "waits while ours lives");
    drop(scope);
    other.join().unwrap();
    assert_eq!(entered.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Threads and tasks
// ---------------------------------------------------------------------------

#[test]
fn threads_spawned_in_a_scope_see_it() {
    let _scope = isolate();
    registry::add("isolation-threads", AliasConfig::memory()).unwrap();
    let store = Arc::clone(registry::alias("default").unwrap().backend());
    let _guard = Lock::new("isolation-threads-k").acquire().unwrap();
    let seen = std::thread::spawn(move || {
        let same_store = Arc::ptr_eq(registry::alias("default").unwrap().backend(), &store);
        let alias_known = registry::alias("isolation-threads").is_ok();
        (same_store, alias_known, held("isolation-threads-k"))
    })
    .join()
    .unwrap();
    assert_eq!(seen, (true, true, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_spawned_in_a_scope_see_it() {
    let _scope = isolate();
    registry::add("isolation-tasks", AliasConfig::memory()).unwrap();
    let store = Arc::clone(registry::alias("default").unwrap().backend());
    let _guard = Lock::new("isolation-tasks-k")
        .acquire_async()
        .await
        .unwrap();
    let task = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let same_store = Arc::ptr_eq(registry::alias("default").unwrap().backend(), &store);
            let busy = Lock::new("isolation-tasks-k")
                .alias("isolation-tasks")
                .try_acquire_async()
                .await
                .map(|g| g.is_some());
            let default_busy = Lock::new("isolation-tasks-k")
                .try_acquire_async()
                .await
                .unwrap()
                .is_none();
            (same_store, busy.is_ok(), default_busy)
        }
    });
    assert_eq!(task.await.unwrap(), (true, true, true));
    let blocking = tokio::task::spawn_blocking(move || {
        Arc::ptr_eq(registry::alias("default").unwrap().backend(), &store)
    });
    assert!(blocking.await.unwrap());
}

// ---------------------------------------------------------------------------
// Aliases named at compile time
// ---------------------------------------------------------------------------

#[lock("isolation-named-k", alias = "isolation-named", wait = false)]
fn on_the_named_alias() -> Result<bool, AppError> {
    Ok(held_on("isolation-named", "isolation-named-k"))
}

#[test]
fn a_lock_attribute_on_an_alias_uses_the_scopes_store() {
    // The outer scope stands for the process that configured the alias.
    let _outer = isolate();
    registry::add(
        "isolation-named",
        AliasConfig::memory_named("isolation-named"),
    )
    .unwrap();
    let outside = Lock::new("isolation-named-k")
        .alias("isolation-named")
        .acquire()
        .unwrap();
    assert!(is_busy(on_the_named_alias()));
    {
        let _scope = isolate();
        assert!(
            on_the_named_alias().unwrap(),
            "ran under the scope's lock, on the scope's store"
        );
        assert!(!held_on("isolation-named", "isolation-named-k"), "released");
    }
    assert!(
        is_busy(on_the_named_alias()),
        "the outer lock is still there"
    );
    drop(outside);
    assert!(on_the_named_alias().unwrap());
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

#[test]
fn a_scope_keeps_redis_keys_apart() {
    let server = RedisServer::start();
    // The lock as an unisolated alias, in this process or another, keeps it.
    let unisolated = Namespace::new("lock:").key("invoice-7".into()).into_owned();
    server.set(&unisolated, "another process");

    let outer = isolate();
    let alias = redis_alias(&server, "isolation-redis");
    let outer_prefix = registry::alias(alias).unwrap().prefix().to_owned();
    assert_eq!(outer_prefix, format!("lock:{}:", outer.id()));
    let outside = Lock::new("invoice-7")
        .alias(alias)
        .wait(false)
        .acquire()
        .unwrap();
    {
        let inner = isolate();
        let prefix = registry::alias(alias).unwrap().prefix().to_owned();
        assert_eq!(prefix, format!("lock:{}:", inner.id()));
        let guard = Lock::new("invoice-7")
            .alias(alias)
            .wait(false)
            .acquire()
            .expect("the same key outside the scope is another key");
        let inner_key = Namespace::new(&prefix).key("invoice-7".into()).into_owned();
        let outer_key = Namespace::new(&outer_prefix)
            .key("invoice-7".into())
            .into_owned();
        let keys = server.keys("*invoice-7*");
        for key in [&unisolated, &inner_key, &outer_key] {
            assert!(keys.contains(key), "{key} in {keys:?}");
        }
        assert!(held_on(alias, "invoice-7"));
        guard.release().unwrap();
        assert!(!server.exists(&inner_key));
    }
    assert!(held_on(alias, "invoice-7"), "the outer lock is untouched");
    outside.release().unwrap();
    assert_eq!(
        server.get(&unisolated).as_deref(),
        Some("another process"),
        "the unisolated lock is untouched"
    );
}

// ---------------------------------------------------------------------------
// The virtual clock
// ---------------------------------------------------------------------------

#[test]
fn an_hour_lease_is_free_after_advancing_an_hour() {
    let scope = isolate();
    let started = Instant::now();
    let guard = Lock::new("isolation-hour").expire(HOUR).acquire().unwrap();
    assert!(held("isolation-hour"));
    scope.clock().advance(HOUR - Duration::from_secs(60));
    assert!(held("isolation-hour"), "a minute is left");
    scope.clock().advance(Duration::from_secs(60));
    let next = Lock::new("isolation-hour")
        .wait(false)
        .acquire()
        .expect("the lease ran out");
    assert!(guard.release().unwrap_err().is_not_held());
    next.release().unwrap();
    assert!(started.elapsed() < PROMPT, "no sleeping");
}

#[lock(
    "isolation-digest",
    expire = "1h",
    delete_on_exit = false,
    wait = false
)]
fn send_digest() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn a_lock_attributes_lease_ends_on_the_virtual_clock() {
    let scope = isolate();
    send_digest().unwrap();
    assert!(is_busy(send_digest()), "kept for the hour");
    scope.clock().advance(HOUR);
    send_digest().expect("an hour later");
}

#[test]
fn steal_after_counts_on_the_virtual_clock() {
    let scope = isolate();
    let _stuck = Lock::new("isolation-steal").acquire().unwrap();
    let thief = Lock::new("isolation-steal").steal_after(HOUR).wait(false);
    assert!(thief.acquire().unwrap_err().is_busy());
    scope.clock().advance(HOUR);
    let _stolen = thief.acquire().expect("old enough to steal");
}

#[test]
fn a_parked_waiter_wakes_when_the_clock_is_advanced() {
    let scope = isolate();
    // A store the test can ask how many wait, on the scope's clock.
    let store = scope.clock().memory_store();
    // No prefix: the store keeps the lock's key as it is.
    let cfg = AliasConfig::custom(store.clone()).prefix("");
    registry::add("isolation-parked", cfg).unwrap();
    let lock = Lock::new("isolation-parked-k").alias("isolation-parked");
    let _held = lock.clone().expire(HOUR).acquire().unwrap();
    let waiter = std::thread::spawn({
        let lock = lock.clone().wait_for(2 * HOUR);
        move || lock.acquire().map(|g| g.key().to_owned())
    });
    while store.waiting("isolation-parked-k") == 0 {
        assert!(!waiter.is_finished());
        std::thread::yield_now();
    }
    let advanced = Instant::now();
    scope.clock().advance(HOUR);
    assert_eq!(waiter.join().unwrap().unwrap(), "isolation-parked-k");
    assert!(advanced.elapsed() < PROMPT, "woken by the advance");
}

#[tokio::test]
async fn a_waiting_task_wakes_when_the_clock_is_advanced() {
    let scope = isolate();
    let store = scope.clock().memory_store();
    let cfg = AliasConfig::custom(store.clone()).prefix("");
    registry::add("isolation-task-parked", cfg).unwrap();
    let lock = Lock::new("isolation-task-parked-k").alias("isolation-task-parked");
    let _held = lock.clone().expire(HOUR).acquire_async().await.unwrap();
    let waiter = tokio::spawn(lock.clone().wait_for(2 * HOUR).acquire_async());
    while store.waiting("isolation-task-parked-k") == 0 {
        tokio::task::yield_now().await;
    }
    let advanced = Instant::now();
    scope.clock().advance(HOUR);
    assert!(waiter.await.unwrap().is_ok());
    assert!(advanced.elapsed() < PROMPT, "woken by the advance");
}

#[test]
fn a_fresh_scope_starts_on_the_real_clock() {
    let first = isolate();
    first.clock().advance(HOUR);
    drop(first);
    let scope = isolate();
    assert_eq!(scope.clock().advanced(), Duration::ZERO);
    let _guard = Lock::new("isolation-clock-fresh")
        .expire(HOUR)
        .acquire()
        .unwrap();
    assert!(held("isolation-clock-fresh"));
}
