//! What a lock shows in your traces, and how to combine `#[lock]` with
//! `#[tracing::instrument]`: the order decides whether the function's span
//! contains the lock's spans or the lock's hold contains the function's span.
//!
//! # The lock's own spans
//!
//! Every acquisition is a `lock.acquire` span (fields `alias`, `key`,
//! `mode`, `waited_ms`, `outcome`: `acquired`, `busy`, `timeout`, `error` or
//! `cancelled`) and every hold a `lock.held` span (`alias`, `key`, `label`,
//! `function`, `fencing_token`, and when it ends `hold_ms`, `renewed`,
//! `lost`). Both are children of the span that is current when the
//! acquisition starts, so a request's trace shows how long it waited for
//! which lock and how long it held it, in a `tracing-subscriber` `fmt`
//! output or a `tracing-opentelemetry` exporter alike. The full list of
//! fields, events and metrics is on [`observe`](crate::observe).
//!
//! `#[lock]` runs the function's body inside `lock.held`, so the body's own
//! events and spans nest under the hold. A lock taken by hand does not
//! enter it for you: enter [`LockGuard::span`](crate::LockGuard::span)
//! where you want that.
//!
//! With no subscriber, or one that filters them out, the spans cost a
//! check of a cached flag per call: no field is formatted. They are `INFO`
//! spans with targets `lock_runtime::acquire` and `lock_runtime::held`;
//! `RUST_LOG=info,lock_runtime=warn` turns them off and keeps the warnings.
//!
//! # `#[lock]` with `#[tracing::instrument]`
//!
//! Attribute macros written on one function are expanded from the top
//! down, and each one receives the function with the attributes below it
//! still on it. So the top attribute rewrites the body first, and the
//! attribute nearest the function wraps what the ones above it produced:
//! at run time, it is the outermost layer.
//!
//! ```text
//! #[lock("invoice-<id>", wait_for_ms = 500)]   // expanded first: takes the lock around the body
//! #[tracing::instrument(err)]                  // expanded second: wraps all of that in a span
//! async fn settle(id: u64) -> Result<(), AppError> { .. }
//! ```
//!
//! - `#[lock]` on top: the function's span is the outermost layer, and
//!   `lock.acquire` and `lock.held` are its children: the span's duration
//!   includes the wait, and `#[instrument(err)]` records a lock failure
//!   (`Busy`, `Timeout`) as an error event of that span.
//! - `#[tracing::instrument]` on top: the lock is the outermost layer.
//!   `lock.acquire` and `lock.held` are children of the caller's span, and
//!   the function's span runs inside `lock.held`. A lock failure returns
//!   before the function's span exists; `lock.acquire` still records it
//!   (`outcome = "timeout"`), but `#[instrument(err)]` never sees it.
//!
//! Either way the lock's spans sit inside the caller's trace. Put `#[lock]`
//! first when the function's span should account for the whole call,
//! waiting included, and report lock failures; put it second when the
//! function's span should measure only the work done under the lock. Both
//! orders compile, and the function's arguments are in its span either way
//! (`#[lock]` keeps the signature, so `#[instrument]` still sees `id`).
//!
//! # The order, checked
//!
//! A `tracing` layer that remembers each span's parent, and in which span
//! each error event was recorded:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use lock_runtime::{lock, Lock, LockError};
//! use tracing::span::{Attributes, Id};
//! use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
//! use tracing_subscriber::registry::LookupSpan;
//!
//! #[derive(Clone, Default)]
//! struct Seen {
//!     /// (span, its parent) for every span opened.
//!     parents: Arc<Mutex<Vec<(&'static str, Option<&'static str>)>>>,
//!     /// The span of every error-level event.
//!     errors: Arc<Mutex<Vec<Option<&'static str>>>>,
//! }
//!
//! impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
//!     fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
//!         let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.name());
//!         self.parents.lock().unwrap().push((attrs.metadata().name(), parent));
//!     }
//!     fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
//!         if *event.metadata().level() == tracing::Level::ERROR {
//!             let span = ctx.event_span(event).map(|s| s.name());
//!             self.errors.lock().unwrap().push(span);
//!         }
//!     }
//! }
//!
//! impl Seen {
//!     /// The parents of the spans called `name`, in the order they opened.
//!     fn parents_of(&self, name: &str) -> Vec<Option<&'static str>> {
//!         let parents = self.parents.lock().unwrap();
//!         parents.iter().filter(|(n, _)| *n == name).map(|(_, p)| *p).collect()
//!     }
//! }
//!
//! // The function's span contains the lock's spans.
//! #[lock("lock-first-<id>", wait_for_ms = 20)]
//! #[tracing::instrument(err)]
//! async fn lock_first(id: u32) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! // The lock's hold contains the function's span.
//! #[tracing::instrument(err)]
//! #[lock("instrument-first-<id>", wait_for_ms = 20)]
//! async fn instrument_first(id: u32) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! let seen = Seen::default();
//! let subscriber = tracing_subscriber::registry().with(seen.clone());
//! tracing::subscriber::with_default(subscriber, || {
//!     let request = tracing::info_span!("request");
//!     let _in_request = request.enter();
//!     futures::executor::block_on(async {
//!         lock_first(1).await.unwrap();
//!         instrument_first(1).await.unwrap();
//!
//!         // Both time out on a held lock; only one failure lands in a span.
//!         let _a = Lock::new("lock-first-2").acquire().unwrap();
//!         let _b = Lock::new("instrument-first-2").acquire().unwrap();
//!         assert!(lock_first(2).await.unwrap_err().is_timeout());
//!         assert!(instrument_first(2).await.unwrap_err().is_timeout());
//!     });
//! });
//!
//! assert_eq!(
//!     seen.parents_of("lock.acquire"),
//!     [
//!         Some("lock_first"), // lock_first(1)
//!         Some("request"),    // instrument_first(1)
//!         Some("request"),    // Lock::new("lock-first-2"), taken by hand
//!         Some("request"),    // Lock::new("instrument-first-2")
//!         Some("lock_first"), // lock_first(2), timed out
//!         Some("request"),    // instrument_first(2), timed out
//!     ]
//! );
//! assert_eq!(seen.parents_of("lock_first"), [Some("request"), Some("request")]);
//! // Only the call that got the lock ran the function's span, inside the hold.
//! assert_eq!(seen.parents_of("instrument_first"), [Some("lock.held")]);
//! // `#[instrument(err)]` saw the timeout only where it wraps the lock.
//! assert_eq!(*seen.errors.lock().unwrap(), [Some("lock_first")]);
//! ```
//!
//! # Fields worth recording
//!
//! The lock's key is built from the function's arguments, and `lock.acquire`
//! and `lock.held` carry it, so the trace already says which lock a call
//! waited for. To act on what the lock did in your own code, read the
//! error: [`LockError::key`] gives the key, and
//! [`LockError::is_contention`] separates "someone else holds it" (usually
//! not worth an error-level event) from a failing store.
//!
//! [`LockError::key`]: crate::LockError::key
//! [`LockError::is_contention`]: crate::LockError::is_contention
