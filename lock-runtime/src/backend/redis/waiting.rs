//! A waiting acquisition as a sans-I/O step machine: it decides what to do
//! next from what the last step brought, and the two drivers (sync: pooled
//! connection, parked thread; async: multiplexed connection, signalled
//! future) do the I/O. It never reads the clock: drivers pass `now` in, so
//! the whole policy is tested here without a server or a sleep.

use std::time::{Duration, Instant};

use super::{REFRESH, STARVATION, asked_lease_ms, granted_lease};
use crate::backend::{Acquired, Attempt, BackendError, Jitter, Request, Wait};

/// How an attempt stands in the line Redis keeps for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// Barging: outside the line.
    Out,
    /// In the line if the lock's holder is another process's (one in this
    /// process hands the lock to this process's waiter itself).
    IfRemote,
    /// In the line (fair, starving, or there already).
    In,
}

/// What the driver does next.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// Send one acquisition; `first` allows the plain `SET NX` fast path.
    Attempt { line: Line, first: bool },
    /// Make sure a release of the key wakes this waiter: register for its
    /// channel and subscribe it if needed, then report
    /// [`Outcome::Listening`] or [`Outcome::Subscribed`].
    Listen,
    /// Wait for a wake-up, or until this instant at the latest.
    Sleep { until: Option<Instant> },
    /// The end: the lock, or `None` when the deadline passed first. A place
    /// in line left behind is [`Waiting::holds_place`]'s to tell.
    Done(Option<Acquired>),
}

/// What the last action brought.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Nothing yet: the first call.
    Start,
    /// The reply to [`Action::Attempt`] (a failed request ends the driver),
    /// and the fencing counter as a busy attempt in line found it.
    Attempted(Attempt, Option<u64>),
    /// [`Action::Listen`] found the channel subscribed; `fresh` when the
    /// waiter registered just now; `in_time` when the subscriber connection
    /// was up since before the last look was sent, so that a grant sent
    /// after it reached the waiter.
    Listening { fresh: bool, in_time: bool },
    /// [`Action::Listen`] had to subscribe the channel, with this result.
    Subscribed(Result<(), BackendError>),
    /// [`Action::Sleep`] ended; `grant` is the fencing token of a lock a
    /// release handed to this waiter on the way.
    Woke { grant: Option<u64> },
}

/// One waiting acquisition's decisions: when to look again, when to give
/// up, when to join the line, when to fall back to polling.
pub(super) struct Waiting {
    started: Instant,
    deadline: Option<Instant>,
    poll: Duration,
    jitter: Jitter,
    lease_ms: u64,
    /// Whether the next attempts go through the line.
    line: Line,
    /// Asked for `fair`.
    fair: bool,
    /// An attempt was sent in line, so Redis may keep a place for it.
    joined: bool,
    /// Redis keeps a place in line for it: a release grants it the lock
    /// and sends it the grant.
    queued: bool,
    /// Wake-ups are unavailable (the subscriber could not subscribe): poll.
    polling: bool,
    first: bool,
    /// When the last attempt was sent: a lock granted by a release counts
    /// its lease from no later than that.
    sent: Instant,
    /// The latest moment to look again after the last busy reply.
    until: Option<Instant>,
    /// The highest fencing counter a busy attempt in line found. A grant
    /// numbered no higher was made before that attempt reached Redis, and
    /// the attempt found the lock not ours: the grant's lease ran out (the
    /// waiter was paused, its reply slow) and someone else may hold the
    /// lock. Its message, read late, must not count.
    seen_fence: u64,
}

impl Waiting {
    pub(super) fn new(req: &Request<'_>, wait: Wait, now: Instant) -> Self {
        Self {
            started: now,
            deadline: wait.deadline,
            poll: wait.poll_interval,
            jitter: Jitter::new(req.token),
            lease_ms: asked_lease_ms(req),
            line: if req.fair { Line::In } else { Line::Out },
            fair: req.fair,
            joined: false,
            queued: false,
            polling: false,
            first: true,
            sent: now,
            until: None,
            seen_fence: 0,
        }
    }

    /// Whether Redis may keep a place in line for this acquisition, which
    /// it must leave if it ends without the lock.
    pub(super) fn holds_place(&self) -> bool {
        self.joined
    }

    /// The key is contended (this waiter queued behind another of its
    /// process, and has the key's turn since `now`): its first look goes
    /// through the script, which also marks the lock as waited for, not the
    /// plain `SET NX`; and it starves (and joins the line) counting from
    /// its turn, as the one waiter of its process in Redis.
    pub(super) fn contended(&mut self, now: Instant) {
        self.first = false;
        self.started = now;
        self.stand_in_line();
    }

    /// From its first busy reply on, a barging waiter stands in the line
    /// whenever the lock's holder is another process's: a release then
    /// grants it the lock and tells its process alone, instead of waking a
    /// waiter in every waiting process to race for it.
    fn stand_in_line(&mut self) {
        if self.line == Line::Out {
            self.line = Line::IfRemote;
        }
    }

    /// Starts the waiter asleep, without a look: a holder in its own process
    /// has the lock, and its release (however it is made) either hands it
    /// here or, when Redis keeps a line whose head is someone else, wakes
    /// this waiter to look (and join the line). It looks after
    /// [`STARVATION`] at the latest, which covers a lock that frees itself
    /// or is forced free. The outcome to start from.
    pub(super) fn skip_look(&mut self, now: Instant) -> Outcome {
        self.sent = now;
        let until = self.sleep_until(now, None);
        let soon = now + STARVATION;
        self.until = Some(until.map_or(soon, |u| u.min(soon)));
        Outcome::Listening {
            fresh: false,
            in_time: false,
        }
    }

    /// Whether it waits in line from the start (`fair`), so that it never
    /// passes a waiter of its own process.
    pub(super) fn fair(&self) -> bool {
        self.fair
    }

    /// When this acquisition gives up, if ever.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The lease this acquisition asked for, which names its place in line.
    pub(super) fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// The place in line was left (or never needs leaving).
    pub(super) fn left(&mut self) {
        self.joined = false;
        self.queued = false;
    }

    /// What to do at `now` after `last` (first [`Outcome::Start`]), until
    /// [`Action::Done`].
    pub(super) fn next(&mut self, now: Instant, last: Outcome) -> Action {
        match last {
            // Registered just now, but in line since a look the subscriber
            // was up for: a release hands the lock to the line and sends
            // the grant to this process, where it reached the waiter (or
            // waits for its registration). No second look.
            Outcome::Listening {
                fresh: true,
                in_time: true,
            } if self.queued => Action::Sleep { until: self.until },
            Outcome::Start
            | Outcome::Subscribed(Ok(()))
            | Outcome::Listening { fresh: true, .. }
            | Outcome::Woke { grant: None } => self.attempt(now),
            Outcome::Attempted(Attempt::Acquired(a), _) => self.done(a),
            Outcome::Attempted(Attempt::Busy(busy), fence) => {
                self.first = false;
                match fence {
                    // Only a look that holds a place in line reads the counter.
                    Some(f) => {
                        self.seen_fence = self.seen_fence.max(f);
                        self.queued = true;
                        self.line = Line::In;
                    }
                    // A look asked to join only behind another process's
                    // holder found none, and found no place of its own
                    // either: there is none to leave when it gives up.
                    None if self.line == Line::IfRemote => self.joined = false,
                    None => {}
                }
                if self.deadline.is_some_and(|d| now >= d) {
                    return Action::Done(None);
                }
                self.stand_in_line();
                if self.line != Line::In && now - self.started >= STARVATION {
                    self.line = Line::In;
                    return self.attempt(now);
                }
                self.until = self.sleep_until(now, busy.retry_in);
                if self.polling {
                    Action::Sleep { until: self.until }
                } else {
                    Action::Listen
                }
            }
            // A release between the busy reply and the registration woke
            // nobody: only a sleep after a look that followed it is safe.
            Outcome::Listening { fresh: false, .. } => Action::Sleep { until: self.until },
            Outcome::Subscribed(Err(_)) => {
                self.polling = true;
                self.attempt(now)
            }
            // A stale grant, or one read so late that less than half its
            // lease may be left (the waiter was paused, its runtime busy):
            // look again. A grant still ours is taken up by the attempt,
            // with a whole lease counted from it; one that ran out is not
            // returned as a guard already lost.
            Outcome::Woke { grant: Some(fence) }
                if fence <= self.seen_fence || self.read_late(now) =>
            {
                self.attempt(now)
            }
            Outcome::Woke { grant: Some(fence) } => self.done(
                Acquired::new(Some(fence))
                    .sent_at(self.sent)
                    .lease(granted_lease(self.lease_ms)),
            ),
        }
    }

    /// Whether a grant read at `now` may have less than half its lease
    /// left: its lease counts from the last attempt's sending at the latest.
    fn read_late(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.sent) * 2 >= granted_lease(self.lease_ms)
    }

    fn attempt(&mut self, now: Instant) -> Action {
        self.joined |= self.line != Line::Out;
        // An attempt in line joins it unless it takes the lock.
        self.queued |= self.line == Line::In;
        self.sent = now;
        Action::Attempt {
            line: self.line,
            first: self.first,
        }
    }

    fn done(&mut self, a: Acquired) -> Action {
        // Taking the lock in line took it out of the line too.
        self.joined = false;
        self.queued = false;
        Action::Done(Some(a))
    }

    fn sleep_until(&mut self, now: Instant, retry_in: Option<Duration>) -> Option<Instant> {
        let mut until = self.deadline;
        let mut cap = |t: Instant| until = Some(until.map_or(t, |u| u.min(t)));
        if let Some(r) = retry_in {
            // No release announces a lease that runs out.
            cap(now + r + Duration::from_millis(1));
        }
        if self.line == Line::In {
            // Show the line it is alive before its place expires.
            cap(now + REFRESH);
        } else {
            // Join the line on time even if no wake-up comes: a waiter
            // outside it is not told when a release grants the lock to the
            // line's head.
            cap(self.started + STARVATION);
        }
        if self.polling {
            cap(now + self.jitter.around(self.poll));
        }
        until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendErrorKind, Busy};

    const POLL: Duration = Duration::from_millis(100);

    fn busy(retry_in: Option<Duration>) -> Outcome {
        Outcome::Attempted(Attempt::Busy(Busy::new(retry_in)), None)
    }

    fn waiting(req: &Request<'_>, deadline: Option<Instant>, now: Instant) -> Waiting {
        Waiting::new(req, Wait::new(deadline, POLL), now)
    }

    /// Busy at `now`, registered and subscribed: the instant it sleeps until.
    fn sleeps_after_busy(w: &mut Waiting, now: Instant, retry_in: Option<Duration>) -> Instant {
        assert_eq!(w.next(now, busy(retry_in)), Action::Listen);
        match w.next(
            now,
            Outcome::Listening {
                fresh: false,
                in_time: false,
            },
        ) {
            Action::Sleep { until: Some(u) } => u,
            other => panic!("expected a bounded sleep, got {other:?}"),
        }
    }

    #[test]
    fn the_first_attempt_may_take_the_fast_path_and_later_ones_not() {
        let t0 = Instant::now();
        let req = Request::new("k");
        let mut w = waiting(&req, None, t0);
        assert_eq!(
            w.next(t0, Outcome::Start),
            Action::Attempt {
                line: Line::Out,
                first: true
            }
        );
        assert_eq!(w.next(t0, busy(None)), Action::Listen);
        assert_eq!(
            w.next(
                t0,
                Outcome::Listening {
                    fresh: true,
                    in_time: false
                }
            ),
            Action::Attempt {
                line: Line::IfRemote,
                first: false
            },
            "just registered: looks once more before sleeping, in line if \
             another process holds the lock"
        );
    }

    #[test]
    fn a_waiter_in_line_since_a_look_the_subscriber_was_up_for_does_not_look_again() {
        let t0 = Instant::now();
        for (in_time, fair) in [(true, true), (false, true), (true, false)] {
            let req = Request::new("k").fair(fair);
            let mut w = waiting(&req, None, t0);
            w.next(t0, Outcome::Start);
            assert_eq!(
                w.next(t0, busy(Some(Duration::from_secs(1)))),
                Action::Listen
            );
            let next = w.next(
                t0,
                Outcome::Listening {
                    fresh: true,
                    in_time,
                },
            );
            if in_time && fair {
                assert!(
                    matches!(next, Action::Sleep { until: Some(_) }),
                    "in line, its grant reaches it: {next:?}"
                );
            } else {
                assert!(
                    matches!(next, Action::Attempt { .. }),
                    "in_time {in_time}, fair {fair}: a release may have gone unheard, so it looks: {next:?}"
                );
            }
        }
    }

    #[test]
    fn an_acquired_attempt_is_the_end() {
        let t0 = Instant::now();
        let req = Request::new("k").fair(true);
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        assert!(w.holds_place(), "a fair attempt stands in line");
        let won = Acquired::new(Some(3)).sent_at(t0);
        assert_eq!(
            w.next(t0, Outcome::Attempted(Attempt::Acquired(won.clone()), None)),
            Action::Done(Some(won))
        );
        assert!(!w.holds_place(), "taking the lock left the line");
    }

    #[test]
    fn a_waiter_gives_up_at_the_deadline() {
        let t0 = Instant::now();
        let req = Request::new("k").fair(true);
        let mut w = waiting(&req, Some(t0 + Duration::from_millis(50)), t0);
        w.next(t0, Outcome::Start);
        let until = sleeps_after_busy(&mut w, t0, Some(Duration::from_secs(10)));
        assert_eq!(
            until,
            t0 + Duration::from_millis(50),
            "it never sleeps past it"
        );
        let later = t0 + Duration::from_millis(50);
        assert_eq!(
            w.next(later, Outcome::Woke { grant: None }),
            Action::Attempt {
                line: Line::In,
                first: false
            }
        );
        assert_eq!(w.next(later, busy(None)), Action::Done(None));
        assert!(w.holds_place(), "the driver still has to leave the line");
    }

    #[test]
    fn a_waiter_joins_the_line_after_starving() {
        let t0 = Instant::now();
        let req = Request::new("k");
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        assert!(!w.holds_place());
        let until = sleeps_after_busy(&mut w, t0, None);
        assert!(
            until <= t0 + STARVATION,
            "it looks again when it starts starving"
        );
        let starving = t0 + STARVATION;
        w.next(starving, Outcome::Woke { grant: None });
        assert_eq!(
            w.next(starving, busy(None)),
            Action::Attempt {
                line: Line::In,
                first: false
            },
            "it joins the line at once"
        );
        assert!(w.holds_place());
        // In line it shows it is alive at least every REFRESH.
        let until = sleeps_after_busy(&mut w, starving, None);
        assert!(until <= starving + REFRESH);
    }

    #[test]
    fn a_waiter_in_line_shows_it_is_alive_at_least_every_refresh() {
        let t0 = Instant::now();
        let req = Request::new("k").fair(true);
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        let mut now = t0;
        for _ in 0..3 {
            let until = sleeps_after_busy(&mut w, now, Some(Duration::from_secs(60)));
            assert!(
                until <= now + REFRESH,
                "slept past a refresh: {:?}",
                until - now
            );
            now = until;
            assert_eq!(
                w.next(now, Outcome::Woke { grant: None }),
                Action::Attempt {
                    line: Line::In,
                    first: false
                },
                "the next look refreshes its place"
            );
        }
    }

    #[test]
    fn a_waiter_looks_again_just_after_the_holders_lease_ends() {
        let t0 = Instant::now();
        let req = Request::new("k").fair(true);
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        let until = sleeps_after_busy(&mut w, t0, Some(Duration::from_millis(30)));
        assert_eq!(
            until,
            t0 + Duration::from_millis(31),
            "no release announces a lease end"
        );
    }

    #[test]
    fn a_failed_subscription_falls_back_to_polling() {
        let t0 = Instant::now();
        let req = Request::new("k").fair(true);
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        assert_eq!(w.next(t0, busy(None)), Action::Listen);
        let failed = BackendError::new(BackendErrorKind::Connection, "no subscriber");
        assert_eq!(
            w.next(t0, Outcome::Subscribed(Err(failed))),
            Action::Attempt {
                line: Line::In,
                first: false
            },
            "it looks again before it sleeps unwoken"
        );
        match w.next(t0, busy(None)) {
            Action::Sleep { until: Some(u) } => {
                assert!(
                    u <= t0 + POLL * 3 / 2,
                    "polls at the alias's interval: {:?}",
                    u - t0
                )
            }
            other => panic!("a polling waiter sleeps without listening, got {other:?}"),
        }
    }

    /// A barging waiter's start: its first attempt is busy, it subscribes,
    /// and then looks once more, in line if another process holds the lock.
    fn subscribed_after_busy(w: &mut Waiting, t0: Instant) {
        w.next(t0, Outcome::Start);
        assert_eq!(w.next(t0, busy(None)), Action::Listen);
        assert_eq!(
            w.next(t0, Outcome::Subscribed(Ok(()))),
            Action::Attempt {
                line: Line::IfRemote,
                first: false
            }
        );
    }

    #[test]
    fn a_subscribed_channel_means_one_more_look() {
        let t0 = Instant::now();
        let req = Request::new("k");
        let mut w = waiting(&req, None, t0);
        subscribed_after_busy(&mut w, t0);
    }

    #[test]
    fn a_grant_ends_the_wait_with_the_lock() {
        let t0 = Instant::now();
        let req = Request::new("k")
            .fair(true)
            .lease(Some(Duration::from_secs(60)));
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        let until = sleeps_after_busy(&mut w, t0, None);
        let t1 = t0 + Duration::from_millis(5);
        w.next(t1, Outcome::Woke { grant: None });
        let until2 = sleeps_after_busy(&mut w, t1, None);
        assert!(until2 >= until);
        match w.next(
            t1 + Duration::from_millis(1),
            Outcome::Woke { grant: Some(9) },
        ) {
            Action::Done(Some(a)) => assert_eq!(
                a,
                Acquired::new(Some(9))
                    .sent_at(t1)
                    .lease(granted_lease(60_000)),
                "the lease counts from the last request, at most the waiter TTL"
            ),
            other => panic!("expected the granted lock, got {other:?}"),
        }
        assert!(!w.holds_place(), "the grant took it out of the line");
    }

    #[test]
    fn a_grant_made_before_a_busy_look_in_line_is_stale() {
        // The waiter was paused after a release granted it the lock (fence
        // 9); its lease ran out and another took the lock (fence 10). On
        // waking, its refresh in line found the lock busy before the grant's
        // message was read: the grant does not count, the waiter looks again.
        let t0 = Instant::now();
        let req = Request::new("k")
            .fair(true)
            .lease(Some(Duration::from_secs(1)));
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(w.next(t1, refreshed_at(10)), Action::Listen);
        w.next(
            t1,
            Outcome::Listening {
                fresh: false,
                in_time: false,
            },
        );
        assert_eq!(
            w.next(t1, Outcome::Woke { grant: Some(9) }),
            Action::Attempt {
                line: Line::In,
                first: false
            },
            "a stale grant is looked at again, not taken"
        );
        // A grant made after that look counts, from the look's sending.
        let t2 = t1 + Duration::from_millis(5);
        assert_eq!(w.next(t2, refreshed_at(11)), Action::Listen);
        w.next(
            t2,
            Outcome::Listening {
                fresh: false,
                in_time: false,
            },
        );
        match w.next(t2, Outcome::Woke { grant: Some(12) }) {
            Action::Done(Some(a)) => assert_eq!(a.fencing, Some(12)),
            other => panic!("expected the granted lock, got {other:?}"),
        }
    }

    /// A busy look in line, which found the fencing counter at `fence`.
    fn refreshed_at(fence: u64) -> Outcome {
        Outcome::Attempted(Attempt::Busy(Busy::new(None)), Some(fence))
    }

    #[test]
    fn a_grant_read_late_is_confirmed_not_taken() {
        // Paused after its last look: the grant's message is read when half
        // the lease may have passed, so the waiter looks again (the lock is
        // still its own if the lease has not run out) instead of returning
        // a guard that may be lost already.
        let t0 = Instant::now();
        let req = Request::new("k")
            .fair(true)
            .lease(Some(Duration::from_secs(1)));
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        sleeps_after_busy(&mut w, t0, None);
        let late = t0 + Duration::from_millis(500);
        assert_eq!(
            w.next(late, Outcome::Woke { grant: Some(3) }),
            Action::Attempt {
                line: Line::In,
                first: false
            }
        );
        // Read in time, the same grant is taken.
        let mut w = waiting(&req, None, t0);
        w.next(t0, Outcome::Start);
        sleeps_after_busy(&mut w, t0, None);
        let soon = t0 + Duration::from_millis(499);
        assert!(matches!(
            w.next(soon, Outcome::Woke { grant: Some(3) }),
            Action::Done(Some(_))
        ));
    }

    #[test]
    fn a_waiter_behind_a_local_holder_sleeps_first_and_looks_soon_at_the_latest() {
        let t0 = Instant::now();
        for fair in [false, true] {
            let req = Request::new("k").fair(fair);
            let mut w = waiting(&req, None, t0);
            w.contended(t0);
            let start = w.skip_look(t0);
            match w.next(t0, start) {
                Action::Sleep { until: Some(u) } => assert!(u <= t0 + STARVATION),
                other => panic!("expected a short sleep, got {other:?}"),
            }
            assert_eq!(
                w.next(t0 + STARVATION, Outcome::Woke { grant: None }),
                Action::Attempt {
                    line: if fair { Line::In } else { Line::IfRemote },
                    first: false
                },
                "then it looks, through the script"
            );
        }
    }

    /// A busy reply from a look that holds a place in line: it read the
    /// fencing counter.
    fn busy_in_line(retry_in: Duration, fence: u64) -> Outcome {
        Outcome::Attempted(Attempt::Busy(Busy::new(Some(retry_in))), Some(fence))
    }

    #[test]
    fn a_barging_waiter_whose_look_joined_the_line_waits_there_for_its_grant() {
        let t0 = Instant::now();
        let req = Request::new("k");
        let mut w = waiting(&req, None, t0);
        subscribed_after_busy(&mut w, t0);
        // Another process holds the lock: the look joined the line.
        assert_eq!(
            w.next(t0, busy_in_line(Duration::from_secs(60), 7)),
            Action::Listen
        );
        match w.next(
            t0,
            Outcome::Listening {
                fresh: false,
                in_time: true,
            },
        ) {
            Action::Sleep { until: Some(u) } => assert!(
                u > t0 + STARVATION && u <= t0 + REFRESH,
                "in line it sleeps until its refresh, not a barging waiter's 10 ms: {:?}",
                u - t0
            ),
            other => panic!("expected a sleep, got {other:?}"),
        }
        assert!(w.holds_place());
        assert_eq!(
            w.next(t0 + REFRESH, Outcome::Woke { grant: None }),
            Action::Attempt {
                line: Line::In,
                first: false
            },
            "its later looks keep its place"
        );
        assert!(
            matches!(
                w.next(t0 + REFRESH, busy_in_line(Duration::from_secs(60), 8)),
                Action::Listen
            ),
            "still waiting"
        );
        assert!(matches!(
            w.next(t0 + REFRESH, Outcome::Woke { grant: Some(9) }),
            Action::Done(Some(_))
        ));
        assert!(!w.holds_place(), "the grant took it out of the line");
    }

    #[test]
    fn a_barging_waiter_behind_a_holder_of_its_own_process_joins_the_line_only_when_it_starves() {
        let t0 = Instant::now();
        let req = Request::new("k");
        let mut w = waiting(&req, None, t0);
        subscribed_after_busy(&mut w, t0);
        // The holder is of its own process: no place in line, no counter.
        let until = sleeps_after_busy(&mut w, t0, Some(Duration::from_secs(60)));
        assert!(until <= t0 + STARVATION, "{:?}", until - t0);
        assert!(
            !w.holds_place(),
            "a look that found its own process's holder left no place to leave"
        );
        let starving = t0 + STARVATION;
        assert_eq!(
            w.next(starving, Outcome::Woke { grant: None }),
            Action::Attempt {
                line: Line::IfRemote,
                first: false
            }
        );
        assert_eq!(
            w.next(starving, busy(Some(Duration::from_secs(60)))),
            Action::Attempt {
                line: Line::In,
                first: false
            },
            "starving, it joins whoever holds the lock"
        );
        assert!(w.holds_place(), "a look in line may have joined it");
    }
}
