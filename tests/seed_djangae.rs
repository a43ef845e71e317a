//! The documented examples of djangae's `contrib.locking`, one test each: the
//! `lock` decorator and context manager (waiting, or bailing with
//! `wait=False`), the lower-level `Lock.acquire` / `release`, the options
//! `steal_after_ms` and `wait_for_ms`, and the two kinds of lock.
//!
//! Kinds: djangae's WEAK kind (memcache) is "good enough" and STRONG
//! (datastore) is shared and reliable. Our embedded memory store is the
//! in-process analogue of WEAK: it excludes threads and tasks of one process
//! only. Redis is the analogue of STRONG: a lock taken through it in one OS
//! process is refused in another. djangae's STRONG locks need a cron job to
//! clean up locks left by crashed holders; ours carry a lease and free
//! themselves, or are taken over with `steal_after`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use lock_runtime::registry::AliasConfig;
use lock_runtime::{Lock, LockError, lock};
use support::{RedisServer, add_alias, held_on};

/// Upper bound for anything that should happen "soon" (a wake-up, a steal).
const PATIENCE: Duration = Duration::from_secs(5);

/// Runs `f` on `n` threads released together, and collects the results.
fn together<T: Send + 'static>(n: usize, f: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (f, start) = (Arc::clone(&f), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                f()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

struct User {
    id: u64,
    token_expired: AtomicBool,
    token: Mutex<String>,
}

static API_CALLS: AtomicUsize = AtomicUsize::new(0);

fn get_new_token_from_external_api(user: &User) -> String {
    let n = API_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    // A slow remote call: without the lock, every caller would get here.
    std::thread::sleep(Duration::from_millis(20));
    format!("token-{}-{n}", user.id)
}

#[lock("djangae-refresh-token-<user.id>")]
fn refresh_user_oauth_token(user: &User) -> Result<(), LockError> {
    if user.token_expired.load(Ordering::SeqCst) {
        let new_token = get_new_token_from_external_api(user);
        *user.token.lock().unwrap() = new_token;
        user.token_expired.store(false, Ordering::SeqCst);
    }
    Ok(())
}

// Seed: `@lock('my_lock')` on `refresh_user_oauth_token(user)`: callers run
// the function one at a time, so when many find the token expired at once,
// only the first fetches a new one and the others see it refreshed.
#[test]
fn the_decorator_lets_one_caller_refresh_the_token() {
    let user = Arc::new(User {
        id: 7,
        token_expired: AtomicBool::new(true),
        token: Mutex::new("stale".into()),
    });
    let results = {
        let user = Arc::clone(&user);
        together(8, move || refresh_user_oauth_token(&user))
    };
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        API_CALLS.load(Ordering::SeqCst),
        1,
        "one refresh, not eight"
    );
    assert_eq!(*user.token.lock().unwrap(), "token-7-1");
}

// Seed: `with lock('my_other_lock'): do_something...()`: a block that must
// not run many times at once runs in one thread at a time.
#[test]
fn the_context_manager_runs_the_block_in_one_thread_at_a_time() {
    static INSIDE: AtomicUsize = AtomicUsize::new(0);
    let most = together(4, || {
        let mut most = 0;
        for _ in 0..200 {
            let _guard = Lock::new("djangae-my-other-lock").acquire().unwrap();
            most = most.max(INSIDE.fetch_add(1, Ordering::SeqCst) + 1);
            std::thread::yield_now();
            INSIDE.fetch_sub(1, Ordering::SeqCst);
        }
        most
    });
    assert_eq!(most.into_iter().max(), Some(1));
}

static BAILING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[lock("djangae-bail", wait = false, raise = false)]
fn my_function() -> u32 {
    BAILING_RUNS.fetch_add(1, Ordering::SeqCst);
    42
}

// Seed: `@lock('my_lock', wait=False)`: when another thread holds the lock,
// the decorated function is simply not called.
#[test]
fn the_decorator_without_waiting_does_not_call_the_function() {
    assert_eq!(my_function(), Some(42));
    let (holding_tx, holding) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let other_thread = std::thread::spawn(move || {
        let _guard = Lock::new("djangae-bail").acquire().unwrap();
        holding_tx.send(()).unwrap();
        let _ = done.recv();
    });
    holding.recv().unwrap();
    assert_eq!(my_function(), None);
    assert_eq!(BAILING_RUNS.load(Ordering::SeqCst), 1, "not called");
    done_tx.send(()).unwrap();
    other_thread.join().unwrap();
    assert_eq!(my_function(), Some(42));
}

// Seed: `with lock('my_lock', wait=False)` raising `LockAcquisitionError` on
// entry when the lock is held, which the caller catches and passes over.
#[test]
fn the_context_manager_without_waiting_raises() {
    let _holder = Lock::new("djangae-bail-block").acquire().unwrap();
    let started = Instant::now();
    match Lock::new("djangae-bail-block").wait(false).acquire() {
        Err(LockError::Busy { key, .. }) => assert_eq!(key, "djangae-bail-block"),
        other => panic!("expected Busy (LockAcquisitionError), got {other:?}"),
    }
    assert!(started.elapsed() < PATIENCE, "it did not wait");
}

// Seed: the lower-level interface: `Lock.acquire('my_lock')` returns a lock
// object (or `None` with `wait=False` when another holds it), and
// `lock.release()` lets it go.
#[test]
fn the_lower_level_interface_acquires_and_releases_by_hand() {
    let lock = Lock::new("djangae-low-level");
    let acquired = lock.acquire().unwrap();
    assert_eq!(acquired.key(), "djangae-low-level");
    assert!(lock.try_acquire().unwrap().is_none(), "`None` while held");
    acquired.release().expect("it was ours to release");
    let again = lock.try_acquire().unwrap().expect("free after release");
    again.release().unwrap();
}

#[lock("djangae-steal-decorated", steal_after_ms = 150)]
fn take_over() -> Result<(), LockError> {
    Ok(())
}

// Seed: `steal_after_ms`: an existing lock older than this is ignored, so a
// holder that got stuck (or died) cannot block everyone for ever. A young
// lock is still respected, and the old holder cannot release what is no
// longer its lock.
#[test]
fn steal_after_takes_over_an_old_lock() {
    let stuck_since = Instant::now();
    let stuck = Lock::new("djangae-steal").acquire().unwrap();
    let thief = Lock::new("djangae-steal").steal_after(Duration::from_millis(150));
    assert!(
        thief.clone().wait(false).acquire().unwrap_err().is_busy(),
        "a young lock is respected"
    );
    let stolen = thief.wait_for(PATIENCE).acquire().expect("taken over");
    let age = stuck_since.elapsed();
    assert!(age >= Duration::from_millis(150), "stolen after {age:?}");
    assert!(age < PATIENCE, "stolen after {age:?}");
    assert!(stuck.release().unwrap_err().is_not_held());
    assert!(
        held_on("default", "djangae-steal"),
        "the thief still holds it"
    );
    drop(stolen);

    let stuck = Lock::new("djangae-steal-decorated").acquire().unwrap();
    take_over().expect("the decorated function steals it too");
    assert!(stuck.release().unwrap_err().is_not_held());
}

#[lock("djangae-wait-for", wait_for_ms = 200)]
fn impatient() -> Result<(), LockError> {
    Ok(())
}

#[lock("djangae-wait-for-ok", wait_for_ms = 5000)]
fn patient() -> Result<(), LockError> {
    Ok(())
}

// Seed: `wait_for_ms`: the longest time to wait for the lock before giving
// up; a lock freed within that time is taken.
#[test]
fn wait_for_gives_up_after_the_limit() {
    let _holder = Lock::new("djangae-wait-for").acquire().unwrap();
    let started = Instant::now();
    match impatient() {
        Err(LockError::Timeout { waited, .. }) => {
            assert!(waited >= Duration::from_millis(200), "{waited:?}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < PATIENCE,
        "{waited:?}"
    );

    let holder = Lock::new("djangae-wait-for-ok").acquire().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(holder);
    });
    patient().expect("freed within the limit");
    releaser.join().unwrap();
}

/// Registers `name` as a "strong" alias on the Redis server the parent
/// started. Each test has its own name (and server): parallel tests must not
/// repoint each other's alias.
fn strong_alias(name: &'static str, url: &str) -> &'static str {
    add_alias(
        name,
        AliasConfig::from_url(url)
            .unwrap()
            .default_lease(Duration::from_secs(2)),
    )
}

fn probe(lock: Lock) -> &'static str {
    match lock.wait(false).acquire() {
        Ok(_) => "acquired",
        Err(e) if e.is_busy() => "busy",
        Err(e) => panic!("{e}"),
    }
}

/// Re-runs `test` as one child process playing `role`; returns its reports.
fn probe_in_child(test: &str, role: &str, url: &str) -> Vec<String> {
    let children = support::run_children(test, role, 1, &[("REDIS_URL", url)]);
    children.iter().flat_map(|c| c.reports()).collect()
}

// Seed: `kind=LOCK_KINDS.WEAK` vs `LOCK_KINDS.STRONG`: a weak lock is not
// guaranteed to exclude everyone; a strong one is, wherever the code runs.
// Here: a lock held in the memory store of this process is not seen by
// another OS process, while a lock held through Redis is refused there
// until it is released.
#[test]
fn a_strong_lock_spans_processes_and_a_weak_one_does_not() {
    match support::child_role().as_deref() {
        Some("weak") => support::report(probe(Lock::new("djangae-kind"))),
        Some("strong") => {
            let url = std::env::var("REDIS_URL").unwrap();
            let alias = strong_alias("djangae-strong-kind", &url);
            support::report(probe(Lock::new("djangae-kind").alias(alias)));
        }
        Some(other) => panic!("unknown role {other}"),
        None => {
            let server = RedisServer::start();
            let url = server.url();
            let alias = strong_alias("djangae-strong-kind", &url);
            let test = support::test_name!();

            let weak = Lock::new("djangae-kind").acquire().unwrap();
            assert_eq!(probe_in_child(&test, "weak", &url), ["acquired"]);
            drop(weak);

            let strong = Lock::new("djangae-kind").alias(alias).acquire().unwrap();
            assert_eq!(probe_in_child(&test, "strong", &url), ["busy"]);
            strong.release().unwrap();
            assert_eq!(probe_in_child(&test, "strong", &url), ["acquired"]);
        }
    }
}

// Seed: the STRONG kind's clean-up of locks left behind (djangae runs a cron
// job for it). A process that dies holding a lock leaves its key in Redis;
// without any clean-up job, the lock frees itself when its lease runs out,
// and `steal_after` takes over one with a long lease sooner.
#[test]
fn locks_of_a_crashed_process_are_cleaned_up_without_a_cron_job() {
    match support::child_role().as_deref() {
        Some("crash") => {
            let alias = strong_alias("djangae-strong-crash", &std::env::var("REDIS_URL").unwrap());
            // A renewed lease (the alias's 2 s) and a fixed long one; both
            // guards are leaked, and the process ends without releasing.
            std::mem::forget(Lock::new("djangae-crashed").alias(alias).acquire().unwrap());
            std::mem::forget(
                Lock::new("djangae-crashed-long")
                    .alias(alias)
                    .expire(Duration::from_secs(60))
                    .acquire()
                    .unwrap(),
            );
            support::report("holding both");
        }
        Some(other) => panic!("unknown role {other}"),
        None => {
            let server = RedisServer::start();
            let url = server.url();
            let alias = strong_alias("djangae-strong-crash", &url);
            let children = support::run_children(
                &support::test_name!(),
                "crash",
                1,
                &[("REDIS_URL", url.as_str())],
            );
            assert_eq!(children[0].reports(), ["holding both"]);
            assert!(server.exists("lock:djangae-crashed"), "left behind");
            let left = server.pttl("lock:djangae-crashed-long");
            assert!(left > 50_000, "left behind with its lease: PTTL {left}");

            let started = Instant::now();
            let freed = Lock::new("djangae-crashed")
                .alias(alias)
                .wait_for(PATIENCE)
                .acquire()
                .expect("the lease ran out");
            assert!(started.elapsed() < PATIENCE);
            freed.release().unwrap();

            let stolen = Lock::new("djangae-crashed-long")
                .alias(alias)
                .steal_after(Duration::from_millis(300))
                .wait_for(PATIENCE)
                .acquire()
                .expect("taken over long before its 60 s lease ends");
            let value = server.get("lock:djangae-crashed-long").unwrap();
            assert!(value.starts_with(stolen.token().encode().as_str()));
            stolen.release().unwrap();
        }
    }
}
