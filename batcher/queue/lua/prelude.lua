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
