//! Multi-process tests every store runs in the same way, each store's test
//! adding the checks of its own (nothing left behind in the store, fencing
//! numbers):
//!
//! - exclusion: processes that each run critical sections on one lock, in
//!   which they read a counter in a file and write it back plus one with no
//!   other protection, so that two holders at once would lose an update;
//! - clean-up: the alias's stale-lock clean-up, run again and again while
//!   processes lock, removes exactly the expired locks and no live one.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};

use super::children::{child_index, report, spawn_children, wait_children};
use super::files::private_dir;

/// The store's URL, from the parent to its children.
const URL_ENV: &str = "LOCK_COUNT_URL";
/// The counter file, from the parent to its children.
const FILE_ENV: &str = "LOCK_COUNT_FILE";

/// In a child that [`count_in_processes`] started: `sections` critical
/// sections on the lock `counter` of the parent's store, then the report
/// `done <sections>`.
pub fn count_in_child(sections: usize) {
    let url = std::env::var(URL_ENV).expect("the parent passes the store's URL");
    let file = PathBuf::from(std::env::var(FILE_ENV).expect("and the counter file"));
    let config = AliasConfig::from_url(&url)
        .expect("the parent's URL")
        .poll_interval(Duration::from_millis(1));
    registry::add("counting", config).expect("register the alias");
    for _ in 0..sections {
        let guard = Lock::new("counter")
            .alias("counting")
            .acquire()
            .expect("acquire");
        unsafe_increment(&file);
        guard.release().expect("still held at release");
    }
    report(format!("done {sections}"));
}

/// Reads the counter and writes it back plus one, with a yield in between,
/// so that a second writer would interleave if it could.
fn unsafe_increment(counter: &Path) {
    let n: u64 = fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::thread::yield_now();
    fs::write(counter, (n + 1).to_string()).expect("write the counter");
}

/// In the parent: runs `processes` children of the test `test` (whose
/// child role calls [`count_in_child`] with `sections`) against the store
/// at `url`, and how long they took.
///
/// # Panics
/// Unless every child counted its sections and the counter ends exact.
pub fn count_in_processes(
    test: &str,
    url: &str,
    processes: usize,
    sections: usize,
    timeout: Duration,
) -> Duration {
    let dir = private_dir("counting");
    let file = dir.join("counter");
    fs::write(&file, "0").expect("create the counter");
    let started = Instant::now();
    let children = wait_children(
        spawn_children(
            test,
            "counter",
            processes,
            &[(URL_ENV, url), (FILE_ENV, &file.display().to_string())],
        ),
        timeout,
    );
    let took = started.elapsed();
    for c in &children {
        assert_eq!(c.reports(), vec![format!("done {sections}")]);
    }
    let count = fs::read_to_string(&file).expect("read the counter");
    assert_eq!(
        count,
        (processes * sections).to_string(),
        "updates were lost: the lock let two processes in at once"
    );
    println!("{processes} processes x {sections} sections in {took:?}");
    fs::remove_dir_all(dir).ok();
    took
}

/// Locks whose lease ran out, left for the clean-up to remove.
const STALE: usize = 40;

/// In a child that [`clean_up_beside_processes`] started: locks and
/// releases a few keys for 1.5 s, each held with a long lease, checking
/// that no clean-up took one; reports `clean true`.
pub fn lock_beside_clean_ups() {
    let url = std::env::var(URL_ENV).expect("the parent passes the store's URL");
    let config = AliasConfig::from_url(&url)
        .expect("the parent's URL")
        .poll_interval(Duration::from_millis(1));
    registry::add("cleaned", config).expect("register the alias");
    let me = child_index().expect("a child");
    let mut sections = 0;
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        let guard = Lock::new(format!("busy-{}", sections % 3))
            .alias("cleaned")
            .expire(Duration::from_secs(60))
            .acquire()
            .expect("acquire");
        std::thread::sleep(Duration::from_micros(200));
        assert!(
            !guard.is_lost(),
            "child {me}: the clean-up took a live lock"
        );
        // Fails if the clean-up removed the lock while it was held.
        guard.release().expect("still held after clean-ups");
        sections += 1;
    }
    report(format!("clean {}", sections > 0));
}

/// In the parent: leaves [`STALE`] locks to expire and holds one live lock
/// on the store at `url`, then runs `alias.clean_up(0)` for 1.2 s while
/// `processes` children of the test `test` (whose child role calls
/// [`lock_beside_clean_ups`]) lock beside it. `before` is called with the
/// number of locks the store should hold then (stale and live).
///
/// # Panics
/// Unless the clean-ups removed exactly the stale locks, every child's
/// locks survived them, and so did the live one.
pub fn clean_up_beside_processes(
    test: &str,
    url: &str,
    processes: usize,
    timeout: Duration,
    before: impl FnOnce(usize),
) {
    let alias_name = format!("cleaning-{}", std::process::id());
    registry::add(
        alias_name.clone(),
        AliasConfig::from_url(url).expect("the URL"),
    )
    .expect("register the alias");
    let alias = registry::alias(&alias_name).expect("registered");
    for i in 0..STALE {
        drop(
            Lock::new(format!("stale-{i}"))
                .alias(alias_name.clone())
                .expire(Duration::from_millis(20))
                .delete_on_exit(false)
                .acquire()
                .expect("a stale lock"),
        );
    }
    let live = Lock::new("live")
        .alias(alias_name.clone())
        .expire(Duration::from_secs(60))
        .acquire()
        .expect("the live lock");
    std::thread::sleep(Duration::from_millis(50));
    before(STALE + 1);

    let children = spawn_children(test, "locker", processes, &[(URL_ENV, url)]);
    let mut removed = 0;
    let until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < until {
        removed += alias
            .clean_up(Duration::ZERO)
            .expect("a clean-up")
            .expect("the store cleans up");
        std::thread::sleep(Duration::from_millis(2));
    }
    let children = wait_children(children, timeout);
    for c in &children {
        assert_eq!(c.reports(), vec!["clean true".to_owned()]);
    }
    assert_eq!(removed, STALE as u64, "exactly the expired locks");
    assert!(!live.is_lost());
    live.release()
        .expect("the parent's live lock survived every clean-up");
}
