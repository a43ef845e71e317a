//! Waiting for a busy Redis lock: waiters are woken by the release itself
//! (not a poll), `fair = true` serves waiters of different processes in
//! arrival order, and many waiters share a fixed handful of connections.

mod support;

use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::AliasConfig;
use support::{RedisServer, RespValue, add_alias};

/// An alias whose poll interval is far longer than any test: whatever gets a
/// waiter its lock quickly must be a wake-up.
fn slow_polling_alias(url: &str, name: &'static str) -> &'static str {
    let cfg = AliasConfig::from_url(url)
        .unwrap()
        .poll_interval(Duration::from_secs(60));
    add_alias(name, cfg)
}

fn list(server: &RedisServer, key: &str) -> Vec<String> {
    match server.cmd(&["LRANGE", key, "0", "-1"]) {
        RespValue::Array(items) => items
            .into_iter()
            .map(|v| v.into_string().unwrap())
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// Microseconds on the wall clock a parent and its children share.
fn wall_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// A child's part: takes `key` on the alias `name` (in line if `fair`),
/// reports when the lock arrived, and releases it.
fn take_and_report(name: &'static str, key: &'static str, fair: bool) {
    let a = slow_polling_alias(&std::env::var("REDIS_URL").unwrap(), name);
    let guard = Lock::new(key).alias(a).fair(fair).acquire().unwrap();
    support::report(wall_us());
    guard.release().unwrap();
}

/// The parent's part once its one child waits for `held`: releases it and
/// answers how long the child took to get the lock.
fn release_to_child(held: lock_runtime::LockGuard, children: Vec<support::TestChild>) -> Duration {
    let released = wall_us();
    held.release().unwrap();
    let out = support::wait_children(children, Duration::from_secs(30));
    let got: u128 = out[0].reports()[0].parse().unwrap();
    Duration::from_micros((got - released) as u64)
}

#[test]
fn a_waiter_in_another_process_is_woken_by_the_release() {
    match support::child_role().as_deref() {
        Some(_) => take_and_report("wait-woken", "k", false),
        None => {
            let server = RedisServer::start();
            let a = slow_polling_alias(&server.url(), "wait-woken");
            let held = Lock::new("k").alias(a).acquire().unwrap();
            let children = support::spawn_children(
                &support::test_name!(),
                "waiter",
                1,
                &[("REDIS_URL", &server.url())],
            );
            // Let the child start waiting (it marks the lock as waited for).
            let deadline = Instant::now() + Duration::from_secs(10);
            while !server.get("lock:k").is_some_and(|v| v.ends_with('*')) {
                assert!(Instant::now() < deadline, "the child never waited");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(50));
            let latency = release_to_child(held, children);
            assert!(
                latency < Duration::from_secs(2),
                "the waiter took {latency:?}: it polled, it was not woken"
            );
        }
    }
}

/// A release that grants the lock to a waiter in line sends the grant on
/// the channel of the waiter's process, which that process subscribes to:
/// the waiter has the lock by that message, long before its next look (a
/// waiter in line looks every third of the waiter TTL, 1.67 s).
#[test]
fn a_grant_reaches_a_waiter_of_another_process_by_its_message() {
    match support::child_role().as_deref() {
        Some(_) => take_and_report("wait-granted", "g", true),
        None => {
            let server = RedisServer::start();
            let a = slow_polling_alias(&server.url(), "wait-granted");
            let held = Lock::new("g").alias(a).acquire().unwrap();
            let children = support::spawn_children(
                &support::test_name!(),
                "fair-waiter",
                1,
                &[("REDIS_URL", &server.url())],
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while list(&server, "lock%:line:lock:g").is_empty() {
                assert!(Instant::now() < deadline, "the child never joined the line");
                std::thread::sleep(Duration::from_millis(5));
            }
            // It subscribes (its process's channel first) after that look.
            let channels = || match server.cmd(&["PUBSUB", "CHANNELS", "lock%:wake:*"]) {
                RespValue::Array(items) => items.len(),
                other => panic!("{other:?}"),
            };
            while channels() == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the waiter's process never listened on its own channel"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            // Well past the child's look: its next one is over a second away.
            std::thread::sleep(Duration::from_millis(300));
            let latency = release_to_child(held, children);
            assert!(
                latency < Duration::from_secs(1),
                "the granted waiter took {latency:?}: it found the lock by a look, the grant did not reach it"
            );
        }
    }
}

#[test]
fn fair_waiters_of_different_processes_are_served_in_arrival_order() {
    const WAITERS: usize = 5;
    match support::child_role().as_deref() {
        Some(_) => {
            let a = slow_polling_alias(&std::env::var("REDIS_URL").unwrap(), "wait-fair");
            let order = std::env::var("ORDER").unwrap();
            let guard = Lock::new("k").alias(a).fair(true).acquire().unwrap();
            let mut conn = redis::Client::open(std::env::var("REDIS_URL").unwrap())
                .unwrap()
                .get_connection()
                .unwrap();
            // Recorded under the lock, so the list is the order of service.
            let () = redis::cmd("RPUSH")
                .arg("served")
                .arg(&order)
                .query(&mut conn)
                .unwrap();
            guard.release().unwrap();
        }
        None => {
            let server = RedisServer::start();
            let a = slow_polling_alias(&server.url(), "wait-fair");
            let held = Lock::new("k").alias(a).acquire().unwrap();
            let mut children = Vec::new();
            for i in 0..WAITERS {
                let order = i.to_string();
                children.extend(support::spawn_children(
                    &support::test_name!(),
                    "fair-waiter",
                    1,
                    &[("REDIS_URL", &server.url()), ("ORDER", &order)],
                ));
                // The next one starts only once this one stands in line.
                let deadline = Instant::now() + Duration::from_secs(10);
                while list(&server, "lock%:line:lock:k").len() < i + 1 {
                    assert!(
                        Instant::now() < deadline,
                        "waiter {i} never joined the line"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            held.release().unwrap();
            support::wait_children(children, Duration::from_secs(60));
            let expected: Vec<String> = (0..WAITERS).map(|i| i.to_string()).collect();
            assert_eq!(
                list(&server, "served"),
                expected,
                "served out of arrival order"
            );
            assert!(
                !server.exists("lock%:line:lock:k"),
                "the line is gone once everyone was served"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_waiters_share_a_few_connections() {
    const KEYS: usize = 1000;
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-many");
    let mut held = Vec::new();
    for i in 0..KEYS {
        held.push(
            Lock::new(format!("k{i}"))
                .alias(a)
                .expire(Duration::from_secs(60))
                .acquire_async()
                .await
                .unwrap(),
        );
    }
    let waiters: Vec<_> = (0..KEYS)
        .map(|i| {
            tokio::spawn(async move {
                let g = Lock::new(format!("k{i}"))
                    .alias(a)
                    .acquire_async()
                    .await
                    .unwrap();
                g.release_async().await.unwrap();
            })
        })
        .collect();
    // Wait until every waiter has marked its lock as waited for.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let marked = (0..KEYS)
            .filter(|i| {
                server
                    .get(&format!("lock:k{i}"))
                    .is_some_and(|v| v.contains('*'))
            })
            .count();
        if marked == KEYS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {marked} of {KEYS} waiters are waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clients = match server.cmd(&["CLIENT", "LIST"]) {
        RespValue::Bulk(b) => String::from_utf8(b).unwrap().lines().count(),
        other => panic!("{other:?}"),
    };
    // This runtime's connection, the subscriber, the test's own probe, and
    // a few pooled connections at most.
    assert!(clients <= 8, "{clients} connections for {KEYS} waiters");
    let started = Instant::now();
    for g in held {
        g.release_async().await.unwrap();
    }
    for w in waiters {
        w.await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken waiters took {:?}",
        started.elapsed()
    );
}

/// A regression test: a waiter used to register for wake-ups after its busy
/// reply and then sleep without looking again when another waiter had
/// already subscribed the channel, so a release in between was never heard;
/// in a fair line that left the lock reserved for a sleeping head until its
/// liveness refresh (1.7 s). No wait here comes anywhere near that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wake_up_is_lost_between_a_busy_reply_and_the_registration() {
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-lost-wakeup");
    for fair in [false, true] {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    let mut longest = Duration::ZERO;
                    for _ in 0..100 {
                        let started = Instant::now();
                        let g = Lock::new("k")
                            .alias(a)
                            .fair(fair)
                            .acquire_async()
                            .await
                            .unwrap();
                        longest = longest.max(started.elapsed());
                        let hold = Instant::now() + Duration::from_millis(1);
                        while Instant::now() < hold {
                            std::hint::spin_loop();
                        }
                        g.release_async().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    longest
                })
            })
            .collect();
        for w in workers {
            let longest = w.await.unwrap();
            assert!(
                longest < Duration::from_millis(1200),
                "a waiter slept through releases for {longest:?} (fair: {fair})"
            );
        }
    }
}

#[test]
fn a_crashed_waiter_does_not_block_the_line_for_long() {
    match support::child_role().as_deref() {
        Some(_) => {
            let a = slow_polling_alias(&std::env::var("REDIS_URL").unwrap(), "wait-crash");
            let guard = Lock::new("k").alias(a).fair(true).acquire().unwrap();
            support::report("got it");
            guard.release().unwrap();
        }
        None => {
            let server = RedisServer::start();
            let a = slow_polling_alias(&server.url(), "wait-crash");
            let held = Lock::new("k").alias(a).acquire().unwrap();
            let url = server.url();
            let env = [("REDIS_URL", url.as_str())];
            let in_line = |n: usize| {
                let deadline = Instant::now() + Duration::from_secs(10);
                while list(&server, "lock%:line:lock:k").len() < n {
                    assert!(Instant::now() < deadline, "a waiter never joined the line");
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            let mut doomed = support::spawn_children(&support::test_name!(), "doomed", 1, &env);
            in_line(1);
            let survivor = support::spawn_children(&support::test_name!(), "survivor", 1, &env);
            in_line(2);
            // The head of the line dies without leaving it.
            doomed[0].child.kill().unwrap();
            doomed[0].child.wait().unwrap();
            let released = Instant::now();
            held.release().unwrap();
            let out = support::wait_children(survivor, Duration::from_secs(30));
            let waited = released.elapsed();
            assert_eq!(out[0].reports(), ["got it"]);
            // The release reserved the lock for the dead head; its place and
            // the reservation expire within the waiter TTL (5 s), and the
            // survivor notices at its next refresh (every 1.7 s).
            assert!(
                waited < Duration::from_secs(8),
                "the line was blocked for {waited:?}"
            );
        }
    }
}

/// A release hands the lock to the head of the line with a short lease (the
/// waiter TTL, 5 s), so that a head that died meanwhile blocks the line only
/// that long; the new holder then tops it up to the lease it asked for.
#[test]
fn a_lock_handed_over_in_line_gets_the_lease_it_asked_for() {
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-top-up");
    for (key, expire) in [("fixed", Some(Duration::from_secs(20))), ("renewed", None)] {
        let held = Lock::new(key).alias(a).acquire().unwrap();
        let waiter = std::thread::spawn(move || {
            let lock = Lock::new(key).alias(a).fair(true);
            let lock = match expire {
                Some(e) => lock.expire(e),
                None => lock,
            };
            lock.acquire().unwrap()
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while list(&server, &format!("lock%:line:lock:{key}")).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the waiter never joined the line"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let it finish its look after registering and fall asleep: a release
        // racing that look would let it take the lock itself, with its full
        // lease, instead of being handed it.
        std::thread::sleep(Duration::from_millis(300));
        held.release().unwrap();
        let guard = waiter.join().unwrap();
        let handed = server.pttl(&format!("lock:{key}"));
        assert!(
            handed <= 5_000,
            "handed over with the waiter TTL at most, PTTL {handed}"
        );
        // The top-up (or the first renewal) comes at a third of that; without
        // it the key would have under 1.5 s left by now.
        std::thread::sleep(Duration::from_millis(3_500));
        let pttl = server.pttl(&format!("lock:{key}"));
        assert!(
            pttl > 15_000,
            "{key}: not topped up to the asked lease, PTTL {pttl}"
        );
        assert!(!guard.is_lost());
        assert!(
            guard.remaining().unwrap() > Duration::from_secs(15),
            "{:?}",
            guard.remaining()
        );
        guard.release().unwrap();
    }
}

fn commands(server: &RedisServer) -> u64 {
    server.info_stats()["total_commands_processed"]
        .parse()
        .unwrap()
}

/// Until the lock `k` is marked as waited for.
async fn until_someone_waits(server: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.get("lock:k").is_some_and(|v| v.ends_with('*')) {
        assert!(Instant::now() < deadline, "nobody waits");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_waiters_in_one_process_costs_redis_one_waiter() {
    const WAITERS: usize = 1000;
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-burst");
    let held = Lock::new("k").alias(a).acquire_async().await.unwrap();
    let before = commands(&server);
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            tokio::spawn(async move {
                let g = Lock::new("k").alias(a).acquire_async().await.unwrap();
                tokio::task::yield_now().await;
                g.release_async().await.unwrap();
            })
        })
        .collect();
    until_someone_waits(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The probe's own GETs and INFO count too; a thousand looks would not fit.
    let spent = commands(&server) - before;
    assert!(
        spent < 100,
        "{spent} commands for {WAITERS} waiters of one process"
    );
    let started = Instant::now();
    held.release_async().await.unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{WAITERS} hand-offs took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_crowd_of_waiters_sends_redis_next_to_nothing() {
    const WAITERS: usize = 1000;
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-cancelled");
    let held = Lock::new("k").alias(a).acquire_async().await.unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| tokio::spawn(Lock::new("k").alias(a).acquire_async()))
        .collect();
    until_someone_waits(&server).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        list(&server, "lock%:line:lock:k").len(),
        1,
        "one waiter of the process stands in Redis's line"
    );
    let before = commands(&server);
    for w in &waiters {
        w.abort();
    }
    for w in waiters {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The waiter that stood in Redis leaves its place; the others, queued
    // in the process, had sent nothing, so there is nothing to give back
    // (this was one release by token each). The probe's INFO counts too.
    let spent = commands(&server) - before;
    assert!(
        spent < 50,
        "{spent} commands to cancel {WAITERS} waiters of one process"
    );
    assert!(
        list(&server, "lock%:line:lock:k").is_empty(),
        "nobody is left in line"
    );
    held.release_async().await.unwrap();
    let again = Lock::new("k").alias(a).try_acquire_async().await.unwrap();
    assert!(again.is_some(), "the lock is free for the next one");
}

#[test]
fn a_release_hands_the_lock_to_a_waiter_of_its_own_process_without_a_message() {
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-local");
    let held = Lock::new("k").alias(a).acquire().unwrap();
    let first = held.fencing_token().unwrap();
    let waiter = std::thread::spawn(move || Lock::new("k").alias(a).acquire().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.get("lock:k").is_some_and(|v| v.ends_with('*')) {
        assert!(Instant::now() < deadline, "the waiter never waited");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let published = server.calls("publish");
    held.release().unwrap();
    let got = waiter.join().unwrap();
    let second = got.fencing_token().unwrap();
    assert!(
        second > first,
        "fencing tokens go on: {first} then {second}"
    );
    assert_eq!(
        server.calls("publish"),
        published,
        "the hand-off within the process went without a message"
    );
    assert!(!got.is_lost());
    got.release().unwrap();
    assert!(!server.exists("lock:k"), "the waiter's release freed it");
}

/// A waiter that is not `fair` stands in Redis's line from its second look
/// when another process holds the lock: that process's release then grants
/// it the lock and tells its process alone, instead of waking a waiter in
/// every waiting process to race for it. Before, it barged for its first
/// 10 ms, looking three times before it joined.
#[test]
fn a_waiter_joins_the_line_at_once_when_another_process_holds_the_lock() {
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-remote");
    // This process's record and scripts are in place before the count.
    drop(Lock::new("warm-up").alias(a).acquire().unwrap());
    // Held by another process: its token's head ('.' is in no token of ours).
    let foreign = "...........abcdefghijk";
    server.cmd(&["SET", "lock:r", &format!("{foreign}60000"), "PX", "60000"]);
    server.cmd(&["CONFIG", "RESETSTAT"]);
    let waiter = std::thread::spawn(move || {
        Lock::new("r")
            .alias(a)
            .wait_for(Duration::from_secs(20))
            .acquire()
            .map(|g| g.fencing_token())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(&server, "lock%:line:lock:r").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the waiter never joined the line"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Past the 10 ms a barging waiter looked for before it joined.
    std::thread::sleep(Duration::from_millis(100));
    // Scripts the server does not know yet are loaded and run again.
    let stats = server.info("commandstats");
    let evalsha = &stats["cmdstat_evalsha"];
    let field = |name: &str| -> u64 {
        evalsha
            .split(',')
            .find_map(|f| f.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        field("calls=") - field("failed_calls="),
        1,
        "the plain first attempt, then one look, which joined the line: {evalsha}"
    );
    // The holder goes the way a release goes: the line's head gets it.
    let forced = lock_runtime::registry::alias(a)
        .unwrap()
        .force_release("r", "the other process's release")
        .unwrap();
    assert!(
        forced.removed.is_some(),
        "the other process's lock was there"
    );
    let granted = waiter.join().unwrap().unwrap();
    assert!(granted.is_some(), "a granted lock has its fencing token");
}

/// A waiter that gives up behind a holder of its own process never stood
/// in Redis's line (its looks find the holder local and only mark the lock
/// as waited for), so it sends no leave: in a burst of waiters timing out,
/// a leave each was a round trip on the connection the hand-offs use.
#[test]
fn a_waiter_that_gives_up_behind_its_own_process_holder_sends_no_leave() {
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-own");
    let held = Lock::new("own").alias(a).acquire().unwrap();
    server.cmd(&["CONFIG", "RESETSTAT"]);
    // Its deadline comes before the 10 ms after which a waiter joins the
    // line behind any holder.
    let err = Lock::new("own")
        .alias(a)
        .wait_for(Duration::from_millis(5))
        .acquire()
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        server.calls("evalsha") >= 1,
        "the waiter looked through the line's script"
    );
    // A leave is the only script that removes a place (`ZREM`); a look
    // behind a local holder neither joins nor leaves.
    assert_eq!(server.calls("zrem"), 0, "a leave was sent");
    assert!(list(&server, "lock%:line:lock:own").is_empty());
    held.release().unwrap();
}

/// Waiters that give up while a release in their own process hands them the
/// lock leave no lock behind: the release granted it before the waiter gave
/// up, so the waiter passes it on as it leaves (it used to stay held, for
/// nobody, until its lease ran out). Rounds of tasks with deadlines shorter
/// than the crowd needs make many such crossings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_give_up_as_the_lock_is_handed_to_them_leave_it_free() {
    let server = RedisServer::start();
    let a = slow_polling_alias(&server.url(), "wait-give-up");
    for round in 0..10 {
        let key = format!("crowd-{round}");
        let tasks: Vec<_> = (0..1_000)
            .map(|_| {
                let lock = Lock::new(key.clone())
                    .alias(a)
                    .wait_for(Duration::from_millis(20));
                tokio::spawn(async move {
                    match lock.acquire_async().await {
                        Ok(guard) => {
                            tokio::task::yield_now().await;
                            guard.release_async().await.unwrap();
                        }
                        Err(e) => assert!(e.is_timeout(), "{e}"),
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // What is passed on in the background has a moment to land.
        let lock_key = format!("lock:{key}");
        let deadline = Instant::now() + Duration::from_secs(1);
        while server.cmd(&["EXISTS", &lock_key]) != RespValue::Int(0) {
            assert!(
                Instant::now() < deadline,
                "round {round}: {lock_key} is still held after every waiter ended: {:?}",
                server.cmd(&["GET", &lock_key]).as_str().map(str::to_owned)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
