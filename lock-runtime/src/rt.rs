//! The runtime's own I/O thread: a single-threaded Tokio runtime on which
//! async work runs when its caller has no Tokio runtime (a sync caller, or
//! another executor), so that stores whose clients need a Tokio reactor work
//! from anywhere. Inside a Tokio runtime of the caller's, async work runs
//! right there instead (see [`caller_runtime`]).

use std::future::Future;

use once_cell::sync::Lazy;
use tokio::runtime::Handle;

use crate::backend::{BackendError, BackendErrorKind};

static IO: Lazy<Result<Handle, String>> = Lazy::new(|| {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("lock-runtime-io".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("could not start the I/O runtime: {e}")));
                }
            }
        })
        .map_err(|e| format!("could not start the I/O thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the I/O thread died while starting".to_owned())?
});

pub(crate) fn handle() -> Result<&'static Handle, BackendError> {
    IO.as_ref()
        .map_err(|e| BackendError::new(BackendErrorKind::Other, e.clone()))
}

/// Starts `fut` on the I/O thread. It runs to completion even if nobody
/// waits for it, which is what lets a cancelled acquisition give back a
/// lock it won after its caller left.
pub(crate) fn spawn<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<tokio::task::JoinHandle<T>, BackendError> {
    Ok(handle()?.spawn(fut))
}

/// Runs `fut` on the I/O thread and waits for its output.
pub(crate) async fn run<T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    joined(spawn(fut)?.await)
}

/// The output of an I/O task, or why it has none.
fn joined<T>(
    out: Result<Result<T, BackendError>, tokio::task::JoinError>,
) -> Result<T, BackendError> {
    out.map_err(|e| {
        BackendError::new(BackendErrorKind::Other, format!("the I/O task failed: {e}"))
    })?
}

/// Runs `fut` on the I/O thread and waits for its output; dropped before
/// that, it stops `fut` too (at its next await), where [`run`] lets it
/// finish. For acquisitions, whose caller gives up on them by dropping them.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) async fn run_cancellable<T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = spawn(fut)?;
    let _abort = AbortOnDrop(task.abort_handle());
    joined(task.await)
}

/// Runs `fut` on the I/O thread and blocks the calling (non-async) thread
/// until it is done. `fut` bounds its own time (a store's timeouts).
pub(crate) fn block_on<T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    spawn(async move {
        let _ = tx.send(fut.await);
    })?;
    rx.recv().map_err(|_| {
        BackendError::new(
            BackendErrorKind::Other,
            "the I/O task ended without an answer",
        )
    })?
}

/// The Tokio runtime the caller runs on, unless it is the I/O thread's (or
/// there is none): async work can run right there, on that runtime's
/// connections.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn caller_runtime() -> Option<Handle> {
    let h = Handle::try_current().ok()?;
    IO.as_ref()
        .map_or(true, |io| io.id() != h.id())
        .then_some(h)
}

/// Whether the caller runs inside a Tokio runtime (whose reactor and timers
/// its futures can use).
pub(crate) fn in_tokio() -> bool {
    Handle::try_current().is_ok()
}
