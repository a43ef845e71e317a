//! The suite against stores broken on purpose: each behaviour must fail the
//! store that lacks it, or passing it would prove nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::memory::MemoryBackend;
use crate::backend::{Acquired, Attempt, Backend, BackendError, Request, Token};
use crate::registry::AliasConfig;

use super::{Conformance, Options};

/// The memory store with one fault.
struct Faulty {
    inner: MemoryBackend,
    fault: Fault,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Releases whoever asks.
    IgnoresTokens,
    /// Grants every request.
    NeverBusy,
    /// A fencing token for every other acquisition only.
    FencesSometimes,
    /// Keeps only the first 8 bytes of a key.
    TruncatesKeys,
}

impl Backend for Faulty {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let short;
        let req = match self.fault {
            Fault::TruncatesKeys => {
                short = truncate(req.key).to_owned();
                &Request::new(&short)
                    .token(req.token)
                    .lease(req.lease)
                    .steal_after(req.steal_after)
            }
            _ => req,
        };
        match (self.fault, self.inner.try_acquire(req)?) {
            (Fault::NeverBusy, Attempt::Busy(_)) => Ok(Attempt::Acquired(Acquired::new(None))),
            (Fault::FencesSometimes, Attempt::Acquired(a))
                if a.fencing.is_some_and(|f| f % 2 == 0) =>
            {
                Ok(Attempt::Acquired(Acquired::new(None)))
            }
            (_, attempt) => Ok(attempt),
        }
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        match self.fault {
            Fault::IgnoresTokens => {
                let _ = self.inner.release(key, token);
                Ok(true)
            }
            Fault::TruncatesKeys => self.inner.release(truncate(key), token),
            _ => self.inner.release(key, token),
        }
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        match self.fault {
            Fault::TruncatesKeys => self.inner.extend(truncate(key), token, lease),
            _ => self.inner.extend(key, token, lease),
        }
    }
}

fn truncate(key: &str) -> &str {
    let mut end = key.len().min(8);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// The panic message of `behaviour` run against a store with `fault`.
fn failure(fault: Fault, behaviour: fn(&Conformance)) -> String {
    let suite = Conformance::new("faulty", move || {
        AliasConfig::custom(Arc::new(Faulty {
            inner: MemoryBackend::new(),
            fault,
        }))
    })
    .options(
        Options::default()
            .lease(Duration::from_millis(100))
            .rounds(5),
    );
    match catch_unwind(AssertUnwindSafe(|| behaviour(&suite))) {
        Ok(()) => panic!("the behaviour passed a store that lacks it"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    }
}

#[test]
fn a_store_that_ignores_tokens_fails_ownership() {
    let msg = failure(
        Fault::IgnoresTokens,
        Conformance::only_the_owner_releases_or_extends,
    );
    assert!(
        msg.contains("a stranger's token released the lock"),
        "{msg}"
    );
}

#[test]
fn a_store_that_is_never_busy_fails_exclusion() {
    let msg = failure(Fault::NeverBusy, Conformance::exclusion_across_threads);
    // Overlapping holders show as lost updates, or as a holder whose lock
    // another took from it.
    let overlap = [
        "were not kept apart",
        "at the same time",
        "releasing a held lock failed",
    ];
    assert!(overlap.iter().any(|m| msg.contains(m)), "{msg}");
    let msg = failure(
        Fault::NeverBusy,
        Conformance::try_wait_and_wait_for_deadlines,
    );
    assert!(msg.contains("the lock was free"), "{msg}");
}

#[test]
fn a_store_that_fences_sometimes_fails_fencing() {
    let msg = failure(
        Fault::FencesSometimes,
        Conformance::fencing_strictly_increases,
    );
    assert!(
        msg.contains("a store gives every acquisition a token or none"),
        "{msg}"
    );
}

#[test]
fn a_store_that_truncates_keys_fails_hostile_keys() {
    let msg = failure(
        Fault::TruncatesKeys,
        Conformance::hostile_keys_are_distinct_locks,
    );
    assert!(msg.contains("it is the same lock as one of"), "{msg}");
}

#[test]
fn the_behaviours_pass_a_correct_store() {
    Conformance::new("memory", || {
        AliasConfig::custom(Arc::new(MemoryBackend::new()))
    })
    .options(
        Options::default()
            .lease(Duration::from_millis(100))
            .rounds(5),
    )
    .only_the_owner_releases_or_extends();
}
