//! The Postgres store against a real server this file starts: exclusion
//! and fencing order across processes, a server restart and a terminated backend under
//! holders, NOTIFY hand-off to a waiter in another process (timed), the
//! clean-up beside live lockers, and the table created by four processes
//! at once.
//!
//! `LOCK_PG_SECTIONS=1000 cargo test --features postgres --test postgres`
//! is the long form of the exclusion test (400 sections a process by
//! default, to keep the file well under a minute).

#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError};
use support::postgres::PostgresServer;

const PROCESSES: usize = 4;
const CHILDREN_TIMEOUT: Duration = Duration::from_secs(120);

fn sections() -> usize {
    std::env::var("LOCK_PG_SECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
}

fn url_from_parent() -> String {
    std::env::var("PG_URL").expect("the parent passes PG_URL")
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

/// Whether `e` is a store failure of the connection kind: the server is
/// away or the connection was cut.
fn is_connection_error(e: &LockError) -> bool {
    matches!(e, LockError::Backend { source, .. } if source.is_connection())
}

/// A counter in a table of its own, on one connection of the test's.
struct Counter {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Counter {
    fn connect(url: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect for the counter");
            tokio::spawn(conn);
            client
        });
        Self { rt, client }
    }

    /// Reads the counter and writes it back plus one in two statements:
    /// lost updates unless the lock excludes.
    fn unsafe_increment(&self) {
        self.rt.block_on(async {
            let n: i64 = self
                .client
                .query_one("SELECT n FROM counter", &[])
                .await
                .expect("read the counter")
                .get(0);
            tokio::task::yield_now().await;
            self.client
                .execute("UPDATE counter SET n = $1", &[&(n + 1)])
                .await
                .expect("write the counter");
        });
    }

    /// Writes `fence` to the fenced resource, which accepts only numbers
    /// above the last it accepted: whether it did.
    fn fenced_write(&self, fence: u64) -> bool {
        let fence = i64::try_from(fence).expect("fence within bigint");
        self.rt.block_on(async {
            self.client
                .execute("UPDATE fenced SET f = $1 WHERE f < $1", &[&fence])
                .await
                .expect("write the fenced resource")
                == 1
        })
    }
}

#[test]
fn exclusion_across_four_processes() {
    if support::child_role().is_some() {
        let url = url_from_parent();
        registry::add(
            "pg",
            AliasConfig::from_url(&format!("{url}?poll_ms=2")).unwrap(),
        )
        .unwrap();
        let counter = Counter::connect(&url);
        let mut stale = 0;
        for _ in 0..sections() {
            let guard = Lock::new("counter").alias("pg").acquire().unwrap();
            counter.unsafe_increment();
            let fence = guard
                .fencing_token()
                .expect("Postgres gives fencing tokens");
            if !counter.fenced_write(fence) {
                stale += 1;
            }
            guard.release().unwrap();
        }
        support::report(format!("done {} stale {stale}", sections()));
        return;
    }
    let server = PostgresServer::start();
    server.sql(
        "CREATE TABLE counter (n bigint); INSERT INTO counter VALUES (0); \
         CREATE TABLE fenced (f bigint); INSERT INTO fenced VALUES (0)",
    );
    let url = server.url();
    let started = Instant::now();
    let children = support::wait_children(
        support::spawn_children(
            &support::test_name!(),
            "worker",
            PROCESSES,
            &[("PG_URL", url.as_str())],
        ),
        CHILDREN_TIMEOUT,
    );
    for c in &children {
        assert_eq!(
            c.reports(),
            vec![format!("done {} stale 0", sections())],
            "a holder's fencing token was below one an earlier holder wrote with"
        );
    }
    assert_eq!(
        server.number("SELECT n FROM counter"),
        (PROCESSES * sections()) as i64,
        "updates were lost: the lock let two processes in at once"
    );
    assert_eq!(
        server.number("SELECT count(*) FROM lock_leases WHERE owner <> ''"),
        0,
        "a lock was left behind (rows stay after a release, ownerless)"
    );
    println!(
        "{PROCESSES} processes x {} sections in {:?}",
        sections(),
        started.elapsed()
    );
}

#[test]
fn server_restart_under_holders() {
    let server = PostgresServer::start();
    let alias = "pg-restart";
    registry::add(
        alias,
        AliasConfig::from_url(&format!(
            "{}?timeout_ms=300&connect_timeout_ms=300",
            server.url()
        ))
        .unwrap(),
    )
    .unwrap();
    let short = Lock::new("short")
        .alias(alias)
        .expire(Duration::from_millis(800))
        .acquire()
        .unwrap();
    let long = Lock::new("long")
        .alias(alias)
        .expire(Duration::from_secs(30))
        .acquire()
        .unwrap();
    server.stop();
    // Down past the short lease: its holder cannot renew in time.
    let started = Instant::now();
    let err = Lock::new("other").alias(alias).try_acquire().unwrap_err();
    assert!(is_connection_error(&err), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "errors within the timeouts"
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        short.is_lost(),
        "the short lease ran out while the server was down"
    );
    server.restart();
    // The next calls reconnect by themselves; rows survived the restart.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        match Lock::new("short").alias(alias).try_acquire() {
            Ok(Some(g)) => break g,
            Ok(None) => panic!("the expired lease still holds the key"),
            Err(e) if Instant::now() < deadline => {
                assert!(is_connection_error(&e), "{e:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no reconnect after the restart: {e:?}"),
        }
    };
    assert!(
        Lock::new("long")
            .alias(alias)
            .try_acquire()
            .unwrap()
            .is_none(),
        "the long lease survived the restart"
    );
    assert!(!long.is_lost());
    fresh.release().unwrap();
    long.release().unwrap();
}

#[test]
fn terminated_backend_under_a_holder() {
    let server = PostgresServer::start();
    let alias = "pg-terminate";
    registry::add(alias, AliasConfig::from_url(&server.url()).unwrap()).unwrap();
    let guard = Lock::new("held").alias(alias).acquire().unwrap();
    let killed = server.number(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'lock-runtime'",
    );
    assert!(killed >= 1, "the store's connections were found");
    // A call may meet the dead connection before it is noticed; it then
    // fails as a connection error and the next one reconnects.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Lock::new("held").alias(alias).try_acquire() {
            Ok(None) => break,
            Ok(Some(_)) => panic!("the lock was free while held"),
            Err(e) if Instant::now() < deadline => {
                assert!(is_connection_error(&e), "{e:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no reconnect: {e:?}"),
        }
    }
    assert!(!guard.is_lost());
    guard.release().unwrap();
    assert!(
        Lock::new("held")
            .alias(alias)
            .try_acquire()
            .unwrap()
            .is_some()
    );
}

#[test]
fn notify_wakes_a_waiter_in_another_process() {
    // Polling alone would take a second at least: the waiter's safety look.
    const POLL: Duration = Duration::from_secs(5);
    if support::child_role().is_some() {
        let url = url_from_parent();
        registry::add(
            "pg",
            AliasConfig::from_url(&format!("{url}?poll_ms={}", POLL.as_millis())).unwrap(),
        )
        .unwrap();
        let guard = Lock::new("handoff").alias("pg").acquire().unwrap();
        support::report(format!("acquired_at_us {}", unix_micros()));
        guard.release().unwrap();
        return;
    }
    let server = PostgresServer::start();
    let url = server.url();
    registry::add("pg-notify", AliasConfig::from_url(&url).unwrap()).unwrap();
    let held = Lock::new("handoff").alias("pg-notify").acquire().unwrap();
    let child = support::spawn_children(
        &support::test_name!(),
        "waiter",
        1,
        &[("PG_URL", url.as_str())],
    );
    // Wait until the child's LISTEN is in place (it is the only listener).
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.number(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND state = 'idle'",
    ) == 0
    {
        assert!(Instant::now() < deadline, "the waiter never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let released_at = unix_micros();
    held.release().unwrap();
    let out = support::wait_children(child, CHILDREN_TIMEOUT);
    let reports = out[0].reports();
    let acquired_at: u128 = reports[0]
        .strip_prefix("acquired_at_us ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad report {reports:?}"));
    let hand_off = Duration::from_micros((acquired_at.saturating_sub(released_at)) as u64);
    println!("NOTIFY hand-off to a waiter in another process: {hand_off:?}");
    assert!(
        hand_off < Duration::from_millis(250),
        "hand-off took {hand_off:?}: the waiter was not woken by the release (poll {POLL:?})"
    );
}

#[test]
fn lost_listen_connection_comes_back() {
    let server = PostgresServer::start();
    let alias = "pg-relisten";
    registry::add(
        alias,
        AliasConfig::from_url(&format!("{}?poll_ms=5000", server.url())).unwrap(),
    )
    .unwrap();
    let held = Lock::new("k").alias(alias).acquire().unwrap();
    let waiter = std::thread::spawn(move || {
        let guard = Lock::new("k").alias(alias).acquire().unwrap();
        let at = Instant::now();
        guard.release().unwrap();
        at
    });
    let listeners =
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND state = 'idle'";
    let wait_for_listener = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.number(listeners) == 0 {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_listener("the waiter never listened");
    let cut = server.number(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'",
    );
    assert_eq!(cut, 1, "one LISTEN connection per store");
    std::thread::sleep(Duration::from_millis(100));
    wait_for_listener("the LISTEN connection did not come back");
    std::thread::sleep(Duration::from_millis(200));
    let released = Instant::now();
    held.release().unwrap();
    let hand_off = waiter.join().unwrap().saturating_duration_since(released);
    println!("hand-off after the LISTEN connection came back: {hand_off:?}");
    assert!(
        hand_off < Duration::from_millis(250),
        "took {hand_off:?}: the waiter was not woken by the release after LISTEN came back"
    );
}

#[test]
fn clean_up_removes_only_expired_rows_beside_four_lockers() {
    const STALE: i64 = 50;
    if support::child_role().is_some() {
        let url = url_from_parent();
        registry::add(
            "pg",
            AliasConfig::from_url(&format!("{url}?poll_ms=2")).unwrap(),
        )
        .unwrap();
        let mine = format!("own-{}", support::child_index().unwrap());
        let own = Lock::new(mine).alias("pg").acquire().unwrap();
        let counter = Counter::connect(&url);
        for _ in 0..100 {
            let guard = Lock::new("counter").alias("pg").acquire().unwrap();
            counter.unsafe_increment();
            guard.release().unwrap();
        }
        assert!(!own.is_lost());
        own.release().unwrap();
        support::report("done");
        return;
    }
    let server = PostgresServer::start();
    let url = server.url();
    registry::add("pg-clean", AliasConfig::from_url(&url).unwrap()).unwrap();
    // Creates the table.
    drop(Lock::new("warm-up").alias("pg-clean").acquire().unwrap());
    server.sql("CREATE TABLE counter (n bigint); INSERT INTO counter VALUES (0)");
    server.sql(&format!(
        "INSERT INTO lock_leases SELECT convert_to('lock:stale-' || i, 'UTF8'), 'gone', nextval('lock_leases_fence'), \
           now() - interval '2 hours', now() - interval '1 hour' FROM generate_series(1, {STALE}) AS i; \
         INSERT INTO lock_leases SELECT convert_to('lock:recent-' || i, 'UTF8'), 'gone', nextval('lock_leases_fence'), \
           now() - interval '2 minutes', now() - interval '1 second' FROM generate_series(1, 10) AS i"
    ));
    let children = support::spawn_children(
        &support::test_name!(),
        "locker",
        PROCESSES,
        &[("PG_URL", url.as_str())],
    );
    let alias = registry::alias("pg-clean").unwrap();
    let mut removed = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        removed += alias.clean_up(Duration::from_secs(60)).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let outputs = support::wait_children(children, CHILDREN_TIMEOUT);
    for c in &outputs {
        assert_eq!(c.reports(), vec!["done".to_owned()]);
    }
    assert_eq!(
        removed, STALE as u64,
        "exactly the rows that ended over a minute ago"
    );
    assert_eq!(
        server.number(
            "SELECT count(*) FROM lock_leases WHERE convert_from(key, 'UTF8') LIKE 'lock:recent-%'"
        ),
        10
    );
    assert_eq!(
        server.number("SELECT n FROM counter"),
        (PROCESSES * 100) as i64,
        "a clean-up freed a held lock"
    );
}

#[test]
fn table_created_by_four_processes_at_once() {
    if support::child_role().is_some() {
        let url = url_from_parent();
        let start: u128 = std::env::var("START_AT_US").unwrap().parse().unwrap();
        registry::add(
            "pg",
            AliasConfig::from_url(&format!("{url}?table=raced")).unwrap(),
        )
        .unwrap();
        let now = unix_micros();
        if start > now {
            std::thread::sleep(Duration::from_micros((start - now) as u64));
        }
        let key = format!("k{}", support::child_index().unwrap());
        let guard = Lock::new(key).alias("pg").acquire().unwrap();
        support::report(format!("fence {}", guard.fencing_token().unwrap()));
        guard.release().unwrap();
        return;
    }
    let server = PostgresServer::start();
    let url = server.url();
    let start = (unix_micros() + 1_500_000).to_string();
    let outputs = support::wait_children(
        support::spawn_children(
            &support::test_name!(),
            "creator",
            PROCESSES,
            &[("PG_URL", url.as_str()), ("START_AT_US", start.as_str())],
        ),
        CHILDREN_TIMEOUT,
    );
    let mut fences: Vec<String> = outputs.iter().flat_map(|c| c.reports()).collect();
    fences.sort();
    fences.dedup();
    assert_eq!(fences.len(), PROCESSES, "four grants, four fencing numbers");
    assert_eq!(
        server.number("SELECT count(*) FROM pg_class WHERE relname = 'raced'"),
        1
    );
}
