"""The Lua scripts of :class:`aios_mesh_redis.RedisQuota`: one per operation, each atomic.

Keys (all of one tenant share the hash tag ``{tenant}``, so a Redis Cluster keeps them in one
slot and every script touches one slot only)::

    KEYS[1]  <prefix>:{tenant}:limits   hash  scope -> "calls,tokens,gpu_ns,cost_nano,rate,burst"
    KEYS[2]  <prefix>:{tenant}:usage    hash  metric..scope -> drawn (integer units)
    KEYS[3]  <prefix>:{tenant}:res      hash  reservation id -> "state|c|t|g|m|capability"
    KEYS[4]  <prefix>:{tenant}:exp      zset  reservation id -> deadline (server ms)
    KEYS[5]  <prefix>:{tenant}:buckets  hash  "n"..scope -> tokens, "w"..scope -> refill time

``scope`` is ``*`` (tenant-wide) or ``c|<capability>``; metrics are ``c`` (calls), ``t``
(tokens), ``g`` (GPU nanoseconds) and ``m`` (money in nano-units). A reservation is ``o``
(outstanding) or ``x`` (expired: its estimate was given back; a late settle still charges
the actual). Counter arithmetic goes through ``HINCRBY`` with the decimal strings the
client sent, so it is exact in int64; comparisons use Lua doubles (exact below 2**53).
Time comes from the server (``TIME``), so clients with skewed clocks share one bucket.
"""

from __future__ import annotations

from typing import Final

__all__ = ["REFUND", "RESERVE", "SETTLE", "USED"]

_PRELUDE: Final = r"""
local M = {'c', 't', 'g', 'm'}

local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s + us / 1000000
end

local function parse_res(v)
  return string.match(v, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
end

-- add (sign '') or take back (sign '-') the amounts, tenant-wide and for the capability
local function draw(usage, cap, amounts, sign)
  for i = 1, 4 do
    local a = amounts[i]
    if a ~= '0' then
      redis.call('HINCRBY', usage, M[i] .. '*', sign .. a)
      redis.call('HINCRBY', usage, M[i] .. 'c|' .. cap, sign .. a)
    end
  end
end

-- give back the estimates of reservations whose deadline passed; forget old tombstones
local function reclaim(now, keep_ms)
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  for _, rid in ipairs(due) do
    local v = redis.call('HGET', KEYS[3], rid)
    local st, c, t, g, m, cap
    if v then st, c, t, g, m, cap = parse_res(v) end
    if st == 'o' then
      draw(KEYS[2], cap, {c, t, g, m}, '-')
      redis.call('HSET', KEYS[3], rid, 'x|' .. c .. '|' .. t .. '|' .. g .. '|' .. m .. '|' .. cap)
      redis.call('ZADD', KEYS[4], now + keep_ms, rid)
    else
      redis.call('HDEL', KEYS[3], rid)
      redis.call('ZREM', KEYS[4], rid)
    end
  end
end

local function fields(s)
  local out = {}
  for v in string.gmatch(s .. ',', '([^,]*),') do out[#out + 1] = v end
  return out
end
"""

RESERVE: Final = _PRELUDE + r"""
-- ARGV: capability, c, t, g, m, reservation id, ttl_ms, keep_ms, default tenant limits
local cap = ARGV[1]
local est = {ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
local now, now_s = clock()
reclaim(now, tonumber(ARGV[8]))

local raw = redis.call('HMGET', KEYS[1], '*', 'c|' .. cap)
local tl = raw[1]
if not tl then tl = ARGV[9] end
local scopes = {}
if tl and tl ~= '' then scopes[#scopes + 1] = {'*', fields(tl)} end
if raw[2] and raw[2] ~= '' then scopes[#scopes + 1] = {'c|' .. cap, fields(raw[2])} end

-- budgets first (tenant-wide, then the capability's)
for _, sc in ipairs(scopes) do
  local scope, lim = sc[1], sc[2]
  for i = 1, 4 do
    if lim[i] ~= '' then
      local drawn = tonumber(redis.call('HGET', KEYS[2], M[i] .. scope) or '0')
      if drawn + tonumber(est[i]) > tonumber(lim[i]) then
        return {'limit', scope, tostring(i), lim[i], string.format('%d', drawn)}
      end
    end
  end
end

-- then the token buckets; tokens are taken only when every check passed
local need = tonumber(est[1])
local takes = {}
if need > 0 then
  for _, sc in ipairs(scopes) do
    local scope, lim = sc[1], sc[2]
    if lim[5] ~= '' then
      local rate, burst = tonumber(lim[5]), tonumber(lim[6])
      local b = redis.call('HMGET', KEYS[5], 'n' .. scope, 'w' .. scope)
      local tokens = burst
      if b[1] and b[2] then
        tokens = math.min(burst, tonumber(b[1]) + math.max(0, now_s - tonumber(b[2])) * rate)
      end
      if tokens < need then
        return {'rate', scope, string.format('%.17g', tokens), lim[5], lim[6]}
      end
      takes[#takes + 1] = {scope, tokens - need}
    end
  end
end
for _, tk in ipairs(takes) do
  redis.call('HSET', KEYS[5], 'n' .. tk[1], string.format('%.17g', tk[2]),
             'w' .. tk[1], string.format('%.17g', now_s))
end

draw(KEYS[2], cap, est, '')
redis.call('HSET', KEYS[3], ARGV[6],
           'o|' .. est[1] .. '|' .. est[2] .. '|' .. est[3] .. '|' .. est[4] .. '|' .. cap)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), ARGV[6])
return {'ok'}
"""

SETTLE: Final = _PRELUDE + r"""
-- ARGV: reservation id, c, t, g, m (actual), keep_ms
local now = clock()
reclaim(now, tonumber(ARGV[6]))
local v = redis.call('HGET', KEYS[3], ARGV[1])
if not v then return 0 end
local st, c, t, g, m, cap = parse_res(v)
if st == 'o' then draw(KEYS[2], cap, {c, t, g, m}, '-') end
draw(KEYS[2], cap, {ARGV[2], ARGV[3], ARGV[4], ARGV[5]}, '')
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

REFUND: Final = _PRELUDE + r"""
-- ARGV: reservation id, keep_ms
local now = clock()
reclaim(now, tonumber(ARGV[2]))
local v = redis.call('HGET', KEYS[3], ARGV[1])
if not v then return 0 end
local st, c, t, g, m, cap = parse_res(v)
if st == 'o' then draw(KEYS[2], cap, {c, t, g, m}, '-') end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

USED: Final = _PRELUDE + r"""
-- ARGV: scope, keep_ms
local now = clock()
reclaim(now, tonumber(ARGV[2]))
local s = ARGV[1]
local v = redis.call('HMGET', KEYS[2], 'c' .. s, 't' .. s, 'g' .. s, 'm' .. s)
for i = 1, 4 do if not v[i] then v[i] = '0' end end
return v
"""
