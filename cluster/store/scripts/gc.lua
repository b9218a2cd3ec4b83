-- Delete the given versions of one flow unless something may still need them: the release record or a
-- history entry references them, the flow's rollout in flight names them, or a live session pin does.
-- References are re-read here, atomically with the deletes, so a concurrent activation cannot lose its
-- blob: either it ran first (and the blob is referenced) or it runs after (and finds it missing); the
-- same holds for a two-phase rollout, whose `preparing` record is written atomically with its blob check.
--
-- KEYS[1] versions ZSET   KEYS[2] release HASH   KEYS[3] history LIST   KEYS[4] flow audit STREAM
-- KEYS[5] rollout HASH
-- KEYS[6..] blob STRING, meta HASH pairs, one pair per candidate, in ARGV order
-- ARGV[1] by   ARGV[2] at   ARGV[3] audit_keep   ARGV[4] flow   ARGV[5] '1' = dry run (delete nothing)
-- ARGV[6] n: how many hashes follow that live session pins name   ARGV[7 .. 6+n] those hashes
-- ARGV[7+n ..] candidate hashes
--
-- Returns {bytes freed, removed hash, ...} (what would be removed, on a dry run)

local referenced = {}
local function is_hash_field(name)
  -- 'hash', 'previous_hash', and any future '*_hash' field (a canary version, say) hold references.
  return type(name) == 'string' and string.sub(name, -4) == 'hash'
end

local release = redis.call('HGETALL', KEYS[2])
for i = 1, #release, 2 do
  if is_hash_field(release[i]) then referenced[release[i + 1]] = true end
end
for _, raw in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == 'table' then
    for name, value in pairs(entry) do
      if is_hash_field(name) and type(value) == 'string' then referenced[value] = true end
    end
  end
end
-- A rollout still preparing or committing (even one its control plane left behind) is about to need it.
local rollout = redis.call('HMGET', KEYS[5], 'state', 'hash')
if (rollout[1] == 'preparing' or rollout[1] == 'committing') and rollout[2] then
  referenced[rollout[2]] = true
end
local pins = tonumber(ARGV[6])
for i = 7, 6 + pins do referenced[ARGV[i]] = true end

local dry = ARGV[5] == '1'
local first = 7 + pins
local freed = 0
local removed = {}
for i = first, #ARGV do
  local digest = ARGV[i]
  if not referenced[digest] then
    local blob_key = KEYS[6 + (i - first) * 2]
    local meta_key = KEYS[7 + (i - first) * 2]
    freed = freed + redis.call('STRLEN', blob_key)
    if not dry then
      redis.call('DEL', blob_key, meta_key)
      redis.call('ZREM', KEYS[1], digest)
    end
    removed[#removed + 1] = digest
  end
end

if #removed > 0 and not dry then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*',
    'action', 'gc', 'flow', ARGV[4], 'by', ARGV[1], 'at', ARGV[2], 'count', #removed,
    'hashes', table.concat(removed, ','))
end
local reply = {freed}
for _, digest in ipairs(removed) do reply[#reply + 1] = digest end
return reply
