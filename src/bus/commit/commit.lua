#!lua
-- astra-bus commit script (one Redis node): one call commits one handler round for a batch
-- of entries that one group read from one stream, atomically. See commit.rs for the
-- encoding side, commit_common.lua (put in front of this file) for the packed headers and
-- the helpers; this file only interprets what the daemon prepared.
--
-- KEYS[1] the stream the entries were read from (acknowledged here)
-- KEYS[2] the group's progress hash: event id -> rounds applied so far (no TTL; removed
--         when the event completes)
-- KEYS[3..4] the group's done markers, newest generation first (event id -> "D"); a
--         generation is dedup_ttl long and lives until the end of the next one, so a done
--         event is remembered for at least dedup_ttl after it completed
-- KEYS[5..] every key the ops and derived events touch
--
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] n (events), ARGV[4] the type every key must
-- have (one letter per KEYS index: h hash, z zset, s set, t string, l list, x stream,
-- - unchecked), ARGV[5] TTL of the newest done-marker generation (seconds), ARGV[6] H,
-- ARGV[7] O, ARGV[8] E (see the prelude), ARGV[9] and ARGV[10] the lowest and highest entry
-- id of the batch, ARGV[11] the number of templates, then the templates of the derived
-- events: k, k field names, k kind letters (c constant, s the event's own value, e the
-- source event id), the constants; then the n event ids, the n entry ids, and every
-- event's arguments (op arguments, then the `s` values of its derived events).
--
-- Order of work: every check before the first write. (1) key types, (2) which entries are
-- still pending for this consumer (XPENDING: a zombie, or a consumer whose entry was
-- dead-lettered or finished by another consumer meanwhile, finds it gone and writes
-- nothing), (3) markers, (4) the value preconditions of every increment of every event
-- that will run (integer, no i64 overflow), then (5) the writes, event by event, with
-- pcall so nothing can abort the script half way, (6) markers and one XACK per batch.
--
-- Returns {-1, key index, actual type} when a key has the wrong type (nothing written);
-- otherwise {statuses, payloads...}: one status digit per event and one payload for each
-- event whose status carries one, in event order. 0 applied (payload, for a non-final
-- round only: its packed replies), 1 replayed (payload: the stored progress; the daemon
-- takes its round), 2 already done (acknowledged), 3 failed (payload: reason; nothing of
-- the event written unless it was applied half way: then that is recorded and a
-- redelivery resumes after it), 4 progress missing for a round > 0 (payload: reason),
-- 5 hash-chain conflict (a head moved; nothing written), 6 not pending for this consumer
-- any more (nothing written, not acknowledged).

local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
local H, E = ARGV[6], ARGV[8]
O = ARGV[7]
check_incr = byte(H, 1) == 1
local src, progress_key = KEYS[1], KEYS[2]

-- (1) Key types.
local bad = wrong_type(5, ARGV[4])
if bad then return bad end

-- Templates of derived events: an XADD argument list with the constants in place, and
-- where the varying values go.
local pos = 12
local tpl = {}
for t = 1, tonumber(ARGV[11]) do
  local k = tonumber(ARGV[pos])
  local kinds = ARGV[pos + 1 + k]
  local arr, slots, evs = { false, '*' }, {}, {}
  local c = pos + 2 + k
  for j = 1, k do
    arr[#arr + 1] = ARGV[pos + j]
    local kd = byte(kinds, j)
    if kd == 99 then
      arr[#arr + 1] = ARGV[c]
      c = c + 1
    elseif kd == 101 then
      arr[#arr + 1] = false
      evs[#evs + 1] = #arr
    else
      arr[#arr + 1] = false
      slots[#slots + 1] = #arr
    end
  end
  tpl[t] = { arr = arr, slots = slots, evs = evs }
  pos = c
end
local ids, entries = pos, pos + n

-- (2) Still ours? One range query over the batch's entries (a few entries: one query
-- each, since other entries of ours may lie between them).
local ours = {}
local cap = n + 512
local rows = {}
if n > 8 then
  rows = redis.call('XPENDING', src, group, ARGV[9], ARGV[10], cap, consumer)
  for j = 1, #rows do ours[rows[j][1]] = true end
end
if n <= 8 or #rows >= cap then
  -- More of ours in that range than asked for: look up the others one by one.
  for i = 0, n - 1 do
    local e = ARGV[entries + i]
    if not ours[e] and #redis.call('XPENDING', src, group, e, e, 1, consumer) > 0 then
      ours[e] = true
    end
  end
end

-- (3) Markers: newest first. Most groups have no event between rounds most of the time:
-- then there is no progress to look up.
local d0, d1 = hmget(KEYS[3], ids, n), hmget(KEYS[4], ids, n)
local prog = {}
if redis.call('HLEN', progress_key) > 0 then prog = hmget(progress_key, ids, n) end

-- (4) One walk over the events: where each one's ops, derived events and arguments start,
-- the state it is in, which will run, and the preconditions of those that will. A later
-- copy of an event in this batch sees what the earlier copy will have done.
local at_op, at_emit, at_arg, state, runs, refused = {}, {}, {}, {}, {}, {}
local h_round, h_final, h_chain, h_ops, h_emits = {}, {}, {}, {}, {}
local latest, dup = {}, {}
local op_c, emit_c, arg_c = 1, 1, entries + n
for i = 1, n do
  at_op[i], at_emit[i], at_arg[i] = op_c, emit_c, arg_c
  local argc, round, final, chain, n_ops, n_emits = header(H, i)
  h_round[i], h_final[i], h_chain[i], h_ops[i], h_emits[i] = round, final, chain, n_ops, n_emits
  local id, entry = ARGV[ids + i - 1], ARGV[entries + i - 1]
  local v = latest[id]
  if v == nil then
    v = d0[i] or d1[i] or prog[i]
  else
    dup[id] = true
  end
  state[i] = v
  if ours[entry] and v ~= 'D' and v ~= 'copy' then
    local complete, partial = rounds_of(v)
    if complete == round then
      runs[i] = true
      latest[id] = 'copy'
      if n_ops > 0 then
        local skip = 0
        if partial then
          local _, rep = split(v)
          skip = #rep
        end
        refused[i] = refusal(op_c, n_ops, arg_c, skip)
      end
    end
  end
  op_c, emit_c, arg_c = op_c + n_ops, emit_c + n_emits, arg_c + argc
end

-- (5) The writes, event by event.
local status, payloads = {}, {}
local acks, done, dels = {}, {}, {}
local prog_set = {}
local n_done = 0
local outcome = {} -- event id -> 'D' (completed here), 'conflict', or why an earlier copy failed
local function put(i, s, payload)
  status[i] = s
  if payload then payloads[#payloads + 1] = payload end
end
for i = 1, n do
  local id, entry = ARGV[ids + i - 1], ARGV[entries + i - 1]
  local round, final, has_chain, n_ops, n_emits = h_round[i], h_final[i], h_chain[i], h_ops[i], h_emits[i]
  local v = state[i]
  if not ours[entry] then
    put(i, 6)
  elseif v == 'D' or outcome[id] == 'D' then
    put(i, 2)
    acks[#acks + 1] = entry
  elseif not runs[i] then
    local cur = prog_set[id]
    if cur and rounds_of(cur) > round and byte(cur, 2) == 0 then
      put(i, 1, cur)
    elseif outcome[id] == 'conflict' then
      put(i, 5)
    elseif outcome[id] then
      put(i, 3, 'another copy of event ' .. id .. ' in this batch failed: ' .. outcome[id])
    elseif v and v ~= 'copy' and rounds_of(v) > round then
      put(i, 1, v)
    else
      put(i, 4, 'progress of event ' .. id .. ' lost before round ' .. round)
    end
  elseif refused[i] then
    put(i, 3, refused[i])
    if dup[id] then outcome[id] = refused[i] end
  else
    local complete, _, emitted = rounds_of(v)
    local body, replies = '', nil
    if v then body, replies = split(v) end
    replies = replies or {}
    local skip = #replies
    local conflict = has_chain and chain_moved(at_op[i], n_ops, at_arg[i], skip)
    if conflict then
      put(i, 5)
      if dup[id] then outcome[id] = 'conflict' end
    else
      local failed, a = nil, at_arg[i]
      if n_ops > 0 then
        failed = apply_ops(at_op[i], n_ops, a, skip, replies)
        -- The derived events' values follow the op arguments.
        for k = 1, n_ops do
          local _, _, na = op_at(at_op[i] + k - 1)
          a = a + na
        end
      end
      local added = emitted
      if final and not failed then
        for e = 1, n_emits do
          local q = (at_emit[i] + e - 2) * 5 + 1
          local t1, t2, k1, k2, k3 = byte(E, q, q + 4)
          local t = tpl[t1 * 256 + t2]
          local arr = t.arr
          if e > emitted and not failed then
            arr[1] = KEYS[(k1 * 256 + k2) * 256 + k3]
            for s = 1, #t.slots do arr[t.slots[s]] = ARGV[a + s - 1] end
            for s = 1, #t.evs do arr[t.evs[s]] = id end
            local r = redis.pcall('XADD', unpack(arr))
            if type(r) == 'table' and r['err'] then
              failed = 'XADD ' .. arr[1] .. ': ' .. r['err']
            else
              added = e
            end
          end
          a = a + #t.slots
        end
      end
      if failed then
        -- What was applied is recorded, so nothing is applied twice: a redelivery, or a
        -- replay of the dead letter, resumes after it.
        if #replies > skip or added > emitted or v then
          prog_set[id] = string.char(complete, 1, added) .. body .. cmsgpack.pack(replies)
        end
        put(i, 3, failed)
        if dup[id] then outcome[id] = failed end
      elseif final then
        done[n_done + 1] = id
        done[n_done + 2] = 'D'
        n_done = n_done + 2
        if v or prog_set[id] then dels[#dels + 1] = id end
        prog_set[id] = nil
        if dup[id] then outcome[id] = 'D' end
        acks[#acks + 1] = entry
        status[i] = 0
      else
        local packed = cmsgpack.pack(replies)
        prog_set[id] = string.char(complete + 1, 0, 0) .. body .. packed
        put(i, 0, packed)
      end
    end
  end
end

-- (6) Markers, progress and acknowledgements, batched.
if n_done > 0 then
  hset_list(KEYS[3], done)
  redis.call('EXPIRE', KEYS[3], ttl)
end
local kv = {}
for id, v in pairs(prog_set) do
  kv[#kv + 1] = id
  kv[#kv + 1] = v
end
if #kv > 0 then hset_list(progress_key, kv) end
for i = 1, #dels, 1000 do
  redis.call('HDEL', progress_key, unpack(dels, i, math.min(i + 999, #dels)))
end
for i = 1, #acks, 1000 do
  redis.call('XACK', src, group, unpack(acks, i, math.min(i + 999, #acks)))
end
local out = { table.concat(status) }
for j = 1, #payloads do out[j + 1] = payloads[j] end
return out
