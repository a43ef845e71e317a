//! How to test code that takes locks without tests getting in each other's
//! way, how to assert that a lock is held or has expired, how to check a
//! store of your own with the conformance suite, and how to use Redis in
//! tests.
//!
//! # Tests share the process's stores
//!
//! `cargo test` runs the tests of one binary as threads of one process, in
//! parallel. The registry, and so the embedded store behind `default`, is
//! process-wide: two tests locking the same key on the same alias contend
//! with each other, and a test that holds a key makes another test's call
//! fail or wait. Two habits avoid it:
//!
//! - **Keys of its own per test**: put the test's name, or a value only that
//!   test uses, in the key (`"report-<user.id>"` with a user id no other
//!   test uses).
//! - **An alias of its own per test**, added with [`registry::add`], on a
//!   memory store of its own ([`AliasConfig::memory_named`]). Code that
//!   takes its alias as a parameter (or from its configuration) can then be
//!   pointed at it.
//!
//! Never call [`registry::configure`] in a test: it replaces every alias at
//! once, so aliases other tests added in the meantime disappear from under
//! them ([`LockError::UnknownAlias`](crate::LockError::UnknownAlias)).
//!
//! ```
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::{Lock, LockError};
//!
//! // Code under test: the alias comes from the caller.
//! fn import(alias: &'static str, feed: &str) -> Result<(), LockError> {
//!     let _guard = Lock::new(format!("import-{feed}")).alias(alias).wait(false).acquire()?;
//!     Ok(())
//! }
//!
//! // In a test: an alias, and a store, no other test sees.
//! registry::add("test-import-busy", AliasConfig::memory_named("test-import-busy")).unwrap();
//! let _other = Lock::new("import-prices").alias("test-import-busy").acquire().unwrap();
//! assert!(import("test-import-busy", "prices").unwrap_err().is_busy());
//! assert!(import("default", "prices").is_ok(), "another store, another lock");
//!
//! // What `configure` would do to that test:
//! registry::configure([("other-test", AliasConfig::memory())]).unwrap();
//! assert!(matches!(
//!     import("test-import-busy", "prices"),
//!     Err(LockError::UnknownAlias { .. })
//! ));
//! ```
//!
//! # Isolating tests (feature `testing`)
//!
//! `lock_runtime::testing::isolate()` gives a test stores of its own for
//! every alias, the aliases `#[lock(alias = "...")]` names included: while
//! its guard lives, every lookup sees fresh memory stores, and on Redis a
//! namespace of the scope's (its id goes into the prefix). So the test can
//! use the keys and aliases of production code, lock them without waiting,
//! leak them, and reconfigure `default`: nothing of it reaches another test,
//! and it ends with the guard. The threads and tasks the test spawns see the
//! scope too, because a scope is process-wide; so scopes take turns
//! (`isolate()` waits for the active one), and a test that does not isolate
//! would see another test's scope: isolate every test that locks, or none.
//!
//! The scope's memory stores run on its clock (`testing::Clock`), which a
//! test moves ahead to end leases (`expire`) and make locks old enough for
//! `steal_after` without sleeping; waiters parked on such a lock wake on the
//! advance. Deadlines (`wait_for`), renewals and a guard's own
//! view of its lease stay on real time, so test expiry with a fixed
//! `expire` and ask the store (take the lock again), not the guard.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use std::time::Duration;
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::testing::isolate;
//! use lock_runtime::{lock, LockError};
//!
//! #[lock("digest-<user>", expire = "24h", delete_on_exit = false, wait = false)]
//! fn send_digest(user: u32) -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! // #[test]
//! fn one_digest_a_day() {
//!     let scope = isolate();
//!     // Safe here: it changes only this test's aliases.
//!     registry::configure([("default", AliasConfig::memory())]).unwrap();
//!     send_digest(7).unwrap();
//!     assert!(send_digest(7).unwrap_err().is_busy(), "not twice a day");
//!     scope.clock().advance(Duration::from_secs(24 * 3600));
//!     send_digest(7).expect("the next day");
//! }
//! # one_digest_a_day();
//! // Another test sees none of it, even with the same key:
//! // #[test]
//! fn a_digest_for_the_same_user() {
//!     let _scope = isolate();
//!     send_digest(7).unwrap();
//! }
//! # a_digest_for_the_same_user();
//! # }
//! ```
//!
//! # Asserting that a lock is held
//!
//! [`Lock::try_acquire`](crate::Lock::try_acquire) never waits and returns
//! `Ok(None)` when someone holds the lock, so it tells, from inside the
//! body, that the body runs under the lock, and after it, that the lock
//! was given back (dropping the guard it returns releases it at once):
//!
//! ```
//! use lock_runtime::{lock, Lock, LockError};
//!
//! fn held(key: &str) -> bool {
//!     Lock::new(key.to_owned()).try_acquire().unwrap().is_none()
//! }
//!
//! #[lock("test-held-<day>")]
//! fn build(day: u32) -> Result<bool, LockError> {
//!     Ok(held(&format!("test-held-{day}")))
//! }
//!
//! assert!(build(3).unwrap(), "held while the body runs");
//! assert!(!held("test-held-3"), "released on return");
//! ```
//!
//! Locks are not reentrant, so the check must not take the lock the code
//! under test is about to take with waiting on: `try_acquire` is the right
//! tool, `acquire` would wait.
//!
//! # Testing expiry with a short `expire`
//!
//! A lease of a few tens of milliseconds makes expiry testable without slow
//! tests. Leave the lease well above the machine's scheduling noise (tens of
//! milliseconds, not one) and allow some slack in the waits:
//!
//! ```
//! use std::time::Duration;
//! use lock_runtime::{lock, Lock, LockError};
//!
//! #[lock("test-expiry-digest", expire = "50ms", delete_on_exit = false, wait = false)]
//! fn send_digest() -> Result<(), LockError> {
//!     Ok(())
//! }
//!
//! send_digest().unwrap();
//! // `delete_on_exit = false`: still held after the call, until the lease ends.
//! assert!(send_digest().is_err());
//! std::thread::sleep(Duration::from_millis(100));
//! assert!(send_digest().is_ok(), "the lease ended");
//!
//! // The guard side: `is_lost` once the lease ran out.
//! let guard = Lock::new("test-expiry-guard").expire(Duration::from_millis(30)).acquire().unwrap();
//! std::thread::sleep(Duration::from_millis(60));
//! assert!(guard.is_lost());
//! assert!(guard.release().unwrap_err().is_not_held());
//! ```
//!
//! Async code is tested the same way under `#[tokio::test]` (or any
//! executor): the locked `async fn`s need no particular runtime.
//!
//! # A store of your own: the conformance suite
//!
//! With the `testing` feature, `lock_runtime::testing` checks that a store
//! behaves as every store must (mutual exclusion across threads and tasks,
//! only the owner releases, leases, `steal_after`, fencing, deadlines,
//! cancellation, the lost signal, odd keys). Turn the feature on for tests
//! only:
//!
//! ```toml
//! [dev-dependencies]
//! lock-runtime = { version = "0.1", features = ["testing"] }
//! ```
//!
//! Then one macro call in a test file writes one `#[test]` per behaviour,
//! named `<module>::<behaviour>`. The factory returns a fresh
//! [`AliasConfig`] for your store; the suite adds an alias of its own for
//! each behaviour and uses keys no other test uses, so it runs alongside
//! your other tests. Here the embedded store stands in for yours:
//!
//! ```
//! # #[cfg(feature = "testing")] mod suite {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lock_runtime::backend::memory::MemoryBackend;
//! use lock_runtime::registry::AliasConfig;
//! use lock_runtime::testing::Options;
//!
//! fn my_store() -> AliasConfig {
//!     AliasConfig::custom(Arc::new(MemoryBackend::new()))
//! }
//!
//! // In tests/conformance_my_store.rs:
//! lock_runtime::conformance_tests!(conformance_my_store, my_store);
//!
//! // A store with a slow clock or slow network: longer leases, more slack.
//! lock_runtime::conformance_tests!(
//!     conformance_my_store_slow,
//!     my_store,
//!     options = Options::default().lease(Duration::from_secs(1)).slack(Duration::from_secs(3)),
//! );
//! # pub fn run() {
//! #     // Doc tests do not run `#[test]`s: call two behaviours directly.
//! #     let suite = lock_runtime::testing::Conformance::new("guide", my_store);
//! #     suite.exclusion_across_threads();
//! #     suite.fencing_strictly_increases();
//! # }
//! # }
//! # fn main() {
//! #     #[cfg(feature = "testing")]
//! #     suite::run();
//! # }
//! ```
//!
//! `Conformance::new(name, factory)` runs the same behaviours one by one
//! from your own code, and `run_all()` runs all of them in one test.
//!
//! # Redis in tests
//!
//! Start a `redis-server` of the test's own, on a free loopback port, with
//! persistence off, and stop it when the test ends. Never point tests at a
//! shared server: tests of other runs would contend on the same keys, and a
//! test that flushes or stops the server breaks everyone else's.
//!
//! ```no_run
//! use std::net::TcpListener;
//! use std::process::{Child, Command, Stdio};
//! use std::time::{Duration, Instant};
//!
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! /// A private redis-server, killed when dropped (also when the test panics).
//! struct TestRedis {
//!     child: Child,
//!     port: u16,
//! }
//!
//! impl TestRedis {
//!     fn start() -> TestRedis {
//!         // A port the OS just handed out is free; the small race with
//!         // other processes is acceptable in tests.
//!         let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//!         let child = Command::new("redis-server")
//!             .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
//!             .args(["--save", "", "--appendonly", "no"]) // nothing on disk
//!             .stdout(Stdio::null())
//!             .spawn()
//!             .expect("redis-server must be installed (apt-get install redis-server)");
//!         let started = Instant::now();
//!         while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
//!             assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
//!             std::thread::sleep(Duration::from_millis(10));
//!         }
//!         TestRedis { child, port }
//!     }
//!
//!     fn url(&self) -> String {
//!         format!("redis://127.0.0.1:{}", self.port)
//!     }
//! }
//!
//! impl Drop for TestRedis {
//!     fn drop(&mut self) {
//!         let _ = self.child.kill();
//!         let _ = self.child.wait();
//!     }
//! }
//!
//! // #[test]
//! fn locks_are_shared_through_redis() {
//!     let redis = TestRedis::start();
//!     // An alias named after the test: parallel tests each have their own.
//!     let alias = "test-locks-are-shared-through-redis";
//!     registry::add(alias, AliasConfig::from_url(&redis.url()).unwrap()).unwrap();
//!     let guard = Lock::new("invoice-7").alias(alias).acquire().unwrap();
//!     assert!(Lock::new("invoice-7").alias(alias).try_acquire().unwrap().is_none());
//!     guard.release().unwrap();
//! }
//! # locks_are_shared_through_redis();
//! ```
//!
//! This crate's own tests do the same, with more care (its log printed on
//! failure, pausing and restarting the server), in `tests/support`.
//!
//! [`registry::add`]: crate::registry::add
//! [`registry::configure`]: crate::registry::configure
//! [`AliasConfig`]: crate::registry::AliasConfig
//! [`AliasConfig::memory_named`]: crate::registry::AliasConfig::memory_named
