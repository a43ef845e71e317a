//! Wake-ups: per watched key, one thread blocked in the kernel on the
//! current holder's liveness byte, which wakes every watch of the key when
//! that holder releases or dies. Watches come and go on a shared list; the
//! thread ends when it wakes and finds the list empty.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Files, lock, now, os};
use crate::backend::{BackendError, BackendErrorKind, Signal, Watch};

/// The watches of each watched key file; a key is in the map while its
/// thread runs.
#[derive(Default)]
pub(super) struct Watchers(Mutex<HashMap<PathBuf, Vec<(u64, Signal)>>>);

/// Looks again this soon when the key is free but still watched (its
/// waiters are on their way to take it), doubling up to `MAX_PAUSE`.
const MIN_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

pub(super) fn watch(
    watchers: &Arc<Watchers>,
    files: &Files,
    key: &str,
    signal: &Signal,
) -> Result<Watch, BackendError> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    let path = files.path(key);
    let start = {
        let mut map = lock(&watchers.0);
        let list = map.entry(path.clone()).or_default();
        list.push((id, signal.clone()));
        list.len() == 1
    };
    // A new list has no thread yet (an emptied one keeps its thread until
    // it wakes and sees the list empty; then it takes the list with it).
    if start {
        let (w, f, p) = (Arc::clone(watchers), files.clone(), path.clone());
        let spawned = std::thread::Builder::new()
            .name("lock-file-watch".into())
            .spawn(move || run(&w, &f, &p));
        if let Err(e) = spawned {
            lock(&watchers.0).remove(&path);
            return Err(BackendError::new(BackendErrorKind::Other, e));
        }
    }
    // In place at once: from here on the thread either reads the record
    // after a release (and sees it) or is blocked on the holder it read,
    // whose release wakes it.
    signal.ready();
    Ok(Watch::new(Unwatch {
        watchers: Arc::clone(watchers),
        path,
        id,
    }))
}

/// Takes one watch off its key's list when dropped.
struct Unwatch {
    watchers: Arc<Watchers>,
    path: PathBuf,
    id: u64,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        if let Some(list) = lock(&self.watchers.0).get_mut(&self.path) {
            list.retain(|(id, _)| *id != self.id);
        }
    }
}

/// The thread of one key: wait for its holder, wake its watches, again.
fn run(watchers: &Watchers, files: &Files, path: &std::path::Path) {
    let mut pause = MIN_PAUSE;
    let mut first = true;
    loop {
        {
            let mut map = lock(&watchers.0);
            if map.get(path).is_none_or(Vec::is_empty) {
                map.remove(path);
                return;
            }
        }
        match holder(files, path) {
            Some((file, fence)) => {
                pause = MIN_PAUSE;
                if os::wait_free(&file, fence).is_err() {
                    std::thread::sleep(MAX_PAUSE);
                }
            }
            None if first => {}
            None => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
        first = false;
        if let Some(list) = lock(&watchers.0).get(path) {
            for (_, signal) in list {
                signal.notify();
            }
        }
    }
}

/// The file and liveness byte of the key's live holder, if it has one (an
/// error reads as none: the waiters look for themselves).
fn holder(files: &Files, path: &std::path::Path) -> Option<(std::fs::File, u64)> {
    let file = files.row(path, false, true).ok()??;
    let now = now().ok()?;
    let rec = super::record::read(&file).ok()??;
    let live = files.live(&file, path, &rec, &now).ok()?;
    // The row lock must go before blocking: the holder needs it to release.
    file.unlock().ok()?;
    live.then_some((file, rec.fence))
}
