//! The name a store keeps for a lock is injective in (alias prefix, key): aliases
//! with nested prefixes never share a lock, and no key, whatever its bytes,
//! can name or corrupt a store's own records (the fencing counter, waiting
//! lines). On the memory store and on a real redis-server.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};
use support::{RedisServer, redis_alias};

/// Keys built to look like another alias's keys or like the store's own
/// records, under the prefixes used here.
const HOSTILE: [&str; 16] = [
    "\0fence",
    "fence",
    "%:fence",
    "%%:fence",
    "lock%:fence",
    "k\0line",
    "k\0alive",
    "line:lock:k",
    "%:line:lock:k",
    "x:k",
    "k",
    ":k",
    "%3Ak",
    "%25",
    "*",
    "app%3Ax:k",
];

/// Two aliases whose prefixes nest (`app:` and `app:x:`) on one store must
/// not see each other's locks, for any pair of keys.
fn nested_prefixes_stay_apart(outer: &'static str, inner: &'static str) {
    let guard = Lock::new("x:k").alias(outer).acquire().unwrap();
    assert!(
        Lock::new("k").alias(inner).try_acquire().unwrap().is_some(),
        "`app:` + `x:k` and `app:x:` + `k` are two locks"
    );
    drop(guard);
    // Every pair of hostile keys across the two aliases, held together.
    let mut held = Vec::new();
    for k in HOSTILE {
        held.push(Lock::new(k).alias(outer).acquire().unwrap());
        held.push(Lock::new(k).alias(inner).acquire().unwrap());
    }
    for k in HOSTILE {
        for a in [outer, inner] {
            assert!(
                Lock::new(k).alias(a).try_acquire().unwrap().is_none(),
                "{k:?} on {a} is held"
            );
        }
    }
    for g in &held {
        assert!(HOSTILE.contains(&g.key()), "the guard shows the key given");
    }
    // Each alias lists exactly its own locks, under the keys given.
    for a in [outer, inner] {
        let listed: HashSet<String> = registry::alias(a)
            .unwrap()
            .holders()
            .unwrap()
            .expect("the store lists its locks")
            .into_iter()
            .map(|h| h.key)
            .collect();
        let expected: HashSet<String> = HOSTILE.iter().map(|k| k.to_string()).collect();
        assert_eq!(listed, expected, "the locks {a} lists");
    }
}

#[test]
fn memory_aliases_with_nested_prefixes_never_share_a_lock() {
    for (name, prefix) in [
        ("ns-mem-outer", "app:"),
        ("ns-mem-inner", "app:x:"),
        ("ns-mem-none", ""),
    ] {
        registry::add(name, AliasConfig::memory_named("ns-mem").prefix(prefix)).unwrap();
    }
    nested_prefixes_stay_apart("ns-mem-outer", "ns-mem-inner");
    // No prefix against a prefix: `app:k` unprefixed is not `app:` + `k`.
    let _g = Lock::new("app:k").alias("ns-mem-none").acquire().unwrap();
    assert!(
        Lock::new("k")
            .alias("ns-mem-outer")
            .try_acquire()
            .unwrap()
            .is_some()
    );
}

#[test]
fn redis_aliases_with_nested_prefixes_never_share_a_lock() {
    let server = RedisServer::start();
    for (name, prefix) in [("ns-redis-outer", "app:"), ("ns-redis-inner", "app:x:")] {
        let url = format!("{}?prefix={prefix}", server.url());
        registry::add(name, AliasConfig::from_url(&url).unwrap()).unwrap();
    }
    nested_prefixes_stay_apart("ns-redis-outer", "ns-redis-inner");
    // A prefix full of `SCAN MATCH` pattern characters lists its own only.
    let url = format!("{}?prefix=a*[?\\", server.url());
    registry::add("ns-redis-glob", AliasConfig::from_url(&url).unwrap()).unwrap();
    let _g = Lock::new("k").alias("ns-redis-glob").acquire().unwrap();
    let _h = Lock::new("k").alias("ns-redis-outer").acquire().unwrap();
    let keys = |alias: &str| -> Vec<String> {
        let held = registry::alias(alias).unwrap().holders().unwrap().unwrap();
        held.into_iter().map(|h| h.key).collect()
    };
    assert_eq!(keys("ns-redis-glob"), vec!["k".to_owned()]);
    assert_eq!(keys("ns-redis-outer"), vec!["k".to_owned()]);
}

/// Locks on keys that look like the store's records, with waiters in line,
/// while the fencing counter keeps counting up and nothing is left behind.
fn records_are_out_of_reach(server: &RedisServer, alias: &'static str) {
    let before: HashSet<String> = server.keys("*").into_iter().collect();
    let mut last = 0;
    for round in 0..3 {
        for k in HOSTILE {
            let guard = Lock::new(k).alias(alias).acquire().unwrap();
            let token = guard.fencing_token().expect("Redis keeps fencing tokens");
            assert!(token > last, "round {round}, {k:?}: {token} after {last}");
            last = token;
            // A fair waiter joins the line, which lives beside the lock.
            let waiter = std::thread::spawn(move || {
                Lock::new(k)
                    .alias(alias)
                    .fair(true)
                    .wait_for(Duration::from_secs(10))
                    .acquire()
                    .map(|g| g.fencing_token())
            });
            std::thread::sleep(Duration::from_millis(30));
            guard.release().unwrap();
            let next = waiter.join().unwrap().unwrap().unwrap();
            assert!(next > last, "{k:?}: the waiter's {next} after {last}");
            last = next;
        }
    }
    // Nothing was held and nothing new stays but the counter and this
    // process's record (who holds the alias's locks, written once).
    std::thread::sleep(Duration::from_millis(100));
    let after: HashSet<String> = server.keys("*").into_iter().collect();
    let new: Vec<_> = after
        .difference(&before)
        .filter(|k| !k.contains("%:proc:"))
        .collect();
    assert!(new.len() <= 1, "left behind: {new:?}");
}

#[test]
fn redis_keys_never_reach_the_store_records() {
    let server = RedisServer::start();
    redis_alias(&server, "ns-redis-records");
    records_are_out_of_reach(&server, "ns-redis-records");
    let url = format!("{}?prefix=", server.url());
    registry::add("ns-redis-unprefixed", AliasConfig::from_url(&url).unwrap()).unwrap();
    records_are_out_of_reach(&server, "ns-redis-unprefixed");
}
