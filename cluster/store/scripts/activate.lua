-- Activate one version of one flow: compare-and-set on the generation, then release record, history,
-- audit entry and change event, all in one atomic step so no event ever precedes its release record.
--
-- KEYS[1] release HASH   KEYS[2] history LIST   KEYS[3] blob STRING   KEYS[4] flow audit STREAM
-- ARGV[1] flow           ARGV[2] hash           ARGV[3] expected generation ('' = any)
-- ARGV[4] activated_by   ARGV[5] reason         ARGV[6] action         ARGV[7] activated_at (unix s)
-- ARGV[8] history_keep   ARGV[9] audit_keep     ARGV[10] event channel
-- ARGV[11] event head    ARGV[12] event tail    (payload = head .. generation .. tail, see events.py)
-- ARGV[13] history body: JSON object of the release fields except generation and previous_hash
-- ARGV[14] '1' to unpin every session of the flow (unpin_generation = the new generation); optional
-- ARGV[15] the most bytes of the version the event carries ('0' or absent: none; see carry.lua)
--
-- Returns {'ok', generation, previous_hash, unpin_generation, revoked}
--       | {'conflict', actual generation} | {'missing', generation}

local current = redis.call('HMGET', KEYS[1], 'generation', 'hash', 'unpin_generation', 'revoked')
local generation = tonumber(current[1]) or 0
local previous = current[2] or ''

if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= generation then
  return {'conflict', generation}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {'missing', generation}
end

local new = string.format('%d', generation + 1)
-- Session pins older than the newest unpinning release are ignored, so the mark outlives later releases.
local unpin = ARGV[14] == '1' and new or (current[3] or '0')

-- Versions sessions may no longer stay pinned to (docs/canary.md), newest first, at most 16: the record's
-- list, plus the version an automatic rollback moves away from (the actor is
-- cluster.store.release.AUTO_ROLLBACK_ACTOR), minus the version released now.
local function revoked_after(listed, add, released)
  local out, seen = {}, {[released] = true, [''] = true}
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
local auto_rollback = ARGV[6] == 'rollback' and ARGV[4] == 'auto-rollback'
local revoked = revoked_after(current[4], auto_rollback and previous or '', ARGV[2])

-- The record is exactly one release: fields of an older release (or a running canary) do not linger.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1],
  'hash', ARGV[2], 'generation', new, 'previous_hash', previous,
  'activated_by', ARGV[4], 'activated_at', ARGV[7], 'reason', ARGV[5], 'action', ARGV[6],
  'unpin_generation', unpin)
if revoked ~= '' then
  redis.call('HSET', KEYS[1], 'revoked', revoked)
end

-- previous_hash as the record holds it: '' before the first release (a Redis hash has no null).
local entry = '{"generation":' .. new .. ',"previous_hash":' .. cjson.encode(previous) .. ',' ..
  (revoked == '' and '' or '"revoked":["' .. (string.gsub(revoked, ',', '","')) .. '"],') ..
  string.sub(ARGV[13], 2)
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[8]) - 1)

redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*',
  'action', ARGV[6], 'flow', ARGV[1], 'hash', ARGV[2], 'generation', new,
  'previous_hash', previous, 'by', ARGV[4], 'reason', ARGV[5], 'at', ARGV[7],
  'unpin', ARGV[14] == '1' and '1' or '0')

local extras = release_extras(KEYS[1], KEYS[3], ARGV[2], tonumber(ARGV[15]) or 0)
redis.call('PUBLISH', ARGV[10], ARGV[11] .. new .. extras .. ARGV[12])
return {'ok', generation + 1, previous, tonumber(unpin), revoked}
