//! Model tests of the registry replaced while guards are held (`--cfg
//! shuttle`, see `crate::sync`): a guard gives its lock back to the store,
//! and under the key, it was taken with, whatever `add` changed meanwhile.
//!
//! The alias table itself (`arc-swap`) is not shuttle's: its loads and
//! stores are single steps here, so the model explores the order of whole
//! registry operations against the lock's own steps, not arc-swap's
//! internals (a well-tested crate of its own).

use super::*;
use crate::Lock;
use crate::backend::memory::MemoryBackend;
use crate::sync::thread;

/// Two threads lock and unlock `key` through alias `name` while a third
/// replaces the alias with `replaced(a, b)`; the alias starts on store `a`
/// with prefix `one:`.
fn guards_outlive_replacement(
    name: &'static str,
    replaced: fn(&Arc<MemoryBackend>, &Arc<MemoryBackend>) -> AliasConfig,
) {
    let a = Arc::new(MemoryBackend::new());
    let b = Arc::new(MemoryBackend::new());
    add(name, AliasConfig::custom(a.clone()).prefix("one:")).unwrap();
    let holders: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..2 {
                    let guard = Lock::new("k").alias(name).acquire().unwrap();
                    thread::yield_now();
                    drop(guard);
                }
            })
        })
        .collect();
    let configurer = thread::spawn({
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        move || add(name, replaced(&a, &b)).unwrap()
    });
    for h in holders {
        h.join().unwrap();
    }
    configurer.join().unwrap();
    assert_eq!(a.held(), 0, "a guard taken on the first store left it held");
    assert_eq!(
        b.held(),
        0,
        "a guard taken on the second store left it held"
    );
    // And the alias now names the new store.
    let guard = Lock::new("k").alias(name).try_acquire().unwrap().unwrap();
    let (now_on, other) = if Arc::ptr_eq(
        &alias(name).unwrap().0.backend,
        &(a.clone() as Arc<dyn Backend>),
    ) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!((now_on.held(), other.held()), (1, 0));
    drop(guard);
}

#[test]
fn model_guards_release_on_the_store_they_were_taken_from() {
    crate::sync::explore(|| {
        guards_outlive_replacement("model-store-swapped", |_, b| {
            AliasConfig::custom(b.clone()).prefix("one:")
        })
    });
}

#[test]
fn model_guards_release_under_the_prefix_they_were_taken_with() {
    crate::sync::explore(|| {
        guards_outlive_replacement("model-prefix-changed", |a, _| {
            AliasConfig::custom(a.clone()).prefix("two:")
        })
    });
}
