//! `on_lost = "cancel"`: an `async fn` whose lock is lost while its body
//! runs is stopped at its next await point and fails like an acquisition
//! that did not happen (`LockError::NotHeld`, or `None` without `raise`).
//! Without it the body runs to its end.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lock_runtime::{LockError, lock, once};
use support::{RedisServer, redis_alias};

static STEPS: AtomicU32 = AtomicU32::new(0);

/// Works in 20 ms steps for up to 2 s; its fixed lease is 150 ms.
#[lock("on-lost-raise", expire = "150ms", on_lost = "cancel")]
async fn long_job() -> Result<u32, LockError> {
    for step in 1..=100 {
        STEPS.store(step, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(100)
}

#[tokio::test]
async fn a_body_outliving_its_lease_is_stopped_with_not_held() {
    let started = Instant::now();
    let err = long_job().await.unwrap_err();
    assert!(err.is_not_held(), "{err:?}");
    let steps = STEPS.load(Ordering::SeqCst);
    assert!(
        steps < 20,
        "the body kept running after the loss: {steps} steps"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

static IGNORED_STEPS: AtomicU32 = AtomicU32::new(0);

#[lock("on-lost-ignore", expire = "100ms")]
async fn long_job_default() -> Result<u32, LockError> {
    for step in 1..=15 {
        IGNORED_STEPS.store(step, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(15)
}

#[tokio::test]
async fn by_default_the_body_runs_to_its_end() {
    assert_eq!(long_job_default().await.unwrap(), 15);
    assert_eq!(IGNORED_STEPS.load(Ordering::SeqCst), 15);
}

#[once("on-lost-once", alias = "on-lost-redis", on_lost = "cancel")]
async fn watched(server_key_deleted: tokio::sync::oneshot::Receiver<()>) -> u32 {
    let _ = server_key_deleted.await;
    // Runs "forever" after the deletion, unless stopped.
    tokio::time::sleep(Duration::from_secs(30)).await;
    1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_deleted_behind_an_async_body_stops_it_and_skips() {
    let server = RedisServer::start();
    redis_alias(&server, "on-lost-redis");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(watched(rx));
    // Wait until the body holds the lock, then delete it behind its back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.exists("lock:on-lost-once") {
        assert!(
            Instant::now() < deadline,
            "the function never took its lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.cmd(&["DEL", "lock:on-lost-once"]);
    tx.send(()).unwrap();
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stopped, not still running");
    assert_eq!(out.unwrap(), None, "a stopped `#[once]` body gives None");
    assert!(started.elapsed() < Duration::from_secs(2));
}
