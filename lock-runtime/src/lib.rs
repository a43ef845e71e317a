//! Named locks for sync and async Rust: `#[lock]` makes a function run by one
//! holder at a time, across threads, tasks, processes and machines.
//!
//! ```
//! use lock_runtime::{lock, once, LockError};
//!
//! #[derive(Debug)]
//! enum AppError { Lock(LockError) }
//! impl From<LockError> for AppError {
//!     fn from(e: LockError) -> Self { AppError::Lock(e) }
//! }
//!
//! struct User { id: u64 }
//!
//! #[lock("report-<user.id>", wait = false)]
//! fn build_report(user: &User) -> Result<String, AppError> {
//!     Ok(format!("report for {}", user.id))
//! }
//!
//! #[once("nightly-<job>")]
//! fn nightly(job: &str) -> usize {
//!     job.len()
//! }
//!
//! assert_eq!(build_report(&User { id: 7 }).unwrap(), "report for 7");
//! assert_eq!(nightly("reindex"), Some(7));
//! ```
//!
//! # Map of the crate
//! - [`lock`] and [`once`]: the attributes (see their docs for every option).
//! - [`Lock`] / [`LockGuard`]: the builder and RAII guard the attributes use,
//!   for locking a block of code by hand.
//! - [`LockError`]: the one error type; every variant says what to do.
//! - [`observe`]: what every lock reports: the `lock.acquire` and
//!   `lock.held` `tracing` spans, its events, and (feature `metrics`) its
//!   counters, histograms and gauges.
//! - [`admin`]: operating locks: who holds what ([`Owner`](admin::Owner)),
//!   pages of held locks, forced releases and their audit log, offered on
//!   an alias ([`Alias::list`](registry::Alias::list) and the rest).
//! - [`registry`]: named backend aliases, configured at start-up (or from
//!   environment variables); `default` is the embedded memory store.
//! - [`backend`]: stores. A store of your own is written once, as a
//!   [`Store`](backend::Store) or an [`AsyncStore`](backend::AsyncStore),
//!   with optional [`Abilities`](backend::Abilities); the runtime derives the
//!   rest (the [`Backend`](backend::Backend) it drives). Also the
//!   [memory store](backend::memory) and, with the `redis` feature (on by
//!   default), the Redis store (`backend::redis`).
//! - `testing` (feature `testing`): the conformance suite every store must
//!   pass, to run for a store of your own with one macro call, and test
//!   isolation (`testing::isolate`) with a virtual clock.
//! - [`guide`]: guides, each a page of runnable examples: [choosing a
//!   store](guide::choosing_a_store), [web handlers](guide::web_handlers),
//!   [errors in your own types](guide::errors), [`tracing`
//!   spans](guide::tracing), [testing](guide::testing) and [coming from the
//!   Python libraries](guide::from_python).
//!
//! # Cargo features
//! - `redis` (default): the Redis backend, on the `redis` crate and a small
//!   private `tokio` runtime for its I/O.
//! - `tokio` (on with `redis`): a private I/O thread with a `tokio` runtime,
//!   on which an [`AsyncStore`](backend::AsyncStore) whose client needs a
//!   Tokio reactor serves sync callers and callers on other executors.
//! - `sqlite`: `sqlite://` aliases, a lock table in a SQLite file shared by
//!   the processes of one host (SQLite bundled through `rusqlite`).
//! - `postgres`: `postgres://` aliases, a lease table in a Postgres database
//!   with `LISTEN`/`NOTIFY` wake-ups (`tokio-postgres`; turns on `tokio`).
//! - `file`: `file://` aliases, one lock file per key in a directory of a
//!   local file system, freed by the kernel when its holder dies (Linux).
//! - `memcache`: `memcache://` aliases on one or more memcached servers
//!   (meta protocol, a client of the crate's own): djangae's weak kind.
//! - `tls`: `rediss://` aliases (TLS through rustls).
//! - `metrics`: every lock's counters, histograms and gauges through the
//!   `metrics` facade, for the recorder (exporter) the program installs.
//! - `testing`: the conformance suite for stores (module `testing`), on a
//!   multi-threaded `tokio` runtime of its own.

#![warn(missing_docs)]

pub mod admin;
pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod error;
pub mod guide;
mod lease;
mod lock;
pub mod observe;
pub mod registry;
#[cfg(feature = "tokio")]
mod rt;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod watchdog;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use error::{LockError, Operation};
pub use lease::MAX_DURATION;
pub use lock::{Lock, LockGuard};
pub use lock_macros::{lock, once};
pub use watchdog::Lost;
