//! How to combine `#[lock]` with `#[tracing::instrument]`, and in which
//! order to write them: the order decides whether the time spent waiting
//! for the lock shows up inside the function's span or before it.
//!
//! # Write `#[lock]` first, `#[tracing::instrument]` next to the function
//!
//! ```text
//! #[lock("invoice-<id>", wait_for_ms = 500)]   // expanded first: takes the lock around the body
//! #[tracing::instrument(err)]                  // expanded second: wraps all of that in a span
//! async fn settle(id: u64) -> Result<(), AppError> { .. }
//! ```
//!
//! Attribute macros written on one function are expanded from the top
//! down, and each one receives the function with the attributes below it
//! still on it. So the top attribute rewrites the body first, and the
//! attribute nearest the function wraps what the ones above it produced:
//! at run time, it is the outermost layer.
//!
//! - `#[lock]` on top: `#[lock]` turns the body into "take the lock, run
//!   the body, give it back"; `#[tracing::instrument]` then wraps all of it
//!   in the span. The wait for the lock, a `Busy` or `Timeout` error, and
//!   the release all happen **inside** the span, so the span's duration
//!   includes the wait and `#[instrument(err)]` records a lock failure as
//!   an error event of that span.
//! - `#[tracing::instrument]` on top: the span covers only the original
//!   body, and `#[lock]` waits for the lock **before** the span is entered.
//!   A slow request then shows a short span and an unexplained gap, and a
//!   lock failure is returned without the span ever existing.
//!
//! Put `#[lock]` first unless you really want the span to measure only the
//! work done under the lock. Both orders compile, and the function's
//! arguments are in the span either way (`#[lock]` keeps the signature, so
//! `#[instrument]` still sees `id`).
//!
//! # The order, checked
//!
//! A store that remembers which span is current when the runtime asks it
//! for a lock (the default `acquire` of a [`Backend`](crate::backend::Backend)
//! calls its `try_acquire` on the caller's thread or task, so the current
//! span there is the caller's), and a `tracing` layer that remembers in
//! which span each error event was recorded:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use lock_runtime::backend::memory::MemoryBackend;
//! use lock_runtime::backend::{Attempt, Backend, BackendError, Request, Token};
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::{lock, Lock, LockError};
//! use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
//! use tracing_subscriber::registry::LookupSpan;
//!
//! /// A memory store that notes the current span's name on every attempt.
//! #[derive(Default)]
//! struct SpanSpy {
//!     inner: MemoryBackend,
//!     seen: Mutex<Vec<Option<&'static str>>>,
//! }
//!
//! impl Backend for SpanSpy {
//!     fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
//!         let span = tracing::Span::current().metadata().map(|m| m.name());
//!         self.seen.lock().unwrap().push(span);
//!         self.inner.try_acquire(req)
//!     }
//!     fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
//!         self.inner.release(key, token)
//!     }
//!     fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
//!         self.inner.extend(key, token, lease)
//!     }
//! }
//!
//! /// Notes the span of every error-level event.
//! #[derive(Clone, Default)]
//! struct ErrorSpans(Arc<Mutex<Vec<Option<&'static str>>>>);
//!
//! impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ErrorSpans {
//!     fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
//!         if *event.metadata().level() == tracing::Level::ERROR {
//!             let span = ctx.event_span(event).map(|s| s.name());
//!             self.0.lock().unwrap().push(span);
//!         }
//!     }
//! }
//!
//! let spy = Arc::new(SpanSpy::default());
//! registry::add("guide-tracing", AliasConfig::custom(spy.clone())).unwrap();
//!
//! // The recommended order: the wait is inside the span.
//! #[lock("lock-first-<id>", alias = "guide-tracing", wait_for_ms = 20)]
//! #[tracing::instrument(err)]
//! async fn lock_first(id: u32) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! // The other order: the wait happens before the span is entered.
//! #[tracing::instrument(err)]
//! #[lock("instrument-first-<id>", alias = "guide-tracing", wait_for_ms = 20)]
//! async fn instrument_first(id: u32) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! // The same holds for sync functions.
//! #[lock("sync-lock-first-<id>", alias = "guide-tracing")]
//! #[tracing::instrument]
//! fn sync_lock_first(id: u32) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! let errors = ErrorSpans::default();
//! let subscriber = tracing_subscriber::registry().with(errors.clone());
//! tracing::subscriber::with_default(subscriber, || {
//!     futures::executor::block_on(async {
//!         lock_first(1).await.unwrap();
//!         instrument_first(1).await.unwrap();
//!         sync_lock_first(1).unwrap();
//!
//!         // Both time out on a held lock; only one failure lands in a span.
//!         let _a = Lock::new("lock-first-2").alias("guide-tracing").acquire().unwrap();
//!         let _b = Lock::new("instrument-first-2").alias("guide-tracing").acquire().unwrap();
//!         assert!(lock_first(2).await.unwrap_err().is_timeout());
//!         assert!(instrument_first(2).await.unwrap_err().is_timeout());
//!     });
//! });
//!
//! let seen = spy.seen.lock().unwrap();
//! // The first attempt of each call with a free lock, in call order.
//! assert_eq!(seen[0], Some("lock_first"), "acquired inside the function's span");
//! assert_eq!(seen[1], None, "acquired before the span was entered");
//! assert_eq!(seen[2], Some("sync_lock_first"));
//! // `#[instrument(err)]` saw the timeout only where it wraps the lock.
//! assert_eq!(*errors.0.lock().unwrap(), [Some("lock_first")]);
//! ```
//!
//! # Fields worth recording
//!
//! The lock's key is built from the function's arguments, so the span's
//! fields already identify the lock when they include those arguments. To
//! record what the lock did, read the error: [`LockError::key`] gives the
//! key, and [`LockError::is_contention`] separates "someone else holds it"
//! (usually not worth an error-level event) from a failing store.
//!
//! [`LockError::key`]: crate::LockError::key
//! [`LockError::is_contention`]: crate::LockError::is_contention
