//! The lost-lock signal: `guard.lost()` resolves, and `guard.is_lost()`
//! turns true, when the lock is deleted or taken behind the holder's back,
//! when its lease runs out, and when the store goes away; never while the
//! lock is held.

mod support;

use std::time::{Duration, Instant};

use lock_runtime::Lock;
use support::{RedisServer, add_alias, redis_config};

const NEVER: Duration = Duration::from_millis(1500);

/// Waits for `guard.lost()` at most `limit`; how long it took, if it came.
async fn lost_within(guard: &lock_runtime::LockGuard, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, guard.lost())
        .await
        .ok()
        .map(|()| started.elapsed())
}

#[tokio::test]
async fn memory_lease_running_out_is_a_loss() {
    let guard = Lock::new("lost-mem-lease")
        .expire(Duration::from_millis(200))
        .acquire_async()
        .await
        .unwrap();
    assert!(!guard.is_lost());
    let took = lost_within(&guard, Duration::from_secs(2))
        .await
        .expect("the lease ran out");
    assert!(
        took >= Duration::from_millis(150),
        "signalled before the lease ended: {took:?}"
    );
    assert!(guard.is_lost());
}

#[tokio::test]
async fn memory_lock_stolen_behind_the_holders_back_is_a_loss() {
    let guard = Lock::new("lost-mem-steal").acquire_async().await.unwrap();
    // Nothing happens while it is ours.
    assert_eq!(lost_within(&guard, Duration::from_millis(400)).await, None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let thief = Lock::new("lost-mem-steal")
        .steal_after(Duration::from_millis(10))
        .wait(false)
        .acquire()
        .unwrap();
    let took = lost_within(&guard, Duration::from_secs(2))
        .await
        .expect("the theft was noticed");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(guard.is_lost());
    drop(thief);
}

fn redis_alias(server: &RedisServer, name: &'static str, lease: Option<Duration>) -> &'static str {
    let mut cfg = redis_config(server)
        .connect_timeout(Duration::from_millis(200))
        .command_timeout(Duration::from_millis(200));
    if let Some(lease) = lease {
        cfg = cfg.default_lease(lease);
    }
    add_alias(name, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lock_deleted_behind_the_holders_back_is_a_loss() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "lost-deleted", None);
    // A fixed 30 s lease, so only a check can notice the deletion.
    let guard = Lock::new("k")
        .alias(a)
        .expire(Duration::from_secs(30))
        .acquire_async()
        .await
        .unwrap();
    assert_eq!(
        lost_within(&guard, Duration::from_millis(600)).await,
        None,
        "held, not lost"
    );
    server.cmd(&["DEL", "lock:k"]);
    let took = lost_within(&guard, Duration::from_secs(3))
        .await
        .expect("the deletion was noticed");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(guard.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lease_running_out_is_a_loss() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "lost-lease", None);
    let guard = Lock::new("k")
        .alias(a)
        .expire(Duration::from_millis(300))
        .acquire_async()
        .await
        .unwrap();
    let took = lost_within(&guard, Duration::from_secs(3))
        .await
        .expect("the lease ran out");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    // The signal comes a drift allowance (1% + 2 ms) before the server's own
    // expiry: never after it.
    let pttl = server.pttl("lock:k");
    assert!(pttl < 20, "signalled {pttl} ms before the key expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lock_is_not_lost_but_redis_going_away_is() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "lost-gone", Some(Duration::from_millis(600)));
    let guard = Lock::new("k").alias(a).acquire_async().await.unwrap();
    assert_eq!(
        lost_within(&guard, NEVER).await,
        None,
        "the watchdog kept a 600 ms lease for 1.5 s"
    );
    assert!(!guard.is_lost());
    server.stop();
    let took = lost_within(&guard, Duration::from_secs(3))
        .await
        .expect("the loss was signalled");
    assert!(
        took <= Duration::from_millis(900),
        "signalled later than the lease: {took:?}"
    );
    assert!(guard.is_lost());
}
