//! Shared support for the integration tests (and the bench example), one
//! file per job. Unix only, like the servers it starts.
//!
//! - [`redis`]: a real `redis-server` per test ([`RedisServer`]) and a tiny
//!   RESP client ([`RespValue`], [`resp_command`]) to look at what it holds.
//! - [`children`]: re-running one test as child processes ([`child_role`],
//!   [`spawn_children`], [`run_children`], [`report`], [`test_name!`]).
//! - [`locks`]: lock helpers several test files share (`held`, `AppError`,
//!   registering an alias for a server).
//! - [`ports`], [`files`], [`process`]: what any server starter needs (a free
//!   port, a private temp dir ([`private_dir`]) and its log, a process that
//!   dies with the test), so that another store's server (`postgres.rs`,
//!   `memcached.rs`) is one new file next to `redis.rs`.
//!
//! Everything a test uses is re-exported here: write `support::RedisServer`,
//! not `support::redis::RedisServer`.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod children;
pub mod counting;
pub mod files;
pub mod locks;
pub mod memcached;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod server;

pub use self::redis::{
    CMD_TIMEOUT, READY_TIMEOUT, REDIS_SERVER_BIN_ENV, RedisServer, RespValue, resp_command,
};
pub(crate) use children::test_name;
pub use children::{
    CHILD_TIMEOUT, ChildOutput, INDEX_ENV, ROLE_ENV, TestChild, child_index, child_role,
    collect_children, report, run_children, spawn_children, test_name_from_path, wait_children,
};
pub use counting::{
    clean_up_beside_processes, count_in_child, count_in_processes, lock_beside_clean_ups,
};
pub use files::private_dir;
pub use locks::{
    AppError, add_alias, config_refused, held, held_on, is_busy, is_free, lock_error, redis_alias,
    redis_config,
};
pub use ports::free_port;
pub use process::{alive, gone_within, proc_state};
pub use proxy::{Direction, Faults, Proxy};
