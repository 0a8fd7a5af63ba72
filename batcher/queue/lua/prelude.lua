-- Shared by every script: prepended to each one when it is loaded (see scripts.py).

-- Now in milliseconds, from the Redis server's clock (never a client's).
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Touch (read) each key a script is about to use. On a Redis Cluster whose slot is migrating,
-- a key already moved to the other node stops the script right here with an error ("non
-- local key"), so a script that calls this before its first write stops having written
-- nothing (see batcher/queue/owner.py). Elsewhere, a cheap no-op.
local function here(keys)
  for _, key in ipairs(keys) do redis.call('EXISTS', key) end
end

-- Tenants (fair scheduling) ---------------------------------------------------------------
-- Each tenant has a pending list; the ring lists the tenants with queued jobs, each once, and
-- claims take round-robin over it (claim.lua). Each tenant also has counters of its own (the
-- fields of stats) and the bytes of its images. Key names as in batcher/queue/keys.py.
-- `q`: {queue = the default tenant's pending list (today's queue), ring = the ring,
--       tenants = the prefix of every per-tenant key}.
local DEFAULT_TENANT = 'default'

-- A job's tenant: its record's `tenant` field; a job queued before tenants is the default's.
local function tenant_of(job)
  local t = redis.call('HGET', job, 'tenant')
  if not t or t == '' then return DEFAULT_TENANT end
  return t
end

local function pending_key(q, tenant)
  if tenant == DEFAULT_TENANT then return q.queue end
  return q.tenants .. tenant .. ':queue'
end

local function tenant_stats(q, tenant) return q.tenants .. tenant .. ':stats' end
local function tenant_bytes(q, tenant) return q.tenants .. tenant .. ':image_bytes' end

-- The keys of a tenant that a script may write, to here() them before its first write.
local function tenant_keys(q, tenant)
  local keys = {tenant_stats(q, tenant), tenant_bytes(q, tenant)}
  if q.queue then keys[#keys + 1] = pending_key(q, tenant) end
  return keys
end

-- Queue a job id on its tenant's pending list ('LPUSH': a new job, last in line; 'RPUSH': a job
-- handed back, taken first) and put the tenant on the ring unless it is there already.
local function push_job(q, tenant, id, push)
  redis.call(push, pending_key(q, tenant), id)
  if not redis.call('LPOS', q.ring, tenant) then redis.call('LPUSH', q.ring, tenant) end
end

-- Move a counter of the totals (stats) and the same counter of the job's tenant together.
local function count(q, stats_key, tenant, field, delta)
  redis.call('HINCRBY', stats_key, field, delta)
  redis.call('HINCRBY', tenant_stats(q, tenant), field, delta)
end

-- Pending jobs of every tenant: the default tenant's list (even off the ring: ids queued before
-- tenants existed) and the lists of the tenants on the ring.
local function pending_depth(q)
  local n = redis.call('LLEN', q.queue)
  for _, t in ipairs(redis.call('LRANGE', q.ring, 0, -1)) do
    if t ~= DEFAULT_TENANT then n = n + redis.call('LLEN', pending_key(q, t)) end
  end
  return n
end

-- The byte budget (MAX_QUEUE_BYTES). Every image is stored and deleted through these functions,
-- never by a TTL, so {clipq}:image_bytes always equals the bytes of the image keys that exist,
-- and each tenant's image_bytes the bytes of its own.
-- `budget`: {bytes = image_bytes key, failed = failed_images key, prefix = image key prefix,
--            jobs = job key prefix, q = the tenants' keys (above)}.
local function store_image(budget, image, data, tenant)
  redis.call('SET', image, data)
  redis.call('INCRBY', budget.bytes, #data)
  redis.call('INCRBY', tenant_bytes(budget.q, tenant), #data)
end

local function decr_floor(key, n)
  -- images stored before the counter existed were never counted: never go below zero
  if redis.call('DECRBY', key, n) < 0 then redis.call('SET', key, 0) end
end

local function drop_image(budget, image, tenant)
  local n = redis.call('STRLEN', image)
  if n > 0 then
    redis.call('DEL', image)
    decr_floor(budget.bytes, n)
    decr_floor(tenant_bytes(budget.q, tenant), n)
  end
end

-- A failed job's image is kept for a manual retry (listed by failure time) unless none are kept.
local function keep_failed_image(budget, image, id, at_ms, image_ttl_s, tenant)
  if tonumber(image_ttl_s) > 0 then
    redis.call('ZADD', budget.failed, at_ms, id)
  else
    drop_image(budget, image, tenant)
  end
end

-- Drop kept failed images oldest first: those failed at or before cutoff_ms, then more while
-- `need` more bytes would not fit under max_bytes; at most `limit`. Returns the bytes held.
local function drop_failed_images(budget, cutoff_ms, need, max_bytes, limit)
  local held = tonumber(redis.call('GET', budget.bytes) or '0')
  if need > max_bytes then return held end  -- could never fit: drop nothing for it
  for _ = 1, limit do
    local oldest = redis.call('ZRANGE', budget.failed, 0, 0, 'WITHSCORES')
    if #oldest == 0 or (tonumber(oldest[2]) > cutoff_ms and held + need <= max_bytes) then break end
    local tenant = tenant_of(budget.jobs .. oldest[1])  -- a record gone before its image: the default's
    -- each round is whole: stopped here, the rounds before it stand
    here({budget.prefix .. oldest[1], tenant_bytes(budget.q, tenant)})
    redis.call('ZREM', budget.failed, oldest[1])
    drop_image(budget, budget.prefix .. oldest[1], tenant)
    held = tonumber(redis.call('GET', budget.bytes) or '0')
  end
  return held
end

-- Fail a job for good: record the error, list it among the failed, keep its record and its
-- image (for a manual retry) for a while, count it.
local function fail_job(job, image, id, message, at_ms, stats_key, failed_key, job_ttl_s, image_ttl_s, budget)
  local tenant = tenant_of(job)
  redis.call('HSET', job, 'status', 'failed', 'error_message', message, 'updated_at', tostring(at_ms))
  redis.call('ZADD', failed_key, at_ms, id)
  redis.call('EXPIRE', job, tonumber(job_ttl_s))
  keep_failed_image(budget, image, id, at_ms, image_ttl_s, tenant)
  count(budget.q, stats_key, tenant, 'failed', 1)
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

-- A job's product in the versions and deletes hashes: its ``product_key`` (the tenant's
-- ``<tenant>/<product_id>``, batcher/queue/keys.py), or its product_id for a job queued before tenants.
local function product_key(job)
  local f = redis.call('HMGET', job, 'product_key', 'product_id')
  return f[1] or f[2]
end

-- Whether a job is older than its product's newest version (a later upload, or a delete).
local function is_superseded(job, versions_key)
  local f = redis.call('HMGET', job, 'product_id', 'version', 'product_key')
  if not f[1] or not f[2] then return false end
  local newest = redis.call('HGET', versions_key, f[3] or f[1])
  return newest and tonumber(f[2]) < tonumber(newest) or false
end

-- Finish a job that a newer version replaced: nothing to store, nothing to retry.
local function supersede_job(job, image, at, stats_key, job_ttl_s, budget)
  local tenant = tenant_of(job)
  redis.call('HSET', job, 'status', 'superseded', 'error_message', '', 'updated_at', at)
  redis.call('EXPIRE', job, tonumber(job_ttl_s))
  drop_image(budget, image, tenant)
  count(budget.q, stats_key, tenant, 'superseded', 1)
end

-- A job's end, announced to its webhook (api/webhooks.py): when the job has a callback_url, its
-- delivery "<id>.<now_ms>" is due now, recorded in the very step that ends the job.
local function announce(job, id, now_ms, deliveries_key)
  if redis.call('HEXISTS', job, 'callback_url') == 1 then
    redis.call('ZADD', deliveries_key, now_ms, id .. '.' .. now_ms)
  end
end
