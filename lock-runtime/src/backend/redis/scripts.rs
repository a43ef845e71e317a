//! The Lua scripts that make every lock operation one atomic step on the
//! server. Keys and tokens travel as `KEYS`/`ARGV`, never in the script text;
//! the scripts are called by hash and loaded again after `NOSCRIPT`, once
//! for a crowd of calls (see [`Loads`]).
//!
//! A lock's value is `<token><span>[#<meta>]<flag>`: the owner's
//! 22-character token; the lock's age at its last (re)lease plus that
//! lease, in ms, so that its age now is `span - PTTL` by the server's own
//! clock, with no `TIME` call on the hot path; for a lock taken with a label
//! or a `#[lock]` function, `#` and the number under which its process
//! record keeps them; then `*` if someone waits (only then does a release
//! publish a wake-up or look at the line).
//!
//! Who holds a lock costs it nothing more: the token's first 11 characters
//! are the same for every token of a process (its random seed), and name
//! the process record (`<books>proc:<those 11>`, a hash: `host`, `pid`, and
//! `l<n>`/`f<n>` for each label and function), written once per process.
//!
//! Fair waiting uses two more keys beside the lock: a list (the line, in
//! arrival order) and a sorted set (each waiter's liveness deadline). An
//! entry is the waiter's token followed by the lease it asked for and its
//! meta suffix. A release
//! hands the lock straight to the live head of the line (a grant) and
//! publishes `<token>:<fencing token>:<lock>` on the channel of the
//! waiter's process (`<books>wake:<the token's first 11>`), which only that
//! process reads, so the waiter has the lock the moment the message
//! arrives, with no round trip to claim it. The grant's
//! lease is at most the waiter TTL, and the waiter tops it up to what it
//! asked for once it runs: a waiter whose process died just before its
//! grant blocks the line no longer than the TTL. Waiters refresh their
//! deadline while they wait; a dead one is dropped from the head of the line
//! once its deadline passes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use once_cell::sync::Lazy;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, ConnectionLike, FromRedisValue, RedisResult, Script, ToRedisArgs};

/// Shared helpers, pasted at the top of each script (Redis scripts cannot
/// call each other).
const PRELUDE: &str = r#"
local function owner(v) return string.sub(v, 1, 22) end
local function span(v) return tonumber(string.match(v, '^%d+', 23)) end
local function waiting(v) return string.find(v, '*', 23, true) ~= nil end
-- The holder's process record: host, pid, and the label and function its
-- meta suffix names (each false when not recorded).
local function record(books, v)
  local rec = books .. string.sub(v, 1, 11)
  local r = redis.call('HMGET', rec, 'host', 'pid')
  local label, fn = false, false
  local m = string.match(v, '#(%d+)', 23)
  if m then
    local f = redis.call('HMGET', rec, 'l' .. m, 'f' .. m)
    label, fn = f[1], f[2]
  end
  return r[1], r[2], label, fn
end
local function stale(v, pttl, steal)
  if steal <= 0 then return false end
  local s = span(v)
  return s == nil or pttl < 0 or s - pttl >= steal
end
-- When a busy lock may next be taken: its lease's end, or sooner the moment
-- it turns stale for a waiter that may steal it.
local function retry_in(v, pttl, steal)
  local s = span(v)
  if steal > 0 and s ~= nil and pttl >= 0 then
    return math.max(0, math.min(pttl, steal - (s - pttl)))
  end
  return pttl
end
-- Drops waiters whose deadline passed from the head of the line; returns
-- the live head, if any, and the server's time if it was read.
local function head_of_line(line, alive)
  local head = redis.call('LINDEX', line, 0)
  if not head then return nil end
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  while head do
    local deadline = tonumber(redis.call('ZSCORE', alive, head))
    if deadline and deadline > now then return head, now end
    redis.call('LPOP', line)
    redis.call('ZREM', alive, head)
    head = redis.call('LINDEX', line, 0)
  end
  return nil, now
end
-- Frees the lock: granted to the live head of the line if there is one
-- (so newcomers cannot barge in; its lease at most the waiter TTL), else
-- deleted, with a wake-up on the lock's own name. `marked`: somebody
-- outside the line waits too.
local function pass_on(lock, line, alive, fence, marked)
  local head = head_of_line(line, alive)
  if head then
    redis.call('LPOP', line)
    redis.call('ZREM', alive, head)
    local token = string.sub(head, 1, 22)
    local lease = math.min(tonumber(string.match(head, '^%d+', 23)) or TTL, TTL)
    local meta = string.match(head, '#%d+$', 23) or ''
    local more = marked or redis.call('LLEN', line) > 0
    redis.call('SET', lock, token .. lease .. meta .. (more and '*' or ''), 'PX', lease)
    local granted = redis.call('INCR', fence)
    -- To the waiter's process alone: its channel sits beside the fencing
    -- counter (whose name ends in 'fence'), named by the token's head.
    local own = string.sub(fence, 1, -6) .. 'wake:' .. string.sub(token, 1, 11)
    redis.call('PUBLISH', own, token .. ':' .. granted .. ':' .. lock)
  else
    redis.call('DEL', lock)
    redis.call('PUBLISH', lock, '')
  end
end
"#;

/// A script: its source, kept to load it again, and the hash `EVALSHA`
/// calls it by.
pub(crate) struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    fn new(code: String) -> Self {
        let hash = Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }
}

fn script(body: &str) -> Lua {
    script_after("", body)
}

/// A script whose `first` part runs before the helpers are defined (Lua
/// makes a closure for each helper every time the script runs), so that a
/// common case needing none of them can return first. `TTL` is the waiter
/// TTL in ms.
fn script_after(first: &str, body: &str) -> Lua {
    let ttl = super::WAITER_TTL.as_millis();
    Lua::new(format!("{first}local TTL = {ttl}\n{PRELUDE}{body}"))
}

/// Every script of the Redis stores, loaded together.
fn all() -> [&'static Lua; 9] {
    [
        &ACQUIRE,
        &ACQUIRE_FAIR,
        &RELEASE,
        &RELEASE_TO,
        &LEAVE,
        &EXTEND,
        &INSPECT,
        &FORCE,
        &RAISE_FENCE,
    ]
}

/// Loading the scripts on one server again. A call whose script the server
/// forgot (`NOSCRIPT`: it restarted, or ran `SCRIPT FLUSH`) loads every
/// script, in one round trip, unless another call loaded them since it was
/// sent; a crowd of calls that all find their scripts gone waits for one
/// load instead of making one each (200 concurrent releases made 165).
#[derive(Default)]
pub(crate) struct Loads {
    /// Loads made so far: a call notes it before it is sent.
    made: AtomicU64,
    /// One caller loads at a time; the others wait for it, then see it done.
    sync_turn: Mutex<()>,
    async_turn: tokio::sync::Mutex<()>,
}

impl Loads {
    fn seen(&self) -> u64 {
        self.made.load(Ordering::Acquire)
    }

    /// Loads every script on `con`, unless a load was made since `seen`.
    fn load(&self, seen: u64, con: &mut dyn ConnectionLike) -> RedisResult<()> {
        let _turn = self.sync_turn.lock().unwrap_or_else(|e| e.into_inner());
        if self.seen() == seen {
            load_all().query::<()>(con)?;
            self.made.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn load_async(&self, seen: u64, con: &mut MultiplexedConnection) -> RedisResult<()> {
        let _turn = self.async_turn.lock().await;
        if self.seen() == seen {
            load_all().query_async::<()>(con).await?;
            self.made.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// `SCRIPT LOAD` of every script, as one pipeline.
fn load_all() -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for lua in all() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(&lua.code).ignore();
    }
    pipe
}

/// One call of a script: `EVALSHA`, its hash, its keys and its arguments,
/// written straight into one command (redis-rs's `ScriptInvocation` copies
/// each key and argument into a buffer of its own first, then into the
/// command, which costs every lock operation several allocations).
/// Sent again after the scripts are loaded if the server answers
/// `NOSCRIPT` (see [`Loads`]).
pub(crate) struct Call {
    cmd: Cmd,
}

impl Call {
    /// A call of `script` on `keys`; its arguments follow with
    /// [`arg`](Self::arg).
    pub(crate) fn new(script: &Lua, keys: &[&str]) -> Self {
        // Sized once for what a lock operation sends (a few keys, tokens and
        // numbers), so that writing it does not grow the buffers step by step.
        let mut cmd = Cmd::with_capacity(16, 256);
        cmd.arg("EVALSHA").arg(&script.hash).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        Self { cmd }
    }

    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub(crate) fn query<T: FromRedisValue>(
        &self,
        con: &mut dyn ConnectionLike,
        loads: &Loads,
    ) -> RedisResult<T> {
        let seen = loads.seen();
        match self.cmd.query(con) {
            Err(e) if is_noscript(&e) => {
                loads.load(seen, con)?;
                self.cmd.query(con)
            }
            out => out,
        }
    }

    pub(crate) async fn query_async<T: FromRedisValue>(
        &self,
        con: &mut MultiplexedConnection,
        loads: &Loads,
    ) -> RedisResult<T> {
        let seen = loads.seen();
        match self.cmd.query_async(con).await {
            Err(e) if is_noscript(&e) => {
                loads.load_async(seen, con).await?;
                self.cmd.query_async(con).await
            }
            out => out,
        }
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Barging acquisition. `KEYS`: lock, fence counter. `ARGV`: token, lease ms,
/// steal age ms (0: never), `1` if the caller will wait for a wake-up, the
/// meta suffix (`#<n>` or empty).
/// Returns `{1, fence}` when taken, `{0, ms}` when busy, `ms` being when
/// it may be taken next: its lease's end, or when it turns stale. Running it twice
/// with one token grants twice, so a request whose reply was lost can be
/// retried safely.
pub(crate) static ACQUIRE: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local token, lease = ARGV[1], ARGV[2]
if redis.call('SET', KEYS[1], token .. lease .. ARGV[5], 'NX', 'PX', lease) then
  return {1, redis.call('INCR', KEYS[2])}
end
local held = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
if owner(held) == token or stale(held, pttl, tonumber(ARGV[3])) then
  local flag = waiting(held) and '*' or ''
  redis.call('SET', KEYS[1], token .. lease .. ARGV[5] .. flag, 'PX', lease)
  return {1, redis.call('INCR', KEYS[2])}
end
if ARGV[4] == '1' and not waiting(held) then
  redis.call('APPEND', KEYS[1], '*')
end
return {0, retry_in(held, pttl, tonumber(ARGV[3]))}
"#,
    )
});

/// Acquisition in line. `KEYS`: lock, fence counter, line, liveness set.
/// `ARGV`: token, lease ms, steal age ms, meta suffix, and `1` to join only
/// if the lock's holder is another process's. A line entry is the token, the lease and the meta suffix,
/// so a lock a release hands to the line's head keeps its holder's label.
/// Takes the lock if it is ours (granted while the message was on its way,
/// or a retry), stale, or free with nobody ahead; else joins the line (or
/// refreshes its place) and returns `{0, pttl, fencing counter}`: a grant
/// message numbered no higher than that counter was sent before this look,
/// which found the lock not ours, so the waiter must not count on it.
/// With `ARGV[5]` = `1`, a lock held in the caller's own process (its
/// token's head is the caller's) is only marked as waited for, and the
/// reply is `{0, ms}` as from [`ACQUIRE`]: that holder's release hands the
/// lock to the process's waiter itself, with no line in Redis.
pub(crate) static ACQUIRE_FAIR: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local token, lease = ARGV[1], ARGV[2]
local entry = token .. lease .. ARGV[4]
local held = redis.call('GET', KEYS[1])
local pttl = -2
local take, head, now
if held then
  pttl = redis.call('PTTL', KEYS[1])
  take = owner(held) == token or stale(held, pttl, tonumber(ARGV[3]))
  if not take and ARGV[5] == '1' and string.sub(held, 1, 11) == string.sub(token, 1, 11)
    and not redis.call('ZSCORE', KEYS[4], entry) then
    if not waiting(held) then redis.call('APPEND', KEYS[1], '*') end
    return {0, retry_in(held, pttl, tonumber(ARGV[3]))}
  end
else
  -- Only a free lock needs the line's head (a held one's release prunes
  -- the dead and finds it).
  head, now = head_of_line(KEYS[3], KEYS[4])
  take = head == nil or head == entry
end
if take then
  if redis.call('ZREM', KEYS[4], entry) == 1 then
    redis.call('LREM', KEYS[3], 1, entry)
  end
  -- Keep waking whoever waits: the line, or barging waiters that marked it.
  local more = (held and waiting(held)) or redis.call('LLEN', KEYS[3]) > 0
  redis.call('SET', KEYS[1], token .. lease .. ARGV[4] .. (more and '*' or ''), 'PX', lease)
  return {1, redis.call('INCR', KEYS[2])}
end
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)
end
if redis.call('ZADD', KEYS[4], now + TTL, entry) == 1 then
  redis.call('RPUSH', KEYS[3], entry)
end
redis.call('PEXPIRE', KEYS[3], 2 * TTL)
redis.call('PEXPIRE', KEYS[4], 2 * TTL)
local function fence_now() return tonumber(redis.call('GET', KEYS[2]) or '0') end
if held then
  if not waiting(held) then redis.call('APPEND', KEYS[1], '*') end
  return {0, retry_in(held, pttl, tonumber(ARGV[3])), fence_now()}
end
-- Free, with somebody else at the head: hand it to them.
pass_on(KEYS[1], KEYS[3], KEYS[4], KEYS[2], true)
return {0, redis.call('PTTL', KEYS[1]), fence_now()}
"#,
    )
});

/// `KEYS`: lock, line, liveness set, fence counter. `ARGV`: token. Frees
/// the lock if the token owns it (handing it to the line when someone
/// waits; the wake-up goes out on the lock's own name); returns 1 if it
/// did, else 0. A lock nobody waits for is deleted before the helpers are
/// even defined: that common case pays for none of their closures.
pub(crate) static RELEASE: Lazy<Lua> = Lazy::new(|| {
    script_after(
        r#"
local held = redis.call('GET', KEYS[1])
if not held or string.sub(held, 1, 22) ~= ARGV[1] then return 0 end
if not string.find(held, '*', 23, true) then
  redis.call('DEL', KEYS[1])
  return 1
end
"#,
        r#"
pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], false)
return 1
"#,
    )
});

/// [`RELEASE`] with a successor waiting in the releaser's process: the lock
/// goes straight to the successor, with its lease (at most the waiter TTL,
/// which the successor tops up) and its meta suffix, keeping the waiting
/// mark; unless Redis keeps a line for the lock whose live head is someone
/// else, who gets it as from [`RELEASE`]. `KEYS` as for [`RELEASE`];
/// `ARGV`: token, the successor's token, the lease it asked for, its meta
/// suffix. Returns `{0, 0}` if the token did not own the lock, `{1, 0}` if
/// it was freed or handed to the line's head, `{1, fence}` if the successor
/// has it.
pub(crate) static RELEASE_TO: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local held = redis.call('GET', KEYS[1])
if not held or owner(held) ~= ARGV[1] then return {0, 0} end
if waiting(held) and redis.call('EXISTS', KEYS[2]) == 1 then
  local head = head_of_line(KEYS[2], KEYS[3])
  if head and head ~= ARGV[2] .. ARGV[3] .. ARGV[4] then
    pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], false)
    return {1, 0}
  end
  if head then
    redis.call('LPOP', KEYS[2])
    redis.call('ZREM', KEYS[3], head)
  end
end
local lease = math.min(tonumber(ARGV[3]), TTL)
redis.call('SET', KEYS[1], ARGV[2] .. lease .. ARGV[4] .. (waiting(held) and '*' or ''), 'PX', lease)
return {1, redis.call('INCR', KEYS[4])}
"#,
    )
});

/// `KEYS`: lock, line, liveness set, fence counter. `ARGV`: token, the
/// lease the waiter asked for and its meta suffix (the rest of its entry).
/// A waiter gives up its place in line, and passes on a grant it never took
/// up.
pub(crate) static LEAVE: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local entry = ARGV[1] .. ARGV[2]
if redis.call('ZREM', KEYS[3], entry) == 1 then
  redis.call('LREM', KEYS[2], 1, entry)
end
local held = redis.call('GET', KEYS[1])
if held and owner(held) == ARGV[1] then
  pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], waiting(held))
end
return 1
"#,
    )
});

/// `KEYS[1]` lock; `ARGV`: token, lease ms. Renews the lease if the token
/// owns the lock, keeping its age; returns 1 if it did, else 0.
pub(crate) static EXTEND: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local held = redis.call('GET', KEYS[1])
if not held or owner(held) ~= ARGV[1] then return 0 end
local pttl = redis.call('PTTL', KEYS[1])
local age = (span(held) or 0) - math.max(pttl, 0)
local rest = string.match(held, '^%d*(.*)$', 23) or ''
redis.call('SET', KEYS[1], ARGV[1] .. (math.max(age, 0) + tonumber(ARGV[2])) .. rest, 'PX', ARGV[2])
return 1
"#,
    )
});

/// Reads, for the admin API, each lock of `KEYS` with its holder's process
/// record. `ARGV[1]`: the records' prefix (`<books>proc:`). Returns per key
/// `{value, pttl, host, pid, label, function}`, `value` nil for a key that
/// is gone or not a lock.
pub(crate) static INSPECT: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local out = {}
for i, k in ipairs(KEYS) do
  local v = false
  if redis.call('TYPE', k)['ok'] == 'string' then v = redis.call('GET', k) end
  if v and string.len(v) > 22 then
    local pttl = redis.call('PTTL', k)
    local host, pid, label, fn = record(ARGV[1], v)
    out[i] = {v, pttl, host, pid, label, fn}
  else
    out[i] = {false, -2, false, false, false, false}
  end
end
return out
"#,
    )
});

/// Frees a lock whoever holds it, as a release does (handing it to the
/// line, publishing the wake-up; the fencing counter goes on), and records
/// it in the capped audit list. `KEYS`: lock, line, liveness set, fence
/// counter, audit list. `ARGV`: the entry's head (fields joined by NUL),
/// the audit list's length, the records' prefix. Returns the entry as recorded: its head, then `1` and the holder
/// removed (host, pid, label, function, age ms, PTTL, token), or `0`.
pub(crate) static FORCE: Lazy<Lua> = Lazy::new(|| {
    script(
        r#"
local held = false
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then held = redis.call('GET', KEYS[1]) end
local tail = '0'
if held and string.len(held) > 22 then
  local pttl = redis.call('PTTL', KEYS[1])
  local host, pid, label, fn = record(ARGV[3], held)
  local age = (span(held) or 0) - math.max(pttl, 0)
  tail = table.concat({'1', host or '', pid or '', label or '', fn or '',
    tostring(math.max(age, 0)), tostring(pttl), owner(held)}, '\0')
  pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], waiting(held))
end
local entry = ARGV[1] .. '\0' .. tail
redis.call('LPUSH', KEYS[5], entry)
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[2]) - 1)
return entry
"#,
    )
});

/// `KEYS[1]` fence counter; `ARGV[1]` a fencing token. Raises the counter to
/// the token if it is lower (the quorum store's nodes, after a grant).
pub(crate) static RAISE_FENCE: Lazy<Lua> = Lazy::new(|| {
    Lua::new(
        r#"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#
        .to_owned(),
    )
});
