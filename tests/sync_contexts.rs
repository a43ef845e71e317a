//! Locked sync functions need no async runtime, and work on the blocking
//! threads of one (`spawn_blocking`), waiting there without stalling it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lock_runtime::{Lock, lock, once};
use support::{AppError, is_free};

static INSIDE: AtomicUsize = AtomicUsize::new(0);

#[lock("sync-threads")]
fn critical(total: &AtomicUsize) -> Result<(), AppError> {
    assert_eq!(
        INSIDE.fetch_add(1, Ordering::SeqCst),
        0,
        "two holders at once"
    );
    std::thread::sleep(Duration::from_micros(100));
    total.fetch_add(1, Ordering::Relaxed);
    INSIDE.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

/// A plain test: no async runtime exists anywhere in this thread or process
/// path, and waiting threads block until the holder releases.
#[test]
fn plain_threads_without_a_runtime_exclude_each_other() {
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..30 {
                    critical(&total).unwrap();
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 180);
    assert!(is_free("sync-threads"));
}

#[lock("sync-blocking-<n>", wait_for_ms = 5000)]
fn blocking_job(n: u32) -> Result<u32, AppError> {
    Ok(n + 1)
}

#[tokio::test]
async fn inside_spawn_blocking_a_sync_fn_waits_for_an_async_holder() {
    let holder = Lock::new("sync-blocking-1").acquire_async().await.unwrap();
    let job = tokio::task::spawn_blocking(|| blocking_job(1));
    // The runtime keeps running while the blocking thread waits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!job.is_finished(), "it waits for the holder");
    drop(holder);
    assert_eq!(job.await.unwrap().unwrap(), 2);
    assert!(is_free("sync-blocking-1"));
}

#[once("sync-blocking-once")]
fn blocking_once() -> u8 {
    9
}

#[tokio::test(flavor = "multi_thread")]
async fn once_inside_spawn_blocking_skips_when_busy() {
    assert_eq!(
        tokio::task::spawn_blocking(blocking_once).await.unwrap(),
        Some(9)
    );
    let _held = Lock::new("sync-blocking-once")
        .acquire_async()
        .await
        .unwrap();
    assert_eq!(
        tokio::task::spawn_blocking(blocking_once).await.unwrap(),
        None
    );
}

#[lock("sync-on-runtime-thread", wait = false)]
fn uncontended() -> Result<&'static str, AppError> {
    Ok("ran")
}

#[tokio::test]
async fn a_sync_fn_that_does_not_wait_can_run_on_a_runtime_thread() {
    assert_eq!(uncontended().unwrap(), "ran");
    let _held = Lock::new("sync-on-runtime-thread")
        .acquire_async()
        .await
        .unwrap();
    match uncontended() {
        Err(AppError::Lock(e)) => assert!(e.is_busy(), "{e:?}"),
        other => panic!("expected Busy, got {other:?}"),
    }
}

#[lock("sync-thread-handoff")]
fn records(order: &std::sync::Mutex<Vec<u32>>, n: u32) -> Result<(), AppError> {
    order.lock().unwrap().push(n);
    Ok(())
}

#[test]
fn a_waiting_thread_runs_after_the_holder_releases() {
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let held = Lock::new("sync-thread-handoff").acquire().unwrap();
    let waiter = {
        let order = Arc::clone(&order);
        std::thread::spawn(move || records(&order, 2))
    };
    std::thread::sleep(Duration::from_millis(50));
    order.lock().unwrap().push(1);
    drop(held);
    waiter.join().unwrap().unwrap();
    assert_eq!(*order.lock().unwrap(), [1, 2]);
}
