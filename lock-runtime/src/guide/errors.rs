//! How to carry a [`LockError`] inside your own error type: with
//! `thiserror`, with `anyhow`, or as a boxed error, so that a `raise = true`
//! function (the default of `#[lock]`) can return it.
//!
//! A `raise = true` function returns `Err(E::from(lock_error))` when the
//! lock is not taken, so its error type `E` needs `From<LockError>`. Any of
//! the three below gives it.
//!
//! # With `thiserror`: `#[error(transparent)]`
//!
//! ```
//! use lock_runtime::{lock, Lock, LockError};
//!
//! #[derive(Debug, thiserror::Error)]
//! enum AppError {
//!     // Display and `source()` are the lock error's own: its message
//!     // appears once in a report.
//!     #[error(transparent)]
//!     Lock(#[from] LockError),
//!     #[error("invoice {0} is already paid")]
//!     AlreadyPaid(u64),
//! }
//!
//! #[lock("guide-errors-invoice-<id>", wait = false)]
//! fn pay(id: u64) -> Result<(), AppError> {
//!     if id == 0 {
//!         return Err(AppError::AlreadyPaid(id));
//!     }
//!     Ok(())
//! }
//!
//! let _held = Lock::new("guide-errors-invoice-7").acquire().unwrap();
//! let err = pay(7).unwrap_err();
//! assert!(matches!(&err, AppError::Lock(e) if e.is_busy()));
//! assert_eq!(
//!     err.to_string(),
//!     "lock `guide-errors-invoice-7` (alias `default`) is held by another owner"
//! );
//! assert!(std::error::Error::source(&err).is_none(), "nothing below a busy lock");
//! ```
//!
//! Why not `#[error("lock failed: {0}")] Lock(#[from] LockError)`? In
//! thiserror, `#[from]` also makes the field the error's
//! [`source`](std::error::Error::source). A report that prints an error and
//! then its sources (anyhow's `{:#}`, `tracing`'s error fields with a
//! reporter, `eyre`, ...) then prints the lock error's message twice: once
//! inside `{0}`, once as the source. Either make the variant transparent,
//! or give it a message of its own that does not repeat the source:
//!
//! ```
//! use std::error::Error;
//! use lock_runtime::{Lock, LockError};
//!
//! #[derive(Debug, thiserror::Error)]
//! enum Doubled {
//!     #[error("lock failed: {0}")]
//!     Lock(#[from] LockError),
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! enum WithContext {
//!     #[error("could not lock the ledger")]
//!     Lock(#[from] LockError),
//! }
//!
//! /// An error and its sources, the way reporters print them.
//! fn report(e: &dyn Error) -> String {
//!     let mut out = e.to_string();
//!     let mut cause = e.source();
//!     while let Some(c) = cause {
//!         out = format!("{out}: {c}");
//!         cause = c.source();
//!     }
//!     out
//! }
//!
//! let _held = Lock::new("guide-errors-ledger").acquire().unwrap();
//! let busy = || Lock::new("guide-errors-ledger").wait(false).acquire().unwrap_err();
//!
//! let msg = "lock `guide-errors-ledger` (alias `default`) is held by another owner";
//! assert_eq!(report(&Doubled::from(busy())), format!("lock failed: {msg}: {msg}"));
//! assert_eq!(report(&WithContext::from(busy())), format!("could not lock the ledger: {msg}"));
//! ```
//!
//! # With `anyhow`
//!
//! `anyhow::Error` converts from any error, so an `anyhow::Result` works as
//! the return type, and `downcast_ref` finds
//! the [`LockError`] again to decide what to do:
//!
//! ```
//! use anyhow::Context as _;
//! use lock_runtime::{lock, Lock, LockError};
//!
//! #[lock("guide-errors-nightly", wait = false)]
//! fn nightly() -> anyhow::Result<u32> {
//!     Ok(1)
//! }
//!
//! assert_eq!(nightly().unwrap(), 1);
//! let _held = Lock::new("guide-errors-nightly").acquire().unwrap();
//! let err = nightly().context("nightly job").unwrap_err();
//! assert!(err.downcast_ref::<LockError>().is_some_and(LockError::is_busy));
//! assert_eq!(
//!     format!("{err:#}"),
//!     "nightly job: lock `guide-errors-nightly` (alias `default`) is held by another owner"
//! );
//! ```
//!
//! # As a boxed error
//!
//! `Box<dyn Error + Send + Sync>` (and `Box<dyn Error>`) convert from any
//! error too, so they work as the error type of a `raise = true` function
//! without a type of your own:
//!
//! ```
//! use std::error::Error;
//! use lock_runtime::{lock, Lock, LockError};
//!
//! type BoxError = Box<dyn Error + Send + Sync>;
//!
//! #[lock("guide-errors-boxed", wait = false)]
//! fn boxed() -> Result<(), BoxError> {
//!     Ok(())
//! }
//!
//! #[lock("guide-errors-boxed-local", wait = false)]
//! async fn boxed_local() -> Result<(), Box<dyn Error>> {
//!     Ok(())
//! }
//!
//! let _held = Lock::new("guide-errors-boxed").acquire().unwrap();
//! let err = boxed().unwrap_err();
//! assert!(err.downcast_ref::<LockError>().is_some_and(LockError::is_busy));
//! futures::executor::block_on(boxed_local()).unwrap();
//! ```
//!
//! # Which variants to treat how
//!
//! [`LockError::is_contention`] is true for `Busy` and `Timeout`: somebody
//! else holds the lock, the usual reason to retry later or to tell a
//! client "not now". [`LockError::is_backend`] is a failing store, worth
//! retrying after a pause and worth an alert. `UnknownAlias`, `Config` and
//! `InvalidOptions` are mistakes in the program or its configuration.
//! `NotHeld` means the lock was lost while the work ran (see
//! [`LockError::NotHeld`]). The [`web_handlers`](super::web_handlers) guide
//! turns these into HTTP statuses.
//!
//! [`LockError`]: crate::LockError
//! [`LockError::is_contention`]: crate::LockError::is_contention
//! [`LockError::is_backend`]: crate::LockError::is_backend
//! [`LockError::NotHeld`]: crate::LockError::NotHeld
