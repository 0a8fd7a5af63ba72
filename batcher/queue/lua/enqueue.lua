-- Store a job record and its image, push its id on the queue: all or nothing.
-- KEYS: queue, stats, job, image, image_bytes, failed_images, version_seq, versions
-- ARGV: max_depth, job_id, image_bytes ('' for an image_url job), max_bytes, failed_image_ttl_s,
--       image_key_prefix, field1, value1, ...
-- Returns {1, now_ms, version} when queued, {0, depth} when the queue is full, {-1, bytes_held}
-- when the image does not fit in the byte budget even without the failed jobs' images. The
-- job's version (its product's newest from now on) is in its record: the last upload wins.
-- Idempotent: a client retrying after a lost reply finds the job already there.
local FIELDS = 7
local existing = redis.call('HGET', KEYS[3], 'created_at')
if existing then
  return {1, existing, redis.call('HGET', KEYS[3], 'version') or ''}
end
local depth = redis.call('LLEN', KEYS[1])
if depth >= tonumber(ARGV[1]) then
  return {0, depth}
end
local now_ms = redis_now_ms()
-- the byte budget: drop failed images past their time, and the oldest ones while this does not fit
local budget = {bytes = KEYS[5], failed = KEYS[6], prefix = ARGV[6]}
local held = drop_failed_images(budget, now_ms - 1000 * tonumber(ARGV[5]), #ARGV[3], tonumber(ARGV[4]), 1000)
if held + #ARGV[3] > tonumber(ARGV[4]) then
  return {-1, held}
end
local now = tostring(now_ms)
local fields = {'job_id', ARGV[2], 'status', 'queued', 'retry_count', '0', 'error_message', '',
                'created_at', now, 'updated_at', now}
for i = FIELDS, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[3], unpack(fields))
-- versions: this upload is its product's newest
local version = next_version(KEYS[7])
redis.call('HSET', KEYS[3], 'version', version)
redis.call('HSET', KEYS[8], product_key(KEYS[3]), version)
if ARGV[3] ~= '' then  -- an image_url job stores no image: the worker fetches it
  store_image(budget, KEYS[4], ARGV[3])
end
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'queued', 1)
redis.call('HINCRBY', KEYS[2], 'total', 1)
return {1, now, version}
