//! The conformance suite (`lock_runtime::testing`) for the memcached store,
//! against one private `memcached` that this test binary starts: `cargo
//! test --features memcache --test conformance_memcache` runs each
//! behaviour as a test. Each behaviour has an alias (a namespace) of its
//! own on the shared server.

#![cfg(feature = "memcache")]

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use lock_runtime::registry::AliasConfig;
use lock_runtime::testing::Options;
use support::memcached::MemcachedServer;

/// One server for every behaviour. Never dropped; it dies with the test
/// process.
fn server() -> &'static MemcachedServer {
    static SERVER: OnceLock<MemcachedServer> = OnceLock::new();
    SERVER.get_or_init(MemcachedServer::start)
}

fn memcache() -> AliasConfig {
    AliasConfig::from_url(&server().url())
        .expect("a memcache URL")
        .poll_interval(Duration::from_millis(5))
}

// A lease of 1 s, memcached's TTL unit. The store keeps exact lease ends in
// its records, and the suite passes at its default 300 ms too; 1 s leaves
// its timing checks more room on a loaded machine.
lock_runtime::conformance_tests!(
    conformance_memcache,
    memcache,
    options = Options::default().lease(Duration::from_secs(1)),
    ignore = {
        listing_names_the_holder: "memcached items record no holder, and memcached cannot list keys",
    },
);
