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

fn handle() -> Result<&'static Handle, BackendError> {
    IO.as_ref()
        .map_err(|e| BackendError::new(BackendErrorKind::Other, e.clone()))
}

/// Starts `fut` on the I/O thread; it runs to completion even if nobody
/// waits for it.
pub(crate) fn spawn<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<tokio::task::JoinHandle<T>, BackendError> {
    Ok(handle()?.spawn(fut))
}

/// Runs `fut` on the I/O thread and waits for its output.
pub(crate) async fn run<T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    spawn(fut)?.await.map_err(|e| {
        BackendError::new(BackendErrorKind::Other, format!("the I/O task failed: {e}"))
    })?
}

/// Runs `fut` on the I/O thread and blocks the calling (non-async) thread
/// until it is done.
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

/// Whether the caller runs inside a Tokio runtime (whose reactor and timers
/// its futures can use).
pub(crate) fn in_tokio() -> bool {
    Handle::try_current().is_ok()
}
