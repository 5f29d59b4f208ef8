-- astra-bus commit prelude: what commit.lua and commit_slot.lua share (commit.rs puts it
-- right after each script's shebang).
--
-- Encoding (commit.rs). The small numbers that describe a batch are packed into three
-- binary strings, read with string.byte, so each costs Redis no argument of its own:
--   H: one byte, 1 when increments must be checked before the writes (see refusal), then
--      per event 10 bytes: arguments it takes (3), round, final (0/1), hash chain (0/1),
--      ops (2), derived events (2);
--   O: per op 6 bytes: command (1, index into CMDS), key index (3), arguments (2);
--   E: per derived event 5 bytes: template (2), stream key index (3).
-- Integers are big-endian. Op arguments and the varying fields of derived events follow in
-- ARGV, event by event. A CHAINCAS op's arguments are [log key index, expected head, new
-- head, log entry].
--
-- Progress value: 3 header bytes (complete rounds, partial flag, derived events already
-- added of a partial round), then one MessagePack array of replies per complete round,
-- plus, when partial, the replies of the ops of the failed round that were applied.

local CMDS = {} -- @CMDS@
local TYPES = { h = 'hash', z = 'zset', s = 'set', t = 'string', l = 'list', x = 'stream' }
local INCR = { HINCRBY = true, INCRBY = true, DECRBY = true }
local byte = string.byte

local O = ''
-- Whether increments are checked before the writes (H's first byte, see refusal).
local check_incr = true

-- The event header of event i in H (after H's first byte): arguments, round, final,
-- chain, ops, derived events.
local function header(H, i)
  local p = (i - 1) * 10 + 2
  local a, b, c, r, f, ch, o1, o2, e1, e2 = byte(H, p, p + 9)
  return (a * 256 + b) * 256 + c, r, f == 1, ch == 1, o1 * 256 + o2, e1 * 256 + e2
end

-- Op number k (1-based over the whole call): command, key index, argument count.
local function op_at(k)
  local p = (k - 1) * 6 + 1
  local c, k1, k2, k3, n1, n2 = byte(O, p, p + 5)
  return CMDS[c], (k1 * 256 + k2) * 256 + k3, n1 * 256 + n2
end

-- The first key (from index `first` on) whose type is neither none nor what the call needs
-- (`need`: one letter per KEYS index): {-1, index, actual type}, or nil.
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

local function rounds_of(v)
  if not v then return 0, false, 0 end
  return byte(v, 1), byte(v, 2) == 1, byte(v, 3)
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

-- Why the ops first_op .. first_op+n_ops-1 (arguments from ARGV[a] on; the first `skip`
-- already applied) cannot run: an unknown command, or an increment that would not stay an
-- integer. Increments are checked only when the daemon says some event of the call has one
-- after another write (H's first byte): an increment that is an event's first write needs
-- no check, since if Redis refuses it, it writes nothing and nothing came before it. On a
-- refusal the increments this event simulated are forgotten.
local function refusal(first_op, n_ops, a, skip)
  local changes = {}
  for k = 1, n_ops do
    local cmd, ki, na = op_at(first_op + k - 1)
    local why = nil
    if not cmd then
      why = 'unknown command code'
    elseif check_incr and k > skip and INCR[cmd] then
      if cmd == 'HINCRBY' then
        why = incr_check(cmd, KEYS[ki], ARGV[a], ARGV[a + 1], changes)
      else
        why = incr_check(cmd, KEYS[ki], '', ARGV[a], changes)
      end
    end
    if why then
      for c = #changes, 1, -1 do sim[changes[c][1]] = changes[c][2] end
      return why
    end
    a = a + na
  end
  return nil
end

-- Whether a hash-chain head of those ops moved since the daemon read it.
local function chain_moved(first_op, n_ops, a, skip)
  for k = 1, n_ops do
    local cmd, ki, na = op_at(first_op + k - 1)
    if k > skip and cmd == 'CHAINCAS' then
      if (redis.call('GET', KEYS[ki]) or '') ~= ARGV[a + 1] then
        return 'head of ' .. KEYS[ki] .. ' moved'
      end
    end
    a = a + na
  end
  return nil
end

-- Applies those ops after the first `skip`, putting their replies in `replies`. pcall
-- throughout: a refusal stops this event, never the script. Returns the failure, if any.
local function apply_ops(first_op, n_ops, a, skip, replies)
  for k = 1, n_ops do
    local cmd, ki, na = op_at(first_op + k - 1)
    if k > skip then
      local key = KEYS[ki]
      local r
      if cmd == 'CHAINCAS' then
        redis.call('SET', key, ARGV[a + 2])
        r = { redis.call('RPUSH', KEYS[tonumber(ARGV[a])], ARGV[a + 3]), ARGV[a + 1], ARGV[a + 2] }
      else
        r = redis.pcall(cmd, key, unpack(ARGV, a, a + na - 1))
        if type(r) == 'table' then
          if r['err'] then return cmd .. ' ' .. key .. ': ' .. r['err'] end
          if r['ok'] then r = r['ok'] end
        end
      end
      replies[k] = r
    end
    a = a + na
  end
  return nil
end

-- HSET of a flat field/value list, in chunks.
local function hset_list(key, list)
  for i = 1, #list, 1000 do
    redis.call('HSET', key, unpack(list, i, math.min(i + 999, #list)))
  end
end
