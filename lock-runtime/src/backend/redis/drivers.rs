//! The two drivers of a waiting acquisition, whose every decision is
//! [`Waiting`]'s: sync on the blocking pool, parking the thread; async on
//! the multiplexed connection of wherever it runs, awaiting a signalled
//! future. Also what they leave behind when they end without the lock: a
//! place in line to give up, a lock a failed request may have won.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;

use super::gate::Turn;
use super::io::{self, Place};
use super::scripts::{self, Call};
use super::waiting::{Action, Line, Outcome, Waiting};
use super::wake::{LocalWaiter, Wakeups, Watch};
use super::{AcquireArgs, Inner, Tried, handover_invocation};
use crate::backend::wait::WonNothing;
use crate::backend::{Acquired, Attempt, BackendError, Token};

/// A sync waiting acquisition: blocking pool, parked thread, subscriptions
/// made on the I/O thread.
pub(super) fn acquire_blocking(
    inner: &Arc<Inner>,
    args: &AcquireArgs,
    mut waiting: Waiting,
) -> Result<Option<Acquired>, BackendError> {
    let mut last = Outcome::Start;
    if !waiting.fair()
        && let Some(solo) = inner.gates.solo()
    {
        let tried = inner.sync_try(args, Line::Out, true)?;
        drop(solo);
        match tried.attempt {
            Attempt::Acquired(a) => return Ok(Some(a)),
            busy => last = Outcome::Attempted(busy, tried.fence_now),
        }
    }
    let waiter = LocalWaiter::for_thread(args.token);
    let deadline = waiting.deadline();
    let mut line = LineGuard::new(inner, args, &mut waiting, Via::Pool, &waiter);
    // Behind another waiter of this process for the key: wait here first.
    let Some(turn) = inner
        .gates
        .turn_blocking(&args.key, args.seat(), &waiter, deadline)
    else {
        return Ok(None);
    };
    let mut listening = Listening::new(waiter);
    if let Some(start) = listening.queued_turn(&turn, line.waiting, || inner.wakeups.io(), args) {
        last = start;
    }
    let mut turn = turn;
    loop {
        turn.step();
        last = match line.waiting.next(Instant::now(), last) {
            Action::Attempt { line, first } => {
                listening.before_look(|| inner.wakeups.io());
                let tried = inner.sync_try(args, line, first)?;
                Outcome::Attempted(tried.attempt, tried.fence_now)
            }
            Action::Listen => {
                let fresh = listening.register(|| inner.wakeups.io(), &args.key);
                listening.offer(&turn, args);
                match listening.subscription() {
                    None => Outcome::Listening {
                        fresh,
                        in_time: listening.in_time(|| inner.wakeups.io()),
                    },
                    Some(sub) => subscribed(&args.key, io::block_on(sub)),
                }
            }
            Action::Sleep { until } => {
                listening.waiter.park_until(until);
                woke(&listening.waiter)
            }
            // Its deadline passed as a release granted it the lock: the
            // grant is taken up (or, if stale, looked at), not bounced.
            Action::Done(None) if listening.waiter.has_grant() => woke(&listening.waiter),
            Action::Done(outcome) => {
                turn.finish(outcome.is_some());
                line.won = outcome.is_some();
                if line.must_leave() {
                    line.leave_blocking();
                }
                return Ok(outcome);
            }
        };
    }
}

/// An async waiting acquisition on `conn`, the connection of the runtime it
/// runs on, whose subscriber wakes it.
pub(super) async fn acquire(
    inner: Arc<Inner>,
    mut conn: MultiplexedConnection,
    args: AcquireArgs,
    waiting: Waiting,
) -> Result<Option<Acquired>, BackendError> {
    let mut last = Outcome::Start;
    if !waiting.fair()
        && let Some(solo) = inner.gates.solo()
    {
        let tried = inner
            .try_acquire_on(&mut conn, &args, Line::Out, true)
            .await;
        drop(solo);
        match tried {
            Ok(Tried {
                attempt: Attempt::Acquired(a),
                ..
            }) => return Ok(Some(a)),
            Ok(busy) => last = Outcome::Attempted(busy.attempt, busy.fence_now),
            Err(e) => {
                inner.attempt_failed(conn, &args);
                return Err(e);
            }
        }
    }
    // The waiting driver, boxed apart, costs the uncontended acquisition
    // above neither its allocation nor its moves. It takes the connection
    // again once it has the turn (a queued waiter holds none).
    drop(conn);
    Box::pin(wait(inner, args, waiting, last)).await
}

/// The rest of [`acquire`], and all of an async acquisition that finds the
/// key contended in this process: waits in the local line, then in Redis,
/// `last` being what the attempt made before the line (if any) found.
///
/// A waiter queued in the local line keeps only this future's small state:
/// what it waits in Redis with (its guard, the future of its looks) is made
/// once it has the turn, so a burst of waiters costs little memory and
/// allocation while it queues.
pub(super) async fn wait(
    inner: Arc<Inner>,
    args: AcquireArgs,
    mut waiting: Waiting,
    last: Outcome,
) -> Result<Option<Acquired>, BackendError> {
    let waiter = LocalWaiter::for_task(args.token);
    let mut untried = Untried {
        won_nothing: WonNothing::new(args.token, matches!(last, Outcome::Start)),
        waiter: &waiter,
    };
    let deadline = waiting.deadline();
    let mut line = LineGuard::new(&inner, &args, &mut waiting, Via::Conn(None), &waiter);
    // Behind another waiter of this process for the key: wait here first.
    let Some(turn) = inner
        .gates
        .turn(&args.key, args.seat(), Arc::clone(&waiter), deadline)
        .await
    else {
        return Ok(None);
    };
    // From here on it may send.
    untried.won_nothing.disarm();
    let conn = inner.conn.get().await.map_err(super::backend_error)?;
    line.via = Via::Conn(Some(conn.clone()));
    // Bound after `line`, so dropped before it (as is the turn in it): the
    // turn has ended, and nothing more can be granted, when the guard looks
    // for a grant to give back.
    let mut in_redis = Box::pin(wait_in_redis(
        &inner,
        conn,
        &args,
        &mut line,
        turn,
        Arc::clone(&waiter),
        last,
    ));
    in_redis.as_mut().await
}

/// Armed while an async acquisition has sent Redis nothing and holds no
/// grant (it waits in the local line, and no attempt went before): dropped
/// so, it says so ([`WonNothing`]), and the runtime's give-back of the
/// cancelled acquisition sends nothing.
struct Untried<'a> {
    won_nothing: WonNothing,
    waiter: &'a LocalWaiter,
}

impl Drop for Untried<'_> {
    fn drop(&mut self) {
        if self.waiter.has_grant() {
            self.won_nothing.disarm();
        }
    }
}

/// The turn's wait in Redis: looks, listens and sleeps as [`Waiting`]
/// decides until it has the lock or gives up.
async fn wait_in_redis(
    inner: &Arc<Inner>,
    mut conn: MultiplexedConnection,
    args: &AcquireArgs,
    line: &mut LineGuard<'_>,
    turn: Turn<'_>,
    waiter: Arc<LocalWaiter>,
    mut last: Outcome,
) -> Result<Option<Acquired>, BackendError> {
    let mut listening = Listening::new(waiter);
    if let Some(start) = listening.queued_turn(&turn, line.waiting, || inner.wakeups.here(), args) {
        last = start;
    }
    let mut turn = turn;
    loop {
        turn.step();
        last = match line.waiting.next(Instant::now(), last) {
            Action::Attempt { line: stand, first } => {
                listening.before_look(|| inner.wakeups.here());
                match inner.try_acquire_on(&mut conn, args, stand, first).await {
                    Ok(tried) => Outcome::Attempted(tried.attempt, tried.fence_now),
                    Err(e) => {
                        // The request may have landed all the same.
                        line.give_back = true;
                        return Err(e);
                    }
                }
            }
            Action::Listen => {
                // This runs on the runtime whose subscriber it gets, so the
                // subscription is awaited right here.
                let fresh = listening.register(|| inner.wakeups.here(), &args.key);
                listening.offer(&turn, args);
                match listening.subscription() {
                    None => Outcome::Listening {
                        fresh,
                        in_time: listening.in_time(|| inner.wakeups.here()),
                    },
                    Some(sub) => subscribed(&args.key, sub.await),
                }
            }
            Action::Sleep { until } => {
                let waiter = &listening.waiter;
                match until {
                    Some(u) => {
                        let _ = tokio::time::timeout_at(u.into(), waiter.signalled()).await;
                    }
                    None => waiter.signalled().await,
                }
                woke(waiter)
            }
            // As in the blocking driver.
            Action::Done(None) if listening.waiter.has_grant() => woke(&listening.waiter),
            Action::Done(outcome) => {
                turn.finish(outcome.is_some());
                line.won = outcome.is_some();
                if line.must_leave() {
                    line.leave(&mut conn).await;
                }
                return Ok(outcome);
            }
        };
    }
}

fn subscribed(key: &str, result: Result<(), BackendError>) -> Outcome {
    if let Err(e) = &result {
        tracing::debug!(key, error = %e, "no wake-ups; polling instead");
    }
    Outcome::Subscribed(result)
}

fn woke(waiter: &LocalWaiter) -> Outcome {
    waiter.take_signal();
    Outcome::Woke {
        grant: waiter.take_grant(),
    }
}

/// A waiting acquisition's registration for wake-ups, made on its first
/// wait only (most acquisitions never wait).
struct Listening {
    /// What it sleeps on, and what a release in this process grants the
    /// lock to.
    waiter: Arc<LocalWaiter>,
    watch: Option<Watch>,
    /// The subscriber connection up when the last look was sent.
    before: Option<u64>,
}

impl Listening {
    fn new(waiter: Arc<LocalWaiter>) -> Self {
        Self {
            waiter,
            watch: None,
            before: None,
        }
    }

    /// Notes which subscriber connection is up as a look is sent.
    fn before_look(&mut self, subscriber: impl FnOnce() -> Wakeups) {
        self.before = subscriber().live_generation();
    }

    /// Whether the subscriber connection up when the last look was sent is
    /// still the live one: this process's channel was subscribed all along,
    /// so a grant sent after the look reached this waiter (the registration
    /// picks up one that came before it).
    fn in_time(&self, subscriber: impl FnOnce() -> Wakeups) -> bool {
        self.before.is_some() && self.before == subscriber().live_generation()
    }

    /// A turn that waited behind another waiter of this process: the key is
    /// contended, so the waiter registers for wake-ups and is offered as the
    /// successor of a release made here at once. The outcome its wait
    /// starts from (an attempt made before the line is of no use now):
    /// asleep, without a look, if a holder in this process has the lock.
    /// `None` for a turn that did not wait.
    fn queued_turn(
        &mut self,
        turn: &Turn<'_>,
        waiting: &mut Waiting,
        subscriber: impl FnOnce() -> Wakeups,
        args: &AcquireArgs,
    ) -> Option<Outcome> {
        if !turn.was_queued() {
            return None;
        }
        let now = Instant::now();
        waiting.contended(now);
        self.register(subscriber, &args.key);
        self.offer(turn, args);
        Some(if turn.held_here() {
            waiting.skip_look(now)
        } else {
            Outcome::Start
        })
    }

    /// Registers for wake-ups on `key` unless it did already; whether it
    /// registered just now. `subscriber` is asked for only then.
    fn register(&mut self, subscriber: impl FnOnce() -> Wakeups, key: &str) -> bool {
        if self.watch.is_some() {
            return false;
        }
        self.watch = Some(subscriber().register(key, &self.waiter));
        true
    }

    /// The subscription still to make (on the runtime that drives the
    /// subscriber), unless the channel is subscribed on the live connection.
    fn subscription(
        &self,
    ) -> Option<impl Future<Output = Result<(), BackendError>> + Send + 'static + use<>> {
        self.watch
            .as_ref()
            .filter(|w| !w.is_subscribed())
            .map(Watch::subscribe)
    }

    /// Offers this waiter as the successor of a release made in this
    /// process (once registered).
    fn offer(&self, turn: &Turn<'_>, args: &AcquireArgs) {
        turn.offer(args.token, args.lease_ms, &args.meta, &self.waiter);
    }
}

/// The connection an acquisition's requests go through.
enum Via {
    Pool,
    /// The multiplexed connection of the runtime it runs on, once it has
    /// one: a waiter queued in the local line has sent nothing yet, and
    /// holds none (a clone made and dropped by every waiter of a crowd is
    /// a reference count bounced between the runtime's threads).
    Conn(Option<MultiplexedConnection>),
}

/// Holds a driver's [`Waiting`] so that however the driver ends without the
/// lock (the deadline, an error, a panic, its future dropped), Redis keeps
/// no place in line for it, and a lock a release granted it on its way out
/// is passed on (the leave does both); and after an async request failed,
/// what that request may have won is given back. On an async connection
/// these go after whatever is still in flight on it, so they cannot
/// overtake it. (A lock won by a request whose future was dropped is the
/// runtime's to give back, through
/// [`Backend::give_back_detached`](crate::backend::Backend::give_back_detached).)
///
/// Made before the local line is entered, so that it is dropped after the
/// line's turn: once the turn has ended, no release can grant the waiter
/// anything more.
struct LineGuard<'a> {
    inner: &'a Arc<Inner>,
    args: &'a AcquireArgs,
    /// Borrowed, not owned: a queued waiter's future holds the guard, and
    /// is kept small.
    waiting: &'a mut Waiting,
    via: Via,
    /// What a release in this process grants the lock to.
    waiter: Arc<LocalWaiter>,
    /// The acquisition ended with the lock.
    won: bool,
    give_back: bool,
}

impl<'a> LineGuard<'a> {
    fn new(
        inner: &'a Arc<Inner>,
        args: &'a AcquireArgs,
        waiting: &'a mut Waiting,
        via: Via,
        waiter: &Arc<LocalWaiter>,
    ) -> Self {
        Self {
            inner,
            args,
            waiting,
            via,
            waiter: Arc::clone(waiter),
            won: false,
            give_back: false,
        }
    }

    /// Whether Redis may keep a place in line for the waiter, or a release
    /// granted the lock to a waiter that ends without it (the grant came as
    /// it gave up: its deadline passed, or its future was dropped).
    fn must_leave(&self) -> bool {
        self.waiting.holds_place() || (!self.won && self.waiter.has_grant())
    }

    /// It leaves: no place, and no grant, is left to give up.
    fn left(&mut self) {
        self.waiting.left();
        self.waiter.take_grant();
    }

    fn leave_invocation(&self) -> Call {
        handover_invocation(
            &scripts::LEAVE,
            &self.inner.fence_key,
            &self.args.key,
            self.args.token,
            Some(&self.place()),
        )
    }

    /// What names this waiter's place in line beside its token: the lease
    /// it asked for and its meta suffix.
    fn place(&self) -> String {
        format!("{}{}", self.waiting.lease_ms(), self.args.meta)
    }

    fn leave_blocking(&mut self) {
        self.left();
        if let Err(e) = self.inner.sync::<i64>(&self.leave_invocation()) {
            tracing::warn!(key = %self.args.key, error = %e, "could not leave the line; the place expires by itself");
        }
    }

    /// Dropped before the answer, the guard sends the request again: a
    /// second leave changes nothing.
    async fn leave(&mut self, conn: &mut MultiplexedConnection) {
        let leave = self.leave_invocation();
        if let Err(e) = self.inner.invoke_on::<i64>(conn, leave).await {
            tracing::warn!(key = %self.args.key, error = %e, "could not leave the line; the place expires by itself");
        }
        self.left();
    }
}

impl Drop for LineGuard<'_> {
    fn drop(&mut self) {
        let leave = self.must_leave();
        match &self.via {
            Via::Pool if leave => self.leave_blocking(),
            Via::Pool => {}
            Via::Conn(conn) if leave || self.give_back => {
                let leftover = Leftover {
                    key: self.args.key.clone(),
                    token: self.args.token,
                    release: if self.give_back {
                        Release::MayHaveWon
                    } else {
                        Release::No
                    },
                    leave: leave.then(|| self.place()),
                };
                self.inner.hand_off(conn.clone(), leftover);
            }
            Via::Conn(_) => {}
        }
    }
}

/// Clean-up that nobody waits for.
pub(super) struct Leftover {
    pub(super) key: String,
    pub(super) token: Token,
    pub(super) release: Release,
    /// Leave the line: the place named by the lease the waiter asked for
    /// and its meta suffix.
    pub(super) leave: Option<String>,
}

/// Whether a [`Leftover`] gives a lock back, and how loudly.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    No,
    /// A guard was dropped: warn if it was not held any more.
    Dropped,
    /// A failed or cancelled request may have won it: nothing to say if it
    /// did not.
    MayHaveWon,
    /// A release got no answer: nothing to say if it had landed.
    Again,
}

impl Inner {
    /// Releases `key` by `token` without making anyone wait, saying what
    /// `release` asks for when the lock was not held.
    pub(super) fn release_leftover(self: &Arc<Self>, key: &str, token: Token, release: Release) {
        let leftover = Leftover {
            key: key.to_owned(),
            token,
            release,
            leave: None,
        };
        self.hand_off(None, leftover);
    }

    /// An attempt sent on `conn` failed: its request may have landed all
    /// the same, so whatever it won is given back after it.
    pub(super) fn attempt_failed(
        self: &Arc<Self>,
        conn: MultiplexedConnection,
        args: &AcquireArgs,
    ) {
        let leftover = Leftover {
            key: args.key.clone(),
            token: args.token,
            release: Release::MayHaveWon,
            leave: None,
        };
        self.hand_off(Some(conn), leftover);
    }

    /// Sends `leftover` without making anyone wait: on `conn` when given,
    /// the connection of a request it must not overtake, else on the
    /// connection of wherever this runs (the caller's runtime, or the I/O
    /// thread), which is the one its async requests used. If the caller's
    /// runtime shuts down before the task ran, the I/O thread sends it.
    pub(super) fn hand_off(
        self: &Arc<Self>,
        conn: Option<MultiplexedConnection>,
        leftover: Leftover,
    ) {
        match Place::here() {
            Place::Caller(rt) => {
                let mut unsent = Unsent {
                    inner: Arc::clone(self),
                    leftover: Some(leftover),
                };
                drop(rt.spawn(async move { unsent.send(conn).await }));
            }
            Place::Io => self.hand_off_to_io(conn, leftover),
        }
    }

    fn hand_off_to_io(self: &Arc<Self>, conn: Option<MultiplexedConnection>, leftover: Leftover) {
        match io::handle() {
            Ok(rt) => {
                let inner = Arc::clone(self);
                drop(rt.spawn(async move { inner.send(conn, &leftover).await }));
            }
            Err(e) => {
                tracing::error!(key = %leftover.key, error = %e, "could not hand a clean-up to the Redis I/O thread; doing it inline");
                self.send_blocking(&leftover);
            }
        }
    }

    async fn send(&self, conn: Option<MultiplexedConnection>, l: &Leftover) {
        let mut conn = match conn {
            Some(c) => c,
            None => match self.conn.get().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(key = %l.key, error = %e, "could not clean up after a lock; its lease and line place expire by themselves");
                    return;
                }
            },
        };
        if l.release != Release::No {
            if let Some(claim) = self.gates.claim(&l.key) {
                let release = self.release_to(&l.key, l.token, &claim);
                let out = self.invoke_on::<Vec<i64>>(&mut conn, release).await;
                if self.settle(&l.key, &claim, out.as_deref().ok()) {
                    let back = self.successor_release(&l.key, &claim);
                    let _ = self.invoke_on::<i64>(&mut conn, back).await;
                }
                released(l, out.map(|r| r.first().copied().unwrap_or(0)));
            } else {
                let release =
                    handover_invocation(&scripts::RELEASE, &self.fence_key, &l.key, l.token, None);
                released(l, self.invoke_on::<i64>(&mut conn, release).await);
            }
        }
        if let Some(place) = &l.leave {
            let leave = handover_invocation(
                &scripts::LEAVE,
                &self.fence_key,
                &l.key,
                l.token,
                Some(place),
            );
            if let Err(e) = self.invoke_on::<i64>(&mut conn, leave).await {
                tracing::warn!(key = %l.key, error = %e, "could not leave the line; the place expires by itself");
            }
        }
    }

    fn send_blocking(&self, l: &Leftover) {
        if l.release != Release::No {
            if let Some(claim) = self.gates.claim(&l.key) {
                let out = self.sync::<Vec<i64>>(&self.release_to(&l.key, l.token, &claim));
                if self.settle(&l.key, &claim, out.as_deref().ok()) {
                    let _ = self.sync::<i64>(&self.successor_release(&l.key, &claim));
                }
                released(l, out.map(|r| r.first().copied().unwrap_or(0)));
            } else {
                let release =
                    handover_invocation(&scripts::RELEASE, &self.fence_key, &l.key, l.token, None);
                released(l, self.sync::<i64>(&release));
            }
        }
        if let Some(place) = &l.leave {
            let leave = handover_invocation(
                &scripts::LEAVE,
                &self.fence_key,
                &l.key,
                l.token,
                Some(place),
            );
            if let Err(e) = self.sync::<i64>(&leave) {
                tracing::warn!(key = %l.key, error = %e, "could not leave the line; the place expires by itself");
            }
        }
    }
}

fn released(l: &Leftover, outcome: Result<i64, BackendError>) {
    let key = &l.key;
    match (l.release, outcome) {
        (Release::Dropped, Ok(0)) => {
            tracing::warn!(key, "lock was no longer held when its guard was dropped")
        }
        (_, Ok(_)) | (Release::No, Err(_)) => {}
        (Release::Dropped, Err(e)) => {
            tracing::error!(key, error = %e, "releasing a dropped lock guard failed; the lock frees itself when its lease ends")
        }
        (Release::MayHaveWon, Err(e)) => {
            tracing::error!(key, error = %e, "could not give back a lock a failed or cancelled acquisition may have won; it frees itself when its lease ends")
        }
        (Release::Again, Err(e)) => {
            tracing::error!(key, error = %e, "releasing a lock failed; it frees itself when its lease ends")
        }
    }
}

/// A leftover on its way on the caller's runtime. Dropped unsent, the
/// runtime is shutting down (its connection with it): the I/O thread
/// sends it on its own.
struct Unsent {
    inner: Arc<Inner>,
    leftover: Option<Leftover>,
}

impl Unsent {
    async fn send(&mut self, conn: Option<MultiplexedConnection>) {
        if let Some(l) = &self.leftover {
            self.inner.send(conn, l).await;
        }
        self.leftover = None;
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        if let Some(l) = self.leftover.take() {
            self.inner.hand_off_to_io(None, l);
        }
    }
}
