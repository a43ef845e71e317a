//! The Redis store's own I/O thread: a single-threaded tokio runtime that
//! owns every async connection of the process. Async callers hand their
//! commands to it, so the store works from any async runtime (or none), a
//! runtime that shuts down never takes a shared connection with it, and
//! timeouts never depend on the caller's timer.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use once_cell::sync::Lazy;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::runtime::Handle;

use crate::backend::{BackendError, BackendErrorKind};

static IO: Lazy<Result<Handle, String>> = Lazy::new(|| {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("lock-redis-io".into())
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
                    let _ = tx.send(Err(format!("could not start the Redis I/O runtime: {e}")));
                }
            }
        })
        .map_err(|e| format!("could not start the Redis I/O thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the Redis I/O thread died while starting".to_owned())?
});

fn handle() -> Result<&'static Handle, BackendError> {
    IO.as_ref()
        .map_err(|e| BackendError::new(BackendErrorKind::Other, e.clone()))
}

/// Starts `fut` on the I/O thread. It runs to completion even if the
/// returned future is dropped, which is what lets a cancelled acquisition
/// give back a lock it won after its caller left.
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
        BackendError::new(
            BackendErrorKind::Other,
            format!("the Redis I/O task failed: {e}"),
        )
    })?
}

/// One multiplexed connection per store, shared by every async caller,
/// reconnected on demand after a failure.
pub(crate) struct AsyncConn {
    client: Client,
    config: AsyncConnectionConfig,
    cached: Mutex<Option<MultiplexedConnection>>,
    connecting: tokio::sync::Mutex<()>,
}

impl AsyncConn {
    pub(crate) fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            cached: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The shared connection; connects first if there is none. Only one
    /// caller connects at a time; the others wait for its result.
    pub(crate) async fn get(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = lock(&self.cached).clone() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = lock(&self.cached).clone() {
            return Ok(c);
        }
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *lock(&self.cached) = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after an I/O failure, so the next call
    /// reconnects.
    pub(crate) fn reset(&self) {
        *lock(&self.cached) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `fut` on the I/O thread and blocks the calling (non-async) thread
/// until it is done. `fut` bounds its own time with the store's timeouts.
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
            "the Redis I/O task ended without an answer",
        )
    })?
}
