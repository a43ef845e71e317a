//! Guides: answers to the questions a new user asks before the API reference
//! helps. Each page is documentation only; every example on it is a doc test.
//!
//! - [`choosing_a_store`]: memory, Redis, a quorum of Redis servers or a
//!   store of your own; what each guarantees and how to configure it.
//! - [`web_handlers`]: locking in an axum handler, and which HTTP status
//!   each lock error becomes.
//! - [`errors`]: carrying a `LockError` in your own error type (thiserror,
//!   anyhow, boxed errors).
//! - [`tracing`]: ordering `#[lock]` with `#[tracing::instrument]`.
//! - [`testing`]: testing code that takes locks, and a store of your own.
//! - [`from_python`]: the calls and settings of python-cachelock,
//!   django-cache-lock, django_toolkit and djangae, and ours for each.

pub mod choosing_a_store;
pub mod errors;
pub mod from_python;
pub mod testing;
pub mod tracing;
pub mod web_handlers;
