//! Section 5: many distinct keys held at once. What each held lock costs in
//! memory, in this process (counted by a wrapper around the system
//! allocator) and in Redis (`used_memory`), and whether acquiring stays as
//! fast with that many locks held.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use lock_runtime::{Lock, LockGuard};

use crate::report::{Report, Target, rate};
use crate::support::RedisServer;
use crate::{ALIAS, BenchResult, counters};

/// Counts live heap bytes, but only while [`COUNTING`] is on: the rest of
/// the bench then pays one relaxed load per allocation, not a contended
/// atomic add.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn count(delta: i64) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Redis keys of the held locks outlive the measurement by this much; a
/// fixed lease, so that 100,000 guards do not queue renewals on the lease
/// watchdog while they are measured.
const LEASE: Duration = Duration::from_secs(600);

pub fn run(server: &RedisServer, report: &mut Report, quick: bool) -> BenchResult<()> {
    let keys = 100_000;
    let (memory_cycles, redis_cycles) = if quick {
        (50_000, 500)
    } else {
        (200_000, 2000)
    };
    report.section(&format!("5. Scale: {keys} distinct keys held at once"));
    in_memory(report, keys, memory_cycles)?;
    in_redis(server, report, keys, redis_cycles)
}

fn key(i: usize) -> String {
    // Equal lengths, so that every key costs the same.
    format!("scale-{i:06}")
}

fn in_memory(report: &mut Report, keys: usize, cycles: usize) -> BenchResult<()> {
    COUNTING.store(true, Ordering::SeqCst);
    let before = LIVE.load(Ordering::SeqCst);
    let mut guards: Vec<LockGuard> = Vec::with_capacity(keys);
    let vec_bytes = guards.capacity() * size_of::<LockGuard>();
    let t = Instant::now();
    for i in 0..keys {
        guards.push(Lock::new(key(i)).acquire()?);
    }
    let fill_rate = keys as f64 / t.elapsed().as_secs_f64();
    let after = LIVE.load(Ordering::SeqCst);
    COUNTING.store(false, Ordering::SeqCst);
    let per_lock = (after - before - vec_bytes as i64) as f64 / keys as f64;
    report.judged(
        "in-process heap per held lock",
        &format!("{per_lock:.0} B"),
        &format!(
            "store + guard's key; the guard itself ({} B) excluded",
            size_of::<LockGuard>()
        ),
        Target::at_most("in-memory bytes per held lock", per_lock, 100.0, "< 100 B"),
    );
    report.row("  taking them", &format!("{} /s", rate(fill_rate)), "");
    let held_rate = cycles_per_s(cycles, || {
        drop(Lock::new("scale-probe").acquire()?);
        Ok(())
    })?;
    report.row(
        "  acquire + drop while held",
        &format!("{} /s", rate(held_rate)),
        "one thread, another key",
    );
    let j = &mut report.json;
    j.put("scale.keys", keys);
    j.put("scale.memory.bytes_per_lock", per_lock);
    j.put("scale.memory.guard_size", size_of::<LockGuard>());
    j.put("scale.memory.fill_per_s", fill_rate);
    j.put("scale.memory.cycles_per_s_while_held", held_rate);
    drop(guards);
    Ok(())
}

fn in_redis(
    server: &RedisServer,
    report: &mut Report,
    keys: usize,
    cycles: usize,
) -> BenchResult<()> {
    let before = counters::info_u64(server, "memory", "used_memory")?;
    let t = Instant::now();
    let guards = (0..keys)
        .map(|i| Lock::new(key(i)).alias(ALIAS).expire(LEASE).acquire())
        .collect::<Result<Vec<_>, _>>()?;
    let fill_rate = keys as f64 / t.elapsed().as_secs_f64();
    let after = counters::info_u64(server, "memory", "used_memory")?;
    let per_lock = (after as f64 - before as f64) / keys as f64;
    report.judged(
        "Redis used_memory per held lock",
        &format!("{per_lock:.0} B"),
        "INFO memory delta / keys",
        Target::at_most("Redis bytes per held lock", per_lock, 150.0, "< 150 B"),
    );
    report.row(
        "  taking them",
        &format!("{} /s", rate(fill_rate)),
        "sync, one client",
    );
    let held_rate = cycles_per_s(cycles, || {
        Lock::new("scale-probe").alias(ALIAS).acquire()?.release()?;
        Ok(())
    })?;
    report.row(
        "  acquire + release while held",
        &format!("{} /s", rate(held_rate)),
        "sync, one client, another key",
    );
    let t = Instant::now();
    drop(guards);
    let release_rate = keys as f64 / t.elapsed().as_secs_f64();
    report.row(
        "  releasing them (drop)",
        &format!("{} /s", rate(release_rate)),
        "",
    );
    let j = &mut report.json;
    j.put("scale.redis.bytes_per_lock", per_lock);
    j.put("scale.redis.fill_per_s", fill_rate);
    j.put("scale.redis.cycles_per_s_while_held", held_rate);
    j.put("scale.redis.release_per_s", release_rate);
    Ok(())
}

fn cycles_per_s(cycles: usize, mut f: impl FnMut() -> BenchResult<()>) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        f()?;
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}
