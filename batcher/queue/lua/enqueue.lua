-- Store a job record and its image, push its id on the queue: all or nothing.
-- KEYS: queue, stats, job, image
-- ARGV: max_depth, job_id, image_bytes ('' for an image_url job), field1, value1, ...
-- Returns {1, now_ms} when queued, {0, depth} when the queue is full.
-- Idempotent: a client retrying after a lost reply finds the job already there.
local existing = redis.call('HGET', KEYS[3], 'created_at')
if existing then
  return {1, existing}
end
local depth = redis.call('LLEN', KEYS[1])
if depth >= tonumber(ARGV[1]) then
  return {0, depth}
end
local now = tostring(redis_now_ms())
local fields = {'job_id', ARGV[2], 'status', 'queued', 'retry_count', '0', 'error_message', '',
                'created_at', now, 'updated_at', now}
for i = 4, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[3], unpack(fields))
if ARGV[3] ~= '' then  -- an image_url job stores no image: the worker fetches it
  redis.call('SET', KEYS[4], ARGV[3])
end
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'queued', 1)
redis.call('HINCRBY', KEYS[2], 'total', 1)
return {1, now}
