-- Start, resize, promote or abort a flow's canary: compare-and-set on the generation, then release
-- record, history, audit entry and change event in one atomic step, exactly like an activation.
--
-- KEYS[1] release HASH   KEYS[2] history LIST   KEYS[3] blob STRING of ARGV[3]   KEYS[4] flow audit STREAM
-- ARGV[1] op: 'start' | 'set' | 'promote' | 'abort'
-- ARGV[2] flow           ARGV[3] canary hash (start)     ARGV[4] percent text (start, set)
-- ARGV[5] expected generation ('' = any)                 ARGV[6] by          ARGV[7] reason
-- ARGV[8] at, as JSON number text (the same text goes into the record)
-- ARGV[9] history_keep   ARGV[10] audit_keep   ARGV[11] event channel
-- ARGV[12], ARGV[13], ARGV[14]: event payload = ARGV[12] .. hash .. ARGV[13] .. generation .. ARGV[14]
-- ARGV[15] by as a JSON string   ARGV[16] reason as a JSON string
-- ARGV[17] the most bytes of the canary version a start's event carries ('0' or absent: none; carry.lua)
--
-- Returns {'ok', generation, previous hash, hash, canary hash, percent, started_at, canary_by, unpin_gen,
--         revoked}
--       | {'conflict', generation} | {'no_release', 0} | {'no_canary', generation}
--       | {'canary_running', generation, canary hash} | {'missing', generation} | {'is_stable', generation}

local op = ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'generation', 'hash', 'canary_hash', 'canary_percent',
  'canary_started_at', 'canary_by', 'unpin_generation', 'revoked')
local generation = tonumber(cur[1]) or 0
local stable = cur[2] or ''
local canary = cur[3] or ''

if generation == 0 or stable == '' then
  return {'no_release', 0}
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= generation then
  return {'conflict', generation}
end

local hash, c_hash, c_percent, c_started, c_by = stable, '', '', '', ''
if op == 'start' then
  if canary ~= '' then
    return {'canary_running', generation, canary}
  end
  if ARGV[3] == stable then
    return {'is_stable', generation}
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    return {'missing', generation}
  end
  c_hash, c_percent, c_started, c_by = ARGV[3], ARGV[4], ARGV[8], ARGV[6]
elseif canary == '' then
  return {'no_canary', generation}
elseif op == 'set' then
  c_hash, c_percent, c_started, c_by = canary, ARGV[4], cur[5] or ARGV[8], cur[6] or ''
elseif op == 'promote' then
  hash = canary
elseif op ~= 'abort' then
  return redis.error_reply('unknown canary operation ' .. op)
end

local new = string.format('%d', generation + 1)
local unpin = cur[7] or '0'
local action = 'canary_' .. op

-- Versions sessions may no longer stay pinned to (docs/canary.md), newest first, at most 16: the record's
-- list, plus an aborted canary, minus the versions this release serves.
local function revoked_after(listed, add, stable_hash, canary_hash)
  local out, seen = {}, {[stable_hash] = true, [canary_hash] = true, [''] = true}
  local function push(digest)
    if not seen[digest] and #out < 16 then
      seen[digest] = true
      out[#out + 1] = digest
    end
  end
  push(add)
  for digest in string.gmatch(listed or '', '[^,]+') do push(digest) end
  return table.concat(out, ',')
end
local revoked = revoked_after(cur[8], op == 'abort' and canary or '', hash, c_hash)

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1],
  'hash', hash, 'generation', new, 'previous_hash', stable,
  'activated_by', ARGV[6], 'activated_at', ARGV[8], 'reason', ARGV[7], 'action', action,
  'unpin_generation', unpin)
if c_hash ~= '' then
  redis.call('HSET', KEYS[1], 'canary_hash', c_hash, 'canary_percent', c_percent,
    'canary_started_at', c_started, 'canary_by', c_by)
end
if revoked ~= '' then
  redis.call('HSET', KEYS[1], 'revoked', revoked)
end

local function json_or_null(text, quoted)
  if text == '' then return 'null' end
  if quoted then return cjson.encode(text) end
  return text
end
local entry = '{"generation":' .. new .. ',"previous_hash":' .. cjson.encode(stable) ..
  ',"hash":' .. cjson.encode(hash) .. ',"activated_by":' .. ARGV[15] .. ',"activated_at":' .. ARGV[8] ..
  ',"reason":' .. ARGV[16] .. ',"action":' .. cjson.encode(action) ..
  ',"canary_hash":' .. json_or_null(c_hash, true) .. ',"canary_percent":' .. json_or_null(c_percent) ..
  ',"canary_started_at":' .. json_or_null(c_started) .. ',"canary_by":' .. json_or_null(c_by, true) ..
  ',"unpin_generation":' .. unpin ..
  (revoked == '' and '' or ',"revoked":["' .. (string.gsub(revoked, ',', '","')) .. '"]') .. '}'
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[9]) - 1)

redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*',
  'action', action, 'flow', ARGV[2], 'hash', hash, 'generation', new, 'previous_hash', stable,
  'canary_hash', (op == 'promote' or op == 'abort') and canary or c_hash, 'canary_percent', c_percent,
  'by', ARGV[6], 'reason', ARGV[7], 'at', ARGV[8])

local extras = release_extras(KEYS[1], KEYS[3], op == 'start' and ARGV[3] or '', tonumber(ARGV[17]) or 0)
redis.call('PUBLISH', ARGV[11], ARGV[12] .. hash .. ARGV[13] .. new .. extras .. ARGV[14])
return {'ok', generation + 1, stable, hash, c_hash, c_percent, c_started, c_by, tonumber(unpin), revoked}
