//! Which store to put behind an alias: the embedded memory store, one Redis
//! server, a quorum of Redis servers (Redlock), a SQL database (Postgres or
//! SQLite), a directory of lock files, memcached, or a store of your own;
//! what each one guarantees, and how to configure it.
//!
//! # In one line each
//!
//! - **Memory** (`memory://`, the alias `default` when nothing is
//!   configured): the threads and tasks of **one process**. No server, no
//!   failure modes of its own, and no protection between processes.
//! - **Redis** (`redis://`, `rediss://`, `redis+unix://`): every process
//!   that reaches **one Redis server**. The usual choice for a service with
//!   several instances.
//! - **Quorum** (`redis+quorum://h1,h2,h3`): a lock is held once a
//!   **majority of independent Redis servers** granted it, so a minority
//!   of them may be down.
//! - **Postgres** (`postgres://`, feature `postgres`): a lease table in a
//!   database the service already has: djangae's `STRONG` kind. Fencing
//!   numbers from a sequence, releases wake waiters by `NOTIFY`.
//! - **SQLite** (`sqlite://`, feature `sqlite`): a lock table in a file, for
//!   the **processes of one host** with no server.
//! - **File** (`file://`, feature `file`, Linux): one lock file per key in
//!   a local directory, for the processes of one host; the kernel frees a
//!   dead holder's lock at once and wakes waiters.
//! - **Memcached** (`memcache://h1,h2`, feature `memcache`): djangae's
//!   `WEAK` kind: atomic with the meta protocol, but an eviction or a
//!   restart forgets held locks. For efficiency, never for correctness.
//! - **Custom** ([`AliasConfig::store`], [`AliasConfig::async_store`]): any
//!   store you write as a [`Store`](crate::backend::Store) or an
//!   [`AsyncStore`](crate::backend::AsyncStore); run the conformance suite
//!   on it (see [`testing`](super::testing)).
//!
//! # What each guarantees
//!
//! The README's table "What each backend guarantees" has a column for
//! every store; the ones built in by default, and a custom store:
//!
//! | | memory | Redis (one server) | quorum of N servers | custom |
//! |---|---|---|---|---|
//! | mutual exclusion | between the threads and tasks of the process | between all clients, while the server keeps its data | between all clients, while a majority of nodes keeps its data | what your store's atomic operations give |
//! | fencing token, strictly increasing per key | yes | yes, across expiry | yes, while a majority keeps its counters | if the store returns one |
//! | lease | none unless the lock sets `expire` (a holder cannot outlive the store) | always: the alias's (30 s by default), renewed while the guard lives, or a fixed `expire` | always, as Redis | 30 s by default unless the store [holds unleased locks](crate::backend::Backend::supports_unleased) |
//! | a crashed holder | its process, and so the store, is gone too | its lock frees itself when its lease ends | as Redis | frees itself when its lease ends |
//! | a restart of the store | every lock goes with the process | without persistence, held locks and fencing counters are forgotten: a second holder may get in, and tokens start again | a node that restarts empty forgets its part; exclusion holds while a majority still agrees | depends on the store |
//! | a failover to a replica | n/a | Redis replicates asynchronously: a lock written just before the primary failed may be missing on the promoted replica, so two holders are possible | a node that fails over to its own replica has the same problem; make each node a standalone server | depends on the store |
//!
//! The ⌊(N−1)/2⌋ nodes a quorum tolerates being down are that many
//! unreachable nodes, not wrong ones: a node that restarts empty while a
//! lock is held weakens that lock until its lease ends.
//!
//! # Efficiency or correctness
//!
//! Before choosing, decide what the lock is for.
//!
//! - **Efficiency**: the lock saves doing the same work twice (a report
//!   built twice, a cache refreshed by every request at once). If it fails
//!   once in a while, some work is wasted, nothing is wrong. djangae calls
//!   this kind of lock `WEAK` (kept in memcache, which may forget it), as
//!   opposed to `STRONG` (kept in the datastore). Any store does; the
//!   memory store does for one process, Redis for several.
//! - **Correctness**: two holders at once would corrupt data (a balance
//!   paid twice, a file written by two writers). Then no lease-based lock
//!   is enough by itself, whichever store keeps it: a holder can be paused
//!   (a garbage collector, a swapped-out process, a network partition)
//!   past its lease, and go on writing after someone else got the lock.
//!   Martin Kleppmann made this point about Redlock in "How to do
//!   distributed locking" (2016): the protected resource must check a
//!   **fencing token** and refuse a write carrying a lower token than one
//!   it has already seen. Every store in this crate hands out such tokens
//!   ([`LockGuard::fencing_token`](crate::LockGuard::fencing_token), or
//!   `fencing = token` on the attribute); the resource has to check them.
//!
//! ```
//! use lock_runtime::{lock, LockError};
//!
//! /// The protected resource: refuses writes from a holder that is behind.
//! #[derive(Default)]
//! struct Ledger {
//!     highest: std::sync::Mutex<u64>,
//! }
//!
//! impl Ledger {
//!     fn write(&self, token: u64, _entry: &str) -> Result<(), &'static str> {
//!         let mut highest = self.highest.lock().unwrap();
//!         if token < *highest {
//!             return Err("stale lock holder");
//!         }
//!         *highest = token;
//!         Ok(())
//!     }
//! }
//!
//! #[lock("guide-store-ledger", fencing = token)]
//! fn append(token: u64, ledger: &Ledger, entry: &str) -> Result<u64, LockError> {
//!     ledger.write(token, entry).expect("we hold the newest lock");
//!     Ok(token)
//! }
//!
//! let ledger = Ledger::default();
//! let first = append(&ledger, "a").unwrap();
//! let second = append(&ledger, "b").unwrap();
//! assert!(second > first);
//! // A holder that stalled with the first token is refused.
//! assert_eq!(ledger.write(first, "late"), Err("stale lock holder"));
//! ```
//!
//! In short: memory for one process; one Redis server for efficiency
//! across processes, or for correctness together with fencing; a quorum
//! when the lock must survive a Redis server going down, again with fencing
//! when correctness depends on it.
//!
//! # Configuring each
//!
//! Aliases are set once at start-up with [`registry::configure`] (which
//! replaces the whole set) or [`registry::add`] (one alias), from
//! [`AliasConfig`] values or URLs, or from `LOCK_ALIAS_<NAME>=<url>`
//! environment variables with [`registry::configure_from_env`]. Adding an
//! alias checks its URL and settings but does not connect: a server that is
//! down shows up as [`LockError::Backend`](crate::LockError::Backend) on
//! the first lock.
//!
//! ## Memory
//!
//! ```
//! use std::time::Duration;
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! registry::configure([
//!     // What `default` is anyway.
//!     ("default", AliasConfig::memory()),
//!     // A store of its own: the same key there is another lock.
//!     ("guide-store-jobs", AliasConfig::from_url("memory://jobs?lease_ms=60000").unwrap()),
//! ])
//! .unwrap();
//!
//! let job = Lock::new("rebuild").alias("guide-store-jobs").acquire().unwrap();
//! assert!(job.remaining().unwrap() <= Duration::from_secs(60), "the alias's lease");
//! assert!(Lock::new("rebuild").try_acquire().unwrap().is_some(), "`default` is another store");
//! ```
//!
//! ## Redis
//!
//! URL settings: `prefix` (default `lock:`, put before every key so that
//! aliases and applications sharing a server keep apart), `lease_ms`
//! (default 30000), `connect_timeout_ms` and `timeout_ms` (default 2000
//! each), `poll_ms`, and `tls_ca` for `rediss://` (feature `tls`).
//!
//! ```
//! # #[cfg(feature = "redis")] {
//! use std::time::Duration;
//! use lock_runtime::registry::{self, AliasConfig};
//!
//! // Adding the alias needs no server; the first lock connects.
//! registry::add(
//!     "guide-store-shared",
//!     AliasConfig::from_url("redis://:secret@127.0.0.1:6379/2?prefix=billing:&lease_ms=10000").unwrap(),
//! )
//! .unwrap();
//! let alias = registry::alias("guide-store-shared").unwrap();
//! assert_eq!(alias.prefix(), "billing:");
//! assert_eq!(alias.default_lease(), Some(Duration::from_secs(10)));
//!
//! // The same in code:
//! let cfg = AliasConfig::redis("redis://127.0.0.1:6379/2")
//!     .prefix("billing:")
//!     .default_lease(Duration::from_secs(10))
//!     .command_timeout(Duration::from_millis(500));
//! registry::add("guide-store-shared-too", cfg).unwrap();
//!
//! // A typo in a setting is refused, not ignored.
//! assert!(AliasConfig::from_url("redis://127.0.0.1:6379?lease=10000").is_err());
//! # }
//! ```
//!
//! Then lock as usual; this needs the server:
//!
//! ```no_run
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::{lock, LockError};
//!
//! #[lock("invoice-<id>", alias = "shared", wait_for_ms = 2000)]
//! fn settle(id: u64) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! registry::add("shared", AliasConfig::from_url("redis://127.0.0.1:6379")?)?;
//! settle(7)?;
//! # Ok::<(), LockError>(())
//! ```
//!
//! ## Quorum
//!
//! Give at least three nodes, an odd number, on independent machines (a
//! majority of five tolerates two down). The node settings are those of
//! Redis; `timeout_ms` bounds how long one slow node can hold up an
//! operation whose outcome waits on it.
//!
//! ```
//! # #[cfg(feature = "redis")] {
//! use lock_runtime::registry::{self, AliasConfig};
//!
//! let url = "redis+quorum://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379?timeout_ms=300";
//! registry::add("guide-store-quorum", AliasConfig::from_url(url).unwrap()).unwrap();
//! // The same in code:
//! let cfg = AliasConfig::quorum(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"]);
//! registry::add("guide-store-quorum-too", cfg).unwrap();
//! # }
//! ```
//!
//! ## A store of your own
//!
//! Implement [`Backend`](crate::backend::Backend) (three atomic operations:
//! take if free, delete if ours, extend if ours; the
//! [`backend`](crate::backend) module shows a whole one) and register it.
//! Here the embedded store stands in for yours:
//!
//! ```
//! use std::sync::Arc;
//! use lock_runtime::backend::memory::MemoryBackend;
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! let store = Arc::new(MemoryBackend::new());
//! registry::add("guide-store-custom", AliasConfig::custom(store.clone()).prefix("app:")).unwrap();
//! let _guard = Lock::new("export").alias("guide-store-custom").acquire().unwrap();
//! assert_eq!(store.held(), 1);
//! ```
//!
//! ## From the environment
//!
//! ```
//! // SAFETY: doc tests run each example in a process of its own.
//! unsafe { std::env::set_var("LOCK_ALIAS_GUIDE_REPORTS", "memory://reports?prefix=r:") };
//! let names = lock_runtime::registry::configure_from_env().unwrap();
//! assert_eq!(names, ["guide_reports"]);
//! ```
//!
//! ## Postgres, SQLite, files, memcached
//!
//! Each is a cargo feature and a URL, and each module's documentation
//! (`backend::postgres`, `backend::sqlite`, `backend::file`,
//! `backend::memcache`) gives its settings, its schema or layout and what
//! it guarantees: `postgres://app@db/app?table=job_locks`,
//! `sqlite:///var/lib/app/locks.db`, `file:///run/app/locks`,
//! `memcache://cache1:11211,cache2:11211`. A store of another kind can be
//! plugged in as a custom backend.
//!
//! [`AliasConfig`]: crate::registry::AliasConfig
//! [`AliasConfig::custom`]: crate::registry::AliasConfig::custom
//! [`AliasConfig::store`]: crate::registry::AliasConfig::store
//! [`AliasConfig::async_store`]: crate::registry::AliasConfig::async_store
//! [`registry::configure`]: crate::registry::configure
//! [`registry::add`]: crate::registry::add
//! [`registry::configure_from_env`]: crate::registry::configure_from_env
