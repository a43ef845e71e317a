//! A real `redis-server` per test, private to it (a free loopback port, its
//! own temp dir, killed on drop), and a tiny RESP client to look at what the
//! server holds.
//!
//! # Use
//!
//! ```ignore
//! mod support;
//! use support::RedisServer;
//!
//! #[test]
//! fn a_lock_is_a_key_with_a_lease() {
//!     let server = RedisServer::start(); // panics, saying what to install, without redis-server
//!     // ... point the code under test at `server.url()` ...
//!     assert!(server.pttl("lock:invoice-7") > 0);
//!     server.stop(); // the port now refuses connections
//!     server.restart(); // an empty server on the same port
//! }
//! ```
//!
//! If the test fails, the last lines of the server's log are printed with
//! its output. Set `REDIS_SERVER_BIN` to use a `redis-server` that is not on
//! `PATH`.

use std::collections::HashMap;
use std::env;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::files::{private_dir, read_from, tail};
use super::process::spawn;
use super::server::{Launch, Supervised};

pub const REDIS_SERVER_BIN_ENV: &str = "REDIS_SERVER_BIN";
/// How long a fresh server gets to answer `PING`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect, read and write timeout of [`RedisServer::cmd`].
pub const CMD_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the server's log shown when a test fails.
const LOG_TAIL_LINES: usize = 50;
/// The server's log, inside its temp dir.
const LOG_FILE: &str = "redis.log";
/// Its stdout and stderr, where errors land before the log file is open.
const OUTPUT_FILE: &str = "redis.out";
const INSTALL_HINT: &str = "install it (Debian/Ubuntu: `apt-get install redis-server`) or set \
                            REDIS_SERVER_BIN to the path of a redis-server binary";

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A `redis-server` started for one test, on `127.0.0.1` and a port of its
/// own, with no persistence, in a temp dir that goes away with it.
///
/// Every method takes `&self`, so a server in an `Arc` can be stopped or
/// paused from another thread while the code under test runs.
pub struct RedisServer {
    server: Supervised,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING` (at most
    /// [`READY_TIMEOUT`]).
    ///
    /// # Panics
    /// If no `redis-server` can be found (the message says what to install),
    /// or if it does not come up; the message then holds its log.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with more `redis-server` arguments (a
    /// TLS port, say). The plain port stays open for the harness's own
    /// commands. The arguments are given again on every restart.
    pub fn start_with(extra: &[String]) -> RedisServer {
        let bin = redis_server_bin().unwrap_or_else(|msg| panic!("{msg}"));
        let extra = extra.to_vec();
        let launcher = Box::new(move |dir: &Path, port| {
            launch(&bin, dir, port, &extra, Instant::now() + READY_TIMEOUT)
        });
        RedisServer {
            server: Supervised::start(
                "redis-server",
                private_dir("redis"),
                READY_TIMEOUT,
                launcher,
            ),
        }
    }

    /// The port it listens on, the same across [`restart`](Self::restart)s.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port()))
    }

    /// `redis://127.0.0.1:<port>`, to give to the code under test.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// The server process's id, `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Whether the process is alive (a paused one is).
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Whether [`pause`](Self::pause) is in effect.
    pub fn is_paused(&self) -> bool {
        self.server.is_paused()
    }

    /// Kills the server (`SIGKILL`: a crash, not a shutdown) and waits for it
    /// to be gone, so that its port refuses connections. The port stays
    /// reserved for [`restart`](Self::restart). Does nothing if stopped.
    pub fn stop(&self) {
        self.server.stop()
    }

    /// Starts a fresh, empty server on the same port (killing the running
    /// one first, if any) and waits until it answers `PING`.
    ///
    /// # Panics
    /// If it does not come up within [`READY_TIMEOUT`], for instance because
    /// another process took the port while it was stopped.
    pub fn restart(&self) {
        self.server.restart()
    }

    /// Freezes the server (`SIGSTOP`): connections are still accepted by the
    /// kernel, but nothing is answered until [`resume`](Self::resume). This
    /// is how a hung or partitioned server looks to a client.
    ///
    /// # Panics
    /// If the server is not running.
    pub fn pause(&self) {
        self.server.pause()
    }

    /// Undoes [`pause`](Self::pause) (`SIGCONT`).
    ///
    /// # Panics
    /// If the server is not running.
    pub fn resume(&self) {
        self.server.resume()
    }

    /// Sends one command on a fresh connection and returns the reply; a
    /// Redis error reply is returned as [`RespValue::Error`].
    ///
    /// # Panics
    /// On an I/O error or after [`CMD_TIMEOUT`] without a reply.
    pub fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> RespValue {
        self.try_cmd(args, CMD_TIMEOUT).unwrap_or_else(|e| {
            let paused = if self.is_paused() {
                " (the server is paused)"
            } else {
                ""
            };
            panic!(
                "`{}` to redis-server on port {} failed{paused}: {e}",
                show_args(args),
                self.port()
            )
        })
    }

    /// [`cmd`](Self::cmd) that returns I/O errors and timeouts instead of
    /// panicking, with `timeout` for connecting, writing and reading each.
    pub fn try_cmd<A: AsRef<[u8]>>(&self, args: &[A], timeout: Duration) -> io::Result<RespValue> {
        resp_command(self.addr(), args, timeout)
    }

    /// `GET key`, as text.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.checked(&["GET", key]) {
            RespValue::Nil => None,
            RespValue::Bulk(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            other => panic!("unexpected reply to GET {key}: {other:?}"),
        }
    }

    /// `SET key value`.
    pub fn set(&self, key: &str, value: &str) {
        self.checked(&["SET", key, value]);
    }

    /// `PTTL key`: milliseconds left, `-1` without a lease, `-2` if absent.
    pub fn pttl(&self, key: &str) -> i64 {
        self.int(&["PTTL", key])
    }

    /// `EXISTS key`.
    pub fn exists(&self, key: &str) -> bool {
        self.int(&["EXISTS", key]) == 1
    }

    /// `KEYS pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = match self.checked(&["KEYS", pattern]) {
            RespValue::Array(items) => items
                .into_iter()
                .map(|item| item.into_string().expect("KEYS returned a non-string"))
                .collect(),
            other => panic!("unexpected reply to KEYS {pattern}: {other:?}"),
        };
        keys.sort();
        keys
    }

    /// `INFO section`, as `field -> value`.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let text = self
            .checked(&["INFO", section])
            .into_string()
            .expect("INFO returned a non-string");
        parse_info(&text)
    }

    /// `INFO stats` (`total_commands_processed`, `total_connections_received`, ...).
    pub fn info_stats(&self) -> HashMap<String, String> {
        self.info("stats")
    }

    /// How often the server ran `command` (`INFO commandstats`; a
    /// subcommand as `script|load`).
    pub fn calls(&self, command: &str) -> u64 {
        self.info("commandstats")
            .get(&format!("cmdstat_{command}"))
            .and_then(|v| v.strip_prefix("calls="))
            .and_then(|v| v.split(',').next())
            .map_or(0, |n| n.parse().expect("a count of calls"))
    }

    /// `FLUSHALL`.
    pub fn flushall(&self) {
        self.checked(&["FLUSHALL"]);
    }

    /// Where the server logs, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.server.dir().join(LOG_FILE)
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    /// [`cmd`](Self::cmd), panicking on an error reply too.
    fn checked(&self, args: &[&str]) -> RespValue {
        match self.cmd(args) {
            RespValue::Error(e) => panic!("`{}` failed: {e}", show_args(args)),
            reply => reply,
        }
    }

    fn int(&self, args: &[&str]) -> i64 {
        match self.checked(args) {
            RespValue::Int(n) => n,
            other => panic!("unexpected reply to `{}`: {other:?}", show_args(args)),
        }
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port())
            .field("pid", &self.pid())
            .field("dir", &self.server.dir())
            .finish()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Killed first, so that its log is complete; `server` then removes
        // the dir and gives the port back.
        self.server.kill();
        if thread::panicking() {
            let mut msg = format!(
                "--- last {LOG_TAIL_LINES} lines of redis-server log (port {}) ---\n{}",
                self.port(),
                self.log_tail(LOG_TAIL_LINES)
            );
            let output = tail(&self.server.dir().join(OUTPUT_FILE), LOG_TAIL_LINES);
            if !output.trim().is_empty() {
                msg.push_str(&format!("--- redis-server stdout/stderr ---\n{output}"));
            }
            eprintln!("{msg}--- end of redis-server log ---");
        }
    }
}

/// Starts `redis-server` on `port` and waits until that very process
/// answers `PING`.
fn launch(
    bin: &Path,
    dir: &Path,
    port: u16,
    extra: &[String],
    deadline: Instant,
) -> Result<Child, Launch> {
    let log = dir.join(LOG_FILE);
    // The log is appended to across attempts and restarts; only this
    // attempt's part says why it failed.
    let log_start = fs::metadata(&log).map_or(0, |m| m.len());
    let output = File::options()
        .create(true)
        .append(true)
        .open(dir.join(OUTPUT_FILE))
        .and_then(|out| Ok((out.try_clone()?, out)))
        .map_err(|e| {
            Launch::Failed(format!(
                "cannot create redis-server's output file in {}: {e}",
                dir.display()
            ))
        })?;
    let mut command = Command::new(bin);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        // No persistence: nothing is read at start or written at exit.
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args([
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--supervised",
            "no",
        ])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output.0)
        .stderr(output.1);
    let mut child = spawn(command).map_err(|e| {
        Launch::Failed(format!(
            "cannot run redis-server `{}`: {e}; {INSTALL_HINT}",
            bin.display()
        ))
    })?;
    let failed = |what: String| {
        Launch::Failed(format!(
            "redis-server `{}` on port {port} {what}\n--- its log ---\n{}--- its stdout/stderr ---\n{}",
            bin.display(),
            tail(&log, LOG_TAIL_LINES),
            tail(&dir.join(OUTPUT_FILE), LOG_TAIL_LINES),
        ))
    };
    loop {
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                let this_run = read_from(&log, log_start);
                return Err(if this_run.contains("Address already in use") {
                    Launch::PortTaken
                } else {
                    failed(format!("exited at start ({status})"))
                });
            }
            Err(e) => return Err(failed(format!("could not be waited for: {e}"))),
        }
        // Only our process counts: on a port taken meanwhile, another server
        // could answer.
        if serving_pid(port) == Some(child.id()) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "did not answer PING within {READY_TIMEOUT:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pid of the Redis server answering `PING` on `port`, if any.
fn serving_pid(port: u16) -> Option<u32> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_millis(500);
    if resp_command(addr, &["PING"], timeout).ok()? != RespValue::Simple("PONG".into()) {
        return None;
    }
    let info = resp_command(addr, &["INFO", "server"], timeout)
        .ok()?
        .into_string()?;
    parse_info(&info).get("process_id")?.parse().ok()
}

/// The `redis-server` to run: `$REDIS_SERVER_BIN` if set and not empty,
/// else the first on `PATH`.
fn redis_server_bin() -> Result<PathBuf, String> {
    find_redis_server(env::var_os(REDIS_SERVER_BIN_ENV), env::var_os("PATH"))
}

fn find_redis_server(
    explicit: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, String> {
    if let Some(bin) = explicit.filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(format!(
                "{REDIS_SERVER_BIN_ENV}={} is not an executable file. The Redis tests start their own redis-server: \
                 {INSTALL_HINT}",
                bin.display()
            ))
        };
    }
    path.iter()
        .flat_map(env::split_paths)
        // An empty entry would mean the working directory; not a place to
        // pick up a server binary from.
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "redis-server was not found on PATH. The Redis tests start their own redis-server and cannot run \
                 without one: {INSTALL_HINT}"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
        .collect()
}

fn show_args<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// RESP
// ---------------------------------------------------------------------------

/// A RESP2 reply. Hand-rolled, rather than the `redis` crate as a
/// dev-dependency: a dev-dependency's features would unify with
/// lock-runtime's and could hide one that lock-runtime forgot to enable,
/// and these few lines are all the inspection tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$3\r\nabc`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n...`
    Array(Vec<RespValue>),
}

impl RespValue {
    /// The text of a simple or bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RespValue::Simple(s) => Some(s),
            RespValue::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// [`as_str`](Self::as_str), owned.
    pub fn into_string(self) -> Option<String> {
        match self {
            RespValue::Simple(s) => Some(s),
            RespValue::Bulk(b) => String::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RespValue::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// Sends one command to the Redis server at `addr` on a fresh connection,
/// with `timeout` for connecting, writing and reading each. For a child
/// process that has the parent's address but no [`RedisServer`].
///
/// A fresh connection per command: no state survives a restart or a test
/// that left a connection half-read.
pub fn resp_command<A: AsRef<[u8]>>(
    addr: SocketAddr,
    args: &[A],
    timeout: Duration,
) -> io::Result<RespValue> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&request)?;
    read_reply(&mut BufReader::new(&stream))
}

fn read_reply(r: &mut impl BufRead) -> io::Result<RespValue> {
    let line = read_line(r)?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| invalid("empty reply line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    let number = || -> io::Result<i64> {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad number {:?}", text())))
    };
    match kind {
        b'+' => Ok(RespValue::Simple(text())),
        b'-' => Ok(RespValue::Error(text())),
        b':' => Ok(RespValue::Int(number()?)),
        b'$' => match number()? {
            -1 => Ok(RespValue::Nil),
            len => {
                let len = usize::try_from(len).map_err(|_| invalid("negative bulk length"))?;
                let mut data = vec![0; len + 2];
                r.read_exact(&mut data)?;
                if !data.ends_with(b"\r\n") {
                    return Err(invalid("bulk string without CRLF"));
                }
                data.truncate(len);
                Ok(RespValue::Bulk(data))
            }
        },
        b'*' => match number()? {
            -1 => Ok(RespValue::Nil),
            n => (0..n)
                .map(|_| read_reply(r))
                .collect::<io::Result<_>>()
                .map(RespValue::Array),
        },
        other => Err(invalid(format!(
            "unexpected reply type {:?}",
            other as char
        ))),
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-reply",
        ));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}
