-- Prepended to the scripts that announce a release (activate.lua, canary.lua): what the release event
-- carries besides its own fields (docs/protocol.md, "What a release event carries"), so a consumer
-- needs no read before it swaps. Call it after the record is written and before the PUBLISH.
--
-- Returns ',"record":{...}' (every field of the record HASH, as text) and, when `blob_hash` is not ''
-- and its stored bytes are at most `limit` long, ',"blob_hash":"<hash>","blob_size":N,"blob":<bytes>'
-- with the bytes raw, last: the caller closes the object right after.
local function release_extras(record_key, blob_key, blob_hash, limit)
  local flat = redis.call('HGETALL', record_key)
  local fields = {}
  for i = 1, #flat, 2 do
    fields[#fields + 1] = cjson.encode(flat[i]) .. ':' .. cjson.encode(flat[i + 1])
  end
  local out = ',"record":{' .. table.concat(fields, ',') .. '}'
  if blob_hash ~= '' and limit > 0 then
    local size = redis.call('STRLEN', blob_key)
    if size > 0 and size <= limit then
      out = out .. ',"blob_hash":' .. cjson.encode(blob_hash) .. ',"blob_size":' .. string.format('%d', size) ..
        ',"blob":' .. redis.call('GET', blob_key)
    end
  end
  return out
end

