-- astra-bus commit prelude: what commit.lua and commit_slot.lua share (commit.rs puts it
-- right after each script's shebang). Ops are encoded as [cmd, key index, n_args, args...];
-- a CHAINCAS op's args are [log key index, expected head, new head, log entry].

local ALLOWED = {} -- @ALLOWED@
local TYPES = { h = 'hash', z = 'zset', s = 'set', t = 'string', l = 'list', x = 'stream' }
local INCR = { HINCRBY = true, INCRBY = true, DECRBY = true }

-- The first key (from index `first` on) whose type is neither none nor what the call needs
-- (ARGV[need_at]: one letter per KEYS index): {-1, index, actual type}, or nil.
local function wrong_type(first, need)
  for i = first, #KEYS do
    local want = TYPES[string.sub(need, i, i)]
    if want then
      local t = redis.call('TYPE', KEYS[i])['ok']
      if t ~= 'none' and t ~= want then return { -1, i, t } end
    end
  end
  return nil
end

-- HMGET of ARGV[first .. first+n-1] in chunks (Lua's unpack has a stack limit).
local function hmget(key, first, n)
  if n <= 1000 then return redis.call('HMGET', key, unpack(ARGV, first, first + n - 1)) end
  local out = {}
  for i = 0, n - 1, 1000 do
    local r = redis.call('HMGET', key, unpack(ARGV, first + i, first + math.min(i + 999, n - 1)))
    for j = 1, #r do out[i + j] = r[j] end
  end
  return out
end

-- Progress value: 3 header bytes (complete rounds, partial flag, derived events already
-- added of a partial round), then one MessagePack array of replies per complete round,
-- plus, when partial, the replies of the ops of the failed round that were applied.
local function rounds_of(v)
  if not v then return 0, false, 0 end
  return string.byte(v, 1), string.byte(v, 2) == 1, string.byte(v, 3)
end

-- The complete rounds of a progress value, still packed, and the partial round's replies.
local function split(v)
  local complete, partial = rounds_of(v)
  if not partial then return string.sub(v, 4), nil end
  local vals = { cmsgpack.unpack(string.sub(v, 4)) }
  local body = {}
  for j = 1, complete do body[j] = cmsgpack.pack(vals[j]) end
  return table.concat(body), vals[complete + 1]
end

-- Exact signed 64-bit addition on decimal text: Lua numbers are doubles, exact only below
-- 2^53, so values are split into (high, low) parts of 9 decimal digits. Returns the sum as
-- text, or nil when it leaves the i64 range (or a value is not an integer).
local function split9(v)
  local neg, digits = string.match(v, '^(-?)(%d+)$')
  if not digits or #digits > 19 then return nil end
  local hi = tonumber(string.sub(digits, 1, -10)) or 0
  local lo = tonumber(string.sub(digits, -9))
  if neg == '-' then return -hi, -lo end
  return hi, lo
end
local function add64(a, b)
  local ah, al = split9(a)
  local bh, bl = split9(b)
  if not ah or not bh then return nil end
  local h, l = ah + bh, al + bl
  -- Normalise so that l has the sign of the total and |l| < 1e9.
  while l >= 1e9 do l = l - 1e9; h = h + 1 end
  while l <= -1e9 do l = l + 1e9; h = h - 1 end
  if h > 0 and l < 0 then l = l + 1e9; h = h - 1 end
  if h < 0 and l > 0 then l = l - 1e9; h = h + 1 end
  if h > 9223372036 or (h == 9223372036 and l > 854775807) then return nil end
  if h < -9223372036 or (h == -9223372036 and l < -854775808) then return nil end
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%09d', h, math.abs(l))
end

-- Values the increments of this call will have produced, by key and field, in call order.
local sim = {}
local function incr_check(cmd, key, field, by, changes)
  local slot = key .. '\0' .. field
  local cur = sim[slot]
  if cur == nil then
    if cmd == 'HINCRBY' then cur = redis.call('HGET', key, field) else cur = redis.call('GET', key) end
    if not cur then cur = '0' end
    if not string.find(cur, '^-?%d+$') or not split9(cur) then
      return cmd .. ' ' .. key .. ' ' .. field .. ': the value is not an integer'
    end
  end
  if not string.find(by, '^-?%d+$') then
    return cmd .. ' ' .. key .. ': increment ' .. by .. ' is not an integer'
  end
  if cmd == 'DECRBY' then
    if string.sub(by, 1, 1) == '-' then by = string.sub(by, 2) else by = '-' .. by end
  end
  local nv = add64(cur, by)
  if not nv then
    return cmd .. ' ' .. key .. ' ' .. field .. ': the result would overflow a 64-bit integer'
  end
  changes[#changes + 1] = { slot, sim[slot] }
  sim[slot] = nv
  return nil
end

-- Why the ops at ARGV[q..] (n_ops of them, the first `skip` already applied) cannot run:
-- a command outside the allowed set, or an increment that would not stay an integer. On a
-- refusal the increments this record simulated are forgotten.
local function refusal(q, n_ops, skip)
  local changes = {}
  for k = 1, n_ops do
    local cmd, na = ARGV[q], tonumber(ARGV[q + 2])
    local why = nil
    if not ALLOWED[cmd] then
      why = 'command ' .. cmd .. ' is not allowed'
    elseif k > skip and INCR[cmd] then
      local key = KEYS[tonumber(ARGV[q + 1])]
      if cmd == 'HINCRBY' then
        why = incr_check(cmd, key, ARGV[q + 3], ARGV[q + 4], changes)
      else
        why = incr_check(cmd, key, '', ARGV[q + 3], changes)
      end
    end
    if why then
      for c = #changes, 1, -1 do sim[changes[c][1]] = changes[c][2] end
      return why
    end
    q = q + 3 + na
  end
  return nil
end

-- Whether a hash-chain head of the ops at ARGV[q..] moved since the daemon read it.
local function chain_moved(q, n_ops, skip)
  for k = 1, n_ops do
    if k > skip and ARGV[q] == 'CHAINCAS' then
      local head = KEYS[tonumber(ARGV[q + 1])]
      if (redis.call('GET', head) or '') ~= ARGV[q + 4] then return 'head of ' .. head .. ' moved' end
    end
    q = q + 3 + tonumber(ARGV[q + 2])
  end
  return nil
end

-- Applies the ops at ARGV[q..] after the first `skip`, appending their replies to
-- `replies`. pcall throughout: a refusal stops this event, never the script. Returns the
-- position after the ops and the failure, if any.
local function apply_ops(q, n_ops, skip, replies)
  local failed = nil
  for k = 1, n_ops do
    local cmd, key, na = ARGV[q], KEYS[tonumber(ARGV[q + 1])], tonumber(ARGV[q + 2])
    if k > skip and not failed then
      local r
      if cmd == 'CHAINCAS' then
        redis.call('SET', key, ARGV[q + 5])
        r = { redis.call('RPUSH', KEYS[tonumber(ARGV[q + 3])], ARGV[q + 6]), ARGV[q + 4], ARGV[q + 5] }
      else
        r = redis.pcall(cmd, key, unpack(ARGV, q + 3, q + 2 + na))
        if type(r) == 'table' then
          if r['err'] then
            failed = cmd .. ' ' .. key .. ': ' .. r['err']
          elseif r['ok'] then
            r = r['ok']
          end
        end
      end
      if not failed then replies[k] = r end
    end
    q = q + 3 + na
  end
  return q, failed
end

-- HSET of a flat field/value list, in chunks.
local function hset_list(key, list)
  for i = 1, #list, 1000 do
    redis.call('HSET', key, unpack(list, i, math.min(i + 999, #list)))
  end
end
