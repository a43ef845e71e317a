//! What a store of your own implements: its atomic operations once, in the
//! form that suits it ([`Store`] blocking, or [`AsyncStore`]), and the
//! [`Abilities`] it has beyond them. The runtime derives the other form,
//! waits, renews and cancels (see [`blocking`](super::blocking()) and
//! [`non_blocking`](super::non_blocking())).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use super::{Attempt, BackendError, BoxFuture, Request, Token};
use crate::admin::{Forced, Owner, Page};

/// A store written in blocking form: three atomic operations.
///
/// Async callers reach it through a pool of threads the runtime owns, so its
/// blocking calls never stall an executor; waiting, deadlines, renewals and
/// cancellation are the runtime's. Register it with
/// [`AliasConfig::store`](crate::registry::AliasConfig::store). The
/// [module docs](super) show a complete one.
///
/// # Contract
/// - `try_acquire` sets the key to the request's token if it is free, its
///   lease has run out, or (with `steal_after`) its holder is older than the
///   steal age; all in one atomic step. Busy answers say when the holder's
///   lease ends, if known, so that a waiter looks again right then.
/// - `release` deletes the key only if the token still owns it, and answers
///   whether it did. `extend` renews the lease on the same condition.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::{Attempt, BackendError, Busy, Request, Store, Token};
///
/// /// A store that is always busy: the smallest thing that is a `Store`.
/// struct Closed;
///
/// impl Store for Closed {
///     fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> {
///         Ok(Attempt::Busy(Busy::new(None)))
///     }
///     fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> {
///         Ok(false)
///     }
///     fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> {
///         Ok(false)
///     }
/// }
///
/// assert!(matches!(Closed.try_acquire(&Request::new("k")), Ok(Attempt::Busy(_))));
/// ```
pub trait Store: Send + Sync + 'static {
    /// One atomic attempt to take `req.key` for `req.token`.
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError>;

    /// Deletes `key` if `token` holds it; `Ok(false)` when it does not (any
    /// more).
    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError>;

    /// Sets `key`'s lease to `lease` from now if `token` holds it; `Ok(false)`
    /// when it does not (any more).
    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError>;

    /// What this store can do beyond the three operations; none by default.
    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
    }
}

/// A store written in async form: the same three atomic operations as
/// [`Store`], as futures.
///
/// Sync callers reach it by the runtime driving its futures to completion,
/// with no async runtime of theirs needed. Its futures may be dropped at any
/// await point; the runtime then releases by token whatever an acquisition
/// may have won. Register it with
/// [`AliasConfig::async_store`](crate::registry::AliasConfig::async_store).
/// The [module docs](super) show a complete one.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::{AsyncStore, Attempt, BackendError, BoxFuture, Busy, Request, Token};
///
/// /// A store that is always busy.
/// struct Closed;
///
/// impl AsyncStore for Closed {
///     fn try_acquire<'a>(&'a self, _: &'a Request<'a>) -> BoxFuture<'a, Result<Attempt, BackendError>> {
///         Box::pin(async { Ok(Attempt::Busy(Busy::new(None))) })
///     }
///     fn release<'a>(&'a self, _: &'a str, _: Token) -> BoxFuture<'a, Result<bool, BackendError>> {
///         Box::pin(async { Ok(false) })
///     }
///     fn extend<'a>(&'a self, _: &'a str, _: Token, _: Duration) -> BoxFuture<'a, Result<bool, BackendError>> {
///         Box::pin(async { Ok(false) })
///     }
/// }
///
/// let attempt = futures::executor::block_on(Closed.try_acquire(&Request::new("k")));
/// assert!(matches!(attempt, Ok(Attempt::Busy(_))));
/// ```
pub trait AsyncStore: Send + Sync + 'static {
    /// One atomic attempt to take `req.key` for `req.token`.
    fn try_acquire<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>>;

    /// Deletes `key` if `token` holds it; `Ok(false)` when it does not (any
    /// more).
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Sets `key`'s lease to `lease` from now if `token` holds it; `Ok(false)`
    /// when it does not (any more).
    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// What this store can do beyond the three operations; none by default.
    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
    }
}

/// The optional abilities of a store, each one a trait the store implements
/// and names here. A store's `abilities` method builds this from `self`:
///
/// ```
/// # use std::time::Duration;
/// # use lock_runtime::backend::{Attempt, BackendError, Busy, Request, Token};
/// use lock_runtime::backend::{Abilities, OwnerCheck, Store, Unleased};
///
/// struct Local;
/// # impl Local { fn holder(&self, _: &str) -> Option<Token> { None } }
///
/// impl Store for Local {
/// #   fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> { Ok(Attempt::Busy(Busy::new(None))) }
/// #   fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> { Ok(false) }
/// #   fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> { Ok(false) }
///     // try_acquire, release, extend ...
///     fn abilities(&self) -> Abilities<'_> {
///         Abilities::none().owner_check(self).unleased(self)
///     }
/// }
///
/// impl OwnerCheck for Local {
///     fn holds(&self, key: &str, token: Token) -> Result<bool, BackendError> {
///         Ok(self.holder(key) == Some(token))
///     }
/// }
///
/// // Its locks die with the process that holds them.
/// impl Unleased for Local {}
///
/// assert!(Local.abilities().has_owner_check());
/// ```
#[derive(Clone, Copy, Default)]
pub struct Abilities<'a> {
    pub(crate) owner_check: Option<&'a dyn OwnerCheck>,
    pub(crate) async_owner_check: Option<&'a dyn AsyncOwnerCheck>,
    pub(crate) wake_ups: Option<&'a dyn WakeUps>,
    pub(crate) clean_up: Option<&'a dyn CleanUp>,
    pub(crate) listing: Option<&'a dyn Listing>,
    pub(crate) async_listing: Option<&'a dyn AsyncListing>,
    pub(crate) async_clean_up: Option<&'a dyn AsyncCleanUp>,
    pub(crate) inspect: Option<&'a dyn Inspect>,
    pub(crate) async_inspect: Option<&'a dyn AsyncInspect>,
    pub(crate) force_release: Option<&'a dyn ForceRelease>,
    pub(crate) async_force_release: Option<&'a dyn AsyncForceRelease>,
    pub(crate) unleased: bool,
}

impl std::fmt::Debug for Abilities<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abilities")
            .field("owner_check", &self.has_owner_check())
            .field("wake_ups", &self.wake_ups.is_some())
            .field(
                "clean_up",
                &(self.clean_up.is_some() || self.async_clean_up.is_some()),
            )
            .field(
                "listing",
                &(self.listing.is_some() || self.async_listing.is_some()),
            )
            .field(
                "inspect",
                &(self.inspect.is_some() || self.async_inspect.is_some()),
            )
            .field(
                "force_release",
                &(self.force_release.is_some() || self.async_force_release.is_some()),
            )
            .field("unleased", &self.unleased)
            .finish()
    }
}

impl<'a> Abilities<'a> {
    /// No abilities beyond the three operations.
    ///
    /// ```
    /// use lock_runtime::backend::Abilities;
    ///
    /// assert!(!Abilities::none().has_owner_check());
    /// ```
    pub fn none() -> Self {
        Self::default()
    }

    /// The store can tell whether a token still holds a key (in blocking
    /// form), which lets [`LockGuard::lost`](crate::LockGuard::lost) notice a
    /// lock deleted or stolen behind its holder's back. See [`OwnerCheck`].
    pub fn owner_check(mut self, store: &'a dyn OwnerCheck) -> Self {
        self.owner_check = Some(store);
        self
    }

    /// The owner check of an async store. See [`AsyncOwnerCheck`].
    pub fn async_owner_check(mut self, store: &'a dyn AsyncOwnerCheck) -> Self {
        self.async_owner_check = Some(store);
        self
    }

    /// A release wakes the store's waiters, so they need not poll. See
    /// [`WakeUps`].
    pub fn wake_ups(mut self, store: &'a dyn WakeUps) -> Self {
        self.wake_ups = Some(store);
        self
    }

    /// The store can delete the records of stale locks. See [`CleanUp`].
    pub fn clean_up(mut self, store: &'a dyn CleanUp) -> Self {
        self.clean_up = Some(store);
        self
    }

    /// The stale-lock clean-up of an async store. See [`AsyncCleanUp`].
    pub fn async_clean_up(mut self, store: &'a dyn AsyncCleanUp) -> Self {
        self.async_clean_up = Some(store);
        self
    }

    /// The store can list the locks it holds. See [`Listing`].
    pub fn listing(mut self, store: &'a dyn Listing) -> Self {
        self.listing = Some(store);
        self
    }

    /// The listing of an async store. See [`AsyncListing`].
    pub fn async_listing(mut self, store: &'a dyn AsyncListing) -> Self {
        self.async_listing = Some(store);
        self
    }

    /// The store can page through its held locks and show one, for the
    /// admin API. See [`Inspect`].
    pub fn inspect(mut self, store: &'a dyn Inspect) -> Self {
        self.inspect = Some(store);
        self
    }

    /// The paging and showing of an async store. See [`AsyncInspect`].
    pub fn async_inspect(mut self, store: &'a dyn AsyncInspect) -> Self {
        self.async_inspect = Some(store);
        self
    }

    /// The store can release a lock whoever holds it, and keeps an audit
    /// log of doing so. See [`ForceRelease`].
    pub fn force_release(mut self, store: &'a dyn ForceRelease) -> Self {
        self.force_release = Some(store);
        self
    }

    /// The forced release of an async store. See [`AsyncForceRelease`].
    pub fn async_force_release(mut self, store: &'a dyn AsyncForceRelease) -> Self {
        self.async_force_release = Some(store);
        self
    }

    /// Locks may be held with no lease at all. See [`Unleased`].
    pub fn unleased(mut self, _store: &'a dyn Unleased) -> Self {
        self.unleased = true;
        self
    }

    /// Whether an owner check (of either form) was named.
    ///
    /// ```
    /// use lock_runtime::backend::Abilities;
    ///
    /// assert!(!Abilities::none().has_owner_check());
    /// ```
    pub fn has_owner_check(&self) -> bool {
        self.owner_check.is_some() || self.async_owner_check.is_some()
    }
}

/// Ability: tells, changing nothing, whether `token` still holds `key`.
/// Named through [`Abilities::owner_check`].
///
/// ```
/// use lock_runtime::backend::{BackendError, OwnerCheck, Token};
///
/// struct NobodyHolds;
///
/// impl OwnerCheck for NobodyHolds {
///     fn holds(&self, _key: &str, _token: Token) -> Result<bool, BackendError> {
///         Ok(false)
///     }
/// }
///
/// assert!(!NobodyHolds.holds("k", Token::new()).unwrap());
/// ```
pub trait OwnerCheck: Send + Sync {
    /// Whether `token` holds `key` now.
    fn holds(&self, key: &str, token: Token) -> Result<bool, BackendError>;
}

/// Ability: [`OwnerCheck`] in async form, for an [`AsyncStore`]. Named
/// through [`Abilities::async_owner_check`].
///
/// ```
/// use lock_runtime::backend::{AsyncOwnerCheck, BackendError, BoxFuture, Token};
///
/// struct NobodyHolds;
///
/// impl AsyncOwnerCheck for NobodyHolds {
///     fn holds<'a>(&'a self, _key: &'a str, _token: Token) -> BoxFuture<'a, Result<bool, BackendError>> {
///         Box::pin(async { Ok(false) })
///     }
/// }
///
/// assert!(!futures::executor::block_on(NobodyHolds.holds("k", Token::new())).unwrap());
/// ```
pub trait AsyncOwnerCheck: Send + Sync {
    /// Whether `token` holds `key` now.
    fn holds<'a>(&'a self, key: &'a str, token: Token)
    -> BoxFuture<'a, Result<bool, BackendError>>;
}

/// Ability: deletes the records of locks whose lease ended more than
/// `grace` ago, and answers how many (djangae's cron that cleans up stale
/// locks), for stores whose records outlive their leases (a row in a table,
/// a file). Must be safe while others lock: a record whose lease is still
/// running, or was renewed meanwhile, is never deleted. Named through
/// [`Abilities::clean_up`]; the runtime offers it as
/// [`Alias::clean_up`](crate::registry::Alias::clean_up).
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::{BackendError, CleanUp};
///
/// struct NothingStale;
///
/// impl CleanUp for NothingStale {
///     fn clean_up(&self, _grace: Duration) -> Result<u64, BackendError> {
///         Ok(0)
///     }
/// }
///
/// assert_eq!(NothingStale.clean_up(Duration::from_secs(60)).unwrap(), 0);
/// ```
pub trait CleanUp: Send + Sync {
    /// Deletes what ended more than `grace` ago; answers how many.
    fn clean_up(&self, grace: Duration) -> Result<u64, BackendError>;
}

/// Ability: [`CleanUp`] in async form, for an [`AsyncStore`]. Named through
/// [`Abilities::async_clean_up`].
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::{AsyncCleanUp, BackendError, BoxFuture};
///
/// struct NothingStale;
///
/// impl AsyncCleanUp for NothingStale {
///     fn clean_up<'a>(&'a self, _grace: Duration) -> BoxFuture<'a, Result<u64, BackendError>> {
///         Box::pin(async { Ok(0) })
///     }
/// }
///
/// assert_eq!(futures::executor::block_on(NothingStale.clean_up(Duration::ZERO)).unwrap(), 0);
/// ```
pub trait AsyncCleanUp: Send + Sync {
    /// Deletes what ended more than `grace` ago; answers how many.
    fn clean_up<'a>(&'a self, grace: Duration) -> BoxFuture<'a, Result<u64, BackendError>>;
}

/// One held lock, as a store lists it ([`Listing`]). What a store does not
/// know stays `None`.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::backend::Held;
///
/// let held = Held::new("lock:report-7").lease_left(Some(Duration::from_secs(20))).waiting(Some(2));
/// assert_eq!(held.key, "lock:report-7");
/// assert_eq!(held.fencing, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Held {
    /// The key as the store keeps it (see [`Namespace`](super::Namespace));
    /// [`Alias::holders`](crate::registry::Alias::holders) gives the lock's
    /// own key.
    pub key: String,
    /// How long it has been held.
    pub held_for: Option<Duration>,
    /// How long its lease still runs; `None` also for a lock held until
    /// released.
    pub lease_left: Option<Duration>,
    /// Its holder's fencing token.
    pub fencing: Option<u64>,
    /// How many acquisitions wait for it.
    pub waiting: Option<usize>,
    /// Who holds it, as far as the store recorded.
    pub owner: Option<Owner>,
    /// When it was acquired (by the store's clock where it has one).
    pub acquired_at: Option<SystemTime>,
}

impl Held {
    /// A held lock of which only the stored key is known.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            held_for: None,
            lease_left: None,
            fencing: None,
            waiting: None,
            owner: None,
            acquired_at: None,
        }
    }

    /// Sets how long it has been held.
    pub fn held_for(mut self, d: Option<Duration>) -> Self {
        self.held_for = d;
        self
    }

    /// Sets how long its lease still runs.
    pub fn lease_left(mut self, d: Option<Duration>) -> Self {
        self.lease_left = d;
        self
    }

    /// Sets its fencing token.
    pub fn fencing(mut self, token: Option<u64>) -> Self {
        self.fencing = token;
        self
    }

    /// Sets how many wait for it.
    pub fn waiting(mut self, n: Option<usize>) -> Self {
        self.waiting = n;
        self
    }

    /// Sets who holds it.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    /// use lock_runtime::backend::Held;
    ///
    /// let held = Held::new("k").owner(Some(Owner::of_this_process()));
    /// assert_eq!(held.owner.unwrap().pid, Some(std::process::id()));
    /// ```
    pub fn owner(mut self, owner: Option<Owner>) -> Self {
        self.owner = owner;
        self
    }

    /// Sets when it was acquired.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use lock_runtime::backend::Held;
    ///
    /// let at = SystemTime::now();
    /// assert_eq!(Held::new("k").acquired_at(Some(at)).acquired_at, Some(at));
    /// ```
    pub fn acquired_at(mut self, at: Option<SystemTime>) -> Self {
        self.acquired_at = at;
        self
    }
}

/// Ability: pages through the locks held under a namespace and shows one,
/// for the admin API ([`Alias::list`](crate::registry::Alias::list),
/// [`Alias::show`](crate::registry::Alias::show)). Never blocks the store
/// for long: a page is a bounded read (a `SCAN` step, an indexed range).
/// Keys in and out are as the store keeps them; the runtime maps them.
/// Named through [`Abilities::inspect`].
///
/// ```
/// use lock_runtime::admin::Page;
/// use lock_runtime::backend::{BackendError, Held, Inspect, Namespace};
///
/// /// Holds one lock, "jobs:only".
/// struct One;
///
/// impl Inspect for One {
///     fn list(&self, _: &Namespace, prefix: &str, cursor: Option<&str>, _: usize) -> Result<Page, BackendError> {
///         let held = ("jobs:only".starts_with(prefix) && cursor.is_none())
///             .then(|| Held::new("jobs:only"));
///         Ok(Page::new(held.into_iter().collect(), None))
///     }
///     fn show(&self, key: &str) -> Result<Option<Held>, BackendError> {
///         Ok((key == "jobs:only").then(|| Held::new(key)))
///     }
/// }
///
/// let ns = Namespace::new("jobs:");
/// assert_eq!(One.list(&ns, "jobs:o", None, 10).unwrap().held.len(), 1);
/// assert!(One.show("jobs:other").unwrap().is_none());
/// ```
pub trait Inspect: Send + Sync {
    /// Up to `limit` held locks under `ns` whose stored keys start with
    /// `prefix` (already a stored key's start), in the order of their keys,
    /// from `cursor` on (`None`: the first page; else a `next` this method
    /// gave). May list fewer (even none) with a `next` to go on from.
    fn list(
        &self,
        ns: &super::Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, BackendError>;

    /// The lock `key` (as stored), if it is held now.
    fn show(&self, key: &str) -> Result<Option<Held>, BackendError>;
}

/// Ability: [`Inspect`] in async form, for an [`AsyncStore`]. Named through
/// [`Abilities::async_inspect`].
///
/// ```
/// use lock_runtime::admin::Page;
/// use lock_runtime::backend::{AsyncInspect, BackendError, BoxFuture, Held, Namespace};
///
/// struct NoneHeld;
///
/// impl AsyncInspect for NoneHeld {
///     fn list<'a>(&'a self, _: &'a Namespace, _: &'a str, _: Option<&'a str>, _: usize) -> BoxFuture<'a, Result<Page, BackendError>> {
///         Box::pin(async { Ok(Page::default()) })
///     }
///     fn show<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Held>, BackendError>> {
///         Box::pin(async { Ok(None) })
///     }
/// }
///
/// assert!(futures::executor::block_on(NoneHeld.show("k")).unwrap().is_none());
/// ```
pub trait AsyncInspect: Send + Sync {
    /// See [`Inspect::list`].
    fn list<'a>(
        &'a self,
        ns: &'a super::Namespace,
        prefix: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, BackendError>>;

    /// See [`Inspect::show`].
    fn show<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Held>, BackendError>>;
}

/// Ability: releases a lock whoever holds it, and records that in a bounded
/// audit log the store keeps ([`Alias::force_release`](crate::registry::Alias::force_release),
/// [`Alias::audit_log`](crate::registry::Alias::audit_log)).
///
/// The forced-out holder must see its lock lost on its next renewal or
/// check, waiters must be woken as by a release, and the fencing counter
/// must go on from where it was, so the next holder's token is higher. A
/// store that can do only part of it answers the rest with an error of
/// kind [`BackendErrorKind::Unsupported`](crate::backend::BackendErrorKind::Unsupported).
/// Named through [`Abilities::force_release`].
///
/// ```
/// use lock_runtime::admin::Forced;
/// use lock_runtime::backend::{BackendError, BackendErrorKind, ForceRelease, Namespace};
///
/// /// Holds nothing, keeps no log.
/// struct Empty;
///
/// impl ForceRelease for Empty {
///     fn force_release(&self, _: &Namespace, entry: Forced) -> Result<Forced, BackendError> {
///         Ok(entry) // nothing was held: `removed` stays `None`
///     }
///     fn audit_log(&self, _: &Namespace, _: usize) -> Result<Vec<Forced>, BackendError> {
///         Err(BackendError::new(BackendErrorKind::Unsupported, "keeps no audit log"))
///     }
/// }
///
/// let ns = Namespace::new("");
/// let entry = lock_runtime::admin::Forced::new("k", std::time::SystemTime::now(),
///     lock_runtime::admin::Owner::unknown(), "test");
/// assert!(Empty.force_release(&ns, entry).unwrap().removed.is_none());
/// ```
pub trait ForceRelease: Send + Sync {
    /// Frees `entry.key` (as stored) whoever holds it, fills in
    /// `entry.removed` with the holder it removed, records the entry in the
    /// namespace's audit log and answers it.
    fn force_release(&self, ns: &super::Namespace, entry: Forced) -> Result<Forced, BackendError>;

    /// The newest `limit` entries of the namespace's audit log, newest
    /// first (keys as stored).
    fn audit_log(&self, ns: &super::Namespace, limit: usize) -> Result<Vec<Forced>, BackendError>;
}

/// Ability: [`ForceRelease`] in async form, for an [`AsyncStore`]. Named
/// through [`Abilities::async_force_release`].
///
/// ```
/// use lock_runtime::admin::Forced;
/// use lock_runtime::backend::{AsyncForceRelease, BackendError, BoxFuture, Namespace};
///
/// struct Empty;
///
/// impl AsyncForceRelease for Empty {
///     fn force_release<'a>(&'a self, _: &'a Namespace, entry: Forced) -> BoxFuture<'a, Result<Forced, BackendError>> {
///         Box::pin(async move { Ok(entry) })
///     }
///     fn audit_log<'a>(&'a self, _: &'a Namespace, _: usize) -> BoxFuture<'a, Result<Vec<Forced>, BackendError>> {
///         Box::pin(async { Ok(Vec::new()) })
///     }
/// }
///
/// let log = futures::executor::block_on(Empty.audit_log(&Namespace::new(""), 10)).unwrap();
/// assert!(log.is_empty());
/// ```
pub trait AsyncForceRelease: Send + Sync {
    /// See [`ForceRelease::force_release`].
    fn force_release<'a>(
        &'a self,
        ns: &'a super::Namespace,
        entry: Forced,
    ) -> BoxFuture<'a, Result<Forced, BackendError>>;

    /// See [`ForceRelease::audit_log`].
    fn audit_log<'a>(
        &'a self,
        ns: &'a super::Namespace,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Forced>, BackendError>>;
}

/// Ability: lists the locks held now under a namespace (stored keys that
/// start with `ns`'s, see [`Namespace::key_of`](super::Namespace::key_of)).
/// Listing more is harmless: the runtime keeps only the namespace's keys.
/// Named through [`Abilities::listing`]; the runtime offers it as
/// [`Alias::holders`](crate::registry::Alias::holders).
///
/// ```
/// use lock_runtime::backend::{BackendError, Held, Listing, Namespace};
///
/// struct One;
///
/// impl Listing for One {
///     fn holders(&self, ns: &Namespace) -> Result<Vec<Held>, BackendError> {
///         Ok(vec![Held::new(ns.key("only".into()))])
///     }
/// }
///
/// let ns = Namespace::new("jobs:");
/// assert_eq!(One.holders(&ns).unwrap()[0].key, "jobs:only");
/// ```
pub trait Listing: Send + Sync {
    /// The locks held now under `ns`.
    fn holders(&self, ns: &super::Namespace) -> Result<Vec<Held>, BackendError>;
}

/// Ability: [`Listing`] in async form, for an [`AsyncStore`]. Named through
/// [`Abilities::async_listing`].
///
/// ```
/// use lock_runtime::backend::{AsyncListing, BackendError, BoxFuture, Held, Namespace};
///
/// struct NoneHeld;
///
/// impl AsyncListing for NoneHeld {
///     fn holders<'a>(&'a self, _ns: &'a Namespace) -> BoxFuture<'a, Result<Vec<Held>, BackendError>> {
///         Box::pin(async { Ok(Vec::new()) })
///     }
/// }
///
/// let ns = Namespace::new("jobs:");
/// assert!(futures::executor::block_on(NoneHeld.holders(&ns)).unwrap().is_empty());
/// ```
pub trait AsyncListing: Send + Sync {
    /// The locks held now under `ns`.
    fn holders<'a>(
        &'a self,
        ns: &'a super::Namespace,
    ) -> BoxFuture<'a, Result<Vec<Held>, BackendError>>;
}

/// Ability: a lock may be held with no lease (until released). Only a store
/// whose locks die with their holders (an in-process store, a lock bound to
/// an open connection or file) should have it; every other store gets a
/// lease for every lock. Named through [`Abilities::unleased`].
///
/// ```
/// use lock_runtime::backend::Unleased;
///
/// struct InProcess;
/// impl Unleased for InProcess {}
/// ```
pub trait Unleased: Send + Sync {}

/// Ability: a release wakes the waiters of its key, so they wait without
/// polling (Postgres `LISTEN`/`NOTIFY`, a kernel file lock, Redis pub/sub).
/// Named through [`Abilities::wake_ups`].
///
/// The runtime calls [`watch`](Self::watch) once per waiting acquisition,
/// after its first busy answer, and then tries again at once, so that a
/// release between the busy answer and the watch is not missed. Until the
/// store calls [`Signal::ready`] (its subscription is in place) the waiter
/// also polls at the alias's poll interval; after that it sleeps until the
/// signal, the holder's lease end or its deadline (and looks again after a
/// second at most, in case a notification was lost with a connection).
///
/// ```
/// use std::sync::Mutex;
/// use lock_runtime::backend::{BackendError, Signal, Watch, WakeUps};
///
/// /// Waiters by key; a release calls `notify_all`.
/// #[derive(Default)]
/// struct Waiters(Mutex<Vec<(String, Signal)>>);
///
/// impl Waiters {
///     fn notify_all(&self, key: &str) {
///         for (k, s) in self.0.lock().unwrap().iter() {
///             if k == key {
///                 s.notify();
///             }
///         }
///     }
/// }
///
/// impl WakeUps for Waiters {
///     fn watch(&self, key: &str, signal: &Signal) -> Result<Watch, BackendError> {
///         self.0.lock().unwrap().push((key.to_owned(), signal.clone()));
///         signal.ready(); // in place at once
///         Ok(Watch::none()) // (a real store removes the entry when the watch drops)
///     }
/// }
///
/// let waiters = Waiters::default();
/// let signal = Signal::new();
/// let _watch = waiters.watch("k", &signal).unwrap();
/// waiters.notify_all("k");
/// assert!(signal.take_notified());
/// ```
pub trait WakeUps: Send + Sync {
    /// Starts delivering the releases of `key` to `signal` until the returned
    /// [`Watch`] is dropped. Must not block: a store that has I/O to do (a
    /// subscription) starts it and calls [`Signal::ready`] when it is done.
    fn watch(&self, key: &str, signal: &Signal) -> Result<Watch, BackendError>;
}

/// What a store's [`WakeUps::watch`] returns: the registration, undone when
/// dropped.
///
/// ```
/// use lock_runtime::backend::Watch;
///
/// struct Unregister;
/// impl Drop for Unregister {
///     fn drop(&mut self) { /* remove the waiter */ }
/// }
/// let watch = Watch::new(Unregister);
/// drop(watch); // unregisters
/// ```
pub struct Watch(#[allow(dead_code)] Option<Box<dyn Send>>);

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// A watch that undoes its registration by dropping `registration`.
    pub fn new(registration: impl Send + 'static) -> Self {
        Self(Some(Box::new(registration)))
    }

    /// A watch with nothing to undo.
    ///
    /// ```
    /// let _ = lock_runtime::backend::Watch::none();
    /// ```
    pub fn none() -> Self {
        Self(None)
    }
}

const NOTIFIED: u8 = 1;
const READY: u8 = 2;

/// How a store wakes one waiting acquisition: cheap to clone, safe to call
/// from any thread, and harmless after the waiter has gone.
///
/// ```
/// use lock_runtime::backend::Signal;
///
/// let signal = Signal::new();
/// let store_side = signal.clone();
/// std::thread::spawn(move || store_side.notify());
/// signal.wait_until(None); // returns once notified
/// assert!(signal.take_notified());
/// ```
#[derive(Clone)]
pub struct Signal(Arc<Shared>);

struct Shared {
    state: AtomicU8,
    wake: Mutex<Wake>,
}

enum Wake {
    Nobody,
    Thread(Thread),
    Task(Waker),
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.state.load(Ordering::Acquire);
        f.debug_struct("Signal")
            .field("notified", &(state & NOTIFIED != 0))
            .field("ready", &(state & READY != 0))
            .finish()
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    /// A signal nobody waits on yet.
    ///
    /// ```
    /// assert!(!lock_runtime::backend::Signal::new().is_ready());
    /// ```
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            state: AtomicU8::new(0),
            wake: Mutex::new(Wake::Nobody),
        }))
    }

    /// The key may have become free: wake the waiter so it tries again.
    ///
    /// ```
    /// let signal = lock_runtime::backend::Signal::new();
    /// signal.notify();
    /// assert!(signal.take_notified());
    /// assert!(!signal.take_notified(), "taken once");
    /// ```
    pub fn notify(&self) {
        self.0.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        self.wake();
    }

    /// The watch is in place: releases from now on will notify. Wakes the
    /// waiter too, since a release may have come before.
    ///
    /// ```
    /// let signal = lock_runtime::backend::Signal::new();
    /// signal.ready();
    /// assert!(signal.is_ready());
    /// ```
    pub fn ready(&self) {
        self.0.state.fetch_or(READY | NOTIFIED, Ordering::AcqRel);
        self.wake();
    }

    /// Whether the store said its watch is in place.
    ///
    /// ```
    /// assert!(!lock_runtime::backend::Signal::new().is_ready());
    /// ```
    pub fn is_ready(&self) -> bool {
        self.0.state.load(Ordering::Acquire) & READY != 0
    }

    /// Whether the signal was notified since the last call, clearing it.
    ///
    /// ```
    /// let signal = lock_runtime::backend::Signal::new();
    /// assert!(!signal.take_notified());
    /// ```
    pub fn take_notified(&self) -> bool {
        self.0.state.fetch_and(!NOTIFIED, Ordering::AcqRel) & NOTIFIED != 0
    }

    /// Parks this thread until notified or `until` (`None`: no limit).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let signal = lock_runtime::backend::Signal::new();
    /// let start = Instant::now();
    /// signal.wait_until(Some(start + Duration::from_millis(10)));
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    /// ```
    pub fn wait_until(&self, until: Option<Instant>) {
        *lock(&self.0.wake) = Wake::Thread(std::thread::current());
        while !self.notified() {
            match until {
                None => std::thread::park(),
                Some(u) => {
                    let now = Instant::now();
                    if now >= u {
                        break;
                    }
                    std::thread::park_timeout(u - now);
                }
            }
        }
        *lock(&self.0.wake) = Wake::Nobody;
    }

    /// Resolves once notified (a timer around it bounds the wait).
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.notified() {
            return Poll::Ready(());
        }
        {
            let mut wake = lock(&self.0.wake);
            match &*wake {
                Wake::Task(w) if w.will_wake(cx.waker()) => {}
                _ => *wake = Wake::Task(cx.waker().clone()),
            }
        }
        // A notify between the first look and the registration woke nobody.
        if self.notified() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn notified(&self) -> bool {
        self.0.state.load(Ordering::Acquire) & NOTIFIED != 0
    }

    fn wake(&self) {
        match &*lock(&self.0.wake) {
            Wake::Nobody => {}
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => w.wake_by_ref(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
