//! Section 4 (`burst`): N tasks spawned at once on one key, each willing to wait
//! 50 ms, on a multi-thread runtime; on Redis and on the in-memory store.
//! How many got the lock, how many timed out, and at what rate the lock
//! went round from the burst's start to its last grant: a store whose rate
//! falls as the crowd grows spends its time on the waiters, not the holders.
//! The sizes take turns, round after round, each burst starting on a quiet
//! runtime, and a size is judged by the median of its rounds' ratios to
//! the 100-task burst of the same round.

use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::DEFAULT_ALIAS;
use tokio::runtime::{Builder, Runtime};

use crate::measure::median;
use crate::report::{Report, Target, rate, short};
use crate::{ALIAS, BenchResult};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const WAIT: Duration = Duration::from_millis(50);
/// The pause before each burst: longer than a burst's waiters wait.
const SETTLE: Duration = Duration::from_millis(WAIT.as_millis() as u64 + 30);
/// The context row: a crowd that may wait long enough for all to get in.
const LONG_WAIT: Duration = Duration::from_secs(3);
const LONG_WAIT_TASKS: usize = 1_000;
/// rate(1,000) and rate(10,000) at least this share of rate(100).
const MIN_TO_100: f64 = 0.8;

/// What one burst did.
struct Burst {
    acquired: usize,
    timed_out: usize,
    /// Errors other than a timeout, and the first one's text.
    failed: usize,
    first_error: Option<String>,
    /// Acquisitions per second from the burst's start to its last grant.
    rate: f64,
}

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    let runs = if quick { 5 } else { 9 };
    report.section(&format!(
        "4. Burst: N tasks spawned at once on one key, body = one yield_now, wait_for(50 ms), \
         multi-thread runtime; medians of {runs} rounds over the sizes in turn, a fresh key each"
    ));
    report.line("rate = acquired / (time from the burst's start to its last grant)");
    let rt = Builder::new_multi_thread().enable_all().build()?;
    let mut serial = 0;
    for (store, alias) in [("redis", ALIAS), ("memory", DEFAULT_ALIAS)] {
        report.line("");
        report.line(&format!("{store} (alias `{alias}`)"));
        // This runtime's connection to the store, made before any burst
        // is timed.
        rt.block_on(async {
            let guard = Lock::new(format!("burst-{store}-warm-up"))
                .alias(alias)
                .acquire_async()
                .await?;
            guard.release_async().await
        })?;
        // Round-robin over the sizes, so that each round's bursts meet the
        // same machine (its round trip moves from one second to the next):
        // a ratio is the median of the rounds' ratios.
        let mut bursts: Vec<Vec<Burst>> = SIZES.iter().map(|_| Vec::with_capacity(runs)).collect();
        for _ in 0..runs {
            for (i, n) in SIZES.iter().enumerate() {
                // What the last burst left behind (its waiters' timers, due
                // at their deadlines) runs out before the next one starts.
                std::thread::sleep(SETTLE);
                serial += 1;
                let key = format!("burst-{store}-{n}-{serial}");
                bursts[i].push(burst(&rt, alias, key, *n, WAIT)?);
            }
        }
        for (n, b) in SIZES.iter().zip(&bursts) {
            let r = summary(b);
            print(report, &format!("  N = {}", rate(*n as f64)), &r);
            let j = &mut report.json;
            let key = format!("burst.{store}.n{n}");
            j.put(&format!("{key}.acquired"), r.acquired);
            j.put(&format!("{key}.timed_out"), r.timed_out);
            j.put(&format!("{key}.failed"), r.failed);
            j.put(&format!("{key}.rate_per_s"), r.rate);
        }
        let base = &bursts[1];
        for (n, b) in SIZES.iter().zip(&bursts).skip(2) {
            let ratios: Vec<f64> = b.iter().zip(base).map(|(x, y)| x.rate / y.rate).collect();
            let ratio = median(&ratios);
            report.judged(
                &format!("  rate({}) / rate(100)", rate(*n as f64)),
                &short(ratio),
                "median of the rounds' ratios",
                Target::at_least(
                    format!("burst {store}: rate({n}) / rate(100)"),
                    ratio,
                    MIN_TO_100,
                    format!(">= {MIN_TO_100}"),
                ),
            );
            report
                .json
                .put(&format!("burst.{store}.n{n}.to_rate_100"), ratio);
        }
        serial += 1;
        let key = format!("burst-{store}-long-{serial}");
        let long = burst(&rt, alias, key, LONG_WAIT_TASKS, LONG_WAIT)?;
        print(
            report,
            &format!("  N = {}, wait_for(3 s)", rate(LONG_WAIT_TASKS as f64)),
            &long,
        );
        let j = &mut report.json;
        let key = format!("burst.{store}.n{LONG_WAIT_TASKS}_wait3s");
        j.put(&format!("{key}.acquired"), long.acquired);
        j.put(&format!("{key}.timed_out"), long.timed_out);
        j.put(&format!("{key}.rate_per_s"), long.rate);
    }
    Ok(())
}

fn print(report: &Report, metric: &str, b: &Burst) {
    let mut note = format!("{} acquired, {} timed out", b.acquired, b.timed_out);
    if b.failed > 0 {
        note.push_str(&format!(
            ", {} failed: {}",
            b.failed,
            b.first_error.as_deref().unwrap_or("")
        ));
    }
    report.row(metric, &format!("{} /s", rate(b.rate)), &note);
}

/// The median run by rate, its rate the median of the rates.
fn summary(bursts: &[Burst]) -> Burst {
    let m = |f: fn(&Burst) -> f64| median(&bursts.iter().map(f).collect::<Vec<_>>());
    let failed = bursts.iter().map(|b| b.failed).sum::<usize>() / bursts.len().max(1);
    Burst {
        acquired: m(|b| b.acquired as f64).round() as usize,
        timed_out: m(|b| b.timed_out as f64).round() as usize,
        failed,
        first_error: bursts.iter().find_map(|b| b.first_error.clone()),
        rate: m(|b| b.rate),
    }
}

fn burst(
    rt: &Runtime,
    alias: &'static str,
    key: String,
    n: usize,
    wait: Duration,
) -> BenchResult<Burst> {
    rt.block_on(async move {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let lock = Lock::new(key.clone()).alias(alias).wait_for(wait);
                tokio::spawn(async move {
                    let guard = lock.acquire_async().await?;
                    let granted = start.elapsed();
                    tokio::task::yield_now().await;
                    guard.release_async().await?;
                    Ok::<_, lock_runtime::LockError>(granted)
                })
            })
            .collect();
        let mut b = Burst {
            acquired: 0,
            timed_out: 0,
            failed: 0,
            first_error: None,
            rate: f64::NAN,
        };
        let mut last = Duration::ZERO;
        for t in tasks {
            match t.await? {
                Ok(granted) => {
                    b.acquired += 1;
                    last = last.max(granted);
                }
                Err(e) if e.is_timeout() => b.timed_out += 1,
                Err(e) => {
                    b.failed += 1;
                    b.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if b.acquired > 0 {
            b.rate = b.acquired as f64 / last.as_secs_f64();
        }
        Ok(b)
    })
}
