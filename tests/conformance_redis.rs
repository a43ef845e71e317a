//! The conformance suite (`lock_runtime::testing`) for the Redis store,
//! against one private `redis-server` that this test binary starts:
//! `cargo test conformance_redis` runs each behaviour as a test.

mod support;

use std::sync::OnceLock;

use lock_runtime::registry::AliasConfig;
use support::RedisServer;

/// One server for every behaviour: each registers an alias of its own and
/// uses keys of its own. Never dropped; it dies with the test process.
fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

lock_runtime::conformance_tests!(conformance_redis, || AliasConfig::redis(server().url()),);
