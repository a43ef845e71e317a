//! The Postgres store (feature `postgres`): locks shared by every process
//! whose alias points at the same database, one row per held key in a
//! lease table, with `LISTEN`/`NOTIFY` wake-ups.
//!
//! # URL and settings
//!
//! `postgres://[user[:password]@]host[:port]/db` (or `postgresql://`), with
//! the usual alias settings `prefix`, `poll_ms`, `lease_ms`,
//! `connect_timeout_ms` (default 2000) and `timeout_ms` (default 2000: every
//! call is bounded by it on the client, and by `statement_timeout` on the
//! server), and `table` (default `lock_leases`; a plain identifier:
//! `a`-`z`, `0`-`9`, `_`). The password never shows in `Debug` output or in
//! errors.
//!
//! ```
//! use lock_runtime::registry::AliasConfig;
//!
//! // Parsing and registering never connect; the first lock does.
//! let cfg = AliasConfig::from_url(
//!     "postgres://app:secret@db.internal:5432/app?table=job_locks&prefix=jobs:&timeout_ms=500",
//! )
//! .unwrap();
//! assert_eq!(cfg.get_prefix(), "jobs:");
//! assert!(!format!("{cfg:?}").contains("secret"));
//! ```
//!
//! # Schema
//!
//! The first connection creates the table and the fencing sequence if they
//! are missing (safe when several processes start at once). To create them
//! by hand instead (then the locking role needs only `SELECT`, `INSERT`,
//! `UPDATE`, `DELETE` on the table and `USAGE` on the sequence), see
//! [`schema_sql`]:
//!
//! ```sql
//! CREATE SEQUENCE IF NOT EXISTS "lock_leases_fence";
//! CREATE TABLE IF NOT EXISTS "lock_leases" (
//!     key         bytea PRIMARY KEY,      -- the alias prefix + the lock's key (UTF-8)
//!     owner       text NOT NULL,          -- the holder's token ('' once released)
//!     fence       bigint NOT NULL,        -- from the sequence: only goes up
//!     acquired_at timestamptz NOT NULL,   -- database clock
//!     lease_end   timestamptz NOT NULL,   -- database clock
//!     label       text,                   -- the lock's label, if any
//!     function    text                    -- the `#[lock]` function's path, if any
//! );
//! CREATE TABLE IF NOT EXISTS "lock_leases_procs" (
//!     tag     text PRIMARY KEY,           -- a process's tokens' first 11 characters
//!     host    text,
//!     pid     bigint,
//!     written timestamptz NOT NULL        -- rewritten daily while the process locks
//! );
//! CREATE TABLE IF NOT EXISTS "lock_leases_audit" ( -- forced releases, about the newest 1000
//!     id bigserial PRIMARY KEY, key bytea NOT NULL, at timestamptz NOT NULL,
//!     by_host text, by_pid bigint, by_user text, reason text NOT NULL,
//!     removed boolean NOT NULL,           -- whether it removed a holder, described by:
//!     r_host text, r_pid bigint, r_label text, r_function text,
//!     r_fencing bigint, r_held_ms bigint
//! );
//! ```
//!
//! Who holds a lock costs its row only the label and function it was taken
//! with (NULL for none): the owner token's first 11 characters name the
//! process, whose host and pid are one row of `_procs`, written once per
//! process. A table made before holders were recorded gets its columns on
//! the first connection (or run this by hand, before upgrading, where the
//! locking role may not alter the table; its old rows show no holder):
//!
//! ```sql
//! ALTER TABLE "lock_leases" ADD COLUMN IF NOT EXISTS label text,
//!     ADD COLUMN IF NOT EXISTS function text;
//! -- and the `_procs` and `_audit` tables above
//! ```
//!
//! # Admin
//!
//! [`Alias::list`](crate::registry::Alias::list) reads a range of the
//! primary key (`key > cursor ORDER BY key LIMIT n`) with the holder's
//! process joined in. [`Alias::force_release`](crate::registry::Alias::force_release)
//! is one statement: it frees the row whoever holds it as a release does
//! (ownerless and ended, the fencing sequence untouched, `NOTIFY` to the
//! key's waiters), appends the audit row and deletes audit rows older than
//! the newest 1000.
//!
//! # How it locks
//!
//! Every operation is one statement, timed by the database's clock
//! (`clock_timestamp()`), never a client's. Acquire is one
//! `INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE` the lease ended (or
//! the holder is older than `steal_after`) `RETURNING` the new fencing
//! number from the sequence, and the same statement reads the busy holder's
//! remaining lease, so a waiter looks again right when it ends. Release and
//! extend compare the owner token. A release leaves the row, ownerless and
//! ended, so that every grant but a key's first takes a row over and draws
//! its fencing number under the row's lock, in holding order even when
//! statements race on separate connections. Rows whose lease ended stay
//! until taken over or cleaned up
//! ([`Alias::clean_up`](crate::registry::Alias::clean_up): run it on a
//! schedule, with a grace of a few seconds or more).
//! [`Alias::holders`](crate::registry::Alias::holders) lists the locks held
//! under the alias's prefix, with their age, lease left and fencing number.
//!
//! # Wake-ups
//!
//! A release sends `NOTIFY` on the alias's channel (derived from the table
//! and the prefix) in the same statement that frees the row; each store keeps
//! one `LISTEN` connection on the runtime's I/O thread and wakes the
//! waiters of the released key. A waiter in another process so takes over
//! a lock a few milliseconds after its release on a local server (5 to 10
//! ms on a busy 2-core test machine; `tests/postgres.rs` measures and prints
//! it), instead of at its next poll. If the `LISTEN`
//! connection drops, waiters look again at their holder's lease end and at
//! least every second until it is back.
//!
//! # PgBouncer, restarts, failover
//!
//! No session state holds a lock (no advisory locks, no open transaction):
//! a lock is its row, so transaction pooling is fine for locking, given
//! `max_prepared_statements` (PgBouncer 1.21+; the store prepares its five
//! statements per connection) and `ignore_startup_parameters = options`
//! (the `statement_timeout` it sets; the client-side timeout still bounds
//! calls). `LISTEN` needs a session: through a transaction pool it hears
//! nothing, and waiters fall back to polling; point such deployments'
//! listener at a session pool or the server (the alias's URL is used for
//! both, so use a session-pooled URL to keep wake-ups).
//!
//! A server restart keeps the table (and so every lock with a running
//! lease): calls during the outage fail with a connection error within the
//! timeouts, the next call reconnects, and holders whose renewal could not
//! reach the server before their lease ended are told their lock is lost.
//! A failover to a replica keeps the locks that reached it: with
//! asynchronous replication, a grant made just before the failover may be
//! lost, so two holders are possible then; use synchronous replication
//! where that matters, and fencing numbers either way.

mod listen;
mod pool;
mod sql;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::Config;

use super::kind::{Opening, StoreKind};
use super::{
    Abilities, Acquired, AsyncCleanUp, AsyncForceRelease, AsyncInspect, AsyncListing,
    AsyncOwnerCheck, AsyncStore, Attempt, BackendError, BoxFuture, Busy, EncodedToken, Held,
    Namespace, OwnerCheck, Request, Signal, Store, Token, WakeUps, Watch,
};
use crate::admin::{AUDIT_LOG_LEN, Forced, Owner, Page};
use crate::config::{self, redact};
use crate::lease::DEFAULT_LEASE;
use listen::Listener;
use pool::Pool;
use sql::Names;

/// The lease table of an alias that sets no `table`.
///
/// ```
/// assert_eq!(lock_runtime::backend::postgres::DEFAULT_TABLE, "lock_leases");
/// ```
pub const DEFAULT_TABLE: &str = "lock_leases";

/// `postgres://` and `postgresql://`.
pub(crate) static KIND: StoreKind = StoreKind {
    name: "Postgres",
    schemes: &["postgres", "postgresql"],
    settings: &[
        "prefix",
        "poll_ms",
        "lease_ms",
        "table",
        "connect_timeout_ms",
        "timeout_ms",
    ],
    passed_on: &["table"],
    default_prefix: "lock:",
    locate: |url| Ok(vec![url.to_owned()]),
    open: |at, o| {
        let url = at.first().map_or("", String::as_str);
        PostgresStore::open(url, o).map(|s| super::dual(Arc::new(s)))
    },
    fresh: None,
};

/// The SQL that creates the lease table `table` and its fencing sequence,
/// for a database where the locking role may not create tables. Errors if
/// `table` is not a plain identifier.
///
/// ```
/// use lock_runtime::backend::postgres::{schema_sql, DEFAULT_TABLE};
///
/// let sql = schema_sql(DEFAULT_TABLE).unwrap();
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS \"lock_leases\""));
/// assert!(sql.contains("CREATE SEQUENCE IF NOT EXISTS \"lock_leases_fence\""));
/// assert!(schema_sql("no; drop table x").is_err());
/// ```
pub fn schema_sql(table: &str) -> Result<String, String> {
    let statements = Names::new(table, "")?.schema();
    Ok(statements.iter().map(|s| format!("{s};\n")).collect())
}

/// One database as a lock store, as an alias opens it.
struct PostgresStore {
    url: String,
    names: Arc<Names>,
    /// The release statement's NOTIFY channel, shared by the calls.
    channel: Arc<str>,
    pool: Arc<Pool>,
    listener: Listener,
    /// Unix seconds after which this process writes its record again (on
    /// its next acquisition); 0: not written yet.
    proc_due: Arc<AtomicU64>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &redact(&self.url))
            .field("table", &self.names.table)
            .field("channel", &self.names.channel)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Reads the URL and the `table` setting; connects nothing yet.
    fn open(url: &str, o: &Opening<'_>) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut table = DEFAULT_TABLE.to_owned();
        for s in config::settings(query, "Postgres", &["table"]).map_err(|e| e.reason)? {
            table = s.value;
        }
        let names = Arc::new(Names::new(&table, o.prefix)?);
        let mut cfg = Config::from_str(base)
            .map_err(|e| format!("invalid Postgres URL `{}`: {e}", redact(base)))?;
        cfg.connect_timeout(o.connect_timeout)
            .application_name("lock-runtime")
            .options(format!(
                "-c statement_timeout={}",
                o.command_timeout.as_millis()
            ))
            // A server that vanished without closing the socket is noticed
            // by the LISTEN connection, which is otherwise idle.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        let listener = Listener::new(
            cfg.clone(),
            names.channel.clone(),
            o.connect_timeout,
            o.command_timeout,
        );
        Ok(Self {
            url: base.to_owned(),
            pool: Arc::new(Pool::new(
                cfg,
                Arc::clone(&names),
                o.connect_timeout,
                o.command_timeout,
            )),
            channel: names.channel.as_str().into(),
            names,
            listener,
            proc_due: Arc::new(AtomicU64::new(0)),
        })
    }
}

impl PostgresStore {
    fn channel(&self) -> Arc<str> {
        Arc::clone(&self.channel)
    }
}

/// Milliseconds for a `bigint` parameter; durations are capped far below
/// its range by the runtime, and saturate anyway.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The store's operations, each one statement on a client, written once for
/// both forms: the async one awaits them on the I/O thread's clients, the
/// sync one on a connection the calling thread drives (see
/// [`Pool::blocking`]).
mod ops {
    use std::sync::Arc;

    use tokio_postgres::Error;

    use super::pool::Conn;
    use crate::backend::EncodedToken;

    /// The fence if it won, else how long until the holder's lease ends;
    /// the process record written first when it is due.
    pub(super) async fn acquire(
        c: Arc<Conn>,
        args: super::AcquireArgs,
    ) -> Result<(Option<i64>, Option<i64>), Error> {
        let super::AcquireArgs {
            key,
            owner,
            lease,
            steal,
            label,
            function,
            record,
        } = args;
        if let Some((sql, due)) = record {
            let host = crate::admin::host_name();
            let pid = i64::from(std::process::id());
            c.client
                .execute(&sql, &[&crate::admin::process_tag(), &host, &pid])
                .await?;
            due.store(
                super::unix_now() + super::PROC_REWRITE.as_secs(),
                std::sync::atomic::Ordering::Release,
            );
        }
        let row = c
            .client
            .query_one(
                &c.acquire,
                &[&key, &owner.as_str(), &lease, &steal, &label, &function],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Whether the owner's row went while its lease ran.
    pub(super) async fn release(
        c: Arc<Conn>,
        key: Vec<u8>,
        owner: EncodedToken,
        channel: Arc<str>,
    ) -> Result<bool, Error> {
        let rows = c
            .client
            .query(&c.release, &[&key, &owner.as_str(), &&*channel])
            .await?;
        match rows.first() {
            Some(r) => r.try_get(0),
            None => Ok(false),
        }
    }

    pub(super) async fn extend(
        c: Arc<Conn>,
        key: Vec<u8>,
        owner: EncodedToken,
        lease: i64,
    ) -> Result<bool, Error> {
        Ok(c.client
            .execute(&c.extend, &[&key, &owner.as_str(), &lease])
            .await?
            == 1)
    }

    pub(super) async fn holds(
        c: Arc<Conn>,
        key: Vec<u8>,
        owner: EncodedToken,
    ) -> Result<bool, Error> {
        Ok(!c
            .client
            .query(&c.holds, &[&key, &owner.as_str()])
            .await?
            .is_empty())
    }
}

/// An acquire statement's answer as an attempt.
fn attempt((fence, retry): (Option<i64>, Option<i64>), sent: Instant) -> Attempt {
    match fence {
        Some(f) => Attempt::Acquired(Acquired::new(u64::try_from(f).ok()).sent_at(sent)),
        None => Attempt::Busy(Busy::new(
            retry.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        )),
    }
}

/// What one acquisition sends, owned.
struct AcquireArgs {
    key: Vec<u8>,
    owner: EncodedToken,
    lease: i64,
    steal: Option<i64>,
    label: Option<String>,
    function: Option<String>,
    /// The process record's statement, when it is due, and where to say
    /// when it is due next.
    record: Option<(String, Arc<AtomicU64>)>,
}

/// How often a process writes its record again, on its next acquisition.
const PROC_REWRITE: Duration = Duration::from_secs(12 * 3600);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PostgresStore {
    /// The acquire statement's parameters for `req`.
    fn acquire_args(&self, req: &Request<'_>) -> AcquireArgs {
        let due = self.proc_due.load(Ordering::Acquire) <= unix_now();
        AcquireArgs {
            key: req.key.as_bytes().to_vec(),
            owner: req.token.encode(),
            lease: millis(req.lease.unwrap_or(DEFAULT_LEASE)),
            steal: req.steal_after.map(millis),
            label: req.label.map(str::to_owned),
            function: req.function.map(str::to_owned),
            record: due.then(|| (self.names.write_proc(), Arc::clone(&self.proc_due))),
        }
    }
}

impl AsyncStore for PostgresStore {
    fn try_acquire<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        Box::pin(async move {
            let sent = Instant::now();
            let args = self.acquire_args(req);
            let answer = self
                .pool
                .with(Some(req.key), |c| ops::acquire(c, args))
                .await?;
            Ok(attempt(answer, sent))
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let (bytes, owner, channel) = (key.as_bytes().to_vec(), token.encode(), self.channel());
        Box::pin(
            self.pool
                .with(Some(key), move |c| ops::release(c, bytes, owner, channel)),
        )
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let (bytes, owner, lease) = (key.as_bytes().to_vec(), token.encode(), millis(lease));
        Box::pin(
            self.pool
                .with(Some(key), move |c| ops::extend(c, bytes, owner, lease)),
        )
    }

    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
            .async_owner_check(self)
            .async_clean_up(self)
            .async_listing(self)
            .async_inspect(self)
            .async_force_release(self)
            .wake_ups(self)
    }
}

/// The sync form: the same statements, on a connection the calling thread
/// drives itself, so a sync caller's call costs no hop to the I/O thread.
impl Store for PostgresStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let sent = Instant::now();
        let args = self.acquire_args(req);
        let answer = self
            .pool
            .blocking(Some(req.key), move |c| ops::acquire(c, args))?;
        Ok(attempt(answer, sent))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let (bytes, owner, channel) = (key.as_bytes().to_vec(), token.encode(), self.channel());
        self.pool
            .blocking(Some(key), move |c| ops::release(c, bytes, owner, channel))
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let (bytes, owner, lease) = (key.as_bytes().to_vec(), token.encode(), millis(lease));
        self.pool
            .blocking(Some(key), move |c| ops::extend(c, bytes, owner, lease))
    }

    fn abilities(&self) -> Abilities<'_> {
        AsyncStore::abilities(self).owner_check(self)
    }
}

impl OwnerCheck for PostgresStore {
    fn holds(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let (bytes, owner) = (key.as_bytes().to_vec(), token.encode());
        self.pool
            .blocking(Some(key), move |c| ops::holds(c, bytes, owner))
    }
}

impl AsyncOwnerCheck for PostgresStore {
    fn holds<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let (bytes, owner) = (key.as_bytes().to_vec(), token.encode());
        Box::pin(
            self.pool
                .with(Some(key), move |c| ops::holds(c, bytes, owner)),
        )
    }
}

impl AsyncCleanUp for PostgresStore {
    fn clean_up<'a>(&'a self, grace: Duration) -> BoxFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let grace = millis(grace);
            let procs = self.names.clean_procs();
            self.pool
                .with(None, |c| async move {
                    let gone = c.client.execute(&c.clean_up, &[&grace]).await?;
                    c.client.execute(&procs, &[]).await?;
                    Ok(gone)
                })
                .await
        })
    }
}

impl AsyncListing for PostgresStore {
    fn holders<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<Vec<Held>, BackendError>> {
        Box::pin(async move {
            let head = ns.head().as_bytes();
            let len = i32::try_from(head.len()).unwrap_or(i32::MAX);
            let rows = self
                .pool
                .with(None, |c| async move {
                    c.client.query(&c.holders, &[&head, &len]).await
                })
                .await?;
            let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
            let mut held = Vec::with_capacity(rows.len());
            for row in rows {
                let decode = |e: tokio_postgres::Error| pool::error(&e);
                let key: Vec<u8> = row.try_get(0).map_err(decode)?;
                // Keys come from `&str`s; a row put in by hand that is not
                // UTF-8 names no lock of this runtime's.
                let Ok(key) = String::from_utf8(key) else {
                    continue;
                };
                let fence: i64 = row.try_get(1).map_err(decode)?;
                let held_for: i64 = row.try_get(2).map_err(decode)?;
                let left: i64 = row.try_get(3).map_err(decode)?;
                held.push(
                    Held::new(key)
                        .fencing(u64::try_from(fence).ok())
                        .held_for(Some(ms(held_for)))
                        .lease_left(Some(ms(left))),
                );
            }
            Ok(held)
        })
    }
}

/// A row as the page and show statements read it (see `Names::page`).
fn held_row(row: &tokio_postgres::Row) -> Result<Option<Held>, tokio_postgres::Error> {
    let key: Vec<u8> = row.try_get(0)?;
    // Keys come from `&str`s; a row put in by hand that is not UTF-8
    // names no lock of this runtime's.
    let Ok(key) = String::from_utf8(key) else {
        return Ok(None);
    };
    let fence: i64 = row.try_get(1)?;
    let held_for = ms(row.try_get(2)?);
    let left = ms(row.try_get(3)?);
    let owner = Owner::unknown()
        .label(row.try_get(4)?)
        .function(row.try_get(5)?)
        .host(row.try_get(6)?)
        .pid(
            row.try_get::<_, Option<i64>>(7)?
                .and_then(|p| u32::try_from(p).ok()),
        );
    Ok(Some(
        Held::new(key)
            .fencing(u64::try_from(fence).ok())
            .held_for(Some(held_for))
            .lease_left(Some(left))
            .owner((owner != Owner::unknown()).then_some(owner))
            .acquired_at(SystemTime::now().checked_sub(held_for)),
    ))
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

impl AsyncInspect for PostgresStore {
    fn list<'a>(
        &'a self,
        _ns: &'a Namespace,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, BackendError>> {
        Box::pin(async move {
            let limit = limit.max(1);
            let head = prefix.as_bytes();
            let len = i32::try_from(head.len()).unwrap_or(i32::MAX);
            let after = cursor.map(str::as_bytes);
            let n = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let sql = self.names.page();
            let rows = self
                .pool
                .with(None, |c| async move {
                    c.client.query(&sql, &[&head, &len, &after, &n]).await
                })
                .await?;
            let mut held = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(h) = held_row(row).map_err(|e| pool::error(&e))? {
                    held.push(h);
                }
            }
            // The cursor is the last row's key read, so that a row skipped
            // (not UTF-8) does not end the pages early.
            let more = rows.len() > limit;
            let next = if more {
                let last = rows.get(limit - 1).map(|r| r.try_get::<_, Vec<u8>>(0));
                match last {
                    Some(Ok(k)) => Some(String::from_utf8_lossy(&k).into_owned()),
                    _ => None,
                }
            } else {
                None
            };
            held.retain(|h| next.as_deref().is_none_or(|n| *h.key <= *n));
            Ok(Page::new(held, next))
        })
    }

    fn show<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Held>, BackendError>> {
        Box::pin(async move {
            let bytes = key.as_bytes();
            let sql = self.names.show();
            let rows = self
                .pool
                .with(Some(key), |c| async move {
                    c.client.query(&sql, &[&bytes]).await
                })
                .await?;
            match rows.first() {
                Some(row) => held_row(row).map_err(|e| pool::error(&e)),
                None => Ok(None),
            }
        })
    }
}

impl AsyncForceRelease for PostgresStore {
    fn force_release<'a>(
        &'a self,
        _ns: &'a Namespace,
        mut entry: Forced,
    ) -> BoxFuture<'a, Result<Forced, BackendError>> {
        Box::pin(async move {
            let at_ms = entry
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let key = entry.key.as_bytes().to_vec();
            let by_pid = entry.by.pid.map(i64::from);
            let (by_host, by_user, reason) = (
                entry.by.host.clone(),
                entry.by.label.clone(),
                entry.reason.clone(),
            );
            let (channel, kept) = (self.channel(), AUDIT_LOG_LEN as i64);
            let sql = self.names.force();
            let row = self
                .pool
                .with(Some(&entry.key), |c| async move {
                    c.client
                        .query_one(
                            &sql,
                            &[
                                &key, &at_ms, &by_host, &by_pid, &by_user, &reason, &&*channel,
                                &kept,
                            ],
                        )
                        .await
                })
                .await?;
            let decode = |e: tokio_postgres::Error| pool::error(&e);
            let removed: bool = row.try_get(0).map_err(decode)?;
            if removed {
                let owner = Owner::unknown()
                    .host(row.try_get(1).map_err(decode)?)
                    .pid(
                        row.try_get::<_, Option<i64>>(2)
                            .map_err(decode)?
                            .and_then(|p| u32::try_from(p).ok()),
                    )
                    .label(row.try_get(3).map_err(decode)?)
                    .function(row.try_get(4).map_err(decode)?);
                let fence: Option<i64> = row.try_get(5).map_err(decode)?;
                let held_for: Option<i64> = row.try_get(6).map_err(decode)?;
                let held_for = held_for.map(ms);
                entry.removed = Some(
                    Held::new(entry.key.clone())
                        .owner((owner != Owner::unknown()).then_some(owner))
                        .fencing(fence.and_then(|f| u64::try_from(f).ok()))
                        .held_for(held_for)
                        .acquired_at(held_for.and_then(|d| SystemTime::now().checked_sub(d))),
                );
            }
            Ok(entry)
        })
    }

    fn audit_log<'a>(
        &'a self,
        ns: &'a Namespace,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Forced>, BackendError>> {
        Box::pin(async move {
            let head = ns.head().as_bytes();
            let len = i32::try_from(head.len()).unwrap_or(i32::MAX);
            let n = limit.min(AUDIT_LOG_LEN) as i64;
            let sql = self.names.audit_log();
            let rows = self
                .pool
                .with(None, |c| async move {
                    c.client.query(&sql, &[&head, &len, &n]).await
                })
                .await?;
            let decode = |e: tokio_postgres::Error| pool::error(&e);
            let mut log = Vec::with_capacity(rows.len());
            for r in rows {
                let Ok(key) = String::from_utf8(r.try_get(0).map_err(decode)?) else {
                    continue;
                };
                let at_ms: i64 = r.try_get(1).map_err(decode)?;
                let at = UNIX_EPOCH + ms(at_ms);
                let pid = |i: usize| -> Result<Option<u32>, BackendError> {
                    Ok(r.try_get::<_, Option<i64>>(i)
                        .map_err(decode)?
                        .and_then(|p| u32::try_from(p).ok()))
                };
                let by = Owner::unknown()
                    .host(r.try_get(2).map_err(decode)?)
                    .pid(pid(3)?)
                    .label(r.try_get(4).map_err(decode)?);
                let reason: String = r.try_get(5).map_err(decode)?;
                let removed = if r.try_get::<_, bool>(6).map_err(decode)? {
                    let owner = Owner::unknown()
                        .host(r.try_get(7).map_err(decode)?)
                        .pid(pid(8)?)
                        .label(r.try_get(9).map_err(decode)?)
                        .function(r.try_get(10).map_err(decode)?);
                    let fence: Option<i64> = r.try_get(11).map_err(decode)?;
                    let held_for = r.try_get::<_, Option<i64>>(12).map_err(decode)?.map(ms);
                    Some(
                        Held::new(key.clone())
                            .owner((owner != Owner::unknown()).then_some(owner))
                            .fencing(fence.and_then(|f| u64::try_from(f).ok()))
                            .held_for(held_for)
                            .acquired_at(held_for.and_then(|d| at.checked_sub(d))),
                    )
                } else {
                    None
                };
                log.push(Forced::new(key, at, by, reason).removed(removed));
            }
            Ok(log)
        })
    }
}

impl WakeUps for PostgresStore {
    fn watch(&self, key: &str, signal: &Signal) -> Result<Watch, BackendError> {
        self.listener.watch(key, signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening() -> Opening<'static> {
        Opening {
            prefix: "lock:",
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            tls_ca: None,
        }
    }

    #[test]
    fn postgres_urls_open_without_connecting() {
        let store = PostgresStore::open(
            "postgres://u:hunter2@127.0.0.1:1/db?table=my_locks",
            &opening(),
        )
        .unwrap();
        assert_eq!(store.names.table, "my_locks");
        let shown = format!("{store:?}");
        assert!(
            shown.contains("u:***@") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn postgres_bad_tables_and_urls_are_refused() {
        let e = PostgresStore::open("postgres://h/db?table=a-b", &opening()).unwrap_err();
        assert!(e.contains("plain identifier"), "{e}");
        let e = PostgresStore::open("postgres://u:hunter2@h:notaport/db", &opening()).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn postgres_kind_takes_both_schemes() {
        for scheme in ["postgres", "postgresql"] {
            assert!(std::ptr::eq(
                super::super::kind::by_scheme(scheme).unwrap(),
                &KIND
            ));
        }
    }
}
