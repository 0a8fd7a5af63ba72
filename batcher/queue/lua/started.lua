-- Mark jobs that reach the model: a worker that dies holding them charges them an attempt
-- (reap.lua); a job only prefetched, never started, goes back uncharged. Only ids still in
-- this worker's processing list are marked (a reaped job belongs to someone else now).
-- KEYS: processing
-- ARGV: job_key_prefix, id...
for i = 2, #ARGV do here({ARGV[1] .. ARGV[i]}) end
for i = 2, #ARGV do
  if redis.call('LPOS', KEYS[1], ARGV[i]) then
    redis.call('HSET', ARGV[1] .. ARGV[i], 'started', '1')
  end
end
return 0
