//! Each option of the attributes reaches the lock: `alias` picks the
//! configured store, `expire`, `steal_after_ms`, `delete_on_exit` and `fair`
//! change what the store does, and `crate` changes the path the expansion
//! calls. This file reconfigures the registry, so it is its own process.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Barrier, Once};
use std::time::{Duration, Instant};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, lock, once};
use support::{AppError, is_free, lock_error};

fn configure_reports() {
    static CONFIGURED: Once = Once::new();
    CONFIGURED.call_once(|| {
        registry::configure([
            ("default", AliasConfig::memory()),
            (
                "reports",
                AliasConfig::memory_named("macro-options-reports"),
            ),
        ])
        .unwrap();
    });
}

#[lock("opt-alias", alias = "reports", wait = false)]
fn on_reports() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn alias_uses_the_configured_store() {
    configure_reports();
    on_reports().unwrap();
    {
        // The same key on the default store is another lock.
        let _default = Lock::new("opt-alias").acquire().unwrap();
        on_reports().unwrap();
    }
    let _reports = Lock::new("opt-alias").alias("reports").acquire().unwrap();
    let err = lock_error(on_reports());
    assert!(err.is_busy(), "{err:?}");
    assert!(
        matches!(&err, LockError::Busy { alias, .. } if alias == "reports"),
        "{err:?}"
    );
}

#[lock("opt-no-alias", alias = "nowhere")]
fn on_unknown_alias() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn an_unknown_alias_is_an_error_at_run_time() {
    configure_reports();
    match lock_error(on_unknown_alias()) {
        LockError::UnknownAlias { name, known } => {
            assert_eq!(name, "nowhere");
            assert!(known.contains(&"reports".to_owned()), "{known:?}");
            assert!(known.contains(&"default".to_owned()), "{known:?}");
        }
        other => panic!("expected UnknownAlias, got {other:?}"),
    }
}

#[lock("opt-expire-string", expire = "40ms")]
fn outlives_string_lease(entered: &Barrier) -> Result<(), AppError> {
    entered.wait();
    std::thread::sleep(Duration::from_millis(250));
    Ok(())
}

#[lock("opt-expire-float", expire = 0.04)]
fn outlives_float_lease(entered: &Barrier) -> Result<(), AppError> {
    entered.wait();
    std::thread::sleep(Duration::from_millis(250));
    Ok(())
}

#[lock("opt-expire-seconds", expire = 30)]
fn within_lease(entered: &Barrier) -> Result<(), AppError> {
    entered.wait();
    std::thread::sleep(Duration::from_millis(150));
    Ok(())
}

/// Runs `f` in a thread; once its body is in, checks the key is held, then
/// whether it is free again after `after` while the body still runs.
fn free_while_running(key: &str, after: Duration, f: fn(&Barrier) -> Result<(), AppError>) -> bool {
    let entered = Barrier::new(2);
    std::thread::scope(|s| {
        let body = s.spawn(|| f(&entered));
        entered.wait();
        assert!(!is_free(key), "{key} is held while the body starts");
        std::thread::sleep(after);
        let free = is_free(key);
        body.join().unwrap().unwrap();
        free
    })
}

#[test]
fn expire_sets_the_lease() {
    // A memory lock has no lease by default: only `expire` frees it early.
    let lease_end = Duration::from_millis(120);
    assert!(free_while_running(
        "opt-expire-string",
        lease_end,
        outlives_string_lease
    ));
    assert!(free_while_running(
        "opt-expire-float",
        lease_end,
        outlives_float_lease
    ));
    assert!(!free_while_running(
        "opt-expire-seconds",
        Duration::from_millis(60),
        within_lease
    ));
}

#[once("opt-keep", expire = "150ms", delete_on_exit = false)]
fn at_most_once_per_period() -> u8 {
    1
}

#[test]
fn delete_on_exit_false_keeps_the_lock_until_it_expires() {
    assert_eq!(at_most_once_per_period(), Some(1));
    assert!(!is_free("opt-keep"), "still held after the body returned");
    assert_eq!(at_most_once_per_period(), None);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(at_most_once_per_period(), Some(1));
}

#[lock("opt-delete", expire = "10s", delete_on_exit = true)]
fn released_on_exit() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn delete_on_exit_true_releases_on_return() {
    released_on_exit().unwrap();
    assert!(is_free("opt-delete"));
}

#[lock("opt-steal", steal_after_ms = 80, wait_for_ms = 3000)]
fn steals() -> Result<Instant, AppError> {
    Ok(Instant::now())
}

#[lock("opt-no-steal", wait_for_ms = 200)]
fn does_not_steal() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn steal_after_ms_takes_over_an_old_lock() {
    let _old = Lock::new("opt-steal").acquire().unwrap();
    let taken_at = Instant::now();
    let ran_at = steals().unwrap();
    let waited = ran_at - taken_at;
    assert!(waited >= Duration::from_millis(80), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    let _held = Lock::new("opt-no-steal").acquire().unwrap();
    assert!(lock_error(does_not_steal()).is_timeout());
}

#[lock("opt-fair", fair = true, steal_after_ms = 1, wait = false)]
fn fair_newcomer() -> Result<(), AppError> {
    Ok(())
}

#[lock("opt-fair", steal_after_ms = 1, wait = false)]
fn barging_newcomer() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn fair_joins_the_line_instead_of_passing_a_waiter() {
    let _old = Lock::new("opt-fair").acquire().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            Lock::new("opt-fair")
                .wait_for(Duration::from_secs(5))
                .acquire()
                .map(drop)
        });
        // Let the waiter queue, and the holder grow old enough to steal from.
        std::thread::sleep(Duration::from_millis(100));
        // Both may steal from the old holder; only the unfair one may also
        // pass the queued waiter.
        assert!(lock_error(fair_newcomer()).is_busy());
        barging_newcomer().unwrap();
        waiter.join().unwrap().unwrap();
    });
}

/// A stand-in for a crate that re-exports the runtime, counting the calls
/// the expansion makes through it.
mod counting {
    pub mod __private {
        pub use lock_runtime::__private::*;

        pub static ACQUIRES: std::sync::atomic::AtomicUsize =
            std::sync::atomic::AtomicUsize::new(0);

        pub fn acquire(lock: Lock) -> Result<LockGuard, lock_runtime::LockError> {
            ACQUIRES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            lock_runtime::__private::acquire(lock)
        }
    }
}

#[lock("opt-crate-path", crate = crate::counting)]
fn through_path() -> Result<(), AppError> {
    Ok(())
}

#[lock("opt-crate-string", crate = "crate::counting")]
fn through_string() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn crate_overrides_the_runtime_path() {
    let before = counting::__private::ACQUIRES.load(Ordering::SeqCst);
    through_path().unwrap();
    through_string().unwrap();
    assert_eq!(
        counting::__private::ACQUIRES.load(Ordering::SeqCst),
        before + 2
    );
}
