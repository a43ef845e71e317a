//! The Redis store (feature `redis`, on by default): locks shared by every
//! process that points an alias at the same server.
//!
//! Every operation is one Lua script, atomic on the server: acquire is
//! set-if-absent with a millisecond lease (stealing by the server's clock),
//! release is compare-and-delete by token, extend is compare-and-renew. Sync
//! callers use a small pool of blocking connections; async callers share one
//! multiplexed connection driven by the store's own I/O thread, so they need
//! no particular async runtime. Connect and command timeouts bound every
//! call: with the server down, an acquisition fails within them, and the next
//! call after the server is back reconnects by itself.
//!
//! Configure it as an alias:
//!
//! ```no_run
//! use lock_runtime::registry::{self, AliasConfig};
//! registry::configure([("shared", AliasConfig::from_url("redis://127.0.0.1:6379/0?prefix=app:").unwrap())]).unwrap();
//! let guard = lock_runtime::Lock::new("invoice-7").alias("shared").acquire().unwrap();
//! ```

mod io;
mod pool;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{AsyncConnectionConfig, Client, RedisError, ScriptInvocation};

use super::{
    Acquired, Attempt, Backend, BackendError, BackendErrorKind, BoxFuture, Busy, Request, Token,
};
use crate::registry::DEFAULT_LEASE;

/// One Redis server as a lock store. Build it through
/// [`AliasConfig::redis`](crate::registry::AliasConfig::redis) or a
/// `redis://` URL; it connects on first use.
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL with its password hidden, for messages.
    url: String,
    /// The per-alias counter behind fencing tokens: one key beside the
    /// locks, never expiring, so tokens keep increasing across expiries.
    fence_key: String,
    pool: pool::Pool,
    conn: io::AsyncConn,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Checks `url` and prepares the connections (none is opened yet).
    pub(crate) fn open(
        url: &str,
        prefix: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, String> {
        let shown = crate::registry::redact(url);
        let client =
            Client::open(url).map_err(|e| format!("`{shown}` is not a usable Redis URL: {e}"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout));
        Ok(Self {
            inner: Arc::new(Inner {
                url: shown,
                fence_key: format!("{prefix}\u{0}fence"),
                pool: pool::Pool::new(client.clone(), connect_timeout, command_timeout),
                conn: io::AsyncConn::new(client, config),
            }),
        })
    }
}

/// The arguments of one acquisition, owned so that they can travel to the
/// I/O thread.
struct AcquireArgs {
    key: String,
    token: Token,
    lease_ms: u64,
    steal_ms: u64,
    will_wait: bool,
}

impl AcquireArgs {
    fn new(req: &Request<'_>, will_wait: bool) -> Self {
        Self {
            key: req.key.to_owned(),
            token: req.token,
            lease_ms: millis(req.lease.unwrap_or(DEFAULT_LEASE)),
            steal_ms: req.steal_after.map_or(0, millis),
            will_wait,
        }
    }

    fn invocation<'a>(&self, fence_key: &str) -> ScriptInvocation<'a> {
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(&self.key)
            .key(fence_key)
            .arg(self.token.encode().as_str())
            .arg(self.lease_ms)
            .arg(self.steal_ms)
            .arg(if self.will_wait { "1" } else { "0" });
        inv
    }
}

fn release_invocation<'a>(key: &str, token: Token) -> ScriptInvocation<'a> {
    let mut inv = scripts::RELEASE.prepare_invoke();
    inv.key(key).arg(token.encode().as_str()).arg(key);
    inv
}

fn extend_invocation<'a>(key: &str, token: Token, lease: Duration) -> ScriptInvocation<'a> {
    let mut inv = scripts::EXTEND.prepare_invoke();
    inv.key(key).arg(token.encode().as_str()).arg(millis(lease));
    inv
}

/// Redis leases are whole milliseconds; never round a lease down to zero.
fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

fn attempt(reply: (i64, i64), sent: Instant) -> Attempt {
    match reply {
        (1, fence) => Attempt::Acquired(Acquired::new(u64::try_from(fence).ok()).sent_at(sent)),
        // PTTL: -1 is a key with no lease (not ours), -2 one that just vanished.
        (_, pttl) if pttl >= 0 => {
            Attempt::Busy(Busy::new(Some(Duration::from_millis(pttl as u64))))
        }
        (_, -2) => Attempt::Busy(Busy::new(Some(Duration::ZERO))),
        _ => Attempt::Busy(Busy::new(None)),
    }
}

fn backend_error(e: RedisError) -> BackendError {
    let kind = if e.is_timeout() {
        BackendErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        BackendErrorKind::Connection
    } else {
        BackendErrorKind::Protocol
    };
    BackendError::new(kind, e)
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl Inner {
    fn sync<T>(
        &self,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, BackendError> {
        self.pool.with(f).map_err(|e| {
            if is_connection_error(&e) {
                self.pool.clear();
            }
            backend_error(e)
        })
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn.get().await.map_err(backend_error)?;
        inv.invoke_async(&mut conn).await.map_err(|e| {
            if is_connection_error(&e) {
                self.conn.reset();
            }
            backend_error(e)
        })
    }

    async fn try_acquire(&self, args: &AcquireArgs) -> Result<Attempt, BackendError> {
        let sent = Instant::now();
        let reply = self.invoke(args.invocation(&self.fence_key)).await?;
        Ok(attempt(reply, sent))
    }

    async fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.invoke::<i64>(release_invocation(key, token))
            .await
            .map(|n| n == 1)
    }
}

impl Backend for RedisBackend {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let args = AcquireArgs::new(req, false);
        let sent = Instant::now();
        let reply = self
            .inner
            .sync(|c| args.invocation(&self.inner.fence_key).invoke(c))?;
        Ok(attempt(reply, sent))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.inner
            .sync(|c| release_invocation(key, token).invoke::<i64>(c))
            .map(|n| n == 1)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.inner
            .sync(|c| extend_invocation(key, token, lease).invoke::<i64>(c))
            .map(|n| n == 1)
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        let args = AcquireArgs::new(req, false);
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The attempt runs on the I/O thread to its end. If the caller has
        // gone by then and the lock was won, nobody would ever release it,
        // so the task gives it back itself.
        let spawned = io::spawn(async move {
            let outcome = inner.try_acquire(&args).await;
            if let Err(Ok(Attempt::Acquired(_))) = tx.send(outcome) {
                if let Err(e) = inner.release(&args.key, args.token).await {
                    tracing::error!(key = %args.key, error = %e, "could not give back a lock won by a cancelled acquisition; it frees itself when its lease ends");
                }
            }
        });
        Box::pin(async move {
            spawned?;
            rx.await.map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Other,
                    "the Redis I/O task ended without an answer",
                )
            })?
        })
    }

    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        Box::pin(io::run(async move { inner.release(&key, token).await }))
    }

    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        Box::pin(io::run(async move {
            inner
                .invoke::<i64>(extend_invocation(&key, token, lease))
                .await
                .map(|n| n == 1)
        }))
    }

    fn release_detached(&self, key: &str, token: Token) {
        let inner = Arc::clone(&self.inner);
        let owned = key.to_owned();
        let spawned = io::spawn(async move {
            match inner.release(&owned, token).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(key = %owned, "lock was no longer held when its guard was dropped")
                }
                Err(e) => {
                    tracing::error!(key = %owned, error = %e, "releasing a dropped lock guard failed; the lock frees itself when its lease ends")
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(key, error = %e, "could not hand a release to the Redis I/O thread; releasing inline");
            if let Err(e) = self.release(key, token) {
                tracing::error!(key, error = %e, "releasing a dropped lock guard failed; the lock frees itself when its lease ends");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_fail_at_open() {
        let err = RedisBackend::open(
            "redis://[::1",
            "lock:",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("is not a usable Redis URL"), "{err}");
        let err = RedisBackend::open(
            "redis://:hunter2@/0",
            "lock:",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
    }

    #[test]
    fn replies_map_to_attempts() {
        let now = Instant::now();
        assert_eq!(
            attempt((1, 7), now),
            Attempt::Acquired(Acquired::new(Some(7)).sent_at(now))
        );
        assert_eq!(
            attempt((0, 250), now),
            Attempt::Busy(Busy::new(Some(Duration::from_millis(250))))
        );
        assert_eq!(attempt((0, -1), now), Attempt::Busy(Busy::new(None)));
        assert_eq!(
            attempt((0, -2), now),
            Attempt::Busy(Busy::new(Some(Duration::ZERO)))
        );
    }

    #[test]
    fn leases_never_round_down_to_zero() {
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
