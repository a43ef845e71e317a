//! Performance benchmark of the lock runtime against a private Redis, side
//! by side with raw references and a peer crate, as issue 12 measures it.
//!
//! ```text
//! cargo run --release --example bench              # full run, a few minutes
//! cargo run --release --example bench -- --quick   # about a minute
//! cargo run --release --example bench --all-features -- --quick --only sql
//! ```
//!
//! It starts its own `redis-server` on a free port (set `REDIS_SERVER_BIN`
//! to pick one) and measures, in one run (`--only` names in brackets):
//!
//! 1. (`redis`, or `uncontended` alone) uncontended acquire + release on
//!    Redis, one fresh `Lock` per cycle: sync with the default lease (the
//!    headline) and with a 30 s `expire`, async on a current-thread and on
//!    a multi-thread runtime;
//!    each next to the raw two-command lock on the same kind of connection
//!    and to rslock's `LockManager`, interleaved in the same rounds;
//! 2. (`redis`) eight workers contending for one Redis key, 1 ms hold, no
//!    pause and a 1 ms pause between turns: as OS threads (sync API) next
//!    to raw polling, the BLPOP signal scheme and rslock on the same eight
//!    threads, interleaved; as processes and as tasks, default and fair;
//! 3. (`memory`) the in-memory store, uncontended next to a
//!    `parking_lot::Mutex<HashMap>` (and std's), and eight threads on one
//!    key next to a bare `parking_lot::Mutex`;
//! 4. (`burst`) 10 to 10,000 tasks spawned at once on one key with a 50 ms
//!    `wait_for`, on Redis and in memory: how many got in, at what rate;
//! 5. (`scale`) 100,000 keys held at once: bytes per lock in memory and in
//!    Redis, and acquire throughput;
//! 6. (`sql`) with `--features sqlite,postgres`, the SQL stores next to
//!    their two bare statements, and the Postgres hand-off in round trips;
//! 7. (`file`) with `--features file`, the file store next to a bare
//!    `try_lock`;
//! 8. (`memcache`) with `--features memcache`, memcached next to a bare
//!    `ms` + `md`;
//! 9. (`picture`) wait and hold times of a contended Redis run, drawn into
//!    `examples/operating-locks.svg` (the README's picture).
//!
//! Each figure is printed with its target and PASS or MISS; the last line of
//! stdout is every figure as one JSON object. A MISS is a finding, not a
//! failure: the bench exits non-zero only when it cannot measure (no
//! redis-server, a worker process failing, a lock letting two holders in).
//!
//! Figures are noisy on a shared machine: comparisons run interleaved in one
//! process and are reported as medians of per-round ratios.

#[path = "bench/burst.rs"]
mod burst;
#[path = "bench/contended.rs"]
mod contended;
#[path = "bench/counters.rs"]
mod counters;
#[path = "bench/file.rs"]
mod file;
#[path = "bench/measure.rs"]
mod measure;
#[path = "bench/memcache.rs"]
mod memcache;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/picture.rs"]
mod picture;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/sql.rs"]
mod sql;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "bench/threads.rs"]
mod threads;
#[path = "bench/uncontended.rs"]
mod uncontended;

use std::process::ExitCode;
use std::time::Instant;

use lock_runtime::registry::{self, AliasConfig};

use report::Report;
use support::RedisServer;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The alias of the bench's Redis server, in the bench and in its workers.
pub const ALIAS: &str = "bench";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("--worker") => contended::worker(&args[1..]),
        Some(memory::OBSERVED_WORKER) => memory::observed_worker(&args[1..]),
        _ => match parse(&args) {
            Some((quick, only)) => run(quick, only),
            None => {
                eprintln!("usage: bench [--quick] [--only {}]", SECTIONS.join("|"));
                return ExitCode::from(2);
            }
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sections `--only` can pick, in the order a full run goes through
/// them.
const SECTIONS: &[&str] = &[
    "redis",
    "uncontended",
    "memory",
    "burst",
    "scale",
    "sql",
    "file",
    "memcache",
    "picture",
];

/// `[--quick] [--only SECTION]`, in any order: whether quick, and the one
/// section to run (all when `None`).
fn parse(args: &[String]) -> Option<(bool, Option<&'static str>)> {
    let (mut quick, mut only) = (false, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" if !quick => quick = true,
            "--only" if only.is_none() => {
                let name = args.next()?;
                only = Some(*SECTIONS.iter().find(|s| *s == name)?);
            }
            _ => return None,
        }
    }
    Some((quick, only))
}

fn run(quick: bool, only: Option<&str>) -> BenchResult<()> {
    let started = Instant::now();
    let mut report = Report::new();
    let runs = |section: &str| only.is_none_or(|o| o == section);
    // Panics, saying what to install, when there is no redis-server.
    let server = RedisServer::start();
    machine(&mut report, &server, quick);
    registry::add(ALIAS, AliasConfig::from_url(&server.url())?)?;

    if runs("redis") || only == Some("uncontended") {
        uncontended::run(&server, &mut report, quick)?;
        if runs("redis") {
            contended::run(&server, &mut report, quick)?;
        }
    }
    if runs("memory") {
        memory::run(&mut report, quick)?;
    }
    if runs("burst") {
        burst::run(&mut report, quick)?;
    }
    if runs("scale") {
        scale::run(&server, &mut report, quick)?;
    }
    if runs("sql") {
        sql::run(&mut report, quick)?;
    }
    if runs("file") {
        file::run(&mut report, quick)?;
    }
    if runs("memcache") {
        memcache::run(&mut report, quick)?;
    }
    if runs("picture") {
        picture::run(&mut report, quick)?;
    }

    report.finish(started.elapsed().as_secs_f64());
    Ok(())
}

/// What the figures were measured on.
fn machine(report: &mut Report, server: &RedisServer, quick: bool) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let redis = server
        .info("server")
        .remove("redis_version")
        .unwrap_or_default();
    let mode = if quick { "quick" } else { "full" };
    report.heading(&format!("lock-runtime benchmark ({mode} run)"));
    report.line(&format!("nproc {nproc}; CPU {cpu}; redis-server {redis}"));
    report.line(&format!("load average (1 min) at start: {load}"));
    let j = &mut report.json;
    j.put("mode", mode);
    j.put("machine.nproc", nproc);
    j.put("machine.cpu", cpu);
    j.put("machine.redis_server", redis);
    j.put("machine.load_1min", load.parse::<f64>().unwrap_or(f64::NAN));
}
