//! Coming from a Python lock library: for python-cachelock,
//! django-cache-lock, django_toolkit and djangae, a table from their calls
//! and settings to ours, and what this crate does not have yet.
//!
//! Each row is pinned by a test in this repository that ports the
//! library's documented example: `tests/seed_python_cachelock.rs`,
//! `tests/seed_django_cache_lock.rs`, `tests/seed_django_toolkit.rs` and
//! `tests/seed_djangae.rs`.
//!
//! Two differences hold for all four:
//!
//! - **Configuration** is not Django's `CACHES`: aliases are configured once
//!   at start-up with [`registry`](crate::registry) (or
//!   `LOCK_ALIAS_<NAME>=<url>` variables). Without configuration, `default`
//!   is an in-process store, like Django's `locmem` cache: it does not
//!   exclude other processes.
//! - **Errors** are values: what raised an exception returns
//!   `Err(LockError::...)` (see [`errors`](super::errors)), or `None` where
//!   the Python function was skipped.
//!
//! # python-cachelock
//!
//! | python-cachelock | lock-runtime |
//! |---|---|
//! | `with Lock("foo"):` (raises `LockError` when the key is taken) | `let _guard = Lock::new("foo").wait(false).acquire()?;` (`Err(LockError::Busy { .. })`) |
//! | `@once("foo-{arg_a}-{arg_b}")` (skips quietly when the key is taken) | `#[once("foo-<arg_a>-<arg_b>")]`: the function returns `Option<T>`, `None` when skipped |
//! | `@once(..., raise_if_lock=True)` | `#[once("...", raise = true)]` with `-> Result<T, E>` |
//! | the internal in-memory cache when Django is not there | the alias `default` (embedded memory store) |
//! | `DEFAULT_CACHELOCK_ALIAS` (which Django cache holds the locks) | `alias = "..."` on each lock, or configure `default` to be that store |
//! | a cache of your own (anything with `get`, `set` and `delete`) | a [`Store`](crate::backend::Store) registered with `AliasConfig::store`; it must take a key only if it is free in one atomic step, not a `get` then a `set` |
//!
//! ```
//! use lock_runtime::{once, Lock, LockError};
//!
//! #[once("guide-py-foo-<arg_a>-<arg_b>")]
//! fn func(arg_a: u32, arg_b: &str) -> String {
//!     format!("{arg_a}/{arg_b}")
//! }
//!
//! assert_eq!(func(1, "x").as_deref(), Some("1/x"));
//! let _other = Lock::new("guide-py-foo-1-x").acquire().unwrap();
//! assert_eq!(func(1, "x"), None, "skipped");
//!
//! // `with Lock("guide-py-foo-1-x"):` raising when taken:
//! let err = Lock::new("guide-py-foo-1-x").wait(false).acquire().unwrap_err();
//! assert!(matches!(err, LockError::Busy { .. }));
//! ```
//!
//! # django-cache-lock
//!
//! | django-cache-lock | lock-runtime |
//! |---|---|
//! | `with lock("global"):` (waits by default) | `let _guard = Lock::new("global").acquire()?;` (waits by default) |
//! | `@lock("global")` | `#[lock("global")]` |
//! | `blocking=False` | `wait = false` / `.wait(false)` |
//! | `@lock_model` on a model method (locks the instance's primary key) | `#[lock("foo-<self.id>")]` on the method |
//! | `@lock_model("bar", blocking=False)` (locks another field) | `#[lock("foo-bar-<self.bar>", wait = false)]` |
//! | `with lock_model(foo):` | `Lock::new(format!("foo-{}", foo.id)).acquire()?` |
//! | `DJANGOLOCK_PREFIX` (default `"lock:"`) | the alias's `prefix` (`?prefix=...`); default `lock:` on Redis, none on memory stores, which only their aliases share |
//! | `DJANGOLOCK_SLEEP` (default 0.1 s between attempts) | the alias's `poll_interval` (`?poll_ms=...`, default 100 ms), used only by stores that cannot wake waiters; the memory and Redis stores wake a waiter when the lock is released |
//! | `DJANGOLOCK_RELEASEONDEL` (release when the lock object goes away) | always: dropping the guard releases, on return, `?`, panic and a dropped future; `delete_on_exit = false` keeps the lock until `expire` ends |
//! | the `locmem` cache | `memory://` (the alias `default`) |
//! | the `django-redis` / `django-redis-cache` caches | `redis://...` |
//! | the `file`, `db` (database) and `memcached` caches | **not available yet**: planned stores; until then, a custom `Backend` |
//!
//! ```
//! use lock_runtime::{lock, Lock, LockError};
//!
//! struct Foo {
//!     id: u64,
//!     bar: String,
//! }
//!
//! impl Foo {
//!     // `@lock_model`
//!     #[lock("guide-djl-foo-<self.id>")]
//!     fn save(&self) -> Result<u64, LockError> {
//!         Ok(self.id)
//!     }
//!
//!     // `@lock_model("bar", blocking=False)`
//!     #[lock("guide-djl-foo-bar-<self.bar>", wait = false)]
//!     fn rename(&self) -> Result<(), LockError> {
//!         Ok(())
//!     }
//! }
//!
//! let foo = Foo { id: 1, bar: "x".into() };
//! assert_eq!(foo.save().unwrap(), 1);
//! let _elsewhere = Lock::new("guide-djl-foo-bar-x").acquire().unwrap();
//! assert!(foo.rename().unwrap_err().is_busy());
//! ```
//!
//! # django_toolkit
//!
//! django_toolkit's locks never wait: a lock that is already taken raises
//! `LockActiveError` (or, with `raise_exception=False`, leaves
//! `lock.active` false). So every lock below has `wait = false`.
//!
//! | django_toolkit | lock-runtime |
//! |---|---|
//! | `with LocalMemoryLock() as lock:` | `Lock::new(key).wait(false).acquire()?` on the alias `default` |
//! | `with CacheLock(key="key") as lock:` | `Lock::new("key").wait(false).acquire()?`, or `#[lock("key", wait = false)]` |
//! | `cache_alias="locks"` | `alias = "locks"` / `.alias("locks")`, configured in the registry |
//! | `expire=10` (seconds) | `expire = 10` (also `"10s"`, `"1500ms"`) / `.expire(Duration::from_secs(10))` |
//! | `raise_exception=True` (default): `LockActiveError` | `raise = true` (default of `#[lock]`): `Err(LockError::Busy { .. })` |
//! | `raise_exception=False`, then `if lock.active:` | `if let Some(guard) = lock.try_acquire()? { .. }`, or `raise = false` (the function returns `Option<T>`) |
//! | `delete_on_exit=False` (the key stays until it expires) | `delete_on_exit = false` with `expire` |
//! | `lock.active` | `Lock::new(key).try_acquire()?.is_none()` from outside; inside, the guard exists |
//!
//! ```
//! use lock_runtime::{lock, Lock, LockError};
//!
//! // `CacheLock(key="digest", expire=3600, delete_on_exit=False)`:
//! // at most once an hour.
//! #[lock("guide-tk-digest", expire = "1h", delete_on_exit = false, wait = false)]
//! fn send_digest() -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! send_digest().unwrap();
//! assert!(send_digest().unwrap_err().is_busy(), "LockActiveError");
//!
//! // `raise_exception=False` and `lock.active`:
//! let lock = Lock::new("guide-tk-report");
//! match lock.try_acquire().unwrap() {
//!     Some(_guard) => { /* active: do the work */ }
//!     None => unreachable!("nobody else holds it"),
//! }
//! ```
//!
//! # djangae
//!
//! | djangae (`djangae.contrib.locking`) | lock-runtime |
//! |---|---|
//! | `@lock("my_lock")` | `#[lock("my_lock")]` |
//! | `with lock("my_lock"):` | `let _guard = Lock::new("my_lock").acquire()?;` |
//! | `@lock("my_lock", wait=False)` (the function is not called when the lock is taken) | `#[once("my_lock")]`, or `#[lock("my_lock", wait = false, raise = false)]`: returns `None` |
//! | `with lock("my_lock", wait=False):` raising `LockAcquisitionError` | `Lock::new("my_lock").wait(false).acquire()?`: `Err(LockError::Busy { .. })` |
//! | `Lock.acquire("my_lock", wait=False)` returning `None` when taken | `Lock::new("my_lock").try_acquire()?`: `Ok(None)` when taken |
//! | `lock.release()` | `guard.release()?`, or drop the guard |
//! | `steal_after_ms=...` | `steal_after_ms = ...` / `.steal_after(..)`; the old holder's release then reports `NotHeld` |
//! | `wait_for_ms=...` | `wait_for_ms = ...` / `.wait_for(..)`; giving up is `Err(LockError::Timeout { .. })` |
//! | `kind=LOCK_KINDS.WEAK` (memcache: good enough, may be lost) | the memory store for one process; Redis for several (see [efficiency or correctness](super::choosing_a_store#efficiency-or-correctness)) |
//! | `kind=LOCK_KINDS.STRONG` (datastore) | Redis, or a quorum of Redis servers, with fencing tokens where correctness depends on the lock |
//! | the cron job that cleans up stale `STRONG` locks | nothing to schedule: every lock on a shared store has a lease and frees itself when its holder dies; `steal_after` takes over sooner |
//!
//! ```
//! use lock_runtime::{lock, once, Lock, LockError};
//!
//! // `@lock("refresh", wait_for_ms=500, steal_after_ms=2000)`
//! #[lock("guide-dj-refresh", wait_for_ms = 500, steal_after_ms = 2000)]
//! fn refresh() -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! // `@lock("my_lock", wait=False)`
//! #[once("guide-dj-my-lock")]
//! fn my_function() -> u32 {
//!     42
//! }
//!
//! refresh().unwrap();
//! assert_eq!(my_function(), Some(42));
//! let held = Lock::new("guide-dj-my-lock").acquire().unwrap();
//! assert_eq!(my_function(), None, "not called");
//! drop(held);
//!
//! let held = Lock::new("guide-dj-refresh").acquire().unwrap();
//! assert!(refresh().unwrap_err().is_timeout(), "gave up after 500 ms");
//! drop(held);
//! ```
//!
//! # What is new here
//!
//! Things none of the four has, each with its own docs: owner tokens (a
//! holder whose lease ran out can never release the next holder's lock),
//! [fencing tokens](crate::LockGuard::fencing_token), leases that renew
//! themselves while the holder lives, waiters woken by the release instead
//! of sleeping, `fair = true` hand-off in arrival order, and the lost-lock
//! signal ([`LockGuard::lost`](crate::LockGuard::lost), `on_lost =
//! "cancel"`).
