//! The Redis store (feature `redis`, on by default): locks shared by every
//! process that points an alias at the same server.
//!
//! Every operation is one Lua script, atomic on the server: acquire is
//! set-if-absent with a millisecond lease (stealing by the lock's age on the
//! server's clock), release is compare-and-delete by token, extend is
//! compare-and-renew. Sync callers use a small pool of blocking connections;
//! async callers share one multiplexed connection driven by the store's own
//! I/O thread, so they need no particular async runtime. Connect and command
//! timeouts bound every call: with the server down an acquisition fails
//! within them, and the first call after the server is back reconnects.
//!
//! Waiting: a waiter is woken by the release itself (pub/sub, one subscriber
//! connection per store) and looks again at the holder's lease end in case
//! no release comes. A waiter that has waited [`STARVATION`] joins a line
//! kept in Redis, and from then on every release hands the lock to the head
//! of the line, so no waiter starves; `fair` requests join the line at once.
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
mod quorum;
mod scripts;
mod wake;

pub use quorum::{NodeOutcome, NodeState, QuorumBackend, QuorumError};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError, ScriptInvocation};

use super::kind::{Opening, StoreKind};
use super::{
    Acquired, Attempt, Backend, BackendError, BackendErrorKind, BoxFuture, Busy, Jitter, Namespace,
    Request, Token, Wait,
};
use crate::lease::DEFAULT_LEASE;
use wake::{LocalWaiter, Subscribers, Wakeups};

/// How long a barging waiter may wait before it joins the line, after which
/// releases hand the lock to it in turn.
///
/// Needs a Redis server:
///
/// ```no_run
/// use lock_runtime::backend::redis::STARVATION;
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::Lock;
///
/// registry::add("shared", AliasConfig::from_url("redis://127.0.0.1:6379").unwrap()).unwrap();
/// let held = Lock::new("report").alias("shared").acquire().unwrap();
/// let waiter = std::thread::spawn(|| Lock::new("report").alias("shared").acquire().unwrap());
/// std::thread::sleep(STARVATION * 5); // the waiter joins the line
/// drop(held);
/// // The release handed the lock to the waiter in line: a newcomer finds it busy.
/// assert!(Lock::new("report").alias("shared").try_acquire().unwrap().is_none());
/// drop(waiter.join().unwrap());
/// ```
pub const STARVATION: Duration = Duration::from_millis(10);
/// How long a waiter in line stays in line without showing it is alive; a
/// waiter whose process died is dropped from the line after this long.
///
/// So a waiter that crashed in line delays those behind it by at most this
/// long; a bounded wait can budget for it (needs a Redis server):
///
/// ```no_run
/// use std::time::Duration;
/// use lock_runtime::backend::redis::WAITER_TTL;
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::Lock;
///
/// registry::add("shared", AliasConfig::from_url("redis://127.0.0.1:6379").unwrap()).unwrap();
/// let guard = Lock::new("report")
///     .alias("shared")
///     .fair(true)
///     .wait_for(Duration::from_secs(10) + WAITER_TTL)
///     .acquire()
///     .unwrap();
/// ```
pub const WAITER_TTL: Duration = Duration::from_secs(5);
/// How often a waiter in line shows it is alive.
const REFRESH: Duration = Duration::from_millis(WAITER_TTL.as_millis() as u64 / 3);

/// `redis://[user:password@]host[:port][/db]` and `rediss://` (TLS).
pub(crate) static KIND: StoreKind = StoreKind {
    name: "Redis",
    schemes: &["redis", "rediss"],
    settings: &[
        "prefix",
        "poll_ms",
        "lease_ms",
        "connect_timeout_ms",
        "timeout_ms",
        "tls_ca",
        "protocol",
    ],
    passed_on: &["protocol"],
    default_prefix: "lock:",
    locate: |url| Ok(vec![url.to_owned()]),
    open: open_one,
};

/// `redis+unix:///path/to/socket`: a socket has no path for the database
/// number, so it is a setting the `redis` crate reads.
pub(crate) static UNIX_KIND: StoreKind = StoreKind {
    name: "Redis",
    schemes: &["redis+unix", "unix"],
    settings: &[
        "prefix",
        "poll_ms",
        "lease_ms",
        "connect_timeout_ms",
        "timeout_ms",
        "db",
        "protocol",
    ],
    passed_on: &["db", "protocol"],
    default_prefix: "lock:",
    locate: |url| Ok(vec![url.to_owned()]),
    open: open_one,
};

/// `redis+quorum://[user:password@]h1[:port],h2,h3[/db]`.
pub(crate) static QUORUM_KIND: StoreKind = StoreKind {
    name: "quorum",
    schemes: &["redis+quorum"],
    settings: &[
        "prefix",
        "poll_ms",
        "lease_ms",
        "connect_timeout_ms",
        "timeout_ms",
        "tls_ca",
    ],
    passed_on: &[],
    default_prefix: "lock:",
    locate: quorum::split_quorum_url,
    open: |at, o| {
        QuorumBackend::open(at, o.prefix, o.connect_timeout, o.command_timeout, o.tls_ca)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
    },
};

fn open_one(at: &[String], o: &Opening<'_>) -> Result<Arc<dyn Backend>, String> {
    let url = at.first().map_or("", String::as_str);
    RedisBackend::open(
        url,
        o.prefix,
        o.connect_timeout,
        o.command_timeout,
        o.tls_ca,
    )
    .map(|b| Arc::new(b) as Arc<dyn Backend>)
}

/// One Redis server as a lock store. Build it through
/// [`AliasConfig::redis`](crate::registry::AliasConfig::redis) or a
/// `redis://` URL; it connects on first use.
///
/// Adding the alias never connects; with the server down, a lock fails with
/// a connection error instead of waiting (nothing listens on port 1 here):
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::{Lock, LockError};
///
/// let cfg = AliasConfig::from_url("redis://127.0.0.1:1/0?prefix=app:&connect_timeout_ms=500").unwrap();
/// registry::add("doc-redis-down", cfg).unwrap();
/// match Lock::new("invoice-7").alias("doc-redis-down").acquire() {
///     Err(LockError::Backend { key, source, .. }) => {
///         assert_eq!(key, "invoice-7");
///         assert!(source.is_connection() || source.is_timeout());
///     }
///     other => panic!("no server there: {other:?}"),
/// }
/// ```
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
    wakeups: Subscribers,
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
        tls_ca: Option<&[u8]>,
    ) -> Result<Self, String> {
        let shown = crate::config::redact(url);
        let client = client(url, &shown, tls_ca)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout));
        Ok(Self {
            inner: Arc::new(Inner {
                url: shown,
                fence_key: Namespace::new(prefix).internal(FENCE),
                pool: pool::Pool::new(client.clone(), connect_timeout, command_timeout),
                wakeups: Subscribers::new(client.clone(), connect_timeout, command_timeout),
                conn: io::AsyncConn::new(client, config),
            }),
        })
    }
}

/// A client for `url`, trusting `tls_ca` too for `rediss://`.
fn client(url: &str, shown: &str, tls_ca: Option<&[u8]>) -> Result<Client, String> {
    let tls = url.starts_with("rediss://");
    #[cfg(not(feature = "tls"))]
    {
        if tls || tls_ca.is_some() {
            return Err(format!(
                "`{shown}`: TLS needs lock-runtime's `tls` feature (`features = [\"tls\"]`)"
            ));
        }
        Client::open(url).map_err(|e| format!("`{shown}` is not a usable Redis URL: {e}"))
    }
    #[cfg(feature = "tls")]
    {
        if tls {
            // rustls needs one process-wide crypto provider; an application
            // that installed its own keeps it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match tls_ca {
            Some(ca) if tls => Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.to_vec()),
                },
            ),
            Some(_) => return Err(format!("`{shown}`: `tls_ca` is only for `rediss://` URLs")),
            None => Client::open(url),
        }
        .map_err(|e| format!("`{shown}` is not a usable Redis URL: {e}"))
    }
}

/// The internal name of an alias's fencing counter; its other records
/// (waiting lines) are named beside it.
const FENCE: &str = "fence";

/// The line and liveness keys that sit beside a lock while someone waits in
/// line for it: internal names of the lock's alias (found from its fencing
/// counter's name), so that no lock key can name them.
fn line_keys(fence_key: &str, key: &str) -> [String; 2] {
    let books = fence_key.strip_suffix(FENCE).unwrap_or(fence_key);
    [format!("{books}line:{key}"), format!("{books}alive:{key}")]
}

/// The arguments of one acquisition, owned so that they can travel to the
/// I/O thread.
struct AcquireArgs {
    key: String,
    token: Token,
    lease_ms: u64,
    steal_ms: u64,
    /// The caller may wait (and so may join the line).
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

    /// The plain first attempt: `SET NX PX` and the fencing `INCR` in one
    /// round trip, without a script, which the server runs noticeably faster.
    /// Only for requests that cannot steal and do not stand in line; if the
    /// lock is busy the counter moved for nothing, which keeps tokens
    /// increasing all the same. Later looks go through the script, which also
    /// marks the lock as waited for and reports its lease.
    fn fast(&self, fence_key: &str, in_line: bool) -> Option<redis::Pipeline> {
        if self.steal_ms != 0 || in_line {
            return None;
        }
        let value = format!("{}{}", self.token.encode().as_str(), self.lease_ms);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&self.key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms)
            .cmd("INCR")
            .arg(fence_key);
        Some(pipe)
    }

    /// The arguments of a lock being released: enough to release it again.
    fn released(key: String, token: Token) -> Self {
        Self {
            key,
            token,
            lease_ms: 0,
            steal_ms: 0,
            will_wait: false,
        }
    }

    fn invocation<'a>(&self, fence_key: &str, in_line: bool) -> ScriptInvocation<'a> {
        let token = self.token.encode();
        if self.will_wait && in_line {
            // The line's keys are made only for waiters that join it.
            let [line, alive] = line_keys(fence_key, &self.key);
            let mut inv = scripts::ACQUIRE_FAIR.prepare_invoke();
            inv.key(&self.key)
                .key(fence_key)
                .key(line)
                .key(alive)
                .arg(token.as_str())
                .arg(self.lease_ms)
                .arg(self.steal_ms)
                .arg(millis(WAITER_TTL))
                .arg(&self.key);
            return inv;
        }
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(&self.key)
            .key(fence_key)
            .arg(token.as_str())
            .arg(self.lease_ms)
            .arg(self.steal_ms)
            .arg(if self.will_wait { "1" } else { "0" });
        inv
    }
}

/// Release (`script` = RELEASE) or leave the line (`script` = LEAVE, with
/// the lease the waiter asked for, which names its place): the same keys,
/// since either may hand the lock to the head of the line.
fn handover_invocation<'a>(
    script: &'a redis::Script,
    fence_key: &str,
    key: &str,
    token: Token,
    asked_lease_ms: Option<u64>,
) -> ScriptInvocation<'a> {
    let [line, alive] = line_keys(fence_key, key);
    let mut inv = script.prepare_invoke();
    inv.key(key)
        .key(line)
        .key(alive)
        .key(fence_key)
        .arg(token.encode().as_str())
        .arg(key)
        .arg(millis(WAITER_TTL));
    if let Some(lease) = asked_lease_ms {
        inv.arg(lease);
    }
    inv
}

/// The lease of a lock granted by a release to the head of the line: what
/// the waiter asked for, but at most the waiter TTL (the waiter tops it up).
fn granted_lease(asked_ms: u64) -> Duration {
    Duration::from_millis(asked_ms.min(millis(WAITER_TTL)))
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

/// The reply of the plain first attempt: `SET` answered `OK` or nil, then
/// the fencing counter.
fn fast_attempt(reply: (Option<String>, i64), sent: Instant) -> Attempt {
    match reply {
        (Some(_), fence) => {
            Attempt::Acquired(Acquired::new(u64::try_from(fence).ok()).sent_at(sent))
        }
        // Busy: the next look, through the script, learns the lease left.
        (None, _) => Attempt::Busy(Busy::new(None)),
    }
}

pub(crate) fn backend_error(e: RedisError) -> BackendError {
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
    /// A pooled sync call failed: a dead connection empties the pool, so
    /// the next call connects afresh.
    fn sync_failed(&self, e: RedisError) -> BackendError {
        if is_connection_error(&e) {
            self.pool.clear();
        }
        backend_error(e)
    }

    /// An async call failed: a dead connection makes this runtime reconnect.
    fn async_failed(&self, e: RedisError) -> BackendError {
        if is_connection_error(&e) {
            self.conn.reset();
        }
        backend_error(e)
    }

    fn sync<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, BackendError> {
        self.pool
            .with(|c| inv.invoke(c))
            .map_err(|e| self.sync_failed(e))
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        inv: ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn.get().await.map_err(backend_error)?;
        self.invoke_on(&mut conn, inv).await
    }

    async fn invoke_on<T: FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        inv: ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        inv.invoke_async(conn)
            .await
            .map_err(|e| self.async_failed(e))
    }

    /// One attempt; `first` allows the plain fast path.
    fn sync_try(
        &self,
        args: &AcquireArgs,
        in_line: bool,
        first: bool,
    ) -> Result<Attempt, BackendError> {
        let sent = Instant::now();
        if first && let Some(pipe) = args.fast(&self.fence_key, in_line) {
            return self
                .pool
                .with(|c| pipe.query(c))
                .map(|reply| fast_attempt(reply, sent))
                .map_err(|e| self.sync_failed(e));
        }
        let reply = self.sync(&args.invocation(&self.fence_key, in_line))?;
        Ok(attempt(reply, sent))
    }

    async fn try_acquire(
        &self,
        args: &AcquireArgs,
        in_line: bool,
        first: bool,
    ) -> Result<Attempt, BackendError> {
        let mut conn = self.conn.get().await.map_err(backend_error)?;
        self.try_acquire_on(&mut conn, args, in_line, first).await
    }

    async fn try_acquire_on(
        &self,
        conn: &mut MultiplexedConnection,
        args: &AcquireArgs,
        in_line: bool,
        first: bool,
    ) -> Result<Attempt, BackendError> {
        let sent = Instant::now();
        if first && let Some(pipe) = args.fast(&self.fence_key, in_line) {
            return pipe
                .query_async(conn)
                .await
                .map(|reply| fast_attempt(reply, sent))
                .map_err(|e| self.async_failed(e));
        }
        let reply = self
            .invoke_on(conn, args.invocation(&self.fence_key, in_line))
            .await?;
        Ok(attempt(reply, sent))
    }

    async fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.invoke::<i64>(handover_invocation(
            &scripts::RELEASE,
            &self.fence_key,
            key,
            token,
            None,
        ))
        .await
        .map(|n| n == 1)
    }

    /// After an async acquisition ends without the lock (deadline, error,
    /// its caller gone): leave the line, and if a request may have won the
    /// lock with nobody to hold it, give that back. `conn` is the connection
    /// the acquisition used, so Redis sees this after the request in flight.
    async fn clean_up(
        &self,
        conn: Option<MultiplexedConnection>,
        args: &AcquireArgs,
        in_line: bool,
        won: bool,
    ) {
        let mut conn = match conn {
            Some(c) => c,
            None => match self.conn.get().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(key = %args.key, error = %e, "could not clean up after an acquisition; its lease and line place expire by themselves");
                    return;
                }
            },
        };
        if won {
            let release = handover_invocation(
                &scripts::RELEASE,
                &self.fence_key,
                &args.key,
                args.token,
                None,
            );
            if let Err(e) = self.invoke_on::<i64>(&mut conn, release).await {
                tracing::error!(key = %args.key, error = %e, "could not give back a lock won by a cancelled acquisition; it frees itself when its lease ends");
            }
        }
        if in_line {
            let leave = handover_invocation(
                &scripts::LEAVE,
                &self.fence_key,
                &args.key,
                args.token,
                Some(args.lease_ms),
            );
            if let Err(e) = self.invoke_on::<i64>(&mut conn, leave).await {
                tracing::warn!(key = %args.key, error = %e, "could not leave the line; the place expires by itself");
            }
        }
    }
}

/// Cleans up after an async operation run in the caller's runtime that is
/// dropped part-way (cancelled) or fails: whatever its request in flight may
/// have won is given back, through the same connection, on a task of its own.
struct Cleanup {
    inner: Arc<Inner>,
    args: Arc<AcquireArgs>,
    conn: Option<MultiplexedConnection>,
    joined: AtomicBool,
}

impl Cleanup {
    fn new(inner: &Arc<Inner>, args: &Arc<AcquireArgs>, conn: &MultiplexedConnection) -> Self {
        Self {
            inner: Arc::clone(inner),
            args: Arc::clone(args),
            conn: Some(conn.clone()),
            joined: AtomicBool::new(false),
        }
    }

    /// The operation ended cleanly: nothing to give back.
    fn disarm(&mut self) {
        self.conn = None;
    }

    fn in_line(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let (inner, args, in_line) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.args),
            self.in_line(),
        );
        let task = async move { inner.clean_up(Some(conn), &args, in_line, true).await };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn(task)),
            Err(_) => {
                if let Err(e) = io::spawn(task) {
                    tracing::error!(error = %e, "could not clean up after a cancelled acquisition; its lease expires by itself");
                }
            }
        }
    }
}

/// The part of a waiting acquisition that does not depend on sync or async:
/// when to look again, when to give up, when to join the line.
struct Plan {
    started: Instant,
    deadline: Option<Instant>,
    poll: Duration,
    in_line: bool,
    /// Wake-ups are unavailable (the subscriber could not connect): poll.
    polling: bool,
    jitter: Jitter,
}

enum Next {
    GiveUp,
    /// Look again at once (just joined the line).
    Retry,
    /// Wait for a wake-up, or until this instant at the latest.
    Sleep(Option<Instant>),
}

impl Plan {
    fn new(req: &Request<'_>, wait: Wait) -> Self {
        Self {
            started: Instant::now(),
            deadline: wait.deadline,
            poll: wait.poll_interval,
            in_line: req.fair,
            polling: false,
            jitter: Jitter::new(req.token),
        }
    }

    fn after_busy(&mut self, busy: &Busy) -> Next {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Next::GiveUp;
        }
        if !self.in_line && now - self.started >= STARVATION {
            self.in_line = true;
            return Next::Retry;
        }
        let mut until = self.deadline;
        let mut cap = |t: Instant| until = Some(until.map_or(t, |u| u.min(t)));
        if let Some(r) = busy.retry_in {
            // No release announces a lease that runs out.
            cap(now + r + Duration::from_millis(1));
        }
        if self.in_line {
            cap(now + REFRESH);
        } else {
            // Join the line on time even if no wake-up comes: a barging
            // waiter is only woken when it is first in its process's queue.
            cap(self.started + STARVATION);
        }
        if self.polling {
            cap(now + self.jitter.around(self.poll));
        }
        Next::Sleep(until)
    }
}

/// Leaves the line when a sync acquisition ends without the lock.
struct LineGuard<'a> {
    inner: &'a Inner,
    args: &'a AcquireArgs,
    joined: bool,
}

impl Drop for LineGuard<'_> {
    fn drop(&mut self) {
        if self.joined {
            let inv = handover_invocation(
                &scripts::LEAVE,
                &self.inner.fence_key,
                &self.args.key,
                self.args.token,
                Some(self.args.lease_ms),
            );
            if let Err(e) = self.inner.sync::<i64>(&inv) {
                tracing::warn!(key = %self.args.key, error = %e, "could not leave the line; the place expires by itself");
            }
        }
    }
}

/// A waiting acquisition's registration for wake-ups, made on its first
/// wait only (most acquisitions never wait).
struct Listening {
    waiter: Option<Arc<LocalWaiter>>,
    watch: Option<wake::Watch>,
}

/// What a waiter does before it sleeps.
enum BeforeSleep {
    /// Subscribe the channel with this future (on the runtime that drives
    /// the subscriber), then look again.
    Subscribe(BoxFuture<'static, Result<(), BackendError>>),
    /// Just registered: a release between the busy reply and the
    /// registration woke nobody, so look once more.
    LookAgain,
    Sleep,
}

impl Listening {
    fn new() -> Self {
        Self {
            waiter: None,
            watch: None,
        }
    }

    /// `subscriber` is asked for only on the first wait.
    fn before_sleep(
        &mut self,
        subscriber: impl FnOnce() -> Wakeups,
        key: &str,
        make: impl FnOnce() -> Arc<LocalWaiter>,
    ) -> BeforeSleep {
        let fresh = self.watch.is_none();
        let waiter = self.waiter.get_or_insert_with(make);
        let watch = self
            .watch
            .get_or_insert_with(|| subscriber().register(key, waiter));
        if !watch.is_subscribed() {
            BeforeSleep::Subscribe(Box::pin(watch.subscribe()))
        } else if fresh {
            BeforeSleep::LookAgain
        } else {
            BeforeSleep::Sleep
        }
    }

    /// The waiter to sleep on (made here when wake-ups are off).
    fn waiter(&mut self, make: impl FnOnce() -> Arc<LocalWaiter>) -> &Arc<LocalWaiter> {
        self.waiter.get_or_insert_with(make)
    }
}

async fn acquire_loop(
    inner: &Inner,
    args: &AcquireArgs,
    mut plan: Plan,
    joined: &AtomicBool,
) -> Result<Option<Acquired>, BackendError> {
    let mut listening = Listening::new();
    let mut first = true;
    loop {
        joined.fetch_or(plan.in_line, Ordering::Relaxed);
        let sent = Instant::now();
        let busy = match inner.try_acquire(args, plan.in_line, first).await? {
            Attempt::Acquired(a) => {
                joined.store(false, Ordering::Relaxed);
                return Ok(Some(a));
            }
            Attempt::Busy(b) => b,
        };
        first = false;
        let until = match plan.after_busy(&busy) {
            Next::GiveUp => return Ok(None),
            Next::Retry => continue,
            Next::Sleep(until) => until,
        };
        let make = || LocalWaiter::for_task(args.token);
        if !plan.polling {
            // This loop runs on the runtime whose subscriber it gets, so the
            // subscription is awaited right here.
            match listening.before_sleep(|| inner.wakeups.here(), &args.key, make) {
                BeforeSleep::Subscribe(subscription) => {
                    if let Err(e) = subscription.await {
                        tracing::debug!(key = %args.key, error = %e, "no wake-ups; polling instead");
                        plan.polling = true;
                    }
                    continue;
                }
                BeforeSleep::LookAgain => continue,
                BeforeSleep::Sleep => {}
            }
        }
        let waiter = listening.waiter(make);
        match until {
            Some(u) => {
                let _ = tokio::time::timeout_at(u.into(), waiter.signalled()).await;
            }
            None => waiter.signalled().await,
        }
        waiter.take_signal();
        if let Some(fence) = waiter.take_grant() {
            joined.store(false, Ordering::Relaxed);
            return Ok(Some(granted(args, fence, sent)));
        }
    }
}

/// A lock a release handed to this waiter: its lease counts from no later
/// than the waiter's last request, and is at most the waiter TTL until the
/// runtime tops it up.
fn granted(args: &AcquireArgs, fence: u64, sent: Instant) -> Acquired {
    Acquired::new(Some(fence))
        .sent_at(sent)
        .lease(granted_lease(args.lease_ms))
}

impl Backend for RedisBackend {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let args = AcquireArgs::new(req, false);
        self.inner.sync_try(&args, false, true)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.inner
            .sync::<i64>(&handover_invocation(
                &scripts::RELEASE,
                &self.inner.fence_key,
                key,
                token,
                None,
            ))
            .map(|n| n == 1)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.inner
            .sync::<i64>(&extend_invocation(key, token, lease))
            .map(|n| n == 1)
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        let owner = token.encode();
        let held = self
            .inner
            .pool
            .with(|c| redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c));
        Some(
            held.map(|v| v.is_some_and(|v| v.starts_with(owner.as_str().as_bytes())))
                .map_err(|e| self.inner.sync_failed(e)),
        )
    }

    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        let inner = &*self.inner;
        let args = AcquireArgs::new(req, true);
        let mut plan = Plan::new(req, wait);
        let mut listening = Listening::new();
        let mut line = LineGuard {
            inner,
            args: &args,
            joined: false,
        };
        let mut first = true;
        loop {
            line.joined |= plan.in_line;
            let sent = Instant::now();
            let busy = match inner.sync_try(&args, plan.in_line, first)? {
                Attempt::Acquired(a) => {
                    line.joined = false;
                    return Ok(Some(a));
                }
                Attempt::Busy(b) => b,
            };
            first = false;
            let until = match plan.after_busy(&busy) {
                Next::GiveUp => return Ok(None),
                Next::Retry => continue,
                Next::Sleep(until) => until,
            };
            let make = || LocalWaiter::for_thread(req.token);
            if !plan.polling {
                match listening.before_sleep(|| inner.wakeups.io(), req.key, make) {
                    BeforeSleep::Subscribe(subscription) => {
                        if let Err(e) = io::block_on(subscription) {
                            tracing::debug!(key = req.key, error = %e, "no wake-ups; polling instead");
                            plan.polling = true;
                        }
                        continue;
                    }
                    BeforeSleep::LookAgain => continue,
                    BeforeSleep::Sleep => {}
                }
            }
            let waiter = listening.waiter(make);
            waiter.park_until(until);
            waiter.take_signal();
            if let Some(fence) = waiter.take_grant() {
                line.joined = false;
                return Ok(Some(granted(&args, fence, sent)));
            }
        }
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        let args = Arc::new(AcquireArgs::new(req, false));
        let inner = Arc::clone(&self.inner);
        if io::in_caller_runtime() {
            return Box::pin(async move {
                let mut conn = inner.conn.get().await.map_err(backend_error)?;
                let mut cleanup = Cleanup::new(&inner, &args, &conn);
                let out = inner.try_acquire_on(&mut conn, &args, false, true).await;
                if out.is_ok() {
                    cleanup.disarm();
                }
                out
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The attempt runs on the I/O thread to its end. If it failed (a
        // timeout may still have landed), or the caller has gone and the lock
        // was won, nobody would ever release it: the task gives it back.
        let spawned = io::spawn(async move {
            let outcome = inner.try_acquire(&args, false, true).await;
            let won = matches!(outcome, Ok(Attempt::Acquired(_)));
            let failed = outcome.is_err();
            let delivered = tx.send(outcome).is_ok();
            if failed || (won && !delivered) {
                inner.clean_up(None, &args, false, true).await;
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

    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        let args = Arc::new(AcquireArgs::new(req, true));
        let plan = Plan::new(req, wait);
        let inner = Arc::clone(&self.inner);
        if io::in_caller_runtime() {
            return Box::pin(async move {
                let conn = inner.conn.get().await.map_err(backend_error)?;
                let mut cleanup = Cleanup::new(&inner, &args, &conn);
                let outcome = acquire_loop(&inner, &args, plan, &cleanup.joined).await;
                match &outcome {
                    Ok(Some(_)) => cleanup.disarm(),
                    Ok(None) => {
                        // Gave up at the deadline: only the line place is left.
                        let in_line = cleanup.in_line();
                        cleanup.disarm();
                        inner.clean_up(Some(conn), &args, in_line, false).await;
                    }
                    // A request may have landed before the error: the armed
                    // clean-up gives back what it won and leaves the line.
                    Err(_) => {}
                }
                outcome
            });
        }
        let (mut tx, rx) = tokio::sync::oneshot::channel();
        // The whole wait runs on the I/O thread. If the caller goes away it
        // stops at once, leaves the line and gives back whatever an attempt
        // in flight may have won.
        let spawned = io::spawn(async move {
            let joined = AtomicBool::new(false);
            let outcome = tokio::select! {
                outcome = acquire_loop(&inner, &args, plan, &joined) => Some(outcome),
                () = tx.closed() => None,
            };
            let in_line = joined.load(Ordering::Relaxed);
            match outcome {
                None => inner.clean_up(None, &args, in_line, true).await,
                Some(outcome) => {
                    let won = matches!(outcome, Ok(Some(_)));
                    if !won {
                        inner.clean_up(None, &args, in_line, outcome.is_err()).await;
                    }
                    if tx.send(outcome).is_err() && won {
                        inner.clean_up(None, &args, false, true).await;
                    }
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
        if io::in_caller_runtime() {
            return Box::pin(async move {
                let mut conn = inner.conn.get().await.map_err(backend_error)?;
                // The guard is gone once its release starts: if this future
                // is dropped before the reply, the release still happens.
                let args = Arc::new(AcquireArgs::released(key, token));
                let mut cleanup = Cleanup::new(&inner, &args, &conn);
                let inv = handover_invocation(
                    &scripts::RELEASE,
                    &inner.fence_key,
                    &args.key,
                    token,
                    None,
                );
                let out = inner.invoke_on::<i64>(&mut conn, inv).await.map(|n| n == 1);
                if out.is_ok() {
                    cleanup.disarm();
                }
                out
            });
        }
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
        let extend = async move {
            inner
                .invoke::<i64>(extend_invocation(&key, token, lease))
                .await
                .map(|n| n == 1)
        };
        if io::in_caller_runtime() {
            return Box::pin(extend);
        }
        Box::pin(io::run(extend))
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
        let t = Duration::from_secs(1);
        let err = RedisBackend::open("redis://[::1", "lock:", t, t, None).unwrap_err();
        assert!(err.contains("is not a usable Redis URL"), "{err}");
        let err = RedisBackend::open("redis://:hunter2@/0", "lock:", t, t, None).unwrap_err();
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

    #[test]
    fn a_waiter_joins_the_line_after_starving() {
        let req = Request::new("k");
        let mut plan = Plan::new(&req, Wait::new(None, Duration::from_millis(100)));
        match plan.after_busy(&Busy::default()) {
            Next::Sleep(Some(u)) => assert!(
                u <= plan.started + STARVATION,
                "it looks again when it starts starving"
            ),
            _ => panic!("expected a sleep until the starvation point"),
        }
        std::thread::sleep(STARVATION);
        assert!(matches!(plan.after_busy(&Busy::default()), Next::Retry));
        assert!(plan.in_line);
        // In line it shows it is alive at least every REFRESH.
        match plan.after_busy(&Busy::default()) {
            Next::Sleep(Some(u)) => assert!(u <= Instant::now() + REFRESH),
            _ => panic!("expected a bounded sleep"),
        }
    }

    #[test]
    fn a_waiter_gives_up_at_the_deadline() {
        let req = Request::new("k").fair(true);
        let mut plan = Plan::new(
            &req,
            Wait::new(Some(Instant::now()), Duration::from_millis(100)),
        );
        assert!(matches!(plan.after_busy(&Busy::default()), Next::GiveUp));
    }
}
