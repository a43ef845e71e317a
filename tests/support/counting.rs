//! The exclusion test every store runs in the same way: processes that each
//! run critical sections on one lock, in which they read a counter in a
//! file and write it back plus one with no other protection, so that two
//! holders at once would lose an update. Each store's test adds the checks
//! of its own (nothing left behind in the store, fencing numbers).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};

use super::children::{report, spawn_children, wait_children};
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
