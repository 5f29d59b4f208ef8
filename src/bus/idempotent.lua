#!lua
-- astra-bus idempotent publish script.
-- Publishes events to one stream at most once per idempotency key, atomically.
--
-- KEYS[1]  the idempotency record (a string), hash-tagged with the stream name so it
--          lives in the stream's cluster slot
-- KEYS[2]  the stream
-- ARGV[1]  record TTL, milliseconds
-- ARGV[2]  request fingerprint (SHA-256 of route and body)
-- ARGV[3]  what the route generated for the answer (one line of JSON, e.g. a user_id)
-- ARGV[4]  number of events n; then per event: its label ("<event id> <cid>"), its
--          field count f, then f field/value pairs
--
-- A record that exists is returned as it is, and nothing is written: the caller answers
-- with the first response (or 422 when the fingerprint differs: the key was reused for
-- another request). Otherwise every event is XADDed and the record
-- "<fingerprint>\nx<generated>\n<event id> <cid> <entry id>\n..." is stored with the TTL,
-- in one step.
--
-- Returns {1 (new) | 0 (replayed), record}.
local rec = redis.call('GET', KEYS[1])
if rec then
  return {0, rec}
end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('TYPE', KEYS[2]).ok ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' is not a stream')
end
local out = {ARGV[2], 'x' .. ARGV[3]}
local n = tonumber(ARGV[4])
local pos = 5
for _ = 1, n do
  local id = ARGV[pos]
  local f = tonumber(ARGV[pos + 1])
  local args = {'XADD', KEYS[2], '*'}
  for j = 0, 2 * f - 1 do
    args[#args + 1] = ARGV[pos + 2 + j]
  end
  local entry = redis.call(unpack(args))
  out[#out + 1] = id .. ' ' .. entry
  pos = pos + 2 + 2 * f
end
rec = table.concat(out, '\n')
redis.call('SET', KEYS[1], rec, 'PX', ARGV[1])
return {1, rec}
