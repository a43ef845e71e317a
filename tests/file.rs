//! The file store across processes: exclusion with an exact counter, a
//! SIGKILLed holder's lock free at once, a waiter woken by another
//! process's release, the clean-up while others lock, hostile keys that
//! neither escape the directory nor collide, and URLs it refuses.

#![cfg(feature = "file")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};

const PROCESSES: usize = 4;
const URL_ENV: &str = "FILE_LOCK_URL";
/// Children of the whole file share the machine with the other tests.
const CHILDREN_TIMEOUT: Duration = Duration::from_secs(60);

/// A lock directory inside a private temp dir (so that the test can see
/// that nothing lands beside it), and its URL.
fn lock_dir(name: &str) -> (PathBuf, PathBuf, String) {
    let root = support::private_dir(name);
    let locks = root.join("locks");
    let url = format!("file://{}", locks.display());
    (root, locks, url)
}

/// Registers the alias `shared` on the parent's URL (in a child).
fn shared_from_parent() {
    let url = std::env::var(URL_ENV).expect("the parent passes the URL");
    registry::add(
        "shared",
        AliasConfig::from_url(&url)
            .unwrap()
            .poll_interval(Duration::from_millis(1)),
    )
    .unwrap();
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The key files in the lock directory.
fn key_files(locks: &Path) -> usize {
    names(locks).iter().filter(|n| n.starts_with("k_")).count()
}

fn wall_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

const SECTIONS: usize = 1_000;

#[test]
fn four_processes_count_exactly() {
    if support::child_role().is_some() {
        return support::count_in_child(SECTIONS);
    }
    let (root, locks, url) = lock_dir("file-exclusion");
    support::count_in_processes(
        &support::test_name!(),
        &url,
        PROCESSES,
        SECTIONS,
        CHILDREN_TIMEOUT,
    );
    assert_eq!(key_files(&locks), 0, "a lock file was left behind");
    let fence = std::fs::read_to_string(locks.join("fence")).unwrap();
    assert!(
        fence.starts_with(&format!("{} ", PROCESSES * SECTIONS)),
        "one fencing number per acquisition: {fence:?}"
    );
    std::fs::remove_dir_all(root).ok();
}

/// Takes `key` on `alias` in a child and keeps it (a minute's lease) until
/// killed; the parent sees it held once `busy` says so.
fn hold_until_killed(key: &str) -> ! {
    shared_from_parent();
    let guard = Lock::new(key.to_owned())
        .alias("shared")
        .expire(Duration::from_secs(60))
        .acquire()
        .expect("acquire");
    support::report("holding");
    std::thread::sleep(Duration::from_secs(120));
    drop(guard);
    unreachable!("the parent kills this child long before");
}

/// Polls until another process holds `lock`.
fn until_held_elsewhere(lock: &Lock) {
    let started = Instant::now();
    while lock.try_acquire().unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the child never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_holder_frees_the_lock_at_once() {
    if support::child_role().is_some() {
        hold_until_killed("victim");
    }
    let (root, _locks, url) = lock_dir("file-sigkill");
    // A poll interval and a lease far longer than the time allowed below:
    // only the kernel's wake-up can be that quick.
    let cfg = AliasConfig::from_url(&url)
        .unwrap()
        .poll_interval(Duration::from_secs(10));
    registry::add("sigkill", cfg).unwrap();
    let lock = Lock::new("victim").alias("sigkill");
    let mut children = support::spawn_children(
        &support::test_name!(),
        "holder",
        1,
        &[(URL_ENV, url.as_str())],
    );
    until_held_elsewhere(&lock);

    let waiter = std::thread::spawn({
        let lock = lock.clone().wait_for(Duration::from_secs(30));
        move || {
            let guard = lock.acquire();
            (Instant::now(), guard.map(|g| g.fencing_token()))
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "the waiter took a held lock");
    let killed = Instant::now();
    children[0].child.kill().unwrap(); // SIGKILL: no release, no destructor
    let (got, outcome) = waiter.join().unwrap();
    let fencing = outcome.expect("the waiter gets the dead holder's lock");
    let took = got - killed;
    assert!(
        took < Duration::from_millis(500),
        "the lock was free {took:?} after its holder died (lease 60 s)"
    );
    assert!(fencing.is_some());
    // And free at once for a plain attempt too.
    let outputs = support::collect_children(children, CHILDREN_TIMEOUT);
    assert_eq!(outputs[0].reports(), vec!["holding".to_owned()]);
    assert!(lock.try_acquire().unwrap().is_some());
    std::fs::remove_dir_all(root).ok();
}

#[test]
fn a_waiter_is_woken_by_another_process_release() {
    const HOLD: Duration = Duration::from_millis(400);
    if support::child_role().is_some() {
        shared_from_parent();
        let guard = Lock::new("baton").alias("shared").acquire().unwrap();
        std::thread::sleep(HOLD);
        let released = wall_micros();
        guard.release().unwrap();
        support::report(format!("released {released}"));
        return;
    }
    let (root, _locks, url) = lock_dir("file-wake");
    let cfg = AliasConfig::from_url(&url)
        .unwrap()
        .poll_interval(Duration::from_secs(10));
    registry::add("wake", cfg).unwrap();
    let lock = Lock::new("baton").alias("wake");
    let children = support::spawn_children(
        &support::test_name!(),
        "holder",
        1,
        &[(URL_ENV, url.as_str())],
    );
    until_held_elsewhere(&lock);
    let guard = lock
        .clone()
        .wait_for(Duration::from_secs(30))
        .acquire()
        .unwrap();
    let got = wall_micros();
    drop(guard);
    let outputs = support::wait_children(children, CHILDREN_TIMEOUT);
    let released: u128 = outputs[0].reports()[0]
        .strip_prefix("released ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(got >= released, "granted before the release");
    let late = Duration::from_micros((got - released) as u64);
    // Polling (10 s) or the runtime's one-second second look would be
    // slower.
    assert!(
        late < Duration::from_millis(500),
        "woken {late:?} after another process released"
    );
    std::fs::remove_dir_all(root).ok();
}

#[test]
fn clean_up_removes_only_expired_files_while_processes_lock() {
    if support::child_role().is_some() {
        return support::lock_beside_clean_ups();
    }
    let (root, locks, url) = lock_dir("file-clean-up");
    support::clean_up_beside_processes(
        &support::test_name!(),
        &url,
        PROCESSES,
        CHILDREN_TIMEOUT,
        |held| assert_eq!(key_files(&locks), held),
    );
    assert_eq!(names(&locks), ["fence"], "only the fencing counter is left");
    std::fs::remove_dir_all(root).ok();
}

#[test]
fn hostile_keys_stay_in_the_directory_and_apart() {
    let (root, locks, url) = lock_dir("file-hostile");
    registry::add(
        "hostile",
        AliasConfig::from_url(&format!("{url}?prefix=")).unwrap(),
    )
    .unwrap();
    let long = "../".repeat(22_000); // 66 KiB
    let keys = [
        "/",
        "/etc/passwd",
        "..",
        "../..",
        "../escaped",
        "a/../../b",
        ".",
        "nul\0byte",
        "nul",
        "line\nbreak",
        "line\rbreak",
        "fence",
        "k_fence",
        "k_",
        "a b",
        "a_b",
        "a.b",
        "ключ 🔒",
        "%2F",
        long.as_str(),
    ];
    let mut fences = Vec::new();
    let guards: Vec<_> = keys
        .iter()
        .map(|k| {
            let g = Lock::new(k.to_string())
                .alias("hostile")
                .try_acquire()
                .unwrap();
            let g = g.unwrap_or_else(|| panic!("{k:?} is free: no other key is it"));
            fences.push(g.fencing_token().unwrap());
            g
        })
        .collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    for k in keys {
        assert!(support::held_on("hostile", k), "{k:?} is held");
    }
    assert_eq!(
        names(&root),
        ["locks"],
        "nothing escaped the lock directory"
    );
    let inside = names(&locks);
    assert_eq!(
        inside.len(),
        keys.len() + 1,
        "one file per key, and `fence`: {inside:?}"
    );
    for name in &inside {
        assert!(name == "fence" || name.starts_with("k_"), "{name:?}");
        assert!(name.len() <= 115, "{name:?}");
        assert!(
            std::fs::symlink_metadata(locks.join(name))
                .unwrap()
                .is_file(),
            "{name:?}"
        );
    }
    for g in guards {
        g.release().unwrap();
    }
    assert_eq!(names(&locks), ["fence"]);
    let after = Lock::new("fence").alias("hostile").acquire().unwrap();
    assert!(after.fencing_token().unwrap() > *fences.last().unwrap());
    std::fs::remove_dir_all(root).ok();
}

#[test]
fn bad_urls_and_directories_are_refused_clearly() {
    let root = support::private_dir("file-refused");
    let plain = root.join("plain-file");
    std::fs::write(&plain, "not a directory").unwrap();
    let cases = [
        ("file://".to_owned(), "names no directory"),
        ("file:///tmp/x?tables=t".to_owned(), "unknown setting"),
        (
            "file:///tmp/x?pol_ms=5".to_owned(),
            "did you mean `poll_ms`",
        ),
        (
            "file:///tmp/x?timeout_ms=0".to_owned(),
            "positive number of milliseconds",
        ),
        ("file:///tmp/x%00y".to_owned(), "NUL"),
        (
            format!("file://{}", plain.display()),
            "cannot create the lock directory",
        ),
        (
            format!("file://{}/sub", plain.display()),
            "cannot create the lock directory",
        ),
        (
            "file:///proc/no-locks-here".to_owned(),
            "cannot create the lock directory",
        ),
    ];
    for (url, says) in cases {
        let msg = support::config_refused(&url);
        assert!(msg.contains(says), "{url}: {msg}");
    }
    std::fs::remove_dir_all(root).ok();
}
