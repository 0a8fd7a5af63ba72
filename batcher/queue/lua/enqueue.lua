-- Store a job record and its image, push its id on its tenant's pending list (and the tenant on
-- the ring): all or nothing.
-- KEYS: queue, stats, job, image, image_bytes, failed_images, version_seq, versions, ring
-- ARGV: max_depth, job_id, image_bytes ('' for an image_url job), max_bytes, failed_image_ttl_s,
--       image_key_prefix, job_key_prefix, tenant_key_prefix, tenant, tenant_max_depth,
--       tenant_max_bytes (0: no quota of the tenant), field1, value1, ...
-- Returns {1, now_ms, version} when queued, {0, depth} when the queue is full, {-1, bytes_held}
-- when the image does not fit in the byte budget even without the failed jobs' images, {-2,
-- depth} when the tenant's pending jobs reach its quota, {-3, bytes_held} when its images
-- would pass its byte quota. The job's version (its product's newest from now on) is in its
-- record: the last upload wins.
-- Idempotent: a client retrying after a lost reply finds the job already there.
local FIELDS = 12
local existing = redis.call('HGET', KEYS[3], 'created_at')
if existing then
  return {1, existing, redis.call('HGET', KEYS[3], 'version') or ''}
end
local q = {queue = KEYS[1], ring = KEYS[9], tenants = ARGV[8]}
local tenant = ARGV[9]
here(tenant_keys(q, tenant))
local depth = pending_depth(q)
if depth >= tonumber(ARGV[1]) then
  return {0, depth}
end
local tenant_depth = redis.call('LLEN', pending_key(q, tenant))
if tonumber(ARGV[10]) > 0 and tenant_depth >= tonumber(ARGV[10]) then
  return {-2, tenant_depth}
end
local tenant_held = tonumber(redis.call('GET', tenant_bytes(q, tenant)) or '0')
if tonumber(ARGV[11]) > 0 and tenant_held + #ARGV[3] > tonumber(ARGV[11]) then
  return {-3, tenant_held}
end
local now_ms = redis_now_ms()
-- the byte budget: drop failed images past their time, and the oldest ones while this does not fit
local budget = {bytes = KEYS[5], failed = KEYS[6], prefix = ARGV[6], jobs = ARGV[7], q = q}
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
redis.call('HSET', KEYS[3], 'tenant', tenant)
-- versions: this upload is its product's newest
local version = next_version(KEYS[7])
redis.call('HSET', KEYS[3], 'version', version)
redis.call('HSET', KEYS[8], product_key(KEYS[3]), version)
if ARGV[3] ~= '' then  -- an image_url job stores no image: the worker fetches it
  store_image(budget, KEYS[4], ARGV[3], tenant)
end
push_job(q, tenant, ARGV[2], 'LPUSH')
count(q, KEYS[2], tenant, 'queued', 1)
count(q, KEYS[2], tenant, 'total', 1)
return {1, now, version}
