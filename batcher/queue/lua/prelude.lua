-- Shared by every script: prepended to each one when it is loaded (see scripts.py).

-- Now in milliseconds, from the Redis server's clock (never a client's).
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Fail a job for good: record the error, list it among the failed, keep its record and its
-- image (for a manual retry) for a while, count it.
local function fail_job(job, image, id, message, at_ms, stats_key, failed_key, job_ttl_s, image_ttl_s)
  redis.call('HSET', job, 'status', 'failed', 'error_message', message, 'updated_at', tostring(at_ms))
  redis.call('ZADD', failed_key, at_ms, id)
  redis.call('EXPIRE', job, tonumber(job_ttl_s))
  redis.call('EXPIRE', image, tonumber(image_ttl_s))
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

-- Whether a job is older than its product's newest version (a later upload, or a delete).
local function is_superseded(job, versions_key)
  local f = redis.call('HMGET', job, 'product_id', 'version')
  if not f[1] or not f[2] then return false end
  local newest = redis.call('HGET', versions_key, f[1])
  return newest and tonumber(f[2]) < tonumber(newest) or false
end

-- Finish a job that a newer version replaced: nothing to store, nothing to retry.
local function supersede_job(job, image, at, stats_key, job_ttl_s)
  redis.call('HSET', job, 'status', 'superseded', 'error_message', '', 'updated_at', at)
  redis.call('EXPIRE', job, tonumber(job_ttl_s))
  redis.call('DEL', image)
  redis.call('HINCRBY', stats_key, 'superseded', 1)
end
