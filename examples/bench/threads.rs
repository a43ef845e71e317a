//! Section 2's `threads` mode: eight OS threads of this process contend for
//! one Redis key through the sync API, each thread with a connection of its
//! own, and the same eight threads run three references with the same hold
//! and pauses: raw polling (`SET NX PX`, 1 ms sleep, retry), the BLPOP
//! signal scheme python-redis-lock uses, and rslock; and eight tasks of
//! ours, async, to set the async API against the sync one. All but rslock
//! run interleaved in short rounds; figures are medians over the rounds.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use lock_runtime::{Lock, LockGuard};
use tokio::runtime::{Builder, Runtime};

use crate::contended::{
    HOLD_US, MAX_COMMANDS, MAX_HANDOFF_RTT, MAX_WAIT_US, MIN_JAIN, Outcome, WORKERS, outcome,
    tasks_default,
};
use crate::measure::{Event, Interleaved, Pinger, analyse, median, mono_ns, spin_until};
use crate::report::{Report, Target, rate, short, us};
use crate::support::RedisServer;
use crate::{ALIAS, BenchResult, counters};

/// Ours at least this share of the polling reference without a pause.
const MIN_TO_POLLING: f64 = 0.97;
/// The references' lease, as the harness gave them.
const LEASE_MS: u64 = 30_000;
/// How long a BLPOP waiter blocks before it looks at the lock again on its
/// own: only a lost signal makes it wait that long.
const BLPOP_TIMEOUT_S: f64 = 1.0;
/// The signal list outlives a release by this much, so a waiter that asks
/// just after the release still finds it.
const SIGNAL_EXPIRE_MS: u64 = 1000;
const COMPARE_AND_DELETE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) end return 0";
/// Deletes the lock if owned, then leaves one signal for one waiter.
const SIGNAL_RELEASE: &str = "if redis.call('get',KEYS[1])==ARGV[1] then \
     redis.call('del',KEYS[1]) redis.call('del',KEYS[2]) redis.call('rpush',KEYS[2],1) \
     redis.call('pexpire',KEYS[2],ARGV[2]) return 1 end return 0";

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Polling,
    Blpop,
    Ours,
    Tasks,
    Rslock,
}

impl Side {
    const INTERLEAVED: [Side; 4] = [Side::Polling, Side::Blpop, Side::Ours, Side::Tasks];

    fn label(self) -> &'static str {
        match self {
            Side::Polling => "polling",
            Side::Blpop => "blpop",
            Side::Ours => "ours",
            Side::Tasks => "tasks",
            Side::Rslock => "rslock",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Side::Polling => "ref: SET NX PX, 1 ms sleep",
            Side::Blpop => "ref: SET NX PX + BLPOP signal",
            Side::Ours => "ours: acquire()/release()",
            Side::Tasks => "ours, 8 tasks: acquire_async()",
            Side::Rslock => "rslock, a runtime per thread",
        }
    }
}

/// One thread's way of taking and giving back the lock.
trait Contender {
    fn acquire(&mut self) -> BenchResult<()>;
    fn release(&mut self) -> BenchResult<()>;
}

struct Ours {
    lock: Lock,
    guard: Option<LockGuard>,
}

impl Contender for Ours {
    fn acquire(&mut self) -> BenchResult<()> {
        self.guard = Some(self.lock.acquire()?);
        Ok(())
    }

    fn release(&mut self) -> BenchResult<()> {
        match self.guard.take() {
            Some(g) => Ok(g.release()?),
            None => Err("released a lock not held".into()),
        }
    }
}

/// The raw references' shared state: a connection, the key, this
/// acquisition's token.
struct Raw {
    conn: redis::Connection,
    key: String,
    signal: String,
    sha: String,
    id: u32,
    turn: u64,
    token: String,
    blpop: bool,
}

impl Raw {
    fn new(url: &str, key: &str, id: u32, blpop: bool) -> BenchResult<Self> {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let script = if blpop {
            SIGNAL_RELEASE
        } else {
            COMPARE_AND_DELETE
        };
        let sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script)
            .query(&mut conn)?;
        Ok(Raw {
            conn,
            key: key.to_owned(),
            signal: format!("{key}:signal"),
            sha,
            id,
            turn: 0,
            token: String::new(),
            blpop,
        })
    }

    fn try_set(&mut self) -> BenchResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_MS)
            .query(&mut self.conn)?;
        Ok(set.is_some())
    }
}

impl Contender for Raw {
    fn acquire(&mut self) -> BenchResult<()> {
        self.turn += 1;
        self.token = format!("ref-{:02}-{:015}", self.id, self.turn);
        while !self.try_set()? {
            if self.blpop {
                redis::cmd("BLPOP")
                    .arg(&self.signal)
                    .arg(BLPOP_TIMEOUT_S)
                    .query::<Option<(String, String)>>(&mut self.conn)?;
            } else {
                thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn release(&mut self) -> BenchResult<()> {
        let mut cmd = redis::cmd("EVALSHA");
        if self.blpop {
            cmd.arg(&self.sha)
                .arg(2)
                .arg(&self.key)
                .arg(&self.signal)
                .arg(&self.token)
                .arg(SIGNAL_EXPIRE_MS);
        } else {
            cmd.arg(&self.sha).arg(1).arg(&self.key).arg(&self.token);
        }
        match cmd.query::<i64>(&mut self.conn)? {
            1 => Ok(()),
            _ => Err("a reference lock was gone at its release".into()),
        }
    }
}

struct Rslock {
    rt: Runtime,
    lm: rslock::LockManager,
    key: String,
    held: Option<rslock::Lock>,
}

impl Contender for Rslock {
    fn acquire(&mut self) -> BenchResult<()> {
        let lock = self.rt.block_on(
            self.lm
                .acquire_no_guard(self.key.as_str(), Duration::from_millis(LEASE_MS)),
        );
        self.held = Some(lock.map_err(|e| format!("rslock: {e}"))?);
        Ok(())
    }

    fn release(&mut self) -> BenchResult<()> {
        let lock = self.held.take().ok_or("released an rslock lock not held")?;
        self.rt.block_on(self.lm.unlock(&lock));
        Ok(())
    }
}

fn contender(url: &str, key: &str, side: Side, id: u32) -> BenchResult<Box<dyn Contender>> {
    Ok(match side {
        Side::Polling => Box::new(Raw::new(url, key, id, false)?),
        Side::Blpop => Box::new(Raw::new(url, key, id, true)?),
        Side::Ours => {
            // Connect and load the scripts on a key of this thread's own
            // before the counters are reset.
            Lock::new(format!("warm-up-thread-{id}"))
                .alias(ALIAS)
                .acquire()?
                .release()?;
            Box::new(Ours {
                lock: Lock::new(key.to_owned()).alias(ALIAS),
                guard: None,
            })
        }
        Side::Tasks => return Err("tasks are not threads".into()),
        Side::Rslock => {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let lm = rslock::LockManager::new(vec![url.to_owned()]);
            // Its connection is made on first use: make it now.
            let warm = format!("warm-up-rslock-{id}");
            let lock = rt
                .block_on(lm.lock(warm.as_str(), Duration::from_millis(LEASE_MS)))
                .map_err(|e| format!("rslock: {e}"))?;
            rt.block_on(lm.unlock(&lock));
            Box::new(Rslock {
                rt,
                lm,
                key: key.to_owned(),
                held: None,
            })
        }
    })
}

/// One run of `side` by [`WORKERS`] threads (tasks on `rt` for
/// [`Side::Tasks`]) on a fresh key.
fn run_once(
    server: &RedisServer,
    rt: &Runtime,
    side: Side,
    key: &str,
    pause: Duration,
    duration: Duration,
) -> BenchResult<Outcome> {
    if side == Side::Tasks {
        return tasks_default(server, rt, key, pause, duration);
    }
    let url = server.url();
    let ready = Barrier::new(WORKERS + 1);
    let go = Barrier::new(WORKERS + 1);
    let start_at = AtomicU64::new(0);
    let hold_ns = HOLD_US * 1000;
    let run = |id: u32| -> BenchResult<Vec<Event>> {
        let made = contender(&url, key, side, id);
        ready.wait();
        go.wait();
        let mut c = made?;
        let start = start_at.load(Ordering::Acquire);
        let end = start + duration.as_nanos() as u64;
        spin_until(start);
        let mut events = Vec::with_capacity(4096);
        while mono_ns() < end {
            let attempt = mono_ns();
            c.acquire()?;
            let acquired = mono_ns();
            spin_until(acquired + hold_ns);
            let released = mono_ns();
            c.release()?;
            events.push(Event {
                worker: id,
                attempt,
                acquired,
                released,
            });
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
        Ok(events)
    };
    let (start, results) = thread::scope(|s| -> BenchResult<_> {
        let handles: Vec<_> = (0..WORKERS as u32)
            .map(|id| {
                let run = &run;
                s.spawn(move || run(id))
            })
            .collect();
        ready.wait();
        // Every thread has connected: from here on Redis counts the run.
        let reset = counters::reset(server);
        let start = mono_ns() + 5_000_000;
        start_at.store(start, Ordering::Release);
        go.wait();
        reset?;
        if side == Side::Blpop {
            // Once the run is over, a signal for each thread that may still
            // be blocked on a signal another consumed.
            thread::sleep(duration + Duration::from_millis(20));
            let signal = format!("{key}:signal");
            let mut args = vec!["RPUSH", signal.as_str()];
            args.extend(["1"; WORKERS]);
            server.cmd(&args);
        }
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect();
        Ok((start, results))
    })?;
    let mut events = Vec::new();
    for r in results {
        events.append(&mut r?);
    }
    let o = outcome(
        server,
        analyse(events, WORKERS, start, start + duration.as_nanos() as u64),
    )?;
    if o.c.overlaps > 0 {
        return Err(format!(
            "{} holds overlapped in the {} threads run: the lock let two holders in",
            o.c.overlaps,
            side.label()
        )
        .into());
    }
    Ok(o)
}

/// A side's runs, summed up: medians over the rounds, the worst wait.
struct Summary {
    per_second: Vec<f64>,
    handoff_p50_us: f64,
    longest_wait_us: f64,
    fairness: f64,
    commands_per_acq: f64,
}

impl Summary {
    fn of(runs: &[Outcome]) -> Self {
        let m = |f: fn(&Outcome) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let commands: u64 = runs.iter().map(|o| o.server_commands).sum();
        let acquisitions: u64 = runs.iter().map(|o| o.c.total_acquisitions).sum();
        Summary {
            per_second: runs.iter().map(|o| o.c.per_second).collect(),
            handoff_p50_us: m(|o| o.c.handoff_p50_us),
            longest_wait_us: runs
                .iter()
                .map(|o| o.c.longest_wait_us)
                .fold(f64::NAN, f64::max),
            fairness: m(|o| o.c.fairness),
            commands_per_acq: commands as f64 / acquisitions as f64,
        }
    }

    fn note(&self) -> String {
        format!(
            "hand-off p50 {}, longest wait {}, Jain {:.3}, {} cmds/acq",
            us(self.handoff_p50_us),
            us(self.longest_wait_us),
            self.fairness,
            short(self.commands_per_acq)
        )
    }
}

/// Runs the threads mode for each pause.
pub fn run(
    server: &RedisServer,
    report: &mut Report,
    rounds: usize,
    duration: Duration,
) -> BenchResult<()> {
    report.line("");
    report.line(&format!(
        "{WORKERS} threads, sync API, each thread its own connection: ours, raw polling, \
         the BLPOP scheme and {WORKERS} tasks of ours (async, multi-thread runtime) in {rounds} \
         interleaved rounds of {} ms (medians; longest wait is the worst round); rslock once, \
         for context",
        duration.as_millis()
    ));
    let tasks_rt = Builder::new_multi_thread().enable_all().build()?;
    let sides = Side::INTERLEAVED.len();
    for pause_us in [0, 1000] {
        let pause = Duration::from_micros(pause_us);
        let mut runs: Vec<Vec<Outcome>> = (0..sides).map(|_| Vec::new()).collect();
        let mut rates = Interleaved::with_sides(sides);
        let pinger = Pinger::start(&server.url())?;
        for round in 0..rounds {
            for i in Interleaved::order(round, sides) {
                let side = Side::INTERLEAVED[i];
                let key = format!("threads-{}-pause{pause_us}-{round}", side.label());
                let o = run_once(server, &tasks_rt, side, &key, pause, duration)?;
                rates.samples[i].push(o.c.per_second);
                runs[i].push(o);
            }
        }
        let rtt_us = pinger.finish()?;
        let key = format!("threads-rslock-pause{pause_us}");
        let peer = run_once(server, &tasks_rt, Side::Rslock, &key, pause, duration)?;
        let peer = Summary::of(&[peer]);
        let [poll, blpop, ours, tasks] = [0, 1, 2, 3].map(|i| Summary::of(&runs[i]));
        print(
            report,
            pause_us,
            rtt_us,
            &rates,
            [&poll, &blpop, &ours, &tasks, &peer],
        );
    }
    Ok(())
}

fn print(
    report: &mut Report,
    pause_us: u64,
    rtt_us: f64,
    rates: &Interleaved,
    [poll, blpop, ours, tasks, peer]: [&Summary; 5],
) {
    let name = format!("threads default, pause {} ms", pause_us / 1000);
    report.line("");
    report.line(&format!("{WORKERS} {name}"));
    report.row(
        "  1 RTT during the rounds",
        &us(rtt_us),
        "median PING, every 5 ms on a connection of its own",
    );
    for (side, s) in [
        (Side::Polling, poll),
        (Side::Blpop, blpop),
        (Side::Rslock, peer),
    ] {
        report.row(
            &format!("  {}", side.describe()),
            &format!("{} /s", rate(median(&s.per_second))),
            &s.note(),
        );
    }
    let (to_poll, to_blpop) = (rates.ratio(2, 0), rates.ratio(2, 1));
    let value = format!("{} /s", rate(median(&ours.per_second)));
    let note = format!(
        "{} x polling, {} x BLPOP, {} x rslock",
        short(to_poll),
        short(to_blpop),
        short(median(&ours.per_second) / median(&peer.per_second))
    );
    let metric = format!("  {}", Side::Ours.describe());
    let paused = pause_us > 0;
    if paused {
        report.judged(
            &metric,
            &value,
            &note,
            Target::at_least(
                format!("{name}: ours / BLPOP reference"),
                to_blpop,
                1.0,
                ">= 1 x BLPOP ref",
            ),
        );
        let bound = MAX_HANDOFF_RTT * rtt_us;
        report.judged(
            "    hand-off p50",
            &us(ours.handoff_p50_us),
            "",
            Target::at_most(
                format!("{name}: hand-off p50 (us)"),
                ours.handoff_p50_us,
                bound,
                format!("<= {MAX_HANDOFF_RTT} RTT = {}", us(bound)),
            ),
        );
        report.row("    longest wait", &us(ours.longest_wait_us), "");
        report.row("    fairness (Jain)", &format!("{:.4}", ours.fairness), "");
        report.judged(
            "    Redis commands / acquisition",
            &short(ours.commands_per_acq),
            "server-counted",
            Target::at_most(
                format!("{name}: Redis commands / acquisition"),
                ours.commands_per_acq,
                MAX_COMMANDS,
                format!("<= {MAX_COMMANDS}"),
            ),
        );
    } else {
        report.judged(
            &metric,
            &value,
            &note,
            Target::at_least(
                format!("{name}: ours / polling reference"),
                to_poll,
                MIN_TO_POLLING,
                format!(">= {MIN_TO_POLLING} x polling ref"),
            ),
        );
        report.row("    hand-off p50", &us(ours.handoff_p50_us), "");
        report.judged(
            "    longest wait",
            &us(ours.longest_wait_us),
            "worst round",
            Target::at_most(
                format!("{name}: longest wait (us)"),
                ours.longest_wait_us,
                MAX_WAIT_US,
                format!("<= {}", us(MAX_WAIT_US)),
            ),
        );
        report.judged(
            "    fairness (Jain)",
            &format!("{:.4}", ours.fairness),
            "",
            Target::at_least(
                format!("{name}: fairness index"),
                ours.fairness,
                MIN_JAIN,
                format!(">= {MIN_JAIN}"),
            ),
        );
        report.row(
            "    Redis commands / acquisition",
            &short(ours.commands_per_acq),
            "server-counted",
        );
    }
    // The async API against the sync one, same workers, same rounds.
    let to_threads = rates.ratio(3, 2);
    report.judged(
        &format!("  {}", Side::Tasks.describe()),
        &format!("{} /s", rate(median(&tasks.per_second))),
        &format!("{} x threads; {}", short(to_threads), tasks.note()),
        Target::at_least(
            format!("{name}: tasks / threads acquisitions"),
            to_threads,
            1.0,
            ">= 1 x threads",
        ),
    );
    let key = format!("contended.threads_default_pause{}ms", pause_us / 1000);
    let j = &mut report.json;
    for (label, s) in [
        ("polling", poll),
        ("blpop", blpop),
        ("rslock", peer),
        ("ours", ours),
        ("tasks", tasks),
    ] {
        j.put(
            &format!("{key}.{label}.acquisitions_per_s"),
            median(&s.per_second),
        );
        j.put(&format!("{key}.{label}.handoff_p50_us"), s.handoff_p50_us);
        j.put(&format!("{key}.{label}.longest_wait_us"), s.longest_wait_us);
        j.put(&format!("{key}.{label}.fairness"), s.fairness);
        j.put(
            &format!("{key}.{label}.server_commands_per_acq"),
            s.commands_per_acq,
        );
    }
    j.put(&format!("{key}.rtt_us"), rtt_us);
    j.put(&format!("{key}.ours_to_polling"), to_poll);
    j.put(&format!("{key}.ours_to_blpop"), to_blpop);
    j.put(&format!("{key}.tasks_to_threads"), to_threads);
}
