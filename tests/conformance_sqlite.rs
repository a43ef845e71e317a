//! The conformance suite (`lock_runtime::testing`) for the SQLite store:
//! each factory call opens a new database file in a private temp dir, so
//! behaviours never see each other's rows. `cargo test --features sqlite
//! conformance_sqlite` runs each behaviour as a test.

#![cfg(feature = "sqlite")]

mod support;

use std::time::Duration;

use lock_runtime::registry::AliasConfig;

/// A fresh file per call; the directories are left for cargo's temp dir
/// (`CARGO_TARGET_TMPDIR`), since aliases may outlive a behaviour.
fn fresh_sqlite() -> AliasConfig {
    let dir = support::private_dir("conformance-sqlite");
    let url = format!("sqlite://{}/locks.db", dir.display());
    AliasConfig::from_url(&url)
        .unwrap()
        .poll_interval(Duration::from_millis(5))
}

lock_runtime::conformance_tests!(conformance_sqlite, fresh_sqlite);
