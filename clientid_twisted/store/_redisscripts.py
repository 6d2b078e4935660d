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
    - C{P devices:ACCOUNT}: hash, digest to the device record (JSON:
      C{t} type, C{f} fingerprint, C{s} state, C{fs}/C{ls} first/last seen,
      C{la}/C{lp} last address/protocol, C{n} logins, C{x} failures, C{nm}
      the owner's name for it, absent when unnamed);
    - C{P approved:ACCOUNT}: set of the account's approved digests;
    - C{P n:COUNTER}: hash C{c} (count), C{e} (window end);
    - C{P set:KEY}: hash C{e} (window end), C{n} (size), C{m:MEMBER};
    - C{P lock:KEY}: string, the lock's end (C{inf}: until cleared);
    - C{P events}, C{P events:ACCOUNT}: lists, newest first, of
      C{"TIME JSON"} entries.

The scripts a decision runs (C{loadState}, C{recordOutcome}) take their
arguments flat and answer with a flat array (the device record's fields
decoded from its JSON inside Redis), so that a login costs no JSON work
in Python: the reply is read by hiredis's C parser into strings and
numbers; they read with as few C{redis.call}s as they can (the locks in
one C{MGET}, a set's window, size and membership in one C{HMGET}).

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
        L{clientid_twisted.store._redis}).  Not C{identityKey}: its write
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

-- A stored device record (decoded) as the fields the client reads, after
-- those already in OUT: type, fingerprint, state, first seen, last seen,
-- last address, last protocol, logins, failures, name; each a string (the
-- counts: an integer reply, which the client needs not convert), or
-- false (a nil reply) for one the record lacks (records stored before
-- names existed have no nm).
local function opt(v)
  if v == nil or v == cjson.null then return false end
  if type(v) == 'number' then return fmt(v) end
  return v
end

local function count(v)
  v = tonumber(v)
  if v == nil then return false end
  return math.floor(v)
end

local function deviceFields(dev, out)
  local n = #out
  out[n + 1] = opt(dev.t)
  out[n + 2] = opt(dev.f)
  out[n + 3] = opt(dev.s)
  out[n + 4] = opt(dev.fs)
  out[n + 5] = opt(dev.ls)
  out[n + 6] = opt(dev.la)
  out[n + 7] = opt(dev.lp)
  out[n + 8] = count(dev.n)
  out[n + 9] = count(dev.x)
  out[n + 10] = opt(dev.nm)
  return out
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
local account, digest, setKey, member, counter = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
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
if #ARGV >= 11 then
  local names = {}
  for i = 11, #ARGV do names[#names + 1] = P .. 'lock:' .. ARGV[i] end
  local values = {}
  for first = 1, #names, 1000 do
    local part = redis.call('MGET', unpack(names, first, math.min(first + 999, #names)))
    for j = 1, #part do values[first + j - 1] = part[j] end
  end
  for i = 11, #ARGV do
    local v = values[i - 10]
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
-- The counter's live count (what a Bump would count on from).
local count = 0
if counter ~= '' then
  local v = redis.call('HMGET', P .. 'n:' .. counter, 'c', 'e')
  local ends = num(v[2] or '')
  if ends and ends > now then count = tonumber(v[1]) or 0 end
end
-- One array, which the client's C parser reads: the approved-device count,
-- the live locks (key, end, key, end...), the set's size, whether it holds
-- the member (0 or 1), the time, the counter's count; then the device's
-- fields, if it has one.
local reply = {approved, locks, size, has, fmt(now), count}
if device then deviceFields(cjson.decode(device), reply) end
return reply
"""

_RECORD_OUTCOME = r"""
-- The record, flat (no JSON to encode or decode on a login's path): first
-- the events it may record, then the device update, the operations and
-- the events to record whatever happens (see the store's _encodeRecord).
-- An optional value is '' for none, else '=' then the value.
local function value(s)
  if s == '' then return nil end
  return string.sub(s, 2)
end
local EVENTS = tonumber(ARGV[6])
local at = 6 + 7 * EVENTS
local function nxt()
  at = at + 1
  return ARGV[at]
end
-- A field that is absent when empty (a state, a lock, an event number).
local function maybe()
  local v = nxt()
  if v == '' then return nil end
  return v
end

local recorded = {}
local locked = {}
local device = false

-- Event i: kind, account, type, fingerprint, address, protocol, detail.
local function event(i)
  if i then
    i = tonumber(i)
    local base = 7 + 7 * i
    local fields = {ARGV[base]}
    for k = 1, 6 do
      local v = ARGV[base + k]
      if v == '' then fields[k + 1] = cjson.null else fields[k + 1] = string.sub(v, 2) end
    end
    record(cjson.encode(fields), value(ARGV[base + 1]))
    recorded[#recorded + 1] = i
  end
end

if nxt() == '1' then
  local a = nxt()
  local g = nxt()
  local t = nxt()
  local f = nxt()
  local ad = value(nxt())
  local p = value(nxt())
  local ok = nxt() == '1'
  local earlier = tonumber(nxt())
  local create = maybe()
  local promote = maybe()
  local ev = maybe()
  local promoteFrom = {}
  for j = 1, tonumber(nxt()) do promoteFrom[j] = nxt() end
  local k = P .. 'devices:' .. a
  local raw = redis.call('HGET', k, g)
  local dev, changed
  if not raw then
    if create then
      dev = {t = t, f = f, s = create, fs = fmt(now), ls = fmt(now), la = ad, lp = p,
             n = (ok and 1 or 0) + earlier, x = ok and 0 or 1}
      changed = true
    end
  else
    dev = cjson.decode(raw)
    changed = false
    if promote then
      for _, s in ipairs(promoteFrom) do
        if s == dev.s then changed = true end
      end
    end
    if changed then dev.s = promote end
    if not dev.fs then dev.fs = fmt(now) end
    dev.ls = fmt(now)
    dev.la = ad
    dev.lp = p
    if ok then dev.n = dev.n + 1 + earlier else dev.n = dev.n + earlier; dev.x = dev.x + 1 end
  end
  if dev then
    redis.call('HSET', k, g, cjson.encode(dev))
    setApproved(a, g, dev.s)
    device = dev
    if changed then event(ev) end
  end
end

for _ = 1, tonumber(nxt()) do
  local kind = nxt()
  if kind == 'b' then
    local counter = nxt()
    local window = tonumber(nxt())
    local limit = tonumber(nxt())
    local lk = maybe()
    local ls = tonumber(nxt())
    local ev = maybe()
    local k = P .. 'n:' .. counter
    local v = redis.call('HMGET', k, 'c', 'e')
    local count, ends = tonumber(v[1] or ''), num(v[2] or '')
    if not count or not ends or ends <= now then
      count, ends = 0, now + window
    end
    count = count + 1
    redis.call('HSET', k, 'c', count, 'e', fmt(ends))
    expireAt(k, ends)
    if limit > 0 and count >= limit and lk then
      if lock(lk, ls) then
        locked[#locked + 1] = lk
        event(ev)
      end
    end
  elseif kind == 'r' then
    redis.call('DEL', P .. 'n:' .. nxt())
  elseif kind == 'm' then
    local key = nxt()
    local member = nxt()
    local window = tonumber(nxt())
    local limit = tonumber(nxt())
    local lk = maybe()
    local ls = tonumber(nxt())
    local ev = maybe()
    local k = P .. 'set:' .. key
    local v = redis.call('HMGET', k, 'e', 'n', 'm:' .. member)
    local ends, size = num(v[1] or ''), tonumber(v[2] or '')
    local known = false
    if not ends or not size or ends <= now then
      redis.call('DEL', k)
      ends, size = now + window, 0
    else
      known = v[3] ~= false
    end
    if not known then
      if limit <= 0 or size <= limit then
        redis.call('HSET', k, 'm:' .. member, '1')
        size = size + 1
      end
      redis.call('HSET', k, 'e', fmt(ends), 'n', size)
      expireAt(k, ends)
      if limit > 0 and size > limit and lk then
        if lock(lk, ls) then
          locked[#locked + 1] = lk
          event(ev)
        end
      end
    end
  elseif kind == 'o' then
    local marker = nxt()
    local seconds = tonumber(nxt())
    local ev = maybe()
    if not liveLock(marker) then
      setLock(marker, now + seconds)
      event(ev)
    end
  end
end

for _ = 1, tonumber(nxt()) do event(nxt()) end
-- One array, which the client's C parser reads: the time, the locks newly
-- set, the numbers of the events recorded; then the device's fields, if
-- there is a device.
local reply = {fmt(now), locked, recorded}
if device then deviceFields(device, reply) end
return reply
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

_RENAME_DEVICE = r"""
-- ARGV[6..9]: account, digest, name ('' removes it), event JSON ('' none);
-- ARGV[10]: the event's account.  Answers the record written, or false
-- (nil) if there is no such device (then nothing is written).
local k = P .. 'devices:' .. ARGV[6]
local raw = redis.call('HGET', k, ARGV[7])
if not raw then return false end
local dev = cjson.decode(raw)
if ARGV[8] == '' then dev.nm = nil else dev.nm = ARGV[8] end
local encoded = cjson.encode(dev)
redis.call('HSET', k, ARGV[7], encoded)
if ARGV[9] ~= '' then record(ARGV[9], ARGV[10]) end
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

_KEEP_MESSAGE = r"""
-- ARGV[6..9]: account, message, limit, seconds.  One list per account,
-- each entry the message's expiry then a space then the message; the
-- list expires with its newest message.
local k = P .. 'messages:' .. ARGV[6]
local ends = now + tonumber(ARGV[9])
redis.call('RPUSH', k, fmt(ends) .. ' ' .. ARGV[7])
redis.call('LTRIM', k, -math.max(tonumber(ARGV[8]), 1), -1)
expireAt(k, ends)
return 1
"""

_TAKE_MESSAGES = r"""
-- ARGV[6]: account.  The list's live messages, oldest first, and the list
-- gone: in one script, so two frontends never both take one.
local k = P .. 'messages:' .. ARGV[6]
local entries = redis.call('LRANGE', k, 0, -1)
redis.call('DEL', k)
local live = {}
for _, entry in ipairs(entries) do
  local space = string.find(entry, ' ', 1, true)
  if space and num(string.sub(entry, 1, space - 1)) > now then
    live[#live + 1] = string.sub(entry, space + 1)
  end
end
return live
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
        _script("renameDevice", _RENAME_DEVICE),
        _script("setLock", _SET_LOCK),
        _script("clearKeys", _CLEAR_KEYS),
        _script("forgetDevices", _FORGET_DEVICES),
        _script("activeLocks", _ACTIVE_LOCKS, writes=False),
        _script("keepMessage", _KEEP_MESSAGE),
        _script("takeMessages", _TAKE_MESSAGES),
    )
}
"""Every script by name."""
