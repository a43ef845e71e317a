//! The conformance suite (`lock_runtime::testing`) for the Postgres store,
//! against one private Postgres server that this test binary starts:
//! `cargo test --features postgres --test conformance_postgres` runs each
//! behaviour as a test.

#![cfg(feature = "postgres")]

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use lock_runtime::registry::AliasConfig;
use lock_runtime::testing::Options;
use support::postgres::PostgresServer;

/// One server for every behaviour: each registers an alias of its own and
/// uses keys of its own. Never dropped; it dies with the test process.
fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

// A lease of 1 s rather than 300 ms: the suite times a lock from before its
// first acquisition, and on a fresh alias that one also connects, checks
// the table and prepares the statements before the database stamps the
// lock's start (tens of ms on a loaded 2-core machine, past the 300 ms
// lease's 17 ms allowance for early events).
lock_runtime::conformance_tests!(
    conformance_postgres,
    || AliasConfig::from_url(&server().url()).expect("a postgres URL"),
    options = Options::default().lease(Duration::from_secs(1)),
);
