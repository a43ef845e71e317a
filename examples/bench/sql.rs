//! Section 6: the SQL stores (built with `--features sqlite,postgres`).
//!
//! Uncontended, each is set against the least a client could do for a lease
//! lock with the same guarantees on the same database: a conditional upsert
//! that takes a free or ended row and draws a fencing number, then a free by
//! owner (on Postgres with the `NOTIFY` that wakes waiters), both prepared,
//! on one reused connection, in alternating rounds in this process. On Postgres a
//! contended run also times the hand-off (release to the next holder's
//! `acquire` returning) against one round trip (`SELECT 1`), since a
//! release wakes the waiters with `NOTIFY`.

use crate::{BenchResult, report::Report};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
const KEY: &str = "uncontended";
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const LEASE_MS: i64 = 30_000;

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    report.section("6. SQL stores: acquire + release next to the two bare statements, medians");
    #[cfg(feature = "sqlite")]
    sqlite::run(report, quick)?;
    #[cfg(feature = "postgres")]
    postgres::run(report, quick)?;
    #[cfg(not(all(feature = "sqlite", feature = "postgres")))]
    {
        let _ = quick;
        report.line(
            "not measured in this build: run the bench with `--features sqlite,postgres` \
             for the SQL stores",
        );
    }
    Ok(())
}

/// Cycles per second of our sync API on `alias`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn ours_sync(alias: &str, cycles: usize) -> BenchResult<f64> {
    crate::measure::ours_sync(alias, KEY, cycles)
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::time::Instant;

    use lock_runtime::registry::{self, AliasConfig};
    use rusqlite::{Connection, params};

    use super::{KEY, LEASE_MS, ours_sync};
    use crate::BenchResult;
    use crate::measure::Rounds;
    use crate::report::Report;

    const ALIAS: &str = "bench-sqlite";

    pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
        let (rounds, cycles) = if quick { (6, 1_000) } else { (10, 4_000) };
        let scratch = crate::measure::Scratch::new("bench-sqlite");
        let dir = &scratch.0;
        let path = dir.join("locks.db");
        registry::add(
            ALIAS,
            AliasConfig::from_url(&format!("sqlite://{}", path.display()))?,
        )?;
        // Creates the store's tables before the bare side opens the file.
        ours_sync(ALIAS, 1)?;
        let conn = open_bare(&path)?;
        let start = Instant::now();
        let r = Rounds::run(
            rounds,
            || bare(&conn, start, cycles),
            || ours_sync(ALIAS, cycles),
        )?;
        report.line(&format!(
            "SQLite ({} rounds of {cycles} cycles; WAL, synchronous=NORMAL on both sides)",
            rounds
        ));
        r.judge(
            report,
            "sqlite sync",
            "sql.sqlite.sync",
            "upsert of a free or ended row + delete by owner, prepared",
            Some(0.9),
        );
        Ok(())
    }

    /// A connection set up as the store sets up its own, and a table of
    /// the same shape minus the boot id.
    fn open_bare(path: &std::path::Path) -> BenchResult<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bare (key TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
             acquired_at INTEGER NOT NULL, lease_end INTEGER NOT NULL) WITHOUT ROWID",
        )?;
        Ok(conn)
    }

    fn bare(conn: &Connection, start: Instant, cycles: usize) -> BenchResult<f64> {
        let mut take = conn.prepare_cached(
            "INSERT INTO bare (key, owner, acquired_at, lease_end) VALUES (?1, ?2, ?3, ?3 + ?4) \
             ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, \
             acquired_at = excluded.acquired_at, lease_end = excluded.lease_end \
             WHERE lease_end <= excluded.acquired_at",
        )?;
        let mut give = conn.prepare_cached("DELETE FROM bare WHERE key = ?1 AND owner = ?2")?;
        let t = Instant::now();
        for _ in 0..cycles {
            let now = start.elapsed().as_millis() as i64;
            let took = take.execute(params![KEY, "bare-token-0123456789", now, LEASE_MS])?;
            let gave = give.execute(params![KEY, "bare-token-0123456789"])?;
            if took != 1 || gave != 1 {
                return Err("the bare SQLite lock was not free".into());
            }
        }
        Ok(cycles as f64 / t.elapsed().as_secs_f64())
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::{Duration, Instant};

    use lock_runtime::Lock;
    use lock_runtime::registry::{self, AliasConfig};
    use tokio::runtime::{Builder, Runtime};
    use tokio_postgres::{Client, NoTls, Statement};

    use super::{KEY, LEASE_MS, ours_sync};
    use crate::BenchResult;
    use crate::measure::{Event, Rounds, analyse, median, mono_ns, spin_until};
    use crate::report::{Report, Target, short, us};
    use crate::support::postgres::PostgresServer;

    const ALIAS: &str = "bench-postgres";
    const WAITERS: usize = 4;
    const HOLD_NS: u64 = 1_000_000;

    /// A client of our own and its two prepared statements.
    struct Bare {
        client: Client,
        take: Statement,
        give: Statement,
    }

    pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
        let (rounds, cycles) = if quick { (6, 300) } else { (10, 1_500) };
        // Panics, saying what to install, when Postgres is missing.
        let server = PostgresServer::start();
        registry::add(ALIAS, AliasConfig::from_url(&server.url())?)?;
        ours_sync(ALIAS, 1)?;
        let rt = Builder::new_current_thread().enable_all().build()?;
        let bare = rt.block_on(connect(&server.url()))?;
        let rtt_us = rtt_us(&rt, &bare.client, if quick { 300 } else { 1_000 })?;
        report.line(&format!(
            "Postgres ({} rounds of {cycles} cycles); 1 round trip (SELECT 1, median) = {rtt_us:.1} us",
            rounds
        ));
        report.json.put("sql.postgres.rtt_us", rtt_us);

        // Sync: the bare side blocks on a current-thread runtime of its
        // own, the least a sync caller of an async client does.
        let sync = Rounds::run(
            rounds,
            || rt.block_on(bare_cycles(&bare, cycles)),
            || ours_sync(ALIAS, cycles),
        )?;
        sync.judge(
            report,
            "postgres sync",
            "sql.postgres.sync",
            "the same guarantees bare: upsert drawing the fence under the row lock, free by owner + NOTIFY; prepared, one connection",
            Some(0.9),
        );
        let async_current = rt.block_on(async {
            let mut r = Rounds::default();
            bare_cycles(&bare, cycles / 4).await?;
            ours_async(cycles / 4).await?;
            for round in 0..rounds {
                let (b, o) = if round % 2 == 0 {
                    let b = bare_cycles(&bare, cycles).await?;
                    (b, ours_async(cycles).await?)
                } else {
                    let o = ours_async(cycles).await?;
                    (bare_cycles(&bare, cycles).await?, o)
                };
                r.bare.push(b);
                r.ours.push(o);
            }
            BenchResult::Ok(r)
        })?;
        async_current.judge(
            report,
            "postgres async current-thread",
            "sql.postgres.async_current_thread",
            "the same statements on a tokio-postgres client in the same runtime",
            Some(0.9),
        );
        handoff(report, quick, rtt_us)
    }

    async fn connect(url: &str) -> BenchResult<Bare> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE SEQUENCE IF NOT EXISTS bare_fence; \
                 CREATE TABLE IF NOT EXISTS bare (key bytea PRIMARY KEY, owner text NOT NULL, \
                 fence bigint NOT NULL, acquired_at timestamptz NOT NULL, \
                 lease_end timestamptz NOT NULL)",
            )
            .await?;
        let take = client
            .prepare(
                "INSERT INTO bare AS l (key, owner, fence, acquired_at, lease_end) \
                 VALUES ($1, $2, nextval('bare_fence'), clock_timestamp(), \
                         clock_timestamp() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, \
                   fence = nextval('bare_fence'), \
                   acquired_at = excluded.acquired_at, lease_end = excluded.lease_end \
                 WHERE l.lease_end <= excluded.acquired_at \
                 RETURNING l.fence",
            )
            .await?;
        let give = client
            .prepare(
                "UPDATE bare SET owner = '', lease_end = clock_timestamp() \
                 WHERE key = $1 AND owner = $2 \
                 RETURNING pg_notify('bare_released', encode(key, 'hex'))",
            )
            .await?;
        Ok(Bare { client, take, give })
    }

    fn rtt_us(rt: &Runtime, client: &Client, pings: usize) -> BenchResult<f64> {
        let mut samples = Vec::with_capacity(pings);
        for _ in 0..pings {
            let t = Instant::now();
            rt.block_on(client.simple_query("SELECT 1"))?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(median(&samples))
    }

    async fn bare_cycles(bare: &Bare, cycles: usize) -> BenchResult<f64> {
        let key: &[u8] = b"lock:uncontended";
        let t = Instant::now();
        for _ in 0..cycles {
            let won = bare
                .client
                .query_opt(&bare.take, &[&key, &"bare-token-0123456789", &LEASE_MS])
                .await?;
            let gave = bare
                .client
                .query(&bare.give, &[&key, &"bare-token-0123456789"])
                .await?
                .len();
            if won.is_none() || gave != 1 {
                return Err("the bare Postgres lock was not free".into());
            }
        }
        Ok(cycles as f64 / t.elapsed().as_secs_f64())
    }

    async fn ours_async(cycles: usize) -> BenchResult<f64> {
        crate::measure::ours_async(ALIAS, KEY, cycles).await
    }

    /// `WAITERS` threads take one key in turn, holding it 1 ms: how long
    /// the lock lies free between a release and the next holder, when
    /// someone was waiting.
    fn handoff(report: &mut Report, quick: bool, rtt_us: f64) -> BenchResult<()> {
        let window = Duration::from_millis(if quick { 1_500 } else { 5_000 });
        let stop = Arc::new(AtomicBool::new(false));
        let start = mono_ns();
        let workers: Vec<_> = (0..WAITERS as u32)
            .map(|worker| {
                let stop = stop.clone();
                thread::spawn(move || -> BenchResult<Vec<Event>> {
                    let mut events = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let attempt = mono_ns();
                        let guard = Lock::new("handoff").alias(ALIAS).acquire()?;
                        let acquired = mono_ns();
                        spin_until(acquired + HOLD_NS);
                        let released = mono_ns();
                        guard.release()?;
                        events.push(Event {
                            worker,
                            attempt,
                            acquired,
                            released,
                        });
                    }
                    Ok(events)
                })
            })
            .collect();
        thread::sleep(window);
        let end = mono_ns();
        stop.store(true, Ordering::Relaxed);
        let mut events = Vec::new();
        for w in workers {
            events.extend(w.join().map_err(|_| "a hand-off worker panicked")??);
        }
        let c = analyse(events, WAITERS, start, end);
        if c.overlaps > 0 {
            return Err(format!("{} overlapping holds on Postgres", c.overlaps).into());
        }
        let in_rtts = c.handoff_p50_us / rtt_us;
        report.row(
            &format!("postgres contended: {WAITERS} threads, 1 ms holds"),
            &format!("{} acq/s", short(c.per_second)),
            &format!(
                "Jain {:.3}, longest wait {}",
                c.fairness,
                us(c.longest_wait_us)
            ),
        );
        report.judged(
            "postgres hand-off p50",
            &us(c.handoff_p50_us),
            &format!(
                "{} round trips (release's NOTIFY wakes the waiter); p99 {}",
                short(in_rtts),
                us(c.handoff_p99_us)
            ),
            Target::at_most(
                "postgres hand-off p50 in round trips",
                in_rtts,
                2.0,
                "<= 2 round trips",
            ),
        );
        let j = &mut report.json;
        j.put("sql.postgres.contended.per_s", c.per_second);
        j.put("sql.postgres.contended.fairness", c.fairness);
        j.put("sql.postgres.handoff_p50_us", c.handoff_p50_us);
        j.put("sql.postgres.handoff_p99_us", c.handoff_p99_us);
        j.put("sql.postgres.handoff_rtts", in_rtts);
        Ok(())
    }
}
