//! The Redis store (feature `redis`, on by default): locks shared by every
//! process that points an alias at the same server.
//!
//! Every operation is one Lua script, atomic on the server: acquire is
//! set-if-absent with a millisecond lease (stealing by the lock's age on the
//! server's clock), release is compare-and-delete by token, extend is
//! compare-and-renew. Sync callers use a small pool of blocking connections;
//! async callers share one multiplexed connection per Tokio runtime, or the
//! one of the store's own I/O thread off Tokio, so they need no particular
//! async runtime. Connect and command timeouts bound every call: with the
//! server down an acquisition fails within them, and the first call after
//! the server is back reconnects.
//!
//! Waiting: within a process, one waiter per key stands in Redis at a time;
//! the process's other waiters for the key wait in a local line, first come
//! first served, each until its own deadline (`gate.rs`), so a burst of
//! waiters costs Redis one waiter per process. The waiter in Redis is woken
//! by the release itself (pub/sub, one subscriber connection per store) and
//! looks again at the holder's lease end in case no release comes; a release
//! made in its own process hands it the lock in the release's own script and
//! wakes it directly, with no look and no message. A waiter whose look finds
//! the lock held by another process (or that has waited [`STARVATION`] in
//! Redis) joins a line kept there, and from then on every release hands the
//! lock to the head of the line and tells that waiter's process alone, so no
//! process starves and no release wakes every waiting process to race for
//! the lock; `fair` requests join the line at once. So `fair = true` means: waiters of
//! one process are served in arrival order, and processes in the order their
//! current waiter joined the line (a process with many waiters gets one turn
//! in the line at a time, not one per waiter). One step machine decides all
//! that (`waiting.rs`); a sync and an async driver do its I/O (`drivers.rs`).
//!
//! Configure it as an alias:
//!
//! ```no_run
//! use lock_runtime::registry::{self, AliasConfig};
//! registry::configure([("shared", AliasConfig::from_url("redis://127.0.0.1:6379/0?prefix=app:").unwrap())]).unwrap();
//! let guard = lock_runtime::Lock::new("invoice-7").alias("shared").acquire().unwrap();
//! ```

mod books;
mod drivers;
mod gate;
mod io;
mod pool;
mod quorum;
mod scripts;
mod waiting;
mod wake;

pub use quorum::{NodeOutcome, NodeState, QuorumBackend, QuorumError};

use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError};

use super::kind::{Opening, StoreKind};
use super::{
    Acquired, Attempt, Backend, BackendError, BackendErrorKind, BoxFuture, Busy, Held, Namespace,
    Request, Token, Wait,
};
use crate::admin::{AUDIT_LOG_LEN, Forced, Page};
use crate::lease::DEFAULT_LEASE;
use drivers::{Leftover, Release};
use io::Place;
use scripts::Call;
use waiting::{Line, Waiting};
use wake::Subscribers;

/// How long a barging waiter may wait behind a holder of its own process
/// before it joins the line, after which releases hand the lock to it in
/// turn. (Behind another process's holder it joins at its second look.)
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
    fresh: None,
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
    fresh: None,
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
    fresh: None,
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
    /// The local lines: one waiter per key stands in Redis at a time.
    gates: gate::Gates,
    /// This process's record beside the locks (who holds them).
    books: books::Books,
    /// Loading the scripts again when the server forgot them.
    loads: scripts::Loads,
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
        let fence_key = Namespace::new(prefix).internal(FENCE);
        let own = wake_channel(&fence_key);
        Ok(Self {
            inner: Arc::new(Inner {
                url: shown,
                fence_key,
                books: books::Books::new(&Namespace::new(prefix)),
                pool: pool::Pool::new(client.clone(), connect_timeout, command_timeout),
                wakeups: Subscribers::new(client.clone(), connect_timeout, command_timeout, own),
                gates: gate::Gates::default(),
                conn: io::AsyncConn::new(client, config),
                loads: scripts::Loads::default(),
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
    let books = books_of(fence_key);
    let named = |kind: &str| {
        let mut name = String::with_capacity(books.len() + kind.len() + key.len());
        name.push_str(books);
        name.push_str(kind);
        name.push_str(key);
        name
    };
    [named("line:"), named("alive:")]
}

/// The channel on which releases send this process's waiters their grants:
/// beside the fencing counter, named by the head every token of this
/// process shares (the scripts' `pass_on` derives the same name from the
/// counter's key and the waiter's token).
fn wake_channel(fence_key: &str) -> String {
    format!(
        "{}wake:{}",
        books_of(fence_key),
        crate::admin::process_tag()
    )
}

/// The head of an alias's internal names, found from its fencing counter's
/// (the scripts find it the same way, by cutting `fence` off).
fn books_of(fence_key: &str) -> &str {
    fence_key.strip_suffix(FENCE).unwrap_or(fence_key)
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
    /// `#<n>`: the number of the lock's label and function in the process
    /// record; empty for a lock with neither.
    meta: String,
}

impl AcquireArgs {
    /// Who waits, for the local line.
    fn seat(&self) -> gate::Seat<'_> {
        gate::Seat {
            token: self.token,
            lease_ms: self.lease_ms,
            meta: &self.meta,
        }
    }

    fn new(req: &Request<'_>, will_wait: bool, meta: String) -> Self {
        Self {
            key: req.key.to_owned(),
            token: req.token,
            lease_ms: asked_lease_ms(req),
            steal_ms: req.steal_after.map_or(0, millis),
            will_wait,
            meta,
        }
    }

    /// The plain first attempt: `SET NX PX` and the fencing `INCR` in one
    /// round trip, without a script, which the server runs noticeably faster.
    /// Only for requests that cannot steal and do not stand in line; if the
    /// lock is busy the counter moved for nothing, which keeps tokens
    /// increasing all the same. Later looks go through the script, which also
    /// marks the lock as waited for and reports its lease.
    fn fast(&self, fence_key: &str, line: Line) -> Option<redis::Pipeline> {
        if self.steal_ms != 0 || line != Line::Out {
            return None;
        }
        let token = self.token.encode();
        let mut value = String::with_capacity(token.as_str().len() + 20 + self.meta.len());
        value.push_str(token.as_str());
        let _ = write!(value, "{}{}", self.lease_ms, self.meta);
        let mut set = redis::Cmd::with_capacity(6, 128);
        set.arg("SET")
            .arg(&self.key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms);
        let mut incr = redis::Cmd::with_capacity(2, 64);
        incr.arg("INCR").arg(fence_key);
        let mut pipe = redis::Pipeline::with_capacity(2);
        pipe.add_command(set).add_command(incr);
        Some(pipe)
    }

    /// The script call of an attempt standing in `line`.
    fn invocation(&self, fence_key: &str, line: Line) -> Call {
        let token = self.token.encode();
        if self.will_wait && line != Line::Out {
            // The line's keys are made only for waiters that join it.
            let [queue, alive] = line_keys(fence_key, &self.key);
            let mut call = Call::new(
                &scripts::ACQUIRE_FAIR,
                &[&self.key, fence_key, &queue, &alive],
            );
            call.arg(token.as_str())
                .arg(self.lease_ms)
                .arg(self.steal_ms)
                .arg(&self.meta)
                .arg(if line == Line::IfRemote { "1" } else { "" });
            return call;
        }
        let mut call = Call::new(&scripts::ACQUIRE, &[&self.key, fence_key]);
        call.arg(token.as_str())
            .arg(self.lease_ms)
            .arg(self.steal_ms)
            .arg(if self.will_wait { "1" } else { "0" })
            .arg(&self.meta);
        call
    }
}

/// Release (`script` = RELEASE) or leave the line (`script` = LEAVE, with
/// the lease the waiter asked for and its meta suffix, which with its
/// token name its place): the same keys, since either may hand the lock to
/// the head of the line.
fn handover_invocation(
    script: &'static scripts::Lua,
    fence_key: &str,
    key: &str,
    token: Token,
    place: Option<&str>,
) -> Call {
    let [line, alive] = line_keys(fence_key, key);
    let mut call = Call::new(script, &[key, &line, &alive, fence_key]);
    call.arg(token.encode().as_str());
    if let Some(place) = place {
        call.arg(place);
    }
    call
}

/// The lease of a lock granted by a release to the head of the line: what
/// the waiter asked for, but at most the waiter TTL (the waiter tops it up).
fn granted_lease(asked_ms: u64) -> Duration {
    Duration::from_millis(asked_ms.min(millis(WAITER_TTL)))
}

fn extend_invocation(key: &str, token: Token, lease: Duration) -> Call {
    let mut call = Call::new(&scripts::EXTEND, &[key]);
    call.arg(token.encode().as_str()).arg(millis(lease));
    call
}

/// The lease a request asks for, in the milliseconds Redis counts.
fn asked_lease_ms(req: &Request<'_>) -> u64 {
    millis(req.lease.unwrap_or(DEFAULT_LEASE))
}

/// Redis leases are whole milliseconds; never round a lease down to zero.
fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// One attempt's answer, with the fencing counter as a busy attempt in line
/// found it (see `Waiting`: a grant numbered no higher is stale).
pub(super) struct Tried {
    pub(super) attempt: Attempt,
    pub(super) fence_now: Option<u64>,
}

impl From<Attempt> for Tried {
    fn from(attempt: Attempt) -> Self {
        Tried {
            attempt,
            fence_now: None,
        }
    }
}

/// A script's reply: `{1, fence}` taken, `{0, pttl}` busy, or `{0, pttl,
/// fence now}` busy in line.
fn attempt(reply: &[i64], sent: Instant) -> Tried {
    let attempt = match *reply {
        [1, fence, ..] => Attempt::Acquired(Acquired::new(u64::try_from(fence).ok()).sent_at(sent)),
        // PTTL: -1 is a key with no lease (not ours), -2 one that just vanished.
        [_, pttl, ..] if pttl >= 0 => {
            Attempt::Busy(Busy::new(Some(Duration::from_millis(pttl as u64))))
        }
        [_, -2, ..] => Attempt::Busy(Busy::new(Some(Duration::ZERO))),
        _ => Attempt::Busy(Busy::new(None)),
    };
    let fence_now = match *reply {
        [0, _, fence] => u64::try_from(fence).ok(),
        _ => None,
    };
    Tried { attempt, fence_now }
}

/// A listing cursor: the `SCAN` cursor (`E` once the scan ended), then
/// each key left over from a step as `<byte length>:<key>`, so that any
/// key's bytes fit.
fn encode_cursor(at: Option<u64>, rest: &[String]) -> String {
    let mut c = at.map_or_else(|| "E".to_owned(), |a| a.to_string());
    for k in rest {
        c.push(';');
        c.push_str(&k.len().to_string());
        c.push(':');
        c.push_str(k);
    }
    c
}

/// [`encode_cursor`] read back; `None` for a cursor it did not make.
fn decode_cursor(c: &str) -> Option<(Option<u64>, Vec<String>)> {
    let (head, mut tail) = match c.split_once(';') {
        Some((h, t)) => (h, Some(t)),
        None => (c, None),
    };
    let at = if head == "E" {
        None
    } else {
        Some(head.parse().ok()?)
    };
    let mut rest = Vec::new();
    while let Some(t) = tail {
        let (len, after) = t.split_once(':')?;
        let len: usize = len.parse().ok()?;
        rest.push(after.get(..len)?.to_owned());
        let after = &after[len..];
        tail = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(';')?)
        };
    }
    Some((at, rest))
}

/// `s` with the characters special to a `SCAN MATCH` pattern escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
    /// The held locks among `keys`, read with their owners in one script.
    fn inspect(&self, keys: Vec<String>) -> Result<Vec<Option<Held>>, BackendError> {
        Ok(self
            .inspect_owned(keys)?
            .into_iter()
            .map(|h| h.map(|(held, _)| held))
            .collect())
    }

    /// [`inspect`](Self::inspect), with each holder's token.
    fn inspect_owned(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(Held, String)>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut call = Call::new(&scripts::INSPECT, &names);
        call.arg(self.books.procs());
        let read: Vec<books::Inspected> = self.sync(&call)?;
        Ok(keys
            .into_iter()
            .zip(read)
            .map(|(k, r)| books::held_owned(k, r))
            .collect())
    }

    /// Frees `entry.key` whoever holds it and records `entry` (see
    /// [`scripts::FORCE`]); the entry as recorded.
    fn force(&self, entry: &Forced) -> Result<Forced, BackendError> {
        let [line, alive] = line_keys(&self.fence_key, &entry.key);
        let mut call = Call::new(
            &scripts::FORCE,
            &[
                &entry.key,
                &line,
                &alive,
                &self.fence_key,
                &self.books.audit,
            ],
        );
        call.arg(books::entry_head(entry))
            .arg(AUDIT_LOG_LEN)
            .arg(self.books.procs());
        let recorded = self.sync::<String>(&call)?;
        books::entry(&recorded).ok_or_else(|| {
            BackendError::new(BackendErrorKind::Protocol, "an unreadable audit entry")
        })
    }

    /// The newest `limit` entries of the audit list.
    fn audit(&self, limit: usize) -> Result<Vec<Forced>, BackendError> {
        let stop = limit.min(AUDIT_LOG_LEN) as i64 - 1;
        if stop < 0 {
            return Ok(Vec::new());
        }
        let read = self.pool.with(|c| {
            redis::cmd("LRANGE")
                .arg(&self.books.audit)
                .arg(0)
                .arg(stop)
                .query::<Vec<String>>(c)
        });
        read.map(|log| log.iter().filter_map(|e| books::entry(e)).collect())
            .map_err(|e| self.sync_failed(e))
    }

    /// One page: `SCAN` steps (each bounded by its `COUNT`) from the
    /// cursor, until `limit` keys or the end. The cursor is the `SCAN`
    /// cursor to go on from (`E`: the scan ended), followed by the keys a
    /// step gave beyond the page's room, which the next page gives first. A
    /// step is never read twice: with others writing meanwhile, `SCAN` may
    /// cover other buckets from the same cursor, and keys skipped by name
    /// would be lost. Keys come in key order within a page, not across
    /// pages (`SCAN` has no order).
    fn page(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, BackendError> {
        let (keys, next) = self.scan(ns, prefix, cursor, limit)?;
        let held = self.inspect(keys)?.into_iter().flatten().collect();
        Ok(Page::new(held, next))
    }

    /// The keys of one page (see [`page`](Self::page)) and the next cursor.
    fn scan(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), BackendError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let (mut at, mut keys) = match cursor {
            None => (Some(0u64), Vec::new()),
            Some(c) => decode_cursor(c).ok_or_else(|| {
                BackendError::new(BackendErrorKind::Other, format!("not a cursor: `{c}`"))
            })?,
        };
        let limit = limit.max(1);
        if keys.len() >= limit {
            let rest = keys.split_off(limit);
            keys.sort();
            return Ok((keys, Some(encode_cursor(at, &rest))));
        }
        // Bounded too: a sparse keyspace gives back a cursor rather than
        // scanning on.
        for _ in 0..64 {
            let Some(from) = at else { break };
            let room = limit - keys.len();
            let (following, mut batch): (u64, Vec<String>) = self
                .pool
                .with(|c| {
                    redis::cmd("SCAN")
                        .arg(from)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(room.max(10))
                        .query(c)
                })
                .map_err(|e| self.sync_failed(e))?;
            batch.retain(|k| ns.key_of(k).is_some());
            batch.sort();
            batch.dedup();
            at = (following != 0).then_some(following);
            if batch.len() > room {
                let rest = batch.split_off(room);
                keys.extend(batch);
                keys.sort();
                return Ok((keys, Some(encode_cursor(at, &rest))));
            }
            keys.extend(batch);
            if keys.len() == limit {
                break;
            }
        }
        keys.sort();
        Ok((keys, at.map(|a| encode_cursor(Some(a), &[]))))
    }

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

    fn sync<T: FromRedisValue>(&self, call: &Call) -> Result<T, BackendError> {
        self.pool
            .with(|c| call.query(c, &self.loads))
            .map_err(|e| self.sync_failed(e))
    }

    async fn invoke<T: FromRedisValue>(&self, call: Call) -> Result<T, BackendError> {
        let mut conn = self.conn.get().await.map_err(backend_error)?;
        self.invoke_on(&mut conn, call).await
    }

    async fn invoke_on<T: FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        call: Call,
    ) -> Result<T, BackendError> {
        call.query_async(conn, &self.loads)
            .await
            .map_err(|e| self.async_failed(e))
    }

    /// One attempt; `first` allows the plain fast path.
    fn sync_try(&self, args: &AcquireArgs, line: Line, first: bool) -> Result<Tried, BackendError> {
        if let Some(record) = self.books.due() {
            let written = self.pool.with(|c| record.query::<()>(c));
            self.books.written(written.is_ok());
            written.map_err(|e| self.sync_failed(e))?;
        }
        let sent = Instant::now();
        if first && let Some(pipe) = args.fast(&self.fence_key, line) {
            return self
                .pool
                .with(|c| pipe.query(c))
                .map(|reply| fast_attempt(reply, sent).into())
                .map_err(|e| self.sync_failed(e));
        }
        let reply: Vec<i64> = self.sync(&args.invocation(&self.fence_key, line))?;
        Ok(attempt(&reply, sent))
    }

    async fn try_acquire_on(
        &self,
        conn: &mut MultiplexedConnection,
        args: &AcquireArgs,
        line: Line,
        first: bool,
    ) -> Result<Tried, BackendError> {
        if let Some(record) = self.books.due() {
            let written = record.query_async::<()>(conn).await;
            self.books.written(written.is_ok());
            written.map_err(|e| self.async_failed(e))?;
        }
        let sent = Instant::now();
        if first && let Some(pipe) = args.fast(&self.fence_key, line) {
            return pipe
                .query_async(conn)
                .await
                .map(|reply| fast_attempt(reply, sent).into())
                .map_err(|e| self.async_failed(e));
        }
        let reply: Vec<i64> = self
            .invoke_on(conn, args.invocation(&self.fence_key, line))
            .await?;
        Ok(attempt(&reply, sent))
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

    /// A release by `token` that hands the lock to `claim`'s successor (see
    /// [`scripts::RELEASE_TO`]).
    fn release_to(&self, key: &str, token: Token, claim: &gate::Claim) -> Call {
        let mut call = handover_invocation(&scripts::RELEASE_TO, &self.fence_key, key, token, None);
        call.arg(claim.token.encode().as_str())
            .arg(claim.lease_ms)
            .arg(&claim.meta);
        call
    }

    /// After a [`release_to`](Self::release_to) answered `reply` (`None`:
    /// no answer): wakes the successor with the lock. `true` when the
    /// successor left without it, so the lock granted to it must be given
    /// back ([`successor_release`](Self::successor_release)).
    fn settle(&self, key: &str, claim: &gate::Claim, reply: Option<&[i64]>) -> bool {
        let granted = match reply {
            Some(&[1, fence]) if fence > 0 => u64::try_from(fence).ok(),
            _ => None,
        };
        self.gates.deliver(key, claim, granted)
    }

    /// Gives back, without waiting, a lock granted to a successor that left.
    fn give_back(self: &Arc<Self>, key: &str, claim: &gate::Claim) {
        self.release_leftover(key, claim.token, Release::MayHaveWon);
    }

    /// The release of a lock granted to a successor that left.
    fn successor_release(&self, key: &str, claim: &gate::Claim) -> Call {
        handover_invocation(&scripts::RELEASE, &self.fence_key, key, claim.token, None)
    }

    /// Every async operation goes through here: `op` runs where
    /// [`Place::here`] says, with the connection of that runtime, so the
    /// requests of one caller runtime (its clean-ups included) share one
    /// connection and Redis runs them in the order they were sent.
    fn run<T, Fut>(
        self: &Arc<Self>,
        op: impl FnOnce(Arc<Inner>, MultiplexedConnection) -> Fut + Send + 'static,
    ) -> BoxFuture<'static, Result<T, BackendError>>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, BackendError>> + Send + 'static,
    {
        let inner = Arc::clone(self);
        Place::here().run(async move {
            let conn = inner.conn.get().await.map_err(backend_error)?;
            op(inner, conn).await
        })
    }
}

impl Backend for RedisBackend {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let args = AcquireArgs::new(req, false, self.inner.books.meta_of(req));
        self.inner
            .sync_try(&args, Line::Out, true)
            .map(|t| t.attempt)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        if let Some(claim) = self.inner.gates.claim(key) {
            let out = self
                .inner
                .sync::<Vec<i64>>(&self.inner.release_to(key, token, &claim));
            if self.inner.settle(key, &claim, out.as_deref().ok()) {
                self.inner.give_back(key, &claim);
            }
            return out.map(|r| r.first() == Some(&1));
        }
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

    fn holders(&self, ns: &Namespace) -> Option<Result<Vec<Held>, BackendError>> {
        // Every page of the namespace's keys (every key under no prefix;
        // `key_of` drops the store's own records and other namespaces),
        // each read with its holder.
        let prefix = ns.key("".into()).into_owned();
        let mut held = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match self.inner.page(ns, &prefix, cursor.as_deref(), 1000) {
                Ok(page) => page,
                Err(e) => return Some(Err(e)),
            };
            held.extend(page.held);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Some(Ok(held)),
            }
        }
    }

    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        let args = AcquireArgs::new(req, true, self.inner.books.meta_of(req));
        let waiting = Waiting::new(req, wait, Instant::now());
        drivers::acquire_blocking(&self.inner, &args, waiting)
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        Some(self.inner.page(ns, prefix, cursor, limit))
    }

    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        let read = self.inner.inspect(vec![key.to_owned()]);
        Some(read.map(|mut held| held.pop().flatten()))
    }

    fn force_release(&self, ns: &Namespace, entry: Forced) -> Option<Result<Forced, BackendError>> {
        let _ = ns;
        Some(self.inner.force(&entry))
    }

    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        let _ = ns;
        Some(self.inner.audit(limit))
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        let args = AcquireArgs::new(req, false, self.inner.books.meta_of(req));
        self.inner.run(move |inner, mut conn| async move {
            let out = inner
                .try_acquire_on(&mut conn, &args, Line::Out, true)
                .await
                .map(|t| t.attempt);
            if out.is_err() {
                inner.attempt_failed(conn, &args);
            }
            out
        })
    }

    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        let args = AcquireArgs::new(req, true, self.inner.books.meta_of(req));
        let waiting = Waiting::new(req, wait, Instant::now());
        if !waiting.fair() && self.inner.gates.quiet() {
            return self
                .inner
                .run(move |inner, conn| drivers::acquire(inner, conn, args, waiting));
        }
        // Contended in this process (or fair): no attempt before the local
        // line, whose waiters' futures are kept small.
        Place::here().run(drivers::wait(
            Arc::clone(&self.inner),
            args,
            waiting,
            waiting::Outcome::Start,
        ))
    }

    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let key = key.to_owned();
        self.inner.run(move |inner, conn| async move {
            // The guard is gone once its release starts: dropped or failed
            // before the reply, the release is sent again after it.
            let claim = inner.gates.claim(&key);
            let mut unanswered = Unanswered {
                inner: &inner,
                conn,
                claim,
                leftover: Some(Leftover {
                    key,
                    token,
                    release: Release::Again,
                    leave: None,
                }),
            };
            unanswered.release().await
        })
    }

    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let key = key.to_owned();
        self.inner.run(move |inner, mut conn| async move {
            inner
                .invoke_on::<i64>(&mut conn, extend_invocation(&key, token, lease))
                .await
                .map(|n| n == 1)
        })
    }

    /// Sent on the connection of wherever this runs, the one a cancelled
    /// acquisition of that caller used: Redis runs the release after the
    /// acquisition's request still in flight, which it cannot overtake.
    fn release_detached(&self, key: &str, token: Token) {
        self.inner.release_leftover(key, token, Release::Dropped);
    }

    fn give_back_detached(&self, key: &str, token: Token) {
        // A cancelled acquisition usually won nothing: no warning then.
        self.inner.release_leftover(key, token, Release::MayHaveWon);
    }
}

/// A release sent but not yet answered; dropped so, it hands the release off
/// to be sent again after it (a second release of a lock already given back
/// changes nothing).
struct Unanswered<'a> {
    inner: &'a Arc<Inner>,
    conn: MultiplexedConnection,
    /// A successor in this process the release hands the lock to.
    claim: Option<gate::Claim>,
    leftover: Option<Leftover>,
}

impl Unanswered<'_> {
    async fn release(&mut self) -> Result<bool, BackendError> {
        let Some(l) = &self.leftover else {
            return Ok(false);
        };
        if let Some(claim) = &self.claim {
            let inv = self.inner.release_to(&l.key, l.token, claim);
            let out = self.inner.invoke_on::<Vec<i64>>(&mut self.conn, inv).await;
            if self.inner.settle(&l.key, claim, out.as_deref().ok()) {
                self.inner.give_back(&l.key, claim);
            }
            self.claim = None;
            if out.is_ok() {
                self.leftover = None;
            }
            return out.map(|r| r.first() == Some(&1));
        }
        let inv = handover_invocation(
            &scripts::RELEASE,
            &self.inner.fence_key,
            &l.key,
            l.token,
            None,
        );
        let out = self.inner.invoke_on::<i64>(&mut self.conn, inv).await;
        if out.is_ok() {
            self.leftover = None;
        }
        out.map(|n| n == 1)
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let (Some(claim), Some(l)) = (self.claim.take(), &self.leftover) {
            // Unknown whether it landed: the successor finds out by its own
            // next look.
            self.inner.gates.deliver(&l.key, &claim, None);
        }
        if let Some(l) = self.leftover.take() {
            self.inner.hand_off(Some(self.conn.clone()), l);
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
            attempt(&[1, 7], now).attempt,
            Attempt::Acquired(Acquired::new(Some(7)).sent_at(now))
        );
        assert_eq!(
            attempt(&[0, 250], now).attempt,
            Attempt::Busy(Busy::new(Some(Duration::from_millis(250))))
        );
        assert_eq!(
            attempt(&[0, -1], now).attempt,
            Attempt::Busy(Busy::new(None))
        );
        assert_eq!(
            attempt(&[0, -2], now).attempt,
            Attempt::Busy(Busy::new(Some(Duration::ZERO)))
        );
        let in_line = attempt(&[0, 250, 41], now);
        assert_eq!(
            in_line.fence_now,
            Some(41),
            "a busy look in line reports the counter"
        );
        assert_eq!(attempt(&[1, 41], now).fence_now, None);
    }

    #[test]
    fn listing_cursors_round_trip_any_key() {
        let rest = vec![
            "a;b".to_owned(),
            "7:x".to_owned(),
            String::new(),
            "é".to_owned(),
        ];
        for at in [None, Some(0), Some(123_456)] {
            assert_eq!(
                decode_cursor(&encode_cursor(at, &rest)),
                Some((at, rest.clone()))
            );
            assert_eq!(
                decode_cursor(&encode_cursor(at, &[])),
                Some((at, Vec::new()))
            );
        }
        for bad in ["", "x", "12;", "12;3:ab", "12;2:abc", "E;z:ab"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn leases_never_round_down_to_zero() {
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
