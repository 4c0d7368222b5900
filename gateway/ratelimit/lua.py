"""The limiter's Lua scripts (pure text; run by ``ratelimit_redis``, modelled by ``ratelimit``).

Each script runs atomically on one Redis (or one Cluster slot), on Redis's own clock
(``TIME``), and returns integer microseconds as strings (Lua numbers would be truncated).
Every command they call is in the README's ``ACL SETUSER`` line: ``TIME``, ``GET``, ``SET``,
``ZREMRANGEBYSCORE``, ``ZCARD``, ``ZRANGE``, ``ZADD``, ``PEXPIRE``, ``ZSCORE``, ``ZREM``.
"""

#: KEYS: GCRA keys (n), then the concurrency ZSET if any.
#: ARGV: now override (µs, '' = Redis TIME), n, then (T, tau, cost) per rule,
#: then (limit, lease ttl µs, lease member) if concurrency, then the deadline (µs on Redis's
#: clock, '' = none): a call that runs after it (one the gateway stopped waiting for, sent
#: to a stopped or busy Redis) changes nothing and answers status 3.
#: Reply: {status (1 allowed, 0 rate, 2 concurrency, 3 expired), now, concurrency wait,
#: tat_1..tat_n (none when expired)}.
CHECK_LUA = """
local function fmt(x) return string.format('%.0f', x) end
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local deadline = ARGV[#ARGV]
if deadline ~= '' and now > tonumber(deadline) then return {'3', fmt(now), '0'} end
local n = tonumber(ARGV[2])
local tats, news, ok = {}, {}, true
for i = 1, n do
  local a = 3 + (i - 1) * 3
  local emission, tau, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '')
  if tat == nil or tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + cost * emission
  if news[i] - tau > now then ok = false end
end
local status, wait = 0, 0
if ok then
  status = 1
  if #KEYS > n then
    local a = 3 + n * 3
    local limit, ttl, member = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
    local ck = KEYS[n + 1]
    redis.call('ZREMRANGEBYSCORE', ck, '-inf', fmt(now))
    if redis.call('ZCARD', ck) >= limit then
      status = 2
      local first = redis.call('ZRANGE', ck, 0, 0, 'WITHSCORES')
      wait = tonumber(first[2]) - now
    else
      redis.call('ZADD', ck, fmt(now + ttl), member)
      redis.call('PEXPIRE', ck, math.ceil(ttl / 1000) + 1000)
    end
  end
end
local reply = {tostring(status), fmt(now), fmt(wait)}
for i = 1, n do
  if status == 1 then
    tats[i] = news[i]
    redis.call('SET', KEYS[i], fmt(news[i]), 'PX', math.ceil((news[i] - now) / 1000))
  end
  reply[3 + i] = fmt(tats[i])
end
return reply
"""

#: KEYS: the lease's ZSET. ARGV: member, ttl µs, now override. Reply: 1 renewed, 0 lease gone.
RENEW_LUA = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local ttl = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
return 1
"""
