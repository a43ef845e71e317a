//! The attributes on `async fn`: the guard is awaited before the body and
//! released (awaited) before the result is returned; a future dropped
//! part-way, aborted or cut by a timeout releases its lock.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lock_runtime::{Lock, LockError, lock, once};
use support::{held, is_free};
use tokio::sync::oneshot;

#[derive(Debug)]
enum AppError {
    Lock(LockError),
    Invalid(&'static str),
}

impl From<LockError> for AppError {
    fn from(e: LockError) -> Self {
        AppError::Lock(e)
    }
}

#[lock("async-busy-<n>", wait = false)]
async fn busy_or_ran(n: u32) -> Result<u32, AppError> {
    tokio::task::yield_now().await;
    Ok(n * 2)
}

#[tokio::test]
async fn busy_is_an_error_value() {
    assert_eq!(busy_or_ran(1).await.unwrap(), 2);
    let held = Lock::new("async-busy-1").acquire_async().await.unwrap();
    match busy_or_ran(1).await {
        Err(AppError::Lock(e)) => assert!(e.is_busy(), "{e:?}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(busy_or_ran(2).await.unwrap(), 4, "another key");
    drop(held);
    assert_eq!(busy_or_ran(1).await.unwrap(), 2);
}

#[lock("async-timeout", wait_for_ms = 40)]
async fn times_out() -> Result<(), AppError> {
    Ok(())
}

#[tokio::test]
async fn wait_for_ms_gives_up_with_timeout() {
    let _held = Lock::new("async-timeout").acquire_async().await.unwrap();
    let started = tokio::time::Instant::now();
    match times_out().await {
        Err(AppError::Lock(e)) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(40));
}

#[lock("async-question-mark-<input>")]
async fn parse(input: &str) -> Result<u32, AppError> {
    // `?` converts into the declared error type: the async block wrapping
    // the body knows its return type.
    let n = input.parse::<u32>().map_err(|_| "not a number")?;
    if n == 0 {
        return Err(AppError::Invalid("zero"));
    }
    Ok(n)
}

impl From<&'static str> for AppError {
    fn from(e: &'static str) -> Self {
        AppError::Invalid(e)
    }
}

#[tokio::test]
async fn question_mark_and_early_return_release() {
    assert_eq!(parse("3").await.unwrap(), 3);
    assert!(matches!(
        parse("x").await,
        Err(AppError::Invalid("not a number"))
    ));
    assert!(matches!(parse("0").await, Err(AppError::Invalid("zero"))));
    for key in [
        "async-question-mark-3",
        "async-question-mark-x",
        "async-question-mark-0",
    ] {
        assert!(is_free(key), "{key} still held");
    }
}

#[lock("async-release-before-return")]
async fn reports_its_lock() -> Result<bool, AppError> {
    tokio::task::yield_now().await;
    Ok(held("async-release-before-return"))
}

#[tokio::test]
async fn the_lock_is_released_before_the_result_is_returned() {
    assert!(reports_its_lock().await.unwrap(), "held while the body ran");
    assert!(is_free("async-release-before-return"));
}

#[lock("async-parked-<name>")]
async fn parks(name: &str, entered: oneshot::Sender<()>) -> Result<(), AppError> {
    let _ = name;
    entered.send(()).unwrap();
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test]
async fn a_future_dropped_part_way_releases() {
    let (tx, rx) = oneshot::channel();
    let mut fut = Box::pin(parks("dropped", tx));
    // Drive it until the body runs, then drop it mid-body.
    tokio::select! {
        _ = &mut fut => unreachable!("it never finishes"),
        entered = rx => entered.unwrap(),
    }
    assert!(held("async-parked-dropped"));
    drop(fut);
    assert!(is_free("async-parked-dropped"));
}

#[tokio::test]
async fn a_future_cut_by_a_timeout_releases() {
    let (tx, rx) = oneshot::channel();
    let cut = tokio::time::timeout(Duration::from_millis(50), parks("timeout", tx)).await;
    assert!(cut.is_err(), "the body never finishes");
    rx.await.expect("the body had started");
    assert!(is_free("async-parked-timeout"));
}

#[tokio::test]
async fn an_aborted_task_releases() {
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(parks("aborted", tx));
    rx.await.unwrap();
    assert!(held("async-parked-aborted"));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(is_free("async-parked-aborted"));
}

#[lock("async-waiter-cancelled")]
async fn quick() -> Result<(), AppError> {
    Ok(())
}

#[tokio::test]
async fn a_future_cancelled_while_waiting_for_the_lock_leaves_nothing_held() {
    let holder = Lock::new("async-waiter-cancelled")
        .acquire_async()
        .await
        .unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(30), quick()).await;
    assert!(cut.is_err(), "it was waiting");
    drop(holder);
    assert!(is_free("async-waiter-cancelled"));
    quick().await.unwrap();
}

static ONCE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[once("async-once")]
async fn nightly(entered: oneshot::Sender<()>, leave: oneshot::Receiver<()>) -> u8 {
    ONCE_RUNS.fetch_add(1, Ordering::SeqCst);
    entered.send(()).unwrap();
    leave.await.unwrap();
    7
}

#[tokio::test]
async fn once_skips_a_concurrent_second_call() {
    let (entered, inside) = oneshot::channel();
    let (release, leave) = oneshot::channel();
    let first = tokio::spawn(nightly(entered, leave));
    inside.await.unwrap();
    let (second_entered, second_inside) = oneshot::channel();
    let (_keep, second_leave) = oneshot::channel();
    assert_eq!(nightly(second_entered, second_leave).await, None);
    assert!(second_inside.await.is_err(), "the second body never ran");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap(), Some(7));
    assert_eq!(ONCE_RUNS.load(Ordering::SeqCst), 1);
    assert!(is_free("async-once"));
}

#[once("async-once-unit")]
async fn unit_once() {}

#[once("async-once-impl")]
async fn opaque() -> impl std::fmt::Display {
    5
}

#[tokio::test]
async fn once_wraps_unit_and_impl_trait_returns() {
    let ran: Option<()> = unit_once().await;
    assert_eq!(ran, Some(()));
    assert_eq!(opaque().await.map(|d| d.to_string()), Some("5".into()));
    let _held = Lock::new("async-once-unit").acquire_async().await.unwrap();
    assert_eq!(unit_once().await, None);
}

struct Repo {
    id: u32,
    saved: Vec<u32>,
}

impl Repo {
    #[lock("async-repo-<self.id>", wait = false)]
    async fn save(&mut self, n: u32) -> Result<usize, AppError> {
        tokio::task::yield_now().await;
        self.saved.push(n);
        Ok(self.saved.len())
    }

    #[lock("async-repo-<self.id>", wait = false)]
    async fn count(&self) -> Result<usize, AppError> {
        Ok(self.saved.len())
    }

    #[once("async-repo-close-<self.id>")]
    async fn close(self) -> Vec<u32> {
        self.saved
    }
}

trait Store {
    async fn put(&self, n: u32) -> Result<u32, AppError>;
}

impl Store for Repo {
    #[lock("async-store-<n>", wait = false)]
    async fn put(&self, n: u32) -> Result<u32, AppError> {
        Ok(n + self.id)
    }
}

#[tokio::test]
async fn async_methods_and_trait_methods_work() {
    let mut repo = Repo {
        id: 4,
        saved: Vec::new(),
    };
    assert_eq!(repo.save(1).await.unwrap(), 1);
    assert_eq!(repo.count().await.unwrap(), 1);
    assert_eq!(repo.put(10).await.unwrap(), 14);
    {
        let _held = Lock::new("async-repo-4").acquire_async().await.unwrap();
        assert!(matches!(repo.save(2).await, Err(AppError::Lock(_))));
        assert_eq!(repo.saved, [1], "the body did not run");
    }
    {
        let _held = Lock::new("async-store-10").acquire_async().await.unwrap();
        assert!(matches!(repo.put(10).await, Err(AppError::Lock(_))));
    }
    assert_eq!(repo.close().await, Some(vec![1]));
}

static INSIDE: AtomicUsize = AtomicUsize::new(0);

#[lock("async-multi-thread")]
async fn critical(total: Arc<AtomicUsize>) -> Result<(), AppError> {
    assert_eq!(
        INSIDE.fetch_add(1, Ordering::SeqCst),
        0,
        "two holders at once"
    );
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_micros(200)).await;
    total.fetch_add(1, Ordering::Relaxed);
    INSIDE.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_a_multi_thread_runtime_exclude_each_other() {
    let total = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let total = Arc::clone(&total);
            // `tokio::spawn` needs a `Send` future: the expansion keeps it one.
            tokio::spawn(async move {
                for _ in 0..25 {
                    critical(Arc::clone(&total)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(total.load(Ordering::Relaxed), 200);
    assert!(is_free("async-multi-thread"));
}

static DIGESTS: AtomicUsize = AtomicUsize::new(0);

#[once("async-digest", expire = "1h", delete_on_exit = false)]
async fn digest() -> usize {
    tokio::task::yield_now().await;
    DIGESTS.fetch_add(1, Ordering::SeqCst) + 1
}

#[lock("async-keep-<n>", expire = "1h", delete_on_exit = false, wait = false)]
async fn keep(n: u32) -> Result<u32, AppError> {
    Ok(n)
}

#[lock(
    "async-keep-cancelled",
    expire = "1h",
    delete_on_exit = false,
    on_lost = "cancel"
)]
async fn keep_with_cancel() -> Result<(), AppError> {
    Ok(())
}

#[tokio::test]
async fn delete_on_exit_false_keeps_the_lock_after_an_async_fn_returns() {
    assert_eq!(digest().await, Some(1));
    assert_eq!(digest().await, None, "not again within the hour");
    assert_eq!(DIGESTS.load(Ordering::SeqCst), 1);
    assert!(held("async-digest"));

    assert_eq!(keep(1).await.unwrap(), 1);
    assert!(held("async-keep-1"), "kept after an `Ok`");
    match keep(1).await {
        Err(AppError::Lock(e)) => assert!(e.is_busy(), "{e:?}"),
        other => panic!("expected Busy, got {other:?}"),
    }

    keep_with_cancel().await.unwrap();
    assert!(held("async-keep-cancelled"), "kept with `on_lost` too");
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn futures_stay_send_with_placeholders_in_the_key() {
    // `tokio::spawn` needs it; the rendered key's parts must not live across an await.
    assert_send(&busy_or_ran(1));
    assert_send(&digest());
}

/// `#[async_trait]` on the trait and the impl runs before `#[lock]` on a
/// method, which then sees `fn .. -> Pin<Box<dyn Future ..>> { Box::pin(async move { .. }) }`
/// and locks around the boxed future's body.
#[async_trait::async_trait]
trait Jobs: Send + Sync {
    async fn run(&self, n: u32) -> Result<bool, AppError>;
    async fn sweep(&self, n: u32) -> Option<u32>;
    async fn fenced(&self) -> Result<u64, AppError>;
}

struct Worker {
    id: u32,
}

#[async_trait::async_trait]
impl Jobs for Worker {
    #[lock("async-trait-<self.id>-<n>", wait = false)]
    async fn run(&self, n: u32) -> Result<bool, AppError> {
        tokio::task::yield_now().await;
        // Held while the future runs, not only while it is created.
        Ok(held(&format!("async-trait-{}-{n}", self.id)))
    }

    #[once("async-trait-sweep-<n>")]
    async fn sweep(&self, n: u32) -> u32 {
        tokio::task::yield_now().await;
        n + self.id
    }

    #[lock("async-trait-fenced-<self.id>", fencing = token)]
    async fn fenced(&self, token: u64) -> Result<u64, AppError> {
        Ok(token)
    }
}

#[tokio::test]
async fn async_trait_methods_lock_through_a_trait_object() {
    let jobs: Arc<dyn Jobs> = Arc::new(Worker { id: 1 });
    assert!(jobs.run(2).await.unwrap(), "held inside the body");
    assert!(is_free("async-trait-1-2"), "released on return");
    {
        let _held = Lock::new("async-trait-1-2").acquire_async().await.unwrap();
        match jobs.run(2).await {
            Err(AppError::Lock(e)) => assert!(e.is_busy(), "{e:?}"),
            other => panic!("expected Busy, got {other:?}"),
        }
    }
    assert_eq!(jobs.sweep(5).await, Some(6));
    {
        let _held = Lock::new("async-trait-sweep-5")
            .acquire_async()
            .await
            .unwrap();
        assert_eq!(jobs.sweep(5).await, None, "skipped");
    }
    let first = jobs.fenced().await.unwrap();
    assert!(jobs.fenced().await.unwrap() > first);
    // The boxed future is `Send`: it can be spawned.
    let jobs2 = Arc::clone(&jobs);
    assert!(
        tokio::spawn(async move { jobs2.run(3).await.unwrap() })
            .await
            .unwrap()
    );
}
