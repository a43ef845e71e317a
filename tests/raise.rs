//! `raise = true` (the `#[lock]` default): a lock that cannot be taken is an
//! `Err(E::from(LockError))`, and every way out of the body releases the lock.

mod support;

use std::num::IntErrorKind;
use std::time::{Duration, Instant};

use lock_runtime::{Lock, LockError, lock};
use support::is_free;

#[derive(Debug)]
enum AppError {
    Lock(LockError),
    Parse(std::num::ParseIntError),
    Early,
}

impl From<LockError> for AppError {
    fn from(e: LockError) -> Self {
        AppError::Lock(e)
    }
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Parse(e)
    }
}

#[lock("raise-busy", wait = false)]
fn busy_fails() -> Result<u32, AppError> {
    Ok(1)
}

#[test]
fn busy_is_an_error_value() {
    assert_eq!(busy_fails().unwrap(), 1);
    let held = Lock::new("raise-busy").acquire().unwrap();
    match busy_fails() {
        Err(AppError::Lock(LockError::Busy { key, alias })) => {
            assert_eq!(key, "raise-busy");
            assert_eq!(alias, "default");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    drop(held);
    assert_eq!(busy_fails().unwrap(), 1);
}

#[lock("raise-timeout", wait_for_ms = 50)]
fn waits_then_gives_up() -> Result<(), AppError> {
    Ok(())
}

#[test]
fn wait_for_ms_gives_up_with_timeout() {
    let _held = Lock::new("raise-timeout").acquire().unwrap();
    let started = Instant::now();
    match waits_then_gives_up() {
        Err(AppError::Lock(e @ LockError::Timeout { .. })) => assert!(e.is_timeout()),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[lock("raise-wait", wait_for_ms = 5000)]
fn waits_for_the_holder() -> Result<Instant, AppError> {
    Ok(Instant::now())
}

#[test]
fn waiting_succeeds_once_the_holder_releases() {
    let held = Lock::new("raise-wait").acquire().unwrap();
    let released_at = std::thread::scope(|s| {
        let waiter = s.spawn(waits_for_the_holder);
        std::thread::sleep(Duration::from_millis(50));
        let released_at = Instant::now();
        drop(held);
        let ran_at = waiter.join().unwrap().unwrap();
        assert!(ran_at >= released_at, "the body ran before the release");
        released_at
    });
    assert!(released_at.elapsed() < Duration::from_secs(5));
}

#[lock("raise-question-mark-<input>")]
fn parse(input: &str) -> Result<u32, AppError> {
    let n: u32 = input.parse()?;
    assert!(!is_free(&format!("raise-question-mark-{input}")));
    Ok(n)
}

#[test]
fn question_mark_in_the_body_returns_and_releases() {
    assert_eq!(parse("12").unwrap(), 12);
    match parse("x") {
        Err(AppError::Parse(e)) => assert_eq!(*e.kind(), IntErrorKind::InvalidDigit),
        other => panic!("expected the body's own error, got {other:?}"),
    }
    assert!(is_free("raise-question-mark-x"));
    assert!(is_free("raise-question-mark-12"));
}

#[lock("raise-early-<stop>")]
fn early_return(stop: bool) -> Result<&'static str, AppError> {
    if stop {
        return Err(AppError::Early);
    }
    if !stop {
        return Ok("late");
    }
    unreachable!()
}

#[test]
fn early_return_releases() {
    assert!(matches!(early_return(true), Err(AppError::Early)));
    assert!(is_free("raise-early-true"));
    assert_eq!(early_return(false).unwrap(), "late");
    assert!(is_free("raise-early-false"));
}

#[lock("raise-panic")]
fn panics() -> Result<(), AppError> {
    panic!("boom")
}

#[test]
fn panic_in_the_body_releases() {
    assert!(std::panic::catch_unwind(panics).is_err());
    assert!(is_free("raise-panic"));
}

#[lock("raise-held-during-body")]
fn observes_its_own_lock() -> Result<bool, AppError> {
    Ok(is_free("raise-held-during-body"))
}

#[test]
fn the_lock_is_held_while_the_body_runs_and_not_after() {
    assert!(!observes_its_own_lock().unwrap());
    assert!(is_free("raise-held-during-body"));
}

/// `Box<dyn Error>` works too: `LockError` is an `Error`, so it converts.
#[lock("raise-boxed", wait = false)]
fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

#[test]
fn boxed_errors_carry_the_lock_error() {
    let _held = Lock::new("raise-boxed").acquire().unwrap();
    let err = boxed().unwrap_err();
    let lock_err = err.downcast_ref::<LockError>().expect("a LockError");
    assert!(lock_err.is_busy());
}
