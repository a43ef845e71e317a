//! The local line: within one process, at most one waiting acquisition per
//! key stands in Redis at a time (it has the key's turn); the process's other
//! waiters for that key wait here, first come first served, each until its
//! own deadline. A burst of waiters then costs Redis one waiter per process
//! instead of a look, a subscription and a place in line each, which would
//! crowd out the very hand-offs they wait for.
//!
//! The turn passes on when its holder ends, however it ends (the lock, the
//! deadline, an error, a panic, its future dropped). A holder that stops
//! making progress without ending (a future kept but never polled again)
//! loses the turn to the next waiter after [`STALL`], so it cannot strand
//! the others.
//!
//! The turn's holder also offers itself as the successor of a holder in this
//! process: a release made here then hands the lock straight to it in the
//! same script (unless Redis keeps a line, which goes first) and wakes it
//! with the grant, so the hand-off needs no look and no message through the
//! subscriber.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::REFRESH;
use super::wake::LocalWaiter;
use crate::backend::Token;

/// How long a turn's holder may go without a step before the next waiter
/// takes the turn over. A waiter in Redis steps at least every [`REFRESH`]
/// (a barging one more often), so only a stuck one is passed over.
pub(super) const STALL: Duration = Duration::from_millis(2 * REFRESH.as_millis() as u64);

/// The local lines of one store, by key.
#[derive(Default)]
pub(super) struct Gates {
    lines: Mutex<HashMap<String, Line>>,
    /// Turns that ended while a release was handing them the lock, and
    /// whether they ended with it (taken by their own look): the release
    /// gives back a lock granted to a waiter that left without it.
    departed: Mutex<HashMap<u64, bool>>,
    /// Numbers turns and queued waiters, in arrival order.
    next: AtomicU64,
    /// The lines open, plus one while a [`Solo`] attempt is in flight: at
    /// zero, no release needs to look for a successor.
    active: AtomicUsize,
}

/// A first attempt made before the local line (see [`Gates::solo`]); the
/// next may go once it is dropped.
pub(super) struct Solo<'a>(&'a AtomicUsize);

impl Drop for Solo<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// A key someone in this process is waiting for in Redis.
struct Line {
    /// The turn's number: only the turn that still has it passes it on.
    turn: u64,
    /// When the turn's holder last stepped, in ms since `Gates::base`.
    beat: Arc<Beat>,
    /// Waiting here, by arrival, each ready to be offered as a successor.
    queue: BTreeMap<u64, Offer>,
    /// The turn's holder took it from one that ended with the lock, which a
    /// holder in this process then has.
    held_here: bool,
    /// The turn's holder, offered as the successor of a local release.
    offer: Option<Offer>,
}

/// A waiter a release in this process may hand the lock to.
struct Offer {
    token: Token,
    lease_ms: u64,
    meta: String,
    waiter: Arc<LocalWaiter>,
    /// When it gives up: past it, it is passed over for the turn.
    deadline: Option<Instant>,
    /// A release is handing the lock to it now.
    claimed: bool,
}

/// A release's claim on the successor of a key: what the release script
/// needs to hand it the lock. [`Gates::deliver`] settles it.
pub(super) struct Claim {
    number: u64,
    pub(super) token: Token,
    pub(super) lease_ms: u64,
    pub(super) meta: String,
}

/// A turn holder's heartbeat.
pub(super) struct Beat {
    base: Instant,
    at_ms: AtomicU64,
}

impl Beat {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            at_ms: AtomicU64::new(0),
        })
    }

    fn stamp(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    fn stalled(&self, now: Instant) -> bool {
        let at = self.base + Duration::from_millis(self.at_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(at) >= STALL
    }
}

/// The key's turn: its holder waits for the lock in Redis. Dropped, it
/// passes the turn to the first waiter queued behind it.
pub(super) struct Turn<'a> {
    gates: &'a Gates,
    key: &'a str,
    number: u64,
    beat: Arc<Beat>,
    /// It waited behind another local waiter: the key is contended.
    queued: bool,
    /// The turn came from a holder that ended with the lock.
    held_here: bool,
    /// How it ended, for the turn's next holder.
    acquired: bool,
    finished: bool,
}

impl Turn<'_> {
    /// The holder is making progress (called on each of its steps).
    pub(super) fn step(&self) {
        self.beat.stamp();
    }

    /// Whether it waited behind another waiter of this process.
    pub(super) fn was_queued(&self) -> bool {
        self.queued
    }

    /// Whether the previous holder of the turn ended with the lock, so a
    /// holder in this process has it and its release will hand it on here.
    pub(super) fn held_here(&self) -> bool {
        self.held_here
    }

    /// Offers the holder (its token, the lease it asked for, its meta
    /// suffix, its waiter) as the successor of a release made here.
    pub(super) fn offer(&self, token: Token, lease_ms: u64, meta: &str, waiter: &Arc<LocalWaiter>) {
        let mut lines = lock(&self.gates.lines);
        if let Some(line) = lines.get_mut(self.key)
            && line.turn == self.number
            && line.offer.is_none()
        {
            line.offer = Some(Offer {
                token,
                lease_ms,
                meta: meta.to_owned(),
                waiter: Arc::clone(waiter),
                deadline: None,
                claimed: false,
            });
        }
    }

    /// The holder's wait ended, with the lock or not: no release hands it
    /// the lock any more, and one doing so now learns which.
    pub(super) fn finish(&mut self, acquired: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.acquired = acquired;
        let mut lines = lock(&self.gates.lines);
        let Some(line) = lines.get_mut(self.key) else {
            return;
        };
        if line.turn != self.number {
            return;
        }
        if let Some(offer) = line.offer.take()
            && offer.claimed
        {
            lock(&self.gates.departed).insert(self.number, acquired);
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Ended otherwise (an error, a panic, a dropped future): whatever a
        // failed request may have won is given back by its own clean-up, and
        // a second give-back by token changes nothing.
        self.finish(false);
        let mut lines = lock(&self.gates.lines);
        pass_on(self.gates, &mut lines, self.key, self.number, self.acquired);
    }
}

/// Hands the turn numbered `number` on `key` to the first waiter queued
/// there whose deadline has not passed, offered as the successor at once,
/// or closes the line if none is (unless another took the turn over).
/// `acquired`: the turn ended with the lock.
///
/// A waiter passed over gives up on its own wake-up, as it would have with
/// the turn; given the turn, it would have cost the line that wake-up before
/// the turn went on (at the end of a crowd, most of the line).
fn pass_on(
    gates: &Gates,
    lines: &mut HashMap<String, Line>,
    key: &str,
    number: u64,
    acquired: bool,
) {
    let Some(line) = lines.get_mut(key) else {
        return;
    };
    if line.turn != number {
        return;
    }
    let mut now = None;
    let mut live = |offer: &Offer| {
        offer
            .deadline
            .is_none_or(|d| d > *now.get_or_insert_with(Instant::now))
    };
    let first = std::iter::from_fn(|| line.queue.pop_first()).find(|(_, offer)| live(offer));
    match first {
        Some((next, offer)) => {
            line.turn = next;
            line.beat = Beat::new();
            line.held_here = acquired;
            let waiter = Arc::clone(&offer.waiter);
            line.offer = Some(offer);
            waiter.signal();
        }
        None => {
            lines.remove(key);
            gates.active.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Who waits: what a release needs to hand it the lock.
#[derive(Clone, Copy)]
pub(super) struct Seat<'a> {
    pub(super) token: Token,
    /// The lease it asked for.
    pub(super) lease_ms: u64,
    /// Its meta suffix.
    pub(super) meta: &'a str,
}

/// Where a waiter stands after [`Gates::enter`].
enum Entry<'a> {
    Turn(Turn<'a>),
    Queued(Queued<'a>),
}

/// A waiter queued in a local line. Dropped before it got the turn, it
/// leaves the queue; dropped with a turn it never used, it passes it on.
struct Queued<'a> {
    gates: &'a Gates,
    key: &'a str,
    number: u64,
    waiter: Arc<LocalWaiter>,
    done: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut lines = lock(&self.gates.lines);
        let Some(line) = lines.get_mut(self.key) else {
            return;
        };
        if line.turn == self.number {
            // Given the turn on its way out, and offered as successor with
            // it: a release handing it the lock now must give it back.
            if line.offer.take().is_some_and(|o| o.claimed) {
                lock(&self.gates.departed).insert(self.number, false);
            }
            let held_here = line.held_here;
            pass_on(self.gates, &mut lines, self.key, self.number, held_here);
        } else {
            line.queue.remove(&self.number);
        }
    }
}

impl<'a> Queued<'a> {
    /// What a queued waiter does next, for both drivers: it has the turn
    /// (taking it over from a stalled holder if it is first in the queue),
    /// or its deadline passed, or it sleeps until a signal or the instant
    /// given (its deadline, or when to look for a stalled turn). All three
    /// are decided under one lock: a waiter that gives up was never given
    /// the turn, so no release can be handing it the lock.
    fn next(&mut self, now: Instant, deadline: Option<Instant>) -> Next<'a> {
        let mut lines = lock(&self.gates.lines);
        let waits = |line: Option<&mut Line>, done: &mut bool| {
            if deadline.is_some_and(|d| now >= d) {
                if let Some(line) = line {
                    line.queue.remove(&self.number);
                }
                *done = true;
                return Next::GaveUp;
            }
            // Looks again after STALL at the latest: the turn's holder may
            // have stalled.
            let check = now + STALL;
            Next::Sleep(deadline.map_or(check, |d| d.min(check)))
        };
        let Some(line) = lines.get_mut(self.key) else {
            return waits(None, &mut self.done);
        };
        if line.turn != self.number {
            let first = line.queue.first_key_value().map(|(n, _)| *n);
            if first != Some(self.number) || !line.beat.stalled(now) {
                return waits(Some(line), &mut self.done);
            }
            tracing::debug!(
                key = self.key,
                "a waiter stalled with the key's turn; the next one takes it"
            );
            line.queue.remove(&self.number);
            line.turn = self.number;
            line.beat = Beat::new();
            line.offer = None;
            line.held_here = false;
        }
        self.done = true;
        if self.waiter.has_grant() {
            // Woken for its turn and granted the lock at once: keep the
            // wake-up for the acquisition to find.
            self.waiter.signal();
        }
        Next::Turn(Turn {
            gates: self.gates,
            key: self.key,
            number: self.number,
            beat: Arc::clone(&line.beat),
            queued: true,
            held_here: line.held_here,
            acquired: false,
            finished: false,
        })
    }
}

/// A queued waiter's next step ([`Queued::next`]).
enum Next<'a> {
    Turn(Turn<'a>),
    GaveUp,
    Sleep(Instant),
}

impl Gates {
    /// Leave to make a first attempt before the local line, given while
    /// this store has no line open in this process and no other such
    /// attempt is in flight: an uncontended acquisition then costs the line
    /// nothing, and a burst of waiters sends one attempt, not one each (the
    /// others queue here). No waiter of this process is in line then, so
    /// the attempt passes nobody who queued.
    pub(super) fn solo(&self) -> Option<Solo<'_>> {
        self.active
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Solo(&self.active))
    }

    /// Whether no line is open and no [`solo`](Self::solo) attempt is in
    /// flight, so an acquisition may try first: a hint, as a line may open
    /// at any moment.
    pub(super) fn quiet(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    fn enter<'a>(
        &'a self,
        key: &'a str,
        seat: Seat<'_>,
        waiter: &Arc<LocalWaiter>,
        deadline: Option<Instant>,
    ) -> Entry<'a> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut lines = lock(&self.lines);
        match lines.get_mut(key) {
            None => {
                let beat = Beat::new();
                self.active.fetch_add(1, Ordering::AcqRel);
                lines.insert(
                    key.to_owned(),
                    Line {
                        turn: number,
                        beat: Arc::clone(&beat),
                        queue: BTreeMap::new(),
                        held_here: false,
                        offer: None,
                    },
                );
                Entry::Turn(Turn {
                    gates: self,
                    key,
                    number,
                    beat,
                    queued: false,
                    held_here: false,
                    acquired: false,
                    finished: false,
                })
            }
            Some(line) => {
                let waiter = Arc::clone(waiter);
                line.queue.insert(
                    number,
                    Offer {
                        token: seat.token,
                        lease_ms: seat.lease_ms,
                        meta: seat.meta.to_owned(),
                        waiter: Arc::clone(&waiter),
                        deadline,
                        claimed: false,
                    },
                );
                Entry::Queued(Queued {
                    gates: self,
                    key,
                    number,
                    waiter,
                    done: false,
                })
            }
        }
    }

    /// The key's turn for a blocking waiter, parking the thread on `waiter`
    /// (made for it) until it comes; `None` if the deadline passed first.
    /// Once the turn is its, a release in this process may grant `waiter`
    /// the lock: the caller gives back a grant it leaves without.
    pub(super) fn turn_blocking<'a>(
        &'a self,
        key: &'a str,
        seat: Seat<'_>,
        waiter: &Arc<LocalWaiter>,
        deadline: Option<Instant>,
    ) -> Option<Turn<'a>> {
        let mut queued = match self.enter(key, seat, waiter, deadline) {
            Entry::Turn(t) => return Some(t),
            Entry::Queued(q) => q,
        };
        loop {
            match queued.next(Instant::now(), deadline) {
                Next::Turn(turn) => return Some(turn),
                Next::GaveUp => return None,
                Next::Sleep(until) => queued.waiter.park_until(Some(until)),
            }
            queued.waiter.take_signal();
        }
    }

    /// The key's turn for an async waiter, woken through `waiter` (made for
    /// a task); `None` if the deadline passed first. Dropped while queued,
    /// it leaves the queue. Once the turn is its, a release in this process
    /// may grant `waiter` the lock: the caller gives back a grant it leaves
    /// without.
    pub(super) async fn turn<'a>(
        &'a self,
        key: &'a str,
        seat: Seat<'_>,
        waiter: Arc<LocalWaiter>,
        deadline: Option<Instant>,
    ) -> Option<Turn<'a>> {
        let mut queued = match self.enter(key, seat, &waiter, deadline) {
            Entry::Turn(t) => return Some(t),
            Entry::Queued(q) => q,
        };
        loop {
            match queued.next(Instant::now(), deadline) {
                Next::Turn(turn) => return Some(turn),
                Next::GaveUp => return None,
                Next::Sleep(until) => {
                    let _ = tokio::time::timeout_at(until.into(), queued.waiter.signalled()).await;
                }
            }
            queued.waiter.take_signal();
        }
    }

    /// Claims the successor offered for `key`, if one is and no other
    /// release is handing it the lock already.
    pub(super) fn claim(&self, key: &str) -> Option<Claim> {
        // No line open: no successor, and no lock to take for finding out.
        // A line opening meanwhile is as if it opened after this release.
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut lines = lock(&self.lines);
        let line = lines.get_mut(key)?;
        let number = line.turn;
        let offer = line.offer.as_mut().filter(|o| !o.claimed)?;
        offer.claimed = true;
        Some(Claim {
            number,
            token: offer.token,
            lease_ms: offer.lease_ms,
            meta: offer.meta.clone(),
        })
    }

    /// Settles `claim` after the release script: `granted` is the fencing
    /// token of the lock it handed the successor (`None`: it did not, or
    /// the answer is unknown). Wakes the successor, with the lock or to look
    /// (the lock went to the head of Redis's line, say); `true`
    /// when the successor left without it meanwhile, so the caller must
    /// give the lock back for it.
    pub(super) fn deliver(&self, key: &str, claim: &Claim, granted: Option<u64>) -> bool {
        {
            let mut lines = lock(&self.lines);
            if let Some(line) = lines.get_mut(key)
                && line.turn == claim.number
                && let Some(offer) = &mut line.offer
            {
                match granted {
                    Some(fence) => {
                        offer.waiter.grant(fence);
                        line.offer = None;
                    }
                    None => {
                        // Freed for someone else, or unknown: it looks.
                        offer.claimed = false;
                        offer.waiter.signal();
                    }
                }
                return false;
            }
        }
        let left_with = lock(&self.departed).remove(&claim.number);
        granted.is_some() && left_with == Some(false)
    }

    /// How many waiters wait in this process's line for `key`, beside the
    /// turn's holder.
    #[cfg(test)]
    fn queued(&self, key: &str) -> usize {
        lock(&self.lines).get(key).map_or(0, |l| l.queue.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::new()
    }

    fn waiter() -> Arc<LocalWaiter> {
        LocalWaiter::for_thread(token())
    }

    fn task_waiter() -> Arc<LocalWaiter> {
        LocalWaiter::for_task(token())
    }

    /// The turn of key `k`, and a waiter queued behind it on `waiter`.
    fn behind_a_turn<'a>(gates: &'a Gates, waiter: &Arc<LocalWaiter>) -> (Turn<'a>, Queued<'a>) {
        let first = gates
            .turn_blocking("k", seat(), &super::tests::waiter(), None)
            .expect("free");
        let Entry::Queued(next) = gates.enter("k", seat(), waiter, None) else {
            panic!("the key is taken");
        };
        (first, next)
    }

    fn seat() -> Seat<'static> {
        Seat {
            token: token(),
            lease_ms: 1000,
            meta: "",
        }
    }

    #[test]
    fn a_solo_attempt_goes_only_while_no_line_is_open_and_no_other_goes() {
        let gates = Gates::default();
        let solo = gates.solo().expect("nobody waits");
        assert!(gates.solo().is_none(), "one solo attempt at a time");
        drop(solo);
        let turn = gates
            .turn_blocking("k", seat(), &waiter(), None)
            .expect("free");
        assert!(gates.solo().is_none(), "a line is open");
        let (offered, waiter) = (turn, LocalWaiter::for_thread(token()));
        offered.offer(token(), 1000, "", &waiter);
        assert!(gates.claim("k").is_some(), "a release finds the successor");
        drop(offered);
        assert!(lock(&gates.lines).is_empty());
        assert!(gates.solo().is_some(), "the line closed with its last turn");
        assert!(gates.claim("k").is_none(), "no line, no successor");
    }

    #[test]
    fn the_first_waiter_gets_the_turn_and_passes_it_in_arrival_order() {
        let gates = Arc::new(Gates::default());
        let first = gates
            .turn_blocking("k", seat(), &waiter(), None)
            .expect("free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..3 {
            let (shared, order) = (Arc::clone(&gates), Arc::clone(&order));
            threads.push(std::thread::spawn(move || {
                let turn = shared
                    .turn_blocking("k", seat(), &waiter(), None)
                    .expect("no deadline");
                lock(&order).push(i);
                drop(turn);
            }));
            while gates.queued("k") <= i {
                std::thread::yield_now();
            }
        }
        assert!(
            gates
                .turn_blocking("other", seat(), &waiter(), None)
                .is_some(),
            "another key has its own line"
        );
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock(&order), [0, 1, 2]);
        assert!(
            lock(&gates.lines).is_empty(),
            "the last turn closed the line"
        );
    }

    #[test]
    fn a_queued_waiter_gives_up_at_its_deadline_and_leaves_the_queue() {
        let gates = Gates::default();
        let turn = gates
            .turn_blocking("k", seat(), &waiter(), None)
            .expect("free");
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(30);
        assert!(
            gates
                .turn_blocking("k", seat(), &waiter(), Some(deadline))
                .is_none()
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!(gates.queued("k"), 0);
        drop(turn);
        assert!(lock(&gates.lines).is_empty());
    }

    #[tokio::test]
    async fn a_dropped_queued_future_leaves_and_a_turn_given_on_its_way_out_goes_on() {
        let gates = Gates::default();
        let turn = gates
            .turn("k", seat(), task_waiter(), None)
            .await
            .expect("free");
        {
            let waiting = gates.turn("k", seat(), task_waiter(), None);
            let mut waiting = Box::pin(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            assert_eq!(gates.queued("k"), 1);
        }
        assert_eq!(gates.queued("k"), 0, "the dropped future left the queue");
        // One queued waiter is given the turn, then dropped unpolled: the
        // turn goes to the one behind it.
        let mut a = Box::pin(gates.turn("k", seat(), task_waiter(), None));
        let mut b = Box::pin(gates.turn("k", seat(), task_waiter(), None));
        assert!(futures::poll!(a.as_mut()).is_pending());
        assert!(futures::poll!(b.as_mut()).is_pending());
        drop(turn);
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .expect("the turn was passed on");
        assert!(got.is_some());
    }

    #[test]
    fn a_stalled_turn_is_taken_over_and_its_late_drop_changes_nothing() {
        let gates = Gates::default();
        let (stuck, mut next) = behind_a_turn(&gates, &waiter());
        // Pretend the holder last stepped longer than STALL ago.
        assert!(
            matches!(next.next(Instant::now(), None), Next::Sleep(_)),
            "the holder is alive"
        );
        let Next::Turn(taken) = next.next(Instant::now() + STALL, None) else {
            panic!("not taken over from a stalled holder");
        };
        drop(stuck);
        assert_eq!(
            lock(&gates.lines).get("k").map(|l| l.turn),
            Some(taken.number),
            "the stalled holder's late drop passes nothing on"
        );
        drop(taken);
        assert!(lock(&gates.lines).is_empty());
    }

    fn offered(gates: &Gates) -> (Turn<'_>, Arc<LocalWaiter>) {
        let turn = gates
            .turn_blocking("k", seat(), &waiter(), None)
            .expect("free");
        let waiter = LocalWaiter::for_thread(token());
        turn.offer(token(), 1000, "#3", &waiter);
        (turn, waiter)
    }

    #[test]
    fn a_release_hands_the_lock_to_the_offered_successor() {
        let gates = Gates::default();
        let (turn, waiter) = offered(&gates);
        let claim = gates.claim("k").expect("a successor is offered");
        assert_eq!((claim.lease_ms, claim.meta.as_str()), (1000, "#3"));
        assert!(gates.claim("k").is_none(), "one release at a time");
        assert!(!gates.deliver("k", &claim, Some(8)));
        assert_eq!(waiter.take_grant(), Some(8), "woken with the lock");
        assert!(gates.claim("k").is_none(), "the offer was used up");
        drop(turn);
    }

    #[test]
    fn a_release_without_an_answer_leaves_the_offer_standing() {
        let gates = Gates::default();
        let (_turn, waiter) = offered(&gates);
        let claim = gates.claim("k").expect("offered");
        assert!(!gates.deliver("k", &claim, None));
        assert_eq!(waiter.take_grant(), None);
        assert!(waiter.take_signal(), "woken to look for itself");
        assert!(
            gates.claim("k").is_some(),
            "the next release may hand it on"
        );
    }

    #[test]
    fn a_lock_granted_to_a_successor_that_left_without_it_is_given_back() {
        let gates = Gates::default();
        let (mut turn, _) = offered(&gates);
        let claim = gates.claim("k").expect("offered");
        turn.finish(false);
        drop(turn);
        assert!(
            gates.deliver("k", &claim, Some(8)),
            "the releaser gives it back"
        );
        assert!(lock(&gates.departed).is_empty());
        // One that took the lock by its own look keeps it.
        let (mut turn, _) = offered(&gates);
        let claim = gates.claim("k").expect("offered");
        turn.finish(true);
        assert!(!gates.deliver("k", &claim, Some(9)));
        // Nothing granted: nothing to give back.
        drop(turn);
        let (mut turn, _) = offered(&gates);
        let claim = gates.claim("k").expect("offered");
        turn.finish(false);
        assert!(!gates.deliver("k", &claim, None));
    }

    #[test]
    fn the_next_waiter_is_offered_as_successor_the_moment_it_gets_the_turn() {
        let gates = Gates::default();
        let waiter = waiter();
        let (mut first, mut next) = behind_a_turn(&gates, &waiter);
        first.finish(true);
        drop(first);
        // A release made before the next waiter even ran hands it the lock.
        let claim = gates.claim("k").expect("offered at once");
        assert!(!gates.deliver("k", &claim, Some(4)));
        // Its deadline passed meanwhile: it still takes the turn, whose
        // grant only its driver can take up or give back.
        let now = Instant::now();
        let Next::Turn(turn) = next.next(now, Some(now)) else {
            panic!("a waiter given the turn gave up without it");
        };
        assert!(turn.held_here(), "the previous holder ended with the lock");
        assert!(waiter.take_signal(), "the grant's wake-up is kept for it");
        assert_eq!(waiter.take_grant(), Some(4));
    }

    #[test]
    fn a_waiter_past_its_deadline_is_passed_over_for_the_turn() {
        let gates = Gates::default();
        let first = gates
            .turn_blocking("k", seat(), &waiter(), None)
            .expect("free");
        let past = Instant::now();
        let (late, live) = (waiter(), waiter());
        let Entry::Queued(mut gone) = gates.enter("k", seat(), &late, Some(past)) else {
            panic!("the key is taken");
        };
        let live_seat = seat();
        let Entry::Queued(mut next) = gates.enter("k", live_seat, &live, None) else {
            panic!("the key is taken");
        };
        drop(first);
        assert!(!late.take_signal(), "the late waiter is not woken for it");
        assert!(live.take_signal(), "the next live waiter is");
        let claim = gates.claim("k").expect("the live waiter is offered");
        assert_eq!(claim.token, live_seat.token);
        assert!(matches!(
            gone.next(Instant::now(), Some(past)),
            Next::GaveUp
        ));
        assert!(matches!(next.next(Instant::now(), None), Next::Turn(_)));
    }

    #[test]
    fn a_waiter_gives_up_only_while_the_turn_is_not_its() {
        let gates = Gates::default();
        let (first, mut next) = behind_a_turn(&gates, &waiter());
        let now = Instant::now();
        assert!(matches!(next.next(now, Some(now)), Next::GaveUp));
        assert_eq!(gates.queued("k"), 0, "it left the queue as it gave up");
        drop(next);
        drop(first);
        assert!(lock(&gates.lines).is_empty(), "nobody was given the turn");
    }

    #[test]
    fn a_waiter_leaving_as_its_turn_and_a_grant_come_has_the_lock_given_back() {
        let gates = Gates::default();
        let (mut first, next) = behind_a_turn(&gates, &waiter());
        first.finish(true);
        drop(first);
        let claim = gates.claim("k").expect("offered with its turn");
        drop(next); // its deadline passed before it ran
        assert!(
            gates.deliver("k", &claim, Some(5)),
            "the releaser gives back the lock it granted"
        );
        assert!(lock(&gates.lines).is_empty());
    }
}
