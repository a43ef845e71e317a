//! The Lua scripts that make every lock operation one atomic step on the
//! server. Keys and tokens travel as `KEYS`/`ARGV`, never in the script text;
//! the scripts are called by hash and reloaded after `NOSCRIPT`.
//!
//! A lock's value is its owner's 22-character token, then the server time in
//! milliseconds when it was taken (for `steal_after`), then an optional `*`
//! that marks "someone is waiting": only then does a release publish a
//! wake-up, so an uncontended release costs no `PUBLISH`.

use once_cell::sync::Lazy;
use redis::Script;

/// `KEYS[1]` lock, `KEYS[2]` fence counter; `ARGV[1]` token, `ARGV[2]` lease
/// ms, `ARGV[3]` steal age ms (0: never), `ARGV[4]` `1` if the caller will
/// wait for a wake-up. Returns `{1, fence}` when taken, `{0, pttl}` when busy.
/// Running it twice with one token grants twice, so a request whose reply was
/// lost can be retried safely.
pub(crate) static ACQUIRE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local value = ARGV[1] .. now
if redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 22) == ARGV[1] then
  -- A retry of a request whose reply was lost: it is ours already.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('INCR', KEYS[2])}
end
local steal = tonumber(ARGV[3])
if steal > 0 and held then
  local since = tonumber(string.sub(held, 23, 35))
  if since == nil or now - since >= steal then
    redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
    return {1, redis.call('INCR', KEYS[2])}
  end
end
if ARGV[4] == '1' and held and string.sub(held, -1) ~= '*' then
  redis.call('APPEND', KEYS[1], '*')
end
return {0, redis.call('PTTL', KEYS[1])}
"#,
    )
});

/// `KEYS[1]` lock; `ARGV[1]` token, `ARGV[2]` wake-up channel. Deletes the
/// lock if the token owns it; returns 1 if it did, else 0.
pub(crate) static RELEASE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 22) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if string.sub(held, -1) == '*' then
    redis.call('PUBLISH', ARGV[2], '')
  end
  return 1
end
return 0
"#,
    )
});

/// `KEYS[1]` lock; `ARGV[1]` token, `ARGV[2]` lease ms. Renews the lease if
/// the token owns the lock; returns 1 if it did, else 0.
pub(crate) static EXTEND: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 22) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});
