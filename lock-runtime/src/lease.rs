//! Bounds on the durations the API accepts. Leases, steal ages, poll
//! intervals and timeouts are added to clock readings on every store; capping
//! them keeps that arithmetic exact everywhere (no overflow, no store-specific
//! limit such as Redis' millisecond expiry) while leaving room for any real
//! use. A wait has no cap: a wait longer than the clock can count is a wait
//! forever.

use std::time::Duration;

/// The longest lease, steal age, poll interval or timeout the API accepts:
/// 100 years. Longer values are refused up front with
/// [`LockError::InvalidOptions`](crate::LockError::InvalidOptions) (lock
/// options, [`LockGuard::extend`](crate::LockGuard::extend)) or
/// [`LockError::Config`](crate::LockError::Config) (alias settings), before
/// any store is asked. A lock that should live as long as its holder needs no
/// long lease: leave `expire` unset and the lease renews itself.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{Lock, LockError, MAX_DURATION};
///
/// let err = Lock::new("k").expire(Duration::MAX).acquire().unwrap_err();
/// assert!(matches!(err, LockError::InvalidOptions { option: "expire", .. }));
/// assert!(Lock::new("k").expire(MAX_DURATION).acquire().is_ok());
/// // A wait has no cap: `Duration::MAX` waits as long as it takes.
/// assert!(Lock::new("k").wait_for(Duration::MAX).acquire().is_ok());
/// ```
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The lease of a lock on a shared store when neither the lock (`expire`) nor
/// the alias sets one. Such a lock is renewed every third of it while held.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig, DEFAULT_LEASE};
///
/// # #[cfg(feature = "redis")] {
/// // Adding an alias does not connect, so this needs no server.
/// registry::add("doc-default-lease", AliasConfig::from_url("redis://127.0.0.1:6379").unwrap()).unwrap();
/// assert_eq!(registry::alias("doc-default-lease").unwrap().default_lease(), Some(DEFAULT_LEASE));
/// # }
/// // The embedded store holds locks until they are released.
/// assert_eq!(registry::alias("default").unwrap().default_lease(), None);
/// ```
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// `Err(reason)` for a duration that is zero or longer than [`MAX_DURATION`].
pub(crate) fn check(name: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() {
        Err(format!("`{name}` must be greater than zero"))
    } else if d > MAX_DURATION {
        Err(format!(
            "`{name}` of {} s is longer than the longest accepted ({} s, 100 years){}",
            d.as_secs(),
            MAX_DURATION.as_secs(),
            if name == "expire" || name == "default_lease" || name == "lease_ms" {
                "; for a lock held as long as its holder lives, set no lease: it renews itself"
            } else {
                ""
            }
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_too_long_are_refused_with_the_name() {
        assert!(check("expire", Duration::from_secs(1)).is_ok());
        assert!(check("expire", MAX_DURATION).is_ok());
        let zero = check("steal_after", Duration::ZERO).unwrap_err();
        assert_eq!(zero, "`steal_after` must be greater than zero");
        let long = check("expire", Duration::MAX).unwrap_err();
        assert!(
            long.starts_with("`expire` of 18446744073709551615 s"),
            "{long}"
        );
        assert!(long.contains("renews itself"), "{long}");
    }
}
