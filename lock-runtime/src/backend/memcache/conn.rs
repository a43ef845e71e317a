//! Connections to one memcached server: a small pool of blocking TCP
//! streams, each exchange (one pipelined request, all its replies) bounded
//! by the command timeout. A connection that failed is dropped, never put
//! back, so the next call connects afresh; a pooled one found dead before
//! any reply (the server restarted under it) is replaced at once.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::proto::{self, BadReply, Batch, Reply};
use crate::backend::{BackendError, BackendErrorKind};

/// Idle connections kept per server; more callers at once open more, and
/// the surplus is closed when they are done.
const MAX_IDLE: usize = 16;

/// How long connecting and each exchange may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) connect: Duration,
    pub(super) command: Duration,
}

/// One server of a store, as the URL named it.
pub(super) struct Server {
    /// `host:port`, also what its rendezvous weights are made from.
    pub(super) name: String,
    pub(super) seed: u64,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why an exchange failed.
enum Failure {
    /// The connection was closed before any reply came: a pooled connection
    /// whose server went away; the request may be sent again on a new one.
    Closed(io::Error),
    Io(io::Error),
    Bad(BadReply),
}

impl Server {
    pub(super) fn new(name: String) -> Self {
        Self {
            seed: proto::hash64(name.as_bytes()),
            name,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` and reads its replies, in order.
    pub(super) fn exchange(&self, req: &Batch, t: Timeouts) -> Result<Vec<Reply>, BackendError> {
        if let Some(mut conn) = self.take_idle() {
            match conn.exchange(req, t.command) {
                Ok(replies) => {
                    self.put_back(conn);
                    return Ok(replies);
                }
                // Closed before any answer: the server went away (restarted)
                // since the connection was pooled, and a server that is back
                // never saw the request. Ask again on a new connection.
                Err(Failure::Closed(_)) => {}
                Err(other) => return Err(self.failed(other)),
            }
        }
        let mut conn = self.connect(t.connect)?;
        match conn.exchange(req, t.command) {
            Ok(replies) => {
                self.put_back(conn);
                Ok(replies)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle().pop()
    }

    fn put_back(&self, conn: Conn) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    fn connect(&self, timeout: Duration) -> Result<Conn, BackendError> {
        let fail = |e: io::Error| {
            BackendError::new(
                BackendErrorKind::Connection,
                io::Error::new(
                    e.kind(),
                    format!("memcached {}: cannot connect: {e}", self.name),
                ),
            )
        };
        // Name resolution has no timeout of its own: use addresses or names
        // the resolver answers at once (`/etc/hosts`, a local cache).
        let addrs = self.name.to_socket_addrs().map_err(fail)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    // Requests are single writes; waiting to batch them only
                    // adds latency.
                    stream.set_nodelay(true).map_err(fail)?;
                    return Ok(Conn {
                        stream,
                        buf: Vec::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(fail(last))
    }

    fn failed(&self, failure: Failure) -> BackendError {
        let name = &self.name;
        match failure {
            Failure::Io(e) | Failure::Closed(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                BackendError::new(
                    BackendErrorKind::Timeout,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("memcached {name}: no reply within the command timeout"),
                    ),
                )
            }
            Failure::Io(e) | Failure::Closed(e) => BackendError::new(
                BackendErrorKind::Connection,
                io::Error::new(e.kind(), format!("memcached {name}: {e}")),
            ),
            Failure::Bad(BadReply(what)) => BackendError::new(
                BackendErrorKind::Protocol,
                format!("memcached {name}: unexpected reply {what}"),
            ),
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

impl Conn {
    fn exchange(&mut self, req: &Batch, timeout: Duration) -> Result<Vec<Reply>, Failure> {
        // `None` for a timeout too long to add to the clock: no deadline.
        let deadline = Instant::now().checked_add(timeout);
        self.stream
            .set_write_timeout(Some(timeout))
            .map_err(Failure::Io)?;
        self.stream
            .write_all(&req.bytes)
            .map_err(|e| closed_or_io(e, true))?;
        let mut replies = Vec::with_capacity(req.replies);
        let mut chunk = [0u8; 4096];
        while replies.len() < req.replies {
            if let Some((reply, used)) = proto::parse(&self.buf).map_err(Failure::Bad)? {
                self.buf.drain(..used);
                replies.push(reply);
                continue;
            }
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(Failure::Io(io::ErrorKind::TimedOut.into()));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(Failure::Io)?;
            let nothing_yet = replies.is_empty() && self.buf.is_empty();
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(closed_or_io(
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ),
                        nothing_yet,
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(closed_or_io(e, nothing_yet)),
            }
        }
        if !self.buf.is_empty() {
            // More than was asked for: the stream is out of step.
            return Err(Failure::Bad(BadReply(format!(
                "{} bytes more than the {} replies asked for",
                self.buf.len(),
                req.replies
            ))));
        }
        Ok(replies)
    }
}

/// A connection reset or closed before any reply counts as [`Failure::Closed`].
fn closed_or_io(e: io::Error, nothing_yet: bool) -> Failure {
    let closed = matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    );
    if closed && nothing_yet {
        Failure::Closed(e)
    } else {
        Failure::Io(e)
    }
}
