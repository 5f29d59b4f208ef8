#!lua
-- astra-bus commit script: one call commits one round of handler effects for a batch of
-- events read by one group from one stream, atomically (single node).
--
-- KEYS: every key touched (source stream first); ops refer to keys by 1-based index.
-- ARGV: group, dedup_ttl_secs, n_events, per_slot (0/1), then per event:
--   dedup_key_idx, event_id, entry_id, round (0-based), final (0/1), n_ops, n_emits,
--   n_ops x [cmd, key_idx, key2_idx (0 = none), n_args, args...],
--   n_emits x [stream_key_idx, n_fields, field, value, ...]
--
-- Per event, the dedup marker (HGET dedup_key event_id) holds the MessagePack array of
-- the replies of every round applied so far, or "D" once the final round ran. So:
--   * a round already applied is not applied again: its recorded replies are returned;
--   * an event already completed is only acknowledged (a zombie or a duplicate entry);
--   * before anything is written, every op's key type is checked (Redis does not roll
--     back a script, so we check before we write).
-- per_slot = 1 (Redis Cluster): the call holds one hash slot's share of a round (KEYS[1]
-- is then that slot's marker key, not a stream; no event is final, nothing is published
-- or acknowledged here). A slot need not be touched in every round of an event, so a
-- marker with fewer rounds than `round` is padded with empty rounds instead of refused.
-- Returns per event {status, payload}: 0 applied (payload = msgpack replies), 1 replayed
-- (recorded replies), 2 already completed, 3 failed (payload = reason; nothing of this
-- round was written unless noted), 4 marker missing for a round > 0 (payload = reason),
-- 5 conflict (a hash-chain head moved since the caller read it; nothing written: the
-- caller recomputes the link and tries again).
--
-- CHAINCAS head log expected_prev hash entry: the caller (Rust) computed
-- hash = SHA-256(expected_prev ‖ record) from the head it read; the script appends
-- `entry` and moves the head only if the head still is expected_prev, so concurrent
-- appenders never fork the chain (hashing stays out of Redis: it would cost ~60 µs per
-- 64-byte block in Lua).

-- Key type each command needs ('any' = no check).
local NEEDS = {
  HSET = 'hash', HSETNX = 'hash', HINCRBY = 'hash', HGET = 'hash', HMGET = 'hash',
  HGETALL = 'hash', HDEL = 'hash', HEXISTS = 'hash',
  ZADD = 'zset', ZINCRBY = 'zset', ZREM = 'zset', ZSCORE = 'zset', ZRANK = 'zset',
  ZREVRANK = 'zset', ZRANGE = 'zset', ZREVRANGE = 'zset', ZRANGEBYSCORE = 'zset',
  ZREMRANGEBYSCORE = 'zset', ZREMRANGEBYRANK = 'zset', ZCARD = 'zset', ZCOUNT = 'zset',
  SADD = 'set', SREM = 'set', SISMEMBER = 'set', SCARD = 'set', SMEMBERS = 'set',
  GET = 'string', SET = 'string', INCRBY = 'string', DECRBY = 'string',
  PFADD = 'string', PFCOUNT = 'string',
  LPUSH = 'list', RPUSH = 'list', LTRIM = 'list', LRANGE = 'list', LLEN = 'list',
  EXPIRE = 'any', PEXPIRE = 'any', DEL = 'any', EXISTS = 'any',
  CHAINCAS = 'string',
}

local group = ARGV[1]
local ttl = tonumber(ARGV[2])
local n_events = tonumber(ARGV[3])
local per_slot = ARGV[4] == '1'
local src = KEYS[1]
local pos = 5
local results = {}
local acks = {}

local function next_arg()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end

-- Parse every event first, so markers can be read with one HMGET per bucket.
local evs = {}
local ids_by_dkey = {}
for ev = 1, n_events do
  local e = {}
  e.dkey = KEYS[tonumber(next_arg())]
  e.event_id = next_arg()
  e.entry_id = next_arg()
  e.round = tonumber(next_arg())
  e.final = next_arg() == '1'
  local n_ops = tonumber(next_arg())
  local n_emits = tonumber(next_arg())
  local ops = {}
  for i = 1, n_ops do
    local op = { cmd = next_arg(), key = KEYS[tonumber(next_arg())] }
    local k2 = tonumber(next_arg())
    if k2 > 0 then op.key2 = KEYS[k2] end
    local nargs = tonumber(next_arg())
    local args = {}
    for j = 1, nargs do args[j] = next_arg() end
    op.args = args
    ops[i] = op
  end
  e.ops = ops
  local emits = {}
  for i = 1, n_emits do
    local stream = KEYS[tonumber(next_arg())]
    local nf = tonumber(next_arg())
    local fields = {}
    for j = 1, nf * 2 do fields[j] = next_arg() end
    emits[i] = { stream = stream, fields = fields }
  end
  e.emits = emits
  evs[ev] = e
  local ids = ids_by_dkey[e.dkey]
  if not ids then ids = {}; ids_by_dkey[e.dkey] = ids end
  ids[#ids + 1] = e.event_id
end

-- Markers: read once per bucket, kept current in `marker` as this call changes them
-- (so a duplicate of an event later in the same batch sees the first one), written
-- back once per bucket at the end.
local marker = {}
local dirty = {}
for dkey, ids in pairs(ids_by_dkey) do
  local m = {}
  for i = 1, #ids, 1000 do
    local vals = redis.call('HMGET', dkey, unpack(ids, i, math.min(i + 999, #ids)))
    for j = 1, #vals do m[ids[i + j - 1]] = vals[j] end
  end
  marker[dkey] = m
end
local function set_marker(dkey, id, value)
  marker[dkey][id] = value
  local d = dirty[dkey]
  if not d then d = {}; dirty[dkey] = d end
  d[id] = value
end

-- Key types seen in this call: a key's type only changes from none to the type the op
-- needs (ops of the wrong type are refused), or back to none by DEL.
local types = {}
local function key_type(k)
  local t = types[k]
  if not t then
    t = redis.call('TYPE', k)['ok']
    types[k] = t
  end
  return t
end

for ev = 1, n_events do
  local e = evs[ev]
  local dkey, event_id, entry_id, round, final = e.dkey, e.event_id, e.entry_id, e.round, e.final
  local ops, emits = e.ops, e.emits
  local n_ops, n_emits = #ops, #emits
  local stored = marker[dkey][event_id]
  if stored == 'D' then
    results[ev] = { 2, '' }
    acks[#acks + 1] = entry_id
  else
    local rounds = {}
    if stored then rounds = cmsgpack.unpack(stored) end
    if per_slot then
      while #rounds < round do rounds[#rounds + 1] = {} end
    end
    if #rounds > round then
      results[ev] = { 1, cmsgpack.pack(rounds[round + 1]) }
      if final then
        -- Completed by an earlier call whose acknowledgement was lost: mark done.
        set_marker(dkey, event_id, 'D')
        acks[#acks + 1] = entry_id
      end
    elseif #rounds < round then
      results[ev] = { 4, 'dedup marker for event ' .. event_id .. ' lost before round ' .. round ..
        ' (dedup_ttl shorter than processing?)' }
    else
      -- Check before write.
      local bad = nil
      local conflict = nil
      for i = 1, n_ops do
        local op = ops[i]
        local need = NEEDS[op.cmd]
        if need == nil then
          bad = 'command ' .. op.cmd .. ' is not allowed'
        elseif need ~= 'any' then
          local t = key_type(op.key)
          if t ~= 'none' and t ~= need then
            bad = op.cmd .. ' needs a ' .. need .. ' at ' .. op.key .. ' but it holds a ' .. t
          end
          if op.key2 then
            local t2 = key_type(op.key2)
            if t2 ~= 'none' and t2 ~= 'list' then
              bad = op.cmd .. ' needs a list at ' .. op.key2 .. ' but it holds a ' .. t2
            end
          end
          if op.cmd == 'CHAINCAS' and (redis.call('GET', op.key) or '') ~= op.args[1] then
            conflict = 'head of ' .. op.key .. ' moved'
          end
        end
        if bad or conflict then break end
      end
      if bad then
        results[ev] = { 3, bad }
      elseif conflict then
        results[ev] = { 5, conflict }
      else
        local replies = {}
        local failed = nil
        for i = 1, n_ops do
          local op = ops[i]
          local r
          if op.cmd == 'CHAINCAS' then
            redis.call('SET', op.key, op.args[2])
            local seq = redis.call('RPUSH', op.key2, op.args[3])
            types[op.key] = 'string'
            types[op.key2] = 'list'
            r = { seq, op.args[1], op.args[2] }
          else
            r = redis.pcall(op.cmd, op.key, unpack(op.args))
            if type(r) == 'table' and r['err'] then
              failed = op.cmd .. ' ' .. op.key .. ': ' .. r['err']
              r = false
            elseif type(r) == 'table' and r['ok'] then
              r = r['ok']
            end
            local need = NEEDS[op.cmd]
            if op.cmd == 'DEL' then
              types[op.key] = nil
            elseif need ~= 'any' and not failed then
              types[op.key] = need
            end
          end
          replies[i] = r
          if failed then break end
        end
        if failed then
          -- Earlier ops of this round may have been written: record the round as done
          -- so a redelivery never applies them twice; the event is dead-lettered.
          rounds[#rounds + 1] = replies
          set_marker(dkey, event_id, cmsgpack.pack(rounds))
          results[ev] = { 3, failed }
        else
          if final then
            for i = 1, n_emits do
              redis.call('XADD', emits[i].stream, '*', unpack(emits[i].fields))
            end
            set_marker(dkey, event_id, 'D')
            acks[#acks + 1] = entry_id
          else
            rounds[#rounds + 1] = replies
            set_marker(dkey, event_id, cmsgpack.pack(rounds))
          end
          results[ev] = { 0, cmsgpack.pack(replies) }
        end
      end
    end
  end
end

-- Write the markers back, one HSET per bucket, and keep each bucket alive `ttl`.
for dkey, d in pairs(dirty) do
  local args = {}
  for id, v in pairs(d) do
    args[#args + 1] = id
    args[#args + 1] = v
  end
  for i = 1, #args, 1000 do
    redis.call('HSET', dkey, unpack(args, i, math.min(i + 999, #args)))
  end
  redis.call('EXPIRE', dkey, ttl)
end
-- One XACK per batch (chunked: Lua's unpack has a stack limit).
for i = 1, #acks, 1000 do
  redis.call('XACK', src, group, unpack(acks, i, math.min(i + 999, #acks)))
end
return results
