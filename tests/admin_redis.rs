//! The admin API on Redis, against a real `redis-server` started by the
//! test: what a held lock costs the server with its holder recorded (run
//! with `--nocapture` to see the figures), the process record written once,
//! the audit list capped, and a forced release seen by another process's
//! view of the store (a second alias on its own connections).

mod support;

use std::time::Duration;

use lock_runtime::admin::AUDIT_LOG_LEN;
use lock_runtime::backend::Token;
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockGuard};
use support::RedisServer;

fn memory_usage(server: &RedisServer, key: &str) -> i64 {
    server
        .cmd(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
        .as_int()
        .unwrap_or_else(|| panic!("no MEMORY USAGE for {key}"))
}

fn used_memory(server: &RedisServer) -> i64 {
    server.info("memory")["used_memory"].parse().unwrap()
}

const N: usize = 10_000;

/// Holds `N` locks of `alias`, labelled or not; the server's memory growth
/// per lock.
fn per_lock(server: &RedisServer, alias: &str, label: bool) -> (i64, Vec<LockGuard>) {
    let before = used_memory(server);
    let guards: Vec<LockGuard> = (0..N)
        .map(|i| {
            let lock = Lock::new(format!("bytes-{i:05}")).alias(alias.to_owned());
            let lock = if label {
                lock.label("nightly-report")
            } else {
                lock
            };
            lock.acquire().unwrap()
        })
        .collect();
    ((used_memory(server) - before) / N as i64, guards)
}

#[test]
fn a_held_lock_costs_the_same_with_its_holder_recorded() {
    let server = RedisServer::start();
    let url = server.url();
    registry::add("admin-bytes", AliasConfig::redis(url.clone()).prefix("b:")).unwrap();
    registry::add("admin-bytes-old", AliasConfig::redis(url).prefix("o:")).unwrap();

    // One key as the store wrote it before holders were recorded (token and
    // span), beside one unlabelled and one labelled lock as it writes now.
    let old = format!("{}30000", Token::new().encode().as_str());
    server.cmd(&["SET", "o:one", &old, "PX", "30000"]);
    let plain = Lock::new("one").alias("admin-bytes").acquire().unwrap();
    let labelled = Lock::new("two")
        .alias("admin-bytes")
        .label("nightly-report")
        .acquire()
        .unwrap();
    let (old_bytes, plain_bytes, labelled_bytes) = (
        memory_usage(&server, "o:one"),
        memory_usage(&server, "b:one"),
        memory_usage(&server, "b:two"),
    );
    let value = server.get("b:two").unwrap();
    assert!(
        value.ends_with("#1"),
        "a short number for the label: {value}"
    );
    println!(
        "MEMORY USAGE of one lock key: {old_bytes} B before, {plain_bytes} B now \
         ({labelled_bytes} B with a label)"
    );
    assert_eq!(
        plain_bytes, old_bytes,
        "an unlabelled lock costs what it did"
    );
    // Two bytes of value (`#1`), which may cross one allocator size class.
    assert!(
        labelled_bytes <= old_bytes + 16,
        "{labelled_bytes} vs {old_bytes}"
    );
    // What the whole record in every lock's value would cost instead.
    let host = lock_runtime::admin::Owner::of_this_process()
        .host
        .unwrap_or_default();
    let whole = format!(
        "{old}|{host}|{}|nightly-report|app::jobs::nightly_report",
        std::process::id()
    );
    server.cmd(&["SET", "o:whole", &whole, "PX", "30000"]);
    println!(
        "MEMORY USAGE with the whole record in the value instead: {} B",
        memory_usage(&server, "o:whole")
    );

    // The process record, once per process (and prefix).
    let records = server.keys("b%:proc:*");
    assert_eq!(records.len(), 1, "{records:?}");
    let record = memory_usage(&server, &records[0]);
    println!("MEMORY USAGE of the process record: {record} B, once per process");
    drop((plain, labelled));

    // Over many locks, by the server's own count.
    server.flushall();
    let (old_per_lock, ()) = {
        let before = used_memory(&server);
        for i in 0..N {
            let v = format!("{}30000", Token::new().encode().as_str());
            server.cmd(&["SET", &format!("o:bytes-{i:05}"), &v, "PX", "30000"]);
        }
        ((used_memory(&server) - before) / N as i64, ())
    };
    server.flushall();
    let (plain_per_lock, guards) = per_lock(&server, "admin-bytes", false);
    drop(guards);
    server.flushall();
    let (labelled_per_lock, guards) = per_lock(&server, "admin-bytes", true);
    drop(guards);
    println!(
        "used_memory per held lock over {N} locks: {old_per_lock} B before, \
         {plain_per_lock} B now ({labelled_per_lock} B labelled)"
    );
    // The fencing counter and the process record are single keys; the
    // server's own buffers move the average by a few bytes either way (the
    // exact figure per key is MEMORY USAGE's, above).
    assert!(
        plain_per_lock <= old_per_lock + 8,
        "{plain_per_lock} vs {old_per_lock}"
    );
    assert!(labelled_per_lock <= old_per_lock + 24);
}

#[test]
fn a_forced_release_is_seen_through_another_alias_and_logged() {
    let server = RedisServer::start();
    let url = server.url();
    registry::add("admin-a", AliasConfig::redis(url.clone())).unwrap();
    registry::add("admin-b", AliasConfig::redis(url)).unwrap();
    let guard = Lock::new("stuck")
        .alias("admin-a")
        .label("worker")
        .acquire()
        .unwrap();
    let other = registry::alias("admin-b").unwrap();
    let shown = other.show("stuck").unwrap().unwrap();
    let owner = shown.owner.clone().unwrap();
    assert_eq!(owner.pid, Some(std::process::id()));
    assert_eq!(owner.label.as_deref(), Some("worker"));
    assert!(shown.lease_left.unwrap() <= Duration::from_secs(30));

    let waiter = std::thread::spawn(|| {
        Lock::new("stuck")
            .alias("admin-a")
            .wait_for(Duration::from_secs(10))
            .acquire()
            .map(|g| g.fencing_token())
    });
    std::thread::sleep(Duration::from_millis(100));
    let forced = other.force_release("stuck", "hung").unwrap();
    assert_eq!(
        forced.removed.unwrap().owner.unwrap().label.as_deref(),
        Some("worker")
    );
    let next = waiter.join().unwrap().unwrap();
    assert!(next > guard.fencing_token(), "{next:?}");
    assert!(guard.release().unwrap_err().is_not_held());

    // The list is capped.
    for i in 0..AUDIT_LOG_LEN + 3 {
        other.force_release(&format!("k{i}"), "bulk").unwrap();
    }
    let log = other.audit_log(usize::MAX).unwrap();
    assert_eq!(log.len(), AUDIT_LOG_LEN);
    assert_eq!(log[0].key, format!("k{}", AUDIT_LOG_LEN + 2));
    assert!(log.iter().all(|f| f.key != "stuck"), "the oldest dropped");
    let len = server.cmd(&["LLEN", "lock%:audit"]).as_int().unwrap();
    assert_eq!(len as usize, AUDIT_LOG_LEN);
}

#[test]
fn listing_pages_through_many_keys_with_scan() {
    let server = RedisServer::start();
    registry::add("admin-scan", AliasConfig::redis(server.url()).prefix("s:")).unwrap();
    let alias = registry::alias("admin-scan").unwrap();
    let guards: Vec<LockGuard> = (0..250)
        .map(|i| {
            Lock::new(format!("job-{i:03}"))
                .alias("admin-scan")
                .acquire()
                .unwrap()
        })
        .collect();
    let _other = Lock::new("other").alias("admin-scan").acquire().unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = alias.list("job-", cursor.as_deref(), 40).unwrap().unwrap();
        assert!(page.held.len() <= 40);
        seen.extend(page.held.into_iter().map(|h| h.key));
        pages += 1;
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
        assert!(pages < 100, "no end to the pages");
    }
    seen.sort();
    let want: Vec<String> = (0..250).map(|i| format!("job-{i:03}")).collect();
    assert_eq!(seen, want);
    assert!(pages >= 7, "pages of at most 40: {pages}");
    let stats = server.info("commandstats");
    assert!(
        stats.contains_key("cmdstat_scan") && !stats.contains_key("cmdstat_keys"),
        "listed with SCAN, never KEYS: {stats:?}"
    );
    drop(guards);
}

#[test]
fn a_quorum_shows_and_forces_with_one_node_down() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let cfg = AliasConfig::quorum(urls)
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(300));
    registry::add("admin-quorum", cfg).unwrap();
    let alias = registry::alias("admin-quorum").unwrap();
    let guard = Lock::new("q")
        .alias("admin-quorum")
        .label("payout")
        .expire(Duration::from_secs(30))
        .acquire()
        .unwrap();
    // The node that numbers labels goes down: the majority still shows
    // the holder's process, without its label.
    nodes[0].stop();
    let shown = alias.show("q").unwrap().expect("held on a majority");
    assert_eq!(shown.owner.unwrap().pid, Some(std::process::id()));
    let page = alias.list("", None, 10).unwrap().unwrap();
    assert_eq!(
        page.held.iter().filter(|h| h.key == "q").count(),
        1,
        "listed once: {page:?}"
    );
    let forced = alias.force_release("q", "node maintenance").unwrap();
    assert!(forced.removed.is_some(), "{forced:?}");
    assert!(alias.show("q").unwrap().is_none());
    let log = alias.audit_log(10).unwrap();
    assert_eq!(log.iter().filter(|f| f.key == "q").count(), 1, "{log:?}");
    assert!(guard.release().unwrap_err().is_not_held());
}

#[test]
fn a_lock_handed_down_the_line_names_its_new_holder() {
    let server = RedisServer::start();
    registry::add("admin-line", AliasConfig::redis(server.url())).unwrap();
    let alias = registry::alias("admin-line").unwrap();
    let first = Lock::new("line")
        .alias("admin-line")
        .label("first")
        .acquire()
        .unwrap();
    let waiter = std::thread::spawn(|| {
        Lock::new("line")
            .alias("admin-line")
            .label("second")
            .fair(true)
            .wait_for(Duration::from_secs(10))
            .acquire()
            .unwrap()
    });
    // In line once the line's key exists.
    let started = std::time::Instant::now();
    while server.keys("lock%:line:*").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.release().unwrap();
    let second = waiter.join().unwrap();
    let shown = alias.show("line").unwrap().unwrap();
    assert_eq!(
        shown.owner.unwrap().label.as_deref(),
        Some("second"),
        "the release handed it over with the waiter's label"
    );
    drop(second);
}
