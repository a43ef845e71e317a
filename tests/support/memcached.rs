//! A real `memcached` per test ([`MemcachedServer`]), private to it: a free
//! loopback port, its own temp dir, killed on drop and when the test
//! process dies, its output printed when the test fails. As root it runs as
//! the `memcache` user (Debian's package makes it) or `nobody`, since
//! memcached refuses to run as root. It never touches port 11211 or a
//! server it did not start.
//!
//! ```ignore
//! mod support;
//! use support::memcached::MemcachedServer;
//!
//! let server = MemcachedServer::start(); // panics, saying what to install, without memcached
//! // ... point the code under test at `server.url()` (`memcache://127.0.0.1:<port>`) ...
//! assert!(server.curr_items() > 0);
//! server.restart(); // an empty server on the same port
//! ```
//!
//! Set `MEMCACHED_BIN` to use a `memcached` that is not on `PATH`.

use std::collections::HashMap;
use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::files::{private_dir, read_from, tail};
use super::process::spawn;
use super::server::{Launch, Supervised};

pub const MEMCACHED_BIN_ENV: &str = "MEMCACHED_BIN";
/// How long a fresh server gets to answer.
pub const MEMCACHED_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect, read and write timeout of the harness's own commands.
const CMD_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 40;
/// Its stdout and stderr (`-v`: errors and warnings).
const OUTPUT_FILE: &str = "memcached.out";
const INSTALL_HINT: &str = "install it (Debian/Ubuntu: `apt-get install memcached`) or set \
                            MEMCACHED_BIN to the path of a memcached binary";

/// A private `memcached` on `127.0.0.1`. Every method takes `&self`, so a
/// server in an `Arc` or a static can be restarted or paused while the code
/// under test runs.
pub struct MemcachedServer {
    server: Supervised,
}

impl MemcachedServer {
    /// Starts a server and waits until that very process answers.
    ///
    /// # Panics
    /// If no `memcached` can be found (the message says what to install), or
    /// if it does not come up (the message holds its output).
    pub fn start() -> MemcachedServer {
        let bin = memcached_bin().unwrap_or_else(|msg| panic!("{msg}"));
        let ids = run_as();
        let launcher = Box::new(move |dir: &Path, port| launch(&bin, dir, port, ids));
        MemcachedServer {
            server: Supervised::start(
                "memcached",
                private_dir("memcached"),
                MEMCACHED_READY_TIMEOUT,
                launcher,
            ),
        }
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port()))
    }

    /// `127.0.0.1:<port>`, as a server of a `memcache://` URL.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `memcache://127.0.0.1:<port>`, to give to the code under test.
    pub fn url(&self) -> String {
        format!("memcache://{}", self.host_port())
    }

    /// Its private temp dir (its output file is there), removed on drop.
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// The server process's id, `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Kills it (`SIGKILL`: a crash) and waits until it is gone; the port
    /// stays reserved for [`restart`](Self::restart).
    pub fn stop(&self) {
        self.server.stop()
    }

    /// Starts a fresh, empty server on the same port (killing the running
    /// one first) and waits until it answers.
    ///
    /// # Panics
    /// If it does not come up within [`MEMCACHED_READY_TIMEOUT`].
    pub fn restart(&self) {
        self.server.restart()
    }

    /// Freezes it (`SIGSTOP`): the kernel still accepts connections, nothing
    /// answers, as with a hung server.
    ///
    /// # Panics
    /// If it is not running.
    pub fn pause(&self) {
        self.server.pause()
    }

    /// Undoes [`pause`](Self::pause).
    ///
    /// # Panics
    /// If it is not running.
    pub fn resume(&self) {
        self.server.resume()
    }

    /// Sends raw protocol text on a fresh connection and returns what came
    /// back once `done` says the reply is complete.
    ///
    /// # Panics
    /// On an I/O error or after the harness's timeout.
    pub fn raw(&self, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        exchange(self.addr(), request, done).unwrap_or_else(|e| {
            panic!(
                "`{}` to memcached on port {} failed: {e}",
                String::from_utf8_lossy(request).trim_end(),
                self.port()
            )
        })
    }

    /// `stats`, as `name -> value`.
    pub fn stats(&self) -> HashMap<String, String> {
        let reply = self.raw(b"stats\r\n", |r| r.ends_with(b"END\r\n"));
        parse_stats(&String::from_utf8_lossy(&reply))
    }

    /// How many items it holds now (locks and fencing counters).
    pub fn curr_items(&self) -> u64 {
        self.stats()
            .get("curr_items")
            .and_then(|n| n.parse().ok())
            .expect("stats has curr_items")
    }
}

impl std::fmt::Debug for MemcachedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedServer")
            .field("port", &self.port())
            .field("pid", &self.pid())
            .finish()
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        // Killed first, so that its output is complete; `server` then
        // removes the dir and gives the port back.
        self.server.kill();
        if thread::panicking() {
            eprintln!(
                "--- memcached (port {}) output ---\n{}--- end of memcached output ---",
                self.port(),
                tail(&self.dir().join(OUTPUT_FILE), LOG_TAIL_LINES)
            );
        }
    }
}

fn launch(bin: &Path, dir: &Path, port: u16, ids: Option<(u32, u32)>) -> Result<Child, Launch> {
    let out_path = dir.join(OUTPUT_FILE);
    let out_start = fs::metadata(&out_path).map_or(0, |m| m.len());
    let output = File::options()
        .create(true)
        .append(true)
        .open(&out_path)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .map_err(|e| {
            Launch::Failed(format!(
                "cannot create memcached's output file in {}: {e}",
                dir.display()
            ))
        })?;
    let mut command = Command::new(bin);
    command
        .args(["-l", "127.0.0.1", "-p"])
        .arg(port.to_string())
        // No UDP port: it would be one more port to find free.
        .args(["-U", "0", "-m", "64", "-c", "256", "-v"])
        // It writes no files; its user may not enter the (0700) temp dir.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(output.0)
        .stderr(output.1);
    // The user is switched before exec, not by memcached's `-u`: a process
    // that changes its own user loses its parent-death signal, and would
    // outlive a test process that was killed.
    if let Some((uid, gid)) = ids {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid);
    }
    let mut child = spawn(command).map_err(|e| {
        Launch::Failed(format!(
            "cannot run memcached `{}`: {e}; {INSTALL_HINT}",
            bin.display()
        ))
    })?;
    let deadline = Instant::now() + MEMCACHED_READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                let said = read_from(&out_path, out_start);
                return Err(if said.contains("Address already in use") {
                    Launch::PortTaken
                } else {
                    Launch::Failed(format!(
                        "memcached `{}` on port {port} exited at start ({status}):\n{said}",
                        bin.display()
                    ))
                });
            }
            Err(e) => {
                return Err(Launch::Failed(format!(
                    "memcached could not be waited for: {e}"
                )));
            }
        }
        // Only our process counts: on a port taken meanwhile, another
        // server could answer.
        if serving_pid(port) == Some(child.id()) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Launch::Failed(format!(
                "memcached on port {port} did not answer within {MEMCACHED_READY_TIMEOUT:?}:\n{}",
                read_from(&out_path, out_start)
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pid of the memcached answering on `port`, if any.
fn serving_pid(port: u16) -> Option<u32> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let reply = exchange(addr, b"stats\r\n", |r| r.ends_with(b"END\r\n")).ok()?;
    parse_stats(&String::from_utf8_lossy(&reply))
        .get("pid")?
        .parse()
        .ok()
}

fn exchange(addr: SocketAddr, request: &[u8], done: impl Fn(&[u8]) -> bool) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, CMD_TIMEOUT)?;
    stream.set_read_timeout(Some(CMD_TIMEOUT))?;
    stream.set_write_timeout(Some(CMD_TIMEOUT))?;
    stream.write_all(request)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while !done(&reply) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&reply)),
            ));
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    Ok(reply)
}

fn parse_stats(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
        .collect()
}

/// The user to run as when root, which memcached refuses to run as:
/// `memcache` (Debian's package makes it), else `nobody`.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let ids = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) || f.len() < 4 {
                return None;
            }
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        })
    };
    Some(ids("memcache").or_else(|| ids("nobody")).unwrap_or_else(|| {
        panic!("running as root, and there is no `memcache` or `nobody` user to run memcached as")
    }))
}

/// `$MEMCACHED_BIN` if set, else the first `memcached` on `PATH`.
fn memcached_bin() -> Result<PathBuf, String> {
    find_memcached(env::var_os(MEMCACHED_BIN_ENV), env::var_os("PATH"))
}

fn find_memcached(explicit: Option<OsString>, path: Option<OsString>) -> Result<PathBuf, String> {
    if let Some(bin) = explicit.filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(format!(
                "{MEMCACHED_BIN_ENV}={} is not an executable file. The memcached tests start their own memcached: \
                 {INSTALL_HINT}",
                bin.display()
            ))
        };
    }
    path.iter()
        .flat_map(env::split_paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("memcached"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "memcached was not found on PATH. The memcached tests start their own memcached and cannot run \
                 without one: {INSTALL_HINT}"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
