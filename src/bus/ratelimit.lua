#!lua
-- astra-bus rate limit script.
-- Sliding-window rate limit over several buckets, all or nothing, for one request.
--
-- KEYS[i]   one hash per bucket: w = window index, c = count in window w, p = count in w-1
--           (every key carries the same hash tag, so this runs on one cluster slot)
-- ARGV[1]   window, milliseconds
-- ARGV[2]   cost of this request (its events), at least 1
-- ARGV[2+i] limit of bucket i
--
-- The estimate of requests in the last window is p * (time left in the current window /
-- window) + c (the "sliding window counter"). The request is admitted only if every bucket
-- has room; only then are counts written, so a refused request costs nothing. Time comes
-- from Redis, so every edge instance agrees on the window.
--
-- Returns {allowed (1|0), index of the tightest or refusing bucket, its limit,
--          remaining after this request (floor), ms until the window resets,
--          ms until a retry can pass (0 when allowed)}.
local window = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = math.floor(now / window)
local elapsed = now - idx * window
local left = window - elapsed
local weight = left / window

local state = {}
local tight, tight_remaining = 1, nil
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + i])
  local h = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
  local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if w == nil or w < idx - 1 then
    c, p = 0, 0
  elseif w == idx - 1 then
    p, c = c, 0
  elseif w > idx then
    -- A clock step back: keep counting in the stored window.
    idx = w
  end
  local used = p * weight + c
  if used + cost > limit then
    -- Refused: when would this request fit?
    local wait
    if c + cost > limit then
      -- Not before this window ends, and then the carried-over c must decay enough.
      wait = left + math.ceil(window * (1 - (limit - cost) / c))
    else
      -- The previous window's share must decay: p * (left - x) / window <= limit - cost - c.
      wait = left - math.floor(window * (limit - cost - c) / p)
    end
    if wait < 1 then wait = 1 end
    return {0, i, limit, 0, left, wait}
  end
  local remaining = math.floor(limit - used - cost)
  if tight_remaining == nil or remaining < tight_remaining then
    tight, tight_remaining = i, remaining
  end
  state[i] = {c, p}
end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'w', idx, 'c', state[i][1] + cost, 'p', state[i][2])
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
return {1, tight, tonumber(ARGV[2 + tight]), tight_remaining, left, 0}
