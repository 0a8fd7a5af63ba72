-- Hand a worker's processing list back to the queue.
-- mode 'reap': only when the worker's heartbeat has expired; each job that reached the model
--   (marked 'started' by started.lua) counts a delivery attempt, and a job that has used all
--   its attempts fails (a poison pill that kills workers must not kill them forever), or, when
--   a later upload or a delete of its product came meanwhile, ends superseded (there is nothing
--   of it to retry). A job only prefetched, never started, goes back uncharged.
-- mode 'recover': the same for a worker's own list left by an earlier process with its id.
-- mode 'release': a worker returning its own claimed-but-unstarted jobs at shutdown.
-- mode 'orphans': a living worker returning the ids ARGV[9..] of its list that it does not
--   know it holds (the reply of a claim was lost): no attempt counted, still registered.
-- Each job goes back on its tenant's pending list, at the consuming end, and its tenant on the ring.
-- KEYS: processing, queue, stats, failed, workers, heartbeat, image_bytes, failed_images, versions,
--       deliveries (a job ended here is announced to its webhook, see prelude.lua), ring
-- ARGV: job_key_prefix, image_key_prefix, mode, worker_id, max_attempts, failed_ttl_s,
--       failed_image_ttl_s, tenant_key_prefix, [id...]
-- Returns the number of jobs requeued, or -1 when the worker is alive (reap mode).
local mode = ARGV[3]
if mode == 'reap' and redis.call('EXISTS', KEYS[6]) == 1 then
  return -1
end
local now_ms = redis_now_ms()
local now = tostring(now_ms)
local count_attempt = mode == 'reap' or mode == 'recover'
local requeued = 0
local q = {queue = KEYS[2], ring = KEYS[11], tenants = ARGV[8]}
local budget = {bytes = KEYS[7], failed = KEYS[8], prefix = ARGV[2], jobs = ARGV[1], q = q}
local orphan = 8
-- before the first write, the job, image and tenant's keys of every id this call may hand back
local listed = mode == 'orphans' and {unpack(ARGV, 9)} or redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(listed) do
  here({ARGV[1] .. id, ARGV[2] .. id})
  here(tenant_keys(q, tenant_of(ARGV[1] .. id)))
end
local function next_id()
  if mode ~= 'orphans' then return redis.call('LPOP', KEYS[1]) end
  while orphan < #ARGV do
    orphan = orphan + 1
    if redis.call('LREM', KEYS[1], 1, ARGV[orphan]) == 1 then return ARGV[orphan] end
  end
  return false
end
while true do
  local id = next_id()
  if not id then break end
  local job, image = ARGV[1] .. id, ARGV[2] .. id
  local status = redis.call('HGET', job, 'status')
  local tenant = tenant_of(job)
  if status == 'processing' then
    count(q, KEYS[3], tenant, 'processing', -1)
    local attempts = 0
    local charged = count_attempt and redis.call('HGET', job, 'started') == '1'
    if charged then attempts = redis.call('HINCRBY', job, 'retry_count', 1) end
    if charged and attempts >= tonumber(ARGV[5]) and is_superseded(job, KEYS[9]) then
      supersede_job(job, image, now, KEYS[3], ARGV[6], budget)
      announce(job, id, now_ms, KEYS[10])
    elseif charged and attempts >= tonumber(ARGV[5]) then
      fail_job(job, image, id, 'worker died while processing this job (' .. attempts .. ' attempts)',
               now_ms, KEYS[3], KEYS[4], ARGV[6], ARGV[7], budget)
      announce(job, id, now_ms, KEYS[10])
    else
      redis.call('HSET', job, 'status', 'queued', 'updated_at', now)
      redis.call('HDEL', job, 'started')
      push_job(q, tenant, id, 'RPUSH')
      count(q, KEYS[3], tenant, 'queued', 1)
      requeued = requeued + 1
    end
  elseif status == 'queued' then
    -- moved but not yet marked (by a worker from before tenants): put it back as it was
    push_job(q, tenant, id, 'RPUSH')
    requeued = requeued + 1
  end
end
if mode == 'reap' or mode == 'release' then redis.call('SREM', KEYS[5], ARGV[4]) end
return requeued
