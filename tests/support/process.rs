//! Processes a test starts (servers, children): spawned so that they die with
//! the test process, and signalled to stop or resume.

use std::fs;
use std::io;
use std::process::{Child, Command};
#[cfg(target_os = "linux")]
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Spawns `command` so that it is killed when this process dies, however it
/// dies: a test binary killed by a CI timeout must not leave servers or
/// children behind.
///
/// On Linux this is `PR_SET_PDEATHSIG`, which fires when the spawning
/// *thread* ends; every spawn is therefore done by one thread that lives as
/// long as the process, not by the test's thread (a server restarted from a
/// short-lived helper thread would otherwise die with it).
pub(super) fn spawn(command: Command) -> io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        type Job = (Command, mpsc::Sender<io::Result<Child>>);
        static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
        let spawner = SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            thread::Builder::new()
                .name("test-support-spawner".into())
                .spawn(move || {
                    for (mut command, reply) in rx {
                        let _ = reply.send(spawn_with_parent_death_signal(&mut command));
                    }
                })
                .expect("cannot start the test-support spawner thread");
            tx
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner
            .send((command, reply_tx))
            .map_err(|_| io::Error::other("the test-support spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| io::Error::other("the test-support spawner thread is gone"))?
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut command = command;
        command.spawn()
    }
}

#[cfg(target_os = "linux")]
fn spawn_with_parent_death_signal(command: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).expect("pid out of range");
    // SAFETY: the closure runs between fork and exec, and only makes
    // async-signal-safe calls (prctl, getppid) and builds an io::Error
    // without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Sends a signal; `libc` (a dev-dependency) rather than running `kill(1)`,
/// which minimal images lack and which costs a process per call.
pub(super) fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid out of range");
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        panic!("kill({pid}, {sig}) failed: {}", io::Error::last_os_error());
    }
}

/// Waits (briefly) until the kernel shows `pid` stopped or running, so that
/// `pause()` has taken effect when it returns. Linux only; elsewhere the
/// signal is trusted.
pub(super) fn wait_for_proc_state(pid: u32, stopped: bool) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Some(state) = proc_state(pid) else {
            return;
        };
        if matches!(state, 'T' | 't') == stopped {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "process {pid} did not become {}",
        if stopped { "stopped" } else { "running" }
    );
}

/// The state letter of process `pid` in `/proc/<pid>/stat` (`R`, `S`, `T`,
/// `Z`...), or `None` when there is no such process (or no `/proc`).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// Whether `pid` is a live process (a zombie, dead but not yet reaped, is
/// not).
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|state| state != 'Z')
}

/// Waits up to `limit` for `pid` to be gone; whether it went.
pub fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}
