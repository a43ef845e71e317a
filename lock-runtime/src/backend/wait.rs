//! The runtime's wait loop: one step machine ([`Waiting`]) that decides when
//! to try again, when to watch for wake-ups and when to give up, and two
//! small drivers that do what it says, blocking or async. A store only
//! answers each attempt (acquired, or busy with when to retry) and, if it
//! has [`WakeUps`], notifies a [`Signal`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::timer::Timer;
use super::{
    Acquired, Attempt, Backend, BackendError, Busy, Jitter, Request, Signal, Token, Wait, WakeUps,
    Watch,
};

thread_local! {
    /// The token of the last async acquisition dropped on this thread at a
    /// point where it left the runtime nothing to give back (see
    /// [`nothing_to_give_back`]).
    static WON_NOTHING: Cell<Option<Token>> = const { Cell::new(None) };
}

/// Armed while an async acquisition can have won nothing: it has no
/// attempt in flight and its last one was answered busy (asleep in the
/// runtime's wait loop), or it has sent nothing at all (queued in a
/// process's local line). Dropped armed, it leaves its token for
/// [`won_nothing`]: the runtime's give-back of a cancelled acquisition,
/// which follows at once on the same thread, then sends nothing, where a
/// cancelled crowd of waiters cost the store one release each.
pub(crate) struct WonNothing {
    token: Token,
    armed: bool,
}

impl WonNothing {
    pub(crate) fn new(token: Token, armed: bool) -> Self {
        Self { token, armed }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for WonNothing {
    fn drop(&mut self) {
        if self.armed {
            nothing_to_give_back(self.token);
        }
    }
}

/// Says that the async acquisition of `token`, being dropped on this thread,
/// leaves the runtime nothing to give back (see [`won_nothing`]): it won
/// nothing, or what its attempt in flight wins is given back by that
/// attempt.
pub(crate) fn nothing_to_give_back(token: Token) {
    let _ = WON_NOTHING.try_with(|w| w.set(Some(token)));
}

/// Whether the async acquisition of `token`, dropped just now on this
/// thread, left the runtime nothing to give back: it could have won
/// nothing, or its attempt in flight gives back what it wins. `false` when
/// unknown (its future was dropped elsewhere, or by a backend that does not
/// say).
pub(crate) fn won_nothing(token: Token) -> bool {
    WON_NOTHING
        .try_with(|w| w.take() == Some(token))
        .unwrap_or(false)
}

/// How long a waiter with ready wake-ups sleeps at most between attempts.
pub(crate) const LOST_WAKE_UP: Duration = Duration::from_secs(1);

/// What the driver does next.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Register for wake-ups, then try again at once.
    Watch,
    /// Sleep until notified or this instant (`None`: until notified).
    Sleep(Option<Instant>),
    /// The acquisition's outcome.
    Done(Option<Acquired>),
}

/// The decisions of one waiting acquisition.
pub(crate) struct Waiting {
    wait: Wait,
    jitter: Jitter,
    /// Whether the store offers wake-ups and no watch was made yet.
    may_watch: bool,
}

impl Waiting {
    pub(crate) fn new(req: &Request<'_>, wait: Wait, wake_ups: bool) -> Self {
        Self {
            wait,
            jitter: Jitter::new(req.token),
            may_watch: wake_ups,
        }
    }

    /// After an attempt sent at `sent`; `woken` says whether a ready watch
    /// will signal the next release.
    pub(crate) fn after(&mut self, attempt: Attempt, sent: Instant, woken: bool) -> Step {
        match attempt {
            Attempt::Acquired(a) => Step::Done(Some(with_sent(a, sent))),
            Attempt::Busy(busy) => self.after_busy(&busy, woken, Instant::now()),
        }
    }

    fn after_busy(&mut self, busy: &Busy, woken: bool, now: Instant) -> Step {
        if self.wait.deadline.is_some_and(|d| now >= d) {
            return Step::Done(None);
        }
        if self.may_watch {
            self.may_watch = false;
            return Step::Watch;
        }
        let mut until = self.wait.deadline;
        let mut cap = |t: Instant| until = Some(until.map_or(t, |u| u.min(t)));
        if let Some(r) = busy.retry_in {
            // No release announces a lease that runs out: look right after.
            cap(now + r + Duration::from_millis(1));
        }
        if woken {
            // A notification lost with a dropped connection must not strand
            // the waiter: look again now and then anyway.
            cap(now + LOST_WAKE_UP);
        } else {
            cap(now + self.jitter.around(self.wait.poll_interval));
        }
        Step::Sleep(until)
    }

    /// The watch could not be made: poll instead.
    pub(crate) fn watch_failed(&mut self) {
        self.may_watch = false;
    }
}

fn with_sent(a: Acquired, sent: Instant) -> Acquired {
    if a.sent_at.is_some() {
        a
    } else {
        a.sent_at(sent)
    }
}

/// A waiter's side of the store's wake-ups: its signal and its watch, made
/// when the step machine first asks.
struct Listener<'a> {
    wake_ups: Option<&'a dyn WakeUps>,
    signal: Option<Signal>,
    watch: Option<Watch>,
}

impl<'a> Listener<'a> {
    fn new(wake_ups: Option<&'a dyn WakeUps>) -> Self {
        Self {
            wake_ups,
            signal: None,
            watch: None,
        }
    }

    /// Whether a ready watch will wake this waiter.
    fn woken(&self) -> bool {
        self.signal.as_ref().is_some_and(Signal::is_ready)
    }

    fn signal(&mut self) -> &Signal {
        self.signal.get_or_insert_with(Signal::new)
    }

    /// Watches `req.key`; without wake-ups, the waiter polls instead.
    fn watch(&mut self, waiting: &mut Waiting, req: &Request<'_>) {
        let Some(wake_ups) = self.wake_ups else {
            return waiting.watch_failed();
        };
        match wake_ups.watch(req.key, self.signal.get_or_insert_with(Signal::new)) {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::debug!(key = req.key, error = %e, "no wake-ups; polling instead");
                waiting.watch_failed();
            }
        }
    }
}

/// The blocking driver: attempts with `try_acquire`, parks between them.
pub(crate) fn acquire<B: Backend + ?Sized>(
    store: &B,
    wake_ups: Option<&dyn WakeUps>,
    req: &Request<'_>,
    wait: Wait,
) -> Result<Option<Acquired>, BackendError> {
    let mut waiting = Waiting::new(req, wait, wake_ups.is_some());
    let mut listener = Listener::new(wake_ups);
    loop {
        let sent = Instant::now();
        let attempt = store.try_acquire(req)?;
        match waiting.after(attempt, sent, listener.woken()) {
            Step::Done(outcome) => return Ok(outcome),
            Step::Watch => listener.watch(&mut waiting, req),
            Step::Sleep(until) => {
                let signal = listener.signal();
                signal.wait_until(until);
                signal.take_notified();
            }
        }
    }
}

/// The async driver: attempts with `try_acquire_async`, sleeps on a timer
/// that needs no particular async runtime, or on the signal.
pub(crate) async fn acquire_async<B: Backend + ?Sized>(
    store: &B,
    wake_ups: Option<&dyn WakeUps>,
    req: &Request<'_>,
    wait: Wait,
) -> Result<Option<Acquired>, BackendError> {
    let mut waiting = Waiting::new(req, wait, wake_ups.is_some());
    let mut listener = Listener::new(wake_ups);
    loop {
        let sent = Instant::now();
        let attempt = store.try_acquire_async(req).await?;
        match waiting.after(attempt, sent, listener.woken()) {
            Step::Done(outcome) => return Ok(outcome),
            Step::Watch => listener.watch(&mut waiting, req),
            Step::Sleep(until) => {
                let signal = listener.signal();
                let timer = until.map(Timer::at);
                // Dropped asleep, it has no attempt in flight, and its last
                // one was answered busy (an attempt takes the lock or
                // changes nothing).
                let mut asleep = WonNothing::new(req.token, true);
                Sleep { signal, timer }.await;
                asleep.disarm();
                signal.take_notified();
            }
        }
    }
}

/// Resolves when the signal is notified or the timer fires.
struct Sleep<'a> {
    signal: &'a Signal,
    timer: Option<Timer>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.poll_notified(cx).is_ready() {
            return Poll::Ready(());
        }
        match &mut self.timer {
            Some(t) => Pin::new(t).poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(retry_in: Option<Duration>) -> Attempt {
        Attempt::Busy(Busy::new(retry_in))
    }

    fn sleep_len(step: Step, from: Instant) -> Option<Duration> {
        match step {
            Step::Sleep(until) => until.map(|u| u.saturating_duration_since(from)),
            other => panic!("expected a sleep, got {other:?}"),
        }
    }

    #[test]
    fn an_acquired_attempt_is_done_and_keeps_its_send_time() {
        let req = Request::new("k");
        let mut w = Waiting::new(&req, Wait::new(None, Duration::from_millis(10)), false);
        let sent = Instant::now();
        let step = w.after(Attempt::Acquired(Acquired::new(Some(3))), sent, false);
        assert_eq!(step, Step::Done(Some(Acquired::new(Some(3)).sent_at(sent))));
    }

    #[test]
    fn gives_up_once_the_deadline_has_passed() {
        let req = Request::new("k");
        let wait = Wait::new(Some(Instant::now()), Duration::from_millis(10));
        let mut w = Waiting::new(&req, wait, true);
        assert_eq!(w.after(busy(None), Instant::now(), false), Step::Done(None));
    }

    #[test]
    fn watches_once_then_sleeps() {
        let req = Request::new("k");
        let mut w = Waiting::new(&req, Wait::new(None, Duration::from_secs(1)), true);
        assert_eq!(w.after(busy(None), Instant::now(), false), Step::Watch);
        assert!(matches!(
            w.after(busy(None), Instant::now(), false),
            Step::Sleep(_)
        ));
    }

    #[test]
    fn polls_with_jitter_until_the_watch_is_ready() {
        let req = Request::new("k");
        let poll = Duration::from_millis(100);
        let mut w = Waiting::new(&req, Wait::new(None, poll), false);
        let now = Instant::now();
        let nap = sleep_len(w.after_busy(&Busy::new(None), false, now), now).expect("a poll");
        assert!(nap >= poll / 2 && nap <= poll * 3 / 2, "{nap:?}");
        // Woken by releases: no poll, only the rare look for a lost wake-up.
        let now = Instant::now();
        let nap = sleep_len(w.after_busy(&Busy::new(None), true, now), now).expect("a cap");
        assert!(nap > poll * 3 / 2 && nap <= LOST_WAKE_UP, "{nap:?}");
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let req = Request::new("k");
        let now = Instant::now();
        let deadline = now + Duration::from_millis(20);
        let mut w = Waiting::new(
            &req,
            Wait::new(Some(deadline), Duration::from_secs(5)),
            false,
        );
        let nap = sleep_len(w.after_busy(&Busy::new(None), false, now), now).expect("a deadline");
        assert!(nap <= Duration::from_millis(20), "{nap:?}");
        let past = Wait::new(Some(now - Duration::from_millis(1)), Duration::from_secs(5));
        let mut w = Waiting::new(&req, past, false);
        assert_eq!(w.after_busy(&Busy::new(None), false, now), Step::Done(None));
    }

    #[test]
    fn looks_again_right_after_the_holders_lease_ends() {
        let req = Request::new("k");
        let mut w = Waiting::new(&req, Wait::new(None, Duration::from_secs(5)), false);
        let now = Instant::now();
        let nap = sleep_len(
            w.after_busy(&Busy::new(Some(Duration::from_millis(3))), true, now),
            now,
        );
        assert!(
            nap.expect("a lease end") <= Duration::from_millis(4),
            "{nap:?}"
        );
    }
}
