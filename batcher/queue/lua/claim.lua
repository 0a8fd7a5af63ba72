-- Move up to ARGV[2] job ids from the tenants' pending lists into this worker's processing list
-- and mark them processing. Fair (ARGV[5] = '1'): round-robin over the ring, one job of its next
-- tenant (its rightmost), which then goes to the back of the ring (leaves it when its list is
-- empty), and so on: a batch of n over k tenants takes about n/k of each. Not fair ('0',
-- FAIR_SCHEDULING=false): the next tenant's jobs until its list is empty, then the next one's.
-- Ids whose record is gone or already finished leave the processing list.
-- The worker is registered on the way: a worker the reaper took for dead (Redis was away
-- longer than its heartbeat's TTL) and that dies before its next beat still has its list
-- looked at by the reaper.
-- KEYS: queue, processing, stats, workers, ring
-- ARGV: job_key_prefix, n, worker_id, tenant_key_prefix, fair ('1' or '0')
-- Returns {now_ms, id...}: the ids moved by this call (a worker drops ids without a record).
local now = tostring(redis_now_ms())
local q = {queue = KEYS[1], ring = KEYS[5], tenants = ARGV[4]}
local fair = ARGV[5] == '1'

-- The plan, read before the first write: which tenant gives each job, in order, and the ring
-- afterwards. The ring's next tenant is its rightmost.
local ring = redis.call('LRANGE', q.ring, 0, -1)
if redis.call('LLEN', q.queue) > 0 and not redis.call('LPOS', q.ring, DEFAULT_TENANT) then
  table.insert(ring, 1, DEFAULT_TENANT)  -- ids queued before tenants existed, with no ring
end
local n = tonumber(ARGV[2])
local tails, order = {}, {}  -- tenant -> the ids LMOVE RIGHT takes next (last first)
while #order < n and #ring > 0 do
  local tenant = ring[#ring]
  if not tails[tenant] then tails[tenant] = redis.call('LRANGE', pending_key(q, tenant), -n, -1) end
  local tail = tails[tenant]
  if #tail > 0 then
    local id = table.remove(tail)
    order[#order + 1] = {tenant, id}
    here({ARGV[1] .. id})
    here(tenant_keys(q, tenant))
  end
  table.remove(ring)
  if #tail > 0 or redis.call('LLEN', pending_key(q, tenant)) > n then
    if fair then table.insert(ring, 1, tenant) else ring[#ring + 1] = tenant end
  end
end

redis.call('SADD', KEYS[4], ARGV[3])
redis.call('DEL', q.ring)
if #ring > 0 then redis.call('RPUSH', q.ring, unpack(ring)) end
local out = {now}
for _, step in ipairs(order) do
  local tenant, id = step[1], step[2]
  redis.call('LMOVE', pending_key(q, tenant), KEYS[2], 'RIGHT', 'LEFT')
  out[#out + 1] = id
  local job = ARGV[1] .. id
  local status = redis.call('HGET', job, 'status')
  if status == 'queued' then
    count(q, KEYS[3], tenant, 'queued', -1)
    count(q, KEYS[3], tenant, 'processing', 1)
    redis.call('HSET', job, 'status', 'processing', 'updated_at', now, 'claimed_at', now)
    redis.call('HDEL', job, 'started')  -- set by started.lua once it reaches the model
  elseif status ~= 'processing' then
    -- gone, or already finished (a stale duplicate id): nothing to do
    redis.call('LREM', KEYS[2], 1, id)
  end
end
return out
