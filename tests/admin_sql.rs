//! The SQL stores' admin tables against real databases: a lock table made
//! before holders were recorded keeps working (its rows kept, the new
//! columns added when a process first opens it), each process is recorded
//! once, and the audit table stays bounded.

#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod support;

use lock_runtime::Lock;
use lock_runtime::admin::AUDIT_LOG_LEN;
use lock_runtime::registry::{self, AliasConfig};

#[cfg(feature = "postgres")]
#[test]
fn an_older_postgres_table_gains_the_holder_columns() {
    use support::postgres::PostgresServer;

    let server = PostgresServer::start();
    // The table and sequence as the store made them before.
    server.sql(
        "CREATE SEQUENCE old_locks_fence; \
         CREATE TABLE old_locks (key bytea PRIMARY KEY, owner text NOT NULL, \
           fence bigint NOT NULL, acquired_at timestamptz NOT NULL, lease_end timestamptz NOT NULL); \
         INSERT INTO old_locks VALUES ('lock:kept', 'someone', 1, now(), now() + interval '1 hour')",
    );
    let url = format!("{}?table=old_locks", server.url());
    registry::add("admin-pg-old", AliasConfig::from_url(&url).unwrap()).unwrap();
    let alias = registry::alias("admin-pg-old").unwrap();
    let guard = Lock::new("new")
        .alias("admin-pg-old")
        .label("cron")
        .acquire()
        .unwrap();
    let kept = alias.show("kept").unwrap().expect("the old row still held");
    assert_eq!(kept.owner, None, "an old row names no holder");
    let new = alias.show("new").unwrap().unwrap();
    assert_eq!(new.owner.unwrap().label.as_deref(), Some("cron"));
    assert_eq!(
        server.number("SELECT count(*) FROM old_locks_procs"),
        1,
        "one record for this process"
    );
    drop(guard);

    for i in 0..AUDIT_LOG_LEN + 20 {
        alias.force_release(&format!("k{i}"), "bulk").unwrap();
    }
    let rows = server.number("SELECT count(*) FROM old_locks_audit");
    assert!(rows as usize <= AUDIT_LOG_LEN, "{rows} audit rows");
    let log = alias.audit_log(5).unwrap();
    assert_eq!(log[0].key, format!("k{}", AUDIT_LOG_LEN + 19));
}

#[cfg(feature = "sqlite")]
#[test]
fn an_older_sqlite_table_gains_the_holder_columns() {
    let dir = support::private_dir("admin-sqlite-old");
    let path = dir.join("locks.db");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE lock_leases (key TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
               epoch TEXT NOT NULL, acquired_at INTEGER NOT NULL, lease_end INTEGER NOT NULL, \
               fencing INTEGER NOT NULL) WITHOUT ROWID; \
             INSERT INTO lock_leases VALUES ('lock:old', 'someone', 'a-past-boot', 0, 1, 1);",
        )
        .unwrap();
    }
    let url = format!("sqlite://{}", path.display());
    registry::add("admin-sqlite-old", AliasConfig::from_url(&url).unwrap()).unwrap();
    let alias = registry::alias("admin-sqlite-old").unwrap();
    let guard = Lock::new("new")
        .alias("admin-sqlite-old")
        .label("cron")
        .acquire()
        .unwrap();
    let shown = alias.show("new").unwrap().unwrap();
    assert_eq!(shown.owner.unwrap().label.as_deref(), Some("cron"));
    assert!(
        alias.show("old").unwrap().is_none(),
        "a row of another boot"
    );
    let db = rusqlite::Connection::open(&path).unwrap();
    let old: i64 = db
        .query_row(
            "SELECT count(*) FROM lock_leases WHERE key = 'lock:old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 1, "the old row kept");
    drop(guard);
    for i in 0..AUDIT_LOG_LEN + 20 {
        alias.force_release(&format!("k{i}"), "bulk").unwrap();
    }
    let rows: i64 = db
        .query_row("SELECT count(*) FROM lock_leases_audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as usize, AUDIT_LOG_LEN);
}
