//! A conformance suite for lock stores (feature `testing`): every behaviour a
//! store must have, written once against the public API and run for any
//! store you can build an [`AliasConfig`] for. This crate runs it for the
//! memory store, Redis, a Redis quorum and the custom store of the
//! [`backend`](crate::backend) docs.
//!
//! One call in your own tests runs it for your store: the
//! [`conformance_tests!`](crate::conformance_tests) macro writes a module with
//! one `#[test]` per behaviour, so `cargo test conformance_map` shows each as
//! `conformance_map::<behaviour>`.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//!
//! use lock_runtime::backend::{Acquired, Attempt, BackendError, Busy, Request, Store, Token};
//! use lock_runtime::registry::AliasConfig;
//!
//! /// A store that keeps its locks in a map: key -> (owner, taken at, lease end).
//! #[derive(Default)]
//! struct MapStore {
//!     map: Mutex<HashMap<String, (Token, Instant, Instant)>>,
//!     fence: Mutex<u64>,
//! }
//!
//! impl Store for MapStore {
//!     fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
//!         let mut map = self.map.lock().unwrap();
//!         let now = Instant::now();
//!         if let Some(&(_, since, until)) = map.get(req.key) {
//!             let stale = req.steal_after.is_some_and(|s| now >= since + s);
//!             if now < until && !stale {
//!                 // Look again when the lease ends, or sooner if a thief may steal.
//!                 let free_at = req.steal_after.map_or(until, |s| until.min(since + s));
//!                 return Ok(Attempt::Busy(Busy::new(Some(free_at - now))));
//!             }
//!         }
//!         let lease = req.lease.unwrap_or(Duration::from_secs(30));
//!         map.insert(req.key.to_owned(), (req.token, now, now + lease));
//!         let mut fence = self.fence.lock().unwrap();
//!         *fence += 1;
//!         Ok(Attempt::Acquired(Acquired::new(Some(*fence))))
//!     }
//!
//!     fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
//!         let mut map = self.map.lock().unwrap();
//!         let owned = map.get(key).is_some_and(|e| e.0 == token && Instant::now() < e.2);
//!         if owned {
//!             map.remove(key);
//!         }
//!         Ok(owned)
//!     }
//!
//!     fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
//!         let mut map = self.map.lock().unwrap();
//!         match map.get_mut(key) {
//!             Some(e) if e.0 == token && Instant::now() < e.2 => {
//!                 e.2 = Instant::now() + lease;
//!                 Ok(true)
//!             }
//!             _ => Ok(false),
//!         }
//!     }
//! }
//!
//! fn map_store() -> AliasConfig {
//!     AliasConfig::store(Arc::new(MapStore::default())).poll_interval(Duration::from_millis(5))
//! }
//!
//! // In `tests/conformance_map.rs`: one `#[test]` per behaviour, named
//! // `conformance_map::fencing_strictly_increases` and so on.
//! lock_runtime::conformance_tests!(conformance_map, map_store);
//!
//! fn main() {
//!     // The same behaviours, called one by one:
//!     let suite = lock_runtime::testing::Conformance::new("map", map_store);
//!     suite.only_the_owner_releases_or_extends();
//!     suite.fencing_strictly_increases();
//! }
//! ```
//!
//! What the suite needs to know about a store it asks the store: whether it
//! gives fencing tokens (the first acquisition says; then every one must),
//! whether it holds locks without a lease (the
//! [`Unleased`](crate::backend::Unleased) ability, [`Backend::supports_unleased`])
//! and whether it can tell a holder it was deleted (an
//! [`OwnerCheck`](crate::backend::OwnerCheck), [`Backend::check`]). The few things it
//! cannot ask (how long a lease to test with, how late is too late on your
//! machine) are [`Options`] with defaults.
//!
//! Every behaviour panics with a message naming the store, the behaviour and
//! what went wrong, like `assert!` does: it is meant to be called from tests.

mod admin;
mod cancel;
mod clean_up;
mod exclusion;
mod fencing;
mod isolation;
mod keys;
mod listing;
mod lost;
mod ownership;
mod retry;
#[cfg(test)]
mod tests;
mod timing;

pub use self::isolation::{Clock, Isolation, isolate};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Token};
use crate::registry::{self, Alias, AliasConfig};
use crate::{Lock, LockError, LockGuard};

/// How a waiting acquisition that is expected to succeed may take at most
/// before the suite calls it a hang: longer than any lease the suite sets,
/// shorter than a test runner's patience.
const PATIENCE: Duration = Duration::from_secs(20);

/// The settings of a [`Conformance`] run that the suite cannot ask the store.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::testing::Options;
///
/// let opts = Options::default()
///     .lease(Duration::from_millis(200))
///     .slack(Duration::from_secs(2));
/// assert_eq!(opts.lease, Duration::from_millis(200));
/// assert_eq!(opts.contenders, 8);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The lease (and steal age) of locks whose expiry is tested; the
    /// behaviours that wait for a lease to end take about this long each.
    /// Default 300 ms.
    pub lease: Duration,
    /// How much later than due a timed event (a lease ending, a deadline, a
    /// wake-up) may come before it counts as a failure; generous, for loaded
    /// CI machines. Default 1 s.
    pub slack: Duration,
    /// Threads (and tasks) contending in the exclusion behaviours. Default 8.
    pub contenders: usize,
    /// Critical sections each contender runs. Default 25.
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(300),
            slack: Duration::from_secs(1),
            contenders: 8,
            rounds: 25,
        }
    }
}

impl Options {
    /// Sets [`lease`](Self::lease).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::testing::Options;
    ///
    /// assert_eq!(Options::default().lease(Duration::from_secs(1)).lease, Duration::from_secs(1));
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`slack`](Self::slack).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::testing::Options;
    ///
    /// assert_eq!(Options::default().slack(Duration::from_secs(3)).slack, Duration::from_secs(3));
    /// ```
    pub fn slack(mut self, slack: Duration) -> Self {
        self.slack = slack;
        self
    }

    /// Sets [`contenders`](Self::contenders).
    ///
    /// ```
    /// use lock_runtime::testing::Options;
    ///
    /// assert_eq!(Options::default().contenders(4).contenders, 4);
    /// ```
    pub fn contenders(mut self, contenders: usize) -> Self {
        self.contenders = contenders;
        self
    }

    /// Sets [`rounds`](Self::rounds).
    ///
    /// ```
    /// use lock_runtime::testing::Options;
    ///
    /// assert_eq!(Options::default().rounds(100).rounds, 100);
    /// ```
    pub fn rounds(mut self, rounds: usize) -> Self {
        self.rounds = rounds;
        self
    }
}

type Factory = dyn Fn() -> AliasConfig + Send + Sync;

/// One behaviour of the suite: a method of [`Conformance`], as listed in
/// [`Conformance::BEHAVIOURS`].
///
/// ```
/// use lock_runtime::registry::AliasConfig;
/// use lock_runtime::testing::{Behaviour, Conformance};
///
/// let check: Behaviour = Conformance::fencing_strictly_increases;
/// check(&Conformance::new("memory", AliasConfig::memory));
/// ```
pub type Behaviour = fn(&Conformance);

/// The conformance suite for one store: built from a name and a function
/// that returns a fresh [`AliasConfig`] for the store, with one method per
/// behaviour.
///
/// Each behaviour registers an alias of its own (named after the suite, the
/// behaviour and a counter) from the factory, and uses keys no other
/// behaviour or run uses, so behaviours can run in parallel, on a store
/// shared with other tests, and again on the same store.
///
/// ```
/// use lock_runtime::registry::AliasConfig;
/// use lock_runtime::testing::Conformance;
///
/// let suite = Conformance::new("memory", || AliasConfig::memory_named("doc-conformance"));
/// suite.exclusion_across_threads();
/// suite.hostile_keys_are_distinct_locks();
/// ```
#[derive(Clone)]
pub struct Conformance {
    name: String,
    factory: Arc<Factory>,
    opts: Options,
}

impl fmt::Debug for Conformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field("name", &self.name)
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Conformance {
    /// A suite for the store `factory` builds, reported as `name` in failure
    /// messages and alias names. The factory is called once per behaviour.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// // A fresh private store for every behaviour:
    /// let suite = Conformance::new("private-memory", || AliasConfig::custom(Arc::new(MemoryBackend::new())));
    /// suite.lease_expiry_frees_the_lock();
    /// ```
    pub fn new(
        name: impl Into<String>,
        factory: impl Fn() -> AliasConfig + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            factory: Arc::new(factory),
            opts: Options::default(),
        }
    }

    /// Replaces the [`Options`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::{Conformance, Options};
    ///
    /// let suite = Conformance::new("memory", AliasConfig::memory)
    ///     .options(Options::default().lease(Duration::from_millis(200)));
    /// suite.delete_on_exit_false_keeps_until_lease_end();
    /// ```
    pub fn options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }

    /// Runs every behaviour, one after the other (the
    /// [`conformance_tests!`](crate::conformance_tests) macro runs them as
    /// separate tests instead, in parallel and reported one by one).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::{Conformance, Options};
    ///
    /// Conformance::new("memory", || AliasConfig::memory_named("doc-run-all"))
    ///     .options(Options::default().lease(Duration::from_millis(200)).rounds(10))
    ///     .run_all();
    /// ```
    pub fn run_all(&self) {
        for (_, behaviour) in Self::BEHAVIOURS {
            behaviour(self);
        }
    }

    /// Every behaviour, by name, in the order [`run_all`](Self::run_all)
    /// runs them.
    ///
    /// ```
    /// use lock_runtime::testing::Conformance;
    ///
    /// let names: Vec<&str> = Conformance::BEHAVIOURS.iter().map(|(name, _)| *name).collect();
    /// assert!(names.contains(&"fencing_strictly_increases"));
    /// ```
    pub const BEHAVIOURS: &'static [(&'static str, Behaviour)] = &[
        ("exclusion_across_threads", Self::exclusion_across_threads),
        ("exclusion_across_tasks", Self::exclusion_across_tasks),
        (
            "only_the_owner_releases_or_extends",
            Self::only_the_owner_releases_or_extends,
        ),
        (
            "lease_expiry_frees_the_lock",
            Self::lease_expiry_frees_the_lock,
        ),
        (
            "steal_after_takes_over_only_old_holders",
            Self::steal_after_takes_over_only_old_holders,
        ),
        (
            "waiting_thief_takes_over_at_the_steal_age",
            Self::waiting_thief_takes_over_at_the_steal_age,
        ),
        (
            "delete_on_exit_false_keeps_until_lease_end",
            Self::delete_on_exit_false_keeps_until_lease_end,
        ),
        (
            "fencing_strictly_increases",
            Self::fencing_strictly_increases,
        ),
        (
            "try_wait_and_wait_for_deadlines",
            Self::try_wait_and_wait_for_deadlines,
        ),
        (
            "cancelled_waiter_strands_nothing",
            Self::cancelled_waiter_strands_nothing,
        ),
        (
            "cancelled_grant_gives_the_lock_back",
            Self::cancelled_grant_gives_the_lock_back,
        ),
        (
            "crowd_giving_up_strands_nothing",
            Self::crowd_giving_up_strands_nothing,
        ),
        (
            "lost_signal_keeps_its_promises",
            Self::lost_signal_keeps_its_promises,
        ),
        (
            "hostile_keys_are_distinct_locks",
            Self::hostile_keys_are_distinct_locks,
        ),
        ("holders_are_listed", Self::holders_are_listed),
        (
            "clean_up_spares_live_locks",
            Self::clean_up_spares_live_locks,
        ),
        (
            "busy_answers_say_when_to_look_again",
            Self::busy_answers_say_when_to_look_again,
        ),
        ("listing_names_the_holder", Self::listing_names_the_holder),
        (
            "forced_release_is_lost_and_fenced",
            Self::forced_release_is_lost_and_fenced,
        ),
    ];

    /// A fresh alias for one behaviour.
    fn scope(&self, behaviour: &'static str) -> Scope {
        self.scope_with(behaviour, |cfg| cfg)
    }

    /// A fresh alias for one behaviour, its config adjusted by `adjust`.
    fn scope_with(
        &self,
        behaviour: &'static str,
        adjust: impl FnOnce(AliasConfig) -> AliasConfig,
    ) -> Scope {
        static ALIASES: AtomicU64 = AtomicU64::new(0);
        let n = ALIASES.fetch_add(1, Ordering::Relaxed);
        let alias = format!("conformance:{}:{behaviour}:{n}", self.name);
        let what = format!("{}::{behaviour}", self.name);
        let config = adjust((self.factory)());
        if let Err(e) = registry::add(alias.clone(), config.clone()) {
            panic!("{what}: the store's alias configuration was refused: {e}");
        }
        let handle = registry::alias(&alias).unwrap_or_else(|e| panic!("{what}: {e}"));
        Scope {
            what,
            alias,
            config,
            handle,
            // Unique per process and per scope, so that a store shared across
            // test runs never sees a key of an earlier run.
            run: Token::new().to_string(),
            opts: self.opts.clone(),
        }
    }
}

/// One behaviour's alias, keys and helpers.
struct Scope {
    /// `suite::behaviour`, the start of every failure message.
    what: String,
    alias: String,
    /// The alias's configuration, for [`Scope::twin`].
    config: AliasConfig,
    handle: Alias,
    run: String,
    opts: Options,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Scope {
    /// A key of this behaviour that no other behaviour or run uses.
    fn key(&self, what: &str) -> String {
        format!("conformance-{what}-{}", self.run)
    }

    /// A second alias on the same store, opened separately (its own
    /// connections, for a store that has some), as another process would
    /// open it: its name.
    fn twin(&self) -> String {
        let twin = format!("{}:twin", self.alias);
        if let Err(e) = registry::add(twin.clone(), self.config.clone()) {
            panic!("{self}: a second alias on the store was refused: {e}");
        }
        twin
    }

    /// A lock on `key` of this behaviour's alias.
    fn lock(&self, key: &str) -> Lock {
        Lock::new(key.to_owned()).alias(self.alias.clone())
    }

    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(self.handle.backend())
    }

    /// The key as the store sees it: what the backend's methods take.
    fn store_key(&self, key: &str) -> String {
        self.handle.namespace().key(key.into()).into_owned()
    }

    /// The guard of an acquisition that must succeed.
    fn held(&self, what: &str, outcome: Result<LockGuard, LockError>) -> LockGuard {
        outcome.unwrap_or_else(|e| panic!("{self}: {what}: acquiring failed: {e}"))
    }

    /// The guard of a `try_acquire` that must find the lock free.
    fn free(&self, what: &str, outcome: Result<Option<LockGuard>, LockError>) -> LockGuard {
        match outcome {
            Ok(Some(guard)) => guard,
            Ok(None) => panic!("{self}: {what}: the lock was busy"),
            Err(e) => panic!("{self}: {what}: acquiring failed: {e}"),
        }
    }

    /// Checks that a `try_acquire` found the lock busy.
    fn busy(&self, what: &str, outcome: Result<Option<LockGuard>, LockError>) {
        match outcome {
            Ok(None) => {}
            Ok(Some(guard)) => panic!("{self}: {what}: the lock was free (took {guard:?})"),
            Err(e) => panic!("{self}: {what}: expected a busy lock, got an error: {e}"),
        }
    }

    /// Polls `lock` until a `try_acquire` gets it (and drops that guard),
    /// failing after `limit`. When it got it.
    fn wait_free(&self, what: &str, lock: &Lock, limit: Duration) -> Instant {
        let started = Instant::now();
        loop {
            match lock.try_acquire() {
                Ok(Some(guard)) => {
                    let at = Instant::now();
                    drop(guard);
                    return at;
                }
                Ok(None) if started.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => panic!("{self}: {what}: still busy after {limit:?}"),
                Err(e) => panic!("{self}: {what}: acquiring failed: {e}"),
            }
        }
    }

    /// Lease arithmetic is judged by clocks of millisecond resolution on
    /// some stores (Redis' `PX`): an event may come this much early.
    fn early(&self) -> Duration {
        self.opts.lease / 20 + Duration::from_millis(2)
    }
}

/// A multi-threaded runtime for the async behaviours, so that tasks really
/// run in parallel; the suite's callers need no runtime of their own.
fn runtime(s: &Scope) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{s}: cannot start a Tokio runtime: {e}"))
}

/// Writes a module of tests, one `#[test]` per behaviour of
/// [`Conformance`](crate::testing::Conformance), for the store a factory
/// builds (feature `testing`).
///
/// `conformance_tests!(conformance_map, factory)` writes `mod conformance_map`
/// with tests named after the behaviours
/// (`conformance_map::fencing_strictly_increases`, ...); the factory is any
/// expression that is a `Fn() -> AliasConfig` (a function's name or a
/// closure), and may use what the enclosing module has (so write it at a
/// module's top level, not inside a function). Optional, in this order:
///
/// - `options = <expr>`: the [`Options`](crate::testing::Options);
/// - `ignore = { <behaviour>: "<reason>", ... }`: marks those tests
///   `#[ignore = "<reason>"]` (a misspelt behaviour is a compile error).
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::registry::AliasConfig;
/// use lock_runtime::testing::Options;
///
/// lock_runtime::conformance_tests!(conformance_memory, || AliasConfig::memory_named("doc-macro"));
///
/// lock_runtime::conformance_tests!(
///     conformance_memory_tuned,
///     || AliasConfig::memory_named("doc-macro-tuned"),
///     options = Options::default().lease(Duration::from_millis(200)),
///     ignore = { exclusion_across_tasks: "shown ignored for the example" },
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (
        $module:ident, $factory:expr
        $(, options = $options:expr)?
        $(, ignore = { $($ignored:ident : $why:literal),* $(,)? })?
        $(,)?
    ) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            fn __conformance_suite() -> $crate::testing::Conformance {
                let suite = $crate::testing::Conformance::new(::core::stringify!($module), $factory);
                $(let suite = suite.options($options);)?
                suite
            }

            // A misspelt behaviour in `ignore` names no method: a compile error.
            $($(const _: fn(&$crate::testing::Conformance) = $crate::testing::Conformance::$ignored;)*)?

            $crate::__conformance_test!(exclusion_across_threads; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(exclusion_across_tasks; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(only_the_owner_releases_or_extends; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(lease_expiry_frees_the_lock; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(steal_after_takes_over_only_old_holders; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(waiting_thief_takes_over_at_the_steal_age; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(delete_on_exit_false_keeps_until_lease_end; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(fencing_strictly_increases; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(try_wait_and_wait_for_deadlines; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(cancelled_waiter_strands_nothing; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(cancelled_grant_gives_the_lock_back; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(crowd_giving_up_strands_nothing; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(lost_signal_keeps_its_promises; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(hostile_keys_are_distinct_locks; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(holders_are_listed; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(clean_up_spares_live_locks; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(busy_answers_say_when_to_look_again; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(listing_names_the_holder; [$($($ignored : $why),*)?]);
            $crate::__conformance_test!(forced_release_is_lost_and_fenced; [$($($ignored : $why),*)?]);
        }
    };
}

/// One test of [`conformance_tests!`]: looks the behaviour up in the ignore
/// list. Not a stable API.
// macro_rules cannot compare two identifiers, but a literal behaviour name in
// a pattern matches the same identifier passed in: one "found" arm per
// behaviour, then a generic arm that skips a non-matching entry.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    (@emit $name:ident $(#[$attr:meta])*) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            __conformance_suite().$name();
        }
    };
    (exclusion_across_threads; [exclusion_across_threads : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit exclusion_across_threads #[ignore = $why]);
    };
    (exclusion_across_tasks; [exclusion_across_tasks : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit exclusion_across_tasks #[ignore = $why]);
    };
    (only_the_owner_releases_or_extends; [only_the_owner_releases_or_extends : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit only_the_owner_releases_or_extends #[ignore = $why]);
    };
    (lease_expiry_frees_the_lock; [lease_expiry_frees_the_lock : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit lease_expiry_frees_the_lock #[ignore = $why]);
    };
    (steal_after_takes_over_only_old_holders; [steal_after_takes_over_only_old_holders : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit steal_after_takes_over_only_old_holders #[ignore = $why]);
    };
    (waiting_thief_takes_over_at_the_steal_age; [waiting_thief_takes_over_at_the_steal_age : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit waiting_thief_takes_over_at_the_steal_age #[ignore = $why]);
    };
    (delete_on_exit_false_keeps_until_lease_end; [delete_on_exit_false_keeps_until_lease_end : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit delete_on_exit_false_keeps_until_lease_end #[ignore = $why]);
    };
    (fencing_strictly_increases; [fencing_strictly_increases : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit fencing_strictly_increases #[ignore = $why]);
    };
    (try_wait_and_wait_for_deadlines; [try_wait_and_wait_for_deadlines : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit try_wait_and_wait_for_deadlines #[ignore = $why]);
    };
    (cancelled_waiter_strands_nothing; [cancelled_waiter_strands_nothing : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit cancelled_waiter_strands_nothing #[ignore = $why]);
    };
    (cancelled_grant_gives_the_lock_back; [cancelled_grant_gives_the_lock_back : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit cancelled_grant_gives_the_lock_back #[ignore = $why]);
    };
    (lost_signal_keeps_its_promises; [lost_signal_keeps_its_promises : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit lost_signal_keeps_its_promises #[ignore = $why]);
    };
    (hostile_keys_are_distinct_locks; [hostile_keys_are_distinct_locks : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit hostile_keys_are_distinct_locks #[ignore = $why]);
    };
    (holders_are_listed; [holders_are_listed : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit holders_are_listed #[ignore = $why]);
    };
    (clean_up_spares_live_locks; [clean_up_spares_live_locks : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit clean_up_spares_live_locks #[ignore = $why]);
    };
    (busy_answers_say_when_to_look_again; [busy_answers_say_when_to_look_again : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit busy_answers_say_when_to_look_again #[ignore = $why]);
    };
    (listing_names_the_holder; [listing_names_the_holder : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit listing_names_the_holder #[ignore = $why]);
    };
    (forced_release_is_lost_and_fenced; [forced_release_is_lost_and_fenced : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!(@emit forced_release_is_lost_and_fenced #[ignore = $why]);
    };
    ($name:ident; [$other:ident : $why:literal $(, $($rest:tt)*)?]) => {
        $crate::__conformance_test!($name; [$($($rest)*)?]);
    };
    ($name:ident; []) => {
        $crate::__conformance_test!(@emit $name);
    };
}
