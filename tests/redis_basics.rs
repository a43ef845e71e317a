//! The Redis backend's everyday behaviour against a real `redis-server`
//! started by the test: taking, refusing, releasing, leases, fencing,
//! prefixes, awkward keys and configuration.

mod support;

use std::time::{Duration, Instant};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError};
use support::{RedisServer, redis_alias};

#[test]
fn a_held_lock_is_a_key_with_a_lease_and_is_refused_to_others() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-held");
    let guard = Lock::new("invoice-7").alias(a).acquire().unwrap();
    let value = server
        .get("lock:invoice-7")
        .expect("the lock is a key under the default prefix");
    assert!(
        value.starts_with(guard.token().encode().as_str()),
        "{value}"
    );
    let pttl = server.pttl("lock:invoice-7");
    assert!(
        pttl > 25_000 && pttl <= 30_000,
        "default lease is 30 s, PTTL {pttl}"
    );

    let err = Lock::new("invoice-7")
        .alias(a)
        .wait(false)
        .acquire()
        .unwrap_err();
    assert!(
        matches!(&err, LockError::Busy { key, alias } if key == "invoice-7" && alias == a),
        "{err:?}"
    );
    assert!(
        Lock::new("invoice-7")
            .alias(a)
            .try_acquire()
            .unwrap()
            .is_none()
    );

    guard.release().unwrap();
    assert!(!server.exists("lock:invoice-7"), "release deleted the key");
    assert!(
        Lock::new("invoice-7")
            .alias(a)
            .try_acquire()
            .unwrap()
            .is_some()
    );
}

#[test]
fn expire_sets_a_fixed_lease() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-expire");
    let guard = Lock::new("k")
        .alias(a)
        .expire(Duration::from_millis(1500))
        .acquire()
        .unwrap();
    let pttl = server.pttl("lock:k");
    assert!(pttl > 1000 && pttl <= 1500, "PTTL {pttl}");
    assert!(guard.remaining().unwrap() <= Duration::from_millis(1500));
}

#[test]
fn wait_for_gives_up_at_its_deadline_not_a_poll_later() {
    let server = RedisServer::start();
    registry::add(
        "basics-wait-for",
        AliasConfig::from_url(&server.url())
            .unwrap()
            .poll_interval(Duration::from_secs(2)),
    )
    .unwrap();
    let _held = Lock::new("k").alias("basics-wait-for").acquire().unwrap();
    let started = Instant::now();
    let err = Lock::new("k")
        .alias("basics-wait-for")
        .wait_for(Duration::from_millis(300))
        .acquire()
        .unwrap_err();
    let waited = started.elapsed();
    match err {
        LockError::Timeout {
            waited: reported, ..
        } => assert!(reported >= Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(300),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(300 + 2000),
        "waited a whole poll past the deadline: {waited:?}"
    );
}

#[test]
fn a_waiter_gets_the_lock_once_it_is_released() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-waiter");
    let held = Lock::new("k").alias(a).acquire().unwrap();
    let waiter = std::thread::spawn(move || {
        Lock::new("k")
            .alias(a)
            .wait_for(Duration::from_secs(10))
            .acquire()
    });
    std::thread::sleep(Duration::from_millis(100));
    held.release().unwrap();
    let guard = waiter.join().unwrap().expect("the waiter got the lock");
    assert_eq!(guard.key(), "k");
}

#[test]
fn fencing_tokens_increase_across_acquisitions_and_expiry() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-fencing");
    let mut last = 0;
    for i in 0..20 {
        let lock = Lock::new(format!("k{}", i % 3))
            .alias(a)
            .expire(Duration::from_millis(20));
        let guard = lock.acquire().unwrap();
        let fence = guard.fencing_token().expect("Redis keeps fencing tokens");
        assert!(fence > last, "{fence} after {last}");
        last = fence;
        if i % 2 == 0 {
            // Let the lease run out instead of releasing.
            std::mem::forget(guard);
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

#[test]
fn prefixes_keep_aliases_on_one_server_apart() {
    let server = RedisServer::start();
    registry::add(
        "basics-app-a",
        AliasConfig::redis(server.url()).prefix("a:"),
    )
    .unwrap();
    registry::add(
        "basics-app-b",
        AliasConfig::from_url(&format!("{}?prefix=b:", server.url())).unwrap(),
    )
    .unwrap();
    let ga = Lock::new("shared-name")
        .alias("basics-app-a")
        .acquire()
        .unwrap();
    let gb = Lock::new("shared-name")
        .alias("basics-app-b")
        .wait(false)
        .acquire()
        .expect("different prefix, different lock");
    assert!(server.exists("a:shared-name") && server.exists("b:shared-name"));
    drop(ga);
    assert!(!server.exists("a:shared-name"));
    assert!(
        server.exists("b:shared-name"),
        "releasing one alias's lock left the other alone"
    );
    drop(gb);
}

#[test]
fn awkward_keys_lock_correctly_and_independently() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-awkward");
    let long = "x".repeat(1024);
    let keys = [
        "with spaces",
        "new\nline",
        "quotes ' \" `",
        "star *",
        "braces {} {tag}",
        "ünïcødé 🔒 键",
        "lua ]]--[[ end",
        long.as_str(),
    ];
    let guards: Vec<_> = keys
        .iter()
        .map(|k| {
            Lock::new(k.to_string())
                .alias(a)
                .wait(false)
                .acquire()
                .unwrap_or_else(|e| panic!("{k:?}: {e}"))
        })
        .collect();
    for k in keys {
        assert!(
            server.exists(&format!("lock:{k}")),
            "{k:?} is stored under its own name"
        );
        assert!(
            Lock::new(k.to_string())
                .alias(a)
                .try_acquire()
                .unwrap()
                .is_none(),
            "{k:?} is held"
        );
    }
    // The alias's fencing counter, `lock%:fence`, lives outside `lock:*`.
    let locks = || server.keys("lock:*").len();
    assert_eq!(locks(), keys.len(), "no two keys collapsed into one");
    for g in guards {
        g.release().unwrap();
    }
    assert_eq!(locks(), 0);
}

#[test]
fn a_stale_lock_is_taken_over_with_steal_after() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-steal");
    let old = Lock::new("k").alias(a).acquire().unwrap();
    let thief = Lock::new("k")
        .alias(a)
        .wait(false)
        .steal_after(Duration::from_millis(300));
    assert!(thief.acquire().unwrap_err().is_busy(), "not old enough yet");
    std::thread::sleep(Duration::from_millis(350));
    let new = thief.acquire().expect("old enough to steal");
    assert!(
        old.release().unwrap_err().is_not_held(),
        "the robbed holder cannot release"
    );
    assert!(server.exists("lock:k"), "and the thief's lock stayed");
    new.release().unwrap();
}

#[test]
fn delete_on_exit_false_leaves_the_key_with_its_remaining_lease() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-keep");
    let lock = Lock::new("k")
        .alias(a)
        .expire(Duration::from_secs(3))
        .delete_on_exit(false);
    drop(lock.acquire().unwrap());
    let pttl = server.pttl("lock:k");
    assert!(
        pttl > 2000 && pttl <= 3000,
        "the key kept its lease: PTTL {pttl}"
    );
    assert!(lock.try_acquire().unwrap().is_none());
}

#[test]
fn a_lease_that_runs_out_passes_the_lock_and_the_late_release_fails() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-expiry");
    let first = Lock::new("k")
        .alias(a)
        .expire(Duration::from_millis(200))
        .acquire()
        .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert!(first.is_lost());
    let second = Lock::new("k")
        .alias(a)
        .wait(false)
        .acquire()
        .expect("the lease ran out");
    let value = server.get("lock:k").unwrap();
    match first.release() {
        Err(LockError::NotHeld { key, .. }) => assert_eq!(key, "k"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.get("lock:k").unwrap(),
        value,
        "the second holder's lock is intact"
    );
    second.release().unwrap();
}

#[test]
fn the_watchdog_keeps_a_short_lease_alive_through_a_long_section() {
    let server = RedisServer::start();
    registry::add(
        "basics-watchdog",
        AliasConfig::from_url(&server.url())
            .unwrap()
            .default_lease(Duration::from_secs(2)),
    )
    .unwrap();
    let guard = Lock::new("k").alias("basics-watchdog").acquire().unwrap();
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert!(
            !guard.is_lost(),
            "lost the lock after {:?}",
            until.elapsed()
        );
        assert!(
            Lock::new("k")
                .alias("basics-watchdog")
                .try_acquire()
                .unwrap()
                .is_none(),
            "someone else could take a lock that is held"
        );
        assert!(server.pttl("lock:k") > 0);
        std::thread::sleep(Duration::from_millis(250));
    }
    guard
        .release()
        .expect("still ours after 7 s on a 2 s lease");
    // And after the guard is gone the watchdog stops renewing.
    assert!(!server.exists("lock:k"));
}

#[test]
fn a_lock_deleted_behind_the_holders_back_is_reported_lost() {
    let server = RedisServer::start();
    registry::add(
        "basics-lost",
        AliasConfig::from_url(&server.url())
            .unwrap()
            .default_lease(Duration::from_millis(600)),
    )
    .unwrap();
    let guard = Lock::new("k").alias("basics-lost").acquire().unwrap();
    server.cmd(&["DEL", "lock:k"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(guard.is_lost(), "the next renewal found the lock gone");
    assert!(guard.release().unwrap_err().is_not_held());
}

#[test]
fn bad_urls_fail_at_configure_time() {
    for url in [
        "redis://[::1",
        "redis://host:notaport",
        "rediz://host",
        "redis://:pw@/0",
    ] {
        let err = AliasConfig::from_url(url)
            .and_then(|cfg| registry::add("basics-bad", cfg))
            .unwrap_err();
        assert!(matches!(err, LockError::Config { .. }), "{url}: {err:?}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
    assert!(
        registry::alias("basics-bad").is_err(),
        "a failed configure changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_share_the_same_locks() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-async");
    let guard = Lock::new("k").alias(a).acquire_async().await.unwrap();
    assert!(
        Lock::new("k")
            .alias(a)
            .try_acquire_async()
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Lock::new("k").alias(a).try_acquire().unwrap().is_none(),
        "sync callers see it too"
    );
    let mut guard2 = guard;
    guard2.extend_async(Duration::from_secs(100)).await.unwrap();
    assert!(server.pttl("lock:k") > 90_000);
    guard2.release_async().await.unwrap();
    let started = Instant::now();
    let g = Lock::new("k").alias(a).acquire_async().await.unwrap();
    drop(g); // released without blocking this task
    while server.exists("lock:k") {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a dropped async guard was never released"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Scripts the server forgot (`SCRIPT FLUSH`, or a restart without
/// persistence) are loaded again by the call that finds them missing, sync
/// and async, for every kind of call: taking, extending, waiting in line,
/// handing over and releasing.
#[test]
fn scripts_the_server_forgot_are_loaded_again() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-noscript");
    let flush = || {
        let ok = server.cmd(&["SCRIPT", "FLUSH"]);
        assert_eq!(ok.as_str(), Some("OK"), "{ok:?}");
    };
    let busy = Lock::new("noscript").alias(a).acquire().unwrap();
    flush();
    // A barging look and a fair one, both through a script, on a busy lock.
    for fair in [false, true] {
        let refused = Lock::new("noscript")
            .alias(a)
            .fair(fair)
            .wait_for(Duration::from_millis(30))
            .acquire()
            .unwrap_err();
        assert!(matches!(refused, LockError::Timeout { .. }), "{refused:?}");
        flush();
    }
    busy.release().unwrap();
    assert!(!server.exists("lock:noscript"), "the release got through");

    let mut guard = Lock::new("noscript").alias(a).acquire().unwrap();
    flush();
    guard.extend(Duration::from_secs(40)).unwrap();
    assert!(
        server.pttl("lock:noscript") > 30_000,
        "the extension got through"
    );
    flush();
    guard.release().unwrap();
    assert!(!server.exists("lock:noscript"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut guard = Lock::new("noscript")
            .alias(a)
            .acquire_async()
            .await
            .unwrap();
        flush();
        guard.extend_async(Duration::from_secs(40)).await.unwrap();
        assert!(server.pttl("lock:noscript") > 30_000);
        flush();
        guard.release_async().await.unwrap();
        assert!(!server.exists("lock:noscript"));
    });
}

/// A crowd of calls that all find their scripts forgotten at once (after a
/// restart, or `SCRIPT FLUSH`) loads them once, not once per call: 200
/// concurrent async releases, then 8 threads' releases, each of whose
/// first `EVALSHA` the server answers `NOSCRIPT`, load the scripts as often
/// as one release alone does (each used to load its own: 165 loads for the
/// 200).
#[test]
fn a_crowd_that_finds_its_scripts_forgotten_loads_them_once() {
    const TASKS: usize = 200;
    let server = RedisServer::start();
    let a = redis_alias(&server, "basics-noscript-crowd");
    let flush = || {
        let ok = server.cmd(&["SCRIPT", "FLUSH"]);
        assert_eq!(ok.as_str(), Some("OK"), "{ok:?}");
    };
    let loads = || server.calls("script|load");
    let refusals = || -> u64 { server.info("stats")["total_error_replies"].parse().unwrap() };

    // What one release that finds the scripts gone loads.
    let alone = Lock::new("alone").alias(a).acquire().unwrap();
    flush();
    let before = loads();
    alone.release().unwrap();
    let once = loads() - before;
    assert!(once >= 1, "the release loaded its script");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut guards = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let lock = Lock::new(format!("crowd-{i}")).alias(a);
            guards.push(lock.acquire_async().await.unwrap());
        }
        flush();
        let (before, refused) = (loads(), refusals());
        let releases: Vec<_> = guards
            .into_iter()
            .map(|g| tokio::spawn(g.release_async()))
            .collect();
        for r in releases {
            r.await.unwrap().unwrap();
        }
        let noscript = refusals() - refused;
        // Two are a crowd: each would have loaded the scripts itself.
        assert!(
            noscript >= 2,
            "the crowd's calls found the script gone ({noscript} NOSCRIPT answers)"
        );
        let loaded = loads() - before;
        assert_eq!(
            loaded, once,
            "script loads for {noscript} NOSCRIPT answers, against {once} for one call"
        );
    });
    assert!(
        (0..TASKS).all(|i| !server.exists(&format!("lock:crowd-{i}"))),
        "every release got through"
    );

    let guards: Vec<_> = (0..8)
        .map(|i| {
            Lock::new(format!("threads-{i}"))
                .alias(a)
                .acquire()
                .unwrap()
        })
        .collect();
    flush();
    let (before, refused) = (loads(), refusals());
    let start = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for g in guards {
            let start = &start;
            s.spawn(move || {
                start.wait();
                g.release().unwrap();
            });
        }
    });
    let noscript = refusals() - refused;
    let loaded = loads() - before;
    assert_eq!(
        loaded, once,
        "script loads for 8 threads' releases ({noscript} NOSCRIPT answers), against {once} for one"
    );
    assert!((0..8).all(|i| !server.exists(&format!("lock:threads-{i}"))));
}
