//! The memcached store against real, private `memcached` servers: exclusion
//! across processes, a holder killed outright, a restart and a hang of the
//! server, hostile keys, keys spread over two servers, and URLs refused.

#![cfg(feature = "memcache")]

mod support;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use lock_runtime::backend::memcache::MemcacheStore;
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError};
use support::memcached::MemcachedServer;

const PROCESSES: usize = 4;
const SECTIONS: usize = 1_000;
const CHILDREN_TIMEOUT: Duration = Duration::from_secs(60);

/// Registers `url` as a fresh alias and returns its name.
fn alias(name: &str, url: &str) -> String {
    registry::add(name.to_owned(), AliasConfig::from_url(url).unwrap())
        .unwrap_or_else(|e| panic!("cannot add {name} for {url}: {e}"));
    name.to_owned()
}

fn lock(alias: &str, key: &str) -> Lock {
    Lock::new(key.to_owned()).alias(alias.to_owned())
}

fn is_backend_error(e: &LockError) -> bool {
    matches!(e, LockError::Backend { .. })
}

/// Four processes, a thousand critical sections each, on one lock: a
/// counter in a file, read and written back plus one with no other
/// protection, ends exact.
#[test]
fn exclusion_across_four_processes() {
    if support::child_role().is_some() {
        return support::count_in_child(SECTIONS);
    }
    let server = MemcachedServer::start();
    support::count_in_processes(
        &support::test_name!(),
        &server.url(),
        PROCESSES,
        SECTIONS,
        CHILDREN_TIMEOUT,
    );
    // What is left is the fencing counter: every lock was released.
    assert_eq!(server.curr_items(), 1, "a lock was left behind");
}

/// A holder killed with SIGKILL stops renewing; its lock is free when the
/// last lease it set runs out (memcached's TTL outlives it; the record's
/// end frees it): not at the kill, not much after a lease.
#[test]
fn a_killed_holder_frees_the_lock_when_its_lease_ends() {
    let lease = Duration::from_millis(1500);
    let settings = format!("?lease_ms={}&poll_ms=5", lease.as_millis());
    if support::child_role().is_some() {
        let url = std::env::var("MEMCACHED_URL").unwrap();
        let a = alias("mc", &format!("{url}{settings}"));
        let _held = lock(&a, "doomed").acquire().unwrap();
        std::thread::sleep(CHILDREN_TIMEOUT);
        return;
    }
    let server = MemcachedServer::start();
    let url = server.url();
    let a = alias("mc-killed", &format!("{url}{settings}"));
    let mut children = support::spawn_children(
        &support::test_name!(),
        "holder",
        1,
        &[("MEMCACHED_URL", url.as_str())],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while lock(&a, "doomed").try_acquire().unwrap().is_some() {
        assert!(Instant::now() < deadline, "the child never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    children[0].child.kill().unwrap();
    let killed = Instant::now();
    children[0].child.wait().unwrap();
    let freed = loop {
        if lock(&a, "doomed").try_acquire().unwrap().is_some() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < lease + Duration::from_secs(3),
            "still held {:?} after the holder died",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Renewed every third of the lease while the child lived, so its last
    // lease ran at least two thirds of it past the kill (less a late
    // renewal on a loaded machine): the lock did not die with the process.
    assert!(
        freed >= lease / 2,
        "freed {freed:?} after the kill, before the lease could end"
    );
    assert!(
        freed <= lease + Duration::from_secs(1),
        "freed only {freed:?} after the kill"
    );
    println!("freed {freed:?} after the holder was killed (lease {lease:?})");
}

/// A restart forgets every lock: the holder's guard says it is lost, and
/// lockers take the key again at once, with a fencing token still above
/// the old one (the new counter starts from the clock in µs).
#[test]
fn a_restart_under_a_holder_marks_it_lost_and_lockers_recover() {
    let server = MemcachedServer::start();
    let a = alias(
        "mc-restart",
        &format!("{}?lease_ms=1500&timeout_ms=500&poll_ms=5", server.url()),
    );
    let holder = lock(&a, "k").acquire().unwrap();
    let before = holder.fencing_token().unwrap();
    assert!(lock(&a, "k").try_acquire().unwrap().is_none());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    server.restart();
    let restarted = Instant::now();
    let lost = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), holder.lost())
            .await
            .is_ok()
    });
    assert!(lost, "the guard did not notice the restart within 3 s");
    assert!(holder.is_lost());
    println!("lost {:?} after the restart", restarted.elapsed());

    let again = lock(&a, "k")
        .try_acquire()
        .expect("a locker reconnects by itself")
        .expect("the restart forgot the old holder");
    assert!(
        again.fencing_token().unwrap() > before,
        "fencing went back across the restart"
    );
    match holder.release() {
        Err(e) if e.is_not_held() => {}
        other => panic!("the forgotten holder's release: {other:?}"),
    }
    drop(again);
}

/// The item of a lock: `\0l` + the stored key, in memcached's base64 key
/// form (the store's documented layout, for keys up to 184 bytes).
fn item_b64(stored: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = [b"\0l", stored.as_bytes()].concat();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An item memcached dropped (as an eviction would): the holder's guard
/// notices at its next renewal, and another locker takes the key at once.
#[test]
fn an_evicted_lock_is_noticed_by_its_holder() {
    let server = MemcachedServer::start();
    let a = alias("mc-evicted", &format!("{}?lease_ms=900", server.url()));
    let holder = lock(&a, "k").acquire().unwrap();
    let reply = server.raw(format!("md {} b\r\n", item_b64("lock:k")).as_bytes(), |r| {
        r.ends_with(b"\r\n")
    });
    assert_eq!(reply, b"HD\r\n", "the item is where the docs say");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lost = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), holder.lost())
            .await
            .is_ok()
    });
    assert!(lost, "the holder did not notice its item was gone");
    let other = lock(&a, "k").try_acquire().unwrap();
    assert!(other.is_some(), "the dropped lock is free");
}

/// Memcached reads a TTL over 30 days as a timestamp: such a lease gets no
/// TTL (the item stays, its end is in the record), a shorter one its
/// length rounded up plus a second.
#[test]
fn leases_past_30_days_get_no_ttl() {
    let server = MemcachedServer::start();
    let a = alias("mc-long", &server.url());
    let day = Duration::from_secs(24 * 60 * 60);
    let ttl_of = |key: &str| -> i64 {
        let reply = server.raw(
            format!("mg {} b t\r\n", item_b64(&format!("lock:{key}"))).as_bytes(),
            |r| r.ends_with(b"\r\n"),
        );
        let text = String::from_utf8(reply).unwrap();
        let t = text
            .trim_end()
            .strip_prefix("HD t")
            .unwrap_or_else(|| panic!("{text:?}"));
        t.parse().unwrap()
    };
    let long = lock(&a, "long").expire(31 * day).acquire().unwrap();
    assert_eq!(ttl_of("long"), -1, "no TTL past 30 days");
    assert!(lock(&a, "long").try_acquire().unwrap().is_none());
    let month = lock(&a, "month").expire(29 * day).acquire().unwrap();
    let ttl = ttl_of("month");
    let expected = (29 * day).as_secs() as i64 + 1;
    assert!((expected - 2..=expected).contains(&ttl), "TTL {ttl}");
    let short = lock(&a, "short")
        .expire(Duration::from_millis(300))
        .acquire()
        .unwrap();
    assert!(
        (1..=2).contains(&ttl_of("short")),
        "a 300 ms lease: 2 s TTL"
    );
    long.release().unwrap();
    month.release().unwrap();
    drop(short);
}

/// A hung server (SIGSTOP): calls fail with a backend timeout error within
/// the command timeout, and work again once it resumes.
#[test]
fn a_hung_server_is_a_timeout_within_the_timeout() {
    let server = MemcachedServer::start();
    let timeout = Duration::from_millis(300);
    let a = alias(
        "mc-hung",
        &format!(
            "{}?timeout_ms={}&connect_timeout_ms={}",
            server.url(),
            timeout.as_millis(),
            timeout.as_millis()
        ),
    );
    // A pooled connection, and a fresh one past it.
    drop(lock(&a, "warm").acquire().unwrap());
    server.pause();
    for attempt in 0..2 {
        let started = Instant::now();
        let err = lock(&a, &format!("hung-{attempt}"))
            .try_acquire()
            .expect_err("a hung server grants nothing");
        let took = started.elapsed();
        assert!(is_backend_error(&err), "{err}");
        match &err {
            LockError::Backend { source, .. } => assert!(source.is_timeout(), "{err}"),
            _ => unreachable!(),
        }
        assert!(
            took >= timeout - Duration::from_millis(20)
                && took < timeout + Duration::from_millis(700),
            "failed after {took:?} with a {timeout:?} timeout"
        );
    }
    server.resume();
    // The timed-out attempts may still be applied now that it runs: their
    // keys stay taken until their leases end. Others are free.
    let guard = lock(&a, "after")
        .try_acquire()
        .expect("works again once resumed")
        .expect("free");
    guard.release().unwrap();
}

/// Keys that memcached's text protocol cannot carry (spaces, newlines,
/// NUL, 64 KiB, lengths around the hashing limit) are distinct locks.
#[test]
fn hostile_keys_are_distinct_locks() {
    let server = MemcachedServer::start();
    let a = alias("mc-hostile", &server.url());
    let mut keys: Vec<String> = [
        "a b",
        " ",
        "new\nline",
        "\r\n",
        "\0",
        "a\0b",
        "\u{7f}",
        "ключ",
        "🔒",
        "%:fence",
        "ence",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    // `lock:` + key around the 184-byte limit of direct item keys.
    for len in 175..=185 {
        keys.push("k".repeat(len));
    }
    let big = "x".repeat(64 * 1024);
    keys.push(big.clone());
    keys.push(format!("{big}y"));
    keys.push(format!("{big}\0"));
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len());

    let guards: Vec<_> = keys
        .iter()
        .map(|k| {
            lock(&a, k)
                .try_acquire()
                .unwrap_or_else(|e| panic!("{:.40?}: {e}", k))
                .unwrap_or_else(|| panic!("{:.40?} was already held: keys collide", k))
        })
        .collect();
    for k in &keys {
        assert!(
            lock(&a, k).try_acquire().unwrap().is_none(),
            "{k:.40?} is free while held"
        );
    }
    // Releasing one frees only that one.
    let mut guards = guards.into_iter();
    guards.next().unwrap().release().unwrap();
    let first = lock(&a, &keys[0]).try_acquire().unwrap();
    assert!(first.is_some(), "released, yet held");
    for k in &keys[1..] {
        assert!(lock(&a, k).try_acquire().unwrap().is_none(), "{k:.40?}");
    }
    for g in guards {
        g.release().unwrap();
    }
}

/// `memcache://a,b` spreads keys over both servers, each key always on the
/// one that `MemcacheStore::server_of` names, whatever the list's order;
/// with one server down, only its keys fail.
#[test]
fn two_servers_share_the_keys() {
    let (s1, s2) = (MemcachedServer::start(), MemcachedServer::start());
    let (h1, h2) = (s1.host_port(), s2.host_port());
    let ab = alias(
        "mc-ab",
        &format!("memcache://{h1},{h2}?timeout_ms=500&connect_timeout_ms=500"),
    );
    let ba = alias("mc-ba", &format!("memcache://{h2},{h1}"));
    let layout = MemcacheStore::new([h1.as_str(), h2.as_str()]).unwrap();
    let prefix = registry::alias(&ab).unwrap().prefix().to_owned();

    let keys: Vec<String> = (0..64).map(|i| format!("spread-{i}")).collect();
    let guards: Vec<_> = keys
        .iter()
        .map(|k| lock(&ab, k).try_acquire().unwrap().expect("free"))
        .collect();
    let on_first = keys
        .iter()
        .filter(|k| layout.server_of(&format!("{prefix}{k}")) == h1)
        .count();
    assert!(
        (16..=48).contains(&on_first),
        "{on_first} of 64 keys on the first server"
    );
    // Each server holds its keys and its fencing counter.
    assert_eq!(s1.curr_items(), on_first as u64 + 1);
    assert_eq!(s2.curr_items(), (64 - on_first) as u64 + 1);
    for k in &keys {
        assert!(
            lock(&ba, k).try_acquire().unwrap().is_none(),
            "{k} is free through the same servers listed the other way round"
        );
    }
    drop(guards);

    s2.stop();
    for k in &keys {
        let outcome = lock(&ab, k).try_acquire();
        if layout.server_of(&format!("{prefix}{k}")) == h1 {
            assert!(matches!(outcome, Ok(Some(_))), "{k}: {outcome:?}");
        } else {
            assert!(
                matches!(&outcome, Err(e) if is_backend_error(e)),
                "{k} lives on the stopped server: {outcome:?}"
            );
        }
    }
}

/// URLs that name no usable server are refused when the alias is
/// configured, saying why.
#[test]
fn bad_urls_are_refused() {
    for (url, says) in [
        ("memcache://", "no host"),
        ("memcache://127.0.0.1:99999", "port"),
        ("memcache://a,a", "listed twice"),
        ("memcache://::1", "brackets"),
        ("memcache://user:secret@cache", "no users or passwords"),
        ("memcache://cache/1", "path"),
        ("memcache://cache?table=locks", "unknown setting `table`"),
        ("memcache://cache?lease_ms=0", "positive number"),
    ] {
        let err = AliasConfig::from_url(url).expect_err(url);
        let text = err.to_string();
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("secret"), "{url}: {text}");
    }
}

/// A server the harness started dies with the test process, even one
/// never dropped and running as another user (memcached will not run as
/// root), so a test binary killed by a timeout leaves none behind.
#[test]
fn servers_die_with_the_test_process() {
    if support::child_role().is_some() {
        let server = MemcachedServer::start();
        support::report(format!(
            "{} {}",
            server.pid().unwrap(),
            server.dir().display()
        ));
        // Never dropped: only the death of this process can end it.
        std::mem::forget(server);
        std::thread::sleep(CHILDREN_TIMEOUT);
        return;
    }
    let mut children = support::spawn_children(&support::test_name!(), "orphan", 1, &[]);
    let child = &mut children[0].child;
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let report = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("lock-test-report: ")
                .map(|(_, r)| r.to_owned())
        })
        .expect("the child never reported its server");
    let (pid, dir) = report.split_once(' ').unwrap();
    let pid: u32 = pid.parse().unwrap();
    assert!(support::alive(pid), "memcached {pid} is not running");
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = support::gone_within(pid, Duration::from_secs(5));
    // Nothing else removes the dir of a server that was never dropped.
    fs::remove_dir_all(dir).ok();
    assert!(gone, "memcached {pid} outlived the test process");
}
