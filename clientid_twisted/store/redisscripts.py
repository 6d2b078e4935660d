# -*- test-case-name: tests.test_store_redis -*-
"""
The Redis store's Lua scripts: each store call is one script, run
atomically by Redis in one round trip, so frontends updating the same
counters at once cannot interleave.

Every script takes no C{KEYS} (the keys are built from the prefix, so this
store does not run on Redis Cluster: docs/frontends.md says what it
would need) and starts with the same C{ARGV}:

    1. the key prefix;
    2. the time, or an empty string to use Redis's own clock (C{TIME}), so
       that every frontend and the admin command agree on windows;
    3. how many events to keep in the global list;
    4. how many to keep per account;
    5. seconds an account's event list outlives its last event.

The key layout (C{P} is the prefix, C{clientid:} by default):

    - C{P identity-key}: string, the token-hashing key (hex);
    - C{P devices:ACCOUNT}: hash, digest to the device record (JSON);
    - C{P approved:ACCOUNT}: set of the account's approved digests;
    - C{P n:COUNTER}: hash C{c} (count), C{e} (window end);
    - C{P set:KEY}: hash C{e} (window end), C{n} (size), C{m:MEMBER};
    - C{P lock:KEY}: string, the lock's end (C{inf}: until cleared);
    - C{P events}, C{P events:ACCOUNT}: lists, newest first, of
      C{"TIME JSON"} entries.

The scripts a decision runs (C{loadState}, C{recordOutcome}) answer with
one JSON array, built around the stored device record (already JSON),
so that the client decodes the whole answer in one C{json} call rather
than parsing a RESP array and then the record; they read with as few
C{redis.call}s as they can (the locks in one C{MGET}, a set's window,
size and membership in one C{HMGET}).

Counters, sets and locks carry a Redis TTL that ends with their window
(C{PEXPIRE}), so Redis forgets them by itself: nothing sweeps.  Their end
is also stored in the value and compared with the time passed in, which is
what tests on a simulated clock rely on.
"""

from __future__ import annotations

import hashlib

from attrs import frozen

__all__ = ["Script", "SCRIPTS"]


@frozen
class Script:
    """
    @ivar writes: Whether it may write something an admin write must not
        lose (after it, the admin command waits for the replicas:
        L{clientid_twisted.store.redis}).  Not C{identityKey}: its write
        is a C{SET NX} of the key every frontend holds and puts back into
        a Redis that lost it.
    """

    name: str
    source: bytes
    sha: bytes
    writes: bool = True


_COMMON = r"""
if redis.replicate_commands then redis.replicate_commands() end
local P = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local MAXEVENTS = tonumber(ARGV[3])
local ACCOUNTEVENTS = tonumber(ARGV[4])
local RETENTION = tonumber(ARGV[5])

local function fmt(x)
  if x == math.huge then return 'inf' end
  return string.format('%.17g', x)
end

local function num(s)
  if s == 'inf' then return math.huge end
  return tonumber(s)
end

local function expireAt(key, ends)
  if ends == math.huge then
    redis.call('PERSIST', key)
  else
    redis.call('PEXPIRE', key, math.max(1, math.ceil((ends - now) * 1000)))
  end
end

local function record(json, account)
  local entry = fmt(now) .. ' ' .. json
  redis.call('LPUSH', P .. 'events', entry)
  redis.call('LTRIM', P .. 'events', 0, MAXEVENTS - 1)
  if account and account ~= '' then
    local k = P .. 'events:' .. account
    redis.call('LPUSH', k, entry)
    redis.call('LTRIM', k, 0, ACCOUNTEVENTS - 1)
    redis.call('EXPIRE', k, RETENTION)
  end
end

local function liveLock(key)
  local v = redis.call('GET', P .. 'lock:' .. key)
  if v then
    local ends = num(v)
    if ends and ends > now then return ends end
  end
  return nil
end

local function setLock(key, ends)
  local k = P .. 'lock:' .. key
  redis.call('SET', k, fmt(ends))
  expireAt(k, ends)
end

-- Set or extend a lock; whether it was not live before.
local function lock(key, seconds)
  local current = liveLock(key)
  local ends = now + seconds
  if current then
    if ends > current then setLock(key, ends) end
    return false
  end
  setLock(key, ends)
  return true
end

-- A JSON array of strings (lock keys, digests...): cjson escapes each.
local function jsonStrings(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = cjson.encode(v) end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function setApproved(account, digest, state)
  if state == 'approved' then
    redis.call('SADD', P .. 'approved:' .. account, digest)
  else
    redis.call('SREM', P .. 'approved:' .. account, digest)
  end
end
"""

_IDENTITY_KEY = r"""
redis.call('SET', P .. 'identity-key', ARGV[6], 'NX')
return redis.call('GET', P .. 'identity-key')
"""

_LOAD_STATE = r"""
local account, digest, setKey, member = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local device = false
local approved = 0
if account ~= '' then
  if digest ~= '' then
    device = redis.call('HGET', P .. 'devices:' .. account, digest)
  end
  approved = redis.call('SCARD', P .. 'approved:' .. account)
end
-- The locks in one MGET, not a GET each (as liveLock would); in parts
-- of 1000, within what unpack may put on Lua's stack.
local locks = {}
if #ARGV >= 10 then
  local names = {}
  for i = 10, #ARGV do names[#names + 1] = P .. 'lock:' .. ARGV[i] end
  local values = {}
  for first = 1, #names, 1000 do
    local part = redis.call('MGET', unpack(names, first, math.min(first + 999, #names)))
    for j = 1, #part do values[first + j - 1] = part[j] end
  end
  for i = 10, #ARGV do
    local v = values[i - 9]
    if v then
      local ends = num(v)
      if ends and ends > now then
        locks[#locks + 1] = ARGV[i]
        locks[#locks + 1] = fmt(ends)
      end
    end
  end
end
-- Window end, size and membership in one HMGET.
local size, has = 0, 0
if setKey ~= '' then
  local v = redis.call('HMGET', P .. 'set:' .. setKey, 'e', 'n', 'm:' .. member)
  local ends = num(v[1] or '')
  if ends and ends > now then
    size = tonumber(v[2]) or 0
    if v[3] then has = 1 end
  end
end
-- One JSON array, decoded by the client in one call: the device record
-- as stored (JSON already) or null, the approved-device count, the live
-- locks (key, end, key, end...), the set's size, whether it holds the
-- member (0 or 1), the time.
return '[' .. (device or 'null') .. ',' .. approved .. ',' .. jsonStrings(locks) .. ','
  .. size .. ',' .. has .. ',"' .. fmt(now) .. '"]'
"""

_RECORD_OUTCOME = r"""
-- ARGV[6]: the record (JSON); its events are numbers i, whose JSON and
-- account are ARGV[7 + 2 i] and ARGV[8 + 2 i].
local r = cjson.decode(ARGV[6])
local recorded = {}
local locked = {}
local device = false

local function event(i)
  if i then
    record(ARGV[7 + 2 * i], ARGV[8 + 2 * i])
    recorded[#recorded + 1] = i
  end
end

local u = r.d
if u then
  local k = P .. 'devices:' .. u.a
  local raw = redis.call('HGET', k, u.g)
  local dev, changed
  if not raw then
    if u.c then
      dev = {t = u.t, f = u.f, s = u.c, fs = fmt(now), ls = fmt(now), la = u.ad, lp = u.p,
             n = u.ok and 1 or 0, x = u.ok and 0 or 1}
      changed = true
    end
  else
    dev = cjson.decode(raw)
    changed = false
    if u.pr then
      for _, s in ipairs(u.pf or {}) do
        if s == dev.s then changed = true end
      end
    end
    if changed then dev.s = u.pr end
    if not dev.fs then dev.fs = fmt(now) end
    dev.ls = fmt(now)
    dev.la = u.ad
    dev.lp = u.p
    if u.ok then dev.n = dev.n + 1 else dev.x = dev.x + 1 end
  end
  if dev then
    device = cjson.encode(dev)
    redis.call('HSET', k, u.g, device)
    setApproved(u.a, u.g, dev.s)
    if changed then event(u.ev) end
  end
end

for _, op in ipairs(r.o or {}) do
  if op.k == 'b' then
    local k = P .. 'n:' .. op.c
    local v = redis.call('HMGET', k, 'c', 'e')
    local count, ends = tonumber(v[1] or ''), num(v[2] or '')
    if not count or not ends or ends <= now then
      count, ends = 0, now + op.w
    end
    count = count + 1
    redis.call('HSET', k, 'c', count, 'e', fmt(ends))
    expireAt(k, ends)
    if op.l > 0 and count >= op.l and op.lk then
      if lock(op.lk, op.ls) then
        locked[#locked + 1] = op.lk
        event(op.ev)
      end
    end
  elseif op.k == 'r' then
    redis.call('DEL', P .. 'n:' .. op.c)
  elseif op.k == 'm' then
    local k = P .. 'set:' .. op.s
    local v = redis.call('HMGET', k, 'e', 'n', 'm:' .. op.m)
    local ends, size = num(v[1] or ''), tonumber(v[2] or '')
    local known = false
    if not ends or not size or ends <= now then
      redis.call('DEL', k)
      ends, size = now + op.w, 0
    else
      known = v[3] ~= false
    end
    if not known then
      if op.l <= 0 or size <= op.l then
        redis.call('HSET', k, 'm:' .. op.m, '1')
        size = size + 1
      end
      redis.call('HSET', k, 'e', fmt(ends), 'n', size)
      expireAt(k, ends)
      if op.l > 0 and size > op.l and op.lk then
        if lock(op.lk, op.ls) then
          locked[#locked + 1] = op.lk
          event(op.ev)
        end
      end
    end
  elseif op.k == 'o' then
    if not liveLock(op.mk) then
      setLock(op.mk, now + op.s)
      event(op.ev)
    end
  end
end

for _, ev in ipairs(r.e or {}) do event(ev) end
-- One JSON array: the device record (or null), the time, the locks newly
-- set, the numbers of the events recorded.
return '[' .. (device or 'null') .. ',"' .. fmt(now) .. '",' .. jsonStrings(locked) .. ',['
  .. table.concat(recorded, ',') .. ']]'
"""

_SET_DEVICE_STATE = r"""
local account, digest, state = ARGV[6], ARGV[7], ARGV[10]
local k = P .. 'devices:' .. account
local raw = redis.call('HGET', k, digest)
local dev
if raw then
  dev = cjson.decode(raw)
  dev.s = state
else
  dev = {t = ARGV[8], f = ARGV[9], s = state, n = 0, x = 0}
end
local encoded = cjson.encode(dev)
redis.call('HSET', k, digest, encoded)
setApproved(account, digest, state)
if ARGV[11] ~= '' then record(ARGV[11], ARGV[12]) end
return encoded
"""

_SET_LOCK = r"""
local ends = math.huge
if ARGV[7] ~= '' then ends = now + tonumber(ARGV[7]) end
setLock(ARGV[6], ends)
if ARGV[8] ~= '' then record(ARGV[8], ARGV[9]) end
return fmt(ends)
"""

_CLEAR_KEYS = r"""
for i = 8, #ARGV do
  redis.call('DEL', P .. 'lock:' .. ARGV[i], P .. 'n:' .. ARGV[i], P .. 'set:' .. ARGV[i])
end
if ARGV[6] ~= '' then record(ARGV[6], ARGV[7]) end
return 1
"""

_FORGET_DEVICES = r"""
redis.call('DEL', P .. 'devices:' .. ARGV[8])
if ARGV[6] ~= '' then record(ARGV[6], ARGV[7]) end
return 1
"""

_ACTIVE_LOCKS = r"""
local locks = {}
for i = 6, #ARGV do
  local ends = liveLock(ARGV[i])
  if ends then
    locks[#locks + 1] = ARGV[i]
    locks[#locks + 1] = fmt(ends)
  end
end
return locks
"""


def _script(name: str, body: str, writes: bool = True) -> Script:
    source = (_COMMON + body).encode("utf-8")
    return Script(name, source, hashlib.sha1(source).hexdigest().encode("ascii"), writes)


SCRIPTS = {
    script.name: script
    for script in (
        _script("identityKey", _IDENTITY_KEY, writes=False),
        _script("loadState", _LOAD_STATE, writes=False),
        _script("recordOutcome", _RECORD_OUTCOME),
        _script("setDeviceState", _SET_DEVICE_STATE),
        _script("setLock", _SET_LOCK),
        _script("clearKeys", _CLEAR_KEYS),
        _script("forgetDevices", _FORGET_DEVICES),
        _script("activeLocks", _ACTIVE_LOCKS, writes=False),
    )
}
"""Every script by name."""
