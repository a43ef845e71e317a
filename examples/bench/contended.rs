//! Section 2: eight workers fighting over one Redis key, each holding it for
//! 1 ms, as OS threads of this process beside three references (the
//! `threads` module), as separate OS processes (this binary re-run with
//! `--worker`) and as tokio tasks of one process. Every worker logs (attempt, acquired,
//! released) on `CLOCK_MONOTONIC`; the logs are merged into one timeline to
//! get throughput, hand-off latency, waits and fairness, and Redis's own
//! counters give the commands each acquisition cost.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};
use tokio::runtime::{Builder, Runtime};

use crate::measure::{Contention, Event, Pinger, analyse, mono_ns, spin_until};
use crate::report::{Report, Target, rate, short, us};
use crate::support::RedisServer;
use crate::{ALIAS, BenchResult, counters, threads};

pub const WORKERS: usize = 8;
pub const HOLD_US: u64 = 1000;
/// The targets of the harness: without a pause, the longest wait
/// and the fairness index; with one, the hand-off in round trips and the
/// server-counted commands per acquisition.
pub const MAX_WAIT_US: f64 = 25_000.0;
pub const MIN_JAIN: f64 = 0.99;
pub const MAX_HANDOFF_RTT: f64 = 3.0;
pub const MAX_COMMANDS: f64 = 9.0;
/// How long the parent waits for the workers to connect and warm up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The start instant is set this far ahead, so that every worker is asleep
/// waiting for it when it comes.
const START_AHEAD_NS: u64 = 50_000_000;
/// How long after a run's end the workers get to finish their last turn
/// and report, before the bench calls them stuck.
const FINISH_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Workers {
    Processes,
    Tasks,
}

impl Workers {
    fn label(self) -> &'static str {
        match self {
            Workers::Processes => "processes",
            Workers::Tasks => "tasks",
        }
    }
}

/// One contended run.
#[derive(Clone, Copy)]
struct Config {
    workers: Workers,
    fair: bool,
    pause_us: u64,
    duration: Duration,
}

impl Config {
    fn mode(&self) -> &'static str {
        if self.fair { "fair" } else { "default" }
    }

    fn key(&self) -> String {
        format!(
            "contended-{}-{}-pause{}",
            self.workers.label(),
            self.mode(),
            self.pause_us
        )
    }
}

/// A run's events plus what Redis counted meanwhile.
pub struct Outcome {
    pub c: Contention,
    pub server_commands: u64,
    pub client_commands: u64,
    pub calls: HashMap<String, u64>,
}

pub fn run(server: &RedisServer, report: &mut Report, quick: bool) -> BenchResult<()> {
    let duration = Duration::from_secs(if quick { 1 } else { 5 });
    let (thread_rounds, thread_run) = if quick {
        (3, Duration::from_millis(500))
    } else {
        (5, Duration::from_secs(1))
    };
    report.heading(&format!(
        "2. Contended Redis: {WORKERS} workers, one key, {HOLD_US} us hold (busy-wait), \
         no pause and a 1 ms pause between turns"
    ));
    report.line(
        "threads and processes use acquire()/release(); \
         tasks use acquire_async()/release_async() on a multi-thread runtime",
    );
    report.line(
        "1 RTT = median PING during the run (every 5 ms, on a connection of its own); \
         ceiling = 1e6 / (measured hold + 1 RTT); \
         hand-off = release to the next acquire returning, when someone was waiting",
    );
    report.line(
        "Redis commands = total_commands_processed, which counts the commands scripts run; \
         client-issued = EVALSHA/EVAL/SCRIPT/(UN)SUBSCRIBE calls",
    );
    report.columns();
    threads::run(server, report, thread_rounds, thread_run)?;
    report.line("");
    report.line(&format!(
        "{WORKERS} processes and {WORKERS} tasks, default and fair mode, {} s per run",
        duration.as_secs()
    ));
    let exe = std::env::current_exe()?;
    let tasks_rt = Builder::new_multi_thread().enable_all().build()?;
    for workers in [Workers::Processes, Workers::Tasks] {
        for fair in [false, true] {
            for pause_us in [0, 1000] {
                let cfg = Config {
                    workers,
                    fair,
                    pause_us,
                    duration,
                };
                let pinger = Pinger::start(&server.url())?;
                let outcome = match workers {
                    Workers::Processes => run_processes(server, &exe, cfg)?,
                    Workers::Tasks => run_tasks(server, &tasks_rt, cfg, cfg.key())?,
                };
                let rtt_us = pinger.finish()?;
                if outcome.c.overlaps > 0 {
                    return Err(format!(
                        "{} holds overlapped in the {} {} run: the lock let two holders in",
                        outcome.c.overlaps,
                        workers.label(),
                        cfg.mode()
                    )
                    .into());
                }
                print_run(report, cfg, &outcome, rtt_us);
            }
        }
    }
    Ok(())
}

fn print_run(report: &mut Report, cfg: Config, o: &Outcome, rtt_us: f64) {
    let c = &o.c;
    let name = format!(
        "{} {}, pause {} ms",
        cfg.workers.label(),
        cfg.mode(),
        cfg.pause_us / 1000
    );
    report.line("");
    report.line(&format!(
        "{WORKERS} {name}: {} acquisitions in the window",
        c.acquisitions
    ));
    report.row(
        "  1 RTT during the run",
        &us(rtt_us),
        "median PING, every 5 ms on a connection of its own",
    );
    let ceiling = 1e6 / (c.hold_mean_us + rtt_us);
    let ratio = c.per_second / ceiling;
    let per_acq = |n: u64| n as f64 / c.total_acquisitions as f64;
    let (server_per_acq, client_per_acq) = (per_acq(o.server_commands), per_acq(o.client_commands));
    // Which targets apply (the harness): without a pause the line
    // is always full, so the longest wait and fairness; with one every
    // turn starts with someone waiting, so the hand-off and the commands.
    let paused = cfg.pause_us > 0;

    let throughput = (
        "  acquisitions/s",
        rate(c.per_second),
        format!("ceiling {}; {} x ceiling", rate(ceiling), short(ratio)),
    );
    report.row(throughput.0, &throughput.1, &throughput.2);

    let handoff = (
        "  hand-off p50",
        us(c.handoff_p50_us),
        format!(
            "p99 {}, max {}; {} hand-offs",
            us(c.handoff_p99_us),
            us(c.handoff_max_us),
            c.handoffs
        ),
    );
    if paused {
        let bound = MAX_HANDOFF_RTT * rtt_us;
        report.judged(
            handoff.0,
            &handoff.1,
            &handoff.2,
            Target::at_most(
                format!("{name}: hand-off p50 (us)"),
                c.handoff_p50_us,
                bound,
                format!("<= {MAX_HANDOFF_RTT} RTT = {}", us(bound)),
            ),
        );
    } else {
        report.row(handoff.0, &handoff.1, &handoff.2);
    }

    let wait = ("  longest wait", us(c.longest_wait_us));
    if paused {
        report.row(wait.0, &wait.1, "");
    } else {
        report.judged(
            wait.0,
            &wait.1,
            "",
            Target::at_most(
                format!("{name}: longest wait (us)"),
                c.longest_wait_us,
                MAX_WAIT_US,
                format!("<= {}", us(MAX_WAIT_US)),
            ),
        );
    }

    let fairness = (
        "  fairness (Jain)",
        format!("{:.4}", c.fairness),
        format!("per worker {:?}", c.per_worker),
    );
    if paused {
        report.row(fairness.0, &fairness.1, &fairness.2);
    } else {
        report.judged(
            fairness.0,
            &fairness.1,
            &fairness.2,
            Target::at_least(
                format!("{name}: fairness index"),
                c.fairness,
                MIN_JAIN,
                format!(">= {MIN_JAIN}"),
            ),
        );
    }

    let commands = (
        "  Redis commands / acquisition",
        short(server_per_acq),
        format!("client-issued {}", short(client_per_acq)),
    );
    if paused {
        report.judged(
            commands.0,
            &commands.1,
            &commands.2,
            Target::at_most(
                format!("{name}: Redis commands / acquisition"),
                server_per_acq,
                MAX_COMMANDS,
                format!("<= {MAX_COMMANDS}"),
            ),
        );
    } else {
        report.row(commands.0, &commands.1, &commands.2);
    }
    report.row("  hold, measured mean", &us(c.hold_mean_us), "busy-wait");

    let key = format!("contended.{}", json_key(cfg));
    let j = &mut report.json;
    j.put(&format!("{key}.acquisitions"), c.acquisitions);
    j.put(&format!("{key}.acquisitions_per_s"), c.per_second);
    j.put(&format!("{key}.rtt_us"), rtt_us);
    j.put(&format!("{key}.ceiling_per_s"), ceiling);
    j.put(&format!("{key}.ratio_to_ceiling"), ratio);
    j.put(&format!("{key}.handoffs"), c.handoffs);
    j.put(&format!("{key}.handoff_p50_us"), c.handoff_p50_us);
    j.put(&format!("{key}.handoff_p99_us"), c.handoff_p99_us);
    j.put(&format!("{key}.handoff_max_us"), c.handoff_max_us);
    j.put(&format!("{key}.longest_wait_us"), c.longest_wait_us);
    j.put(&format!("{key}.fairness"), c.fairness);
    j.put(&format!("{key}.server_commands_per_acq"), server_per_acq);
    j.put(&format!("{key}.client_commands_per_acq"), client_per_acq);
    j.put(&format!("{key}.hold_mean_us"), c.hold_mean_us);
    let mut calls: Vec<_> = o.calls.iter().collect();
    calls.sort();
    for (cmd, n) in calls {
        j.put(&format!("{key}.calls_per_acq.{cmd}"), per_acq(*n));
    }
}

fn json_key(cfg: Config) -> String {
    format!(
        "{}_{}_pause{}ms",
        cfg.workers.label(),
        cfg.mode(),
        cfg.pause_us / 1000
    )
}

/// Reads Redis's counters after a run (they were reset before it).
pub fn outcome(server: &RedisServer, c: Contention) -> BenchResult<Outcome> {
    let (server_commands, calls) = counters::since_reset(server)?;
    let client_commands = calls
        .iter()
        .filter(|(cmd, _)| is_client_issued(cmd))
        .map(|(_, n)| n)
        .sum();
    Ok(Outcome {
        c,
        server_commands,
        client_commands,
        calls,
    })
}

/// Commands a lock client sends itself. Redis counts the commands scripts
/// run in the same tables, so this is all a client-side count can be told
/// apart by: the script calls and the subscriber's commands.
fn is_client_issued(cmd: &str) -> bool {
    cmd.starts_with("eval") || cmd.starts_with("script") || cmd.ends_with("subscribe")
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A worker process, and the thread that reads its stdout (so a worker never
/// blocks on a full pipe while the parent waits for another).
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    reader: JoinHandle<Result<Vec<Event>, String>>,
}

fn run_processes(server: &RedisServer, exe: &std::path::Path, cfg: Config) -> BenchResult<Outcome> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut procs = Vec::with_capacity(WORKERS);
    for id in 0..WORKERS {
        let mut command = Command::new(exe);
        command
            .arg("--worker")
            .arg(server.url())
            .arg(cfg.key())
            .arg(if cfg.fair { "1" } else { "0" })
            .arg(HOLD_US.to_string())
            .arg(cfg.pause_us.to_string())
            .arg(id.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().ok_or("worker has no stdin")?;
        let stdout = child.stdout.take().ok_or("worker has no stdout")?;
        let ready = ready_tx.clone();
        let reader = thread::spawn(move || read_worker(id as u32, stdout, ready));
        procs.push(WorkerProcess {
            child,
            stdin,
            reader,
        });
    }
    drop(ready_tx);
    for _ in 0..WORKERS {
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => return Err(worker_failure(procs, "failed while starting")),
            Err(_) => return Err(worker_failure(procs, "did not get ready in time")),
        }
    }
    // Every worker has connected and warmed up: from here on, Redis counts
    // only the run.
    counters::reset(server)?;
    let start = mono_ns() + START_AHEAD_NS;
    let end = start + cfg.duration.as_nanos() as u64;
    for p in &mut procs {
        writeln!(p.stdin, "go {start} {end}")?;
        p.stdin.flush()?;
    }
    // A worker stuck in `acquire` would hang the bench: give up on them all
    // a while after the run should have ended.
    let deadline = Instant::now() + cfg.duration + FINISH_GRACE;
    let mut statuses = Vec::with_capacity(WORKERS);
    for p in &mut procs {
        loop {
            if let Some(status) = p.child.try_wait()? {
                statuses.push(status);
                break;
            }
            if Instant::now() >= deadline {
                return Err(worker_failure(
                    procs,
                    &format!("were still running {FINISH_GRACE:?} after the run ended"),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    let mut events = Vec::new();
    let mut failed = None;
    for (mut p, status) in procs.into_iter().zip(statuses) {
        let read = p.reader.join().map_err(|_| "a worker reader panicked")?;
        let mut err = String::new();
        if let Some(mut e) = p.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        match (status.success(), read) {
            (true, Ok(mut ev)) => events.append(&mut ev),
            (_, read) => {
                let why = read.err().unwrap_or_default();
                failed.get_or_insert(format!("a worker failed ({status}): {why}\n{}", err.trim()));
            }
        }
    }
    if let Some(f) = failed {
        return Err(f.into());
    }
    outcome(server, analyse(events, WORKERS, start, end))
}

/// Makes the kernel kill a worker when the bench dies (Ctrl-C, a panic), so
/// none outlives it. The signal follows the thread that spawned the child:
/// the main thread, which lives as long as the bench.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Kills the workers and explains why, with what they wrote to stderr.
fn worker_failure(
    procs: Vec<WorkerProcess>,
    what: &str,
) -> Box<dyn std::error::Error + Send + Sync> {
    let mut msg = format!("the worker processes {what}");
    for mut p in procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
        let mut err = String::new();
        if let Some(mut e) = p.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        if !err.trim().is_empty() {
            msg.push_str(&format!("\n  worker: {}", err.trim()));
        }
    }
    msg.into()
}

/// Collects a worker's events, saying on `ready` whether it got ready (or
/// ended first, so the parent need not wait out the timeout).
fn read_worker(
    id: u32,
    stdout: std::process::ChildStdout,
    ready: mpsc::Sender<bool>,
) -> Result<Vec<Event>, String> {
    let mut said_ready = false;
    let read = read_events(id, stdout, || {
        said_ready = true;
        let _ = ready.send(true);
    });
    if !said_ready {
        let _ = ready.send(false);
    }
    read
}

fn read_events(
    id: u32,
    stdout: std::process::ChildStdout,
    mut on_ready: impl FnMut(),
) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut done = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("ready") => on_ready(),
            Some("ev") => {
                let mut t = fields.map(|f| f.parse::<u64>());
                match (t.next(), t.next(), t.next()) {
                    (Some(Ok(attempt)), Some(Ok(acquired)), Some(Ok(released))) => {
                        events.push(Event {
                            worker: id,
                            attempt,
                            acquired,
                            released,
                        })
                    }
                    _ => return Err(format!("bad event line from worker {id}: {line}")),
                }
            }
            Some("done") => done = true,
            _ => return Err(format!("unexpected line from worker {id}: {line}")),
        }
    }
    if done {
        Ok(events)
    } else {
        Err(format!("worker {id} ended without reporting its events"))
    }
}

/// The body of a worker process: `--worker URL KEY FAIR HOLD_US PAUSE_US ID`.
/// It warms up, says `ready`, waits for `go START END` on stdin, contends
/// until END, then prints its events.
pub fn worker(args: &[String]) -> BenchResult<()> {
    let [url, key, fair, hold_us, pause_us, id] = args else {
        return Err("usage: bench --worker URL KEY FAIR HOLD_US PAUSE_US ID".into());
    };
    let fair = fair == "1";
    let hold_ns = hold_us.parse::<u64>()? * 1000;
    let pause = Duration::from_micros(pause_us.parse()?);
    registry::add(ALIAS, AliasConfig::from_url(url)?)?;
    // Connect and load the scripts on a key of our own before the parent
    // resets Redis's counters.
    Lock::new(format!("warm-up-{id}"))
        .alias(ALIAS)
        .fair(fair)
        .acquire()?
        .release()?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    writeln!(out, "ready")?;
    out.flush()?;

    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let (start, end) = match go.split_ascii_whitespace().collect::<Vec<_>>()[..] {
        ["go", start, end] => (start.parse::<u64>()?, end.parse::<u64>()?),
        _ => return Err(format!("expected `go START END`, got {go:?}").into()),
    };
    sleep_until(start);

    let lock = Lock::new(key.clone()).alias(ALIAS).fair(fair);
    let mut events = Vec::new();
    while mono_ns() < end {
        let attempt = mono_ns();
        let guard = lock.acquire()?;
        let acquired = mono_ns();
        spin_until(acquired + hold_ns);
        let released = mono_ns();
        guard.release()?;
        events.push((attempt, acquired, released));
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    for (attempt, acquired, released) in events {
        writeln!(out, "ev {attempt} {acquired} {released}")?;
    }
    writeln!(out, "done")?;
    out.flush()?;
    Ok(())
}

/// Sleeps to just before `deadline`, then spins to it, so that all
/// workers start within microseconds of each other.
fn sleep_until(deadline: u64) {
    let now = mono_ns();
    if deadline > now + 2_000_000 {
        thread::sleep(Duration::from_nanos(deadline - now - 2_000_000));
    }
    spin_until(deadline);
}

// ---------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------

/// [`WORKERS`] tasks in default mode on `key`: the threads mode's
/// async side.
pub fn tasks_default(
    server: &RedisServer,
    rt: &Runtime,
    key: &str,
    pause: Duration,
    duration: Duration,
) -> BenchResult<Outcome> {
    let cfg = Config {
        workers: Workers::Tasks,
        fair: false,
        pause_us: pause.as_micros() as u64,
        duration,
    };
    run_tasks(server, rt, cfg, key.to_owned())
}

fn run_tasks(server: &RedisServer, rt: &Runtime, cfg: Config, key: String) -> BenchResult<Outcome> {
    // Open this runtime's connection and load the scripts before the reset.
    let warm_up = Lock::new("warm-up-tasks").alias(ALIAS).fair(cfg.fair);
    rt.block_on(async move { warm_up.acquire_async().await?.release_async().await })?;
    counters::reset(server)?;
    let start = mono_ns() + START_AHEAD_NS;
    let end = start + cfg.duration.as_nanos() as u64;
    let tasks: Vec<_> = (0..WORKERS as u32)
        .map(|id| rt.spawn(task(id, cfg, key.clone(), start, end)))
        .collect();
    let events = rt.block_on(async {
        let all = async {
            let mut events = Vec::new();
            for t in tasks {
                events.append(&mut t.await??);
            }
            BenchResult::Ok(events)
        };
        tokio::time::timeout(cfg.duration + FINISH_GRACE, all)
            .await
            .map_err(|_| {
                format!("the tasks were still running {FINISH_GRACE:?} after the run ended")
            })?
    })?;
    outcome(server, analyse(events, WORKERS, start, end))
}

async fn task(id: u32, cfg: Config, key: String, start: u64, end: u64) -> BenchResult<Vec<Event>> {
    tokio::time::sleep(Duration::from_nanos(start.saturating_sub(mono_ns()))).await;
    let lock = Lock::new(key).alias(ALIAS).fair(cfg.fair);
    let pause = Duration::from_micros(cfg.pause_us);
    let mut events = Vec::new();
    while mono_ns() < end {
        let attempt = mono_ns();
        let guard = lock.acquire_async().await?;
        let acquired = mono_ns();
        // A CPU-bound critical section: it keeps its worker thread busy, as
        // real work under a lock would.
        spin_until(acquired + HOLD_US * 1000);
        let released = mono_ns();
        guard.release_async().await?;
        events.push(Event {
            worker: id,
            attempt,
            acquired,
            released,
        });
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(events)
}
