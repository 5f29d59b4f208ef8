#!lua
-- astra-bus commit script, Redis Cluster form: one call applies one hash slot's share of
-- one handler round for a batch of events, atomically within that slot. The daemon reads
-- the entries, checks the done markers, then calls this once per slot touched, publishes
-- the derived events, marks the events done and acknowledges them last (commit.rs).
--
-- KEYS[1..2] the slot's progress generations for the group, newest first (event id -> what
--         this slot applied of every round so far); a generation is dedup_ttl long and
--         lives until the end of the next one, like the done markers (progress cannot be
--         removed when the event completes: a slower copy of the same commit could then
--         apply it again)
-- KEYS[3..] every key the slot's ops touch
-- ARGV[1] n (events), ARGV[2] the type every key must have (one letter per KEYS index, as
-- in commit.lua), ARGV[3] TTL of the newest generation (seconds), ARGV[4] H, ARGV[5] O (the
-- packed headers of commit_common.lua, which is put in front of this file; no derived
-- events here), then the n event ids and every event's op arguments.
--
-- A slot need not be touched in every round of an event, so a progress value with fewer
-- rounds than `round` is padded with empty rounds instead of refused.
--
-- Returns {-1, key index, actual type} when a key has the wrong type (nothing written), or
-- {statuses, payloads...} as commit.lua: 0 applied (payload: packed replies), 1 replayed
-- (payload: the stored progress), 3 failed (payload: reason; what was applied half way is
-- recorded), 5 hash-chain conflict (nothing written).

local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[3])
local H = ARGV[4]
O = ARGV[5]
check_incr = byte(H, 1) == 1
local EMPTY = cmsgpack.pack({})

local bad = wrong_type(3, ARGV[2])
if bad then return bad end

local p0, p1 = hmget(KEYS[1], 6, n), hmget(KEYS[2], 6, n)

-- One walk: where each event's ops and arguments start, which will run, their
-- preconditions.
local at_op, at_arg, state, runs, refused = {}, {}, {}, {}, {}
local latest = {}
local op_c, arg_c = 1, 6 + n
for i = 1, n do
  at_op[i], at_arg[i] = op_c, arg_c
  local argc, round, _, _, n_ops = header(H, i)
  local id = ARGV[5 + i]
  local v = latest[id]
  if v == nil then v = p0[i] or p1[i] end
  state[i] = v
  local complete, partial = rounds_of(v)
  if v ~= 'copy' and (complete == round or (complete < round and not partial)) then
    runs[i] = true
    latest[id] = 'copy'
    local skip = 0
    if partial and complete == round then
      local _, rep = split(v)
      skip = #rep
    end
    refused[i] = refusal(op_c, n_ops, arg_c, skip)
  end
  op_c, arg_c = op_c + n_ops, arg_c + argc
end

local status, payloads, prog_set, outcome = {}, {}, {}, {}
local function put(i, s, payload)
  status[i] = s
  if payload then payloads[#payloads + 1] = payload end
end
for i = 1, n do
  local id = ARGV[5 + i]
  local _, round, _, has_chain, n_ops = header(H, i)
  local v = state[i]
  if not runs[i] then
    local cur = prog_set[id] or v
    if outcome[id] == 'conflict' then
      put(i, 5)
    elseif cur and cur ~= 'copy' and rounds_of(cur) > round and byte(cur, 2) == 0 then
      put(i, 1, cur)
    elseif outcome[id] then
      put(i, 3, 'another copy of event ' .. id .. ' in this batch failed: ' .. outcome[id])
    else
      put(i, 3, 'progress of event ' .. id .. ' in this slot does not fit round ' .. round)
    end
  elseif refused[i] then
    put(i, 3, refused[i])
    outcome[id] = refused[i]
  else
    local complete, partial = rounds_of(v)
    local body, replies = '', nil
    if v then body, replies = split(v) end
    if not partial then replies = nil end
    -- Rounds this slot was not touched in.
    while complete < round do
      body = body .. EMPTY
      complete = complete + 1
    end
    replies = replies or {}
    local skip = #replies
    local conflict = has_chain and chain_moved(at_op[i], n_ops, at_arg[i], skip)
    if conflict then
      put(i, 5)
      outcome[id] = 'conflict'
    else
      local failed = apply_ops(at_op[i], n_ops, at_arg[i], skip, replies)
      if failed then
        if #replies > skip or v then
          prog_set[id] = string.char(complete, 1, 0) .. body .. cmsgpack.pack(replies)
        end
        put(i, 3, failed)
        outcome[id] = failed
      else
        local packed = cmsgpack.pack(replies)
        prog_set[id] = string.char(complete + 1, 0, 0) .. body .. packed
        put(i, 0, packed)
      end
    end
  end
end

local kv = {}
for id, v in pairs(prog_set) do
  kv[#kv + 1] = id
  kv[#kv + 1] = v
end
if #kv > 0 then
  hset_list(KEYS[1], kv)
  redis.call('EXPIRE', KEYS[1], ttl)
end
local out = { table.concat(status) }
for j = 1, #payloads do out[j + 1] = payloads[j] end
return out
