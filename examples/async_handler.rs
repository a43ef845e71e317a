//! `#[lock]` on an `async fn`: requests for the same tenant run one at a
//! time, others run alongside, a waiter gives up after `wait_for_ms`, and a
//! cancelled request frees its lock. Run with `cargo run --example async_handler`.

use std::time::{Duration, Instant};

use lock_runtime::{LockError, lock};

#[derive(Debug)]
enum AppError {
    Lock(LockError),
}

impl From<LockError> for AppError {
    fn from(e: LockError) -> Self {
        AppError::Lock(e)
    }
}

/// One sync per tenant at a time; a request waits up to 500 ms for its turn.
#[lock("sync-<tenant>", wait_for_ms = 500)]
async fn handle(tenant: String, request: u32, started: Instant) -> Result<String, AppError> {
    println!(
        "{:>4} ms  {tenant} #{request} starts",
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(format!(
        "{tenant} #{request} done at {} ms",
        started.elapsed().as_millis()
    ))
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    // Three requests for `acme` at once, 300 ms of work each: the first runs,
    // the second waits about 300 ms for it, the third would have to wait
    // about 600 ms and gives up after 500 ms with `LockError::Timeout`.
    let mut tasks = Vec::new();
    for request in 1..=3 {
        tasks.push(tokio::spawn(handle("acme".to_owned(), request, started)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another tenant is not held up by `acme`.
    tasks.push(tokio::spawn(handle("globex".to_owned(), 1, started)));
    for t in tasks {
        match t.await.expect("no panic") {
            Ok(done) => println!("ok     {done}"),
            Err(AppError::Lock(e)) => println!("error  {e}"),
        }
    }

    // A request cut short by a timeout: its lock is released when the
    // future is dropped, so the next request gets in at once.
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        handle("initech".into(), 1, started),
    )
    .await;
    println!("initech #1 cancelled by timeout: {}", cut.is_err());
    let next = Instant::now();
    let done = handle("initech".into(), 2, started)
        .await
        .expect("the lock was freed");
    println!(
        "ok     {done} (waited {} ms for the lock)",
        next.elapsed().as_millis().saturating_sub(300)
    );
}
