//! What the Redis store leaves behind when nobody waits for the end: a guard
//! dropped inside a runtime is released on that runtime's own connection
//! (after whatever is in flight on it), even if the runtime shuts down
//! first; a dropped release still releases; a waiter that gives up at its
//! deadline has left the line by the time it answers.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use support::{RedisServer, redis_alias};

/// Waits until `key` is gone; the default lease (30 s) is far longer, so
/// only a release frees it this soon.
fn gone_soon(server: &RedisServer, key: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.exists(key) {
        assert!(Instant::now() < deadline, "{what}: `{key}` is still held");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_inside_a_runtime_is_released_on_that_runtimes_connection() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "cleanup-same-connection");
    let guard = Lock::new("k").alias(a).acquire_async().await.unwrap();
    drop(guard);
    gone_soon(&server, "lock:k", "a guard dropped in a runtime");
    // This runtime's connection and the one asking: the release went the
    // way the acquisition came, not through another connection that could
    // overtake a request still in flight.
    assert_eq!(
        server.info("clients")["connected_clients"],
        "2",
        "{:?}",
        server.cmd(&["CLIENT", "LIST"])
    );
}

#[test]
fn a_guard_dropped_on_a_runtime_that_then_shuts_down_is_still_released() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "cleanup-shutdown");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let guard = rt
        .block_on(Lock::new("k").alias(a).acquire_async())
        .unwrap();
    // Dropped on a runtime that never runs again: the release it started
    // there goes down with it, so the store's I/O thread sends it instead.
    rt.block_on(async move { drop(guard) });
    drop(rt);
    gone_soon(
        &server,
        "lock:k",
        "a guard dropped before its runtime shut down",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_dropped_before_its_reply_still_releases() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "cleanup-dropped-release");
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    for i in 0..20 {
        let key = format!("k{i}");
        let guard = Lock::new(key.clone())
            .alias(a)
            .acquire_async()
            .await
            .unwrap();
        let mut release = Box::pin(guard.release_async());
        if let std::task::Poll::Ready(outcome) = release.as_mut().poll(&mut cx) {
            outcome.unwrap();
        }
        drop(release);
        gone_soon(&server, &format!("lock:{key}"), "a dropped release");
    }
}

#[test]
fn a_fair_waiter_that_gives_up_has_left_the_line_when_it_answers() {
    let server = RedisServer::start();
    let a = redis_alias(&server, "cleanup-deadline");
    let held = Lock::new("k").alias(a).acquire().unwrap();
    let waiter = Lock::new("k")
        .alias(a)
        .fair(true)
        .wait_for(Duration::from_millis(100));
    let err = waiter.acquire().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        !server.exists("lock%:line:lock:k"),
        "a sync waiter left its place in line"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(waiter.acquire_async()).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        !server.exists("lock%:line:lock:k"),
        "an async waiter left its place in line"
    );
    // Off a Tokio runtime, the wait runs on the store's I/O thread.
    let err = futures::executor::block_on(waiter.acquire_async()).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        !server.exists("lock%:line:lock:k"),
        "a waiter on the I/O thread left its place in line"
    );
    held.release().unwrap();
}
