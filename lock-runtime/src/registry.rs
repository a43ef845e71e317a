//! Named backend aliases, configured once at start-up the way Django projects
//! name their caches in `CACHES`. Without any configuration the embedded
//! in-memory store serves as the alias `default`.
//!
//! ```
//! use std::time::Duration;
//! use lock_runtime::registry::{self, AliasConfig};
//!
//! registry::configure([
//!     ("default", AliasConfig::memory()),
//!     ("reports", AliasConfig::memory().prefix("reports:").poll_interval(Duration::from_millis(20))),
//! ])
//! .unwrap();
//! assert_eq!(registry::aliases(), ["default", "reports"]);
//! assert_eq!(registry::alias("reports").unwrap().prefix(), "reports:");
//! assert!(registry::alias("nope").unwrap_err().to_string().contains("default, reports"));
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use once_cell::sync::Lazy;

use crate::admin::{Forced, Page};
use crate::backend::kind::{self, Fresh, Opening, StoreKind};
use crate::backend::memory::VirtualClock;
use crate::backend::{Backend, BackendError, Held, Namespace};
use crate::config::{self, Invalid, Setting, redact};
use crate::error::LockError;
use crate::lease;

#[cfg(all(test, shuttle))]
mod model;
#[cfg(all(test, not(shuttle)))]
mod properties;

/// The alias used when a lock names none.
///
/// ```
/// use lock_runtime::registry::{self, DEFAULT_ALIAS};
/// use lock_runtime::Lock;
///
/// let guard = Lock::new("doc-default-alias").acquire().unwrap();
/// assert_eq!(guard.alias(), DEFAULT_ALIAS);
/// assert!(registry::aliases().iter().any(|a| a == DEFAULT_ALIAS), "always configured");
/// ```
pub const DEFAULT_ALIAS: &str = "default";
/// The key prefix of a shared-store alias (Redis) that sets none
/// (django-cache-lock's `DJANGOLOCK_PREFIX`). A memory store is private to
/// the aliases that name it, so its aliases have no prefix unless they set
/// one (to share one store between aliases with separate keys).
///
/// ```
/// use lock_runtime::registry::{AliasConfig, DEFAULT_PREFIX};
///
/// let shared = AliasConfig::from_url("redis://127.0.0.1:6379").unwrap();
/// assert_eq!(shared.get_prefix(), DEFAULT_PREFIX);
/// assert_eq!(AliasConfig::memory().get_prefix(), "");
/// ```
pub const DEFAULT_PREFIX: &str = "lock:";
/// How often a backend that cannot be woken looks again at a busy lock
/// (django-cache-lock's `DJANGOLOCK_SLEEP`), unless the alias sets its own.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig, DEFAULT_POLL_INTERVAL};
///
/// assert_eq!(AliasConfig::memory().get_poll_interval(), DEFAULT_POLL_INTERVAL);
/// assert_eq!(registry::alias("default").unwrap().poll_interval(), DEFAULT_POLL_INTERVAL);
/// ```
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
pub use crate::lease::DEFAULT_LEASE;
/// The prefix of the environment variables read by [`configure_from_env`].
///
/// [`configure_from_env`] replaces every alias. To add aliases from the
/// environment to those configured in code instead:
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig, ENV_PREFIX};
///
/// // As `std::env::vars()` would yield them:
/// let vars = [("LOCK_ALIAS_DOC_REPORTS", "memory://reports?prefix=r:"), ("HOME", "/root")];
/// for (var, url) in vars {
///     if let Some(name) = var.strip_prefix(ENV_PREFIX) {
///         registry::add(name.to_ascii_lowercase(), AliasConfig::from_url(url).unwrap()).unwrap();
///     }
/// }
/// assert_eq!(registry::alias("doc_reports").unwrap().prefix(), "r:");
/// ```
pub const ENV_PREFIX: &str = "LOCK_ALIAS_";

/// How to build one alias: which store, and the alias settings.
///
/// Build it with a constructor ([`memory`](Self::memory),
/// [`from_url`](Self::from_url), [`custom`](Self::custom), ...) and adjust it
/// with the setters; [`configure`] checks it.
///
/// URL forms (settings may follow as a query string: `prefix`, `poll_ms`,
/// `lease_ms`, `connect_timeout_ms`, `timeout_ms`, and `tls_ca` for
/// `rediss://`):
///
/// | URL | store |
/// |---|---|
/// | `memory://` or `memory://NAME` | the in-process store called `NAME` (`default`) |
/// | `redis://[user:password@]host[:port][/db]` | one Redis server (feature `redis`) |
/// | `rediss://...` | the same over TLS (feature `tls`) |
/// | `redis+unix:///path/to/socket[?db=N]` | Redis over a Unix socket |
/// | `redis+quorum://[user:password@]host1[:port],host2,host3[/db]` | a quorum (Redlock) of independent servers |
/// | `sqlite:///abs/path.db` or `sqlite://relative/path.db` | a lock table in a SQLite file, for the processes of one host (feature `sqlite`) |
/// | `postgres://[user[:password]@]host[:port]/db` (or `postgresql://`) | a lease table in a Postgres database (feature `postgres`) |
/// | `file:///abs/dir` or `file://relative/dir` | one lock file per key in a local directory (feature `file`) |
/// | `memcache://host:port[,host:port...]` | one or more memcached servers (feature `memcache`) |
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::registry::AliasConfig;
///
/// let cfg = AliasConfig::from_url("memory://jobs?prefix=jobs:&poll_ms=25").unwrap();
/// assert_eq!(cfg.get_prefix(), "jobs:");
/// assert_eq!(cfg.get_poll_interval(), Duration::from_millis(25));
/// assert!(AliasConfig::from_url("ftp://x").is_err());
/// ```
#[derive(Clone)]
pub struct AliasConfig {
    pub(crate) store: Store,
    pub(crate) prefix: String,
    pub(crate) poll_interval: Duration,
    pub(crate) lease: Option<Option<Duration>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    /// PEM certificates to trust for `rediss://`, besides the system's.
    pub(crate) tls_ca: Option<Vec<u8>>,
}

#[derive(Clone)]
pub(crate) enum Store {
    /// A store of a kind in the table, and where it is.
    Kind {
        kind: &'static StoreKind,
        at: Vec<String>,
    },
    Custom(Arc<dyn Backend>),
    /// A store this build cannot open (its cargo feature is off): why.
    Missing(String),
}

impl fmt::Debug for AliasConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = match &self.store {
            Store::Kind { kind, at } => format!(
                "{} {}",
                kind.name,
                at.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
            ),
            Store::Custom(_) => "custom".to_owned(),
            Store::Missing(why) => why.clone(),
        };
        f.debug_struct("AliasConfig")
            .field("store", &store)
            .field("prefix", &self.prefix)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl AliasConfig {
    fn with_store(store: Store) -> Self {
        let prefix = match &store {
            Store::Kind { kind, .. } => kind.default_prefix,
            _ => DEFAULT_PREFIX,
        };
        Self {
            store,
            prefix: prefix.to_owned(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            lease: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            tls_ca: None,
        }
    }

    /// The in-process store called `default`: locks are shared by the
    /// threads and tasks of this process. Its locks have no lease unless the
    /// lock sets `expire` (a holder cannot die without its store).
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-config-memory", AliasConfig::memory()).unwrap();
    /// // The store of `default`: the same key is the same lock.
    /// let _held = Lock::new("doc-config-memory-k").acquire().unwrap();
    /// let other = Lock::new("doc-config-memory-k").alias("doc-config-memory");
    /// assert!(other.try_acquire().unwrap().is_none());
    /// ```
    pub fn memory() -> Self {
        Self::memory_named(DEFAULT_ALIAS)
    }

    /// The in-process store called `name`; every alias naming it shares it.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-config-named", AliasConfig::memory_named("doc-config-named")).unwrap();
    /// let _held = Lock::new("doc-config-named-k").alias("doc-config-named").acquire().unwrap();
    /// assert!(
    ///     Lock::new("doc-config-named-k").try_acquire().unwrap().is_some(),
    ///     "`default` is another store"
    /// );
    /// ```
    pub fn memory_named(name: impl Into<String>) -> Self {
        Self::with_store(Store::Kind {
            kind: &crate::backend::memory::KIND,
            at: vec![name.into()],
        })
    }

    /// One Redis server, from a `redis://`, `rediss://` or `redis+unix://`
    /// URL. Needs the `redis` feature (on by default). Nothing connects
    /// until the first lock; a malformed URL fails [`configure`].
    ///
    /// ```
    /// # #[cfg(feature = "redis")] {
    /// use lock_runtime::registry::AliasConfig;
    /// let cfg = AliasConfig::redis("redis://127.0.0.1:6379/2").prefix("app:");
    /// assert_eq!(cfg.get_prefix(), "app:");
    /// # }
    /// ```
    pub fn redis(url: impl Into<String>) -> Self {
        let url = url.into();
        let scheme = url.split_once("://").map_or("redis", |(s, _)| s);
        Self::with_store(match kind::by_scheme(scheme) {
            Ok(kind) => Store::Kind {
                kind,
                at: vec![url],
            },
            Err(why) => Store::Missing(why),
        })
    }

    /// A quorum of independent Redis servers (Redlock): a lock is held when a
    /// majority of them granted it within its validity, so the alias keeps
    /// working with a minority of the nodes down. At least 3 nodes; give an
    /// odd number. Each node is bounded by the alias's command timeout.
    ///
    /// ```
    /// # #[cfg(feature = "redis")] {
    /// use lock_runtime::registry::AliasConfig;
    /// let cfg = AliasConfig::quorum(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"]);
    /// # }
    /// ```
    pub fn quorum<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let at = urls.into_iter().map(Into::into).collect();
        Self::with_store(match kind::by_scheme("redis+quorum") {
            Ok(kind) => Store::Kind { kind, at },
            Err(why) => Store::Missing(why),
        })
    }

    /// Your own blocking [`Store`](crate::backend::Store): the runtime
    /// derives its async form, waits, renews and cancels. Its locks get
    /// [`DEFAULT_LEASE`] unless the store names the
    /// [`Unleased`](crate::backend::Unleased) ability or the alias sets
    /// [`default_lease`](Self::default_lease). A complete store is shown in
    /// the [`backend`](crate::backend) module.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use lock_runtime::backend::{Attempt, BackendError, Busy, Request, Store, Token};
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
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
    /// registry::add("doc-config-store", AliasConfig::store(Arc::new(Closed))).unwrap();
    /// assert!(Lock::new("k").alias("doc-config-store").try_acquire().unwrap().is_none());
    /// ```
    pub fn store<S: crate::backend::Store>(store: Arc<S>) -> Self {
        Self::custom(crate::backend::blocking(store))
    }

    /// Your own [`AsyncStore`](crate::backend::AsyncStore): the runtime
    /// derives its blocking form (no async runtime needed by sync callers),
    /// waits, renews and cancels. A complete store is shown in the
    /// [`backend`](crate::backend) module.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use lock_runtime::backend::{AsyncStore, Attempt, BackendError, BoxFuture, Busy, Request, Token};
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
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
    /// registry::add("doc-config-async-store", AliasConfig::async_store(Arc::new(Closed))).unwrap();
    /// assert!(Lock::new("k").alias("doc-config-async-store").try_acquire().unwrap().is_none());
    /// ```
    pub fn async_store<S: crate::backend::AsyncStore>(store: Arc<S>) -> Self {
        Self::custom(crate::backend::non_blocking(store))
    }

    /// A store as the runtime drives it (a [`Backend`]): a built-in store you
    /// keep a handle on, or one made with
    /// [`backend::blocking`](crate::backend::blocking) /
    /// [`backend::non_blocking`](crate::backend::non_blocking). Its locks get
    /// [`DEFAULT_LEASE`] unless the backend
    /// [supports unleased locks](Backend::supports_unleased) or the alias
    /// sets [`default_lease`](Self::default_lease).
    ///
    /// Here, a private memory store the code keeps a handle on:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lock_runtime::backend::memory::MemoryBackend;
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// let store = Arc::new(MemoryBackend::new());
    /// registry::add("doc-config-custom", AliasConfig::custom(store.clone())).unwrap();
    /// let _guard = Lock::new("k").alias("doc-config-custom").acquire().unwrap();
    /// assert_eq!(store.held(), 1);
    /// ```
    pub fn custom(backend: Arc<dyn Backend>) -> Self {
        Self::with_store(Store::Custom(backend))
    }

    /// An alias from its URL (see the table above), settings included.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// let cfg = AliasConfig::from_url("memory://jobs?prefix=jobs:&lease_ms=5000").unwrap();
    /// registry::add("doc-from-url", cfg).unwrap();
    /// let alias = registry::alias("doc-from-url").unwrap();
    /// assert_eq!(alias.prefix(), "jobs:");
    /// assert_eq!(alias.default_lease(), Some(Duration::from_secs(5)));
    ///
    /// // Passwords never show in `Debug` or in error messages.
    /// let cfg = AliasConfig::from_url("redis://app:hunter2@10.0.0.5:6379/2?timeout_ms=500").unwrap();
    /// assert!(!format!("{cfg:?}").contains("hunter2"));
    ///
    /// let err = AliasConfig::from_url("memory://?poll_ms=0").unwrap_err();
    /// assert!(err.to_string().contains("positive number of milliseconds"));
    /// ```
    pub fn from_url(url: &str) -> Result<Self, LockError> {
        let invalid = |e: Invalid| LockError::config("", e.setting, e.reason);
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let (scheme, _) = base.split_once("://").ok_or_else(|| {
            LockError::config(
                "",
                "url",
                format!("`{}` is not a URL: expected `scheme://...`", redact(url)),
            )
        })?;
        let kind = kind::by_scheme(scheme).map_err(|r| LockError::config("", "url", r))?;
        let at = (kind.locate)(base).map_err(|r| LockError::config("", "url", r))?;
        let mut cfg = Self::with_store(Store::Kind { kind, at });
        let settings = match query {
            Some(q) => config::settings(q, kind.name, kind.settings).map_err(invalid)?,
            None => Vec::new(),
        };
        // Settings the store reads from its own URL go back into it.
        let mut kept = Vec::new();
        for setting in &settings {
            if kind.passed_on.contains(&setting.name.as_str()) {
                kept.push(setting.raw.as_str());
            } else {
                cfg = cfg.apply(setting).map_err(invalid)?;
            }
        }
        if let (Store::Kind { at, .. }, false) = (&mut cfg.store, kept.is_empty()) {
            for url in at {
                url.push('?');
                url.push_str(&kept.join("&"));
            }
        }
        Ok(cfg)
    }

    fn apply(mut self, setting: &Setting) -> Result<Self, Invalid> {
        match setting.name.as_str() {
            "prefix" => self.prefix = setting.value.clone(),
            "poll_ms" => self.poll_interval = setting.millis()?,
            "lease_ms" => self.lease = Some(Some(setting.millis()?)),
            "connect_timeout_ms" => self.connect_timeout = setting.millis()?,
            "timeout_ms" => self.command_timeout = setting.millis()?,
            "tls_ca" => {
                let v = &setting.value;
                let pem = std::fs::read(v).map_err(|e| {
                    Invalid::new(
                        "tls_ca",
                        format!("`tls_ca={v}`: cannot read the certificate file: {e}"),
                    )
                })?;
                self.tls_ca = Some(pem);
            }
            // `config::settings` lets through only the names listed for the
            // scheme, each handled above or passed on to the store's URL.
            other => {
                return Err(Invalid::new(
                    other,
                    format!("`{other}` is not handled here"),
                ));
            }
        }
        Ok(self)
    }

    /// The prefix put before every key of this alias, so that aliases
    /// sharing a store never see each other's locks (default `lock:`; none
    /// for memory stores, which only the aliases naming them share).
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// // Two aliases on one store, with separate keys:
    /// registry::add("doc-prefix-a", AliasConfig::memory_named("doc-prefix").prefix("a:")).unwrap();
    /// registry::add("doc-prefix-b", AliasConfig::memory_named("doc-prefix").prefix("b:")).unwrap();
    /// let _a = Lock::new("k").alias("doc-prefix-a").acquire().unwrap();
    /// assert!(Lock::new("k").alias("doc-prefix-b").try_acquire().unwrap().is_some(), "b:k is not a:k");
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often a waiter looks again when the store cannot wake it
    /// (default 100 ms, with ±50% jitter).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// let cfg = AliasConfig::memory().poll_interval(Duration::from_millis(20));
    /// assert_eq!(cfg.get_poll_interval(), Duration::from_millis(20));
    /// assert!(registry::add("doc-poll", cfg.poll_interval(Duration::ZERO)).is_err(), "zero is refused");
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The lease of locks that set no `expire`. They are renewed every third
    /// of it while held, so a crashed holder frees its lock within one lease.
    /// Default: none for memory stores, [`DEFAULT_LEASE`] for the others.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// let cfg = AliasConfig::memory_named("doc-lease").default_lease(Duration::from_secs(10));
    /// registry::add("doc-lease", cfg).unwrap();
    /// let renewed = Lock::new("a").alias("doc-lease").acquire().unwrap();
    /// assert!(renewed.remaining().unwrap() <= Duration::from_secs(10));
    /// // A lock's own `expire` wins.
    /// let fixed = Lock::new("b").alias("doc-lease").expire(Duration::from_secs(1)).acquire().unwrap();
    /// assert!(fixed.remaining().unwrap() <= Duration::from_secs(1));
    /// ```
    pub fn default_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(Some(lease));
        self
    }

    /// How long connecting to a network store may take (default 2 s).
    ///
    /// With no server listening, an acquisition fails within it:
    ///
    /// ```
    /// # #[cfg(feature = "redis")] {
    /// use std::time::{Duration, Instant};
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::{Lock, LockError};
    ///
    /// let cfg = AliasConfig::from_url("redis://127.0.0.1:1").unwrap();
    /// registry::add("doc-connect", cfg.connect_timeout(Duration::from_millis(300))).unwrap();
    /// let started = Instant::now();
    /// match Lock::new("k").alias("doc-connect").acquire() {
    ///     Err(LockError::Backend { source, .. }) => assert!(source.is_connection() || source.is_timeout()),
    ///     other => panic!("no server there: {other:?}"),
    /// }
    /// assert!(started.elapsed() < Duration::from_secs(2));
    /// # }
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command to a network store may take (default 2 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// let cfg = AliasConfig::from_url("redis://127.0.0.1:6379").unwrap();
    /// // The same as `redis://127.0.0.1:6379?timeout_ms=500`:
    /// let cfg = cfg.command_timeout(Duration::from_millis(500));
    /// // Checked when the alias is added (which does not connect yet):
    /// assert!(registry::add("doc-command-timeout", cfg.command_timeout(Duration::ZERO)).is_err());
    /// ```
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Certificates (PEM) to trust for a `rediss://` alias, besides the
    /// system's: a private CA, or a self-signed server certificate. In a URL:
    /// `tls_ca=/path/to/ca.pem`. Needs the `tls` feature.
    ///
    /// ```no_run
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// let ca = std::fs::read("/etc/redis/tls/ca.pem").unwrap();
    /// let cfg = AliasConfig::from_url("rediss://redis.internal:6380").unwrap().tls_root_cert(ca);
    /// registry::add("secure", cfg).unwrap();
    /// let guard = Lock::new("invoice-7").alias("secure").acquire().unwrap();
    /// ```
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// The configured prefix.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    ///
    /// assert_eq!(AliasConfig::memory().prefix("jobs:").get_prefix(), "jobs:");
    /// ```
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The configured poll interval.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::AliasConfig;
    ///
    /// let cfg = AliasConfig::from_url("memory://?poll_ms=25").unwrap();
    /// assert_eq!(cfg.get_poll_interval(), Duration::from_millis(25));
    /// ```
    pub fn get_poll_interval(&self) -> Duration {
        self.poll_interval
    }

    fn check(&self) -> Result<(), Invalid> {
        for (name, d) in [
            ("poll_interval", Some(self.poll_interval)),
            ("connect_timeout", Some(self.connect_timeout)),
            ("command_timeout", Some(self.command_timeout)),
            ("default_lease", self.lease.flatten()),
        ] {
            if let Some(d) = d {
                lease::check(name, d).map_err(|r| Invalid::new(name, r))?;
            }
        }
        Ok(())
    }
}

/// A configured alias: its name, settings and store. Cheap to clone.
///
/// ```
/// let default = lock_runtime::registry::alias("default").unwrap();
/// assert_eq!(default.name(), "default");
/// assert_eq!(default.prefix(), "", "a memory store needs no prefix");
/// ```
#[derive(Clone)]
pub struct Alias(pub(crate) Shared);

/// An alias's settings and store, shared by the registry, lookups and
/// guards. The process's built-in default lives as long as the process and
/// is lent without a reference count (its two atomic updates were a tenth
/// of an uncontended in-memory lock); any other alias is counted. One
/// pointer wide: a guard of more than 128 bytes is moved by a call to
/// `memcpy` rather than inline.
#[derive(Clone)]
pub(crate) struct Shared(Option<Arc<AliasInner>>);

impl Shared {
    /// The built-in default alias.
    const BUILTIN: Self = Self(None);
}

impl std::ops::Deref for Shared {
    type Target = AliasInner;

    fn deref(&self) -> &AliasInner {
        match &self.0 {
            Some(inner) => inner,
            None => &BUILTIN,
        }
    }
}

pub(crate) struct AliasInner {
    pub(crate) name: String,
    pub(crate) namespace: Namespace,
    pub(crate) poll_interval: Duration,
    pub(crate) lease: Option<Duration>,
    pub(crate) backend: Arc<dyn Backend>,
    /// What it was built from: an isolation scope builds its own from it.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) config: AliasConfig,
}

impl fmt::Debug for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alias")
            .field("name", &self.0.name)
            .field("prefix", &self.0.namespace.prefix())
            .field("poll_interval", &self.0.poll_interval)
            .field("default_lease", &self.0.lease)
            .finish_non_exhaustive()
    }
}

impl Alias {
    #[cfg(test)]
    fn build(name: &str, cfg: AliasConfig) -> Result<Self, LockError> {
        Self::build_in(name, cfg, None, false)
    }

    /// The alias `name` of the process, or of an isolation `scope`.
    /// `inherited`: the scope copies an alias configured outside it.
    fn build_in(
        name: &str,
        cfg: AliasConfig,
        scope: Option<&Scope>,
        inherited: bool,
    ) -> Result<Self, LockError> {
        Self::inner(name, cfg, scope, inherited).map(|inner| Self(Shared(Some(Arc::new(inner)))))
    }

    /// What [`build_in`](Self::build_in) shares.
    fn inner(
        name: &str,
        cfg: AliasConfig,
        scope: Option<&Scope>,
        inherited: bool,
    ) -> Result<AliasInner, LockError> {
        cfg.check()
            .map_err(|e| LockError::config(name, e.setting, e.reason))?;
        // The store's URL (or its nodes') could not be used.
        let invalid = |reason: String| LockError::config(name, "url", reason);
        // In a scope, a store others reach too is traded for the scope's
        // own: a named memory store for a fresh one, a shared store for a
        // namespace of the scope's on it. A store a test passed in from
        // inside the scope is its own already.
        let prefix = match (&cfg.store, scope) {
            (Store::Kind { kind, .. }, Some(s)) if kind.fresh.is_none() => {
                Cow::Owned(s.prefix(&cfg.prefix))
            }
            (Store::Custom(_), Some(s)) if inherited => Cow::Owned(s.prefix(&cfg.prefix)),
            _ => Cow::Borrowed(cfg.prefix.as_str()),
        };
        let backend: Arc<dyn Backend> = match (&cfg.store, scope) {
            (Store::Kind { kind, at }, Some(s)) if let Some(fresh) = kind.fresh => {
                s.fresh(kind, at, fresh)
            }
            (Store::Kind { kind, at }, _) => (kind.open)(
                at,
                &Opening {
                    prefix: &prefix,
                    connect_timeout: cfg.connect_timeout,
                    command_timeout: cfg.command_timeout,
                    tls_ca: cfg.tls_ca.as_deref(),
                },
            )
            .map_err(invalid)?,
            (Store::Custom(b), _) => Arc::clone(b),
            (Store::Missing(why), _) => return Err(invalid(why.clone())),
        };
        let namespace = Namespace::new(&prefix);
        let lease = match cfg.lease {
            Some(lease) => lease,
            None if backend.supports_unleased() => None,
            None => Some(DEFAULT_LEASE),
        };
        Ok(AliasInner {
            name: name.to_owned(),
            namespace,
            poll_interval: cfg.poll_interval,
            lease,
            backend,
            config: cfg,
        })
    }

    /// The alias's name.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// registry::add("doc-alias-name", AliasConfig::memory()).unwrap();
    /// assert_eq!(registry::alias("doc-alias-name").unwrap().name(), "doc-alias-name");
    /// ```
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The prefix put before every key.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// registry::add("doc-alias-prefix", AliasConfig::memory().prefix("reports:")).unwrap();
    /// assert_eq!(registry::alias("doc-alias-prefix").unwrap().prefix(), "reports:");
    /// ```
    pub fn prefix(&self) -> &str {
        self.0.namespace.prefix()
    }

    /// How the alias's keys become the names its store keeps: the
    /// namespace of its [`prefix`](Self::prefix). What
    /// [`backend`](Self::backend)'s methods take for a lock's key.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// registry::add("doc-alias-namespace", AliasConfig::memory().prefix("jobs:")).unwrap();
    /// let alias = registry::alias("doc-alias-namespace").unwrap();
    /// assert_eq!(alias.namespace().key("rebuild".into()), "jobs:rebuild");
    /// ```
    pub fn namespace(&self) -> &Namespace {
        &self.0.namespace
    }

    /// The poll interval of waiters that cannot be woken.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// registry::add("doc-alias-poll", AliasConfig::from_url("memory://?poll_ms=25").unwrap()).unwrap();
    /// assert_eq!(registry::alias("doc-alias-poll").unwrap().poll_interval(), Duration::from_millis(25));
    /// ```
    pub fn poll_interval(&self) -> Duration {
        self.0.poll_interval
    }

    /// The lease of locks that set no `expire`; `None`: held until released.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// assert_eq!(registry::alias("default").unwrap().default_lease(), None);
    /// registry::add("doc-alias-lease", AliasConfig::memory().default_lease(Duration::from_secs(10))).unwrap();
    /// assert_eq!(
    ///     registry::alias("doc-alias-lease").unwrap().default_lease(),
    ///     Some(Duration::from_secs(10))
    /// );
    /// ```
    pub fn default_lease(&self) -> Option<Duration> {
        self.0.lease
    }

    /// The locks of this alias held now, each with its own key (the alias
    /// prefix taken off) and what the store knows of it: how long it has
    /// been held, its lease left, its fencing token, how many wait for it.
    /// `Ok(None)` when the store cannot list its locks.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-holders", AliasConfig::memory_named("doc-holders").prefix("jobs:")).unwrap();
    /// let _guard = Lock::new("import").alias("doc-holders").acquire().unwrap();
    /// let held = registry::alias("doc-holders").unwrap().holders().unwrap().unwrap();
    /// assert_eq!(held.len(), 1);
    /// assert_eq!(held[0].key, "import");
    /// assert_eq!(held[0].lease_left, None, "held until released");
    /// ```
    ///
    /// # Errors
    /// [`LockError::Backend`] when the store failed.
    pub fn holders(&self) -> Result<Option<Vec<Held>>, LockError> {
        let ns = &self.0.namespace;
        let held = self.0.backend.holders(ns).transpose();
        let held = held.map_err(|e| self.failed(crate::Operation::List, "", e))?;
        Ok(held.map(|held| {
            held.into_iter()
                .filter_map(|mut h| {
                    h.key = ns.key_of(&h.key)?;
                    Some(h)
                })
                .collect()
        }))
    }

    /// Deletes the records of this alias's stale locks: those whose lease
    /// ended more than `grace` ago (djangae's cron clean-up), and answers how
    /// many; `Ok(None)` when the store keeps no records past a lease (memory,
    /// Redis: nothing to clean). Safe to run while others lock; run it on a
    /// schedule (a cron job, a periodic task) for stores that keep rows or
    /// files.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::registry;
    ///
    /// let alias = registry::alias("default").unwrap();
    /// assert_eq!(alias.clean_up(Duration::from_secs(60)).unwrap(), None);
    /// ```
    ///
    /// # Errors
    /// [`LockError::Backend`] (with [`Operation::CleanUp`](crate::Operation::CleanUp))
    /// when the store failed.
    pub fn clean_up(&self, grace: Duration) -> Result<Option<u64>, LockError> {
        let cleaned = self.0.backend.clean_up(grace).transpose();
        cleaned.map_err(|e| self.failed(crate::Operation::CleanUp, "", e))
    }

    /// One page of this alias's held locks whose own keys start with
    /// `prefix` (`""`: all), in the order of their keys within the page
    /// (and across pages, except on Redis, whose `SCAN` has no order), each
    /// with what the
    /// store knows of it ([`Held`]: its owner, when it was acquired, lease
    /// left, fencing token, waiters). Give `next` of a page back as `cursor`
    /// for the page after it (`None`: the first page); a page holds at most
    /// `limit` locks (at least 1), and may hold fewer with more to come.
    /// `Ok(None)` when the store cannot list its locks (memcached, a quorum).
    ///
    /// A store that pages by itself (memory, Redis with `SCAN`, never
    /// `KEYS`) reads one bounded step per page; a store that can only list
    /// everything ([`Listing`](crate::backend::Listing)) is listed whole and
    /// cut into pages here.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-list", AliasConfig::memory_named("doc-list").prefix("jobs:")).unwrap();
    /// let alias = registry::alias("doc-list").unwrap();
    /// let _guards: Vec<_> = ["import-1", "import-2", "import-3", "export"]
    ///     .into_iter()
    ///     .map(|k| Lock::new(k).alias("doc-list").acquire().unwrap())
    ///     .collect();
    /// let first = alias.list("import-", None, 2).unwrap().unwrap();
    /// assert_eq!(first.held.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(), ["import-1", "import-2"]);
    /// let second = alias.list("import-", first.next.as_deref(), 2).unwrap().unwrap();
    /// assert_eq!(second.held[0].key, "import-3");
    /// assert_eq!(second.next, None, "the last page");
    /// ```
    ///
    /// # Errors
    /// [`LockError::Backend`] (with [`Operation::List`](crate::Operation::List))
    /// when the store failed.
    pub fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page>, LockError> {
        let ns = &self.0.namespace;
        let limit = limit.max(1);
        let stored = ns.key(prefix.into());
        match self.0.backend.list(ns, &stored, cursor, limit) {
            Some(Err(e)) if e.kind() == crate::backend::BackendErrorKind::Unsupported => Ok(None),
            Some(page) => {
                let page = page.map_err(|e| self.failed(crate::Operation::List, "", e))?;
                let held = page
                    .held
                    .into_iter()
                    .filter_map(|mut h| {
                        h.key = ns.key_of(&h.key)?;
                        h.key.starts_with(prefix).then_some(h)
                    })
                    .collect();
                Ok(Some(Page::new(held, page.next)))
            }
            None => {
                // Listed whole, cut here: the cursor is the last key given.
                let Some(mut all) = self.holders()? else {
                    return Ok(None);
                };
                all.retain(|h| h.key.starts_with(prefix) && cursor.is_none_or(|c| *h.key > *c));
                all.sort_by(|a, b| a.key.cmp(&b.key));
                let more = all.len() > limit;
                all.truncate(limit);
                let next = if more {
                    all.last().map(|h| h.key.clone())
                } else {
                    None
                };
                Ok(Some(Page::new(all, next)))
            }
        }
    }

    /// The lock `key` (its own key, the alias prefix off) with what the
    /// store knows of it, if it is held now; `Ok(None)` when it is free.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-show", AliasConfig::memory_named("doc-show")).unwrap();
    /// let alias = registry::alias("doc-show").unwrap();
    /// let guard = Lock::new("report").alias("doc-show").label("cron").acquire().unwrap();
    /// let held = alias.show("report").unwrap().unwrap();
    /// assert_eq!(held.fencing, guard.fencing_token());
    /// assert_eq!(held.owner.unwrap().label.as_deref(), Some("cron"));
    /// drop(guard);
    /// assert!(alias.show("report").unwrap().is_none());
    /// ```
    ///
    /// # Errors
    /// [`LockError::Unsupported`] when the store can neither show nor list
    /// its locks (memcached, a quorum); [`LockError::Backend`] (with
    /// [`Operation::Show`](crate::Operation::Show)) when it failed.
    pub fn show(&self, key: &str) -> Result<Option<Held>, LockError> {
        let ns = &self.0.namespace;
        let stored = ns.key(key.into());
        match self.0.backend.show(&stored) {
            Some(held) => {
                let held = held.map_err(|e| self.failed(crate::Operation::Show, key, e))?;
                Ok(held.map(|mut h| {
                    h.key = key.to_owned();
                    h
                }))
            }
            None => match self.holders() {
                Ok(Some(all)) => Ok(all.into_iter().find(|h| h.key == key)),
                Ok(None) => Err(self.unsupported("show a lock's holder: it cannot list its locks")),
                Err(LockError::Backend { source, .. }) => {
                    Err(self.failed(crate::Operation::Show, key, source))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Releases the lock `key` whoever holds it, for a holder that is stuck
    /// or gone: an administrator's tool. The forced-out holder finds its
    /// lock lost on its next renewal or check ([`LockGuard::lost`](crate::LockGuard::lost)
    /// resolves, its release answers [`LockError::NotHeld`]); a waiter gets
    /// the lock with a higher fencing token. The store records who forced
    /// it (this process, with `$USER`), when, why and which holder it
    /// removed in its bounded audit log ([`audit_log`](Self::audit_log)),
    /// and the runtime emits a `WARN` event `lock.forced_release` (and,
    /// with feature `metrics`, counts `lock_forced_releases_total`). A free
    /// lock is recorded too, with `removed: None`.
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    /// use lock_runtime::Lock;
    ///
    /// registry::add("doc-force", AliasConfig::memory_named("doc-force")).unwrap();
    /// let alias = registry::alias("doc-force").unwrap();
    /// let stuck = Lock::new("report").alias("doc-force").acquire().unwrap();
    /// let forced = alias.force_release("report", "worker hung").unwrap();
    /// assert_eq!(forced.removed.unwrap().fencing, stuck.fencing_token());
    /// let next = Lock::new("report").alias("doc-force").try_acquire().unwrap().unwrap();
    /// assert!(next.fencing_token() > stuck.fencing_token());
    /// assert!(stuck.release().unwrap_err().is_not_held());
    /// ```
    ///
    /// # Errors
    /// [`LockError::Unsupported`] when the store cannot release a lock it
    /// does not hold (the file store: the kernel holds it for its process;
    /// the message names that process); [`LockError::Backend`] (with
    /// [`Operation::ForceRelease`](crate::Operation::ForceRelease)) when it
    /// failed.
    pub fn force_release(&self, key: &str, reason: &str) -> Result<Forced, LockError> {
        let ns = &self.0.namespace;
        let entry = Forced::by_this_process(ns.key(key.into()).into_owned(), reason);
        let Some(forced) = self.0.backend.force_release(ns, entry) else {
            return Err(self.unsupported("release a lock it does not hold"));
        };
        let mut forced = forced.map_err(|e| self.failed(crate::Operation::ForceRelease, key, e))?;
        forced.key = key.to_owned();
        if let Some(removed) = &mut forced.removed {
            removed.key = key.to_owned();
        }
        crate::observe::forced_release(&self.0.name, &forced);
        Ok(forced)
    }

    /// The newest `limit` forced releases of this alias's locks, newest
    /// first, from the store's bounded audit log (its last
    /// [`AUDIT_LOG_LEN`](crate::admin::AUDIT_LOG_LEN) entries).
    ///
    /// ```
    /// use lock_runtime::registry::{self, AliasConfig};
    ///
    /// registry::add("doc-audit", AliasConfig::memory_named("doc-audit")).unwrap();
    /// let alias = registry::alias("doc-audit").unwrap();
    /// alias.force_release("a", "first").unwrap();
    /// alias.force_release("b", "second").unwrap();
    /// let log = alias.audit_log(10).unwrap();
    /// assert_eq!(log.iter().map(|f| f.reason.as_str()).collect::<Vec<_>>(), ["second", "first"]);
    /// ```
    ///
    /// # Errors
    /// [`LockError::Unsupported`] when the store keeps no audit log;
    /// [`LockError::Backend`] (with [`Operation::AuditLog`](crate::Operation::AuditLog))
    /// when it failed.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<Forced>, LockError> {
        let ns = &self.0.namespace;
        let Some(log) = self.0.backend.audit_log(ns, limit) else {
            return Err(self.unsupported("keep an audit log of forced releases"));
        };
        let log = log.map_err(|e| self.failed(crate::Operation::AuditLog, "", e))?;
        Ok(log
            .into_iter()
            .filter_map(|mut f| {
                f.key = ns.key_of(&f.key)?;
                if let Some(removed) = &mut f.removed {
                    removed.key = f.key.clone();
                }
                Some(f)
            })
            .take(limit)
            .collect())
    }

    fn unsupported(&self, what: &str) -> LockError {
        LockError::Unsupported {
            alias: self.0.name.clone(),
            what: what.to_owned(),
        }
    }

    /// The error of an admin operation whose store failed, or said it
    /// cannot do it.
    fn failed(&self, op: crate::Operation, key: &str, source: BackendError) -> LockError {
        if source.kind() == crate::backend::BackendErrorKind::Unsupported {
            return LockError::Unsupported {
                alias: self.0.name.clone(),
                what: source.inner().to_string(),
            };
        }
        LockError::Backend {
            alias: self.0.name.clone(),
            key: key.to_owned(),
            op,
            source,
        }
    }

    /// The store behind the alias.
    ///
    /// Its methods take keys as the store keeps them, which the alias's
    /// [`namespace`](Self::namespace) makes (here, on the embedded store with
    /// no prefix, a plain key stays as it is):
    ///
    /// ```
    /// use lock_runtime::backend::{Attempt, Request};
    /// use lock_runtime::{registry, Lock};
    ///
    /// let store = registry::alias("default").unwrap().backend().clone();
    /// let req = Request::new("doc-alias-backend");
    /// assert!(matches!(store.try_acquire(&req).unwrap(), Attempt::Acquired(_)));
    /// // Locks taken on the store directly and through `Lock` are the same locks.
    /// assert!(Lock::new("doc-alias-backend").try_acquire().unwrap().is_none());
    /// assert!(store.release("doc-alias-backend", req.token).unwrap());
    /// ```
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.0.backend
    }
}

struct Registry {
    default: Alias,
    by_name: HashMap<String, Alias>,
    /// The isolation scope these aliases belong to; `None`: the process's.
    scope: Option<Arc<Scope>>,
}

/// A store by its kind's name and its location.
type Located = (&'static str, Vec<String>);

/// An isolation scope (`lock_runtime::testing::isolate`) as the registry
/// sees it: what its aliases get in place of the process's stores.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) struct Scope {
    /// Unique among the scopes of this process and of any other: put into
    /// the prefix of the scope's aliases on shared stores.
    id: String,
    clock: Arc<VirtualClock>,
    /// The scope's in-process stores by kind and location, so that aliases
    /// naming one store share it in the scope too.
    fresh: Mutex<HashMap<Located, Arc<dyn Backend>>>,
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))]
impl Scope {
    pub(crate) fn new(id: String, clock: Arc<VirtualClock>) -> Self {
        Self {
            id,
            clock,
            fresh: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The scope's store of `kind` at `at`, opened by `open` on first use.
    fn fresh(&self, kind: &StoreKind, at: &[String], open: Fresh) -> Arc<dyn Backend> {
        let mut stores = lock(&self.fresh);
        let store = stores
            .entry((kind.name, at.to_vec()))
            .or_insert_with(|| open(&self.clock));
        Arc::clone(store)
    }

    /// The scope's namespace inside `prefix`'s. Different namespaces stay
    /// different (`""`, no prefix, and `":"` included), and none meets a
    /// namespace outside the scope, whose prefixes never hold the id.
    fn prefix(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            return format!("{}:", self.id);
        }
        let body = prefix.strip_suffix(':').unwrap_or(prefix);
        format!("{body}:{}:", self.id)
    }
}

/// The alias `default` until the application configures another: an
/// in-process store that lives as long as the process.
static BUILTIN: Lazy<AliasInner> = Lazy::new(|| {
    Alias::inner(DEFAULT_ALIAS, AliasConfig::memory(), None, false)
        .expect("the built-in default alias is valid")
});

static REGISTRY: Lazy<ArcSwap<Registry>> = Lazy::new(|| {
    let default = Alias(Shared::BUILTIN);
    ArcSwap::from_pointee(Registry {
        by_name: HashMap::from([(DEFAULT_ALIAS.to_owned(), default.clone())]),
        default,
        scope: None,
    })
});

/// How many times the registry was replaced. A thread's cached default
/// alias (below) is good while this has not moved.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes `registry` the one every lookup sees. The generation moves after
/// the store: a lookup that reads the new generation then loads the new
/// registry.
fn publish(registry: Arc<Registry>) {
    REGISTRY.store(registry);
    GENERATION.fetch_add(1, Ordering::Release);
}

thread_local! {
    /// The default alias as this thread last looked it up, and the
    /// generation it was read under. `None`: the built-in default. Weak
    /// otherwise: a replaced alias (or a test scope's) is not kept alive by
    /// a thread that stopped locking; its store goes when the last guard
    /// and the registry let go of it.
    static DEFAULT: RefCell<(u64, Option<Weak<AliasInner>>)> =
        const { RefCell::new((u64::MAX, Some(Weak::new()))) };
}

/// The default alias: most locks name it, and the registry's lookup (an
/// `ArcSwap` load, its debt paid back on drop, then a clone) was a tenth of
/// an uncontended in-memory lock. A thread's cached copy is checked against
/// the generation; the built-in default's costs nothing more, another's
/// one shared-count update.
#[inline]
fn default_alias() -> Alias {
    let generation = GENERATION.load(Ordering::Acquire);
    let cached = DEFAULT
        .try_with(|d| {
            let d = d.try_borrow().ok()?;
            if d.0 != generation {
                return None;
            }
            match &d.1 {
                None => Some(Shared::BUILTIN),
                Some(weak) => weak.upgrade().map(|inner| Shared(Some(inner))),
            }
        })
        .ok()
        .flatten();
    if let Some(shared) = cached {
        return Alias(shared);
    }
    // Read after the generation: an alias cached under it is never older.
    let alias = REGISTRY.load().default.clone();
    let _ = DEFAULT.try_with(|d| {
        if let Ok(mut d) = d.try_borrow_mut() {
            *d = (generation, alias.0.0.as_ref().map(Arc::downgrade));
        }
    });
    alias
}

/// Held by whatever replaces the registry, so that a change made inside a
/// scope cannot land after the scope was left (and outlive it). Holds the
/// registries the active scopes replaced, the innermost scope's last.
/// Lookups never take it.
static WRITERS: Mutex<Vec<Replaced>> = Mutex::new(Vec::new());

/// What an active scope replaced, to put back when it ends.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
struct Replaced {
    scope: Arc<Scope>,
    previous: Arc<Registry>,
}

/// The registry's writers never panic while holding it; a panic elsewhere
/// must not stop every later configuration.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes `scope` the registry every lookup sees, with an alias of its own
/// for each alias configured now.
#[cfg(feature = "testing")]
pub(crate) fn enter(scope: &Arc<Scope>) {
    let mut writers = lock(&WRITERS);
    let previous = REGISTRY.load_full();
    let mut by_name = HashMap::new();
    for (name, alias) in &previous.by_name {
        match Alias::build_in(name, alias.0.config.clone(), Some(scope), true) {
            Ok(alias) => {
                by_name.insert(name.clone(), alias);
            }
            // It was built once from the same config, so this is not
            // expected; leaving it out beats sharing the process's store.
            Err(e) => {
                tracing::warn!(alias = %name, error = %e, "alias left out of the isolation scope")
            }
        }
    }
    let default = match by_name.get(DEFAULT_ALIAS) {
        Some(alias) => alias.clone(),
        None => {
            let alias = Alias::build_in(DEFAULT_ALIAS, AliasConfig::memory(), Some(scope), true)
                .unwrap_or_else(|_| previous.default.clone());
            by_name.insert(DEFAULT_ALIAS.to_owned(), alias.clone());
            alias
        }
    };
    publish(Arc::new(Registry {
        default,
        by_name,
        scope: Some(Arc::clone(scope)),
    }));
    writers.push(Replaced {
        scope: Arc::clone(scope),
        previous,
    });
}

/// Ends `scope`: the registry it replaced comes back, or, while a scope
/// entered after it is still active, comes back when that one ends.
#[cfg(feature = "testing")]
pub(crate) fn exit(scope: &Arc<Scope>) {
    let mut writers = lock(&WRITERS);
    let Some(at) = writers.iter().position(|r| Arc::ptr_eq(&r.scope, scope)) else {
        return;
    };
    let ended = writers.remove(at);
    match writers.get_mut(at) {
        Some(next) => next.previous = ended.previous,
        None => publish(ended.previous),
    }
}

/// Sets the aliases, replacing the whole set at once.
///
/// Every alias is checked (URL, settings) before anything changes; on error
/// the previous set stays. `default` is the embedded memory store unless the
/// set names it. Guards taken before keep working against the store they were
/// taken from, and memory stores are shared by name, so reconfiguring never
/// lets two holders into the same in-process lock. Inside a test's
/// isolation scope (`lock_runtime::testing::isolate`, feature `testing`) it
/// replaces the scope's aliases only.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
/// registry::configure([("jobs", AliasConfig::from_url("memory://jobs").unwrap())]).unwrap();
/// assert_eq!(registry::aliases(), ["default", "jobs"]);
/// ```
pub fn configure<I, N>(aliases: I) -> Result<(), LockError>
where
    I: IntoIterator<Item = (N, AliasConfig)>,
    N: Into<String>,
{
    let _writer = lock(&WRITERS);
    let scope = REGISTRY.load().scope.clone();
    let mut by_name = HashMap::new();
    for (name, cfg) in aliases {
        let name = name.into();
        check_name(&name)?;
        if by_name.contains_key(&name) {
            return Err(LockError::config(name, "name", "the alias is named twice"));
        }
        let alias = Alias::build_in(&name, cfg, scope.as_deref(), false)?;
        by_name.insert(name, alias);
    }
    let default = match by_name.get(DEFAULT_ALIAS) {
        Some(alias) => alias.clone(),
        None => {
            let alias = Alias::build_in(
                DEFAULT_ALIAS,
                AliasConfig::memory(),
                scope.as_deref(),
                false,
            )?;
            by_name.insert(DEFAULT_ALIAS.to_owned(), alias.clone());
            alias
        }
    };
    publish(Arc::new(Registry {
        default,
        by_name,
        scope,
    }));
    Ok(())
}

/// Adds one alias, or replaces the alias of that name, leaving the others as
/// they are. The same checks as [`configure`] apply; on error nothing changes.
/// Inside an isolation scope it changes the scope's aliases only.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
/// registry::add("audit", AliasConfig::memory_named("audit")).unwrap();
/// assert!(registry::aliases().contains(&"audit".to_owned()));
/// ```
pub fn add(name: impl Into<String>, config: AliasConfig) -> Result<(), LockError> {
    let name = name.into();
    check_name(&name)?;
    let _writer = lock(&WRITERS);
    let reg = REGISTRY.load_full();
    let alias = Alias::build_in(&name, config, reg.scope.as_deref(), false)?;
    let mut by_name = reg.by_name.clone();
    let default = if name == DEFAULT_ALIAS {
        alias.clone()
    } else {
        reg.default.clone()
    };
    by_name.insert(name, alias);
    publish(Arc::new(Registry {
        default,
        by_name,
        scope: reg.scope.clone(),
    }));
    Ok(())
}

fn check_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() {
        return Err(LockError::config(
            name,
            "name",
            "alias names cannot be empty",
        ));
    }
    Ok(())
}

/// Configures the aliases from environment variables `LOCK_ALIAS_<NAME>=<url>`
/// (the alias is `<NAME>` in lower case; see [`AliasConfig`] for the URL
/// forms). Returns the names it configured; with no such variable it changes
/// nothing and returns an empty list.
///
/// Every error names the variable it came from. A variable whose name is a
/// near miss of `LOCK_ALIAS_<NAME>` (`LOCK_ALIASS_DEFAULT`,
/// `lock_alias_default`, `LOCKALIAS_DEFAULT`) is an error when its value is
/// an alias URL, since the alias it meant would silently stay as it was
/// (`default` an in-process store: no exclusion across processes); otherwise
/// it may belong to another program and is only reported as a `tracing`
/// warning.
///
/// ```
/// // SAFETY: doc tests run their examples in a process of their own.
/// unsafe { std::env::set_var("LOCK_ALIAS_BATCH", "memory://batch?prefix=batch:") };
/// let names = lock_runtime::registry::configure_from_env().unwrap();
/// assert_eq!(names, ["batch"]);
/// assert_eq!(lock_runtime::registry::alias("batch").unwrap().prefix(), "batch:");
///
/// unsafe { std::env::set_var("LOCK_ALIASS_DEFAULT", "redis://127.0.0.1:6379") };
/// let err = lock_runtime::registry::configure_from_env().unwrap_err();
/// assert!(err.to_string().contains("did you mean `LOCK_ALIAS_DEFAULT`?"), "{err}");
/// ```
pub fn configure_from_env() -> Result<Vec<String>, LockError> {
    configure_from_vars(std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.into_string().map_err(|_| ()),
        )
    }))
}

/// [`configure_from_env`] over given variables (`Err(())`: not UTF-8).
fn configure_from_vars(
    vars: impl IntoIterator<Item = (String, Result<String, ()>)>,
) -> Result<Vec<String>, LockError> {
    let mut found = Vec::new();
    let mut from_var = HashMap::new();
    for (var, value) in vars {
        let Some(name) = var.strip_prefix(ENV_PREFIX) else {
            if let Some(meant) = env_near_miss(&var) {
                let looks_like_ours = value
                    .as_deref()
                    .is_ok_and(|v| AliasConfig::from_url(v).is_ok());
                if looks_like_ours {
                    return Err(LockError::config(
                        meant
                            .strip_prefix(ENV_PREFIX)
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                        &var,
                        format!(
                            "the variable `{var}` holds an alias URL but is not spelt `{ENV_PREFIX}<NAME>`: did you mean `{meant}`? (rename it; it was not read)"
                        ),
                    ));
                }
                tracing::warn!(
                    variable = %var,
                    meant = %meant,
                    "environment variable looks like a misspelt lock alias and was not read"
                );
            }
            continue;
        };
        if name.is_empty() {
            return Err(LockError::config(
                "",
                &var,
                format!("`{var}` names no alias: write `{ENV_PREFIX}<NAME>=<url>`"),
            ));
        }
        let alias = name.to_ascii_lowercase();
        let value = value
            .map_err(|()| LockError::config(&alias, &var, format!("`{var}` is not valid UTF-8")))?;
        let cfg = AliasConfig::from_url(&value).map_err(|e| from_var_error(e, &alias, &var))?;
        from_var.insert(alias.clone(), var);
        found.push((alias, cfg));
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let names = found.iter().map(|(n, _)| n.clone()).collect();
    configure(found).map_err(|e| match &e {
        LockError::Config { alias, .. } => match from_var.get(alias) {
            Some(var) => from_var_error(e.clone(), &alias.clone(), var),
            None => e,
        },
        _ => e,
    })?;
    Ok(names)
}

/// A configuration error of the alias `alias`, saying it came from `var`.
fn from_var_error(e: LockError, alias: &str, var: &str) -> LockError {
    match e {
        LockError::Config {
            setting, reason, ..
        } => LockError::config(alias, setting, format!("{reason} (from `{var}`)")),
        other => other,
    }
}

/// The variable `var` was probably meant to be: a near miss of
/// `LOCK_ALIAS_<NAME>` (wrong case, a letter too many or too few, a missing
/// underscore).
fn env_near_miss(var: &str) -> Option<String> {
    let upper = var.to_ascii_uppercase();
    if let Some(name) = upper.strip_prefix(ENV_PREFIX) {
        return (!name.is_empty()).then(|| upper.clone());
    }
    // The head, up to an underscore, within two edits of the prefix.
    let typo = (ENV_PREFIX.len() - 2..=ENV_PREFIX.len() + 2)
        .filter(|&cut| cut < upper.len() && upper.as_bytes()[cut - 1] == b'_')
        .map(|cut| (config::distance(&upper[..cut], ENV_PREFIX), cut))
        .filter(|&(d, _)| d <= 2)
        .min()
        .map(|(_, cut)| format!("{ENV_PREFIX}{}", &upper[cut..]));
    // Or the underscore after the prefix is missing.
    let bare = &ENV_PREFIX[..ENV_PREFIX.len() - 1];
    typo.or_else(|| {
        let name = upper.strip_prefix(bare).filter(|n| !n.is_empty())?;
        Some(format!("{ENV_PREFIX}{name}"))
    })
}

/// The names of the configured aliases, sorted.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
///
/// registry::add("doc-aliases-b", AliasConfig::memory()).unwrap();
/// registry::add("doc-aliases-a", AliasConfig::memory()).unwrap();
/// let names = registry::aliases();
/// assert!(names.is_sorted());
/// let at = |name: &str| names.iter().position(|n| n == name).unwrap();
/// assert!(at("default") < at("doc-aliases-a") && at("doc-aliases-a") < at("doc-aliases-b"));
/// ```
pub fn aliases() -> Vec<String> {
    let reg = REGISTRY.load();
    let mut names: Vec<String> = reg.by_name.keys().cloned().collect();
    names.sort();
    names
}

/// Looks an alias up by name.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::LockError;
///
/// registry::add("doc-alias-lookup", AliasConfig::memory().prefix("x:")).unwrap();
/// assert_eq!(registry::alias("doc-alias-lookup").unwrap().prefix(), "x:");
///
/// let err = registry::alias("doc-alias-lokup").unwrap_err();
/// assert!(matches!(err, LockError::UnknownAlias { .. }));
/// assert!(err.to_string().contains("doc-alias-lookup"), "the message lists the known aliases");
/// ```
#[inline]
pub fn alias(name: &str) -> Result<Alias, LockError> {
    if name == DEFAULT_ALIAS {
        return Ok(default_alias());
    }
    let reg = REGISTRY.load();
    reg.by_name.get(name).cloned().ok_or_else(|| {
        let mut known: Vec<String> = reg.by_name.keys().cloned().collect();
        known.sort();
        LockError::UnknownAlias {
            name: name.to_owned(),
            known,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    /// A scope's namespaces: as many as outside, and none of them outside
    /// (unless a prefix outside holds the scope's id, which is unique).
    #[test]
    fn scope_prefixes_keep_namespaces_apart() {
        let scope = Scope::new("isolated-1".into(), Arc::new(VirtualClock::new()));
        let prefixes = ["", ":", "::", "lock:", "lock", "a:b", "a:b:", "isolated"];
        let head = |p: &str| Namespace::new(p).key("k".into()).into_owned();
        let mut seen = std::collections::HashMap::new();
        for p in prefixes {
            let inside = head(&scope.prefix(p));
            assert!(
                prefixes.iter().all(|o| head(o) != inside),
                "{p:?} meets a namespace outside"
            );
            if let Some(other) = seen.insert(inside.clone(), head(p)) {
                assert_eq!(other, head(p), "{p:?}: {inside:?} is two namespaces'");
            }
        }
        assert_eq!(scope.prefix("lock:"), "lock:isolated-1:");
        assert_eq!(head(&scope.prefix("lock")), head(&scope.prefix("lock:")));
    }

    #[test]
    fn shared_stores_default_to_the_default_prefix() {
        for kind in kind::kinds() {
            let expected = if kind.name == "memory" {
                ""
            } else {
                DEFAULT_PREFIX
            };
            assert_eq!(kind.default_prefix, expected, "{}", kind.name);
        }
    }

    #[test]
    fn query_settings_are_parsed_and_checked() {
        let cfg = AliasConfig::from_url("memory://?prefix=a%3Ab&poll_ms=5&lease_ms=1000").unwrap();
        assert_eq!(cfg.prefix, "a:b");
        assert_eq!(cfg.poll_interval, Duration::from_millis(5));
        assert_eq!(cfg.lease, Some(Some(Duration::from_secs(1))));
        let err = AliasConfig::from_url("memory://?poll_ms=0").unwrap_err();
        assert!(
            err.to_string().contains("positive number of milliseconds"),
            "{err}"
        );
        let err = AliasConfig::from_url("memory://?colour=red").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown setting `colour` for a memory alias"),
            "{err}"
        );
        let err = AliasConfig::from_url("memory://?prefix=%zz").unwrap_err();
        assert!(err.to_string().contains("percent-escape"), "{err}");
    }

    /// A typo in a setting would silently change a lease or a timeout.
    #[test]
    fn every_scheme_refuses_settings_it_does_not_know() {
        let cases = [
            (
                "redis://127.0.0.1:1?leas_ms=1000",
                "leas_ms",
                Some("lease_ms"),
            ),
            (
                "redis://127.0.0.1:1?timeout=300",
                "timeout",
                Some("timeout_ms"),
            ),
            ("redis://127.0.0.1:1/0?prefx=app:", "prefx", Some("prefix")),
            ("redis://127.0.0.1:1?colour=red", "colour", None),
            ("rediss://127.0.0.1:1?poll=5", "poll", Some("poll_ms")),
            ("redis+unix:///tmp/r.sock?dbb=2", "dbb", Some("db")),
            ("redis+quorum://a,b,c?lease=5", "lease", Some("lease_ms")),
            ("memory://?timeout_ms=5", "timeout_ms", None),
            ("memory://?connect_timeout_ms=5", "connect_timeout_ms", None),
        ];
        // Without the `redis` feature a redis URL is refused whole, for
        // want of the store, before its settings are read.
        let known = |url: &str| cfg!(feature = "redis") || url.starts_with("memory");
        for (url, setting, near) in cases.into_iter().filter(|(url, ..)| known(url)) {
            let err = AliasConfig::from_url(url).unwrap_err();
            let LockError::Config {
                setting: named,
                reason,
                ..
            } = &err
            else {
                panic!("{url}: {err:?}");
            };
            assert_eq!(named, setting, "{url}");
            assert!(
                reason.contains("accepted: prefix, poll_ms, lease_ms"),
                "{url}: {reason}"
            );
            match near {
                Some(near) => assert!(
                    reason.contains(&format!("did you mean `{near}`?")),
                    "{url}: {reason}"
                ),
                None => assert!(!reason.contains("did you mean"), "{url}: {reason}"),
            }
        }
        #[cfg(feature = "redis")]
        {
            let ok =
                AliasConfig::from_url("redis+unix:///tmp/r.sock?db=2&prefix=a:&protocol=resp3")
                    .unwrap();
            assert_eq!(ok.prefix, "a:");
            let Store::Kind { at, .. } = &ok.store else {
                panic!("a Redis store")
            };
            assert_eq!(at, &["redis+unix:///tmp/r.sock?db=2&protocol=resp3"]);
        }
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, Result<String, ()>)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), Ok(v.to_string())))
            .collect()
    }

    #[test]
    fn misspelt_alias_variables_are_named() {
        for (var, meant) in [
            ("LOCK_ALIASS_DEFAULT", "LOCK_ALIAS_DEFAULT"),
            ("lock_alias_default", "LOCK_ALIAS_DEFAULT"),
            ("LOCKALIAS_DEFAULT", "LOCK_ALIAS_DEFAULT"),
            ("LOCK_ALIASDEFAULT", "LOCK_ALIAS_DEFAULT"),
            ("LOCK_ALAS_SHARED", "LOCK_ALIAS_SHARED"),
        ] {
            assert_eq!(env_near_miss(var).as_deref(), Some(meant), "{var}");
            let err = configure_from_vars(vars(&[(var, "memory://x")])).unwrap_err();
            let LockError::Config {
                setting, reason, ..
            } = &err
            else {
                panic!("{var}: {err:?}")
            };
            assert_eq!(setting, var);
            assert!(
                reason.contains(&format!("did you mean `{meant}`?")),
                "{reason}"
            );
        }
        for var in ["HOME", "CLOCK_SKEW", "LOCKFILE", "LOCK_TIMEOUT", "ALIAS_X"] {
            assert_eq!(env_near_miss(var), None, "{var}");
        }
        // Not an alias URL: another program's variable, left alone.
        assert_eq!(
            configure_from_vars(vars(&[("LOCK_ALIASES_FILE", "/etc/aliases")])).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn alias_variable_errors_name_the_variable() {
        let err = configure_from_vars(vars(&[("LOCK_ALIAS_", "memory://")])).unwrap_err();
        assert!(
            err.to_string().contains("`LOCK_ALIAS_` names no alias"),
            "{err}"
        );
        let err =
            configure_from_vars(vars(&[("LOCK_ALIAS_JOBS", "memory://?poll_ms=0")])).unwrap_err();
        assert!(
            err.to_string().contains("(from `LOCK_ALIAS_JOBS`)"),
            "{err}"
        );
        assert!(matches!(err, LockError::Config { ref alias, .. } if alias == "jobs"));
        let err = configure_from_vars(vec![("LOCK_ALIAS_JOBS".into(), Err(()))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`LOCK_ALIAS_JOBS` is not valid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn durations_past_the_maximum_are_refused() {
        let err = AliasConfig::from_url("memory://?lease_ms=18446744073709551615").unwrap_err();
        assert!(
            matches!(err, LockError::Config { ref setting, .. } if setting == "lease_ms"),
            "{err:?}"
        );
        for (setting, cfg) in [
            (
                "default_lease",
                AliasConfig::memory().default_lease(Duration::MAX),
            ),
            (
                "poll_interval",
                AliasConfig::memory().poll_interval(Duration::MAX),
            ),
            (
                "connect_timeout",
                AliasConfig::memory().connect_timeout(Duration::MAX),
            ),
            (
                "command_timeout",
                AliasConfig::memory().command_timeout(Duration::MAX),
            ),
        ] {
            let err = Alias::build("x", cfg).unwrap_err();
            assert!(
                matches!(err, LockError::Config { setting: ref s, .. } if s == setting),
                "{err:?}"
            );
        }
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in ["", "localhost:6379", "mongodb://x", "memory:/x"] {
            let err = AliasConfig::from_url(url).unwrap_err();
            assert!(matches!(err, LockError::Config { .. }), "{url}: {err:?}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let cfg = AliasConfig::redis("redis://:pw@h/1");
        assert!(!format!("{cfg:?}").contains("pw"));
    }

    #[test]
    fn zero_settings_are_rejected_at_configure() {
        let err =
            Alias::build("x", AliasConfig::memory().poll_interval(Duration::ZERO)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration for lock alias `x`: `poll_interval` must be greater than zero"
        );
    }

    #[test]
    fn memory_aliases_have_no_lease_and_custom_ones_do() {
        let mem = Alias::build("m", AliasConfig::memory()).unwrap();
        assert_eq!(mem.default_lease(), None);
        let custom =
            Alias::build("c", AliasConfig::custom(Arc::new(MemoryBackend::new()))).unwrap();
        assert_eq!(
            custom.default_lease(),
            None,
            "a custom store may support unleased locks"
        );
        let leased = Alias::build(
            "l",
            AliasConfig::memory().default_lease(Duration::from_secs(5)),
        )
        .unwrap();
        assert_eq!(leased.default_lease(), Some(Duration::from_secs(5)));
    }
}
