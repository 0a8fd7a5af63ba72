-- Shared by every script: prepended to each one when it is loaded (see scripts.py).

-- Now in milliseconds, from the Redis server's clock (never a client's).
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Touch (read) each key a script is about to use. On a Redis Cluster whose slot is migrating,
-- a key already moved to the other node stops the script right here with an error ("non
-- local key"), so a script that calls this before its first write stops having written
-- nothing (see batcher/queue/owner.py). Elsewhere, a cheap no-op.
local function here(keys)
  for _, key in ipairs(keys) do redis.call('EXISTS', key) end
end

-- The byte budget (MAX_QUEUE_BYTES). Every image is stored and deleted through these functions,
-- never by a TTL, so {clipq}:image_bytes always equals the bytes of the image keys that exist.
-- `budget`: {bytes = image_bytes key, failed = failed_images key, prefix = image key prefix}.
local function store_image(budget, image, data)
  redis.call('SET', image, data)
  redis.call('INCRBY', budget.bytes, #data)
end

local function drop_image(budget, image)
  local n = redis.call('STRLEN', image)
  if n > 0 then
    redis.call('DEL', image)
    -- images stored before the budget existed were never counted: never go below zero
    if redis.call('DECRBY', budget.bytes, n) < 0 then redis.call('SET', budget.bytes, 0) end
  end
end

-- A failed job's image is kept for a manual retry (listed by failure time) unless none are kept.
local function keep_failed_image(budget, image, id, at_ms, image_ttl_s)
  if tonumber(image_ttl_s) > 0 then
    redis.call('ZADD', budget.failed, at_ms, id)
  else
    drop_image(budget, image)
  end
end

-- Drop kept failed images oldest first: those failed at or before cutoff_ms, then more while
-- `need` more bytes would not fit under max_bytes; at most `limit`. Returns the bytes held.
local function drop_failed_images(budget, cutoff_ms, need, max_bytes, limit)
  local held = tonumber(redis.call('GET', budget.bytes) or '0')
  if need > max_bytes then return held end  -- could never fit: drop nothing for it
  for _ = 1, limit do
    local oldest = redis.call('ZRANGE', budget.failed, 0, 0, 'WITHSCORES')
    if #oldest == 0 or (tonumber(oldest[2]) > cutoff_ms and held + need <= max_bytes) then break end
    here({budget.prefix .. oldest[1]})  -- each round is whole: stopped here, the rounds before it stand
    redis.call('ZREM', budget.failed, oldest[1])
    drop_image(budget, budget.prefix .. oldest[1])
    held = tonumber(redis.call('GET', budget.bytes) or '0')
  end
  return held
end

-- Fail a job for good: record the error, list it among the failed, keep its record and its
-- image (for a manual retry) for a while, count it.
local function fail_job(job, image, id, message, at_ms, stats_key, failed_key, job_ttl_s, image_ttl_s, budget)
  redis.call('HSET', job, 'status', 'failed', 'error_message', message, 'updated_at', tostring(at_ms))
  redis.call('ZADD', failed_key, at_ms, id)
  redis.call('EXPIRE', job, tonumber(job_ttl_s))
  keep_failed_image(budget, image, id, at_ms, image_ttl_s)
  redis.call('HINCRBY', stats_key, 'failed', 1)
end

-- Versions (last upload wins, a delete sticks) --------------------------------------------
-- The next version, for an upload or a delete of any product: above every version given
-- before, and never below the server clock in microseconds, so that versions keep growing
-- even after a crash lost Redis's last writes. A decimal string (exact: below 2^53).
local function next_version(seq_key)
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = string.format('%.0f', math.max(tonumber(redis.call('GET', seq_key) or '0') + 1, clock))
  redis.call('SET', seq_key, v)
  return v
end

-- A job's product in the versions and deletes hashes: its ``product_key`` (the tenant's
-- ``<tenant>/<product_id>``, batcher/queue/keys.py), or its product_id for a job queued before tenants.
local function product_key(job)
  local f = redis.call('HMGET', job, 'product_key', 'product_id')
  return f[1] or f[2]
end

-- Whether a job is older than its product's newest version (a later upload, or a delete).
local function is_superseded(job, versions_key)
  local f = redis.call('HMGET', job, 'product_id', 'version', 'product_key')
  if not f[1] or not f[2] then return false end
  local newest = redis.call('HGET', versions_key, f[3] or f[1])
  return newest and tonumber(f[2]) < tonumber(newest) or false
end

-- Finish a job that a newer version replaced: nothing to store, nothing to retry.
local function supersede_job(job, image, at, stats_key, job_ttl_s, budget)
  redis.call('HSET', job, 'status', 'superseded', 'error_message', '', 'updated_at', at)
  redis.call('EXPIRE', job, tonumber(job_ttl_s))
  drop_image(budget, image)
  redis.call('HINCRBY', stats_key, 'superseded', 1)
end
