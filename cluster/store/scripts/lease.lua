-- A lease: one holder at a time for a named task (a control-plane guard), renewed by its holder and
-- taken over by another once it lapses (its holder stopped renewing: it died or lost Redis).
--
-- KEYS[1] lease STRING (the holder's id, with a TTL)
-- ARGV[1] 'hold' | 'release'   ARGV[2] holder id   ARGV[3] TTL in ms (hold)
--
-- hold:    take the lease if free, or renew it if ARGV[2] holds it; returns 1 if ARGV[2] holds it now, else 0
-- release: give it up if ARGV[2] holds it (so another holder need not wait for the TTL); returns 1 or 0

local holder = redis.call('GET', KEYS[1])
if ARGV[1] == 'hold' then
  if holder == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  if holder then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if ARGV[1] == 'release' then
  if holder == ARGV[2] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
return redis.error_reply('unknown lease operation ' .. tostring(ARGV[1]))
