//! The store's connections to its file: a `Connection` serves one thread at
//! a time, so calls take one from a small pool (opening another when all are
//! out) and put it back. The first connection creates the file and tables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::schema;
use crate::backend::{BackendError, BackendErrorKind};

/// Connections kept open between calls; more are opened when as many
/// threads use the store at once, and closed when handed back.
const KEPT: usize = 8;

#[derive(Debug)]
pub(super) struct Pool {
    path: PathBuf,
    table: String,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// The tables exist (this process made sure once).
    ready: AtomicBool,
}

impl Pool {
    pub(super) fn new(path: PathBuf, table: String, busy_timeout: Duration) -> Self {
        Self {
            path,
            table,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
        }
    }

    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(super) fn table(&self) -> &str {
        &self.table
    }

    pub(super) fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Runs `f` on a connection. A connection that failed goes back only if
    /// it is not inside a transaction (a dropped `Transaction` rolled back).
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BackendError> {
        let mut conn = match lock(&self.idle).pop() {
            Some(c) => c,
            None => self.open().map_err(|e| self.error(e))?,
        };
        let out = f(&mut conn).map_err(|e| self.error(e));
        if conn.is_autocommit() {
            let mut idle = lock(&self.idle);
            if idle.len() < KEPT {
                idle.push(conn);
            }
        }
        out
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        if !self.ready.load(Ordering::Acquire) {
            self.set_up(&conn)?;
            self.ready.store(true, Ordering::Release);
        }
        // Per connection. NORMAL syncs the log only at checkpoints: a power
        // loss may undo the last commits, which only matters for fencing
        // numbers (rows of the lost boot count as ended anyway), and those
        // are reserved in synced blocks (`sync_files`). FULL would sync
        // every commit, four times slower here.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    }

    /// WAL mode and the tables, as many processes may try at once on a new
    /// file: each step is idempotent and waits out the others' locks.
    fn set_up(&self, conn: &Connection) -> rusqlite::Result<()> {
        let until = Instant::now() + self.busy_timeout;
        loop {
            // Switching needs the file to itself, and some SQLite versions
            // answer the old mode instead of waiting when it is not: retry
            // until it says `wal` or the busy timeout has passed.
            let mode: String = match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Ok(m) => m,
                Err(e) if is_busy(&e) && Instant::now() < until => String::new(),
                Err(e) => return Err(e),
            };
            if mode.eq_ignore_ascii_case("wal") {
                break;
            }
            if Instant::now() >= until {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some(format!("could not switch to WAL mode (still `{mode}`)")),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {}", schema::create(&self.table)))
            .and_then(|()| schema::migrate(conn, &self.table))
            .and_then(|()| conn.execute_batch("COMMIT"))
            .inspect_err(|_| {
                let _ = conn.execute_batch("ROLLBACK");
            })
    }

    /// Syncs the file and its log to disk: everything committed so far
    /// survives a power loss (a checkpoint that moved the log into the file
    /// synced the file first).
    pub(super) fn sync_files(&self) -> rusqlite::Result<()> {
        let sync = |path: &std::path::Path| match std::fs::File::open(path) {
            Ok(f) => f.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        sync(std::path::Path::new(&wal))
            .and_then(|()| sync(&self.path))
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                    Some(format!("cannot sync to disk: {e}")),
                )
            })
    }

    /// The store's error for `e`, saying which file.
    fn error(&self, e: rusqlite::Error) -> BackendError {
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => BackendErrorKind::Timeout,
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
                BackendErrorKind::Connection
            }
            _ => BackendErrorKind::Other,
        };
        let busy = if kind == BackendErrorKind::Timeout {
            format!(" (busy past the {:?} busy timeout)", self.busy_timeout)
        } else {
            String::new()
        };
        let context = format!("{}{busy}", self.path.display());
        BackendError::new(kind, InFile { context, source: e })
    }
}

/// SQLite's error, with the file it came from: its `source()` is the
/// `rusqlite::Error`, for callers that want SQLite's own code.
#[derive(Debug)]
struct InFile {
    context: String,
    source: rusqlite::Error,
}

impl std::fmt::Display for InFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for InFile {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
