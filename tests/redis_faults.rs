//! The Redis backend under faults: a server killed, paused or restarted while
//! locks are held or wanted. Nothing may hang past the alias's timeouts,
//! nothing may panic, and the same process recovers without reconfiguring.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use lock_runtime::backend::BackendErrorKind;
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, Operation};
use support::{RedisServer, add_alias, redis_config};

const TIMEOUT: Duration = Duration::from_millis(500);
/// Connect plus one command, plus scheduling slack on a busy machine.
const BOUND: Duration = Duration::from_millis(2 * 500 + 700);

/// An alias for `server` that gives up on it after [`TIMEOUT`].
fn alias(server: &RedisServer, name: &'static str) -> &'static str {
    add_alias(
        name,
        redis_config(server)
            .connect_timeout(TIMEOUT)
            .command_timeout(TIMEOUT),
    )
}

fn backend_kind(err: &LockError, op: Operation) -> BackendErrorKind {
    match err {
        LockError::Backend {
            op: got, source, ..
        } => {
            assert_eq!(*got, op, "{err}");
            source.kind()
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn killed_while_held_then_restarted() {
    let server = RedisServer::start();
    let a = alias(&server, "faults-killed");
    let guard = Lock::new("k").alias(a).acquire().unwrap();
    server.stop();

    let started = Instant::now();
    let err = guard.release().unwrap_err();
    assert!(
        started.elapsed() < BOUND,
        "release hung for {:?}",
        started.elapsed()
    );
    assert_eq!(
        backend_kind(&err, Operation::Release),
        BackendErrorKind::Connection
    );

    let started = Instant::now();
    let err = Lock::new("k").alias(a).acquire().unwrap_err();
    assert!(
        started.elapsed() < BOUND,
        "acquire hung for {:?}",
        started.elapsed()
    );
    assert_eq!(
        backend_kind(&err, Operation::Acquire),
        BackendErrorKind::Connection
    );
    assert!(
        err.to_string().contains("failed to acquire lock `k`"),
        "{err}"
    );

    server.restart();
    let guard = Lock::new("k")
        .alias(a)
        .acquire()
        .expect("recovered without reconfiguring");
    assert!(server.exists("lock:k"));
    guard.release().unwrap();
}

#[test]
fn a_guard_dropped_while_the_server_is_down_does_not_panic_or_hang() {
    let server = RedisServer::start();
    let a = alias(&server, "faults-drop");
    let guard = Lock::new("k").alias(a).acquire().unwrap();
    server.stop();
    let started = Instant::now();
    drop(guard);
    assert!(
        started.elapsed() < BOUND,
        "drop hung for {:?}",
        started.elapsed()
    );
    server.restart();
    assert!(Lock::new("k").alias(a).try_acquire().unwrap().is_some());
}

#[test]
fn a_paused_server_times_out_within_the_command_timeout() {
    let server = RedisServer::start();
    let a = alias(&server, "faults-paused");
    // Warm a pooled connection first, so the pause hits a command, not a connect.
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    server.pause();
    let started = Instant::now();
    let err = Lock::new("k").alias(a).acquire().unwrap_err();
    let took = started.elapsed();
    server.resume();
    assert!(
        took < BOUND,
        "acquire against a paused server took {took:?}"
    );
    assert_eq!(
        backend_kind(&err, Operation::Acquire),
        BackendErrorKind::Timeout
    );
    // A timed-out acquisition may still have run once the server resumed; a
    // retry with a new token must not be refused forever: the lease ends it.
    let g = Lock::new("after-pause")
        .alias(a)
        .acquire()
        .expect("works again after resume");
    g.release().unwrap();
}

#[test]
fn the_watchdog_reports_the_lock_lost_when_the_server_stays_away() {
    let server = RedisServer::start();
    registry::add(
        "faults-watchdog",
        AliasConfig::from_url(&server.url())
            .unwrap()
            .default_lease(Duration::from_millis(900))
            .connect_timeout(Duration::from_millis(100))
            .command_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let guard = Lock::new("k").alias("faults-watchdog").acquire().unwrap();
    assert!(!guard.is_lost());
    server.stop();
    std::thread::sleep(Duration::from_millis(1300));
    assert!(
        guard.is_lost(),
        "the lease ran out while the server was gone"
    );
    assert_eq!(guard.remaining(), Some(Duration::ZERO));
    server.restart();
    assert!(
        guard.release().unwrap_err().is_not_held(),
        "the restarted server has no such lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_fail_within_the_bound_and_recover() {
    let server = RedisServer::start();
    let a = alias(&server, "faults-async");
    let guard = Lock::new("k").alias(a).acquire_async().await.unwrap();
    server.stop();

    let started = Instant::now();
    let err = guard.release_async().await.unwrap_err();
    assert!(
        started.elapsed() < BOUND,
        "async release hung for {:?}",
        started.elapsed()
    );
    backend_kind(&err, Operation::Release);

    let started = Instant::now();
    let err = Lock::new("k").alias(a).acquire_async().await.unwrap_err();
    assert!(
        started.elapsed() < BOUND,
        "async acquire hung for {:?}",
        started.elapsed()
    );
    backend_kind(&err, Operation::Acquire);

    server.restart();
    let guard = Lock::new("k")
        .alias(a)
        .acquire_async()
        .await
        .expect("recovered");
    guard.release_async().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_async_acquisition_leaves_nothing_locked() {
    let server = RedisServer::start();
    let a = alias(&server, "faults-cancel");
    // Each acquisition is polled once, which sends its request, and then
    // dropped before the reply: whatever the server granted must be given
    // back by the store itself, long before the 30 s lease would end.
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut cut = 0;
    for i in 0..100 {
        let mut fut = Box::pin(Lock::new(format!("k{i}")).alias(a).acquire_async());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Pending => cut += 1,
            // On a multi-thread runtime the reply can race a preempted
            // poller; such a lock is simply released.
            std::task::Poll::Ready(guard) => guard.unwrap().release_async().await.unwrap(),
        }
        drop(fut);
    }
    assert!(
        cut >= 50,
        "only {cut} of 100 acquisitions were cut in flight"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = server.keys("lock:k*");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "locks stranded by cancelled acquisitions: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_cancelled_mid_wait_takes_nothing_and_leaves_the_line() {
    let server = RedisServer::start();
    let a = alias(&server, "faults-cancel-wait");
    for fair in [false, true] {
        let held = Lock::new("busy").alias(a).acquire_async().await.unwrap();
        let waiting = Lock::new("busy").alias(a).fair(fair).acquire_async();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), waiting)
                .await
                .is_err(),
            "it was held"
        );
        if fair {
            // Give the I/O thread a moment to run the clean-up it was handed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                !server.exists("lock%:line:lock:busy"),
                "the cancelled waiter left the line"
            );
        }
        held.release_async().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !server.exists("lock:busy"),
            "the cancelled waiter took the released lock (fair: {fair})"
        );
    }
}
