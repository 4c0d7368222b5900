"""The limiter's Lua script (pure text; run by ``ratelimit.redis_limiter`` through
``redisconn.batch``, modelled by ``ratelimit.gcra``).

One script, ``LIMITER_LUA``, runs a *batch* of limiter operations atomically on one Redis (or
one Cluster slot): every decision, lease release and lease renewal that the gateway's
concurrent requests issued in one event-loop iteration travels in one ``EVALSHA``
(``redisconn.batch``). The operations run in order, each exactly as it would alone: a batch of
``n`` decisions is ``n`` sequential atomic decisions, so the counts are the same as with one
call each, on every replica. Each operation runs under ``pcall``: one caller's broken key
fails only that caller's operation (``{'E', message}`` in its place).

Everything runs on Redis's own clock (``TIME``, read once per batch) and returns integer
microseconds as strings (Lua numbers would be truncated). Every command the script calls is
in the README's ``ACL SETUSER`` line: ``TIME``, ``GET``, ``SET``, ``ZREMRANGEBYSCORE``,
``ZCARD``, ``ZRANGE``, ``ZADD``, ``PEXPIRE``, ``ZSCORE``, ``ZREM``.

ARGV: one string per operation, its words separated by spaces (``-`` for an empty one): its
kind, its key count, then its arguments; KEYS: every operation's keys, in order. Reply: one
string per operation, its words separated by spaces (``{'E', message}`` for one that failed).
One string each way per operation rather than a dozen: redis-py encodes every argument and
parses every reply element in Python, which was most of a batch's cost in the gateway.

Within a batch the script reads each GCRA key once, clears a concurrency ZSET's expired leases
and counts it once per clock reading (then counts its own ``ZADD``/``ZREM`` replies), and writes
each key's final value and TTL once, at the end: the concurrent requests of one loop iteration
mostly share their caller's and tenant's keys, and every ``redis.call`` costs Redis far more in
Lua than the command itself. This is exact: the script is atomic and Redis's clock stands still
while it runs, so each operation decides on what it would have read, and the keys end as if
each operation had written them (``tests/test_ratelimit_lua.py`` checks both against the
script that did, ``tests/limiterlua.py``). The kinds:

``c`` (check). KEYS: GCRA keys (n), then the concurrency ZSET if any. ARGV: now override
(µs, '' = Redis TIME), n, then (T, tau, cost) per rule, then (limit, lease ttl µs, lease
member) if concurrency, then the deadline (µs on Redis's clock, '' = none): a call that runs
after it (one the gateway stopped waiting for, sent to a stopped or busy Redis) changes
nothing and answers status 3. Reply: {status (1 allowed, 0 rate, 2 concurrency, 3 expired),
now, concurrency wait, tat_1..tat_n (none when expired)}.

``r`` (release). KEYS: the lease's ZSET. ARGV: member. Reply: 1.

``n`` (renew). KEYS: the lease's ZSET. ARGV: member, ttl µs, now override. Reply: 1 renewed,
0 lease gone.
"""

#: The operation kinds of ``LIMITER_LUA``.
CHECK, RELEASE, RENEW = "c", "r", "n"

LIMITER_LUA = """
local function fmt(x) return string.format('%.0f', x) end
local redis_now
local function clock(override)
  if override ~= '' then return tonumber(override) end
  if redis_now == nil then
    local t = redis.call('TIME'); redis_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return redis_now
end

-- What the batch has read or written, so that each key is read once, its expired leases are
-- cleared once per clock reading, and its final value and TTL are written once, at the end.
-- The script runs atomically and Redis's clock stands still while it runs: nothing else
-- changes these keys meanwhile, so every operation decides on exactly what it would read
-- from Redis, and the keys end as if each operation had written them itself.
local tats, tat_px, tat_order = {}, {}, {}
local held, held_ms, held_order = {}, {}, {}

local function tat_of(key)
  local tat = tats[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key) or '') or false
    tats[key] = tat
  end
  return tat
end

local function set_tat(key, value, px)
  if px < 1 then redis.call('SET', key, fmt(value), 'PX', px) end -- fails as it would alone
  if tat_px[key] == nil then tat_order[#tat_order + 1] = key end
  tats[key], tat_px[key] = value, px
end

local function count(key, now)
  local h = held[key]
  if h == nil or h.at ~= now then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
    h = {at = now, n = redis.call('ZCARD', key)}
    held[key] = h
  end
  return h
end

local function expire(key, ms)
  if held_ms[key] == nil then held_order[#held_order + 1] = key end
  held_ms[key] = ms
end

local function removed(key, n)
  local h = held[key]
  if h ~= nil then h.n = h.n - n end
end

local function check(K, A)
  local now = clock(A[1])
  local deadline = A[#A]
  if deadline ~= '' and now > tonumber(deadline) then return {'3', fmt(now), '0'} end
  local n = tonumber(A[2])
  local olds, news, ok = {}, {}, true
  for i = 1, n do
    local a = 3 + (i - 1) * 3
    local emission, tau, cost = tonumber(A[a]), tonumber(A[a + 1]), tonumber(A[a + 2])
    local tat = tat_of(K[i])
    if tat == false or tat < now then tat = now end
    olds[i] = tat
    news[i] = tat + cost * emission
    if news[i] - tau > now then ok = false end
  end
  local status, wait = 0, 0
  if ok then
    status = 1
    if #K > n then
      local a = 3 + n * 3
      local limit, ttl, member = tonumber(A[a]), tonumber(A[a + 1]), A[a + 2]
      local ck = K[n + 1]
      local h = count(ck, now)
      if h.n >= limit then
        status = 2
        local first = redis.call('ZRANGE', ck, 0, 0, 'WITHSCORES')
        wait = tonumber(first[2]) - now
      else
        h.n = h.n + redis.call('ZADD', ck, fmt(now + ttl), member)
        expire(ck, math.ceil(ttl / 1000) + 1000)
      end
    end
  end
  local reply = {tostring(status), fmt(now), fmt(wait)}
  for i = 1, n do
    if status == 1 then
      olds[i] = news[i]
      set_tat(K[i], news[i], math.ceil((news[i] - now) / 1000))
    end
    reply[3 + i] = fmt(olds[i])
  end
  return reply
end

local function release(K, A)
  removed(K[1], redis.call('ZREM', K[1], A[1]))
  return 1
end

local function renew(K, A)
  local now = clock(A[3])
  local ttl = tonumber(A[2])
  local score = redis.call('ZSCORE', K[1], A[1])
  if not score or tonumber(score) <= now then
    removed(K[1], redis.call('ZREM', K[1], A[1]))
    return 0
  end
  redis.call('ZADD', K[1], 'XX', fmt(now + ttl), A[1])
  expire(K[1], math.ceil(ttl / 1000) + 1000)
  return 1
end

local run = {c = check, r = release, n = renew}
local replies, k = {}, 0
for op = 1, #ARGV do
  local A = {}
  for word in string.gmatch(ARGV[op], '%S+') do
    if word == '-' then word = '' end
    A[#A + 1] = word
  end
  local kind, nk = table.remove(A, 1), tonumber(table.remove(A, 1))
  local K = {}
  for i = 1, nk do K[i] = KEYS[k + i] end
  k = k + nk
  local ok, result = pcall(run[kind], K, A)
  if ok then
    if type(result) == 'table' then result = table.concat(result, ' ') end
    replies[op] = tostring(result)
  else
    if type(result) == 'table' then result = result.err or 'error' end
    replies[op] = {'E', tostring(result)}
  end
end
for _, key in ipairs(tat_order) do
  redis.call('SET', key, fmt(tats[key]), 'PX', tat_px[key])
end
for _, key in ipairs(held_order) do redis.call('PEXPIRE', key, held_ms[key]) end
return replies
"""
