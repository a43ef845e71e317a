//! Section 3: the in-process store (alias `default`). Uncontended, it is set
//! against a `parking_lot::Mutex<HashMap<String, u64>>` insert and remove of
//! the same key: the least any in-process lock table does (the std `Mutex`
//! version beside it, unjudged). Contended, eight threads take one key with
//! a critical section of a few nanoseconds, beside a bare
//! `parking_lot::Mutex` taken the same way. Also what the
//! lock's `tracing` spans (and metrics, when the `metrics` feature is on)
//! cost with nobody listening, measured alone in the same rounds.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::{self, DEFAULT_ALIAS};

use crate::BenchResult;
use crate::measure::{Contention, Event, analyse, median, mono_ns};
use crate::report::{Report, Target, rate, short, us};

const KEY: &str = "uncontended";
const THREADS: usize = 8;
/// Ours at most this many times the parking_lot floor.
const MAX_TO_FLOOR: f64 = 1.5;

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    let (rounds, cycles) = if quick { (7, 50_000) } else { (15, 200_000) };
    report.section(&format!(
        "3. In-memory store: {rounds} alternating rounds of {cycles} cycles, medians; \
         {THREADS}-thread contention"
    ));
    uncontended(report, rounds, cycles)?;
    let (runs, run_ms) = if quick { (2, 250) } else { (4, 500) };
    contended(report, runs, Duration::from_millis(run_ms))
}

fn uncontended(report: &mut Report, rounds: usize, cycles: usize) -> BenchResult<()> {
    // The floor inserts the key the store holds (the alias prefix, if any,
    // and the key), so both hash and copy the same string.
    let stored_key = format!("{}{KEY}", registry::alias(DEFAULT_ALIAS)?.prefix());
    let floor_map = Mutex::new(HashMap::new());
    let pl_map = parking_lot::Mutex::new(HashMap::new());
    let (mut acquire, mut try_acquire, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut observing, mut pl_floor) = (Vec::new(), Vec::new());
    let at = Instant::now();
    // The first round warms caches and the store's shard, and is dropped.
    for round in 0..=rounds {
        // Rotate the order so no variant always runs first.
        let mut order = [0, 1, 2, 3, 4];
        order.rotate_left(round % 5);
        let mut ns = [0.0; 5];
        for which in order {
            ns[which] = match which {
                0 => ns_per_cycle(cycles, acquire_drop)?,
                1 => ns_per_cycle(cycles, try_acquire_drop)?,
                2 => ns_per_cycle(cycles, |i| floor_cycle(&floor_map, &stored_key, i))?,
                3 => ns_per_cycle(cycles, |i| {
                    pl_floor_cycle(&pl_map, &stored_key, i);
                    Ok(())
                })?,
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
            pl_floor.push(ns[3]);
            observing.push(ns[4]);
        }
    }
    let std_floor = median(&floor);
    let floor = median(&pl_floor);
    report.row(
        "floor: parking_lot::Mutex<HashMap>",
        &format!("{floor:.0} ns"),
        "insert+remove, same key, String allocated per insert",
    );
    report.row(
        "  std Mutex<HashMap>, for context",
        &format!("{std_floor:.0} ns"),
        &format!("{} x parking_lot floor", short(std_floor / floor)),
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
                format!("in-memory uncontended {label}: ours / parking_lot floor"),
                ratio,
                MAX_TO_FLOOR,
                format!("<= {MAX_TO_FLOOR} x floor"),
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
    report
        .json
        .put("memory.uncontended.std_floor_ns", std_floor);
    observability(report, rounds, cycles, median(&acquire), median(&observing))
}

/// The spans' (and metrics') share of the uncontended memory path with no
/// subscriber or recorder, then the path with a subscriber that records
/// every lock span, in a process of its own ([`observed_worker`]): once any
/// subscriber has existed, `tracing` reports an interest in every level for
/// the rest of the process, so everything measured after it (the later
/// sections too) would be measured observed.
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
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([OBSERVED_WORKER, &rounds.to_string(), &cycles.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("the observed worker failed: {}", out.status).into());
    }
    let listened: f64 = String::from_utf8(out.stdout)?.trim().parse()?;
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

/// The argument that makes the bench [`observed_worker`].
pub const OBSERVED_WORKER: &str = "--observed-worker";

/// In a process of its own: the median of `rounds` rounds of `cycles`
/// acquisitions and drops with a `tracing-subscriber` registry recording
/// every lock span, printed in nanoseconds per cycle.
pub fn observed_worker(args: &[String]) -> BenchResult<()> {
    let [rounds, cycles] = args else {
        return Err(format!("usage: bench {OBSERVED_WORKER} ROUNDS CYCLES").into());
    };
    let (rounds, cycles): (usize, usize) = (rounds.parse()?, cycles.parse()?);
    let mut listened = Vec::new();
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || -> BenchResult<()> {
        // The first round warms up, and is dropped.
        for round in 0..=rounds {
            let ns = ns_per_cycle(cycles, acquire_drop)?;
            if round > 0 {
                listened.push(ns);
            }
        }
        Ok(())
    })?;
    println!("{}", median(&listened));
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

fn pl_floor_cycle(map: &parking_lot::Mutex<HashMap<String, u64>>, key: &str, i: u64) {
    black_box(map.lock().insert(key.to_owned(), i));
    black_box(map.lock().remove(key));
}

/// One run of [`THREADS`] threads taking one lock by `turn` (which takes
/// it, runs the critical section, stamps when it held it, gives it back)
/// as often as they can for `duration`.
fn contend<S>(
    duration: Duration,
    make: impl Fn() -> S + Sync,
    turn: impl Fn(&mut S, &AtomicU64) -> BenchResult<(u64, u64)> + Sync,
) -> BenchResult<Contention> {
    let counter = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS + 1);
    let start_at = AtomicU64::new(0);
    let events = thread::scope(|s| -> BenchResult<Vec<Event>> {
        let threads: Vec<_> = (0..THREADS as u32)
            .map(|id| {
                let (counter, barrier, start_at, make, turn) =
                    (&counter, &barrier, &start_at, &make, &turn);
                s.spawn(move || -> BenchResult<Vec<Event>> {
                    let mut state = make();
                    // Reserved up front: growing the log inside the run
                    // would be measured as lock time.
                    let mut events = Vec::with_capacity(1 << 21);
                    barrier.wait();
                    let end = start_at.load(Ordering::Acquire) + duration.as_nanos() as u64;
                    while mono_ns() < end {
                        let attempt = mono_ns();
                        let (acquired, released) = turn(&mut state, counter)?;
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
        start_at.store(mono_ns(), Ordering::Release);
        barrier.wait();
        let mut events = Vec::new();
        for t in threads {
            events.append(&mut t.join().map_err(|_| "a contending thread panicked")??);
        }
        Ok(events)
    })?;
    let start = start_at.load(Ordering::Acquire);
    let c = analyse(events, THREADS, start, start + duration.as_nanos() as u64);
    if c.overlaps > 0 {
        return Err(format!(
            "{} holds of an in-memory lock overlapped: it let two holders in",
            c.overlaps
        )
        .into());
    }
    Ok(c)
}

/// Ours: a `Lock` per thread, acquire, the critical section, drop.
fn ours_contended(duration: Duration) -> BenchResult<Contention> {
    contend(
        duration,
        || Lock::new("contended"),
        |lock, counter| {
            let guard = lock.acquire()?;
            let acquired = mono_ns();
            // The critical section: touch shared state.
            counter.fetch_add(1, Ordering::Relaxed);
            let released = mono_ns();
            drop(guard);
            Ok((acquired, released))
        },
    )
}

/// The same threads and critical section on a bare `parking_lot::Mutex`.
fn parking_lot_contended(duration: Duration) -> BenchResult<Contention> {
    let mutex = parking_lot::Mutex::new(());
    contend(
        duration,
        || (),
        |_, counter| {
            let guard = mutex.lock();
            let acquired = mono_ns();
            counter.fetch_add(1, Ordering::Relaxed);
            let released = mono_ns();
            drop(guard);
            Ok((acquired, released))
        },
    )
}

fn contended(report: &mut Report, rounds: usize, duration: Duration) -> BenchResult<()> {
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            bare.push(parking_lot_contended(duration)?);
            ours.push(ours_contended(duration)?);
        } else {
            ours.push(ours_contended(duration)?);
            bare.push(parking_lot_contended(duration)?);
        }
    }
    report.line("");
    report.line(&format!(
        "{THREADS} threads, one key, critical section = one atomic add: ours and a bare \
         parking_lot::Mutex in {rounds} alternating runs of {} ms, medians",
        duration.as_millis()
    ));
    let m = |runs: &[Contention], f: fn(&Contention) -> f64| {
        median(&runs.iter().map(f).collect::<Vec<_>>())
    };
    let worst_wait = |runs: &[Contention]| {
        runs.iter()
            .map(|c| c.longest_wait_us)
            .fold(f64::NAN, f64::max)
    };
    let (ours_p50, bare_p50) = (
        m(&ours, |c| c.handoff_p50_us),
        m(&bare, |c| c.handoff_p50_us),
    );
    let note = |runs: &[Contention]| {
        format!(
            "hand-off p99 {:.1} us, longest wait {}, Jain {:.3}",
            m(runs, |c| c.handoff_p99_us),
            us(worst_wait(runs)),
            m(runs, |c| c.fairness)
        )
    };
    report.row(
        "  parking_lot: acquisitions/s",
        &rate(m(&bare, |c| c.per_second)),
        &note(&bare),
    );
    report.row(
        "  parking_lot: hand-off p50",
        &format!("{bare_p50:.2} us"),
        "",
    );
    report.row(
        "  ours: acquisitions/s",
        &rate(m(&ours, |c| c.per_second)),
        &note(&ours),
    );
    report.judged(
        "  ours: hand-off p50",
        &format!("{ours_p50:.2} us"),
        &format!("{} x parking_lot", short(ours_p50 / bare_p50)),
        Target::at_most(
            "in-memory 8 threads: hand-off p50 (us), ours <= parking_lot",
            ours_p50,
            bare_p50,
            format!("<= parking_lot {bare_p50:.2} us"),
        ),
    );
    let j = &mut report.json;
    for (label, runs) in [("contended", &ours), ("contended_parking_lot", &bare)] {
        j.put(
            &format!("memory.{label}.acquisitions_per_s"),
            m(runs, |c| c.per_second),
        );
        j.put(
            &format!("memory.{label}.handoff_p50_us"),
            m(runs, |c| c.handoff_p50_us),
        );
        j.put(
            &format!("memory.{label}.handoff_p99_us"),
            m(runs, |c| c.handoff_p99_us),
        );
        j.put(&format!("memory.{label}.longest_wait_us"), worst_wait(runs));
        j.put(&format!("memory.{label}.fairness"), m(runs, |c| c.fairness));
    }
    Ok(())
}
