"""The limiter's script as it was before it kept a batch's reads and writes (round 6): the
reference ``tests/test_ratelimit_lua.py`` checks ``gateway.ratelimit.lua.LIMITER_LUA`` against,
operation sequence by operation sequence (same replies, same keys left in Redis). Every
operation reads and writes Redis itself here, as it would alone."""

REFERENCE_LUA = """
local function fmt(x) return string.format('%.0f', x) end
local redis_now
local function clock(override)
  if override ~= '' then return tonumber(override) end
  if redis_now == nil then
    local t = redis.call('TIME'); redis_now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return redis_now
end

local function check(K, A)
  local now = clock(A[1])
  local deadline = A[#A]
  if deadline ~= '' and now > tonumber(deadline) then return {'3', fmt(now), '0'} end
  local n = tonumber(A[2])
  local tats, news, ok = {}, {}, true
  for i = 1, n do
    local a = 3 + (i - 1) * 3
    local emission, tau, cost = tonumber(A[a]), tonumber(A[a + 1]), tonumber(A[a + 2])
    local tat = tonumber(redis.call('GET', K[i]) or '')
    if tat == nil or tat < now then tat = now end
    tats[i] = tat
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
      redis.call('SET', K[i], fmt(news[i]), 'PX', math.ceil((news[i] - now) / 1000))
    end
    reply[3 + i] = fmt(tats[i])
  end
  return reply
end

local function release(K, A)
  redis.call('ZREM', K[1], A[1])
  return 1
end

local function renew(K, A)
  local now = clock(A[3])
  local ttl = tonumber(A[2])
  local score = redis.call('ZSCORE', K[1], A[1])
  if not score or tonumber(score) <= now then
    redis.call('ZREM', K[1], A[1])
    return 0
  end
  redis.call('ZADD', K[1], 'XX', fmt(now + ttl), A[1])
  redis.call('PEXPIRE', K[1], math.ceil(ttl / 1000) + 1000)
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
return replies
"""
