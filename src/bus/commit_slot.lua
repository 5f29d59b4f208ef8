#!lua
-- astra-bus commit script, Redis Cluster form: one call applies one hash slot's share of
-- one handler round for a batch of events, atomically within that slot. The daemon reads
-- the entries, checks the done markers, then calls this once per slot touched, publishes
-- the derived events, marks the events done and acknowledges them last (commit.rs).
--
-- KEYS[1..3] the slot's progress generations for the group, newest first (event id -> what
--         this slot applied of every round so far); a generation is dedup_ttl/2 long and
--         lives 3 generations, like the done markers (progress cannot be removed when the
--         event completes: a slower copy of the same commit could then apply it again)
-- KEYS[4..] every key the slot's ops touch
-- ARGV[1] n (events), ARGV[2] the type every key must have (one letter per KEYS index, as
-- in commit.lua), ARGV[3] TTL of the newest generation (seconds), ARGV[4 .. 3+n] event
-- ids, then one record per event:
--   record length, round (0-based), has_chain (0/1), n_ops,
--   n_ops x [cmd, key index, n_args, args...]
--
-- Progress values and the shared helpers: commit_common.lua, put in front of this file. A
-- slot need not be touched in every round of an event, so a value with fewer rounds than
-- `round` is padded with empty rounds instead of refused.
--
-- Returns {-1, key index, actual type} when a key has the wrong type (nothing written), or
-- per event {status, payload, extra}: 0 applied (packed replies), 1 replayed (payload: the
-- stored progress), 3 failed (payload: reason; extra = 'partial' when some ops were applied
-- and recorded), 5 hash-chain conflict (nothing written).

local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[3])
local EMPTY = cmsgpack.pack({})

local bad = wrong_type(4, ARGV[2])
if bad then return bad end

local p0, p1, p2 = hmget(KEYS[1], 4, n), hmget(KEYS[2], 4, n), hmget(KEYS[3], 4, n)

-- One walk: where each record starts, which will run, their preconditions.
local at, state, runs, refused = {}, {}, {}, {}
local latest = {}
local pos = 4 + n
for i = 1, n do
  at[i] = pos
  local id = ARGV[3 + i]
  local round = tonumber(ARGV[pos + 1])
  local v = latest[id]
  if v == nil then v = p0[i] or p1[i] or p2[i] end
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
    refused[i] = refusal(pos + 4, tonumber(ARGV[pos + 3]), skip)
  end
  pos = pos + tonumber(ARGV[pos])
end

local out, prog_set, outcome = {}, {}, {}
for i = 1, n do
  local id = ARGV[3 + i]
  local p = at[i]
  local round = tonumber(ARGV[p + 1])
  local has_chain = ARGV[p + 2] == '1'
  local n_ops = tonumber(ARGV[p + 3])
  local v = state[i]
  local status, payload, extra = 0, '', ''
  if not runs[i] then
    local cur = prog_set[id] or v
    if outcome[id] == 'conflict' then
      status, payload = 5, 'another copy of event ' .. id .. ' in this batch met a moved hash-chain head'
    elseif cur and cur ~= 'copy' and rounds_of(cur) > round and string.byte(cur, 2) == 0 then
      status, payload = 1, cur
    elseif outcome[id] then
      status, payload = 3, 'another copy of event ' .. id .. ' in this batch failed: ' .. outcome[id]
    else
      status, payload = 3, 'progress of event ' .. id .. ' in this slot does not fit round ' .. round
    end
  elseif refused[i] then
    status, payload = 3, refused[i]
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
    local conflict = has_chain and chain_moved(p + 4, n_ops, skip)
    if conflict then
      status, payload = 5, conflict
      outcome[id] = 'conflict'
    else
      local _, failed = apply_ops(p + 4, n_ops, skip, replies)
      if failed then
        prog_set[id] = string.char(complete, 1, 0) .. body .. cmsgpack.pack(replies)
        status, payload, extra = 3, failed, 'partial'
        outcome[id] = failed
      else
        local packed = cmsgpack.pack(replies)
        prog_set[id] = string.char(complete + 1, 0, 0) .. body .. packed
        payload = packed
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = payload
  out[#out + 1] = extra
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
return out
