-- Record the outcome of every job of a batch in one atomic step. Only the worker that still
-- holds a job in its processing list may change it: an id that is no longer there (reaped
-- and handed to another worker) is skipped, so no counter moves twice.
-- KEYS: processing, stats, failed, delayed
-- ARGV: job_key_prefix, image_key_prefix, job_ttl_s, failed_ttl_s, failed_image_ttl_s,
--       max_attempts, outcomes_json  ([{id, outcome: completed|failed|retry, error, delay_ms}])
-- Returns {now_ms, completed, failed, retried, skipped}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = tostring(now_ms)
local counts = {completed = 0, failed = 0, retried = 0, skipped = 0}
local max_attempts = tonumber(ARGV[6])

local function fail(job, image, id, message)
  redis.call('HSET', job, 'status', 'failed', 'error_message', message, 'updated_at', now)
  redis.call('ZADD', KEYS[3], now_ms, id)
  redis.call('EXPIRE', job, tonumber(ARGV[4]))
  redis.call('EXPIRE', image, tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[2], 'failed', 1)
  counts.failed = counts.failed + 1
end

for _, o in ipairs(cjson.decode(ARGV[7])) do
  local id = o.id
  if redis.call('LREM', KEYS[1], 1, id) == 0 then
    counts.skipped = counts.skipped + 1
  else
    local job, image = ARGV[1] .. id, ARGV[2] .. id
    redis.call('HINCRBY', KEYS[2], 'processing', -1)
    if o.outcome == 'completed' then
      redis.call('HSET', job, 'status', 'completed', 'error_message', '', 'updated_at', now,
                 'completed_at', now)
      redis.call('EXPIRE', job, tonumber(ARGV[3]))
      redis.call('DEL', image)
      redis.call('HINCRBY', KEYS[2], 'completed', 1)
      counts.completed = counts.completed + 1
    elseif o.outcome == 'failed' then
      fail(job, image, id, o.error)
    else
      local attempts = redis.call('HINCRBY', job, 'retry_count', 1)
      if attempts >= max_attempts then
        fail(job, image, id, o.error .. ' (gave up after ' .. attempts .. ' attempts)')
      else
        redis.call('HSET', job, 'status', 'queued', 'error_message', o.error, 'updated_at', now)
        redis.call('ZADD', KEYS[4], now_ms + tonumber(o.delay_ms), id)
        redis.call('HINCRBY', KEYS[2], 'queued', 1)
        counts.retried = counts.retried + 1
      end
    end
  end
end
return {now, counts.completed, counts.failed, counts.retried, counts.skipped}
