//! Every duration the API accepts either works or is refused up front with a
//! typed error naming the option; nothing panics, and an error never leaves
//! a lock behind. A wait of `Duration::MAX` waits as long as it takes.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, MAX_DURATION};
use proptest::prelude::*;
use support::{RedisServer, redis_alias};

fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Durations around every boundary, and anything else.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(MAX_DURATION),
        Just(MAX_DURATION + Duration::from_nanos(1)),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(u64::MAX)),
        (0..u64::MAX, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (1..10_000_000_000u64).prop_map(Duration::from_nanos),
    ]
}

fn refused_as(err: &LockError, name: &str) -> bool {
    matches!(err, LockError::InvalidOptions { option, .. } if *option == name)
}

/// Releases `guard`; a lock whose lease was too short to outlive the test
/// may already be gone.
fn release(guard: lock_runtime::LockGuard, lease: Duration) {
    match guard.release() {
        Ok(()) => {}
        Err(e) if e.is_not_held() && lease < Duration::from_secs(10) => {}
        Err(e) => panic!("release after a lease of {lease:?}: {e:?}"),
    }
}

/// The lock is free: nothing was stranded by what happened before.
fn assert_free(alias: &str, key: &str) {
    let guard = Lock::new(key.to_owned())
        .alias(alias.to_owned())
        .try_acquire();
    assert!(
        matches!(guard, Ok(Some(_))),
        "{key} on {alias} was left held: {guard:?}"
    );
}

/// One builder option and the guard's `extend`, sync and async, on `alias`.
fn check_lock_durations(alias: &'static str, d: Duration) {
    let ok = !d.is_zero() && d <= MAX_DURATION;
    for (option, lock) in [
        ("expire", Lock::new(unique("exp")).expire(d)),
        ("steal_after", Lock::new(unique("steal")).steal_after(d)),
    ] {
        let lock = lock.alias(alias);
        for run_async in [false, true] {
            let got = if run_async {
                futures::executor::block_on(lock.acquire_async())
            } else {
                lock.acquire()
            };
            match got {
                Ok(guard) => {
                    assert!(ok, "{option}({d:?}) was accepted");
                    release(guard, if option == "expire" { d } else { Duration::MAX });
                }
                Err(e) => assert!(!ok && refused_as(&e, option), "{option}({d:?}): {e:?}"),
            }
            assert_free(alias, lock.key());
        }
    }
    // A wait of any length on a free lock takes it at once.
    let lock = Lock::new(unique("wait")).alias(alias).wait_for(d);
    match lock.acquire() {
        Ok(g) => {
            assert!(!d.is_zero());
            g.release().unwrap();
        }
        Err(e) => assert!(d.is_zero() && refused_as(&e, "wait_for"), "{e:?}"),
    }
    let key = unique("extend");
    let mut guard = Lock::new(key.clone())
        .alias(alias)
        .expire(Duration::from_secs(30))
        .acquire()
        .unwrap();
    for run_async in [false, true] {
        let got = if run_async {
            futures::executor::block_on(guard.extend_async(d))
        } else {
            guard.extend(d)
        };
        match got {
            Ok(()) => assert!(ok, "extend({d:?}) was accepted"),
            // A lease extended to a few nanoseconds ends before the next call.
            Err(e) if ok && e.is_not_held() && d < Duration::from_secs(10) => {}
            Err(e) => assert!(!ok && refused_as(&e, "extend"), "extend({d:?}): {e:?}"),
        }
    }
    let _ = (guard.is_lost(), guard.remaining());
    release(guard, if ok { d } else { Duration::MAX });
    assert_free(alias, &key);
}

fn check_alias_durations(d: Duration) {
    let ok = !d.is_zero() && d <= MAX_DURATION;
    for (setting, cfg) in [
        ("default_lease", AliasConfig::memory().default_lease(d)),
        ("poll_interval", AliasConfig::memory().poll_interval(d)),
        ("connect_timeout", AliasConfig::memory().connect_timeout(d)),
        ("command_timeout", AliasConfig::memory().command_timeout(d)),
    ] {
        let name = unique("durations-alias");
        match registry::add(name.clone(), cfg) {
            Ok(()) => {
                assert!(ok, "{setting}({d:?}) was accepted");
                let guard = Lock::new("k").alias(name.clone()).acquire().unwrap();
                let _ = guard.remaining();
                release(guard, d);
            }
            Err(LockError::Config { setting: s, .. }) => {
                assert!(!ok && s == setting, "{setting}({d:?}) refused as {s}")
            }
            Err(e) => panic!("{setting}({d:?}): {e:?}"),
        }
    }
    let ms = d.as_millis();
    let url = format!("memory://?lease_ms={ms}");
    let accepted = ms >= 1 && ms <= MAX_DURATION.as_millis();
    match AliasConfig::from_url(&url) {
        Ok(_) => assert!(accepted, "{url}"),
        Err(LockError::Config { setting, .. }) => {
            assert!(!accepted, "{url}");
            assert_eq!(setting, "lease_ms");
        }
        Err(e) => panic!("{url}: {e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn memory_lock_durations_work_or_are_refused(d in duration()) {
        check_lock_durations("default", d);
    }

    #[test]
    fn alias_durations_work_or_are_refused(d in duration()) {
        check_alias_durations(d);
    }
}

#[test]
fn a_wait_of_duration_max_waits_until_the_lock_is_free() {
    for run_async in [false, true] {
        let key = unique("wait-max");
        let held = Lock::new(key.clone()).acquire().unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        let lock = Lock::new(key).wait_for(Duration::MAX);
        let guard = if run_async {
            futures::executor::block_on(lock.acquire_async())
        } else {
            lock.acquire()
        };
        guard.expect("waited for the release").release().unwrap();
        releaser.join().unwrap();
    }
}

#[test]
fn redis_lock_durations_work_or_are_refused() {
    let server = RedisServer::start();
    redis_alias(&server, "durations-redis");
    for d in [
        Duration::MAX,
        Duration::from_millis(u64::MAX),
        MAX_DURATION + Duration::from_nanos(1),
        MAX_DURATION,
        Duration::from_secs(u32::MAX as u64),
        Duration::from_nanos(1),
        Duration::from_millis(1500),
    ] {
        check_lock_durations("durations-redis", d);
    }
    // A lease of the longest accepted length is kept as asked.
    let guard = Lock::new("longest")
        .alias("durations-redis")
        .expire(MAX_DURATION)
        .acquire()
        .unwrap();
    let pttl = server.pttl("lock:longest");
    assert!(
        pttl as u128 > MAX_DURATION.as_millis() - 60_000,
        "PTTL {pttl}"
    );
    guard.release().unwrap();
}
