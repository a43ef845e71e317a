//! Section 1: one client taking and releasing a free Redis lock, next to the
//! least a client could do for the same guarantee on the same kind of
//! redis-rs connection: `SET key token NX PX` then a compare-and-delete
//! script by `EVALSHA`. Ideal and ours run in alternating rounds in this one
//! process, so that a noisy neighbour slows both alike; figures are medians.

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use tokio::runtime::{Builder, Runtime};

use crate::measure::{Rounds, median};
use crate::report::{Report, short};
use crate::support::RedisServer;
use crate::{ALIAS, BenchResult, counters};

const COMPARE_AND_DELETE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) end return 0";
/// A token as long as ours (22 characters), so both send the same bytes.
const TOKEN: &str = "ideal-token-0123456789";
const KEY: &str = "uncontended";
/// Ours stores `lock:<key>`; the ideal uses a key of the same length.
const IDEAL_KEY: &str = "ideal:uncontended";
const LEASE_MS: u64 = 30_000;

struct Plan {
    rounds: usize,
    cycles: usize,
    pings: usize,
}

/// Runs the section; returns 1 RTT in microseconds, the unit the contended
/// section is judged in.
pub fn run(server: &RedisServer, report: &mut Report, quick: bool) -> BenchResult<f64> {
    let plan = if quick {
        Plan {
            rounds: 8,
            cycles: 600,
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
        "1. Uncontended Redis, one client: {} alternating rounds of {} acquire+release cycles, \
         medians",
        plan.rounds, plan.cycles
    ));
    report.line(
        "ours / ideal is the median of the per-round ratios: each pair ran back to back, \
         so a slow spell of the machine cancels out",
    );
    let client = redis::Client::open(server.url())?;
    let mut conn = client.get_connection()?;

    let rtt_us = ping_rtt_us(&mut conn, plan.pings)?;
    report.row("1 RTT (sync PING, median)", &us_frac(rtt_us), "");
    report.json.put("uncontended.rtt_us", rtt_us);

    let sync = sync_rounds(&mut conn, &plan)?;
    judge(report, "sync", "sync", &sync);
    let (ideal, ours) = commands_per_cycle(server, &mut conn, plan.cycles / 4)?;
    report.row(
        "sync: Redis commands per cycle",
        &format!("{} / {}", short(ideal), short(ours)),
        "ideal / ours, counted by the server (scripts' commands included)",
    );
    report
        .json
        .put("uncontended.sync.ideal_commands_per_cycle", ideal);
    report
        .json
        .put("uncontended.sync.ours_commands_per_cycle", ours);

    let current = Builder::new_current_thread().enable_all().build()?;
    let async_current = current.block_on(async_rounds(client.clone(), plan.rounds, plan.cycles))?;
    judge(
        report,
        "async current-thread",
        "async_current_thread",
        &async_current,
    );
    drop(current);

    let multi = Builder::new_multi_thread().enable_all().build()?;
    let async_multi = in_worker(&multi, async_rounds(client, plan.rounds, plan.cycles))?;
    judge(
        report,
        "async multi-thread",
        "async_multi_thread",
        &async_multi,
    );
    bytes_per_lock(&mut conn, report)?;
    Ok(rtt_us)
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

fn judge(report: &mut Report, label: &str, json: &str, r: &Rounds) {
    r.judge(
        report,
        &format!("uncontended {label}"),
        &format!("uncontended.{json}"),
        "SET NX PX + EVALSHA compare-and-delete",
        Some(0.95),
    );
}

/// What one cycle of each side costs Redis: explains the gap between them.
fn commands_per_cycle(
    server: &RedisServer,
    conn: &mut redis::Connection,
    cycles: usize,
) -> BenchResult<(f64, f64)> {
    let sha = load_script(conn)?;
    counters::reset(server)?;
    ideal_sync(conn, &sha, cycles)?;
    let ideal = counters::since_reset(server)?.0;
    counters::reset(server)?;
    ours_sync(cycles)?;
    let ours = counters::since_reset(server)?.0;
    Ok((ideal as f64 / cycles as f64, ours as f64 / cycles as f64))
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

fn sync_rounds(conn: &mut redis::Connection, plan: &Plan) -> BenchResult<Rounds> {
    let sha = load_script(conn)?;
    // The first pair is a warm-up, not measured: it connects the pool,
    // loads our scripts, starts the lease watchdog.
    Rounds::run(
        plan.rounds,
        || ideal_sync(conn, &sha, plan.cycles),
        || ours_sync(plan.cycles),
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

/// Runs `fut` as a task on a worker thread of `rt`, where async user code
/// runs (`block_on` would poll it on this thread instead).
fn in_worker<T: Send + 'static>(
    rt: &Runtime,
    fut: impl Future<Output = BenchResult<T>> + Send + 'static,
) -> BenchResult<T> {
    rt.block_on(rt.spawn(fut))?
}

/// Alternating rounds inside one runtime; the ideal's connection is made in
/// that runtime, as ours is.
async fn async_rounds(client: redis::Client, rounds: usize, cycles: usize) -> BenchResult<Rounds> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(COMPARE_AND_DELETE)
        .query_async(&mut conn)
        .await?;
    ideal_async(&mut conn, &sha, cycles / 4).await?;
    ours_async(cycles / 4).await?;
    let mut r = Rounds::default();
    for round in 0..rounds {
        if round % 2 == 0 {
            r.bare.push(ideal_async(&mut conn, &sha, cycles).await?);
            r.ours.push(ours_async(cycles).await?);
        } else {
            r.ours.push(ours_async(cycles).await?);
            r.bare.push(ideal_async(&mut conn, &sha, cycles).await?);
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
