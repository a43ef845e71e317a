//! Async I/O. Inside a Tokio runtime, async calls use a connection driven by
//! that runtime (one per runtime per store), so a request and its reply
//! never cross threads, and a release that must not overtake a request in
//! flight follows it on the same connection. Elsewhere (another executor,
//! or no runtime at all) they are handed to the store's own I/O thread, a
//! single-threaded Tokio runtime that also runs the sync waiters' pub/sub
//! subscriber, so the store works from any executor and never depends on
//! the caller's timers there. [`Place::here`] makes that choice.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use once_cell::sync::Lazy;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::runtime::Handle;

use crate::backend::{BackendError, BackendErrorKind, BoxFuture};

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

pub(crate) fn handle() -> Result<&'static Handle, BackendError> {
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
    joined(spawn(fut)?.await)
}

/// The output of an I/O task, or why it has none.
fn joined<T>(
    out: Result<Result<T, BackendError>, tokio::task::JoinError>,
) -> Result<T, BackendError> {
    out.map_err(|e| {
        BackendError::new(
            BackendErrorKind::Other,
            format!("the Redis I/O task failed: {e}"),
        )
    })?
}

/// Runs `fut` on the I/O thread and waits for its output; dropped before
/// that, it stops `fut` too (at its next await), where [`run`] lets it
/// finish. For acquisitions, whose caller gives up on them by dropping them.
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

/// How many runtimes' connections a store keeps. A process usually has one
/// or two runtimes; test suites make one per test, and the connections of
/// runtimes that are gone are never used again, so the oldest are dropped.
const MAX_RUNTIMES: usize = 8;

/// The store's async connections: one multiplexed connection per Tokio
/// runtime that uses the store (the I/O thread's included), created in that
/// runtime so that its requests never cross threads, and reconnected on
/// demand after a failure.
pub(crate) struct AsyncConn {
    client: Client,
    config: AsyncConnectionConfig,
    by_runtime: Mutex<VecDeque<(tokio::runtime::Id, MultiplexedConnection)>>,
    connecting: tokio::sync::Mutex<()>,
}

impl AsyncConn {
    pub(crate) fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            by_runtime: Mutex::new(VecDeque::new()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The connection of the runtime this runs on; connects first if there
    /// is none. Only one caller connects at a time.
    ///
    /// Must run inside a Tokio runtime with I/O and timers enabled.
    pub(crate) async fn get(&self) -> RedisResult<MultiplexedConnection> {
        let id = Handle::current().id();
        if let Some(c) = self.cached(id) {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.cached(id) {
            return Ok(c);
        }
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let mut conns = lock(&self.by_runtime);
        if conns.len() >= MAX_RUNTIMES {
            conns.pop_front();
        }
        conns.push_back((id, c.clone()));
        Ok(c)
    }

    fn cached(&self, id: tokio::runtime::Id) -> Option<MultiplexedConnection> {
        lock(&self.by_runtime)
            .iter()
            .find(|(rt, _)| *rt == id)
            .map(|(_, c)| c.clone())
    }

    /// Forgets this runtime's connection after an I/O failure, so the next
    /// call reconnects.
    pub(crate) fn reset(&self) {
        if let Ok(h) = Handle::try_current() {
            let id = h.id();
            lock(&self.by_runtime).retain(|(rt, _)| *rt != id);
        }
    }
}

/// The Tokio runtime the caller runs on, unless it is the I/O thread's (or
/// there is none): its async calls then use that runtime's own connection.
pub(crate) fn caller_runtime() -> Option<Handle> {
    let h = Handle::try_current().ok()?;
    IO.as_ref()
        .map_or(true, |io| io.id() != h.id())
        .then_some(h)
}

/// Where the store's async work runs; [`Place::here`] is the one place that
/// chooses, and every async operation of the store goes through it.
pub(crate) enum Place {
    /// On the caller's Tokio runtime, with that runtime's connection.
    Caller(Handle),
    /// On the store's I/O thread, with the I/O thread's connection.
    Io,
}

impl Place {
    /// The caller's runtime if it runs on one (other than the I/O thread's),
    /// else the I/O thread.
    pub(crate) fn here() -> Self {
        caller_runtime().map_or(Place::Io, Place::Caller)
    }

    /// Runs `fut` there and answers with its output. Dropped before that,
    /// it stops `fut` at its next await wherever it runs, so a dropped
    /// operation behaves the same on either side: what it leaves behind is
    /// for the operation's own guards to clean up.
    pub(crate) fn run<T: Send + 'static>(
        self,
        fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, BackendError>> {
        match self {
            Place::Caller(_) => Box::pin(fut),
            Place::Io => Box::pin(run_cancellable(fut)),
        }
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
