-- Manual retry of a failed job: reset its attempts and queue it exactly once (on its tenant's
-- pending list).
-- KEYS: job, image, queue, stats, failed, failed_images, versions, ring
-- ARGV: job_id, tenant_key_prefix
-- Returns {1, ''} queued, {0, ''} unknown job, {-1, status} not failed, {-2, ''} image gone,
-- {-3, ''} superseded (its product was uploaded again, or deleted, since).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
if status ~= 'failed' then return {-1, status} end
if is_superseded(KEYS[1], KEYS[7]) then return {-3, ''} end
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('HEXISTS', KEYS[1], 'image_url') == 0 then
  return {-2, ''}  -- an image_url job needs no stored image: it fetches again
end
local q = {queue = KEYS[3], ring = KEYS[8], tenants = ARGV[2]}
local tenant = tenant_of(KEYS[1])
here(tenant_keys(q, tenant))
local now = tostring(redis_now_ms())
redis.call('HSET', KEYS[1], 'status', 'queued', 'retry_count', '0', 'error_message', '',
           'updated_at', now)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('ZREM', KEYS[6], ARGV[1])  -- its image counts as a queued one again
redis.call('ZREM', KEYS[5], ARGV[1])
push_job(q, tenant, ARGV[1], 'LPUSH')
count(q, KEYS[4], tenant, 'failed', -1)
count(q, KEYS[4], tenant, 'queued', 1)
return {1, ''}
