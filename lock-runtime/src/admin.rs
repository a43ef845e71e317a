//! Operating locks: who holds what, and what to do about a holder that must
//! go. The types of the admin API on an alias
//! ([`Alias::list`](crate::registry::Alias::list),
//! [`show`](crate::registry::Alias::show),
//! [`force_release`](crate::registry::Alias::force_release),
//! [`audit_log`](crate::registry::Alias::audit_log)): a holder's [`Owner`],
//! a [`Page`] of held locks, and the audit-log entry of a forced release,
//! [`Forced`].
//!
//! ```
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! registry::add("doc-admin", AliasConfig::memory_named("doc-admin")).unwrap();
//! let alias = registry::alias("doc-admin").unwrap();
//! let guard = Lock::new("nightly").alias("doc-admin").label("cron").acquire().unwrap();
//!
//! let held = alias.show("nightly").unwrap().unwrap();
//! let owner = held.owner.unwrap();
//! assert_eq!(owner.pid, Some(std::process::id()));
//! assert_eq!(owner.label.as_deref(), Some("cron"));
//!
//! let forced = alias.force_release("nightly", "stuck since Monday").unwrap();
//! assert_eq!(forced.removed.unwrap().fencing, guard.fencing_token());
//! assert_eq!(alias.audit_log(10).unwrap()[0].reason, "stuck since Monday");
//! // The old holder finds it lost (`lost()` resolves), and cannot release it.
//! assert!(guard.release().unwrap_err().is_not_held());
//! ```

use std::time::SystemTime;

use crate::backend::Held;

/// Who holds a lock, as far as its store recorded: the holder's host and
/// process, the [label](crate::Lock::label) it gave, and the function
/// `#[lock]` locked. What a store did not record stays `None`.
///
/// ```
/// use lock_runtime::admin::Owner;
///
/// let me = Owner::of_this_process().label(Some("nightly-report".into()));
/// assert_eq!(me.pid, Some(std::process::id()));
/// assert_eq!(me.label.as_deref(), Some("nightly-report"));
/// assert_eq!(me.function, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Owner {
    /// The holder's host name.
    pub host: Option<String>,
    /// The holder's process id.
    pub pid: Option<u32>,
    /// The label the lock was taken with ([`Lock::label`](crate::Lock::label)).
    pub label: Option<String>,
    /// The path of the function `#[lock]` locked.
    pub function: Option<String>,
}

impl Owner {
    /// Nobody known: every field `None`.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    ///
    /// assert_eq!(Owner::unknown().host, None);
    /// ```
    pub fn unknown() -> Self {
        Self::default()
    }

    /// This process: its host name (read once per process; `None` where
    /// the system does not say) and its pid, with no label or function.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    ///
    /// let me = Owner::of_this_process();
    /// assert_eq!(me.pid, Some(std::process::id()));
    /// assert_eq!(me, Owner::of_this_process(), "the same every time");
    /// ```
    pub fn of_this_process() -> Self {
        Self {
            host: host_name().map(str::to_owned),
            pid: Some(std::process::id()),
            label: None,
            function: None,
        }
    }

    /// Sets the host name.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    ///
    /// assert_eq!(Owner::unknown().host(Some("web-3".into())).host.as_deref(), Some("web-3"));
    /// ```
    pub fn host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }

    /// Sets the process id.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    ///
    /// assert_eq!(Owner::unknown().pid(Some(42)).pid, Some(42));
    /// ```
    pub fn pid(mut self, pid: Option<u32>) -> Self {
        self.pid = pid;
        self
    }

    /// Sets the label.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    ///
    /// assert_eq!(Owner::unknown().label(Some("cron".into())).label.as_deref(), Some("cron"));
    /// ```
    pub fn label(mut self, label: Option<String>) -> Self {
        self.label = label;
        self
    }

    /// Sets the function path.
    ///
    /// ```
    /// use lock_runtime::admin::Owner;
    ///
    /// let owner = Owner::unknown().function(Some("app::jobs::nightly".into()));
    /// assert_eq!(owner.function.as_deref(), Some("app::jobs::nightly"));
    /// ```
    pub fn function(mut self, function: Option<String>) -> Self {
        self.function = function;
        self
    }
}

/// This host's name, read once: the kernel's (Linux), else `$HOSTNAME` or
/// `%COMPUTERNAME%`. No dependency for one string.
pub(crate) fn host_name() -> Option<&'static str> {
    static HOST: once_cell::sync::OnceCell<Option<String>> = once_cell::sync::OnceCell::new();
    HOST.get_or_init(|| {
        let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        from_kernel
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    })
    .as_deref()
}

/// What every token of this process begins with (its first 11 characters,
/// which hold its random seed's bits only): the name a store that records
/// holders gives this process's record, so that a lock's row or value needs
/// nothing more than its token to name its holder.
#[cfg_attr(
    not(any(feature = "redis", feature = "sqlite", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) fn process_tag() -> &'static str {
    static TAG: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    TAG.get_or_init(|| crate::backend::Token::new().encode().as_str()[..11].to_owned())
}

/// One page of held locks ([`Alias::list`](crate::registry::Alias::list)),
/// in the order of their keys.
///
/// ```
/// use lock_runtime::admin::Page;
/// use lock_runtime::backend::Held;
///
/// let page = Page::new(vec![Held::new("a")], Some("a".into()));
/// assert_eq!(page.held[0].key, "a");
/// assert!(page.next.is_some(), "more to come");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The held locks of this page.
    pub held: Vec<Held>,
    /// The cursor of the next page (opaque: give it back as it is); `None`
    /// on the last page.
    pub next: Option<String>,
}

impl Page {
    /// A page of `held`, followed by the page at `next`.
    ///
    /// ```
    /// use lock_runtime::admin::Page;
    ///
    /// assert!(Page::new(Vec::new(), None).held.is_empty());
    /// ```
    pub fn new(held: Vec<Held>, next: Option<String>) -> Self {
        Self { held, next }
    }
}

/// One forced release, as the audit log keeps it
/// ([`Alias::force_release`](crate::registry::Alias::force_release),
/// [`Alias::audit_log`](crate::registry::Alias::audit_log)).
///
/// ```
/// use std::time::SystemTime;
/// use lock_runtime::admin::{Forced, Owner};
///
/// let entry = Forced::new("nightly", SystemTime::now(), Owner::of_this_process(), "stuck");
/// assert_eq!(entry.key, "nightly");
/// assert_eq!(entry.removed, None, "nothing removed yet");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forced {
    /// The lock's own key (the alias prefix taken off; a store's own
    /// records hold it as the store keeps it).
    pub key: String,
    /// When it was forced.
    pub at: SystemTime,
    /// Who forced it: the caller's host and pid, with the user name
    /// (`$USER`, if set) as its label.
    pub by: Owner,
    /// Why, as the caller said.
    pub reason: String,
    /// The holder it removed (its owner, fencing token, how long it had
    /// held it); `None` when the lock was free.
    pub removed: Option<Held>,
}

impl Forced {
    /// An entry for `key`, forced at `at` by `by` for `reason`, having
    /// removed nobody (yet).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use lock_runtime::admin::{Forced, Owner};
    ///
    /// let entry = Forced::new("k", SystemTime::UNIX_EPOCH, Owner::unknown(), "test");
    /// assert_eq!(entry.reason, "test");
    /// ```
    pub fn new(
        key: impl Into<String>,
        at: SystemTime,
        by: Owner,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            at,
            by,
            reason: reason.into(),
            removed: None,
        }
    }

    /// Sets the holder it removed.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use lock_runtime::admin::{Forced, Owner};
    /// use lock_runtime::backend::Held;
    ///
    /// let entry = Forced::new("k", SystemTime::now(), Owner::unknown(), "test")
    ///     .removed(Some(Held::new("k").fencing(Some(7))));
    /// assert_eq!(entry.removed.unwrap().fencing, Some(7));
    /// ```
    pub fn removed(mut self, removed: Option<Held>) -> Self {
        self.removed = removed;
        self
    }

    /// The entry of a forced release by this process, now: `by` is this
    /// process with `$USER` as its label.
    pub(crate) fn by_this_process(key: String, reason: &str) -> Self {
        let by = Owner::of_this_process().label(std::env::var("USER").ok());
        Self::new(key, SystemTime::now(), by, reason)
    }
}

/// How many forced releases a store's audit log keeps (older ones are
/// dropped), for the stores that keep one.
///
/// ```
/// assert_eq!(lock_runtime::admin::AUDIT_LOG_LEN, 1000);
/// ```
pub const AUDIT_LOG_LEN: usize = 1000;
