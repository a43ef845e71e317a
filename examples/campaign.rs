//! A fault campaign with history checking: worker processes take locks
//! through `#[lock]` and the builder (sync and async) and write to a fenced
//! resource, while a controller injects seeded faults (a holder paused past
//! its lease, workers killed, the server killed and restarted or paused past
//! the command timeout, network latency, a one-way black hole, connection
//! resets, a partitioned quorum node); then a checker reads the history.
//!
//! ```text
//! cargo run --release --example campaign -- --store redis --seconds 120 [--seed N]
//! cargo run --release --example campaign -- --store quorum --seconds 120
//! ```
//!
//! The last line of stdout is one JSON object: the seed (a failing seed
//! replays the same schedule of faults and of the workers' choices; the
//! processes' timing around it varies, so a timing-bound failure comes back
//! often, not surely), the faults by kind, the holds
//! checked, stale writes rejected and accepted, overlaps (explained, with
//! the reason, and unexplained), lost signals fired and expected, stranded
//! locks, the longest wait and its bound. The exit status is non-zero when
//! a property fails; the failures are listed in the JSON and on stderr.
//!
//! Stores: `redis` (one server behind the test proxy, with AOF persistence
//! unless `--no-persist`, which makes a restart forget held locks: a
//! documented weakness the checker then explains), `quorum` (three servers
//! without persistence, the first behind the proxy), and, built with
//! `--all-features`, `memcache` and `postgres` (behind the proxy; a
//! memcached restart forgets locks, as documented) and the stores of one
//! host, `sqlite` and `file` (worker faults only).
//!
//! `--workers N` (at least 4, the default) sets the worker processes;
//! `--threads N` (1, the default, to 16) the threads taking locks at once in
//! each, so that waiters of one process meet in its local line and a
//! release hands the lock to one of them;
//! `--keep` keeps the run's directory (each worker's history as JSON lines,
//! `faults.json`, the workers' logs), which a failing run always keeps.
//!
//! The checker (`campaign/checker.rs`) is an interval check over the holds
//! rather than a linearizability search (stateright's tester, say): the
//! fencing tokens and the resource's log already put every hold and write
//! in one order, so each property is one pass over sorted holds, and a
//! failure names the two holds or the write at fault.

#[path = "campaign/checker.rs"]
mod checker;
#[path = "campaign/controller.rs"]
mod controller;
#[path = "campaign/history.rs"]
mod history;
#[path = "campaign/resource.rs"]
mod resource;
#[path = "campaign/settings.rs"]
mod settings;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "campaign/worker.rs"]
mod worker;

use std::process::ExitCode;

/// The stores the campaign runs against.
const STORES: [&str; 6] = ["redis", "quorum", "memcache", "postgres", "sqlite", "file"];

const USAGE: &str = "usage: campaign --store redis|quorum|memcache|postgres|sqlite|file [--seconds N] [--seed N] [--workers N] [--threads N] [--no-persist] [--keep]";

fn main() -> ExitCode {
    if let Ok(args) = std::env::var(settings::WORKER_ENV) {
        return match worker::Args::parse(&args).and_then(worker::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("campaign worker failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match controller::run(&opts) {
        Ok(summary) => {
            println!("{summary}");
            if summary["passed"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("campaign could not run: {e}");
            ExitCode::from(3)
        }
    }
}

fn parse(args: &[String]) -> Result<controller::Options, String> {
    let mut opts = controller::Options {
        store: String::new(),
        seconds: 120,
        seed: None,
        workers: 4,
        threads: 1,
        persist: true,
        keep: false,
        worker_command: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--store" => opts.store = value()?.clone(),
            "--seconds" => {
                opts.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--seed" => opts.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--workers" => {
                opts.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?
            }
            "--threads" => {
                opts.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--no-persist" => opts.persist = false,
            "--keep" => opts.keep = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !STORES.contains(&opts.store.as_str()) {
        return Err(format!(
            "--store must be one of {STORES:?}, not {:?}",
            opts.store
        ));
    }
    if opts.workers < 4 {
        return Err("--workers must be at least 4".into());
    }
    if !(1..=16).contains(&opts.threads) {
        return Err("--threads must be 1 to 16".into());
    }
    Ok(opts)
}
