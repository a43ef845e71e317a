//! Re-running one test as several child processes, and reading back what
//! each did.
//!
//! # Use
//!
//! A test can re-run itself as child processes: the parent branches on
//! [`child_role`], which is `None` in the process cargo started and the role
//! in a child. Children report back with [`report`]; [`run_children`] waits
//! for all of them and fails the test with their output if one fails.
//!
//! ```ignore
//! #[test]
//! fn one_holder_across_processes() {
//!     match support::child_role().as_deref() {
//!         Some("worker") => {
//!             let url = std::env::var("REDIS_URL").unwrap();
//!             // ... take the lock through `url`, do the work ...
//!             support::report(format!("done by child {}", support::child_index().unwrap()));
//!         }
//!         Some(other) => panic!("unknown role {other}"),
//!         None => {
//!             let server = support::RedisServer::start();
//!             let url = server.url();
//!             let children = support::run_children(
//!                 &support::test_name!(),
//!                 "worker",
//!                 4,
//!                 &[("REDIS_URL", url.as_str())],
//!             );
//!             let reports: Vec<String> = children.iter().flat_map(|c| c.reports()).collect();
//!             assert_eq!(reports.len(), 4);
//!         }
//!     }
//! }
//! ```
//!
//! For finer control (a child to kill mid-way, two roles at once), use
//! [`spawn_children`], then [`wait_children`] (fails on any failure) or
//! [`collect_children`] (returns the outcomes, for tests that expect one).

use std::env;
use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::process::spawn;

/// Tells a child process which role to play.
pub const ROLE_ENV: &str = "LOCK_TEST_ROLE";
/// Tells a child process its index among the children of its role.
pub const INDEX_ENV: &str = "LOCK_TEST_CHILD_INDEX";
/// How long [`run_children`] waits for children.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// A child prints this once it is inside the test, so that the parent can
/// tell a child that ran it from one whose `--exact` name matched nothing
/// (which libtest counts as a pass).
const ENTERED_MARKER: &str = "lock-test-child-entered";
const REPORT_PREFIX: &str = "lock-test-report: ";

/// The full name of the enclosing test function, as libtest's `--exact`
/// wants it (`module::test`): pass it to [`spawn_children`] or
/// [`run_children`] instead of spelling it out.
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::support::test_name_from_path(::std::any::type_name_of_val(&here))
    }};
}
pub(crate) use test_name;

/// `my_tests::module::test::{{closure}}::here` -> `module::test`: drops the
/// crate name, the marker fn and the closures an `async fn` test's body
/// (`#[tokio::test]`) adds.
pub fn test_name_from_path(path: &str) -> String {
    let segments: Vec<&str> = path.split("::").collect();
    let inner = segments
        .get(1..segments.len().saturating_sub(1))
        .unwrap_or_default();
    inner
        .iter()
        .filter(|s| !s.starts_with('{'))
        .copied()
        .collect::<Vec<_>>()
        .join("::")
}

/// The role this process plays: `None` in the process cargo started, the
/// role given to [`spawn_children`] in a child.
pub fn child_role() -> Option<String> {
    let role = env::var(ROLE_ENV).ok()?;
    println!("\n{ENTERED_MARKER}");
    Some(role)
}

/// This child's index among the children of its role (`0..n`), `None` in
/// the parent.
pub fn child_index() -> Option<usize> {
    env::var(INDEX_ENV).ok()?.parse().ok()
}

/// Reports a line back to the parent, which reads it with
/// [`ChildOutput::reports`].
pub fn report(line: impl fmt::Display) {
    let line = line.to_string();
    assert!(!line.contains('\n'), "a report is one line: {line:?}");
    let mut out = io::stdout().lock();
    // The leading newline keeps libtest's `test name ... ` off the line.
    let _ = writeln!(out, "\n{REPORT_PREFIX}{line}");
    let _ = out.flush();
}

/// A child process started by [`spawn_children`].
#[derive(Debug)]
pub struct TestChild {
    /// The role it was given.
    pub role: String,
    /// Its index among the children of that role.
    pub index: usize,
    /// The process; stdout and stderr are piped for [`collect_children`].
    pub child: Child,
}

/// Re-runs the current test binary as `n` child processes that run only
/// `test_name` (use [`test_name!`]), with [`ROLE_ENV`] set to `role`,
/// [`INDEX_ENV`] to `0..n` and `envs` added. Start them all before waiting,
/// so that they run at the same time.
///
/// # Panics
/// When called in a child (a child spawning children would recurse), or if
/// a child cannot be started.
pub fn spawn_children(
    test_name: &str,
    role: &str,
    n: usize,
    envs: &[(&str, &str)],
) -> Vec<TestChild> {
    assert!(
        env::var_os(ROLE_ENV).is_none(),
        "spawn_children called in a child process (role {:?}): branch on support::child_role() first",
        env::var(ROLE_ENV).unwrap_or_default()
    );
    let exe = env::current_exe().expect("cannot find the current test binary");
    (0..n)
        .map(|index| {
            let mut command = Command::new(&exe);
            command
                .args([
                    "--exact",
                    test_name,
                    "--nocapture",
                    "--test-threads=1",
                    "--include-ignored",
                ])
                .env(ROLE_ENV, role)
                .env(INDEX_ENV, index.to_string())
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let child = spawn(command).unwrap_or_else(|e| {
                panic!(
                    "cannot start child {index} ({role}) of {}: {e}",
                    exe.display()
                )
            });
            TestChild {
                role: role.to_owned(),
                index,
                child,
            }
        })
        .collect()
}

/// What a child did.
#[derive(Debug)]
pub struct ChildOutput {
    /// The role it was given.
    pub role: String,
    /// Its index among the children of that role.
    pub index: usize,
    /// How it ended (killed, if it timed out).
    pub status: ExitStatus,
    /// Whether it was killed for running past the timeout.
    pub timed_out: bool,
    /// All it printed (libtest's lines and the test's own).
    pub stdout: String,
    /// All it printed to stderr (a panic message, for one).
    pub stderr: String,
}

impl ChildOutput {
    /// Whether the child ran the test and passed it in time.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out && self.entered_test()
    }

    /// Whether the child got as far as asking for its role.
    pub fn entered_test(&self) -> bool {
        self.stdout
            .lines()
            .any(|line| line.contains(ENTERED_MARKER))
    }

    /// The lines it sent with [`report`], in order.
    pub fn reports(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|line| {
                line.find(REPORT_PREFIX)
                    .map(|at| line[at + REPORT_PREFIX.len()..].to_owned())
            })
            .collect()
    }
}

impl fmt::Display for ChildOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.timed_out {
            "was killed after the timeout".to_owned()
        } else if !self.entered_test() && self.status.success() {
            format!(
                "never entered the test ({ROLE_ENV} unread: wrong test name? use support::test_name!())"
            )
        } else {
            format!("ended with {}", self.status)
        };
        write!(
            f,
            "child {} ({}) {how}\n--- its stderr ---\n{}--- its stdout ---\n{}--- end of child {} ---",
            self.index, self.role, self.stderr, self.stdout, self.index
        )
    }
}

/// Waits for every child, at most `timeout` in all, killing those still
/// running then; never fails on a child's failure, for tests that expect
/// one. Outputs are in the order of `children`.
pub fn collect_children(children: Vec<TestChild>, timeout: Duration) -> Vec<ChildOutput> {
    let deadline = Instant::now() + timeout;
    // Pipes are drained while waiting: a child that fills one would
    // otherwise block forever.
    let mut running: Vec<_> = children
        .into_iter()
        .map(|mut c| {
            let stdout = drain(c.child.stdout.take());
            let stderr = drain(c.child.stderr.take());
            (c, stdout, stderr, None::<(ExitStatus, bool)>)
        })
        .collect();
    loop {
        let mut all_done = true;
        for (c, _, _, end) in &mut running {
            if end.is_none() {
                match c.child.try_wait() {
                    Ok(Some(status)) => *end = Some((status, false)),
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = c.child.kill();
                        let status = c.child.wait().expect("cannot wait for a killed child");
                        *end = Some((status, true));
                    }
                    Ok(None) => all_done = false,
                    Err(e) => panic!("cannot wait for child {} ({}): {e}", c.index, c.role),
                }
            }
        }
        if all_done {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    running
        .into_iter()
        .map(|(c, stdout, stderr, end)| {
            let (status, timed_out) = end.expect("every child has ended");
            ChildOutput {
                role: c.role,
                index: c.index,
                status,
                timed_out,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
            }
        })
        .collect()
}

/// [`collect_children`], then fails the test if any child failed, timed
/// out or never ran the test, showing what each of those printed.
pub fn wait_children(children: Vec<TestChild>, timeout: Duration) -> Vec<ChildOutput> {
    let outputs = collect_children(children, timeout);
    let failed: Vec<String> = outputs
        .iter()
        .filter(|o| !o.success())
        .map(ToString::to_string)
        .collect();
    if !failed.is_empty() {
        panic!(
            "{} of {} children failed:\n{}",
            failed.len(),
            outputs.len(),
            failed.join("\n")
        );
    }
    outputs
}

/// [`spawn_children`] then [`wait_children`] with [`CHILD_TIMEOUT`].
pub fn run_children(
    test_name: &str,
    role: &str,
    n: usize,
    envs: &[(&str, &str)],
) -> Vec<ChildOutput> {
    wait_children(spawn_children(test_name, role, n, envs), CHILD_TIMEOUT)
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
