//! A few tokio-postgres clients, each with the store's statements prepared.
//! The async callers' connection tasks run on the runtime's I/O thread, so
//! a caller's runtime may end without breaking them; sync callers have
//! connections of their own, each driven by the thread whose call it
//! serves. A
//! client whose connection is gone (server restarted, backend terminated)
//! is replaced on the next call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::sql::{Names, fnv1a};
use crate::backend::{BackendError, BackendErrorKind};

/// Clients per store: enough for a process's concurrent locks to pipeline
/// on, few enough to spare the server's connection slots.
const SLOTS: usize = 4;

/// Idle connections kept for sync callers: one per thread that locks at
/// once, up to this many; more threads open (and close) their own.
const SYNC_KEPT: usize = 8;

/// One client and its statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) acquire: Statement,
    pub(super) release: Statement,
    pub(super) extend: Statement,
    pub(super) holds: Statement,
    pub(super) clean_up: Statement,
    pub(super) holders: Statement,
}

#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Conn>>>,
    /// One connect at a time per slot, so that callers arriving while it is
    /// down wait for that connect instead of each opening one.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Conn>> {
        let mut conn = lock(&self.conn);
        if conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            *conn = None;
        }
        conn.clone()
    }
}

/// A connection of the sync callers', with the runtime that drives it.
struct Own {
    /// Always there until dropped (an `Option` so that `drop` can take it).
    rt: Option<tokio::runtime::Runtime>,
    conn: Arc<Conn>,
}

impl Own {
    /// Drives `fut` to its end on this connection's runtime.
    fn block_on<F: Future>(&self, fut: F) -> Option<F::Output> {
        Some(self.rt.as_ref()?.block_on(fut))
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        // A store may be dropped inside an async context, where dropping a
        // runtime the usual way would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub(super) struct Pool {
    /// The sync callers' idle connections (see [`Pool::blocking`]).
    own: Mutex<Vec<Own>>,
    pub(super) config: Config,
    pub(super) names: Arc<Names>,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    slots: [Slot; SLOTS],
    next: AtomicUsize,
}

impl Pool {
    pub(super) fn new(
        config: Config,
        names: Arc<Names>,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        Self {
            own: Default::default(),
            config,
            names,
            connect_timeout,
            command_timeout,
            slots: Default::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `op` on a client (connecting one if needed) within the command
    /// timeout; a client that failed with a connection error or a timeout
    /// is dropped, so that the next call connects afresh.
    ///
    /// Calls about one key go to one client, whose connection runs them in
    /// the order they were sent: the release of a dropped acquisition
    /// (sent after it) then never overtakes it.
    pub(super) async fn with<T, F, Fut>(&self, key: Option<&str>, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let slot = &self.slots[slot_of(key, &self.next)];
        let conn = match slot.live() {
            Some(c) => c,
            None => {
                let _one = slot.connecting.lock().await;
                match slot.live() {
                    Some(c) => c,
                    None => {
                        let c = self.connect().await?;
                        *lock(&slot.conn) = Some(Arc::clone(&c));
                        c
                    }
                }
            }
        };
        let outcome = within(self.command_timeout, op(Arc::clone(&conn))).await;
        let result = self.answer(outcome);
        if let Err(e) = &result
            && (e.is_connection() || e.is_timeout())
        {
            let mut held = lock(&slot.conn);
            if held.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                *held = None;
            }
        }
        result
    }

    /// A new client, its connection task on the I/O thread, the table
    /// created if missing and the statements prepared.
    async fn connect(&self) -> Result<Arc<Conn>, BackendError> {
        let (config, names, timeout) = (
            self.config.clone(),
            Arc::clone(&self.names),
            self.connect_timeout,
        );
        crate::rt::run(set_up(config, names, timeout)).await
    }

    /// Runs `op` for a sync caller. Outside any Tokio runtime, on a
    /// connection that the calling thread drives itself while it waits (no
    /// hop to another thread and back); inside one, where a thread may not
    /// block on a runtime of its own, through the I/O thread's clients.
    pub(super) fn blocking<T, F, Fut>(
        self: &Arc<Self>,
        key: Option<&str>,
        op: F,
    ) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Conn>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        if crate::rt::in_tokio() {
            let (pool, key) = (Arc::clone(self), key.map(str::to_owned));
            return crate::rt::block_on(async move { pool.with(key.as_deref(), op).await });
        }
        // Any idle connection: a thread's calls follow each other anyway,
        // and calls of several threads about one key may race, since each
        // statement is atomic and draws its fence under the row's lock.
        let idle = lock(&self.own).pop();
        let mut own = match idle {
            Some(own) => own,
            None => self.connect_own()?,
        };
        // Lets the connection task see what came in while nobody drove it
        // (the server closed it, say), so that a dead connection is
        // replaced before use rather than failing the call.
        own.block_on(tokio::task::yield_now());
        if own.conn.client.is_closed() {
            own = self.connect_own()?;
        }
        // Tokio's timer, on the connection's own runtime (made inside it:
        // a timer needs its runtime's context), where `within`'s timer
        // would wake a thread of its own for every call.
        let (limit, call) = (self.command_timeout, op(Arc::clone(&own.conn)));
        let outcome = own
            .block_on(async move { tokio::time::timeout(limit, call).await })
            .and_then(Result::ok);
        let result = self.answer(outcome);
        if !result
            .as_ref()
            .is_err_and(|e| e.is_connection() || e.is_timeout())
        {
            let mut idle = lock(&self.own);
            if idle.len() < SYNC_KEPT {
                idle.push(own);
            }
        }
        result
    }

    /// A connection for sync callers, on a runtime of its own that runs
    /// only while a caller waits on it.
    fn connect_own(&self) -> Result<Own, BackendError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Other,
                    format!("could not start a runtime for a Postgres connection: {e}"),
                )
            })?;
        let conn = rt.block_on(set_up(
            self.config.clone(),
            Arc::clone(&self.names),
            self.connect_timeout,
        ))?;
        Ok(Own { rt: Some(rt), conn })
    }

    /// An operation's outcome as the runtime's answer.
    fn answer<T>(
        &self,
        outcome: Option<Result<T, tokio_postgres::Error>>,
    ) -> Result<T, BackendError> {
        match outcome {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(error(&e)),
            None => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!(
                    "Postgres did not answer within {} ms",
                    self.command_timeout.as_millis()
                ),
            )),
        }
    }
}

/// A new client whose connection task runs on the runtime that polls this
/// (`tokio::spawn`), the table created if missing and the statements
/// prepared, within `timeout`.
async fn set_up(
    config: Config,
    names: Arc<Names>,
    timeout: Duration,
) -> Result<Arc<Conn>, BackendError> {
    let setup = async {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a Postgres lock connection ended");
            }
        });
        ensure_schema(&client, &names).await?;
        // Prepared together, so that they share one round trip: the first
        // lock of a fresh alias waits for all this.
        let sql = [
            names.acquire(),
            names.release(),
            names.extend(),
            names.holds(),
            names.clean_up(),
            names.holders(),
        ];
        let (acquire, release, extend, holds, clean_up, holders) = tokio::try_join!(
            client.prepare(&sql[0]),
            client.prepare(&sql[1]),
            client.prepare(&sql[2]),
            client.prepare(&sql[3]),
            client.prepare(&sql[4]),
            client.prepare(&sql[5]),
        )?;
        let conn = Conn {
            acquire,
            release,
            extend,
            holds,
            clean_up,
            holders,
            client,
        };
        Ok::<_, tokio_postgres::Error>(Arc::new(conn))
    };
    match tokio::time::timeout(timeout, setup).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            let e = error(&e);
            // Any failure to set up is the store being unreachable or
            // unusable, not an answer about a lock.
            Err(match e.kind() {
                BackendErrorKind::Protocol => e,
                _ => BackendError::new(
                    BackendErrorKind::Connection,
                    format!("cannot connect to Postgres: {e}"),
                ),
            })
        }
        Err(_) => Err(BackendError::new(
            BackendErrorKind::Connection,
            format!(
                "cannot connect to Postgres within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// The slot of calls about `key`: always the same one for a key, and the
/// next in turn for calls about no key.
fn slot_of(key: Option<&str>, next: &AtomicUsize) -> usize {
    let n = match key {
        Some(k) => usize::try_from(fnv1a(k.as_bytes()) % SLOTS as u64).unwrap_or(0),
        None => next.fetch_add(1, Ordering::Relaxed),
    };
    n % SLOTS
}

/// Creates the sequence and the tables unless they all exist. Several
/// processes (and several connections of one) may do it at once, and `IF
/// NOT EXISTS` alone still races on the catalog (a unique violation on
/// `pg_type`, or "already exists"): the statements run in one transaction
/// behind a transaction-scoped advisory lock on the table's name, which
/// holds no session state (PgBouncer's transaction pooling keeps it). A
/// creator without that lock (an older version) can still race: a second
/// look then finds the tables.
async fn ensure_schema(client: &Client, names: &Names) -> Result<(), tokio_postgres::Error> {
    let mut tries = 0;
    loop {
        let row = client.query_one(&names.exists(), &[]).await?;
        let all = (0..5).all(|i| row.try_get::<_, Option<String>>(i).ok().flatten().is_some());
        if all {
            return Ok(());
        }
        let key = fnv1a(format!("lock-runtime schema {}", names.table).as_bytes()) as i64;
        let mut sql = format!("BEGIN; SELECT pg_advisory_xact_lock({key});\n");
        for statement in names.schema() {
            sql.push_str(&statement);
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT;");
        let Err(e) = client.batch_execute(&sql).await else {
            return Ok(());
        };
        // Leave the failed transaction, whatever failed in it.
        let _ = client.batch_execute("ROLLBACK").await;
        let lost_race = e.code().is_some_and(|c| {
            *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::DUPLICATE_TABLE
                || *c == SqlState::DUPLICATE_OBJECT
                || *c == SqlState::DUPLICATE_COLUMN
        });
        if !lost_race || tries >= 3 {
            return Err(e);
        }
        tries += 1;
    }
}

/// `fut`'s output, or `None` once `limit` has passed. A timer that needs
/// no Tokio context: owner checks and clean-ups run wherever they are
/// called.
pub(super) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        futures_timer::Delay::new(limit).await;
        None
    })
    .await
}

/// A tokio-postgres error as the runtime's kind: unreachable or dropped
/// connections and server shutdowns are `Connection` (retry after the
/// server is back), a server-side statement timeout is `Timeout`, the rest
/// (missing privileges, a wrong table) `Protocol`.
pub(super) fn error(e: &tokio_postgres::Error) -> BackendError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::QUERY_CANCELED => BackendErrorKind::Timeout,
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => {
            BackendErrorKind::Connection
        }
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => BackendErrorKind::Connection,
        Some(_) => BackendErrorKind::Protocol,
        // A reply that does not decode as expected (a table made by hand
        // with other column types).
        None if is_decoding(e) => BackendErrorKind::Protocol,
        // No SQLSTATE: the socket, the connection being closed, or a
        // timeout of the client's.
        None => BackendErrorKind::Connection,
    };
    // tokio-postgres says only "db error" or "error communicating with
    // the server" and keeps what happened in the source.
    let detail = match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    };
    BackendError::new(kind, format!("Postgres: {detail}"))
}

/// Whether `e` is about reading a reply's columns, not about the
/// connection (tokio-postgres does not expose its error kinds).
fn is_decoding(e: &tokio_postgres::Error) -> bool {
    let text = e.to_string();
    text.starts_with("error deserializing") || text.starts_with("invalid column")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
