//! The memcached store (feature `memcache`): djangae's WEAK lock kind, done
//! atomically. One item per held lock, written only through memcached's
//! compare-and-swap (the meta protocol's `ms`/`md` with a CAS), so two
//! lockers never both win; but memcached may forget an item at any time.
//!
//! # URL and settings
//! `memcache://host:port`, or `memcache://h1:p1,h2:p2,...` for several
//! servers (the port defaults to 11211; IPv6 as `[::1]:11211`). Settings:
//! `prefix` (default `lock:`), `poll_ms`, `lease_ms` (30 s by default),
//! `connect_timeout_ms` and `timeout_ms` (each connect, and each exchange
//! with a server; default 2 s each). Adding the alias connects to nothing.
//!
//! ```
//! use lock_runtime::registry::{self, AliasConfig};
//! use lock_runtime::Lock;
//!
//! let cfg = AliasConfig::from_url("memcache://10.0.0.5:11211,10.0.0.6:11211?timeout_ms=500&poll_ms=50")
//!     .unwrap();
//! assert_eq!(cfg.get_prefix(), "lock:");
//! registry::add("doc-memcache", cfg).unwrap();
//!
//! // Needs the servers:
//! # fn locked() -> Result<(), lock_runtime::LockError> {
//! let guard = Lock::new("invoice-7").alias("doc-memcache").acquire()?;
//! assert!(guard.fencing_token().is_some());
//! # Ok(()) }
//! ```
//!
//! With several servers each key lives on one of them, chosen by
//! rendezvous hashing: a server's weight for a key is splitmix64's
//! finaliser of the first 8 bytes (big-endian) of SHA-256 of the item key,
//! XOR those of SHA-256 of the server as written (`host:port`); the
//! heaviest server holds the key. A key always goes to the same server for
//! a given list, whatever its order; adding or removing a server moves
//! only the keys that it takes or held (so do that when no lock is held:
//! a moved key is a second, independent lock). Write every process's list
//! the same way (`localhost:11211` and `127.0.0.1:11211` are different
//! names). [`MemcacheStore::server_of`] says where a key lives.
//!
//! # Items
//! A lock is the item `\0l` + the stored key (alias prefix and key, see
//! [`Namespace`]), sent in the meta protocol's base64 key
//! mode, so keys may hold spaces, newlines or NUL; a stored key longer than
//! 184 bytes becomes `\0h` + its SHA-256, and the item's value then carries
//! the full key, which every operation checks. The leading NUL keeps the
//! items out of reach of any text-protocol client sharing the server. The
//! value is a record: `lock1 <owner token> <acquired at> <lease end>
//! <fencing token>`, then a newline and the full key (for hashed ones), the
//! times in µs since the Unix epoch.
//!
//! # Operations
//! - Acquire: one round trip sends an add-if-absent (`ms ... ME`) of a
//!   record, a count of the fencing counter (`ma`) and a read of the item
//!   (`mg`). Added: a second round trip writes the fencing token into the
//!   record with the CAS the add returned, and succeeds only if nobody
//!   touched the item in between, so a token is always counted after the
//!   item was won and before anyone else can win it: tokens grow in the
//!   order locks are granted. Not added: the record read says who holds it;
//!   if its lease has ended (by the record's end, not memcached's TTL) or
//!   its holder is older than `steal_after`, it is taken over by a
//!   CAS-guarded set, then confirmed the same way; else the answer is busy,
//!   with the time until the holder's lease end or steal age, so a waiter
//!   looks again right then.
//! - Release: read the record and its CAS; if the token owns it, delete by
//!   CAS (`md ... C<cas>`). Extend: the same read, then a CAS-guarded set of
//!   the record with its new end and TTL. Either one looks again when the
//!   item changed in between (its own renewal, say). The owner check (for
//!   [`LockGuard::lost`](crate::LockGuard::lost)) is the read alone.
//! - Waiting: memcached tells no one of a release, so waiters poll, at the
//!   alias's `poll_ms` with backoff and jitter (the runtime's wait loop),
//!   and at the holder's lease end or steal age.
//!
//! # Times
//! Memcached's TTLs are whole seconds on a clock that ticks once a second,
//! so an item may go up to a second early. The store keeps the exact lease
//! end in the record and sets the TTL to the lease rounded up to whole
//! seconds plus one, so the item outlives its lease and other lockers treat
//! it as free from its recorded end on (taking it over by CAS). Leases
//! under a second are therefore exact too. A lease over 30 days, which
//! memcached would read as a Unix timestamp, gets no TTL at all: its item
//! goes when someone takes it over after its end, or when evicted.
//!
//! The recorded times are the lockers' wall clocks: the hosts that share
//! the servers must keep their clocks in step (NTP). A host whose clock is
//! ahead by *d* sees other hosts' leases, and steal ages, end *d* early.
//!
//! # What it guarantees
//! Mutual exclusion while memcached keeps the item: **WEAK**. Memcached is a
//! cache: it evicts items under memory pressure (least recently used
//! first), and a restart forgets every lock. A holder whose item vanished
//! is told: its next renewal or owner check finds the item gone and the
//! guard's lost-lock signal fires ([`LockGuard::is_lost`](crate::LockGuard::is_lost),
//! [`lost`](crate::LockGuard::lost)); meanwhile another locker may already
//! hold the key. Use it where a rare double run is harmless (a cache
//! stampede guard, djangae's WEAK kind); use Redis with persistence or a
//! SQL store where it is not.
//!
//! Fencing tokens come from one counter item per server (`\0fence`, no TTL)
//! and grow strictly for every key of that server while it runs. A restart
//! or an eviction of the counter starts it afresh from the wall clock in
//! µs (`ma`'s initial value), so it still grows across a restart as long
//! as fewer than a million tokens per second were handed out, on average,
//! since the counter was created, and the clock did not go back: fencing is
//! weak too. Every acquisition attempt counts, busy ones included, so
//! tokens have gaps.
//!
//! No clean-up is needed (every item has a TTL, except past 30 days) and
//! none is offered; the store cannot list its locks (memcached has no way
//! to list keys short of a debugging dump), so
//! [`Alias::holders`](crate::registry::Alias::holders) and
//! [`Alias::list`](crate::registry::Alias::list) answer `None`.
//!
//! # Admin
//! [`Alias::show`](crate::registry::Alias::show) reads one item: its
//! lease left, age and fencing token; the items record no holder (they stay
//! as they were, so every version reads them), so its `owner` is `None`.
//! [`Alias::force_release`](crate::registry::Alias::force_release) deletes
//! the item by CAS whoever holds it: the holder's next renewal or check
//! finds it gone, and the fencing counter goes on. No audit log is kept
//! (memcached may evict it like any item): [`Alias::audit_log`](crate::registry::Alias::audit_log)
//! answers [`LockError::Unsupported`], and the runtime's
//! `lock.forced_release` event is the record.
//!
//! # Errors
//! [`LockError::Backend`] of kind
//! [`Connection`](BackendErrorKind::Connection) when a server cannot be
//! reached, [`Timeout`](BackendErrorKind::Timeout) when it does not answer
//! within `timeout_ms`, [`Protocol`](BackendErrorKind::Protocol) when it
//! answers with an error (`SERVER_ERROR out of memory`, say). Messages name
//! the server. A connection that failed is closed; the next call connects
//! again, so calls work again as soon as the server is back. A call that
//! timed out may still be applied when a hung server resumes: an
//! acquisition that timed out can leave its key taken until the lease it
//! asked for ends.

mod conn;
mod proto;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::conn::{Server, Timeouts};
use self::proto::{Batch, FENCE_KEY, ItemKey, Record, Reply, SetMode};
use super::kind::{Opening, StoreKind};
use super::{
    Abilities, Acquired, Attempt, Backend, BackendError, BackendErrorKind, Busy, ForceRelease,
    Held, Inspect, Namespace, OwnerCheck, Request, Store, Token,
};
use crate::LockError;
use crate::admin::{Forced, Page};
use crate::lease::DEFAULT_LEASE;

/// `memcache://host:port[,host:port...]`.
pub(crate) static KIND: StoreKind = StoreKind {
    name: "memcached",
    schemes: &["memcache"],
    settings: &[
        "prefix",
        "poll_ms",
        "lease_ms",
        "connect_timeout_ms",
        "timeout_ms",
    ],
    passed_on: &[],
    default_prefix: "lock:",
    locate,
    open,
    fresh: None,
};

/// memcached's own port, for a server written without one.
const DEFAULT_PORT: u16 = 11211;

/// How many times one call looks again when the item changed under it
/// before it answers (busy, or not held).
const ROUNDS: usize = 4;

/// The servers a `memcache://` URL names, each as `host:port`.
fn locate(url: &str) -> Result<Vec<String>, String> {
    let shown = crate::config::redact(url);
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "`{shown}`: memcached has no users or passwords; expected `memcache://host:port[,host:port...]`"
        ));
    }
    if rest.contains('/') {
        return Err(format!(
            "`{shown}` has a path; expected `memcache://host:port[,host:port...]`"
        ));
    }
    servers(rest.split(',')).map_err(|e| format!("`{shown}`: {e}"))
}

/// Checks and normalises a list of `host[:port]`.
fn servers<'a>(list: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for spec in list {
        let server = server(spec)?;
        if out.contains(&server) {
            return Err(format!("the server `{server}` is listed twice"));
        }
        out.push(server);
    }
    if out.is_empty() {
        return Err("no server: expected `host:port[,host:port...]`".to_owned());
    }
    Ok(out)
}

fn server(spec: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{spec}` is not a server ({why}): expected `host:port`");
    let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("no `]`"))?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(bad("a bad IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match spec.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (spec, None),
        };
        if host.contains(':') {
            return Err(bad("an IPv6 address goes in brackets: `[::1]:11211`"));
        }
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if !host.chars().all(name_char) {
            return Err(bad("a host name is letters, digits, `-`, `.` and `_`"));
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

fn open(at: &[String], o: &Opening<'_>) -> Result<Arc<dyn Backend>, String> {
    let store = MemcacheStore::on(at.to_vec())
        .connect_timeout(o.connect_timeout)
        .command_timeout(o.command_timeout);
    Ok(super::blocking(Arc::new(store)))
}

/// Locks in one or more memcached servers: fast, atomic, and forgetful
/// (djangae's WEAK kind). The [module docs](self) say how it works and what
/// it guarantees; configure it with a `memcache://` URL, or build it here
/// and register it with
/// [`AliasConfig::store`](crate::registry::AliasConfig::store):
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_runtime::backend::memcache::MemcacheStore;
/// use lock_runtime::registry::{self, AliasConfig};
///
/// let store = MemcacheStore::new(["10.0.0.5:11211", "10.0.0.6"])
///     .unwrap()
///     .command_timeout(Duration::from_millis(500));
/// registry::add("doc-memcache-store", AliasConfig::store(Arc::new(store)).prefix("jobs:")).unwrap();
/// ```
pub struct MemcacheStore {
    servers: Vec<Server>,
    timeouts: Timeouts,
}

impl fmt::Debug for MemcacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcacheStore")
            .field("servers", &self.servers)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl MemcacheStore {
    /// A store on these servers (`host:port`, or `host` for port 11211),
    /// with 2 s timeouts. Connects to nothing yet.
    ///
    /// ```
    /// use lock_runtime::backend::memcache::MemcacheStore;
    ///
    /// let store = MemcacheStore::new(["cache-1:11211", "[::1]:11311"]).unwrap();
    /// assert_eq!(store.servers().collect::<Vec<_>>(), ["cache-1:11211", "[::1]:11311"]);
    /// assert!(MemcacheStore::new(["cache-1:11211", "cache-1"]).is_err(), "listed twice");
    /// assert!(MemcacheStore::new(["host:0"]).is_err());
    /// ```
    ///
    /// # Errors
    /// [`LockError::Config`] for an empty list, a server that is not
    /// `host[:port]`, or one listed twice.
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a str>) -> Result<Self, LockError> {
        let list = self::servers(servers).map_err(|r| LockError::config("", "url", r))?;
        Ok(Self::on(list))
    }

    fn on(list: Vec<String>) -> Self {
        Self {
            servers: list.into_iter().map(Server::new).collect(),
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                command: Duration::from_secs(2),
            },
        }
    }

    /// How long connecting to a server may take (the URL setting
    /// `connect_timeout_ms`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memcache::MemcacheStore;
    ///
    /// let store = MemcacheStore::new(["cache-1"]).unwrap().connect_timeout(Duration::from_millis(300));
    /// # let _ = store;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// How long one exchange with a server (a request and its replies) may
    /// take before the call fails with a
    /// [`BackendErrorKind::Timeout`] error (the URL setting `timeout_ms`).
    /// A call makes one to three exchanges.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_runtime::backend::memcache::MemcacheStore;
    ///
    /// let store = MemcacheStore::new(["cache-1"]).unwrap().command_timeout(Duration::from_millis(250));
    /// # let _ = store;
    /// ```
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.command = timeout;
        self
    }

    /// The servers, as `host:port`, in the order given.
    ///
    /// ```
    /// use lock_runtime::backend::memcache::MemcacheStore;
    ///
    /// let store = MemcacheStore::new(["cache-1"]).unwrap();
    /// assert_eq!(store.servers().next(), Some("cache-1:11211"));
    /// ```
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.name.as_str())
    }

    /// The server that holds `stored_key` (a key as the store is given it:
    /// the alias prefix, then the lock's key; see
    /// [`Namespace`]). The same for any order of the same
    /// list.
    ///
    /// ```
    /// use lock_runtime::backend::memcache::MemcacheStore;
    ///
    /// let ab = MemcacheStore::new(["cache-a:11211", "cache-b:11211"]).unwrap();
    /// let ba = MemcacheStore::new(["cache-b:11211", "cache-a:11211"]).unwrap();
    /// for key in ["lock:invoice-7", "lock:report", "lock:nightly"] {
    ///     assert_eq!(ab.server_of(key), ba.server_of(key));
    /// }
    /// ```
    pub fn server_of(&self, stored_key: &str) -> &str {
        self.server(&ItemKey::of(stored_key).binary)
            .map_or("", |s| s.name.as_str())
    }

    /// Rendezvous hashing: the heaviest server for this item. `None` only
    /// for an empty list, which the constructors refuse.
    fn server(&self, item: &[u8]) -> Option<&Server> {
        if let [only] = &self.servers[..] {
            return Some(only);
        }
        let h = proto::hash64(item);
        self.servers
            .iter()
            .max_by_key(|s| (proto::mix(h ^ s.seed), s.name.as_str()))
    }

    /// The server of a lock item, and the part of its key its record names.
    fn place<'k>(&self, key: &'k str) -> Result<(ItemKey, &Server, &'k [u8]), BackendError> {
        let item = ItemKey::of(key);
        let server = self.server(&item.binary).ok_or_else(|| {
            BackendError::new(BackendErrorKind::Other, "a memcached store with no server")
        })?;
        let full_key = item.record_key(key);
        Ok((item, server, full_key))
    }

    fn exchange(&self, server: &Server, req: &Batch) -> Result<Vec<Reply>, BackendError> {
        let replies = server.exchange(req, self.timeouts)?;
        if replies.len() == req.replies {
            Ok(replies)
        } else {
            Err(unexpected(server, "a request", &replies))
        }
    }

    /// One command, one reply.
    fn one(&self, server: &Server, req: &Batch) -> Result<Reply, BackendError> {
        let mut replies = self.exchange(server, req)?;
        replies
            .pop()
            .ok_or_else(|| unexpected(server, "a request", &replies))
    }
}

fn unexpected(server: &Server, to: &str, reply: &dyn fmt::Debug) -> BackendError {
    BackendError::new(
        BackendErrorKind::Protocol,
        format!(
            "memcached {}: unexpected reply to {to}: {reply:?}",
            server.name
        ),
    )
}

/// The wall clock in µs since the Unix epoch: the clock the records share.
fn wall_micros() -> Result<u64, BackendError> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| {
        BackendError::new(
            BackendErrorKind::Other,
            "the system clock is before 1970: lease ends cannot be recorded",
        )
    })?;
    Ok(micros(since))
}

/// `d` in µs, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A fencing token from an `ma` reply.
fn fence_of(server: &Server, reply: &Reply) -> Result<u64, BackendError> {
    match reply {
        Reply::Value { data, .. } => std::str::from_utf8(data)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| unexpected(server, "the fencing count", reply)),
        other => Err(unexpected(server, "the fencing count", other)),
    }
}

/// What an acquisition makes of the record it found.
enum Verdict {
    /// Held: look again in this long, if known.
    Busy(Option<Duration>),
    /// Ended, or old enough to steal: take it over by CAS.
    Free,
    /// This very acquisition's own claim (from an exchange that was cut off
    /// and asked again): confirm it.
    Ours,
}

fn judge(data: &[u8], req: &Request<'_>, full_key: &[u8], now: u64, steal: Option<u64>) -> Verdict {
    // An item this store did not write (it never is, under its NUL-led
    // keys): leave it to its TTL.
    let Some(rec) = Record::decode(data) else {
        return Verdict::Busy(None);
    };
    if rec.owner == req.token && rec.key == full_key {
        return Verdict::Ours;
    }
    let stale_at = steal.map(|s| rec.acquired.saturating_add(s));
    if now >= rec.end || stale_at.is_some_and(|at| now >= at) {
        return Verdict::Free;
    }
    let free_at = stale_at.map_or(rec.end, |at| at.min(rec.end));
    Verdict::Busy(Some(Duration::from_micros(free_at - now)))
}

/// A record read back, and whether `token` owns it for `stored`.
fn owned<'d>(data: &'d [u8], token: Token, full_key: &[u8]) -> Option<Record<'d>> {
    Record::decode(data).filter(|rec| rec.owner == token && rec.key == full_key)
}

impl Store for MemcacheStore {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let (item, server, full_key) = self.place(req.key)?;
        let lease = micros(req.lease.unwrap_or(DEFAULT_LEASE));
        let ttl = proto::ttl_for(lease);
        let steal = req.steal_after.map(micros);
        for _ in 0..ROUNDS {
            let sent = Instant::now();
            let now = wall_micros()?;
            let claim = Record {
                owner: req.token,
                acquired: now,
                end: now.saturating_add(lease),
                fence: 0,
                key: full_key,
            };
            let value = claim.encode();
            let mut first = Batch::default();
            first
                .set(&item.binary, &value, ttl, SetMode::Add)
                .count(FENCE_KEY, now)
                .get(&item.binary);
            let replies = self.exchange(server, &first)?;
            let [added, counted, read] = &replies[..] else {
                return Err(unexpected(server, "an acquisition", &replies));
            };
            let (claimed, fence) = match added {
                Reply::Done { cas: Some(cas) } => (*cas, fence_of(server, counted)?),
                Reply::NotStored => match read {
                    // Gone since the add: try again.
                    Reply::Miss => continue,
                    Reply::Value {
                        data,
                        cas: Some(held),
                    } => match judge(data, req, full_key, now, steal) {
                        Verdict::Busy(retry_in) => return Ok(Attempt::Busy(Busy::new(retry_in))),
                        // Counted after that claim: good for it.
                        Verdict::Ours => (*held, fence_of(server, counted)?),
                        Verdict::Free => {
                            // The count must follow the claim, so it is sent
                            // again behind the take-over.
                            let mut take = Batch::default();
                            take.set(&item.binary, &value, ttl, SetMode::Cas(*held))
                                .count(FENCE_KEY, now);
                            let replies = self.exchange(server, &take)?;
                            match &replies[..] {
                                [Reply::Done { cas: Some(cas) }, counted] => {
                                    (*cas, fence_of(server, counted)?)
                                }
                                // Someone else was quicker.
                                [Reply::Exists | Reply::NotFound, _] => continue,
                                other => return Err(unexpected(server, "a take-over", &other)),
                            }
                        }
                    },
                    other => return Err(unexpected(server, "a read", other)),
                },
                other => return Err(unexpected(server, "an add", other)),
            };
            let confirmed = Record { fence, ..claim };
            let mut confirm = Batch::default();
            confirm.set(
                &item.binary,
                &confirmed.encode(),
                ttl,
                SetMode::Cas(claimed),
            );
            match self.one(server, &confirm)? {
                Reply::Done { .. } => {
                    return Ok(Attempt::Acquired(Acquired::new(Some(fence)).sent_at(sent)));
                }
                // Taken over or evicted between the claim and now: not ours.
                Reply::Exists | Reply::NotFound => continue,
                other => return Err(unexpected(server, "a confirmation", &other)),
            }
        }
        // The item changed hands at every look: busy, as far as anyone knows.
        Ok(Attempt::Busy(Busy::new(None)))
    }

    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let (item, server, full_key) = self.place(key)?;
        for _ in 0..ROUNDS {
            let (data, cas) = match self.one(server, Batch::default().get(&item.binary))? {
                Reply::Miss => return Ok(false),
                Reply::Value {
                    data,
                    cas: Some(cas),
                } => (data, cas),
                other => return Err(unexpected(server, "a read", &other)),
            };
            let Some(rec) = owned(&data, token, full_key) else {
                return Ok(false);
            };
            // The owner's own item goes even when its lease has ended (it is
            // garbage), but only a live one counts as released.
            let live = wall_micros()? < rec.end;
            match self.one(server, Batch::default().delete(&item.binary, cas))? {
                Reply::Done { .. } => return Ok(live),
                Reply::NotFound => return Ok(false),
                // Changed since the read (renewed, or taken over): look again.
                Reply::Exists => continue,
                other => return Err(unexpected(server, "a delete", &other)),
            }
        }
        Ok(false)
    }

    fn extend(&self, key: &str, token: Token, lease: Duration) -> Result<bool, BackendError> {
        let (item, server, full_key) = self.place(key)?;
        let lease = micros(lease);
        for _ in 0..ROUNDS {
            let (data, cas) = match self.one(server, Batch::default().get(&item.binary))? {
                Reply::Miss => return Ok(false),
                Reply::Value {
                    data,
                    cas: Some(cas),
                } => (data, cas),
                other => return Err(unexpected(server, "a read", &other)),
            };
            let Some(rec) = owned(&data, token, full_key) else {
                return Ok(false);
            };
            let now = wall_micros()?;
            if now >= rec.end {
                return Ok(false);
            }
            let renewed = Record {
                end: now.saturating_add(lease),
                ..rec
            };
            let mut set = Batch::default();
            set.set(
                &item.binary,
                &renewed.encode(),
                proto::ttl_for(lease),
                SetMode::Cas(cas),
            );
            match self.one(server, &set)? {
                Reply::Done { .. } => return Ok(true),
                Reply::NotFound => return Ok(false),
                Reply::Exists => continue,
                other => return Err(unexpected(server, "a renewal", &other)),
            }
        }
        Ok(false)
    }

    fn abilities(&self) -> Abilities<'_> {
        Abilities::none()
            .owner_check(self)
            .inspect(self)
            .force_release(self)
    }
}

impl MemcacheStore {
    /// The live lock `key` (as stored) and its item's CAS, if held.
    fn read_held(&self, key: &str) -> Result<Option<(Held, u64)>, BackendError> {
        let (item, server, full_key) = self.place(key)?;
        let (data, cas) = match self.one(server, Batch::default().get(&item.binary))? {
            Reply::Miss => return Ok(None),
            Reply::Value {
                data,
                cas: Some(cas),
            } => (data, cas),
            other => return Err(unexpected(server, "a read", &other)),
        };
        let Some(rec) = Record::decode(&data).filter(|r| r.key == full_key) else {
            return Ok(None);
        };
        let now = wall_micros()?;
        if now >= rec.end || rec.fence == 0 {
            // Ended, or a claim not yet confirmed: nobody holds it yet.
            return Ok(None);
        }
        let held_for = Duration::from_micros(now.saturating_sub(rec.acquired));
        let held = Held::new(key)
            .held_for(Some(held_for))
            .lease_left(Some(Duration::from_micros(rec.end - now)))
            .fencing(Some(rec.fence))
            .acquired_at(UNIX_EPOCH.checked_add(Duration::from_micros(rec.acquired)));
        Ok(Some((held, cas)))
    }
}

impl Inspect for MemcacheStore {
    /// Memcached has no way to list its keys: always
    /// [`Unsupported`](BackendErrorKind::Unsupported).
    fn list(
        &self,
        _ns: &Namespace,
        _prefix: &str,
        _cursor: Option<&str>,
        _limit: usize,
    ) -> Result<Page, BackendError> {
        Err(BackendError::new(
            BackendErrorKind::Unsupported,
            "list its locks: memcached has no way to list keys",
        ))
    }

    /// One read of the key's item: its lease, age and fencing token. The
    /// store records no holder (its items stay as they were), so `owner`
    /// is `None`.
    fn show(&self, key: &str) -> Result<Option<Held>, BackendError> {
        Ok(self.read_held(key)?.map(|(held, _)| held))
    }
}

impl ForceRelease for MemcacheStore {
    /// Deletes the key's item by CAS whoever holds it (looking again if it
    /// changed in between); its holder's next renewal or check finds it
    /// gone, and the fencing counter is not touched. No audit log is kept:
    /// the runtime's `lock.forced_release` event is the record.
    fn force_release(&self, _ns: &Namespace, mut entry: Forced) -> Result<Forced, BackendError> {
        let (item, server, _) = self.place(&entry.key)?;
        for _ in 0..ROUNDS {
            let Some((held, cas)) = self.read_held(&entry.key)? else {
                return Ok(entry);
            };
            match self.one(server, Batch::default().delete(&item.binary, cas))? {
                Reply::Done { .. } => {
                    entry.removed = Some(held);
                    return Ok(entry);
                }
                Reply::NotFound => return Ok(entry),
                // Renewed or taken over since the read: look again.
                Reply::Exists => continue,
                other => return Err(unexpected(server, "a delete", &other)),
            }
        }
        Err(BackendError::new(
            BackendErrorKind::Other,
            format!("`{}` changed hands at every look; try again", entry.key),
        ))
    }

    fn audit_log(&self, _ns: &Namespace, _limit: usize) -> Result<Vec<Forced>, BackendError> {
        Err(BackendError::new(
            BackendErrorKind::Unsupported,
            "keep an audit log: memcached may evict any item (the `lock.forced_release` event is the record)",
        ))
    }
}

impl OwnerCheck for MemcacheStore {
    /// Whether `token` holds `key` with its lease running: one read. A lock
    /// memcached evicted or forgot in a restart is not held.
    ///
    /// ```no_run
    /// use lock_runtime::backend::memcache::MemcacheStore;
    /// use lock_runtime::backend::{OwnerCheck, Request, Store};
    ///
    /// let store = MemcacheStore::new(["127.0.0.1:11211"]).unwrap();
    /// let req = Request::new("lock:k");
    /// store.try_acquire(&req).unwrap();
    /// assert!(store.holds("lock:k", req.token).unwrap());
    /// store.release("lock:k", req.token).unwrap();
    /// assert!(!store.holds("lock:k", req.token).unwrap());
    /// ```
    fn holds(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        let (item, server, full_key) = self.place(key)?;
        match self.one(server, Batch::default().get(&item.binary))? {
            Reply::Miss => Ok(false),
            Reply::Value { data, .. } => match owned(&data, token, full_key) {
                Some(rec) => Ok(wall_micros()? < rec.end),
                None => Ok(false),
            },
            other => Err(unexpected(server, "a read", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_servers() {
        assert_eq!(
            locate("memcache://127.0.0.1:1234").unwrap(),
            ["127.0.0.1:1234"]
        );
        assert_eq!(
            locate("memcache://a,b:2,[::1],[fe80::1]:3/").unwrap(),
            ["a:11211", "b:2", "[::1]:11211", "[fe80::1]:3"]
        );
        for (bad, why) in [
            ("memcache://", "no host"),
            ("memcache://a,", "no host"),
            ("memcache://a,a:11211", "listed twice"),
            ("memcache://a:0", "port"),
            ("memcache://a:65536", "port"),
            ("memcache://a:x", "port"),
            ("memcache://::1", "brackets"),
            ("memcache://[::1", "no `]`"),
            ("memcache://[::1]x", "junk"),
            ("memcache://a b", "host name"),
            ("memcache://u:p@a", "no users"),
            ("memcache://a/0", "path"),
        ] {
            let err = locate(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(
            !locate("memcache://u:secret@a")
                .unwrap_err()
                .contains("secret")
        );
    }

    #[test]
    fn urls_refuse_unknown_settings() {
        let err = crate::registry::AliasConfig::from_url("memcache://a?table=x").unwrap_err();
        assert!(
            err.to_string().contains("accepted: prefix, poll_ms"),
            "{err}"
        );
        assert!(
            crate::registry::AliasConfig::from_url("memcache://a?timeout_ms=50&lease_ms=500")
                .is_ok()
        );
    }

    #[test]
    fn keys_spread_over_servers_and_stay_put() {
        let names = ["a:1", "b:2", "c:3"];
        let abc = MemcacheStore::new(names).unwrap();
        let cba = MemcacheStore::new(names.iter().rev().copied()).unwrap();
        let ab = MemcacheStore::new(["a:1", "b:2"]).unwrap();
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let key = format!("lock:{i}");
            let at = abc.server_of(&key);
            assert_eq!(at, cba.server_of(&key), "order does not matter");
            // Dropping `c` moves only the keys `c` held.
            if at != "c:3" {
                assert_eq!(at, ab.server_of(&key));
            }
            *counts.entry(at.to_owned()).or_insert(0) += 1;
        }
        for name in names {
            let n = counts[name];
            assert!((800..1200).contains(&n), "{name} holds {n} of 3000");
        }
    }

    fn request(token: Token) -> Request<'static> {
        Request::new("k").token(token)
    }

    #[test]
    fn records_are_judged_by_their_end_and_age() {
        let holder = Token::new();
        let rec = Record {
            owner: holder,
            acquired: 1_000,
            end: 5_000,
            fence: 1,
            key: b"",
        };
        let data = rec.encode();
        let me = request(Token::new());
        assert!(matches!(
            judge(&data, &me, b"", 2_000, None),
            Verdict::Busy(Some(d)) if d == Duration::from_micros(3_000)
        ));
        assert!(matches!(judge(&data, &me, b"", 5_000, None), Verdict::Free));
        // Stealable from 1_000 + 2_000 on, so a waiter looks again then.
        assert!(matches!(
            judge(&data, &me, b"", 2_000, Some(2_000)),
            Verdict::Busy(Some(d)) if d == Duration::from_micros(1_000)
        ));
        assert!(matches!(
            judge(&data, &me, b"", 3_000, Some(2_000)),
            Verdict::Free
        ));
        assert!(matches!(
            judge(&data, &request(holder), b"", 2_000, None),
            Verdict::Ours
        ));
        // The same token on another key (a hash collision) is not ours.
        assert!(matches!(
            judge(&data, &request(holder), b"other", 2_000, None),
            Verdict::Busy(_)
        ));
        assert!(matches!(
            judge(b"junk", &me, b"", 2_000, None),
            Verdict::Busy(None)
        ));
        assert!(owned(&data, holder, b"").is_some());
        assert!(owned(&data, holder, b"x").is_none());
        assert!(owned(&data, Token::new(), b"").is_none());
    }

    #[test]
    fn an_unreachable_server_is_a_connection_error() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let store = MemcacheStore::new([format!("127.0.0.1:{port}").as_str()])
            .unwrap()
            .connect_timeout(Duration::from_millis(200));
        let err = store.try_acquire(&Request::new("k")).unwrap_err();
        assert!(err.is_connection(), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn any_timeout_is_taken_without_panicking() {
        // A server that hangs up on every connection at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        for t in [Duration::ZERO, Duration::from_millis(1), Duration::MAX] {
            let store = MemcacheStore::new([addr.as_str()])
                .unwrap()
                .connect_timeout(t)
                .command_timeout(t);
            let err = store.holds("k", Token::new()).unwrap_err();
            assert!(err.is_connection() || err.is_timeout(), "{t:?}: {err}");
        }
    }

    #[test]
    fn a_silent_server_is_a_timeout_error() {
        // Accepts (the kernel does), never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let store = MemcacheStore::new([addr.as_str()])
            .unwrap()
            .command_timeout(Duration::from_millis(150));
        let started = Instant::now();
        let err = store.holds("k", Token::new()).unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(listener);
    }
}
