//! Guides: answers to the questions a new user asks before the API reference
//! helps. Each page is documentation only; every example on it is a doc test.
//!
//! - [`tracing`]: ordering `#[lock]` with `#[tracing::instrument]`.

pub mod tracing;
