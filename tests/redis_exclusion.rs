//! Mutual exclusion across OS processes through one Redis: four processes
//! each run 2,000 critical sections that read a counter kept in Redis and
//! write it back plus one, a read-modify-write that loses updates unless
//! the lock really excludes. The final count must be exact.

mod support;

use std::time::Duration;

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};
use support::RedisServer;

const PROCESSES: usize = 4;
const SECTIONS: usize = 2_000;
const COUNTER: &str = "exclusion:counter";
/// 2,000 sections a process take the async workers about 40 s on an idle
/// 2-core machine with the file's four tests at once; a loaded machine
/// (CI beside other jobs) has needed more than the usual child time limit.
const CHILDREN_TIMEOUT: Duration = Duration::from_secs(180);

/// Reads and rewrites the counter in two separate commands, with a yield in
/// between so that a second writer would interleave if it could.
fn unsafe_increment(conn: &mut redis::Connection) {
    let n: Option<u64> = redis::cmd("GET").arg(COUNTER).query(conn).expect("GET");
    std::thread::yield_now();
    let () = redis::cmd("SET")
        .arg(COUNTER)
        .arg(n.unwrap_or(0) + 1)
        .query(conn)
        .expect("SET");
}

fn configure_from_parent() -> redis::Connection {
    let url = std::env::var("REDIS_URL").expect("the parent passes REDIS_URL");
    registry::add(
        "shared",
        AliasConfig::from_url(&url)
            .unwrap()
            .poll_interval(Duration::from_millis(2)),
    )
    .unwrap();
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// In the process cargo started: runs `test` as the worker processes, then
/// checks the counter. In a worker: runs `sections` on a connection of its
/// own, then reports.
fn exclusion(test: &str, sections: impl FnOnce(&mut redis::Connection)) {
    if support::child_role().is_some() {
        let mut conn = configure_from_parent();
        sections(&mut conn);
        support::report(format!("done {SECTIONS}"));
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let children = support::wait_children(
        support::spawn_children(test, "worker", PROCESSES, &[("REDIS_URL", url.as_str())]),
        CHILDREN_TIMEOUT,
    );
    assert_eq!(children.len(), PROCESSES);
    for c in &children {
        assert_eq!(c.reports(), vec![format!("done {SECTIONS}")]);
    }
    assert_eq!(
        server.get(COUNTER).as_deref(),
        Some((PROCESSES * SECTIONS).to_string().as_str()),
        "updates were lost: the lock let two processes in at once"
    );
    assert!(
        server.keys("lock:*").iter().all(|k| k.contains('\0')),
        "a lock was left behind"
    );
}

/// Runs an async worker body on a runtime of its own.
fn on_runtime(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Runtime::new().unwrap().block_on(body);
}

#[test]
fn builder_guards_exclude_across_processes() {
    exclusion(&support::test_name!(), |conn| {
        for _ in 0..SECTIONS {
            let guard = Lock::new("counter")
                .alias("shared")
                .acquire()
                .expect("acquire");
            unsafe_increment(conn);
            guard.release().expect("still held");
        }
    });
}

#[test]
fn async_guards_exclude_across_processes() {
    exclusion(&support::test_name!(), |conn| {
        on_runtime(async {
            for _ in 0..SECTIONS {
                let guard = Lock::new("counter")
                    .alias("shared")
                    .acquire_async()
                    .await
                    .expect("acquire");
                unsafe_increment(conn);
                guard.release_async().await.expect("still held");
            }
        })
    });
}

/// The same critical section behind the attribute.
#[lock_runtime::lock("counter", alias = "shared")]
fn locked_increment(conn: &mut redis::Connection) -> Result<(), lock_runtime::LockError> {
    unsafe_increment(conn);
    Ok(())
}

#[lock_runtime::lock("counter", alias = "shared")]
async fn locked_increment_async(
    conn: &mut redis::Connection,
) -> Result<(), lock_runtime::LockError> {
    unsafe_increment(conn);
    tokio::task::yield_now().await;
    Ok(())
}

#[test]
fn lock_attribute_excludes_across_processes() {
    exclusion(&support::test_name!(), |conn| {
        for _ in 0..SECTIONS {
            locked_increment(conn).expect("acquire");
        }
    });
}

#[test]
fn async_lock_attribute_excludes_across_processes() {
    exclusion(&support::test_name!(), |conn| {
        on_runtime(async {
            for _ in 0..SECTIONS {
                locked_increment_async(conn).await.expect("acquire");
            }
        })
    });
}
