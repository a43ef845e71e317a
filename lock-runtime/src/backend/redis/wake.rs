//! Wake-ups for waiters on busy Redis locks: one subscriber connection per
//! store, one channel per waited-on key (subscribed while someone in this
//! process waits on it, plus a short linger), and a local queue of waiters
//! per key. A release that frees a lock publishes an empty message on the
//! key's channel, which wakes the first local waiter that is not awake yet.
//! A release that grants the lock to the head of the line sends
//! `<token>:<fence>:<key>` on the channel of the head's process alone (each
//! connection subscribes to its process's channel first), which wakes the
//! waiter that owns the token with the lock; a grant that comes before that
//! waiter registered is kept for its registration.
//!
//! A waiter registers before its last look at the lock, so a release that
//! happens in between is never missed; a waiter in line whose subscriber
//! connection stayed up since its look needs no look after registering. If
//! the subscriber connection drops, every waiter is woken to look again; the
//! next wait subscribes anew.
//!
//! Sync waiters share a subscriber on the store's I/O thread; async waiters
//! in a Tokio runtime share one driven by that runtime, so the wake-up does
//! not hop through another thread on its way to the task.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::Client;
use redis::aio::PubSubSink;

use crate::backend::{BackendError, BackendErrorKind, EncodedToken, Token};

/// How long a channel stays subscribed after its last local waiter left, so
/// that steady contention does not subscribe and unsubscribe every time.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct Wakeups {
    shared: Arc<Shared>,
}

/// How many runtimes' subscribers a store keeps (as for connections: the
/// ones of runtimes that are gone are never used again).
const MAX_RUNTIMES: usize = 8;

/// A store's subscribers: one on the I/O thread for sync waiters, and one
/// per Tokio runtime for the async waiters on it, so that a wake-up reaches a
/// waiting task without crossing threads.
pub(crate) struct Subscribers {
    client: Client,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// This process's own channel (see [`Shared::own`]).
    own: Arc<str>,
    io: Wakeups,
    by_runtime: Mutex<VecDeque<(tokio::runtime::Id, Wakeups)>>,
}

impl Subscribers {
    /// `own`: the channel on which releases send this process's waiters
    /// their grants.
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        command_timeout: Duration,
        own: String,
    ) -> Self {
        let own: Arc<str> = own.into();
        Self {
            io: Wakeups::new(
                client.clone(),
                connect_timeout,
                command_timeout,
                Arc::clone(&own),
            ),
            client,
            connect_timeout,
            command_timeout,
            own,
            by_runtime: Mutex::new(VecDeque::new()),
        }
    }

    /// The I/O thread's subscriber, for sync waiters: subscribe through
    /// `io::block_on`.
    pub(crate) fn io(&self) -> Wakeups {
        self.io.clone()
    }

    /// The subscriber of the runtime this runs on: await its subscriptions
    /// right here.
    pub(crate) fn here(&self) -> Wakeups {
        let Some(handle) = super::io::caller_runtime() else {
            return self.io.clone();
        };
        let id = handle.id();
        let mut subs = lock(&self.by_runtime);
        if let Some((_, w)) = subs.iter().find(|(rt, _)| *rt == id) {
            return w.clone();
        }
        if subs.len() >= MAX_RUNTIMES {
            subs.pop_front();
        }
        let w = Wakeups::new(
            self.client.clone(),
            self.connect_timeout,
            self.command_timeout,
            Arc::clone(&self.own),
        );
        subs.push_back((id, w.clone()));
        w
    }
}

struct Shared {
    client: Client,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The channel of this process (named by its tokens' common head),
    /// subscribed with every connection before any lock's channel: a
    /// release that grants a lock to a waiter in line sends the grant there,
    /// so that only the waiter's process reads it, not every process
    /// subscribed to the lock.
    own: Arc<str>,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
}

/// The most grants kept for waiters not (yet) registered, per subscriber.
const UNCLAIMED: usize = 64;

#[derive(Default)]
struct State {
    /// Grants that came on this process's channel for a waiter not
    /// registered here (yet): a waiter in line registers after its look, and
    /// a release may grant it the lock in between. Its registration picks
    /// the grant up. The newest [`UNCLAIMED`], none older than the waiter
    /// TTL.
    unclaimed: VecDeque<(Vec<u8>, u64, Instant)>,
    sink: Option<PubSubSink>,
    /// Bumped on every new subscriber connection; a channel subscribed in an
    /// older generation is not subscribed any more.
    generation: u64,
    channels: HashMap<String, Channel>,
}

#[derive(Default)]
struct Channel {
    waiters: VecDeque<Arc<LocalWaiter>>,
    subscribed_in: Option<u64>,
    idle_since: Option<Instant>,
}

/// One waiting acquisition, as the subscriber sees it.
pub(crate) struct LocalWaiter {
    token: EncodedToken,
    signalled: AtomicBool,
    /// The fencing token of a lock a release granted to this waiter; 0 for
    /// none (tokens start at 1).
    grant: AtomicU64,
    wake: Mutex<Wake>,
}

enum Wake {
    Thread(Thread),
    Task(Option<Waker>),
}

impl LocalWaiter {
    /// A waiter that parks the calling thread.
    pub(crate) fn for_thread(token: Token) -> Arc<Self> {
        Self::new(token, Wake::Thread(std::thread::current()))
    }

    /// A waiter for an async task.
    pub(crate) fn for_task(token: Token) -> Arc<Self> {
        Self::new(token, Wake::Task(None))
    }

    fn new(token: Token, wake: Wake) -> Arc<Self> {
        Arc::new(Self {
            token: token.encode(),
            signalled: AtomicBool::new(false),
            grant: AtomicU64::new(0),
            wake: Mutex::new(wake),
        })
    }

    pub(crate) fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        match &mut *lock(&self.wake) {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
        }
    }

    /// Wakes the waiter with a lock a release granted it (fencing token
    /// `fence`).
    pub(crate) fn grant(&self, fence: u64) {
        self.grant.store(fence, Ordering::Release);
        self.signal();
    }

    /// Whether a grant waits to be taken.
    pub(crate) fn has_grant(&self) -> bool {
        self.grant.load(Ordering::Acquire) != 0
    }

    /// The fencing token of a grant that came with a wake-up, if one did:
    /// the lock is this waiter's already.
    pub(crate) fn take_grant(&self) -> Option<u64> {
        match self.grant.swap(0, Ordering::AcqRel) {
            0 => None,
            fence => Some(fence),
        }
    }

    /// Consumes a wake-up, if one came.
    pub(crate) fn take_signal(&self) -> bool {
        self.signalled.swap(false, Ordering::AcqRel)
    }

    /// Parks the thread until a wake-up or `until`.
    pub(crate) fn park_until(&self, until: Option<Instant>) {
        while !self.signalled.load(Ordering::Acquire) {
            match until {
                None => std::thread::park(),
                Some(u) => {
                    let now = Instant::now();
                    if now >= u {
                        return;
                    }
                    std::thread::park_timeout(u - now);
                }
            }
        }
    }

    /// Resolves on a wake-up (the caller races it against its timer).
    pub(crate) fn signalled(&self) -> Signalled<'_> {
        Signalled(self)
    }
}

pub(crate) struct Signalled<'a>(&'a LocalWaiter);

impl Future for Signalled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Wake::Task(w) = &mut *lock(&self.0.wake) {
            match w {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        if self.0.signalled.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A waiter's registration on a channel; dropping it leaves the local
/// queue, passing on a wake-up it did not use.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    channel: String,
    waiter: Arc<LocalWaiter>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        if let Some(ch) = st.channels.get_mut(&self.channel) {
            ch.waiters.retain(|w| !Arc::ptr_eq(w, &self.waiter));
            if self.waiter.take_signal() {
                // It was woken but gives up without looking: the next one looks.
                if let Some(next) = ch
                    .waiters
                    .iter()
                    .find(|w| !w.signalled.load(Ordering::Acquire))
                {
                    next.signal();
                }
            }
            if ch.waiters.is_empty() {
                ch.idle_since = Some(Instant::now());
            }
        }
    }
}

impl Wakeups {
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        command_timeout: Duration,
        own: Arc<str>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                connect_timeout,
                command_timeout,
                own,
                state: Mutex::new(State::default()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Puts `waiter` in line for wake-ups on `channel`. It is not yet known
    /// to be subscribed: call [`Watch::subscribe`] before the last look.
    pub(crate) fn register(&self, channel: &str, waiter: &Arc<LocalWaiter>) -> Watch {
        let mut st = lock(&self.shared.state);
        let ch = st.channels.entry(channel.to_owned()).or_default();
        ch.waiters.push_back(Arc::clone(waiter));
        ch.idle_since = None;
        let mine = waiter.token.as_str().as_bytes();
        if let Some(i) = st.unclaimed.iter().position(|(t, _, _)| t == mine)
            && let Some((_, fence, _)) = st.unclaimed.remove(i)
        {
            waiter.grant(fence);
        }
        Watch {
            shared: Arc::clone(&self.shared),
            channel: channel.to_owned(),
            waiter: Arc::clone(waiter),
        }
    }
}

impl Wakeups {
    /// The number of the live subscriber connection, if one is up. Taken
    /// before a look and again after the registration that follows it: the
    /// same number means this process's channel was subscribed all along,
    /// so a grant sent after the look reached the waiter (at once, or on
    /// registering).
    pub(crate) fn live_generation(&self) -> Option<u64> {
        let st = lock(&self.shared.state);
        st.sink.as_ref().map(|_| st.generation)
    }
}

impl Watch {
    /// Whether the channel is subscribed on the live connection.
    pub(crate) fn is_subscribed(&self) -> bool {
        let st = lock(&self.shared.state);
        st.sink.is_some()
            && st.channels.get(&self.channel).and_then(|c| c.subscribed_in) == Some(st.generation)
    }

    /// Makes sure the channel is subscribed, connecting the subscriber if
    /// needed. Runs on the I/O thread.
    pub(crate) fn subscribe(
        &self,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'static + use<> {
        let shared = Arc::clone(&self.shared);
        let channel = self.channel.clone();
        async move { subscribe(&shared, &channel).await }
    }
}

async fn subscribe(shared: &Arc<Shared>, channel: &str) -> Result<(), BackendError> {
    let (mut sink, generation) = connected(shared).await?;
    {
        let st = lock(&shared.state);
        if st.channels.get(channel).and_then(|c| c.subscribed_in) == Some(generation) {
            return Ok(());
        }
    }
    subscribe_on(&mut sink, channel, shared.command_timeout).await?;
    let mut st = lock(&shared.state);
    if st.generation == generation {
        st.channels
            .entry(channel.to_owned())
            .or_default()
            .subscribed_in = Some(generation);
    }
    Ok(())
}

/// `SUBSCRIBE channel` on `sink`, answered within `timeout`.
async fn subscribe_on(
    sink: &mut PubSubSink,
    channel: &str,
    timeout: Duration,
) -> Result<(), BackendError> {
    match tokio::time::timeout(timeout, sink.subscribe(channel)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(super::backend_error(e)),
        Err(_) => Err(BackendError::new(
            BackendErrorKind::Timeout,
            "SUBSCRIBE got no reply in time",
        )),
    }
}

/// The live subscriber connection, connecting (one caller at a time) if
/// there is none.
async fn connected(shared: &Arc<Shared>) -> Result<(PubSubSink, u64), BackendError> {
    if let Some(sink) = current(shared) {
        return Ok(sink);
    }
    let _one = shared.connecting.lock().await;
    if let Some(sink) = current(shared) {
        return Ok(sink);
    }
    let pubsub = match tokio::time::timeout(
        shared.connect_timeout,
        shared.client.get_async_pubsub(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(super::backend_error(e)),
        Err(_) => {
            return Err(BackendError::new(
                BackendErrorKind::Timeout,
                "the subscriber connection could not be opened in time",
            ));
        }
    };
    let (mut sink, stream) = pubsub.split();
    // Before any lock's channel: a waiter whose lock's channel is
    // subscribed on this connection gets its grants here too.
    subscribe_on(&mut sink, &shared.own, shared.command_timeout).await?;
    let generation = {
        let mut st = lock(&shared.state);
        st.generation += 1;
        st.sink = Some(sink.clone());
        st.generation
    };
    tokio::spawn(read(Arc::clone(shared), stream, sink.clone(), generation));
    Ok((sink, generation))
}

fn current(shared: &Shared) -> Option<(PubSubSink, u64)> {
    let st = lock(&shared.state);
    st.sink.clone().map(|s| (s, st.generation))
}

/// Delivers messages until the connection drops, and unsubscribes channels
/// nobody has waited on for a while.
async fn read(
    shared: Arc<Shared>,
    mut stream: redis::aio::PubSubStream,
    sink: PubSubSink,
    generation: u64,
) {
    let mut sweep = tokio::time::interval(LINGER);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => dispatch(&shared, msg.get_channel_name(), msg.get_payload_bytes()),
                None => break,
            },
            _ = sweep.tick() => unsubscribe_idle(&shared, &sink),
        }
    }
    // Disconnected: whatever was published meanwhile is lost, so everyone
    // looks again (and subscribes anew on its next wait).
    let mut st = lock(&shared.state);
    if st.generation == generation {
        st.sink = None;
        for ch in st.channels.values_mut() {
            ch.subscribed_in = None;
            for w in &ch.waiters {
                w.signal();
            }
        }
    }
    tracing::debug!("lock wake-up subscriber disconnected");
}

fn dispatch(shared: &Shared, channel: &str, payload: &[u8]) {
    let mut st = lock(&shared.state);
    if channel == &*shared.own {
        // `<token>:<fence>:<lock>`: the lock was granted to that waiter of
        // this process (the lock's name last: it may hold any character).
        let mut parts = payload.splitn(3, |&b| b == b':');
        let (Some(token), Some(fence), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let woke = std::str::from_utf8(key)
            .ok()
            .and_then(|k| st.channels.get(k))
            .is_some_and(|ch| granted(ch, token, fence));
        if let (false, Some(fence)) = (woke, number(fence)) {
            let now = Instant::now();
            let kept = &mut st.unclaimed;
            while kept.len() >= UNCLAIMED
                || kept
                    .front()
                    .is_some_and(|(_, _, at)| now.duration_since(*at) >= super::WAITER_TTL)
            {
                kept.pop_front();
            }
            kept.push_back((token.to_vec(), fence, now));
        }
        return;
    }
    let Some(ch) = st.channels.get(channel) else {
        return;
    };
    if payload.is_empty() {
        // The lock is free: the first local waiter not yet awake looks.
        if let Some(w) = ch
            .waiters
            .iter()
            .find(|w| !w.signalled.load(Ordering::Acquire))
        {
            w.signal();
        }
        return;
    }
    // `<token>:<fence>` on the lock's own channel, as releases made before
    // grants went to a process's channel sent it.
    let (token, fence) = match payload.iter().position(|&b| b == b':') {
        Some(i) => (&payload[..i], &payload[i + 1..]),
        None => (payload, &[][..]),
    };
    granted(ch, token, fence);
}

/// Wakes the waiter of `ch` whose token is `token` with the lock, numbered
/// `fence` (its decimal digits; unreadable, it wakes to look); whether one
/// was there.
fn granted(ch: &Channel, token: &[u8], fence: &[u8]) -> bool {
    let Some(w) = ch
        .waiters
        .iter()
        .find(|w| w.token.as_str().as_bytes() == token)
    else {
        return false;
    };
    if let Some(fence) = number(fence) {
        w.grant.store(fence, Ordering::Release);
    }
    w.signal();
    true
}

fn number(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn unsubscribe_idle(shared: &Shared, sink: &PubSubSink) {
    let mut idle = Vec::new();
    {
        let mut st = lock(&shared.state);
        st.channels.retain(|name, ch| {
            let expired =
                ch.waiters.is_empty() && ch.idle_since.is_some_and(|t| t.elapsed() >= LINGER);
            if expired && ch.subscribed_in.is_some() {
                idle.push(name.clone());
            }
            !expired
        });
    }
    if !idle.is_empty() {
        let mut sink = sink.clone();
        let timeout = shared.command_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, sink.unsubscribe(&idle)).await;
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wakeups() -> Wakeups {
        let client = Client::open("redis://127.0.0.1:1").unwrap();
        Wakeups::new(
            client,
            Duration::from_secs(1),
            Duration::from_secs(1),
            "own".into(),
        )
    }

    #[test]
    fn a_grant_on_the_process_channel_wakes_its_waiter_whatever_the_lock_is_named() {
        let w = wakeups();
        let waiter = LocalWaiter::for_thread(Token::new());
        let _watch = w.register("lock:a:b", &waiter);
        let other = LocalWaiter::for_thread(Token::new());
        let _other = w.register("lock:a:b", &other);
        let payload = format!("{}:42:lock:a:b", waiter.token.as_str());
        dispatch(&w.shared, "own", payload.as_bytes());
        assert_eq!(waiter.take_grant(), Some(42));
        assert_eq!(other.take_grant(), None, "only the waiter named");
        assert!(!other.take_signal());
    }

    #[test]
    fn a_grant_that_came_before_the_registration_is_picked_up_by_it() {
        let w = wakeups();
        let waiter = LocalWaiter::for_thread(Token::new());
        let payload = format!("{}:7:lock:k", waiter.token.as_str());
        dispatch(&w.shared, "own", payload.as_bytes());
        let stranger = LocalWaiter::for_thread(Token::new());
        let _s = w.register("lock:k", &stranger);
        assert_eq!(stranger.take_grant(), None, "another token's grant stays");
        let _watch = w.register("lock:k", &waiter);
        assert!(waiter.take_signal(), "woken at once");
        assert_eq!(waiter.take_grant(), Some(7));
        assert!(
            lock(&w.shared.state).unclaimed.is_empty(),
            "taken, not kept"
        );
    }

    #[test]
    fn grants_nobody_claims_are_kept_a_bounded_while() {
        let w = wakeups();
        for i in 0..(UNCLAIMED + 10) {
            let payload = format!("{}:{i}:lock:k", Token::new().encode().as_str());
            dispatch(&w.shared, "own", payload.as_bytes());
        }
        assert_eq!(lock(&w.shared.state).unclaimed.len(), UNCLAIMED);
    }
}
