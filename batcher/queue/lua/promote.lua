-- Move delayed retries whose due time (Redis time) has come to the consuming end of their
-- tenant's pending list (and the tenant onto the ring). Run by every worker's housekeeping before
-- each claim.
-- KEYS: delayed, queue, ring
-- ARGV: limit, job_key_prefix, tenant_key_prefix
-- Returns the number of jobs moved.
local now_ms = redis_now_ms()
local q = {queue = KEYS[2], ring = KEYS[3], tenants = ARGV[3]}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local tenants = {}
for i, id in ipairs(due) do  -- before the first write: each job and its tenant's keys
  here({ARGV[2] .. id})
  tenants[i] = tenant_of(ARGV[2] .. id)
  here(tenant_keys(q, tenants[i]))
end
for i, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  push_job(q, tenants[i], id, 'RPUSH')
end
-- ids queued before tenants existed are on the default tenant's list with no ring: ring it
if redis.call('LLEN', q.queue) > 0 and not redis.call('LPOS', q.ring, DEFAULT_TENANT) then
  redis.call('LPUSH', q.ring, DEFAULT_TENANT)
end
return #due
