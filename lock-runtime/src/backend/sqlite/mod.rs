//! The SQLite store (feature `sqlite`): locks shared by the processes of one
//! host through a file, with no server. One row per held key in a lock
//! table; every operation is one transaction.
//!
//! # URL and settings
//! `sqlite:///abs/path/locks.db` or `sqlite://relative/path.db` (relative to
//! the working directory when the alias is configured; `%` escapes as in any
//! URL). Settings: `prefix`, `poll_ms`, `lease_ms`, `timeout_ms` (SQLite's
//! busy timeout: how long a call waits for another process's write to
//! finish; default 2 s) and `table` (the lock table, default `lock_leases`;
//! an SQL identifier). The file and its tables are created on first use,
//! safely when many processes do it at once; adding the alias opens nothing.
//!
//! ```
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! let dir = std::env::temp_dir().join(format!("doc-sqlite-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let url = format!("sqlite://{}/locks.db?table=app_locks&timeout_ms=500", dir.display());
//! registry::add("doc-sqlite", AliasConfig::from_url(&url).unwrap()).unwrap();
//!
//! let guard = Lock::new("invoice-7").alias("doc-sqlite").acquire().unwrap();
//! assert!(guard.fencing_token().is_some());
//! // Another process (here: another lock) finds it held.
//! assert!(Lock::new("invoice-7").alias("doc-sqlite").try_acquire().unwrap().is_none());
//! drop(guard);
//! # std::fs::remove_dir_all(&dir).ok();
//! ```
//!
//! # Schema
//! What the store creates when the table is missing (for `table=lock_leases`),
//! which is also the SQL to create it by hand (for example where the
//! processes may not create tables):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "lock_leases" (
//!     key         TEXT    NOT NULL PRIMARY KEY, -- the alias's prefix, then the key
//!     owner       TEXT    NOT NULL,             -- the holder's token
//!     epoch       TEXT    NOT NULL,             -- the boot the times below belong to
//!     acquired_at INTEGER NOT NULL,             -- µs on the shared clock (see below)
//!     lease_end   INTEGER NOT NULL,             -- µs on the shared clock
//!     fencing     INTEGER NOT NULL,             -- this acquisition's fencing token
//!     label       TEXT,                         -- the lock's label, if any
//!     function    TEXT                          -- the `#[lock]` function's path, if any
//! ) WITHOUT ROWID;
//! CREATE TABLE IF NOT EXISTS "lock_leases_fence" (
//!     name     TEXT    NOT NULL PRIMARY KEY,    -- one row, 'fence'
//!     value    INTEGER NOT NULL,                -- the last fencing token handed out
//!     reserved INTEGER NOT NULL,                -- a bound on it, synced to disk
//!     epoch    TEXT    NOT NULL                 -- the boot that wrote `value`
//! ) WITHOUT ROWID;
//! CREATE TABLE IF NOT EXISTS "lock_leases_procs" (
//!     tag     TEXT    NOT NULL PRIMARY KEY,     -- a process's tokens' first 11 characters
//!     host    TEXT,                             -- its host name
//!     pid     INTEGER,                          -- its process id
//!     written INTEGER NOT NULL                  -- unix seconds, rewritten daily
//! ) WITHOUT ROWID;
//! CREATE TABLE IF NOT EXISTS "lock_leases_audit" (  -- forced releases, newest 1000
//!     id         INTEGER PRIMARY KEY AUTOINCREMENT,
//!     key        TEXT    NOT NULL,              -- the lock, as stored
//!     at_ms      INTEGER NOT NULL,              -- unix ms
//!     by_host    TEXT,                          -- who forced it
//!     by_pid     INTEGER,
//!     by_user    TEXT,
//!     reason     TEXT    NOT NULL,
//!     removed    INTEGER NOT NULL,              -- 1: it removed a holder, described below
//!     r_host     TEXT,
//!     r_pid      INTEGER,
//!     r_label    TEXT,
//!     r_function TEXT,
//!     r_fencing  INTEGER,
//!     r_held_ms  INTEGER
//! );
//! ```
//!
//! Who holds a lock costs its row only the label and function it was taken
//! with (NULL for none): the row's owner token names the process, whose
//! host and pid are one row of `_procs`, written once per process (and
//! again daily while it locks). A table made before holders were recorded
//! is brought up to date when a process first opens it (in the set-up
//! transaction; old rows show no label):
//!
//! ```sql
//! ALTER TABLE "lock_leases" ADD COLUMN label TEXT;
//! ALTER TABLE "lock_leases" ADD COLUMN function TEXT;
//! -- and the `_procs` and `_audit` tables above, created if missing
//! ```
//!
//! # Admin
//! [`Alias::list`](crate::registry::Alias::list) reads an indexed range of
//! the key (`key > cursor ORDER BY key LIMIT n`), with the holder's process
//! joined in; [`Alias::force_release`](crate::registry::Alias::force_release)
//! deletes the row whoever owns it and appends to `_audit` in one
//! transaction, trimming it to its newest 1000 rows. The fencing counter,
//! in its own table, goes on, and the forced-out holder's next renewal or
//! check finds its row gone.
//!
//! The fencing counter is one row in the second table, never deleted (not by
//! a release, an expiry or a clean-up), so fencing tokens strictly increase
//! for every key of the table. The store keeps it in its own table, where
//! no key can reach it. The file is put in WAL mode.
//!
//! # Operations
//! Acquiring is one `BEGIN IMMEDIATE` transaction (it takes the file's write
//! lock first, so two processes never both see a key free): read the row;
//! if it is live and not older than the request's `steal_after`, answer busy
//! with the time left on its lease, so that a waiter looks again right then;
//! otherwise count the fencing counter up and write the row. Release and
//! extend are one statement each, comparing the owner token and the lease
//! end. There is no notification between processes: waiters poll, at the
//! alias's `poll_ms` with backoff and jitter, and at the holder's lease end.
//!
//! # Errors
//! A call that waited out the busy timeout fails with
//! [`LockError::Backend`] of kind
//! [`Timeout`](BackendErrorKind::Timeout); a file that cannot be opened or
//! created, of kind [`Connection`](BackendErrorKind::Connection). The
//! message names the file, and the error's `source()` is SQLite's own
//! (`rusqlite::Error`).
//!
//! # The clock
//! Lease ends are points on a clock every process on the host shares. On
//! Linux it is `CLOCK_MONOTONIC` (what `Instant` reads): system-wide, and
//! it never jumps, whatever happens to the wall clock (NTP steps, a changed
//! time zone, a wrong date set by hand), so a lease can neither end early
//! nor be stretched by a clock change. It restarts at each boot, so every
//! row records the boot it was written in (`/proc/sys/kernel/random/boot_id`)
//! and a row of another boot counts as ended: its holder died with that boot.
//! (Processes in different time namespaces see different monotonic clocks:
//! they must not share a file.) On other systems the store uses the wall
//! clock (`SystemTime`): there a clock set back stretches the leases held
//! at that time, and a clock set forward ends them early, so another
//! process may take a lock whose holder still runs: keep the clock in step
//! by slewing (NTP) rather than stepping, or use the Redis store.
//!
//! # What it guarantees
//! Mutual exclusion among processes on one host, with the file on a local
//! file system: SQLite's file locks (and the WAL index in shared memory) do
//! not work on network file systems (NFS, SMB, most container volume
//! plugins); never point processes of different hosts at one file. A lock
//! whose holder dies without releasing is free when its lease ends. Fencing
//! tokens increase strictly, across releases, expiries, clean-ups and
//! restarts. Commits are not synced one by one (`synchronous=NORMAL`, four
//! times faster than syncing each): a power loss may undo the last ones,
//! which frees nothing that was not free anyway (the rows of the lost boot
//! count as ended), and the fencing counter hands out numbers from blocks
//! whose bound is synced before use, so that the first acquisition after a
//! reboot starts above every number handed out before it (on Linux, where
//! the store knows a boot from the next; elsewhere a power loss may repeat
//! the numbers of the last moments before it).
//!
//! Rows outlive their leases until the key is taken again; delete the stale
//! ones on a schedule with
//! [`Alias::clean_up`](crate::registry::Alias::clean_up), which removes the
//! rows of the whole table whose lease ended more than `grace` ago (and
//! those of earlier boots), and never a live one; and the process records
//! that no row names and that were not written for a day.

mod pool;
mod schema;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::clock;
use super::kind::{Opening, StoreKind};
use super::{
    Abilities, Acquired, Attempt, Backend, BackendError, BackendErrorKind, Busy, CleanUp,
    ForceRelease, Held, Inspect, Listing, Namespace, OwnerCheck, Request, Store, Token,
};
use crate::LockError;
use crate::admin::{AUDIT_LOG_LEN, Forced, Owner, Page};
use crate::lease::DEFAULT_LEASE;

/// `sqlite:///abs/path.db` and `sqlite://relative/path.db`.
pub(crate) static KIND: StoreKind = StoreKind {
    name: "SQLite",
    schemes: &["sqlite"],
    settings: &["prefix", "poll_ms", "lease_ms", "timeout_ms", "table"],
    passed_on: &["table"],
    default_prefix: "lock:",
    locate,
    open,
    fresh: None,
};

/// The file a `sqlite://` URL names, made absolute.
fn locate(url: &str) -> Result<Vec<String>, String> {
    let (path, located) = super::kind::locate_path(
        url,
        "sqlite",
        "no file: expected `sqlite:///abs/path/locks.db` or `sqlite://relative/path.db`",
    )?;
    if path.starts_with(":memory:") || path.starts_with("file:") {
        return Err(format!(
            "`{}`: a lock store must be a file that processes share, not `{path}`",
            crate::config::redact(url)
        ));
    }
    Ok(vec![located])
}

fn open(at: &[String], o: &Opening<'_>) -> Result<Arc<dyn Backend>, String> {
    let (path, query) = super::kind::path_of(at.first().map_or("", String::as_str))?;
    let mut store = SqliteStore::new(path).busy_timeout(o.command_timeout);
    for setting in
        crate::config::settings(query, KIND.name, KIND.passed_on).map_err(|e| e.reason)?
    {
        if setting.name == "table" {
            schema::check_table(&setting.value)?;
            store = store.with_table(setting.value);
        }
    }
    Ok(super::blocking(Arc::new(store)))
}

/// A lock table in a SQLite file, shared by the processes of one host. The
/// [module docs](self) say how it works and what it guarantees; configure it
/// with a `sqlite://` URL, or build it here and register it with
/// [`AliasConfig::store`](crate::registry::AliasConfig::store):
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::sqlite::SqliteStore;
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::Lock;
///
/// let dir = std::env::temp_dir().join(format!("doc-sqlite-store-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = SqliteStore::new(dir.join("locks.db"))
///     .table("jobs")
///     .unwrap()
///     .busy_timeout(Duration::from_secs(1));
/// registry::add("doc-sqlite-store", AliasConfig::store(Arc::new(store))).unwrap();
///
/// let guard = Lock::new("nightly").alias("doc-sqlite-store").acquire().unwrap();
/// guard.release().unwrap();
/// # std::fs::remove_dir_all(&dir).ok();
/// ```
pub struct SqliteStore {
    pool: pool::Pool,
    sql: schema::Sql,
    /// Unix seconds after which this process writes its record again (on
    /// its next acquisition); 0: not written yet.
    proc_due: AtomicU64,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.pool.path())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A store on the file at `path` (created on first use, as its tables
    /// are), with the table `lock_leases` and a busy timeout of 2 s. Opens
    /// nothing yet.
    ///
    /// ```
    /// use lock_runtime::backend::sqlite::SqliteStore;
    ///
    /// let store = SqliteStore::new("/var/lib/app/locks.db");
    /// assert!(format!("{store:?}").contains("locks.db"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::build(
            path.into(),
            schema::DEFAULT_TABLE.to_owned(),
            Duration::from_secs(2),
        )
    }

    fn build(path: PathBuf, table: String, busy_timeout: Duration) -> Self {
        Self {
            sql: schema::Sql::new(&table),
            pool: pool::Pool::new(path, table, busy_timeout),
            proc_due: AtomicU64::new(0),
        }
    }

    /// Uses the table `table` (and `table_fence` beside it) instead of
    /// `lock_leases`.
    ///
    /// ```
    /// use lock_runtime::backend::sqlite::SqliteStore;
    ///
    /// assert!(SqliteStore::new("locks.db").table("app_locks").is_ok());
    /// let err = SqliteStore::new("locks.db").table("locks; DROP TABLE users").unwrap_err();
    /// assert!(err.to_string().contains("SQL identifier"));
    /// ```
    ///
    /// # Errors
    /// [`LockError::Config`] when `table` is not a plain SQL identifier
    /// (ASCII letters, digits and `_`, not starting with a digit or `sqlite_`).
    pub fn table(self, table: &str) -> Result<Self, LockError> {
        schema::check_table(table).map_err(|r| LockError::config("", "table", r))?;
        Ok(self.with_table(table.to_owned()))
    }

    fn with_table(self, table: String) -> Self {
        let busy = self.pool.busy_timeout();
        Self::build(self.pool.path().to_owned(), table, busy)
    }

    /// How long a call waits for another process's write to finish before
    /// it fails with a [`BackendErrorKind::Timeout`] error (SQLite's busy
    /// timeout; the URL setting `timeout_ms`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::sqlite::SqliteStore;
    ///
    /// let store = SqliteStore::new("locks.db").busy_timeout(Duration::from_millis(500));
    /// # let _ = store;
    /// ```
    pub fn busy_timeout(self, timeout: Duration) -> Self {
        let table = self.pool.table().to_owned();
        Self::build(self.pool.path().to_owned(), table, timeout)
    }

    /// The file.
    ///
    /// ```
    /// use std::path::Path;
    /// use lock_runtime::backend::sqlite::SqliteStore;
    ///
    /// assert_eq!(SqliteStore::new("locks.db").path(), Path::new("locks.db"));
    /// ```
    pub fn path(&self) -> &Path {
        self.pool.path()
    }
}

/// A store error or a clock that could not be read, inside one call.
enum Failed {
    Sql(rusqlite::Error),
    Clock(std::io::Error),
}

impl From<rusqlite::Error> for Failed {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<std::io::Error> for Failed {
    fn from(e: std::io::Error) -> Self {
        Self::Clock(e)
    }
}

fn clock_error(e: std::io::Error) -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        format!("cannot read the shared clock: {e}"),
    )
}

impl SqliteStore {
    fn run<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, Failed>,
    ) -> Result<T, BackendError> {
        let mut clock = None;
        let out = self.pool.with(|conn| match f(conn) {
            Ok(v) => Ok(Some(v)),
            Err(Failed::Sql(e)) => Err(e),
            Err(Failed::Clock(e)) => {
                clock = Some(e);
                Ok(None)
            }
        })?;
        match (out, clock) {
            (Some(v), _) => Ok(v),
            (None, e) => Err(clock_error(
                e.unwrap_or_else(|| std::io::Error::other("unknown")),
            )),
        }
    }
}

/// Fencing numbers made durable at once: the counter row is synced to disk
/// when it passes the reserved bound, once per this many acquisitions. A
/// power loss skips at most this many numbers (of 2^63), and a sync, which
/// takes milliseconds on a slow disk, stays out of all but one acquisition
/// in a million.
const FENCE_BLOCK: i64 = 1_000_000;

impl SqliteStore {
    /// The next fencing number, and whether its block must be synced to disk
    /// before it is handed out. Commits are not synced one by one
    /// (`synchronous=NORMAL`: a power loss may undo the last ones), so the
    /// counter row also keeps a bound, synced whenever it moves, that no
    /// number handed out exceeds; the first acquisition of a new boot
    /// starts past it, above whatever a lost commit had handed out.
    fn next_fence(
        &self,
        tx: &rusqlite::Transaction<'_>,
        epoch: &str,
    ) -> rusqlite::Result<(i64, bool)> {
        let row: Option<(i64, i64, String)> = tx
            .prepare_cached(&self.sql.read_fence)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let (value, reserved, of) = row.unwrap_or((0, 0, String::new()));
        let last = if of == epoch {
            value
        } else {
            value.max(reserved)
        };
        let next = last.saturating_add(1);
        let (reserved, reserve) = if next > reserved {
            (next.saturating_add(FENCE_BLOCK), true)
        } else {
            (reserved, false)
        };
        tx.prepare_cached(&self.sql.write_fence)?
            .execute(params![next, reserved, epoch])?;
        Ok((next, reserve))
    }
}

/// `d` in microseconds, saturating: leases beyond 292,000 years are forever.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How long from `now` until `at` (µs on the same clock).
fn until(now: i64, at: i64) -> Duration {
    Duration::from_micros(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

impl Store for SqliteStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let sent = Instant::now();
        // The holder's age counts from here, as the holder's own view of its
        // lock does (from `sent`), not from after a first connection was
        // opened and the file set up, which can take a while.
        let asked = clock::now().map_err(clock_error)?;
        let owner = req.token.encode();
        let lease = micros(req.lease.unwrap_or(DEFAULT_LEASE));
        let steal = req.steal_after.map(micros);
        self.run(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Read inside the write lock: no other process writes between
            // this reading and the commit.
            let now = clock::now()?;
            let held: Option<(String, i64, i64)> = tx
                .prepare_cached(&self.sql.select)?
                .query_row(params![req.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((epoch, since, end)) = held
                && epoch == now.epoch
                && end > now.micros
            {
                let stale_at = steal.map(|s| since.saturating_add(s));
                match stale_at {
                    Some(at) if now.micros >= at => {}
                    _ => {
                        let free_at = stale_at.map_or(end, |at| at.min(end));
                        return Ok(Attempt::Busy(Busy::new(Some(until(now.micros, free_at)))));
                    }
                }
            }
            let (fence, reserve) = self.next_fence(&tx, now.epoch)?;
            tx.prepare_cached(&self.sql.upsert)?.execute(params![
                req.key,
                owner.as_str(),
                now.epoch,
                asked.micros.min(now.micros),
                now.micros.saturating_add(lease),
                fence,
                req.label,
                req.function
            ])?;
            let record = self.proc_due.load(Ordering::Acquire) <= unix_now();
            if record {
                tx.prepare_cached(&self.sql.write_proc)?.execute(params![
                    crate::admin::process_tag(),
                    crate::admin::host_name(),
                    std::process::id(),
                    unix_now() as i64
                ])?;
            }
            tx.commit()?;
            if record {
                self.proc_due
                    .store(unix_now() + PROC_REWRITE.as_secs(), Ordering::Release);
            }
            if reserve {
                self.pool.sync_files()?;
            }
            Ok(Attempt::Acquired(
                Acquired::new(u64::try_from(fence).ok()).sent_at(sent),
            ))
        })
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let owner = token.encode();
        self.run(|conn| {
            let now = clock::now()?;
            // The owner's own row goes even when its lease has ended (it is
            // garbage), but only a live one counts as released.
            let live: Option<bool> = conn
                .prepare_cached(&self.sql.release)?
                .query_row(params![key, owner.as_str(), now.epoch, now.micros], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(live == Some(true))
        })
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let owner = token.encode();
        let lease = micros(lease);
        self.run(|conn| {
            let now = clock::now()?;
            let changed = conn.prepare_cached(&self.sql.extend)?.execute(params![
                key,
                owner.as_str(),
                now.epoch,
                now.micros,
                now.micros.saturating_add(lease)
            ])?;
            Ok(changed == 1)
        })
    }

    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
            .owner_check(self)
            .clean_up(self)
            .listing(self)
            .inspect(self)
            .force_release(self)
    }
}

impl OwnerCheck for SqliteStore {
    /// Whether `token` holds `key` with its lease running.
    ///
    /// ```
    /// use lock_runtime::backend::sqlite::SqliteStore;
    /// use lock_runtime::backend::{OwnerCheck, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-sqlite-holds-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = SqliteStore::new(dir.join("locks.db"));
    /// let req = Request::new("k");
    /// store.try_acquire(&req).unwrap();
    /// assert!(store.holds("k", req.token).unwrap());
    /// store.release("k", req.token).unwrap();
    /// assert!(!store.holds("k", req.token).unwrap());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn holds(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let owner = token.encode();
        self.run(|conn| {
            let now = clock::now()?;
            let row = conn
                .prepare_cached(&self.sql.holds)?
                .query_row(params![key, owner.as_str(), now.epoch, now.micros], |_| {
                    Ok(())
                })
                .optional()?;
            Ok(row.is_some())
        })
    }
}

impl Listing for SqliteStore {
    /// The live rows under `ns`, with their hold time, lease left and
    /// fencing token.
    ///
    /// ```
    /// use lock_runtime::backend::sqlite::SqliteStore;
    /// use lock_runtime::backend::{Listing, Namespace, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-sqlite-list-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = SqliteStore::new(dir.join("locks.db"));
    /// let ns = Namespace::new("jobs:");
    /// store.try_acquire(&Request::new(&ns.key("import".into()))).unwrap();
    /// let held = store.holders(&ns).unwrap();
    /// assert_eq!(held[0].key, "jobs:import");
    /// assert!(held[0].fencing.is_some());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn holders(&self, ns: &Namespace) -> Result<Vec<Held>, BackendError> {
        self.run(|conn| {
            let now = clock::now()?;
            let mut stmt = conn.prepare_cached(&self.sql.list)?;
            let rows = stmt.query_map(
                params![ns.head(), rusqlite::types::Null, now.epoch, now.micros],
                |row| {
                    let (key, since, until, fence): (String, i64, i64, i64) =
                        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                    let span = |from: i64, to: i64| {
                        Duration::from_micros(u64::try_from(to - from).unwrap_or(0))
                    };
                    Ok(Held::new(key)
                        .held_for(Some(span(since, now.micros)))
                        .lease_left(Some(span(now.micros, until)))
                        .fencing(u64::try_from(fence).ok()))
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

impl CleanUp for SqliteStore {
    /// Deletes the rows of the table whose lease ended more than `grace`
    /// ago, and those of earlier boots once this boot is older than `grace`;
    /// one statement, so a row renewed or taken meanwhile stays.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::sqlite::SqliteStore;
    /// use lock_runtime::backend::{CleanUp, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-sqlite-clean-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = SqliteStore::new(dir.join("locks.db"));
    /// store.try_acquire(&Request::new("gone").lease(Some(Duration::from_millis(1)))).unwrap();
    /// store.try_acquire(&Request::new("live")).unwrap();
    /// std::thread::sleep(Duration::from_millis(5));
    /// assert_eq!(store.clean_up(Duration::ZERO).unwrap(), 1);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn clean_up(&self, grace: Duration) -> Result<u64, BackendError> {
        self.run(|conn| {
            let now = clock::now()?;
            let cutoff = now.micros.saturating_sub(micros(grace));
            let gone = conn
                .prepare_cached(&self.sql.clean_up)?
                .execute(params![now.epoch, cutoff])?;
            // Process records no row names, not written for a while (a
            // live process writes its own again daily).
            let stale = unix_now().saturating_sub(2 * PROC_REWRITE.as_secs());
            conn.prepare_cached(&self.sql.clean_procs)?
                .execute(params![stale as i64])?;
            Ok(u64::try_from(gone).unwrap_or(u64::MAX))
        })
    }
}

/// How often a process writes its record again, on its next acquisition.
const PROC_REWRITE: Duration = Duration::from_secs(12 * 3600);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A row as the page and show statements read it (see `schema::HELD`).
fn held_row(row: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<Held> {
    let (key, since, until, fence): (String, i64, i64, i64) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    let (label, function, host, pid): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u32>,
    ) = (row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?);
    let held_for = until_from(since, now);
    let owner = Owner::unknown()
        .host(host)
        .pid(pid)
        .label(label)
        .function(function);
    Ok(Held::new(key)
        .held_for(Some(held_for))
        .lease_left(Some(until_from(now, until)))
        .fencing(u64::try_from(fence).ok())
        .owner((owner != Owner::unknown()).then_some(owner))
        .acquired_at(SystemTime::now().checked_sub(held_for)))
}

fn until_from(from: i64, to: i64) -> Duration {
    Duration::from_micros(u64::try_from(to - from).unwrap_or(0))
}

impl Inspect for SqliteStore {
    /// Rows in key order after the cursor (the last key given): an indexed
    /// range of the table's primary key.
    ///
    /// ```
    /// use lock_runtime::backend::sqlite::SqliteStore;
    /// use lock_runtime::backend::{Inspect, Namespace, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-sqlite-page-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = SqliteStore::new(dir.join("locks.db"));
    /// let ns = Namespace::new("jobs:");
    /// for k in ["a", "b", "c"] {
    ///     store.try_acquire(&Request::new(&ns.key(k.into())).label(Some("cron"))).unwrap();
    /// }
    /// let page = store.list(&ns, "jobs:", None, 2).unwrap();
    /// assert_eq!(page.held.len(), 2);
    /// let rest = store.list(&ns, "jobs:", page.next.as_deref(), 2).unwrap();
    /// assert_eq!(rest.held[0].key, "jobs:c");
    /// assert_eq!(rest.held[0].owner.as_ref().unwrap().label.as_deref(), Some("cron"));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn list(
        &self,
        _ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, BackendError> {
        let limit = limit.max(1);
        self.run(|conn| {
            let now = clock::now()?;
            let mut stmt = conn.prepare_cached(&self.sql.page)?;
            let rows = stmt.query_map(
                params![prefix, cursor, now.epoch, now.micros, limit as i64 + 1],
                |row| held_row(row, now.micros),
            )?;
            let mut held = rows.collect::<Result<Vec<_>, _>>()?;
            let more = held.len() > limit;
            held.truncate(limit);
            let next = if more {
                held.last().map(|h| h.key.clone())
            } else {
                None
            };
            Ok(Page::new(held, next))
        })
    }

    fn show(&self, key: &str) -> Result<Option<Held>, BackendError> {
        self.run(|conn| {
            let now = clock::now()?;
            let held = conn
                .prepare_cached(&self.sql.show)?
                .query_row(
                    params![key, rusqlite::types::Null, now.epoch, now.micros],
                    |row| held_row(row, now.micros),
                )
                .optional()?;
            Ok(held)
        })
    }
}

impl ForceRelease for SqliteStore {
    /// Deletes the row whoever owns it and appends to the `<table>_audit`
    /// table (trimmed to the newest [`AUDIT_LOG_LEN`] rows) in one
    /// transaction; the fencing counter, in its own table, goes on.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use lock_runtime::admin::{Forced, Owner};
    /// use lock_runtime::backend::sqlite::SqliteStore;
    /// use lock_runtime::backend::{ForceRelease, Namespace, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-sqlite-force-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = SqliteStore::new(dir.join("locks.db"));
    /// store.try_acquire(&Request::new("k")).unwrap();
    /// let ns = Namespace::new("");
    /// let entry = Forced::new("k", SystemTime::now(), Owner::of_this_process(), "stuck");
    /// assert!(store.force_release(&ns, entry).unwrap().removed.is_some());
    /// assert_eq!(store.audit_log(&ns, 10).unwrap()[0].reason, "stuck");
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn force_release(&self, _ns: &Namespace, mut entry: Forced) -> Result<Forced, BackendError> {
        let at_ms = entry
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.run(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = clock::now()?;
            let removed = tx
                .prepare_cached(&self.sql.show)?
                .query_row(
                    params![entry.key, rusqlite::types::Null, now.epoch, now.micros],
                    |row| held_row(row, now.micros),
                )
                .optional()?;
            tx.prepare_cached(&self.sql.delete)?
                .execute(params![entry.key])?;
            let owner = removed.as_ref().and_then(|h| h.owner.clone());
            let owner = owner.as_ref();
            tx.prepare_cached(&self.sql.audit)?.execute(params![
                entry.key,
                at_ms,
                entry.by.host,
                entry.by.pid,
                entry.by.label,
                entry.reason,
                removed.is_some(),
                owner.and_then(|o| o.host.as_deref()),
                owner.and_then(|o| o.pid),
                owner.and_then(|o| o.label.as_deref()),
                owner.and_then(|o| o.function.as_deref()),
                removed.as_ref().and_then(|h| h.fencing).map(|f| f as i64),
                removed
                    .as_ref()
                    .and_then(|h| h.held_for)
                    .map(|d| d.as_millis() as i64)
            ])?;
            tx.prepare_cached(&self.sql.trim_audit)?
                .execute(params![AUDIT_LOG_LEN as i64])?;
            tx.commit()?;
            entry.removed = removed;
            Ok(entry.clone())
        })
    }

    fn audit_log(&self, ns: &Namespace, limit: usize) -> Result<Vec<Forced>, BackendError> {
        let limit = limit.min(AUDIT_LOG_LEN) as i64;
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(&self.sql.audit_log)?;
            let rows = stmt.query_map(params![ns.head(), limit], |r| {
                let key: String = r.get(0)?;
                let at = UNIX_EPOCH + Duration::from_millis(r.get::<_, i64>(1)?.max(0) as u64);
                let by = Owner::unknown()
                    .host(r.get(2)?)
                    .pid(r.get(3)?)
                    .label(r.get(4)?);
                let removed = if r.get::<_, bool>(6)? {
                    let owner = Owner::unknown()
                        .host(r.get(7)?)
                        .pid(r.get(8)?)
                        .label(r.get(9)?)
                        .function(r.get(10)?);
                    let held_for = r
                        .get::<_, Option<i64>>(12)?
                        .map(|ms| Duration::from_millis(ms.max(0) as u64));
                    Some(
                        Held::new(key.clone())
                            .owner((owner != Owner::unknown()).then_some(owner))
                            .fencing(r.get::<_, Option<i64>>(11)?.map(|f| f as u64))
                            .held_for(held_for)
                            .acquired_at(held_for.and_then(|d| at.checked_sub(d))),
                    )
                } else {
                    None
                };
                Ok(Forced::new(key, at, by, r.get::<_, String>(5)?).removed(removed))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> (SqliteStore, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lock-sqlite-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::new(dir.join("locks.db")), dir)
    }

    #[test]
    fn urls_name_absolute_files() {
        let at = locate("sqlite:///tmp/a%20b/locks.db").unwrap();
        assert_eq!(at, ["sqlite:///tmp/a b/locks.db"]);
        let at = locate("sqlite://rel/locks.db").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(at, [format!("sqlite://{}/rel/locks.db", cwd.display())]);
        let at = locate("sqlite:///tmp/what%3F/100%25.db").unwrap();
        assert_eq!(at, ["sqlite:///tmp/what%3F/100%25.db"]);
        for bad in [
            "sqlite://",
            "sqlite://:memory:",
            "sqlite://file:x.db?mode=memory",
        ] {
            assert!(locate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_of_another_boot_count_as_ended() {
        let (store, dir) = temp_store("boot");
        let req = Request::new("k");
        store.try_acquire(&req).unwrap();
        store
            .run(|c| {
                c.execute("UPDATE lock_leases SET epoch = 'an-earlier-boot'", [])?;
                Ok(())
            })
            .unwrap();
        assert!(!store.holds("k", req.token).unwrap());
        let taken = store.try_acquire(&Request::new("k")).unwrap();
        assert!(matches!(taken, Attempt::Acquired(_)));
        std::fs::remove_dir_all(dir).ok();
    }

    fn fencing(a: Attempt) -> u64 {
        match a {
            Attempt::Acquired(g) => g.fencing.unwrap(),
            other => panic!("free: {other:?}"),
        }
    }

    #[test]
    fn a_new_boot_starts_fencing_past_the_synced_bound() {
        let (store, dir) = temp_store("fence");
        assert_eq!(fencing(store.try_acquire(&Request::new("a")).unwrap()), 1);
        assert_eq!(fencing(store.try_acquire(&Request::new("b")).unwrap()), 2);
        // As after a power loss that undid commits: the row says an earlier
        // boot handed out 2 (maybe more), within the synced bound.
        store
            .run(|c| {
                c.execute("UPDATE lock_leases_fence SET epoch = 'an-earlier-boot'", [])?;
                Ok(())
            })
            .unwrap();
        let next = fencing(store.try_acquire(&Request::new("c")).unwrap());
        assert_eq!(
            next,
            1 + FENCE_BLOCK as u64 + 1,
            "past the bound set by the first"
        );
        assert_eq!(
            fencing(store.try_acquire(&Request::new("d")).unwrap()),
            next + 1
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_busy_file_is_a_timeout_error() {
        let (store, dir) = temp_store("locked");
        let store = store.busy_timeout(Duration::from_millis(50));
        store.clean_up(Duration::ZERO).unwrap(); // creates the file
        let other = rusqlite::Connection::open(dir.join("locks.db")).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = store.try_acquire(&Request::new("k")).unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(err.to_string().contains("busy timeout"), "{err}");
        let sqlite = std::error::Error::source(err.inner())
            .and_then(|s| s.downcast_ref::<rusqlite::Error>())
            .expect("SQLite's own error is the source");
        assert_eq!(
            sqlite.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );
        other.execute_batch("ROLLBACK").unwrap();
        assert!(matches!(
            store.try_acquire(&Request::new("k")).unwrap(),
            Attempt::Acquired(_)
        ));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_missing_directory_is_a_connection_error() {
        let store = SqliteStore::new("/nonexistent-lock-dir/sub/locks.db");
        let err = store.try_acquire(&Request::new("k")).unwrap_err();
        assert!(err.is_connection(), "{err}");
    }
}
