//! Derives the whole [`Backend`] a runtime drives from a store written once:
//! a blocking [`Store`] gets its async form from a thread pool, an
//! [`AsyncStore`] its blocking form by driving its futures here; both get the
//! runtime's wait loop and its abilities wired in.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::{
    Abilities, Acquired, AsyncStore, Attempt, Backend, BackendError, BoxFuture, Held, Namespace,
    Request, Store, Token, Wait, wait,
};
use crate::admin::{Forced, Page};

/// The full [`Backend`] of a blocking [`Store`]: sync callers call it
/// directly; async callers reach it through a pool of threads, so it never
/// blocks their executor.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::{self, Attempt, Backend, BackendError, Busy, Request, Store, Token};
///
/// struct Closed;
/// impl Store for Closed {
///     fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> {
///         Ok(Attempt::Busy(Busy::new(None)))
///     }
///     fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> { Ok(false) }
///     fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> { Ok(false) }
/// }
///
/// let driven: Arc<dyn Backend> = backend::blocking(Arc::new(Closed));
/// let attempt = futures::executor::block_on(driven.try_acquire_async(&Request::new("k")));
/// assert!(matches!(attempt, Ok(Attempt::Busy(_))));
/// ```
pub fn blocking<S: Store>(store: Arc<S>) -> Arc<dyn Backend> {
    Arc::new(Blocking(store))
}

/// The full [`Backend`] of an [`AsyncStore`]: async callers await it
/// directly; sync callers have its futures driven on their own thread, with
/// no async runtime needed.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::{self, AsyncStore, Attempt, Backend, BackendError, BoxFuture, Busy, Request, Token};
///
/// struct Closed;
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
/// let driven: Arc<dyn Backend> = backend::non_blocking(Arc::new(Closed));
/// assert!(matches!(driven.try_acquire(&Request::new("k")), Ok(Attempt::Busy(_))));
/// ```
pub fn non_blocking<S: AsyncStore>(store: Arc<S>) -> Arc<dyn Backend> {
    Arc::new(NonBlocking(store))
}

/// The full [`Backend`] of a store written in both forms, whose operations
/// share one body (the same statements, say) but which has a cheaper way to
/// serve a sync caller than driving its futures elsewhere (a connection the
/// calling thread drives itself): sync callers get its [`Store`] form, async
/// callers its [`AsyncStore`] form, and the abilities come from its
/// [`Store::abilities`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::{self, AsyncStore, Attempt, Backend, BackendError, BoxFuture, Busy, Request, Store, Token};
///
/// struct Closed;
/// impl Closed {
///     // The one body of each operation.
///     fn attempt(&self) -> Result<Attempt, BackendError> { Ok(Attempt::Busy(Busy::new(None))) }
/// }
/// impl Store for Closed {
///     fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> { self.attempt() }
///     fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> { Ok(false) }
///     fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> { Ok(false) }
/// }
/// impl AsyncStore for Closed {
///     fn try_acquire<'a>(&'a self, _: &'a Request<'a>) -> BoxFuture<'a, Result<Attempt, BackendError>> {
///         Box::pin(async { self.attempt() })
///     }
///     fn release<'a>(&'a self, _: &'a str, _: Token) -> BoxFuture<'a, Result<bool, BackendError>> {
///         Box::pin(async { Ok(false) })
///     }
///     fn extend<'a>(&'a self, _: &'a str, _: Token, _: Duration) -> BoxFuture<'a, Result<bool, BackendError>> {
///         Box::pin(async { Ok(false) })
///     }
/// }
///
/// let driven: Arc<dyn Backend> = backend::dual(Arc::new(Closed));
/// assert!(matches!(driven.try_acquire(&Request::new("k")), Ok(Attempt::Busy(_))));
/// let attempt = futures::executor::block_on(driven.try_acquire_async(&Request::new("k")));
/// assert!(matches!(attempt, Ok(Attempt::Busy(_))));
/// ```
pub fn dual<S: Store + AsyncStore>(store: Arc<S>) -> Arc<dyn Backend> {
    Arc::new(Dual {
        sync: Blocking(Arc::clone(&store)),
        not: NonBlocking(store),
    })
}

/// An owned copy of a request, to cross into a pool thread.
struct Owned {
    key: String,
    token: Token,
    lease: Option<Duration>,
    steal_after: Option<Duration>,
    fair: bool,
    label: Option<String>,
    function: Option<&'static str>,
}

impl Owned {
    fn new(req: &Request<'_>) -> Self {
        Self {
            key: req.key.to_owned(),
            token: req.token,
            lease: req.lease,
            steal_after: req.steal_after,
            fair: req.fair,
            label: req.label.map(str::to_owned),
            function: req.function,
        }
    }

    fn request(&self) -> Request<'_> {
        Request::new(&self.key)
            .token(self.token)
            .lease(self.lease)
            .steal_after(self.steal_after)
            .fair(self.fair)
            .label(self.label.as_deref())
            .function(self.function)
    }
}

/// An attempt sent off to run on its own (on the pool, or on the runtime's
/// I/O thread) and the caller awaiting it, who may leave first. Whichever
/// of the two comes second settles a lock the attempt won: the attempt
/// gives it back if the caller had left before the answer; otherwise the
/// caller has the answer (and the runtime gives back what it leaves
/// unread). So a cancelled acquisition gives back once, not twice.
#[derive(Clone)]
struct Handed(Arc<AtomicU8>);

/// The attempt is out.
const OUT: u8 = 0;
/// The attempt was answered before the caller left.
const ANSWERED: u8 = 1;
/// The caller left first.
const LEFT: u8 = 2;

impl Handed {
    fn new() -> Self {
        Self(Arc::new(AtomicU8::new(OUT)))
    }

    /// Marks the attempt answered; false if its caller had left.
    fn answered(&self) -> bool {
        self.0
            .compare_exchange(OUT, ANSWERED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the attempt answered with `attempt`; true if it won the lock
    /// for a caller that had left, so that the attempt must give it back.
    fn won_for_nobody(&self, attempt: &Result<Attempt, BackendError>) -> bool {
        !self.answered() && matches!(attempt, Ok(Attempt::Acquired(_)))
    }
}

/// Held by an attempt while the store works on it: if the store panics,
/// the unwinding marks the attempt answered, which leaves the caller to give
/// back by token what it may have won, as for any answer it leaves unread.
struct Working<'a>(&'a Handed);

impl Drop for Working<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.answered();
        }
    }
}

/// Held by the caller while its attempt is out. Dropped before the answer
/// (the caller left), it leaves whatever the attempt wins to the attempt,
/// and tells the runtime that its give-back of the cancelled acquisition
/// has nothing to do ([`wait::nothing_to_give_back`]).
struct Awaiting {
    handed: Option<Handed>,
    token: Token,
}

impl Awaiting {
    fn new(handed: &Handed, token: Token) -> Self {
        Self {
            handed: Some(handed.clone()),
            token,
        }
    }

    /// Awaits the attempt's answer (or the error that there is none), after
    /// which there is nothing to settle.
    async fn answer<T>(mut self, attempt: impl Future<Output = T>) -> T {
        let out = attempt.await;
        self.handed = None;
        out
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        let Some(handed) = &self.handed else { return };
        let left = handed
            .0
            .compare_exchange(OUT, LEFT, Ordering::AcqRel, Ordering::Acquire);
        if left.is_ok() {
            wait::nothing_to_give_back(self.token);
        }
    }
}

fn report_detached(key: &str, outcome: Result<bool, BackendError>) {
    match outcome {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(key, error = %e, "releasing a dropped lock guard failed; the lock frees itself when its lease ends")
        }
    }
}

struct Blocking<S>(Arc<S>);

impl<S: Store> Backend for Blocking<S> {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        self.0.try_acquire(req)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.0.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.0.extend(key, token, lease)
    }

    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        wait::acquire(self, self.0.abilities().wake_ups, req, wait)
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        let (store, owned) = (Arc::clone(&self.0), Owned::new(req));
        let handed = Handed::new();
        let awaiting = Awaiting::new(&handed, req.token);
        // If the caller left before the answer, nobody holds what the
        // attempt won: give it back here, after the store applied it.
        let task = blocking::unblock(move || {
            let req = owned.request();
            let attempt = {
                let _working = Working(&handed);
                store.try_acquire(&req)
            };
            if handed.won_for_nobody(&attempt) {
                report_detached(&owned.key, store.release(&owned.key, owned.token));
            }
            attempt
        });
        Box::pin(awaiting.answer(task))
    }

    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        Box::pin(wait::acquire_async(
            self,
            self.0.abilities().wake_ups,
            req,
            wait,
        ))
    }

    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        Box::pin(blocking::unblock(move || store.release(&key, token)))
    }

    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        Box::pin(blocking::unblock(move || store.extend(&key, token, lease)))
    }

    fn release_detached(&self, key: &str, token: Token) {
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        blocking::unblock(move || report_detached(&key, store.release(&key, token))).detach();
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        check(&self.0, <S as Store>::abilities, key, token)
    }

    fn holders(&self, ns: &Namespace) -> Option<Result<Vec<Held>, BackendError>> {
        holders(&self.0, <S as Store>::abilities, ns)
    }

    fn clean_up(&self, grace: Duration) -> Option<Result<u64, BackendError>> {
        clean_up(&self.0, <S as Store>::abilities, grace)
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        list(&self.0, <S as Store>::abilities, ns, prefix, cursor, limit)
    }

    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        show(&self.0, <S as Store>::abilities, key)
    }

    fn force_release(&self, ns: &Namespace, entry: Forced) -> Option<Result<Forced, BackendError>> {
        force_release(&self.0, <S as Store>::abilities, ns, entry)
    }

    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        audit_log(&self.0, <S as Store>::abilities, ns, limit)
    }

    fn supports_unleased(&self) -> bool {
        self.0.abilities().unleased
    }
}

struct NonBlocking<S>(Arc<S>);

/// Drives an async store's future to its end for a sync caller: on the
/// runtime's I/O thread, whose Tokio reactor a store's client may need.
#[cfg(feature = "tokio")]
fn finish<T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    crate::rt::block_on(fut)
}

/// Drives an async store's future to its end for a sync caller, on the
/// caller's thread.
#[cfg(not(feature = "tokio"))]
fn finish<T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    futures_lite::future::block_on(fut)
}

/// Whether an async caller's future can run the store's futures where it is
/// (inside a Tokio runtime, or always when the runtime has no Tokio).
fn here() -> bool {
    #[cfg(feature = "tokio")]
    return crate::rt::in_tokio();
    #[cfg(not(feature = "tokio"))]
    return true;
}

/// Runs a store's future elsewhere for an async caller outside Tokio.
fn elsewhere<'a, T: Send + 'static>(
    fut: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> BoxFuture<'a, Result<T, BackendError>> {
    #[cfg(feature = "tokio")]
    return Box::pin(crate::rt::run(fut));
    #[cfg(not(feature = "tokio"))]
    return Box::pin(fut);
}

impl<S: AsyncStore> NonBlocking<S> {
    /// One attempt, owned: if the caller left before the answer, a lock it
    /// won is given back right here (see [`Handed`]).
    fn attempt(
        &self,
        req: &Request<'_>,
        handed: Handed,
    ) -> impl Future<Output = Result<Attempt, BackendError>> + Send + 'static {
        let (store, owned) = (Arc::clone(&self.0), Owned::new(req));
        async move {
            let req = owned.request();
            let attempt = {
                let _working = Working(&handed);
                store.try_acquire(&req).await
            };
            if handed.won_for_nobody(&attempt) {
                report_detached(&owned.key, store.release(&owned.key, owned.token).await);
            }
            attempt
        }
    }
}

impl<S: AsyncStore> Backend for NonBlocking<S> {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        finish(self.attempt(req, Handed::new()))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        finish(async move { store.release(&key, token).await })
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        finish(async move { store.extend(&key, token, lease).await })
    }

    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        wait::acquire(self, self.0.abilities().wake_ups, req, wait)
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        if here() {
            return self.0.try_acquire(req);
        }
        let handed = Handed::new();
        let awaiting = Awaiting::new(&handed, req.token);
        let attempt = elsewhere(self.attempt(req, handed));
        Box::pin(awaiting.answer(attempt))
    }

    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        Box::pin(wait::acquire_async(
            self,
            self.0.abilities().wake_ups,
            req,
            wait,
        ))
    }

    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        if here() {
            return self.0.release(key, token);
        }
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        elsewhere(async move { store.release(&key, token).await })
    }

    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        if here() {
            return self.0.extend(key, token, lease);
        }
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        elsewhere(async move { store.extend(&key, token, lease).await })
    }

    fn release_detached(&self, key: &str, token: Token) {
        // Called from a guard's drop, maybe on an executor thread: the
        // release runs elsewhere, and nobody waits for it.
        let (store, key) = (Arc::clone(&self.0), key.to_owned());
        let release = async move { report_detached(&key, store.release(&key, token).await) };
        #[cfg(feature = "tokio")]
        if let Err(e) = crate::rt::spawn(release) {
            tracing::error!(error = %e, "could not release a dropped lock guard; the lock frees itself when its lease ends");
        }
        #[cfg(not(feature = "tokio"))]
        blocking::unblock(move || futures_lite::future::block_on(release)).detach();
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        check(&self.0, <S as AsyncStore>::abilities, key, token)
    }

    fn holders(&self, ns: &Namespace) -> Option<Result<Vec<Held>, BackendError>> {
        holders(&self.0, <S as AsyncStore>::abilities, ns)
    }

    fn clean_up(&self, grace: Duration) -> Option<Result<u64, BackendError>> {
        clean_up(&self.0, <S as AsyncStore>::abilities, grace)
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        list(
            &self.0,
            <S as AsyncStore>::abilities,
            ns,
            prefix,
            cursor,
            limit,
        )
    }

    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        show(&self.0, <S as AsyncStore>::abilities, key)
    }

    fn force_release(&self, ns: &Namespace, entry: Forced) -> Option<Result<Forced, BackendError>> {
        force_release(&self.0, <S as AsyncStore>::abilities, ns, entry)
    }

    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        audit_log(&self.0, <S as AsyncStore>::abilities, ns, limit)
    }

    fn supports_unleased(&self) -> bool {
        self.0.abilities().unleased
    }
}

/// A store in both forms: each caller gets the form that serves it best.
struct Dual<S> {
    sync: Blocking<S>,
    not: NonBlocking<S>,
}

impl<S: Store + AsyncStore> Backend for Dual<S> {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        self.sync.try_acquire(req)
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.sync.release(key, token)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        self.sync.extend(key, token, lease)
    }

    fn acquire(&self, req: &Request<'_>, wait: Wait) -> Result<Option<Acquired>, BackendError> {
        self.sync.acquire(req, wait)
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        self.not.try_acquire_async(req)
    }

    fn acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
        wait: Wait,
    ) -> BoxFuture<'a, Result<Option<Acquired>, BackendError>> {
        self.not.acquire_async(req, wait)
    }

    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.not.release_async(key, token)
    }

    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        self.not.extend_async(key, token, lease)
    }

    fn release_detached(&self, key: &str, token: Token) {
        self.not.release_detached(key, token)
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        self.sync.check(key, token)
    }

    fn holders(&self, ns: &Namespace) -> Option<Result<Vec<Held>, BackendError>> {
        self.sync.holders(ns)
    }

    fn clean_up(&self, grace: Duration) -> Option<Result<u64, BackendError>> {
        self.sync.clean_up(grace)
    }

    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        self.sync.list(ns, prefix, cursor, limit)
    }

    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        self.sync.show(key)
    }

    fn force_release(&self, ns: &Namespace, entry: Forced) -> Option<Result<Forced, BackendError>> {
        self.sync.force_release(ns, entry)
    }

    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        self.sync.audit_log(ns, limit)
    }

    fn supports_unleased(&self) -> bool {
        self.sync.supports_unleased()
    }
}

/// How an adapter reads its store's abilities (`Store::abilities` or
/// `AsyncStore::abilities`), so that one function per ability serves both.
type AbilitiesOf<S> = for<'a> fn(&'a S) -> Abilities<'a>;

/// The owner check, in whichever form the store named: the blocking one in
/// place, the async one driven to its end like the store's own futures.
fn check<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    key: &str,
    token: Token,
) -> Option<Result<bool, BackendError>> {
    let abilities = of(store);
    if let Some(c) = abilities.owner_check {
        return Some(c.holds(key, token));
    }
    abilities.async_owner_check?;
    let (store, key) = (Arc::clone(store), key.to_owned());
    finish(async move {
        match of(&store).async_owner_check {
            Some(c) => c.holds(&key, token).await.map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}

/// The listing, in whichever form the store named (see [`check`]).
fn holders<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    ns: &Namespace,
) -> Option<Result<Vec<Held>, BackendError>> {
    let abilities = of(store);
    if let Some(l) = abilities.listing {
        return Some(l.holders(ns));
    }
    abilities.async_listing?;
    let (store, ns) = (Arc::clone(store), ns.clone());
    finish(async move {
        match of(&store).async_listing {
            Some(l) => l.holders(&ns).await.map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}

/// The stale-lock clean-up, in whichever form the store named (see
/// [`check`]).
fn clean_up<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    grace: Duration,
) -> Option<Result<u64, BackendError>> {
    let abilities = of(store);
    if let Some(c) = abilities.clean_up {
        return Some(c.clean_up(grace));
    }
    abilities.async_clean_up?;
    let store = Arc::clone(store);
    finish(async move {
        match of(&store).async_clean_up {
            Some(c) => c.clean_up(grace).await.map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}

/// A page of held locks, in whichever form the store named (see [`check`]).
fn list<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    ns: &Namespace,
    prefix: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Option<Result<Page, BackendError>> {
    let abilities = of(store);
    if let Some(i) = abilities.inspect {
        return Some(i.list(ns, prefix, cursor, limit));
    }
    abilities.async_inspect?;
    let (store, ns, prefix) = (Arc::clone(store), ns.clone(), prefix.to_owned());
    let cursor = cursor.map(str::to_owned);
    finish(async move {
        match of(&store).async_inspect {
            Some(i) => i
                .list(&ns, &prefix, cursor.as_deref(), limit)
                .await
                .map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}

/// One held lock, in whichever form the store named (see [`check`]).
fn show<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    key: &str,
) -> Option<Result<Option<Held>, BackendError>> {
    let abilities = of(store);
    if let Some(i) = abilities.inspect {
        return Some(i.show(key));
    }
    abilities.async_inspect?;
    let (store, key) = (Arc::clone(store), key.to_owned());
    finish(async move {
        match of(&store).async_inspect {
            Some(i) => i.show(&key).await.map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}

/// A forced release, in whichever form the store named (see [`check`]).
fn force_release<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    ns: &Namespace,
    entry: Forced,
) -> Option<Result<Forced, BackendError>> {
    let abilities = of(store);
    if let Some(f) = abilities.force_release {
        return Some(f.force_release(ns, entry));
    }
    abilities.async_force_release?;
    let (store, ns) = (Arc::clone(store), ns.clone());
    finish(async move {
        match of(&store).async_force_release {
            Some(f) => f.force_release(&ns, entry).await.map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}

/// The audit log, in whichever form the store named (see [`check`]).
fn audit_log<S: Send + Sync + 'static>(
    store: &Arc<S>,
    of: AbilitiesOf<S>,
    ns: &Namespace,
    limit: usize,
) -> Option<Result<Vec<Forced>, BackendError>> {
    let abilities = of(store);
    if let Some(f) = abilities.force_release {
        return Some(f.audit_log(ns, limit));
    }
    abilities.async_force_release?;
    let (store, ns) = (Arc::clone(store), ns.clone());
    finish(async move {
        match of(&store).async_force_release {
            Some(f) => f.audit_log(&ns, limit).await.map(Some),
            None => Ok(None),
        }
    })
    .transpose()
}
