//! The documented examples of python-cachelock, one test each: its `Lock`
//! block that fails when the key is taken, the `once` decorator with a key
//! built from the function's arguments (quiet skip, or an error on request),
//! the default in-memory cache versus a chosen cache alias, and a cache of
//! your own (here a `Backend` over a `HashMap`, plugged in with
//! `AliasConfig::custom`).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use lock_runtime::backend::{Acquired, Attempt, Backend, BackendError, Busy, Request, Token};
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, once};
use support::held_on;

// Seed: the `Lock` class used as a `with` block around your code; when the
// key is already locked, entering the block raises `LockError`.
#[test]
fn a_lock_block_fails_with_busy_while_the_key_is_taken() {
    let block = Lock::new("cachelock-block-foo").wait(false);
    let inside = block.acquire().expect("the key is free");
    match block.acquire() {
        Err(LockError::Busy { key, alias }) => {
            assert_eq!(key, "cachelock-block-foo");
            assert_eq!(alias, "default");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    drop(inside);
    let again = block.acquire().expect("leaving the block freed the key");
    assert_eq!(again.key(), "cachelock-block-foo");
}

static TEMPLATE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[once("cachelock-foo-<arg_a>-<arg_b>")]
fn func(arg_a: u32, arg_b: &str) -> String {
    TEMPLATE_RUNS.fetch_add(1, Ordering::SeqCst);
    let key = format!("cachelock-foo-{arg_a}-{arg_b}");
    assert!(held_on("default", &key), "the body runs under `{key}`");
    format!("{arg_a}/{arg_b}")
}

// Seed: `once` with a key template filled from the function's arguments
// (`foo-{arg_a}-{arg_b}`): each combination of arguments is its own lock,
// and a call whose lock is taken quits without running.
#[test]
fn once_builds_its_key_from_the_arguments() {
    assert_eq!(func(1, "x").as_deref(), Some("1/x"));
    assert!(
        !held_on("default", "cachelock-foo-1-x"),
        "released on return"
    );

    let other = Lock::new("cachelock-foo-1-x")
        .acquire()
        .expect("the key is free");
    let runs = TEMPLATE_RUNS.load(Ordering::SeqCst);
    assert_eq!(func(1, "x"), None, "same arguments, same key: skipped");
    assert_eq!(TEMPLATE_RUNS.load(Ordering::SeqCst), runs, "body not run");
    assert_eq!(func(1, "y").as_deref(), Some("1/y"), "another key");
    assert_eq!(func(2, "x").as_deref(), Some("2/x"), "another key");
    drop(other);
    assert_eq!(func(1, "x").as_deref(), Some("1/x"));
}

static TASK_RUNS: AtomicUsize = AtomicUsize::new(0);

#[once("cachelock-task-<job>")]
fn task(job: &str, inside: &Barrier, leave: &Barrier) -> usize {
    TASK_RUNS.fetch_add(1, Ordering::SeqCst);
    inside.wait();
    leave.wait();
    job.len()
}

// Seed: `once` on a (Celery) task: a second run started while the first
// still holds the lock returns silently instead of running.
#[test]
fn once_skips_a_call_made_while_another_runs() {
    let inside = Arc::new(Barrier::new(2));
    let leave = Arc::new(Barrier::new(2));
    let first = {
        let (inside, leave) = (Arc::clone(&inside), Arc::clone(&leave));
        std::thread::spawn(move || task("reindex", &inside, &leave))
    };
    inside.wait();
    // Running the body would block for ever on barriers nobody else waits on.
    let nobody = Barrier::new(2);
    assert_eq!(task("reindex", &nobody, &nobody), None);
    leave.wait();
    assert_eq!(first.join().unwrap(), Some(7));
    assert_eq!(TASK_RUNS.load(Ordering::SeqCst), 1);
}

#[once("cachelock-raise-<arg_a>-<arg_b>", raise = true)]
fn func_that_raises(arg_a: u32, arg_b: u32) -> Result<u32, LockError> {
    Ok(arg_a + arg_b)
}

// Seed: `once(..., raise_if_lock=True)`: instead of quitting silently, the
// decorated function raises `LockError` when the lock is taken.
#[test]
fn once_with_raise_returns_the_lock_error() {
    assert_eq!(func_that_raises(2, 3).unwrap(), 5);
    let _other = Lock::new("cachelock-raise-2-3").acquire().unwrap();
    match func_that_raises(2, 3) {
        Err(LockError::Busy { key, .. }) => assert_eq!(key, "cachelock-raise-2-3"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(func_that_raises(3, 2).unwrap(), 5, "another key is free");
}

#[once("cachelock-default-cache")]
fn uses_the_default_cache() -> &'static str {
    "ran"
}

#[once("cachelock-chosen-cache", alias = "cachelock-django")]
fn uses_a_chosen_cache() -> &'static str {
    "ran"
}

// Seed: without Django, cachelock keeps its locks in an internal in-memory
// cache; with Django, `DEFAULT_CACHELOCK_ALIAS` picks which configured cache
// holds them. Here: with no alias the lock lives in the embedded memory store
// (`default`); `alias = "..."` puts it in another configured store.
#[test]
fn the_default_is_the_in_memory_store_and_an_alias_picks_another() {
    registry::add(
        "cachelock-django",
        AliasConfig::memory_named("cachelock-django"),
    )
    .unwrap();
    assert_eq!(registry::alias("default").unwrap().default_lease(), None);

    let in_default = Lock::new("cachelock-default-cache").acquire().unwrap();
    assert_eq!(in_default.alias(), "default");
    assert_eq!(uses_the_default_cache(), None, "its lock is in `default`");
    drop(in_default);
    assert_eq!(uses_the_default_cache(), Some("ran"));

    let in_default = Lock::new("cachelock-chosen-cache").acquire().unwrap();
    assert_eq!(
        uses_a_chosen_cache(),
        Some("ran"),
        "the same key in `default` is another lock"
    );
    let in_chosen = Lock::new("cachelock-chosen-cache")
        .alias("cachelock-django")
        .acquire()
        .unwrap();
    assert_eq!(
        uses_a_chosen_cache(),
        None,
        "its lock is in the chosen store"
    );
    drop((in_default, in_chosen));
}

/// A cache of our own, in the spirit of cachelock's "anything with get, set
/// and delete": a `HashMap` of key -> holder. The Python original did get then
/// set as two calls; here both happen under one mutex, since a lock store
/// must test-and-set atomically.
#[derive(Default)]
struct DictCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// Every successful set, to show the runtime went through this store.
    sets: AtomicUsize,
}

#[derive(Clone, Copy)]
struct Entry {
    owner: Token,
    since: Instant,
    until: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

impl DictCache {
    /// `cache.get(key)`: the live entry under `key`, if any.
    fn get(&self, key: &str) -> Option<Entry> {
        let now = Instant::now();
        let map = self.entries.lock().unwrap();
        map.get(key).copied().filter(|e| e.live(now))
    }
}

impl Backend for DictCache {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap();
        if let Some(e) = map.get(req.key).filter(|e| e.live(now)) {
            let stale = req.steal_after.is_some_and(|age| now - e.since >= age);
            if e.owner != req.token && !stale {
                return Ok(Attempt::Busy(Busy::new(e.until.map(|u| u - now))));
            }
        }
        let entry = Entry {
            owner: req.token,
            since: now,
            until: req.lease.map(|l| now + l),
        };
        map.insert(req.key.to_owned(), entry);
        self.sets.fetch_add(1, Ordering::SeqCst);
        Ok(Attempt::Acquired(Acquired::new(None).sent_at(now)))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap();
        let ours = map
            .get(key)
            .is_some_and(|e| e.owner == token && e.live(now));
        if ours {
            map.remove(key);
        }
        Ok(ours)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap();
        match map.get_mut(key) {
            Some(e) if e.owner == token && e.live(now) => {
                e.until = Some(now + lease);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The dictionary cache, configured once as the alias `cachelock-dict`.
fn dict() -> &'static DictCache {
    static DICT: OnceLock<Arc<DictCache>> = OnceLock::new();
    DICT.get_or_init(|| {
        let cache = Arc::new(DictCache::default());
        registry::add(
            "cachelock-dict",
            AliasConfig::custom(cache.clone()).prefix("cachelock:"),
        )
        .expect("a custom alias");
        cache
    })
}

static REPORT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[once("report-<day>", alias = "cachelock-dict")]
fn daily_report(day: u32, seen: &mpsc::Sender<bool>) -> u32 {
    REPORT_RUNS.fetch_add(1, Ordering::SeqCst);
    let entry = dict().get(&format!("cachelock:report-{day}"));
    seen.send(entry.is_some()).unwrap();
    day
}

// Seed: "customizing your own cache": any object with `get`, `set` and
// `delete` can be handed to `once` (and `Lock`) as the cache. Here a
// `HashMap`-backed `Backend` is registered as an alias and `once` names it:
// the lock is an entry of that map while the body runs and is deleted after;
// an entry written by another holder makes the call skip.
#[test]
fn once_works_on_a_custom_cache() {
    let cache = dict();
    let (seen_tx, seen) = mpsc::channel();

    let sets = cache.sets.load(Ordering::SeqCst);
    assert_eq!(daily_report(17, &seen_tx), Some(17));
    assert_eq!(seen.try_recv(), Ok(true), "the body ran with its entry set");
    assert_eq!(cache.sets.load(Ordering::SeqCst), sets + 1);
    assert!(
        cache.get("cachelock:report-17").is_none(),
        "deleted on return"
    );
    assert!(
        !held_on("default", "report-17") && !held_on("cachelock-dict", "report-17"),
        "nothing left behind in either store"
    );

    let other = Lock::new("report-18")
        .alias("cachelock-dict")
        .acquire()
        .unwrap();
    let entry = cache.get("cachelock:report-18").expect("set in the map");
    assert_eq!(entry.owner, other.token());
    let runs = REPORT_RUNS.load(Ordering::SeqCst);
    assert_eq!(daily_report(18, &seen_tx), None, "its entry is taken");
    assert_eq!(REPORT_RUNS.load(Ordering::SeqCst), runs, "body not run");
    assert!(seen.try_recv().is_err());
    other.release().unwrap();
    assert!(
        cache.get("cachelock:report-18").is_none(),
        "release deleted it"
    );
    assert_eq!(daily_report(18, &seen_tx), Some(18));
    assert_eq!(seen.try_recv(), Ok(true));
}

// Seed: the same custom cache behind the `Lock` class: a block on a taken
// key fails with `LockError`, and the cache, not the default store, decides.
#[test]
fn a_lock_block_works_on_a_custom_cache() {
    let cache = dict();
    let block = Lock::new("block-on-dict")
        .alias("cachelock-dict")
        .wait(false);
    let inside = block.acquire().unwrap();
    assert!(cache.get("cachelock:block-on-dict").is_some());
    let err = block.acquire().unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    assert!(
        !held_on("default", "block-on-dict"),
        "the default store never saw it"
    );
    inside.release().unwrap();
    assert!(cache.get("cachelock:block-on-dict").is_none());
    assert!(block.acquire().is_ok());
}
