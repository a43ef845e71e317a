//! The quorum (Redlock) backend over three or five independent
//! `redis-server`s: it keeps granting exclusive locks with two of five nodes
//! down, fails fast and says why with three down (or when its lease runs
//! out first), recovers when they return, is not slowed by a paused node
//! while a majority answers, and gives back what a paused node grants late.

mod support;

use std::time::{Duration, Instant};

use lock_runtime::backend::BackendErrorKind;
use lock_runtime::backend::redis::QuorumError;
use lock_runtime::registry::AliasConfig;
use lock_runtime::{Lock, LockError};
use support::{RedisServer, add_alias};

const NODE_TIMEOUT: Duration = Duration::from_millis(200);

fn nodes(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

fn quorum_alias(name: &'static str, urls: &[String]) -> &'static str {
    let cfg = AliasConfig::quorum(urls.to_vec())
        .connect_timeout(NODE_TIMEOUT)
        .command_timeout(NODE_TIMEOUT)
        .poll_interval(Duration::from_millis(2));
    add_alias(name, cfg)
}

fn urls(servers: &[RedisServer]) -> Vec<String> {
    servers.iter().map(|s| s.url()).collect()
}

/// Whether `cond` holds within a second, which on a loaded machine is
/// still many round trips.
fn soon(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn quorum_error(err: &LockError) -> &QuorumError {
    match err {
        LockError::Backend { source, .. } => {
            assert_eq!(source.kind(), BackendErrorKind::Quorum, "{err}");
            source
                .inner()
                .downcast_ref::<QuorumError>()
                .expect("the source is a QuorumError")
        }
        other => panic!("expected a quorum error, got {other:?}"),
    }
}

const PROCESSES: usize = 4;
/// 1,600 sections in all: each costs a few quorum rounds against two dead
/// nodes, and the children must finish within `CHILD_TIMEOUT` on a loaded
/// 2-core machine (4,000 took 40-64 s there).
const SECTIONS: usize = 400;

#[test]
fn two_nodes_down_still_exclude_across_processes() {
    match support::child_role().as_deref() {
        Some(_) => {
            let nodes: Vec<String> = std::env::var("NODES")
                .unwrap()
                .split(' ')
                .map(str::to_owned)
                .collect();
            let a = quorum_alias("quorum-children", &nodes);
            let data = redis::Client::open(std::env::var("DATA_URL").unwrap()).unwrap();
            let mut conn = data.get_connection().unwrap();
            let mut last_fence = 0;
            for _ in 0..SECTIONS {
                let guard = Lock::new("counter")
                    .alias(a)
                    .expire(Duration::from_secs(10))
                    .acquire()
                    .expect("acquire");
                let fence = guard.fencing_token().expect("quorum fencing");
                assert!(
                    fence > last_fence,
                    "fencing went back: {fence} after {last_fence}"
                );
                last_fence = fence;
                let n: Option<u64> = redis::cmd("GET").arg("counter").query(&mut conn).unwrap();
                std::thread::yield_now();
                let () = redis::cmd("SET")
                    .arg("counter")
                    .arg(n.unwrap_or(0) + 1)
                    .query(&mut conn)
                    .unwrap();
                guard.release().expect("still held");
            }
            support::report(format!("done {SECTIONS}"));
        }
        None => {
            let servers = nodes(5);
            let data = RedisServer::start();
            servers[1].stop();
            servers[3].stop();
            let list = urls(&servers).join(" ");
            let children = support::run_children(
                &support::test_name!(),
                "worker",
                PROCESSES,
                &[("NODES", list.as_str()), ("DATA_URL", data.url().as_str())],
            );
            assert!(
                children
                    .iter()
                    .all(|c| c.reports() == [format!("done {SECTIONS}")])
            );
            assert_eq!(
                data.get("counter"),
                Some((PROCESSES * SECTIONS).to_string()),
                "updates were lost"
            );
        }
    }
}

#[test]
fn three_nodes_down_fail_fast_naming_the_lost_quorum_then_recover() {
    let servers = nodes(5);
    let a = quorum_alias("quorum-three-down", &urls(&servers));
    drop(Lock::new("k").alias(a).acquire().expect("all nodes up"));
    for s in &servers[..3] {
        s.stop();
    }
    let started = Instant::now();
    let err = Lock::new("k").alias(a).acquire().unwrap_err();
    let took = started.elapsed();
    assert!(
        took < NODE_TIMEOUT * 3 + Duration::from_millis(500),
        "took {took:?}"
    );
    let q = quorum_error(&err);
    assert_eq!(q.needed, 3);
    assert_eq!(q.granted(), 2);
    assert_eq!(q.unreachable().count(), 3);
    let msg = err.to_string();
    assert!(
        msg.contains("quorum lost: 2 of 5 nodes agreed, 3 needed"),
        "{msg}"
    );
    assert!(
        msg.contains(&servers[0].url()),
        "the message names the dead nodes: {msg}"
    );

    for s in &servers[..3] {
        s.restart();
    }
    let guard = Lock::new("k")
        .alias(a)
        .acquire()
        .expect("recovered without reconfiguring");
    // Both return once a majority answered; the other nodes follow.
    let holding = || servers.iter().filter(|s| s.exists("lock:k")).count();
    assert!(
        soon(|| holding() == 5),
        "the lock is set on every node that answers: {} of 5",
        holding()
    );
    guard.release().unwrap();
    assert!(soon(|| holding() == 0), "and released on all of them");
}

#[test]
fn a_paused_node_costs_at_most_the_node_timeout() {
    let servers = nodes(5);
    let a = quorum_alias("quorum-paused", &urls(&servers));
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    servers[2].pause();
    let started = Instant::now();
    let guard = Lock::new("k")
        .alias(a)
        .acquire()
        .expect("four of five nodes answer");
    let took = started.elapsed();
    servers[2].resume();
    assert!(
        took < NODE_TIMEOUT + Duration::from_millis(300),
        "a paused node stalled the acquirer for {took:?}"
    );
    guard.release().unwrap();
}

#[test]
fn a_lock_held_on_a_majority_is_refused_and_fencing_survives_expiry() {
    let servers = nodes(3);
    let a = quorum_alias("quorum-busy", &urls(&servers));
    let first = Lock::new("k")
        .alias(a)
        .expire(Duration::from_millis(300))
        .acquire()
        .unwrap();
    let err = Lock::new("k").alias(a).wait(false).acquire().unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    std::thread::sleep(Duration::from_millis(350));
    assert!(first.is_lost());
    let second = Lock::new("k")
        .alias(a)
        .wait(false)
        .acquire()
        .expect("the first lease ran out");
    assert!(
        second.fencing_token() > first.fencing_token(),
        "fencing tokens increase across expiry"
    );
    assert!(first.release().unwrap_err().is_not_held());
    second.release().unwrap();
}

/// The per-node timeout of the three-node tests below.
const SLOW_NODE_TIMEOUT: Duration = Duration::from_millis(300);
const THREADS: usize = 4;
const SHORT_SECTIONS: usize = 40;

fn three_node_alias(name: &'static str, urls: &[String]) -> &'static str {
    let cfg = AliasConfig::quorum(urls.to_vec())
        .connect_timeout(SLOW_NODE_TIMEOUT)
        .command_timeout(SLOW_NODE_TIMEOUT)
        .poll_interval(Duration::from_millis(2));
    add_alias(name, cfg)
}

/// The slowest of a few acquire-then-release pairs on an idle key.
fn slowest_acquire_release(alias: &'static str) -> Duration {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            let guard = Lock::new("solo").alias(alias).acquire().unwrap();
            guard.release().unwrap();
            started.elapsed()
        })
        .max()
        .unwrap()
}

/// `SHORT_SECTIONS` critical sections on one key, shared by `THREADS`
/// threads; each section checks that nobody else is inside.
fn contended_sections(alias: &'static str) -> Duration {
    let inside = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let inside = std::sync::Arc::clone(&inside);
            std::thread::spawn(move || {
                for _ in 0..SHORT_SECTIONS / THREADS {
                    let guard = Lock::new("shared")
                        .alias(alias)
                        .expire(Duration::from_secs(10))
                        .acquire()
                        .unwrap();
                    assert!(!inside.swap(true, std::sync::atomic::Ordering::SeqCst));
                    std::thread::sleep(Duration::from_millis(1));
                    inside.store(false, std::sync::atomic::Ordering::SeqCst);
                    guard.release().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    started.elapsed()
}

#[test]
fn one_paused_node_of_three_costs_next_to_nothing() {
    let servers = nodes(3);
    let a = three_node_alias("quorum-one-of-three-paused", &urls(&servers));
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    let pair_up = slowest_acquire_release(a);
    let sections_up = contended_sections(a);

    servers[2].pause();
    let pair_paused = slowest_acquire_release(a);
    let sections_paused = contended_sections(a);
    servers[2].resume();
    eprintln!(
        "acquire+release: {pair_up:?} all up, {pair_paused:?} one paused; \
         {SHORT_SECTIONS} sections by {THREADS} threads: {sections_up:?} all up, {sections_paused:?} one paused"
    );

    // With all nodes up a pair takes a few round trips; a paused node must
    // not add its timeout to it. Half the timeout leaves room for a loaded
    // machine while still catching one wait for the paused node.
    assert!(
        pair_paused < SLOW_NODE_TIMEOUT / 2 + pair_up,
        "a paused node stalled an acquire+release for {pair_paused:?} ({pair_up:?} with all up)"
    );
    // Each section waiting out the timeout once would take 40 × 300 ms.
    assert!(
        sections_paused < sections_up * 5 + SLOW_NODE_TIMEOUT * 2,
        "{SHORT_SECTIONS} sections took {sections_paused:?} with a node paused, {sections_up:?} with all up"
    );
}

/// Waits until `key` is gone from `server`, or fails after `within`.
fn gone_within(server: &RedisServer, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while server.exists(key) {
        assert!(
            Instant::now() < deadline,
            "{key} is stranded on {} (pttl {} ms)",
            server.url(),
            server.pttl(key)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_paused_node_that_grants_after_the_release_gives_the_lock_back() {
    let servers = nodes(3);
    let a = three_node_alias("quorum-late-grant-released", &urls(&servers));
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    servers[2].pause();
    let guard = Lock::new("k")
        .alias(a)
        .expire(Duration::from_secs(30))
        .acquire()
        .expect("two of three nodes answer");
    guard.release().unwrap();
    // Held well past the node timeout: the late node's answer, not its
    // timeout, must decide what happens to the key it sets on waking.
    std::thread::sleep(SLOW_NODE_TIMEOUT * 2);
    servers[2].resume();
    for s in &servers {
        gone_within(s, "lock:k", SLOW_NODE_TIMEOUT * 5);
    }
    Lock::new("k")
        .alias(a)
        .wait(false)
        .acquire()
        .expect("free on every node")
        .release()
        .unwrap();
}

#[test]
fn a_failed_acquisition_gives_back_what_a_late_node_granted() {
    let servers = nodes(3);
    let a = three_node_alias("quorum-late-grant-failed", &urls(&servers));
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    // Another owner holds the lock on the first node only.
    servers[0].set("lock:k", "someone-else");
    servers[2].pause();
    let err = Lock::new("k")
        .alias(a)
        .expire(Duration::from_secs(30))
        .wait(false)
        .acquire()
        .unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    gone_within(&servers[1], "lock:k", SLOW_NODE_TIMEOUT);
    std::thread::sleep(SLOW_NODE_TIMEOUT * 2);
    servers[2].resume();
    gone_within(&servers[2], "lock:k", SLOW_NODE_TIMEOUT * 5);
    assert_eq!(servers[0].get("lock:k").as_deref(), Some("someone-else"));
}

#[test]
fn an_acquisition_slower_than_its_lease_says_so() {
    let servers = std::sync::Arc::new(nodes(3));
    let a = three_node_alias("quorum-slower-than-lease", &urls(&servers));
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    let lease = Duration::from_millis(150);
    // A lease shorter than the node timeout is no problem while a majority
    // answers quickly: the paused node is not waited for.
    servers[2].pause();
    Lock::new("k")
        .alias(a)
        .expire(lease)
        .wait(false)
        .acquire()
        .expect("two of three nodes answer within the lease")
        .release()
        .unwrap();
    servers[1].pause();
    // The second node answers, but only after the lease would have run out.
    let waker = {
        let servers = std::sync::Arc::clone(&servers);
        std::thread::spawn(move || {
            std::thread::sleep(lease + Duration::from_millis(70));
            servers[1].resume();
        })
    };
    let err = Lock::new("k")
        .alias(a)
        .expire(lease)
        .wait(false)
        .acquire()
        .unwrap_err();
    waker.join().unwrap();
    servers[2].resume();
    let q = quorum_error(&err);
    assert_eq!(q.lease_ran_out, Some(lease), "{err}");
    assert!(q.took >= lease / 2, "{err}");
    let msg = err.to_string();
    assert!(!msg.contains("quorum lost"), "{msg}");
    assert!(
        msg.contains("150 ms lease") && msg.contains("raise lease_ms or lower timeout_ms"),
        "{msg}"
    );
}
