-- Move up to ARGV[2] more job ids from the queue into this worker's processing list and mark
-- every claimed job (those moved here plus the ids in ARGV[4..], already moved by BLMOVE)
-- as processing. Ids whose record is gone or already finished leave the processing list.
-- The worker is registered on the way: a worker the reaper took for dead (Redis was away
-- longer than its heartbeat's TTL) and that dies before its next beat still has its list
-- looked at by the reaper.
-- KEYS: queue, processing, stats, workers
-- ARGV: job_key_prefix, n_more, worker_id, already_claimed_id...
-- Returns {now_ms, id...}: the ids moved by this call (a worker drops ids without a record).
local now = tostring(redis_now_ms())
local ids, out = {}, {now}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
-- before the first write, the job of every id claimed here: those given, and the next n_more
-- that LMOVE RIGHT will take (the list's tail)
local n_more = tonumber(ARGV[2])
local next_ids = n_more > 0 and redis.call('LRANGE', KEYS[1], -n_more, -1) or {}
for _, id in ipairs(ids) do here({ARGV[1] .. id}) end
for _, id in ipairs(next_ids) do here({ARGV[1] .. id}) end
redis.call('SADD', KEYS[4], ARGV[3])
for _ = 1, n_more do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then break end
  ids[#ids + 1] = id
  out[#out + 1] = id
end
for _, id in ipairs(ids) do
  local job = ARGV[1] .. id
  local status = redis.call('HGET', job, 'status')
  if status == 'queued' then
    redis.call('HINCRBY', KEYS[3], 'queued', -1)
    redis.call('HINCRBY', KEYS[3], 'processing', 1)
    redis.call('HSET', job, 'status', 'processing', 'updated_at', now, 'claimed_at', now)
    redis.call('HDEL', job, 'started')  -- set by started.lua once it reaches the model
  elseif status ~= 'processing' then
    -- gone, or already finished (a stale duplicate id): nothing to do
    redis.call('LREM', KEYS[2], 1, id)
  end
end
return out
