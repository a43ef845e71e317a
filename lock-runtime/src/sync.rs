//! The threads, locks and atomics of the memory store and the watchdog:
//! std's, or shuttle's in a test build with `--cfg shuttle`, so that the
//! model tests (the `model` modules) can drive every switch between threads.
//!
//! Shuttle rather than loom: `--cfg loom` also turns tokio, `parking`,
//! `event-listener` and `concurrent-queue` (our dependencies) into their loom
//! builds, while no crate we use looks at `cfg(shuttle)`; loom's `Mutex::new`
//! is not `const`, which the watchdog's static schedule needs; and loom's
//! exhaustive search does not scale to the memory store's sharded table,
//! where shuttle's randomized and PCT schedules do (with `park`,
//! `park_timeout`, `Condvar::wait_timeout` and `Waker`s supported). The cost:
//! shuttle explores samples of the schedules, not all of them; it models no
//! time (a timeout never fires); and it runs every atomic as `SeqCst`, so a
//! bug that needs a weaker ordering's reordering is out of its sight. Run the
//! models with
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
//!     cargo test -p lock-runtime --lib model
//! ```
//!
//! (only the `model` tests: under shuttle the other unit tests would use
//! its primitives outside of a model run, which it refuses).

#[cfg(all(test, shuttle))]
pub(crate) use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard, Weak, atomic};
#[cfg(all(test, shuttle))]
pub(crate) use shuttle::thread;

#[cfg(not(all(test, shuttle)))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak, atomic};
#[cfg(not(all(test, shuttle)))]
pub(crate) use std::thread;

/// What every model test runs: its body under `ITERATIONS` random schedules
/// and as many PCT schedules (depth 3, which finds most bugs that need up to
/// three badly timed switches). `LOCK_MODEL_ITERATIONS` sets the number (a
/// short CI run, or a long soak).
#[cfg(all(test, shuttle))]
pub(crate) fn explore<F>(model: F)
where
    F: Fn() + Send + Sync + 'static,
{
    const ITERATIONS: usize = 2000;
    let n = std::env::var("LOCK_MODEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    let model = std::sync::Arc::new(model);
    let random = std::sync::Arc::clone(&model);
    shuttle::check_random(move || random(), n);
    shuttle::check_pct(move || model(), n, 3);
}
