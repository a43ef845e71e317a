//! Async I/O. Inside a Tokio runtime, async calls use a connection driven by
//! that runtime (one per runtime per store), so a request and its reply
//! never cross threads, and a release that must not overtake a request in
//! flight follows it on the same connection. Elsewhere (another executor,
//! or no runtime at all) they are handed to the runtime's I/O thread, a
//! single-threaded Tokio runtime that also runs the sync waiters' pub/sub
//! subscriber, so the store works from any executor and never depends on
//! the caller's timers there. [`Place::here`] makes that choice.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::runtime::Handle;

use crate::backend::{BackendError, BoxFuture};

pub(crate) use crate::rt::{block_on, caller_runtime, handle, run, run_cancellable, spawn};

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
        // Connecting is rare and its future large: boxed apart, it does not
        // weigh on every caller's future (a waiting task keeps its future).
        Box::pin(self.connect(id)).await
    }

    async fn connect(&self, id: tokio::runtime::Id) -> RedisResult<MultiplexedConnection> {
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
