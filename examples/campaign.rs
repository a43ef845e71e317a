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
//! reproduces the same fault schedule), the faults by kind, the holds
//! checked, stale writes rejected and accepted, overlaps (explained, with
//! the reason, and unexplained), lost signals fired and expected, stranded
//! locks, the longest wait and its bound. The exit status is non-zero when
//! a property fails; the failures are listed in the JSON and on stderr.
//!
//! Stores: `redis` (one server behind the test proxy, with AOF persistence
//! unless `--no-persist`, which makes a restart forget held locks: a
//! documented weakness the checker then explains) and `quorum` (three
//! servers without persistence, the first behind the proxy).

#[path = "campaign/checker.rs"]
mod checker;
#[path = "campaign/controller.rs"]
mod controller;
#[path = "campaign/history.rs"]
mod history;
#[path = "campaign/resource.rs"]
mod resource;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "campaign/worker.rs"]
mod worker;

use std::process::ExitCode;
use std::time::Duration;

use lock_runtime::registry::AliasConfig;

/// The alias every worker registers (the `#[lock]`s name it).
pub const ALIAS: &str = "campaign";
/// The keys the workers fight over: few, so that they contend.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// The key prefix on the store.
pub const PREFIX: &str = "camp:";

/// The lock settings of a run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub lease: Duration,
    pub wait_for: Duration,
    pub command_timeout: Duration,
}

impl Settings {
    /// The acquisition deadline, in ms (also the `#[lock]`s' literal).
    pub const WAIT_FOR_MS: u64 = 3000;
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_millis(800),
            wait_for: Duration::from_millis(Self::WAIT_FOR_MS),
            command_timeout: Duration::from_millis(300),
        }
    }
}

/// The alias for `store` at `urls`, with the run's settings.
pub fn alias_config(store: &str, urls: &[String], s: &Settings) -> Result<AliasConfig, String> {
    let cfg = match store {
        "redis" => AliasConfig::redis(urls.first().ok_or("no url")?.clone()),
        "quorum" => AliasConfig::quorum(urls.iter().cloned()),
        other => return Err(format!("unknown store {other:?}")),
    };
    Ok(cfg
        .prefix(PREFIX)
        .default_lease(s.lease)
        .command_timeout(s.command_timeout)
        .connect_timeout(s.command_timeout))
}

/// xorshift64*: a seeded schedule that replays exactly, without a
/// dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.below(span))
    }
}

const USAGE: &str = "usage: campaign --store redis|quorum [--seconds N] [--seed N] [--workers N] [--no-persist] [--keep]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return match parse_worker(&args[1..]).and_then(worker::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("campaign worker failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = match parse(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match controller::run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
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
        persist: true,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--store" => opts.store = value()?.clone(),
            "--seconds" => opts.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seed" => opts.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--workers" => opts.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--no-persist" => opts.persist = false,
            "--keep" => opts.keep = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !matches!(opts.store.as_str(), "redis" | "quorum") {
        return Err(format!("--store must be redis or quorum, not {:?}", opts.store));
    }
    if opts.workers < 4 {
        return Err("--workers must be at least 4".into());
    }
    Ok(opts)
}

fn parse_worker(args: &[String]) -> Result<worker::Args, String> {
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .ok_or(format!("worker: {name} missing"))
    };
    Ok(worker::Args {
        index: get("--index")?.parse().map_err(|e| format!("--index: {e}"))?,
        store: get("--store")?.clone(),
        urls: get("--urls")?.split(',').map(str::to_owned).collect(),
        resource: get("--resource")?.parse().map_err(|e| format!("--resource: {e}"))?,
        dir: get("--dir")?.into(),
        seed: get("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
    })
}
