//! Section 3: the in-process store (alias `default`). Uncontended, it is set
//! against a `Mutex<HashMap<String, u64>>` insert and remove of the same key:
//! the least any in-process lock table does. Contended, eight threads take
//! one key with a critical section of a few nanoseconds. Also what the
//! lock's `tracing` spans (and metrics, when the `metrics` feature is on)
//! cost with nobody listening, measured alone in the same rounds.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::{self, DEFAULT_ALIAS};

use crate::BenchResult;
use crate::measure::{Event, analyse, median, mono_ns};
use crate::report::{Report, Target, rate, short, us};

const KEY: &str = "uncontended";
const THREADS: usize = 8;

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    let (rounds, cycles) = if quick { (7, 50_000) } else { (15, 200_000) };
    report.section(&format!(
        "3. In-memory store: {rounds} alternating rounds of {cycles} cycles, medians; \
         {THREADS}-thread contention"
    ));
    uncontended(report, rounds, cycles)?;
    contended(
        report,
        Duration::from_millis(if quick { 500 } else { 1000 }),
    )
}

fn uncontended(report: &mut Report, rounds: usize, cycles: usize) -> BenchResult<()> {
    // The floor inserts the key the store holds (the alias prefix, if any,
    // and the key), so both hash and copy the same string.
    let stored_key = format!("{}{KEY}", registry::alias(DEFAULT_ALIAS)?.prefix());
    let floor_map = Mutex::new(HashMap::new());
    let (mut acquire, mut try_acquire, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let mut observing = Vec::new();
    let at = Instant::now();
    // The first round warms caches and the store's shard, and is dropped.
    for round in 0..=rounds {
        // Rotate the order so no variant always runs first.
        let mut order = [0, 1, 2, 3];
        order.rotate_left(round % 4);
        let mut ns = [0.0; 4];
        for which in order {
            ns[which] = match which {
                0 => ns_per_cycle(cycles, acquire_drop)?,
                1 => ns_per_cycle(cycles, try_acquire_drop)?,
                2 => ns_per_cycle(cycles, |i| floor_cycle(&floor_map, &stored_key, i))?,
                _ => ns_per_cycle(cycles, |_| {
                    lock_runtime::__private::observe_cycle(DEFAULT_ALIAS, black_box(KEY), at);
                    Ok(())
                })?,
            };
        }
        if round > 0 {
            acquire.push(ns[0]);
            try_acquire.push(ns[1]);
            floor.push(ns[2]);
            observing.push(ns[3]);
        }
    }
    let floor = median(&floor);
    report.row(
        "floor: Mutex<HashMap> insert+remove",
        &format!("{floor:.0} ns"),
        "same key, String allocated per insert",
    );
    for (label, json, samples) in [
        ("acquire() + drop", "acquire", &acquire),
        ("try_acquire() + drop", "try_acquire", &try_acquire),
    ] {
        let ns = median(samples);
        let ratio = ns / floor;
        report.judged(
            &format!("ours: {label}"),
            &format!("{ns:.0} ns"),
            &format!("{} x floor", short(ratio)),
            Target::at_most(
                format!("in-memory uncontended {label}: ours / floor"),
                ratio,
                2.0,
                "<= 2 x floor",
            ),
        );
        report
            .json
            .put(&format!("memory.uncontended.{json}_ns"), ns);
        report
            .json
            .put(&format!("memory.uncontended.{json}_ratio"), ratio);
    }
    report.json.put("memory.uncontended.floor_ns", floor);
    observability(report, rounds, cycles, median(&acquire), median(&observing))
}

/// The spans' (and metrics') share of the uncontended memory path with no
/// subscriber or recorder, then the path with a subscriber that records
/// every lock span. Measured last: once any subscriber has existed,
/// `tracing` checks each callsite's interest on every call, so nothing
/// measured with "no subscriber" may run after it.
fn observability(
    report: &mut Report,
    rounds: usize,
    cycles: usize,
    acquire_ns: f64,
    observing_ns: f64,
) -> BenchResult<()> {
    let share = observing_ns / acquire_ns;
    let what = if cfg!(feature = "metrics") {
        "spans + metrics"
    } else {
        "spans"
    };
    report.judged(
        &format!("  of which {what}, nobody listening"),
        &format!("{observing_ns:.1} ns"),
        &format!("{:.1}% of acquire() + drop", share * 100.0),
        Target::at_most(
            format!("in-memory acquire + drop: cost of {what} with no subscriber"),
            share,
            0.05,
            "<= 5%",
        ),
    );
    let mut listened = Vec::new();
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || -> BenchResult<()> {
        for round in 0..=rounds {
            let ns = ns_per_cycle(cycles, acquire_drop)?;
            if round > 0 {
                listened.push(ns);
            }
        }
        Ok(())
    })?;
    let listened = median(&listened);
    report.row(
        "ours: acquire() + drop, spans recorded",
        &format!("{listened:.0} ns"),
        &format!(
            "a tracing-subscriber registry; {} x no subscriber",
            short(listened / acquire_ns)
        ),
    );
    let j = &mut report.json;
    j.put("memory.uncontended.observing_ns", observing_ns);
    j.put("memory.uncontended.observing_share", share);
    j.put("memory.uncontended.acquire_with_subscriber_ns", listened);
    Ok(())
}

fn ns_per_cycle(cycles: usize, mut f: impl FnMut(u64) -> BenchResult<()>) -> BenchResult<f64> {
    let t = Instant::now();
    for i in 0..cycles as u64 {
        f(i)?;
    }
    Ok(t.elapsed().as_nanos() as f64 / cycles as f64)
}

fn acquire_drop(_: u64) -> BenchResult<()> {
    drop(black_box(Lock::new(KEY).acquire()?));
    Ok(())
}

fn try_acquire_drop(_: u64) -> BenchResult<()> {
    let guard = Lock::new(KEY)
        .try_acquire()?
        .ok_or("the free lock was busy")?;
    drop(black_box(guard));
    Ok(())
}

fn floor_cycle(map: &Mutex<HashMap<String, u64>>, key: &str, i: u64) -> BenchResult<()> {
    let mut m = map.lock().map_err(|_| "poisoned")?;
    black_box(m.insert(key.to_owned(), i));
    drop(m);
    let mut m = map.lock().map_err(|_| "poisoned")?;
    black_box(m.remove(key));
    Ok(())
}

fn contended(report: &mut Report, duration: Duration) -> BenchResult<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let start_at = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS as u32)
        .map(|id| {
            let (counter, barrier, start_at) = (
                Arc::clone(&counter),
                Arc::clone(&barrier),
                Arc::clone(&start_at),
            );
            thread::spawn(move || -> BenchResult<Vec<Event>> {
                let lock = Lock::new("contended");
                // Reserved up front: growing the log inside the run would
                // be measured as lock time.
                let mut events = Vec::with_capacity(1 << 20);
                barrier.wait();
                let end = start_at.load(Ordering::Acquire) + duration.as_nanos() as u64;
                while mono_ns() < end {
                    let attempt = mono_ns();
                    let guard = lock.acquire()?;
                    let acquired = mono_ns();
                    // The critical section: touch shared state.
                    counter.fetch_add(1, Ordering::Relaxed);
                    let released = mono_ns();
                    drop(guard);
                    events.push(Event {
                        worker: id,
                        attempt,
                        acquired,
                        released,
                    });
                }
                Ok(events)
            })
        })
        .collect();
    let start = mono_ns();
    start_at.store(start, Ordering::Release);
    barrier.wait();
    let mut events = Vec::new();
    for t in threads {
        events.append(&mut t.join().map_err(|_| "a contending thread panicked")??);
    }
    let c = analyse(events, THREADS, start, start + duration.as_nanos() as u64);
    if c.overlaps > 0 {
        return Err(format!(
            "{} holds of the in-memory lock overlapped: it let two holders in",
            c.overlaps
        )
        .into());
    }
    report.line("");
    report.line(&format!(
        "{THREADS} threads, one key, critical section = one atomic add, {} ms",
        duration.as_millis()
    ));
    report.row("  acquisitions/s", &rate(c.per_second), "");
    report.row(
        "  hand-off p50",
        &format!("{:.1} us", c.handoff_p50_us),
        &format!(
            "p99 {:.1} us, max {}; {} hand-offs",
            c.handoff_p99_us,
            us(c.handoff_max_us),
            c.handoffs
        ),
    );
    report.row("  longest wait", &us(c.longest_wait_us), "");
    report.row(
        "  fairness (Jain)",
        &format!("{:.4}", c.fairness),
        &format!("per thread {:?}", c.per_worker),
    );
    let j = &mut report.json;
    j.put("memory.contended.acquisitions_per_s", c.per_second);
    j.put("memory.contended.handoffs", c.handoffs);
    j.put("memory.contended.handoff_p50_us", c.handoff_p50_us);
    j.put("memory.contended.handoff_p99_us", c.handoff_p99_us);
    j.put("memory.contended.handoff_max_us", c.handoff_max_us);
    j.put("memory.contended.longest_wait_us", c.longest_wait_us);
    j.put("memory.contended.fairness", c.fairness);
    Ok(())
}
