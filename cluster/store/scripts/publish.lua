-- Store one version under its content address, once. Identical content is a no-op; differing bytes
-- under the same address mean the stored blob was corrupted, and the verified bytes replace them.
--
-- KEYS[1] blob STRING   KEYS[2] meta HASH   KEYS[3] versions ZSET   KEYS[4] release HASH
-- KEYS[5] flow audit STREAM
-- ARGV[1] canonical bytes   ARGV[2] hash   ARGV[3] author   ARGV[4] message   ARGV[5] created_at
-- ARGV[6] size              ARGV[7] node_count               ARGV[8] audit_keep ARGV[9] flow
--
-- Returns {'created', parent} | {'exists'} | {'repaired'}

local stored = redis.call('GET', KEYS[1])
if stored == ARGV[1] then
  return {'exists'}
end
redis.call('SET', KEYS[1], ARGV[1])
if stored then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*',
    'action', 'repair', 'flow', ARGV[9], 'hash', ARGV[2], 'by', ARGV[3], 'at', ARGV[5])
  return {'repaired'}
end

-- The parent is whatever runs now: the version this one was most likely edited from.
local parent = redis.call('HGET', KEYS[4], 'hash') or ''
redis.call('HSET', KEYS[2], 'author', ARGV[3], 'message', ARGV[4], 'created_at', ARGV[5],
  'size', ARGV[6], 'node_count', ARGV[7], 'parent', parent)
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*',
  'action', 'publish', 'flow', ARGV[9], 'hash', ARGV[2], 'by', ARGV[3], 'message', ARGV[4],
  'parent', parent, 'at', ARGV[5])
return {'created', parent}
