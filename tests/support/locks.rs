//! Lock helpers that several test files share: the error type of a
//! `#[lock]` function that can only fail on its lock, asking whether a key is
//! held, and registering an alias for a server started by the test.

use std::fmt::Debug;

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError};

use super::redis::RedisServer;

/// The error of a `#[lock]` function whose only failure is its lock (with
/// `raise = true` the attribute needs `From<LockError>`). A test whose
/// functions fail in other ways too declares its own.
#[derive(Debug)]
pub enum AppError {
    Lock(LockError),
}

impl From<LockError> for AppError {
    fn from(e: LockError) -> Self {
        AppError::Lock(e)
    }
}

/// The lock's error from a call that should have been refused.
///
/// # Panics
/// If the body ran (the call returned `Ok`).
pub fn lock_error<T: Debug>(r: Result<T, AppError>) -> LockError {
    match r {
        Err(AppError::Lock(e)) => e,
        Ok(v) => panic!("expected a LockError, the body ran and returned {v:?}"),
    }
}

/// Whether a call was refused because its lock was busy.
///
/// # Panics
/// If the body ran (the call returned `Ok`).
pub fn is_busy<T: Debug>(r: Result<T, AppError>) -> bool {
    match r {
        Err(AppError::Lock(e)) => e.is_busy(),
        Ok(v) => panic!("expected Busy, the function ran and returned {v:?}"),
    }
}

/// Whether `key` is held on the default alias: a `try_acquire` gets
/// nothing. True for the holder itself too, since locks are not reentrant.
pub fn held(key: &str) -> bool {
    Lock::new(key.to_owned()).try_acquire().unwrap().is_none()
}

/// The opposite of [`held`]: a `try_acquire` on the default alias gets the
/// lock (and gives it back at once).
pub fn is_free(key: &str) -> bool {
    Lock::new(key.to_owned()).try_acquire().unwrap().is_some()
}

/// [`held`], on the alias `alias`.
pub fn held_on(alias: &str, key: &str) -> bool {
    Lock::new(key.to_owned())
        .alias(alias.to_owned())
        .try_acquire()
        .expect("a lock attempt")
        .is_none()
}

/// Registers `config` as the alias `name` and returns the name, for
/// `Lock::alias` or a `#[lock(alias = ...)]`.
pub fn add_alias(name: &'static str, config: AliasConfig) -> &'static str {
    registry::add(name, config).unwrap_or_else(|e| panic!("cannot add the alias {name}: {e}"));
    name
}

/// The settings of an alias for `server`, as its URL gives them: add to
/// them, then [`add_alias`].
pub fn redis_config(server: &RedisServer) -> AliasConfig {
    AliasConfig::from_url(&server.url()).expect("a RedisServer's URL is valid")
}

/// An alias named `name` for `server`, with the default settings; returns
/// the name.
pub fn redis_alias(server: &RedisServer, name: &'static str) -> &'static str {
    add_alias(name, redis_config(server))
}

/// The message of the configuration error an alias URL is refused with,
/// whether parsing or registering refuses it.
///
/// # Panics
/// If the URL is accepted, or refused with another kind of error.
pub fn config_refused(url: &str) -> String {
    match AliasConfig::from_url(url).and_then(|cfg| registry::add("refused", cfg)) {
        Err(e @ LockError::Config { .. }) => e.to_string(),
        Err(other) => panic!("{url}: not a config error: {other:?}"),
        Ok(()) => panic!("{url} was accepted"),
    }
}
