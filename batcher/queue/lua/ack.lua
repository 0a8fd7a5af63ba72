-- Record the outcome of every job of a batch in one atomic step. Only the worker that still
-- holds a job in its processing list may change it: an id that is no longer there (reaped
-- and handed to another worker) is skipped, so no counter moves twice.
-- KEYS: processing, stats, failed, delayed, image_bytes, failed_images, versions, deliveries
-- ARGV: job_key_prefix, image_key_prefix, job_ttl_s, failed_ttl_s, failed_image_ttl_s,
--       max_attempts, outcomes_json  ([{id, outcome: completed|failed|retry, error, delay_ms, kind}]),
--       finished_channel (the ids now completed, failed or superseded are published there, in the
--       same atomic step: a status long-poll hears of an outcome as soon as it is recorded),
--       tenant_key_prefix (each job's counters move in its tenant's stats too)
--       kind, for a completed job: '' (embedded), 'unchanged' (its product already had this
--       image's vector) or 'reused' (another product had it); stored in the job's 'outcome'.
--       near_duplicates, for a completed job: a JSON list stored as it is in the job's field
--       'near_duplicates' ('' or absent: not looked up).
-- Returns {now_ms, result...}: one result per outcome, in order: what was recorded
-- (completed, unchanged, reused, failed, retried, superseded) or skipped (the job is no longer
-- ours). A job older than its product's newest version is superseded, whatever the outcome sent.
-- Stats: 'completed' counts every completed job; 'unchanged' and 'reused' count those of them
-- that skipped the model.
local now_ms = redis_now_ms()
local now = tostring(now_ms)
local results = {now}
local finished = {}
local max_attempts = tonumber(ARGV[6])
local q = {tenants = ARGV[9]}
local budget = {bytes = KEYS[5], failed = KEYS[6], prefix = ARGV[2], jobs = ARGV[1], q = q}

local function fail(job, image, id, message)
  fail_job(job, image, id, message, now_ms, KEYS[2], KEYS[3], ARGV[4], ARGV[5], budget)
  return 'failed'
end

local outcomes = cjson.decode(ARGV[7])
for _, o in ipairs(outcomes) do  -- all or nothing
  here({ARGV[1] .. o.id, ARGV[2] .. o.id})
  here(tenant_keys(q, tenant_of(ARGV[1] .. o.id)))
end

for _, o in ipairs(outcomes) do
  local id = o.id
  local result = 'skipped'
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    local job, image = ARGV[1] .. id, ARGV[2] .. id
    local tenant = tenant_of(job)
    count(q, KEYS[2], tenant, 'processing', -1)
    if is_superseded(job, KEYS[7]) then
      supersede_job(job, image, now, KEYS[2], ARGV[3], budget)
      result = 'superseded'
    elseif o.outcome == 'completed' then
      local kind = o.kind
      if kind ~= 'unchanged' and kind ~= 'reused' then kind = '' end
      redis.call('HSET', job, 'status', 'completed', 'error_message', '', 'updated_at', now,
                 'completed_at', now, 'outcome', kind == '' and 'embedded' or kind)
      if o.near_duplicates and o.near_duplicates ~= '' then
        redis.call('HSET', job, 'near_duplicates', o.near_duplicates)
      end
      redis.call('EXPIRE', job, tonumber(ARGV[3]))
      drop_image(budget, image, tenant)
      count(q, KEYS[2], tenant, 'completed', 1)
      result = 'completed'
      if kind ~= '' then
        count(q, KEYS[2], tenant, kind, 1)
        result = kind
      end
    elseif o.outcome == 'failed' then
      result = fail(job, image, id, o.error)
    else
      local attempts = redis.call('HINCRBY', job, 'retry_count', 1)
      if attempts >= max_attempts then
        result = fail(job, image, id, o.error .. ' (gave up after ' .. attempts .. ' attempts)')
      else
        redis.call('HSET', job, 'status', 'queued', 'error_message', o.error, 'updated_at', now)
        redis.call('ZADD', KEYS[4], now_ms + tonumber(o.delay_ms), id)
        count(q, KEYS[2], tenant, 'queued', 1)
        result = 'retried'
      end
    end
  end
  results[#results + 1] = result
  if result ~= 'skipped' and result ~= 'retried' then
    finished[#finished + 1] = id
    announce(ARGV[1] .. id, id, now_ms, KEYS[8])
  end
end
if #finished > 0 then
  redis.call('PUBLISH', ARGV[8], table.concat(finished, ' '))
end
return results
