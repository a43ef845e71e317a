//! The SQLite store across processes: exclusion with an exact counter, the
//! clean-up while others lock, the file and table created by several
//! processes at once, keys that look like SQL or like the store's own
//! records, and URLs it refuses.

#![cfg(feature = "sqlite")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError};

const PROCESSES: usize = 4;
const DIR_ENV: &str = "SQLITE_LOCK_DIR";
/// Children of the whole file share the machine with the other tests.
const CHILDREN_TIMEOUT: Duration = Duration::from_secs(60);

fn url_of(db: &Path, settings: &str) -> String {
    format!("sqlite://{}{settings}", db.display())
}

/// Rows in the lock table, read with a connection of the test's own.
fn rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM lock_leases", [], |r| r.get(0))
        .unwrap()
}

const SECTIONS: usize = 1_000;

#[test]
fn four_processes_count_exactly() {
    if support::child_role().is_some() {
        return support::count_in_child(SECTIONS);
    }
    let dir = support::private_dir("sqlite-exclusion");
    let db = dir.join("locks.db");
    support::count_in_processes(
        &support::test_name!(),
        &url_of(&db, ""),
        PROCESSES,
        SECTIONS,
        CHILDREN_TIMEOUT,
    );
    assert_eq!(rows(&db), 0, "a lock was left behind");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn clean_up_removes_only_expired_rows_while_processes_lock() {
    if support::child_role().is_some() {
        return support::lock_beside_clean_ups();
    }
    let dir = support::private_dir("sqlite-clean-up");
    let db = dir.join("locks.db");
    support::clean_up_beside_processes(
        &support::test_name!(),
        &url_of(&db, ""),
        PROCESSES,
        CHILDREN_TIMEOUT,
        |held| assert_eq!(rows(&db), held as i64),
    );
    assert_eq!(rows(&db), 0);
    std::fs::remove_dir_all(dir).ok();
}

const ROUNDS: u64 = 8;

#[test]
fn four_processes_create_the_file_and_table_at_once() {
    if support::child_role().is_some() {
        let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
        let start: u64 = std::env::var("SQLITE_LOCK_START").unwrap().parse().unwrap();
        let me = support::child_index().unwrap();
        let mut taken = 0;
        for round in 0..ROUNDS {
            // All four start each round at the same wall-clock moment, on a
            // file none of them has opened yet.
            let at = UNIX_EPOCH + Duration::from_millis(start + round * 150);
            if let Ok(wait) = at.duration_since(SystemTime::now()) {
                std::thread::sleep(wait);
            }
            let url = url_of(&dir.join(format!("round-{round}.db")), "?table=first_use");
            let alias = format!("round-{round}");
            registry::add(alias.clone(), AliasConfig::from_url(&url).unwrap()).unwrap();
            let guard = Lock::new(format!("child-{me}"))
                .alias(alias)
                .try_acquire()
                .expect("no error while others create the table");
            assert!(guard.is_some(), "each child's own key is free");
            taken += 1;
        }
        support::report(format!("took {taken}"));
        return;
    }
    let dir = support::private_dir("sqlite-first-use");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1_000;
    let dir_s = dir.display().to_string();
    let start_s = start.to_string();
    let children = support::wait_children(
        support::spawn_children(
            &support::test_name!(),
            "opener",
            PROCESSES,
            &[
                (DIR_ENV, dir_s.as_str()),
                ("SQLITE_LOCK_START", start_s.as_str()),
            ],
        ),
        CHILDREN_TIMEOUT,
    );
    for c in &children {
        assert_eq!(c.reports(), vec![format!("took {ROUNDS}")]);
    }
    for round in 0..ROUNDS {
        let conn = rusqlite::Connection::open(dir.join(format!("round-{round}.db"))).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fence: i64 = conn
            .query_row("SELECT value FROM first_use_fence", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            fence, PROCESSES as i64,
            "one fencing number per acquisition"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn hostile_keys_are_only_keys() {
    let dir = support::private_dir("sqlite-hostile");
    let db = dir.join("locks.db");
    registry::add(
        "hostile",
        AliasConfig::from_url(&url_of(&db, "?prefix=")).unwrap(),
    )
    .unwrap();
    let keys = [
        "'; DROP TABLE lock_leases; --",
        "\" OR 1=1 --",
        "%",
        "%%:fence",
        "fence",
        "lock_leases_fence",
        "a:b",
        "a%3Ab",
        "nul\0byte",
        "nul",
        "ключ 🔒",
        "_",
        "%_",
    ];
    let mut fences = Vec::new();
    let guards: Vec<_> = keys
        .iter()
        .map(|k| {
            let g = Lock::new(*k).alias("hostile").try_acquire().unwrap();
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
        rows(&db),
        keys.len() as i64,
        "one row per key, the table intact"
    );
    for g in guards {
        g.release().unwrap();
    }
    assert_eq!(rows(&db), 0);
    let after = Lock::new("fence").alias("hostile").acquire().unwrap();
    assert!(after.fencing_token().unwrap() > *fences.last().unwrap());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_urls_and_settings_are_refused_clearly() {
    let cases = [
        ("sqlite://", "names no file"),
        ("sqlite://:memory:", "a file that processes share"),
        ("sqlite:///tmp/x.db?tables=t", "did you mean `table`"),
        ("sqlite:///tmp/x.db?table=lock-leases", "SQL identifier"),
        (
            "sqlite:///tmp/x.db?table=x;DROP%20TABLE%20y",
            "SQL identifier",
        ),
        ("sqlite:///tmp/x.db?table=sqlite_master", "SQLite's own"),
        (
            "sqlite:///tmp/x.db?timeout_ms=0",
            "positive number of milliseconds",
        ),
        ("sqlite:///tmp/x.db?connect_timeout_ms=5", "unknown setting"),
    ];
    for (url, says) in cases {
        let msg = support::config_refused(url);
        assert!(msg.contains(says), "{url}: {msg}");
    }
    // A file that cannot be created is the store's error, at first use.
    let url = "sqlite:///nonexistent-lock-dir/sub/locks.db";
    registry::add("unopenable", AliasConfig::from_url(url).unwrap()).unwrap();
    match Lock::new("k").alias("unopenable").try_acquire() {
        Err(LockError::Backend { source, .. }) => {
            assert!(source.is_connection(), "{source}");
            assert!(
                source
                    .to_string()
                    .contains("/nonexistent-lock-dir/sub/locks.db")
            );
        }
        other => panic!("no such directory: {other:?}"),
    }
}
