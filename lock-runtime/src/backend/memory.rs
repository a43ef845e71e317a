//! The embedded in-process store: the alias `default` unless configured
//! otherwise. Keys live in a sharded hash table, so unrelated keys never wait
//! on one global lock; each operation hashes its key once (a fast, seeded
//! hash) and looks it up without allocating. Waiters queue per key and are
//! woken by the release itself.
//!
//! Waiting follows Go's `sync.Mutex`: a release wakes the first waiter, which
//! competes with newcomers (barging keeps throughput high), but once a waiter
//! has queued for longer than [`STARVATION`], or asked for `fair`, the release
//! hands the lock straight to it, so nobody starves.
//!
//! Aliases that name the same store share its locks:
//!
//! ```
//! use lock_runtime::backend::memory::MemoryBackend;
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! registry::add("doc-memory-a", AliasConfig::from_url("memory://doc-memory").unwrap()).unwrap();
//! registry::add("doc-memory-b", AliasConfig::memory_named("doc-memory")).unwrap();
//! let _held = Lock::new("sync").alias("doc-memory-a").acquire().unwrap();
//! assert!(Lock::new("sync").alias("doc-memory-b").try_acquire().unwrap().is_none());
//! assert_eq!(MemoryBackend::named("doc-memory").held(), 1);
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use hashbrown::{DefaultHashBuilder, HashTable};
use once_cell::sync::Lazy;

use crate::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use crate::sync::thread::{self, Thread};
use crate::sync::{Arc, Mutex, MutexGuard, Weak};

use super::timer::Timer;
use super::{
    Acquired, Attempt, Backend, BackendError, BoxFuture, Busy, Held, Namespace, Request, Token,
    Wait,
};
use crate::admin::{AUDIT_LOG_LEN, Forced, Owner, Page};

#[cfg(all(test, shuttle))]
mod model;

/// `memory://NAME` (`memory://` is the store called `default`).
pub(crate) static KIND: super::kind::StoreKind = super::kind::StoreKind {
    name: "memory",
    schemes: &["memory"],
    settings: &["prefix", "poll_ms", "lease_ms"],
    passed_on: &[],
    // Only the aliases naming a memory store share it.
    default_prefix: "",
    locate: |url| {
        let name = url.split_once("://").map_or(url, |(_, n)| n);
        let name = name.trim_end_matches('/');
        Ok(vec![
            if name.is_empty() { "default" } else { name }.to_owned(),
        ])
    },
    open: |at, _| {
        let name = at.first().map_or("default", String::as_str);
        Ok(MemoryBackend::named(name))
    },
    fresh: Some(|clock| MemoryBackend::on_clock(clock)),
};

/// How long a waiter may queue before releases hand the lock straight to it
/// instead of letting newcomers barge in.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::memory::{MemoryBackend, STARVATION};
/// use lock_runtime::backend::{Attempt, Backend, Request, Wait};
///
/// let store = Arc::new(MemoryBackend::new());
/// let holder = Request::new("k");
/// store.try_acquire(&holder).unwrap();
/// let waiter = std::thread::spawn({
///     let store = Arc::clone(&store);
///     move || store.acquire(&Request::new("k"), Wait::new(None, Duration::from_secs(1)))
/// });
/// while store.waiting("k") == 0 {
///     std::thread::yield_now();
/// }
/// std::thread::sleep(STARVATION * 2);
/// store.release("k", holder.token).unwrap();
/// // The waiter had queued past STARVATION: the release handed the lock to
/// // it, and a newcomer cannot barge in.
/// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Busy(_)));
/// assert!(waiter.join().unwrap().unwrap().is_some());
/// ```
pub const STARVATION: Duration = Duration::from_millis(1);

const SHARDS: usize = 64;
/// Every this many new keys in a shard, entries whose lease ran out without a
/// release (`delete_on_exit(false)`, a leaked guard) are swept away.
const SWEEP_EVERY: u32 = 1024;
const NO_LEASE: u64 = u64::MAX;

/// An in-process lock store.
///
/// Stores are named: every alias configured as `memory://NAME` (or
/// [`AliasConfig::memory`](crate::registry::AliasConfig::memory)) shares the
/// store of that name, so reconfiguring the registry never splits one lock
/// into two. The store honours leases, `steal_after`, `delete_on_exit` and
/// fairness, and wakes waiters on release instead of polling.
///
/// ```
/// use lock_runtime::backend::memory::MemoryBackend;
/// use lock_runtime::backend::{Attempt, Backend, Request};
///
/// let store = MemoryBackend::new();
/// let first = Request::new("k");
/// assert!(matches!(store.try_acquire(&first).unwrap(), Attempt::Acquired(_)));
/// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Busy(_)));
/// assert!(store.release("k", first.token).unwrap());
/// ```
pub struct MemoryBackend {
    shards: Box<[Shard]>,
    hasher: DefaultHashBuilder,
    /// `None`: the real clock. A test's virtual clock otherwise, read in
    /// its place by every operation (one branch, no lock).
    clock: Option<Arc<VirtualClock>>,
    /// The last forced releases, newest at the back: the audit log.
    audit: Mutex<VecDeque<Forced>>,
}

#[repr(align(64))]
struct Shard {
    state: Mutex<ShardState>,
}

#[derive(Default)]
struct ShardState {
    /// Slots are boxed: a bucket is one pointer, so a table sized for
    /// growth costs 9 bytes per bucket, not a whole slot's.
    table: HashTable<Box<Slot>>,
    /// The last fencing token handed out for a key of this shard. Keys never
    /// move between shards, so it is strictly increasing per key.
    fence: u64,
    inserts: u32,
    /// The box of the last slot dropped, emptied, for the next new key: a
    /// key taken and given back over and over allocates nothing. One per
    /// shard, holding no key, so it keeps no memory a key would.
    spare: Option<Box<Slot>>,
}

/// One key: its holder, if any, and who waits for it. Kept small (72
/// bytes, boxed, a short key inside it): a store may hold hundreds of
/// thousands of them.
struct Slot {
    key: Key,
    holder: Option<Holder>,
    /// The line of waiters and the holder's label and function, behind one
    /// pointer that is null for a key nobody waited for, taken with neither.
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    line: VecDeque<Arc<Waiter>>,
    /// The holder's label and function, for the admin API.
    meta: Option<Meta>,
}

/// The most bytes a key keeps inside its slot.
const INLINE: usize = 22;

/// A stored key: a short one inside the slot (taking it allocates
/// nothing), a longer one on the heap.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Key {
    #[inline(always)]
    fn new(key: &str) -> Self {
        let src = key.as_bytes();
        match u8::try_from(src.len()) {
            Ok(len) if src.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..src.len()].copy_from_slice(src);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(key.into()),
        }
    }

    /// Makes this `key`, in place when both are short: a key built
    /// aside and moved in was copied twice, and reading back what the copy
    /// had just written stalled on its overlapping stores.
    #[inline(always)]
    fn set(&mut self, key: &str) {
        let src = key.as_bytes();
        match self {
            Self::Inline { len, bytes } if src.len() <= INLINE => {
                if let Some(to) = bytes.get_mut(..src.len()) {
                    to.copy_from_slice(src);
                    *len = src.len() as u8;
                }
            }
            _ => *self = Self::new(key),
        }
    }

    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..*len as usize).unwrap_or_default(),
            Self::Heap(key) => key.as_bytes(),
        }
    }

    /// The key as text (it was copied from a `str`, so it always is).
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes()).unwrap_or_default()
    }

    #[inline(always)]
    fn is(&self, key: &str) -> bool {
        same(self.bytes(), key.as_bytes())
    }
}

/// `a == b`, with keys of 8 to 16 bytes (most lock names) compared as two
/// overlapping words: the call to `memcmp` that the slice comparison makes
/// cost more than the comparison, twice a lock.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| w.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    if (8..=16).contains(&n) {
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// What a holder said about itself, for the admin API. The function path
/// is the macro's `'static` text: only a label is copied.
#[derive(Clone)]
struct Meta {
    label: Option<Box<str>>,
    function: Option<&'static str>,
}

impl Meta {
    #[inline(always)]
    fn of(req: &Request<'_>) -> Option<Self> {
        if req.label.is_none() && req.function.is_none() {
            return None;
        }
        Some(Self {
            label: req.label.map(Into::into),
            function: req.function,
        })
    }
}

#[derive(Clone, Copy)]
struct Holder {
    /// The owner's token, in two halves so that the slot needs no 16-byte
    /// alignment.
    token: [u64; 2],
    /// Nanoseconds on [`now`]'s clock.
    since: u64,
    until: u64,
    /// The fencing token it was granted, for the admin API. Never zero,
    /// which makes an empty `Option<Holder>` free (8 bytes a slot).
    fence: NonZeroU64,
}

impl Holder {
    #[inline(always)]
    fn new(token: Token, now: u64, lease: Option<Duration>, fence: u64) -> Self {
        let t = token.as_u128();
        Self {
            token: [(t >> 64) as u64, t as u64],
            since: now,
            until: lease.map_or(NO_LEASE, |l| now.saturating_add(nanos(l))),
            // Tokens count up from 1; a counter that wrapped (after 2^64
            // grants) would stall at the top rather than panic.
            fence: NonZeroU64::new(fence).unwrap_or(NonZeroU64::MAX),
        }
    }

    fn owned_by(&self, token: Token) -> bool {
        let t = token.as_u128();
        self.token == [(t >> 64) as u64, t as u64]
    }

    fn live(&self, now: u64) -> bool {
        now < self.until
    }

    fn leased(&self) -> bool {
        self.until != NO_LEASE
    }
}

impl Slot {
    fn line(&self) -> Option<&VecDeque<Arc<Waiter>>> {
        self.extra.as_deref().map(|e| &e.line)
    }

    fn meta(&self) -> Option<&Meta> {
        self.extra.as_deref().and_then(|e| e.meta.as_ref())
    }

    /// Someone is in line (not counting those who left it).
    fn has_waiters(&self) -> bool {
        self.line().is_some_and(|q| q.iter().any(|w| !w.left()))
    }

    /// How many are in line (not counting those who left it).
    fn in_line(&self) -> usize {
        self.line()
            .map_or(0, |q| q.iter().filter(|w| !w.left()).count())
    }

    /// The line holds anyone, or anyone who left it and is still to be
    /// dropped: a release must look at it.
    fn queued(&self) -> bool {
        self.line().is_some_and(|q| !q.is_empty())
    }

    fn waiters(&mut self) -> &mut VecDeque<Arc<Waiter>> {
        &mut self.extra.get_or_insert_with(Default::default).line
    }

    fn unused(&self) -> bool {
        self.holder.is_none() && !self.has_waiters()
    }

    /// A new holder (or none): its label and function replace the last one's.
    #[inline(always)]
    fn hold(&mut self, holder: Option<Holder>, meta: Option<Meta>) {
        self.holder = holder;
        match (meta, self.extra.as_deref_mut()) {
            (None, None) => {}
            (None, Some(extra)) => extra.meta = None,
            (meta, _) => self.extra.get_or_insert_with(Default::default).meta = meta,
        }
    }
}

/// Reads the clock at most once, and only if asked: an unleased lock with
/// nobody waiting is released without looking at the time.
struct Clock<'a> {
    read: Option<u64>,
    store: Option<&'a VirtualClock>,
}

impl<'a> Clock<'a> {
    fn lazy(store: &'a MemoryBackend) -> Self {
        Self {
            read: None,
            store: store.clock.as_deref(),
        }
    }

    /// A clock already read at `now`.
    fn read(now: u64) -> Self {
        Self {
            read: Some(now),
            store: None,
        }
    }

    fn now(&mut self) -> u64 {
        let store = self.store;
        *self.read.get_or_insert_with(|| match store {
            None => now(),
            Some(clock) => clock.now(),
        })
    }
}

/// A clock that runs ahead of the real one by however far a test advanced
/// it (`lock_runtime::testing::Clock`). Time still passes at the real rate,
/// so what depends on elapsed time (starvation, retry times) behaves as on
/// the real clock, while a lease can be made to run out at once.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) struct VirtualClock {
    /// Nanoseconds added to the real clock; only ever grows, so the clock
    /// stays monotonic.
    offset: AtomicU64,
    /// The stores reading this clock, whose waiters an advance wakes.
    stores: Mutex<Vec<Weak<MemoryBackend>>>,
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))]
impl VirtualClock {
    pub(crate) fn new() -> Self {
        Self {
            offset: AtomicU64::new(0),
            stores: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        // Short of `NO_LEASE`, which would make unleased locks look expired.
        now()
            .saturating_add(self.offset.load(Ordering::Acquire))
            .min(NO_LEASE - 1)
    }

    /// How far the clock was advanced in all.
    pub(crate) fn advanced(&self) -> Duration {
        Duration::from_nanos(self.offset.load(Ordering::Acquire))
    }

    /// Moves the clock `by` ahead, then has every waiter of its stores look
    /// again: a lease that just ran out sends no release to wake them.
    pub(crate) fn advance(&self, by: Duration) {
        let _ = self
            .offset
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_add(nanos(by)))
            });
        let stores: Vec<Arc<MemoryBackend>> = lock(&self.stores)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for store in stores {
            store.nudge();
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A fresh, private store.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// let (a, b) = (MemoryBackend::new(), MemoryBackend::new());
    /// assert!(matches!(a.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)));
    /// assert!(matches!(b.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)), "b shares nothing with a");
    ///
    /// // An alias of its own that no `memory://` URL can reach:
    /// registry::add("doc-memory-private", AliasConfig::custom(Arc::new(MemoryBackend::new()))).unwrap();
    /// let guard = Lock::new("k").alias("doc-memory-private").acquire().unwrap();
    /// assert_eq!(guard.remaining(), None, "held until released, like `memory://`");
    /// ```
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    state: Mutex::new(ShardState::default()),
                })
                .collect(),
            hasher: DefaultHashBuilder::default(),
            clock: None,
            audit: Mutex::new(VecDeque::new()),
        }
    }

    /// A fresh, private store on a virtual clock.
    pub(crate) fn on_clock(clock: &Arc<VirtualClock>) -> Arc<Self> {
        let store = Arc::new(Self {
            clock: Some(Arc::clone(clock)),
            ..Self::new()
        });
        let mut stores = lock(&clock.stores);
        stores.retain(|w| w.strong_count() > 0);
        stores.push(Arc::downgrade(&store));
        store
    }

    /// The store's clock reading, in nanoseconds.
    fn now(&self) -> u64 {
        match &self.clock {
            None => now(),
            Some(clock) => clock.now(),
        }
    }

    /// What a grant tells the runtime: the lease counts from the real
    /// instant the store's reading `at` stands for.
    fn granted(&self, fence: u64, at: u64) -> Acquired {
        let at = match &self.clock {
            None => at,
            // A later advance only moves this earlier: the guard then counts
            // a shorter validity, never a longer one.
            Some(clock) => at.saturating_sub(clock.offset.load(Ordering::Acquire)),
        };
        Acquired::new(Some(fence)).sent_at(EPOCH.at + Duration::from_nanos(at))
    }

    /// Has every queued waiter look at its lock again, as if its timer had
    /// fired (after the clock jumped).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    fn nudge(&self) {
        for shard in &self.shards[..] {
            let st = lock(&shard.state);
            for slot in st.table.iter() {
                for w in slot.line().into_iter().flatten() {
                    if w.waiting() {
                        w.signal(NUDGED);
                    }
                }
            }
        }
    }

    /// The process-wide store called `name`, created on first use. It lives
    /// as long as an alias or a guard uses it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// let store = MemoryBackend::named("doc-memory-named");
    /// assert!(Arc::ptr_eq(&store, &MemoryBackend::named("doc-memory-named")));
    ///
    /// registry::add("doc-memory-named", AliasConfig::memory_named("doc-memory-named")).unwrap();
    /// let _guard = Lock::new("k").alias("doc-memory-named").acquire().unwrap();
    /// assert_eq!(store.held(), 1, "the alias uses the same store");
    /// ```
    pub fn named(name: &str) -> Arc<Self> {
        static STORES: Lazy<Mutex<HashMap<String, Weak<MemoryBackend>>>> =
            Lazy::new(Default::default);
        let mut stores = lock(&STORES);
        if let Some(store) = stores.get(name).and_then(Weak::upgrade) {
            return store;
        }
        stores.retain(|_, w| w.strong_count() > 0);
        let store = Arc::new(Self::new());
        stores.insert(name.to_owned(), Arc::downgrade(&store));
        store
    }

    /// How many keys are held right now (expired leases not counted).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let a = Request::new("a");
    /// store.try_acquire(&a).unwrap();
    /// store.try_acquire(&Request::new("b").lease(Some(Duration::from_millis(20)))).unwrap();
    /// std::thread::sleep(Duration::from_millis(40));
    /// assert_eq!(store.held(), 1, "b's lease ran out");
    /// store.release("a", a.token).unwrap();
    /// assert_eq!(store.held(), 0);
    /// ```
    pub fn held(&self) -> usize {
        let now = self.now();
        self.shards
            .iter()
            .map(|s| {
                lock(&s.state)
                    .table
                    .iter()
                    .filter(|slot| slot.holder.is_some_and(|h| h.live(now)))
                    .count()
            })
            .sum()
    }

    /// How many acquisitions wait in line for `key`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request, Wait};
    ///
    /// let store = Arc::new(MemoryBackend::new());
    /// let holder = Request::new("k");
    /// store.try_acquire(&holder).unwrap();
    /// assert_eq!(store.waiting("k"), 0);
    ///
    /// let waiter = std::thread::spawn({
    ///     let store = Arc::clone(&store);
    ///     move || store.acquire(&Request::new("k"), Wait::new(None, Duration::from_secs(1)))
    /// });
    /// while store.waiting("k") == 0 {
    ///     std::thread::yield_now(); // the waiter joins the line
    /// }
    /// store.release("k", holder.token).unwrap();
    /// assert!(waiter.join().unwrap().unwrap().is_some());
    /// assert_eq!(store.waiting("k"), 0);
    /// ```
    pub fn waiting(&self, key: &str) -> usize {
        let hash = self.hash(key);
        self.shard(hash).find(hash, key).map_or(0, |s| s.in_line())
    }

    /// Keys hash by their bytes, as the table rehashes its slots' keys.
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key.as_bytes())
    }

    #[cfg(test)]
    fn slots(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.state).table.len()).sum()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, ShardState> {
        // Bits the table does not use for its own buckets or tags.
        lock(&self.shards[(hash >> 32) as usize % SHARDS].state)
    }

    /// First step of a waiting acquisition: take the lock or give up
    /// (`Err`), or join the queue and get the ticket to wait with, and when
    /// to look again on its own. `wake` is called only to queue: the
    /// thread handle it clones costs two shared-count updates that an
    /// acquisition taking a free lock does without.
    fn enqueue<'a>(
        &'a self,
        req: &'a Request<'_>,
        wait: Wait,
        wake: impl FnOnce() -> Wake,
    ) -> Result<(Ticket<'a>, Option<u64>), Option<Acquired>> {
        let hash = self.hash(req.key);
        let now = self.now();
        let mut st = self.shard(hash);
        match st.take(&self.hasher, hash, req, now, false) {
            Ok(fence) => Err(Some(self.granted(fence, now))),
            Err(_) if past(wait.deadline) => Err(None),
            Err(retry_at) => {
                let waiter = Arc::new(Waiter {
                    meta: Meta::of(req),
                    token: req.token,
                    lease: req.lease,
                    fair: req.fair,
                    queued_at: now,
                    state: AtomicU8::new(WAITING),
                    fence: AtomicU64::new(0),
                    granted_at: AtomicU64::new(0),
                    wake: Mutex::new(wake()),
                });
                st.slot(&self.hasher, hash, req.key)
                    .waiters()
                    .push_back(Arc::clone(&waiter));
                let ticket = Ticket {
                    backend: self,
                    key: req.key,
                    hash,
                    waiter,
                    done: false,
                };
                Ok((ticket, retry_at))
            }
        }
    }

    /// After a waiter wakes (signalled or timed out): the lock, a new time to
    /// look again, or the end of the wait.
    fn after_wake(&self, ticket: &mut Ticket<'_>, req: &Request<'_>, wait: Wait) -> Step {
        let now = self.now();
        let hash = ticket.hash;
        let mut st = self.shard(hash);
        let waiter = &ticket.waiter;
        // Nudged by a clock advance: still in line, looking again as on a
        // timeout (below).
        let _ = waiter
            .state
            .compare_exchange(NUDGED, WAITING, Ordering::AcqRel, Ordering::Acquire);
        match waiter.state.load(Ordering::Acquire) {
            GRANTED => {
                ticket.done = true;
                return Step::Done(Some(self.granted(
                    waiter.fence.load(Ordering::Acquire),
                    waiter.granted_at.load(Ordering::Acquire),
                )));
            }
            WOKEN => {
                // Popped by a release: the slot is free unless a newcomer barged.
                match st.take(&self.hasher, hash, req, now, true) {
                    Ok(fence) => {
                        ticket.done = true;
                        return Step::Done(Some(self.granted(fence, now)));
                    }
                    Err(_) if past(wait.deadline) => {
                        ticket.done = true;
                        st.abandon(hash, req.key, waiter, now);
                        return Step::Done(None);
                    }
                    Err(retry_at) => {
                        // Back to the front: it keeps its place and its age.
                        waiter.state.store(WAITING, Ordering::Release);
                        st.slot(&self.hasher, hash, req.key)
                            .waiters()
                            .push_front(Arc::clone(waiter));
                        return Step::Again(retry_at);
                    }
                }
            }
            _ => {}
        }
        // Timed out while queued: the holder's lease or steal age may have run
        // out (no release signals that), or the deadline came.
        match st.take(&self.hasher, hash, req, now, true) {
            Ok(fence) => {
                // Still in line: dropped from it by the next hand-off.
                waiter.state.store(LEFT, Ordering::Release);
                ticket.done = true;
                Step::Done(Some(self.granted(fence, now)))
            }
            Err(_) if past(wait.deadline) => {
                ticket.done = true;
                st.abandon(hash, req.key, waiter, now);
                Step::Done(None)
            }
            Err(retry_at) => Step::Again(retry_at),
        }
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

impl ShardState {
    fn find(&mut self, hash: u64, key: &str) -> Option<&mut Slot> {
        self.table
            .find_mut(hash, |s| s.key.is(key))
            .map(|s| &mut **s)
    }

    /// Keeps the box of a slot that leaves the table for the next new key,
    /// emptied of whatever a key, a line or a holder had put in it.
    fn drop_slot(&mut self, mut slot: Box<Slot>) {
        if self.spare.is_some() {
            return;
        }
        slot.key = Key::Inline {
            len: 0,
            bytes: [0; INLINE],
        };
        slot.holder = None;
        // An empty line that never held anyone has no buffer: its box is
        // kept (a #[lock] holder's function goes there), any other dropped.
        match slot.extra.as_deref_mut() {
            Some(extra) if extra.line.capacity() == 0 => extra.meta = None,
            _ => slot.extra = None,
        }
        self.spare = Some(slot);
    }

    /// The slot for `key`, created empty if it is not there.
    fn slot(&mut self, hasher: &DefaultHashBuilder, hash: u64, key: &str) -> &mut Slot {
        let mut spare = self.spare.take();
        let slot = self
            .table
            .entry(hash, |s| s.key.is(key), |s| hasher.hash_one(s.key.bytes()))
            .or_insert_with(|| fresh(&mut spare, key, None, None))
            .into_mut();
        self.spare = spare;
        slot
    }

    /// Takes the lock for `req` if it is free, expired or stealable; else the
    /// clock reading at which to look again (`None`: wait for a signal).
    /// `queued` requests were already in line, so they may pass fair waiters.
    fn take(
        &mut self,
        hasher: &DefaultHashBuilder,
        hash: u64,
        req: &Request<'_>,
        now: u64,
        queued: bool,
    ) -> Result<u64, Option<u64>> {
        let holder = Holder::new(req.token, now, req.lease, self.fence + 1);
        // One probe of the table, whether the key is there or not.
        let table = &mut self.table;
        match table.entry(
            hash,
            |s| s.key.is(req.key),
            |s| hasher.hash_one(s.key.bytes()),
        ) {
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let mut spare = self.spare.take();
                let slot = fresh(&mut spare, req.key, Some(holder), Meta::of(req));
                self.spare = spare;
                vacant.insert(slot);
                self.inserts += 1;
                if self.inserts.is_multiple_of(SWEEP_EVERY) {
                    self.sweep(now);
                }
            }
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                if let Some(h) = slot.holder {
                    let steal_at = req
                        .steal_after
                        .map_or(NO_LEASE, |s| h.since.saturating_add(nanos(s)));
                    if h.live(now) && now < steal_at {
                        return Err(Some(h.until.min(steal_at)));
                    }
                }
                if req.fair && !queued && slot.has_waiters() {
                    // Join the line. A lease that ran out sends no signal, so
                    // look again when it ends.
                    return Err(slot.holder.map(|h| h.until).filter(|&u| u != NO_LEASE));
                }
                slot.hold(Some(holder), Meta::of(req));
            }
        }
        self.fence += 1;
        Ok(self.fence)
    }

    fn release(&mut self, hash: u64, key: &str, token: Token, clock: &mut Clock) -> bool {
        // One probe: the entry found is the one removed.
        let Ok(mut entry) = self.table.find_entry(hash, |s| s.key.is(key)) else {
            return false;
        };
        let slot = entry.get_mut();
        let Some(h) = slot.holder.filter(|h| h.owned_by(token)) else {
            return false;
        };
        slot.hold(None, None);
        // Only a leased lock can have run out; only waiters need the time.
        let live = !h.leased() || h.live(clock.now());
        if slot.queued() {
            self.hand_off(hash, key, clock.now());
        } else {
            let (slot, _) = entry.remove();
            self.drop_slot(slot);
        }
        live
    }

    fn remove(&mut self, hash: u64, key: &str) {
        if let Ok(entry) = self.table.find_entry(hash, |s| s.key.is(key)) {
            let (slot, _) = entry.remove();
            self.drop_slot(slot);
        }
    }

    /// After a release: grant the lock to the first waiter if it is fair or
    /// starving, else wake it to compete. Drops the slot when nothing is left.
    fn hand_off(&mut self, hash: u64, key: &str, now: u64) {
        let fence = &mut self.fence;
        let Some(slot) = self.table.find_mut(hash, |s| s.key.is(key)) else {
            return;
        };
        if slot.holder.is_some_and(|h| !h.live(now)) {
            slot.hold(None, None);
        }
        // Those who left the line are dropped as they reach its front: taking
        // each out of the middle when it gave up cost a pass over the whole
        // line, under the shard's lock, and a burst of thousands of waiters
        // timing out together stalled every hand-off behind those passes.
        while slot.holder.is_none()
            && let Some(w) = slot.extra.as_mut().and_then(|e| e.line.pop_front())
        {
            if w.left() {
                continue;
            }
            if w.fair || now.saturating_sub(w.queued_at) >= nanos(STARVATION) {
                *fence += 1;
                slot.hold(
                    Some(Holder::new(w.token, now, w.lease, *fence)),
                    w.meta.clone(),
                );
                w.fence.store(*fence, Ordering::Release);
                w.granted_at.store(now, Ordering::Release);
                w.signal(GRANTED);
            } else {
                w.signal(WOKEN);
            }
            break;
        }
        if slot.unused() {
            self.remove(hash, key);
        }
    }

    /// A waiter gives up (deadline, cancellation, panic): leave the queue and
    /// pass on whatever it was given.
    fn abandon(&mut self, hash: u64, key: &str, waiter: &Arc<Waiter>, now: u64) {
        match waiter.state.load(Ordering::Acquire) {
            GRANTED => {
                self.release(hash, key, waiter.token, &mut Clock::read(now));
            }
            WOKEN => self.hand_off(hash, key, now),
            _ => {
                // Dropped from the line when it reaches the front.
                waiter.state.store(LEFT, Ordering::Release);
                // A lock left free (a lease that ran out) with others still in
                // line: wake the next one, since no release will.
                self.hand_off(hash, key, now);
            }
        }
    }

    fn sweep(&mut self, now: u64) {
        self.table
            .retain(|slot| slot.holder.is_some_and(|h| h.live(now)) || slot.has_waiters());
    }
}

/// A box for a new slot: the `spare` one if there is one.
#[inline(always)]
fn fresh(
    spare: &mut Option<Box<Slot>>,
    key: &str,
    holder: Option<Holder>,
    meta: Option<Meta>,
) -> Box<Slot> {
    let mut slot = match spare.take() {
        Some(mut spare) => {
            spare.key.set(key);
            spare
        }
        None => Box::new(Slot {
            key: Key::new(key),
            holder: None,
            extra: None,
        }),
    };
    slot.hold(holder, meta);
    slot
}

enum Step {
    Done(Option<Acquired>),
    Again(Option<u64>),
}

const WAITING: u8 = 0;
const WOKEN: u8 = 1;
const GRANTED: u8 = 2;
/// Still in line, but told to look again (its store's clock jumped).
const NUDGED: u8 = 3;
/// Gave up or took the lock by itself while in line; skipped and dropped
/// when it reaches the front.
const LEFT: u8 = 4;

/// One queued acquisition. Its state changes only under its shard's lock.
struct Waiter {
    meta: Option<Meta>,
    token: Token,
    lease: Option<Duration>,
    fair: bool,
    queued_at: u64,
    state: AtomicU8,
    fence: AtomicU64,
    granted_at: AtomicU64,
    wake: Mutex<Wake>,
}

enum Wake {
    Thread(Thread),
    Task(Option<Waker>),
}

impl Waiter {
    fn signal(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        match &mut *lock(&self.wake) {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
        }
    }

    fn waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    fn left(&self) -> bool {
        self.state.load(Ordering::Acquire) == LEFT
    }
}

/// Gives the queue place back if the acquisition ends without the lock: on
/// timeout, on a dropped future, on a panic.
struct Ticket<'a> {
    backend: &'a MemoryBackend,
    key: &'a str,
    hash: u64,
    waiter: Arc<Waiter>,
    done: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.backend.shard(self.hash).abandon(
                self.hash,
                self.key,
                &self.waiter,
                self.backend.now(),
            );
        }
    }
}

/// Resolves when the waiter is signalled or the timer fires.
struct Signalled<'a> {
    waiter: &'a Waiter,
    timer: Option<&'a mut Timer>,
}

impl Future for Signalled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Wake::Task(w) = &mut *lock(&self.waiter.wake) {
            match w {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        if !self.waiter.waiting() {
            return Poll::Ready(());
        }
        match &mut self.timer {
            Some(t) => Pin::new(&mut **t).poll(cx),
            None => Poll::Pending,
        }
    }
}

/// When a queued waiter should look again on its own: at the holder's lease
/// end or steal age (readings of `store`'s clock), or at the deadline,
/// whichever comes first.
fn wake_deadline(
    store: &MemoryBackend,
    retry_at: Option<u64>,
    deadline: Option<Instant>,
) -> Option<Instant> {
    let retry = retry_at.filter(|&r| r != NO_LEASE).map(|r| {
        let now = store.now();
        Instant::now() + Duration::from_nanos(r.saturating_sub(now))
    });
    match (retry, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Backend for MemoryBackend {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let now = self.now();
        let hash = self.hash(req.key);
        Ok(
            match self.shard(hash).take(&self.hasher, hash, req, now, false) {
                Ok(fence) => Attempt::Acquired(self.granted(fence, now)),
                Err(retry_at) => Attempt::Busy(Busy::new(
                    retry_at
                        .filter(|&r| r != NO_LEASE)
                        .map(|r| Duration::from_nanos(r.saturating_sub(now))),
                )),
            },
        )
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let hash = self.hash(key);
        Ok(self
            .shard(hash)
            .release(hash, key, token, &mut Clock::lazy(self)))
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let now = self.now();
        let hash = self.hash(key);
        let mut st = self.shard(hash);
        Ok(match st.find(hash, key).and_then(|s| s.holder.as_mut()) {
            Some(h) if h.owned_by(token) && h.live(now) => {
                h.until = now.saturating_add(nanos(lease));
                true
            }
            _ => false,
        })
    }

    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        let (mut ticket, mut retry_at) =
            match self.enqueue(req, wait, || Wake::Thread(thread::current())) {
                Ok(queued) => queued,
                Err(outcome) => return Ok(outcome),
            };
        loop {
            let until = wake_deadline(self, retry_at, wait.deadline);
            while ticket.waiter.waiting() {
                match until {
                    None => thread::park(),
                    Some(u) => {
                        let now = Instant::now();
                        if now >= u {
                            break;
                        }
                        thread::park_timeout(u - now);
                    }
                }
            }
            match self.after_wake(&mut ticket, req, wait) {
                Step::Done(outcome) => return Ok(outcome),
                Step::Again(r) => retry_at = r,
            }
        }
    }

    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        Box::pin(async move {
            let (mut ticket, mut retry_at) = match self.enqueue(req, wait, || Wake::Task(None)) {
                Ok(queued) => queued,
                Err(outcome) => return Ok(outcome),
            };
            // Kept across turns while the time to look again stays the same
            // (a deadline).
            let mut timer: Option<(Instant, Timer)> = None;
            loop {
                let until = wake_deadline(self, retry_at, wait.deadline);
                match (until, &timer) {
                    // Not yet fired: a fired one would be ready at once.
                    (Some(u), Some((at, _))) if *at == u && Instant::now() < u => {}
                    (Some(u), _) => timer = Some((u, Timer::at(u))),
                    (None, _) => timer = None,
                }
                Signalled {
                    waiter: &ticket.waiter,
                    timer: timer.as_mut().map(|(_, t)| t),
                }
                .await;
                match self.after_wake(&mut ticket, req, wait) {
                    Step::Done(outcome) => return Ok(outcome),
                    Step::Again(r) => retry_at = r,
                }
            }
        })
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        let now = self.now();
        let hash = self.hash(key);
        let mut st = self.shard(hash);
        let holder = st.find(hash, key).and_then(|s| s.holder);
        Some(Ok(holder.is_some_and(|h| h.owned_by(token) && h.live(now))))
    }

    fn holders(&self, ns: &Namespace) -> Option<Result<Vec<Held>, BackendError>> {
        let now = self.now();
        let mut held = Vec::new();
        for shard in &self.shards {
            let st = lock(&shard.state);
            for slot in st.table.iter() {
                let Some(h) = slot.holder.filter(|h| h.live(now)) else {
                    continue;
                };
                if ns.key_of(slot.key.as_str()).is_none() {
                    continue;
                }
                held.push(slot.held(&h, now));
            }
        }
        Some(Ok(held))
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        Some(Ok(self.page(ns, prefix, cursor, limit)))
    }

    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        let now = self.now();
        let hash = self.hash(key);
        let mut st = self.shard(hash);
        let slot = st.find(hash, key);
        Some(Ok(slot.and_then(|s| {
            let h = s.holder.filter(|h| h.live(now))?;
            Some(s.held(&h, now))
        })))
    }

    fn force_release(
        &self,
        ns: &Namespace,
        mut entry: Forced,
    ) -> Option<Result<Forced, BackendError>> {
        let _ = ns;
        let now = self.now();
        let hash = self.hash(&entry.key);
        {
            let mut st = self.shard(hash);
            if let Some(slot) = st.find(hash, &entry.key) {
                if let Some(h) = slot.holder.filter(|h| h.live(now)) {
                    entry.removed = Some(slot.held(&h, now));
                }
                slot.hold(None, None);
                // Wakes (or grants to) the first waiter, as a release does;
                // the shard's counter goes on, so the next token is higher.
                st.hand_off(hash, &entry.key, now);
            }
        }
        let mut audit = lock(&self.audit);
        if audit.len() >= AUDIT_LOG_LEN {
            audit.pop_front();
        }
        audit.push_back(entry.clone());
        Some(Ok(entry))
    }

    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        let audit = lock(&self.audit);
        let log = audit.iter().rev().filter(|f| ns.key_of(&f.key).is_some());
        Some(Ok(log.take(limit).cloned().collect()))
    }

    fn supports_unleased(&self) -> bool {
        true
    }
}

impl Slot {
    /// What the admin API shows of this slot, held by `h`.
    fn held(&self, h: &Holder, now: u64) -> Held {
        let held_for = Duration::from_nanos(now.saturating_sub(h.since));
        let meta = self.meta();
        let owner = Owner::of_this_process()
            .label(meta.and_then(|m| m.label.as_deref()).map(str::to_owned))
            .function(meta.and_then(|m| m.function).map(str::to_owned));
        Held::new(self.key.as_str())
            .held_for(Some(held_for))
            .lease_left(h.leased().then(|| Duration::from_nanos(h.until - now)))
            .fencing(Some(h.fence.get()))
            .waiting(Some(self.in_line()))
            .owner(Some(owner))
            .acquired_at(SystemTime::now().checked_sub(held_for))
    }
}

impl MemoryBackend {
    /// One page of held locks: those after `cursor` (the last key of the
    /// page before), the `limit` smallest keys of them. An in-process store
    /// reads every slot for it, one shard at a time.
    fn page(&self, ns: &Namespace, prefix: &str, cursor: Option<&str>, limit: usize) -> Page {
        let now = self.now();
        let mut held = Vec::new();
        for shard in &self.shards {
            let st = lock(&shard.state);
            for slot in st.table.iter() {
                let Some(h) = slot.holder.filter(|h| h.live(now)) else {
                    continue;
                };
                let key = slot.key.as_str();
                let after = cursor.is_none_or(|c| key > c);
                if after && key.starts_with(prefix) && ns.key_of(key).is_some() {
                    held.push(slot.held(&h, now));
                }
            }
        }
        let limit = limit.max(1);
        let more = held.len() > limit;
        if more {
            held.select_nth_unstable_by(limit, |a, b| a.key.cmp(&b.key));
            held.truncate(limit);
        }
        held.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let next = if more {
            held.last().map(|h| h.key.clone())
        } else {
            None
        };
        Page::new(held, next)
    }
}

/// Where the store's clock readings count from.
struct Epoch {
    at: Instant,
    /// `at` on `CLOCK_MONOTONIC` (the clock behind `Instant`), read just
    /// after it: a reading turned back into an `Instant` is then never
    /// later than the moment it was taken, so a lease counted from it
    /// errs short.
    #[cfg(target_os = "linux")]
    raw: u64,
}

static EPOCH: Lazy<Epoch> = Lazy::new(|| Epoch {
    at: Instant::now(),
    #[cfg(target_os = "linux")]
    raw: monotonic_ns(),
});

/// Nanoseconds since the first call, on the monotonic clock. Read as a
/// plain number: `Instant::elapsed`'s timespec arithmetic and `Duration`
/// conversion cost a fifth as much as the reading itself, on every
/// acquisition.
#[cfg(target_os = "linux")]
fn now() -> u64 {
    let epoch = &*EPOCH;
    monotonic_ns().saturating_sub(epoch.raw)
}

#[cfg(not(target_os = "linux"))]
fn now() -> u64 {
    nanos(EPOCH.at.elapsed())
}

/// The monotonic clock; a reading that failed (it cannot on Linux) counts
/// as the epoch, never later.
#[cfg(target_os = "linux")]
fn monotonic_ns() -> u64 {
    super::clock::monotonic_ns().unwrap_or(0)
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128 - 1) as u64
}

/// The store's mutexes guard plain data that every operation leaves
/// consistent, so a panic elsewhere never poisons the lock service.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn req(key: &str) -> Request<'_> {
        Request::new(key)
    }

    fn acquired(a: Attempt) -> Acquired {
        match a {
            Attempt::Acquired(a) => a,
            Attempt::Busy(b) => panic!("expected the lock, got Busy({b:?})"),
        }
    }

    /// Keys compare as bytes whatever their length, the word-wise
    /// comparison of 8 to 16 bytes included.
    #[test]
    fn keys_compare_by_every_byte() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        for n in 0..=text.len() {
            let key = Key::new(&text[..n]);
            assert!(key.is(&text[..n]), "{n}");
            for at in 0..n {
                let mut other = text.as_bytes()[..n].to_vec();
                other[at] = b'!';
                assert!(
                    !key.is(std::str::from_utf8(&other).unwrap()),
                    "{n}, byte {at}"
                );
            }
            if n > 0 {
                assert!(!key.is(&text[..n - 1]), "{n}, shorter");
            }
            assert!(
                !key.is(&text[..(n + 1).min(text.len())]) || n == text.len(),
                "{n}, longer"
            );
        }
    }

    #[test]
    fn lease_runs_out_and_next_holder_takes_over() {
        let store = MemoryBackend::new();
        let first = req("k").lease(Some(Duration::from_millis(20)));
        acquired(store.try_acquire(&first).unwrap());
        let Attempt::Busy(b) = store.try_acquire(&req("k")).unwrap() else {
            panic!("lock taken twice")
        };
        assert!(b.retry_in.is_some_and(|r| r <= Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(30));
        let second = req("k");
        acquired(store.try_acquire(&second).unwrap());
        assert!(
            !store.release("k", first.token).unwrap(),
            "an expired holder released the new one"
        );
        assert!(
            !store
                .extend("k", first.token, Duration::from_secs(1))
                .unwrap()
        );
        assert!(store.release("k", second.token).unwrap());
    }

    #[test]
    fn steal_after_takes_over_an_old_lock() {
        let store = MemoryBackend::new();
        acquired(store.try_acquire(&req("k")).unwrap());
        let thief = req("k").steal_after(Some(Duration::from_millis(10)));
        assert!(matches!(
            store.try_acquire(&thief).unwrap(),
            Attempt::Busy(_)
        ));
        std::thread::sleep(Duration::from_millis(15));
        acquired(store.try_acquire(&thief).unwrap());
    }

    /// Waiters that gave up stay in line until they reach its front: they
    /// are not counted, and a release passes over them to the next one.
    #[test]
    fn waiters_who_gave_up_are_skipped_and_not_counted() {
        let store = Arc::new(MemoryBackend::new());
        let holder = req("k");
        acquired(store.try_acquire(&holder).unwrap());
        let join = |n: usize, deadline: Duration| {
            let joined: Vec<_> = (0..n)
                .map(|_| {
                    let store = Arc::clone(&store);
                    thread::spawn(move || {
                        let wait =
                            Wait::new(Some(Instant::now() + deadline), Duration::from_secs(1));
                        let r = Request::new("k");
                        let got = store.acquire(&r, wait).unwrap();
                        if got.is_some() {
                            assert!(store.release("k", r.token).unwrap());
                        }
                        got.is_some()
                    })
                })
                .collect();
            joined
        };
        let quitters = join(3, Duration::from_millis(50));
        while store.waiting("k") < 3 {
            thread::yield_now();
        }
        let patient = join(1, Duration::from_secs(10));
        while store.waiting("k") < 4 {
            thread::yield_now();
        }
        for q in quitters {
            assert!(
                !q.join().unwrap(),
                "a quitter got the lock while it was held"
            );
        }
        assert_eq!(store.waiting("k"), 1, "those who gave up are not counted");
        assert!(store.release("k", holder.token).unwrap());
        for p in patient {
            assert!(
                p.join().unwrap(),
                "the release passed over the patient waiter"
            );
        }
        assert_eq!(store.slots(), 0, "nothing left of the line");
    }

    #[test]
    fn fencing_tokens_increase_per_key() {
        let store = MemoryBackend::new();
        let mut last = 0;
        for _ in 0..100 {
            let r = req("k");
            let f = acquired(store.try_acquire(&r).unwrap()).fencing.unwrap();
            assert!(f > last);
            last = f;
            store.release("k", r.token).unwrap();
        }
    }

    #[test]
    fn waiter_is_woken_by_release_not_by_a_timer() {
        let store = Arc::new(MemoryBackend::new());
        let first = req("k");
        acquired(store.try_acquire(&first).unwrap());
        let s = Arc::clone(&store);
        let t = std::thread::spawn(move || {
            let r = req("k");
            let got = s
                .acquire(&r, Wait::new(None, Duration::from_secs(3600)))
                .unwrap();
            (got, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(50));
        let released = Instant::now();
        store.release("k", first.token).unwrap();
        let (got, at) = t.join().unwrap();
        assert!(got.is_some());
        assert!(at.duration_since(released) < Duration::from_millis(100));
    }

    #[test]
    fn waiter_times_out_and_leaves_the_queue() {
        let store = MemoryBackend::new();
        let first = req("k");
        acquired(store.try_acquire(&first).unwrap());
        let started = Instant::now();
        let got = store
            .acquire(
                &req("k"),
                Wait::new(
                    Some(started + Duration::from_millis(30)),
                    Duration::from_secs(1),
                ),
            )
            .unwrap();
        assert!(got.is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(store.waiting("k"), 0, "the waiter left the queue");
    }

    #[test]
    fn waiter_takes_an_expired_lease_without_a_release() {
        let store = MemoryBackend::new();
        acquired(
            store
                .try_acquire(&req("k").lease(Some(Duration::from_millis(20))))
                .unwrap(),
        );
        let started = Instant::now();
        let got = store
            .acquire(&req("k"), Wait::new(None, Duration::from_secs(3600)))
            .unwrap();
        assert!(got.is_some());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn fair_waiters_are_served_in_arrival_order() {
        let store = Arc::new(MemoryBackend::new());
        let first = req("k");
        acquired(store.try_acquire(&first).unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..6 {
            let (s, o) = (Arc::clone(&store), Arc::clone(&order));
            threads.push(std::thread::spawn(move || {
                let r = req("k").fair(true);
                s.acquire(&r, Wait::new(None, Duration::from_secs(1)))
                    .unwrap()
                    .unwrap();
                lock(&o).push(i);
                s.release("k", r.token).unwrap();
            }));
            // Let each one queue before the next arrives.
            while store.waiting("k") < i + 1 {
                std::thread::yield_now();
            }
        }
        store.release("k", first.token).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock(&order), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn granted_lock_of_a_cancelled_waiter_passes_on() {
        let store = Arc::new(MemoryBackend::new());
        let first = req("k");
        acquired(store.try_acquire(&first).unwrap());
        // A fair async waiter that is dropped after the lock was handed to it.
        let r = req("k").fair(true);
        let mut fut = store.acquire_async(&r, Wait::new(None, Duration::from_secs(1)));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        store.release("k", first.token).unwrap();
        drop(fut);
        // The grant was given back, so a newcomer gets the lock at once.
        acquired(store.try_acquire(&req("k")).unwrap());
    }

    #[test]
    fn concurrent_threads_exclude_each_other() {
        let store = Arc::new(MemoryBackend::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, inside, total) =
                    (Arc::clone(&store), Arc::clone(&inside), Arc::clone(&total));
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let r = req("k");
                        s.acquire(&r, Wait::new(None, Duration::from_secs(1)))
                            .unwrap()
                            .unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        total.fetch_add(1, Ordering::Relaxed);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        assert!(s.release("k", r.token).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 8000);
        assert_eq!(store.held(), 0);
        assert_eq!(store.slots(), 0, "nothing left behind");
    }

    #[cfg(feature = "testing")]
    mod virtual_clock {
        use super::*;

        const HOUR: Duration = Duration::from_secs(3600);

        fn store() -> (Arc<VirtualClock>, Arc<MemoryBackend>) {
            let clock = Arc::new(VirtualClock::new());
            let store = MemoryBackend::on_clock(&clock);
            (clock, store)
        }

        #[test]
        fn a_lease_runs_out_when_the_clock_is_advanced() {
            let (clock, store) = store();
            let first = req("k").lease(Some(HOUR));
            acquired(store.try_acquire(&first).unwrap());
            let Attempt::Busy(b) = store.try_acquire(&req("k")).unwrap() else {
                panic!("lock taken twice")
            };
            assert!(
                b.retry_in
                    .is_some_and(|r| r > HOUR - Duration::from_secs(60))
            );
            clock.advance(HOUR);
            assert_eq!(clock.advanced(), HOUR);
            assert_eq!(store.held(), 0);
            acquired(store.try_acquire(&req("k")).unwrap());
            assert!(!store.release("k", first.token).unwrap());
        }

        #[test]
        fn steal_after_counts_on_the_virtual_clock() {
            let (clock, store) = store();
            acquired(store.try_acquire(&req("k")).unwrap());
            let thief = req("k").steal_after(Some(HOUR));
            assert!(matches!(
                store.try_acquire(&thief).unwrap(),
                Attempt::Busy(_)
            ));
            clock.advance(HOUR);
            acquired(store.try_acquire(&thief).unwrap());
        }

        #[test]
        fn unleased_locks_outlive_any_advance() {
            let (clock, store) = store();
            let holder = req("k");
            acquired(store.try_acquire(&holder).unwrap());
            clock.advance(Duration::MAX);
            assert!(matches!(
                store.try_acquire(&req("k")).unwrap(),
                Attempt::Busy(_)
            ));
            assert!(store.release("k", holder.token).unwrap());
        }

        #[test]
        fn other_stores_keep_the_real_clock() {
            let (clock, _store) = store();
            let real = MemoryBackend::new();
            acquired(real.try_acquire(&req("k").lease(Some(HOUR))).unwrap());
            clock.advance(HOUR);
            assert_eq!(real.held(), 1);
        }

        #[test]
        fn a_parked_thread_wakes_when_the_clock_is_advanced() {
            let (clock, store) = store();
            acquired(store.try_acquire(&req("k").lease(Some(HOUR))).unwrap());
            let waiter = std::thread::spawn({
                let store = Arc::clone(&store);
                move || {
                    let wait = Wait::new(Some(Instant::now() + 2 * HOUR), Duration::from_secs(1));
                    store.acquire(&req("k"), wait)
                }
            });
            while store.waiting("k") == 0 {
                std::thread::yield_now();
            }
            let advanced = Instant::now();
            clock.advance(HOUR);
            assert!(waiter.join().unwrap().unwrap().is_some());
            assert!(advanced.elapsed() < Duration::from_secs(10));
            assert_eq!(store.waiting("k"), 0);
        }

        #[test]
        fn a_nudged_waiter_that_still_finds_the_lock_held_waits_on() {
            let (clock, store) = store();
            let holder = req("k").lease(Some(2 * HOUR));
            acquired(store.try_acquire(&holder).unwrap());
            let waiter = std::thread::spawn({
                let store = Arc::clone(&store);
                move || {
                    let wait = Wait::new(Some(Instant::now() + 3 * HOUR), Duration::from_secs(1));
                    store.acquire(&req("k"), wait)
                }
            });
            while store.waiting("k") == 0 {
                std::thread::yield_now();
            }
            clock.advance(HOUR);
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "an hour of the lease is left");
            assert_eq!(store.waiting("k"), 1, "still in line");
            store.release("k", holder.token).unwrap();
            assert!(waiter.join().unwrap().unwrap().is_some());
        }

        #[test]
        fn a_pending_task_wakes_when_the_clock_is_advanced() {
            let (clock, store) = store();
            acquired(store.try_acquire(&req("k").lease(Some(HOUR))).unwrap());
            let r = req("k");
            let wait = Wait::new(Some(Instant::now() + 2 * HOUR), Duration::from_secs(1));
            let mut fut = store.acquire_async(&r, wait);
            let woken = Arc::new(AtomicUsize::new(0));
            struct Count(Arc<AtomicUsize>);
            impl std::task::Wake for Count {
                fn wake(self: Arc<Self>) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let waker = Waker::from(Arc::new(Count(Arc::clone(&woken))));
            let mut cx = Context::from_waker(&waker);
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            clock.advance(HOUR);
            assert_eq!(woken.load(Ordering::SeqCst), 1, "the advance woke the task");
            assert!(matches!(
                fut.as_mut().poll(&mut cx),
                Poll::Ready(Ok(Some(_)))
            ));
        }
    }

    #[test]
    fn a_slot_stays_small() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 72);
        assert_eq!(std::mem::size_of::<Box<Slot>>(), 8, "a bucket is a pointer");
    }

    #[test]
    fn keys_short_and_long_are_kept_exactly() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 200] {
            let text: String = "ab:%é".chars().cycle().take(len).collect();
            let key = Key::new(&text);
            assert_eq!(key.as_str(), text);
            assert!(key.is(&text));
            assert!(!key.is(&format!("{text}x")));
            assert_eq!(matches!(key, Key::Inline { .. }), text.len() <= INLINE);
        }
    }

    /// A slot dropped from the table leaves its box for the next key, with
    /// nothing of the last holder's in it; one box at most.
    #[test]
    fn a_dropped_slot_is_reused_empty() {
        let store = MemoryBackend::new();
        let labelled = req("spare-a").label(Some("report"));
        acquired(store.try_acquire(&labelled).unwrap());
        store.release("spare-a", labelled.token).unwrap();
        let hash = store.hash("spare-a");
        assert!(
            lock(&store.shards[(hash >> 32) as usize % SHARDS].state)
                .spare
                .is_some()
        );
        let plain = req("spare-a");
        acquired(store.try_acquire(&plain).unwrap());
        let shown = store.show("spare-a").unwrap().unwrap().unwrap();
        assert_eq!(
            shown.owner.as_ref().and_then(|o| o.label.clone()),
            None,
            "the last label went"
        );
        assert_eq!(store.slots(), 1);
    }

    #[test]
    fn named_stores_are_shared() {
        let a = MemoryBackend::named("shared-test");
        let b = MemoryBackend::named("shared-test");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &MemoryBackend::named("other-test")));
    }
}
