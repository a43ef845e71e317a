//! The part every server a test starts shares: a process on a free loopback
//! port of its own, in its own temp dir, started again on the same port
//! after a crash, frozen and thawed, and killed (its dir removed, its port
//! given back) when dropped. `redis.rs` and `memcached.rs` say how their
//! server is launched and talked to; this says how it is kept.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::ports::{free_port, release_port};
use super::process::{signal, wait_for_proc_state};

/// Ports tried before giving up on starting a server.
const START_ATTEMPTS: usize = 5;

/// How a launch went wrong.
pub(super) enum Launch {
    /// The server could not bind the port: try another.
    PortTaken,
    /// Anything else: give up with this message.
    Failed(String),
}

/// Starts the server on a port, in the dir given to [`Supervised::start`],
/// and returns once that very process answers.
pub(super) type Launcher = Box<dyn Fn(&Path, u16) -> Result<Child, Launch> + Send + Sync>;

/// A server process and how to start it again.
pub(super) struct Supervised {
    /// For messages: `redis-server`, `memcached`.
    name: &'static str,
    dir: PathBuf,
    port: u16,
    ready_timeout: Duration,
    launch: Launcher,
    state: Mutex<State>,
}

struct State {
    /// `None` once stopped.
    child: Option<Child>,
    paused: bool,
}

impl Supervised {
    /// Launches the server on free ports until one is not taken.
    ///
    /// # Panics
    /// If a launch fails otherwise (with its message), or if every port
    /// tried was taken.
    pub(super) fn start(
        name: &'static str,
        dir: PathBuf,
        ready_timeout: Duration,
        launch: Launcher,
    ) -> Self {
        let mut taken = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match launch(&dir, port) {
                Ok(child) => {
                    return Self {
                        name,
                        dir,
                        port,
                        ready_timeout,
                        launch,
                        state: Mutex::new(State {
                            child: Some(child),
                            paused: false,
                        }),
                    };
                }
                Err(Launch::PortTaken) => {
                    release_port(port);
                    taken.push(port);
                }
                Err(Launch::Failed(msg)) => {
                    release_port(port);
                    let _ = fs::remove_dir_all(&dir);
                    panic!("{msg}");
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start {name}: another process took each port chosen for it ({taken:?})");
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.state().child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (a paused one is).
    pub(super) fn is_running(&self) -> bool {
        match self.state().child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub(super) fn is_paused(&self) -> bool {
        self.state().paused
    }

    /// Kills it (`SIGKILL`: a crash, not a shutdown) and waits until it is
    /// gone, so that its port refuses connections. The port stays reserved
    /// for [`restart`](Self::restart). Does nothing if stopped.
    pub(super) fn stop(&self) {
        let mut state = self.state();
        if let Some(mut child) = state.child.take() {
            // SIGKILL also ends a stopped (paused) process.
            let _ = child.kill();
            let _ = child.wait();
        }
        state.paused = false;
    }

    /// Starts a fresh server on the same port (killing the running one
    /// first, if any).
    ///
    /// # Panics
    /// If it does not come up within the ready timeout, for instance
    /// because another process took the port while it was stopped.
    pub(super) fn restart(&self) {
        self.stop();
        let mut state = self.state();
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            match (self.launch)(&self.dir, self.port) {
                Ok(child) => {
                    state.child = Some(child);
                    return;
                }
                // A client socket may hold the port for a moment; the port
                // is part of the URL the test handed out, so wait rather
                // than move.
                Err(Launch::PortTaken) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100))
                }
                Err(Launch::PortTaken) => panic!(
                    "could not restart {}: another process has held port {} for {:?}",
                    self.name, self.port, self.ready_timeout
                ),
                Err(Launch::Failed(msg)) => panic!("{msg}"),
            }
        }
    }

    /// Freezes it (`SIGSTOP`): the kernel still accepts connections, but
    /// nothing answers until [`resume`](Self::resume), as with a hung or
    /// partitioned server.
    ///
    /// # Panics
    /// If it is not running.
    pub(super) fn pause(&self) {
        let mut state = self.state();
        let pid = self.live_pid(&mut state, "pause");
        if !state.paused {
            signal(pid, libc::SIGSTOP);
            wait_for_proc_state(pid, true);
            state.paused = true;
        }
    }

    /// Undoes [`pause`](Self::pause) (`SIGCONT`).
    ///
    /// # Panics
    /// If it is not running.
    pub(super) fn resume(&self) {
        let mut state = self.state();
        let pid = self.live_pid(&mut state, "resume");
        if state.paused {
            signal(pid, libc::SIGCONT);
            wait_for_proc_state(pid, false);
            state.paused = false;
        }
    }

    fn live_pid(&self, state: &mut State, what: &str) -> u32 {
        if let Some(child) = state.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return child.id();
        }
        panic!(
            "cannot {what} {} on port {}: it is not running",
            self.name, self.port
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // server from Drop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Kills the process, before its owner prints the tail of its log.
    pub(super) fn kill(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut child) = state.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
        release_port(self.port);
    }
}
