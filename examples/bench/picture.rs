//! Section 9: the picture in the README's "Operating locks": how long
//! acquisitions waited and how long locks were held, in one contended run
//! of eight threads on one Redis key whose holds vary (0.2 to 4 ms) with a
//! pause of up to 2 ms between turns, drawn as two histograms on a
//! logarithmic time axis into `examples/operating-locks.svg`.
//!
//! The SVG is written by hand: a histogram is rectangles and a few labels,
//! and `plotters` needs a font engine to lay out any text, even in SVG.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lock_runtime::Lock;

use crate::measure::percentile;
use crate::report::{Report, us};
use crate::{ALIAS, BenchResult};

const THREADS: usize = 8;
const KEY: &str = "picture-contended";
/// The picture's path, beside this example, so the README can show it.
const OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/operating-locks.svg");

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    let seconds = if quick { 3 } else { 10 };
    report.heading(&format!(
        "9. Wait and hold times: {THREADS} threads, one Redis key, holds 0.2-4 ms, pauses 0-2 ms, {seconds} s"
    ));
    let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS as u64)
        .map(|id| {
            let (samples, stop) = (samples.clone(), stop.clone());
            thread::spawn(move || -> BenchResult<()> {
                let mut rng =
                    0x9E37_79B9_7F4A_7C15u64 ^ (id + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                let (mut waits, mut holds) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let guard = Lock::new(KEY).alias(ALIAS).acquire()?;
                    let got = Instant::now();
                    thread::sleep(Duration::from_micros(200 + next(&mut rng) % 3_800));
                    drop(guard);
                    waits.push(nanos(got - asked));
                    holds.push(nanos(got.elapsed()));
                    thread::sleep(Duration::from_micros(next(&mut rng) % 2_000));
                }
                let mut all = samples.lock().map_err(|_| "a worker panicked")?;
                all.0.extend(waits);
                all.1.extend(holds);
                Ok(())
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a worker panicked")??;
    }
    let (mut waits, mut holds) = std::mem::take(&mut *samples.lock().map_err(|_| "poisoned")?);
    waits.sort_unstable();
    holds.sort_unstable();
    for (name, v) in [("wait", &waits), ("hold", &holds)] {
        let p = |q| percentile(v, q).map_or(f64::NAN, |n| n as f64 / 1e3);
        report.row(
            &format!("  {name} p50 / p99 / max"),
            &us(p(50.0)),
            &format!(
                "{} / {} over {} acquisitions",
                us(p(99.0)),
                us(p(100.0)),
                v.len()
            ),
        );
        report.json.put(&format!("picture.{name}_p50_us"), p(50.0));
        report.json.put(&format!("picture.{name}_p99_us"), p(99.0));
    }
    std::fs::write(OUT, svg(&waits, &holds, seconds))?;
    report.line(&format!("written: {OUT}"));
    Ok(())
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Bucket edges: 20 µs times 2^(i/3), up to about 2.6 s.
const BUCKETS: usize = 51;
const FIRST_NS: f64 = 20_000.0;

fn bucket(ns: u64) -> usize {
    let b = (3.0 * (ns.max(1) as f64 / FIRST_NS).log2()).floor();
    (b.max(0.0) as usize).min(BUCKETS - 1)
}

/// Two histograms side by side, with p50 and p99 marked.
fn svg(waits: &[u64], holds: &[u64], seconds: u64) -> String {
    let (w, h) = (960.0, 380.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="24" text-anchor="middle" font-size="15">{THREADS} threads on one Redis key for {seconds} s: how long each acquisition waited, and how long each lock was held</text>"##,
        w / 2.0
    );
    panel(
        &mut s,
        40.0,
        "wait (acquire called until held)",
        waits,
        "#3b6fb6",
    );
    panel(
        &mut s,
        520.0,
        "hold (held until released)",
        holds,
        "#c2562f",
    );
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, x0: f64, title: &str, sorted: &[u64], colour: &str) {
    let (pw, ph, top) = (420.0, 260.0, 60.0);
    let bottom = top + ph;
    let mut counts = [0u64; BUCKETS];
    for &v in sorted {
        counts[bucket(v)] += 1;
    }
    let total = sorted.len().max(1) as f64;
    let peak = counts.iter().copied().max().unwrap_or(1).max(1) as f64 / total;
    let bw = pw / BUCKETS as f64;
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="13">{title}: {} acquisitions</text>"##,
        x0 + pw / 2.0,
        top - 12.0,
        sorted.len()
    );
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let bh = (c as f64 / total) / peak * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"##,
            x0 + i as f64 * bw,
            bottom - bh,
            bw - 1.0,
            bh
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/>"##,
        x0 + pw
    );
    // Decade ticks: where 100 µs, 1 ms, ... fall on the bucket axis.
    let at = |ns: f64| x0 + 3.0 * (ns / FIRST_NS).log2() * bw;
    for (ns, label) in [
        (1e5, "100 µs"),
        (1e6, "1 ms"),
        (1e7, "10 ms"),
        (1e8, "100 ms"),
        (1e9, "1 s"),
    ] {
        let x = at(ns);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            bottom + 5.0,
            bottom + 18.0
        );
    }
    for (q, dash) in [(50.0, "4 3"), (99.0, "1 2")] {
        let Some(v) = percentile(sorted, q) else {
            continue;
        };
        let x = at(v.max(1) as f64).clamp(x0, x0 + pw);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#111" stroke-dasharray="{dash}"/><text x="{:.1}" y="{}" font-size="11">p{q} {}</text>"##,
            x + 3.0,
            top + if q == 50.0 { 12.0 } else { 26.0 },
            us(v as f64 / 1e3)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">time (log scale); bar height: share of acquisitions</text>"##,
        x0 + pw / 2.0,
        bottom + 38.0
    );
}
