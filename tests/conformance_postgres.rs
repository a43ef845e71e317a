//! The conformance suite (`lock_runtime::testing`) for the Postgres store,
//! against one private Postgres server that this test binary starts:
//! `cargo test --features postgres --test conformance_postgres` runs each
//! behaviour as a test.

#![cfg(feature = "postgres")]

mod support;

use std::sync::OnceLock;

use lock_runtime::registry::AliasConfig;
use support::postgres::PostgresServer;

/// One server for every behaviour: each registers an alias of its own and
/// uses keys of its own. Never dropped; it dies with the test process.
fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

lock_runtime::conformance_tests!(conformance_postgres, || AliasConfig::from_url(
    &server().url()
)
.expect("a postgres URL"),);
