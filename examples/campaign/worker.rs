//! A worker process: critical sections on a few keys, through the builder
//! (sync and async) and `#[lock]` (sync and async), each writing to the
//! fenced resource with its token, each recorded in the worker's history
//! file (a line when the guard is in hand, a line when the body ends), until
//! the controller's stop file appears.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lock_runtime::registry;
use lock_runtime::{Lock, LockError, lock};

use super::history::{self, FailedWait, Hold, MODES, mono_ns};
use super::resource::Client;
use super::settings::{ALIAS, KEYS, Rng, Settings, alias_config};

/// The `#[lock]` deadline, which must be a literal: [`Settings::wait_for`].
const WAIT_FOR_MS: u64 = 3000;

/// What a worker is told, in [`WORKER_ENV`](super::settings::WORKER_ENV).
pub struct Args {
    pub index: u32,
    pub store: String,
    pub urls: Vec<String>,
    pub resource: SocketAddr,
    pub dir: PathBuf,
    pub seed: u64,
    /// Threads taking locks at once in this process (`--threads`), so that
    /// waiters of one process meet in its local line and hand the lock to
    /// each other.
    pub threads: u32,
}

impl Args {
    /// `index store url,url resource-addr dir seed threads`, as
    /// [`to_env`](Self::to_env) writes it.
    pub fn parse(text: &str) -> Result<Args, String> {
        let parts: Vec<&str> = text.split('\t').collect();
        let [index, store, urls, resource, dir, seed, threads] = parts.as_slice() else {
            return Err(format!("worker arguments {text:?}: expected 7 fields"));
        };
        Ok(Args {
            index: index.parse().map_err(|e| format!("index: {e}"))?,
            store: (*store).to_owned(),
            urls: urls.split(',').map(str::to_owned).collect(),
            resource: resource.parse().map_err(|e| format!("resource: {e}"))?,
            dir: dir.into(),
            seed: seed.parse().map_err(|e| format!("seed: {e}"))?,
            threads: threads.parse().map_err(|e| format!("threads: {e}"))?,
        })
    }

    pub fn to_env(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.index,
            self.store,
            self.urls.join(","),
            self.resource,
            self.dir.display(),
            self.seed,
            self.threads
        )
    }
}

/// The state of one hold's body, shared with a `#[lock]` body.
struct Body {
    hold: Hold,
    work: Duration,
    /// Whether to check `is_lost` before writing (builder holds do; a
    /// `#[lock]` body has no guard to ask).
    check_lost: bool,
    guard_lost: Option<Arc<AtomicU64>>,
}

struct Worker {
    args: Args,
    settings: Settings,
    log: Mutex<File>,
    resource: Mutex<Client>,
    pid: u32,
    /// The last hold's number in this process, over all its threads.
    holds: AtomicU64,
}

pub fn run(args: Args) -> Result<(), String> {
    let settings = Settings::default();
    registry::add(ALIAS, alias_config(&args.store, &args.urls, &settings)?)
        .map_err(|e| e.to_string())?;
    let path = args.dir.join(format!("w{:03}.jsonl", args.index));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let threads = args.threads.max(1);
    let w = Arc::new(Worker {
        resource: Mutex::new(Client::new(args.resource)),
        args,
        settings,
        log: Mutex::new(log),
        pid: std::process::id(),
        holds: AtomicU64::new(0),
    });
    std::thread::scope(|scope| {
        let loops: Vec<_> = (0..threads)
            .map(|thread| {
                let (w, rt) = (&w, &rt);
                scope.spawn(move || drive(w, rt, thread))
            })
            .collect();
        loops.into_iter().try_for_each(|l| {
            l.join()
                .unwrap_or_else(|_| Err("a worker thread panicked".into()))
        })
    })
}

/// One thread's critical sections, until the stop file appears.
fn drive(w: &Arc<Worker>, rt: &tokio::runtime::Runtime, thread: u32) -> Result<(), String> {
    let stop = w.args.dir.join("stop");
    let stream = u64::from(w.args.index) + 1 + (u64::from(thread) << 32);
    let mut rng = Rng::new(w.args.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut turn = 0u64;
    while !Path::new(&stop).exists() {
        turn += 1;
        let n = w.holds.fetch_add(1, Ordering::SeqCst) + 1;
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let mode = MODES[(turn % MODES.len() as u64) as usize];
        // Builder holds are now and then longer than the lease, so that
        // renewals (and their failure under faults) are part of the run.
        let long = mode.starts_with("builder") && rng.below(8) == 0;
        let work = if long {
            w.settings.lease * 3 / 2
        } else {
            Duration::from_millis(5 + rng.below(35))
        };
        let started = mono_ns();
        let hold = Hold {
            worker: w.args.index,
            // The call's time until the guard is in hand (`acquired`).
            start: started,
            pid: w.pid,
            hold: n,
            key: key.to_owned(),
            mode: mode.to_owned(),
            ..Hold::default()
        };
        let body = Body {
            hold,
            work,
            check_lost: mode.starts_with("builder"),
            guard_lost: None,
        };
        let outcome = match mode {
            "builder_sync" => builder_sync(w, rt, body),
            "builder_async" => rt.block_on(builder_async(Arc::clone(w), body)),
            "attr_sync" => {
                let cell = Mutex::new(body);
                let r = attr_sync(key, w, &cell);
                finish_attr(
                    w,
                    cell.into_inner().unwrap_or_else(PoisonError::into_inner),
                    r,
                )
            }
            _ => {
                let cell = Arc::new(Mutex::new(body));
                let r = rt.block_on(attr_async(key.to_owned(), Arc::clone(w), Arc::clone(&cell)));
                let body = Arc::try_unwrap(cell)
                    .map_err(|_| "the async body outlived its call".to_owned())?
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner);
                finish_attr(w, body, r)
            }
        };
        if let Err(e) = outcome {
            w.line(&history::wait_line(&FailedWait {
                worker: w.args.index,
                start: started,
                waited: mono_ns() - started,
                error: e.to_string(),
            }));
            // A store that is down fails at once; a client backs off
            // rather than spin.
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(rng.below(10)));
    }
    Ok(())
}

impl Worker {
    fn line(&self, line: &str) {
        let mut f = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        // One write per line, so that a kill cuts at most the last one.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }

    /// The guard is in hand: record it.
    fn acquired(&self, body: &mut Body, token: Option<u64>, called: u64) {
        body.hold.start = mono_ns();
        body.hold.waited = body.hold.start - called;
        body.hold.token = token.unwrap_or(0);
        self.line(&history::acq_line(&body.hold));
    }

    /// The write at the end of the body: skipped when the guard says lost.
    fn write(&self, body: &mut Body, lost_now: bool) {
        let now = mono_ns();
        if body.check_lost && lost_now {
            body.hold.lost = Some(body.hold.lost.map_or(now, |l| l.min(now)));
            body.hold.write = Some("skipped".into());
            return;
        }
        body.hold.write_at = Some(now);
        let h = &body.hold;
        let r = self
            .resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(&h.key, h.token, h.worker, h.hold);
        body.hold.write = Some(match r {
            Ok(true) => "ok".into(),
            Ok(false) => "stale".into(),
            Err(e) => format!("error: {e}"),
        });
    }

    /// The body ended: record it, with the guard's lost time if it fired.
    fn ended(&self, body: &mut Body, release: Result<(), LockError>) {
        if body.hold.end.is_none() {
            body.hold.end = Some(mono_ns());
        }
        let fired = body.guard_lost.as_ref().map(|a| a.load(Ordering::SeqCst));
        if let Some(at) = fired.filter(|&at| at != 0) {
            body.hold.lost = Some(body.hold.lost.map_or(at, |l| l.min(at)));
        }
        // A builder's release that finds the lock gone is when this worker
        // saw the loss (a `#[lock]` function does not say: its release
        // reports a loss in the `lock.held` span only).
        if release.as_ref().is_err_and(LockError::is_not_held) && body.hold.lost.is_none() {
            body.hold.lost = Some(mono_ns());
        }
        body.hold.release = Some(match release {
            Ok(()) => "ok".into(),
            Err(e) if e.is_not_held() => "not_held".into(),
            Err(e) => format!("error: {e}"),
        });
        self.line(&history::end_line(&body.hold));
    }
}

/// Waits for the guard's lost signal on the runtime, until `done` fires;
/// the time it fired goes to the returned cell.
fn watch_lost(
    rt: &tokio::runtime::Handle,
    lost: lock_runtime::Lost,
) -> (Arc<AtomicU64>, tokio::sync::oneshot::Sender<()>) {
    let at = Arc::new(AtomicU64::new(0));
    let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
    let cell = Arc::clone(&at);
    rt.spawn(async move {
        tokio::select! {
            _ = lost => cell.store(mono_ns(), Ordering::SeqCst),
            _ = done_rx => {}
        }
    });
    (at, done)
}

fn builder_sync(w: &Worker, rt: &tokio::runtime::Runtime, mut body: Body) -> Result<(), LockError> {
    let called = mono_ns();
    let guard = Lock::new(body.hold.key.clone())
        .alias(ALIAS)
        .wait_for(w.settings.wait_for)
        .acquire()?;
    w.acquired(&mut body, guard.fencing_token(), called);
    let (at, done) = watch_lost(rt.handle(), guard.lost());
    body.guard_lost = Some(at);
    std::thread::sleep(body.work);
    w.write(&mut body, guard.is_lost());
    body.hold.end = Some(mono_ns());
    let _ = done.send(());
    let release = guard.release();
    w.ended(&mut body, release);
    Ok(())
}

async fn builder_async(w: Arc<Worker>, mut body: Body) -> Result<(), LockError> {
    let called = mono_ns();
    let guard = Lock::new(body.hold.key.clone())
        .alias(ALIAS)
        .wait_for(w.settings.wait_for)
        .acquire_async()
        .await?;
    w.acquired(&mut body, guard.fencing_token(), called);
    let (at, done) = watch_lost(&tokio::runtime::Handle::current(), guard.lost());
    body.guard_lost = Some(at);
    tokio::time::sleep(body.work).await;
    // The resource client is blocking: one short round trip on loopback.
    w.write(&mut body, guard.is_lost());
    body.hold.end = Some(mono_ns());
    let _ = done.send(());
    let release = guard.release_async().await;
    w.ended(&mut body, release);
    Ok(())
}

#[lock("<key>", alias = "campaign", fencing = token, wait_for_ms = 3000)]
fn attr_sync(token: u64, key: &str, w: &Worker, cell: &Mutex<Body>) -> Result<(), LockError> {
    let _ = key;
    let mut body = cell.lock().unwrap_or_else(PoisonError::into_inner);
    let called = body.hold.start;
    w.acquired(&mut body, Some(token), called);
    std::thread::sleep(body.work);
    w.write(&mut body, false);
    body.hold.end = Some(mono_ns());
    Ok(())
}

/// Records the body's end when an `on_lost = "cancel"` stop drops it.
struct EndOnDrop {
    cell: Arc<Mutex<Body>>,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let mut body = self.cell.lock().unwrap_or_else(PoisonError::into_inner);
        if body.hold.end.is_none() {
            let now = mono_ns();
            body.hold.end = Some(now);
            // Cancelled: the runtime saw the lock lost.
            body.hold.lost = Some(now);
            if body.hold.write.is_none() {
                body.hold.write = Some("cancelled".into());
            }
        }
    }
}

#[lock("<key>", alias = "campaign", fencing = token, wait_for_ms = 3000, on_lost = "cancel")]
async fn attr_async(
    token: u64,
    key: String,
    w: Arc<Worker>,
    cell: Arc<Mutex<Body>>,
) -> Result<(), LockError> {
    let _ = key;
    let work = {
        let mut body = cell.lock().unwrap_or_else(PoisonError::into_inner);
        let called = body.hold.start;
        w.acquired(&mut body, Some(token), called);
        body.work
    };
    let _end = EndOnDrop {
        cell: Arc::clone(&cell),
    };
    tokio::time::sleep(work).await;
    let mut body = cell.lock().unwrap_or_else(PoisonError::into_inner);
    w.write(&mut body, false);
    body.hold.end = Some(mono_ns());
    Ok(())
}

/// After a `#[lock]` call: record the hold's end, or the failed wait (the
/// body never ran when `start` is still the call's time and no token).
fn finish_attr(w: &Worker, mut body: Body, r: Result<(), LockError>) -> Result<(), LockError> {
    if body.hold.token == 0 {
        // The body never ran: the acquisition failed.
        return r;
    }
    w.ended(&mut body, r);
    Ok(())
}

const _: () = assert!(WAIT_FOR_MS == Settings::WAIT_FOR_MS);
