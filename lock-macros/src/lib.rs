//! The `#[lock]` and `#[once]` attributes of `lock-runtime`. Depend on
//! `lock-runtime` and use them from there (`use lock_runtime::{lock, once};`):
//! the code they generate calls into it.
//!
//! The manual is on [`macro@lock`]; [`macro@once`] is the same attribute with
//! other defaults. The crate is split by phase: `args` parses the options,
//! `template` the key, `expand` writes the code.

mod args;
mod expand;
mod template;

use proc_macro::TokenStream;

use crate::args::Flavor;

/// Runs the function under a named lock: one holder at a time, across
/// threads, tasks, processes and machines (as far as the alias's store
/// reaches).
///
/// ```
/// use lock_runtime::{lock, LockError};
///
/// #[derive(Debug)]
/// enum AppError { Lock(LockError) }
/// impl From<LockError> for AppError {
///     fn from(e: LockError) -> Self { AppError::Lock(e) }
/// }
///
/// struct User { id: u64 }
///
/// // One report per user and day at a time; a second caller fails at once.
/// #[lock("report-<user.id>-<day>", wait = false)]
/// fn build_report(user: &User, day: u32) -> Result<String, AppError> {
///     Ok(format!("report {} for day {day}", user.id))
/// }
///
/// assert_eq!(build_report(&User { id: 7 }, 3).unwrap(), "report 7 for day 3");
///
/// let held = lock_runtime::Lock::new("report-7-3").acquire().unwrap();
/// assert!(matches!(build_report(&User { id: 7 }, 3), Err(AppError::Lock(LockError::Busy { .. }))));
/// drop(held);
/// ```
///
/// It goes on free functions, methods (`&self`, `&mut self`, `self`),
/// associated functions, generic functions, functions with `impl Trait`
/// arguments, and `async fn` (in `impl` blocks and trait impls too). Not on
/// a `const fn`, not on a trait method without a body (put it on the
/// implementation), and not on a foreign function in an `extern` block,
/// which has no body to lock.
///
/// With [async-trait](https://docs.rs/async-trait), keep `#[async_trait]` on
/// the trait and the impl and put `#[lock]` on the method. `#[async_trait]`
/// expands first and turns the method into
/// `fn f(..) -> Pin<Box<dyn Future<Output = T> + Send + '_>> { Box::pin(async move { body }) }`;
/// `#[lock]` recognises that shape (written by hand, too) and takes the lock
/// inside the boxed future, around `body`, exactly as for an `async fn`, so
/// it holds while the future runs, also through `dyn Trait`. Placeholders
/// can name the receiver's fields and plain `name: Type` arguments, not the
/// names bound by a destructuring pattern, which async-trait renames.
/// `#[lock]` written above `#[async_trait]` sits on the `impl` block, which
/// is an error: it goes on each method.
///
/// # What it does
///
/// The function first takes the lock, then runs its body, then gives the
/// lock back, on every way out of the body: its end, `return`, `?`, a
/// panic, or (for an `async fn`) its future being dropped. When the lock
/// cannot be taken (it is busy and the function does not wait, a wait timed
/// out, the store failed, the alias is unknown), the body does not run, and:
///
/// - with `raise = true` (the default of `#[lock]`), the function returns
///   `Err(E::from(error))`, where `error` is the `lock_runtime::LockError`.
///   So it must return `Result<T, E>` with `impl From<LockError> for E`:
///   an error type of your own, `Box<dyn Error + Send + Sync>`,
///   `Box<dyn Error>` or `anyhow::Error`. Anything else is a compile error
///   that says so, on the return type. A type of another crate, like
///   `String`, cannot get that impl in your crate (the orphan rule), so the
///   error suggests one of the others.
/// - with `raise = false` (the default of [`macro@once`]), the function
///   returns `None`. Its return type becomes `Option<T>`: `-> T` is
///   rewritten to `-> Option<T>`, and a function without a return type
///   returns `Option<()>`. `Some(value)` means the body ran. Contention
///   (busy, timed out) is logged through `tracing` at debug level, any other
///   failure at error level, since no error value reaches the caller.
///
/// # The key
///
/// The first argument, when it is a string literal, is the key. `<name>`
/// puts an argument in it, rendered with `Display`:
///
/// | template | renders |
/// |---|---|
/// | `"report-<day>"` | the argument `day` |
/// | `"report-<user.id>"` | a field of an argument (through references) |
/// | `"pair-<pair.0>-<pair.1.name>"` | tuple fields, nested fields |
/// | `"account-<self.id>"` | a field of the receiver (methods only) |
/// | `"<<raw>>-{x}"` | `<raw>-{x}`: `<<` and `>>` are literal `<` and `>`; braces are plain text |
///
/// "Arguments" are all the names the parameter patterns bind, so
/// `fn f((a, b): (u8, u8), Point { x, y }: Point)` offers `a`, `b`, `x` and
/// `y`; raw names are written without `r#` (`<type>` for `r#type`). Method
/// calls and indexing are not part of the syntax: bind what you need to a
/// field or an argument. The key is rendered before the body runs.
///
/// Different values never share a key. A value followed by another
/// placeholder could run into the next one, so two of its characters are
/// percent-escaped: the first character of the text after it, and `%` (so
/// `"col-<x>-<y>"` renders `("1-2", "3")` as `col-1%2D2-3` and
/// `("1", "2-3")` as `col-1-2-3`; when that text starts with `%`, `^` is the
/// escape character instead). The last value, and so the value of a key
/// with one placeholder, is written as it is: `"report-<id>"` renders
/// `report-7`. Reading a key from the left finds every value again, which is
/// why two placeholders need text between them (`<x><y>` is an error). Values
/// that `Display` renders alike (`1u8` and `1u64`) still share a key, and so
/// can keys of two different templates.
///
/// ```
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("col-<x>-<y>", wait = false)]
/// fn cell(x: &str, y: &str) -> Result<(), LockError> {
///     let _ = (x, y);
///     Ok(())
/// }
///
/// let _held = Lock::new("col-1%2D2-3").acquire().unwrap();
/// assert!(cell("1-2", "3").unwrap_err().is_busy());
/// cell("1", "2-3").unwrap(); // `col-1-2-3`: another lock
/// ```
///
/// Every mistake is a compile error on the key: a name that is not an
/// argument (the error lists the arguments), an unclosed `<`, a lone `>`, an
/// empty `<>`, a malformed path (`<user..id>`, `<1x>`), `<self...>` without
/// a receiver, two placeholders with no text between them, the
/// [`fencing`](#fencing) argument (its token exists only once the lock is
/// taken), a value that is not `Display`, an empty key.
///
/// ```
/// use lock_runtime::{lock, Lock, LockError};
///
/// struct Order { id: u32, lines: (u8, u8) }
///
/// #[lock("order-<order.id>-<order.lines.1>-<<v{n}>>-<note>", wait = false)]
/// fn ship(order: &Order, note: &str) -> Result<(), LockError> {
///     // While the body runs, this exact key is held.
///     assert!(Lock::new("order-5-2-<v{n}>-fragile").try_acquire()?.is_none());
///     Ok(())
/// }
///
/// ship(&Order { id: 5, lines: (1, 2) }, "fragile").unwrap();
/// ```
///
/// Without a key, the key is the function's path:
/// `concat!(module_path!(), "::", "name")` for functions without a
/// receiver, and `format!("{}::{}", type_name::<Self>(), "name")` for
/// methods with one, so two types' methods of the same name never share a
/// lock (and `Wrapper<u8>::f` and `Wrapper<u16>::f` do not either). An
/// associated function without a receiver is named by its module: two
/// types' same-named associated functions in one module share a lock unless
/// you give them keys.
///
/// ```
/// use lock_runtime::{lock, Lock, LockError};
///
/// struct Ledger;
///
/// impl Ledger {
///     #[lock(wait = false)]
///     fn close(&self) -> Result<(), LockError> {
///         let key = format!("{}::close", std::any::type_name::<Ledger>());
///         assert!(Lock::new(key).try_acquire()?.is_none(), "named after its type");
///         Ok(())
///     }
/// }
///
/// Ledger.close().unwrap();
/// ```
///
/// # Options
///
/// Options follow the key as `name = value`, each at most once. Only the
/// options given are passed to the lock; the rest keep the defaults of
/// `lock_runtime::Lock`, except where `#[once]` differs.
///
/// | option | value | default | meaning |
/// |---|---|---|---|
/// | [`alias`](#alias) | string | `"default"` | which configured store |
/// | [`wait`](#wait) | `true` / `false` | `true` (`#[once]`: `false`) | wait while the lock is busy, or give up at once |
/// | [`wait_for_ms`](#wait_for_ms) | integer > 0 | wait forever | give up waiting after this many milliseconds; implies `wait = true` |
/// | [`steal_after_ms`](#steal_after_ms) | integer > 0 | never | take over a lock held for at least this many milliseconds |
/// | [`expire`](#expire) | seconds (`30`, `1.5`) or `"1500ms"`, `"10s"`, `"5m"`, `"1h"` | the alias's lease | a fixed lease, after which the lock frees itself |
/// | [`raise`](#raise) | `true` / `false` | `true` (`#[once]`: `false`) | `Err(..)` or `None` when the lock is not taken |
/// | [`delete_on_exit`](#delete_on_exit) | `true` / `false` | `true` | `false` keeps the lock until `expire` ends it |
/// | [`fair`](#fair) | `true` / `false` | `false` | serve waiters in arrival order |
/// | [`fencing`](#fencing) | an argument's name | none | that argument receives the lock's fencing token instead of being passed by callers |
/// | [`on_lost`](#on_lost) | `"cancel"` / `"ignore"` | `"ignore"` | `async fn` only: stop the body when the lock is lost |
/// | [`label`](#label) | non-empty string | none | who takes the lock, on the guard and in the `lock.held` span |
/// | [`crate`](#crate) | path or string | `::lock_runtime` | where the runtime crate is |
///
/// Values are checked at compile time: the type of each value, durations
/// (greater than zero; `expire` at least 1 ms, rounded down to whole
/// milliseconds), `wait = false` with `wait_for_ms` (contradictory), and
/// `delete_on_exit = false` without `expire` (the lock would never free).
/// Unknown options get a hint when they look like a known one or an option of
/// another lock library (`timeout`, `ttl`, `blocking`, `raise_exception`, ...).
///
/// ## `alias`
///
/// The store, by the name it was configured under with
/// `lock_runtime::registry` (`default`, the in-process memory store, needs no
/// configuration). An alias that is not configured is a run-time error,
/// `LockError::UnknownAlias`, listing the configured ones.
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::{lock, Lock, LockError};
///
/// registry::add("billing", AliasConfig::memory_named("billing")).unwrap();
///
/// #[lock("invoice-run", alias = "billing", wait = false)]
/// fn invoice_run() -> Result<(), LockError> {
///     Ok(())
/// }
///
/// // The same key on another alias is another lock...
/// let other = Lock::new("invoice-run").acquire().unwrap();
/// invoice_run().unwrap();
/// // ...and on this one it is this lock.
/// let same = Lock::new("invoice-run").alias("billing").acquire().unwrap();
/// assert!(invoice_run().unwrap_err().is_busy());
/// # drop((other, same));
/// ```
///
/// ## `wait`
///
/// `wait = false` never waits: a busy lock is `LockError::Busy` (or `None`).
/// `wait = true` waits until the holder releases (bounded by `wait_for_ms`).
///
/// ```
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("import-feed", wait = false)]
/// fn import_feed() -> Result<(), LockError> {
///     Ok(())
/// }
///
/// let held = Lock::new("import-feed").acquire().unwrap();
/// assert!(import_feed().unwrap_err().is_busy());
/// drop(held);
/// import_feed().unwrap();
/// ```
///
/// ## `wait_for_ms`
///
/// Waits at most this many milliseconds, then fails with
/// `LockError::Timeout` (or returns `None`). On `#[once]` it turns waiting on.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("rebuild-index", wait_for_ms = 50)]
/// fn rebuild_index() -> Result<(), LockError> {
///     Ok(())
/// }
///
/// let _held = Lock::new("rebuild-index").acquire().unwrap();
/// let started = Instant::now();
/// assert!(rebuild_index().unwrap_err().is_timeout());
/// assert!(started.elapsed() >= Duration::from_millis(50));
/// ```
///
/// ## `steal_after_ms`
///
/// Takes the lock over from a holder that has held it at least this many
/// milliseconds, judged by the store's clock: for work that may be
/// abandoned by a holder that cannot release (djangae's `steal_after_ms`).
/// The old holder is not told; its release then reports the lock lost.
///
/// ```
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("stuck-job", steal_after_ms = 30, wait_for_ms = 5000)]
/// fn stuck_job() -> Result<&'static str, LockError> {
///     Ok("taken over")
/// }
///
/// let _abandoned = Lock::new("stuck-job").acquire().unwrap();
/// assert_eq!(stuck_job().unwrap(), "taken over");
/// ```
///
/// ## `expire`
///
/// A fixed lease: the lock frees itself this long after it was taken, even
/// if the body is still running. A bare number is seconds (`expire = 30`,
/// `expire = 0.5`); a string takes a unit (`"1500ms"`, `"10s"`, `"5m"`,
/// `"1h"`). Without `expire`, stores that need a lease use the alias's and
/// renew it while the body runs; the memory store needs none.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("short-lease", expire = "30ms")]
/// fn outlives_its_lease() -> Result<bool, LockError> {
///     std::thread::sleep(Duration::from_millis(60));
///     // The lease ran out while the body was still running.
///     Ok(Lock::new("short-lease").try_acquire()?.is_some())
/// }
///
/// assert!(outlives_its_lease().unwrap());
/// ```
///
/// ## `raise`
///
/// Whether a lock that is not taken is an error value (`true`, the default
/// of `#[lock]`) or skips the body and returns `None` (`false`, the default
/// of `#[once]`; see [What it does](#what-it-does)).
///
/// ```
/// use lock_runtime::{lock, Lock};
///
/// #[lock("warm-cache", wait = false, raise = false)]
/// fn warm_cache() -> usize {
///     42
/// }
///
/// assert_eq!(warm_cache(), Some(42));
/// let _held = Lock::new("warm-cache").acquire().unwrap();
/// assert_eq!(warm_cache(), None);
/// ```
///
/// ## `delete_on_exit`
///
/// `delete_on_exit = false` leaves the lock held when the function returns,
/// until its `expire` lease ends: "at most once per period". It needs
/// `expire`.
///
/// ```
/// use lock_runtime::once;
///
/// #[once("daily-digest", expire = "1h", delete_on_exit = false)]
/// fn daily_digest() -> &'static str {
///     "sent"
/// }
///
/// assert_eq!(daily_digest(), Some("sent"));
/// assert_eq!(daily_digest(), None, "not again within the hour");
/// ```
///
/// ## `fair`
///
/// Serves waiters in the order they arrived: a newcomer queues behind them
/// instead of taking a just-freed (or stealable) lock first.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("payout", fair = true, steal_after_ms = 1, wait = false)]
/// fn payout() -> Result<(), LockError> {
///     Ok(())
/// }
///
/// let _old = Lock::new("payout").acquire().unwrap();
/// std::thread::scope(|s| {
///     let waiter = s.spawn(|| Lock::new("payout").wait_for(Duration::from_secs(5)).acquire().map(drop));
///     std::thread::sleep(Duration::from_millis(50));
///     // The old holder could be stolen from, but someone is already waiting.
///     assert!(payout().unwrap_err().is_busy());
/// #   drop(_old);
///     waiter.join().unwrap().unwrap();
/// });
/// ```
///
/// ## `fencing`
///
/// Names an argument of type `u64` (or `Option<u64>`) that receives the
/// lock's fencing token: a number strictly greater than that of every
/// earlier acquisition of the key on the alias. The argument disappears
/// from the function's signature (callers do not pass it); hand it to the
/// resource you protect so that it can reject writes from a holder whose
/// lease ran out while it was paused. It cannot appear in the key: the
/// token exists only once the lock has been taken with that key.
///
/// ```
/// use lock_runtime::{lock, LockError};
///
/// #[lock("ledger-<account>", fencing = token)]
/// fn append(token: u64, account: u32, entry: &str) -> Result<u64, LockError> {
///     // e.g. store.write_if_newer(token, account, entry)
///     let _ = (account, entry);
///     Ok(token)
/// }
///
/// let first = append(1, "a").unwrap();
/// let second = append(1, "b").unwrap();
/// assert!(second > first);
/// ```
///
/// ## `on_lost`
///
/// For an `async fn`: with `on_lost = "cancel"` the body is stopped at its
/// next await point when the lock is lost while it runs (its lease ran out,
/// it was deleted or taken over behind its back, the store stayed away past
/// the lease), and the function returns `Err(LockError::NotHeld { .. })`
/// (with `raise = true`) or `None` (with `raise = false`). The default,
/// `"ignore"`, lets the body run to its end and reports the loss when the
/// lock is given back. A sync function cannot be stopped from outside, so
/// `"cancel"` on one is a compile error.
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{lock, LockError};
///
/// #[lock("slow-sync", expire = "50ms", on_lost = "cancel")]
/// async fn slow_sync() -> Result<(), LockError> {
///     futures_timer_sleep(Duration::from_secs(10)).await; // outlives its lease
///     Ok(())
/// }
/// # async fn futures_timer_sleep(d: Duration) {
/// #     let (tx, rx) = futures::channel::oneshot::channel::<()>();
/// #     std::thread::spawn(move || { std::thread::sleep(d); let _ = tx.send(()); });
/// #     let _ = rx.await;
/// # }
///
/// let err = futures::executor::block_on(slow_sync()).unwrap_err();
/// assert!(err.is_not_held());
/// ```
///
/// ## `label`
///
/// A name for whoever takes the lock (`label = "nightly-report"`), as
/// [`Lock::label`](../lock_runtime/struct.Lock.html#method.label) sets it: it
/// is the `label` field of the lock's `lock.held` span, beside `function`,
/// the locked function's path (`module::name`), which every `#[lock]`
/// records. It does not change the lock: the key does.
///
/// ```
/// use lock_runtime::{lock, LockError};
///
/// #[lock("nightly", label = "nightly-report", wait = false)]
/// fn nightly() -> Result<(), LockError> {
///     // Inside the body, the current span is the lock's `lock.held` span
///     // (when a subscriber records spans).
///     tracing::info!("building the report");
///     Ok(())
/// }
///
/// nightly().unwrap();
/// ```
///
/// ## `crate`
///
/// The path of the runtime crate, for code that reaches it through a
/// re-export (as in tokio's `#[tokio::main(crate = "...")]`): `crate =
/// "my_app::deps::lock_runtime"` or `crate = my_app::deps::lock_runtime`.
///
/// ```
/// mod deps {
///     pub use lock_runtime as locks;
/// }
///
/// #[lock_runtime::lock("reexported", crate = deps::locks)]
/// fn reexported() -> Result<u8, lock_runtime::LockError> {
///     Ok(1)
/// }
///
/// assert_eq!(reexported().unwrap(), 1);
/// ```
///
/// # Sync and async functions
///
/// A sync function takes the lock with a blocking call: waiting blocks the
/// thread, so call a waiting sync function from async code through
/// `spawn_blocking`. It needs no async runtime. The guard is a hidden local
/// declared before the body, so it is dropped, and the lock released, after
/// the body's own locals. With `raise = false` the body runs in a closure
/// called on the spot (not an inner function, so `self`, generics and
/// `impl Trait` arguments work), which turns its `return x` into `Some(x)`.
///
/// An `async fn` awaits the lock, so waiting never blocks the executor, then
/// runs its body as an `async move` block (so `return` and `?` end the body,
/// not the function), then awaits the release, and only then returns: when
/// the caller gets the result, the lock is free for its next call. The
/// future stays `Send` when the body's is.
///
/// ```
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("sync-tenant-<tenant>", wait_for_ms = 500)]
/// async fn sync_tenant(tenant: String) -> Result<usize, LockError> {
///     Ok(tenant.len())
/// }
///
/// futures::executor::block_on(async {
///     assert_eq!(sync_tenant("acme".into()).await.unwrap(), 4);
///     // Released before the result came back.
///     assert!(Lock::new("sync-tenant-acme").try_acquire().unwrap().is_some());
/// });
/// ```
///
/// # Cancellation and panics
///
/// Dropping the future of a locked `async fn` at any point releases what it
/// holds: while it waits, nothing is held yet; inside the body, the guard is
/// dropped with the future and releases without blocking. So
/// `tokio::time::timeout`, `select!` and task abort are safe. A panic in the
/// body releases the lock as the guard drops during unwinding.
///
/// ```
/// use std::future::Future;
/// use std::pin::pin;
/// use std::task::{Context, Poll, Waker};
/// use lock_runtime::{lock, Lock, LockError};
///
/// #[lock("long-export")]
/// async fn long_export() -> Result<(), LockError> {
///     std::future::pending::<()>().await;
///     Ok(())
/// }
///
/// {
///     let mut export = pin!(long_export());
///     let mut cx = Context::from_waker(Waker::noop());
///     assert!(export.as_mut().poll(&mut cx).is_pending());
///     assert!(Lock::new("long-export").try_acquire().unwrap().is_none(), "held inside the body");
/// } // dropped part-way
/// assert!(Lock::new("long-export").try_acquire().unwrap().is_some());
/// ```
///
/// # Things to know
///
/// - Locks are not reentrant: a locked function that calls itself, or
///   another function with the same key, while holding it waits for itself
///   (until `wait_for_ms`), or fails with `wait = false`.
/// - A non-`async` function returning `impl Future` is a sync function: the
///   lock covers creating the future, not running it. Write an `async fn`.
///   With `raise = true` it is a compile error that says so (the lock's
///   error could not be returned in place of the future).
/// - The generated code names only `::core`, `::std` and
///   `::lock_runtime::__private` (or the `crate` path), so it works whatever
///   the calling crate calls its own items.
#[proc_macro_attribute]
pub fn lock(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Flavor::Lock, args, item)
}

/// [`macro@lock`] for work that should be skipped, not waited for, when
/// someone else is doing it: the defaults are `wait = false` and
/// `raise = false`, so the function returns `Option<T>`, `None` when it did
/// not run. Every option of [`macro@lock`] works here too; `wait_for_ms`
/// turns waiting on.
///
/// ```
/// use lock_runtime::{once, Lock};
///
/// #[once("nightly-<job>")]
/// fn nightly(job: &str) -> usize {
///     job.len()
/// }
///
/// #[once("heartbeat")]
/// fn heartbeat() {}
///
/// assert_eq!(nightly("reindex"), Some(7));
/// assert_eq!(heartbeat(), Some(()));
///
/// let _running = Lock::new("nightly-reindex").acquire().unwrap();
/// assert_eq!(nightly("reindex"), None, "skipped: someone else is on it");
/// assert_eq!(nightly("vacuum"), Some(6));
/// ```
#[proc_macro_attribute]
pub fn once(args: TokenStream, item: TokenStream) -> TokenStream {
    run(Flavor::Once, args, item)
}

/// On error the item goes out unchanged next to the `compile_error!`, so
/// there is one error, and the function still exists for the IDE and its
/// callers.
fn run(flavor: Flavor, args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(flavor, args.into(), item.clone()) {
        Ok(out) => out.into(),
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            out.into()
        }
    }
}
