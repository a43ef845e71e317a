//! The quorum (Redlock) backend over five independent `redis-server`s: it
//! keeps granting exclusive locks with two nodes down, fails fast and says
//! why with three down, recovers when they return, and is not stalled by a
//! paused node for longer than the per-node timeout.

mod support;

use std::time::{Duration, Instant};

use lock_runtime::backend::BackendErrorKind;
use lock_runtime::backend::redis::QuorumError;
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError};
use support::RedisServer;

const NODE_TIMEOUT: Duration = Duration::from_millis(200);

fn nodes(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

fn quorum_alias(name: &'static str, urls: &[String]) -> &'static str {
    let cfg = AliasConfig::quorum(urls.to_vec())
        .connect_timeout(NODE_TIMEOUT)
        .command_timeout(NODE_TIMEOUT)
        .poll_interval(Duration::from_millis(2));
    registry::add(name, cfg).unwrap();
    name
}

fn urls(servers: &[RedisServer]) -> Vec<String> {
    servers.iter().map(|s| s.url()).collect()
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
const SECTIONS: usize = 1_000;

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
    let holding = servers.iter().filter(|s| s.exists("lock:k")).count();
    assert_eq!(holding, 5, "the lock is set on every node that answers");
    guard.release().unwrap();
    assert!(
        servers.iter().all(|s| !s.exists("lock:k")),
        "and released on all of them"
    );
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

fn three_node_alias(name: &'static str, urls: &[String]) -> &'static str {
    let cfg = AliasConfig::quorum(urls.to_vec())
        .connect_timeout(SLOW_NODE_TIMEOUT)
        .command_timeout(SLOW_NODE_TIMEOUT)
        .poll_interval(Duration::from_millis(2));
    registry::add(name, cfg).unwrap();
    name
}

#[test]
fn an_acquisition_slower_than_its_lease_says_so() {
    let servers = std::sync::Arc::new(nodes(3));
    let a = three_node_alias("quorum-slower-than-lease", &urls(&servers));
    drop(Lock::new("warm").alias(a).acquire().unwrap());
    let lease = Duration::from_millis(150);
    servers[1].pause();
    servers[2].pause();
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
