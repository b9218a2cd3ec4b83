-- The rollout record of one flow (its latest two-phase cutover): begin a rollout, or move a record on
-- only while it is still the rollout and state the caller means. A record in flight ('preparing' or
-- 'committing') that has not outlived its timeout refuses a new rollout: rollouts of a flow are serial.
--
-- KEYS[1] rollout HASH   KEYS[2] release HASH (begin)   KEYS[3] blob STRING of the version (begin)
--
-- begin:   ARGV[1] 'begin'   ARGV[2] now (unix s)   ARGV[3] grace (s)   ARGV[4..] field, value, ...
--          Returns {'ok', current generation} (the record is written with generation = current + 1)
--                | {'busy', id, hash, by, started_at}   a rollout of the flow is in flight
--                | {'missing', current generation}        the version's blob is gone (gc)
-- advance: ARGV[1] 'advance'  ARGV[2] rollout id  ARGV[3] state it must be in  ARGV[4..] field, value, ...
--          Replaces the record and returns 1 only while it is rollout ARGV[2] in state ARGV[3]; else 0.

local op = ARGV[1]

local function replace(first)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], unpack(ARGV, first))
end

if op == 'begin' then
  local now, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
  local r = redis.call('HMGET', KEYS[1], 'state', 'started_at', 'timeout_s', 'id', 'hash', 'by')
  if r[1] == 'preparing' or r[1] == 'committing' then
    local deadline = (tonumber(r[2]) or 0) + (tonumber(r[3]) or 0) + grace
    if now < deadline then
      return {'busy', r[4] or '', r[5] or '', r[6] or '', r[2] or ''}
    end
  end
  local generation = tonumber(redis.call('HGET', KEYS[2], 'generation')) or 0
  if redis.call('EXISTS', KEYS[3]) == 0 then
    return {'missing', generation}
  end
  replace(4)
  redis.call('HSET', KEYS[1], 'generation', string.format('%d', generation + 1))
  return {'ok', generation}
end

if op == 'advance' then
  local r = redis.call('HMGET', KEYS[1], 'id', 'state')
  if r[1] ~= ARGV[2] or r[2] ~= ARGV[3] then
    return 0
  end
  replace(4)
  return 1
end

return redis.error_reply('unknown rollout operation ' .. tostring(op))
