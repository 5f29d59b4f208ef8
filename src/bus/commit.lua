#!lua
-- astra-bus commit script (one Redis node): one call commits one handler round for a batch
-- of entries that one group read from one stream, atomically. See commit.rs for the
-- encoding side; this file only interprets what the daemon prepared.
--
-- KEYS[1] the stream the entries were read from (acknowledged here)
-- KEYS[2] the group's progress hash: event id -> rounds applied so far (no TTL; removed
--         when the event completes)
-- KEYS[3..5] the group's done markers, newest generation first (event id -> "D"); a
--         generation is dedup_ttl/2 long and lives 3 generations, so a done event is
--         remembered for at least dedup_ttl after it completed
-- KEYS[6..] every key the ops and derived events touch
--
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] n (events), ARGV[4] the type every key must
-- have (one letter per KEYS index: h hash, z zset, s set, t string, l list, x stream,
-- - unchecked), ARGV[5] TTL of the newest done-marker generation (seconds),
-- ARGV[6 .. 5+n] event ids, ARGV[6+n .. 5+2n] entry ids, ARGV[6+2n] the word JUSTID, then
-- one record per event:
--   record length (this field included), round (0-based), final (0/1), has_chain (0/1),
--   n_ops, n_emits, n_ops x [cmd, key index, n_args, args...],
--   n_emits x [stream key index, n_args, field, value, ...]
-- A CHAINCAS op's args are [log key index, expected head, new head, log entry].
--
-- Progress values and the shared helpers: commit_common.lua, put in front of this file.
--
-- Order of work: every check before the first write. (1) key types, (2) which entries are
-- still pending in the group (XCLAIM JUSTID: a zombie, or a consumer whose entry was
-- dead-lettered or finished by another consumer meanwhile, finds it gone and writes
-- nothing), (3) markers, (4) the value preconditions of every increment of every event
-- that will run (integer, no i64 overflow), then (5) the writes, event by event, with
-- pcall so nothing can abort the script half way, (6) markers and one XACK per batch.
--
-- Returns {-1, key index, actual type} when a key has the wrong type (nothing written), or
-- per event a triple {status, payload, extra}: 0 applied (payload: packed replies of a
-- non-final round), 1 replayed (payload: the stored progress; the daemon takes its round),
-- 2 already done (acknowledged), 3 failed (payload: reason; nothing of the event written
-- unless extra = 'partial': then its progress is recorded and a redelivery resumes after
-- what was applied), 4 progress missing for a round > 0 (payload: reason), 5 hash-chain
-- conflict (a head moved; nothing written), 6 not pending in the group any more (nothing
-- written, not acknowledged).

local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
local src, progress_key = KEYS[1], KEYS[2]

-- (1) Key types.
local bad = wrong_type(6, ARGV[4])
if bad then return bad end

-- (2) Still ours? ARGV[6+2n] is the word JUSTID, so one unpack covers ids and option.
local ours = {}
if n <= 1000 then
  local r = redis.call('XCLAIM', src, group, consumer, 0, unpack(ARGV, 6 + n, 6 + 2 * n))
  for j = 1, #r do ours[r[j]] = true end
else
  for i = 0, n - 1, 1000 do
    local a = { src, group, consumer, 0 }
    for k = 6 + n + i, 6 + n + math.min(i + 999, n - 1) do a[#a + 1] = ARGV[k] end
    a[#a + 1] = 'JUSTID'
    local r = redis.call('XCLAIM', unpack(a))
    for j = 1, #r do ours[r[j]] = true end
  end
end

-- (3) Markers: newest first.
local d0, d1, d2 = hmget(KEYS[3], 6, n), hmget(KEYS[4], 6, n), hmget(KEYS[5], 6, n)
local prog = hmget(progress_key, 6, n)

-- (4) One walk over the records: where each starts, the state its event is in, which of
-- them will run, and the preconditions of those that will. A later copy of an event in
-- this batch sees what the earlier copy will have done.
local at, state, runs, refused = {}, {}, {}, {}
local latest = {}
local pos = 7 + 2 * n
for i = 1, n do
  at[i] = pos
  local id, entry = ARGV[5 + i], ARGV[5 + n + i]
  local round = tonumber(ARGV[pos + 1])
  local v = latest[id]
  if v == nil then v = d0[i] or d1[i] or d2[i] or prog[i] end
  state[i] = v
  local complete, partial = rounds_of(v)
  if ours[entry] and v ~= 'D' and v ~= 'copy' and complete == round then
    runs[i] = true
    latest[id] = 'copy'
    local skip = 0
    if partial then
      local _, rep = split(v)
      skip = #rep
    end
    refused[i] = refusal(pos + 6, tonumber(ARGV[pos + 4]), skip)
  end
  pos = pos + tonumber(ARGV[pos])
end

-- (5) The writes, event by event.
local out, acks, done, dels = {}, {}, {}, {}
local prog_set = {}
local outcome = {} -- event id -> 'D' (completed here), 'conflict', or why an earlier copy failed
for i = 1, n do
  local id, entry = ARGV[5 + i], ARGV[5 + n + i]
  local p = at[i]
  local round, final = tonumber(ARGV[p + 1]), ARGV[p + 2] == '1'
  local has_chain = ARGV[p + 3] == '1'
  local n_ops, n_emits = tonumber(ARGV[p + 4]), tonumber(ARGV[p + 5])
  local v = state[i]
  local status, payload, extra = 0, '', ''
  if not ours[entry] then
    status = 6
  elseif v == 'D' or outcome[id] == 'D' then
    status = 2
    acks[#acks + 1] = entry
  elseif not runs[i] then
    if prog_set[id] and rounds_of(prog_set[id]) > round and string.byte(prog_set[id], 2) == 0 then
      status, payload = 1, prog_set[id]
    elseif outcome[id] == 'conflict' then
      status, payload = 5, 'another copy of event ' .. id .. ' in this batch met a moved hash-chain head'
    elseif outcome[id] then
      status, payload = 3, 'another copy of event ' .. id .. ' in this batch failed: ' .. outcome[id]
    elseif v and v ~= 'copy' and rounds_of(v) > round then
      status, payload = 1, v
    else
      status, payload = 4, 'progress of event ' .. id .. ' lost before round ' .. round
    end
  elseif refused[i] then
    status, payload = 3, refused[i]
    outcome[id] = refused[i]
  else
    local complete, _, emitted = rounds_of(v)
    local body, replies = '', nil
    if v then body, replies = split(v) end
    replies = replies or {}
    local skip = #replies
    local conflict = has_chain and chain_moved(p + 6, n_ops, skip)
    if conflict then
      status, payload = 5, conflict
      outcome[id] = 'conflict'
    else
      local q, failed = apply_ops(p + 6, n_ops, skip, replies)
      local added = emitted
      if final and not failed then
        for e = 1, n_emits do
          local stream, na = KEYS[tonumber(ARGV[q])], tonumber(ARGV[q + 1])
          if e > emitted and not failed then
            local r = redis.pcall('XADD', stream, '*', unpack(ARGV, q + 2, q + 1 + na))
            if type(r) == 'table' and r['err'] then
              failed = 'XADD ' .. stream .. ': ' .. r['err']
            else
              added = e
            end
          end
          q = q + 2 + na
        end
      end
      if failed then
        -- What was applied is recorded, so nothing is applied twice: a redelivery, or a
        -- replay of the dead letter, resumes after it.
        prog_set[id] = string.char(complete, 1, added) .. body .. cmsgpack.pack(replies)
        status, payload, extra = 3, failed, 'partial'
        outcome[id] = failed
      elseif final then
        done[#done + 1] = id
        if v or prog_set[id] then dels[#dels + 1] = id end
        prog_set[id] = nil
        outcome[id] = 'D'
        acks[#acks + 1] = entry
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

-- (6) Markers, progress and acknowledgements, batched.
if #done > 0 then
  local kv = {}
  for j = 1, #done do
    kv[2 * j - 1] = done[j]
    kv[2 * j] = 'D'
  end
  hset_list(KEYS[3], kv)
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
return out
