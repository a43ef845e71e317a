//! The one error type of the crate, [`LockError`], and the error a backend
//! reports, [`BackendError`]. Every variant says when it happens and what to do.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong when taking, holding or giving back a lock.
///
/// Match on the variants, or use the predicates ([`is_busy`](Self::is_busy),
/// [`is_timeout`](Self::is_timeout), ...). The enum is `#[non_exhaustive]`:
/// keep a `_` arm.
///
/// ```
/// use lock_runtime::{Lock, LockError};
///
/// let held = Lock::new("invoice-42").acquire().unwrap();
/// match Lock::new("invoice-42").wait(false).acquire() {
///     Err(LockError::Busy { key, .. }) => assert_eq!(key, "invoice-42"),
///     other => panic!("expected Busy, got {other:?}"),
/// }
/// drop(held);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LockError {
    /// The lock is held by another owner and the request did not wait
    /// (`wait = false`, or [`Lock::try_acquire`](crate::Lock::try_acquire)'s
    /// error-raising twin). The seeds call this `LockActiveError`.
    ///
    /// What to do: retry later, wait (`wait = true`), or skip the work
    /// (`raise = false`, `#[once]`).
    Busy {
        /// The lock's key, without the alias prefix.
        key: String,
        /// The alias the lock was requested on.
        alias: String,
    },

    /// The lock stayed busy for the whole of `wait_for` (`wait_for_ms`).
    ///
    /// What to do: raise `wait_for`, or treat it like [`LockError::Busy`].
    Timeout {
        /// The lock's key, without the alias prefix.
        key: String,
        /// The alias the lock was requested on.
        alias: String,
        /// How long the request waited before giving up.
        waited: Duration,
    },

    /// The alias named in `alias = "..."` is not configured.
    ///
    /// What to do: add it to [`registry::configure`](crate::registry::configure),
    /// or fix the spelling; `known` lists what exists.
    UnknownAlias {
        /// The name that was asked for.
        name: String,
        /// The aliases that are configured, sorted.
        known: Vec<String>,
    },

    /// A release or extend found that this guard no longer owns the lock: its
    /// lease ran out and somebody else took it, it was stolen with
    /// `steal_after`, or it was deleted behind the holder's back.
    ///
    /// What to do: the work done under the lock may have overlapped with
    /// another holder's. Use a longer `expire`, let the lease renew itself
    /// (no `expire`), or check [`LockGuard::is_lost`](crate::LockGuard::is_lost).
    NotHeld {
        /// The lock's key, without the alias prefix.
        key: String,
        /// The alias the lock was requested on.
        alias: String,
    },

    /// The options of a lock request contradict each other or are out of range
    /// (a zero duration, `wait(false)` with `wait_for`, `delete_on_exit(false)`
    /// without `expire`, ...). The macros catch these at compile time; the
    /// builder reports them here.
    ///
    /// What to do: change the option named in `option`, as `reason` says.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::{Lock, LockError};
    ///
    /// match Lock::new("k").expire(Duration::ZERO).acquire() {
    ///     Err(LockError::InvalidOptions { option, .. }) => assert_eq!(option, "expire"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    #[non_exhaustive]
    InvalidOptions {
        /// The builder option (or attribute option, or guard method) that is
        /// wrong: `"key"`, `"expire"`, `"wait_for"`, `"steal_after"`,
        /// `"delete_on_exit"`, `"extend"`, `"fencing"`, ...
        option: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// An alias configuration could not be used: a malformed URL, an unknown
    /// scheme, an out-of-range setting, or a backend whose cargo feature is off.
    /// Reported by [`registry::configure`](crate::registry::configure), never
    /// at first use.
    ///
    /// What to do: fix the setting named in `setting` of the alias named in
    /// `alias`, as `reason` says.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::LockError;
    ///
    /// match AliasConfig::from_url("memory://?poll_ms=0") {
    ///     Err(LockError::Config { setting, .. }) => assert_eq!(setting, "poll_ms"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    #[non_exhaustive]
    Config {
        /// The alias whose configuration is wrong (empty when the error comes
        /// from [`AliasConfig::from_url`](crate::registry::AliasConfig::from_url),
        /// before the alias has a name).
        alias: String,
        /// The setting that is wrong, as the user wrote it: a URL setting
        /// (`"lease_ms"`), a builder setting (`"poll_interval"`), `"url"` for
        /// the URL as a whole, `"name"` for the alias name, or the environment
        /// variable it came from.
        setting: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The backend failed: unreachable, timed out, or answered something
    /// unexpected. The lock was not acquired (or, for a release, may still
    /// be held until its lease runs out).
    ///
    /// What to do: see `source`; [`BackendError::kind`] says whether it was a
    /// connection failure, a timeout or a protocol error.
    Backend {
        /// The alias whose backend failed.
        alias: String,
        /// The lock's key, without the alias prefix.
        key: String,
        /// What the runtime was doing.
        op: Operation,
        /// The backend's own error. Its message is part of this error's
        /// message, so [`source`](std::error::Error::source) goes on with
        /// the error below it, and an error report prints each cause once.
        source: BackendError,
    },

    /// The alias's store cannot do what was asked of it: an admin operation
    /// ([`Alias::list`](crate::registry::Alias::list),
    /// [`show`](crate::registry::Alias::show),
    /// [`force_release`](crate::registry::Alias::force_release),
    /// [`audit_log`](crate::registry::Alias::audit_log)) on a store without
    /// the ability, or one the store refuses by its nature (a file store
    /// cannot free a lock the kernel holds for another process). Nothing
    /// was changed.
    ///
    /// What to do: `what` says what cannot be done, and when the store
    /// knows, what to do instead (stop the holding process, say).
    ///
    /// ```
    /// use lock_runtime::LockError;
    ///
    /// let e = LockError::Unsupported { alias: "files".into(), what: "keep an audit log".into() };
    /// assert_eq!(e.to_string(), "the store of lock alias `files` cannot keep an audit log");
    /// ```
    Unsupported {
        /// The alias whose store cannot do it.
        alias: String,
        /// What it cannot do, as a phrase after "cannot" (and why, or what
        /// to do instead, when the store says).
        what: String,
    },
}

impl LockError {
    /// True for [`LockError::Unsupported`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use lock_runtime::backend::{Attempt, BackendError, Busy, Request, Store, Token};
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// // A store with none of the admin abilities.
    /// struct Plain;
    /// impl Store for Plain {
    ///     fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> { Ok(Attempt::Busy(Busy::new(None))) }
    ///     fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> { Ok(false) }
    ///     fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> { Ok(false) }
    /// }
    ///
    /// registry::add("doc-error-unsupported", AliasConfig::store(Arc::new(Plain))).unwrap();
    /// let alias = registry::alias("doc-error-unsupported").unwrap();
    /// assert!(alias.force_release("k", "stuck").unwrap_err().is_unsupported());
    /// ```
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }

    /// True for [`LockError::Busy`].
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let _held = Lock::new("doc-error-is-busy").acquire().unwrap();
    /// let err = Lock::new("doc-error-is-busy").wait(false).acquire().unwrap_err();
    /// assert!(err.is_busy());
    /// assert!(!err.is_timeout());
    /// ```
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// True for [`LockError::Timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let _held = Lock::new("doc-error-is-timeout").acquire().unwrap();
    /// let err = Lock::new("doc-error-is-timeout")
    ///     .wait_for(Duration::from_millis(20))
    ///     .acquire()
    ///     .unwrap_err();
    /// assert!(err.is_timeout());
    /// assert!(!err.is_busy());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// True for [`LockError::NotHeld`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let guard = Lock::new("doc-error-is-not-held")
    ///     .expire(Duration::from_millis(20))
    ///     .acquire()
    ///     .unwrap();
    /// std::thread::sleep(Duration::from_millis(40)); // the lease runs out
    /// let err = guard.release().unwrap_err();
    /// assert!(err.is_not_held());
    /// ```
    pub fn is_not_held(&self) -> bool {
        matches!(self, Self::NotHeld { .. })
    }

    /// True for [`LockError::Backend`].
    ///
    /// A store that is down, as a custom backend reports it:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use lock_runtime::backend::{Attempt, Backend, BackendError, BackendErrorKind, Request, Token};
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// struct Down;
    /// impl Backend for Down {
    ///     fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> {
    ///         Err(BackendError::new(BackendErrorKind::Connection, "store is down"))
    ///     }
    ///     fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> {
    ///         Err(BackendError::new(BackendErrorKind::Connection, "store is down"))
    ///     }
    ///     fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> {
    ///         Err(BackendError::new(BackendErrorKind::Connection, "store is down"))
    ///     }
    /// }
    ///
    /// registry::add("doc-error-down", AliasConfig::custom(Arc::new(Down))).unwrap();
    /// let err = Lock::new("report").alias("doc-error-down").acquire().unwrap_err();
    /// assert!(err.is_backend());
    /// assert!(!err.is_contention(), "a failing store is not somebody else's lock");
    /// ```
    pub fn is_backend(&self) -> bool {
        matches!(self, Self::Backend { .. })
    }

    /// True when the lock was simply taken by someone else: [`LockError::Busy`]
    /// or [`LockError::Timeout`]. `#[once]` and `raise = false` skip quietly
    /// on these and report everything else through `tracing`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let _held = Lock::new("doc-error-contention").acquire().unwrap();
    /// let busy = Lock::new("doc-error-contention").wait(false).acquire().unwrap_err();
    /// let timeout = Lock::new("doc-error-contention")
    ///     .wait_for(Duration::from_millis(10))
    ///     .acquire()
    ///     .unwrap_err();
    /// assert!(busy.is_contention() && timeout.is_contention());
    ///
    /// let misconfigured = Lock::new("doc-error-contention").alias("no-such-alias").acquire().unwrap_err();
    /// assert!(!misconfigured.is_contention());
    /// ```
    pub fn is_contention(&self) -> bool {
        self.is_busy() || self.is_timeout()
    }

    /// The lock key this error is about, when it is about one.
    ///
    /// The key is the one given to the lock, without the alias prefix:
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-error-key", AliasConfig::memory_named("doc-error-key").prefix("jobs:")).unwrap();
    /// let lock = Lock::new("rebuild").alias("doc-error-key").wait(false);
    /// let _held = lock.acquire().unwrap();
    /// assert_eq!(lock.acquire().unwrap_err().key(), Some("rebuild"));
    ///
    /// let err = Lock::new("rebuild").alias("no-such-alias").acquire().unwrap_err();
    /// assert_eq!(err.key(), None);
    /// ```
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Busy { key, .. } | Self::Timeout { key, .. } | Self::NotHeld { key, .. } => {
                Some(key)
            }
            Self::Backend { key, op, .. }
                if !matches!(
                    op,
                    Operation::CleanUp | Operation::List | Operation::AuditLog
                ) =>
            {
                Some(key)
            }
            _ => None,
        }
    }

    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidOptions {
            option,
            reason: reason.into(),
        }
    }

    pub(crate) fn config(
        alias: impl Into<String>,
        setting: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Config {
            alias: alias.into(),
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy { key, alias } => {
                write!(f, "lock `{key}` (alias `{alias}`) is held by another owner")
            }
            Self::Timeout { key, alias, waited } => write!(
                f,
                "gave up waiting for lock `{key}` (alias `{alias}`) after {} ms",
                waited.as_millis()
            ),
            Self::UnknownAlias { name, known } => write!(
                f,
                "unknown lock alias `{name}`; configured aliases: {}",
                known.join(", ")
            ),
            Self::NotHeld { key, alias } => write!(
                f,
                "lock `{key}` (alias `{alias}`) is no longer held by this owner"
            ),
            Self::InvalidOptions { reason, .. } => write!(f, "invalid lock options: {reason}"),
            Self::Config { alias, reason, .. } => {
                write!(
                    f,
                    "invalid configuration for lock alias `{alias}`: {reason}"
                )
            }
            Self::Backend {
                alias,
                op: op @ (Operation::CleanUp | Operation::List),
                source,
                ..
            } => write!(
                f,
                "lock backend `{alias}` failed to {op} its locks: {source}"
            ),
            Self::Backend {
                alias,
                op: Operation::AuditLog,
                source,
                ..
            } => write!(
                f,
                "lock backend `{alias}` failed to read its audit log: {source}"
            ),
            Self::Unsupported { alias, what } => {
                write!(f, "the store of lock alias `{alias}` cannot {what}")
            }
            Self::Backend {
                alias,
                key,
                op,
                source,
            } => write!(
                f,
                "lock backend `{alias}` failed to {op} lock `{key}`: {source}"
            ),
        }
    }
}

impl StdError for LockError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // The backend error is printed in the message; the chain goes on
            // below it.
            Self::Backend { source, .. } => source.source(),
            _ => None,
        }
    }
}

/// What the runtime was doing when a backend failed; part of
/// [`LockError::Backend`].
///
/// ```
/// use lock_runtime::backend::{BackendError, BackendErrorKind};
/// use lock_runtime::{LockError, Operation};
///
/// let err = LockError::Backend {
///     alias: "shared".into(),
///     key: "invoice-7".into(),
///     op: Operation::Release,
///     source: BackendError::new(BackendErrorKind::Timeout, "no reply"),
/// };
/// // A failed release frees itself when the lease ends; a failed acquire
/// // is the one worth retrying.
/// assert!(matches!(err, LockError::Backend { op: Operation::Release, .. }));
/// assert!(err.to_string().contains("failed to release lock `invoice-7`"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Taking the lock (including waiting for it).
    Acquire,
    /// Giving the lock back.
    Release,
    /// Renewing the lease.
    Extend,
    /// Deleting the records of stale locks
    /// ([`Alias::clean_up`](crate::registry::Alias::clean_up)); the error's
    /// key is empty.
    CleanUp,
    /// Listing the locks held
    /// ([`Alias::holders`](crate::registry::Alias::holders)); the error's
    /// key is empty.
    List,
    /// Showing one lock ([`Alias::show`](crate::registry::Alias::show)).
    Show,
    /// Releasing a lock whoever holds it
    /// ([`Alias::force_release`](crate::registry::Alias::force_release)).
    ForceRelease,
    /// Reading the audit log of forced releases
    /// ([`Alias::audit_log`](crate::registry::Alias::audit_log)); the
    /// error's key is empty.
    AuditLog,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Acquire => "acquire",
            Self::Release => "release",
            Self::Extend => "extend",
            Self::CleanUp => "clean up",
            Self::List => "list",
            Self::Show => "show",
            Self::ForceRelease => "force-release",
            Self::AuditLog => "read the audit log of",
        })
    }
}

/// The kind of a [`BackendError`], for deciding whether to retry.
///
/// ```
/// use lock_runtime::backend::{BackendError, BackendErrorKind};
///
/// fn worth_retrying(e: &BackendError) -> bool {
///     matches!(
///         e.kind(),
///         BackendErrorKind::Connection | BackendErrorKind::Timeout | BackendErrorKind::Quorum
///     )
/// }
///
/// assert!(worth_retrying(&BackendError::new(BackendErrorKind::Timeout, "no reply")));
/// assert!(!worth_retrying(&BackendError::new(BackendErrorKind::Protocol, "READONLY replica")));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The store could not be reached (refused, reset, DNS, TLS). Retrying
    /// after the store comes back works.
    Connection,
    /// The store did not answer within the alias's timeout.
    Timeout,
    /// The store answered, but not as expected (a script error, a reply of the
    /// wrong type, a read-only replica, ...). Usually a deployment problem.
    Protocol,
    /// A quorum alias could not settle the request: fewer nodes than a
    /// majority granted it, or a majority did but only after the lease ran
    /// out (then raise `lease_ms` or lower `timeout_ms`). The message lists
    /// each node's outcome; the source is a `QuorumError` saying which.
    Quorum,
    /// The store cannot do this at all (an admin operation it has no way
    /// to do, or refuses by its nature); retrying never helps. The runtime
    /// reports it as [`LockError::Unsupported`].
    Unsupported,
    /// Anything else a custom backend reports.
    Other,
}

/// The error a [`Backend`](crate::backend::Backend) returns. It carries a
/// [`BackendErrorKind`] and the store's own error as its source, and it is
/// cheap to clone.
///
/// ```
/// use lock_runtime::backend::{BackendError, BackendErrorKind};
///
/// let e = BackendError::new(BackendErrorKind::Timeout, "no reply within 2s");
/// assert!(e.is_timeout());
/// assert_eq!(e.to_string(), "timeout: no reply within 2s");
/// ```
#[derive(Clone)]
pub struct BackendError {
    kind: BackendErrorKind,
    source: Arc<dyn StdError + Send + Sync>,
}

impl BackendError {
    /// Wraps any error (or message) with its kind.
    ///
    /// ```
    /// use std::io;
    /// use lock_runtime::backend::{BackendError, BackendErrorKind};
    ///
    /// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
    /// let e = BackendError::new(BackendErrorKind::Connection, refused);
    /// assert_eq!(e.to_string(), "connection failed: refused");
    ///
    /// let e = BackendError::new(BackendErrorKind::Other, format!("shard {} is read-only", 3));
    /// assert_eq!(e.to_string(), "error: shard 3 is read-only");
    /// ```
    pub fn new(kind: BackendErrorKind, error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: Arc::from(error.into()),
        }
    }

    /// What kind of failure this is.
    ///
    /// ```
    /// use lock_runtime::backend::{BackendError, BackendErrorKind};
    ///
    /// let e = BackendError::new(BackendErrorKind::Protocol, "unexpected reply type");
    /// assert_eq!(e.kind(), BackendErrorKind::Protocol);
    /// ```
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// True for [`BackendErrorKind::Timeout`].
    ///
    /// ```
    /// use lock_runtime::backend::{BackendError, BackendErrorKind};
    ///
    /// assert!(BackendError::new(BackendErrorKind::Timeout, "no reply within 2s").is_timeout());
    /// assert!(!BackendError::new(BackendErrorKind::Connection, "refused").is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind == BackendErrorKind::Timeout
    }

    /// True for [`BackendErrorKind::Connection`].
    ///
    /// ```
    /// use lock_runtime::backend::{BackendError, BackendErrorKind};
    ///
    /// assert!(BackendError::new(BackendErrorKind::Connection, "refused").is_connection());
    /// assert!(!BackendError::new(BackendErrorKind::Timeout, "no reply").is_connection());
    /// ```
    pub fn is_connection(&self) -> bool {
        self.kind == BackendErrorKind::Connection
    }

    /// The store's own error.
    ///
    /// Downcast it to the type the backend put in (a Redis alias mostly puts
    /// in `redis::RedisError`, a quorum alias a `backend::redis::QuorumError`):
    ///
    /// ```
    /// use std::io;
    /// use lock_runtime::backend::{BackendError, BackendErrorKind};
    ///
    /// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
    /// let e = BackendError::new(BackendErrorKind::Connection, refused);
    /// let io = e.inner().downcast_ref::<io::Error>().unwrap();
    /// assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    /// ```
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BackendErrorKind::Connection => "connection failed",
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::Protocol => "unexpected reply",
            BackendErrorKind::Quorum => "no quorum",
            BackendErrorKind::Unsupported => "unsupported",
            BackendErrorKind::Other => "error",
        };
        write!(f, "{kind}: {}", self.source)
    }
}

impl StdError for BackendError {
    /// The cause of the store's own error: the store's error itself is
    /// part of this error's message (use [`inner`](Self::inner) to reach it).
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_alias_lists_the_known_ones() {
        let e = LockError::UnknownAlias {
            name: "cache".into(),
            known: vec!["default".into(), "redis".into()],
        };
        assert_eq!(
            e.to_string(),
            "unknown lock alias `cache`; configured aliases: default, redis"
        );
        assert_eq!(e.key(), None);
    }

    #[test]
    fn backend_error_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = LockError::Backend {
            alias: "shared".into(),
            key: "k".into(),
            op: Operation::Acquire,
            source: BackendError::new(BackendErrorKind::Connection, io),
        };
        assert!(e.is_backend() && !e.is_contention());
        assert_eq!(
            e.to_string(),
            "lock backend `shared` failed to acquire lock `k`: connection failed: refused"
        );
        assert!(
            StdError::source(&e).is_none(),
            "the cause is in the message, and io::Error::new has no cause of its own"
        );
    }

    /// Walks an error chain the way anyhow's `{:#}` and error reporters do.
    fn report(e: &dyn StdError) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            out.push_str(" | ");
            out.push_str(&c.to_string());
            cur = c.source();
        }
        out
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("redis said no")
        }
    }
    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_report_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = LockError::Backend {
            alias: "shared".into(),
            key: "k".into(),
            op: Operation::Release,
            source: BackendError::new(BackendErrorKind::Connection, Outer(io)),
        };
        assert_eq!(
            report(&e),
            "lock backend `shared` failed to release lock `k`: connection failed: redis said no | reset by peer"
        );
        let LockError::Backend { source, .. } = &e else {
            unreachable!()
        };
        assert_eq!(
            report(source),
            "connection failed: redis said no | reset by peer"
        );
        assert!(source.inner().downcast_ref::<Outer>().is_some());
    }

    #[test]
    fn timeout_says_how_long_it_waited() {
        let e = LockError::Timeout {
            key: "k".into(),
            alias: "default".into(),
            waited: Duration::from_millis(250),
        };
        assert!(e.is_timeout() && e.is_contention());
        assert_eq!(
            e.to_string(),
            "gave up waiting for lock `k` (alias `default`) after 250 ms"
        );
    }
}
