"""The Lua scripts of :class:`aios_mesh_redis.RedisQuota`: one per operation, each atomic.

Keys (all of one tenant share the hash tag ``{tenant}``, so a Redis Cluster keeps them in one
slot and every script touches one slot only)::

    KEYS[1]  <prefix>:{tenant}:limits   hash  scope -> limits, see below
    KEYS[2]  <prefix>:{tenant}:usage    hash  metric..scope -> drawn in total (integer units)
    KEYS[3]  <prefix>:{tenant}:res      hash  reservation id -> "state|c|t|g|m|minute|capability"
    KEYS[4]  <prefix>:{tenant}:exp      zset  reservation id -> deadline (server ms)
    KEYS[5]  <prefix>:{tenant}:buckets  hash  "n"..scope -> tokens, "w"..scope -> refill time
    KEYS[6]  <prefix>:{tenant}:w:       the stem of the window hashes
             <prefix>:{tenant}:w:<minute|hour|day|month>:<start>  hash  metric..scope -> drawn
             in that calendar window (UTC); expires a minute after the window ends

``scope`` is ``*`` (tenant-wide) or ``c|<capability>``; metrics are ``c`` (calls), ``t``
(tokens), ``g`` (GPU nanoseconds) and ``m`` (money in nano-units). Limits are 22 comma
separated fields, empty = unlimited: lifetime ``c,t,g,m``, ``rate,burst``, then ``c,t,g,m``
per minute, hour, day and month. A reservation is ``o`` (outstanding) or ``x`` (expired: its
estimate was given back; a late settle still charges the actual); ``minute`` is the start of
the minute it was admitted in, which names its hour, day and month too. A settle or refund
adjusts a window only while it is the current one.

Counter arithmetic goes through ``HINCRBY`` with the decimal strings the client sent, so it
is exact in int64; comparisons use Lua doubles (exact below 2**53). Reservation deadlines and
the token buckets use the server's clock (``TIME``), so clients with skewed clocks share one
bucket; the windows use the server's clock too unless the client passes its own time
(``wall``: empty = server).
"""

from __future__ import annotations

from typing import Final

__all__ = ["REFUND", "RESERVE", "RESET", "SETTLE", "STATUS", "USED", "WINDOWS_OF"]

_PRELUDE: Final = r"""
local M = {'c', 't', 'g', 'm'}
local WN = {'minute', 'hour', 'day', 'month'}

local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s + us / 1000000
end

-- the civil date of a day count since 1970-01-01 (H. Hinnant's civil_from_days)
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function month_days(y, m)
  if m == 2 then
    if (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 then return 29 end
    return 28
  end
  if m == 4 or m == 6 or m == 9 or m == 11 then return 30 end
  return 31
end

-- starts and ends (whole epoch seconds) of the minute, hour, day and month holding now_s
local function windows(now_s)
  local t = math.floor(now_s)
  local day = math.floor(t / 86400)
  local y, m, d = civil(day)
  local ms = (day - d + 1) * 86400
  local s = {t - t % 60, t - t % 3600, day * 86400, ms}
  return s, {s[1] + 60, s[2] + 3600, s[3] + 86400, ms + month_days(y, m) * 86400}
end

-- the clock of the windows: the client's (wall) or the server's
local function window_clock(wall, now_s)
  local wn = now_s
  if wall ~= '' then wn = tonumber(wall) end
  local s, e = windows(wn)
  return {now = wn, starts = s, ends = e}
end

local function wkey(w, start)
  return KEYS[6] .. WN[w] .. ':' .. string.format('%d', start)
end

local function num(n) return string.format('%d', n) end

local function parse_res(v)
  local st, c, t, g, m, ms, cap =
    string.match(v, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(%-?%d+)|(.*)$')
  if st then return st, c, t, g, m, tonumber(ms), cap end
  st, c, t, g, m, cap = string.match(v, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
  return st, c, t, g, m, nil, cap  -- written before windows existed
end

local function add(key, cap, amounts, sign)
  for i = 1, 4 do
    local a = amounts[i]
    if a ~= '0' then
      redis.call('HINCRBY', key, M[i] .. '*', sign .. a)
      redis.call('HINCRBY', key, M[i] .. 'c|' .. cap, sign .. a)
    end
  end
end

local function keep_window(key, w, wc)
  redis.call('PEXPIRE', key, math.max(1, math.floor((wc.ends[w] - wc.now + 60) * 1000)))
end

-- add (sign '') or take back (sign '-') the amounts, tenant-wide and for the capability:
-- in total, and in each window of the minute `ms` that is still current
local function draw(cap, amounts, sign, ms, wc)
  add(KEYS[2], cap, amounts, sign)
  if not ms then return end
  local rs = windows(ms)
  for w = 1, 4 do
    if rs[w] == wc.starts[w] then
      local key = wkey(w, rs[w])
      add(key, cap, amounts, sign)
      keep_window(key, w, wc)
    end
  end
end

-- give back the estimates of reservations whose deadline passed; forget old tombstones
local function reclaim(now, keep_ms, wc)
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  for _, rid in ipairs(due) do
    local v = redis.call('HGET', KEYS[3], rid)
    local st, c, t, g, m, ms, cap
    if v then st, c, t, g, m, ms, cap = parse_res(v) end
    if st == 'o' then
      draw(cap, {c, t, g, m}, '-', ms, wc)
      redis.call('HSET', KEYS[3], rid, 'x' .. string.sub(v, 2))
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
  for i = #out + 1, 22 do out[i] = '' end  -- limits written before windows existed
  return out
end
"""

RESERVE: Final = _PRELUDE + r"""
-- ARGV: capability, c, t, g, m, reservation id, ttl_ms, keep_ms, default tenant limits, wall
local cap = ARGV[1]
local est = {ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
local now, now_s = clock()
local wc = window_clock(ARGV[10], now_s)
reclaim(now, tonumber(ARGV[8]), wc)

local raw = redis.call('HMGET', KEYS[1], '*', 'c|' .. cap)
local tl = raw[1]
if not tl then tl = ARGV[9] end
local scopes = {}
if tl and tl ~= '' then scopes[#scopes + 1] = {'*', fields(tl)} end
if raw[2] and raw[2] ~= '' then scopes[#scopes + 1] = {'c|' .. cap, fields(raw[2])} end

-- budgets first (tenant-wide, then the capability's; lifetime, then minute .. month). Of
-- the budgets that refuse, report the one that binds longest: one waiting cannot fix
-- (lifetime, or the call alone overflows it), else the window that ends last.
local worst, worst_wait = nil, -1
for _, sc in ipairs(scopes) do
  local scope, lim = sc[1], sc[2]
  for w = 0, 4 do
    local key = KEYS[2]
    if w > 0 then key = wkey(w, wc.starts[w]) end
    for i = 1, 4 do
      local l = lim[w == 0 and i or 6 + (w - 1) * 4 + i]
      if l ~= '' then
        local drawn = tonumber(redis.call('HGET', key, M[i] .. scope) or '0')
        local e, limit = tonumber(est[i]), tonumber(l)
        if drawn + e > limit then
          local wait = math.huge
          if w > 0 and e <= limit then wait = wc.ends[w] end
          if wait > worst_wait then
            worst_wait = wait
            worst = {'limit', scope, tostring(i), l, num(drawn), tostring(w),
                     w > 0 and num(wc.ends[w]) or '', string.format('%.17g', wc.now)}
          end
        end
      end
    end
  end
end
if worst then return worst end

-- then the token buckets; tokens are taken only when every check passed
local need = tonumber(est[1])
local takes = {}
if need > 0 then
  for _, sc in ipairs(scopes) do
    local scope, lim = sc[1], sc[2]
    if lim[5] ~= '' then
      local rate = tonumber(lim[5])
      local burst = math.max(1, math.ceil(rate))
      if lim[6] ~= '' then burst = tonumber(lim[6]) end
      local b = redis.call('HMGET', KEYS[5], 'n' .. scope, 'w' .. scope)
      local tokens = burst
      if b[1] and b[2] then
        tokens = math.min(burst, tonumber(b[1]) + math.max(0, now_s - tonumber(b[2])) * rate)
      end
      if tokens < need then
        return {'rate', scope, string.format('%.17g', tokens), lim[5],
                string.format('%.17g', burst)}
      end
      takes[#takes + 1] = {scope, tokens - need}
    end
  end
end
for _, tk in ipairs(takes) do
  redis.call('HSET', KEYS[5], 'n' .. tk[1], string.format('%.17g', tk[2]),
             'w' .. tk[1], string.format('%.17g', now_s))
end

draw(cap, est, '', wc.starts[1], wc)
redis.call('HSET', KEYS[3], ARGV[6], 'o|' .. est[1] .. '|' .. est[2] .. '|' .. est[3] .. '|'
           .. est[4] .. '|' .. num(wc.starts[1]) .. '|' .. cap)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), ARGV[6])
return {'ok'}
"""

SETTLE: Final = _PRELUDE + r"""
-- ARGV: reservation id, c, t, g, m (actual), keep_ms, wall
local now, now_s = clock()
local wc = window_clock(ARGV[7], now_s)
reclaim(now, tonumber(ARGV[6]), wc)
local v = redis.call('HGET', KEYS[3], ARGV[1])
if not v then return 0 end
local st, c, t, g, m, ms, cap = parse_res(v)
if st == 'o' then draw(cap, {c, t, g, m}, '-', ms, wc) end
draw(cap, {ARGV[2], ARGV[3], ARGV[4], ARGV[5]}, '', ms, wc)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

REFUND: Final = _PRELUDE + r"""
-- ARGV: reservation id, keep_ms, wall
local now, now_s = clock()
local wc = window_clock(ARGV[3], now_s)
reclaim(now, tonumber(ARGV[2]), wc)
local v = redis.call('HGET', KEYS[3], ARGV[1])
if not v then return 0 end
local st, c, t, g, m, ms, cap = parse_res(v)
if st == 'o' then draw(cap, {c, t, g, m}, '-', ms, wc) end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

USED: Final = _PRELUDE + r"""
-- ARGV: scope, keep_ms, wall
local now, now_s = clock()
reclaim(now, tonumber(ARGV[2]), window_clock(ARGV[3], now_s))
local s = ARGV[1]
local v = redis.call('HMGET', KEYS[2], 'c' .. s, 't' .. s, 'g' .. s, 'm' .. s)
for i = 1, 4 do if not v[i] then v[i] = '0' end end
return v
"""

STATUS: Final = _PRELUDE + r"""
-- ARGV: scope, keep_ms, wall, default tenant limits
-- returns: limits, window clock, then for the lifetime and each window:
--          start, end, c, t, g, m
local now, now_s = clock()
local wc = window_clock(ARGV[3], now_s)
reclaim(now, tonumber(ARGV[2]), wc)
local s = ARGV[1]
local lim = redis.call('HGET', KEYS[1], s)
if not lim then lim = (s == '*') and ARGV[4] or '' end
local out = {lim, string.format('%.17g', wc.now)}
for w = 0, 4 do
  local key = KEYS[2]
  if w > 0 then key = wkey(w, wc.starts[w]) end
  out[#out + 1] = w > 0 and num(wc.starts[w]) or ''
  out[#out + 1] = w > 0 and num(wc.ends[w]) or ''
  local v = redis.call('HMGET', key, 'c' .. s, 't' .. s, 'g' .. s, 'm' .. s)
  for i = 1, 4 do out[#out + 1] = v[i] or '0' end
end
return out
"""

RESET: Final = _PRELUDE + r"""
-- ARGV: keep_ms, wall, window (1..4 = minute .. month; 0 = every window and the total)
local now, now_s = clock()
local wc = window_clock(ARGV[2], now_s)
reclaim(now, tonumber(ARGV[1]), wc)
local which = tonumber(ARGV[3])
local targets = {}
for w = 1, 4 do
  if which == 0 or which == w then targets[#targets + 1] = w end
end
if which == 0 then redis.call('DEL', KEYS[2]) end
for _, w in ipairs(targets) do redis.call('DEL', wkey(w, wc.starts[w])) end
-- outstanding reservations stay counted
local res = redis.call('HGETALL', KEYS[3])
for j = 1, #res, 2 do
  local st, c, t, g, m, ms, cap = parse_res(res[j + 1])
  if st == 'o' then
    local amounts = {c, t, g, m}
    if which == 0 then add(KEYS[2], cap, amounts, '') end
    if ms then
      local rs = windows(ms)
      for _, w in ipairs(targets) do
        if rs[w] == wc.starts[w] then
          local key = wkey(w, rs[w])
          add(key, cap, amounts, '')
          keep_window(key, w, wc)
        end
      end
    end
  end
end
return 1
"""

#: The window arithmetic alone (for tests that compare it with Python's): ARGV[1] is epoch
#: seconds; returns the starts, then the ends, of the minute, hour, day and month.
WINDOWS_OF: Final = _PRELUDE + r"""
local s, e = windows(tonumber(ARGV[1]))
return {num(s[1]), num(s[2]), num(s[3]), num(s[4]), num(e[1]), num(e[2]), num(e[3]), num(e[4])}
"""
