//! Clocks and statistics shared by the sections: a monotonic clock that is
//! comparable across processes, medians and percentiles, and the analysis of
//! a contended run from its (attempt, acquired, released) events.

use std::time::{Duration, Instant};

use lock_runtime::Lock;

use crate::BenchResult;
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "file",
    feature = "memcache"
))]
use crate::report::{Report, Target, rate, short};

/// Nanoseconds on `CLOCK_MONOTONIC`. Unlike `Instant`, whose origin is
/// private to a process, this clock reads the same in every process of the
/// machine, so the workers' timestamps can be merged into one timeline.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Busy-waits until `deadline` (on [`mono_ns`]). Used for the holds: a sleep
/// of 1 ms overshoots by a scheduler tick or a timer-wheel slot (tokio's
/// timer has 1 ms resolution), which would blur the ceiling it is judged by.
pub fn spin_until(deadline: u64) {
    while mono_ns() < deadline {
        std::hint::spin_loop();
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Jain's fairness index of per-worker counts: 1.0 when all are equal,
/// 1/n when one worker got everything.
pub fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64).powi(2)).sum();
    if squares == 0.0 {
        return f64::NAN;
    }
    sum * sum / (counts.len() as f64 * squares)
}

/// One acquisition by one worker, on [`mono_ns`].
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub worker: u32,
    /// When the worker asked for the lock.
    pub attempt: u64,
    /// When `acquire` returned.
    pub acquired: u64,
    /// When the worker called `release`.
    pub released: u64,
}

/// What a contended run measured.
#[derive(Debug)]
pub struct Contention {
    /// Acquisitions granted inside the measured window.
    pub acquisitions: u64,
    /// Every acquisition, including those the stragglers made after the
    /// window closed (the denominator for commands per acquisition).
    pub total_acquisitions: u64,
    pub per_second: f64,
    pub hold_mean_us: f64,
    pub handoffs: usize,
    pub handoff_p50_us: f64,
    pub handoff_p99_us: f64,
    /// The longest the lock lay free while someone waited for it.
    pub handoff_max_us: f64,
    pub longest_wait_us: f64,
    pub fairness: f64,
    pub per_worker: Vec<u64>,
    /// Pairs of holds that overlapped: must be 0, or the lock is broken.
    pub overlaps: usize,
}

/// Merges every worker's events into one timeline and measures it. The
/// window is `[start, end)`: throughput and fairness count acquisitions
/// granted inside it.
///
/// A hand-off is the time from a release to the next acquisition returning,
/// counted only when some worker was already waiting at the release (else
/// the gap is idle time, not latency).
pub fn analyse(mut events: Vec<Event>, workers: usize, start: u64, end: u64) -> Contention {
    events.sort_by_key(|e| e.acquired);
    let n = events.len();
    // earliest_attempt_after[i]: the earliest attempt among acquisitions
    // i.. (those granted after acquisition i-1 was released).
    let mut earliest_attempt_after = vec![u64::MAX; n + 1];
    for i in (0..n).rev() {
        earliest_attempt_after[i] = earliest_attempt_after[i + 1].min(events[i].attempt);
    }
    let mut handoffs = Vec::with_capacity(n);
    let mut overlaps = 0;
    for i in 0..n.saturating_sub(1) {
        let (cur, next) = (&events[i], &events[i + 1]);
        if next.acquired < cur.released {
            overlaps += 1;
        } else if earliest_attempt_after[i + 1] <= cur.released {
            handoffs.push(next.acquired - cur.released);
        }
    }
    handoffs.sort_unstable();
    let mut per_worker = vec![0u64; workers];
    let mut hold_sum = 0u128;
    let mut in_window = 0u64;
    for e in events
        .iter()
        .filter(|e| e.acquired >= start && e.acquired < end)
    {
        per_worker[e.worker as usize] += 1;
        hold_sum += u128::from(e.released - e.acquired);
        in_window += 1;
    }
    let us = |ns: u64| ns as f64 / 1e3;
    Contention {
        acquisitions: in_window,
        total_acquisitions: n as u64,
        per_second: in_window as f64 / Duration::from_nanos(end - start).as_secs_f64(),
        hold_mean_us: if in_window == 0 {
            f64::NAN
        } else {
            hold_sum as f64 / in_window as f64 / 1e3
        },
        handoffs: handoffs.len(),
        handoff_p50_us: percentile(&handoffs, 50.0).map_or(f64::NAN, us),
        handoff_p99_us: percentile(&handoffs, 99.0).map_or(f64::NAN, us),
        handoff_max_us: handoffs.last().copied().map_or(f64::NAN, us),
        longest_wait_us: events
            .iter()
            .map(|e| e.acquired - e.attempt)
            .max()
            .map_or(f64::NAN, us),
        fairness: jain(&per_worker),
        per_worker,
        overlaps,
    }
}

/// Alternating rounds of ours and a bare reference: each pair runs back to back, so the
/// median of the per-round ratios cancels a slow spell of the machine.
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "file",
    feature = "memcache"
))]
#[derive(Default)]
pub struct Rounds {
    pub bare: Vec<f64>,
    pub ours: Vec<f64>,
}

#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "file",
    feature = "memcache"
))]
impl Rounds {
    pub fn run(
        rounds: usize,
        mut bare: impl FnMut() -> BenchResult<f64>,
        mut ours: impl FnMut() -> BenchResult<f64>,
    ) -> BenchResult<Self> {
        // Warm-up, not measured: connections, prepared statements, the
        // lease watchdog.
        bare()?;
        ours()?;
        let mut r = Rounds::default();
        for round in 0..rounds {
            if round % 2 == 0 {
                r.bare.push(bare()?);
                r.ours.push(ours()?);
            } else {
                r.ours.push(ours()?);
                r.bare.push(bare()?);
            }
        }
        Ok(r)
    }

    pub fn ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.bare)
            .map(|(o, b)| o / b)
            .collect();
        median(&ratios)
    }

    /// Prints both sides and their ratio, judged against `target` (ours
    /// at least that many times the bare side) when there is one.
    pub fn judge(
        &self,
        report: &mut Report,
        label: &str,
        json: &str,
        bare: &str,
        target: Option<f64>,
    ) {
        report.row(
            &format!("{label}: bare"),
            &format!("{} /s", rate(median(&self.bare))),
            bare,
        );
        let ratio = self.ratio();
        let (metric, value) = (
            format!("{label}: ours"),
            format!("{} /s", rate(median(&self.ours))),
        );
        let note = format!(
            "acquire + release, default options; {} x bare",
            short(ratio)
        );
        match target {
            Some(min) => report.judged(
                &metric,
                &value,
                &note,
                Target::at_least(
                    format!("{label}: ours / bare"),
                    ratio,
                    min,
                    format!(">= {min} x bare"),
                ),
            ),
            None => report.row(&metric, &value, &note),
        }
        report
            .json
            .put(&format!("{json}.bare_cycles_per_s"), median(&self.bare));
        report
            .json
            .put(&format!("{json}.ours_cycles_per_s"), median(&self.ours));
        report.json.put(&format!("{json}.ratio"), ratio);
    }
}

/// Alternating rounds of several sides (ours, its references, a peer), each
/// side a rate: a round runs every side once, back to back, in an order
/// rotated from round to round, so that a slow spell of the machine weighs
/// on all sides alike and no side always runs first.
pub struct Interleaved {
    /// `samples[side][round]`.
    pub samples: Vec<Vec<f64>>,
}

impl Interleaved {
    /// Runs `rounds` rounds after one unmeasured warm-up of every side
    /// (connections, scripts, the lease watchdog).
    pub fn run(
        rounds: usize,
        sides: &mut [&mut dyn FnMut() -> BenchResult<f64>],
    ) -> BenchResult<Self> {
        for side in sides.iter_mut() {
            side()?;
        }
        let mut samples = vec![Vec::with_capacity(rounds); sides.len()];
        for round in 0..rounds {
            for k in 0..sides.len() {
                let side = (round + k) % sides.len();
                samples[side].push(sides[side]()?);
            }
        }
        Ok(Interleaved { samples })
    }

    /// An empty record for `sides` sides, filled by a caller that drives
    /// the rounds itself (an async loop): [`Self::order`] says the order.
    pub fn with_sides(sides: usize) -> Self {
        Interleaved {
            samples: vec![Vec::new(); sides],
        }
    }

    /// The order of the sides in round `round`.
    pub fn order(round: usize, sides: usize) -> impl Iterator<Item = usize> {
        (0..sides).map(move |k| (round + k) % sides)
    }

    pub fn median(&self, side: usize) -> f64 {
        median(&self.samples[side])
    }

    /// The median over rounds of side `a` / side `b` in the same round.
    pub fn ratio(&self, a: usize, b: usize) -> f64 {
        let ratios: Vec<f64> = self.samples[a]
            .iter()
            .zip(&self.samples[b])
            .map(|(x, y)| x / y)
            .collect();
        median(&ratios)
    }
}

/// Cycles per second of our sync API on `alias`, as a user writes it: one
/// fresh `Lock` per cycle, default options.
pub fn ours_sync(alias: &str, key: &str, cycles: usize) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        Lock::new(key.to_owned())
            .alias(alias.to_owned())
            .acquire()?
            .release()?;
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

/// Cycles per second of our async API on `alias`, as a user writes it.
pub async fn ours_async(alias: &'static str, key: &'static str, cycles: usize) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        let guard = Lock::new(key).alias(alias).acquire_async().await?;
        guard.release_async().await?;
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

/// A private temp dir for a section's files, removed when the section is
/// done with it (however it ends).
#[cfg(any(feature = "sqlite", feature = "file"))]
pub struct Scratch(pub std::path::PathBuf);

#[cfg(any(feature = "sqlite", feature = "file"))]
impl Scratch {
    pub fn new(name: &str) -> Self {
        Self(crate::support::private_dir(name))
    }
}

#[cfg(any(feature = "sqlite", feature = "file"))]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_rounds_rotate_the_order_and_pair_the_ratios() {
        let calls = std::cell::RefCell::new(Vec::new());
        // Side 1 runs twice as fast as side 0 in every round, while the
        // machine slows down from round to round.
        let rate = |side: usize| {
            let mut c = calls.borrow_mut();
            c.push(side);
            let slowdown = c.len() as f64;
            (side as f64 + 1.0) * 100.0 / slowdown
        };
        let r = Interleaved::run(3, &mut [&mut || Ok(rate(0)), &mut || Ok(rate(1))]).unwrap();
        // The warm-up (0, 1), then rounds starting with 0, 1, 0.
        assert_eq!(*calls.borrow(), vec![0, 1, 0, 1, 1, 0, 0, 1]);
        assert_eq!(r.samples[0].len(), 3);
        assert_eq!(r.samples[1].len(), 3);
        let ratio = r.ratio(1, 0);
        assert!(ratio > 1.5 && ratio < 2.5, "{ratio}");
        let order: Vec<_> = Interleaved::order(2, 3).collect();
        assert_eq!(order, vec![2, 0, 1]);
    }

    #[test]
    fn handoffs_count_only_when_someone_waited() {
        let ev = |worker, attempt, acquired, released| Event {
            worker,
            attempt,
            acquired,
            released,
        };
        let events = vec![
            ev(0, 0, 0, 10),
            ev(1, 5, 12, 20),  // waited since 5: hand-off 2
            ev(0, 30, 30, 40), // came after the release at 20: idle
        ];
        let c = analyse(events, 2, 0, 100);
        assert_eq!(c.handoffs, 1);
        assert_eq!(c.handoff_p50_us, 0.002);
        assert_eq!(c.overlaps, 0);
        assert_eq!(c.per_worker, vec![2, 1]);
    }
}

/// How often [`Pinger`] sends its `PING`.
const PING_EVERY: Duration = Duration::from_millis(5);

/// Times a `PING` on a connection of its own every [`PING_EVERY`] while a
/// run goes on: the round trip under the run's own load, which is what its
/// hand-offs are judged by (on this shared virtual machine a round trip
/// measured apart, before the run, was seen ten times faster or slower
/// than during it).
pub struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<BenchResult<Vec<f64>>>,
}

impl Pinger {
    pub fn start(url: &str) -> BenchResult<Self> {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-pinger".into())
            .spawn(move || -> BenchResult<Vec<f64>> {
                let mut samples = Vec::new();
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    let t = Instant::now();
                    redis::cmd("PING").query::<String>(&mut conn)?;
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                    std::thread::sleep(PING_EVERY);
                }
                Ok(samples)
            })?;
        Ok(Self { stop, thread })
    }

    /// The median round trip over the run, in microseconds.
    pub fn finish(self) -> BenchResult<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let samples = self
            .thread
            .join()
            .map_err(|_| "the pinger thread panicked")??;
        if samples.is_empty() {
            return Err("the pinger took no sample".into());
        }
        Ok(median(&samples))
    }
}
