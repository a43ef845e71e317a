//! The conformance suite (`lock_runtime::testing`) for a quorum (Redlock) of
//! three private `redis-server`s that this test binary starts:
//! `cargo test conformance_quorum` runs each behaviour as a test.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use lock_runtime::registry::AliasConfig;
use support::RedisServer;

/// Three servers for every behaviour: each registers an alias of its own and
/// uses keys of its own. Never dropped; they die with the test process.
fn servers() -> &'static [RedisServer] {
    static SERVERS: OnceLock<Vec<RedisServer>> = OnceLock::new();
    SERVERS.get_or_init(|| (0..3).map(|_| RedisServer::start()).collect())
}

fn quorum() -> AliasConfig {
    // A quorum's waiters poll; the default 100 ms would make the exclusion
    // behaviours (hundreds of hand-overs) take minutes.
    AliasConfig::quorum(servers().iter().map(RedisServer::url))
        .poll_interval(Duration::from_millis(5))
}

lock_runtime::conformance_tests!(conformance_quorum, quorum,);
