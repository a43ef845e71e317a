//! The 30-second tour, on the embedded in-memory store: no configuration,
//! no server. Run it with `cargo run --example quickstart`.
//!
//! Two threads call the same locked functions at the same time; the second
//! caller either gets a `LockError` (`#[lock]`) or is skipped (`#[once]`).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use lock_runtime::{Lock, LockError, lock, once};

#[derive(Debug)]
enum AppError {
    Lock(LockError),
}

impl From<LockError> for AppError {
    fn from(e: LockError) -> Self {
        AppError::Lock(e)
    }
}

struct User {
    id: u64,
}

/// One report per user at a time; a second caller fails at once.
#[lock("report-<user.id>", wait = false)]
fn build_report(user: &User, started: &mpsc::Sender<()>) -> Result<String, AppError> {
    started.send(()).ok();
    thread::sleep(Duration::from_millis(200));
    Ok(format!("report for user {}", user.id))
}

/// Runs at most once at a time; a caller that finds it busy is skipped.
#[once("nightly-<job>")]
fn nightly(job: &str, started: &mpsc::Sender<()>) -> usize {
    started.send(()).ok();
    thread::sleep(Duration::from_millis(200));
    job.len()
}

fn main() -> Result<(), AppError> {
    // 1. `#[lock]` with `wait = false`: the second caller gets `LockError::Busy`.
    let (tx, rx) = mpsc::channel();
    let first = thread::spawn(move || build_report(&User { id: 42 }, &tx));
    rx.recv().expect("the first call started");
    let (tx2, _rx2) = mpsc::channel();
    match build_report(&User { id: 42 }, &tx2) {
        Err(AppError::Lock(e)) => println!("second caller: {e}"),
        Ok(r) => println!("second caller unexpectedly ran: {r}"),
    }
    println!("first caller: {}", first.join().expect("no panic")?);

    // Another user's report has its own key, so it runs alongside.
    let (tx3, _rx3) = mpsc::channel();
    println!("user 7 meanwhile: {}", build_report(&User { id: 7 }, &tx3)?);

    // 2. `#[once]`: the busy caller is skipped and gets `None`.
    let (tx, rx) = mpsc::channel();
    let first = thread::spawn(move || nightly("reindex", &tx));
    rx.recv().expect("the first call started");
    let (tx2, _rx2) = mpsc::channel();
    println!("second nightly run: {:?}", nightly("reindex", &tx2));
    println!("first nightly run: {:?}", first.join().expect("no panic"));

    // 3. The same thing by hand, for a block of code: a guard that releases on drop.
    let guard = Lock::new("ledger")
        .wait_for(Duration::from_millis(100))
        .acquire()?;
    println!(
        "holding `{}` with fencing token {:?}",
        guard.key(),
        guard.fencing_token()
    );
    match Lock::new("ledger")
        .wait_for(Duration::from_millis(50))
        .acquire()
    {
        Err(e) => println!("while held: {e}"),
        Ok(_) => println!("while held: unexpectedly acquired"),
    }
    drop(guard);
    println!(
        "after release: acquired again = {}",
        Lock::new("ledger").try_acquire()?.is_some()
    );
    Ok(())
}
