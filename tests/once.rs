//! `#[once]` (and `raise = false`): when the lock is taken elsewhere the body
//! is skipped and the function returns `None`; `-> T` becomes `Option<T>`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use lock_runtime::{Lock, lock, once};

fn is_free(key: &str) -> bool {
    Lock::new(key.to_owned()).try_acquire().unwrap().is_some()
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[once("once-concurrent")]
fn nightly(inside: &Barrier, leave: &Barrier) -> usize {
    RUNS.fetch_add(1, Ordering::SeqCst);
    inside.wait();
    leave.wait();
    7
}

#[test]
fn a_concurrent_second_call_returns_none_without_running() {
    let inside = Arc::new(Barrier::new(2));
    let leave = Arc::new(Barrier::new(2));
    let first = {
        let (inside, leave) = (Arc::clone(&inside), Arc::clone(&leave));
        std::thread::spawn(move || nightly(&inside, &leave))
    };
    inside.wait();
    // The first call is inside its body now; a second one must skip. Its own
    // barriers are never waited on, so running the body would hang.
    let never = Barrier::new(2);
    assert_eq!(nightly(&never, &never), None);
    leave.wait();
    assert_eq!(first.join().unwrap(), Some(7));
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(
        nightly(&Barrier::new(1), &Barrier::new(1)),
        Some(7),
        "free again"
    );
}

#[once("once-returns-<job>")]
fn job_len(job: &str) -> usize {
    job.len()
}

#[test]
fn return_type_becomes_option() {
    let n: Option<usize> = job_len("reindex");
    assert_eq!(n, Some(7));
    let _held = Lock::new("once-returns-reindex").acquire().unwrap();
    assert_eq!(job_len("reindex"), None);
    assert_eq!(job_len("other"), Some(5));
}

static UNIT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[once("once-unit")]
fn no_return_type() {
    UNIT_RUNS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn no_return_type_becomes_option_unit() {
    let ran: Option<()> = no_return_type();
    assert_eq!(ran, Some(()));
    let held = Lock::new("once-unit").acquire().unwrap();
    assert_eq!(no_return_type(), None);
    assert_eq!(UNIT_RUNS.load(Ordering::SeqCst), 1);
    drop(held);
    assert_eq!(no_return_type(), Some(()));
    assert_eq!(UNIT_RUNS.load(Ordering::SeqCst), 2);
}

#[once("once-early-<n>")]
fn early(n: u32) -> &'static str {
    if n == 0 {
        return "zero";
    }
    "other"
}

#[test]
fn return_in_the_body_is_wrapped_and_releases() {
    assert_eq!(early(0), Some("zero"));
    assert_eq!(early(1), Some("other"));
    assert!(is_free("once-early-0"));
}

#[once("once-result")]
fn fallible(ok: bool) -> Result<u8, String> {
    let n: u8 = if ok { "4" } else { "x" }
        .parse()
        .map_err(|_| "bad".to_owned())?;
    Ok(n)
}

#[test]
fn question_mark_in_the_body_stays_inside_the_option() {
    assert_eq!(fallible(true), Some(Ok(4)));
    assert_eq!(fallible(false), Some(Err("bad".to_owned())));
    assert!(is_free("once-result"));
}

#[once("once-borrowed")]
fn borrowed(words: &[String]) -> &str {
    &words[0]
}

#[once("once-impl")]
fn opaque(n: u8) -> impl std::fmt::Display {
    n * 2
}

#[test]
fn elided_lifetimes_and_impl_trait_return_types_work() {
    let words = vec!["hi".to_owned()];
    assert_eq!(borrowed(&words), Some("hi"));
    assert_eq!(opaque(4).map(|d| d.to_string()), Some("8".to_owned()));
}

#[once("once-wait", wait_for_ms = 2000)]
fn waits_when_asked() -> u8 {
    1
}

#[test]
fn wait_for_ms_makes_once_wait() {
    let held = Lock::new("once-wait").acquire().unwrap();
    let waiter = std::thread::spawn(waits_when_asked);
    std::thread::sleep(Duration::from_millis(50));
    drop(held);
    assert_eq!(waiter.join().unwrap(), Some(1));
}

#[once("once-timeout", wait_for_ms = 30)]
fn gives_up() -> u8 {
    1
}

#[test]
fn timing_out_skips_the_body() {
    let _held = Lock::new("once-timeout").acquire().unwrap();
    assert_eq!(gives_up(), None);
}

#[lock("once-lock-raise-false", raise = false, wait = false)]
fn lock_without_raise() -> u8 {
    3
}

#[test]
fn lock_with_raise_false_behaves_like_once() {
    assert_eq!(lock_without_raise(), Some(3));
    let _held = Lock::new("once-lock-raise-false").acquire().unwrap();
    assert_eq!(lock_without_raise(), None);
}

#[once("once-panic")]
fn panics() -> u8 {
    panic!("boom")
}

#[test]
fn panic_in_the_body_releases() {
    assert!(std::panic::catch_unwind(panics).is_err());
    assert!(is_free("once-panic"));
}

#[once("once-bad-alias", alias = "no-such-alias")]
fn bad_alias() -> u8 {
    1
}

#[test]
fn a_failure_other_than_contention_also_skips() {
    assert_eq!(bad_alias(), None);
}

#[once("once-elided-question-mark")]
fn first_word(text: &str) -> Result<&str, String> {
    let word = text.split(' ').find(|w| !w.is_empty()).ok_or("no words")?;
    Ok(word)
}

#[test]
fn question_mark_converts_errors_when_the_return_type_has_elided_lifetimes() {
    assert_eq!(first_word("hi there"), Some(Ok("hi")));
    assert_eq!(first_word(" "), Some(Err("no words".to_owned())));
}
