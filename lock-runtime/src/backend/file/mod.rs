//! The file store (feature `file`): locks shared by the processes of one
//! host through a directory of lock files, with no server. A holder that
//! dies, even by `SIGKILL`, frees its locks at once: the kernel drops its
//! file locks with the process. Linux only.
//!
//! # URL and settings
//! `file:///abs/dir` or `file://relative/dir` (relative to the working
//! directory when the alias is configured; `%` escapes as in any URL). The
//! directory is created if missing when the alias is added. Settings:
//! `prefix`, `poll_ms`, `lease_ms` and `timeout_ms` (how long a call waits
//! while another process reads or writes the same lock file, which takes
//! microseconds unless that process is stopped; default 2 s).
//!
//! ```
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! let dir = std::env::temp_dir().join(format!("doc-file-{}", std::process::id()));
//! let url = format!("file://{}?prefix=app:&timeout_ms=500", dir.display());
//! registry::add("doc-file", AliasConfig::from_url(&url).unwrap()).unwrap();
//!
//! let guard = Lock::new("invoice-7").alias("doc-file").acquire().unwrap();
//! assert!(guard.fencing_token().is_some());
//! // Another process (here: another lock) finds it held.
//! assert!(Lock::new("invoice-7").alias("doc-file").try_acquire().unwrap().is_none());
//! drop(guard);
//! # std::fs::remove_dir_all(&dir).ok();
//! ```
//!
//! # Layout on disk
//! One file per held key, `k_<stem>.<sha256>`: the stem is the first 48
//! characters of the stored key (prefix included) with everything but
//! `[A-Za-z0-9_-]` replaced by `_`, for people reading the directory; the
//! SHA-256 of the key's exact bytes, in hex, tells keys apart. So no key
//! escapes the directory or reaches a name over 115 bytes, whatever it
//! holds (`/`, `..`, NUL, newlines, 64 KiB). The file holds one line (owner
//! token, boot id, acquired-at and lease end on the shared clock, fencing
//! token, key length), the key itself, and then who holds it (its pid,
//! label and function, which earlier versions ignore); the key is checked
//! on every read: two keys of one name would be an error, never one lock. The
//! store's own file, `fence` (the fencing counter), does not start with
//! `k_`, so no key reaches it. Other files in the directory are left alone.
//!
//! # Operations
//! Every operation opens the key's file and takes the OS lock on it
//! (`flock`, through [`File::lock`](std::fs::File::lock)) only while it
//! reads and writes the record, like a row lock. A holder marks itself
//! alive with a second, independent lock: an open-file-description write
//! lock (`fcntl(F_OFD_SETLK)`) on one byte of the file, the byte numbered by
//! its fencing token, kept on a file it holds open until it releases. The
//! kernel drops that lock when the holder releases or its process ends,
//! however it ends. A record counts as held while its lease runs and its
//! holder's byte is locked; otherwise the key is free.
//!
//! Acquiring: lock the file, read the record; if held (and not older than
//! the request's `steal_after`), answer busy with the time left on the
//! lease; otherwise count the fencing counter up (the `fence` file, locked
//! while it is bumped), lock the new byte, write the record. Releasing:
//! lock the file, check the owner token, delete the file (see below), then
//! close the holder's file, which frees its byte and wakes the waiters.
//! Extending: rewrite the lease end, if the token owns it and it runs.
//!
//! # What a lease means here
//! The kernel already frees a dead holder's lock, so a lease is not needed
//! for that; it bounds how long a holder that is alive but stuck (deadlocked,
//! or stopped in a debugger) keeps the lock. A lease ends as on every other
//! store: the lock is free for others when it ends unless the holder renewed
//! it (the runtime renews leases it gave by itself), and `steal_after` takes
//! over a holder older than the steal age even while it renews. A dead
//! holder's lock is free at once, lease or not. That includes
//! `delete_on_exit(false)`: such a lock is kept until its lease ends or the
//! process that took it exits, whichever comes first (the store is not told
//! when a guard is dropped without a release, so it cannot tell that exit
//! from a crash).
//!
//! # Deleting files
//! A file is deleted (by its holder's release, or by
//! [`Alias::clean_up`](crate::registry::Alias::clean_up)) only while the
//! deleter holds its lock and has checked that the name still points at the
//! file it holds open (same device and inode). Every operation, after
//! locking the file it opened, makes the same check and starts again on the
//! file now under that name when it fails, so nobody ever locks a deleted
//! file that others no longer see: the classic bug of deleting a lock file
//! that another process has open and is about to lock cannot happen. The
//! clean-up deletes files whose lease ended more than `grace` ago (and
//! those of earlier boots, and files with no record left by a crash
//! between creating and writing them, once older than `grace` and a
//! minute); a file whose lease still runs is never deleted, whether its
//! holder lives or not.
//!
//! # Waiting
//! Waiters need not poll: the store has the [`WakeUps`] ability. For each
//! key waited on in the process, one thread reads who holds it and blocks
//! in the kernel (`fcntl(F_OFD_SETLKW)`, a read lock on the holder's byte)
//! until that holder releases or dies, then wakes every waiter of the key
//! and looks again. Bounded waits and cancellation stay the runtime's: a
//! waiter that gives up drops its watch and returns at once. The thread
//! ends when it wakes and finds no watch left; so a watch dropped while the
//! holder keeps the lock leaves the thread blocked until that holder lets
//! go, at most one thread per key per store. A holder stuck past its lease
//! keeps the thread on its byte while others take the key; then waiters of
//! the key fall back to looking again at the runtime's one-second limit and
//! at each lease end.
//!
//! # The clock
//! Lease ends are points on `CLOCK_MONOTONIC`, with the boot id, as for the
//! [SQLite store](super::sqlite): never stepped by wall clock changes.
//! Records of an earlier boot hold nothing (their holders died with it).
//!
//! # Admin
//! [`Alias::list`](crate::registry::Alias::list) and
//! [`show`](crate::registry::Alias::show) read every key file (the runtime
//! cuts the listing into pages); a record names its holder's pid, label and
//! `#[lock]` function after the key, and the host is this one. A forced
//! release ([`Alias::force_release`](crate::registry::Alias::force_release))
//! of a held lock is refused with [`LockError::Unsupported`] naming the
//! holder's pid: the kernel keeps the holder's byte lock for that process
//! alone, and deleting the file would only let a second holder in beside
//! it. Stop that process instead (its locks are free the moment it ends).
//! There is no audit log (also `Unsupported`).
//!
//! # Not for network file systems
//! Advisory locks on NFS, SMB/CIFS and the like are emulated, lost on
//! server restarts, or not shared between hosts. Adding an alias on a
//! directory that `statfs` reports as NFS, SMB, CIFS, Coda, AFS, Ceph or 9p
//! fails with [`LockError::Config`]. FUSE file systems cannot be told apart
//! cheaply (a local overlay or a remote mount look the same) and are not
//! refused: do not use one that is remote.
//!
//! # Errors
//! A file or directory that cannot be opened fails with [`LockError::Backend`]
//! of kind [`Connection`](BackendErrorKind::Connection), naming the path; a
//! file locked by another process for longer than `timeout_ms`, of kind
//! [`Timeout`](BackendErrorKind::Timeout). The error's `source()` is the
//! `std::io::Error`.

mod name;
mod os;
mod record;
mod watch;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::clock;
use super::kind::{Opening, StoreKind};
use super::{
    Abilities, Acquired, Attempt, Backend, BackendError, BackendErrorKind, Busy, CleanUp,
    ForceRelease, Held, Listing, Namespace, OwnerCheck, Request, Store, Token, WakeUps,
};
use crate::LockError;
use crate::admin::{Forced, Owner};
use crate::lease::DEFAULT_LEASE;
use record::Record;

/// `file:///abs/dir` and `file://relative/dir`.
pub(crate) static KIND: StoreKind = StoreKind {
    name: "file",
    schemes: &["file"],
    settings: &["prefix", "poll_ms", "lease_ms", "timeout_ms"],
    passed_on: &[],
    default_prefix: "lock:",
    locate,
    open,
    fresh: None,
};

/// The directory a `file://` URL names, made absolute.
fn locate(url: &str) -> Result<Vec<String>, String> {
    let (_, url) = super::kind::locate_path(
        url,
        "file",
        "no directory: expected `file:///abs/dir` or `file://relative/dir`",
    )?;
    Ok(vec![url])
}

fn open(at: &[String], o: &Opening<'_>) -> Result<Arc<dyn Backend>, String> {
    let (dir, _) = super::kind::path_of(at.first().map_or("", String::as_str))?;
    let store = FileStore::prepare(PathBuf::from(dir))?.timeout(o.command_timeout);
    Ok(super::blocking(Arc::new(store)))
}

/// A directory of lock files shared by the processes of one host. The
/// [module docs](self) say how it works and what it guarantees; configure it
/// with a `file://` URL, or open it here and register it with
/// [`AliasConfig::store`](crate::registry::AliasConfig::store):
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::file::FileStore;
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::Lock;
///
/// let dir = std::env::temp_dir().join(format!("doc-file-store-{}", std::process::id()));
/// let store = FileStore::open(&dir).unwrap().timeout(Duration::from_secs(1));
/// registry::add("doc-file-store", AliasConfig::store(Arc::new(store))).unwrap();
///
/// let guard = Lock::new("nightly").alias("doc-file-store").acquire().unwrap();
/// guard.release().unwrap();
/// # std::fs::remove_dir_all(&dir).ok();
/// ```
pub struct FileStore {
    inner: Inner,
    watchers: Arc<watch::Watchers>,
}

/// What every operation needs: where, and how long to wait for a file.
#[derive(Debug, Clone)]
struct Files {
    dir: PathBuf,
    timeout: Duration,
}

struct Inner {
    files: Files,
    /// The liveness locks this store holds, one open file each, by owner.
    holding: Mutex<HashMap<Token, Holding>>,
}

/// One acquisition's liveness lock: its byte, locked on `file`, until the
/// lease end this store last wrote.
struct Holding {
    /// Never read: closing it is what frees the byte.
    _file: File,
    fence: u64,
    until: i64,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.files.dir)
            .field("timeout", &self.inner.files.timeout)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// A store on the directory `dir`, created if missing, with a timeout of
    /// 2 s.
    ///
    /// ```
    /// use lock_runtime::backend::file::FileStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-open-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap();
    /// assert!(store.dir().is_dir());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    ///
    /// # Errors
    /// [`LockError::Config`] when the directory cannot be created, `dir` is
    /// not a directory, it is on a network file system (NFS, SMB, CIFS,
    /// Coda, AFS, Ceph, 9p), or the system is not Linux.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LockError> {
        let dir = std::path::absolute(dir.as_ref()).map_err(|e| {
            LockError::config("", "url", format!("`{}`: {e}", dir.as_ref().display()))
        })?;
        Self::prepare(dir).map_err(|r| LockError::config("", "url", r))
    }

    fn prepare(dir: PathBuf) -> Result<Self, String> {
        os::supported()?;
        let shown = dir.display();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the lock directory `{shown}`: {e}"))?;
        if !dir.is_dir() {
            return Err(format!("`{shown}` is not a directory"));
        }
        match os::remote(&dir) {
            Ok(Some(fs)) => {
                return Err(format!(
                    "`{shown}` is on {fs}, a network file system, whose file locks do not \
                     exclude processes reliably; use a local directory (or another store)"
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot read the file system of `{shown}`: {e}")),
        }
        Ok(Self {
            inner: Inner {
                files: Files {
                    dir,
                    timeout: Duration::from_secs(2),
                },
                holding: Mutex::new(HashMap::new()),
            },
            watchers: Arc::default(),
        })
    }

    /// How long a call waits while another process reads or writes the same
    /// lock file before it fails with a [`BackendErrorKind::Timeout`] error
    /// (the URL setting `timeout_ms`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::file::FileStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-timeout-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap().timeout(Duration::from_millis(500));
    /// # let _ = store;
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.files.timeout = timeout;
        self
    }

    /// The directory.
    ///
    /// ```
    /// use lock_runtime::backend::file::FileStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-dir-{}", std::process::id()));
    /// assert_eq!(FileStore::open(&dir).unwrap().dir(), dir);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    pub fn dir(&self) -> &Path {
        &self.inner.files.dir
    }
}

/// An I/O error on one of the store's files, with the file's path.
#[derive(Debug)]
struct FileError {
    doing: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}`: {}",
            self.doing,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn failed(kind: BackendErrorKind, doing: &'static str, path: &Path, e: io::Error) -> BackendError {
    BackendError::new(
        kind,
        FileError {
            doing,
            path: path.to_owned(),
            source: e,
        },
    )
}

/// An I/O error while reading or writing an open file.
fn io_failed<'a>(
    doing: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BackendError + 'a {
    move |e| failed(BackendErrorKind::Other, doing, path, e)
}

fn clock_error(e: io::Error) -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        format!("cannot read the shared clock: {e}"),
    )
}

fn now() -> Result<clock::Now, BackendError> {
    clock::now().map_err(clock_error)
}

/// `d` in microseconds, saturating: leases beyond 292,000 years are forever.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How long from `now` until `at` (µs on the same clock).
fn until(now: i64, at: i64) -> Duration {
    Duration::from_micros(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Files {
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(name::of(key))
    }

    /// Opens the file at `path` (creating it if `create`) and takes its row
    /// lock, exclusive or `shared`. If a release or clean-up deleted the
    /// file between the open and the lock, starts again with the file now
    /// under that name; `None` when there is none (and `!create`).
    fn row(&self, path: &Path, create: bool, shared: bool) -> Result<Option<File>, BackendError> {
        let started = Instant::now();
        loop {
            let file = match os::options(create).open(path) {
                Ok(f) => f,
                Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(failed(BackendErrorKind::Connection, "cannot open", path, e));
                }
            };
            self.lock_within(&file, path, shared, started)?;
            if os::still_named(&file, path).map_err(io_failed("cannot check", path))? {
                return Ok(Some(file));
            }
        }
    }

    /// Takes `file`'s OS lock, giving up `timeout` after `started`. The
    /// lock is held for microseconds, so a short sleep between tries costs
    /// little, and a process stopped while holding it cannot hang us.
    fn lock_within(
        &self,
        file: &File,
        path: &Path,
        shared: bool,
        started: Instant,
    ) -> Result<(), BackendError> {
        let mut pause = Duration::from_micros(20);
        loop {
            let attempt = if shared {
                file.try_lock_shared()
            } else {
                file.try_lock()
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(failed(BackendErrorKind::Other, "cannot lock", path, e));
                }
            }
            if started.elapsed() >= self.timeout {
                return Err(failed(
                    BackendErrorKind::Timeout,
                    "another process kept locked",
                    path,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("for longer than {:?} (timeout_ms)", self.timeout),
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Whether `rec` is held now: same boot, lease running, holder alive.
    fn live(
        &self,
        file: &File,
        path: &Path,
        rec: &Record,
        now: &clock::Now,
    ) -> Result<bool, BackendError> {
        if rec.epoch != now.epoch || rec.until <= now.micros {
            return Ok(false);
        }
        os::is_held(file, rec.fence).map_err(io_failed("cannot test the holder's lock on", path))
    }

    /// The record of `path`'s file, checked to be `key`'s.
    fn record(&self, file: &File, path: &Path, key: &str) -> Result<Option<Record>, BackendError> {
        let rec = record::read(file).map_err(io_failed("cannot read", path))?;
        match rec {
            Some(r) if r.key != key => Err(BackendError::new(
                BackendErrorKind::Other,
                format!(
                    "the lock file `{}` records another key than {key:?}: two keys share a file name",
                    path.display()
                ),
            )),
            other => Ok(other),
        }
    }

    /// The store-wide fencing counter, counted up by one under its lock.
    fn next_fence(&self, epoch: &str) -> Result<u64, BackendError> {
        let path = self.dir.join(name::FENCE_FILE);
        let file = os::options(true)
            .open(&path)
            .map_err(|e| failed(BackendErrorKind::Connection, "cannot open", &path, e))?;
        self.lock_within(&file, &path, false, Instant::now())?;
        let read = fence::read(&file).map_err(io_failed("cannot read", &path))?;
        let (next, state, sync) = read.next(epoch);
        fence::write(&file, &state, sync).map_err(io_failed("cannot write", &path))?;
        Ok(next)
    }
}

mod fence {
    //! The fencing counter's file: `<last handed out> <reserved bound>
    //! <boot id>`. Writes are not synced one by one; the bound is, whenever
    //! it moves, so that after a power loss (a new boot) counting resumes
    //! above every number handed out before it.

    use std::fs::File;
    use std::io::{self, Read, Seek, SeekFrom, Write};

    /// Numbers handed out between two syncs.
    const BLOCK: u64 = 1_000;

    #[derive(Debug, Default, PartialEq, Eq)]
    pub(super) struct Counter {
        pub(super) value: u64,
        pub(super) reserved: u64,
        pub(super) epoch: String,
    }

    impl Counter {
        /// The next number, the counter after it, and whether to sync.
        pub(super) fn next(&self, epoch: &str) -> (u64, Counter, bool) {
            let last = if self.epoch == epoch {
                self.value
            } else {
                self.value.max(self.reserved)
            };
            let next = last.saturating_add(1);
            let (reserved, sync) = if next > self.reserved || self.epoch != epoch {
                (next.saturating_add(BLOCK), true)
            } else {
                (self.reserved, false)
            };
            let state = Counter {
                value: next,
                reserved,
                epoch: epoch.to_owned(),
            };
            (next, state, sync)
        }
    }

    pub(super) fn read(mut file: &File) -> io::Result<Counter> {
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_string(&mut text)?;
        let mut f = text.split_whitespace();
        let parsed = (|| {
            Some(Counter {
                value: f.next()?.parse().ok()?,
                reserved: f.next()?.parse().ok()?,
                epoch: f.next()?.to_owned(),
            })
        })();
        match parsed {
            Some(c) => Ok(c),
            None if text.is_empty() => Ok(Counter::default()),
            // Never count again from zero: fencing tokens must only grow.
            None => Err(io::Error::other(format!(
                "the fencing counter reads {text:?}, not `<value> <reserved> <boot>`"
            ))),
        }
    }

    pub(super) fn write(mut file: &File, c: &Counter, sync: bool) -> io::Result<()> {
        let text = format!("{} {} {}\n", c.value, c.reserved, c.epoch);
        file.seek(SeekFrom::Start(0))?;
        file.write_all(text.as_bytes())?;
        file.set_len(text.len() as u64)?;
        if sync { file.sync_data() } else { Ok(()) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_new_boot_counts_on_past_the_synced_bound() {
            let (n, c, sync) = Counter::default().next("boot-a");
            assert_eq!((n, sync), (1, true));
            let (n, c, sync) = c.next("boot-a");
            assert_eq!((n, sync), (2, false));
            let (n, _, sync) = c.next("boot-b");
            assert_eq!((n, sync), (1 + BLOCK + 1, true));
        }
    }
}

impl Inner {
    /// Drops the liveness locks of leases that ended (a guard dropped with
    /// `delete_on_exit(false)`, or leaked): the lock is free by then anyway.
    fn sweep(&self, now: i64) {
        if let Ok(mut holding) = self.holding.try_lock() {
            holding.retain(|_, h| h.until > now);
        }
    }

    fn forget(&self, token: Token) {
        let gone = lock(&self.holding).remove(&token);
        drop(gone);
    }
}

impl Store for FileStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let sent = Instant::now();
        // The holder's age counts from here, as the holder's own view of its
        // lock does (from `sent`).
        let asked = now()?;
        let inner = &self.inner;
        let files = &inner.files;
        inner.sweep(asked.micros);
        let lease = micros(req.lease.unwrap_or(DEFAULT_LEASE));
        let path = files.path(req.key);
        let Some(file) = files.row(&path, true, false)? else {
            return Err(failed(
                BackendErrorKind::Connection,
                "cannot create",
                &path,
                io::ErrorKind::NotFound.into(),
            ));
        };
        let now = now()?;
        if let Some(rec) = files.record(&file, &path, req.key)?
            && files.live(&file, &path, &rec, &now)?
        {
            let stale_at = req.steal_after.map(|s| rec.since.saturating_add(micros(s)));
            match stale_at {
                Some(at) if now.micros >= at => {}
                _ => {
                    let free_at = stale_at.map_or(rec.until, |at| at.min(rec.until));
                    return Ok(Attempt::Busy(Busy::new(Some(until(now.micros, free_at)))));
                }
            }
        }
        let fence = files.next_fence(now.epoch)?;
        // Alive before the record names us: if we die in between, the
        // record names a byte nobody holds, which reads as free.
        if !os::hold(&file, fence).map_err(io_failed("cannot lock a byte of", &path))? {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                format!("fencing token {fence} is in use in `{}`", path.display()),
            ));
        }
        let rec = Record {
            owner: req.token.encode().as_str().to_owned(),
            epoch: now.epoch.to_owned(),
            since: asked.micros.min(now.micros),
            until: now.micros.saturating_add(lease),
            fence,
            key: req.key.to_owned(),
            holder: Some(record::Holder {
                pid: std::process::id(),
                label: req.label.map(str::to_owned),
                function: req.function.map(str::to_owned),
            }),
        };
        record::write(&file, &rec).map_err(io_failed("cannot write", &path))?;
        // The row lock goes; the byte lock stays with the open file.
        file.unlock().map_err(io_failed("cannot unlock", &path))?;
        let holding = Holding {
            _file: file,
            fence,
            until: rec.until,
        };
        lock(&inner.holding).insert(req.token, holding);
        Ok(Attempt::Acquired(Acquired::new(Some(fence)).sent_at(sent)))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let files = &self.inner.files;
        let path = files.path(key);
        let owner = token.encode();
        let Some(file) = files.row(&path, false, false)? else {
            self.inner.forget(token);
            return Ok(false);
        };
        let now = now()?;
        let mut live = false;
        if let Some(rec) = files.record(&file, &path, key)?
            && rec.owner == owner.as_str()
        {
            live = rec.epoch == now.epoch && rec.until > now.micros;
            // The owner's own record goes even when its lease has ended (it
            // is garbage), but only a live one counts as released. The name
            // was checked to be this file's, under its lock.
            std::fs::remove_file(&path).map_err(io_failed("cannot delete", &path))?;
        }
        drop(file);
        // Last, so that a waiter the freed byte wakes finds the file gone.
        self.inner.forget(token);
        Ok(live)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let inner = &self.inner;
        let files = &inner.files;
        // Held across the update, so that the sweep cannot drop this
        // liveness lock while the record is renewed.
        let mut holding = lock(&inner.holding);
        let Some(h) = holding.get_mut(&token) else {
            return Ok(false);
        };
        let path = files.path(key);
        let Some(file) = files.row(&path, false, false)? else {
            return Ok(false);
        };
        let now = now()?;
        match files.record(&file, &path, key)? {
            Some(mut rec)
                if rec.owner == token.encode().as_str()
                    && rec.fence == h.fence
                    && rec.epoch == now.epoch
                    && rec.until > now.micros =>
            {
                rec.until = now.micros.saturating_add(micros(lease));
                record::write(&file, &rec).map_err(io_failed("cannot write", &path))?;
                h.until = rec.until;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
            .owner_check(self)
            .clean_up(self)
            .listing(self)
            .force_release(self)
            .wake_ups(self)
    }
}

impl OwnerCheck for FileStore {
    /// Whether `token` holds `key`: its record, with the lease running and
    /// the holder's byte locked.
    ///
    /// ```
    /// use lock_runtime::backend::file::FileStore;
    /// use lock_runtime::backend::{OwnerCheck, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-holds-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap();
    /// let req = Request::new("k");
    /// store.try_acquire(&req).unwrap();
    /// assert!(store.holds("k", req.token).unwrap());
    /// store.release("k", req.token).unwrap();
    /// assert!(!store.holds("k", req.token).unwrap());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn holds(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let files = &self.inner.files;
        let path = files.path(key);
        let Some(file) = files.row(&path, false, true)? else {
            return Ok(false);
        };
        let now = now()?;
        match files.record(&file, &path, key)? {
            Some(rec) if rec.owner == token.encode().as_str() => {
                files.live(&file, &path, &rec, &now)
            }
            _ => Ok(false),
        }
    }
}

impl Files {
    /// The key files of the directory, by path (others are not ours).
    fn key_files(&self) -> Result<Vec<PathBuf>, BackendError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| failed(BackendErrorKind::Connection, "cannot list", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_failed("cannot list", &self.dir))?;
            if name::is_key_file(&entry.file_name()) {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
}

impl Listing for FileStore {
    /// The held locks under `ns`, with their hold time, lease left and
    /// fencing token: every key file is read, under its lock.
    ///
    /// ```
    /// use lock_runtime::backend::file::FileStore;
    /// use lock_runtime::backend::{Listing, Namespace, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-list-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap();
    /// let ns = Namespace::new("jobs:");
    /// store.try_acquire(&Request::new(&ns.key("import".into()))).unwrap();
    /// let held = store.holders(&ns).unwrap();
    /// assert_eq!(held[0].key, "jobs:import");
    /// assert!(held[0].fencing.is_some());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn holders(&self, ns: &Namespace) -> Result<Vec<Held>, BackendError> {
        let files = &self.inner.files;
        let mut held = Vec::new();
        for path in files.key_files()? {
            let Some(file) = files.row(&path, false, true)? else {
                continue; // released meanwhile
            };
            let now = now()?;
            let rec = record::read(&file).map_err(io_failed("cannot read", &path))?;
            let Some(rec) = rec else { continue };
            if !rec.key.starts_with(ns.head()) || !files.live(&file, &path, &rec, &now)? {
                continue;
            }
            held.push(held_of(rec, &now));
        }
        Ok(held)
    }
}

/// What the admin API shows of a live record: its holder is a process of
/// this host (the store is for one host's processes).
fn held_of(rec: Record, now: &clock::Now) -> Held {
    let held_for = until(rec.since, now.micros);
    let owner = rec.holder.map(|h| {
        Owner::of_this_process()
            .pid(Some(h.pid))
            .label(h.label)
            .function(h.function)
    });
    Held::new(rec.key)
        .held_for(Some(held_for))
        .lease_left(Some(until(now.micros, rec.until)))
        .fencing(Some(rec.fence))
        .owner(owner)
        .acquired_at(SystemTime::now().checked_sub(held_for))
}

impl ForceRelease for FileStore {
    /// Refuses a held lock: its holder's process keeps it by an OS file
    /// lock that no other process can take from it (the error names that
    /// process); a free one is "released" with nothing removed. The store
    /// keeps no audit log.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use lock_runtime::admin::{Forced, Owner};
    /// use lock_runtime::backend::file::FileStore;
    /// use lock_runtime::backend::{BackendErrorKind, ForceRelease, Namespace, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-force-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap();
    /// store.try_acquire(&Request::new("k")).unwrap();
    /// let entry = Forced::new("k", SystemTime::now(), Owner::unknown(), "stuck");
    /// let err = store.force_release(&Namespace::new(""), entry).unwrap_err();
    /// assert_eq!(err.kind(), BackendErrorKind::Unsupported);
    /// assert!(err.to_string().contains(&format!("pid {}", std::process::id())));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn force_release(&self, _ns: &Namespace, entry: Forced) -> Result<Forced, BackendError> {
        let files = &self.inner.files;
        let path = files.path(&entry.key);
        let Some(file) = files.row(&path, false, true)? else {
            return Ok(entry);
        };
        let now = now()?;
        let Some(rec) = files.record(&file, &path, &entry.key)? else {
            return Ok(entry);
        };
        if !files.live(&file, &path, &rec, &now)? {
            return Ok(entry);
        }
        let who = match &rec.holder {
            Some(h) => format!("pid {} on this host", h.pid),
            None => "a process on this host (it did not record its pid)".to_owned(),
        };
        Err(BackendError::new(
            BackendErrorKind::Unsupported,
            format!(
                "release `{}` by force: {who} holds it, and the kernel keeps its file lock \
                 for that process alone; stop that process to free it",
                entry.key
            ),
        ))
    }

    fn audit_log(&self, _ns: &Namespace, _limit: usize) -> Result<Vec<Forced>, BackendError> {
        Err(BackendError::new(
            BackendErrorKind::Unsupported,
            "keep an audit log (the file store cannot release a lock by force)",
        ))
    }
}

/// How old a key file with no record must be before the clean-up deletes
/// it, whatever its grace: a locker creates the file empty and writes its
/// record microseconds later, and deleting it in between (safe, the locker
/// starts again) would count a file that was never stale.
const NO_RECORD_AGE: Duration = Duration::from_secs(60);

impl CleanUp for FileStore {
    /// Deletes the files whose lease ended more than `grace` ago, those of
    /// earlier boots, and those with no record (a crash between creating
    /// and writing one) older than `grace` and a minute; each
    /// under its lock, after checking the name is still the locked file's,
    /// so a lock renewed or taken meanwhile stays. A file whose lease runs is
    /// never deleted, even if its holder died (that lock is free anyway).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::file::FileStore;
    /// use lock_runtime::backend::{CleanUp, Request, Store};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-clean-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap();
    /// store.try_acquire(&Request::new("gone").lease(Some(Duration::from_millis(1)))).unwrap();
    /// store.try_acquire(&Request::new("live")).unwrap();
    /// std::thread::sleep(Duration::from_millis(5));
    /// assert_eq!(store.clean_up(Duration::ZERO).unwrap(), 1);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn clean_up(&self, grace: Duration) -> Result<u64, BackendError> {
        let files = &self.inner.files;
        let mut gone = 0;
        for path in files.key_files()? {
            let Some(file) = files.row(&path, false, false)? else {
                continue;
            };
            let now = now()?;
            let stale = match record::read(&file).map_err(io_failed("cannot read", &path))? {
                Some(rec) if rec.epoch != now.epoch => true,
                Some(rec) => rec.until.saturating_add(micros(grace)) <= now.micros,
                None => {
                    let changed = file
                        .metadata()
                        .and_then(|m| m.modified())
                        .map_err(io_failed("cannot read the time of", &path))?;
                    SystemTime::now()
                        .duration_since(changed)
                        .is_ok_and(|age| age >= grace.max(NO_RECORD_AGE))
                }
            };
            if stale {
                match std::fs::remove_file(&path) {
                    Ok(()) => gone += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(failed(BackendErrorKind::Other, "cannot delete", &path, e));
                    }
                }
            }
        }
        Ok(gone)
    }
}

impl WakeUps for FileStore {
    /// Wakes `signal` whenever the holder of `key` releases or dies, until
    /// the watch is dropped; see [Waiting](self#waiting).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lock_runtime::backend::file::FileStore;
    /// use lock_runtime::backend::{Request, Signal, Store, WakeUps};
    ///
    /// let dir = std::env::temp_dir().join(format!("doc-file-watch-{}", std::process::id()));
    /// let store = FileStore::open(&dir).unwrap();
    /// let holder = Request::new("k");
    /// store.try_acquire(&holder).unwrap();
    ///
    /// let signal = Signal::new();
    /// let watch = store.watch("k", &signal).unwrap();
    /// assert!(signal.is_ready());
    /// signal.take_notified(); // `ready` notifies once too
    /// std::thread::sleep(Duration::from_millis(20));
    /// store.release("k", holder.token).unwrap();
    /// signal.wait_until(Some(Instant::now() + Duration::from_secs(5)));
    /// assert!(signal.take_notified(), "woken by the release");
    /// drop(watch);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    fn watch(&self, key: &str, signal: &super::Signal) -> Result<super::Watch, BackendError> {
        watch::watch(&self.watchers, &self.inner.files, key, signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> (FileStore, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lock-file-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (FileStore::open(&dir).unwrap(), dir)
    }

    fn acquired(a: Attempt) -> u64 {
        match a {
            Attempt::Acquired(g) => g.fencing.unwrap(),
            other => panic!("free: {other:?}"),
        }
    }

    #[test]
    fn urls_name_absolute_directories() {
        let at = locate("file:///tmp/a%20b/locks").unwrap();
        assert_eq!(at, ["file:///tmp/a b/locks"]);
        let at = locate("file://rel/locks").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(at, [format!("file://{}/rel/locks", cwd.display())]);
        let at = locate("file:///tmp/what%3F/100%25").unwrap();
        assert_eq!(at, ["file:///tmp/what%3F/100%25"]);
        for bad in ["file://", "file:///a%00b"] {
            assert!(locate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_of_another_boot_hold_nothing() {
        let (store, dir) = temp_store("boot");
        let req = Request::new("k");
        acquired(store.try_acquire(&req).unwrap());
        let path = store.inner.files.path("k");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut rec = record::read(&file).unwrap().unwrap();
        rec.epoch = "an-earlier-boot".into();
        record::write(&file, &rec).unwrap();
        assert!(!store.holds("k", req.token).unwrap());
        acquired(store.try_acquire(&Request::new("k")).unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_holder_whose_byte_is_free_holds_nothing() {
        let (store, dir) = temp_store("dead");
        let req = Request::new("k").lease(Some(Duration::from_secs(60)));
        let first = acquired(store.try_acquire(&req).unwrap());
        assert!(store.holds("k", req.token).unwrap());
        assert!(matches!(
            store.try_acquire(&Request::new("k")).unwrap(),
            Attempt::Busy(_)
        ));
        // As when its process dies: the open file that locked the byte closes.
        store.inner.forget(req.token);
        assert!(!store.holds("k", req.token).unwrap());
        let next = acquired(store.try_acquire(&Request::new("k")).unwrap());
        assert!(next > first);
        assert!(!store.release("k", req.token).unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_file_unlinked_before_its_lock_is_not_used() {
        let (store, dir) = temp_store("unlinked");
        let files = &store.inner.files;
        let path = files.path("k");
        std::fs::write(&path, "").unwrap();
        let early = os::options(false).open(&path).unwrap();
        // A release or clean-up deletes the file; a locker creates the next.
        std::fs::remove_file(&path).unwrap();
        assert!(!os::still_named(&early, &path).unwrap());
        let now_named = files.row(&path, true, false).unwrap().unwrap();
        assert!(os::still_named(&now_named, &path).unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_file_recording_another_key_is_an_error_not_a_shared_lock() {
        let (store, dir) = temp_store("collision");
        acquired(store.try_acquire(&Request::new("a")).unwrap());
        let files = &store.inner.files;
        std::fs::copy(files.path("a"), files.path("b")).unwrap();
        let err = store.try_acquire(&Request::new("b")).unwrap_err();
        assert!(err.to_string().contains("records another key"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_file_locked_too_long_is_a_timeout_error() {
        let (store, dir) = temp_store("locked");
        let store = store.timeout(Duration::from_millis(50));
        let path = store.inner.files.path("k");
        let other = os::options(true).open(&path).unwrap();
        other.lock().unwrap();
        let err = store.try_acquire(&Request::new("k")).unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(err.to_string().contains("timeout_ms"), "{err}");
        let io = std::error::Error::source(err.inner())
            .and_then(|s| s.downcast_ref::<io::Error>())
            .expect("the io::Error is the source");
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        other.unlock().unwrap();
        acquired(store.try_acquire(&Request::new("k")).unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn local_file_systems_are_not_remote() {
        let (store, dir) = temp_store("local");
        assert_eq!(os::remote(store.dir()).unwrap(), None);
        assert_eq!(os::remote(Path::new("/proc")).unwrap(), None);
        assert!(os::remote(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_missing_directory_is_a_connection_error() {
        let (store, dir) = temp_store("gone");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = store.try_acquire(&Request::new("k")).unwrap_err();
        assert!(err.is_connection(), "{err}");
        assert!(err.to_string().contains(&*dir.to_string_lossy()), "{err}");
    }
}
