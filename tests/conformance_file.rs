//! The conformance suite (`lock_runtime::testing`) for the file store: each
//! factory call opens a new lock directory in a private temp dir, so
//! behaviours never see each other's files. `cargo test --features file
//! --test conformance_file` runs each behaviour as a test.

#![cfg(feature = "file")]

mod support;

use std::time::Duration;

use lock_runtime::registry::AliasConfig;

/// A fresh directory per call; the directories are left for cargo's temp
/// dir (`CARGO_TARGET_TMPDIR`), since aliases may outlive a behaviour.
fn fresh_dir() -> AliasConfig {
    let dir = support::private_dir("conformance-file");
    let url = format!("file://{}/locks", dir.display());
    AliasConfig::from_url(&url)
        .unwrap()
        .poll_interval(Duration::from_millis(5))
}

lock_runtime::conformance_tests!(conformance_file, fresh_dir);
