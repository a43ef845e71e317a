//! A quorum of independent Redis nodes as one lock store (Redlock): a lock
//! is held when a majority of the nodes granted it within its validity.
//!
//! Every operation goes to all nodes at once and returns as soon as the
//! answers decide it (a majority agreed, or for an acquisition, contention
//! ruled a majority out), so a dead or paused node costs nothing while a
//! majority answers, and at most the per-node timeout (the alias's command
//! timeout) when it does not. The nodes that have not answered by then go on
//! in the background: a key that a late node grants to a failed acquisition,
//! or to a lock released in the meantime, is given back as soon as that node
//! answers. Fencing tokens take two steps: each granting node counts up its
//! own counter, and the highest count is then written back to a majority, so
//! that any later majority (which shares a node with this one) counts past
//! it: tokens strictly increase as long as nodes keep their data.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::waiting::Line;
use super::{
    AcquireArgs, Inner, RedisBackend, extend_invocation, handover_invocation, io, scripts,
};
use crate::admin::{Forced, Page};
use crate::backend::{
    Acquired, Attempt, Backend, BackendError, BackendErrorKind, BoxFuture, Busy, Held, Namespace,
    Request, Token,
};
use crate::watchdog::drift;

/// Several independent Redis servers acting as one lock store. Build it with
/// [`AliasConfig::quorum`](crate::registry::AliasConfig::quorum) or a
/// `redis+quorum://host1,host2,host3/db` URL.
///
/// With real nodes (needs three Redis servers):
///
/// ```no_run
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::Lock;
///
/// let cfg = AliasConfig::from_url("redis+quorum://10.0.0.1,10.0.0.2,10.0.0.3/0?timeout_ms=200").unwrap();
/// registry::add("ha", cfg).unwrap();
/// // Held once a majority (2 of 3) granted it; one node may be down.
/// let guard = Lock::new("payout-17").alias("ha").acquire().unwrap();
/// assert!(guard.fencing_token().is_some());
/// ```
///
/// A quorum needs at least three nodes:
///
/// ```
/// use lock_runtime::registry::{self, AliasConfig};
///
/// let two = AliasConfig::quorum(["redis://10.0.0.1", "redis://10.0.0.2"]);
/// let err = registry::add("doc-quorum-two", two).unwrap_err();
/// assert!(err.to_string().contains("at least 3"), "{err}");
/// ```
pub struct QuorumBackend {
    nodes: Arc<[Node]>,
    quorum: usize,
    node_timeout: Duration,
    claims: Arc<Claims>,
}

struct Node {
    url: String,
    inner: Arc<Inner>,
}

impl fmt::Debug for QuorumBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuorumBackend")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|n| n.url.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("quorum", &self.quorum)
            .finish_non_exhaustive()
    }
}

/// Why a quorum operation failed: the outcome on every node. It is the
/// source of the [`BackendError`] (kind [`BackendErrorKind::Quorum`]), so it
/// can be read back with `error.inner().downcast_ref::<QuorumError>()`.
///
/// Three nodes, none of them up (nothing listens on ports 1 to 3):
///
/// ```
/// use lock_runtime::backend::redis::QuorumError;
/// use lock_runtime::backend::BackendErrorKind;
/// use lock_runtime::registry::{self, AliasConfig};
/// use lock_runtime::{Lock, LockError};
///
/// let url = "redis+quorum://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout_ms=500&timeout_ms=500";
/// registry::add("doc-quorum-error", AliasConfig::from_url(url).unwrap()).unwrap();
/// let Err(LockError::Backend { source, .. }) = Lock::new("k").alias("doc-quorum-error").acquire() else {
///     panic!("no node is up");
/// };
/// assert_eq!(source.kind(), BackendErrorKind::Quorum);
/// let quorum: &QuorumError = source.inner().downcast_ref().unwrap();
/// assert_eq!((quorum.needed, quorum.nodes.len()), (2, 3));
/// assert!(quorum.to_string().starts_with("quorum lost: 0 of 3 nodes agreed, 2 needed"));
/// assert_eq!(quorum.lease_ran_out, None, "the nodes are down, the lease is not the cause");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QuorumError {
    /// How many nodes had to agree.
    pub needed: usize,
    /// What each node answered, in configuration order.
    pub nodes: Vec<NodeOutcome>,
    /// How long the operation ran, from before its first request.
    pub took: Duration,
    /// The lease an acquisition asked for, when it failed because that
    /// lease ran out: by the time enough nodes had granted it (or while it
    /// still waited for them), the lease less a clock-drift allowance was
    /// used up, so the lock could not count as held. The nodes answer more
    /// slowly than the lease allows: raise `lease_ms` (or the lock's
    /// `expire`) or lower `timeout_ms`. `None` for every other failure.
    pub lease_ran_out: Option<Duration>,
}

/// One node's answer in a quorum operation.
///
/// ```
/// # use lock_runtime::backend::redis::QuorumError;
/// # use lock_runtime::registry::{self, AliasConfig};
/// # use lock_runtime::{Lock, LockError};
/// # let url = "redis+quorum://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout_ms=500&timeout_ms=500";
/// # registry::add("doc-node-outcome", AliasConfig::from_url(url).unwrap()).unwrap();
/// # let Err(LockError::Backend { source, .. }) = Lock::new("k").alias("doc-node-outcome").acquire() else {
/// #     panic!("no node is up");
/// # };
/// // `quorum` read from a failed lock on three nodes that are all down:
/// let quorum: &QuorumError = source.inner().downcast_ref().unwrap();
/// let names: Vec<&str> = quorum.nodes.iter().map(|n| n.node.as_str()).collect();
/// assert_eq!(names, ["redis://127.0.0.1:1", "redis://127.0.0.1:2", "redis://127.0.0.1:3"]);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeOutcome {
    /// The node's URL, password hidden.
    pub node: String,
    /// What it answered.
    pub state: NodeState,
}

/// What one node answered.
///
/// ```
/// # use lock_runtime::backend::redis::QuorumError;
/// # use lock_runtime::registry::{self, AliasConfig};
/// # use lock_runtime::{Lock, LockError};
/// use lock_runtime::backend::redis::NodeState;
/// # let url = "redis+quorum://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout_ms=500&timeout_ms=500";
/// # registry::add("doc-node-state", AliasConfig::from_url(url).unwrap()).unwrap();
/// # let Err(LockError::Backend { source, .. }) = Lock::new("k").alias("doc-node-state").acquire() else {
/// #     panic!("no node is up");
/// # };
/// // `quorum` read from a failed lock on three nodes that are all down:
/// let quorum: &QuorumError = source.inner().downcast_ref().unwrap();
/// for outcome in &quorum.nodes {
///     match &outcome.state {
///         NodeState::Unreachable(e) => assert!(e.is_connection() || e.is_timeout()),
///         other => panic!("{} is down, yet answered {other:?}", outcome.node),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeState {
    /// It granted (or released, or extended) the lock.
    Granted,
    /// Another owner holds the lock there (or, for release and extend, the
    /// lock is not ours there).
    HeldByAnother,
    /// It did not answer in time, or failed.
    Unreachable(BackendError),
}

impl QuorumError {
    /// How many nodes granted.
    ///
    /// ```
    /// # use lock_runtime::backend::redis::QuorumError;
    /// # use lock_runtime::registry::{self, AliasConfig};
    /// # use lock_runtime::{Lock, LockError};
    /// # let url = "redis+quorum://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout_ms=500&timeout_ms=500";
    /// # registry::add("doc-quorum-granted", AliasConfig::from_url(url).unwrap()).unwrap();
    /// # let Err(LockError::Backend { source, .. }) = Lock::new("k").alias("doc-quorum-granted").acquire() else {
    /// #     panic!("no node is up");
    /// # };
    /// // `quorum` read from a failed lock on three nodes that are all down:
    /// let quorum: &QuorumError = source.inner().downcast_ref().unwrap();
    /// assert!(quorum.granted() < quorum.needed);
    /// assert_eq!(quorum.granted(), 0);
    /// ```
    pub fn granted(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::Granted))
            .count()
    }

    /// The nodes that did not answer.
    ///
    /// ```
    /// # use lock_runtime::backend::redis::QuorumError;
    /// # use lock_runtime::registry::{self, AliasConfig};
    /// # use lock_runtime::{Lock, LockError};
    /// # let url = "redis+quorum://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout_ms=500&timeout_ms=500";
    /// # registry::add("doc-quorum-unreachable", AliasConfig::from_url(url).unwrap()).unwrap();
    /// # let Err(LockError::Backend { source, .. }) = Lock::new("k").alias("doc-quorum-unreachable").acquire() else {
    /// #     panic!("no node is up");
    /// # };
    /// // `quorum` read from a failed lock on three nodes that are all down:
    /// let quorum: &QuorumError = source.inner().downcast_ref().unwrap();
    /// let down: Vec<&str> = quorum.unreachable().map(|n| n.node.as_str()).collect();
    /// assert_eq!(down.len(), 3, "page whoever runs {down:?}");
    /// ```
    pub fn unreachable(&self) -> impl Iterator<Item = &NodeOutcome> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::Unreachable(_)))
    }
}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (granted, n, needed) = (self.granted(), self.nodes.len(), self.needed);
        let took = self.took.as_millis();
        match self.lease_ran_out.map(|l| l.as_millis()) {
            Some(lease) if granted >= needed => write!(
                f,
                "granted by {granted} of {n} nodes but took {took} ms, longer than the {lease} ms lease allows: raise lease_ms or lower timeout_ms ("
            )?,
            Some(lease) => write!(
                f,
                "only {granted} of {n} nodes granted ({needed} needed) when the {lease} ms lease ran out after {took} ms: raise lease_ms or lower timeout_ms ("
            )?,
            None => write!(
                f,
                "quorum lost: {granted} of {n} nodes agreed, {needed} needed ("
            )?,
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &n.state {
                NodeState::Granted => write!(f, "{}: ok", n.node)?,
                NodeState::HeldByAnother => write!(f, "{}: held by another owner", n.node)?,
                NodeState::Unreachable(e) => write!(f, "{}: unreachable ({e})", n.node)?,
            }
        }
        f.write_str(")")
    }
}

impl std::error::Error for QuorumError {}

impl QuorumBackend {
    /// One node per URL; a majority of them must agree on every lock.
    pub(crate) fn open(
        urls: &[String],
        prefix: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
        tls_ca: Option<&[u8]>,
    ) -> Result<Self, String> {
        if urls.len() < 3 {
            return Err(format!(
                "a quorum needs at least 3 independent nodes, {} given; use a plain redis:// alias for one server",
                urls.len()
            ));
        }
        let nodes = urls
            .iter()
            .map(|url| {
                RedisBackend::open(url, prefix, connect_timeout, command_timeout, tls_ca).map(|b| {
                    Node {
                        url: b.inner.url.clone(),
                        inner: b.inner,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            quorum: nodes.len() / 2 + 1,
            nodes: nodes.into(),
            node_timeout: command_timeout,
            claims: Arc::default(),
        })
    }

    /// Starts `op` on every node at once, each bounded by the node timeout,
    /// on tasks of their own: a call nobody waits for any more still runs to
    /// its end. Answers arrive as `(node index, answer)`.
    fn spawn_each<T, F, Fut>(&self, op: F) -> Answers<T>
    where
        F: Fn(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, BackendError>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        for (i, n) in self.nodes.iter().enumerate() {
            let call = op(Arc::clone(&n.inner));
            let (tx, timeout) = (tx.clone(), self.node_timeout);
            tokio::spawn(async move {
                let answer = tokio::time::timeout(timeout, call)
                    .await
                    .unwrap_or_else(|_| Err(no_reply(timeout)));
                let _ = tx.send((i, answer));
            });
        }
        rx
    }

    /// How many nodes must refuse before a majority can no longer agree.
    fn refusals_that_decide(&self) -> usize {
        self.nodes.len() - self.quorum + 1
    }

    /// `window`: how long the round waited for the nodes that gave no answer.
    fn outcomes<T>(
        &self,
        results: &[Option<Result<T, BackendError>>],
        ok: impl Fn(&T) -> bool,
        window: Duration,
        took: Duration,
        lease_ran_out: Option<Duration>,
    ) -> QuorumError {
        QuorumError {
            needed: self.quorum,
            took,
            lease_ran_out,
            nodes: self
                .nodes
                .iter()
                .zip(results)
                .map(|(n, r)| NodeOutcome {
                    node: n.url.clone(),
                    state: match r {
                        Some(Ok(v)) if ok(v) => NodeState::Granted,
                        Some(Ok(_)) => NodeState::HeldByAnother,
                        Some(Err(e)) => NodeState::Unreachable(e.clone()),
                        None => NodeState::Unreachable(no_reply(window)),
                    },
                })
                .collect(),
        }
    }

    /// One Redlock attempt. The round ends as soon as the answers decide it
    /// (a majority granted, or enough nodes refused that none can), so a
    /// slow or paused node costs nothing while a majority answers quickly;
    /// each node's task stays behind to give back what a late answer took.
    async fn try_acquire_async_inner(
        self,
        args: Arc<AcquireArgs>,
        lease: Duration,
    ) -> Result<Attempt, BackendError> {
        let n = self.nodes.len();
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        // Dropped unsent, it tells every node task the attempt failed.
        let (verdict, verdict_rx) = watch::channel(Verdict::Pending);
        // A node's task waits this long for its own answer, well past the
        // round: a request that reaches a paused node runs when the node
        // wakes, and only its answer says whether there is a key to give back.
        let patience = lease.min(MAX_PATIENCE).saturating_add(self.node_timeout);
        let sent = Instant::now();
        for (i, node) in self.nodes.iter().enumerate() {
            tokio::spawn(acquire_on(
                Arc::clone(&node.inner),
                Arc::clone(&args),
                patience,
                (i, answers_tx.clone()),
                verdict_rx.clone(),
            ));
        }
        drop((answers_tx, verdict_rx));

        // Past the validity no answer can make the lock ours.
        let validity = |elapsed: Duration| lease.saturating_sub(elapsed + drift(lease));
        let window = self.node_timeout.min(validity(Duration::ZERO));
        let refusals = self.refusals_that_decide();
        // Refusals decide at once only with contention in them: then the
        // answer is Busy, and waiting for a paused node would only slow the
        // next look. Failures alone make an error, which waits for every
        // node (within the window) so that it names what each one did.
        let (results, cut_short) = gather(&mut answers, n, sent, window, |r| {
            let granted = r.iter().filter(|a| granted(a)).count();
            let refused = r.iter().flatten().count() - granted;
            let busy = r.iter().any(|a| matches!(a, Some(Ok(Attempt::Busy(_)))));
            granted >= self.quorum || (busy && refused >= refusals)
        })
        .await;
        let fences: Vec<u64> = results
            .iter()
            .filter_map(|r| match r {
                Some(Ok(Attempt::Acquired(a))) => Some(a.fencing.unwrap_or(0)),
                _ => None,
            })
            .collect();
        let ran_out = |results: &[Option<Result<Attempt, BackendError>>]| {
            Err(BackendError::new(
                BackendErrorKind::Quorum,
                self.outcomes(results, is_acquired, window, sent.elapsed(), Some(lease)),
            ))
        };
        if fences.len() >= self.quorum {
            if validity(sent.elapsed()).is_zero() {
                return ran_out(&results);
            }
            // Tokens increase across holders because any two majorities
            // share a node: this fence is written back to a majority before
            // the lock is handed out, so the requests of a later holder (sent
            // after this acquisition returned) count up, on at least one of
            // its granting nodes, a counter already raised to this fence, and
            // its token, the highest count of its majority, is higher. The
            // argument needs only that the write-back reached a majority, not
            // which nodes granted or how many answered, so ending both rounds
            // at the first majority keeps it; a straggler's count comes too
            // late for this token and only raises its own counter, which can
            // only push later tokens higher.
            let fence = fences.iter().copied().max().unwrap_or(0);
            self.raise_fence(fence, validity(sent.elapsed()), lease)
                .await?;
            if validity(sent.elapsed()).is_zero() {
                return ran_out(&results);
            }
            let counted: Vec<bool> = results.iter().map(Option::is_some).collect();
            let claim = counted
                .contains(&false)
                .then(|| Claim::register(&self.claims, args.token));
            verdict.send_replace(Verdict::Held { counted, claim });
            return Ok(Attempt::Acquired(Acquired::new(Some(fence)).sent_at(sent)));
        }
        // No majority: `verdict` goes unsent, and every node's task gives
        // back whatever its request took, also one answering late.
        drop(verdict);
        let busy = results
            .iter()
            .filter(|r| matches!(r, Some(Ok(Attempt::Busy(_)))))
            .count();
        // The soonest a busy node said its holder's lease ends: a node that
        // said nothing does not mean "now" (that had waiters look again
        // every millisecond); when none said, waiters poll.
        let retry_in = results
            .iter()
            .filter_map(|r| match r {
                Some(Ok(Attempt::Busy(b))) => b.retry_in,
                _ => None,
            })
            .min();
        let failed = results.iter().filter(|r| !matches!(r, Some(Ok(_)))).count();
        if busy > 0 || failed == 0 {
            // Contention (or a split vote): another owner holds it somewhere.
            return Ok(Attempt::Busy(Busy::new(retry_in)));
        }
        let lease_ran_out = (cut_short && window < self.node_timeout).then_some(lease);
        Err(BackendError::new(
            BackendErrorKind::Quorum,
            self.outcomes(&results, is_acquired, window, sent.elapsed(), lease_ran_out),
        ))
    }

    /// Writes `fence` back to the nodes' counters, done once a majority took
    /// it; the others catch up in the background. `budget` is the validity
    /// left: waiting longer could not make the lock ours.
    async fn raise_fence(
        &self,
        fence: u64,
        budget: Duration,
        lease: Duration,
    ) -> Result<(), BackendError> {
        let started = Instant::now();
        let mut answers = self.spawn_each(|inner| async move {
            let mut call = scripts::Call::new(&scripts::RAISE_FENCE, &[&inner.fence_key]);
            call.arg(fence);
            inner.invoke::<i64>(call).await
        });
        let window = self.node_timeout.min(budget);
        let (results, cut_short) = gather(&mut answers, self.nodes.len(), started, window, |r| {
            r.iter().filter(|a| matches!(a, Some(Ok(_)))).count() >= self.quorum
        })
        .await;
        let ok = results.iter().filter(|a| matches!(a, Some(Ok(_)))).count();
        if ok >= self.quorum {
            return Ok(());
        }
        let lease_ran_out = (cut_short && window < self.node_timeout).then_some(lease);
        Err(BackendError::new(
            BackendErrorKind::Quorum,
            self.outcomes(&results, |_| true, window, started.elapsed(), lease_ran_out),
        ))
    }

    /// Release, extend or check on every node; true with a majority, false
    /// when a majority says the lock is not ours, an error when too few
    /// answered. Returns as soon as the answers so far decide it.
    async fn on_all<F, Fut>(&self, op: F) -> Result<bool, BackendError>
    where
        F: Fn(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<bool, BackendError>> + Send + 'static,
    {
        let started = Instant::now();
        let n = self.nodes.len();
        let mut answers = self.spawn_each(op);
        let count = |r: &[Option<Result<bool, BackendError>>], want: bool| {
            r.iter()
                .filter(|a| matches!(a, Some(Ok(v)) if *v == want))
                .count()
        };
        let refusals = self.refusals_that_decide();
        let (results, _) = gather(&mut answers, n, started, self.node_timeout, |r| {
            count(r, true) >= self.quorum || count(r, false) >= refusals
        })
        .await;
        let (yes, no) = (count(&results, true), count(&results, false));
        if yes >= self.quorum {
            Ok(true)
        } else if no + yes >= self.quorum || no >= refusals {
            Ok(false)
        } else {
            Err(BackendError::new(
                BackendErrorKind::Quorum,
                self.outcomes(&results, |v| *v, self.node_timeout, started.elapsed(), None),
            ))
        }
    }

    fn shallow(&self) -> Self {
        Self {
            nodes: Arc::clone(&self.nodes),
            quorum: self.quorum,
            node_timeout: self.node_timeout,
            claims: Arc::clone(&self.claims),
        }
    }
}

/// The longest a node's task waits for the answer to an acquisition
/// request, beyond the node timeout: a node paused longer than this that
/// then grants leaves a key that frees itself when its lease ends.
const MAX_PATIENCE: Duration = Duration::from_secs(600);

/// One node's answer in a round, with the node's index.
type Answer<T> = (usize, Result<T, BackendError>);

/// The answers of one round, as they arrive.
type Answers<T> = mpsc::UnboundedReceiver<Answer<T>>;

fn no_reply(within: Duration) -> BackendError {
    BackendError::new(
        BackendErrorKind::Timeout,
        format!("no reply within {} ms", within.as_millis()),
    )
}

fn is_acquired(a: &Attempt) -> bool {
    matches!(a, Attempt::Acquired(_))
}

fn granted(a: &Option<Result<Attempt, BackendError>>) -> bool {
    matches!(a, Some(Ok(Attempt::Acquired(_))))
}

/// Collects a round's answers, in node order (`None`: none yet), until
/// `settled` says those so far decide it, every node answered, or `window`
/// after `since` (then the flag is true).
async fn gather<T>(
    answers: &mut Answers<T>,
    n: usize,
    since: Instant,
    window: Duration,
    settled: impl Fn(&[Option<Result<T, BackendError>>]) -> bool,
) -> (Vec<Option<Result<T, BackendError>>>, bool) {
    let mut results: Vec<Option<Result<T, BackendError>>> = (0..n).map(|_| None).collect();
    let mut missing = n;
    while missing > 0 && !settled(&results) {
        let left = window.saturating_sub(since.elapsed());
        match tokio::time::timeout(left, answers.recv()).await {
            Ok(Some((i, answer))) => {
                if let Some(slot) = results.get_mut(i).filter(|s| s.is_none()) {
                    *slot = Some(answer);
                    missing -= 1;
                }
            }
            Ok(None) => break,
            Err(_) => return (results, true),
        }
    }
    (results, false)
}

/// What an acquisition decided, for the node tasks that outlive its round.
#[derive(Clone)]
enum Verdict {
    Pending,
    /// The lock is ours. `counted`: the nodes whose answers the round saw
    /// (the holder's release covers their keys); the others share `claim`.
    Held {
        counted: Vec<bool>,
        claim: Option<Arc<Claim>>,
    },
}

/// A held lock that a node may still grant after the round: if the holder
/// has released it by then, that node's task gives the late key back.
/// Found by owner token, which is unique to one acquisition.
struct Claim {
    token: Token,
    released: AtomicBool,
    claims: Arc<Claims>,
}

/// The claims of held locks with late nodes; each leaves when the last of
/// its node tasks ends.
#[derive(Default)]
struct Claims(Mutex<HashMap<Token, Weak<Claim>>>);

impl Claims {
    fn lock(&self) -> MutexGuard<'_, HashMap<Token, Weak<Claim>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the lock of `token` released, so that a node granting it from
    /// now on gives it back. Called before the release is sent: a node task
    /// that still saw it held had its answer, hence its key, before that
    /// release went out, so the release covers the key.
    fn release(&self, token: Token) {
        if let Some(claim) = self.lock().get(&token).and_then(Weak::upgrade) {
            claim.released.store(true, Ordering::SeqCst);
        }
    }
}

impl Claim {
    fn register(claims: &Arc<Claims>, token: Token) -> Arc<Claim> {
        let claim = Arc::new(Claim {
            token,
            released: AtomicBool::new(false),
            claims: Arc::clone(claims),
        });
        claims.lock().insert(token, Arc::downgrade(&claim));
        claim
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = self.claims.lock();
        if claims
            .get(&self.token)
            .is_some_and(|w| w.strong_count() == 0)
        {
            claims.remove(&self.token);
        }
    }
}

/// One node's part in an acquisition: sends the request, reports the
/// answer to the round, then gives back a key the request took if the
/// attempt failed, or if the lock was released before the answer came.
async fn acquire_on(
    inner: Arc<Inner>,
    args: Arc<AcquireArgs>,
    patience: Duration,
    (i, answers): (usize, mpsc::UnboundedSender<Answer<Attempt>>),
    mut verdict: watch::Receiver<Verdict>,
) {
    let mut conn = match inner.conn.get().await {
        Ok(c) => c,
        Err(e) => {
            // Nothing was sent, so nothing can need giving back.
            let _ = answers.send((i, Err(super::backend_error(e))));
            return;
        }
    };
    conn.set_response_timeout(patience);
    let answer = inner
        .try_acquire_on(&mut conn, &args, Line::Out, true)
        .await
        .map(|t| t.attempt);
    // An error after sending (a dropped connection, say) leaves it unknown
    // whether the key was set; only running out of patience is left alone,
    // since a release sent on another connection could overtake the request.
    let took = match &answer {
        Ok(Attempt::Acquired(_)) => Some(true),
        Ok(Attempt::Busy(_)) => None,
        Err(e) if e.is_timeout() => {
            tracing::warn!(key = %args.key, node = %inner.url, "a node did not answer an acquisition; if it grants it later, that key frees itself when its lease ends");
            None
        }
        Err(_) => Some(false),
    };
    let _ = answers.send((i, answer));
    drop(answers);
    let Some(surely) = took else { return };
    let give_back = match verdict.wait_for(|v| !matches!(v, Verdict::Pending)).await {
        Ok(v) => match &*v {
            // A counted node is left to the holder's own release, which
            // must find the key there to confirm it.
            Verdict::Held {
                counted,
                claim: Some(claim),
            } if !counted.get(i).copied().unwrap_or(true) => claim.released.load(Ordering::SeqCst),
            _ => false,
        },
        Err(_) => true,
    };
    if !give_back {
        return;
    }
    let released = if surely {
        // On the request's own connection, so it runs after the request; the
        // key cannot have gone and come back for another attempt with this
        // token in between, as SET NX only sets a missing key.
        let release = handover_invocation(
            &scripts::RELEASE,
            &inner.fence_key,
            &args.key,
            args.token,
            None,
        );
        inner.invoke_on::<i64>(&mut conn, release).await.map(drop)
    } else {
        inner.release(&args.key, args.token).await.map(drop)
    };
    if let Err(e) = released {
        tracing::error!(key = %args.key, node = %inner.url, error = %e, "could not give back a key a failed or released acquisition set; it frees itself when its lease ends");
    }
}

/// One node's view of some keys: each key's holder and its token; `None`
/// for a node that failed.
type View = Option<Vec<Option<(Held, String)>>>;

/// The admin API on a quorum: what a majority of the nodes says, node by
/// node on the callers' thread (each call bounded by the node timeout); a
/// node that fails counts as one that does not hold the lock.
impl QuorumBackend {
    /// Each node's view of `keys` (`None` for a node that failed).
    fn views(&self, keys: &[String]) -> Vec<View> {
        self.nodes
            .iter()
            .map(|n| n.inner.inspect_owned(keys.to_vec()).ok())
            .collect()
    }

    /// The holder a majority of `views` agree on for the `i`th key, and
    /// the first node that holds it so: the owner from the first node that
    /// recorded one, the shortest lease left.
    fn agreed(&self, views: &[View], i: usize) -> Option<(Held, usize)> {
        let mut by_token: HashMap<&str, Vec<(usize, &Held)>> = HashMap::new();
        for (node, view) in views.iter().enumerate() {
            if let Some(Some((held, token))) = view.as_ref().and_then(|v| v.get(i)) {
                by_token.entry(token).or_default().push((node, held));
            }
        }
        let (_, holders) = by_token.into_iter().find(|(_, h)| h.len() >= self.quorum)?;
        let (first, held) = holders[0];
        let mut held = held.clone();
        held.lease_left = holders.iter().filter_map(|(_, h)| h.lease_left).min();
        held.owner = holders.iter().find_map(|(_, h)| {
            h.owner
                .clone()
                .filter(|o| o.label.is_some() || o.function.is_some())
        });
        if held.owner.is_none() {
            held.owner = holders.iter().find_map(|(_, h)| h.owner.clone());
        }
        Some((held, first))
    }

    /// A page: the nodes' keys in turn (cursor `<node>/<that node's
    /// cursor>`), each listed once, by the first node that holds it for the
    /// majority's holder, when a majority agrees.
    fn page(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, BackendError> {
        let bad =
            |c: &str| BackendError::new(BackendErrorKind::Other, format!("not a cursor: `{c}`"));
        let (mut node, mut at) = match cursor {
            None => (0, None),
            Some(c) => {
                let (n, rest) = c.split_once('/').ok_or_else(|| bad(c))?;
                let n: usize = n.parse().map_err(|_| bad(c))?;
                (n, Some(rest.to_owned()).filter(|r| !r.is_empty()))
            }
        };
        let limit = limit.max(1);
        let mut held = Vec::new();
        while node < self.nodes.len() {
            let scanned = self.nodes[node]
                .inner
                .scan(ns, prefix, at.as_deref(), limit);
            // A node that is down lists nothing; the keys a majority holds
            // are on other nodes too.
            let (keys, next) = scanned.unwrap_or_default();
            let views = self.views(&keys);
            for i in 0..keys.len() {
                if let Some((h, first)) = self.agreed(&views, i)
                    && first == node
                {
                    held.push(h);
                }
            }
            match next {
                Some(n) => return Ok(Page::new(held, Some(format!("{node}/{n}")))),
                None => {
                    node += 1;
                    at = None;
                    if !held.is_empty() && node < self.nodes.len() {
                        return Ok(Page::new(held, Some(format!("{node}/"))));
                    }
                }
            }
        }
        Ok(Page::new(held, None))
    }
}

impl Backend for QuorumBackend {
    fn list(
        &self,
        ns: &Namespace,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Option<Result<Page, BackendError>> {
        Some(self.page(ns, prefix, cursor, limit))
    }

    fn show(&self, key: &str) -> Option<Result<Option<Held>, BackendError>> {
        let keys = [key.to_owned()];
        let views = self.views(&keys);
        if views.iter().filter(|v| v.is_some()).count() < self.quorum {
            return Some(Err(BackendError::new(
                BackendErrorKind::Quorum,
                "fewer than a majority of the nodes answered",
            )));
        }
        Some(Ok(self.agreed(&views, 0).map(|(h, _)| h)))
    }

    /// On every node; the holder removed is the one a majority recorded.
    fn force_release(&self, ns: &Namespace, entry: Forced) -> Option<Result<Forced, BackendError>> {
        let _ = ns;
        let done: Vec<Forced> = self
            .nodes
            .iter()
            .filter_map(|n| n.inner.force(&entry).ok())
            .collect();
        if done.len() < self.quorum {
            return Some(Err(BackendError::new(
                BackendErrorKind::Quorum,
                format!(
                    "released on {} of {} nodes, fewer than a majority; the others free it when its lease ends",
                    done.len(),
                    self.nodes.len()
                ),
            )));
        }
        let removed: Vec<&Held> = done.iter().filter_map(|f| f.removed.as_ref()).collect();
        let mut entry = entry;
        if removed.len() >= self.quorum {
            let mut held = removed[0].clone();
            held.owner = removed.iter().find_map(|h| h.owner.clone());
            entry.removed = Some(held);
        }
        Some(Ok(entry))
    }

    /// The nodes' logs merged: each forced release once (by key, time and
    /// reason), newest first.
    fn audit_log(&self, ns: &Namespace, limit: usize) -> Option<Result<Vec<Forced>, BackendError>> {
        let _ = ns;
        let logs: Vec<Vec<Forced>> = self
            .nodes
            .iter()
            .filter_map(|n| n.inner.audit(limit).ok())
            .collect();
        if logs.is_empty() {
            return Some(Err(BackendError::new(
                BackendErrorKind::Quorum,
                "no node answered",
            )));
        }
        let mut all: Vec<Forced> = Vec::new();
        for f in logs.into_iter().flatten() {
            let same = |g: &Forced| g.key == f.key && g.at == f.at && g.reason == f.reason;
            if !all.iter().any(same) {
                all.push(f);
            }
        }
        all.sort_by_key(|f| std::cmp::Reverse(f.at));
        all.truncate(limit);
        Some(Ok(all))
    }

    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        io::block_on(self.try_acquire_future(req))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let this = self.shallow();
        let key = key.to_owned();
        io::block_on(async move { this.release_all(key, token).await })
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let this = self.shallow();
        let key = key.to_owned();
        io::block_on(async move { this.extend_all(key, token, lease).await })
    }

    fn check(&self, key: &str, token: Token) -> Option<Result<bool, BackendError>> {
        let this = self.shallow();
        let key = key.to_owned();
        Some(io::block_on(async move {
            let owner = token.encode().as_str().to_owned();
            this.on_all(|inner| {
                let (key, owner) = (key.clone(), owner.clone());
                async move {
                    let mut conn = inner.conn.get().await.map_err(super::backend_error)?;
                    let held: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map_err(super::backend_error)?;
                    Ok(held.is_some_and(|v| v.starts_with(owner.as_bytes())))
                }
            })
            .await
        }))
    }

    fn try_acquire_async<'a>(
        &'a self,
        req: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<Attempt, BackendError>> {
        // A cancelled attempt stops: its node tasks then give back what
        // their requests take; the runtime releases what it already won.
        Box::pin(io::run_cancellable(self.try_acquire_future(req)))
    }

    fn release_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let this = self.shallow();
        let key = key.to_owned();
        Box::pin(io::run(async move { this.release_all(key, token).await }))
    }

    fn extend_async<'a>(
        &'a self,
        key: &'a str,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let this = self.shallow();
        let key = key.to_owned();
        Box::pin(io::run(
            async move { this.extend_all(key, token, lease).await },
        ))
    }

    fn release_detached(&self, key: &str, token: Token) {
        let this = self.shallow();
        let owned = key.to_owned();
        let spawned = io::spawn(async move {
            if let Err(e) = this.release_all(owned.clone(), token).await {
                tracing::error!(key = %owned, error = %e, "releasing a dropped lock guard failed; the lock frees itself when its lease ends");
            }
        });
        if let Err(e) = spawned {
            tracing::error!(key, error = %e, "could not hand a release to the Redis I/O thread");
        }
    }
}

impl QuorumBackend {
    fn try_acquire_future(
        &self,
        req: &Request<'_>,
    ) -> impl Future<Output = Result<Attempt, BackendError>> + Send + 'static {
        let args = Arc::new(AcquireArgs::new(
            req,
            false,
            // Numbered in the first node's record (the others' keep host
            // and pid): a holder's label shows while that node holds it.
            self.nodes[0].inner.books.meta_of(req),
        ));
        let lease = req.lease.unwrap_or(crate::lease::DEFAULT_LEASE);
        self.shallow().try_acquire_async_inner(args, lease)
    }

    async fn release_all(&self, key: String, token: Token) -> Result<bool, BackendError> {
        self.claims.release(token);
        self.on_all(|inner| {
            let key = key.clone();
            async move {
                inner
                    .invoke::<i64>(handover_invocation(
                        &scripts::RELEASE,
                        &inner.fence_key,
                        &key,
                        token,
                        None,
                    ))
                    .await
                    .map(|n| n == 1)
            }
        })
        .await
    }

    async fn extend_all(
        &self,
        key: String,
        token: Token,
        lease: Duration,
    ) -> Result<bool, BackendError> {
        self.on_all(|inner| {
            let key = key.clone();
            async move {
                inner
                    .invoke::<i64>(extend_invocation(&key, token, lease))
                    .await
                    .map(|n| n == 1)
            }
        })
        .await
    }
}

/// Turns a `redis+quorum://[user:password@]host1[:port],host2[:port],.../db`
/// URL into one `redis://` URL per node.
pub(crate) fn split_quorum_url(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("redis+quorum://")
        .ok_or_else(|| "a quorum URL starts with `redis+quorum://`".to_owned())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (creds, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{creds}{h}{path}"))
        .collect();
    if nodes.is_empty() {
        return Err("a quorum URL lists its nodes: `redis+quorum://host1,host2,host3`".into());
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_urls_expand_to_one_url_per_node() {
        assert_eq!(
            split_quorum_url("redis+quorum://:pw@a:1,b:2,c/3").unwrap(),
            ["redis://:pw@a:1/3", "redis://:pw@b:2/3", "redis://:pw@c/3"]
        );
        assert_eq!(
            split_quorum_url("redis+quorum://a,b,c").unwrap(),
            ["redis://a", "redis://b", "redis://c"]
        );
        assert!(split_quorum_url("redis+quorum:///0").is_err());
    }

    #[test]
    fn fewer_than_three_nodes_is_refused() {
        let t = Duration::from_secs(1);
        let err = QuorumBackend::open(
            &["redis://a".into(), "redis://b".into()],
            "lock:",
            t,
            t,
            None,
        )
        .unwrap_err();
        assert!(err.contains("at least 3"), "{err}");
    }

    #[test]
    fn the_error_names_every_node() {
        let e = QuorumError {
            needed: 2,
            took: Duration::from_millis(40),
            lease_ran_out: None,
            nodes: vec![
                NodeOutcome {
                    node: "redis://a".into(),
                    state: NodeState::Granted,
                },
                NodeOutcome {
                    node: "redis://b".into(),
                    state: NodeState::HeldByAnother,
                },
                NodeOutcome {
                    node: "redis://c".into(),
                    state: NodeState::Unreachable(BackendError::new(
                        BackendErrorKind::Connection,
                        "refused",
                    )),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "quorum lost: 1 of 3 nodes agreed, 2 needed (redis://a: ok; redis://b: held by another owner; redis://c: unreachable (connection failed: refused))"
        );
        assert_eq!(e.unreachable().count(), 1);
    }

    #[test]
    fn a_round_ends_once_its_answers_decide_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<bool, BackendError>)>();
            tx.send((2, Ok(true))).unwrap();
            tx.send((0, Ok(true))).unwrap();
            // Node 1 stays silent (its sender open), like a paused server.
            let majority = |r: &[Option<Result<bool, BackendError>>]| {
                r.iter().filter(|a| matches!(a, Some(Ok(true)))).count() >= 2
            };
            let started = Instant::now();
            let (results, cut_short) =
                gather(&mut rx, 3, started, Duration::from_secs(60), majority).await;
            assert!(started.elapsed() < Duration::from_secs(30));
            assert!(!cut_short);
            assert!(matches!(
                results[..],
                [Some(Ok(true)), None, Some(Ok(true))]
            ));

            let (results, cut_short) = gather(
                &mut rx,
                3,
                Instant::now(),
                Duration::from_millis(10),
                majority,
            )
            .await;
            assert!(cut_short, "nobody answers: the window ends it");
            assert!(results.iter().all(Option::is_none));
            drop(tx);
        });
    }

    #[test]
    fn a_lease_that_ran_out_is_named_as_the_cause() {
        let node = |url: &str, state| NodeOutcome {
            node: url.into(),
            state,
        };
        let late =
            || NodeState::Unreachable(BackendError::new(BackendErrorKind::Timeout, "no reply yet"));
        let mut e = QuorumError {
            needed: 2,
            nodes: vec![
                node("redis://a", NodeState::Granted),
                node("redis://b", NodeState::Granted),
                node("redis://c", late()),
            ],
            took: Duration::from_millis(310),
            lease_ran_out: Some(Duration::from_millis(250)),
        };
        assert!(
            e.to_string().starts_with(
                "granted by 2 of 3 nodes but took 310 ms, longer than the 250 ms lease allows: raise lease_ms or lower timeout_ms (redis://a: ok; "
            ),
            "{e}"
        );
        e.nodes[1].state = late();
        e.took = Duration::from_millis(247);
        assert!(
            e.to_string().starts_with(
                "only 1 of 3 nodes granted (2 needed) when the 250 ms lease ran out after 247 ms: raise lease_ms or lower timeout_ms ("
            ),
            "{e}"
        );
    }
}
