//! The lock builder, [`Lock`], and the RAII guard it returns, [`LockGuard`]:
//! the low-level form of what `#[lock]` generates.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::race::OnceBox;
use tracing::Instrument;

use crate::backend::{Acquired, Attempt, Request, Token, Wait};
use crate::error::{LockError, Operation};
use crate::lease;
use crate::observe::{self, Acquiring, Closing, Held, Holder, Mode, Outcome};
use crate::registry::{self, Alias, DEFAULT_ALIAS};
use crate::watchdog::{self, Lost, Status, drift};

/// A lock request: a key, an alias and options. Build it, then
/// [`acquire`](Self::acquire) it (or [`acquire_async`](Self::acquire_async),
/// [`try_acquire`](Self::try_acquire)). The same `Lock` can be acquired again.
///
/// | option | default | meaning |
/// |---|---|---|
/// | [`alias`](Self::alias) | `"default"` | which configured store |
/// | [`wait`](Self::wait) | `true` | wait while busy, or fail with [`LockError::Busy`] |
/// | [`wait_for`](Self::wait_for) | forever | give up with [`LockError::Timeout`] after this long |
/// | [`expire`](Self::expire) | the alias's lease | fixed lease; without it a leased store renews the lease while the guard lives |
/// | [`steal_after`](Self::steal_after) | never | take over a lock held at least this long |
/// | [`delete_on_exit`](Self::delete_on_exit) | `true` | release when the guard drops; `false` keeps the key until `expire` |
/// | [`fair`](Self::fair) | `false` | serve waiters in arrival order |
/// | [`label`](Self::label) | none | who takes the lock, for people reading traces |
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::Lock;
///
/// let lock = Lock::new("nightly-report").wait_for(Duration::from_millis(500));
/// let guard = lock.acquire().unwrap();
/// assert_eq!(guard.key(), "nightly-report");
/// assert!(lock.try_acquire().unwrap().is_none(), "held until the guard drops");
/// drop(guard);
/// assert!(lock.try_acquire().unwrap().is_some());
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Lock does nothing until it is acquired"]
pub struct Lock {
    key: Cow<'static, str>,
    alias: Cow<'static, str>,
    expire: Option<Duration>,
    wait: bool,
    wait_for: Option<Duration>,
    steal_after: Option<Duration>,
    delete_on_exit: bool,
    fair: bool,
    label: Option<Cow<'static, str>>,
    /// The locked function, for `#[lock]`.
    function: Option<&'static str>,
}

impl Lock {
    /// A lock on `key`, with the defaults in the table above.
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-lock-new"); // a `&'static str` is not copied
    /// assert_eq!(lock.key(), "doc-lock-new");
    ///
    /// let user = 42;
    /// let guard = Lock::new(format!("doc-lock-new-user-{user}")).acquire().unwrap();
    /// assert_eq!(guard.key(), "doc-lock-new-user-42");
    /// assert_eq!(guard.alias(), "default");
    /// ```
    pub fn new(key: impl Into<Cow<'static, str>>) -> Self {
        Self {
            key: key.into(),
            alias: Cow::Borrowed(DEFAULT_ALIAS),
            expire: None,
            wait: true,
            wait_for: None,
            steal_after: None,
            delete_on_exit: true,
            fair: false,
            label: None,
            function: None,
        }
    }

    /// Takes the lock from the store configured as `alias`.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-lock-alias", AliasConfig::memory_named("doc-lock-alias")).unwrap();
    /// let guard = Lock::new("doc-lock-alias-import").alias("doc-lock-alias").acquire().unwrap();
    /// assert_eq!(guard.alias(), "doc-lock-alias");
    /// // The same key on another store is another lock.
    /// assert!(Lock::new("doc-lock-alias-import").try_acquire().unwrap().is_some());
    /// // An alias nobody configured is an error, not a new store.
    /// assert!(Lock::new("doc-lock-alias-import").alias("typo").acquire().is_err());
    /// ```
    pub fn alias(mut self, alias: impl Into<Cow<'static, str>>) -> Self {
        self.alias = alias.into();
        self
    }

    /// A fixed lease: the lock frees itself this long after it was taken,
    /// unless [extended](LockGuard::extend). Without it, stores that need a
    /// lease use the alias's and renew it while the guard lives.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-lock-expire").expire(Duration::from_millis(50));
    /// let guard = lock.acquire().unwrap();
    /// assert!(guard.remaining().unwrap() <= Duration::from_millis(50));
    /// std::thread::sleep(Duration::from_millis(80));
    /// assert!(guard.is_lost());
    /// // The lock freed itself although the guard still exists.
    /// assert!(lock.try_acquire().unwrap().is_some());
    /// ```
    pub fn expire(mut self, lease: Duration) -> Self {
        self.expire = Some(lease);
        self
    }

    /// Whether to wait while the lock is busy (default `true`). With `false`,
    /// [`acquire`](Self::acquire) fails at once with [`LockError::Busy`].
    ///
    /// ```
    /// use lock_runtime::{Lock, LockError};
    ///
    /// let _held = Lock::new("doc-lock-wait").acquire().unwrap();
    /// let err = Lock::new("doc-lock-wait").wait(false).acquire().unwrap_err();
    /// assert!(matches!(err, LockError::Busy { .. }));
    /// ```
    pub fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// Waits at most this long, then fails with [`LockError::Timeout`].
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lock_runtime::{Lock, LockError};
    ///
    /// let held = Lock::new("doc-lock-wait-for").acquire().unwrap();
    /// let started = Instant::now();
    /// let err = Lock::new("doc-lock-wait-for")
    ///     .wait_for(Duration::from_millis(50))
    ///     .acquire()
    ///     .unwrap_err();
    /// assert!(matches!(err, LockError::Timeout { .. }));
    /// assert!(started.elapsed() >= Duration::from_millis(50));
    ///
    /// // Released within the limit: the waiter gets the lock.
    /// std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(20));
    ///     drop(held);
    /// });
    /// let guard = Lock::new("doc-lock-wait-for").wait_for(Duration::from_secs(5)).acquire();
    /// assert!(guard.is_ok());
    /// ```
    pub fn wait_for(mut self, limit: Duration) -> Self {
        self.wait_for = Some(limit);
        self
    }

    /// Takes over a lock whose holder has held it at least this long
    /// (djangae's `steal_after_ms`), judged by the store's clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let stealer = Lock::new("doc-lock-steal")
    ///     .steal_after(Duration::from_millis(200))
    ///     .wait(false);
    /// let old = Lock::new("doc-lock-steal").acquire().unwrap();
    /// assert!(stealer.acquire().unwrap_err().is_busy(), "held for less than 200 ms");
    ///
    /// std::thread::sleep(Duration::from_millis(250));
    /// let new = stealer.acquire().unwrap(); // taken over
    /// // The old holder finds out when it gives the lock back; the new
    /// // holder's lock is left alone.
    /// assert!(old.release().unwrap_err().is_not_held());
    /// assert!(Lock::new("doc-lock-steal").try_acquire().unwrap().is_none());
    /// drop(new);
    /// ```
    pub fn steal_after(mut self, age: Duration) -> Self {
        self.steal_after = Some(age);
        self
    }

    /// Whether dropping the guard releases the lock (default `true`). With
    /// `false` the key stays held until its lease ends, so `expire` is
    /// required: a "run at most once per period" lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let once_per_period = Lock::new("doc-lock-keep")
    ///     .expire(Duration::from_millis(200))
    ///     .delete_on_exit(false);
    /// drop(once_per_period.acquire().unwrap());
    /// assert!(once_per_period.try_acquire().unwrap().is_none(), "still held after the drop");
    /// std::thread::sleep(Duration::from_millis(250));
    /// assert!(once_per_period.try_acquire().unwrap().is_some(), "free once the lease ended");
    ///
    /// // Without `expire` the key would be held for ever: refused.
    /// assert!(Lock::new("doc-lock-keep").delete_on_exit(false).acquire().is_err());
    /// ```
    pub fn delete_on_exit(mut self, delete: bool) -> Self {
        self.delete_on_exit = delete;
        self
    }

    /// Serves waiters in arrival order instead of letting a newcomer take a
    /// just-released lock first.
    ///
    /// A store whose waiters are all in one place (the memory store, below)
    /// keeps one order over every waiter. The Redis store keeps one waiter
    /// per process in its line: a process's waiters are served in the order
    /// they came, and processes in turn (README, "Redis").
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::thread;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::Lock;
    ///
    /// const KEY: &str = "doc-lock-fair";
    /// let store = MemoryBackend::named("default"); // the store of the `default` alias
    /// let served = Arc::new(Mutex::new(Vec::new()));
    /// let held = Lock::new(KEY).acquire().unwrap();
    /// let mut waiters = Vec::new();
    /// for i in 0..3 {
    ///     let served = Arc::clone(&served);
    ///     waiters.push(thread::spawn(move || {
    ///         let _guard = Lock::new(KEY).fair(true).acquire().unwrap();
    ///         served.lock().unwrap().push(i);
    ///     }));
    ///     while store.waiting(KEY) <= i {
    ///         thread::yield_now(); // let waiter `i` join the line before the next
    ///     }
    /// }
    /// drop(held);
    /// for w in waiters {
    ///     w.join().unwrap();
    /// }
    /// assert_eq!(*served.lock().unwrap(), [0, 1, 2]);
    /// ```
    pub fn fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// A name for whoever takes the lock (`"nightly-report"`, a job's or a
    /// host's name), kept on the guard ([`LockGuard::label`]), recorded
    /// as the `label` field of its `lock.held` span, and given to the store,
    /// which keeps it with the holder where it can ([`Alias::show`](crate::registry::Alias::show)).
    /// It changes nothing about exclusion: two locks with one key exclude
    /// each other whatever their labels.
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let guard = Lock::new("doc-lock-label").label("nightly-report").acquire().unwrap();
    /// assert_eq!(guard.label(), Some("nightly-report"));
    /// let other = Lock::new("doc-lock-label").label("someone-else");
    /// assert!(other.try_acquire().unwrap().is_none(), "labels do not change the lock");
    /// ```
    pub fn label(mut self, label: impl Into<Cow<'static, str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// The path of the function `#[lock]` locks.
    pub(crate) fn function(mut self, path: &'static str) -> Self {
        self.function = Some(path);
        self
    }

    /// The key, without the alias prefix.
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-lock-key").alias("reports");
    /// assert_eq!(lock.key(), "doc-lock-key");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn waits(&self) -> bool {
        self.wait
    }

    fn check(&self) -> Result<(), LockError> {
        if self.key.is_empty() {
            return Err(LockError::invalid(
                "key",
                "the lock key is empty: give the lock a name",
            ));
        }
        for (name, d) in [("expire", self.expire), ("steal_after", self.steal_after)] {
            if let Some(d) = d {
                check_duration(name, d)?;
            }
        }
        // Any wait is accepted: one longer than the clock can count waits
        // forever.
        if self.wait_for == Some(Duration::ZERO) {
            return Err(LockError::invalid(
                "wait_for",
                "`wait_for` must be greater than zero",
            ));
        }
        if !self.wait && self.wait_for.is_some() {
            return Err(LockError::invalid(
                "wait_for",
                "`wait(false)` never waits, so `wait_for` has no effect: remove one of them",
            ));
        }
        if !self.delete_on_exit && self.expire.is_none() {
            return Err(LockError::invalid(
                "delete_on_exit",
                "`delete_on_exit(false)` keeps the lock until its lease ends, so it needs `expire(...)`",
            ));
        }
        Ok(())
    }

    /// The request's store, once its options were checked. Only the alias
    /// comes back through the `Result`: a whole [`Prepared`] moved out of one
    /// was copied through memory in pieces the processor could not forward.
    #[inline(always)]
    fn resolve(&self) -> Result<Alias, LockError> {
        self.check()?;
        registry::alias(&self.alias)
    }

    #[inline(always)]
    fn prepare(&self, alias: Alias) -> Prepared {
        let lease = self.expire.or(alias.0.lease);
        // No prefix and nothing to escape (a private memory store): the key
        // as given, borrowed or moved, with no new string.
        let key = alias.0.namespace.stored(&self.key);
        Prepared {
            alias,
            key,
            lease,
            token: Token::new(),
        }
    }

    fn request<'a>(&'a self, p: &'a Prepared) -> Request<'a> {
        // Built whole: `Request::new` would draw a token only to have it
        // replaced.
        Request {
            key: &p.key,
            token: p.token,
            lease: p.lease,
            steal_after: self.steal_after,
            fair: self.fair,
            label: self.label.as_deref(),
            function: self.function,
        }
    }

    /// When the acquisition starts, read only if something needs it: a
    /// deadline, or a lease whose validity counts from the request (for a
    /// store that does not say when its request was sent). Reading the clock
    /// is a large part of an uncontended in-process lock.
    fn started(&self, p: &Prepared) -> Option<Instant> {
        (self.wait_for.is_some() || p.lease.is_some()).then(Instant::now)
    }

    fn wait_spec(&self, p: &Prepared, sent: Option<Instant>) -> Wait {
        // A wait past what the clock can count has no deadline.
        let deadline = self.wait_for.and_then(|d| sent?.checked_add(d));
        Wait::new(deadline, p.alias.0.poll_interval)
    }

    /// Takes the lock, waiting as the options say. Blocks the thread; needs
    /// no async runtime.
    ///
    /// Errors: [`LockError::Busy`] (with `wait(false)`), [`LockError::Timeout`],
    /// [`LockError::UnknownAlias`], [`LockError::InvalidOptions`],
    /// [`LockError::Backend`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-lock-acquire");
    /// let guard = lock.acquire().unwrap();
    /// // Another thread blocks in `acquire` until the guard is dropped.
    /// let waiter = std::thread::spawn(move || lock.acquire().map(|g| g.key().to_owned()));
    /// std::thread::sleep(Duration::from_millis(20));
    /// assert!(!waiter.is_finished());
    /// drop(guard);
    /// assert_eq!(waiter.join().unwrap().unwrap(), "doc-lock-acquire");
    /// ```
    pub fn acquire(&self) -> Result<LockGuard, LockError> {
        if !observe::wanted() {
            return self.acquire_unobserved();
        }
        let obs = Acquiring::start(&self.alias, &self.key, self.mode(self.wait));
        let result = obs.span().in_scope(|| self.acquire_unobserved());
        self.observed(obs, result)
    }

    fn acquire_unobserved(&self) -> Result<LockGuard, LockError> {
        let p = self.prepare(self.resolve()?);
        let req = self.request(&p);
        let sent = self.started(&p);
        let backend = p.alias.backend();
        let outcome = if self.wait {
            backend.acquire(&req, self.wait_spec(&p, sent))
        } else {
            backend.try_acquire(&req).map(granted)
        };
        self.finish(p, outcome, sent, false, self.wait)
    }

    /// The async form of [`acquire`](Self::acquire). Waiting never blocks the
    /// executor, and works on any async runtime. If the future is dropped
    /// part-way, nothing stays locked.
    ///
    /// The future owns a copy of the request, so it can be stored, spawned or
    /// raced in `select!` without borrowing the `Lock`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// rt.block_on(async {
    ///     let lock = Lock::new("doc-lock-acquire-async");
    ///     let guard = lock.acquire_async().await.unwrap();
    ///     let waiter = tokio::spawn(lock.acquire_async()); // `'static`: no borrow of `lock`
    ///     tokio::time::sleep(Duration::from_millis(20)).await;
    ///     assert!(!waiter.is_finished(), "waits while the lock is held");
    ///     drop(guard);
    ///     let guard = waiter.await.unwrap().unwrap();
    ///     assert_eq!(guard.key(), "doc-lock-acquire-async");
    /// });
    /// ```
    pub fn acquire_async(
        &self,
    ) -> impl Future<Output = Result<LockGuard, LockError>> + Send + 'static + use<> {
        self.clone().into_acquire_async(self.wait)
    }

    /// Acquires asynchronously, consuming the request (no copy): what the
    /// macros call. `wait == false` makes a single attempt.
    pub(crate) async fn into_acquire_async(self, wait: bool) -> Result<LockGuard, LockError> {
        if !observe::wanted() {
            return self.acquire_async_unobserved(wait).await;
        }
        // Boxed apart: the future every acquisition holds (a waiting task
        // holds it all along) carries none of the observation's state.
        Box::pin(self.acquire_async_observed(wait)).await
    }

    async fn acquire_async_observed(&self, wait: bool) -> Result<LockGuard, LockError> {
        let obs = Acquiring::start(&self.alias, &self.key, self.mode(wait));
        // Entered on each poll, never held across an await.
        let result = self
            .acquire_async_unobserved(wait)
            .instrument(obs.span().clone())
            .await;
        self.observed(obs, result)
    }

    async fn acquire_async_unobserved(&self, wait: bool) -> Result<LockGuard, LockError> {
        let p = self.prepare(self.resolve()?);
        let req = self.request(&p);
        let sent = self.started(&p);
        let backend = p.alias.backend();
        // Dropped before the store answered (a cancelled task, a timeout),
        // the request may have won the lock all the same: give it back.
        let pending = Pending {
            backend,
            key: &p.key,
            token: p.token,
        };
        let outcome = if wait {
            backend.acquire_async(&req, self.wait_spec(&p, sent)).await
        } else {
            backend.try_acquire_async(&req).await.map(granted)
        };
        std::mem::forget(pending);
        self.finish(p, outcome, sent, true, wait)
    }

    /// One attempt, never waiting: `Ok(None)` when the lock is busy (djangae's
    /// `acquire(wait=False)` returning `None`).
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-lock-try");
    /// let guard = lock.try_acquire().unwrap().expect("nobody holds it yet");
    /// assert!(lock.try_acquire().unwrap().is_none(), "busy is `None`, not an error");
    /// drop(guard);
    /// assert!(lock.try_acquire().unwrap().is_some());
    /// ```
    pub fn try_acquire(&self) -> Result<Option<LockGuard>, LockError> {
        if !observe::wanted() {
            return self.try_acquire_unobserved();
        }
        let obs = Acquiring::start(&self.alias, &self.key, Mode::Try);
        match obs.span().in_scope(|| self.try_acquire_unobserved()) {
            Ok(None) => {
                let _ = obs.end(Outcome::Busy, None, None);
                Ok(None)
            }
            Ok(Some(guard)) => self.observed(obs, Ok(guard)).map(Some),
            Err(e) => self.observed(obs, Err(e)).map(Some),
        }
    }

    /// A busy lock is `None` before any guard is built, and a won one is
    /// built where it is returned: made an error and turned back, the
    /// guard was moved twice, read back in other widths than written.
    #[inline(always)]
    fn try_acquire_unobserved(&self) -> Result<Option<LockGuard>, LockError> {
        let p = self.prepare(self.resolve()?);
        let req = self.request(&p);
        let sent = self.started(&p);
        match p.alias.backend().try_acquire(&req) {
            Ok(Attempt::Busy(_)) => Ok(None),
            outcome => self
                .finish(p, outcome.map(granted), sent, false, false)
                .map(Some),
        }
    }

    fn mode(&self, wait: bool) -> Mode {
        match (wait, self.wait_for) {
            (false, _) => Mode::Try,
            (true, None) => Mode::Wait,
            (true, Some(_)) => Mode::WaitFor,
        }
    }

    /// Ends the acquisition's span and metrics; a guard opens its held span.
    fn observed(
        &self,
        obs: Acquiring,
        result: Result<LockGuard, LockError>,
    ) -> Result<LockGuard, LockError> {
        match result {
            Ok(mut guard) => {
                let ended = obs.end(Outcome::Acquired, Some(guard.start), None);
                let held = Held::start(
                    ended,
                    Holder {
                        alias: guard.alias.name(),
                        key: guard.key(),
                        label: guard.label(),
                        function: guard.function,
                        fencing: guard.fencing_token(),
                    },
                );
                guard.held = held;
                Ok(guard)
            }
            Err(e) => {
                let outcome = if e.is_busy() {
                    Outcome::Busy
                } else if e.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::Error
                };
                let error = (outcome == Outcome::Error).then_some(&e as &dyn fmt::Display);
                // Nothing is held, so nothing goes on to a held span.
                let _ = obs.end(outcome, None, error);
                Err(e)
            }
        }
    }

    /// The async form of [`try_acquire`](Self::try_acquire).
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// futures::executor::block_on(async {
    ///     let lock = Lock::new("doc-lock-try-async");
    ///     let guard = lock.try_acquire_async().await.unwrap().expect("free");
    ///     assert!(lock.try_acquire_async().await.unwrap().is_none());
    ///     guard.release_async().await.unwrap();
    ///     assert!(lock.try_acquire_async().await.unwrap().is_some());
    /// });
    /// ```
    pub fn try_acquire_async(
        &self,
    ) -> impl Future<Output = Result<Option<LockGuard>, LockError>> + Send + 'static + use<> {
        let attempt = self.clone().into_acquire_async(false);
        async move { attempt.await.map(Some).or_else(busy_is_none) }
    }

    #[inline(always)]
    fn finish(
        &self,
        p: Prepared,
        outcome: Result<Option<Acquired>, crate::backend::BackendError>,
        sent: Option<Instant>,
        detached: bool,
        waited: bool,
    ) -> Result<LockGuard, LockError> {
        let acquired = match outcome {
            Ok(Some(a)) => a,
            Ok(None) if waited => {
                return Err(LockError::Timeout {
                    key: self.key.to_string(),
                    alias: p.alias.name().to_owned(),
                    waited: sent.map_or(Duration::ZERO, |s| s.elapsed()),
                });
            }
            Ok(None) => {
                return Err(LockError::Busy {
                    key: self.key.to_string(),
                    alias: p.alias.name().to_owned(),
                });
            }
            Err(source) => {
                return Err(LockError::Backend {
                    alias: p.alias.name().to_owned(),
                    key: self.key.to_string(),
                    op: Operation::Acquire,
                    source,
                });
            }
        };
        let start = acquired.sent_at.or(sent).unwrap_or_else(Instant::now);
        // A lock handed over by a release may start with a shorter lease
        // than asked; it is topped up below.
        let granted = acquired.lease.filter(|g| p.lease.is_some_and(|l| *g < l));
        let current = granted.or(p.lease);
        let (head, own_key) = match p.alias.0.namespace.head_len() {
            Some(len) => match u32::try_from(len) {
                Ok(len) => (len, None),
                Err(_) => (0, Some(self.key.as_ref().into())),
            },
            // Escaping only ever lengthens a key.
            None if p.key.len() == self.key.len() => (0, None),
            None => (0, Some(self.key.as_ref().into())),
        };
        let cold = Cold::of(self.label.clone(), own_key);
        let shown = Shown { head, cold: &cold };
        let status = OnceBox::new();
        match (self.expire, p.lease, current) {
            (None, Some(lease), Some(current)) => {
                let _ = status.set(Box::new(watchdog::renew(
                    Arc::clone(p.alias.backend()),
                    p.alias.name(),
                    &p.key,
                    shown.key(&p.key),
                    p.token,
                    lease,
                    current,
                    start,
                )));
            }
            (Some(expire), _, Some(current)) if granted.is_some() => {
                let s = Arc::new(Status::new(start, Some(current)));
                watchdog::top_up(
                    Arc::clone(p.alias.backend()),
                    p.alias.name(),
                    &p.key,
                    shown.key(&p.key),
                    p.token,
                    start + expire,
                    Arc::clone(&s),
                    start + current / 3,
                );
                let _ = status.set(Box::new(s));
            }
            _ => {}
        }
        Ok(LockGuard {
            head,
            cold,
            start,
            valid_for: current.map_or(NO_VALIDITY, |l| nanos(l.saturating_sub(drift(l)))),
            alias: p.alias,
            key: p.key,
            token: p.token,
            fencing: acquired.fencing.unwrap_or_default(),
            fenced: acquired.fencing.is_some(),
            delete_on_exit: self.delete_on_exit,
            detached,
            status,
            released: false,
            function: self.function,
            held: Held::none(),
        })
    }
}

/// A lease or steal age of the option `name`, within the bounds every store
/// can count.
fn check_duration(name: &'static str, d: Duration) -> Result<(), LockError> {
    lease::check(name, d).map_err(|r| LockError::invalid(name, r))
}

/// An async acquisition whose outcome is not yet known. Dropped (the
/// acquisition was cancelled), it releases by the request's token, which
/// frees the lock if the request won it and does nothing otherwise; this
/// covers every store, whatever its requests were doing when dropped. The
/// backend's future, dropped just before on the same thread, may have said
/// there is nothing to give back (see [`backend::won_nothing`]): then it
/// sends nothing.
///
/// [`backend::won_nothing`]: crate::backend::won_nothing
struct Pending<'a> {
    backend: &'a Arc<dyn crate::backend::Backend>,
    key: &'a str,
    token: Token,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if crate::backend::won_nothing(self.token) {
            return;
        }
        self.backend.give_back_detached(self.key, self.token);
    }
}

fn granted(a: Attempt) -> Option<Acquired> {
    match a {
        Attempt::Acquired(a) => Some(a),
        Attempt::Busy(_) => None,
    }
}

fn busy_is_none(e: LockError) -> Result<Option<LockGuard>, LockError> {
    if e.is_busy() { Ok(None) } else { Err(e) }
}

struct Prepared {
    alias: Alias,
    key: Cow<'static, str>,
    lease: Option<Duration>,
    token: Token,
}

/// What few guards need, behind one pointer that is null for the rest: the
/// guard is built and moved on every acquisition, and each field inline
/// cost its bytes there.
#[derive(Default)]
struct Cold {
    label: Option<Cow<'static, str>>,
    /// An escaped key's own copy, as the user gave it.
    own_key: Option<Box<str>>,
    /// Extensions made while no watchdog status was shared (it counts its own).
    extensions: u64,
}

impl Cold {
    fn of(label: Option<Cow<'static, str>>, own_key: Option<Box<str>>) -> Option<Box<Self>> {
        (label.is_some() || own_key.is_some()).then(|| {
            Box::new(Self {
                label,
                own_key,
                extensions: 0,
            })
        })
    }
}

/// A guard's `valid_for` when it has no lease.
const NO_VALIDITY: u64 = u64::MAX;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .min(NO_VALIDITY - 1)
}

/// A guard's key as the user gave it: the stored name after the namespace's
/// head, or (for an escaped key) a copy of its own.
struct Shown<'a> {
    head: u32,
    cold: &'a Option<Box<Cold>>,
}

impl<'a> Shown<'a> {
    /// The key as the user gave it, from the stored name.
    fn key(&self, stored: &'a str) -> &'a str {
        match self.cold.as_deref().and_then(|c| c.own_key.as_deref()) {
            Some(own) => own,
            None => stored.get(self.head as usize..).unwrap_or_default(),
        }
    }
}

/// Proof that a lock is held; dropping it releases the lock (unless
/// `delete_on_exit(false)`).
///
/// [`release`](Self::release) gives the lock back and reports what happened;
/// a drop reports failures through `tracing` instead. Release and
/// [`extend`](Self::extend) act only while this guard's token still owns the
/// lock, so a guard whose lease ran out can never free the next holder's lock.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{Lock, LockError};
///
/// let mut guard = Lock::new("ledger").expire(Duration::from_secs(5)).acquire().unwrap();
/// assert!(guard.remaining().unwrap() <= Duration::from_secs(5));
/// guard.extend(Duration::from_secs(60)).unwrap();
/// assert!(guard.remaining().unwrap() > Duration::from_secs(5));
/// assert!(!guard.is_lost());
/// guard.release().unwrap();
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    alias: Alias,
    /// The prefixed key as the store knows it.
    key: Cow<'static, str>,
    /// Where the lock's key starts in the stored name (after the
    /// namespace's head), unless `cold` holds a copy of its own.
    head: u32,
    /// The label, an escaped key's copy, extensions: boxed, `None` for most.
    cold: Option<Box<Cold>>,
    token: Token,
    /// The fencing token, if `fenced` (a `u64` and a flag beside the other
    /// flags: 8 bytes less than an `Option<u64>`).
    fencing: u64,
    fenced: bool,
    /// When the request that won the lock was sent.
    start: Instant,
    /// Until when the lock surely is ours, while no watchdog tracks it:
    /// nanoseconds after `start`, or `NO_VALIDITY` (8 bytes, not an
    /// `Option<Instant>`'s 16: the guard is moved on every acquisition).
    valid_for: u64,
    delete_on_exit: bool,
    /// Taken through an async call: a drop must not block the thread.
    detached: bool,
    /// Shared with the watchdog that renews the lease or looks for its loss;
    /// set at acquisition for renewed locks, or by the first `lost()`.
    status: OnceBox<Arc<Status>>,
    released: bool,
    function: Option<&'static str>,
    /// The `lock.held` span and the hold's metrics.
    held: Held,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("alias", &self.alias.name())
            .field("key", &self.key())
            .field("token", &self.token)
            .field("fencing_token", &self.fencing_token())
            .field("label", &self.label())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The lock's key, without the alias prefix.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-guard-key", AliasConfig::memory_named("doc-guard-key").prefix("reports:")).unwrap();
    /// let guard = Lock::new("weekly").alias("doc-guard-key").acquire().unwrap();
    /// assert_eq!(guard.key(), "weekly", "the store sees `reports:weekly`");
    /// ```
    pub fn key(&self) -> &str {
        self.shown().key(&self.key)
    }

    /// Until when the lock surely is ours, while no watchdog tracks it.
    fn valid_until(&self) -> Option<Instant> {
        if self.valid_for == NO_VALIDITY {
            return None;
        }
        // Never past what the clock can count: validity was counted from
        // `start` forward, so this cannot overflow; were it to, the lock
        // would count as lost now rather than panic.
        Some(
            self.start
                .checked_add(Duration::from_nanos(self.valid_for))
                .unwrap_or(self.start),
        )
    }

    fn shown(&self) -> Shown<'_> {
        Shown {
            head: self.head,
            cold: &self.cold,
        }
    }

    /// The [label](Lock::label) the lock was taken with, if any.
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let guard = Lock::new("doc-guard-label").label("reindex").acquire().unwrap();
    /// assert_eq!(guard.label(), Some("reindex"));
    /// assert_eq!(Lock::new("doc-guard-unlabelled").acquire().unwrap().label(), None);
    /// ```
    pub fn label(&self) -> Option<&str> {
        self.cold.as_deref().and_then(|c| c.label.as_deref())
    }

    /// The path of the function whose `#[lock]` took the lock
    /// (`my_crate::jobs::reindex`); `None` for a lock taken by hand.
    ///
    /// ```
    /// use lock_runtime::{lock, Lock, LockError};
    ///
    /// assert_eq!(Lock::new("doc-guard-function").acquire().unwrap().function(), None);
    ///
    /// // Inside a locked function the guard is the macro's, but the path is
    /// // also the `function` field of the `lock.held` span.
    /// #[lock("doc-guard-function-macro")]
    /// fn reindex() -> Result<(), LockError> {
    ///     Ok(())
    /// }
    /// reindex().unwrap();
    /// ```
    pub fn function(&self) -> Option<&'static str> {
        self.function
    }

    /// The guard's `lock.held` span: open while the lock is held, a child
    /// of the span that was current when the acquisition started. The
    /// guard does not enter it; enter it where your own events should nest
    /// inside the hold (`#[lock]` runs the function's body inside it). A
    /// disabled span when no subscriber wants it.
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let guard = Lock::new("doc-guard-span").acquire().unwrap();
    /// guard.span().in_scope(|| {
    ///     tracing::info!("writing the report"); // a child of `lock.held`
    /// });
    /// ```
    pub fn span(&self) -> &tracing::Span {
        self.held.span()
    }

    /// The alias the lock was taken from.
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// let guard = Lock::new("doc-guard-alias").acquire().unwrap();
    /// assert_eq!(guard.alias(), "default");
    /// ```
    pub fn alias(&self) -> &str {
        self.alias.name()
    }

    /// The owner token of this acquisition.
    ///
    /// The store knows the holder by it:
    ///
    /// ```
    /// use lock_runtime::backend::Token;
    /// use lock_runtime::{registry, Lock};
    ///
    /// let guard = Lock::new("doc-guard-token").acquire().unwrap();
    /// let store = registry::alias("default").unwrap().backend().clone();
    /// // A memory alias has no prefix: the store's key is the lock's key.
    /// let holds = |token| store.check("doc-guard-token", token).unwrap().unwrap();
    /// assert!(holds(guard.token()));
    /// assert!(!holds(Token::new()));
    ///
    /// let first = guard.token();
    /// drop(guard);
    /// let again = Lock::new("doc-guard-token").acquire().unwrap();
    /// assert_ne!(again.token(), first, "every acquisition has a token of its own");
    /// ```
    pub fn token(&self) -> Token {
        self.token
    }

    /// A number strictly greater than that of every earlier acquisition of
    /// this key on this store, for stores that keep one (the memory store
    /// does): hand it to the resource you protect so it can reject writes
    /// from a holder whose lock has since passed to someone else.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// // The protected resource remembers the highest token it has seen.
    /// let mut highest = 0;
    /// let mut write = |token: u64| {
    ///     if token < highest {
    ///         return Err("stale holder");
    ///     }
    ///     highest = token;
    ///     Ok(())
    /// };
    ///
    /// let lock = Lock::new("doc-guard-fencing").expire(Duration::from_millis(20));
    /// let slow = lock.acquire().unwrap();
    /// std::thread::sleep(Duration::from_millis(40)); // `slow` stalls past its lease
    /// let next = lock.acquire().unwrap();
    /// assert!(next.fencing_token() > slow.fencing_token());
    ///
    /// write(next.fencing_token().unwrap()).unwrap();
    /// assert_eq!(write(slow.fencing_token().unwrap()), Err("stale holder"));
    /// ```
    pub fn fencing_token(&self) -> Option<u64> {
        self.fenced.then_some(self.fencing)
    }

    /// How long the lock is surely still held: the lease left, measured on
    /// the monotonic clock from when the acquiring request was sent, minus a
    /// drift allowance. `None` for a lock with no lease (held until released).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let leased = Lock::new("doc-guard-remaining").expire(Duration::from_secs(10)).acquire().unwrap();
    /// let left = leased.remaining().unwrap();
    /// assert!(left > Duration::from_secs(9) && left < Duration::from_secs(10));
    ///
    /// // The embedded store holds a lock with no `expire` until it is released.
    /// let unleased = Lock::new("doc-guard-remaining-unleased").acquire().unwrap();
    /// assert_eq!(unleased.remaining(), None);
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        let until = match self.status.get() {
            Some(s) => s.valid_until()?,
            None => self.valid_until()?,
        };
        Some(until.saturating_duration_since(Instant::now()))
    }

    /// True once the lock can no longer be counted on: its lease ran out, a
    /// renewal found it gone, or the store stayed unreachable past the lease.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let guard = Lock::new("doc-guard-is-lost").expire(Duration::from_millis(200)).acquire().unwrap();
    /// assert!(!guard.is_lost());
    /// std::thread::sleep(Duration::from_millis(250));
    /// assert!(guard.is_lost(), "the lease ran out");
    /// ```
    pub fn is_lost(&self) -> bool {
        match self.status.get() {
            Some(s) => s.is_lost(),
            None => self.valid_until().is_some_and(|u| Instant::now() >= u),
        }
    }

    /// A future that resolves once the lock is lost: when its lease runs out
    /// unrenewed (a drift allowance of 1% + 2 ms early, so a new holder may
    /// still find it busy for that long), when a renewal or check finds it deleted or taken over
    /// behind this holder's back, or when the store stays unreachable past
    /// the lease. It never resolves while the lock is held; dropping it
    /// costs nothing. The first call starts checking the lock in the
    /// background (every 250 ms, for stores that can tell).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// # futures::executor::block_on(async {
    /// let guard = Lock::new("lost-demo").expire(Duration::from_millis(50)).acquire_async().await.unwrap();
    /// guard.lost().await; // the lease ran out
    /// assert!(guard.is_lost());
    /// # });
    /// ```
    pub fn lost(&self) -> Lost {
        let status = self.status.get_or_init(|| {
            Box::new(Arc::new(Status::valid_until_then(
                self.start,
                self.valid_until(),
            )))
        });
        // Renewals notice a deleted lock only every third of the lease;
        // someone waiting for the loss wants to know sooner.
        if status.start_checking() {
            watchdog::check(
                Arc::clone(self.alias.backend()),
                self.alias.name(),
                &self.key,
                self.shown().key(&self.key),
                self.token,
                Arc::clone(status),
            );
        }
        Lost::new(Arc::clone(status))
    }

    fn error(&self, op: Operation, source: crate::backend::BackendError) -> LockError {
        LockError::Backend {
            alias: self.alias.name().to_owned(),
            key: self.key().to_owned(),
            op,
            source,
        }
    }

    pub(crate) fn not_held(&self) -> LockError {
        LockError::NotHeld {
            alias: self.alias.name().to_owned(),
            key: self.key().to_owned(),
        }
    }

    /// `delete_on_exit`: whether the end of a locked function gives the lock
    /// back (`__private` ends an `async fn` by awaiting that, not by a drop).
    pub(crate) fn deletes_on_exit(&self) -> bool {
        self.delete_on_exit
    }

    /// Sets the lease to `lease` from now.
    ///
    /// Errors: [`LockError::NotHeld`] when the lock is no longer ours,
    /// [`LockError::InvalidOptions`] for a zero lease, [`LockError::Backend`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-guard-extend").expire(Duration::from_millis(200));
    /// let mut guard = lock.acquire().unwrap();
    /// guard.extend(Duration::from_secs(10)).unwrap();
    /// std::thread::sleep(Duration::from_millis(250));
    /// assert!(!guard.is_lost(), "the new lease replaced the old one");
    /// assert!(lock.try_acquire().unwrap().is_none());
    /// ```
    pub fn extend(&mut self, lease: Duration) -> Result<(), LockError> {
        check_duration("extend", lease)?;
        let sent = Instant::now();
        let outcome = self.alias.backend().extend(&self.key, self.token, lease);
        self.settle(Operation::Extend, outcome)?;
        self.extended(sent, lease);
        Ok(())
    }

    /// The async form of [`extend`](Self::extend).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// futures::executor::block_on(async {
    ///     let lock = Lock::new("doc-guard-extend-async").expire(Duration::from_secs(1));
    ///     let mut guard = lock.acquire_async().await.unwrap();
    ///     guard.extend_async(Duration::from_secs(10)).await.unwrap();
    ///     assert!(guard.remaining().unwrap() > Duration::from_secs(9));
    /// });
    /// ```
    pub async fn extend_async(&mut self, lease: Duration) -> Result<(), LockError> {
        check_duration("extend", lease)?;
        let sent = Instant::now();
        let outcome = self
            .alias
            .backend()
            .extend_async(&self.key, self.token, lease)
            .await;
        self.settle(Operation::Extend, outcome)?;
        self.extended(sent, lease);
        Ok(())
    }

    fn extended(&mut self, sent: Instant, lease: Duration) {
        let until = sent + lease.saturating_sub(drift(lease));
        self.valid_for = nanos(until.saturating_duration_since(self.start));
        match self.status.get() {
            Some(s) => s.renewed(sent, lease),
            None => self.cold.get_or_insert_default().extensions += 1,
        }
    }

    /// Ends the hold's span and metrics. `answer`: what the store said to
    /// the release (`Some(false)`: not ours any more), `None` when it was
    /// not asked or failed.
    fn close_observed(&mut self, answer: Option<bool>) {
        if answer == Some(false) {
            observe::not_held(&self.held, self.alias.name(), self.shown().key(&self.key));
        }
        if !self.held.is_open() {
            return;
        }
        let status = self.status.get();
        let lost = match answer {
            Some(false) => true,
            // Reported lost by the watchdog, though the store still had it
            // (inside the drift allowance): lost, as the guard said.
            Some(true) => status.is_some_and(|s| s.was_marked_lost()),
            None => self.is_lost(),
        };
        // Counted once, whether the watchdog or the release found it.
        let first_report = lost && status.is_none_or(|s| s.mark_lost());
        let extensions = self.cold.as_deref().map_or(0, |c| c.extensions);
        let renewed = extensions + status.map_or(0, |s| s.renewals());
        self.held.close(Closing {
            held_since: self.start,
            renewed,
            lost,
            first_report,
        });
    }

    /// Gives the lock back now and says whether it was still ours.
    ///
    /// Errors: [`LockError::NotHeld`] when the lease had run out or the lock
    /// was taken over (nothing of the new holder's is touched),
    /// [`LockError::Backend`] when the store failed (the lock then frees
    /// itself when its lease ends).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::Lock;
    ///
    /// let lock = Lock::new("doc-guard-release");
    /// lock.acquire().unwrap().release().unwrap();
    /// assert!(lock.try_acquire().unwrap().is_some(), "free again");
    ///
    /// let late = lock.expire(Duration::from_millis(20)).acquire().unwrap();
    /// std::thread::sleep(Duration::from_millis(40));
    /// assert!(late.release().unwrap_err().is_not_held(), "the lease had run out");
    /// ```
    pub fn release(mut self) -> Result<(), LockError> {
        self.stop_watching();
        let outcome = self.alias.backend().release(&self.key, self.token);
        self.close_observed(outcome.as_ref().ok().copied());
        self.settle(Operation::Release, outcome)
    }

    /// The async form of [`release`](Self::release).
    ///
    /// ```
    /// use lock_runtime::Lock;
    ///
    /// futures::executor::block_on(async {
    ///     let lock = Lock::new("doc-guard-release-async");
    ///     let guard = lock.acquire_async().await.unwrap();
    ///     guard.release_async().await.unwrap();
    ///     assert!(lock.try_acquire_async().await.unwrap().is_some(), "free again");
    /// });
    /// ```
    pub async fn release_async(mut self) -> Result<(), LockError> {
        self.stop_watching();
        let outcome = self
            .alias
            .backend()
            .release_async(&self.key, self.token)
            .await;
        self.close_observed(outcome.as_ref().ok().copied());
        self.settle(Operation::Release, outcome)
    }

    /// The guard gives its lock back now (or drops it): no more renewals or
    /// checks, and no second release from `Drop`.
    fn stop_watching(&mut self) {
        self.released = true;
        if let Some(s) = self.status.get() {
            s.mark_released();
        }
    }

    /// A release's or extension's answer as this guard's result: the store
    /// said the lock is not ours, or failed.
    fn settle(
        &self,
        op: Operation,
        outcome: Result<bool, crate::backend::BackendError>,
    ) -> Result<(), LockError> {
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.not_held()),
            Err(e) => Err(self.error(op, e)),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.stop_watching();
        if !self.delete_on_exit {
            self.close_observed(None);
            return;
        }
        if self.detached {
            self.alias.backend().release_detached(&self.key, self.token);
            self.close_observed(None);
            return;
        }
        let outcome = self.alias.backend().release(&self.key, self.token);
        // Not held: reported inside the held span by `close_observed`.
        self.close_observed(outcome.as_ref().ok().copied());
        match outcome {
            Ok(_) => {}
            Err(e) => tracing::error!(
                alias = self.alias.name(),
                key = self.key(),
                error = %e,
                "releasing a dropped lock guard failed; the lock frees itself when its lease ends"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_anything_happens() {
        let cases = [
            (Lock::new(""), "the lock key is empty"),
            (
                Lock::new("k").expire(Duration::ZERO),
                "`expire` must be greater than zero",
            ),
            (
                Lock::new("k").wait_for(Duration::ZERO),
                "`wait_for` must be greater than zero",
            ),
            (
                Lock::new("k").steal_after(Duration::ZERO),
                "`steal_after` must be greater than zero",
            ),
            (
                Lock::new("k").wait(false).wait_for(Duration::from_secs(1)),
                "`wait(false)` never waits",
            ),
            (Lock::new("k").delete_on_exit(false), "needs `expire(...)`"),
        ];
        for (lock, msg) in cases {
            let err = lock.acquire().unwrap_err();
            assert!(matches!(err, LockError::InvalidOptions { .. }), "{err:?}");
            assert!(err.to_string().contains(msg), "{err} does not say {msg}");
        }
    }

    #[test]
    fn unknown_alias_is_reported_with_the_known_ones() {
        let err = Lock::new("k").alias("nowhere").acquire().unwrap_err();
        match err {
            LockError::UnknownAlias { name, known } => {
                assert_eq!(name, "nowhere");
                assert!(known.contains(&"default".to_owned()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wait_false_is_busy_and_wait_for_is_timeout() {
        let held = Lock::new("lock-rs-busy").acquire().unwrap();
        let err = Lock::new("lock-rs-busy").wait(false).acquire().unwrap_err();
        assert!(err.is_busy(), "{err:?}");
        let started = Instant::now();
        let err = Lock::new("lock-rs-busy")
            .wait_for(Duration::from_millis(30))
            .acquire()
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(held.key(), "lock-rs-busy");
    }

    #[test]
    fn release_of_an_expired_lock_is_not_held() {
        let guard = Lock::new("lock-rs-expired")
            .expire(Duration::from_millis(10))
            .acquire()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(guard.is_lost());
        let next = Lock::new("lock-rs-expired").acquire().unwrap();
        assert!(guard.release().unwrap_err().is_not_held());
        assert!(
            Lock::new("lock-rs-expired")
                .try_acquire()
                .unwrap()
                .is_none(),
            "the new holder kept its lock"
        );
        drop(next);
    }

    #[test]
    fn keep_on_exit_holds_until_the_lease_ends() {
        let lock = Lock::new("lock-rs-keep")
            .expire(Duration::from_millis(40))
            .delete_on_exit(false);
        drop(lock.acquire().unwrap());
        assert!(lock.try_acquire().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(50));
        assert!(lock.try_acquire().unwrap().is_some());
    }
}
