//! Stores: the traits a store implements, the runtime's view of a store
//! ([`Backend`]), the built-in [`memory`] and Redis stores, and the small
//! types that travel between them: the owner [`Token`], the [`Request`], and
//! the outcome of an [`Attempt`].
//!
//! A store is written once, in the form that suits it: [`Store`] (blocking)
//! or [`AsyncStore`]. It does three things atomically: set-if-absent with a
//! lease (honouring `steal_after`), compare-and-delete, and
//! compare-and-extend, each keyed by the owner's token; a fencing token comes
//! with each grant if the store keeps a counter. The runtime derives the other
//! form ([`blocking()`], [`non_blocking()`]), and owns waiting, deadlines, jitter,
//! renewals and cancellation. What a store can do beyond that is named in its
//! [`Abilities`]: an [`OwnerCheck`] for the lost-lock signal, [`WakeUps`]
//! instead of polling, [`Unleased`] locks.
//!
//! Check a store of your own with the conformance suite
//! (`lock_runtime::testing`, feature `testing`): one call in your tests.
//!
//! # A complete blocking store
//!
//! A store that only offers get/set/delete behind a mutex, like the caches
//! python-cachelock plugs in:
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//!
//! use lock_runtime::backend::{Acquired, Attempt, BackendError, Busy, Request, Store, Token};
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! #[derive(Default)]
//! struct MapStore {
//!     // key -> (owner, acquired at, lease end)
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
//! registry::configure([("maps", AliasConfig::store(Arc::new(MapStore::default())))]).unwrap();
//! let guard = Lock::new("job").alias("maps").acquire().unwrap();
//! assert!(Lock::new("job").alias("maps").try_acquire().unwrap().is_none());
//! guard.release().unwrap();
//! assert!(Lock::new("job").alias("maps").try_acquire().unwrap().is_some());
//! ```
//!
//! # A complete async store
//!
//! The same map behind an async mutex, as a store whose client library is
//! async would be; sync callers can use it too, with no runtime of their own:
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use lock_runtime::backend::{
//!     Acquired, AsyncStore, Attempt, BackendError, BoxFuture, Busy, Request, Token,
//! };
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! #[derive(Default)]
//! struct Locks {
//!     // key -> (owner, acquired at, lease end)
//!     held: HashMap<String, (Token, Instant, Instant)>,
//!     fence: u64,
//! }
//!
//! #[derive(Default)]
//! struct AsyncMapStore {
//!     locks: tokio::sync::Mutex<Locks>,
//! }
//!
//! impl AsyncStore for AsyncMapStore {
//!     fn try_acquire<'a>(&'a self, req: &'a Request<'a>) -> BoxFuture<'a, Result<Attempt, BackendError>> {
//!         Box::pin(async move {
//!             let Locks { held: map, fence } = &mut *self.locks.lock().await;
//!             let now = Instant::now();
//!             if let Some(&(_, since, until)) = map.get(req.key) {
//!                 let stale = req.steal_after.is_some_and(|s| now >= since + s);
//!                 if now < until && !stale {
//!                     // Look again when the lease ends, or sooner if a thief may steal.
//!                     let free_at = req.steal_after.map_or(until, |s| until.min(since + s));
//!                     return Ok(Attempt::Busy(Busy::new(Some(free_at - now))));
//!                 }
//!             }
//!             let lease = req.lease.unwrap_or(Duration::from_secs(30));
//!             map.insert(req.key.to_owned(), (req.token, now, now + lease));
//!             *fence += 1;
//!             Ok(Attempt::Acquired(Acquired::new(Some(*fence))))
//!         })
//!     }
//!
//!     fn release<'a>(&'a self, key: &'a str, token: Token) -> BoxFuture<'a, Result<bool, BackendError>> {
//!         Box::pin(async move {
//!             let map = &mut self.locks.lock().await.held;
//!             let owned = map.get(key).is_some_and(|e| e.0 == token && Instant::now() < e.2);
//!             if owned {
//!                 map.remove(key);
//!             }
//!             Ok(owned)
//!         })
//!     }
//!
//!     fn extend<'a>(&'a self, key: &'a str, token: Token, lease: Duration) -> BoxFuture<'a, Result<bool, BackendError>> {
//!         Box::pin(async move {
//!             let map = &mut self.locks.lock().await.held;
//!             match map.get_mut(key) {
//!                 Some(e) if e.0 == token && Instant::now() < e.2 => {
//!                     e.2 = Instant::now() + lease;
//!                     Ok(true)
//!                 }
//!                 _ => Ok(false),
//!             }
//!         })
//!     }
//! }
//!
//! registry::add("async-maps", AliasConfig::async_store(Arc::new(AsyncMapStore::default()))).unwrap();
//! // From sync code...
//! let guard = Lock::new("job").alias("async-maps").acquire().unwrap();
//! assert!(Lock::new("job").alias("async-maps").try_acquire().unwrap().is_none());
//! guard.release().unwrap();
//! // ...and from async code.
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let guard = Lock::new("job").alias("async-maps").acquire_async().await.unwrap();
//!     guard.release_async().await.unwrap();
//! });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::admin::Owner;
use crate::admin::{Forced, Page};
pub use crate::error::{BackendError, BackendErrorKind};

mod clock;
mod drive;
#[cfg(feature = "file")]
pub mod file;
pub(crate) mod kind;
#[cfg(feature = "memcache")]
pub mod memcache;
pub mod memory;
mod namespace;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod store;
mod timer;
mod wait;

pub use drive::{blocking, dual, non_blocking};
pub use namespace::Namespace;
pub use store::{
    Abilities, AsyncCleanUp, AsyncForceRelease, AsyncInspect, AsyncListing, AsyncOwnerCheck,
    AsyncStore, CleanUp, ForceRelease, Held, Inspect, Listing, OwnerCheck, Signal, Store, Unleased,
    WakeUps, Watch,
};
pub(crate) use wait::won_nothing;

/// A boxed, `Send` future: the return type of a backend's async methods.
///
/// ```
/// use lock_runtime::backend::BoxFuture;
///
/// fn key_len<'a>(key: &'a str) -> BoxFuture<'a, usize> {
///     Box::pin(async move { key.len() })
/// }
///
/// assert_eq!(futures::executor::block_on(key_len("lock:report")), 11);
/// ```
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The unique owner of one acquisition.
///
/// Every acquisition gets a fresh token; a backend releases or extends a lock
/// only for the token that holds it (compare-and-delete), so a holder whose
/// lease ran out can never release the next holder's lock. Tokens are unique
/// within a process by construction and across processes and machines with
/// overwhelming probability (64 random bits per process).
///
/// ```
/// use lock_runtime::backend::Token;
///
/// let (a, b) = (Token::new(), Token::new());
/// assert_ne!(a, b);
/// assert_eq!(Token::decode(a.encode().as_str()), Some(a));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u128);

impl Token {
    /// A token no other acquisition has.
    ///
    /// ```
    /// use lock_runtime::backend::Token;
    ///
    /// let tokens: std::collections::HashSet<Token> = (0..1000).map(|_| Token::new()).collect();
    /// assert_eq!(tokens.len(), 1000);
    /// ```
    pub fn new() -> Self {
        // Each thread numbers its tokens from a block of its own, so that
        // threads locking at once do not all write one shared counter (its
        // cache line went back and forth between cores on every lock).
        const BLOCK: u64 = 1 << 16;
        static BLOCKS: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static NEXT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        let n = NEXT
            .try_with(|next| {
                let (mut n, mut end) = next.get();
                if n == end {
                    n = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
                    end = n + BLOCK;
                }
                next.set((n + 1, end));
                n
            })
            // A thread being torn down: a block of one.
            .unwrap_or_else(|_| BLOCKS.fetch_add(BLOCK, Ordering::Relaxed));
        Self(((process_seed() as u128) << 64) | n as u128)
    }

    /// The token as a number.
    ///
    /// For a store that keeps owners as numbers (a database column, say):
    ///
    /// ```
    /// use lock_runtime::backend::Token;
    ///
    /// let (a, b) = (Token::new(), Token::new());
    /// assert_ne!(a.as_u128(), b.as_u128());
    /// let column: [u8; 16] = a.as_u128().to_be_bytes();
    /// assert_eq!(u128::from_be_bytes(column), a.as_u128());
    /// ```
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The token as 22 URL-safe characters, the form stored in Redis.
    ///
    /// ```
    /// use lock_runtime::backend::Token;
    ///
    /// let token = Token::new();
    /// let text = token.encode();
    /// assert_eq!(text.as_str().len(), 22);
    /// assert!(text.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    /// assert_eq!(token.to_string(), text.as_str(), "`Display` shows the same text");
    /// ```
    pub fn encode(self) -> EncodedToken {
        let mut out = [0u8; TOKEN_LEN];
        let mut v = self.0;
        for b in out.iter_mut().rev() {
            *b = ALPHABET[(v & 63) as usize];
            v >>= 6;
        }
        EncodedToken(out)
    }

    /// Parses the 22-character form back; `None` if it is not one.
    ///
    /// ```
    /// use lock_runtime::backend::Token;
    ///
    /// let token = Token::new();
    /// assert_eq!(Token::decode(token.encode().as_str()), Some(token));
    /// assert_eq!(Token::decode("not-a-token"), None);
    /// assert_eq!(Token::decode("**********************"), None, "22 characters, not base64");
    /// ```
    pub fn decode(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != TOKEN_LEN {
            return None;
        }
        let mut v: u128 = 0;
        for &c in bytes {
            let d = ALPHABET.iter().position(|&a| a == c)? as u128;
            v = v.checked_mul(64)?.checked_add(d)?;
        }
        Some(Self(v))
    }
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.encode().as_str())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

const TOKEN_LEN: usize = 22;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The text form of a [`Token`], kept on the stack.
///
/// ```
/// use lock_runtime::backend::{EncodedToken, Token};
///
/// let token = Token::new();
/// let encoded: EncodedToken = token.encode(); // no allocation
/// let stored = encoded.as_str().to_owned(); // what a store keeps as the owner
/// assert_eq!(Token::decode(&stored), Some(token));
/// assert!(encoded == token.encode(), "the same token always encodes the same");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncodedToken([u8; TOKEN_LEN]);

impl fmt::Debug for EncodedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EncodedToken").field(&self.as_str()).finish()
    }
}

impl EncodedToken {
    /// The 22 characters.
    ///
    /// ```
    /// use lock_runtime::backend::Token;
    ///
    /// let token = Token::new();
    /// let encoded = token.encode();
    /// let text: &str = encoded.as_str();
    /// assert_eq!(text.len(), 22);
    /// assert_eq!(Token::decode(text), Some(token));
    /// ```
    pub fn as_str(&self) -> &str {
        // The alphabet is ASCII, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// 64 random bits fixed for the life of the process, drawn from the OS
/// through std's hash seeding (no extra dependency), mixed with the pid and
/// the clock so that even a seeding failure stays unique per process.
fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: once_cell::sync::OnceCell<u64> = once_cell::sync::OnceCell::new();
    *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    })
}

/// One request to take a lock, as the runtime hands it to a backend.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::{Request, Token};
///
/// let owner = Token::new();
/// let req = Request::new("lock:report")
///     .token(owner)
///     .lease(Some(Duration::from_secs(30)))
///     .steal_after(Some(Duration::from_secs(600)))
///     .fair(true);
/// // What a backend reads:
/// assert_eq!(req.key, "lock:report");
/// assert_eq!(req.token, owner);
/// assert_eq!(req.lease, Some(Duration::from_secs(30)));
/// assert_eq!(req.steal_after, Some(Duration::from_secs(600)));
/// assert!(req.fair);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request<'a> {
    /// The full key: the alias prefix followed by the lock's key.
    pub key: &'a str,
    /// The owner of this acquisition.
    pub token: Token,
    /// How long the lock lives unless extended. `None` only for backends that
    /// accept "held until released" (the in-process memory store).
    pub lease: Option<Duration>,
    /// Take the lock over when the current holder has held it at least this
    /// long (djangae's `steal_after_ms`). The backend judges the age with its
    /// own clock.
    pub steal_after: Option<Duration>,
    /// Serve waiters in arrival order rather than letting a newcomer barge in.
    pub fair: bool,
    /// The [label](crate::Lock::label) of the lock, for a store that records
    /// who holds what ([`Held::owner`]). Says nothing about exclusion.
    pub label: Option<&'a str>,
    /// The path of the function `#[lock]` locks, recorded like `label`
    /// (`'static`: the macro writes it, so a store keeps it uncopied).
    pub function: Option<&'static str>,
}

impl<'a> Request<'a> {
    /// A request for `key` with a fresh token and no lease, steal or fairness.
    /// Backends and their tests build requests; the runtime fills the rest in
    /// from a [`Lock`](crate::Lock).
    ///
    /// ```
    /// use lock_runtime::backend::Request;
    ///
    /// let req = Request::new("jobs:import");
    /// assert_eq!((req.lease, req.steal_after, req.fair), (None, None, false));
    /// assert_ne!(req.token, Request::new("jobs:import").token, "a fresh owner each time");
    /// ```
    pub fn new(key: &'a str) -> Self {
        Self {
            key,
            token: Token::new(),
            lease: None,
            steal_after: None,
            fair: false,
            label: None,
            function: None,
        }
    }

    /// Sets the lease.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let short = Request::new("k").lease(Some(Duration::from_millis(200)));
    /// assert!(matches!(store.try_acquire(&short).unwrap(), Attempt::Acquired(_)));
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Busy(_)));
    /// std::thread::sleep(Duration::from_millis(250));
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)));
    /// ```
    pub fn lease(mut self, lease: Option<Duration>) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the steal age.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let old = Request::new("k");
    /// store.try_acquire(&old).unwrap(); // held until released
    /// std::thread::sleep(Duration::from_millis(30));
    /// let thief = Request::new("k").steal_after(Some(Duration::from_millis(10)));
    /// assert!(matches!(store.try_acquire(&thief).unwrap(), Attempt::Acquired(_)));
    /// assert!(!store.release("k", old.token).unwrap(), "no longer the owner");
    /// ```
    pub fn steal_after(mut self, steal_after: Option<Duration>) -> Self {
        self.steal_after = steal_after;
        self
    }

    /// Sets fairness. See [`Lock::fair`](crate::Lock::fair) for its effect.
    ///
    /// ```
    /// use lock_runtime::backend::Request;
    ///
    /// assert!(Request::new("k").fair(true).fair);
    /// ```
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Sets the token.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request, Token};
    ///
    /// let store = MemoryBackend::new();
    /// let owner = Token::new();
    /// store.try_acquire(&Request::new("k").token(owner)).unwrap();
    /// assert!(!store.release("k", Token::new()).unwrap(), "only the owner can release");
    /// assert!(store.release("k", owner).unwrap());
    /// ```
    pub fn token(mut self, token: Token) -> Self {
        self.token = token;
        self
    }

    /// Sets the label recorded with the holder.
    ///
    /// ```
    /// use lock_runtime::backend::Request;
    ///
    /// assert_eq!(Request::new("k").label(Some("cron")).label, Some("cron"));
    /// ```
    pub fn label(mut self, label: Option<&'a str>) -> Self {
        self.label = label;
        self
    }

    /// Sets the function path recorded with the holder.
    ///
    /// ```
    /// use lock_runtime::backend::Request;
    ///
    /// assert_eq!(Request::new("k").function(Some("app::job")).function, Some("app::job"));
    /// ```
    pub fn function(mut self, function: Option<&'static str>) -> Self {
        self.function = function;
        self
    }
}

/// The outcome of one attempt to take a lock.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::memory::MemoryBackend;
/// use lock_runtime::backend::{Attempt, Backend, Request};
///
/// let store = MemoryBackend::new();
/// let holder = Request::new("k").lease(Some(Duration::from_secs(5)));
/// match store.try_acquire(&holder).unwrap() {
///     Attempt::Acquired(granted) => assert!(granted.fencing.is_some()),
///     Attempt::Busy(_) => unreachable!("nobody holds `k` yet"),
/// }
/// match store.try_acquire(&Request::new("k")).unwrap() {
///     Attempt::Busy(busy) => assert!(busy.retry_in.unwrap() <= Duration::from_secs(5)),
///     Attempt::Acquired(_) => unreachable!("`k` is held"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The lock is now held by the request's token.
    Acquired(Acquired),
    /// Somebody else holds it.
    Busy(Busy),
}

/// What a backend tells about a lock it just granted.
///
/// ```
/// use lock_runtime::backend::memory::MemoryBackend;
/// use lock_runtime::backend::{Attempt, Backend, Request};
///
/// let store = MemoryBackend::new();
/// let first = Request::new("k");
/// let Attempt::Acquired(a) = store.try_acquire(&first).unwrap() else { panic!("free") };
/// store.release("k", first.token).unwrap();
/// let Attempt::Acquired(b) = store.try_acquire(&Request::new("k")).unwrap() else { panic!("free") };
/// assert!(b.fencing > a.fencing, "fencing tokens only go up");
/// assert!(b.sent_at.is_some(), "the memory store says when it granted");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acquired {
    /// A number strictly greater than that of every earlier acquisition of
    /// the same key on the same store, when the backend keeps one.
    pub fencing: Option<u64>,
    /// When the request that won the lock was sent (or, for a store with no
    /// network in between, when the lock was granted): the lease counts from
    /// here. `None` makes the runtime count from the start of the whole
    /// acquisition, which is safe but can shorten the known validity.
    pub sent_at: Option<Instant>,
    /// The lease the store actually set, when shorter than the request's (a
    /// lock handed over with a short lease, to be topped up by the runtime).
    /// `None`: the lease asked for.
    pub lease: Option<Duration>,
}

impl Acquired {
    /// A grant with the given fencing token.
    ///
    /// ```
    /// use lock_runtime::backend::Acquired;
    ///
    /// // In a backend's `try_acquire`, after the store set the key and
    /// // counted its fencing counter up to 7:
    /// let granted = Acquired::new(Some(7));
    /// assert_eq!((granted.fencing, granted.sent_at), (Some(7), None));
    /// // A store that keeps no counter:
    /// assert_eq!(Acquired::new(None), Acquired::default());
    /// ```
    pub fn new(fencing: Option<u64>) -> Self {
        Self {
            fencing,
            sent_at: None,
            lease: None,
        }
    }

    /// Sets when the winning request was sent.
    ///
    /// ```
    /// use std::time::Instant;
    /// use lock_runtime::backend::Acquired;
    ///
    /// let sent = Instant::now();
    /// // ... the request travels to the store, which grants the lock ...
    /// let granted = Acquired::new(None).sent_at(sent);
    /// assert_eq!(granted.sent_at, Some(sent), "the lease counts from here");
    /// ```
    pub fn sent_at(mut self, at: Instant) -> Self {
        self.sent_at = Some(at);
        self
    }

    /// Says the store set a shorter lease than asked for; the runtime
    /// extends it to the asked lease soon after.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::Acquired;
    ///
    /// let handed_over = Acquired::new(Some(9)).lease(Duration::from_secs(5));
    /// assert_eq!(handed_over.lease, Some(Duration::from_secs(5)));
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// What a backend tells about a lock it could not grant.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::memory::MemoryBackend;
/// use lock_runtime::backend::{Attempt, Backend, Request};
///
/// let store = MemoryBackend::new();
/// store.try_acquire(&Request::new("leased").lease(Some(Duration::from_secs(5)))).unwrap();
/// store.try_acquire(&Request::new("unleased")).unwrap();
///
/// let Attempt::Busy(busy) = store.try_acquire(&Request::new("leased")).unwrap() else { panic!("held") };
/// assert!(busy.retry_in.unwrap() <= Duration::from_secs(5));
/// let Attempt::Busy(busy) = store.try_acquire(&Request::new("unleased")).unwrap() else { panic!("held") };
/// assert_eq!(busy.retry_in, None, "held until released: no time to look again");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Busy {
    /// When the holder's lease (or the steal age) runs out, if known: the
    /// latest moment a waiter should look again even if no release is seen.
    pub retry_in: Option<Duration>,
}

impl Busy {
    /// Busy, with the time until the holder's lease or steal age runs out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::Busy;
    ///
    /// // In a backend's `try_acquire`, when the store says the holder's
    /// // lease ends in 3 s:
    /// let busy = Busy::new(Some(Duration::from_secs(3)));
    /// assert_eq!(busy.retry_in, Some(Duration::from_secs(3)));
    /// // When it cannot tell, waiters fall back to the poll interval:
    /// assert_eq!(Busy::new(None), Busy::default());
    /// ```
    pub fn new(retry_in: Option<Duration>) -> Self {
        Self { retry_in }
    }
}

/// How a waiting acquisition waits: until when, and how often a polling
/// backend looks again.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lock_runtime::backend::memory::MemoryBackend;
/// use lock_runtime::backend::{Backend, Request, Wait};
///
/// let store = MemoryBackend::new();
/// let holder = Request::new("k");
/// store.try_acquire(&holder).unwrap();
///
/// let soon = Wait::new(Some(Instant::now() + Duration::from_millis(30)), Duration::from_millis(10));
/// assert_eq!(store.acquire(&Request::new("k"), soon).unwrap(), None, "the deadline passed first");
///
/// store.release("k", holder.token).unwrap();
/// let forever = Wait::new(None, Duration::from_millis(10));
/// assert!(store.acquire(&Request::new("k"), forever).unwrap().is_some());
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Wait {
    /// Give up at this instant (`wait_for`); `None` waits as long as it takes.
    pub deadline: Option<Instant>,
    /// The alias's poll interval, for backends that cannot be woken.
    pub poll_interval: Duration,
}

impl Wait {
    /// A wait until `deadline`, polling every `poll_interval`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lock_runtime::backend::Wait;
    ///
    /// let deadline = Instant::now() + Duration::from_secs(2);
    /// let wait = Wait::new(Some(deadline), Duration::from_millis(100));
    /// assert_eq!(wait.deadline, Some(deadline));
    /// assert_eq!(wait.poll_interval, Duration::from_millis(100));
    /// ```
    pub fn new(deadline: Option<Instant>, poll_interval: Duration) -> Self {
        Self {
            deadline,
            poll_interval,
        }
    }
}

/// A store as the runtime drives it: both forms of every operation, the
/// wait loop, and the abilities.
///
/// You rarely implement this yourself: write a [`Store`] or an
/// [`AsyncStore`] and the runtime derives all of this ([`blocking()`],
/// [`non_blocking()`]). The built-in stores implement it directly, because
/// they wait in ways of their own (the memory store's queue hands a released
/// lock straight to the next waiter; Redis waiters queue in a line with
/// pub/sub wake-ups). A type implementing it directly needs only the three
/// blocking operations; the rest have defaults, which run those inline
/// (right only for a store that never blocks) and wait with the runtime's
/// wait loop.
///
/// Every store can be driven through the trait alone (the runtime does
/// nothing else):
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::memory::MemoryBackend;
/// use lock_runtime::backend::{Attempt, Backend, Request};
///
/// fn take_renew_give_back(store: &dyn Backend, key: &str) -> bool {
///     let req = Request::new(key).lease(Some(Duration::from_secs(30)));
///     match store.try_acquire(&req).unwrap() {
///         Attempt::Acquired(_) => {
///             assert!(store.extend(key, req.token, Duration::from_secs(60)).unwrap());
///             assert!(store.release(key, req.token).unwrap());
///             true
///         }
///         Attempt::Busy(_) => false,
///     }
/// }
///
/// let store = MemoryBackend::new();
/// assert!(take_renew_give_back(&store, "job"));
/// store.try_acquire(&Request::new("job")).unwrap();
/// assert!(!take_renew_give_back(&store, "job"), "held by someone else");
/// ```
///
/// # Contract
/// - `try_acquire` sets the key to the request's token if it is free, its
///   lease has run out, or (with `steal_after`) its holder is older than the
///   steal age; all in one atomic step.
/// - `release` deletes the key only if the token still owns it, and answers
///   whether it did. `extend` renews the lease on the same condition.
/// - An async method's future may be dropped at any await point. When a
///   [`Lock`](crate::Lock)'s async acquisition is dropped before it
///   answered, the runtime gives back whatever it may have won by calling
///   [`give_back_detached`](Self::give_back_detached) with its token
///   (unless the runtime's own wait loop was asleep after a busy attempt,
///   when it can have won nothing, or its attempt was out on the runtime's
///   thread pool or I/O thread, which then gives back what it wins itself);
///   the
///   backend must make sure that release reaches the store after the
///   acquisition's request in flight (the runtime's adapters do; Redis sends
///   it on the same connection). Whatever else a dropped wait leaves behind
///   (a place in a queue) is the backend's to clean up.
pub trait Backend: Send + Sync + 'static {
    /// One atomic attempt to take `req.key` for `req.token`.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)));
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Busy(_)));
    /// ```
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError>;

    /// Deletes `key` if `token` holds it; `Ok(false)` when it does not (any
    /// more).
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k");
    /// store.try_acquire(&req).unwrap();
    /// assert!(store.release("k", req.token).unwrap());
    /// assert!(!store.release("k", req.token).unwrap(), "already released");
    /// ```
    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError>;

    /// Sets `key`'s lease to `lease` from now if `token` holds it; `Ok(false)`
    /// when it does not (any more).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request, Token};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k").lease(Some(Duration::from_millis(200)));
    /// store.try_acquire(&req).unwrap();
    /// assert!(store.extend("k", req.token, Duration::from_secs(60)).unwrap());
    /// assert!(!store.extend("k", Token::new(), Duration::from_secs(60)).unwrap(), "not the owner");
    /// std::thread::sleep(Duration::from_millis(250));
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Busy(_)), "still held");
    /// ```
    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError>;

    /// Takes the lock, waiting for it as `wait` says; `Ok(None)` when the
    /// deadline passed first. The default polls `try_acquire` at the poll
    /// interval (with jitter, and sooner when the holder's lease ends sooner).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request, Wait};
    ///
    /// let store = MemoryBackend::new();
    /// // Held for 50 ms: a waiter gets it when the lease ends.
    /// store.try_acquire(&Request::new("k").lease(Some(Duration::from_millis(50)))).unwrap();
    /// let granted = store.acquire(&Request::new("k"), Wait::new(None, Duration::from_millis(10)));
    /// assert!(granted.unwrap().is_some());
    /// ```
    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        self::wait::acquire(self, None, req, wait)
    }

    /// The async form of [`try_acquire`](Self::try_acquire). The default runs
    /// the sync form inline, which is right only for stores that never block.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k");
    /// let attempt = futures::executor::block_on(store.try_acquire_async(&req)).unwrap();
    /// assert!(matches!(attempt, Attempt::Acquired(_)));
    /// ```
    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        Box::pin(std::future::ready(self.try_acquire(req)))
    }

    /// The async form of [`acquire`](Self::acquire): polls
    /// [`try_acquire_async`](Self::try_acquire_async), sleeping on a timer
    /// that needs no particular async runtime.
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
    /// let releaser = std::thread::spawn({
    ///     let store = Arc::clone(&store);
    ///     move || {
    ///         std::thread::sleep(Duration::from_millis(20));
    ///         store.release("k", holder.token).unwrap()
    ///     }
    /// });
    /// let req = Request::new("k");
    /// let wait = Wait::new(None, Duration::from_millis(10));
    /// let granted = futures::executor::block_on(store.acquire_async(&req, wait)).unwrap();
    /// assert!(granted.is_some(), "granted once the holder let go");
    /// assert!(releaser.join().unwrap());
    /// ```
    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        Box::pin(self::wait::acquire_async(self, None, req, wait))
    }

    /// The async form of [`release`](Self::release); the default runs the sync
    /// form inline.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k");
    /// store.try_acquire(&req).unwrap();
    /// assert!(futures::executor::block_on(store.release_async("k", req.token)).unwrap());
    /// ```
    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(std::future::ready(self.release(key, token)))
    }

    /// The async form of [`extend`](Self::extend); the default runs the sync
    /// form inline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k").lease(Some(Duration::from_secs(1)));
    /// store.try_acquire(&req).unwrap();
    /// let extended = store.extend_async("k", req.token, Duration::from_secs(60));
    /// assert!(futures::executor::block_on(extended).unwrap());
    /// ```
    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(std::future::ready(self.extend(key, token, lease)))
    }

    /// Releases without making the caller wait: called when a guard taken
    /// with `acquire_async` is dropped (possibly on an executor thread), and
    /// by the default [`give_back_detached`](Self::give_back_detached) when
    /// an async acquisition is dropped before it answered. A network
    /// backend sends the release from a task or thread of its own, ordered
    /// after any request of the same caller still in flight; the default
    /// releases inline. Failures are reported through `tracing`.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k");
    /// store.try_acquire(&req).unwrap();
    /// store.release_detached("k", req.token); // nothing to wait for, nothing returned
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)));
    /// ```
    fn release_detached(&self, key: &str, token: Token) {
        if let Err(e) = self.release(key, token) {
            tracing::error!(key, error = %e, "releasing a dropped lock guard failed");
        }
    }

    /// Gives back, without making the caller wait, whatever an async
    /// acquisition dropped before its answer may have won, by the
    /// request's token. Unlike [`release_detached`](Self::release_detached),
    /// which releases a dropped guard's lock, finding nothing is the usual
    /// outcome here (the acquisition was still waiting) and is not worth
    /// reporting. The default calls `release_detached`.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let won = Request::new("k");
    /// store.try_acquire(&won).unwrap();
    /// // A request that had won the lock before it was cancelled, then one
    /// // that had won nothing.
    /// store.give_back_detached("k", won.token);
    /// store.give_back_detached("k", Request::new("k").token);
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)));
    /// ```
    fn give_back_detached(&self, key: &str, token: Token) {
        self.release_detached(key, token);
    }

    /// Whether `token` still holds `key`, changing nothing; `None` when the
    /// store cannot tell (the default). Used to notice, for whoever awaits
    /// [`LockGuard::lost`](crate::LockGuard::lost), a lock that was deleted or
    /// stolen behind its holder's back.
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request, Token};
    ///
    /// let store = MemoryBackend::new();
    /// let req = Request::new("k");
    /// store.try_acquire(&req).unwrap();
    /// assert!(matches!(store.check("k", req.token), Some(Ok(true))));
    /// assert!(matches!(store.check("k", Token::new()), Some(Ok(false))));
    /// ```
    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        let _ = (key, token);
        None
    }

    /// The locks held now under `ns` (the store may list more; the runtime
    /// keeps the namespace's own); `None` when the store cannot list them
    /// (the default). See [`Listing`].
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Namespace, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let ns = Namespace::new("jobs:");
    /// store.try_acquire(&Request::new(&ns.key("import".into()))).unwrap();
    /// let held = store.holders(&ns).unwrap().unwrap();
    /// assert_eq!(held[0].key, "jobs:import");
    /// ```
    fn holders(&self, ns: &Namespace) -> Option<Result<Vec<Held>, BackendError>> {
        let _ = ns;
        None
    }

    /// Deletes the records of locks whose lease ended more than `grace` ago
    /// and answers how many; `None` when the store keeps no such records
    /// (the default: its locks vanish when their leases end). See
    /// [`CleanUp`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::Backend;
    ///
    /// assert!(MemoryBackend::new().clean_up(Duration::from_secs(60)).is_none());
    /// ```
    fn clean_up(&self, grace: Duration) -> Option<Result<u64, BackendError>> {
        let _ = grace;
        None
    }

    /// One page of the locks held under `ns` whose stored keys start with
    /// `prefix`, from `cursor` on; `None` when the store cannot page through
    /// its locks (the default). See [`Inspect`].
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Namespace, Request};
    ///
    /// let store = MemoryBackend::new();
    /// let ns = Namespace::new("jobs:");
    /// store.try_acquire(&Request::new(&ns.key("import".into()))).unwrap();
    /// let page = store.list(&ns, "jobs:im", None, 10).unwrap().unwrap();
    /// assert_eq!(page.held[0].key, "jobs:import");
    /// assert_eq!(page.next, None);
    /// ```
    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        let _ = (ns, prefix, cursor, limit);
        None
    }

    /// The lock `key` (as stored) if held now; `None` when the store cannot
    /// tell (the default). See [`Inspect`].
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Request};
    ///
    /// let store = MemoryBackend::new();
    /// store.try_acquire(&Request::new("k").label(Some("cron"))).unwrap();
    /// let held = store.show("k").unwrap().unwrap().unwrap();
    /// assert_eq!(held.owner.unwrap().label.as_deref(), Some("cron"));
    /// assert!(store.show("free").unwrap().unwrap().is_none());
    /// ```
    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        let _ = key;
        None
    }

    /// Frees `entry.key` (as stored) whoever holds it and records `entry`
    /// (with the holder removed) in the store's audit log; `None` when the
    /// store cannot (the default). See [`ForceRelease`].
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use lock_runtime::admin::{Forced, Owner};
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Attempt, Backend, Namespace, Request};
    ///
    /// let store = MemoryBackend::new();
    /// store.try_acquire(&Request::new("k")).unwrap();
    /// let entry = Forced::new("k", SystemTime::now(), Owner::unknown(), "stuck");
    /// let forced = store.force_release(&Namespace::new(""), entry).unwrap().unwrap();
    /// assert!(forced.removed.is_some());
    /// assert!(matches!(store.try_acquire(&Request::new("k")).unwrap(), Attempt::Acquired(_)));
    /// ```
    fn force_release(&self, ns: &Namespace, entry: Forced) -> Option<Result<Forced, BackendError>> {
        let _ = (ns, entry);
        None
    }

    /// The newest `limit` forced releases under `ns`, newest first; `None`
    /// when the store keeps no audit log (the default). See
    /// [`ForceRelease`].
    ///
    /// ```
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::{Backend, Namespace};
    ///
    /// let log = MemoryBackend::new().audit_log(&Namespace::new(""), 10).unwrap().unwrap();
    /// assert!(log.is_empty());
    /// ```
    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        let _ = (ns, limit);
        None
    }

    /// Whether a lock may be held with no lease at all (held until released).
    /// Only a store that dies with its holders (the in-process memory store)
    /// should say yes; the default is no, so every lock gets a lease.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::backend::Backend;
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// let store = Arc::new(MemoryBackend::new());
    /// assert!(store.supports_unleased());
    /// // So its aliases hold locks until they are released unless told otherwise.
    /// registry::add("doc-unleased", AliasConfig::custom(store)).unwrap();
    /// assert_eq!(registry::alias("doc-unleased").unwrap().default_lease(), None);
    /// ```
    fn supports_unleased(&self) -> bool {
        false
    }
}

/// A tiny xorshift generator for poll jitter; seeded from the token so that
/// processes started together do not poll in lockstep.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(token: Token) -> Self {
        let v = token.as_u128();
        Self(((v >> 64) as u64 ^ v as u64) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration uniformly drawn from [d/2, 3d/2).
    pub(crate) fn around(&mut self, d: Duration) -> Duration {
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        if nanos < 2 {
            return d;
        }
        Duration::from_nanos(nanos / 2 + self.next() % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = Token::new();
            assert_eq!(Token::decode(t.encode().as_str()), Some(t));
            assert!(seen.insert(t));
        }
        assert_eq!(Token::decode("short"), None);
        assert_eq!(Token::decode("**********************"), None);
    }

    #[test]
    fn jitter_stays_within_half_either_side() {
        let mut j = Jitter::new(Token::new());
        let d = Duration::from_millis(100);
        for _ in 0..1000 {
            let n = j.around(d);
            assert!(
                n >= Duration::from_millis(50) && n < Duration::from_millis(150),
                "{n:?}"
            );
        }
    }
}
