//! Section 1: one client taking and releasing a free Redis lock, next to the
//! least a client could do for the same guarantee on the same kind of
//! redis-rs connection: `SET key token NX PX` then a compare-and-delete
//! script by `EVALSHA`, and next to the peer the performance issue names,
//! rslock (`LockManager::lock` + `unlock`). All sides run interleaved in
//! rounds in this one process, so that a noisy neighbour slows them alike;
//! figures are medians. Sync, async on a current-thread runtime, and async
//! on a multi-thread one.

use std::time::{Duration, Instant};

use lock_runtime::Lock;
use redis::aio::MultiplexedConnection;
use tokio::runtime::{Builder, Runtime};

use crate::measure::{Interleaved, median};
use crate::report::{Report, Target, rate, short};
use crate::support::RedisServer;
use crate::{ALIAS, BenchResult, counters};

const COMPARE_AND_DELETE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) end return 0";
/// A token as long as ours (22 characters), so both send the same bytes.
const TOKEN: &str = "ideal-token-0123456789";
const KEY: &str = "uncontended";
/// Ours stores `lock:<key>`; the ideal uses a key of the same length.
const IDEAL_KEY: &str = "ideal:uncontended";
/// rslock stores the key as given; one of the same length again.
const RSLOCK_KEY: &str = "peer:uncontended";
const LEASE_MS: u64 = 30_000;

struct Plan {
    rounds: usize,
    cycles: usize,
    pings: usize,
}

/// The sides of the sync rounds, in [`Interleaved`]'s order.
const SYNC_RAW: usize = 0;
const SYNC_OURS: usize = 1;
const SYNC_OURS_EXPIRE: usize = 2;
const SYNC_RSLOCK: usize = 3;
/// The sides of the async rounds.
const ASYNC_RAW: usize = 0;
const ASYNC_OURS: usize = 1;
const ASYNC_RSLOCK: usize = 2;

/// Ours at least this share of the raw reference of the same flavour.
const MIN_TO_RAW: f64 = 0.97;

/// Runs the section; returns 1 RTT in microseconds, the unit the contended
/// section is judged in.
pub fn run(server: &RedisServer, report: &mut Report, quick: bool) -> BenchResult<()> {
    let plan = if quick {
        Plan {
            rounds: 8,
            cycles: 500,
            pings: 500,
        }
    } else {
        Plan {
            rounds: 10,
            cycles: 2000,
            pings: 2000,
        }
    };
    report.section(&format!(
        "1. Uncontended Redis, one client: {} interleaved rounds of {} acquire+release cycles, \
         medians",
        plan.rounds, plan.cycles
    ));
    report.line(
        "each round runs every side back to back (order rotated per round); a ratio is the \
         median of the per-round ratios, so a slow spell of the machine cancels out",
    );
    report.line(
        "raw = SET NX PX + EVALSHA compare-and-delete on the same kind of redis-rs connection; \
         rslock = its LockManager lock + unlock",
    );
    let client = redis::Client::open(server.url())?;
    let mut conn = client.get_connection()?;

    let rtt_us = ping_rtt_us(&mut conn, plan.pings)?;
    report.row("1 RTT (sync PING, median)", &us_frac(rtt_us), "");
    report.json.put("uncontended.rtt_us", rtt_us);

    // rslock is async only: the sync rows are set against it on a
    // current-thread runtime, as the harness did. Its connection
    // lives on this runtime, which is kept for the whole section.
    let current = Builder::new_current_thread().enable_all().build()?;
    let rslock = rslock::LockManager::new(vec![server.url()]);
    let sync = sync_rounds(&mut conn, &plan, &current, &rslock)?;
    report.line("");
    judge_sync(report, &sync);
    let (ideal, ours, peer) = commands_per_cycle(server, &mut conn, &current, &rslock, 100)?;
    report.row(
        "sync: Redis commands per cycle",
        &format!("{} / {} / {}", short(ideal), short(ours), short(peer)),
        "raw / ours / rslock, counted by the server (scripts' commands included)",
    );
    let j = &mut report.json;
    j.put("uncontended.sync.ideal_commands_per_cycle", ideal);
    j.put("uncontended.sync.ours_commands_per_cycle", ours);
    j.put("uncontended.sync.rslock_commands_per_cycle", peer);

    let async_current = current.block_on(async_rounds(
        client.clone(),
        server.url(),
        plan.rounds,
        plan.cycles,
    ))?;
    report.line("");
    judge_async(
        report,
        "async current-thread",
        "async_current_thread",
        &async_current,
    );
    drop(current);

    let multi = Builder::new_multi_thread().enable_all().build()?;
    let async_multi = in_worker(
        &multi,
        async_rounds(client, server.url(), plan.rounds, plan.cycles),
    )?;
    report.line("");
    judge_async(
        report,
        "async multi-thread",
        "async_multi_thread",
        &async_multi,
    );
    report.line("");
    bytes_per_lock(&mut conn, report)?;
    Ok(())
}

fn judge_sync(report: &mut Report, r: &Interleaved) {
    side_row(report, "sync: raw", r.median(SYNC_RAW), "");
    side_row(
        report,
        "sync: rslock",
        r.median(SYNC_RSLOCK),
        "on a current-thread runtime",
    );
    for (label, json, side) in [
        ("sync, default lease", "sync", SYNC_OURS),
        ("sync, expire(30 s)", "sync_expire", SYNC_OURS_EXPIRE),
    ] {
        judge_ours(report, label, json, r, side, SYNC_RAW, SYNC_RSLOCK);
    }
    let j = &mut report.json;
    j.put("uncontended.sync.raw_cycles_per_s", r.median(SYNC_RAW));
    j.put(
        "uncontended.sync.rslock_cycles_per_s",
        r.median(SYNC_RSLOCK),
    );
}

fn judge_async(report: &mut Report, label: &str, json: &str, r: &Interleaved) {
    side_row(report, &format!("{label}: raw"), r.median(ASYNC_RAW), "");
    side_row(
        report,
        &format!("{label}: rslock"),
        r.median(ASYNC_RSLOCK),
        "",
    );
    judge_ours(report, label, json, r, ASYNC_OURS, ASYNC_RAW, ASYNC_RSLOCK);
    let j = &mut report.json;
    j.put(
        &format!("uncontended.{json}.raw_cycles_per_s"),
        r.median(ASYNC_RAW),
    );
    j.put(
        &format!("uncontended.{json}.rslock_cycles_per_s"),
        r.median(ASYNC_RSLOCK),
    );
}

fn side_row(report: &Report, metric: &str, cycles_per_s: f64, note: &str) {
    report.row(metric, &format!("{} /s", rate(cycles_per_s)), note);
}

/// Ours judged twice: against the raw reference and against rslock.
fn judge_ours(
    report: &mut Report,
    label: &str,
    json: &str,
    r: &Interleaved,
    ours: usize,
    raw: usize,
    peer: usize,
) {
    let (to_raw, to_peer) = (r.ratio(ours, raw), r.ratio(ours, peer));
    report.judged(
        &format!("{label}: ours"),
        &format!("{} /s", rate(r.median(ours))),
        &format!("{} x raw", short(to_raw)),
        Target::at_least(
            format!("uncontended {label}: ours / raw"),
            to_raw,
            MIN_TO_RAW,
            format!(">= {MIN_TO_RAW} x raw"),
        ),
    );
    report.judged(
        "  ours / rslock",
        &short(to_peer),
        "",
        Target::at_least(
            format!("uncontended {label}: ours / rslock"),
            to_peer,
            1.0,
            ">= 1 x rslock",
        ),
    );
    let j = &mut report.json;
    let key = format!("uncontended.{json}");
    j.put(&format!("{key}.ours_cycles_per_s"), r.median(ours));
    j.put(&format!("{key}.ratio"), to_raw);
    j.put(&format!("{key}.ratio_to_rslock"), to_peer);
}

/// What one held lock costs the server (`MEMORY USAGE` of its key, keys of
/// one length): a bare `token + lease` value, as the store wrote before it
/// recorded holders, beside ours unlabelled and with a label (the holder's
/// process is named by its token, its record written once per process).
fn bytes_per_lock(conn: &mut redis::Connection, report: &mut Report) -> BenchResult<()> {
    let bare = format!("{TOKEN}{LEASE_MS}");
    redis::cmd("SET")
        .arg("ideal:bytesplain")
        .arg(&bare)
        .arg("PX")
        .arg(LEASE_MS)
        .query::<()>(conn)?;
    let plain = lock_runtime::Lock::new("bytes-plain")
        .alias(ALIAS)
        .acquire()?;
    let labelled = lock_runtime::Lock::new("bytes-label")
        .alias(ALIAS)
        .label("nightly-report")
        .acquire()?;
    let mut usage = |key: &str| -> BenchResult<i64> {
        Ok(redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(conn)?)
    };
    let (bare, ours, label) = (
        usage("ideal:bytesplain")?,
        usage("lock:bytes-plain")?,
        usage("lock:bytes-label")?,
    );
    report.row(
        "bytes per held lock",
        &format!("{bare} / {ours} / {label}"),
        "MEMORY USAGE: token+lease only / ours / ours labelled",
    );
    report
        .json
        .put("uncontended.bytes_per_lock.bare", bare as u64);
    report
        .json
        .put("uncontended.bytes_per_lock.ours", ours as u64);
    report
        .json
        .put("uncontended.bytes_per_lock.labelled", label as u64);
    drop((plain, labelled));
    redis::cmd("DEL")
        .arg("ideal:bytesplain")
        .query::<()>(conn)?;
    Ok(())
}

/// What one cycle of each side costs Redis: explains the gaps between them.
fn commands_per_cycle(
    server: &RedisServer,
    conn: &mut redis::Connection,
    rt: &Runtime,
    rslock: &rslock::LockManager,
    cycles: usize,
) -> BenchResult<(f64, f64, f64)> {
    let sha = load_script(conn)?;
    counters::reset(server)?;
    ideal_sync(conn, &sha, cycles)?;
    let ideal = counters::since_reset(server)?.0;
    counters::reset(server)?;
    ours_sync(cycles)?;
    let ours = counters::since_reset(server)?.0;
    counters::reset(server)?;
    rt.block_on(rslock_cycles(rslock, cycles))?;
    let peer = counters::since_reset(server)?.0;
    let per = |n: u64| n as f64 / cycles as f64;
    Ok((per(ideal), per(ours), per(peer)))
}

fn load_script(conn: &mut redis::Connection) -> BenchResult<String> {
    Ok(redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(COMPARE_AND_DELETE)
        .query(conn)?)
}

fn us_frac(v: f64) -> String {
    format!("{v:.1} us")
}

fn ping_rtt_us(conn: &mut redis::Connection, pings: usize) -> BenchResult<f64> {
    let mut samples = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        redis::cmd("PING").query::<String>(conn)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&samples))
}

fn sync_rounds(
    conn: &mut redis::Connection,
    plan: &Plan,
    rt: &Runtime,
    rslock: &rslock::LockManager,
) -> BenchResult<Interleaved> {
    let sha = load_script(conn)?;
    let cycles = plan.cycles;
    Interleaved::run(
        plan.rounds,
        &mut [
            &mut || ideal_sync(conn, &sha, cycles),
            &mut || ours_sync(cycles),
            &mut || ours_sync_expire(cycles),
            &mut || rt.block_on(rslock_cycles(rslock, cycles)),
        ],
    )
}

/// Cycles per second of the raw two-command lock.
fn ideal_sync(conn: &mut redis::Connection, sha: &str, cycles: usize) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        let set: Option<String> = redis::cmd("SET")
            .arg(IDEAL_KEY)
            .arg(TOKEN)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_MS)
            .query(conn)?;
        let deleted: i64 = redis::cmd("EVALSHA")
            .arg(sha)
            .arg(1)
            .arg(IDEAL_KEY)
            .arg(TOKEN)
            .query(conn)?;
        if set.is_none() || deleted != 1 {
            return Err("the ideal lock was not free: is another client using the server?".into());
        }
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

/// Cycles per second of our sync API, as a user writes it.
fn ours_sync(cycles: usize) -> BenchResult<f64> {
    crate::measure::ours_sync(ALIAS, KEY, cycles)
}

/// The same with a fixed 30 s lease: no lease watchdog.
fn ours_sync_expire(cycles: usize) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        Lock::new(KEY)
            .alias(ALIAS)
            .expire(Duration::from_millis(LEASE_MS))
            .acquire()?
            .release()?;
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

/// Cycles per second of rslock's `LockManager::lock` + `unlock`, its
/// manager (and so its connection) made once, as its users keep it.
async fn rslock_cycles(lm: &rslock::LockManager, cycles: usize) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        let lock = lm
            .lock(RSLOCK_KEY, Duration::from_millis(LEASE_MS))
            .await
            .map_err(|e| format!("rslock could not take its free lock: {e}"))?;
        lm.unlock(&lock).await;
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

/// Runs `fut` as a task on a worker thread of `rt`, where async user code
/// runs (`block_on` would poll it on this thread instead).
fn in_worker<T: Send + 'static>(
    rt: &Runtime,
    fut: impl Future<Output = BenchResult<T>> + Send + 'static,
) -> BenchResult<T> {
    rt.block_on(rt.spawn(fut))?
}

/// Interleaved rounds of raw, ours and rslock inside one runtime; the
/// raw connection and rslock's are made in that runtime, as ours is.
async fn async_rounds(
    client: redis::Client,
    url: String,
    rounds: usize,
    cycles: usize,
) -> BenchResult<Interleaved> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(COMPARE_AND_DELETE)
        .query_async(&mut conn)
        .await?;
    let rslock = rslock::LockManager::new(vec![url]);
    let mut r = Interleaved::with_sides(3);
    // Round 0 is the warm-up, not recorded.
    for round in 0..=rounds {
        for side in Interleaved::order(round, 3) {
            let n = if round == 0 { cycles / 4 } else { cycles };
            let v = match side {
                ASYNC_RAW => ideal_async(&mut conn, &sha, n).await?,
                ASYNC_OURS => ours_async(n).await?,
                _ => rslock_cycles(&rslock, n).await?,
            };
            if round > 0 {
                r.samples[side].push(v);
            }
        }
    }
    Ok(r)
}

async fn ideal_async(
    conn: &mut MultiplexedConnection,
    sha: &str,
    cycles: usize,
) -> BenchResult<f64> {
    let t = Instant::now();
    for _ in 0..cycles {
        let set: Option<String> = redis::cmd("SET")
            .arg(IDEAL_KEY)
            .arg(TOKEN)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_MS)
            .query_async(conn)
            .await?;
        let deleted: i64 = redis::cmd("EVALSHA")
            .arg(sha)
            .arg(1)
            .arg(IDEAL_KEY)
            .arg(TOKEN)
            .query_async(conn)
            .await?;
        if set.is_none() || deleted != 1 {
            return Err("the ideal lock was not free: is another client using the server?".into());
        }
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

async fn ours_async(cycles: usize) -> BenchResult<f64> {
    crate::measure::ours_async(ALIAS, KEY, cycles).await
}
