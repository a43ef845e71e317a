//! A quorum of independent Redis nodes as one lock store (Redlock): a lock
//! is held when a majority of the nodes granted it within its validity.
//!
//! Every operation goes to all nodes at once, each bounded by the per-node
//! timeout (the alias's command timeout), so a dead or paused node costs at
//! most that long. An acquisition without a majority is given back on every
//! node, also the ones that did not answer (they may have set the key).
//! Fencing tokens take two steps: each granting node counts up its own
//! counter, and the highest count is then written back to a majority, so
//! that any later majority (which shares a node with this one) counts past
//! it: tokens strictly increase as long as nodes keep their data.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use redis::Script;

use super::{
    AcquireArgs, Inner, RedisBackend, extend_invocation, handover_invocation, io, scripts,
};
use crate::backend::{
    Acquired, Attempt, Backend, BackendError, BackendErrorKind, BoxFuture, Busy, Request, Token,
};
use crate::watchdog::drift;

/// `KEYS[1]` fence counter; `ARGV[1]` a fencing token. Raises the counter to
/// the token if it is lower.
static RAISE_FENCE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#,
    )
});

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
        })
    }

    /// Runs `op` on every node at once, each bounded by the node timeout.
    async fn each<T, F, Fut>(
        nodes: &[Node],
        timeout: Duration,
        op: F,
    ) -> Vec<Result<T, BackendError>>
    where
        F: Fn(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, BackendError>> + Send + 'static,
        T: Send + 'static,
    {
        let calls: Vec<_> = nodes
            .iter()
            .map(|n| {
                let call = op(Arc::clone(&n.inner));
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, call).await {
                        Ok(r) => r,
                        Err(_) => Err(BackendError::new(
                            BackendErrorKind::Timeout,
                            "no reply within the node timeout",
                        )),
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(calls.len());
        for call in calls {
            out.push(call.await.unwrap_or_else(|e| {
                Err(BackendError::new(BackendErrorKind::Other, e.to_string()))
            }));
        }
        out
    }

    fn outcomes<T>(
        &self,
        results: &[Result<T, BackendError>],
        ok: impl Fn(&T) -> bool,
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
                        Ok(v) if ok(v) => NodeState::Granted,
                        Ok(_) => NodeState::HeldByAnother,
                        Err(e) => NodeState::Unreachable(e.clone()),
                    },
                })
                .collect(),
        }
    }

    async fn try_acquire_async_inner(
        nodes: Arc<[Node]>,
        quorum: usize,
        timeout: Duration,
        args: Arc<AcquireArgs>,
        lease: Duration,
    ) -> Result<Attempt, BackendError> {
        let this = Self {
            nodes,
            quorum,
            node_timeout: timeout,
        };
        let sent = Instant::now();
        let results = Self::each(&this.nodes, timeout, |inner| {
            let args = Arc::clone(&args);
            async move { inner.try_acquire(&args, false, true).await }
        })
        .await;
        let fences: Vec<u64> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Attempt::Acquired(a)) => Some(a.fencing.unwrap_or(0)),
                _ => None,
            })
            .collect();
        let took = sent.elapsed();
        let validity = lease.saturating_sub(took + drift(lease));
        let mut lease_ran_out = None;
        if fences.len() >= quorum {
            if validity.is_zero() {
                lease_ran_out = Some(lease);
            } else {
                let fence = fences.iter().copied().max().unwrap_or(0);
                if this.raise_fence(fence).await >= quorum {
                    return Ok(Attempt::Acquired(Acquired::new(Some(fence)).sent_at(sent)));
                }
            }
        }
        // No majority (or no time left): give it back everywhere, also where
        // no answer came, since the request may have landed there.
        let key = args.key.clone();
        let token = args.token;
        let _ = Self::each(&this.nodes, timeout, |inner| {
            let key = key.clone();
            async move { inner.release(&key, token).await }
        })
        .await;
        let busy: Vec<Duration> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Attempt::Busy(b)) => Some(b.retry_in.unwrap_or_default()),
                _ => None,
            })
            .collect();
        let failed = results.iter().filter(|r| r.is_err()).count();
        if lease_ran_out.is_none() && (!busy.is_empty() || failed == 0) {
            // Contention (or a split vote): another owner holds it somewhere.
            return Ok(Attempt::Busy(Busy::new(busy.into_iter().min())));
        }
        Err(BackendError::new(
            BackendErrorKind::Quorum,
            this.outcomes(
                &results,
                |a| matches!(a, Attempt::Acquired(_)),
                took,
                lease_ran_out,
            ),
        ))
    }

    /// Writes `fence` back to every node's counter; how many took it.
    async fn raise_fence(&self, fence: u64) -> usize {
        let results = Self::each(&self.nodes, self.node_timeout, |inner| async move {
            let mut inv = RAISE_FENCE.prepare_invoke();
            inv.key(&inner.fence_key).arg(fence);
            inner.invoke::<i64>(inv).await
        })
        .await;
        results.iter().filter(|r| r.is_ok()).count()
    }

    /// Release or extend on every node; true with a majority, false when a
    /// majority says the lock is not ours, an error when too few answered.
    async fn on_all<F, Fut>(&self, op: F) -> Result<bool, BackendError>
    where
        F: Fn(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<bool, BackendError>> + Send + 'static,
    {
        let started = Instant::now();
        let results = Self::each(&self.nodes, self.node_timeout, op).await;
        let yes = results.iter().filter(|r| matches!(r, Ok(true))).count();
        let no = results.iter().filter(|r| matches!(r, Ok(false))).count();
        if yes >= self.quorum {
            Ok(true)
        } else if no + yes >= self.quorum || no > self.nodes.len() - self.quorum {
            Ok(false)
        } else {
            Err(BackendError::new(
                BackendErrorKind::Quorum,
                self.outcomes(&results, |v| *v, started.elapsed(), None),
            ))
        }
    }

    fn shallow(&self) -> Self {
        Self {
            nodes: Arc::clone(&self.nodes),
            quorum: self.quorum,
            node_timeout: self.node_timeout,
        }
    }
}

impl Backend for QuorumBackend {
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
        Box::pin(io::run(self.try_acquire_future(req)))
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
        let args = Arc::new(AcquireArgs::new(req, false));
        let lease = req.lease.unwrap_or(crate::registry::DEFAULT_LEASE);
        Self::try_acquire_async_inner(
            Arc::clone(&self.nodes),
            self.quorum,
            self.node_timeout,
            args,
            lease,
        )
    }

    async fn release_all(&self, key: String, token: Token) -> Result<bool, BackendError> {
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
