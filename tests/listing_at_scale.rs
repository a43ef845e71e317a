//! Listing 100,000 held locks on Redis: the listing ends in bounded time,
//! holds one page at a time (each at most the limit asked), sees every lock
//! exactly once, and does not block lockers: a locker's acquire + release
//! times during the listing are measured beside the ones before it (run with
//! `--nocapture` to see the figures).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockGuard};
use support::RedisServer;

const LOCKS: usize = 100_000;
const PAGE: usize = 1_000;
const ALIAS: &str = "scale";

/// The locker's acquire + release times (µs) until `stop`, at least `min`.
fn locker(stop: Arc<AtomicBool>, min: usize) -> thread::JoinHandle<Vec<u64>> {
    thread::spawn(move || {
        let mut times = Vec::new();
        while times.len() < min || !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            drop(Lock::new("locker").alias(ALIAS).acquire().unwrap());
            times.push(start.elapsed().as_micros() as u64);
        }
        times
    })
}

fn p99(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[(v.len() * 99).div_ceil(100) - 1]
}

#[test]
fn listing_100k_held_locks_pages_through_all_of_them_without_blocking_lockers() {
    let server = RedisServer::start();
    registry::add(ALIAS, AliasConfig::redis(server.url())).unwrap();
    let alias = registry::alias(ALIAS).unwrap();

    // 100,000 locks held at once, taken 256 at a time; a fixed lease, so
    // that no renewal traffic runs beside the listing.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let guards: Vec<LockGuard> = rt
        .block_on(
            futures::stream::iter(0..LOCKS)
                .map(|i| {
                    Lock::new(format!("bulk-{i:06}"))
                        .alias(ALIAS)
                        .expire(Duration::from_secs(600))
                        .acquire_async()
                })
                .buffer_unordered(256)
                .try_collect(),
        )
        .unwrap();
    println!("{LOCKS} locks taken in {:?}", started.elapsed());

    let before = locker(Arc::new(AtomicBool::new(true)), 300).join().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let during = locker(stop.clone(), 1);
    let started = Instant::now();
    let (mut seen, mut listed, mut pages, mut largest) = (HashSet::new(), 0usize, 0usize, 0usize);
    let mut cursor: Option<String> = None;
    loop {
        let page = alias
            .list("bulk-", cursor.as_deref(), PAGE)
            .unwrap()
            .unwrap();
        largest = largest.max(page.held.len());
        listed += page.held.len();
        seen.extend(page.held.into_iter().map(|h| h.key));
        pages += 1;
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the listing does not end"
        );
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = during.join().unwrap();

    let (n_during, p99_before, p99_during) = (during.len(), p99(before), p99(during));
    println!(
        "listed {listed} locks ({} distinct) in {pages} pages of at most {largest} in {took:?}; \
         locker acquire+release p99: {p99_before} us before, {p99_during} us during ({n_during} cycles)",
        seen.len()
    );
    assert_eq!(seen.len(), LOCKS, "every held lock listed");
    assert!(listed <= LOCKS + LOCKS / 100, "few listed twice: {listed}");
    assert!(
        largest <= PAGE,
        "a page of {largest} locks, asked for {PAGE}"
    );
    // Each page is a bounded SCAN step and a script over its keys: lockers
    // wait for one page at most, never for the whole listing.
    let bound = (20 * p99_before).max(50_000);
    assert!(
        p99_during <= bound,
        "lockers stalled by the listing: p99 {p99_during} us during, {p99_before} us before"
    );
    assert!(
        Duration::from_micros(p99_during) < took / 4,
        "a locker waited for a large part of the listing: p99 {p99_during} us of {took:?}"
    );
    drop(guards);
}
