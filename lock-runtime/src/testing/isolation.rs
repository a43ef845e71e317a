//! Isolation scopes: while a test holds one, every alias lookup in the
//! process sees stores of the scope's own, and the scope's memory stores run
//! on a clock the test can move ahead. Scopes take turns, one at a time.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

use once_cell::sync::Lazy;

use crate::backend::memory::{MemoryBackend, VirtualClock};
use crate::registry::{self, Scope};

/// Starts an isolation scope and returns its guard; the scope lasts until
/// the guard is dropped (keep it in a named binding: `let _scope =
/// isolate();`, since `let _ = isolate();` drops it at once). Blocks while
/// another thread's scope is active.
///
/// While the scope lives, every alias lookup ([`Lock`](crate::Lock),
/// `#[lock]`, `#[once]`, [`registry::alias`](crate::registry::alias)) from
/// any thread or task of the process sees the scope's aliases, which start
/// as copies of the aliases configured at the time, each on a store of the
/// scope's own:
///
/// - a memory alias gets a fresh memory store, on the scope's
///   [`clock`](Isolation::clock) (aliases that share a store outside share
///   the new one);
/// - an alias on a network store (Redis, a quorum) keeps its server but gets
///   a namespace of the scope's there: the scope's [`id`](Isolation::id) is
///   put into its prefix, so its keys meet no key of another scope, of
///   another process, or of the process outside scopes;
/// - an alias on a store of your own
///   ([`custom`](crate::registry::AliasConfig::custom),
///   [`store`](crate::registry::AliasConfig::store), ...) keeps the store
///   and gets the same namespace of the scope's (its clock stays its own).
///
/// [`registry::configure`](crate::registry::configure) and
/// [`registry::add`](crate::registry::add) inside the scope change the
/// scope's aliases only, and the aliases they add are the scope's too (a
/// `memory://` store is the scope's, a server's keys get the scope's
/// namespace); a custom store added inside the scope is used as it is. When
/// the scope ends, the aliases configured before it come back, and its
/// stores go once no guard taken in it is left.
///
/// # Why scopes take turns
///
/// Threads do not inherit thread-locals, and tokio tasks do not inherit
/// task-locals, so a scope that only its own thread could see would miss
/// the threads and tasks the test spawns. A scope is therefore process-wide,
/// and to keep tests apart, one scope is active at a time: `isolate()` waits
/// while another thread's scope lives, like the `serial_test` crate does.
/// The cost: a test that does not isolate, running while another one's
/// scope is active, sees that scope too (and what it configures is lost when
/// that scope ends). **Isolate every test that takes locks**, or none.
///
/// A test that panics drops its guard while unwinding, which ends the
/// scope and lets the next one start; nothing is poisoned.
///
/// # Nesting
///
/// `isolate()` on a thread whose scope is active starts a scope inside it,
/// at once: its aliases are copies of the outer scope's, on stores of its
/// own. On another thread (one the test spawned, say), `isolate()` waits for
/// the active scope to end: do not call it from there while the test waits
/// for that thread.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::testing::isolate;
/// use lock_runtime::Lock;
///
/// // Outside any scope, another test of the process holds "report".
/// let outside = Lock::new("report").acquire().unwrap();
/// {
///     let _scope = isolate();
///     let guard = Lock::new("report").wait(false).acquire().expect("the scope's own store");
///     // Threads the test spawns see the scope:
///     let other = std::thread::spawn(|| Lock::new("report").try_acquire().unwrap().is_none());
///     assert!(other.join().unwrap(), "held in the scope");
///     // Configuring inside the scope changes only the scope.
///     registry::configure([("jobs", AliasConfig::memory())]).unwrap();
///     assert_eq!(registry::aliases(), ["default", "jobs"]);
/// }
/// assert!(!registry::aliases().contains(&"jobs".to_owned()));
/// assert!(Lock::new("report").try_acquire().unwrap().is_none(), "still held outside");
/// ```
#[must_use = "the scope ends when its guard is dropped: `let _scope = isolate();`"]
pub fn isolate() -> Isolation {
    let clock = Clock::new();
    let n = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
    let id = format!("isolated-{}-{:08x}-{n}", std::process::id(), *PROCESS_SEED);
    let scope = Arc::new(Scope::new(id, Arc::clone(&clock.0)));
    gate_enter();
    registry::enter(&scope);
    Isolation { scope, clock }
}

/// The guard of an isolation scope, from [`isolate`]: the scope ends when it
/// is dropped.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::testing::isolate;
/// use lock_runtime::Lock;
///
/// let scope = isolate();
/// let daily = Lock::new("digest").expire(Duration::from_secs(24 * 3600));
/// let _sent = daily.acquire().unwrap();
/// assert!(daily.try_acquire().unwrap().is_none());
/// scope.clock().advance(Duration::from_secs(24 * 3600));
/// assert!(daily.try_acquire().unwrap().is_some(), "a day later, without waiting a day");
/// drop(scope);
/// ```
pub struct Isolation {
    scope: Arc<Scope>,
    clock: Clock,
}

impl Isolation {
    /// The virtual clock of the scope's memory stores.
    ///
    /// See [`Clock`] for what it moves and what stays on real time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::testing::isolate;
    ///
    /// let scope = isolate();
    /// scope.clock().advance(Duration::from_secs(60));
    /// assert_eq!(scope.clock().advanced(), Duration::from_secs(60));
    /// ```
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The scope's id, unique among scopes of every process: the part of
    /// the prefix of the scope's aliases on shared stores that sets them
    /// apart (`lock:` becomes `lock:<id>:`), for a test that looks at a
    /// server's keys.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::testing::isolate;
    ///
    /// let scope = isolate();
    /// # #[cfg(feature = "redis")] {
    /// // Adding a Redis alias does not connect.
    /// registry::add("doc-isolation-id", AliasConfig::from_url("redis://127.0.0.1:1").unwrap()).unwrap();
    /// let prefix = registry::alias("doc-isolation-id").unwrap().prefix().to_owned();
    /// assert_eq!(prefix, format!("lock:{}:", scope.id()));
    /// # }
    /// // Memory aliases need no prefix: their stores are the scope's.
    /// assert_eq!(registry::alias("default").unwrap().prefix(), "");
    /// assert!(scope.id().starts_with("isolated-"));
    /// ```
    pub fn id(&self) -> &str {
        self.scope.id()
    }
}

impl fmt::Debug for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Isolation")
            .field("id", &self.id())
            .field("clock", &self.clock)
            .finish()
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        registry::exit(&self.scope);
        gate_leave();
    }
}

/// A virtual clock for memory stores: it runs at the real rate, plus however
/// far it was [advanced](Self::advance). The memory stores of an isolation
/// scope run on the scope's [`clock`](Isolation::clock); a store of its own
/// on a clock comes from [`memory_store`](Self::memory_store). Clones share
/// the clock.
///
/// It moves what the store decides: when a lease (`expire`, or an alias's
/// lease) ends, when a lock is old enough for `steal_after`, and when a
/// waiter looks again at a lock whose lease runs out; an advance wakes the
/// store's waiters so that they look at once. It does not move what is
/// counted on the caller's side, which stays on real time: deadlines
/// (`wait_for`), the lease renewals of the watchdog, and a guard's own view
/// of its lease ([`remaining`](crate::LockGuard::remaining),
/// [`is_lost`](crate::LockGuard::is_lost)). So test expiry with a fixed
/// `expire`, which is never renewed, and ask the store: a new acquisition
/// succeeds, a [`release`](crate::LockGuard::release) reports the lock lost.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lock_runtime::testing::isolate;
/// use lock_runtime::Lock;
///
/// const HOUR: Duration = Duration::from_secs(3600);
/// let scope = isolate();
/// let held = Lock::new("rebuild").expire(HOUR).acquire().unwrap();
/// // A waiter parks until the lease ends, an hour from now...
/// let waiter = std::thread::spawn(|| Lock::new("rebuild").wait_for(Duration::from_secs(60)).acquire());
/// std::thread::sleep(Duration::from_millis(50));
/// let advanced = Instant::now();
/// scope.clock().advance(HOUR);
/// // ...and wakes when the clock gets there.
/// assert!(waiter.join().unwrap().is_ok());
/// assert!(advanced.elapsed() < Duration::from_secs(30));
/// assert!(held.release().unwrap_err().is_not_held());
/// ```
#[derive(Clone)]
pub struct Clock(Arc<VirtualClock>);

impl Clock {
    /// A clock on the real time, not yet advanced.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::testing::Clock;
    ///
    /// assert_eq!(Clock::new().advanced(), Duration::ZERO);
    /// ```
    pub fn new() -> Self {
        Self(Arc::new(VirtualClock::new()))
    }

    /// Moves the clock `by` ahead, for every store on it, and has their
    /// waiters look at their locks again. It never goes back.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    /// use lock_runtime::testing::Clock;
    ///
    /// let clock = Clock::new();
    /// let store = clock.memory_store();
    /// let thief = Request::new("k").steal_after(Some(Duration::from_secs(600)));
    /// store.try_acquire(&Request::new("k")).unwrap();
    /// assert!(matches!(store.try_acquire(&thief).unwrap(), Attempt::Busy(_)));
    /// clock.advance(Duration::from_secs(600));
    /// assert!(matches!(store.try_acquire(&thief).unwrap(), Attempt::Acquired(_)), "old enough to steal");
    /// ```
    pub fn advance(&self, by: Duration) {
        self.0.advance(by);
    }

    /// How far the clock was advanced in all.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::testing::Clock;
    ///
    /// let clock = Clock::new();
    /// clock.advance(Duration::from_secs(2));
    /// clock.clone().advance(Duration::from_secs(3));
    /// assert_eq!(clock.advanced(), Duration::from_secs(5), "clones share the clock");
    /// ```
    pub fn advanced(&self) -> Duration {
        self.0.advanced()
    }

    /// A fresh, private memory store on this clock, to test against
    /// directly or to add as an alias with
    /// [`AliasConfig::custom`](crate::registry::AliasConfig::custom).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::{Backend, Request};
    /// use lock_runtime::testing::Clock;
    ///
    /// let clock = Clock::new();
    /// let store = clock.memory_store();
    /// store.try_acquire(&Request::new("k").lease(Some(Duration::from_secs(60)))).unwrap();
    /// assert_eq!(store.held(), 1);
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(store.held(), 0, "the lease ran out");
    /// ```
    pub fn memory_store(&self) -> Arc<MemoryBackend> {
        MemoryBackend::on_clock(&self.0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("advanced", &self.advanced())
            .finish()
    }
}

static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);

/// Tells this process's scope ids from those of an earlier process that had
/// the same pid (its keys may still be on a server).
static PROCESS_SEED: Lazy<u32> = Lazy::new(|| {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
});

/// Who holds the active scope, and how many scopes deep.
struct Gate {
    owner: Option<ThreadId>,
    depth: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    owner: None,
    depth: 0,
});
static GATE_FREED: Condvar = Condvar::new();

/// Nothing panics while holding the gate's lock, but a poisoned lock must
/// never stop the next test.
fn gate() -> MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn gate_enter() {
    let me = std::thread::current().id();
    let mut gate = gate();
    if gate.owner == Some(me) {
        gate.depth += 1;
        return;
    }
    while gate.owner.is_some() {
        gate = GATE_FREED.wait(gate).unwrap_or_else(|p| p.into_inner());
    }
    gate.owner = Some(me);
    gate.depth = 1;
}

fn gate_leave() {
    let mut gate = gate();
    gate.depth = gate.depth.saturating_sub(1);
    if gate.depth == 0 {
        gate.owner = None;
        GATE_FREED.notify_one();
    }
}
