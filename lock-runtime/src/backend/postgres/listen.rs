//! Wake-ups: one LISTEN connection per store, on the runtime's I/O thread,
//! handing each NOTIFY a release sends to the signals watching its key. A
//! lost connection is reconnected; meanwhile waiters look again at their
//! holder's lease end (and every second at most), and once LISTEN is back
//! every waiter is woken, since a release may have gone unheard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::backend::{BackendError, Signal, Watch};

/// The longest pause between two tries to get LISTEN back.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(super) struct Listener {
    shared: Arc<Shared>,
    /// Ends the listening task when the store goes.
    stop: Arc<Notify>,
}

struct Shared {
    config: Config,
    channel: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    watchers: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    by_key: HashMap<String, Vec<(u64, Signal)>>,
    next_id: u64,
    started: bool,
    /// LISTEN is in place: a new watch is ready at once.
    listening: bool,
}

impl Watchers {
    fn all(&self) -> Vec<Signal> {
        self.by_key
            .values()
            .flatten()
            .map(|(_, s)| s.clone())
            .collect()
    }
}

impl Listener {
    pub(super) fn new(
        config: Config,
        channel: String,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                channel,
                connect_timeout,
                command_timeout,
                watchers: Mutex::default(),
            }),
            stop: Arc::new(Notify::new()),
        }
    }

    /// Registers `signal` for `key`, starting the listening task on first
    /// use; ready at once if LISTEN is in place, else when it is.
    pub(super) fn watch(&self, key: &str, signal: &Signal) -> Result<Watch, BackendError> {
        let id = {
            let mut w = lock(&self.shared.watchers);
            if !w.started {
                crate::rt::spawn(listen(Arc::downgrade(&self.shared), Arc::clone(&self.stop)))?;
                w.started = true;
            }
            let id = w.next_id;
            w.next_id += 1;
            w.by_key
                .entry(super::sql::payload(key))
                .or_default()
                .push((id, signal.clone()));
            if w.listening {
                signal.ready();
            }
            id
        };
        Ok(Watch::new(Unwatch {
            shared: Arc::downgrade(&self.shared),
            key: super::sql::payload(key),
            id,
        }))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

struct Unwatch {
    shared: Weak<Shared>,
    key: String,
    id: u64,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut w = lock(&shared.watchers);
        if let Some(list) = w.by_key.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                w.by_key.remove(&self.key);
            }
        }
    }
}

impl Shared {
    /// A release of the key whose payload is `key` (or, with an empty
    /// payload, of a key too long for one: every key). Watchers are kept by
    /// payload.
    fn dispatch(&self, key: &str) {
        let w = lock(&self.watchers);
        if key.is_empty() {
            w.all().iter().for_each(Signal::notify);
        } else if let Some(list) = w.by_key.get(key) {
            list.iter().for_each(|(_, s)| s.notify());
        }
    }

    fn set_listening(&self, listening: bool) {
        let signals = {
            let mut w = lock(&self.watchers);
            w.listening = listening;
            w.all()
        };
        for s in signals {
            // Ready again (and woken) once back; woken on a loss too, so
            // that waiters look now rather than at their next timer.
            if listening { s.ready() } else { s.notify() }
        }
    }
}

/// The listening task: connect, LISTEN, hand notifications out until the
/// connection ends, and again, until the store goes.
async fn listen(shared: Weak<Shared>, stop: Arc<Notify>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(s) = shared.upgrade() else { return };
        let (config, channel) = (s.config.clone(), s.channel.clone());
        let (connect_timeout, command_timeout) = (s.connect_timeout, s.command_timeout);
        drop(s);
        let connected = tokio::time::timeout(connect_timeout, config.connect(NoTls)).await;
        let Ok(Ok((client, mut connection))) = connected else {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.notified() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        let deliver = shared.clone();
        let mut driver = tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => match deliver.upgrade() {
                        Some(s) => s.dispatch(n.payload()),
                        None => return,
                    },
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "the Postgres LISTEN connection ended");
                        return;
                    }
                }
            }
        });
        let sql = format!("LISTEN \"{channel}\"");
        let listening = tokio::time::timeout(command_timeout, client.batch_execute(&sql)).await;
        if matches!(listening, Ok(Ok(()))) {
            backoff = Duration::from_millis(20);
            if let Some(s) = shared.upgrade() {
                s.set_listening(true);
            }
            tokio::select! {
                _ = &mut driver => {}
                () = stop.notified() => {
                    driver.abort();
                    return;
                }
            }
            if let Some(s) = shared.upgrade() {
                s.set_listening(false);
            }
        } else {
            driver.abort();
        }
        drop(client);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.notified() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
