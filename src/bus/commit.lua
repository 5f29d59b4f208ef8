#!lua
-- astra-bus commit script: one call commits one round of handler effects for a batch of
-- events read by one group from one stream, atomically (single node).
--
-- KEYS: every key touched (source stream first); ops refer to keys by 1-based index.
-- ARGV: group, dedup_ttl_secs, n_events, then per event:
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
-- Returns per event {status, payload}: 0 applied (payload = msgpack replies), 1 replayed
-- (recorded replies), 2 already completed, 3 failed (payload = reason; nothing of this
-- round was written unless noted), 4 marker missing for a round > 0 (payload = reason).

local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit = bit.rshift, bit.lshift, bit.ror, bit.tobit

local K256 = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

-- SHA-256 (FIPS 180-4) with the bit library Redis ships, for the audit hash chain:
-- Redis offers only SHA-1, and the chain link must be computed where the head is read.
local function sha256hex(msg)
  local len = #msg
  local pad = 64 - ((len + 9) % 64)
  if pad == 64 then pad = 0 end
  local bitlen = len * 8
  local lb = {}
  for i = 7, 0, -1 do
    lb[#lb + 1] = string.char(math.floor(bitlen / (2 ^ (8 * i))) % 256)
  end
  msg = msg .. '\128' .. string.rep('\0', pad) .. table.concat(lb)
  local h1, h2, h3, h4 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
  local h5, h6, h7, h8 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  local w = {}
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do
      local p = chunk + i * 4
      local b1, b2, b3, b4 = string.byte(msg, p, p + 3)
      w[i] = bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
    end
    for i = 16, 63 do
      local x, y = w[i - 15], w[i - 2]
      local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
      local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
      w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
    end
    local a, b, c, d, e, f, g, h = h1, h2, h3, h4, h5, h6, h7, h8
    for i = 0, 63 do
      local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = tobit(h + S1 + ch + K256[i + 1] + w[i])
      local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local maj = bxor(band(a, b), band(a, c), band(b, c))
      local t2 = tobit(S0 + maj)
      h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
    end
    h1, h2, h3, h4 = tobit(h1 + a), tobit(h2 + b), tobit(h3 + c), tobit(h4 + d)
    h5, h6, h7, h8 = tobit(h5 + e), tobit(h6 + f), tobit(h7 + g), tobit(h8 + h)
  end
  return bit.tohex(h1, 8) .. bit.tohex(h2, 8) .. bit.tohex(h3, 8) .. bit.tohex(h4, 8) ..
         bit.tohex(h5, 8) .. bit.tohex(h6, 8) .. bit.tohex(h7, 8) .. bit.tohex(h8, 8)
end

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
  CHAINAPPEND = 'string',
}

local group = ARGV[1]
local ttl = tonumber(ARGV[2])
local n_events = tonumber(ARGV[3])
local src = KEYS[1]
local pos = 4
local results = {}
local acks = {}
local touched = {}

local function next_arg()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end

for ev = 1, n_events do
  local dkey = KEYS[tonumber(next_arg())]
  local event_id = next_arg()
  local entry_id = next_arg()
  local round = tonumber(next_arg())
  local final = next_arg() == '1'
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
  local emits = {}
  for i = 1, n_emits do
    local stream = KEYS[tonumber(next_arg())]
    local nf = tonumber(next_arg())
    local fields = {}
    for j = 1, nf * 2 do fields[j] = next_arg() end
    emits[i] = { stream = stream, fields = fields }
  end

  local stored = redis.call('HGET', dkey, event_id)
  if stored == 'D' then
    results[ev] = { 2, '' }
    acks[#acks + 1] = entry_id
  else
    local rounds = {}
    if stored then rounds = cmsgpack.unpack(stored) end
    if #rounds > round then
      results[ev] = { 1, cmsgpack.pack(rounds[round + 1]) }
      if final then
        -- Completed by an earlier call whose acknowledgement was lost: mark done.
        redis.call('HSET', dkey, event_id, 'D')
        touched[dkey] = true
        acks[#acks + 1] = entry_id
      end
    elseif #rounds < round then
      results[ev] = { 4, 'dedup marker for event ' .. event_id .. ' lost before round ' .. round ..
        ' (dedup_ttl shorter than processing?)' }
    else
      -- Check before write.
      local bad = nil
      for i = 1, n_ops do
        local op = ops[i]
        local need = NEEDS[op.cmd]
        if need == nil then
          bad = 'command ' .. op.cmd .. ' is not allowed'
        elseif need ~= 'any' then
          local t = redis.call('TYPE', op.key)['ok']
          if t ~= 'none' and t ~= need then
            bad = op.cmd .. ' needs a ' .. need .. ' at ' .. op.key .. ' but it holds a ' .. t
          end
          if op.key2 then
            local t2 = redis.call('TYPE', op.key2)['ok']
            if t2 ~= 'none' and t2 ~= 'list' then
              bad = op.cmd .. ' needs a list at ' .. op.key2 .. ' but it holds a ' .. t2
            end
          end
        end
        if bad then break end
      end
      if bad then
        results[ev] = { 3, bad }
      else
        local replies = {}
        local failed = nil
        for i = 1, n_ops do
          local op = ops[i]
          local r
          if op.cmd == 'CHAINAPPEND' then
            local prev = redis.call('GET', op.key) or ''
            local record = op.args[1]
            local h = sha256hex(prev .. record)
            redis.call('SET', op.key, h)
            local seq = redis.call('RPUSH', op.key2, cmsgpack.pack({ prev, h, record }))
            r = { seq, prev, h }
          else
            r = redis.pcall(op.cmd, op.key, unpack(op.args))
            if type(r) == 'table' and r['err'] then
              failed = op.cmd .. ' ' .. op.key .. ': ' .. r['err']
              r = false
            elseif type(r) == 'table' and r['ok'] then
              r = r['ok']
            end
          end
          replies[i] = r
          if failed then break end
        end
        if failed then
          -- Earlier ops of this round may have been written: record the round as done
          -- so a redelivery never applies them twice; the event is dead-lettered.
          rounds[#rounds + 1] = replies
          redis.call('HSET', dkey, event_id, cmsgpack.pack(rounds))
          touched[dkey] = true
          results[ev] = { 3, failed }
        else
          if final then
            for i = 1, n_emits do
              redis.call('XADD', emits[i].stream, '*', unpack(emits[i].fields))
            end
            redis.call('HSET', dkey, event_id, 'D')
            acks[#acks + 1] = entry_id
          else
            rounds[#rounds + 1] = replies
            redis.call('HSET', dkey, event_id, cmsgpack.pack(rounds))
          end
          touched[dkey] = true
          results[ev] = { 0, cmsgpack.pack(replies) }
        end
      end
    end
  end
end

for k, _ in pairs(touched) do
  redis.call('EXPIRE', k, ttl)
end
-- One XACK per batch (chunked: Lua's unpack has a stack limit).
for i = 1, #acks, 1000 do
  redis.call('XACK', src, group, unpack(acks, i, math.min(i + 999, #acks)))
end
return results
