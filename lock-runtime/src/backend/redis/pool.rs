//! Blocking connections for sync callers: a small pool, so that concurrent
//! threads never queue behind one socket and an idle thread never holds one.
//! Each call takes a connection, uses it for one command and puts it back; a
//! connection that failed is dropped instead.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::{Client, Connection, ConnectionLike, RedisError, RedisResult};

/// Idle connections kept for reuse; more concurrent callers get fresh ones
/// that are closed when they finish.
const MAX_IDLE: usize = 16;

pub(crate) struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        Self {
            client,
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            command_timeout,
        }
    }

    fn connect(&self) -> RedisResult<Connection> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.command_timeout))?;
        conn.set_write_timeout(Some(self.command_timeout))?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection. If a reused connection turns out to
    /// be dead (the server restarted since it was last used), the command
    /// never reached a server, so it is retried once on a fresh connection.
    pub(crate) fn with<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let reused = lock(&self.idle).pop();
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect()?,
        };
        match f(&mut conn) {
            Ok(v) => {
                self.put_back(conn);
                Ok(v)
            }
            Err(e) if was_reused && never_sent(&e) => {
                drop(conn);
                let mut fresh = self.connect()?;
                let out = f(&mut fresh);
                if out.is_ok() || !broken(out.as_ref().err()) {
                    self.put_back(fresh);
                }
                out
            }
            Err(e) => {
                if !broken(Some(&e)) {
                    self.put_back(conn);
                }
                Err(e)
            }
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE && conn.is_open() {
            idle.push(conn);
        }
    }

    /// Closes every idle connection (after the server went away).
    pub(crate) fn clear(&self) {
        lock(&self.idle).clear();
    }
}

/// A connection reset or a broken pipe on a reused socket: the peer was gone
/// before the command was written, so nothing ran.
fn never_sent(e: &RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

/// Whether the connection is unusable after `e`: any I/O error or timeout
/// (a late reply would be read as the answer to the next command).
fn broken(e: Option<&RedisError>) -> bool {
    e.is_some_and(|e| e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
